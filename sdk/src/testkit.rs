//! A native test kit: build batches by hand and drive a [`Plugin`] without Wasm, so plugin
//! rules are unit-tested with plain `cargo test`. To run a *built* `.wasm` against recorded
//! captures and an expected topology, use
//! `cniscope plugin test my.wasm --capture node-a/eth0=a.pcap -i inventory.json --expect expected.json`
//! (`--bless` writes `expected.json` from the current output).

use crate::batch::Tunnel;
use crate::flow::{Flows, flows_from_batch};
use crate::net::ip_from_std;
use crate::options::Options;
use crate::{
    CapturePoint, Direction, GeneveOptions, IfaceKind, Inventory, Ip, LogicalFlow,
    ObservationBatch, Plugin, PluginError,
};

/// One observation, as a row, for building test batches.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub point: usize,
    pub src: Option<Ip>,
    pub dst: Option<Ip>,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub src_mac: u64,
    pub dst_mac: u64,
    pub tcp_flags: u8,
    pub fp_kind: u8,
    pub fingerprint: u32,
    pub packets: u64,
    pub bytes: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub tunnel: Option<Tunnel>,
    pub vni: u32,
    pub outer_src: Option<Ip>,
    pub outer_dst: Option<Ip>,
    pub outer_src_port: u16,
    pub outer_dst_port: u16,
    pub outer_src_mac: u64,
    pub outer_dst_mac: u64,
    /// (class, type, data)
    pub geneve: Vec<(u16, u8, Vec<u8>)>,
}

impl Row {
    /// A TCP/UDP row `src:sport -> dst:dport` at point 0 with one packet.
    pub fn flow(protocol: u8, src: &str, sport: u16, dst: &str, dport: u16) -> Row {
        Row {
            protocol,
            src: Some(parse(src)),
            dst: Some(parse(dst)),
            src_port: sport,
            dst_port: dport,
            packets: 1,
            bytes: 100,
            first_ns: 1,
            last_ns: 1,
            ..Row::default()
        }
    }
    pub fn at(mut self, point: usize) -> Row {
        self.point = point;
        self
    }
    pub fn vxlan(mut self, vni: u32, outer_src: &str, outer_dst: &str, port: u16) -> Row {
        self.tunnel = Some(Tunnel::Vxlan);
        self.vni = vni;
        self.outer_src = Some(parse(outer_src));
        self.outer_dst = Some(parse(outer_dst));
        self.outer_dst_port = port;
        self
    }
    /// Geneve (UDP 6081) `outer_src -> outer_dst` with VNI `vni` and `options` as (class,
    /// type, data).
    pub fn geneve(
        mut self,
        vni: u32,
        outer_src: &str,
        outer_dst: &str,
        options: &[(u16, u8, &[u8])],
    ) -> Row {
        self.tunnel = Some(Tunnel::Geneve);
        self.vni = vni;
        self.outer_src = Some(parse(outer_src));
        self.outer_dst = Some(parse(outer_dst));
        self.outer_dst_port = 6081;
        self.geneve = options
            .iter()
            .map(|&(c, t, d)| (c, t, d.to_vec()))
            .collect();
        self
    }
    /// IP in IP (protocol 4 or 41), `outer_src -> outer_dst`.
    pub fn ipip(mut self, outer_src: &str, outer_dst: &str) -> Row {
        self.tunnel = Some(Tunnel::IpInIp);
        self.outer_src = Some(parse(outer_src));
        self.outer_dst = Some(parse(outer_dst));
        self
    }
    /// A raw IP packet in UDP (flannel's udp backend), `outer_src -> outer_dst:port`.
    pub fn udp_encap(mut self, outer_src: &str, outer_dst: &str, port: u16) -> Row {
        self.tunnel = Some(Tunnel::UdpEncap);
        self.outer_src = Some(parse(outer_src));
        self.outer_dst = Some(parse(outer_dst));
        self.outer_src_port = port;
        self.outer_dst_port = port;
        self
    }
    pub fn fingerprint(mut self, kind: u8, value: u32) -> Row {
        self.fp_kind = kind;
        self.fingerprint = value;
        self
    }
    /// First and last seen, in nanoseconds of the capture clock.
    pub fn during(mut self, first_ns: u64, last_ns: u64) -> Row {
        self.first_ns = first_ns;
        self.last_ns = last_ns;
        self
    }
    pub fn counters(mut self, packets: u64, bytes: u64) -> Row {
        self.packets = packets;
        self.bytes = bytes;
        self
    }
    pub fn flags(mut self, flags: u8) -> Row {
        self.tcp_flags = flags;
        self
    }
    pub fn macs(mut self, src: u64, dst: u64) -> Row {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }
}

/// An address from its text (panics on a typo: for tests).
pub fn ip(s: &str) -> Ip {
    parse(s)
}

fn parse(s: &str) -> Ip {
    ip_from_std(
        s.parse()
            .unwrap_or_else(|_| panic!("testkit: bad IP {s:?}")),
    )
}

/// Builds an [`ObservationBatch`] from points and rows.
#[derive(Default)]
pub struct BatchBuilder {
    batch: ObservationBatch,
}

impl Default for ObservationBatch {
    fn default() -> Self {
        ObservationBatch {
            points: Vec::new(),
            point: Vec::new(),
            src_ip_hi: Vec::new(),
            src_ip_lo: Vec::new(),
            dst_ip_hi: Vec::new(),
            dst_ip_lo: Vec::new(),
            protocol: Vec::new(),
            src_port: Vec::new(),
            dst_port: Vec::new(),
            src_mac: Vec::new(),
            dst_mac: Vec::new(),
            tcp_flags: Vec::new(),
            fp_kind: Vec::new(),
            fingerprint: Vec::new(),
            packets: Vec::new(),
            bytes: Vec::new(),
            first_ns: Vec::new(),
            last_ns: Vec::new(),
            tunnel: Vec::new(),
            vni: Vec::new(),
            outer_src_hi: Vec::new(),
            outer_src_lo: Vec::new(),
            outer_dst_hi: Vec::new(),
            outer_dst_lo: Vec::new(),
            outer_src_port: Vec::new(),
            outer_dst_port: Vec::new(),
            outer_src_mac: Vec::new(),
            outer_dst_mac: Vec::new(),
            geneve: GeneveOptions {
                obs: Vec::new(),
                class: Vec::new(),
                type_: Vec::new(),
                data_start: Vec::new(),
                data_len: Vec::new(),
                data: Vec::new(),
            },
        }
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a capture point; rows refer to points by the order they were added.
    pub fn point(mut self, node: &str, iface: &str, kind: IfaceKind, direction: Direction) -> Self {
        self.batch.points.push(CapturePoint {
            node: node.into(),
            iface: iface.into(),
            kind,
            direction,
            drop_reason: String::new(),
        });
        self
    }

    /// Adds a `kernel-drop` point: where the kernel freed packets on `iface` for `reason`
    /// (rows at it count dropped packets).
    pub fn drop_point(mut self, node: &str, iface: &str, reason: &str) -> Self {
        self.batch.points.push(CapturePoint {
            node: node.into(),
            iface: iface.into(),
            kind: IfaceKind::KernelDrop,
            direction: Direction::Unknown,
            drop_reason: reason.into(),
        });
        self
    }

    pub fn row(mut self, r: Row) -> Self {
        let b = &mut self.batch;
        let index = b.point.len() as u32;
        let none = Ip::NONE;
        b.point.push(r.point as u16);
        let (s, d) = (r.src.unwrap_or(none), r.dst.unwrap_or(none));
        b.src_ip_hi.push(s.hi);
        b.src_ip_lo.push(s.lo);
        b.dst_ip_hi.push(d.hi);
        b.dst_ip_lo.push(d.lo);
        b.protocol.push(r.protocol);
        b.src_port.push(r.src_port);
        b.dst_port.push(r.dst_port);
        b.src_mac.push(r.src_mac);
        b.dst_mac.push(r.dst_mac);
        b.tcp_flags.push(r.tcp_flags);
        b.fp_kind.push(r.fp_kind);
        b.fingerprint.push(r.fingerprint);
        b.packets.push(r.packets);
        b.bytes.push(r.bytes);
        b.first_ns.push(r.first_ns);
        b.last_ns.push(r.last_ns);
        b.tunnel.push(r.tunnel.unwrap_or(Tunnel::None).code());
        b.vni.push(r.vni);
        let (os, od) = (r.outer_src.unwrap_or(none), r.outer_dst.unwrap_or(none));
        b.outer_src_hi.push(os.hi);
        b.outer_src_lo.push(os.lo);
        b.outer_dst_hi.push(od.hi);
        b.outer_dst_lo.push(od.lo);
        b.outer_src_port.push(r.outer_src_port);
        b.outer_dst_port.push(r.outer_dst_port);
        b.outer_src_mac.push(r.outer_src_mac);
        b.outer_dst_mac.push(r.outer_dst_mac);
        for (class, ty, data) in r.geneve {
            b.geneve.obs.push(index);
            b.geneve.class.push(class);
            b.geneve.type_.push(ty);
            b.geneve.data_start.push(b.geneve.data.len() as u32);
            b.geneve.data_len.push(data.len() as u8);
            b.geneve.data.extend_from_slice(&data);
        }
        self
    }

    pub fn build(self) -> ObservationBatch {
        self.batch
    }
}

/// Drives a plugin natively, the way the host drives its Wasm instance.
pub struct Harness<P: Plugin> {
    pub plugin: P,
}

impl<P: Plugin> Default for Harness<P> {
    fn default() -> Self {
        Harness {
            plugin: P::default(),
        }
    }
}

impl<P: Plugin> Harness<P> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn configure(mut self, options_json: &str) -> Result<Self, PluginError> {
        let options = Options::parse(options_json)?;
        self.plugin.configure(&options)?;
        Ok(self)
    }

    pub fn inventory(mut self, inv: Inventory) -> Result<Self, PluginError> {
        self.plugin.on_inventory(inv)?;
        Ok(self)
    }

    /// `process`, with the flows read back from the columns the host would receive.
    pub fn process(&mut self, batch: &ObservationBatch) -> Result<Vec<LogicalFlow>, PluginError> {
        let mut out = Flows::new();
        self.plugin.process(batch, &mut out)?;
        Ok(flows_from_batch(&out.into_batch()))
    }

    /// `process` then `flush`, as the host does at the end of a window.
    pub fn run(&mut self, batch: &ObservationBatch) -> Result<Vec<LogicalFlow>, PluginError> {
        let mut out = Flows::new();
        self.plugin.process(batch, &mut out)?;
        self.plugin.flush(u64::MAX, &mut out)?;
        Ok(flows_from_batch(&out.into_batch()))
    }
}

/// A running pod `namespace/name` on `node` with one IP, for test inventories: collect
/// them into the inventory's table (`pods: [pod(..), pod(..)].into_iter().collect()`).
pub fn pod(namespace: &str, name: &str, node: &str, ip: &str) -> crate::NewPod {
    crate::NewPod {
        namespace: namespace.into(),
        name: name.into(),
        node: node.into(),
        ips: vec![parse(ip)],
        ..crate::NewPod::default()
    }
}

/// A TCP service `namespace/name` for test inventories: ClusterIP `cluster_ip` ("" for a
/// headless service) on `port` -> `target_port`, with `node_port` (0 for none; the type is
/// then ClusterIP, else NodePort).
pub fn service(
    namespace: &str,
    name: &str,
    cluster_ip: &str,
    port: u16,
    target_port: u16,
    node_port: u16,
) -> crate::ServiceInfo {
    crate::ServiceInfo {
        namespace: namespace.into(),
        name: name.into(),
        type_: if node_port != 0 {
            "NodePort"
        } else {
            "ClusterIP"
        }
        .into(),
        cluster_ips: if cluster_ip.is_empty() {
            vec![]
        } else {
            vec![parse(cluster_ip)]
        },
        external_ips: vec![],
        ports: vec![crate::ServicePort {
            name: "tcp".into(),
            protocol: 6,
            port,
            target_port,
            node_port,
        }],
        external_traffic_policy: "Cluster".into(),
    }
}

/// An EndpointSlice of service `namespace/service` listing `addresses` on TCP `port`.
pub fn endpoint_slice(
    namespace: &str,
    service: &str,
    addresses: &[&str],
    port: u16,
) -> crate::EndpointSliceInfo {
    crate::EndpointSliceInfo {
        namespace: namespace.into(),
        service: service.into(),
        addresses: addresses.iter().map(|a| parse(a)).collect(),
        ports: vec![crate::ServicePort {
            name: "tcp".into(),
            protocol: 6,
            port,
            target_port: 0,
            node_port: 0,
        }],
    }
}
