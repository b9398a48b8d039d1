//! Sinks render the topology: JSON (the contract), Graphviz DOT, and a table for people.

use crate::topology::{EndpointKind, TopologyDoc};
use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Table,
    Json,
    Dot,
    /// The edges whose packets did not all get through, a sentence each (`cniscope diagnose`).
    Diagnose,
}

/// Replaces `path` with `bytes` whole: a temporary file in the same folder, then a rename, so
/// a reader never sees half a document. What is not a regular file (`/dev/null`,
/// `/dev/stdout`, a pipe) is written to, never replaced: a rename would put a regular file
/// where the device was, for every process on the machine.
pub fn replace_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Ok(meta) = std::fs::metadata(path)
        && !meta.is_file()
        && !meta.is_dir()
    {
        return std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, bytes));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

pub fn render(doc: &TopologyDoc, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(doc).expect("topology serializes") + "\n",
        Format::Dot => dot(doc),
        Format::Table => table(doc),
        Format::Diagnose => {
            let edges: Vec<crate::diagnose::DiagEdge> = serde_json::to_value(&doc.edges)
                .and_then(serde_json::from_value)
                .expect("edges read back as they were written");
            crate::diagnose::render(&edges)
        }
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn dot(doc: &TopologyDoc) -> String {
    let mut out =
        String::from("digraph cniscope {\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n");
    for n in &doc.nodes {
        let shape = match n.kind {
            EndpointKind::Pod => "box",
            EndpointKind::Service => "ellipse",
            EndpointKind::Node => "box3d",
            EndpointKind::External | EndpointKind::Unknown => "diamond",
        };
        let _ = writeln!(
            out,
            "  {} [label={}, shape={shape}];",
            quote(&n.id),
            quote(&n.id)
        );
    }
    for e in &doc.edges {
        let via = e
            .service
            .as_deref()
            .map(|s| format!(" via {s}"))
            .unwrap_or_default();
        let label = format!("{}/{}{via}\\n{} pkts", e.protocol, e.port, e.packets);
        let _ = writeln!(
            out,
            "  {} -> {} [label={}];",
            quote(&e.src),
            quote(&e.dst),
            quote(&label).replace("\\\\n", "\\n")
        );
    }
    out.push_str("}\n");
    out
}

fn table(doc: &TopologyDoc) -> String {
    let rows: Vec<[String; 7]> = doc
        .edges
        .iter()
        .map(|e| {
            [
                e.src.clone(),
                e.dst.clone(),
                e.service.clone().unwrap_or_else(|| "-".into()),
                format!("{}/{}", e.protocol, e.port),
                e.packets.to_string(),
                e.path.as_ref().map_or("-".into(), |p| p.verdict.clone()),
                e.evidence.iter().cloned().collect::<Vec<_>>().join(","),
            ]
        })
        .collect();
    let header = [
        "CLIENT", "SERVER", "SERVICE", "PORT", "PACKETS", "PATH", "EVIDENCE",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let _ = writeln!(
        out,
        "\n{} edges, {} endpoints, window {} .. {}",
        doc.edges.len(),
        doc.nodes.len(),
        doc.window.start,
        doc.window.end
    );
    for (name, h) in &doc.health.plugins {
        let _ = writeln!(
            out,
            "plugin {name}: {} ({} calls, {} traps, {} deadline kills, {} memory kills, {} observations lost)",
            h.state, h.calls, h.traps, h.deadline_kills, h.memory_kills, h.observations_lost
        );
        if !h.counters.is_empty() {
            let counters: Vec<String> =
                h.counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(out, "plugin {name} counters: {}", counters.join(", "));
        }
    }
    for (reason, n) in &doc.health.drops {
        let _ = writeln!(out, "dropped {n}: {reason}");
    }
    for e in &doc.health.errors {
        let _ = writeln!(out, "error: {e}");
    }
    for w in &doc.health.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::replace_file;

    #[test]
    fn a_file_is_replaced_whole_and_a_device_is_written_to_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("topology.json");
        replace_file(&file, b"one").unwrap();
        replace_file(&file, b"two").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
        // A pipe stands for a device here (making a device node needs root): it stays a pipe.
        let fifo = dir.path().join("fifo");
        let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let reader = std::thread::spawn({
            let fifo = fifo.clone();
            move || std::fs::read(fifo).unwrap()
        });
        replace_file(&fifo, b"through").unwrap();
        assert_eq!(reader.join().unwrap(), b"through");
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        // And /dev/null stays the null device.
        replace_file(std::path::Path::new("/dev/null"), b"nothing").unwrap();
        assert!(
            std::fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }
}
