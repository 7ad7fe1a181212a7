#!/usr/bin/env bash
# Seed 000 side by side: the tutorial's dask + numba code and blockflow on the
# same Zarr image, both on this machine, alternating: ROUNDS (default 3)
# runs of each in turn, each in its own process; prints every run, the
# median wall time and peak RSS of each side and their ratios, and checks
# that the results agree (exit 1 if not).
#
#   benches/seed000_dask.sh [ROWS COLS]     (default: the tutorial's 12000 x 13500)
#   ROUNDS=5 benches/seed000_dask.sh 6000 6750
#
# Makes a virtualenv in target/bench-venv (or uses $VENV) with dask, numba,
# zarr and scipy; builds blockflow in release.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-target/bench-venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "dask[array]" numba zarr scipy numpy
fi
cargo build --release -q -p blockflow
exec "$VENV/bin/python" benches/seed000_dask.py "${1:-12000}" "${2:-13500}"
