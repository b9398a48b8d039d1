//! `cniscope replay`: capture files through the plugins, printed or written.

use super::ReplayArgs;
use super::output;
use anyhow::{Result, bail};
use cniscope::config::{self, PluginToLoad, Settings};
use cniscope::plugins::PluginSettings;
use cniscope::plugins::PluginState;
use cniscope::sinks::{Format, render};
use cniscope::topology::TopologyDoc;

/// The exit code of a replay whose output is known incomplete (printed all the same).
pub const EXIT_INCOMPLETE: i32 = 3;

/// What made a replay's output incomplete, one reason per line.
#[derive(Debug, thiserror::Error)]
#[error("the output is incomplete (--allow-partial to exit 0 anyway):\n{0}")]
pub struct Incomplete(String);

/// Why the document is known to miss something: observations a plugin lost, a plugin
/// disabled, a capture not read to its end.
fn incomplete(doc: &TopologyDoc) -> Vec<String> {
    let mut why = Vec::new();
    for (name, p) in &doc.health.plugins {
        if p.observations_lost > 0 {
            why.push(format!(
                "plugin {name} lost {} observations",
                p.observations_lost
            ));
        }
        if p.flows_refused > 0 {
            why.push(format!(
                "plugin {name} returned {} malformed batches ({} flows refused)",
                p.batches_refused, p.flows_refused
            ));
        }
        if p.state == PluginState::Disabled {
            why.push(format!("plugin {name} was disabled after repeated faults"));
        }
    }
    why.extend(doc.health.errors.iter().cloned());
    why
}

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
    let bar = progress_bar();
    let doc = cniscope::modes::replay_reporting(&settings, &captures, &inventories, |p| {
        if let Some((bar, started)) = &bar {
            bar.set_length(p.bytes_total);
            bar.set_position(p.bytes_read);
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!(
                "{} packets, {:.0} packets/s",
                p.packets,
                p.packets as f64 / secs
            ));
        }
    });
    if let Some((bar, _)) = bar {
        bar.finish_and_clear();
    }
    let doc = match doc {
        Err(cniscope::modes::RunError::Plugin(e)) => {
            return Err(cniscope::modes::at_plugin_entry(&settings, e));
        }
        other => other?,
    };
    let format = args.format.or(settings.format).unwrap_or(Format::Table);
    let text = render(&doc, format);
    match &args.output {
        Some(path) => output::replace_file(path, &text)?,
        None => output::print(&text)?,
    }
    let why = incomplete(&doc);
    if !why.is_empty() && !args.allow_partial {
        return Err(Incomplete(why.join("\n")).into());
    }
    Ok(())
}

/// A progress bar of the captures' bytes read, on a terminal only (nothing in a pipe or a
/// file, where it would be noise).
fn progress_bar() -> Option<(indicatif::ProgressBar, std::time::Instant)> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} [{bar:30}] {eta} {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    Some((bar, std::time::Instant::now()))
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
