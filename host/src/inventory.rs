//! The inventory names things: nodes, pods, services and endpoint slices, from kubectl JSON
//! dumps (the Kubernetes API comes later). The host stays CNI-agnostic: it keeps every
//! annotation and hands them to the plugins, which read their own CNI's.

pub mod history;
pub mod kubectl;

use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Node {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub pod_cidrs: Vec<String>,
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub ips: Vec<IpAddr>,
    pub host_network: bool,
    /// "deployment/web", "statefulset/db", "" when the pod has no owner.
    pub workload: String,
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// ns since the epoch; 0 = unknown.
    pub created_ns: u64,
    /// ns since the epoch; 0 = still alive.
    pub deleted_ns: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServicePort {
    pub name: String,
    pub protocol: u8,
    pub port: u16,
    pub target_port: u16,
    pub node_port: u16,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub kind: String,
    pub cluster_ips: Vec<IpAddr>,
    pub external_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    pub external_traffic_policy: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointSlice {
    pub namespace: String,
    pub service: String,
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
}

/// OpenShift-SDN's own objects (`network.openshift.io/v1`), found in a dump beside the core
/// ones (`oc get hostsubnets,netnamespaces -o json`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpenShiftSdn {
    /// HostSubnet: (node, subnet).
    pub host_subnets: Vec<(String, String)>,
    /// NetNamespace: (namespace, NETID).
    pub netnamespaces: Vec<(String, u32)>,
}

pub use cniscope_common::NETID_ANNOTATION;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inventory {
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub openshift: OpenShiftSdn,
}

impl Inventory {
    pub fn merge(&mut self, other: Inventory) {
        self.nodes.extend(other.nodes);
        self.pods.extend(other.pods);
        self.services.extend(other.services);
        self.endpoint_slices.extend(other.endpoint_slices);
        self.openshift
            .host_subnets
            .extend(other.openshift.host_subnets);
        self.openshift
            .netnamespaces
            .extend(other.openshift.netnamespaces);
    }

    /// Node subnets and NETIDs from OpenShift-SDN's objects, in the fields plugins read: a
    /// HostSubnet's subnet becomes its node's podCIDR (when the node has none), a
    /// NetNamespace's NETID the [`NETID_ANNOTATION`] of each pod in that namespace.
    pub fn with_openshift_sdn(&self) -> std::borrow::Cow<'_, Inventory> {
        if self.openshift == OpenShiftSdn::default() {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut inv = self.clone();
        for n in &mut inv.nodes {
            if n.pod_cidrs.is_empty() {
                n.pod_cidrs = self
                    .openshift
                    .host_subnets
                    .iter()
                    .filter(|(host, _)| *host == n.name)
                    .map(|(_, subnet)| subnet.clone())
                    .collect();
            }
        }
        for p in &mut inv.pods {
            if let Some((_, netid)) = self
                .openshift
                .netnamespaces
                .iter()
                .find(|(ns, _)| *ns == p.namespace)
            {
                p.annotations
                    .insert(NETID_ANNOTATION.to_string(), netid.to_string());
            }
        }
        std::borrow::Cow::Owned(inv)
    }
}

/// IP protocol number of a Kubernetes protocol name.
pub fn protocol_number(name: &str) -> u8 {
    match name {
        "UDP" => 17,
        "SCTP" => 132,
        _ => 6,
    }
}
