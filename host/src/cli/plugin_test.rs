//! `cniscope plugin test`: a built plugin on recorded captures, its edges compared with an
//! expected topology (or blessed into it), so a plugin author checks the `.wasm` they ship.

use super::PluginTestArgs;
use super::output;
use anyhow::{Context, Result, bail};
use cniscope::config::{PluginToLoad, Settings};
use cniscope::plugins::PluginSettings;
use std::path::PathBuf;

pub fn run(args: PluginTestArgs) -> Result<()> {
    let name = args
        .file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin")
        .to_string();
    let mut plugin = PluginSettings::new(&name);
    serde_json::from_str::<serde_json::Value>(&args.options).context("--options is not JSON")?;
    plugin.options_json = args.options.clone();
    let load = PluginToLoad {
        path: args.file.clone(),
        sha256: None,
        settings: plugin,
    };
    let settings = Settings::for_plugins(vec![load], PathBuf::new());
    let doc = cniscope::modes::replay(&settings, &args.captures, &args.inventories)?;
    let got = serde_json::to_value(&doc)?;
    if args.bless {
        output::replace_file(&args.expect, &(serde_json::to_string_pretty(&got)? + "\n"))?;
        println!(
            "blessed {} ({} edges)",
            args.expect.display(),
            doc.edges.len()
        );
        return Ok(());
    }
    let text = std::fs::read_to_string(&args.expect)
        .with_context(|| format!("reading {}", args.expect.display()))?;
    let want: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.expect.display()))?;
    let (got, want) = (edge_lines(&got["edges"]), edge_lines(&want["edges"]));
    let missing: Vec<&String> = want.iter().filter(|e| !got.contains(e)).collect();
    let extra: Vec<&String> = got.iter().filter(|e| !want.contains(e)).collect();
    if missing.is_empty() && extra.is_empty() {
        println!("ok: {} edges as expected", got.len());
        return Ok(());
    }
    for e in &missing {
        println!("- {e}");
    }
    for e in &extra {
        println!("+ {e}");
    }
    bail!(
        "{} edges missing, {} unexpected (- expected, + got)",
        missing.len(),
        extra.len()
    )
}

/// The comparable part of an edge: who, to whom, via what, and how much.
fn edge_lines(edges: &serde_json::Value) -> Vec<String> {
    let line = |e: &serde_json::Value| {
        format!(
            "{} -> {} via {} {}/{} packets {}",
            e["src"].as_str().unwrap_or("?"),
            e["dst"].as_str().unwrap_or("?"),
            e["service"].as_str().unwrap_or("-"),
            e["protocol"].as_str().unwrap_or("?"),
            e["port"],
            e["packets"]
        )
    };
    edges
        .as_array()
        .map(|a| a.iter().map(line).collect())
        .unwrap_or_default()
}
