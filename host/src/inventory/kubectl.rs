//! Loads `kubectl get nodes,pods,services,endpointslices -A -o json` output: a `List` (or a
//! `NodeList`, `PodList`, ...) or a single object. Unknown kinds are skipped; every error names
//! the file and the item.

use super::{EndpointSlice, Inventory, Node, Pod, Service, ServicePort, protocol_number};
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

pub fn load_file(path: &Path) -> Result<Inventory, InventoryError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
        path: shown.clone(),
        source,
    })?;
    let value: Value = serde_json::from_str(&text).map_err(|source| InventoryError::Json {
        path: shown.clone(),
        source,
    })?;
    from_value(&value).map_err(|(item, detail)| InventoryError::Field {
        path: shown,
        item,
        detail,
    })
}

/// Parses a List or a single object; the error is (item, detail).
pub fn from_value(value: &Value) -> Result<Inventory, (String, String)> {
    let mut inv = Inventory::default();
    let items: Vec<&Value> = match value.get("items").and_then(Value::as_array) {
        Some(items) => items.iter().collect(),
        None => vec![value],
    };
    let list_kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    for (i, item) in items.into_iter().enumerate() {
        // Items of a typed list (PodList) may omit their own kind.
        let kind = item
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_else(|| list_kind.trim_end_matches("List"));
        let label = format!("items[{i}] ({kind} {})", name_of(item));
        let r = match kind {
            "Node" => node(item).map(|n| inv.nodes.push(n)),
            "Pod" => pod(item).map(|p| inv.pods.push(p)),
            "Service" => service(item).map(|s| inv.services.push(s)),
            "EndpointSlice" => {
                inv.endpoint_slices.push(slice(item));
                Ok(())
            }
            "HostSubnet" => host_subnet(item).map(|h| inv.openshift.host_subnets.push(h)),
            "NetNamespace" => net_namespace(item).map(|n| inv.openshift.netnamespaces.push(n)),
            _ => Ok(()),
        };
        r.map_err(|detail| (label, detail))?;
    }
    Ok(inv)
}

/// OpenShift-SDN's HostSubnet: (node, subnet).
fn host_subnet(v: &Value) -> Result<(String, String), String> {
    let host = v["host"].as_str().ok_or("host: missing")?;
    let subnet = v["subnet"].as_str().ok_or("subnet: missing")?;
    Ok((host.to_string(), subnet.to_string()))
}

/// OpenShift-SDN's NetNamespace: (namespace, NETID).
fn net_namespace(v: &Value) -> Result<(String, u32), String> {
    let name = v["netname"]
        .as_str()
        .or_else(|| v["metadata"]["name"].as_str())
        .ok_or("netname: missing")?;
    let netid = v["netid"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or("netid: missing or not a number")?;
    Ok((name.to_string(), netid))
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

fn map_at(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
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

fn pod(v: &Value) -> Result<Pod, String> {
    let status = &v["status"];
    let mut ips = Vec::new();
    for p in status["podIPs"].as_array().into_iter().flatten() {
        ips.push(ip(str_at(p, &["ip"]), "status.podIPs")?);
    }
    if ips.is_empty() && !str_at(status, &["podIP"]).is_empty() {
        ips.push(ip(str_at(status, &["podIP"]), "status.podIP")?);
    }
    Ok(Pod {
        namespace: str_at(v, &["metadata", "namespace"]).to_string(),
        name: str_at(v, &["metadata", "name"]).to_string(),
        node: str_at(v, &["spec", "nodeName"]).to_string(),
        ips,
        host_network: v["spec"]["hostNetwork"].as_bool().unwrap_or(false),
        workload: workload(v),
        annotations: map_at(&v["metadata"]["annotations"]),
        labels: map_at(&v["metadata"]["labels"]),
        created_ns: time_ns(
            &v["metadata"]["creationTimestamp"],
            "metadata.creationTimestamp",
        )?,
        deleted_ns: time_ns(
            &v["metadata"]["deletionTimestamp"],
            "metadata.deletionTimestamp",
        )?,
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
    use crate::inventory::NETID_ANNOTATION;

    #[test]
    fn openshift_sdn_objects_become_node_subnets_and_pod_netids() {
        // As `oc get nodes,pods,hostsubnets,netnamespaces -A -o json` prints them.
        let dump = serde_json::json!({"kind": "List", "items": [
            {"kind": "Node", "metadata": {"name": "w1"},
             "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.11"}]}},
            {"kind": "Pod", "metadata": {"name": "web", "namespace": "shop"},
             "spec": {"nodeName": "w1"}, "status": {"podIP": "10.128.2.5"}},
            {"kind": "Pod", "metadata": {"name": "tool", "namespace": "ops"},
             "spec": {"nodeName": "w1"}, "status": {"podIP": "10.128.2.6"}},
            {"apiVersion": "network.openshift.io/v1", "kind": "HostSubnet",
             "metadata": {"name": "w1"}, "host": "w1", "hostIP": "10.0.0.11",
             "subnet": "10.128.2.0/23"},
            {"apiVersion": "network.openshift.io/v1", "kind": "NetNamespace",
             "metadata": {"name": "shop"}, "netname": "shop", "netid": 4242}
        ]});
        let inv = from_value(&dump).unwrap();
        let seen = inv.with_openshift_sdn();
        assert_eq!(seen.nodes[0].pod_cidrs, vec!["10.128.2.0/23".to_string()]);
        let netid = |i: usize| seen.pods[i].annotations.get(NETID_ANNOTATION).cloned();
        assert_eq!(netid(0).as_deref(), Some("4242"));
        assert_eq!(netid(1), None, "no NetNamespace for ops");
        // A broken object names itself.
        let bad = serde_json::json!({"kind": "NetNamespace", "metadata": {"name": "x"},
                                     "netname": "x", "netid": "many"});
        let (item, detail) = from_value(&bad).unwrap_err();
        assert!(
            item.contains("NetNamespace x") && detail.contains("netid"),
            "{item}: {detail}"
        );
    }
}
