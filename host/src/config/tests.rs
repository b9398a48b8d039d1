use super::*;

fn problems(text: &str) -> Vec<(usize, String)> {
    parse(text, Path::new("/nonexistent"))
        .unwrap_err()
        .into_iter()
        .map(|p| (p.line, p.key))
        .collect()
}

#[test]
fn unknown_key_is_reported_with_line_and_key() {
    let text = "[plugins]\ndir = \"x\"\nmemory_limit_mb = 3\n";
    let p = parse(text, Path::new("/nonexistent")).unwrap_err();
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].line, p[0].key.as_str()),
        (3, "plugins.memory_limit_mb")
    );
    assert!(
        p[0].message.contains("unknown field `memory_limit_mb`"),
        "{}",
        p[0].message
    );
}

#[test]
fn all_validation_problems_come_together() {
    let text = "[plugins]\nmemory_limit_mib = 0\n\n[[plugin]]\nname = \"flannel\"\nsha256 = \"abc\"\n\n[[plugin]]\nname = \"flannel\"\n";
    let keys = problems(text);
    let has = |line: usize, key: &str| keys.contains(&(line, key.to_string()));
    assert!(has(2, "plugins.memory_limit_mib"), "{keys:?}");
    assert!(has(6, "plugin[0].sha256"), "{keys:?}");
    assert!(has(9, "plugin[1].name"), "{keys:?}");
    assert!(
        has(5, "plugin[0].name"),
        "missing file is reported: {keys:?}"
    );
}

#[test]
fn problems_in_several_sections_and_entries_come_together() {
    // A parse problem in one section (unknown key), one in a plugin entry (wrong type), a
    // validation problem in another section and one in a third: four at once.
    let text = "[agent]\nflow_entries = 4294967295\n\n[[plugin]]\nname = \"a\"\nenabled = \"yes\"\n\n[replay]\nwindow_secs = 0\n\n[output]\nfromat = \"json\"\n";
    let keys = problems(text);
    let has = |line: usize, key: &str| keys.contains(&(line, key.to_string()));
    assert!(has(2, "agent.flow_entries"), "{keys:?}");
    assert!(has(6, "plugin[0].enabled"), "{keys:?}");
    assert!(has(9, "replay.window_secs"), "{keys:?}");
    assert!(has(12, "output.fromat"), "{keys:?}");
}

#[test]
fn parse_and_validation_problems_name_keys_alike() {
    // The second plugin's sha256 is of the wrong type (a parse problem) and the first's is
    // too short (a validation problem): both keys carry the entry's index.
    let text = "[[plugin]]\nname = \"a\"\nsha256 = \"abc\"\n[[plugin]]\nname = \"b\"\nsha256 = 3\n";
    let keys = problems(text);
    assert!(keys.contains(&(3, "plugin[0].sha256".into())), "{keys:?}");
    assert!(keys.contains(&(6, "plugin[1].sha256".into())), "{keys:?}");
}

#[test]
fn a_wrong_type_names_the_key() {
    let p = parse("[replay]\nwindow_secs = \"ten\"\n", Path::new(".")).unwrap_err();
    assert_eq!((p[0].line, p[0].key.as_str()), (2, "replay.window_secs"));
}

#[test]
fn agent_sizes_that_are_not_powers_of_two_name_their_key() {
    let text = "[agent]\nflow_cache_slots = 1000\nringbuf_bytes = 5000\n";
    let keys = problems(text);
    assert!(
        keys.contains(&(2, "agent.flow_cache_slots".into())),
        "{keys:?}"
    );
    assert!(
        keys.contains(&(3, "agent.ringbuf_bytes".into())),
        "{keys:?}"
    );
}

#[test]
fn out_of_range_agent_values_are_errors_not_clamps() {
    for (line, bad) in [
        ("duration_secs = -1", "agent.duration_secs"),
        ("duration_secs = nan", "agent.duration_secs"),
        ("duration_secs = inf", "agent.duration_secs"),
        ("duration_secs = 1e20", "agent.duration_secs"),
        ("interval_secs = nan", "agent.interval_secs"),
        ("interval_secs = 0", "agent.interval_secs"),
        ("flow_entries = 4", "agent.flow_entries"),
        ("flow_entries = 4294967295", "agent.flow_entries"),
        ("ringbuf_bytes = 2147483648", "agent.ringbuf_bytes"),
    ] {
        let text = format!("[agent]\n{line}\n");
        let p = parse(&text, Path::new(".")).unwrap_err();
        assert_eq!(p.len(), 1, "{line}: {p:?}");
        assert_eq!((p[0].line, p[0].key.as_str()), (2, bad), "{line}");
        assert!(
            p[0].message.contains("use") || p[0].message.contains("from"),
            "{line}: the bound is in the message: {}",
            p[0].message
        );
    }
    let s = parse("[agent]\nduration_secs = 0.5\n", Path::new(".")).unwrap();
    assert_eq!(s.agent.duration, Some(Duration::from_millis(500)));
    let s = parse("[agent]\nflow_entries = 16\n", Path::new(".")).unwrap();
    assert_eq!(s.agent.flow_entries, 16);
}

#[test]
fn agent_measurement_switches_reach_the_settings() {
    let text = "[agent]\nbpf_stats = true\nbaseline_probe = true\n";
    let s = parse(text, Path::new(".")).unwrap();
    assert!(s.agent.bpf_stats && s.agent.baseline_probe);
    let s = parse("", Path::new(".")).unwrap();
    assert!(!s.agent.bpf_stats && !s.agent.baseline_probe);
    // The kernel drop program is on unless switched off.
    assert!(s.agent.kernel_drops);
    let s = parse("[agent]\nkernel_drops = false\n", Path::new(".")).unwrap();
    assert!(!s.agent.kernel_drops);
    let e = parse("[agent]\ndrop_ringbuf_bytes = 5000\n", Path::new(".")).unwrap_err();
    assert!(
        format!("{e:?}").contains("agent.drop_ringbuf_bytes"),
        "{e:?}"
    );
}

#[test]
fn the_probes_join_tcx_chains_first_unless_told_last() {
    assert!(parse("", Path::new(".")).unwrap().agent.tcx_first);
    let s = parse("[agent]\ntcx_order = \"last\"\n", Path::new(".")).unwrap();
    assert!(!s.agent.tcx_first);
    let p = parse("[agent]\ntcx_order = \"middle\"\n", Path::new(".")).unwrap_err();
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!((p[0].line, p[0].key.as_str()), (2, "agent.tcx_order"));
    assert!(p[0].message.contains("\"first\" or \"last\""), "{p:?}");
}

#[test]
fn agent_nodes_are_typed_and_named_once() {
    let text = "[[agent.node]]\nname = \"a\"\nifaces = [\"eth*\"]\n[[agent.node]]\nname = \"a\"\n";
    let keys = problems(text);
    assert_eq!(keys, vec![(5, "agent.node[1].name".to_string())]);
    let s = parse(
        "[[agent.node]]\nname = \"a\"\nifaces = [\"eth*\"]\n",
        Path::new("."),
    )
    .unwrap();
    assert_eq!(
        s.agent.nodes,
        vec![NodeToWatch {
            name: "a".into(),
            netns: None,
            ifaces: vec!["eth*".into()],
        }]
    );
}

#[test]
fn the_inventory_and_decode_sections_serve_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cluster.json"), "{}").unwrap();
    let text = "[inventory]\nfiles = [\"cluster.json\"]\n[decode]\nvxlan_ports = [58678]\n";
    let s = parse(text, dir.path()).unwrap();
    assert_eq!(s.inventories, vec![dir.path().join("cluster.json")]);
    assert_eq!(s.decoding.vxlan, vec![58678]);
    assert_eq!(s.decoding.geneve, Decoding::default().geneve);
}

#[test]
fn the_kubernetes_inventory_keys_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), "").unwrap();
    let text = "[inventory]\nkubernetes = true\nkubeconfig = \"kubeconfig\"\ncontext = \"prod\"\nretain_deleted_secs = 120\n";
    let s = parse(text, dir.path()).unwrap();
    let k = s.kubernetes.expect("kubernetes = true");
    assert_eq!(k.kubeconfig, Some(dir.path().join("kubeconfig")));
    assert_eq!(k.context.as_deref(), Some("prod"));
    assert_eq!(k.retain_deleted, Duration::from_secs(120));
    assert_eq!(k.sync_timeout, Duration::from_secs(30));
    assert!(parse("", dir.path()).unwrap().kubernetes.is_none());
    // Each problem named by its key (a kubeconfig without kubernetes = true is one).
    let text = "[inventory]\nkubeconfig = \"missing\"\nretain_deleted_secs = -1\nsync_timeout_secs = 1e9\n";
    let p = parse(text, dir.path()).unwrap_err();
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "inventory.kubeconfig",
            "inventory.retain_deleted_secs",
            "inventory.sync_timeout_secs",
        ],
        "{p:?}"
    );
}

#[test]
fn keys_that_moved_say_where_to() {
    let text = "[replay]\ninventory = [\"x.json\"]\nvxlan_ports = [4789]\n";
    let p = parse(text, Path::new(".")).unwrap_err();
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].message.contains("[inventory] files"),
        "{}",
        p[0].message
    );
    assert!(
        p[1].message.contains("[decode] vxlan_ports"),
        "{}",
        p[1].message
    );
}

#[test]
fn an_unknown_section_is_named() {
    let keys = problems("[agnet]\ninterval_secs = 1\n");
    assert_eq!(keys, vec![(1, "agnet".to_string())]);
}

#[test]
fn many_plugins_are_checked_for_duplicates_in_linear_time() {
    // 20 000 entries used to take seconds (a quadratic scan); now a set.
    let mut text = String::from("[plugins]\ndir = \"/nonexistent\"\n");
    for i in 0..20_000 {
        text.push_str(&format!("[[plugin]]\nname = \"p{i}\"\nenabled = false\n"));
    }
    text.push_str("[[plugin]]\nname = \"p7\"\nenabled = false\n");
    let keys = problems(&text);
    assert_eq!(keys.len(), 1, "{:?}", &keys[..keys.len().min(3)]);
    assert_eq!(keys[0].1, "plugin[20000].name");
}

#[test]
fn the_cluster_sections_are_checked() {
    let text = "[nats]\nurl = \"http://x\"\nbuffer_mib = 0\ntlscert = \"a.pem\"\n[aggregate]\ninterval_secs = 0\nmax_lateness_secs = -1\n";
    let keys = problems(text);
    for key in [
        "nats.url",
        "nats.buffer_mib",
        "nats.tlscert",
        "aggregate.interval_secs",
        "aggregate.max_lateness_secs",
    ] {
        assert!(keys.iter().any(|(_, k)| k == key), "{key}: {keys:?}");
    }
    let s = parse(
        "[nats]\nurl = \"nats://10.0.0.1:4222, nats://10.0.0.2:4222\"\n[aggregate]\ninterval_secs = 2\n",
        Path::new("/etc/cniscope"),
    )
    .unwrap();
    let n = s.nats.unwrap();
    assert_eq!(n.buffer_bytes, 64 << 20);
    assert_eq!(s.aggregate.interval, Duration::from_secs(2));
    assert_eq!(
        s.aggregate.state_file,
        Path::new("/etc/cniscope/cniscope-aggregate.state")
    );
    assert!(parse("", Path::new(".")).unwrap().nats.is_none());
}

#[test]
fn server_keys_are_checked_together() {
    let text = "[server]\nlisten = \"localhost\"\ntoken_file = \"nope\"\nmax_metric_edges = 2000000\nkeep_windows = 0\nmax_stream_clients = 0\n";
    let keys = problems(text);
    for (line, key) in [
        (2, "server.listen"),
        (3, "server.token_file"),
        (4, "server.max_metric_edges"),
        (5, "server.keep_windows"),
        (6, "server.max_stream_clients"),
    ] {
        assert!(keys.contains(&(line, key.to_string())), "{key}: {keys:?}");
    }
    let s = parse(
        "[server]\nlisten = \"127.0.0.1:0\"\n",
        Path::new("/nonexistent"),
    )
    .unwrap();
    let server = s.server.unwrap();
    assert_eq!(server.listen.to_string(), "127.0.0.1:0");
    assert_eq!((server.max_metric_edges, server.keep_windows), (5000, 60));
    // No `listen`, no server.
    assert!(
        parse("[server]\nkeep_windows = 5\n", Path::new("/x"))
            .unwrap()
            .server
            .is_none()
    );
}
