//! `cniscope run` (live capture with the eBPF probes) and `cniscope demo` (a lab built,
//! captured and torn down).

use super::output;
use super::signals::{STOP, stop_on_signals};
use anyhow::{Context, Result};
use cniscope::agent::Agent;
use cniscope::config;
use cniscope::modes::load_inventory;
use cniscope::plugins::PluginEngine;
use cniscope::sinks::{Format, render};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

pub fn run(
    config_path: &Path,
    extra_inventories: &[PathBuf],
    format: Option<Format>,
) -> Result<()> {
    let settings = config::load(config_path)?;
    let inventories: Vec<PathBuf> = settings
        .inventories
        .iter()
        .chain(extra_inventories)
        .cloned()
        .collect();
    let inventory = load_inventory(&inventories).context("loading the inventory")?;
    stop_on_signals();
    let engine = PluginEngine::new(settings.cache_dir.clone())?;
    let mut agent = match Agent::new(&engine, &settings, inventory) {
        Err(cniscope::agent::AgentError::Plugin(e)) => {
            return Err(cniscope::modes::at_plugin_entry(&settings, e));
        }
        other => {
            other.context("starting the agent (it needs root, and a kernel with BTF and TCX)")?
        }
    };
    let format = format.or(settings.format).unwrap_or(Format::Table);
    let output_file = settings.agent.output_file.clone();
    #[cfg(feature = "server")]
    let server = cniscope::modes::serve(&settings)?;
    let doc = agent.run(&STOP, |doc| {
        #[cfg(feature = "server")]
        if let Some(server) = &server {
            server.publish(doc);
        }
        if let Some(path) = &output_file
            && let Err(e) = output::replace_file(path, &render(doc, Format::Json))
        {
            tracing::warn!("{e:#}");
        }
    })?;
    output::print(&render(&doc, format))
}

/// Removes the demo's lab however the demo ends.
#[cfg(feature = "lab")]
struct LabGuard<'a> {
    scripts: &'a cniscope::lab::Scripts,
    id: String,
}

#[cfg(feature = "lab")]
impl Drop for LabGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.scripts.down(&self.id) {
            eprintln!("tearing the lab down: {e}");
        }
    }
}

#[cfg(feature = "lab")]
pub fn demo(scenario: &str, plugins: &Path, format: Option<Format>) -> Result<()> {
    use anyhow::bail;
    use cniscope::lab::{Scripts, check_machine, scenario as find};
    find(scenario)?;
    check_machine()?;
    if !plugins.is_dir() {
        bail!(
            "no plugins in {} (build them with `./x build`, or pass --plugins DIR)",
            plugins.display()
        );
    }
    let scripts = Scripts::write(Some(plugins))?;
    let work = tempfile::tempdir().context("a folder for the lab's inventory and config")?;
    let id = format!("csdemo{}", std::process::id());
    eprintln!("building the {scenario} lab in network namespaces {id}-* ...");
    let _guard = LabGuard {
        scripts: &scripts,
        id: id.clone(),
    };
    scripts.up(scenario, &id, work.path())?;
    let config_path = work.path().join("cniscope.toml");
    let settings = config::load(&config_path)?;
    let inventory = load_inventory(&settings.inventories).context("loading the inventory")?;
    stop_on_signals();
    let engine = PluginEngine::new(settings.cache_dir.clone())?;
    let mut agent = Agent::new(&engine, &settings, inventory)
        .context("starting the agent (it needs a kernel with BTF and TCX)")?;
    let ready = AtomicBool::new(false);
    let failed = std::sync::Mutex::new(None);
    let doc = std::thread::scope(|s| {
        // The traffic waits for the agent's first publish (the probes are attached), then
        // stops it.
        s.spawn(|| {
            while !ready.load(Ordering::Relaxed) && !STOP.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            eprintln!("sending the lab's traffic and service shapes ...");
            if let Err(e) = scripts.traffic(scenario, &id) {
                *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
            }
            // One more interval, so the last packets are drained.
            std::thread::sleep(settings.agent.interval);
            STOP.store(true, Ordering::Relaxed);
        });
        agent.run(&STOP, |_| ready.store(true, Ordering::Relaxed))
    })?;
    if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e.into());
    }
    output::print(&render(&doc, format.unwrap_or(Format::Table)))
}
