//! The inventory names things: nodes, pods, services and endpoint slices, from kubectl JSON
//! dumps or followed from the Kubernetes API (feature `kubernetes`). The host stays CNI-agnostic: it keeps every
//! annotation, and every object of another API group (a CNI's custom resources) whole, and
//! hands them to the plugins, which read their own CNI's.

#[cfg(feature = "kubernetes")]
pub mod api;
pub mod history;
pub mod kubectl;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

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
    /// Sorted by key; shared between the API inventory's store and its snapshots (a
    /// 10 000-pod cluster's annotations are most of its inventory). A pod's labels are not
    /// kept: nothing reads them (its workload comes from its owner).
    pub annotations: Arc<[(String, String)]>,
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

/// An object of a kind beside the core ones (a CNI's custom resource: Calico's IPAMBlock,
/// OpenShift-SDN's HostSubnet), kept whole for the plugins that ask for its kind. The host
/// reads none of its fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CniObject {
    pub api_version: String,
    pub kind: String,
    /// "" for a cluster-scoped object.
    pub namespace: String,
    pub name: String,
    /// The object as JSON, without `metadata.managedFields`.
    pub json: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inventory {
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub objects: Vec<CniObject>,
}

impl Inventory {
    pub fn merge(&mut self, other: Inventory) {
        self.nodes.extend(other.nodes);
        self.pods.extend(other.pods);
        self.services.extend(other.services);
        self.endpoint_slices.extend(other.endpoint_slices);
        self.objects.extend(other.objects);
    }
}

/// An inventory that changes while running (the Kubernetes API followed): the pipeline takes
/// a snapshot between windows when the generation moved.
pub trait InventorySource: Send {
    /// Moves whenever the snapshot would differ.
    fn generation(&self) -> u64;
    /// What it holds now.
    fn snapshot(&self) -> Inventory;
    /// `health.inventory`.
    fn health(&self) -> crate::health::InventoryHealth;
}

/// The inventory that follows the API could not start.
#[derive(Debug, thiserror::Error)]
#[error("the Kubernetes API inventory: {0}")]
pub struct FollowError(pub String);

/// IP protocol number of a Kubernetes protocol name.
pub fn protocol_number(name: &str) -> u8 {
    match name {
        "UDP" => 17,
        "SCTP" => 132,
        _ => 6,
    }
}
