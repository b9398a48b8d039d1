use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn data(rel: &str) -> PathBuf {
    root().join("tests/data").join(rel)
}

/// A built plugin from dist/plugins.
pub fn plugin(name: &str) -> PathBuf {
    let p = root().join("dist/plugins").join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: build the plugins first with `./x build`",
        p.display()
    );
    p
}

pub fn cniscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cniscope"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run cniscope")
}

/// The lab capture as replay arguments (`NODE/IFACE=FILE`).
pub fn lab_captures() -> Vec<String> {
    let d = data("flannel-vxlan");
    [
        ("node-a/vethclienta1", "node-a.client-veth.pcap"),
        ("node-a/vethpeera2", "node-a.peer-veth.pcap"),
        ("node-a/eth0", "node-a.eth0.pcap"),
        ("node-b/eth0", "node-b.eth0.pcap"),
        ("node-b/vethserverb1", "node-b.server-veth.pcap"),
    ]
    .iter()
    .map(|(point, file)| format!("{point}={}", d.join(file).display()))
    .collect()
}

/// Every shared real capture (`tests/data/pcap/*/*.pcap`), as paths relative to tests/data,
/// sorted.
pub fn shared_captures() -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["pcap/tcpdump", "pcap/zeek", "pcap/deepflow"] {
        for entry in std::fs::read_dir(data(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "pcap") {
                out.push(
                    path.strip_prefix(data(""))
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_string(),
                );
            }
        }
    }
    out.sort();
    out
}
