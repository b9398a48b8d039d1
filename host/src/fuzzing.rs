//! What the fuzzers feed (`fuzz/`, `./x fuzz`): each function takes arbitrary bytes through
//! one of the inputs cniscope reads from outside, and panics only where the code is wrong
//! (an input may be refused, never crash, hang or be half-trusted). The test suite runs them
//! on the seed corpora and on every input a fuzzer ever found (`fuzz/regressions/`).

use crate::cluster::wire::NodeBatch;
use crate::inventory::{Inventory, kubectl};
use crate::plugins::bindings::wit;
use crate::plugins::convert;
use crate::sources::decode::Decoding;
use crate::sources::replay::{CaptureSpec, Replay};
use crate::topology::Topology;
use crate::topology::resolve::Resolver;
use std::path::Path;

/// A capture file (pcap or pcapng, any link type) through the readers and the packet
/// decoder, windows and all. A malformed packet is counted, a malformed file ends with an
/// error in the stats; nothing panics.
pub fn capture(data: &[u8]) {
    let spec: CaptureSpec = "node-a/eth0=fuzz.pcap".parse().expect("a valid spec");
    let Ok(mut replay) = Replay::from_bytes(
        vec![(spec, data.to_vec())],
        Decoding::default(),
        1_000_000_000,
    ) else {
        return;
    };
    let mut seen = 0u64;
    replay.run(|_, obs, _| seen += obs.len() as u64);
    // Every observation comes from a packet that was read.
    assert!(
        seen <= replay.stats.observed,
        "{seen} observations from {} packets",
        replay.stats.observed
    );
}

/// A config file through the parser and every section's checks.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(problems) = crate::config::parse(&text, Path::new("/nonexistent")) {
        assert!(!problems.is_empty(), "refused without a problem");
        for p in problems {
            assert!(p.line >= 1 && p.column >= 1, "{p:?}");
        }
    }
}

/// A kubectl dump through the inventory reader, and the address history built from it.
pub fn inventory(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(inv) = kubectl::from_value(&value) {
        let history = crate::inventory::history::IpHistory::new(&inv);
        let _ = history.shared_by_pods();
    }
}

/// A message on a cluster-mode observation subject through the wire decoder; what decodes
/// encodes back to the same batch.
pub fn wire(data: &[u8]) {
    if let Ok(batch) = NodeBatch::decode(data) {
        let again = NodeBatch::decode(&batch.encode()).expect("an encoded batch decodes");
        assert_eq!(again.encode(), batch.encode());
        let mut points = crate::sources::aggregate::PointTable::default();
        let _ = batch.into_observations(&mut points);
    }
}

/// Reads the fuzzer's bytes as the columns of a flow batch a plugin returned.
struct Columns<'a>(&'a [u8]);

impl Columns<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self
            .0
            .split_first()
            .map(|(b, r)| (*b, r))
            .unwrap_or((0, &[]));
        self.0 = rest;
        b
    }
    fn list<T>(&mut self, mut one: impl FnMut(&mut Self) -> T) -> Vec<T> {
        let n = self.byte() as usize % 8;
        (0..n).map(|_| one(self)).collect()
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.byte()))
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(std::array::from_fn(|_| self.byte()))
    }
}

/// A plugin's flow batch, columns and all made up: the host's check refuses what breaks the
/// contract, and what it lets through is added to a topology without a panic.
pub fn flows(data: &[u8]) {
    let mut c = Columns(data);
    let b = wit::FlowBatch {
        strings: c.list(|c| format!("s{}", c.byte())),
        client_role: c.list(Columns::byte),
        client_ip_hi: c.list(Columns::u64),
        client_ip_lo: c.list(Columns::u64),
        client_name: c.list(|c| c.byte() as u32),
        server_role: c.list(Columns::byte),
        server_ip_hi: c.list(Columns::u64),
        server_ip_lo: c.list(Columns::u64),
        server_name: c.list(|c| c.byte() as u32),
        service_role: c.list(Columns::byte),
        service_ip_hi: c.list(Columns::u64),
        service_ip_lo: c.list(Columns::u64),
        service_name: c.list(|c| c.byte() as u32),
        protocol: c.list(Columns::byte),
        server_port: c.list(|c| u16::from(c.byte())),
        packets: c.list(Columns::u64),
        bytes: c.list(Columns::u64),
        first_ns: c.list(Columns::u64),
        last_ns: c.list(Columns::u64),
        confidence: c.list(|c| f32::from_bits(c.u32())),
        evidence_count: c.list(|c| c.byte() % 4),
        evidence: c.list(|c| c.byte() as u32),
        observed_count: c.list(|c| u16::from(c.byte() % 4)),
        observed_at: c.list(|c| c.byte() as u32),
        continued: c.list(|c| c.byte() & 1 == 1),
        connection: c.list(Columns::u64),
        path_verdict: c.list(|c| c.byte() % 7),
        path_last_seen: c.list(|c| c.byte() as u32),
        path_missing_at: c.list(|c| c.byte() as u32),
        rejected_by_hi: c.list(Columns::u64),
        rejected_by_lo: c.list(Columns::u64),
        rejected_by_node: c.list(|c| c.byte() as u32),
        drop_count: c.list(|c| c.byte() % 3),
        drop_reason: c.list(|c| c.byte() as u32),
        drop_packets: c.list(Columns::u64),
    };
    if convert::check_flows(&b).is_ok() {
        let mut topology = Topology::default();
        topology.add_batch(&Resolver::new(Inventory::default()), &b);
    }
}
