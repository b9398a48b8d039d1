//! One running plugin: its Store, limits, deadline, fault handling and health counters.
//!
//! Two tiers of plugin failure, as in wasmtime's own WASI: a WIT `result` error is *data*
//! (logged, counted, the plugin keeps running); a trap is a *fault* (the Store is dropped, the
//! plugin restarts from its `InstancePre` on the next call, and after `max_restarts` faults it
//! is disabled). Either way the observations it could not handle are counted as lost.

use super::bindings::{Plugin, PluginPre, wit};
use super::engine::{EPOCH_TICK, LoadedComponent, PluginEngine, PluginError};
use super::policy::Grants;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// How a plugin runs; from the config, with defaults.
#[derive(Clone, Debug)]
pub struct PluginSettings {
    pub name: String,
    /// The plugin's options as a JSON object.
    pub options_json: String,
    pub memory_limit_bytes: usize,
    pub call_deadline: Duration,
    pub max_restarts: u32,
    pub grants: Grants,
}

impl PluginSettings {
    pub fn new(name: &str) -> PluginSettings {
        PluginSettings {
            name: name.to_string(),
            options_json: "{}".into(),
            memory_limit_bytes: 64 << 20,
            call_deadline: Duration::from_millis(2000),
            max_restarts: 3,
            grants: Grants::default(),
        }
    }
}

/// Where a plugin stands after its faults.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PluginState {
    /// No fault yet.
    #[default]
    Ok,
    /// Faulted and restarted.
    Degraded,
    /// Too many faults (`max_restarts`): no longer called; its batches are counted lost.
    Disabled,
}

impl std::fmt::Display for PluginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PluginState::Ok => "ok",
            PluginState::Degraded => "degraded",
            PluginState::Disabled => "disabled",
        })
    }
}

/// Health counters, exported in the topology's `health.plugins`.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct PluginHealth {
    pub state: PluginState,
    pub calls: u64,
    /// WIT `result` errors returned by the plugin.
    pub errors: u64,
    pub traps: u64,
    pub deadline_kills: u64,
    pub memory_kills: u64,
    pub restarts: u64,
    pub observations_in: u64,
    /// Observations in batches the plugin faulted on or was disabled for.
    pub observations_lost: u64,
    pub flows_out: u64,
    /// Batches that broke the contract's rules (a string index past the strings, columns
    /// of different lengths, a confidence that is no number ...), refused whole, and the
    /// flows they held.
    pub batches_refused: u64,
    pub flows_refused: u64,
    /// Flows of a connection another plugin also reported, folded into that plugin's flow
    /// (its evidence and points kept there; `compose.rs`).
    #[serde(skip_serializing_if = "is_zero")]
    pub flows_composed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refused: Option<String>,
    pub busy_ms: f64,
    pub peak_memory_bytes: u64,
    pub last_fault: Option<String>,
    /// New versions of the plugin's file swapped in while running.
    pub reloads: u64,
    /// Why the last new version was refused (the running version kept working); cleared by
    /// a successful reload.
    pub last_reload_error: Option<String>,
    /// The plugin's own counters (WIT `counters`), e.g. `stitch.evicted`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, u64>,
}

/// Enforces the memory cap and remembers whether it had to.
struct Limits {
    max_bytes: usize,
    denied: bool,
    peak: usize,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.denied = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limits,
    stderr: MemoryOutputPipe,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct Live {
    store: Store<StoreState>,
    plugin: Plugin,
}

pub struct PluginInstance {
    pub settings: PluginSettings,
    pub description: wit::Description,
    /// What the configured plugin needs decoded (its answer to `configure`).
    pub decoding: wit::Decoding,
    pub sha256: String,
    pre: PluginPre<StoreState>,
    live: Option<Live>,
    /// Kept to re-send after a restart.
    inventory: Option<wit::Inventory>,
    /// Observations the live instance holds (its `stitch.held` counter, read after each
    /// call that feeds or drains it): what it loses if it dies, counted in
    /// `observations_lost`.
    held: u64,
    health: PluginHealth,
}

/// The counter through which a plugin says how many observations it holds (the SDK's
/// stitcher reports it); a plugin without it is taken to hold none between calls.
pub const HELD_COUNTER: &str = "stitch.held";

type CallResult<R> = wasmtime::Result<Result<R, wit::PluginError>>;

impl PluginInstance {
    /// Instantiates, describes and configures the plugin. Bad options are an error here,
    /// before any traffic: the operator must fix the config.
    pub fn start(
        engine: &PluginEngine,
        loaded: LoadedComponent,
        settings: PluginSettings,
    ) -> Result<Self, PluginError> {
        let name = settings.name.clone();
        let start_err = |detail: String| PluginError::Start {
            name: name.clone(),
            detail,
        };
        let mut linker: Linker<StoreState> = Linker::new(&engine.engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| start_err(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&loaded.component)
            .map_err(|e| start_err(format!("{e:#}")))?;
        let pre =
            PluginPre::new(pre).map_err(|e| start_err(format!("not a cniscope plugin: {e:#}")))?;
        let mut me = PluginInstance {
            settings,
            description: empty_description(),
            decoding: no_decoding(),
            sha256: loaded.sha256,
            pre,
            live: None,
            inventory: None,
            held: 0,
            health: PluginHealth::default(),
        };
        let live = me.instantiate().map_err(|e| start_err(format!("{e:#}")))?;
        me.live = Some(live);
        me.description = me
            .call("describe", 0, |p, s| p.call_describe(s).map(Ok))
            .ok_or_else(|| {
                start_err(format!(
                    "describe failed: {}",
                    me.health.last_fault.clone().unwrap_or_default()
                ))
            })?;
        let options = me.settings.options_json.clone();
        match me.call_raw("configure", 0, |p, s| p.call_configure(s, &options)) {
            Some(Ok(decoding)) => {
                me.decoding = decoding;
                Ok(me)
            }
            Some(Err(e)) => Err(PluginError::Rejected {
                name,
                code: e.code,
                field: e.field,
                message: e.message,
            }),
            None => Err(start_err(format!(
                "configure failed: {}",
                me.health.last_fault.clone().unwrap_or_default()
            ))),
        }
    }

    fn instantiate(&self) -> wasmtime::Result<Live> {
        let stderr = MemoryOutputPipe::new(64 << 10);
        // No env, no args, no preopened directories, no network, no stdin.
        let wasi = WasiCtx::builder()
            .stdout(MemoryOutputPipe::new(64 << 10))
            .stderr(stderr.clone())
            .build();
        let limits = Limits {
            max_bytes: self.settings.memory_limit_bytes,
            denied: false,
            peak: 0,
        };
        let mut store = Store::new(
            self.pre.engine(),
            StoreState {
                wasi,
                table: ResourceTable::new(),
                limits,
                stderr,
            },
        );
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks());
        let plugin = self.pre.instantiate(&mut store)?;
        Ok(Live { store, plugin })
    }

    fn deadline_ticks(&self) -> u64 {
        (self.settings.call_deadline.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64 + 1
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    pub fn health(&self) -> &PluginHealth {
        &self.health
    }

    pub fn on_inventory(&mut self, inv: &wit::Inventory) {
        self.inventory = Some(inv.clone());
        if let Some(Err(e)) = self.call_raw("on-inventory", 0, |p, s| p.call_on_inventory(s, inv)) {
            self.data_error("on-inventory", &e);
        }
    }

    /// Observations in, flows out; None when the plugin failed (logged and counted).
    pub fn process(&mut self, batch: &wit::ObservationBatch) -> Option<wit::FlowBatch> {
        let n = batch.point.len() as u64;
        self.health.observations_in += n;
        let out = self.call("process", n, |p, s| p.call_process(s, batch))?;
        self.read_counters();
        self.checked("process", out)
    }

    /// Counts flows of this plugin folded into another plugin's flow of the same connection.
    pub fn count_composed(&mut self, n: u64) {
        self.health.flows_composed += n;
    }

    /// Ends a window; then reads the plugin's counters into its health.
    pub fn flush(&mut self, now_ns: u64) -> Option<wit::FlowBatch> {
        let out = self.call("flush", 0, |p, s| p.call_flush(s, now_ns))?;
        self.read_counters();
        self.checked("flush", out)
    }

    /// The batch if it keeps the contract's rules ([`convert::check_flows`]); else refused
    /// whole, counted (`batches_refused`, `flows_refused`) and said once per kind of fault.
    fn checked(&mut self, call: &str, out: wit::FlowBatch) -> Option<wit::FlowBatch> {
        let flows = out.protocol.len() as u64;
        match super::convert::check_flows(&out) {
            Ok(()) => {
                self.health.flows_out += flows;
                Some(out)
            }
            Err(why) => {
                let said = format!("{call} returned a malformed flow batch: {why}");
                if self.health.last_refused.as_deref() != Some(said.as_str()) {
                    tracing::warn!(plugin = %self.settings.name, "{said}; refused");
                }
                self.health.batches_refused += 1;
                self.health.flows_refused += flows;
                self.health.last_refused = Some(said);
                None
            }
        }
    }

    /// The plugin's counters into its health, and how many observations it holds.
    fn read_counters(&mut self) {
        if let Some(Ok(counters)) = self.call_raw("counters", 0, |p, s| p.call_counters(s).map(Ok))
        {
            self.health.counters = counters.into_iter().collect();
            self.held = self.health.counters.get(HELD_COUNTER).copied().unwrap_or(0);
        }
    }

    /// Takes over from `old`, the version it replaces: its cumulative counters, one more
    /// reload, a fresh restart budget.
    pub fn take_over(&mut self, old: &PluginHealth) {
        self.health = PluginHealth {
            state: PluginState::Ok,
            restarts: 0,
            reloads: old.reloads + 1,
            last_reload_error: None,
            last_fault: None,
            peak_memory_bytes: self.health.peak_memory_bytes,
            ..old.clone()
        };
    }

    /// A new version of its file was refused: said in health, this version goes on.
    pub fn reload_refused(&mut self, why: String) {
        self.health.last_reload_error = Some(why);
    }

    /// What the plugin carries to its next window, for a checkpoint; None when it failed
    /// (logged and counted, as every fault).
    pub fn snapshot(&mut self) -> Option<Vec<u8>> {
        self.call("snapshot", 0, |p, s| p.call_snapshot(s).map(Ok))
    }

    /// Gives a new instance what [`snapshot`](Self::snapshot) took; false when the plugin
    /// refused it or failed (said in the log, counted in its health's errors).
    pub fn restore(&mut self, state: &[u8]) -> bool {
        self.call("restore", 0, |p, s| p.call_restore(s, state))
            .is_some()
    }

    /// A call whose WIT error is handled here (logged and counted).
    fn call<R>(
        &mut self,
        what: &str,
        lost: u64,
        f: impl FnOnce(&Plugin, &mut Store<StoreState>) -> CallResult<R>,
    ) -> Option<R> {
        match self.call_raw(what, lost, f)? {
            Ok(r) => Some(r),
            Err(e) => {
                self.data_error(what, &e);
                None
            }
        }
    }

    fn data_error(&mut self, what: &str, e: &wit::PluginError) {
        self.health.errors += 1;
        tracing::warn!(plugin = %self.settings.name, call = what, code = %e.code, field = %e.field, "{}", e.message);
    }

    /// Runs one call under the deadline; a trap drops the Store and returns None.
    fn call_raw<R>(
        &mut self,
        what: &str,
        lost: u64,
        f: impl FnOnce(&Plugin, &mut Store<StoreState>) -> CallResult<R>,
    ) -> Option<Result<R, wit::PluginError>> {
        if self.health.state == PluginState::Disabled {
            self.health.observations_lost += lost;
            return None;
        }
        if self.live.is_none()
            && let Err(e) = self.restart()
        {
            tracing::debug!(plugin = %self.settings.name, call = what, "restart failed: {e:?}");
            self.fault(what, lost, format!("restart failed: {}", summary(&e)), None);
            return None;
        }
        let ticks = self.deadline_ticks();
        let live = self.live.as_mut()?;
        live.store.set_epoch_deadline(ticks);
        let started = Instant::now();
        let result = f(&live.plugin, &mut live.store);
        self.health.calls += 1;
        self.health.busy_ms += started.elapsed().as_secs_f64() * 1e3;
        let limits = &live.store.data().limits;
        self.health.peak_memory_bytes = self.health.peak_memory_bytes.max(limits.peak as u64);
        match result {
            Ok(r) => Some(r),
            Err(err) => {
                let kind = if limits.denied {
                    self.health.memory_kills += 1;
                    "memory limit"
                } else if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                    self.health.deadline_kills += 1;
                    "deadline"
                } else {
                    self.health.traps += 1;
                    "trap"
                };
                let stderr = String::from_utf8_lossy(&live.store.data().stderr.contents())
                    .trim()
                    .to_string();
                tracing::debug!(plugin = %self.settings.name, call = what, "fault: {err:?}");
                self.fault(
                    what,
                    lost,
                    format!("{kind}: {}", summary(&err)),
                    Some(stderr),
                );
                None
            }
        }
    }

    fn fault(&mut self, what: &str, lost: u64, detail: String, stderr: Option<String>) {
        self.live = None;
        // What the instance held dies with it, besides the call's own observations.
        let lost = lost + std::mem::take(&mut self.held);
        self.health.observations_lost += lost;
        let disabled = self.health.restarts >= self.settings.max_restarts as u64;
        self.health.state = if disabled {
            PluginState::Disabled
        } else {
            PluginState::Degraded
        };
        let tail: String = stderr
            .unwrap_or_default()
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .join(" | ");
        tracing::error!(
            plugin = %self.settings.name, call = what, lost_observations = lost, state = %self.health.state,
            stderr = %tail, "plugin fault: {detail}"
        );
        self.health.last_fault = Some(if tail.is_empty() {
            format!("{what}: {detail}")
        } else {
            format!("{what}: {detail} ({tail})")
        });
    }

    /// A fresh instance from the template, configured and given the last inventory again.
    fn restart(&mut self) -> wasmtime::Result<()> {
        self.health.restarts += 1;
        let mut live = self.instantiate()?;
        let options = self.settings.options_json.clone();
        if let Err(e) = live.plugin.call_configure(&mut live.store, &options)? {
            wasmtime::bail!("configure: {}", e.message);
        }
        if let Some(inv) = &self.inventory {
            live.store.set_epoch_deadline(self.deadline_ticks());
            let _ = live.plugin.call_on_inventory(&mut live.store, inv)?;
        }
        self.live = Some(live);
        tracing::info!(plugin = %self.settings.name, restarts = self.health.restarts, "plugin restarted");
        Ok(())
    }
}

/// A fault in one line: the trap, not wasmtime's backtrace (logged at debug level, for the
/// plugin's author).
fn summary(err: &wasmtime::Error) -> String {
    let text = match err.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => err.root_cause().to_string(),
    };
    text.lines().next().unwrap_or("").to_string()
}

fn empty_description() -> wit::Description {
    wit::Description {
        name: String::new(),
        version: String::new(),
        cni_kinds: Vec::new(),
        capture: Vec::new(),
        options: Vec::new(),
        objects: Vec::new(),
        pod_annotations: Vec::new(),
    }
}

fn no_decoding() -> wit::Decoding {
    wit::Decoding {
        vxlan_ports: Vec::new(),
        geneve_ports: Vec::new(),
        udp_encap_ports: Vec::new(),
        geneve_option_classes: Vec::new(),
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
