//! The topology store: logical flows from the plugins, resolved to named endpoints and
//! aggregated into edges. Its JSON form is the output contract of DESIGN.md.

pub mod resolve;

use crate::plugins::bindings::wit;
use resolve::Resolver;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A named endpoint: `pod/<ns>/<name>`, `node/<name>`, `service/<ns>/<name>`,
/// `external/<ip>` or `unknown/<ip>`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NodeEntry {
    pub id: String,
    pub kind: String,
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

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct EdgeKey {
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

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Health {
    pub plugins: BTreeMap<String, crate::plugins::PluginHealth>,
    /// What sources could not process, by reason (malformed packets, truncated files, ...).
    pub drops: BTreeMap<String, u64>,
    /// Per-file or per-source problems, in words.
    pub errors: Vec<String>,
}

/// The document printed by `--format json`.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct TopologyDoc {
    pub window: Window,
    pub nodes: Vec<NodeEntry>,
    pub edges: Vec<Edge>,
    pub health: Health,
}

struct EdgeAcc {
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

pub fn rfc3339(ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
    humantime::format_rfc3339_micros(t).to_string()
}

pub fn protocol_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        other => format!("ip-{other}"),
    }
}

impl Topology {
    /// Adds one logical flow; endpoints are named at the flow's time.
    pub fn add(&mut self, resolver: &Resolver, flow: &wit::LogicalFlow) {
        let at = flow.first_ns;
        let src = resolver.resolve(&flow.client, at);
        let dst = resolver.resolve(&flow.server, at);
        let service = flow.service.as_ref().map(|s| resolver.resolve(s, at));
        let key = EdgeKey {
            src: src.id.clone(),
            dst: dst.id.clone(),
            service: service.as_ref().map(|s| s.id.clone()),
            protocol: flow.protocol,
            port: flow.server_port,
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
        acc.packets += flow.packets;
        acc.bytes += flow.bytes;
        acc.first_ns = acc.first_ns.min(flow.first_ns);
        acc.last_ns = acc.last_ns.max(flow.last_ns);
        acc.evidence.extend(flow.evidence.iter().cloned());
        acc.observed_at.extend(flow.observed_at.iter().cloned());
        acc.confidence = acc.confidence.min(flow.confidence);
        acc.flows += 1;
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
