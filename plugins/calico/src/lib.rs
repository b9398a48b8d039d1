//! The Calico plugin: names the real pods behind Calico's BGP routing, IPIP and VXLAN modes,
//! by address and by the pod's `cali` veth (which survives IP reuse), recovers clients hidden
//! behind tunnel addresses and natOutgoing, and counts each connection once.
//! The rules are in `rules.rs`; what Calico tells about nodes and IPAM is in `cluster.rs`;
//! the SDK's [`Cni`] scaffold does the stitching.

pub mod cluster;
pub mod iface;
pub mod rules;

use cluster::{Cluster, Ipam};
use cniscope_sdk::prelude::*;
use rules::Encap;

/// What the plugin knows: the cluster and its IPAM as Calico sees them, and its options.
#[derive(Default)]
pub struct CalicoRules {
    cluster: Cluster,
    ipam: Ipam,
    encap: Encap,
}

/// The plugin.
pub type Calico = Cni<CalicoRules>;

impl CniRules for CalicoRules {
    fn describe() -> DescriptionBuilder {
        DescriptionBuilder::new("calico", env!("CARGO_PKG_VERSION"))
            .cni("calico")
            .capture("cali*", IfaceKind::PodVeth)
            .capture("tunl0", IfaceKind::Tunnel)
            .capture("vxlan.calico", IfaceKind::Tunnel)
            .capture("eth*", IfaceKind::Uplink)
            .capture("ens*", IfaceKind::Uplink)
            // Calico's IPAM: pools, and blocks affine to nodes.
            .object("crd.projectcalico.org/v1", "IPPool")
            .object("crd.projectcalico.org/v1", "IPAMBlock")
            .option("pools", OptionType::List, "[]", "IPPool CIDRs, e.g. [\"192.168.0.0/16\"], beside the IPPool objects of the inventory; addresses outside them, nodes and services are external")
            .option("block_size", OptionType::Integer, "26", "IPv4 IPAM block size (IPPool blockSize), for blocks inferred from pod IPs")
            .option("blocks", OptionType::List, "[]", "block affinities, [\"CIDR=node\", ...] (calicoctl ipam show --show-blocks), beside the IPAMBlock objects of the inventory; inferred from pod IPs otherwise")
            .option("vxlan_vni", OptionType::Integer, "4096", "VXLAN VNI (FELIX_VXLANVNI)")
            .option("vxlan_port", OptionType::Integer, "4789", "VXLAN UDP port (FELIX_VXLANPORT); the decoders decode it as VXLAN")
    }

    fn configure(&mut self, o: &Options) -> Result<(), PluginError> {
        self.ipam.pools = o.cidr_list("pools")?.into_iter().map(|(c, _)| c).collect();
        let size: u8 = o.int("block_size")?;
        if !(1..=32).contains(&size) {
            return Err(bad_option("block_size", format!("{size}: not 1..=32")));
        }
        self.ipam.block_size = size;
        self.ipam.blocks = o.cidr_list("blocks")?;
        if let Some((cidr, _)) = self.ipam.blocks.iter().find(|(_, node)| node.is_empty()) {
            return Err(bad_option("blocks", format!("{cidr}: no node (CIDR=node)")));
        }
        self.encap.vxlan_vni = o.int("vxlan_vni")?;
        self.encap.vxlan_port = o.int("vxlan_port")?;
        Ok(())
    }

    fn decoding(&self) -> Decoding {
        DecodingBuilder::new()
            .vxlan_port(self.encap.vxlan_port)
            .build()
    }

    fn learn(&mut self, mut inv: Inventory, stitcher: &mut Stitcher) -> Vec<String> {
        let mut warnings = Vec::new();
        let ipam = self
            .ipam
            .with_objects(&std::mem::take(&mut inv.objects), &mut warnings);
        let (cluster, more) = Cluster::new(inv, &ipam);
        warnings.extend(more);
        stitcher.learn(cluster.nat_sources(), &cluster.index);
        self.cluster = cluster;
        warnings
    }

    fn flow(&self, conn: &Connection, out: &mut Flows) {
        rules::flow(&self.cluster, &self.encap, conn, out);
    }
}

cniscope_sdk::export_plugin!(Calico);

#[cfg(test)]
mod tests;
