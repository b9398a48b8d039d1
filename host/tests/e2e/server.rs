//! `[server]` on the live Flannel VXLAN lab: the topology API against the output file, the
//! window stream, Prometheus metrics and their cap, filters and bad queries, `cniscope
//! observe`, and the web map in headless Chromium (live updates, every pod named, a click on
//! an edge showing its capture points, a screenshot).

use crate::browser::Browser;
use crate::lab::{Lab, finish};
use crate::support::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Packets per edge, by the contract's edge names.
fn packets(edges: &[Value]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for e in edges {
        let key = format!(
            "{}|{}|{}|{}/{}",
            e["src"].as_str().unwrap(),
            e["dst"].as_str().unwrap(),
            e["service"].as_str().unwrap_or(""),
            e["protocol"].as_str().unwrap(),
            e["port"]
        );
        *m.entry(key).or_default() += e["packets"].as_u64().unwrap();
    }
    m
}

fn api(port: u16, path: &str) -> Value {
    let (status, body) = http_get(port, path, &[]);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

const METRIC_CAP: usize = 4;

#[test]
fn map_api_metrics_and_stream_on_the_flannel_lab() {
    if !root_or_skip("builds the Flannel lab and captures it live") {
        return;
    }
    plugin("flannel");
    let lab = Lab::build("flannel.sh", "srv", "vxlan");
    let port = free_port();
    let mut config = std::fs::read_to_string(lab.config()).unwrap();
    config.push_str(&format!(
        "\n[server]\nlisten = \"127.0.0.1:{port}\"\nmax_metric_edges = {METRIC_CAP}\n"
    ));
    std::fs::write(lab.config(), config).unwrap();
    let agent = lab.start_agent();
    // The first publish: the server has its first (empty) document.
    let t = Instant::now();
    while http_get(port, "/healthz", &[]).0 != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the server never had a window"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Followers from before the traffic: the stream, observe, and the map.
    let stream = EventStream::open(port, "/api/edges/stream");
    let observed = lab.dir().join("observe.out");
    let mut observe = Command::new(env!("CARGO_BIN_EXE_cniscope"))
        .args(["observe", "--server", &format!("http://127.0.0.1:{port}")])
        .args(["--pod", "default/client-a1"])
        .stdout(std::fs::File::create(&observed).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut page = Browser::open(&format!("http://127.0.0.1:{port}/"), 1400, 900);
    page.wait_for(
        "document.body.dataset.ready === '1'",
        "the map's first drawing",
    );

    lab.script(&["traffic", &lab.id]);
    lab.script(&["services", &lab.id]);
    // Settled: two windows (1 s) with no change in the output file.
    let out = lab.dir().join("topology.json");
    let mut last = String::new();
    let mut same = 0;
    let file = loop {
        std::thread::sleep(Duration::from_millis(1100));
        let doc = wait_output(&out, "the topology", |_| true);
        let now = format!("{:?}", packets(doc["edges"].as_array().unwrap()));
        same = if now == last { same + 1 } else { 0 };
        last = now;
        if same >= 2 {
            break doc;
        }
    };
    let want = packets(file["edges"].as_array().unwrap());
    assert!(want.len() > METRIC_CAP, "{want:?}");

    // The API's latest document is the output file's.
    let t = Instant::now();
    loop {
        let doc = api(port, "/api/topology");
        if packets(doc["edges"].as_array().unwrap()) == want {
            assert_eq!(doc["nodes"], file["nodes"]);
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "API {doc:#} vs {file:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The stream's windows add up to the same edges, each packet counted once.
    let mut summed: BTreeMap<String, u64> = BTreeMap::new();
    let windows = stream.windows();
    for w in &windows {
        for (k, v) in packets(w["edges"].as_array().unwrap()) {
            *summed.entry(k).or_default() += v;
        }
    }
    assert_eq!(summed, want, "{} windows streamed", windows.len());
    assert!(windows.len() >= 2);

    // The last windows' own traffic is empty now (nothing was sent since).
    let recent = api(port, "/api/topology?window=1");
    assert_eq!(recent["edges"], serde_json::json!([]), "{recent:#}");

    // Filters.
    let mine = api(port, "/api/topology?pod=client-a1");
    let to_client =
        |e: &Value| e["src"] == "pod/default/client-a1" || e["dst"] == "pod/default/client-a1";
    let expected = file["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| to_client(e))
        .count();
    assert_eq!(mine["edges"].as_array().unwrap().len(), expected);
    assert!(mine["edges"].as_array().unwrap().iter().all(to_client));
    assert_eq!(
        packets(
            api(port, "/api/topology?namespace=default")["edges"]
                .as_array()
                .unwrap()
        ),
        want
    );
    let none = api(port, "/api/topology?namespace=kube-system&pod=client-a1");
    assert_eq!(none["edges"], serde_json::json!([]));
    for (query, says) in [
        ("bogus=1", "unknown parameter `bogus`"),
        ("window=0", "window=\"0\""),
        ("window=abc", "window=\"abc\""),
        ("window=1&window=2", "twice"),
        ("namespace=Bad_NS", "namespace=\"Bad_NS\""),
        ("pod=a/b/c", "pod=\"a/b/c\""),
    ] {
        let (status, body) = http_get(port, &format!("/api/topology?{query}"), &[]);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }
    let (status, body) = http_get(port, "/api/edges/stream?window=3", &[]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(http_get(port, "/nothing", &[]).0, 404);

    // Metrics: what a Prometheus parser reads; the first edges exported, the rest counted.
    let (status, text) = http_get(port, "/metrics", &[]);
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |s: &prometheus_parse::Sample| match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => panic!("{s:?}"),
    };
    let series: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "cniscope_edge_packets_total")
        .collect();
    assert_eq!(series.len(), METRIC_CAP, "{text}");
    for s in series {
        let key = format!(
            "{}|{}|{}|{}/{}",
            s.labels.get("src").unwrap(),
            s.labels.get("dst").unwrap(),
            s.labels.get("service").unwrap_or(""),
            s.labels.get("protocol").unwrap(),
            s.labels.get("port").unwrap()
        );
        assert_eq!(Some(value(s) as u64), want.get(&key).copied(), "{key}");
    }
    let one = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(value)
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    assert_eq!(
        one("cniscope_metric_edges_dropped_total") as usize,
        want.len() - METRIC_CAP
    );
    assert!(one("cniscope_plugin_calls_total") > 0.0);
    assert!(one("cniscope_windows_total") >= windows.len() as f64);
    assert!(one("cniscope_probe_packets_total") > 0.0);
    // This test's stream, observe and the map.
    assert_eq!(one("cniscope_stream_clients"), 3.0);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "cniscope_drops_total" && s.labels.get("reason").is_some()),
        "{text}"
    );

    // The map followed the stream: the same edges and counts, every pod of the lab named.
    let n = want.len();
    page.wait_for(
        &format!("document.body.dataset.edges === '{n}'"),
        "the map's live edges",
    );
    let drawn: Vec<Value> =
        serde_json::from_value(page.eval("JSON.stringify(cniscope.state.doc.edges)"))
            .map(|s: String| serde_json::from_str(&s).unwrap())
            .unwrap();
    assert_eq!(packets(&drawn), want);
    let inventory: Value =
        serde_json::from_str(&std::fs::read_to_string(lab.dir().join("inventory.json")).unwrap())
            .unwrap();
    let listed = page.eval("document.getElementById('endpoints').innerText");
    let listed = listed.as_str().unwrap();
    for item in inventory["items"].as_array().unwrap() {
        if item["kind"] == "Pod" {
            let id = format!(
                "pod/{}/{}",
                item["metadata"]["namespace"].as_str().unwrap(),
                item["metadata"]["name"].as_str().unwrap()
            );
            assert!(listed.contains(&id), "{id} not in {listed}");
            let drawn = page.eval(&format!("cniscope.cy.getElementById('{id}').length"));
            assert_eq!(drawn, 1, "{id} not drawn");
        }
    }

    // A click on the node's ICMP edge shows its capture points.
    let icmp = file["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["src"] == "node/node-a" && e["protocol"] == "icmp")
        .expect("the node's ping")
        .clone();
    let id = format!(
        "{}|{}||icmp/{}",
        icmp["src"].as_str().unwrap(),
        icmp["dst"].as_str().unwrap(),
        icmp["port"]
    );
    // (A window may arrive between two steps: wait for the edge rather than assume it.)
    page.wait_for(
        &format!("cniscope.cy.getElementById({id:?}).length === 1"),
        "the node's ICMP edge drawn",
    );
    let at = page.eval(&format!(
        "(() => {{ const p = cniscope.cy.getElementById({id:?}).renderedMidpoint();
                   const r = document.getElementById('cy').getBoundingClientRect();
                   return [r.left + p.x, r.top + p.y]; }})()"
    ));
    page.click(at[0].as_f64().unwrap(), at[1].as_f64().unwrap(), 1);
    page.wait_for(
        "document.getElementById('selection') !== null",
        "the edge's details",
    );
    let details = page.eval("document.getElementById('details').innerText");
    let details = details.as_str().unwrap();
    assert!(
        details.contains("node/node-a") && details.contains("icmp/0"),
        "{details}"
    );
    for point in icmp["observed_at"].as_array().unwrap() {
        assert!(
            details.contains(point.as_str().unwrap()),
            "{point} in {details}"
        );
    }
    let png = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("map-flannel-vxlan.png");
    page.screenshot(&png);
    assert!(std::fs::metadata(&png).unwrap().len() > 10_000);
    eprintln!("the map: {}", png.display());
    drop(page);

    // observe: one line per edge change of client-a1, each edge new once.
    let _ = observe.kill();
    let _ = observe.wait();
    let lines = std::fs::read_to_string(&observed).unwrap();
    assert!(!lines.is_empty());
    for l in lines.lines() {
        assert!(l.contains("pod/default/client-a1"), "{l}");
    }
    let news = lines.lines().filter(|l| l.contains("  new  ")).count();
    assert_eq!(news, expected, "{lines}");

    drop(stream);
    terminate(&agent);
    let last = finish(agent);
    assert_eq!(packets(last["edges"].as_array().unwrap()), want);
}
