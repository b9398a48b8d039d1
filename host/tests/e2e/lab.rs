//! Live capture on the Flannel labs (VXLAN and host-gw): real namespaces, real VXLAN and NAT,
//! the real probes.

use crate::support::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Lab tests run one at a time: the SIGKILL test counts every probe link in the kernel.
pub static LAB_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A lab in namespaces named `<id>-*`, removed on drop, also when the test fails.
pub struct Lab {
    pub id: String,
    /// tests/lab/<script>: flannel.sh or calico.sh.
    script: &'static str,
    dir: tempfile::TempDir,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Lab {
    fn up(tag: &str, backend: &str) -> Lab {
        Lab::build("flannel.sh", tag, backend)
    }

    /// Builds the lab of `tests/lab/<script>` in `mode`, one lab at a time.
    pub fn build(script: &'static str, tag: &str, mode: &str) -> Lab {
        let serial = LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let id = format!("cs{}{tag}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let lab = Lab {
            id,
            script,
            dir,
            _serial: serial,
        };
        lab.script(&["up", &lab.id, lab.dir.path().to_str().unwrap(), mode]);
        lab
    }

    /// Builds the lab of `script` in `mode`, captures `script ACTION ID` with the agent (its
    /// plugin, from the lab's config), and returns the lab and the topology, after checking
    /// what every lab run must give: nothing dropped, no endpoint the inventory cannot name.
    pub fn capture(script: &'static str, mode: &str, tag: &str, action: &str) -> (Lab, Value) {
        plugin(script.trim_end_matches(".sh"));
        let lab = Lab::build(script, tag, mode);
        lab.agent_settings(1, "duration_secs = 10");
        let agent = lab.start_agent();
        lab.script(&[action, &lab.id]);
        let doc = finish(agent);
        for (k, v) in doc["health"]["drops"].as_object().unwrap() {
            assert_eq!(v, 0, "{k}");
        }
        assert!(
            doc["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| !n["id"].as_str().unwrap().starts_with("unknown/")),
            "{doc:#}"
        );
        (lab, doc)
    }

    pub fn script(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(root().join("tests/lab").join(self.script))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lab {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("cniscope.toml")
    }

    /// The folder of the lab's inventory and config.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Sets `[agent]` keys of the lab's config (replacing the interval the lab wrote).
    pub fn agent_settings(&self, interval_secs: u32, extra: &str) {
        let c = std::fs::read_to_string(self.config()).unwrap();
        let c = c.replace(
            "interval_secs = 1\n",
            &format!("interval_secs = {interval_secs}\n{extra}\n"),
        );
        std::fs::write(self.config(), c).unwrap();
    }

    /// Starts the agent and waits until it has published once (the probes are attached).
    pub fn start_agent(&self) -> Child {
        self.start_agent_with_env(&[])
    }

    /// [`Lab::start_agent`] with these environment variables set.
    pub fn start_agent_with_env(&self, env: &[(&str, &str)]) -> Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cniscope"))
            .envs(env.iter().copied())
            .args([
                "run",
                "--config",
                self.config().to_str().unwrap(),
                "--format",
                "json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let published = self.dir.path().join("topology.json");
        let t = Instant::now();
        while !published.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                panic!(
                    "the agent exited ({status}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the agent never published"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        child
    }

    fn namespaces_left(&self) -> usize {
        namespaces_of(&self.id)
    }
}

/// Network namespaces of lab `id` (`<id>-*`) on the machine.
fn namespaces_of(id: &str) -> usize {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("{id}-")))
        .count()
}

/// `cniscope ARGS` from the checkout's root.
pub fn cniscope(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cniscope"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("tests/lab").join(self.script))
            .args(["down", &self.id])
            .status();
    }
}

pub fn finish(agent: Child) -> Value {
    let out = agent.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "agent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON topology on stdout")
}

pub fn edge<'a>(
    doc: &'a Value,
    src: &str,
    dst: &str,
    proto: &str,
    service: Option<&str>,
) -> &'a Value {
    doc["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["src"] == src
                && e["dst"] == dst
                && e["protocol"] == proto
                && e["service"].as_str() == service
        })
        .unwrap_or_else(|| {
            panic!(
                "no edge {src} -> {dst} {proto} via {service:?} in {:#}",
                doc["edges"]
            )
        })
}

/// Every edge's path verdict is `ok`, but those listed: (src, dst, verdict). A healthy lab's
/// connections all got through; the listed ones are the lab's own failures.
pub fn assert_paths(doc: &Value, failures: &[(&str, &str, &str)]) {
    for e in doc["edges"].as_array().unwrap() {
        let expected = failures
            .iter()
            .find(|f| e["src"] == f.0 && e["dst"] == f.1)
            .map_or("ok", |f| f.2);
        assert_eq!(
            e["path"]["verdict"], expected,
            "{} -> {}: {:#}",
            e["src"], e["dst"], e["path"]
        );
    }
}

pub fn has(e: &Value, evidence: &str) -> bool {
    e["evidence"].as_array().unwrap().contains(&evidence.into())
}

#[test]
fn live_capture_on_the_flannel_vxlan_lab_names_every_real_edge_once() {
    flannel_lab_edges("vxlan");
}

#[test]
fn live_capture_on_the_flannel_host_gw_lab_names_every_real_edge_once() {
    flannel_lab_edges("host-gw");
}

/// The lab's traffic (tests/lab/flannel.sh traffic) gives exactly these 7 edges.
fn flannel_lab_edges(backend: &str) {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    let tag = if backend == "vxlan" { "l" } else { "h" };
    let (lab, doc) = Lab::capture("flannel.sh", backend, tag, "traffic");
    let tunnel = format!("flannel:{backend}");

    // Exactly these edges, no duplicates (and, from capture, no phantom endpoints).
    let edges = doc["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 7, "{doc:#}");
    let cross = edge(
        &doc,
        "pod/default/client-a1",
        "pod/default/server-b1",
        "tcp",
        None,
    );
    assert_eq!(cross["port"], 8080);
    // 3 echo rounds: handshake, 3 x (data, ack, echo, ack) with some ACKs coalesced, teardown.
    let pk = cross["packets"].as_u64().unwrap();
    assert!((12..=18).contains(&pk), "{pk} packets");
    assert!(has(cross, &tunnel), "{cross:#}");
    assert_eq!(cross["flows"], 1, "one connection, counted once");
    let points = cross["observed_at"].as_array().unwrap();
    assert!(
        points
            .iter()
            .any(|p| p.as_str().unwrap().starts_with("node-a/vethclienta1"))
    );
    assert!(
        points
            .iter()
            .any(|p| p.as_str().unwrap().starts_with("node-b/eth0")),
        "{points:?}"
    );
    let via = edge(
        &doc,
        "pod/default/client-a1",
        "pod/default/server-b1",
        "tcp",
        Some("service/default/echo"),
    );
    assert_eq!(via["port"], 8080, "the server's port after DNAT");
    assert!(has(via, "service:dnat") && has(via, &tunnel), "{via:#}");
    // masqueradeAll: server-b1 saw node a's address (10.244.0.0 or 192.168.77.11), yet the
    // edge is the client pod's, through that service.
    let masq = edge(
        &doc,
        "pod/default/client-a1",
        "pod/default/server-b1",
        "tcp",
        Some("service/default/echo-masq"),
    );
    assert_eq!(masq["port"], 8080);
    assert_eq!(masq["flows"], 1);
    let pk = masq["packets"].as_u64().unwrap();
    assert!((8..=14).contains(&pk), "2 echo rounds: {pk} packets");
    assert!(
        has(masq, "nat:snat-recovered") && has(masq, "service:dnat"),
        "{masq:#}"
    );
    assert_eq!(
        edge(
            &doc,
            "pod/default/client-a1",
            "pod/default/server-b1",
            "udp",
            None
        )["packets"],
        10,
        "5 datagrams, 5 replies"
    );
    assert_eq!(
        edge(
            &doc,
            "pod/default/client-a1",
            "pod/default/peer-a2",
            "tcp",
            None
        )["port"],
        8080
    );
    // The node's own ping: from flannel.1's 10.244.0.0 (vxlan) or the node IP (host-gw).
    let ping = edge(&doc, "node/node-a", "pod/default/server-b1", "icmp", None);
    assert_eq!(ping["packets"], 4, "2 requests, 2 replies");
    if backend == "vxlan" {
        assert!(has(ping, "gateway-unresolved"), "{ping:#}");
    }
    // Through flanneld's MASQUERADE the external host sees node-a; the edge is the pod's.
    let out = edge(
        &doc,
        "pod/default/client-a1",
        "external/192.168.77.100",
        "tcp",
        None,
    );
    assert_eq!(out["port"], 9000);
    assert!(has(out, "nat:masquerade"), "{out:#}");
    assert_paths(&doc, &[]);

    lab_down(lab);
}

/// Tears the lab down and checks nothing is left.
pub fn lab_down(lab: Lab) {
    lab.script(&["down", &lab.id]);
    assert_eq!(lab.namespaces_left(), 0, "namespaces left behind");
}

#[test]
fn full_maps_and_ring_buffers_are_counted_not_silent() {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    plugin("flannel");
    let lab = Lab::up("d", "vxlan");
    // 64 flows per interval (and one cache slot per CPU in front), a 4 KiB ring buffer (about
    // 36 events), then 600 new flows. The kernel drop program switched off.
    lab.agent_settings(
        3,
        "duration_secs = 4\nflow_entries = 64\nflow_cache_slots = 1\nringbuf_bytes = 4096\nkernel_drops = false",
    );
    let agent = lab.start_agent();
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("{}-client-a1", lab.id), "python3"])
        .arg(root().join("tests/lab/echo.py"))
        .args(["flood", "10.244.1.2", "600"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = finish(agent);
    let drops = &doc["health"]["drops"];
    let map_full = drops["probe node-a: flow map full (packets not recorded)"]
        .as_u64()
        .unwrap();
    let ring_full = drops["probe node-a: ring buffer full (new-flow events lost)"]
        .as_u64()
        .unwrap();
    assert!(map_full >= 400, "600 flows into 64 slots: {drops:#}");
    assert!(ring_full >= 10, "64 events into a 4 KiB ring: {drops:#}");
    // Switched off: not loaded, nothing said of it.
    assert!(
        doc["health"]["kernel_drops"].is_null(),
        "{:#}",
        doc["health"]
    );
    assert!(
        drops
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("kernel drops"))
    );
    lab_down(lab);
}

/// BPF links (TCX attachments) whose program is one of our probes, in the whole kernel.
fn probe_links() -> usize {
    let ours: std::collections::HashSet<u32> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("cniscope_")))
        .map(|p| p.id())
        .collect();
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .filter(|l| ours.contains(&l.prog_id))
        .count()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Pods come and go: each deleted veth's links are detached and closed (they used to stay
/// open, two descriptors and two kernel links per deleted veth, until the agent ran out of
/// descriptors and stopped attaching new ones).
#[test]
fn deleted_veths_leave_no_link_or_descriptor_behind() {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    plugin("flannel");
    let lab = Lab::up("churn", "vxlan");
    lab.agent_settings(1, "duration_secs = 120");
    let agent = lab.start_agent();
    std::thread::sleep(Duration::from_secs(1));
    let (links, fds) = (probe_links(), open_fds(agent.id()));
    let ns = format!("{}-na", lab.id);
    let ip = |args: &[&str]| {
        let ok = Command::new("ip")
            .args(["-n", &ns])
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip {args:?}");
    };
    let wait_links = |want: usize, what: &str| {
        let t = Instant::now();
        while probe_links() != want {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{what}: {} probe links, want {want}",
                probe_links()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    for i in 0..25 {
        let veth = format!("vethchurn{i}");
        ip(&[
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            &format!("churnp{i}"),
        ]);
        ip(&["link", "set", &veth, "up"]);
        wait_links(links + 2, "attached to the new veth");
        ip(&["link", "del", &veth]);
        wait_links(links, "the deleted veth's links closed");
    }
    assert!(
        open_fds(agent.id()) <= fds + 2,
        "descriptors: {fds} before, {} after 25 veths",
        open_fds(agent.id())
    );
    terminate(&agent);
    let doc = finish(agent);
    assert_eq!(doc["health"]["errors"], serde_json::json!([]), "{doc:#}");
    lab_down(lab);
}

/// The soak script (`./x soak`) for 20 seconds: pods created and deleted every second under
/// steady traffic; the agent's descriptors, links and memory stay flat.
#[test]
fn a_short_soak_stays_flat() {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    plugin("flannel");
    let _serial = LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new("bash")
        .arg(root().join("tests/lab/soak.sh"))
        .args(["20", env!("CARGO_BIN_EXE_cniscope")])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("flat"), "{stdout}");
    assert!(stdout.contains("dropped 0"), "{stdout}");
}

#[test]
fn sigterm_stops_cleanly_and_sigkill_leaves_no_attachment_behind() {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    plugin("flannel");
    let lab = Lab::up("k", "vxlan");
    lab.agent_settings(1, "duration_secs = 120");
    let baseline = probe_links();

    // SIGTERM: the agent stops, drains, prints the topology and exits 0.
    let agent = lab.start_agent();
    assert!(
        probe_links() >= baseline + 2,
        "the probes are attached (ingress and egress per interface)"
    );
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let doc = finish(agent);
    assert!(
        doc["health"]["probes"]["node-a"]["packets"].is_u64(),
        "{doc:#}"
    );
    assert_eq!(probe_links(), baseline, "a clean stop detaches everything");

    // SIGKILL: no chance to clean up, yet TCX links die with the process's file descriptors.
    std::fs::remove_file(lab.dir.path().join("topology.json")).unwrap();
    let mut agent = lab.start_agent();
    assert!(probe_links() >= baseline + 2);
    agent.kill().unwrap();
    agent.wait().unwrap();
    let t = Instant::now();
    while probe_links() > baseline && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        probe_links(),
        baseline,
        "attachments left behind after SIGKILL"
    );
    lab_down(lab);
}

#[test]
fn cniscope_demo_builds_captures_prints_and_tears_down_its_lab() {
    if !root_or_skip("the lab and the probes need root") {
        return;
    }
    plugin("calico");
    let _serial = LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = cniscope(&["demo", "calico-bgp", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON topology");
    // The lab's traffic and its service shapes: a few of the edges the lab tests check in full.
    let (client, server) = ("pod/default/client-a1", "pod/default/server-b1");
    assert!(has(edge(&doc, client, server, "tcp", None), "calico:bgp"));
    edge(&doc, client, server, "tcp", Some("service/default/echo"));
    edge(
        &doc,
        "external/192.168.88.100",
        server,
        "tcp",
        Some("service/default/web-np"),
    );
    // Nothing of the demo's lab is left.
    let demo = format!("csdemo{}", out_pid_hint(&out.stderr));
    assert_eq!(namespaces_of(&demo), 0, "namespaces {demo}-* left behind");
}

/// The demo's lab id, from what it printed ("... namespaces csdemoN-* ...").
fn out_pid_hint(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.split("namespaces csdemo")
        .nth(1)
        .and_then(|rest| rest.split('-').next())
        .expect("the demo names its namespaces")
        .to_string()
}

#[test]
fn cniscope_lab_up_and_down_leave_nothing_behind() {
    if !root_or_skip("the lab needs root") {
        return;
    }
    let _serial = LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let id = format!("cs{}u", std::process::id());
    let ok = |args: &[&str]| {
        let out = cniscope(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let d = dir.path().to_str().unwrap();
    ok(&["lab", "up", "ovn", "--id", &id, "--dir", d]);
    assert!(
        namespaces_of(&id) >= 6,
        "underlay, external host, 2 nodes, 3 pods"
    );
    let config = std::fs::read_to_string(dir.path().join("cniscope.toml")).unwrap();
    assert!(config.contains("name = \"ovn\"") && config.contains("port_bindings"));
    // The same id again: refused, and the running lab left up.
    let before = namespaces_of(&id);
    let out = cniscope(&["lab", "up", "flannel-vxlan", "--id", &id, "--dir", d]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already up"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(namespaces_of(&id), before, "the running lab is untouched");
    ok(&["lab", "down", "--id", &id]);
    assert_eq!(namespaces_of(&id), 0);
    // An unknown scenario names the known ones.
    let out = cniscope(&["lab", "up", "weave", "--id", &id, "--dir", d]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("flannel-vxlan"));
}
