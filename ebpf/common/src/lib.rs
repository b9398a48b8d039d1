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

/// NAT-proof fingerprint kinds, as in the WIT `fp-kind` column.
pub mod fp {
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
}

/// The pod annotation under which the host hands a pod's OpenShift-SDN NETID (from its
/// namespace's NetNamespace object) to the plugins: the plugin contract has no field for it.
pub const NETID_ANNOTATION: &str = "cniscope.io/netid";

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
    pub const COUNT: u32 = 5;
}

/// Ports the probe decodes as tunnels (its read-only global `PROBE_CONFIG`, set at load).
/// Zero = unused slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    pub vxlan_ports: [u16; 8],
    pub geneve_ports: [u16; 4],
    pub udp_encap_ports: [u16; 4],
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
    pub _pad: [u8; 5],
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
    pub _pad: [u8; 2],
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub outer_src_mac: [u8; 6],
    pub outer_dst_mac: [u8; 6],
    pub geneve_data: [u8; 8],
    pub _pad2: [u8; 4],
}

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
    pub _pad: u32,
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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] structs of integers and byte arrays, with explicit padding
    // fields, so every bit pattern is valid and there are no implicit padding bytes.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowStats {}
    unsafe impl aya::Pod for super::NewFlow {}
    unsafe impl aya::Pod for super::CacheSlot {}
    unsafe impl aya::Pod for super::ProbeConfig {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn layouts_have_no_implicit_padding() {
        use core::mem::size_of;
        assert_eq!(size_of::<super::FlowKey>(), 64 + 4 + 4 + 8 + 8);
        assert_eq!(size_of::<super::FlowStats>(), 32 + 4 + 4 + 4 + 24 + 8 + 4);
        assert_eq!(size_of::<super::NewFlow>(), 88 + 4 + 4 + 8);
        assert_eq!(size_of::<super::ProbeConfig>(), 32);
        assert_eq!(size_of::<super::CacheSlot>(), 88 + 8 + 80);
    }
}
