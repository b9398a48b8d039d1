//! The eBPF probe's own cost per packet, from `BPF_PROG_TEST_RUN` with many repeats: the
//! kernel times the whole loop, so the figure has no per-run clock reads in it (bpf_stats,
//! which `./x bench-probe` reads on lab traffic, adds two per run). Each frame of a real
//! capture runs `REPEAT` times: the first run creates its flow's entry, the rest take the
//! path every later packet of a flow takes. Then the agent's memory at many active flows
//! (`CNISCOPE_BENCH_FLOWS`, default 1 000 000): the probe's maps as the kernel accounts them
//! against the per-CPU preallocated maps of the same capacity (the layout before session 17),
//! and the drain's peak in the agent's own memory. Prints figures; asserts nothing but that
//! every flow came out. Needs root.
//!
//!   cargo bench -p cniscope --bench probe

use cniscope::sources::aggregate::PointTable;
use cniscope::sources::live::{NodeProbe, ProbeSettings, sys, test_run};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
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
        // One cache slot, taken by the first flow: every other flow through the shared hash
        // map (lookup, atomic adds), as on a node with more flows than the cache holds.
        let one_slot = ProbeSettings {
            cache_slots: 1,
            ..ProbeSettings::default()
        };
        let hashed = per_run(&one_slot, &frames);
        println!(
            "  {:<30} {hashed:7.1} ns: through the hash map, {:.2}x the cached path",
            "  the same, cache missed",
            hashed / probe
        );
    }
    agent_memory();
}

/// The agent's memory per active flow: `n` distinct flows (UDP, one packet each) through the
/// probe, then one drain.
fn agent_memory() {
    let n: u32 = std::env::var("CNISCOPE_BENCH_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let settings = ProbeSettings {
        flow_entries: n + n / 4,
        ..ProbeSettings::default()
    };
    let kernel_before = kernel_kb();
    let mut probe = NodeProbe::load("bench", None, &settings).expect("probe loads");
    // The flow maps' memory, or the other maps'.
    let memory = |p: &NodeProbe, flows: bool| -> u64 {
        p.map_memory()
            .iter()
            .filter(|(name, _)| name.starts_with("FLOWS") == flows)
            .map(|(_, b)| b)
            .sum()
    };
    let empty = memory(&probe, true);
    let fixed = memory(&probe, false);
    let mut frame = Vec::with_capacity(64);
    let mut fill = |probe: &NodeProbe| {
        for i in 0..n {
            frame.clear();
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4(
                    [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
                    [10, 96, 0, 10],
                    64,
                )
                .udp(10_000 + (i % 50_000) as u16, 53)
                .write(&mut frame, b"q")
                .unwrap();
            test_run::run(probe.ingress_program(), &frame).expect("test run");
        }
    };
    // Two intervals: the agent's steady state (the second drain knows the first's size).
    let mut points = PointTable::default();
    fill(&probe);
    drop(probe.drain(&mut points, 0).expect("drain"));
    fill(&probe);
    let full = memory(&probe, true);
    let kernel_after = kernel_kb();
    // The per-CPU preallocated pair the probe had before, at the same capacity: made for
    // the comparison only, as the kernel would have made it.
    let key = std::mem::size_of::<cniscope_common::FlowKey>() as u32;
    let value = std::mem::size_of::<cniscope_common::FlowStats>() as u32;
    let old = per_cpu_hash(key, value, settings.flow_entries)
        .map(|fd| sys::memlock(fd.as_fd()).unwrap_or(0))
        .unwrap_or(0);

    let rss_before = status_kb("VmRSS");
    // Resets VmHWM to the current RSS, so it then shows the drain's peak.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let started = std::time::Instant::now();
    let out = probe.drain(&mut points, 0).expect("drain");
    let drain_time = started.elapsed();
    let peak = status_kb("VmHWM").saturating_sub(rss_before);
    let kept = status_kb("VmRSS").saturating_sub(rss_before);
    let counters = probe.counters().expect("counters");
    assert_eq!(out.len(), n as usize, "every flow came out");
    assert_eq!(counters.map_full, 0);
    let per = |bytes: u64| bytes as f64 / n as f64;
    let maps = per(full);
    let user = per(peak * 1024);
    println!(
        "agent memory at {n} active flows ({} CPUs; the flow maps sized {}):",
        std::thread::available_parallelism().map_or(0, |c| c.get()),
        settings.flow_entries
    );
    println!(
        "  probe flow maps (kernel memlock)   {maps:6.0} B per flow ({} KiB of it empty: hash buckets); the other maps {} KiB",
        empty / 1024,
        fixed / 1024
    );
    println!(
        "  per-CPU preallocated pair (before) {:6.0} B per flow: now {:.2}x of it",
        per(2 * old),
        maps / per(2 * old)
    );
    println!(
        "  kernel (Slab + Percpu + vmalloc)   {:6.0} B per flow, from /proc/meminfo (the whole machine: noisy)",
        per(kernel_after.saturating_sub(kernel_before) * 1024)
    );
    println!(
        "  agent, drain's peak / kept         {user:6.0} / {:.0} B per flow ({} B per observation kept)",
        per(kept * 1024),
        std::mem::size_of::<cniscope::sources::aggregate::Observation>()
    );
    println!(
        "  drain, batched lookup-and-delete   {:6.2} s, {:.0} ns per flow",
        drain_time.as_secs_f64(),
        drain_time.as_nanos() as f64 / n as f64
    );
    println!(
        "  total (maps + drain's peak)        {:6.0} B per flow: {:.2}x the 200 B target",
        maps + user,
        (maps + user) / 200.0
    );
}

/// Kernel memory that BPF maps come from, in KiB (`/proc/meminfo`).
fn kernel_kb() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    ["Slab:", "Percpu:", "VmallocUsed:"]
        .iter()
        .filter_map(|field| field_kb(&info, field))
        .sum()
}

/// A `kB` field of this process's `/proc/self/status`.
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    field_kb(&status, &format!("{field}:")).unwrap_or(0)
}

fn field_kb(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A `BPF_MAP_TYPE_PERCPU_HASH`, preallocated (`BPF_MAP_CREATE`).
fn per_cpu_hash(key: u32, value: u32, entries: u32) -> std::io::Result<OwnedFd> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
    // The first fields of `union bpf_attr`'s map_create; the kernel wants the rest zero.
    let mut attr = [0u32; 18];
    attr[..4].copy_from_slice(&[BPF_MAP_TYPE_PERCPU_HASH, key, value, entries]);
    // SAFETY: BPF_MAP_CREATE reads `attr` (zero past the fields set) and returns a new fd.
    let fd = unsafe { sys::bpf(BPF_MAP_CREATE, &mut attr) }?;
    // SAFETY: a descriptor the kernel just made for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
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
