#!/usr/bin/env python3
"""OME-Zarr outputs of the seed configs, read by ome-zarr-py and napari.

Runs each seed config that writes OME-Zarr images (structure-tensor,
survey, cells, timeseries, elevation) with blockflow at a reduced size into
a temporary folder, then for every OME-Zarr image written:

1. `ome_zarr info PATH` (ome-zarr-py's command line) must list the image
   (it says "not a zarr" or prints nothing for anything else);
2. napari's OME-Zarr reader plugin (napari-ome-zarr's
   `napari_get_reader(path)(path)`, no viewer, no Qt) must return the
   image's layer data: every level, each a 2x halving of the space axes of
   the one before, the shapes `multiscales` lists, and the layer's scale
   the level-0 pixel size of the metadata (napari drops the channel axis
   into one layer per channel, `channel_axis`);
3. every level read through ome-zarr-py's `Reader` must equal a 2x block
   mean (numpy) of the level below, within float32 rounding (1 unit for
   integer images, whose means are rounded).

Needs ome-zarr, napari-ome-zarr (and napari, which it imports) in a
virtualenv of its own; no display:
    python3 -m venv .venv-ome && .venv-ome/bin/pip install ome-zarr napari-ome-zarr napari
    cargo build --release -p blockflow
    .venv-ome/bin/python scripts/ome_interop.py [path/to/blockflow]
Prints "N checks, 0 failed" and exits 0 when everything holds.
"""
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import zarr
from napari_ome_zarr import napari_get_reader
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "blockflow")
OME_ZARR = os.path.join(os.path.dirname(sys.executable), "ome_zarr")

checks = 0
failures = 0


def check(ok, what):
    global checks, failures
    checks += 1
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {what}")
    return ok


def run(args):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        print(" ".join(args))
        print(r.stdout, r.stderr)
    return r


# Each seed config, the sets that shrink its input, and the images it writes.
SEEDS = [
    ("structure-tensor", ["img.shape=[1200, 1350, 3]"], ["features.zarr"]),
    ("survey", ["img.shape=[1200, 1350, 3]"], ["survey-gray.zarr", "survey-rgb8.zarr"]),
    ("elevation", ["terrain.shape=[1600, 1600, 4]"], ["elevation-rgb.zarr"]),
    ("cells", [], ["cells-rescaled.zarr"]),
    ("timeseries", [], ["timeseries-zscore.zarr"]),
]


def attributes(path):
    """The group's NGFF attributes (0.5: under `ome`; 0.4: `.zattrs`)."""
    if os.path.exists(os.path.join(path, "zarr.json")):
        with open(os.path.join(path, "zarr.json")) as f:
            return json.load(f)["attributes"]["ome"]
    with open(os.path.join(path, ".zattrs")) as f:
        return json.load(f)


def block_mean(a, factors):
    """numpy: the mean of each block of `factors` (edge blocks of the values
    present), as `a[i*f:(i+1)*f, ...].mean()`."""
    out = a.astype(np.float64)
    for ax, f in enumerate(factors):
        if f == 1:
            continue
        n = out.shape[ax]
        starts = np.arange(0, n, f)
        sums = np.add.reduceat(out, starts, axis=ax)
        counts = np.diff(np.append(starts, n)).astype(np.float64)
        shape = [1] * out.ndim
        shape[ax] = -1
        out = sums / counts.reshape(shape)
    return out


def check_image(path):
    name = os.path.basename(path)
    meta = attributes(path)
    ms = meta["multiscales"][0]
    axes = [a["name"] for a in ms["axes"]]
    datasets = ms["datasets"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in datasets]

    info = run([OME_ZARR, "info", path])
    check(info.returncode == 0 and "zarr" in info.stdout and "not a zarr" not in info.stdout,
          f"{name}: ome_zarr info lists it ({info.stdout.strip().splitlines()[0] if info.stdout.strip() else 'nothing'})")

    arrays = [zarr.open_array(os.path.join(path, d["path"]), mode="r") for d in datasets]
    shapes = [a.shape for a in arrays]

    # napari's reader, as napari calls it when a user opens the folder.
    reader = napari_get_reader(path)
    if not check(reader is not None, f"{name}: napari-ome-zarr takes the path"):
        return
    layers = reader(path)
    image_layers = [l for l in layers if (l[2] if len(l) > 2 else "image") == "image"]
    if not check(len(image_layers) == 1, f"{name}: napari reads one image layer ({len(layers)} layers)"):
        return
    data, kwargs = image_layers[0][0], image_layers[0][1]
    levels = data if isinstance(data, list) else [data]
    check([tuple(l.shape) for l in levels] == [tuple(s) for s in shapes],
          f"{name}: napari loads all {len(levels)} levels with the listed shapes {shapes}")
    c = axes.index("c") if "c" in axes else None
    check(kwargs.get("channel_axis") == c, f"{name}: napari's channel axis is {c} (axes {axes})")
    scale = kwargs.get("scale")
    want_scale = [s for k, s in enumerate(scales[0]) if k != c]
    check(scale is not None and np.allclose(scale, want_scale),
          f"{name}: napari's layer scale {scale} is level 0's pixel size {want_scale}")
    # Every level: loaded (computed) by napari's dask arrays, each a
    # halving of the one before (an axis of 1 is left), with the scale
    # doubling there, and the block mean of level 0 over the blocks its
    # scale says (2^k level-0 pixels; fewer at an odd edge).
    level0 = np.asarray(levels[0]).astype(np.float64)
    ok = True
    for k in range(1, len(levels)):
        prev, cur = levels[k - 1], np.asarray(levels[k])
        halve = [prev.shape[a] != cur.shape[a] for a in range(prev.ndim)]
        ok &= all(cur.shape[a] == (prev.shape[a] + 1) // 2 if h else cur.shape[a] == prev.shape[a]
                  for a, h in enumerate(halve))
        ok &= all(np.isclose(scales[k][a], scales[k - 1][a] * (2 if h else 1)) for a, h in enumerate(halve))
        factors = [int(round(scales[k][a] / scales[0][a])) for a in range(cur.ndim)]
        want = block_mean(level0, factors)
        if np.issubdtype(cur.dtype, np.floating):
            tol = 1e-5 * max(1.0, float(np.nanmax(np.abs(want))))
        else:
            tol = 0.5 * k + 1e-9  # each level rounds its mean once more
        err = float(np.nanmax(np.abs(cur.astype(np.float64) - want))) if cur.size else 0.0
        if not check(err <= tol, f"{name}: level {k} {cur.shape} is the block mean of level 0 over {factors} (max diff {err:.3g})"):
            ok = False
    check(ok, f"{name}: every level halves the space axes and doubles their scale")

    # ome-zarr-py's own reader: the node is a multiscale image.
    nodes = list(Reader(parse_url(path))())
    check(bool(nodes) and len(nodes[0].data) == len(datasets),
          f"{name}: ome-zarr-py's Reader finds {len(datasets)} levels")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        run([BIN, "generate", "cells", os.path.join(tmp, "cells"), "--count", "20", "--size", "128"])
        run([BIN, "generate", "timeseries", os.path.join(tmp, "volumes"), "--count", "4", "--size", "40"])
        for seed, sets, images in SEEDS:
            out = os.path.join(tmp, "out-" + seed)
            args = [BIN, "run", "-q", os.path.join(ROOT, "configs", seed + ".toml"), "--out", out]
            if seed == "cells":
                sets = sets + [f"cells.path=\"{tmp}/cells/*.png\""]
            if seed == "timeseries":
                sets = sets + [f"volumes.path=\"{tmp}/volumes/t_*.h5\"", "series.chunks=[-1, 10, 10, 10]"]
            for s in sets:
                args += ["--set", s]
            r = run(args)
            if not check(r.returncode == 0, f"{seed}: blockflow run"):
                continue
            for image in images:
                check_image(os.path.join(out, image))
    print(f"{checks} checks, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
