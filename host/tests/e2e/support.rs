use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

// Only the live-capture modules need root (feature `live`).
#[cfg_attr(not(feature = "live"), allow(dead_code))]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a test that needs root may run. If not, the skip is said and recorded: in the file
/// `CNISCOPE_SKIPPED` names (`./x test` counts and lists them in its closing lines), so a
/// skipped test never passes silently.
#[cfg_attr(not(feature = "live"), allow(dead_code))]
pub fn root_or_skip(why: &str) -> bool {
    if is_root() {
        return true;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    eprintln!("skipped {test}: {why}");
    if let Some(path) = std::env::var_os("CNISCOPE_SKIPPED") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            // One write per line: tests skip in parallel, and O_APPEND keeps one write whole.
            let _ = f.write_all(format!("{test}: {why}\n").as_bytes());
        }
    }
    false
}

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

/// Runs `cniscope ARGS` (it must succeed) and parses the JSON topology it prints.
pub fn topology(args: &[&str]) -> serde_json::Value {
    let out = cniscope(args);
    assert!(
        out.status.success(),
        "cniscope {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON topology on stdout")
}

/// Writes `dir/inventory.json`, a kubectl List made by tests/lab/inventory.py from `args`.
pub fn lab_inventory(dir: &Path, args: &[&str]) -> PathBuf {
    let out = Command::new("python3")
        .arg(root().join("tests/lab/inventory.py"))
        .args(args)
        .output()
        .expect("run tests/lab/inventory.py");
    assert!(
        out.status.success(),
        "inventory.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("inventory.json");
    std::fs::write(&path, out.stdout).unwrap();
    path
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

/// A legacy pcap file (Ethernet, microsecond stamps) holding `frames` 1 ms apart from `t0_ms`.
pub fn write_pcap(path: &Path, t0_ms: u64, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend(0xa1b2_c3d4u32.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend([0u8; 8]); // thiszone, sigfigs
    out.extend(65535u32.to_le_bytes());
    out.extend(1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for (i, f) in frames.iter().enumerate() {
        let ms = t0_ms + i as u64;
        out.extend(((ms / 1000) as u32).to_le_bytes());
        out.extend((((ms % 1000) * 1000) as u32).to_le_bytes());
        out.extend((f.len() as u32).to_le_bytes());
        out.extend((f.len() as u32).to_le_bytes());
        out.extend(f);
    }
    std::fs::write(path, out).unwrap();
}

/// One TCP segment `src:sport -> dst:dport` as a raw IPv4 packet (no link layer).
pub fn ipv4_tcp(
    src: [u8; 4],
    dst: [u8; 4],
    ports: (u16, u16),
    seq: u32,
    flags: &str,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = etherparse::PacketBuilder::ipv4(src, dst, 64).tcp(ports.0, ports.1, seq, 64240);
    if flags.contains('S') {
        b = b.syn();
    }
    if flags.contains('A') {
        b = b.ack(1);
    }
    if flags.contains('F') {
        b = b.fin();
    }
    if flags.contains('P') {
        b = b.psh();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// `ip` in an Ethernet frame.
pub fn ethernet(src_mac: [u8; 6], dst_mac: [u8; 6], ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend(dst_mac);
    f.extend(src_mac);
    f.extend([0x08, 0x00]);
    f.extend(ip);
    f
}

/// `inner` (a raw IP packet) as flanneld's obsolete udp backend sends it between two nodes:
/// no inner Ethernet header, UDP 8285 -> 8285, in an Ethernet frame on the uplink.
pub fn flannel_udp_frame(outer_src: [u8; 4], outer_dst: [u8; 4], inner: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb])
        .ipv4(outer_src, outer_dst, 64)
        .udp(8285, 8285)
        .write(&mut f, inner)
        .unwrap();
    f
}

/// Copies the legacy pcap `src` to `dst` with every UDP port `from` (source or destination)
/// of an IPv4 packet without options in an Ethernet frame changed to `to`: the same traffic,
/// as a CNI configured with another tunnel port would send it. Times and lengths are kept.
pub fn rewrite_udp_port(src: &Path, dst: &Path, from: u16, to: u16) -> usize {
    let mut b = std::fs::read(src).unwrap();
    assert_eq!(
        &b[..4],
        &0xa1b2_c3d4u32.to_le_bytes(),
        "a little-endian legacy pcap"
    );
    let (mut at, mut changed) = (24, 0);
    while at + 16 <= b.len() {
        let caplen = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        let f = at + 16;
        let ipv4_udp = caplen >= 42 && b[f + 12..f + 14] == [8, 0] && b[f + 14] == 0x45;
        if ipv4_udp && b[f + 23] == 17 {
            for port in [f + 34, f + 36] {
                if b[port..port + 2] == from.to_be_bytes() {
                    b[port..port + 2].copy_from_slice(&to.to_be_bytes());
                    changed += 1;
                }
            }
        }
        at = f + caplen;
    }
    std::fs::write(dst, b).unwrap();
    changed
}

// The long-running processes below are used by the cluster and reload modules.
pub fn terminate(c: &Child) {
    // SAFETY: signalling a child we started.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
}

/// A cniscope process whose stderr goes to a file (read when it fails).
pub struct Running {
    child: Option<Child>,
    stderr: PathBuf,
}

impl Running {
    pub fn start(args: &[&str], stderr: PathBuf) -> Running {
        let child = Command::new(env!("CARGO_BIN_EXE_cniscope"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Running {
            child: Some(child),
            stderr,
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// SIGTERM, then its stdout (it must exit 0).
    pub fn stop(&mut self) -> String {
        let c = self.child.take().unwrap();
        terminate(&c);
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", self.stderr());
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The comparable part of a topology's edges.
pub fn edges(doc: &Value) -> Vec<String> {
    let mut v: Vec<String> = doc["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} -> {} via {} {}/{} packets {}",
                e["src"].as_str().unwrap(),
                e["dst"].as_str().unwrap(),
                e["service"].as_str().unwrap_or("-"),
                e["protocol"].as_str().unwrap(),
                e["port"],
                e["packets"]
            )
        })
        .collect();
    v.sort();
    v
}

/// Waits until the current window of `interval_secs` has just begun (0.3 to 1 s into it):
/// processes cut windows at the same wall-clock instants, so traffic sent now falls in one.
pub fn at_window_start(interval_secs: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let into = now % interval_secs as f64;
    let wait = if (0.3..1.0).contains(&into) {
        0.0
    } else if into < 0.3 {
        0.3 - into
    } else {
        interval_secs as f64 - into + 0.3
    };
    std::thread::sleep(Duration::from_secs_f64(wait));
}

/// Waits until the running process's output file says `ready`.
pub fn wait_output(path: &Path, what: &str, mut ready: impl FnMut(&Value) -> bool) -> Value {
    let t = Instant::now();
    loop {
        let doc = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok());
        if let Some(doc) = doc
            && ready(&doc)
        {
            return doc;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A port on loopback nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on a loopback port, with extra header lines: the status and the body.
pub fn http_get(port: u16, path: &str, headers: &[&str]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// The events of a server-sent event stream (`/api/edges/stream`), read on a thread until
/// dropped: (event name, data).
pub struct EventStream {
    pub events: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EventStream {
    /// Connects and waits for the response's headers (the client is counted from then).
    pub fn open(port: u16, path: &str) -> EventStream {
        use std::io::{BufRead, Write};
        use std::sync::atomic::Ordering;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        // HTTP/1.0: the body is the events as they are, not cut into chunks.
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut reader = std::io::BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "{path}: {status}");
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ev, st) = (events.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let (mut name, mut data) = (String::new(), String::new());
            let mut line = String::new();
            while !st.load(Ordering::Relaxed) {
                match reader.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(_) => {
                        let l = line.trim_end_matches(['\r', '\n']);
                        if let Some(v) = l.strip_prefix("event: ") {
                            name = v.to_string();
                        } else if let Some(v) = l.strip_prefix("data: ") {
                            data.push_str(v);
                        } else if l.is_empty() && !data.is_empty() {
                            ev.lock()
                                .unwrap()
                                .push((std::mem::take(&mut name), std::mem::take(&mut data)));
                        }
                        line.clear();
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
        });
        EventStream {
            events,
            stop,
            thread: Some(thread),
        }
    }

    /// The `window` events' documents so far.
    pub fn windows(&self) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == "window")
            .map(|(_, d)| serde_json::from_str(d).unwrap())
            .collect()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
