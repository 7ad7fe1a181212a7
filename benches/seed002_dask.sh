#!/usr/bin/env bash
# Seed 002 side by side: the tutorial's dask code (WORKFLOWS.md B: the
# per-timepoint HDF5 files stacked one chunk per timepoint, map_blocks of
# scipy's (1, 3, 3, 3) median_filter, scikit-image's
# phase_cross_correlation(reference=filtered[0], moving) per block, then
# scipy.ndimage.shift per block, rechunk to (T, Z/10, Y/10, X/10), zscore
# along time, to_zarr) and blockflow's configs/timeseries.toml on the same
# generated files: 20 timepoints of 256^3 float32 (1.25 GiB). Each side runs
# in its own process under /usr/bin/time -v; prints wall time and peak RSS
# of each and their ratios, and checks that the shifts and the zscore arrays
# agree.
#
#   benches/seed002_dask.sh            (nice it on a shared machine: several minutes)
#
# Environment:
#   VENV      the virtualenv (default target/bench-venv, made if missing, with
#             dask, scipy, scikit-image, h5py, zarr and numpy; /work/venv on
#             this project's machine has them all: VENV=/work/venv)
#   COUNT, SIZE   timepoints and edge (default 20 and 256)
#   DATA      the input folder (default data/volumes-COUNTxSIZE-float32, made by
#             `blockflow generate timeseries DATA --count COUNT --size SIZE
#             --dtype float32` when its last file is missing)
#   MEMORY    blockflow's budget (default "5 GiB": at 256^3 the plan projects
#             4.1 GiB, the config's 512 MiB being sized for the seed's 100^3)
#   KEEP=1    keep the outputs (in a temporary folder, printed) afterwards
#
# The dask side is the tutorial's code as written: the reference, the
# shifts and the result are three computes, so the median of each volume
# is computed three times over (once for the reference alone). Both sides
# use 2 threads (dask's threaded scheduler with 2 workers). Registration is
# to 1/upsample_factor voxel as configs/timeseries.toml says. blockflow runs
# twice: the config as it is, which also writes the median-filtered stack
# as HDF5 (its median_h5 stage, 1.25 GiB more written), and the config
# without that stage: the dask code's work exactly. The ratio is given for
# both. Builds blockflow in release.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-target/bench-venv}
COUNT=${COUNT:-20}
SIZE=${SIZE:-256}
DATA=${DATA:-data/volumes-${COUNT}x${SIZE}-float32}
MEMORY=${MEMORY:-5 GiB}
CONFIG=configs/timeseries.toml
UPSAMPLE=$(sed -n 's/^upsample_factor *= *\([0-9]*\).*/\1/p' "$CONFIG" | head -n 1)
UPSAMPLE=${UPSAMPLE:-1}

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c "import dask, scipy, skimage, h5py, zarr" 2>/dev/null ||
  "$VENV/bin/pip" install -q "dask[array]" scipy scikit-image h5py zarr numpy
[ -x /usr/bin/time ] || { echo "needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 1; }
cargo build --release -q -p blockflow
BF=./target/release/blockflow
LAST=$(printf '%s/t_%04d.h5' "$DATA" $((COUNT - 1)))
[ -f "$LAST" ] || "$BF" generate timeseries "$DATA" --count "$COUNT" --size "$SIZE" --dtype float32
DATA=$(cd "$DATA" && pwd)

OUT=$(mktemp -d "${TMPDIR:-/tmp}/seed002-bench.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
  echo "outputs in $OUT"
else
  trap 'rm -rf "$OUT"' EXIT
fi

cat >"$OUT/dask_side.py" <<'PY'
import glob, json, os, sys, warnings
warnings.filterwarnings("ignore")
import dask
import dask.array as da
import numpy as np
from h5py import File

data_dir, out, upsample = sys.argv[1], sys.argv[2], int(sys.argv[3])
dask.config.set(scheduler="threads", num_workers=2)
fnames = sorted(glob.glob(os.path.join(data_dir, "t_*.h5")))
dims = (len(fnames),) + File(fnames[0], "r")["data"].shape
chunks = dims[1:]
data = da.stack([da.from_array(File(fn, "r")["data"], chunks=chunks) for fn in fnames])

from scipy.ndimage import median_filter
filter_size = (1, 3, 3, 3)
data_filtered = data.map_blocks(lambda v: median_filter(v, size=filter_size))

# Registration of the filtered volumes to the first, reference first.
ref = data_filtered[0].compute()
def reg(im, reference=ref):
    from skimage.registration import phase_cross_correlation
    shifts = phase_cross_correlation(reference, np.squeeze(im, 0), upsample_factor=upsample)[0]
    return shifts.reshape(1, -1)
shifts = data_filtered.map_blocks(reg, dtype="float", drop_axis=(2, 3), chunks=(1, 3)).compute()

def shifter(im, block_id):
    from scipy.ndimage import shift
    time_index = block_id[0]
    return shift(im[0], shifts[time_index])[np.newaxis]
data_shifted = data_filtered.map_blocks(shifter, dtype=data_filtered.dtype)

new_chunks = (dims[0], dims[1] // 10, dims[2] // 10, dims[3] // 10)
data_rechunked = data_shifted.rechunk(chunks=new_chunks)
def normalize(v):
    from scipy.stats import zscore
    return zscore(v, axis=0)
data_zscored = data_rechunked.map_blocks(normalize)
data_zscored.to_zarr(os.path.join(out, "dask-zscore.zarr"), overwrite=True)
json.dump({"shifts": shifts.tolist(), "dtype": str(data_zscored.dtype),
           "chunks": list(new_chunks)}, open(os.path.join(out, "dask.json"), "w"))
PY

cat >"$OUT/compare.py" <<'PY'
import json, os, re, sys
import numpy as np
import zarr

out, data_dir, upsample = sys.argv[1], sys.argv[2], int(sys.argv[3])

def timed(name):
    text = open(os.path.join(out, name + ".time")).read()
    clock = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", text).group(1)
    secs = 0.0
    for part in clock.split(":"):
        secs = secs * 60 + float(part)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) * 1024
    return secs, rss

dk_wall, dk_rss = timed("dask")
bf_wall, bf_rss = timed("blockflow")
rep = json.load(open(os.path.join(out, "report.json")))
print(f"blockflow: {bf_wall:6.1f} s, peak RSS {bf_rss / 2**20:5.0f} MiB "
      f"(budget {rep['memory_budget_bytes'] / 2**20:.0f} MiB; also writes the median stack as HDF5)")
print(f"dask:      {dk_wall:6.1f} s, peak RSS {dk_rss / 2**20:5.0f} MiB")
print(f"blockflow is {dk_wall / bf_wall:.2f}x faster (wall dask / blockflow), "
      f"RSS ratio blockflow / dask {bf_rss / dk_rss:.3f}")
sw_wall, sw_rss = timed("blockflow-seed-work")
print(f"blockflow without the median HDF5 (the dask code's work exactly): {sw_wall:6.1f} s, "
      f"peak RSS {sw_rss / 2**20:5.0f} MiB: {dk_wall / sw_wall:.2f}x faster, RSS ratio {sw_rss / dk_rss:.3f}")
sw = json.load(open(os.path.join(out, "seed-work", "shifts.json")))["shifts"]
if json.load(open(os.path.join(out, "shifts.json")))["shifts"] != sw:
    print("MISMATCH: the two blockflow runs give other shifts")
    sys.exit(1)

dk = json.load(open(os.path.join(out, "dask.json")))
bf_shifts = np.asarray(json.load(open(os.path.join(out, "shifts.json")))["shifts"], dtype=float)
dk_shifts = np.asarray(dk["shifts"], dtype=float)
truth = -np.asarray(json.load(open(os.path.join(data_dir, "shifts.json")))["shifts_zyx"], dtype=float)
ds = np.abs(bf_shifts - dk_shifts).max()
off = np.abs(bf_shifts - truth).max()
print(f"shifts: blockflow vs dask differ by at most {ds:.3g} voxel; against the generator's "
      f"blockflow {off:.3g}, dask {np.abs(dk_shifts - truth).max():.3g}")
if off > 1.0 / upsample + 0.1:
    # Not an error of either side: both compute scikit-image's algorithm.
    print("  (the registration misses the generator's shifts, probably because with normalization 'phase' the "
          "volumes' white noise outweighs the blobs' few low frequencies at this size)")

a = zarr.open_array(os.path.join(out, "zscore.zarr"), mode="r")
b = zarr.open_array(os.path.join(out, "dask-zscore.zarr"), mode="r")
assert a.shape == b.shape, (a.shape, b.shape)
worst, nan_a, nan_b, mismatch = 0.0, 0, 0, 0
step = max(1, b.chunks[1])
for z in range(0, a.shape[1], step):
    x = np.asarray(a[:, z:z + step], dtype=np.float64)
    y = np.asarray(b[:, z:z + step], dtype=np.float64)
    nx, ny = np.isnan(x), np.isnan(y)
    nan_a, nan_b, mismatch = nan_a + nx.sum(), nan_b + ny.sum(), mismatch + (nx != ny).sum()
    both = ~(nx | ny)
    if both.any():
        worst = max(worst, float(np.abs(x[both] - y[both]).max()))
print(f"zscore {a.shape}: blockflow {a.dtype}, dask {b.dtype} (chunks {b.chunks}); "
      f"max |difference| {worst:.3g}; NaN {nan_a} / {nan_b}, {mismatch} where only one is NaN")
# scikit-image registers float32 volumes in single precision, so its shifts
# are the 1/upsample grid's values to float32 (1e-7 off); equal shifts give
# equal results up to dask's float32 zscore (1e-5 or so), while a shift one
# grid step apart would move the values visibly.
ok = ds <= 1e-4 and mismatch == 0 and worst <= 1e-3
if not ok:
    print("MISMATCH: the two results differ more than float32 rounding explains")
    sys.exit(1)
print("agree: same shifts, zscore equal to float32 rounding")
PY

echo "seed 002: $COUNT x ${SIZE}^3 from $DATA, upsample_factor $UPSAMPLE, 2 threads each"
/usr/bin/time -v -o "$OUT/blockflow.time" "$BF" run -q "$CONFIG" \
  --set "volumes.path=$DATA/t_*.h5" \
  --set "series.chunks=[$COUNT, $((SIZE / 10)), $((SIZE / 10)), $((SIZE / 10))]" \
  --set "median_h5.path=$OUT/median.h5" \
  --set "shifts_json.path=$OUT/shifts.json" \
  --set "zscore_zarr.path=$OUT/zscore.zarr" \
  --set "pipeline.report=$OUT/report.json" \
  --set "pipeline.scratch=$OUT" \
  --set "pipeline.memory=\"$MEMORY\""
/usr/bin/time -v -o "$OUT/dask.time" "$VENV/bin/python" "$OUT/dask_side.py" "$DATA" "$OUT" "$UPSAMPLE"
# The same config without the median_h5 stage: the dask code's work.
"$VENV/bin/python" - "$CONFIG" "$OUT/seed-work.toml" <<'PY'
import sys
text = open(sys.argv[1]).read()
start = text.index("[stage.median_h5]")
end = text.index("[stage.", start + 1)
out = text[:start] + text[end:]
# Every path the config names is set below, so it may run from $OUT.
open(sys.argv[2], "w").write(out)
PY
mkdir -p "$OUT/seed-work"
/usr/bin/time -v -o "$OUT/blockflow-seed-work.time" "$BF" run -q "$OUT/seed-work.toml" \
  --set "volumes.path=$DATA/t_*.h5" \
  --set "series.chunks=[$COUNT, $((SIZE / 10)), $((SIZE / 10)), $((SIZE / 10))]" \
  --set "shifts_json.path=$OUT/seed-work/shifts.json" \
  --set "zscore_zarr.path=$OUT/seed-work/zscore.zarr" \
  --set "pipeline.report=$OUT/seed-work/report.json" \
  --set "pipeline.scratch=$OUT" \
  --set "pipeline.memory=\"$MEMORY\""
"$VENV/bin/python" "$OUT/compare.py" "$OUT" "$DATA" "$UPSAMPLE"
