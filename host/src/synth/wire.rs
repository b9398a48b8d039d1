//! Frames as the kernel writes them (Ethernet, IPv4, TCP/UDP/ICMP, VXLAN and IP-in-IP
//! carriers, checksums filled in) and a pcap writer that keeps one file per capture point in
//! time order while connections are still being generated.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub type Mac = [u8; 6];
pub type Ip = [u8; 4];

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const IPIP: u8 = 4;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// One packet's transport: what differs between TCP, UDP and ICMP echo.
#[derive(Clone, Copy, Debug)]
pub enum Transport {
    Tcp {
        seq: u32,
        ack: u32,
        flags: u8,
    },
    Udp,
    /// Echo request (type 8) or reply (type 0); `sport` of the packet's tuple is the identifier.
    Echo {
        reply: bool,
        seq: u16,
    },
}

/// An IPv4 packet's header fields as one capture point sees them.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    pub src: Ip,
    pub dst: Ip,
    pub sport: u16,
    pub dport: u16,
    pub id: u16,
    pub ttl: u8,
    pub transport: Transport,
    pub payload: &'a [u8],
}

fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 header (DF set, no options) followed by `body`.
pub fn ipv4(out: &mut Vec<u8>, src: Ip, dst: Ip, proto: u8, id: u16, ttl: u8, body: &[u8]) {
    let start = out.len();
    let total = (20 + body.len()) as u16;
    out.extend([0x45, 0]);
    out.extend(total.to_be_bytes());
    out.extend(id.to_be_bytes());
    out.extend([0x40, 0, ttl, proto, 0, 0]);
    out.extend(src);
    out.extend(dst);
    let sum = checksum(&[&out[start..start + 20]]);
    out[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
    out.extend(body);
}

/// The packet's IPv4 datagram (header and transport), as it is inside any carrier.
pub fn datagram(p: &Packet) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(20 + p.payload.len());
    let proto = match p.transport {
        Transport::Tcp { seq, ack, flags } => {
            l4.extend(p.sport.to_be_bytes());
            l4.extend(p.dport.to_be_bytes());
            l4.extend(seq.to_be_bytes());
            l4.extend(ack.to_be_bytes());
            l4.extend([0x50, flags]);
            l4.extend(64240u16.to_be_bytes());
            l4.extend([0, 0, 0, 0]);
            TCP
        }
        Transport::Udp => {
            l4.extend(p.sport.to_be_bytes());
            l4.extend(p.dport.to_be_bytes());
            l4.extend(((8 + p.payload.len()) as u16).to_be_bytes());
            l4.extend([0, 0]);
            UDP
        }
        Transport::Echo { reply, seq } => {
            l4.extend([if reply { 0 } else { 8 }, 0, 0, 0]);
            l4.extend(p.sport.to_be_bytes());
            l4.extend(seq.to_be_bytes());
            ICMP
        }
    };
    l4.extend(p.payload);
    let len = (l4.len() as u16).to_be_bytes();
    let (sum_at, sum) = match proto {
        ICMP => (2, checksum(&[&l4])),
        _ => {
            let pseudo = [&p.src[..], &p.dst[..], &[0, proto], &len[..]].concat();
            (if proto == TCP { 16 } else { 6 }, checksum(&[&pseudo, &l4]))
        }
    };
    l4[sum_at..sum_at + 2].copy_from_slice(&sum.to_be_bytes());
    let mut out = Vec::with_capacity(20 + l4.len());
    ipv4(&mut out, p.src, p.dst, proto, p.id, p.ttl, &l4);
    out
}

/// An Ethernet II frame carrying IPv4.
pub fn ethernet(dst: Mac, src: Mac, ip: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + ip.len());
    out.extend(dst);
    out.extend(src);
    out.extend(0x0800u16.to_be_bytes());
    out.extend(ip);
    out
}

/// The node-to-node carrier of a tunnelled frame.
#[derive(Clone, Copy, Debug)]
pub struct Underlay {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src: Ip,
    pub dst: Ip,
    pub id: u16,
}

/// `inner` (an Ethernet frame) in VXLAN on UDP `port` with `vni`, as the sending kernel
/// writes it: the UDP source port is a hash of the inner flow, the checksum zero.
pub fn vxlan(u: &Underlay, sport: u16, port: u16, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut udp = Vec::with_capacity(16 + inner.len());
    udp.extend(sport.to_be_bytes());
    udp.extend(port.to_be_bytes());
    udp.extend(((16 + inner.len()) as u16).to_be_bytes());
    udp.extend([0, 0, 0x08, 0, 0, 0]);
    udp.extend((vni << 8).to_be_bytes());
    udp.extend(inner);
    let mut ip = Vec::with_capacity(20 + udp.len());
    ipv4(&mut ip, u.src, u.dst, UDP, u.id, 64, &udp);
    ethernet(u.dst_mac, u.src_mac, &ip)
}

/// `inner` (an Ethernet frame) in Geneve on UDP 6081 with OVN's one option (class 0x0102,
/// type 0x80: the ingress and egress logical port keys), `vni` the datapath's tunnel key.
pub fn geneve(u: &Underlay, sport: u16, vni: u32, ports: (u16, u16), inner: &[u8]) -> Vec<u8> {
    let mut g = Vec::with_capacity(16 + inner.len());
    g.extend([2, 0]); // options: 2 words; version 0, no flags
    g.extend(0x6558u16.to_be_bytes());
    g.extend((vni << 8).to_be_bytes());
    g.extend(0x0102u16.to_be_bytes());
    g.extend([0x80, 1]);
    g.extend(((u32::from(ports.0) << 16) | u32::from(ports.1)).to_be_bytes());
    g.extend(inner);
    let mut udp = Vec::with_capacity(8 + g.len());
    udp.extend(sport.to_be_bytes());
    udp.extend(6081u16.to_be_bytes());
    udp.extend(((8 + g.len()) as u16).to_be_bytes());
    udp.extend([0, 0]);
    udp.extend(g);
    let mut ip = Vec::with_capacity(20 + udp.len());
    ipv4(&mut ip, u.src, u.dst, UDP, u.id, 64, &udp);
    ethernet(u.dst_mac, u.src_mac, &ip)
}

/// `inner` (an IPv4 datagram) in IP-in-IP.
pub fn ipip(u: &Underlay, inner: &[u8]) -> Vec<u8> {
    let mut ip = Vec::with_capacity(20 + inner.len());
    ipv4(&mut ip, u.src, u.dst, IPIP, u.id, 64, inner);
    ethernet(u.dst_mac, u.src_mac, &ip)
}

/// One pcap file per capture point. Frames may be handed in out of time order as long as none
/// is earlier than the last `flush_before` bound: they wait in a heap until then.
pub struct Captures {
    points: Vec<Point>,
    written: u64,
}

struct Point {
    file: BufWriter<File>,
    path: PathBuf,
    pending: BinaryHeap<Reverse<(u64, u64, Vec<u8>)>>,
    seq: u64,
}

/// Where a frame goes: an index into [`Captures`].
pub type PointId = usize;

impl Captures {
    pub fn new() -> Self {
        Captures {
            points: Vec::new(),
            written: 0,
        }
    }

    /// A new capture file at `path` (Ethernet, microsecond timestamps).
    pub fn open(&mut self, path: &Path) -> std::io::Result<PointId> {
        let mut file = BufWriter::with_capacity(1 << 16, File::create(path)?);
        file.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        file.write_all(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0])?;
        file.write_all(&262_144u32.to_le_bytes())?;
        file.write_all(&1u32.to_le_bytes())?;
        self.points.push(Point {
            file,
            path: path.to_path_buf(),
            pending: BinaryHeap::new(),
            seq: 0,
        });
        Ok(self.points.len() - 1)
    }

    /// `frame` seen at `point` at `us` microseconds since the epoch.
    pub fn push(&mut self, point: PointId, us: u64, frame: Vec<u8>) {
        let p = &mut self.points[point];
        p.seq += 1;
        p.pending.push(Reverse((us, p.seq, frame)));
    }

    /// Writes every pending frame earlier than `us`: no frame pushed later may be earlier.
    pub fn flush_before(&mut self, us: u64) -> std::io::Result<()> {
        for p in &mut self.points {
            while p.pending.peek().is_some_and(|Reverse((t, _, _))| *t < us) {
                let Reverse((t, _, frame)) = p.pending.pop().unwrap();
                let len = (frame.len() as u32).to_le_bytes();
                p.file.write_all(&((t / 1_000_000) as u32).to_le_bytes())?;
                p.file.write_all(&((t % 1_000_000) as u32).to_le_bytes())?;
                p.file.write_all(&len)?;
                p.file.write_all(&len)?;
                p.file.write_all(&frame)?;
                self.written += 1;
            }
        }
        Ok(())
    }

    /// Writes everything and closes the files; returns the frames written.
    pub fn finish(mut self) -> std::io::Result<u64> {
        self.flush_before(u64::MAX)?;
        for p in &mut self.points {
            p.file
                .flush()
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.path.display())))?;
        }
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify_to_zero() {
        let p = Packet {
            src: [10, 0, 0, 1],
            dst: [10, 0, 0, 2],
            sport: 40000,
            dport: 8080,
            id: 7,
            ttl: 64,
            transport: Transport::Tcp {
                seq: 1,
                ack: 0,
                flags: SYN,
            },
            payload: b"abc",
        };
        let d = datagram(&p);
        assert_eq!(checksum(&[&d[..20]]), 0, "IPv4 header");
        let pseudo = [
            &d[12..20],
            &[0, TCP],
            &((d.len() - 20) as u16).to_be_bytes()[..],
        ]
        .concat();
        assert_eq!(checksum(&[&pseudo, &d[20..]]), 0, "TCP");
        let parsed = etherparse::SlicedPacket::from_ip(&d).unwrap();
        assert!(matches!(
            parsed.transport,
            Some(etherparse::TransportSlice::Tcp(_))
        ));
    }
}
