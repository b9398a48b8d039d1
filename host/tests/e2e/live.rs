use crate::support::*;

/// TC_ACT_UNSPEC (TCX_NEXT): what every probe program returns.
const TC_ACT_UNSPEC: i32 = -1;
use cniscope::sources::aggregate::{Aggregator, Observation, PointTable};
use cniscope::sources::decode::{Decoding, LinkType, decode, tunnel};
use cniscope::sources::live::{NodeProbe, ProbeSettings, test_run};

/// Every Ethernet frame of a legacy pcap file under the shared data.
fn ethernet_frames(rel: &str) -> Vec<Vec<u8>> {
    test_run::ethernet_frames(&data(rel)).unwrap()
}

/// The Geneve option class the ovn plugin asks the probe to keep (its decoding needs).
const OVN_CLASS: u16 = 0x0102;

/// What must agree between live and replay: everything but the capture point and the clock.
/// The probe keeps one Geneve option: the first of a class in `classes` among the first four,
/// else the first.
fn comparable(o: &Observation, classes: &[u16]) -> String {
    let mut k = o.key;
    k.point = 0;
    let kept = o.geneve.iter().take(4).find(|g| classes.contains(&g.class));
    let geneve = kept.or(o.geneve.first()).map(|g| {
        (
            g.class,
            g.kind,
            g.data.iter().take(8).copied().collect::<Vec<_>>(),
        )
    });
    format!(
        "{k:?} macs {:x}/{:x}/{:x}/{:x} flags {:x} fp {}:{:x} pkts {} bytes {} geneve {geneve:?}",
        o.src_mac,
        o.dst_mac,
        o.outer_src_mac,
        o.outer_dst_mac,
        o.tcp_flags,
        o.fp_kind,
        o.fingerprint,
        o.packets,
        o.bytes
    )
}

#[test]
fn the_probe_and_the_replay_decoder_agree_on_every_shared_capture() {
    if !root_or_skip("loading eBPF programs needs root") {
        return;
    }
    // Both ways the probe reads headers: straight from the linear part (what BPF_PROG_TEST_RUN
    // gives it), and through bpf_skb_load_bytes (its path for paged data); and both places it
    // counts flows: the per-CPU cache, and the hash map behind it (one cache slot).
    for probe in probes() {
        let (mut probe, how) = probe;
        let decoding = keeping(&[OVN_CLASS]);
        let mut compared = 0;
        // One probe for all files: each drain swaps buffers, so each file's flows come out
        // alone.
        for rel in shared_captures() {
            compared += assert_agree(
                &mut probe,
                &decoding,
                &format!("{rel} ({how})"),
                &ethernet_frames(&rel),
            );
        }
        assert!(compared > 40, "{how}: compared {compared} observations");
    }
}

/// The probe loaded three ways: as the agent loads it; reading headers through the helper
/// only; with one cache slot, so nearly every flow goes to the hash map. Each keeps OVN's
/// Geneve option, as with the ovn plugin loaded.
fn probes() -> [(NodeProbe, &'static str); 3] {
    probes_decoding(&keeping(&[OVN_CLASS]))
}

/// The default decoding, keeping Geneve options of `classes`.
fn keeping(classes: &[u16]) -> Decoding {
    Decoding {
        geneve_classes: classes.to_vec(),
        ..Decoding::default()
    }
}

fn probes_decoding(decoding: &Decoding) -> [(NodeProbe, &'static str); 3] {
    let load = |helper_reads_only, cache_slots| {
        let settings = ProbeSettings {
            helper_reads_only,
            cache_slots,
            decoding: decoding.clone(),
            ..ProbeSettings::default()
        };
        NodeProbe::load("test", None, &settings).expect("the kernel accepts the probes")
    };
    [
        (load(false, 1024), "direct reads, cache"),
        (load(true, 1024), "helper reads"),
        (load(false, 1), "hash map"),
    ]
}

#[test]
fn the_probe_decodes_flannel_udp_backend_frames_as_replay_does() {
    if !root_or_skip("loading eBPF programs needs root") {
        return;
    }
    let (_, uplink) = crate::flannel_udp::frames();
    for (mut probe, how) in probes() {
        // Both directions of one connection, each in UDP 8285.
        assert_eq!(
            assert_agree(&mut probe, &keeping(&[OVN_CLASS]), how, &uplink),
            2
        );
    }
}

#[test]
fn the_probe_finds_ovns_geneve_option_behind_others_as_replay_does() {
    if !root_or_skip("loading eBPF programs needs root") {
        return;
    }
    let inner = ethernet(
        [0x0a, 0x58, 10, 132, 2, 1],
        [0x0a, 0x58, 10, 132, 2, 7],
        &ipv4_tcp(
            [10, 132, 0, 5],
            [10, 132, 2, 7],
            (41000, 8080),
            77,
            "S",
            &[],
        ),
    );
    // Geneve frames with: OVN's option behind an unknown class and an empty option; OVN's
    // alone; an unknown class alone (kept as the first); no option.
    let ovn = [0x01, 0x02, 0x80, 0x01, 0x00, 0x01, 0x00, 0x03];
    let unknown = [0xff, 0x01, 0x07, 0x02, 1, 2, 3, 4, 5, 6, 7, 8];
    let empty = [0x00, 0x00, 0x01, 0x00];
    let shapes: [Vec<u8>; 4] = [
        [&unknown[..], &empty, &ovn].concat(),
        ovn.to_vec(),
        unknown.to_vec(),
        vec![],
    ];
    let frames: Vec<Vec<u8>> = shapes
        .iter()
        .enumerate()
        .map(|(i, options)| {
            let mut g = vec![(options.len() / 4) as u8, 0x40, 0x65, 0x58, 0, 0, 5, 0];
            g.extend(options);
            g.extend(&inner);
            let mut f = Vec::new();
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb])
                .ipv4([192, 168, 66, 11], [192, 168, 66, 12], 64)
                .udp(50000 + i as u16, 6081)
                .write(&mut f, &g)
                .unwrap();
            f
        })
        .collect();
    // Four carriers (distinct source ports), each with the inner SYN: four observations. The
    // class to keep is the plugins' (set at load, nothing about OVN in the probe): OVN's
    // (the first two keep it), another CNI's (the first and third keep 0xff01), or none
    // (each keeps its first). `comparable` builds the same rule from replay's options.
    for classes in [vec![OVN_CLASS], vec![0xff01], vec![]] {
        let decoding = keeping(&classes);
        for (mut probe, how) in probes_decoding(&decoding) {
            let how = format!("{how}, keeping {classes:x?}");
            assert_eq!(assert_agree(&mut probe, &decoding, &how, &frames), 4);
        }
    }
}

/// Runs `frames` through the probe (BPF_PROG_TEST_RUN) and the replay decoder and asserts
/// both make the same observations; returns how many.
fn assert_agree(
    probe: &mut NodeProbe,
    decoding: &Decoding,
    name: &str,
    frames: &[Vec<u8>],
) -> usize {
    let classes = &decoding.geneve_classes;
    let mut agg = Aggregator::default();
    for (i, f) in frames.iter().enumerate() {
        // BPF_PROG_TEST_RUN needs at least an Ethernet header (shorter frames are
        // malformed for both sides) and at most about a page: both sides get the same
        // frame cut at 3000 bytes, as a snaplen would cut it (the GSO/BIG TCP frames).
        if f.len() < 14 {
            continue;
        }
        let f = &f[..f.len().min(3000)];
        let rc = test_run::run(probe.ingress_program(), f)
            .unwrap_or_else(|e| panic!("{name} frame {i}: test run: {e}"));
        assert_eq!(
            rc as i32, TC_ACT_UNSPEC,
            "the probe never decides a packet's fate (TC_ACT_UNSPEC: on to the next program)"
        );
        // Frames neither side can read (not IP, malformed) are observations of neither.
        if let Ok(d) = decode(LinkType::Ethernet, f, decoding) {
            agg.add(0, &d, i as u64);
        }
    }
    let mut points = PointTable::default();
    let mut live: Vec<String> = probe
        .drain(&mut points, 0)
        .unwrap()
        .iter()
        .map(|o| comparable(o, classes))
        .collect();
    let mut replay: Vec<String> = agg.drain().iter().map(|o| comparable(o, classes)).collect();
    live.sort();
    replay.sort();
    let only_live: Vec<_> = live.iter().filter(|x| !replay.contains(x)).collect();
    let only_replay: Vec<_> = replay.iter().filter(|x| !live.contains(x)).collect();
    assert!(
        only_live.is_empty() && only_replay.is_empty(),
        "{name}:\nonly live: {only_live:#?}\nonly replay: {only_replay:#?}"
    );
    live.len()
}

/// Connections on one 5-tuple inside one drain interval (a port used again with a new
/// handshake): one observation each, as replay makes them, whether the flow sits in the
/// per-CPU cache or (one slot, taken by another flow) in the shared hash map, where every CPU
/// adds to the record at once, so a later connection gets a record of its own (a split
/// generation) and the packets after it go there.
#[test]
fn a_5_tuple_reused_within_one_interval_is_two_observations() {
    if !root_or_skip("loading eBPF programs needs root") {
        return;
    }
    let (a, b) = ([10, 244, 0, 5], [10, 244, 1, 7]);
    let eth = |ip: &[u8]| ethernet([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], ip);
    let conn = |isn: u32| {
        [
            eth(&ipv4_tcp(a, b, (40000, 80), isn, "S", &[])),
            eth(&ipv4_tcp(a, b, (40000, 80), isn + 1, "A", &[])),
            eth(&ipv4_tcp(a, b, (40000, 80), isn + 1, "FA", &[])),
        ]
    };
    let other = eth(&ipv4_tcp(a, b, (40001, 80), 5, "S", &[]));
    for (mut probe, how) in probes() {
        for in_map in [false, true] {
            if in_map && how != "hash map" {
                continue;
            }
            if in_map {
                // Another flow takes the one cache slot: the reused key goes to the map.
                test_run::run(probe.ingress_program(), &other).unwrap();
            }
            let before = probe.counters().unwrap().reopen_merged;
            let isns = [1_000, 9_000_000, 77_000_000];
            for isn in isns {
                for f in &conn(isn) {
                    test_run::run(probe.ingress_program(), f).unwrap();
                }
            }
            let merged = probe.counters().unwrap().reopen_merged - before;
            let mut points = PointTable::default();
            let drained = probe.drain(&mut points, 0).unwrap();
            let mut got: Vec<(u32, u64)> = drained
                .iter()
                .filter(|o| o.key.src_port == 40000)
                .map(|o| (o.fingerprint, o.packets))
                .collect();
            got.sort();
            let where_ = if in_map { "hash map" } else { "cache" };
            assert_eq!(
                got,
                isns.iter().map(|&isn| (isn, 3)).collect::<Vec<_>>(),
                "{how}, in the {where_}: one observation per connection"
            );
            let mut generations: Vec<u8> = drained
                .iter()
                .filter(|o| o.key.src_port == 40000)
                .map(|o| o.generation)
                .collect();
            generations.sort();
            generations.dedup();
            assert_eq!(
                generations.len(),
                3,
                "{how}: told apart downstream {drained:?}"
            );
            assert_eq!(merged, 0, "{how}, in the {where_}");
        }
    }
}

/// The benchmark's floor (`baseline_probe`): a program that passes every packet and records
/// nothing, so that its bpf_stats figure is the hook's and the statistics' own cost.
#[test]
fn the_baseline_program_passes_every_packet_and_records_nothing() {
    if !root_or_skip("loading eBPF programs needs root") {
        return;
    }
    let settings = ProbeSettings {
        baseline: true,
        ..ProbeSettings::default()
    };
    let mut probe = NodeProbe::load("test", None, &settings).expect("the kernel accepts it");
    let frames = ethernet_frames(&shared_captures()[0]);
    assert!(!frames.is_empty());
    for f in frames.iter().filter(|f| f.len() >= 14) {
        let rc = test_run::run(probe.ingress_program(), &f[..f.len().min(3000)]).unwrap();
        assert_eq!(rc as i32, TC_ACT_UNSPEC, "on to the next program");
    }
    let mut points = PointTable::default();
    assert!(probe.drain(&mut points, 0).unwrap().is_empty());
    assert_eq!(probe.counters().unwrap().packets, 0);
}

/// The edges of the probe's fast path (plain IPv4, bare or in VXLAN, at fixed offsets): each
/// of these frames either stays on it or must fall back to the general parser, and both must
/// give what the replay decoder gives.
#[test]
fn the_probe_agrees_with_replay_at_the_edges_of_its_fast_path() {
    if !root_or_skip("loading eBPF programs needs root") {
        return;
    }
    let (a, b) = ([10, 244, 0, 5], [10, 244, 1, 7]);
    let tcp = |sport: u16| ipv4_tcp(a, b, (sport, 80), 1000, "S", &[]);
    let udp = |sport: u16, dport: u16, payload: &[u8]| {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ipv4(a, b, 64)
            .udp(sport, dport)
            .write(&mut out, payload)
            .unwrap();
        out
    };
    let set_u16 =
        |p: &mut Vec<u8>, at: usize, v: u16| p[at..at + 2].copy_from_slice(&v.to_be_bytes());
    let eth = |ip: &[u8]| ethernet([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], ip);
    // A VXLAN carrier (UDP 8472) of `inner` (an Ethernet frame), with VXLAN flags `flags`.
    let vxlan = |sport: u16, flags: u8, inner: &[u8]| {
        let mut v = vec![flags, 0, 0, 0, 0, 0, 1, 0];
        v.extend(inner);
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb])
            .ipv4([192, 168, 0, 1], [192, 168, 0, 2], 64)
            .udp(sport, 8472)
            .write(&mut out, &v)
            .unwrap();
        out
    };

    let mut frames = vec![
        eth(&tcp(40001)),
        eth(&udp(40002, 53, b"q")),
        eth(&{
            let mut out = Vec::new();
            etherparse::PacketBuilder::ipv4(a, b, 64)
                .icmpv4_echo_request(7, 1)
                .write(&mut out, b"ping")
                .unwrap();
            out
        }),
    ];
    // Ethernet padding past the IP packet (a 1-byte datagram in a 60-byte frame).
    let mut padded = eth(&udp(40003, 53, b"x"));
    padded.resize(60, 0);
    frames.push(padded);
    // IP options (IHL 6): the general parser.
    let mut options = tcp(40004);
    options.splice(20..20, [1, 1, 1, 1]);
    options[0] = 0x46;
    let total = options.len() as u16;
    set_u16(&mut options, 2, total);
    frames.push(eth(&options));
    // A first fragment (MF, offset 0) keeps its UDP header; a later one has none.
    let mut first_fragment = udp(40005, 53, b"frag");
    set_u16(&mut first_fragment, 6, 0x2000);
    frames.push(eth(&first_fragment));
    let mut later_fragment = udp(40006, 53, b"frag");
    set_u16(&mut later_fragment, 6, 0x0003);
    frames.push(eth(&later_fragment));
    // A TCP data offset below 5 words, and a TCP header cut short by the IP length (both
    // without ports: to another address each, to stay two flows).
    let mut bad_offset = ipv4_tcp(a, [10, 244, 1, 8], (40007, 80), 1000, "S", &[]);
    bad_offset[20 + 12] = 0x40;
    frames.push(eth(&bad_offset));
    let mut short_tcp = tcp(40008);
    short_tcp.truncate(30);
    set_u16(&mut short_tcp, 2, 30);
    frames.push(eth(&short_tcp));
    // BIG TCP: total length 0, the length is what the frame carries.
    let mut big = ipv4_tcp(a, b, (40009, 80), 5, "A", &[7; 100]);
    set_u16(&mut big, 2, 0);
    frames.push(eth(&big));
    // VXLAN: plain inner TCP and UDP (the fast path), no I flag (the carrier alone), an inner
    // VLAN tag, inner IPv6, inner IP options, an inner packet the carrier's IP length cuts.
    let inner_eth = |ip: &[u8]| ethernet([0x0a, 0x58, 0, 0, 0, 1], [0x0a, 0x58, 0, 0, 0, 2], ip);
    frames.push(vxlan(50001, 0x08, &inner_eth(&tcp(41001))));
    frames.push(vxlan(50002, 0x08, &inner_eth(&udp(41002, 53, b"dns"))));
    frames.push(vxlan(50003, 0x00, &inner_eth(&tcp(41003))));
    let mut tagged = inner_eth(&tcp(41004));
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    frames.push(vxlan(50004, 0x08, &tagged));
    let mut v6 = Vec::new();
    etherparse::PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
        .tcp(41005, 80, 1, 1000)
        .write(&mut v6, &[])
        .unwrap();
    let mut v6_frame = inner_eth(&v6);
    set_u16(&mut v6_frame, 12, 0x86dd);
    frames.push(vxlan(50005, 0x08, &v6_frame));
    frames.push(vxlan(50006, 0x08, &inner_eth(&options)));
    let mut cut = vxlan(50007, 0x08, &inner_eth(&tcp(41007)));
    // The carrier's IP length ends 10 bytes into the inner TCP header.
    let carrier_len = (cut.len() - 14 - 10) as u16;
    set_u16(&mut cut, 14 + 2, carrier_len);
    frames.push(cut);
    // UDP to the Geneve port that is not valid Geneve: the carrier alone.
    frames.push(eth(&udp(40010, 6081, &[0xc0, 0, 0, 0, 0, 0, 0, 0])));
    // ICMP errors quoting the packet they answer (the quote is their fingerprint): a port
    // unreachable quoting a SYN, one quoting UDP with IP options (IHL 6), a time exceeded,
    // a quote cut before the ports, one cut inside the quoted IP header; each from another
    // sender, to stay one flow each.
    let icmp_error = |from: u8, ty: u8, code: u8, quoted: &[u8]| {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 244, 9, from], a, 64)
            .icmpv4_raw(ty, code, [0; 4])
            .write(&mut out, quoted)
            .unwrap();
        eth(&out)
    };
    let syn = tcp(40011);
    frames.push(icmp_error(1, 3, 3, &syn[..28]));
    let mut udp_options = udp(40012, 53, b"question");
    udp_options.splice(20..20, [1, 1, 1, 1]);
    udp_options[0] = 0x46;
    frames.push(icmp_error(2, 3, 3, &udp_options[..32]));
    frames.push(icmp_error(3, 11, 0, &syn[..28]));
    frames.push(icmp_error(4, 3, 1, &syn[..24]));
    frames.push(icmp_error(5, 3, 3, &syn[..12]));

    // The whole quotes are quotes on both sides (not 0 on both).
    let quoted: Vec<u8> = frames
        .iter()
        .filter_map(|f| decode(LinkType::Ethernet, f, &keeping(&[])).ok())
        .map(|d| d.fingerprint().0)
        .filter(|&k| k == cniscope_common::fp::ICMP_QUOTE)
        .collect();
    assert_eq!(quoted.len(), 3, "the three whole quotes");
    for (mut probe, how) in probes() {
        assert_eq!(
            assert_agree(&mut probe, &keeping(&[OVN_CLASS]), how, &frames),
            frames.len(),
            "{how}: one observation per frame"
        );
    }
}

/// The probe decodes what the loaded plugins ask for: flannel configured with another VXLAN
/// port hands it over (`configure`'s decoding needs) and the probe decodes that traffic as
/// replay does, with nothing about the port in the operator's `[decode]`.
#[test]
fn the_probe_decodes_the_vxlan_port_a_plugin_is_configured_with() {
    if !root_or_skip("loading eBPF programs needs root") {
        return;
    }
    use cniscope::config::PluginToLoad;
    use cniscope::inventory::Inventory;
    use cniscope::pipeline::Pipeline;
    use cniscope::plugins::{PluginEngine, PluginSettings};
    let engine = PluginEngine::new(None).unwrap();
    let mut settings = PluginSettings::new("flannel");
    settings.options_json = r#"{"port": 58678}"#.into();
    let flannel = PluginToLoad {
        path: plugin("flannel"),
        sha256: None,
        settings,
    };
    let pipeline = Pipeline::new(&engine, &[flannel], Inventory::default()).unwrap();
    let decoding = pipeline.decoding(&Decoding::default());
    assert!(decoding.vxlan.contains(&58678), "{decoding:?}");
    let dir = tempfile::tempdir().unwrap();
    let moved = dir.path().join("eth0.pcap");
    let src = data("flannel-vxlan/node-a.eth0.pcap");
    assert!(rewrite_udp_port(&src, &moved, 8472, 58678) > 0);
    let frames = test_run::ethernet_frames(&moved).unwrap();
    for (mut probe, how) in probes_decoding(&decoding) {
        let n = assert_agree(&mut probe, &decoding, how, &frames);
        assert!(n > 0, "{how}");
    }
    // And decoded, not merely agreed on: the replay side sees VXLAN inside.
    let vxlan = frames
        .iter()
        .filter_map(|f| decode(LinkType::Ethernet, f, &decoding).ok())
        .filter(|d| d.tunnel.as_ref().is_some_and(|t| t.kind == tunnel::VXLAN))
        .count();
    assert!(vxlan > 0, "VXLAN on 58678 decoded");
}

/// The flow maps are shared by every CPU: a flow's packets on two CPUs at once, through the
/// hash map (the one-slot cache held by another flow), drained again and again while they
/// run, add up exactly: no increment lost to a race, none to a buffer swap, none twice.
#[test]
fn packets_of_one_flow_on_every_cpu_at_once_are_all_counted_across_drains() {
    if !root_or_skip("loading eBPF programs needs root") {
        return;
    }
    let settings = ProbeSettings {
        cache_slots: 1,
        ..ProbeSettings::default()
    };
    let mut probe = NodeProbe::load("test", None, &settings).expect("the kernel accepts it");
    let (a, b) = ([10, 244, 0, 5], [10, 244, 1, 7]);
    let eth = |ip: &[u8]| ethernet([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], ip);
    // `holder` keeps each CPU's one cache slot; `shared` then goes to the hash map.
    let holder = eth(&ipv4_tcp(a, b, (40001, 80), 1, "A", &[]));
    let shared = [
        eth(&ipv4_tcp(a, b, (40002, 80), 1, "A", b"x")),
        eth(&ipv4_tcp(a, b, (40002, 80), 1, "PA", b"x")),
    ];
    use std::os::fd::AsFd;
    const ROUNDS: u64 = 2000;
    const REPEAT: u32 = 500;
    let fd = test_run::program_fd(probe.ingress_program()).unwrap();
    let mut points = PointTable::default();
    let mut observations = Vec::new();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|t| {
                let (fd, holder, frame) = (&fd, &holder, &shared[t]);
                s.spawn(move || {
                    for _ in 0..ROUNDS {
                        test_run::run_fd(fd.as_fd(), holder, 1).unwrap();
                        test_run::run_fd(fd.as_fd(), frame, REPEAT).unwrap();
                    }
                })
            })
            .collect();
        while !workers.iter().all(|w| w.is_finished()) {
            observations.extend(probe.drain(&mut points, 0).unwrap());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
    // The last window, and the one before it whose writers may have just finished.
    for _ in 0..2 {
        observations.extend(probe.drain(&mut points, 0).unwrap());
    }
    let of_port = |port: u16| {
        observations
            .iter()
            .filter(|o| o.key.src_port == port)
            .fold((0, 0), |(p, f), o| (p + o.packets, f | o.tcp_flags))
    };
    let (packets, flags) = of_port(40002);
    assert_eq!(packets, 2 * ROUNDS * REPEAT as u64, "every packet, once");
    assert_eq!(flags, 0x18, "ACK from one CPU, PSH from the other");
    assert_eq!(of_port(40001).0, 2 * ROUNDS);
    let counters = probe.counters().unwrap();
    assert_eq!(counters.map_full, 0);
    assert_eq!(counters.packets, 2 * ROUNDS * (1 + REPEAT as u64));
}
