//! Reading the inventory: annotations, and an index from addresses to nodes and pods.

use crate::hash::FastMap;
use crate::net::{Cidr, CidrSet};
use crate::{Inventory, Ip, NodeInfo, PodInfo};

/// Lookup over `list<tuple<string, string>>` annotations or labels.
pub trait Annotations {
    fn annotation(&self, key: &str) -> Option<&str>;
}

impl Annotations for [(String, String)] {
    fn annotation(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

impl Annotations for Vec<(String, String)> {
    fn annotation(&self, key: &str) -> Option<&str> {
        self.as_slice().annotation(key)
    }
}

/// CNI-agnostic lookups every plugin needs: which node owns an address or a pod CIDR, and
/// which pods carry an IP. Build it in `on_inventory`.
#[derive(Default, Debug, Clone)]
pub struct InventoryIndex {
    pub nodes: Vec<NodeInfo>,
    /// Node index by any of its addresses.
    node_by_ip: FastMap<Ip, usize>,
    /// Node index by its pod CIDRs (`spec.podCIDRs`).
    node_by_pod_cidr: CidrSet<usize>,
    /// Pods (possibly several over time) by IP; host-network pods are left out (their IP is
    /// the node's).
    pods_by_ip: FastMap<Ip, Vec<usize>>,
    pub pods: Vec<PodInfo>,
    /// Every ClusterIP / external IP of a service.
    service_ips: FastMap<Ip, usize>,
    pub inventory: Option<Inventory>,
}

impl InventoryIndex {
    /// Indexes `inv`; pod CIDRs that do not parse are skipped and returned as warnings.
    pub fn new(inv: Inventory) -> (InventoryIndex, Vec<String>) {
        let mut idx = InventoryIndex::default();
        let mut warnings = Vec::new();
        for (i, node) in inv.nodes.iter().enumerate() {
            for ip in &node.addresses {
                idx.node_by_ip.insert(*ip, i);
            }
            for cidr in &node.pod_cidrs {
                match cidr.parse::<Cidr>() {
                    Ok(c) => idx.node_by_pod_cidr.insert(c, i),
                    Err(e) => warnings.push(format!("node {}: {e}", node.name)),
                }
            }
        }
        for (i, pod) in inv.pods.iter().enumerate() {
            if pod.host_network {
                continue;
            }
            for ip in &pod.ips {
                idx.pods_by_ip.entry(*ip).or_default().push(i);
            }
        }
        for (i, svc) in inv.services.iter().enumerate() {
            for ip in svc.cluster_ips.iter().chain(&svc.external_ips) {
                idx.service_ips.insert(*ip, i);
            }
        }
        idx.nodes = inv.nodes.clone();
        idx.pods = inv.pods.clone();
        idx.inventory = Some(inv);
        (idx, warnings)
    }

    pub fn node_by_ip(&self, ip: Ip) -> Option<&NodeInfo> {
        self.node_by_ip.get(&ip).map(|&i| &self.nodes[i])
    }

    pub fn node_named(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node whose pod CIDR contains `ip`, with that CIDR.
    pub fn node_by_pod_cidr(&self, ip: Ip) -> Option<(&Cidr, &NodeInfo)> {
        self.node_by_pod_cidr
            .lookup(ip)
            .map(|(c, &i)| (c, &self.nodes[i]))
    }

    /// Pods that carried `ip` at some time (more than one when the IP was reused).
    pub fn pods_by_ip(&self, ip: Ip) -> impl Iterator<Item = &PodInfo> {
        self.pods_by_ip
            .get(&ip)
            .into_iter()
            .flatten()
            .map(|&i| &self.pods[i])
    }

    pub fn is_pod_ip(&self, ip: Ip) -> bool {
        self.pods_by_ip.contains_key(&ip)
    }

    pub fn is_service_ip(&self, ip: Ip) -> bool {
        self.service_ips.contains_key(&ip)
    }
}
