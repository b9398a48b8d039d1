//! The observation wire format of cluster mode: what an agent publishes for one node and one
//! interval, and the aggregator reads.
//!
//! A message is `MAGIC` (4 bytes), `VERSION` (1 byte), then a [`NodeBatch`] in postcard
//! (serde's data model with variable-length integers: a port or a packet count takes one to
//! three bytes, an address five or seventeen). Timestamps travel as differences from the
//! first observation's, so they are small too. Observations are written from and read into
//! [`Observation`]s directly, a row at a time, without an intermediate list. Why postcard: a stable, documented format, no schema
//! compiler, and varints that make the common small values small without a general-purpose
//! compressor; `./x bench` prints the bytes per observation. A reader refuses another
//! version, and a body that does not decode to its end, naming what was wrong.

use crate::health::ProbeCounters;
use crate::sources::aggregate::{CapturePoint, FlowKey, Observation, PointTable};
use crate::sources::decode::GeneveOpt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

pub const MAGIC: [u8; 4] = *b"CSOB";
/// Bumped whenever [`NodeBatch`] changes shape.
pub const VERSION: u8 = 3;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    /// Not a cniscope observation message at all.
    #[error("not a cniscope observation batch (no CSOB magic)")]
    Magic,
    /// Written by an agent of another release.
    #[error("observation batch version {found}, this aggregator reads version {VERSION}")]
    Version { found: u8 },
    /// The body does not decode (truncated, corrupted).
    #[error("observation batch body: {0}")]
    Body(String),
}

/// One node's observations of one interval (or one chunk of them), and its health.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeBatch {
    pub node: String,
    /// The publishing agent's instance (random at its start): with `window` and `chunk`, the
    /// message's identity for de-duplication.
    pub agent: u64,
    /// The agent's interval number, from 0 at its start.
    pub window: u64,
    /// Chunk number within the interval; `last` is set on the interval's final chunk.
    pub chunk: u32,
    pub last: bool,
    /// The interval, in ns since the Unix epoch: the capture time these observations cover.
    pub start_ns: u64,
    pub end_ns: u64,
    /// The capture points the observations refer to (by index).
    pub points: Vec<CapturePoint>,
    /// The observations; `key.point` indexes `points`.
    #[serde(with = "rows")]
    pub observations: Vec<Observation>,
    pub health: NodeHealth,
}

/// What the node could not record or send, cumulative since its agent started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeHealth {
    pub drops: BTreeMap<String, u64>,
    pub errors: Vec<String>,
    pub probe: Option<ProbeCounters>,
    /// The packets the kernel dropped on the node, by reason (the drop program's).
    pub kernel_drops: BTreeMap<String, u64>,
}

/// An address as it travels: absent, IPv4 (4 bytes) or IPv6 (16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Addr {
    None,
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Addr {
    fn from_u128(a: u128) -> Addr {
        if a == 0 {
            Addr::None
        } else if a >> 32 == 0xffff {
            Addr::V4((a as u32).to_be_bytes())
        } else {
            Addr::V6(a.to_be_bytes())
        }
    }

    fn to_u128(self) -> u128 {
        match self {
            Addr::None => 0,
            Addr::V4(b) => 0xffff_0000_0000 | u32::from_be_bytes(b) as u128,
            Addr::V6(b) => u128::from_be_bytes(b),
        }
    }
}

/// One observation as it travels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct WireObservation {
    pub point: u16,
    pub src: Addr,
    pub dst: Addr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub tunnel: u8,
    pub vni: u32,
    pub outer_src: Addr,
    pub outer_dst: Addr,
    pub outer_src_port: u16,
    pub outer_dst_port: u16,
    pub src_mac: u64,
    pub dst_mac: u64,
    pub outer_src_mac: u64,
    pub outer_dst_mac: u64,
    pub tcp_flags: u8,
    pub fp_kind: u8,
    pub fingerprint: u32,
    pub packets: u64,
    pub bytes: u64,
    /// `first_ns` minus the first observation's.
    pub first: i64,
    /// `last_ns - first_ns`.
    pub last: i64,
    pub geneve: Vec<(u16, u8, Vec<u8>)>,
}

impl WireObservation {
    fn from_observation(o: &Observation, base_ns: u64) -> WireObservation {
        let k = &o.key;
        WireObservation {
            point: k.point,
            src: Addr::from_u128(k.src),
            dst: Addr::from_u128(k.dst),
            protocol: k.protocol,
            src_port: k.src_port,
            dst_port: k.dst_port,
            tunnel: k.tunnel,
            vni: k.vni,
            outer_src: Addr::from_u128(k.outer_src),
            outer_dst: Addr::from_u128(k.outer_dst),
            outer_src_port: k.outer_src_port,
            outer_dst_port: k.outer_dst_port,
            src_mac: o.src_mac,
            dst_mac: o.dst_mac,
            outer_src_mac: o.outer_src_mac,
            outer_dst_mac: o.outer_dst_mac,
            tcp_flags: o.tcp_flags,
            fp_kind: o.fp_kind,
            fingerprint: o.fingerprint,
            packets: o.packets,
            bytes: o.bytes,
            first: o.first_ns.wrapping_sub(base_ns) as i64,
            last: o.last_ns.wrapping_sub(o.first_ns) as i64,
            geneve: o
                .geneve
                .iter()
                .map(|g| (g.class, g.kind, g.data.clone()))
                .collect(),
        }
    }

    fn into_observation(self, base_ns: u64) -> Observation {
        let first_ns = base_ns.wrapping_add(self.first as u64);
        Observation {
            key: FlowKey {
                point: self.point,
                src: self.src.to_u128(),
                dst: self.dst.to_u128(),
                protocol: self.protocol,
                src_port: self.src_port,
                dst_port: self.dst_port,
                tunnel: self.tunnel,
                vni: self.vni,
                outer_src: self.outer_src.to_u128(),
                outer_dst: self.outer_dst.to_u128(),
                outer_src_port: self.outer_src_port,
                outer_dst_port: self.outer_dst_port,
            },
            src_mac: self.src_mac,
            dst_mac: self.dst_mac,
            outer_src_mac: self.outer_src_mac,
            outer_dst_mac: self.outer_dst_mac,
            tcp_flags: self.tcp_flags,
            fp_kind: self.fp_kind,
            generation: 0,
            fingerprint: self.fingerprint,
            packets: self.packets,
            bytes: self.bytes,
            first_ns,
            last_ns: first_ns.wrapping_add(self.last as u64),
            geneve: self
                .geneve
                .into_iter()
                .map(|(class, kind, data)| GeneveOpt { class, kind, data })
                .collect(),
        }
    }
}

/// The observations as they travel: the first one's `first_ns`, then one
/// [`WireObservation`] per observation, made and read a row at a time.
mod rows {
    use super::WireObservation;
    use crate::sources::aggregate::Observation;
    use serde::de::{DeserializeSeed, SeqAccess, Visitor};
    use serde::ser::{SerializeSeq, SerializeTuple};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    struct Rows<'a> {
        base: u64,
        observations: &'a [Observation],
    }

    impl serde::Serialize for Rows<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.observations.len()))?;
            for o in self.observations {
                seq.serialize_element(&WireObservation::from_observation(o, self.base))?;
            }
            seq.end()
        }
    }

    pub fn serialize<S: Serializer>(observations: &[Observation], s: S) -> Result<S::Ok, S::Error> {
        let base = observations.first().map(|o| o.first_ns).unwrap_or(0);
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&base)?;
        t.serialize_element(&Rows { base, observations })?;
        t.end()
    }

    /// Reads the rows straight into observations, given the base time read before them.
    struct RowsSeed(u64);

    impl<'de> DeserializeSeed<'de> for RowsSeed {
        type Value = Vec<Observation>;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Observation>, D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for RowsSeed {
        type Value = Vec<Observation>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("observation rows")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Observation>, A::Error> {
            // Bounded: a length field must not make us reserve what the message cannot hold.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(row) = seq.next_element::<WireObservation>()? {
                out.push(row.into_observation(self.0));
            }
            Ok(out)
        }
    }

    struct Both;

    impl<'de> Visitor<'de> for Both {
        type Value = Vec<Observation>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a base time and observation rows")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Observation>, A::Error> {
            use serde::de::Error;
            let base: u64 = seq
                .next_element()?
                .ok_or_else(|| A::Error::invalid_length(0, &self))?;
            seq.next_element_seed(RowsSeed(base))?
                .ok_or_else(|| A::Error::invalid_length(1, &self))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Observation>, D::Error> {
        d.deserialize_tuple(2, Both)
    }
}

impl NodeBatch {
    /// `observations` (whose points index `points`) as batches of at most `chunk_size`
    /// observations each, every one carrying only the points it uses.
    #[allow(clippy::too_many_arguments)]
    pub fn chunks(
        node: &str,
        agent: u64,
        window: u64,
        (start_ns, end_ns): (u64, u64),
        points: &PointTable,
        observations: &[Observation],
        health: &NodeHealth,
        chunk_size: usize,
    ) -> Vec<NodeBatch> {
        let pieces: Vec<&[Observation]> = if observations.is_empty() {
            vec![&[]]
        } else {
            observations.chunks(chunk_size.max(1)).collect()
        };
        let n = pieces.len();
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, piece)| {
                let mut local = PointTable::default();
                let observations = piece
                    .iter()
                    .map(|o| {
                        let mut o = o.clone();
                        o.key.point = local.intern(points.get(o.key.point).clone());
                        o
                    })
                    .collect();
                NodeBatch {
                    node: node.to_string(),
                    agent,
                    window,
                    chunk: i as u32,
                    last: i + 1 == n,
                    start_ns,
                    end_ns,
                    points: local.all().to_vec(),
                    observations,
                    health: health.clone(),
                }
            })
            .collect()
    }

    /// Adds `points` no observation uses (an interface watched that nothing crossed), each
    /// once.
    pub fn add_points(&mut self, points: impl IntoIterator<Item = CapturePoint>) {
        for p in points {
            if !self.points.contains(&p) {
                self.points.push(p);
            }
        }
    }

    /// The message body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 48 * self.observations.len());
        out.extend(MAGIC);
        out.push(VERSION);
        // Writing into a Vec cannot fail.
        postcard::to_io(self, &mut out).expect("postcard writes to a Vec");
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<NodeBatch, WireError> {
        if bytes.len() < 5 || bytes[..4] != MAGIC {
            return Err(WireError::Magic);
        }
        if bytes[4] != VERSION {
            return Err(WireError::Version { found: bytes[4] });
        }
        let (batch, rest): (NodeBatch, &[u8]) =
            postcard::take_from_bytes(&bytes[5..]).map_err(|e| WireError::Body(e.to_string()))?;
        if !rest.is_empty() {
            return Err(WireError::Body(format!(
                "{} bytes after the batch",
                rest.len()
            )));
        }
        for o in &batch.observations {
            if o.key.point as usize >= batch.points.len() {
                return Err(WireError::Body(format!(
                    "observation at point {} of {}",
                    o.key.point,
                    batch.points.len()
                )));
            }
        }
        Ok(batch)
    }

    /// The observations, their points interned into the reader's table (the batch is used up).
    pub fn into_observations(self, points: &mut PointTable) -> Vec<Observation> {
        let map: Vec<u16> = self.points.into_iter().map(|p| points.intern(p)).collect();
        let mut observations = self.observations;
        for o in &mut observations {
            o.key.point = map[o.key.point as usize];
        }
        observations
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::aggregate::{Direction, IfaceKind};

    fn sample(n: usize) -> (PointTable, Vec<Observation>) {
        let mut points = PointTable::default();
        let mut obs = Vec::new();
        for i in 0..n {
            let p = points.intern(CapturePoint {
                node: "node-a".into(),
                iface: format!("veth{}", i % 3),
                kind: IfaceKind::PodVeth,
                direction: Direction::Ingress,
                drop_reason: String::new(),
            });
            obs.push(Observation {
                key: FlowKey {
                    point: p,
                    src: 0xffff_0af4_0005,
                    dst: 0x2001_0db8 << 96 | i as u128,
                    protocol: 6,
                    src_port: 40000 + i as u16,
                    dst_port: 8080,
                    tunnel: (i % 2) as u8,
                    vni: 1,
                    outer_src: 0xffff_c0a8_0001 * (i % 2) as u128,
                    outer_dst: 0,
                    outer_src_port: 0,
                    outer_dst_port: 8472,
                },
                src_mac: 0x0a58_0af4_0005,
                dst_mac: 0,
                outer_src_mac: 0,
                outer_dst_mac: 0,
                tcp_flags: 0x1b,
                fp_kind: 1,
                generation: 0,
                fingerprint: 0xdead_beef,
                packets: 12,
                bytes: 1500,
                first_ns: 1_700_000_000_000_000_000 + i as u64,
                last_ns: 1_700_000_000_500_000_000,
                geneve: if i == 0 {
                    vec![GeneveOpt {
                        class: 0x0102,
                        kind: 0x80,
                        data: vec![0, 1, 0, 3],
                    }]
                } else {
                    Vec::new()
                },
            });
        }
        (points, obs)
    }

    #[test]
    fn a_batch_survives_the_wire_in_chunks() {
        let (points, obs) = sample(10);
        let health = NodeHealth::default();
        let range = (1_700_000_000_000_000_000, 1_700_000_001_000_000_000);
        let batches = NodeBatch::chunks("node-a", 7, 3, range, &points, &obs, &health, 4);
        assert_eq!(batches.len(), 3);
        assert_eq!(
            batches.iter().map(|b| b.last).collect::<Vec<_>>(),
            [false, false, true]
        );
        let mut read = PointTable::default();
        let mut back = Vec::new();
        for b in &batches {
            let decoded = NodeBatch::decode(&b.encode()).unwrap();
            assert_eq!(&decoded, b);
            back.extend(decoded.into_observations(&mut read));
        }
        // Same observations, their points by value.
        assert_eq!(back.len(), obs.len());
        for (a, b) in obs.iter().zip(&back) {
            assert_eq!(points.get(a.key.point), read.get(b.key.point));
            let mut b = b.clone();
            b.key.point = a.key.point;
            assert_eq!(a, &b);
        }
    }

    #[test]
    fn watched_silent_points_and_kernel_drop_points_travel() {
        let (points, obs) = sample(2);
        let mut b = NodeBatch::chunks(
            "node-a",
            1,
            0,
            (0, 1),
            &points,
            &obs,
            &NodeHealth::default(),
            10,
        )
        .pop()
        .unwrap();
        let silent = CapturePoint {
            node: "node-a".into(),
            iface: "flannel.1".into(),
            kind: IfaceKind::Tunnel,
            direction: Direction::Egress,
            drop_reason: String::new(),
        };
        let drop = CapturePoint {
            node: "node-a".into(),
            iface: "eth0".into(),
            kind: IfaceKind::KernelDrop,
            direction: Direction::Unknown,
            drop_reason: "NETFILTER_DROP".into(),
        };
        let used = b.points.len();
        b.add_points([silent.clone(), drop.clone(), silent.clone()]);
        assert_eq!(b.points.len(), used + 2, "each once");
        let mut read = PointTable::default();
        let back = NodeBatch::decode(&b.encode()).unwrap();
        back.into_observations(&mut read);
        assert!(read.all().contains(&silent) && read.all().contains(&drop));
    }

    #[test]
    fn another_version_or_a_cut_body_is_refused_with_its_reason() {
        let (points, obs) = sample(3);
        let b = &NodeBatch::chunks("n", 1, 0, (0, 1), &points, &obs, &NodeHealth::default(), 10)[0];
        let mut bytes = b.encode();
        assert_eq!(NodeBatch::decode(b"nope"), Err(WireError::Magic));
        bytes[4] = 9;
        assert_eq!(
            NodeBatch::decode(&bytes),
            Err(WireError::Version { found: 9 })
        );
        bytes[4] = VERSION;
        for cut in [5, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                matches!(NodeBatch::decode(&bytes[..cut]), Err(WireError::Body(_))),
                "cut at {cut}"
            );
        }
        bytes.push(0);
        assert!(matches!(NodeBatch::decode(&bytes), Err(WireError::Body(_))));
    }
}
