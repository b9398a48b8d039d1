#!/usr/bin/env bash
# A 2-node Calico cluster in network namespaces, built the way calico-node and the Calico CNI
# build a node (docs/cni-rules.md, "Calico"): no bridge; each pod's host-side veth is
# `cali` + sha1("<namespace>.<pod>")[:11] with MAC ee:ee:ee:ee:ee:ee and proxy ARP, a /32
# route per pod, the pod's default route via 169.254.1.1; IP pool 10.123.0.0/16 in /26
# blocks affine to nodes; natOutgoing (cali-nat-outgoing's MASQUERADE); kube-proxy's rules for
# the service shapes of common.sh's lab_services (ClusterIPs, NodePorts with
# externalTrafficPolicy Cluster and Local, a load-balancer IP routed to node a, hairpin,
# headless, no endpoints). Modes:
#   bgp    routes `<remote block> via <node IP> dev eth0` (what BIRD installs)
#   vxlan  vxlan.calico (VNI 4096, UDP 4789) with the node's tunnel address from its block,
#          routes `<remote block> via <remote tunnel addr> dev vxlan.calico onlink`, ARP + FDB
#   ipip   routed as bgp (the kernel here has no ipip module), annotated with IPIP tunnel
#          addresses: `inject-ipip` writes real IPIP frames onto node a's uplink
#
#   calico.sh up ID DIR [bgp|vxlan|ipip]  build it; write DIR/inventory.json, DIR/cniscope.toml
#   calico.sh traffic ID            pod->pod across nodes (TCP, UDP), same node, ClusterIP,
#                                   node a -> remote pod, pod -> external (natOutgoing)
#   calico.sh services ID           one connection per service shape (common.sh service_traffic)
#   calico.sh reuse ID              pod old-a3 talks, is deleted, new-a4 gets its IP and talks
#   calico.sh service-stream ID N   N connections client-a1 -> ClusterIP, one after another
#   calico.sh inject-ipip ID        an IPIP TCP connection remote-b2 -> client-a1 and a ping
#                                   from node b's tunnel address, as frames on node a's eth0
#   calico.sh down ID               remove every namespace named ID-*
#
# Every address lives only inside namespaces this script creates. Needs root, iproute2,
# iptables and python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=common.sh
. "$here/common.sh"

nodes=(a b)
declare -A node_ip=([a]=192.168.88.11 [b]=192.168.88.12)
declare -A block=([a]=10.123.10.0/26 [b]=10.123.20.64/26)
declare -A tunnel_ip=([a]=10.123.10.1 [b]=10.123.20.65)
declare -A vtep_mac=([a]=66:ca:00:00:00:0a [b]=66:ca:00:00:00:0b)
# pods: name node ip (default namespace); old-a3 and new-a4 share an address, one at a time.
pods=("client-a1 a 10.123.10.5" "peer-a2 a 10.123.10.6" "server-b1 b 10.123.20.70")
reuse_ip=10.123.10.9
# Services (common.sh lab_services) in 10.97.0.0/24; the load balancer's IP is routed to node a.
svc_net=10.97.0
cluster_ip=$svc_net.10
lb_ip=192.168.99.200
cluster_cidr=10.123.0.0/16
declare -A backend_ip=([server]=10.123.20.70 [peer]=10.123.10.6)
declare -A backend_node=([server]=b [peer]=a)
external_ip=192.168.88.100

cali_of() { printf 'cali%s' "$(printf '%s' "default.$1" | sha1sum | cut -c1-11)"; }

# add_pod ID NAME NODE IP: a pod wired as the Calico CNI wires it.
add_pod() {
  local id=$1 name=$2 n=$3 addr=$4 ns="$id-$2" veth
  veth=$(cali_of "$name")
  ip netns add "$ns"
  nsx "$ns" ip link set lo up
  ip link add "$veth" netns "$id-n$n" type veth peer name eth0 netns "$ns"
  nsx "$id-n$n" ip link set "$veth" address ee:ee:ee:ee:ee:ee
  nsx "$id-n$n" sysctl -qw "net.ipv4.conf.$veth.proxy_arp=1" "net.ipv4.neigh.$veth.proxy_delay=0"
  nsx "$id-n$n" ip link set "$veth" up
  nsx "$id-n$n" ip route add "$addr/32" dev "$veth" scope link
  nsx "$ns" ip addr add "$addr/32" dev eth0
  nsx "$ns" ip link set eth0 up
  nsx "$ns" ip route add 169.254.1.1 dev eth0 scope link
  nsx "$ns" ip route add default via 169.254.1.1 dev eth0
}

del_pod() {
  local id=$1 name=$2
  ip netns pids "$id-$name" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns del "$id-$name"  # the veth pair goes with it, and the /32 route with the veth
}

up() {
  local id=$1 dir=$2 mode=${3:-bgp}
  case "$mode" in bgp | vxlan | ipip) ;; *) echo "unknown mode $mode (bgp, vxlan or ipip)" >&2; exit 2 ;; esac
  mkdir -p "$dir"
  underlay "$id" "$external_ip"
  for n in "${nodes[@]}"; do
    local ns="$id-n$n"
    add_node "$id" "$n" "${node_ip[$n]}"
    # Proxy ARP answers for 169.254.1.1 only if the node has a route to it elsewhere.
    nsx "$ns" ip route add default via 192.168.88.1 dev eth0 onlink
    if [ "$mode" = vxlan ]; then
      nsx "$ns" ip link add vxlan.calico type vxlan id 4096 local "${node_ip[$n]}" dev eth0 dstport 4789 nolearning
      nsx "$ns" ip link set vxlan.calico address "${vtep_mac[$n]}"
      nsx "$ns" ip addr add "${tunnel_ip[$n]}/32" dev vxlan.calico
      nsx "$ns" ip link set vxlan.calico up
    fi
    # calico-node's cali-nat-outgoing: pool addresses leaving the pool are masqueraded.
    nsx "$ns" iptables -t nat -A POSTROUTING -s 10.123.0.0/16 ! -d 10.123.0.0/16 -j MASQUERADE
  done
  for n in "${nodes[@]}"; do
    for m in "${nodes[@]}"; do
      [ "$n" = "$m" ] && continue
      local ns="$id-n$n"
      if [ "$mode" = vxlan ]; then
        nsx "$ns" ip route add "${block[$m]}" via "${tunnel_ip[$m]}" dev vxlan.calico onlink
        nsx "$ns" ip neigh add "${tunnel_ip[$m]}" lladdr "${vtep_mac[$m]}" dev vxlan.calico nud permanent
        nsx "$ns" bridge fdb append "${vtep_mac[$m]}" dev vxlan.calico dst "${node_ip[$m]}"
      else
        nsx "$ns" ip route add "${block[$m]}" via "${node_ip[$m]}" dev eth0 proto bird
      fi
    done
  done
  for p in "${pods[@]}"; do
    read -r name n addr <<<"$p"
    add_pod "$id" "$name" "$n" "$addr"
  done
  services_up "$id"
  local svc_args
  mapfile -t svc_args < <(service_inventory_args)

  local tunnels="" 
  [ "$mode" != bgp ] && tunnels="$mode"
  python3 "$here/inventory.py" --cni calico --calico-tunnel "${tunnels:-none}" \
    --node "node-a ${node_ip[a]} - ${tunnel_ip[a]}" \
    --node "node-b ${node_ip[b]} - ${tunnel_ip[b]}" \
    --pod "client-a1 node-a 10.123.10.5 client" \
    --pod "peer-a2 node-a 10.123.10.6 peer" \
    --pod "server-b1 node-b 10.123.20.70 server" \
    --pod "old-a3 node-a $reuse_ip client" \
    --pod "new-a4 node-a $reuse_ip client" \
    --pod "remote-b2 node-b 10.123.20.71 client" \
    --ip-pool "$cluster_cidr 26" \
    --ipam-block "${block[a]} node-a" --ipam-block "${block[b]} node-b" \
    "${svc_args[@]}" >"$dir/inventory.json"
  # The pool and the blocks come from Calico's IPPool and IPAMBlock objects in the inventory.
  agent_config "$id" "$dir" calico '' "calico.sh, mode $mode"
}

traffic() {
  local id=$1 pids=()
  mapfile -t pids < <(start_servers "$id" server-b1 peer-a2)
  sleep 1
  local c="$id-client-a1"
  nsx "$c" python3 "$here/echo.py" tcp 10.123.20.70 8080 3      # pod -> pod across nodes (TCP)
  nsx "$c" python3 "$here/echo.py" tcp 10.123.10.6 8080 2       # pod -> pod on the same node
  nsx "$c" python3 "$here/echo.py" tcp "$cluster_ip" 80 4       # pod -> ClusterIP -> remote pod
  nsx "$c" python3 "$here/echo.py" udp 10.123.20.70 5353 5      # pod -> pod across nodes (UDP)
  nsx "$id-na" ping -c 2 -i 0.2 -W 1 10.123.20.70 >/dev/null    # node a -> remote pod
  nsx "$c" python3 "$here/echo.py" tcp "$external_ip" 9000 1    # pod -> external (natOutgoing)
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}

service_stream() {
  local id=$1 n=$2 pids=() i
  mapfile -t pids < <(start_servers "$id" server-b1 peer-a2)
  sleep 1
  for i in $(seq "$n"); do
    nsx "$id-client-a1" python3 "$here/echo.py" tcp "$cluster_ip" 80 1
  done
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}

reuse() {
  local id=$1 pid
  ip netns exec "$id-server-b1" python3 "$here/echo.py" serve-tcp 0.0.0.0 8080 >/dev/null &
  pid=$!
  sleep 1
  # A pod is up a second or more before it talks (the agent attaches to a new veth when netlink reports it).
  add_pod "$id" old-a3 a "$reuse_ip"
  sleep 1
  nsx "$id-old-a3" python3 "$here/echo.py" tcp 10.123.20.70 8080 1
  del_pod "$id" old-a3
  add_pod "$id" new-a4 a "$reuse_ip"
  sleep 1
  nsx "$id-new-a4" python3 "$here/echo.py" tcp 10.123.20.70 8080 2
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

inject_ipip() {
  local id=$1
  python3 "$here/inject.py" ipip --ul "$id-ul" --ul-iface up-a --node "$id-na" --node-iface eth0 \
    --remote-node "$id-nb" --local-outer "${node_ip[a]}" --remote-outer "${node_ip[b]}" \
    --client 10.123.20.71:43000 --server 10.123.10.5:7000 --ping-from "${tunnel_ip[b]}"
}

case "${1:-}" in
  up) up "${2:?id}" "${3:?dir}" "${4:-bgp}" ;;
  traffic) traffic "${2:?id}" ;;
  services) service_traffic "${2:?id}" client-a1 peer-a2 "${node_ip[a]}" "${node_ip[b]}" ;;
  reuse) reuse "${2:?id}" ;;
  service-stream) service_stream "${2:?id}" "${3:?connections}" ;;
  inject-ipip) inject_ipip "${2:?id}" ;;
  down) down "${2:?id}" ;;
  *) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
