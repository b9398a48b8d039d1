//! What a plugin may import. Plugins get no files, sockets, environment or network: a
//! component that imports them is refused at load, before it runs.
//!
//! Rust's std on wasm32-wasip2 imports the WASI CLI and I/O interfaces for stdio and exit
//! even when a plugin never prints; those are linked with an empty environment, no stdin, and
//! stdout/stderr captured in bounded memory pipes (a panic message reaches our logs).

use serde::Deserialize;

/// Capabilities an operator may grant a plugin in the config.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Wall and monotonic clocks (`wasi:clocks`). Off by default: plugins get time from the
    /// observations, which keeps replays deterministic.
    #[serde(default)]
    pub clocks: bool,
}

/// Interfaces every plugin may import (std's stdio plumbing, randomness for hash seeds).
const ALWAYS: &[&str] = &[
    // Our own types-only interface: imported by every plugin, it has no functions.
    "cniscope:plugin/types",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

const CLOCKS: &[&str] = &["wasi:clocks/wall-clock", "wasi:clocks/monotonic-clock"];

/// The plugin contract this host speaks: the version of the `cniscope:plugin` package in
/// `wit/plugin.wit`. Every plugin imports its `types` interface at the version it was built
/// against.
pub const CONTRACT: &str = "cniscope:plugin@0.6.0";

/// Refuses a component built against another version of the contract, naming both: a field
/// added to a record changes its layout, and wasmtime's own type error would not say why.
pub fn check_contract(imports: &[String]) -> Result<(), String> {
    let (package, ours) = CONTRACT.split_once('@').unwrap_or((CONTRACT, ""));
    for full in imports {
        let Some((name, version)) = full.split_once('@') else {
            continue;
        };
        if name.starts_with(&format!("{package}/")) && version != ours {
            return Err(format!(
                "built against {package}@{version}, but this host speaks {CONTRACT}: rebuild the plugin with this release's SDK"
            ));
        }
    }
    Ok(())
}

/// Checks every import; the error lists each refused one with the reason.
pub fn check_imports(imports: &[String], grants: &Grants) -> Result<(), String> {
    let refused: Vec<String> = imports
        .iter()
        .filter_map(|full| {
            let name = full.split('@').next().unwrap_or(full);
            if ALWAYS.contains(&name) || (grants.clocks && CLOCKS.contains(&name)) {
                return None;
            }
            let why = if name.starts_with("wasi:filesystem") {
                "plugins get no filesystem access"
            } else if name.starts_with("wasi:sockets") || name.starts_with("wasi:http") {
                "plugins get no network access"
            } else if CLOCKS.contains(&name) {
                "clocks are not granted (set `grants.clocks = true` for this plugin)"
            } else {
                "not an interface cniscope provides to plugins"
            };
            Some(format!("imports {full}: {why}"))
        })
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(refused.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_of_another_contract_version_is_refused_naming_both() {
        let ours = CONTRACT.replace("cniscope:plugin@", "cniscope:plugin/types@");
        assert_eq!(
            check_contract(&[ours, "wasi:io/error@0.2.6".into()]),
            Ok(())
        );
        let err = check_contract(&["cniscope:plugin/types@0.1.0".into()]).unwrap_err();
        assert!(err.contains("cniscope:plugin@0.1.0"), "{err}");
        let err = check_contract(&["cniscope:plugin/types@0.2.0".into()]).unwrap_err();
        assert!(err.contains("cniscope:plugin@0.2.0"), "{err}");
        assert!(err.contains(CONTRACT), "{err}");
        // Other packages' versions are theirs.
        assert_eq!(check_contract(&["wasi:cli/exit@0.2.0".into()]), Ok(()));
    }

    #[test]
    fn filesystem_and_ungranted_clocks_are_refused() {
        let imports = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(
            check_imports(
                &imports(&["wasi:cli/stderr@0.2.6", "wasi:io/streams@0.2.6"]),
                &Grants::default()
            )
            .is_ok()
        );
        let e = check_imports(
            &imports(&["wasi:filesystem/preopens@0.2.6"]),
            &Grants::default(),
        )
        .unwrap_err();
        assert!(e.contains("no filesystem access"), "{e}");
        let clocks = imports(&["wasi:clocks/wall-clock@0.2.6"]);
        assert!(
            check_imports(&clocks, &Grants::default())
                .unwrap_err()
                .contains("grants.clocks")
        );
        assert!(check_imports(&clocks, &Grants { clocks: true }).is_ok());
        assert!(
            check_imports(
                &imports(&["wasi:sockets/tcp@0.2.6"]),
                &Grants { clocks: true }
            )
            .is_err()
        );
    }
}
