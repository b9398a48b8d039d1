//! The pipeline: a source's windows of observations go through every plugin, and the logical
//! flows they return become the topology.
//!
//! Plugins run side by side, not in series: each receives every batch (one cluster runs one
//! CNI, so normally one plugin is active). Batches are cut at [`MAX_BATCH`] observations so a
//! plugin's memory stays bounded whatever the window holds.

use crate::config::reload::ConfigWatch;
use crate::config::{PluginToLoad, Settings};
use crate::health::ConfigHealth;
use crate::inventory::{Inventory, InventorySource};
use crate::plugins::watch::PluginWatch;
use crate::plugins::{PluginEngine, PluginError, PluginInstance, convert};
use crate::sources::aggregate::{Observation, PointTable};
use crate::sources::decode::Decoding;
use crate::topology::resolve::Resolver;
use crate::topology::{Health, Topology, TopologyDoc, TopologySnapshot};
use std::collections::BTreeMap;

pub const MAX_BATCH: usize = 16_384;

pub struct Pipeline {
    pub plugins: Vec<PluginInstance>,
    /// Where each plugin came from, to load its new versions.
    to_load: Vec<PluginToLoad>,
    engine: PluginEngine,
    /// Set by [`watch_plugins`](Self::watch_plugins): new versions swap in between windows.
    watch: Option<PluginWatch>,
    resolver: Resolver,
    /// Set by [`follow`](Self::follow): the inventory that changes while running (the API).
    following: Option<Following>,
    /// Set by [`watch_config`](Self::watch_config): the config re-read while running.
    config: Option<ConfigState>,
    topology: Topology,
    windows: u64,
}

struct ConfigState {
    watch: ConfigWatch,
    /// The settings running now.
    running: Settings,
    health: ConfigHealth,
}

impl Following {
    /// The source's snapshot with the files' objects added.
    fn current(&self) -> Inventory {
        let mut inventory = self.source.snapshot();
        inventory.merge(self.files.clone());
        inventory
    }
}

struct Following {
    source: Box<dyn InventorySource>,
    /// What the files hold, added to every snapshot.
    files: Inventory,
    /// The source's generation the resolver and the plugins were given.
    generation: u64,
    /// Snapshots taken (each a new resolver and `on-inventory` for every plugin).
    refreshes: u64,
}

/// Loads, starts and configures one plugin, and gives it the inventory (with the CNI objects
/// of the kinds it asks for): at start, and for each new version of its file.
fn start(
    engine: &PluginEngine,
    p: &PluginToLoad,
    inventory: &Inventory,
) -> Result<PluginInstance, PluginError> {
    let loaded = engine.load(&p.path, p.sha256.as_deref(), &p.settings.grants)?;
    let mut plugin = PluginInstance::start(engine, loaded, p.settings.clone())?;
    plugin.on_inventory(&convert::inventory(inventory, &plugin.description));
    Ok(plugin)
}

impl Pipeline {
    /// Loads and starts every plugin; the first that cannot start is the error (its config
    /// or file is wrong, and the operator must fix it before we report anything).
    pub fn new(
        engine: &PluginEngine,
        to_load: &[PluginToLoad],
        inventory: Inventory,
    ) -> Result<Pipeline, PluginError> {
        let plugins = to_load
            .iter()
            .map(|p| start(engine, p, &inventory))
            .collect::<Result<_, _>>()?;
        Ok(Pipeline {
            plugins,
            to_load: to_load.to_vec(),
            engine: engine.clone(),
            watch: None,
            resolver: Resolver::new(inventory),
            following: None,
            config: None,
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

    /// Watches the plugins' files from now on: a new version is loaded before the next window
    /// ([`reload`](Self::reload)). A folder that cannot be watched is said once; the
    /// plugins run on as they are.
    pub fn watch_plugins(&mut self) {
        let files: Vec<_> = self.to_load.iter().map(|p| p.path.clone()).collect();
        match PluginWatch::new(&files) {
            Ok(w) => self.watch = Some(w),
            Err(e) => {
                tracing::warn!("watching the plugins' files: {e}; new versions need a restart")
            }
        }
    }

    /// Loads plugin `i` again from its file: pinned, compiled, its imports checked,
    /// configured with its options, given the inventory and the running version's state
    /// (`snapshot`/`restore`), then swapped in. Anything failing leaves the running version
    /// in place and is the error.
    pub fn reload(&mut self, i: usize) -> Result<(), PluginError> {
        let p = &self.to_load[i];
        let mut fresh = start(&self.engine, p, self.resolver.inventory())?;
        let old = &mut self.plugins[i];
        let name = p.settings.name.clone();
        if format!("{:?}{:?}", fresh.decoding, fresh.description.capture)
            != format!("{:?}{:?}", old.decoding, old.description.capture)
        {
            // The decoders and the probes' interfaces were set up for the old version.
            tracing::warn!(plugin = %name, "the new version decodes or captures differently: restart to apply that");
        }
        match old.snapshot() {
            Some(state) if fresh.restore(&state) => {}
            _ => {
                tracing::warn!(plugin = %name, "the new version starts without the running one's state")
            }
        }
        fresh.take_over(old.health());
        *old = fresh;
        tracing::info!(plugin = %name, sha256 = %old.sha256, "new version loaded");
        Ok(())
    }

    /// The kinds of CNI object the plugins ask for (`describe().objects`), to be watched.
    pub fn object_kinds(&self) -> Vec<(String, String)> {
        let mut kinds: Vec<(String, String)> = self
            .plugins
            .iter()
            .flat_map(|p| &p.description.objects)
            .map(|k| (k.api_version.clone(), k.kind.clone()))
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// From now on the inventory is `source`'s (plus `files`): a new snapshot goes to the
    /// resolver and the plugins before any window after it changed.
    pub fn follow(&mut self, source: Box<dyn InventorySource>, files: Inventory) {
        self.following = Some(Following {
            source,
            files,
            generation: u64::MAX,
            refreshes: 0,
        });
        self.refresh_inventory();
    }

    /// Takes the followed inventory's snapshot when it changed.
    fn refresh_inventory(&mut self) {
        let Some(f) = &mut self.following else {
            return;
        };
        let generation = f.source.generation();
        if generation == f.generation {
            return;
        }
        let inventory = f.current();
        f.generation = generation;
        f.refreshes += 1;
        self.set_inventory(inventory);
    }

    /// A new inventory for the resolver and every plugin.
    pub fn set_inventory(&mut self, inventory: Inventory) {
        for p in &mut self.plugins {
            p.on_inventory(&convert::inventory(&inventory, &p.description));
        }
        self.resolver = Resolver::new(inventory);
    }

    /// Re-reads the config file the settings came from on SIGHUP, and when it changes if
    /// `[plugins] watch` is on; applied between windows ([`reload_config`](Self::reload_config)).
    pub fn watch_config(&mut self, settings: &Settings) {
        let Some(path) = &settings.source else {
            return;
        };
        self.config = Some(ConfigState {
            watch: ConfigWatch::new(path, settings.watch_plugins),
            running: settings.clone(),
            health: ConfigHealth {
                file: path.display().to_string(),
                ..ConfigHealth::default()
            },
        });
    }

    /// Applies a changed config, all or nothing: the file read and validated, its inventory
    /// files loaded, every plugin of it started (configured, given the inventory, each
    /// running plugin's state handed to its namesake); then all swapped in at once. Any
    /// failure is one log line and `health.config`; the running config goes on.
    fn reload_config(&mut self) {
        let Some(c) = &mut self.config else {
            return;
        };
        if !c.watch.due() {
            return;
        }
        let path = c.watch.path().to_path_buf();
        let applied = crate::config::load(&path)
            .map_err(|e| e.to_string())
            .and_then(|new| self.apply(&new).map(|()| new));
        let c = self.config.as_mut().expect("watched");
        match applied {
            Ok(new) => {
                let old = std::mem::replace(&mut c.running, new);
                let debug = |s: &Settings| {
                    [
                        ("[agent]", format!("{:?}", s.agent)),
                        ("[nats]", format!("{:?}", s.nats)),
                        ("[aggregate]", format!("{:?}", s.aggregate)),
                        ("[decode]", format!("{:?}", s.decoding)),
                        ("[inventory] kubernetes", format!("{:?}", s.kubernetes)),
                        ("[server]", format!("{:?}", s.server)),
                    ]
                };
                for ((what, before), (_, after)) in debug(&old).into_iter().zip(debug(&c.running)) {
                    if before != after {
                        tracing::warn!(
                            "{}: {what} changed: it applies at the next restart",
                            path.display()
                        );
                    }
                }
                c.health.reloads += 1;
                c.health.last_error = None;
                tracing::info!("{}: new config applied", path.display());
            }
            Err(e) => {
                tracing::error!(
                    "{}: new config refused, the running one goes on: {e}",
                    path.display()
                );
                c.health.refused += 1;
                c.health.last_error = Some(e);
            }
        }
    }

    /// Swaps in `new`'s plugins and inventory files, or changes nothing.
    fn apply(&mut self, new: &Settings) -> Result<(), String> {
        let files = crate::modes::load_inventory(&new.inventories).map_err(|e| e.to_string())?;
        let inventory = match &self.following {
            Some(f) => {
                let mut inv = f.source.snapshot();
                inv.merge(files.clone());
                inv
            }
            None => files.clone(),
        };
        let mut fresh = new
            .plugins
            .iter()
            .map(|p| {
                start(&self.engine, p, &inventory)
                    .map_err(|e| format!("plugin {}: {e}", p.settings.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for f in &mut fresh {
            if let Some(old) = self.plugins.iter_mut().find(|o| o.name() == f.name()) {
                if let Some(state) = old.snapshot() {
                    f.restore(&state);
                }
                f.take_over(old.health());
            }
        }
        let watched = self.watch.is_some();
        self.plugins = fresh;
        self.to_load = new.plugins.clone();
        if watched {
            self.watch_plugins();
        }
        match &mut self.following {
            Some(f) => {
                f.files = files;
                f.generation = u64::MAX;
            }
            None => self.resolver = Resolver::new(inventory),
        }
        Ok(())
    }

    /// Loads the new versions the watch saw (between windows).
    fn reload_changed(&mut self) {
        let Some(watch) = &mut self.watch else {
            return;
        };
        for i in watch.changed() {
            if let Err(e) = self.reload(i) {
                tracing::error!(plugin = %self.plugins[i].name(), "new version refused, the running one goes on: {e}");
                self.plugins[i].reload_refused(e.to_string());
            }
        }
    }

    /// One window: a changed config and new plugin versions first (when watched), the
    /// inventory's changes (when followed), then process in bounded
    /// batches, then flush at the window's end.
    pub fn window(&mut self, points: &PointTable, observations: &[Observation], end_ns: u64) {
        self.reload_config();
        self.reload_changed();
        self.refresh_inventory();
        self.windows += 1;
        let mut flows: crate::compose::PluginFlows = Vec::new();
        for chunk in observations.chunks(MAX_BATCH) {
            let batch = convert::batch(points.all(), chunk);
            for (i, p) in self.plugins.iter_mut().enumerate() {
                flows.extend(p.process(&batch).map(|f| (i, f)));
            }
        }
        for (i, p) in self.plugins.iter_mut().enumerate() {
            flows.extend(p.flush(end_ns).map(|f| (i, f)));
        }
        // One connection that several plugins reported is one edge.
        let (flows, folded) = crate::compose::compose(flows, self.plugins.len());
        for (p, n) in self.plugins.iter_mut().zip(folded) {
            p.count_composed(n);
        }
        if let (Some(first), Some(last)) = (
            observations.iter().map(|o| o.first_ns).min(),
            observations.iter().map(|o| o.last_ns).max(),
        ) {
            self.topology.cover(first, last);
        }
        for (_, f) in &flows {
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
        health
            .warnings
            .extend(self.resolver.warnings.iter().cloned());
        if let Some(f) = &self.following {
            health.inventory = Some(f.source.health());
        }
        if let Some(c) = &self.config {
            health.config = Some(c.health.clone());
        }
        for p in &self.plugins {
            health
                .plugins
                .insert(p.name().to_string(), p.health().clone());
        }
        self.topology.doc(health)
    }
}
