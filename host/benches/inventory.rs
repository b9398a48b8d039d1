//! Memory of the inventory that follows the API, on 10 000 pods with 10% churn per minute
//! (goal: <= 50 MB), and the cost of handing a changed inventory to the pipeline between
//! windows, against one window of the flannel plugin's work measured in the same run.
//!
//! The store is fed as the watches feed it (`inventory::api::Store`): the list of a cluster of
//! 10 000 pods on 200 nodes with 2 000 services, then 15 simulated minutes of churn, 1 000 pods
//! deleted and 1 000 created each minute (addresses reused), so the deleted pods retained for
//! `retain_deleted_secs` (600) are at their steady state. Bytes are counted by a counting
//! allocator: what the store holds, and a snapshot with its IP history (the resolver's), against
//! the same objects as the API's JSON. Prints figures; asserts nothing (`./x bench`).

#[path = "support/workload.rs"]
mod workload;

use cniscope::config::PluginToLoad;
use cniscope::inventory::api::{Kind, Store};
use cniscope::inventory::history::IpHistory;
use cniscope::inventory::kubectl;
use cniscope::pipeline::Pipeline;
use cniscope::plugins::{PluginEngine, PluginSettings};
use serde_json::{Value, json};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use workload::root;

struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout, unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as allocated above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn held() -> usize {
    HELD.load(Ordering::Relaxed)
}

const PODS: u64 = 10_000;
const NODES: u64 = 200;
const SERVICES: u64 = 2_000;
const CHURN_PER_MINUTE: u64 = PODS / 10;
const MINUTES: u64 = 15;
const RETAIN_NS: u64 = 600 * 1_000_000_000;
const MINUTE_NS: u64 = 60 * 1_000_000_000;

fn ip(n: u64) -> String {
    // 12 000 addresses for 10 000 live pods: a deleted pod's address is reused 2 000 pods on.
    let n = n % 12_000;
    format!("10.{}.{}.{}", 64 + n / 65_536, (n / 256) % 256, n % 256)
}

/// A pod as the API sends it, with what real pods carry: labels, CNI annotations, kubectl's
/// last-applied copy of the manifest, an owner, containers.
fn pod(n: u64) -> Value {
    let app = format!("app-{}", n % SERVICES);
    let name = format!("{app}-7d9f8c6b5-{n:05x}");
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": format!("team-{}", n % 40), "uid": format!("9a1c{n:028x}"),
            "creationTimestamp": "2026-11-30T08:00:00Z", "resourceVersion": n.to_string(),
            "labels": {"app": app, "pod-template-hash": "7d9f8c6b5", "version": "v3", "tier": "backend", "team": "payments"},
            "annotations": {
                "cni.projectcalico.org/podIP": format!("{}/32", ip(n)),
                "cni.projectcalico.org/podIPs": format!("{}/32", ip(n)),
                "cni.projectcalico.org/containerID": format!("{n:064x}"),
                "prometheus.io/scrape": "true",
                "kubectl.kubernetes.io/last-applied-configuration": "x".repeat(1500)},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-7d9f8c6b5"), "uid": "1", "controller": true}],
            "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsV1": {"f:status": {}}}]},
        "spec": {"nodeName": format!("node-{}", n % NODES), "serviceAccountName": "default",
            "containers": [{"name": "app", "image": "registry.example/app:v3", "ports": [{"containerPort": 8080}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
        "status": {"phase": "Running", "hostIP": format!("192.168.{}.{}", n % NODES / 250, n % NODES),
            "podIP": ip(n), "podIPs": [{"ip": ip(n)}], "startTime": "2026-11-30T08:00:01Z",
            "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn node(n: u64) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("node-{n}"),
        "labels": {"kubernetes.io/hostname": format!("node-{n}"), "topology.kubernetes.io/zone": "z1"}},
        "spec": {"podCIDR": format!("10.64.{n}.0/24")},
        "status": {"addresses": [{"type": "InternalIP", "address": format!("192.168.{}.{}", n / 250, n % 250)}]}})
}

fn service(n: u64) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("app-{n}"), "namespace": format!("team-{}", n % 40)},
        "spec": {"type": "ClusterIP", "clusterIP": format!("10.96.{}.{}", n / 250, n % 250),
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]}})
}

fn pipeline(engine: &PluginEngine) -> Pipeline {
    let inventory =
        kubectl::load_file(&root().join("tests/data/flannel-vxlan/inventory.json")).unwrap();
    let mut settings = PluginSettings::new("flannel");
    settings.options_json = r#"{"network": "10.244.0.0/16"}"#.into();
    let plugin = PluginToLoad {
        path: root().join("dist/plugins/flannel.wasm"),
        sha256: None,
        settings,
    };
    Pipeline::new(engine, &[plugin], inventory).expect("dist/plugins/flannel.wasm (./x build)")
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

fn main() {
    let (pods, nodes, services) = (
        Kind::new("v1", "Pod"),
        Kind::new("v1", "Node"),
        Kind::new("v1", "Service"),
    );
    let start = held();
    let mut store = Store::new(3, RETAIN_NS);
    let mut json_bytes = 0usize;
    let t0 = 1_800_000_000 * 1_000_000_000u64;
    for (kind, objects) in [
        (&nodes, (0..NODES).map(node).collect::<Vec<_>>()),
        (&services, (0..SERVICES).map(service).collect()),
        (&pods, (0..PODS).map(pod).collect()),
    ] {
        store.list_begins(kind);
        for o in &objects {
            store.apply(kind, o, t0);
        }
        store.list_done(kind, t0);
    }
    // Churn: each minute the oldest tenth of the pods goes and as many new ones come.
    let mut next = PODS;
    let mut events = 0u64;
    let churn = Instant::now();
    for minute in 1..=MINUTES {
        let now = t0 + minute * MINUTE_NS;
        for k in 0..CHURN_PER_MINUTE {
            let gone = next - PODS + k;
            store.delete(&pods, &pod(gone), now);
            store.apply(&pods, &pod(next + k), now);
            events += 2;
        }
        next += CHURN_PER_MINUTE;
        store.forget(now);
    }
    let churn = churn.elapsed();
    let store_bytes = held() - start;
    let now = t0 + MINUTES * MINUTE_NS;
    for n in (next - PODS)..next {
        json_bytes += pod(n).to_string().len();
    }
    json_bytes += (0..NODES).map(|n| node(n).to_string().len()).sum::<usize>();
    json_bytes += (0..SERVICES)
        .map(|n| service(n).to_string().len())
        .sum::<usize>();

    let before = held();
    let t = Instant::now();
    let snapshot = store.inventory();
    let history = IpHistory::new(&snapshot);
    let snapshot_time = t.elapsed();
    let snapshot_bytes = held() - before;
    let (live, retained) = (
        snapshot.pods.iter().filter(|p| p.deleted_ns == 0).count(),
        snapshot.pods.iter().filter(|p| p.deleted_ns != 0).count(),
    );
    assert!(
        history
            .owner_at(ip(next - 1).parse().unwrap(), now)
            .is_some()
    );

    // Handing it to the pipeline: a new resolver and on-inventory for the plugin.
    let (points, obs) = workload::replicated(16_384);
    let engine = PluginEngine::new(None).unwrap();
    let mut p = pipeline(&engine);
    let mut window = Duration::MAX;
    for w in 0..3u64 {
        let t = Instant::now();
        p.window(&points, &obs, (w + 1) * 1_000_000_000);
        window = window.min(t.elapsed());
    }
    // What the pipeline holds of it: the resolver (the snapshot and its IP history) and the
    // plugin instance's copy of what it was given (kept to give it again after a restart).
    let before = held();
    p.set_inventory(store.inventory());
    let pipeline_bytes = held().saturating_sub(before);
    let mut refresh = Duration::MAX;
    for _ in 0..3 {
        let inv = store.inventory();
        let t = Instant::now();
        p.set_inventory(inv);
        refresh = refresh.min(t.elapsed());
    }

    println!(
        "inventory: {PODS} pods ({live} live, {retained} deleted and retained 600 s) on {NODES} nodes, {SERVICES} services, after {MINUTES} minutes of {CHURN_PER_MINUTE} pods deleted and created per minute ({events} events in {:.0} ms, {:.1} us each)",
        churn.as_secs_f64() * 1e3,
        churn.as_secs_f64() * 1e6 / events as f64
    );
    println!(
        "memory: the store {:.1} MB, a snapshot with its IP history {:.1} MB; running (the store, and the pipeline's resolver and plugin copy {:.1} MB) {:.1} MB against the 50 MB goal ({:.2}); the live objects as API JSON: {:.1} MB",
        mb(store_bytes),
        mb(snapshot_bytes),
        mb(pipeline_bytes),
        mb(store_bytes + pipeline_bytes),
        mb(store_bytes + pipeline_bytes) / 50.0,
        mb(json_bytes),
    );
    let h = p.plugins[0].health();
    println!(
        "flannel.wasm given the inventory {} times: errors {}, traps {}, memory kills {}, peak memory {:.1} MB (its limit: 64 MiB)",
        4,
        h.errors,
        h.traps,
        h.memory_kills,
        mb(h.peak_memory_bytes as usize)
    );
    println!(
        "a changed inventory between windows: snapshot and IP history {:.1} ms; handed to the pipeline (resolver, on-inventory into flannel.wasm) {:.1} ms; one window of {} observations {:.1} ms ({:.2}x)",
        snapshot_time.as_secs_f64() * 1e3,
        refresh.as_secs_f64() * 1e3,
        obs.len(),
        window.as_secs_f64() * 1e3,
        refresh.as_secs_f64() / window.as_secs_f64()
    );
}
