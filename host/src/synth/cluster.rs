//! The synthetic cluster: nodes, pods and services laid out the way each CNI lays them out
//! (Flannel's per-node /24 with `flannel.1` at .0; Calico's /26 IPAM blocks with the tunnel
//! address first and `cali` + sha1 veth names), and its inventory as `kubectl get -o json`
//! prints it.

use super::wire::{Ip, Mac};
use super::{Rng, Shape, Spec, SynthError};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

/// Pods are created an hour before the capture starts (`epoch` in [`Cluster`]).
const POD_AGE_SECS: u64 = 3600;

pub struct Node {
    pub name: String,
    pub ip: Ip,
    pub mac: Mac,
    /// The tunnel device's address (flannel.1, tunl0, vxlan.calico); the node IP without one.
    pub tunnel_ip: Ip,
    pub tunnel_mac: Mac,
    /// The pods' gateway MAC as a pod sees it (cni0's, or Calico's ee:ee:ee:ee:ee:ee).
    pub gateway_mac: Mac,
    /// Flannel: the node's /24; Calico: its IPAM blocks (/26).
    pub blocks: Vec<(Ip, u8)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    Client,
    Web,
    Dns,
}

pub struct Pod {
    pub namespace: &'static str,
    pub name: String,
    pub workload: String,
    pub node: usize,
    pub ip: Ip,
    pub mac: Mac,
    /// The host side of its veth: a capture point.
    pub veth: String,
    pub role: Role,
    /// Seconds since the capture's start; pods of the first generation were there before.
    pub created_s: Option<u64>,
    pub deleted_s: Option<u64>,
}

impl Pod {
    pub fn id(&self) -> String {
        format!("pod/{}/{}", self.namespace, self.name)
    }

    /// Alive at `s` seconds since the capture's start.
    pub fn alive_at(&self, s: f64) -> bool {
        self.created_s.is_none_or(|c| s >= c as f64) && self.deleted_s.is_none_or(|d| s < d as f64)
    }
}

pub struct Service {
    pub namespace: &'static str,
    pub name: &'static str,
    pub ip: Ip,
    pub port: u16,
    pub target: u16,
    pub udp: bool,
    pub backends: Vec<usize>,
}

impl Service {
    pub fn id(&self) -> String {
        format!("service/{}/{}", self.namespace, self.name)
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub web: Service,
    pub dns: Service,
    /// Hosts outside the cluster that pods reach through the node's masquerade.
    pub externals: Vec<Ip>,
    pub router_mac: Mac,
    /// The capture's start, seconds since the Unix epoch.
    pub epoch: u64,
}

fn add(base: Ip, n: u32) -> Ip {
    (u32::from_be_bytes(base) + n).to_be_bytes()
}

fn mac(prefix: [u8; 2], ip: Ip) -> Mac {
    [prefix[0], prefix[1], ip[0], ip[1], ip[2], ip[3]]
}

fn dotted(ip: Ip) -> String {
    std::net::Ipv4Addr::from(ip).to_string()
}

fn mac_text(m: Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// libcalico-go's `VethNameForWorkload`: "cali" + sha1("<namespace>.<pod>"), 15 characters.
fn calico_veth(namespace: &str, name: &str) -> String {
    let digest = Sha1::digest(format!("{namespace}.{name}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("cali{}", &hex[..11])
}

/// A pod's host-side interface as its CNI names it: Calico's from the pod's name, OVN's the
/// first 15 hex digits of the container ID, others `veth` + 8 random hex digits.
fn veth_name(shape: Shape, rng: &mut Rng, namespace: &str, name: &str) -> String {
    match shape {
        Shape::CalicoIpip | Shape::CalicoVxlan | Shape::CalicoBgp => calico_veth(namespace, name),
        Shape::OvnGeneve => format!("{:015x}", rng.word() >> 4),
        _ => format!("veth{:08x}", rng.word() as u32),
    }
}

/// A ReplicaSet's pod name: `<deployment>-<template hash>-<5 characters>`.
fn pod_name(rng: &mut Rng, app: &str, hash: &str) -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let tail: String = (0..5)
        .map(|_| CHARS[rng.below(CHARS.len() as u64) as usize] as char)
        .collect();
    format!("{app}-{hash}-{tail}")
}

impl Cluster {
    pub fn new(spec: &Spec, rng: &mut Rng) -> Result<Cluster, SynthError> {
        let (pod_net, pod_prefix) = spec.pod_cidr;
        if pod_prefix > 16 {
            return Err(SynthError::Spec(format!(
                "pod CIDR /{pod_prefix}: the generator gives each node a /24 of it, so it needs /16 or wider"
            )));
        }
        let calico = matches!(
            spec.shape,
            Shape::CalicoIpip | Shape::CalicoVxlan | Shape::CalicoBgp
        );
        let mut nodes = Vec::new();
        for i in 0..spec.nodes {
            let ip = add(spec.node_cidr.0, 10 + i);
            // Node i's share of the pod network: a /24 (Flannel's subnet lease; four of
            // Calico's /26 blocks, affine to it). Offset by the seed so names and numbers vary.
            let subnet = add(pod_net, (i + 1 + (spec.seed % 7) as u32) << 8);
            let blocks = if calico {
                (0..4).map(|b| (add(subnet, b * 64), 26)).collect()
            } else {
                vec![(subnet, 24)]
            };
            let (tunnel_ip, tunnel_mac) = match spec.shape {
                Shape::FlannelVxlan => (subnet, mac([0x2e, 0x6b], subnet)),
                Shape::CalicoIpip => (subnet, [0; 6]),
                Shape::CalicoVxlan => (subnet, mac([0x66, 0x3a], subnet)),
                Shape::FlannelHostGw | Shape::CalicoBgp => (ip, [0; 6]),
                // The management port, ovn-k8s-mp0: where the node reaches pods from.
                Shape::OvnGeneve => (add(subnet, 2), mac([0x0a, 0x58], add(subnet, 2))),
            };
            let gateway_mac = if calico {
                [0xee; 6]
            } else if spec.shape == Shape::OvnGeneve {
                // The node switch's router port, .1.
                mac([0x0a, 0x58], add(subnet, 1))
            } else {
                mac([0x9a, 0x1c], add(subnet, 1))
            };
            nodes.push(Node {
                name: format!("worker-{}", i + 1),
                ip,
                mac: mac([0x52, 0x54], ip),
                tunnel_ip,
                tunnel_mac,
                gateway_mac,
                blocks,
            });
        }

        let mut pods = Vec::new();
        for (n, node) in nodes.iter().enumerate() {
            let subnet = node.blocks[0].0;
            // Flannel: .0 is flannel.1, .1 cni0. Calico: .0 is the tunnel address. OVN: .1 the
            // router port, .2 the management port.
            let first = match spec.shape {
                _ if calico => 1,
                Shape::OvnGeneve => 3,
                _ => 2,
            };
            for k in 0..spec.pods_per_node {
                let ip = add(subnet, first + k);
                let role = match k % 8 {
                    0 | 4 => Role::Web,
                    1 => Role::Dns,
                    _ => Role::Client,
                };
                let (namespace, app, hash) = match role {
                    Role::Web => ("shop", "web", "7c9d6f5b8"),
                    Role::Dns => ("kube-system", "coredns", "668d6bf9bc"),
                    Role::Client => ("default", "loadgen", "5d4f8b7c9"),
                };
                let name = pod_name(rng, app, hash);
                let veth = veth_name(spec.shape, rng, namespace, &name);
                pods.push(Pod {
                    namespace,
                    workload: format!("deployment/{namespace}/{app}"),
                    name,
                    node: n,
                    ip,
                    mac: mac([0x0a, 0x58], ip),
                    veth,
                    role,
                    created_s: None,
                    deleted_s: None,
                });
            }
        }

        // Churn: some clients are deleted mid-capture and their address goes to a new pod a
        // second later, inside one window when windows are longer than that.
        let clients: Vec<usize> = (0..pods.len())
            .filter(|&p| pods[p].role == Role::Client)
            .collect();
        let secs = u64::from(spec.secs.max(4));
        for &p in &clients {
            if rng.unit() >= spec.churn {
                continue;
            }
            let deleted = 1 + rng.below(secs - 2);
            pods[p].deleted_s = Some(deleted);
            let name = pod_name(rng, "loadgen", "5d4f8b7c9");
            let veth = veth_name(spec.shape, rng, "default", &name);
            let old = &pods[p];
            pods.push(Pod {
                namespace: old.namespace,
                workload: old.workload.clone(),
                name,
                node: old.node,
                ip: old.ip,
                mac: mac([0x0a, 0x59], old.ip),
                veth,
                role: Role::Client,
                created_s: Some(deleted + 1),
                deleted_s: None,
            });
        }

        let backends = |role: Role| -> Vec<usize> {
            (0..pods.len()).filter(|&p| pods[p].role == role).collect()
        };
        let (svc_net, _) = spec.service_cidr;
        let web = Service {
            namespace: "shop",
            name: "web",
            ip: add(svc_net, 10 + (spec.seed % 200) as u32),
            port: 80,
            target: 8080,
            udp: false,
            backends: backends(Role::Web),
        };
        let dns = Service {
            namespace: "kube-system",
            name: "kube-dns",
            ip: add(svc_net, 10 + (spec.seed % 200) as u32 + 300),
            port: 53,
            target: 53,
            udp: true,
            backends: backends(Role::Dns),
        };
        if web.backends.is_empty() || dns.backends.is_empty() || clients.is_empty() {
            return Err(SynthError::Spec(
                "too few pods per node for clients, web and DNS backends (at least 3)".into(),
            ));
        }
        let externals = (0..8).map(|k| [203, 0, 113, 10 + k as u8]).collect();
        Ok(Cluster {
            nodes,
            pods,
            web,
            dns,
            externals,
            router_mac: [0x52, 0x54, 0, 0xff, 0xff, 0x01],
            epoch: 1_795_255_200 + POD_AGE_SECS,
        })
    }

    fn time(&self, offset: i64) -> String {
        let secs = self.epoch as i64 + offset;
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
        humantime::format_rfc3339_seconds(t).to_string()
    }

    /// The inventory as `kubectl get nodes,pods,services,endpointslices[,ippools,ipamblocks]
    /// -A -o json` prints it.
    pub fn inventory(&self, spec: &Spec) -> Value {
        let created = self.time(-(POD_AGE_SECS as i64));
        let mut items = Vec::new();
        for n in &self.nodes {
            let annotations = match spec.shape {
                Shape::FlannelVxlan | Shape::FlannelHostGw => {
                    let vxlan = spec.shape == Shape::FlannelVxlan;
                    let data = if vxlan {
                        json!({"VNI": 1, "VtepMAC": mac_text(n.tunnel_mac)}).to_string()
                    } else {
                        "null".to_string()
                    };
                    json!({
                        "flannel.alpha.coreos.com/backend-data": data,
                        "flannel.alpha.coreos.com/backend-type": if vxlan { "vxlan" } else { "host-gw" },
                        "flannel.alpha.coreos.com/kube-subnet-manager": "true",
                        "flannel.alpha.coreos.com/public-ip": dotted(n.ip),
                    })
                }
                Shape::CalicoIpip => json!({
                    "projectcalico.org/IPv4Address": format!("{}/24", dotted(n.ip)),
                    "projectcalico.org/IPv4IPIPTunnelAddr": dotted(n.tunnel_ip),
                }),
                Shape::CalicoVxlan => json!({
                    "projectcalico.org/IPv4Address": format!("{}/24", dotted(n.ip)),
                    "projectcalico.org/IPv4VXLANTunnelAddr": dotted(n.tunnel_ip),
                    "projectcalico.org/IPv4VXLANTunnelMACAddr": mac_text(n.tunnel_mac),
                }),
                Shape::CalicoBgp => json!({
                    "projectcalico.org/IPv4Address": format!("{}/24", dotted(n.ip)),
                }),
                Shape::OvnGeneve => {
                    // As ovnkube-node annotates a node (interconnect): its subnet, its join
                    // (gateway router) and transit switch addresses, the management port MAC.
                    let k = n
                        .name
                        .trim_start_matches("worker-")
                        .parse::<u8>()
                        .unwrap_or(1);
                    let compact = |v: Value| v.to_string();
                    json!({
                        "k8s.ovn.org/node-subnets": compact(json!({"default": [format!("{}/24", dotted(n.blocks[0].0))]})),
                        "k8s.ovn.org/node-primary-ifaddr": compact(json!({"ipv4": format!("{}/24", dotted(n.ip))})),
                        "k8s.ovn.org/host-cidrs": compact(json!([format!("{}/24", dotted(n.ip))])),
                        "k8s.ovn.org/node-gateway-router-lrp-ifaddr": compact(json!({"ipv4": format!("100.64.0.{}/16", k + 1)})),
                        "k8s.ovn.org/node-transit-switch-port-ifaddr": compact(json!({"ipv4": format!("100.88.0.{}/16", k + 1)})),
                        "k8s.ovn.org/node-mgmt-port-mac-address": mac_text(n.tunnel_mac),
                    })
                }
            };
            let mut spec_json = json!({});
            if matches!(spec.shape, Shape::FlannelVxlan | Shape::FlannelHostGw) {
                let cidr = format!("{}/24", dotted(n.blocks[0].0));
                spec_json = json!({"podCIDR": cidr, "podCIDRs": [cidr]});
            }
            items.push(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": n.name, "creationTimestamp": created,
                             "labels": {"kubernetes.io/hostname": n.name},
                             "annotations": annotations},
                "spec": spec_json,
                "status": {"addresses": [{"type": "InternalIP", "address": dotted(n.ip)},
                                         {"type": "Hostname", "address": n.name}]},
            }));
        }
        for p in &self.pods {
            let (_, namespace, app) = {
                let mut parts = p.workload.splitn(3, '/');
                (parts.next(), parts.next(), parts.next().unwrap_or(""))
            };
            let hash = p.name.rsplit('-').nth(1).unwrap_or("");
            let mut metadata = json!({
                "name": p.name, "namespace": namespace,
                "creationTimestamp": p.created_s.map_or(created.clone(), |s| self.time(s as i64)),
                "labels": {"app": app, "pod-template-hash": hash},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                     "name": format!("{app}-{hash}"), "controller": true}],
            });
            if let Some(d) = p.deleted_s {
                metadata["deletionTimestamp"] = self.time(d as i64).into();
            }
            if spec.shape == Shape::OvnGeneve {
                let subnet = self.nodes[p.node].blocks[0].0;
                let gw = dotted(add(subnet, 1));
                let ip = format!("{}/24", dotted(p.ip));
                let networks = json!({"default": {"ip_addresses": [ip], "mac_address": mac_text(p.mac),
                    "gateway_ips": [gw], "ip_address": ip, "gateway_ip": gw}});
                metadata["annotations"] = json!({"k8s.ovn.org/pod-networks": networks.to_string()});
            }
            items.push(json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": metadata,
                "spec": {"nodeName": self.nodes[p.node].name,
                         "containers": [{"name": app, "image": "registry.k8s.io/pause:3.10"}]},
                "status": {"phase": "Running", "podIP": dotted(p.ip), "podIPs": [{"ip": dotted(p.ip)}],
                           "hostIP": dotted(self.nodes[p.node].ip)},
            }));
        }
        for s in [&self.web, &self.dns] {
            let proto = if s.udp { "UDP" } else { "TCP" };
            let port_name = if s.udp { "dns" } else { "http" };
            items.push(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": s.name, "namespace": s.namespace, "creationTimestamp": created},
                "spec": {"type": "ClusterIP", "clusterIP": dotted(s.ip), "clusterIPs": [dotted(s.ip)],
                         "selector": {"app": if s.udp { "coredns" } else { "web" }},
                         "ports": [{"name": port_name, "protocol": proto, "port": s.port, "targetPort": s.target}]},
                "status": {"loadBalancer": {}},
            }));
            let endpoints: Vec<Value> = s
                .backends
                .iter()
                .map(|&b| {
                    let p = &self.pods[b];
                    json!({"addresses": [dotted(p.ip)], "conditions": {"ready": true},
                           "nodeName": self.nodes[p.node].name,
                           "targetRef": {"kind": "Pod", "name": p.name, "namespace": p.namespace}})
                })
                .collect();
            items.push(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{}-x7k2p", s.name), "namespace": s.namespace,
                             "labels": {"kubernetes.io/service-name": s.name}},
                "addressType": "IPv4", "endpoints": endpoints,
                "ports": [{"name": port_name, "protocol": proto, "port": s.target}],
            }));
        }
        if matches!(
            spec.shape,
            Shape::CalicoIpip | Shape::CalicoVxlan | Shape::CalicoBgp
        ) {
            let (net, prefix) = spec.pod_cidr;
            items.push(json!({
                "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                "metadata": {"name": "default-ipv4-ippool", "creationTimestamp": created},
                "spec": {"cidr": format!("{}/{prefix}", dotted(net)), "blockSize": 26,
                         "ipipMode": if spec.shape == Shape::CalicoIpip { "Always" } else { "Never" },
                         "vxlanMode": if spec.shape == Shape::CalicoVxlan { "Always" } else { "Never" },
                         "natOutgoing": true, "nodeSelector": "all()"},
            }));
            for n in &self.nodes {
                for (ip, prefix) in &n.blocks {
                    let cidr = format!("{}/{prefix}", dotted(*ip));
                    items.push(json!({
                        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMBlock",
                        "metadata": {"name": cidr.replace(['.', '/'], "-"), "creationTimestamp": created},
                        "spec": {"cidr": cidr, "affinity": format!("host:{}", n.name), "deleted": false,
                                 "strictAffinity": false, "allocations": [], "unallocated": [],
                                 "attributes": []},
                    }));
                }
            }
        }
        json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
    }

    /// Addresses as text, for the config and the expected topology.
    pub fn dotted(ip: Ip) -> String {
        dotted(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `printf '%s' default.old-a3 | sha1sum | cut -c1-11`, as tests/lab/calico.sh names it.
    #[test]
    fn calico_veth_names_are_libcalicos() {
        assert_eq!(calico_veth("default", "old-a3"), "calif7c854c63de");
    }
}
