//! Loads `kubectl get nodes,pods,services,endpointslices -A -o json` output: a `List` (or a
//! `NodeList`, `PodList`, ...) or a single object. Unknown kinds are skipped; every error names
//! the file and the item.

use super::{
    CniObject, EndpointSlice, Inventory, Node, Pod, Service, ServicePort, protocol_number,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum InventoryError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{path}: not JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    /// An item lacks a field we need, or has it in the wrong form.
    #[error("{path}: {item}: {detail}")]
    Field {
        path: String,
        item: String,
        detail: String,
    },
}

/// Reads a kubectl dump as a stream: each item of a List is read and dropped before the next
/// (a dump of 100 000 pods is ~50 MB of JSON, and ten times that as one JSON tree).
pub fn load_file(path: &Path) -> Result<Inventory, InventoryError> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| InventoryError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut reader = ListReader::default();
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(file));
    let streamed =
        serde::Deserializer::deserialize_any(&mut de, Dump(&mut reader)).and_then(|()| de.end());
    if let Some((item, detail)) = reader.failed.take() {
        return Err(InventoryError::Field {
            path: shown,
            item,
            detail,
        });
    }
    streamed.map_err(|source| {
        if source.is_data() {
            // Valid JSON of the wrong shape: `null`, an array, `items` that is no list.
            InventoryError::Field {
                path: shown.clone(),
                item: "the file".into(),
                detail: source.to_string(),
            }
        } else {
            InventoryError::Json {
                path: shown.clone(),
                source,
            }
        }
    })?;
    reader
        .finish()
        .map_err(|(item, detail)| InventoryError::Field {
            path: shown,
            item,
            detail,
        })
}

/// Parses a List or a single object; the error is (item, detail).
pub fn from_value(value: &Value) -> Result<Inventory, (String, String)> {
    // A List (`kubectl get ... -o json`) or one object; anything else (null, an array, a
    // number) is not an inventory, and reading it as an empty one would make every pod
    // external without a word.
    let mut reader = ListReader::default();
    match (value.as_object(), value.get("items")) {
        (None, _) => return Err(not_kubernetes()),
        (Some(_), Some(Value::Array(items))) => {
            for (i, item) in items.iter().enumerate() {
                reader.item(i, item)?;
            }
        }
        (Some(_), Some(_)) => return Err(("items".into(), "not a list".into())),
        (Some(_), None) if value.get("kind").and_then(Value::as_str).is_some() => {
            reader.item(0, value)?
        }
        (Some(_), None) => return Err(not_kubernetes()),
    }
    reader.list_kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    reader.finish()
}

fn not_kubernetes() -> (String, String) {
    (
        "the file".to_string(),
        "not a Kubernetes List or object (kubectl get ... -o json)".to_string(),
    )
}

/// A dump's items read one at a time into an inventory.
#[derive(Default)]
struct ListReader {
    inv: Inventory,
    /// The List's own kind (`PodList`): it names items that omit theirs. kubectl writes it
    /// after the items, so those items wait for it.
    list_kind: String,
    kindless: Vec<(usize, Value)>,
    /// The first item that could not be read, when streaming (serde's error cannot carry it).
    failed: Option<(String, String)>,
}

impl ListReader {
    fn item(&mut self, i: usize, item: &Value) -> Result<(), (String, String)> {
        if !item.is_object() {
            return Err((format!("items[{i}]"), "not an object".into()));
        }
        match item.get("kind").and_then(Value::as_str) {
            Some(kind) if !kind.is_empty() => self.read(i, item, kind),
            _ => {
                self.kindless.push((i, item.clone()));
                Ok(())
            }
        }
    }

    fn read(&mut self, i: usize, item: &Value, kind: &str) -> Result<(), (String, String)> {
        let label = format!("items[{i}] ({kind} {})", name_of(item));
        match read_object(item, kind).map_err(|detail| (label, detail))? {
            Object::Node(n) => self.inv.nodes.push(n),
            Object::Pod(p) => self.inv.pods.push(p),
            Object::Service(s) => self.inv.services.push(s),
            Object::EndpointSlice(e) => self.inv.endpoint_slices.push(e),
            Object::Cni(o) => self.inv.objects.push(o),
            Object::Other => {}
        }
        Ok(())
    }

    /// The items that waited for the List's kind, then the inventory.
    fn finish(mut self) -> Result<Inventory, (String, String)> {
        let kind = self.list_kind.trim_end_matches("List").to_string();
        for (i, item) in std::mem::take(&mut self.kindless) {
            if kind.is_empty() {
                return Err((
                    format!("items[{i}] ({})", name_of(&item)),
                    "kind: missing".into(),
                ));
            }
            self.read(i, &item, &kind)?;
        }
        Ok(self.inv)
    }
}

/// The top of a dump: a List, whose `items` are streamed into the reader, or one object.
struct Dump<'r>(&'r mut ListReader);

impl<'de> serde::de::Visitor<'de> for Dump<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Kubernetes List or object (kubectl get ... -o json)")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut rest = serde_json::Map::new();
        let mut listed = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "items" {
                map.next_value_seed(Items(self.0))?;
                listed = true;
            } else {
                rest.insert(key, map.next_value()?);
            }
        }
        let kind = rest.get("kind").and_then(Value::as_str).unwrap_or("");
        if listed {
            self.0.list_kind = kind.to_string();
            return Ok(());
        }
        // One object (`kubectl get pod x -o json`).
        let outcome = if kind.is_empty() {
            Err(not_kubernetes())
        } else {
            self.0.item(0, &Value::Object(rest))
        };
        outcome.map_err(|e| {
            self.0.failed = Some(e);
            serde::de::Error::custom("an item could not be read")
        })
    }
}

/// A List's `items`, read one by one.
struct Items<'r>(&'r mut ListReader);

impl<'de> serde::de::DeserializeSeed<'de> for Items<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Items<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("items: a list")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while let Some(item) = seq.next_element::<Value>()? {
            if let Err(e) = self.0.item(i, &item) {
                self.0.failed = Some(e);
                return Err(serde::de::Error::custom("an item could not be read"));
            }
            i += 1;
        }
        Ok(())
    }
}

/// One object of a dump or of an API watch, read.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Node(Node),
    Pod(Pod),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Cni(CniObject),
    /// A core kind the host does not read (a ConfigMap, a Namespace).
    Other,
}

/// Reads one object of kind `kind` (the item's own, or its typed list's); the error is the
/// field at fault. The same reader serves kubectl dumps and the API watch.
pub fn read_object(item: &Value, kind: &str) -> Result<Object, String> {
    // The core kinds the host reads, by API group too: another group's "Service"
    // (Knative's) is a CNI-agnostic object like any other.
    let api = item["apiVersion"].as_str().unwrap_or("");
    let core = matches!(api, "" | "v1");
    let discovery = matches!(api, "" | "discovery.k8s.io/v1" | "discovery.k8s.io/v1beta1");
    Ok(match kind {
        "Node" if core => Object::Node(node(item)?),
        "Pod" if core => Object::Pod(pod(item)?),
        "Service" if core => Object::Service(service(item)?),
        "EndpointSlice" if discovery => Object::EndpointSlice(slice(item)),
        _ => cni_object(item, kind).map_or(Object::Other, Object::Cni),
    })
}

/// An object of an API group (`group/version`: a CNI's custom resources, and any other
/// group's kind the host does not read itself), kept whole for the plugins that ask for its
/// kind. Core `v1` kinds (ConfigMaps, Secrets, ...) are never kept: no plugin reads them, and
/// a dump may hold secrets.
fn cni_object(item: &Value, kind: &str) -> Option<CniObject> {
    let api_version = item["apiVersion"].as_str()?;
    if !api_version.contains('/') || kind.is_empty() {
        return None;
    }
    let mut whole = item.clone();
    if let Some(m) = whole.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    let m = &item["metadata"];
    Some(CniObject {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        namespace: m["namespace"].as_str().unwrap_or("").to_string(),
        name: m["name"].as_str().unwrap_or("").to_string(),
        json: whole.to_string(),
    })
}

fn name_of(v: &Value) -> String {
    let m = &v["metadata"];
    match (m["namespace"].as_str(), m["name"].as_str()) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n.to_string(),
        _ => "<unnamed>".to_string(),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter().fold(v, |v, k| &v[*k]).as_str().unwrap_or("")
}

/// Annotations no plugin reads and that can be as large as the object itself (`kubectl
/// apply`'s copy of the whole manifest): dropped so a 10 000-pod inventory stays small.
const UNREAD_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];

fn map_at(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !UNREAD_ANNOTATIONS.contains(&k.as_str()))
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn ip(s: &str, field: &str) -> Result<IpAddr, String> {
    s.parse()
        .map_err(|_| format!("{field}: {s:?} is not an IP address"))
}

/// RFC 3339 time -> ns since the epoch; 0 when absent.
pub fn time_ns(v: &Value, field: &str) -> Result<u64, String> {
    match v.as_str() {
        None => Ok(0),
        Some(s) => humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
            .map(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0)
            })
            .map_err(|e| format!("{field}: {s:?}: {e}")),
    }
}

fn node(v: &Value) -> Result<Node, String> {
    let name = str_at(v, &["metadata", "name"]);
    if name.is_empty() {
        return Err("metadata.name is missing".into());
    }
    let mut addresses = Vec::new();
    for a in v["status"]["addresses"].as_array().into_iter().flatten() {
        if matches!(a["type"].as_str(), Some("InternalIP" | "ExternalIP")) {
            addresses.push(ip(str_at(a, &["address"]), "status.addresses")?);
        }
    }
    let mut pod_cidrs: Vec<String> = v["spec"]["podCIDRs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    if pod_cidrs.is_empty() && !str_at(v, &["spec", "podCIDR"]).is_empty() {
        pod_cidrs.push(str_at(v, &["spec", "podCIDR"]).to_string());
    }
    Ok(Node {
        name: name.to_string(),
        addresses,
        pod_cidrs,
        annotations: map_at(&v["metadata"]["annotations"]),
        labels: map_at(&v["metadata"]["labels"]),
    })
}

fn workload(v: &Value) -> String {
    let Some(owner) = v["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|o| o.first())
    else {
        return String::new();
    };
    let (kind, name) = (str_at(owner, &["kind"]), str_at(owner, &["name"]));
    match kind {
        // A ReplicaSet named <deployment>-<pod-template-hash> belongs to that Deployment.
        "ReplicaSet" => {
            let hash = str_at(v, &["metadata", "labels", "pod-template-hash"]);
            match name.strip_suffix(hash).and_then(|n| n.strip_suffix('-')) {
                Some(deploy) if !hash.is_empty() => format!("deployment/{deploy}"),
                _ => format!("replicaset/{name}"),
            }
        }
        _ => format!("{}/{name}", kind.to_lowercase()),
    }
}

/// The item's `metadata.name`: without one, two objects would merge under one name.
fn named(v: &Value) -> Result<(), String> {
    if str_at(v, &["metadata", "name"]).is_empty() {
        return Err("metadata.name is missing".into());
    }
    Ok(())
}

fn pod(v: &Value) -> Result<Pod, String> {
    named(v)?;
    let status = &v["status"];
    let mut ips = Vec::new();
    for p in status["podIPs"].as_array().into_iter().flatten() {
        ips.push(ip(str_at(p, &["ip"]), "status.podIPs")?);
    }
    if ips.is_empty() && !str_at(status, &["podIP"]).is_empty() {
        ips.push(ip(str_at(status, &["podIP"]), "status.podIP")?);
    }
    let mut deleted_ns = time_ns(
        &v["metadata"]["deletionTimestamp"],
        "metadata.deletionTimestamp",
    )?;
    // A pod that finished (a Job's) gave its address back when its last container ended: a
    // dump holding it and the address's next pod must not make them share it.
    if matches!(status["phase"].as_str(), Some("Succeeded" | "Failed")) {
        let mut finished = 0;
        for c in status["containerStatuses"].as_array().into_iter().flatten() {
            finished = finished.max(time_ns(
                &c["state"]["terminated"]["finishedAt"],
                "status.containerStatuses[].state.terminated.finishedAt",
            )?);
        }
        if finished != 0 && (deleted_ns == 0 || finished < deleted_ns) {
            deleted_ns = finished;
        }
    }
    Ok(Pod {
        namespace: str_at(v, &["metadata", "namespace"]).to_string(),
        name: str_at(v, &["metadata", "name"]).to_string(),
        node: str_at(v, &["spec", "nodeName"]).to_string(),
        ips,
        host_network: v["spec"]["hostNetwork"].as_bool().unwrap_or(false),
        workload: workload(v),
        annotations: map_at(&v["metadata"]["annotations"]).into_iter().collect(),
        created_ns: time_ns(
            &v["metadata"]["creationTimestamp"],
            "metadata.creationTimestamp",
        )?,
        deleted_ns,
    })
}

fn ports(v: &Value) -> Vec<ServicePort> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|p| ServicePort {
            name: str_at(p, &["name"]).to_string(),
            protocol: protocol_number(p["protocol"].as_str().unwrap_or("TCP")),
            port: p["port"].as_u64().unwrap_or(0) as u16,
            target_port: p["targetPort"].as_u64().unwrap_or(0) as u16,
            node_port: p["nodePort"].as_u64().unwrap_or(0) as u16,
        })
        .collect()
}

fn service(v: &Value) -> Result<Service, String> {
    named(v)?;
    let spec = &v["spec"];
    let mut cluster_ips = Vec::new();
    let listed: Vec<&str> = spec["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let single = spec["clusterIP"].as_str().into_iter().collect::<Vec<_>>();
    for s in if listed.is_empty() { single } else { listed } {
        if s != "None" && !s.is_empty() {
            cluster_ips.push(ip(s, "spec.clusterIP")?);
        }
    }
    let mut external_ips = Vec::new();
    for s in spec["externalIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        external_ips.push(ip(s, "spec.externalIPs")?);
    }
    for i in v["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(s) = i["ip"].as_str() {
            external_ips.push(ip(s, "status.loadBalancer.ingress")?);
        }
    }
    Ok(Service {
        namespace: str_at(v, &["metadata", "namespace"]).to_string(),
        name: str_at(v, &["metadata", "name"]).to_string(),
        kind: spec["type"].as_str().unwrap_or("ClusterIP").to_string(),
        cluster_ips,
        external_ips,
        ports: ports(&spec["ports"]),
        external_traffic_policy: spec["externalTrafficPolicy"]
            .as_str()
            .unwrap_or("Cluster")
            .to_string(),
    })
}

fn slice(v: &Value) -> EndpointSlice {
    let addresses = v["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
        .filter_map(|a| a.as_str()?.parse().ok())
        .collect();
    EndpointSlice {
        namespace: str_at(v, &["metadata", "namespace"]).to_string(),
        service: str_at(v, &["metadata", "labels", "kubernetes.io/service-name"]).to_string(),
        addresses,
        ports: ports(&v["ports"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_of_other_api_groups_are_kept_whole_and_core_ones_are_not() {
        // As `oc get nodes,pods,hostsubnets,netnamespaces,configmaps -A -o json` prints them.
        let dump = serde_json::json!({"kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "w1"},
             "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.11"}]}},
            {"apiVersion": "network.openshift.io/v1", "kind": "HostSubnet",
             "metadata": {"name": "w1", "managedFields": [{"manager": "sdn"}]},
             "host": "w1", "hostIP": "10.0.0.11", "subnet": "10.128.2.0/23"},
            {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMBlock",
             "metadata": {"name": "10-70-5-0-26"},
             "spec": {"cidr": "10.70.5.0/26", "affinity": "host:w1"}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t", "namespace": "a"},
             "data": {"token": "c2VjcmV0"}},
            {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
             "metadata": {"name": "hello", "namespace": "apps"}, "spec": {"template": {}}}
        ]});
        let inv = from_value(&dump).unwrap();
        assert_eq!(inv.nodes.len(), 1);
        assert!(
            inv.services.is_empty(),
            "Knative's Service is not a core Service"
        );
        let kinds: Vec<(&str, &str, &str)> = inv
            .objects
            .iter()
            .map(|o| (o.api_version.as_str(), o.kind.as_str(), o.name.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("network.openshift.io/v1", "HostSubnet", "w1"),
                ("crd.projectcalico.org/v1", "IPAMBlock", "10-70-5-0-26"),
                ("serving.knative.dev/v1", "Service", "hello"),
            ]
        );
        let host_subnet: Value = serde_json::from_str(&inv.objects[0].json).unwrap();
        assert_eq!(host_subnet["subnet"], "10.128.2.0/23");
        assert!(host_subnet["metadata"].get("managedFields").is_none());
        assert_eq!(inv.objects[2].namespace, "apps");
    }

    /// Not an inventory at all, an item that is no object or has no kind, a pod without a
    /// name: each refused, naming the item, instead of read as nothing (every pod external)
    /// or merged with another.
    #[test]
    fn what_is_not_a_kubernetes_list_or_object_is_refused_naming_the_item() {
        for (doc, item, detail) in [
            (serde_json::json!(null), "the file", "not a Kubernetes List"),
            (
                serde_json::json!([1, 2, 3]),
                "the file",
                "not a Kubernetes List",
            ),
            (serde_json::json!({"items": 5}), "items", "not a list"),
            (
                serde_json::json!({"metadata": {}}),
                "the file",
                "not a Kubernetes List",
            ),
            (
                serde_json::json!({"kind": "List", "items": [1]}),
                "items[0]",
                "not an object",
            ),
            (
                serde_json::json!({"kind": "List", "items": [{"metadata": {"name": "x"}}]}),
                "items[0] (x)",
                "kind: missing",
            ),
            (
                serde_json::json!({"kind": "List", "items": [
                    {"kind": "Pod", "metadata": {"name": null, "namespace": "default"}}]}),
                "items[0] (Pod",
                "metadata.name is missing",
            ),
        ] {
            let (got_item, got_detail) = from_value(&doc).unwrap_err();
            assert!(
                got_item.starts_with(item) && got_detail.contains(detail),
                "{doc}: {got_item}: {got_detail}"
            );
        }
        // A typed list's items may omit their kind; an empty List is an empty inventory.
        let typed = serde_json::json!({"kind": "PodList", "items": [
            {"metadata": {"name": "web", "namespace": "shop"}}]});
        assert_eq!(from_value(&typed).unwrap().pods.len(), 1);
        let empty = serde_json::json!({"kind": "List", "items": []});
        assert_eq!(from_value(&empty).unwrap(), Inventory::default());
    }
}

#[cfg(test)]
mod finished_pods {
    use super::*;
    use crate::inventory::history::{IpHistory, Owner};

    /// A finished Job pod and the pod its address went to next, in one dump: the address is
    /// the Job's until its container finished, the new pod's after; nobody shares it.
    #[test]
    fn a_finished_pod_holds_its_address_until_its_containers_ended() {
        let pod = |name: &str, created: &str, phase: &str, finished: Option<&str>| {
            let mut p = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "ci", "creationTimestamp": created},
                "spec": {"nodeName": "w1"},
                "status": {"phase": phase, "podIP": "10.1.0.9"}});
            if let Some(f) = finished {
                p["status"]["containerStatuses"] = serde_json::json!([
                    {"state": {"terminated": {"finishedAt": f}}}]);
            }
            p
        };
        let dump = serde_json::json!({"kind": "List", "items": [
            pod("job-x", "2026-01-01T00:00:00Z", "Succeeded", Some("2026-01-01T00:05:00Z")),
            pod("web", "2026-01-01T00:10:00Z", "Running", None),
        ]});
        let inv = from_value(&dump).unwrap();
        let h = IpHistory::new(&inv);
        assert_eq!(h.shared_by_pods(), vec![]);
        let at = |t: &str| time_ns(&serde_json::json!(t), "t").unwrap();
        let ip = "10.1.0.9".parse().unwrap();
        assert_eq!(
            h.owner_at(ip, at("2026-01-01T00:01:00Z")),
            Some(&Owner::Pod(0))
        );
        assert_eq!(
            h.owner_at(ip, at("2026-01-01T00:11:00Z")),
            Some(&Owner::Pod(1))
        );
        // Two running pods claiming it are said.
        let both = serde_json::json!({"kind": "List", "items": [
            pod("a", "2026-01-01T00:00:00Z", "Running", None),
            pod("b", "2026-01-01T00:10:00Z", "Running", None),
        ]});
        let shared = IpHistory::new(&from_value(&both).unwrap()).shared_by_pods();
        assert_eq!(shared, vec![(ip, 0, 1)]);
    }
}

#[cfg(test)]
mod streamed {
    use super::*;

    fn load(text: &str) -> Result<Inventory, InventoryError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dump.json");
        std::fs::write(&p, text).unwrap();
        load_file(&p)
    }

    /// A file is read as a stream and gives what `from_value` gives: a typed List's items
    /// without a kind take the List's, written after them as kubectl writes it; one object;
    /// the same refusals, naming the item.
    #[test]
    fn a_streamed_dump_reads_as_the_whole_one() {
        let text = r#"{"apiVersion": "v1", "items": [
            {"metadata": {"name": "a", "namespace": "x"}, "status": {"podIP": "10.0.0.1"}},
            {"kind": "Node", "metadata": {"name": "n1"}}
        ], "kind": "PodList", "metadata": {}}"#;
        let inv = load(text).unwrap();
        let whole = from_value(&serde_json::from_str(text).unwrap()).unwrap();
        assert_eq!(inv.pods, whole.pods);
        assert_eq!((inv.pods.len(), inv.nodes.len()), (1, 1));
        let one =
            load(r#"{"kind": "Pod", "metadata": {"name": "solo", "namespace": "x"}}"#).unwrap();
        assert_eq!(one.pods[0].name, "solo");
        for (text, says) in [
            ("null", "expected a Kubernetes List or object"),
            ("[1, 2]", "expected a Kubernetes List or object"),
            (r#"{"items": 5}"#, "expected items: a list"),
            (r#"{"items": [3]}"#, "items[0]: not an object"),
            (
                r#"{"items": [{"metadata": {"name": "k"}}]}"#,
                "items[0] (k): kind: missing",
            ),
            (r#"{"metadata": {}}"#, "not a Kubernetes List or object"),
            (r#"{"items": [{"kind": "Pod""#, "not JSON"),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
