//! The probe's packet parser. It mirrors `host/src/sources/decode.rs` rule for rule (link
//! layer, up to 4 VLAN tags, IPv4/IPv6 with extension headers, TCP/UDP/ICMP, one tunnel
//! level), so live capture and replay give the same observations; the equivalence test runs
//! both on every packet of the shared real captures.
//!
//! Every read is bounds-checked (`load`: straight from the packet's linear part, else
//! `bpf_skb_load_bytes`); `limit` is the end of the bytes the enclosing header says belong to
//! this packet (the IPv4 total length, not Ethernet padding).

use crate::mem::{self, Plain};
use crate::wire::{self, Header};
use aya_ebpf::helpers::bpf_skb_load_bytes;
use aya_ebpf::programs::TcContext;
use cniscope_common::{
    Addr, MAX_GENEVE_CLASSES, PAYLOAD_HASH_BYTES, ProbeConfig, ethertype, fp, ipproto,
    payload_hash, tunnel,
};

pub enum Skip {
    NotIp,
    Bad,
}

/// One IP packet's fields (see `L3L4` in decode.rs). 8-byte aligned and without implicit
/// padding, so `mem::zero` and `mem::copy` handle it a word at a time.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct Hdr {
    pub src: Addr,
    pub dst: Addr,
    pub tcp_seq: u32,
    /// Only computed where the fingerprint uses it (IPv6, not TCP): a helper call saved on
    /// every other packet.
    pub payload_hash: u32,
    pub ip_len: u32,
    /// Where the IP payload starts and where the packet ends.
    pub ip_payload: u32,
    pub end: u32,
    /// Where the UDP payload starts (UDP only).
    pub udp_payload: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub ip_id: u16,
    pub payload_len: u16,
    /// The Ethernet header's first 12 bytes (destination and source MAC) as `wire::Eth` reads
    /// them: three word stores per packet, the byte arrays only for a flow's first packet.
    pub macs: [u32; 3],
    pub protocol: u8,
    pub tcp_flags: u8,
    pub is_v4: bool,
    pub _pad: u8,
}

// SAFETY: integers, byte arrays and a bool, explicit padding: all zeroes is a valid value.
unsafe impl Plain for Hdr {}

impl Hdr {
    /// An IPv4 header's fields (addresses as IPv4-mapped IPv6) and its packet's length.
    #[inline(always)]
    pub fn set_ipv4(&mut self, ip: &wire::Ipv4, total: u32) {
        self.is_v4 = true;
        self.src.0[10] = 0xff;
        self.src.0[11] = 0xff;
        self.src.0[12..16].copy_from_slice(&ip.src.to_ne_bytes());
        self.dst.0[10] = 0xff;
        self.dst.0[11] = 0xff;
        self.dst.0[12..16].copy_from_slice(&ip.dst.to_ne_bytes());
        self.protocol = ip.protocol;
        self.ip_id = ip.id;
        self.ip_len = total;
    }

    /// A TCP header's fields, `doff` its length in bytes (checked by the caller).
    #[inline(always)]
    pub fn set_tcp(&mut self, t: &wire::Tcp, doff: u32) {
        self.src_port = t.src_port;
        self.dst_port = t.dst_port;
        self.tcp_seq = t.seq;
        self.tcp_flags = t.flags & 0x1f;
        self.payload_len = self.payload_past(doff);
    }

    /// A UDP header's fields; `at` is where it starts.
    #[inline(always)]
    pub fn set_udp(&mut self, u: &wire::Udp, at: u32) {
        self.src_port = u.src_port;
        self.dst_port = u.dst_port;
        self.payload_len = u.len.saturating_sub(8);
        self.udp_payload = at + 8;
    }

    /// An ICMP header's type and code, or an echo's type and identifier (as ports, as
    /// decode.rs keeps them: `cniscope_common::icmp_echo`).
    #[inline(always)]
    pub fn set_icmp(&mut self, type_code: [u8; 2], echo_id: Option<[u8; 2]>) {
        self.src_port = type_code[0] as u16;
        self.dst_port = match echo_id {
            Some(id) => u16::from_be_bytes(id),
            None => type_code[1] as u16,
        };
    }

    /// The IP packet's length past the fixed IP header and `l4_len` bytes of L4 header, as
    /// decode.rs computes a payload length (IPv6 extension headers count as payload).
    #[inline(always)]
    pub fn payload_past(&self, l4_len: u32) -> u16 {
        let used = if self.is_v4 { 20 } else { 40 } + l4_len;
        let v = self.ip_len.saturating_sub(used);
        if v > 0xffff { 0xffff } else { v as u16 }
    }

    /// (destination, source) MAC.
    #[inline(always)]
    pub fn mac_bytes(&self) -> ([u8; 6], [u8; 6]) {
        let [a, b, c] = self.macs.map(u32::to_ne_bytes);
        (
            [a[0], a[1], a[2], a[3], b[0], b[1]],
            [b[2], b[3], c[0], c[1], c[2], c[3]],
        )
    }
}

/// The tunnel a packet travelled in (kind 0: none).
#[repr(C, align(8))]
pub struct Tunnel {
    pub vni: u32,
    pub geneve_class: u16,
    pub geneve_type: u8,
    /// Bytes of the kept option's data (0 = no option).
    pub geneve_len: u8,
    /// Up to 8 bytes of the kept option's data, in packet order (`u64::to_ne_bytes`).
    pub geneve_data: u64,
    pub kind: u8,
    pub _pad: [u8; 7],
}

// SAFETY: integers and a byte array, explicit padding: all zeroes is a valid value.
unsafe impl Plain for Tunnel {}

/// A packet and the tunnel it travelled in. Lives in a per-CPU scratch map: the BPF stack
/// (512 bytes) cannot hold it.
#[repr(C, align(8))]
pub struct Parsed {
    pub inner: Hdr,
    pub outer: Hdr,
    pub tunnel: Tunnel,
}

/// 1: every read goes through `bpf_skb_load_bytes`, as for paged data. Set at load time (a
/// read-only global, so the verifier drops the branch not taken): the replay/live
/// equivalence test runs both ways, since `BPF_PROG_TEST_RUN` hands the probe only linear data.
#[unsafe(no_mangle)]
pub(crate) static HELPER_READS_ONLY: u8 = 0;

/// `T` (a `wire` header or a byte array) at `off`, if it ends within `limit`. Read straight
/// from the packet when it lies in the linear part (no helper call: on these kernels each call
/// and return costs tens of nanoseconds), else copied out by `bpf_skb_load_bytes` (paged data,
/// e.g. GRO'd frames).
#[inline(always)]
fn load<T: Header>(ctx: &TcContext, off: u32, limit: u32) -> Result<T, Skip> {
    let size = T::LEN;
    if off + size > limit {
        return Err(Skip::Bad);
    }
    // The verifier accepts a variable packet offset only with known bounds, and LLVM drops a
    // mask it can prove redundant from the checks above: read the offset back through a
    // volatile stack slot so the mask stays. (The verifier also wants offset + size <= 0xffff:
    // headers past 32 KiB, if any, take the helper.)
    let mut slot = off;
    // SAFETY: a local variable.
    let off_v = unsafe { core::ptr::read_volatile(&mut slot as *mut u32) } & 0x7fff;
    let data = ctx.data();
    let at = data + off_v as usize;
    // At least two bytes are compared: LLVM rewrites `at + 1 <= end` as `at < end`, a form the
    // verifier does not use to widen the packet range.
    let need = if size < 2 { 2 } else { size } as usize;
    let helper_only = mem::load_time(&HELPER_READS_ONLY) != 0;
    if !helper_only && off_v == off && at + need <= ctx.data_end() {
        // [at, at + size) is inside the packet's linear data (checked just above).
        return Ok(T::read(wire::Packet(at)));
    }
    copied(ctx, off)
}

/// `T` at `off` through `bpf_skb_load_bytes`, copied onto the stack (zeroed first: its
/// fields are read as aligned words).
#[inline(always)]
fn copied<T: Header>(ctx: &TcContext, off: u32) -> Result<T, Skip> {
    const { assert!(T::LEN as usize <= wire::COPY_WORDS * 8) };
    let mut buf = core::mem::MaybeUninit::<[u64; wire::COPY_WORDS]>::uninit();
    let words = buf.as_mut_ptr() as *mut u64;
    for i in 0..wire::COPY_WORDS {
        // SAFETY: word `i` of `buf` (volatile: no memset call).
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    // SAFETY: `buf` has room for T::LEN bytes (asserted above).
    let r = unsafe { bpf_skb_load_bytes(ctx.skb.skb as *const _, off, words.cast(), T::LEN) };
    if r != 0 {
        return Err(Skip::Bad);
    }
    // SAFETY: every word was written above.
    let buf = unsafe { buf.assume_init() };
    Ok(T::read(wire::Copied(&buf)))
}

/// Ethernet and VLAN tags: the MACs into `h`; returns (ethertype, offset of the payload). The
/// MACs go straight to their place: returned by value, their twelve bytes were each spilled
/// to the stack and read back.
#[inline(always)]
fn ethernet(ctx: &TcContext, off: u32, limit: u32, h_out: &mut Hdr) -> Result<(u16, u32), Skip> {
    let h: wire::Eth = load(ctx, off, limit)?;
    let mut ethertype = h.ethertype;
    let mut o = off + 14;
    for _ in 0..4 {
        if !ethertype::is_vlan(ethertype) {
            break;
        }
        let t: wire::Vlan = load(ctx, o, limit)?;
        ethertype = t.ethertype;
        o += 4;
    }
    h_out.macs = h.macs;
    Ok((ethertype, o))
}

/// The shared payload hash (`cniscope_common::payload_hash`) of the first 16 bytes in
/// `[off, end)`, zeroes past `end`, as decode.rs computes it: one helper call for the bytes
/// there are, and 16 rounds without a branch.
#[inline(always)]
fn fnv(ctx: &TcContext, off: u32, end: u32) -> u32 {
    let mut buf = core::mem::MaybeUninit::<[u64; 2]>::uninit();
    let words = buf.as_mut_ptr() as *mut u64;
    // SAFETY: two words of `buf`, written in place (volatile: no memset call). Not
    // `mem::zeroed`: a value returned zero is a constant to the verifier, whose hash then
    // differs from the loaded one's and doubles the states it walks after.
    unsafe {
        core::ptr::write_volatile(words, 0);
        core::ptr::write_volatile(words.add(1), 0);
    }
    if off < end {
        let avail = end - off;
        let n = if avail >= 16 { 16 } else { avail };
        // The verifier needs the length's bounds (1..=16) in the register the helper gets:
        // this form keeps them, where `if n == 0` was folded away (LLVM knows n >= 1).
        let len = ((n - 1) & 0xf) + 1;
        // SAFETY: `buf` is 16 writable bytes and `len` is at most 16. On failure the bytes
        // stay zero, as for an empty payload.
        unsafe { bpf_skb_load_bytes(ctx.skb.skb as *const _, off, buf.as_mut_ptr().cast(), len) };
    }
    // SAFETY: both words were written above.
    let bytes: [u8; PAYLOAD_HASH_BYTES] = unsafe { core::mem::transmute(buf.assume_init()) };
    payload_hash(&bytes)
}

/// IPv4/IPv6 and the L4 header after them, within `[off, limit)`, into `p`, which the caller
/// zeroed (but for the MACs `ethernet` may have put there).
#[inline(always)]
pub fn ip(ctx: &TcContext, off: u32, ether_type: u16, limit: u32, p: &mut Hdr) -> Result<(), Skip> {
    let (payload, end) = match ether_type {
        ethertype::IPV4 => {
            let h: wire::Ipv4 = load(ctx, off, limit)?;
            if h.version_ihl >> 4 != 4 {
                return Err(Skip::Bad);
            }
            let hl = ((h.version_ihl & 0x0f) as u32) * 4;
            if hl < 20 || off + hl > limit {
                return Err(Skip::Bad);
            }
            // BIG TCP leaves tot_len 0 for packets over 64 KiB: the length is then what the
            // packet carries (as decode.rs).
            let mut total = h.total_len as u32;
            if total < hl {
                total = limit - off;
            }
            p.set_ipv4(&h, total);
            let end = if off + total < limit {
                off + total
            } else {
                limit
            };
            p.ip_payload = off + hl;
            p.end = end;
            // A later fragment carries no L4 header.
            if h.frag & 0x1fff != 0 {
                p.ip_payload = end;
                return Ok(());
            }
            (off + hl, end)
        }
        ethertype::IPV6 => {
            let h: wire::Ipv6 = load(ctx, off, limit)?;
            if h.version != 6 {
                return Err(Skip::Bad);
            }
            let plen = h.payload_len as u32;
            let (src, dst) = (h.src, h.dst);
            p.src.0[0..8].copy_from_slice(&src[0].to_ne_bytes());
            p.src.0[8..16].copy_from_slice(&src[1].to_ne_bytes());
            p.dst.0[0..8].copy_from_slice(&dst[0].to_ne_bytes());
            p.dst.0[8..16].copy_from_slice(&dst[1].to_ne_bytes());
            p.ip_len = plen + 40;
            let end = if off + 40 + plen < limit {
                off + 40 + plen
            } else {
                limit
            };
            // Extension headers; if one cannot be read, decode.rs keeps the first next-header.
            let mut next = h.next;
            let mut o = off + 40;
            let mut ok = true;
            // One read per arm, not one shared read before a match on the kind: that shape
            // cost the verifier 90 K more instructions.
            for _ in 0..4 {
                let len = match next {
                    0 | 43 | 60 => match load::<[u8; 2]>(ctx, o, end) {
                        Ok(e) => {
                            let l = (e[1] as u32 + 1) * 8;
                            next = e[0];
                            l
                        }
                        Err(_) => {
                            ok = false;
                            break;
                        }
                    },
                    44 => match load::<[u8; 2]>(ctx, o, end) {
                        Ok(e) => {
                            next = e[0];
                            8
                        }
                        Err(_) => {
                            ok = false;
                            break;
                        }
                    },
                    51 => match load::<[u8; 2]>(ctx, o, end) {
                        Ok(e) => {
                            let l = (e[1] as u32 + 2) * 4;
                            next = e[0];
                            l
                        }
                        Err(_) => {
                            ok = false;
                            break;
                        }
                    },
                    _ => break,
                };
                if o + len > end {
                    ok = false;
                    break;
                }
                o += len;
            }
            if !ok {
                next = h.next;
                o = off + 40;
            }
            p.protocol = next;
            p.ip_payload = o;
            p.end = end;
            (o, end)
        }
        _ => return Err(Skip::NotIp),
    };
    match p.protocol {
        ipproto::TCP => {
            if let Ok(t) = load::<wire::Tcp>(ctx, payload, end) {
                let doff = ((t.data_offset >> 4) as u32) * 4;
                if doff >= 20 && payload + doff <= end {
                    p.set_tcp(&t, doff);
                }
            }
        }
        ipproto::UDP => {
            if let Ok(u) = load::<wire::Udp>(ctx, payload, end) {
                p.set_udp(&u, payload);
                if !p.is_v4 {
                    p.payload_hash = fnv(ctx, payload + 8, end);
                }
            }
        }
        ipproto::ICMP | ipproto::ICMPV6 => {
            if let Ok(t) = load::<[u8; 2]>(ctx, payload, end) {
                let id = if cniscope_common::icmp_echo(p.protocol, t[0]) {
                    load::<[u8; 2]>(ctx, payload + 4, end).ok()
                } else {
                    None
                };
                p.set_icmp(t, id);
            }
            p.payload_len = p.payload_past(0);
            if !p.is_v4 {
                p.payload_hash = fnv(ctx, payload + 4, end);
            } else if p.protocol == ipproto::ICMP {
                p.payload_hash = icmp_quote(ctx, payload, end);
            }
        }
        _ => {
            p.payload_len = p.payload_past(0);
            if !p.is_v4 {
                p.payload_hash = fnv(ctx, payload, end);
            }
        }
    }
    Ok(())
}

/// An ICMPv4 error's quote of the packet it answers, as decode.rs's `icmp_quote`: the
/// quoted IPv4 header's protocol and addresses and, for TCP and UDP, its ports; 0 for any
/// other ICMP message or a quote cut short.
#[inline(always)]
fn icmp_quote(ctx: &TcContext, icmp: u32, end: u32) -> u32 {
    let Ok(t) = load::<u8>(ctx, icmp, end) else {
        return 0;
    };
    if !fp::is_icmp_error(t) {
        return 0;
    }
    let Ok(q) = load::<wire::Ipv4>(ctx, icmp + 8, end) else {
        return 0;
    };
    let ihl = ((q.version_ihl & 0x0f) as u32) * 4;
    if q.version_ihl >> 4 != 4 || ihl < 20 {
        return 0;
    }
    let (mut sport, mut dport) = (0u16, 0u16);
    if q.protocol == ipproto::TCP || q.protocol == ipproto::UDP {
        // The ports as UDP's first two fields (TCP's are the same two).
        match load::<wire::Udp>(ctx, icmp + 8 + ihl, end) {
            Ok(u) => {
                sport = u.src_port;
                dport = u.dst_port;
            }
            Err(_) => return 0,
        }
    }
    fp::quote(
        q.protocol,
        u32::from_be_bytes(q.src.to_ne_bytes()),
        u32::from_be_bytes(q.dst.to_ne_bytes()),
        sport,
        dport,
    )
}

/// Whether `port` is one of `ports`, a field of the load-time global `PROBE_CONFIG`.
#[inline(always)]
pub(crate) fn is_port<const N: usize>(ports: &[u16; N], port: u16) -> bool {
    let mut i = 0;
    while i < N {
        let p = mem::load_time(&ports[i]);
        if p != 0 && p == port {
            return true;
        }
        i += 1;
    }
    false
}

#[inline(always)]
fn raw_ethertype(ctx: &TcContext, off: u32, limit: u32) -> Result<u16, Skip> {
    let b: u8 = load(ctx, off, limit)?;
    match b >> 4 {
        4 => Ok(ethertype::IPV4),
        6 => Ok(ethertype::IPV6),
        _ => Err(Skip::Bad),
    }
}

/// The whole packet into `out`. `l3` says the device has no link-layer header (TUN, IPIP).
/// Plain IPv4, bare or in VXLAN, takes the fast path (`fast.rs`) first.
///
/// Each tunnel decoder only finds where its payload starts and what it is; the one inner parse
/// after them is shared. (Parsing the inner packet in each tunnel's branch made the verifier
/// walk the IP parser once per tunnel kind.)
#[inline(always)]
pub fn packet(ctx: &TcContext, cfg: &ProbeConfig, l3: bool, out: &mut Parsed) -> Result<(), Skip> {
    if !l3 && crate::fast::packet(ctx, cfg, ctx.len(), out) {
        return Ok(());
    }
    // Read again, not shared with the fast path: the bounds it learnt about the length differ
    // at each place it gives up, and the verifier walked the general parser once per variant
    // (460 K instructions of work instead of 245 K).
    let limit = ctx.len();
    mem::zero(&mut out.tunnel);
    mem::zero(&mut out.outer);
    let (ethertype, off) = if l3 {
        (raw_ethertype(ctx, 0, limit)?, 0)
    } else {
        ethernet(ctx, 0, limit, &mut out.outer)?
    };
    ip(ctx, off, ethertype, limit, &mut out.outer)?;
    let end = out.outer.end;
    let udp = out.outer.udp_payload;
    let port = out.outer.dst_port;
    let ip_payload = out.outer.ip_payload;
    // (tunnel kind, where its payload starts, the payload's ethertype; TEB = Ethernet)
    let payload: Result<(u8, u32, u16), Skip> = match out.outer.protocol {
        ipproto::UDP if udp != 0 && is_port(&cfg.vxlan_ports, port) => {
            match load::<wire::UdpTunnel>(ctx, udp, end) {
                Ok(v) if v.first & 0x08 != 0 => {
                    out.tunnel.vni = v.vni;
                    Ok((tunnel::VXLAN, udp + 8, ethertype::TEB))
                }
                _ => Err(Skip::Bad),
            }
        }
        ipproto::UDP if udp != 0 && is_port(&cfg.geneve_ports, port) => {
            geneve(ctx, udp, end, &cfg.geneve_classes, &mut out.tunnel)
        }
        ipproto::UDP if udp != 0 && is_port(&cfg.udp_encap_ports, port) => {
            raw_ethertype(ctx, udp, end).map(|t| (tunnel::UDP_ENCAP, udp, t))
        }
        ipproto::IPIP | ipproto::IPV6 if ip_payload < end => {
            raw_ethertype(ctx, ip_payload, end).map(|t| (tunnel::IPIP, ip_payload, t))
        }
        ipproto::GRE => gre(ctx, ip_payload, end, &mut out.tunnel),
        _ => Err(Skip::NotIp),
    };
    let tunnelled = payload.is_ok();
    let decoded = match payload {
        Ok((kind, at, ethertype)) => {
            out.tunnel.kind = kind;
            inner(ctx, at, ethertype, end, &mut out.inner)
        }
        Err(e) => Err(e),
    };
    // An Ethernet frame in a tunnel that is no IP packet (ARP through a Kata peer pod's
    // tunnel) is link control, like the same frame bare (as decode.rs).
    if tunnelled && matches!(decoded, Err(Skip::NotIp)) {
        return Err(Skip::NotIp);
    }
    if decoded.is_err() {
        // No tunnel, or a carrier whose payload is not a valid inner packet: the carrier alone.
        mem::copy(&mut out.inner, &out.outer);
        mem::zero(&mut out.tunnel);
    }
    Ok(())
}

/// The inner packet at `off`: an Ethernet frame (TEB) or an IP packet.
#[inline(always)]
fn inner(ctx: &TcContext, off: u32, ether_type: u16, limit: u32, h: &mut Hdr) -> Result<(), Skip> {
    mem::zero(h);
    let (t, o) = match ether_type {
        ethertype::TEB => ethernet(ctx, off, limit, h)?,
        ethertype::IPV4 | ethertype::IPV6 => (ether_type, off),
        _ => return Err(Skip::Bad),
    };
    ip(ctx, o, t, limit, h)
}

/// Whether `class` is one of the Geneve option classes the plugins asked to keep (the
/// load-time global `PROBE_CONFIG`; zero slots are unused).
#[inline(always)]
fn is_wanted_class(classes: &[u16; MAX_GENEVE_CLASSES], class: u16) -> bool {
    is_port(classes, class)
}

/// Geneve (RFC 8926): the VNI, one option (class, type, up to 8 bytes of data) and the inner
/// packet after all options. The option kept is the first of a class a plugin asked for
/// (`classes`, from the plugins' decoding needs: OVN's 0x0102 for the ovn plugin) among the
/// first four, else the first: the one map slot holds what a CNI plugin needs, and the replay
/// decoder, which keeps every option, is compared by the same rule
/// (docs/observation-model.md, "Geneve options").
#[inline(always)]
fn geneve(
    ctx: &TcContext,
    udp: u32,
    end: u32,
    classes: &[u16; MAX_GENEVE_CLASSES],
    t: &mut Tunnel,
) -> Result<(u8, u32, u16), Skip> {
    let g: wire::UdpTunnel = load(ctx, udp, end)?;
    if g.first >> 6 != 0 {
        return Err(Skip::Bad);
    }
    let opt_len = ((g.first & 0x3f) as u32) * 4;
    let base = udp + 8;
    if base + opt_len > end {
        return Err(Skip::Bad);
    }
    t.vni = g.vni;
    let mut pos = 0u32;
    for i in 0..4 {
        if pos + 4 > opt_len {
            break;
        }
        let Ok(o) = load::<wire::GeneveOption>(ctx, base + pos, end) else {
            break;
        };
        let class = o.class;
        let len = ((o.len & 0x1f) as u32) * 4;
        if pos + 4 + len > opt_len {
            break;
        }
        let wanted = is_wanted_class(classes, class);
        if i == 0 || wanted {
            t.geneve_class = class;
            t.geneve_type = o.kind;
            t.geneve_len = 0;
            t.geneve_data = 0;
            let at = base + pos + 4;
            if len >= 8 {
                if let Ok(d) = load::<u64>(ctx, at, end) {
                    // Packet order kept: the native-endian bytes of the word as loaded.
                    t.geneve_data = d;
                    t.geneve_len = 8;
                }
            } else if len == 4
                && let Ok(d) = load::<u32>(ctx, at, end)
            {
                let d = d.to_ne_bytes();
                t.geneve_data = u64::from_ne_bytes([d[0], d[1], d[2], d[3], 0, 0, 0, 0]);
                t.geneve_len = 4;
            }
            if wanted {
                break;
            }
        }
        pos += 4 + len;
    }
    Ok((tunnel::GENEVE, base + opt_len, g.protocol))
}

/// GRE version 0 (see decode.rs): keyed, checksummed, sequenced; IP, Ethernet or ERSPAN II.
#[inline(always)]
fn gre(ctx: &TcContext, off: u32, end: u32, t: &mut Tunnel) -> Result<(u8, u32, u16), Skip> {
    let h: wire::Gre = load(ctx, off, end)?;
    let flags = h.flags;
    if flags & 0x7 != 0 {
        return Err(Skip::NotIp);
    }
    let protocol = h.protocol;
    let mut o = off + 4;
    if flags & 0x8000 != 0 {
        o += 4;
    }
    let mut key = 0;
    if flags & 0x2000 != 0 {
        key = u32::from_be(load::<u32>(ctx, o, end)?);
        o += 4;
    }
    if flags & 0x1000 != 0 {
        o += 4;
    }
    let (start, ether_type) = match protocol {
        ethertype::IPV4 | ethertype::IPV6 | ethertype::TEB => (o, protocol),
        ethertype::ERSPAN_II => (o + 8, ethertype::TEB),
        _ => return Err(Skip::NotIp),
    };
    t.vni = key;
    Ok((tunnel::GRE, start, ether_type))
}
