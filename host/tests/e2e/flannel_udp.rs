//! Flannel's obsolete udp backend, which the kernel here cannot build (flanneld's TUN device
//! and userspace relay): a connection in constructed frames, as the client's veth and the
//! node's uplink see it, replayed through the built flannel.wasm.

use crate::support::*;

const CLIENT: [u8; 4] = [10, 244, 0, 2];
const SERVER: [u8; 4] = [10, 244, 1, 2];
const NODE_A: [u8; 4] = [192, 168, 77, 11];
const NODE_B: [u8; 4] = [192, 168, 77, 12];

/// One TCP connection client-a1:41000 -> server-b1:8080: handshake, one request and reply,
/// teardown. Returns the IP packets in order, the client's first.
pub fn connection() -> Vec<(bool, Vec<u8>)> {
    let c = |seq, flags, payload: &[u8]| {
        (
            true,
            ipv4_tcp(CLIENT, SERVER, (41000, 8080), seq, flags, payload),
        )
    };
    let s = |seq, flags, payload: &[u8]| {
        (
            false,
            ipv4_tcp(SERVER, CLIENT, (8080, 41000), seq, flags, payload),
        )
    };
    vec![
        c(1000, "S", b""),
        s(5000, "SA", b""),
        c(1001, "A", b""),
        c(1001, "PA", b"ping"),
        s(5001, "PA", b"pong"),
        c(1005, "FA", b""),
        s(5005, "FA", b""),
        c(1006, "A", b""),
    ]
}

/// The same connection at the client's veth (plain frames) and on node a's uplink (in UDP).
pub fn frames() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (pod_mac, cni0_mac) = ([0x0a, 0x58, 10, 244, 0, 2], [0x0a, 0x58, 10, 244, 0, 1]);
    let mut veth = Vec::new();
    let mut uplink = Vec::new();
    for (from_client, ip) in connection() {
        if from_client {
            veth.push(ethernet(pod_mac, cni0_mac, &ip));
            uplink.push(flannel_udp_frame(NODE_A, NODE_B, &ip));
        } else {
            veth.push(ethernet(cni0_mac, pod_mac, &ip));
            uplink.push(flannel_udp_frame(NODE_B, NODE_A, &ip));
        }
    }
    (veth, uplink)
}

#[test]
fn udp_backend_connection_is_one_pod_edge_named_through_the_tunnel() {
    plugin("flannel");
    let dir = tempfile::tempdir().unwrap();
    let (veth, uplink) = frames();
    write_pcap(&dir.path().join("veth.pcap"), 1_000, &veth);
    // The uplink sees each packet a few microseconds later; 1 ms apart is close enough.
    write_pcap(&dir.path().join("eth0.pcap"), 1_000, &uplink);
    let inv = lab_inventory(
        dir.path(),
        &[
            "--backend",
            "udp",
            "--node",
            "node-a 192.168.77.11 10.244.0.0/24 -",
            "--node",
            "node-b 192.168.77.12 10.244.1.0/24 -",
            "--pod",
            "client-a1 node-a 10.244.0.2 client",
            "--pod",
            "server-b1 node-b 10.244.1.2 server",
        ],
    );
    let veth_arg = format!(
        "node-a/vethclienta1={}",
        dir.path().join("veth.pcap").display()
    );
    let eth0_arg = format!("node-a/eth0={}", dir.path().join("eth0.pcap").display());
    let doc = topology(&[
        "replay",
        &veth_arg,
        &eth0_arg,
        "--inventory",
        inv.to_str().unwrap(),
        "--config",
        "examples/cniscope.toml",
        "--format",
        "json",
    ]);
    let edges = doc["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{doc:#}");
    let e = &edges[0];
    assert_eq!(e["src"], "pod/default/client-a1");
    assert_eq!(e["dst"], "pod/default/server-b1");
    assert_eq!(e["port"], 8080);
    assert_eq!(e["packets"], 8, "counted once, not once per point");
    assert_eq!(e["flows"], 1);
    let evidence: Vec<&str> = e["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(evidence.contains(&"flannel:udp"), "{evidence:?}");
    let points: Vec<&str> = e["observed_at"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        points.iter().any(|p| p.starts_with("node-a/eth0")),
        "{points:?}"
    );
}
