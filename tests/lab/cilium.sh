#!/usr/bin/env bash
# A 2-node Cilium cluster shaped in network namespaces, as the Cilium agent builds a node
# (docs/cni-rules.md, "Cilium"; seed 004): each pod's host-side veth `lxc<hash>` with no
# address and a per-endpoint route; the pod's /32 address and its default route via the
# router address on `cilium_host` (a veth paired with `cilium_net`), which the node answers on
# every interface; no kube-proxy (Cilium's socket LB translates a ClusterIP at connect(), so
# the lab's client dials the backend itself); BPF masquerade to the node address for traffic
# leaving the cluster (an iptables MASQUERADE here).
# Modes:
#   vxlan   cilium_vxlan (UDP 8472) is a collect-metadata VXLAN device, and every packet
#           leaving for the other node is encapsulated with its sender's security identity
#           as the VNI (a policy-routing table per pod whose route sets the tunnel key, the
#           node's own traffic with reserved:host = 1), as Cilium's bpf_lxc/bpf_host do;
#           the inventory also lists billing/ledger-b2 on server-b1's address with a
#           lingering CiliumEndpoint: the VNI says which one answered. Packets for a pod
#           reach it as after bpf_redirect_peer: past its lxc (through a second link into the
#           pod that no probe watches), so each lxc sees only what its pod sends
#   native  routing-mode native with auto-direct-node-routes: `10.0.M.0/24 via <node M>`
#
#   cilium.sh up ID DIR [vxlan|native]  build it; write DIR/inventory.json, DIR/cniscope.toml
#   cilium.sh traffic ID   pod -> pod across nodes (9090), the same node (9090), the socket-LB
#                          shape (client -> server-b1:8080, which service echo lists), pod ->
#                          external host (masquerade), node a pings server-b1 and client-a1
#   cilium.sh down ID      remove every namespace named ID-*
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
declare -A pod_net=([a]=10.0.0 [b]=10.0.1)
# cilium_host (the router, CiliumInternalIP) and the health endpoint's address.
declare -A router=([a]=10.0.0.197 [b]=10.0.1.33)
declare -A health=([a]=10.0.0.80 [b]=10.0.1.81)
declare -A vxlan_mac=([a]=0a:c1:00:00:00:0a [b]=0a:c1:00:00:00:0b)
# pods: name node ip identity app
pods=("client-a1 a 10.0.0.5 48213 client" "peer-a2 a 10.0.0.6 21004 peer" "server-b1 b 10.0.1.9 9120 server")
external_ip=192.168.88.100
svc_net=10.96.0
cluster_cidr=10.0.0.0/16
host_identity=1

lxc_of() { printf 'lxc%s' "$(printf '%s' "$1" | sha256sum | cut -c1-12)"; }
peer_of() { printf 'rdp%s' "$(printf '%s' "$1" | sha256sum | cut -c1-12)"; }

up() {
  local id=$1 dir=$2 mode=${3:-vxlan}
  case "$mode" in vxlan | native) ;; *) echo "unknown mode $mode (vxlan or native)" >&2; exit 2 ;; esac
  mkdir -p "$dir"
  underlay "$id" "$external_ip"
  for n in "${nodes[@]}"; do
    local ns="$id-n$n"
    add_node "$id" "$n" "${node_ip[$n]}"
    nsx "$ns" ip route add default via 192.168.88.1 dev eth0 onlink
    # cilium_host carries the router address; cilium_net is its other end.
    nsx "$ns" ip link add cilium_host type veth peer name cilium_net
    nsx "$ns" ip addr add "${router[$n]}/32" dev cilium_host
    nsx "$ns" ip link set cilium_net up
    nsx "$ns" ip link set cilium_host up
    # The node's own packets to its pods leave through cilium_host (Cilium routes the pod
    # CIDR via it; bpf_host hands them on) and come back in on cilium_net, which must take a
    # packet from the node's own address.
    nsx "$ns" ip route add "${pod_net[$n]}.0/24" dev cilium_host src "${router[$n]}" table 200
    nsx "$ns" ip rule add iif lo to "${pod_net[$n]}.0/24" lookup 200
    nsx "$ns" sysctl -qw net.ipv4.conf.cilium_net.accept_local=1 net.ipv4.conf.cilium_net.proxy_arp=1 net.ipv4.neigh.cilium_net.proxy_delay=0
    # BPF masquerade: pods leaving the cluster take the node's address.
    nsx "$ns" iptables -t nat -A POSTROUTING -s "$cluster_cidr" ! -d "$cluster_cidr" -o eth0 -j MASQUERADE
    if [ "$mode" = vxlan ]; then
      nsx "$ns" ip link add cilium_vxlan type vxlan external dstport 8472
      nsx "$ns" ip link set cilium_vxlan address "${vxlan_mac[$n]}"
      nsx "$ns" ip link set cilium_vxlan up
    fi
  done
  for p in "${pods[@]}"; do
    read -r name n addr _ <<<"$p"
    local ns="$id-$name" lxc
    lxc=$(lxc_of "$name")
    ip netns add "$ns"
    nsx "$ns" ip link set lo up
    ip link add "$lxc" netns "$id-n$n" type veth peer name eth0 netns "$ns"
    nsx "$id-n$n" ip link set "$lxc" up
    local deliver=$lxc
    if [ "$mode" = vxlan ]; then
      # bpf_redirect_peer's shape: what arrives for the pod enters it without crossing the
      # lxc's egress hook.
      deliver=$(peer_of "$name")
      ip link add "$deliver" netns "$id-n$n" type veth peer name peer0 netns "$ns"
      nsx "$id-n$n" ip link set "$deliver" up
      nsx "$ns" ip link set peer0 up
    fi
    nsx "$id-n$n" ip route add "$addr/32" dev "$deliver" src "${router[$n]}"
    nsx "$ns" ip addr add "$addr/32" dev eth0
    nsx "$ns" ip link set eth0 up
    nsx "$ns" ip route add "${router[$n]}" dev eth0 scope link
    nsx "$ns" ip route add default via "${router[$n]}" dev eth0
  done
  for n in "${nodes[@]}"; do
    local m=b
    [ "$n" = b ] && m=a
    local ns="$id-n$n" remote="${pod_net[$m]}.0/24"
    if [ "$mode" = native ]; then
      nsx "$ns" ip route add "$remote" via "${node_ip[$m]}" dev eth0 src "${router[$n]}"
      continue
    fi
    # The other node's router, reached through the tunnel without ARP.
    nsx "$ns" ip neigh add "${router[$m]}" lladdr "${vxlan_mac[$m]}" dev cilium_vxlan nud permanent
    nsx "$ns" ip route add "$remote" via "${router[$m]}" dev cilium_vxlan onlink src "${router[$n]}" \
      encap ip id "$host_identity" dst "${node_ip[$m]}"
    # Each local pod's packets carry its identity: a table per pod, chosen by source.
    local table=100
    for p in "${pods[@]}"; do
      read -r name pn addr identity _ <<<"$p"
      [ "$pn" = "$n" ] || continue
      table=$((table + 1))
      nsx "$ns" ip route add "$remote" via "${router[$m]}" dev cilium_vxlan onlink \
        encap ip id "$identity" dst "${node_ip[$m]}" table "$table"
      nsx "$ns" ip rule add from "$addr" to "$remote" lookup "$table"
    done
  done

  local reuse=()
  [ "$mode" = vxlan ] && reuse=(--pod "ledger-b2 node-b 10.0.1.9 ledger billing" --cilium-endpoint "billing ledger-b2 10.0.1.9 31337" --cilium-identity "31337 billing ledger")
  local args=(--cni cilium)
  for n in "${nodes[@]}"; do
    args+=(--node "node-$n ${node_ip[$n]}" --cilium-node "node-$n ${node_ip[$n]} ${router[$n]} ${health[$n]} ${pod_net[$n]}.0/24")
  done
  for p in "${pods[@]}"; do
    read -r name n addr identity app <<<"$p"
    args+=(--pod "$name node-$n $addr $app" --cilium-endpoint "default $name $addr $identity" --cilium-identity "$identity default $app")
  done
  # Service echo lists server-b1:8080 (port 80 -> 8080): with the socket LB the client's
  # connect() to 10.96.0.10:80 leaves as client -> 10.0.1.9:8080.
  python3 "$here/inventory.py" "${args[@]}" "${reuse[@]}" \
    --service-net "$svc_net" --service "echo 10 80 8080 tcp server ClusterIP - -" >"$dir/inventory.json"
  local option="cluster_cidrs = [\"$cluster_cidr\"]"
  [ "$mode" = native ] && option="routing_mode = \"native\"
$option"
  agent_config "$id" "$dir" cilium "$option" "cilium.sh, mode $mode"
}

traffic() {
  local id=$1 pids=()
  ip netns exec "$id-server-b1" python3 "$here/echo.py" serve-tcp 0.0.0.0 9090 >/dev/null &
  pids+=($!)
  ip netns exec "$id-server-b1" python3 "$here/echo.py" serve-tcp 0.0.0.0 8080 >/dev/null &
  pids+=($!)
  ip netns exec "$id-peer-a2" python3 "$here/echo.py" serve-tcp 0.0.0.0 9090 >/dev/null &
  pids+=($!)
  ip netns exec "$id-ext" python3 "$here/echo.py" serve-tcp 0.0.0.0 9000 >/dev/null &
  pids+=($!)
  sleep 1
  local c="$id-client-a1"
  nsx "$c" python3 "$here/echo.py" tcp 10.0.1.9 9090 3          # pod -> pod across nodes
  nsx "$c" python3 "$here/echo.py" tcp 10.0.0.6 9090 2          # pod -> pod on the same node
  nsx "$c" python3 "$here/echo.py" tcp 10.0.1.9 8080 2          # socket LB: echo's backend, dialled
  nsx "$c" python3 "$here/echo.py" tcp "$external_ip" 9000 1    # pod -> external (masquerade)
  nsx "$id-na" ping -c 2 -i 0.2 -W 1 10.0.1.9 >/dev/null       # node a -> remote pod (cilium_host)
  nsx "$id-na" ping -c 2 -i 0.2 -W 1 10.0.0.5 >/dev/null       # node a -> its own pod
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}

case "${1:-}" in
  up) up "${2:?id}" "${3:?dir}" "${4:-vxlan}" ;;
  traffic) traffic "${2:?id}" ;;
  down) down "${2:?id}" ;;
  *) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
