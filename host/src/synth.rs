//! Synthetic clusters with ground truth: captures of N connections on the shape of a CNI
//! (Flannel VXLAN and host-gw, Calico IPIP, VXLAN and BGP, OVN-Kubernetes Geneve)
//! (one pcap per capture point), the inventory that names their pods and services, a replay
//! config, and the exact topology a replay must give (`expected.json`). `score` compares a
//! replay's topology with it. Used by the scale tests and `./x bench-scale`, and by anyone
//! who wants to try a plugin on more traffic than a lab makes (`cniscope synth`).
//!
//! Real packet shapes (from the shipped captures and the labs), varied: random ISNs and IPv4
//! IDs, the same DNS payload from every client, ports from each pod's ephemeral range, pods
//! deleted mid-capture with their address reused by a new pod a second later, connections
//! already open when the capture starts, pooled connections that windows cut, a service
//! connection on the port its pod last used straight to the same backend (conntrack remaps it
//! on the way out).

mod cluster;
mod traffic;
mod wire;

pub use traffic::{Count, EdgeKey, Truth};

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("{0}")]
    Spec(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// The CNI whose datapath the captures show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// Flannel VXLAN (UDP 8472, VNI 1, flannel.1 at each node's .0).
    FlannelVxlan,
    /// Flannel host-gw: pod addresses routed between nodes as they are.
    FlannelHostGw,
    /// Calico IP-in-IP (tunl0 addresses from the IPAM blocks).
    CalicoIpip,
    /// Calico VXLAN (UDP 4789, VNI 4096).
    CalicoVxlan,
    /// Calico with BGP routes and no encapsulation.
    CalicoBgp,
    /// OVN-Kubernetes (interconnect): Geneve on UDP 6081 with OVN's port-key option, the
    /// router port at each node subnet's .1, the management port at .2; pods named by
    /// address (no southbound tables).
    OvnGeneve,
}

impl Shape {
    /// As the command line names it: `flannel-vxlan`.
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    fn plugin(self) -> &'static str {
        match self {
            Shape::FlannelVxlan | Shape::FlannelHostGw => "flannel",
            Shape::OvnGeneve => "ovn",
            _ => "calico",
        }
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct Spec {
    pub shape: Shape,
    pub connections: u32,
    pub nodes: u32,
    pub pods_per_node: u32,
    /// The capture's length; connections start uniformly over it.
    pub secs: u32,
    /// The replay window written into the config.
    pub window_secs: u32,
    pub seed: u64,
    /// The cluster's pod network, its service network and the nodes' network.
    pub pod_cidr: ([u8; 4], u8),
    pub service_cidr: ([u8; 4], u8),
    pub node_cidr: ([u8; 4], u8),
    /// The share of client pods deleted mid-capture, their address given to a new pod (which
    /// starts from the old pod's source ports, so some 5-tuples are used twice in a window).
    pub churn: f64,
    /// The share of TCP connections already open when the capture starts.
    pub open_before: f64,
}

impl Spec {
    pub fn new(shape: Shape, connections: u32) -> Spec {
        Spec {
            shape,
            connections,
            nodes: 2,
            pods_per_node: 40,
            secs: 20,
            window_secs: 5,
            seed: 1,
            pod_cidr: ([10, 244, 0, 0], 16),
            service_cidr: ([10, 96, 0, 0], 16),
            node_cidr: ([192, 168, 50, 0], 24),
            churn: 0.1,
            open_before: 0.1,
        }
    }

    fn check(&self) -> Result<(), SynthError> {
        let bad = |what: String| Err(SynthError::Spec(what));
        if !(2..=200).contains(&self.nodes) {
            return bad(format!("nodes = {}: 2 to 200", self.nodes));
        }
        if !(3..=250).contains(&self.pods_per_node) {
            return bad(format!("pods per node = {}: 3 to 250", self.pods_per_node));
        }
        if !(4..=3600).contains(&self.secs) {
            return bad(format!("seconds = {}: 4 to 3600", self.secs));
        }
        if !(1..=86400).contains(&self.window_secs) {
            return bad(format!("window = {} s: 1 to 86400", self.window_secs));
        }
        for (name, v) in [("churn", self.churn), ("open before", self.open_before)] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("{name} = {v}: a share, 0 to 1"));
            }
        }
        if self.service_cidr.1 > 22 || self.node_cidr.1 > 24 {
            return bad("the service network needs /22 or wider, the nodes' /24 or wider".into());
        }
        Ok(())
    }
}

/// A small deterministic generator (splitmix64): the same seed, the same captures.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn word(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.word() % n.max(1)
    }
    pub fn unit(&mut self) -> f64 {
        (self.word() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What [`write`] made.
#[derive(Debug)]
pub struct Written {
    pub config: PathBuf,
    pub expected: PathBuf,
    pub captures: usize,
    pub frames: u64,
    pub truth: Truth,
}

/// Writes the captures, `inventory.json`, `cniscope.toml` (plugins from `plugins`) and
/// `expected.json` into `out`, which is created.
pub fn write(spec: &Spec, out: &Path, plugins: &Path) -> Result<Written, SynthError> {
    spec.check()?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| SynthError::File {
            path,
            reason: e.to_string(),
        }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut rng = Rng::new(spec.seed);
    let c = cluster::Cluster::new(spec, &mut rng)?;

    let mut caps = wire::Captures::new();
    let mut toml = String::new();
    let mut capture = |caps: &mut wire::Captures, node: &str, iface: &str| {
        let file = format!("{node}.{iface}.pcap");
        let point = caps.open(&out.join(&file)).map_err(io(&out.join(&file)))?;
        toml += &format!(
            "\n[[replay.capture]]\npath = \"{file}\"\nnode = \"{node}\"\niface = \"{iface}\"\n"
        );
        Ok::<_, SynthError>(point)
    };
    let mut uplink = Vec::new();
    for n in &c.nodes {
        uplink.push(capture(&mut caps, &n.name, "eth0")?);
    }
    let mut veth = Vec::new();
    for p in &c.pods {
        veth.push(capture(&mut caps, &c.nodes[p.node].name, &p.veth)?);
    }
    let points = traffic::Points { veth, uplink };
    let truth = traffic::write(spec, &c, &mut rng, &mut caps, &points)?;
    let frames = caps.finish()?;

    let inventory = out.join("inventory.json");
    let text = serde_json::to_string_pretty(&c.inventory(spec)).expect("JSON of JSON values");
    std::fs::write(&inventory, text).map_err(io(&inventory))?;

    let cidr = format!(
        "{}/{}",
        cluster::Cluster::dotted(spec.pod_cidr.0),
        spec.pod_cidr.1
    );
    let options = match spec.shape.plugin() {
        "flannel" => format!("[plugin.options]\nnetwork = \"{cidr}\"\n"),
        "ovn" => format!("[plugin.options]\ncluster_networks = [\"{cidr}\"]\n"),
        _ => String::new(),
    };
    let config = out.join("cniscope.toml");
    let head = format!(
        "# Written by `cniscope synth write {shape}`: {n} connections, seed {seed}. Paths are relative to this file.\n\n\
         [plugins]\ndir = \"{plugins}\"\n\n[[plugin]]\nname = \"{plugin}\"\n{options}\n\
         [inventory]\nfiles = [\"inventory.json\"]\n\n[replay]\nwindow_secs = {window}\n",
        shape = spec.shape.name(),
        n = spec.connections,
        seed = spec.seed,
        plugins = plugins.display(),
        plugin = spec.shape.plugin(),
        window = spec.window_secs,
    );
    std::fs::write(&config, head + &toml).map_err(io(&config))?;

    let expected = out.join("expected.json");
    let doc = serde_json::json!({
        "connections": truth.connections,
        "packets": truth.packets,
        "edges": truth.edges.iter().map(|(k, v)| serde_json::json!({
            "src": k.src, "dst": k.dst, "service": k.service, "protocol": k.protocol,
            "port": k.port, "flows": v.flows, "packets": v.packets,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(&expected, serde_json::to_string_pretty(&doc).unwrap())
        .map_err(io(&expected))?;
    Ok(Written {
        config,
        expected,
        captures: c.nodes.len() + c.pods.len(),
        frames,
        truth,
    })
}

/// Reads the edges of a topology document (`replay -f json`) or of `expected.json`.
pub fn edges_of(doc: &Value) -> Result<BTreeMap<EdgeKey, Count>, String> {
    let mut out = BTreeMap::new();
    let edges = doc["edges"].as_array().ok_or("no \"edges\" list")?;
    for (i, e) in edges.iter().enumerate() {
        let text = |f: &str| {
            e[f].as_str()
                .map(str::to_string)
                .ok_or(format!("edges[{i}].{f}: not a string"))
        };
        let number = |f: &str| e[f].as_u64().ok_or(format!("edges[{i}].{f}: not a number"));
        let key = EdgeKey {
            src: text("src")?,
            dst: text("dst")?,
            service: e["service"].as_str().map(str::to_string),
            protocol: text("protocol")?,
            port: number("port")? as u16,
        };
        let count = out.entry(key).or_insert(Count::default());
        count.flows += number("flows")?;
        count.packets += number("packets")?;
    }
    Ok(out)
}

/// How a replay's topology compares with the truth.
#[derive(Debug, Default)]
pub struct Score {
    pub expected_edges: usize,
    pub found_edges: usize,
    /// Edges in both.
    pub matched: usize,
    /// Edges in both with exactly the expected flows and packets.
    pub exact: usize,
    pub expected_flows: u64,
    pub found_flows: u64,
    pub expected_packets: u64,
    pub found_packets: u64,
    /// A line per edge that is missing, extra or counted otherwise (the first 50).
    pub differences: Vec<String>,
}

impl Score {
    pub fn precision(&self) -> f64 {
        self.matched as f64 / self.found_edges.max(1) as f64
    }
    pub fn recall(&self) -> f64 {
        self.matched as f64 / self.expected_edges.max(1) as f64
    }
    /// Every edge found, nothing else, each counted exactly.
    pub fn is_exact(&self) -> bool {
        self.exact == self.expected_edges && self.found_edges == self.expected_edges
    }
}

impl std::fmt::Display for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        writeln!(
            f,
            "edges: {} expected, {} found, {} matched ({} counted exactly); precision {:.4}, recall {:.4}",
            self.expected_edges,
            self.found_edges,
            self.matched,
            self.exact,
            self.precision(),
            self.recall()
        )?;
        writeln!(
            f,
            "flows: {} expected, {} found; packets: {} expected, {} found",
            self.expected_flows, self.found_flows, self.expected_packets, self.found_packets
        )?;
        for d in &self.differences {
            writeln!(f, "  {d}")?;
        }
        Ok(())
    }
}

fn describe(k: &EdgeKey) -> String {
    let via = k
        .service
        .as_deref()
        .map(|s| format!(" via {s}"))
        .unwrap_or_default();
    format!("{} -> {}{via} {}/{}", k.src, k.dst, k.protocol, k.port)
}

pub fn score(expected: &BTreeMap<EdgeKey, Count>, found: &BTreeMap<EdgeKey, Count>) -> Score {
    let mut s = Score {
        expected_edges: expected.len(),
        found_edges: found.len(),
        expected_flows: expected.values().map(|c| c.flows).sum(),
        found_flows: found.values().map(|c| c.flows).sum(),
        expected_packets: expected.values().map(|c| c.packets).sum(),
        found_packets: found.values().map(|c| c.packets).sum(),
        ..Score::default()
    };
    let note = |s: &mut Score, line: String| {
        if s.differences.len() < 50 {
            s.differences.push(line);
        }
    };
    for (k, want) in expected {
        match found.get(k) {
            Some(got) => {
                s.matched += 1;
                if got == want {
                    s.exact += 1;
                } else {
                    note(
                        &mut s,
                        format!(
                            "counted otherwise: {} ({} flows, {} packets; expected {}, {})",
                            describe(k),
                            got.flows,
                            got.packets,
                            want.flows,
                            want.packets
                        ),
                    );
                }
            }
            None => note(
                &mut s,
                format!(
                    "missing: {} ({} flows, {} packets)",
                    describe(k),
                    want.flows,
                    want.packets
                ),
            ),
        }
    }
    for (k, got) in found {
        if !expected.contains_key(k) {
            note(
                &mut s,
                format!(
                    "not expected: {} ({} flows, {} packets)",
                    describe(k),
                    got.flows,
                    got.packets
                ),
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_writes_the_same_captures_and_truth() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let mut spec = Spec::new(Shape::CalicoIpip, 300);
        spec.pods_per_node = 8;
        let runs: Vec<Written> = dirs
            .iter()
            .map(|d| write(&spec, d.path(), Path::new("plugins")).unwrap())
            .collect();
        assert_eq!(runs[0].truth.connections, 300);
        assert_eq!(runs[0].frames, runs[1].frames);
        let read = |d: &tempfile::TempDir, f: &str| std::fs::read(d.path().join(f)).unwrap();
        assert_eq!(
            read(&dirs[0], "expected.json"),
            read(&dirs[1], "expected.json")
        );
        assert_eq!(
            read(&dirs[0], "worker-1.eth0.pcap"),
            read(&dirs[1], "worker-1.eth0.pcap")
        );
        let packets: u64 = runs[0].truth.edges.values().map(|c| c.packets).sum();
        assert_eq!(packets, runs[0].truth.packets);
    }

    #[test]
    fn a_score_names_what_is_missing_extra_or_counted_otherwise() {
        let key = |dst: &str| EdgeKey {
            src: "pod/default/a".into(),
            dst: dst.into(),
            service: None,
            protocol: "tcp".into(),
            port: 80,
        };
        let c = |flows, packets| Count { flows, packets };
        let expected = BTreeMap::from([(key("x"), c(2, 20)), (key("y"), c(1, 8))]);
        let found = BTreeMap::from([(key("x"), c(2, 19)), (key("z"), c(1, 8))]);
        let s = score(&expected, &found);
        assert_eq!((s.matched, s.exact), (1, 0));
        assert!(!s.is_exact());
        assert_eq!(s.differences.len(), 3, "{s}");
        assert!(score(&expected, &expected).is_exact());
    }
}
