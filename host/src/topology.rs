//! The topology store: logical flows from the plugins, resolved to named endpoints and
//! aggregated into edges. Its JSON form is the output contract (docs/output-contract.md).

pub mod resolve;

pub use crate::health::Health;
use crate::plugins::bindings::wit;
use cniscope_common::ipproto;
use resolve::Resolver;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A named endpoint: `pod/<ns>/<name>`, `node/<name>`, `service/<ns>/<name>`,
/// `external/<ip>` or `unknown/<ip>`.
/// What an endpoint is; the first part of its id.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    Pod,
    Node,
    Service,
    /// Outside the cluster.
    External,
    /// An address nothing in the inventory or the plugin names.
    Unknown,
}

impl EndpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Pod => "pod",
            EndpointKind::Node => "node",
            EndpointKind::Service => "service",
            EndpointKind::External => "external",
            EndpointKind::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeEntry {
    pub id: String,
    pub kind: EndpointKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// The Kubernetes node a pod runs on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub ips: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EdgeKey {
    src: String,
    dst: String,
    service: Option<String>,
    protocol: u8,
    port: u16,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Edge {
    pub src: String,
    pub dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub protocol: String,
    pub port: u16,
    pub packets: u64,
    pub bytes: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub evidence: BTreeSet<String>,
    pub observed_at: BTreeSet<String>,
    /// The lowest confidence of the flows merged into this edge.
    pub confidence: f32,
    /// Logical flows (connections) merged into this edge.
    pub flows: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Window {
    pub start: String,
    pub end: String,
}

/// The document printed by `--format json`.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct TopologyDoc {
    pub window: Window,
    pub nodes: Vec<NodeEntry>,
    pub edges: Vec<Edge>,
    pub health: Health,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EdgeAcc {
    packets: u64,
    bytes: u64,
    first_ns: u64,
    last_ns: u64,
    evidence: BTreeSet<String>,
    observed_at: BTreeSet<String>,
    confidence: f32,
    flows: u64,
}

#[derive(Default)]
pub struct Topology {
    nodes: BTreeMap<String, NodeEntry>,
    edges: BTreeMap<EdgeKey, EdgeAcc>,
    start_ns: u64,
    end_ns: u64,
}

/// Everything a [`Topology`] holds, to be written down and read back (the aggregator's
/// checkpoint): a restart continues the same sums.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TopologySnapshot {
    nodes: Vec<NodeEntry>,
    edges: Vec<(EdgeKey, EdgeAcc)>,
    start_ns: u64,
    end_ns: u64,
}

pub fn rfc3339(ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
    humantime::format_rfc3339_micros(t).to_string()
}

pub fn protocol_name(p: u8) -> String {
    match p {
        ipproto::TCP => "tcp".into(),
        ipproto::UDP => "udp".into(),
        ipproto::ICMP => "icmp".into(),
        ipproto::ICMPV6 => "icmpv6".into(),
        132 => "sctp".into(),
        other => format!("ip-{other}"),
    }
}

impl Topology {
    pub fn snapshot(&self) -> TopologySnapshot {
        TopologySnapshot {
            nodes: self.nodes.values().cloned().collect(),
            edges: self
                .edges
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            start_ns: self.start_ns,
            end_ns: self.end_ns,
        }
    }

    pub fn restore(s: TopologySnapshot) -> Topology {
        Topology {
            nodes: s.nodes.into_iter().map(|n| (n.id.clone(), n)).collect(),
            edges: s.edges.into_iter().collect(),
            start_ns: s.start_ns,
            end_ns: s.end_ns,
        }
    }

    /// Adds a plugin's flows; endpoints are named at each flow's time. A batch whose columns
    /// disagree in length is malformed: the flows past the shortest column are dropped.
    pub fn add_batch(&mut self, resolver: &Resolver, b: &wit::FlowBatch) {
        let s = |i: u32| b.strings.get(i as usize).map(String::as_str).unwrap_or("");
        let (mut ev, mut ob) = (0usize, 0usize);
        for i in 0..b.protocol.len() {
            let at = b.first_ns[i];
            let ip = |hi: &[u64], lo: &[u64]| wit::Ip {
                hi: hi[i],
                lo: lo[i],
            };
            let src = resolver.resolve(
                b.client_role[i],
                ip(&b.client_ip_hi, &b.client_ip_lo),
                s(b.client_name[i]),
                at,
            );
            let dst = resolver.resolve(
                b.server_role[i],
                ip(&b.server_ip_hi, &b.server_ip_lo),
                s(b.server_name[i]),
                at,
            );
            let service = (b.service_role[i] != 255).then(|| {
                resolver.resolve(
                    b.service_role[i],
                    ip(&b.service_ip_hi, &b.service_ip_lo),
                    s(b.service_name[i]),
                    at,
                )
            });
            let ne = b.evidence_count[i] as usize;
            let no = b.observed_count[i] as usize;
            let evidence = b
                .evidence
                .get(ev..ev + ne)
                .unwrap_or(&[])
                .iter()
                .map(|&x| s(x));
            let observed = b
                .observed_at
                .get(ob..ob + no)
                .unwrap_or(&[])
                .iter()
                .map(|&x| s(x));
            ev += ne;
            ob += no;
            let counters = (
                b.packets[i],
                b.bytes[i],
                b.first_ns[i],
                b.last_ns[i],
                b.confidence[i],
                b.continued[i],
            );
            self.add(
                src,
                dst,
                service,
                (b.protocol[i], b.server_port[i]),
                counters,
                evidence,
                observed,
            );
        }
    }

    fn add<'a>(
        &mut self,
        src: NodeEntry,
        dst: NodeEntry,
        service: Option<NodeEntry>,
        (protocol, port): (u8, u16),
        (packets, bytes, first_ns, last_ns, confidence, continued): (u64, u64, u64, u64, f32, bool),
        evidence: impl Iterator<Item = &'a str>,
        observed: impl Iterator<Item = &'a str>,
    ) {
        let key = EdgeKey {
            src: src.id.clone(),
            dst: dst.id.clone(),
            service: service.as_ref().map(|s| s.id.clone()),
            protocol,
            port,
        };
        for n in [Some(src), Some(dst), service].into_iter().flatten() {
            match self.nodes.get_mut(&n.id) {
                Some(e) => e.ips.extend(n.ips),
                None => {
                    self.nodes.insert(n.id.clone(), n);
                }
            }
        }
        let acc = self.edges.entry(key).or_insert(EdgeAcc {
            packets: 0,
            bytes: 0,
            first_ns: u64::MAX,
            last_ns: 0,
            evidence: BTreeSet::new(),
            observed_at: BTreeSet::new(),
            confidence: 1.0,
            flows: 0,
        });
        acc.packets += packets;
        acc.bytes += bytes;
        acc.first_ns = acc.first_ns.min(first_ns);
        acc.last_ns = acc.last_ns.max(last_ns);
        acc.evidence.extend(evidence.map(str::to_string));
        acc.observed_at.extend(observed.map(str::to_string));
        acc.confidence = acc.confidence.min(confidence);
        // A connection going on from an earlier window is already one of the edge's flows
        // (unless its earlier part was named otherwise: an edge has at least one).
        if !continued || acc.flows == 0 {
            acc.flows += 1;
        }
    }

    /// Widens the window to cover `[start_ns, end_ns]`.
    pub fn cover(&mut self, start_ns: u64, end_ns: u64) {
        if self.start_ns == 0 || start_ns < self.start_ns {
            self.start_ns = start_ns;
        }
        self.end_ns = self.end_ns.max(end_ns);
    }

    pub fn doc(&self, health: Health) -> TopologyDoc {
        TopologyDoc {
            window: Window {
                start: rfc3339(self.start_ns),
                end: rfc3339(self.end_ns),
            },
            nodes: self.nodes.values().cloned().collect(),
            edges: self
                .edges
                .iter()
                .map(|(k, a)| Edge {
                    src: k.src.clone(),
                    dst: k.dst.clone(),
                    service: k.service.clone(),
                    protocol: protocol_name(k.protocol),
                    port: k.port,
                    packets: a.packets,
                    bytes: a.bytes,
                    first_seen: rfc3339(a.first_ns),
                    last_seen: rfc3339(a.last_ns),
                    evidence: a.evidence.clone(),
                    observed_at: a.observed_at.clone(),
                    confidence: a.confidence,
                    flows: a.flows,
                })
                .collect(),
            health,
        }
    }
}
