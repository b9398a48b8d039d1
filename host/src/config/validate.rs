//! Validation, one function per section, over one collector of problems. Every bound is in
//! its message; nothing out of range is clamped.

use super::locate::{key_at, line_col};
use super::*;
use std::collections::HashSet;
use std::ops::Range;

/// The problems found so far, located in the config text.
pub struct Problems<'t> {
    text: &'t str,
    list: Vec<ConfigProblem>,
}

impl<'t> Problems<'t> {
    pub fn new(text: &'t str) -> Self {
        Problems {
            text,
            list: Vec::new(),
        }
    }

    /// The line and column of `span`'s start.
    pub fn locate(&self, span: Range<usize>) -> (usize, usize) {
        line_col(self.text, span.start)
    }

    /// A problem at `span`, under `key`.
    pub fn at(&mut self, span: Range<usize>, key: &str, message: String) {
        let (line, column) = line_col(self.text, span.start);
        self.list.push(ConfigProblem {
            line,
            column,
            key: key.to_string(),
            message,
        });
    }

    /// A problem the TOML parser or deserializer found; the key comes from where it is.
    pub fn toml(&mut self, e: &toml::de::Error) {
        let start = e.span().map(|s| s.start).unwrap_or(0);
        let key = key_at(self.text, start);
        self.at(start..start, &key, e.message().trim().to_string());
    }

    /// The value, or every problem in the order of the file.
    pub fn into_result<T>(mut self, value: T) -> Result<T, Vec<ConfigProblem>> {
        if self.list.is_empty() {
            return Ok(value);
        }
        self.list.sort_by_key(|p| (p.line, p.column));
        Err(self.list)
    }

    /// `v` must lie in `range` (inclusive); `unit` follows the number in the message.
    fn within<T: PartialOrd + std::fmt::Display + Copy>(
        &mut self,
        v: &Spanned<T>,
        key: &str,
        range: std::ops::RangeInclusive<T>,
        unit: &str,
    ) {
        if !range.contains(v.get_ref()) {
            self.at(
                v.span(),
                key,
                format!(
                    "{}{unit} is out of range: use {} to {}",
                    v.get_ref(),
                    range.start(),
                    range.end()
                ),
            );
        }
    }

    /// A number of seconds in `(0, max]` (or `[0, max]` with `zero_ok`); NaN and infinities
    /// are out of range.
    fn seconds(&mut self, v: &Spanned<f64>, key: &str, max: f64, zero_ok: bool) {
        let x = *v.get_ref();
        let ok = x.is_finite() && x <= max && (x > 0.0 || (zero_ok && x == 0.0));
        if !ok {
            let low = if zero_ok { "0 or more" } else { "above 0" };
            self.at(
                v.span(),
                key,
                format!("{x} is out of range: use a number of seconds {low}, at most {max}"),
            );
        }
    }

    /// A power of two in `range`.
    fn power_of_two(&mut self, v: &Spanned<u32>, key: &str, range: std::ops::RangeInclusive<u32>) {
        let x = *v.get_ref();
        if !x.is_power_of_two() || !range.contains(&x) {
            self.at(
                v.span(),
                key,
                format!(
                    "{x} must be a power of two from {} to {}",
                    range.start(),
                    range.end()
                ),
            );
        }
    }

    /// A file that must exist, relative to `base`.
    fn file(&mut self, base: &Path, f: &Spanned<String>, key: &str) -> PathBuf {
        let path = base.join(f.get_ref());
        if !path.is_file() {
            let why = if path.is_dir() {
                "is a folder, not a file"
            } else {
                "does not exist"
            };
            self.at(f.span(), key, format!("{} {why}", path.display()));
        }
        path
    }
}

/// Limits the probes are built for: beyond them a value is a mistake, not a wish.
const MAX_FLOW_ENTRIES: u32 = 1 << 20;
const MAX_RINGBUF_BYTES: u32 = 64 << 20;
const MAX_CACHE_SLOTS: u32 = 65536;
/// A year: longer is a typo (0 already means "until stopped").
const MAX_DURATION_SECS: f64 = 366.0 * 86_400.0;

/// Validates every section; the settings are only used when there are no problems.
pub fn settings(s: Sections, base: &Path, p: &mut Problems) -> Settings {
    let plugin_dir = base.join(s.plugins.dir.get_ref());
    plugins_section(&s.plugins, p);
    let (plugins, plugin_at) = plugin_entries(&s.plugin, &s.plugins, &plugin_dir, p);
    let inventories = inventory_section(&s.inventory, base, p);
    let kubernetes = kubernetes_section(&s.inventory, base, p);
    let decoding = decode_section(&s.decode, p);
    let (window_ns, captures) = replay_section(&s.replay, base, p);
    let agent = agent_section(&s.agent, base, p);
    let nats = nats_section(&s.nats, base, p);
    let aggregate = aggregate_section(&s.aggregate, base, p);
    let server = server_section(&s.server, base, p);
    Settings {
        source: None,
        plugins,
        plugin_at,
        cache_dir: match s.plugins.cache_dir.as_deref() {
            Some("") => None,
            Some(d) => Some(base.join(d)),
            None => default_cache_dir(),
        },
        watch_plugins: s.plugins.watch,
        decoding,
        window_ns,
        format: s.output.format,
        plugin_dir,
        captures,
        inventories,
        kubernetes,
        agent,
        nats,
        aggregate,
        server,
    }
}

fn server_section(s: &ServerSection, base: &Path, p: &mut Problems) -> Option<ServerSettings> {
    p.within(
        &s.max_metric_edges,
        "server.max_metric_edges",
        0..=1_000_000,
        "",
    );
    p.within(&s.keep_windows, "server.keep_windows", 1..=10_000, "");
    p.within(
        &s.max_stream_clients,
        "server.max_stream_clients",
        1..=100_000,
        "",
    );
    let token_file = s
        .token_file
        .as_ref()
        .map(|f| p.file(base, f, "server.token_file"));
    let listen = s.listen.as_ref()?;
    if cfg!(not(feature = "server")) {
        p.at(
            listen.span(),
            "server.listen",
            "this build has no server (cargo feature `server`)".into(),
        );
    }
    let addr = match listen.get_ref().parse::<std::net::SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            p.at(
                listen.span(),
                "server.listen",
                format!(
                    "{:?} is not an address and port: use e.g. \"127.0.0.1:9464\"",
                    listen.get_ref()
                ),
            );
            return None;
        }
    };
    Some(ServerSettings {
        listen: addr,
        token_file,
        max_metric_edges: *s.max_metric_edges.get_ref() as usize,
        keep_windows: *s.keep_windows.get_ref() as usize,
        max_stream_clients: *s.max_stream_clients.get_ref() as usize,
    })
}

fn nats_section(s: &NatsSection, base: &Path, p: &mut Problems) -> Option<NatsSettings> {
    p.within(&s.buffer_mib, "nats.buffer_mib", 1..=4096, " MiB");
    let mut file = |f: &Option<Spanned<String>>, key: &str| {
        f.as_ref().map(|f| p.file(base, f, &format!("nats.{key}")))
    };
    let creds = file(&s.creds, "creds");
    let nkey = file(&s.nkey, "nkey");
    let tls_cert = file(&s.tlscert, "tlscert");
    let tls_key = file(&s.tlskey, "tlskey");
    let tls_ca = file(&s.tlsca, "tlsca");
    if s.tlscert.is_some() != s.tlskey.is_some() {
        let span = s.tlscert.as_ref().or(s.tlskey.as_ref()).map(|v| v.span());
        p.at(
            span.unwrap_or(0..0),
            "nats.tlscert",
            "a client certificate needs its key: give tlscert and tlskey together".into(),
        );
    }
    let url = s.url.as_ref()?;
    for one in url.get_ref().split(',').map(str::trim) {
        let ok = one.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme, "nats" | "tls" | "ws" | "wss") && !rest.is_empty()
        });
        if !ok {
            p.at(
                url.span(),
                "nats.url",
                format!("{one:?} is not a NATS URL: use nats://host:port"),
            );
        }
    }
    Some(NatsSettings {
        url: url.get_ref().clone(),
        creds,
        nkey,
        user: s.user.clone(),
        password: s.password.clone(),
        token: s.token.clone(),
        tls_cert,
        tls_key,
        tls_ca,
        buffer_bytes: (*s.buffer_mib.get_ref() as usize) << 20,
    })
}

fn aggregate_section(s: &AggregateSection, base: &Path, p: &mut Problems) -> AggregateSettings {
    p.seconds(&s.interval_secs, "aggregate.interval_secs", 3600.0, false);
    p.seconds(
        &s.max_lateness_secs,
        "aggregate.max_lateness_secs",
        3600.0,
        true,
    );
    let secs = |v: &Spanned<f64>| Duration::try_from_secs_f64(*v.get_ref()).unwrap_or_default();
    AggregateSettings {
        interval: secs(&s.interval_secs),
        max_lateness: secs(&s.max_lateness_secs),
        output_file: s.output_file.as_ref().map(|f| base.join(f)),
        state_file: base.join(
            s.state_file
                .as_deref()
                .unwrap_or("cniscope-aggregate.state"),
        ),
    }
}

fn plugins_section(s: &PluginsSection, p: &mut Problems) {
    p.within(
        &s.memory_limit_mib,
        "plugins.memory_limit_mib",
        1..=4096,
        " MiB",
    );
    p.within(
        &s.call_deadline_ms,
        "plugins.call_deadline_ms",
        1..=600_000,
        " ms",
    );
    p.within(&s.max_restarts, "plugins.max_restarts", 0..=1000, "");
}

fn plugin_entries(
    entries: &[(usize, PluginEntry)],
    defaults: &PluginsSection,
    dir: &Path,
    p: &mut Problems,
) -> (Vec<PluginToLoad>, Vec<EntryAt>) {
    let mut plugins = Vec::new();
    let mut at = Vec::new();
    let mut seen = HashSet::new();
    for (i, e) in entries {
        let key = |k: &str| format!("plugin[{i}].{k}");
        let name = e.name.get_ref();
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            p.at(
                e.name.span(),
                &key("name"),
                format!("{name:?} is not a plugin name: use letters, digits, '-' and '_'"),
            );
        }
        if !seen.insert(name.as_str()) {
            p.at(
                e.name.span(),
                &key("name"),
                format!("plugin {name:?} is listed twice"),
            );
        }
        if let Some(sha) = &e.sha256
            && (sha.get_ref().len() != 64
                || !sha.get_ref().chars().all(|ch| ch.is_ascii_hexdigit()))
        {
            p.at(
                sha.span(),
                &key("sha256"),
                "must be 64 hex digits (`cniscope plugin inspect` prints it)".into(),
            );
        }
        let memory = e
            .memory_limit_mib
            .as_ref()
            .unwrap_or(&defaults.memory_limit_mib);
        let deadline = e
            .call_deadline_ms
            .as_ref()
            .unwrap_or(&defaults.call_deadline_ms);
        if e.memory_limit_mib.is_some() {
            p.within(memory, &key("memory_limit_mib"), 1..=4096, " MiB");
        }
        if e.call_deadline_ms.is_some() {
            p.within(deadline, &key("call_deadline_ms"), 1..=600_000, " ms");
        }
        if !e.enabled {
            continue;
        }
        let path = match &e.file {
            Some(f) => p.file(dir, f, &key("file")),
            None => p.file(
                dir,
                &Spanned::new(e.name.span(), format!("{name}.wasm")),
                &key("name"),
            ),
        };
        let (line, column) = p.locate(e.name.span());
        at.push(EntryAt {
            index: *i,
            line,
            column,
        });
        plugins.push(PluginToLoad {
            path,
            sha256: e.sha256.as_ref().map(|s| s.get_ref().to_lowercase()),
            settings: PluginSettings {
                name: name.clone(),
                options_json: serde_json::to_string(&e.options).unwrap_or_else(|_| "{}".into()),
                memory_limit_bytes: (*memory.get_ref() as usize) << 20,
                call_deadline: Duration::from_millis(*deadline.get_ref()),
                max_restarts: *defaults.max_restarts.get_ref(),
                grants: e.grants.clone(),
            },
        });
    }
    (plugins, at)
}

fn inventory_section(s: &InventorySection, base: &Path, p: &mut Problems) -> Vec<PathBuf> {
    s.files
        .iter()
        .enumerate()
        .map(|(i, f)| p.file(base, f, &format!("inventory.files[{i}]")))
        .collect()
}

fn kubernetes_section(
    s: &InventorySection,
    base: &Path,
    p: &mut Problems,
) -> Option<KubernetesSettings> {
    p.seconds(
        &s.retain_deleted_secs,
        "inventory.retain_deleted_secs",
        86_400.0,
        true,
    );
    p.seconds(
        &s.sync_timeout_secs,
        "inventory.sync_timeout_secs",
        3600.0,
        true,
    );
    let on = s.kubernetes.as_ref().is_some_and(|k| *k.get_ref());
    if !on {
        if let Some(f) = &s.kubeconfig {
            p.at(
                f.span(),
                "inventory.kubeconfig",
                "read only with kubernetes = true".into(),
            );
        }
        return None;
    }
    if !cfg!(feature = "kubernetes") {
        let k = s.kubernetes.as_ref().expect("on");
        p.at(
            k.span(),
            "inventory.kubernetes",
            "this build has no Kubernetes API support (cargo feature `kubernetes`)".into(),
        );
    }
    let kubeconfig = s
        .kubeconfig
        .as_ref()
        .map(|f| p.file(base, f, "inventory.kubeconfig"));
    let secs = |v: &Spanned<f64>| Duration::try_from_secs_f64(*v.get_ref()).unwrap_or_default();
    Some(KubernetesSettings {
        kubeconfig,
        context: s.context.clone(),
        retain_deleted: secs(&s.retain_deleted_secs),
        sync_timeout: secs(&s.sync_timeout_secs),
    })
}

fn decode_section(s: &DecodeSection, p: &mut Problems) -> Decoding {
    // The probe's fixed slots (cniscope_common::ProbeConfig); the plugins' needs join these.
    for (ports, key, room) in [
        (&s.vxlan_ports, "decode.vxlan_ports", 8),
        (&s.geneve_ports, "decode.geneve_ports", 4),
        (&s.udp_encap_ports, "decode.udp_encap_ports", 4),
    ] {
        if ports.get_ref().contains(&0) {
            p.at(ports.span(), key, "0 is not a UDP port".into());
        }
        if ports.get_ref().len() > room {
            p.at(
                ports.span(),
                key,
                format!(
                    "{} ports: live capture decodes at most {room}",
                    ports.get_ref().len()
                ),
            );
        }
    }
    Decoding {
        vxlan: s.vxlan_ports.get_ref().clone(),
        geneve: s.geneve_ports.get_ref().clone(),
        udp_encap: s.udp_encap_ports.get_ref().clone(),
        geneve_classes: Vec::new(),
    }
}

fn replay_section(s: &ReplaySection, base: &Path, p: &mut Problems) -> (u64, Vec<CaptureSpec>) {
    p.seconds(&s.window_secs, "replay.window_secs", 86_400.0, false);
    if let Some(v) = &s.inventory {
        p.at(
            v.span(),
            "replay.inventory",
            "moved: write the kubectl dumps as [inventory] files = [...] (every mode reads them)"
                .into(),
        );
    }
    for (v, key) in [
        (&s.vxlan_ports, "vxlan_ports"),
        (&s.geneve_ports, "geneve_ports"),
        (&s.udp_encap_ports, "udp_encap_ports"),
    ] {
        if let Some(v) = v {
            p.at(
                v.span(),
                &format!("replay.{key}"),
                format!("moved: write it as [decode] {key} (replay and live capture read it)"),
            );
        }
    }
    let captures = s
        .capture
        .iter()
        .enumerate()
        .map(|(i, c)| CaptureSpec {
            path: p.file(base, &c.path, &format!("replay.capture[{i}].path")),
            node: c.node.clone(),
            iface: c.iface.clone(),
        })
        .collect();
    let window = *s.window_secs.get_ref();
    let window_ns = if window.is_finite() && window > 0.0 {
        (window * 1e9) as u64
    } else {
        0
    };
    (window_ns, captures)
}

fn agent_section(a: &AgentSection, base: &Path, p: &mut Problems) -> AgentSettings {
    p.seconds(&a.interval_secs, "agent.interval_secs", 3600.0, false);
    p.seconds(
        &a.duration_secs,
        "agent.duration_secs",
        MAX_DURATION_SECS,
        true,
    );
    p.within(
        &a.flow_entries,
        "agent.flow_entries",
        16..=MAX_FLOW_ENTRIES,
        "",
    );
    p.power_of_two(
        &a.flow_cache_slots,
        "agent.flow_cache_slots",
        1..=MAX_CACHE_SLOTS,
    );
    p.power_of_two(
        &a.ringbuf_bytes,
        "agent.ringbuf_bytes",
        4096..=MAX_RINGBUF_BYTES,
    );
    p.power_of_two(
        &a.drop_ringbuf_bytes,
        "agent.drop_ringbuf_bytes",
        4096..=MAX_RINGBUF_BYTES,
    );
    let tcx_first = match a.tcx_order.get_ref().as_str() {
        "first" => true,
        "last" => false,
        other => {
            p.at(
                a.tcx_order.span(),
                "agent.tcx_order",
                format!("{other:?}: \"first\" or \"last\""),
            );
            true
        }
    };
    let mut names = HashSet::new();
    let mut nodes = Vec::new();
    for (i, n) in a.node.iter().enumerate() {
        let name = n.name.get_ref();
        if name.trim().is_empty() {
            p.at(
                n.name.span(),
                &format!("agent.node[{i}].name"),
                "a node needs its Kubernetes name".into(),
            );
        } else if !names.insert(name.as_str()) {
            p.at(
                n.name.span(),
                &format!("agent.node[{i}].name"),
                format!("node {name:?} is listed twice"),
            );
        }
        let netns = n.netns.as_ref().map(|ns| {
            let v = ns.get_ref();
            let path = if v.contains('/') {
                PathBuf::from(v)
            } else {
                PathBuf::from("/run/netns").join(v)
            };
            if !path.exists() {
                p.at(
                    ns.span(),
                    &format!("agent.node[{i}].netns"),
                    format!("{} does not exist (`ip netns list`)", path.display()),
                );
            }
            path
        });
        nodes.push(NodeToWatch {
            name: name.clone(),
            netns,
            ifaces: n.ifaces.clone(),
        });
    }
    // Only read when there are no problems: the values are in range then (and an
    // out-of-range one must not panic before it is reported).
    let secs = |v: &Spanned<f64>| Duration::try_from_secs_f64(*v.get_ref()).unwrap_or_default();
    AgentSettings {
        interval: secs(&a.interval_secs),
        duration: (*a.duration_secs.get_ref() > 0.0).then(|| secs(&a.duration_secs)),
        output_file: a.output_file.as_ref().map(|f| base.join(f)),
        flow_entries: *a.flow_entries.get_ref(),
        flow_cache_slots: *a.flow_cache_slots.get_ref(),
        ringbuf_bytes: *a.ringbuf_bytes.get_ref(),
        bpf_stats: a.bpf_stats,
        baseline_probe: a.baseline_probe,
        tcx_first,
        kernel_drops: a.kernel_drops,
        drop_ringbuf_bytes: *a.drop_ringbuf_bytes.get_ref(),
        nodes,
    }
}
