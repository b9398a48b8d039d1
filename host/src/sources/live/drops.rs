//! Kernel drops: the `kfree_skb` program (`ebpf/probe/src/drops.rs`), loaded once per agent
//! for every node namespace it watches. Each packet the kernel frees there without delivering
//! it, for a reason not filtered out ([`BENIGN`]), comes up with its headers; [`DropWatch::drain`]
//! decodes them with the replay decoder (the probes' rules, equivalence-tested) into
//! observations at `kernel-drop` points (the device, the reason), which the plugins join to
//! their connection like any view: its `path.drops`.
//!
//! Nothing about the kernel is compiled in: `sk_buff`'s, `net_device`'s and `net`'s layouts,
//! `kfree_skb`'s argument order and `enum skb_drop_reason`'s values all come from the running
//! kernel's BTF ([`KernelLayout::from_btf`]): they differ between kernels.

use super::super::aggregate::{
    Aggregator, CapturePoint, Direction, IfaceKind, Observation, PointTable,
};
use super::super::decode::{Decoding, LinkType, decode};
use crate::health::{Health, KernelDropHealth};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::RawTracePoint;
use aya::{Ebpf, EbpfLoader};
use btfparse::{Offset, TypeInformation, TypeVariant};
use cniscope_common::{DropEvent, DropLayout, MAX_DROP_REASON, drop_counter};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The drop program, built by `host/build.rs` from `ebpf/probe`.
static DROPS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cniscope-drops"));

/// Where the running kernel describes itself.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Reasons that are no loss of a connection's packets: not dropped at all, freed without a
/// reason given (most of the kernel's own housekeeping frees), a segment or fragment the
/// receiver already had, a closing socket's queues.
pub const BENIGN: &[&str] = &[
    "NOT_DROPPED_YET",
    "CONSUMED",
    "NOT_SPECIFIED",
    "TCP_OLD_DATA",
    "TCP_OLD_ACK",
    "TCP_OLD_SEQUENCE",
    "DUP_FRAG",
    "QUEUE_PURGE",
];

#[derive(Debug, Error)]
pub enum DropsError {
    /// The kernel's BTF could not be read, or lacks what the program needs.
    #[error("{path}: {detail}")]
    Btf { path: String, detail: String },
    #[error("loading the kernel drop program: {0}")]
    Load(String),
    #[error("attaching the kernel drop program to kfree_skb: {0}")]
    Attach(String),
    #[error("node {node}: network namespace {path}: {source}")]
    Netns {
        node: String,
        path: String,
        source: std::io::Error,
    },
}

/// What the drop program needs to know of this kernel.
#[derive(Clone, Debug)]
pub struct KernelLayout {
    pub layout: DropLayout,
    /// `enum skb_drop_reason`, by value, without its `SKB_DROP_REASON_` / `SKB_` prefix.
    pub reasons: BTreeMap<u32, String>,
}

/// A BTF file in memory, for btfparse.
struct Bytes(Vec<u8>);

impl btfparse::Readable for Bytes {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = start
            .checked_add(buffer.len())
            .and_then(|end| self.0.get(start..end))
            .ok_or_else(|| {
                btfparse::Error::new(btfparse::ErrorKind::IOError, "read past the end")
            })?;
        buffer.copy_from_slice(src);
        Ok(())
    }
}

impl KernelLayout {
    /// Reads the layout from the BTF file at `path` (the kernel's: [`KERNEL_BTF`]).
    pub fn from_btf(path: &Path) -> Result<KernelLayout, DropsError> {
        let err = |detail: String| DropsError::Btf {
            path: path.display().to_string(),
            detail,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let types = TypeInformation::new(&Bytes(bytes)).map_err(|e| err(format!("{e:?}")))?;
        let id = |name: &str| {
            types
                .id_of(name)
                .ok_or_else(|| err(format!("no type {name}")))
        };
        let offset = |ty: &str, path: &str| -> Result<u32, DropsError> {
            match types.offset_of(id(ty)?, path) {
                Ok((_, Offset::ByteOffset(o))) => Ok(o),
                Ok((_, Offset::BitOffsetAndSize(..))) => {
                    Err(err(format!("{ty}.{path} is a bitfield")))
                }
                Err(e) => Err(err(format!("{ty}.{path}: {e:?}"))),
            }
        };
        let size = |ty: &str, path: &str| -> Result<usize, DropsError> {
            let (tid, _) = types
                .offset_of(id(ty)?, path)
                .map_err(|e| err(format!("{ty}.{path}: {e:?}")))?;
            types
                .size_of(tid)
                .map_err(|e| err(format!("{ty}.{path}: {e:?}")))
        };
        let (skb_arg, reason_arg) = tracepoint_args(&types).map_err(err)?;
        let tail_size = size("sk_buff", "tail")?;
        let layout = DropLayout {
            skb_arg,
            reason_arg,
            skb_head: offset("sk_buff", "head")?,
            skb_tail: offset("sk_buff", "tail")?,
            skb_network_header: offset("sk_buff", "network_header")?,
            skb_protocol: offset("sk_buff", "protocol")?,
            skb_dev: offset("sk_buff", "dev")?,
            skb_sk: offset("sk_buff", "sk")?,
            skb_len: offset("sk_buff", "len")?,
            dev_ifindex: offset("net_device", "ifindex")?,
            dev_net: offset("net_device", "nd_net.net")?,
            sk_net: offset("sock", "__sk_common.skc_net.net")?,
            net_inum: offset("net", "ns.inum")?,
            // An offset from `head` (u32) on 64-bit kernels, a pointer elsewhere.
            tail_is_offset: u32::from(tail_size == 4),
        };
        if size("sk_buff", "network_header")? != 2 {
            return Err(err("sk_buff.network_header is not 16 bits".into()));
        }
        let reasons = match types.from_id(id("skb_drop_reason")?) {
            Some(TypeVariant::Enum(e)) => e
                .named_value_list()
                .iter()
                .map(|v| {
                    let value = match v.value {
                        btfparse::Integer32Value::Unsigned(u) => u,
                        btfparse::Integer32Value::Signed(s) => s as u32,
                    };
                    (value, reason_name(&v.name))
                })
                .collect(),
            _ => return Err(err("skb_drop_reason is not an enum".into())),
        };
        Ok(KernelLayout { layout, reasons })
    }

    /// The values of the [`BENIGN`] reasons this kernel has.
    pub fn benign_values(&self) -> Vec<u32> {
        self.reasons
            .iter()
            .filter(|(_, name)| BENIGN.contains(&name.as_str()))
            .map(|(v, _)| *v)
            .collect()
    }

    /// A reason's name; a value this kernel's enum does not list (a subsystem's code, in the
    /// top 16 bits) by number.
    pub fn name(&self, reason: u32) -> String {
        match self.reasons.get(&reason) {
            Some(n) => n.clone(),
            None if reason >> 16 != 0 => {
                format!("SUBSYS_{}_{}", reason >> 16, reason & 0xffff)
            }
            None => format!("REASON_{reason}"),
        }
    }
}

/// A drop that lost nothing: an echo reply freed by the ICMP layer for want of a ping socket
/// (NO_SOCKET) after a raw socket (`ping` as root) already took its copy.
fn delivered_anyway(reason: &str, d: &super::super::decode::Decoded) -> bool {
    use cniscope_common::ipproto;
    let i = &d.inner;
    reason == "NO_SOCKET"
        && ((i.protocol == ipproto::ICMP && i.src_port == 0)
            || (i.protocol == ipproto::ICMPV6 && i.src_port == 129))
}

/// "SKB_DROP_REASON_NETFILTER_DROP" -> "NETFILTER_DROP", "SKB_CONSUMED" -> "CONSUMED".
fn reason_name(enum_name: &str) -> String {
    enum_name
        .strip_prefix("SKB_DROP_REASON_")
        .or_else(|| enum_name.strip_prefix("SKB_"))
        .unwrap_or(enum_name)
        .to_string()
}

/// Which of `kfree_skb`'s arguments (as a raw tracepoint numbers them: the prototype's first,
/// a context pointer, is not one) is the `sk_buff *` and which the reason, from the
/// `btf_trace_kfree_skb` prototype. The program reads only the first three.
fn tracepoint_args(types: &TypeInformation) -> Result<(u32, u32), String> {
    let proto = types
        .id_of("btf_trace_kfree_skb")
        .ok_or("no kfree_skb tracepoint in BTF (a kernel before 5.17 has no drop reasons)")?;
    let proto = match resolve(types, proto) {
        Some(TypeVariant::Ptr(p)) => *p.tid(),
        _ => return Err("btf_trace_kfree_skb is not a function pointer".into()),
    };
    let Some(TypeVariant::FuncProto(f)) = types.from_id(proto) else {
        return Err("btf_trace_kfree_skb is not a function pointer".into());
    };
    let (mut skb, mut reason) = (None, None);
    for (i, p) in f.parameter_list().iter().enumerate().skip(1) {
        let arg = (i - 1) as u32;
        match resolve(types, p.tid()) {
            Some(TypeVariant::Ptr(ptr)) => {
                if let Some(TypeVariant::Struct(s)) = resolve(types, *ptr.tid())
                    && s.name().as_deref() == Some("sk_buff")
                {
                    skb.get_or_insert(arg);
                }
            }
            Some(TypeVariant::Enum(e)) if e.name().as_deref() == Some("skb_drop_reason") => {
                reason.get_or_insert(arg);
            }
            _ => {}
        }
    }
    match (skb, reason) {
        (Some(s), Some(r)) if s <= 2 && r <= 2 => Ok((s, r)),
        (Some(_), Some(_)) => Err("kfree_skb's skb or reason is past its third argument".into()),
        _ => Err("kfree_skb has no sk_buff or no drop reason argument".into()),
    }
}

/// `tid` through typedefs and qualifiers.
fn resolve(types: &TypeInformation, mut tid: u32) -> Option<TypeVariant> {
    for _ in 0..16 {
        let t = types.from_id(tid)?;
        tid = match &t {
            TypeVariant::Typedef(x) => *x.tid(),
            TypeVariant::Const(x) => *x.tid(),
            TypeVariant::Volatile(x) => *x.tid(),
            TypeVariant::Restrict(x) => *x.tid(),
            TypeVariant::TypeTag(x) => *x.tid(),
            _ => return Some(t),
        };
    }
    None
}

/// The inode number of a network namespace file (what the kernel calls `ns.inum`).
fn netns_inum(node: &str, netns: Option<&Path>) -> Result<u32, DropsError> {
    let path = netns.unwrap_or(Path::new("/proc/self/ns/net"));
    std::fs::metadata(path)
        .map(|m| m.ino() as u32)
        .map_err(|source| DropsError::Netns {
            node: node.to_string(),
            path: path.display().to_string(),
            source,
        })
}

/// The drop program, attached, and what it recorded.
pub struct DropWatch {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    kernel: KernelLayout,
    /// Namespace inode -> node.
    nodes: HashMap<u32, String>,
    /// Drops read since the last drain: the ring buffer is read every few tens of
    /// milliseconds ([`DropWatch::poll`]), so a burst of drops does not overflow it.
    pending: Aggregator,
    health: KernelDropHealth,
}

impl DropWatch {
    /// Loads the program for `nodes` (name, namespace; None: ours) and attaches it.
    pub fn load(
        nodes: &[(String, Option<PathBuf>)],
        ringbuf_bytes: u32,
    ) -> Result<DropWatch, DropsError> {
        let kernel = KernelLayout::from_btf(Path::new(KERNEL_BTF))?;
        let load = |e: String| DropsError::Load(e);
        let mut ebpf = EbpfLoader::new()
            .set_global("DROP_LAYOUT", &kernel.layout, true)
            .set_max_entries("DROP_EVENTS", ringbuf_bytes)
            .load(DROPS)
            .map_err(|e| load(e.to_string()))?;
        {
            let mut ignored: aya::maps::Array<&mut MapData, u8> = aya::maps::Array::try_from(
                ebpf.map_mut("IGNORED_REASONS")
                    .ok_or_else(|| load("map IGNORED_REASONS missing".into()))?,
            )
            .map_err(|e| load(e.to_string()))?;
            for v in kernel.benign_values() {
                if v < MAX_DROP_REASON {
                    ignored.set(v, 1, 0).map_err(|e| load(e.to_string()))?;
                }
            }
        }
        let mut by_inum = HashMap::new();
        {
            let mut watched: BpfHashMap<&mut MapData, u32, u8> = BpfHashMap::try_from(
                ebpf.map_mut("WATCHED_NETNS")
                    .ok_or_else(|| load("map WATCHED_NETNS missing".into()))?,
            )
            .map_err(|e| load(e.to_string()))?;
            for (node, netns) in nodes {
                let inum = netns_inum(node, netns.as_deref())?;
                watched
                    .insert(inum, 1, 0)
                    .map_err(|e| load(e.to_string()))?;
                by_inum.insert(inum, node.clone());
            }
        }
        let prog: &mut RawTracePoint = ebpf
            .program_mut("cniscope_kfree_skb")
            .ok_or_else(|| load("program cniscope_kfree_skb missing".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| load(e.to_string()))?;
        prog.load().map_err(|e| load(format!("{e:#}")))?;
        prog.attach("kfree_skb")
            .map_err(|e| DropsError::Attach(format!("{e:#}")))?;
        let events = RingBuf::try_from(
            ebpf.take_map("DROP_EVENTS")
                .ok_or_else(|| load("map DROP_EVENTS missing".into()))?,
        )
        .map_err(|e| load(e.to_string()))?;
        tracing::info!(
            nodes = nodes.len(),
            reasons = kernel.reasons.len(),
            "kernel drop program attached to kfree_skb"
        );
        Ok(DropWatch {
            ebpf,
            events,
            kernel,
            nodes: by_inum,
            pending: Aggregator::default(),
            health: KernelDropHealth::default(),
        })
    }

    /// The drops recorded since the last drain, as observations at `kernel-drop` points.
    /// `iface` names a node's device by ifindex; `clock_offset_ns` turns the program's
    /// monotonic times into Unix times.
    pub fn drain(
        &mut self,
        points: &mut PointTable,
        decoding: &Decoding,
        iface: impl FnMut(&str, u32) -> String,
        clock_offset_ns: i64,
    ) -> Vec<Observation> {
        self.poll(points, decoding, iface, clock_offset_ns);
        self.pending.drain()
    }

    /// Reads the ring buffer into the window's drops (its points interned into `points`).
    pub fn poll(
        &mut self,
        points: &mut PointTable,
        decoding: &Decoding,
        mut iface: impl FnMut(&str, u32) -> String,
        clock_offset_ns: i64,
    ) {
        let aggregator = &mut self.pending;
        while let Some(item) = self.events.next() {
            if item.len() < std::mem::size_of::<DropEvent>() {
                self.health.undecodable += 1;
                continue;
            }
            // SAFETY: the ring buffer holds a whole DropEvent (checked above), a plain
            // #[repr(C)] struct of integers; read unaligned.
            let e: DropEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            let Some(node) = self.nodes.get(&e.netns) else {
                self.health.undecodable += 1;
                continue;
            };
            let reason = self.kernel.name(e.reason);
            let bytes = &e.data[..(e.captured as usize).min(e.data.len())];
            let decoded = match decode(LinkType::RawIp, bytes, decoding) {
                Ok(d) => d,
                Err(_) => {
                    self.health.undecodable += 1;
                    continue;
                }
            };
            if delivered_anyway(&reason, &decoded) {
                self.health.benign += 1;
                continue;
            }
            *self
                .health
                .nodes
                .entry(node.clone())
                .or_default()
                .entry(reason.clone())
                .or_default() += 1;
            let iface = if e.ifindex == 0 {
                String::new()
            } else {
                iface(node, e.ifindex)
            };
            let point = points.intern(CapturePoint {
                node: node.clone(),
                iface,
                kind: IfaceKind::KernelDrop,
                direction: Direction::Unknown,
                drop_reason: reason,
            });
            aggregator.add(
                point,
                &decoded,
                e.ts_ns.saturating_add_signed(clock_offset_ns),
            );
        }
    }

    /// The program's counters and the drops recorded, by node and reason.
    pub fn report(&self, health: &mut Health) {
        let mut h = self.health.clone();
        if let Some(map) = self.ebpf.map("DROP_COUNTERS")
            && let Ok(arr) = PerCpuArray::<&MapData, u64>::try_from(map)
        {
            let sum = |i: u32| arr.get(&i, 0).map(|v| v.iter().sum::<u64>()).unwrap_or(0);
            h.events = sum(drop_counter::EVENTS);
            h.matched = sum(drop_counter::MATCHED);
            h.ringbuf_full = sum(drop_counter::RINGBUF_FULL);
            h.unreadable = sum(drop_counter::UNREADABLE);
        }
        if let Some(Ok(info)) = self.ebpf.program("cniscope_kfree_skb").map(|p| p.info()) {
            h.program_runs = info.run_count();
            h.program_run_ns = info.run_time().as_nanos() as u64;
        }
        for (what, v) in [
            ("ring buffer full (drops not recorded)", h.ringbuf_full),
            ("headers unreadable", h.unreadable),
            ("not decodable", h.undecodable),
        ] {
            health.drops.insert(format!("kernel drops: {what}"), v);
        }
        health.kernel_drops = Some(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_kernels_btf_gives_every_offset_and_reason() {
        let Ok(k) = KernelLayout::from_btf(Path::new(KERNEL_BTF)) else {
            // A kernel without BTF: the agent then runs without the program (and says so).
            assert!(!Path::new(KERNEL_BTF).exists());
            return;
        };
        let l = k.layout;
        assert_ne!(l.skb_arg, l.reason_arg);
        // Every field found, and none at the same place as another of its structure.
        let skb = [
            l.skb_head,
            l.skb_tail,
            l.skb_network_header,
            l.skb_protocol,
            l.skb_dev,
            l.skb_sk,
            l.skb_len,
        ];
        let mut sorted = skb.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), skb.len(), "{l:?}");
        assert!(l.dev_ifindex > 0 && l.net_inum > 0, "{l:?}");
        // The reasons by name, whatever their values on this kernel.
        let value = |name: &str| k.reasons.iter().find(|(_, n)| *n == name).map(|(v, _)| *v);
        for name in ["NOT_SPECIFIED", "NETFILTER_DROP", "OTHERHOST", "NO_SOCKET"] {
            let v = value(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(k.name(v), name);
        }
        let benign = k.benign_values();
        assert!(benign.contains(&value("NOT_SPECIFIED").unwrap()));
        assert!(!benign.contains(&value("NETFILTER_DROP").unwrap()));
    }

    /// An IPv4 ICMP message of `icmp_type` (an echo's id 7), as the kernel hands it over.
    fn icmp(icmp_type: u8) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 10, 244, 1, 5, 10, 244, 1, 1,
        ];
        p.extend([icmp_type, 0, 0, 0, 0, 7, 0, 1]);
        p
    }

    #[test]
    fn an_echo_reply_a_raw_socket_took_is_no_drop_but_other_no_sockets_are() {
        let d = |bytes: &[u8]| decode(LinkType::RawIp, bytes, &Decoding::default()).unwrap();
        assert!(delivered_anyway("NO_SOCKET", &d(&icmp(0))));
        // An echo request without a listener, or the reply dropped for another reason: kept.
        assert!(!delivered_anyway("NO_SOCKET", &d(&icmp(8))));
        assert!(!delivered_anyway("NETFILTER_DROP", &d(&icmp(0))));
        let mut udp = icmp(0);
        udp[9] = 17;
        assert!(!delivered_anyway("NO_SOCKET", &d(&udp)));
    }

    #[test]
    fn a_missing_or_broken_btf_file_is_an_error_naming_it_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("vmlinux");
        assert!(matches!(
            KernelLayout::from_btf(&missing),
            Err(DropsError::Btf { .. })
        ));
        for bytes in [
            &b""[..],
            b"not BTF at all",
            &[0x9f, 0xeb, 1, 0, 24, 0, 0, 0],
        ] {
            std::fs::write(&missing, bytes).unwrap();
            let e = KernelLayout::from_btf(&missing).unwrap_err();
            assert!(
                e.to_string().starts_with(&missing.display().to_string()),
                "{e}"
            );
        }
    }

    #[test]
    fn reasons_are_named_without_their_prefix_and_unknown_ones_by_number() {
        assert_eq!(reason_name("SKB_DROP_REASON_OTHERHOST"), "OTHERHOST");
        assert_eq!(reason_name("SKB_CONSUMED"), "CONSUMED");
        let k = KernelLayout {
            layout: DropLayout::default(),
            reasons: BTreeMap::from([(12, "NETFILTER_DROP".to_string())]),
        };
        assert_eq!(k.name(12), "NETFILTER_DROP");
        assert_eq!(k.name(500), "REASON_500");
        assert_eq!(k.name(3 << 16 | 7), "SUBSYS_3_7");
    }
}
