//! `cniscope.toml`: read section by section, then validated one section at a time
//! (`config/validate.rs`). Every problem is reported with the file, line and key, all of them
//! at once, so one edit fixes them all; nothing out of range is clamped silently.
//!
//! Sections, and which commands read them:
//! - `[plugins]`, `[[plugin]]`: every command that runs plugins.
//! - `[inventory]`: what names the cluster (`files`: kubectl dumps): replay and run.
//! - `[decode]`: tunnel ports beyond the plugins' own needs: replay and live capture alike.
//! - `[replay]`: the window and the capture files of a replay.
//! - `[agent]`: live capture (`cniscope run`, `cniscope agent`).
//! - `[nats]`: the broker of cluster mode (`cniscope agent`, `cniscope aggregate`).
//! - `[aggregate]`: the aggregator's windows and output (`cniscope aggregate`).
//! - `[server]`: the topology API, metrics and web map of `run` and `aggregate`.
//! - `[output]`: the output format.

mod locate;
pub mod reload;
mod validate;

use crate::plugins::PluginSettings;
use crate::plugins::policy::Grants;
use crate::sinks::Format;
use crate::sources::decode::Decoding;
use crate::sources::replay::CaptureSpec;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use toml::Spanned;

/// Exit code for a bad configuration (sysexits EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

/// The sections of a config file as written (before validation).
#[derive(Debug, Default)]
pub struct Sections {
    pub plugins: PluginsSection,
    /// `[[plugin]]` entries with their index in the file (an entry that did not parse is
    /// reported and left out).
    pub plugin: Vec<(usize, PluginEntry)>,
    pub inventory: InventorySection,
    pub decode: DecodeSection,
    pub replay: ReplaySection,
    pub output: OutputSection,
    pub agent: AgentSection,
    pub nats: NatsSection,
    pub aggregate: AggregateSection,
    pub server: ServerSection,
}

/// The top-level sections a config may have.
const SECTIONS: &[&str] = &[
    "plugins",
    "plugin",
    "inventory",
    "decode",
    "replay",
    "output",
    "agent",
    "nats",
    "aggregate",
    "server",
];

/// `[nats]`: how agents and the aggregator reach NATS JetStream. Key names follow the `nats`
/// command line's flags (`--creds`, `--nkey`, `--user`, `--password`, `--tlscert`, ...).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSection {
    /// `nats://host:port` (several, comma-separated, for a cluster).
    pub url: Option<Spanned<String>>,
    /// A credentials file (JWT and NKey seed), relative to this file.
    pub creds: Option<Spanned<String>>,
    /// A file holding an NKey seed.
    pub nkey: Option<Spanned<String>>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub tlscert: Option<Spanned<String>>,
    pub tlskey: Option<Spanned<String>>,
    /// CA certificate (PEM) the server's certificate must chain to; also turns TLS on.
    pub tlsca: Option<Spanned<String>>,
    /// Agents: batches kept in memory while the broker does not acknowledge them, in MiB;
    /// what does not fit is dropped and counted.
    #[serde(default = "default_buffer_mib")]
    pub buffer_mib: Spanned<u64>,
}

fn default_buffer_mib() -> Spanned<u64> {
    spanned(64)
}

impl Default for NatsSection {
    fn default() -> Self {
        NatsSection {
            url: None,
            creds: None,
            nkey: None,
            user: None,
            password: None,
            token: None,
            tlscert: None,
            tlskey: None,
            tlsca: None,
            buffer_mib: default_buffer_mib(),
        }
    }
}

/// `[aggregate]`: how the aggregator cuts event time into windows and where it writes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateSection {
    /// Event-time window length: every node's batches ending in a window are stitched
    /// together.
    #[serde(default = "default_interval")]
    pub interval_secs: Spanned<f64>,
    /// How long a window waits for a node that has not reported past it; a node silent that
    /// long is reported stale, and its batches for closed windows are counted, not merged.
    #[serde(default = "default_lateness")]
    pub max_lateness_secs: Spanned<f64>,
    /// Where the topology is written after every window.
    pub output_file: Option<String>,
    /// The aggregator's checkpoint (the topology so far and the last window written); a
    /// restart continues from it. Default: `cniscope-aggregate.state` beside this file.
    pub state_file: Option<String>,
}

fn default_lateness() -> Spanned<f64> {
    spanned(10.0)
}

impl Default for AggregateSection {
    fn default() -> Self {
        AggregateSection {
            interval_secs: default_interval(),
            max_lateness_secs: default_lateness(),
            output_file: None,
            state_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// How often the probes' maps are drained into the plugins, and the topology written.
    #[serde(default = "default_interval")]
    pub interval_secs: Spanned<f64>,
    /// Stop after this long (0: run until SIGINT/SIGTERM).
    #[serde(default = "zero_secs")]
    pub duration_secs: Spanned<f64>,
    /// Where the topology is written each interval and at exit (besides stdout at exit).
    pub output_file: Option<String>,
    /// Flows per node per interval the probes can hold (each of two buffers; a flow is one
    /// interface and direction of a connection, so a connection is 2-8 flows on a node).
    /// Kernel memory: 16 bytes per entry up front (the hash buckets: 4 MiB per buffer at the
    /// default 262 144), ~256 bytes per flow while it is held.
    #[serde(default = "default_flow_entries")]
    pub flow_entries: Spanned<u32>,
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
    /// Where the probes join each interface's TCX chain: "first" (before every other
    /// program, so a CNI's program that redirects or drops a packet, as Cilium's do, cannot
    /// hide it from them) or "last" (after them: what the CNI let through).
    #[serde(default = "default_tcx_order")]
    pub tcx_order: Spanned<String>,
    /// Record the packets the kernel drops in the watched nodes (the `kfree_skb` program),
    /// with its reason, into each connection's `path.drops` and `health.kernel_drops`. Off:
    /// the program is not loaded (its cost, near zero when nothing drops: `./x bench-drops`).
    #[serde(default = "yes")]
    pub kernel_drops: bool,
    /// The drop program's ring buffer, in bytes (a power of two; 272 bytes a drop). The agent
    /// reads it every 50 ms: 4 MiB holds a flood of 300 000 drops a second. A drop that finds
    /// it full is counted in `health.kernel_drops.ringbuf_full`.
    #[serde(default = "default_drop_ringbuf")]
    pub drop_ringbuf_bytes: Spanned<u32>,
    /// The nodes to watch: one network namespace each. None: this host, as `node` = hostname.
    #[serde(default)]
    pub node: Vec<AgentNode>,
}

fn spanned<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}
fn default_interval() -> Spanned<f64> {
    spanned(5.0)
}
fn zero_secs() -> Spanned<f64> {
    spanned(0.0)
}
fn default_flow_entries() -> Spanned<u32> {
    spanned(262_144)
}
fn default_cache_slots() -> Spanned<u32> {
    spanned(1024)
}
fn default_ringbuf() -> Spanned<u32> {
    spanned(256 * 1024)
}
fn default_drop_ringbuf() -> Spanned<u32> {
    spanned(4 * 1024 * 1024)
}
fn default_tcx_order() -> Spanned<String> {
    spanned("first".to_string())
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            interval_secs: default_interval(),
            duration_secs: zero_secs(),
            output_file: None,
            flow_entries: default_flow_entries(),
            flow_cache_slots: default_cache_slots(),
            ringbuf_bytes: default_ringbuf(),
            bpf_stats: false,
            baseline_probe: false,
            tcx_order: default_tcx_order(),
            kernel_drops: true,
            drop_ringbuf_bytes: default_drop_ringbuf(),
            node: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AgentNode {
    /// The Kubernetes node name this namespace stands for.
    pub name: Spanned<String>,
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
    pub max_restarts: Spanned<u32>,
    /// Watch the plugins' files and load a new version at the next window boundary
    /// (`run`, `aggregate`).
    #[serde(default = "default_watch")]
    pub watch: bool,
}

fn default_watch() -> bool {
    true
}

fn default_dir() -> Spanned<String> {
    spanned("plugins".into())
}
fn default_memory() -> Spanned<u64> {
    spanned(64)
}
fn default_deadline() -> Spanned<u64> {
    spanned(2000)
}
fn default_restarts() -> Spanned<u32> {
    spanned(3)
}

impl Default for PluginsSection {
    fn default() -> Self {
        PluginsSection {
            dir: default_dir(),
            cache_dir: None,
            memory_limit_mib: default_memory(),
            call_deadline_ms: default_deadline(),
            max_restarts: default_restarts(),
            watch: default_watch(),
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

/// `[inventory]`: what names the cluster, for every mode.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventorySection {
    /// kubectl JSON dumps (`kubectl get nodes,pods,services,endpointslices -A -o json`),
    /// relative to this file.
    #[serde(default)]
    pub files: Vec<Spanned<String>>,
    /// Follow the Kubernetes API (list/watch) instead of, or besides, the files.
    #[serde(default)]
    pub kubernetes: Option<Spanned<bool>>,
    /// A kubeconfig file, relative to this file; without it `$KUBECONFIG`, `~/.kube/config`
    /// or the pod's service account (in-cluster).
    pub kubeconfig: Option<Spanned<String>>,
    /// A context of the kubeconfig other than its current one.
    pub context: Option<String>,
    /// How long a deleted pod still names its address (windows still being processed).
    #[serde(default = "default_retain_deleted")]
    pub retain_deleted_secs: Spanned<f64>,
    /// How long the start waits for the first lists before going on without them.
    #[serde(default = "default_sync_timeout")]
    pub sync_timeout_secs: Spanned<f64>,
}

fn default_retain_deleted() -> Spanned<f64> {
    Spanned::new(0..0, 600.0)
}

fn default_sync_timeout() -> Spanned<f64> {
    Spanned::new(0..0, 30.0)
}

impl Default for InventorySection {
    fn default() -> Self {
        InventorySection {
            files: Vec::new(),
            kubernetes: None,
            kubeconfig: None,
            context: None,
            retain_deleted_secs: default_retain_deleted(),
            sync_timeout_secs: default_sync_timeout(),
        }
    }
}

/// Validated `[inventory]` keys of the inventory that follows the Kubernetes API.
#[derive(Clone, Debug)]
pub struct KubernetesSettings {
    /// `kubeconfig`; `None`: `$KUBECONFIG`, `~/.kube/config`, or in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// `context`; `None`: the kubeconfig's current one.
    pub context: Option<String>,
    /// `retain_deleted_secs`.
    pub retain_deleted: Duration,
    /// `sync_timeout_secs`.
    pub sync_timeout: Duration,
}

/// `[decode]`: tunnel ports the decoders (replay and the probes) decode besides those the
/// plugins ask for (their `decoding` needs, which follow their options).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeSection {
    /// UDP ports decoded as VXLAN.
    #[serde(default = "default_vxlan")]
    pub vxlan_ports: Spanned<Vec<u16>>,
    /// UDP ports decoded as Geneve.
    #[serde(default = "default_geneve")]
    pub geneve_ports: Spanned<Vec<u16>>,
    /// UDP ports that carry a raw IP packet (flannel's udp backend).
    #[serde(default = "default_udp_encap")]
    pub udp_encap_ports: Spanned<Vec<u16>>,
}

fn default_vxlan() -> Spanned<Vec<u16>> {
    spanned(Decoding::default().vxlan)
}
fn default_geneve() -> Spanned<Vec<u16>> {
    spanned(Decoding::default().geneve)
}
fn default_udp_encap() -> Spanned<Vec<u16>> {
    spanned(Decoding::default().udp_encap)
}

impl Default for DecodeSection {
    fn default() -> Self {
        DecodeSection {
            vxlan_ports: default_vxlan(),
            geneve_ports: default_geneve(),
            udp_encap_ports: default_udp_encap(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySection {
    /// Capture time per window: observations are handed to plugins, and correlation windows
    /// flushed, once per window.
    #[serde(default = "default_window")]
    pub window_secs: Spanned<f64>,
    /// Capture files to replay, each with the point it was taken at.
    #[serde(default)]
    pub capture: Vec<CaptureEntry>,
    /// Moved to `[inventory] files`: kept only to say so.
    pub inventory: Option<Spanned<toml::Value>>,
    /// Moved to `[decode]`: kept only to say so.
    pub vxlan_ports: Option<Spanned<toml::Value>>,
    pub geneve_ports: Option<Spanned<toml::Value>>,
    pub udp_encap_ports: Option<Spanned<toml::Value>>,
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
    spanned(10.0)
}

impl Default for ReplaySection {
    fn default() -> Self {
        ReplaySection {
            window_secs: default_window(),
            capture: Vec::new(),
            inventory: None,
            vxlan_ports: None,
            geneve_ports: None,
            udp_encap_ports: None,
        }
    }
}

/// `[server]`: the read-only HTTP server of `run` and `aggregate` (topology API, event
/// stream, Prometheus metrics, web map). Off unless `listen` is given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// `host:port`; `127.0.0.1:9464` keeps it on this machine (any other address is the
    /// operator's explicit choice).
    pub listen: Option<Spanned<String>>,
    /// A file holding a bearer token every request must carry (`Authorization: Bearer`, or
    /// `?access_token=` for the browser's event stream), relative to this file.
    pub token_file: Option<Spanned<String>>,
    /// Edges exported as metric series; what the cap leaves out is counted.
    #[serde(default = "default_max_metric_edges")]
    pub max_metric_edges: Spanned<u64>,
    /// Windows kept in memory for `/api/topology?window=N`.
    #[serde(default = "default_keep_windows")]
    pub keep_windows: Spanned<u64>,
    /// Event-stream clients served at once; more are refused (503) and counted.
    #[serde(default = "default_max_stream_clients")]
    pub max_stream_clients: Spanned<u64>,
}

fn default_max_metric_edges() -> Spanned<u64> {
    spanned(5000)
}

fn default_keep_windows() -> Spanned<u64> {
    spanned(60)
}

fn default_max_stream_clients() -> Spanned<u64> {
    spanned(1000)
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: None,
            token_file: None,
            max_metric_edges: default_max_metric_edges(),
            keep_windows: default_keep_windows(),
            max_stream_clients: default_max_stream_clients(),
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
    /// The dotted key, with array indexes: `plugin[1].sha256`, `agent.node[0].netns`.
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

/// Where a `[[plugin]]` entry is: its index among the entries and the line and column of its
/// `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryAt {
    pub index: usize,
    pub line: usize,
    pub column: usize,
}

impl Settings {
    /// A plugin that could not be loaded or started, as a problem at its `[[plugin]]` entry
    /// (`file:line:column: plugin[i]: ...`, exit 78), when it comes from this file.
    pub fn plugin_problem(&self, plugin: usize, message: String) -> Option<ConfigError> {
        let at = self.plugin_at.get(plugin)?;
        Some(ConfigError::Invalid {
            path: self.source.as_ref()?.display().to_string(),
            problems: vec![ConfigProblem {
                line: at.line,
                column: at.column,
                key: format!("plugin[{}]", at.index),
                message,
            }],
        })
    }
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
    /// The file it was read from ([`load`]); None for settings made without one.
    pub source: Option<PathBuf>,
    pub plugins: Vec<PluginToLoad>,
    /// Where each of `plugins` is written in the file (same order; empty without a file).
    pub plugin_at: Vec<EntryAt>,
    pub cache_dir: Option<PathBuf>,
    /// `[plugins] watch`: load new versions of the plugins' files while running.
    pub watch_plugins: bool,
    /// `[decode]`: what the decoders decode besides the plugins' needs.
    pub decoding: Decoding,
    pub window_ns: u64,
    pub format: Option<Format>,
    pub plugin_dir: PathBuf,
    /// From `[[replay.capture]]`.
    pub captures: Vec<CaptureSpec>,
    /// From `[inventory] files`.
    pub inventories: Vec<PathBuf>,
    /// `[inventory] kubernetes = true`: the inventory follows the API.
    pub kubernetes: Option<KubernetesSettings>,
    pub agent: AgentSettings,
    /// `[nats]`, when the file has a `url`.
    pub nats: Option<NatsSettings>,
    pub aggregate: AggregateSettings,
    /// `[server]`, when the file has a `listen` address.
    pub server: Option<ServerSettings>,
}

/// Validated `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub listen: std::net::SocketAddr,
    pub token_file: Option<PathBuf>,
    pub max_metric_edges: usize,
    pub keep_windows: usize,
    pub max_stream_clients: usize,
}

/// Validated `[nats]`.
#[derive(Debug, Clone, Default)]
pub struct NatsSettings {
    pub url: String,
    pub creds: Option<PathBuf>,
    pub nkey: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub buffer_bytes: usize,
}

/// Validated `[aggregate]`.
#[derive(Debug, Clone)]
pub struct AggregateSettings {
    pub interval: Duration,
    pub max_lateness: Duration,
    pub output_file: Option<PathBuf>,
    pub state_file: PathBuf,
}

impl Default for AggregateSettings {
    fn default() -> Self {
        AggregateSettings {
            interval: Duration::from_secs(5),
            max_lateness: Duration::from_secs(10),
            output_file: None,
            state_file: PathBuf::from("cniscope-aggregate.state"),
        }
    }
}

/// Validated `[agent]`.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub interval: Duration,
    pub duration: Option<Duration>,
    pub output_file: Option<PathBuf>,
    pub flow_entries: u32,
    pub flow_cache_slots: u32,
    pub ringbuf_bytes: u32,
    pub bpf_stats: bool,
    pub baseline_probe: bool,
    /// The probes attach at the head of each TCX chain (`tcx_order = "first"`).
    pub tcx_first: bool,
    /// Load the kernel drop program (`agent.kernel_drops`).
    pub kernel_drops: bool,
    pub drop_ringbuf_bytes: u32,
    pub nodes: Vec<NodeToWatch>,
}

impl Default for AgentSettings {
    fn default() -> Self {
        let a = AgentSection::default();
        AgentSettings {
            interval: Duration::from_secs_f64(*a.interval_secs.get_ref()),
            duration: None,
            output_file: None,
            flow_entries: a.flow_entries.into_inner(),
            flow_cache_slots: a.flow_cache_slots.into_inner(),
            ringbuf_bytes: a.ringbuf_bytes.into_inner(),
            bpf_stats: false,
            baseline_probe: false,
            tcx_first: true,
            kernel_drops: true,
            drop_ringbuf_bytes: a.drop_ringbuf_bytes.into_inner(),
            nodes: Vec::new(),
        }
    }
}

/// One `[[agent.node]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeToWatch {
    /// The Kubernetes node name.
    pub name: String,
    /// Its network namespace (a path); None: the agent's own.
    pub netns: Option<PathBuf>,
    /// Interface patterns to watch besides those the plugins ask for.
    pub ifaces: Vec<String>,
}

impl Settings {
    /// Settings without a config file: these plugins, every other setting at its default.
    pub fn for_plugins(plugins: Vec<PluginToLoad>, plugin_dir: PathBuf) -> Settings {
        Settings {
            source: None,
            plugins,
            plugin_at: Vec::new(),
            cache_dir: default_cache_dir(),
            watch_plugins: true,
            decoding: Decoding::default(),
            window_ns: (default_window().into_inner() * 1e9) as u64,
            format: None,
            plugin_dir,
            captures: Vec::new(),
            inventories: Vec::new(),
            kubernetes: None,
            agent: AgentSettings::default(),
            nats: None,
            aggregate: AggregateSettings::default(),
            server: None,
        }
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut settings = parse(&text, &base).map_err(|problems| ConfigError::Invalid {
        path: shown,
        problems,
    })?;
    settings.source = Some(path.to_path_buf());
    Ok(settings)
}

/// Parses and validates config text; relative paths are resolved against `base`.
pub fn parse(text: &str, base: &Path) -> Result<Settings, Vec<ConfigProblem>> {
    let mut problems = validate::Problems::new(text);
    let sections = read_sections(text, &mut problems);
    let settings = validate::settings(sections, base, &mut problems);
    problems.into_result(settings)
}

/// Splits the document into its sections and deserializes each on its own, so a problem in
/// one section does not hide those in the others (nor one `[[plugin]]` entry the next).
fn read_sections(text: &str, problems: &mut validate::Problems) -> Sections {
    use serde::de::IntoDeserializer;
    let mut sections = Sections::default();
    let (doc, syntax) = toml::de::DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in &syntax {
            problems.toml(e);
        }
        return sections;
    }
    fn read<T: for<'de> Deserialize<'de> + Default>(
        value: Spanned<toml::de::DeValue<'_>>,
        problems: &mut validate::Problems,
    ) -> T {
        T::deserialize(value.into_deserializer()).unwrap_or_else(|e| {
            problems.toml(&e);
            T::default()
        })
    }
    for (key, value) in doc.into_inner() {
        let span = key.span();
        match key.get_ref().as_ref() {
            "plugins" => sections.plugins = read(value, problems),
            "plugin" => {
                let Some(entries) = value.get_ref().as_array() else {
                    problems.at(span, "plugin", "write plugins as [[plugin]] entries".into());
                    continue;
                };
                for (i, entry) in entries.iter().enumerate() {
                    match PluginEntry::deserialize(entry.clone().into_deserializer()) {
                        Ok(p) => sections.plugin.push((i, p)),
                        Err(e) => problems.toml(&e),
                    }
                }
            }
            "inventory" => sections.inventory = read(value, problems),
            "decode" => sections.decode = read(value, problems),
            "replay" => sections.replay = read(value, problems),
            "output" => sections.output = read(value, problems),
            "agent" => sections.agent = read(value, problems),
            "nats" => sections.nats = read(value, problems),
            "aggregate" => sections.aggregate = read(value, problems),
            "server" => sections.server = read(value, problems),
            other => problems.at(
                span,
                other,
                format!(
                    "unknown section `{other}`: expected one of {}",
                    SECTIONS.join(", ")
                ),
            ),
        }
    }
    sections
}

/// `$XDG_CACHE_HOME/cniscope` or `~/.cache/cniscope`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("cniscope"))
}

#[cfg(test)]
mod tests;
