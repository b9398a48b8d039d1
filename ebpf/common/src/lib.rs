//! Types and codes shared by the host, the plugin SDK and (with live capture) the eBPF
//! programs. `no_std`, so all three can use it and agree at compile time.
#![no_std]

/// Tunnel codes, as in the WIT `tunnel` column.
pub mod tunnel {
    pub const NONE: u8 = 0;
    pub const VXLAN: u8 = 1;
    pub const GENEVE: u8 = 2;
    /// IP-in-IP: 4in4, 6in4, 4in6, 6in6.
    pub const IPIP: u8 = 3;
    pub const GRE: u8 = 4;
    /// A raw IP packet carried in UDP (flannel's obsolete `udp` backend).
    pub const UDP_ENCAP: u8 = 5;
}

/// Ethertypes both decoders read (the replay decoder and the probe).
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag (QinQ).
    pub const QINQ: u16 = 0x88a8;
    /// The pre-standard QinQ tag some switches still send.
    pub const QINQ_OLD: u16 = 0x9100;
    /// Transparent Ethernet bridging: an Ethernet frame inside Geneve or GRE.
    pub const TEB: u16 = 0x6558;
    /// ERSPAN type II (GRE).
    pub const ERSPAN_II: u16 = 0x88be;

    /// A VLAN tag of any of the three kinds: one more tag to step over.
    #[inline(always)]
    pub fn is_vlan(t: u16) -> bool {
        t == VLAN || t == QINQ || t == QINQ_OLD
    }
}

/// IP protocol numbers both decoders read.
pub mod ipproto {
    pub const ICMP: u8 = 1;
    /// IPv4 in IP (4in4, 4in6).
    pub const IPIP: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    /// IPv6 in IP (6in4, 6in6).
    pub const IPV6: u8 = 41;
    pub const GRE: u8 = 47;
    pub const ICMPV6: u8 = 58;
}

/// An ICMP echo request or reply (ICMP 8/0, ICMPv6 128/129): its identifier names the ping
/// session, as conntrack keys it, so observations carry it in the destination port column
/// where other ICMP messages carry their code (the type is always in the source port column).
#[inline(always)]
pub fn icmp_echo(protocol: u8, icmp_type: u8) -> bool {
    match protocol {
        ipproto::ICMP => icmp_type == 8 || icmp_type == 0,
        ipproto::ICMPV6 => icmp_type == 128 || icmp_type == 129,
        _ => false,
    }
}

/// TCP flag bits, as in the WIT `tcp-flags` column.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// NAT-proof fingerprint kinds, as in the WIT `fp-kind` column, and the rules that pick one.
/// Linux NAT rewrites addresses and ports but keeps TCP sequence numbers and the IPv4
/// identification, so these identify one connection before and after DNAT/SNAT
/// (docs/observation-model.md, "Fingerprints"). Both decoders call [`fp::of`] and
/// [`fp::upgrades`], so replay and live capture give the same fingerprint for the same packets.
pub mod fp {
    use super::{ipproto, tcp_flags};

    pub const NONE: u8 = 0;
    /// ISN of a TCP SYN without ACK: the client's direction.
    pub const TCP_SYN_ISN: u8 = 1;
    /// Sequence number of the first TCP packet seen (no handshake in the window).
    pub const TCP_SEQ: u8 = 2;
    /// IPv4 identification << 16 | L4 payload length of the first packet.
    pub const IPV4_ID: u8 = 3;
    /// Hash of the first L4 payload bytes and length (IPv6 has no IP ID).
    pub const PAYLOAD_HASH: u8 = 4;
    /// ISN of a TCP SYN+ACK: the server's direction.
    pub const TCP_SYNACK_ISN: u8 = 5;
    /// An ICMPv4 error (destination unreachable, time exceeded, parameter problem): a hash
    /// of the 5-tuple of the packet it quotes ([`quote`]), so the error joins the
    /// connection it answers (a REJECT's port unreachable, a router's "no route").
    pub const ICMP_QUOTE: u8 = 6;

    /// ICMPv4 types that quote the packet they answer.
    #[inline(always)]
    pub fn is_icmp_error(icmp_type: u8) -> bool {
        icmp_type == 3 || icmp_type == 11 || icmp_type == 12
    }

    /// The quoted packet's 5-tuple as [`ICMP_QUOTE`]'s value: addresses as numbers
    /// (big-endian), ports as numbers. Never 0 (0 is "no quote").
    #[inline(always)]
    pub fn quote(protocol: u8, src: u32, dst: u32, src_port: u16, dst_port: u16) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        let words = [
            protocol as u32,
            src,
            dst,
            (src_port as u32) << 16 | dst_port as u32,
        ];
        let mut i = 0;
        while i < 4 {
            h = (h ^ words[i]).wrapping_mul(0x0100_0193);
            h ^= h >> 15;
            i += 1;
        }
        h | 1
    }

    /// The handshake kinds: they say which direction is the client's, and nothing later
    /// replaces them.
    #[inline(always)]
    pub fn is_handshake(kind: u8) -> bool {
        kind == TCP_SYN_ISN || kind == TCP_SYNACK_ISN
    }

    /// The fingerprint of one packet: (kind, value). `ipv4_id` is None for IPv6;
    /// `payload_hash` is [`super::payload_hash`] of the L4 payload (only IPv6 non-TCP uses it)
    /// or, for an ICMPv4 error, the [`quote`] of the packet it answers.
    #[inline(always)]
    pub fn of(
        protocol: u8,
        flags: u8,
        tcp_seq: u32,
        ipv4_id: Option<u16>,
        payload_len: u16,
        payload_hash: u32,
    ) -> (u8, u32) {
        if protocol == ipproto::TCP {
            let handshake = flags & (tcp_flags::SYN | tcp_flags::ACK);
            if handshake == tcp_flags::SYN {
                return (TCP_SYN_ISN, tcp_seq);
            }
            if handshake == tcp_flags::SYN | tcp_flags::ACK {
                return (TCP_SYNACK_ISN, tcp_seq);
            }
            return (TCP_SEQ, tcp_seq);
        }
        match ipv4_id {
            Some(_) if protocol == ipproto::ICMP && payload_hash != 0 => (ICMP_QUOTE, payload_hash),
            Some(id) => (IPV4_ID, (id as u32) << 16 | payload_len as u32),
            None => (PAYLOAD_HASH, payload_hash ^ payload_len as u32),
        }
    }

    /// A SYN seen after other packets of a flow (an out-of-order capture, or a SYN on
    /// another CPU first) still gives the ISN: does this packet replace the flow's
    /// fingerprint of kind `current`?
    #[inline(always)]
    pub fn upgrades(protocol: u8, flags: u8, current: u8) -> bool {
        protocol == ipproto::TCP && flags & tcp_flags::SYN != 0 && !is_handshake(current)
    }

    /// How far a SYN may trail other packets of its own connection at one point (packets
    /// handled on two CPUs at once) and still be that connection's handshake seen late.
    pub const SYN_REORDER_NS: u64 = 10_000_000;

    /// A UDP 5-tuple silent this long at one point and then heard again starts another
    /// observation there: it may be another connection (a deleted pod's address and port
    /// used again by the pod that got the address), which the plugins can then tell apart
    /// (they join the pieces again when nothing says they are two).
    pub const UDP_QUIET_NS: u64 = 1_000_000_000;

    /// Does this packet open another connection on a 5-tuple an observation already holds at
    /// this point, in this window (a deleted pod's address and port used again by a new pod,
    /// a port reused after TIME_WAIT)? For TCP it does when it is a handshake packet (SYN or
    /// SYN+ACK, `kind`/`value` from [`of`]) and the observation
    /// - holds another handshake (another ISN: a retransmitted SYN carries the same one), or
    /// - holds no handshake but a FIN or RST (the old connection ended), or packets from more
    ///   than [`SYN_REORDER_NS`] before (not a SYN reordered behind its own packets).
    ///
    /// A UDP packet does after [`UDP_QUIET_NS`] of silence on the observation.
    ///
    /// Both capture sources then start a new observation of the same key (the probe for
    /// flows its per-CPU cache holds; the agent splits records of several CPUs the same way),
    /// so one connection's packets are never counted on another's ([`upgrades`] covers the
    /// reordered SYN).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn opens_another(
        protocol: u8,
        kind: u8,
        value: u32,
        held_kind: u8,
        held_value: u32,
        held_flags: u8,
        (held_first_ns, held_last_ns): (u64, u64),
        now_ns: u64,
    ) -> bool {
        if protocol == ipproto::UDP {
            return now_ns.saturating_sub(held_last_ns) > UDP_QUIET_NS;
        }
        if protocol != ipproto::TCP || !is_handshake(kind) {
            return false;
        }
        if is_handshake(held_kind) {
            return held_kind != kind || held_value != value;
        }
        held_flags & (tcp_flags::FIN | tcp_flags::RST) != 0
            || now_ns.saturating_sub(held_first_ns) > SYN_REORDER_NS
    }
}

/// How many L4 payload bytes [`payload_hash`] covers.
pub const PAYLOAD_HASH_BYTES: usize = 16;

/// FNV-1a over exactly [`PAYLOAD_HASH_BYTES`] bytes: the payload's first 16, zeroes past its
/// end (the length is in the fingerprint beside it). Always 16 rounds, so the probe hashes
/// without a branch per byte (each one multiplied the verifier's work).
#[inline(always)]
pub fn payload_hash(block: &[u8; PAYLOAD_HASH_BYTES]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < PAYLOAD_HASH_BYTES {
        h = (h ^ block[i] as u32).wrapping_mul(0x0100_0193);
        i += 1;
    }
    h
}

/// Most Geneve option classes a probe can be asked to keep (ProbeConfig::geneve_classes).
pub const MAX_GENEVE_CLASSES: usize = 4;

/// Size of the probe's `L3_IFACES` array: interfaces with a larger ifindex are read as Ethernet.
pub const MAX_L3_IFINDEX: u32 = 4096;

/// Direction codes in [`FlowKey::direction`].
pub mod direction {
    pub const INGRESS: u8 = 0;
    pub const EGRESS: u8 = 1;
}

/// Indexes of the probe's `COUNTERS` per-CPU array. Everything the probe could not record is
/// counted here: it never drops a packet, only (counted) observations.
pub mod counter {
    /// Packets seen by the probe.
    pub const PACKETS: u32 = 0;
    /// New-flow events lost because the ring buffer was full.
    pub const RINGBUF_FULL: u32 = 1;
    /// Packets not recorded because the flow map was full (insert failed).
    pub const MAP_FULL: u32 = 2;
    /// Packets whose headers could not be read (truncated, malformed).
    pub const PARSE_FAILED: u32 = 3;
    /// Not IP (ARP, LLDP, STP): expected, not a loss.
    pub const NOT_IP: u32 = 4;
    /// Packets that opened another connection on a flow's key but were added to the earlier
    /// connection's record: its key was in the shared hash map (the probe splits only what
    /// its per-CPU cache holds), or 255 were split already, or the map had no room.
    pub const REOPEN_MERGED: u32 = 5;
    pub const COUNT: u32 = 6;
}

/// What the probe decodes, beyond what every probe does (its read-only global `PROBE_CONFIG`,
/// set at load). Zero = unused slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    pub vxlan_ports: [u16; 8],
    pub geneve_ports: [u16; 4],
    pub udp_encap_ports: [u16; 4],
    /// The Geneve option classes a CNI plugin asked for (its decoding needs): the probe keeps
    /// the first option of one of these classes among a packet's first four options, else
    /// the first option. Zero = unused slot.
    pub geneve_classes: [u16; MAX_GENEVE_CLASSES],
}

/// An IPv6 address, or an IPv4 one mapped (`::ffff:a.b.c.d`), network order. 8-byte aligned,
/// so the probe copies it in two words, not sixteen bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Addr(pub [u8; 16]);

/// The identity of one observation: one direction of one flow at one interface. The
/// addresses come first, at 8-byte offsets; no implicit padding (the probe hashes it whole).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: Addr,
    pub dst: Addr,
    pub outer_src: Addr,
    pub outer_dst: Addr,
    pub ifindex: u32,
    pub vni: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub outer_src_port: u16,
    pub outer_dst_port: u16,
    pub direction: u8,
    pub tunnel: u8,
    pub protocol: u8,
    /// 0, or a later connection on the same key in this interval ([`fp::opens_another`]):
    /// the probe moves a flow's record out of its cache slot under generation 1, 2, ...
    /// (below [`SPLIT_GENERATION`]); the hash map gives each later connection of a key it
    /// holds a new record under [`SPLIT_GENERATION`], then the ones above it.
    pub generation: u8,
    pub _pad: [u8; 4],
}

/// What the probe accumulates per [`FlowKey`] (per CPU; the host merges the CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub packets: u64,
    pub bytes: u64,
    /// `bpf_ktime_get_ns` (monotonic since boot) of the first packet, to the nanosecond.
    pub first_ns: u64,
    /// The same clock for the last packet, to the tick (read once per tick per CPU): it can
    /// be up to a tick before `first_ns`.
    pub last_ns: u64,
    pub fingerprint: u32,
    pub tcp_flags: u8,
    pub fp_kind: u8,
    /// Length in bytes of the first Geneve option's data (the probe keeps at most 8).
    pub geneve_len: u8,
    pub geneve_type: u8,
    pub geneve_class: u16,
    /// In a generation-0 record of the hash map: 0, or the generation its key's newest
    /// connection is recorded under (a later connection on the key split off in the map).
    pub successor: u8,
    pub _pad: u8,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub outer_src_mac: [u8; 6],
    pub outer_dst_mac: [u8; 6],
    pub geneve_data: [u8; 8],
    pub _pad2: [u8; 4],
}

/// The first generation the hash map gives a later connection on a key it holds; the cache's
/// moves use the ones below it, so the two never claim the same record.
pub const SPLIT_GENERATION: u8 = 128;

/// One slot of the probe's per-CPU flow cache (`CACHE`, one half per window parity): a
/// direct-mapped table in front of the flow hash maps. A slot holds a flow when `generation`
/// is the current window's and `stats.packets` is not zero; a flow whose slot another holds
/// goes to the hash map. The agent reads both and merges them per key.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheSlot {
    pub key: FlowKey,
    /// The window (`ACTIVE`'s value) the slot was filled in.
    pub generation: u32,
    /// Earlier connections on this key moved out of the slot in this window (to the hash map,
    /// as generations 1, 2, ...).
    pub reopened: u32,
    pub stats: FlowStats,
}

/// Sent through the ring buffer when a flow is first seen at an interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewFlow {
    pub key: FlowKey,
    pub fingerprint: u32,
    pub fp_kind: u8,
    pub _pad: [u8; 3],
    pub ts_ns: u64,
}

/// Bytes of a dropped packet the drop program copies, from its network header: enough for an
/// outer IPv6 header, a UDP tunnel, an inner Ethernet frame with VLAN tags, an inner IPv6
/// header with extension headers, a TCP header and the bytes the fingerprint hashes.
pub const DROP_SNAP: usize = 224;

/// Where the kernel keeps what the drop program reads, from the running kernel's BTF
/// (`/sys/kernel/btf/vmlinux`) at load time: structure layouts and the tracepoint's argument
/// order differ between kernels, so none is compiled in. Offsets in bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropLayout {
    /// `kfree_skb`'s arguments: which one is the `sk_buff *`, which the reason.
    pub skb_arg: u32,
    pub reason_arg: u32,
    pub skb_head: u32,
    /// `sk_buff.tail` (an offset from `head` on 64-bit kernels: `tail_is_offset`).
    pub skb_tail: u32,
    pub skb_network_header: u32,
    pub skb_protocol: u32,
    pub skb_dev: u32,
    pub skb_sk: u32,
    pub skb_len: u32,
    pub dev_ifindex: u32,
    /// `net_device.nd_net.net`, `sock.__sk_common.skc_net.net`, `net.ns.inum`.
    pub dev_net: u32,
    pub sk_net: u32,
    pub net_inum: u32,
    pub tail_is_offset: u32,
}

/// One packet the kernel freed without delivering it, in a watched network namespace, for a
/// reason not filtered out: its headers, for the agent to decode by the probes' rules.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropEvent {
    pub ts_ns: u64,
    /// The namespace's inode number (`net.ns.inum`, what `stat` of its nsfs file says).
    pub netns: u32,
    /// The device the packet was on (0: none; the socket told the namespace).
    pub ifindex: u32,
    /// The kernel's `enum skb_drop_reason` value (the agent names it from BTF).
    pub reason: u32,
    /// The whole packet's length (`skb->len`).
    pub skb_len: u32,
    /// `skb->protocol` (an ethertype, network order; 0 when the stack had not set it).
    pub protocol: u16,
    /// Bytes of `data` copied (the linear part past the network header, at most DROP_SNAP).
    pub captured: u16,
    pub _pad: u32,
    pub data: [u8; DROP_SNAP],
}

/// The drop program's counters (its `DROP_COUNTERS`, per CPU).
pub mod drop_counter {
    /// `kfree_skb` events the program ran for (any namespace, any reason).
    pub const EVENTS: u32 = 0;
    /// Events in a watched namespace for a reason kept: drops to record.
    pub const MATCHED: u32 = 1;
    /// Matched drops lost because the ring buffer was full.
    pub const RINGBUF_FULL: u32 = 2;
    /// Matched drops whose headers could not be read (no network header, a failed read).
    pub const UNREADABLE: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// Drop reasons the program can filter by value (an array indexed by the reason); larger
/// values (subsystem codes: the top 16 bits) are always kept.
pub const MAX_DROP_REASON: u32 = 1024;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] structs of integers and byte arrays, with explicit padding
    // fields, so every bit pattern is valid and there are no implicit padding bytes.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowStats {}
    unsafe impl aya::Pod for super::NewFlow {}
    unsafe impl aya::Pod for super::CacheSlot {}
    unsafe impl aya::Pod for super::ProbeConfig {}
    unsafe impl aya::Pod for super::DropLayout {}
    unsafe impl aya::Pod for super::DropEvent {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn layouts_have_no_implicit_padding() {
        use core::mem::size_of;
        assert_eq!(size_of::<super::FlowKey>(), 64 + 4 + 4 + 8 + 8);
        assert_eq!(size_of::<super::FlowStats>(), 32 + 4 + 4 + 4 + 24 + 8 + 4);
        // The probe ORs new flags into the aligned 32-bit word that starts with them.
        assert_eq!(core::mem::offset_of!(super::FlowStats, tcp_flags) % 4, 0);
        assert_eq!(size_of::<super::NewFlow>(), 88 + 4 + 4 + 8);
        assert_eq!(size_of::<super::ProbeConfig>(), 40);
        assert_eq!(size_of::<super::CacheSlot>(), 88 + 8 + 80);
        assert_eq!(size_of::<super::DropLayout>(), 14 * 4);
        assert_eq!(
            size_of::<super::DropEvent>(),
            8 + 4 * 4 + 2 + 2 + 4 + super::DROP_SNAP
        );
    }

    #[test]
    fn a_late_syn_upgrades_every_fingerprint_but_a_handshake() {
        use super::{fp, ipproto, tcp_flags::*};
        for kind in [fp::NONE, fp::TCP_SEQ, fp::IPV4_ID, fp::PAYLOAD_HASH] {
            assert!(fp::upgrades(ipproto::TCP, SYN | ACK, kind));
        }
        assert!(!fp::upgrades(ipproto::TCP, SYN, fp::TCP_SYN_ISN));
        assert!(!fp::upgrades(ipproto::TCP, SYN, fp::TCP_SYNACK_ISN));
        assert!(!fp::upgrades(ipproto::UDP, SYN, fp::IPV4_ID));
        assert!(!fp::upgrades(ipproto::TCP, ACK, fp::TCP_SEQ));
    }

    #[test]
    fn a_new_handshake_on_a_held_tuple_opens_another_connection() {
        use super::{fp, ipproto};
        let (syn, synack, seq) = (fp::TCP_SYN_ISN, fp::TCP_SYNACK_ISN, fp::TCP_SEQ);
        let opens = |kind, value, held: (u8, u32, u8, u64), now| {
            fp::opens_another(
                ipproto::TCP,
                kind,
                value,
                held.0,
                held.1,
                held.2,
                (held.3, held.3),
                now,
            )
        };
        // Another ISN after a handshake, in either direction: another connection.
        assert!(opens(syn, 2, (syn, 1, 0, 0), 1));
        assert!(opens(synack, 2, (synack, 1, 0x10, 0), 1));
        // The same SYN again (a retransmission): the same connection.
        assert!(!opens(syn, 1, (syn, 1, 0x02, 0), 3_000_000_000));
        // No handshake held: a SYN after a FIN or RST, or long after, opens another; a SYN
        // reordered just behind its connection's packets does not.
        assert!(opens(syn, 5, (seq, 9, super::tcp_flags::FIN, 0), 1));
        assert!(opens(syn, 5, (seq, 9, super::tcp_flags::RST, 0), 1));
        assert!(opens(syn, 5, (seq, 9, 0x10, 0), fp::SYN_REORDER_NS + 1));
        assert!(!opens(syn, 5, (seq, 9, 0x10, 0), 1_000));
        // Not a handshake packet, or not TCP: never.
        assert!(!opens(seq, 5, (syn, 1, 0, 0), 1));
        assert!(!fp::opens_another(
            ipproto::ICMP,
            syn,
            5,
            syn,
            1,
            0,
            (0, 0),
            1
        ));
        // UDP: after a silence, whatever the fingerprints.
        let (id, s) = (fp::IPV4_ID, 1_000_000_000);
        assert!(fp::opens_another(
            ipproto::UDP,
            id,
            5,
            id,
            5,
            0,
            (0, s),
            2 * s + 1
        ));
        assert!(!fp::opens_another(
            ipproto::UDP,
            id,
            5,
            id,
            6,
            0,
            (0, s),
            2 * s
        ));
    }

    #[test]
    fn fingerprints_by_protocol() {
        use super::{fp, ipproto, tcp_flags::*};
        assert_eq!(
            fp::of(ipproto::TCP, SYN, 7, Some(1), 0, 0),
            (fp::TCP_SYN_ISN, 7)
        );
        assert_eq!(
            fp::of(ipproto::TCP, SYN | ACK, 7, None, 0, 0),
            (fp::TCP_SYNACK_ISN, 7)
        );
        assert_eq!(
            fp::of(ipproto::TCP, ACK | PSH, 7, Some(1), 9, 0),
            (fp::TCP_SEQ, 7)
        );
        assert_eq!(
            fp::of(ipproto::UDP, 0, 0, Some(0x1234), 20, 5),
            (fp::IPV4_ID, 0x1234_0014)
        );
        assert_eq!(
            fp::of(ipproto::UDP, 0, 0, None, 20, 5),
            (fp::PAYLOAD_HASH, 5 ^ 20)
        );
    }

    #[test]
    fn the_payload_hash_is_fnv1a_of_sixteen_bytes() {
        // FNV-1a of sixteen zero bytes, as published FNV test tools compute it.
        let mut h: u32 = 0x811c_9dc5;
        for _ in 0..16 {
            h = h.wrapping_mul(0x0100_0193);
        }
        assert_eq!(super::payload_hash(&[0; 16]), h);
        assert_ne!(super::payload_hash(b"0123456789abcdef"), h);
    }
}
