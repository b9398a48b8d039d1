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
trap 'bash "$here/flannel-vxlan.sh" down "$id"; rm -rf "$dir"' EXIT

bash "$here/flannel-vxlan.sh" up "$id" "$dir"
iperf() { # prints bits per second, client-a1 -> server-b1 (across nodes)
  ip netns exec "$id-server-b1" iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
  local srv=$!
  sleep 0.5
  ip netns exec "$id-client-a1" iperf3 -c 10.244.1.2 -p 5201 -t "$secs" -J |
    python3 -c 'import json,sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]))'
  wait "$srv" 2>/dev/null || true
}

without=$(iperf)
sed -i "s/^interval_secs = 1\$/interval_secs = 1\nbpf_stats = true\nduration_secs = $((secs + 4))/" "$dir/cniscope.toml"
"$bin" run --config "$dir/cniscope.toml" --format json >"$dir/final.json" 2>"$dir/agent.err" &
agent=$!
while [ ! -e "$dir/topology.json" ]; do
  kill -0 "$agent" 2>/dev/null || { cat "$dir/agent.err"; exit 1; }
  sleep 0.2
done
with=$(iperf)
wait "$agent"
python3 - "$dir/final.json" "$without" "$with" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
without, with_ = int(sys.argv[2]), int(sys.argv[3])
runs = sum(p["program_runs"] for p in doc["health"]["probes"].values())
ns = sum(p["program_run_ns"] for p in doc["health"]["probes"].values())
print(f"probe runs (packets x attach points): {runs}")
print(f"probe cost per packet:   {ns / max(runs, 1):8.1f} ns   (target <= 100 ns; bpf_stats adds its own overhead)")
print(f"iperf3 without probes:   {without / 1e9:8.2f} Gbit/s")
print(f"iperf3 with probes:      {with_ / 1e9:8.2f} Gbit/s")
print(f"throughput ratio:        {with_ / without:8.2f}      (target >= 0.95)")
PY
