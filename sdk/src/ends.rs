//! Who a connection's ends are, decided the same way for every CNI (CNI-RULES.md: the
//! gateway rules of each CNI and "Services"). A plugin says what each address is in each
//! observation ([`Class`]); [`Connection::decide`] picks the client and the server from
//! every view of the connection:
//!
//! - the **client** is the real source: a pod if any view shows one (only the pod's own veth
//!   still does after SNAT), else the node whose address stood in for it, else an external
//!   host. A pod found behind a node address is `nat:snat-recovered` (`stitch:time` when only
//!   time proximity joined the views);
//! - the **server** is the post-DNAT destination; a destination that is a service names the
//!   service (`service:dnat`), and a service with no backend in any view is the server itself
//!   (`no-backend-seen`); a pod talking outside through its node's address is
//!   `nat:masquerade`.
//!
//! The plugin then adds how the packets travelled and emits with [`Connection::emit`], which
//! counts once and lists every point.

use crate::Ip;
use crate::flow::{EndpointRef, FlowRef, Flows, Role};
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
    /// A ClusterIP or external IP of a service.
    Service,
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
}

fn endpoint(role: Role, ip: Ip, name: &str) -> EndpointRef<'_> {
    EndpointRef { role, ip, name }
}

impl Connection {
    /// Decides the ends (module docs) from `classify(member, side)`; None for control
    /// traffic ([`Seen::is_link_control`]), which is no edge.
    pub fn decide<'a>(&self, classify: impl Fn(&Seen, Side) -> Class<'a>) -> Option<Decision<'a>> {
        let first = self.members.first()?;
        if first.is_link_control() {
            return None;
        }
        let mut evidence: Vec<&'static str> = Vec::with_capacity(6);
        let mut confidence = 1.0f32;

        let sources: Vec<(Ip, Class<'a>)> = self
            .forward_members()
            .map(|m| (m.src, classify(m, Side::Source)))
            .collect();
        let behind_node = sources.iter().any(|(_, c)| matches!(c, Class::Node { .. }));
        let pod = sources
            .iter()
            .find(|(_, c)| c.is_named_pod())
            .or_else(|| sources.iter().find(|(_, c)| matches!(c, Class::Pod { .. })));
        let client = match pod {
            Some(&(ip, Class::Pod { name, note })) => {
                evidence.extend(note);
                if behind_node {
                    evidence.push("nat:snat-recovered");
                    if self.joined_by_time {
                        // No fingerprint matched: the one candidate seen at the same moment.
                        evidence.push("stitch:time");
                        confidence = 0.9;
                    }
                }
                endpoint(Role::Pod, ip, name)
            }
            _ => match sources
                .iter()
                .find(|(_, c)| matches!(c, Class::Node { .. }))
                .or_else(|| sources.iter().find(|(_, c)| *c == Class::External))
            {
                Some(&(
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
                Some(&(ip, _)) => endpoint(Role::External, ip, ""),
                None => endpoint(Role::Unknown, first.src, ""),
            },
        };

        let dests: Vec<(Ip, u16, Class<'a>)> = self
            .forward_members()
            .map(|m| (m.dst, m.dst_port, classify(m, Side::Destination)))
            .collect();
        let service = dests
            .iter()
            .find(|(_, _, c)| *c == Class::Service)
            .map(|&(ip, port, _)| (ip, port));
        let backend = dests
            .iter()
            .find(|(_, _, c)| c.is_named_pod())
            .or_else(|| dests.iter().find(|(_, _, c)| *c != Class::Service));
        let (server, server_port) = match backend {
            Some(&(ip, port, class)) => {
                let server = match class {
                    Class::Pod { name, note } => {
                        evidence.extend(note);
                        endpoint(Role::Pod, ip, name)
                    }
                    Class::Node { name, .. } => endpoint(Role::Node, ip, name),
                    Class::External => {
                        if client.role == Role::Pod && behind_node {
                            evidence.push("nat:masquerade");
                        }
                        endpoint(Role::External, ip, "")
                    }
                    Class::Service | Class::Unknown => endpoint(Role::Unknown, ip, ""),
                };
                if service.is_some() {
                    evidence.push("service:dnat");
                }
                (server, port)
            }
            None => {
                let (ip, port) = service.unwrap_or((first.dst, first.dst_port));
                evidence.push("no-backend-seen");
                (endpoint(Role::Service, ip, ""), port)
            }
        };
        Some(Decision {
            ends: Ends {
                client,
                server,
                service: service.map(|(ip, _)| endpoint(Role::Service, ip, "")),
                server_port,
                confidence,
            },
            evidence,
        })
    }

    /// Emits this connection as one logical flow: counters from one interface
    /// ([`counters`](Self::counters)), every point in `observed_at`, the evidence sorted and
    /// without repeats. The protocol is the first member's.
    pub fn emit(&self, out: &mut Flows, decision: Decision<'_>) {
        let Decision { ends, mut evidence } = decision;
        let (packets, bytes, first_ns, last_ns) = self.counters();
        evidence.sort_unstable();
        evidence.dedup();
        let points = self.point_labels();
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
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::fp;
    use crate::stitch::Stitcher;
    use crate::testkit::{BatchBuilder, Row};
    use crate::{Direction, IfaceKind};

    /// 10.0.1.x are pods, 10.0.0.1 is node "n1"'s gateway, 10.96.x services, else external.
    fn class(ip: Ip) -> Class<'static> {
        let s = ip.to_string();
        if s == "10.0.0.1" {
            Class::Node {
                name: "n1",
                note: Some("gw"),
                confidence: 0.7,
            }
        } else if s.starts_with("10.0.1.") {
            Class::POD
        } else if s.starts_with("10.96.") {
            Class::Service
        } else {
            Class::External
        }
    }

    /// (client role, client IP, server role, server port, sorted evidence, confidence)
    type Decided = (Role, String, Role, u16, Vec<&'static str>, f32);

    fn decide(rows: Vec<Row>) -> Option<Decided> {
        let mut b = BatchBuilder::new()
            .point("n1", "veth1", IfaceKind::PodVeth, Direction::Ingress)
            .point("n2", "eth0", IfaceKind::Uplink, Direction::Ingress);
        for r in rows {
            b = b.row(r);
        }
        let mut s = Stitcher::default();
        s.add_batch(&b.build());
        let conns = s.drain();
        assert_eq!(conns.len(), 1);
        let d = conns[0].decide(|m, side| class(side.of(m)))?;
        let mut ev = d.evidence.clone();
        ev.sort_unstable();
        Some((
            d.ends.client.role,
            d.ends.client.ip.to_string(),
            d.ends.server.role,
            d.ends.server_port,
            ev,
            d.ends.confidence,
        ))
    }

    #[test]
    fn the_pod_behind_a_gateway_through_a_service_is_the_client() {
        let syn = fp::TCP_SYN_ISN;
        let got = decide(vec![
            Row::flow(6, "10.0.1.5", 4000, "10.96.0.1", 80).fingerprint(syn, 9),
            Row::flow(6, "10.0.0.1", 4000, "10.0.1.9", 8080)
                .at(1)
                .fingerprint(syn, 9),
        ]);
        assert_eq!(
            got,
            Some((
                Role::Pod,
                "10.0.1.5".into(),
                Role::Pod,
                8080,
                vec!["nat:snat-recovered", "service:dnat"],
                1.0
            ))
        );
    }

    #[test]
    fn a_gateway_alone_is_its_node_and_a_lone_service_is_the_server() {
        let got = decide(vec![Row::flow(6, "10.0.0.1", 4000, "10.96.0.1", 80).at(1)]);
        assert_eq!(
            got,
            Some((
                Role::Node,
                "10.0.0.1".into(),
                Role::Service,
                80,
                vec!["gw", "no-backend-seen"],
                0.7
            ))
        );
    }

    #[test]
    fn a_pod_leaving_through_its_node_is_masquerade_and_control_traffic_is_no_edge() {
        let got = decide(vec![
            Row::flow(6, "10.0.1.5", 4000, "203.0.113.1", 443).fingerprint(fp::TCP_SYN_ISN, 3),
            Row::flow(6, "10.0.0.1", 4000, "203.0.113.1", 443)
                .at(1)
                .fingerprint(fp::TCP_SYN_ISN, 3),
        ])
        .unwrap();
        assert_eq!((got.0, got.2), (Role::Pod, Role::External));
        assert!(got.4.contains(&"nat:masquerade"), "{:?}", got.4);
        assert_eq!(
            decide(vec![Row::flow(17, "10.0.1.5", 5353, "224.0.0.251", 5353)]),
            None
        );
    }
}
