//! `cniscope synth`: synthetic captures with ground truth, and the score of a replay of them.

use anyhow::{Context, Result, bail};
use cniscope::synth::{self, Shape, Spec};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum SynthCommand {
    /// Write captures (one pcap per capture point), inventory.json, cniscope.toml and the
    /// exact expected topology (expected.json) of N connections on a CNI's shape; then
    /// `cniscope replay -c DIR/cniscope.toml -f json -o out.json` and `cniscope synth score`.
    Write(WriteArgs),
    /// Compare a replay's topology (`-f json`) with expected.json: edges found, missing and
    /// extra, flows and packets per edge; exit 1 unless every edge is found and counted exactly.
    Score { expected: PathBuf, found: PathBuf },
}

#[derive(clap::Args)]
pub struct WriteArgs {
    #[arg(value_enum)]
    shape: Shape,
    /// The folder to write (created).
    #[arg(long, short = 'o')]
    out: PathBuf,
    #[arg(long, short = 'n', default_value_t = 10_000)]
    connections: u32,
    #[arg(long, default_value_t = 2)]
    nodes: u32,
    #[arg(long, default_value_t = 40)]
    pods_per_node: u32,
    /// The capture's length in seconds; connections start uniformly over it.
    #[arg(long, default_value_t = 20)]
    secs: u32,
    /// The replay window written into the config.
    #[arg(long, default_value_t = 5)]
    window_secs: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value = "10.244.0.0/16", value_parser = cidr)]
    pod_cidr: ([u8; 4], u8),
    #[arg(long, default_value = "10.96.0.0/16", value_parser = cidr)]
    service_cidr: ([u8; 4], u8),
    #[arg(long, default_value = "192.168.50.0/24", value_parser = cidr)]
    node_cidr: ([u8; 4], u8),
    /// The share of client pods deleted mid-capture, their address reused by a new pod that
    /// starts from the old one's source ports (some 5-tuples used twice in a window).
    #[arg(long, default_value_t = 0.1)]
    churn: f64,
    /// The share of TCP connections already open when the capture starts.
    #[arg(long, default_value_t = 0.1)]
    open_before: f64,
    /// The plugins folder the written config loads from.
    #[arg(long, default_value = super::DEFAULT_PLUGIN_DIR)]
    plugins: PathBuf,
}

fn cidr(s: &str) -> Result<([u8; 4], u8), String> {
    let (ip, prefix) = s
        .split_once('/')
        .ok_or("an IPv4 CIDR, like 10.244.0.0/16")?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|e| format!("{ip}: {e}"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or(format!("/{prefix}: a prefix length 0 to 32"))?;
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ok(((u32::from(ip) & mask).to_be_bytes(), prefix))
}

pub fn run(cmd: SynthCommand) -> Result<()> {
    match cmd {
        SynthCommand::Write(a) => {
            let spec = Spec {
                shape: a.shape,
                connections: a.connections,
                nodes: a.nodes,
                pods_per_node: a.pods_per_node,
                secs: a.secs,
                window_secs: a.window_secs,
                seed: a.seed,
                pod_cidr: a.pod_cidr,
                service_cidr: a.service_cidr,
                node_cidr: a.node_cidr,
                churn: a.churn,
                open_before: a.open_before,
            };
            // The config names the plugins folder absolutely: it lives in another folder.
            let plugins = std::path::absolute(&a.plugins).unwrap_or(a.plugins);
            let w = synth::write(&spec, &a.out, &plugins)?;
            println!(
                "{} connections, {} packets, {} edges: {} frames in {} captures",
                w.truth.connections,
                w.truth.packets,
                w.truth.edges.len(),
                w.frames,
                w.captures
            );
            println!("config:   {}", w.config.display());
            println!("expected: {}", w.expected.display());
            Ok(())
        }
        SynthCommand::Score { expected, found } => {
            let read = |p: &PathBuf| -> Result<_> {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                let doc: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("{}: not JSON", p.display()))?;
                synth::edges_of(&doc).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
            };
            let score = synth::score(&read(&expected)?, &read(&found)?);
            print!("{score}");
            if !score.is_exact() {
                bail!("{} does not match {}", found.display(), expected.display());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cidrs_are_masked_and_checked() {
        assert_eq!(super::cidr("10.1.2.3/16"), Ok(([10, 1, 0, 0], 16)));
        assert!(super::cidr("10.1.2.3/33").is_err());
        assert!(super::cidr("10.1.2/16").is_err());
    }
}
