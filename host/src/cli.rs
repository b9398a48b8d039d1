//! The commands and their arguments. Each command's work is in its own module; what is
//! shared between modes (loading, the pipeline, health) is in the library (`cniscope::modes`).

#[cfg(feature = "cluster")]
mod cluster;
mod config_check;
mod diagnose;
#[cfg(feature = "lab")]
mod lab;
#[cfg(feature = "live")]
mod live;
#[cfg(feature = "server")]
mod observe;
mod output;
mod plugin;
mod plugin_new;
mod plugin_test;
mod replay;
#[cfg(any(feature = "live", feature = "cluster"))]
mod signals;
mod synth;

use clap::{Parser, Subcommand};
use cniscope::config::{ConfigError, EXIT_CONFIG};
use cniscope::sinks::Format;
use cniscope::sources::replay::CaptureSpec;
use std::path::PathBuf;

/// Where `./x build` puts the plugins; the default of every `--plugins`/`--plugin-dir`.
const DEFAULT_PLUGIN_DIR: &str = "dist/plugins";

#[derive(Parser)]
#[command(
    name = "cniscope",
    version,
    about = "Who is really talking to whom, on any Kubernetes cluster network"
)]
pub struct Cli {
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
    #[cfg(feature = "live")]
    Run {
        #[arg(long, short = 'c')]
        config: PathBuf,
        /// kubectl JSON dumps, besides the config's `[inventory] files`.
        #[arg(long = "inventory", short = 'i')]
        inventories: Vec<PathBuf>,
        #[arg(long, short = 'f')]
        format: Option<Format>,
    },
    /// Cluster mode: capture live with the eBPF probes (root) and publish each interval's
    /// observations to NATS JetStream (`[nats]`), for `cniscope aggregate`. Stops on
    /// SIGINT/SIGTERM or after `agent.duration_secs`.
    #[cfg(all(feature = "live", feature = "cluster"))]
    Agent {
        #[arg(long, short = 'c')]
        config: PathBuf,
    },
    /// Cluster mode: every node's observations from NATS JetStream, assembled into windows by
    /// event time, through the plugins; writes `aggregate.output_file` after every window and
    /// prints the topology at exit (SIGINT/SIGTERM).
    #[cfg(feature = "cluster")]
    Aggregate {
        #[arg(long, short = 'c')]
        config: PathBuf,
        /// kubectl JSON dumps, besides the config's `[inventory] files`.
        #[arg(long = "inventory", short = 'i')]
        inventories: Vec<PathBuf>,
        #[arg(long, short = 'f')]
        format: Option<Format>,
    },
    /// Build a lab cluster in network namespaces, capture it live with the plugins in
    /// --plugins, print the topology and tear the lab down (root).
    #[cfg(all(feature = "live", feature = "lab"))]
    Demo {
        /// The lab scenario (`cniscope lab list`).
        #[arg(default_value = "flannel-vxlan")]
        scenario: String,
        #[arg(long, default_value = DEFAULT_PLUGIN_DIR)]
        plugins: PathBuf,
        #[arg(long, short = 'f')]
        format: Option<Format>,
    },
    /// Follow the topology of a running `cniscope run` or `aggregate` (`[server] listen`):
    /// one line per edge that changed in a window.
    #[cfg(feature = "server")]
    Observe(observe::ObserveArgs),
    /// Where did my packets die: the edges whose connections did not get through, one
    /// sentence each (from a topology document or a server).
    Diagnose(diagnose::DiagnoseArgs),
    /// Lab clusters in network namespaces (root): up, traffic, down, list.
    #[cfg(feature = "lab")]
    #[command(subcommand)]
    Lab(LabCommand),
    /// Inspect and test plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Check configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Synthetic captures of a CNI's shape with their exact expected topology, and the score
    /// of a replay against it.
    #[command(subcommand)]
    Synth(synth::SynthCommand),
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// Capture files (pcap or pcapng), each as `[NODE[/IFACE]=]PATH`; added to the
    /// config's `[[replay.capture]]`.
    captures: Vec<CaptureSpec>,
    /// kubectl JSON dumps (`kubectl get nodes,pods,services,endpointslices -A -o json`),
    /// besides the config's `[inventory] files`.
    #[arg(long = "inventory", short = 'i')]
    inventories: Vec<PathBuf>,
    /// cniscope.toml: plugins, their options and limits.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Without a config: plugins to load from --plugin-dir, by name, with default options.
    #[arg(long = "plugin", short = 'p')]
    plugins: Vec<String>,
    /// Without a config: where plugins are.
    #[arg(long, default_value = DEFAULT_PLUGIN_DIR)]
    plugin_dir: PathBuf,
    #[arg(long, short = 'f')]
    format: Option<Format>,
    /// Write the topology here instead of stdout (replaced whole, never half written).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Overrides the window length (seconds of capture time).
    #[arg(long)]
    window_secs: Option<f64>,
    /// Exit 0 even when the output is known incomplete (observations lost by a plugin, a
    /// plugin disabled, a capture not read to its end); it is printed either way.
    #[arg(long)]
    allow_partial: bool,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// List the plugins in a folder.
    List {
        #[arg(long, default_value = DEFAULT_PLUGIN_DIR)]
        dir: PathBuf,
    },
    /// Describe one plugin: name, version, CNI kinds, capture points, options, what it needs
    /// decoded, imports, sha256.
    Inspect { file: PathBuf },
    /// Run a built plugin on recorded captures and compare its edges with an expected
    /// topology (`--bless` writes the expected file instead).
    Test(PluginTestArgs),
    /// Write a new CNI plugin crate: rules to fill in on the SDK's scaffold, a passing test,
    /// and how to build, inspect and install it.
    New {
        /// The plugin's name (lowercase, digits, dashes): the crate is cniscope-plugin-NAME.
        name: String,
        /// Where to write it (default: ./NAME); must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The SDK to build against (a cniscope checkout's sdk/); default: the one this
        /// binary was built from.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Put plugins into a plugins folder safely: each is loaded and checked (a component of
    /// this contract, allowed imports) before it is moved in whole, so a running cniscope
    /// that watches the folder never sees a half-written or unusable file. SOURCE is a .wasm
    /// file, a folder (every .wasm in it), or `-` for standard input with --name (for
    /// `kubectl exec -i ... < flannel.wasm` into an image without a shell).
    Install {
        /// The plugins folder to install into.
        #[arg(long)]
        dir: PathBuf,
        /// The file name to install standard input as (`flannel.wasm`).
        #[arg(long)]
        name: Option<String>,
        /// Leave a plugin that is already in the folder as it is (an image's defaults
        /// installed under an operator's newer drop-ins).
        #[arg(long)]
        keep_existing: bool,
        #[arg(required = true)]
        sources: Vec<PathBuf>,
    },
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

#[cfg(feature = "lab")]
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
        /// The plugins the lab's config names (its `[plugins] dir`).
        #[arg(long, default_value = DEFAULT_PLUGIN_DIR)]
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

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Replay(args) => replay::run(args),
        #[cfg(feature = "live")]
        Command::Run {
            config,
            inventories,
            format,
        } => live::run(&config, &inventories, format),
        #[cfg(all(feature = "live", feature = "cluster"))]
        Command::Agent { config } => cluster::agent(&config),
        #[cfg(feature = "cluster")]
        Command::Aggregate {
            config,
            inventories,
            format,
        } => cluster::aggregate(&config, &inventories, format),
        #[cfg(all(feature = "live", feature = "lab"))]
        Command::Demo {
            scenario,
            plugins,
            format,
        } => live::demo(&scenario, &plugins, format),
        #[cfg(feature = "server")]
        Command::Observe(args) => observe::run(args),
        Command::Diagnose(args) => diagnose::run(args),
        #[cfg(feature = "lab")]
        Command::Lab(cmd) => lab::run(cmd),
        Command::Plugin(PluginCommand::List { dir }) => plugin::list(&dir),
        Command::Plugin(PluginCommand::Inspect { file }) => plugin::inspect(&file),
        Command::Plugin(PluginCommand::Test(args)) => plugin_test::run(args),
        Command::Plugin(PluginCommand::New { name, dir, sdk }) => {
            plugin_new::run(&name, dir.as_deref(), sdk.as_deref())
        }
        Command::Plugin(PluginCommand::Install {
            dir,
            name,
            keep_existing,
            sources,
        }) => plugin::install(&dir, name.as_deref(), keep_existing, &sources),
        Command::Config(ConfigCommand::Check { file }) => config_check::run(&file),
        Command::Synth(cmd) => synth::run(cmd),
    }
}

/// 78 (EX_CONFIG) for a bad configuration, 1 for anything else.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<ConfigError>().is_some() {
        EXIT_CONFIG
    } else if e.downcast_ref::<replay::Incomplete>().is_some() {
        replay::EXIT_INCOMPLETE
    } else {
        1
    }
}
