//! Composition on the Kata peer-pods lab (tests/lab/flannel.sh kata): a pod VM reached through
//! a VXLAN tunnel (UDP 4789, VNI 555005) from its worker-side pod namespace, on top of
//! Flannel's VXLAN, with the flannel and kata plugins both loaded: one edge per connection,
//! named by flannel, with the peer pod's tunnel and VM added by kata.

use crate::lab::{Lab, assert_paths, edge, has, lab_down};
use crate::support::*;

#[test]
fn a_peer_pods_connections_are_one_edge_each_with_both_plugins_knowledge() {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    plugin("kata");
    let (lab, doc) = Lab::capture("flannel.sh", "kata", "kt", "traffic");
    let web = "pod/default/web-vm";

    // Across nodes: flannel's VXLAN to node b, then the peer pod's tunnel to its VM.
    let cross = edge(&doc, "pod/default/client-a1", web, "tcp", None);
    assert_eq!(
        (cross["port"].as_u64(), cross["flows"].as_u64()),
        (Some(8080), Some(1)),
        "{cross:#}"
    );
    let pk = cross["packets"].as_u64().unwrap();
    assert!(
        (12..=18).contains(&pk),
        "3 echo rounds counted once (not once per plugin, not twice on node b's uplink): {pk}"
    );
    assert!(
        has(cross, "flannel:vxlan") && has(cross, "kata:peer-pod"),
        "{cross:#}"
    );
    let points: Vec<&str> = cross["observed_at"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(points.contains(&"peer-pod-vm/192.168.77.50"), "{points:?}");
    assert!(
        points.iter().any(|p| p.starts_with("node-b/eth0")),
        "{points:?}"
    );

    // From the peer pod's own node: through the tunnel only.
    let same = edge(&doc, "pod/default/server-b1", web, "icmp", None);
    assert_eq!(same["packets"], 4, "2 requests, 2 replies");
    assert!(
        has(same, "kata:peer-pod") && !has(same, "flannel:vxlan"),
        "{same:#}"
    );

    // Never an edge to the VM: its address is a point, not an endpoint.
    let vm_edges: Vec<_> = doc["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.to_string().contains("external/192.168.77.50"))
        .collect();
    assert!(vm_edges.is_empty(), "{vm_edges:#?}");

    // The lab's own Flannel edges are untouched by the second plugin.
    let plain = edge(
        &doc,
        "pod/default/client-a1",
        "pod/default/server-b1",
        "tcp",
        None,
    );
    assert_eq!(plain["flows"], 1);
    assert!(!has(plain, "kata:peer-pod"), "{plain:#}");

    // Each composed connection is counted in kata's health; flannel's flows were kept.
    let plugins = &doc["health"]["plugins"];
    assert!(
        plugins["kata"]["flows_composed"].as_u64().unwrap_or(0) >= 1,
        "{plugins:#}"
    );
    assert!(
        plugins["flannel"].get("flows_composed").is_none(),
        "{plugins:#}"
    );
    assert_paths(&doc, &[]);
    lab_down(lab);
}
