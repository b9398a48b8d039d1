//! What Cilium tells about the cluster (docs/cni-rules.md, "Cilium"): each node's addresses,
//! its router address (`cilium_host`), health endpoint and pod CIDRs from its `CiliumNode`
//! (node annotations only as a fallback, as older Cilium wrote them); each pod's addresses and
//! security identity from its `CiliumEndpoint`; each identity's namespace from its
//! `CiliumIdentity`.

use crate::identity::{self, Reserved};
use cniscope_sdk::NodeInfo;
use cniscope_sdk::hash::FastMap;
use cniscope_sdk::inventory::objects_of;
use cniscope_sdk::prelude::*;

/// Node annotations Cilium writes (`network.cilium.io/...`; before 1.13, `io.cilium.network.*`).
pub const POD_CIDR: [&str; 2] = [
    "network.cilium.io/ipv4-pod-cidr",
    "io.cilium.network.ipv4-pod-cidr",
];
pub const CILIUM_HOST: [&str; 2] = [
    "network.cilium.io/ipv4-cilium-host",
    "io.cilium.network.ipv4-cilium-host",
];
pub const HEALTH_IP: [&str; 2] = [
    "network.cilium.io/ipv4-health-ip",
    "io.cilium.network.ipv4-health-ip",
];
/// The security label that names an identity's namespace.
const NAMESPACE_LABEL: &str = "k8s:io.kubernetes.pod.namespace";

/// Which of a node's addresses an address is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeAddr {
    /// InternalIP / ExternalIP: the node's own.
    Own,
    /// `cilium_host`'s address (CiliumInternalIP): the router, and the node's source toward
    /// pods and tunnels.
    Router,
    /// The cilium-health endpoint.
    Health,
}

#[derive(Clone, Debug, Default)]
pub struct CiliumNode {
    pub name: String,
    pub pod_cidrs: Vec<Cidr>,
}

/// A pod as its CiliumEndpoint says: "namespace/name" and its identity.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub name: String,
    pub identity: u32,
}

/// The options' part of what the plugin knows.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// The cluster's pod CIDRs (cluster-pool-ipv4-cidr, ipv4-native-routing-cidr): inside
    /// them and owned by nothing known is "unknown", outside them "external".
    pub cluster_cidrs: Vec<Cidr>,
}

#[derive(Default, Debug)]
pub struct Cluster {
    pub nodes: Vec<CiliumNode>,
    addrs: FastMap<Ip, (usize, NodeAddr)>,
    pod_cidrs: CidrSet<usize>,
    /// CiliumEndpoints by address (several when an address was reused and an old endpoint
    /// lingers).
    endpoints: FastMap<Ip, Vec<Endpoint>>,
    /// Identity -> namespace, from CiliumIdentity objects and CiliumEndpoints.
    identities: FastMap<u32, String>,
    /// "namespace/name" of every pod at an address more than one pod of the inventory claims.
    shared: FastMap<Ip, Vec<String>>,
    settings: Settings,
    pub index: InventoryIndex,
}

fn first_annotation<'a>(n: &'a NodeInfo, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| n.annotations.annotation(k))
}

impl Cluster {
    /// Reads the inventory and Cilium's objects; what cannot be read is a warning naming the
    /// object and field, and the rest is used.
    pub fn new(mut inv: Inventory, settings: Settings) -> (Cluster, Vec<String>) {
        let objects = std::mem::take(&mut inv.objects);
        let (index, mut warnings) = InventoryIndex::new(inv);
        let mut c = Cluster {
            settings,
            ..Cluster::default()
        };
        let mut node_of: FastMap<String, usize> = FastMap::default();
        for n in index.nodes() {
            node_of.insert(n.name.clone(), c.nodes.len());
            for ip in &n.addresses {
                c.addrs.insert(*ip, (c.nodes.len(), NodeAddr::Own));
            }
            c.nodes.push(CiliumNode {
                name: n.name.clone(),
                ..CiliumNode::default()
            });
        }
        c.read_cilium_nodes(&objects, &mut node_of, &mut warnings);
        // Node annotations and spec.podCIDR: only for what no CiliumNode said.
        for n in index.nodes() {
            let i = node_of[&n.name];
            let mut add =
                |c: &mut Cluster, ip: &str, kind: NodeAddr, key: &str| match ip.parse::<Ip>() {
                    Ok(ip) => {
                        c.addrs.entry(ip).or_insert((i, kind));
                    }
                    Err(e) => warnings.push(format!("node {}: {key}: {ip:?}: {e}", n.name)),
                };
            if let Some(ip) = first_annotation(n, &CILIUM_HOST) {
                add(&mut c, ip, NodeAddr::Router, CILIUM_HOST[0]);
            }
            if let Some(ip) = first_annotation(n, &HEALTH_IP) {
                add(&mut c, ip, NodeAddr::Health, HEALTH_IP[0]);
            }
            if c.nodes[i].pod_cidrs.is_empty() {
                let annotated = first_annotation(n, &POD_CIDR).map(str::to_string);
                for text in annotated.iter().chain(n.pod_cidrs.iter()) {
                    match text.parse::<Cidr>() {
                        Ok(cidr) if !c.nodes[i].pod_cidrs.contains(&cidr) => {
                            c.nodes[i].pod_cidrs.push(cidr)
                        }
                        Ok(_) => {}
                        Err(e) => warnings.push(format!("node {}: pod CIDR {text:?}: {e}", n.name)),
                    }
                }
            }
        }
        for (i, n) in c.nodes.iter().enumerate() {
            for cidr in &n.pod_cidrs {
                c.pod_cidrs.insert(*cidr, i);
            }
        }
        c.read_endpoints(&objects, &mut warnings);
        let mut unnumbered = Vec::new();
        for (name, v) in objects_of(&objects, "CiliumIdentity", &mut warnings) {
            let Ok(id) = name.parse::<u32>() else {
                unnumbered.push(format!(
                    "CiliumIdentity {name}: the name is no identity number"
                ));
                continue;
            };
            if let Some(ns) = v["security-labels"][NAMESPACE_LABEL].as_str() {
                c.identities.insert(id, ns.to_string());
            }
        }
        warnings.extend(unnumbered);
        let mut claims: FastMap<Ip, Vec<String>> = FastMap::default();
        for p in index.pods().iter() {
            for ip in p.ips {
                claims
                    .entry(*ip)
                    .or_default()
                    .push(format!("{}/{}", p.namespace, p.name));
            }
        }
        claims.retain(|_, names| names.len() > 1);
        c.shared = claims;
        c.index = index;
        (c, warnings)
    }

    /// CiliumNode (cilium.io/v2): `spec.addresses[]` (`type` InternalIP, ExternalIP or
    /// CiliumInternalIP, `ip`), `spec.health.ipv4`, `spec.ipam.podCIDRs`.
    fn read_cilium_nodes(
        &mut self,
        objects: &[CniObject],
        node_of: &mut FastMap<String, usize>,
        warnings: &mut Vec<String>,
    ) {
        let mut bad = Vec::new();
        for (name, v) in objects_of(objects, "CiliumNode", warnings) {
            let i = *node_of.entry(name.clone()).or_insert_with(|| {
                self.nodes.push(CiliumNode {
                    name: name.clone(),
                    ..CiliumNode::default()
                });
                self.nodes.len() - 1
            });
            let mut addr = |ip: &str, kind: NodeAddr, field: &str| match ip.parse::<Ip>() {
                Ok(ip) => {
                    self.addrs.insert(ip, (i, kind));
                }
                Err(e) => bad.push(format!("CiliumNode {name}: {field}: {ip:?}: {e}")),
            };
            for a in v["spec"]["addresses"].as_array().into_iter().flatten() {
                let Some(ip) = a["ip"].as_str() else { continue };
                if ip.contains(':') {
                    continue; // IPv6: not decoded yet
                }
                let kind = match a["type"].as_str() {
                    Some("CiliumInternalIP") => NodeAddr::Router,
                    _ => NodeAddr::Own,
                };
                addr(ip, kind, "spec.addresses");
            }
            if let Some(ip) = v["spec"]["health"]["ipv4"].as_str() {
                addr(ip, NodeAddr::Health, "spec.health.ipv4");
            }
            for cidr in v["spec"]["ipam"]["podCIDRs"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let Some(text) = cidr.as_str() else { continue };
                if text.contains(':') {
                    continue;
                }
                match text.parse::<Cidr>() {
                    Ok(cidr) if !self.nodes[i].pod_cidrs.contains(&cidr) => {
                        self.nodes[i].pod_cidrs.push(cidr)
                    }
                    Ok(_) => {}
                    Err(e) => bad.push(format!(
                        "CiliumNode {name}: spec.ipam.podCIDRs: {text:?}: {e}"
                    )),
                }
            }
        }
        warnings.extend(bad);
    }

    /// CiliumEndpoint (cilium.io/v2, named and namespaced as its pod):
    /// `status.identity.id`, `status.networking.addressing[].ipv4`.
    fn read_endpoints(&mut self, objects: &[CniObject], warnings: &mut Vec<String>) {
        let mut bad = Vec::new();
        for (name, v) in objects_of(objects, "CiliumEndpoint", warnings) {
            let status = &v["status"];
            let Some(identity) = status["identity"]["id"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
            else {
                bad.push(format!(
                    "CiliumEndpoint {name}: status.identity.id missing or not a number"
                ));
                continue;
            };
            if let Some((ns, _)) = name.split_once('/') {
                self.identities
                    .entry(identity)
                    .or_insert_with(|| ns.to_string());
            }
            for a in status["networking"]["addressing"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let Some(text) = a["ipv4"].as_str() else {
                    continue;
                };
                match text.parse::<Ip>() {
                    Ok(ip) => {
                        let at = self.endpoints.entry(ip).or_default();
                        if !at.iter().any(|e| e.name == name) {
                            at.push(Endpoint {
                                name: name.clone(),
                                identity,
                            });
                        }
                    }
                    Err(e) => bad.push(format!(
                        "CiliumEndpoint {name}: status.networking.addressing: {text:?}: {e}"
                    )),
                }
            }
        }
        warnings.extend(bad);
    }

    /// Every address that replaces a client's source: node addresses and routers
    /// (`cilium_host`), for the stitcher's time fallback.
    pub fn nat_sources(&self) -> Vec<Ip> {
        self.addrs
            .iter()
            .filter(|(_, (_, kind))| *kind != NodeAddr::Health)
            .map(|(ip, _)| *ip)
            .collect()
    }

    pub fn node_addr(&self, ip: Ip) -> Option<(&str, NodeAddr)> {
        self.addrs
            .get(&ip)
            .map(|&(i, kind)| (self.nodes[i].name.as_str(), kind))
    }

    /// Both ends of the view's tunnel are nodes (or no node is known to tell).
    pub fn between_nodes(&self, m: &Seen) -> bool {
        self.addrs.is_empty()
            || (self.node_addr(m.outer_src).is_some() && self.node_addr(m.outer_dst).is_some())
    }

    pub fn in_pod_cidr(&self, ip: Ip) -> bool {
        self.pod_cidrs.get(ip).is_some()
    }

    /// Whether `id` is an identity this cluster knows (an object names it, or an endpoint has it).
    pub fn knows_identity(&self, id: u32) -> bool {
        self.identities.contains_key(&id)
    }

    /// What `ip` is, from Cilium's point of view, given the identity a tunnel header gave its
    /// sender (`identity`, with the tunnel's outer source) when one did. Services are the SDK's.
    pub fn class(&self, ip: Ip, identity: Option<(u32, Ip)>) -> Class<'_> {
        if let Some((node, kind)) = self.node_addr(ip) {
            let note = match kind {
                NodeAddr::Own => None,
                NodeAddr::Router => Some("cilium:cilium-host"),
                NodeAddr::Health => Some("cilium:health"),
            };
            return Class::Node {
                name: node,
                note,
                confidence: 1.0,
            };
        }
        let reserved = identity.and_then(|(id, _)| identity::reserved(id));
        match reserved {
            // A node's traffic from an address nothing else names: the sending node.
            Some(Reserved::Node) if !self.endpoints.contains_key(&ip) => {
                if let Some((node, _)) = identity.and_then(|(_, outer)| self.node_addr(outer)) {
                    return Class::Node {
                        name: node,
                        note: Some(identity::evidence(Reserved::Node)),
                        confidence: 1.0,
                    };
                }
            }
            Some(Reserved::World) if !self.index.is_pod_ip(ip) => return Class::External,
            _ => {}
        }
        if let Some(c) = self.pod_by_identity(ip, identity.map(|(id, _)| id)) {
            return c;
        }
        if self.index.is_pod_ip(ip) || self.in_pod_cidr(ip) {
            return Class::POD;
        }
        if self.settings.cluster_cidrs.iter().any(|c| c.contains(ip)) {
            return Class::Unknown;
        }
        Class::External
    }

    /// The pod at `ip` as its endpoint and identity name it: the one endpoint at `ip` with the
    /// sender's identity; else the one pod at `ip` in the identity's namespace (an address
    /// reused across namespaces); an address whose endpoints all carry another identity is a
    /// mismatch (stale objects, or a spoofed source). Without an identity, an address several
    /// pods claim is named when exactly one CiliumEndpoint holds it (the live one).
    fn pod_by_identity(&self, ip: Ip, identity: Option<u32>) -> Option<Class<'_>> {
        let at = self.endpoints.get(&ip).map_or(&[][..], Vec::as_slice);
        let Some(id) = identity.filter(|id| identity::is_workload(*id)) else {
            return match at {
                [only] if self.shared.contains_key(&ip) => Some(Class::Pod {
                    name: &only.name,
                    note: Some("cilium:endpoint"),
                }),
                _ => None,
            };
        };
        let mut with = at.iter().filter(|e| e.identity == id);
        match (with.next(), with.next()) {
            (Some(e), None) => {
                return Some(Class::Pod {
                    name: &e.name,
                    note: Some("cilium:identity"),
                });
            }
            (Some(_), Some(_)) => return Some(Class::POD),
            (None, _) => {}
        }
        // The pods at `ip` without an endpoint (not written yet, or gone), in the identity's
        // namespace.
        if let Some(ns) = self.identities.get(&id) {
            let mut in_ns = self
                .shared
                .get(&ip)
                .into_iter()
                .flatten()
                .filter(|n| n.split_once('/').is_some_and(|(pns, _)| pns == ns))
                // A pod whose own endpoint says another identity is not it.
                .filter(|n| !at.iter().any(|e| e.name == **n));
            if let (Some(name), None) = (in_ns.next(), in_ns.next()) {
                return Some(Class::Pod {
                    name,
                    note: Some("cilium:identity"),
                });
            }
        }
        (!at.is_empty()).then_some(Class::Pod {
            name: "",
            note: Some("cilium:identity-mismatch"),
        })
    }
}
