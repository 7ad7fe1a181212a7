#!/usr/bin/env bash
# Throughput and latency of the `--follow` ingest (configs/ingest.toml:
# median (1,3,3,3), registration to 1/20 voxel, cubic shift, appended to a
# growing Zarr with running statistics).
#
#   benches/ingest.sh [COUNT] [SIZE] [DTYPE]     (default: 60 100 float64,
#                                                 the seed's volumes)
#
# 1. Sustained: all COUNT files are there when the ingest starts; it takes
#    them as fast as it can: timepoints per second.
# 2. Latency: a writer drops one file (written under a hidden name, renamed
#    into place) every 1.5x the sustained period; arrival -> written p50/p99.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-60}
SIZE=${2:-100}
DTYPE=${3:-float64}
# The config's 512 MiB fits the seed's 100^3; 256^3 needs MEMORY="6 GiB".
MEMORY=${MEMORY:-512 MiB}
cargo build --release -q -p blockflow
BIN=${BIN:-$PWD/target/release/blockflow}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/blockflow-ingest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
"$BIN" generate timeseries "$WORK/gen" --count "$COUNT" --size "$SIZE" --dtype "$DTYPE" >/dev/null

run() { # $1: watched folder, $2: output folder
  "$BIN" run --follow configs/ingest.toml -q \
    --set "volumes.path=$1/t_*.h5" --set "aligned.path=$2/ingest.zarr" \
    --set "volumes.frame=[$SIZE,$SIZE,$SIZE]" --set "volumes.dtype=\"$DTYPE\"" \
    --set "shifts_json.path=$2/shifts.json" --set "follow.quarantine=$2/q" \
    --set "pipeline.report=$2/report.json" --set follow.settle=0s \
    --set follow.poll=50ms --set follow.idle_exit=2s \
    --set "pipeline.memory=\"$MEMORY\""
}
field() { python3 -c "import json,sys; print(json.load(open('$1'))['$2'])"; }

echo "== sustained: $COUNT timepoints of ${SIZE}^3 $DTYPE waiting"
mkdir -p "$WORK/a"
START=$(date +%s.%N)
run "$WORK/gen" "$WORK/a"
echo "wall $(python3 -c "import time; print(round(time.time() - $START, 2))") s (2 s of it the idle exit)"
RATE=$(field "$WORK/a/report.json" timepoints_per_second)
printf 'sustained: %.2f timepoints/s (%.1f MB/s of input)\n' "$RATE" \
  "$(python3 -c "print($RATE * $SIZE**3 * (8 if '$DTYPE' == 'float64' else 4) / 1e6)")"

PERIOD=$(python3 -c "print(round(1.5 / $RATE, 3))")
echo "== latency: one timepoint every $PERIOD s"
mkdir -p "$WORK/in" "$WORK/b"
(
  for f in "$WORK"/gen/t_*.h5; do
    n=$(basename "$f")
    cp "$f" "$WORK/in/.$n.part" && mv "$WORK/in/.$n.part" "$WORK/in/$n"
    sleep "$PERIOD"
  done
) &
WRITER=$!
run "$WORK/in" "$WORK/b"
wait $WRITER
python3 - "$WORK/b/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"latency arrival -> written: p50 {r['latency_p50_seconds']:.3f} s, "
      f"p99 {r['latency_p99_seconds']:.3f} s, max {r['latency_max_seconds']:.3f} s; "
      f"{r['ingested']} timepoints, peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB")
PY
