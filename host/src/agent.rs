//! Live capture: [`Capture`] (the probes of this process's nodes, the interfaces they follow,
//! the windows they drain) and `cniscope run`'s [`Agent`], which feeds them through the same
//! pipeline as replay. Cluster mode's agent publishes the same windows instead.
//!
//! One [`NodeProbe`] per node namespace (in production, the agent's own node; in the lab, one
//! namespace per emulated node). Interfaces that appear and match what the plugins asked for
//! are attached when netlink says a link changed (and at a slow rescan, in case an event was
//! lost); every interval the probes' maps are drained, the observations handed to the plugins
//! and the topology published.

use crate::config::{NodeToWatch, Settings};
use crate::health::{Health, HealthSource};
use crate::inventory::Inventory;
use crate::pipeline::Pipeline;
use crate::plugins::bindings::wit;
use crate::plugins::{PluginEngine, PluginError, PluginInstance};
use crate::sources::aggregate::{IfaceKind, Observation, PointTable, sort_observations};
use crate::sources::decode::Decoding;
use crate::sources::live::SWAP_SETTLE;
use crate::sources::live::drops::DropWatch;
use crate::sources::live::netns::{LinkWatch, glob, wait_for_links};
use crate::sources::live::{LiveError, NodeProbe, ProbeSettings, clock_offset_ns};
use crate::topology::TopologyDoc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error(transparent)]
    Inventory(#[from] crate::inventory::FollowError),
}

/// An interface pattern and the kind of device it names.
#[derive(Clone, Debug)]
struct Wanted {
    pattern: String,
    kind: IfaceKind,
}

fn kind_of(k: wit::IfaceKind) -> IfaceKind {
    match k {
        wit::IfaceKind::PodVeth => IfaceKind::PodVeth,
        wit::IfaceKind::Bridge => IfaceKind::Bridge,
        wit::IfaceKind::Tunnel => IfaceKind::Tunnel,
        wit::IfaceKind::Uplink => IfaceKind::Uplink,
        // No interface is one: a capture spec naming it watches the device as any other.
        wit::IfaceKind::Other | wit::IfaceKind::KernelDrop => IfaceKind::Other,
    }
}

/// The node an agent without `[[agent.node]]` captures: `$NODE_NAME` (a DaemonSet sets it
/// from `spec.nodeName`: a node's name need not be its hostname), else the hostname.
fn this_node() -> String {
    if let Ok(name) = std::env::var("NODE_NAME")
        && !name.trim().is_empty()
    {
        return name.trim().to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

struct Node {
    probe: NodeProbe,
    wanted: Vec<Wanted>,
}

/// How often the agent rescans interfaces without being told of a change: netlink link events
/// trigger a rescan at once; this is the safety net (a lost event, no netlink).
const RESCAN_EVERY: Duration = Duration::from_secs(2);
/// How long the agent waits for link events before looking at the stop flag and the clock.
const WAKE_EVERY: Duration = Duration::from_millis(50);

/// Milliseconds to wait after each node's swap to the next window (tests only: nodes that
/// leave a window at moments this far apart, as a cluster's agents do by their clocks and
/// schedulers; a window must still hold every node's views of the same moments).
pub const SWAP_PAUSE_ENV: &str = "CNISCOPE_TEST_SWAP_PAUSE_MS";

fn pause_between_nodes_for_tests() {
    static PAUSE: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    let pause = PAUSE.get_or_init(|| {
        std::env::var(SWAP_PAUSE_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
    });
    if let Some(p) = pause {
        std::thread::sleep(*p);
    }
}

/// The probes of every node this process watches, the interfaces they follow and the
/// windows they drain: live capture, whoever consumes it (the single-process [`Agent`], or
/// cluster mode's publisher).
pub struct Capture {
    nodes: Vec<Node>,
    points: PointTable,
    clock_offset: i64,
    interval: Duration,
    duration: Option<Duration>,
    /// Interfaces that could not be attached, by error, with the attempts (each rescan tries
    /// again): said once per kind of failure, counted in `health.drops`.
    attach_errors: std::collections::BTreeMap<String, u64>,
    /// The kernel drop program (`agent.kernel_drops`), if it loaded.
    drops: Option<DropWatch>,
    /// Why it is not there, when it was asked for.
    drops_error: Option<String>,
    /// What the probes decode: the drop program's headers are decoded alike.
    decoding: Decoding,
    /// Keeps the kernel's per-program run statistics on while held.
    _bpf_stats: Option<std::os::fd::OwnedFd>,
}

impl Node {
    /// Its probe's counters and losses.
    fn report(&self, health: &mut Health) {
        match self.probe.counters() {
            Ok(c) => c.report(&self.probe.node, health),
            Err(e) => health.errors.push(e.to_string()),
        }
    }
}

impl HealthSource for Capture {
    /// Each probe's counters and losses, and the interfaces that could not be attached.
    fn report(&self, health: &mut Health) {
        for n in &self.nodes {
            n.report(health);
        }
        for (e, n) in &self.attach_errors {
            health.errors.push(format!("{e} ({n} attempts)"));
        }
        if let Some(d) = &self.drops {
            d.report(health);
        }
        if let Some(e) = &self.drops_error {
            health.errors.push(e.clone());
        }
        health.drop(
            "interface attach failures (its packets not recorded)",
            self.attach_errors.values().sum(),
        );
    }
}

impl Capture {
    /// One probe per node of `settings.agent`, decoding `decoding`, attaching to the
    /// interfaces the plugins ask for (their descriptions) and each node's own `ifaces`.
    pub fn new(
        settings: &Settings,
        plugins: &[PluginInstance],
        decoding: Decoding,
    ) -> Result<Capture, LiveError> {
        let probe_settings = ProbeSettings {
            flow_entries: settings.agent.flow_entries,
            ringbuf_bytes: settings.agent.ringbuf_bytes,
            cache_slots: settings.agent.flow_cache_slots,
            baseline: settings.agent.baseline_probe,
            tcx_first: settings.agent.tcx_first,
            decoding: decoding.clone(),
            ..ProbeSettings::default()
        };
        let from_plugins: Vec<Wanted> = plugins
            .iter()
            .flat_map(|p| {
                p.description.capture.iter().map(|c| Wanted {
                    pattern: c.pattern.clone(),
                    kind: kind_of(c.kind),
                })
            })
            .collect();
        let node_list = if settings.agent.nodes.is_empty() {
            vec![NodeToWatch {
                name: this_node(),
                netns: None,
                ifaces: Vec::new(),
            }]
        } else {
            settings.agent.nodes.clone()
        };
        let mut nodes = Vec::new();
        for node in node_list {
            let probe = NodeProbe::load(&node.name, node.netns, &probe_settings)?;
            let mut wanted = from_plugins.clone();
            wanted.extend(node.ifaces.into_iter().map(|p| Wanted {
                kind: IfaceKind::guess(&p),
                pattern: p,
            }));
            nodes.push(Node { probe, wanted });
        }
        let (drops, drops_error) = if settings.agent.kernel_drops {
            let watched: Vec<(String, Option<std::path::PathBuf>)> = nodes
                .iter()
                .map(|n| (n.probe.node.clone(), n.probe.netns().map(Into::into)))
                .collect();
            match DropWatch::load(&watched, settings.agent.drop_ringbuf_bytes) {
                Ok(d) => (Some(d), None),
                Err(e) => {
                    // An old kernel (no drop reasons, no BTF): capture goes on without drops.
                    let e = format!(
                        "{e} (kernel drops not recorded; agent.kernel_drops = false silences this)"
                    );
                    tracing::warn!("{e}");
                    (None, Some(e))
                }
            }
        } else {
            (None, None)
        };
        let bpf_stats = if settings.agent.bpf_stats {
            match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::warn!("bpf_stats: {e}");
                    None
                }
            }
        } else {
            None
        };
        Ok(Capture {
            _bpf_stats: bpf_stats,
            drops,
            drops_error,
            decoding,
            nodes,
            points: PointTable::default(),
            clock_offset: clock_offset_ns(),
            interval: settings.agent.interval,
            duration: settings.agent.duration,
            attach_errors: Default::default(),
        })
    }

    /// The names of the nodes watched.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.probe.node.clone()).collect()
    }

    /// Both directions of every interface watched on `node`, whether anything crossed them.
    pub fn watched_points(&self, node: &str) -> Vec<crate::sources::aggregate::CapturePoint> {
        self.nodes
            .iter()
            .filter(|n| n.probe.node == node)
            .flat_map(|n| n.probe.watched_points())
            .collect()
    }

    /// The capture points the drained observations refer to.
    pub fn points(&self) -> &PointTable {
        &self.points
    }

    /// One node's probe health: its counters and losses, as the topology's health has them
    /// (the kernel drop program's, shared by the agent's nodes, with this node's drops only).
    pub fn node_health(&self, node: &str) -> Health {
        let mut health = Health::default();
        for n in self.nodes.iter().filter(|n| n.probe.node == node) {
            n.report(&mut health);
        }
        if let Some(d) = &self.drops {
            d.report(&mut health);
            if let Some(k) = &mut health.kernel_drops {
                k.nodes.retain(|n, _| n == node);
            }
        }
        health
    }

    /// Attaches to every wanted interface not attached yet; forgets the ones that are gone.
    /// Returns how many were newly attached.
    pub fn follow_interfaces(&mut self) -> usize {
        let mut added = 0;
        for n in &mut self.nodes {
            let present = match n.probe.interfaces() {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("{e}");
                    continue;
                }
            };
            n.probe.forget_missing(&present);
            for (ifindex, name) in &present {
                let Some(w) = n.wanted.iter().find(|w| glob(&w.pattern, name)) else {
                    continue;
                };
                // A kind the plugin names wins over the guess from the name.
                let kind = if w.kind == IfaceKind::Other {
                    IfaceKind::guess(name)
                } else {
                    w.kind
                };
                match n.probe.attach(*ifindex, name, kind) {
                    Ok(true) => added += 1,
                    Ok(false) => {}
                    Err(e) => {
                        // Interfaces come and go (a pod deleted between listing and attaching):
                        // report and go on.
                        let n = self.attach_errors.entry(e.to_string()).or_default();
                        if *n == 0 {
                            tracing::warn!("{e}");
                        }
                        *n += 1;
                    }
                }
            }
        }
        added
    }

    /// Drains every probe: one window's observations.
    pub fn drain(&mut self) -> Result<Vec<Observation>, LiveError> {
        let mut all = Vec::new();
        // Every node's probes leave the window at once, then each is drained
        // ([`NodeProbe::swap`] says why).
        let mut swapped = Vec::with_capacity(self.nodes.len());
        for n in &mut self.nodes {
            swapped.push(n.probe.swap()?);
            pause_between_nodes_for_tests();
        }
        std::thread::sleep(SWAP_SETTLE);
        for (n, old) in self.nodes.iter_mut().zip(swapped) {
            // Every watched point is in the table the window's batch carries, seen or not.
            for p in n.probe.watched_points() {
                self.points.intern(p);
            }
            all.extend(
                n.probe
                    .drain_swapped(old, &mut self.points, self.clock_offset)?,
            );
        }
        self.read_drops(true, &mut all);
        Ok(all)
    }

    /// Reads the kernel drop program's ring buffer into its window (`drain`: and hands the
    /// window's drops over, into `out`).
    fn read_drops(&mut self, drain: bool, out: &mut Vec<Observation>) {
        if let Some(drops) = &mut self.drops {
            let nodes = &self.nodes;
            // Devices the probes are not on (a pod VM's vxlan0), listed once per drain.
            let mut listed: std::collections::HashMap<String, Vec<(u32, String)>> =
                Default::default();
            let name = |node: &str, ifindex: u32| {
                let Some(n) = nodes.iter().find(|n| n.probe.node == node) else {
                    return format!("if{ifindex}");
                };
                if let Some(name) = n.probe.iface_name(ifindex) {
                    return name.to_string();
                }
                listed
                    .entry(node.to_string())
                    .or_insert_with(|| n.probe.interfaces().unwrap_or_default())
                    .iter()
                    .find(|(i, _)| *i == ifindex)
                    .map(|(_, name)| name.clone())
                    .unwrap_or_else(|| format!("if{ifindex}"))
            };
            if drain {
                out.extend(drops.drain(&mut self.points, &self.decoding, name, self.clock_offset));
            } else {
                drops.poll(&mut self.points, &self.decoding, name, self.clock_offset);
            }
        }
    }

    pub fn attached(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .flat_map(|n| {
                n.probe
                    .attached()
                    .map(|(_, name)| (n.probe.node.clone(), name.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Captures until `stop` is set or the configured duration passes; after every interval
    /// (and once more at the end) `window` gets the capture, the window's observations and
    /// its start and end (ns since the epoch).
    ///
    /// Intervals end on multiples of `interval` of wall time (the first one is shorter), and
    /// a window's end is that boundary: every agent of a cluster (clocks kept in step by NTP,
    /// as Kubernetes nodes' are) cuts its intervals at the same instants, so the aggregator
    /// puts the views of one moment from every node into the same window, as `run` does.
    pub fn run<E>(
        &mut self,
        stop: &AtomicBool,
        mut window: impl FnMut(&mut Capture, Vec<Observation>, u64, u64) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<LiveError>,
    {
        let started = Instant::now();
        let mut window_start = now_ns();
        let interval_ns = (self.interval.as_nanos() as u64).max(1);
        // Views drained after a boundary that began after it: the next window's.
        let mut carried: Vec<Observation> = Vec::new();
        self.follow_interfaces();
        loop {
            let now = now_ns();
            let boundary = (now / interval_ns + 1) * interval_ns;
            let next = Instant::now() + Duration::from_nanos(boundary - now);
            let mut last = false;
            let mut rescan_at = Instant::now() + RESCAN_EVERY;
            while Instant::now() < next {
                if stop.load(Ordering::Relaxed)
                    || self.duration.is_some_and(|d| started.elapsed() >= d)
                {
                    last = true;
                    break;
                }
                // New pods bring new veths: attach as soon as the kernel says a link changed.
                let watches: Vec<&LinkWatch> =
                    self.nodes.iter().filter_map(|n| n.probe.links()).collect();
                let wait = WAKE_EVERY.min(next.saturating_duration_since(Instant::now()));
                let news = wait_for_links(&watches, wait);
                // Read every watch (each must be drained), not just up to the first with news.
                let mut changed = false;
                if news {
                    for w in &watches {
                        changed |= w.changed();
                    }
                }
                if changed || Instant::now() >= rescan_at {
                    self.follow_interfaces();
                    rescan_at = Instant::now() + RESCAN_EVERY;
                }
                // A burst of drops, or of new flows, fills a ring buffer in far less than an
                // interval.
                self.read_drops(false, &mut Vec::new());
                for n in &mut self.nodes {
                    n.probe.read_events();
                }
            }
            let mut observations = std::mem::take(&mut carried);
            observations.extend(self.drain()?);
            // The boundary, not the drain's own time: a few microseconds later on one node
            // than another, it would put their views of the same moment in different windows.
            let end = if last {
                now_ns().max(window_start)
            } else {
                boundary
            };
            // A node leaves the window when it is drained, a little after the boundary, and
            // not at the same moment as another node (another process, another clock): what
            // began after the boundary belongs to the next window, where the nodes that left
            // first have their views of the same packets.
            if !last {
                carried.extend(observations.extract_if(.., |o| o.first_ns >= end));
            }
            // In time order across the nodes, as replay hands a window over: a window too
            // big for a plugin to hold is stitched in pieces (early drains), and a piece must
            // hold every node's views of its connections, not one node's views of all.
            sort_observations(&mut observations);
            window(self, observations, window_start, end)?;
            window_start = end;
            if last {
                return Ok(());
            }
            self.follow_interfaces();
        }
    }
}

/// `cniscope run`: live capture through the plugins in this process.
pub struct Agent {
    pub capture: Capture,
    pipeline: Pipeline,
}

impl Agent {
    /// Loads the plugins and one probe per node.
    pub fn new(
        engine: &PluginEngine,
        settings: &Settings,
        inventory: Inventory,
    ) -> Result<Agent, AgentError> {
        let mut pipeline = Pipeline::new(engine, &settings.plugins, inventory.clone())?;
        if settings.watch_plugins {
            pipeline.watch_plugins();
        }
        crate::modes::follow_kubernetes(settings, &mut pipeline, &inventory)?;
        pipeline.watch_config(settings);
        let decoding = pipeline.decoding(&settings.decoding);
        let capture = Capture::new(settings, &pipeline.plugins, decoding)?;
        Ok(Agent { capture, pipeline })
    }

    /// The topology so far, with the probes' counters in `health.drops`.
    pub fn doc(&self) -> TopologyDoc {
        let mut health = Health::default();
        self.capture.report(&mut health);
        self.pipeline.doc(health)
    }

    pub fn attached(&self) -> Vec<(String, String)> {
        self.capture.attached()
    }

    /// Runs until `stop` is set or the configured duration passes; `publish` gets the topology
    /// after every interval and once more at the end.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        mut publish: impl FnMut(&TopologyDoc),
    ) -> Result<TopologyDoc, AgentError> {
        let pipeline = &mut self.pipeline;
        self.capture
            .run(stop, |capture, observations, _start, end| {
                pipeline.window(capture.points(), &observations, end);
                let mut health = Health::default();
                capture.report(&mut health);
                publish(&pipeline.doc(health));
                Ok::<(), AgentError>(())
            })?;
        Ok(self.doc())
    }
}
