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
