//! From one stitched connection to one logical flow, by flannel's rules (docs/cni-rules.md):
//! (1) a VTEP (outer source IP, inner source MAC) names a node; (2) an address in a node's
//! lease is a pod of that node; (3) a gateway source (`.0`/`.1` of a lease, or a node IP after
//! MASQUERADE) is the node, unless a fingerprint-matched pre-SNAT view names the real pod;
//! (4) one flow per connection, counted at one point.

use crate::cluster::Cluster;
use cniscope_sdk::prelude::*;

/// Settings the rules need from the plugin's options.
#[derive(Default)]
pub struct Backend {
    pub vni: u32,
    pub vxlan_port: u16,
    pub udp_port: u16,
}

/// Emits the connection's logical flow into `out`, unless it is control traffic.
pub fn flow(c: &Cluster, b: &Backend, conn: &Connection, out: &mut Flows) {
    let Some(mut decision) = conn.decide(&c.index, |m, side| c.class(side.of(m))) else {
        return;
    };
    let evidence = &mut decision.evidence;
    let confidence = &mut decision.ends.confidence;

    // How the packets travelled.
    for m in &conn.members {
        match m.tunnel {
            Tunnel::Vxlan if m.outer_dst_port == b.vxlan_port && is_flannel_vni(c, b, m) => {
                evidence.push("flannel:vxlan");
                // Rule 1: the VTEP must be a node, and the inner MAC its VtepMAC.
                if c.node_by_ip(m.outer_src).is_none() && c.node_by_vtep_mac(m.src_mac).is_none() {
                    evidence.push("flannel:unknown-vtep");
                    *confidence = confidence.min(0.5);
                }
            }
            Tunnel::UdpEncap if m.outer_dst_port == b.udp_port => evidence.push("flannel:udp"),
            Tunnel::None if is_host_gw(c, &conn.point(m).iface, m) => {
                evidence.push("flannel:host-gw")
            }
            _ => {}
        }
    }

    conn.emit(out, decision);
}

/// The VNI is flannel's: the one in the sending node's `backend-data`, else the configured one.
fn is_flannel_vni(c: &Cluster, b: &Backend, m: &Seen) -> bool {
    let annotated = c
        .node_by_ip(m.outer_src)
        .or_else(|| c.node_by_vtep_mac(m.src_mac))
        .and_then(|n| c.nodes[n].vni);
    m.vni == annotated.unwrap_or(b.vni)
}

/// host-gw: packets to or from the pod network, unencapsulated, on a node's uplink. (With
/// VXLAN or udp the uplink only ever shows the outer node -> node header.) The source may be
/// a node IP when the sender is the node itself or kube-proxy masqueraded a service.
fn is_host_gw(c: &Cluster, iface: &str, m: &Seen) -> bool {
    is_uplink_name(iface) && (c.lease_node(m.src).is_some() || c.lease_node(m.dst).is_some())
}
