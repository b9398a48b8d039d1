//! Headers as they are on the wire, read a field at a time: one load instruction per field.
//!
//! Why not byte arrays: LLVM's BPF backend cannot assume a packet offset is aligned, so it
//! read every header byte by byte and spilled the bytes to the stack (70 instructions for an
//! Ethernet header). Its `allows-misaligned-mem-access` feature fixes the packet reads but
//! also lets it make misaligned stack accesses, which the verifier rejects. So the packet is
//! read with inline assembly (single `ldx` instructions; x86 and the verifier's packet checks
//! accept misaligned packet reads), and a copy the helper made on the stack with ordinary
//! aligned loads: every field sits at an offset that is a multiple of its size.

use core::arch::asm;

/// Where a header's bytes are: the packet itself, or a copy on the stack.
pub trait Bytes: Copy {
    /// The field of type `u8`/`u16`/`u32`/`u64` at byte `OFF`, its bytes as they are (a multi-byte
    /// field is in network order; `from_be` gives its value).
    fn u8<const OFF: usize>(self) -> u8;
    fn u16<const OFF: usize>(self) -> u16;
    fn u32<const OFF: usize>(self) -> u32;
    fn u64<const OFF: usize>(self) -> u64;
}

/// A position in the packet's linear data, bounds-checked by the caller for the whole header
/// (the verifier checks that too).
#[derive(Clone, Copy)]
pub struct Packet(pub usize);

macro_rules! packet_load {
    ($name:ident, $ty:ty, $width:literal) => {
        #[inline(always)]
        fn $name<const OFF: usize>(self) -> $ty {
            let v: u64;
            // SAFETY: `self.0 + OFF` lies inside the header the caller bounds-checked; the
            // asm only loads. Not `pure`: LLVM must not merge it with another path's read.
            unsafe {
                asm!(
                    concat!("{v} = *(", $width, " *)({p} + {off})"),
                    p = in(reg) self.0,
                    off = const OFF,
                    v = lateout(reg) v,
                    options(readonly, nostack, preserves_flags),
                )
            };
            v as $ty
        }
    };
}

impl Bytes for Packet {
    packet_load!(u8, u8, "u8");
    packet_load!(u16, u16, "u16");
    packet_load!(u32, u32, "u32");
    packet_load!(u64, u64, "u64");
}

/// A copy of a header on the stack, made by `bpf_skb_load_bytes` (paged data).
#[derive(Clone, Copy)]
pub struct Copied<'a>(pub &'a [u64; COPY_WORDS]);

/// The longest header read at once (IPv6), in words.
pub const COPY_WORDS: usize = 5;

impl Bytes for Copied<'_> {
    #[inline(always)]
    fn u8<const OFF: usize>(self) -> u8 {
        // SAFETY: `OFF` is inside the copy (headers are at most COPY_WORDS words).
        unsafe { *(self.0.as_ptr() as *const u8).add(OFF) }
    }
    #[inline(always)]
    fn u16<const OFF: usize>(self) -> u16 {
        // SAFETY: inside the copy, and aligned: fields sit at multiples of their size.
        unsafe { *(self.0.as_ptr() as *const u8).add(OFF).cast::<u16>() }
    }
    #[inline(always)]
    fn u32<const OFF: usize>(self) -> u32 {
        // SAFETY: as for u16.
        unsafe { *(self.0.as_ptr() as *const u8).add(OFF).cast::<u32>() }
    }
    #[inline(always)]
    fn u64<const OFF: usize>(self) -> u64 {
        // SAFETY: as for u16.
        unsafe { *(self.0.as_ptr() as *const u8).add(OFF).cast::<u64>() }
    }
}

/// A header: its length on the wire and how its fields are read.
pub trait Header: Sized {
    const LEN: u32;
    fn read<B: Bytes>(b: B) -> Self;
}

/// Ethernet: the destination and source MACs as three words as they are on the wire (their
/// native-endian bytes are the addresses' bytes), and the ethertype.
pub struct Eth {
    pub macs: [u32; 3],
    pub ethertype: u16,
}

impl Header for Eth {
    const LEN: u32 = 14;
    #[inline(always)]
    fn read<B: Bytes>(b: B) -> Self {
        Eth {
            macs: [b.u32::<0>(), b.u32::<4>(), b.u32::<8>()],
            ethertype: u16::from_be(b.u16::<12>()),
        }
    }
}

/// An 802.1Q / 802.1ad tag: only the ethertype after it matters.
pub struct Vlan {
    pub ethertype: u16,
}

impl Header for Vlan {
    const LEN: u32 = 4;
    #[inline(always)]
    fn read<B: Bytes>(b: B) -> Self {
        Vlan {
            ethertype: u16::from_be(b.u16::<2>()),
        }
    }
}

/// IPv4 (addresses as on the wire).
pub struct Ipv4 {
    pub version_ihl: u8,
    pub total_len: u16,
    pub id: u16,
    pub frag: u16,
    pub protocol: u8,
    pub src: u32,
    pub dst: u32,
}

impl Header for Ipv4 {
    const LEN: u32 = 20;
    #[inline(always)]
    fn read<B: Bytes>(b: B) -> Self {
        Ipv4 {
            version_ihl: b.u8::<0>(),
            total_len: u16::from_be(b.u16::<2>()),
            id: u16::from_be(b.u16::<4>()),
            frag: u16::from_be(b.u16::<6>()),
            protocol: b.u8::<9>(),
            src: b.u32::<12>(),
            dst: b.u32::<16>(),
        }
    }
}

/// IPv6 (addresses as on the wire, two words each).
pub struct Ipv6 {
    pub version: u8,
    pub payload_len: u16,
    pub next: u8,
    pub src: [u64; 2],
    pub dst: [u64; 2],
}

impl Header for Ipv6 {
    const LEN: u32 = 40;
    #[inline(always)]
    fn read<B: Bytes>(b: B) -> Self {
        Ipv6 {
            version: b.u8::<0>() >> 4,
            payload_len: u16::from_be(b.u16::<4>()),
            next: b.u8::<6>(),
            src: [b.u64::<8>(), b.u64::<16>()],
            dst: [b.u64::<24>(), b.u64::<32>()],
        }
    }
}

/// TCP's fixed part (20 bytes, so a header cut short is not read).
pub struct Tcp {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub data_offset: u8,
    pub flags: u8,
}

impl Header for Tcp {
    const LEN: u32 = 20;
    #[inline(always)]
    fn read<B: Bytes>(b: B) -> Self {
        Tcp {
            src_port: u16::from_be(b.u16::<0>()),
            dst_port: u16::from_be(b.u16::<2>()),
            seq: u32::from_be(b.u32::<4>()),
            data_offset: b.u8::<12>(),
            flags: b.u8::<13>(),
        }
    }
}

pub struct Udp {
    pub src_port: u16,
    pub dst_port: u16,
    pub len: u16,
}

impl Header for Udp {
    const LEN: u32 = 8;
    #[inline(always)]
    fn read<B: Bytes>(b: B) -> Self {
        Udp {
            src_port: u16::from_be(b.u16::<0>()),
            dst_port: u16::from_be(b.u16::<2>()),
            len: u16::from_be(b.u16::<4>()),
        }
    }
}

/// VXLAN (RFC 7348) and Geneve (RFC 8926) share this shape: a first byte (VXLAN's flags;
/// Geneve's version and option length), a byte, a 16-bit protocol (Geneve) and the VNI in the
/// top 24 bits of the last word.
pub struct UdpTunnel {
    pub first: u8,
    pub protocol: u16,
    pub vni: u32,
}

impl Header for UdpTunnel {
    const LEN: u32 = 8;
    #[inline(always)]
    fn read<B: Bytes>(b: B) -> Self {
        UdpTunnel {
            first: b.u8::<0>(),
            protocol: u16::from_be(b.u16::<2>()),
            vni: u32::from_be(b.u32::<4>()) >> 8,
        }
    }
}

/// A Geneve option's header.
pub struct GeneveOption {
    pub class: u16,
    pub kind: u8,
    pub len: u8,
}

impl Header for GeneveOption {
    const LEN: u32 = 4;
    #[inline(always)]
    fn read<B: Bytes>(b: B) -> Self {
        GeneveOption {
            class: u16::from_be(b.u16::<0>()),
            kind: b.u8::<2>(),
            len: b.u8::<3>(),
        }
    }
}

/// GRE's fixed part.
pub struct Gre {
    pub flags: u16,
    pub protocol: u16,
}

impl Header for Gre {
    const LEN: u32 = 4;
    #[inline(always)]
    fn read<B: Bytes>(b: B) -> Self {
        Gre {
            flags: u16::from_be(b.u16::<0>()),
            protocol: u16::from_be(b.u16::<2>()),
        }
    }
}

/// The first byte of an IP packet (its version) or an extension header's next-header byte.
impl Header for u8 {
    const LEN: u32 = 1;
    #[inline(always)]
    fn read<B: Bytes>(b: B) -> Self {
        b.u8::<0>()
    }
}

/// An IPv6 extension header's first two bytes (next header, length).
impl Header for [u8; 2] {
    const LEN: u32 = 2;
    #[inline(always)]
    fn read<B: Bytes>(b: B) -> Self {
        [b.u8::<0>(), b.u8::<1>()]
    }
}

/// Four bytes as on the wire (a GRE key; a 4-byte Geneve option's data).
impl Header for u32 {
    const LEN: u32 = 4;
    #[inline(always)]
    fn read<B: Bytes>(b: B) -> Self {
        b.u32::<0>()
    }
}

/// Eight bytes as on the wire (a Geneve option's data).
impl Header for u64 {
    const LEN: u32 = 8;
    #[inline(always)]
    fn read<B: Bytes>(b: B) -> Self {
        b.u64::<0>()
    }
}
