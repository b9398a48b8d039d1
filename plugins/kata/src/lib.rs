//! The Kata peer-pods plugin (the cloud-api-adaptor's "remote hypervisor"): a peer pod's app
//! runs in a VM outside the worker node, reached through a VXLAN tunnel per pod from the
//! pod's network namespace on the worker (seed 003; docs/cni-rules.md, "Kata peer-pods").
//! Its flows compose with the cluster CNI's plugin: one edge per connection, which gains
//! `kata:peer-pod` and the VM's address (ARCHITECTURE.md, "Composition").

pub mod rules;

use cniscope_sdk::prelude::*;
use rules::Tunnels;

/// What the plugin knows: the inventory, and the peer-pod tunnels' port and VNIs.
#[derive(Default)]
pub struct KataRules {
    index: InventoryIndex,
    tunnels: Tunnels,
}

/// The plugin.
pub type Kata = Cni<KataRules>;

/// The cloud-api-adaptor's defaults: VXLAN on 4789, VNIs from 555000 (one per peer pod).
const VXLAN_PORT: u16 = 4789;
const VNI_MIN: u32 = 555_000;
/// VNIs are 24 bits.
const VNI_MAX: u32 = (1 << 24) - 1;

impl CniRules for KataRules {
    fn describe() -> DescriptionBuilder {
        DescriptionBuilder::new("kata-peer-pods", env!("CARGO_PKG_VERSION"))
            .cni("kata-peer-pods")
            // The tunnels leave through the worker's uplink; the pod's own veth is the CNI's.
            .capture("eth*", IfaceKind::Uplink)
            .capture("ens*", IfaceKind::Uplink)
            .capture("enp*", IfaceKind::Uplink)
            .capture("br-ex", IfaceKind::Uplink)
            // In the pod VM (an agent there): the tunnel's end, holding the pod's address.
            .capture(rules::VM_DEVICE, IfaceKind::Tunnel)
            .option("vxlan_port", OptionType::Integer, &VXLAN_PORT.to_string(), "the peer-pod tunnels' VXLAN UDP port (cloud-api-adaptor's VXLAN_PORT); the decoders decode it")
            .option("vni_min", OptionType::Integer, &VNI_MIN.to_string(), "the first VNI of the peer-pod tunnels (cloud-api-adaptor's VXLAN_MIN_ID); VXLAN on the port below it is someone else's")
            .option("vni_max", OptionType::Integer, &VNI_MAX.to_string(), "the last VNI of the peer-pod tunnels")
    }

    fn configure(&mut self, o: &Options) -> Result<(), PluginError> {
        let t = Tunnels {
            port: o.int("vxlan_port")?,
            vni_min: o.int("vni_min")?,
            vni_max: o.int("vni_max")?,
        };
        if t.vni_min > t.vni_max || t.vni_max > VNI_MAX {
            return Err(bad_option(
                "vni_max",
                format!(
                    "VNIs {}..={}: a range within 0..={VNI_MAX} (24 bits)",
                    t.vni_min, t.vni_max
                ),
            ));
        }
        self.tunnels = t;
        Ok(())
    }

    fn decoding(&self) -> Decoding {
        DecodingBuilder::new().vxlan_port(self.tunnels.port).build()
    }

    fn learn(&mut self, inv: Inventory, stitcher: &mut Stitcher) -> Vec<String> {
        let (index, warnings) = InventoryIndex::new(inv);
        // The node addresses: a peer pod's tunnel starts at its worker.
        stitcher.learn(
            index
                .nodes()
                .iter()
                .flat_map(|n| n.addresses.iter().copied()),
            &index,
        );
        self.index = index;
        warnings
    }

    fn flow(&self, conn: &Connection, out: &mut Flows) {
        rules::flow(&self.index, &self.tunnels, conn, out);
    }
}

cniscope_sdk::export_plugin!(Kata);

#[cfg(test)]
mod tests;
