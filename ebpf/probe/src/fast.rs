//! The fast path: plain IPv4 (no VLAN tag, no IP options, not a later fragment) carrying TCP,
//! UDP or ICMP, bare or in VXLAN. That is nearly every packet on a Flannel or Calico-VXLAN
//! node, and its headers sit at fixed offsets: one bounds check per header and loads at
//! constant offsets, where the general parser (`parse.rs`) checks and launders every offset.
//!
//! It gives the general parser's result or gives up: it returns false for anything else (or
//! anything short or odd: then `parse::packet` starts over and overwrites what this wrote).
//! The replay/live equivalence tests cover both: the default probe takes this path for such
//! packets, the helper-reads-only probe never does.

use crate::mem;
use crate::parse::{Hdr, Parsed, is_port};
use crate::wire::{self, Header, Packet};
use aya_ebpf::programs::TcContext;
use cniscope_common::{ProbeConfig, ethertype, ipproto, tunnel};

/// Bytes of Ethernet + IPv4 without options.
const ETH: usize = 14;
const IP4: usize = 20;
/// Where a VXLAN packet's inner Ethernet header and inner IPv4 header start (outer Ethernet,
/// IPv4, UDP and VXLAN headers before them).
const VXLAN_INNER_ETH: usize = ETH + IP4 + 8 + 8;
const VXLAN_INNER_IP: usize = VXLAN_INNER_ETH + ETH;

/// The packet into `out` if it is one the fast path knows; false (and `out` to be overwritten)
/// otherwise. `limit` is the packet's length.
#[inline(always)]
pub fn packet(ctx: &TcContext, cfg: &ProbeConfig, limit: u32, out: &mut Parsed) -> bool {
    if mem::load_time(&crate::parse::HELPER_READS_ONLY) != 0 {
        return false;
    }
    let data = ctx.data();
    let data_end = ctx.data_end();
    if data + ETH + IP4 > data_end {
        return false;
    }
    let eth = wire::Eth::read(Packet(data));
    if eth.ethertype != ethertype::IPV4 {
        return false;
    }
    mem::zero(&mut out.tunnel);
    // Bare packets go straight to `inner` (the flow's own header), carriers move to `outer`.
    let h = &mut out.inner;
    mem::zero(h);
    h.macs = eth.macs;
    let Some(end) = ipv4(data, data_end, ETH, limit, h) else {
        return false;
    };
    if h.protocol != ipproto::UDP || !is_port(&cfg.vxlan_ports, h.dst_port) {
        // Other UDP tunnels are the general parser's; bare UDP stays as it is.
        return !(h.protocol == ipproto::UDP
            && (is_port(&cfg.geneve_ports, h.dst_port)
                || is_port(&cfg.udp_encap_ports, h.dst_port)));
    }
    // VXLAN: the flags' I bit, then an inner Ethernet frame carrying plain IPv4.
    if data + VXLAN_INNER_IP + IP4 > data_end || (VXLAN_INNER_ETH + ETH) as u32 > end {
        return false;
    }
    let vxlan = wire::UdpTunnel::read(Packet(data + ETH + IP4 + 8));
    let inner_eth = wire::Eth::read(Packet(data + VXLAN_INNER_ETH));
    if vxlan.first & 0x08 == 0 || inner_eth.ethertype != ethertype::IPV4 {
        return false;
    }
    mem::copy(&mut out.outer, &out.inner);
    let h = &mut out.inner;
    mem::zero(h);
    h.macs = inner_eth.macs;
    if ipv4(data, data_end, VXLAN_INNER_IP, end, h).is_none() {
        return false;
    }
    out.tunnel.vni = vxlan.vni;
    out.tunnel.kind = tunnel::VXLAN;
    true
}

/// IPv4 without options at `at` and its TCP/UDP/ICMP header, within `limit`, into `h` (zeroed
/// but for the MACs), as `parse::ip` would; the end of the IP packet, or None for anything
/// the general parser must see (options, later fragments, other protocols, short headers,
/// ICMP errors).
#[inline(always)]
fn ipv4(data: usize, data_end: usize, at: usize, limit: u32, h: &mut Hdr) -> Option<u32> {
    if data + at + IP4 > data_end || (at + IP4) as u32 > limit {
        return None;
    }
    let ip = wire::Ipv4::read(Packet(data + at));
    if ip.version_ihl != 0x45 || ip.frag & 0x1fff != 0 {
        return None;
    }
    // BIG TCP leaves tot_len 0 for packets over 64 KiB: the length is then what the packet
    // carries (as parse::ip and decode.rs).
    let mut total = ip.total_len as u32;
    if total < IP4 as u32 {
        total = limit - at as u32;
    }
    let end = if at as u32 + total < limit {
        at as u32 + total
    } else {
        limit
    };
    h.set_ipv4(&ip, total);
    let l4 = at + IP4;
    match ip.protocol {
        ipproto::TCP => {
            if data + l4 + 20 > data_end || (l4 + 20) as u32 > end {
                return None;
            }
            let t = wire::Tcp::read(Packet(data + l4));
            let doff = ((t.data_offset >> 4) as u32) * 4;
            if doff < 20 || l4 as u32 + doff > end {
                return None;
            }
            h.set_tcp(&t, doff);
        }
        ipproto::UDP => {
            if data + l4 + 8 > data_end || (l4 + 8) as u32 > end {
                return None;
            }
            h.set_udp(&wire::Udp::read(Packet(data + l4)), l4 as u32);
        }
        ipproto::ICMP => {
            // The whole 8-byte header (an echo's identifier is at 4); a shorter one goes to
            // the general parser.
            if data + l4 + 8 > data_end || (l4 + 8) as u32 > end {
                return None;
            }
            let t = <[u8; 2]>::read(Packet(data + l4));
            // An error quotes the packet it answers: the general parser reads the quote.
            if cniscope_common::fp::is_icmp_error(t[0]) {
                return None;
            }
            let id = cniscope_common::icmp_echo(ipproto::ICMP, t[0])
                .then(|| <[u8; 2]>::read(Packet(data + l4 + 4)));
            h.set_icmp(t, id);
            h.payload_len = h.payload_past(0);
        }
        _ => return None,
    }
    h.ip_payload = l4 as u32;
    h.end = end;
    Some(end)
}
