//! Who a connection's ends are, decided the same way for every CNI (docs/cni-rules.md: the
//! gateway rules of each CNI and "Services"). A plugin says what each address is in each
//! observation ([`Class`]); services are recognised here, from the inventory, for every CNI
//! alike ([`Services`]); [`Connection::decide`] picks the client and the server from every
//! view of the connection:
//!
//! - the **client** is the real source: a pod if any view shows one (only the pod's own veth
//!   still does after SNAT), else a host outside the cluster (a NodePort or load-balancer
//!   client: kube-proxy SNATs it to the node on the way to a remote backend, never the other
//!   way round), else the node whose address stood in for it. A client found behind a node
//!   address is `nat:snat-recovered` (`stitch:time` when only time proximity joined the
//!   views);
//! - the **server** is the post-DNAT destination; a destination that is a service's front door
//!   (ClusterIP, external or load-balancer IP, a node address on a NodePort) names the service
//!   (`service:dnat` when the backend was seen, plus `service:nodeport` /
//!   `service:external-ip` for those doors), and a service with no backend in any view is the
//!   server itself (`no-backend-seen`). A pod reached directly on an address and port of a
//!   headless service's EndpointSlices names that service (`service:headless`). A pod talking
//!   outside through its node's address is `nat:masquerade`.
//!
//! The plugin then adds how the packets travelled and emits with [`Connection::emit`], which
//! counts once and lists every point.

use crate::Ip;
use crate::flow::{EndpointRef, FlowRef, Flows, PathRef, Role};
use crate::inventory::InventoryIndex;
use crate::path::ExpectedPath;
use crate::services::Door;
use crate::stitch::{Connection, Seen};

/// What a plugin says an address is, as seen in one observation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Class<'a> {
    /// A pod. `name` ("namespace/pod") when the plugin knows *which* pod beyond its address
    /// (Calico's veth names), else "". `note` is evidence for how it knew.
    Pod {
        name: &'a str,
        note: Option<&'static str>,
    },
    /// Node `name`: its own address, or one that stands in for it (a gateway, a tunnel
    /// address). As a client it adds `note` and caps confidence at `confidence` (a gateway
    /// may hide a pod whose own view was never seen).
    Node {
        name: &'a str,
        note: Option<&'static str>,
        confidence: f32,
    },
    /// A service's front door ("namespace/name"); [`Connection::decide`] finds these itself.
    Service { name: &'a str, door: Door },
    /// Outside the cluster.
    External,
    /// Inside the cluster network, but nothing known owns it.
    Unknown,
}

impl Class<'_> {
    /// A pod known by its address only.
    pub const POD: Class<'static> = Class::Pod {
        name: "",
        note: None,
    };

    /// The node `name` by one of its own addresses.
    pub fn node(name: &str) -> Class<'_> {
        Class::Node {
            name,
            note: None,
            confidence: 1.0,
        }
    }

    fn is_named_pod(&self) -> bool {
        matches!(self, Class::Pod { name, .. } if !name.is_empty())
    }

    fn is_service(&self) -> bool {
        matches!(self, Class::Service { .. })
    }
}

/// Which address of an observation is being classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl Side {
    pub fn of(self, m: &Seen) -> Ip {
        match self {
            Side::Source => m.src,
            Side::Destination => m.dst,
        }
    }

    /// The port on this side; 0 for ICMP (its type and code are no port).
    pub fn port(self, m: &Seen) -> u16 {
        if m.is_icmp() {
            return 0;
        }
        match self {
            Side::Source => m.src_port,
            Side::Destination => m.dst_port,
        }
    }
}

/// Who, via what, on which port, how sure.
#[derive(Clone, Copy, Debug)]
pub struct Ends<'a> {
    pub client: EndpointRef<'a>,
    pub server: EndpointRef<'a>,
    pub service: Option<EndpointRef<'a>>,
    pub server_port: u16,
    pub confidence: f32,
}

/// [`Connection::decide`]'s answer: the ends and the evidence for them, to which the plugin
/// adds its own before [`Connection::emit`].
#[derive(Clone, Debug)]
pub struct Decision<'a> {
    pub ends: Ends<'a>,
    pub evidence: Vec<&'static str>,
    /// The points the plugin expects the connection to cross on its CNI: with it, the flow
    /// carries a path verdict ([`crate::path`]); None leaves the flow unjudged.
    pub path: Option<ExpectedPath<'a>>,
    /// The senders of the ICMP errors quoting the connection that the plugin says are a
    /// node (a gateway address answering for it): (address, node).
    pub error_senders: Vec<(Ip, &'a str)>,
}

fn endpoint(role: Role, ip: Ip, name: &str) -> EndpointRef<'_> {
    EndpointRef { role, ip, name }
}

impl Connection {
    /// Decides the ends (module docs) from the inventory's services and the plugin's
    /// `classify(member, side)`; None for control traffic ([`Seen::is_link_control`]), which
    /// is no edge.
    pub fn decide<'a>(
        &self,
        inv: &'a InventoryIndex,
        classify: impl Fn(&Seen, Side) -> Class<'a>,
    ) -> Option<Decision<'a>> {
        if self.members.first()?.is_link_control() {
            return None;
        }
        // The client -> server views: the requests, then the replies turned around. A piece
        // of a connection cut by a drain can hold a reply the requests here do not explain
        // (a service door's reply at the client's veth, its requests' views before the cut
        // and its backend's after): every view names the ends, and the same ones.
        let mirrored: Vec<Seen> = self.reverse_members().map(Seen::turned_around).collect();
        let forward: Vec<&Seen> = self.forward_members().chain(&mirrored).collect();
        let first = forward[0];
        // Services first: a ClusterIP is no pod or node whatever the CNI's ranges say; a node
        // address on a NodePort is the service's door.
        let class = |m: &Seen, side: Side| -> Class<'a> {
            let (ip, port) = (side.of(m), side.port(m));
            if let Some((name, door)) = inv.services.at_address(ip, m.protocol, port) {
                return Class::Service { name, door };
            }
            let c = classify(m, side);
            if side == Side::Destination
                && matches!(c, Class::Node { .. })
                && let Some(name) = inv.services.at_node_port(m.protocol, port)
            {
                return Class::Service {
                    name,
                    door: Door::NodePort,
                };
            }
            c
        };
        let mut evidence: Vec<&'static str> = Vec::with_capacity(6);
        let mut confidence = 1.0f32;

        let sources: Vec<(Ip, Class<'a>)> = forward
            .iter()
            .map(|m| (m.src, class(m, Side::Source)))
            .collect();
        let behind_node = sources.iter().any(|(_, c)| matches!(c, Class::Node { .. }));
        let recovered = |evidence: &mut Vec<&'static str>| {
            if behind_node {
                evidence.push("nat:snat-recovered");
            }
        };
        let pick = |want: fn(&Class) -> bool| sources.iter().find(|(_, c)| want(c)).copied();
        let client = match pick(|c| c.is_named_pod())
            .or_else(|| pick(|c| matches!(c, Class::Pod { .. })))
            .or_else(|| pick(|c| *c == Class::External))
            .or_else(|| pick(|c| matches!(c, Class::Node { .. })))
        {
            Some((ip, Class::Pod { name, note })) => {
                evidence.extend(note);
                recovered(&mut evidence);
                endpoint(Role::Pod, ip, name)
            }
            Some((ip, Class::External)) => {
                recovered(&mut evidence);
                endpoint(Role::External, ip, "")
            }
            Some((
                ip,
                Class::Node {
                    name,
                    note,
                    confidence: c,
                },
            )) => {
                evidence.extend(note);
                confidence = confidence.min(c);
                endpoint(Role::Node, ip, name)
            }
            _ => endpoint(Role::Unknown, first.src, ""),
        };

        let dests: Vec<(Ip, u16, u8, Class<'a>)> = forward
            .iter()
            .map(|m| {
                (
                    m.dst,
                    m.server_port(),
                    m.protocol,
                    class(m, Side::Destination),
                )
            })
            .collect();
        let mut service = dests.iter().find_map(|&(_, _, _, c)| match c {
            Class::Service { name, door } => Some((name, door)),
            _ => None,
        });
        let door_ip = dests
            .iter()
            .find(|(_, _, _, c)| c.is_service())
            .map(|&(ip, port, _, _)| (ip, port));
        let backend = dests
            .iter()
            .find(|(_, _, _, c)| c.is_named_pod())
            .or_else(|| dests.iter().find(|(_, _, _, c)| !c.is_service()));
        let (server, server_port) = match backend {
            Some(&(ip, port, protocol, class)) => {
                let server = match class {
                    Class::Pod { name, note } => {
                        evidence.extend(note);
                        if service.is_none()
                            && let Some(name) = inv.services.headless_for(ip, protocol, port)
                        {
                            service = Some((name, Door::Headless));
                        }
                        endpoint(Role::Pod, ip, name)
                    }
                    Class::Node { name, .. } => endpoint(Role::Node, ip, name),
                    Class::External => {
                        if client.role == Role::Pod && behind_node {
                            evidence.push("nat:masquerade");
                        }
                        endpoint(Role::External, ip, "")
                    }
                    Class::Service { .. } | Class::Unknown => endpoint(Role::Unknown, ip, ""),
                };
                if door_ip.is_some() {
                    evidence.push("service:dnat");
                }
                (server, port)
            }
            None => {
                let (ip, port) = door_ip.unwrap_or((first.dst, first.server_port()));
                evidence.push("no-backend-seen");
                (
                    endpoint(Role::Service, ip, service.map_or("", |s| s.0)),
                    port,
                )
            }
        };
        if let Some((_, door)) = service {
            evidence.extend(door.label());
        }
        if self.joined_by_time {
            // No fingerprint matched: the one candidate seen at the same moment.
            evidence.push("stitch:time");
            confidence = confidence.min(0.9);
        }
        let service_ip = door_ip.map_or(Ip::NONE, |(ip, _)| ip);
        Some(Decision {
            ends: Ends {
                client,
                server,
                service: service.map(|(name, _)| endpoint(Role::Service, service_ip, name)),
                server_port,
                confidence,
            },
            evidence,
            path: None,
            error_senders: self
                .icmp_errors
                .iter()
                .filter_map(|e| match classify(e, Side::Source) {
                    Class::Node { name, .. } => Some((e.src, name)),
                    _ => None,
                })
                .collect(),
        })
    }

    /// Emits this connection as one logical flow: counters from one interface
    /// ([`counters`](Self::counters)), every point in `observed_at`, the evidence sorted and
    /// without repeats. The protocol is the first member's.
    pub fn emit(&self, out: &mut Flows, decision: Decision<'_>) {
        self.emit_with_points(out, decision, &[]);
    }

    /// [`emit`](Self::emit), listing `more` beside the capture points in `observed_at`: places
    /// the packets went that no probe watches (Kata peer-pods' pod VM at a tunnel's far end).
    pub fn emit_with_points(&self, out: &mut Flows, decision: Decision<'_>, more: &[&str]) {
        let Decision {
            ends,
            mut evidence,
            path,
            error_senders,
        } = decision;
        let report = path.map(|p| {
            let mut r = self.path_report(&p);
            if let Some((_, node)) = error_senders.iter().find(|s| s.0 == r.rejected_by) {
                r.rejected_by_node = node.to_string();
            }
            r
        });
        let drops: Vec<(&str, u64)> = report
            .as_ref()
            .map(|r| r.drops.iter().map(|(k, v)| (k.as_str(), *v)).collect())
            .unwrap_or_default();
        let (packets, bytes, first_ns, last_ns) = self.counters();
        evidence.sort_unstable();
        evidence.dedup();
        let mut points = self.point_labels();
        points.extend(more.iter().copied());
        out.add(&FlowRef {
            client: ends.client,
            server: ends.server,
            service: ends.service,
            protocol: self.members.first().map_or(0, |m| m.protocol),
            server_port: ends.server_port,
            packets,
            bytes,
            first_ns,
            last_ns,
            confidence: ends.confidence,
            evidence: &evidence,
            observed_at: &points,
            continued: self.continued,
            connection: self.id(),
            path: report.as_ref().map(|r| PathRef {
                verdict: r.verdict,
                last_seen: &r.last_seen,
                missing_at: &r.missing_at,
                rejected_by: r.rejected_by,
                rejected_by_node: &r.rejected_by_node,
                drops: &drops,
            }),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::fp;
    use crate::stitch::Stitcher;
    use crate::testkit::{BatchBuilder, Row, endpoint_slice, service};
    use crate::{Direction, IfaceKind, Inventory};

    /// 10.0.1.x are pods, 10.0.0.1 is node "n1"'s gateway, 192.168.1.1 its own address, else
    /// external. Services: shop/web 10.96.0.1:80 (NodePort 30080), shop/web-admin
    /// 10.96.0.2:80 over the same pods, headless shop/db on 10.0.1.7:5432.
    fn class(ip: Ip) -> Class<'static> {
        let s = ip.to_string();
        if s == "10.0.0.1" {
            Class::Node {
                name: "n1",
                note: Some("gw"),
                confidence: 0.7,
            }
        } else if s == "192.168.1.1" {
            Class::node("n1")
        } else if s.starts_with("10.0.1.") {
            Class::POD
        } else {
            Class::External
        }
    }

    fn inventory() -> InventoryIndex {
        InventoryIndex::new(Inventory {
            services: vec![
                service("shop", "web", "10.96.0.1", 80, 8080, 30080),
                service("shop", "web-admin", "10.96.0.2", 80, 8080, 0),
                service("shop", "db", "", 5432, 5432, 0),
            ],
            endpoint_slices: vec![
                endpoint_slice("shop", "web", &["10.0.1.9"], 8080),
                endpoint_slice("shop", "web-admin", &["10.0.1.9"], 8080),
                endpoint_slice("shop", "db", &["10.0.1.7"], 5432),
            ],
            ..Inventory::default()
        })
        .0
    }

    /// (client role, client IP, server role, server IP, server port, service name, sorted
    /// evidence, confidence)
    type Decided = (
        Role,
        String,
        Role,
        String,
        u16,
        String,
        Vec<&'static str>,
        f32,
    );

    fn decide(rows: Vec<Row>) -> Option<Decided> {
        let mut b = BatchBuilder::new()
            .point("n1", "veth1", IfaceKind::PodVeth, Direction::Ingress)
            .point("n2", "eth0", IfaceKind::Uplink, Direction::Ingress)
            .point("n1", "veth1", IfaceKind::PodVeth, Direction::Egress);
        for r in rows {
            b = b.row(r);
        }
        let mut s = Stitcher::default();
        s.add_batch(&b.build());
        let conns = s.drain();
        assert_eq!(conns.len(), 1);
        let inv = inventory();
        let d = conns[0].decide(&inv, |m, side| class(side.of(m)))?;
        let mut ev = d.evidence.clone();
        ev.sort_unstable();
        Some((
            d.ends.client.role,
            d.ends.client.ip.to_string(),
            d.ends.server.role,
            d.ends.server.ip.to_string(),
            d.ends.server_port,
            d.ends.service.map_or(String::new(), |s| s.name.to_string()),
            ev,
            d.ends.confidence,
        ))
    }

    const SYN: u8 = fp::TCP_SYN_ISN;

    #[test]
    fn the_pod_behind_a_gateway_through_a_service_is_the_client() {
        let got = decide(vec![
            Row::flow(6, "10.0.1.5", 4000, "10.96.0.1", 80).fingerprint(SYN, 9),
            Row::flow(6, "10.0.0.1", 4000, "10.0.1.9", 8080)
                .at(1)
                .fingerprint(SYN, 9),
        ]);
        assert_eq!(
            got.unwrap(),
            (
                Role::Pod,
                "10.0.1.5".into(),
                Role::Pod,
                "10.0.1.9".into(),
                8080,
                "shop/web".into(),
                vec!["nat:snat-recovered", "service:dnat"],
                1.0
            )
        );
    }

    #[test]
    fn a_reply_from_the_door_names_the_service_though_the_requests_went_to_the_backend() {
        // A piece of a connection cut by a drain: its requests seen only after DNAT (to the
        // backend), its replies also where they come back from the ClusterIP.
        let got = decide(vec![
            Row::flow(17, "10.0.1.5", 40000, "10.0.1.9", 8080).fingerprint(fp::IPV4_ID, 3 << 16),
            Row::flow(17, "10.0.1.9", 8080, "10.0.1.5", 40000)
                .at(1)
                .fingerprint(fp::IPV4_ID, 4 << 16),
            Row::flow(17, "10.96.0.1", 80, "10.0.1.5", 40000)
                .at(2)
                .fingerprint(fp::IPV4_ID, 4 << 16),
        ]);
        let got = got.unwrap();
        assert_eq!(
            (got.3.as_str(), got.4, got.5.as_str()),
            ("10.0.1.9", 8080, "shop/web"),
            "{got:?}"
        );
        assert!(got.6.contains(&"service:dnat"), "{got:?}");
    }

    #[test]
    fn two_services_over_the_same_pods_stay_two() {
        let via = |cip: &str, isn| {
            decide(vec![
                Row::flow(6, "10.0.1.5", 4000, cip, 80).fingerprint(SYN, isn),
                Row::flow(6, "10.0.1.5", 4000, "10.0.1.9", 8080)
                    .at(1)
                    .fingerprint(SYN, isn),
            ])
            .unwrap()
            .5
        };
        assert_eq!(via("10.96.0.1", 1), "shop/web");
        assert_eq!(via("10.96.0.2", 2), "shop/web-admin");
    }

    #[test]
    fn a_nodeport_client_outside_is_recovered_from_behind_the_node_snat() {
        // The external client hits node n1's address on the NodePort; kube-proxy DNATs to a
        // remote backend and SNATs to n1's gateway: the backend sees n1.
        let got = decide(vec![
            Row::flow(6, "203.0.113.8", 51000, "192.168.1.1", 30080).fingerprint(SYN, 7),
            Row::flow(6, "10.0.0.1", 62000, "10.0.1.9", 8080)
                .at(1)
                .fingerprint(SYN, 7),
        ])
        .unwrap();
        assert_eq!(
            (got.0, got.1.as_str(), got.2, got.4, got.5.as_str()),
            (Role::External, "203.0.113.8", Role::Pod, 8080, "shop/web")
        );
        assert_eq!(
            got.6,
            vec!["nat:snat-recovered", "service:dnat", "service:nodeport"]
        );
        // externalTrafficPolicy Local: no SNAT, the backend sees the client itself.
        let local = decide(vec![
            Row::flow(6, "203.0.113.8", 51000, "192.168.1.1", 30080).fingerprint(SYN, 8),
            Row::flow(6, "203.0.113.8", 51000, "10.0.1.9", 8080)
                .at(1)
                .fingerprint(SYN, 8),
        ])
        .unwrap();
        assert_eq!((local.0, local.5.as_str()), (Role::External, "shop/web"));
        assert_eq!(local.6, vec!["service:dnat", "service:nodeport"]);
    }

    #[test]
    fn hairpin_a_pod_reaching_itself_through_its_service() {
        // kube-proxy masquerades hairpin traffic to the node's gateway: both views on the
        // pod's own veth.
        let got = decide(vec![
            Row::flow(6, "10.0.1.9", 4000, "10.96.0.1", 80).fingerprint(SYN, 5),
            Row::flow(6, "10.0.0.1", 4000, "10.0.1.9", 8080)
                .at(2)
                .fingerprint(SYN, 5),
        ])
        .unwrap();
        assert_eq!(
            (got.0, got.1.as_str(), got.3.as_str(), got.5.as_str()),
            (Role::Pod, "10.0.1.9", "10.0.1.9", "shop/web")
        );
    }

    #[test]
    fn a_headless_service_is_named_from_its_endpoint_slices() {
        let got = decide(vec![Row::flow(6, "10.0.1.5", 4000, "10.0.1.7", 5432)]).unwrap();
        assert_eq!((got.2, got.5.as_str()), (Role::Pod, "shop/db"));
        assert_eq!(got.6, vec!["service:headless"]);
        // Another port of the same pod is not the service.
        let other = decide(vec![Row::flow(6, "10.0.1.5", 4000, "10.0.1.7", 9090)]).unwrap();
        assert_eq!((other.5.as_str(), other.6.len()), ("", 0));
    }

    #[test]
    fn a_gateway_alone_is_its_node_and_a_lone_service_is_the_server() {
        let got = decide(vec![Row::flow(6, "10.0.0.1", 4000, "10.96.0.1", 80).at(1)]);
        assert_eq!(
            got.unwrap(),
            (
                Role::Node,
                "10.0.0.1".into(),
                Role::Service,
                "10.96.0.1".into(),
                80,
                "shop/web".into(),
                vec!["gw", "no-backend-seen"],
                0.7
            )
        );
    }

    #[test]
    fn ipvs_a_node_reaching_a_clusterip_from_the_clusterip_itself() {
        // IPVS binds ClusterIPs to kube-ipvs0, so a node's own connection leaves with the
        // ClusterIP as source; kube-proxy masquerades it to the node's address.
        let got = decide(vec![
            Row::flow(6, "10.96.0.1", 4000, "10.96.0.1", 80).fingerprint(SYN, 4),
            Row::flow(6, "192.168.1.1", 4000, "10.0.1.9", 8080)
                .at(1)
                .fingerprint(SYN, 4),
        ])
        .unwrap();
        assert_eq!(
            (got.0, got.1.as_str(), got.2, got.5.as_str()),
            (Role::Node, "192.168.1.1", Role::Pod, "shop/web")
        );
    }

    #[test]
    fn a_pod_leaving_through_its_node_is_masquerade_and_control_traffic_is_no_edge() {
        let got = decide(vec![
            Row::flow(6, "10.0.1.5", 4000, "203.0.113.1", 443).fingerprint(SYN, 3),
            Row::flow(6, "10.0.0.1", 4000, "203.0.113.1", 443)
                .at(1)
                .fingerprint(SYN, 3),
        ])
        .unwrap();
        assert_eq!((got.0, got.2), (Role::Pod, Role::External));
        assert!(got.6.contains(&"nat:masquerade"), "{:?}", got.6);
        assert_eq!(
            decide(vec![Row::flow(17, "10.0.1.5", 5353, "224.0.0.251", 5353)]),
            None
        );
    }
}
