//! Names the endpoints plugins refer to by role and address, with the time-indexed IP history.

use super::{EndpointKind, NodeEntry};
use crate::inventory::Inventory;
use crate::inventory::history::{IpHistory, Owner};
use crate::plugins::bindings::wit;
use crate::plugins::convert::ip_to_std;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

const ROLE_POD: u8 = 0;
const ROLE_NODE: u8 = 1;
const ROLE_SERVICE: u8 = 2;
const ROLE_EXTERNAL: u8 = 3;

pub struct Resolver {
    inv: Inventory,
    history: IpHistory,
    /// "namespace/name" -> index into `inv.pods`, for plugins that name pods.
    pods_by_name: HashMap<String, usize>,
    /// namespace -> name -> index into `inv.services` (the first of a name), for plugins
    /// that name services.
    services_by_name: HashMap<String, HashMap<String, usize>>,
    generation: u64,
    /// What the inventory leaves ambiguous, in words (addresses two pods held at once).
    pub warnings: Vec<String>,
}

/// Numbers each resolver made in this process.
static GENERATIONS: AtomicU64 = AtomicU64::new(0);

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
        let mut services_by_name: HashMap<String, HashMap<String, usize>> = HashMap::new();
        for (i, s) in inv.services.iter().enumerate() {
            services_by_name
                .entry(s.namespace.clone())
                .or_default()
                .entry(s.name.clone())
                .or_insert(i);
        }
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
            services_by_name,
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            warnings,
        }
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inv
    }

    /// The endpoint `named` stands for, with no address yet.
    pub fn entry(&self, named: Named<'_>) -> NodeEntry {
        let bare = |kind: EndpointKind, namespace: Option<&str>, name: &str| NodeEntry {
            id: match namespace {
                Some(ns) => format!("{}/{ns}/{name}", kind.as_str()),
                None => format!("{}/{name}", kind.as_str()),
            },
            kind,
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
            workload: None,
            node: None,
            ips: BTreeSet::new(),
        };
        match named {
            Named::Pod(i) => {
                let p = &self.inv.pods[i];
                NodeEntry {
                    workload: Some(p.workload.clone()).filter(|w| !w.is_empty()),
                    node: Some(p.node.clone()).filter(|n| !n.is_empty()),
                    ..bare(EndpointKind::Pod, Some(&p.namespace), &p.name)
                }
            }
            Named::Service(i) => {
                let s = &self.inv.services[i];
                bare(EndpointKind::Service, Some(&s.namespace), &s.name)
            }
            Named::OtherService(ns, name) => bare(EndpointKind::Service, Some(ns), name),
            Named::InventoryNode(i) => bare(EndpointKind::Node, None, &self.inv.nodes[i].name),
            Named::Node(name) => bare(EndpointKind::Node, None, name),
            Named::External(ip) => bare(EndpointKind::External, None, &ip.to_string()),
            Named::Unknown(ip) => bare(EndpointKind::Unknown, None, &ip.to_string()),
        }
    }

    /// The entry [`Resolver::name`] and [`Resolver::entry`] make, with its address (tests).
    #[cfg(test)]
    pub fn resolve(&self, role: u8, ip: wit::Ip, name: &str, at_ns: u64) -> NodeEntry {
        let found = self.name(role, ip, name, at_ns);
        let mut entry = self.entry(found.named);
        entry.ips.extend(found.ip.map(|ip| ip.to_string()));
        entry
    }

    /// Names an endpoint at time `at_ns`, before any string is made (the topology turns a
    /// name into an entry once per endpoint, not once per flow). A plugin's role is a claim
    /// about *what kind* of thing the address is; the inventory decides *which* one it was at
    /// that time. `role` is the WIT role code (0 pod, 1 node, 2 service, 3 external, else
    /// unknown).
    pub fn name<'a>(&self, role: u8, ip: wit::Ip, name: &'a str, at_ns: u64) -> Resolved<'a> {
        let ip = (ip.hi != 0 || ip.lo != 0).then(|| ip_to_std(ip));
        let found = |named| Resolved { named, ip };
        // A plugin that knows *which* pod (Calico names pods by their veth) says so as
        // "namespace/name": that beats the IP, which another pod may have had then too.
        if role == ROLE_POD
            && let Some(&i) = self.pods_by_name.get(name)
        {
            return found(Named::Pod(i));
        }
        let nowhere = IpAddr::from([0, 0, 0, 0]);
        // External and unknown endpoints are their address (0.0.0.0 when there is none).
        let by_ip = |named: fn(IpAddr) -> Named<'a>| Resolved {
            named: named(ip.unwrap_or(nowhere)),
            ip: Some(ip.unwrap_or(nowhere)),
        };
        match role {
            ROLE_NODE if !name.is_empty() => found(Named::Node(name)),
            ROLE_SERVICE if !name.is_empty() => {
                let (ns, name) = name.split_once('/').unwrap_or(("default", name));
                match self
                    .services_by_name
                    .get(ns)
                    .and_then(|names| names.get(name))
                {
                    Some(&i) => found(Named::Service(i)),
                    None => found(Named::OtherService(ns, name)),
                }
            }
            ROLE_EXTERNAL if ip.is_some() => by_ip(Named::External),
            ROLE_EXTERNAL => by_ip(Named::Unknown),
            _ => match ip.and_then(|ip| self.history.owner_at(ip, at_ns)) {
                Some(Owner::Pod(i)) => found(Named::Pod(*i)),
                Some(Owner::Service(i)) => found(Named::Service(*i)),
                Some(Owner::Node(i)) => found(Named::InventoryNode(*i)),
                None => by_ip(Named::Unknown),
            },
        }
    }

    /// Which resolver this is: a topology's cache of named endpoints holds for one only
    /// (a new inventory renumbers pods and services).
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// What an endpoint is, cheaply: indexes into the inventory, or what the plugin said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Named<'a> {
    Pod(usize),
    Service(usize),
    /// A service the plugin named that the inventory does not hold: namespace, name.
    OtherService(&'a str, &'a str),
    InventoryNode(usize),
    /// A node the plugin named.
    Node(&'a str),
    External(IpAddr),
    Unknown(IpAddr),
}

/// An endpoint named at a time, and the address it was seen with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved<'a> {
    pub named: Named<'a>,
    pub ip: Option<IpAddr>,
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
