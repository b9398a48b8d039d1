//! What went wrong or was lost, for the topology's `health`: each plugin's counters, what the
//! sources could not read (drops by reason, per-file errors) and, live, each node's probe
//! counters. Sources report into it the same way in every mode ([`HealthSource`]), and the
//! pipeline adds the plugins' health ([`crate::pipeline::Pipeline::doc`]).

use crate::plugins::PluginHealth;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Health {
    pub plugins: BTreeMap<String, PluginHealth>,
    /// What sources could not process, by reason (malformed packets, truncated files, ...).
    pub drops: BTreeMap<String, u64>,
    /// Per-file or per-source problems, in words.
    pub errors: Vec<String>,
    /// What is ambiguous without being lost (two pods holding one address at once), in words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Live capture: each node's probe counters.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub probes: BTreeMap<String, ProbeCounters>,
    /// Live capture: the packets the kernel dropped in the watched nodes, by node and reason,
    /// and the drop program's own counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_drops: Option<KernelDropHealth>,
    /// Cluster mode: the aggregator's windows and what it could not merge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<AggregateHealth>,
    /// The inventory, when it follows the Kubernetes API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory: Option<InventoryHealth>,
    /// The config file, when it is re-read while running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigHealth>,
}

/// `health.kernel_drops`: the `kfree_skb` program's work since it was loaded.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct KernelDropHealth {
    /// Drops recorded, by node and reason ("NETFILTER_DROP"); benign reasons are not kept.
    pub nodes: BTreeMap<String, BTreeMap<String, u64>>,
    /// `kfree_skb` events the program ran for, anywhere on the host, for any reason.
    pub events: u64,
    /// Events in a watched node for a reason kept.
    pub matched: u64,
    /// Matched drops lost: the ring buffer was full, the headers could not be read, or they
    /// did not decode (also in `health.drops`).
    pub ringbuf_full: u64,
    pub unreadable: u64,
    pub undecodable: u64,
    /// Matched drops that lost nothing, once decoded (an echo reply a raw socket took before
    /// the ICMP layer freed it): not recorded.
    pub benign: u64,
    /// The program's runs and run time from `bpf_stats` (zero unless `agent.bpf_stats`).
    pub program_runs: u64,
    pub program_run_ns: u64,
}

/// `health.config`: the config file re-read while running (SIGHUP, or its changes).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ConfigHealth {
    pub file: String,
    /// New versions applied.
    pub reloads: u64,
    /// New versions refused (a problem in the file, or a plugin that did not start): the
    /// running config went on.
    pub refused: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// `health.inventory` when the inventory follows the API.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct InventoryHealth {
    pub source: String,
    /// Every kind listed at least once.
    pub synced: bool,
    /// Per kind ("v1 Pod"): objects held, events, lists after the first, errors.
    pub kinds: BTreeMap<String, KindHealth>,
    /// Deleted pods kept to name their addresses a while longer.
    pub pods_retained: u64,
    /// Deleted pods forgotten after `retain_deleted_secs`.
    pub pods_forgotten: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One kind's watch in `health.inventory.kinds`.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct KindHealth {
    pub objects: u64,
    pub events: u64,
    /// Lists after the first: an expired watch (410 Gone) or a failure to resume.
    pub relists: u64,
    pub errors: u64,
    /// Objects the reader refused (a pod without a name, an address that is not one).
    pub unreadable: u64,
}

/// The aggregator's view: windows written, batches that came too late or twice, messages it
/// could not read, nodes that went silent.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct AggregateHealth {
    pub windows_written: u64,
    /// Batches (and their observations) whose window was written before they arrived:
    /// counted, not merged.
    pub late_batches: u64,
    pub late_observations: u64,
    /// Copies of batches already held (a re-send JetStream did not de-duplicate).
    pub duplicate_batches: u64,
    /// Messages that are no observation batch of this version, by reason.
    pub bad_messages: BTreeMap<String, u64>,
    /// Nodes not heard from for longer than `max_lateness_secs`.
    pub stale_nodes: Vec<String>,
    /// Seconds since each node's last batch.
    pub silent_secs: BTreeMap<String, f64>,
    /// Batches waiting for their window.
    pub held_batches: u64,
}

impl Health {
    /// Counts `n` more of what could not be processed for `reason` (nothing when `n` is 0).
    pub fn drop(&mut self, reason: impl Into<String>, n: u64) {
        if n > 0 {
            *self.drops.entry(reason.into()).or_default() += n;
        }
    }

    /// A problem in words, logged once here.
    pub fn error(&mut self, e: impl Into<String>) {
        let e = e.into();
        tracing::warn!("{e}");
        self.errors.push(e);
    }
}

/// A source that tells what it could not read: the replay's files, the live probes.
pub trait HealthSource {
    fn report(&self, health: &mut Health);
}

/// What a probe could not record, and what it saw, since load.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ProbeCounters {
    pub packets: u64,
    pub ringbuf_full: u64,
    pub map_full: u64,
    pub parse_failed: u64,
    pub not_ip: u64,
    /// Packets that opened another connection on a flow's key but were added to the earlier
    /// connection's record (its key in the shared hash map, not the per-CPU cache).
    pub reopen_merged: u64,
    /// New-flow events read from the ring buffer: one per flow, interface and interval, and
    /// one more for each further CPU whose flow cache takes the flow (each CPU's cache sees
    /// its first packet of a flow as new; the hash map behind them is shared).
    pub new_flow_events: u64,
    /// Runs of both probes and their total time, from the kernel's `bpf_stats` (zero unless
    /// `agent.bpf_stats` is on): `program_run_ns / program_runs` is the cost per packet.
    pub program_runs: u64,
    pub program_run_ns: u64,
}

impl ProbeCounters {
    /// The probe's losses as drops, and its counters under its node.
    pub fn report(&self, node: &str, health: &mut Health) {
        for (what, v) in [
            ("ring buffer full (new-flow events lost)", self.ringbuf_full),
            ("flow map full (packets not recorded)", self.map_full),
            ("headers unreadable", self.parse_failed),
            (
                "connections merged (a reused 5-tuple's new connection added to the old one's record)",
                self.reopen_merged,
            ),
        ] {
            // Listed even at zero: an operator sees each kind of loss is watched.
            health.drops.insert(format!("probe {node}: {what}"), v);
        }
        health.probes.insert(node.to_string(), self.clone());
    }
}
