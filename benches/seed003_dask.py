"""Seed 003's dask code and blockflow on the same terrain (see seed003_dask.sh).

The dask side is the tutorial's code as written (two computes for the alpha
min and max, RGB to Zarr, feet, map_blocks(np.std) per 200 x 200 block, its
argmin, that block rechunked to 10 x 10 with std/min/max and diff), run
twice: with the seed's `(R @ G.T).sum()` in uint8 and without it. Each side
runs in its own process on 2 threads.
"""
import json
import os
import subprocess
import sys
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.path.join(ROOT, "target", "seed003-bench")

DASK = r'''
import json, resource, sys, time
import dask, dask.array as da
import numpy as np
dask.config.set(scheduler="threads", num_workers=2)
src, out, with_matmul = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
t0 = time.perf_counter()
arr = da.from_zarr(src, chunks=(200, 200, 4))
amin = int(arr[:, :, 3].min().compute())
amax = int(arr[:, :, 3].max().compute())
arr[:, :, :3].to_zarr(out + "/dask-rgb.zarr", overwrite=True)
elevations = da.from_zarr(out + "/dask-rgb.zarr")
total = None
if with_matmul:
    total = int((elevations[:, :, 0] @ elevations[:, :, 1].transpose()).sum().compute())
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
           "amin": amin, "amax": amax, "block": k, "matmul_sum_uint8": total,
           "zoom_std": zstd.tolist(), "zoom_max_dx": dx.tolist()},
          open(out + f"/dask{int(with_matmul)}.json", "w"))
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
    t = time.perf_counter()
    subprocess.run([exe, "run", "-q", cfg] + sets, check=True)
    bf = time.perf_counter() - t
    rep = json.load(open(f"{OUT}/report.json"))
    summ = json.load(open(f"{OUT}/summary.json"))
    print(f"blockflow: {bf:.1f} s, peak RSS {rep['peak_rss_bytes'] / 2**20:.0f} MiB; "
          f"exact (R @ G.T).sum() = {summ['matmul_sum']}")
    for with_matmul in ("0", "1"):
        subprocess.run([sys.executable, "-c", DASK, src, OUT, with_matmul], check=True)
        dk = json.load(open(f"{OUT}/dask{with_matmul}.json"))
        what = "as written, with the uint8 matmul" if with_matmul == "1" else "without the matmul step"
        print(f"dask ({what}): {dk['wall']:.1f} s, peak RSS {dk['rss'] / 2**20:.0f} MiB -> "
              f"blockflow is {dk['wall'] / bf:.1f}x faster, {rep['peak_rss_bytes'] / dk['rss']:.3f} of its RSS")
        if dk["matmul_sum_uint8"] is not None:
            print(f"  dask's uint8 (R @ G.T).sum() = {dk['matmul_sum_uint8']} (each product wrapped mod 256)")
        assert dk["block"] == summ["smoothest_block"], (dk["block"], summ["smoothest_block"])
        assert (dk["amin"], dk["amax"]) == (summ["alpha_min"], summ["alpha_max"])
        worst = max(abs(a - b) for ra, rb in zip(dk["zoom_std"], summ["zoom_std"]) for a, b in zip(ra, rb))
        assert worst <= 1e-10 * 100, worst
        assert dk["zoom_max_dx"] == summ["zoom_max_dx"]
    print("results agree: alpha min/max, the smoothest block, its 10 x 10 std (to 1e-8) and diff of maxima")


if __name__ == "__main__":
    main()
