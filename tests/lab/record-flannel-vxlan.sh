#!/usr/bin/env bash
# Records real, kernel-encapsulated Flannel VXLAN traffic from a 2-node lab built in network
# namespaces, and writes the kubectl-style inventory that describes it.
#
#   tests/lab/record-flannel-vxlan.sh OUTDIR
#
# The lab is built the way flanneld and the flannel CNI build a node (CNI-RULES.md, "Flannel"):
# cni0 bridge 10.244.N.1/24, flannel.1 VXLAN (VNI 1, UDP 8472, nolearning) at 10.244.N.0/32,
# routes `10.244.M.0/24 via 10.244.M.0 dev flannel.1 onlink`, a permanent ARP entry for the
# remote VTEP, an FDB entry to the remote public IP; kube-proxy-like DNAT for one ClusterIP.
# Every address lives only inside namespaces this script creates; they are removed on exit,
# also on failure. Needs root, iproute2, iptables, tcpdump and python3.
set -euo pipefail

out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
here=$(cd "$(dirname "$0")" && pwd)

id="cs$$"
ul="$id-ul"
nodes=(a b)
declare -A node_ns=([a]="$id-na" [b]="$id-nb")
declare -A node_ip=([a]=192.168.77.11 [b]=192.168.77.12)
declare -A node_net=([a]=10.244.0 [b]=10.244.1)
declare -A vtep_mac=([a]=0a:58:0a:f4:00:00 [b]=0a:58:0a:f4:01:00)
# pods: name node ip
pods=("client-a1 a 10.244.0.2" "peer-a2 a 10.244.0.3" "server-b1 b 10.244.1.2")
cluster_ip=10.96.0.10
pids=()

cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in $(ip netns list | awk '{print $1}' | grep "^$id-" || true); do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

ip netns add "$ul"
nsx "$ul" ip link add br0 type bridge
nsx "$ul" ip link set br0 up
nsx "$ul" ip link set lo up

for n in "${nodes[@]}"; do
  ns=${node_ns[$n]}
  ip netns add "$ns"
  nsx "$ns" ip link set lo up
  nsx "$ns" sysctl -qw net.ipv4.ip_forward=1
  ip link add eth0 netns "$ns" type veth peer name "up-$n" netns "$ul"
  nsx "$ul" ip link set "up-$n" master br0 up
  nsx "$ns" ip addr add "${node_ip[$n]}/24" dev eth0
  nsx "$ns" ip link set eth0 up
  nsx "$ns" ip link add cni0 type bridge
  nsx "$ns" ip addr add "${node_net[$n]}.1/24" dev cni0
  nsx "$ns" ip link set cni0 up
  nsx "$ns" ip link add flannel.1 type vxlan id 1 local "${node_ip[$n]}" dev eth0 dstport 8472 nolearning
  nsx "$ns" ip link set flannel.1 address "${vtep_mac[$n]}"
  nsx "$ns" ip addr add "${node_net[$n]}.0/32" dev flannel.1
  nsx "$ns" ip link set flannel.1 up
done
for n in "${nodes[@]}"; do
  for m in "${nodes[@]}"; do
    [ "$n" = "$m" ] && continue
    ns=${node_ns[$n]}
    nsx "$ns" ip route add "${node_net[$m]}.0/24" via "${node_net[$m]}.0" dev flannel.1 onlink
    nsx "$ns" ip neigh add "${node_net[$m]}.0" lladdr "${vtep_mac[$m]}" dev flannel.1 nud permanent
    nsx "$ns" bridge fdb append "${vtep_mac[$m]}" dev flannel.1 dst "${node_ip[$m]}"
  done
  # flanneld's rule: pods leaving the pod network are masqueraded.
  nsx "${node_ns[$n]}" iptables -t nat -A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE
done

declare -A pod_veth
for p in "${pods[@]}"; do
  read -r name n addr <<<"$p"
  ns="$id-$name"
  veth="veth${name//-/}"
  veth=${veth:0:15}
  pod_veth[$name]=$veth
  ip netns add "$ns"
  nsx "$ns" ip link set lo up
  ip link add "$veth" netns "${node_ns[$n]}" type veth peer name eth0 netns "$ns"
  nsx "${node_ns[$n]}" ip link set "$veth" master cni0 up
  nsx "$ns" ip addr add "$addr/24" dev eth0
  nsx "$ns" ip link set eth0 up
  nsx "$ns" ip route add default via "${node_net[$n]}.1"
done

# kube-proxy (iptables mode) on node a: ClusterIP 10.96.0.10:80 -> server-b1:8080.
nsx "${node_ns[a]}" iptables -t nat -A PREROUTING -d "$cluster_ip" -p tcp --dport 80 -j DNAT --to-destination 10.244.1.2:8080

# Capture points: both pods' veths on node a, both uplinks, the server's veth on node b.
capture() { # ns iface file
  nsx "$1" tcpdump -i "$2" -U -w "$out/$3" -s 256 >/dev/null 2>&1 &
  pids+=($!)
}
capture "${node_ns[a]}" "${pod_veth[client-a1]}" "node-a.client-veth.pcap"
capture "${node_ns[a]}" "${pod_veth[peer-a2]}" "node-a.peer-veth.pcap"
capture "${node_ns[a]}" eth0 "node-a.eth0.pcap"
capture "${node_ns[b]}" eth0 "node-b.eth0.pcap"
capture "${node_ns[b]}" "${pod_veth[server-b1]}" "node-b.server-veth.pcap"
sleep 1.5

# Servers: TCP echo on 8080 in server-b1 and peer-a2, UDP echo on 5353 in server-b1.
nsx "$id-server-b1" python3 "$here/echo.py" serve-tcp 0.0.0.0 8080 &
pids+=($!)
nsx "$id-peer-a2" python3 "$here/echo.py" serve-tcp 0.0.0.0 8080 &
pids+=($!)
nsx "$id-server-b1" python3 "$here/echo.py" serve-udp 0.0.0.0 5353 &
pids+=($!)
sleep 1

c="$id-client-a1"
nsx "$c" python3 "$here/echo.py" tcp 10.244.1.2 8080 3      # pod -> pod across nodes (TCP), 3 round trips
nsx "$c" python3 "$here/echo.py" tcp 10.244.0.3 8080 2      # pod -> pod on the same node
nsx "$c" python3 "$here/echo.py" tcp "$cluster_ip" 80 4     # pod -> ClusterIP -> remote pod
nsx "$c" python3 "$here/echo.py" udp 10.244.1.2 5353 5      # pod -> pod across nodes (UDP), 5 datagrams
nsx "${node_ns[a]}" ping -c 2 -i 0.2 -W 1 10.244.1.2 >/dev/null   # node a -> remote pod (source 10.244.0.0)
sleep 1.5

# The inventory that describes this lab, as `kubectl get ... -o json` would print it.
python3 "$here/inventory.py" \
  --node "node-a ${node_ip[a]} ${node_net[a]}.0/24 ${vtep_mac[a]}" \
  --node "node-b ${node_ip[b]} ${node_net[b]}.0/24 ${vtep_mac[b]}" \
  --pod "client-a1 node-a 10.244.0.2 client" \
  --pod "peer-a2 node-a 10.244.0.3 peer" \
  --pod "server-b1 node-b 10.244.1.2 server" \
  --service "echo $cluster_ip 80 8080" \
  >"$out/inventory.json"
echo "recorded into $out"
