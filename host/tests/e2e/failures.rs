//! Labs broken the way real clusters break (`tests/lab/flannel.sh`'s fault-* backends), each
//! captured live: the broken connection's path verdict, where it was last seen and where it
//! should have been next, the reason the kernel gave when it dropped its packets (the
//! `kfree_skb` program), the healthy connections beside it `ok`, and `cniscope diagnose`
//! saying it in one line.

use crate::lab::{Lab, cniscope, edge, lab_down};
use crate::support::root_or_skip;
use serde_json::Value;

const CLIENT: &str = "pod/default/client-a1";
const SERVER: &str = "pod/default/server-b1";
const PEER: &str = "pod/default/peer-a2";

/// The kernel's drops of an edge's packets, by reason.
fn drops(e: &Value) -> Vec<(String, u64)> {
    e["path"]["drops"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

/// `node`'s drops by `reason` in `health.kernel_drops`.
fn node_drops(doc: &Value, node: &str, reason: &str) -> u64 {
    doc["health"]["kernel_drops"]["nodes"][node][reason]
        .as_u64()
        .unwrap_or(0)
}

fn path(e: &Value) -> (&str, &str, &str) {
    let p = &e["path"];
    (
        p["verdict"].as_str().unwrap_or_default(),
        p["last_seen"].as_str().unwrap_or_default(),
        p["missing_at"].as_str().unwrap_or_default(),
    )
}

/// `cniscope diagnose` over the run's document: one sentence per broken edge, each with
/// `expect` in it, and the summary line.
fn diagnosis(lab: &Lab, doc: &Value, expect: &[&str]) {
    let text = String::from_utf8(cniscope_diagnose(lab, doc)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), expect.len() + 1, "{text}");
    for (line, want) in lines.iter().zip(expect) {
        assert!(line.contains(want), "{line:?} lacks {want:?}");
    }
    assert!(
        lines.last().unwrap().contains("judged edges not ok"),
        "{text}"
    );
}

/// `cniscope diagnose` over the document: its output.
fn cniscope_diagnose(lab: &Lab, doc: &Value) -> Vec<u8> {
    let file = lab.dir().join("topology.json");
    std::fs::write(&file, serde_json::to_vec(doc).unwrap()).unwrap();
    let out = cniscope(&["diagnose", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn an_iptables_drop_on_the_servers_node_is_lost_after_its_tunnel_device() {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    let (lab, doc) = Lab::capture("flannel.sh", "fault-drop", "fd", "traffic");
    let dropped = edge(&doc, CLIENT, SERVER, "tcp", None);
    assert_eq!(
        path(dropped),
        (
            "lost",
            "node-b/flannel.1:ingress",
            "node-b/<pod veth>:egress"
        ),
        "{dropped:#}"
    );
    assert_eq!(dropped["path"]["verdicts"]["lost"], 1, "one connection");
    // The kernel said why: netfilter, for the SYN and each retransmission of it.
    let reasons = drops(dropped);
    assert_eq!(reasons.len(), 1, "{dropped:#}");
    assert_eq!(reasons[0].0, "NETFILTER_DROP", "{dropped:#}");
    assert!(reasons[0].1 >= 1, "{dropped:#}");
    assert!(node_drops(&doc, "node-b", "NETFILTER_DROP") >= reasons[0].1);
    assert_eq!(node_drops(&doc, "node-a", "NETFILTER_DROP"), 0);
    // The same pod's UDP and a same-node connection got through, with nothing dropped.
    for other in [
        edge(&doc, CLIENT, SERVER, "udp", None),
        edge(&doc, CLIENT, PEER, "tcp", None),
    ] {
        assert_eq!(path(other).0, "ok", "{other:#}");
        assert!(drops(other).is_empty(), "{other:#}");
    }
    diagnosis(
        &lab,
        &doc,
        &[
            "client-a1 -> pod/default/server-b1 tcp/8080: LOST: last seen at node-b/flannel.1:ingress",
        ],
    );
    let text = String::from_utf8(cniscope_diagnose(&lab, &doc)).unwrap();
    assert!(text.contains("the kernel dropped NETFILTER_DROP"), "{text}");
    lab_down(lab);
}

#[test]
fn a_missing_route_on_the_clients_node_is_lost_before_its_tunnel_device() {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    let (lab, doc) = Lab::capture("flannel.sh", "fault-no-route", "fr", "traffic");
    let unrouted = edge(&doc, CLIENT, SERVER, "tcp", None);
    assert_eq!(
        path(unrouted),
        (
            "lost",
            "node-a/<pod veth>:ingress",
            "node-a/flannel.1:egress"
        ),
        "{unrouted:#}"
    );
    assert_eq!(path(edge(&doc, CLIENT, PEER, "tcp", None)).0, "ok");
    // The kernel's reason: no route for a packet it received to forward (named
    // IP_INNOROUTES on kernels since 5.18).
    let reasons = drops(unrouted);
    assert!(
        reasons
            .iter()
            .any(|(r, n)| r.contains("NOROUTES") && *n >= 1),
        "{unrouted:#}"
    );
    diagnosis(
        &lab,
        &doc,
        &["LOST: last seen at node-a/<pod veth>:ingress"],
    );
    lab_down(lab);
}

#[test]
fn an_mtu_black_hole_loses_a_large_transfer_between_the_uplinks_and_spares_small_ones() {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    let (lab, doc) = Lab::capture("flannel.sh", "fault-mtu", "fm", "traffic");
    // The small echo got through.
    assert_eq!(path(edge(&doc, CLIENT, SERVER, "tcp", None)).0, "ok");
    assert_eq!(path(edge(&doc, CLIENT, PEER, "tcp", None)).0, "ok");
    // The large transfer (to 7000, the lab's headless service's port) lost its full-size
    // packets on the underlay: last seen leaving one node's uplink, missing on the other's.
    let bulk = edge(
        &doc,
        CLIENT,
        SERVER,
        "tcp",
        Some("service/default/echo-headless"),
    );
    let (verdict, last, missing) = path(bulk);
    assert_eq!(verdict, "lost", "{bulk:#}");
    let node = |p: &str| p.split('/').next().unwrap().to_string();
    assert!(last.ends_with("/<uplink>:egress"), "{bulk:#}");
    assert!(missing.ends_with("/<uplink>:ingress"), "{bulk:#}");
    assert_ne!(node(last), node(missing), "{bulk:#}");
    // The kernel freed the full-size frames the underlay port could not carry: too big.
    let reasons = drops(bulk);
    assert!(
        reasons.iter().any(|(r, n)| r == "PKT_TOO_BIG" && *n >= 1),
        "{bulk:#}"
    );
    lab_down(lab);
}

/// Seed 003's own failure: the pod VM's vxlan0 with a MAC of its own while the worker holds
/// the worker-side eth0's for the pod. The node's pings cross the peer pod's tunnel and reach
/// vxlan0, whose kernel throws them away as addressed to another host; fixed the article's
/// way (vxlan0 takes eth0's MAC), the same pings are answered.
#[test]
fn the_seeds_mac_mismatch_is_lost_at_the_pod_vms_vxlan0_until_fixed() {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    crate::support::plugin("kata");
    let (lab, doc) = Lab::capture("flannel.sh", "fault-kata-mac", "km", "traffic");
    let web = "pod/default/web-vm";
    let ping = edge(&doc, "node/node-b", web, "icmp", None);
    assert_eq!(
        path(ping),
        ("lost", "podvm-web-vm/vxlan0:ingress", ""),
        "{ping:#}"
    );
    assert_eq!(drops(ping), [("OTHERHOST".to_string(), 3)], "{ping:#}");
    assert_eq!(node_drops(&doc, "podvm-web-vm", "OTHERHOST"), 3);
    // The CNI's own traffic beside it is fine.
    assert_eq!(path(edge(&doc, CLIENT, SERVER, "tcp", None)).0, "ok");
    diagnosis(
        &lab,
        &doc,
        &[
            "node/node-b -> pod/default/web-vm icmp/0: LOST: last seen at podvm-web-vm/vxlan0:ingress, never delivered beyond it; the kernel dropped OTHERHOST x3",
        ],
    );

    // The fix: the same pings, answered; nothing dropped.
    lab.script(&["fix", &lab.id]);
    std::fs::remove_file(lab.dir().join("topology.json")).unwrap();
    let agent = lab.start_agent();
    lab.script(&["traffic", &lab.id]);
    let fixed = crate::lab::finish(agent);
    let ping = edge(&fixed, "node/node-b", web, "icmp", None);
    assert_eq!(path(ping).0, "ok", "{ping:#}");
    assert_eq!(ping["packets"], 6, "3 pings, 3 replies: {ping:#}");
    assert!(drops(ping).is_empty(), "{ping:#}");
    lab_down(lab);
}
