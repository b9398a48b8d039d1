//! The aggregator's windows: every node's batches, assembled by event time.
//!
//! Window `k` holds the batches whose interval ends in `[k * interval, (k + 1) * interval)`.
//! A node's **watermark** is the end of its last complete interval. Window `k` **closes**:
//! - when every live node's watermark is past its end (a node is live while its watermark is
//!   within `max_lateness` of the newest; at start, only once the nodes are known: restored
//!   from a checkpoint, or after `max_lateness` of listening);
//! - or when the newest watermark is `max_lateness` past its end (a lagging node is late);
//! - or when nothing at all has arrived for `max_lateness` of wall time (every node silent).
//!
//! Lateness is measured in event time, not by the wall clock, so a backlog replayed after a
//! restart or a broker outage assembles as it would have live. A node not heard from for
//! `max_lateness` of wall time is named **stale** in health. A batch for a window already
//! written is **late**: counted, never merged into it. Each batch carries its message's
//! acknowledgement handle `M`, handed back with the window, so the caller acknowledges only
//! what is written.

use super::wire::NodeBatch;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A batch's identity: its node, its agent's instance, interval and chunk.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BatchId {
    pub node: String,
    pub agent: u64,
    pub window: u64,
    pub chunk: u32,
}

impl BatchId {
    pub fn of(b: &NodeBatch) -> BatchId {
        BatchId {
            node: b.node.clone(),
            agent: b.agent,
            window: b.window,
            chunk: b.chunk,
        }
    }
}

/// What the assembler knows of a node.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeState {
    /// The end of its last complete interval (event time, ns).
    pub watermark_ns: u64,
    /// When it was last heard from (wall time, ns).
    pub heard_ns: u64,
    /// Its health as of its last batch.
    pub health: super::wire::NodeHealth,
}

/// Where an offered batch went.
#[derive(Debug, PartialEq, Eq)]
pub enum Placement<M> {
    /// Held for its window.
    Held,
    /// Already part of a written window (a redelivery after a restart): acknowledge it.
    AlreadyWritten(M),
    /// Its window was written without it: counted; acknowledge it.
    Late(M),
    /// The same batch is already held (a re-sent message, or a redelivery while held): its
    /// handle is handed back with the window, to be acknowledged when it is written.
    Duplicate,
}

/// A closed window: its number, its batches with their handles, the handles of copies.
pub type Closed<M> = (u64, Vec<(NodeBatch, M)>, Vec<M>);

/// Counters the assembler keeps, for health.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowCounters {
    pub windows_written: u64,
    pub late_batches: u64,
    pub late_observations: u64,
    pub duplicate_batches: u64,
}

pub struct Windows<M> {
    interval_ns: u64,
    lateness_ns: u64,
    /// The last window written, and the batches of every window written since the last
    /// checkpoint (a redelivery of any of them after a restart is recognised).
    last_written: Option<(u64, BTreeSet<BatchId>)>,
    /// Windows were written since [`checkpointed`](Self::checkpointed) was last called.
    unsaved: bool,
    held: BTreeMap<u64, Vec<(NodeBatch, M)>>,
    held_ids: BTreeMap<BatchId, u64>,
    /// Handles of copies of held batches, acknowledged with their window.
    copies: BTreeMap<u64, Vec<M>>,
    pub nodes: BTreeMap<String, NodeState>,
    pub counters: WindowCounters,
    /// Until then (wall time) the set of nodes is still being learnt: no window closes for
    /// everyone being past it.
    known_from_ns: u64,
    /// The last arrival of any batch (wall time).
    last_arrival_ns: u64,
}

impl<M> Windows<M> {
    /// Windows of `interval_ns`, allowing `lateness_ns`, listening from `now_ns`.
    pub fn new(interval_ns: u64, lateness_ns: u64, now_ns: u64) -> Self {
        Windows {
            known_from_ns: now_ns.saturating_add(lateness_ns),
            last_arrival_ns: now_ns,
            interval_ns: interval_ns.max(1),
            lateness_ns,
            last_written: None,
            unsaved: false,
            held: BTreeMap::new(),
            held_ids: BTreeMap::new(),
            copies: BTreeMap::new(),
            nodes: BTreeMap::new(),
            counters: WindowCounters::default(),
        }
    }

    /// Continues after a checkpoint: the last window written and its batches, and the nodes
    /// known then.
    pub fn resume(
        &mut self,
        window: u64,
        batches: BTreeSet<BatchId>,
        nodes: BTreeMap<String, NodeState>,
    ) {
        self.last_written = Some((window, batches));
        self.expect(nodes);
    }

    /// The nodes to wait for, known beforehand: windows may close as soon as they are all
    /// past.
    pub fn expect(&mut self, nodes: BTreeMap<String, NodeState>) {
        if !nodes.is_empty() {
            self.nodes = nodes;
            self.known_from_ns = 0;
        }
    }

    pub fn last_written(&self) -> Option<(u64, &BTreeSet<BatchId>)> {
        self.last_written.as_ref().map(|(k, ids)| (*k, ids))
    }

    /// The window a batch belongs to: the one its interval ends in.
    pub fn window_of(&self, b: &NodeBatch) -> u64 {
        b.end_ns.saturating_sub(1) / self.interval_ns
    }

    pub fn window_end_ns(&self, k: u64) -> u64 {
        (k + 1).saturating_mul(self.interval_ns)
    }

    /// Takes a batch that arrived at wall time `now_ns`.
    pub fn offer(&mut self, batch: NodeBatch, handle: M, now_ns: u64) -> Placement<M> {
        let k = self.window_of(&batch);
        let id = BatchId::of(&batch);
        self.last_arrival_ns = self.last_arrival_ns.max(now_ns);
        let node = self.nodes.entry(batch.node.clone()).or_default();
        node.heard_ns = node.heard_ns.max(now_ns);
        if batch.last {
            node.watermark_ns = node.watermark_ns.max(batch.end_ns);
        }
        node.health = batch.health.clone();
        if let Some((written, ids)) = &self.last_written
            && k <= *written
        {
            if ids.contains(&id) {
                return Placement::AlreadyWritten(handle);
            }
            self.counters.late_batches += 1;
            self.counters.late_observations += batch.observations.len() as u64;
            return Placement::Late(handle);
        }
        if let Some(&at) = self.held_ids.get(&id) {
            self.counters.duplicate_batches += 1;
            self.copies.entry(at).or_default().push(handle);
            return Placement::Duplicate;
        }
        self.held_ids.insert(id, k);
        self.held.entry(k).or_default().push((batch, handle));
        Placement::Held
    }

    /// Seconds since each node's last batch, at `now_ns`.
    pub fn silence(&self, now_ns: u64) -> BTreeMap<String, f64> {
        self.nodes
            .iter()
            .map(|(name, n)| (name.clone(), now_ns.saturating_sub(n.heard_ns) as f64 / 1e9))
            .collect()
    }

    /// Nodes not heard from for `max_lateness` at `now_ns`.
    pub fn stale(&self, now_ns: u64) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| now_ns.saturating_sub(n.heard_ns) > self.lateness_ns)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The oldest held window, if it may close at wall time `now_ns` (or `force`, at exit);
    /// see the module's rules. Returns its batches (sorted) and the handles of their copies.
    pub fn next_closed(&mut self, now_ns: u64, force: bool) -> Option<Closed<M>> {
        let (&k, _) = self.held.iter().next()?;
        let end = self.window_end_ns(k);
        let newest = self
            .nodes
            .values()
            .map(|n| n.watermark_ns)
            .max()
            .unwrap_or(0);
        let everyone_past = now_ns >= self.known_from_ns
            && self
                .nodes
                .values()
                .filter(|n| n.watermark_ns.saturating_add(self.lateness_ns) >= newest)
                .all(|n| n.watermark_ns >= end);
        let too_old = newest >= end.saturating_add(self.lateness_ns);
        let silent = now_ns >= self.last_arrival_ns.saturating_add(self.lateness_ns);
        if !(force || everyone_past || too_old || silent) {
            return None;
        }
        let mut batches = self.held.remove(&k).unwrap_or_default();
        batches.sort_by(|a, b| BatchId::of(&a.0).cmp(&BatchId::of(&b.0)));
        let ids: BTreeSet<BatchId> = batches.iter().map(|(b, _)| BatchId::of(b)).collect();
        for id in &ids {
            self.held_ids.remove(id);
        }
        match (&mut self.last_written, self.unsaved) {
            (Some((last, written)), true) => {
                *last = k;
                written.extend(ids);
            }
            _ => self.last_written = Some((k, ids)),
        }
        self.unsaved = true;
        self.counters.windows_written += 1;
        let copies = self.copies.remove(&k).unwrap_or_default();
        Some((k, batches, copies))
    }

    /// The windows written so far are in a checkpoint: the next one written starts a new
    /// set of batches in [`last_written`](Self::last_written).
    pub fn checkpointed(&mut self) {
        self.unsaved = false;
    }

    /// Batches held, not yet written.
    pub fn held_batches(&self) -> usize {
        self.held.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::wire::NodeHealth;

    const S: u64 = 1_000_000_000;

    fn batch(node: &str, window: u64, end_s: u64) -> NodeBatch {
        NodeBatch {
            node: node.into(),
            agent: 1,
            window,
            chunk: 0,
            last: true,
            start_ns: (end_s - 1) * S,
            end_ns: end_s * S,
            points: Vec::new(),
            observations: Vec::new(),
            health: NodeHealth::default(),
        }
    }

    #[test]
    fn a_window_closes_when_every_live_node_is_past_it_or_it_is_too_old() {
        // Listening from 100 s, lateness 5 s: the node set is learnt until 105 s.
        let mut w: Windows<u32> = Windows::new(2 * S, 5 * S, 100 * S);
        // Window 50 is [100 s, 102 s).
        assert_eq!(w.offer(batch("a", 0, 101), 1, 100 * S), Placement::Held);
        assert_eq!(w.offer(batch("a", 1, 102), 2, 101 * S), Placement::Held);
        assert!(
            w.next_closed(101 * S, false).is_none(),
            "a is past it, but other nodes may still be unknown"
        );
        assert_eq!(w.offer(batch("b", 0, 101), 3, 102 * S), Placement::Held);
        assert!(w.next_closed(105 * S, false).is_none(), "b is not past it");
        assert_eq!(w.offer(batch("b", 1, 103), 4, 105 * S), Placement::Held);
        let (k, held, _) = w.next_closed(105 * S, false).unwrap();
        assert_eq!(
            (k, held.iter().map(|h| h.1).collect::<Vec<_>>()),
            (50, vec![1, 2, 3])
        );
        // b's batch ending at 103 s is window 51, [102 s, 104 s); a lags at 102 s but is
        // live (within 5 s of the newest, 103 s): the window waits for it.
        assert!(w.next_closed(106 * S, false).is_none());
        // a reports nothing more, b goes on to 109 s: a is more than 5 s behind, no longer
        // holds windows open, and 51 is 5 s older than the newest watermark.
        assert_eq!(w.offer(batch("b", 2, 109), 5, 107 * S), Placement::Held);
        assert_eq!(w.next_closed(107 * S, false).map(|(k, _, _)| k), Some(51));
        // Wall time names a silent node stale.
        assert_eq!(w.stale(108 * S), vec!["a".to_string()]);
    }

    #[test]
    fn a_broker_outage_closes_nothing_and_a_silent_cluster_everything() {
        let mut w: Windows<u32> = Windows::new(S, 10 * S, 0);
        let known = ["a", "b"].map(|n| (n.to_string(), NodeState::default()));
        w.expect(known.into());
        assert_eq!(w.offer(batch("b", 0, 99), 1, 99 * S), Placement::Held);
        assert_eq!(w.offer(batch("a", 0, 99), 2, 99 * S), Placement::Held);
        assert_eq!(w.next_closed(99 * S, false).map(|(k, _, _)| k), Some(98));
        assert_eq!(w.offer(batch("a", 1, 100), 3, 100 * S), Placement::Held);
        // Nothing arrives for 5 s (the broker is away): window 99 waits for b.
        assert!(w.next_closed(105 * S, false).is_none());
        // The backlog arrives, a's next intervals first, b's after: nothing is late.
        for (i, end) in [101, 102, 103].into_iter().enumerate() {
            assert_eq!(
                w.offer(batch("a", 2 + i as u64, end), 4, 106 * S),
                Placement::Held
            );
        }
        assert!(
            w.next_closed(106 * S, false).is_none(),
            "b is live and behind"
        );
        assert_eq!(w.offer(batch("b", 1, 100), 5, 106 * S), Placement::Held);
        assert_eq!(w.next_closed(106 * S, false).map(|(k, _, _)| k), Some(99));
        // Then silence for 10 s: the held windows close.
        assert_eq!(w.next_closed(116 * S, false).map(|(k, _, _)| k), Some(100));
        assert_eq!(w.counters.late_batches, 0);
    }

    #[test]
    fn late_duplicate_and_already_written_batches_are_told_apart() {
        let mut w: Windows<u32> = Windows::new(S, 0, 0);
        let now = 10 * S;
        assert_eq!(w.offer(batch("a", 0, 5), 1, now), Placement::Held);
        assert_eq!(w.offer(batch("a", 0, 5), 2, now), Placement::Duplicate);
        let (_, held, copies) = w.next_closed(now, false).unwrap();
        assert_eq!(
            (held.len(), copies),
            (1, vec![2]),
            "the copy is acknowledged with it"
        );
        // The same batch again (a redelivery): already written, not late.
        assert_eq!(
            w.offer(batch("a", 0, 5), 3, now),
            Placement::AlreadyWritten(3)
        );
        // Another node's batch for the written window: late, counted.
        assert_eq!(w.offer(batch("b", 0, 5), 4, now), Placement::Late(4));
        assert_eq!(w.counters.late_batches, 1);
        assert_eq!(w.counters.duplicate_batches, 1);
    }

    /// Windows written together (catching up) share one checkpoint: a redelivery of any of
    /// their batches after a restart is recognised, not counted late; the next checkpoint's
    /// set starts afresh.
    #[test]
    fn windows_written_together_are_all_recognised_after_a_restart() {
        let known = || ["a"].map(|n| (n.to_string(), NodeState::default())).into();
        let mut w: Windows<u32> = Windows::new(S, 10 * S, 0);
        w.expect(known());
        for (i, end) in [(0, 11), (1, 12), (2, 13)] {
            assert_eq!(w.offer(batch("a", i, end), i as u32, S), Placement::Held);
        }
        assert_eq!(w.next_closed(S, false).map(|(k, _, _)| k), Some(10));
        assert_eq!(w.next_closed(S, false).map(|(k, _, _)| k), Some(11));
        let (last, ids) = w.last_written().unwrap();
        assert_eq!(
            (last, ids.len()),
            (11, 2),
            "both windows' batches, one checkpoint"
        );

        let mut restarted: Windows<u32> = Windows::new(S, 10 * S, 0);
        restarted.resume(last, ids.clone(), known());
        assert_eq!(
            restarted.offer(batch("a", 0, 11), 7, S),
            Placement::AlreadyWritten(7)
        );
        assert_eq!(restarted.counters.late_batches, 0);

        w.checkpointed();
        assert_eq!(w.next_closed(S, false).map(|(k, _, _)| k), Some(12));
        assert_eq!(
            w.last_written().unwrap().1.len(),
            1,
            "a new set after a checkpoint"
        );
    }
}
