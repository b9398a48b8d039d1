//! From one stitched connection to one logical flow, by Calico's rules (docs/cni-rules.md):
//! (1) a pod is named by its host-side `cali` veth when a view was taken there (so a reused IP
//! still names the right pod), else by its IP; (2) tunnel addresses and node IPs are the node,
//! unless a fingerprint-matched view from the pod's veth names the real client (natOutgoing,
//! kube-proxy SNAT); (3) IPIP, VXLAN (VNI 4096, port 4789) and plain BGP routing are told apart
//! by how the packets travelled; (4) one flow per connection, counted at one point.

use crate::cluster::Cluster;
use cniscope_sdk::prelude::*;

/// Settings the rules need from the plugin's options.
#[derive(Default)]
pub struct Encap {
    pub vxlan_vni: u32,
    pub vxlan_port: u16,
}

/// Emits the connection's logical flow into `out`, unless it is control traffic.
pub fn flow(c: &Cluster, e: &Encap, conn: &Connection, out: &mut Flows) {
    let Some(mut decision) = conn.decide(&c.index, |m, side| {
        c.class(&conn.point(m).iface, side.of(m))
    }) else {
        return;
    };
    let evidence = &mut decision.evidence;
    let confidence = &mut decision.ends.confidence;

    // How the packets travelled.
    let mut device = None;
    for m in &conn.members {
        match m.tunnel {
            Tunnel::IpInIp => {
                evidence.push("calico:ipip");
                device = Some("tunl0");
            }
            Tunnel::Vxlan if m.vni == e.vxlan_vni && m.outer_dst_port == e.vxlan_port => {
                evidence.push("calico:vxlan");
                device = Some("vxlan.calico");
                if c.node_by_ip(m.outer_src).is_none() {
                    evidence.push("calico:unknown-vtep");
                    *confidence = confidence.min(0.5);
                }
            }
            Tunnel::None if is_routed(c, &conn.point(m).iface, m) => evidence.push("calico:bgp"),
            _ => {}
        }
    }

    // The path: the pods' cali veths, the encapsulation's device (tunl0, vxlan.calico; none
    // with BGP routing) and the uplinks. A connection lost before any tunnel view shows no
    // mode: its path is veths and uplinks.
    decision.path = Some(decision.usual_path(&c.index, conn, device));
    conn.emit(out, decision);
}

/// BGP mode (and CrossSubnet within a subnet): workload packets, unencapsulated, on a node's
/// uplink. With IPIP or VXLAN the uplink shows only the outer node -> node header.
fn is_routed(c: &Cluster, iface: &str, m: &Seen) -> bool {
    is_uplink_name(iface) && (c.block_node(m.src).is_some() || c.block_node(m.dst).is_some())
}
