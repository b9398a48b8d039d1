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
        for e in &self.file_errors {
            health.error(e.clone());
        }
    }
}
