//! Builds the eBPF probes (`ebpf/probe`, its own Cargo project) with the nightly toolchain and
//! bpf-linker into OUT_DIR, where `sources::live` embeds them. `./x setup` installs both.
//! Only with the `live` feature: without it the host needs neither (a decoder test, `cargo
//! doc` or a replay-only build on stable).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    if std::env::var_os("CARGO_FEATURE_LIVE").is_none() {
        return;
    }
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let probe = manifest_dir.join("../ebpf/probe");
    for p in [
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "../common/src",
        "../common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", probe.join(p).display());
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
    ])
    .arg("--manifest-path")
    .arg(probe.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    // The outer build's compiler settings must not leak into the BPF build.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME")
            || k.starts_with("RUSTC")
            || k.starts_with("RUSTFLAGS")
            || k.starts_with("RUSTDOC")
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("running `rustup run nightly cargo` for the eBPF probes: {e} (run ./x setup)")
    });
    assert!(
        status.success(),
        "building the eBPF probes failed (needs the nightly toolchain with rust-src and bpf-linker: run ./x setup)"
    );
    for program in ["cniscope-probe", "cniscope-drops"] {
        let built = target_dir.join("bpfel-unknown-none/release").join(program);
        std::fs::copy(&built, out_dir.join(program))
            .unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
    }
}
