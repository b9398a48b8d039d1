//! `cniscope replay`: capture files through the plugins, printed or written.

use super::ReplayArgs;
use super::output;
use anyhow::{Result, bail};
use cniscope::config::{self, PluginToLoad, Settings};
use cniscope::plugins::PluginSettings;
use cniscope::sinks::{Format, render};

pub fn run(args: ReplayArgs) -> Result<()> {
    let settings = load_settings(&args)?;
    let captures: Vec<_> = settings
        .captures
        .iter()
        .chain(&args.captures)
        .cloned()
        .collect();
    if captures.is_empty() {
        bail!("nothing to replay: name capture files, or [[replay.capture]] entries in the config");
    }
    let inventories: Vec<_> = settings
        .inventories
        .iter()
        .chain(&args.inventories)
        .cloned()
        .collect();
    let doc = cniscope::modes::replay(&settings, &captures, &inventories)?;
    let format = args.format.or(settings.format).unwrap_or(Format::Table);
    let text = render(&doc, format);
    match &args.output {
        Some(path) => output::replace_file(path, &text),
        None => output::print(&text),
    }
}

/// The config file's settings, or (without one) the named plugins with their defaults.
fn load_settings(args: &ReplayArgs) -> Result<Settings> {
    let mut settings = match &args.config {
        Some(path) => config::load(path)?,
        None => {
            if args.plugins.is_empty() {
                bail!(
                    "no plugins: pass --plugin NAME (e.g. --plugin flannel) or --config cniscope.toml"
                );
            }
            let plugins = args
                .plugins
                .iter()
                .map(|name| PluginToLoad {
                    path: args.plugin_dir.join(format!("{name}.wasm")),
                    sha256: None,
                    settings: PluginSettings::new(name),
                })
                .collect();
            Settings::for_plugins(plugins, args.plugin_dir.clone())
        }
    };
    if let Some(w) = args.window_secs {
        if !(w.is_finite() && w > 0.0 && w <= 86_400.0) {
            bail!("--window-secs {w}: use a number of seconds above 0, at most 86400");
        }
        settings.window_ns = (w * 1e9) as u64;
    }
    Ok(settings)
}
