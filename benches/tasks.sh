#!/usr/bin/env bash
# Alternating rounds on seed 000 at its default size (12000 x 13500 x 3):
# `blockflow run` against the same pipeline as 8 tasks through
# `submit --executor local` (2 processes of 1 thread), wall time and peak
# RSS (of the largest task for the pool). Usage: benches/tasks.sh [ROUNDS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
B=${BIN:-$root/target/release/blockflow}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$root/configs" "$work/"
cd "$work"
for r in $(seq "${1:-3}"); do
  rm -rf out
  /usr/bin/time -f "run   %e s %M KB" "$B" run -q configs/structure-tensor.toml 2>&1 | tail -1
  rm -rf out
  /usr/bin/time -f "local %e s %M KB" "$B" submit -q configs/structure-tensor.toml --executor local --task-count 8 --workers 2 --cpus-per-task 1 2>&1 | tail -1
done
rm -rf out
