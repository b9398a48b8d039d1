//! Each Calico rule on hand-built batches, run natively through the SDK's test kit.

use super::*;
use cniscope_sdk::batch::fp;
use cniscope_sdk::testkit::{self, Harness, Row};
use cniscope_sdk::{NewPod, NodeInfo, ServiceInfo, ServicePort};

fn ip(s: &str) -> Ip {
    s.parse().unwrap()
}

fn node(name: &str, addr: &str, ipip: &str, vxlan: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        addresses: vec![ip(addr)],
        pod_cidrs: vec![],
        annotations: vec![
            (cluster::IPV4_ADDRESS.into(), format!("{addr}/24")),
            (cluster::IPIP_TUNNEL_ADDR.into(), ipip.into()),
            (cluster::VXLAN_TUNNEL_ADDR.into(), vxlan.into()),
        ],
        labels: vec![],
    }
}

fn pod(ns: &str, name: &str, node: &str, addr: &str) -> NewPod {
    testkit::pod(ns, name, node, addr)
}

/// Pool 10.70.0.0/16 with /26 blocks: n1 has 10.70.5.0/26, n2 has 10.70.9.64/26.
fn inventory() -> Inventory {
    Inventory {
        nodes: vec![
            node("n1", "172.30.0.11", "10.70.5.1", "10.70.5.2"),
            node("n2", "172.30.0.12", "10.70.9.65", "10.70.9.66"),
        ],
        pods: [
            pod("shop", "web", "n1", "10.70.5.10"),
            pod("shop", "db", "n2", "10.70.9.80"),
        ]
        .into_iter()
        .collect(),
        services: vec![ServiceInfo {
            namespace: "shop".into(),
            name: "db".into(),
            type_: "ClusterIP".into(),
            cluster_ips: vec![ip("10.111.0.5")],
            external_ips: vec![],
            ports: vec![ServicePort {
                name: "pg".into(),
                protocol: 6,
                port: 5432,
                target_port: 5432,
                node_port: 0,
            }],
            external_traffic_policy: "Cluster".into(),
        }],
        endpoint_slices: vec![],
        objects: vec![],
    }
}

fn harness() -> Harness<Calico> {
    Harness::<Calico>::new()
        .configure(r#"{"pools": ["10.70.0.0/16"]}"#)
        .unwrap()
        .inventory(inventory())
        .unwrap()
}

fn has(f: &LogicalFlow, evidence: &str) -> bool {
    f.evidence.iter().any(|e| e == evidence)
}

fn web_veth() -> String {
    iface::veth_name("shop", "web")
}
fn db_veth() -> String {
    iface::veth_name("shop", "db")
}

fn points(b: BatchBuilder) -> BatchBuilder {
    b.point("n1", &web_veth(), IfaceKind::PodVeth, Direction::Ingress) // 0
        .point("n1", "eth0", IfaceKind::Uplink, Direction::Egress) // 1
        .point("n2", "eth0", IfaceKind::Uplink, Direction::Ingress) // 2
        .point("n2", &db_veth(), IfaceKind::PodVeth, Direction::Egress) // 3
}

fn syn(at: usize) -> Row {
    Row::flow(6, "10.70.5.10", 40000, "10.70.9.80", 5432)
        .at(at)
        .fingerprint(fp::TCP_SYN_ISN, 5)
        .counters(3, 300)
}

#[test]
fn bgp_mode_pod_to_pod_is_one_edge_named_by_veths() {
    let b = points(BatchBuilder::new())
        .row(syn(0))
        .row(syn(1))
        .row(syn(2))
        .row(syn(3))
        .build();
    let flows = harness().run(&b).unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!(f.client.name, "shop/web");
    assert_eq!(f.server.name, "shop/db");
    assert_eq!(f.packets, 3, "counted once");
    for e in ["calico:bgp", "calico:veth-name"] {
        assert!(has(f, e), "{e} in {:?}", f.evidence);
    }
    assert!(!has(f, "calico:ipip") && !has(f, "calico:vxlan"));
}

#[test]
fn ipip_and_vxlan_modes_are_told_apart_by_their_encapsulation() {
    let b = points(BatchBuilder::new())
        .row(syn(0))
        .row(syn(2).ipip("172.30.0.11", "172.30.0.12"))
        .build();
    let f = &harness().run(&b).unwrap()[0];
    assert!(
        has(f, "calico:ipip") && !has(f, "calico:bgp"),
        "{:?}",
        f.evidence
    );

    let b = points(BatchBuilder::new())
        .row(syn(0))
        .row(syn(2).vxlan(4096, "172.30.0.11", "172.30.0.12", 4789))
        .build();
    let f = &harness().run(&b).unwrap()[0];
    assert!(has(f, "calico:vxlan"), "{:?}", f.evidence);
    assert_eq!(f.confidence, 1.0);

    // Another VNI is not Calico's VXLAN (flannel, a VTEP of someone else's).
    let b = points(BatchBuilder::new())
        .row(syn(2).vxlan(1, "172.30.0.11", "172.30.0.12", 8472))
        .build();
    assert!(!has(&harness().run(&b).unwrap()[0], "calico:vxlan"));
}

#[test]
fn tunnel_address_source_is_the_node() {
    // n1 itself reaches db through vxlan.calico: the source is n1's VXLAN tunnel address.
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(1, "10.70.5.2", 8, "10.70.9.80", 0)
                .at(3)
                .fingerprint(fp::IPV4_ID, 0x2222_0040),
        )
        .build();
    let f = &harness().run(&b).unwrap()[0];
    assert_eq!((f.client.role, f.client.name.as_str()), (Role::Node, "n1"));
    assert_eq!(
        (f.server.role, f.server.name.as_str()),
        (Role::Pod, "shop/db")
    );
    assert!(has(f, "calico:tunnel-address"));
}

#[test]
fn nat_outgoing_is_reported_from_the_pod() {
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(6, "10.70.5.10", 40001, "203.0.113.9", 443)
                .at(0)
                .fingerprint(fp::TCP_SYN_ISN, 6),
        )
        .row(
            Row::flow(6, "172.30.0.11", 40001, "203.0.113.9", 443)
                .at(1)
                .fingerprint(fp::TCP_SYN_ISN, 6),
        )
        .build();
    let flows = harness().run(&b).unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!(
        (f.client.role, f.client.name.as_str()),
        (Role::Pod, "shop/web")
    );
    assert_eq!(
        (f.server.role, f.server.ip),
        (Role::External, ip("203.0.113.9"))
    );
    assert!(has(f, "nat:masquerade"), "{:?}", f.evidence);
}

#[test]
fn service_dnat_names_service_and_backend() {
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(6, "10.70.5.10", 40002, "10.111.0.5", 5432)
                .at(0)
                .fingerprint(fp::TCP_SYN_ISN, 7),
        )
        .row(
            Row::flow(6, "10.70.5.10", 40002, "10.70.9.80", 5432)
                .at(3)
                .fingerprint(fp::TCP_SYN_ISN, 7),
        )
        .build();
    let flows = harness().run(&b).unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!(f.service.as_ref().map(|s| s.ip), Some(ip("10.111.0.5")));
    assert_eq!((f.server.name.as_str(), f.server_port), ("shop/db", 5432));
    assert!(has(f, "service:dnat"));
}

#[test]
fn a_reused_ip_is_named_by_the_veth_that_saw_it() {
    // "old" had 10.70.5.10 first; "web" has it now. Both are in the inventory with no
    // timestamps to tell them apart; only the veth names do.
    let mut inv = inventory();
    inv.pods.push(pod("shop", "old", "n1", "10.70.5.10"));
    let mut h = Harness::<Calico>::new().inventory(inv).unwrap();
    let old_veth = iface::veth_name("shop", "old");
    let b = BatchBuilder::new()
        .point("n1", &old_veth, IfaceKind::PodVeth, Direction::Ingress) // 0
        .point("n1", &web_veth(), IfaceKind::PodVeth, Direction::Ingress) // 1
        .row(
            Row::flow(6, "10.70.5.10", 40000, "10.70.9.80", 5432)
                .at(0)
                .fingerprint(fp::TCP_SYN_ISN, 1),
        )
        .row(
            Row::flow(6, "10.70.5.10", 40010, "10.70.9.80", 5432)
                .at(1)
                .fingerprint(fp::TCP_SYN_ISN, 2),
        )
        .build();
    let flows = h.run(&b).unwrap();
    assert_eq!(flows.len(), 2);
    let mut names: Vec<&str> = flows.iter().map(|f| f.client.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["shop/old", "shop/web"]);
}

#[test]
fn block_addresses_are_pods_even_when_the_inventory_lags() {
    // 10.70.9.99 is in n2's block (inferred from db's address) but no pod lists it yet.
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(6, "10.70.5.10", 40003, "10.70.9.99", 80)
                .at(1)
                .fingerprint(fp::TCP_SYN_ISN, 8),
        )
        .build();
    let f = &harness().run(&b).unwrap()[0];
    assert_eq!(f.server.role, Role::Pod);
    assert!(has(f, "calico:bgp"));
    // An address in the pool but in no block is not claimed as a pod.
    let b = points(BatchBuilder::new())
        .row(Row::flow(6, "10.70.200.1", 1, "10.70.9.80", 80).at(2))
        .build();
    let f = &harness().run(&b).unwrap()[0];
    assert_eq!(f.client.role, Role::Unknown);
}

#[test]
fn explicit_blocks_and_options_are_validated_by_name() {
    let mut h = Harness::<Calico>::new()
        .configure(r#"{"blocks": ["10.70.12.0/26=n2"]}"#)
        .unwrap()
        .inventory(inventory())
        .unwrap();
    let b = points(BatchBuilder::new())
        .row(Row::flow(17, "10.70.12.3", 53, "10.70.5.10", 5353).at(2))
        .build();
    assert_eq!(h.run(&b).unwrap()[0].client.role, Role::Pod);
    for (opts, field) in [
        (r#"{"pools": ["10.0.0.0/99"]}"#, "pools"),
        (r#"{"blocks": ["10.70.0.0/26"]}"#, "blocks"),
        (r#"{"block_size": 40}"#, "block_size"),
        (r#"{"vxlan_vni": "x"}"#, "vxlan_vni"),
        (r#"{"pool": "10.0.0.0/8"}"#, "pool"),
    ] {
        let e = Harness::<Calico>::new().configure(opts).err().unwrap();
        assert_eq!(e.field, field, "{opts}");
    }
    // A block for a node the inventory does not have is reported, the rest still used.
    let e = Harness::<Calico>::new()
        .configure(r#"{"blocks": ["10.70.12.0/26=ghost"]}"#)
        .unwrap()
        .inventory(inventory())
        .err()
        .unwrap();
    assert!(e.message.contains("ghost"), "{}", e.message);
}

fn calico_object(kind: &str, name: &str, spec: &str) -> CniObject {
    CniObject {
        api_version: "crd.projectcalico.org/v1".into(),
        kind: kind.into(),
        namespace: String::new(),
        name: name.into(),
        json: format!(r#"{{"metadata": {{"name": "{name}"}}, "spec": {spec}}}"#),
    }
}

/// Calico's IPPool and IPAMBlock objects, as the host hands them over, are the pools and the
/// block affinities: a block without an affinity or deleted is no node's, a broken one is
/// named, the options still come first.
#[test]
fn ippools_and_ipamblocks_from_the_inventory_are_the_ipam() {
    let objects = vec![
        calico_object(
            "IPPool",
            "default-ipv4-ippool",
            r#"{"cidr": "10.80.0.0/16"}"#,
        ),
        calico_object(
            "IPAMBlock",
            "10-80-1-0-26",
            r#"{"cidr": "10.80.1.0/26", "affinity": "host:n1"}"#,
        ),
        calico_object("IPAMBlock", "10-80-2-0-26", r#"{"cidr": "10.80.2.0/26"}"#),
        calico_object(
            "IPAMBlock",
            "10-80-3-0-26",
            r#"{"cidr": "10.80.3.0/26", "affinity": "host:n2", "deleted": true}"#,
        ),
        calico_object(
            "IPAMBlock",
            "bad",
            r#"{"cidr": "10.80.4.0/99", "affinity": "host:n2"}"#,
        ),
    ];
    let options = Ipam {
        pools: vec!["10.70.0.0/16".parse().unwrap()],
        blocks: vec![("10.80.1.0/26".parse().unwrap(), "n2".into())],
        block_size: 26,
    };
    let mut warnings = Vec::new();
    let ipam = options.with_objects(&objects, &mut warnings);
    assert_eq!(
        ipam.pools,
        vec![
            "10.70.0.0/16".parse().unwrap(),
            "10.80.0.0/16".parse().unwrap()
        ]
    );
    assert_eq!(
        ipam.blocks,
        vec![("10.80.1.0/26".parse().unwrap(), "n2".to_string())],
        "the option's affinity stands; unaffine and deleted blocks are no node's"
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("IPAMBlock bad: spec.cidr"),
        "{warnings:?}"
    );
}
