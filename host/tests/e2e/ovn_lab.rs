//! Live capture on the OVN-shaped labs (tests/lab/ovn.sh): pods, management ports and
//! container-ID veths as OVN-Kubernetes builds a node, the lab's own pod traffic carried as
//! real Geneve (with OVN's option) or OpenShift-SDN VXLAN frames on the uplinks, and the real
//! Geneve captures replayed through the plugin.

use crate::lab::{Lab, assert_paths, edge, has, lab_down};
use crate::support::*;
use serde_json::Value;

fn capture(mode: &str, tag: &str) -> (Lab, Value) {
    Lab::capture("ovn.sh", mode, tag, "traffic")
}

#[test]
fn geneve_on_the_ovn_lab_is_named_by_port_keys() {
    ovn_lab_edges("ovn", "on");
}

#[test]
fn geneve_on_the_ovn_lab_without_the_southbound_is_named_by_addresses() {
    ovn_lab_edges("ovn-ip", "oi");
}

/// The lab's traffic gives exactly these 5 edges, in both modes; with the southbound tables
/// the pods are also named by their logical port keys (`ovn:port-key`).
fn ovn_lab_edges(mode: &str, tag: &str) {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    let (lab, doc) = capture(mode, tag);
    let by_keys = mode == "ovn";
    let edges = doc["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 5, "{doc:#}");
    let (client, server) = ("pod/default/client-a1", "pod/default/server-b1");

    let cross = edge(&doc, client, server, "tcp", None);
    assert_eq!(
        (cross["port"].as_u64(), cross["flows"].as_u64()),
        (Some(8080), Some(1))
    );
    let pk = cross["packets"].as_u64().unwrap();
    assert!(
        (12..=18).contains(&pk),
        "3 echo rounds, counted once: {pk} packets"
    );
    assert!(has(cross, "ovn:geneve"), "{cross:#}");
    assert_eq!(has(cross, "ovn:port-key"), by_keys, "{cross:#}");
    let points: Vec<&str> = cross["observed_at"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        points.iter().any(|p| p.starts_with("node-a/eth0")),
        "{points:?}"
    );
    assert!(
        points.iter().any(|p| p.starts_with("node-b/eth0")),
        "{points:?}"
    );

    // The pod's veth shows the ClusterIP, Geneve the backend: one edge via the service.
    let via = edge(&doc, client, server, "tcp", Some("service/default/echo"));
    assert_eq!(via["port"], 8080);
    assert!(
        has(via, "service:dnat") && has(via, "ovn:geneve"),
        "{via:#}"
    );
    assert_eq!(has(via, "ovn:port-key"), by_keys, "{via:#}");

    let same = edge(&doc, client, "pod/default/peer-a2", "tcp", None);
    assert!(!has(same, "ovn:geneve"), "same node: never tunnelled");

    // Seed 003: the node pings its own pod, which sees the management port's .2.
    let mp = edge(&doc, "node/node-a", client, "icmp", None);
    assert_eq!(mp["packets"], 4, "2 requests, 2 replies");
    assert!(has(mp, "ovn:management-port"), "{mp:#}");
    // ... and a remote pod, through Geneve.
    let remote = edge(&doc, "node/node-a", server, "icmp", None);
    assert!(
        has(remote, "ovn:management-port") && has(remote, "ovn:geneve"),
        "{remote:#}"
    );
    assert_paths(&doc, &[]);
    lab_down(lab);
}

#[test]
fn openshift_sdn_vxlan_is_named_to_the_projects_by_netid() {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    let (lab, doc) = capture("openshift-sdn", "os");
    let edges = doc["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 3, "{doc:#}");
    // server-b1's address is also billing/ledger-b2's in the inventory; the VNI (NETID 4242,
    // project shop) says which.
    let cross = edge(
        &doc,
        "pod/shop/client-a1",
        "pod/shop/server-b1",
        "tcp",
        None,
    );
    assert!(
        has(cross, "openshift-sdn:vxlan") && has(cross, "openshift-sdn:netid"),
        "{cross:#}"
    );
    assert_eq!(cross["flows"], 1);
    edge(&doc, "pod/shop/client-a1", "pod/shop/peer-a2", "tcp", None);
    let tun0 = edge(&doc, "node/node-a", "pod/shop/client-a1", "icmp", None);
    assert!(has(tun0, "openshift-sdn:tun0"), "{tun0:#}");
    assert_paths(&doc, &[]);
    lab_down(lab);
}

#[test]
fn real_geneve_captures_replay_through_the_ovn_plugin() {
    // tcpdump's geneve.pcap: hosts 20.0.0.1 and 20.0.0.2 carry 30.0.0.1 <-> 30.0.0.2 (ping,
    // SSH) in Geneve, one direction with an option (class 0, type 0x80), the other without.
    plugin("ovn");
    let dir = tempfile::tempdir().unwrap();
    let inv = lab_inventory(
        dir.path(),
        &[
            "--cni",
            "ovn",
            "--node",
            "n1 20.0.0.1 30.0.0.0/24 100.64.0.2 100.88.0.2",
            "--node",
            "n2 20.0.0.2 30.1.0.0/24 100.64.0.3 100.88.0.3",
            "--pod",
            "one n1 30.0.0.1 a",
            "--pod",
            "two n2 30.0.0.2 b",
        ],
    );
    let capture = format!("n1/eth0={}", data("pcap/tcpdump/geneve.pcap").display());
    let doc = topology(&[
        "replay",
        &capture,
        "--inventory",
        inv.to_str().unwrap(),
        "--plugin",
        "ovn",
        "--format",
        "json",
    ]);
    let edges = doc["edges"].as_array().unwrap();
    assert!(!edges.is_empty(), "{doc:#}");
    for e in edges {
        assert!(has(e, "ovn:geneve"), "{e:#}");
        assert!(
            e["src"].as_str().unwrap().starts_with("pod/default/")
                && e["dst"].as_str().unwrap().starts_with("pod/default/"),
            "{e:#}"
        );
    }
    // The SSH connection, client 30.0.0.2 (its SYN) to 30.0.0.1:22, once.
    let ssh = edge(&doc, "pod/default/two", "pod/default/one", "tcp", None);
    assert_eq!(
        (ssh["port"].as_u64(), ssh["flows"].as_u64()),
        (Some(22), Some(1))
    );
}
