//! Each OVN-Kubernetes / OpenShift-SDN rule on hand-built batches, natively through the SDK's
//! test kit.

use super::*;
use cniscope_sdk::batch::fp;
use cniscope_sdk::testkit::{self, Harness, Row};
use cniscope_sdk::{NewPod, NodeInfo};

fn ip(s: &str) -> Ip {
    s.parse().unwrap()
}

/// An OVN node as ovnkube annotates it.
fn node(name: &str, addr: &str, subnet: &str, join: &str, transit: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        addresses: vec![ip(addr)],
        pod_cidrs: vec![],
        annotations: vec![
            (
                cluster::NODE_SUBNETS.into(),
                format!(r#"{{"default":["{subnet}"]}}"#),
            ),
            (
                cluster::PRIMARY_IFADDR.into(),
                format!(r#"{{"ipv4":"{addr}/24"}}"#),
            ),
            (
                cluster::GATEWAY_LRP_IFADDR.into(),
                format!(r#"{{"ipv4":"{join}/16"}}"#),
            ),
            (
                cluster::TRANSIT_IFADDR.into(),
                format!(r#"{{"ipv4":"{transit}/16"}}"#),
            ),
        ],
        labels: vec![],
    }
}

fn pod(ns: &str, name: &str, node: &str, addr: &str) -> NewPod {
    testkit::pod(ns, name, node, addr)
}

/// Nodes w1 (10.132.2.0/23) and w2 (10.132.4.0/23, older single-string annotation); pods
/// shop/web on w1, shop/db on w2; service shop/db 172.30.0.9:5432.
fn inventory() -> Inventory {
    let mut w2 = node(
        "w2",
        "192.168.10.164",
        "10.132.4.0/23",
        "100.64.0.3",
        "100.88.0.3",
    );
    w2.annotations[0].1 = r#"{"default":"10.132.4.0/23"}"#.into();
    Inventory {
        nodes: vec![
            node(
                "w1",
                "192.168.10.163",
                "10.132.2.0/23",
                "100.64.0.2",
                "100.88.0.2",
            ),
            w2,
        ],
        pods: [
            pod("shop", "web", "w1", "10.132.2.46"),
            pod("shop", "db", "w2", "10.132.4.7"),
        ]
        .into_iter()
        .collect(),
        services: vec![testkit::service("shop", "db", "172.30.0.9", 5432, 5432, 0)],
        endpoint_slices: vec![],
        objects: vec![],
    }
}

/// `ovn-sbctl --format=json` tables: switch w2 is datapath 5, w1 datapath 4; both have a pod
/// on port key 3 (keys are per datapath), and router ports on key 1.
fn southbound() -> (String, String) {
    let dp = |uuid: &str, key: u32, name: &str| {
        format!(
            r#"[["uuid","{uuid}"],["map",[["logical-switch","x"],["name","{name}"]]],["set",[]],{key}]"#
        )
    };
    let datapaths = format!(
        r#"{{"data":[{},{}],"headings":["_uuid","external_ids","load_balancers","tunnel_key"]}}"#,
        dp("d-w1", 4, "w1"),
        dp("d-w2", 5, "w2")
    );
    let port = |dp: &str, lport: &str, key: u16, ty: &str, ids: &str| {
        format!(r#"[["uuid","p-{lport}"],["uuid","{dp}"],["map",[{ids}]],"{lport}",{key},"{ty}"]"#)
    };
    let pod_ids = |ns: &str| format!(r#"["namespace","{ns}"],["pod","true"]"#);
    let ports = format!(
        r#"{{"data":[{},{},{},{}],"headings":["_uuid","datapath","external_ids","logical_port","tunnel_key","type"]}}"#,
        port("d-w1", "shop_web", 3, "", &pod_ids("shop")),
        port("d-w2", "shop_db", 3, "", &pod_ids("shop")),
        port("d-w1", "stor-w1", 1, "router", ""),
        port("d-w2", "stor-w2", 1, "router", ""),
    );
    (ports, datapaths)
}

fn harness(options: &str) -> Harness<Ovn> {
    Harness::<Ovn>::new()
        .configure(options)
        .unwrap()
        .inventory(inventory())
        .unwrap()
}

fn with_bindings() -> Harness<Ovn> {
    let (ports, datapaths) = southbound();
    let options = serde_options(&[
        ("port_bindings", ports.as_str()),
        ("datapath_bindings", datapaths.as_str()),
    ]);
    harness(&options)
}

fn serde_options(pairs: &[(&str, &str)]) -> String {
    let map: cniscope_sdk::json::Map<String, cniscope_sdk::json::Value> = pairs
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                cniscope_sdk::json::Value::String(v.to_string()),
            )
        })
        .collect();
    cniscope_sdk::json::Value::Object(map).to_string()
}

fn has(f: &LogicalFlow, evidence: &str) -> bool {
    f.evidence.iter().any(|e| e == evidence)
}

/// OVN's option: ingress and egress port keys.
fn ports(ingress: u16, egress: u16) -> [u8; 4] {
    (((ingress as u32) << 16) | egress as u32).to_be_bytes()
}

fn points(b: BatchBuilder) -> BatchBuilder {
    b.point(
        "w1",
        "3f2a9c1b7d8e4f0",
        IfaceKind::PodVeth,
        Direction::Ingress,
    ) // 0
    .point("w1", "br-ex", IfaceKind::Uplink, Direction::Egress) // 1
    .point("w2", "br-ex", IfaceKind::Uplink, Direction::Ingress) // 2
    .point(
        "w2",
        "9bd01e2c3a4f5e6",
        IfaceKind::PodVeth,
        Direction::Egress,
    ) // 3
}

/// web -> db:5432 across nodes in Geneve: VNI = db's switch (5), ingress port the router
/// port (1), egress db's port (3).
fn geneve_syn(at: usize) -> Row {
    let opt = ports(1, 3);
    Row::flow(6, "10.132.2.46", 40000, "10.132.4.7", 5432)
        .at(at)
        .fingerprint(fp::TCP_SYN_ISN, 5)
        .counters(3, 300)
        .geneve(
            5,
            "192.168.10.163",
            "192.168.10.164",
            &[(0x0102, 0x80, &opt)],
        )
}

#[test]
fn geneve_pod_to_pod_is_one_edge_named_by_port_keys_per_datapath() {
    let plain = |at| {
        Row::flow(6, "10.132.2.46", 40000, "10.132.4.7", 5432)
            .at(at)
            .fingerprint(fp::TCP_SYN_ISN, 5)
            .counters(3, 300)
    };
    let b = points(BatchBuilder::new())
        .row(plain(0))
        .row(geneve_syn(1))
        .row(geneve_syn(2))
        .row(plain(3))
        .build();
    let flows = with_bindings().run(&b).unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    // The egress key 3 on datapath 5 is db, not web (key 3 on datapath 4).
    assert_eq!(f.server.name, "shop/db");
    assert_eq!((f.client.role, f.client.ip), (Role::Pod, ip("10.132.2.46")));
    assert_eq!(f.packets, 3, "counted once");
    assert!(has(f, "ovn:geneve") && has(f, "ovn:port-key"), "{f:?}");

    // Without the southbound tables: the same edge, by inner addresses.
    let flows = harness("{}").run(&b).unwrap();
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].server.name, "");
    assert_eq!(flows[0].server.ip, ip("10.132.4.7"));
    assert!(has(&flows[0], "ovn:geneve") && !has(&flows[0], "ovn:port-key"));
}

#[test]
fn port_keys_without_datapaths_name_only_keys_one_pod_uses() {
    let (ports_json, _) = southbound();
    let mut h = harness(&serde_options(&[("port_bindings", &ports_json)]));
    let b = points(BatchBuilder::new()).row(geneve_syn(2)).build();
    let f = &h.run(&b).unwrap()[0];
    // Key 3 is web's on one switch and db's on the other: neither, by address instead.
    assert_eq!(f.server.name, "");
    assert!(!has(f, "ovn:port-key"));
}

#[test]
fn the_management_port_is_the_node_as_in_seed_003() {
    // Node w1 (192.168.10.163) pings web, which sees 10.132.2.2: ovn-k8s-mp0.
    let echo = |src: &str, dst: &str, kind: u16| {
        let mut r = Row::flow(1, src, kind, dst, 0).at(0).counters(2, 168);
        r.fingerprint = 0;
        r
    };
    let b = points(BatchBuilder::new())
        .row(echo("10.132.2.2", "10.132.2.46", 8))
        .row(echo("10.132.2.46", "10.132.2.2", 0))
        .build();
    let flows = harness("{}").run(&b).unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!((f.client.role, f.client.name.as_str()), (Role::Node, "w1"));
    assert!(has(f, "ovn:management-port"), "{f:?}");
    assert_eq!(f.server.ip, ip("10.132.2.46"));
}

#[test]
fn join_transit_and_hairpin_addresses_are_the_node_unless_stitching_finds_the_pod() {
    let f = |src: &str| {
        let b = points(BatchBuilder::new())
            .row(Row::flow(6, src, 41000, "10.132.4.7", 5432).at(3))
            .build();
        harness("{}").run(&b).unwrap().remove(0)
    };
    let join = f("100.64.0.3");
    assert_eq!(join.client.name, "w2");
    assert!(has(&join, "ovn:join-address"));
    assert!(has(&f("100.88.0.2"), "ovn:transit-address"));
    let hairpin = f("169.254.169.5");
    assert_eq!(hairpin.client.name, "w2", "the node that saw it");
    assert!(has(&hairpin, "ovn:hairpin-snat"));

    // A pod reaching itself through its service: OVN's LB DNATs and SNATs to 169.254.169.5;
    // the fingerprint joins the two views on the pod's veth.
    let b = points(BatchBuilder::new())
        .point(
            "w2",
            "9bd01e2c3a4f5e6",
            IfaceKind::PodVeth,
            Direction::Ingress,
        ) // 4
        .row(
            Row::flow(6, "10.132.4.7", 42000, "172.30.0.9", 5432)
                .at(4)
                .fingerprint(fp::TCP_SYN_ISN, 9),
        )
        .row(
            Row::flow(6, "169.254.169.5", 42000, "10.132.4.7", 5432)
                .at(3)
                .fingerprint(fp::TCP_SYN_ISN, 9),
        )
        .build();
    let flows = harness("{}").run(&b).unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!(
        (f.client.ip, f.server.ip),
        (ip("10.132.4.7"), ip("10.132.4.7"))
    );
    assert_eq!(f.service.as_ref().unwrap().name, "shop/db");
    assert!(
        has(f, "nat:snat-recovered") && has(f, "service:dnat"),
        "{f:?}"
    );
}

#[test]
fn a_clusterip_on_the_veth_and_its_backend_in_geneve_are_one_edge() {
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(6, "10.132.2.46", 40000, "172.30.0.9", 5432)
                .at(0)
                .fingerprint(fp::TCP_SYN_ISN, 5),
        )
        .row(geneve_syn(1))
        .build();
    let flows = with_bindings().run(&b).unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!(f.server.name, "shop/db");
    assert_eq!(f.service.as_ref().unwrap().name, "shop/db");
    assert!(has(f, "service:dnat") && has(f, "ovn:geneve"), "{f:?}");
}

#[test]
fn openshift_sdn_vxlan_names_pods_by_the_projects_netid() {
    // Two projects each had a pod on 10.132.4.7 (the inventory keeps both): the VNI, the
    // sender's NETID, says whose.
    let mut inv = inventory();
    inv.pods.push(pod("billing", "ledger", "w2", "10.132.4.7"));
    let h = Harness::<Ovn>::new()
        .configure(r#"{"netids": ["4242=shop", "777=billing"]}"#)
        .unwrap()
        .inventory(inv)
        .unwrap();
    let vxlan = |netid| {
        Row::flow(6, "10.132.2.46", 40000, "10.132.4.7", 5432)
            .at(2)
            .fingerprint(fp::TCP_SYN_ISN, 5)
            .vxlan(netid, "192.168.10.163", "192.168.10.164", 4789)
    };
    let mut h = h;
    for (netid, want) in [(777, "billing/ledger"), (4242, "shop/db")] {
        let b = points(BatchBuilder::new()).row(vxlan(netid)).build();
        let f = &h.run(&b).unwrap()[0];
        assert_eq!(f.server.name, want);
        assert!(has(f, "openshift-sdn:vxlan") && has(f, "openshift-sdn:netid"));
    }
    // NETID 0 is the global project: no help, the address decides.
    let b = points(BatchBuilder::new()).row(vxlan(0)).build();
    assert_eq!(h.run(&b).unwrap()[0].server.name, "");
    // VXLAN on 4789 from a node to what is no node (Kata peer-pods' tunnel to a pod VM, VNI
    // 555005) is not OpenShift-SDN's, whatever its VNI: no NETID read from it.
    h = Harness::<Ovn>::new()
        .configure(r#"{"netids": ["555005=billing"]}"#)
        .unwrap()
        .inventory({
            let mut inv = inventory();
            inv.pods.push(pod("billing", "ledger", "w2", "10.132.4.7"));
            inv
        })
        .unwrap();
    let kata = Row::flow(6, "10.132.2.46", 40000, "10.132.4.7", 5432)
        .at(2)
        .fingerprint(fp::TCP_SYN_ISN, 6)
        .vxlan(555_005, "192.168.10.163", "192.168.10.201", 4789);
    let f = &h
        .run(&points(BatchBuilder::new()).row(kata).build())
        .unwrap()[0];
    assert!(
        !has(f, "openshift-sdn:vxlan") && !has(f, "openshift-sdn:netid"),
        "{f:?}"
    );

    // The same from NetNamespace objects, as the host hands them over (and a HostSubnet
    // naming a node's subnet); a broken one is a warning naming it, the rest still used.
    let mut inv = inventory();
    inv.pods.push(pod("billing", "ledger", "w2", "10.132.4.7"));
    let object = |kind: &str, name: &str, json: String| CniObject {
        api_version: "network.openshift.io/v1".into(),
        kind: kind.into(),
        namespace: String::new(),
        name: name.into(),
        json,
    };
    for (ns, id) in [("billing", "777"), ("shop", "4242")] {
        inv.objects.push(object(
            "NetNamespace",
            ns,
            format!(r#"{{"metadata": {{"name": "{ns}"}}, "netname": "{ns}", "netid": {id}}}"#),
        ));
    }
    inv.objects.push(object(
        "NetNamespace",
        "broken",
        r#"{"netname": "broken", "netid": "many"}"#.into(),
    ));
    let e = Harness::<Ovn>::new().inventory(inv.clone()).err();
    assert!(
        e.is_some_and(|e| e.message.contains("NetNamespace broken: netid")),
        "the broken object is named"
    );
    inv.objects.pop();
    let mut h = Harness::<Ovn>::new().inventory(inv).unwrap();
    let b = points(BatchBuilder::new()).row(vxlan(777)).build();
    let f = &h.run(&b).unwrap()[0];
    assert_eq!(f.server.name, "billing/ledger");
    assert!(has(f, "openshift-sdn:netid"));
}

#[test]
fn bad_options_name_the_option() {
    for (options, field) in [
        (r#"{"netids": ["x=shop"]}"#, "netids"),
        (r#"{"netids": ["5"]}"#, "netids"),
        (r#"{"port_bindings": "{not json"}"#, "port_bindings"),
        (r#"{"port_bindings": "{\"data\": []}"}"#, "port_bindings"),
        (r#"{"host_subnets": ["10.0.0.0/23"]}"#, "host_subnets"),
        (r#"{"hairpin_snat": "x"}"#, "hairpin_snat"),
        (r#"{"gateway": 1}"#, "gateway"),
    ] {
        let e = Harness::<Ovn>::new().configure(options).err().unwrap();
        assert_eq!(e.field, field, "{options}: {e:?}");
    }
}
