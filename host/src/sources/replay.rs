//! Replay of pcap and pcapng files: the same decoding and aggregation as live capture.
//!
//! Each file is read as a stream (constant memory, via pcap-parser); several files are merged
//! by timestamp so that windows cover the same time on every capture point.
//! **Invariant:** a malformed packet or a truncated file never stops the replay: it is counted
//! in [`ReplayStats`] and the rest goes on.

use super::aggregate::{Aggregator, CapturePoint, Direction, IfaceKind, Observation, PointTable};
use super::decode::{DecodeError, Decoded, Decoding, LinkType, decode};
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{Block, PcapBlockOwned, PcapError, create_reader};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::str::FromStr;
use thiserror::Error;

/// A capture file and the capture point it belongs to: `[NODE[/IFACE]=]PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureSpec {
    pub path: PathBuf,
    /// Node name; "" when unknown.
    pub node: String,
    /// Interface name; when None, the pcapng interface name (or "").
    pub iface: Option<String>,
}

impl FromStr for CaptureSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((point, path)) if !path.is_empty() => {
                let (node, iface) = match point.split_once('/') {
                    Some((n, i)) => (n.to_string(), Some(i.to_string()).filter(|i| !i.is_empty())),
                    None => (point.to_string(), None),
                };
                Ok(CaptureSpec {
                    path: path.into(),
                    node,
                    iface,
                })
            }
            Some(_) => Err(format!("capture {s:?}: no path after '='")),
            None => Ok(CaptureSpec {
                path: s.into(),
                node: String::new(),
                iface: None,
            }),
        }
    }
}

#[derive(Debug, Error)]
pub enum ReplayError {
    /// The capture file could not be opened.
    #[error("{path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    /// Not a pcap or pcapng file.
    #[error("{path}: not a pcap or pcapng file ({detail})")]
    Format { path: String, detail: String },
    /// More captures than this process may have files open.
    #[error(
        "{captures} captures, but this process may open only {limit} files at once (`ulimit -n`): they are merged by time, so all are open together; raise the limit or merge captures first (mergecap)"
    )]
    TooMany { captures: usize, limit: u64 },
}

/// Descriptors kept for everything else the process opens (plugins, the cache, stdout).
const SPARE_FDS: u64 = 64;

/// Makes room for `files` open files: the soft limit raised towards the hard one (the soft
/// default, 1024, is far below what a kernel allows a process); an error when even the hard
/// limit is too small.
fn room_for(files: usize) -> Result<(), ReplayError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(()); // unknown: try, and let an open say what went wrong
    }
    let want = files as u64 + SPARE_FDS;
    if want <= lim.rlim_cur {
        return Ok(());
    }
    if want <= lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass; raising the soft limit up to the hard
        // one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(());
        }
    }
    Err(ReplayError::TooMany {
        captures: files,
        limit: lim.rlim_max.saturating_sub(SPARE_FDS),
    })
}

/// What the replay read, and what it could not.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReplayStats {
    pub packets: u64,
    pub observed: u64,
    /// Frames that are not IP (ARP, STP, LLDP): expected, not errors.
    pub not_ip: u64,
    /// Frames that could not be decoded, by reason.
    pub malformed: BTreeMap<String, u64>,
    /// Interfaces with a link type we do not read, and their packet counts.
    pub unsupported_linktype: u64,
    /// Reopenings (handshakes, UDP after a silence) of a 5-tuple already reopened 255 times at one point in one window, merged
    /// into the latest connection's observation ([`super::aggregate::MAX_GENERATION`]).
    pub reopenings_merged: u64,
    /// Per-file problems that stopped reading that file (truncation, corruption).
    pub file_errors: Vec<String>,
}

struct Interface {
    link: Option<LinkType>,
    name: String,
    /// Timestamp units per second and offset in seconds.
    resolution: u64,
    offset_s: i64,
    /// Its capture point, interned once per direction (ingress, egress, unknown): not per
    /// packet, which cloned and hashed two strings each time.
    points: [Option<u16>; 3],
}

/// One packet read from a capture, already decoded.
struct Packet {
    ts_ns: u64,
    point: u16,
    decoded: Result<Decoded, DecodeError>,
}

struct FileState {
    spec: CaptureSpec,
    interfaces: Vec<Interface>,
}

/// A streaming reader over one capture file.
struct CaptureFile {
    reader: Box<dyn PcapReaderIterator>,
    state: FileState,
    done: bool,
    /// Current buffer size; grows for blocks larger than it.
    capacity: usize,
}

const MAX_BLOCK: usize = 64 << 20;

/// A reader error in one short line: the parser's own errors carry the unparsed input (up to
/// a whole buffer), which is no message for a person.
fn describe<I>(e: &PcapError<I>) -> String {
    match e {
        PcapError::Eof => "end of file".into(),
        PcapError::BufferTooSmall => "a block larger than the read buffer".into(),
        PcapError::UnexpectedEof | PcapError::Incomplete(_) => {
            "the file ends inside a block".into()
        }
        PcapError::ReadError => "read error".into(),
        PcapError::HeaderNotRecognized => "neither a pcap nor a pcapng file".into(),
        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
            format!("a block that does not parse ({kind:?})")
        }
    }
}

impl CaptureFile {
    fn open(spec: CaptureSpec) -> Result<CaptureFile, ReplayError> {
        let path = spec.path.display().to_string();
        let file = File::open(&spec.path).map_err(|source| ReplayError::Open {
            path: path.clone(),
            source,
        })?;
        CaptureFile::from_reader(spec, file)
    }

    /// A capture read from `source` (a file, or bytes in memory), named by `spec`.
    fn from_reader(
        spec: CaptureSpec,
        source: impl std::io::Read + Send + 'static,
    ) -> Result<CaptureFile, ReplayError> {
        let path = spec.path.display().to_string();
        let reader = create_reader(1 << 16, source).map_err(|e| ReplayError::Format {
            path: path.clone(),
            detail: describe(&e),
        })?;
        Ok(CaptureFile {
            reader,
            state: FileState {
                spec,
                interfaces: Vec::new(),
            },
            done: false,
            capacity: 1 << 16,
        })
    }

    fn next_packet(
        &mut self,
        ports: &Decoding,
        points: &mut PointTable,
        stats: &mut ReplayStats,
    ) -> Option<Packet> {
        while !self.done {
            match self.reader.next() {
                Ok((offset, block)) => {
                    let packet = handle_block(&mut self.state, block, ports, points, stats);
                    self.reader.consume(offset);
                    if packet.is_some() {
                        return packet;
                    }
                }
                Err(PcapError::Eof) => self.done = true,
                Err(PcapError::Incomplete(_)) => {
                    if self.reader.reader_exhausted() {
                        self.fail(stats, "truncated: the file ends inside a packet");
                    } else if let Err(e) = self
                        .reader
                        .refill()
                        .map_err(|e| format!("read error: {e:?}"))
                    {
                        self.fail(stats, &e);
                    }
                }
                Err(PcapError::UnexpectedEof) => {
                    self.fail(stats, "truncated: the file ends inside a packet")
                }
                // A block larger than the buffer (BIG TCP, jumbo GSO frames): grow, up to a limit.
                Err(PcapError::BufferTooSmall) => {
                    self.capacity *= 4;
                    if self.capacity > MAX_BLOCK || !self.reader.grow(self.capacity) {
                        self.fail(stats, "corrupt: a block claims more than 64 MiB");
                    }
                }
                Err(e) => {
                    let why = format!(
                        "corrupt: {} (at byte {})",
                        describe(&e),
                        self.reader.consumed()
                    );
                    self.fail(stats, &why);
                }
            }
        }
        None
    }

    fn fail(&mut self, stats: &mut ReplayStats, why: &str) {
        stats
            .file_errors
            .push(format!("{}: {why}", self.state.spec.path.display()));
        self.done = true;
    }
}

fn handle_block(
    st: &mut FileState,
    block: PcapBlockOwned<'_>,
    ports: &Decoding,
    points: &mut PointTable,
    stats: &mut ReplayStats,
) -> Option<Packet> {
    let (if_id, ts_ns, data, flags) = match block {
        PcapBlockOwned::LegacyHeader(h) => {
            let resolution = if h.is_nanosecond_precision() {
                1_000_000_000
            } else {
                1_000_000
            };
            let link = LinkType::from_pcap(h.network.0);
            st.interfaces = vec![Interface {
                link,
                name: String::new(),
                resolution,
                offset_s: 0,
                points: [None; 3],
            }];
            return None;
        }
        PcapBlockOwned::Legacy(b) => {
            let res = st
                .interfaces
                .first()
                .map(|i| i.resolution)
                .unwrap_or(1_000_000);
            let ns = b.ts_sec as u64 * 1_000_000_000 + b.ts_usec as u64 * (1_000_000_000 / res);
            (0usize, ns, b.data, None)
        }
        PcapBlockOwned::NG(Block::SectionHeader(_)) => {
            // A new section restarts interface numbering.
            st.interfaces.clear();
            return None;
        }
        PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
            let name = idb.if_name().and_then(|r| r.ok()).unwrap_or("").to_string();
            st.interfaces.push(Interface {
                link: LinkType::from_pcap(idb.linktype.0),
                name,
                resolution: idb.ts_resolution().unwrap_or(1_000_000),
                offset_s: idb.ts_offset(),
                points: [None; 3],
            });
            return None;
        }
        PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
            let iface = st.interfaces.get(epb.if_id as usize);
            let (res, off) = iface
                .map(|i| (i.resolution, i.offset_s))
                .unwrap_or((1_000_000, 0));
            let raw = ((epb.ts_high as u64) << 32) | epb.ts_low as u64;
            let ns = (raw as u128 * 1_000_000_000 / res.max(1) as u128) as u64;
            let ns = ns.saturating_add_signed(off.saturating_mul(1_000_000_000));
            // epb_flags (option 2): bits 0-1 are the direction, 1 inbound, 2 outbound.
            let flags = epb
                .options
                .iter()
                .find(|o| o.code.0 == 2 && o.value.len() >= 4)
                .map(|o| u32::from_le_bytes([o.value[0], o.value[1], o.value[2], o.value[3]]) & 3);
            (
                epb.if_id as usize,
                ns,
                &epb.data[..(epb.caplen as usize).min(epb.data.len())],
                flags,
            )
        }
        PcapBlockOwned::NG(Block::SimplePacket(spb)) => (
            0,
            0,
            &spb.data[..(spb.origlen as usize).min(spb.data.len())],
            None,
        ),
        PcapBlockOwned::NG(_) => return None,
    };
    stats.packets += 1;
    let Some(iface) = st.interfaces.get_mut(if_id) else {
        *stats
            .malformed
            .entry("packet before its interface block".into())
            .or_default() += 1;
        return None;
    };
    let Some(link) = iface.link else {
        stats.unsupported_linktype += 1;
        return None;
    };
    let decoded = decode(link, data, ports);
    let outgoing = match (&decoded, flags) {
        (_, Some(1)) => Some(false),
        (_, Some(2)) => Some(true),
        (Ok(d), _) => d.outgoing,
        _ => None,
    };
    let (slot, direction) = match outgoing {
        Some(false) => (0, Direction::Ingress),
        Some(true) => (1, Direction::Egress),
        None => (2, Direction::Unknown),
    };
    let point = *iface.points[slot].get_or_insert_with(|| {
        let iface_name = st.spec.iface.clone().unwrap_or_else(|| iface.name.clone());
        points.intern(CapturePoint {
            node: st.spec.node.clone(),
            kind: IfaceKind::guess(&iface_name),
            iface: iface_name,
            direction,
            drop_reason: String::new(),
        })
    });
    Some(Packet {
        ts_ns,
        point,
        decoded,
    })
}

/// How far a replay is: bytes of the captures read (of how many), packets read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub bytes_read: u64,
    pub bytes_total: u64,
    pub packets: u64,
}

/// Packets between two progress reports.
const PROGRESS_EVERY: u64 = 16_384;

/// Replays capture files, merged by time, and hands over the observations of every window
/// of `window_ns` capture time (aligned on the first packet), then of the last partial window.
pub struct Replay {
    files: Vec<(CaptureFile, Option<Packet>)>,
    pub ports: Decoding,
    pub points: PointTable,
    pub stats: ReplayStats,
    window_ns: u64,
    bytes_total: u64,
}

impl Replay {
    /// Opens every file; a file that cannot be opened is an error for the whole replay, since
    /// the operator named it and would otherwise get a silently partial topology.
    pub fn open(
        specs: &[CaptureSpec],
        ports: Decoding,
        window_ns: u64,
    ) -> Result<Replay, ReplayError> {
        room_for(specs.len())?;
        let files = specs
            .iter()
            .map(|s| CaptureFile::open(s.clone()).map(|f| (f, None)))
            .collect::<Result<_, _>>()?;
        let bytes_total = specs
            .iter()
            .filter_map(|s| std::fs::metadata(&s.path).ok())
            .map(|m| m.len())
            .sum();
        Ok(Replay::of(files, bytes_total, ports, window_ns))
    }

    fn of(
        files: Vec<(CaptureFile, Option<Packet>)>,
        bytes_total: u64,
        ports: Decoding,
        window_ns: u64,
    ) -> Replay {
        Replay {
            bytes_total,
            files,
            ports,
            points: PointTable::default(),
            stats: ReplayStats::default(),
            window_ns: window_ns.max(1),
        }
    }

    /// Replays captures held in memory (the fuzzer's, tests'): each with the spec naming it.
    pub fn from_bytes(
        captures: Vec<(CaptureSpec, Vec<u8>)>,
        ports: Decoding,
        window_ns: u64,
    ) -> Result<Replay, ReplayError> {
        let bytes_total = captures.iter().map(|(_, b)| b.len() as u64).sum();
        let files = captures
            .into_iter()
            .map(|(spec, bytes)| {
                CaptureFile::from_reader(spec, std::io::Cursor::new(bytes)).map(|f| (f, None))
            })
            .collect::<Result<_, _>>()?;
        Ok(Replay::of(files, bytes_total, ports, window_ns))
    }

    /// Runs to the end; `on_window(observations, window_end_ns)` is called once per window.
    pub fn run(&mut self, on_window: impl FnMut(&PointTable, Vec<Observation>, u64)) {
        self.run_reporting(on_window, |_| {});
    }

    /// How far it is.
    pub fn progress(&self) -> Progress {
        Progress {
            bytes_read: self
                .files
                .iter()
                .map(|(f, _)| f.reader.consumed() as u64)
                .sum(),
            bytes_total: self.bytes_total,
            packets: self.stats.observed + self.stats.not_ip,
        }
    }

    /// [`run`](Self::run), telling `on_progress` how far it is every few thousand packets
    /// and at the end.
    pub fn run_reporting(
        &mut self,
        mut on_window: impl FnMut(&PointTable, Vec<Observation>, u64),
        mut on_progress: impl FnMut(Progress),
    ) {
        let mut agg = Aggregator::default();
        let mut read = 0u64;
        let mut window_end: Option<u64> = None;
        for i in 0..self.files.len() {
            self.refill(i);
        }
        while let Some(i) = self.earliest() {
            let packet = self.files[i].1.take().expect("earliest has a packet");
            self.refill(i);
            read += 1;
            if read.is_multiple_of(PROGRESS_EVERY) {
                on_progress(self.progress());
            }
            let end = *window_end.get_or_insert(packet.ts_ns.saturating_add(self.window_ns));
            if packet.ts_ns >= end {
                on_window(&self.points, agg.drain(), end);
                // Skip empty windows in one step.
                let skipped = (packet.ts_ns - end) / self.window_ns + 1;
                window_end = Some(end.saturating_add(skipped * self.window_ns));
            }
            match packet.decoded {
                Ok(d) => {
                    self.stats.observed += 1;
                    agg.add(packet.point, &d, packet.ts_ns);
                }
                Err(DecodeError::NotIp(_)) => self.stats.not_ip += 1,
                Err(e) => *self.stats.malformed.entry(e.to_string()).or_default() += 1,
            }
        }
        if !agg.is_empty() || window_end.is_some() {
            on_window(&self.points, agg.drain(), window_end.unwrap_or(0));
        }
        self.stats.reopenings_merged += agg.merged_reopenings();
        on_progress(self.progress());
    }

    fn refill(&mut self, i: usize) {
        let (file, slot) = &mut self.files[i];
        *slot = file.next_packet(&self.ports, &mut self.points, &mut self.stats);
    }

    fn earliest(&self) -> Option<usize> {
        self.files
            .iter()
            .enumerate()
            .filter_map(|(i, (_, p))| p.as_ref().map(|p| (p.ts_ns, i)))
            .min()
            .map(|(_, i)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_spec_forms() {
        let s: CaptureSpec = "node-a/flannel.1=cap/a.pcap".parse().unwrap();
        assert_eq!(
            (s.node.as_str(), s.iface.as_deref()),
            ("node-a", Some("flannel.1"))
        );
        let s: CaptureSpec = "node-b=b.pcapng".parse().unwrap();
        assert_eq!((s.node.as_str(), s.iface), ("node-b", None));
        let s: CaptureSpec = "plain.pcap".parse().unwrap();
        assert_eq!(s.path, PathBuf::from("plain.pcap"));
        assert!("node=".parse::<CaptureSpec>().is_err());
    }
}
