//! `cniscope plugin list` and `plugin inspect`: what a plugin file is, and whether it loads.

use anyhow::{Context, Result};
use cniscope::config;
use cniscope::plugins::engine::sha256_file;
use cniscope::plugins::policy::Grants;
use cniscope::plugins::{PluginEngine, PluginError, PluginInstance, PluginSettings};
use std::path::{Path, PathBuf};

fn stem(file: &Path) -> String {
    file.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin")
        .to_string()
}

pub fn inspect(file: &Path) -> Result<()> {
    let engine = PluginEngine::new(config::default_cache_dir())?;
    // A refused plugin is still inspected: the refusal is what the operator needs to see.
    let loaded = match engine.load(file, None, &Grants::default()) {
        Ok(l) => l,
        Err(PluginError::Refused { detail, .. }) => {
            println!(
                "file:      {}\nsha256:    {}\nREFUSED:   {detail}",
                file.display(),
                sha256_file(file)?
            );
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let imports = loaded.imports.clone();
    let sha = loaded.sha256.clone();
    let p = PluginInstance::start(&engine, loaded, PluginSettings::new(&stem(file)))?;
    let d = &p.description;
    println!("file:      {}", file.display());
    println!("sha256:    {sha}");
    println!("name:      {}", d.name);
    println!("version:   {}", d.version);
    println!("cni kinds: {}", d.cni_kinds.join(", "));
    println!("capture:");
    for c in &d.capture {
        let dirs = [(c.ingress, "ingress"), (c.egress, "egress")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>();
        println!("  {:<16} {:?} ({})", c.pattern, c.kind, dirs.join("+"));
    }
    println!("options:");
    for o in &d.options {
        let default = if o.default.is_empty() {
            "required".to_string()
        } else {
            format!("default {}", o.default)
        };
        println!("  {:<16} {:?}, {default}: {}", o.name, o.type_, o.doc);
    }
    if !d.objects.is_empty() {
        println!("reads objects:");
        for o in &d.objects {
            println!("  {} {}", o.api_version, o.kind);
        }
    }
    let n = &p.decoding;
    println!("decodes (with default options):");
    println!("  vxlan ports            {:?}", n.vxlan_ports);
    println!("  geneve ports           {:?}", n.geneve_ports);
    println!("  udp encap ports        {:?}", n.udp_encap_ports);
    let classes: Vec<String> = n
        .geneve_option_classes
        .iter()
        .map(|c| format!("{c:#06x}"))
        .collect();
    println!("  geneve option classes  [{}]", classes.join(", "));
    println!("imports:");
    for i in imports {
        println!("  {i}");
    }
    Ok(())
}

pub fn list(dir: &Path) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading plugin folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    files.sort();
    let engine = PluginEngine::new(config::default_cache_dir())?;
    for f in files {
        let name = stem(&f);
        let line = engine
            .load(&f, None, &Grants::default())
            .map_err(anyhow::Error::from)
            .and_then(|l| {
                Ok(PluginInstance::start(
                    &engine,
                    l,
                    PluginSettings::new(&name),
                )?)
            })
            .map(|p| {
                format!(
                    "{:<12} {:<8} cni: {}",
                    p.description.name,
                    p.description.version,
                    p.description.cni_kinds.join(",")
                )
            })
            .unwrap_or_else(|e| format!("{name:<12} unusable: {e:#}"));
        println!(
            "{:<28} {line}",
            f.file_name().and_then(|s| s.to_str()).unwrap_or("?")
        );
    }
    Ok(())
}
