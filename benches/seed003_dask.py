"""Seed 003's dask code and blockflow on the same terrain (see seed003_dask.sh).

The dask side is the tutorial's code as written (two computes for the alpha
min and max, RGB to Zarr, feet, map_blocks(np.std) per 200 x 200 block, its
argmin, that block rechunked to 10 x 10 with std/min/max and diff), with
the seed's `(R @ G.T).sum()` computed exactly, by a float64 matmul (in uint8
as the tutorial writes it each product wraps mod 256: not a result anyone
wants, and blockflow computes the exact sum). Each side runs in its own
process on 2 threads; the sides alternate, ROUNDS (default 3) runs each, and
the medians are compared (benches/sidebyside.py).
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sidebyside  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.path.join(ROOT, "target", "seed003-bench")

DASK = r'''
import json, resource, sys, time
import dask, dask.array as da
import numpy as np
dask.config.set(scheduler="threads", num_workers=2)
src, out = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
arr = da.from_zarr(src, chunks=(200, 200, 4))
amin = int(arr[:, :, 3].min().compute())
amax = int(arr[:, :, 3].max().compute())
arr[:, :, :3].to_zarr(out + "/dask-rgb.zarr", overwrite=True)
elevations = da.from_zarr(out + "/dask-rgb.zarr")
R = elevations[:, :, 0].astype(np.float64)
G = elevations[:, :, 1].astype(np.float64)
total = int((R @ G.transpose()).sum().compute())
gray = 0.21 * elevations[:, :, 0] + 0.72 * elevations[:, :, 1] + 0.07 * elevations[:, :, 2]
scaled = (1070 / 255) * gray + 30
def elevation_std(block):
    return np.array([[np.std(block)]])
variance = scaled.map_blocks(elevation_std, chunks=(1, 1)).compute()
k = int(np.argmin(variance))
by, bx = np.unravel_index(k, variance.shape)
target = scaled.blocks[by, bx].rechunk((10, 10))
zstd = target.map_blocks(elevation_std, chunks=(1, 1)).compute()
zmax = target.map_blocks(lambda b: np.array([[b.max()]]), chunks=(1, 1)).compute()
zmin = target.map_blocks(lambda b: np.array([[b.min()]]), chunks=(1, 1)).compute()
dx = np.diff(zmax, axis=1)
wall = time.perf_counter() - t0
json.dump({"wall": wall, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           "amin": amin, "amax": amax, "block": k, "matmul_sum": total,
           "zoom_std": zstd.tolist(), "zoom_max_dx": dx.tolist()},
          open(out + "/dask.json", "w"))
'''


def main():
    size = int(sys.argv[1])
    os.makedirs(OUT, exist_ok=True)
    exe = os.path.join(ROOT, "target", "release", "blockflow")
    src = os.path.join(OUT, f"terrain-{size}.zarr")
    if not os.path.exists(os.path.join(src, "zarr.json")):
        cfg = os.path.join(OUT, "make.toml")
        open(cfg, "w").write(
            f'[stage.t]\nkind = "synthetic"\npattern = "terrain"\nshape = [{size}, {size}, 4]\n'
            f'chunks = [200, 200, 4]\ndtype = "uint8"\nseed = 3\n\n'
            f'[stage.w]\nkind = "write-zarr"\ninputs = ["t"]\npath = "{src}"\n')
        subprocess.run([exe, "run", "-q", cfg], check=True)
    sets = ["--set", "terrain.kind=read-zarr", "--set", f"terrain.path={src}",
            "--set", f"pipeline.report={OUT}/report.json"]
    for k, f in (("rgb_out", "rgb.zarr"), ("block_std_out", "std.zarr"), ("summary", "summary.json")):
        sets += ["--set", f"{k}.path={OUT}/{f}"]
    cfg = os.path.join(ROOT, "configs", "elevation.toml")
    print(f"seed 003 at {size} x {size} x 4 uint8, {sidebyside.rounds()} alternating rounds")
    med = sidebyside.alternate(
        [("dask", [sys.executable, "-c", DASK, src, OUT]),
         ("blockflow", [exe, "run", "-q", cfg] + sets)],
        sidebyside.rounds(),
    )
    summ = json.load(open(f"{OUT}/summary.json"))
    dk = json.load(open(f"{OUT}/dask.json"))
    sidebyside.summary(f"seed 003 at {size} x {size}:", med)
    print(f"  (R @ G.T).sum(): blockflow {summ['matmul_sum']}, dask (float64) {dk['matmul_sum']}")
    worst = max(abs(a - b) for ra, rb in zip(dk["zoom_std"], summ["zoom_std"]) for a, b in zip(ra, rb))
    ok = (dk["block"] == summ["smoothest_block"]
          and (dk["amin"], dk["amax"]) == (summ["alpha_min"], summ["alpha_max"])
          and worst <= 1e-8
          and dk["zoom_max_dx"] == summ["zoom_max_dx"]
          and int(summ["matmul_sum"]) == dk["matmul_sum"])
    print("results agree: alpha min/max, the matmul sum, the smoothest block, its 10 x 10 std (to 1e-8) and diff of maxima"
          if ok else "RESULTS DIFFER")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
