//! The Flannel plugin: names the real pods behind flannel's VXLAN, host-gw and udp backends,
//! recovers clients hidden behind node gateways, and counts each connection once.
//! The rules are in `rules.rs`; what flannel tells about nodes is in `cluster.rs`; the SDK's
//! [`Cni`] scaffold does the stitching.

pub mod cluster;
pub mod rules;

use cluster::Cluster;
use cniscope_sdk::prelude::*;
use rules::Backend;

/// What the plugin knows: the cluster as flannel sees it, and its options.
#[derive(Default)]
pub struct FlannelRules {
    cluster: Cluster,
    backend: Backend,
    network: Option<Cidr>,
}

/// The plugin.
pub type Flannel = Cni<FlannelRules>;

impl CniRules for FlannelRules {
    fn describe() -> DescriptionBuilder {
        DescriptionBuilder::new("flannel", env!("CARGO_PKG_VERSION"))
            .cni("flannel")
            .capture("veth*", IfaceKind::PodVeth)
            .capture("cni0", IfaceKind::Bridge)
            .capture("flannel.1", IfaceKind::Tunnel)
            .capture("flannel0", IfaceKind::Tunnel)
            .capture("eth*", IfaceKind::Uplink)
            .capture("ens*", IfaceKind::Uplink)
            .option("vni", OptionType::Integer, "1", "VXLAN VNI (flannel's Backend.VNI)")
            .option("port", OptionType::Integer, "8472", "VXLAN UDP port (Backend.Port); the decoders decode it as VXLAN")
            .option("udp_port", OptionType::Integer, "8285", "UDP port of the obsolete udp backend; the decoders decode it")
            .option("network", OptionType::String, "\"\"", "the flannel Network CIDR (net-conf.json), e.g. 10.244.0.0/16; addresses outside it and all leases are external")
    }

    fn configure(&mut self, o: &Options) -> Result<(), PluginError> {
        let vni: u32 = o.int("vni")?;
        self.backend = Backend {
            vni,
            vxlan_port: o.int("port")?,
            udp_port: o.int("udp_port")?,
            vxlan_device: format!("flannel.{vni}"),
        };
        self.network = o.cidr("network")?;
        Ok(())
    }

    fn decoding(&self) -> Decoding {
        DecodingBuilder::new()
            .vxlan_port(self.backend.vxlan_port)
            .udp_encap_port(self.backend.udp_port)
            .build()
    }

    fn learn(&mut self, inv: Inventory, stitcher: &mut Stitcher) -> Vec<String> {
        let (cluster, warnings) = Cluster::new(inv, self.network);
        stitcher.learn(cluster.nat_sources(), &cluster.index);
        self.cluster = cluster;
        warnings
    }

    fn flow(&self, conn: &Connection, out: &mut Flows) {
        rules::flow(&self.cluster, &self.backend, conn, out);
    }
}

cniscope_sdk::export_plugin!(Flannel);

#[cfg(test)]
mod tests;
