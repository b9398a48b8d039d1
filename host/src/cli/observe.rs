//! `cniscope observe`: follows a server's event stream (`/api/edges/stream`) in the
//! terminal, one line per edge that changed in a window, as `hubble observe` does for flows.

use super::output;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ObserveArgs {
    /// The server of `cniscope run` or `cniscope aggregate` (`[server] listen`).
    #[arg(long, default_value = "http://127.0.0.1:9464")]
    server: String,
    /// Only edges touching this namespace (repeatable).
    #[arg(long)]
    namespace: Vec<String>,
    /// Only edges to or from this pod, `NAME` or `NAMESPACE/NAME` (repeatable).
    #[arg(long)]
    pod: Vec<String>,
    /// First print the traffic of the last N windows the server keeps.
    #[arg(long)]
    last: Option<usize>,
    /// A file holding the server's bearer token (`[server] token_file`).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// `table` lines for people, or `json`: each window's document on one line.
    #[arg(long, short = 'o', default_value = "table")]
    output: ObserveFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ObserveFormat {
    Table,
    Json,
}

/// What a line needs of the stream's documents.
#[derive(Deserialize)]
struct WindowDoc {
    window: Span,
    edges: Vec<EdgeLine>,
}

#[derive(Deserialize)]
struct Span {
    end: String,
}

#[derive(Deserialize)]
struct EdgeLine {
    src: String,
    dst: String,
    service: Option<String>,
    protocol: String,
    port: u16,
    packets: u64,
    bytes: u64,
    evidence: Vec<String>,
}

/// One server-sent event.
struct Event {
    name: String,
    data: String,
}

/// Reads server-sent events off a byte stream (the WHATWG format: `field: value` lines, a
/// blank line ends an event).
#[derive(Default)]
struct EventReader {
    buf: Vec<u8>,
    name: String,
    data: Vec<String>,
}

impl EventReader {
    fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(Event) -> Result<()>) -> Result<()> {
        self.buf.extend_from_slice(bytes);
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    on_event(Event {
                        name: std::mem::take(&mut self.name),
                        data: std::mem::take(&mut self.data).join("\n"),
                    })?;
                }
                self.name.clear();
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.name = value.to_string(),
                "data" => self.data.push(value.to_string()),
                _ => {} // comments (keep-alives), id, retry
            }
        }
        Ok(())
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut i) = (n as f64, 0);
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Prints a window's edges; `seen` marks the edges this observer had not seen before.
fn print_window(doc: &WindowDoc, seen: &mut HashSet<String>) -> Result<()> {
    let mut text = String::new();
    for e in &doc.edges {
        let via = e
            .service
            .as_deref()
            .map(|s| format!(" via {s}"))
            .unwrap_or_default();
        let key = format!("{} {} {via} {}/{}", e.src, e.dst, e.protocol, e.port);
        let mark = if seen.insert(key) { "new" } else { "   " };
        let evidence = if e.evidence.is_empty() {
            "direct".to_string()
        } else {
            e.evidence.join(",")
        };
        text.push_str(&format!(
            "{}  {mark}  {} -> {}{via}  {}/{}  +{} pkts  +{}  {evidence}\n",
            doc.window.end,
            e.src,
            e.dst,
            e.protocol,
            e.port,
            e.packets,
            human_bytes(e.bytes),
        ));
    }
    output::print(&text)
}

/// A server's base address (`http://HOST:PORT`, no trailing slash) and the bearer token in
/// `token_file`, if any: what every command that reads a server starts with.
pub(super) fn server_and_token(
    server: &str,
    token_file: Option<&std::path::Path>,
) -> Result<(String, Option<String>)> {
    let base = server.trim_end_matches('/').to_string();
    if !base.starts_with("http://") {
        bail!("--server {base}: use http://HOST:PORT (the server speaks plain HTTP)");
    }
    let token = match token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading --token-file {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    Ok((base, token))
}

pub fn run(args: ObserveArgs) -> Result<()> {
    let (base, token) = server_and_token(&args.server, args.token_file.as_deref())?;
    let mut query: Vec<(&str, String)> = Vec::new();
    query.extend(args.namespace.iter().map(|n| ("namespace", n.clone())));
    query.extend(args.pod.iter().map(|p| ("pod", p.clone())));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(observe(&base, token.as_deref(), &query, &args))
}

async fn observe(
    base: &str,
    token: Option<&str>,
    query: &[(&str, String)],
    args: &ObserveArgs,
) -> Result<()> {
    let client = reqwest::Client::new();
    let get = |path: &str, extra: &[(&str, String)]| {
        let mut r = client
            .get(format!("{base}{path}"))
            .query(query)
            .query(extra);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r
    };
    let mut seen = HashSet::new();
    if let Some(n) = args.last {
        let r = get("/api/topology", &[("window", n.to_string())])
            .send()
            .await
            .with_context(|| format!("reaching {base}"))?;
        let r = refused(r).await?;
        let text = r.text().await.context("reading the topology")?;
        match args.output {
            ObserveFormat::Json => output::print(&(text + "\n"))?,
            ObserveFormat::Table => {
                let doc: WindowDoc =
                    serde_json::from_str(&text).context("reading the topology document")?;
                print_window(&doc, &mut seen)?;
            }
        }
    }
    let mut connected_once = false;
    let mut wait = Duration::from_millis(500);
    loop {
        let response = match get("/api/edges/stream", &[]).send().await {
            Ok(r) => refused(r).await?,
            Err(e) if !connected_once => {
                return Err(e).with_context(|| format!("reaching {base}"));
            }
            Err(e) => {
                eprintln!("observe: {base}: {e}; trying again in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        connected_once = true;
        wait = Duration::from_millis(500);
        let mut reader = EventReader::default();
        let mut response = response;
        let ended = loop {
            match response.chunk().await {
                Ok(Some(bytes)) => {
                    reader.feed(&bytes, |ev| match (ev.name.as_str(), args.output) {
                        ("window", ObserveFormat::Json) => output::print(&(ev.data + "\n")),
                        ("window", ObserveFormat::Table) => {
                            let doc: WindowDoc = serde_json::from_str(&ev.data)
                                .context("reading a window from the stream")?;
                            print_window(&doc, &mut seen)
                        }
                        ("resync", _) => {
                            eprintln!("observe: {}", ev.data);
                            Ok(())
                        }
                        _ => Ok(()),
                    })?
                }
                Ok(None) => break "the server closed the stream".to_string(),
                Err(e) => break e.to_string(),
            }
        };
        eprintln!("observe: {base}: {ended}; reconnecting");
        tokio::time::sleep(wait).await;
    }
}

/// The server's refusal (a bad filter, a missing token) as the error, in its words.
async fn refused(r: reqwest::Response) -> Result<reqwest::Response> {
    if r.status().is_success() {
        return Ok(r);
    }
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    bail!("the server said {status}: {}", body.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut r = EventReader::default();
        let mut got = Vec::new();
        for chunk in [
            &b": keep-alive\n\nevent: win"[..],
            b"dow\nid: 1\ndata: {\"a\":\ndata: 1}\n",
            b"\r\n",
        ] {
            r.feed(chunk, |e| {
                got.push((e.name, e.data));
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(got, vec![("window".to_string(), "{\"a\":\n1}".to_string())]);
    }
}
