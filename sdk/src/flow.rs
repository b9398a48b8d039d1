//! Building [`LogicalFlow`]s and [`Endpoint`]s, and the [`Flows`] sink that turns them into
//! the columnar [`FlowBatch`] crossing the boundary.

use crate::batch::Obs;
use crate::hash::FastMap;
use crate::path::{PathReport, Verdict};
use crate::{FlowBatch, Ip};

/// What kind of thing an endpoint is. The host decides *which* one from the address and the
/// time of the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A pod, named by IP at the time of the flow.
    Pod,
    /// A node; `name` when the plugin knows it, else named by IP.
    Node,
    /// A service, by ClusterIP / external IP, or by `name` ("<ns>/<name>").
    Service,
    /// Outside the cluster.
    External,
    /// The plugin cannot tell.
    Unknown,
}

/// How a plugin refers to an endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub role: Role,
    pub ip: Ip,
    /// Optional name hint ("node-a", "default/web"); "" if none.
    pub name: String,
}

/// One connection as the plugin recovered it (see `flow-batch` in `wit/plugin.wit`).
#[derive(Clone, Debug, PartialEq)]
pub struct LogicalFlow {
    pub client: Endpoint,
    pub server: Endpoint,
    /// The service the client addressed, if any (before DNAT).
    pub service: Option<Endpoint>,
    pub protocol: u8,
    /// The server's port after DNAT.
    pub server_port: u16,
    pub packets: u64,
    pub bytes: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub evidence: Vec<String>,
    pub observed_at: Vec<String>,
    pub confidence: f32,
    /// Already a flow in an earlier window: adds packets, not a connection.
    pub continued: bool,
    /// The connection's identity ([`crate::stitch::Connection::id`]); 0: not known.
    pub connection: u64,
    /// Where its packets went against the expected path; None: not judged.
    pub path: Option<PathReport>,
}

impl Endpoint {
    pub fn pod(ip: Ip) -> Endpoint {
        Endpoint {
            role: Role::Pod,
            ip,
            name: String::new(),
        }
    }
    /// A node named by the plugin (the host then needs no IP to name it).
    pub fn node(name: &str, ip: Ip) -> Endpoint {
        Endpoint {
            role: Role::Node,
            ip,
            name: name.to_string(),
        }
    }
    pub fn service(ip: Ip) -> Endpoint {
        Endpoint {
            role: Role::Service,
            ip,
            name: String::new(),
        }
    }
    pub fn external(ip: Ip) -> Endpoint {
        Endpoint {
            role: Role::External,
            ip,
            name: String::new(),
        }
    }
    pub fn unknown(ip: Ip) -> Endpoint {
        Endpoint {
            role: Role::Unknown,
            ip,
            name: String::new(),
        }
    }
}

/// Fluent builder for [`LogicalFlow`].
pub struct FlowBuilder(LogicalFlow);

impl FlowBuilder {
    pub fn new(client: Endpoint, server: Endpoint, protocol: u8, server_port: u16) -> Self {
        FlowBuilder(LogicalFlow {
            client,
            server,
            service: None,
            protocol,
            server_port,
            packets: 0,
            bytes: 0,
            first_ns: 0,
            last_ns: 0,
            evidence: Vec::new(),
            observed_at: Vec::new(),
            confidence: 1.0,
            continued: false,
            connection: 0,
            path: None,
        })
    }

    pub fn service(mut self, service: Endpoint) -> Self {
        self.0.service = Some(service);
        self
    }

    /// Adds the counters of `obs` (the point this flow is counted at).
    pub fn counters_from(mut self, obs: &Obs<'_>) -> Self {
        self.0.packets += obs.packets();
        self.0.bytes += obs.bytes();
        self.0.first_ns = if self.0.first_ns == 0 {
            obs.first_ns()
        } else {
            self.0.first_ns.min(obs.first_ns())
        };
        self.0.last_ns = self.0.last_ns.max(obs.last_ns());
        self.observed_at(obs.point_label())
    }

    pub fn counters(mut self, packets: u64, bytes: u64, first_ns: u64, last_ns: u64) -> Self {
        self.0.packets = packets;
        self.0.bytes = bytes;
        self.0.first_ns = first_ns;
        self.0.last_ns = last_ns;
        self
    }

    pub fn evidence(mut self, label: &str) -> Self {
        if !self.0.evidence.iter().any(|e| e == label) {
            self.0.evidence.push(label.to_string());
        }
        self
    }

    pub fn observed_at(mut self, point: String) -> Self {
        if !self.0.observed_at.contains(&point) {
            self.0.observed_at.push(point);
        }
        self
    }

    pub fn confidence(mut self, c: f32) -> Self {
        self.0.confidence = c.clamp(0.0, 1.0);
        self
    }

    pub fn build(self) -> LogicalFlow {
        self.0
    }
}

/// An endpoint by reference: what [`Flows::add`] takes, so emitting a flow allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct EndpointRef<'a> {
    pub role: Role,
    pub ip: Ip,
    pub name: &'a str,
}

impl<'a> EndpointRef<'a> {
    pub fn of(e: &'a Endpoint) -> EndpointRef<'a> {
        EndpointRef {
            role: e.role,
            ip: e.ip,
            name: &e.name,
        }
    }
}

/// A logical flow by reference (see [`LogicalFlow`] for the meaning of each field).
#[derive(Clone, Copy, Debug)]
pub struct FlowRef<'a> {
    pub client: EndpointRef<'a>,
    pub server: EndpointRef<'a>,
    pub service: Option<EndpointRef<'a>>,
    pub protocol: u8,
    pub server_port: u16,
    pub packets: u64,
    pub bytes: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub confidence: f32,
    pub evidence: &'a [&'a str],
    pub observed_at: &'a [&'a str],
    pub continued: bool,
    pub connection: u64,
    pub path: Option<PathRef<'a>>,
}

/// A [`PathReport`] by reference.
#[derive(Clone, Copy, Debug)]
pub struct PathRef<'a> {
    pub verdict: Verdict,
    pub last_seen: &'a str,
    pub missing_at: &'a str,
    pub rejected_by: Ip,
    pub rejected_by_node: &'a str,
    pub drops: &'a [(&'a str, u64)],
}

pub fn role_code(r: Role) -> u8 {
    match r {
        Role::Pod => 0,
        Role::Node => 1,
        Role::Service => 2,
        Role::External => 3,
        Role::Unknown => 4,
    }
}

pub fn role_from_code(c: u8) -> Role {
    match c {
        0 => Role::Pod,
        1 => Role::Node,
        2 => Role::Service,
        3 => Role::External,
        _ => Role::Unknown,
    }
}

/// Where a plugin puts its logical flows: the columnar [`FlowBatch`] that crosses the
/// boundary, with every string stored once.
pub struct Flows {
    batch: FlowBatch,
    index: FastMap<String, u32>,
}

impl Default for Flows {
    fn default() -> Self {
        Flows {
            batch: FlowBatch {
                strings: vec![String::new()],
                client_role: Vec::new(),
                client_ip_hi: Vec::new(),
                client_ip_lo: Vec::new(),
                client_name: Vec::new(),
                server_role: Vec::new(),
                server_ip_hi: Vec::new(),
                server_ip_lo: Vec::new(),
                server_name: Vec::new(),
                service_role: Vec::new(),
                service_ip_hi: Vec::new(),
                service_ip_lo: Vec::new(),
                service_name: Vec::new(),
                protocol: Vec::new(),
                server_port: Vec::new(),
                packets: Vec::new(),
                bytes: Vec::new(),
                first_ns: Vec::new(),
                last_ns: Vec::new(),
                confidence: Vec::new(),
                evidence_count: Vec::new(),
                evidence: Vec::new(),
                observed_count: Vec::new(),
                observed_at: Vec::new(),
                continued: Vec::new(),
                connection: Vec::new(),
                path_verdict: Vec::new(),
                path_last_seen: Vec::new(),
                path_missing_at: Vec::new(),
                rejected_by_hi: Vec::new(),
                rejected_by_lo: Vec::new(),
                rejected_by_node: Vec::new(),
                drop_count: Vec::new(),
                drop_reason: Vec::new(),
                drop_packets: Vec::new(),
            },
            index: FastMap::default(),
        }
    }
}

impl Flows {
    pub fn new() -> Flows {
        Flows::default()
    }

    fn intern(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.batch.strings.len() as u32;
        self.batch.strings.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }

    /// Adds a flow given by reference (no allocation beyond first sight of a string).
    pub fn add(&mut self, f: &FlowRef<'_>) {
        let client_name = self.intern(f.client.name);
        let server_name = self.intern(f.server.name);
        let service_name = f.service.map(|s| self.intern(s.name)).unwrap_or(0);
        let b = &mut self.batch;
        b.client_role.push(role_code(f.client.role));
        b.client_ip_hi.push(f.client.ip.hi);
        b.client_ip_lo.push(f.client.ip.lo);
        b.client_name.push(client_name);
        b.server_role.push(role_code(f.server.role));
        b.server_ip_hi.push(f.server.ip.hi);
        b.server_ip_lo.push(f.server.ip.lo);
        b.server_name.push(server_name);
        let svc = f.service.unwrap_or(EndpointRef {
            role: Role::Unknown,
            ip: Ip::NONE,
            name: "",
        });
        b.service_role.push(if f.service.is_some() {
            role_code(svc.role)
        } else {
            255
        });
        b.service_ip_hi.push(svc.ip.hi);
        b.service_ip_lo.push(svc.ip.lo);
        b.service_name.push(service_name);
        b.protocol.push(f.protocol);
        b.server_port.push(f.server_port);
        b.packets.push(f.packets);
        b.bytes.push(f.bytes);
        b.first_ns.push(f.first_ns);
        b.last_ns.push(f.last_ns);
        b.confidence.push(f.confidence);
        b.continued.push(f.continued);
        b.connection.push(f.connection);
        let n_ev = f.evidence.len().min(u8::MAX as usize);
        self.batch.evidence_count.push(n_ev as u8);
        for e in &f.evidence[..n_ev] {
            let i = self.intern(e);
            self.batch.evidence.push(i);
        }
        let n_obs = f.observed_at.len().min(u16::MAX as usize);
        self.batch.observed_count.push(n_obs as u16);
        for p in &f.observed_at[..n_obs] {
            let i = self.intern(p);
            self.batch.observed_at.push(i);
        }
        let (verdict, last_seen, missing_at, by, by_node, drops) = match f.path {
            Some(p) => (
                p.verdict.code(),
                self.intern(p.last_seen),
                self.intern(p.missing_at),
                p.rejected_by,
                self.intern(p.rejected_by_node),
                p.drops,
            ),
            None => (0, 0, 0, Ip::NONE, 0, &[][..]),
        };
        let n_drops = drops.len().min(u8::MAX as usize);
        self.batch.drop_count.push(n_drops as u8);
        for (reason, packets) in &drops[..n_drops] {
            let i = self.intern(reason);
            self.batch.drop_reason.push(i);
            self.batch.drop_packets.push(*packets);
        }
        let b = &mut self.batch;
        b.path_verdict.push(verdict);
        b.path_last_seen.push(last_seen);
        b.path_missing_at.push(missing_at);
        b.rejected_by_hi.push(by.hi);
        b.rejected_by_lo.push(by.lo);
        b.rejected_by_node.push(by_node);
    }

    /// Adds an owned [`LogicalFlow`] (as [`FlowBuilder`] builds them).
    pub fn push(&mut self, f: &LogicalFlow) {
        let evidence: Vec<&str> = f.evidence.iter().map(String::as_str).collect();
        let observed: Vec<&str> = f.observed_at.iter().map(String::as_str).collect();
        let drops: Vec<(&str, u64)> = f
            .path
            .as_ref()
            .map(|p| p.drops.iter().map(|(r, n)| (r.as_str(), *n)).collect())
            .unwrap_or_default();
        self.add(&FlowRef {
            client: EndpointRef::of(&f.client),
            server: EndpointRef::of(&f.server),
            service: f.service.as_ref().map(EndpointRef::of),
            protocol: f.protocol,
            server_port: f.server_port,
            packets: f.packets,
            bytes: f.bytes,
            first_ns: f.first_ns,
            last_ns: f.last_ns,
            confidence: f.confidence,
            evidence: &evidence,
            observed_at: &observed,
            continued: f.continued,
            connection: f.connection,
            path: f.path.as_ref().map(|p| PathRef {
                verdict: p.verdict,
                last_seen: &p.last_seen,
                missing_at: &p.missing_at,
                rejected_by: p.rejected_by,
                rejected_by_node: &p.rejected_by_node,
                drops: &drops,
            }),
        });
    }

    pub fn len(&self) -> usize {
        self.batch.protocol.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn into_batch(self) -> FlowBatch {
        self.batch
    }

    /// The batch as it will cross the boundary, to change by hand. Only for testing the
    /// host's checks of what plugins return (a plugin that writes columns itself can break
    /// the batch's rules, and the host then refuses the whole batch).
    #[doc(hidden)]
    pub fn raw_mut(&mut self) -> &mut FlowBatch {
        &mut self.batch
    }
}

/// Reads a [`FlowBatch`] back into owned flows (for tests and tools).
pub fn flows_from_batch(b: &FlowBatch) -> Vec<LogicalFlow> {
    let s = |i: u32| b.strings.get(i as usize).cloned().unwrap_or_default();
    let (mut ev, mut ob, mut dr) = (0usize, 0usize, 0usize);
    (0..b.protocol.len())
        .map(|i| {
            let nd = b.drop_count.get(i).copied().unwrap_or(0) as usize;
            let drops = (dr..dr + nd)
                .map(|j| (s(b.drop_reason[j]), b.drop_packets[j]))
                .collect();
            dr += nd;
            let path = b
                .path_verdict
                .get(i)
                .and_then(|&c| Verdict::from_code(c))
                .map(|verdict| PathReport {
                    verdict,
                    last_seen: s(b.path_last_seen[i]),
                    missing_at: s(b.path_missing_at[i]),
                    rejected_by: Ip {
                        hi: b.rejected_by_hi[i],
                        lo: b.rejected_by_lo[i],
                    },
                    rejected_by_node: s(b.rejected_by_node[i]),
                    drops,
                });
            let ne = b.evidence_count[i] as usize;
            let no = b.observed_count[i] as usize;
            let evidence = b.evidence[ev..ev + ne].iter().map(|&x| s(x)).collect();
            let observed_at = b.observed_at[ob..ob + no].iter().map(|&x| s(x)).collect();
            ev += ne;
            ob += no;
            LogicalFlow {
                client: Endpoint {
                    role: role_from_code(b.client_role[i]),
                    ip: Ip {
                        hi: b.client_ip_hi[i],
                        lo: b.client_ip_lo[i],
                    },
                    name: s(b.client_name[i]),
                },
                server: Endpoint {
                    role: role_from_code(b.server_role[i]),
                    ip: Ip {
                        hi: b.server_ip_hi[i],
                        lo: b.server_ip_lo[i],
                    },
                    name: s(b.server_name[i]),
                },
                service: (b.service_role[i] != 255).then(|| Endpoint {
                    role: role_from_code(b.service_role[i]),
                    ip: Ip {
                        hi: b.service_ip_hi[i],
                        lo: b.service_ip_lo[i],
                    },
                    name: s(b.service_name[i]),
                }),
                protocol: b.protocol[i],
                server_port: b.server_port[i],
                packets: b.packets[i],
                bytes: b.bytes[i],
                first_ns: b.first_ns[i],
                last_ns: b.last_ns[i],
                evidence,
                observed_at,
                confidence: b.confidence[i],
                continued: b.continued.get(i).copied().unwrap_or(false),
                connection: b.connection.get(i).copied().unwrap_or(0),
                path,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_round_trip_through_columns_with_shared_strings() {
        let a = FlowBuilder::new(
            Endpoint::pod(Ip::v4(10, 0, 0, 1)),
            Endpoint::node("n1", Ip::v4(10, 0, 0, 2)),
            6,
            80,
        )
        .service(Endpoint::service(Ip::v4(10, 96, 0, 1)))
        .counters(3, 300, 1, 2)
        .evidence("x:one")
        .observed_at("n1/eth0:ingress".into())
        .build();
        let b = FlowBuilder::new(
            Endpoint::external(Ip::v4(1, 1, 1, 1)),
            Endpoint::unknown(Ip::NONE),
            17,
            53,
        )
        .evidence("x:one")
        .evidence("x:two")
        .confidence(0.5)
        .build();
        let mut out = Flows::new();
        out.push(&a);
        out.push(&b);
        let batch = out.into_batch();
        assert_eq!(
            batch.strings,
            vec!["", "n1", "x:one", "n1/eth0:ingress", "x:two"]
        );
        assert_eq!(flows_from_batch(&batch), vec![a, b]);
    }
}
