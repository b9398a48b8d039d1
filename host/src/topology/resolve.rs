//! Names the endpoints plugins refer to by role and address, with the time-indexed IP history.

use super::{EndpointKind, NodeEntry};
use crate::inventory::Inventory;
use crate::inventory::history::{IpHistory, Owner};
use crate::plugins::bindings::wit;
use crate::plugins::convert::ip_to_std;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

const ROLE_POD: u8 = 0;
const ROLE_NODE: u8 = 1;
const ROLE_SERVICE: u8 = 2;
const ROLE_EXTERNAL: u8 = 3;

pub struct Resolver {
    inv: Inventory,
    history: IpHistory,
    /// "namespace/name" -> index into `inv.pods`, for plugins that name pods.
    pods_by_name: HashMap<String, usize>,
    /// What the inventory leaves ambiguous, in words (addresses two pods held at once).
    pub warnings: Vec<String>,
}

/// Ambiguities said one by one; past this many, counted in one more line.
const MAX_WARNINGS: usize = 20;

impl Resolver {
    pub fn new(inv: Inventory) -> Resolver {
        let history = IpHistory::new(&inv);
        let pods_by_name = inv
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("{}/{}", p.namespace, p.name), i))
            .collect();
        let shared = history.shared_by_pods();
        let mut warnings: Vec<String> = shared
            .iter()
            .take(MAX_WARNINGS)
            .map(|(ip, a, b)| {
                let name = |i: &usize| format!("{}/{}", inv.pods[*i].namespace, inv.pods[*i].name);
                format!(
                    "inventory: pods {} and {} hold {ip} at the same time: its flows go to the later one unless the plugin names the pod",
                    name(a),
                    name(b)
                )
            })
            .collect();
        if shared.len() > MAX_WARNINGS {
            warnings.push(format!(
                "inventory: {} more addresses held by two pods at the same time",
                shared.len() - MAX_WARNINGS
            ));
        }
        for w in &warnings {
            tracing::warn!("{w}");
        }
        Resolver {
            inv,
            history,
            pods_by_name,
            warnings,
        }
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inv
    }

    fn entry(&self, owner: &Owner, ip: Option<IpAddr>) -> NodeEntry {
        let ips: BTreeSet<String> = ip.map(|i| i.to_string()).into_iter().collect();
        match owner {
            Owner::Pod(i) => {
                let p = &self.inv.pods[*i];
                NodeEntry {
                    id: format!("pod/{}/{}", p.namespace, p.name),
                    kind: EndpointKind::Pod,
                    namespace: Some(p.namespace.clone()),
                    name: p.name.clone(),
                    workload: Some(p.workload.clone()).filter(|w| !w.is_empty()),
                    node: Some(p.node.clone()).filter(|n| !n.is_empty()),
                    ips,
                }
            }
            Owner::Node(i) => self.node_entry(&self.inv.nodes[*i].name, ips),
            Owner::Service(i) => {
                let s = &self.inv.services[*i];
                NodeEntry {
                    id: format!("service/{}/{}", s.namespace, s.name),
                    kind: EndpointKind::Service,
                    namespace: Some(s.namespace.clone()),
                    name: s.name.clone(),
                    workload: None,
                    node: None,
                    ips,
                }
            }
        }
    }

    fn node_entry(&self, name: &str, ips: BTreeSet<String>) -> NodeEntry {
        NodeEntry {
            id: format!("node/{name}"),
            kind: EndpointKind::Node,
            namespace: None,
            name: name.to_string(),
            workload: None,
            node: None,
            ips,
        }
    }

    fn by_ip(&self, kind: EndpointKind, ip: IpAddr) -> NodeEntry {
        NodeEntry {
            id: format!("{}/{ip}", kind.as_str()),
            kind,
            namespace: None,
            name: ip.to_string(),
            workload: None,
            node: None,
            ips: [ip.to_string()].into_iter().collect(),
        }
    }

    /// Names an endpoint at time `at_ns`. A plugin's role is a claim about *what kind* of
    /// thing the address is; the inventory decides *which* one it was at that time.
    /// `role` is the WIT role code (0 pod, 1 node, 2 service, 3 external, else unknown).
    pub fn resolve(&self, role: u8, ip: wit::Ip, name: &str, at_ns: u64) -> NodeEntry {
        let ip = (ip.hi != 0 || ip.lo != 0).then(|| ip_to_std(ip));
        // A plugin that knows *which* pod (Calico names pods by their veth) says so as
        // "namespace/name": that beats the IP, which another pod may have had then too.
        if role == ROLE_POD
            && let Some(&i) = self.pods_by_name.get(name)
        {
            return self.entry(&Owner::Pod(i), ip);
        }
        let owner = ip.and_then(|ip| self.history.owner_at(ip, at_ns));
        match role {
            ROLE_NODE if !name.is_empty() => {
                self.node_entry(name, ip.map(|i| i.to_string()).into_iter().collect())
            }
            ROLE_SERVICE if !name.is_empty() => {
                let (ns, name) = name.split_once('/').unwrap_or(("default", name));
                match self
                    .inv
                    .services
                    .iter()
                    .position(|s| s.namespace == ns && s.name == name)
                {
                    Some(i) => self.entry(&Owner::Service(i), ip),
                    None => NodeEntry {
                        id: format!("service/{ns}/{name}"),
                        kind: EndpointKind::Service,
                        namespace: Some(ns.into()),
                        name: name.into(),
                        workload: None,
                        node: None,
                        ips: ip.map(|i| i.to_string()).into_iter().collect(),
                    },
                }
            }
            ROLE_EXTERNAL => match ip {
                Some(ip) => self.by_ip(EndpointKind::External, ip),
                None => self.by_ip(EndpointKind::Unknown, IpAddr::from([0, 0, 0, 0])),
            },
            _ => match (owner, ip) {
                (Some(owner), ip) => self.entry(owner, ip),
                (None, Some(ip)) => self.by_ip(EndpointKind::Unknown, ip),
                (None, None) => self.by_ip(EndpointKind::Unknown, IpAddr::from([0, 0, 0, 0])),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Pod;

    #[test]
    fn a_pod_named_by_the_plugin_beats_the_address_history() {
        let ip: IpAddr = "10.123.10.9".parse().unwrap();
        let pod = |name: &str| Pod {
            namespace: "default".into(),
            name: name.into(),
            ips: vec![ip],
            ..Pod::default()
        };
        let r = Resolver::new(Inventory {
            pods: vec![pod("old-a3"), pod("new-a4")],
            ..Inventory::default()
        });
        let wip = crate::plugins::convert::ip(ip);
        // Both pods held the address with the same times: the history picks one of them ...
        let by_ip = r.resolve(ROLE_POD, wip, "", 5).id;
        assert!(by_ip.starts_with("pod/default/"), "{by_ip}");
        // ... a name says which, either way round, and an unknown name falls back to the IP.
        assert_eq!(
            r.resolve(ROLE_POD, wip, "default/old-a3", 5).id,
            "pod/default/old-a3"
        );
        assert_eq!(
            r.resolve(ROLE_POD, wip, "default/new-a4", 5).id,
            "pod/default/new-a4"
        );
        assert_eq!(r.resolve(ROLE_POD, wip, "default/gone", 5).id, by_ip);
        // The inventory's ambiguity is said.
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("10.123.10.9"), "{:?}", r.warnings);
    }
}
