//! The peer-pod rule on hand-built batches, run natively through the SDK's test kit.

use super::*;
use cniscope_sdk::batch::fp;
use cniscope_sdk::testkit::{self, Harness, Row};
use cniscope_sdk::{NodeInfo, PluginError};

fn ip(s: &str) -> Ip {
    s.parse().unwrap()
}

fn node(name: &str, addr: &str, cidr: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        addresses: vec![ip(addr)],
        pod_cidrs: vec![cidr.into()],
        annotations: vec![],
        labels: vec![],
    }
}

fn harness(options: &str) -> Harness<Kata> {
    Harness::<Kata>::new()
        .configure(options)
        .unwrap()
        .inventory(Inventory {
            nodes: vec![
                node("n1", "192.168.10.162", "10.132.0.0/23"),
                node("n2", "192.168.10.163", "10.132.2.0/23"),
            ],
            pods: [
                testkit::pod("default", "client", "n1", "10.132.0.5"),
                testkit::pod("default", "nginx-priv", "n2", "10.132.2.46"),
            ]
            .into_iter()
            .collect(),
            ..Inventory::default()
        })
        .unwrap()
}

fn points(b: BatchBuilder) -> BatchBuilder {
    b.point("n1", "vethclient", IfaceKind::PodVeth, Direction::Ingress) // 0
        .point("n2", "ens3", IfaceKind::Uplink, Direction::Egress) // 1
        .point("n2", "ens3", IfaceKind::Uplink, Direction::Ingress) // 2
}

/// client -> nginx-priv:80 seen at the client's veth and, on the worker, in the tunnel to
/// the pod VM 192.168.10.201 (VNI `vni` on `port`), the reply coming back through it.
fn to_peer_pod(vni: u32, port: u16) -> ObservationBatch {
    let fwd = Row::flow(6, "10.132.0.5", 40000, "10.132.2.46", 80)
        .fingerprint(fp::TCP_SYN_ISN, 11)
        .counters(5, 500);
    let back = Row::flow(6, "10.132.2.46", 80, "10.132.0.5", 40000)
        .fingerprint(fp::TCP_SYNACK_ISN, 12)
        .counters(4, 4000);
    points(BatchBuilder::new())
        .row(fwd.clone().at(0))
        .row(
            fwd.at(1)
                .vxlan(vni, "192.168.10.163", "192.168.10.201", port),
        )
        .row(
            back.at(2)
                .vxlan(vni, "192.168.10.201", "192.168.10.163", port),
        )
        .build()
}

#[test]
fn a_connection_through_a_peer_pod_tunnel_is_one_flow_to_the_pod_naming_the_vm() {
    let flows = harness("{}").run(&to_peer_pod(555_005, 4789)).unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    assert_eq!((f.client.role, f.client.ip), (Role::Pod, ip("10.132.0.5")));
    assert_eq!(
        (f.server.role, f.server.ip, f.server_port),
        (Role::Pod, ip("10.132.2.46"), 80),
        "the pod, never the VM"
    );
    assert_eq!(f.evidence, ["kata:peer-pod"]);
    assert!(
        f.observed_at
            .contains(&"peer-pod-vm/192.168.10.201".to_string()),
        "{:?}",
        f.observed_at
    );
    assert_eq!(f.packets, 9, "counted once, both directions");
    assert_ne!(f.connection, 0);
}

#[test]
fn a_gateway_address_is_left_unknown_for_the_cnis_plugin_to_name() {
    // The node pinging the peer pod from its gateway address in its pod range (flannel's
    // flannel.1 .0): not a pod to this plugin, so the CNI plugin's flow naming the node wins.
    let b = points(BatchBuilder::new())
        .row(Row::flow(1, "10.132.0.0", 8, "10.132.2.46", 0).at(1).vxlan(
            555_005,
            "192.168.10.163",
            "192.168.10.201",
            4789,
        ))
        .build();
    let f = &harness("{}").run(&b).unwrap()[0];
    assert_eq!(f.client.role, Role::Unknown, "{f:?}");
    assert_eq!((f.server.role, f.server.ip), (Role::Pod, ip("10.132.2.46")));
}

#[test]
fn other_vxlan_on_the_port_and_untunnelled_connections_are_the_cnis() {
    // Calico's VXLAN (VNI 4096 on 4789), a VNI below the range, another port, no tunnel.
    for (vni, port) in [(4096, 4789), (554_999, 4789), (555_005, 8472)] {
        let flows = harness("{}").run(&to_peer_pod(vni, port)).unwrap();
        assert!(flows.is_empty(), "VNI {vni} on {port}: {flows:?}");
    }
    let b = points(BatchBuilder::new())
        .row(Row::flow(6, "10.132.0.5", 40000, "10.132.2.46", 80).at(0))
        .build();
    assert!(harness("{}").run(&b).unwrap().is_empty());
    // The range and port are options.
    let flows = harness(r#"{"vxlan_port": 8472, "vni_min": 7000, "vni_max": 7999}"#)
        .run(&to_peer_pod(7001, 8472))
        .unwrap();
    assert_eq!(flows.len(), 1);
}

#[test]
fn options_are_checked_and_the_port_is_decoded() {
    let err = |json: &str| -> PluginError { Harness::<Kata>::new().configure(json).err().unwrap() };
    assert_eq!(err(r#"{"vni_min": 10, "vni_max": 5}"#).field, "vni_max");
    assert_eq!(err(r#"{"vni_max": 16777216}"#).field, "vni_max");
    assert_eq!(err(r#"{"vxlan_port": -1}"#).field, "vxlan_port");
    assert_eq!(err(r#"{"vni": 5}"#).field, "vni");
    let mut p = Kata::default();
    p.configure(&Options::parse("{}").unwrap()).unwrap();
    assert_eq!(p.decoding().vxlan_ports, vec![4789]);
}

/// client -> nginx-priv:80's SYNs seen at the worker's veth and uplink and, in the pod VM (an
/// agent there named as the adaptor names the VM), arriving on vxlan0; `answered` adds the
/// SYN+ACK back the same way, else the VM's kernel drops the SYNs (`OTHERHOST`).
fn into_the_vm(answered: bool) -> ObservationBatch {
    let vm = "podvm-nginx-priv-1a2b3c4d";
    let syn = || {
        Row::flow(6, "10.132.0.5", 40000, "10.132.2.46", 80)
            .fingerprint(fp::TCP_SYN_ISN, 11)
            .counters(3, 180)
    };
    let synack = || {
        Row::flow(6, "10.132.2.46", 80, "10.132.0.5", 40000)
            .fingerprint(fp::TCP_SYNACK_ISN, 12)
            .counters(3, 180)
    };
    let tunnel = |r: Row, src: &str, dst: &str| r.vxlan(555_005, src, dst, 4789);
    let mut b = BatchBuilder::new()
        .point("n2", "vethnginx", IfaceKind::PodVeth, Direction::Egress) // 0
        .point("n2", "vethnginx", IfaceKind::PodVeth, Direction::Ingress) // 1
        .point("n2", "ens3", IfaceKind::Uplink, Direction::Egress) // 2
        .point("n2", "ens3", IfaceKind::Uplink, Direction::Ingress) // 3
        .point(vm, "vxlan0", IfaceKind::Tunnel, Direction::Ingress) // 4
        .point(vm, "vxlan0", IfaceKind::Tunnel, Direction::Egress) // 5
        .row(syn().at(0))
        .row(tunnel(syn().at(2), "192.168.10.163", "192.168.10.201"))
        .row(syn().at(4));
    if answered {
        b = b
            .row(synack().at(5))
            .row(tunnel(synack().at(3), "192.168.10.201", "192.168.10.163"))
            .row(synack().at(1));
    } else {
        b = b.drop_point(vm, "vxlan0", "OTHERHOST").row(syn().at(6));
    }
    b.build()
}

#[test]
fn the_peer_pods_tunnel_is_its_path_to_the_vms_vxlan0() {
    let flows = harness("{}").run(&into_the_vm(true)).unwrap();
    let path = flows[0].path.as_ref().expect("kata states the path");
    assert_eq!(path.verdict, Verdict::Ok, "{path:?}");
    // The VM's kernel drops the frames (seed 003's MAC mismatch): lost after vxlan0.
    let flows = harness("{}").run(&into_the_vm(false)).unwrap();
    let path = flows[0].path.as_ref().unwrap();
    assert_eq!(path.verdict, Verdict::Lost, "{path:?}");
    assert_eq!(path.last_seen, "podvm-nginx-priv-1a2b3c4d/vxlan0:ingress");
    assert_eq!(path.drops, [("OTHERHOST".to_string(), 3)]);
}

#[test]
fn without_an_agent_in_the_vm_its_hops_are_unwatched() {
    // Seen to the worker's uplink, answered: ok; not answered: where it went after the
    // worker cannot be told.
    let flows = harness("{}").run(&to_peer_pod(555_005, 4789)).unwrap();
    assert_eq!(flows[0].path.as_ref().unwrap().verdict, Verdict::Ok);
    let b = points(BatchBuilder::new())
        .row(
            Row::flow(6, "10.132.0.5", 40000, "10.132.2.46", 80)
                .fingerprint(fp::TCP_SYN_ISN, 11)
                .at(1)
                .vxlan(555_005, "192.168.10.163", "192.168.10.201", 4789),
        )
        .build();
    let path = harness("{}").run(&b).unwrap()[0].path.clone().unwrap();
    assert_eq!(path.verdict, Verdict::PartialCapture, "{path:?}");
    assert_eq!(path.last_seen, "n2/<uplink>:egress");
}
