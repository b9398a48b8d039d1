use crate::support::*;
use cniscope::sources::aggregate::{Aggregator, Observation, PointTable};
use cniscope::sources::decode::{LinkType, TunnelPorts, decode};
use cniscope::sources::live::{NodeProbe, ProbeSettings, test_run};

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Every Ethernet frame of a legacy pcap file under the shared data.
fn ethernet_frames(rel: &str) -> Vec<Vec<u8>> {
    test_run::ethernet_frames(&data(rel)).unwrap()
}

/// What must agree between live and replay: everything but the capture point and the clock.
fn comparable(o: &Observation) -> String {
    let mut k = o.key;
    k.point = 0;
    // The probe keeps one Geneve option: OVN's (class 0x0102) among the first four, else the
    // first.
    let kept = o.geneve.iter().take(4).find(|g| g.class == 0x0102);
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
    if !is_root() {
        eprintln!("skipped: loading eBPF programs needs root");
        return;
    }
    // Both ways the probe reads headers: straight from the linear part (what BPF_PROG_TEST_RUN
    // gives it), and through bpf_skb_load_bytes (its path for paged data); and both places it
    // counts flows: the per-CPU cache, and the hash map behind it (one cache slot).
    for probe in probes() {
        let (mut probe, how) = probe;
        let mut compared = 0;
        // One probe for all files: each drain swaps buffers, so each file's flows come out
        // alone.
        for rel in shared_captures() {
            compared += assert_agree(
                &mut probe,
                &format!("{rel} ({how})"),
                &ethernet_frames(&rel),
            );
        }
        assert!(compared > 50, "{how}: compared {compared} observations");
    }
}

/// The probe loaded three ways: as the agent loads it; reading headers through the helper
/// only; with one cache slot, so nearly every flow goes to the hash map.
fn probes() -> [(NodeProbe, &'static str); 3] {
    let load = |helper_reads_only, cache_slots| {
        let settings = ProbeSettings {
            helper_reads_only,
            cache_slots,
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
    if !is_root() {
        eprintln!("skipped: loading eBPF programs needs root");
        return;
    }
    let (_, uplink) = crate::flannel_udp::frames();
    for (mut probe, how) in probes() {
        // Both directions of one connection, each in UDP 8285.
        assert_eq!(assert_agree(&mut probe, how, &uplink), 2);
    }
}

#[test]
fn the_probe_finds_ovns_geneve_option_behind_others_as_replay_does() {
    if !is_root() {
        eprintln!("skipped: loading eBPF programs needs root");
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
    // Four carriers (distinct source ports), each with the inner SYN: four observations, the
    // first two keeping OVN's option.
    for (mut probe, how) in probes() {
        assert_eq!(assert_agree(&mut probe, how, &frames), 4);
    }
}

/// Runs `frames` through the probe (BPF_PROG_TEST_RUN) and the replay decoder and asserts
/// both make the same observations; returns how many.
fn assert_agree(probe: &mut NodeProbe, name: &str, frames: &[Vec<u8>]) -> usize {
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
        assert_eq!(rc, 0, "the probe never changes a packet's fate (TC_ACT_OK)");
        // Frames neither side can read (not IP, malformed) are observations of neither.
        if let Ok(d) = decode(LinkType::Ethernet, f, &TunnelPorts::default()) {
            agg.add(0, &d, i as u64);
        }
    }
    let mut points = PointTable::default();
    let mut live: Vec<String> = probe
        .drain(&mut points, 0)
        .unwrap()
        .iter()
        .map(comparable)
        .collect();
    let mut replay: Vec<String> = agg.drain().iter().map(comparable).collect();
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
