"""Seed 000 (structure tensor) in dask + numba, as the tutorial writes it,
against blockflow on the same Zarr, alternating (benches/sidebyside.py):
ROUNDS (default 3) rounds of each, medians compared. Run through
benches/seed000_dask.sh. The dask side includes numba's compilation, as its
users pay it."""
import itertools
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "blockflow")
H, W = int(sys.argv[1]), int(sys.argv[2])
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sidebyside  # noqa: E402
WORK = os.path.join(ROOT, "target", "bench-data", f"seed000-{H}x{W}")
os.makedirs(WORK, exist_ok=True)
IMAGE = os.path.join(WORK, "hubble.zarr")


def config(cfg_text, name):
    cfg = os.path.join(WORK, name + ".toml")
    with open(cfg, "w") as f:
        f.write(cfg_text)
    return cfg


# The input: blockflow's synthetic survey image, float32, chunks (500, 500, 3).
if not os.path.exists(os.path.join(IMAGE, "zarr.json")) and "--dask-child" not in sys.argv:
    subprocess.run([BIN, "run", "-q", config(f"""
[stage.img]
kind = "synthetic"
pattern = "survey"
shape = [{H}, {W}, 3]
chunks = [500, 500, 3]

[stage.w]
kind = "write-zarr"
inputs = ["img"]
path = "{IMAGE}"
level = 1
""", "make-image")], check=True)


def run_dask():
    """The tutorial's cells, in order (gaussian_derivative method)."""
    import dask
    import dask.array as da
    import numba
    import numpy as np
    from scipy.ndimage._filters import _gaussian_kernel1d

    dask.config.set(scheduler="threads", num_workers=os.cpu_count())

    def make_stencils(kernel):
        # utils.apply_kernel_x/y: a 21-tap correlation as a numba stencil
        # (0 where the window leaves the block), float64 out.
        r = len(kernel) // 2
        ns = {"numba": numba}
        tx = " + ".join(f"a[0, {j - r}, 0] * {float(kernel[j])!r}" for j in range(len(kernel)))
        ty = " + ".join(f"a[{j - r}, 0, 0] * {float(kernel[j])!r}" for j in range(len(kernel)))
        exec(f"@numba.stencil(neighborhood=((0, 0), ({-r}, {r}), (0, 0)))\ndef sx(a):\n    return {tx}\n", ns)
        exec(f"@numba.stencil(neighborhood=(({-r}, {r}), (0, 0), (0, 0)))\ndef sy(a):\n    return {ty}\n", ns)
        return ns["sx"], ns["sy"]

    gdx, gdy = make_stencils(_gaussian_kernel1d(1.5, 1, 10))
    gsx, gsy = make_stencils(_gaussian_kernel1d(2, 0, 10))

    @numba.jit(parallel=True)
    def gd_x(images):
        return gdx(images.astype(np.float64))

    @numba.jit(parallel=True)
    def gd_y(images):
        return gdy(images.astype(np.float64))

    @numba.jit(parallel=True)
    def smooth(images):
        return gsy(gsx(images))

    hubble_image = da.from_zarr(IMAGE)
    dfdx_gd = hubble_image.map_overlap(gd_x, depth=(0, 10, 0), dtype=np.float64)
    dfdy_gd = hubble_image.map_overlap(gd_y, depth=(10, 0, 0), dtype=np.float64)
    IxIx = dfdx_gd * dfdx_gd
    IxIy = dfdx_gd * dfdy_gd
    IyIy = dfdy_gd * dfdy_gd
    IxIx_bar = IxIx.map_overlap(smooth, depth=(10, 10, 0))
    IxIy_bar = IxIy.map_overlap(smooth, depth=(10, 10, 0))
    IyIy_bar = IyIy.map_overlap(smooth, depth=(10, 10, 0))
    structure_tensor = da.stack(
        [da.stack([IxIx_bar, IxIy_bar], axis=3), da.stack([IxIy_bar, IyIy_bar], axis=3)], axis=4
    )
    structure_tensor = structure_tensor.rechunk(hubble_image.chunksize + (2, 2))
    w, v = da.apply_gufunc(np.linalg.eigh, "(m,m)->(m),(m,m)", structure_tensor)
    eigvals, eigvecs = w.persist(), v.persist()
    energy = eigvals[..., 0] + eigvals[..., 1]
    anisotropy1 = (eigvals[..., 1] - eigvals[..., 0]) / energy
    feature1 = 1 - anisotropy1[...].mean(-1)
    feature2 = energy[..., 0] ** 2 / (energy[..., 0] + energy[..., 1] + energy[..., 2])
    features = feature1 * feature2
    top1 = 0.008
    blocks_of_interest = []
    nb = features.numblocks
    for bl in itertools.product(np.arange(nb[0]), np.arange(nb[1])):
        if da.nansum(features.blocks[bl] > top1):
            blocks_of_interest.append([int(bl[0]), int(bl[1])])
    return features, blocks_of_interest


BAND = slice(0, min(H, 1000))

if sys.argv[-1] == "--dask-child":
    import numpy as np

    features, blocks = run_dask()
    # What the check reads: a band of rows and the blocks (the whole map
    # would not fit twice in memory).
    np.save(os.path.join(WORK, "dask-band.npy"), features[BAND].compute())
    with open(os.path.join(WORK, "dask-blocks.json"), "w") as f:
        json.dump(blocks, f)
    sys.exit(0)

CFG = config(f"""
[pipeline]
memory = "512 MiB"

[stage.img]
kind = "read-zarr"
path = "{IMAGE}"

[stage.tensor]
kind = "structure-tensor"
inputs = ["img"]
mode = "none"

[stage.features]
kind = "write-zarr"
inputs = ["tensor"]
path = "{WORK}/features.zarr"
if_exists = "overwrite"

[stage.blocks]
kind = "write-blocks"
inputs = ["tensor"]
threshold = 0.008
path = "{WORK}/blocks.json"
if_exists = "overwrite"
""", "blockflow")

print(f"seed 000 at {H} x {W} x 3 float32, {os.cpu_count()} cores, {sidebyside.rounds()} alternating rounds")
med = sidebyside.alternate(
    [("dask", [sys.executable, os.path.abspath(__file__), str(H), str(W), "--dask-child"]),
     ("blockflow", [BIN, "run", "-q", CFG])],
    sidebyside.rounds(),
)

import numpy as np  # noqa: E402
import zarr  # noqa: E402

ours = zarr.open(os.path.join(WORK, "features.zarr"), mode="r")
theirs = np.load(os.path.join(WORK, "dask-band.npy"))
mine = ours[BAND]
nan_same = np.array_equal(np.isnan(theirs), np.isnan(mine))
finite = ~np.isnan(theirs)
rel = np.max(np.abs(mine[finite] - theirs[finite]) / np.maximum(np.abs(theirs[finite]), 1e-300)) if finite.any() else 0.0
with open(os.path.join(WORK, "blocks.json")) as f:
    our_blocks = json.load(f)["blocks_of_interest"]
with open(os.path.join(WORK, "dask-blocks.json")) as f:
    blocks = json.load(f)

sidebyside.summary(f"seed 000 at {H} x {W} x 3:", med)
print(f"  features (rows {BAND.start}..{BAND.stop}): NaN masks equal: {nan_same}, max relative difference {rel:.2e}")
print(f"  blocks of interest: dask {len(blocks)}, blockflow {len(our_blocks)}, identical: {blocks == our_blocks}")
ok = nan_same and rel <= 1e-9 and blocks == our_blocks
print("results agree (relative 1e-9)" if ok else "RESULTS DIFFER")
sys.exit(0 if ok else 1)
