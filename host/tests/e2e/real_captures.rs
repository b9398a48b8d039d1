use crate::support::*;
use cniscope::plugins::convert::bits_to_std;
use cniscope::sources::aggregate::Observation;
use cniscope::sources::decode::{Decoding, tunnel};
use cniscope::sources::replay::{CaptureSpec, Replay, ReplayStats};
use std::collections::BTreeSet;

fn replay(rel: &str, ports: Decoding) -> (Vec<Observation>, ReplayStats) {
    let spec: CaptureSpec = data(rel).to_str().unwrap().parse().unwrap();
    let mut r = Replay::open(&[spec], ports, u64::MAX / 4).unwrap();
    let mut all = Vec::new();
    r.run(|_, obs, _| all.extend(obs));
    (all, r.stats)
}

fn ip(bits: u128) -> String {
    bits_to_std(bits).to_string()
}

/// Every `vni N` (decimal or 0x hex) that tcpdump printed in a `.out` file.
fn vnis_in_out_file(rel: &str) -> BTreeSet<u32> {
    let text = std::fs::read_to_string(data(rel)).unwrap();
    text.split("vni ")
        .skip(1)
        .map(|rest| {
            let tok: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            match tok.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16).unwrap(),
                None => tok.parse().unwrap(),
            }
        })
        .collect()
}

fn vnis(obs: &[Observation], kind: u8) -> BTreeSet<u32> {
    obs.iter()
        .filter(|o| o.key.tunnel == kind)
        .map(|o| o.key.vni)
        .collect()
}

#[test]
fn vxlan_vnis_and_inner_packets_match_tcpdump() {
    for (pcap, out, port) in [
        ("pcap/tcpdump/vxlan.pcap", "pcap/tcpdump/vxlan.out", 4789),
        (
            "pcap/tcpdump/vxlan_port_8472.pcap",
            "pcap/tcpdump/vxlan_port_8472.out",
            8472,
        ),
        (
            "pcap/tcpdump/gso-ipv4-vxlan-ipv4.pcap",
            "pcap/tcpdump/gso-ipv4-vxlan-ipv4.out",
            4789,
        ),
    ] {
        let (obs, stats) = replay(pcap, Decoding::default());
        assert_eq!(vnis(&obs, tunnel::VXLAN), vnis_in_out_file(out), "{pcap}");
        assert!(
            stats.malformed.is_empty() && stats.file_errors.is_empty(),
            "{pcap}: {stats:?}"
        );
        assert!(
            obs.iter()
                .filter(|o| o.key.tunnel == tunnel::VXLAN)
                .all(|o| o.key.outer_dst_port == port || o.key.outer_src_port == port)
        );
    }
    // "192.168.203.1.45149 > 192.168.202.1.4789: VXLAN, vni 100 / 192.168.203.3 > 192.168.203.5: ICMP echo request"
    let (obs, _) = replay("pcap/tcpdump/vxlan.pcap", Decoding::default());
    let icmp = obs
        .iter()
        .find(|o| o.key.tunnel == tunnel::VXLAN && o.key.protocol == 1)
        .expect("inner ICMP");
    assert_eq!(
        (ip(icmp.key.outer_src), ip(icmp.key.outer_dst)),
        ("192.168.203.1".into(), "192.168.202.1".into())
    );
    assert_eq!(
        (ip(icmp.key.src), ip(icmp.key.dst)),
        ("192.168.203.3".into(), "192.168.203.5".into())
    );
    assert_eq!(
        icmp.src_mac, 0x00163e37f604,
        "inner Ethernet source 00:16:3e:37:f6:04"
    );
    // Port 8472 is only VXLAN when configured: without it, the same packets are plain UDP.
    let (obs, _) = replay(
        "pcap/tcpdump/vxlan_port_8472.pcap",
        Decoding {
            vxlan: vec![4789],
            ..Decoding::default()
        },
    );
    assert!(vnis(&obs, tunnel::VXLAN).is_empty());
}

#[test]
fn vxlan_over_ipv6_with_a_truncated_inner_packet() {
    // tcpdump: "2409:8086:8911:1901::23f.40233 > 2409:8086:8911:1901::23d.4789: VXLAN, vni 27"
    // then "2409:8086:8911:3123::7e3.30100 > 2409:8086:8911:3123::7d1.47202" (snaplen cut it).
    let (obs, _) = replay("pcap/deepflow/ip6-vxlan.pcap", Decoding::default());
    let o = obs.iter().find(|o| o.key.vni == 27).expect("vni 27");
    assert_eq!(ip(o.key.outer_src), "2409:8086:8911:1901::23f");
    assert_eq!(
        (ip(o.key.src), o.key.src_port, ip(o.key.dst), o.key.dst_port),
        (
            "2409:8086:8911:3123::7e3".into(),
            30100,
            "2409:8086:8911:3123::7d1".into(),
            47202
        )
    );
}

#[test]
fn geneve_options_match_tcpdump() {
    let (obs, _) = replay("pcap/tcpdump/geneve.pcap", Decoding::default());
    assert_eq!(
        vnis(&obs, tunnel::GENEVE),
        vnis_in_out_file("pcap/tcpdump/geneve-vv.out")
    );
    // "vni 0xa, options [class Standard (0x0) type 0x80(C) len 8 data 0000000c]"
    let with_opts: Vec<&Observation> = obs.iter().filter(|o| !o.geneve.is_empty()).collect();
    assert!(!with_opts.is_empty());
    for o in &with_opts {
        assert_eq!(o.key.vni, 0xa);
        assert_eq!(o.geneve.len(), 1);
        assert_eq!(
            (
                o.geneve[0].class,
                o.geneve[0].kind,
                o.geneve[0].data.as_slice()
            ),
            (0, 0x80, &[0, 0, 0, 0x0c][..])
        );
    }
    assert!(
        obs.iter()
            .filter(|o| o.key.vni == 0xb)
            .all(|o| o.geneve.is_empty()),
        "vni 0xb carries no options"
    );
    // "30.0.0.2.51225 > 30.0.0.1.22: Flags [S], seq 397610159" inside vni 0xb.
    let syn = obs
        .iter()
        .find(|o| o.key.dst_port == 22 && o.key.src_port == 51225)
        .unwrap();
    assert_eq!((syn.fp_kind, syn.fingerprint), (1, 397610159));

    let (obs, _) = replay(
        "pcap/tcpdump/gso-ipv4-geneve-ipv4.pcap",
        Decoding::default(),
    );
    assert_eq!(
        vnis(&obs, tunnel::GENEVE),
        vnis_in_out_file("pcap/tcpdump/gso-ipv4-geneve-ipv4.out")
    );
    let o = &obs[0];
    assert_eq!(
        (ip(o.key.src), o.key.src_port, ip(o.key.dst), o.key.dst_port),
        ("192.168.1.2".into(), 40769, "192.168.1.1".into(), 37633)
    );

    // Zeek's trace: "vni 0x0, options [8 bytes]" on the requests, none on the replies.
    let (obs, _) = replay("pcap/zeek/geneve.pcap", Decoding::default());
    let req = obs
        .iter()
        .find(|o| ip(o.key.src) == "30.0.0.1" && o.key.protocol == 1)
        .unwrap();
    assert_eq!(
        req.geneve.iter().map(|g| 4 + g.data.len()).sum::<usize>(),
        8
    );
    assert!(
        obs.iter()
            .find(|o| ip(o.key.src) == "30.0.0.2")
            .unwrap()
            .geneve
            .is_empty()
    );
}

#[test]
fn ip_in_ip_inner_addresses_match_tcpdump() {
    let cases = [
        // tcpdump: "1.2.3.4 > 5.6.7.8: IP 10.0.0.1.30000 > 10.0.0.2.13000: UDP"
        (
            "pcap/zeek/4in4.pcap",
            "1.2.3.4",
            "10.0.0.1",
            30000,
            "10.0.0.2",
            13000,
        ),
        // "1.2.3.4 > 5.6.7.8: IP6 dead::beef.30000 > cafe::babe.13000: UDP"
        (
            "pcap/zeek/6in4.pcap",
            "1.2.3.4",
            "dead::beef",
            30000,
            "cafe::babe",
            13000,
        ),
        // "2002:4637:d5d3::4637:d5d3 > 2001:4860:0:2001::68: IP 70.55.213.211.31337 > 192.88.99.1.80"
        (
            "pcap/zeek/4in6.pcap",
            "2002:4637:d5d3::4637:d5d3",
            "70.55.213.211",
            31337,
            "192.88.99.1",
            80,
        ),
    ];
    for (pcap, outer, src, sport, dst, dport) in cases {
        let (obs, _) = replay(pcap, Decoding::default());
        let o = obs
            .iter()
            .find(|o| o.key.tunnel == tunnel::IPIP)
            .unwrap_or_else(|| panic!("{pcap}: no IP-in-IP"));
        assert_eq!(ip(o.key.outer_src), outer, "{pcap}");
        assert_eq!(
            (ip(o.key.src), o.key.src_port, ip(o.key.dst), o.key.dst_port),
            (src.into(), sport, dst.into(), dport),
            "{pcap}"
        );
    }
}

#[test]
fn gre_inner_packets_match_tcpdump() {
    // "172.27.1.66 > 66.59.109.137: GREv0: IP 66.59.111.190 > 172.28.2.3: ICMP echo request"
    let (obs, _) = replay("pcap/zeek/gre-sample.pcap", Decoding::default());
    let o = obs
        .iter()
        .find(|o| o.key.tunnel == tunnel::GRE && ip(o.key.src) == "66.59.111.190")
        .unwrap();
    assert_eq!(
        (ip(o.key.outer_src), ip(o.key.dst), o.key.protocol),
        ("172.27.1.66".into(), "172.28.2.3".into(), 1)
    );
    // tcpdump's GRE suite: keyed GRE carrying protocol 0x8909 (not IP) stays an outer GRE
    // observation; nothing in it is malformed, and STP/loopback frames are "not IP".
    let (obs, stats) = replay("pcap/tcpdump/various_gre.pcap", Decoding::default());
    assert!(
        obs.iter()
            .any(|o| o.key.protocol == 47 && ip(o.key.src) == "10.172.64.7")
    );
    assert!(stats.not_ip > 0);
    assert!(stats.file_errors.is_empty(), "{stats:?}");
}

#[test]
fn every_shared_capture_replays_without_crashing() {
    for rel in shared_captures() {
        let (obs, stats) = replay(&rel, Decoding::default());
        assert!(stats.packets > 0, "{rel}");
        assert!(!obs.is_empty() || stats.not_ip > 0, "{rel}: {stats:?}");
    }
}

/// A pcapng file built by hand: two interfaces named in their blocks, packets with direction
/// flags (epb_flags), microsecond timestamps.
fn pcapng(frames: &[(u32, u32, u64, &[u8])], ifaces: &[&str]) -> Vec<u8> {
    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let len = (12 + body.len()) as u32;
        let mut b = kind.to_le_bytes().to_vec();
        b.extend(len.to_le_bytes());
        b.extend(body);
        b.extend(len.to_le_bytes());
        b
    }
    fn option(code: u16, value: &[u8]) -> Vec<u8> {
        let mut o = code.to_le_bytes().to_vec();
        o.extend((value.len() as u16).to_le_bytes());
        o.extend(value);
        o.resize(o.len().div_ceil(4) * 4, 0);
        o
    }
    let mut shb = 0x1A2B3C4Du32.to_le_bytes().to_vec();
    shb.extend([1, 0, 0, 0]);
    shb.extend((-1i64).to_le_bytes());
    let mut out = block(0x0A0D0D0A, &shb);
    for name in ifaces {
        let mut idb = 1u16.to_le_bytes().to_vec(); // LINKTYPE_ETHERNET
        idb.extend([0, 0]);
        idb.extend(0u32.to_le_bytes());
        idb.extend(option(2, name.as_bytes())); // if_name
        idb.extend([0, 0, 0, 0]); // opt_endofopt
        out.extend(block(1, &idb));
    }
    for (if_id, flags, ts_us, data) in frames {
        let mut epb = if_id.to_le_bytes().to_vec();
        epb.extend(((ts_us >> 32) as u32).to_le_bytes());
        epb.extend((*ts_us as u32).to_le_bytes());
        epb.extend((data.len() as u32).to_le_bytes());
        epb.extend((data.len() as u32).to_le_bytes());
        epb.extend(*data);
        epb.resize(epb.len().div_ceil(4) * 4, 0);
        epb.extend(option(2, &flags.to_le_bytes())); // epb_flags: 1 inbound, 2 outbound
        epb.extend([0, 0, 0, 0]);
        out.extend(block(6, &epb));
    }
    out
}

#[test]
fn pcapng_names_interfaces_and_directions_from_its_blocks() {
    use cniscope::sources::aggregate::{Direction, IfaceKind};
    use etherparse::PacketBuilder;
    let frame = |sport: u16| {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 244, 0, 2], [10, 244, 1, 2], 64)
            .udp(sport, 53)
            .write(&mut f, b"q")
            .unwrap();
        f
    };
    let (a, b) = (frame(4000), frame(4001));
    let bytes = pcapng(
        &[
            (0, 1, 1_700_000_000_000_000, &a),
            (1, 2, 1_700_000_000_500_000, &b),
            (1, 2, 1_700_000_001_000_000, &b),
        ],
        &["flannel.1", "eth0"],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two-ifaces.pcapng");
    std::fs::write(&path, bytes).unwrap();
    let spec: CaptureSpec = format!("node-a={}", path.display()).parse().unwrap();
    let mut r = Replay::open(&[spec], Decoding::default(), u64::MAX / 4).unwrap();
    let mut all = Vec::new();
    r.run(|_, obs, _| all.extend(obs));
    assert!(
        r.stats.file_errors.is_empty() && r.stats.malformed.is_empty(),
        "{:?}",
        r.stats
    );
    assert_eq!(all.len(), 2, "{all:?}");
    let point = |o: &Observation| r.points.get(o.key.point).clone();
    let first = all.iter().find(|o| o.key.src_port == 4000).unwrap();
    let p = point(first);
    assert_eq!(
        (p.node.as_str(), p.iface.as_str(), p.kind, p.direction),
        ("node-a", "flannel.1", IfaceKind::Tunnel, Direction::Ingress)
    );
    assert_eq!(
        first.first_ns, 1_700_000_000_000_000_000,
        "microsecond timestamps become ns"
    );
    let second = all.iter().find(|o| o.key.src_port == 4001).unwrap();
    let p = point(second);
    assert_eq!(
        (p.iface.as_str(), p.kind, p.direction),
        ("eth0", IfaceKind::Uplink, Direction::Egress)
    );
    assert_eq!(
        (second.packets, second.last_ns - second.first_ns),
        (2, 500_000_000)
    );
}

/// A pod's source port used to a ClusterIP and straight to the backend it picked (Linux picks
/// ports per destination): after DNAT both are one tuple, and conntrack gives the later
/// connection another source port on its way out of the node, the pod's address kept
/// (`tests/data/calico-port-remap/README.md`, recorded on the Calico lab). The views before and
/// after the remap share the TCP sequence numbers: one connection each, none counted twice.
#[test]
fn a_source_port_conntrack_remapped_is_one_connection() {
    plugin("calico");
    let doc = topology(&[
        "replay",
        "-c",
        data("calico-port-remap/cniscope.toml").to_str().unwrap(),
        "-f",
        "json",
    ]);
    let pair = "pod/default/client-a1 -> pod/default/server-b1";
    assert_eq!(
        edges(&doc),
        [
            format!("{pair} via - tcp/8080 packets 40"),
            format!("{pair} via service/default/echo tcp/8080 packets 50"),
        ],
        "{:#}",
        doc["health"]["plugins"]
    );
    let mut flows: Vec<(&str, u64)> = doc["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["service"].as_str().unwrap_or("-"),
                e["flows"].as_u64().unwrap(),
            )
        })
        .collect();
    flows.sort();
    assert_eq!(flows, [("-", 4), ("service/default/echo", 5)]);
}
