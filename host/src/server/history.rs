//! The windows the server keeps: the latest topology document (what `output_file` holds:
//! everything since the start) and, for each of the last `keep` windows, that window's own
//! traffic, the difference between two successive documents. Filters by namespace and pod.

use crate::topology::{Edge, NodeEntry, TopologyDoc, Window};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// What names an edge in the contract: its endpoints, service, protocol and port.
type EdgeId = (String, String, Option<String>, String, u16);

fn id_of(e: &Edge) -> EdgeId {
    (
        e.src.clone(),
        e.dst.clone(),
        e.service.clone(),
        e.protocol.clone(),
        e.port,
    )
}

/// The latest document and the recent windows' own traffic.
pub struct History {
    keep: usize,
    latest: Arc<TopologyDoc>,
    /// Each edge's totals in `latest`, to tell what the next document added.
    totals: HashMap<EdgeId, (u64, u64, u64)>,
    /// Newest last.
    windows: VecDeque<Arc<TopologyDoc>>,
    published: u64,
}

impl History {
    pub fn new(keep: usize) -> History {
        History {
            keep: keep.max(1),
            latest: Arc::default(),
            totals: HashMap::new(),
            windows: VecDeque::new(),
            published: 0,
        }
    }

    /// Takes the document written after a window; returns that window's own traffic: the
    /// edges whose counts grew, with what they grew by (the first document after the start
    /// holds everything until then).
    pub fn push(&mut self, doc: TopologyDoc) -> Arc<TopologyDoc> {
        let start = if self.published == 0 {
            doc.window.start.clone()
        } else {
            self.latest.window.end.clone()
        };
        let mut edges = Vec::new();
        let mut totals = HashMap::with_capacity(doc.edges.len());
        for e in &doc.edges {
            let id = id_of(e);
            let (p, b, f) = self.totals.get(&id).copied().unwrap_or_default();
            let now = (e.packets, e.bytes, e.flows);
            if now != (p, b, f) || !self.totals.contains_key(&id) {
                edges.push(Edge {
                    packets: e.packets.saturating_sub(p),
                    bytes: e.bytes.saturating_sub(b),
                    flows: e.flows.saturating_sub(f),
                    ..e.clone()
                });
            }
            totals.insert(id, now);
        }
        let window = Arc::new(TopologyDoc {
            window: Window {
                start,
                end: doc.window.end.clone(),
            },
            nodes: referenced(&doc.nodes, &edges),
            edges,
            health: doc.health.clone(),
        });
        self.totals = totals;
        self.latest = Arc::new(doc);
        self.windows.push_back(window.clone());
        while self.windows.len() > self.keep {
            self.windows.pop_front();
        }
        self.published += 1;
        window
    }

    /// The latest document (everything since the start).
    pub fn latest(&self) -> Arc<TopologyDoc> {
        self.latest.clone()
    }

    /// Documents taken so far.
    pub fn published(&self) -> u64 {
        self.published
    }

    pub fn keep(&self) -> usize {
        self.keep
    }

    /// The traffic of the last `n` windows (as many as are kept), summed per edge.
    pub fn last(&self, n: usize) -> TopologyDoc {
        let from = self.windows.len().saturating_sub(n);
        let recent: Vec<&Arc<TopologyDoc>> = self.windows.range(from..).collect();
        let mut merged: BTreeMap<EdgeId, Edge> = BTreeMap::new();
        for w in &recent {
            for e in &w.edges {
                match merged.get_mut(&id_of(e)) {
                    Some(m) => {
                        m.packets += e.packets;
                        m.bytes += e.bytes;
                        m.flows += e.flows;
                        m.first_seen = m.first_seen.clone().min(e.first_seen.clone());
                        m.last_seen = m.last_seen.clone().max(e.last_seen.clone());
                        m.evidence.extend(e.evidence.iter().cloned());
                        m.observed_at.extend(e.observed_at.iter().cloned());
                        m.confidence = m.confidence.min(e.confidence);
                    }
                    None => {
                        merged.insert(id_of(e), e.clone());
                    }
                }
            }
        }
        let edges: Vec<Edge> = merged.into_values().collect();
        TopologyDoc {
            window: Window {
                start: recent
                    .first()
                    .map(|w| w.window.start.clone())
                    .unwrap_or_default(),
                end: recent
                    .last()
                    .map(|w| w.window.end.clone())
                    .unwrap_or_default(),
            },
            nodes: referenced(&self.latest.nodes, &edges),
            edges,
            health: self.latest.health.clone(),
        }
    }
}

/// The endpoints `edges` name, in `nodes`' order.
fn referenced(nodes: &[NodeEntry], edges: &[Edge]) -> Vec<NodeEntry> {
    let named: std::collections::HashSet<&str> = edges
        .iter()
        .flat_map(|e| [Some(&e.src), Some(&e.dst), e.service.as_ref()])
        .flatten()
        .map(String::as_str)
        .collect();
    nodes
        .iter()
        .filter(|n| named.contains(n.id.as_str()))
        .cloned()
        .collect()
}

/// `?namespace=` and `?pod=` of the API and the stream: an edge is kept when one of its
/// endpoints (or its service) is in one of the namespaces, and one of its two ends is one of
/// the pods (`NAME` or `NAMESPACE/NAME`). Values of one parameter are alternatives; the two
/// parameters must both hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub namespaces: Vec<String>,
    pub pods: Vec<(Option<String>, String)>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty() && self.pods.is_empty()
    }

    /// A namespace, as Kubernetes allows them (an RFC 1123 label).
    pub fn add_namespace(&mut self, v: &str) -> Result<(), String> {
        if !is_label(v) {
            return Err(format!(
                "namespace={v:?}: a namespace is 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
            ));
        }
        self.namespaces.push(v.to_string());
        Ok(())
    }

    /// `NAME` or `NAMESPACE/NAME`.
    pub fn add_pod(&mut self, v: &str) -> Result<(), String> {
        let (ns, name) = match v.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, v),
        };
        let ok = ns.is_none_or(is_label) && is_subdomain(name);
        if !ok {
            return Err(format!(
                "pod={v:?}: use NAME or NAMESPACE/NAME (lowercase letters, digits, '-' and '.')"
            ));
        }
        self.pods.push((ns.map(str::to_string), name.to_string()));
        Ok(())
    }

    /// The document with only the edges that pass, and the endpoints they name.
    pub fn apply(&self, doc: &TopologyDoc) -> TopologyDoc {
        if self.is_empty() {
            return doc.clone();
        }
        let by_id: HashMap<&str, &NodeEntry> =
            doc.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
        let in_namespace = |id: &str| {
            by_id
                .get(id)
                .and_then(|n| n.namespace.as_deref())
                .is_some_and(|ns| self.namespaces.iter().any(|want| want == ns))
        };
        let is_pod = |id: &str| {
            by_id.get(id).is_some_and(|n| {
                n.kind == crate::topology::EndpointKind::Pod
                    && self.pods.iter().any(|(ns, name)| {
                        *name == n.name
                            && ns
                                .as_ref()
                                .is_none_or(|ns| n.namespace.as_ref() == Some(ns))
                    })
            })
        };
        let edges: Vec<Edge> = doc
            .edges
            .iter()
            .filter(|e| {
                let ends = [
                    Some(e.src.as_str()),
                    Some(e.dst.as_str()),
                    e.service.as_deref(),
                ];
                (self.namespaces.is_empty() || ends.iter().flatten().any(|id| in_namespace(id)))
                    && (self.pods.is_empty() || is_pod(&e.src) || is_pod(&e.dst))
            })
            .cloned()
            .collect();
        TopologyDoc {
            window: doc.window.clone(),
            nodes: referenced(&doc.nodes, &edges),
            edges,
            health: doc.health.clone(),
        }
    }
}

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::EndpointKind;

    fn edge(src: &str, dst: &str, packets: u64) -> Edge {
        Edge {
            src: src.into(),
            dst: dst.into(),
            service: None,
            protocol: "tcp".into(),
            port: 80,
            packets,
            bytes: packets * 100,
            first_seen: "t0".into(),
            last_seen: "t1".into(),
            evidence: Default::default(),
            observed_at: Default::default(),
            confidence: 1.0,
            flows: 1,
            path: None,
        }
    }

    fn pod(ns: &str, name: &str) -> NodeEntry {
        NodeEntry {
            id: format!("pod/{ns}/{name}"),
            kind: EndpointKind::Pod,
            namespace: Some(ns.into()),
            name: name.into(),
            workload: None,
            node: None,
            ips: Default::default(),
        }
    }

    fn doc(end: &str, edges: Vec<Edge>) -> TopologyDoc {
        TopologyDoc {
            window: Window {
                start: "s".into(),
                end: end.into(),
            },
            nodes: vec![pod("a", "x"), pod("a", "y"), pod("b", "z")],
            edges,
            health: Default::default(),
        }
    }

    #[test]
    fn a_window_is_what_grew_and_windows_sum_back() {
        let mut h = History::new(2);
        let w1 = h.push(doc("e1", vec![edge("pod/a/x", "pod/a/y", 3)]));
        assert_eq!(w1.edges[0].packets, 3);
        let w2 = h.push(doc(
            "e2",
            vec![edge("pod/a/x", "pod/a/y", 3), edge("pod/a/x", "pod/b/z", 5)],
        ));
        // The unchanged edge is not in the second window.
        assert_eq!(w2.edges.len(), 1);
        assert_eq!(
            (w2.window.start.as_str(), w2.window.end.as_str()),
            ("e1", "e2")
        );
        let w3 = h.push(doc(
            "e3",
            vec![
                edge("pod/a/x", "pod/a/y", 10),
                edge("pod/a/x", "pod/b/z", 5),
            ],
        ));
        assert_eq!(w3.edges[0].packets, 7);
        // Two windows kept: the second and third.
        let both = h.last(5);
        assert_eq!(both.window.start, "e1");
        let sum: u64 = both.edges.iter().map(|e| e.packets).sum();
        assert_eq!(sum, 12);
        assert_eq!(h.last(1).edges.len(), 1);
        assert_eq!(h.latest().edges.iter().map(|e| e.packets).sum::<u64>(), 15);
    }

    #[test]
    fn filters_keep_what_they_name() {
        let d = doc(
            "e",
            vec![edge("pod/a/x", "pod/a/y", 1), edge("pod/a/x", "pod/b/z", 1)],
        );
        let mut f = Filter::default();
        f.add_namespace("b").unwrap();
        assert_eq!(f.apply(&d).edges.len(), 1);
        assert_eq!(f.apply(&d).nodes.len(), 2);
        let mut f = Filter::default();
        f.add_pod("a/y").unwrap();
        assert_eq!(f.apply(&d).edges[0].dst, "pod/a/y");
        let mut f = Filter::default();
        f.add_pod("x").unwrap();
        f.add_namespace("b").unwrap();
        assert_eq!(f.apply(&d).edges.len(), 1);
        let mut f = Filter::default();
        assert!(f.add_namespace("Bad_NS").is_err());
        assert!(f.add_pod("a/b/c").is_err());
        assert!(f.add_pod("").is_err());
    }
}
