#!/usr/bin/env python3
"""HDF5 interoperability between blockflow and h5py, both ways.

1. h5py writes a dataset with gzip + shuffle in chunks; blockflow reads it
   (read-hdf5) and writes it back with every compression it offers;
   h5py reads each copy and compares it with the original element for
   element, and checks the copy's chunks, filters and attributes
   (pipeline, stage, blockflow_version).
2. The same for every dtype blockflow writes to HDF5.

Needs h5py and numpy; run it from a virtualenv:
    python3 -m venv .venv && .venv/bin/pip install h5py numpy
    .venv/bin/python scripts/hdf5_interop.py [path/to/blockflow]
Exit status 0 when every comparison is exact.
"""
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "blockflow")

DTYPES = ["uint8", "uint16", "uint32", "int16", "int32", "int64", "float32", "float64"]
WRITES = [
    ("none", {}),
    ("gzip", {"level": 1, "shuffle": "false"}),
    ("gzip", {"level": 9, "shuffle": "true"}),
]


def copy_config(src, dst, compression, extra):
    lines = [
        '[pipeline]\nname = "h5copy"\nmemory = "256 MiB"\n',
        f'[stage.src]\nkind = "read-hdf5"\npath = "{src}"\ndataset = "data"\nchunks = [7, 11, 13]\n'
        'axes = ["z", "y", "x"]\n',
        f'[stage.dst]\nkind = "write-hdf5"\ninputs = ["src"]\npath = "{dst}"\ndataset = "copy"\n'
        f'chunks = [8, 16, 16]\ncompression = "{compression}"\n',
    ]
    for k, v in extra.items():
        lines.append(f"{k} = {v}\n")
    return "".join(lines)


def main():
    failures = []
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in DTYPES:
            info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
            if info is not None:
                data = rng.integers(max(info.min, -1000), min(info.max, 1000), size=(20, 30, 26)).astype(dtype)
            else:
                data = rng.standard_normal((20, 30, 26)).astype(dtype)
            src = os.path.join(tmp, f"{dtype}.h5")
            with h5py.File(src, "w") as f:
                f.create_dataset("data", data=data, chunks=(10, 15, 13), compression="gzip", shuffle=True)
            for k, (compression, extra) in enumerate(WRITES):
                dst = os.path.join(tmp, f"{dtype}-{k}.h5")
                cfg = os.path.join(tmp, f"{dtype}-{k}.toml")
                with open(cfg, "w") as f:
                    f.write(copy_config(src, dst, compression, extra))
                run = subprocess.run([BIN, "run", "-q", cfg, "--report", os.path.join(tmp, "r.json")],
                                     capture_output=True, text=True)
                what = f"{dtype} {compression} {extra}"
                if run.returncode != 0:
                    failures.append(f"{what}: blockflow failed: {run.stderr.strip()}")
                    continue
                with h5py.File(dst, "r") as f:
                    ds = f["copy"]
                    got = ds[...]
                    if got.dtype != data.dtype or not np.array_equal(got, data):
                        failures.append(f"{what}: values or dtype differ ({got.dtype})")
                    if ds.chunks != (8, 16, 16):
                        failures.append(f"{what}: chunks {ds.chunks}")
                    want_comp = None if compression == "none" else "gzip"
                    if ds.compression != want_comp:
                        failures.append(f"{what}: compression {ds.compression}")
                    if want_comp and ds.compression_opts != extra["level"]:
                        failures.append(f"{what}: level {ds.compression_opts}")
                    if want_comp and ds.shuffle != (extra["shuffle"] == "true"):
                        failures.append(f"{what}: shuffle {ds.shuffle}")
                    attrs = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in ds.attrs.items()}
                    if attrs.get("pipeline") != "h5copy" or attrs.get("stage") != "dst" or not attrs.get("blockflow_version"):
                        failures.append(f"{what}: attributes {attrs}")
                    labels = [d.label for d in ds.dims]
                    if labels != ["z", "y", "x"]:
                        failures.append(f"{what}: dimension labels {labels}")
                print(f"ok   {what}" if not failures or not failures[-1].startswith(what) else f"FAIL {what}")
    for f in failures:
        print("FAIL", f)
    print(f"{len(DTYPES) * len(WRITES)} copies checked, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
