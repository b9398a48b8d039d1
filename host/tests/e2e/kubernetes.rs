//! The inventory that follows the Kubernetes API, against the list/watch stand-in of
//! `kube_api` fed from the recorded Flannel lab dump: pods added and deleted while running,
//! an address reused by a new pod, a watch cut (resumed, nothing listed again) and an expired
//! one (410 Gone: listed again, nothing lost, what was deleted meanwhile ended).

use crate::kube_api::FakeApi;
use crate::support::*;
use cniscope::config::KubernetesSettings;
use cniscope::inventory::api::{ApiInventory, Kind, core_kinds};
use cniscope::inventory::history::{IpHistory, Owner};
use cniscope::inventory::{Inventory, InventorySource};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn pod(name: &str, uid: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": uid,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"nodeName": "node-a"},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

/// Who held `ip` at `at_ns`, by pod name.
fn holder(inv: &Inventory, ip: &str, at_ns: u64) -> Option<String> {
    let ip: IpAddr = ip.parse().unwrap();
    match IpHistory::new(inv).owner_at(ip, at_ns)? {
        Owner::Pod(i) => Some(inv.pods[*i].name.clone()),
        other => Some(format!("{other:?}")),
    }
}

/// The inventory's settings pointing at `api`, waiting up to `sync_secs` for the first lists.
fn settings_for(api: &FakeApi, dir: &std::path::Path, sync_secs: u64) -> KubernetesSettings {
    KubernetesSettings {
        kubeconfig: Some(api.kubeconfig(dir)),
        context: None,
        retain_deleted: Duration::from_secs(600),
        sync_timeout: Duration::from_secs(sync_secs),
    }
}

/// Waits until the inventory's snapshot satisfies `ready`.
fn until(api: &ApiInventory, what: &str, ready: impl Fn(&Inventory) -> bool) -> Inventory {
    let t = std::time::Instant::now();
    loop {
        let inv = api.snapshot();
        if ready(&inv) {
            return inv;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "waiting for {what}: {:#?}",
            api.health()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn names(inv: &Inventory) -> Vec<String> {
    let mut v: Vec<String> = inv
        .pods
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p.name,
                if p.deleted_ns == 0 { "alive" } else { "ended" }
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn the_inventory_follows_pods_through_additions_deletions_reuse_and_watch_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let api = FakeApi::start(&[&root().join("tests/data/flannel-vxlan/inventory.json")]);
    let settings = settings_for(&api, dir.path(), 20);
    let mut kinds = core_kinds();
    kinds.push(Kind::new("crd.projectcalico.org/v1", "IPAMBlock"));
    let inventory = ApiInventory::start(&settings, &kinds).unwrap();
    let health = inventory.health();
    assert!(health.synced, "{health:#?}");
    let inv = inventory.snapshot();
    assert_eq!(
        (
            inv.nodes.len(),
            inv.pods.len(),
            inv.services.len(),
            inv.endpoint_slices.len()
        ),
        (2, 3, 1, 1)
    );
    assert_eq!(inv.services[0].cluster_ips[0].to_string(), "10.96.0.10");
    assert_eq!(inv.endpoint_slices[0].service, "echo");

    // A pod added while running: its address is its own from its first report.
    let before = now_ns();
    api.apply(pod("late", "uid-late", "10.244.0.9"));
    let inv = until(&inventory, "the late pod", |i| {
        i.pods.iter().any(|p| p.name == "late")
    });
    let late = inv.pods.iter().find(|p| p.name == "late").unwrap();
    assert!(
        late.created_ns >= before,
        "its tenure begins when it was reported"
    );
    assert_eq!(
        holder(&inv, "10.244.0.9", now_ns()).as_deref(),
        Some("late")
    );
    // Its first packets, just before the API said so: its own too.
    assert_eq!(
        holder(&inv, "10.244.0.9", before - 1_000_000).as_deref(),
        Some("late")
    );

    // client-a1 deleted, its address reused by another pod.
    let during_old = now_ns();
    std::thread::sleep(Duration::from_millis(20));
    api.delete("v1", "Pod", "default", "client-a1");
    let inv = until(&inventory, "client-a1 deleted", |i| {
        i.pods
            .iter()
            .any(|p| p.name == "client-a1" && p.deleted_ns != 0)
    });
    let deleted_at = inv
        .pods
        .iter()
        .find(|p| p.name == "client-a1")
        .unwrap()
        .deleted_ns;
    std::thread::sleep(Duration::from_millis(20));
    api.apply(pod("client-a1-v2", "uid-v2", "10.244.0.2"));
    let inv = until(&inventory, "the address reused", |i| {
        i.pods.iter().any(|p| p.name == "client-a1-v2")
    });
    assert_eq!(
        holder(&inv, "10.244.0.2", during_old).as_deref(),
        Some("client-a1"),
        "before the deletion: the old pod"
    );
    assert_eq!(
        holder(&inv, "10.244.0.2", now_ns()).as_deref(),
        Some("client-a1-v2"),
        "after the reuse: the new pod"
    );
    assert!(deleted_at > during_old);

    // The watch cut: resumed from its resourceVersion, the change made meanwhile arrives,
    // nothing is listed again.
    let lists = api.lists("v1", "Pod");
    api.drop_watches();
    api.apply(pod("while-cut", "uid-cut", "10.244.0.10"));
    until(&inventory, "the change made while cut", |i| {
        i.pods.iter().any(|p| p.name == "while-cut")
    });
    assert_eq!(
        api.lists("v1", "Pod"),
        lists,
        "a cut watch resumes, no list"
    );

    // The watch expired (410 Gone) while peer-a2 was deleted and gap-pod created: listed
    // again, peer-a2 ended, gap-pod there, every other pod kept with its tenure.
    let tenure = |inv: &Inventory, name: &str| {
        inv.pods
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.created_ns)
    };
    let server_since = tenure(&inventory.snapshot(), "server-b1");
    api.expire();
    let gap = now_ns();
    {
        // Both while nobody watches: only a new list can tell.
        api.delete("v1", "Pod", "default", "peer-a2");
        api.apply(pod("gap-pod", "uid-gap", "10.244.0.11"));
    }
    let inv = until(&inventory, "the relist", |i| {
        i.pods.iter().any(|p| p.name == "gap-pod")
    });
    assert_eq!(
        names(&inv),
        [
            "client-a1 ended",
            "client-a1-v2 alive",
            "gap-pod alive",
            "late alive",
            "peer-a2 ended",
            "server-b1 alive",
            "while-cut alive"
        ]
    );
    assert!(api.lists("v1", "Pod") > lists, "410 made it list again");
    assert_eq!(
        tenure(&inv, "server-b1"),
        server_since,
        "kept, not re-added"
    );
    let peer = inv.pods.iter().find(|p| p.name == "peer-a2").unwrap();
    assert!(peer.deleted_ns >= gap, "ended when the list lacked it");
    // The other kinds' watches expired too; each lists again after its backoff.
    inventory.wait_for(Duration::from_secs(30), |h| {
        h.kinds.values().all(|k| k.relists == 1)
    });
    let health = inventory.health();
    let last = health.last_error.as_deref().unwrap_or("");
    assert!(last.contains("too old resource version"), "{health:#?}");
    // Every kind's watch expired once (one 410, one list again); bookmarks and the cut
    // watch were no errors.
    for h in health.kinds.values() {
        assert_eq!((h.errors, h.relists), (1, 1), "{health:#?}");
    }
    assert_eq!(health.pods_retained, 2, "{health:#?}");
}

/// An API server that fails its first lists (500): each failure counted and said, the watch
/// retries with backoff and the inventory syncs once the server answers.
#[test]
fn an_api_that_fails_its_first_lists_is_retried_until_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let api = FakeApi::start(&[&root().join("tests/data/flannel-vxlan/inventory.json")]);
    api.fail_lists(3);
    let settings = settings_for(&api, dir.path(), 30);
    let inventory = ApiInventory::start(&settings, &core_kinds()).unwrap();
    let health = inventory.health();
    assert!(health.synced, "{health:#?}");
    let errors: u64 = health.kinds.values().map(|k| k.errors).sum();
    assert_eq!(errors, 3, "{health:#?}");
    assert!(
        health
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("request timed out"),
        "{health:#?}"
    );
    assert_eq!(inventory.snapshot().pods.len(), 3);
}

/// A plugin's CNI objects come through the same watch, whole, with no host code that knows
/// them: an IPAMBlock created while running reaches the snapshot as JSON.
#[test]
fn cni_objects_are_watched_generically_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let api = FakeApi::start(&[&root().join("tests/data/flannel-vxlan/inventory.json")]);
    let settings = settings_for(&api, dir.path(), 20);
    let mut kinds = core_kinds();
    kinds.push(Kind::new("crd.projectcalico.org/v1", "IPAMBlock"));
    kinds.push(Kind::new("network.openshift.io/v1", "HostSubnet"));
    let inventory = ApiInventory::start(&settings, &kinds).unwrap();
    api.apply(
        json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMBlock",
        "metadata": {"name": "10-70-5-0-26", "managedFields": [{"manager": "calico"}]},
        "spec": {"cidr": "10.70.5.0/26", "affinity": "host:node-a"}}),
    );
    api.apply(
        json!({"apiVersion": "network.openshift.io/v1", "kind": "HostSubnet",
        "metadata": {"name": "node-b"}, "host": "node-b", "hostIP": "10.0.0.12",
        "subnet": "10.128.2.0/23"}),
    );
    let inv = until(&inventory, "the CNI objects", |i| i.objects.len() == 2);
    let kinds: Vec<(&str, &str)> = inv
        .objects
        .iter()
        .map(|o| (o.kind.as_str(), o.name.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [("IPAMBlock", "10-70-5-0-26"), ("HostSubnet", "node-b")]
    );
    let block: Value = serde_json::from_str(&inv.objects[0].json).unwrap();
    assert_eq!(block["spec"]["cidr"], "10.70.5.0/26");
    assert!(block["metadata"].get("managedFields").is_none());
    api.delete("crd.projectcalico.org/v1", "IPAMBlock", "", "10-70-5-0-26");
    until(&inventory, "the IPAMBlock deleted", |i| {
        i.objects.len() == 1
    });
}

/// `cniscope run` on the Flannel VXLAN lab with its inventory from the API stand-in. The
/// client pod is unknown to the API when the capture starts; it is added just before it sends
/// (named from its first packet), then deleted and its address taken by a new pod that sends
/// the same traffic: each round's edges name the pod that held the address then, with every
/// packet of the round.
#[cfg(feature = "live")]
#[test]
fn a_live_capture_names_a_pod_added_mid_capture_and_the_new_holder_of_a_reused_address() {
    use crate::lab::Lab;
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    const INTERVAL: u64 = 6;
    plugin("flannel");
    let lab = Lab::build("flannel.sh", "k8", "vxlan");
    let api = FakeApi::start(&[&lab.dir().join("inventory.json")]);
    let dump: Value =
        serde_json::from_str(&std::fs::read_to_string(lab.dir().join("inventory.json")).unwrap())
            .unwrap();
    let client = dump["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "Pod" && i["metadata"]["name"] == "client-a1")
        .unwrap()
        .clone();
    api.delete("v1", "Pod", "default", "client-a1");

    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(lab.config())
        .unwrap()
        .replace(
            "interval_secs = 1\n",
            &format!("interval_secs = {INTERVAL}\n"),
        )
        .replace(
            "files = [\"inventory.json\"]",
            &format!(
                "kubernetes = true\nkubeconfig = \"{}\"",
                api.kubeconfig(dir.path()).display()
            ),
        );
    assert!(config.contains("kubernetes = true"), "{config}");
    let path = lab.dir().join("k8s.toml");
    std::fs::write(&path, &config).unwrap();
    let output = lab.dir().join("topology.json");
    let mut run = Running::start(
        &["run", "-c", path.to_str().unwrap(), "--format", "json"],
        dir.path().join("run.err"),
    );
    wait_output(&output, "the first window", |d| {
        d["health"]["inventory"]["synced"] == true
    });

    at_window_start(INTERVAL);
    let mut first = client.clone();
    first["metadata"]["uid"] = json!("uid-client-1");
    api.apply(first);
    lab.script(&["traffic", &lab.id]);

    at_window_start(INTERVAL);
    api.delete("v1", "Pod", "default", "client-a1");
    let mut second = client.clone();
    second["metadata"]["name"] = json!("client-a1-v2");
    second["metadata"]["uid"] = json!("uid-client-2");
    api.apply(second);
    lab.script(&["traffic", &lab.id]);
    at_window_start(INTERVAL);
    std::thread::sleep(Duration::from_secs(1));

    let doc: Value = serde_json::from_str(&run.stop()).unwrap();
    let all = edges(&doc);
    let from = |pod: &str| -> Vec<String> {
        let prefix = format!("pod/default/{pod} -> ");
        all.iter()
            .filter_map(|e| e.strip_prefix(&prefix))
            .map(str::to_string)
            .collect()
    };
    let (old, new) = (from("client-a1"), from("client-a1-v2"));
    assert!(!old.is_empty(), "{all:#?}\n{}", run.stderr());
    assert_eq!(
        old, new,
        "each round's edges, all its packets, named by its pod: {all:#?}"
    );
    assert!(
        !all.iter().any(|e| e.contains("10.244.0.2")),
        "no edge left to the bare address: {all:#?}"
    );
    let inventory = &doc["health"]["inventory"];
    assert_eq!(inventory["kinds"]["v1 Pod"]["errors"], 0, "{inventory:#}");
    assert_eq!(inventory["pods_retained"], 1, "{inventory:#}");
}
