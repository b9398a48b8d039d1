#!/usr/bin/env bash
# The kernel drop program's cost (root), on the Flannel lab with the agent running:
#  1. healthy traffic: iperf3 TCP throughput between pods on different nodes with the drop
#     program off and on (agent.kernel_drops), as a ratio; nothing drops, so the program
#     should cost nothing here;
#  2. a drop flood: UDP datagrams at full speed (one sender) into an iptables DROP on the server's node (every
#     packet freed with NETFILTER_DROP, every one a matched event the agent decodes): the
#     datagrams sent per second with the program off and on, as a ratio, and the program's
#     own time per event from the kernel's bpf_stats;
# each as the median of ROUNDS rounds (default 3) of off / on. Prints figures; asserts nothing
# (shared, noisy machines).
#
#   tests/lab/bench-drops.sh [SECONDS]      (./x bench-drops)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${CNISCOPE_BIN:-$root/target/release/cniscope}
secs=${1:-5}
id="csdrops$$"
dir=$(mktemp -d)
trap 'kill "${agent_pid:-}" 2>/dev/null || true; bash "$here/flannel.sh" down "$id"; rm -rf "$dir"' EXIT

bash "$here/flannel.sh" up "$id" "$dir"
cp "$dir/cniscope.toml" "$dir/cniscope.toml.orig"
# UDP to server-b1's port 5202 dies in node b's FORWARD chain.
ip netns exec "$id-nb" iptables -I FORWARD -d 10.244.1.2 -p udp --dport 5202 -j DROP

# shellcheck source=common.sh
. "$here/common.sh"
agent() { bench_agent "$bin" "$dir" "$1"; } # extra agent settings

tcp() { # bits per second received, client-a1 -> server-b1
  ip netns exec "$id-server-b1" iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
  local srv=$!
  sleep 0.5
  ip netns exec "$id-client-a1" iperf3 -c 10.244.1.2 -p 5201 -t "$secs" -J |
    python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]))'
  wait "$srv" 2>/dev/null || true
}

flood() { # UDP datagrams (64 bytes) sent per second into the DROP, from one sender
  ip netns exec "$id-client-a1" python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end, n, payload = time.monotonic() + float(sys.argv[1]), 0, bytes(64)
while time.monotonic() < end:
    for _ in range(256):
        s.sendto(payload, ("10.244.1.2", 5202))
    n += 256
print(int(n / float(sys.argv[1])))
' "$secs"
}

run_with() { # SETTINGS WORKLOAD: the workload's figure with the agent running with SETTINGS
  agent "$1\nduration_secs = $((secs + 4))"
  local v
  v=$($2)
  wait "$agent_pid"
  echo "$v"
}

tcp_rounds=() flood_rounds=()
for ((round = 1; round <= ${ROUNDS:-3}; round++)); do
  tcp_rounds+=("$(run_with "kernel_drops = false" tcp):$(run_with "kernel_drops = true" tcp)")
  flood_rounds+=("$(run_with "kernel_drops = false" flood):$(run_with "kernel_drops = true" flood)")
done
# The program's time per event, from bpf_stats, during a flood.
run_with "kernel_drops = true\nbpf_stats = true" flood >/dev/null
python3 - "$dir/final.json" "${tcp_rounds[*]}" "${flood_rounds[*]}" <<'PY'
import json, statistics, sys
doc = json.load(open(sys.argv[1]))
rounds = lambda s: [tuple(int(x) for x in r.split(":")) for r in s.split()]
tcp, flood = rounds(sys.argv[2]), rounds(sys.argv[3])
for i, (off, on) in enumerate(tcp, 1):
    print(f"round {i}: healthy TCP, drop program off / on: {off / 1e9:6.2f} / {on / 1e9:6.2f} Gbit/s = {on / off:4.2f}")
for i, (off, on) in enumerate(flood, 1):
    print(f"round {i}: UDP into a DROP, drop program off / on: {off:9d} / {on:9d} datagrams/s = {on / off:4.2f}")
k = doc["health"]["kernel_drops"]
runs = max(k["program_runs"], 1)
print(f"drop program: {k['program_run_ns'] / runs:.1f} ns per kfree_skb event x {k['program_runs']} events "
      f"({k['matched']} matched: in the lab's nodes, not benign); ring buffer full: {k['ringbuf_full']}, "
      f"unreadable: {k['unreadable']}, undecodable: {k['undecodable']}")
print(f"recorded by node and reason: {json.dumps(k['nodes'], sort_keys=True)}")
print(f"healthy TCP throughput ratio, on / off: {statistics.median(on / off for off, on in tcp):5.2f}  (median; target >= 0.98)")
print(f"drop flood rate ratio, on / off:        {statistics.median(on / off for off, on in flood):5.2f}  (median)")
PY
