# Shared by the lab scripts (sourced): namespace helpers, the underlay with an external host,
# teardown, and the agent config every lab writes.

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# down ID: remove every namespace named ID-* and the processes in them.
down() {
  local id=$1
  for ns in $(ip netns list | awk '{print $1}' | grep "^$id-" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
}

# bench_agent BIN DIR SETTINGS: the benches' agent: BIN run on DIR/cniscope.toml.orig with
# SETTINGS (lines for [agent], \n-separated) added, output in DIR/final.json; returns once its
# probes are attached (its first topology is written). Sets agent_pid.
bench_agent() {
  local bin=$1 dir=$2
  cp "$dir/cniscope.toml.orig" "$dir/cniscope.toml"
  rm -f "$dir/topology.json"
  sed -i "s/^interval_secs = 1\$/interval_secs = 1\n$3/" "$dir/cniscope.toml"
  "$bin" run --config "$dir/cniscope.toml" --format json >"$dir/final.json" 2>"$dir/agent.err" &
  agent_pid=$!
  while [ ! -e "$dir/topology.json" ]; do
    kill -0 "$agent_pid" 2>/dev/null || { cat "$dir/agent.err"; exit 1; }
    sleep 0.2
  done
}

# underlay ID EXTERNAL_IP: the nodes' L2 network (bridge br0 in ID-ul) with a host outside
# the cluster (ID-ext) on it.
underlay() {
  local id=$1 ext_ip=$2 ul="$1-ul"
  ip netns add "$ul"
  nsx "$ul" ip link add br0 type bridge
  nsx "$ul" ip link set br0 up
  nsx "$ul" ip link set lo up
  ip netns add "$id-ext"
  nsx "$id-ext" ip link set lo up
  ip link add eth0 netns "$id-ext" type veth peer name up-ext netns "$ul"
  nsx "$ul" ip link set up-ext master br0 up
  nsx "$id-ext" ip addr add "$ext_ip/24" dev eth0
  nsx "$id-ext" ip link set eth0 up
}

# add_node ID N IP: node namespace ID-nN with eth0 (IP/24) on the underlay, forwarding on.
add_node() {
  local id=$1 n=$2 addr=$3 ns="$1-n$2"
  ip netns add "$ns"
  nsx "$ns" ip link set lo up
  nsx "$ns" sysctl -qw net.ipv4.ip_forward=1
  ip link add eth0 netns "$ns" type veth peer name "up-$n" netns "$id-ul"
  nsx "$id-ul" ip link set "up-$n" master br0 up
  nsx "$ns" ip addr add "$addr/24" dev eth0
  nsx "$ns" ip link set eth0 up
}

# agent_config ID DIR PLUGIN OPTION_LINE SCRIPT: DIR/cniscope.toml for nodes a and b.
agent_config() {
  local id=$1 dir=$2 plugin=$3 option=$4 script=$5
  cat >"$dir/cniscope.toml" <<EOT
# Agent config for lab $id (written by tests/lab/$script).
[plugins]
dir = "${CNISCOPE_PLUGINS_DIR:-$root/dist/plugins}"

[[plugin]]
name = "$plugin"
[plugin.options]
$option

[inventory]
files = ["inventory.json"]

[agent]
interval_secs = 1
output_file = "topology.json"

[[agent.node]]
name = "node-a"
netns = "$id-na"

[[agent.node]]
name = "node-b"
netns = "$id-nb"
EOT
}

# start_servers ID SERVER PEER: TCP echo on 8080 in SERVER and PEER, UDP echo on 5353 in
# SERVER, TCP echo on 9000 on the external host; prints their pids.
start_servers() {
  local id=$1 server=$2 peer=$3
  # `ip netns exec` directly (see service_traffic).
  ip netns exec "$id-$server" python3 "$here/echo.py" serve-tcp 0.0.0.0 8080 >/dev/null &
  echo $!
  ip netns exec "$id-$peer" python3 "$here/echo.py" serve-tcp 0.0.0.0 8080 >/dev/null &
  echo $!
  ip netns exec "$id-$server" python3 "$here/echo.py" serve-udp 0.0.0.0 5353 >/dev/null &
  echo $!
  ip netns exec "$id-ext" python3 "$here/echo.py" serve-tcp 0.0.0.0 9000 >/dev/null &
  echo $!
}

# The labs' services, one per line (docs/cni-rules.md, "Services"):
#   name  ClusterIP (last octet of $svc_net, None = headless)  port  targetPort  protocol
#   backend (pods labelled app=<backend>, - = none)  type  nodePort (- = none)
#   policy: externalTrafficPolicy, or masquerade-all for kube-proxy's --masquerade-all
# Two services (echo, echo-alt) select the same pods; echo's port differs from its targetPort;
# dns is UDP, like a cluster's DNS service.
lab_services() {
  cat <<'EOT'
echo 10 80 8080 tcp server ClusterIP - -
echo-alt 11 80 8080 tcp server ClusterIP - -
echo-masq 20 80 8080 tcp server ClusterIP - masquerade-all
web-np 30 8080 8080 tcp server NodePort 30080 Cluster
web-local 31 8080 8080 tcp server NodePort 30081 Local
web-lb 32 80 8080 tcp server LoadBalancer 30082 Cluster
peer 40 80 8080 tcp peer ClusterIP - -
echo-headless None 7000 7000 tcp server ClusterIP - -
empty 60 80 8080 tcp - ClusterIP - -
dns 53 53 5353 udp server ClusterIP - -
EOT
}

# service_inventory_args: inventory.py's arguments for lab_services.
service_inventory_args() {
  echo "--service-net"
  echo "$svc_net"
  echo "--lb-ip"
  echo "$lb_ip"
  local line
  while read -r line; do
    echo "--service"
    echo "$line"
  done < <(lab_services)
}

# kube_proxy ID N: the nat and filter rules kube-proxy (iptables mode) writes on node N for
# lab_services: KUBE-SERVICES from PREROUTING and OUTPUT, KUBE-MARK-MASQ (0x4000) and
# KUBE-POSTROUTING's MASQUERADE, a KUBE-SVC/KUBE-SEP pair per service (the SEP marks hairpin
# traffic, a pod reaching itself), KUBE-EXT for NodePorts and load-balancer IPs (marked for
# SNAT with externalTrafficPolicy Cluster; with Local, external clients go only to this
# node's endpoints, unmarked, and nodes without one drop them), NodePorts on every local
# address (--dst-type LOCAL), and a REJECT for a service without endpoints.
# Needs $svc_net, $cluster_cidr, $lb_ip, backend_ip[app] and backend_node[app].
kube_proxy() {
  local id=$1 n=$2 name ip port target proto backend type node_port policy
  local nat=() filter=()
  nat+=(":KUBE-SERVICES - [0:0]" ":KUBE-NODEPORTS - [0:0]" ":KUBE-POSTROUTING - [0:0]" ":KUBE-MARK-MASQ - [0:0]")
  nat+=("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES")
  nat+=("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES")
  nat+=("-I POSTROUTING 1 -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING")
  nat+=("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000")
  nat+=("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN")
  nat+=("-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000")
  nat+=("-A KUBE-POSTROUTING -j MASQUERADE")
  filter+=(":KUBE-SERVICES - [0:0]" ":KUBE-EXTERNAL-SERVICES - [0:0]")
  filter+=("-A FORWARD -m conntrack --ctstate NEW -j KUBE-SERVICES")
  filter+=("-A OUTPUT -m conntrack --ctstate NEW -j KUBE-SERVICES")
  filter+=("-A INPUT -m conntrack --ctstate NEW -j KUBE-EXTERNAL-SERVICES")
  filter+=("-A FORWARD -m conntrack --ctstate NEW -j KUBE-EXTERNAL-SERVICES")
  while read -r name ip port target proto backend type node_port policy; do
    [ "$ip" = None ] && continue # headless: no rules, clients reach the pods directly
    local cip="$svc_net.$ip" up="${name^^}"
    local svc="KUBE-SVC-$up" sep="KUBE-SEP-$up" ext="KUBE-EXT-$up"
    if [ "$backend" = - ]; then
      filter+=("-A KUBE-SERVICES -d $cip/32 -p $proto -m comment --comment \"default/$name:$proto has no endpoints\" -m $proto --dport $port -j REJECT --reject-with icmp-port-unreachable")
      continue
    fi
    local bip=${backend_ip[$backend]}
    nat+=(":$svc - [0:0]" ":$sep - [0:0]")
    nat+=("-A KUBE-SERVICES -d $cip/32 -p $proto -m comment --comment \"default/$name:$proto cluster IP\" -m $proto --dport $port -j $svc")
    if [ "$policy" = masquerade-all ]; then
      nat+=("-A $svc -d $cip/32 -p $proto -m $proto --dport $port -j KUBE-MARK-MASQ")
    else
      nat+=("-A $svc ! -s $cluster_cidr -d $cip/32 -p $proto -m $proto --dport $port -j KUBE-MARK-MASQ")
    fi
    nat+=("-A $svc -j $sep")
    nat+=("-A $sep -s $bip/32 -j KUBE-MARK-MASQ")
    nat+=("-A $sep -p $proto -m $proto -j DNAT --to-destination $bip:$target")
    [ "$node_port" = - ] && continue
    nat+=(":$ext - [0:0]")
    nat+=("-A KUBE-NODEPORTS -p $proto -m comment --comment \"default/$name:$proto\" -m $proto --dport $node_port -j $ext")
    if [ "$type" = LoadBalancer ]; then
      nat+=("-A KUBE-SERVICES -d $lb_ip/32 -p $proto -m comment --comment \"default/$name:$proto loadbalancer IP\" -m $proto --dport $port -j $ext")
    fi
    if [ "$policy" = Local ]; then
      # Pods and the node itself take the cluster-wide path; external clients keep their
      # address and reach only this node's endpoints.
      nat+=("-A $ext -s $cluster_cidr -j $svc")
      nat+=("-A $ext -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ")
      nat+=("-A $ext -m addrtype --src-type LOCAL -j $svc")
      if [ "${backend_node[$backend]}" = "$n" ]; then
        nat+=("-A $ext -j $sep")
      else
        filter+=("-A KUBE-EXTERNAL-SERVICES -p $proto -m comment --comment \"default/$name:$proto has no local endpoints\" -m addrtype --dst-type LOCAL -m $proto --dport $node_port -j DROP")
      fi
    else
      nat+=("-A $ext -j KUBE-MARK-MASQ")
      nat+=("-A $ext -j $svc")
    fi
  done < <(lab_services)
  nat+=("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")
  { echo "*nat"; printf '%s\n' "${nat[@]}"; echo COMMIT; echo "*filter"; printf '%s\n' "${filter[@]}"; echo COMMIT; } |
    nsx "$id-n$n" iptables-restore --noflush
}

# services_up ID: kube-proxy on every node, and the load balancer's route to node a.
services_up() {
  local id=$1 n
  for n in "${nodes[@]}"; do
    kube_proxy "$id" "$n"
  done
  # The load balancer sends its IP's traffic to node a (as MetalLB's L2 or BGP mode would).
  nsx "$id-ext" ip route add "$lb_ip/32" via "${node_ip[a]}"
}

# service_traffic ID CLIENT PEER NODE_A_IP NODE_B_IP: one connection per service shape, from
# the client pod, the peer pod (hairpin) and the external host (NodePorts, load balancer).
# Servers: TCP echo on 8080 and 7000 and UDP echo on 5353 in server-b1, TCP echo on 8080 in PEER.
service_traffic() {
  local id=$1 client=$2 peer=$3 a_ip=$4 b_ip=$5 pids=() c="$1-$2"
  # `ip netns exec` directly, not through nsx: $! is then the server itself (ip execs it),
  # and killing it closes the output pipes a caller may be reading.
  ip netns exec "$id-server-b1" python3 "$here/echo.py" serve-tcp 0.0.0.0 8080 >/dev/null &
  pids+=($!)
  ip netns exec "$id-server-b1" python3 "$here/echo.py" serve-tcp 0.0.0.0 7000 >/dev/null &
  pids+=($!)
  ip netns exec "$id-$peer" python3 "$here/echo.py" serve-tcp 0.0.0.0 8080 >/dev/null &
  pids+=($!)
  ip netns exec "$id-server-b1" python3 "$here/echo.py" serve-udp 0.0.0.0 5353 >/dev/null &
  pids+=($!)
  sleep 1
  nsx "$c" python3 "$here/echo.py" tcp "$svc_net.10" 80 3            # ClusterIP, port 80 -> 8080
  nsx "$c" python3 "$here/echo.py" tcp "$svc_net.11" 80 2            # a second service, same pods
  nsx "$id-ext" python3 "$here/echo.py" tcp "$a_ip" 30080 2          # NodePort, Cluster: DNAT + SNAT
  nsx "$id-ext" python3 "$here/echo.py" tcp "$b_ip" 30081 2          # NodePort, Local: DNAT only
  nsx "$id-ext" python3 "$here/echo.py" tcp "$lb_ip" 80 1            # LoadBalancer IP, Cluster
  nsx "$id-$peer" python3 "$here/echo.py" tcp "$svc_net.40" 80 2     # hairpin: peer to itself
  nsx "$c" python3 "$here/echo.py" tcp "${backend_ip[server]}" 7000 1 # headless: straight to the pod
  nsx "$c" python3 "$here/echo.py" refused "$svc_net.60" 80          # no endpoints: REJECT
  nsx "$c" python3 "$here/echo.py" udp "$svc_net.53" 53 3            # UDP ClusterIP (DNS-like)
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
