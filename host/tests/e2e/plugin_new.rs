//! `cniscope plugin new`: the crate it writes passes its own test, builds into a component
//! the host loads, and installs like a shipped plugin.

use crate::support::{cniscope, root};
use std::path::Path;
use std::process::Command;

/// Cargo on the new crate, offline, with the workspace's lockfile (the same dependency
/// versions, already fetched) and a target folder kept between runs.
fn cargo(dir: &Path, args: &[&str]) {
    let out = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args(args)
        .arg("--offline")
        // One job: the lab tests running beside this one keep a core.
        .args(["--jobs", "1"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", root().join("target/plugin-new"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} in {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_new_plugin_passes_its_own_test_and_loads_as_a_plugin() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("kube-router");
    let out = cniscope(&[
        "plugin",
        "new",
        "kube-router",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second time into the same folder is refused: nothing is overwritten.
    let again = cniscope(&[
        "plugin",
        "new",
        "kube-router",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    std::fs::copy(root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    cargo(&dir, &["test", "--release"]);
    cargo(&dir, &["build", "--release", "--target", "wasm32-wasip2"]);
    let wasm =
        root().join("target/plugin-new/wasm32-wasip2/release/cniscope_plugin_kube_router.wasm");

    let out = cniscope(&["plugin", "inspect", wasm.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("name:      kube-router"), "{text}");
    // Its own option and the stitcher's, each with its default.
    assert!(text.contains("pods "), "{text}");
    assert!(text.contains("max_held"), "{text}");

    let plugins = work.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let out = cniscope(&[
        "plugin",
        "install",
        "--dir",
        plugins.to_str().unwrap(),
        wasm.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(plugins.join("cniscope_plugin_kube_router.wasm").is_file());
}

#[test]
fn a_plugin_name_that_cannot_be_a_crate_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let out = cniscope(&[
        "plugin",
        "new",
        "Kube_Router",
        "--dir",
        work.path().join("x").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lowercase"));
    assert!(!work.path().join("x").exists());
}
