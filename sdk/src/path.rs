//! Where did the packets die: a connection's views held against the path its CNI sends it
//! (docs/output-contract.md, "path").
//!
//! A plugin knows the capture points a packet crosses on its CNI (the client pod's veth, the
//! tunnel device, the uplink, and the same backwards on the server's node). It states them for
//! a connection as an [`ExpectedPath`] on its [`Decision`](crate::ends::Decision), and
//! [`Connection::path_report`] compares them with where the connection was seen:
//!
//! - `rejected`: the server side answered the handshake with a RST (and never with a SYN+ACK),
//!   or an ICMP port or protocol unreachable or administratively prohibited quoting the
//!   connection's packets came back (kube-proxy's REJECT of a service without endpoints);
//!   `rejected_by` is its sender;
//! - `lost`: the requests (or the replies, on their way back) stopped between two expected
//!   points that are both watched; `last_seen` is the last that saw them, `missing_at` the
//!   first watched one after it; or the requests reached the last expected point, no reply
//!   came, and the kernel dropped them on that point's node (`missing_at` empty: a frame
//!   addressed to another host's MAC, a firewall inside the pod);
//! - `no-reply`: the requests reached the last expected point on the server's side, and no
//!   reply came back anywhere (a UDP request delivered without an answer is `ok`: many UDP
//!   exchanges are one-way);
//! - `partial-capture`: it stopped being seen where nothing is watched, so where it went on
//!   cannot be told;
//! - `ok` otherwise.
//!
//! An expected point is *watched* when the window's capture points include one of its node,
//! kind and name (any name for a pod's veth or an uplink): a point that never showed a packet
//! of any connection is not known to be watched, and a stop before it is `partial-capture`,
//! not `lost`. Kernel drops (the host's `skb:kfree_skb` program, `kernel-drop` points) joined
//! to the connection are reported beside the verdict, per reason.

use crate::ends::Decision;
use crate::flow::{EndpointRef, Role};
use crate::inventory::InventoryIndex;
use crate::stitch::{Connection, PointInfo, Seen};
use crate::{Direction, IfaceKind, Ip};
use cniscope_common::ipproto;

/// A connection's path verdict. The numbers are the WIT `flow-batch.path-verdict` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Ok = 1,
    NoReply = 2,
    Lost = 3,
    Rejected = 4,
    PartialCapture = 5,
}

impl Verdict {
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(c: u8) -> Option<Verdict> {
        Some(match c {
            1 => Verdict::Ok,
            2 => Verdict::NoReply,
            3 => Verdict::Lost,
            4 => Verdict::Rejected,
            5 => Verdict::PartialCapture,
            _ => return None,
        })
    }

    /// The word the output contract uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::NoReply => "no-reply",
            Verdict::Lost => "lost",
            Verdict::Rejected => "rejected",
            Verdict::PartialCapture => "partial-capture",
        }
    }
}

/// One place the plugin expects a connection's packets to cross.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hop<'a> {
    pub node: &'a str,
    pub kind: IfaceKind,
    /// The device's name when the CNI fixes it ("flannel.1", "tunl0"); None: any device of
    /// this kind on the node (a pod's veth, the uplink).
    pub iface: Option<&'a str>,
    pub direction: Direction,
}

impl Hop<'_> {
    fn matches(&self, p: &PointInfo) -> bool {
        // The cheap comparisons first: most points differ in kind or direction.
        p.kind == self.kind
            && (p.direction == self.direction || p.direction == Direction::Unknown)
            && p.node == self.node
            && self.iface.is_none_or(|i| i == p.iface)
    }

    /// The same device, crossed the other way (a reply retracing a request).
    fn turned(&self) -> Self {
        Hop {
            direction: match self.direction {
                Direction::Ingress => Direction::Egress,
                Direction::Egress => Direction::Ingress,
                Direction::Unknown => Direction::Unknown,
            },
            ..*self
        }
    }

    /// "node/iface:direction", with a placeholder name for a device the CNI does not fix.
    fn label(&self) -> String {
        let iface = self.iface.unwrap_or(match self.kind {
            IfaceKind::PodVeth => "<pod veth>",
            IfaceKind::Uplink => "<uplink>",
            IfaceKind::Tunnel => "<tunnel>",
            IfaceKind::Bridge => "<bridge>",
            _ => "<device>",
        });
        let dir = match self.direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
            Direction::Unknown => "any",
        };
        format!("{}/{iface}:{dir}", self.node)
    }
}

/// Where one end of a connection is, for [`ExpectedPath::between`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place<'a> {
    /// A pod (not host-network) on this node.
    Pod(&'a str),
    /// The node itself (its own address, a host-network pod, a gateway standing in for it).
    Node(&'a str),
    /// Outside the cluster, or where nothing tells.
    Elsewhere,
}

impl<'a> Place<'a> {
    /// Where a decided end is: a pod's node by the inventory at `at_ns` (a host-network pod
    /// is its node; a pod address without a pod, the node whose pod CIDR holds it), a node
    /// by its name or address; a service without a backend, outside or unknown: elsewhere.
    pub fn of(inv: &'a InventoryIndex, end: &EndpointRef<'a>, at_ns: u64) -> Place<'a> {
        match end.role {
            Role::Pod => {
                match inv
                    .pods_by_ip(end.ip)
                    .filter(|p| !p.node.is_empty())
                    .find(|p| p.alive_at(at_ns))
                {
                    Some(p) if p.host_network => Place::Node(p.node),
                    Some(p) => Place::Pod(p.node),
                    None => inv
                        .node_by_pod_cidr(end.ip)
                        .map_or(Place::Elsewhere, |(_, n)| Place::Pod(&n.name)),
                }
            }
            Role::Node if !end.name.is_empty() => Place::Node(end.name),
            Role::Node => inv
                .node_by_ip(end.ip)
                .map_or(Place::Elsewhere, |n| Place::Node(&n.name)),
            _ => Place::Elsewhere,
        }
    }

    fn node(self) -> Option<&'a str> {
        match self {
            Place::Pod(n) | Place::Node(n) => Some(n),
            Place::Elsewhere => None,
        }
    }
}

/// The points a connection's requests cross, in order, and those its replies cross.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExpectedPath<'a> {
    pub requests: Vec<Hop<'a>>,
    pub replies: Vec<Hop<'a>>,
}

impl<'a> ExpectedPath<'a> {
    pub fn new() -> Self {
        ExpectedPath::default()
    }

    /// The replies retrace the requests backwards, each device crossed the other way (the
    /// CNIs cniscope knows route symmetrically between pods).
    pub fn mirrored(mut self) -> Self {
        self.replies = self.requests.iter().rev().map(Hop::turned).collect();
        self
    }

    /// Without the points of this kind crossed this way, in both directions: a CNI that
    /// hands packets past them (Cilium's `bpf_redirect_peer` delivers arriving packets into
    /// the pod without the host-side veth's egress).
    pub fn skipping(mut self, kind: IfaceKind, direction: Direction) -> Self {
        let keep = |h: &Hop| !(h.kind == kind && h.direction == direction);
        self.requests.retain(keep);
        self.replies.retain(keep);
        self
    }

    /// Adds the next point the requests cross (call [`mirrored`](Self::mirrored) after the
    /// last one for the replies).
    pub fn hop(
        mut self,
        node: &'a str,
        kind: IfaceKind,
        iface: Option<&'a str>,
        direction: Direction,
    ) -> Self {
        self.requests.push(Hop {
            node,
            kind,
            iface,
            direction,
        });
        self
    }

    /// The usual shape of a CNI's path from `client` to `server`: out of the client pod's veth
    /// (the host side's ingress), then, between two nodes, out through `tunnel` (the CNI's
    /// tunnel device; None when routed: host-gw, BGP, native routing) and the uplink, in
    /// through the server node's uplink and tunnel, and into the server pod's veth (egress).
    /// Between two pods of one node only the two veths. An end [`Place::Elsewhere`] adds no
    /// point of its own.
    pub fn between(client: Place<'a>, server: Place<'a>, tunnel: Option<&'a str>) -> Self {
        use Direction::{Egress, Ingress};
        let mut p = ExpectedPath::new();
        if let Place::Pod(n) = client {
            p = p.hop(n, IfaceKind::PodVeth, None, Ingress);
        }
        let (from, to) = (client.node(), server.node());
        if from != to {
            if let Some(n) = from {
                if let Some(t) = tunnel.filter(|_| to.is_some()) {
                    p = p.hop(n, IfaceKind::Tunnel, Some(t), Egress);
                }
                p = p.hop(n, IfaceKind::Uplink, None, Egress);
            }
            if let Some(n) = to {
                p = p.hop(n, IfaceKind::Uplink, None, Ingress);
                if let Some(t) = tunnel.filter(|_| from.is_some()) {
                    p = p.hop(n, IfaceKind::Tunnel, Some(t), Ingress);
                }
            }
        }
        if let Place::Pod(n) = server {
            p = p.hop(n, IfaceKind::PodVeth, None, Egress);
        }
        p.mirrored()
    }
}

impl<'a> Decision<'a> {
    /// [`ExpectedPath::between`] the decided client and server (the backend, after DNAT),
    /// placed by [`Place::of`] at the connection's first sighting.
    pub fn usual_path(
        &self,
        inv: &'a InventoryIndex,
        conn: &Connection,
        tunnel: Option<&'a str>,
    ) -> ExpectedPath<'a> {
        let at = conn.members.iter().map(|m| m.first_ns).min().unwrap_or(0);
        ExpectedPath::between(
            Place::of(inv, &self.ends.client, at),
            Place::of(inv, &self.ends.server, at),
            tunnel,
        )
    }
}

/// What [`Connection::path_report`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct PathReport {
    pub verdict: Verdict,
    /// The last expected point that saw the requests (or, lost on the way back, the
    /// replies); "" when none did.
    pub last_seen: String,
    /// The first watched expected point after it that did not; "".
    pub missing_at: String,
    /// Who sent the RST or ICMP refusal of a `rejected` connection; [`Ip::NONE`] otherwise.
    pub rejected_by: Ip,
    /// The node that address is, when the plugin says so (a gateway address); "" otherwise.
    pub rejected_by_node: String,
    /// Kernel drops joined to the connection: (reason, packets), by reason.
    pub drops: Vec<(String, u64)>,
}

/// How far along a list of hops one direction of the connection got.
struct Walk {
    /// Index of the last hop that saw it.
    last: Option<usize>,
    /// The first watched hop after `last` (from the start when none saw it).
    missing: Option<usize>,
    /// Two hops of one kind (the two uplinks, say) of which the later saw less than half the
    /// bytes the earlier did: the packets that went missing between them (the large ones, in
    /// an MTU black hole), though the connection's small ones got through.
    shortfall: Option<(usize, usize)>,
    /// Every packet `last` saw came in the window's last [`IN_FLIGHT_NS`]: the next point
    /// may show them only in the next window (nodes are drained one after another, and a
    /// packet from a node drained later to one drained earlier crosses the boundary). Not
    /// judged a stop here; the connection's next window shows where they went.
    in_flight: bool,
}

/// How close to a window's end a point's packets must all be to be in flight, not stopped
/// (well above the time one node's drain takes, well below a retransmission's 1 s).
pub const IN_FLIGHT_NS: u64 = 100_000_000;

impl Connection {
    /// The connection's views against `expected` (module docs).
    pub fn path_report(&self, expected: &ExpectedPath<'_>) -> PathReport {
        let points = self.points();
        let watched = |h: &Hop| points.iter().any(|p| h.matches(p));
        let walk = |hops: &[Hop], members: &mut dyn Iterator<Item = &Seen>| -> Walk {
            let seen: Vec<(&PointInfo, u64, u64)> = members
                .filter(|m| m.packets > 0)
                .map(|m| (self.point(m), m.bytes, m.first_ns))
                .collect();
            // The bytes each hop saw; None where it saw nothing.
            let bytes: Vec<Option<u64>> = hops
                .iter()
                .map(|h| {
                    let mut at = seen.iter().filter(|(p, _, _)| h.matches(p)).peekable();
                    at.peek().is_some().then(|| at.map(|(_, b, _)| b).sum())
                })
                .collect();
            let last = bytes.iter().rposition(Option::is_some);
            let from = last.map_or(0, |l| l + 1);
            let missing = (from..hops.len()).find(|&i| watched(&hops[i]));
            // Each hop against the next of its kind that saw anything; the closest such pair
            // says best where the packets went.
            let shortfall = (0..hops.len())
                .filter_map(|i| {
                    let before = bytes[i]?;
                    (i + 1..hops.len())
                        .find(|&j| hops[j].kind == hops[i].kind && bytes[j].is_some())
                        .filter(|&j| bytes[j].is_some_and(|after| after * 2 < before))
                        .map(|j| (i, j))
                })
                .min_by_key(|&(i, j)| (j - i, i));
            let in_flight = last.is_some_and(|l| {
                seen.iter()
                    .filter(|(p, _, _)| hops[l].matches(p))
                    .all(|(_, _, first)| first.saturating_add(IN_FLIGHT_NS) > self.window_end_ns)
            });
            Walk {
                last,
                missing,
                shortfall,
                in_flight,
            }
        };
        let requests = &expected.requests;
        let replies = &expected.replies;
        let req = walk(requests, &mut self.forward_members());
        let rep = walk(replies, &mut self.reverse_members());
        let label = |hops: &[Hop], i: Option<usize>| i.map_or(String::new(), |i| hops[i].label());
        let replied = self.reverse_members().any(|m| m.packets > 0);

        let rst = self
            .reverse_members()
            .find(|m| m.protocol == ipproto::TCP && m.tcp_flags & TCP_RST != 0);
        let accepted = self
            .reverse_members()
            .any(|m| m.fp_kind == crate::batch::fp::TCP_SYNACK_ISN);
        let opened = self
            .forward_members()
            .any(|m| m.fp_kind == crate::batch::fp::TCP_SYN_ISN);
        // A refusal in ICMP: port or protocol unreachable (a REJECT rule, kube-proxy's for a
        // service without endpoints), administratively prohibited. A router's "no route" or
        // "fragmentation needed" is no refusal: the path says where the packets stopped.
        let refused = self
            .icmp_errors
            .iter()
            .find(|e| e.src_port == 3 && matches!(e.dst_port, 2 | 3 | 9 | 10 | 13));
        let shortfall = req
            .shortfall
            .map(|(i, j)| (requests, i, j))
            .or(rep.shortfall.map(|(i, j)| (replies, i, j)));
        let (verdict, last_seen, missing_at, rejected_by) = match (rst, refused) {
            (_, Some(e)) if !accepted => (
                Verdict::Rejected,
                label(requests, req.last),
                String::new(),
                e.src,
            ),
            (Some(r), _) if opened && !accepted => (
                Verdict::Rejected,
                label(requests, req.last),
                String::new(),
                r.src,
            ),
            _ if let Some((hops, i, j)) = shortfall => {
                (Verdict::Lost, hops[i].label(), hops[j].label(), Ip::NONE)
            }
            _ if replied => match (rep.last, rep.missing) {
                // Replies stopped on their way back, before a watched point that should
                // have seen them.
                (Some(_), Some(_)) if !rep.in_flight => (
                    Verdict::Lost,
                    label(replies, rep.last),
                    label(replies, rep.missing),
                    Ip::NONE,
                ),
                _ => (Verdict::Ok, String::new(), String::new(), Ip::NONE),
            },
            _ => {
                let delivered = req.last.is_some_and(|l| l + 1 == requests.len());
                let one_way_ok = self.members.first().is_some_and(|m| {
                    m.protocol != ipproto::TCP && !m.is_icmp() || is_one_way_icmp(m)
                });
                if requests.is_empty() || (delivered && one_way_ok) || req.in_flight {
                    (Verdict::Ok, String::new(), String::new(), Ip::NONE)
                } else if delivered && self.dropped_on(requests[requests.len() - 1].node) {
                    // The last point saw them, and the kernel threw them away right after,
                    // on that node (a frame for another host's MAC, a firewall in the pod):
                    // they never reached the server, and no expected point was missed.
                    (
                        Verdict::Lost,
                        label(requests, req.last),
                        String::new(),
                        Ip::NONE,
                    )
                } else if delivered {
                    // The server's side saw the requests: were the replies watched at all?
                    let missing = (0..replies.len()).find(|&i| watched(&replies[i]));
                    let verdict = if missing.is_some() {
                        Verdict::NoReply
                    } else {
                        Verdict::PartialCapture
                    };
                    (
                        verdict,
                        label(requests, req.last),
                        label(replies, missing),
                        Ip::NONE,
                    )
                } else if req.missing.is_some() && req.last.is_some() {
                    (
                        Verdict::Lost,
                        label(requests, req.last),
                        label(requests, req.missing),
                        Ip::NONE,
                    )
                } else {
                    // Seen by no expected point, or last seen where every point after it is
                    // unwatched.
                    (
                        Verdict::PartialCapture,
                        label(requests, req.last),
                        String::new(),
                        Ip::NONE,
                    )
                }
            }
        };
        PathReport {
            verdict,
            last_seen,
            missing_at,
            rejected_by,
            rejected_by_node: String::new(),
            drops: self.drop_counts(),
        }
    }

    /// Whether the kernel dropped this connection's packets on `node`.
    fn dropped_on(&self, node: &str) -> bool {
        self.drops
            .iter()
            .any(|&(point, _)| self.points()[point as usize].node == node)
    }

    /// Kernel drops joined to this connection, by reason (sorted).
    pub fn drop_counts(&self) -> Vec<(String, u64)> {
        let mut drops: Vec<(String, u64)> = Vec::new();
        for &(point, packets) in &self.drops {
            let reason = &self.points()[point as usize].drop_reason;
            match drops.iter_mut().find(|(r, _)| r == reason) {
                Some(d) => d.1 += packets,
                None => drops.push((reason.clone(), packets)),
            }
        }
        drops.sort();
        drops
    }
}

/// An ICMP message that asks for no answer (anything but an echo request).
fn is_one_way_icmp(m: &Seen) -> bool {
    m.is_icmp() && !matches!((m.protocol, m.src_port), (ipproto::ICMP, 8) | (_, 128))
}

const TCP_RST: u8 = 0x04;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::fp;
    use crate::stitch::Stitcher;
    use crate::testkit::{BatchBuilder, Row};
    use Direction::{Egress, Ingress};

    const A: &str = "10.244.0.5";
    const B: &str = "10.244.1.7";

    /// Both nodes' points, each a veth, flannel.1 and eth0 both ways: 0-5 on node a, 6-11
    /// on node b. Which of them see the connection is the test's choice.
    fn points() -> BatchBuilder {
        let mut b = BatchBuilder::new();
        for node in ["a", "b"] {
            for (iface, kind) in [
                ("veth1", IfaceKind::PodVeth),
                ("flannel.1", IfaceKind::Tunnel),
                ("eth0", IfaceKind::Uplink),
            ] {
                b = b
                    .point(node, iface, kind, Ingress)
                    .point(node, iface, kind, Egress);
            }
        }
        b
    }

    const A_VETH_IN: usize = 0;
    const A_TUN_OUT: usize = 3;
    const A_ETH_OUT: usize = 5;
    const B_ETH_IN: usize = 10;
    const B_TUN_IN: usize = 8;
    const B_VETH_OUT: usize = 7;
    const B_VETH_IN: usize = 6;
    const B_TUN_OUT: usize = 9;
    const B_ETH_OUT: usize = 11;
    const A_ETH_IN: usize = 4;
    const A_TUN_IN: usize = 2;
    const A_VETH_OUT: usize = 1;

    const REQUESTS: [usize; 6] = [
        A_VETH_IN, A_TUN_OUT, A_ETH_OUT, B_ETH_IN, B_TUN_IN, B_VETH_OUT,
    ];
    const REPLIES: [usize; 6] = [
        B_VETH_IN, B_TUN_OUT, B_ETH_OUT, A_ETH_IN, A_TUN_IN, A_VETH_OUT,
    ];

    fn syn() -> Row {
        Row::flow(6, A, 40000, B, 80)
            .fingerprint(fp::TCP_SYN_ISN, 77)
            .flags(0x02)
            .counters(3, 180)
    }

    fn synack() -> Row {
        Row::flow(6, B, 80, A, 40000)
            .fingerprint(fp::TCP_SYNACK_ISN, 99)
            .flags(0x12)
    }

    /// The one connection of `b`, judged against flannel's cross-node path.
    fn report(b: BatchBuilder) -> PathReport {
        report_at(b, SECOND)
    }

    const SECOND: u64 = 1_000_000_000;

    /// The one connection of `b` (its packets at 1 ns), drained at `end_ns`.
    fn report_at(b: BatchBuilder, end_ns: u64) -> PathReport {
        let mut s = Stitcher::default();
        let mut conns = s.add_batch(&b.build());
        s.window_end_ns = end_ns;
        conns.extend(s.drain());
        assert_eq!(conns.len(), 1, "{conns:?}");
        let path = ExpectedPath::between(Place::Pod("a"), Place::Pod("b"), Some("flannel.1"));
        conns[0].path_report(&path)
    }

    fn with(mut b: BatchBuilder, rows: impl Fn() -> Row, at: &[usize]) -> BatchBuilder {
        for &p in at {
            b = b.row(rows().at(p));
        }
        b
    }

    #[test]
    fn the_usual_path_is_both_nodes_veth_tunnel_and_uplink_and_replies_retrace_it() {
        let p = ExpectedPath::between(Place::Pod("a"), Place::Pod("b"), Some("flannel.1"));
        let labels: Vec<String> = p.requests.iter().map(Hop::label).collect();
        assert_eq!(
            labels,
            [
                "a/<pod veth>:ingress",
                "a/flannel.1:egress",
                "a/<uplink>:egress",
                "b/<uplink>:ingress",
                "b/flannel.1:ingress",
                "b/<pod veth>:egress"
            ]
        );
        assert_eq!(p.replies[0].label(), "b/<pod veth>:ingress");
        assert_eq!(p.replies[5].label(), "a/<pod veth>:egress");
        // One node: the two veths only; a node reaching a remote pod: from its devices.
        let local = ExpectedPath::between(Place::Pod("a"), Place::Pod("a"), Some("flannel.1"));
        assert_eq!(local.requests.len(), 2);
        let from_node = ExpectedPath::between(Place::Node("a"), Place::Pod("b"), None);
        let labels: Vec<String> = from_node.requests.iter().map(Hop::label).collect();
        assert_eq!(
            labels,
            [
                "a/<uplink>:egress",
                "b/<uplink>:ingress",
                "b/<pod veth>:egress"
            ]
        );
    }

    #[test]
    fn seen_everywhere_both_ways_is_ok() {
        let b = with(with(points(), syn, &REQUESTS), synack, &REPLIES);
        let r = report(b);
        assert_eq!(r.verdict, Verdict::Ok, "{r:?}");
        assert_eq!((r.last_seen.as_str(), r.missing_at.as_str()), ("", ""));
    }

    #[test]
    fn requests_that_stop_after_the_tunnel_are_lost_there() {
        let b = with(points(), syn, &REQUESTS[..5]);
        let r = report(b);
        assert_eq!(r.verdict, Verdict::Lost);
        assert_eq!(r.last_seen, "b/flannel.1:ingress");
        assert_eq!(r.missing_at, "b/<pod veth>:egress");
    }

    #[test]
    fn packets_in_the_windows_last_instant_are_in_flight_not_stopped() {
        // Node b drained first, then node a: a reply leaving b just before the end is seen
        // arriving at a only in the next window.
        let b = with(with(points(), syn, &REQUESTS), synack, &REPLIES[..3]);
        assert_eq!(report_at(b, 50_000_000).verdict, Verdict::Ok);
        let b = with(points(), syn, &REQUESTS[..5]);
        assert_eq!(report_at(b, 50_000_000).verdict, Verdict::Ok);
        // A second later it would have arrived: lost.
        let b = with(points(), syn, &REQUESTS[..5]);
        assert_eq!(report_at(b, SECOND).verdict, Verdict::Lost);
    }

    #[test]
    fn requests_that_reach_the_pod_and_get_no_answer_are_no_reply() {
        let r = report(with(points(), syn, &REQUESTS));
        assert_eq!(r.verdict, Verdict::NoReply);
        assert_eq!(r.last_seen, "b/<pod veth>:egress");
        assert_eq!(r.missing_at, "b/<pod veth>:ingress");
    }

    #[test]
    fn a_reply_lost_on_its_way_back_is_lost_where_it_stopped() {
        let b = with(with(points(), syn, &REQUESTS), synack, &REPLIES[..3]);
        let r = report(b);
        assert_eq!(r.verdict, Verdict::Lost);
        assert_eq!(r.last_seen, "b/eth0:egress".replace("eth0", "<uplink>"));
        assert_eq!(r.missing_at, "a/<uplink>:ingress");
    }

    #[test]
    fn large_packets_vanishing_between_the_uplinks_are_lost_there_though_small_ones_pass() {
        // The handshake and the replies got through; of the data, the uplink of node b saw
        // only the small packets (an MTU black hole on the underlay).
        let data = |bytes| move || syn().counters(10, bytes);
        let mut b = with(points(), data(30_000), &REQUESTS[..3]);
        b = with(b, data(900), &REQUESTS[3..]);
        let r = report(with(b, synack, &REPLIES));
        assert_eq!(r.verdict, Verdict::Lost, "{r:?}");
        assert_eq!(r.last_seen, "a/<uplink>:egress");
        assert_eq!(r.missing_at, "b/<uplink>:ingress");
        // Headers added on the way (the tunnel's) are no shortfall: hops compare within a kind.
        let mut b = with(
            points(),
            data(1000),
            &[A_VETH_IN, A_TUN_OUT, B_TUN_IN, B_VETH_OUT],
        );
        b = with(b, data(1500), &[A_ETH_OUT, B_ETH_IN]);
        assert_eq!(report(with(b, synack, &REPLIES)).verdict, Verdict::Ok);
    }

    #[test]
    fn a_rst_answering_the_syn_is_rejected_by_its_sender() {
        let rst = || Row::flow(6, B, 80, A, 40000).flags(0x14);
        let r = report(with(with(points(), syn, &REQUESTS), rst, &REPLIES));
        assert_eq!(r.verdict, Verdict::Rejected);
        assert_eq!(r.rejected_by, crate::testkit::ip(B));
        // A RST closing an accepted connection is no rejection.
        let close = || synack().flags(0x16);
        let r = report(with(with(points(), syn, &REQUESTS), close, &REPLIES));
        assert_eq!(r.verdict, Verdict::Ok);
    }

    #[test]
    fn a_stop_before_unwatched_points_is_partial_capture_not_lost() {
        // Only node a is captured at all: nothing on b is known to be watched.
        let mut b = BatchBuilder::new();
        for (iface, kind) in [
            ("veth1", IfaceKind::PodVeth),
            ("flannel.1", IfaceKind::Tunnel),
            ("eth0", IfaceKind::Uplink),
        ] {
            b = b
                .point("a", iface, kind, Ingress)
                .point("a", iface, kind, Egress);
        }
        let r = report(with(b, syn, &[0, 3, 5]));
        assert_eq!(r.verdict, Verdict::PartialCapture);
        assert_eq!(r.last_seen, "a/<uplink>:egress");
        assert_eq!(r.missing_at, "");
    }

    #[test]
    fn udp_delivered_without_an_answer_is_ok_and_a_ping_is_not() {
        let udp = || Row::flow(17, A, 40000, B, 514);
        let r = report(with(points(), udp, &REQUESTS));
        assert_eq!(r.verdict, Verdict::Ok);
        let ping = || Row::flow(1, A, 8, B, 42);
        let r = report(with(points(), ping, &REQUESTS));
        assert_eq!(r.verdict, Verdict::NoReply);
    }

    #[test]
    fn kernel_drops_join_their_connection_by_headers_and_are_no_view_of_it() {
        let b = with(points(), syn, &REQUESTS[..4])
            .drop_point("b", "eth0", "NETFILTER_DROP")
            .drop_point("b", "flannel.1", "OTHERHOST")
            .row(syn().at(12).counters(3, 0))
            .row(syn().at(13).counters(1, 0))
            .row(syn().at(12).counters(2, 0));
        let r = report(b);
        assert_eq!(r.verdict, Verdict::Lost);
        assert_eq!(r.last_seen, "b/<uplink>:ingress");
        assert_eq!(r.missing_at, "b/flannel.1:ingress");
        assert_eq!(
            r.drops,
            [
                ("NETFILTER_DROP".to_string(), 5),
                ("OTHERHOST".to_string(), 1)
            ]
        );
        // Drops of nothing any point saw are counted, not made a connection.
        let mut s = Stitcher::default();
        let b = BatchBuilder::new()
            .drop_point("b", "eth0", "NO_SOCKET")
            .row(Row::flow(17, A, 1, B, 2).counters(4, 0))
            .build();
        assert!(s.add_batch(&b).is_empty() && s.drain().is_empty());
        assert_eq!(s.drops_alone, 4);
    }

    #[test]
    fn requests_delivered_then_dropped_by_the_servers_kernel_are_lost_not_unanswered() {
        // Seen entering the server's veth, then freed on that node: a frame for another MAC.
        let b = with(points(), syn, &REQUESTS)
            .drop_point("b", "veth1", "OTHERHOST")
            .row(syn().at(12).counters(3, 0));
        let r = report(b);
        assert_eq!(r.verdict, Verdict::Lost, "{r:?}");
        assert_eq!(r.last_seen, "b/<pod veth>:egress");
        assert_eq!(r.missing_at, "", "no expected point was missed");
        assert_eq!(r.drops, [("OTHERHOST".to_string(), 3)]);
        // Dropped on another node (the client's, a retransmission's copy): still no reply.
        let b = with(points(), syn, &REQUESTS)
            .drop_point("a", "eth0", "NETFILTER_DROP")
            .row(syn().at(12).counters(1, 0));
        assert_eq!(report(b).verdict, Verdict::NoReply);
    }

    #[test]
    fn skipping_the_veths_a_redirect_passes_keeps_cilium_ok() {
        let p = ExpectedPath::between(Place::Pod("a"), Place::Pod("b"), Some("cilium_vxlan"))
            .skipping(IfaceKind::PodVeth, Egress);
        assert!(
            p.requests
                .iter()
                .chain(&p.replies)
                .all(|h| h.direction == Ingress || h.kind != IfaceKind::PodVeth)
        );
        assert_eq!(p.requests.len(), 5);
        assert_eq!(p.replies.len(), 5);
    }
}

#[cfg(test)]
mod icmp_tests {
    use super::*;
    use crate::batch::fp;
    use crate::stitch::Stitcher;
    use crate::testkit::{BatchBuilder, Row, ip};

    /// The quote an ICMP error of `(protocol, src:sport -> dst:dport)` carries.
    fn quote(protocol: u8, src: &str, sport: u16, dst: &str, dport: u16) -> u32 {
        fp::quote(
            protocol,
            ip(src).bits() as u32,
            ip(dst).bits() as u32,
            sport,
            dport,
        )
    }

    #[test]
    fn a_port_unreachable_quoting_the_syn_rejects_it_and_joins_only_its_connection() {
        // Two clients' SYNs to a ClusterIP without endpoints; the node answers the first's
        // with a port unreachable (kube-proxy's REJECT), from its cni0 address.
        let q = quote(6, "10.244.0.5", 40000, "10.96.0.9", 80);
        let b = BatchBuilder::new()
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Ingress)
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Egress)
            .row(Row::flow(6, "10.244.0.5", 40000, "10.96.0.9", 80).fingerprint(fp::TCP_SYN_ISN, 1))
            .row(Row::flow(6, "10.244.0.6", 40000, "10.96.0.9", 80).fingerprint(fp::TCP_SYN_ISN, 2))
            .row(
                Row::flow(1, "10.244.0.1", 3, "10.244.0.5", 3)
                    .fingerprint(fp::ICMP_QUOTE, q)
                    .at(1),
            )
            .build();
        let mut s = Stitcher::default();
        let mut conns = s.add_batch(&b);
        s.window_end_ns = 1_000_000_000;
        conns.extend(s.drain());
        assert_eq!(conns.len(), 2, "the error is no connection of its own");
        let path = ExpectedPath::new()
            .hop("a", IfaceKind::PodVeth, None, Direction::Ingress)
            .hop("a", IfaceKind::Uplink, None, Direction::Egress)
            .mirrored();
        let first = conns
            .iter()
            .find(|c| c.members[0].src == ip("10.244.0.5"))
            .unwrap();
        assert_eq!(first.icmp_errors.len(), 1);
        let r = first.path_report(&path);
        assert_eq!(r.verdict, Verdict::Rejected);
        assert_eq!(r.rejected_by, ip("10.244.0.1"));
        assert_eq!(r.last_seen, "a/<pod veth>:ingress");
        let second = conns
            .iter()
            .find(|c| c.members[0].src == ip("10.244.0.6"))
            .unwrap();
        assert!(second.icmp_errors.is_empty());
        assert_ne!(second.path_report(&path).verdict, Verdict::Rejected);
        // A "no route" from a router is no refusal: the path tells where it stopped.
        let b = BatchBuilder::new()
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Ingress)
            .point("a", "veth1", IfaceKind::PodVeth, Direction::Egress)
            .point("a", "eth0", IfaceKind::Uplink, Direction::Egress)
            .row(Row::flow(6, "10.244.0.5", 40000, "10.96.0.9", 80).fingerprint(fp::TCP_SYN_ISN, 1))
            .row(Row::flow(6, "10.0.0.7", 1, "10.0.0.8", 2).at(2))
            .row(
                Row::flow(1, "10.244.0.1", 3, "10.244.0.5", 0)
                    .fingerprint(fp::ICMP_QUOTE, q)
                    .at(1),
            )
            .build();
        let mut s = Stitcher::default();
        let mut conns = s.add_batch(&b);
        s.window_end_ns = 1_000_000_000;
        conns.extend(s.drain());
        let c = conns.iter().find(|c| !c.icmp_errors.is_empty()).unwrap();
        let r = c.path_report(&path);
        assert_eq!(r.verdict, Verdict::Lost);
        assert_eq!(r.missing_at, "a/<uplink>:egress");
    }
}
