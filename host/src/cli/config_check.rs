//! `cniscope config check`: the config validated as every command reads it.

use anyhow::Result;
use cniscope::config;
use std::path::Path;

pub fn run(file: &Path) -> Result<()> {
    let s = config::load(file)?;
    let names: Vec<&str> = s.plugins.iter().map(|p| p.settings.name.as_str()).collect();
    println!(
        "{}: ok ({} plugins: {})",
        file.display(),
        s.plugins.len(),
        names.join(", ")
    );
    Ok(())
}
