#!/usr/bin/env bash
# A 2-node OVN-Kubernetes (or OpenShift-SDN) cluster shaped in network namespaces
# (docs/cni-rules.md, "OVN-Kubernetes"). The kernel here has no Open vSwitch and no Geneve, so:
# a Linux bridge stands in for br-int (br0 for OpenShift-SDN); pods attach with host-side
# veths named as OVN names them (the first 15 hex digits of the container ID; OpenShift-SDN:
# veth + 8 hex); the router port `.1` answers the pods; the node reaches its pods from the
# management port `ovn-k8s-mp0` `.2` (OpenShift-SDN: from `tun0`, `.1`); the nodes' pod
# traffic crosses a plain link between them (ovn-tun, not watched), and
# `inject.py mirror` writes every packet crossing it onto the sending node's uplink as the
# real CNI would carry it: Geneve (UDP 6081) with OVN's option (datapath key as VNI, ingress
# and egress logical port keys), or OpenShift-SDN's VXLAN (UDP 4789, VNI = the project's
# NETID). A ClusterIP is DNATed on node a (OVN's load balancer on the node's switch).
# Modes:
#   ovn            the agent config carries the southbound Port_Binding and Datapath_Binding
#                  exports (`ovn-sbctl --format=json list ...`): pods named by port keys
#   ovn-ip         the same lab, no southbound tables: pods named by inner addresses
#   openshift-sdn  br0, tun0, VXLAN by NETID; pods in project `shop` (NETID 4242); the
#                  inventory also lists billing/ledger-b2 on server-b1's address (NETID 777),
#                  and the HostSubnet and NetNamespace objects
#
#   ovn.sh up ID DIR [ovn|ovn-ip|openshift-sdn]  build it; write DIR/inventory.json, DIR/cniscope.toml
#   ovn.sh traffic ID   with the mirror running: pod -> pod across nodes, pod -> ClusterIP
#                       (ovn modes), pod -> pod on one node, node a pings its own pod (the pod
#                       sees `.2`, or tun0's `.1`) and, in the ovn modes, the remote pod
#   ovn.sh down ID      remove every namespace named ID-*
#
# Every address lives only inside namespaces this script creates. Needs root, iproute2,
# iptables and python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=common.sh
. "$here/common.sh"

nodes=(a b)
declare -A node_ip=([a]=192.168.66.11 [b]=192.168.66.12)
# Node subnets (/23) in the cluster network 10.132.0.0/14: .1 router port, .2 management port.
declare -A subnet=([a]=10.132.0 [b]=10.132.2)
declare -A join_ip=([a]=100.64.0.2 [b]=100.64.0.3)
declare -A transit_ip=([a]=100.88.0.2 [b]=100.88.0.3)
# Each node's logical switch: its datapath tunnel key (the Geneve VNI).
declare -A datapath=([a]=4 [b]=5)
# pods: name node ip port-key (keys are per switch: 1 router port, 2 management port)
pods=("client-a1 a 10.132.0.5 3" "peer-a2 a 10.132.0.6 4" "server-b1 b 10.132.2.7 3")
cluster_ip=172.30.0.10
external_ip=192.168.66.100
state() { echo "${TMPDIR:-/tmp}/cniscope-lab-$1.json"; }

ovn_veth() { printf '%s' "container-$1" | sha256sum | cut -c1-15; }
sdn_veth() { printf 'veth%s' "$(printf '%s' "$1" | sha256sum | cut -c1-8)"; }
mac_of_ip() { local IFS=.; set -- $1; printf '0a:58:%02x:%02x:%02x:%02x' "$1" "$2" "$3" "$4"; }

up() {
  local id=$1 dir=$2 mode=${3:-ovn}
  case "$mode" in ovn | ovn-ip | openshift-sdn) ;; *) echo "unknown mode $mode (ovn, ovn-ip or openshift-sdn)" >&2; exit 2 ;; esac
  local sdn="" bridge=br-int
  [ "$mode" = openshift-sdn ] && sdn=1 && bridge=br0
  mkdir -p "$dir"
  underlay "$id" "$external_ip"
  for n in "${nodes[@]}"; do
    local ns="$id-n$n" net=${subnet[$n]}
    add_node "$id" "$n" "${node_ip[$n]}"
    nsx "$ns" ip route add default via 192.168.66.1 dev eth0 onlink
    # genev_sys_6081 / vxlan_sys_4789 consume tunnel packets on a real node: drop them
    # silently rather than answer with port unreachables.
    nsx "$ns" iptables -A INPUT -p udp -m multiport --dports 6081,4789 -j DROP
    nsx "$ns" ip link add "$bridge" type bridge
    nsx "$ns" ip link set "$bridge" up
    if [ -n "$sdn" ]; then
      # tun0: the node's gateway into the pod network, and its source toward pods.
      nsx "$ns" ip link add tun0 type veth peer name tun0-br
      nsx "$ns" ip link set tun0-br master br0 up
      nsx "$ns" ip link set tun0 address "$(mac_of_ip "$net.1")"
      nsx "$ns" ip addr add "$net.1/23" dev tun0
      nsx "$ns" ip link set tun0 up
    else
      # The logical router port (.1) answers the pods; the node's own traffic into the pod
      # network comes from the management port ovn-k8s-mp0 (.2).
      nsx "$ns" ip link add ovn-k8s-mp0 type veth peer name mp0-br
      nsx "$ns" ip link set mp0-br master br-int up
      nsx "$ns" ip link set ovn-k8s-mp0 address "$(mac_of_ip "$net.2")"
      nsx "$ns" ip addr add "$net.2/32" dev ovn-k8s-mp0
      nsx "$ns" ip link set ovn-k8s-mp0 up
      nsx "$ns" ip addr add "$net.1/23" dev br-int
      nsx "$ns" ip route replace "$net.0/23" dev br-int proto kernel scope link src "$net.2"
    fi
  done
  ip link add ovn-tun netns "$id-na" type veth peer name ovn-tun netns "$id-nb"
  local src_of
  for n in "${nodes[@]}"; do
    local m=b
    [ "$n" = b ] && m=a
    nsx "$id-n$n" ip link set ovn-tun up
    src_of=${subnet[$n]}.2
    [ -n "$sdn" ] && src_of=${subnet[$n]}.1
    nsx "$id-n$n" ip route add "${subnet[$m]}.0/23" via "${subnet[$m]}.1" dev ovn-tun onlink src "$src_of"
  done
  local ns_of=default
  [ -n "$sdn" ] && ns_of=shop
  for p in "${pods[@]}"; do
    read -r name n addr _ <<<"$p"
    local ns="$id-$name" veth
    if [ -n "$sdn" ]; then veth=$(sdn_veth "$name"); else veth=$(ovn_veth "$name"); fi
    ip netns add "$ns"
    nsx "$ns" ip link set lo up
    ip link add "$veth" netns "$id-n$n" type veth peer name eth0 netns "$ns"
    nsx "$id-n$n" ip link set "$veth" master "$bridge" up
    nsx "$ns" ip link set eth0 address "$(mac_of_ip "$addr")"
    nsx "$ns" ip addr add "$addr/23" dev eth0
    nsx "$ns" ip link set eth0 up
    nsx "$ns" ip route add default via "${subnet[$n]}.1"
  done
  # OVN's load balancer on node a's switch: ClusterIP 172.30.0.10:80 -> server-b1:8080.
  nsx "$id-na" iptables -t nat -A PREROUTING -d "$cluster_ip" -p tcp --dport 80 -j DNAT --to-destination 10.132.2.7:8080

  python3 - "$(state "$id")" "$dir" "$mode" <<EOF
import json, sys
state, out, mode = sys.argv[1:]
nodes = {"a": ("node-a", "${subnet[a]}", ${datapath[a]}), "b": ("node-b", "${subnet[b]}", ${datapath[b]})}
pods = [p.split() for p in """$(printf '%s\n' "${pods[@]}")""".strip().splitlines()]
ns = "shop" if mode == "openshift-sdn" else "default"
def mac(ip):
    return "0a:58:" + ":".join("%02x" % int(b) for b in ip.split("."))
# The mirror's map: each pod's (and management port's) switch and port key, or NETIDs.
m = {"encap": "vxlan" if mode == "openshift-sdn" else "geneve", "router_port": 1, "pods": {}, "netids": {}, "macs": {}}
for name, n, ip, key in pods:
    node, net, dp = nodes[n]
    m["pods"][ip] = {"vni": dp, "port": int(key), "mac": mac(ip), "router_mac": mac(net + ".1")}
    m["netids"][ip] = 4242
    m["macs"][ip] = mac(ip)
for n, (node, net, dp) in nodes.items():
    m["pods"][net + ".2"] = {"vni": dp, "port": 2, "mac": mac(net + ".2"), "router_mac": mac(net + ".1")}
    m["macs"][net + ".1"] = mac(net + ".1")
json.dump(m, open(state, "w"))
# ovn-sbctl --format=json list Datapath_Binding / Port_Binding, as the southbound DB has them.
dps = {"data": [], "headings": ["_uuid", "external_ids", "load_balancers", "tunnel_key"]}
for n, (node, net, dp) in sorted(nodes.items()):
    dps["data"].append([["uuid", "dp-" + node], ["map", [["logical-switch", "ls-" + node], ["name", node]]], ["set", []], dp])
cols = ["_uuid", "chassis", "datapath", "external_ids", "logical_port", "mac", "options", "tunnel_key", "type"]
pbs = {"data": [], "headings": cols}
for name, n, ip, key in pods:
    node, net, dp = nodes[n]
    pbs["data"].append([["uuid", "pb-" + name], ["uuid", "ch-" + node], ["uuid", "dp-" + node],
                        ["map", [["namespace", ns], ["pod", "true"]]], ns + "_" + name,
                        mac(ip) + " " + ip, ["map", [["requested-chassis", node]]], int(key), ""])
for n, (node, net, dp) in sorted(nodes.items()):
    pbs["data"].append([["uuid", "pb-rtos-" + node], ["set", []], ["uuid", "dp-" + node], ["map", []],
                        "stor-" + node, "router", ["map", [["router-port", "rtos-" + node]]], 1, "patch"])
    pbs["data"].append([["uuid", "pb-mp-" + node], ["uuid", "ch-" + node], ["uuid", "dp-" + node], ["map", []],
                        "k8s-" + node, mac(net + ".2") + " " + net + ".2", ["map", []], 2, ""])
json.dump(pbs, open(out + "/sb-port-bindings.json", "w"))
json.dump(dps, open(out + "/sb-datapath-bindings.json", "w"))
EOF

  local option
  case "$mode" in
    ovn)
      option="cluster_networks = [\"10.132.0.0/14\"]
port_bindings = '''$(cat "$dir/sb-port-bindings.json")'''
datapath_bindings = '''$(cat "$dir/sb-datapath-bindings.json")'''"
      ;;
    ovn-ip) option='cluster_networks = ["10.132.0.0/14"]' ;;
    # OpenShift-SDN's subnets and NETIDs come from the HostSubnet and NetNamespace objects in
    # the inventory (options host_subnets and netids would do too).
    openshift-sdn) option='cluster_networks = ["10.132.0.0/14"]' ;;
  esac
  local svc_args=(--service-net 172.30.0 --service "echo 10 80 8080 tcp server ClusterIP - -")
  if [ -n "$sdn" ]; then
    python3 "$here/inventory.py" --cni openshift-sdn \
      --node "node-a ${node_ip[a]}" --node "node-b ${node_ip[b]}" \
      --pod "client-a1 node-a 10.132.0.5 client shop" \
      --pod "peer-a2 node-a 10.132.0.6 peer shop" \
      --pod "server-b1 node-b 10.132.2.7 server shop" \
      --pod "ledger-b2 node-b 10.132.2.7 ledger billing" \
      --host-subnet "node-a ${node_ip[a]} ${subnet[a]}.0/23" \
      --host-subnet "node-b ${node_ip[b]} ${subnet[b]}.0/23" \
      --netnamespace "shop 4242" --netnamespace "billing 777" \
      >"$dir/inventory.json"
  else
    python3 "$here/inventory.py" --cni ovn \
      --node "node-a ${node_ip[a]} ${subnet[a]}.0/23 ${join_ip[a]} ${transit_ip[a]}" \
      --node "node-b ${node_ip[b]} ${subnet[b]}.0/23 ${join_ip[b]} ${transit_ip[b]}" \
      --pod "client-a1 node-a 10.132.0.5 client" \
      --pod "peer-a2 node-a 10.132.0.6 peer" \
      --pod "server-b1 node-b 10.132.2.7 server" \
      "${svc_args[@]}" >"$dir/inventory.json"
  fi
  agent_config "$id" "$dir" ovn "$option" "ovn.sh, mode $mode"
}

traffic() {
  local id=$1 pids=() mirror encap
  encap=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["encap"])' "$(state "$id")")
  python3 "$here/inject.py" mirror --link-ns "$id-na" --link-iface ovn-tun --node "$id-na" \
    --remote-node "$id-nb" --local-outer "${node_ip[a]}" --remote-outer "${node_ip[b]}" \
    --encap "$encap" --map "$(state "$id")" >"$(state "$id").log" 2>&1 &
  mirror=$!
  until grep -q mirroring "$(state "$id").log" 2>/dev/null; do
    kill -0 "$mirror" 2>/dev/null || { cat "$(state "$id").log" >&2; exit 1; }
    sleep 0.1
  done
  ip netns exec "$id-server-b1" python3 "$here/echo.py" serve-tcp 0.0.0.0 8080 >/dev/null &
  pids+=($!)
  ip netns exec "$id-peer-a2" python3 "$here/echo.py" serve-tcp 0.0.0.0 8080 >/dev/null &
  pids+=($!)
  sleep 1
  local c="$id-client-a1"
  nsx "$c" python3 "$here/echo.py" tcp 10.132.2.7 8080 3        # pod -> pod across nodes
  nsx "$c" python3 "$here/echo.py" tcp 10.132.0.6 8080 2        # pod -> pod on the same node
  nsx "$id-na" ping -c 2 -i 0.2 -W 1 10.132.0.5 >/dev/null     # node a -> its pod (seed 003)
  if [ "$encap" = geneve ]; then
    nsx "$c" python3 "$here/echo.py" tcp "$cluster_ip" 80 2     # pod -> ClusterIP -> remote pod
    nsx "$id-na" ping -c 2 -i 0.2 -W 1 10.132.2.7 >/dev/null   # node a -> remote pod
  fi
  sleep 0.5
  kill "${pids[@]}" "$mirror" 2>/dev/null || true
  wait "${pids[@]}" "$mirror" 2>/dev/null || true
}

case "${1:-}" in
  up) up "${2:?id}" "${3:?dir}" "${4:-ovn}" ;;
  traffic) traffic "${2:?id}" ;;
  down) down "${2:?id}"; rm -f "$(state "${2:?id}")" "$(state "${2:?id}").log" ;;
  *) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
