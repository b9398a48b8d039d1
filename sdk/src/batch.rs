//! Row views over the columnar [`ObservationBatch`].

use crate::{CapturePoint, Ip, ObservationBatch};

/// Decoded tunnel kind of an observation (the `tunnel` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tunnel {
    None,
    Vxlan,
    Geneve,
    IpInIp,
    Gre,
    /// A raw IP packet carried in UDP (flannel's obsolete `udp` backend).
    UdpEncap,
    Other(u8),
}

impl Tunnel {
    pub fn from_code(code: u8) -> Tunnel {
        match code {
            tunnel::NONE => Tunnel::None,
            tunnel::VXLAN => Tunnel::Vxlan,
            tunnel::GENEVE => Tunnel::Geneve,
            tunnel::IPIP => Tunnel::IpInIp,
            tunnel::GRE => Tunnel::Gre,
            tunnel::UDP_ENCAP => Tunnel::UdpEncap,
            other => Tunnel::Other(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Tunnel::None => tunnel::NONE,
            Tunnel::Vxlan => tunnel::VXLAN,
            Tunnel::Geneve => tunnel::GENEVE,
            Tunnel::IpInIp => tunnel::IPIP,
            Tunnel::Gre => tunnel::GRE,
            Tunnel::UdpEncap => tunnel::UDP_ENCAP,
            Tunnel::Other(c) => c,
        }
    }
}

/// Fingerprint kinds (the `fp-kind` column); see `wit/plugin.wit`.
pub use cniscope_common::fp;
use cniscope_common::tunnel;

/// TCP flag bits in the `tcp-flags` column.
pub mod tcp {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// One observation: row `index` of `batch`.
#[derive(Clone, Copy)]
pub struct Obs<'a> {
    batch: &'a ObservationBatch,
    index: usize,
}

/// All rows of a batch, in order.
pub fn batch_rows(batch: &ObservationBatch) -> impl ExactSizeIterator<Item = Obs<'_>> {
    (0..batch.point.len()).map(move |index| Obs { batch, index })
}

impl<'a> Obs<'a> {
    pub fn new(batch: &'a ObservationBatch, index: usize) -> Obs<'a> {
        Obs { batch, index }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    /// Where this was seen. A batch whose `point` indexes past `points` is malformed; such a
    /// row reports an empty point rather than panicking.
    pub fn point(&self) -> Option<&'a CapturePoint> {
        self.batch.points.get(self.batch.point[self.index] as usize)
    }

    /// "node/iface:ingress", the form used in `observed-at`.
    pub fn point_label(&self) -> String {
        match self.point() {
            Some(p) => {
                let dir = match p.direction {
                    crate::Direction::Ingress => "ingress",
                    crate::Direction::Egress => "egress",
                    crate::Direction::Unknown => "any",
                };
                format!("{}/{}:{}", p.node, p.iface, dir)
            }
            None => String::from("?"),
        }
    }

    pub fn node(&self) -> &'a str {
        self.point().map(|p| p.node.as_str()).unwrap_or("")
    }

    pub fn iface(&self) -> &'a str {
        self.point().map(|p| p.iface.as_str()).unwrap_or("")
    }

    pub fn src_ip(&self) -> Ip {
        Ip {
            hi: self.batch.src_ip_hi[self.index],
            lo: self.batch.src_ip_lo[self.index],
        }
    }
    pub fn dst_ip(&self) -> Ip {
        Ip {
            hi: self.batch.dst_ip_hi[self.index],
            lo: self.batch.dst_ip_lo[self.index],
        }
    }
    pub fn protocol(&self) -> u8 {
        self.batch.protocol[self.index]
    }
    pub fn src_port(&self) -> u16 {
        self.batch.src_port[self.index]
    }
    pub fn dst_port(&self) -> u16 {
        self.batch.dst_port[self.index]
    }
    pub fn src_mac(&self) -> u64 {
        self.batch.src_mac[self.index]
    }
    pub fn dst_mac(&self) -> u64 {
        self.batch.dst_mac[self.index]
    }
    pub fn tcp_flags(&self) -> u8 {
        self.batch.tcp_flags[self.index]
    }
    pub fn fp_kind(&self) -> u8 {
        self.batch.fp_kind[self.index]
    }
    pub fn fingerprint(&self) -> u32 {
        self.batch.fingerprint[self.index]
    }
    /// (kind, value), or None when the observation has no fingerprint.
    pub fn fingerprint_key(&self) -> Option<(u8, u32)> {
        (self.fp_kind() != fp::NONE).then(|| (self.fp_kind(), self.fingerprint()))
    }
    pub fn packets(&self) -> u64 {
        self.batch.packets[self.index]
    }
    pub fn bytes(&self) -> u64 {
        self.batch.bytes[self.index]
    }
    pub fn first_ns(&self) -> u64 {
        self.batch.first_ns[self.index]
    }
    pub fn last_ns(&self) -> u64 {
        self.batch.last_ns[self.index]
    }
    pub fn tunnel(&self) -> Tunnel {
        Tunnel::from_code(self.batch.tunnel[self.index])
    }
    pub fn vni(&self) -> u32 {
        self.batch.vni[self.index]
    }
    pub fn outer_src_ip(&self) -> Ip {
        Ip {
            hi: self.batch.outer_src_hi[self.index],
            lo: self.batch.outer_src_lo[self.index],
        }
    }
    pub fn outer_dst_ip(&self) -> Ip {
        Ip {
            hi: self.batch.outer_dst_hi[self.index],
            lo: self.batch.outer_dst_lo[self.index],
        }
    }
    pub fn outer_src_port(&self) -> u16 {
        self.batch.outer_src_port[self.index]
    }
    pub fn outer_dst_port(&self) -> u16 {
        self.batch.outer_dst_port[self.index]
    }
    pub fn outer_src_mac(&self) -> u64 {
        self.batch.outer_src_mac[self.index]
    }
    pub fn outer_dst_mac(&self) -> u64 {
        self.batch.outer_dst_mac[self.index]
    }

    /// Geneve options of this observation as (class, type, data).
    pub fn geneve_options(&self) -> impl Iterator<Item = (u16, u8, &'a [u8])> + 'a {
        let g = &self.batch.geneve;
        let me = self.index as u32;
        (0..g.obs.len())
            .filter(move |&i| g.obs[i] == me)
            .filter_map(move |i| {
                let start = g.data_start[i] as usize;
                let data = g.data.get(start..start + g.data_len[i] as usize)?;
                Some((g.class[i], g.type_[i], data))
            })
    }

    /// Whether this direction is the TCP client's, if the handshake was seen: `Some(true)`
    /// for the SYN's direction, `Some(false)` for the SYN+ACK's.
    pub fn tcp_client_side(&self) -> Option<bool> {
        match self.fp_kind() {
            fp::TCP_SYN_ISN => Some(true),
            fp::TCP_SYNACK_ISN => Some(false),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Obs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Obs#{} {} proto {} {}:{} -> {}:{} tunnel {:?}/{} pkts {}",
            self.index,
            self.point_label(),
            self.protocol(),
            self.src_ip(),
            self.src_port(),
            self.dst_ip(),
            self.dst_port(),
            self.tunnel(),
            self.vni(),
            self.packets()
        )
    }
}
