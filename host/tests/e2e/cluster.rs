//! Cluster mode against a real nats-server with JetStream (started here on a free loopback
//! port with a temporary store): agents per node, the aggregator, and the faults that must
//! lose nothing and count nothing twice.
// Without live capture only the lab-free tests are built: some helpers go unused.
#![cfg_attr(not(feature = "live"), allow(dead_code))]

use crate::support::*;
use cniscope::cluster::wire::{NodeBatch, NodeHealth};
use cniscope::sources::decode::Decoding;
use cniscope::sources::replay::Replay;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A nats-server with JetStream, on loopback, with its store in a temporary folder.
pub struct NatsServer {
    pub port: u16,
    store: tempfile::TempDir,
    /// Options beside the port and the store (TLS, users).
    extra: Vec<String>,
    child: Option<Child>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        NatsServer::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = NatsServer {
            port,
            store: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        s.run();
        s
    }

    fn run(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (./x setup installs it)");
        self.child = Some(child);
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "nats-server not up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (its store stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&c);
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ready() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The plugin and inventory part of a config (everything before `[agent]`), with paths made
/// absolute against `dir`.
fn head_of(config: &Path, dir: &Path) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let head = text.split("[agent]").next().unwrap().to_string();
    head.replace(
        "files = [\"inventory.json\"]",
        &format!("files = [\"{}\"]", dir.join("inventory.json").display()),
    )
}

/// The cluster around one lab: an agent per node, the aggregator, and `cniscope run` on the
/// same traffic to compare with.
#[cfg(feature = "live")]
mod lab {
    use super::*;
    use crate::lab::Lab;

    pub struct Cluster {
        pub lab: Lab,
        pub nats: NatsServer,
        work: tempfile::TempDir,
        pub agents: Vec<Running>,
        pub aggregator: Option<Running>,
        pub run: Running,
        /// The aggregator's max_lateness_secs.
        lateness: u32,
    }

    impl Cluster {
        /// The lab of `script` in `mode`, with agents, `run` and an aggregator allowing
        /// `lateness` seconds.
        pub fn up(script: &'static str, mode: &str, tag: &str, lateness: u32) -> Cluster {
            plugin(script.trim_end_matches(".sh"));
            let lab = Lab::build(script, tag, mode);
            let nats = NatsServer::start();
            let work = tempfile::tempdir().unwrap();
            let head = head_of(&lab.config(), lab.dir());
            let nats_section = format!("\n[nats]\nurl = \"{}\"\n", nats.url());
            let mut agents = Vec::new();
            for (node, ns) in [("node-a", "na"), ("node-b", "nb")] {
                let path = work.path().join(format!("agent-{node}.toml"));
                std::fs::write(
                    &path,
                    format!(
                        "{head}{nats_section}\n[agent]\ninterval_secs = 1\n\n[[agent.node]]\nname = \"{node}\"\nnetns = \"{}-{ns}\"\n",
                        lab.id
                    ),
                )
                .unwrap();
                agents.push(Running::start(
                    &["agent", "-c", path.to_str().unwrap()],
                    work.path().join(format!("agent-{node}.err")),
                ));
            }
            std::fs::write(
                work.path().join("aggregate.toml"),
                format!(
                    "{head}{nats_section}\n[aggregate]\ninterval_secs = 1\nmax_lateness_secs = {lateness}\noutput_file = \"topology.json\"\nstate_file = \"aggregate.state\"\n"
                ),
            )
            .unwrap();
            let run = Running::start(
                &[
                    "run",
                    "-c",
                    lab.config().to_str().unwrap(),
                    "--format",
                    "json",
                ],
                work.path().join("run.err"),
            );
            let mut c = Cluster {
                lab,
                nats,
                work,
                agents,
                aggregator: None,
                run,
                lateness,
            };
            c.start_aggregator();
            // Every process has captured or written once: the probes are attached.
            let (run_out, agg_out) = (c.lab.dir().join("topology.json"), c.output());
            wait_for("the first windows", Duration::from_secs(60), || {
                run_out.exists() && agg_out.exists()
            });
            std::thread::sleep(Duration::from_secs(1));
            c
        }

        pub fn start_aggregator(&mut self) {
            let config = self.work.path().join("aggregate.toml");
            self.aggregator = Some(Running::start(
                &[
                    "aggregate",
                    "-c",
                    config.to_str().unwrap(),
                    "--format",
                    "json",
                ],
                self.work.path().join("aggregate.err"),
            ));
        }

        pub fn output(&self) -> PathBuf {
            self.work.path().join("topology.json")
        }

        pub fn traffic(&self) {
            self.lab.script(&["traffic", &self.lab.id]);
        }

        /// Stops the agents and `run`, lets the aggregator write what they sent, stops it;
        /// returns (run's topology, the aggregator's).
        pub fn finish(mut self) -> (Value, Value) {
            for a in &mut self.agents {
                a.stop();
            }
            let run: Value = serde_json::from_str(&self.run.stop()).unwrap();
            // Everything the agents sent is written once its window is past the lateness.
            std::thread::sleep(Duration::from_secs(u64::from(self.lateness) + 2));
            let agg: Value =
                serde_json::from_str(&self.aggregator.as_mut().unwrap().stop()).unwrap();
            (run, agg)
        }
    }

    fn assert_same(run: &Value, agg: &Value) {
        assert!(!edges(run).is_empty());
        assert_eq!(edges(agg), edges(run), "aggregated vs single-process");
        let a = &agg["health"]["aggregate"];
        assert_eq!(a["late_batches"], 0, "{a:#}");
        assert_eq!(a["bad_messages"], serde_json::json!({}), "{a:#}");
        for (k, v) in agg["health"]["drops"].as_object().unwrap() {
            assert_eq!(v, 0, "{k}");
        }
    }

    #[test]
    fn agents_and_the_aggregator_give_what_run_gives_on_the_flannel_lab() {
        if !root_or_skip("the lab and the probes need root") {
            return;
        }
        let c = Cluster::up("flannel.sh", "vxlan", "cf", 8);
        c.traffic();
        c.lab.script(&["services", &c.lab.id]);
        let (run, agg) = c.finish();
        assert_same(&run, &agg);
        // The views that name the client live on two nodes: only together do they.
        assert!(
            edges(&agg).iter().any(|e| e.starts_with(
                "pod/default/client-a1 -> pod/default/server-b1 via service/default/echo-masq"
            )),
            "{:#?}",
            edges(&agg)
        );
    }

    #[test]
    fn agents_and_the_aggregator_give_what_run_gives_on_the_calico_lab() {
        if !root_or_skip("the lab and the probes need root") {
            return;
        }
        let c = Cluster::up("calico.sh", "bgp", "cc", 8);
        c.traffic();
        let (run, agg) = c.finish();
        assert_same(&run, &agg);
    }

    /// The aggregator SIGKILLed between two rounds of traffic and restarted, then nats-server
    /// stopped for 5 s and restarted while the agents publish: every connection is still
    /// counted exactly once. (`max_lateness_secs` is above the outage: a broker away longer
    /// than it makes the batches held back late, counted in health.)
    #[test]
    fn an_aggregator_killed_and_a_broker_restarted_lose_nothing_and_count_nothing_twice() {
        if !root_or_skip("the lab and the probes need root") {
            return;
        }
        let mut c = Cluster::up("flannel.sh", "vxlan", "ck", 10);
        c.traffic();
        // Let it write some windows, then kill it without a chance to flush anything.
        std::thread::sleep(Duration::from_secs(3));
        c.aggregator.as_mut().unwrap().kill();
        c.lab.script(&["services", &c.lab.id]);
        c.start_aggregator();
        std::thread::sleep(Duration::from_secs(2));
        c.nats.stop();
        std::thread::sleep(Duration::from_secs(5));
        c.nats.restart();
        c.traffic();
        std::thread::sleep(Duration::from_secs(3));
        let (run, agg) = c.finish();
        assert_same(&run, &agg);
    }

    /// One agent stops: its node goes stale and is named in health; the other node's edges
    /// still come out within max_lateness.
    #[test]
    fn a_silent_agent_is_named_stale_and_holds_nothing_back() {
        if !root_or_skip("the lab and the probes need root") {
            return;
        }
        let mut c = Cluster::up("flannel.sh", "vxlan", "cs", 3);
        c.agents[1].stop();
        // node-a's own connection (client-a1 -> peer-a2 stays on node-a).
        c.traffic();
        let output = c.output();
        let mut last = Value::Null;
        wait_for("node-b named stale", Duration::from_secs(30), || {
            last = std::fs::read_to_string(&output)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            last["health"]["aggregate"]["stale_nodes"] == serde_json::json!(["node-b"])
                && edges(&last)
                    .iter()
                    .any(|e| e.starts_with("pod/default/client-a1 -> pod/default/peer-a2"))
        });
        assert!(
            last["health"]["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e.as_str().unwrap().contains("node-b is stale")),
            "{:#}",
            last["health"]
        );
    }
}

/// Node batches made from the shipped capture (its two nodes' observations), as agents
/// would publish them.
fn shipped_batches() -> Vec<NodeBatch> {
    let specs: Vec<_> = lab_captures().iter().map(|s| s.parse().unwrap()).collect();
    let mut replay = Replay::open(&specs, Decoding::default(), 600_000_000_000).unwrap();
    let mut batches = Vec::new();
    replay.run(|points, obs, end| {
        for node in ["node-a", "node-b"] {
            let mine: Vec<_> = obs
                .iter()
                .filter(|o| points.get(o.key.point).node == node)
                .cloned()
                .collect();
            let start = mine.iter().map(|o| o.first_ns).min().unwrap_or(end);
            batches.extend(NodeBatch::chunks(
                node,
                7,
                0,
                (start, end),
                points,
                &mine,
                &NodeHealth::default(),
                8192,
            ));
        }
    });
    assert_eq!(batches.len(), 2);
    batches
}

/// The topology the shipped capture's replay gives: what the aggregator must give from the
/// same observations published as batches.
fn replay_topology() -> Value {
    topology(&[
        "replay",
        "--config",
        "examples/flannel-vxlan-demo.toml",
        "--format",
        "json",
    ])
}

/// Publishes raw messages to the observation stream (creating it), each with its message ID.
fn publish(url: &str, messages: Vec<(String, Option<String>, Vec<u8>)>) {
    publish_with(async_nats::ConnectOptions::new(), url, messages)
}

fn publish_with(
    options: async_nats::ConnectOptions,
    url: &str,
    messages: Vec<(String, Option<String>, Vec<u8>)>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = options.connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        cniscope::cluster::nats::observation_stream(&js)
            .await
            .unwrap();
        for (subject, id, body) in messages {
            let mut m =
                async_nats::jetstream::message::PublishMessage::build().payload(body.into());
            if let Some(id) = id {
                m = m.message_id(id);
            }
            js.send_publish(subject, m).await.unwrap().await.unwrap();
        }
    });
}

/// Everything published on a core NATS subject while it lives.
struct Listener {
    messages: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    /// Subscribed (confirmed by the server) when this returns.
    fn start(url: &str, subject: &'static str) -> Listener {
        use std::sync::atomic::Ordering;
        let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (url, kept, stopped) = (url.to_string(), messages.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use futures::StreamExt;
                let client = async_nats::connect(url).await.unwrap();
                let mut sub = client.subscribe(subject).await.unwrap();
                client.flush().await.unwrap();
                ready_tx.send(()).unwrap();
                while !stopped.load(Ordering::Relaxed) {
                    if let Ok(Some(m)) =
                        tokio::time::timeout(Duration::from_millis(100), sub.next()).await
                    {
                        kept.lock().unwrap().push(m.payload.to_vec());
                    }
                }
            });
        });
        ready.recv_timeout(Duration::from_secs(10)).unwrap();
        Listener {
            messages,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.messages.lock().unwrap())
    }
}

/// Without a lab: the shipped capture's two nodes as published batches, one re-sent under
/// its own message ID (JetStream stores it once), one re-sent under another (the aggregator
/// counts it once), plus a message of another version and a truncated one (rejected,
/// counted, the rest still written). The aggregated topology equals the replay's.
#[test]
fn resent_bad_and_good_batches_give_exactly_the_replays_topology() {
    plugin("flannel");
    let nats = NatsServer::start();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("aggregate.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "[plugins]\ndir = \"{}\"\n[[plugin]]\nname = \"flannel\"\n[plugin.options]\nnetwork = \"10.244.0.0/16\"\n[inventory]\nfiles = [\"{}\"]\n[nats]\nurl = \"{}\"\n[aggregate]\ninterval_secs = 60\nmax_lateness_secs = 1\nstate_file = \"state\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n",
            root().join("dist/plugins").display(),
            data("flannel-vxlan/inventory.json").display(),
            nats.url()
        ),
    )
    .unwrap();
    let batches = shipped_batches();
    let (a, b) = (&batches[0], &batches[1]);
    let id = |b: &NodeBatch| cniscope::cluster::message_id(b);
    let subject = |b: &NodeBatch| cniscope::cluster::obs_subject(&b.node);
    let mut other_version = a.encode();
    other_version[4] = 99;
    let whole = b.encode();
    publish(
        &nats.url(),
        vec![
            (subject(a), Some(id(a)), a.encode()),
            (subject(a), Some(id(a)), a.encode()),
            (subject(b), Some(id(b)), whole.clone()),
            (subject(b), Some("another-id".into()), whole.clone()),
            (subject(a), Some("v99".into()), other_version),
            (
                subject(b),
                Some("cut".into()),
                whole[..whole.len() / 2].to_vec(),
            ),
        ],
    );
    let listener = Listener::start(&nats.url(), cniscope::cluster::TOPOLOGY_SUBJECT);
    let mut agg = Running::start(
        &["aggregate", "-c", config.to_str().unwrap(), "-f", "json"],
        work.path().join("aggregate.err"),
    );
    std::thread::sleep(Duration::from_secs(4));
    // The aggregator serves what it writes, and each node's silence.
    let (status, served) = http_get(port, "/api/topology", &[]);
    assert_eq!(status, 200, "{served}");
    let served: Value = serde_json::from_str(&served).unwrap();
    let (_, metrics) = http_get(port, "/metrics", &[]);
    assert!(
        metrics.contains("cniscope_node_stale{node=\"node-a\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cniscope_node_silent_seconds{node=\"node-b\"}"),
        "{metrics}"
    );
    let doc: Value = serde_json::from_str(&agg.stop()).unwrap();
    assert_eq!(edges(&served), edges(&doc));
    // One window was written, and its topology published: the same edges, and the
    // output contract's document.
    let published = listener.stop();
    assert_eq!(published.len(), 1, "one window, one topology message");
    let message: Value = serde_json::from_slice(&published[0]).unwrap();
    assert_eq!(edges(&message), edges(&doc));
    assert_eq!(message["health"]["aggregate"]["windows_written"], 1);
    let replay = replay_topology();
    assert_eq!(edges(&doc), edges(&replay));
    let h = &doc["health"]["aggregate"];
    assert_eq!(h["duplicate_batches"], 1, "{h:#}");
    assert_eq!(
        h["bad_messages"],
        serde_json::json!({"another wire version": 1, "body does not decode": 1}),
        "{h:#}"
    );
    let log = agg.stderr();
    assert!(
        log.contains(&format!(
            "observation batch version 99, this aggregator reads version {}",
            cniscope::cluster::wire::VERSION
        )),
        "{log}"
    );

    // The checkpoint holds the plugin's state across windows; a new instance takes it back
    // in silence, and one that cannot read it says so and counts it in the plugin's health.
    let state_file = work.path().join("state");
    let mut checkpoint: Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert!(
        checkpoint["plugins"]["flannel"]
            .as_str()
            .is_some_and(|s| s.len() > 8),
        "{}",
        checkpoint["plugins"]
    );
    let restart = |name: &str| {
        let mut again = Running::start(
            &["aggregate", "-c", config.to_str().unwrap(), "-f", "json"],
            work.path().join(name),
        );
        std::thread::sleep(Duration::from_secs(2));
        let doc: Value = serde_json::from_str(&again.stop()).unwrap();
        (doc, again.stderr())
    };
    let (again, log) = restart("again.err");
    assert!(!log.contains("without its state"), "{log}");
    assert_eq!(
        edges(&again),
        edges(&replay),
        "restored, nothing counted again"
    );
    assert_eq!(again["health"]["plugins"]["flannel"]["errors"], 0);
    // The state format's version byte (3) and nothing else: truncated.
    checkpoint["plugins"]["flannel"] = "Aw==".into();
    std::fs::write(&state_file, checkpoint.to_string()).unwrap();
    let (broken, log) = restart("broken.err");
    assert!(
        log.contains("flannel") && log.contains("the plugin starts without its state"),
        "{log}"
    );
    assert!(log.contains("the saved state is truncated"), "{log}");
    assert_eq!(broken["health"]["plugins"]["flannel"]["errors"], 1);
}

/// The aggregator with its inventory from the Kubernetes API (the list/watch stand-in fed
/// from the lab's dump) instead of the dump itself: the same topology as the replay's, and
/// `health.inventory` says the watches are synced.
#[cfg(feature = "kubernetes")]
#[test]
fn an_aggregator_following_the_api_names_what_its_dump_names() {
    plugin("flannel");
    let nats = NatsServer::start();
    let api = crate::kube_api::FakeApi::start(&[&data("flannel-vxlan/inventory.json")]);
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("aggregate.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins]\ndir = \"{}\"\n[[plugin]]\nname = \"flannel\"\n[plugin.options]\nnetwork = \"10.244.0.0/16\"\n[inventory]\nkubernetes = true\nkubeconfig = \"{}\"\n[nats]\nurl = \"{}\"\n[aggregate]\ninterval_secs = 60\nmax_lateness_secs = 1\nstate_file = \"state\"\n",
            root().join("dist/plugins").display(),
            api.kubeconfig(work.path()).display(),
            nats.url()
        ),
    )
    .unwrap();
    let batches = shipped_batches();
    publish(
        &nats.url(),
        batches
            .iter()
            .map(|b| {
                (
                    cniscope::cluster::obs_subject(&b.node),
                    Some(cniscope::cluster::message_id(b)),
                    b.encode(),
                )
            })
            .collect(),
    );
    let mut agg = Running::start(
        &["aggregate", "-c", config.to_str().unwrap(), "-f", "json"],
        work.path().join("aggregate.err"),
    );
    std::thread::sleep(Duration::from_secs(4));
    let doc: Value = serde_json::from_str(&agg.stop()).unwrap();
    assert_eq!(edges(&doc), edges(&replay_topology()), "{}", agg.stderr());
    let inventory = &doc["health"]["inventory"];
    assert_eq!(inventory["synced"], true, "{inventory:#}");
    assert_eq!(inventory["kinds"]["v1 Pod"]["objects"], 3, "{inventory:#}");
}

/// A test CA, and a server and a client certificate it signed, as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn write(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "cniscope test CA");
        let ca = ca.self_signed(&ca_key).unwrap();
        let leaf = |names: Vec<String>, stem: &str| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &ca, &ca_key)
                .unwrap();
            let (c, k) = (
                dir.join(format!("{stem}.pem")),
                dir.join(format!("{stem}.key")),
            );
            std::fs::write(&c, cert.pem()).unwrap();
            std::fs::write(&k, key.serialize_pem()).unwrap();
            (c, k)
        };
        let (server_cert, server_key) =
            leaf(vec!["127.0.0.1".into(), "localhost".into()], "server");
        let (client_cert, client_key) = leaf(vec!["cniscope-aggregate".into()], "client");
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        Pki {
            ca: ca_path,
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }
}

/// A broker behind mutual TLS and a password is reached with the `[nats]` keys the `nats`
/// CLI knows (tlsca, tlscert, tlskey, user, password), and the aggregated topology is the
/// replay's; with a wrong password, the aggregator says so in one line and keeps trying.
#[test]
fn a_broker_behind_mutual_tls_and_a_password_is_reached_with_the_nats_cli_keys() {
    plugin("flannel");
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::write(work.path());
    let p = |p: &PathBuf| p.to_str().unwrap().to_string();
    let nats = NatsServer::start_with(&[
        "--tls",
        "--tlscert",
        &p(&pki.server_cert),
        "--tlskey",
        &p(&pki.server_key),
        "--tlsverify",
        "--tlscacert",
        &p(&pki.ca),
        "--user",
        "aggregator",
        "--pass",
        "s3cret",
    ]);
    let config = |password: &str, name: &str| {
        let path = work.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[plugins]\ndir = \"{}\"\n[[plugin]]\nname = \"flannel\"\n[plugin.options]\nnetwork = \"10.244.0.0/16\"\n[inventory]\nfiles = [\"{}\"]\n[nats]\nurl = \"{}\"\ntlsca = \"{}\"\ntlscert = \"{}\"\ntlskey = \"{}\"\nuser = \"aggregator\"\npassword = \"{password}\"\n[aggregate]\ninterval_secs = 60\nmax_lateness_secs = 1\nstate_file = \"{name}.state\"\n",
                root().join("dist/plugins").display(),
                data("flannel-vxlan/inventory.json").display(),
                nats.url(),
                p(&pki.ca),
                p(&pki.client_cert),
                p(&pki.client_key),
            ),
        )
        .unwrap();
        path
    };

    // A wrong password: one line naming the broker and the refusal; it keeps trying.
    let line = unreachable_said_once(&config("wrong", "wrong.toml"), work.path(), &nats.url());
    assert!(
        line.to_lowercase().contains("authorization"),
        "the reason is named: {line}"
    );

    let options = async_nats::ConnectOptions::new()
        .add_root_certificates(pki.ca.clone())
        .add_client_certificate(pki.client_cert.clone(), pki.client_key.clone())
        .require_tls(true)
        .user_and_password("aggregator".into(), "s3cret".into());
    let batches = shipped_batches();
    publish_with(
        options,
        &nats.url(),
        batches
            .iter()
            .map(|b| {
                (
                    cniscope::cluster::obs_subject(&b.node),
                    Some(cniscope::cluster::message_id(b)),
                    b.encode(),
                )
            })
            .collect(),
    );
    let right = config("s3cret", "right.toml");
    let mut agg = Running::start(
        &["aggregate", "-c", right.to_str().unwrap(), "-f", "json"],
        work.path().join("right.err"),
    );
    std::thread::sleep(Duration::from_secs(4));
    let doc: Value = serde_json::from_str(&agg.stop()).unwrap();
    let replay = replay_topology();
    assert_eq!(edges(&doc), edges(&replay));
}

/// A broker that is not there: one clear line, and the process keeps trying.
#[test]
fn an_unreachable_broker_is_said_in_one_line_and_retried() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("aggregate.toml");
    std::fs::write(
        &config,
        format!("[nats]\nurl = \"nats://127.0.0.1:{port}\"\n[aggregate]\nstate_file = \"state\"\n"),
    )
    .unwrap();
    unreachable_said_once(&config, work.path(), &format!("nats://127.0.0.1:{port}"));
}

/// Starts `aggregate -c config` against a broker it cannot use: after a few seconds it is
/// still trying, having said why in exactly one line naming `url`; returns that line.
fn unreachable_said_once(config: &Path, work: &Path, url: &str) -> String {
    let mut agg = Running::start(
        &["aggregate", "-c", config.to_str().unwrap()],
        work.join(format!(
            "{}.err",
            config.file_stem().unwrap().to_string_lossy()
        )),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(agg.alive(), "it retries: {}", agg.stderr());
    let log = agg.stderr();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot reach NATS"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains(url), "{log}");
    assert!(
        !log.contains('\x1b'),
        "no colour codes in a log file: {log:?}"
    );
    agg.kill();
    lines[0].to_string()
}
