//! `cniscope plugin list`, `plugin inspect` and `plugin install`: what a plugin file is,
//! whether it loads, and putting it safely where a running cniscope watches.

use anyhow::{Context, Result, bail};
use cniscope::config;
use cniscope::plugins::engine::sha256_file;
use cniscope::plugins::policy::Grants;
use cniscope::plugins::{PluginEngine, PluginError, PluginInstance, PluginSettings};
use std::io::Read;
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
    if !d.pod_annotations.is_empty() {
        println!("reads pod annotations:");
        for key in &d.pod_annotations {
            println!("  {key}");
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

/// `cniscope plugin install`: every source checked, then written beside its place and renamed
/// into it (a watcher sees the whole file at once). Any refused source fails the command;
/// the others are still installed.
pub fn install(
    dir: &Path,
    name: Option<&str>,
    keep_existing: bool,
    sources: &[PathBuf],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for src in sources {
        if src.as_os_str() == "-" {
            let Some(name) = name else {
                bail!("installing from standard input needs --name (e.g. --name flannel.wasm)");
            };
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading standard input")?;
            files.push((name.to_string(), bytes));
        } else if src.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(src)
                .with_context(|| format!("reading {}", src.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
                .collect();
            found.sort();
            for f in found {
                files.push((file_name(&f)?, read(&f)?));
            }
        } else {
            files.push((
                name.map(str::to_string).unwrap_or(file_name(src)?),
                read(src)?,
            ));
        }
    }
    let engine = PluginEngine::new(config::default_cache_dir())?;
    let mut refused = 0;
    for (name, bytes) in files {
        if !name.ends_with(".wasm") || name.contains('/') || name.starts_with('.') {
            eprintln!("{name}: refused: a plugin's file name is NAME.wasm");
            refused += 1;
            continue;
        }
        let target = dir.join(&name);
        if keep_existing && target.exists() {
            println!("{name}: kept (already in {})", dir.display());
            continue;
        }
        // Staged under a name no watcher or `[[plugin]]` reads, checked there, then renamed.
        let staged = dir.join(format!(".{name}.installing"));
        std::fs::write(&staged, &bytes).with_context(|| format!("writing {}", staged.display()))?;
        // What a config can grant (clocks) is allowed; what no config can (files, sockets)
        // is not.
        let grantable = Grants { clocks: true };
        let checked = engine
            .load(&staged, None, &grantable)
            .map_err(anyhow::Error::from)
            .and_then(|l| {
                let sha = l.sha256.clone();
                let p = PluginInstance::start(&engine, l, PluginSettings::new(&stem(&target)))?;
                Ok((
                    sha,
                    p.description.name.clone(),
                    p.description.version.clone(),
                ))
            });
        match checked {
            Ok((sha, plugin, version)) => {
                std::fs::rename(&staged, &target)
                    .with_context(|| format!("moving into {}", target.display()))?;
                println!("{name}: installed {plugin} {version} (sha256 {sha})");
            }
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                eprintln!(
                    "{name}: refused, {} left as it was: {e:#}",
                    target.display()
                );
                refused += 1;
            }
        }
    }
    if refused > 0 {
        bail!("{refused} plugin(s) refused");
    }
    Ok(())
}

fn file_name(p: &Path) -> Result<String> {
    p.file_name()
        .and_then(|s| s.to_str())
        .map(str::to_string)
        .with_context(|| format!("{}: no file name", p.display()))
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}
