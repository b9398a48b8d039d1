//! The Cilium plugin: names the real pods behind Cilium's VXLAN and Geneve tunnels (whose VNI
//! is the sender's security identity) and native routing, reads CiliumNode, CiliumEndpoint and
//! CiliumIdentity objects, recovers the service a socket-level load balancer hid (no packet
//! carries a ClusterIP under kube-proxy replacement) and clients behind BPF masquerade, and
//! counts each connection once.
//! The rules are in `rules.rs`; what Cilium tells about nodes and endpoints is in
//! `cluster.rs`; identities in `identity.rs`; the SDK's [`Cni`] scaffold does the stitching.

pub mod cluster;
pub mod identity;
pub mod rules;

use cluster::{Cluster, Settings};
use cniscope_sdk::prelude::*;
use rules::Datapath;

/// What the plugin knows: the cluster as Cilium sees it, and its options.
#[derive(Default)]
pub struct CiliumRules {
    cluster: Cluster,
    settings: Settings,
    datapath: Datapath,
}

/// The plugin.
pub type Cilium = Cni<CiliumRules>;

/// Cilium's own defaults (its `tunnel-port` is 8472 for VXLAN, 6081 for Geneve).
const VXLAN_PORT: u16 = 8472;
const GENEVE_PORT: u16 = 6081;

impl CniRules for CiliumRules {
    fn describe() -> DescriptionBuilder {
        DescriptionBuilder::new("cilium", env!("CARGO_PKG_VERSION"))
            .cni("cilium")
            // lxc + hash: a pod's host-side veth; lxc_health: the health endpoint's.
            .capture("lxc*", IfaceKind::PodVeth)
            .capture("cilium_host", IfaceKind::Other)
            .capture("cilium_vxlan", IfaceKind::Tunnel)
            .capture("cilium_geneve", IfaceKind::Tunnel)
            .capture("eth*", IfaceKind::Uplink)
            .capture("ens*", IfaceKind::Uplink)
            .capture("enp*", IfaceKind::Uplink)
            .object("cilium.io/v2", "CiliumNode")
            .object("cilium.io/v2", "CiliumEndpoint")
            .object("cilium.io/v2", "CiliumIdentity")
            .option("routing_mode", OptionType::String, "\"tunnel\"", "cilium-config routing-mode: \"tunnel\" (VXLAN or Geneve between nodes, the VNI is the sender's identity) or \"native\" (pod addresses on the wire)")
            .option("tunnel_protocol", OptionType::String, "\"vxlan\"", "cilium-config tunnel-protocol: \"vxlan\" or \"geneve\"")
            .option("tunnel_port", OptionType::Integer, "0", "cilium-config tunnel-port; 0: the protocol's default (VXLAN 8472, Geneve 6081). The decoders decode it")
            .option("cluster_cidrs", OptionType::List, "[]", "the cluster's pod CIDRs (cluster-pool-ipv4-cidr, ipv4-native-routing-cidr), e.g. [\"10.0.0.0/8\"]; addresses outside them that are no node, pod or service are external")
            .option("socket_lb", OptionType::Boolean, "true", "kube-proxy replacement's socket LB (bpf-lb-sock) is on: a connection straight to a backend that exactly one service lists is named through that service (cilium:socket-lb, confidence 0.8)")
    }

    fn configure(&mut self, o: &Options) -> Result<(), PluginError> {
        let protocol = o.string("tunnel_protocol", "vxlan")?;
        let (kind, default_port) = match protocol.as_str() {
            "vxlan" => (Tunnel::Vxlan, VXLAN_PORT),
            "geneve" => (Tunnel::Geneve, GENEVE_PORT),
            other => {
                return Err(bad_option(
                    "tunnel_protocol",
                    format!("{other:?}: \"vxlan\" or \"geneve\""),
                ));
            }
        };
        let port: u16 = o.int("tunnel_port")?;
        let port = if port == 0 { default_port } else { port };
        let tunnel = match o.string("routing_mode", "tunnel")?.as_str() {
            "tunnel" => Some((kind, port)),
            "native" => None,
            other => {
                return Err(bad_option(
                    "routing_mode",
                    format!("{other:?}: \"tunnel\" or \"native\""),
                ));
            }
        };
        self.datapath = Datapath {
            tunnel,
            socket_lb: o.boolean("socket_lb", true)?,
        };
        self.settings.cluster_cidrs = o
            .cidr_list("cluster_cidrs")?
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        Ok(())
    }

    fn decoding(&self) -> Decoding {
        match self.datapath.tunnel {
            Some((Tunnel::Geneve, port)) => DecodingBuilder::new().geneve_port(port).build(),
            Some((_, port)) => DecodingBuilder::new().vxlan_port(port).build(),
            None => DecodingBuilder::new().build(),
        }
    }

    fn learn(&mut self, inv: Inventory, stitcher: &mut Stitcher) -> Vec<String> {
        let (cluster, warnings) = Cluster::new(inv, self.settings.clone());
        stitcher.learn(cluster.nat_sources(), &cluster.index);
        self.cluster = cluster;
        warnings
    }

    fn flow(&self, conn: &Connection, out: &mut Flows) {
        rules::flow(&self.cluster, &self.datapath, conn, out);
    }
}

cniscope_sdk::export_plugin!(Cilium);

#[cfg(test)]
mod tests;
