//! From one stitched connection to one logical flow, by flannel's rules (CNI-RULES.md):
//! (1) a VTEP (outer source IP, inner source MAC) names a node; (2) an address in a node's
//! lease is a pod of that node; (3) a gateway source (`.0`/`.1` of a lease, or a node IP after
//! MASQUERADE) is the node, unless a fingerprint-matched pre-SNAT view names the real pod;
//! (4) one flow per connection, counted at one point.

use crate::cluster::{Addr, Cluster};
use cniscope_sdk::prelude::*;

/// Settings the rules need from the plugin's options.
pub struct Backend {
    pub vni: u32,
    pub vxlan_port: u16,
    pub udp_port: u16,
}

/// Emits the connection's logical flow into `out`, unless it is link-level control traffic.
pub fn flow(c: &Cluster, b: &Backend, conn: &Connection, out: &mut Flows) {
    let Some(first) = conn.members.first() else {
        return;
    };
    if first.is_link_control() {
        return;
    }
    let mut evidence: Vec<&'static str> = Vec::with_capacity(4);
    let mut confidence = 1.0f32;

    // Client: the real source, which only the first hop (a pod veth) still shows after SNAT.
    let sources: Vec<(Ip, Addr)> = conn
        .forward_members()
        .map(|m| (m.src, c.classify(m.src)))
        .collect();
    let client = if let Some((ip, _)) = sources.iter().find(|(_, a)| *a == Addr::Pod) {
        if sources
            .iter()
            .any(|(_, a)| matches!(a, Addr::Gateway(_) | Addr::NodeIp(_)))
        {
            evidence.push("nat:snat-recovered");
            if conn.joined_by_time {
                // No fingerprint matched: the one candidate seen at the same moment.
                evidence.push("stitch:time");
                confidence = 0.9;
            }
        }
        EndpointRef {
            role: Role::Pod,
            ip: *ip,
            name: "",
        }
    } else if let Some((ip, Addr::Gateway(n) | Addr::NodeIp(n))) = sources
        .iter()
        .find(|(_, a)| matches!(a, Addr::Gateway(_) | Addr::NodeIp(_)))
    {
        if matches!(c.classify(*ip), Addr::Gateway(_)) {
            // The node itself, or a pod whose pre-SNAT view we never saw: say which we cannot tell.
            evidence.push("gateway-unresolved");
            confidence = 0.7;
        }
        EndpointRef {
            role: Role::Node,
            ip: *ip,
            name: &c.nodes[*n].name,
        }
    } else if let Some((ip, _)) = sources.iter().find(|(_, a)| *a == Addr::External) {
        EndpointRef {
            role: Role::External,
            ip: *ip,
            name: "",
        }
    } else {
        EndpointRef {
            role: Role::Unknown,
            ip: first.src,
            name: "",
        }
    };

    // Server: the post-DNAT destination; the pre-DNAT one names the service.
    let dests: Vec<(Ip, u16, Addr)> = conn
        .forward_members()
        .map(|m| (m.dst, m.dst_port, c.classify(m.dst)))
        .collect();
    let service = dests
        .iter()
        .find(|(_, _, a)| *a == Addr::Service)
        .map(|(ip, port, _)| (*ip, *port));
    let backend = dests.iter().find(|(_, _, a)| !matches!(a, Addr::Service));
    let (server, port) = match backend {
        Some((ip, port, Addr::Pod)) => (
            EndpointRef {
                role: Role::Pod,
                ip: *ip,
                name: "",
            },
            *port,
        ),
        Some((ip, port, Addr::Gateway(n) | Addr::NodeIp(n))) => (
            EndpointRef {
                role: Role::Node,
                ip: *ip,
                name: &c.nodes[*n].name,
            },
            *port,
        ),
        Some((ip, port, Addr::External)) => {
            if sources.iter().any(|(_, a)| matches!(a, Addr::NodeIp(_)))
                && matches!(client.role, Role::Pod)
            {
                evidence.push("nat:masquerade");
            }
            (
                EndpointRef {
                    role: Role::External,
                    ip: *ip,
                    name: "",
                },
                *port,
            )
        }
        Some((ip, port, _)) => (
            EndpointRef {
                role: Role::Unknown,
                ip: *ip,
                name: "",
            },
            *port,
        ),
        None => {
            let (ip, port) = service.unwrap_or((first.dst, first.dst_port));
            evidence.push("no-backend-seen");
            (
                EndpointRef {
                    role: Role::Service,
                    ip,
                    name: "",
                },
                port,
            )
        }
    };
    if service.is_some() && backend.is_some() {
        evidence.push("service:dnat");
    }

    // How the packets travelled.
    for m in &conn.members {
        match m.tunnel {
            Tunnel::Vxlan if m.outer_dst_port == b.vxlan_port && is_flannel_vni(c, b, m) => {
                evidence.push("flannel:vxlan");
                // Rule 1: the VTEP must be a node, and the inner MAC its VtepMAC.
                if c.node_by_ip(m.outer_src).is_none() && c.node_by_vtep_mac(m.src_mac).is_none() {
                    evidence.push("flannel:unknown-vtep");
                    confidence = confidence.min(0.5);
                }
            }
            Tunnel::UdpEncap if m.outer_dst_port == b.udp_port => evidence.push("flannel:udp"),
            Tunnel::None if is_host_gw(c, &conn.point(m).iface, m) => {
                evidence.push("flannel:host-gw")
            }
            _ => {}
        }
    }

    let ends = Ends {
        client,
        server,
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
