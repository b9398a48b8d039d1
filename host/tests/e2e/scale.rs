//! Tens of thousands of connections through the built flannel.wasm with its default limits:
//! the shipped capture's UDP exchange copied 40 000 times, as busy nodes make them.

use crate::support::*;
use cniscope::synth;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The shipped capture's UDP exchange (client port 35590 -> server 5353: 5 queries with one
/// payload and 5 replies) copied `n` times into `out`, at every capture point: copy `k` from
/// client port 10 000 + k, 100 us after copy k - 1, with IPv4 IDs drawn at random (the same
/// for one packet at every point, as the kernel keeps them across the tunnel). Other packets
/// are kept once. Returns the files as replay arguments.
fn copies_of_the_udp_exchange(out: &Path, n: u32) -> Vec<String> {
    const PORT: u16 = 35590;
    let mix = |id: u16, k: u32| -> u16 {
        let mut x = (u32::from(id).wrapping_mul(0x9E37_79B1)) ^ k.wrapping_mul(0x85EB_CA77);
        x ^= x >> 15;
        x = x.wrapping_mul(0x2C1B_3C6D);
        x ^= x >> 12;
        (x % 65535) as u16 + 1
    };
    let mut specs = Vec::new();
    for spec in lab_captures() {
        let (point, file) = spec.split_once('=').unwrap();
        let b = std::fs::read(file).unwrap();
        let mut frames: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut at = 24;
        while at + 16 <= b.len() {
            let word = |o: usize| u32::from_le_bytes(b[at + o..at + o + 4].try_into().unwrap());
            let (us, len) = (
                u64::from(word(0)) * 1_000_000 + u64::from(word(4)),
                word(8) as usize,
            );
            let f = b[at + 16..at + 16 + len].to_vec();
            at += 16 + len;
            // The IPv4 header: bare, or inside flannel's VXLAN (outer UDP 8472).
            let mut ip = 14;
            if f.len() > 36 && f[ip + 9] == 17 && f[ip + 22..ip + 24] == 8472u16.to_be_bytes() {
                ip += 20 + 8 + 8 + 14;
            }
            let udp = ip + 20;
            let copied = f.len() >= udp + 8
                && f[ip + 9] == 17
                && (f[udp..udp + 2] == PORT.to_be_bytes()
                    || f[udp + 2..udp + 4] == PORT.to_be_bytes());
            if !copied {
                frames.push((us, f));
                continue;
            }
            let client_at = if f[udp..udp + 2] == PORT.to_be_bytes() {
                udp
            } else {
                udp + 2
            };
            let id = u16::from_be_bytes([f[ip + 4], f[ip + 5]]);
            for k in 0..n {
                let mut c = f.clone();
                c[ip + 4..ip + 6].copy_from_slice(&mix(id, k).to_be_bytes());
                c[client_at..client_at + 2].copy_from_slice(&(10_000 + k as u16).to_be_bytes());
                frames.push((us + u64::from(k) * 100, c));
            }
        }
        frames.sort_by_key(|(us, _)| *us);
        let mut pcap = b[..24].to_vec();
        for (us, f) in frames {
            pcap.extend(((us / 1_000_000) as u32).to_le_bytes());
            pcap.extend(((us % 1_000_000) as u32).to_le_bytes());
            pcap.extend((f.len() as u32).to_le_bytes());
            pcap.extend((f.len() as u32).to_le_bytes());
            pcap.extend(f);
        }
        let path = out.join(Path::new(file).file_name().unwrap());
        std::fs::write(&path, pcap).unwrap();
        specs.push(format!("{point}={}", path.display()));
    }
    specs
}

/// 40 000 UDP connections with one payload, random IPv4 IDs (16 bits: ~12 000 share one with
/// another), in 1 s and 5 s windows: each comes out once, client -> server, every packet
/// counted, the plugin within its default memory. It lost 27% of them to fingerprint joins,
/// turned connections cut by a window around, counted a cut connection as two, and died at
/// 64 MiB with 200 000 held views (#20).
#[test]
fn forty_thousand_connections_sharing_fingerprints_are_each_counted_once() {
    let n = 40_000u32;
    let dir = tempfile::tempdir().unwrap();
    let captures = copies_of_the_udp_exchange(dir.path(), n);
    let inv = data("flannel-vxlan/inventory.json");
    for window in ["1", "5"] {
        let mut args: Vec<&str> = vec!["replay", "--window-secs", window];
        args.extend(captures.iter().map(String::as_str));
        args.extend([
            "--inventory",
            inv.to_str().unwrap(),
            "--format",
            "json",
            "--plugin",
            "flannel",
        ]);
        let doc = topology(&args);

        let flannel = &doc["health"]["plugins"]["flannel"];
        assert_eq!(flannel["state"], "ok", "{window} s: {flannel}");
        assert_eq!(flannel["observations_lost"], 0, "{window} s: {flannel}");
        let udp: Vec<&Value> = doc["edges"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["protocol"] == "udp")
            .collect();
        assert_eq!(
            udp.len(),
            1,
            "{window} s: one edge, never server -> client: {udp:#?}"
        );
        let e = udp[0];
        assert_eq!(
            (&e["src"], &e["dst"], &e["port"]),
            (
                &"pod/default/client-a1".into(),
                &"pod/default/server-b1".into(),
                &5353.into()
            )
        );
        assert_eq!(
            e["packets"],
            u64::from(n) * 10,
            "{window} s: every datagram, once"
        );
        assert_eq!(
            e["flows"], n,
            "{window} s: every connection once, also when a window cuts it"
        );
        let collisions = flannel["counters"]["stitch.fingerprint_collisions"]
            .as_u64()
            .unwrap();
        assert!(
            collisions > 1_000,
            "shared IDs were seen and kept apart: {collisions}"
        );
    }
}

/// Synthetic clusters of each CNI shape (`cniscope synth write`), with churn, connections open
/// before the capture, pooled connections cut by windows and one DNS payload from every
/// client, replayed through the shipped plugins: every edge found, nothing else, each with
/// exactly its connections and packets (`cniscope synth score`). Addresses other than the
/// defaults, two or three nodes and windows of 1 to 3 s (at 1 s, pooled connections go quiet
/// for whole windows), so no rule can lean on them.
#[test]
fn synthetic_clusters_of_every_shape_replay_to_their_exact_topology() {
    let shapes = [
        (
            "flannel-vxlan",
            "10.42.0.0/16",
            "172.21.0.0/16",
            "10.0.7.0/24",
        ),
        (
            "flannel-host-gw",
            "172.30.0.0/16",
            "10.100.0.0/16",
            "192.168.122.0/24",
        ),
        (
            "calico-ipip",
            "192.168.0.0/16",
            "10.43.0.0/16",
            "10.10.0.0/24",
        ),
        (
            "calico-vxlan",
            "10.128.0.0/14",
            "172.30.0.0/16",
            "10.0.0.0/24",
        ),
        (
            "calico-bgp",
            "10.50.0.0/16",
            "10.96.0.0/12",
            "172.16.5.0/24",
        ),
        (
            "ovn-geneve",
            "10.128.0.0/14",
            "172.30.0.0/16",
            "192.168.126.0/24",
        ),
    ];
    let plugins = root().join("dist/plugins");
    for (k, (shape, pods, services, nodes)) in shapes.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("captures");
        let seed = (7 + k).to_string();
        let nodes_count = (2 + k % 2).to_string();
        let window = (1 + k % 3).to_string();
        let args = [
            "synth",
            "write",
            shape,
            "-o",
            out.to_str().unwrap(),
            "-n",
            "3000",
            "--pods-per-node",
            "24",
            "--secs",
            "12",
            "--window-secs",
            &window,
            "--nodes",
            &nodes_count,
            "--seed",
            &seed,
            "--pod-cidr",
            pods,
            "--service-cidr",
            services,
            "--node-cidr",
            nodes,
            "--churn",
            "0.25",
            "--plugins",
            plugins.to_str().unwrap(),
        ];
        let written = cniscope(&args);
        assert!(
            written.status.success(),
            "{shape}: {}",
            String::from_utf8_lossy(&written.stderr)
        );
        let found = dir.path().join("found.json");
        let expected = out.join("expected.json");
        let (_, want, score) = replay_and_score(&out.join("cniscope.toml"), &expected, &found);
        assert!(score.is_exact(), "{shape}:\n{score}");
        assert!(
            score.expected_flows >= 3000 && score.expected_edges > 100,
            "{score}"
        );
        assert!(
            want.keys()
                .any(|k| k.protocol == "icmp" && want[k].flows > 1),
            "ping sessions"
        );
        // The command line's score says the same.
        let cli = cniscope(&[
            "synth",
            "score",
            expected.to_str().unwrap(),
            found.to_str().unwrap(),
        ]);
        let text = String::from_utf8_lossy(&cli.stdout);
        assert!(cli.status.success(), "{shape}: {text}");
        assert!(
            text.contains("precision 1.0000, recall 1.0000"),
            "{shape}: {text}"
        );
    }
}

/// A window fuller than the plugin holds (`max_held` 1 000 against ~6 000 views a window): the
/// stitcher drains early ~30 times, cutting connections between their views, and the topology
/// is still exact. A connection an early drain finds only at a service's door waits for its
/// backend's views (`stitch.waited`); views of both sides of a cut name the same ends.
#[test]
fn windows_stitched_early_many_times_still_replay_to_their_exact_topology() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("captures");
    let plugins = root().join("dist/plugins");
    let written = cniscope(&[
        "synth",
        "write",
        "flannel-vxlan",
        "-o",
        out.to_str().unwrap(),
        "-n",
        "5000",
        "--pods-per-node",
        "30",
        "--seed",
        "1",
        "--pod-cidr",
        "10.60.0.0/16",
        "--service-cidr",
        "172.22.0.0/16",
        "--node-cidr",
        "10.0.9.0/24",
        "--churn",
        "0.25",
        "--plugins",
        plugins.to_str().unwrap(),
    ]);
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let config = out.join("cniscope.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let small = text.replacen(
        "[plugin.options]\n",
        "[plugin.options]\nmax_held = 1000\n",
        1,
    );
    assert_ne!(small, text, "the written config has plugin options");
    std::fs::write(&config, small).unwrap();
    let found = dir.path().join("found.json");
    let (doc, _, score) = replay_and_score(&config, &out.join("expected.json"), &found);
    let counters = &doc["health"]["plugins"]["flannel"]["counters"];
    assert!(
        counters["stitch.early_drains"].as_u64().unwrap() >= 20,
        "{counters}"
    );
    assert!(
        counters["stitch.waited"].as_u64().unwrap() > 0,
        "{counters}"
    );
    assert!(score.is_exact(), "{score}");
    assert_eq!(score.expected_flows, 5000, "{score}");
}

/// Replays `config` into `found` (JSON) and scores it against `expected`: the document, the
/// expected edges, and the score.
fn replay_and_score(
    config: &Path,
    expected: &Path,
    found: &Path,
) -> (Value, BTreeMap<synth::EdgeKey, synth::Count>, synth::Score) {
    let replay = cniscope(&[
        "replay",
        "-c",
        config.to_str().unwrap(),
        "-f",
        "json",
        "-o",
        found.to_str().unwrap(),
    ]);
    assert!(
        replay.status.success(),
        "{}: {}",
        config.display(),
        String::from_utf8_lossy(&replay.stderr)
    );
    let read = |p: &Path| -> Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let doc = read(found);
    let want = synth::edges_of(&read(expected)).unwrap();
    let score = synth::score(&want, &synth::edges_of(&doc).unwrap());
    (doc, want, score)
}
