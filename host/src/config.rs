//! `cniscope.toml`: parsed, then validated in one place. Every problem is reported with the
//! file, line and key, and all of them at once, so one edit fixes them all.

use crate::plugins::PluginSettings;
use crate::plugins::policy::Grants;
use crate::sinks::Format;
use crate::sources::decode::TunnelPorts;
use crate::sources::replay::CaptureSpec;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use toml::Spanned;

/// Exit code for a bad configuration (sysexits EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where plugins come from, and the limits they run under.
    #[serde(default)]
    pub plugins: PluginsSection,
    /// The plugins to run, in order.
    #[serde(default, rename = "plugin")]
    pub plugin: Vec<PluginEntry>,
    #[serde(default)]
    pub replay: ReplaySection,
    #[serde(default)]
    pub output: OutputSection,
    /// Live capture (`cniscope run`).
    #[serde(default)]
    pub agent: AgentSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// How often the probes' maps are drained into the plugins, and the topology written.
    #[serde(default = "default_interval")]
    pub interval_secs: Spanned<f64>,
    /// Stop after this long (0: run until SIGINT/SIGTERM).
    #[serde(default)]
    pub duration_secs: f64,
    /// Where the topology is written each interval and at exit (besides stdout at exit).
    pub output_file: Option<String>,
    /// Flows per node per interval the probes can hold (each of two buffers).
    #[serde(default = "default_flow_entries")]
    pub flow_entries: u32,
    /// Slots per CPU in each of the probes' two flow caches (a power of two, 1 to 65536): the
    /// array every packet tries before the flow hash map. More slots: fewer flows take the
    /// slower hash map; each slot costs 176 bytes per CPU per buffer, and the drain reads them
    /// all.
    #[serde(default = "default_cache_slots")]
    pub flow_cache_slots: Spanned<u32>,
    /// Ring buffer for new-flow events, in bytes (a power of two).
    #[serde(default = "default_ringbuf")]
    pub ringbuf_bytes: Spanned<u32>,
    /// Turn on the kernel's per-program run-time statistics (a small cost per packet) and
    /// report them in `health.probes` (`./x bench-probe` uses it).
    #[serde(default)]
    pub bpf_stats: bool,
    /// For measuring the probes: attach a program that returns at once instead of them (no
    /// flow is observed), so that `bpf_stats` shows the floor: what the hook and the
    /// statistics' own clock reads cost per packet. `./x bench-probe` runs both.
    #[serde(default)]
    pub baseline_probe: bool,
    /// The nodes to watch: one network namespace each. None: this host, as `node` = hostname.
    #[serde(default)]
    pub node: Vec<AgentNode>,
}

fn default_interval() -> Spanned<f64> {
    Spanned::new(0..0, 5.0)
}
fn default_flow_entries() -> u32 {
    16384
}
fn default_cache_slots() -> Spanned<u32> {
    Spanned::new(0..0, 1024)
}
fn default_ringbuf() -> Spanned<u32> {
    Spanned::new(0..0, 256 * 1024)
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            interval_secs: default_interval(),
            duration_secs: 0.0,
            output_file: None,
            flow_entries: default_flow_entries(),
            flow_cache_slots: default_cache_slots(),
            ringbuf_bytes: default_ringbuf(),
            bpf_stats: false,
            baseline_probe: false,
            node: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AgentNode {
    /// The Kubernetes node name this namespace stands for.
    pub name: String,
    /// Network namespace: a name under /run/netns, or a path; absent = the agent's own.
    pub netns: Option<Spanned<String>>,
    /// Interface patterns to watch besides those the plugins ask for (`*` globs).
    #[serde(default)]
    pub ifaces: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsSection {
    /// Folder of `.wasm` files, relative to the config file.
    #[serde(default = "default_dir")]
    pub dir: Spanned<String>,
    /// Folder for precompiled plugins (keyed by content hash); "" disables the cache.
    #[serde(default)]
    pub cache_dir: Option<String>,
    /// Memory cap per plugin instance, in MiB.
    #[serde(default = "default_memory")]
    pub memory_limit_mib: Spanned<u64>,
    /// Deadline for one plugin call, in milliseconds.
    #[serde(default = "default_deadline")]
    pub call_deadline_ms: Spanned<u64>,
    /// Faults after which a plugin is disabled instead of restarted.
    #[serde(default = "default_restarts")]
    pub max_restarts: u32,
}

fn default_dir() -> Spanned<String> {
    Spanned::new(0..0, "plugins".into())
}
fn default_memory() -> Spanned<u64> {
    Spanned::new(0..0, 64)
}
fn default_deadline() -> Spanned<u64> {
    Spanned::new(0..0, 2000)
}
fn default_restarts() -> u32 {
    3
}

impl Default for PluginsSection {
    fn default() -> Self {
        PluginsSection {
            dir: default_dir(),
            cache_dir: None,
            memory_limit_mib: default_memory(),
            call_deadline_ms: default_deadline(),
            max_restarts: default_restarts(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// The plugin's name; loads `<dir>/<name>.wasm` unless `file` is given.
    pub name: Spanned<String>,
    /// Path of the `.wasm`, relative to `plugins.dir`.
    pub file: Option<Spanned<String>>,
    /// Refuse to load unless the file's sha256 is this (hex).
    pub sha256: Option<Spanned<String>>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Overrides `plugins.memory_limit_mib` for this plugin.
    pub memory_limit_mib: Option<Spanned<u64>>,
    /// Overrides `plugins.call_deadline_ms` for this plugin.
    pub call_deadline_ms: Option<Spanned<u64>>,
    /// Capabilities beyond the default sandbox.
    #[serde(default)]
    pub grants: Grants,
    /// Passed to the plugin's `configure` as JSON; the plugin validates them.
    #[serde(default)]
    pub options: toml::Table,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySection {
    /// Capture time per window: observations are handed to plugins, and correlation windows
    /// flushed, once per window.
    #[serde(default = "default_window")]
    pub window_secs: Spanned<f64>,
    /// UDP ports decoded as VXLAN.
    #[serde(default = "default_vxlan")]
    pub vxlan_ports: Vec<u16>,
    /// UDP ports decoded as Geneve.
    #[serde(default = "default_geneve")]
    pub geneve_ports: Vec<u16>,
    /// UDP ports that carry a raw IP packet (flannel's udp backend).
    #[serde(default = "default_udp_encap")]
    pub udp_encap_ports: Vec<u16>,
    /// kubectl JSON dumps naming the cluster, relative to this file.
    #[serde(default)]
    pub inventory: Vec<Spanned<String>>,
    /// Capture files to replay, each with the point it was taken at.
    #[serde(default)]
    pub capture: Vec<CaptureEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureEntry {
    /// pcap or pcapng file, relative to this file.
    pub path: Spanned<String>,
    /// The Kubernetes node it was captured on.
    #[serde(default)]
    pub node: String,
    /// The interface; when absent, the pcapng interface name.
    pub iface: Option<String>,
}

fn default_window() -> Spanned<f64> {
    Spanned::new(0..0, 10.0)
}
fn default_vxlan() -> Vec<u16> {
    vec![4789, 8472]
}
fn default_geneve() -> Vec<u16> {
    vec![6081]
}
fn default_udp_encap() -> Vec<u16> {
    vec![8285]
}

impl Default for ReplaySection {
    fn default() -> Self {
        ReplaySection {
            window_secs: default_window(),
            vxlan_ports: default_vxlan(),
            geneve_ports: default_geneve(),
            udp_encap_ports: default_udp_encap(),
            inventory: Vec::new(),
            capture: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// table, json or dot.
    pub format: Option<Format>,
}

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Parse or validation problems, all of them.
    #[error("{}", .problems.iter().map(|p| format!("{}:{}:{}: {}: {}", .path, p.line, p.column, p.key, p.message)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: String,
        problems: Vec<ConfigProblem>,
    },
}

/// A plugin to load, resolved from the config.
#[derive(Debug, Clone)]
pub struct PluginToLoad {
    pub path: PathBuf,
    pub sha256: Option<String>,
    pub settings: PluginSettings,
}

/// The validated, ready-to-use configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub plugins: Vec<PluginToLoad>,
    pub cache_dir: Option<PathBuf>,
    pub ports: TunnelPorts,
    pub window_ns: u64,
    pub format: Option<Format>,
    pub plugin_dir: PathBuf,
    /// From `[[replay.capture]]`.
    pub captures: Vec<CaptureSpec>,
    /// From `replay.inventory`.
    pub inventories: Vec<PathBuf>,
    pub agent: AgentSettings,
}

/// Validated `[agent]`.
#[derive(Debug, Clone, Default)]
pub struct AgentSettings {
    pub interval: Duration,
    pub duration: Option<Duration>,
    pub output_file: Option<PathBuf>,
    pub flow_entries: u32,
    pub flow_cache_slots: u32,
    pub ringbuf_bytes: u32,
    pub bpf_stats: bool,
    pub baseline_probe: bool,
    /// (node name, namespace path, extra interface patterns)
    pub nodes: Vec<(String, Option<PathBuf>, Vec<String>)>,
}

impl Settings {
    /// Settings without a config file: these plugins, every other setting at its default.
    pub fn for_plugins(plugins: Vec<PluginToLoad>, plugin_dir: PathBuf) -> Settings {
        Settings {
            plugins,
            cache_dir: default_cache_dir(),
            ports: TunnelPorts::default(),
            window_ns: (default_window().into_inner() * 1e9) as u64,
            format: None,
            plugin_dir,
            captures: Vec::new(),
            inventories: Vec::new(),
            agent: AgentSettings::default(),
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map(|i| before.len() - i)
        .unwrap_or(before.len() + 1);
    (line, column)
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &base).map_err(|problems| ConfigError::Invalid {
        path: shown,
        problems,
    })
}

/// Parses and validates config text; relative paths are resolved against `base`.
pub fn parse(text: &str, base: &Path) -> Result<Settings, Vec<ConfigProblem>> {
    let config: Config = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        let key = e.span().map(|s| key_at(text, s.start)).unwrap_or_default();
        vec![ConfigProblem {
            line,
            column,
            key,
            message: e.message().trim().to_string(),
        }]
    })?;
    validate(config, text, base)
}

/// The dotted key path in force at `offset`: the enclosing [table] plus the key on that line.
fn key_at(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = text[line_start..]
        .find('\n')
        .map(|i| line_start + i)
        .unwrap_or(text.len());
    let line = text[line_start..line_end].trim();
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').to_string())
        .unwrap_or_default();
    if line.starts_with('[') {
        return line.trim_matches(|c| c == '[' || c == ']').to_string();
    }
    let key = line.split('=').next().unwrap_or("").trim().to_string();
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

fn validate(c: Config, text: &str, base: &Path) -> Result<Settings, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let mut problem = |span: std::ops::Range<usize>, key: &str, message: String| {
        let (line, column) = line_col(text, span.start);
        problems.push(ConfigProblem {
            line,
            column,
            key: key.to_string(),
            message,
        });
    };
    let mib = |v: &Spanned<u64>,
               key: &str,
               problem: &mut dyn FnMut(std::ops::Range<usize>, &str, String)| {
        if !(1..=4096).contains(v.get_ref()) {
            problem(
                v.span(),
                key,
                format!("{} MiB is out of range: use 1 to 4096", v.get_ref()),
            );
        }
    };
    mib(
        &c.plugins.memory_limit_mib,
        "plugins.memory_limit_mib",
        &mut problem,
    );
    let ms = |v: &Spanned<u64>,
              key: &str,
              problem: &mut dyn FnMut(std::ops::Range<usize>, &str, String)| {
        if !(1..=600_000).contains(v.get_ref()) {
            problem(
                v.span(),
                key,
                format!("{} ms is out of range: use 1 to 600000", v.get_ref()),
            );
        }
    };
    ms(
        &c.plugins.call_deadline_ms,
        "plugins.call_deadline_ms",
        &mut problem,
    );
    let window = *c.replay.window_secs.get_ref();
    if !(window > 0.0 && window <= 86_400.0) {
        problem(
            c.replay.window_secs.span(),
            "replay.window_secs",
            format!("{window} is out of range: use a number of seconds above 0, at most 86400"),
        );
    }
    let plugin_dir = base.join(c.plugins.dir.get_ref());
    let mut plugins = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, p) in c.plugin.iter().enumerate() {
        let key = |k: &str| format!("plugin[{i}].{k}");
        let name = p.name.get_ref();
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            problem(
                p.name.span(),
                &key("name"),
                format!("{name:?} is not a plugin name: use letters, digits, '-' and '_'"),
            );
        }
        if !seen.insert(name.clone()) {
            problem(
                p.name.span(),
                &key("name"),
                format!("plugin {name:?} is listed twice"),
            );
        }
        if let Some(sha) = &p.sha256
            && (sha.get_ref().len() != 64
                || !sha.get_ref().chars().all(|ch| ch.is_ascii_hexdigit()))
        {
            problem(
                sha.span(),
                &key("sha256"),
                "must be 64 hex digits (`cniscope plugin inspect` prints it)".into(),
            );
        }
        if let Some(m) = &p.memory_limit_mib {
            mib(m, &key("memory_limit_mib"), &mut problem);
        }
        if let Some(d) = &p.call_deadline_ms {
            ms(d, &key("call_deadline_ms"), &mut problem);
        }
        let file = p
            .file
            .as_ref()
            .map(|f| f.get_ref().clone())
            .unwrap_or_else(|| format!("{name}.wasm"));
        let path = plugin_dir.join(&file);
        if p.enabled && !path.is_file() {
            let span = p.file.as_ref().map(|f| f.span()).unwrap_or(p.name.span());
            problem(
                span,
                &key(if p.file.is_some() { "file" } else { "name" }),
                format!(
                    "{} does not exist (build plugins with `./x build-plugins`)",
                    path.display()
                ),
            );
        }
        if !p.enabled {
            continue;
        }
        let options_json = serde_json::to_string(&p.options).unwrap_or_else(|_| "{}".into());
        plugins.push(PluginToLoad {
            path,
            sha256: p.sha256.as_ref().map(|s| s.get_ref().to_lowercase()),
            settings: PluginSettings {
                name: name.clone(),
                options_json,
                memory_limit_bytes: (*p
                    .memory_limit_mib
                    .as_ref()
                    .unwrap_or(&c.plugins.memory_limit_mib)
                    .get_ref() as usize)
                    << 20,
                call_deadline: Duration::from_millis(
                    *p.call_deadline_ms
                        .as_ref()
                        .unwrap_or(&c.plugins.call_deadline_ms)
                        .get_ref(),
                ),
                max_restarts: c.plugins.max_restarts,
                grants: p.grants.clone(),
            },
        });
    }
    let mut captures = Vec::new();
    for (i, c) in c.replay.capture.iter().enumerate() {
        let path = base.join(c.path.get_ref());
        if !path.is_file() {
            problem(
                c.path.span(),
                &format!("replay.capture[{i}].path"),
                format!("{} does not exist", path.display()),
            );
        }
        captures.push(CaptureSpec {
            path,
            node: c.node.clone(),
            iface: c.iface.clone(),
        });
    }
    let a = &c.agent;
    let interval = *a.interval_secs.get_ref();
    if !(interval > 0.0 && interval <= 3600.0) {
        problem(
            a.interval_secs.span(),
            "agent.interval_secs",
            format!("{interval} is out of range: use seconds above 0, at most 3600"),
        );
    }
    let rb = *a.ringbuf_bytes.get_ref();
    if !rb.is_power_of_two() || rb < 4096 {
        problem(
            a.ringbuf_bytes.span(),
            "agent.ringbuf_bytes",
            format!("{rb} must be a power of two of at least 4096"),
        );
    }
    let slots = *a.flow_cache_slots.get_ref();
    if !slots.is_power_of_two() || slots > 65536 {
        problem(
            a.flow_cache_slots.span(),
            "agent.flow_cache_slots",
            format!("{slots} must be a power of two from 1 to 65536"),
        );
    }
    let mut nodes = Vec::new();
    for (i, n) in a.node.iter().enumerate() {
        let netns = n.netns.as_ref().map(|ns| {
            let v = ns.get_ref();
            let path = if v.contains('/') {
                PathBuf::from(v)
            } else {
                PathBuf::from("/run/netns").join(v)
            };
            if !path.exists() {
                problem(
                    ns.span(),
                    &format!("agent.node[{i}].netns"),
                    format!("{} does not exist (`ip netns list`)", path.display()),
                );
            }
            path
        });
        nodes.push((n.name.clone(), netns, n.ifaces.clone()));
    }
    let agent = AgentSettings {
        interval: Duration::from_secs_f64(interval.clamp(0.001, 3600.0)),
        duration: (a.duration_secs > 0.0).then(|| Duration::from_secs_f64(a.duration_secs)),
        output_file: a.output_file.as_ref().map(|f| base.join(f)),
        flow_entries: a.flow_entries.max(16),
        flow_cache_slots: slots,
        ringbuf_bytes: rb,
        bpf_stats: a.bpf_stats,
        baseline_probe: a.baseline_probe,
        nodes,
    };
    let mut inventories = Vec::new();
    for (i, f) in c.replay.inventory.iter().enumerate() {
        let path = base.join(f.get_ref());
        if !path.is_file() {
            problem(
                f.span(),
                &format!("replay.inventory[{i}]"),
                format!("{} does not exist", path.display()),
            );
        }
        inventories.push(path);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Settings {
        captures,
        inventories,
        agent,
        plugins,
        cache_dir: match c.plugins.cache_dir.as_deref() {
            Some("") => None,
            Some(d) => Some(base.join(d)),
            None => default_cache_dir(),
        },
        ports: TunnelPorts {
            vxlan: c.replay.vxlan_ports,
            geneve: c.replay.geneve_ports,
            udp_encap: c.replay.udp_encap_ports,
        },
        window_ns: (window * 1e9) as u64,
        format: c.output.format,
        plugin_dir,
    })
}

/// `$XDG_CACHE_HOME/cniscope` or `~/.cache/cniscope`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("cniscope"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_reported_with_line_and_key() {
        let text = "[plugins]\ndir = \"x\"\nmemory_limit_mb = 3\n";
        let p = parse(text, Path::new("/nonexistent")).unwrap_err();
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].line, p[0].key.as_str()),
            (3, "plugins.memory_limit_mb")
        );
        assert!(
            p[0].message.contains("unknown field `memory_limit_mb`"),
            "{}",
            p[0].message
        );
    }

    #[test]
    fn all_validation_problems_come_together() {
        let text = "[plugins]\nmemory_limit_mib = 0\n\n[[plugin]]\nname = \"flannel\"\nsha256 = \"abc\"\n\n[[plugin]]\nname = \"flannel\"\n";
        let p = parse(text, Path::new("/nonexistent")).unwrap_err();
        let keys: Vec<(usize, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert!(keys.contains(&(2, "plugins.memory_limit_mib")), "{keys:?}");
        assert!(keys.contains(&(6, "plugin[0].sha256")), "{keys:?}");
        assert!(keys.contains(&(9, "plugin[1].name")), "{keys:?}");
        assert!(
            keys.contains(&(5, "plugin[0].name")),
            "missing file is reported: {keys:?}"
        );
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let p = parse("[replay]\nwindow_secs = \"ten\"\n", Path::new(".")).unwrap_err();
        assert_eq!((p[0].line, p[0].key.as_str()), (2, "replay.window_secs"));
    }

    #[test]
    fn agent_sizes_that_are_not_powers_of_two_name_their_key() {
        let text = "[agent]\nflow_cache_slots = 1000\nringbuf_bytes = 5000\n";
        let p = parse(text, Path::new(".")).unwrap_err();
        let keys: Vec<(usize, &str)> = p.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert!(keys.contains(&(2, "agent.flow_cache_slots")), "{keys:?}");
        assert!(keys.contains(&(3, "agent.ringbuf_bytes")), "{keys:?}");
    }

    #[test]
    fn agent_measurement_switches_reach_the_settings() {
        let text = "[agent]\nbpf_stats = true\nbaseline_probe = true\n";
        let s = parse(text, Path::new(".")).unwrap();
        assert!(s.agent.bpf_stats && s.agent.baseline_probe);
        let s = parse("", Path::new(".")).unwrap();
        assert!(!s.agent.bpf_stats && !s.agent.baseline_probe);
    }
}
