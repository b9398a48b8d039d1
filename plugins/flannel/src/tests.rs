//! Each flannel rule on hand-built batches, run natively through the SDK's test kit.

use super::*;
use cniscope_sdk::batch::fp;
use cniscope_sdk::testkit::{self, Harness, Row};
use cniscope_sdk::{NewPod, NodeInfo, ServiceInfo, ServicePort};

fn ip(s: &str) -> Ip {
    s.parse().unwrap()
}

fn node(name: &str, addr: &str, cidr: &str, mac: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        addresses: vec![ip(addr)],
        pod_cidrs: vec![cidr.into()],
        annotations: vec![
            (cluster::PUBLIC_IP.into(), addr.into()),
            (cluster::BACKEND_TYPE.into(), "vxlan".into()),
            (
                cluster::BACKEND_DATA.into(),
                format!("{{\"VNI\":1,\"VtepMAC\":\"{mac}\"}}"),
            ),
        ],
        labels: vec![],
    }
}

fn pod(name: &str, node: &str, addr: &str) -> NewPod {
    testkit::pod("default", name, node, addr)
}

fn inventory() -> Inventory {
    Inventory {
        nodes: vec![
            node("n1", "172.31.0.11", "10.50.1.0/24", "0a:00:00:00:00:01"),
            node("n2", "172.31.0.12", "10.50.2.0/24", "0a:00:00:00:00:02"),
        ],
        pods: [
            pod("client", "n1", "10.50.1.4"),
            pod("server", "n2", "10.50.2.9"),
        ]
        .into_iter()
        .collect(),
        services: vec![ServiceInfo {
            namespace: "default".into(),
            name: "api".into(),
            type_: "ClusterIP".into(),
            cluster_ips: vec![ip("10.60.0.20")],
            external_ips: vec![],
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: 6,
                port: 80,
                target_port: 9000,
                node_port: 0,
            }],
            external_traffic_policy: "Cluster".into(),
        }],
        endpoint_slices: vec![],
        objects: vec![],
    }
}

fn harness() -> Harness<Flannel> {
    Harness::<Flannel>::new().inventory(inventory()).unwrap()
}

fn points(b: BatchBuilder) -> BatchBuilder {
    b.point("n1", "veth11", IfaceKind::PodVeth, Direction::Ingress) // 0
        .point("n1", "eth0", IfaceKind::Uplink, Direction::Egress) // 1
        .point("n2", "eth0", IfaceKind::Uplink, Direction::Ingress) // 2
        .point("n2", "veth22", IfaceKind::PodVeth, Direction::Egress) // 3
        .point("n1", "veth11", IfaceKind::PodVeth, Direction::Egress) // 4
}

#[test]
fn cross_node_vxlan_flow_is_one_edge_with_pods_on_both_ends() {
    let syn = |at| {
        Row::flow(6, "10.50.1.4", 41000, "10.50.2.9", 9000)
            .at(at)
            .fingerprint(fp::TCP_SYN_ISN, 42)
            .counters(6, 600)
    };
    let b = points(BatchBuilder::new())
        .row(syn(0))
        .row(
            syn(1)
                .vxlan(1, "172.31.0.11", "172.31.0.12", 8472)
                .macs(0x0a0000000001, 0x0a0000000002),
        )
        .row(
            syn(2)
                .vxlan(1, "172.31.0.11", "172.31.0.12", 8472)
                .macs(0x0a0000000001, 0x0a0000000002),
        )
        .row(syn(3))
        .row(
            Row::flow(6, "10.50.2.9", 9000, "10.50.1.4", 41000)
                .at(4)
                .fingerprint(fp::TCP_SYNACK_ISN, 7)
                .counters(5, 2000),
        )
        .build();
    let flows = harness().run(&b).unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!((f.client.role, f.client.ip), (Role::Pod, ip("10.50.1.4")));
    assert_eq!(
        (f.server.role, f.server.ip, f.server_port),
        (Role::Pod, ip("10.50.2.9"), 9000)
    );
    assert_eq!(
        f.packets, 11,
        "counted at the client's veth, both directions, once"
    );
    assert!(f.evidence.contains(&"flannel:vxlan".to_string()));
    assert!(!f.evidence.contains(&"flannel:unknown-vtep".to_string()));
    assert_eq!(f.observed_at.len(), 5);
}

#[test]
fn gateway_source_is_recovered_by_fingerprint_through_service_and_snat() {
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(6, "10.50.1.4", 41000, "10.60.0.20", 80)
                .at(0)
                .fingerprint(fp::TCP_SYN_ISN, 99),
        )
        .row(
            Row::flow(6, "10.50.1.0", 41000, "10.50.2.9", 9000)
                .at(3)
                .fingerprint(fp::TCP_SYN_ISN, 99),
        )
        .build();
    let flows = harness().run(&b).unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!(f.client.ip, ip("10.50.1.4"));
    assert_eq!((f.server.ip, f.server_port), (ip("10.50.2.9"), 9000));
    assert_eq!(f.service.as_ref().map(|s| s.ip), Some(ip("10.60.0.20")));
    for e in ["service:dnat", "nat:snat-recovered"] {
        assert!(
            f.evidence.contains(&e.to_string()),
            "{e} in {:?}",
            f.evidence
        );
    }
}

#[test]
fn unmatched_gateway_source_is_the_node_never_a_pod() {
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(1, "10.50.1.0", 8, "10.50.2.9", 0)
                .at(3)
                .fingerprint(fp::IPV4_ID, 0x1234_0040),
        )
        .build();
    let f = &harness().run(&b).unwrap()[0];
    assert_eq!((f.client.role, f.client.name.as_str()), (Role::Node, "n1"));
    assert!(f.evidence.contains(&"gateway-unresolved".to_string()));
    assert!(f.confidence < 1.0);
}

#[test]
fn masqueraded_egress_is_reported_from_the_pod() {
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(6, "10.50.1.4", 41000, "198.51.100.7", 443)
                .at(0)
                .fingerprint(fp::TCP_SYN_ISN, 5),
        )
        .row(
            Row::flow(6, "172.31.0.11", 41000, "198.51.100.7", 443)
                .at(1)
                .fingerprint(fp::TCP_SYN_ISN, 5),
        )
        .build();
    let f = &harness().run(&b).unwrap()[0];
    assert_eq!((f.client.role, f.client.ip), (Role::Pod, ip("10.50.1.4")));
    assert_eq!(
        (f.server.role, f.server.ip),
        (Role::External, ip("198.51.100.7"))
    );
    assert!(f.evidence.contains(&"nat:masquerade".to_string()));
}

#[test]
fn unknown_vtep_lowers_confidence() {
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(17, "10.50.1.4", 5000, "10.50.2.9", 53)
                .at(2)
                .vxlan(1, "192.0.2.99", "172.31.0.12", 8472),
        )
        .build();
    let f = &harness().run(&b).unwrap()[0];
    assert!(f.evidence.contains(&"flannel:unknown-vtep".to_string()));
}

#[test]
fn options_are_validated_by_name() {
    let e = Harness::<Flannel>::new()
        .configure(r#"{"vni": "x"}"#)
        .err()
        .unwrap();
    assert_eq!(e.field, "vni");
    let e = Harness::<Flannel>::new()
        .configure(r#"{"netwrk": "10.0.0.0/8"}"#)
        .err()
        .unwrap();
    assert_eq!(e.field, "netwrk");
    let e = Harness::<Flannel>::new()
        .configure(r#"{"network": "10.0.0.0/99"}"#)
        .err()
        .unwrap();
    assert_eq!(e.field, "network");
}

fn has(f: &LogicalFlow, evidence: &str) -> bool {
    f.evidence.iter().any(|e| e == evidence)
}

/// host-gw: pod packets straight on the uplinks, no tunnel.
fn host_gw_points(b: BatchBuilder) -> BatchBuilder {
    b.point("n1", "veth11", IfaceKind::PodVeth, Direction::Ingress) // 0
        .point("n1", "eth0", IfaceKind::Uplink, Direction::Egress) // 1
        .point("n2", "eth0", IfaceKind::Uplink, Direction::Ingress) // 2
        .point("n2", "veth22", IfaceKind::PodVeth, Direction::Egress) // 3
}

#[test]
fn host_gw_flow_is_one_edge_seen_unencapsulated_on_both_uplinks() {
    let seg = |at| {
        Row::flow(6, "10.50.1.4", 41000, "10.50.2.9", 9000)
            .at(at)
            .fingerprint(fp::TCP_SYN_ISN, 11)
            .counters(4, 400)
    };
    let b = host_gw_points(BatchBuilder::new())
        .row(seg(0))
        .row(seg(1))
        .row(seg(2))
        .row(seg(3))
        .build();
    let flows = harness().run(&b).unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!((f.client.role, f.server.role), (Role::Pod, Role::Pod));
    assert_eq!(f.packets, 4, "counted at one point");
    assert!(has(f, "flannel:host-gw"), "{:?}", f.evidence);
    assert!(!has(f, "flannel:vxlan"));
}

#[test]
fn host_gw_masquerade_all_service_names_the_client_pod_not_the_node_ip() {
    // kube-proxy's masqueradeAll: DNAT to the backend, then MASQUERADE out of eth0, so the
    // backend's node sees n1's IP. The client's veth view, with the same ISN, names the pod.
    let b = host_gw_points(BatchBuilder::new())
        .row(
            Row::flow(6, "10.50.1.4", 41000, "10.60.0.20", 80)
                .at(0)
                .fingerprint(fp::TCP_SYN_ISN, 77),
        )
        .row(
            Row::flow(6, "172.31.0.11", 52000, "10.50.2.9", 9000)
                .at(2)
                .fingerprint(fp::TCP_SYN_ISN, 77),
        )
        .row(
            Row::flow(6, "172.31.0.11", 52000, "10.50.2.9", 9000)
                .at(3)
                .fingerprint(fp::TCP_SYN_ISN, 77),
        )
        .build();
    let flows = harness().run(&b).unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!((f.client.role, f.client.ip), (Role::Pod, ip("10.50.1.4")));
    assert_eq!((f.server.ip, f.server_port), (ip("10.50.2.9"), 9000));
    assert_eq!(f.service.as_ref().map(|s| s.ip), Some(ip("10.60.0.20")));
    for e in ["nat:snat-recovered", "service:dnat", "flannel:host-gw"] {
        assert!(has(f, e), "{e} in {:?}", f.evidence);
    }
}

#[test]
fn node_ip_source_without_a_pre_snat_view_is_the_node() {
    // host-gw: the node itself pings a remote pod from its own IP.
    let b = host_gw_points(BatchBuilder::new())
        .row(
            Row::flow(1, "172.31.0.11", 8, "10.50.2.9", 0)
                .at(2)
                .fingerprint(fp::IPV4_ID, 0x4321_0040),
        )
        .build();
    let f = &harness().run(&b).unwrap()[0];
    assert_eq!((f.client.role, f.client.name.as_str()), (Role::Node, "n1"));
    assert_eq!(f.server.role, Role::Pod);
    assert!(has(f, "flannel:host-gw"));
}

#[test]
fn udp_backend_is_recognised_on_its_port() {
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(6, "10.50.1.4", 41000, "10.50.2.9", 9000)
                .at(0)
                .fingerprint(fp::TCP_SYN_ISN, 3),
        )
        .row(
            Row::flow(6, "10.50.1.4", 41000, "10.50.2.9", 9000)
                .at(1)
                .fingerprint(fp::TCP_SYN_ISN, 3)
                .udp_encap("172.31.0.11", "172.31.0.12", 8285),
        )
        .build();
    let flows = harness().run(&b).unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    assert!(has(&flows[0], "flannel:udp"), "{:?}", flows[0].evidence);
    assert_eq!(flows[0].client.role, Role::Pod);

    // Another port is not flannel's udp backend unless configured.
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(17, "10.50.1.4", 5000, "10.50.2.9", 53)
                .at(1)
                .udp_encap("172.31.0.11", "172.31.0.12", 9999),
        )
        .build();
    assert!(!has(&harness().run(&b).unwrap()[0], "flannel:udp"));
    let mut h = Harness::<Flannel>::new()
        .configure(r#"{"udp_port": 9999}"#)
        .unwrap()
        .inventory(inventory())
        .unwrap();
    assert!(has(&h.run(&b).unwrap()[0], "flannel:udp"));
}

#[test]
fn vni_comes_from_the_node_annotation_before_the_option() {
    let mut inv = inventory();
    for n in &mut inv.nodes {
        for (k, v) in &mut n.annotations {
            if k == cluster::BACKEND_DATA {
                *v = v.replace("\"VNI\":1", "\"VNI\":7");
            }
        }
    }
    let row = |vni| {
        Row::flow(17, "10.50.1.4", 5000, "10.50.2.9", 53)
            .at(1)
            .vxlan(vni, "172.31.0.11", "172.31.0.12", 8472)
    };
    let mut h = Harness::<Flannel>::new().inventory(inv).unwrap();
    let f = &h
        .run(&points(BatchBuilder::new()).row(row(7)).build())
        .unwrap()[0];
    assert!(has(f, "flannel:vxlan"), "{:?}", f.evidence);
    // VNI 1 (the option's default) is not this cluster's flannel: some other VXLAN.
    let f = &h
        .run(&points(BatchBuilder::new()).row(row(1)).build())
        .unwrap()[0];
    assert!(!has(f, "flannel:vxlan"), "{:?}", f.evidence);
}

#[test]
fn vtep_is_known_by_its_mac_when_the_outer_address_is_not_annotated() {
    // Rule 1: (outer source IP, inner source MAC) names the node; the MAC alone suffices.
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(17, "10.50.1.4", 5000, "10.50.2.9", 53)
                .at(2)
                .vxlan(1, "192.0.2.99", "172.31.0.12", 8472)
                .macs(0x0a0000000001, 0x0a0000000002),
        )
        .build();
    let f = &harness().run(&b).unwrap()[0];
    assert!(has(f, "flannel:vxlan"));
    assert!(!has(f, "flannel:unknown-vtep"), "{:?}", f.evidence);
    assert_eq!(f.confidence, 1.0);
}

#[test]
fn host_network_pods_and_cni0_gateway_are_the_node() {
    let mut inv = inventory();
    let mut hostnet = pod("node-exporter", "n2", "172.31.0.12");
    hostnet.host_network = true;
    inv.pods.push(hostnet);
    let mut h = Harness::<Flannel>::new().inventory(inv).unwrap();
    // A pod scraping a hostNetwork pod: the server is node n2, not a pod.
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(6, "10.50.1.4", 41000, "172.31.0.12", 9100)
                .at(0)
                .fingerprint(fp::TCP_SYN_ISN, 8),
        )
        .build();
    let f = &h.run(&b).unwrap()[0];
    assert_eq!((f.server.role, f.server.name.as_str()), (Role::Node, "n2"));
    // cni0's address (.1 of the lease) as source: node n2's gateway, not a pod.
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(6, "10.50.2.1", 40000, "10.50.2.9", 9000)
                .at(3)
                .fingerprint(fp::TCP_SYN_ISN, 9),
        )
        .build();
    let f = &h.run(&b).unwrap()[0];
    assert_eq!((f.client.role, f.client.name.as_str()), (Role::Node, "n2"));
    assert!(has(f, "gateway-unresolved"));
}

#[test]
fn link_control_traffic_is_not_an_edge() {
    let b = points(BatchBuilder::new())
        .row(Row::flow(17, "10.50.1.4", 5353, "224.0.0.251", 5353).at(0))
        .row(Row::flow(2, "10.50.1.4", 0, "224.0.0.22", 0).at(0))
        // ICMP protocol unreachable (type 3, code 2) about some other flow
        .row(Row::flow(1, "172.31.0.11", 3, "172.31.0.12", 2).at(1))
        .build();
    assert!(harness().run(&b).unwrap().is_empty());
}

/// A UDP datagram with IPv4 ID 0 (no fingerprint) from `src` at point `at`, `ms` into the window.
fn udp_no_fp(src: &str, sport: u16, at: usize, ms: u64) -> Row {
    let mut r = Row::flow(17, src, sport, "10.50.2.9", 53).at(at);
    r.first_ns = ms * 1_000_000;
    r.last_ns = r.first_ns;
    r
}

#[test]
fn gateway_source_without_fingerprint_is_recovered_by_time_when_one_pod_fits() {
    let b = points(BatchBuilder::new())
        .row(udp_no_fp("10.50.1.4", 5000, 0, 100)) // the pod's veth
        .row(udp_no_fp("10.50.1.0", 5000, 3, 101)) // after SNAT, at the server
        .build();
    let flows = harness().run(&b).unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!((f.client.role, f.client.ip), (Role::Pod, ip("10.50.1.4")));
    assert!(
        has(f, "stitch:time") && has(f, "nat:snat-recovered"),
        "{:?}",
        f.evidence
    );
    assert!(f.confidence < 1.0);
}

#[test]
fn time_fallback_refuses_far_apart_or_ambiguous_candidates() {
    // Two seconds apart: not the same datagram.
    let b = points(BatchBuilder::new())
        .row(udp_no_fp("10.50.1.4", 5000, 0, 100))
        .row(udp_no_fp("10.50.1.0", 5000, 3, 2100))
        .build();
    let flows = harness().run(&b).unwrap();
    assert_eq!(flows.len(), 2, "{flows:?}");
    let gw = flows.iter().find(|f| f.client.role == Role::Node).unwrap();
    assert!(has(gw, "gateway-unresolved"));

    // Two pods with the same source port at the same moment: which one is unknowable.
    let mut inv = inventory();
    inv.pods.push(pod("other", "n1", "10.50.1.5"));
    let mut h = Harness::<Flannel>::new().inventory(inv).unwrap();
    let b = points(BatchBuilder::new())
        .row(udp_no_fp("10.50.1.4", 5000, 0, 100))
        .row(udp_no_fp("10.50.1.5", 5000, 0, 100))
        .row(udp_no_fp("10.50.1.0", 5000, 3, 101))
        .build();
    let flows = h.run(&b).unwrap();
    assert_eq!(flows.len(), 3, "{flows:?}");
    assert!(flows.iter().all(|f| !has(f, "stitch:time")));

    // Switched off by option.
    let mut h = Harness::<Flannel>::new()
        .configure(r#"{"time_join_ms": 0}"#)
        .unwrap()
        .inventory(inventory())
        .unwrap();
    let b = points(BatchBuilder::new())
        .row(udp_no_fp("10.50.1.4", 5000, 0, 100))
        .row(udp_no_fp("10.50.1.0", 5000, 3, 101))
        .build();
    assert_eq!(h.run(&b).unwrap().len(), 2);
}

/// A UDP exchange cut by the window's end: the next window holds only its last reply, at
/// every point. It stays client -> server:5353, counted once (it was reversed, with the
/// client's ephemeral port as the server's: #20).
#[test]
fn a_window_holding_only_the_last_reply_keeps_the_client_and_the_port() {
    let pts = |b: BatchBuilder| {
        b.point("n1", "veth11", IfaceKind::PodVeth, Direction::Unknown)
            .point("n1", "eth0", IfaceKind::Uplink, Direction::Unknown)
            .point("n2", "eth0", IfaceKind::Uplink, Direction::Unknown)
            .point("n2", "veth22", IfaceKind::PodVeth, Direction::Unknown)
    };
    let query = |at: usize| {
        Row::flow(17, "10.50.1.4", 19679, "10.50.2.9", 5353)
            .at(at)
            .fingerprint(fp::IPV4_ID, 5 << 16 | 7)
            .counters(5, 175)
    };
    let reply = |at: usize, id: u32| {
        Row::flow(17, "10.50.2.9", 5353, "10.50.1.4", 19679)
            .at(at)
            .fingerprint(fp::IPV4_ID, id << 16 | 7)
    };
    let mut h = harness();
    let mut b = pts(BatchBuilder::new());
    for at in 0..4 {
        b = b.row(query(at)).row(reply(at, 9).counters(4, 140));
    }
    let first = h.run(&b.build()).unwrap();
    let mut b = pts(BatchBuilder::new());
    for at in 0..4 {
        b = b.row(reply(at, 11).counters(1, 35));
    }
    let second = h.run(&b.build()).unwrap();
    for (flows, packets) in [(first, 9), (second, 1)] {
        assert_eq!(flows.len(), 1, "{flows:?}");
        let f = &flows[0];
        assert_eq!(
            (f.client.ip, f.server.ip, f.server_port, f.packets),
            (ip("10.50.1.4"), ip("10.50.2.9"), 5353, packets),
            "{f:?}"
        );
    }
}
