//! The eBPF probe's own cost per packet, from `BPF_PROG_TEST_RUN` with many repeats: the
//! kernel times the whole loop, so the figure has no per-run clock reads in it (bpf_stats,
//! which `./x bench-probe` reads on lab traffic, adds two per run). Each frame of a real
//! capture runs `REPEAT` times: the first run creates its flow's entry, the rest take the
//! path every later packet of a flow takes. Prints figures; asserts nothing. Needs root.
//!
//!   cargo bench -p cniscope --bench probe

use cniscope::sources::live::{NodeProbe, ProbeSettings, test_run};
use std::path::{Path, PathBuf};

const REPEAT: u32 = 5_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("probe bench: needs root (loads the eBPF probe); skipped");
        return;
    }
    let data = root().join("tests/data/flannel-vxlan");
    let probe = NodeProbe::load("bench", None, &ProbeSettings::default()).expect("probe loads");
    if let Ok(info) = probe.ingress_program().info() {
        // The verifier's work on the program (limit 1 M): how much room the parser has left.
        println!(
            "verifier: {} instructions processed, {} in the program (limit 1000000)",
            info.verified_instruction_count().unwrap_or(0),
            info.size_translated().unwrap_or(0) / 8
        );
    }
    println!(
        "probe cost per packet (BPF_PROG_TEST_RUN, {REPEAT} runs per frame, real lab frames; \
         the floor is a do-nothing program's, the test loop's own cost):"
    );
    let baseline = ProbeSettings {
        baseline: true,
        ..ProbeSettings::default()
    };
    for (label, file) in [
        ("pod veth, plain TCP/UDP/ICMP", "node-a.client-veth.pcap"),
        ("node uplink, VXLAN", "node-a.eth0.pcap"),
    ] {
        // BPF_PROG_TEST_RUN takes about a page; the probe reads headers only.
        let frames: Vec<Vec<u8>> = test_run::ethernet_frames(&data.join(file))
            .expect("the lab capture reads")
            .into_iter()
            .filter(|f| f.len() >= 14)
            .map(|f| f[..f.len().min(3000)].to_vec())
            .collect();
        let probe = per_run(&ProbeSettings::default(), &frames);
        let floor = per_run(&baseline, &frames);
        println!(
            "  {label:<30} {probe:7.1} ns, floor {floor:5.1} ns: the probe's own work {:5.1} ns \
             ({} frames, hot caches)",
            probe - floor,
            frames.len()
        );
    }
}

/// Nanoseconds per run of the program `settings` load, over every frame `REPEAT` times.
fn per_run(settings: &ProbeSettings, frames: &[Vec<u8>]) -> f64 {
    let probe = NodeProbe::load("bench", None, settings).expect("probe loads");
    let (mut total_ns, mut runs) = (0u64, 0u64);
    for f in frames {
        let (_, ns) = test_run::run_repeated(probe.ingress_program(), f, REPEAT).expect("test run");
        total_ns += ns as u64 * REPEAT as u64;
        runs += REPEAT as u64;
    }
    total_ns as f64 / runs as f64
}
