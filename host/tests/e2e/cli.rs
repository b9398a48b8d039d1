use crate::support::*;

fn text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn plugin_inspect_prints_the_description() {
    let out = cniscope(&["plugin", "inspect", plugin("flannel").to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for needle in [
        "name:      flannel",
        "cni kinds: flannel",
        "flannel.1",
        "vni",
        "sha256:",
        "cniscope:plugin/types@0.6.0",
        // Its decoding needs with default options: VXLAN on 8472, the udp backend's 8285.
        "vxlan ports            [8472]",
        "udp encap ports        [8285]",
    ] {
        assert!(stdout.contains(needle), "{needle:?} in\n{stdout}");
    }
    // The CNI objects a plugin reads, which the host hands over without knowing them.
    for (name, kinds) in [
        (
            "ovn",
            [
                "network.openshift.io/v1 HostSubnet",
                "network.openshift.io/v1 NetNamespace",
            ],
        ),
        (
            "calico",
            [
                "crd.projectcalico.org/v1 IPPool",
                "crd.projectcalico.org/v1 IPAMBlock",
            ],
        ),
    ] {
        let out = cniscope(&["plugin", "inspect", plugin(name).to_str().unwrap()]);
        let (stdout, _) = text(&out);
        assert!(stdout.contains("reads objects:"), "{stdout}");
        for kind in kinds {
            assert!(stdout.contains(kind), "{kind} in\n{stdout}");
        }
    }
    let out = cniscope(&["plugin", "inspect", plugin("fs-reader").to_str().unwrap()]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("REFUSED:") && stdout.contains("imports wasi:filesystem/preopens"),
        "{stdout}"
    );
    let out = cniscope(&["plugin", "list", "--dir", "dist/plugins"]);
    assert!(text(&out).0.contains("flannel.wasm"), "{:?}", text(&out));
}

#[test]
fn config_check_names_file_line_and_key_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("cniscope.toml");
    std::fs::write(
        &bad,
        "[plugins]\ndir = \"plugins\"\n\n[[plugin]]\nname = \"flannel\"\nmemory_limit = 3\n",
    )
    .unwrap();
    let out = cniscope(&["config", "check", bad.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    let want = format!(
        "{}:6:1: plugin[0].memory_limit: unknown field `memory_limit`",
        bad.display()
    );
    assert!(stderr.contains(&want), "{want:?} in {stderr}");

    let out = cniscope(&["config", "check", "examples/cniscope.toml"]);
    assert!(out.status.success(), "{:?}", text(&out));
}

#[test]
fn a_truncated_capture_is_reported_and_the_rest_still_replays() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(data("flannel-vxlan/node-a.client-veth.pcap")).unwrap();
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &full[..full.len() * 2 / 3]).unwrap();
    let garbage = dir.path().join("garbage.pcap");
    let mut bytes = full[..24].to_vec(); // a valid pcap header, then noise records
    bytes.extend((0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    std::fs::write(&garbage, &bytes).unwrap();
    // A pcapng section header, then noise: the parser's error carries the noise itself.
    let garbage_ng = dir.path().join("garbage.pcapng");
    let mut ng = vec![
        0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0,
    ];
    ng.extend([0xff; 8]);
    ng.extend([28, 0, 0, 0]);
    ng.extend([1, 0, 0, 0, 0x40, 0, 0, 0]);
    ng.extend((0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8));
    std::fs::write(&garbage_ng, &ng).unwrap();
    let inv = data("flannel-vxlan/inventory.json");
    let cut_spec = format!("node-a/vethclienta1={}", cut.display());
    let garbage_spec = format!("node-a/eth9={}", garbage.display());
    let garbage_ng_spec = format!("node-a/eth8={}", garbage_ng.display());
    let mut args = vec!["replay", &cut_spec, &garbage_spec, &garbage_ng_spec];
    let rest = lab_captures();
    args.extend(rest[1..].iter().map(String::as_str));
    args.extend([
        "-i",
        inv.to_str().unwrap(),
        "-c",
        "examples/cniscope.toml",
        "-f",
        "json",
    ]);
    let out = cniscope(&args);
    let (stdout, stderr) = text(&out);
    // Printed whole, and the exit code says it is incomplete, naming why.
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("the output is incomplete") && stderr.contains("cut.pcap: truncated"),
        "{stderr}"
    );
    args.push("--allow-partial");
    assert!(cniscope(&args).status.success(), "--allow-partial exits 0");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let errors = doc["health"]["errors"].to_string();
    assert!(errors.contains("cut.pcap: truncated"), "{errors}");
    assert!(errors.contains("garbage.pcap"), "{errors}");
    assert!(errors.contains("garbage.pcapng"), "{errors}");
    for e in doc["health"]["errors"].as_array().unwrap() {
        let e = e.as_str().unwrap();
        assert!(
            e.len() < 300,
            "one short line per file, not the parser's input: {e}"
        );
    }
    assert!(stderr.len() < 2_000, "{}", stderr.len());
    // The other files still name the cross-node flow from the server side and the uplinks.
    assert!(
        doc["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["src"] == "pod/default/client-a1" && e["dst"] == "pod/default/server-b1")
    );
}

#[test]
fn a_missing_capture_or_inventory_is_a_clear_error() {
    let out = cniscope(&["replay", "nope.pcap", "--plugin", "flannel"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("nope.pcap"), "{:?}", text(&out));
    let out = cniscope(&[
        "replay",
        "x.pcap",
        "-i",
        "missing.json",
        "--plugin",
        "flannel",
    ]);
    assert!(text(&out).1.contains("missing.json"), "{:?}", text(&out));
}

#[test]
fn plugin_test_compares_a_built_plugin_with_an_expected_topology() {
    let dir = tempfile::tempdir().unwrap();
    let expect = dir.path().join("expected.json");
    let wasm = plugin("flannel");
    let inv = data("flannel-vxlan/inventory.json");
    let captures = lab_captures();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "plugin",
            "test",
            wasm.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "--expect",
            expect.to_str().unwrap(),
        ];
        for c in &captures {
            args.extend(["--capture", c.as_str()]);
        }
        args.extend(extra);
        cniscope(&args)
    };
    let out = run(&["--bless"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let out = run(&[]);
    assert!(
        out.status.success() && text(&out).0.contains("ok: 5 edges"),
        "{:?}",
        text(&out)
    );
    // An expectation the plugin does not meet fails, showing the difference.
    let blessed = std::fs::read_to_string(&expect).unwrap();
    std::fs::write(
        &expect,
        blessed.replacen("\"packets\": 14", "\"packets\": 15", 1),
    )
    .unwrap();
    let out = run(&[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout
            .contains("- pod/default/client-a1 -> pod/default/server-b1 via - tcp/8080 packets 15"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("+ pod/default/client-a1 -> pod/default/server-b1 via - tcp/8080 packets 14"),
        "{stdout}"
    );
    assert!(stderr.contains("1 edges missing, 1 unexpected"), "{stderr}");
}

/// `plugin install`: the shipped plugins from a folder, one from standard input under a name,
/// garbage refused (nothing of it left in the folder, the installed version untouched), and
/// `--keep-existing` leaving an operator's file alone.
#[test]
fn plugin_install_checks_each_plugin_before_moving_it_in_whole() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let d = plugins.to_str().unwrap();
    // The shipped plugins and one that reads files, which no config can grant.
    let shipped = dir.path().join("shipped");
    std::fs::create_dir(&shipped).unwrap();
    for name in ["flannel", "calico", "ovn", "cilium", "kata", "fs-reader"] {
        std::fs::copy(plugin(name), shipped.join(format!("{name}.wasm"))).unwrap();
    }
    let out = cniscope(&["plugin", "install", "--dir", d, shipped.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "fs-reader is refused");
    assert!(
        stderr.contains("fs-reader.wasm: refused") && stderr.contains("no filesystem access"),
        "{stderr}"
    );
    assert!(!plugins.join("fs-reader.wasm").exists());
    for name in ["flannel", "calico", "ovn", "cilium", "kata"] {
        assert!(
            stdout.contains(&format!("{name}.wasm: installed ")),
            "{stdout}"
        );
        assert_eq!(
            std::fs::read(plugins.join(format!("{name}.wasm"))).unwrap(),
            std::fs::read(plugin(name)).unwrap()
        );
    }

    // Garbage under a plugin's name: refused, the installed flannel.wasm as it was.
    let garbage = dir.path().join("flannel.wasm");
    std::fs::write(&garbage, b"\0asm not a component").unwrap();
    let out = cniscope(&["plugin", "install", "--dir", d, garbage.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("flannel.wasm: refused"), "{stderr}");
    assert_eq!(
        std::fs::read(plugins.join("flannel.wasm")).unwrap(),
        std::fs::read(plugin("flannel")).unwrap()
    );
    let left: Vec<_> = std::fs::read_dir(&plugins)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "staged files left: {left:?}");

    // From standard input, as `kubectl exec -i` gives it.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cniscope"))
        .args(["plugin", "install", "--dir", d, "--name", "mine.wasm", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(plugin("ovn")).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(plugins.join("mine.wasm").is_file());

    // An operator's file kept under the image's defaults.
    std::fs::copy(plugin("ovn"), plugins.join("flannel.wasm")).unwrap();
    let out = cniscope(&[
        "plugin",
        "install",
        "--dir",
        d,
        "--keep-existing",
        plugin("flannel").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(text(&out).0.contains("flannel.wasm: kept"));
    assert_eq!(
        std::fs::read(plugins.join("flannel.wasm")).unwrap(),
        std::fs::read(plugin("ovn")).unwrap()
    );
}

/// An error names its cause once (the OS error was printed twice, by the error and again as
/// its source).
#[test]
fn an_error_says_its_cause_once() {
    let out = cniscope(&[
        "replay",
        "n/e=/nonexistent/cap.pcap",
        "-p",
        "flannel",
        "--plugin-dir",
        plugin("flannel").parent().unwrap().to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("/nonexistent/cap.pcap"), "{stderr}");
}

/// A long replay shows its progress on a terminal (a pseudo-terminal from `script`), and
/// nothing when stderr is a pipe.
#[test]
fn replay_progress_only_on_a_terminal() {
    plugin("flannel");
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("many.pcap");
    let frames: Vec<Vec<u8>> = (0..40_000u32)
        .map(|i| {
            let ip = ipv4_tcp(
                [10, 244, 0, 2],
                [10, 244, 1, 2],
                (10_000 + (i % 5000) as u16, 8080),
                i,
                "A",
                b"",
            );
            ethernet([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], &ip)
        })
        .collect();
    write_pcap(&cap, 1_700_000_000_000, &frames);
    let replay = format!(
        "{} replay node-a/eth0={} --plugin flannel --plugin-dir {} --allow-partial -o {}",
        env!("CARGO_BIN_EXE_cniscope"),
        cap.display(),
        plugin("flannel").parent().unwrap().display(),
        dir.path().join("out.txt").display()
    );
    let piped = std::process::Command::new("bash")
        .args(["-c", &replay])
        .output()
        .unwrap();
    assert!(piped.status.success(), "{piped:?}");
    assert!(
        !String::from_utf8_lossy(&piped.stderr).contains("packets/s"),
        "{piped:?}"
    );
    let tty = std::process::Command::new("script")
        .args(["-qec", &replay, "/dev/null"])
        .output()
        .unwrap();
    assert!(tty.status.success(), "{tty:?}");
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(shown.contains("packets/s"), "{shown}");
}

/// `config check` loads, starts and configures every plugin: a pin that does not match, a
/// plugin importing the filesystem, garbage, a core module and options the plugin refuses
/// are each reported at their `[[plugin]]` line, with exit 78; `replay -c` says the same.
#[test]
fn config_check_loads_every_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("p");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(plugin("flannel"), plugins.join("flannel.wasm")).unwrap();
    std::fs::copy(plugin("fs-reader"), plugins.join("fs-reader.wasm")).unwrap();
    std::fs::write(plugins.join("garbage.wasm"), "garbage").unwrap();
    std::fs::write(plugins.join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins]\ndir = \"p\"\n\n[[plugin]]\nname = \"flannel\"\nsha256 = \"{}\"\n\n[[plugin]]\nname = \"fs-reader\"\n\n[[plugin]]\nname = \"garbage\"\n\n[[plugin]]\nname = \"core\"\n\n[[plugin]]\nname = \"picky\"\nfile = \"flannel.wasm\"\n[plugin.options]\nnetwork = \"not-a-cidr\"\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let out = cniscope(&["config", "check", config.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stdout}{stderr}");
    let c = config.display();
    for (line, says) in [
        (5, "plugin[0]: plugin "),
        (5, "but the config pins 0000"),
        (9, "plugin[1]: plugin "),
        (9, "plugins get no filesystem access"),
        (12, "plugin[2]: plugin "),
        (12, "not a loadable Wasm component"),
        (15, "plugin[3]: plugin "),
        (15, "a wasm module with a component parser"),
        (18, "plugin[4]: plugin picky: bad-option network"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("{c}:{line}:")) && l.contains(says)),
            "{line}: {says} in\n{stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), 5, "one line each:\n{stderr}");
    // A good config still says ok.
    std::fs::write(
        &config,
        "[plugins]\ndir = \"p\"\n[[plugin]]\nname = \"flannel\"\n",
    )
    .unwrap();
    let out = cniscope(&["config", "check", config.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", text(&out));
    // replay -c with options the plugin refuses: the same line, the same exit code.
    std::fs::write(
        &config,
        "[plugins]\ndir = \"p\"\n[[plugin]]\nname = \"flannel\"\n[plugin.options]\nnetwork = \"x\"\n",
    )
    .unwrap();
    let out = cniscope(&[
        "replay",
        "-c",
        config.to_str().unwrap(),
        data("flannel-vxlan/node-a.eth0.pcap").to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(&format!("{c}:4:8: plugin[0]: plugin flannel")),
        "{stderr}"
    );
}

/// Captures are merged by time, so all are open at once: a replay of more captures than the
/// soft limit of open files raises it (up to the hard limit), and past the hard limit says
/// so in one line instead of failing on "Too many open files".
#[test]
fn many_captures_raise_the_open_file_limit_or_say_it_is_too_low() {
    plugin("flannel");
    let dir = tempfile::tempdir().unwrap();
    let one = data("flannel-vxlan/node-a.peer-veth.pcap");
    let mut specs = Vec::new();
    for i in 0..600 {
        let p = dir.path().join(format!("c{i}.pcap"));
        std::fs::copy(&one, &p).unwrap();
        specs.push(format!("node-a/veth{i}={}", p.display()));
    }
    let list = dir.path().join("captures");
    std::fs::write(&list, specs.join("\n")).unwrap();
    let replay = |limit: &str| {
        std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "ulimit {limit} && xargs -a {} {} replay --plugin flannel --plugin-dir {} -f json",
                list.display(),
                env!("CARGO_BIN_EXE_cniscope"),
                plugin("flannel").parent().unwrap().display()
            ))
            .output()
            .unwrap()
    };
    // Soft limit 256, hard as it is: raised.
    let out = replay("-Sn 256");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!doc["edges"].as_array().unwrap().is_empty());
    // Hard limit 300: too low, said once.
    let out = replay("-n 300");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // xargs says 123 for the command's failure.
    assert_eq!(out.status.code(), Some(123), "{stderr}");
    assert!(
        stderr.contains("600 captures, but this process may open only 236 files"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
