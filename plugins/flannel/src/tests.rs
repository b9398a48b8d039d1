//! Each flannel rule on hand-built batches, run natively through the SDK's test kit.

use super::*;
use cniscope_sdk::batch::fp;
use cniscope_sdk::testkit::{Harness, Row};
use cniscope_sdk::{NodeInfo, PodInfo, ServiceInfo, ServicePort};

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

fn pod(name: &str, node: &str, addr: &str) -> PodInfo {
    PodInfo {
        namespace: "default".into(),
        name: name.into(),
        node: node.into(),
        ips: vec![ip(addr)],
        host_network: false,
        workload: String::new(),
        annotations: vec![],
        created_ns: 0,
        deleted_ns: 0,
    }
}

fn inventory() -> Inventory {
    Inventory {
        nodes: vec![
            node("n1", "172.31.0.11", "10.50.1.0/24", "0a:00:00:00:00:01"),
            node("n2", "172.31.0.12", "10.50.2.0/24", "0a:00:00:00:00:02"),
        ],
        pods: vec![
            pod("client", "n1", "10.50.1.4"),
            pod("server", "n2", "10.50.2.9"),
        ],
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
