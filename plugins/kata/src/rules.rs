//! Kata peer-pods (docs/cni-rules.md, "Kata peer-pods"): on the worker, the pod's network
//! namespace keeps the CNI's `eth0` and a `vxlan1` whose socket stays in the node's namespace;
//! TC mirrors `eth0`'s ingress to `vxlan1` and back, so what the CNI delivers to the pod
//! leaves the worker's uplink as VXLAN (UDP 4789, a VNI per pod from 555000) to the pod VM,
//! which holds the pod's address on its own `vxlan0`. The inner packet is the pod's own: the
//! CNI's plugin sees the same connection at the pod's veth. So this plugin reports only the
//! connections a peer-pod tunnel carried, named by their inner addresses with
//! `kata:peer-pod` and the VM's address among the points (`peer-pod-vm/<address>`); the host
//! composes them with the CNI plugin's flow of the same connection into one edge.

use cniscope_sdk::prelude::*;

/// The peer-pod tunnels' port and VNI range, from the options.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tunnels {
    pub port: u16,
    pub vni_min: u32,
    pub vni_max: u32,
}

impl Tunnels {
    /// VXLAN on the peer-pod port with a VNI in the range: a peer pod's tunnel. (Calico's
    /// VXLAN is VNI 4096 on 4789, OpenShift-SDN's a NETID between nodes: neither is in it
    /// with the defaults.)
    pub fn carries(&self, m: &Seen) -> bool {
        m.tunnel == Tunnel::Vxlan
            && m.outer_dst_port == self.port
            && (self.vni_min..=self.vni_max).contains(&m.vni)
    }
}

/// Emits the connection's flow when a peer-pod tunnel carried it.
pub fn flow(index: &InventoryIndex, t: &Tunnels, conn: &Connection, out: &mut Flows) {
    // The VM: the tunnel's end that is no node.
    let mut vms: Vec<Ip> = Vec::new();
    for m in conn.members.iter().filter(|m| t.carries(m)) {
        for ip in [m.outer_src, m.outer_dst] {
            if index.node_by_ip(ip).is_none() && !vms.contains(&ip) {
                vms.push(ip);
            }
        }
    }
    if vms.is_empty() {
        return; // not through a peer pod: the CNI's plugin reports it
    }
    let Some(mut decision) = conn.decide(index, |m, side| class(index, side.of(m))) else {
        return;
    };
    decision.evidence.push("kata:peer-pod");
    let points: Vec<String> = vms.iter().map(|ip| format!("peer-pod-vm/{ip}")).collect();
    let points: Vec<&str> = points.iter().map(String::as_str).collect();
    conn.emit_with_points(out, decision, &points);
}

/// What an inner address is, from the inventory alone. An address in a node's pod range that
/// no pod holds is unknown here, not a pod: it is the CNI's to say (flannel's `.0` and `.1`
/// are the node's gateways), and on a composed edge the CNI plugin's better-named flow wins.
fn class(index: &InventoryIndex, ip: Ip) -> Class<'_> {
    if let Some(n) = index.node_by_ip(ip) {
        return Class::node(&n.name);
    }
    if index.is_pod_ip(ip) {
        return Class::POD;
    }
    Class::Unknown
}
