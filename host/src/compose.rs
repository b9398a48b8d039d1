//! Composition: flows of one connection from several plugins become one edge
//! (ARCHITECTURE.md, "Composition"). Plugins run side by side and each sees every view, so a
//! plugin that knows one layer of the path (Kata peer-pods' tunnel to the pod VM) and the
//! CNI's plugin (the pod network under it) both report a connection that crosses both. Each
//! flow says which connection it stands for (WIT `flow-batch.connection`, the same number
//! in every plugin that stitched the same views); per window, the flows sharing one are
//! folded into the one that names its ends best, which keeps its counts (each plugin counted
//! the connection once, never to be added up), and takes the others' evidence and points.

use crate::plugins::bindings::wit;
use std::collections::HashMap;
use std::ops::Range;

/// The flows each plugin returned in one window: (plugin index, batch).
pub type PluginFlows = Vec<(usize, wit::FlowBatch)>;

/// Role codes of the flow batch (`sdk/src/flow.rs` `role_code`).
const POD: u8 = 0;
const NODE: u8 = 1;
const SERVICE: u8 = 2;
const EXTERNAL: u8 = 3;

/// How well a flow names its ends: a pod over a node over a service over the outside over
/// nothing known, a name over none, a service named over none.
fn score(b: &wit::FlowBatch, i: usize) -> u32 {
    let end = |role: u8, name: u32| -> u32 {
        let rank = match role {
            POD => 5,
            NODE => 4,
            SERVICE => 3,
            EXTERNAL => 2,
            _ => 1,
        };
        rank * 2 + u32::from(name != 0)
    };
    end(b.client_role[i], b.client_name[i]) * 16
        + end(b.server_role[i], b.server_name[i])
        + u32::from(b.service_role[i] != 255) * 256
}

/// Where each flow's labels are in a batch's flat list (`evidence` or `observed_at`), from
/// the per-flow counts.
fn spans(counts: impl Iterator<Item = usize>) -> Vec<Range<usize>> {
    let mut at = 0;
    counts
        .map(|n| {
            at += n;
            at - n..at
        })
        .collect()
}

/// Folds the flows of each connection that more than one plugin reported into one, and
/// returns every batch with the folded flows taken out, and per plugin how many of its flows
/// were folded into another plugin's (its health's `flows_composed`).
pub fn compose(batches: PluginFlows, plugins: usize) -> (PluginFlows, Vec<u64>) {
    let folded = vec![0u64; plugins];
    let mut reporting = batches
        .iter()
        .filter(|(_, b)| !b.protocol.is_empty())
        .map(|(p, _)| *p);
    let first = reporting.next();
    if !reporting.any(|p| Some(p) != first) {
        return (batches, folded); // one plugin's flows (or none): nothing to compose
    }
    let mut folded = folded;
    // Connection -> every flow that stands for it: (batch, row).
    let mut by_connection: HashMap<u64, Vec<(usize, usize)>> = HashMap::new();
    for (bi, (_, b)) in batches.iter().enumerate() {
        for (row, &c) in b.connection.iter().enumerate() {
            if c != 0 {
                by_connection.entry(c).or_default().push((bi, row));
            }
        }
    }
    // What each kept flow gains (evidence, points, a path verdict) and which flows go.
    let mut gains: HashMap<(usize, usize), Gain> = HashMap::new();
    let mut gone: Vec<Vec<bool>> = batches
        .iter()
        .map(|(_, b)| vec![false; b.protocol.len()])
        .collect();
    let evidence_at: Vec<Vec<Range<usize>>> = batches
        .iter()
        .map(|(_, b)| spans(b.evidence_count.iter().map(|&n| n as usize)))
        .collect();
    let points_at: Vec<Vec<Range<usize>>> = batches
        .iter()
        .map(|(_, b)| spans(b.observed_count.iter().map(|&n| n as usize)))
        .collect();
    let drops_at: Vec<Vec<Range<usize>>> = batches
        .iter()
        .map(|(_, b)| spans(b.drop_count.iter().map(|&n| n as usize)))
        .collect();
    for rows in by_connection.values() {
        let plugin_of = |&(bi, _): &(usize, usize)| batches[bi].0;
        let first_plugin = plugin_of(&rows[0]);
        if rows.iter().all(|r| plugin_of(r) == first_plugin) {
            continue; // one plugin's flows: nothing to compose
        }
        // The best-named flow; among equals, the plugin listed first.
        let &keep = rows
            .iter()
            .max_by_key(|&&(bi, row)| {
                (score(&batches[bi].1, row), std::cmp::Reverse(batches[bi].0))
            })
            .expect("two rows at least");
        let keep_plugin = plugin_of(&keep);
        for &(bi, row) in rows {
            if (bi, row) == keep || plugin_of(&(bi, row)) == keep_plugin {
                continue;
            }
            let b = &batches[bi].1;
            let s = |i: &u32| b.strings[*i as usize].clone();
            let gain = gains.entry(keep).or_default();
            gain.evidence
                .extend(b.evidence[evidence_at[bi][row].clone()].iter().map(s));
            gain.points
                .extend(b.observed_at[points_at[bi][row].clone()].iter().map(s));
            // The CNI's layer up to the pod's veth, Kata's the tunnel beyond it.
            if judged_worse(
                b.path_verdict[row],
                gain.path.as_ref().map_or(0, |p| p.verdict),
            ) {
                gain.path = Some(Path::of(b, row, &drops_at[bi][row]));
            }
            gone[bi][row] = true;
            folded[batches[bi].0] += 1;
        }
    }
    let composed = batches
        .into_iter()
        .enumerate()
        .map(|(bi, (p, b))| {
            let touched = gone[bi].iter().any(|g| *g) || gains.keys().any(|k| k.0 == bi);
            if !touched {
                return (p, b);
            }
            let rows_gained: HashMap<usize, &Gain> = gains
                .iter()
                .filter(|(k, _)| k.0 == bi)
                .map(|(k, v)| (k.1, v))
                .collect();
            (
                p,
                rebuild(
                    &b,
                    &gone[bi],
                    &rows_gained,
                    &evidence_at[bi],
                    &points_at[bi],
                    &drops_at[bi],
                ),
            )
        })
        .collect();
    (composed, folded)
}

/// What a kept flow takes from the flows folded into it.
#[derive(Default)]
struct Gain {
    evidence: Vec<String>,
    points: Vec<String>,
    /// The worst folded flow's path, for a kept flow that has none or a better verdict (a
    /// Kata flow folded with the CNI's: each knows its layer of the path).
    path: Option<Path>,
}

/// Whether a folded flow's verdict (`code`) should replace `than` (0: unjudged): each plugin
/// judges the layer of the path it knows, and the worst judgement stands.
fn judged_worse(code: u8, than: u8) -> bool {
    use crate::topology::verdict_severity;
    code != 0 && (than == 0 || verdict_severity(code) > verdict_severity(than))
}

/// A flow's path columns, by value.
struct Path {
    verdict: u8,
    last_seen: String,
    missing_at: String,
    rejected_by: (u64, u64),
    rejected_by_node: String,
    drops: Vec<(String, u64)>,
}

impl Path {
    fn of(b: &wit::FlowBatch, row: usize, drops: &Range<usize>) -> Path {
        let s = |i: u32| b.strings[i as usize].clone();
        Path {
            verdict: b.path_verdict[row],
            last_seen: s(b.path_last_seen[row]),
            missing_at: s(b.path_missing_at[row]),
            rejected_by: (b.rejected_by_hi[row], b.rejected_by_lo[row]),
            rejected_by_node: s(b.rejected_by_node[row]),
            drops: drops
                .clone()
                .map(|j| (s(b.drop_reason[j]), b.drop_packets[j]))
                .collect(),
        }
    }
}

/// A flow batch with these strings and no flows.
fn empty(strings: Vec<String>) -> wit::FlowBatch {
    wit::FlowBatch {
        strings,
        client_role: Vec::new(),
        client_ip_hi: Vec::new(),
        client_ip_lo: Vec::new(),
        client_name: Vec::new(),
        server_role: Vec::new(),
        server_ip_hi: Vec::new(),
        server_ip_lo: Vec::new(),
        server_name: Vec::new(),
        service_role: Vec::new(),
        service_ip_hi: Vec::new(),
        service_ip_lo: Vec::new(),
        service_name: Vec::new(),
        protocol: Vec::new(),
        server_port: Vec::new(),
        packets: Vec::new(),
        bytes: Vec::new(),
        first_ns: Vec::new(),
        last_ns: Vec::new(),
        confidence: Vec::new(),
        evidence_count: Vec::new(),
        evidence: Vec::new(),
        observed_count: Vec::new(),
        observed_at: Vec::new(),
        continued: Vec::new(),
        connection: Vec::new(),
        path_verdict: Vec::new(),
        path_last_seen: Vec::new(),
        path_missing_at: Vec::new(),
        rejected_by_hi: Vec::new(),
        rejected_by_lo: Vec::new(),
        rejected_by_node: Vec::new(),
        drop_count: Vec::new(),
        drop_reason: Vec::new(),
        drop_packets: Vec::new(),
    }
}

/// `b` without the rows marked gone, each kept row with its gains added to its evidence and
/// points (each label once), and a folded flow's path where it had none.
fn rebuild(
    b: &wit::FlowBatch,
    gone: &[bool],
    gains: &HashMap<usize, &Gain>,
    evidence_at: &[Range<usize>],
    points_at: &[Range<usize>],
    drops_at: &[Range<usize>],
) -> wit::FlowBatch {
    let mut out = empty(b.strings.clone());
    // The batch's strings by text, made when a gained label first needs one.
    let mut index: HashMap<String, u32> = HashMap::new();
    let mut intern = |strings: &mut Vec<String>, s: &str| -> u32 {
        if index.is_empty() {
            index.extend(
                strings
                    .iter()
                    .enumerate()
                    .map(|(i, x)| (x.clone(), i as u32)),
            );
        }
        *index.entry(s.to_string()).or_insert_with(|| {
            strings.push(s.to_string());
            (strings.len() - 1) as u32
        })
    };
    for row in (0..b.protocol.len()).filter(|&r| !gone[r]) {
        out.client_role.push(b.client_role[row]);
        out.client_ip_hi.push(b.client_ip_hi[row]);
        out.client_ip_lo.push(b.client_ip_lo[row]);
        out.client_name.push(b.client_name[row]);
        out.server_role.push(b.server_role[row]);
        out.server_ip_hi.push(b.server_ip_hi[row]);
        out.server_ip_lo.push(b.server_ip_lo[row]);
        out.server_name.push(b.server_name[row]);
        out.service_role.push(b.service_role[row]);
        out.service_ip_hi.push(b.service_ip_hi[row]);
        out.service_ip_lo.push(b.service_ip_lo[row]);
        out.service_name.push(b.service_name[row]);
        out.protocol.push(b.protocol[row]);
        out.server_port.push(b.server_port[row]);
        out.packets.push(b.packets[row]);
        out.bytes.push(b.bytes[row]);
        out.first_ns.push(b.first_ns[row]);
        out.last_ns.push(b.last_ns[row]);
        out.confidence.push(b.confidence[row]);
        out.continued.push(b.continued[row]);
        out.connection.push(b.connection[row]);
        let mut evidence: Vec<u32> = b.evidence[evidence_at[row].clone()].to_vec();
        let mut points: Vec<u32> = b.observed_at[points_at[row].clone()].to_vec();
        let gained_path = gains
            .get(&row)
            .and_then(|g| g.path.as_ref())
            .filter(|p| judged_worse(p.verdict, b.path_verdict[row]));
        match gained_path {
            Some(p) => {
                out.path_verdict.push(p.verdict);
                let last_seen = intern(&mut out.strings, &p.last_seen);
                out.path_last_seen.push(last_seen);
                let missing_at = intern(&mut out.strings, &p.missing_at);
                out.path_missing_at.push(missing_at);
                out.rejected_by_hi.push(p.rejected_by.0);
                out.rejected_by_lo.push(p.rejected_by.1);
                let node = intern(&mut out.strings, &p.rejected_by_node);
                out.rejected_by_node.push(node);
                out.drop_count.push(p.drops.len() as u8);
                for (reason, packets) in &p.drops {
                    let r = intern(&mut out.strings, reason);
                    out.drop_reason.push(r);
                    out.drop_packets.push(*packets);
                }
            }
            None => {
                out.path_verdict.push(b.path_verdict[row]);
                out.path_last_seen.push(b.path_last_seen[row]);
                out.path_missing_at.push(b.path_missing_at[row]);
                out.rejected_by_hi.push(b.rejected_by_hi[row]);
                out.rejected_by_lo.push(b.rejected_by_lo[row]);
                out.rejected_by_node.push(b.rejected_by_node[row]);
                out.drop_count.push(b.drop_count[row]);
                out.drop_reason
                    .extend_from_slice(&b.drop_reason[drops_at[row].clone()]);
                out.drop_packets
                    .extend_from_slice(&b.drop_packets[drops_at[row].clone()]);
            }
        }
        if let Some(Gain {
            evidence: more_evidence,
            points: more_points,
            ..
        }) = gains.get(&row).copied()
        {
            for e in more_evidence.iter() {
                let i = intern(&mut out.strings, e);
                if !evidence.contains(&i) {
                    evidence.push(i);
                }
            }
            for p in more_points.iter() {
                let i = intern(&mut out.strings, p);
                if !points.contains(&i) {
                    points.push(i);
                }
            }
        }
        evidence.truncate(u8::MAX as usize);
        points.truncate(u16::MAX as usize);
        out.evidence_count.push(evidence.len() as u8);
        out.evidence.extend(evidence);
        out.observed_count.push(points.len() as u16);
        out.observed_at.extend(points);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of flows (client ip, client role, client name, server ip, packets, evidence,
    /// points, connection), server a pod on TCP 80.
    type Row<'a> = (
        u64,
        u8,
        &'a str,
        u64,
        u64,
        &'a [&'a str],
        &'a [&'a str],
        u64,
    );

    fn batch(rows: &[Row]) -> wit::FlowBatch {
        let mut b = empty(vec![String::new()]);
        let mut intern = |s: &str| -> u32 {
            if s.is_empty() {
                return 0;
            }
            match b.strings.iter().position(|x| x == s) {
                Some(i) => i as u32,
                None => {
                    b.strings.push(s.into());
                    (b.strings.len() - 1) as u32
                }
            }
        };
        let mut cols: Vec<(u8, u32, Vec<u32>, Vec<u32>)> = Vec::new();
        for (_, role, name, _, _, ev, pts, _) in rows {
            let name = intern(name);
            let ev = ev.iter().map(|e| intern(e)).collect();
            let pts = pts.iter().map(|p| intern(p)).collect();
            cols.push((*role, name, ev, pts));
        }
        for (r, (client_ip, _, _, server_ip, packets, _, _, connection)) in rows.iter().enumerate()
        {
            let (role, name, ev, pts) = &cols[r];
            b.client_role.push(*role);
            b.client_ip_hi.push(0);
            b.client_ip_lo.push(*client_ip);
            b.client_name.push(*name);
            b.server_role.push(POD);
            b.server_ip_hi.push(0);
            b.server_ip_lo.push(*server_ip);
            b.server_name.push(0);
            b.service_role.push(255);
            b.service_ip_hi.push(0);
            b.service_ip_lo.push(0);
            b.service_name.push(0);
            b.protocol.push(6);
            b.server_port.push(80);
            b.packets.push(*packets);
            b.bytes.push(packets * 100);
            b.first_ns.push(1);
            b.last_ns.push(2);
            b.confidence.push(1.0);
            b.continued.push(false);
            b.connection.push(*connection);
            b.evidence_count.push(ev.len() as u8);
            b.evidence.extend(ev);
            b.observed_count.push(pts.len() as u16);
            b.observed_at.extend(pts);
            b.path_verdict.push(0);
            b.path_last_seen.push(0);
            b.path_missing_at.push(0);
            b.rejected_by_hi.push(0);
            b.rejected_by_lo.push(0);
            b.rejected_by_node.push(0);
            b.drop_count.push(0);
        }
        b
    }

    /// Gives flow `row` of `b` a path verdict, last-seen point and one drop reason.
    fn judged(mut b: wit::FlowBatch, row: usize, verdict: u8, last_seen: &str) -> wit::FlowBatch {
        b.strings.push(last_seen.into());
        b.path_verdict[row] = verdict;
        b.path_last_seen[row] = (b.strings.len() - 1) as u32;
        b.strings.push("NETFILTER_DROP".into());
        // Drops are in row order: this helper judges one row of a batch without others'.
        b.drop_count[row] = 1;
        b.drop_reason.push((b.strings.len() - 1) as u32);
        b.drop_packets.push(3);
        b
    }

    fn labels(b: &wit::FlowBatch, row: usize) -> (Vec<String>, Vec<String>) {
        let ev = spans(b.evidence_count.iter().map(|&n| n as usize))[row].clone();
        let pt = spans(b.observed_count.iter().map(|&n| n as usize))[row].clone();
        let s = |i: &u32| b.strings[*i as usize].clone();
        (
            b.evidence[ev].iter().map(s).collect(),
            b.observed_at[pt].iter().map(s).collect(),
        )
    }

    #[test]
    fn one_connection_from_two_plugins_is_one_flow_with_both_plugins_evidence() {
        // The CNI plugin names the client pod; the other knows only its address, and the
        // tunnel the connection took. Connection 7 is both; 8 is the CNI's alone; 9 the
        // other's alone.
        let cni = batch(&[
            (5, POD, "", 9, 12, &["flannel:vxlan"], &["a/eth0:egress"], 7),
            (5, POD, "", 10, 4, &[], &["a/veth1:ingress"], 8),
        ]);
        let other = batch(&[
            (
                5,
                4,
                "",
                9,
                12,
                &["kata:peer-pod"],
                &["a/eth0:egress", "peer-pod-vm/192.0.2.50"],
                7,
            ),
            (6, 4, "", 11, 3, &["kata:peer-pod"], &["b/eth0:egress"], 9),
        ]);
        let (out, folded) = compose(vec![(0, cni), (1, other)], 2);
        assert_eq!(
            folded,
            vec![0, 1],
            "the other plugin's flow of 7 was folded"
        );
        let total: usize = out.iter().map(|(_, b)| b.protocol.len()).sum();
        assert_eq!(total, 3, "7 once, 8, 9");
        let (_, cni) = &out[0];
        assert_eq!(cni.packets[0], 12, "counted once, not 24");
        let (ev, pts) = labels(cni, 0);
        assert_eq!(ev, ["flannel:vxlan", "kata:peer-pod"]);
        assert_eq!(pts, ["a/eth0:egress", "peer-pod-vm/192.0.2.50"]);
        let (_, other) = &out[1];
        assert_eq!(other.connection, vec![9]);
    }

    #[test]
    fn the_flow_that_names_its_ends_best_is_kept_whatever_the_plugin_order() {
        let vague = batch(&[(5, 4, "", 9, 6, &["x:tunnel"], &["p1"], 3)]);
        let named = batch(&[(5, POD, "shop/client", 9, 6, &["cni:rule"], &["p2"], 3)]);
        let (out, folded) = compose(vec![(0, vague), (1, named)], 2);
        assert_eq!(folded, vec![1, 0]);
        assert!(out[0].1.protocol.is_empty());
        let kept = &out[1].1;
        assert_eq!(kept.strings[kept.client_name[0] as usize], "shop/client");
        assert_eq!(labels(kept, 0).0, ["cni:rule", "x:tunnel"]);
    }

    #[test]
    fn a_kept_flow_without_a_path_takes_the_folded_flows_verdict_and_drops() {
        // The better-named flow (kept) states no path; the CNI's does.
        let named = batch(&[(5, POD, "shop/client", 9, 6, &["x:peer"], &["p2"], 3)]);
        let cni = judged(
            batch(&[(5, 4, "", 9, 6, &["cni:rule"], &["p1"], 3)]),
            0,
            3,
            "b/flannel.1:ingress",
        );
        let (out, _) = compose(vec![(0, cni), (1, named)], 2);
        let kept = &out[1].1;
        assert_eq!(kept.path_verdict, [3]);
        assert_eq!(
            kept.strings[kept.path_last_seen[0] as usize],
            "b/flannel.1:ingress"
        );
        assert_eq!(kept.drop_count, [1]);
        assert_eq!(kept.strings[kept.drop_reason[0] as usize], "NETFILTER_DROP");
        assert_eq!(kept.drop_packets, [3]);
        assert!(crate::plugins::convert::check_flows(kept).is_ok());
    }

    #[test]
    fn the_worse_of_two_judged_layers_stands() {
        // The kept flow (better named, Kata's) and the CNI's, each judged (verdict, last
        // seen): the kept flow's verdict and last-seen point after composing.
        let composed = |kata: (u8, &str), cni: (u8, &str)| {
            let named = judged(
                batch(&[(5, POD, "shop/client", 9, 6, &["x:peer"], &["p2"], 3)]),
                0,
                kata.0,
                kata.1,
            );
            let cni = judged(
                batch(&[(5, 4, "", 9, 6, &["cni:rule"], &["p1"], 3)]),
                0,
                cni.0,
                cni.1,
            );
            let (mut out, _) = compose(vec![(0, cni), (1, named)], 2);
            let kept = out.remove(1).1;
            assert!(crate::plugins::convert::check_flows(&kept).is_ok());
            let last_seen = kept.strings[kept.path_last_seen[0] as usize].clone();
            (kept.path_verdict, last_seen)
        };
        // Kata judges its tunnel lost; the CNI its layer ok: lost.
        let (verdict, last_seen) = composed((3, "podvm-web/vxlan0:ingress"), (1, ""));
        assert_eq!(verdict, [3]);
        assert_eq!(last_seen, "podvm-web/vxlan0:ingress");
        // The other way round: the CNI's lost wins over Kata's ok.
        let (verdict, last_seen) = composed((1, ""), (3, "b/flannel.1:ingress"));
        assert_eq!(verdict, [3]);
        assert_eq!(last_seen, "b/flannel.1:ingress");
    }

    #[test]
    fn one_plugin_alone_and_unknown_connections_are_left_as_they_are() {
        // Two flows of one plugin with one id (two windows' worth): not composed.
        let one = batch(&[
            (5, POD, "", 9, 1, &[], &[], 4),
            (5, POD, "", 9, 1, &[], &[], 4),
        ]);
        let (out, folded) = compose(vec![(0, one.clone())], 2);
        assert_eq!((out[0].1.protocol.len(), folded), (2, vec![0, 0]));
        // Connection 0 is no identity.
        let a = batch(&[(5, POD, "", 9, 1, &[], &[], 0)]);
        let b = batch(&[(5, POD, "", 9, 1, &[], &[], 0)]);
        let (out, folded) = compose(vec![(0, a), (1, b)], 2);
        assert_eq!(out.iter().map(|(_, b)| b.protocol.len()).sum::<usize>(), 2);
        assert_eq!(folded, vec![0, 0]);
    }
}
