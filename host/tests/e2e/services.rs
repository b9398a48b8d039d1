//! Services and NAT live on two CNIs (issue #7): `tests/lab/<lab>.sh services` makes one
//! connection per shape of `tests/lab/common.sh`'s lab_services, through kube-proxy's own
//! iptables rules, while the agent captures with the CNI's plugin. The same shapes must give
//! the same edges on both CNIs: the mechanism is the SDK's, not the plugin's.

use crate::lab::{Lab, assert_paths, edge, has, lab_down};
use crate::support::root_or_skip;
use serde_json::Value;

#[test]
fn every_service_shape_on_the_flannel_vxlan_lab_is_one_right_edge() {
    service_edges(
        "flannel.sh",
        "vxlan",
        "sf",
        "192.168.77.100",
        "flannel:vxlan",
    );
}

#[test]
fn every_service_shape_on_the_calico_bgp_lab_is_one_right_edge() {
    service_edges("calico.sh", "bgp", "sc", "192.168.88.100", "calico:bgp");
}

/// Packets of a TCP echo connection of `rounds` round trips, counted once: handshake,
/// rounds x (data, ack, echo, ack) with some ACKs coalesced, teardown.
fn assert_counted_once(e: &Value, rounds: u64) {
    assert_eq!(e["flows"], 1, "one connection: {e:#}");
    let pk = e["packets"].as_u64().unwrap();
    let (lo, hi) = (2 * rounds + 6, 4 * rounds + 6);
    assert!(
        (lo..=hi).contains(&pk),
        "{rounds} rounds: {pk} packets, expected {lo}..={hi}, so not counted twice: {e:#}"
    );
}

fn service_edges(script: &'static str, mode: &str, tag: &str, external_ip: &str, how: &str) {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    let (lab, doc) = Lab::capture(script, mode, tag, "services");
    let edges = doc["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 9, "exactly one edge per shape: {doc:#}");
    let (client, server, peer) = (
        "pod/default/client-a1",
        "pod/default/server-b1",
        "pod/default/peer-a2",
    );
    let external = format!("external/{external_ip}");
    let via = |src: &str, dst: &str, svc: &str| -> Value {
        edge(
            &doc,
            src,
            dst,
            "tcp",
            Some(&format!("service/default/{svc}")),
        )
        .clone()
    };

    // ClusterIP, port 80 -> targetPort 8080: the edge carries the backend's port.
    let echo = via(client, server, "echo");
    assert_eq!(echo["port"], 8080);
    assert!(has(&echo, "service:dnat") && has(&echo, how), "{echo:#}");
    assert!(!has(&echo, "nat:snat-recovered"), "no SNAT here: {echo:#}");
    assert_counted_once(&echo, 3);

    // A second service over the same pod stays its own edge.
    let alt = via(client, server, "echo-alt");
    assert_eq!(alt["port"], 8080);
    assert!(has(&alt, "service:dnat"), "{alt:#}");
    assert_counted_once(&alt, 2);

    // NodePort, externalTrafficPolicy Cluster: node a DNATs to server-b1 on node b and SNATs
    // to itself; server-b1 only ever sees node a, yet the client is the external host.
    let np = via(&external, server, "web-np");
    assert_eq!(np["port"], 8080);
    for ev in [
        "service:nodeport",
        "service:dnat",
        "nat:snat-recovered",
        how,
    ] {
        assert!(has(&np, ev), "{ev}: {np:#}");
    }
    assert_counted_once(&np, 2);

    // NodePort, Local: node b keeps the client's address and serves from its own pod.
    let local = via(&external, server, "web-local");
    assert_eq!(local["port"], 8080);
    assert!(has(&local, "service:nodeport"), "{local:#}");
    assert!(!has(&local, "nat:snat-recovered"), "no SNAT: {local:#}");
    assert_counted_once(&local, 2);

    // The load balancer's IP, routed to node a, Cluster policy: DNAT + SNAT like the NodePort.
    let lb = via(&external, server, "web-lb");
    assert_eq!(lb["port"], 8080, "the LB's port 80 -> targetPort 8080");
    assert!(
        has(&lb, "service:external-ip") && has(&lb, "nat:snat-recovered"),
        "{lb:#}"
    );
    assert_counted_once(&lb, 1);

    // Hairpin: peer-a2 reaches itself through its service; kube-proxy masquerades it to the
    // node, and both views are on peer-a2's own veth.
    let hairpin = via(peer, peer, "peer");
    assert_eq!(hairpin["port"], 8080);
    assert!(
        has(&hairpin, "nat:snat-recovered") && has(&hairpin, "service:dnat"),
        "{hairpin:#}"
    );
    assert_counted_once(&hairpin, 2);

    // Headless: no DNAT, the client dials the pod; the EndpointSlice names the service.
    let headless = via(client, server, "echo-headless");
    assert_eq!(headless["port"], 7000);
    assert!(has(&headless, "service:headless"), "{headless:#}");

    // No endpoints: kube-proxy REJECTs; the edge ends at the service.
    let empty = edge(
        &doc,
        client,
        "service/default/empty",
        "tcp",
        Some("service/default/empty"),
    );
    assert_eq!(empty["port"], 80);
    assert!(has(empty, "no-backend-seen"), "{empty:#}");
    // Its port unreachable quotes the SYN: refused by the client's node, the requests last
    // seen leaving the client pod. Every other shape got through.
    assert_eq!(empty["path"]["verdict"], "rejected", "{empty:#}");
    assert_eq!(empty["path"]["rejected_by"], "node/node-a", "{empty:#}");
    assert_eq!(
        empty["path"]["last_seen"], "node-a/<pod veth>:ingress",
        "{empty:#}"
    );
    assert_paths(&doc, &[(client, "service/default/empty", "rejected")]);
    // kube-proxy's REJECT answers and drops the SYN: the kernel says netfilter.
    assert!(
        empty["path"]["drops"]["NETFILTER_DROP"].as_u64() >= Some(1),
        "{empty:#}"
    );

    // UDP through a ClusterIP (a cluster's DNS): 3 datagrams and 3 replies, port 53 -> 5353.
    let dns = edge(&doc, client, server, "udp", Some("service/default/dns"));
    assert_eq!(dns["port"], 5353);
    assert_eq!(dns["packets"], 6, "{dns:#}");
    assert!(has(dns, "service:dnat"), "{dns:#}");

    // The stitcher's counters reach the health section; nothing was evicted early here.
    let plugin = script.trim_end_matches(".sh");
    let counters = &doc["health"]["plugins"][plugin]["counters"];
    assert_eq!(counters["stitch.evicted"], 0, "{:#}", doc["health"]);
    assert!(
        counters["stitch.time_joins"].is_u64(),
        "{:#}",
        doc["health"]
    );
    lab_down(lab);
}
