#!/usr/bin/env bash
# Seed 001 side by side: the tutorial's dask code (dask.array.image.imread,
# mean/max/min over axes, rescale_intensity through delayed, TSQR SVD) and
# blockflow's configs/cells.toml on the same generated stack of 844 PNGs of
# 256 x 256 x 3; prints wall time and peak RSS of each (alternating, ROUNDS
# runs each, default 3: the medians) and their ratios, and checks that the
# results agree (exit 1 if not).
#
#   benches/seed001_dask.sh
#
# Makes a virtualenv in target/bench-venv (or uses $VENV) with dask,
# scikit-image, zarr and numpy; builds blockflow in release.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-target/bench-venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c "import dask, skimage, zarr" 2>/dev/null ||
  "$VENV/bin/pip" install -q "dask[array]" scikit-image zarr numpy
cargo build --release -q -p blockflow
[ -f data/cells/cell_0843.png ] || ./target/release/blockflow generate cells data/cells
exec "$VENV/bin/python" benches/seed001_dask.py
