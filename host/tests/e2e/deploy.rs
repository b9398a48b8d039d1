//! `deploy/kubernetes`: the manifests parse, agree with each other (names, namespace, service
//! accounts, ConfigMap keys and mount paths, the broker's Service and the TOML's URL), give
//! the aggregator read access to every kind it watches (the core ones and the CNI objects the
//! shipped plugins ask for), give the agents what capture needs, and the ConfigMap's TOML
//! passes `cniscope config check`. No cluster runs here: this is what can be checked without.

use crate::support::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const NAMESPACE: &str = "cniscope";

struct Manifests {
    /// (kind, name) -> object.
    objects: BTreeMap<(String, String), Value>,
}

impl Manifests {
    fn load() -> Manifests {
        let dir = root().join("deploy/kubernetes");
        let kustomization: Value = serde_saphyr::from_str(
            &std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap(),
        )
        .unwrap();
        let listed: BTreeSet<String> = kustomization["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        let mut files = BTreeSet::new();
        let mut objects = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if name == "kustomization.yaml" || !name.ends_with(".yaml") {
                continue;
            }
            files.insert(name.clone());
            let text = std::fs::read_to_string(&path).unwrap();
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for doc in docs {
                let kind = doc["kind"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: kind"));
                let object_name = doc["metadata"]["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: {kind} without a name"))
                    .to_string();
                assert!(
                    doc["apiVersion"].is_string(),
                    "{name}: {kind} {object_name}"
                );
                let cluster_scoped =
                    matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding");
                if !cluster_scoped {
                    assert_eq!(
                        doc["metadata"]["namespace"], NAMESPACE,
                        "{name}: {kind} {object_name} in the cniscope namespace"
                    );
                }
                let key = (kind.to_string(), object_name);
                assert!(!objects.contains_key(&key), "{key:?} twice");
                objects.insert(key, doc);
            }
        }
        assert_eq!(listed, files, "kustomization.yaml lists every manifest");
        Manifests { objects }
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .get(&(kind.to_string(), name.to_string()))
            .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
    }
}

/// The pod template's volume mounted at `path` in `container`, and what backs it.
fn volume_at<'a>(pod: &'a Value, container: &Value, path: &str) -> &'a Value {
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == path)
        .unwrap_or_else(|| panic!("{} mounts nothing at {path}", container["name"]));
    pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {}", mount["name"]))
}

/// The TOML value of `key` in `[section]` (the simple `key = "value"` lines these files use).
fn toml_value(toml: &str, section: &str, key: &str) -> String {
    let doc: toml::Table = toml.parse().unwrap();
    doc[section][key].as_str().unwrap().to_string()
}

#[test]
fn the_manifests_agree_with_each_other_and_the_config_passes_config_check() {
    let m = Manifests::load();
    m.get("Namespace", NAMESPACE);
    let config = m.get("ConfigMap", "cniscope-config");
    let broker = m.get("Service", "cniscope-nats");
    let port = broker["spec"]["ports"][0]["port"].as_u64().unwrap();
    let nats = m.get("StatefulSet", "cniscope-nats");
    assert_eq!(
        broker["spec"]["selector"],
        nats["spec"]["template"]["metadata"]["labels"]
    );
    let nats_args = nats["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(nats_args.contains("\"-js\""), "JetStream on: {nats_args}");

    for (kind, name, file, command) in [
        ("DaemonSet", "cniscope-agent", "agent.toml", "agent"),
        (
            "Deployment",
            "cniscope-aggregator",
            "aggregate.toml",
            "aggregate",
        ),
    ] {
        let workload = m.get(kind, name);
        let pod = &workload["spec"]["template"]["spec"];
        assert_eq!(
            workload["spec"]["selector"]["matchLabels"],
            workload["spec"]["template"]["metadata"]["labels"],
            "{name}"
        );
        let account = pod["serviceAccountName"].as_str().unwrap();
        m.get("ServiceAccount", account);
        let container = &pod["containers"][0];
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[0], command, "{name}");
        let config_path = Path::new(args[2]);
        let dir = config_path.parent().unwrap().to_str().unwrap();
        let volume = volume_at(pod, container, dir);
        assert_eq!(volume["configMap"]["name"], "cniscope-config", "{name}");
        let key = config_path.file_name().unwrap().to_str().unwrap();
        assert_eq!(key, file);
        let toml = config["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("cniscope-config has no {key}"));
        // The broker's URL names its Service, namespace and port.
        assert_eq!(
            toml_value(toml, "nats", "url"),
            format!("nats://cniscope-nats.{NAMESPACE}.svc:{port}"),
            "{key}"
        );
        // Plugins: the folder the TOML reads is a volume the init container installs into.
        let plugins_dir = toml_value(toml, "plugins", "dir");
        volume_at(pod, container, &plugins_dir);
        let init = &pod["initContainers"][0];
        let install = init["args"].to_string();
        assert!(
            install.contains("\"install\"") && install.contains(&plugins_dir),
            "{name}: {install}"
        );
        volume_at(pod, init, &plugins_dir);
        let cache = toml_value(toml, "plugins", "cache_dir");
        volume_at(pod, container, &cache);

        // The TOML as `config check` reads it, with the pod's folders made here.
        let here = tempfile::tempdir().unwrap();
        let local = toml
            .replace(
                &plugins_dir,
                plugin("flannel").parent().unwrap().to_str().unwrap(),
            )
            .replace(&cache, here.path().join("cache").to_str().unwrap())
            .replace(
                "/var/lib/cniscope/state",
                here.path().join("state").to_str().unwrap(),
            );
        let path = here.path().join(key);
        std::fs::write(&path, local).unwrap();
        let out = cniscope(&["config", "check", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{key}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The aggregator keeps its checkpoint and output on a claim, and runs alone.
    let aggregator = m.get("Deployment", "cniscope-aggregator");
    assert_eq!(aggregator["spec"]["replicas"], 1);
    assert_eq!(aggregator["spec"]["strategy"]["type"], "Recreate");
    let pod = &aggregator["spec"]["template"]["spec"];
    let toml = config["data"]["aggregate.toml"].as_str().unwrap();
    let state = toml_value(toml, "aggregate", "state_file");
    let state_dir = Path::new(&state).parent().unwrap().to_str().unwrap();
    let claim = volume_at(pod, &pod["containers"][0], state_dir);
    m.get(
        "PersistentVolumeClaim",
        claim["persistentVolumeClaim"]["claimName"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(
        Path::new(&toml_value(toml, "aggregate", "output_file")).parent(),
        Path::new(&state).parent()
    );

    // The agents: on every node, in the host's network, with what capture needs.
    let agent = &m.get("DaemonSet", "cniscope-agent")["spec"]["template"]["spec"];
    assert_eq!(agent["hostNetwork"], true);
    assert_eq!(agent["dnsPolicy"], "ClusterFirstWithHostNet");
    assert!(
        agent["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "tolerates every taint"
    );
    let caps: BTreeSet<&str> = agent["containers"][0]["securityContext"]["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for cap in ["BPF", "PERFMON", "NET_ADMIN"] {
        assert!(caps.contains(cap), "{cap} in {caps:?}");
    }
    let env = agent["containers"][0]["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "NODE_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"),
        "the agent is named as the API names its node"
    );
}

/// A kind's resource name as the host asks the API for it (kube-rs pluralises a custom kind:
/// "IPAMBlock" -> "ipamblocks", "CiliumIdentity" -> "ciliumidentities").
fn plural(kind: &str) -> String {
    let k = kind.to_lowercase();
    if ["s", "x", "z", "ch", "sh"].iter().any(|e| k.ends_with(e)) {
        return format!("{k}es");
    }
    if let Some(stem) = k.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        return format!("{stem}ies");
    }
    format!("{k}s")
}

#[test]
fn the_aggregator_may_read_every_kind_it_watches_and_nothing_more() {
    let m = Manifests::load();
    let binding = m.get("ClusterRoleBinding", "cniscope-inventory");
    let role = m.get("ClusterRole", binding["roleRef"]["name"].as_str().unwrap());
    let subject = &binding["subjects"][0];
    let aggregator = m.get("Deployment", "cniscope-aggregator");
    assert_eq!(
        subject["name"],
        aggregator["spec"]["template"]["spec"]["serviceAccountName"]
    );
    assert_eq!(subject["namespace"], NAMESPACE);
    // (group, plural) -> verbs granted.
    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        let verbs: BTreeSet<String> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert!(
            verbs
                .iter()
                .all(|v| ["get", "list", "watch"].contains(&v.as_str())),
            "read-only: {verbs:?}"
        );
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                granted
                    .entry((
                        group.as_str().unwrap().to_string(),
                        resource.as_str().unwrap().to_string(),
                    ))
                    .or_default()
                    .extend(verbs.iter().cloned());
            }
        }
    }
    // What the host watches, and what each shipped plugin says it reads.
    let mut needed: BTreeSet<(String, String)> = [
        ("", "nodes"),
        ("", "pods"),
        ("", "services"),
        ("discovery.k8s.io", "endpointslices"),
    ]
    .iter()
    .map(|(g, r)| (g.to_string(), r.to_string()))
    .collect();
    for name in ["flannel", "calico", "ovn", "cilium", "kata"] {
        let out = cniscope(&["plugin", "inspect", plugin(name).to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let reads = text
            .split("reads objects:\n")
            .nth(1)
            .map(|rest| {
                rest.lines()
                    .take_while(|l| l.starts_with("  "))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for line in reads {
            let (api_version, kind) = line.trim().split_once(' ').unwrap();
            let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            needed.insert((group.to_string(), plural(kind)));
        }
    }
    assert!(
        needed.iter().any(|(g, _)| g == "crd.projectcalico.org"),
        "the plugins' objects were found: {needed:?}"
    );
    let extra: Vec<_> = granted.keys().filter(|r| !needed.contains(*r)).collect();
    assert!(extra.is_empty(), "granted but never watched: {extra:?}");
    for resource in &needed {
        let verbs = granted.get(resource).cloned().unwrap_or_default();
        for verb in ["get", "list", "watch"] {
            assert!(verbs.contains(verb), "{verb} on {resource:?}: {verbs:?}");
        }
    }
}
