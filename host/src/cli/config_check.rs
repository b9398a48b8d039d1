//! `cniscope config check`: the config validated as every command reads it, and every plugin
//! it names loaded, started and configured with its options.

use anyhow::Result;
use cniscope::config;
use std::path::Path;

pub fn run(file: &Path) -> Result<()> {
    let s = config::load(file)?;
    cniscope::modes::check_plugins(&s)?;
    let names: Vec<&str> = s.plugins.iter().map(|p| p.settings.name.as_str()).collect();
    println!(
        "{}: ok ({} plugins: {})",
        file.display(),
        s.plugins.len(),
        names.join(", ")
    );
    Ok(())
}
