//! `cniscope diagnose` and `--format diagnose`: every edge whose connections did not all get
//! through, as one sentence with its evidence (docs/output-contract.md, "path").

use crate::topology::{EdgePath, severity};
use serde::Deserialize;
use std::fmt::Write;

/// What a sentence needs of an edge; read from a topology document (the JSON contract), so
/// a saved document or a server's `/api/topology` diagnoses the same as a run's own.
#[derive(Clone, Debug, Deserialize)]
pub struct DiagEdge {
    pub src: String,
    pub dst: String,
    #[serde(default)]
    pub service: Option<String>,
    pub protocol: String,
    pub port: u16,
    #[serde(default)]
    pub observed_at: Vec<String>,
    #[serde(default)]
    pub path: Option<EdgePath>,
}

#[derive(Deserialize)]
struct Doc {
    edges: Vec<DiagEdge>,
}

/// The edges of a topology document in JSON.
pub fn edges_of_json(json: &str) -> Result<Vec<DiagEdge>, serde_json::Error> {
    Ok(serde_json::from_str::<Doc>(json)?.edges)
}

/// The diagnosis: a sentence per edge that is not `ok`, worst first, then a summary line.
pub fn render(edges: &[DiagEdge]) -> String {
    let mut bad: Vec<(&DiagEdge, &EdgePath)> = edges
        .iter()
        .filter_map(|e| e.path.as_ref().map(|p| (e, p)))
        .filter(|(_, p)| p.verdict != "ok")
        .collect();
    bad.sort_by_key(|(e, p)| {
        (
            std::cmp::Reverse(severity(&p.verdict)),
            e.src.clone(),
            e.dst.clone(),
        )
    });
    let judged = edges.iter().filter(|e| e.path.is_some()).count();
    let mut out = String::new();
    for (e, p) in &bad {
        out.push_str(&sentence(e, p));
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "{} of {judged} judged edges not ok ({} edges in all; an edge is judged when its CNI's plugin states the path).",
        bad.len(),
        edges.len()
    );
    out
}

/// One edge's story: who to whom, what happened where, what the kernel said, how many of its
/// connections, which points saw it.
pub fn sentence(e: &DiagEdge, p: &EdgePath) -> String {
    let mut s = e.src.clone();
    if let Some(svc) = &e.service {
        let _ = write!(s, " -> {svc}");
    }
    let _ = write!(
        s,
        " -> {} {}/{}: {}",
        e.dst,
        e.protocol,
        e.port,
        p.verdict.to_uppercase()
    );
    let at = |point: &str| {
        if point.is_empty() {
            "no expected point".to_string()
        } else {
            point.to_string()
        }
    };
    match p.verdict.as_str() {
        // Dropped after the last expected point (in the server's own kernel): nothing
        // further was to see it.
        "lost" if p.missing_at.is_empty() && !p.last_seen.is_empty() => {
            let _ = write!(
                s,
                ": last seen at {}, never delivered beyond it",
                p.last_seen
            );
        }
        "lost" => {
            let _ = write!(
                s,
                ": last seen at {}, never reached {}",
                at(&p.last_seen),
                at(&p.missing_at)
            );
        }
        "no-reply" => {
            let _ = write!(
                s,
                ": the requests reached {} and no reply came back",
                at(&p.last_seen)
            );
            if !p.missing_at.is_empty() {
                let _ = write!(s, " (none at {})", p.missing_at);
            }
        }
        "rejected" => {
            let by = if p.rejected_by.is_empty() {
                "the server side"
            } else {
                &p.rejected_by
            };
            let _ = write!(s, ": refused by {by} (a RST answered the handshake)");
            if !p.last_seen.is_empty() {
                let _ = write!(s, ", the requests last seen at {}", p.last_seen);
            }
        }
        "partial-capture" => {
            let _ = write!(
                s,
                ": last seen at {}; the points after it are not watched, so where it went cannot be told",
                at(&p.last_seen)
            );
        }
        _ => {}
    }
    if !p.drops.is_empty() {
        let drops: Vec<String> = p.drops.iter().map(|(r, n)| format!("{r} x{n}")).collect();
        let _ = write!(s, "; the kernel dropped {}", drops.join(", "));
    }
    let total: u64 = p.verdicts.values().sum();
    let this = p.verdicts.get(&p.verdict).copied().unwrap_or(0);
    let _ = write!(s, " [{this} of {total} connections");
    let others: Vec<String> = p
        .verdicts
        .iter()
        .filter(|(v, _)| **v != p.verdict)
        .map(|(v, n)| format!("{n} {v}"))
        .collect();
    if !others.is_empty() {
        let _ = write!(s, "; {}", others.join(", "));
    }
    s.push(']');
    if !e.observed_at.is_empty() {
        let _ = write!(s, "; seen at {}", e.observed_at.join(", "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(verdict: &str, path: EdgePath) -> DiagEdge {
        DiagEdge {
            src: "pod/shop/client".into(),
            dst: format!("pod/shop/{verdict}"),
            service: Some("service/shop/web".into()),
            protocol: "tcp".into(),
            port: 80,
            observed_at: vec!["a/veth1:ingress".into(), "a/eth0:egress".into()],
            path: Some(EdgePath {
                verdict: verdict.into(),
                verdicts: [(verdict.to_string(), 2), ("ok".to_string(), 1)].into(),
                ..path
            }),
        }
    }

    #[test]
    fn each_edge_not_ok_is_one_sentence_with_where_it_stopped_and_what_the_kernel_said() {
        let lost = edge(
            "lost",
            EdgePath {
                last_seen: "b/flannel.1:ingress".into(),
                missing_at: "b/<pod veth>:egress".into(),
                drops: [("NETFILTER_DROP".to_string(), 12)].into(),
                ..EdgePath::default()
            },
        );
        let rejected = edge(
            "rejected",
            EdgePath {
                rejected_by: "pod/shop/rejected".into(),
                last_seen: "b/<pod veth>:egress".into(),
                ..EdgePath::default()
            },
        );
        let mut ok = edge("ok", EdgePath::default());
        ok.dst = "pod/shop/fine".into();
        let out = render(&[rejected, ok, lost]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(
            lines[0],
            "pod/shop/client -> service/shop/web -> pod/shop/lost tcp/80: LOST: last seen at \
             b/flannel.1:ingress, never reached b/<pod veth>:egress; the kernel dropped \
             NETFILTER_DROP x12 [2 of 3 connections; 1 ok]; seen at a/veth1:ingress, a/eth0:egress"
        );
        assert!(
            lines[1].contains("REJECTED: refused by pod/shop/rejected"),
            "{}",
            lines[1]
        );
        assert_eq!(
            lines[2],
            "2 of 3 judged edges not ok (3 edges in all; an edge is judged when its CNI's plugin states the path)."
        );
    }

    #[test]
    fn a_document_from_the_json_contract_is_read_back() {
        let json = r#"{"window": {}, "nodes": [], "edges": [
            {"src": "node/a", "dst": "pod/x/y", "protocol": "icmp", "port": 0, "packets": 3,
             "path": {"verdict": "no-reply", "last_seen": "b/<pod veth>:egress",
                      "verdicts": {"no-reply": 1}}},
            {"src": "node/a", "dst": "pod/x/z", "protocol": "tcp", "port": 80}]}"#;
        let edges = edges_of_json(json).unwrap();
        let out = render(&edges);
        assert!(out.starts_with(
            "node/a -> pod/x/y icmp/0: NO-REPLY: the requests reached b/<pod veth>:egress and no reply came back [1 of 1 connections]"
        ), "{out}");
        assert!(out.ends_with("1 of 1 judged edges not ok (2 edges in all; an edge is judged when its CNI's plugin states the path).\n"));
    }
}
