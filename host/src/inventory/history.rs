//! Names endpoints by IP *at a time*: an IP reused by a new pod must not inherit the old
//! pod's edges, so every lookup says when.

use super::Inventory;
use std::collections::HashMap;
use std::net::IpAddr;

/// What an address belonged to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Index into `Inventory::pods`.
    Pod(usize),
    /// Index into `Inventory::nodes`.
    Node(usize),
    /// Index into `Inventory::services`.
    Service(usize),
}

#[derive(Clone, Debug)]
struct Tenure {
    from_ns: u64,
    /// 0 = open-ended.
    until_ns: u64,
    owner: Owner,
}

#[derive(Default, Debug)]
pub struct IpHistory {
    by_ip: HashMap<IpAddr, Vec<Tenure>>,
}

impl IpHistory {
    pub fn new(inv: &Inventory) -> IpHistory {
        let mut h = IpHistory::default();
        for (i, n) in inv.nodes.iter().enumerate() {
            for ip in &n.addresses {
                h.add(*ip, 0, 0, Owner::Node(i));
            }
        }
        for (i, s) in inv.services.iter().enumerate() {
            for ip in s.cluster_ips.iter().chain(&s.external_ips) {
                h.add(*ip, 0, 0, Owner::Service(i));
            }
        }
        for (i, p) in inv.pods.iter().enumerate() {
            // A host-network pod's IP is its node's: the node names that address.
            if p.host_network {
                continue;
            }
            for ip in &p.ips {
                h.add(*ip, p.created_ns, p.deleted_ns, Owner::Pod(i));
            }
        }
        for tenures in h.by_ip.values_mut() {
            tenures.sort_by_key(|t| t.from_ns);
        }
        h
    }

    /// Addresses two pods held at the same time (overlapping tenures), with the two pods: an
    /// inventory that cannot say whose a packet was by its address alone.
    pub fn shared_by_pods(&self) -> Vec<(IpAddr, usize, usize)> {
        let mut out = Vec::new();
        for (ip, tenures) in &self.by_ip {
            let pods: Vec<(&Tenure, usize)> = tenures
                .iter()
                .filter_map(|t| match t.owner {
                    Owner::Pod(i) => Some((t, i)),
                    _ => None,
                })
                .collect();
            // Sorted by start: a tenure overlaps the next when it had not ended by then.
            for pair in pods.windows(2) {
                let ((a, ia), (b, ib)) = (pair[0], pair[1]);
                if a.until_ns == 0 || a.until_ns > b.from_ns {
                    out.push((*ip, ia, ib));
                }
            }
        }
        out.sort();
        out
    }

    fn add(&mut self, ip: IpAddr, from_ns: u64, until_ns: u64, owner: Owner) {
        self.by_ip.entry(ip).or_default().push(Tenure {
            from_ns,
            until_ns,
            owner,
        });
    }

    /// The owner of `ip` at `at_ns`: of the tenures that had begun by then and not ended, the
    /// one that began last. A flow seen while no tenure held the address goes to the next
    /// tenure to begin: an address is reported late, never early (the kubelet writes a pod's
    /// IP into its status after the sandbox is up, and the watch event comes after that), so
    /// the first packets of a new pod can precede its tenure, not follow its end.
    pub fn owner_at(&self, ip: IpAddr, at_ns: u64) -> Option<&Owner> {
        let tenures = self.by_ip.get(&ip)?;
        tenures
            .iter()
            .rev()
            .find(|t| t.from_ns <= at_ns && (t.until_ns == 0 || at_ns < t.until_ns))
            .or_else(|| tenures.iter().find(|t| at_ns < t.from_ns))
            .map(|t| &t.owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Pod;

    #[test]
    fn reused_ip_goes_to_the_pod_that_held_it_then() {
        let ip: IpAddr = "10.244.1.5".parse().unwrap();
        let pod = |name: &str, from, until| Pod {
            namespace: "default".into(),
            name: name.into(),
            ips: vec![ip],
            created_ns: from,
            deleted_ns: until,
            ..Pod::default()
        };
        let inv = Inventory {
            pods: vec![pod("old", 100, 200), pod("new", 250, 0)],
            ..Inventory::default()
        };
        let h = IpHistory::new(&inv);
        assert_eq!(h.owner_at(ip, 150), Some(&Owner::Pod(0)));
        assert_eq!(h.owner_at(ip, 300), Some(&Owner::Pod(1)));
        assert_eq!(h.owner_at(ip, 50), Some(&Owner::Pod(0)));
        // Between the two lives: the new pod's first packets, before its IP was reported.
        assert_eq!(h.owner_at(ip, 220), Some(&Owner::Pod(1)));
        // After the last life ended nobody holds it.
        let ended = Inventory {
            pods: vec![pod("old", 100, 200)],
            ..Inventory::default()
        };
        assert_eq!(IpHistory::new(&ended).owner_at(ip, 220), None);
        // One after the other is no sharing; at the same time it is.
        assert_eq!(h.shared_by_pods(), vec![]);
        let both = Inventory {
            pods: vec![pod("a", 100, 0), pod("b", 150, 0), pod("c", 300, 400)],
            ..Inventory::default()
        };
        assert_eq!(
            IpHistory::new(&both).shared_by_pods(),
            vec![(ip, 0, 1), (ip, 1, 2)]
        );
    }
}
