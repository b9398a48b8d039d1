//! The config re-read while running, through the real pipeline on the recorded Flannel VXLAN
//! capture: a file with a problem and a file whose plugin does not start are refused whole
//! (the running config goes on, every window still counted); a good one is applied between
//! windows (its inventory names the next window's endpoints), on SIGHUP and on a write.

use crate::support::*;
use cniscope::config;
use cniscope::health::Health;
use cniscope::pipeline::Pipeline;
use cniscope::plugins::PluginEngine;
use cniscope::sources::replay::Replay;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The shipped demo config with absolute paths and `inventory` as its inventory file.
fn demo_config(inventory: &Path, flannel_network: &str) -> String {
    let examples = root().join("examples");
    std::fs::read_to_string(examples.join("flannel-vxlan-demo.toml"))
        .unwrap()
        .replace("\"../", &format!("\"{}/../", examples.display()))
        .replace(
            &format!(
                "\"{}/../tests/data/flannel-vxlan/inventory.json\"",
                examples.display()
            ),
            &format!("\"{}\"", inventory.display()),
        )
        .replace("\"10.244.0.0/16\"", &format!("\"{flannel_network}\""))
}

/// Moved in whole, as an editor or a ConfigMap update does.
fn write(path: &Path, text: &str) {
    let staged = path.with_extension("new");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

fn hangup() {
    // SAFETY: a signal to this process, whose handler `watch_config` installed.
    unsafe { libc::raise(libc::SIGHUP) };
}

/// One pass of the capture through the pipeline, then its document.
fn feed(pipeline: &mut Pipeline, settings: &config::Settings) -> Value {
    let mut replay = Replay::open(
        &settings.captures,
        pipeline.decoding(&settings.decoding),
        settings.window_ns,
    )
    .unwrap();
    replay.run(|points, obs, end| pipeline.window(points, &obs, end));
    serde_json::to_value(pipeline.doc(Health::default())).unwrap()
}

/// Packets of the edges from `src` (a node id).
fn packets_from(doc: &Value, src: &str) -> u64 {
    doc["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["src"] == src)
        .map(|e| e["packets"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_changed_config_is_applied_between_windows_all_or_nothing() {
    plugin("flannel");
    let dir = tempfile::tempdir().unwrap();
    let dump = root().join("tests/data/flannel-vxlan/inventory.json");
    let path = dir.path().join("cniscope.toml");
    write(&path, &demo_config(&dump, "10.244.0.0/16"));
    let settings = config::load(&path).unwrap();
    let engine = PluginEngine::new(None).unwrap();
    let inventory = cniscope::modes::load_inventory(&settings.inventories).unwrap();
    let mut pipeline = Pipeline::new(&engine, &settings.plugins, inventory).unwrap();
    pipeline.watch_config(&settings);

    let doc = feed(&mut pipeline, &settings);
    let client = "pod/default/client-a1";
    let once = packets_from(&doc, client);
    assert!(once > 0, "{doc:#}");

    // Not TOML: refused, naming the file and line; the running config goes on.
    write(&path, "[plugins\ndir = 3\n");
    hangup();
    let doc = feed(&mut pipeline, &settings);
    let health = &doc["health"]["config"];
    assert_eq!(
        (health["refused"].clone(), health["reloads"].clone()),
        (1.into(), 0.into()),
        "{health:#}"
    );
    let said = health["last_error"].as_str().unwrap();
    assert!(said.contains(&format!("{}:1:", path.display())), "{said}");
    assert_eq!(packets_from(&doc, client), 2 * once);

    // Valid TOML whose plugin refuses its options: refused whole.
    write(&path, &demo_config(&dump, "not a network"));
    hangup();
    let doc = feed(&mut pipeline, &settings);
    let health = &doc["health"]["config"];
    assert_eq!(health["refused"], 2, "{health:#}");
    assert!(
        health["last_error"]
            .as_str()
            .unwrap()
            .contains("plugin flannel"),
        "{health:#}"
    );
    assert_eq!(packets_from(&doc, client), 3 * once);

    // A good one, its inventory naming the client otherwise: applied, the next pass named by it.
    let renamed = dir.path().join("renamed.json");
    std::fs::write(
        &renamed,
        std::fs::read_to_string(&dump)
            .unwrap()
            .replace("\"client-a1\"", "\"client-renamed\""),
    )
    .unwrap();
    write(&path, &demo_config(&renamed, "10.244.0.0/16"));
    hangup();
    let doc = feed(&mut pipeline, &settings);
    let health = &doc["health"]["config"];
    assert_eq!(
        (health["reloads"].clone(), health["last_error"].clone()),
        (1.into(), Value::Null),
        "{health:#}"
    );
    assert_eq!(packets_from(&doc, client), 3 * once);
    assert_eq!(packets_from(&doc, "pod/default/client-renamed"), once);
    let flannel = &doc["health"]["plugins"]["flannel"];
    assert_eq!(flannel["state"], "ok", "{flannel:#}");
    assert_eq!(flannel["observations_lost"], 0, "{flannel:#}");

    // Written without a signal: the file watch sees it once it settles.
    write(&path, &demo_config(&dump, "10.244.0.0/16"));
    std::thread::sleep(Duration::from_millis(800));
    let doc = feed(&mut pipeline, &settings);
    assert_eq!(doc["health"]["config"]["reloads"], 2, "{:#}", doc["health"]);
    assert_eq!(packets_from(&doc, client), 4 * once);
}
