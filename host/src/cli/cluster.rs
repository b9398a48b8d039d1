//! `cniscope agent` and `cniscope aggregate`: cluster mode over NATS JetStream.

use super::output;
use super::signals::{STOP, stop_on_signals};
use anyhow::{Result, bail};
use cniscope::config::{self, NatsSettings, Settings};
use cniscope::sinks::{Format, render};
use std::path::{Path, PathBuf};

fn nats_of(settings: &Settings, path: &Path, command: &str) -> Result<NatsSettings> {
    match &settings.nats {
        Some(n) => Ok(n.clone()),
        None => bail!(
            "{}: [nats] url: `cniscope {command}` needs the broker (url = \"nats://host:4222\")",
            path.display()
        ),
    }
}

/// How long an agent that was told to stop waits for NATS to take what it still holds.
#[cfg(feature = "live")]
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(feature = "live")]
pub fn agent(config_path: &Path) -> Result<()> {
    let settings = config::load(config_path)?;
    let nats = nats_of(&settings, config_path, "agent")?;
    stop_on_signals();
    let counters = anyhow::Context::context(
        cniscope::cluster::publish::run(&settings, &nats, &STOP, DRAIN_FOR),
        "running the agent (it needs root, and a kernel with BTF and TCX)",
    )?;
    eprintln!(
        "agent: {} batches published, {} retries, {} batches ({} observations) dropped",
        counters.published,
        counters.retries,
        counters.dropped_batches,
        counters.dropped_observations
    );
    Ok(())
}

pub fn aggregate(config_path: &Path, extra: &[PathBuf], format: Option<Format>) -> Result<()> {
    let mut settings = config::load(config_path)?;
    let nats = nats_of(&settings, config_path, "aggregate")?;
    settings.inventories.extend(extra.iter().cloned());
    stop_on_signals();
    let doc = match cniscope::cluster::aggregate::run(&settings, &nats, &STOP) {
        Err(cniscope::cluster::aggregate::AggregateError::Plugin(e)) => {
            return Err(cniscope::modes::at_plugin_entry(&settings, e));
        }
        other => other?,
    };
    output::print(&render(
        &doc,
        format.or(settings.format).unwrap_or(Format::Table),
    ))
}
