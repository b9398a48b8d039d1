//! The server in this process, fed made-up documents: 200 stream clients at once, one leaving
//! mid-stream, the client cap, the bearer token, and the map at 500 pods in Chromium.

use crate::browser::Browser;
use crate::support::*;
use cniscope::config::ServerSettings;
use cniscope::server::Server;
use cniscope::topology::{Edge, EndpointKind, NodeEntry, TopologyDoc, Window};
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

fn settings() -> ServerSettings {
    ServerSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        token_file: None,
        max_metric_edges: 5000,
        keep_windows: 10,
        max_stream_clients: 1000,
    }
}

fn pod(ns: &str, name: &str) -> NodeEntry {
    NodeEntry {
        id: format!("pod/{ns}/{name}"),
        kind: EndpointKind::Pod,
        namespace: Some(ns.into()),
        name: name.into(),
        workload: None,
        node: Some("node-a".into()),
        ips: Default::default(),
    }
}

/// `namespaces` x `per` pods, each talking to its namesake in the next namespace with
/// `packets` packets; window `k`.
fn doc(namespaces: usize, per: usize, packets: u64, k: u64) -> TopologyDoc {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for n in 0..namespaces {
        for p in 0..per {
            nodes.push(pod(&format!("ns-{n}"), &format!("pod-{n}-{p}")));
            let m = (n + 1) % namespaces;
            edges.push(Edge {
                src: format!("pod/ns-{n}/pod-{n}-{p}"),
                dst: format!("pod/ns-{m}/pod-{m}-{p}"),
                service: None,
                protocol: "tcp".into(),
                port: 8080,
                packets,
                bytes: packets * 100,
                first_seen: "2026-12-02T10:00:00Z".into(),
                last_seen: "2026-12-02T10:00:01Z".into(),
                evidence: ["flannel:vxlan".to_string()].into(),
                observed_at: ["node-a/eth0:egress".to_string()].into(),
                confidence: 1.0,
                flows: 1,
                path: None,
            });
        }
    }
    TopologyDoc {
        window: Window {
            start: "2026-12-02T10:00:00Z".into(),
            end: format!("2026-12-02T10:00:{:02}Z", k % 60),
        },
        nodes,
        edges,
        health: Default::default(),
    }
}

fn metric(port: u16, name: &str) -> f64 {
    let (_, text) = http_get(port, "/metrics", &[]);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {text}"))
}

fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(30), "waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_hundred_stream_clients_one_leaving_mid_stream() {
    let server = Server::start(&ServerSettings {
        max_stream_clients: 201,
        ..settings()
    })
    .unwrap();
    let port = server.addr().port();
    let clients: Vec<EventStream> = (0..200)
        .map(|_| EventStream::open(port, "/api/edges/stream"))
        .collect();
    // One more that reads a window, then goes away while the server writes the next ones.
    let mut leaver = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(leaver, "GET /api/edges/stream HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    wait("201 stream clients", || {
        metric(port, "cniscope_stream_clients") == 201.0
    });
    // The cap: one more is refused, and counted.
    let (status, body) = http_get(port, "/api/edges/stream", &[]);
    assert_eq!(status, 503, "{body}");
    assert_eq!(metric(port, "cniscope_stream_refused_total"), 1.0);

    server.publish(&doc(4, 25, 1, 1));
    let mut reader = std::io::BufReader::new(leaver.try_clone().unwrap());
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    leaver.shutdown(std::net::Shutdown::Both).unwrap();
    drop((reader, leaver));
    for k in 2..=5 {
        server.publish(&doc(4, 25, k, k));
        // Taken one at a time (the queue holds a few): none is skipped.
        wait("the window", || {
            clients.iter().all(|c| c.windows().len() == k as usize)
        });
    }
    for c in &clients {
        let w = c.windows();
        // Each window carries what grew: 1 packet per edge, 100 edges.
        for d in &w[1..] {
            let edges = d["edges"].as_array().unwrap();
            assert_eq!(edges.len(), 100);
            assert!(edges.iter().all(|e| e["packets"] == 1));
        }
    }
    wait("the leaver to be forgotten", || {
        metric(port, "cniscope_stream_clients") == 200.0
    });
    assert_eq!(metric(port, "cniscope_windows_skipped_total"), 0.0);
    // Still serving.
    assert_eq!(http_get(port, "/healthz", &[]).0, 200);
    drop(clients);
    wait("every client to be forgotten", || {
        metric(port, "cniscope_stream_clients") == 0.0
    });
}

#[test]
fn the_token_guards_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let server = Server::start(&ServerSettings {
        token_file: Some(token),
        ..settings()
    })
    .unwrap();
    let port = server.addr().port();
    server.publish(&doc(1, 2, 1, 1));
    for path in ["/", "/api/topology", "/metrics", "/api/edges/stream"] {
        let (status, body) = http_get(port, path, &[]);
        assert_eq!(status, 401, "{path}: {body}");
        let (status, _) = http_get(port, path, &["Authorization: Bearer wrong"]);
        assert_eq!(status, 401, "{path}");
    }
    let (status, body) = http_get(port, "/api/topology", &["Authorization: Bearer s3cret"]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("pod/ns-0/pod-0-1"));
    let (status, _) = http_get(port, "/?access_token=s3cret", &[]);
    assert_eq!(status, 200);
    // The token is no filter: the endpoints still refuse what they do not know.
    let (status, _) = http_get(port, "/api/topology?access_token=s3cret&x=1", &[]);
    assert_eq!(status, 400);
    // An empty token file is refused at start.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let err = Server::start(&ServerSettings {
        token_file: Some(empty),
        ..settings()
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("holds no token"), "{err}");
    // An address in use is said at once.
    let err = Server::start(&ServerSettings {
        listen: server.addr(),
        ..settings()
    })
    .err()
    .unwrap();
    assert!(
        err.to_string().contains(&server.addr().to_string()),
        "{err}"
    );
}

#[test]
fn the_map_stays_readable_at_500_pods() {
    let server = Server::start(&settings()).unwrap();
    let port = server.addr().port();
    server.publish(&doc(10, 50, 3, 1));
    let mut page = Browser::open(&format!("http://127.0.0.1:{port}/"), 1400, 900);
    page.wait_for("document.body.dataset.edges === '500'", "the 500 edges");
    // Every pod is named in the page; the map shows one box per namespace.
    let listed = page.eval("document.getElementById('endpoints').children.length");
    assert_eq!(listed, 500);
    let drawn = page.eval("cniscope.cy.nodes().length").as_u64().unwrap();
    assert_eq!(drawn, 10, "one box per namespace");
    page.screenshot(&std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("map-500.png"));
    // A double click on a box opens it: its 50 pods are drawn.
    let at = page.eval(
        "(() => { const p = cniscope.cy.getElementById('g:ns:ns-3').renderedPosition();
                  const r = document.getElementById('cy').getBoundingClientRect();
                  return [r.left + p.x, r.top + p.y]; })()",
    );
    page.click(at[0].as_f64().unwrap(), at[1].as_f64().unwrap(), 2);
    page.wait_for(
        "cniscope.cy.getElementById('pod/ns-3/pod-3-49').length === 1",
        "the namespace opened",
    );
    assert_eq!(page.eval("cniscope.cy.nodes('.pod').length"), 50);
    // A window more arrives live: its packets are added to the drawn edges.
    server.publish(&doc(10, 50, 5, 2));
    page.wait_for(
        "cniscope.state.doc.edges.every((e) => e.packets === 5)",
        "the live window",
    );
}
