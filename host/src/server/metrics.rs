//! `/metrics`: the topology's edges and the health of every part, as Prometheus counters and
//! gauges (prometheus-client, OpenMetrics text). Updated once per window from the document
//! written then; the counters carry the document's totals (they only grow while the process
//! runs, as Prometheus expects of a counter).

use crate::topology::{Edge, TopologyDoc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::atomic::AtomicU64;

/// An edge's labels: the contract's names of its ends (`service` empty without one).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EdgeLabels {
    src: String,
    dst: String,
    service: String,
    protocol: String,
    port: String,
}

impl EdgeLabels {
    fn of(e: &Edge) -> EdgeLabels {
        EdgeLabels {
            src: e.src.clone(),
            dst: e.dst.clone(),
            service: e.service.clone().unwrap_or_default(),
            protocol: e.protocol.clone(),
            port: e.port.to_string(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

type PluginCounter = Family<PluginLabels, Counter>;

pub struct Metrics {
    registry: Registry,
    max_edges: usize,
    edge_packets: Family<EdgeLabels, Counter>,
    edge_bytes: Family<EdgeLabels, Counter>,
    /// The edges given series (the first `max_edges` seen: series that come and go with the
    /// window would break `rate()`).
    exported: HashSet<EdgeLabels>,
    /// Edges of the document left out by the cap, at the last update.
    left_out: u64,
    edges_dropped: Counter,
    plugin: [(&'static str, PluginCounter); 8],
    plugin_running: Family<PluginLabels, Gauge>,
    drops: Family<ReasonLabels, Counter>,
    probe_packets: Family<NodeLabels, Counter>,
    windows: Counter,
    lag: Gauge<f64, AtomicU64>,
    node_stale: Family<NodeLabels, Gauge>,
    node_silent: Family<NodeLabels, Gauge<f64, AtomicU64>>,
    late_observations: Counter,
    pub stream_clients: Gauge,
    pub stream_refused: Counter,
    pub windows_skipped: Counter,
}

/// Raises a counter to `to` (a total read from the document).
fn raise(c: &Counter, to: u64) {
    let now = c.get();
    if to > now {
        c.inc_by(to - now);
    }
}

impl Metrics {
    pub fn new(max_edges: usize) -> Metrics {
        let mut registry = Registry::with_prefix("cniscope");
        let plugin = [
            ("calls", "Calls into the plugin"),
            ("traps", "Traps of the plugin"),
            ("deadline_kills", "Calls stopped at the deadline"),
            ("memory_kills", "Calls stopped at the memory cap"),
            ("restarts", "Restarts after a fault"),
            (
                "observations_lost",
                "Observations the plugin could not handle",
            ),
            ("reloads", "New versions of the plugin swapped in"),
            (
                "flows_refused",
                "Flows in batches that broke the contract's rules",
            ),
        ]
        .map(|(name, help)| {
            let f = PluginCounter::default();
            registry.register(format!("plugin_{name}"), help, f.clone());
            (name, f)
        });
        let m = Metrics {
            max_edges,
            edge_packets: Family::default(),
            edge_bytes: Family::default(),
            exported: HashSet::new(),
            left_out: 0,
            edges_dropped: Counter::default(),
            plugin,
            plugin_running: Family::default(),
            drops: Family::default(),
            probe_packets: Family::default(),
            windows: Counter::default(),
            lag: Gauge::default(),
            node_stale: Family::default(),
            node_silent: Family::default(),
            late_observations: Counter::default(),
            stream_clients: Gauge::default(),
            stream_refused: Counter::default(),
            windows_skipped: Counter::default(),
            registry,
        };
        let mut m = m;
        let r = &mut m.registry;
        r.register(
            "edge_packets",
            "Packets of an edge of the topology",
            m.edge_packets.clone(),
        );
        r.register(
            "edge_bytes",
            "Bytes of an edge of the topology",
            m.edge_bytes.clone(),
        );
        r.register(
            "metric_edges_dropped",
            "Edges given no series because of [server] max_metric_edges",
            m.edges_dropped.clone(),
        );
        r.register(
            "plugin_running",
            "1 while the plugin runs, 0 once disabled",
            m.plugin_running.clone(),
        );
        r.register(
            "drops",
            "What the sources could not record or read, by reason",
            m.drops.clone(),
        );
        r.register(
            "probe_packets",
            "Packets a node's probes saw",
            m.probe_packets.clone(),
        );
        r.register("windows", "Windows processed", m.windows.clone());
        r.register(
            "window_lag_seconds",
            "From a window's end to its document being written",
            m.lag.clone(),
        );
        r.register(
            "node_stale",
            "Cluster mode: 1 while a node has sent nothing for longer than max_lateness_secs",
            m.node_stale.clone(),
        );
        r.register(
            "node_silent_seconds",
            "Cluster mode: seconds since a node's last batch",
            m.node_silent.clone(),
        );
        r.register(
            "late_observations",
            "Cluster mode: observations that came after their window was written",
            m.late_observations.clone(),
        );
        r.register(
            "stream_clients",
            "Clients following /api/edges/stream",
            m.stream_clients.clone(),
        );
        r.register(
            "stream_refused",
            "Stream clients refused at [server] max_stream_clients",
            m.stream_refused.clone(),
        );
        r.register(
            "windows_skipped",
            "Documents the server had no time to take (the next one carries their traffic)",
            m.windows_skipped.clone(),
        );
        m
    }

    /// Takes the document written after a window, `lag_secs` after the window's end.
    pub fn update(&mut self, doc: &TopologyDoc, lag_secs: f64) {
        let mut left_out = 0;
        for e in &doc.edges {
            let labels = EdgeLabels::of(e);
            if !self.exported.contains(&labels) {
                if self.exported.len() >= self.max_edges {
                    left_out += 1;
                    continue;
                }
                self.exported.insert(labels.clone());
            }
            raise(&self.edge_packets.get_or_create(&labels), e.packets);
            raise(&self.edge_bytes.get_or_create(&labels), e.bytes);
        }
        // The topology only grows, so more left out means new edges refused.
        if left_out > self.left_out {
            self.edges_dropped.inc_by(left_out - self.left_out);
        }
        self.left_out = self.left_out.max(left_out);
        let h = &doc.health;
        for (name, p) in &h.plugins {
            let labels = PluginLabels {
                plugin: name.clone(),
            };
            let values = [
                p.calls,
                p.traps,
                p.deadline_kills,
                p.memory_kills,
                p.restarts,
                p.observations_lost,
                p.reloads,
                p.flows_refused,
            ];
            for ((_, family), v) in self.plugin.iter().zip(values) {
                raise(&family.get_or_create(&labels), v);
            }
            let running = p.state != crate::plugins::PluginState::Disabled;
            self.plugin_running
                .get_or_create(&labels)
                .set(i64::from(running));
        }
        for (reason, n) in &h.drops {
            let labels = ReasonLabels {
                reason: reason.clone(),
            };
            raise(&self.drops.get_or_create(&labels), *n);
        }
        for (node, p) in &h.probes {
            let labels = NodeLabels { node: node.clone() };
            raise(&self.probe_packets.get_or_create(&labels), p.packets);
        }
        self.windows.inc();
        self.lag.set(lag_secs.max(0.0));
        if let Some(a) = &h.aggregate {
            raise(&self.late_observations, a.late_observations);
            for (node, secs) in &a.silent_secs {
                let labels = NodeLabels { node: node.clone() };
                self.node_silent.get_or_create(&labels).set(*secs);
                let stale = a.stale_nodes.contains(node);
                self.node_stale.get_or_create(&labels).set(i64::from(stale));
            }
        }
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}
