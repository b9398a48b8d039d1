//! Each Cilium rule on hand-built batches, run natively through the SDK's test kit: identity
//! VNIs, reserved identities, the objects, socket LB, masquerade, native routing, Geneve.

use super::*;
use cniscope_sdk::batch::fp;
use cniscope_sdk::json as serde_json;
use cniscope_sdk::testkit::{self, Harness, Row, endpoint_slice, service};
use cniscope_sdk::{NodeInfo, PluginError};

fn ip(s: &str) -> Ip {
    s.parse().unwrap()
}

const CLIENT_ID: u32 = 48_213;
const SERVER_ID: u32 = 9_120;
const LEDGER_ID: u32 = 31_337;

fn node(name: &str, addr: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        addresses: vec![ip(addr)],
        pod_cidrs: vec![],
        annotations: vec![],
        labels: vec![],
    }
}

fn object(kind: &str, namespace: &str, name: &str, json: serde_json::Value) -> CniObject {
    CniObject {
        api_version: "cilium.io/v2".into(),
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
        json: json.to_string(),
    }
}

/// As `kubectl get ciliumnodes -o json` prints one.
fn cilium_node(name: &str, addr: &str, router: &str, health: &str, cidr: &str) -> CniObject {
    object(
        "CiliumNode",
        "",
        name,
        serde_json::json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumNode", "metadata": {"name": name},
            "spec": {
                "addresses": [{"type": "InternalIP", "ip": addr}, {"type": "CiliumInternalIP", "ip": router}],
                "health": {"ipv4": health},
                "ipam": {"podCIDRs": [cidr]},
            },
        }),
    )
}

/// As `kubectl get ciliumendpoints -A -o json` prints one.
fn endpoint(namespace: &str, name: &str, addr: &str, identity: u32) -> CniObject {
    object(
        "CiliumEndpoint",
        namespace,
        name,
        serde_json::json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumEndpoint",
            "metadata": {"name": name, "namespace": namespace},
            "status": {
                "id": 1234, "state": "ready",
                "identity": {"id": identity, "labels": [format!("k8s:io.kubernetes.pod.namespace={namespace}")]},
                "networking": {"addressing": [{"ipv4": addr}], "node": "192.0.2.1"},
            },
        }),
    )
}

fn identity_object(id: u32, namespace: &str) -> CniObject {
    object(
        "CiliumIdentity",
        "",
        &id.to_string(),
        serde_json::json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumIdentity", "metadata": {"name": id.to_string()},
            "security-labels": {"k8s:app": "x", "k8s:io.kubernetes.pod.namespace": namespace},
        }),
    )
}

/// Nodes n1 (172.31.0.11, cilium_host 10.11.0.197, pods 10.11.0.0/24) and n2 (172.31.0.12,
/// 10.11.1.33, 10.11.1.0/24); client (shop) on n1, server (shop) on n2, and ledger (billing)
/// holding server's address too (an address reused, its endpoint lingering).
fn inventory() -> Inventory {
    Inventory {
        nodes: vec![node("n1", "172.31.0.11"), node("n2", "172.31.0.12")],
        pods: [
            testkit::pod("shop", "client", "n1", "10.11.0.5"),
            testkit::pod("shop", "server", "n2", "10.11.1.9"),
            testkit::pod("billing", "ledger", "n2", "10.11.1.9"),
            testkit::pod("shop", "other", "n2", "10.11.1.10"),
        ]
        .into_iter()
        .collect(),
        services: vec![
            service("shop", "web", "10.96.0.10", 80, 8080, 0),
            service("shop", "db", "", 5432, 5432, 0),
            service("shop", "api", "10.96.0.11", 80, 9000, 0),
            service("shop", "api-v2", "10.96.0.12", 80, 9000, 0),
        ],
        endpoint_slices: vec![
            endpoint_slice("shop", "web", &["10.11.1.9"], 8080),
            endpoint_slice("shop", "db", &["10.11.1.9"], 5432),
            endpoint_slice("shop", "api", &["10.11.1.9"], 9000),
            endpoint_slice("shop", "api-v2", &["10.11.1.9"], 9000),
        ],
        objects: vec![
            cilium_node(
                "n1",
                "172.31.0.11",
                "10.11.0.197",
                "10.11.0.80",
                "10.11.0.0/24",
            ),
            cilium_node(
                "n2",
                "172.31.0.12",
                "10.11.1.33",
                "10.11.1.81",
                "10.11.1.0/24",
            ),
            endpoint("shop", "client", "10.11.0.5", CLIENT_ID),
            endpoint("shop", "server", "10.11.1.9", SERVER_ID),
            endpoint("billing", "ledger", "10.11.1.9", LEDGER_ID),
            identity_object(CLIENT_ID, "shop"),
            identity_object(SERVER_ID, "shop"),
            identity_object(LEDGER_ID, "billing"),
        ],
    }
}

fn harness(options: &str) -> Harness<Cilium> {
    Harness::<Cilium>::new()
        .configure(options)
        .unwrap()
        .inventory(inventory())
        .unwrap()
}

fn points(b: BatchBuilder) -> BatchBuilder {
    b.point("n1", "lxc1a2b3c", IfaceKind::PodVeth, Direction::Ingress) // 0
        .point("n1", "eth0", IfaceKind::Uplink, Direction::Egress) // 1
        .point("n2", "eth0", IfaceKind::Uplink, Direction::Ingress) // 2
        .point("n2", "lxc9f8e7d", IfaceKind::PodVeth, Direction::Egress) // 3
        .point("n2", "eth0", IfaceKind::Uplink, Direction::Egress) // 4
        .point("n1", "eth0", IfaceKind::Uplink, Direction::Ingress) // 5
}

fn has(f: &LogicalFlow, e: &str) -> bool {
    f.evidence.iter().any(|x| x == e)
}

/// client:41000 -> `dst`:`port`, seen at the client's veth and in the VXLAN between the
/// nodes with the client's identity, the reply with `reply_id`.
fn cross_node(dst: &str, port: u16, vni: u32, reply_id: u32) -> ObservationBatch {
    let fwd = |at| {
        Row::flow(6, "10.11.0.5", 41000, dst, port)
            .at(at)
            .fingerprint(fp::TCP_SYN_ISN, 42)
            .counters(6, 600)
    };
    let back = |at| {
        Row::flow(6, dst, port, "10.11.0.5", 41000)
            .at(at)
            .fingerprint(fp::TCP_SYNACK_ISN, 7)
            .counters(5, 900)
    };
    points(BatchBuilder::new())
        .row(fwd(0))
        .row(fwd(1).vxlan(vni, "172.31.0.11", "172.31.0.12", 8472))
        .row(fwd(2).vxlan(vni, "172.31.0.11", "172.31.0.12", 8472))
        .row(fwd(3))
        .row(back(4).vxlan(reply_id, "172.31.0.12", "172.31.0.11", 8472))
        .row(back(5).vxlan(reply_id, "172.31.0.12", "172.31.0.11", 8472))
        .build()
}

#[test]
fn the_vni_is_the_senders_identity_and_names_the_pod_behind_a_reused_address() {
    // 10.11.1.9 is server's (shop) and, by a lingering endpoint, ledger's (billing): the
    // reply's identity says which one answered.
    let flows = harness("{}")
        .run(&cross_node("10.11.1.9", 7777, CLIENT_ID, SERVER_ID))
        .unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!((f.client.role, f.client.ip), (Role::Pod, ip("10.11.0.5")));
    assert_eq!(
        (
            f.server.role,
            f.server.ip,
            f.server.name.as_str(),
            f.server_port
        ),
        (Role::Pod, ip("10.11.1.9"), "shop/server", 7777)
    );
    assert!(has(f, "cilium:vxlan") && has(f, "cilium:identity"), "{f:?}");
    assert_eq!(f.packets, 11, "counted once, both directions");
    assert_eq!(f.confidence, 1.0);

    let flows = harness("{}")
        .run(&cross_node("10.11.1.9", 7777, CLIENT_ID, LEDGER_ID))
        .unwrap();
    assert_eq!(flows[0].server.name, "billing/ledger");
}

#[test]
fn an_identity_no_endpoint_at_the_address_has_lowers_confidence() {
    // The reply claims client's identity from server's address.
    let flows = harness("{}")
        .run(&cross_node("10.11.1.9", 7777, CLIENT_ID, CLIENT_ID))
        .unwrap();
    let f = &flows[0];
    assert_eq!((f.server.role, f.server.name.as_str()), (Role::Pod, ""));
    assert!(has(f, "cilium:identity-mismatch"), "{f:?}");
    assert_eq!(f.confidence, 0.5);
}

#[test]
fn an_identity_nothing_knows_is_evidence_not_a_guess() {
    let flows = harness("{}")
        .run(&cross_node("10.11.1.10", 7777, 60_000, 60_001))
        .unwrap();
    let f = &flows[0];
    assert_eq!((f.server.role, f.server.ip), (Role::Pod, ip("10.11.1.10")));
    assert!(has(f, "cilium:identity-unknown"), "{f:?}");
}

#[test]
fn the_node_reaches_a_remote_pod_from_cilium_host_with_the_host_identity() {
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(1, "10.11.0.197", 8, "10.11.1.10", 0)
                .at(1)
                .vxlan(1, "172.31.0.11", "172.31.0.12", 8472)
                .counters(2, 196),
        )
        .row(
            Row::flow(1, "10.11.1.10", 0, "10.11.0.197", 0)
                .at(4)
                .vxlan(SERVER_ID, "172.31.0.12", "172.31.0.11", 8472)
                .counters(2, 196),
        )
        .build();
    let flows = harness("{}").run(&b).unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!((f.client.role, f.client.name.as_str()), (Role::Node, "n1"));
    assert_eq!((f.server.role, f.server.ip), (Role::Pod, ip("10.11.1.10")));
    assert!(has(f, "cilium:cilium-host"), "{f:?}");
    assert!(
        has(f, "cilium:identity-node"),
        "reserved:host on the wire: {f:?}"
    );
}

#[test]
fn reserved_identities_name_a_node_and_the_world_where_addresses_do_not() {
    // An address nothing names, sent with reserved:remote-node from n1: n1. With
    // reserved:world: outside the cluster.
    let from = |id| {
        points(BatchBuilder::new())
            .row(
                Row::flow(6, "10.99.0.1", 5000, "10.11.1.10", 80)
                    .at(2)
                    .vxlan(id, "172.31.0.11", "172.31.0.12", 8472)
                    .fingerprint(fp::TCP_SYN_ISN, 5),
            )
            .build()
    };
    let f = &harness("{}").run(&from(6)).unwrap()[0];
    assert_eq!((f.client.role, f.client.name.as_str()), (Role::Node, "n1"));
    assert!(has(f, "cilium:identity-node"), "{f:?}");
    let f = &harness("{}").run(&from(2)).unwrap()[0];
    assert_eq!(
        (f.client.role, f.client.ip),
        (Role::External, ip("10.99.0.1"))
    );
    assert!(has(f, "cilium:identity-world"), "{f:?}");
}

#[test]
fn a_tunnel_from_a_node_to_what_is_no_node_carries_no_identity() {
    // VXLAN on Cilium's port between n2 and a host that is no node (Kata peer-pods' tunnel
    // to a pod VM, if configured on the same port): its VNI is no identity.
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(6, "10.11.0.5", 41000, "10.11.1.9", 7777)
                .at(4)
                .vxlan(LEDGER_ID, "172.31.0.12", "172.31.0.99", 8472)
                .fingerprint(fp::TCP_SYN_ISN, 4),
        )
        .build();
    let f = &harness("{}").run(&b).unwrap()[0];
    assert!(
        !has(f, "cilium:vxlan") && !has(f, "cilium:identity"),
        "{f:?}"
    );
    assert_ne!(f.server.name, "billing/ledger");
}

/// client -> `dst`:`port` seen at its veth only (socket LB: the ClusterIP never hits a wire).
fn direct(dst: &str, port: u16) -> ObservationBatch {
    points(BatchBuilder::new())
        .row(
            Row::flow(6, "10.11.0.5", 41000, dst, port)
                .at(0)
                .fingerprint(fp::TCP_SYN_ISN, 42),
        )
        .build()
}

#[test]
fn socket_lb_names_the_one_service_that_lists_the_backend() {
    let f = &harness("{}").run(&direct("10.11.1.9", 8080)).unwrap()[0];
    let svc = f.service.as_ref().expect("web named");
    assert_eq!((svc.name.as_str(), svc.ip), ("shop/web", ip("10.96.0.10")));
    assert!(has(f, "cilium:socket-lb"), "{f:?}");
    assert_eq!(f.confidence, 0.8);

    // Two services list 10.11.1.9:9000: neither is named.
    let f = &harness("{}").run(&direct("10.11.1.9", 9000)).unwrap()[0];
    assert!(f.service.is_none() && !has(f, "cilium:socket-lb"), "{f:?}");
    // A headless service is named as the SDK names it, not as socket LB.
    let f = &harness("{}").run(&direct("10.11.1.9", 5432)).unwrap()[0];
    assert_eq!(f.service.as_ref().unwrap().name, "shop/db");
    assert!(has(f, "service:headless") && !has(f, "cilium:socket-lb"));
    // A port no service lists, and socket LB off.
    let f = &harness("{}").run(&direct("10.11.1.9", 7777)).unwrap()[0];
    assert!(f.service.is_none());
    let f = &harness(r#"{"socket_lb": false}"#)
        .run(&direct("10.11.1.9", 8080))
        .unwrap()[0];
    assert!(f.service.is_none() && f.confidence == 1.0, "{f:?}");
}

#[test]
fn a_clusterip_on_the_wire_is_still_the_sdks_dnat() {
    // Without socket LB (or from outside a pod) the veth shows the ClusterIP and the tunnel the
    // backend: one edge through web, by DNAT, not by socket LB.
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(6, "10.11.0.5", 41000, "10.96.0.10", 80)
                .at(0)
                .fingerprint(fp::TCP_SYN_ISN, 42),
        )
        .row(
            Row::flow(6, "10.11.0.5", 41000, "10.11.1.9", 8080)
                .at(2)
                .vxlan(CLIENT_ID, "172.31.0.11", "172.31.0.12", 8472)
                .fingerprint(fp::TCP_SYN_ISN, 42),
        )
        .build();
    let flows = harness("{}").run(&b).unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!(f.service.as_ref().unwrap().name, "shop/web");
    assert!(
        has(f, "service:dnat") && !has(f, "cilium:socket-lb"),
        "{f:?}"
    );
    assert_eq!(f.server.ip, ip("10.11.1.9"));
}

#[test]
fn bpf_masquerade_to_the_node_is_recovered_from_the_pods_own_view() {
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(6, "10.11.0.5", 41000, "203.0.113.9", 443)
                .at(0)
                .fingerprint(fp::TCP_SYN_ISN, 77),
        )
        .row(
            Row::flow(6, "172.31.0.11", 61000, "203.0.113.9", 443)
                .at(1)
                .fingerprint(fp::TCP_SYN_ISN, 77),
        )
        .build();
    let flows = harness("{}").run(&b).unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!((f.client.role, f.client.ip), (Role::Pod, ip("10.11.0.5")));
    assert_eq!(
        (f.server.role, f.server.ip),
        (Role::External, ip("203.0.113.9"))
    );
    assert!(has(f, "nat:masquerade"), "{f:?}");
}

#[test]
fn native_routing_shows_pod_addresses_on_the_uplink() {
    let row = |at| {
        Row::flow(6, "10.11.0.5", 41000, "10.11.1.10", 7777)
            .at(at)
            .fingerprint(fp::TCP_SYN_ISN, 3)
    };
    let b = points(BatchBuilder::new())
        .row(row(0))
        .row(row(1))
        .row(row(2))
        .build();
    let f = &harness(r#"{"routing_mode": "native"}"#).run(&b).unwrap()[0];
    assert!(
        has(f, "cilium:native-routing") && !has(f, "cilium:vxlan"),
        "{f:?}"
    );
    assert_eq!((f.server.role, f.server.ip), (Role::Pod, ip("10.11.1.10")));
    // In tunnel mode the same rows are no native routing.
    let f = &harness("{}").run(&b).unwrap()[0];
    assert!(!has(f, "cilium:native-routing"), "{f:?}");
}

#[test]
fn geneve_mode_reads_identities_from_geneve_and_not_from_vxlan() {
    let mut h = harness(r#"{"tunnel_protocol": "geneve"}"#);
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(6, "10.11.0.5", 41000, "10.11.1.9", 7777)
                .at(2)
                .geneve(CLIENT_ID, "172.31.0.11", "172.31.0.12", &[])
                .fingerprint(fp::TCP_SYN_ISN, 9),
        )
        .row(
            Row::flow(6, "10.11.1.9", 7777, "10.11.0.5", 41000)
                .at(4)
                .geneve(LEDGER_ID, "172.31.0.12", "172.31.0.11", &[])
                .fingerprint(fp::TCP_SYNACK_ISN, 9),
        )
        .build();
    let f = &h.run(&b).unwrap()[0];
    assert!(has(f, "cilium:geneve"), "{f:?}");
    assert_eq!(f.server.name, "billing/ledger");
    // A VXLAN frame on 8472 is nobody's identity in Geneve mode.
    let f = &h
        .run(&cross_node("10.11.1.9", 7777, CLIENT_ID, LEDGER_ID))
        .unwrap()[0];
    assert!(
        !has(f, "cilium:vxlan") && !has(f, "cilium:identity"),
        "{f:?}"
    );
}

#[test]
fn node_annotations_stand_in_for_a_missing_cilium_node() {
    let mut n = node("n3", "172.31.0.13");
    n.annotations = vec![
        (cluster::POD_CIDR[0].into(), "10.11.3.0/24".into()),
        (cluster::CILIUM_HOST[0].into(), "10.11.3.1".into()),
    ];
    let inv = Inventory {
        nodes: vec![n],
        ..Inventory::default()
    };
    let (c, warnings) = cluster::Cluster::new(inv, cluster::Settings::default());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        c.node_addr(ip("10.11.3.1")),
        Some(("n3", cluster::NodeAddr::Router))
    );
    assert!(c.in_pod_cidr(ip("10.11.3.77")));
    assert_eq!(c.class(ip("10.11.3.77"), None), Class::POD);
    assert_eq!(c.class(ip("8.8.8.8"), None), Class::External);
}

#[test]
fn bad_objects_are_warnings_naming_the_object_and_field_and_the_rest_is_used() {
    let mut inv = inventory();
    inv.objects.push(object(
        "CiliumEndpoint",
        "shop",
        "broken",
        serde_json::json!({"status": {"identity": {"id": "many"}}}),
    ));
    inv.objects.push(cilium_node(
        "n9",
        "not-an-ip",
        "10.11.9.1",
        "10.11.9.2",
        "10.11.9.0/24",
    ));
    inv.objects.push(CniObject {
        json: "{".into(),
        ..identity_object(1000, "x")
    });
    let (c, warnings) = cluster::Cluster::new(inv, cluster::Settings::default());
    let all = warnings.join("\n");
    assert!(
        all.contains("CiliumEndpoint shop/broken: status.identity.id"),
        "{all}"
    );
    assert!(
        all.contains("CiliumNode n9: spec.addresses: \"not-an-ip\""),
        "{all}"
    );
    assert!(all.contains("CiliumIdentity 1000"), "{all}");
    assert_eq!(warnings.len(), 3, "{all}");
    // The rest was read.
    assert_eq!(
        c.node_addr(ip("10.11.9.1")),
        Some(("n9", cluster::NodeAddr::Router))
    );
    assert!(c.knows_identity(SERVER_ID));
    // The plugin says so, and keeps working.
    let err = Harness::<Cilium>::new()
        .inventory(inventory_with_broken())
        .err()
        .expect("a bad-inventory error");
    assert_eq!(err.code, "bad-inventory");
}

fn inventory_with_broken() -> Inventory {
    let mut inv = inventory();
    inv.objects.push(cilium_node(
        "n9",
        "not-an-ip",
        "10.11.9.1",
        "10.11.9.2",
        "10.11.9.0/24",
    ));
    inv
}

#[test]
fn options_are_checked_by_name() {
    let err =
        |json: &str| -> PluginError { Harness::<Cilium>::new().configure(json).err().unwrap() };
    assert_eq!(
        err(r#"{"tunnel_protocol": "gre"}"#).field,
        "tunnel_protocol"
    );
    assert_eq!(err(r#"{"routing_mode": "direct"}"#).field, "routing_mode");
    assert_eq!(err(r#"{"tunnel_port": 70000}"#).field, "tunnel_port");
    assert_eq!(err(r#"{"tunnell_port": 1}"#).field, "tunnell_port");
    // The decoders are told the tunnel: VXLAN on 8472 by default, Geneve on its port, none
    // in native routing.
    let decoding = |json: &str| {
        let mut p = Cilium::default();
        p.configure(&Options::parse(json).unwrap()).unwrap();
        let d = p.decoding();
        (d.vxlan_ports, d.geneve_ports)
    };
    assert_eq!(decoding("{}"), (vec![8472], vec![]));
    assert_eq!(
        decoding(r#"{"tunnel_protocol": "geneve", "tunnel_port": 6091}"#),
        (vec![], vec![6091])
    );
    assert_eq!(decoding(r#"{"routing_mode": "native"}"#), (vec![], vec![]));
}
