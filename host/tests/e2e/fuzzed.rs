//! The fuzz targets' code (`cniscope::fuzzing`) on their seeds and on every input a fuzzer
//! found (`fuzz/regressions/TARGET/`): what once crashed stays fixed. `./x fuzz` runs the
//! fuzzers themselves.

use crate::support::*;
use std::path::Path;

fn files_under(dir: &Path, keep: &dyn Fn(&Path) -> bool, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, keep, out);
        } else if keep(&p) {
            out.push(p);
        }
    }
}

/// Every regression input of `target`, run through `f`.
fn regressions(target: &str, f: fn(&[u8])) -> usize {
    let mut found = Vec::new();
    files_under(
        &root().join("fuzz/regressions").join(target),
        &|p| p.file_name().is_none_or(|n| n != ".keep"),
        &mut found,
    );
    for p in &found {
        f(&std::fs::read(p).unwrap());
    }
    found.len()
}

fn with_ext(ext: &'static [&'static str]) -> impl Fn(&Path) -> bool {
    move |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ext.contains(&e))
    }
}

#[test]
fn fuzz_targets_take_their_seeds_and_every_input_found() {
    use cniscope::fuzzing::*;
    let mut seeds = Vec::new();
    files_under(
        &root().join("tests/data"),
        &with_ext(&["pcap", "pcapng"]),
        &mut seeds,
    );
    assert!(seeds.len() > 5, "{seeds:?}");
    for p in &seeds {
        let bytes = std::fs::read(p).unwrap();
        capture(&bytes);
        // Cut anywhere, a capture is refused or read up to the cut.
        capture(&bytes[..bytes.len() / 3]);
    }
    let mut configs = Vec::new();
    files_under(&root().join("examples"), &with_ext(&["toml"]), &mut configs);
    files_under(
        &root().join("tests/golden"),
        &with_ext(&["toml"]),
        &mut configs,
    );
    for p in &configs {
        config(&std::fs::read(p).unwrap());
    }
    let mut dumps = Vec::new();
    files_under(&root().join("tests/data"), &with_ext(&["json"]), &mut dumps);
    for p in &dumps {
        inventory(&std::fs::read(p).unwrap());
    }
    // A real batch of the shipped capture, whole and cut.
    let spec: cniscope::sources::replay::CaptureSpec = format!(
        "node-a/eth0={}",
        data("flannel-vxlan/node-a.eth0.pcap").display()
    )
    .parse()
    .unwrap();
    let mut replay =
        cniscope::sources::replay::Replay::open(&[spec], Default::default(), 1_000_000_000_000)
            .unwrap();
    let mut observations = Vec::new();
    replay.run(|_, obs, _| observations.extend(obs));
    let batches = cniscope::cluster::wire::NodeBatch::chunks(
        "node-a",
        7,
        0,
        (0, u64::MAX),
        &replay.points,
        &observations,
        &Default::default(),
        8192,
    );
    let bytes = batches[0].encode();
    wire(&bytes);
    for cut in [5, bytes.len() / 2, bytes.len() - 1] {
        wire(&bytes[..cut]);
    }
    flows(&[]);
    flows(&[3; 200]);
    let found: usize = [
        ("capture", capture as fn(&[u8])),
        ("config", config),
        ("inventory", inventory),
        ("wire", wire),
        ("flows", flows),
    ]
    .into_iter()
    .map(|(t, f)| regressions(t, f))
    .sum();
    eprintln!("{found} inputs the fuzzers found, each handled");
}
