use crate::support::*;
use serde_json::Value;

/// (src, dst, service, protocol, port, packets), sorted as the JSON sink sorts edges.
type EdgeRow = (String, String, String, String, u64, u64);

fn edges(doc: &Value) -> Vec<EdgeRow> {
    doc["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["src"].as_str().unwrap().to_string(),
                e["dst"].as_str().unwrap().to_string(),
                e["service"].as_str().unwrap_or("-").to_string(),
                e["protocol"].as_str().unwrap().to_string(),
                e["port"].as_u64().unwrap(),
                e["packets"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn replay_json(extra: &[&str]) -> Value {
    let captures = lab_captures();
    let inv = data("flannel-vxlan/inventory.json");
    let mut args: Vec<&str> = vec!["replay"];
    args.extend(captures.iter().map(String::as_str));
    args.extend(["--inventory", inv.to_str().unwrap(), "--format", "json"]);
    args.extend(extra);
    topology(&args)
}

#[test]
fn lab_capture_gives_exactly_the_real_edges() {
    plugin("flannel");
    let doc = replay_json(&["--config", "examples/cniscope.toml"]);
    let row = |s: &str, d: &str, svc: &str, proto: &str, port, pkts| {
        (
            s.into(),
            d.into(),
            svc.into(),
            String::from(proto),
            port,
            pkts,
        )
    };
    // Packet counts are what tcpdump lists for each connection at the client's veth
    // (both directions, handshake and teardown included): tests/data/flannel-vxlan/README.md.
    let expected: Vec<EdgeRow> = vec![
        row("node/node-a", "pod/default/server-b1", "-", "icmp", 0, 4),
        row(
            "pod/default/client-a1",
            "pod/default/peer-a2",
            "-",
            "tcp",
            8080,
            12,
        ),
        row(
            "pod/default/client-a1",
            "pod/default/server-b1",
            "-",
            "tcp",
            8080,
            14,
        ),
        row(
            "pod/default/client-a1",
            "pod/default/server-b1",
            "-",
            "udp",
            5353,
            10,
        ),
        row(
            "pod/default/client-a1",
            "pod/default/server-b1",
            "service/default/echo",
            "tcp",
            8080,
            16,
        ),
    ];
    assert_eq!(edges(&doc), expected);

    let edge = |i: usize| &doc["edges"][i];
    let evidence = |i: usize| {
        edge(i)["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert!(
        evidence(0).contains(&"gateway-unresolved".into()),
        "node -> pod comes from the gateway address"
    );
    assert!(evidence(2).contains(&"flannel:vxlan".into()));
    assert!(
        !evidence(1).contains(&"flannel:vxlan".into()),
        "same-node traffic never crossed the tunnel"
    );
    assert!(evidence(4).contains(&"service:dnat".into()));
    // The cross-node TCP flow was seen at 4 points (2 veths, 2 uplinks) and counted once.
    assert_eq!(edge(2)["observed_at"].as_array().unwrap().len(), 4);
    assert_eq!(edge(2)["flows"], 1);

    let nodes = doc["nodes"].as_array().unwrap();
    let client = nodes
        .iter()
        .find(|n| n["id"] == "pod/default/client-a1")
        .unwrap();
    assert_eq!(client["workload"], "deployment/client");
    assert_eq!(client["node"], "node-a");
    assert!(
        nodes
            .iter()
            .all(|n| !n["id"].as_str().unwrap().starts_with("unknown/")),
        "no phantom endpoints: {nodes:?}"
    );
    assert_eq!(doc["health"]["plugins"]["flannel"]["state"], "ok");
}

#[test]
fn same_result_without_a_config_and_with_small_windows() {
    plugin("flannel");
    let with_config = replay_json(&["--config", "examples/cniscope.toml"]);
    let plain = replay_json(&[
        "--plugin",
        "flannel",
        "--plugin-dir",
        "dist/plugins",
        "--window-secs",
        "60",
    ]);
    assert_eq!(edges(&plain), edges(&with_config));
}

#[test]
fn dot_and_table_formats_render_the_same_edges() {
    plugin("flannel");
    let captures = lab_captures();
    let inv = data("flannel-vxlan/inventory.json");
    for (format, needle) in [
        (
            "dot",
            "\"pod/default/client-a1\" -> \"pod/default/server-b1\"",
        ),
        ("table", "service/default/echo"),
    ] {
        let mut args: Vec<&str> = vec!["replay"];
        args.extend(captures.iter().map(String::as_str));
        args.extend([
            "-i",
            inv.to_str().unwrap(),
            "-c",
            "examples/cniscope.toml",
            "-f",
            format,
        ]);
        let out = cniscope(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(needle),
            "{format}: {text}"
        );
    }
}

#[test]
fn the_demo_config_describes_the_whole_replay() {
    plugin("flannel");
    let doc = topology(&[
        "replay",
        "--config",
        "examples/flannel-vxlan-demo.toml",
        "--format",
        "json",
    ]);
    assert_eq!(
        edges(&doc),
        edges(&replay_json(&["--config", "examples/cniscope.toml"]))
    );
    // A capture named in the config that does not exist is a config error, with its line.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[replay]\n\n[[replay.capture]]\npath = \"missing.pcap\"\nnode = \"n1\"\n",
    )
    .unwrap();
    let out = cniscope(&["replay", "--config", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(":4:8: replay.capture[0].path:")
            && stderr.contains("missing.pcap does not exist"),
        "{stderr}"
    );
}

/// Flannel configured with another VXLAN port (`Backend.Port`): the plugin's option alone
/// makes both decoders decode it; nobody repeats it in `[decode]`.
#[test]
fn a_vxlan_port_set_only_in_the_plugins_options_is_decoded() {
    plugin("flannel");
    let dir = tempfile::tempdir().unwrap();
    let d = data("flannel-vxlan");
    let mut captures = String::new();
    for (node, iface, file) in [
        ("node-a", "vethclienta1", "node-a.client-veth.pcap"),
        ("node-a", "vethpeera2", "node-a.peer-veth.pcap"),
        ("node-a", "eth0", "node-a.eth0.pcap"),
        ("node-b", "eth0", "node-b.eth0.pcap"),
        ("node-b", "vethserverb1", "node-b.server-veth.pcap"),
    ] {
        let moved = rewrite_udp_port(&d.join(file), &dir.path().join(file), 8472, 58678);
        assert_eq!(
            moved > 0,
            iface == "eth0",
            "{file}: VXLAN only on the uplinks"
        );
        captures += &format!(
            "[[replay.capture]]\npath = \"{file}\"\nnode = \"{node}\"\niface = \"{iface}\"\n"
        );
    }
    let config = |port: u16| {
        let path = dir.path().join(format!("port-{port}.toml"));
        let text = format!(
            "[plugins]\ndir = \"{}\"\n[[plugin]]\nname = \"flannel\"\n[plugin.options]\nport = {port}\nnetwork = \"10.244.0.0/16\"\n[inventory]\nfiles = [\"{}\"]\n[replay]\nwindow_secs = 60\n{captures}",
            root().join("dist/plugins").display(),
            d.join("inventory.json").display(),
        );
        std::fs::write(&path, text).unwrap();
        topology(&[
            "replay",
            "--config",
            path.to_str().unwrap(),
            "--format",
            "json",
        ])
    };
    let shipped = topology(&[
        "replay",
        "--config",
        "examples/flannel-vxlan-demo.toml",
        "--format",
        "json",
    ]);
    let evidence = |doc: &Value| -> Vec<String> {
        doc["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["evidence"].to_string())
            .collect()
    };
    // Told the port, the plugin sees the same VXLAN as on the standard port.
    let moved = config(58678);
    assert_eq!(edges(&moved), edges(&shipped));
    assert_eq!(evidence(&moved), evidence(&shipped));
    // Not told, the uplinks' UDP stays undecoded: the cross-node edges lose their tunnel.
    let untold = config(8472);
    assert!(
        !evidence(&untold)
            .iter()
            .any(|e| e.contains("flannel:vxlan")),
        "{:?}",
        evidence(&untold)
    );
}
