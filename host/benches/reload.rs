//! The cost of a hot reload (`Pipeline::reload`: read, pin, compile or take from the compile
//! cache, check, instantiate, configure, inventory, state carried over, swap), against one
//! window of the flannel plugin's work on the shared workload, measured in the same run.
//! Prints figures; asserts nothing (`./x bench`).

#[path = "support/workload.rs"]
mod workload;

use cniscope::config::PluginToLoad;
use cniscope::inventory::kubectl;
use cniscope::pipeline::Pipeline;
use cniscope::plugins::{PluginEngine, PluginSettings};
use std::time::{Duration, Instant};
use workload::root;

const ROUNDS: usize = 5;

fn pipeline(engine: &PluginEngine) -> Pipeline {
    let inventory =
        kubectl::load_file(&root().join("tests/data/flannel-vxlan/inventory.json")).unwrap();
    let mut settings = PluginSettings::new("flannel");
    settings.options_json = r#"{"network": "10.244.0.0/16"}"#.into();
    let plugin = PluginToLoad {
        path: root().join("dist/plugins/flannel.wasm"),
        sha256: None,
        settings,
    };
    Pipeline::new(engine, &[plugin], inventory).expect("dist/plugins/flannel.wasm (./x build)")
}

/// The best of `ROUNDS` reloads.
fn best_reload(p: &mut Pipeline) -> Duration {
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            p.reload(0).unwrap();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn main() {
    let (points, obs) = workload::replicated(16_384);
    // Without a compile cache: every reload compiles the component with Cranelift.
    let engine = PluginEngine::new(None).unwrap();
    let mut p = pipeline(&engine);
    let mut window = Duration::MAX;
    for w in 0..ROUNDS as u64 {
        let t = Instant::now();
        p.window(&points, &obs, (w + 1) * 1_000_000_000);
        window = window.min(t.elapsed());
    }
    let compiled = best_reload(&mut p);
    // With the compile cache (the default): a new file is compiled once, then loaded.
    let cache = tempfile::tempdir().unwrap();
    let cached_engine = PluginEngine::new(Some(cache.path().to_path_buf())).unwrap();
    let mut cached = pipeline(&cached_engine);
    let from_cache = best_reload(&mut cached);
    println!(
        "one window of {} observations through flannel.wasm: {:.1} ms",
        obs.len(),
        window.as_secs_f64() * 1e3
    );
    println!(
        "reload, compiling: {:.0} ms (the plugin work of {:.1} such windows); from the compile cache: {:.1} ms ({:.2})",
        compiled.as_secs_f64() * 1e3,
        compiled.as_secs_f64() / window.as_secs_f64(),
        from_cache.as_secs_f64() * 1e3,
        from_cache.as_secs_f64() / window.as_secs_f64()
    );
    println!(
        "reloads counted in health: {} of {}",
        p.plugins[0].health().reloads + cached.plugins[0].health().reloads,
        2 * ROUNDS
    );
}
