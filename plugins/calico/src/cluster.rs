//! What Calico tells about the cluster (docs/cni-rules.md, "Calico"): node addresses and tunnel
//! addresses from the `projectcalico.org/*` annotations, IPAM blocks affine to nodes, IP pools,
//! and each pod's host-side veth name.

use crate::iface;
use cniscope_sdk::hash::{FastMap, FastSet};
use cniscope_sdk::inventory::objects_of;
use cniscope_sdk::prelude::*;

pub const IPV4_ADDRESS: &str = "projectcalico.org/IPv4Address";
pub const IPIP_TUNNEL_ADDR: &str = "projectcalico.org/IPv4IPIPTunnelAddr";
pub const VXLAN_TUNNEL_ADDR: &str = "projectcalico.org/IPv4VXLANTunnelAddr";
pub const IPV6_ADDRESS: &str = "projectcalico.org/IPv6Address";
pub const VXLAN_TUNNEL_ADDR_V6: &str = "projectcalico.org/IPv6VXLANTunnelAddr";

#[derive(Clone, Debug)]
pub struct CalicoNode {
    pub name: String,
    /// `IPv4Address` (without its prefix length) and the node's status addresses.
    pub ips: Vec<Ip>,
    /// tunl0 / vxlan.calico addresses: traffic the node itself sends to remote pods has them.
    pub tunnel_ips: Vec<Ip>,
}

/// The pod at the other end of a host-side veth: a few words, since a cluster has hundreds
/// of thousands of pods and the plugin's memory is capped.
#[derive(Clone, Copy, Debug)]
struct VethPod {
    /// Where "namespace/pod" (as endpoints name pods) is in `Cluster::veth_pod_names`.
    name: (u32, u32),
    /// The pod in the inventory's table (its addresses).
    pod: u32,
}

#[derive(Default, Debug)]
pub struct Cluster {
    pub nodes: Vec<CalicoNode>,
    node_by_ip: FastMap<Ip, usize>,
    tunnel_by_ip: FastMap<Ip, usize>,
    /// IPAM blocks (from options, else inferred from pod IPs) -> node.
    blocks: CidrSet<usize>,
    pools: Vec<Cidr>,
    /// Host-side veth (by `iface::veth_key`) -> its pod.
    veths: FastMap<u64, VethPod>,
    veth_pod_names: String,
    pub index: InventoryIndex,
}

/// Settings read from the plugin's options that shape the cluster view.
#[derive(Clone, Debug, Default)]
pub struct Ipam {
    pub pools: Vec<Cidr>,
    /// Explicit block affinities (`cidr=node`), as `calicoctl ipam show --show-blocks` lists.
    pub blocks: Vec<(Cidr, String)>,
    /// IPv4 block size for blocks inferred from pod IPs (IPPool `blockSize`, default 26).
    pub block_size: u8,
}

impl Ipam {
    /// These settings plus Calico's own objects: an IPPool's `spec.cidr` is a pool, an
    /// IPAMBlock's `spec.cidr` is affine to the node its `spec.affinity` names
    /// (`host:<node>`; a block without one, or deleted, is no node's). The options come
    /// first; a broken object is a warning naming it.
    pub fn with_objects(&self, objects: &[CniObject], warnings: &mut Vec<String>) -> Ipam {
        let mut ipam = self.clone();
        let mut bad = Vec::new();
        for (name, v) in objects_of(objects, "IPPool", warnings) {
            match v["spec"]["cidr"].as_str().map(str::parse::<Cidr>) {
                Some(Ok(cidr)) if !ipam.pools.contains(&cidr) => ipam.pools.push(cidr),
                Some(Ok(_)) => {}
                Some(Err(e)) => bad.push(format!("IPPool {name}: spec.cidr: {e}")),
                None => bad.push(format!("IPPool {name}: spec.cidr missing")),
            }
        }
        for (name, v) in objects_of(objects, "IPAMBlock", warnings) {
            let spec = &v["spec"];
            let node = spec["affinity"]
                .as_str()
                .and_then(|a| a.strip_prefix("host:"));
            match (spec["cidr"].as_str().map(str::parse::<Cidr>), node) {
                (_, _) if spec["deleted"].as_bool() == Some(true) => {}
                (Some(Ok(cidr)), Some(node)) => {
                    if !ipam.blocks.iter().any(|(c, _)| *c == cidr) {
                        ipam.blocks.push((cidr, node.to_string()));
                    }
                }
                (Some(Ok(_)), None) => {}
                (Some(Err(e)), _) => bad.push(format!("IPAMBlock {name}: spec.cidr: {e}")),
                (None, _) => bad.push(format!("IPAMBlock {name}: spec.cidr missing")),
            }
        }
        warnings.extend(bad);
        ipam
    }
}

fn strip_prefix_len(s: &str) -> &str {
    s.split('/').next().unwrap_or(s)
}

impl Cluster {
    /// Reads the inventory; unreadable annotations are returned as warnings and the rest used.
    pub fn new(inv: Inventory, ipam: &Ipam) -> (Cluster, Vec<String>) {
        let (index, mut warnings) = InventoryIndex::new(inv);
        let mut c = Cluster {
            pools: ipam.pools.clone(),
            ..Cluster::default()
        };
        for (i, n) in index.nodes().iter().enumerate() {
            let a = n.annotations.as_slice();
            let mut ips: Vec<Ip> = Vec::new();
            let mut tunnel_ips: Vec<Ip> = Vec::new();
            for (key, is_tunnel) in [
                (IPV4_ADDRESS, false),
                (IPV6_ADDRESS, false),
                (IPIP_TUNNEL_ADDR, true),
                (VXLAN_TUNNEL_ADDR, true),
                (VXLAN_TUNNEL_ADDR_V6, true),
            ] {
                let Some(v) = a.annotation(key) else { continue };
                match strip_prefix_len(v).parse::<Ip>() {
                    Ok(ip) if is_tunnel => tunnel_ips.push(ip),
                    Ok(ip) => ips.push(ip),
                    Err(e) => warnings.push(format!("node {}: {key}: {e}", n.name)),
                }
            }
            for ip in &n.addresses {
                if !ips.contains(ip) {
                    ips.push(*ip);
                }
            }
            for ip in &ips {
                c.node_by_ip.insert(*ip, i);
            }
            for ip in &tunnel_ips {
                c.tunnel_by_ip.insert(*ip, i);
            }
            c.nodes.push(CalicoNode {
                name: n.name.clone(),
                ips,
                tunnel_ips,
            });
        }
        let node_named = |name: &str| c.nodes.iter().position(|n| n.name == name);
        let mut blocks = CidrSet::new();
        for (cidr, node) in &ipam.blocks {
            match node_named(node) {
                Some(n) => blocks.insert(*cidr, n),
                None => warnings.push(format!(
                    "block {cidr}: node {node:?} is not in the inventory"
                )),
            }
        }
        // Blocks are affine to nodes: a pod's address names its node's block. Tunnel
        // addresses come out of the node's block too.
        let mut inferred: Vec<(Cidr, usize)> = Vec::new();
        let mut seen: FastSet<Cidr> = FastSet::default();
        for p in index.pods().iter() {
            if p.host_network {
                continue;
            }
            let Some(n) = node_named(p.node) else {
                continue;
            };
            for ip in p.ips {
                // One entry per block, not per pod: the first pod found in a block names it.
                let block = Cidr::new(*ip, ipam.block_size);
                if ip.is_v4() && blocks.get(*ip).is_none() && seen.insert(block) {
                    inferred.push((block, n));
                }
            }
        }
        for (n, node) in c.nodes.iter().enumerate() {
            for ip in &node.tunnel_ips {
                if ip.is_v4() && blocks.get(*ip).is_none() {
                    inferred.push((Cidr::new(*ip, ipam.block_size), n));
                }
            }
        }
        for (cidr, n) in inferred {
            if blocks.get(cidr.network()).is_none() {
                blocks.insert(cidr, n);
            }
        }
        c.blocks = blocks;
        for (i, p) in index.pods().iter().enumerate() {
            if p.host_network {
                continue;
            }
            let Some(key) = iface::veth_key(&iface::veth_name(p.namespace, p.name)) else {
                continue;
            };
            let from = c.veth_pod_names.len() as u32;
            c.veth_pod_names.push_str(p.namespace);
            c.veth_pod_names.push('/');
            c.veth_pod_names.push_str(p.name);
            let name = (from, c.veth_pod_names.len() as u32);
            c.veths.insert(
                key,
                VethPod {
                    name,
                    pod: i as u32,
                },
            );
        }
        c.index = index;
        (c, warnings)
    }

    /// Every address that replaces a client's source: node IPs and tunnel addresses.
    pub fn nat_sources(&self) -> Vec<Ip> {
        self.nodes
            .iter()
            .flat_map(|n| n.ips.iter().chain(&n.tunnel_ips).copied())
            .collect()
    }

    pub fn node_by_ip(&self, ip: Ip) -> Option<usize> {
        self.node_by_ip.get(&ip).copied()
    }

    pub fn block_node(&self, ip: Ip) -> Option<usize> {
        self.blocks.get(ip).copied()
    }

    /// What `ip` is in a view taken on `iface`, for deciding a connection's ends. On a pod's
    /// own `cali` veth, its own address is that pod by name (`calico:veth-name`), whoever had
    /// the address before. Otherwise (the SDK finds services): a tunnel address (tunl0,
    /// vxlan.calico: the node itself reaching remote pods, `calico:tunnel-address`); a node IP
    /// (the node, a hostNetwork pod, or a natOutgoing source); a pod by IP or block; in a pool
    /// but in no block (unknown); or external.
    pub fn class(&self, iface: &str, ip: Ip) -> Class<'_> {
        if let Some(p) = iface::veth_key(iface)
            .and_then(|k| self.veths.get(&k))
            .filter(|p| {
                let pod = self.index.pods().get(p.pod as usize);
                pod.is_some_and(|pod| pod.ips.contains(&ip))
            })
        {
            return Class::Pod {
                name: &self.veth_pod_names[p.name.0 as usize..p.name.1 as usize],
                note: Some("calico:veth-name"),
            };
        }
        if let Some(&n) = self.tunnel_by_ip.get(&ip) {
            return Class::Node {
                name: &self.nodes[n].name,
                note: Some("calico:tunnel-address"),
                confidence: 1.0,
            };
        }
        if let Some(n) = self.node_by_ip(ip) {
            return Class::node(&self.nodes[n].name);
        }
        if self.index.is_pod_ip(ip) || self.block_node(ip).is_some() {
            return Class::POD;
        }
        if self.pools.iter().any(|p| p.contains(ip)) {
            return Class::Unknown;
        }
        Class::External
    }
}
