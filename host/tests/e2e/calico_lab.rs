//! Live capture on the Calico labs (tests/lab/calico.sh): BGP-style routing and VXLAN for
//! real, IPIP as real frames written onto a node's uplink, and an IP reused by a new pod.

use crate::lab::{Lab, assert_paths, edge, has, lab_down};
use crate::support::*;
use serde_json::Value;

/// Captures `action` of calico.sh on a fresh lab in `mode`.
fn capture(mode: &str, tag: &str, action: &str) -> (Lab, Value) {
    Lab::capture("calico.sh", mode, tag, action)
}

#[test]
fn live_capture_on_the_calico_bgp_lab_names_every_real_edge_once() {
    calico_lab_edges("bgp");
}

#[test]
fn live_capture_on_the_calico_vxlan_lab_names_every_real_edge_once() {
    calico_lab_edges("vxlan");
}

/// The lab's traffic (tests/lab/calico.sh traffic) gives exactly these 6 edges.
fn calico_lab_edges(mode: &str) {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    let (lab, doc) = capture(mode, if mode == "bgp" { "cb" } else { "cv" }, "traffic");
    let how = format!("calico:{mode}");
    let edges = doc["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 6, "{doc:#}");

    let (client, server) = ("pod/default/client-a1", "pod/default/server-b1");
    let cross = edge(&doc, client, server, "tcp", None);
    assert_eq!(
        (cross["port"].as_u64(), cross["flows"].as_u64()),
        (Some(8080), Some(1))
    );
    let pk = cross["packets"].as_u64().unwrap();
    assert!((12..=18).contains(&pk), "3 echo rounds: {pk} packets");
    assert!(
        has(cross, &how) && has(cross, "calico:veth-name"),
        "{cross:#}"
    );
    let points = cross["observed_at"].as_array().unwrap();
    assert!(points.len() >= 4, "both veths and both uplinks: {points:?}");

    let udp = edge(&doc, client, server, "udp", None);
    assert_eq!(udp["packets"], 10, "5 datagrams, 5 replies");
    assert!(has(udp, &how));

    let same = edge(&doc, client, "pod/default/peer-a2", "tcp", None);
    assert_eq!(same["port"], 8080);
    assert!(!has(same, &how), "same node: never on the wire");

    let via = edge(&doc, client, server, "tcp", Some("service/default/echo"));
    assert_eq!(via["port"], 8080, "the backend's port after DNAT");
    assert!(has(via, "service:dnat") && has(via, &how), "{via:#}");

    // The node's own ping: from the node IP (bgp) or vxlan.calico's tunnel address.
    let ping = edge(&doc, "node/node-a", server, "icmp", None);
    assert_eq!(ping["packets"], 4, "2 requests, 2 replies");
    if mode == "vxlan" {
        assert!(has(ping, "calico:tunnel-address"), "{ping:#}");
    }

    // natOutgoing: the external host sees node-a; the edge is the pod's.
    let out = edge(&doc, client, "external/192.168.88.100", "tcp", None);
    assert_eq!(out["port"], 9000);
    assert!(has(out, "nat:masquerade"), "{out:#}");
    assert_paths(&doc, &[]);
    lab_down(lab);
}

/// Nodes leave a window at different moments: a cluster's agents drain by their own clocks
/// and schedulers, `cniscope run` one node after another. A window must still hold every
/// node's views of the same moments: a connection made after the boundary, once the client's
/// node has left the window but not yet the server's, would leave the server node's views in
/// this window and the client node's (the only ones that see the service's ClusterIP, before
/// kube-proxy's DNAT) in the next, and this window would count it as a direct connection to
/// the backend. Here each node leaves 400 ms after the one before, so that such connections
/// are many, not one in a few runs.
#[test]
fn connections_made_while_the_nodes_change_windows_keep_their_service() {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    plugin("calico");
    let lab = Lab::build("calico.sh", "cd", "bgp");
    lab.agent_settings(1, "duration_secs = 12");
    let agent = lab.start_agent_with_env(&[("CNISCOPE_TEST_SWAP_PAUSE_MS", "400")]);
    let connections = 40;
    lab.script(&["service-stream", &lab.id, &connections.to_string()]);
    let doc = crate::lab::finish(agent);
    let (client, server) = ("pod/default/client-a1", "pod/default/server-b1");
    let all = edges(&doc);
    let via = edge(&doc, client, server, "tcp", Some("service/default/echo"));
    assert_eq!(via["flows"], connections, "{all:#?}");
    assert_eq!(all.len(), 1, "no direct or door-only pieces: {all:#?}");
}

#[test]
fn a_reused_ip_goes_to_the_pod_that_had_it_at_the_time() {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    // old-a3 talks (1 round), is deleted, new-a4 gets 10.123.10.9 and talks (2 rounds), all
    // within one window. The inventory lists both pods with that IP and the same times, as a
    // lagging dump would: only their veths tell them apart.
    let (lab, doc) = capture("bgp", "cr", "reuse");
    let edges = doc["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "{doc:#}");
    let old = edge(
        &doc,
        "pod/default/old-a3",
        "pod/default/server-b1",
        "tcp",
        None,
    );
    let new = edge(
        &doc,
        "pod/default/new-a4",
        "pod/default/server-b1",
        "tcp",
        None,
    );
    assert_eq!(
        (old["flows"].as_u64(), new["flows"].as_u64()),
        (Some(1), Some(1))
    );
    let (po, pn) = (
        old["packets"].as_u64().unwrap(),
        new["packets"].as_u64().unwrap(),
    );
    assert!(po < pn, "1 round vs 2 rounds: {po} vs {pn}");
    assert!(has(old, "calico:veth-name") && has(new, "calico:veth-name"));
    lab_down(lab);
}

#[test]
fn ipip_frames_on_the_uplink_are_decoded_and_named() {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    // remote-b2 (node b) -> client-a1:7000 in IPIP, 8 packets, and 2 pings from node b's
    // IPIP tunnel address: frames written onto node a's eth0 (tests/lab/inject.py).
    let (lab, doc) = capture("ipip", "ci", "inject-ipip");
    let edges = doc["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "{doc:#}");
    let tcp = edge(
        &doc,
        "pod/default/remote-b2",
        "pod/default/client-a1",
        "tcp",
        None,
    );
    assert_eq!(
        (tcp["port"].as_u64(), tcp["packets"].as_u64()),
        (Some(7000), Some(8))
    );
    assert!(has(tcp, "calico:ipip"), "{tcp:#}");
    let ping = edge(&doc, "node/node-b", "pod/default/client-a1", "icmp", None);
    assert_eq!(ping["packets"], 4);
    assert!(
        has(ping, "calico:ipip") && has(ping, "calico:tunnel-address"),
        "{ping:#}"
    );
    lab_down(lab);
}

#[test]
fn a_real_ipip_capture_replays_as_a_pod_edge() {
    // Zeek's 4in4.pcap: 1.2.3.4 -> 5.6.7.8 carrying 10.0.0.1:30000 -> 10.0.0.2:13000 (UDP).
    // Call the outer ends nodes with IPIP tunnels and the inner ends their pods.
    plugin("calico");
    let dir = tempfile::tempdir().unwrap();
    let inv = lab_inventory(
        dir.path(),
        &[
            "--cni",
            "calico",
            "--calico-tunnel",
            "ipip",
            "--node",
            "n1 1.2.3.4 - 10.0.0.129",
            "--node",
            "n2 5.6.7.8 - 10.0.0.193",
            "--pod",
            "sender n1 10.0.0.1 client",
            "--pod",
            "receiver n2 10.0.0.2 server",
        ],
    );
    let capture = format!("n1/eth0={}", data("pcap/zeek/4in4.pcap").display());
    let doc = topology(&[
        "replay",
        &capture,
        "--inventory",
        inv.to_str().unwrap(),
        "--plugin",
        "calico",
        "--format",
        "json",
    ]);
    assert_eq!(doc["edges"].as_array().unwrap().len(), 1, "{doc:#}");
    let e = edge(
        &doc,
        "pod/default/sender",
        "pod/default/receiver",
        "udp",
        None,
    );
    assert_eq!(e["port"], 13000);
    assert!(has(e, "calico:ipip"), "{e:#}");
}
