//! Connection stitching, shared by every CNI plugin: joins the observations of one connection
//! made at many points, before and after NAT, into one [`Connection`].
//!
//! Two observations belong to the same connection when
//! - they carry the same 5-tuple in either direction (the same packets seen at another point,
//!   or the replies), or
//! - they carry the same NAT-proof fingerprint (docs/observation-model.md, "Fingerprints"):
//!   Linux NAT rewrites addresses and ports but keeps TCP sequence numbers and the IPv4
//!   identification, so a pre-DNAT/SNAT observation and its post-NAT twin share it.
//!
//! When no fingerprint joins them (a UDP or ICMP packet with IPv4 ID 0, a capture that
//! started mid-connection), one fallback joins by time: an observation whose source is a
//! known NAT source (a node's gateway address or IP, [`Stitcher::nat_sources`]) and exactly
//! one observation from one other source, with the same protocol, source port, destination
//! and destination port, first seen within [`Stitcher::time_join_ns`] of each other, are one
//! SNATed connection. Anything ambiguous (two candidate clients, contradicting fingerprints)
//! stays apart: an unresolved gateway is better than a wrong pod.
//!
//! Each member is then oriented (client -> server or back) from the handshake (SYN vs SYN+ACK
//! fingerprints), ICMP echo types, what the last window found for the 5-tuple, or, failing
//! those, the ports (an ephemeral one is the client's, [`EPHEMERAL_PORTS_FROM`]) and then
//! which side spoke first.
//!
//! Memory is bounded: a [`Stitcher`] holds at most `max_held` observations; past that the
//! caller drains early (fewer joins, nothing lost) and [`Stitcher::early_drains`] counts it.

use crate::batch::{Obs, Tunnel, batch_rows, fp, tcp};
use crate::describe::DescriptionBuilder;
use crate::options::Options;
use crate::{Ip, ObservationBatch, OptionType, PluginError};
use cniscope_common::ipproto;
use std::rc::Rc;

use crate::hash::{FastMap, FastSet};

/// A capture point, interned once per window: observations refer to it by index, so holding
/// an observation allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointInfo {
    pub node: String,
    pub iface: String,
    /// "node/iface:direction".
    pub label: String,
    /// The same number for both directions of one interface of one node.
    pub iface_id: u32,
    pub kind: crate::IfaceKind,
    pub direction: crate::Direction,
    /// The kernel's reason at a `kernel-drop` point; "" at an interface.
    pub drop_reason: String,
}

impl PointInfo {
    /// Not an interface: where the kernel dropped packets ([`Connection::drops`]).
    pub fn is_kernel_drop(&self) -> bool {
        self.kind == crate::IfaceKind::KernelDrop
    }
}

/// A 5-tuple with its ends in a fixed order: (protocol, lower end, higher end).
pub type TupleKey = (u8, (Ip, u16), (Ip, u16));

/// Where a connection is counted: (interface id, 5-tuple). See [`Connection::counted_at`].
pub type CountingPlace = (u32, TupleKey);

/// A 5-tuple's 64-bit digest: what the memory of past windows is keyed by, 8 bytes instead
/// of a 56-byte 5-tuple. Two of ~10^5 remembered 5-tuples share one with odds ~10^-9.
pub type TupleDigest = u64;

/// The digest of a 5-tuple (a multiply-xorshift over its words).
pub fn digest(t: &TupleKey) -> TupleDigest {
    let mut h = u64::from(t.0) ^ 0x2545_F491_4F6C_DD1D;
    for (ip, port) in [t.1, t.2] {
        for w in [ip.hi, ip.lo, u64::from(port)] {
            h = (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            h ^= h >> 29;
        }
    }
    h
}

/// What a window remembers of a connection for the next, per 5-tuple it showed (by digest):
/// where it was counted, which end of that 5-tuple was the client, its handshake. 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remembered {
    /// The counting interface and the digest of the 5-tuple counted there
    /// ([`ALREADY_COUNTED`]: a window that held only copies of counted packets).
    pub place: (u32, TupleDigest),
    /// The client is the 5-tuple's lower end (in [`TupleKey`] order).
    pub client_lower: bool,
    /// The client's initial sequence number, when a window saw its SYN: a SYN with another
    /// one on the same 5-tuple is a new connection (the port reused); the same one is that
    /// handshake seen at another point after a drain.
    pub syn: Option<u32>,
    /// The counting place has shown this connection's replies (server -> client): when it
    /// shows none in a later window, that is a drain's timing, not a place replies skip.
    pub place_saw_replies: bool,
    /// A TCP connection that has shown no FIN or RST yet: when it goes quiet for a whole
    /// window it is remembered longer ([`Stitcher::quiet`]).
    pub open: bool,
    /// Remembered from before the last window (an open connection that went quiet): where it
    /// was counted then is only a hint, its packets now are new.
    pub quiet: bool,
    /// When its last packet was seen: milliseconds of the capture clock, wrapping
    /// ([`UNKNOWN_MS`]: not known, from an older saved state).
    pub last_ms: u32,
}

/// [`Remembered::last_ms`] when not known.
pub const UNKNOWN_MS: u32 = u32::MAX;

impl Remembered {
    /// Whether packets first seen at `first_ns` came more than `gap_ns` after the last one
    /// remembered.
    fn long_before(&self, first_ns: u64, gap_ns: u64) -> bool {
        let now_ms = (first_ns / 1_000_000) as u32;
        self.last_ms != UNKNOWN_MS
            && i64::from(now_ms.wrapping_sub(self.last_ms) as i32) > (gap_ns / 1_000_000) as i64
    }
}

/// The interface id of a [`CountingPlace`] for a connection whose packets in this window were
/// all counted in the last one.
pub const ALREADY_COUNTED: u32 = u32::MAX;

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
    /// OR of the TCP flags seen (a RST answering a SYN: the connection was refused).
    pub tcp_flags: u8,
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
    /// The first 4 data bytes (big-endian) of the Geneve option the plugin asked to keep
    /// ([`Stitcher::geneve_option`]), e.g. OVN's logical port keys; None without one.
    pub tunnel_option: Option<u32>,
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
            tcp_flags: o.tcp_flags(),
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
            tunnel_option: None,
        }
    }

    /// The same view as the other direction would show it: ends and ports swapped (a reply
    /// read as its request). ICMP keeps its columns (type; code or echo identifier), an echo
    /// reply becoming its request.
    pub fn turned_around(&self) -> Seen {
        let (src_port, dst_port) = match self.protocol {
            ipproto::ICMP | ipproto::ICMPV6 => {
                let ty = match (self.protocol, self.src_port) {
                    (ipproto::ICMP, 0) => 8,
                    (ipproto::ICMP, 8) => 0,
                    (ipproto::ICMPV6, 129) => 128,
                    (ipproto::ICMPV6, 128) => 129,
                    (_, other) => other,
                };
                (ty, self.dst_port)
            }
            _ => (self.dst_port, self.src_port),
        };
        Seen {
            src: self.dst,
            dst: self.src,
            src_port,
            dst_port,
            ..self.clone()
        }
    }

    /// Control traffic: link-level (IGMP, MLD and neighbour discovery to multicast groups, or
    /// from the unspecified address) and ICMP errors and neighbour discovery (a host saying
    /// "unreachable" about some other flow). Not a workload talking, not an edge.
    pub fn is_link_control(&self) -> bool {
        // ICMP's type is in the source port column.
        let icmp_control = match self.protocol {
            1 => matches!(self.src_port, 3 | 4 | 5 | 11 | 12),
            58 => self.src_port < 128 || (133..=137).contains(&self.src_port),
            _ => false,
        };
        if icmp_control {
            return true;
        }
        let multicast = |ip: Ip| {
            let b = ip.bits();
            if ip.is_v4() {
                (b as u32) >> 28 == 0xe || b as u32 == u32::MAX
            } else {
                b >> 120 == 0xff
            }
        };
        multicast(self.dst) || self.src.is_none() || (!self.src.is_v4() && self.src.bits() == 0)
    }

    /// ICMP or ICMPv6: no ports (its type sits in the source port column, its code or an
    /// echo's identifier in the destination port column).
    pub fn is_icmp(&self) -> bool {
        self.protocol == ipproto::ICMP || self.protocol == ipproto::ICMPV6
    }

    /// The destination port as an edge shows it: ICMP's code (an echo's is 0; its column
    /// holds the echo's identifier), else the port.
    pub fn server_port(&self) -> u16 {
        if self.is_echo() { 0 } else { self.dst_port }
    }

    /// An ICMP echo request or reply (its type is in the source port column).
    fn is_echo(&self) -> bool {
        cniscope_common::icmp_echo(self.protocol, self.src_port as u8)
    }

    /// Ports as they identify a flow. ICMP's type differs between request and reply: an
    /// echo's identifier names its ping session on both sides; other ICMP has none.
    fn flow_ports(&self) -> (u16, u16) {
        if self.is_echo() {
            (self.dst_port, self.dst_port)
        } else if self.is_icmp() {
            (0, 0)
        } else {
            (self.src_port, self.dst_port)
        }
    }

    /// This view's source is the lower end of its [`TupleKey`].
    fn source_is_lower(&self) -> bool {
        let (sp, dp) = self.flow_ports();
        (self.src, sp) <= (self.dst, dp)
    }

    /// The 5-tuple with its two ends in a fixed order, so both directions share it.
    fn tuple_key(&self) -> TupleKey {
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
        (self.fingerprint_is_sequence()
            || (self.fp_kind == fp::IPV4_ID && self.fingerprint >> 16 != 0))
            .then_some((self.protocol, self.fp_kind, self.fingerprint))
    }

    /// Its fingerprint is a TCP sequence number (a SYN's, a SYN+ACK's or the first seen):
    /// what no NAT touches.
    fn fingerprint_is_sequence(&self) -> bool {
        matches!(
            self.fp_kind,
            fp::TCP_SYN_ISN | fp::TCP_SYNACK_ISN | fp::TCP_SEQ
        )
    }

    /// This TCP or UDP view's 5-tuple as an ICMPv4 error would quote it (`fp::quote`).
    fn quote(&self) -> Option<u32> {
        let tcp_udp = self.protocol == ipproto::TCP || self.protocol == ipproto::UDP;
        (tcp_udp && self.src.is_v4() && self.dst.is_v4() && self.fp_kind != fp::ICMP_QUOTE).then(
            || {
                fp::quote(
                    self.protocol,
                    self.src.bits() as u32,
                    self.dst.bits() as u32,
                    self.src_port,
                    self.dst_port,
                )
            },
        )
    }

    /// An ICMPv4 error quoting a packet of another flow (joined to that flow's connection).
    pub fn is_icmp_error(&self) -> bool {
        self.fp_kind == fp::ICMP_QUOTE
    }

    /// What the packet itself says about its direction: Some(true) = client -> server.
    /// Whether this view goes client -> server by its ports alone: one end's port in the
    /// range Linux hands to connecting sockets (from 32768, `ip_local_port_range`), the
    /// other's below it (a listener: a service port, a NodePort). None for ICMP, or when both
    /// or neither are.
    fn client_by_ports(&self) -> Option<bool> {
        if self.is_icmp() {
            return None;
        }
        let ephemeral = |p: u16| p >= EPHEMERAL_PORTS_FROM;
        match (ephemeral(self.src_port), ephemeral(self.dst_port)) {
            (true, false) if self.dst_port != 0 => Some(true),
            (false, true) if self.src_port != 0 => Some(false),
            _ => None,
        }
    }

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

/// Where Linux's default range of ports for connecting sockets begins (`ip_local_port_range`
/// 32768-60999); listeners (service ports, NodePorts up to 32767) sit below it.
pub const EPHEMERAL_PORTS_FROM: u16 = 32768;

/// Whether an interface name is a node's uplink by the usual naming (eth*, ens*, enp*, eno*,
/// bond*): where routed (unencapsulated) pod traffic between nodes shows.
pub fn is_uplink_name(iface: &str) -> bool {
    ["eth", "ens", "enp", "eno", "bond"]
        .iter()
        .any(|p| iface.starts_with(p))
}

/// One connection: its observations, each marked client -> server (`forward`) or not.
#[derive(Clone, Debug)]
pub struct Connection {
    pub members: Vec<Seen>,
    pub forward: Vec<bool>,
    /// Some members were joined only by time proximity (weaker than a fingerprint).
    pub joined_by_time: bool,
    /// Where the connection's packets are counted: one interface (`PointInfo::iface_id`) and
    /// one 5-tuple there, both directions. One 5-tuple, because NAT can show one interface two
    /// of them (a hairpin through a service crosses the pod's own veth before and after DNAT;
    /// a NodePort's uplink sees the client's packets arrive and their SNATed copies leave).
    /// The interface is the one that saw the most client -> server packets, or, when the
    /// connection was already counted in the previous window and that place saw it again, the
    /// same place: a connection that straddles a drain is counted at one place in both
    /// windows (each node's views split differently at the boundary, and two places would sum
    /// to more than was sent).
    pub counted_at: CountingPlace,
    /// Where the replies are counted when [`counted_at`](Self::counted_at) never saw any and
    /// another interface of the same node did: a CNI's redirect can skip a pod's host-side
    /// veth one way (Cilium's `bpf_redirect_peer` hands arriving packets straight to the
    /// pod's own end), so no one place sees both directions of a pod-to-pod connection on one
    /// node. Only replies are counted there.
    pub replies_counted_at: Option<CountingPlace>,
    /// The last window held this connection (one of its 5-tuples, and no new handshake now):
    /// it goes on across the window's end and is one connection, not two.
    pub continued: bool,
    /// Packets the kernel dropped, joined to this connection by their headers: (the
    /// `kernel-drop` point with the reason, packets). Not members: they cross no interface.
    pub drops: Vec<(u32, u64)>,
    /// ICMPv4 errors quoting this connection's packets (a REJECT's port unreachable, a "no
    /// route" from a router), joined by their quote ([`Seen::is_icmp_error`]; the type in
    /// `src_port`, the code in `dst_port`, the sender in `src`). Not members.
    pub icmp_errors: Vec<Seen>,
    /// The end of the window it was stitched in: packets just before it may be seen at their
    /// next point only in the next window (each node's probes are drained in turn).
    pub window_end_ns: u64,
    points: Rc<Vec<PointInfo>>,
}

impl Connection {
    /// Where a member was seen.
    pub fn point(&self, m: &Seen) -> &PointInfo {
        &self.points[m.point as usize]
    }

    /// Every capture point the stitcher has seen so far (the watched ones, as far as it can
    /// tell), indexed by [`Seen::point`].
    pub fn points(&self) -> &[PointInfo] {
        &self.points
    }

    pub fn forward_members(&self) -> impl Iterator<Item = &Seen> {
        self.members
            .iter()
            .zip(&self.forward)
            .filter(|(_, f)| **f)
            .map(|(m, _)| m)
    }

    /// The connection's identity: the smallest digest of its views' 5-tuples. Every plugin
    /// that stitched the same views gives the same number, so the host can compose their flows
    /// into one edge (WIT `flow-batch.connection`).
    pub fn id(&self) -> u64 {
        self.members
            .iter()
            .map(|m| digest(&m.tuple_key()))
            .min()
            .unwrap_or(0)
    }

    pub fn reverse_members(&self) -> impl Iterator<Item = &Seen> {
        self.members
            .iter()
            .zip(&self.forward)
            .filter(|(_, f)| !**f)
            .map(|(m, _)| m)
    }

    /// Counters from one place only (no double counting): [`counted_at`](Self::counted_at),
    /// both directions there. Returns (packets, bytes, first_ns, last_ns).
    pub fn counters(&self) -> (u64, u64, u64, u64) {
        let (mut packets, mut bytes, mut first, mut last) = (0, 0, u64::MAX, 0);
        let (iface, tuple) = self.counted_at;
        if iface == ALREADY_COUNTED {
            // No packets, but the times it was seen.
            for m in &self.members {
                first = first.min(m.first_ns);
                last = last.max(m.last_ns);
            }
            return (0, 0, first.min(last), last);
        }
        let place = |m: &Seen| (self.point(m).iface_id, m.tuple_key());
        // Per direction of the connection, what each capture point (an interface's ingress or
        // egress) saw: (forward, point, packets, bytes). A packet can pass one interface twice,
        // in and out (it arrives in one tunnel and leaves in another: a Kata peer pod's
        // traffic reaches the node in flannel's VXLAN and leaves in the pod's own); each
        // direction of the connection is counted at one capture point, the one that saw most.
        let mut seen: Vec<(bool, u32, u64, u64)> = Vec::with_capacity(4);
        for (m, &forward) in self.members.iter().zip(&self.forward) {
            let at = place(m);
            if at != (iface, tuple) && (forward || Some(at) != self.replies_counted_at) {
                continue;
            }
            first = first.min(m.first_ns);
            last = last.max(m.last_ns);
            match seen.iter_mut().find(|s| s.0 == forward && s.1 == m.point) {
                Some(s) => {
                    s.2 += m.packets;
                    s.3 += m.bytes;
                }
                None => seen.push((forward, m.point, m.packets, m.bytes)),
            }
        }
        for direction in [true, false] {
            if let Some(s) = seen
                .iter()
                .filter(|s| s.0 == direction)
                .max_by_key(|s| (s.2, s.3, std::cmp::Reverse(s.1)))
            {
                packets += s.2;
                bytes += s.3;
            }
        }
        (packets, bytes, first.min(last), last)
    }

    /// Every point that saw this connection, sorted, borrowed from the window's points.
    pub fn point_labels(&self) -> Vec<&str> {
        let mut ids: Vec<u32> = self.members.iter().map(|m| m.point).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut labels: Vec<&str> = ids
            .iter()
            .map(|&i| self.points[i as usize].label.as_str())
            .collect();
        labels.sort_unstable();
        labels
    }
}

/// Holds a window of observations and stitches them into connections.
pub struct Stitcher {
    held: Vec<Seen>,
    points: Vec<PointInfo>,
    point_ids: FastMap<(String, String, &'static str, String), u32>,
    iface_ids: FastMap<(String, String), u32>,
    pub max_held: usize,
    /// Windows stitched early because they filled up.
    pub early_drains: u64,
    /// Observations in those windows: stitched before their window's end, so a later view of
    /// the same connection (a reply, its post-NAT twin) could not join them.
    pub evicted: u64,
    /// The most observations held at once (what the plugin's memory per held observation is
    /// measured against).
    pub held_peak: u64,
    /// Counting place and client end by 5-tuple: this window's connections, then the
    /// previous window's.
    counted_at: [FastMap<TupleDigest, Remembered>; 2],
    /// Open TCP connections (no FIN or RST seen) that neither this window nor the last
    /// showed: a pooled connection quiet for a while. Without a SYN (or with the same one)
    /// its next packets are the same connection, not a new flow. By 5-tuple digest, with the
    /// number of the window it was last seen in; at most [`QUIET_PER_HELD`] x `max_held`, the
    /// longest quiet going first (counted in `quiet_forgotten`).
    quiet: FastMap<TupleDigest, (Remembered, u64)>,
    /// Windows ended (`drain`s): the clock of [`quiet`](Self::quiet).
    windows: u64,
    /// Quiet open connections forgotten to keep their memory bounded (one that goes on is
    /// counted again).
    pub quiet_forgotten: u64,
    /// Addresses that replace a client's source (node gateways, node IPs): the only sources
    /// the time fallback joins from. Empty = no time fallback.
    pub nat_sources: FastSet<Ip>,
    /// Service front doors (ClusterIPs, external and load-balancer IPs): a view to one is
    /// before DNAT, and the time fallback may join it to the one view from the same source
    /// socket to somewhere else. Empty = no DNAT fallback. See [`Stitcher::learn`].
    pub dnat_fronts: FastSet<Ip>,
    /// Pod addresses that passed from one pod to another, and when
    /// ([`crate::inventory::InventoryIndex::readdressings`]): a UDP 5-tuple heard before and
    /// after such a moment is two connections. See [`Stitcher::learn`].
    pub readdressed: FastMap<Ip, Vec<u64>>,
    /// 5-tuples that carried two connections (or UDP stretches) or more in one window, split
    /// ([`join_by_tuple`]; stretches of one conntrack entry join again).
    pub reused_tuples: u64,
    /// How close in time two first sightings must be for the fallback to join them.
    pub time_join_ns: u64,
    /// Connections the fallback joined.
    pub time_joins: u64,
    /// 5-tuples whose memory went when a window's memory filled up before the window ended
    /// (a connection of theirs that goes on is counted again).
    pub forgotten: u64,
    /// How close in time the first sightings of two views sharing a fingerprint must be to
    /// be one packet's views (1 s: the path's latency plus the capture clocks' skew).
    pub fingerprint_join_ns: u64,
    /// Views sharing a fingerprint kept apart (seen at one point, too far apart in time, or
    /// equally near two others): another connection's fingerprint by chance.
    pub fingerprint_collisions: u64,
    /// The Geneve option (class, type) whose data each [`Seen`] keeps in `tunnel_option`.
    pub geneve_option: Option<(u16, u8)>,
    /// Kernel drops that joined no view of any connection (dropped before any watched
    /// point): packets.
    pub drops_alone: u64,
    /// Pieces of connections already counted that held only late copies of counted packets
    /// ([`Stitcher::adds_nothing`]): not flows.
    pub late_copies: u64,
    /// Views an early drain found only at a service's door and kept held for the next
    /// ([`Stitcher::waits_for_its_backend`]).
    pub waited: u64,
    /// The end of the window being drained (`flush`'s time), 0 when not known (an early
    /// drain): then the latest packet held stands for it.
    pub window_end_ns: u64,
}

impl Default for Stitcher {
    fn default() -> Self {
        Stitcher {
            held: Vec::new(),
            points: Vec::new(),
            point_ids: FastMap::default(),
            iface_ids: FastMap::default(),
            max_held: DEFAULT_MAX_HELD,
            early_drains: 0,
            evicted: 0,
            held_peak: 0,
            counted_at: Default::default(),
            quiet: FastMap::default(),
            windows: 0,
            quiet_forgotten: 0,
            nat_sources: FastSet::default(),
            dnat_fronts: FastSet::default(),
            readdressed: FastMap::default(),
            reused_tuples: 0,
            time_join_ns: DEFAULT_TIME_JOIN_MS * 1_000_000,
            time_joins: 0,
            forgotten: 0,
            fingerprint_join_ns: 1_000_000_000,
            fingerprint_collisions: 0,
            geneve_option: None,
            drops_alone: 0,
            late_copies: 0,
            waited: 0,
            window_end_ns: 0,
        }
    }
}

/// Observations held before stitching early. 200 000 made the held views' growth alone
/// (136 bytes each, doubling) ask for 35 MB at once and the plugin died at its 64 MiB with
/// 40 000 connections in a 5 s window; at 65 536 that window peaks at 31 MB, leaving room for
/// a 200 000-pod inventory. Stitching early loses no packet (the counting place and the
/// orientation carry over) but a connection cut by it is one more flow.
pub const DEFAULT_MAX_HELD: usize = 65_536;

/// At most 1/WAITING_SHARE of the held views wait past an early drain for their backend's.
const WAITING_SHARE: usize = 4;

/// The default of the `time_join_ms` option.
pub const DEFAULT_TIME_JOIN_MS: u64 = 500;

/// A window remembers up to this many 5-tuples per held view (a connection cut by early
/// drains is remembered across them; a view is ~144 bytes, a remembered 5-tuple ~32).
pub const REMEMBERED_PER_HELD: usize = 4;

/// Quiet open connections remembered per held view (see [`Stitcher::quiet`]): ~48 bytes
/// each, 6 MiB at the default `max_held`.
pub const QUIET_PER_HELD: usize = 2;

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

/// What the tuple join notes of one 5-tuple (by digest) to find one reused in the window.
struct TupleSeen {
    /// Its first view.
    first: usize,
    /// When its earliest view was first seen.
    first_ns: u64,
    /// Its first SYN's ISN, and when its earliest SYN view was first seen (`u64::MAX`: none).
    syn: u32,
    syn_ns: u64,
    /// SYNs with two different ISNs.
    two_syns: bool,
    /// When its latest view was last seen.
    last_ns: u64,
    /// A view that began half of `fp::UDP_QUIET_NS` after every earlier one had ended (the
    /// views come in time order, nearly): the 5-tuple fell silent and spoke again.
    silence: bool,
    /// One of its ends is a pod address that passed to another pod at some time.
    readdressed: bool,
}

impl TupleSeen {
    /// Two connections on one 5-tuple in this window, perhaps: two handshakes, packets from
    /// before the one handshake (the end of a connection opened earlier, then a new one), or
    /// a UDP 5-tuple that fell silent and spoke again, or was seen before and after one of its
    /// pod addresses passed to another pod (the capture starts another observation after a
    /// silence, `fp::opens_another`). One connection's views all come at or after its
    /// earliest SYN.
    fn reused(&self, key: &TupleKey, readdressed: &FastMap<Ip, Vec<u64>>) -> bool {
        self.two_syns
            || (self.syn_ns != u64::MAX && self.first_ns < self.syn_ns)
            || (key.0 == ipproto::UDP
                && (self.silence
                    || (self.readdressed
                        && readdressing_moments(key, readdressed)
                            .any(|t| self.first_ns < t && t <= self.last_ns))))
    }
}

/// A silence this long on a UDP 5-tuple at every point cuts its views into stretches that may
/// be two connections (half the capture's `fp::UDP_QUIET_NS`, for the path's latency).
const STRETCH_GAP_NS: u64 = fp::UDP_QUIET_NS / 2;

/// When a pod address of the 5-tuple passed to another pod.
fn readdressing_moments<'a>(
    key: &TupleKey,
    readdressed: &'a FastMap<Ip, Vec<u64>>,
) -> impl Iterator<Item = u64> + 'a {
    [key.1.0, key.2.0]
        .into_iter()
        .filter_map(|ip| readdressed.get(&ip))
        .flatten()
        .copied()
}

/// Which connection a view of a reused 5-tuple belongs to ([`join_by_tuple`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reuse {
    /// The TCP connection of this handshake (the client's ISN).
    Handshake(u32),
    /// A UDP connection that began after a pod address in its 5-tuple passed to another pod
    /// (the n-th stretch of the 5-tuple): nothing remembered of the 5-tuple is of it.
    Readdressed(u32),
    /// The n-th stretch of a UDP 5-tuple after a silence: one conntrack entry with the
    /// stretch before it unless their NAT differs ([`Stitcher::rejoin_stretches`]).
    Stretch(u32),
}

impl Reuse {
    /// A connection of its own (not the one going on from before) unless joined again.
    fn is_udp_stretch(self) -> bool {
        matches!(self, Reuse::Readdressed(_) | Reuse::Stretch(_))
    }

    /// The stretch number of a UDP stretch (0: the first, or not a stretch).
    fn stretch(c: Option<Reuse>) -> u32 {
        match c {
            Some(Reuse::Stretch(n) | Reuse::Readdressed(n)) => n,
            _ => 0,
        }
    }
}

/// The stretches of one UDP 5-tuple, in time order: each one's first view, and how it was cut
/// from the one before (None for the first).
type Stretches = Vec<(usize, Option<Reuse>)>;

/// The same 5-tuple is one connection, but for a 5-tuple reused in the window (see
/// [`TupleSeen::reused`]): its views are one connection per TCP handshake, by time (each
/// view goes with the latest handshake that began at or before it; views before the first
/// are the connection before it), or for UDP one per stretch between the moments a pod
/// address of the 5-tuple passed to another pod (`readdressed`). Returns the connection of
/// each view of a reused 5-tuple that is not the one going on from before, and how many
/// 5-tuples were reused.
///
/// Keyed by the 5-tuple's digest (8 bytes, not 56: this map is as large as the window); a
/// digest two different 5-tuples share is told apart by comparing them, and those few go by
/// the whole 5-tuple.
fn join_by_tuple(
    held: &[Seen],
    uf: &mut UnionFind,
    digest: impl Fn(&TupleKey) -> TupleDigest,
    readdressed: &FastMap<Ip, Vec<u64>>,
) -> (FastMap<usize, Reuse>, Vec<Stretches>, u64) {
    let mut by_digest: FastMap<TupleDigest, TupleSeen> = FastMap::default();
    let mut shared_digest: FastMap<TupleKey, usize> = FastMap::default();
    let joins = |s: &Seen| s.fp_kind != fp::ICMP_QUOTE;
    for (i, s) in held.iter().enumerate() {
        if !joins(s) {
            // An ICMP error joins the connection it quotes (`join_by_quote`), not the other
            // errors between the same two hosts.
            continue;
        }
        let key = s.tuple_key();
        let seen = by_digest.entry(digest(&key)).or_insert_with(|| TupleSeen {
            first: i,
            first_ns: s.first_ns,
            syn: 0,
            syn_ns: u64::MAX,
            two_syns: false,
            last_ns: s.last_ns,
            silence: false,
            readdressed: !readdressed.is_empty()
                && (readdressed.contains_key(&s.src) || readdressed.contains_key(&s.dst)),
        });
        let j = if held[seen.first].tuple_key() == key {
            seen.first_ns = seen.first_ns.min(s.first_ns);
            if s.fp_kind == fp::TCP_SYN_ISN {
                if seen.syn_ns == u64::MAX {
                    seen.syn = s.fingerprint;
                } else if seen.syn != s.fingerprint {
                    seen.two_syns = true;
                }
                seen.syn_ns = seen.syn_ns.min(s.first_ns);
            }
            seen.silence |= s.first_ns > seen.last_ns.saturating_add(STRETCH_GAP_NS);
            seen.last_ns = seen.last_ns.max(s.last_ns);
            seen.first
        } else {
            *shared_digest.entry(key).or_insert(i)
        };
        uf.union(i, j);
    }
    let mut reuse = FastMap::default();
    let reused = |t: &TupleSeen| t.reused(&held[t.first].tuple_key(), readdressed);
    let mut stretches = Vec::new();
    if !by_digest.values().any(reused) {
        return (reuse, stretches, 0);
    }
    // Rare: join again, the reused 5-tuples' views one connection each.
    *uf = UnionFind((0..held.len()).collect());
    let mut views_of: FastMap<TupleKey, Vec<usize>> = FastMap::default();
    for (i, s) in held.iter().enumerate() {
        if !joins(s) {
            continue;
        }
        let key = s.tuple_key();
        let seen = &by_digest[&digest(&key)];
        if held[seen.first].tuple_key() != key {
            uf.union(i, *shared_digest.get(&key).expect("noted above"));
        } else if reused(seen) {
            views_of.entry(key).or_default().push(i);
        } else {
            uf.union(i, seen.first);
        }
    }
    for (key, views) in &views_of {
        let of = if key.0 == ipproto::TCP {
            by_handshake(held, views)
        } else {
            by_stretch(held, views, key, readdressed)
        };
        // The first view of each connection; `None`: the one going on from before.
        let mut firsts: Vec<(Option<Reuse>, usize)> = Vec::with_capacity(4);
        for (&i, conn) in views.iter().zip(of) {
            if let Some(c) = conn {
                reuse.insert(i, c);
            }
            match firsts.iter().find(|f| f.0 == conn) {
                Some(&(_, first)) => uf.union(i, first),
                None => firsts.push((conn, i)),
            }
        }
        if firsts
            .iter()
            .any(|f| matches!(f.0, Some(Reuse::Stretch(_))))
        {
            let mut list: Stretches = firsts.iter().map(|&(c, i)| (i, c)).collect();
            list.sort_unstable_by_key(|&(_, c)| Reuse::stretch(c));
            stretches.push(list);
        }
    }
    (reuse, stretches, views_of.len() as u64)
}

/// The handshake each view of a reused TCP 5-tuple belongs to: its own for a SYN, else the
/// latest that began at or before it (None: before the first).
fn by_handshake(held: &[Seen], views: &[usize]) -> Vec<Option<Reuse>> {
    // Each handshake's ISN and when it began (its earliest SYN view), in time order.
    let mut starts: Vec<(u64, u32)> = Vec::new();
    for &i in views {
        let s = &held[i];
        if s.fp_kind == fp::TCP_SYN_ISN {
            match starts.iter_mut().find(|h| h.1 == s.fingerprint) {
                Some(h) => h.0 = h.0.min(s.first_ns),
                None => starts.push((s.first_ns, s.fingerprint)),
            }
        }
    }
    starts.sort_unstable();
    views
        .iter()
        .map(|&i| {
            let s = &held[i];
            if s.fp_kind == fp::TCP_SYN_ISN {
                return Some(Reuse::Handshake(s.fingerprint));
            }
            starts
                .iter()
                .rev()
                .find(|h| h.0 <= s.first_ns)
                .map(|h| Reuse::Handshake(h.1))
        })
        .collect()
}

/// The stretch each view of a reused UDP 5-tuple belongs to: its views in time order, cut
/// where every earlier one had ended and either one of its pod addresses passed to another
/// pod since ([`Reuse::Readdressed`]: another connection) or [`STRETCH_GAP_NS`] went by
/// ([`Reuse::Stretch`]: perhaps another). None: the first stretch.
fn by_stretch(
    held: &[Seen],
    views: &[usize],
    key: &TupleKey,
    readdressed: &FastMap<Ip, Vec<u64>>,
) -> Vec<Option<Reuse>> {
    let moments: Vec<u64> = readdressing_moments(key, readdressed).collect();
    let mut order: Vec<usize> = (0..views.len()).collect();
    order.sort_unstable_by_key(|&k| held[views[k]].first_ns);
    let mut stretch: Vec<Option<Reuse>> = vec![None; views.len()];
    let (mut current, mut n, mut ended) = (None, 0u32, 0u64);
    for (at, &k) in order.iter().enumerate() {
        let s = &held[views[k]];
        if at > 0 && s.first_ns > ended {
            if moments.iter().any(|&t| ended < t && t <= s.first_ns) {
                n += 1;
                current = Some(Reuse::Readdressed(n));
            } else if s.first_ns > ended.saturating_add(STRETCH_GAP_NS) {
                n += 1;
                current = Some(Reuse::Stretch(n));
            }
        }
        stretch[k] = current;
        ended = ended.max(s.last_ns);
    }
    stretch
}

/// Joins again each UDP stretch a silence cut ([`Reuse::Stretch`]) to the stretch before it,
/// unless both went through NAT to different 5-tuples: one conntrack entry keeps its NAT, so
/// a DNAT to another backend (or an SNAT to another port) is another entry, another
/// connection. A stretch whose NAT side was not seen (dropped, not captured) is the same one.
/// Runs after every other join, when each stretch's group holds its NAT twins.
fn rejoin_stretches(held: &[Seen], uf: &mut UnionFind, stretches: &[Stretches]) {
    if stretches.is_empty() {
        return;
    }
    // The 5-tuples of each stretch's group: one pass over the window for the few groups.
    let mut tuples_of: FastMap<usize, Vec<TupleKey>> = FastMap::default();
    for &(i, _) in stretches.iter().flatten() {
        tuples_of.insert(uf.find(i), Vec::new());
    }
    for (i, s) in held.iter().enumerate() {
        if let Some(keys) = tuples_of.get_mut(&uf.find(i)) {
            let k = s.tuple_key();
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    for list in stretches {
        let shared = held[list[0].0].tuple_key();
        for w in 1..list.len() {
            let (first, cut) = list[w];
            let (a, b) = (uf.find(list[w - 1].0), uf.find(first));
            if !matches!(cut, Some(Reuse::Stretch(_))) || a == b {
                continue;
            }
            let others = |r: usize| -> Vec<TupleKey> {
                tuples_of[&r]
                    .iter()
                    .filter(|k| **k != shared)
                    .copied()
                    .collect()
            };
            let (na, nb) = (others(a), others(b));
            let nat_differs =
                !na.is_empty() && !nb.is_empty() && na.iter().all(|k| !nb.contains(k));
            if nat_differs {
                continue;
            }
            uf.union(a, b);
            let (root, gone) = (a.min(b), a.max(b));
            let moved = tuples_of.remove(&gone).unwrap_or_default();
            let keys = tuples_of.entry(root).or_default();
            for k in moved {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
    }
}

/// Joins each ICMPv4 error to the view whose 5-tuple it quotes (`fp::ICMP_QUOTE`): a
/// REJECT's port unreachable, a router's "no route", a "fragmentation needed" answer the
/// connection whose packet they refused.
fn join_by_quote(held: &[Seen], uf: &mut UnionFind) {
    if !held.iter().any(|m| m.fp_kind == fp::ICMP_QUOTE) {
        return;
    }
    let mut by_quote: FastMap<u32, usize> = FastMap::default();
    for (i, m) in held.iter().enumerate() {
        if let Some(q) = m.quote() {
            by_quote.entry(q).or_insert(i);
        }
    }
    for (i, m) in held.iter().enumerate() {
        if m.fp_kind == fp::ICMP_QUOTE
            && let Some(&j) = by_quote.get(&m.fingerprint)
        {
            uf.union(i, j);
        }
    }
}

impl Stitcher {
    /// The options [`configure`](Self::configure) reads, for a plugin's `deny_unknown`.
    pub const OPTIONS: [&'static str; 2] = ["max_held", "time_join_ms"];

    /// Declares [`OPTIONS`](Self::OPTIONS) in a plugin's description.
    pub fn describe_options(d: DescriptionBuilder) -> DescriptionBuilder {
        d.option(
            "max_held",
            OptionType::Integer,
            &DEFAULT_MAX_HELD.to_string(),
            "observations held per correlation window before stitching early (the plugin's \
             memory grows ~300 bytes per held observation while it stitches)",
        )
        .option(
            "time_join_ms",
            OptionType::Integer,
            &DEFAULT_TIME_JOIN_MS.to_string(),
            "when no fingerprint matches, join a view from a node address to the one pod view \
             with the same ports and destination seen this close in time; 0 = never",
        )
    }

    /// Reads [`OPTIONS`](Self::OPTIONS), naming the bad one.
    pub fn configure(&mut self, o: &Options) -> Result<(), PluginError> {
        self.max_held = o.integer_in("max_held", DEFAULT_MAX_HELD)?.max(1);
        self.time_join_ns = o
            .integer_in("time_join_ms", DEFAULT_TIME_JOIN_MS)?
            .saturating_mul(1_000_000);
        Ok(())
    }

    /// Learns what the time fallbacks join from: the plugin's NAT sources (its gateways and
    /// node addresses) and the inventory's service doors. Call it in `on_inventory`.
    pub fn learn(
        &mut self,
        nat_sources: impl IntoIterator<Item = Ip>,
        inv: &crate::inventory::InventoryIndex,
    ) {
        self.nat_sources = nat_sources.into_iter().collect();
        self.dnat_fronts = inv.services.front_ips().collect();
        self.readdressed = inv.readdressings();
    }

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
    /// up on the way (usually none). [`add_batch_with`](Self::add_batch_with) hands them over
    /// one by one instead, which is what a plugin should use: a full window's connections
    /// never all exist at once.
    pub fn add_batch(&mut self, batch: &ObservationBatch) -> Vec<Connection> {
        let mut conns = Vec::new();
        self.add_batch_with(batch, |c| conns.push(c));
        conns
    }

    /// [`add_batch`](Self::add_batch), giving each connection to `each` as it is stitched.
    pub fn add_batch_with(&mut self, batch: &ObservationBatch, mut each: impl FnMut(Connection)) {
        let mut ids = Vec::with_capacity(batch.points.len());
        for p in &batch.points {
            let dir = match p.direction {
                crate::Direction::Ingress => "ingress",
                crate::Direction::Egress => "egress",
                crate::Direction::Unknown => "any",
            };
            let key = (p.node.clone(), p.iface.clone(), dir, p.drop_reason.clone());
            let id = match self.point_ids.get(&key) {
                Some(&id) => id,
                None => {
                    let next_iface = self.iface_ids.len() as u32;
                    let iface_id = *self
                        .iface_ids
                        .entry((p.node.clone(), p.iface.clone()))
                        .or_insert(next_iface);
                    let id = self.points.len() as u32;
                    let label = if p.kind == crate::IfaceKind::KernelDrop {
                        format!("{}/{}:drop:{}", p.node, p.iface, p.drop_reason)
                    } else {
                        format!("{}/{}:{dir}", p.node, p.iface)
                    };
                    self.points.push(PointInfo {
                        node: p.node.clone(),
                        iface: p.iface.clone(),
                        label,
                        iface_id,
                        kind: p.kind,
                        direction: p.direction,
                        drop_reason: p.drop_reason.clone(),
                    });
                    self.point_ids.insert(key, id);
                    id
                }
            };
            ids.push(id);
        }
        // The kept Geneve option of each observation, in one pass over the options.
        let mut option: Vec<Option<u32>> = Vec::new();
        if let Some((class, ty)) = self.geneve_option {
            let g = &batch.geneve;
            option.resize(batch.point.len(), None);
            for i in 0..g.obs.len() {
                let start = g.data_start[i] as usize;
                let data = g.data.get(start..start + g.data_len[i] as usize);
                if let (true, Some(&[a, b, c, d, ..])) =
                    (g.class[i] == class && g.type_[i] == ty, data)
                    && let Some(slot) = option.get_mut(g.obs[i] as usize)
                    && slot.is_none()
                {
                    *slot = Some(u32::from_be_bytes([a, b, c, d]));
                }
            }
        }
        for o in batch_rows(batch) {
            let point = ids
                .get(batch.point[o.index()] as usize)
                .copied()
                .unwrap_or(0);
            let mut seen = Seen::from_obs(&o, point);
            seen.tunnel_option = option.get(o.index()).copied().flatten();
            if self.push(seen) {
                self.stitch(&mut each, false);
            }
        }
    }

    /// Stitches everything held into connections at the window's end: the next window
    /// remembers this one's connections (where each was counted, its client, its handshake).
    pub fn drain(&mut self) -> Vec<Connection> {
        let mut conns = Vec::new();
        self.drain_with(|c| conns.push(c));
        conns
    }

    /// [`drain`](Self::drain), giving each connection to `each` as it is stitched.
    pub fn drain_with(&mut self, mut each: impl FnMut(Connection)) {
        self.stitch(&mut each, true);
        self.forget_last_window(false);
    }

    /// The memory of the last window goes (counted when it goes before its time); this
    /// one's becomes the last. Open TCP connections in it go to the quiet ones.
    fn forget_last_window(&mut self, early: bool) {
        self.counted_at.swap(0, 1);
        if !early {
            self.windows += 1;
        }
        let seen_in = self.windows.saturating_sub(2);
        let mut gone = 0;
        for (k, r) in self.counted_at[0].drain() {
            if r.open {
                // The newest memory of a 5-tuple wins: an entry quiet before and seen since
                // is overwritten.
                let r = Remembered { quiet: true, ..r };
                self.quiet.insert(k, (r, seen_in));
            } else if self.quiet.remove(&k).is_none() {
                gone += 1;
            }
        }
        if early {
            self.forgotten += gone;
        }
        self.bound_quiet();
    }

    /// Keeps the quiet connections under their bound: the longest quiet go (counted).
    fn bound_quiet(&mut self) {
        let bound = QUIET_PER_HELD * self.max_held;
        if self.quiet.len() <= bound {
            return;
        }
        // Forget down to 3/4 of the bound, so the selection runs once per many windows.
        let excess = self.quiet.len() - bound * 3 / 4;
        let mut ages: Vec<u64> = self.quiet.values().map(|v| v.1).collect();
        let (_, &mut cut, _) = ages.select_nth_unstable(excess - 1);
        // All quiet since before `cut` go, and as many quiet since `cut` as make `excess`.
        let mut at_cut = excess - ages.iter().filter(|&&a| a < cut).count();
        self.quiet.retain(|_, v| {
            if v.1 < cut {
                false
            } else if v.1 == cut && at_cut > 0 {
                at_cut -= 1;
                false
            } else {
                true
            }
        });
        self.quiet_forgotten += excess as u64;
    }

    /// Views whose 5-tuples an earlier drain found in one connection (they remember one
    /// counting place) are one connection now too, though no fingerprint joins them here: a
    /// drain can fall between a packet's two views at a NAT (it arrived before the drain, its
    /// rewritten copy left after it), and then the first packets the two views hold in this
    /// window differ. A new handshake on a remembered 5-tuple (another SYN) is a new
    /// connection and joins nothing by memory, nor do the other views of a new connection on
    /// a 5-tuple reused in this window (`reuse`, from [`join_by_tuple`]).
    fn join_by_memory(&self, held: &[Seen], uf: &mut UnionFind, reuse: &FastMap<usize, Reuse>) {
        if self.counted_at[0].is_empty() && self.counted_at[1].is_empty() && self.quiet.is_empty() {
            return;
        }
        let mut by_place: FastMap<(u32, TupleDigest), usize> = FastMap::default();
        for (i, m) in held.iter().enumerate() {
            if m.fp_kind == fp::ICMP_QUOTE {
                continue;
            }
            let Some(r) = self.last_seen(&m.tuple_key()) else {
                continue;
            };
            if m.fp_kind == fp::TCP_SYN_ISN && Some(m.fingerprint) != r.syn {
                continue;
            }
            match reuse.get(&i) {
                Some(&Reuse::Handshake(isn)) if Some(isn) != r.syn => continue,
                Some(r) if r.is_udp_stretch() => continue,
                _ => {}
            }
            let first = *by_place.entry(r.place).or_insert(i);
            uf.union(first, i);
        }
    }

    /// What a window (or an earlier drain of this one) remembers of a 5-tuple.
    fn last_seen(&self, k: &TupleKey) -> Option<&Remembered> {
        let d = digest(k);
        self.counted_at[0]
            .get(&d)
            .or_else(|| self.counted_at[1].get(&d))
            .or_else(|| self.quiet.get(&d).map(|q| &q.0))
    }

    /// Stitches everything held into connections. Early (a full window) or at the window's
    /// end, the connections of earlier drains of this window and of the last window are
    /// remembered: a connection a drain cuts is one connection, counted once. Each
    /// connection goes to `each` as soon as it is made, and its views leave the held ones
    /// (but for those an early drain lets wait; none waits past the window's end).
    fn stitch(&mut self, each: &mut dyn FnMut(Connection), window_end: bool) {
        // This window's memory is bounded like the held views: past REMEMBERED_PER_HELD x
        // max_held 5-tuples (~32 bytes each) an early drain forgets the last window's
        // (counted in `forgotten`).
        if self.counted_at[0].len() >= REMEMBERED_PER_HELD * self.max_held {
            self.forget_last_window(true);
        }
        self.held_peak = self.held_peak.max(self.held.len() as u64);
        let full = self.held.len() >= self.max_held;
        let early = full && !window_end;
        if full {
            self.early_drains += 1;
            self.evicted += self.held.len() as u64;
        }
        let held = std::mem::take(&mut self.held);
        // Views an early drain hands back to the held ones (`waits_for_its_backend`).
        let mut waiting: Vec<Seen> = Vec::new();
        let window_end_ns = held
            .iter()
            .map(|m| m.last_ns)
            .max()
            .unwrap_or(0)
            .max(self.window_end_ns);
        let mut uf = UnionFind((0..held.len()).collect());
        let (reuse, stretches, reused) = join_by_tuple(&held, &mut uf, digest, &self.readdressed);
        self.reused_tuples += reused;
        join_by_quote(&held, &mut uf);
        self.join_by_fingerprint(&held, &mut uf);
        self.join_by_memory(&held, &mut uf, &reuse);
        let by_time = self.join_by_time(&held, &mut uf);
        rejoin_stretches(&held, &mut uf, &stretches);
        // Group by sorting (root, index): one allocation, members in arrival order.
        let mut order: Vec<(usize, usize)> = (0..held.len()).map(|i| (uf.find(i), i)).collect();
        order.sort_unstable();
        // Members of a connection side by side, moved in place (a copy of every held view
        // would be the window's largest allocation), then taken out group by group.
        let mut held = held;
        gather_in_place(&mut held, order.iter().map(|&(_, i)| i).collect());
        let mut held = held.into_iter();
        let points = Rc::new(self.points.clone());
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            let mut members: Vec<Seen> = held.by_ref().take(group.len()).collect();
            // A UDP stretch of a reused 5-tuple that stayed a connection of its own (no view
            // of the 5-tuple from before it in the group) remembers nothing of the one before.
            let new_stretch = !reuse.is_empty() && {
                let mark = |j: usize| reuse.get(&group[j].1).copied();
                let unmarked: FastSet<TupleKey> = (0..members.len())
                    .filter(|&j| mark(j).is_none())
                    .map(|j| members[j].tuple_key())
                    .collect();
                (0..members.len()).any(|j| {
                    mark(j).is_some_and(Reuse::is_udp_stretch)
                        && !unmarked.contains(&members[j].tuple_key())
                })
            };
            if early
                && waiting.len() + members.len() <= self.max_held / WAITING_SHARE
                && self.waits_for_its_backend(&members)
            {
                waiting.append(&mut members);
                continue;
            }
            // Kernel drops joined the connection by its headers; they are no view of it.
            let mut drops = Vec::new();
            members.retain(|m| {
                let drop = self.points[m.point as usize].is_kernel_drop();
                if drop {
                    drops.push((m.point, m.packets));
                }
                !drop
            });
            if members.is_empty() {
                self.drops_alone += drops.iter().map(|d| d.1).sum::<u64>();
                continue;
            }
            // ICMP errors joined the connection they answer: its evidence, no view of it (a
            // group of errors alone stays as it is: control traffic, no edge).
            let mut icmp_errors = Vec::new();
            if members.iter().any(|m| !m.is_icmp_error()) {
                members.retain(|m| {
                    if m.is_icmp_error() {
                        icmp_errors.push(m.clone());
                    }
                    !m.is_icmp_error()
                });
            }
            // What earlier drains remember of each member's 5-tuple: one lookup each.
            let before: Vec<Option<Remembered>> = members
                .iter()
                .map(|m| self.last_seen(&m.tuple_key()).copied())
                .collect();
            // A connection the last window saw keeps its orientation: a window holding only
            // its replies (a UDP exchange cut by the boundary) must not turn it around.
            let remembered: Vec<Option<bool>> = members
                .iter()
                .zip(&before)
                .map(|(m, r)| r.map(|r| m.source_is_lower() == r.client_lower))
                .collect();
            // A UDP connection begun after its pod address passed to another pod remembers
            // nothing of the one before.
            let last = before
                .iter()
                .flatten()
                .next()
                .copied()
                .filter(|_| !new_stretch);
            // Remembered, but the place it was counted at sees nothing of it now and its
            // packets came long after the last one (late copies of counted packets follow within
            // the path's latency): new packets. A UDP or ICMP 5-tuple used again (by a new pod
            // on a reused address, say) is a new connection; a TCP connection without a new
            // handshake goes on, counted afresh.
            let first_ns = members.iter().map(|m| m.first_ns).min().unwrap_or(0);
            let last = match last {
                Some(r)
                    if !r.quiet
                        && r.long_before(first_ns, self.fingerprint_join_ns)
                        && !self.shows_place(&members, r.place) =>
                {
                    (members[0].protocol == ipproto::TCP).then_some(Remembered { quiet: true, ..r })
                }
                last => last,
            };
            let syn = members
                .iter()
                .find(|m| m.fp_kind == fp::TCP_SYN_ISN)
                .map(|m| m.fingerprint);
            let continued = last.is_some_and(|r| syn.is_none() || syn == r.syn);
            let syn = syn.or(last.filter(|_| continued).and_then(|r| r.syn));
            // Open: TCP, no FIN or RST now, nor in an earlier piece of the same connection.
            let open = members[0].protocol == ipproto::TCP
                && members
                    .iter()
                    .all(|m| m.tcp_flags & (tcp::FIN | tcp::RST) == 0)
                && (!continued || last.is_some_and(|r| r.open));
            let forward = orient(&members, &remembered);
            // A new handshake on a remembered 5-tuple is a new connection: where the old one
            // was counted says nothing of it.
            let (counted_at, replies_counted_at) =
                self.counting_place(&members, &forward, last.filter(|_| continued), syn, open);
            let conn = Connection {
                joined_by_time: by_time.contains(&group[0].0),
                members,
                forward,
                counted_at,
                replies_counted_at,
                continued,
                drops,
                icmp_errors,
                window_end_ns,
                points: points.clone(),
            };
            if Self::adds_nothing(&conn) {
                self.late_copies += 1;
                continue;
            }
            each(conn);
        }
        self.evicted -= waiting.len() as u64;
        self.waited += waiting.len() as u64;
        self.held = waiting;
    }

    /// A connection an early drain finds only at a service's door (the client's views to
    /// the ClusterIP and back), not yet at its backend: its backend's views of the same
    /// packets are likely still to come in this window (a drain cuts by arrival, not by
    /// connection), and stitched now it would be a flow to the service itself and its
    /// backend's views another. It waits in the held views for the next drain, up to
    /// 1/[`WAITING_SHARE`] of them (past that it is stitched as it is).
    fn waits_for_its_backend(&self, members: &[Seen]) -> bool {
        !self.dnat_fronts.is_empty()
            && members.iter().any(|m| !m.is_icmp_error())
            && members.iter().all(|m| {
                m.is_icmp_error()
                    || self.points[m.point as usize].is_kernel_drop()
                    || self.dnat_fronts.contains(&m.src)
                    || self.dnat_fronts.contains(&m.dst)
            })
    }

    /// A piece of a connection an earlier drain already made a flow of, holding only late
    /// copies of packets counted then (nothing to count where it is counted), no drop and no
    /// ICMP error: it adds nothing to that flow. Named from these views alone it could be
    /// another edge: only the service door's side (an edge to the service itself, "no backend
    /// seen") or only the backend's side (the DNATed views on the server's node: an edge with
    /// no service), one flow too many.
    fn adds_nothing(conn: &Connection) -> bool {
        conn.continued
            && conn.drops.is_empty()
            && conn.icmp_errors.is_empty()
            && conn.counters().0 == 0
    }

    /// Whether a member was seen at a counting place (an interface and a 5-tuple's digest).
    fn shows_place(&self, members: &[Seen], (iface, counted): (u32, TupleDigest)) -> bool {
        iface != ALREADY_COUNTED
            && members.iter().any(|m| {
                self.points[m.point as usize].iface_id == iface && digest(&m.tuple_key()) == counted
            })
    }

    /// Chooses (and remembers) where a connection is counted, and where its replies are when
    /// that place sees none; see [`Connection::counted_at`] and
    /// [`Connection::replies_counted_at`].
    fn counting_place(
        &mut self,
        members: &[Seen],
        forward: &[bool],
        last: Option<Remembered>,
        syn: Option<u32>,
        open: bool,
    ) -> (CountingPlace, Option<CountingPlace>) {
        // The distinct 5-tuples: a handful (one per NAT step), however many members.
        let mut keys: Vec<TupleKey> = Vec::with_capacity(4);
        for m in members {
            let k = m.tuple_key();
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let chosen = match last.map(|r| r.place).filter(|p| p.0 != ALREADY_COUNTED) {
            Some((iface, counted)) => match members.iter().find(|m| {
                self.points[m.point as usize].iface_id == iface && digest(&m.tuple_key()) == counted
            }) {
                Some(m) => (iface, m.tuple_key()),
                // Quiet for a window or more: its packets now are new, wherever seen.
                None if last.is_some_and(|r| r.quiet) => {
                    self.new_counting_place(members, forward, &keys)
                }
                // Counted in the last window at a place that saw nothing of it now: what
                // other places saw now are late copies of packets already counted there (a
                // packet seen at one node before a drain and at the other after it). Nothing
                // to count; it is remembered as going on, and if it does, the next window
                // picks a place afresh.
                None => (ALREADY_COUNTED, keys[0]),
            },
            None => self.new_counting_place(members, forward, &keys),
        };
        let place = (chosen.0, digest(&chosen.1));
        let at = |m: &Seen| (self.points[m.point as usize].iface_id, m.tuple_key());
        let saw_replies_now = members
            .iter()
            .zip(forward)
            .any(|(m, &f)| !f && at(m) == chosen);
        let saw_replies_before = last.is_some_and(|r| r.place == place && r.place_saw_replies);
        let replies = if saw_replies_now || saw_replies_before || chosen.0 == ALREADY_COUNTED {
            None
        } else {
            self.replies_place(members, forward, chosen)
        };
        let last_ms = (members.iter().map(|m| m.last_ns).max().unwrap_or(0) / 1_000_000) as u32;
        for k in keys {
            // Which end of this 5-tuple is the client, from a member that shows it.
            let client_lower = members
                .iter()
                .zip(forward)
                .find(|(m, _)| m.tuple_key() == k)
                .is_some_and(|(m, &f)| m.source_is_lower() == f);
            self.counted_at[0].insert(
                digest(&k),
                Remembered {
                    place,
                    client_lower,
                    syn,
                    place_saw_replies: saw_replies_now || saw_replies_before,
                    open,
                    quiet: false,
                    last_ms,
                },
            );
        }
        (chosen, replies)
    }

    /// The interface of the counting place's node that saw the most replies (server ->
    /// client), for a connection whose counting place saw none. Only the same node: a reply
    /// reaches another node's interfaces at another moment, and a drain between the two
    /// would count it twice.
    fn replies_place(
        &self,
        members: &[Seen],
        forward: &[bool],
        chosen: CountingPlace,
    ) -> Option<CountingPlace> {
        let point = |m: &Seen| &self.points[m.point as usize];
        let node = members
            .iter()
            .find(|m| point(m).iface_id == chosen.0)
            .map(|m| point(m).node.as_str())?;
        let mut tally: Vec<(CountingPlace, u64)> = Vec::with_capacity(4);
        for (m, _) in members
            .iter()
            .zip(forward)
            .filter(|(m, f)| !**f && point(m).node == node)
        {
            let p = (point(m).iface_id, m.tuple_key());
            match tally.iter_mut().find(|t| t.0 == p) {
                Some(t) => t.1 += m.packets,
                None => tally.push((p, m.packets)),
            }
        }
        tally.iter().rev().max_by_key(|t| t.1).map(|t| t.0)
    }

    /// The place that saw the most client -> server packets (then the most packets, then
    /// the first seen), for a connection no window counted yet.
    fn new_counting_place(
        &self,
        members: &[Seen],
        forward: &[bool],
        keys: &[TupleKey],
    ) -> CountingPlace {
        let place = |m: &Seen| (self.points[m.point as usize].iface_id, m.tuple_key());
        // Per place: (place, forward packets, packets). A connection crosses a handful of
        // places: a linear scan beats a map.
        let mut tally: Vec<(CountingPlace, u64, u64)> = Vec::with_capacity(8);
        for (m, f) in members.iter().zip(forward) {
            let p = place(m);
            let i = match tally.iter().position(|t| t.0 == p) {
                Some(i) => i,
                None => {
                    tally.push((p, 0, 0));
                    tally.len() - 1
                }
            };
            if *f {
                tally[i].1 += m.packets;
            }
            tally[i].2 += m.packets;
        }
        // Most forward packets, then most packets, then the first place seen.
        tally
            .iter()
            .rev()
            .max_by_key(|t| (t.1, t.2))
            .map_or((0, keys[0]), |t| t.0)
    }

    /// The stitcher's counters for [`crate::Plugin::counters`]: windows stitched early, the
    /// observations they evicted, connections joined by time only, observations held now, and the most held at once.
    pub fn counters(&self) -> Vec<(String, u64)> {
        [
            ("stitch.early_drains", self.early_drains),
            ("stitch.evicted", self.evicted),
            ("stitch.time_joins", self.time_joins),
            ("stitch.fingerprint_collisions", self.fingerprint_collisions),
            ("stitch.held", self.held.len() as u64),
            ("stitch.held_peak", self.held_peak),
            ("stitch.forgotten", self.forgotten),
            ("path.drops_alone", self.drops_alone),
            ("stitch.late_copies", self.late_copies),
            ("stitch.waited", self.waited),
            ("stitch.quiet", self.quiet.len() as u64),
            ("stitch.quiet_forgotten", self.quiet_forgotten),
            ("stitch.reused_5_tuples", self.reused_tuples),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The counting places of the last window stitched, and a way to name an interface id
    /// (for [`snapshot`](Self::snapshot)).
    pub(crate) fn last_places(&self) -> (Vec<(TupleDigest, Remembered)>, IfaceNames<'_>) {
        // The last window's, this one's so far, and the quiet connections (newer first).
        let newer = |k: &TupleDigest| {
            self.counted_at[0].contains_key(k) || self.counted_at[1].contains_key(k)
        };
        let mut places: Vec<(TupleDigest, Remembered)> = self.counted_at[0]
            .iter()
            .chain(
                self.counted_at[1]
                    .iter()
                    .filter(|(k, _)| !self.counted_at[0].contains_key(k)),
            )
            .map(|(k, p)| (*k, *p))
            .chain(
                self.quiet
                    .iter()
                    .filter(|(k, _)| !newer(k))
                    .map(|(k, q)| (*k, q.0)),
            )
            .collect();
        // A stable order, so equal states are equal bytes.
        places.sort_unstable_by_key(|p| p.0);
        let mut names: Vec<(&str, &str)> = vec![("", ""); self.iface_ids.len()];
        for ((node, iface), id) in &self.iface_ids {
            names[*id as usize] = (node, iface);
        }
        (places, names)
    }

    /// The number of an interface, interned when new.
    pub(crate) fn iface_id(&mut self, node: String, iface: String) -> u32 {
        let next = self.iface_ids.len() as u32;
        *self.iface_ids.entry((node, iface)).or_insert(next)
    }

    /// Makes `places` the last window's counting places and the quiet connections (after a
    /// restore; the quiet ones as the longest quiet).
    pub(crate) fn set_last_places(&mut self, places: Vec<(TupleDigest, Remembered)>) {
        let (quiet, last): (Vec<_>, Vec<_>) = places.into_iter().partition(|p| p.1.quiet);
        self.counted_at[1] = last.into_iter().collect();
        self.counted_at[0].clear();
        self.quiet = quiet.into_iter().map(|(k, r)| (k, (r, 0))).collect();
        self.bound_quiet();
    }

    /// How many 5-tuples' counting places are remembered from the last window and this one:
    /// what the stitcher holds beyond the window itself (at most 2 x [`REMEMBERED_PER_HELD`] x
    /// [`max_held`](Self::max_held), plus one drain's).
    pub fn remembered(&self) -> usize {
        self.counted_at[0].len() + self.counted_at[1].len()
    }

    /// How many quiet open connections are remembered ([`Stitcher::quiet`]).
    pub fn quiet(&self) -> usize {
        self.quiet.len()
    }
}

/// (node, iface) by interface id.
pub(crate) type IfaceNames<'a> = Vec<(&'a str, &'a str)>;

/// Reorders `v` so that position `k` holds what was at `from[k]` (`from`, a permutation),
/// by swaps along each cycle of the permutation: no second copy of `v`, each element moved
/// once. (Chasing each index's chain instead cost up to a third of stitching.)
fn gather_in_place<T>(v: &mut [T], mut from: Vec<usize>) {
    for start in 0..v.len() {
        // Walk the cycle through `start`; a visited position points at itself.
        let mut at = start;
        loop {
            let next = from[at];
            from[at] = at;
            if next == start || next == at {
                break;
            }
            v.swap(at, next);
            at = next;
        }
    }
}

/// Views of one fingerprint that belong to one 5-tuple group: where they were seen and when
/// the first was.
struct FpGroup {
    root: usize,
    first_ns: u64,
    points: Vec<u32>,
    /// One of its views bearing the fingerprint.
    view: usize,
}

/// More 5-tuple groups than this sharing one fingerprint is no fingerprint at all (a stack
/// that sends every datagram with one IPv4 ID): nothing is joined by it, and it is counted.
const MAX_FP_GROUPS: usize = 64;

impl Stitcher {
    /// Joins the 5-tuple groups that share a fingerprint: the views of one packet before and
    /// after NAT. A fingerprint is 32 bits at best (an ISN) and 16 at worst (an IPv4 ID with
    /// the payload's length), so among tens of thousands of connections two share one by
    /// chance; two groups are only joined when they can be one packet's views:
    /// - one packet crosses a capture point (one interface, one direction) once, so two
    ///   groups seen at the same point are two connections;
    /// - its views are first seen within `fingerprint_join_ns` of each other.
    ///
    /// Groups of one fingerprint are taken in time order and each joins the nearest earlier
    /// cluster it can belong to; a group with two equally near is joined to none, and
    /// every group kept apart from a cluster of its fingerprint is counted
    /// (`stitch.fingerprint_collisions`).
    fn join_by_fingerprint(&mut self, held: &[Seen], uf: &mut UnionFind) {
        let mut keyed: Vec<((u8, u8, u32), usize)> = held
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.join_fingerprint().map(|k| (k, i)))
            .collect();
        keyed.sort_unstable();
        let mut groups: Vec<FpGroup> = Vec::new();
        for chunk in keyed.chunk_by(|a, b| a.0 == b.0) {
            if chunk.len() < 2 {
                continue;
            }
            groups.clear();
            for &(_, i) in chunk {
                let (root, s) = (uf.find(i), &held[i]);
                match groups.iter_mut().find(|g| g.root == root) {
                    Some(g) => {
                        g.first_ns = g.first_ns.min(s.first_ns);
                        g.points.push(s.point);
                    }
                    None => groups.push(FpGroup {
                        root,
                        first_ns: s.first_ns,
                        points: vec![s.point],
                        view: i,
                    }),
                }
                if groups.len() > MAX_FP_GROUPS {
                    break;
                }
            }
            if groups.len() > MAX_FP_GROUPS {
                self.fingerprint_collisions += chunk.len() as u64;
                continue;
            }
            if groups.len() < 2 {
                continue;
            }
            groups.sort_unstable_by_key(|g| g.first_ns);
            // Clusters: (index of the group that started it, its points, its latest time).
            let mut clusters: Vec<(usize, Vec<u32>, u64)> = Vec::new();
            for (gi, g) in groups.iter().enumerate() {
                let fits = |c: &(usize, Vec<u32>, u64)| {
                    g.first_ns.abs_diff(c.2) <= self.fingerprint_join_ns
                        && !g.points.iter().any(|p| c.1.contains(p))
                        && self.nat_can_relate(&held[g.view], &held[groups[c.0].view])
                };
                let mut near = clusters
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| fits(c))
                    .map(|(ci, c)| (g.first_ns.abs_diff(c.2), ci));
                let best = near.clone().min();
                let tied = best.is_some_and(|(d, ci)| near.any(|(e, cj)| e == d && cj != ci));
                match best {
                    Some((_, ci)) if !tied => {
                        let c = &mut clusters[ci];
                        uf.union(groups[c.0].root, g.root);
                        c.1.extend_from_slice(&g.points);
                        c.2 = c.2.max(g.first_ns);
                    }
                    _ => clusters.push((gi, g.points.clone(), g.first_ns)),
                }
            }
            self.fingerprint_collisions += (clusters.len() - 1) as u64;
        }
    }

    /// Whether `a` and `b` can be one packet before and after NAT: each end is the same
    /// socket in both, or one of its two addresses is one NAT puts there (a node's gateway or
    /// address, a service's door), or (joined by a TCP sequence number) the same address with
    /// another port. A pod's reply and another pod's request never are. NAT never changes an
    /// ICMP message's type: an echo request and a reply never are, though node addresses at
    /// both ends (a node's ping to one pod, another pod's reply to another node) would let
    /// any ends relate. Without learned NAT addresses ([`Stitcher::learn`]) anything else can.
    ///
    /// The same address with another port: conntrack keeps every connection's tuple unique,
    /// so a new connection whose tuple after NAT is an existing entry's (a pod's source port
    /// used to a ClusterIP, then straight to the backend the service picked, or to a second
    /// service over it, while the first is in TIME_WAIT) leaves the node with another source
    /// port and the same address (nf_nat's unique-tuple remap, even without any NAT rule).
    /// Only a sequence number, which NAT never touches, is proof enough that such views are
    /// one connection: IPv4 IDs repeat across a pod's sockets.
    fn nat_can_relate(&self, a: &Seen, b: &Seen) -> bool {
        if a.is_icmp() && a.src_port != b.src_port {
            return false;
        }
        if self.nat_sources.is_empty() && self.dnat_fronts.is_empty() {
            return true;
        }
        let nat = |x: &Ip| self.nat_sources.contains(x) || self.dnat_fronts.contains(x);
        // Joined by fingerprint: both views have the same kind.
        let port_remap = a.fingerprint_is_sequence();
        let (pa, pb) = (a.flow_ports(), b.flow_ports());
        let end = |(x, xp): (Ip, u16), (y, yp): (Ip, u16)| {
            (x, xp) == (y, yp) || (port_remap && x == y) || nat(&x) || nat(&y)
        };
        end((a.src, pa.0), (b.src, pb.0)) && end((a.dst, pa.1), (b.dst, pb.1))
    }

    /// The time fallbacks (module docs); returns the roots of the groups they joined.
    fn join_by_time(&mut self, held: &[Seen], uf: &mut UnionFind) -> FastSet<usize> {
        let mut joined = FastSet::default();
        if self.time_join_ns == 0 {
            return joined;
        }
        // ICMP has no source port to share: a ping from the node and one from a pod would look
        // alike.
        let eligible = |s: &Seen| !s.is_icmp() && s.src_port != 0;
        // Connections whose views already span NAT (more than one 5-tuple, joined by
        // fingerprint or memory) found their other side: a time join would give them a
        // second one. A pod's source port to a ClusterIP and, until just before, straight to
        // the backend: the door's view would take the direct connection, which has the same
        // source socket, though its own backend view (remapped to another port) joined it by
        // its ISN.
        if self.nat_sources.is_empty() && self.dnat_fronts.is_empty() {
            return joined;
        }
        let roots: Vec<usize> = (0..held.len()).map(|i| uf.find(i)).collect();
        // Each group's first 5-tuple, and whether another one is in it.
        let mut tuples: FastMap<usize, (TupleKey, bool)> = FastMap::default();
        for (s, &root) in held.iter().zip(&roots) {
            let key = s.tuple_key();
            tuples
                .entry(root)
                .and_modify(|(first, spans)| *spans |= *first != key)
                .or_insert((key, false));
        }
        let spans_nat: Vec<bool> = roots.iter().map(|r| tuples[r].1).collect();
        // SNAT keeps the protocol, source port and destination; the source is a NAT source.
        if !self.nat_sources.is_empty() {
            let nat = &self.nat_sources;
            self.time_joins += self.join_pairs(
                held,
                uf,
                &mut joined,
                &spans_nat,
                |s| eligible(s) && nat.contains(&s.src),
                |s| eligible(s) && !nat.contains(&s.src),
                |s| (s.protocol, s.src_port, s.dst, s.dst_port),
                |s| (s.src, 0),
            );
        }
        // DNAT keeps the protocol and the source socket; the destination was a service's door.
        if !self.dnat_fronts.is_empty() {
            let fronts = &self.dnat_fronts;
            self.time_joins += self.join_pairs(
                held,
                uf,
                &mut joined,
                &spans_nat,
                |s| eligible(s) && fronts.contains(&s.dst),
                |s| eligible(s) && !fronts.contains(&s.dst) && !fronts.contains(&s.src),
                |s| (s.protocol, s.src_port, s.src, 0),
                |s| (s.dst, s.dst_port),
            );
        }
        // Roots may have moved on later unions.
        joined.iter().map(|&r| uf.find(r)).collect()
    }

    /// Joins each `translated` view (after NAT) to the one `original` view (before it) with
    /// the same `key`, when each side's views all agree on `party` (else nobody can say which
    /// is the other's twin), their first sightings are within `time_join_ns`, and no
    /// fingerprints of one kind contradict.
    fn join_pairs(
        &self,
        held: &[Seen],
        uf: &mut UnionFind,
        joined: &mut FastSet<usize>,
        spans_nat: &[bool],
        translated: impl Fn(&Seen) -> bool,
        original: impl Fn(&Seen) -> bool,
        key: impl Fn(&Seen) -> (u8, u16, Ip, u16),
        party: impl Fn(&Seen) -> (Ip, u16),
    ) -> u64 {
        // The translated views are few: index them, then look the rest up.
        let mut after: FastMap<(u8, u16, Ip, u16), Candidate> = FastMap::default();
        for (i, s) in held.iter().enumerate() {
            if translated(s) {
                after
                    .entry(key(s))
                    .and_modify(|c| c.add(held, i, &party))
                    .or_insert(Candidate::new(i));
            }
        }
        if after.is_empty() {
            return 0;
        }
        let mut before: FastMap<(u8, u16, Ip, u16), Candidate> = FastMap::default();
        for (i, s) in held.iter().enumerate() {
            if original(s) && after.contains_key(&key(s)) {
                before
                    .entry(key(s))
                    .and_modify(|c| c.add(held, i, &party))
                    .or_insert(Candidate::new(i));
            }
        }
        let mut n = 0;
        for (k, t) in &after {
            let Some(o) = before.get(k) else { continue };
            if t.ambiguous || o.ambiguous {
                continue;
            }
            let (a, b) = (t.earliest, o.earliest);
            if spans_nat[a]
                || spans_nat[b]
                || uf.find(a) == uf.find(b)
                || held[a].first_ns.abs_diff(held[b].first_ns) > self.time_join_ns
            {
                continue;
            }
            // Fingerprints of one kind that differ prove two connections.
            let (fa, fb) = (held[a].join_fingerprint(), held[b].join_fingerprint());
            if let (Some(fa), Some(fb)) = (fa, fb)
                && fa.1 == fb.1
                && fa != fb
            {
                continue;
            }
            uf.union(a, b);
            joined.insert(uf.find(a));
            n += 1;
        }
        n
    }
}

/// The views of one side of a possible time join: the earliest, and whether they disagree on
/// the party that must be one (more than one client behind a gateway, more than one backend
/// behind a door).
struct Candidate {
    earliest: usize,
    ambiguous: bool,
}

impl Candidate {
    fn new(i: usize) -> Candidate {
        Candidate {
            earliest: i,
            ambiguous: false,
        }
    }

    fn add(&mut self, held: &[Seen], i: usize, party: impl Fn(&Seen) -> (Ip, u16)) {
        let (e, s) = (&held[self.earliest], &held[i]);
        self.ambiguous |= party(s) != party(e);
        if s.first_ns < e.first_ns {
            self.earliest = i;
        }
    }
}

/// Orients every member: seeds from what packets say of themselves, then propagates along
/// shared 5-tuples (same source = same direction) and shared fingerprints (same direction).
///
/// Linear in the number of members: each tuple group and each fingerprint group is expanded
/// once, from the first member of it that gets a direction. (A connection can be large: a
/// ping flood, or every replica of a flow in a long window.)
/// Marks each member client -> server (true) or not. A member's own direction (a handshake,
/// an echo request) comes first, then `remembered` (what the last window knew of its
/// 5-tuple), then what propagates from those; with nothing at all, who spoke first.
fn orient(members: &[Seen], remembered: &[Option<bool>]) -> Vec<bool> {
    orient_scanning_up_to(members, remembered, ORIENT_SCAN_UP_TO)
}

/// [`orient`], scanning connections of up to `scan_up_to` views (the tests compare both ways).
fn orient_scanning_up_to(
    members: &[Seen],
    remembered: &[Option<bool>],
    scan_up_to: usize,
) -> Vec<bool> {
    let n = members.len();
    let mut dir: Vec<Option<bool>> = members
        .iter()
        .zip(remembered)
        .map(|(m, r)| m.own_direction().or(*r))
        .collect();
    let mut kin = Kin::new(members, scan_up_to);
    let mut queue: Vec<usize> = (0..n).filter(|&i| dir[i].is_some()).collect();
    if queue.is_empty() && n > 0 {
        // Nothing says: the ports, when one end's is a client's (the kernel's ephemeral range)
        // and the other's a listener's (a window holding only a connection's replies, its
        // requests in an earlier one); else the side that spoke first is the client, on a
        // tie the one talking to the lower (service-like) port.
        let first = (0..n)
            .min_by_key(|&i| {
                (
                    members[i].first_ns,
                    members[i].dst_port > members[i].src_port,
                    i,
                )
            })
            .unwrap_or(0);
        dir[first] = Some(members[first].client_by_ports().unwrap_or(true));
        queue.push(first);
    }
    let mut next_unset = 0;
    loop {
        while let Some(i) = queue.pop() {
            let d = dir[i].expect("queued members have a direction");
            let a = &members[i];
            kin.same_tuple(i, &mut |j| {
                if dir[j].is_none() {
                    let b = &members[j];
                    let same_way = (a.src, a.flow_ports().0) == (b.src, b.flow_ports().0);
                    dir[j] = Some(if same_way { d } else { !d });
                    queue.push(j);
                }
            });
            kin.same_fingerprint(i, &mut |j| {
                if dir[j].is_none() {
                    dir[j] = Some(d);
                    queue.push(j);
                }
            });
        }
        // Members joined only through kinds that do not propagate: orient each alone.
        while next_unset < n && dir[next_unset].is_some() {
            next_unset += 1;
        }
        if next_unset == n {
            break;
        }
        dir[next_unset] = Some(true);
        queue.push(next_unset);
    }
    dir.into_iter().map(|d| d.unwrap_or(true)).collect()
}

/// A connection of more views than this is oriented through maps; fewer (nearly all) by
/// scanning its views, which builds nothing: two maps of vectors per connection were a fifth
/// of stitching.
const ORIENT_SCAN_UP_TO: usize = 32;

/// Which members share member i's 5-tuple, and which its join fingerprint: each group is
/// visited once (from its first member to come up), in index order.
enum Kin {
    Scan {
        tuple_of: Vec<TupleKey>,
        fp_of: Vec<Option<(u8, u8, u32)>>,
        tuple_done: Vec<bool>,
        fp_done: Vec<bool>,
    },
    Maps {
        tuple_of: Vec<TupleKey>,
        fp_of: Vec<Option<(u8, u8, u32)>>,
        tuple_groups: FastMap<TupleKey, Vec<usize>>,
        fp_groups: FastMap<(u8, u8, u32), Vec<usize>>,
    },
}

impl Kin {
    fn new(members: &[Seen], scan_up_to: usize) -> Kin {
        let tuple_of: Vec<TupleKey> = members.iter().map(Seen::tuple_key).collect();
        let fp_of: Vec<_> = members.iter().map(Seen::join_fingerprint).collect();
        let n = members.len();
        if n <= scan_up_to {
            return Kin::Scan {
                tuple_of,
                fp_of,
                tuple_done: vec![false; n],
                fp_done: vec![false; n],
            };
        }
        let mut tuple_groups: FastMap<TupleKey, Vec<usize>> = FastMap::default();
        let mut fp_groups: FastMap<(u8, u8, u32), Vec<usize>> = FastMap::default();
        for i in 0..n {
            tuple_groups.entry(tuple_of[i]).or_default().push(i);
            if let Some(f) = fp_of[i] {
                fp_groups.entry(f).or_default().push(i);
            }
        }
        Kin::Maps {
            tuple_of,
            fp_of,
            tuple_groups,
            fp_groups,
        }
    }

    fn same_tuple(&mut self, i: usize, each: &mut dyn FnMut(usize)) {
        match self {
            Kin::Scan {
                tuple_of,
                tuple_done,
                ..
            } => {
                if tuple_done[i] {
                    return;
                }
                let t = tuple_of[i];
                for j in 0..tuple_of.len() {
                    if tuple_of[j] == t {
                        tuple_done[j] = true;
                        each(j);
                    }
                }
            }
            Kin::Maps {
                tuple_of,
                tuple_groups,
                ..
            } => {
                for j in tuple_groups.remove(&tuple_of[i]).unwrap_or_default() {
                    each(j);
                }
            }
        }
    }

    fn same_fingerprint(&mut self, i: usize, each: &mut dyn FnMut(usize)) {
        match self {
            Kin::Scan { fp_of, fp_done, .. } => {
                let Some(f) = fp_of[i].filter(|_| !fp_done[i]) else {
                    return;
                };
                for j in 0..fp_of.len() {
                    if fp_of[j] == Some(f) {
                        fp_done[j] = true;
                        each(j);
                    }
                }
            }
            Kin::Maps {
                fp_of, fp_groups, ..
            } => {
                if let Some(group) = fp_of[i].and_then(|f| fp_groups.remove(&f)) {
                    for j in group {
                        each(j);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{BatchBuilder, Row, ip};
    use crate::{Direction, IfaceKind};

    #[test]
    fn views_join_by_their_whole_tuple_even_when_digests_collide() {
        let b = BatchBuilder::new()
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Egress)
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Ingress)
            .row(Row::flow(6, "10.0.0.1", 40000, "10.0.0.2", 80))
            .row(Row::flow(6, "10.0.0.1", 40001, "10.0.0.2", 80))
            .row(Row::flow(6, "10.0.0.2", 80, "10.0.0.1", 40000).at(1))
            .row(Row::flow(6, "10.0.0.3", 40000, "10.0.0.2", 80))
            .row(Row::flow(6, "10.0.0.2", 80, "10.0.0.3", 40000).at(1))
            .build();
        let held: Vec<Seen> = batch_rows(&b)
            .map(|o| Seen::from_obs(&o, u32::from(b.point[o.index()])))
            .collect();
        // Every 5-tuple with the same digest: only the whole tuple may join.
        for same_digest in [false, true] {
            let mut uf = UnionFind((0..held.len()).collect());
            let none = FastMap::default();
            let _ = join_by_tuple(
                &held,
                &mut uf,
                |k| if same_digest { 7 } else { digest(k) },
                &none,
            );
            let roots: Vec<usize> = (0..held.len()).map(|i| uf.find(i)).collect();
            assert_eq!(roots, [0, 1, 0, 3, 3], "same digest for all: {same_digest}");
        }
    }

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

    /// 4 000 DNS-like queries (same payload length) from one pod through a ClusterIP, each
    /// seen before DNAT on the client's veth and after it on the server's node, with IPv4 IDs
    /// drawn from 256 values: every ID is shared by ~16 connections, as 16-bit IDs are among
    /// tens of thousands. Each connection must come out once, with its own two views.
    #[test]
    fn connections_sharing_a_fingerprint_by_chance_are_never_merged() {
        let mut b = BatchBuilder::new()
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Ingress)
            .point("b", "veth9", IfaceKind::PodVeth, Direction::Egress);
        let mut seed = 0x2545_f491_u32;
        let n = 4_000u32;
        for i in 0..n {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let id = 1 + (seed & 0xff);
            let port = 20_000 + i as u16;
            let at = 1_000 + u64::from(i) * 1_000_000; // one query per ms
            let mut pre = Row::flow(17, "10.244.0.5", port, "10.96.0.10", 53)
                .at(0)
                .fingerprint(fp::IPV4_ID, id << 16 | 40);
            pre.first_ns = at;
            pre.last_ns = at;
            // 40-90 us later, after DNAT, on the server's node.
            let mut post = Row::flow(17, "10.244.0.5", port, "10.244.1.7", 53)
                .at(1)
                .fingerprint(fp::IPV4_ID, id << 16 | 40);
            post.first_ns = at + 40_000 + u64::from(seed % 50_000);
            post.last_ns = post.first_ns;
            b = b.row(pre).row(post);
        }
        let mut s = Stitcher::default();
        assert!(s.add_batch(&b.build()).is_empty());
        let conns = s.drain();
        assert_eq!(conns.len(), n as usize);
        for c in &conns {
            let ports: Vec<u16> = c.members.iter().map(|m| m.src_port).collect();
            assert_eq!(c.members.len(), 2, "{ports:?}");
            assert_eq!(ports[0], ports[1], "two views of one query");
        }
        // Every connection beyond the first of its ID was kept apart, and said so.
        let collisions = s
            .counters()
            .into_iter()
            .find(|(k, _)| k == "stitch.fingerprint_collisions");
        assert!(
            collisions
                .as_ref()
                .is_some_and(|(_, v)| *v >= u64::from(n) - 256),
            "{collisions:?}"
        );
    }

    /// Two connections on one 5-tuple in one window (a deleted pod's address and port used
    /// again by its successor, to the same service and backend), seen at the client's veth
    /// (to the ClusterIP and back) and, after DNAT, at the backend's veth on another node:
    /// the capture keeps them apart at each point (`fp::opens_another`), and so must the
    /// stitcher, each connection with its own views and packets.
    #[test]
    fn two_connections_on_one_5_tuple_in_one_window_stay_two() {
        let ms = 1_000_000;
        let conn = |syn: u32, synack: u32, at: u64, packets: u64| {
            [
                Row::flow(6, "10.244.0.5", 40000, "10.96.0.10", 80)
                    .at(0)
                    .fingerprint(fp::TCP_SYN_ISN, syn)
                    .flags(tcp::SYN | tcp::ACK | tcp::FIN)
                    .during(at, at + 9 * ms)
                    .counters(packets, packets * 100),
                Row::flow(6, "10.244.0.5", 40000, "10.244.1.7", 8080)
                    .at(1)
                    .fingerprint(fp::TCP_SYN_ISN, syn)
                    .flags(tcp::SYN | tcp::ACK | tcp::FIN)
                    .during(at + ms / 10, at + 9 * ms)
                    .counters(packets, packets * 100),
                Row::flow(6, "10.244.1.7", 8080, "10.244.0.5", 40000)
                    .at(1)
                    .fingerprint(fp::TCP_SYNACK_ISN, synack)
                    .flags(tcp::SYN | tcp::ACK | tcp::FIN)
                    .during(at + ms / 5, at + 9 * ms)
                    .counters(2, 200),
                Row::flow(6, "10.96.0.10", 80, "10.244.0.5", 40000)
                    .at(0)
                    .fingerprint(fp::TCP_SYNACK_ISN, synack)
                    .flags(tcp::SYN | tcp::ACK | tcp::FIN)
                    .during(at + ms / 4, at + 9 * ms)
                    .counters(2, 200),
            ]
        };
        let mut b = BatchBuilder::new()
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Ingress)
            .point("b", "veth9", IfaceKind::PodVeth, Direction::Egress);
        for r in conn(111, 900, 0, 5)
            .into_iter()
            .chain(conn(222, 700, 1_000 * ms, 7))
        {
            b = b.row(r);
        }
        let mut s = Stitcher::default();
        s.add_batch(&b.build());
        let mut conns = s.drain();
        conns.sort_by_key(|c| c.members[0].first_ns);
        assert_eq!(conns.len(), 2);
        // Requests and replies, at one place.
        for (c, (syn, packets)) in conns.iter().zip([(111, 5 + 2), (222, 7 + 2)]) {
            assert_eq!(c.members.len(), 4);
            assert!(
                c.members
                    .iter()
                    .all(|m| m.fingerprint == syn || m.fp_kind == fp::TCP_SYNACK_ISN)
            );
            assert!(!c.continued);
            assert_eq!(c.counters().0, packets, "counted once, at one place");
        }
        // Both of the window's 5-tuples (before and after DNAT) carried two connections.
        let reused = s
            .counters()
            .into_iter()
            .find(|(k, _)| k == "stitch.reused_5_tuples");
        assert_eq!(reused.map(|r| r.1), Some(2));
    }

    /// The tail of a connection opened in the last window (no handshake now, its FIN), then a
    /// new connection on the same 5-tuple: the tail goes on the old connection, the new one
    /// is new.
    #[test]
    fn a_connection_ending_and_another_starting_on_its_5_tuple_stay_two() {
        let ms = 1_000_000;
        let req = || Row::flow(6, "10.244.0.5", 40000, "10.244.1.7", 80);
        let rep = || Row::flow(6, "10.244.1.7", 80, "10.244.0.5", 40000);
        let mut s = Stitcher::default();
        s.add_batch(&window(vec![
            req()
                .fingerprint(fp::TCP_SYN_ISN, 1)
                .during(0, ms)
                .counters(3, 300),
            rep()
                .fingerprint(fp::TCP_SYNACK_ISN, 2)
                .during(ms / 2, ms)
                .counters(2, 200),
        ]));
        assert_eq!(s.drain().len(), 1);
        s.add_batch(&window(vec![
            req()
                .fingerprint(fp::TCP_SEQ, 4)
                .flags(tcp::ACK | tcp::FIN)
                .during(5_000 * ms, 5_001 * ms)
                .counters(2, 100),
            rep()
                .fingerprint(fp::TCP_SEQ, 3)
                .flags(tcp::ACK | tcp::FIN)
                .during(5_000 * ms, 5_001 * ms)
                .counters(2, 100),
            req()
                .fingerprint(fp::TCP_SYN_ISN, 77)
                .during(6_000 * ms, 6_001 * ms)
                .counters(4, 400),
            rep()
                .fingerprint(fp::TCP_SYNACK_ISN, 88)
                .during(6_000 * ms + 1, 6_001 * ms)
                .counters(3, 300),
        ]));
        let mut conns = s.drain();
        conns.sort_by_key(|c| c.members[0].first_ns);
        assert_eq!(conns.len(), 2);
        assert!(conns[0].continued, "the old connection's tail");
        assert_eq!(conns[0].counters().0, 4);
        assert!(!conns[1].continued, "the new handshake");
        assert_eq!(conns[1].counters().0, 7);
        // The next window continues the new one.
        s.add_batch(&window(vec![
            req()
                .fingerprint(fp::TCP_SEQ, 80)
                .during(11_000 * ms, 11_001 * ms),
        ]));
        let next = s.drain();
        assert_eq!(next.len(), 1);
        assert!(next[0].continued);
    }

    /// Two DNS queries from one address and port to a ClusterIP, 2 s apart: the capture keeps
    /// them apart at the client's veth (a UDP 5-tuple heard again after a silence). They are
    /// two connections when the address passed to another pod in between (the inventory
    /// says when), or when DNAT sent them to two backends (one conntrack entry keeps its
    /// NAT); otherwise one, as conntrack keeps one entry: to the same backend, or when the
    /// second was never seen past the door.
    #[test]
    fn a_udp_5_tuple_heard_again_is_two_connections_when_its_pod_or_its_nat_changed() {
        let sec = 1_000_000_000;
        // `veth`: the client pod's veth (the new pod's is another, or the same when the
        // capture point is shared, as a node's uplink is).
        let query = |at: u64, veth: usize, backend: &str, id: u32| {
            [
                Row::flow(17, "10.244.0.5", 40000, "10.96.0.10", 53)
                    .at(veth)
                    .fingerprint(fp::IPV4_ID, id << 16 | 30)
                    .during(at, at),
                Row::flow(17, "10.244.0.5", 40000, backend, 53)
                    .at(1)
                    .fingerprint(fp::IPV4_ID, id << 16 | 30)
                    .during(at + 100_000, at + 100_000),
                Row::flow(17, backend, 53, "10.244.0.5", 40000)
                    .at(1)
                    .fingerprint(fp::IPV4_ID, (id + 1) << 16 | 60)
                    .during(at + 200_000, at + 200_000),
                Row::flow(17, "10.96.0.10", 53, "10.244.0.5", 40000)
                    .at(veth)
                    .fingerprint(fp::IPV4_ID, (id + 1) << 16 | 60)
                    .during(at + 300_000, at + 300_000),
            ]
        };
        // The second query: from which veth, DNATed to which backend (None: not seen there).
        let batch = |new_veth: usize, backend: Option<&str>| {
            let mut b = BatchBuilder::new()
                .point("a", "veth1", IfaceKind::PodVeth, Direction::Ingress)
                .point("b", "veth9", IfaceKind::PodVeth, Direction::Egress)
                .point("a", "veth2", IfaceKind::PodVeth, Direction::Ingress);
            let second = query(3 * sec, new_veth, backend.unwrap_or("10.244.1.9"), 200);
            let second = second
                .into_iter()
                .filter(|r| backend.is_some() || r.point != 1);
            for r in query(sec, 0, "10.244.1.7", 100).into_iter().chain(second) {
                b = b.row(r);
            }
            b.build()
        };
        let stitched = |readdressed_at: Option<u64>, new_veth, backend| {
            let mut s = Stitcher::default();
            if let Some(t) = readdressed_at {
                s.readdressed.insert(ip("10.244.0.5"), vec![t]);
            }
            s.add_batch(&batch(new_veth, backend));
            s.drain()
        };
        // The address passed to another pod between them: two, whatever the backends.
        for (veth, backend) in [(0, "10.244.1.8"), (2, "10.244.1.8"), (0, "10.244.1.7")] {
            let conns = stitched(Some(2 * sec), veth, Some(backend));
            assert_eq!(conns.len(), 2, "{veth} {backend}");
            for c in &conns {
                assert_eq!(c.members.len(), 4);
                assert!(!c.continued);
                assert_eq!(c.counters().0, 2, "query and answer at the client's veth");
            }
        }
        // Not readdressed (or at another time): two only when DNAT chose another backend.
        for readdressed_at in [None, Some(5 * sec)] {
            let conns = stitched(readdressed_at, 0, Some("10.244.1.8"));
            assert_eq!(conns.len(), 2);
            for c in &conns {
                let backends: FastSet<Ip> = c
                    .members
                    .iter()
                    .filter(|m| m.point == 1)
                    .map(|m| m.dst.min(m.src))
                    .collect();
                assert_eq!(backends.len(), 1, "one backend each");
                assert_eq!(c.counters().0, 2);
            }
            let one = stitched(readdressed_at, 0, Some("10.244.1.7"));
            assert_eq!(one.len(), 1, "the same backend: one conntrack entry");
            assert_eq!(one[0].counters().0, 4);
            assert_eq!(
                stitched(readdressed_at, 0, None).len(),
                1,
                "not seen past the door"
            );
        }
    }

    /// A batch of `rows`, all seen at one pod veth.
    fn window(rows: Vec<Row>) -> ObservationBatch {
        let mut b = BatchBuilder::new().point("a", "veth1", IfaceKind::PodVeth, Direction::Unknown);
        for r in rows {
            b = b.row(r);
        }
        b.build()
    }

    #[test]
    fn a_connection_the_last_window_held_is_continued_unless_it_shakes_hands_again() {
        let udp = || Row::flow(17, "10.244.0.5", 50503, "10.244.1.7", 5353);
        let syn =
            || Row::flow(6, "10.244.0.5", 40000, "10.244.1.7", 80).fingerprint(fp::TCP_SYN_ISN, 1);
        let mut s = Stitcher::default();
        s.add_batch(&window(vec![udp(), syn()]));
        assert!(
            s.drain().iter().all(|c| !c.continued),
            "new in the first window"
        );
        s.add_batch(&window(vec![udp(), syn().fingerprint(fp::TCP_SYN_ISN, 2)]));
        let second = s.drain();
        let continued = |p: u8| {
            second
                .iter()
                .find(|c| c.members[0].protocol == p)
                .unwrap()
                .continued
        };
        assert!(continued(17), "the UDP exchange goes on");
        assert!(
            !continued(6),
            "a new handshake on the same ports is a new connection"
        );
    }

    /// A pooled TCP connection quiet for windows (no packet, no FIN) is the same connection
    /// when it speaks again without a new handshake: one flow, its new packets counted. Once
    /// closed it is not remembered (#20: 1 s windows counted pooled connections 1.14x).
    #[test]
    fn an_open_connection_quiet_for_windows_is_one_connection_when_it_speaks_again() {
        let sec = 1_000_000_000;
        let tcp = |at: u64| {
            Row::flow(6, "10.244.0.5", 40000, "10.244.1.7", 80)
                .fingerprint(fp::TCP_SEQ, 5)
                .during(at, at + 1000)
        };
        let quiet_windows = |s: &mut Stitcher| {
            for _ in 0..3 {
                s.add_batch(&window(vec![]));
                assert!(s.drain().is_empty());
            }
        };
        let mut s = Stitcher::default();
        s.add_batch(&window(vec![
            tcp(sec)
                .fingerprint(fp::TCP_SYN_ISN, 9)
                .flags(tcp::SYN | tcp::ACK),
        ]));
        assert!(!s.drain()[0].continued);
        quiet_windows(&mut s);
        assert_eq!(s.quiet(), 1, "remembered while quiet");
        s.add_batch(&window(vec![tcp(20 * sec).flags(tcp::ACK)]));
        let again = s.drain();
        assert!(again[0].continued, "the same connection: {again:?}");
        assert_eq!(again[0].counters().0, 1, "its new packet counted");
        // It closes, then stays quiet: nothing is left of it.
        s.add_batch(&window(vec![tcp(21 * sec).flags(tcp::FIN | tcp::ACK)]));
        assert!(s.drain()[0].continued);
        quiet_windows(&mut s);
        assert_eq!(s.quiet(), 0, "a closed connection is forgotten");
        // Its ports again, without a handshake (no FIN seen by another view of it, say):
        // nothing remembers them now, so this is a connection of its own.
        s.add_batch(&window(vec![tcp(40 * sec).flags(tcp::ACK)]));
        assert!(!s.drain()[0].continued);
    }

    /// Quiet connections are bounded (QUIET_PER_HELD x max_held); past the bound the longest
    /// quiet go, counted.
    #[test]
    fn quiet_connections_are_bounded_and_what_goes_is_counted() {
        let mut s = Stitcher::new(64);
        let open = |port: u16| Row::flow(6, "10.244.0.5", port, "10.244.1.7", 80).flags(tcp::ACK);
        let bound = QUIET_PER_HELD * 64;
        s.add_batch(&window((0..bound as u16).map(open).collect()));
        s.drain();
        s.add_batch(&window((1000..1010).map(open).collect()));
        s.drain();
        // The first window is now neither this one nor the last.
        assert_eq!(
            (s.quiet(), s.quiet_forgotten),
            (bound, 0),
            "all open, all kept"
        );
        s.add_batch(&window(vec![]));
        s.drain();
        // Ten more than the bound: down to 3/4 of it, the first window's going first.
        assert_eq!(s.quiet(), bound * 3 / 4);
        assert_eq!(s.quiet_forgotten as usize, bound + 10 - bound * 3 / 4);
        s.add_batch(&window(vec![open(1005)]));
        assert!(s.drain()[0].continued, "the newest stay");
    }

    /// A UDP 5-tuple seen again at another place long after its last packet (a new pod on a
    /// reused address that picked the same port) is a new connection, counted; a late copy
    /// there within the path's latency is not.
    #[test]
    fn a_udp_tuple_used_again_long_after_and_elsewhere_is_a_new_connection() {
        let sec = 1_000_000_000;
        let points = || {
            BatchBuilder::new()
                .point("a", "veth1", IfaceKind::PodVeth, Direction::Unknown)
                .point("a", "veth2", IfaceKind::PodVeth, Direction::Unknown)
        };
        let query = |at: u64| Row::flow(17, "10.244.0.5", 40000, "10.244.1.9", 53).during(at, at);
        let mut s = Stitcher::default();
        s.add_batch(&points().row(query(sec)).build());
        assert_eq!(s.drain()[0].counters().0, 1);
        s.add_batch(&points().row(query(sec + sec / 1000).at(1)).build());
        assert!(s.drain().is_empty(), "a late copy 1 ms later");
        s.add_batch(&points().row(query(4 * sec).at(1)).build());
        let again = s.drain();
        assert!(!again[0].continued, "a new connection: {again:?}");
        assert_eq!(again[0].counters().0, 1, "counted");
    }

    /// A full window drains early; a connection whose views fall on both sides of such drains
    /// (its SYN seen at one point before, at another after) is one connection, remembered
    /// across every drain of the window, not only the last (#20: 100 000 connections per
    /// window counted pooled connections twice).
    #[test]
    fn a_connection_cut_by_early_drains_is_one_connection_across_them() {
        let syn = |isn| {
            Row::flow(6, "10.244.0.5", 40000, "10.244.1.7", 80).fingerprint(fp::TCP_SYN_ISN, isn)
        };
        let other = |port| Row::flow(17, "10.244.0.6", port, "10.244.1.8", 53);
        let mut s = Stitcher::new(2);
        let mut conns = s.add_batch(&window(vec![
            syn(9),
            other(1),
            other(2),
            other(3),
            other(4),
            syn(9),
        ]));
        conns.extend(s.drain());
        // The next window: the same ports shake hands anew.
        s.add_batch(&window(vec![syn(10)]));
        conns.extend(s.drain());
        let tcp: Vec<bool> = conns
            .iter()
            .filter(|c| c.members[0].protocol == 6)
            .map(|c| c.continued)
            .collect();
        assert_eq!(
            tcp,
            [false, true, false],
            "new; the same handshake two drains later; a new handshake"
        );
        assert_eq!(s.early_drains, 3);
        assert_eq!(s.forgotten, 0);
    }

    /// Ping sessions are told apart by their echo identifier (the destination port column),
    /// as conntrack tells them: two `ping` runs between the same ends in one window are two
    /// connections, each request joined with its replies; an edge shows ICMP's code, 0.
    #[test]
    fn echo_identifiers_tell_ping_sessions_apart() {
        let ping = |ty: u8, id: u16, forward: bool| {
            let (a, b) = ("10.244.0.0", "10.244.1.7");
            let (src, dst) = if forward { (a, b) } else { (b, a) };
            Row::flow(1, src, u16::from(ty), dst, id)
        };
        let mut s = Stitcher::default();
        s.add_batch(&window(vec![
            ping(8, 700, true),
            ping(0, 700, false),
            ping(8, 701, true),
            ping(0, 701, false),
        ]));
        let conns = s.drain();
        assert_eq!(conns.len(), 2, "{conns:#?}");
        for c in &conns {
            assert_eq!(c.members.len(), 2);
            assert_eq!(c.members[0].dst_port, c.members[1].dst_port);
            assert_eq!(c.forward, [true, false]);
            assert_eq!(c.members[0].server_port(), 0);
        }
        let reply = Seen::from_obs(
            &batch_rows(&window(vec![ping(0, 9, false)])).next().unwrap(),
            0,
        );
        let turned = reply.turned_around();
        assert_eq!(
            (turned.src_port, turned.dst_port),
            (8, 9),
            "a reply read as its request"
        );
    }

    #[test]
    fn gathering_in_place_applies_any_permutation() {
        let mut seed = 7u64;
        for n in [0usize, 1, 2, 3, 10, 257] {
            let mut from: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                from.swap(i, (seed >> 33) as usize % (i + 1));
            }
            let mut v: Vec<usize> = (0..n).map(|i| i * 10).collect();
            gather_in_place(&mut v, from.clone());
            let want: Vec<usize> = from.iter().map(|&i| i * 10).collect();
            assert_eq!(v, want, "n = {n}");
        }
    }

    #[test]
    fn a_fingerprint_joins_only_views_that_nat_can_relate() {
        let b = BatchBuilder::new()
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Ingress)
            .point("b", "veth9", IfaceKind::PodVeth, Direction::Egress)
            .point("b", "veth8", IfaceKind::PodVeth, Direction::Ingress)
            // client -> ClusterIP, then after DNAT and the gateway's SNAT: one packet
            .row(
                Row::flow(17, "10.244.0.5", 40000, "10.96.0.10", 53)
                    .at(0)
                    .fingerprint(fp::IPV4_ID, 9 << 16 | 40),
            )
            .row(
                Row::flow(17, "10.244.0.0", 40000, "10.244.1.7", 53)
                    .at(1)
                    .fingerprint(fp::IPV4_ID, 9 << 16 | 40),
            )
            // another pod's reply with the same IPv4 ID and length, by chance
            .row(
                Row::flow(17, "10.244.1.9", 53, "10.244.0.8", 3333)
                    .at(2)
                    .fingerprint(fp::IPV4_ID, 9 << 16 | 40),
            )
            .build();
        let mut s = Stitcher {
            nat_sources: ["10.244.0.0".parse().unwrap()].into_iter().collect(),
            dnat_fronts: ["10.96.0.10".parse().unwrap()].into_iter().collect(),
            ..Stitcher::default()
        };
        s.add_batch(&b);
        let mut sizes: Vec<usize> = s.drain().iter().map(|c| c.members.len()).collect();
        sizes.sort();
        assert_eq!(sizes, [1, 2]);
        assert_eq!(s.fingerprint_collisions, 1);
    }

    /// conntrack's unique-tuple remap gives a pod's connection another source port on its way
    /// out, its address kept: a TCP sequence number joins the views on either side of it; an
    /// IPv4 ID, which a pod's sockets share, does not.
    #[test]
    fn a_sequence_number_joins_across_a_source_port_remap_an_ipv4_id_does_not() {
        let b = BatchBuilder::new()
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Ingress)
            .point("a", "eth0", IfaceKind::Uplink, Direction::Egress)
            .row(
                Row::flow(6, "10.123.10.5", 32904, "10.123.20.70", 8080)
                    .at(0)
                    .fingerprint(fp::TCP_SYN_ISN, 2511376236),
            )
            .row(
                Row::flow(6, "10.123.10.5", 31052, "10.123.20.70", 8080)
                    .at(1)
                    .fingerprint(fp::TCP_SYN_ISN, 2511376236),
            )
            .row(
                Row::flow(17, "10.123.10.5", 40000, "10.123.20.70", 53)
                    .at(0)
                    .fingerprint(fp::IPV4_ID, 9 << 16 | 40),
            )
            .row(
                Row::flow(17, "10.123.10.5", 40001, "10.123.20.70", 53)
                    .at(1)
                    .fingerprint(fp::IPV4_ID, 9 << 16 | 40),
            )
            .build();
        let mut s = Stitcher {
            dnat_fronts: ["10.97.0.10".parse().unwrap()].into_iter().collect(),
            ..Stitcher::default()
        };
        s.add_batch(&b);
        let mut sizes: Vec<(u8, usize)> = s
            .drain()
            .iter()
            .map(|c| (c.members[0].protocol, c.members.len()))
            .collect();
        sizes.sort();
        assert_eq!(sizes, [(6, 2), (17, 1), (17, 1)]);
    }

    /// Two ping sessions between nodes and pods, on other nodes: one's request and the other's
    /// reply share an IPv4 ID by chance. Node addresses at both ends would let NAT relate
    /// them, but NAT never turns a request into a reply: two connections, each counted (#20:
    /// 1 session in 8 000 lost at 8 nodes).
    #[test]
    fn an_echo_request_and_another_sessions_reply_never_join() {
        let id = fp::IPV4_ID;
        let b = BatchBuilder::new()
            .point("w5", "veth1", IfaceKind::PodVeth, Direction::Unknown)
            .point("w3", "veth2", IfaceKind::PodVeth, Direction::Unknown)
            // worker-6's ping to a pod on worker-5, and that pod's reply
            .row(Row::flow(1, "10.200.9.0", 8, "10.200.8.2", 700).fingerprint(id, 5 << 16))
            .row(Row::flow(1, "10.200.8.2", 0, "10.200.9.0", 700).fingerprint(id, 6 << 16))
            // worker-1's ping to a pod on worker-3: its reply has the first request's IPv4 ID
            .row(
                Row::flow(1, "10.200.4.0", 8, "10.200.6.7", 900)
                    .at(1)
                    .fingerprint(id, 7 << 16),
            )
            .row(
                Row::flow(1, "10.200.6.7", 0, "10.200.4.0", 900)
                    .at(1)
                    .fingerprint(id, 5 << 16),
            )
            .build();
        let nodes = ["10.200.9.0", "10.200.4.0"].map(|a| a.parse().unwrap());
        let mut s = Stitcher {
            nat_sources: nodes.into_iter().collect(),
            ..Stitcher::default()
        };
        s.add_batch(&b);
        let conns = s.drain();
        assert_eq!(conns.len(), 2, "{conns:#?}");
        for c in &conns {
            assert_eq!(c.counters().0, 2, "request and reply, each session");
        }
    }

    #[test]
    fn views_of_one_fingerprint_equally_near_two_others_join_neither() {
        // Two connections' pre-DNAT views at the same instant, one post-DNAT view between:
        // which one it continues cannot be known.
        let mut b = BatchBuilder::new()
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Ingress)
            .point("a", "veth2", IfaceKind::PodVeth, Direction::Ingress)
            .point("b", "veth9", IfaceKind::PodVeth, Direction::Egress);
        for (src, point, at) in [
            ("10.244.0.5", 0, 1_000),
            ("10.244.0.6", 0, 1_000),
            ("10.244.0.6", 2, 2_000),
        ] {
            let dst = if point == 2 {
                "10.244.1.7"
            } else {
                "10.96.0.10"
            };
            let mut r = Row::flow(17, src, 5000, dst, 53)
                .at(point)
                .fingerprint(fp::IPV4_ID, 7 << 16 | 40);
            r.first_ns = at;
            b = b.row(r);
        }
        let mut s = Stitcher::default();
        s.add_batch(&b.build());
        let conns = s.drain();
        assert_eq!(conns.len(), 3, "{conns:#?}");
        assert_eq!(s.fingerprint_collisions, 2);
    }

    #[test]
    fn orienting_by_scan_and_by_maps_agree() {
        // Random small connections: few addresses, ports and fingerprints, so views share
        // 5-tuples and fingerprints in every way, some with a handshake or a memory.
        let mut seed = 11u64;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        for _ in 0..2_000 {
            let n = 1 + next(12) as usize;
            let members: Vec<Seen> = (0..n)
                .map(|_| {
                    let kind = [
                        fp::NONE,
                        fp::IPV4_ID,
                        fp::TCP_SEQ,
                        fp::TCP_SYN_ISN,
                        fp::TCP_SYNACK_ISN,
                    ][next(5) as usize];
                    let row = Row::flow(
                        6,
                        ["10.0.0.1", "10.0.0.2", "10.96.0.10"][next(3) as usize],
                        [80, 40000][next(2) as usize],
                        ["10.0.0.1", "10.0.0.2"][next(2) as usize],
                        [80, 40000][next(2) as usize],
                    )
                    .fingerprint(kind, (next(3) as u32 + 1) << 16);
                    let batch = BatchBuilder::new()
                        .point("a", "veth1", IfaceKind::PodVeth, Direction::Ingress)
                        .row(row)
                        .build();
                    Seen::from_obs(&batch_rows(&batch).next().unwrap(), 0)
                })
                .collect();
            let remembered: Vec<Option<bool>> = (0..n)
                .map(|_| [None, None, Some(true), Some(false)][next(4) as usize])
                .collect();
            assert_eq!(
                orient_scanning_up_to(&members, &remembered, usize::MAX),
                orient_scanning_up_to(&members, &remembered, 0),
                "{members:?} {remembered:?}"
            );
        }
    }

    #[test]
    fn a_huge_connection_is_oriented_in_linear_time() {
        // 20 000 pings between the same two pods: one connection (ICMP has no ports).
        let mut b = BatchBuilder::new().point("a", "veth1", IfaceKind::PodVeth, Direction::Ingress);
        for i in 0..10_000u32 {
            let req = Row::flow(1, "10.244.0.5", 8, "10.244.1.7", 0)
                .fingerprint(fp::IPV4_ID, (i + 1) << 16 | 64);
            let rep = Row::flow(1, "10.244.1.7", 0, "10.244.0.5", 0)
                .fingerprint(fp::IPV4_ID, (i + 1) << 16 | 64);
            b = b.row(req).row(rep);
        }
        let mut s = Stitcher::default();
        s.add_batch(&b.build());
        let conns = s.drain();
        assert_eq!(conns.len(), 1);
        let c = &conns[0];
        assert_eq!(
            c.forward.iter().filter(|f| **f).count(),
            10_000,
            "requests forward, replies back"
        );
        assert!(c.forward_members().all(|m| m.src_port == 8));
    }

    #[test]
    fn time_fallback_joins_only_from_nat_sources_and_never_against_fingerprints() {
        let b = BatchBuilder::new()
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Ingress)
            .point("b", "veth9", IfaceKind::PodVeth, Direction::Egress)
            // pod view and gateway view of one datagram, no fingerprint
            .row(Row::flow(17, "10.244.0.5", 4000, "10.244.1.7", 53).at(0))
            .row(Row::flow(17, "10.244.0.0", 4000, "10.244.1.7", 53).at(1))
            // two TCP SYNs with different ISNs: two connections, however close in time
            .row(
                Row::flow(6, "10.244.0.5", 4001, "10.244.1.7", 80)
                    .at(0)
                    .fingerprint(fp::TCP_SYN_ISN, 1),
            )
            .row(
                Row::flow(6, "10.244.0.0", 4001, "10.244.1.7", 80)
                    .at(1)
                    .fingerprint(fp::TCP_SYN_ISN, 2),
            )
            .build();
        let mut s = Stitcher::default();
        s.add_batch(&b);
        // Without NAT sources: four views, four connections.
        assert_eq!(s.drain().len(), 4);
        s.nat_sources.insert("10.244.0.0".parse().unwrap());
        s.add_batch(&b);
        let conns = s.drain();
        assert_eq!(conns.len(), 3, "{conns:#?}");
        let udp = conns.iter().find(|c| c.members[0].protocol == 17).unwrap();
        assert_eq!(udp.members.len(), 2);
        assert!(udp.joined_by_time);
        assert!(
            conns
                .iter()
                .filter(|c| c.members[0].protocol == 6)
                .all(|c| !c.joined_by_time)
        );
        assert_eq!(s.time_joins, 1);
    }

    #[test]
    fn time_fallback_joins_a_service_door_to_its_one_backend_only() {
        // IPv6-like datagrams (no join fingerprint) through a ClusterIP: the client's veth sees
        // the door, the backend's node sees the backend.
        let pre = |sport| Row::flow(17, "10.244.0.5", sport, "10.96.0.53", 53).at(0);
        let post = |sport, backend| Row::flow(17, "10.244.0.5", sport, backend, 5353).at(1);
        let b = BatchBuilder::new()
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Ingress)
            .point("b", "veth9", IfaceKind::PodVeth, Direction::Egress)
            .row(pre(4000))
            .row(post(4000, "10.244.1.7"))
            // The same source socket to two other places: which one was the backend?
            .row(pre(4001))
            .row(post(4001, "10.244.1.7"))
            .row(post(4001, "10.244.2.9"))
            .build();
        let mut s = Stitcher::default();
        s.add_batch(&b);
        assert_eq!(s.drain().len(), 5, "no doors known: five connections");
        s.dnat_fronts.insert("10.96.0.53".parse().unwrap());
        s.add_batch(&b);
        let conns = s.drain();
        assert_eq!(conns.len(), 4, "{conns:#?}");
        let joined: Vec<_> = conns.iter().filter(|c| c.joined_by_time).collect();
        assert_eq!(joined.len(), 1);
        assert_eq!(joined[0].members.len(), 2);
        assert_eq!(joined[0].members[0].src_port, 4000);
        assert_eq!(s.time_joins, 1);
        // Too far apart in time: apart (a stitcher that does not remember them as one
        // connection from a last window).
        let mut late = post(4000, "10.244.1.7");
        late.first_ns = 2_000_000_000;
        late.last_ns = late.first_ns;
        let mut s = Stitcher::default();
        s.dnat_fronts.insert("10.96.0.53".parse().unwrap());
        s.add_batch(
            &BatchBuilder::new()
                .point("a", "veth1", IfaceKind::PodVeth, Direction::Ingress)
                .point("b", "veth9", IfaceKind::PodVeth, Direction::Egress)
                .row(pre(4000))
                .row(late)
                .build(),
        );
        assert_eq!(s.drain().len(), 2);
    }

    /// A UDP exchange cut by a window boundary: the next window holds only replies, which
    /// alone would make the server the one that spoke first. The last window's orientation
    /// holds; a connection the last window did not see is oriented afresh.
    #[test]
    fn a_window_of_replies_only_keeps_the_orientation_the_last_window_found() {
        let query = || Row::flow(17, "10.244.0.5", 50503, "10.244.1.7", 5353).counters(1, 60);
        let reply = || Row::flow(17, "10.244.1.7", 5353, "10.244.0.5", 50503).counters(9, 900);
        let mut s = Stitcher::default();
        s.add_batch(&window(vec![query()]));
        assert_eq!(s.drain()[0].forward, vec![true]);
        s.add_batch(&window(vec![reply()]));
        let next = s.drain();
        assert_eq!(next[0].forward, vec![false], "the replies stay replies");

        let mut fresh = Stitcher::default();
        fresh.add_batch(&window(vec![reply()]));
        assert_eq!(
            fresh.drain()[0].forward,
            vec![false],
            "nothing remembered: the ports say 50503 is the client's"
        );
        // Ports that do not tell (both listeners' or both clients'): who spoke first.
        for (a, b) in [(5353, 8080), (40000, 50000)] {
            let mut fresh = Stitcher::default();
            fresh.add_batch(&window(vec![Row::flow(
                17,
                "10.244.1.7",
                a,
                "10.244.0.5",
                b,
            )]));
            assert_eq!(fresh.drain()[0].forward, vec![true], "{a} -> {b}");
        }
    }

    #[test]
    fn a_connection_straddling_a_drain_is_counted_at_one_interface_in_both_windows() {
        // 2 requests and 2 replies. Node a drained after its first request; node b's views all
        // fell into the second window (they reached it after a's drain).
        let points = |b: BatchBuilder| {
            b.point("a", "eth0", IfaceKind::Uplink, Direction::Egress)
                .point("b", "eth0", IfaceKind::Uplink, Direction::Ingress)
        };
        let req = |at, n| {
            Row::flow(17, "10.244.0.5", 4000, "10.244.1.7", 53)
                .at(at)
                .counters(n, n * 100)
        };
        let rep = |at, n| {
            Row::flow(17, "10.244.1.7", 53, "10.244.0.5", 4000)
                .at(at)
                .counters(n, n * 100)
        };
        let mut s = Stitcher::default();
        s.add_batch(&points(BatchBuilder::new()).row(req(0, 1)).build());
        let first: u64 = s.drain().iter().map(|c| c.counters().0).sum();
        s.add_batch(
            &points(BatchBuilder::new())
                .row(req(0, 1))
                .row(rep(0, 2))
                .row(req(1, 2))
                .row(rep(1, 2))
                .build(),
        );
        let second: u64 = s.drain().iter().map(|c| c.counters().0).sum();
        assert_eq!(first + second, 4, "{first} + {second}");
    }

    /// Cilium's `bpf_redirect_peer` hands packets arriving for a pod straight to the pod's own
    /// end: each pod's host-side veth sees only what its pod sends. No place sees both
    /// directions of a pod-to-pod connection on one node; the replies are counted where they
    /// were seen, once.
    #[test]
    fn replies_a_redirect_hides_from_the_counting_place_are_counted_where_they_were_seen() {
        let points = |b: BatchBuilder| {
            b.point("a", "lxc1", IfaceKind::PodVeth, Direction::Ingress)
                .point("a", "lxc2", IfaceKind::PodVeth, Direction::Ingress)
                .point("b", "eth0", IfaceKind::Uplink, Direction::Ingress)
        };
        let req = |at, n| {
            Row::flow(6, "10.0.0.5", 4000, "10.0.0.6", 80)
                .at(at)
                .counters(n, n * 100)
        };
        let rep = |at, n| {
            Row::flow(6, "10.0.0.6", 80, "10.0.0.5", 4000)
                .at(at)
                .counters(n, n * 100)
        };
        let mut s = Stitcher::default();
        s.add_batch(
            &points(BatchBuilder::new())
                .row(req(0, 6))
                .row(rep(1, 5))
                .build(),
        );
        let c = &s.drain()[0];
        assert_eq!(c.counters().0, 11, "6 requests at lxc1, 5 replies at lxc2");
        assert!(c.replies_counted_at.is_some());
        // And in the next window, the same way, once.
        s.add_batch(
            &points(BatchBuilder::new())
                .row(req(0, 2))
                .row(rep(1, 2))
                .build(),
        );
        assert_eq!(s.drain()[0].counters().0, 4);

        // A place that has shown replies is not helped: their absence now is a drain's timing
        // (they will reach it after), and counting them elsewhere would count them twice.
        let mut s = Stitcher::default();
        s.add_batch(
            &points(BatchBuilder::new())
                .row(req(0, 2))
                .row(rep(0, 2))
                .build(),
        );
        assert_eq!(s.drain()[0].counters().0, 4);
        s.add_batch(
            &points(BatchBuilder::new())
                .row(req(0, 1))
                .row(rep(1, 1))
                .build(),
        );
        let c = &s.drain()[0];
        assert_eq!((c.counters().0, c.replies_counted_at), (1, None));

        // Replies seen only on another node are not counted for the place that missed them.
        let mut s = Stitcher::default();
        s.add_batch(
            &points(BatchBuilder::new())
                .row(req(0, 3))
                .row(rep(2, 3))
                .build(),
        );
        let c = &s.drain()[0];
        assert_eq!((c.counters().0, c.replies_counted_at), (3, None));
    }

    /// A Kata peer pod's packets reach its node in flannel's VXLAN and leave it again in the
    /// pod's own tunnel: the node's uplink sees each twice, in and out, with the same inner
    /// 5-tuple. Counted once.
    #[test]
    fn a_packet_through_one_interface_twice_is_counted_once() {
        let points = |b: BatchBuilder| {
            b.point("b", "eth0", IfaceKind::Uplink, Direction::Ingress)
                .point("b", "eth0", IfaceKind::Uplink, Direction::Egress)
        };
        let req = |at| {
            Row::flow(6, "10.244.0.2", 4000, "10.244.1.5", 8080)
                .at(at)
                .fingerprint(fp::TCP_SYN_ISN, 1)
                .counters(7, 700)
        };
        let rep = |at| {
            Row::flow(6, "10.244.1.5", 8080, "10.244.0.2", 4000)
                .at(at)
                .fingerprint(fp::TCP_SYNACK_ISN, 2)
                .counters(6, 900)
        };
        let b = points(BatchBuilder::new())
            .row(req(0).vxlan(1, "192.168.77.11", "192.168.77.12", 8472))
            .row(req(1).vxlan(555_005, "192.168.77.12", "192.168.77.50", 4789))
            .row(rep(0).vxlan(555_005, "192.168.77.50", "192.168.77.12", 4789))
            .row(rep(1).vxlan(1, "192.168.77.12", "192.168.77.11", 8472))
            .build();
        let mut s = Stitcher::default();
        s.add_batch(&b);
        let c = s.drain();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].counters().0, 13, "7 requests and 6 replies, once each");
        assert_eq!(c[0].counters().1, 700 + 900);
    }

    /// A drain fell between a packet's arrival at a NAT and its rewritten copy: in the next
    /// window the two views' first packets differ, so no fingerprint joins them; the last
    /// window found them one connection, and they stay one, named by the view of the client.
    #[test]
    fn views_a_drain_cut_at_a_nat_stay_one_connection_in_the_next_window() {
        let points = |b: BatchBuilder| {
            b.point("a", "eth0", IfaceKind::Uplink, Direction::Ingress)
                .point("a", "eth0", IfaceKind::Uplink, Direction::Egress)
        };
        let outside = || Row::flow(6, "192.168.77.100", 51000, "192.168.99.200", 80);
        let snat = || Row::flow(6, "10.244.0.0", 62000, "10.244.1.2", 8080);
        let mut s = Stitcher::default();
        s.add_batch(
            &points(BatchBuilder::new())
                .row(
                    outside()
                        .at(0)
                        .fingerprint(fp::TCP_SYN_ISN, 5)
                        .counters(3, 300),
                )
                .row(
                    snat()
                        .at(1)
                        .fingerprint(fp::TCP_SYN_ISN, 5)
                        .counters(2, 200),
                )
                .build(),
        );
        assert_eq!(s.drain().len(), 1);
        s.add_batch(
            &points(BatchBuilder::new())
                .row(
                    outside()
                        .at(0)
                        .fingerprint(fp::IPV4_ID, 41)
                        .counters(4, 400),
                )
                .row(snat().at(1).fingerprint(fp::IPV4_ID, 40).counters(5, 500))
                .build(),
        );
        let next = s.drain();
        assert_eq!(next.len(), 1, "{next:?}");
        assert!(next[0].continued);
        assert_eq!(next[0].members.len(), 2);
        // A new handshake on the SNATed 5-tuple (the port reused) is a new connection.
        s.add_batch(
            &points(BatchBuilder::new())
                .row(outside().at(0).fingerprint(fp::IPV4_ID, 50))
                .row(snat().at(1).fingerprint(fp::TCP_SYN_ISN, 99))
                .build(),
        );
        assert_eq!(s.drain().len(), 2);
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

    #[test]
    fn late_copies_after_a_drain_are_not_counted_again() {
        // One request and its reply. Node a saw both before a drain; node b saw the request
        // before it and the reply only after it.
        let points = |b: BatchBuilder| {
            b.point("a", "veth1", IfaceKind::PodVeth, Direction::Ingress)
                .point("b", "veth9", IfaceKind::PodVeth, Direction::Egress)
        };
        let req = |at| Row::flow(1, "10.123.10.1", 8, "10.123.20.70", 0).at(at);
        let rep = |at| Row::flow(1, "10.123.20.70", 0, "10.123.10.1", 0).at(at);
        let mut s = Stitcher::default();
        s.add_batch(
            &points(BatchBuilder::new())
                .row(req(0))
                .row(rep(0))
                .row(req(1))
                .build(),
        );
        let first: u64 = s.drain().iter().map(|c| c.counters().0).sum();
        assert_eq!(first, 2);
        s.add_batch(&points(BatchBuilder::new()).row(rep(1)).build());
        let late = s.drain();
        assert!(
            late.is_empty(),
            "2 packets, counted once, one flow: {late:?}"
        );
        assert_eq!(s.late_copies, 1, "the late copy is counted as one");
        // Nothing remembered: a later window counts afresh.
        s.add_batch(&points(BatchBuilder::new()).row(req(1)).build());
        assert_eq!(s.drain()[0].counters().0, 1);
    }

    #[test]
    fn a_hairpin_through_a_service_is_counted_once_on_the_pods_own_veth() {
        // The pod's veth sees its 3 packets to the ClusterIP arrive (ingress) and their DNATed,
        // SNATed copies leave back to it (egress), and the same for the 3 replies.
        let b = BatchBuilder::new()
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Ingress)
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Egress)
            .row(
                Row::flow(6, "10.244.0.3", 4000, "10.96.0.40", 80)
                    .fingerprint(fp::TCP_SYN_ISN, 11)
                    .counters(3, 300),
            )
            .row(
                Row::flow(6, "10.244.0.1", 4000, "10.244.0.3", 8080)
                    .at(1)
                    .fingerprint(fp::TCP_SYN_ISN, 11)
                    .counters(3, 300),
            )
            .row(
                Row::flow(6, "10.244.0.3", 8080, "10.244.0.1", 4000)
                    .fingerprint(fp::TCP_SYNACK_ISN, 12)
                    .counters(3, 300),
            )
            .row(
                Row::flow(6, "10.96.0.40", 80, "10.244.0.3", 4000)
                    .at(1)
                    .fingerprint(fp::TCP_SYNACK_ISN, 12)
                    .counters(3, 300),
            )
            .build();
        let mut s = Stitcher::default();
        s.add_batch(&b);
        let conns = s.drain();
        assert_eq!(conns.len(), 1);
        assert_eq!(conns[0].counters().0, 6, "3 each way, not 12");
    }

    #[test]
    fn a_connection_an_early_drain_finds_only_at_a_service_door_waits_for_its_backend() {
        // A DNS query through a ClusterIP: the client's veth sees it to the door and back
        // (first batch); the backend's veth sees it DNATed (second batch). The window fills
        // in between: the door's views wait, the next drain joins them to the backend's.
        let door: Ip = "10.96.0.10".parse().unwrap();
        let mut s = Stitcher::new(8);
        s.dnat_fronts.insert(door);
        let client = BatchBuilder::new()
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Unknown)
            .row(
                Row::flow(17, "10.244.0.3", 40000, "10.96.0.10", 53)
                    .fingerprint(fp::IPV4_ID, 7 << 16),
            )
            .row(
                Row::flow(17, "10.96.0.10", 53, "10.244.0.3", 40000)
                    .fingerprint(fp::IPV4_ID, 9 << 16),
            )
            // Six views of other connections fill the window (a quarter of it may wait).
            .row(Row::flow(17, "10.244.0.4", 40001, "10.244.1.8", 53))
            .row(Row::flow(17, "10.244.0.5", 40002, "10.244.1.8", 53))
            .row(Row::flow(17, "10.244.0.6", 40003, "10.244.1.8", 53))
            .row(Row::flow(17, "10.244.0.7", 40004, "10.244.1.8", 53))
            .row(Row::flow(17, "10.244.0.8", 40005, "10.244.1.8", 53))
            .row(Row::flow(17, "10.244.0.9", 40006, "10.244.1.8", 53))
            .build();
        let early = s.add_batch(&client);
        assert_eq!(s.early_drains, 1);
        assert_eq!(early.len(), 6, "the other connections went");
        assert_eq!((s.held(), s.waited), (2, 2), "the door's views wait");
        let backend = BatchBuilder::new()
            .point("b", "veth7", IfaceKind::PodVeth, Direction::Unknown)
            .row(
                Row::flow(17, "10.244.0.3", 40000, "10.244.1.9", 53)
                    .at(1)
                    .fingerprint(fp::IPV4_ID, 7 << 16),
            )
            .row(
                Row::flow(17, "10.244.1.9", 53, "10.244.0.3", 40000)
                    .at(1)
                    .fingerprint(fp::IPV4_ID, 9 << 16),
            )
            .build();
        s.add_batch(&backend);
        let conns = s.drain();
        assert_eq!(conns.len(), 1, "one connection: {conns:?}");
        assert_eq!(conns[0].members.len(), 4);
        assert!(!conns[0].continued);
        assert_eq!(s.evicted, 6, "only the views stitched early");

        // At the window's end nothing waits: a door alone is stitched as it is.
        let mut s = Stitcher::new(4);
        s.dnat_fronts.insert(door);
        let alone = BatchBuilder::new()
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Unknown)
            .row(
                Row::flow(17, "10.244.0.3", 40000, "10.96.0.10", 53)
                    .fingerprint(fp::IPV4_ID, 7 << 16),
            )
            .build();
        s.add_batch(&alone);
        assert_eq!(s.drain().len(), 1);
        assert_eq!(s.held(), 0);
    }

    /// A connection an early drain stitched with its backend's views, whose reply from the
    /// door comes after the drain alone (the client's veth is late): that piece adds nothing
    /// to the flow counted at the backend and is no flow to the service itself.
    #[test]
    fn a_door_only_piece_after_the_connection_was_counted_is_no_second_flow() {
        let door: Ip = "10.96.0.10".parse().unwrap();
        let mut s = Stitcher::new(4);
        s.dnat_fronts.insert(door);
        let first = BatchBuilder::new()
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Unknown)
            .point("b", "veth7", IfaceKind::PodVeth, Direction::Unknown)
            .row(
                Row::flow(17, "10.244.0.3", 40000, "10.96.0.10", 53)
                    .fingerprint(fp::IPV4_ID, 7 << 16),
            )
            .row(
                Row::flow(17, "10.244.0.3", 40000, "10.244.1.9", 53)
                    .at(1)
                    .counters(2, 200)
                    .fingerprint(fp::IPV4_ID, 7 << 16),
            )
            .row(Row::flow(17, "10.244.0.4", 40001, "10.244.1.8", 53))
            .row(Row::flow(17, "10.244.0.5", 40002, "10.244.1.8", 53))
            .build();
        let early = s.add_batch(&first);
        assert_eq!(s.early_drains, 1);
        assert_eq!(early.len(), 3, "{early:#?}");
        let late = BatchBuilder::new()
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Unknown)
            .row(
                Row::flow(17, "10.96.0.10", 53, "10.244.0.3", 40000)
                    .fingerprint(fp::IPV4_ID, 9 << 16),
            )
            .build();
        s.add_batch(&late);
        let rest = s.drain();
        assert!(rest.is_empty(), "no flow to the door: {rest:#?}");
        assert_eq!(s.late_copies, 1, "and it is counted");
    }

    #[test]
    fn a_flood_of_unmatched_observations_keeps_the_window_bounded_and_counts_evictions() {
        let mut s = Stitcher::new(1000);
        let mut conns = 0;
        for i in 0..50_000u32 {
            // Every observation its own connection: nothing ever matches.
            let row = Row::flow(
                17,
                "10.244.0.5",
                (i % 60_000) as u16 + 1,
                &format!("10.9.{}.{}", (i >> 8) & 255, i & 255),
                53,
            );
            conns += s
                .add_batch(
                    &BatchBuilder::new()
                        .point("a", "eth0", IfaceKind::Uplink, Direction::Egress)
                        .row(row)
                        .build(),
                )
                .len();
            assert!(s.held() < 1000, "the window never exceeds max_held");
            assert!(
                s.remembered() <= (2 * REMEMBERED_PER_HELD + 1) * 1000,
                "{}",
                s.remembered()
            );
        }
        conns += s.drain().len();
        assert_eq!(
            conns, 50_000,
            "nothing is lost, every observation is emitted"
        );
        assert_eq!(s.early_drains, 50);
        assert_eq!(s.evicted, 50_000);
        assert!(s.remembered() <= (2 * REMEMBERED_PER_HELD + 1) * 1000);
        assert!(s.forgotten > 0, "what went early is counted");
    }
}
