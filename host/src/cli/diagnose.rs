//! `cniscope diagnose`: the connections that did not get through, one sentence each, from a
//! topology document (a file `replay`/`run`/`aggregate` wrote, standard input, or a server's
//! `/api/topology`). `--format diagnose` prints the same at the end of a replay or a run.

use super::output;
use anyhow::{Context, Result, bail};
use cniscope::diagnose::{edges_of_json, render};
use std::io::Read;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DiagnoseArgs {
    /// A topology document in JSON (`--format json`, `output_file`), or `-` for standard
    /// input. Without it, `--server`'s.
    document: Option<PathBuf>,
    /// The server of `cniscope run` or `cniscope aggregate` (`[server] listen`).
    #[cfg(feature = "server")]
    #[arg(long, conflicts_with = "document")]
    server: Option<String>,
    /// A file holding the server's bearer token (`[server] token_file`).
    #[cfg(feature = "server")]
    #[arg(long, requires = "server")]
    token_file: Option<PathBuf>,
}

pub fn run(args: DiagnoseArgs) -> Result<()> {
    let (json, from) = match &args.document {
        Some(p) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the document from standard input")?;
            (s, "standard input".to_string())
        }
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            p.display().to_string(),
        ),
        None => from_server(&args)?,
    };
    let edges = edges_of_json(&json)
        .with_context(|| format!("{from}: not a cniscope topology document"))?;
    output::print(&render(&edges))
}

#[cfg(feature = "server")]
fn from_server(args: &DiagnoseArgs) -> Result<(String, String)> {
    let Some(server) = &args.server else {
        bail!("name a topology document (FILE or -) or a --server");
    };
    let (base, token) = super::observe::server_and_token(server, args.token_file.as_deref())?;
    let url = format!("{base}/api/topology");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let text = runtime.block_on(async {
        let mut r = reqwest::Client::new().get(&url);
        if let Some(t) = &token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.with_context(|| format!("reaching {base}"))?;
        let status = r.status();
        let text = r.text().await.context("reading the topology")?;
        if !status.is_success() {
            bail!("{url}: {status}: {}", text.trim());
        }
        Ok(text)
    })?;
    Ok((text, url))
}

#[cfg(not(feature = "server"))]
fn from_server(_: &DiagnoseArgs) -> Result<(String, String)> {
    bail!("name a topology document (FILE or -)");
}
