#!/usr/bin/env bash
# A 2-node Flannel cluster in network namespaces, built the way flanneld and the flannel CNI
# build a node (docs/cni-rules.md, "Flannel"): cni0 bridge 10.244.N.1/24 with the pods' veths,
# flanneld's MASQUERADE rule, and kube-proxy's rules for the service shapes of common.sh's
# lab_services (ClusterIPs, masqueradeAll, NodePorts with externalTrafficPolicy Cluster and
# Local, a load-balancer IP routed to node a, hairpin, headless, no endpoints).
# Backends:
#   vxlan    flannel.1 VXLAN (VNI 1, UDP 8472, nolearning) at 10.244.N.0/32, routes
#            `10.244.M.0/24 via 10.244.M.0 dev flannel.1 onlink`, a permanent ARP entry and an
#            FDB entry per remote VTEP.
#   host-gw  no tunnel: `10.244.M.0/24 via <node M IP> dev eth0`.
#   kata     vxlan, plus a Kata peer pod (seed 003): web-vm (10.244.1.5) on node b has the
#            CNI's eth0 in its worker-side namespace and a vxlan1 (VNI 555005, UDP 4789)
#            whose socket stays in node b's namespace; TC mirrors eth0's ingress to vxlan1
#            and back, so its traffic leaves node b's uplink to the pod VM (192.168.77.50, a
#            namespace on the underlay) whose inner namespace holds the pod's address on
#            vxlan0 with eth0's MAC. The agent config loads the flannel and kata plugins.
#   fault-drop      vxlan, with an iptables DROP in node b's FORWARD chain for server-b1's
#                   TCP 8080 (issue #18's failure 2): its traffic is a connection that dies there.
#   fault-no-route  vxlan, with node a's routes to node b's pod CIDR and beyond removed
#                   (failure 3): client-a1's connection to server-b1 dies on node a.
#   fault-mtu       vxlan, with the underlay's MTU 1400 under eth0's 1500 (failure 4): small
#                   exchanges get through, a large transfer's full-size packets vanish
#                   between the two uplinks.
#   fault-kata-mac  kata, with seed 003's own failure (issue #18's failure 1): the pod VM's
#                   vxlan0 keeps a MAC of its own while node b holds the worker-side eth0's
#                   (as the CNI's static ARP would): node b's pings reach vxlan0 addressed to
#                   another host and the VM's kernel throws them away. `flannel.sh fix ID`
#                   fixes it the way the article did (vxlan0 takes eth0's MAC).
#
#   flannel.sh up ID DIR [vxlan|host-gw]  build it (names start with ID-); write DIR/inventory.json
#                                   and DIR/cniscope.toml (an agent config for these nodes)
#   flannel.sh traffic ID           the known traffic (pod->pod, same node, both ClusterIPs, UDP,
#                                   ping, pod->external host through flanneld's MASQUERADE)
#   flannel.sh services ID          one connection per service shape (common.sh service_traffic)
#   flannel.sh down ID              remove every namespace named ID-*
#   flannel.sh fix ID               fault-kata-mac's fix: vxlan0 takes the worker-side eth0's MAC
#   flannel.sh record DIR           up (vxlan), tcpdump on 5 points, traffic, down:
#                                   tests/data/flannel-vxlan
#
# Every address lives only inside namespaces this script creates. Needs root, iproute2,
# iptables, tcpdump (record) and python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=common.sh
. "$here/common.sh"

nodes=(a b)
declare -A node_ip=([a]=192.168.77.11 [b]=192.168.77.12)
declare -A node_net=([a]=10.244.0 [b]=10.244.1)
declare -A vtep_mac=([a]=0a:58:0a:f4:00:00 [b]=0a:58:0a:f4:01:00)
# pods: name node ip
pods=("client-a1 a 10.244.0.2" "peer-a2 a 10.244.0.3" "server-b1 b 10.244.1.2")
# Services (common.sh lab_services) in 10.96.0.0/24; the load balancer's IP is routed to node a.
svc_net=10.96.0
cluster_ip=$svc_net.10
masq_cluster_ip=$svc_net.20
lb_ip=192.168.99.200
cluster_cidr=10.244.0.0/16
declare -A backend_ip=([server]=10.244.1.2 [peer]=10.244.0.3)
declare -A backend_node=([server]=b [peer]=a)
# A host outside the cluster, on the nodes' underlay network.
external_ip=192.168.77.100

veth_of() { local v="veth${1//-/}"; echo "${v:0:15}"; }

up() {
  local id=$1 dir=$2 backend=${3:-vxlan}
  case "$backend" in vxlan | host-gw | kata | fault-drop | fault-no-route | fault-mtu | fault-kata-mac) ;; *) echo "unknown backend $backend (vxlan, host-gw, kata, fault-drop, fault-no-route, fault-mtu, fault-kata-mac)" >&2; exit 2 ;; esac
  local kata="" fault=""
  [ "$backend" = kata ] && kata=1 && backend=vxlan
  [ "$backend" = fault-kata-mac ] && kata=1
  case "$backend" in fault-*) fault=${backend#fault-} && backend=vxlan ;; esac
  mkdir -p "$dir"
  underlay "$id" "$external_ip"
  for n in "${nodes[@]}"; do
    local ns="$id-n$n"
    add_node "$id" "$n" "${node_ip[$n]}"
    # The underlay's router (absent: nothing here leaves the lab).
    nsx "$ns" ip route add default via 192.168.77.1 dev eth0 onlink
    nsx "$ns" ip link add cni0 type bridge
    nsx "$ns" ip addr add "${node_net[$n]}.1/24" dev cni0
    nsx "$ns" ip link set cni0 up
    [ "$backend" = vxlan ] || continue
    nsx "$ns" ip link add flannel.1 type vxlan id 1 local "${node_ip[$n]}" dev eth0 dstport 8472 nolearning
    nsx "$ns" ip link set flannel.1 address "${vtep_mac[$n]}"
    nsx "$ns" ip addr add "${node_net[$n]}.0/32" dev flannel.1
    nsx "$ns" ip link set flannel.1 up
  done
  for n in "${nodes[@]}"; do
    for m in "${nodes[@]}"; do
      [ "$n" = "$m" ] && continue
      local ns="$id-n$n"
      if [ "$backend" = host-gw ]; then
        nsx "$ns" ip route add "${node_net[$m]}.0/24" via "${node_ip[$m]}" dev eth0
        continue
      fi
      nsx "$ns" ip route add "${node_net[$m]}.0/24" via "${node_net[$m]}.0" dev flannel.1 onlink
      nsx "$ns" ip neigh add "${node_net[$m]}.0" lladdr "${vtep_mac[$m]}" dev flannel.1 nud permanent
      nsx "$ns" bridge fdb append "${vtep_mac[$m]}" dev flannel.1 dst "${node_ip[$m]}"
    done
    # flanneld's rule: pods leaving the pod network are masqueraded.
    nsx "$id-n$n" iptables -t nat -A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE
  done
  for p in "${pods[@]}"; do
    read -r name n addr <<<"$p"
    local ns="$id-$name" veth
    veth=$(veth_of "$name")
    ip netns add "$ns"
    nsx "$ns" ip link set lo up
    ip link add "$veth" netns "$id-n$n" type veth peer name eth0 netns "$ns"
    nsx "$id-n$n" ip link set "$veth" master cni0 up
    # The flannel CNI's hairpinMode: a pod reaching itself through a service comes back out
    # of its own bridge port.
    nsx "$id-n$n" bridge link set dev "$veth" hairpin on
    nsx "$ns" ip addr add "$addr/24" dev eth0
    nsx "$ns" ip link set eth0 up
    nsx "$ns" ip route add default via "${node_net[$n]}.1"
  done
  services_up "$id"
  local peer_pod=()
  if [ -n "$kata" ]; then
    peer_pod_up "$id" "$fault"
    peer_pod=(--pod "web-vm node-b $peer_pod_ip web")
  fi
  local svc_args
  mapfile -t svc_args < <(service_inventory_args)
  python3 "$here/inventory.py" --backend "$backend" \
    --node "node-a ${node_ip[a]} ${node_net[a]}.0/24 ${vtep_mac[a]}" \
    --node "node-b ${node_ip[b]} ${node_net[b]}.0/24 ${vtep_mac[b]}" \
    --pod "client-a1 node-a 10.244.0.2 client" \
    --pod "peer-a2 node-a 10.244.0.3 peer" \
    --pod "server-b1 node-b 10.244.1.2 server" \
    "${peer_pod[@]}" "${svc_args[@]}" >"$dir/inventory.json"
  agent_config "$id" "$dir" flannel 'network = "10.244.0.0/16"' "flannel.sh, backend ${kata:+kata on }$backend"
  if [ -n "$kata" ]; then
    printf '\n# Kata peer-pods, composed with flannel: one edge per connection.\n[[plugin]]\nname = "kata"\n' >>"$dir/cniscope.toml"
    # An agent in the pod VM names itself as the cloud-api-adaptor names the VM.
    printf '\n# The pod VM of web-vm: where its vxlan0 is.\n[[agent.node]]\nname = "podvm-web-vm"\nnetns = "%s-vm-pod"\n' "$id" >>"$dir/cniscope.toml"
  fi
  [ -z "$fault" ] || fault_up "$id" "$fault"
}

# fault_up ID KIND: breaks the built lab the way KIND says (the header's fault-* backends).
# An empty namespace ID-fault-KIND marks it, for `traffic` (and `down` removes it).
fault_up() {
  local id=$1 kind=$2
  case "$kind" in
    drop) nsx "$id-nb" iptables -I FORWARD -d 10.244.1.2 -p tcp --dport 8080 -j DROP ;;
    no-route)
      nsx "$id-na" ip route del "${node_net[b]}.0/24"
      nsx "$id-na" ip route del default
      ;;
    kata-mac)
      # The CNI answers for its pods' addresses with their eth0's MAC (OVN's logical port,
      # a static ARP entry): node b's neighbour entry for the peer pod is eth0's, never
      # learnt from the VM's vxlan0.
      nsx "$id-nb" ip neigh replace "$peer_pod_ip" lladdr "$(nsx "$id-web-vm" cat /sys/class/net/eth0/address)" dev cni0 nud permanent
      ;;
    mtu)
      # flannel.1 keeps the 1450 it took from eth0's 1500; the underlay's ports take 1400
      # and drop what is larger (a veth drops frames over its peer's MTU). A segmentation
      # offload's super-packet passes a veth whole, so the pods and nodes make none: every
      # full-size packet is one on the wire, as on a NIC.
      for n in "${nodes[@]}"; do
        nsx "$id-ul" ip link set "up-$n" mtu 1400
        nsx "$id-n$n" ip link set eth0 gso_max_size 1500
        nsx "$id-n$n" ip link set flannel.1 gso_max_size 1500
      done
      for p in "${pods[@]}"; do
        read -r name _ _ <<<"$p"
        nsx "$id-$name" ip link set eth0 gso_max_size 1500
      done
      ;;
  esac
  ip netns add "$id-fault-$kind"
}

# fault_traffic ID KIND: the connections the fault breaks, and healthy ones beside them.
fault_traffic() {
  local id=$1 kind=$2 pids=() c="$1-client-a1"
  mapfile -t pids < <(start_servers "$id" server-b1 peer-a2)
  ip netns exec "$id-server-b1" python3 "$here/echo.py" serve-tcp 0.0.0.0 7000 >/dev/null &
  pids+=($!)
  sleep 1
  nsx "$c" python3 "$here/echo.py" tcp 10.244.0.3 8080 2          # same node: healthy
  case "$kind" in
    drop)
      nsx "$c" python3 "$here/echo.py" unanswered 10.244.1.2 8080 2.5 # SYN, retransmits: DROPped on node b
      nsx "$c" python3 "$here/echo.py" udp 10.244.1.2 5353 3          # other traffic to the pod: healthy
      ;;
    no-route)
      nsx "$c" python3 "$here/echo.py" unanswered 10.244.1.2 8080 2.5 # no route on node a
      ;;
    kata-mac)
      nsx "$c" python3 "$here/echo.py" tcp 10.244.1.2 8080 2           # the CNI: healthy
      nsx "$id-nb" ping -c 3 -i 0.3 -W 1 "$peer_pod_ip" >/dev/null || true # the node pings the peer pod
      ;;
    mtu)
      nsx "$c" python3 "$here/echo.py" tcp 10.244.1.2 8080 3           # small: healthy
      nsx "$c" python3 "$here/echo.py" bulk 10.244.1.2 7000 200000 3   # large: black-holed
      ;;
  esac
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}

# The Kata peer pod web-vm on node b and its pod VM (seed 003's shape).
peer_pod_ip=10.244.1.5
vm_ip=192.168.77.50
peer_pod_vni=555005
peer_pod_up() {
  local id=$1 fault=${2:-} ns="$1-web-vm" vm="$1-vm" vm_pod="$1-vm-pod" veth
  veth=$(veth_of web-vm)
  ip netns add "$ns"
  nsx "$ns" ip link set lo up
  ip link add "$veth" netns "$id-nb" type veth peer name eth0 netns "$ns"
  nsx "$id-nb" ip link set "$veth" master cni0 up
  nsx "$ns" ip addr add "$peer_pod_ip/24" dev eth0
  nsx "$ns" ip link set eth0 up
  # vxlan1's socket stays in the node's namespace (x-netns): the tunnel leaves its uplink.
  nsx "$id-nb" ip link add vxlan1 type vxlan id "$peer_pod_vni" remote "$vm_ip" dstport 4789 dev eth0 nolearning
  nsx "$id-nb" ip link set vxlan1 netns "$ns"
  nsx "$ns" ip link set vxlan1 up
  for pair in "eth0 vxlan1" "vxlan1 eth0"; do
    read -r from to <<<"$pair"
    nsx "$ns" tc qdisc add dev "$from" clsact
    nsx "$ns" tc filter add dev "$from" ingress protocol all u32 match u32 0 0 action mirred egress redirect dev "$to"
  done
  # The pod VM on the nodes' network; the pod's address lives in a namespace inside it.
  ip netns add "$vm"
  nsx "$vm" ip link set lo up
  ip link add eth0 netns "$vm" type veth peer name up-vm netns "$id-ul"
  nsx "$id-ul" ip link set up-vm master br0 up
  nsx "$vm" ip addr add "$vm_ip/24" dev eth0
  nsx "$vm" ip link set eth0 up
  nsx "$vm" ip link add vxlan0 type vxlan id "$peer_pod_vni" remote "${node_ip[b]}" dstport 4789 dev eth0 nolearning
  ip netns add "$vm_pod"
  nsx "$vm_pod" ip link set lo up
  nsx "$vm" ip link set vxlan0 netns "$vm_pod"
  # The worker-side eth0's MAC on vxlan0, or the node's ARP entry would name the wrong one
  # (unless this is the fault that forgets it).
  [ "$fault" = kata-mac ] || fix_kata_mac "$id"
  nsx "$vm_pod" ip addr add "$peer_pod_ip/24" dev vxlan0
  nsx "$vm_pod" ip link set vxlan0 up
  nsx "$vm_pod" ip route add default via "${node_net[b]}.1"
}

# fix_kata_mac ID: the pod VM's vxlan0 takes the worker-side eth0's MAC (seed 003's fix).
fix_kata_mac() {
  local id=$1
  nsx "$id-vm-pod" ip link set vxlan0 address "$(nsx "$id-web-vm" cat /sys/class/net/eth0/address)"
}

# kata_traffic ID: pod -> peer pod across nodes (TCP, 3 rounds), server-b1 (same node) pings it.
kata_traffic() {
  local id=$1 pid
  ip netns exec "$id-vm-pod" python3 "$here/echo.py" serve-tcp 0.0.0.0 8080 >/dev/null &
  pid=$!
  sleep 1
  nsx "$id-client-a1" python3 "$here/echo.py" tcp "$peer_pod_ip" 8080 3
  nsx "$id-server-b1" ping -c 2 -i 0.2 -W 1 "$peer_pod_ip" >/dev/null
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

traffic() {
  local id=$1 pids=() kind
  for kind in drop no-route mtu kata-mac; do
    if ip netns list | grep -q "^$id-fault-$kind"; then
      fault_traffic "$id" "$kind"
      return
    fi
  done
  mapfile -t pids < <(start_servers "$id" server-b1 peer-a2)
  sleep 1
  local c="$id-client-a1"
  nsx "$c" python3 "$here/echo.py" tcp 10.244.1.2 8080 3      # pod -> pod across nodes (TCP), 3 round trips
  nsx "$c" python3 "$here/echo.py" tcp 10.244.0.3 8080 2      # pod -> pod on the same node
  nsx "$c" python3 "$here/echo.py" tcp "$cluster_ip" 80 4     # pod -> ClusterIP -> remote pod
  nsx "$c" python3 "$here/echo.py" tcp "$masq_cluster_ip" 80 2 # ... through masqueradeAll's SNAT
  nsx "$c" python3 "$here/echo.py" udp 10.244.1.2 5353 5      # pod -> pod across nodes (UDP), 5 datagrams
  nsx "$id-na" ping -c 2 -i 0.2 -W 1 10.244.1.2 >/dev/null   # node a -> remote pod (source 10.244.0.0 or node IP)
  nsx "$c" python3 "$here/echo.py" tcp "$external_ip" 9000 1  # pod -> external (MASQUERADE to node a)
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  if ip netns list | grep -q "^$id-vm-pod"; then
    kata_traffic "$id"
  fi
}

record() {
  local dir=$1 id="cs$$" pids=()
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  trap 'kill "${pids[@]}" 2>/dev/null || true; down '"$id" EXIT
  up "$id" "$dir" vxlan
  rm -f "$dir/cniscope.toml"
  capture() { # ns iface file
    nsx "$1" tcpdump -i "$2" -U -w "$dir/$3" -s 256 >/dev/null 2>&1 &
    pids+=($!)
  }
  capture "$id-na" "$(veth_of client-a1)" node-a.client-veth.pcap
  capture "$id-na" "$(veth_of peer-a2)" node-a.peer-veth.pcap
  capture "$id-na" eth0 node-a.eth0.pcap
  capture "$id-nb" eth0 node-b.eth0.pcap
  capture "$id-nb" "$(veth_of server-b1)" node-b.server-veth.pcap
  sleep 1.5
  traffic "$id"
  sleep 1.5
  echo "recorded into $dir"
}

case "${1:-}" in
  up) up "${2:?id}" "${3:?dir}" "${4:-vxlan}" ;;
  traffic) traffic "${2:?id}" ;;
  services) service_traffic "${2:?id}" client-a1 peer-a2 "${node_ip[a]}" "${node_ip[b]}" ;;
  down) down "${2:?id}" ;;
  fix) fix_kata_mac "${2:?id}" ;;
  record) record "${2:?dir}" ;;
  *) sed -n '2,42p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
