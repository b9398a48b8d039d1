//! Host types -> WIT types: observations become one columnar batch, the inventory a snapshot.

use super::bindings::wit;
use crate::inventory::{Inventory, Pod, ServicePort};
use crate::sources::aggregate::{CapturePoint, Direction, IfaceKind, Observation};
use std::collections::HashMap;
use std::net::IpAddr;

pub fn ip(addr: IpAddr) -> wit::Ip {
    let bits = u128::from(match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    });
    ip_bits(bits)
}

pub fn ip_bits(bits: u128) -> wit::Ip {
    wit::Ip {
        hi: (bits >> 64) as u64,
        lo: bits as u64,
    }
}

pub fn ip_to_std(ip: wit::Ip) -> IpAddr {
    bits_to_std(((ip.hi as u128) << 64) | ip.lo as u128)
}

/// 128-bit (IPv4-mapped) address -> std address.
pub fn bits_to_std(bits: u128) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(bits);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn point(p: &CapturePoint) -> wit::CapturePoint {
    wit::CapturePoint {
        node: p.node.clone(),
        iface: p.iface.clone(),
        kind: match p.kind {
            IfaceKind::PodVeth => wit::IfaceKind::PodVeth,
            IfaceKind::Bridge => wit::IfaceKind::Bridge,
            IfaceKind::Tunnel => wit::IfaceKind::Tunnel,
            IfaceKind::Uplink => wit::IfaceKind::Uplink,
            IfaceKind::Other => wit::IfaceKind::Other,
            IfaceKind::KernelDrop => wit::IfaceKind::KernelDrop,
        },
        direction: match p.direction {
            Direction::Ingress => wit::Direction::Ingress,
            Direction::Egress => wit::Direction::Egress,
            Direction::Unknown => wit::Direction::Unknown,
        },
        drop_reason: p.drop_reason.clone(),
    }
}

/// Builds one columnar batch. `points` is the source's point table: observations index into it.
pub fn batch(points: &[CapturePoint], obs: &[Observation]) -> wit::ObservationBatch {
    let n = obs.len();
    macro_rules! col {
        ($f:expr) => {
            obs.iter().map($f).collect::<Vec<_>>()
        };
    }
    let mut geneve = wit::GeneveOptions {
        obs: Vec::new(),
        class: Vec::new(),
        type_: Vec::new(),
        data_start: Vec::new(),
        data_len: Vec::new(),
        data: Vec::new(),
    };
    for (i, o) in obs.iter().enumerate() {
        for g in &o.geneve {
            geneve.obs.push(i as u32);
            geneve.class.push(g.class);
            geneve.type_.push(g.kind);
            geneve.data_start.push(geneve.data.len() as u32);
            geneve.data_len.push(g.data.len().min(255) as u8);
            geneve
                .data
                .extend_from_slice(&g.data[..g.data.len().min(255)]);
        }
    }
    let b = wit::ObservationBatch {
        points: points.iter().map(point).collect(),
        point: col!(|o| o.key.point),
        src_ip_hi: col!(|o| (o.key.src >> 64) as u64),
        src_ip_lo: col!(|o| o.key.src as u64),
        dst_ip_hi: col!(|o| (o.key.dst >> 64) as u64),
        dst_ip_lo: col!(|o| o.key.dst as u64),
        protocol: col!(|o| o.key.protocol),
        src_port: col!(|o| o.key.src_port),
        dst_port: col!(|o| o.key.dst_port),
        src_mac: col!(|o| o.src_mac),
        dst_mac: col!(|o| o.dst_mac),
        tcp_flags: col!(|o| o.tcp_flags),
        fp_kind: col!(|o| o.fp_kind),
        fingerprint: col!(|o| o.fingerprint),
        packets: col!(|o| o.packets),
        bytes: col!(|o| o.bytes),
        first_ns: col!(|o| o.first_ns),
        last_ns: col!(|o| o.last_ns),
        tunnel: col!(|o| o.key.tunnel),
        vni: col!(|o| o.key.vni),
        outer_src_hi: col!(|o| (o.key.outer_src >> 64) as u64),
        outer_src_lo: col!(|o| o.key.outer_src as u64),
        outer_dst_hi: col!(|o| (o.key.outer_dst >> 64) as u64),
        outer_dst_lo: col!(|o| o.key.outer_dst as u64),
        outer_src_port: col!(|o| o.key.outer_src_port),
        outer_dst_port: col!(|o| o.key.outer_dst_port),
        outer_src_mac: col!(|o| o.outer_src_mac),
        outer_dst_mac: col!(|o| o.outer_dst_mac),
        geneve,
    };
    debug_assert_eq!(b.point.len(), n);
    b
}

fn pairs(m: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn ports(p: &[ServicePort]) -> Vec<wit::ServicePort> {
    p.iter()
        .map(|p| wit::ServicePort {
            name: p.name.clone(),
            protocol: p.protocol,
            port: p.port,
            target_port: p.target_port,
            node_port: p.node_port,
        })
        .collect()
}

/// The inventory as a plugin sees it: with the objects of the kinds it asked for (by API
/// version and kind) and the pod annotations it asked for (by key), and no others.
pub fn inventory(inv: &Inventory, wants: &wit::Description) -> wit::Inventory {
    let wanted = &wants.objects;
    wit::Inventory {
        objects: inv
            .objects
            .iter()
            .filter(|o| {
                wanted
                    .iter()
                    .any(|w| w.api_version == o.api_version && w.kind == o.kind)
            })
            .map(|o| wit::CniObject {
                api_version: o.api_version.clone(),
                kind: o.kind.clone(),
                namespace: o.namespace.clone(),
                name: o.name.clone(),
                json: o.json.clone(),
            })
            .collect(),
        nodes: inv
            .nodes
            .iter()
            .map(|n| wit::NodeInfo {
                name: n.name.clone(),
                addresses: n.addresses.iter().copied().map(ip).collect(),
                pod_cidrs: n.pod_cidrs.clone(),
                annotations: pairs(&n.annotations),
                labels: pairs(&n.labels),
            })
            .collect(),
        pods: pod_table(&inv.pods, &wants.pod_annotations),
        services: inv
            .services
            .iter()
            .map(|s| wit::ServiceInfo {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                type_: s.kind.clone(),
                cluster_ips: s.cluster_ips.iter().copied().map(ip).collect(),
                external_ips: s.external_ips.iter().copied().map(ip).collect(),
                ports: ports(&s.ports),
                external_traffic_policy: s.external_traffic_policy.clone(),
            })
            .collect(),
        endpoint_slices: inv
            .endpoint_slices
            .iter()
            .map(|e| wit::EndpointSliceInfo {
                namespace: e.namespace.clone(),
                service: e.service.clone(),
                addresses: e.addresses.iter().copied().map(ip).collect(),
                ports: ports(&e.ports),
            })
            .collect(),
    }
}

/// The pods as columns, each text once (namespaces, nodes and workloads repeat across
/// thousands of pods), with only the annotations whose keys are in `annotations`.
pub fn pod_table(pods: &[Pod], annotations: &[String]) -> wit::PodTable {
    let mut strings = Strings::default();
    let n = pods.len();
    let mut t = wit::PodTable {
        strings: Vec::new(),
        namespace: Vec::with_capacity(n),
        name: Vec::with_capacity(n),
        node: Vec::with_capacity(n),
        workload: Vec::with_capacity(n),
        host_network: Vec::with_capacity(n),
        created_ns: Vec::with_capacity(n),
        deleted_ns: Vec::with_capacity(n),
        ip_end: Vec::with_capacity(n),
        ips: Vec::with_capacity(n),
        annotation_end: Vec::with_capacity(n),
        annotation_key: Vec::new(),
        annotation_value: Vec::new(),
    };
    for p in pods {
        t.namespace.push(strings.at(&p.namespace));
        t.name.push(strings.at(&p.name));
        t.node.push(strings.at(&p.node));
        t.workload.push(strings.at(&p.workload));
        t.host_network.push(p.host_network);
        t.created_ns.push(p.created_ns);
        t.deleted_ns.push(p.deleted_ns);
        t.ips.extend(p.ips.iter().copied().map(ip));
        t.ip_end.push(t.ips.len() as u32);
        for (k, v) in p
            .annotations
            .iter()
            .filter(|(k, _)| annotations.contains(k))
        {
            t.annotation_key.push(strings.at(k));
            t.annotation_value.push(strings.at(v));
        }
        t.annotation_end.push(t.annotation_key.len() as u32);
    }
    t.strings = strings.list;
    t
}

/// A string table under construction: index 0 is "".
struct Strings<'a> {
    list: Vec<String>,
    index: HashMap<&'a str, u32>,
}

impl Default for Strings<'_> {
    fn default() -> Self {
        Strings {
            list: vec![String::new()],
            index: HashMap::from([("", 0)]),
        }
    }
}

impl<'a> Strings<'a> {
    fn at(&mut self, s: &'a str) -> u32 {
        *self.index.entry(s).or_insert_with(|| {
            self.list.push(s.to_string());
            (self.list.len() - 1) as u32
        })
    }
}

/// Flows in one batch a plugin may return: more is a runaway plugin, not a window's traffic
/// (a window of 16 384 observations per call cannot make more flows than that per call, and
/// a flush returns what it held).
pub const MAX_FLOWS: usize = 1 << 22;

/// Checks a plugin's flow batch against the contract's rules before anything reads it: every
/// per-flow column as long as the others, string indexes within `strings`, the evidence and
/// point counts adding up to their lists, confidences within 0..=1, times in order. A batch
/// that breaks one is refused whole (the caller counts it): a plugin's output is never
/// trusted.
pub fn check_flows(b: &wit::FlowBatch) -> Result<(), String> {
    let n = b.protocol.len();
    if n > MAX_FLOWS {
        return Err(format!("{n} flows in one batch, more than {MAX_FLOWS}"));
    }
    let columns = [
        ("client-role", b.client_role.len()),
        ("client-ip-hi", b.client_ip_hi.len()),
        ("client-ip-lo", b.client_ip_lo.len()),
        ("client-name", b.client_name.len()),
        ("server-role", b.server_role.len()),
        ("server-ip-hi", b.server_ip_hi.len()),
        ("server-ip-lo", b.server_ip_lo.len()),
        ("server-name", b.server_name.len()),
        ("service-role", b.service_role.len()),
        ("service-ip-hi", b.service_ip_hi.len()),
        ("service-ip-lo", b.service_ip_lo.len()),
        ("service-name", b.service_name.len()),
        ("server-port", b.server_port.len()),
        ("packets", b.packets.len()),
        ("bytes", b.bytes.len()),
        ("first-ns", b.first_ns.len()),
        ("last-ns", b.last_ns.len()),
        ("confidence", b.confidence.len()),
        ("evidence-count", b.evidence_count.len()),
        ("observed-count", b.observed_count.len()),
        ("continued", b.continued.len()),
        ("connection", b.connection.len()),
        ("path-verdict", b.path_verdict.len()),
        ("path-last-seen", b.path_last_seen.len()),
        ("path-missing-at", b.path_missing_at.len()),
        ("rejected-by-hi", b.rejected_by_hi.len()),
        ("rejected-by-lo", b.rejected_by_lo.len()),
        ("rejected-by-node", b.rejected_by_node.len()),
        ("drop-count", b.drop_count.len()),
    ];
    if let Some((name, len)) = columns.iter().find(|(_, len)| *len != n) {
        return Err(format!("column {name} has {len} values for {n} flows"));
    }
    let strings = b.strings.len();
    let indexes = [
        ("client-name", &b.client_name),
        ("server-name", &b.server_name),
        ("service-name", &b.service_name),
        ("evidence", &b.evidence),
        ("observed-at", &b.observed_at),
        ("path-last-seen", &b.path_last_seen),
        ("path-missing-at", &b.path_missing_at),
        ("rejected-by-node", &b.rejected_by_node),
        ("drop-reason", &b.drop_reason),
    ];
    for (name, column) in indexes {
        if let Some((i, s)) = column
            .iter()
            .enumerate()
            .find(|(_, s)| **s as usize >= strings)
        {
            return Err(format!(
                "{name}[{i}] is string {s}, past the {strings} strings"
            ));
        }
    }
    let evidence: usize = b.evidence_count.iter().map(|&c| c as usize).sum();
    if evidence != b.evidence.len() {
        return Err(format!(
            "evidence counts add up to {evidence}, the evidence list has {}",
            b.evidence.len()
        ));
    }
    let observed: usize = b.observed_count.iter().map(|&c| c as usize).sum();
    if observed != b.observed_at.len() {
        return Err(format!(
            "observed counts add up to {observed}, the observed-at list has {}",
            b.observed_at.len()
        ));
    }
    let drops: usize = b.drop_count.iter().map(|&c| c as usize).sum();
    if drops != b.drop_reason.len() || drops != b.drop_packets.len() {
        return Err(format!(
            "drop counts add up to {drops}, the drop-reason list has {} and drop-packets {}",
            b.drop_reason.len(),
            b.drop_packets.len()
        ));
    }
    if let Some((i, v)) = b.path_verdict.iter().enumerate().find(|(_, v)| **v > 5) {
        return Err(format!("path-verdict[{i}] is {v}, not a verdict (0 to 5)"));
    }
    if let Some((i, c)) = b
        .confidence
        .iter()
        .enumerate()
        .find(|(_, c)| !(0.0..=1.0).contains(*c))
    {
        return Err(format!("confidence[{i}] is {c}, not within 0 to 1"));
    }
    if let Some(i) = (0..n).find(|&i| b.first_ns[i] > b.last_ns[i]) {
        return Err(format!(
            "flow {i} ends ({}) before it begins ({})",
            b.last_ns[i], b.first_ns[i]
        ));
    }
    Ok(())
}
