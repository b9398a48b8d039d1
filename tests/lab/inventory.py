#!/usr/bin/env python3
"""Writes a kubectl-style List (nodes, pods, services, endpointslices) for a lab, with the
fields and annotations a real flannel cluster has (`kubectl get ... -o json`).

  inventory.py [--backend vxlan|host-gw|udp] --node "NAME IP PODCIDR VTEPMAC" ...
  inventory.py --cni calico --calico-tunnel none|ipip|vxlan --node "NAME IP - TUNNELADDR" ... --pod "NAME NODE IP APP" ...
  inventory.py --cni ovn --node "NAME IP SUBNET JOINADDR TRANSITADDR" ... --pod "NAME NODE IP APP [NAMESPACE]" ...
  inventory.py --cni openshift-sdn --node "NAME IP" ... --pod ... --host-subnet "NODE IP SUBNET" ...
               --netnamespace "NAMESPACE NETID" ...   (network.openshift.io/v1 objects)
  inventory.py --cni cilium --node "NAME IP" ... --pod ... --cilium-node "NAME IP ROUTER HEALTH PODCIDR" ...
               --cilium-endpoint "NAMESPACE POD IP IDENTITY" ... --cilium-identity "ID NAMESPACE APP" ...
               (cilium.io/v2 objects, as `kubectl get ciliumnodes,ciliumendpoints,ciliumidentities -A -o json`)
  --service-net 10.96.0 --lb-ip IP --service "NAME IP PORT TARGETPORT PROTO BACKEND TYPE NODEPORT POLICY"
      one line of tests/lab/common.sh's lab_services: IP is the last octet in --service-net
      (None = headless), BACKEND the app label selected (- = none), NODEPORT - for none,
      POLICY the externalTrafficPolicy (or masquerade-all, a kube-proxy flag: Cluster).
"""
import argparse
import json

CREATED = "2026-11-21T10:00:00Z"


def node(backend, name, ip, cidr, mac):
    # flanneld writes backend-data "null" for host-gw and udp (no VTEP).
    data = {"VNI": 1, "VtepMAC": mac} if backend == "vxlan" else None
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "creationTimestamp": CREATED,
            "labels": {"kubernetes.io/hostname": name},
            "annotations": {
                "flannel.alpha.coreos.com/backend-data": json.dumps(data, separators=(",", ":")),
                "flannel.alpha.coreos.com/backend-type": backend,
                "flannel.alpha.coreos.com/kube-subnet-manager": "true",
                "flannel.alpha.coreos.com/public-ip": ip,
            },
        },
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]},
    }


def calico_node(tunnel, name, ip, _cidr, tunnel_addr):
    """A node as calico-node annotates it (no podCIDR: Calico's IPAM uses blocks)."""
    annotations = {"projectcalico.org/IPv4Address": ip + "/24"}
    if tunnel == "ipip":
        annotations["projectcalico.org/IPv4IPIPTunnelAddr"] = tunnel_addr
    elif tunnel == "vxlan":
        annotations["projectcalico.org/IPv4VXLANTunnelAddr"] = tunnel_addr
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "creationTimestamp": CREATED,
            "labels": {"kubernetes.io/hostname": name},
            "annotations": annotations,
        },
        "spec": {},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]},
    }


def ovn_node(name, ip, subnet, join, transit):
    """A node as ovnkube-node annotates it (OVN-Kubernetes, interconnect mode)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "creationTimestamp": CREATED,
            "labels": {"kubernetes.io/hostname": name},
            "annotations": {
                "k8s.ovn.org/node-subnets": json.dumps({"default": [subnet]}, separators=(",", ":")),
                "k8s.ovn.org/node-primary-ifaddr": json.dumps({"ipv4": ip + "/24"}, separators=(",", ":")),
                "k8s.ovn.org/host-cidrs": json.dumps([ip + "/24"], separators=(",", ":")),
                "k8s.ovn.org/node-gateway-router-lrp-ifaddr": json.dumps({"ipv4": join + "/16"}, separators=(",", ":")),
                "k8s.ovn.org/node-transit-switch-port-ifaddr": json.dumps({"ipv4": transit + "/16"}, separators=(",", ":")),
                "k8s.ovn.org/node-mgmt-port-mac-address": "0a:58:" + ":".join("%02x" % int(b) for b in subnet.split("/")[0].split(".")),
            },
        },
        "spec": {},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]},
    }


def sdn_node(name, ip, *_):
    """An OpenShift-SDN node: subnets live in HostSubnet objects, not on the node."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "creationTimestamp": CREATED, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]},
    }


def ovn_mac(ip):
    return "0a:58:" + ":".join("%02x" % int(b) for b in ip.split("."))


def pod(name, node_name, ip, app, namespace="default", cni="flannel"):
    annotations = {}
    if cni == "ovn":
        gw = ".".join(ip.split(".")[:3]) + ".1"
        annotations["k8s.ovn.org/pod-networks"] = json.dumps(
            {"default": {"ip_addresses": [ip + "/23"], "mac_address": ovn_mac(ip), "gateway_ips": [gw],
                         "ip_address": ip + "/23", "gateway_ip": gw}}, separators=(",", ":"))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": CREATED,
            "annotations": annotations,
            "labels": {"app": app, "pod-template-hash": "5d4f8b7c9"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": app + "-5d4f8b7c9", "controller": True}],
        },
        "spec": {"nodeName": node_name, "containers": [{"name": app, "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def service(line, svc_net, lb_ip, pods):
    """A Service and its EndpointSlice as the API server returns them."""
    name, ip, port, target, proto, backend, kind, node_port, policy = line.split()
    port_spec = {"name": proto, "protocol": proto.upper(), "port": int(port), "targetPort": int(target)}
    if node_port != "-":
        port_spec["nodePort"] = int(node_port)
    spec = {
        "type": kind,
        "selector": {"app": backend if backend != "-" else name},
        "ports": [port_spec],
    }
    if ip == "None":
        spec["clusterIP"] = "None"
        spec["clusterIPs"] = ["None"]
    else:
        spec["clusterIP"] = "%s.%s" % (svc_net, ip)
        spec["clusterIPs"] = [spec["clusterIP"]]
    if kind in ("NodePort", "LoadBalancer"):
        spec["externalTrafficPolicy"] = "Local" if policy == "Local" else "Cluster"
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": CREATED},
        "spec": spec,
        "status": {"loadBalancer": {"ingress": [{"ip": lb_ip}]} if kind == "LoadBalancer" else {}},
    }
    backends = [p[2] for p in pods if p[3] == backend]
    eps = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name + "-abcde", "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in backends],
        "ports": [{"name": proto, "protocol": proto.upper(), "port": int(target)}],
    }
    return [svc, eps]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cni", default="flannel", choices=["flannel", "calico", "ovn", "openshift-sdn", "cilium"])
    ap.add_argument("--calico-tunnel", default="none", choices=["none", "ipip", "vxlan"])
    ap.add_argument("--backend", default="vxlan", choices=["vxlan", "host-gw", "udp"])
    ap.add_argument("--node", action="append", default=[])
    ap.add_argument("--pod", action="append", default=[])
    ap.add_argument("--service", action="append", default=[])
    ap.add_argument("--service-net", default="10.96.0")
    ap.add_argument("--host-subnet", action="append", default=[])
    ap.add_argument("--netnamespace", action="append", default=[])
    ap.add_argument("--ip-pool", action="append", default=[])
    ap.add_argument("--ipam-block", action="append", default=[])
    ap.add_argument("--lb-ip", default="")
    ap.add_argument("--cilium-node", action="append", default=[])
    ap.add_argument("--cilium-endpoint", action="append", default=[])
    ap.add_argument("--cilium-identity", action="append", default=[])
    a = ap.parse_args()
    if a.cni == "calico":
        items = [calico_node(a.calico_tunnel, *n.split()) for n in a.node]
    elif a.cni == "ovn":
        items = [ovn_node(*n.split()) for n in a.node]
    elif a.cni in ("openshift-sdn", "cilium"):
        items = [sdn_node(*n.split()) for n in a.node]
    else:
        items = [node(a.backend, *n.split()) for n in a.node]
    pods = [p.split() for p in a.pod]
    items += [pod(*p, cni=a.cni) for p in pods]
    for s in a.service:
        items += service(s, a.service_net, a.lb_ip, pods)
    for h in a.host_subnet:
        node_name, host_ip, subnet = h.split()
        items.append({"apiVersion": "network.openshift.io/v1", "kind": "HostSubnet",
                      "metadata": {"name": node_name, "creationTimestamp": CREATED},
                      "host": node_name, "hostIP": host_ip, "subnet": subnet})
    for n in a.netnamespace:
        name, netid = n.split()
        items.append({"apiVersion": "network.openshift.io/v1", "kind": "NetNamespace",
                      "metadata": {"name": name, "creationTimestamp": CREATED},
                      "netname": name, "netid": int(netid)})
    for p in a.ip_pool:
        # As `kubectl get ippools.crd.projectcalico.org -o json` prints Calico's IPPool.
        cidr, block_size = p.split()
        items.append({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                      "metadata": {"name": "default-ipv4-ippool", "creationTimestamp": CREATED},
                      "spec": {"cidr": cidr, "blockSize": int(block_size), "ipipMode": "Never",
                               "vxlanMode": "Never", "natOutgoing": True, "nodeSelector": "all()"}})
    for b in a.ipam_block:
        # As `kubectl get ipamblocks.crd.projectcalico.org -o json` prints an IPAMBlock.
        cidr, node_name = b.split()
        items.append({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMBlock",
                      "metadata": {"name": cidr.replace(".", "-").replace("/", "-"),
                                   "creationTimestamp": CREATED},
                      "spec": {"cidr": cidr, "affinity": "host:" + node_name, "deleted": False,
                               "strictAffinity": False, "allocations": [], "unallocated": [],
                               "attributes": []}})
    for n in a.cilium_node:
        name, ip, router, health, cidr = n.split()
        items.append({"apiVersion": "cilium.io/v2", "kind": "CiliumNode",
                      "metadata": {"name": name, "creationTimestamp": CREATED},
                      "spec": {"addresses": [{"type": "InternalIP", "ip": ip},
                                             {"type": "CiliumInternalIP", "ip": router}],
                               "health": {"ipv4": health}, "ipam": {"podCIDRs": [cidr]},
                               "encryption": {}, "eni": {}},
                      "status": {"ipam": {"operator-status": {}}}})
    for e in a.cilium_endpoint:
        namespace, name, ip, identity = e.split()
        items.append({"apiVersion": "cilium.io/v2", "kind": "CiliumEndpoint",
                      "metadata": {"name": name, "namespace": namespace, "creationTimestamp": CREATED,
                                   "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": name}]},
                      "status": {"id": 100 + len(items), "state": "ready",
                                 "identity": {"id": int(identity),
                                              "labels": ["k8s:io.kubernetes.pod.namespace=" + namespace]},
                                 "networking": {"addressing": [{"ipv4": ip}]},
                                 "encryption": {}, "external-identifiers": {"pod-name": namespace + "/" + name}}})
    for i in a.cilium_identity:
        ident, namespace, app = i.split()
        items.append({"apiVersion": "cilium.io/v2", "kind": "CiliumIdentity",
                      "metadata": {"name": ident, "creationTimestamp": CREATED,
                                   "labels": {"io.kubernetes.pod.namespace": namespace}},
                      "security-labels": {"k8s:app": app, "k8s:io.kubernetes.pod.namespace": namespace,
                                          "k8s:io.cilium.k8s.policy.serviceaccount": "default",
                                          "k8s:io.cilium.k8s.policy.cluster": "default"}})
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}, indent=2))


if __name__ == "__main__":
    main()
