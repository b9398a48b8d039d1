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

pub fn flow(c: &Cluster, b: &Backend, conn: &Connection) -> Option<LogicalFlow> {
    let first = conn.members.first()?;
    if is_link_control(first) {
        return None;
    }
    let mut evidence: Vec<String> = Vec::new();
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
            evidence.push("nat:snat-recovered".into());
        }
        Endpoint::pod(*ip)
    } else if let Some((ip, Addr::Gateway(n) | Addr::NodeIp(n))) = sources
        .iter()
        .find(|(_, a)| matches!(a, Addr::Gateway(_) | Addr::NodeIp(_)))
    {
        if matches!(c.classify(*ip), Addr::Gateway(_)) {
            // The node itself, or a pod whose pre-SNAT view we never saw: say which we cannot tell.
            evidence.push("gateway-unresolved".into());
            confidence = 0.7;
        }
        Endpoint::node(&c.nodes[*n].name, *ip)
    } else if let Some((ip, _)) = sources.iter().find(|(_, a)| *a == Addr::External) {
        Endpoint::external(*ip)
    } else {
        Endpoint::unknown(first.src)
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
        Some((ip, port, Addr::Pod)) => (Endpoint::pod(*ip), *port),
        Some((ip, port, Addr::Gateway(n) | Addr::NodeIp(n))) => {
            (Endpoint::node(&c.nodes[*n].name, *ip), *port)
        }
        Some((ip, port, Addr::External)) => {
            if sources.iter().any(|(_, a)| matches!(a, Addr::NodeIp(_)))
                && matches!(client.role, Role::Pod)
            {
                evidence.push("nat:masquerade".into());
            }
            (Endpoint::external(*ip), *port)
        }
        Some((ip, port, _)) => (Endpoint::unknown(*ip), *port),
        None => {
            let (ip, port) = service.unwrap_or((first.dst, first.dst_port));
            evidence.push("no-backend-seen".into());
            (Endpoint::service(ip), port)
        }
    };
    if service.is_some() && backend.is_some() {
        evidence.push("service:dnat".into());
    }

    // How the packets travelled.
    for m in &conn.members {
        match m.tunnel {
            Tunnel::Vxlan if m.vni == b.vni && m.outer_dst_port == b.vxlan_port => {
                evidence.push("flannel:vxlan".into());
                // Rule 1: the VTEP must be a node, and the inner MAC its VtepMAC.
                if c.node_by_ip(m.outer_src).is_none() && c.node_by_vtep_mac(m.src_mac).is_none() {
                    evidence.push("flannel:unknown-vtep".into());
                    confidence = confidence.min(0.5);
                }
            }
            Tunnel::UdpEncap if m.outer_dst_port == b.udp_port => {
                evidence.push("flannel:udp".into())
            }
            Tunnel::None if is_host_gw(c, &conn.point(m).iface, m) => {
                evidence.push("flannel:host-gw".into())
            }
            _ => {}
        }
    }

    let (packets, bytes, first_ns, last_ns) = conn.counters();
    let mut f = FlowBuilder::new(client, server, first.protocol, port)
        .counters(packets, bytes, first_ns, last_ns)
        .confidence(confidence);
    if let Some((ip, _)) = service {
        f = f.service(Endpoint::service(ip));
    }
    for e in &evidence {
        f = f.evidence(e);
    }
    for p in conn.points() {
        f = f.observed_at(p);
    }
    Some(f.build())
}

/// host-gw: pod traffic between nodes, unencapsulated, on an uplink.
fn is_host_gw(c: &Cluster, iface: &str, m: &Seen) -> bool {
    let uplink = ["eth", "ens", "enp", "eno", "bond"]
        .iter()
        .any(|p| iface.starts_with(p));
    let (s, d) = (c.lease_node(m.src), c.lease_node(m.dst));
    uplink && s.is_some() && d.is_some() && s != d
}

/// Link-level control traffic (IGMP, MLD and neighbour discovery to multicast groups, or from
/// the unspecified address) is not a workload talking: not an edge of the topology.
fn is_link_control(m: &Seen) -> bool {
    let multicast = |ip: Ip| {
        let b = ip.bits();
        if ip.is_v4() {
            (b as u32) >> 28 == 0xe || b as u32 == u32::MAX
        } else {
            b >> 120 == 0xff
        }
    };
    multicast(m.dst) || m.src.is_none() || (!m.src.is_v4() && m.src.bits() == 0)
}
