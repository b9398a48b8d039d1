use super::*;
use etherparse::PacketBuilder;

fn ip4(a: [u8; 4]) -> u128 {
    v4_mapped(a)
}

/// An Ethernet/IPv4/UDP frame with `payload`.
fn udp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .udp(sport, dport);
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn tcp_syn(src: [u8; 4], dst: [u8; 4], seq: u32) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([0xaa, 0, 0, 0, 0, 1], [0xbb, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(40000, 8080, seq, 64000)
        .syn();
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

#[test]
fn plain_tcp_syn_has_isn_fingerprint() {
    let d = decode(
        LinkType::Ethernet,
        &tcp_syn([10, 244, 1, 5], [10, 244, 2, 7], 12345),
        &Decoding::default(),
    )
    .unwrap();
    assert_eq!(d.tunnel, None);
    assert_eq!(d.inner.src, ip4([10, 244, 1, 5]));
    assert_eq!(
        (d.inner.src_port, d.inner.dst_port, d.inner.protocol),
        (40000, 8080, 6)
    );
    assert_eq!(d.inner.tcp_flags & 0x02, 0x02);
    assert_eq!(d.fingerprint(), (fp::TCP_SYN_ISN, 12345));
    assert_eq!(d.inner.src_mac, 0xaa0000000001);
}

#[test]
fn vxlan_on_flannel_port_decodes_inner_frame() {
    let inner = tcp_syn([10, 244, 1, 5], [10, 244, 2, 7], 7);
    let mut payload = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    payload.extend_from_slice(&inner);
    let frame = udp_frame([192, 168, 0, 1], [192, 168, 0, 2], 51000, 8472, &payload);
    let d = decode(LinkType::Ethernet, &frame, &Decoding::default()).unwrap();
    let t = d.tunnel.expect("tunnel");
    assert_eq!((t.kind, t.vni), (tunnel::VXLAN, 1));
    assert_eq!(t.outer.src, ip4([192, 168, 0, 1]));
    assert_eq!(t.outer.dst_port, 8472);
    assert_eq!(d.inner.dst, ip4([10, 244, 2, 7]));
    assert_eq!(d.inner.src_mac, 0xaa0000000001);
    // Not a configured port: stays plain UDP.
    let ports = Decoding {
        vxlan: vec![4789],
        ..Decoding::default()
    };
    assert_eq!(
        decode(LinkType::Ethernet, &frame, &ports).unwrap().tunnel,
        None
    );
}

#[test]
fn geneve_options_are_kept() {
    let inner = tcp_syn([10, 128, 0, 5], [10, 129, 0, 7], 9);
    // optlen = 2 words: one option class 0x0102 type 0x80 len 1 word.
    let mut payload = vec![0x02, 0x00, 0x65, 0x58, 0x00, 0x00, 0x05, 0x00];
    payload.extend_from_slice(&[0x01, 0x02, 0x80, 0x01, 0x00, 0x03, 0x00, 0x04]);
    payload.extend_from_slice(&inner);
    let frame = udp_frame([172, 18, 0, 2], [172, 18, 0, 3], 1234, 6081, &payload);
    let d = decode(LinkType::Ethernet, &frame, &Decoding::default()).unwrap();
    let t = d.tunnel.unwrap();
    assert_eq!((t.kind, t.vni), (tunnel::GENEVE, 5));
    assert_eq!(
        t.geneve,
        vec![GeneveOpt {
            class: 0x0102,
            kind: 0x80,
            data: vec![0, 3, 0, 4]
        }]
    );
    assert_eq!(d.inner.src, ip4([10, 128, 0, 5]));
}

#[test]
fn several_geneve_options_unknown_classes_and_length_limits() {
    let inner = tcp_syn([10, 128, 0, 5], [10, 129, 0, 7], 9);
    let geneve = |opt_words: u8, options: &[u8]| {
        let mut p = vec![opt_words, 0x40, 0x65, 0x58, 0x00, 0x00, 0x07, 0x00];
        p.extend_from_slice(options);
        p.extend_from_slice(&inner);
        udp_frame([172, 18, 0, 2], [172, 18, 0, 3], 1234, 6081, &p)
    };
    // An unknown class with 8 bytes of data, an empty option, then OVN's: 6 words in all.
    let options = [
        0xff, 0x01, 0x07, 0x02, 1, 2, 3, 4, 5, 6, 7, 8, // class 0xff01, 2 words
        0x00, 0x00, 0x01, 0x00, // class 0, no data
        0x01, 0x02, 0x80, 0x01, 0x00, 0x01, 0x00, 0x03, // OVN: ingress 1, egress 3
    ];
    let d = decode(
        LinkType::Ethernet,
        &geneve(6, &options),
        &Decoding::default(),
    )
    .unwrap();
    let t = d.tunnel.unwrap();
    let kinds: Vec<(u16, u8, usize)> = t
        .geneve
        .iter()
        .map(|o| (o.class, o.kind, o.data.len()))
        .collect();
    assert_eq!(kinds, vec![(0xff01, 7, 8), (0, 1, 0), (0x0102, 0x80, 4)]);
    assert_eq!(t.geneve[2].data, vec![0, 1, 0, 3]);
    assert_eq!(
        d.inner.dst,
        ip4([10, 129, 0, 7]),
        "the inner packet after all options"
    );

    // An option claiming more data than the options hold: the Geneve reader says which part
    // is short (never reading into the inner packet, never panicking), and the frame is
    // observed as its carrier alone (UDP to 6081), not lost.
    let mut long = options;
    long[3] = 0x1f; // 31 words of data
    let frame = geneve(6, &long);
    let e = super::geneve(&frame[42..]).unwrap_err();
    assert!(e.to_string().contains("geneve option data"), "{e}");
    let d = decode(LinkType::Ethernet, &frame, &Decoding::default()).unwrap();
    assert_eq!((d.tunnel, d.inner.dst_port), (None, 6081));
    // Options longer than the packet.
    let frame = geneve(63, &options[..8]);
    let e = super::geneve(&frame[42..]).unwrap_err();
    assert!(e.to_string().contains("geneve options"), "{e}");
}

#[test]
fn ipip_and_flannel_udp_backend() {
    // Inner IPv4/TCP packet without Ethernet.
    let inner = &tcp_syn([10, 0, 0, 1], [10, 0, 1, 1], 5)[14..];
    let b = PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4([192, 168, 1, 1], [192, 168, 1, 2], 64);
    let mut frame = Vec::new();
    b.write(&mut frame, IpNumber(4), inner).unwrap();
    let d = decode(LinkType::Ethernet, &frame, &Decoding::default()).unwrap();
    assert_eq!(d.tunnel.as_ref().unwrap().kind, tunnel::IPIP);
    assert_eq!(d.inner.dst, ip4([10, 0, 1, 1]));

    let frame = udp_frame([192, 168, 1, 1], [192, 168, 1, 2], 8285, 8285, inner);
    let d = decode(LinkType::Ethernet, &frame, &Decoding::default()).unwrap();
    assert_eq!(d.tunnel.as_ref().unwrap().kind, tunnel::UDP_ENCAP);
    assert_eq!(d.inner.src, ip4([10, 0, 0, 1]));
}

#[test]
fn truncated_and_garbage_frames_are_errors_not_panics() {
    let frame = tcp_syn([10, 0, 0, 1], [10, 0, 0, 2], 1);
    for cut in 0..frame.len() {
        let _ = decode(LinkType::Ethernet, &frame[..cut], &Decoding::default());
    }
    assert_eq!(
        decode(LinkType::Ethernet, &frame[..10], &Decoding::default()),
        Err(DecodeError::Truncated("ethernet"))
    );
    // A deterministic pseudo-random sweep over every link type.
    let mut x: u32 = 0x1234_5678;
    for len in 0..400usize {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for link in [
            LinkType::Ethernet,
            LinkType::RawIp,
            LinkType::LinuxSll,
            LinkType::LinuxSll2,
            LinkType::Null,
        ] {
            let _ = decode(link, &bytes, &Decoding::default());
        }
    }
}

#[test]
fn arp_is_not_ip() {
    let mut frame = vec![0xff; 12];
    frame.extend_from_slice(&[0x08, 0x06]);
    frame.extend_from_slice(&[0; 28]);
    assert_eq!(
        decode(LinkType::Ethernet, &frame, &Decoding::default()),
        Err(DecodeError::NotIp(0x0806))
    );
}

#[test]
fn arp_in_a_tunnel_is_not_ip_and_a_tunnel_of_nothing_readable_is_its_carrier() {
    // ARP through a VXLAN tunnel (a Kata peer pod's VM asking for its gateway): link control,
    // like ARP bare.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x05, 0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let mut payload = vec![0x08, 0, 0, 0, 0x08, 0x77, 0xfd, 0];
    payload.extend_from_slice(&arp);
    let frame = udp_frame(
        [192, 168, 77, 50],
        [192, 168, 77, 12],
        40000,
        4789,
        &payload,
    );
    assert_eq!(
        decode(LinkType::Ethernet, &frame, &Decoding::default()),
        Err(DecodeError::NotIp(0x0806))
    );
    // A VXLAN header without its I flag: no inner packet to read, the carrier is observed.
    payload[0] = 0;
    let frame = udp_frame(
        [192, 168, 77, 50],
        [192, 168, 77, 12],
        40000,
        4789,
        &payload,
    );
    let d = decode(LinkType::Ethernet, &frame, &Decoding::default()).unwrap();
    assert_eq!((d.tunnel, d.inner.dst_port), (None, 4789));
}
