//! Which Kubernetes service an address and port belong to, the same for every CNI
//! (docs/cni-rules.md, "Services"). kube-proxy answers on four kinds of front doors:
//!
//! - a ClusterIP (iptables or IPVS mode alike) on a service port;
//! - an external IP or a load-balancer ingress IP on a service port;
//! - any node address on a NodePort (kube-proxy matches `--dst-type LOCAL`, so a node's
//!   gateway and tunnel addresses answer too: the caller says which addresses are a node);
//! - no door at all for a headless service: clients reach the pods directly, and only the
//!   EndpointSlices say which service those pod addresses and ports stand for.
//!
//! Services are told apart by their door (ClusterIPs are unique, NodePorts are unique per
//! protocol), never by the pods they select: two services in front of the same pods stay two.

use crate::Ip;
use crate::hash::FastMap;
use crate::{EndpointSliceInfo, ServiceInfo};

/// How a connection reached its service: the evidence label it adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// A ClusterIP.
    ClusterIp,
    /// An external IP or a load-balancer ingress IP.
    ExternalIp,
    /// A node address on a NodePort.
    NodePort,
    /// A pod address and port listed in a headless service's EndpointSlices.
    Headless,
}

impl Door {
    /// The evidence label for this way in ("service:dnat" is added when a backend was seen).
    pub fn label(self) -> Option<&'static str> {
        match self {
            Door::ClusterIp => None,
            Door::ExternalIp => Some("service:external-ip"),
            Door::NodePort => Some("service:nodeport"),
            Door::Headless => Some("service:headless"),
        }
    }
}

/// (address, IP protocol, port).
type Socket = (Ip, u8, u16);

/// Services indexed by their front doors. Built by [`crate::inventory::InventoryIndex`].
#[derive(Clone, Debug, Default)]
pub struct Services {
    /// "namespace/name" of each service, by its index in the inventory.
    names: Vec<String>,
    /// ClusterIPs, external and load-balancer IPs with each service port, and the door.
    by_socket: FastMap<Socket, (u32, Door)>,
    /// Those addresses alone: a service address on a port the spec does not list (ICMP, a
    /// port added since the snapshot) is still that service.
    by_ip: FastMap<Ip, (u32, Door)>,
    /// NodePorts by (protocol, port).
    by_node_port: FastMap<(u8, u16), u32>,
    /// Headless services' endpoint sockets; more than one service may list the same one.
    headless: FastMap<Socket, Vec<u32>>,
    /// Every other service's endpoint sockets (its EndpointSlices' addresses and ports), for
    /// CNIs that translate a service address at the socket (Cilium's socket LB), so no packet
    /// carries it: see [`Services::behind_backend`].
    backends: FastMap<Socket, Vec<u32>>,
    /// Each service's first ClusterIP (`Ip::NONE` for none), by its index.
    first_ip: Vec<Ip>,
}

impl Services {
    pub fn new(services: &[ServiceInfo], slices: &[EndpointSliceInfo]) -> Services {
        let mut s = Services::default();
        let mut by_name: FastMap<(&str, &str), u32> = FastMap::default();
        for (i, svc) in services.iter().enumerate() {
            let i = i as u32;
            s.names.push(format!("{}/{}", svc.namespace, svc.name));
            s.first_ip
                .push(svc.cluster_ips.first().copied().unwrap_or(Ip::NONE));
            by_name.insert((svc.namespace.as_str(), svc.name.as_str()), i);
            let doors = svc
                .cluster_ips
                .iter()
                .map(|ip| (*ip, Door::ClusterIp))
                .chain(svc.external_ips.iter().map(|ip| (*ip, Door::ExternalIp)));
            for (ip, door) in doors {
                s.by_ip.insert(ip, (i, door));
                for p in &svc.ports {
                    s.by_socket.insert((ip, p.protocol, p.port), (i, door));
                }
            }
            for p in svc.ports.iter().filter(|p| p.node_port != 0) {
                s.by_node_port.insert((p.protocol, p.node_port), i);
            }
        }
        let headless =
            |svc: &ServiceInfo| svc.cluster_ips.is_empty() && svc.type_ != "ExternalName";
        for slice in slices {
            let Some(&i) = by_name.get(&(slice.namespace.as_str(), slice.service.as_str())) else {
                continue;
            };
            let svc = &services[i as usize];
            let index = if headless(svc) {
                &mut s.headless
            } else if svc.type_ != "ExternalName" {
                &mut s.backends
            } else {
                continue;
            };
            for ip in &slice.addresses {
                for p in &slice.ports {
                    let owners = index.entry((*ip, p.protocol, p.port)).or_default();
                    if !owners.contains(&i) {
                        owners.push(i);
                    }
                }
            }
        }
        s
    }

    fn name(&self, i: u32) -> &str {
        &self.names[i as usize]
    }

    pub fn is_service_ip(&self, ip: Ip) -> bool {
        self.by_ip.contains_key(&ip)
    }

    /// Every ClusterIP, external IP and load-balancer IP.
    pub fn front_ips(&self) -> impl Iterator<Item = Ip> + '_ {
        self.by_ip.keys().copied()
    }

    /// The service whose ClusterIP, external IP or load-balancer IP is `ip`, as
    /// ("namespace/name", door); `port` only matters for telling its ports apart.
    pub fn at_address(&self, ip: Ip, protocol: u8, port: u16) -> Option<(&str, Door)> {
        // Most addresses are no service: one lookup says so. An external IP can front several
        // services on different ports: the port then says which.
        let any = self.by_ip.get(&ip)?;
        let &(i, door) = self.by_socket.get(&(ip, protocol, port)).unwrap_or(any);
        Some((self.name(i), door))
    }

    /// The service with NodePort `port` for `protocol`; ask only for addresses that are a
    /// node's.
    pub fn at_node_port(&self, protocol: u8, port: u16) -> Option<&str> {
        self.by_node_port
            .get(&(protocol, port))
            .map(|&i| self.name(i))
    }

    /// The headless service whose EndpointSlices list this pod address and port, when exactly
    /// one does (two headless services over the same pods and port cannot be told apart from
    /// packets: neither is named).
    pub fn headless_for(&self, ip: Ip, protocol: u8, port: u16) -> Option<&str> {
        match self.headless.get(&(ip, protocol, port))?.as_slice() {
            [only] => Some(self.name(*only)),
            _ => None,
        }
    }

    /// The service (with a ClusterIP) whose EndpointSlices list this backend address and
    /// port, as ("namespace/name", its first ClusterIP), when exactly one does: a CNI that
    /// load-balances at the socket shows the backend only, and two services over the same
    /// backend cannot be told apart.
    pub fn behind_backend(&self, ip: Ip, protocol: u8, port: u16) -> Option<(&str, Ip)> {
        match self.backends.get(&(ip, protocol, port))?.as_slice() {
            [only] => Some((self.name(*only), self.first_ip[*only as usize])),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{endpoint_slice, service};

    fn ip(s: &str) -> Ip {
        s.parse().unwrap()
    }

    #[test]
    fn services_are_told_apart_by_their_doors_not_their_pods() {
        let mut lb = service("shop", "web-lb", "172.20.0.9", 443, 8443, 31443);
        lb.external_ips = vec![ip("198.51.100.7")];
        // Another load balancer sharing that IP on another port (MetalLB's shared IPs).
        let mut lb2 = service("shop", "web-lb-http", "172.20.0.10", 80, 8080, 0);
        lb2.external_ips = vec![ip("198.51.100.7")];
        let s = Services::new(
            &[
                service("shop", "web", "172.20.0.1", 80, 8080, 0),
                service("shop", "web-admin", "172.20.0.2", 80, 8080, 0),
                service("shop", "web-np", "172.20.0.3", 80, 8080, 30999),
                lb,
                lb2,
            ],
            // Both ClusterIP services select the same pod: slices name neither.
            &[
                endpoint_slice("shop", "web", &["10.1.0.5"], 8080),
                endpoint_slice("shop", "web-admin", &["10.1.0.5"], 8080),
            ],
        );
        let at = |a: &str, port| s.at_address(ip(a), 6, port);
        assert_eq!(at("172.20.0.1", 80), Some(("shop/web", Door::ClusterIp)));
        assert_eq!(
            at("172.20.0.2", 80),
            Some(("shop/web-admin", Door::ClusterIp))
        );
        // An unlisted port of a service address is still that service.
        assert_eq!(
            at("172.20.0.2", 81),
            Some(("shop/web-admin", Door::ClusterIp))
        );
        assert_eq!(
            at("198.51.100.7", 443),
            Some(("shop/web-lb", Door::ExternalIp))
        );
        assert_eq!(
            at("198.51.100.7", 80),
            Some(("shop/web-lb-http", Door::ExternalIp))
        );
        assert_eq!(at("10.1.0.5", 8080), None);
        assert_eq!(s.at_node_port(6, 30999), Some("shop/web-np"));
        assert_eq!(s.at_node_port(6, 31443), Some("shop/web-lb"));
        assert_eq!(s.at_node_port(17, 30999), None);
        assert_eq!(s.headless_for(ip("10.1.0.5"), 6, 8080), None);
        // Behind the backend: two services select 10.1.0.5:8080 (web, web-admin): neither.
        assert_eq!(s.behind_backend(ip("10.1.0.5"), 6, 8080), None);
    }

    #[test]
    fn a_backend_names_its_service_only_when_one_service_lists_it() {
        let s = Services::new(
            &[
                service("shop", "web", "172.20.0.1", 80, 8080, 0),
                service("shop", "api", "172.20.0.2", 80, 9090, 0),
                service("shop", "api-too", "172.20.0.3", 80, 9090, 0),
                service("shop", "db", "", 5432, 5432, 0),
            ],
            &[
                endpoint_slice("shop", "web", &["10.1.0.5", "10.1.0.6"], 8080),
                endpoint_slice("shop", "api", &["10.1.0.5"], 9090),
                endpoint_slice("shop", "api-too", &["10.1.0.5"], 9090),
                endpoint_slice("shop", "db", &["10.1.0.7"], 5432),
            ],
        );
        let behind = |a: &str, port| s.behind_backend(ip(a), 6, port);
        assert_eq!(
            behind("10.1.0.6", 8080),
            Some(("shop/web", ip("172.20.0.1")))
        );
        assert_eq!(
            behind("10.1.0.5", 8080),
            Some(("shop/web", ip("172.20.0.1")))
        );
        assert_eq!(behind("10.1.0.5", 9090), None, "two services list it");
        assert_eq!(
            behind("10.1.0.5", 80),
            None,
            "the service port is no backend port"
        );
        assert_eq!(
            s.behind_backend(ip("10.1.0.5"), 17, 8080),
            None,
            "another protocol"
        );
        assert_eq!(
            behind("10.1.0.7", 5432),
            None,
            "headless: no socket translation"
        );
        assert_eq!(s.headless_for(ip("10.1.0.7"), 6, 5432), Some("shop/db"));
    }

    #[test]
    fn a_headless_service_is_named_from_its_slices_only_when_unambiguous() {
        let s = Services::new(
            &[
                service("shop", "db", "", 5432, 5432, 0),
                service("shop", "db-replica", "", 5432, 5432, 0),
                service("shop", "cache", "", 6379, 6379, 0),
            ],
            &[
                endpoint_slice("shop", "db", &["10.1.0.7"], 5432),
                endpoint_slice("shop", "db-replica", &["10.1.0.7"], 5432),
                endpoint_slice("shop", "cache", &["10.1.0.7"], 6379),
                endpoint_slice("shop", "gone", &["10.1.0.8"], 6379),
            ],
        );
        assert_eq!(s.headless_for(ip("10.1.0.7"), 6, 6379), Some("shop/cache"));
        assert_eq!(
            s.headless_for(ip("10.1.0.7"), 6, 5432),
            None,
            "two services"
        );
        assert_eq!(
            s.headless_for(ip("10.1.0.7"), 6, 80),
            None,
            "not a listed port"
        );
        assert_eq!(
            s.headless_for(ip("10.1.0.8"), 6, 6379),
            None,
            "no such service"
        );
        assert!(!s.is_service_ip(ip("10.1.0.7")));
    }
}
