//! `cniscope plugin new NAME`: a new CNI plugin crate from the SDK's template
//! (`sdk/template`): rules to fill in on the `Cni` scaffold, a test that passes, a README with
//! the commands that build, inspect and install it.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// (path in the new crate, template text)
const FILES: [(&str, &str); 4] = [
    (
        "Cargo.toml",
        include_str!("../../../sdk/template/Cargo.toml.tmpl"),
    ),
    (
        "README.md",
        include_str!("../../../sdk/template/README.md.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../sdk/template/src/lib.rs.tmpl"),
    ),
    (
        "src/tests.rs",
        include_str!("../../../sdk/template/src/tests.rs.tmpl"),
    ),
];

/// The SDK this binary was built from, when its sources are still there.
fn built_sdk() -> Option<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sdk")
        .canonicalize()
        .ok()
        .filter(|p| p.join("Cargo.toml").is_file())
}

/// A plugin name: lowercase letters, digits and dashes, starting with a letter (it becomes
/// the crate's name, the .wasm file's and the plugin's own).
fn check_name(name: &str) -> Result<()> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "plugin name {name:?}: use lowercase letters, digits and dashes, starting with a letter (e.g. `cilium`, `kube-router`)"
        );
    }
    Ok(())
}

/// `kube-router` -> `KubeRouter`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

pub fn run(name: &str, dir: Option<&Path>, sdk: Option<&Path>) -> Result<()> {
    check_name(name)?;
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if dir.exists()
        && dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{}: already exists and is not empty", dir.display());
    }
    let sdk = match sdk {
        Some(p) => p
            .canonicalize()
            .with_context(|| format!("--sdk {}", p.display()))?,
        None => built_sdk().context(
            "name the SDK with --sdk PATH (the sdk/ folder of a cniscope checkout): the one this binary was built from is gone",
        )?,
    };
    if !sdk.join("Cargo.toml").is_file() {
        bail!("--sdk {}: no Cargo.toml there", sdk.display());
    }
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{Type}}", &type_name(name))
            .replace("{{sdk}}", &sdk.display().to_string())
    };
    for (path, template) in FILES {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, fill(template))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "wrote {}: the {name} plugin (rules in src/lib.rs). Next:\n  cd {} && cargo test && cargo build --release --target wasm32-wasip2",
        dir.display(),
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_types_and_bad_names_are_refused() {
        assert_eq!(type_name("kube-router"), "KubeRouter");
        assert_eq!(type_name("cilium"), "Cilium");
        for bad in ["Cilium", "1x", "a_b", "x-", "", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("kata2").unwrap();
    }
}
