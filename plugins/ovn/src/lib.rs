//! The OVN-Kubernetes plugin (also OpenShift-SDN): names the real pods behind OVN's Geneve
//! tunnels (by logical port keys when the southbound database is given, else by inner
//! addresses), reports the node for the management port, router, join, transit and
//! masquerade addresses OVN puts on packets, recovers clients hidden behind them, and names
//! OpenShift-SDN's VXLAN traffic by project NETID.
//! The rules are in `rules.rs`; what OVN tells about nodes is in `cluster.rs`; the southbound
//! tables in `southbound.rs`; the SDK's [`Cni`] scaffold does the stitching.

pub mod cluster;
pub mod rules;
pub mod southbound;

use cluster::{Cluster, Settings};
use cniscope_sdk::prelude::*;
use southbound::PortKeys;

/// What the plugin knows: the cluster as OVN (or OpenShift-SDN) sees it, and its options.
#[derive(Default)]
pub struct OvnRules {
    cluster: Cluster,
    settings: Settings,
}

/// The plugin.
pub type Ovn = Cni<OvnRules>;

/// The options' defaults (OVN-Kubernetes' and OpenShift-SDN's own).
const MASQUERADE_SUBNET: &str = "169.254.169.0/29";
const HAIRPIN_SNAT: &str = "169.254.169.5";
const GENEVE_PORT: u16 = 6081;
const SDN_VXLAN_PORT: u16 = 4789;

impl CniRules for OvnRules {
    fn describe() -> DescriptionBuilder {
        // OVN names a pod's host-side veth by the first 15 hex digits of its container ID.
        let container_id = "[0-9a-f]".repeat(15);
        DescriptionBuilder::new("ovn-kubernetes", env!("CARGO_PKG_VERSION"))
            .cni("ovn-kubernetes")
            .cni("openshift-sdn")
            .capture(&container_id, IfaceKind::PodVeth)
            .capture("veth*", IfaceKind::PodVeth)
            .capture("genev_sys_6081", IfaceKind::Tunnel)
            .capture("vxlan_sys_4789", IfaceKind::Tunnel)
            .capture("tun0", IfaceKind::Tunnel)
            .capture("br-ex", IfaceKind::Uplink)
            .capture("eth*", IfaceKind::Uplink)
            .capture("ens*", IfaceKind::Uplink)
            // OpenShift-SDN's node subnets and project NETIDs.
            .object("network.openshift.io/v1", "HostSubnet")
            .object("network.openshift.io/v1", "NetNamespace")
            .option("cluster_networks", OptionType::List, "[]", "clusterNetwork CIDRs, e.g. [\"10.128.0.0/14\"]; addresses outside them that are no node or service are external")
            .option("host_subnets", OptionType::List, "[]", "node subnets [\"CIDR=node\", ...] (OpenShift-SDN HostSubnets); OVN's come from k8s.ovn.org/node-subnets")
            .option("masquerade_subnet", OptionType::String, &format!("{MASQUERADE_SUBNET:?}"), "OVN's masquerade subnet: per-node addresses OVN SNATs to (\"\": none)")
            .option("hairpin_snat", OptionType::String, &format!("{HAIRPIN_SNAT:?}"), "the address OVN SNATs a pod reaching itself through a service to (\"\": none)")
            .option("port_bindings", OptionType::String, "\"\"", "`ovn-sbctl --format=json list Port_Binding` output (JSON text): names pods by Geneve port keys")
            .option("datapath_bindings", OptionType::String, "\"\"", "`ovn-sbctl --format=json list Datapath_Binding` output: the VNI of each logical switch, so port keys are read per datapath")
            .option("netids", OptionType::List, "[]", "OpenShift-SDN NETIDs [\"NETID=namespace\", ...] (oc get netnamespaces)")
            .option("geneve_port", OptionType::Integer, &GENEVE_PORT.to_string(), "Geneve UDP port")
            .option("vxlan_port", OptionType::Integer, &SDN_VXLAN_PORT.to_string(), "OpenShift-SDN's VXLAN UDP port")
    }

    fn configure(&mut self, o: &Options) -> Result<(), PluginError> {
        let mut s = Settings {
            cluster_networks: o
                .cidr_list("cluster_networks")?
                .into_iter()
                .map(|(c, _)| c)
                .collect(),
            host_subnets: o.cidr_list("host_subnets")?,
            ..Settings::default()
        };
        if let Some((cidr, _)) = s.host_subnets.iter().find(|(_, n)| n.is_empty()) {
            return Err(bad_option(
                "host_subnets",
                format!("{cidr}: no node (CIDR=node)"),
            ));
        }
        s.masquerade_subnet = o.cidr("masquerade_subnet")?;
        let hairpin = o.string("hairpin_snat", "")?;
        s.hairpin_snat = match hairpin.as_str() {
            "" => None,
            text => Some(
                text.parse()
                    .map_err(|e| bad_option("hairpin_snat", format!("{text:?}: {e}")))?,
            ),
        };
        for entry in o.strings("netids")? {
            let (id, ns) = entry.split_once('=').unwrap_or((&entry, ""));
            let id: u32 = id.trim().parse().map_err(|e| {
                bad_option("netids", format!("{entry:?}: NETID: {e} (NETID=namespace)"))
            })?;
            if ns.trim().is_empty() {
                return Err(bad_option(
                    "netids",
                    format!("{entry:?}: no namespace (NETID=namespace)"),
                ));
            }
            s.netids.push((id, ns.trim().to_string()));
        }
        let table = |name: &str| -> Result<Option<cniscope_sdk::json::Value>, PluginError> {
            match o.raw(name) {
                None => Ok(None),
                Some(v) if v.as_str() == Some("") => Ok(None),
                Some(v) => southbound::table(v)
                    .map(Some)
                    .map_err(|e| bad_option(name, e)),
            }
        };
        if let Some(ports) = table("port_bindings")? {
            let datapaths = table("datapath_bindings")?;
            s.port_keys = PortKeys::new(&ports, datapaths.as_ref())
                .map_err(|e| bad_option("port_bindings", e))?;
        }
        s.geneve_port = o.int("geneve_port")?;
        s.sdn_vxlan_port = o.int("vxlan_port")?;
        self.settings = s;
        Ok(())
    }

    fn decoding(&self) -> Decoding {
        DecodingBuilder::new()
            .geneve_port(self.settings.geneve_port)
            .vxlan_port(self.settings.sdn_vxlan_port)
            .geneve_option_class(rules::OVN_OPTION.0)
            .build()
    }

    fn learn(&mut self, inv: Inventory, stitcher: &mut Stitcher) -> Vec<String> {
        let (cluster, warnings) = Cluster::new(inv, self.settings.clone());
        stitcher.learn(cluster.nat_sources(), &cluster.index);
        self.cluster = cluster;
        warnings
    }

    fn flow(&self, conn: &Connection, out: &mut Flows) {
        rules::flow(&self.cluster, &self.settings, conn, out);
    }

    /// OVN's logical port keys ride in a Geneve option: each view keeps it.
    fn stitcher() -> Stitcher {
        let mut stitcher = Stitcher::default();
        stitcher.geneve_option = Some(rules::OVN_OPTION);
        stitcher
    }
}

cniscope_sdk::export_plugin!(Ovn);

#[cfg(test)]
mod tests;
