//! One wasmtime `Engine` for all plugins, the epoch ticker that enforces call deadlines, and
//! the cache of precompiled components keyed by content hash.

use super::policy::{Grants, check_contract, check_imports};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use thiserror::Error;
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// How often the epoch advances: the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Set (to anything) to have `perf` name the functions of compiled plugins
/// (docs/plugins.md, "Writing a plugin").
pub const PERFMAP_ENV: &str = "CNISCOPE_WASM_PERFMAP";

#[derive(Debug, Error)]
pub enum PluginError {
    /// The `.wasm` file could not be read.
    #[error("plugin {path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file's sha256 differs from the pin in the config.
    #[error("plugin {path}: sha256 is {actual}, but the config pins {expected}")]
    Pin {
        path: String,
        expected: String,
        actual: String,
    },
    /// Not a valid component, or compilation failed.
    #[error("plugin {path}: not a loadable Wasm component: {detail}")]
    Compile { path: String, detail: String },
    /// The component imports something plugins may not have.
    #[error("plugin {path}: refused: {detail}")]
    Refused { path: String, detail: String },
    /// Instantiation or a call failed before the plugin was running.
    #[error("plugin {name}: {detail}")]
    Start { name: String, detail: String },
    /// The plugin rejected its options or inventory (a WIT `result` error).
    #[error("plugin {name}: {code} {field}: {message}")]
    Rejected {
        name: String,
        code: String,
        field: String,
        message: String,
    },
    /// The engine could not be built.
    #[error("wasm engine: {0}")]
    Engine(String),
}

/// The engine plus the epoch ticker thread. Clones share both (a pipeline keeps one to load
/// new plugin versions); dropping the last stops the ticker.
#[derive(Clone)]
pub struct PluginEngine {
    pub engine: Engine,
    cache_dir: Option<PathBuf>,
    _ticker: Arc<Ticker>,
}

/// The thread that advances the engine's epoch (the plugins' deadline clock).
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A component ready to instantiate, with what we learned loading it.
pub struct LoadedComponent {
    pub component: Component,
    pub path: PathBuf,
    pub sha256: String,
    /// Every import of the component, for `plugin inspect`.
    pub imports: Vec<String>,
}

impl PluginEngine {
    /// `cache_dir`: where precompiled artifacts go; None disables the cache.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<PluginEngine, PluginError> {
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            // No component-model-async: a plugin is a plain synchronous function call.
            .concurrency_support(false)
            // Memory reservation and guard stay at wasmtime's defaults (4 GiB of *address
            // space* plus a guard, no RAM): with them Cranelift elides the bounds check on
            // every load and store. A 64 MiB reservation made the flannel plugin 1.5-2x slower
            // (`./x bench`). The memory cap is the ResourceLimiter's job, not the reservation's.
            .max_wasm_stack(1 << 20);
        if std::env::var_os(PERFMAP_ENV).is_some() {
            // Plugin authors profile their plugin with `perf record`: wasmtime writes
            // /tmp/perf-<pid>.map so perf names the plugin's own functions.
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| PluginError::Engine(format!("epoch ticker: {e}")))?
        };
        Ok(PluginEngine {
            engine,
            cache_dir,
            _ticker: Arc::new(Ticker {
                stop,
                thread: Some(ticker),
            }),
        })
    }

    /// Reads, pins, compiles (or loads from cache) and checks a component's imports.
    pub fn load(
        &self,
        path: &Path,
        pin: Option<&str>,
        grants: &Grants,
    ) -> Result<LoadedComponent, PluginError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            path: shown.clone(),
            source,
        })?;
        let sha256 = hex(&Sha256::digest(&bytes));
        if let Some(expected) = pin
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(PluginError::Pin {
                path: shown,
                expected: expected.to_string(),
                actual: sha256,
            });
        }
        let component = self
            .compile(&bytes, &sha256)
            .map_err(|detail| PluginError::Compile {
                path: shown.clone(),
                // One line: wasmtime prints byte arrays one per line.
                detail: detail.split_whitespace().collect::<Vec<_>>().join(" "),
            })?;
        let imports: Vec<String> = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        check_contract(&imports)
            .and_then(|()| check_imports(&imports, grants))
            .map_err(|detail| PluginError::Refused {
                path: shown,
                detail,
            })?;
        Ok(LoadedComponent {
            component,
            path: path.to_path_buf(),
            sha256,
            imports,
        })
    }

    fn compile(&self, bytes: &[u8], sha256: &str) -> Result<Component, String> {
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, bytes).map_err(|e| format!("{e:#}"));
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let artifact = dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()));
        if artifact.exists() {
            // SAFETY: the artifact was written by `precompile_component` of an engine with the
            // same compatibility hash (it is in the file name), into our own cache directory.
            match unsafe { Component::deserialize_file(&self.engine, &artifact) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(artifact = %artifact.display(), "stale cache entry, recompiling: {e:#}")
                }
            }
        }
        let compiled = self
            .engine
            .precompile_component(bytes)
            .map_err(|e| format!("{e:#}"))?;
        // A cache that cannot be written only costs time: log and go on.
        let tmp = artifact.with_extension(format!("tmp{}", std::process::id()));
        if let Err(e) = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(&tmp, &compiled))
            .and_then(|_| std::fs::rename(&tmp, &artifact))
        {
            tracing::warn!(dir = %dir.display(), "cannot write the plugin cache: {e}");
        }
        // SAFETY: `compiled` was just produced by this engine's `precompile_component`.
        unsafe { Component::deserialize(&self.engine, &compiled) }.map_err(|e| format!("{e:#}"))
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of a file, for pins (`cniscope plugin inspect` prints it).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    Ok(hex(&Sha256::digest(std::fs::read(path)?)))
}
