//! Hot reload on a live lab: the flannel plugin's file replaced mid-capture by garbage (refused,
//! said in health, the running version goes on) and then by a good build (swapped in between
//! windows with the running version's state). Against a second `cniscope run` on the same
//! traffic that never reloads: the same edges and packet counts, nothing lost or counted twice.
//! Each round of traffic runs inside one window of both processes (they cut windows at the
//! same wall-clock instants, but each drains a moment later than the other: a packet at a
//! boundary may fall on either side in either, which is not what this test is about).

use crate::lab::Lab;
use crate::support::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The lab's config with another plugins folder and `[plugins] watch`, and absolute inventory
/// and output paths, written into `dir`.
fn config_in(lab: &Lab, dir: &Path, plugins: &Path, watch: bool) -> std::path::PathBuf {
    let text = std::fs::read_to_string(lab.config()).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("interval_secs = ") {
            out.push_str(&format!("interval_secs = {INTERVAL}\n"));
        } else if line.starts_with("dir = ") {
            out.push_str(&format!(
                "dir = \"{}\"\nwatch = {watch}\n",
                plugins.display()
            ));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let out = out.replace(
        "files = [\"inventory.json\"]",
        &format!(
            "files = [\"{}\"]",
            lab.dir().join("inventory.json").display()
        ),
    );
    let path = dir.join("cniscope.toml");
    std::fs::write(&path, out).unwrap();
    path
}

/// Both processes' window, in seconds: longer than one round of the lab's traffic.
const INTERVAL: u64 = 8;

/// Puts `bytes` in place of `file` the way an operator should: written beside, moved in.
fn replace(file: &Path, bytes: &[u8]) {
    let staged = file.with_extension("wasm.new");
    std::fs::write(&staged, bytes).unwrap();
    std::fs::rename(&staged, file).unwrap();
}

#[test]
fn a_plugin_replaced_by_garbage_then_by_a_good_build_mid_capture_loses_and_repeats_nothing() {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    let good = std::fs::read(plugin("flannel")).unwrap();
    let lab = Lab::build("flannel.sh", "hr", "vxlan");
    let (reloading, steady) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let plugins = reloading.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let wasm = plugins.join("flannel.wasm");
    std::fs::write(&wasm, &good).unwrap();
    let runs: Vec<(Running, std::path::PathBuf)> = [
        (reloading.path(), plugins.as_path(), true),
        (steady.path(), &root().join("dist/plugins"), false),
    ]
    .into_iter()
    .map(|(dir, plugins, watch)| {
        let config = config_in(&lab, dir, plugins, watch);
        let run = Running::start(
            &["run", "-c", config.to_str().unwrap(), "--format", "json"],
            dir.join("run.err"),
        );
        (run, dir.join("topology.json"))
    })
    .collect();
    let output = runs[0].1.clone();
    let health = |doc: &Value| doc["health"]["plugins"]["flannel"].clone();
    for (_, out) in &runs {
        wait_output(out, "the first window", |_| true);
    }

    at_window_start(INTERVAL);
    lab.script(&["traffic", &lab.id]);
    replace(&wasm, b"\0asm garbage, not a component");
    let refused = wait_output(&output, "the garbage refused", |d| {
        health(d)["last_reload_error"].is_string()
    });
    assert_eq!(health(&refused)["reloads"], 0, "{:#}", health(&refused));
    at_window_start(INTERVAL);
    lab.script(&["traffic", &lab.id]);
    replace(&wasm, &good);
    let reloaded = wait_output(&output, "the good build reloaded", |d| {
        health(d)["reloads"] == 1
    });
    assert!(health(&reloaded)["last_reload_error"].is_null());
    at_window_start(INTERVAL);
    lab.script(&["traffic", &lab.id]);
    // That window ends, and both processes drain it.
    at_window_start(INTERVAL);
    std::thread::sleep(Duration::from_secs(1));

    let log = runs[0].0.stderr();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("new version refused"))
        .collect();
    assert_eq!(refusals.len(), 1, "one line for the garbage: {log}");
    assert!(
        refusals[0].contains("flannel.wasm"),
        "it names the file: {log}"
    );
    let mut docs = Vec::new();
    for (mut run, _) in runs {
        docs.push(serde_json::from_str::<Value>(&run.stop()).unwrap());
    }
    assert!(!edges(&docs[1]).is_empty());
    assert_eq!(
        edges(&docs[0]),
        edges(&docs[1]),
        "reloading vs never reloading, on the same traffic"
    );
    let h = health(&docs[0]);
    assert_eq!(
        (h["reloads"].clone(), h["observations_lost"].clone()),
        (1.into(), 0.into()),
        "{h:#}"
    );
    assert_eq!(h["state"], "ok", "{h:#}");
}
