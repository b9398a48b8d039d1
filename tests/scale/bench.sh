#!/usr/bin/env bash
# ./x bench-scale [CONNECTIONS]: truth, speed and plugin memory at scale, on synthetic clusters
# (`cniscope synth`), against tcpdump reading the same files and tshark's TCP conversation
# table, all measured in this run (best of 3 for the timings).
#
#   1. Each CNI shape with CONNECTIONS (default 100 000) over 20 s in 5 s windows: the score
#      (precision, recall, edges counted exactly) and the replay's time and peak RSS.
#   2. The same connections all in one 5 s window: the plugin's peak memory per connection.
#   3. Speed on the largest capture file (a node's uplink): cniscope replay, tcpdump -r -w
#      /dev/null and tshark -q -z conv,tcp, as ratios.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${CNISCOPE_BIN:-$root/target/release/cniscope}
n=${1:-100000}
work=$(mktemp -d /tmp/cniscope-bench-scale.XXXXXX)
trap 'rm -rf "$work"' EXIT

best_of_3() { # command... -> prints the best wall time in seconds
  local best=""
  for _ in 1 2 3; do
    local s e t
    s=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || true
    e=$(date +%s.%N)
    t=$(echo "$e - $s" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
  done
  printf '%.3f' "$best"
}

command -v bc >/dev/null || { echo "bench-scale needs bc" >&2; exit 1; }
if ! command -v tshark >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing tshark for the comparison (Debian package)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tshark >/dev/null 2>&1 || true
fi

echo "== truth at scale: $n connections, 2 nodes, 20 s in 5 s windows (churn 10%, 10% open before)"
printf '%-16s %10s %10s %12s %9s %9s %8s %8s %9s\n' shape edges exact flows/exp precision recall "time s" "RSS MB" "peak MiB"
for shape in flannel-vxlan flannel-host-gw calico-ipip calico-vxlan calico-bgp ovn-geneve; do
  d="$work/$shape"
  "$bin" synth write "$shape" -o "$d" -n "$n" --pods-per-node 100 --plugins "$root/dist/plugins" >/dev/null
  /usr/bin/time -f '%e %M' -o "$d.time" "$bin" replay -c "$d/cniscope.toml" -f json -o "$d.json" --allow-partial 2>/dev/null
  read -r secs rss < "$d.time"
  "$bin" synth score "$d/expected.json" "$d.json" > "$d.score" 2>/dev/null || true
  python3 - "$d.score" "$d.json" "$shape" "$secs" "$rss" <<'EOF'
import json, re, sys
score, doc, shape, secs, rss = open(sys.argv[1]).read(), json.load(open(sys.argv[2])), *sys.argv[3:]
m = re.search(r"edges: (\d+) expected, (\d+) found, (\d+) matched \((\d+) counted exactly\); precision ([\d.]+), recall ([\d.]+)", score)
f = re.search(r"flows: (\d+) expected, (\d+) found", score)
peak = max(p["peak_memory_bytes"] for p in doc["health"]["plugins"].values())
print("%-16s %10s %10s %12s %9s %9s %8s %8.0f %9.1f" % (shape, m[1], m[4], f"{f[2]}/{f[1]}", m[5], m[6], secs, int(rss) / 1024, peak / 2**20))
EOF
done

echo
echo "== plugin memory: all $n connections in one 5 s window (flannel-vxlan)"
d="$work/one-window"
"$bin" synth write flannel-vxlan -o "$d" -n "$n" --secs 5 --window-secs 5 --pods-per-node 100 --plugins "$root/dist/plugins" >/dev/null
"$bin" replay -c "$d/cniscope.toml" -f json -o "$d.json" --allow-partial 2>/dev/null || true
"$bin" synth score "$d/expected.json" "$d.json" 2>/dev/null | grep -E '^(edges|flows):' || true
python3 - "$d.json" "$n" <<'EOF'
import json, sys
doc, n = json.load(open(sys.argv[1])), int(sys.argv[2])
p = doc["health"]["plugins"]["flannel"]
c, peak = p["counters"], p["peak_memory_bytes"]
held = c["stitch.held_peak"]
# Views per connection: what the stitcher holds of each (every point, both directions).
views = p["observations_in"] / n
print(f"peak {peak / 2**20:.1f} MiB of the 64 MiB cap; at most {held} observations held at once "
      f"({views:.1f} per connection): {peak / held:.0f} bytes per held observation, "
      f"{peak / held * views:.0f} per connection held whole (goal 300)")
print(f"early drains {c['stitch.early_drains']} (max_held), views evicted {c['stitch.evicted']}, "
      f"forgotten {c['stitch.forgotten']}, state {p['state']}")
EOF

# What one more held observation costs: the same window under two caps.
for held in 32768 131072; do
  sed "s/^network = .*/&\nmax_held = $held/" "$d/cniscope.toml" > "$d/held-$held.toml"
  "$bin" replay -c "$d/held-$held.toml" -f json -o "$d.$held.json" --allow-partial 2>/dev/null || true
done
python3 - "$d.32768.json" "$d.131072.json" <<'EOF'
import json, sys
peak = [json.load(open(f))["health"]["plugins"]["flannel"]["peak_memory_bytes"] for f in sys.argv[1:]]
print(f"max_held 32768 -> 131072: peak {peak[0] / 2**20:.1f} -> {peak[1] / 2**20:.1f} MiB, "
      f"{(peak[1] - peak[0]) / (131072 - 32768):.0f} bytes per further held observation")
EOF

echo
echo "== speed on one capture file: worker-1's uplink (flannel-vxlan)"
f="$work/flannel-vxlan/worker-1.eth0.pcap"
size=$(du -m "$f" | cut -f1)
inv="$work/flannel-vxlan/inventory.json"
t_cniscope=$(best_of_3 "$bin" replay --window-secs 5 "worker-1/eth0=$f" -i "$inv" -p flannel --plugin-dir "$root/dist/plugins" -f json --allow-partial)
t_tcpdump=$(best_of_3 tcpdump -r "$f" -w /dev/null)
echo "file: $size MB ($(tcpdump -r "$f" 2>/dev/null | wc -l) frames)"
echo "cniscope replay:          ${t_cniscope} s"
echo "tcpdump -r -w /dev/null:  ${t_tcpdump} s   cniscope / tcpdump = $(echo "$t_cniscope / $t_tcpdump" | bc -l | xargs printf '%.2f')x (goal <= 3x)"
if command -v tshark >/dev/null; then
  t_tshark=$(best_of_3 tshark -q -n -z conv,tcp -r "$f")
  echo "tshark -q -z conv,tcp:    ${t_tshark} s   tshark / cniscope = $(echo "$t_tshark / $t_cniscope" | bc -l | xargs printf '%.2f')x (goal >= 10x)"
else
  echo "tshark: not installed (run as root to install it): no tshark ratio"
fi
