//! Live capture: the eBPF TC probes (`ebpf/probe`), one instance per node network namespace.
//!
//! Each [`NodeProbe`] loads its own copy of the probes and maps (ifindexes are per namespace),
//! attaches them with TCX links (they vanish with the process, even after SIGKILL), and is
//! drained every interval into the same [`Observation`]s the replay source produces.

pub mod drops;
pub mod netns;
pub mod sys;
pub mod test_run;

use super::aggregate::{
    CapturePoint, Direction, FlowKey, IfaceKind, Observation, PointTable, sort_observations,
};
use super::decode::{Decoding, GeneveOpt};
pub use crate::health::ProbeCounters;
use aya::maps::{Array, Map, MapData, PerCpuArray, RingBuf};
use aya::programs::LinkOrder;
use aya::programs::tc::{SchedClassifier, SchedClassifierLinkId, TcAttachOptions, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use cniscope_common::{
    CacheSlot, FlowKey as WireKey, FlowStats, ProbeConfig, counter, direction, fp, ipproto,
};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsFd;
use std::path::PathBuf;
use thiserror::Error;

/// The probes, built by `host/build.rs` from `ebpf/probe`.
static PROBE: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cniscope-probe"));

#[derive(Debug, Error)]
pub enum LiveError {
    /// The kernel refused the probes (verifier, missing BTF or TCX, not root).
    #[error("node {node}: loading the eBPF probes: {detail}")]
    Load { node: String, detail: String },
    /// Attaching to an interface failed.
    #[error("node {node}: attaching to {iface}: {detail}")]
    Attach {
        node: String,
        iface: String,
        detail: String,
    },
    /// Entering the node's network namespace failed.
    #[error("node {node}: network namespace {path}: {source}")]
    Netns {
        node: String,
        path: String,
        source: std::io::Error,
    },
    /// Reading or writing a probe map failed.
    #[error("node {node}: map {map}: {detail}")]
    Map {
        node: String,
        map: &'static str,
        detail: String,
    },
}

/// Sizes of the probe's maps.
#[derive(Clone, Debug)]
pub struct ProbeSettings {
    /// Flows per interval per node (each of the two buffers).
    pub flow_entries: u32,
    /// Ring buffer for new-flow events, in bytes (a power of two, at least a page).
    pub ringbuf_bytes: u32,
    pub decoding: Decoding,
    /// Read every header through `bpf_skb_load_bytes`, as the probe does for paged data,
    /// instead of straight from the linear part. For tests: `BPF_PROG_TEST_RUN` only makes
    /// linear packets, so this is how the helper path is checked.
    pub helper_reads_only: bool,
    /// Slots per CPU in each of the two flow caches in front of the hash maps (rounded up to
    /// a power of two). The drain reads every slot: a few microseconds each.
    pub cache_slots: u32,
    /// Attach a program that returns at once instead of the probes (it observes nothing): with
    /// `bpf_stats`, what the hook and the statistics' own clock reads cost without any work,
    /// the floor under the probes' figure (`./x bench-probe`).
    pub baseline: bool,
    /// Join each interface's TCX chain at its head (before a CNI's programs, which may
    /// redirect or drop a packet and end the chain there), else at its tail.
    pub tcx_first: bool,
}

/// The programs attached to each interface, by name and hook.
const PROBES: [(&str, TcAttachType); 2] = [
    ("cniscope_ingress", TcAttachType::Ingress),
    ("cniscope_egress", TcAttachType::Egress),
];
const BASELINE: [(&str, TcAttachType); 2] = [
    ("cniscope_baseline", TcAttachType::Ingress),
    ("cniscope_baseline", TcAttachType::Egress),
];

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            flow_entries: 262_144,
            ringbuf_bytes: 256 * 1024,
            decoding: Decoding::default(),
            helper_reads_only: false,
            cache_slots: 1024,
            baseline: false,
            tcx_first: true,
        }
    }
}

struct Attached {
    name: String,
    kind: IfaceKind,
    /// The probes' TCX links on it (program name, link): detached and closed when the
    /// interface goes, or each deleted veth would keep two file descriptors and two kernel
    /// link objects for the agent's lifetime.
    links: Vec<(&'static str, SchedClassifierLinkId)>,
    l3: bool,
}

/// How long a program that read `ACTIVE` just before a swap may still write the old buffer:
/// TC programs run for well under a microsecond; a millisecond is ample.
pub const SWAP_SETTLE: std::time::Duration = std::time::Duration::from_millis(1);

pub struct NodeProbe {
    pub node: String,
    netns: Option<PathBuf>,
    ebpf: Ebpf,
    /// One consumer for the probe's lifetime: the ring buffer's read position lives in it.
    events_rb: RingBuf<MapData>,
    attached: BTreeMap<u32, Attached>,
    /// Interfaces gone since they were attached (a deleted pod's veth), kept for the next two
    /// drains: the flows they recorded before they went are still in the maps and must be
    /// named after them, not after an ifindex (Calico names pods by their veth).
    departed: BTreeMap<u32, (Attached, u8)>,
    /// The window the probes write now (`ACTIVE`): its parity names the buffers.
    window: u32,
    /// Slots per CPU in each flow cache.
    cache_slots: u32,
    /// What is attached to each interface: the probes, or the baseline program.
    programs: [(&'static str, TcAttachType); 2],
    /// Attach at the head of each TCX chain ([`ProbeSettings::tcx_first`]).
    tcx_first: bool,
    events: u64,
    /// Observations the last drain gave: the next drain's first guess of its size, so its
    /// list is not grown by doubling (up to twice the memory a busy node's window needs).
    last_drained: usize,
    /// Link changes in the node's namespace; None when netlink is unavailable (the agent
    /// then only rescans on its timer).
    links: Option<netns::LinkWatch>,
}

/// `list` as the probe's fixed slots (zero = unused); more than fit is an error, never a
/// silent cut.
fn slots<const N: usize>(list: &[u16], what: &str) -> Result<[u16; N], String> {
    if list.len() > N {
        return Err(format!(
            "{} {what} to decode ({list:?}), the probe has room for {N}",
            list.len()
        ));
    }
    let mut out = [0u16; N];
    out[..list.len()].copy_from_slice(list);
    Ok(out)
}

impl NodeProbe {
    /// Loads the probes for one node; `netns` is the node's network namespace (None: ours).
    pub fn load(
        node: &str,
        netns: Option<PathBuf>,
        settings: &ProbeSettings,
    ) -> Result<NodeProbe, LiveError> {
        let err = |detail: String| LiveError::Load {
            node: node.to_string(),
            detail,
        };
        let helper_reads_only = u8::from(settings.helper_reads_only);
        let d = &settings.decoding;
        let cfg = ProbeConfig {
            vxlan_ports: slots(&d.vxlan, "VXLAN ports").map_err(err)?,
            geneve_ports: slots(&d.geneve, "Geneve ports").map_err(err)?,
            udp_encap_ports: slots(&d.udp_encap, "UDP encapsulation ports").map_err(err)?,
            geneve_classes: slots(&d.geneve_classes, "Geneve option classes").map_err(err)?,
        };
        let cache_slots = settings.cache_slots;
        if !cache_slots.is_power_of_two() {
            return Err(err(format!(
                "{cache_slots} flow cache slots: the probe needs a power of two"
            )));
        }
        let cache_mask = cache_slots - 1;
        let mut ebpf = EbpfLoader::new()
            .set_global("HELPER_READS_ONLY", &helper_reads_only, true)
            .set_global("CACHE_MASK", &cache_mask, true)
            .set_global("PROBE_CONFIG", &cfg, true)
            .set_max_entries("CACHE", 2 * cache_slots)
            .set_max_entries("FLOWS_A", settings.flow_entries)
            .set_max_entries("FLOWS_B", settings.flow_entries)
            .set_max_entries("EVENTS", settings.ringbuf_bytes)
            .load(PROBE)
            .map_err(|e| err(format!("{e}")))?;
        let programs = if settings.baseline { BASELINE } else { PROBES };
        for name in program_names(&programs) {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| err(format!("program {name} missing")))?
                .try_into()
                .map_err(|e| err(format!("{name}: {e}")))?;
            prog.load().map_err(|e| err(format!("{name}: {e:#}")))?;
        }
        let events_rb = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .ok_or_else(|| err("map EVENTS missing".into()))?,
        )
        .map_err(|e| err(format!("EVENTS: {e}")))?;
        let links = match netns::run_in(netns.as_deref(), netns::LinkWatch::open) {
            Ok(Ok(w)) => Some(w),
            Ok(Err(e)) | Err(e) => {
                tracing::warn!(
                    node,
                    "no netlink link events ({e}): interfaces found by rescans only"
                );
                None
            }
        };
        Ok(NodeProbe {
            node: node.to_string(),
            links,
            netns,
            ebpf,
            events_rb,
            attached: BTreeMap::new(),
            departed: BTreeMap::new(),
            window: 0,
            cache_slots,
            tcx_first: settings.tcx_first,
            programs,
            events: 0,
            last_drained: 0,
        })
    }

    /// The node's link-change watch, if netlink is available.
    pub fn links(&self) -> Option<&netns::LinkWatch> {
        self.links.as_ref()
    }

    /// Interfaces of the node's namespace, as (ifindex, name).
    pub fn interfaces(&self) -> Result<Vec<(u32, String)>, LiveError> {
        netns::run_in(self.netns.as_deref(), netns::interfaces)
            .map_err(|source| self.netns_err(source))?
            .map_err(|source| self.netns_err(source))
    }

    fn netns_err(&self, source: std::io::Error) -> LiveError {
        LiveError::Netns {
            node: self.node.clone(),
            path: self
                .netns
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(own)".into()),
            source,
        }
    }

    /// Attaches both probes to `iface` (ingress and egress, TCX). Idempotent per ifindex.
    pub fn attach(
        &mut self,
        ifindex: u32,
        iface: &str,
        kind: IfaceKind,
    ) -> Result<bool, LiveError> {
        if self.attached.contains_key(&ifindex) {
            return Ok(false);
        }
        let attach_err = |detail: String| LiveError::Attach {
            node: self.node.clone(),
            iface: iface.to_string(),
            detail,
        };
        let l3 = netns::run_in(self.netns.as_deref(), || netns::is_l3_device(iface))
            .and_then(|r| r)
            .map_err(|e| attach_err(format!("device type: {e}")))?;
        if l3 {
            if ifindex >= cniscope_common::MAX_L3_IFINDEX {
                return Err(attach_err(format!(
                    "ifindex {ifindex} of a layer-3 device is past the probe's table"
                )));
            }
            let mut l3_ifaces: Array<&mut MapData, u8> = Array::try_from(
                self.ebpf
                    .map_mut("L3_IFACES")
                    .expect("L3_IFACES is in the probe"),
            )
            .map_err(|e| attach_err(e.to_string()))?;
            l3_ifaces
                .set(ifindex, 1, 0)
                .map_err(|e| attach_err(e.to_string()))?;
        }
        let netns_path = self.netns.clone();
        let ebpf = &mut self.ebpf;
        let programs = self.programs;
        let order = if self.tcx_first {
            LinkOrder::first
        } else {
            LinkOrder::last
        };
        let mut links = Vec::new();
        let result: Result<(), String> = netns::run_in(netns_path.as_deref(), || {
            for (name, attach_type) in programs {
                let prog: &mut SchedClassifier = ebpf
                    .program_mut(name)
                    .expect("loaded")
                    .try_into()
                    .expect("a classifier");
                let link = prog
                    .attach_with_options(iface, attach_type, TcAttachOptions::TcxOrder(order()))
                    .map_err(|e| format!("{name}: {e:#}"))?;
                links.push((name, link));
            }
            Ok(())
        })
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        if let Err(e) = result {
            let err = attach_err(e);
            // Half attached (the ingress probe, not the egress one): nothing stays behind.
            self.detach(ifindex, iface, l3, links);
            return Err(err);
        }
        self.attached.insert(
            ifindex,
            Attached {
                name: iface.to_string(),
                kind,
                links,
                l3,
            },
        );
        tracing::info!(node = %self.node, iface, ifindex, "probes attached");
        Ok(true)
    }

    /// Forgets interfaces that are gone: their links are detached and closed (the kernel
    /// already took the programs off the deleted device, but the link objects and our file
    /// descriptors live until closed), and their names kept a little for the flows they
    /// recorded.
    pub fn forget_missing(&mut self, present: &[(u32, String)]) {
        let gone: Vec<u32> = self
            .attached
            .iter()
            .filter(|(ifindex, a)| !present.iter().any(|(i, n)| i == *ifindex && *n == a.name))
            .map(|(i, _)| *i)
            .collect();
        for ifindex in gone {
            if let Some(mut a) = self.attached.remove(&ifindex) {
                let links = std::mem::take(&mut a.links);
                self.detach(ifindex, &a.name, a.l3, links);
                self.departed.insert(ifindex, (a, 2));
            }
        }
    }

    /// Closes an interface's links and clears its layer-3 mark (the ifindex may come back as
    /// another kind of device).
    fn detach(
        &mut self,
        ifindex: u32,
        iface: &str,
        l3: bool,
        links: Vec<(&'static str, SchedClassifierLinkId)>,
    ) {
        for (name, link) in links {
            let prog: &mut SchedClassifier = self
                .ebpf
                .program_mut(name)
                .expect("loaded")
                .try_into()
                .expect("a classifier");
            // A link whose device is gone is already off it; detaching closes our end.
            if let Err(e) = prog.detach(link) {
                tracing::debug!(node = %self.node, iface, "detaching {name}: {e}");
            }
        }
        if l3
            && let Some(map) = self.ebpf.map_mut("L3_IFACES")
            && let Ok(mut l3) = Array::<&mut MapData, u8>::try_from(map)
        {
            let _ = l3.set(ifindex, 0, 0);
        }
    }

    /// The name of an interface the probes are on (or were on until lately).
    pub fn iface_name(&self, ifindex: u32) -> Option<&str> {
        self.attached
            .get(&ifindex)
            .or_else(|| self.departed.get(&ifindex).map(|(a, _)| a))
            .map(|a| a.name.as_str())
    }

    /// The node's network namespace (None: the agent's own).
    pub fn netns(&self) -> Option<&std::path::Path> {
        self.netns.as_deref()
    }

    /// TCX links held open (two per attached interface).
    pub fn links_open(&self) -> usize {
        self.attached.values().map(|a| a.links.len()).sum()
    }

    pub fn attached(&self) -> impl Iterator<Item = (&u32, &str)> {
        self.attached.iter().map(|(i, a)| (i, a.name.as_str()))
    }

    /// Both directions of every interface the probes are on: watched points, whether or not
    /// a packet crossed them (a path verdict tells a point that saw nothing from one nobody
    /// watches).
    pub fn watched_points(&self) -> impl Iterator<Item = CapturePoint> + '_ {
        self.attached.values().flat_map(|a| {
            [Direction::Ingress, Direction::Egress]
                .map(|direction| self.capture_point(a.name.clone(), a.kind, direction))
        })
    }

    /// Swaps the flow buffers and drains the one the probes just stopped writing.
    /// `clock_offset_ns` turns the probes' monotonic times into Unix times.
    pub fn drain(
        &mut self,
        points: &mut PointTable,
        clock_offset_ns: i64,
    ) -> Result<Vec<Observation>, LiveError> {
        let old = self.swap()?;
        std::thread::sleep(SWAP_SETTLE);
        self.drain_swapped(old, points, clock_offset_ns)
    }

    /// Reads the new-flow events the ring buffer holds. They are counted here (the flow maps
    /// carry the same facts, merged per CPU). The capture reads them every 50 ms, not once
    /// an interval: a busy node's new flows of a whole interval would not fit.
    pub fn read_events(&mut self) {
        while let Some(item) = self.events_rb.next() {
            if item.len() >= std::mem::size_of::<cniscope_common::NewFlow>() {
                self.events += 1;
            }
        }
    }

    /// Points the probes at the other flow buffers; returns the window they stopped writing,
    /// for [`NodeProbe::drain_swapped`] once [`SWAP_SETTLE`] has passed. A process capturing
    /// several nodes swaps them all before draining any: draining one node takes
    /// milliseconds, and a connection that began in between would have its first node's views
    /// in the next window and the other node's in this one (its service door, seen only on
    /// the client's node, a window late: the connection counted as a direct one).
    pub fn swap(&mut self) -> Result<u32, LiveError> {
        let old = self.window;
        let next = old.wrapping_add(1);
        let set = Array::<&mut MapData, u32>::try_from(
            self.ebpf.map_mut("ACTIVE").expect("ACTIVE is in the probe"),
        )
        .and_then(|mut active| active.set(0, next, 0));
        if let Err(e) = set {
            return Err(LiveError::Map {
                node: self.node.clone(),
                map: "ACTIVE",
                detail: e.to_string(),
            });
        }
        self.window = next;
        Ok(old)
    }

    /// Drains window `old`'s buffers, which [`NodeProbe::swap`] took from the probes at least
    /// [`SWAP_SETTLE`] ago.
    pub fn drain_swapped(
        &mut self,
        old: u32,
        points: &mut PointTable,
        clock_offset_ns: i64,
    ) -> Result<Vec<Observation>, LiveError> {
        let map_err = |map: &'static str, e: String| LiveError::Map {
            node: self.node.clone(),
            map,
            detail: e,
        };
        let name = if old & 1 == 0 { "FLOWS_A" } else { "FLOWS_B" };
        // The cache's half for that window.
        let half = (old & 1) * self.cache_slots;
        // The cache's flows (at most its slots on each CPU), each with its per-CPU slots: a
        // flow whose slot was taken on one CPU may be in the hash map too.
        let mut cached: HashMap<WireKey, Vec<FlowStats>> = HashMap::new();
        {
            let cache: PerCpuArray<&mut MapData, CacheSlot> = PerCpuArray::try_from(
                self.ebpf
                    .map_mut("CACHE")
                    .expect("the cache is in the probe"),
            )
            .map_err(|e| map_err("CACHE", e.to_string()))?;
            for index in half..half + self.cache_slots {
                match cache.get(&index, 0) {
                    Ok(per_cpu) => {
                        // Slots of older windows are stale: the probe reuses them as empty.
                        for slot in per_cpu.iter() {
                            if slot.generation == old && slot.stats.packets > 0 {
                                cached.entry(slot.key).or_default().push(slot.stats);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(node = %self.node, "reading CACHE: {e}"),
                }
            }
        }
        let mut out = Vec::with_capacity(self.last_drained + self.last_drained / 16);
        // Each (interface, direction) named once per drain, not once per flow.
        let mut point_ids: HashMap<(u32, u8), u16> = HashMap::new();
        let mut emit = |probe: &NodeProbe, key: &WireKey, stats: &[FlowStats]| {
            let point = *point_ids
                .entry((key.ifindex, key.direction))
                .or_insert_with(|| probe.point_of(points, key));
            observations(point, key, stats, clock_offset_ns, &mut out);
        };
        // The hash map's flows, a batch at a time, deleted as they are read: one entry per
        // flow (the CPUs share it), merged with the flow's cache slots if it has any.
        let this = &*self;
        let Some(Map::HashMap(flows)) = this.ebpf.map(name) else {
            return Err(map_err(
                "FLOWS",
                format!("{name} is not the probe's hash map"),
            ));
        };
        let drained =
            sys::drain::<WireKey, FlowStats>(flows.fd().as_fd(), |key, stats| {
                match cached.remove(key) {
                    Some(mut slots) => {
                        slots.push(*stats);
                        emit(this, key, &slots);
                    }
                    None => emit(this, key, std::slice::from_ref(stats)),
                }
            });
        // What was read is already deleted from the map: keep it. What was not stays there
        // and comes out at this buffer's next drain.
        if let Err(e) = drained {
            tracing::warn!(node = %this.node, "draining {name}: {e}");
        }
        for (key, slots) in &cached {
            emit(this, key, slots);
        }
        sort_observations(&mut out);
        self.last_drained = out.len();
        self.departed.retain(|_, (_, drains_left)| {
            *drains_left -= 1;
            *drains_left > 0
        });
        self.read_events();
        Ok(out)
    }

    /// The capture point of a drained flow: its interface (attached, or departed since) and
    /// direction.
    fn point_of(&self, points: &mut PointTable, key: &WireKey) -> u16 {
        // Not attached by us (BPF_PROG_TEST_RUN runs on the loopback): named by ifindex.
        let known = self
            .attached
            .get(&key.ifindex)
            .or_else(|| self.departed.get(&key.ifindex).map(|(a, _)| a));
        let (iface, kind) = match known {
            Some(a) => (a.name.clone(), a.kind),
            None => (format!("if{}", key.ifindex), IfaceKind::Other),
        };
        let direction = if key.direction == direction::EGRESS {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        points.intern(self.capture_point(iface, kind, direction))
    }

    /// One direction of one of this node's interfaces.
    fn capture_point(&self, iface: String, kind: IfaceKind, direction: Direction) -> CapturePoint {
        CapturePoint {
            node: self.node.clone(),
            iface,
            kind,
            direction,
            drop_reason: String::new(),
        }
    }

    pub fn counters(&self) -> Result<ProbeCounters, LiveError> {
        let map = self.ebpf.map("COUNTERS").expect("COUNTERS is in the probe");
        let arr: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(|e| LiveError::Map {
                node: self.node.clone(),
                map: "COUNTERS",
                detail: e.to_string(),
            })?;
        let sum = |i: u32| arr.get(&i, 0).map(|v| v.iter().sum::<u64>()).unwrap_or(0);
        let (mut runs, mut run_ns) = (0, 0);
        for name in program_names(&self.programs) {
            if let Some(Ok(info)) = self.ebpf.program(name).map(|p| p.info()) {
                runs += info.run_count();
                run_ns += info.run_time().as_nanos() as u64;
            }
        }
        Ok(ProbeCounters {
            program_runs: runs,
            program_run_ns: run_ns,
            packets: sum(counter::PACKETS),
            ringbuf_full: sum(counter::RINGBUF_FULL),
            map_full: sum(counter::MAP_FULL),
            parse_failed: sum(counter::PARSE_FAILED),
            not_ip: sum(counter::NOT_IP),
            reopen_merged: sum(counter::REOPEN_MERGED),
            new_flow_events: self.events,
        })
    }

    /// The program attached at ingress (the probe, or the baseline), for `BPF_PROG_TEST_RUN`.
    pub fn ingress_program(&self) -> &SchedClassifier {
        self.ebpf
            .program(self.programs[0].0)
            .expect("loaded")
            .try_into()
            .expect("a classifier")
    }

    /// What the kernel charges for each of the probe's maps now (`memlock` in the map's
    /// fdinfo: its own accounting of the map's memory, elements in use for maps that are not
    /// preallocated), by map name. The ring buffer, taken for reading, is left out.
    pub fn map_memory(&self) -> Vec<(String, u64)> {
        self.ebpf
            .maps()
            .filter_map(|(name, map)| {
                let data = match map {
                    Map::Array(d)
                    | Map::PerCpuArray(d)
                    | Map::HashMap(d)
                    | Map::PerCpuHashMap(d)
                    | Map::RingBuf(d) => d,
                    _ => return None,
                };
                Some((name.to_string(), sys::memlock(data.fd().as_fd())?))
            })
            .collect()
    }
}

/// Each program once (the baseline is one program on both hooks).
fn program_names(programs: &[(&'static str, TcAttachType); 2]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = programs.iter().map(|(n, _)| *n).collect();
    names.dedup();
    names
}

fn addr(b: &[u8; 16]) -> u128 {
    u128::from_be_bytes(*b)
}

fn mac(b: &[u8; 6]) -> u64 {
    b.iter().fold(0u64, |acc, x| (acc << 8) | *x as u64)
}

/// Merges one flow's records (its cache slot on each CPU that held it, its shared hash map
/// entry) into its observations: counters add up, the first packet (earliest record) gives
/// the fingerprint, unless a record saw the handshake (as the replay aggregator). Records of
/// two connections on one key (each CPU's slot holds one, `fp::opens_another`) are two
/// observations: one per TCP handshake, each record with the latest handshake that began at
/// or before it; UDP records cut where one begins after `fp::UDP_QUIET_NS` of silence.
pub fn observations(
    point: u16,
    key: &WireKey,
    records: &[FlowStats],
    clock_offset_ns: i64,
    out: &mut Vec<Observation>,
) {
    let used = || records.iter().filter(|s| s.packets > 0);
    let starts = connection_starts(key.protocol, records);
    if starts.len() <= 1 {
        out.extend(observation(
            point,
            key,
            key.generation,
            used(),
            clock_offset_ns,
        ));
        return;
    }
    let of = |s: &FlowStats| {
        starts
            .iter()
            .rposition(|&(t, isn)| match isn {
                Some(isn) if fp::is_handshake(s.fp_kind) => s.fingerprint == isn,
                _ => t <= s.first_ns,
            })
            .unwrap_or(0)
    };
    for n in 0..starts.len() {
        let generation = key.generation.saturating_add(n as u8);
        out.extend(observation(
            point,
            key,
            generation,
            used().filter(|s| of(s) == n),
            clock_offset_ns,
        ));
    }
}

/// Where the connections in one key's records begin, in time order: (time, the handshake's
/// ISN for TCP). One entry when the records are one connection (the usual case).
fn connection_starts(protocol: u8, records: &[FlowStats]) -> Vec<(u64, Option<u32>)> {
    let mut used: Vec<&FlowStats> = records.iter().filter(|s| s.packets > 0).collect();
    if used.len() <= 1 {
        return vec![(0, None)];
    }
    used.sort_unstable_by_key(|s| s.first_ns);
    let mut starts: Vec<(u64, Option<u32>)> = Vec::new();
    match protocol {
        ipproto::TCP => {
            for s in &used {
                if !fp::is_handshake(s.fp_kind) {
                    continue;
                }
                match starts.iter_mut().find(|h| h.1 == Some(s.fingerprint)) {
                    Some(h) => h.0 = h.0.min(s.first_ns),
                    None => starts.push((s.first_ns, Some(s.fingerprint))),
                }
            }
            starts.sort_unstable();
            // Records from well before the first handshake are the connection before it.
            let first = starts.first().map_or(0, |h| h.0);
            if starts.is_empty()
                || used.iter().any(|s| {
                    !fp::is_handshake(s.fp_kind)
                        && s.first_ns.saturating_add(fp::SYN_REORDER_NS) < first
                })
            {
                starts.insert(0, (0, None));
            }
        }
        ipproto::UDP => {
            starts.push((0, None));
            let mut ended = used[0].last_ns.max(used[0].first_ns);
            for s in &used[1..] {
                if s.first_ns > ended.saturating_add(fp::UDP_QUIET_NS) {
                    starts.push((s.first_ns, None));
                }
                ended = ended.max(s.last_ns.max(s.first_ns));
            }
        }
        _ => starts.push((0, None)),
    }
    starts
}

/// One observation of `key` from its records (already chosen as one connection's).
fn observation<'a>(
    point: u16,
    key: &WireKey,
    generation: u8,
    records: impl Iterator<Item = &'a FlowStats> + Clone,
    clock_offset_ns: i64,
) -> Option<Observation> {
    let used = || records.clone();
    let first = used().min_by_key(|s| s.first_ns)?;
    let syn = used()
        .filter(|s| fp::is_handshake(s.fp_kind))
        .min_by_key(|s| s.first_ns);
    let fp_from = syn.unwrap_or(first);
    let to_unix = |t: u64| t.saturating_add_signed(clock_offset_ns);
    let geneve = if first.geneve_len > 0 || first.geneve_class != 0 || first.geneve_type != 0 {
        vec![GeneveOpt {
            class: first.geneve_class,
            kind: first.geneve_type,
            data: first.geneve_data[..(first.geneve_len as usize).min(8)].to_vec(),
        }]
    } else {
        Vec::new()
    };
    Some(Observation {
        key: FlowKey {
            point,
            src: addr(&key.src.0),
            dst: addr(&key.dst.0),
            protocol: key.protocol,
            src_port: key.src_port,
            dst_port: key.dst_port,
            tunnel: key.tunnel,
            vni: key.vni,
            outer_src: addr(&key.outer_src.0),
            outer_dst: addr(&key.outer_dst.0),
            outer_src_port: key.outer_src_port,
            outer_dst_port: key.outer_dst_port,
        },
        src_mac: mac(&first.src_mac),
        dst_mac: mac(&first.dst_mac),
        outer_src_mac: mac(&first.outer_src_mac),
        outer_dst_mac: mac(&first.outer_dst_mac),
        tcp_flags: used().fold(0, |f, s| f | s.tcp_flags),
        fp_kind: fp_from.fp_kind,
        generation,
        fingerprint: fp_from.fingerprint,
        packets: used().map(|s| s.packets).sum(),
        bytes: used().map(|s| s.bytes).sum(),
        first_ns: to_unix(first.first_ns),
        // Later packets carry the time to the tick (the probe's `tick_now`), which can lag a
        // slot's first packet, timed precisely, by up to one tick.
        last_ns: to_unix(used().map(|s| s.last_ns.max(s.first_ns)).max().unwrap_or(0)),
        geneve,
    })
}

/// Unix time minus the monotonic clock the probes stamp with (`bpf_ktime_get_ns`).
pub fn clock_offset_ns() -> i64 {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        first_ns: u64,
        last_ns: u64,
        fp_kind: u8,
        fingerprint: u32,
        packets: u64,
    ) -> FlowStats {
        FlowStats {
            first_ns,
            last_ns,
            fp_kind,
            fingerprint,
            packets,
            bytes: packets * 60,
            ..FlowStats::default()
        }
    }

    fn split(protocol: u8, records: &[FlowStats]) -> Vec<(u32, u64)> {
        let key = WireKey {
            protocol,
            ..WireKey::default()
        };
        let mut out = Vec::new();
        observations(0, &key, records, 0, &mut out);
        let mut got: Vec<(u32, u64)> = out.iter().map(|o| (o.fingerprint, o.packets)).collect();
        got.sort();
        got
    }

    /// One key's records from two CPUs' cache slots and the hash map: one connection's are
    /// merged; two connections' (two handshakes, or the end of one before a handshake, or UDP
    /// after a silence) are two observations, as replay makes them.
    #[test]
    fn records_of_two_connections_on_one_key_are_two_observations() {
        let ms = 1_000_000;
        let (syn, seq) = (fp::TCP_SYN_ISN, fp::TCP_SEQ);
        // One connection on two CPUs: its handshake on one, later packets on the other.
        let one = [record(0, ms, syn, 7, 3), record(2 * ms, 3 * ms, seq, 9, 4)];
        assert_eq!(split(ipproto::TCP, &one), vec![(7, 7)]);
        // Two handshakes, each CPU's slot one connection; the map's packets go with the
        // handshake they follow.
        let two = [
            record(0, ms, syn, 7, 3),
            record(900 * ms, 901 * ms, syn, 70, 2),
            record(950 * ms, 960 * ms, seq, 71, 5),
        ];
        assert_eq!(split(ipproto::TCP, &two), vec![(7, 3), (70, 7)]);
        // The end of a connection from an earlier interval, then a new one.
        let tail = [
            record(0, ms, seq, 3, 2),
            record(500 * ms, 501 * ms, syn, 70, 2),
        ];
        assert_eq!(split(ipproto::TCP, &tail), vec![(3, 2), (70, 2)]);
        // UDP: a silence longer than fp::UDP_QUIET_NS cuts; a shorter one does not.
        let id = fp::IPV4_ID;
        let udp = [
            record(0, ms, id, 1, 2),
            record(1_500 * ms, 1_501 * ms, id, 2, 2),
        ];
        assert_eq!(split(ipproto::UDP, &udp), vec![(1, 2), (2, 2)]);
        let near = [
            record(0, ms, id, 1, 2),
            record(500 * ms, 501 * ms, id, 2, 2),
        ];
        assert_eq!(split(ipproto::UDP, &near), vec![(1, 4)]);
    }
}
