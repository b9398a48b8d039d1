//! What every way of running cniscope shares: load the inventory and the plugins, feed a
//! source's windows through the [`Pipeline`], and build the topology document with the
//! source's health. `cniscope replay` and `cniscope plugin test` use [`replay`]; live capture
//! (`crate::agent`, feature `live`) feeds the same pipeline from the probes.

use crate::config::Settings;
use crate::health::{Health, HealthSource};
use crate::inventory::Inventory;
use crate::inventory::kubectl::{self, InventoryError};
use crate::pipeline::Pipeline;
use crate::plugins::{PluginEngine, PluginError};
use crate::sources::replay::{CaptureSpec, Replay, ReplayError, ReplayStats};
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

/// Captures -> plugins -> topology document.
pub fn replay(
    settings: &Settings,
    captures: &[CaptureSpec],
    inventories: &[PathBuf],
) -> Result<TopologyDoc, RunError> {
    let inventory = load_inventory(inventories)?;
    let engine = PluginEngine::new(settings.cache_dir.clone())?;
    let mut pipeline = Pipeline::new(&engine, &settings.plugins, inventory)?;
    let decoding = pipeline.decoding(&settings.decoding);
    let mut replay = Replay::open(captures, decoding, settings.window_ns)?;
    replay.run(|points, obs, end| pipeline.window(points, &obs, end));
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
