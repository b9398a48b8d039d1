//! Observations per second through the Wasm boundary, and the Wasm flannel plugin against
//! the same plugin logic compiled natively. Prints figures and ratios; asserts nothing (these
//! machines are shared and noisy: read the ratios, not single runs). Run with `./x bench`.

use cniscope::inventory::kubectl;
use cniscope::plugins::bindings::wit;
use cniscope::plugins::policy::Grants;
use cniscope::plugins::{PluginEngine, PluginInstance, PluginSettings, convert};
use cniscope::sources::aggregate::Observation;
use cniscope_sdk::Plugin;
use cniscope_sdk::testkit::Harness;
use std::time::{Duration, Instant};

const BATCH: usize = 16_384;

#[path = "support/workload.rs"]
mod workload;
use workload::root;

/// The lab's real observations as one full batch of distinct connections.
fn workload() -> (
    Vec<cniscope::sources::aggregate::CapturePoint>,
    Vec<Observation>,
) {
    let (points, obs) = workload::replicated(BATCH);
    (points.all().to_vec(), obs)
}

/// The same batch as the SDK's type (what the plugin sees inside Wasm), column by column.
fn sdk_batch(b: &wit::ObservationBatch) -> cniscope_sdk::ObservationBatch {
    use cniscope_sdk as s;
    s::ObservationBatch {
        points: b
            .points
            .iter()
            .map(|p| s::CapturePoint {
                node: p.node.clone(),
                iface: p.iface.clone(),
                kind: s::IfaceKind::Other,
                direction: s::Direction::Unknown,
                drop_reason: p.drop_reason.clone(),
            })
            .collect(),
        point: b.point.clone(),
        src_ip_hi: b.src_ip_hi.clone(),
        src_ip_lo: b.src_ip_lo.clone(),
        dst_ip_hi: b.dst_ip_hi.clone(),
        dst_ip_lo: b.dst_ip_lo.clone(),
        protocol: b.protocol.clone(),
        src_port: b.src_port.clone(),
        dst_port: b.dst_port.clone(),
        src_mac: b.src_mac.clone(),
        dst_mac: b.dst_mac.clone(),
        tcp_flags: b.tcp_flags.clone(),
        fp_kind: b.fp_kind.clone(),
        fingerprint: b.fingerprint.clone(),
        packets: b.packets.clone(),
        bytes: b.bytes.clone(),
        first_ns: b.first_ns.clone(),
        last_ns: b.last_ns.clone(),
        tunnel: b.tunnel.clone(),
        vni: b.vni.clone(),
        outer_src_hi: b.outer_src_hi.clone(),
        outer_src_lo: b.outer_src_lo.clone(),
        outer_dst_hi: b.outer_dst_hi.clone(),
        outer_dst_lo: b.outer_dst_lo.clone(),
        outer_src_port: b.outer_src_port.clone(),
        outer_dst_port: b.outer_dst_port.clone(),
        outer_src_mac: b.outer_src_mac.clone(),
        outer_dst_mac: b.outer_dst_mac.clone(),
        geneve: s::GeneveOptions {
            obs: b.geneve.obs.clone(),
            class: b.geneve.class.clone(),
            type_: b.geneve.type_.clone(),
            data_start: b.geneve.data_start.clone(),
            data_len: b.geneve.data_len.clone(),
            data: b.geneve.data.clone(),
        },
    }
}

/// Best observations/s of `a` and of `b` over `rounds` alternating runs: interleaving keeps a
/// burst of load on this shared machine from landing on one side only.
fn best_rates_interleaved(
    n: usize,
    rounds: usize,
    a: &mut dyn FnMut(),
    b: &mut dyn FnMut(),
) -> (f64, f64) {
    a();
    b();
    let (mut ba, mut bb) = (Duration::MAX, Duration::MAX);
    for _ in 0..rounds {
        let t = Instant::now();
        a();
        ba = ba.min(t.elapsed());
        let t = Instant::now();
        b();
        bb = bb.min(t.elapsed());
    }
    (n as f64 / ba.as_secs_f64(), n as f64 / bb.as_secs_f64())
}

/// Best observations/s over `rounds` timed runs of `f` (each handles `n` observations).
fn best_rate(n: usize, rounds: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm up
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    n as f64 / best.as_secs_f64()
}

fn start(engine: &PluginEngine, name: &str, file: &str, options: &str) -> PluginInstance {
    let path = root().join("dist/plugins").join(file);
    let loaded = engine
        .load(&path, None, &Grants::default())
        .unwrap_or_else(|e| panic!("{e} (run ./x build)"));
    let mut s = PluginSettings::new(name);
    s.options_json = options.into();
    s.memory_limit_bytes = 512 << 20;
    PluginInstance::start(engine, loaded, s).unwrap()
}

fn main() {
    let (points, obs) = workload();
    let batch = convert::batch(&points, &obs);
    let inventory =
        kubectl::load_file(&root().join("tests/data/flannel-vxlan/inventory.json")).unwrap();
    let engine = PluginEngine::new(None).unwrap();

    let build_rate = best_rate(BATCH, 20, || {
        std::hint::black_box(convert::batch(&points, &obs));
    });

    let mut noop = start(&engine, "noop", "misbehave.wasm", r#"{"mode":"noop"}"#);
    let noop_rate = best_rate(BATCH, 50, || {
        std::hint::black_box(noop.process(&batch));
    });

    let mut flows = start(&engine, "flows", "misbehave.wasm", r#"{"mode":"flows"}"#);
    let flows_rate = best_rate(BATCH, 10, || {
        std::hint::black_box(flows.process(&batch));
    });

    let native_batch = sdk_batch(&batch);
    let mut flannel = start(&engine, "flannel", "flannel.wasm", "{}");
    let wit_inventory = convert::inventory(&inventory, &flannel.description);
    let sdk_inventory = {
        // The SDK's inventory type is field-for-field the host's WIT type.
        let w = wit_inventory.clone();
        let ip = |i: cniscope::plugins::bindings::wit::Ip| cniscope_sdk::Ip { hi: i.hi, lo: i.lo };
        cniscope_sdk::Inventory {
            nodes: w
                .nodes
                .into_iter()
                .map(|n| cniscope_sdk::NodeInfo {
                    name: n.name,
                    addresses: n.addresses.into_iter().map(ip).collect(),
                    pod_cidrs: n.pod_cidrs,
                    annotations: n.annotations,
                    labels: n.labels,
                })
                .collect(),
            pods: cniscope_sdk::PodTable {
                strings: w.pods.strings,
                namespace: w.pods.namespace,
                name: w.pods.name,
                node: w.pods.node,
                workload: w.pods.workload,
                host_network: w.pods.host_network,
                created_ns: w.pods.created_ns,
                deleted_ns: w.pods.deleted_ns,
                ip_end: w.pods.ip_end,
                ips: w.pods.ips.into_iter().map(ip).collect(),
                annotation_end: w.pods.annotation_end,
                annotation_key: w.pods.annotation_key,
                annotation_value: w.pods.annotation_value,
            },
            services: Vec::new(),
            endpoint_slices: Vec::new(),
            objects: Vec::new(),
        }
    };
    let mut native = Harness::<cniscope_plugin_flannel::Flannel>::new()
        .inventory(sdk_inventory)
        .unwrap();

    flannel.on_inventory(&wit_inventory);
    // The native run ends where the Wasm one does: with the columnar flow batch built.
    let (wasm_rate, native_rate) = best_rates_interleaved(
        BATCH,
        20,
        &mut || {
            std::hint::black_box((flannel.process(&batch), flannel.flush(0)));
        },
        &mut || {
            let mut out = cniscope_sdk::flow::Flows::new();
            native.plugin.process(&native_batch, &mut out).unwrap();
            native.plugin.flush(0, &mut out).unwrap();
            std::hint::black_box(out.into_batch());
        },
    );

    let m = |r: f64| r / 1e6;
    println!("batch of {BATCH} observations (real lab flows, replicated)");
    println!(
        "host: rows -> columnar batch           {:>8.2} M obs/s",
        m(build_rate)
    );
    println!(
        "wasm: no-op plugin, through boundary   {:>8.2} M obs/s   (target >= 10)",
        m(noop_rate)
    );
    println!(
        "wasm: returning one flow per obs       {:>8.2} M flows/s",
        m(flows_rate)
    );
    println!(
        "wasm: flannel plugin, process+flush    {:>8.2} M obs/s",
        m(wasm_rate)
    );
    println!(
        "native: same flannel logic             {:>8.2} M obs/s",
        m(native_rate)
    );
    println!(
        "ratio wasm/native flannel              {:>8.2}x        (target >= 0.8)",
        wasm_rate / native_rate
    );
    println!(
        "ratio no-op target                     {:>8.2}x",
        noop_rate / 10e6
    );
    let h = flannel.health();
    println!(
        "flannel health: {} calls, peak memory {} KiB, {} traps",
        h.calls,
        h.peak_memory_bytes / 1024,
        h.traps
    );
}
