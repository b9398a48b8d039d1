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
    let at = conn.members.iter().map(|m| m.first_ns).min().unwrap_or(0);
    let server = peer_pod(index, decision.ends.server.ip, at);
    let client = peer_pod(index, decision.ends.client.ip, at);
    let vm_nodes: Vec<String> = [server, client]
        .iter()
        .flatten()
        .map(|p| vm_node(conn, p.name))
        .collect();
    // The peer pod's layer of the path; the CNI's plugin states the layer before the
    // worker's pod veth, and the edge takes the worse of the two verdicts.
    decision.path = match (server, client) {
        (Some(p), _) => Some(peer_pod_path(p.node, &vm_nodes[0], Direction::Ingress)),
        (None, Some(p)) => Some(peer_pod_path(p.node, &vm_nodes[0], Direction::Egress)),
        (None, None) => None,
    };
    let points: Vec<String> = vms.iter().map(|ip| format!("peer-pod-vm/{ip}")).collect();
    let points: Vec<&str> = points.iter().map(String::as_str).collect();
    conn.emit_with_points(out, decision, &points);
}

/// The pod at `ip` at `at_ns`, if one is scheduled on a node (the peer pod's worker).
fn peer_pod(index: &InventoryIndex, ip: Ip, at_ns: u64) -> Option<Pod<'_>> {
    index
        .pods_by_ip(ip)
        .find(|p| !p.node.is_empty() && !p.host_network && p.alive_at(at_ns))
}

/// The capture node of a peer pod's VM: an agent in the pod VM names itself as the
/// cloud-api-adaptor names the VM, `podvm-<pod name>` (then `-<suffix>`). The window's
/// watched points tell which; unwatched, the name stands for a node nobody watches.
fn vm_node(conn: &Connection, pod: &str) -> String {
    let prefix = format!("podvm-{pod}");
    conn.points()
        .iter()
        .map(|p| p.node.as_str())
        .find(|n| {
            n.strip_prefix(&prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
        })
        .unwrap_or(&prefix)
        .to_string()
}

/// The peer pod's tunnel as hops: into the pod from the worker (`toward` ingress: the peer
/// pod serves) through the worker's pod veth, its uplink and the VM's `vxlan0`; replies
/// retrace them. When the peer pod is the client its requests take the replies' way.
fn peer_pod_path<'a>(worker: &'a str, vm: &'a str, toward: Direction) -> ExpectedPath<'a> {
    let mut path = ExpectedPath::new()
        .hop(worker, IfaceKind::PodVeth, None, Direction::Egress)
        .hop(worker, IfaceKind::Uplink, None, Direction::Egress)
        .hop(vm, IfaceKind::Tunnel, Some(VM_DEVICE), Direction::Ingress)
        .mirrored();
    if toward == Direction::Egress {
        std::mem::swap(&mut path.requests, &mut path.replies);
    }
    path
}

/// The pod VM's end of the tunnel (the cloud-api-adaptor's podvm image).
pub const VM_DEVICE: &str = "vxlan0";

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
