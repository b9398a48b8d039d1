//! Connection stitching, shared by every CNI plugin: joins the observations of one connection
//! made at many points, before and after NAT, into one [`Connection`].
//!
//! Two observations belong to the same connection when
//! - they carry the same 5-tuple in either direction (the same packets seen at another point,
//!   or the replies), or
//! - they carry the same NAT-proof fingerprint (see CNI-RULES.md): Linux NAT rewrites
//!   addresses and ports but keeps TCP sequence numbers and the IPv4 identification, so a
//!   pre-DNAT/SNAT observation and its post-NAT twin share it.
//!
//! Each member is then oriented (client -> server or back) from the handshake (SYN vs SYN+ACK
//! fingerprints), ICMP echo types, or, failing those, which side spoke first.
//!
//! Memory is bounded: a [`Stitcher`] holds at most `max_held` observations; past that the
//! caller drains early (fewer joins, nothing lost) and [`Stitcher::early_drains`] counts it.

use crate::batch::{Obs, Tunnel, batch_rows, fp};
use crate::{Ip, ObservationBatch};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

/// A multiply-rotate hasher (the Fx hash of rustc) for the stitcher's small keys: SipHash's
/// DoS resistance buys nothing here (keys come from our own observations) and costs most of
/// the stitching time, especially inside Wasm.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64);
    }
    fn write_u16(&mut self, i: u16) {
        self.write_u64(i as u64);
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A capture point, interned once per window: observations refer to it by index, so holding
/// an observation allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PointInfo {
    pub node: String,
    pub iface: String,
    /// "node/iface:direction".
    pub label: String,
}

/// An owned copy of what stitching and naming need from one observation.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    /// Index into the window's points ([`Connection::point`]).
    pub point: u32,
    pub src: Ip,
    pub dst: Ip,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub src_mac: u64,
    pub fp_kind: u8,
    pub fingerprint: u32,
    pub packets: u64,
    pub bytes: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub tunnel: Tunnel,
    pub vni: u32,
    pub outer_src: Ip,
    pub outer_dst: Ip,
    pub outer_dst_port: u16,
}

impl Seen {
    /// `point` is the interned index of the observation's capture point.
    pub fn from_obs(o: &Obs<'_>, point: u32) -> Seen {
        Seen {
            point,
            src: o.src_ip(),
            dst: o.dst_ip(),
            src_port: o.src_port(),
            dst_port: o.dst_port(),
            protocol: o.protocol(),
            src_mac: o.src_mac(),
            fp_kind: o.fp_kind(),
            fingerprint: o.fingerprint(),
            packets: o.packets(),
            bytes: o.bytes(),
            first_ns: o.first_ns(),
            last_ns: o.last_ns(),
            tunnel: o.tunnel(),
            vni: o.vni(),
            outer_src: o.outer_src_ip(),
            outer_dst: o.outer_dst_ip(),
            outer_dst_port: o.outer_dst_port(),
        }
    }

    fn is_icmp(&self) -> bool {
        self.protocol == 1 || self.protocol == 58
    }

    /// Ports as they identify a flow: ICMP's type/code differ between request and reply.
    fn flow_ports(&self) -> (u16, u16) {
        if self.is_icmp() {
            (0, 0)
        } else {
            (self.src_port, self.dst_port)
        }
    }

    /// The 5-tuple with its two ends in a fixed order, so both directions share it.
    fn tuple_key(&self) -> (u8, (Ip, u16), (Ip, u16)) {
        let (sp, dp) = self.flow_ports();
        let (a, b) = ((self.src, sp), (self.dst, dp));
        if a <= b {
            (self.protocol, a, b)
        } else {
            (self.protocol, b, a)
        }
    }

    /// A fingerprint strong enough to join on: IPv4 ID 0 (common for DF packets) and payload
    /// hashes are too weak.
    fn join_fingerprint(&self) -> Option<(u8, u8, u32)> {
        match self.fp_kind {
            fp::TCP_SYN_ISN | fp::TCP_SYNACK_ISN | fp::TCP_SEQ => {
                Some((self.protocol, self.fp_kind, self.fingerprint))
            }
            fp::IPV4_ID if self.fingerprint >> 16 != 0 => {
                Some((self.protocol, self.fp_kind, self.fingerprint))
            }
            _ => None,
        }
    }

    /// What the packet itself says about its direction: Some(true) = client -> server.
    fn own_direction(&self) -> Option<bool> {
        match self.fp_kind {
            fp::TCP_SYN_ISN => return Some(true),
            fp::TCP_SYNACK_ISN => return Some(false),
            _ => {}
        }
        if self.is_icmp() {
            // Echo request (8, ICMPv6 128) goes client -> server; echo reply (0, 129) back.
            return match self.src_port {
                8 | 128 => Some(true),
                0 | 129 => Some(false),
                _ => None,
            };
        }
        None
    }
}

/// One connection: its observations, each marked client -> server (`forward`) or not.
#[derive(Clone, Debug)]
pub struct Connection {
    pub members: Vec<Seen>,
    pub forward: Vec<bool>,
    points: Rc<Vec<PointInfo>>,
}

impl Connection {
    /// Where a member was seen.
    pub fn point(&self, m: &Seen) -> &PointInfo {
        &self.points[m.point as usize]
    }

    pub fn forward_members(&self) -> impl Iterator<Item = &Seen> {
        self.members
            .iter()
            .zip(&self.forward)
            .filter(|(_, f)| **f)
            .map(|(m, _)| m)
    }

    pub fn reverse_members(&self) -> impl Iterator<Item = &Seen> {
        self.members
            .iter()
            .zip(&self.forward)
            .filter(|(_, f)| !**f)
            .map(|(m, _)| m)
    }

    /// Counters from one interface only (no double counting): the interface that saw the
    /// most client -> server packets, both directions there. Returns (packets, bytes,
    /// first_ns, last_ns).
    pub fn counters(&self) -> (u64, u64, u64, u64) {
        // Per interface: (forward packets, packets, bytes, first, last).
        type Tally = (u64, u64, u64, u64, u64);
        let mut by_iface: FastMap<(&str, &str), Tally> = FastMap::default();
        for (m, f) in self.members.iter().zip(&self.forward) {
            let p = self.point(m);
            let e = by_iface
                .entry((p.node.as_str(), p.iface.as_str()))
                .or_insert((0, 0, 0, u64::MAX, 0));
            if *f {
                e.0 += m.packets;
            }
            e.1 += m.packets;
            e.2 += m.bytes;
            e.3 = e.3.min(m.first_ns);
            e.4 = e.4.max(m.last_ns);
        }
        let best = by_iface
            .into_iter()
            .max_by(|a, b| (a.1.0, a.1.1, b.0).cmp(&(b.1.0, b.1.1, a.0)))
            .map(|(_, v)| v)
            .unwrap_or((0, 0, 0, 0, 0));
        (best.1, best.2, best.3, best.4)
    }

    /// Every point that saw this connection.
    pub fn points(&self) -> Vec<String> {
        let mut p: Vec<String> = self
            .members
            .iter()
            .map(|m| self.point(m).label.clone())
            .collect();
        p.sort();
        p.dedup();
        p
    }
}

/// Holds a window of observations and stitches them into connections.
pub struct Stitcher {
    held: Vec<Seen>,
    points: Vec<PointInfo>,
    point_ids: FastMap<PointInfo, u32>,
    pub max_held: usize,
    pub early_drains: u64,
}

impl Default for Stitcher {
    fn default() -> Self {
        Stitcher {
            held: Vec::new(),
            points: Vec::new(),
            point_ids: FastMap::default(),
            max_held: 200_000,
            early_drains: 0,
        }
    }
}

struct UnionFind(Vec<usize>);

impl UnionFind {
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0[ra.max(rb)] = ra.min(rb);
        }
    }
}

impl Stitcher {
    pub fn new(max_held: usize) -> Stitcher {
        Stitcher {
            max_held: max_held.max(1),
            ..Stitcher::default()
        }
    }

    /// Holds an observation; returns true when the window is full and the caller should
    /// [`drain`](Self::drain) now.
    pub fn push(&mut self, s: Seen) -> bool {
        self.held.push(s);
        self.held.len() >= self.max_held
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Holds every observation of a batch; returns the connections of any window that filled
    /// up on the way (usually none).
    pub fn add_batch(&mut self, batch: &ObservationBatch) -> Vec<Connection> {
        let mut ids = Vec::with_capacity(batch.points.len());
        for p in &batch.points {
            let dir = match p.direction {
                crate::Direction::Ingress => "ingress",
                crate::Direction::Egress => "egress",
                crate::Direction::Unknown => "any",
            };
            let info = PointInfo {
                node: p.node.clone(),
                iface: p.iface.clone(),
                label: format!("{}/{}:{dir}", p.node, p.iface),
            };
            let next = self.points.len() as u32;
            let id = *self.point_ids.entry(info.clone()).or_insert_with(|| {
                self.points.push(info);
                next
            });
            ids.push(id);
        }
        let mut early = Vec::new();
        for o in batch_rows(batch) {
            let point = ids
                .get(batch.point[o.index()] as usize)
                .copied()
                .unwrap_or(0);
            if self.push(Seen::from_obs(&o, point)) {
                early.extend(self.drain());
            }
        }
        early
    }

    /// Stitches everything held into connections and empties the window.
    pub fn drain(&mut self) -> Vec<Connection> {
        if self.held.len() >= self.max_held {
            self.early_drains += 1;
        }
        let held = std::mem::take(&mut self.held);
        let mut uf = UnionFind((0..held.len()).collect());
        let mut by_tuple = FastMap::default();
        let mut by_fp = FastMap::default();
        for (i, s) in held.iter().enumerate() {
            if let Some(&j) = by_tuple.get(&s.tuple_key()) {
                uf.union(i, j);
            } else {
                by_tuple.insert(s.tuple_key(), i);
            }
            if let Some(k) = s.join_fingerprint() {
                match by_fp.get(&k) {
                    Some(&j) => uf.union(i, j),
                    None => {
                        by_fp.insert(k, i);
                    }
                }
            }
        }
        let mut groups: FastMap<usize, Vec<usize>> = FastMap::default();
        for i in 0..held.len() {
            groups.entry(uf.find(i)).or_default().push(i);
        }
        let mut roots: Vec<usize> = groups.keys().copied().collect();
        roots.sort();
        let mut slots: Vec<Option<Seen>> = held.into_iter().map(Some).collect();
        let points = Rc::new(self.points.clone());
        roots
            .into_iter()
            .map(|r| {
                let members: Vec<Seen> = groups[&r]
                    .iter()
                    .map(|&i| slots[i].take().expect("each member once"))
                    .collect();
                let forward = orient(&members);
                Connection {
                    members,
                    forward,
                    points: points.clone(),
                }
            })
            .collect()
    }
}

/// Orients every member: seeds from what packets say of themselves, then propagates along
/// shared 5-tuples (same source = same direction) and shared fingerprints (same direction).
fn orient(members: &[Seen]) -> Vec<bool> {
    let n = members.len();
    let mut dir: Vec<Option<bool>> = members.iter().map(Seen::own_direction).collect();
    if dir.iter().all(Option::is_none) {
        // Nothing says: the side that spoke first is the client; on a tie, the one talking
        // to the lower (service-like) port.
        let first = (0..n)
            .min_by_key(|&i| {
                (
                    members[i].first_ns,
                    members[i].dst_port > members[i].src_port,
                    i,
                )
            })
            .unwrap_or(0);
        dir[first] = Some(true);
    }
    // Propagate to a fixpoint; n is small (a connection's points), so quadratic is fine.
    let mut changed = true;
    while changed {
        changed = false;
        for i in 0..n {
            let Some(d) = dir[i] else { continue };
            for j in 0..n {
                if dir[j].is_some() {
                    continue;
                }
                let (a, b) = (&members[i], &members[j]);
                let same_tuple = a.tuple_key() == b.tuple_key();
                let same_fp =
                    a.join_fingerprint().is_some() && a.join_fingerprint() == b.join_fingerprint();
                if same_tuple {
                    let same_way = (a.src, a.flow_ports().0) == (b.src, b.flow_ports().0);
                    dir[j] = Some(if same_way { d } else { !d });
                    changed = true;
                } else if same_fp {
                    dir[j] = Some(d);
                    changed = true;
                }
            }
        }
        if !changed && dir.iter().any(Option::is_none) {
            // A member joined by fingerprint kinds that do not propagate: orient it alone.
            if let Some(j) = dir.iter().position(Option::is_none) {
                dir[j] = Some(true);
                changed = true;
            }
        }
    }
    dir.into_iter().map(|d| d.unwrap_or(true)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{BatchBuilder, Row};
    use crate::{Direction, IfaceKind};

    #[test]
    fn dnat_and_snat_views_join_by_fingerprint_and_orient_by_handshake() {
        let b = BatchBuilder::new()
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Ingress)
            .point("b", "flannel.1", IfaceKind::Tunnel, Direction::Ingress)
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Egress)
            // client -> ClusterIP, as the client's veth sees it
            .row(
                Row::flow(6, "10.244.0.5", 40000, "10.96.0.10", 80)
                    .at(0)
                    .fingerprint(fp::TCP_SYN_ISN, 777)
                    .counters(5, 500),
            )
            // after DNAT + SNAT to the gateway, on the other node
            .row(
                Row::flow(6, "10.244.0.0", 40000, "10.244.1.7", 8080)
                    .at(1)
                    .fingerprint(fp::TCP_SYN_ISN, 777)
                    .counters(5, 500),
            )
            // the replies back at the client's veth
            .row(
                Row::flow(6, "10.96.0.10", 80, "10.244.0.5", 40000)
                    .at(2)
                    .fingerprint(fp::TCP_SYNACK_ISN, 9)
                    .counters(4, 900),
            )
            // an unrelated flow
            .row(
                Row::flow(17, "10.244.0.9", 5353, "10.244.1.3", 53)
                    .at(0)
                    .counters(1, 60),
            )
            .build();
        let mut s = Stitcher::default();
        assert!(s.add_batch(&b).is_empty());
        let conns = s.drain();
        assert_eq!(conns.len(), 2);
        let tcp = conns.iter().find(|c| c.members.len() == 3).unwrap();
        assert_eq!(tcp.forward, vec![true, true, false]);
        // Counted at a's veth (both directions), not a second time on b.
        assert_eq!(tcp.counters().0, 9);
        assert_eq!(s.held(), 0);
    }

    #[test]
    fn a_full_window_asks_to_be_drained_and_counts_it() {
        let mut s = Stitcher::new(2);
        let b = BatchBuilder::new()
            .point("a", "eth0", IfaceKind::Uplink, Direction::Ingress)
            .row(Row::flow(17, "10.0.0.1", 1000, "10.0.0.2", 53))
            .row(Row::flow(17, "10.0.0.3", 1000, "10.0.0.2", 53))
            .build();
        assert_eq!(
            s.add_batch(&b).len(),
            2,
            "the window filled and was stitched early"
        );
        assert_eq!(s.early_drains, 1);
        assert_eq!(s.held(), 0);
    }
}
