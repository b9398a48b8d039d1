//! `cniscope agent`: live capture of this process's nodes, each interval's observations
//! published to JetStream instead of run through the plugins here.
//!
//! The capture loop stays synchronous (the probes are drained on this thread); batches go
//! into a bounded [`Outbox`] that a tokio task empties into JetStream, oldest first, waiting
//! for each acknowledgement. A publish that fails (the broker is down, an acknowledgement is
//! lost) is retried with the same message ID, so JetStream stores it once. What does not fit
//! in the outbox is dropped and counted, and the count travels in the node's later batches
//! (`health.drops` at the aggregator).

use super::nats::{self, NatsError};
use super::wire::{NodeBatch, NodeHealth};
use super::{CHUNK_OBSERVATIONS, message_id, obs_subject};
use crate::agent::{AgentError, Capture};
use crate::config::{NatsSettings, Settings};
use crate::inventory::Inventory;
use crate::pipeline::Pipeline;
use crate::plugins::PluginEngine;
use crate::sources::aggregate::Observation;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PublishError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl From<crate::sources::live::LiveError> for PublishError {
    fn from(e: crate::sources::live::LiveError) -> Self {
        PublishError::Agent(e.into())
    }
}

/// One message waiting for JetStream's acknowledgement.
struct Pending {
    subject: String,
    id: String,
    body: Vec<u8>,
    observations: usize,
}

/// The messages not yet acknowledged, at most `limit` bytes of them.
pub struct Outbox {
    queue: VecDeque<Pending>,
    bytes: usize,
    limit: usize,
    counters: OutboxCounters,
}

/// What the outbox did, cumulative.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxCounters {
    pub published: u64,
    pub retries: u64,
    pub dropped_batches: u64,
    pub dropped_observations: u64,
}

impl Outbox {
    pub fn new(limit: usize) -> Self {
        Outbox {
            queue: VecDeque::new(),
            bytes: 0,
            limit,
            counters: OutboxCounters::default(),
        }
    }

    /// Queues a batch; false (and counted) when it does not fit.
    fn push(&mut self, b: &NodeBatch) -> bool {
        let body = b.encode();
        if self.bytes + body.len() > self.limit {
            self.counters.dropped_batches += 1;
            self.counters.dropped_observations += b.observations.len() as u64;
            return false;
        }
        self.bytes += body.len();
        self.queue.push_back(Pending {
            subject: obs_subject(&b.node),
            id: message_id(b),
            body,
            observations: b.observations.len(),
        });
        true
    }

    pub fn counters(&self) -> OutboxCounters {
        self.counters.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// The agent's own losses as drops, beside the probe's.
fn with_outbox(mut h: NodeHealth, node: &str, c: &OutboxCounters) -> NodeHealth {
    h.drops.insert(
        format!("agent {node}: batches dropped (publish buffer full)"),
        c.dropped_batches,
    );
    h.drops.insert(
        format!("agent {node}: observations dropped (publish buffer full)"),
        c.dropped_observations,
    );
    h
}

/// A random-enough identity for this agent's instance: its batches' IDs differ from a
/// previous run's.
fn instance_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ ((std::process::id() as u64) << 40)
}

/// Runs the agent until `stop`: capture, publish, and at the end wait (at most `drain_for`)
/// for the outbox to empty. Returns the outbox's counters.
pub fn run(
    settings: &Settings,
    nats: &NatsSettings,
    stop: &'static AtomicBool,
    drain_for: Duration,
) -> Result<OutboxCounters, PublishError> {
    let engine = PluginEngine::new(settings.cache_dir.clone()).map_err(AgentError::from)?;
    // The plugins run at the aggregator; here they only say what to capture and decode.
    let plugins = Pipeline::new(&engine, &settings.plugins, Inventory::default())
        .map_err(AgentError::from)?;
    let decoding = plugins.decoding(&settings.decoding);
    let mut capture = Capture::new(settings, &plugins.plugins, decoding)?;
    let outbox = Arc::new(Mutex::new(Outbox::new(nats.buffer_bytes)));
    let capture_done = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(PublishError::Runtime)?;
    let publisher = runtime.spawn(publish_loop(
        nats.clone(),
        outbox.clone(),
        capture_done.clone(),
        stop,
    ));
    let agent = instance_id();
    let mut interval = 0u64;
    let captured = capture.run(stop, |capture, observations, start, end| {
        let counters = outbox.lock().unwrap_or_else(|e| e.into_inner()).counters();
        // Each observation to its node's batch, in one pass.
        let mut by_node: BTreeMap<String, Vec<Observation>> = capture
            .node_names()
            .into_iter()
            .map(|n| (n, Vec::new()))
            .collect();
        for o in observations {
            if let Some(mine) = by_node.get_mut(&capture.points().get(o.key.point).node) {
                mine.push(o);
            }
        }
        for (node, mine) in by_node {
            let h = capture.node_health(&node);
            let health = with_outbox(
                NodeHealth {
                    drops: h.drops,
                    errors: h.errors,
                    probe: h.probes.into_values().next(),
                    kernel_drops: h
                        .kernel_drops
                        .and_then(|k| k.nodes.into_values().next())
                        .unwrap_or_default(),
                },
                &node,
                &counters,
            );
            let mut batches = NodeBatch::chunks(
                &node,
                agent,
                interval,
                (start, end),
                capture.points(),
                &mine,
                &health,
                CHUNK_OBSERVATIONS,
            );
            // Points watched but crossed by nothing travel too: a path verdict tells a point
            // that saw nothing from one nobody watches.
            if let Some(last) = batches.last_mut() {
                last.add_points(capture.watched_points(&node));
            }
            let mut out = outbox.lock().unwrap_or_else(|e| e.into_inner());
            for b in &batches {
                if !out.push(b) {
                    tracing::warn!(
                        node,
                        interval,
                        "publish buffer full: batch dropped (counted)"
                    );
                }
            }
        }
        interval += 1;
        Ok::<(), PublishError>(())
    });
    capture_done.store(true, Ordering::Relaxed);
    // Give the publisher time to empty the outbox, then stop it.
    runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + drain_for;
        while tokio::time::Instant::now() < deadline
            && !outbox.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    publisher.abort();
    let mut out = outbox.lock().unwrap_or_else(|e| e.into_inner());
    let unsent = out.queue.len();
    if unsent > 0 {
        let lost: usize = out.queue.iter().map(|p| p.observations).sum();
        tracing::error!(
            "exiting with {unsent} batches ({lost} observations) not acknowledged by NATS"
        );
        out.counters.dropped_batches += unsent as u64;
        out.counters.dropped_observations += lost as u64;
    }
    captured?;
    Ok(out.counters())
}

/// Empties the outbox into JetStream, oldest first, each message until acknowledged.
async fn publish_loop(
    settings: NatsSettings,
    outbox: Arc<Mutex<Outbox>>,
    capture_done: Arc<AtomicBool>,
    stop: &'static AtomicBool,
) {
    let client = match nats::connect(&settings, "cniscope-agent", stop).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return;
        }
    };
    let js = async_nats::jetstream::new(client);
    let mut failing = 0u64;
    // The stream is created by whichever side starts first.
    while let Err(e) = nats::observation_stream(&js).await {
        if failing.is_multiple_of(30) {
            tracing::error!("{e}");
        }
        failing += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    failing = 0;
    loop {
        let next = {
            let out = outbox.lock().unwrap_or_else(|e| e.into_inner());
            out.queue
                .front()
                .map(|p| (p.subject.clone(), p.id.clone(), p.body.clone()))
        };
        let Some((subject, id, body)) = next else {
            if capture_done.load(Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(body.into())
            .message_id(id.as_str());
        let sent = async {
            let ack = js
                .send_publish(subject, publish)
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(5), sent).await {
            Ok(Ok(_)) => {
                if failing > 0 {
                    tracing::warn!("publishing again after {failing} failed attempts");
                }
                failing = 0;
                let mut out = outbox.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(p) = out.queue.pop_front() {
                    out.bytes -= p.body.len();
                }
                out.counters.published += 1;
            }
            Ok(Err(e)) => {
                retry(&outbox, &mut failing, &e).await;
            }
            Err(_) => retry(&outbox, &mut failing, "no acknowledgement in 5 s").await,
        }
    }
}

async fn retry(outbox: &Mutex<Outbox>, failing: &mut u64, why: &str) {
    if (*failing).is_multiple_of(20) {
        tracing::warn!("publishing to NATS failed ({why}); retrying the same batch");
    }
    *failing += 1;
    outbox
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .counters
        .retries += 1;
    let backoff = Duration::from_millis(100 * (*failing).min(20));
    tokio::time::sleep(backoff).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbox_past_its_limit_drops_and_counts() {
        let b = NodeBatch {
            node: "n".into(),
            agent: 1,
            window: 0,
            chunk: 0,
            last: true,
            start_ns: 0,
            end_ns: 1,
            points: Vec::new(),
            observations: Vec::new(),
            health: NodeHealth::default(),
        };
        let size = b.encode().len();
        let mut out = Outbox::new(size * 2);
        assert!(out.push(&b));
        assert!(out.push(&b));
        assert!(!out.push(&b));
        assert_eq!(out.counters().dropped_batches, 1);
        assert_eq!(out.queue.len(), 2);
    }
}
