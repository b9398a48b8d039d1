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
dir = "$root/dist/plugins"

[[plugin]]
name = "$plugin"
[plugin.options]
$option

[replay]
inventory = ["inventory.json"]

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
  nsx "$id-$server" python3 "$here/echo.py" serve-tcp 0.0.0.0 8080 >/dev/null &
  echo $!
  nsx "$id-$peer" python3 "$here/echo.py" serve-tcp 0.0.0.0 8080 >/dev/null &
  echo $!
  nsx "$id-$server" python3 "$here/echo.py" serve-udp 0.0.0.0 5353 >/dev/null &
  echo $!
  nsx "$id-ext" python3 "$here/echo.py" serve-tcp 0.0.0.0 9000 >/dev/null &
  echo $!
}
