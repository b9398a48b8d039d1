//! Connections, packet by packet, at every capture point they cross, and the topology they
//! make: the ground truth a replay of the captures must give.
//!
//! Each packet is written where the kernel would show it: the client pod's veth with the
//! pod's own view (a ClusterIP before DNAT), the client node's uplink after DNAT (and SNAT
//! towards the outside) inside the CNI's carrier, the server node's uplink, the server pod's
//! veth; replies the other way round, un-NATed on the way back.

use super::cluster::{Cluster, Role};
use super::wire::{self, Captures, Ip, Packet, PointId, Transport, Underlay};
use super::{Rng, Shape, Spec, SynthError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// One edge of the expected topology, keyed as the topology document keys its edges.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
pub struct EdgeKey {
    pub src: String,
    pub dst: String,
    pub service: Option<String>,
    pub protocol: String,
    pub port: u16,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub flows: u64,
    pub packets: u64,
}

/// What the generated traffic is: every edge with its connections and packets.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Truth {
    pub connections: u64,
    pub packets: u64,
    pub edges: BTreeMap<EdgeKey, Count>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Pod -> pod on another node, TCP.
    PodTcp,
    /// Pod -> ClusterIP (kube-proxy DNAT on the client's node), TCP.
    ServiceTcp,
    /// Pod -> the DNS ClusterIP, UDP, the same query payload from every client.
    ServiceUdp,
    /// Pod -> pod on the same node.
    SameNode,
    /// A node pinging a pod on another node (from its tunnel address where it has one).
    NodePing,
    /// Pod -> outside the cluster, masqueraded to the node's address.
    External,
    /// A pooled connection: open for seconds, across windows, often open before the capture.
    Pool,
}

const KINDS: [(Kind, u64); 7] = [
    (Kind::PodTcp, 25),
    (Kind::ServiceTcp, 25),
    (Kind::ServiceUdp, 25),
    (Kind::SameNode, 8),
    (Kind::NodePing, 5),
    (Kind::External, 7),
    (Kind::Pool, 5),
];

#[derive(Clone, Copy, Debug)]
struct Tuple {
    src: Ip,
    sport: u16,
    dst: Ip,
    dport: u16,
}

impl Tuple {
    fn rev(self) -> Tuple {
        Tuple {
            src: self.dst,
            sport: self.dport,
            dst: self.src,
            dport: self.sport,
        }
    }
}

/// Where a connection's ends are.
struct Ends {
    client_node: usize,
    client_pod: Option<usize>,
    /// None: outside the cluster.
    server_node: Option<usize>,
    server_pod: Option<usize>,
    /// The client's own view, and the one on the wire and at the server (after NAT).
    view: Tuple,
    wire: Tuple,
    tcp_or_udp_or_icmp: u8,
}

/// Capture points: every pod's veth and every node's uplink.
pub struct Points {
    pub veth: Vec<PointId>,
    pub uplink: Vec<PointId>,
}

struct Writer<'a> {
    c: &'a Cluster,
    shape: Shape,
    caps: &'a mut Captures,
    points: &'a Points,
    /// Each node's IPv4 identification counter for its tunnel carriers.
    carrier_id: Vec<u16>,
    epoch_us: u64,
}

impl Writer<'_> {
    /// The node-to-node (or node-to-outside) frame carrying `inner`, a datagram on the wire.
    fn carrier(&mut self, from: usize, to: Option<usize>, inner: &[u8], hash: u16) -> Vec<u8> {
        let a = &self.c.nodes[from];
        let Some(to) = to else {
            return wire::ethernet(self.c.router_mac, a.mac, inner);
        };
        let b = &self.c.nodes[to];
        self.carrier_id[from] = self.carrier_id[from].wrapping_add(1);
        let u = Underlay {
            src_mac: a.mac,
            dst_mac: b.mac,
            src: a.ip,
            dst: b.ip,
            id: self.carrier_id[from],
        };
        // The kernel's VXLAN source port: a hash of the inner flow in the ephemeral range.
        let sport = 32768 + hash % 28232;
        match self.shape {
            Shape::FlannelVxlan => wire::vxlan(
                &u,
                sport,
                8472,
                1,
                &wire::ethernet(b.tunnel_mac, a.tunnel_mac, inner),
            ),
            Shape::CalicoVxlan => wire::vxlan(
                &u,
                sport,
                4789,
                4096,
                &wire::ethernet(b.tunnel_mac, a.tunnel_mac, inner),
            ),
            // OVN-IC: from the router port to the destination's switch (its datapath key as
            // VNI; the router port is key 1 on every switch).
            Shape::OvnGeneve => wire::geneve(
                &u,
                sport,
                4 + to as u32,
                (1, 3),
                &wire::ethernet(b.gateway_mac, a.gateway_mac, inner),
            ),
            Shape::CalicoIpip => wire::ipip(&u, inner),
            Shape::FlannelHostGw | Shape::CalicoBgp => wire::ethernet(b.mac, a.mac, inner),
        }
    }

    /// One packet of the connection at every point it crosses, from `at_us` on.
    fn send(&mut self, e: &Ends, at_us: u64, request: bool, id: u16, t: Transport, payload: &[u8]) {
        let at = self.epoch_us + at_us;
        let (view, on_wire) = if request {
            (e.view, e.wire)
        } else {
            (e.view.rev(), e.wire.rev())
        };
        let packet = |tuple: Tuple, ttl: u8| -> Vec<u8> {
            wire::datagram(&Packet {
                src: tuple.src,
                dst: tuple.dst,
                sport: tuple.sport,
                dport: tuple.dport,
                id,
                ttl,
                transport: t,
                payload,
            })
        };
        let hash = {
            let (a, b) = (
                u32::from_be_bytes(e.wire.src),
                u32::from_be_bytes(e.wire.dst),
            );
            let x = (a ^ b.rotate_left(7)) ^ (u32::from(e.wire.sport ^ e.wire.dport) << 3);
            (x.wrapping_mul(0x9E37_79B1) >> 16) as u16
        };
        let crosses = e.server_node != Some(e.client_node);
        let client_veth = e.client_pod.map(|p| {
            let pod = &self.c.pods[p];
            (
                self.points.veth[p],
                pod.mac,
                self.c.nodes[pod.node].gateway_mac,
            )
        });
        let server_veth = e.server_pod.map(|p| {
            let pod = &self.c.pods[p];
            (
                self.points.veth[p],
                pod.mac,
                self.c.nodes[pod.node].gateway_mac,
            )
        });
        let mut hops: Vec<(PointId, Vec<u8>)> = Vec::with_capacity(4);
        if request {
            if let Some((point, pod_mac, gw)) = client_veth {
                hops.push((point, wire::ethernet(gw, pod_mac, &packet(view, 64))));
            }
            if crosses {
                let inner = packet(on_wire, 63);
                let frame = self.carrier(e.client_node, e.server_node, &inner, hash);
                hops.push((self.points.uplink[e.client_node], frame.clone()));
                if let Some(s) = e.server_node {
                    hops.push((self.points.uplink[s], frame));
                }
            }
            if let Some((point, pod_mac, gw)) = server_veth {
                let ttl = if crosses { 62 } else { 63 };
                hops.push((point, wire::ethernet(pod_mac, gw, &packet(on_wire, ttl))));
            }
        } else {
            if let Some((point, pod_mac, gw)) = server_veth {
                hops.push((point, wire::ethernet(gw, pod_mac, &packet(on_wire, 64))));
            }
            if crosses {
                let inner = packet(on_wire, 63);
                match e.server_node {
                    Some(s) => {
                        let frame = self.carrier(s, Some(e.client_node), &inner, hash);
                        hops.push((self.points.uplink[s], frame.clone()));
                        hops.push((self.points.uplink[e.client_node], frame));
                    }
                    None => {
                        let node = &self.c.nodes[e.client_node];
                        let frame = wire::ethernet(node.mac, self.c.router_mac, &inner);
                        hops.push((self.points.uplink[e.client_node], frame));
                    }
                }
            }
            if let Some((point, pod_mac, gw)) = client_veth {
                let ttl = if crosses { 62 } else { 63 };
                hops.push((point, wire::ethernet(pod_mac, gw, &packet(view, ttl))));
            }
        }
        // A few microseconds per hop, the underlay's tens between the uplinks.
        let mut t = at;
        for (k, (point, frame)) in hops.into_iter().enumerate() {
            t += match k {
                0 => 0,
                _ if crosses && k == 2 => 70,
                _ => 12,
            };
            self.caps.push(point, t, frame);
        }
    }
}

/// A planned connection: when, what, between whom.
struct Plan {
    start_us: u64,
    kind: Kind,
    client: usize,
    /// A pod index, or an index into the externals for `External`.
    server: usize,
    open_before: bool,
}

/// The DNS query every client sends (`web.shop.svc.cluster.local`, type A) and its answer:
/// the same bytes from every pod, as resolvers with a fixed query make them.
fn dns_query() -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["web", "shop", "svc", "cluster", "local"] {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    q
}

fn dns_answer(query: &[u8]) -> Vec<u8> {
    let mut a = query.to_vec();
    a[2] = 0x81;
    a[3] = 0x80;
    a[7] = 1;
    a.extend([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 96, 0, 10]);
    a
}

/// Writes the connections of `spec` into `caps` and returns what they make.
pub fn write(
    spec: &Spec,
    c: &Cluster,
    rng: &mut Rng,
    caps: &mut Captures,
    points: &Points,
) -> Result<Truth, SynthError> {
    let span_us = u64::from(spec.secs) * 1_000_000;
    let nodes = c.nodes.len();
    let by_node_role = |n: usize, role: Role| -> Vec<usize> {
        (0..c.pods.len())
            .filter(|&p| c.pods[p].node == n && c.pods[p].role == role)
            .collect()
    };
    let clients: Vec<Vec<usize>> = (0..nodes).map(|n| by_node_role(n, Role::Client)).collect();
    let web: Vec<Vec<usize>> = (0..nodes).map(|n| by_node_role(n, Role::Web)).collect();
    let dns: Vec<usize> = c.dns.backends.clone();
    let total_weight: u64 = KINDS.iter().map(|(_, w)| w).sum();

    // Plan every connection first, then write them in order of their first packet, so each
    // capture file's frames can be written as soon as no later connection can precede them.
    let mut plans = Vec::with_capacity(spec.connections as usize);
    let mut tries = 0u64;
    while plans.len() < spec.connections as usize {
        tries += 1;
        if tries > u64::from(spec.connections) * 20 + 1000 {
            return Err(SynthError::Spec(
                "could not place the connections: too few live client pods".into(),
            ));
        }
        let mut pick = rng.below(total_weight);
        let kind = KINDS
            .iter()
            .find(|(_, w)| {
                let hit = pick < *w;
                pick = pick.saturating_sub(*w);
                hit
            })
            .unwrap()
            .0;
        let open_before = match kind {
            Kind::Pool => rng.unit() < 0.5_f64.max(spec.open_before),
            Kind::PodTcp | Kind::ServiceTcp | Kind::SameNode => rng.unit() < spec.open_before,
            _ => false,
        };
        // Long connections span most of the capture; short ones last up to ~12 ms.
        let start_us = if open_before {
            rng.below(200_000)
        } else {
            rng.below(
                span_us
                    .saturating_sub(if kind == Kind::Pool {
                        span_us / 2
                    } else {
                        50_000
                    })
                    .max(1),
            )
        };
        let end_s = (start_us
            + if kind == Kind::Pool {
                span_us / 2
            } else {
                20_000
            }) as f64
            / 1e6;
        let node = rng.below(nodes as u64) as usize;
        let other = (node + 1 + rng.below(nodes as u64 - 1) as usize) % nodes;
        let (client, server) = match kind {
            Kind::NodePing => {
                let servers = &web[other];
                (node, servers[rng.below(servers.len() as u64) as usize])
            }
            _ => {
                let list = &clients[node];
                let client = list[rng.below(list.len() as u64) as usize];
                let pod = &c.pods[client];
                let stays = pod.alive_at(start_us as f64 / 1e6) && pod.alive_at(end_s);
                if !stays
                    || (kind == Kind::Pool && (pod.deleted_s.is_some() || pod.created_s.is_some()))
                {
                    continue;
                }
                let server = match kind {
                    Kind::PodTcp | Kind::Pool => {
                        web[other][rng.below(web[other].len() as u64) as usize]
                    }
                    Kind::SameNode => web[node][rng.below(web[node].len() as u64) as usize],
                    Kind::ServiceTcp => {
                        c.web.backends[rng.below(c.web.backends.len() as u64) as usize]
                    }
                    Kind::ServiceUdp => dns[rng.below(dns.len() as u64) as usize],
                    Kind::External => rng.below(c.externals.len() as u64) as usize,
                    Kind::NodePing => unreachable!(),
                };
                (client, server)
            }
        };
        plans.push(Plan {
            start_us,
            kind,
            client,
            server,
            open_before,
        });
    }
    plans.sort_by_key(|p| p.start_us);

    let mut w = Writer {
        c,
        shape: spec.shape,
        caps,
        points,
        carrier_id: (0..nodes).map(|_| rng.word() as u16).collect(),
        epoch_us: c.epoch * 1_000_000,
    };
    let mut next_port: Vec<u16> = (0..c.pods.len())
        .map(|_| 32768 + rng.below(20000) as u16)
        .collect();
    // A pod that got a deleted pod's address starts from the port its predecessor started
    // from, so some of its connections reuse 5-tuples of the old pod's, inside one window when
    // windows are long enough. Real nodes do it by chance (a UDP socket takes a random port;
    // a port range wraps): the generator makes it common, so the rule that keeps two
    // connections on one 5-tuple apart is exercised in every churned run.
    for (succ, pod) in c.pods.iter().enumerate() {
        if let Some(created) = pod.created_s
            && let Some(pred) = c
                .pods
                .iter()
                .position(|p| p.ip == pod.ip && p.deleted_s == Some(created.saturating_sub(1)))
        {
            next_port[succ] = next_port[pred];
        }
    }
    let mut next_ping: Vec<u16> = (0..nodes).map(|_| rng.word() as u16).collect();
    let mut masqueraded: HashSet<(usize, u16, Ip)> = HashSet::new();
    // Each pod's last source port straight to each backend pod, and each node's next port for
    // conntrack's unique-tuple remap (below).
    let mut direct_port: HashMap<(usize, usize), u16> = HashMap::new();
    let mut remap_port: Vec<u16> = (0..nodes).map(|_| 1024 + rng.below(20000) as u16).collect();
    let query = dns_query();
    let answer = dns_answer(&query);
    let mut truth = Truth::default();

    for plan in &plans {
        w.caps
            .flush_before(w.epoch_us + plan.start_us)
            .map_err(SynthError::Io)?;
        let mut client_port = |pod: usize| {
            let p = next_port[pod];
            next_port[pod] = if p >= 60999 { 32768 } else { p + 1 };
            p
        };
        let (ends, key) = match plan.kind {
            Kind::NodePing => {
                let server = &c.pods[plan.server];
                let id = next_ping[plan.client];
                next_ping[plan.client] = id.wrapping_add(1);
                let t = Tuple {
                    src: c.nodes[plan.client].tunnel_ip,
                    sport: id,
                    dst: server.ip,
                    dport: id,
                };
                let ends = Ends {
                    client_node: plan.client,
                    client_pod: None,
                    server_node: Some(server.node),
                    server_pod: Some(plan.server),
                    view: t,
                    wire: t,
                    tcp_or_udp_or_icmp: wire::ICMP,
                };
                let key = EdgeKey {
                    src: format!("node/{}", c.nodes[plan.client].name),
                    dst: server.id(),
                    service: None,
                    protocol: "icmp".into(),
                    port: 0,
                };
                (ends, key)
            }
            Kind::External => {
                let pod = &c.pods[plan.client];
                let ext = c.externals[plan.server];
                let port = client_port(plan.client);
                // Masquerade keeps the port unless another pod of the node holds it.
                let mut outside = port;
                while !masqueraded.insert((pod.node, outside, ext)) {
                    outside = if outside >= 60999 { 32768 } else { outside + 1 };
                }
                let ends = Ends {
                    client_node: pod.node,
                    client_pod: Some(plan.client),
                    server_node: None,
                    server_pod: None,
                    view: Tuple {
                        src: pod.ip,
                        sport: port,
                        dst: ext,
                        dport: 443,
                    },
                    wire: Tuple {
                        src: c.nodes[pod.node].ip,
                        sport: outside,
                        dst: ext,
                        dport: 443,
                    },
                    tcp_or_udp_or_icmp: wire::TCP,
                };
                let key = EdgeKey {
                    src: pod.id(),
                    dst: format!("external/{}", Cluster::dotted(ext)),
                    service: None,
                    protocol: "tcp".into(),
                    port: 443,
                };
                (ends, key)
            }
            kind => {
                let pod = &c.pods[plan.client];
                let server = &c.pods[plan.server];
                let mut port = client_port(plan.client);
                let service = match kind {
                    Kind::ServiceTcp => Some(&c.web),
                    Kind::ServiceUdp => Some(&c.dns),
                    _ => None,
                };
                let target = service.map_or(8080, |s| s.target);
                let mut wire_port = port;
                match kind {
                    Kind::PodTcp | Kind::SameNode => {
                        direct_port.insert((plan.client, plan.server), port);
                    }
                    // Linux picks source ports per destination: one in 20 service connections
                    // takes the port its pod last used straight to the backend kube-proxy now
                    // picks. After DNAT that is the earlier connection's tuple, which
                    // conntrack still holds, so the connection leaves the node with another
                    // source port and the pod's address (nf_nat's unique-tuple remap). Only a
                    // connection opened in the capture: one opened before it held its tuple
                    // before the direct one could.
                    Kind::ServiceTcp
                        if target == 8080 && !plan.open_before && rng.below(20) == 0 =>
                    {
                        // Taken once: the pod's next socket to the ClusterIP gets another port.
                        if let Some(used) = direct_port.remove(&(plan.client, plan.server)) {
                            port = used;
                            let r = &mut remap_port[pod.node];
                            wire_port = *r;
                            *r = if *r >= 32767 { 1024 } else { *r + 1 };
                        }
                    }
                    _ => {}
                }
                let wire_t = Tuple {
                    src: pod.ip,
                    sport: wire_port,
                    dst: server.ip,
                    dport: target,
                };
                let view = match service {
                    Some(s) => Tuple {
                        src: pod.ip,
                        sport: port,
                        dst: s.ip,
                        dport: s.port,
                    },
                    None => wire_t,
                };
                let ends = Ends {
                    client_node: pod.node,
                    client_pod: Some(plan.client),
                    server_node: Some(server.node),
                    server_pod: Some(plan.server),
                    view,
                    wire: wire_t,
                    tcp_or_udp_or_icmp: if kind == Kind::ServiceUdp {
                        wire::UDP
                    } else {
                        wire::TCP
                    },
                };
                let key = EdgeKey {
                    src: pod.id(),
                    dst: server.id(),
                    service: service.map(|s| s.id()),
                    protocol: if kind == Kind::ServiceUdp {
                        "udp"
                    } else {
                        "tcp"
                    }
                    .into(),
                    port: target,
                };
                (ends, key)
            }
        };
        let packets = match ends.tcp_or_udp_or_icmp {
            wire::ICMP => {
                let payload = [0x5a_u8; 56];
                let mut t = plan.start_us;
                let id = rng.word() as u16;
                for seq in 1..=2u16 {
                    let req = Transport::Echo { reply: false, seq };
                    w.send(&ends, t, true, id.wrapping_add(seq), req, &payload);
                    let rep = Transport::Echo { reply: true, seq };
                    w.send(
                        &ends,
                        t + 400,
                        false,
                        id.wrapping_add(seq).wrapping_add(7),
                        rep,
                        &payload,
                    );
                    t += 1_000;
                }
                4
            }
            wire::UDP => {
                let queries = 1 + rng.below(3);
                let (mut cid, mut sid) = (rng.word() as u16, rng.word() as u16);
                let mut t = plan.start_us;
                for _ in 0..queries {
                    w.send(&ends, t, true, cid, Transport::Udp, &query);
                    w.send(&ends, t + 300, false, sid, Transport::Udp, &answer);
                    cid = cid.wrapping_add(1);
                    sid = sid.wrapping_add(1);
                    t += 1_500;
                }
                queries * 2
            }
            _ => tcp(&mut w, rng, &ends, plan, span_us),
        };
        truth.connections += 1;
        truth.packets += packets;
        let count = truth.edges.entry(key).or_default();
        count.flows += 1;
        count.packets += packets;
    }
    Ok(truth)
}

/// A TCP connection: handshake (unless it was open before the capture), request/response
/// rounds, and a close (a pooled connection may still be open at the end). Returns its packets.
fn tcp(w: &mut Writer, rng: &mut Rng, e: &Ends, plan: &Plan, span_us: u64) -> u64 {
    let (mut cs, mut ss) = (rng.word() as u32, rng.word() as u32);
    let (mut cid, mut sid) = (rng.word() as u16, rng.word() as u16);
    let mut t = plan.start_us;
    let mut n = 0u64;
    let mut send =
        |w: &mut Writer, t: u64, request: bool, seq: u32, ack: u32, flags: u8, len: usize| {
            let payload = vec![0x42_u8; len];
            let id = if request { &mut cid } else { &mut sid };
            *id = id.wrapping_add(1);
            w.send(
                e,
                t,
                request,
                *id,
                Transport::Tcp { seq, ack, flags },
                &payload,
            );
            n += 1;
        };
    if !plan.open_before {
        send(w, t, true, cs, 0, wire::SYN, 0);
        send(
            w,
            t + 300,
            false,
            ss,
            cs.wrapping_add(1),
            wire::SYN | wire::ACK,
            0,
        );
        cs = cs.wrapping_add(1);
        ss = ss.wrapping_add(1);
        send(w, t + 600, true, cs, ss, wire::ACK, 0);
        t += 900;
    }
    let pooled = plan.kind == Kind::Pool;
    let rounds = if pooled {
        3 + rng.below(4)
    } else {
        1 + rng.below(3)
    };
    // A pool's rounds are spread over half the capture, so windows cut it.
    let gap = if pooled { span_us / 2 / rounds } else { 2_000 };
    for _ in 0..rounds {
        let (req, resp) = (64 + rng.below(200) as usize, 100 + rng.below(1200) as usize);
        send(w, t, true, cs, ss, wire::PSH | wire::ACK, req);
        cs = cs.wrapping_add(req as u32);
        send(w, t + 500, false, ss, cs, wire::PSH | wire::ACK, resp);
        ss = ss.wrapping_add(resp as u32);
        send(w, t + 700, true, cs, ss, wire::ACK, 0);
        t += gap;
    }
    if !(pooled && rng.unit() < 0.5) {
        send(w, t, true, cs, ss, wire::FIN | wire::ACK, 0);
        send(
            w,
            t + 300,
            false,
            ss,
            cs.wrapping_add(1),
            wire::FIN | wire::ACK,
            0,
        );
        send(
            w,
            t + 600,
            true,
            cs.wrapping_add(1),
            ss.wrapping_add(1),
            wire::ACK,
            0,
        );
    }
    n
}
