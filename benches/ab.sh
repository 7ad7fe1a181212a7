#!/usr/bin/env bash
# Alternating runs of two blockflow binaries on one config, to compare them
# on a shared, noisy machine: A B A B ... N rounds, each run's wall time and
# peak RSS from its run report, then the medians and the ratio B/A.
#
#   benches/ab.sh OLD_BINARY NEW_BINARY CONFIG ROUNDS [--set STAGE.PARAM=VALUE ...]
#
# Outputs go where the config says (use --set to move them); both binaries
# overwrite them, so give the config's writers if_exists = "overwrite".
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 OLD NEW CONFIG ROUNDS [--set ...]" >&2; exit 2; }
A=$1 B=$2 CFG=$3 N=$4
shift 4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for i in $(seq "$N"); do
  for who in A B; do
    bin=$A; [ "$who" = B ] && bin=$B
    "$bin" run -q "$CFG" --report "$tmp/r.json" "$@" >/dev/null
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], "%.3f" % r["wall_seconds"], r["peak_rss_bytes"])' "$tmp/r.json" "$who" | tee -a "$tmp/all"
  done
done
python3 - "$tmp/all" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
t = {w: [float(r[1]) for r in rows if r[0] == w] for w in "AB"}
m = {w: [int(r[2]) for r in rows if r[0] == w] for w in "AB"}
ma, mb = statistics.median(t["A"]), statistics.median(t["B"])
print(f"median wall: A {ma:.3f} s, B {mb:.3f} s, B/A {mb/ma:.3f}")
print(f"median peak RSS: A {statistics.median(m['A'])/2**20:.0f} MiB, B {statistics.median(m['B'])/2**20:.0f} MiB")
PY
