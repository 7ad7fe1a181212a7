#!/usr/bin/env bash
# Seed 003 side by side: the tutorial's dask code and blockflow's
# configs/elevation.toml on the same RGBA terrain Zarr (8000 x 8000 x 4
# uint8, chunks 200 x 200 x 4, made by blockflow once); prints wall time and
# peak RSS of each (alternating, ROUNDS runs each, default 3: the medians)
# and their ratios, dask computing the seed's matrix product's sum exactly
# by a float64 matmul (blockflow by column sums), and checks that the
# results agree (exit 1 if not).
#
#   benches/seed003_dask.sh [SIZE]     (default 8000)
#
# Makes a virtualenv in target/bench-venv (or uses $VENV) with dask, zarr
# and numpy; builds blockflow in release.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-target/bench-venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c "import dask, zarr" 2>/dev/null || "$VENV/bin/pip" install -q "dask[array]" zarr numpy
cargo build --release -q -p blockflow
exec "$VENV/bin/python" benches/seed003_dask.py "${1:-8000}"
