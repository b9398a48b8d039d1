//! What every way of running cniscope shares: load the inventory and the plugins, feed a
//! source's windows through the [`Pipeline`], and build the topology document with the
//! source's health. `cniscope replay` and `cniscope plugin test` use [`replay`]; live capture
//! (`crate::agent`, feature `live`) feeds the same pipeline from the probes.

use crate::config::Settings;
use crate::health::{Health, HealthSource};
use crate::inventory::kubectl::{self, InventoryError};
use crate::inventory::{FollowError, Inventory};
use crate::pipeline::Pipeline;
use crate::plugins::{PluginEngine, PluginError};
use crate::sources::replay::{CaptureSpec, Progress, Replay, ReplayError, ReplayStats};
use crate::topology::TopologyDoc;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RunError {
    /// An inventory file could not be read.
    #[error("loading the inventory: {0}")]
    Inventory(#[from] InventoryError),
    /// A plugin could not be loaded or started.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// A capture file could not be opened.
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

/// Which of `settings.plugins` a plugin error is about (by its file or its name).
fn failed_plugin(settings: &Settings, e: &PluginError) -> Option<usize> {
    settings.plugins.iter().position(|p| match e {
        PluginError::Read { path, .. }
        | PluginError::Pin { path, .. }
        | PluginError::Compile { path, .. }
        | PluginError::Refused { path, .. } => p.path.display().to_string() == *path,
        PluginError::Start { name, .. } | PluginError::Rejected { name, .. } => {
            p.settings.name == *name
        }
        PluginError::Engine(_) => false,
    })
}

/// A plugin that did not load or start, said at its `[[plugin]]` entry of the config file
/// (exit 78) when it has one; else the error as it is.
pub fn at_plugin_entry(settings: &Settings, e: PluginError) -> anyhow::Error {
    failed_plugin(settings, &e)
        .and_then(|i| settings.plugin_problem(i, e.to_string()))
        .map(anyhow::Error::from)
        .unwrap_or_else(|| e.into())
}

/// Loads, starts and configures every plugin of the config with its options and an empty
/// inventory, as `replay`, `run` and `aggregate` would: a pin that does not match, a file
/// that is no plugin, an import plugins may not have, options the plugin refuses. Every
/// problem at its `[[plugin]]` entry.
pub fn check_plugins(settings: &Settings) -> Result<(), crate::config::ConfigError> {
    let engine = match PluginEngine::new(settings.cache_dir.clone()) {
        Ok(e) => e,
        Err(e) => return Err(no_entry(settings, e.to_string())),
    };
    let mut problems = Vec::new();
    for (i, p) in settings.plugins.iter().enumerate() {
        let started = engine
            .load(&p.path, p.sha256.as_deref(), &p.settings.grants)
            .and_then(|loaded| {
                crate::plugins::PluginInstance::start(&engine, loaded, p.settings.clone())
            });
        if let Err(e) = started
            && let Some(crate::config::ConfigError::Invalid {
                problems: mut at, ..
            }) = settings.plugin_problem(i, e.to_string())
        {
            problems.append(&mut at);
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(crate::config::ConfigError::Invalid {
        path: source_of(settings),
        problems,
    })
}

fn source_of(settings: &Settings) -> String {
    settings
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn no_entry(settings: &Settings, message: String) -> crate::config::ConfigError {
    crate::config::ConfigError::Invalid {
        path: source_of(settings),
        problems: vec![crate::config::ConfigProblem {
            line: 1,
            column: 1,
            key: "plugins".into(),
            message,
        }],
    }
}

/// Every kubectl dump, merged in order.
pub fn load_inventory(paths: &[PathBuf]) -> Result<Inventory, InventoryError> {
    let mut inv = Inventory::default();
    for p in paths {
        inv.merge(kubectl::load_file(p)?);
    }
    Ok(inv)
}

/// With `[inventory] kubernetes = true`, the pipeline's inventory follows the API from now on
/// (what `files` hold is added to it): the core kinds and the CNI objects the plugins ask for.
pub fn follow_kubernetes(
    settings: &Settings,
    pipeline: &mut Pipeline,
    files: &Inventory,
) -> Result<(), FollowError> {
    let Some(k8s) = &settings.kubernetes else {
        return Ok(());
    };
    #[cfg(feature = "kubernetes")]
    {
        use crate::inventory::api::{ApiInventory, Kind, core_kinds};
        let mut kinds = core_kinds();
        kinds.extend(pipeline.object_kinds().iter().map(|(a, k)| Kind::new(a, k)));
        let api = ApiInventory::start(k8s, &kinds).map_err(|e| FollowError(e.to_string()))?;
        pipeline.follow(Box::new(api), files.clone());
        Ok(())
    }
    #[cfg(not(feature = "kubernetes"))]
    {
        let _ = (k8s, pipeline, files);
        Err(FollowError(
            "this build has no Kubernetes API support (cargo feature `kubernetes`)".into(),
        ))
    }
}

/// `[server] listen`: the server of the topology, metrics and map, started (None without).
#[cfg(feature = "server")]
pub fn serve(
    settings: &Settings,
) -> Result<Option<crate::server::Server>, crate::server::ServerError> {
    settings
        .server
        .as_ref()
        .map(crate::server::Server::start)
        .transpose()
}

/// Captures -> plugins -> topology document.
pub fn replay(
    settings: &Settings,
    captures: &[CaptureSpec],
    inventories: &[PathBuf],
) -> Result<TopologyDoc, RunError> {
    replay_reporting(settings, captures, inventories, |_| {})
}

/// [`replay`], telling `on_progress` how far it is (a progress bar).
pub fn replay_reporting(
    settings: &Settings,
    captures: &[CaptureSpec],
    inventories: &[PathBuf],
    on_progress: impl FnMut(Progress),
) -> Result<TopologyDoc, RunError> {
    let inventory = load_inventory(inventories)?;
    let engine = PluginEngine::new(settings.cache_dir.clone())?;
    let mut pipeline = Pipeline::new(&engine, &settings.plugins, inventory)?;
    let decoding = pipeline.decoding(&settings.decoding);
    let mut replay = Replay::open(captures, decoding, settings.window_ns)?;
    replay.run_reporting(
        |points, obs, end| pipeline.window(points, &obs, end),
        on_progress,
    );
    let mut health = Health::default();
    replay.stats.report(&mut health);
    Ok(pipeline.doc(health))
}

impl HealthSource for ReplayStats {
    fn report(&self, health: &mut Health) {
        for (reason, n) in &self.malformed {
            health.drop(format!("malformed packet: {reason}"), *n);
        }
        health.drop("unsupported link type", self.unsupported_linktype);
        health.drop(
            "connections merged: a 5-tuple reopened over 255 times at one point in one window",
            self.reopenings_merged,
        );
        for e in &self.file_errors {
            health.error(e.clone());
        }
    }
}
