//! Live capture on the Cilium-shaped labs (tests/lab/cilium.sh): `lxc` veths, `cilium_host`,
//! a collect-metadata `cilium_vxlan` whose VNI is the sender's security identity (or native
//! routing), no kube-proxy (the socket LB's shape: the client dials the backend), BPF-style
//! masquerade; and a real VXLAN capture on 8472 with VNI 100 replayed through the plugin.

use crate::lab::{Lab, assert_paths, edge, has, lab_down};
use crate::support::*;
use serde_json::Value;

fn points(e: &Value) -> Vec<&str> {
    e["observed_at"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect()
}

#[test]
fn identity_vnis_on_the_cilium_vxlan_lab_name_every_end() {
    cilium_lab_edges("vxlan", "cv");
}

#[test]
fn native_routing_on_the_cilium_lab_gives_the_same_edges() {
    cilium_lab_edges("native", "cn");
}

/// The lab's traffic gives exactly these 6 edges in both modes; in VXLAN mode every
/// cross-node edge carries identities, and server-b1 is named although billing/ledger-b2's
/// lingering endpoint holds its address too.
fn cilium_lab_edges(mode: &str, tag: &str) {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    let (lab, doc) = Lab::capture("cilium.sh", mode, tag, "traffic");
    let vxlan = mode == "vxlan";
    let edges = doc["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 6, "{doc:#}");
    let (client, server) = ("pod/default/client-a1", "pod/default/server-b1");
    let across = |e: &Value| {
        if vxlan {
            assert!(
                has(e, "cilium:vxlan") && !has(e, "cilium:native-routing"),
                "{e:#}"
            );
        } else {
            assert!(
                has(e, "cilium:native-routing") && !has(e, "cilium:vxlan"),
                "{e:#}"
            );
        }
        let p = points(e);
        assert!(p.iter().any(|p| p.starts_with("node-a/eth0")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("node-b/eth0")), "{p:?}");
    };

    // Pod -> pod across nodes, 3 echo rounds, once.
    let cross = edge(&doc, client, server, "tcp", None);
    assert_eq!(
        (cross["port"].as_u64(), cross["flows"].as_u64()),
        (Some(9090), Some(1))
    );
    let pk = cross["packets"].as_u64().unwrap();
    assert!((12..=18).contains(&pk), "3 rounds, counted once: {pk}");
    across(cross);
    assert_eq!(has(cross, "cilium:identity"), vxlan, "{cross:#}");
    assert_eq!(cross["confidence"], 1.0);

    // The socket LB's shape: the client dialled echo's backend; echo alone lists it.
    let lb = edge(&doc, client, server, "tcp", Some("service/default/echo"));
    assert_eq!(lb["port"], 8080);
    assert!(
        has(lb, "cilium:socket-lb") && !has(lb, "service:dnat"),
        "{lb:#}"
    );
    assert_eq!(lb["confidence"], 0.8);
    across(lb);

    let same = edge(&doc, client, "pod/default/peer-a2", "tcp", None);
    assert!(
        !has(same, "cilium:vxlan") && !has(same, "cilium:native-routing"),
        "same node: {same:#}"
    );
    // In VXLAN mode packets reach pods as after bpf_redirect_peer, past their lxc: each lxc
    // saw only its own pod's packets, no place saw both directions, and the connection is
    // still counted whole, once (2 echo rounds: 12 packets, as with a veth seeing both).
    assert_eq!(same["packets"], 12, "{same:#}");
    let lxc_egress = |e: &Value| {
        points(e)
            .iter()
            .any(|p| p.contains("/lxc") && p.ends_with(":egress"))
    };
    assert_eq!(lxc_egress(same), !vxlan, "{same:#}");
    assert_eq!(lxc_egress(cross), !vxlan, "{cross:#}");

    // Masqueraded to node a on the way out, recovered from the pod's own view.
    let out = edge(&doc, client, "external/192.168.88.100", "tcp", None);
    assert!(has(out, "nat:masquerade"), "{out:#}");

    // The node reaches pods from cilium_host; across the tunnel with reserved:host.
    let own = edge(&doc, "node/node-a", client, "icmp", None);
    assert!(has(own, "cilium:cilium-host"), "{own:#}");
    assert_eq!(own["packets"], 4, "2 requests, 2 replies");
    let remote = edge(&doc, "node/node-a", server, "icmp", None);
    assert!(has(remote, "cilium:cilium-host"), "{remote:#}");
    assert_eq!(has(remote, "cilium:identity-node"), vxlan, "{remote:#}");
    across(remote);

    // The inventory says two pods hold 10.0.1.9 (a warning in health); the VNIs said which.
    assert!(
        !doc["edges"].to_string().contains("ledger-b2")
            && !doc["nodes"].to_string().contains("ledger-b2"),
        "the identity named server-b1: {doc:#}"
    );
    assert_paths(&doc, &[]);
    lab_down(lab);
}

#[test]
fn a_real_vxlan_capture_on_8472_with_vni_100_replays_through_the_cilium_plugin() {
    // tcpdump's vxlan_port_8472.pcap: 192.168.203.1 -> 192.168.202.1:8472, VNI 100 (not
    // flannel's 1), carrying 4 pings 192.168.203.3 -> .5 and their replies, and an ARP
    // exchange. 100 is one of the kvstore mode's well-known identities (etcd-operator's pods).
    plugin("cilium");
    let dir = tempfile::tempdir().unwrap();
    let inv = lab_inventory(
        dir.path(),
        &[
            "--cni",
            "cilium",
            "--node",
            "n1 192.168.203.1",
            "--node",
            "n2 192.168.202.1",
            "--cilium-node",
            "n1 192.168.203.1 10.10.1.1 10.10.1.2 192.168.203.0/29",
            "--cilium-node",
            "n2 192.168.202.1 10.10.2.1 10.10.2.2 192.168.203.4/30",
            "--pod",
            "etcd-one n1 192.168.203.3 etcd-operator",
            "--pod",
            "etcd-two n2 192.168.203.5 etcd-operator",
            "--cilium-endpoint",
            "default etcd-one 192.168.203.3 100",
            "--cilium-endpoint",
            "default etcd-two 192.168.203.5 100",
        ],
    );
    let capture = format!(
        "n1/eth0={}",
        data("pcap/tcpdump/vxlan_port_8472.pcap").display()
    );
    let doc = topology(&[
        "replay",
        &capture,
        "--inventory",
        inv.to_str().unwrap(),
        "--plugin",
        "cilium",
        "--format",
        "json",
    ]);
    // The ping alone: the ARP exchange inside the tunnel is link control, like ARP bare
    // (counted in the replay's not-IP frames, no edge).
    let edges = doc["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{doc:#}");
    let ping = edge(
        &doc,
        "pod/default/etcd-one",
        "pod/default/etcd-two",
        "icmp",
        None,
    );
    assert_eq!(ping["packets"], 8, "4 requests, 4 replies, once");
    for e in [
        "cilium:vxlan",
        "cilium:identity",
        "cilium:identity-well-known",
    ] {
        assert!(has(ping, e), "{e}: {ping:#}");
    }
}
