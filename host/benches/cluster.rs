//! Cluster mode's cost: observations per second through the wire format, JetStream and the
//! aggregator's assembly into the plugin, against the same batches handed over in-process;
//! bytes per observation on the wire; the aggregator's memory per open window. Starts its
//! own nats-server on a free loopback port. Prints figures and ratios measured in the same
//! run; asserts nothing (`./x bench`).

#[path = "support/workload.rs"]
mod workload;

use cniscope::cluster::aggregate::{self, Aggregator};
use cniscope::cluster::wire::{NodeBatch, NodeHealth};
use cniscope::cluster::{CHUNK_OBSERVATIONS, message_id, obs_subject};
use cniscope::config::{AggregateSettings, PluginToLoad};
use cniscope::health::Health;
use cniscope::inventory::kubectl;
use cniscope::pipeline::Pipeline;
use cniscope::plugins::{PluginEngine, PluginSettings};
use cniscope::sinks::{Format, render};
use cniscope::sources::aggregate::{Observation, PointTable};
use cniscope::sources::decode::GeneveOpt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use workload::root;

const WINDOWS: usize = 32;
const PER_WINDOW: usize = 16_384;
const S: u64 = 1_000_000_000;

/// Every window's batches: the workload cut into windows of one second of event time, each
/// window's observations split by node, as two agents publish them.
fn batches() -> Vec<NodeBatch> {
    let (points, obs) = workload::replicated(WINDOWS * PER_WINDOW);
    let mut out = Vec::new();
    for (w, window) in obs.chunks(PER_WINDOW).enumerate() {
        for node in ["node-a", "node-b"] {
            let mine: Vec<_> = window
                .iter()
                .filter(|o| points.get(o.key.point).node == node)
                .cloned()
                .collect();
            let w = w as u64;
            out.extend(NodeBatch::chunks(
                node,
                1,
                w,
                (w * S, (w + 1) * S),
                &points,
                &mine,
                &NodeHealth::default(),
                CHUNK_OBSERVATIONS,
            ));
        }
    }
    out
}

fn pipeline(engine: &PluginEngine) -> Pipeline {
    let inventory =
        kubectl::load_file(&root().join("tests/data/flannel-vxlan/inventory.json")).unwrap();
    let mut settings = PluginSettings::new("flannel");
    settings.options_json = r#"{"network": "10.244.0.0/16"}"#.into();
    settings.memory_limit_bytes = 512 << 20;
    let plugin = PluginToLoad {
        path: root().join("dist/plugins/flannel.wasm"),
        sha256: None,
        settings,
    };
    Pipeline::new(engine, &[plugin], inventory).expect("dist/plugins/flannel.wasm (./x build)")
}

/// The in-process path: each window's batches handed over as they are, their observations
/// straight into the plugin, and the topology document rendered after each window, as
/// `cniscope run` does for its output file.
fn in_process(engine: &PluginEngine, batches: Vec<NodeBatch>) -> Duration {
    let mut p = pipeline(engine);
    let mut points = PointTable::default();
    let t = Instant::now();
    let mut windows: Vec<Vec<NodeBatch>> = (0..WINDOWS).map(|_| Vec::new()).collect();
    for b in batches {
        windows[b.window as usize].push(b);
    }
    for (w, held) in windows.into_iter().enumerate() {
        let mut obs = Vec::new();
        for b in held {
            obs.extend(b.into_observations(&mut points));
        }
        p.window(&points, &obs, (w as u64 + 1) * S);
        std::hint::black_box(render(&p.doc(Health::default()), Format::Json));
    }
    t.elapsed()
}

/// The broker path: encode, publish (acknowledged), and the aggregator's own loop: fetch,
/// decode, assemble by event time, the plugin, checkpoint, topology message, acknowledge.
async fn through_jetstream(url: &str, engine: &PluginEngine, batches: &[NodeBatch]) -> Duration {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let state = tempfile::tempdir().unwrap();
    let settings = AggregateSettings {
        interval: Duration::from_secs(1),
        max_lateness: Duration::from_secs(3600),
        output_file: None,
        state_file: state.path().join("state"),
    };
    let consumer = aggregate::consumer(&js, &settings).await.unwrap();
    let mut agg = Aggregator::new(pipeline(engine), &settings);
    // Both agents are known: windows close as soon as both are past them.
    agg.expect(&["node-a", "node-b"]);
    let t = Instant::now();
    let publisher = {
        let js = js.clone();
        let messages: Vec<_> = batches
            .iter()
            .map(|b| (obs_subject(&b.node), message_id(b), b.encode()))
            .collect();
        tokio::spawn(async move {
            let mut acks = Vec::new();
            for (subject, id, body) in messages {
                let m = async_nats::jetstream::message::PublishMessage::build()
                    .payload(body.into())
                    .message_id(id);
                acks.push(js.send_publish(subject, m).await.unwrap());
            }
            for a in acks {
                a.await.unwrap();
            }
        })
    };
    aggregate::consume(&mut agg, &client, consumer, |a| {
        a.windows_written() >= WINDOWS as u64
    })
    .await
    .unwrap();
    publisher.await.unwrap();
    let elapsed = t.elapsed();
    let h = agg.doc(0).health.aggregate.unwrap();
    assert_eq!(h.late_batches + h.duplicate_batches, 0, "{h:?}");
    elapsed
}

fn main() {
    let batches = batches();
    let observations: usize = batches.iter().map(|b| b.observations.len()).sum();
    let wire: usize = batches.iter().map(|b| b.encode().len()).sum();
    println!(
        "wire format: {} batches, {observations} observations, {wire} bytes: {:.1} bytes per observation",
        batches.len(),
        wire as f64 / observations as f64
    );

    // The wire format's own cost, both ways (the best of a few runs).
    let mut encode = Duration::MAX;
    let mut decode = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let bodies: Vec<Vec<u8>> = batches.iter().map(NodeBatch::encode).collect();
        encode = encode.min(t.elapsed());
        let t = Instant::now();
        let mut points = PointTable::default();
        for b in &bodies {
            let b = NodeBatch::decode(b).unwrap();
            std::hint::black_box(b.into_observations(&mut points));
        }
        decode = decode.min(t.elapsed());
    }
    println!(
        "wire format: encode {:.1} M observations/s, decode into observations {:.1} M/s",
        observations as f64 / encode.as_secs_f64() / 1e6,
        observations as f64 / decode.as_secs_f64() / 1e6
    );

    // The aggregator's memory per open window: one window's batches decoded and held,
    // counted from the values themselves (an RSS delta mostly shows the allocator reusing
    // what the runs above freed).
    let held: Vec<NodeBatch> = batches
        .iter()
        .filter(|b| b.window == 0)
        .map(|b| NodeBatch::decode(&b.encode()).unwrap())
        .collect();
    let bytes: usize = held
        .iter()
        .map(|b| {
            b.observations.capacity() * std::mem::size_of::<Observation>()
                + b.observations
                    .iter()
                    .map(|o| {
                        o.geneve.capacity() * std::mem::size_of::<GeneveOpt>()
                            + o.geneve.iter().map(|g| g.data.capacity()).sum::<usize>()
                    })
                    .sum::<usize>()
        })
        .sum();
    let n: usize = held.iter().map(|b| b.observations.len()).sum();
    println!(
        "aggregator memory per open window of {n} observations: {:.1} MiB ({:.0} bytes per observation held)",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / n as f64
    );
    drop(held);

    let engine = PluginEngine::new(None).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = tempfile::tempdir().unwrap();
    let _server = Server(
        Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (./x setup installs it)"),
    );
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("nats://127.0.0.1:{port}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Interleaved rounds, the best of each: load on the shared machine hits both alike. Each
    // broker round publishes new messages (a new agent instance) into the same stream.
    let (mut local, mut broker) = (Duration::MAX, Duration::MAX);
    for round in 0..3u64 {
        local = local.min(in_process(&engine, batches.clone()));
        let mut mine = batches.clone();
        for b in &mut mine {
            b.agent = round + 10;
            for w in [&mut b.start_ns, &mut b.end_ns] {
                *w += round * WINDOWS as u64 * S * 10;
            }
        }
        broker = broker.min(rt.block_on(through_jetstream(&url, &engine, &mine)));
    }
    let rate = |d: Duration| observations as f64 / d.as_secs_f64();
    println!(
        "in-process: {:.2} M observations/s through the flannel plugin",
        rate(local) / 1e6
    );
    println!(
        "agent -> JetStream -> aggregator on loopback: {:.2} M observations/s ({:.2}x in-process; goals >= 0.5x and >= 1 M/s)",
        rate(broker) / 1e6,
        rate(broker) / rate(local)
    );
}

/// The bench's nats-server, stopped however the bench ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
