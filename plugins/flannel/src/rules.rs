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
    /// `flannel.<vni>`: the VXLAN device of a node whose backend-data names no VNI.
    pub vxlan_device: String,
}

/// Emits the connection's logical flow into `out`, unless it is control traffic.
pub fn flow(c: &Cluster, b: &Backend, conn: &Connection, out: &mut Flows) {
    let Some(mut decision) = conn.decide(&c.index, |m, side| c.class(side.of(m))) else {
        return;
    };
    let evidence = &mut decision.evidence;
    let confidence = &mut decision.ends.confidence;

    // How the packets travelled.
    let mut mode: Option<&str> = None;
    for m in &conn.members {
        match m.tunnel {
            Tunnel::Vxlan if m.outer_dst_port == b.vxlan_port && is_flannel_vni(c, b, m) => {
                evidence.push("flannel:vxlan");
                mode = Some("vxlan");
                // Rule 1: the VTEP must be a node, and the inner MAC its VtepMAC.
                if c.node_by_ip(m.outer_src).is_none() && c.node_by_vtep_mac(m.src_mac).is_none() {
                    evidence.push("flannel:unknown-vtep");
                    *confidence = confidence.min(0.5);
                }
            }
            Tunnel::UdpEncap if m.outer_dst_port == b.udp_port => {
                evidence.push("flannel:udp");
                mode = Some("udp");
            }
            Tunnel::None if is_host_gw(c, &conn.point(m).iface, m) => {
                evidence.push("flannel:host-gw");
                mode = Some("host-gw");
            }
            _ => {}
        }
    }

    // The path: pod veth, the backend's device and the uplink on each node. The backend is
    // the client node's annotation, else what this connection showed.
    let at = conn.members.iter().map(|m| m.first_ns).min().unwrap_or(0);
    let client_node = match Place::of(&c.index, &decision.ends.client, at) {
        Place::Pod(n) | Place::Node(n) => c.node_named(n),
        Place::Elsewhere => None,
    };
    let backend = client_node
        .map(|n| n.backend.as_str())
        .filter(|b| !b.is_empty())
        .or(mode);
    let device = match backend {
        Some("host-gw") => None,
        Some("udp") => Some("flannel0"),
        _ => Some(
            client_node
                .and_then(|n| n.vxlan_device.as_deref())
                .unwrap_or(&b.vxlan_device),
        ),
    };
    decision.path = Some(decision.usual_path(&c.index, conn, device));
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
