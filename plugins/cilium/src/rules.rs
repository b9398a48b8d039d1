//! From one stitched connection to one logical flow, by Cilium's rules (docs/cni-rules.md,
//! "Cilium"): (1) in tunnel mode the VNI is the sender's security identity: it names the pod
//! where an address is ambiguous, the node for `reserved:host`/`remote-node`, the world for
//! `reserved:world`; (2) node, router (`cilium_host`) and health addresses are the node;
//! (3) with kube-proxy replacement the ClusterIP is translated at the socket, so no packet
//! carries it: a backend that exactly one service lists names that service (`cilium:socket-lb`);
//! (4) BPF masquerade to the node address is recovered from the pod's own view (the SDK);
//! (5) one flow per connection, counted at one point.

use crate::cluster::Cluster;
use crate::identity;
use cniscope_sdk::prelude::*;

/// How this cluster's datapath carries pod traffic between nodes, from the options.
#[derive(Clone, Copy, Debug, Default)]
pub struct Datapath {
    /// `routing-mode: tunnel`: the tunnel protocol (VXLAN or Geneve) and its UDP port; None
    /// for `routing-mode: native`.
    pub tunnel: Option<(Tunnel, u16)>,
    /// kube-proxy replacement's socket LB (`bpf-lb-sock`) is on.
    pub socket_lb: bool,
}

/// Confidence of a service named from its backend alone: the client may have dialled the
/// pod's address itself.
const SOCKET_LB_CONFIDENCE: f32 = 0.8;
/// Confidence of an end whose address and identity disagree.
const MISMATCH_CONFIDENCE: f32 = 0.5;

impl Datapath {
    /// The member travelled in Cilium's own tunnel, between two nodes, so its VNI is an
    /// identity (a tunnel from a node to something else on the same port, Kata peer-pods' to
    /// a pod VM, is not Cilium's).
    fn carries_identity(&self, c: &Cluster, m: &Seen) -> bool {
        self.tunnel
            .is_some_and(|(kind, port)| m.tunnel == kind && m.outer_dst_port == port)
            && c.between_nodes(m)
    }
}

/// Emits the connection's logical flow into `out`, unless it is control traffic.
pub fn flow(c: &Cluster, d: &Datapath, conn: &Connection, out: &mut Flows) {
    // The identity each tunnelled sender carried: (inner source, identity, outer source).
    let mut senders: Vec<(Ip, u32, Ip)> = Vec::with_capacity(2);
    for m in conn.members.iter().filter(|m| d.carries_identity(c, m)) {
        if !senders.iter().any(|s| s.0 == m.src) {
            senders.push((m.src, m.vni, m.outer_src));
        }
    }
    let identity_of = |ip: Ip| senders.iter().find(|s| s.0 == ip).map(|s| (s.1, s.2));
    let Some(mut decision) = conn.decide(&c.index, |m, side| {
        let ip = side.of(m);
        c.class(ip, identity_of(ip))
    }) else {
        return;
    };

    // How the packets travelled.
    for m in &conn.members {
        if d.carries_identity(c, m) {
            decision.evidence.push(match m.tunnel {
                Tunnel::Geneve => "cilium:geneve",
                _ => "cilium:vxlan",
            });
            match identity::reserved(m.vni) {
                Some(r) => decision.evidence.push(identity::evidence(r)),
                None if !c.knows_identity(m.vni) => {
                    decision.evidence.push("cilium:identity-unknown")
                }
                None => {}
            }
        } else if d.tunnel.is_none()
            && m.tunnel == Tunnel::None
            && is_uplink_name(&conn.point(m).iface)
            && (c.in_pod_cidr(m.src) || c.in_pod_cidr(m.dst))
        {
            decision.evidence.push("cilium:native-routing");
        }
    }
    if decision.evidence.contains(&"cilium:identity-mismatch") {
        decision.ends.confidence = decision.ends.confidence.min(MISMATCH_CONFIDENCE);
    }
    if d.socket_lb {
        socket_lb(c, conn, &mut decision);
    }
    // The path: the pods' lxc veths, cilium_vxlan / cilium_geneve (none when routing
    // natively) and the uplinks; `bpf_redirect_peer` hands arriving packets into the pod past
    // its lxc veth's egress, so no point there is expected.
    let device = match d.tunnel {
        Some((Tunnel::Geneve, _)) => Some("cilium_geneve"),
        Some(_) => Some("cilium_vxlan"),
        None => None,
    };
    decision.path = Some(
        decision
            .usual_path(&c.index, conn, device)
            .skipping(IfaceKind::PodVeth, Direction::Egress),
    );
    conn.emit(out, decision);
}

/// Rule 3: a pod or node that reached a pod directly on an address and port that exactly one
/// service's EndpointSlices list went through that service at the socket.
fn socket_lb<'a>(c: &'a Cluster, conn: &Connection, decision: &mut Decision<'a>) {
    let ends = &mut decision.ends;
    let protocol = conn.members.first().map_or(0, |m| m.protocol);
    if ends.service.is_some()
        || ends.server.role != Role::Pod
        || !matches!(ends.client.role, Role::Pod | Role::Node)
        || !matches!(protocol, 6 | 17 | 132)
    {
        return;
    }
    if let Some((name, ip)) =
        c.index
            .services
            .behind_backend(ends.server.ip, protocol, ends.server_port)
    {
        ends.service = Some(EndpointRef {
            role: Role::Service,
            ip,
            name,
        });
        ends.confidence = ends.confidence.min(SOCKET_LB_CONFIDENCE);
        decision.evidence.push("cilium:socket-lb");
    }
}
