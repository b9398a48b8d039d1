//! The benchmarks' workload: the shipped lab capture's real observations, replicated with
//! distinct client ports into as many distinct connections as asked (each replica its own
//! connection, with its own fingerprint). Server ports stay: many connections, few edges, as
//! on a real cluster.

use cniscope::sources::aggregate::{Observation, PointTable};
use cniscope::sources::decode::Decoding;
use cniscope::sources::replay::Replay;
use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `n` observations: the lab's, replicated.
pub fn replicated(n: usize) -> (PointTable, Vec<Observation>) {
    let d = root().join("tests/data/flannel-vxlan");
    let specs: Vec<_> = [
        ("node-a/vethclienta1", "node-a.client-veth.pcap"),
        ("node-a/eth0", "node-a.eth0.pcap"),
        ("node-b/eth0", "node-b.eth0.pcap"),
        ("node-b/vethserverb1", "node-b.server-veth.pcap"),
    ]
    .iter()
    .map(|(p, f)| format!("{p}={}", d.join(f).display()).parse().unwrap())
    .collect();
    let mut r = Replay::open(&specs, Decoding::default(), u64::MAX / 4).unwrap();
    let mut base = Vec::new();
    r.run(|_, obs, _| base.extend(obs));
    let mut out = Vec::with_capacity(n);
    let mut i = 0u32;
    while out.len() < n {
        for o in &base {
            let mut o = o.clone();
            // Clients' ephemeral ports (Linux's 32768..61000) move; servers' stay.
            let shift = |p: u16| {
                if p >= 32768 {
                    32768 + ((p as u32 + i * 7) % 28232) as u16
                } else {
                    p
                }
            };
            o.key.src_port = shift(o.key.src_port);
            o.key.dst_port = shift(o.key.dst_port);
            o.fingerprint = o.fingerprint.wrapping_add(i.wrapping_mul(2_654_435_761));
            out.push(o);
            if out.len() == n {
                break;
            }
        }
        i += 1;
    }
    (r.points, out)
}
