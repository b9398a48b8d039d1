//! Cluster mode: one agent per node publishes its observations to NATS JetStream; one
//! aggregator consumes every node's, assembles windows across nodes by event time, runs the
//! plugins and writes the topology. Views that recover the truth live on different nodes
//! (Flannel's client veth on node A, the gateway-SNATed packet on node B's veth); they meet
//! here.
//!
//! On the broker:
//! - stream [`STREAM`] (file storage, de-duplication window [`DEDUP_WINDOW`]) over
//!   `cniscope.obs.>`; each agent publishes each node's interval on
//!   `cniscope.obs.<node>` ([`obs_subject`]), in chunks of at most [`CHUNK_OBSERVATIONS`]
//!   observations, each with the message ID `<node>.<agent>.<interval>.<chunk>`, so a batch
//!   re-sent after a lost acknowledgement is stored once;
//! - the aggregator's durable pull consumer [`CONSUMER`], acknowledging a batch only after the
//!   window that holds it is written (see `aggregate.rs` and ARCHITECTURE.md);
//! - the topology so far, on core NATS subject [`TOPOLOGY_SUBJECT`], each time windows are
//!   written.

pub mod windows;
pub mod wire;

#[cfg(feature = "cluster")]
pub mod aggregate;
#[cfg(feature = "cluster")]
pub mod nats;
#[cfg(all(feature = "cluster", feature = "live"))]
pub mod publish;

use std::time::Duration;

pub const STREAM: &str = "CNISCOPE_OBS";
pub const OBS_SUBJECTS: &str = "cniscope.obs.>";
pub const CONSUMER: &str = "cniscope-aggregate";
pub const TOPOLOGY_SUBJECT: &str = "cniscope.topology";
/// Observations per message: well under NATS's default 1 MiB payload limit (a few tens of
/// bytes each).
pub const CHUNK_OBSERVATIONS: usize = 8192;
/// How long JetStream remembers a message ID.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(600);

/// `cniscope.obs.<node>`, the node name made a valid subject (NATS subjects have no spaces,
/// `*` or `>`; the node name travels in the batch itself).
pub fn obs_subject(node: &str) -> String {
    let token: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("cniscope.obs.{}", token.trim_matches('.'))
}

/// The message ID of a batch: its identity, for JetStream's de-duplication.
pub fn message_id(b: &wire::NodeBatch) -> String {
    format!("{}.{:x}.{}.{}", b.node, b.agent, b.window, b.chunk)
}
