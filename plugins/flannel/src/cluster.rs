//! What flannel tells about the cluster, read from node annotations and leases
//! (docs/cni-rules.md, "Flannel"): public IPs, VTEP MACs, backend, each node's lease and gateways.

use cniscope_sdk::json;
use cniscope_sdk::prelude::*;

pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";

#[derive(Clone, Debug)]
pub struct FlannelNode {
    pub name: String,
    /// The VTEP / host-gw next hop: the public-ip annotation, else the node's addresses.
    pub ips: Vec<Ip>,
    pub backend: String,
    pub vni: Option<u32>,
    /// `flannel.<VNI>` when the node's backend-data names its VNI.
    pub vxlan_device: Option<String>,
    pub vtep_mac: Option<Mac>,
    /// The node's subnet lease (`spec.podCIDR`), e.g. 10.244.1.0/24.
    pub leases: Vec<Cidr>,
}

#[derive(Default, Debug)]
pub struct Cluster {
    pub nodes: Vec<FlannelNode>,
    leases: CidrSet<usize>,
    network: Option<Cidr>,
    pub index: InventoryIndex,
}

impl Cluster {
    /// Reads the inventory; problems with one node's annotations are returned as warnings and
    /// that node is still used with what could be read.
    pub fn new(inv: Inventory, network: Option<Cidr>) -> (Cluster, Vec<String>) {
        let (index, mut warnings) = InventoryIndex::new(inv);
        let mut c = Cluster {
            network,
            ..Cluster::default()
        };
        for n in index.nodes() {
            let a = n.annotations.as_slice();
            let mut ips: Vec<Ip> = Vec::new();
            if let Some(ip) = a.annotation(PUBLIC_IP) {
                match ip.parse() {
                    Ok(ip) => ips.push(ip),
                    Err(e) => warnings.push(format!("node {}: {PUBLIC_IP}: {e}", n.name)),
                }
            }
            for ip in &n.addresses {
                if !ips.contains(ip) {
                    ips.push(*ip);
                }
            }
            let (mut vni, mut vtep_mac) = (None, None);
            if let Some(data) = a.annotation(BACKEND_DATA) {
                match json::from_str::<json::Value>(data) {
                    Ok(v) => {
                        vni = v.get("VNI").and_then(json::Value::as_u64).map(|v| v as u32);
                        vtep_mac = v
                            .get("VtepMAC")
                            .and_then(json::Value::as_str)
                            .and_then(|m| m.parse().ok());
                    }
                    Err(e) => warnings.push(format!("node {}: {BACKEND_DATA}: {e}", n.name)),
                }
            }
            let mut leases = Vec::new();
            for l in &n.pod_cidrs {
                if let Ok(cidr) = l.parse::<Cidr>() {
                    c.leases.insert(cidr, c.nodes.len());
                    leases.push(cidr);
                }
            }
            c.nodes.push(FlannelNode {
                name: n.name.clone(),
                ips,
                backend: a.annotation(BACKEND_TYPE).unwrap_or("").to_string(),
                vni,
                vxlan_device: vni.map(|v| format!("flannel.{v}")),
                vtep_mac,
                leases,
            });
        }
        c.index = index;
        (c, warnings)
    }

    /// Every address that replaces a client's source: node IPs, and each lease's `.0`
    /// (flannel.1) and `.1` (cni0) unless a pod really has it.
    pub fn nat_sources(&self) -> Vec<Ip> {
        let mut out = Vec::new();
        for n in &self.nodes {
            out.extend(n.ips.iter().copied());
            for l in &n.leases {
                for k in 0..2 {
                    let ip = l.network().offset(k);
                    if !self.index.is_pod_ip(ip) {
                        out.push(ip);
                    }
                }
            }
        }
        out
    }

    pub fn node_named(&self, name: &str) -> Option<&FlannelNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn node_by_ip(&self, ip: Ip) -> Option<usize> {
        self.nodes.iter().position(|n| n.ips.contains(&ip))
    }

    pub fn node_by_vtep_mac(&self, mac: u64) -> Option<usize> {
        self.nodes.iter().position(|n| n.vtep_mac == Some(Mac(mac)))
    }

    pub fn lease_node(&self, ip: Ip) -> Option<usize> {
        self.leases.get(ip).copied()
    }

    /// What `ip` is, from flannel's point of view, for deciding a connection's ends (services
    /// are the SDK's, [`Connection::decide`]): a node's IP (the node itself, a hostNetwork pod, or a MASQUERADEd source);
    /// a pod inside a lease; or a lease's `.0` (flannel.1) / `.1` (cni0), the node's gateway,
    /// which may hide a pod whose own view was never seen (`gateway-unresolved`).
    pub fn class(&self, ip: Ip) -> Class<'_> {
        if let Some(n) = self.node_by_ip(ip) {
            return Class::node(&self.nodes[n].name);
        }
        if let Some((cidr, &n)) = self.leases.lookup(ip) {
            // Unless the inventory says a pod really has it, as with a /32 lease.
            let off = ip.bits().wrapping_sub(cidr.network().bits());
            if off <= 1 && !self.index.is_pod_ip(ip) {
                return Class::Node {
                    name: &self.nodes[n].name,
                    note: Some("gateway-unresolved"),
                    confidence: 0.7,
                };
            }
            return Class::POD;
        }
        if self.index.is_pod_ip(ip) {
            return Class::POD;
        }
        match self.network {
            // Inside the cluster network but in no lease.
            Some(net) if net.contains(ip) => Class::Unknown,
            _ => Class::External,
        }
    }
}
