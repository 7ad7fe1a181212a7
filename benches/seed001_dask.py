"""Seed 001's dask code and blockflow on the same stack (see seed001_dask.sh).

The dask side is the tutorial's code as written: each statistic its own
compute (so the stack is read again for each, as the notebook does),
rescale_intensity through dask.delayed, and the SVD of the centred
features x observations matrix by TSQR (dask needs one column block, so
the row chunks hold 12288 features of all 844 images). Both sides use 2
threads. Each side runs in its own process so peak RSS is its own; the
sides alternate, ROUNDS (default 3) runs each, and the medians are compared
(benches/sidebyside.py).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sidebyside  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.path.join(ROOT, "target", "seed001-bench")

DASK = r'''
import json, resource, sys, time
import dask, dask.array as da
import numpy as np
from dask import delayed
from dask.array.image import imread
from skimage.exposure import rescale_intensity
dask.config.set(scheduler="threads", num_workers=2)
out = sys.argv[1]
t0 = time.perf_counter()
cell_images = imread(sys.argv[2])
mean_cell_image = cell_images.mean(axis=0).compute()
RGB_means = cell_images.mean(axis=[1, 2]).compute()
ch_max = cell_images.max(axis=[1, 2]).compute()
ch_min = cell_images.min(axis=[1, 2]).compute()
img_max = cell_images.max(axis=[1, 2, 3]).compute()
green = int((RGB_means[:, 0] < RGB_means[:, 1]).sum())
lazy = [delayed(rescale_intensity)(im) for im in cell_images]
arrays = [da.from_delayed(v, dtype=cell_images.dtype, shape=cell_images.shape[1:]) for v in lazy]
da.stack(arrays).to_zarr(out + "/dask-rescaled.zarr", overwrite=True)
centred = cell_images - cell_images.mean(axis=0)
data = centred.reshape((844, 256 * 256 * 3)).T.rechunk((12288, 844))
u, s, v = da.linalg.svd(data)
s = s.compute()
modes = (u[:, :10] * s[:10]).compute()
wall = time.perf_counter() - t0
json.dump({"wall": wall, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           "green": green, "s": [float(x) for x in s[:10]],
           "mean": float(mean_cell_image.mean())}, open(out + "/dask.json", "w"))
'''


def main():
    os.makedirs(OUT, exist_ok=True)
    pattern = os.path.join(ROOT, "data", "cells", "*.png")
    exe = os.path.join(ROOT, "target", "release", "blockflow")
    cfg = os.path.join(ROOT, "configs", "cells.toml")
    sets = []
    for k, f in (("mean_image_zarr", "mean.zarr"), ("mean_image_png", "mean.png"), ("stats", "stats.csv"),
                 ("rescaled_zarr", "rescaled.zarr"), ("modes_zarr", "modes.zarr"),
                 ("first_mode_png", "mode0.png"), ("second_mode_png", "mode1.png"),
                 ("third_mode_png", "mode2.png"), ("summary", "summary.json")):
        sets += ["--set", f"{k}.path={OUT}/{f}"]
    sets += ["--set", f"pipeline.report={OUT}/report.json", "--set", f"pipeline.scratch={OUT}"]
    print(f"seed 001: {pattern}, {sidebyside.rounds()} alternating rounds")
    med = sidebyside.alternate(
        [("dask", [sys.executable, "-c", DASK, OUT, pattern]),
         ("blockflow", [exe, "run", "-q", cfg] + sets)],
        sidebyside.rounds(),
    )
    summ = json.load(open(f"{OUT}/summary.json"))
    dk = json.load(open(f"{OUT}/dask.json"))
    sidebyside.summary("seed 001:", med)
    s0 = dk["s"][0]
    worst = max(abs(a - b) for a, b in zip(summ["top10"], dk["s"]))
    print(f"  green images: blockflow {summ['green_count']}, dask {dk['green']}; "
          f"top-10 singular values differ by at most {worst:.3g} ({worst / s0:.2g} s0)")
    ok = summ["green_count"] == dk["green"] and worst <= 1e-9 * s0
    print("results agree (singular values to 1e-9 s0)" if ok else "RESULTS DIFFER")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
