//! The Calico plugin: names the real pods behind Calico's BGP routing, IPIP and VXLAN modes,
//! by address and by the pod's `cali` veth (which survives IP reuse), recovers clients hidden
//! behind tunnel addresses and natOutgoing, and counts each connection once.
//! The rules are in `rules.rs`; what Calico tells about nodes and IPAM is in `cluster.rs`.

pub mod cluster;
pub mod iface;
pub mod rules;

use cluster::{Cluster, Ipam};
use cniscope_sdk::prelude::*;
use rules::Encap;

pub struct Calico {
    cluster: Cluster,
    ipam: Ipam,
    encap: Encap,
    stitcher: Stitcher,
}

impl Default for Calico {
    fn default() -> Self {
        Calico {
            cluster: Cluster::default(),
            ipam: Ipam {
                block_size: 26,
                ..Ipam::default()
            },
            encap: Encap {
                vxlan_vni: 4096,
                vxlan_port: 4789,
            },
            stitcher: Stitcher::default(),
        }
    }
}

impl Plugin for Calico {
    fn describe() -> Description {
        Stitcher::describe_options(
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
                .option("vxlan_port", OptionType::Integer, "4789", "VXLAN UDP port (FELIX_VXLANPORT); the decoders decode it as VXLAN"),
        )
        .build()
    }

    fn configure(&mut self, o: &Options) -> Result<(), PluginError> {
        o.deny_unknown(
            &["pools", "block_size", "blocks", "vxlan_vni", "vxlan_port"]
                .iter()
                .chain(&Stitcher::OPTIONS)
                .copied()
                .collect::<Vec<_>>(),
        )?;
        self.ipam.pools = o.cidr_list("pools")?.into_iter().map(|(c, _)| c).collect();
        let size = o.integer_in("block_size", 26u8)?;
        if !(1..=32).contains(&size) {
            return Err(error(
                "bad-option",
                "block_size",
                format!("{size}: not 1..=32"),
            ));
        }
        self.ipam.block_size = size;
        self.ipam.blocks = o.cidr_list("blocks")?;
        if let Some((cidr, _)) = self.ipam.blocks.iter().find(|(_, node)| node.is_empty()) {
            return Err(error(
                "bad-option",
                "blocks",
                format!("{cidr}: no node (CIDR=node)"),
            ));
        }
        self.encap.vxlan_vni = o.integer_in("vxlan_vni", 4096u32)?;
        self.encap.vxlan_port = o.integer_in("vxlan_port", 4789u16)?;
        self.stitcher.configure(o)?;
        Ok(())
    }

    fn decoding(&self) -> Decoding {
        DecodingBuilder::new()
            .vxlan_port(self.encap.vxlan_port)
            .build()
    }

    fn on_inventory(&mut self, mut inv: Inventory) -> Result<(), PluginError> {
        let mut warnings = Vec::new();
        let ipam = self
            .ipam
            .with_objects(&std::mem::take(&mut inv.objects), &mut warnings);
        let (cluster, more) = Cluster::new(inv, &ipam);
        warnings.extend(more);
        self.stitcher.learn(cluster.nat_sources(), &cluster.index);
        self.cluster = cluster;
        // Partial knowledge still names most things: report, keep what was read.
        warnings_to_result(&warnings)
    }

    fn process(&mut self, batch: &ObservationBatch, out: &mut Flows) -> Result<(), PluginError> {
        self.stitcher.add_batch_with(batch, |conn| {
            rules::flow(&self.cluster, &self.encap, &conn, out)
        });
        Ok(())
    }

    fn counters(&self) -> Vec<(String, u64)> {
        self.stitcher.counters()
    }

    fn snapshot(&self) -> Vec<u8> {
        self.stitcher.snapshot()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PluginError> {
        self.stitcher.restore(state)
    }

    fn flush(&mut self, _now_ns: u64, out: &mut Flows) -> Result<(), PluginError> {
        self.stitcher
            .drain_with(|conn| rules::flow(&self.cluster, &self.encap, &conn, out));
        Ok(())
    }
}

cniscope_sdk::export_plugin!(Calico);

#[cfg(test)]
mod tests;
