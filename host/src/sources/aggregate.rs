//! Packets -> observations: one observation per flow direction per capture point per window.

use super::decode::{Decoded, GeneveOpt, L3L4, fp, ipproto, tcp_flags};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Where packets are observed. `kind` and `direction` use the WIT enum names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CapturePoint {
    pub node: String,
    pub iface: String,
    /// pod-veth, bridge, tunnel, uplink or other.
    pub kind: IfaceKind,
    pub direction: Direction,
    /// At a `kernel-drop` point, the kernel's reason ("NETFILTER_DROP"); "" at an interface.
    pub drop_reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IfaceKind {
    PodVeth,
    Bridge,
    Tunnel,
    Uplink,
    Other,
    /// Not an interface: where the kernel freed packets without delivering them (the drop
    /// program); the point's `iface` is the device they were on.
    KernelDrop,
}

impl IfaceKind {
    /// Guesses the kind from the interface name, the way CNIs name their devices. A plugin's
    /// capture specs override this when they name the interface.
    pub fn guess(iface: &str) -> IfaceKind {
        let starts = |p: &[&str]| p.iter().any(|x| iface.starts_with(x));
        if starts(&["veth", "cali", "lxc"]) {
            IfaceKind::PodVeth
        } else if starts(&["cni", "docker", "br-int", "cbr", "virbr"]) {
            IfaceKind::Bridge
        } else if starts(&[
            "flannel",
            "vxlan",
            "tunl",
            "genev",
            "cilium_vxlan",
            "tun0",
            "flannel0",
        ]) {
            IfaceKind::Tunnel
        } else if starts(&["eth", "ens", "enp", "eno", "br-ex", "bond", "wl"]) {
            IfaceKind::Uplink
        } else {
            IfaceKind::Other
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Ingress,
    Egress,
    Unknown,
}

/// Interns capture points so observations carry a small index.
#[derive(Default, Debug, Clone)]
pub struct PointTable {
    points: Vec<CapturePoint>,
    index: HashMap<CapturePoint, u16>,
}

impl PointTable {
    pub fn intern(&mut self, p: CapturePoint) -> u16 {
        if let Some(i) = self.index.get(&p) {
            return *i;
        }
        // Past 65535 points every new point shares the last slot: cannot happen with real
        // interface counts, and the counters stay correct either way.
        let i = self.points.len().min(u16::MAX as usize) as u16;
        if self.points.len() < u16::MAX as usize {
            self.points.push(p.clone());
        }
        self.index.insert(p, i);
        i
    }

    pub fn get(&self, i: u16) -> &CapturePoint {
        &self.points[i as usize]
    }

    pub fn all(&self) -> &[CapturePoint] {
        &self.points
    }
}

/// The identity of an observation: everything that does not change from packet to packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub point: u16,
    pub src: u128,
    pub dst: u128,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub tunnel: u8,
    pub vni: u32,
    pub outer_src: u128,
    pub outer_dst: u128,
    pub outer_src_port: u16,
    pub outer_dst_port: u16,
}

/// One direction of one flow at one point, over one window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub key: FlowKey,
    pub src_mac: u64,
    pub dst_mac: u64,
    pub outer_src_mac: u64,
    pub outer_dst_mac: u64,
    pub tcp_flags: u8,
    pub fp_kind: u8,
    /// 0, or which later connection on the same key this is within the window (a new
    /// handshake on a 5-tuple already held, a UDP 5-tuple heard again after a silence:
    /// [`fp::opens_another`]). Kept here, in the padding beside the fingerprint, not in the
    /// key: one more byte there made every observation 16 bytes larger.
    pub generation: u8,
    pub fingerprint: u32,
    pub packets: u64,
    pub bytes: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub geneve: Vec<GeneveOpt>,
}

impl FlowKey {
    fn of(point: u16, d: &Decoded) -> FlowKey {
        let (outer, tunnel, vni) = match &d.tunnel {
            Some(t) => (t.outer, t.kind, t.vni),
            None => (L3L4::default(), 0, 0),
        };
        FlowKey {
            point,
            src: d.inner.src,
            dst: d.inner.dst,
            protocol: d.inner.protocol,
            src_port: d.inner.src_port,
            dst_port: d.inner.dst_port,
            tunnel,
            vni,
            outer_src: outer.src,
            outer_dst: outer.dst,
            outer_src_port: outer.src_port,
            outer_dst_port: outer.dst_port,
        }
    }
}

impl Observation {
    /// A new observation from its flow's first packet (counters are added by the caller).
    fn first(key: FlowKey, d: &Decoded, ts_ns: u64) -> Observation {
        let (outer, geneve) = match &d.tunnel {
            Some(t) => (t.outer, t.geneve.clone()),
            None => (L3L4::default(), Vec::new()),
        };
        let (fp_kind, fingerprint) = d.fingerprint();
        Observation {
            key,
            src_mac: d.inner.src_mac,
            dst_mac: d.inner.dst_mac,
            outer_src_mac: outer.src_mac,
            outer_dst_mac: outer.dst_mac,
            tcp_flags: 0,
            fp_kind,
            generation: 0,
            fingerprint,
            packets: 0,
            bytes: 0,
            first_ns: ts_ns,
            last_ns: ts_ns,
            geneve,
        }
    }
}

/// Aggregates decoded packets into observations until drained. Keyed with foldhash (randomly
/// seeded per process, so crafted traffic cannot aim at collisions): SipHash was 7% of a
/// replay's time, hashing a 5-tuple per packet.
#[derive(Default)]
pub struct Aggregator {
    /// By key and generation.
    flows: HashMap<(FlowKey, u8), Observation, foldhash::fast::RandomState>,
    /// Keys that a new handshake (or a UDP silence) split in this window, and
    /// their latest generation: where their packets go now. Empty but for reused 5-tuples.
    reopened: HashMap<FlowKey, u8, foldhash::fast::RandomState>,
    /// Reopenings of a key already split [`MAX_GENERATION`] times, merged into its latest
    /// observation (reported in `health.drops`).
    merged_reopenings: u64,
}

/// The most connections one key keeps apart in one window (a 5-tuple reused 255 times in a
/// window is a scan or a flood, not connections worth telling apart).
pub const MAX_GENERATION: u8 = u8::MAX;

impl Aggregator {
    pub fn add(&mut self, point: u16, d: &Decoded, ts_ns: u64) {
        // The key alone on the per-packet path; the rest only for a flow's first packet.
        let key = FlowKey::of(point, d);
        let mut generation = 0;
        if !self.reopened.is_empty()
            && let Some(&g) = self.reopened.get(&key)
        {
            generation = g;
        }
        let mut obs = self
            .flows
            .entry((key, generation))
            .or_insert_with(|| Observation::first(key, d, ts_ns));
        // Cheap tests first: only handshakes and UDP can open another connection on a key.
        if (d.inner.tcp_flags & tcp_flags::SYN != 0 || d.inner.protocol == ipproto::UDP)
            && obs.packets > 0
        {
            let (kind, value) = d.fingerprint();
            if fp::opens_another(
                d.inner.protocol,
                kind,
                value,
                obs.fp_kind,
                obs.fingerprint,
                obs.tcp_flags,
                (obs.first_ns, obs.last_ns),
                ts_ns,
            ) {
                if generation == MAX_GENERATION {
                    self.merged_reopenings += 1;
                } else {
                    generation += 1;
                    self.reopened.insert(key, generation);
                    obs = self
                        .flows
                        .entry((key, generation))
                        .or_insert_with(|| Observation {
                            generation,
                            ..Observation::first(key, d, ts_ns)
                        });
                }
            }
        }
        // A SYN seen after other packets (out-of-order capture) still gives the ISN.
        if fp::upgrades(d.inner.protocol, d.inner.tcp_flags, obs.fp_kind) {
            (obs.fp_kind, obs.fingerprint) = d.fingerprint();
        }
        obs.tcp_flags |= d.inner.tcp_flags;
        obs.packets += 1;
        obs.bytes += d.inner.ip_len as u64;
        obs.first_ns = obs.first_ns.min(ts_ns);
        obs.last_ns = obs.last_ns.max(ts_ns);
    }

    /// Reopenings merged into an earlier connection's observation because their key was
    /// already split [`MAX_GENERATION`] times in the window.
    pub fn merged_reopenings(&self) -> u64 {
        self.merged_reopenings
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Everything aggregated so far, in a stable order (first seen, then key), and resets.
    pub fn drain(&mut self) -> Vec<Observation> {
        self.reopened.clear();
        let mut out: Vec<Observation> = self.flows.drain().map(|(_, o)| o).collect();
        sort_observations(&mut out);
        out
    }
}

/// The order every source hands observations over in (first seen, then key), so that a
/// source's batches do not depend on hash-map iteration order.
/// The key is whole (every field of the flow key), so the order is total and an unstable
/// sort, which moves these large values less, gives it as well.
pub fn sort_observations(obs: &mut [Observation]) {
    obs.sort_unstable_by_key(|o| {
        let k = &o.key;
        (
            o.first_ns,
            k.point,
            k.src,
            k.dst,
            k.src_port,
            k.dst_port,
            k.protocol,
            (k.tunnel, k.vni, k.outer_src, k.outer_dst),
            (k.outer_src_port, k.outer_dst_port, o.generation),
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::decode::{ipproto, tcp_flags::*};

    /// One TCP packet client:40000 -> server:80 (or back) at one point.
    fn tcp(reply: bool, flags: u8, seq: u32) -> Decoded {
        let (a, b) = (0xffff_0af4_0105u128, 0xffff_0af4_0207u128);
        let (src, dst, sp, dp) = if reply {
            (b, a, 80, 40_000)
        } else {
            (a, b, 40_000, 80)
        };
        Decoded {
            inner: L3L4 {
                src,
                dst,
                protocol: ipproto::TCP,
                src_port: sp,
                dst_port: dp,
                tcp_flags: flags,
                tcp_seq: seq,
                ip_len: 60,
                ..L3L4::default()
            },
            tunnel: None,
            outgoing: None,
        }
    }

    /// (generation, direction is the reply, fingerprint kind, fingerprint, packets) of each
    /// observation drained.
    fn drained(agg: &mut Aggregator) -> Vec<(u8, bool, u8, u32, u64)> {
        agg.drain()
            .iter()
            .map(|o| {
                let k = &o.key;
                (
                    o.generation,
                    k.src_port == 80,
                    o.fp_kind,
                    o.fingerprint,
                    o.packets,
                )
            })
            .collect()
    }

    #[test]
    fn a_new_handshake_on_a_held_5_tuple_starts_another_observation() {
        let mut agg = Aggregator::default();
        let ms = 1_000_000;
        // Connection A: handshake (SYN retransmitted once), data, FIN.
        agg.add(1, &tcp(false, SYN, 100), 0);
        agg.add(1, &tcp(false, SYN, 100), 1_000 * ms);
        agg.add(1, &tcp(true, SYN | ACK, 900), 1_001 * ms);
        agg.add(1, &tcp(false, ACK, 101), 1_002 * ms);
        agg.add(1, &tcp(true, FIN | ACK, 901), 1_003 * ms);
        agg.add(1, &tcp(false, FIN | ACK, 101), 1_004 * ms);
        // Connection B on the same 5-tuple, at the same point, in the same window.
        agg.add(1, &tcp(false, SYN, 5_000), 2_000 * ms);
        agg.add(1, &tcp(true, SYN | ACK, 7_000), 2_001 * ms);
        agg.add(1, &tcp(false, ACK, 5_001), 2_002 * ms);
        agg.add(1, &tcp(true, ACK, 7_001), 2_003 * ms);
        agg.add(1, &tcp(false, ACK, 5_001), 2_004 * ms);
        let mut got = drained(&mut agg);
        got.sort();
        assert_eq!(
            got,
            vec![
                (0, false, fp::TCP_SYN_ISN, 100, 4),
                (0, true, fp::TCP_SYNACK_ISN, 900, 2),
                (1, false, fp::TCP_SYN_ISN, 5_000, 3),
                (1, true, fp::TCP_SYNACK_ISN, 7_000, 2),
            ]
        );
        // A window later the key starts from generation 0 again.
        agg.add(1, &tcp(false, ACK, 5_002), 3_000 * ms);
        assert_eq!(drained(&mut agg), vec![(0, false, fp::TCP_SEQ, 5_002, 1)]);
    }

    #[test]
    fn a_handshake_after_a_closed_connection_without_one_starts_another_observation() {
        let mut agg = Aggregator::default();
        let ms = 1_000_000;
        // The tail of a connection opened before the window, then a new one.
        agg.add(2, &tcp(false, ACK, 50), 0);
        agg.add(2, &tcp(false, RST, 51), ms);
        agg.add(2, &tcp(false, SYN, 9), 2 * ms);
        agg.add(2, &tcp(false, ACK, 10), 3 * ms);
        // A SYN reordered just behind its own connection's first packet is its handshake.
        agg.add(3, &tcp(false, ACK, 10), 0);
        agg.add(3, &tcp(false, SYN, 9), 1_000);
        let mut got = drained(&mut agg);
        got.sort();
        assert_eq!(
            got,
            vec![
                (0, false, fp::TCP_SYN_ISN, 9, 2),
                (0, false, fp::TCP_SEQ, 50, 2),
                (1, false, fp::TCP_SYN_ISN, 9, 2),
            ]
        );
    }

    #[test]
    fn a_udp_tuple_heard_again_after_a_silence_starts_another_observation() {
        let mut agg = Aggregator::default();
        let udp = |id: u16| {
            let mut d = tcp(false, 0, 0);
            d.inner.protocol = ipproto::UDP;
            d.inner.ip_id = Some(id);
            d
        };
        let ms = 1_000_000;
        agg.add(1, &udp(1), 0);
        agg.add(1, &udp(2), 900 * ms);
        agg.add(1, &udp(3), 1_800 * ms);
        // Silent for more than fp::UDP_QUIET_NS.
        agg.add(1, &udp(4), 2_900 * ms);
        agg.add(1, &udp(5), 3_000 * ms);
        let got: Vec<(u8, u64)> = agg
            .drain()
            .iter()
            .map(|o| (o.generation, o.packets))
            .collect();
        assert_eq!(got, vec![(0, 3), (1, 2)]);
    }

    #[test]
    fn a_tuple_reopened_past_the_last_generation_is_merged_and_counted() {
        let mut agg = Aggregator::default();
        for isn in 0..=u32::from(MAX_GENERATION) + 2 {
            agg.add(1, &tcp(false, SYN, isn), u64::from(isn));
        }
        let got = drained(&mut agg);
        assert_eq!(got.len(), usize::from(MAX_GENERATION) + 1);
        assert_eq!(agg.merged_reopenings(), 2);
        assert_eq!(got.iter().map(|g| g.4).sum::<u64>(), 258);
    }
}
