//! Packets -> observations: one observation per flow direction per capture point per window.

use super::decode::{Decoded, GeneveOpt, L3L4, fp};
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
    flows: HashMap<FlowKey, Observation, foldhash::fast::RandomState>,
}

impl Aggregator {
    pub fn add(&mut self, point: u16, d: &Decoded, ts_ns: u64) {
        // The key alone on the per-packet path; the rest only for a flow's first packet.
        let key = FlowKey::of(point, d);
        let obs = self
            .flows
            .entry(key)
            .or_insert_with(|| Observation::first(key, d, ts_ns));
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

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Everything aggregated so far, in a stable order (first seen, then key), and resets.
    pub fn drain(&mut self) -> Vec<Observation> {
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
            (k.outer_src_port, k.outer_dst_port),
        )
    });
}
