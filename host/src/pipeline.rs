//! The pipeline: a source's windows of observations go through every plugin, and the logical
//! flows they return become the topology.
//!
//! Plugins run side by side, not in series: each receives every batch (one cluster runs one
//! CNI, so normally one plugin is active). Batches are cut at [`MAX_BATCH`] observations so a
//! plugin's memory stays bounded whatever the window holds.

use crate::config::PluginToLoad;
use crate::inventory::Inventory;
use crate::plugins::bindings::wit;
use crate::plugins::{PluginEngine, PluginError, PluginInstance, convert};
use crate::sources::aggregate::{Observation, PointTable};
use crate::sources::decode::Decoding;
use crate::topology::resolve::Resolver;
use crate::topology::{Health, Topology, TopologyDoc, TopologySnapshot};
use std::collections::BTreeMap;

pub const MAX_BATCH: usize = 16_384;

pub struct Pipeline {
    pub plugins: Vec<PluginInstance>,
    resolver: Resolver,
    topology: Topology,
    windows: u64,
}

impl Pipeline {
    /// Loads and starts every plugin; the first that cannot start is the error (its config
    /// or file is wrong, and the operator must fix it before we report anything).
    pub fn new(
        engine: &PluginEngine,
        to_load: &[PluginToLoad],
        inventory: Inventory,
    ) -> Result<Pipeline, PluginError> {
        let mut plugins = Vec::new();
        for p in to_load {
            let loaded = engine.load(&p.path, p.sha256.as_deref(), &p.settings.grants)?;
            plugins.push(PluginInstance::start(engine, loaded, p.settings.clone())?);
        }
        for p in &mut plugins {
            let snapshot = convert::inventory(&inventory, &p.description.objects);
            p.on_inventory(&snapshot);
        }
        Ok(Pipeline {
            plugins,
            resolver: Resolver::new(inventory),
            topology: Topology::default(),
            windows: 0,
        })
    }

    /// What the decoders must decode: `base` (the operator's `[decode]`) plus every plugin's
    /// decoding needs.
    pub fn decoding(&self, base: &Decoding) -> Decoding {
        let mut all = base.clone();
        for p in &self.plugins {
            let d = &p.decoding;
            all.add(&Decoding {
                vxlan: d.vxlan_ports.clone(),
                geneve: d.geneve_ports.clone(),
                udp_encap: d.udp_encap_ports.clone(),
                geneve_classes: d.geneve_option_classes.clone(),
            });
        }
        all
    }

    /// One window: process in bounded batches, then flush at the window's end.
    pub fn window(&mut self, points: &PointTable, observations: &[Observation], end_ns: u64) {
        self.windows += 1;
        let mut flows: Vec<wit::FlowBatch> = Vec::new();
        for chunk in observations.chunks(MAX_BATCH) {
            let batch = convert::batch(points.all(), chunk);
            for p in &mut self.plugins {
                flows.extend(p.process(&batch));
            }
        }
        for p in &mut self.plugins {
            flows.extend(p.flush(end_ns));
        }
        if let (Some(first), Some(last)) = (
            observations.iter().map(|o| o.first_ns).min(),
            observations.iter().map(|o| o.last_ns).max(),
        ) {
            self.topology.cover(first, last);
        }
        for f in &flows {
            self.topology.add_batch(&self.resolver, f);
        }
    }

    /// The topology so far, to be checkpointed.
    pub fn snapshot(&self) -> TopologySnapshot {
        self.topology.snapshot()
    }

    /// Continues from a checkpointed topology.
    pub fn restore(&mut self, snapshot: TopologySnapshot) {
        self.topology = Topology::restore(snapshot);
    }

    /// What each plugin carries to its next window (WIT `snapshot`), by name, for a
    /// checkpoint. A plugin that failed to answer is left out (its fault is in its health).
    pub fn plugin_states(&mut self) -> BTreeMap<String, Vec<u8>> {
        let mut states = BTreeMap::new();
        for p in &mut self.plugins {
            if let Some(state) = p.snapshot() {
                states.insert(p.name().to_string(), state);
            }
        }
        states
    }

    /// Gives each plugin its checkpointed state back; returns the names of those that
    /// refused it or were not given one (they start empty).
    pub fn restore_plugin_states(&mut self, states: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
        let mut empty = Vec::new();
        for p in &mut self.plugins {
            let restored = match states.get(p.name()) {
                Some(state) => p.restore(state),
                None => false,
            };
            if !restored {
                empty.push(p.name().to_string());
            }
        }
        empty
    }

    pub fn doc(&self, mut health: Health) -> TopologyDoc {
        for p in &self.plugins {
            health
                .plugins
                .insert(p.name().to_string(), p.health().clone());
        }
        self.topology.doc(health)
    }
}
