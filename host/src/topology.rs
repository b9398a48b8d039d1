//! The topology store: logical flows from the plugins, resolved to named endpoints and
//! aggregated into edges. Its JSON form is the output contract (docs/output-contract.md).

pub mod resolve;

pub use crate::health::Health;
use crate::plugins::bindings::wit;
use cniscope_common::ipproto;
use resolve::Resolver;
use resolve::{Named, Resolved};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

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
    /// Where its connections' packets went against the path their CNI's plugin expected
    /// (docs/output-contract.md, "path"); absent when no plugin judged one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<EdgePath>,
}

/// An edge's path verdict: its connections' worst, with where that one stopped.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EdgePath {
    /// The worst verdict of its connections: lost, rejected, no-reply, partial-capture, ok.
    pub verdict: String,
    /// The last expected point that saw the worst one's packets ("node/iface:direction").
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub last_seen: String,
    /// The first watched expected point after it that did not.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub missing_at: String,
    /// Who answered with a RST, for `rejected` (an endpoint id).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub rejected_by: String,
    /// Packets the kernel dropped, by its reason, over all the edge's connections.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub drops: BTreeMap<String, u64>,
    /// How many of its connections had each verdict, each counted once by the window it
    /// began in (`verdict` is the worst of any window of any of them).
    pub verdicts: BTreeMap<String, u64>,
}

/// Verdicts from the WIT codes, best first: an edge shows its connections' worst.
const VERDICTS: [(u8, &str, u8); 5] = [
    // (code, word, severity)
    (1, "ok", 0),
    (5, "partial-capture", 1),
    (2, "no-reply", 2),
    (4, "rejected", 3),
    (3, "lost", 4),
];

fn verdict_word(code: u8) -> Option<(&'static str, u8)> {
    VERDICTS
        .iter()
        .find(|v| v.0 == code)
        .map(|&(_, word, severity)| (word, severity))
}

/// How bad a verdict word is: 0 for `ok` (and anything unknown) up to 4 for `lost`.
/// How bad a verdict code is, as [`severity`] (0 for an unknown code or ok).
pub fn verdict_severity(code: u8) -> u8 {
    verdict_word(code).map_or(0, |(_, s)| s)
}

pub fn severity(word: &str) -> u8 {
    VERDICTS.iter().find(|v| v.1 == word).map_or(0, |v| v.2)
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
    #[serde(default)]
    path: Option<EdgePath>,
}

/// The topology so far. Endpoints are interned: a flow costs a few hash probes on indexes,
/// and an endpoint's strings are made once, when it is first seen.
#[derive(Default)]
pub struct Topology {
    /// Every endpoint, in the order first seen; `by_id` finds one by its id.
    nodes: Vec<NodeEntry>,
    by_id: HashMap<String, u32>,
    /// (endpoint, address) pairs already in the endpoint's `ips`: an address is formatted
    /// once, not once per flow.
    addresses: HashSet<(u32, IpAddr)>,
    named: NamedCache,
    edges: HashMap<EdgeIndex, EdgeAcc>,
    start_ns: u64,
    end_ns: u64,
}

/// A resolver's names -> endpoint indexes. It holds for one resolver (one inventory) only.
#[derive(Default)]
struct NamedCache {
    generation: Option<u64>,
    by_inventory: HashMap<InventoryName, u32>,
    nodes: HashMap<String, u32>,
    /// Services the plugin named and the inventory lacks: namespace -> name -> endpoint.
    other_services: HashMap<String, HashMap<String, u32>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct EdgeIndex {
    src: u32,
    dst: u32,
    /// u32::MAX: none.
    service: u32,
    protocol: u8,
    port: u16,
}

const NO_SERVICE: u32 = u32::MAX;

impl NamedCache {
    fn get(&self, named: Named<'_>) -> Option<u32> {
        match (InventoryName::of(named), named) {
            (Some(key), _) => self.by_inventory.get(&key).copied(),
            (None, Named::Node(name)) => self.nodes.get(name).copied(),
            (None, Named::OtherService(ns, name)) => {
                self.other_services.get(ns)?.get(name).copied()
            }
            (None, _) => None,
        }
    }

    fn insert(&mut self, named: Named<'_>, index: u32) {
        match (InventoryName::of(named), named) {
            (Some(key), _) => {
                self.by_inventory.insert(key, index);
            }
            (None, Named::Node(name)) => {
                self.nodes.insert(name.to_string(), index);
            }
            (None, Named::OtherService(ns, name)) => {
                self.other_services
                    .entry(ns.to_string())
                    .or_default()
                    .insert(name.to_string(), index);
            }
            (None, _) => {}
        }
    }
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
            nodes: self.sorted_nodes(),
            edges: self
                .sorted_edges()
                .into_iter()
                .map(|(k, a)| (k, a.clone()))
                .collect(),
            start_ns: self.start_ns,
            end_ns: self.end_ns,
        }
    }

    pub fn restore(s: TopologySnapshot) -> Topology {
        let mut t = Topology {
            start_ns: s.start_ns,
            end_ns: s.end_ns,
            ..Topology::default()
        };
        for n in s.nodes {
            t.intern(|| n);
        }
        for (k, acc) in s.edges {
            // A snapshot lists its edges' endpoints; one that does not (written by hand, or
            // torn) keeps its edge, under an endpoint known by its id alone.
            let src = t.index_of(&k.src);
            let dst = t.index_of(&k.dst);
            let service = k.service.as_deref().map_or(NO_SERVICE, |id| t.index_of(id));
            let key = EdgeIndex {
                src,
                dst,
                service,
                protocol: k.protocol,
                port: k.port,
            };
            t.edges.insert(key, acc);
        }
        t
    }

    /// Adds a plugin's flows; endpoints are named at each flow's time. A batch whose columns
    /// disagree in length is malformed: the flows past the shortest column are dropped.
    pub fn add_batch(&mut self, resolver: &Resolver, b: &wit::FlowBatch) {
        if self.named.generation != Some(resolver.generation()) {
            self.named = NamedCache {
                generation: Some(resolver.generation()),
                ..NamedCache::default()
            };
        }
        let s = |i: u32| b.strings.get(i as usize).map(String::as_str).unwrap_or("");
        let (mut ev, mut ob, mut dr) = (0usize, 0usize, 0usize);
        for i in 0..b.protocol.len() {
            let at = b.first_ns[i];
            let ip = |hi: &[u64], lo: &[u64]| wit::Ip {
                hi: hi[i],
                lo: lo[i],
            };
            let src = resolver.name(
                b.client_role[i],
                ip(&b.client_ip_hi, &b.client_ip_lo),
                s(b.client_name[i]),
                at,
            );
            let src = self.endpoint(resolver, src);
            let dst = resolver.name(
                b.server_role[i],
                ip(&b.server_ip_hi, &b.server_ip_lo),
                s(b.server_name[i]),
                at,
            );
            let dst = self.endpoint(resolver, dst);
            let service = if b.service_role[i] != 255 {
                let named = resolver.name(
                    b.service_role[i],
                    ip(&b.service_ip_hi, &b.service_ip_lo),
                    s(b.service_name[i]),
                    at,
                );
                self.endpoint(resolver, named)
            } else {
                NO_SERVICE
            };
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
            let nd = b.drop_count.get(i).copied().unwrap_or(0) as usize;
            let drops = dr..dr + nd;
            dr += nd;
            let judged = b.path_verdict.get(i).and_then(|&c| verdict_word(c));
            let path = judged.map(|(word, _)| {
                let by = wit::Ip {
                    hi: b.rejected_by_hi[i],
                    lo: b.rejected_by_lo[i],
                };
                let by_node = s(b.rejected_by_node[i]);
                let rejected_by = if !by_node.is_empty() {
                    format!("node/{by_node}")
                } else if by.hi == 0 && by.lo == 0 {
                    String::new()
                } else {
                    resolver.entry(resolver.name(4, by, "", at).named).id
                };
                EdgePath {
                    verdict: word.to_string(),
                    last_seen: s(b.path_last_seen[i]).to_string(),
                    missing_at: s(b.path_missing_at[i]).to_string(),
                    rejected_by,
                    drops: drops
                        .map(|j| (s(b.drop_reason[j]).to_string(), b.drop_packets[j]))
                        .collect(),
                    verdicts: [(word.to_string(), 1)].into(),
                }
            });
            let key = EdgeIndex {
                src,
                dst,
                service,
                protocol: b.protocol[i],
                port: b.server_port[i],
            };
            let counters = (
                b.packets[i],
                b.bytes[i],
                b.first_ns[i],
                b.last_ns[i],
                b.confidence[i],
                b.continued[i],
            );
            self.add(key, counters, evidence, observed, path);
        }
    }

    /// The index of the endpoint `found` names, made the first time, with its address.
    fn endpoint(&mut self, resolver: &Resolver, found: Resolved<'_>) -> u32 {
        let index = match self.named.get(found.named) {
            Some(i) => i,
            None => {
                let i = self.intern(|| resolver.entry(found.named));
                self.named.insert(found.named, i);
                i
            }
        };
        if let Some(ip) = found.ip
            && self.addresses.insert((index, ip))
        {
            self.nodes[index as usize].ips.insert(ip.to_string());
        }
        index
    }

    /// The index of the endpoint `id`, added bare (kind unknown, named by its id) if new.
    fn index_of(&mut self, id: &str) -> u32 {
        match self.by_id.get(id) {
            Some(&i) => i,
            None => self.intern(|| NodeEntry {
                id: id.to_string(),
                kind: EndpointKind::Unknown,
                namespace: None,
                name: id.to_string(),
                workload: None,
                node: None,
                ips: BTreeSet::new(),
            }),
        }
    }

    /// The index of the endpoint with `entry`'s id, added if new (two inventory entries
    /// may share an id: a pod recreated under its name is one endpoint, as it was).
    fn intern(&mut self, entry: impl FnOnce() -> NodeEntry) -> u32 {
        let entry = entry();
        if let Some(&i) = self.by_id.get(&entry.id) {
            self.nodes[i as usize].ips.extend(entry.ips);
            return i;
        }
        let i = self.nodes.len() as u32;
        self.by_id.insert(entry.id.clone(), i);
        self.nodes.push(entry);
        i
    }

    fn add<'a>(
        &mut self,
        key: EdgeIndex,
        (packets, bytes, first_ns, last_ns, confidence, continued): (u64, u64, u64, u64, f32, bool),
        evidence: impl Iterator<Item = &'a str>,
        observed: impl Iterator<Item = &'a str>,
        path: Option<EdgePath>,
    ) {
        let acc = self.edges.entry(key).or_insert(EdgeAcc {
            packets: 0,
            bytes: 0,
            first_ns: u64::MAX,
            last_ns: 0,
            evidence: BTreeSet::new(),
            observed_at: BTreeSet::new(),
            confidence: 1.0,
            flows: 0,
            path: None,
        });
        if let Some(p) = path {
            merge_path(&mut acc.path, p, continued && acc.flows > 0);
        }
        acc.packets += packets;
        acc.bytes += bytes;
        acc.first_ns = acc.first_ns.min(first_ns);
        acc.last_ns = acc.last_ns.max(last_ns);
        add_words(&mut acc.evidence, evidence);
        add_words(&mut acc.observed_at, observed);
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

    /// The endpoints by id.
    fn sorted_nodes(&self) -> Vec<NodeEntry> {
        let mut nodes = self.nodes.clone();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes
    }

    /// The edges in the order of their keys (endpoint ids, then protocol and port).
    fn sorted_edges(&self) -> Vec<(EdgeKey, &EdgeAcc)> {
        let id = |i: u32| self.nodes[i as usize].id.clone();
        let mut edges: Vec<(EdgeKey, &EdgeAcc)> = self
            .edges
            .iter()
            .map(|(k, acc)| {
                let key = EdgeKey {
                    src: id(k.src),
                    dst: id(k.dst),
                    service: (k.service != NO_SERVICE).then(|| id(k.service)),
                    protocol: k.protocol,
                    port: k.port,
                };
                (key, acc)
            })
            .collect();
        edges.sort_by(|a, b| a.0.cmp(&b.0));
        edges
    }

    pub fn doc(&self, health: Health) -> TopologyDoc {
        TopologyDoc {
            window: Window {
                start: rfc3339(self.start_ns),
                end: rfc3339(self.end_ns),
            },
            nodes: self.sorted_nodes(),
            edges: self
                .sorted_edges()
                .into_iter()
                .map(|(k, a)| Edge {
                    src: k.src,
                    dst: k.dst,
                    service: k.service,
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
                    path: a.path.clone(),
                })
                .collect(),
            health,
        }
    }
}

/// A name that borrows nothing from the plugin's batch: a cache key that outlives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum InventoryName {
    Pod(usize),
    Service(usize),
    Node(usize),
    External(IpAddr),
    Unknown(IpAddr),
}

impl InventoryName {
    /// None for what the plugin named in words (kept by name).
    fn of(named: Named<'_>) -> Option<InventoryName> {
        Some(match named {
            Named::Pod(i) => InventoryName::Pod(i),
            Named::Service(i) => InventoryName::Service(i),
            Named::InventoryNode(i) => InventoryName::Node(i),
            Named::External(ip) => InventoryName::External(ip),
            Named::Unknown(ip) => InventoryName::Unknown(ip),
            Named::Node(_) | Named::OtherService(..) => return None,
        })
    }
}

/// Adds one flow's path to an edge's: the worse verdict (and where it stopped) shows, drops
/// add up, and a connection is counted in `verdicts` once, by the window it began in (a
/// `continued` flow is one already counted).
fn merge_path(acc: &mut Option<EdgePath>, p: EdgePath, continued: bool) {
    let Some(a) = acc else {
        *acc = Some(p);
        return;
    };
    for (reason, n) in p.drops {
        *a.drops.entry(reason).or_default() += n;
    }
    if !continued {
        for (word, n) in p.verdicts {
            *a.verdicts.entry(word).or_default() += n;
        }
    }
    if severity(&p.verdict) > severity(&a.verdict) {
        a.verdict = p.verdict;
        a.last_seen = p.last_seen;
        a.missing_at = p.missing_at;
        a.rejected_by = p.rejected_by;
    }
}

fn add_words<'a>(set: &mut BTreeSet<String>, words: impl Iterator<Item = &'a str>) {
    for w in words {
        if !set.contains(w) {
            set.insert(w.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(packets: u64) -> EdgeAcc {
        EdgeAcc {
            packets,
            bytes: packets * 100,
            first_ns: 1,
            last_ns: 2,
            evidence: ["flannel:vxlan".to_string()].into(),
            observed_at: BTreeSet::new(),
            confidence: 1.0,
            flows: 1,
            path: None,
        }
    }

    fn key(src: &str, dst: &str, service: Option<&str>) -> EdgeKey {
        EdgeKey {
            src: src.into(),
            dst: dst.into(),
            service: service.map(str::to_string),
            protocol: 6,
            port: 80,
        }
    }

    #[test]
    fn a_snapshot_restores_the_same_document_and_keeps_edges_whose_endpoints_it_lacks() {
        let pod = |id: &str| NodeEntry {
            id: id.into(),
            kind: EndpointKind::Pod,
            namespace: Some("default".into()),
            name: id.rsplit('/').next().unwrap().into(),
            workload: None,
            node: Some("n1".into()),
            ips: ["10.0.0.1".to_string()].into(),
        };
        let snapshot = TopologySnapshot {
            nodes: vec![pod("pod/default/b"), pod("pod/default/a")],
            edges: vec![
                (key("pod/default/a", "pod/default/b", None), acc(3)),
                // Its service is not among the nodes: the edge stays, the service is bare.
                (
                    key(
                        "pod/default/a",
                        "pod/default/b",
                        Some("service/default/web"),
                    ),
                    acc(5),
                ),
            ],
            start_ns: 1,
            end_ns: 2,
        };
        let restored = Topology::restore(snapshot);
        let doc = restored.doc(Health::default());
        let ids: Vec<&str> = doc.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            ["pod/default/a", "pod/default/b", "service/default/web"]
        );
        assert_eq!(doc.nodes[2].kind, EndpointKind::Unknown);
        let packets: Vec<u64> = doc.edges.iter().map(|e| e.packets).collect();
        assert_eq!(packets, [3, 5], "ordered by key: no service first");
        // And round again: the same document.
        let again = Topology::restore(restored.snapshot()).doc(Health::default());
        assert_eq!(again, doc);
    }
}
