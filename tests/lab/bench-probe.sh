#!/usr/bin/env bash
# The probes' cost on real lab traffic (root): per-packet run time from the kernel's bpf_stats,
# and iperf3 throughput between two pods on different nodes (through VXLAN) without and with
# the probes attached, as a ratio. Prints figures; asserts nothing (shared, noisy machines).
#
#   tests/lab/bench-probe.sh [SECONDS]      (./x bench-probe)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${CNISCOPE_BIN:-$root/target/release/cniscope}
secs=${1:-5}
id="csbench$$"
dir=$(mktemp -d)
trap 'bash "$here/flannel.sh" down "$id"; rm -rf "$dir"' EXIT

bash "$here/flannel.sh" up "$id" "$dir"
iperf() { # prints bits per second, client-a1 -> server-b1 (across nodes)
  ip netns exec "$id-server-b1" iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
  local srv=$!
  sleep 0.5
  ip netns exec "$id-client-a1" iperf3 -c 10.244.1.2 -p 5201 -t "$secs" -J |
    python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]))'
  wait "$srv" 2>/dev/null || true
}

agent() { # extra agent settings; starts the agent and waits until its probes are attached
  cp "$dir/cniscope.toml.orig" "$dir/cniscope.toml"
  rm -f "$dir/topology.json"
  sed -i "s/^interval_secs = 1\$/interval_secs = 1\n$1/" "$dir/cniscope.toml"
  "$bin" run --config "$dir/cniscope.toml" --format json >"$dir/final.json" 2>"$dir/agent.err" &
  agent_pid=$!
  while [ ! -e "$dir/topology.json" ]; do
    kill -0 "$agent_pid" 2>/dev/null || { cat "$dir/agent.err"; exit 1; }
    sleep 0.2
  done
}
cp "$dir/cniscope.toml" "$dir/cniscope.toml.orig"

# Throughput: without probes, with probes (bpf_stats off: its clock reads cost per run too),
# and without again, so a drift of the machine shows.
without=$(iperf)
agent "duration_secs = $((secs + 4))"
with=$(iperf)
wait "$agent_pid"
without2=$(iperf)
# Cost per run, from the kernel's bpf_stats (which adds two clock reads per run).
agent "bpf_stats = true\nduration_secs = $((secs + 4))"
iperf >/dev/null
wait "$agent_pid"
python3 - "$dir/final.json" "$without" "$with" "$without2" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
without = (int(sys.argv[2]) + int(sys.argv[4])) / 2
with_ = int(sys.argv[3])
runs = sum(p["program_runs"] for p in doc["health"]["probes"].values())
ns = sum(p["program_run_ns"] for p in doc["health"]["probes"].values())
print(f"probe runs (packets x attach points): {runs}")
print(f"probe cost per run:      {ns / max(runs, 1):8.1f} ns   (target <= 100 ns; includes bpf_stats' own clock reads)")
print(f"iperf3 without probes:   {without / 1e9:8.2f} Gbit/s (mean of before and after)")
print(f"iperf3 with probes:      {with_ / 1e9:8.2f} Gbit/s")
print(f"throughput ratio:        {with_ / without:8.2f}      (target >= 0.95)")
PY
