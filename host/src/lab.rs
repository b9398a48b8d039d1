//! `cniscope lab` and `cniscope demo`: the lab clusters of `tests/lab/` (network namespaces with
//! real bridges, VXLAN, routes and kube-proxy's iptables rules), driven from the binary. The
//! scripts are compiled in and written to a private folder when used, so the binary needs no
//! checkout beside it; the plugins it loads come from `--plugins`.

use std::path::{Path, PathBuf};
use std::process::Command;
use thiserror::Error;

/// The lab scripts, as `tests/lab/` has them.
const SCRIPTS: [(&str, &str); 8] = [
    ("common.sh", include_str!("../../tests/lab/common.sh")),
    ("flannel.sh", include_str!("../../tests/lab/flannel.sh")),
    ("calico.sh", include_str!("../../tests/lab/calico.sh")),
    ("ovn.sh", include_str!("../../tests/lab/ovn.sh")),
    ("cilium.sh", include_str!("../../tests/lab/cilium.sh")),
    ("echo.py", include_str!("../../tests/lab/echo.py")),
    ("inventory.py", include_str!("../../tests/lab/inventory.py")),
    ("inject.py", include_str!("../../tests/lab/inject.py")),
];

/// Every lab scenario: (name, script, mode, what it shows).
pub const SCENARIOS: [(&str, &str, &str, &str); 15] = [
    (
        "flannel-vxlan",
        "flannel.sh",
        "vxlan",
        "Flannel, VXLAN (flannel.1, VNI 1, UDP 8472)",
    ),
    (
        "flannel-host-gw",
        "flannel.sh",
        "host-gw",
        "Flannel, host-gw (routes via node IPs)",
    ),
    (
        "calico-bgp",
        "calico.sh",
        "bgp",
        "Calico without encapsulation (cali veths, /32 routes)",
    ),
    (
        "calico-vxlan",
        "calico.sh",
        "vxlan",
        "Calico, vxlan.calico (VNI 4096, UDP 4789)",
    ),
    (
        "calico-ipip",
        "calico.sh",
        "ipip",
        "Calico, IPIP-annotated (routed: no ipip module here)",
    ),
    (
        "ovn",
        "ovn.sh",
        "ovn",
        "OVN-Kubernetes shape: Geneve with OVN's option, port keys",
    ),
    (
        "ovn-ip",
        "ovn.sh",
        "ovn-ip",
        "the same without the southbound tables",
    ),
    (
        "openshift-sdn",
        "ovn.sh",
        "openshift-sdn",
        "OpenShift-SDN: VXLAN 4789, VNI = NETID",
    ),
    (
        "kata-peer-pods",
        "flannel.sh",
        "kata",
        "Kata peer-pods on Flannel VXLAN: a pod VM behind VXLAN 4789 (VNI 555005); flannel + kata",
    ),
    (
        "cilium-vxlan",
        "cilium.sh",
        "vxlan",
        "Cilium, cilium_vxlan (UDP 8472, VNI = the sender's identity), socket LB",
    ),
    (
        "cilium-native",
        "cilium.sh",
        "native",
        "Cilium, native routing (pod addresses on the wire), socket LB",
    ),
    (
        "fault-netfilter-drop",
        "flannel.sh",
        "fault-drop",
        "Flannel VXLAN with an iptables DROP in node b's FORWARD: `cniscope diagnose` finds it",
    ),
    (
        "fault-no-route",
        "flannel.sh",
        "fault-no-route",
        "Flannel VXLAN with node a's route to node b's pods removed",
    ),
    (
        "fault-mtu",
        "flannel.sh",
        "fault-mtu",
        "Flannel VXLAN over an underlay with a smaller MTU: large transfers vanish",
    ),
    (
        "fault-kata-mac",
        "flannel.sh",
        "fault-kata-mac",
        "Kata peer-pods with seed 003's MAC mismatch: the pod VM drops the node's pings (OTHERHOST)",
    ),
];

#[derive(Debug, Error)]
pub enum LabError {
    #[error("unknown lab scenario {0:?}; one of: {1}")]
    UnknownScenario(String, String),
    #[error(
        "the lab builds network namespaces and the agent loads eBPF probes: run as root (sudo)"
    )]
    NotRoot,
    #[error("the lab needs {0} (`./x setup` installs what is missing)")]
    MissingTool(String),
    #[error("kernel {0}: the probes attach with TCX links, which need Linux 6.6 or newer")]
    OldKernel(String),
    #[error("writing the lab scripts to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A lab of this id is running: building over it would tear it down on failure.
    #[error(
        "lab {0} is already up (network namespaces {0}-*): pick another --id, or `cniscope lab down --id {0}` first"
    )]
    InUse(String),
    #[error("lab script `{script} {args}` failed ({status}): {stderr}")]
    Script {
        script: String,
        args: String,
        status: String,
        stderr: String,
    },
}

/// Whether network namespaces of lab `id` exist (`ip netns` keeps them in /run/netns).
pub fn lab_is_up(id: &str) -> bool {
    let prefix = format!("{id}-");
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        })
        .unwrap_or(false)
}

/// A scenario's script and mode.
pub fn scenario(name: &str) -> Result<(&'static str, &'static str), LabError> {
    SCENARIOS
        .iter()
        .find(|s| s.0 == name)
        .map(|s| (s.1, s.2))
        .ok_or_else(|| {
            let names: Vec<&str> = SCENARIOS.iter().map(|s| s.0).collect();
            LabError::UnknownScenario(name.to_string(), names.join(", "))
        })
}

/// What the lab needs from this machine, checked up front so the answer is one clear message.
pub fn check_machine() -> Result<(), LabError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LabError::NotRoot);
    }
    for tool in [
        "ip",
        "bridge",
        "iptables",
        "iptables-restore",
        "python3",
        "ping",
    ] {
        let found = std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()));
        if !found {
            return Err(LabError::MissingTool(tool.to_string()));
        }
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if (major, minor) < (6, 6) {
        return Err(LabError::OldKernel(release.trim().to_string()));
    }
    Ok(())
}

/// The lab scripts, written out once per process into a private folder.
pub struct Scripts {
    dir: tempfile::TempDir,
    /// Where the agent configs the lab writes load plugins from (only `up` writes one).
    plugins: Option<PathBuf>,
}

impl Scripts {
    /// Writes the scripts; agent configs the lab writes will load plugins from `plugins`.
    pub fn write(plugins: Option<&Path>) -> Result<Scripts, LabError> {
        let dir = tempfile::Builder::new()
            .prefix("cniscope-lab-")
            .tempdir()
            .map_err(|source| LabError::Write {
                path: std::env::temp_dir(),
                source,
            })?;
        for (name, text) in SCRIPTS {
            let path = dir.path().join(name);
            std::fs::write(&path, text).map_err(|source| LabError::Write { path, source })?;
        }
        let plugins = plugins.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
        Ok(Scripts { dir, plugins })
    }

    /// Runs `script args...`, failing with its stderr.
    pub fn run(&self, script: &str, args: &[&str]) -> Result<String, LabError> {
        let mut cmd = Command::new("bash");
        cmd.arg(self.dir.path().join(script)).args(args);
        if let Some(p) = &self.plugins {
            cmd.env("CNISCOPE_PLUGINS_DIR", p);
        }
        let out = cmd.output().map_err(|e| LabError::Script {
            script: script.into(),
            args: args.join(" "),
            status: "not started".into(),
            stderr: e.to_string(),
        })?;
        if !out.status.success() {
            return Err(LabError::Script {
                script: script.into(),
                args: args.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Builds `scenario` as lab `id`, writing its inventory and agent config into `dir`.
    pub fn up(&self, scenario_name: &str, id: &str, dir: &Path) -> Result<(), LabError> {
        let (script, mode) = scenario(scenario_name)?;
        if lab_is_up(id) {
            return Err(LabError::InUse(id.to_string()));
        }
        self.run(script, &["up", id, &dir.to_string_lossy(), mode])?;
        Ok(())
    }

    /// The scenario's traffic, then the service shapes where the lab has them.
    pub fn traffic(&self, scenario_name: &str, id: &str) -> Result<(), LabError> {
        let (script, mode) = scenario(scenario_name)?;
        self.run(script, &["traffic", id])?;
        // kube-proxy's service shapes (common.sh); OVN has its own, Cilium replaces kube-proxy;
        // a broken lab runs its fault's traffic only.
        if matches!(script, "flannel.sh" | "calico.sh") && !mode.starts_with("fault-") {
            self.run(script, &["services", id])?;
        }
        Ok(())
    }

    /// Removes every namespace of lab `id` (whichever scenario built it).
    pub fn down(&self, id: &str) -> Result<(), LabError> {
        self.run("ovn.sh", &["down", id]).map(|_| ())
    }
}
