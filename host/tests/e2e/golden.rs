//! The project's own outputs, pinned: every format `replay` prints on the shipped capture, and
//! `config check`'s report of a config with many problems. A change in any of them is a diff
//! to review in `tests/golden/`, not a surprise. `./x bless` (CNISCOPE_BLESS=1) rewrites them.

use crate::support::*;
use std::path::PathBuf;

fn golden(name: &str) -> PathBuf {
    root().join("tests/golden").join(name)
}

/// Compares `got` with the golden file `name`, or writes it when blessing.
fn check(name: &str, got: &str) {
    let path = golden(name);
    if std::env::var_os("CNISCOPE_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
        eprintln!("blessed {}", path.display());
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (write it with `./x bless`)", path.display()));
    if got != want {
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines())
            .enumerate()
            .filter(|(_, (w, g))| w != g)
            .take(10)
            .map(|(i, (w, g))| format!("line {}:\n  - {w}\n  + {g}", i + 1))
            .collect();
        panic!(
            "{} differs from the output ({} lines now, {} pinned); review, then `./x bless`:\n{}",
            path.display(),
            got.lines().count(),
            want.lines().count(),
            diff.join("\n")
        );
    }
}

fn replay(format: &str) -> String {
    let out = cniscope(&[
        "replay",
        "--config",
        "examples/flannel-vxlan-demo.toml",
        "--format",
        format,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_json_topology_of_the_shipped_capture_is_pinned() {
    let mut doc: serde_json::Value = serde_json::from_str(&replay("json")).unwrap();
    // What the machine measures, not what the plugin decided: zeroed.
    for (_, p) in doc["health"]["plugins"].as_object_mut().unwrap() {
        p["busy_ms"] = 0.into();
        p["peak_memory_bytes"] = 0.into();
    }
    check(
        "flannel-vxlan.json",
        &(serde_json::to_string_pretty(&doc).unwrap() + "\n"),
    );
}

#[test]
fn the_dot_graph_of_the_shipped_capture_is_pinned() {
    check("flannel-vxlan.dot", &replay("dot"));
}

#[test]
fn the_table_of_the_shipped_capture_is_pinned() {
    check("flannel-vxlan.table", &replay("table"));
}

#[test]
fn config_checks_report_of_a_config_with_many_problems_is_pinned() {
    let out = cniscope(&["config", "check", "tests/golden/many-problems.toml"]);
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    check(
        "many-problems.check",
        &String::from_utf8(out.stderr).unwrap(),
    );
}
