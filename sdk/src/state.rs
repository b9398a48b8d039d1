//! A plugin's state across windows as bytes: what the cluster aggregator checkpoints (WIT
//! `snapshot`/`restore`). For plugins built on [`Stitcher`], the state is where each
//! connection of the last window was counted, so that a connection straddling an aggregator
//! restart is counted at the same place, once.
//!
//! Layout (little-endian): version `u8`, the stitcher's counters (early drains, evicted, time
//! joins: `u64` each), the interfaces named by the places (`u32` count, then node and iface as
//! `u32` length + UTF-8), and the places (`u32` count, then a 5-tuple's digest `u64`, the
//! counting interface's index `u32` (`u32::MAX`: none), the counted 5-tuple's digest `u64`,
//! flags `u8` (bit 0: the client is the 5-tuple's lower end; bit 1: the counting place saw
//! replies; bit 2: an open TCP connection; bit 3: quiet since before the last window), and
//! the client's SYN: `u8` present, `u32` ISN), and (since version 4) the time of its last
//! packet, `u32` milliseconds. Interfaces travel by name: their numbers are an instance's own.
//! Version 3 (without bits 2 and 3 and the time) still reads.

use crate::stitch::{ALREADY_COUNTED, Remembered, Stitcher, TupleDigest, UNKNOWN_MS};
use crate::{PluginError, error};

/// 2: with each place's client end. 3: 5-tuples by digest, with the client's SYN. 4: open
/// and quiet connections.
const VERSION: u8 = 4;
/// The oldest version [`Stitcher::restore`] reads.
const OLDEST_READ: u8 = 3;

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

fn truncated() -> PluginError {
    error("state", "", "the saved state is truncated")
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PluginError> {
        if self.0.len() < n {
            return Err(truncated());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, PluginError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, PluginError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    fn u64(&mut self) -> Result<u64, PluginError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    fn str(&mut self) -> Result<String, PluginError> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| {
            error(
                "state",
                "",
                "the saved state names an interface in bad UTF-8",
            )
        })
    }
}

impl Stitcher {
    /// The state to carry to a new instance: see the module docs.
    pub fn snapshot(&self) -> Vec<u8> {
        let (places, names) = self.last_places();
        let mut w = Writer(Vec::with_capacity(64 + places.len() * 32));
        w.u8(VERSION);
        for c in [self.early_drains, self.evicted, self.time_joins] {
            w.u64(c);
        }
        // The interfaces the places name, each once, numbered in order of appearance.
        let mut used: Vec<u32> = places
            .iter()
            .map(|(_, r)| r.place.0)
            .filter(|&id| id != ALREADY_COUNTED)
            .collect();
        used.sort_unstable();
        used.dedup();
        w.u32(used.len() as u32);
        for id in &used {
            let (node, iface) = names.get(*id as usize).copied().unwrap_or(("", ""));
            w.str(node);
            w.str(iface);
        }
        w.u32(places.len() as u32);
        for (key, r) in &places {
            w.u64(*key);
            w.u32(match r.place.0 {
                ALREADY_COUNTED => u32::MAX,
                id => used.binary_search(&id).unwrap_or(0) as u32,
            });
            w.u64(r.place.1);
            w.u8(u8::from(r.client_lower)
                | (u8::from(r.place_saw_replies) << 1)
                | (u8::from(r.open) << 2)
                | (u8::from(r.quiet) << 3));
            w.u8(u8::from(r.syn.is_some()));
            w.u32(r.syn.unwrap_or(0));
            w.u32(r.last_ms);
        }
        w.0
    }

    /// Takes back [`snapshot`](Self::snapshot)'s state; the stitcher is left as it was when
    /// the state does not read.
    pub fn restore(&mut self, state: &[u8]) -> Result<(), PluginError> {
        if state.is_empty() {
            return Ok(());
        }
        let mut r = Reader(state);
        let version = r.u8()?;
        if !(OLDEST_READ..=VERSION).contains(&version) {
            return Err(error(
                "state",
                "",
                format!("saved state version {version}, this SDK reads {OLDEST_READ} to {VERSION}"),
            ));
        }
        let counters = [r.u64()?, r.u64()?, r.u64()?];
        let mut ifaces = Vec::new();
        for _ in 0..r.u32()? {
            ifaces.push((r.str()?, r.str()?));
        }
        type Place = (TupleDigest, usize, TupleDigest, u8, Option<u32>, u32);
        let mut places: Vec<Place> = Vec::new();
        for _ in 0..r.u32()? {
            let key = r.u64()?;
            let iface = r.u32()? as usize;
            if iface >= ifaces.len() && iface != u32::MAX as usize {
                return Err(error(
                    "state",
                    "",
                    "the saved state names no such interface",
                ));
            }
            let (counted, flags) = (r.u64()?, r.u8()?);
            let syn = (r.u8()? != 0, r.u32()?);
            let last_ms = if version >= 4 { r.u32()? } else { UNKNOWN_MS };
            places.push((key, iface, counted, flags, syn.0.then_some(syn.1), last_ms));
        }
        if !r.0.is_empty() {
            return Err(error("state", "", "the saved state has bytes past its end"));
        }
        // Read whole: now it may change the stitcher.
        let ids: Vec<u32> = ifaces
            .into_iter()
            .map(|(node, iface)| self.iface_id(node, iface))
            .collect();
        let restored: Vec<(TupleDigest, Remembered)> = places
            .into_iter()
            .map(|(key, i, counted, flags, syn, last_ms)| {
                let id = ids.get(i).copied().unwrap_or(ALREADY_COUNTED);
                (
                    key,
                    Remembered {
                        place: (id, counted),
                        client_lower: flags & 1 != 0,
                        syn,
                        place_saw_replies: flags & 2 != 0,
                        open: flags & 4 != 0,
                        quiet: flags & 8 != 0,
                        last_ms,
                    },
                )
            })
            .collect();
        self.set_last_places(restored);
        [self.early_drains, self.evicted, self.time_joins] = counters;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::batch::fp;
    use crate::prelude::*;
    use crate::stitch::ALREADY_COUNTED;
    use crate::testkit::Row;

    fn seen_at(node: &str, iface: &str) -> ObservationBatch {
        BatchBuilder::new()
            .point(node, iface, IfaceKind::PodVeth, Direction::Egress)
            .row(
                Row::flow(6, "10.244.0.5", 40000, "10.244.1.7", 80)
                    .fingerprint(fp::TCP_SEQ, 7)
                    .counters(3, 300),
            )
            .build()
    }

    /// A connection counted at one interface in one window, then a new stitcher given the
    /// first one's state: the next window's view of the connection at another interface is a
    /// late copy already counted, as it is in the first stitcher.
    #[test]
    fn a_restored_stitcher_counts_a_straddling_connection_where_the_first_did() {
        let mut first = Stitcher::default();
        first.add_batch(&seen_at("a", "veth1"));
        assert_eq!(first.drain().len(), 1);
        let state = first.snapshot();

        let mut second = Stitcher::default();
        // An interface interned before the restore must not shift the restored one's number.
        second.add_batch(
            &BatchBuilder::new()
                .point("c", "eth9", IfaceKind::Uplink, Direction::Ingress)
                .row(Row::flow(17, "10.9.9.9", 1, "10.9.9.8", 2))
                .build(),
        );
        second.drain();
        second.restore(&state).unwrap();
        assert_eq!(second.snapshot(), state, "the same state, as read");

        for s in [&mut first, &mut second] {
            s.add_batch(&seen_at("b", "veth2"));
            assert!(s.drain().is_empty(), "a late copy, no second flow");
            assert_eq!(s.late_copies, 1);
        }
        // Without the state, the late copy would be counted again.
        let mut forgetful = Stitcher::default();
        forgetful.add_batch(&seen_at("b", "veth2"));
        assert_ne!(forgetful.drain()[0].counted_at.0, ALREADY_COUNTED);
    }

    #[test]
    fn a_truncated_or_foreign_state_is_refused_and_changes_nothing() {
        let mut s = Stitcher::default();
        s.add_batch(&seen_at("a", "veth1"));
        s.drain();
        let state = s.snapshot();
        let mut fresh = Stitcher::default();
        for bad in [
            state[..state.len() - 1].to_vec(),
            vec![9u8],
            [state.clone(), vec![0]].concat(),
        ] {
            let e = fresh.restore(&bad).unwrap_err();
            assert_eq!(e.code, "state", "{}", e.message);
            assert_eq!(fresh.remembered(), 0);
        }
        assert!(fresh.restore(&[]).is_ok());
    }
}
