//! `cniscope aggregate`: every node's observations from JetStream, assembled into windows by
//! event time (`windows.rs`), through the plugins, into one topology.
//!
//! **The ack rule.** A batch is acknowledged only after the window that holds it is written:
//! first the checkpoint (the topology so far, the window's number and the identities of its
//! batches), then the output file, then the acknowledgements. Killed at any moment, the
//! aggregator restarts from its checkpoint: JetStream redelivers every batch not
//! acknowledged; those of the checkpoint's last window are recognised by identity and only
//! acknowledged (nothing counted twice), the others are assembled again (nothing lost).

use super::nats::{self, NatsError};
use super::windows::{BatchId, NodeState, Placement, WindowCounters, Windows};
use super::wire::{NodeBatch, WireError};
use super::{CONSUMER, TOPOLOGY_SUBJECT};
use crate::config::{AggregateSettings, NatsSettings, Settings};
use crate::health::{AggregateHealth, Health};
use crate::modes::load_inventory;
use crate::pipeline::Pipeline;
use crate::plugins::{PluginEngine, PluginError};
use crate::sinks::{Format, render, replace_file};
use crate::sources::aggregate::{PointTable, sort_observations};
use crate::topology::{TopologyDoc, TopologySnapshot};
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AggregateError {
    #[error("loading the inventory: {0}")]
    Inventory(#[from] crate::inventory::kubectl::InventoryError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Follow(#[from] crate::inventory::FollowError),
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// The checkpoint could not be read or written: going on would lose or repeat counts.
    #[error("checkpoint {path}: {detail}")]
    Checkpoint { path: String, detail: String },
    #[error("nats consumer {CONSUMER}: {0}")]
    Consumer(String),
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
    #[cfg(feature = "server")]
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
}

/// Bumped when the checkpoint's shape changes.
const CHECKPOINT_VERSION: u32 = 1;

/// What survives a restart.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    last_window: u64,
    /// The batches of every window written since the previous checkpoint.
    batches: BTreeSet<BatchId>,
    topology: TopologySnapshot,
    nodes: BTreeMap<String, NodeState>,
    counters: WindowCounters,
    bad_messages: BTreeMap<String, u64>,
    /// Each plugin's state across windows (WIT `snapshot`), by plugin name, base64 in the
    /// JSON. Absent in checkpoints of earlier releases: the plugins then start empty.
    #[serde(default, with = "base64_states")]
    plugins: BTreeMap<String, Vec<u8>>,
}

/// The plugins' opaque states as base64 strings (a JSON array of numbers is 3-4x larger).
mod base64_states {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        states: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(states.iter().map(|(name, b)| (name, STANDARD.encode(b))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(name, text)| {
                let state = STANDARD
                    .decode(&text)
                    .map_err(|e| serde::de::Error::custom(format!("plugins.{name}: {e}")))?;
                Ok((name, state))
            })
            .collect()
    }
}

/// Batches taken before the windows that may close are written, when more are already
/// fetched (catching up on a backlog): bounds what is held, at most this many chunks.
const MAX_HELD_BATCHES: usize = 64;

/// Messages fetched per request, and how long a request waits for them.
const FETCH_MAX: usize = 1000;
const FETCH_WAIT: Duration = Duration::from_millis(200);

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The aggregator's state between windows.
pub struct Aggregator {
    pipeline: Pipeline,
    points: PointTable,
    windows: Windows<async_nats::jetstream::Message>,
    bad_messages: BTreeMap<String, u64>,
    state_file: PathBuf,
    output_file: Option<PathBuf>,
    /// `[server]`: each window's document is also served.
    #[cfg(feature = "server")]
    server: Option<crate::server::Server>,
}

impl Aggregator {
    /// An aggregator over `pipeline`, assembling windows as `settings` say, listening from now.
    pub fn new(pipeline: Pipeline, settings: &AggregateSettings) -> Aggregator {
        Aggregator {
            pipeline,
            points: PointTable::default(),
            windows: Windows::new(
                settings.interval.as_nanos() as u64,
                settings.max_lateness.as_nanos() as u64,
                now_ns(),
            ),
            bad_messages: BTreeMap::new(),
            state_file: settings.state_file.clone(),
            output_file: settings.output_file.clone(),
            #[cfg(feature = "server")]
            server: None,
        }
    }

    /// Serves every window's document from now on.
    #[cfg(feature = "server")]
    pub fn serve(&mut self, server: crate::server::Server) {
        self.server = Some(server);
    }

    /// Knows these nodes from the start, instead of learning them for `max_lateness` (a
    /// bench, or a fixed set of nodes).
    pub fn expect(&mut self, nodes: &[&str]) {
        self.windows.expect(
            nodes
                .iter()
                .map(|n| (n.to_string(), NodeState::default()))
                .collect(),
        );
    }

    pub fn windows_written(&self) -> u64 {
        self.windows.counters.windows_written
    }

    fn checkpoint(&mut self) -> Result<(), AggregateError> {
        let Some((last_window, batches)) = self.windows.last_written() else {
            return Ok(());
        };
        let c = Checkpoint {
            plugins: self.pipeline.plugin_states(),
            version: CHECKPOINT_VERSION,
            last_window,
            batches: batches.clone(),
            topology: self.pipeline.snapshot(),
            nodes: self.windows.nodes.clone(),
            counters: self.windows.counters.clone(),
            bad_messages: self.bad_messages.clone(),
        };
        let bytes = serde_json::to_vec(&c).map_err(|e| self.checkpoint_error(e.to_string()))?;
        replace_file(&self.state_file, &bytes).map_err(|e| self.checkpoint_error(e.to_string()))
    }

    fn checkpoint_error(&self, detail: String) -> AggregateError {
        AggregateError::Checkpoint {
            path: self.state_file.display().to_string(),
            detail,
        }
    }

    /// Continues from the checkpoint in `state_file`, if there is one.
    pub fn restore(&mut self) -> Result<(), AggregateError> {
        let bytes = match std::fs::read(&self.state_file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.checkpoint_error(e.to_string())),
        };
        let c: Checkpoint =
            serde_json::from_slice(&bytes).map_err(|e| self.checkpoint_error(e.to_string()))?;
        if c.version != CHECKPOINT_VERSION {
            return Err(self.checkpoint_error(format!(
                "version {}, this aggregator writes {CHECKPOINT_VERSION}",
                c.version
            )));
        }
        tracing::info!(window = c.last_window, "resuming from the checkpoint");
        for name in self.pipeline.restore_plugin_states(&c.plugins) {
            // Counted where a plugin's refusal is (its health's errors); a connection that
            // straddles this restart may then be counted at a second place.
            tracing::warn!(plugin = %name, "the plugin starts without its state from the checkpoint");
        }
        self.pipeline.restore(c.topology);
        self.windows.resume(c.last_window, c.batches, c.nodes);
        self.windows.counters = c.counters;
        self.bad_messages = c.bad_messages;
        Ok(())
    }

    /// The topology with the nodes' and the aggregator's health.
    pub fn doc(&self, now: u64) -> TopologyDoc {
        let mut health = Health::default();
        for (node, state) in &self.windows.nodes {
            for (reason, n) in &state.health.drops {
                health.drops.insert(reason.clone(), *n);
            }
            for e in &state.health.errors {
                health.errors.push(format!("{node}: {e}"));
            }
            if let Some(p) = &state.health.probe {
                health.probes.insert(node.clone(), p.clone());
            }
            if !state.health.kernel_drops.is_empty() {
                health
                    .kernel_drops
                    .get_or_insert_with(Default::default)
                    .nodes
                    .insert(node.clone(), state.health.kernel_drops.clone());
            }
        }
        let stale = self.windows.stale(now);
        for node in &stale {
            health.errors.push(format!(
                "node {node} is stale: no batch for longer than max_lateness_secs"
            ));
        }
        health.aggregate = Some(AggregateHealth {
            windows_written: self.windows.counters.windows_written,
            late_batches: self.windows.counters.late_batches,
            late_observations: self.windows.counters.late_observations,
            duplicate_batches: self.windows.counters.duplicate_batches,
            bad_messages: self.bad_messages.clone(),
            stale_nodes: stale,
            silent_secs: self.windows.silence(now),
            held_batches: self.windows.held_batches() as u64,
        });
        self.pipeline.doc(health)
    }

    /// Takes one message, decoded: a batch to assemble, or one to acknowledge at once.
    async fn take(
        &mut self,
        decoded: Result<NodeBatch, WireError>,
        msg: async_nats::jetstream::Message,
        now: u64,
    ) {
        let batch = match decoded {
            Ok(b) => b,
            Err(e) => {
                let reason = match &e {
                    WireError::Magic => "not an observation batch",
                    WireError::Version { .. } => "another wire version",
                    WireError::Body(_) => "body does not decode",
                };
                let seen = self.bad_messages.entry(reason.into()).or_default();
                *seen += 1;
                if *seen == 1 || seen.is_power_of_two() {
                    tracing::error!(subject = %msg.subject, "rejected message ({seen} so far): {e}");
                }
                // Never redelivered: it would fail the same way.
                let _ = msg.ack_with(AckKind::Term).await;
                return;
            }
        };
        match self.windows.offer(batch, msg, now) {
            Placement::Held | Placement::Duplicate => {}
            Placement::AlreadyWritten(m) => ack(m).await,
            Placement::Late(m) => {
                tracing::warn!("a batch arrived after its window was written: counted as late");
                ack(m).await;
            }
        }
    }

    /// Writes every window that may close (all held ones when `force`): each through the
    /// plugins, then one checkpoint, one document and the acknowledgements for all of them.
    /// Live, that is one window at a time; catching up on a backlog, several, so that the
    /// checkpoint and the document (which grow with the topology) are not rewritten for every
    /// window.
    async fn close_windows(
        &mut self,
        client: &async_nats::Client,
        force: bool,
    ) -> Result<(), AggregateError> {
        let now = now_ns();
        let mut handles = Vec::new();
        let mut written = 0;
        while let Some((k, batches, copies)) = self.windows.next_closed(now, force) {
            let mut observations = Vec::new();
            for (b, m) in batches {
                observations.extend(b.into_observations(&mut self.points));
                handles.push(m);
            }
            handles.extend(copies);
            // In time order across the nodes ([`crate::agent::Capture::run`] says why).
            sort_observations(&mut observations);
            let end = self.windows.window_end_ns(k);
            // The plugins run on this worker while the other fetches and decodes what
            // comes next.
            tokio::task::block_in_place(|| self.pipeline.window(&self.points, &observations, end));
            written += 1;
        }
        if written == 0 {
            return Ok(());
        }
        self.checkpoint()?;
        self.windows.checkpointed();
        let doc = self.doc(now);
        #[cfg(feature = "server")]
        if let Some(server) = &self.server {
            server.publish(&doc);
        }
        let json = render(&doc, Format::Json);
        if let Some(path) = &self.output_file
            && let Err(e) = replace_file(path, json.as_bytes())
        {
            tracing::warn!("writing {}: {e}", path.display());
        }
        if let Err(e) = client.publish(TOPOLOGY_SUBJECT, json.into()).await {
            tracing::warn!("publishing the topology: {e}");
        }
        // Acknowledged together: one round trip, not one per batch.
        futures::future::join_all(handles.into_iter().map(ack)).await;
        Ok(())
    }
}

/// A fetch that failed (the broker is away): said on the first failure and then rarely.
fn fetch_failed(count: &mut u64, e: &str) {
    if *count == 0 || (*count).is_power_of_two() {
        tracing::warn!(
            "fetching from {CONSUMER} failed ({} in a row): {e}",
            *count + 1
        );
    }
    *count += 1;
}

/// Acknowledges and waits for the broker to confirm, so a written window is not redelivered.
async fn ack(m: async_nats::jetstream::Message) {
    if let Err(e) = m.double_ack().await {
        // The checkpoint already holds it: a redelivery is recognised and only acknowledged.
        tracing::warn!("acknowledging a batch: {e}");
    }
}

/// What the fetching task hands the assembling loop.
enum Fetched {
    /// A message and its body, decoded (boxed: a batch is large, a failure small).
    Message(Box<(Result<NodeBatch, WireError>, async_nats::jetstream::Message)>),
    /// A fetch failed (the broker is away).
    Failed(String),
}

/// Fetches and decodes messages on its own task, so that the next batches are read while the
/// plugins work on a window. The channel is bounded: a slow aggregator slows the fetching,
/// and what is not fetched stays in the stream.
fn spawn_fetcher(
    consumer: async_nats::jetstream::consumer::PullConsumer,
    tx: tokio::sync::mpsc::Sender<Fetched>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match consumer
                .fetch()
                .max_messages(FETCH_MAX)
                .expires(FETCH_WAIT)
                .messages()
                .await
            {
                Ok(mut messages) => {
                    while let Some(m) = messages.next().await {
                        let (item, failed) = match m {
                            Ok(m) => (
                                Fetched::Message(Box::new((NodeBatch::decode(&m.payload), m))),
                                false,
                            ),
                            Err(e) => (Fetched::Failed(e.to_string()), true),
                        };
                        if tx.send(item).await.is_err() {
                            return;
                        }
                        if failed {
                            break;
                        }
                    }
                }
                Err(e) => {
                    if tx.send(Fetched::Failed(e.to_string())).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    })
}

/// The durable consumer every aggregator instance shares, created when missing.
pub async fn consumer(
    js: &async_nats::jetstream::Context,
    settings: &AggregateSettings,
) -> Result<async_nats::jetstream::consumer::PullConsumer, AggregateError> {
    let stream = nats::observation_stream(js).await?;
    // A batch waits for its window: the interval, the lateness allowed, and slack.
    let ack_wait = settings.interval + settings.max_lateness + Duration::from_secs(60);
    stream
        .get_or_create_consumer(
            CONSUMER,
            pull::Config {
                durable_name: Some(CONSUMER.into()),
                ack_policy: AckPolicy::Explicit,
                ack_wait,
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| AggregateError::Consumer(e.to_string()))
}

/// Assembles what `consumer` delivers until `done` says so, writing every window that
/// closes; then writes what is still held. Needs a multi-threaded runtime (the plugins run
/// in `block_in_place`).
pub async fn consume(
    agg: &mut Aggregator,
    client: &async_nats::Client,
    consumer: async_nats::jetstream::consumer::PullConsumer,
    mut done: impl FnMut(&Aggregator) -> bool,
) -> Result<(), AggregateError> {
    // A few fetches' worth in flight: enough to overlap, bounded in memory.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let fetcher = spawn_fetcher(consumer, tx);
    let mut failed_fetches = 0u64;
    while !done(agg) {
        match tokio::time::timeout(FETCH_WAIT, rx.recv()).await {
            Ok(Some(Fetched::Message(message))) => {
                failed_fetches = 0;
                let (decoded, m) = *message;
                agg.take(decoded, m, now_ns()).await;
            }
            Ok(Some(Fetched::Failed(e))) => fetch_failed(&mut failed_fetches, &e),
            // The fetcher never ends while the channel is open; a tick lets windows close by
            // wall time when nothing arrives.
            Ok(None) | Err(_) => {}
        }
        // With more already fetched, take it first: the windows that close are then written
        // together (see `close_windows`).
        if rx.is_empty() || agg.windows.held_batches() >= MAX_HELD_BATCHES {
            agg.close_windows(client, false).await?;
        }
    }
    fetcher.abort();
    // What was fetched already is assembled too (the rest stays unacknowledged in the
    // stream, redelivered to the next instance).
    rx.close();
    while let Some(item) = rx.recv().await {
        if let Fetched::Message(message) = item {
            let (decoded, m) = *message;
            agg.take(decoded, m, now_ns()).await;
        }
    }
    agg.close_windows(client, true).await?;
    let _ = client.flush().await;
    Ok(())
}

/// Runs until `stop`; then writes what is held and returns the topology.
pub fn run(
    settings: &Settings,
    nats: &NatsSettings,
    stop: &'static AtomicBool,
) -> Result<TopologyDoc, AggregateError> {
    let inventory = load_inventory(&settings.inventories)?;
    let engine = PluginEngine::new(settings.cache_dir.clone())?;
    let mut pipeline = Pipeline::new(&engine, &settings.plugins, inventory.clone())?;
    if settings.watch_plugins {
        pipeline.watch_plugins();
    }
    crate::modes::follow_kubernetes(settings, &mut pipeline, &inventory)?;
    pipeline.watch_config(settings);
    let mut agg = Aggregator::new(pipeline, &settings.aggregate);
    agg.restore()?;
    #[cfg(feature = "server")]
    if let Some(server) = crate::modes::serve(settings)? {
        agg.serve(server);
    }
    // Two workers: one runs the plugins, the other fetches and decodes meanwhile.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(AggregateError::Runtime)?;
    runtime.block_on(async {
        let client = nats::connect(nats, "cniscope-aggregate", stop).await?;
        let js = async_nats::jetstream::new(client.clone());
        let consumer = consumer(&js, &settings.aggregate).await?;
        consume(&mut agg, &client, consumer, |_| {
            stop.load(Ordering::Relaxed)
        })
        .await
    })?;
    Ok(agg.doc(now_ns()))
}
