//! From one stitched connection to one logical flow, by Calico's rules (CNI-RULES.md):
//! (1) a pod is named by its host-side `cali` veth when a view was taken there (so a reused IP
//! still names the right pod), else by its IP; (2) tunnel addresses and node IPs are the node,
//! unless a fingerprint-matched view from the pod's veth names the real client (natOutgoing,
//! kube-proxy SNAT); (3) IPIP, VXLAN (VNI 4096, port 4789) and plain BGP routing are told apart
//! by how the packets travelled; (4) one flow per connection, counted at one point.

use crate::cluster::{Addr, Cluster};
use cniscope_sdk::prelude::*;

/// Settings the rules need from the plugin's options.
pub struct Encap {
    pub vxlan_vni: u32,
    pub vxlan_port: u16,
}

/// One end of the connection, as the rules decide it.
struct End {
    role: Role,
    ip: Ip,
    /// "namespace/pod" when the veth named it, the node's name for nodes.
    name: String,
}

impl End {
    fn new(role: Role, ip: Ip) -> End {
        End {
            role,
            ip,
            name: String::new(),
        }
    }
    fn as_ref(&self) -> EndpointRef<'_> {
        EndpointRef {
            role: self.role,
            ip: self.ip,
            name: &self.name,
        }
    }
}

/// The pod whose host-side veth saw `m` carrying `ip` (its own address) as source or
/// destination: Calico's name for the interface says which pod it is.
fn pod_at_veth(c: &Cluster, conn: &Connection, m: &Seen, ip: Ip) -> Option<String> {
    let p = c.pod_by_veth(&conn.point(m).iface)?;
    p.ips
        .contains(&ip)
        .then(|| format!("{}/{}", p.namespace, p.name))
}

/// Emits the connection's logical flow into `out`, unless it is link-level control traffic.
pub fn flow(c: &Cluster, e: &Encap, conn: &Connection, out: &mut Flows) {
    let Some(first) = conn.members.first() else {
        return;
    };
    if first.is_link_control() {
        return;
    }
    let mut evidence: Vec<&'static str> = Vec::with_capacity(4);
    let mut confidence = 1.0f32;

    // Client: the real source, which only the pod's own veth still shows after SNAT.
    let sources: Vec<(&Seen, Addr)> = conn
        .forward_members()
        .map(|m| (m, c.classify(m.src)))
        .collect();
    let natted = sources
        .iter()
        .any(|(_, a)| matches!(a, Addr::Tunnel(_) | Addr::NodeIp(_)));
    let by_veth = sources
        .iter()
        .find_map(|(m, _)| pod_at_veth(c, conn, m, m.src).map(|name| (m.src, name)));
    let client = if let Some((ip, name)) = by_veth {
        evidence.push("calico:veth-name");
        End {
            name,
            ..End::new(Role::Pod, ip)
        }
    } else if let Some((m, _)) = sources.iter().find(|(_, a)| *a == Addr::Pod) {
        End::new(Role::Pod, m.src)
    } else if let Some((m, Addr::Tunnel(n) | Addr::NodeIp(n))) = sources
        .iter()
        .find(|(_, a)| matches!(a, Addr::Tunnel(_) | Addr::NodeIp(_)))
    {
        if matches!(c.classify(m.src), Addr::Tunnel(_)) {
            evidence.push("calico:tunnel-address");
        }
        End {
            name: c.nodes[*n].name.clone(),
            ..End::new(Role::Node, m.src)
        }
    } else if let Some((m, _)) = sources.iter().find(|(_, a)| *a == Addr::External) {
        End::new(Role::External, m.src)
    } else {
        End::new(Role::Unknown, first.src)
    };
    if client.role == Role::Pod && natted {
        evidence.push("nat:snat-recovered");
        if conn.joined_by_time {
            evidence.push("stitch:time");
            confidence = 0.9;
        }
    }

    // Server: the post-DNAT destination; the pre-DNAT one names the service.
    let dests: Vec<(&Seen, Addr)> = conn
        .forward_members()
        .map(|m| (m, c.classify(m.dst)))
        .collect();
    let service = dests
        .iter()
        .find(|(_, a)| *a == Addr::Service)
        .map(|(m, _)| (m.dst, m.dst_port));
    let backend = dests.iter().find(|(_, a)| *a != Addr::Service);
    let server_by_veth = dests
        .iter()
        .find_map(|(m, _)| pod_at_veth(c, conn, m, m.dst).map(|name| (m.dst, m.dst_port, name)));
    let (server, port) = match (server_by_veth, backend) {
        (Some((ip, port, name)), _) => {
            evidence.push("calico:veth-name");
            (
                End {
                    name,
                    ..End::new(Role::Pod, ip)
                },
                port,
            )
        }
        (None, Some((m, Addr::Pod))) => (End::new(Role::Pod, m.dst), m.dst_port),
        (None, Some((m, Addr::Tunnel(n) | Addr::NodeIp(n)))) => (
            End {
                name: c.nodes[*n].name.clone(),
                ..End::new(Role::Node, m.dst)
            },
            m.dst_port,
        ),
        (None, Some((m, Addr::External))) => {
            if client.role == Role::Pod && natted {
                // natOutgoing: the pool's pods leave as the node IP.
                evidence.push("nat:masquerade");
            }
            (End::new(Role::External, m.dst), m.dst_port)
        }
        (None, Some((m, _))) => (End::new(Role::Unknown, m.dst), m.dst_port),
        (None, None) => {
            let (ip, port) = service.unwrap_or((first.dst, first.dst_port));
            evidence.push("no-backend-seen");
            (End::new(Role::Service, ip), port)
        }
    };
    if service.is_some() && server.role != Role::Service {
        evidence.push("service:dnat");
    }

    // How the packets travelled.
    for m in &conn.members {
        match m.tunnel {
            Tunnel::IpInIp => evidence.push("calico:ipip"),
            Tunnel::Vxlan if m.vni == e.vxlan_vni && m.outer_dst_port == e.vxlan_port => {
                evidence.push("calico:vxlan");
                if c.node_by_ip(m.outer_src).is_none() {
                    evidence.push("calico:unknown-vtep");
                    confidence = confidence.min(0.5);
                }
            }
            Tunnel::None if is_routed(c, &conn.point(m).iface, m) => evidence.push("calico:bgp"),
            _ => {}
        }
    }

    let ends = Ends {
        client: client.as_ref(),
        server: server.as_ref(),
        service: service.map(|(ip, _)| EndpointRef {
            role: Role::Service,
            ip,
            name: "",
        }),
        server_port: port,
        confidence,
    };
    conn.emit(out, ends, evidence);
}

/// BGP mode (and CrossSubnet within a subnet): workload packets, unencapsulated, on a node's
/// uplink. With IPIP or VXLAN the uplink shows only the outer node -> node header.
fn is_routed(c: &Cluster, iface: &str, m: &Seen) -> bool {
    is_uplink_name(iface) && (c.block_node(m.src).is_some() || c.block_node(m.dst).is_some())
}
