//! End-to-end tests: one binary (links once), one module per area.
//! They need the plugins built first: `./x build` (the test command does it).

/// Paths, the built plugins, and running the `cniscope` binary.
mod support;

/// The recorded Flannel VXLAN lab capture through the built flannel.wasm: exact edges.
mod flannel_replay;

/// Flannel's udp backend from constructed frames through the built flannel.wasm.
mod flannel_udp;

/// The shared real captures (tcpdump, Zeek, DeepFlow test suites): decoded tunnels as tcpdump shows them.
mod real_captures;

/// Plugins that loop, hoard memory, trap or ask for files are contained; the others' output survives.
mod sandbox;

/// Tens of thousands of connections per window: each counted once, nothing lost.
mod scale;

/// The command line: inspect, config check, bad inputs.
mod cli;

/// `cniscope plugin new`: a new plugin crate that passes its test and loads.
mod plugin_new;

/// Cluster mode: agents, the aggregator and a real nats-server; faults and bad messages.
#[cfg(feature = "cluster")]
mod cluster;

/// The outputs users read (JSON, DOT, table, config problems), pinned in tests/golden.
mod golden;

/// The eBPF probes: loaded in the kernel and run on every packet of the real captures.
#[cfg(feature = "live")]
mod live;

/// The agent capturing live on Flannel labs (VXLAN, host-gw) built in network namespaces.
#[cfg(feature = "live")]
mod lab;

/// The agent capturing live on Calico labs (BGP, VXLAN, IPIP frames, IP reuse).
#[cfg(feature = "live")]
mod calico_lab;

/// Every service shape (ClusterIP, NodePort Cluster/Local, load balancer, hairpin, headless,
/// no endpoints, two services over the same pods) live on the Flannel VXLAN and Calico BGP labs.
#[cfg(feature = "live")]
mod services;

/// Plugins reloaded from their files mid-capture: garbage refused, a good build swapped in.
#[cfg(feature = "live")]
mod reload;

/// The agent capturing live on the OVN-shaped labs (Geneve with OVN options, OpenShift-SDN
/// VXLAN written from the lab's own traffic), and real Geneve captures through ovn.wasm.
#[cfg(feature = "live")]
mod ovn_lab;

/// The Cilium-shaped labs (identity VNIs on a real collect-metadata VXLAN device, native
/// routing, the socket LB's shape, masquerade) and a real 8472 capture through cilium.wasm.
#[cfg(feature = "live")]
mod cilium_lab;

/// The Kata peer-pods lab with the flannel and kata plugins composed.
#[cfg(feature = "live")]
mod kata_lab;

/// Where did my packet die (issue #18): labs broken the way real clusters break, their
/// path verdicts, and `cniscope diagnose` telling each in a sentence.
#[cfg(feature = "live")]
mod failures;

/// A stand-in for the Kubernetes API server: list/watch, bookmarks, 410 Gone, cut watches.
#[cfg(feature = "kubernetes")]
mod kube_api;

/// The inventory followed from the Kubernetes API: additions, deletions, reuse, expiry.
#[cfg(feature = "kubernetes")]
mod kubernetes;

/// deploy/kubernetes: the manifests agree with each other, RBAC covers what is watched, the
/// ConfigMap's TOML passes config check.
mod deploy;

/// The config re-read while running: refused whole when anything is wrong, applied between
/// windows when right.
mod config_reload;

/// Headless Chromium over its DevTools protocol, for the map's tests.
#[cfg(feature = "server")]
mod browser;

/// `[server]` on the live Flannel lab: API, stream, metrics, observe, the map in Chromium.
#[cfg(all(feature = "live", feature = "server"))]
mod server;

/// The server in this process: 200 stream clients, one leaving mid-stream, the token, the
/// map at 500 pods.
#[cfg(feature = "server")]
mod serve;

/// The fuzz targets' code on their seeds and on every input the fuzzers found.
mod fuzzed;
