#!/usr/bin/env bash
# Soak: the Flannel VXLAN lab with a pod created and one deleted every second (a netns with a
# veth on node a's cni0 that pings across the nodes), steady pod -> pod traffic, and the agent
# (`cniscope run`) capturing throughout. Prints, after a warm-up and at the end, the agent's
# open descriptors, the BPF links it holds, its RSS, the plugin's peak memory and what was
# dropped; fails when descriptors or links grew (each deleted veth must give its links back).
#
#   soak.sh SECONDS [CNISCOPE]     (root; `./x soak [MINUTES]`)
#
# Every address lives only inside namespaces this script creates; all of them go at exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=common.sh
. "$here/common.sh"

secs=${1:?seconds}
bin=${2:-$root/target/release/cniscope}
id="soak$$"
dir=$(mktemp -d)
agent="" pids=()
cleanup() {
  [ -z "$agent" ] || kill "$agent" 2>/dev/null || true
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  bash "$here/flannel.sh" down "$id" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

bash "$here/flannel.sh" up "$id" "$dir" vxlan >/dev/null
"$bin" run -c "$dir/cniscope.toml" -f json >"$dir/final.json" 2>"$dir/agent.log" &
agent=$!
for _ in $(seq 100); do [ -s "$dir/topology.json" ] && break; sleep 0.2; done
[ -s "$dir/topology.json" ] || { cat "$dir/agent.log" >&2; echo "soak: the agent never wrote" >&2; exit 1; }

# Steady traffic: client-a1 -> server-b1 across the nodes, a round trip every 0.2 s.
ip netns exec "$id-server-b1" python3 "$here/echo.py" serve-tcp 0.0.0.0 8080 >/dev/null &
pids+=($!)
( while true; do
    nsx "$id-client-a1" python3 "$here/echo.py" tcp 10.244.1.2 8080 1 >/dev/null 2>&1 || true
    sleep 0.2
  done ) &
pids+=($!)

# Churn: pod i appears (its veth on cni0, an address from node a's range) and pings; pod i-1
# is deleted with its namespace (its veth goes with it).
pod_up() {
  local i=$1 ns="$id-churn$1" veth="vethchurn$1"
  ip netns add "$ns"
  ip link add "$veth" netns "$id-na" type veth peer name eth0 netns "$ns"
  nsx "$id-na" ip link set "$veth" master cni0 up
  nsx "$ns" ip link set lo up
  nsx "$ns" ip addr add "10.244.0.$((10 + i % 200))/24" dev eth0
  nsx "$ns" ip link set eth0 up
  nsx "$ns" ip route add default via 10.244.0.1
  nsx "$ns" ping -c 1 -W 1 10.244.1.2 >/dev/null 2>&1 || true
}
pod_down() { ip netns del "$id-churn$1" 2>/dev/null || true; }

measure() { # label
  local fds links rss plugin drops
  fds=$(find "/proc/$agent/fd" -mindepth 1 | wc -l)
  links=$(grep -l '^link_id:' "/proc/$agent"/fdinfo/* 2>/dev/null | wc -l)
  rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$agent/status")
  read -r plugin drops < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
h = d["health"]
peak = max((p["peak_memory_bytes"] for p in h["plugins"].values()), default=0)
print(peak, sum(h["drops"].values()))' "$dir/topology.json")
  printf '%-6s descriptors %4d  links %3d  agent RSS %7d KiB  plugin memory %9d B  dropped %d\n' \
    "$1" "$fds" "$links" "$rss" "$plugin" "$drops"
  echo "$fds $links $rss" >"$dir/$1"
}

i=0
churn_for() { # seconds
  local until=$((SECONDS + $1))
  while [ $SECONDS -lt $until ]; do
    pod_up "$i"
    [ $i -eq 0 ] || pod_down $((i - 1))
    i=$((i + 1))
    sleep 1
  done
}
warmup=$((secs < 20 ? 5 : 10))
churn_for "$warmup"
sleep 1.5 # a window written after the warm-up
measure start
churn_for $((secs - warmup))
pod_down $((i - 1))
sleep 3 # the last pod's links given back, a window written
measure end
echo "pods created and deleted: $i"

read -r fds0 links0 rss0 <"$dir/start"
read -r fds1 links1 rss1 <"$dir/end"
kill -0 "$agent" 2>/dev/null || { cat "$dir/agent.log" >&2; echo "soak: the agent died" >&2; exit 1; }
status=0
# At the start one churn pod is up (2 links, 2 descriptors); at the end none.
if [ "$fds1" -gt "$fds0" ]; then echo "soak: descriptors grew from $fds0 to $fds1" >&2; status=1; fi
if [ "$links1" -gt "$links0" ]; then echo "soak: links grew from $links0 to $links1" >&2; status=1; fi
# Memory: a little growth is the allocator's; a leak per pod is more than this.
if [ "$rss1" -gt $((rss0 + rss0 / 4 + 8192)) ]; then
  echo "soak: RSS grew from $rss0 to $rss1 KiB" >&2
  status=1
fi
[ $status -ne 0 ] || echo "flat"
exit $status
