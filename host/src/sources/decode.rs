//! Packet decoding shared by every source: link layer, VLAN, IPv4/IPv6, TCP/UDP/ICMP, and one
//! level of tunnel (VXLAN, Geneve with options, IP-in-IP, GRE, raw IP in UDP).
//!
//! etherparse validates and reads the standard headers; the tunnel headers it does not know
//! (VXLAN, Geneve, GRE) are read here, each in a few lines with explicit bounds checks.
//! **Invariant:** no input makes this panic; a packet that cannot be read is an `Err` the caller
//! counts.

use etherparse::{
    Ethernet2HeaderSlice, IpNumber, Ipv4HeaderSlice, Ipv6ExtensionsSlice, Ipv6HeaderSlice,
    SingleVlanHeaderSlice, TcpHeaderSlice, UdpHeaderSlice,
};
use thiserror::Error;

use cniscope_common::{PAYLOAD_HASH_BYTES, payload_hash};
pub use cniscope_common::{ethertype, fp, ipproto, tcp_flags, tunnel};

/// Link-layer types we read (pcap LINKTYPE_* values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    Ethernet,
    /// Raw IPv4 or IPv6, told apart by the version nibble.
    RawIp,
    /// Linux "cooked" capture v1 (tcpdump -i any).
    LinuxSll,
    /// Linux "cooked" capture v2: carries the interface index and direction.
    LinuxSll2,
    /// BSD loopback / null: 4-byte address family.
    Null,
}

impl LinkType {
    pub fn from_pcap(linktype: i32) -> Option<LinkType> {
        match linktype {
            1 => Some(LinkType::Ethernet),
            12 | 14 | 101 | 228 | 229 => Some(LinkType::RawIp),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            0 => Some(LinkType::Null),
            _ => None,
        }
    }
}

/// What the decoders decode beyond the fixed protocols: which UDP ports carry which tunnel,
/// and which Geneve option classes live capture keeps. The operator's `[decode]` section plus
/// every plugin's decoding needs (its answer to `configure`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoding {
    pub vxlan: Vec<u16>,
    pub geneve: Vec<u16>,
    /// Raw IP packets in UDP (flannel's `udp` backend, 8285).
    pub udp_encap: Vec<u16>,
    /// Geneve option classes a plugin reads. Replay keeps every option; the probe keeps one
    /// per view: the first of these classes among a packet's first four, else the first.
    pub geneve_classes: Vec<u16>,
}

impl Decoding {
    /// Adds `other`'s ports and classes (each kept once, in order).
    pub fn add(&mut self, other: &Decoding) {
        let union = |into: &mut Vec<u16>, from: &[u16]| {
            for v in from {
                if !into.contains(v) {
                    into.push(*v);
                }
            }
        };
        union(&mut self.vxlan, &other.vxlan);
        union(&mut self.geneve, &other.geneve);
        union(&mut self.udp_encap, &other.udp_encap);
        union(&mut self.geneve_classes, &other.geneve_classes);
    }
}

impl Default for Decoding {
    fn default() -> Self {
        Decoding {
            vxlan: vec![4789, 8472],
            geneve: vec![6081],
            udp_encap: vec![8285],
            geneve_classes: Vec::new(),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The link-layer header is shorter than its type requires.
    #[error("truncated {0} header")]
    Truncated(&'static str),
    /// A header failed validation (bad version, bad length field).
    #[error("malformed {layer}: {detail}")]
    Malformed { layer: &'static str, detail: String },
    /// Not an IP packet (ARP, STP, LLDP, ...): not an error, but nothing to observe.
    #[error("not IP (ethertype 0x{0:04x})")]
    NotIp(u16),
}

/// One IP packet's fields, as the observation needs them. Addresses are 128-bit, IPv4 mapped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L3L4 {
    pub src: u128,
    pub dst: u128,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub src_mac: u64,
    pub dst_mac: u64,
    pub tcp_flags: u8,
    pub tcp_seq: u32,
    /// IPv4 identification; None for IPv6.
    pub ip_id: Option<u16>,
    /// Length of the L4 payload according to the headers.
    pub payload_len: u16,
    /// FNV-1a of the first 16 bytes of the L4 payload that were captured (IPv6 non-TCP only:
    /// nothing else's fingerprint uses it).
    pub payload_hash: u32,
    /// IP packet length according to the IP header (not the captured length).
    pub ip_len: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneveOpt {
    pub class: u16,
    pub kind: u8,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tunnel {
    pub kind: u8,
    /// VXLAN/Geneve VNI or GRE key.
    pub vni: u32,
    /// The carrier packet (outer IP/UDP).
    pub outer: L3L4,
    pub geneve: Vec<GeneveOpt>,
}

/// A decoded packet: the (inner) packet, and the tunnel it travelled in, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub inner: L3L4,
    pub tunnel: Option<Tunnel>,
    /// Direction the link layer tells (SLL/SLL2 packet type): Some(true) = outgoing.
    pub outgoing: Option<bool>,
}

impl Decoded {
    /// The NAT-proof fingerprint of this packet: (kind, value). See `wit/plugin.wit`.
    pub fn fingerprint(&self) -> (u8, u32) {
        let p = &self.inner;
        fp::of(
            p.protocol,
            p.tcp_flags,
            p.tcp_seq,
            p.ip_id,
            p.payload_len,
            p.payload_hash,
        )
    }
}

/// Decodes one captured frame.
pub fn decode(link: LinkType, frame: &[u8], ports: &Decoding) -> Result<Decoded, DecodeError> {
    let mut outgoing = None;
    let (src_mac, dst_mac, ethertype, rest) = match link {
        LinkType::Ethernet => ethernet(frame)?,
        LinkType::RawIp => (0, 0, raw_ethertype(frame)?, frame),
        LinkType::Null => {
            let rest = frame
                .get(4..)
                .ok_or(DecodeError::Truncated("null/loopback"))?;
            (0, 0, raw_ethertype(rest)?, rest)
        }
        LinkType::LinuxSll => {
            // packet type (2), arphrd (2), addr len (2), addr (8), protocol (2)
            let h = frame
                .get(..16)
                .ok_or(DecodeError::Truncated("linux cooked"))?;
            outgoing = Some(u16::from_be_bytes([h[0], h[1]]) == 4);
            let src = mac_from(&h[6..12]);
            vlan_chain(u16::from_be_bytes([h[14], h[15]]), &frame[16..])
                .map(|(t, r)| (src, 0, t, r))?
        }
        LinkType::LinuxSll2 => {
            // protocol (2), reserved (2), ifindex (4), arphrd (2), packet type (1), addr len (1), addr (8)
            let h = frame
                .get(..20)
                .ok_or(DecodeError::Truncated("linux cooked v2"))?;
            outgoing = Some(h[10] == 4);
            let src = mac_from(&h[12..18]);
            vlan_chain(u16::from_be_bytes([h[0], h[1]]), &frame[20..])
                .map(|(t, r)| (src, 0, t, r))?
        }
    };
    let mut packet = ip_packet(ethertype, rest)?;
    packet.l3l4.src_mac = src_mac;
    packet.l3l4.dst_mac = dst_mac;
    let tunnel = match untunnel(&packet, ports) {
        Some(Ok((mut tunnel, inner))) => {
            tunnel.outer = packet.l3l4;
            return Ok(Decoded {
                inner,
                tunnel: Some(tunnel),
                outgoing,
            });
        }
        // An Ethernet frame in a tunnel that is no IP packet (ARP through a Kata peer pod's
        // tunnel) is link control, like the same frame bare: nothing to observe, counted.
        Some(Err(DecodeError::NotIp(t))) => return Err(DecodeError::NotIp(t)),
        // A carrier whose payload is not a valid inner packet is observed as the carrier alone.
        Some(Err(_)) | None => None,
    };
    Ok(Decoded {
        inner: packet.l3l4,
        tunnel,
        outgoing,
    })
}

fn mac_from(b: &[u8]) -> u64 {
    b.iter().take(6).fold(0u64, |acc, x| (acc << 8) | *x as u64)
}

fn raw_ethertype(ip: &[u8]) -> Result<u16, DecodeError> {
    match ip.first().map(|b| b >> 4) {
        Some(4) => Ok(ethertype::IPV4),
        Some(6) => Ok(ethertype::IPV6),
        Some(v) => Err(DecodeError::Malformed {
            layer: "ip",
            detail: format!("version {v}"),
        }),
        None => Err(DecodeError::Truncated("ip")),
    }
}

fn ethernet(frame: &[u8]) -> Result<(u64, u64, u16, &[u8]), DecodeError> {
    let eth =
        Ethernet2HeaderSlice::from_slice(frame).map_err(|_| DecodeError::Truncated("ethernet"))?;
    let (ethertype, rest) = vlan_chain(eth.ether_type().0, &frame[eth.slice().len()..])?;
    Ok((
        mac_from(&eth.source()),
        mac_from(&eth.destination()),
        ethertype,
        rest,
    ))
}

/// Skips 802.1Q / 802.1ad / QinQ tags.
fn vlan_chain(mut ether_type: u16, mut rest: &[u8]) -> Result<(u16, &[u8]), DecodeError> {
    for _ in 0..4 {
        if !ethertype::is_vlan(ether_type) {
            break;
        }
        let tag =
            SingleVlanHeaderSlice::from_slice(rest).map_err(|_| DecodeError::Truncated("vlan"))?;
        ether_type = tag.ether_type().0;
        rest = &rest[tag.slice().len()..];
    }
    Ok((ether_type, rest))
}

/// An IP packet with its L4 fields read and its L4 payload kept for tunnel decoding.
struct IpPacket<'a> {
    l3l4: L3L4,
    /// What follows the IP header(s): the L4 header for TCP/UDP, the inner packet for IP-in-IP.
    ip_payload: &'a [u8],
    /// What follows the UDP header, for UDP.
    udp_payload: &'a [u8],
}

fn v4_mapped(a: [u8; 4]) -> u128 {
    0xffff_0000_0000 | u32::from_be_bytes(a) as u128
}

fn ip_packet(ether_type: u16, data: &[u8]) -> Result<IpPacket<'_>, DecodeError> {
    let mut p = L3L4::default();
    let payload = match ether_type {
        ethertype::IPV4 => {
            let h = Ipv4HeaderSlice::from_slice(data).map_err(|e| DecodeError::Malformed {
                layer: "ipv4",
                detail: e.to_string(),
            })?;
            p.src = v4_mapped(h.source());
            p.dst = v4_mapped(h.destination());
            p.protocol = h.protocol().0;
            p.ip_id = Some(h.identification());
            let hl = h.slice().len();
            // BIG TCP (and some GSO captures) leave tot_len 0 for packets over 64 KiB: the
            // length is then what the packet carries.
            let total = match h.total_len() as usize {
                t if t < hl => data.len(),
                t => t,
            };
            p.ip_len = total as u32;
            // A later fragment carries no L4 header: observe it without ports.
            if h.fragments_offset().value() != 0 {
                return Ok(IpPacket {
                    l3l4: p,
                    ip_payload: &[],
                    udp_payload: &[],
                });
            }
            let end = total.clamp(hl, data.len());
            &data[hl..end]
        }
        ethertype::IPV6 => {
            let h = Ipv6HeaderSlice::from_slice(data).map_err(|e| DecodeError::Malformed {
                layer: "ipv6",
                detail: e.to_string(),
            })?;
            p.src = u128::from_be_bytes(h.source());
            p.dst = u128::from_be_bytes(h.destination());
            p.ip_len = h.payload_length() as u32 + 40;
            let end = (40 + h.payload_length() as usize).min(data.len());
            let after = &data[40..end.max(40)];
            let (next, rest) = match Ipv6ExtensionsSlice::from_slice(h.next_header(), after) {
                Ok((_, next, rest)) => (next, rest),
                Err(_) => (h.next_header(), after),
            };
            p.protocol = next.0;
            rest
        }
        other => return Err(DecodeError::NotIp(other)),
    };
    let mut udp_payload: &[u8] = &[];
    match IpNumber(p.protocol) {
        IpNumber::TCP => {
            if let Ok(t) = TcpHeaderSlice::from_slice(payload) {
                p.src_port = t.source_port();
                p.dst_port = t.destination_port();
                p.tcp_seq = t.sequence_number();
                let flag = |on: bool, bit: u8| if on { bit } else { 0 };
                p.tcp_flags = flag(t.fin(), tcp_flags::FIN)
                    | flag(t.syn(), tcp_flags::SYN)
                    | flag(t.rst(), tcp_flags::RST)
                    | flag(t.psh(), tcp_flags::PSH)
                    | flag(t.ack(), tcp_flags::ACK);
                let hl = t.slice().len();
                p.payload_len = payload_len_from_ip(&p, hl);
            }
        }
        IpNumber::UDP => {
            if let Ok(u) = UdpHeaderSlice::from_slice(payload) {
                p.src_port = u.source_port();
                p.dst_port = u.destination_port();
                p.payload_len = u.length().saturating_sub(8);
                udp_payload = &payload[8..];
                p.payload_hash = v6_hash(&p, udp_payload);
            }
        }
        IpNumber::ICMP | IpNumber::IPV6_ICMP => {
            // Type and code; an echo's identifier instead of its code (`icmp_echo`).
            if payload.len() >= 2 {
                p.src_port = payload[0] as u16;
                p.dst_port = match payload.get(4..6) {
                    Some(&[a, b]) if cniscope_common::icmp_echo(p.protocol, payload[0]) => {
                        u16::from_be_bytes([a, b])
                    }
                    _ => payload[1] as u16,
                };
            }
            p.payload_len = payload_len_from_ip(&p, 0);
            p.payload_hash = match p.ip_id {
                Some(_) if p.protocol == ipproto::ICMP => icmp_quote(payload),
                _ => v6_hash(&p, payload.get(4..).unwrap_or(&[])),
            };
        }
        _ => {
            p.payload_len = payload_len_from_ip(&p, 0);
            p.payload_hash = v6_hash(&p, payload);
        }
    }
    Ok(IpPacket {
        l3l4: p,
        ip_payload: payload,
        udp_payload,
    })
}

/// An ICMPv4 error's quote of the packet it answers (`fp::quote`): the quoted IPv4 header's
/// protocol and addresses and, for TCP and UDP, its ports; 0 for any other ICMP message or
/// a quote cut short.
fn icmp_quote(icmp: &[u8]) -> u32 {
    let (Some(&ty), Some(q)) = (icmp.first(), icmp.get(8..)) else {
        return 0;
    };
    if !fp::is_icmp_error(ty) || q.len() < 20 || q[0] >> 4 != 4 {
        return 0;
    }
    let protocol = q[9];
    let word = |at: usize| u32::from_be_bytes([q[at], q[at + 1], q[at + 2], q[at + 3]]);
    let ihl = usize::from(q[0] & 0x0f) * 4;
    if ihl < 20 {
        return 0;
    }
    let ports = match protocol {
        // Read as the probe reads them: a whole UDP header's 8 bytes (TCP's first 4 are its
        // ports too; every ICMP error quotes at least 8 bytes past the IP header).
        ipproto::TCP | ipproto::UDP => match q.get(ihl..ihl + 8) {
            Some(&[a, b, c, d, ..]) => (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])),
            _ => return 0,
        },
        _ => (0, 0),
    };
    fp::quote(protocol, word(12), word(16), ports.0, ports.1)
}

/// L4 payload length from the IP length fields (not the captured bytes, which snaplen cuts).
fn payload_len_from_ip(p: &L3L4, l4_header: usize) -> u16 {
    let ip_header = if p.ip_id.is_some() { 20 } else { 40 };
    (p.ip_len as usize)
        .saturating_sub(ip_header + l4_header)
        .min(u16::MAX as usize) as u16
}

/// The payload hash only the fingerprint of a non-TCP IPv6 packet uses (IPv4 has its IP ID,
/// TCP its sequence number); 0 elsewhere, as the eBPF probe leaves it.
fn v6_hash(p: &L3L4, payload: &[u8]) -> u32 {
    if p.ip_id.is_some() { 0 } else { fnv(payload) }
}

/// The shared payload hash of the first captured payload bytes, zero-padded.
fn fnv(bytes: &[u8]) -> u32 {
    let mut block = [0u8; PAYLOAD_HASH_BYTES];
    let n = bytes.len().min(PAYLOAD_HASH_BYTES);
    block[..n].copy_from_slice(&bytes[..n]);
    payload_hash(&block)
}

type Untunnelled = Result<(Tunnel, L3L4), DecodeError>;

/// If `packet` carries a tunnel, decodes the tunnel header and the inner packet.
fn untunnel(packet: &IpPacket<'_>, ports: &Decoding) -> Option<Untunnelled> {
    let p = &packet.l3l4;
    match p.protocol {
        ipproto::UDP if ports.vxlan.contains(&p.dst_port) => Some(vxlan(packet.udp_payload)),
        ipproto::UDP if ports.geneve.contains(&p.dst_port) => Some(geneve(packet.udp_payload)),
        ipproto::UDP if ports.udp_encap.contains(&p.dst_port) => {
            Some(inner_ip(tunnel::UDP_ENCAP, 0, packet.udp_payload))
        }
        ipproto::IPIP | ipproto::IPV6 => Some(inner_ip(tunnel::IPIP, 0, packet.ip_payload)),
        ipproto::GRE => gre(packet.ip_payload),
        _ => None,
    }
}

fn inner_ip(kind: u8, vni: u32, data: &[u8]) -> Untunnelled {
    let inner = ip_packet(raw_ethertype(data)?, data)?;
    Ok((
        Tunnel {
            kind,
            vni,
            ..Tunnel::default()
        },
        inner.l3l4,
    ))
}

fn inner_by_ethertype(kind: u8, vni: u32, ether_type: u16, data: &[u8]) -> Untunnelled {
    match ether_type {
        // Transparent Ethernet bridging: a whole Ethernet frame inside.
        ethertype::TEB => {
            let (src_mac, dst_mac, t, rest) = ethernet(data)?;
            let mut inner = ip_packet(t, rest)?.l3l4;
            inner.src_mac = src_mac;
            inner.dst_mac = dst_mac;
            Ok((
                Tunnel {
                    kind,
                    vni,
                    ..Tunnel::default()
                },
                inner,
            ))
        }
        ethertype::IPV4 | ethertype::IPV6 => {
            let inner = ip_packet(ether_type, data)?;
            Ok((
                Tunnel {
                    kind,
                    vni,
                    ..Tunnel::default()
                },
                inner.l3l4,
            ))
        }
        // A payload type the tunnel header names that is neither Ethernet nor IP: no inner
        // packet to read (the carrier is observed alone, as the probe does).
        other => Err(DecodeError::Malformed {
            layer: "tunnel",
            detail: format!("payload type 0x{other:04x}"),
        }),
    }
}

/// VXLAN (RFC 7348): flags(8, I = 0x08) reserved(24) VNI(24) reserved(8), then Ethernet.
fn vxlan(data: &[u8]) -> Untunnelled {
    let h = data.get(..8).ok_or(DecodeError::Truncated("vxlan"))?;
    if h[0] & 0x08 == 0 {
        return Err(DecodeError::Malformed {
            layer: "vxlan",
            detail: "I flag not set".into(),
        });
    }
    let vni = u32::from_be_bytes([0, h[4], h[5], h[6]]);
    inner_by_ethertype(tunnel::VXLAN, vni, ethertype::TEB, &data[8..])
}

/// Geneve (RFC 8926): ver(2) optlen(6, 4-byte words) O C rsvd(6) protocol(16) VNI(24) rsvd(8),
/// then options: class(16) type(8) rsvd(3) len(5, 4-byte words) data.
fn geneve(data: &[u8]) -> Untunnelled {
    let h = data.get(..8).ok_or(DecodeError::Truncated("geneve"))?;
    if h[0] >> 6 != 0 {
        return Err(DecodeError::Malformed {
            layer: "geneve",
            detail: format!("version {}", h[0] >> 6),
        });
    }
    let opt_len = (h[0] & 0x3f) as usize * 4;
    let protocol = u16::from_be_bytes([h[2], h[3]]);
    let vni = u32::from_be_bytes([0, h[4], h[5], h[6]]);
    let mut opts = data
        .get(8..8 + opt_len)
        .ok_or(DecodeError::Truncated("geneve options"))?;
    let mut geneve = Vec::new();
    while !opts.is_empty() {
        let o = opts
            .get(..4)
            .ok_or(DecodeError::Truncated("geneve option"))?;
        let len = (o[3] & 0x1f) as usize * 4;
        let body = opts
            .get(4..4 + len)
            .ok_or(DecodeError::Truncated("geneve option data"))?;
        geneve.push(GeneveOpt {
            class: u16::from_be_bytes([o[0], o[1]]),
            kind: o[2],
            data: body.to_vec(),
        });
        opts = &opts[4 + len..];
    }
    let (mut t, inner) = inner_by_ethertype(tunnel::GENEVE, vni, protocol, &data[8 + opt_len..])?;
    t.geneve = geneve;
    Ok((t, inner))
}

/// GRE (RFC 2784/2890) version 0: C K S flags, protocol type, optional checksum, key, sequence.
/// ERSPAN type II (0x88be) carries an 8-byte header before the mirrored Ethernet frame.
/// Other protocols (PPP in PPTP's version 1, WCCP, keepalives) are not tunnels we read.
fn gre(data: &[u8]) -> Option<Untunnelled> {
    let h = data.get(..4)?;
    let flags = u16::from_be_bytes([h[0], h[1]]);
    if flags & 0x7 != 0 {
        return None; // version 1 (PPTP) is not a tunnel of ours
    }
    let protocol = u16::from_be_bytes([h[2], h[3]]);
    let mut off = 4;
    if flags & 0x8000 != 0 {
        off += 4; // checksum + reserved
    }
    let mut key = 0;
    if flags & 0x2000 != 0 {
        let k = data.get(off..off + 4)?;
        key = u32::from_be_bytes([k[0], k[1], k[2], k[3]]);
        off += 4;
    }
    if flags & 0x1000 != 0 {
        off += 4; // sequence number
    }
    let body = data.get(off..)?;
    match protocol {
        ethertype::IPV4 | ethertype::IPV6 | ethertype::TEB => {
            Some(inner_by_ethertype(tunnel::GRE, key, protocol, body))
        }
        ethertype::ERSPAN_II => Some(
            body.get(8..)
                .ok_or(DecodeError::Truncated("erspan"))
                .and_then(|b| inner_by_ethertype(tunnel::GRE, key, ethertype::TEB, b)),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
