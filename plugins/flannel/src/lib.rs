//! The Flannel plugin: names the real pods behind flannel's VXLAN, host-gw and udp backends,
//! recovers clients hidden behind node gateways, and counts each connection once.
//! The rules are in `rules.rs`; what flannel tells about nodes is in `cluster.rs`.

pub mod cluster;
pub mod rules;

use cluster::Cluster;
use cniscope_sdk::prelude::*;
use rules::Backend;

pub struct Flannel {
    cluster: Cluster,
    backend: Backend,
    network: Option<Cidr>,
    stitcher: Stitcher,
}

impl Default for Flannel {
    fn default() -> Self {
        Flannel {
            cluster: Cluster::default(),
            backend: Backend {
                vni: 1,
                vxlan_port: 8472,
                udp_port: 8285,
            },
            network: None,
            stitcher: Stitcher::default(),
        }
    }
}

impl Plugin for Flannel {
    fn describe() -> Description {
        Stitcher::describe_options(
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
                .option("network", OptionType::String, "\"\"", "the flannel Network CIDR (net-conf.json), e.g. 10.244.0.0/16; addresses outside it and all leases are external"),
        )
        .build()
    }

    fn configure(&mut self, o: &Options) -> Result<(), PluginError> {
        o.deny_unknown(
            &["vni", "port", "udp_port", "network"]
                .iter()
                .chain(&Stitcher::OPTIONS)
                .copied()
                .collect::<Vec<_>>(),
        )?;
        self.backend.vni = o.integer_in("vni", 1u32)?;
        self.backend.vxlan_port = o.integer_in("port", 8472u16)?;
        self.backend.udp_port = o.integer_in("udp_port", 8285u16)?;
        self.network = o.cidr("network")?;
        self.stitcher.configure(o)?;
        Ok(())
    }

    fn decoding(&self) -> Decoding {
        DecodingBuilder::new()
            .vxlan_port(self.backend.vxlan_port)
            .udp_encap_port(self.backend.udp_port)
            .build()
    }

    fn on_inventory(&mut self, inv: Inventory) -> Result<(), PluginError> {
        let (cluster, warnings) = Cluster::new(inv, self.network);
        self.stitcher.learn(cluster.nat_sources(), &cluster.index);
        self.cluster = cluster;
        // Partial knowledge still names most things: report, keep what was read.
        warnings_to_result(&warnings)
    }

    fn process(&mut self, batch: &ObservationBatch, out: &mut Flows) -> Result<(), PluginError> {
        self.stitcher.add_batch_with(batch, |conn| {
            rules::flow(&self.cluster, &self.backend, &conn, out)
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
            .drain_with(|conn| rules::flow(&self.cluster, &self.backend, &conn, out));
        Ok(())
    }
}

cniscope_sdk::export_plugin!(Flannel);

#[cfg(test)]
mod tests;
