//! What OVN-Kubernetes (and OpenShift-SDN) tell about the cluster (docs/cni-rules.md,
//! "OVN-Kubernetes"): each node's subnets, addresses, gateway-router (join) and transit-switch
//! addresses from the `k8s.ovn.org/*` annotations; the addresses OVN puts on packets that are
//! no pod (the management port `.2`, the router port `.1`, the masquerade subnet, hairpin
//! SNAT); pods by logical port keys; OpenShift-SDN's NETID per namespace.

use crate::southbound::PortKeys;
use cniscope_sdk::hash::FastMap;
use cniscope_sdk::json::{self, Value};
use cniscope_sdk::prelude::*;

pub const NODE_SUBNETS: &str = "k8s.ovn.org/node-subnets";
pub const PRIMARY_IFADDR: &str = "k8s.ovn.org/node-primary-ifaddr";
pub const HOST_CIDRS: &str = "k8s.ovn.org/host-cidrs";
pub const GATEWAY_LRP_IFADDR: &str = "k8s.ovn.org/node-gateway-router-lrp-ifaddr";
pub const GATEWAY_LRP_IFADDRS: &str = "k8s.ovn.org/node-gateway-router-lrp-ifaddrs";
pub const TRANSIT_IFADDR: &str = "k8s.ovn.org/node-transit-switch-port-ifaddr";
use cniscope_sdk::inventory::objects_of;

#[derive(Clone, Debug)]
pub struct OvnNode {
    pub name: String,
    /// Status addresses, the primary interface address and the host CIDRs' addresses.
    pub ips: Vec<Ip>,
    /// The node's pod subnets (`node-subnets`, `host_subnets`, else `spec.podCIDRs`).
    pub subnets: Vec<Cidr>,
}

/// What an address stands for, beyond pods and services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The node's own address.
    Own,
    /// `.2` of a node subnet: `ovn-k8s-mp0`, where the node's traffic into the pod network
    /// comes from.
    ManagementPort,
    /// `.1` of a node subnet: the logical router port (OpenShift-SDN: `tun0`).
    RouterPort,
    /// The gateway router's port on the join switch (100.64.0.0/16).
    Join,
    /// The node's port on the interconnect transit switch (100.88.0.0/16).
    Transit,
}

impl Role {
    fn note(self, sdn: bool) -> Option<&'static str> {
        match self {
            Role::Own => None,
            Role::ManagementPort => Some("ovn:management-port"),
            Role::RouterPort if sdn => Some("openshift-sdn:tun0"),
            Role::RouterPort => Some("ovn:router-port"),
            Role::Join => Some("ovn:join-address"),
            Role::Transit => Some("ovn:transit-address"),
        }
    }
}

/// Settings from the plugin's options that shape the cluster view.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// The cluster network(s) (`clusterNetwork`, e.g. 10.128.0.0/14): anything outside, not a
    /// node or service, is external. Empty: the node subnets bound it.
    pub cluster_networks: Vec<Cidr>,
    /// Node subnets given by option (`"CIDR=node"`: OpenShift-SDN's HostSubnets).
    pub host_subnets: Vec<(Cidr, String)>,
    /// The masquerade subnet (169.254.169.0/29): per-node addresses OVN SNATs to.
    pub masquerade_subnet: Option<Cidr>,
    /// The hairpin SNAT address (169.254.169.5): a pod reaching itself through a service.
    pub hairpin_snat: Option<Ip>,
    /// OpenShift-SDN NETIDs (`"1234=namespace"`), from NetNamespace objects.
    pub netids: Vec<(u32, String)>,
    /// OpenShift-SDN's VXLAN port (4789).
    pub sdn_vxlan_port: u16,
    /// Geneve's port (6081).
    pub geneve_port: u16,
    /// Pods by logical port keys, from the southbound database.
    pub port_keys: PortKeys,
}

#[derive(Default, Debug)]
pub struct Cluster {
    pub nodes: Vec<OvnNode>,
    /// Node addresses of every kind, and what they are.
    special: FastMap<Ip, (usize, Role)>,
    subnets: CidrSet<usize>,
    pub settings: Settings,
    /// (NETID, address) -> the one pod of that NETID's namespaces that had the address
    /// (None: more than one). An OpenShift-SDN VXLAN packet's VNI is its project's NETID, so
    /// it tells apart pods of two projects that held one address. NETID 0 is the global
    /// project, which reaches every namespace: no help, not indexed.
    netid_pods: FastMap<(u32, Ip), Option<String>>,
    /// NETIDs are known (OpenShift-SDN): `.1` is then `tun0`.
    sdn: bool,
    pub index: InventoryIndex,
}

fn strip_prefix_len(s: &str) -> &str {
    s.split('/').next().unwrap_or(s)
}

/// `{"default": ["10.128.2.0/23"]}` or `{"default": "10.128.2.0/23"}`: every subnet of every
/// network named.
fn subnets_of(v: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    if let Some(m) = v.as_object() {
        for s in m.values() {
            match s {
                Value::String(s) => out.push(s.as_str()),
                Value::Array(a) => out.extend(a.iter().filter_map(Value::as_str)),
                _ => {}
            }
        }
    }
    out
}

/// `{"ipv4": "100.64.0.2/16", "ipv6": ...}`, possibly one level down per network.
fn ifaddrs_of(v: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    if let Some(m) = v.as_object() {
        for (k, s) in m {
            match s {
                Value::String(s) if k == "ipv4" || k == "ipv6" => out.push(s.as_str()),
                Value::Object(_) => out.extend(ifaddrs_of(s)),
                _ => {}
            }
        }
    }
    out
}

/// OpenShift-SDN's own objects, added to what the options say: a HostSubnet (`host`,
/// `subnet`) is a node's pod subnet, a NetNamespace (`netname`, `netid`) a project's NETID.
fn sdn_objects(objects: &[CniObject], s: &mut Settings, warnings: &mut Vec<String>) {
    let mut bad = Vec::new();
    for (name, v) in objects_of(objects, "HostSubnet", warnings) {
        match (
            v["host"].as_str(),
            v["subnet"].as_str().map(str::parse::<Cidr>),
        ) {
            (Some(host), Some(Ok(cidr))) => {
                if !s.host_subnets.contains(&(cidr, host.to_string())) {
                    s.host_subnets.push((cidr, host.to_string()));
                }
            }
            (_, Some(Err(e))) => bad.push(format!("HostSubnet {name}: subnet: {e}")),
            _ => bad.push(format!("HostSubnet {name}: host or subnet missing")),
        }
    }
    for (name, v) in objects_of(objects, "NetNamespace", warnings) {
        let project = v["netname"].as_str().unwrap_or(&name).to_string();
        match v["netid"].as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(id) => {
                if !s.netids.contains(&(id, project.clone())) {
                    s.netids.push((id, project));
                }
            }
            None => bad.push(format!(
                "NetNamespace {name}: netid missing or not a number"
            )),
        }
    }
    warnings.extend(bad);
}

impl Cluster {
    /// Reads the inventory; unreadable annotations are returned as warnings and the rest used.
    pub fn new(mut inv: Inventory, mut settings: Settings) -> (Cluster, Vec<String>) {
        let objects = std::mem::take(&mut inv.objects);
        let mut warnings = Vec::new();
        sdn_objects(&objects, &mut settings, &mut warnings);
        let (index, index_warnings) = InventoryIndex::new(inv);
        warnings.extend(index_warnings);
        let mut c = Cluster {
            settings,
            ..Cluster::default()
        };
        // NETIDs from the options and the NetNamespace objects.
        let netids = c.settings.netids.clone();
        c.sdn = !netids.is_empty();
        for p in index.pods().iter() {
            for &(netid, ref ns) in &netids {
                if netid == 0 || *ns != p.namespace {
                    continue;
                }
                for ip in p.ips {
                    let name = format!("{}/{}", p.namespace, p.name);
                    c.netid_pods
                        .entry((netid, *ip))
                        .and_modify(|had| {
                            if had.as_deref() != Some(name.as_str()) {
                                *had = None;
                            }
                        })
                        .or_insert(Some(name));
                }
            }
        }
        for (i, n) in index.nodes().iter().enumerate() {
            let a = n.annotations.as_slice();
            let mut node = OvnNode {
                name: n.name.clone(),
                ips: n.addresses.clone(),
                subnets: Vec::new(),
            };
            let parse = |key: &str, warnings: &mut Vec<String>| -> Option<Value> {
                let text = a.annotation(key)?;
                json::from_str(text)
                    .map_err(|e| warnings.push(format!("node {}: {key}: {e}", n.name)))
                    .ok()
            };
            let mut addrs: Vec<(String, Role)> = Vec::new();
            if let Some(v) = parse(PRIMARY_IFADDR, &mut warnings) {
                addrs.extend(
                    ifaddrs_of(&v)
                        .into_iter()
                        .map(|s| (s.to_string(), Role::Own)),
                );
            }
            if let Some(v) = parse(HOST_CIDRS, &mut warnings) {
                let list = v.as_array().into_iter().flatten().filter_map(Value::as_str);
                addrs.extend(list.map(|s| (s.to_string(), Role::Own)));
            }
            for key in [GATEWAY_LRP_IFADDR, GATEWAY_LRP_IFADDRS] {
                if let Some(v) = parse(key, &mut warnings) {
                    addrs.extend(
                        ifaddrs_of(&v)
                            .into_iter()
                            .map(|s| (s.to_string(), Role::Join)),
                    );
                }
            }
            if let Some(v) = parse(TRANSIT_IFADDR, &mut warnings) {
                addrs.extend(
                    ifaddrs_of(&v)
                        .into_iter()
                        .map(|s| (s.to_string(), Role::Transit)),
                );
            }
            for (text, role) in addrs {
                match strip_prefix_len(&text).parse::<Ip>() {
                    Ok(ip) => {
                        if role == Role::Own && !node.ips.contains(&ip) {
                            node.ips.push(ip);
                        }
                        c.special.insert(ip, (i, role));
                    }
                    Err(e) => warnings.push(format!("node {}: address {text:?}: {e}", n.name)),
                }
            }
            let mut subnets: Vec<String> = Vec::new();
            if let Some(v) = parse(NODE_SUBNETS, &mut warnings) {
                subnets.extend(subnets_of(&v).into_iter().map(str::to_string));
            }
            subnets.extend(
                c.settings
                    .host_subnets
                    .iter()
                    .filter(|(_, node)| *node == n.name)
                    .map(|(cidr, _)| cidr.to_string()),
            );
            if subnets.is_empty() {
                subnets = n.pod_cidrs.clone();
            }
            for s in subnets {
                match s.parse::<Cidr>() {
                    Ok(cidr) if !node.subnets.contains(&cidr) => node.subnets.push(cidr),
                    Ok(_) => {}
                    Err(e) => warnings.push(format!("node {}: subnet {s:?}: {e}", n.name)),
                }
            }
            for ip in &node.ips {
                c.special.insert(*ip, (i, Role::Own));
            }
            for cidr in &node.subnets {
                c.subnets.insert(*cidr, i);
                for (k, role) in [(1, Role::RouterPort), (2, Role::ManagementPort)] {
                    let ip = cidr.network().offset(k);
                    if !index.is_pod_ip(ip) {
                        c.special.entry(ip).or_insert((i, role));
                    }
                }
            }
            c.nodes.push(node);
        }
        c.index = index;
        (c, warnings)
    }

    /// Every address that may replace a client's source: node addresses, `.1`/`.2` of node
    /// subnets, join and transit addresses, the masquerade subnet.
    pub fn nat_sources(&self) -> Vec<Ip> {
        let mut out: Vec<Ip> = self.special.keys().copied().collect();
        if let Some(m) = self.settings.masquerade_subnet {
            out.extend((0..8).map(|k| m.network().offset(k)));
        }
        out
    }

    pub fn node_by_ip(&self, ip: Ip) -> Option<usize> {
        match self.special.get(&ip) {
            Some(&(n, Role::Own)) => Some(n),
            _ => None,
        }
    }

    /// The view's tunnel runs between two nodes (or no node is known to tell): OpenShift-SDN's
    /// VXLAN does, a tunnel from a node to something else on the same port (Kata peer-pods' to
    /// a pod VM, VNIs from 555000) is not the CNI's.
    pub fn between_nodes(&self, m: &Seen) -> bool {
        self.nodes.is_empty()
            || (self.node_by_ip(m.outer_src).is_some() && self.node_by_ip(m.outer_dst).is_some())
    }

    /// The pod that a Geneve view's OVN option names on `side`: the ingress logical port for
    /// the source, the egress one for the destination, on the view's datapath (the VNI).
    pub fn pod_by_port_key(&self, m: &Seen, side: Side) -> Option<&str> {
        let option = m.tunnel_option?;
        let port = match side {
            Side::Source => (option >> 16) & 0x7fff,
            Side::Destination => option & 0xffff,
        } as u16;
        self.settings.port_keys.pod(m.vni, port)
    }

    /// What `ip` is in view `m` (taken on node `node`), for deciding a connection's ends
    /// (the SDK finds services): a pod named by an OVN port key or an OpenShift-SDN NETID; a
    /// node address of any kind (management port, router port, join, transit: the node); the
    /// masquerade subnet's addresses (the node that saw them; the hairpin SNAT address hides a
    /// pod reaching itself); a pod by IP or node subnet; in the cluster network but nothing
    /// known (unknown); or external.
    pub fn class<'a>(&'a self, m: &Seen, side: Side, node: &'a str) -> Class<'a> {
        let ip = side.of(m);
        if let Some(name) = self.pod_by_port_key(m, side) {
            return Class::Pod {
                name,
                note: Some("ovn:port-key"),
            };
        }
        if m.tunnel == Tunnel::Vxlan
            && m.outer_dst_port == self.settings.sdn_vxlan_port
            && self.between_nodes(m)
            && let Some(Some(name)) = self.netid_pods.get(&(m.vni, ip))
        {
            return Class::Pod {
                name,
                note: Some("openshift-sdn:netid"),
            };
        }
        if let Some(&(n, role)) = self.special.get(&ip) {
            return Class::Node {
                name: &self.nodes[n].name,
                note: role.note(self.sdn),
                confidence: 1.0,
            };
        }
        if let Some(m) = self.settings.masquerade_subnet
            && m.contains(ip)
        {
            let hairpin = self.settings.hairpin_snat == Some(ip);
            return Class::Node {
                name: node,
                note: Some(if hairpin {
                    "ovn:hairpin-snat"
                } else {
                    "ovn:masquerade-address"
                }),
                confidence: 0.7,
            };
        }
        if self.index.is_pod_ip(ip) || self.subnets.get(ip).is_some() {
            return Class::POD;
        }
        let in_cluster = if self.settings.cluster_networks.is_empty() {
            false
        } else {
            self.settings
                .cluster_networks
                .iter()
                .any(|c| c.contains(ip))
        };
        if in_cluster {
            Class::Unknown
        } else {
            Class::External
        }
    }
}
