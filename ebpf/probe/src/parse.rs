//! The probe's packet parser. It mirrors `host/src/sources/decode.rs` rule for rule (link
//! layer, up to 4 VLAN tags, IPv4/IPv6 with extension headers, TCP/UDP/ICMP, one tunnel
//! level), so live capture and replay give the same observations; the equivalence test runs
//! both on every packet of the shared real captures.
//!
//! Every read is a bounds-checked `bpf_skb_load_bytes`; `limit` is the end of the bytes the
//! enclosing header says belong to this packet (the IPv4 total length, not Ethernet padding).

use aya_ebpf::programs::TcContext;
use cniscope_common::{ProbeConfig, tunnel};

pub enum Skip {
    NotIp,
    Bad,
}

/// One IP packet's fields (see `L3L4` in decode.rs).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Hdr {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    pub tcp_seq: u32,
    pub ip_id: u16,
    pub is_v4: bool,
    pub payload_len: u16,
    /// Only computed where the fingerprint uses it (IPv6, not TCP): a helper call saved on
    /// every other packet.
    pub payload_hash: u32,
    pub ip_len: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// Where the IP payload starts and where the packet ends.
    pub ip_payload: u32,
    pub end: u32,
    /// Where the UDP payload starts (UDP only).
    pub udp_payload: u32,
}

/// A packet and the tunnel it travelled in. Lives in a per-CPU scratch map: the BPF stack
/// (512 bytes) cannot hold it.
#[repr(C)]
pub struct Parsed {
    pub inner: Hdr,
    pub tunnel: u8,
    pub vni: u32,
    pub outer: Hdr,
    pub geneve_class: u16,
    pub geneve_type: u8,
    /// Bytes of the first option's data (0 = no option).
    pub geneve_len: u8,
    pub geneve_data: [u8; 8],
}

#[inline(always)]
fn be16(a: u8, b: u8) -> u16 {
    ((a as u16) << 8) | b as u16
}

#[inline(always)]
fn load<T>(ctx: &TcContext, off: u32, limit: u32) -> Result<T, Skip> {
    if off as usize + core::mem::size_of::<T>() > limit as usize {
        return Err(Skip::Bad);
    }
    ctx.load::<T>(off as usize).map_err(|_| Skip::Bad)
}

/// Ethernet and VLAN tags: (src MAC, dst MAC, ethertype, offset of the payload).
#[inline(always)]
fn ethernet(ctx: &TcContext, off: u32, limit: u32) -> Result<([u8; 6], [u8; 6], u16, u32), Skip> {
    let h: [u8; 14] = load(ctx, off, limit)?;
    let mut ethertype = be16(h[12], h[13]);
    let mut o = off + 14;
    for _ in 0..4 {
        if !(ethertype == 0x8100 || ethertype == 0x88a8 || ethertype == 0x9100) {
            break;
        }
        let t: [u8; 4] = load(ctx, o, limit)?;
        ethertype = be16(t[2], t[3]);
        o += 4;
    }
    let src = [h[6], h[7], h[8], h[9], h[10], h[11]];
    let dst = [h[0], h[1], h[2], h[3], h[4], h[5]];
    Ok((src, dst, ethertype, o))
}

/// FNV-1a of up to the first 16 bytes in `[off, end)`, as decode.rs computes it.
#[inline(always)]
fn fnv(ctx: &TcContext, off: u32, end: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    if off >= end {
        return h;
    }
    let avail = end - off;
    let mut buf = [0u8; 16];
    let n = if avail >= 16 { 16 } else { avail as usize };
    if n == 16 {
        if let Ok(b) = ctx.load::<[u8; 16]>(off as usize) {
            buf = b;
        } else {
            return h;
        }
    } else {
        for i in 0..15 {
            if i >= n {
                break;
            }
            match ctx.load::<u8>(off as usize + i) {
                Ok(b) => buf[i] = b,
                Err(_) => return h,
            }
        }
    }
    for (i, b) in buf.iter().enumerate() {
        if i >= n {
            break;
        }
        h = (h ^ *b as u32).wrapping_mul(0x0100_0193);
    }
    h
}

/// IPv4/IPv6 and the L4 header after them, within `[off, limit)`.
#[inline(always)]
pub fn ip(ctx: &TcContext, off: u32, ethertype: u16, limit: u32, p: &mut Hdr) -> Result<(), Skip> {
    // SAFETY: Hdr is plain integers and byte arrays: all zeroes is a valid value.
    unsafe { core::ptr::write_bytes(p as *mut Hdr, 0, 1) };
    let (payload, end) = match ethertype {
        0x0800 => {
            let h: [u8; 20] = load(ctx, off, limit)?;
            if h[0] >> 4 != 4 {
                return Err(Skip::Bad);
            }
            let hl = ((h[0] & 0x0f) as u32) * 4;
            if hl < 20 || off + hl > limit {
                return Err(Skip::Bad);
            }
            // BIG TCP leaves tot_len 0 for packets over 64 KiB: the length is then what the
            // packet carries (as decode.rs).
            let mut total = be16(h[2], h[3]) as u32;
            if total < hl {
                total = limit - off;
            }
            p.is_v4 = true;
            p.src[10] = 0xff;
            p.src[11] = 0xff;
            p.src[12..16].copy_from_slice(&h[12..16]);
            p.dst[10] = 0xff;
            p.dst[11] = 0xff;
            p.dst[12..16].copy_from_slice(&h[16..20]);
            p.protocol = h[9];
            p.ip_id = be16(h[4], h[5]);
            p.ip_len = total;
            let end = if off + total < limit { off + total } else { limit };
            p.ip_payload = off + hl;
            p.end = end;
            // A later fragment carries no L4 header.
            if be16(h[6], h[7]) & 0x1fff != 0 {
                p.ip_payload = end;
                return Ok(());
            }
            (off + hl, end)
        }
        0x86dd => {
            let h: [u8; 40] = load(ctx, off, limit)?;
            if h[0] >> 4 != 6 {
                return Err(Skip::Bad);
            }
            let plen = be16(h[4], h[5]) as u32;
            p.src.copy_from_slice(&h[8..24]);
            p.dst.copy_from_slice(&h[24..40]);
            p.ip_len = plen + 40;
            let end = if off + 40 + plen < limit { off + 40 + plen } else { limit };
            // Extension headers; if one cannot be read, decode.rs keeps the first next-header.
            let mut next = h[6];
            let mut o = off + 40;
            let mut ok = true;
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
                next = h[6];
                o = off + 40;
            }
            p.protocol = next;
            p.ip_payload = o;
            p.end = end;
            (o, end)
        }
        _ => return Err(Skip::NotIp),
    };
    let ip_header = if p.is_v4 { 20 } else { 40 };
    let ip_len = p.ip_len;
    let from_ip = |l4: u32| -> u16 {
        let used = ip_header + l4;
        let v = if ip_len > used { ip_len - used } else { 0 };
        if v > 0xffff { 0xffff } else { v as u16 }
    };
    match p.protocol {
        6 => {
            if let Ok(t) = load::<[u8; 20]>(ctx, payload, end) {
                let doff = ((t[12] >> 4) as u32) * 4;
                if doff >= 20 && payload + doff <= end {
                    p.src_port = be16(t[0], t[1]);
                    p.dst_port = be16(t[2], t[3]);
                    p.tcp_seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
                    p.tcp_flags = t[13] & 0x1f;
                    p.payload_len = from_ip(doff);
                }
            }
        }
        17 => {
            if let Ok(u) = load::<[u8; 8]>(ctx, payload, end) {
                p.src_port = be16(u[0], u[1]);
                p.dst_port = be16(u[2], u[3]);
                let ulen = be16(u[4], u[5]);
                p.payload_len = if ulen > 8 { ulen - 8 } else { 0 };
                p.udp_payload = payload + 8;
                if !p.is_v4 {
                    p.payload_hash = fnv(ctx, payload + 8, end);
                }
            }
        }
        1 | 58 => {
            if let Ok(t) = load::<[u8; 2]>(ctx, payload, end) {
                p.src_port = t[0] as u16;
                p.dst_port = t[1] as u16;
            }
            p.payload_len = from_ip(0);
            if !p.is_v4 {
                p.payload_hash = fnv(ctx, payload + 4, end);
            }
        }
        _ => {
            p.payload_len = from_ip(0);
            if !p.is_v4 {
                p.payload_hash = fnv(ctx, payload, end);
            }
        }
    }
    Ok(())
}

#[inline(always)]
fn is_port(ports: &[u16], port: u16) -> bool {
    let mut i = 0;
    while i < ports.len() {
        if ports[i] != 0 && ports[i] == port {
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
        4 => Ok(0x0800),
        6 => Ok(0x86dd),
        _ => Err(Skip::Bad),
    }
}

/// Decodes the inner packet of a tunnel at `off`: by ethertype, 0x6558 being Ethernet.
#[inline(always)]
fn inner(ctx: &TcContext, off: u32, ethertype: u16, limit: u32, h: &mut Hdr) -> Result<(), Skip> {
    if ethertype == 0x6558 {
        let (src, dst, t, o) = ethernet(ctx, off, limit)?;
        ip(ctx, o, t, limit, h)?;
        h.src_mac = src;
        h.dst_mac = dst;
        Ok(())
    } else if ethertype == 0x0800 || ethertype == 0x86dd {
        ip(ctx, off, ethertype, limit, h)
    } else {
        Err(Skip::Bad)
    }
}

/// The whole packet into `out`. `l3` says the device has no link-layer header (TUN, IPIP).
#[inline(always)]
pub fn packet(ctx: &TcContext, cfg: &ProbeConfig, l3: bool, out: &mut Parsed) -> Result<(), Skip> {
    let limit = ctx.len();
    out.tunnel = tunnel::NONE;
    out.vni = 0;
    out.geneve_len = 0;
    out.geneve_class = 0;
    out.geneve_type = 0;
    out.geneve_data = [0; 8];
    let (src_mac, dst_mac, ethertype, off) = if l3 {
        ([0; 6], [0; 6], raw_ethertype(ctx, 0, limit)?, 0)
    } else {
        ethernet(ctx, 0, limit)?
    };
    ip(ctx, off, ethertype, limit, &mut out.outer)?;
    out.outer.src_mac = src_mac;
    out.outer.dst_mac = dst_mac;
    let end = out.outer.end;
    let udp = out.outer.udp_payload;
    let port = out.outer.dst_port;
    let ip_payload = out.outer.ip_payload;
    let decoded: Result<(), Skip> = match out.outer.protocol {
        17 if udp != 0 && is_port(&cfg.vxlan_ports, port) => match load::<[u8; 8]>(ctx, udp, end) {
            Ok(v) if v[0] & 0x08 != 0 => {
                out.tunnel = tunnel::VXLAN;
                out.vni = u32::from_be_bytes([0, v[4], v[5], v[6]]);
                inner(ctx, udp + 8, 0x6558, end, &mut out.inner)
            }
            _ => Err(Skip::Bad),
        },
        17 if udp != 0 && is_port(&cfg.geneve_ports, port) => geneve(ctx, udp, end, out),
        17 if udp != 0 && is_port(&cfg.udp_encap_ports, port) => {
            out.tunnel = tunnel::UDP_ENCAP;
            match raw_ethertype(ctx, udp, end) {
                Ok(t) => ip(ctx, udp, t, end, &mut out.inner),
                Err(e) => Err(e),
            }
        }
        4 | 41 if ip_payload < end => {
            out.tunnel = tunnel::IPIP;
            match raw_ethertype(ctx, ip_payload, end) {
                Ok(t) => ip(ctx, ip_payload, t, end, &mut out.inner),
                Err(e) => Err(e),
            }
        }
        47 => gre(ctx, ip_payload, end, out),
        _ => Err(Skip::NotIp),
    };
    if decoded.is_err() {
        // No tunnel, or a carrier whose payload is not a valid inner packet: the carrier alone.
        out.inner = out.outer;
        out.tunnel = tunnel::NONE;
        out.vni = 0;
        out.geneve_len = 0;
        out.geneve_class = 0;
        out.geneve_type = 0;
    }
    Ok(())
}

/// OVN's Geneve option class (CNI-RULES.md): the one option the probe looks past others for.
const OVN_CLASS: u16 = 0x0102;

/// Geneve (RFC 8926): the VNI, one option (class, type, up to 8 bytes of data) and the inner
/// packet after all options. The option kept is OVN's (class 0x0102) when it is among the
/// first four, else the first: the one map slot holds what a CNI plugin needs, and the replay
/// decoder, which keeps every option, is compared by the same rule.
#[inline(always)]
fn geneve(ctx: &TcContext, udp: u32, end: u32, out: &mut Parsed) -> Result<(), Skip> {
    let g: [u8; 8] = load(ctx, udp, end)?;
    if g[0] >> 6 != 0 {
        return Err(Skip::Bad);
    }
    let opt_len = ((g[0] & 0x3f) as u32) * 4;
    let base = udp + 8;
    if base + opt_len > end {
        return Err(Skip::Bad);
    }
    out.tunnel = tunnel::GENEVE;
    out.vni = u32::from_be_bytes([0, g[4], g[5], g[6]]);
    let mut pos = 0u32;
    for i in 0..4 {
        if pos + 4 > opt_len {
            break;
        }
        let Ok(o) = load::<[u8; 4]>(ctx, base + pos, end) else {
            break;
        };
        let class = be16(o[0], o[1]);
        let len = ((o[3] & 0x1f) as u32) * 4;
        if pos + 4 + len > opt_len {
            break;
        }
        if i == 0 || class == OVN_CLASS {
            out.geneve_class = class;
            out.geneve_type = o[2];
            out.geneve_len = 0;
            out.geneve_data = [0; 8];
            let at = base + pos + 4;
            if len >= 8 {
                if let Ok(d) = load::<[u8; 8]>(ctx, at, end) {
                    out.geneve_data = d;
                    out.geneve_len = 8;
                }
            } else if len == 4
                && let Ok(d) = load::<[u8; 4]>(ctx, at, end)
            {
                out.geneve_data[..4].copy_from_slice(&d);
                out.geneve_len = 4;
            }
            if class == OVN_CLASS {
                break;
            }
        }
        pos += 4 + len;
    }
    inner(ctx, base + opt_len, be16(g[2], g[3]), end, &mut out.inner)
}

/// GRE version 0 (see decode.rs): keyed, checksummed, sequenced; IP, Ethernet or ERSPAN II.
#[inline(always)]
fn gre(ctx: &TcContext, off: u32, end: u32, out: &mut Parsed) -> Result<(), Skip> {
    let h: [u8; 4] = load(ctx, off, end)?;
    let flags = be16(h[0], h[1]);
    if flags & 0x7 != 0 {
        return Err(Skip::NotIp);
    }
    let protocol = be16(h[2], h[3]);
    let mut o = off + 4;
    if flags & 0x8000 != 0 {
        o += 4;
    }
    let mut key = 0;
    if flags & 0x2000 != 0 {
        let k: [u8; 4] = load(ctx, o, end)?;
        key = u32::from_be_bytes(k);
        o += 4;
    }
    if flags & 0x1000 != 0 {
        o += 4;
    }
    let (start, t) = match protocol {
        0x0800 | 0x86dd | 0x6558 => (o, protocol),
        0x88be => (o + 8, 0x6558),
        _ => return Err(Skip::NotIp),
    };
    out.tunnel = tunnel::GRE;
    out.vni = key;
    inner(ctx, start, t, end, &mut out.inner)
}
