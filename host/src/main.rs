//! The `cniscope` command line: the edge where errors become messages and exit codes.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use cniscope::agent::Agent;
use cniscope::config::{self, EXIT_CONFIG, PluginToLoad, Settings};
use cniscope::inventory::{Inventory, kubectl};
use cniscope::pipeline::Pipeline;
use cniscope::plugins::engine::sha256_file;
use cniscope::plugins::policy::Grants;
use cniscope::plugins::{PluginEngine, PluginInstance, PluginSettings};
use cniscope::sinks::{Format, render};
use cniscope::sources::replay::{CaptureSpec, Replay};
use cniscope::topology::Health;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Parser)]
#[command(
    name = "cniscope",
    version,
    about = "Who is really talking to whom, on any Kubernetes cluster network"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay capture files through the plugins and print the topology.
    Replay(ReplayArgs),
    /// Capture live with the eBPF probes (root) and print the topology at exit; with
    /// `agent.output_file`, also write it every interval. Stops on SIGINT/SIGTERM or after
    /// `agent.duration_secs`.
    Run {
        #[arg(long, short = 'c')]
        config: PathBuf,
        /// kubectl JSON dumps, besides the config's `replay.inventory`.
        #[arg(long = "inventory", short = 'i')]
        inventories: Vec<PathBuf>,
        #[arg(long, short = 'f')]
        format: Option<Format>,
    },
    /// Build a lab cluster in network namespaces, capture it live with the plugins in
    /// --plugins, print the topology and tear the lab down (root).
    Demo {
        /// The lab scenario (`cniscope lab list`).
        #[arg(default_value = "flannel-vxlan")]
        scenario: String,
        #[arg(long, default_value = "dist/plugins")]
        plugins: PathBuf,
        #[arg(long, short = 'f')]
        format: Option<Format>,
    },
    /// Lab clusters in network namespaces (root): up, traffic, down, list.
    #[command(subcommand)]
    Lab(LabCommand),
    /// Inspect plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Check configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// Capture files (pcap or pcapng), each as `[NODE[/IFACE]=]PATH`; added to the
    /// config's `[[replay.capture]]`.
    captures: Vec<CaptureSpec>,
    /// kubectl JSON dumps (`kubectl get nodes,pods,services,endpointslices -A -o json`).
    #[arg(long = "inventory", short = 'i')]
    inventories: Vec<PathBuf>,
    /// cniscope.toml: plugins, their options and limits.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Without a config: plugins to load from --plugin-dir, by name, with default options.
    #[arg(long = "plugin", short = 'p')]
    plugins: Vec<String>,
    /// Without a config: where plugins are.
    #[arg(long, default_value = "dist/plugins")]
    plugin_dir: PathBuf,
    #[arg(long, short = 'f')]
    format: Option<Format>,
    /// Write the topology here instead of stdout.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Overrides the window length (seconds of capture time).
    #[arg(long)]
    window_secs: Option<f64>,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// List the plugins in a folder.
    List {
        #[arg(long, default_value = "dist/plugins")]
        dir: PathBuf,
    },
    /// Describe one plugin: name, version, CNI kinds, capture points, options, imports, sha256.
    Inspect { file: PathBuf },
    /// Run a built plugin on recorded captures and compare its edges with an expected
    /// topology (`--bless` writes the expected file instead).
    Test(PluginTestArgs),
}

#[derive(clap::Args)]
struct PluginTestArgs {
    /// The plugin's .wasm file.
    file: PathBuf,
    /// Recorded captures, each as `[NODE[/IFACE]=]PATH`.
    #[arg(long = "capture", required = true)]
    captures: Vec<CaptureSpec>,
    #[arg(long = "inventory", short = 'i')]
    inventories: Vec<PathBuf>,
    /// The plugin's options as JSON.
    #[arg(long, default_value = "{}")]
    options: String,
    /// Expected topology JSON (as `replay --format json` prints it); edges are compared.
    #[arg(long)]
    expect: PathBuf,
    /// Write the current output to --expect instead of comparing.
    #[arg(long)]
    bless: bool,
}

#[derive(Subcommand)]
enum LabCommand {
    /// The scenarios.
    List,
    /// Build a scenario as lab ID (namespaces ID-*); write DIR/inventory.json and
    /// DIR/cniscope.toml, an agent config for it (`cniscope run -c DIR/cniscope.toml`).
    Up {
        scenario: String,
        #[arg(long, default_value = "cslab")]
        id: String,
        #[arg(long, default_value = "cniscope-lab")]
        dir: PathBuf,
        #[arg(long, default_value = "dist/plugins")]
        plugins: PathBuf,
    },
    /// Send the scenario's known traffic (and its service shapes) in lab ID.
    Traffic {
        scenario: String,
        #[arg(long, default_value = "cslab")]
        id: String,
    },
    /// Remove every namespace of lab ID, also after a failed run.
    Down {
        #[arg(long, default_value = "cslab")]
        id: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a cniscope.toml; every problem is printed as file:line:column: key: message.
    Check { file: PathBuf },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CNISCOPE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay(args),
        Command::Run {
            config,
            inventories,
            format,
        } => run(&config, &inventories, format),
        Command::Demo {
            scenario,
            plugins,
            format,
        } => demo(&scenario, &plugins, format),
        Command::Lab(cmd) => lab(cmd),
        Command::Plugin(PluginCommand::List { dir }) => plugin_list(&dir),
        Command::Plugin(PluginCommand::Inspect { file }) => plugin_inspect(&file),
        Command::Plugin(PluginCommand::Test(args)) => plugin_test(args),
        Command::Config(ConfigCommand::Check { file }) => config_check(&file),
    };
    if let Err(e) = result {
        eprintln!("cniscope: {e:#}");
        let code = if e.downcast_ref::<config::ConfigError>().is_some() {
            EXIT_CONFIG
        } else {
            1
        };
        std::process::exit(code);
    }
}

fn load_settings(args: &ReplayArgs) -> Result<Settings> {
    let mut settings = match &args.config {
        Some(path) => config::load(path)?,
        None => {
            if args.plugins.is_empty() {
                bail!(
                    "no plugins: pass --plugin NAME (e.g. --plugin flannel) or --config cniscope.toml"
                );
            }
            Settings::for_plugins(
                args.plugins
                    .iter()
                    .map(|name| PluginToLoad {
                        path: args.plugin_dir.join(format!("{name}.wasm")),
                        sha256: None,
                        settings: PluginSettings::new(name),
                    })
                    .collect(),
                args.plugin_dir.clone(),
            )
        }
    };
    if let Some(w) = args.window_secs {
        if w.is_nan() || w <= 0.0 {
            bail!("--window-secs must be above 0");
        }
        settings.window_ns = (w * 1e9) as u64;
    }
    Ok(settings)
}

fn load_inventory(paths: &[PathBuf]) -> Result<Inventory> {
    let mut inv = Inventory::default();
    for p in paths {
        inv.merge(kubectl::load_file(p).context("loading the inventory")?);
    }
    Ok(inv)
}

fn replay(args: ReplayArgs) -> Result<()> {
    let settings = load_settings(&args)?;
    let captures: Vec<CaptureSpec> = settings
        .captures
        .iter()
        .chain(&args.captures)
        .cloned()
        .collect();
    if captures.is_empty() {
        bail!("nothing to replay: name capture files, or [[replay.capture]] entries in the config");
    }
    let inventories: Vec<PathBuf> = settings
        .inventories
        .iter()
        .chain(&args.inventories)
        .cloned()
        .collect();
    let doc = run_replay(&settings, &captures, &inventories)?;
    let format = args.format.or(settings.format).unwrap_or(Format::Table);
    let text = render(&doc, format);
    match &args.output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// Captures -> plugins -> topology document.
fn run_replay(
    settings: &Settings,
    captures: &[CaptureSpec],
    inventories: &[PathBuf],
) -> Result<cniscope::topology::TopologyDoc> {
    let inventory = load_inventory(inventories)?;
    let engine = PluginEngine::new(settings.cache_dir.clone())?;
    let mut pipeline = Pipeline::new(&engine, &settings.plugins, inventory)?;
    let mut ports = settings.ports.clone();
    let (vx, gn) = pipeline.wanted_ports();
    ports.vxlan.extend(vx);
    ports.geneve.extend(gn);
    let mut replay = Replay::open(captures, ports, settings.window_ns)?;
    replay.run(|points, obs, end| pipeline.window(points, &obs, end));
    let stats = &replay.stats;
    let mut health = Health::default();
    for (reason, n) in &stats.malformed {
        health
            .drops
            .insert(format!("malformed packet: {reason}"), *n);
    }
    if stats.unsupported_linktype > 0 {
        health
            .drops
            .insert("unsupported link type".into(), stats.unsupported_linktype);
    }
    health.errors.extend(stats.file_errors.iter().cloned());
    for e in &stats.file_errors {
        tracing::warn!("{e}");
    }
    Ok(pipeline.doc(health))
}

/// The comparable part of an edge: who, to whom, via what, and how much.
fn edge_lines(edges: &serde_json::Value) -> Vec<String> {
    let line = |e: &serde_json::Value| {
        format!(
            "{} -> {} via {} {}/{} packets {}",
            e["src"].as_str().unwrap_or("?"),
            e["dst"].as_str().unwrap_or("?"),
            e["service"].as_str().unwrap_or("-"),
            e["protocol"].as_str().unwrap_or("?"),
            e["port"],
            e["packets"]
        )
    };
    edges
        .as_array()
        .map(|a| a.iter().map(line).collect())
        .unwrap_or_default()
}

fn plugin_test(args: PluginTestArgs) -> Result<()> {
    let name = args
        .file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin")
        .to_string();
    let mut plugin = PluginSettings::new(&name);
    serde_json::from_str::<serde_json::Value>(&args.options).context("--options is not JSON")?;
    plugin.options_json = args.options.clone();
    let load = PluginToLoad {
        path: args.file.clone(),
        sha256: None,
        settings: plugin,
    };
    let settings = Settings::for_plugins(vec![load], PathBuf::new());
    let doc = run_replay(&settings, &args.captures, &args.inventories)?;
    let got = serde_json::to_value(&doc)?;
    if args.bless {
        std::fs::write(&args.expect, serde_json::to_string_pretty(&got)? + "\n")
            .with_context(|| format!("writing {}", args.expect.display()))?;
        println!(
            "blessed {} ({} edges)",
            args.expect.display(),
            doc.edges.len()
        );
        return Ok(());
    }
    let text = std::fs::read_to_string(&args.expect)
        .with_context(|| format!("reading {}", args.expect.display()))?;
    let want: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.expect.display()))?;
    let (got, want) = (edge_lines(&got["edges"]), edge_lines(&want["edges"]));
    let missing: Vec<&String> = want.iter().filter(|e| !got.contains(e)).collect();
    let extra: Vec<&String> = got.iter().filter(|e| !want.contains(e)).collect();
    if missing.is_empty() && extra.is_empty() {
        println!("ok: {} edges as expected", got.len());
        return Ok(());
    }
    for e in &missing {
        println!("- {e}");
    }
    for e in &extra {
        println!("+ {e}");
    }
    bail!(
        "{} edges missing, {} unexpected (- expected, + got)",
        missing.len(),
        extra.len()
    )
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM set `STOP`: the agent finishes its window, prints and exits cleanly.
fn stop_on_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_stop_signal as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_stop_signal as *const () as libc::sighandler_t,
        );
    }
}

fn run(config_path: &Path, extra_inventories: &[PathBuf], format: Option<Format>) -> Result<()> {
    let settings = config::load(config_path)?;
    let inventories: Vec<PathBuf> = settings
        .inventories
        .iter()
        .chain(extra_inventories)
        .cloned()
        .collect();
    let inventory = load_inventory(&inventories)?;
    stop_on_signals();
    let engine = PluginEngine::new(settings.cache_dir.clone())?;
    let mut agent = Agent::new(&engine, &settings, inventory)
        .context("starting the agent (it needs root, and a kernel with BTF and TCX)")?;
    let format = format.or(settings.format).unwrap_or(Format::Table);
    let output = settings.agent.output_file.clone();
    let doc = agent.run(&STOP, |doc| {
        if let Some(path) = &output {
            // Write then rename, so readers never see half a document.
            let tmp = path.with_extension("tmp");
            if let Err(e) = std::fs::write(&tmp, render(doc, Format::Json))
                .and_then(|_| std::fs::rename(&tmp, path))
            {
                tracing::warn!("writing {}: {e}", path.display());
            }
        }
    })?;
    print!("{}", render(&doc, format));
    Ok(())
}

fn lab(cmd: LabCommand) -> Result<()> {
    use cniscope::lab::{SCENARIOS, Scripts, check_machine};
    if let LabCommand::List = cmd {
        for (name, _, _, what) in SCENARIOS {
            println!("{name:16} {what}");
        }
        return Ok(());
    }
    check_machine()?;
    match cmd {
        LabCommand::List => unreachable!("answered above"),
        LabCommand::Up {
            scenario,
            id,
            dir,
            plugins,
        } => {
            let scripts = Scripts::write(&plugins)?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            if let Err(e) = scripts.up(&scenario, &id, &dir) {
                let _ = scripts.down(&id);
                return Err(e.into());
            }
            println!(
                "lab {id} ({scenario}) is up: namespaces {id}-*\n  capture: cniscope run -c {}\n  traffic: cniscope lab traffic {scenario} --id {id}\n  down:    cniscope lab down --id {id}",
                dir.join("cniscope.toml").display()
            );
        }
        LabCommand::Traffic { scenario, id } => {
            Scripts::write(Path::new("dist/plugins"))?.traffic(&scenario, &id)?
        }
        LabCommand::Down { id } => Scripts::write(Path::new("dist/plugins"))?.down(&id)?,
    }
    Ok(())
}

/// Removes the demo's lab however the demo ends.
struct LabGuard<'a> {
    scripts: &'a cniscope::lab::Scripts,
    id: String,
}

impl Drop for LabGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.scripts.down(&self.id) {
            eprintln!("tearing the lab down: {e}");
        }
    }
}

fn demo(scenario: &str, plugins: &Path, format: Option<Format>) -> Result<()> {
    use cniscope::lab::{Scripts, check_machine, scenario as find};
    find(scenario)?;
    check_machine()?;
    if !plugins.is_dir() {
        bail!(
            "no plugins in {} (build them with `./x build`, or pass --plugins DIR)",
            plugins.display()
        );
    }
    let scripts = Scripts::write(plugins)?;
    let work = tempfile::tempdir().context("a folder for the lab's inventory and config")?;
    let id = format!("csdemo{}", std::process::id());
    eprintln!("building the {scenario} lab in network namespaces {id}-* ...");
    let _guard = LabGuard {
        scripts: &scripts,
        id: id.clone(),
    };
    scripts.up(scenario, &id, work.path())?;
    let config_path = work.path().join("cniscope.toml");
    let settings = config::load(&config_path)?;
    let inventory = load_inventory(&settings.inventories)?;
    stop_on_signals();
    let engine = PluginEngine::new(settings.cache_dir.clone())?;
    let mut agent = Agent::new(&engine, &settings, inventory)
        .context("starting the agent (it needs a kernel with BTF and TCX)")?;
    let ready = AtomicBool::new(false);
    let failed = std::sync::Mutex::new(None);
    let doc = std::thread::scope(|s| {
        // The traffic waits for the agent's first publish (the probes are attached), then
        // stops it.
        s.spawn(|| {
            while !ready.load(Ordering::Relaxed) && !STOP.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            eprintln!("sending the lab's traffic and service shapes ...");
            if let Err(e) = scripts.traffic(scenario, &id) {
                *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
            }
            // One more interval, so the last packets are drained.
            std::thread::sleep(settings.agent.interval);
            STOP.store(true, Ordering::Relaxed);
        });
        agent.run(&STOP, |_| ready.store(true, Ordering::Relaxed))
    })?;
    if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e.into());
    }
    print!("{}", render(&doc, format.unwrap_or(Format::Table)));
    Ok(())
}

fn plugin_inspect(file: &Path) -> Result<()> {
    let engine = PluginEngine::new(config::default_cache_dir())?;
    // A refused plugin is still inspected: the refusal is what the operator needs to see.
    let loaded = match engine.load(file, None, &Grants::default()) {
        Ok(l) => l,
        Err(cniscope::plugins::PluginError::Refused { detail, .. }) => {
            println!(
                "file:      {}\nsha256:    {}\nREFUSED:   {detail}",
                file.display(),
                sha256_file(file)?
            );
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let imports = loaded.imports.clone();
    let sha = loaded.sha256.clone();
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin")
        .to_string();
    let p = PluginInstance::start(&engine, loaded, PluginSettings::new(&name))?;
    let d = &p.description;
    println!("file:      {}", file.display());
    println!("sha256:    {sha}");
    println!("name:      {}", d.name);
    println!("version:   {}", d.version);
    println!("cni kinds: {}", d.cni_kinds.join(", "));
    println!("capture:");
    for c in &d.capture {
        let dirs = [(c.ingress, "ingress"), (c.egress, "egress")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>();
        println!("  {:<16} {:?} ({})", c.pattern, c.kind, dirs.join("+"));
    }
    println!("options:");
    for o in &d.options {
        let default = if o.default.is_empty() {
            "required".to_string()
        } else {
            format!("default {}", o.default)
        };
        println!("  {:<16} {:?}, {default}: {}", o.name, o.type_, o.doc);
    }
    if !d.vxlan_ports.is_empty() || !d.geneve_ports.is_empty() {
        println!(
            "extra ports: vxlan {:?} geneve {:?}",
            d.vxlan_ports, d.geneve_ports
        );
    }
    println!("imports:");
    for i in imports {
        println!("  {i}");
    }
    Ok(())
}

fn plugin_list(dir: &Path) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading plugin folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    files.sort();
    let engine = PluginEngine::new(config::default_cache_dir())?;
    for f in files {
        let name = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("?")
            .to_string();
        let line = engine
            .load(&f, None, &Grants::default())
            .map_err(anyhow::Error::from)
            .and_then(|l| {
                Ok(PluginInstance::start(
                    &engine,
                    l,
                    PluginSettings::new(&name),
                )?)
            })
            .map(|p| {
                format!(
                    "{:<12} {:<8} cni: {}",
                    p.description.name,
                    p.description.version,
                    p.description.cni_kinds.join(",")
                )
            })
            .unwrap_or_else(|e| format!("{name:<12} unusable: {e:#}"));
        println!(
            "{:<28} {line}",
            f.file_name().and_then(|s| s.to_str()).unwrap_or("?")
        );
    }
    Ok(())
}

fn config_check(file: &Path) -> Result<()> {
    let s = config::load(file)?;
    println!(
        "{}: ok ({} plugins: {})",
        file.display(),
        s.plugins.len(),
        s.plugins
            .iter()
            .map(|p| p.settings.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
