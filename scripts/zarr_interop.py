#!/usr/bin/env python3
"""Zarr interoperability between blockflow and zarr-python 3, both ways.

1. zarr-python writes arrays in every form it writes by default or
   commonly -- Zarr v2 and v3; blosc (lz4, zstd, zlib; shuffle, bitshuffle,
   noshuffle), zstd, gzip, zlib, lz4, crc32c, transpose (v3) and order F
   (v2), either byte order, sharded (v3), with dimension names, in every
   dtype blockflow has -- and blockflow reads each (read-zarr, re-gridded
   where the form allows) and copies it; zarr-python reads the copy and
   compares it with what it wrote, element for element, and checks the
   copy carries the source's axis names.
2. blockflow writes every form it offers (format 2 and 3, each codec,
   blosc's compressors and shuffles, crc32c, big-endian, shards, axes);
   zarr-python reads each and compares it with the values, and checks the
   names (v3 `dimension_names`, v2 `_ARRAY_DIMENSIONS`), that no metadata
   carries zarrs' `_zarrs` attribute and that a v2 `.zarray` holds only
   the v2 spec's keys.

Needs zarr 3 and numpy in a virtualenv of its own:
    python3 -m venv .venv-interop && .venv-interop/bin/pip install zarr numpy
    cargo build --release -p blockflow
    .venv-interop/bin/python scripts/zarr_interop.py [path/to/blockflow]
Exit status 0 when every comparison is exact.
"""
import json
import os
import subprocess
import sys
import tempfile

import numcodecs
import numpy as np
import zarr
import zarr.codecs.numcodecs as zarr3_numcodecs
from zarr.codecs import (
    BloscCodec,
    BytesCodec,
    Crc32cCodec,
    GzipCodec,
    TransposeCodec,
    ZstdCodec,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "blockflow")
DTYPES = ("bool", "uint8", "uint16", "uint32", "int16", "int32", "int64", "float32", "float64")
V2_KEYS = {"zarr_format", "shape", "chunks", "dtype", "compressor", "fill_value", "order", "filters", "dimension_separator"}

failures = 0


def check(ok, what):
    global failures
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {what}")


def values(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    if dt.kind == "f":
        return rng.standard_normal(shape).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(max(info.min, -(2**40)), min(info.max, 2**40), size=shape, endpoint=True).astype(dt)


def same(back, data):
    """Equal shapes, dtypes up to byte order (a v2 `>i4` array reads as
    `>i4`), and every element."""
    return (back.dtype.newbyteorder("=") == data.dtype.newbyteorder("=") and back.shape == data.shape
            and np.array_equal(back, data))


def run(cfg_text, tmp, name):
    cfg = os.path.join(tmp, name + ".toml")
    with open(cfg, "w") as f:
        f.write(cfg_text)
    r = subprocess.run([BIN, "run", "-q", cfg, "--report", os.path.join(tmp, name + ".json")], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"FAIL blockflow on {name}:\n{r.stderr}")
        return False
    return True


def names_of(path):
    a = zarr.open_array(path, mode="r")
    if a.metadata.zarr_format == 3:
        return list(a.metadata.dimension_names) if a.metadata.dimension_names else None
    return a.attrs.asdict().get("_ARRAY_DIMENSIONS")


# Zarr-python sources: name -> (zarr_format, create_array kwargs beyond shape/dtype)
def sources():
    out = {}
    for cname in ("lz4", "zstd", "zlib"):
        for shuffle, v2s in (("shuffle", numcodecs.Blosc.SHUFFLE), ("bitshuffle", numcodecs.Blosc.BITSHUFFLE), ("noshuffle", numcodecs.Blosc.NOSHUFFLE)):
            out[f"v2-blosc-{cname}-{shuffle}"] = (2, dict(compressors=numcodecs.Blosc(cname=cname, clevel=5, shuffle=v2s)))
            out[f"v3-blosc-{cname}-{shuffle}"] = (3, dict(compressors=BloscCodec(cname=cname, clevel=5, shuffle=shuffle)))
    out["v2-default"] = (2, dict())
    out["v3-default"] = (3, dict())
    out["v2-zstd"] = (2, dict(compressors=numcodecs.Zstd(level=3)))
    out["v2-gzip"] = (2, dict(compressors=numcodecs.GZip(level=5)))
    out["v2-zlib"] = (2, dict(compressors=numcodecs.Zlib(level=5)))
    out["v2-lz4"] = (2, dict(compressors=numcodecs.LZ4()))
    out["v2-none"] = (2, dict(compressors=None))
    out["v2-order-F"] = (2, dict(compressors=numcodecs.Zstd(level=1), order="F"))
    out["v2-big-endian"] = (2, dict(compressors=numcodecs.Zstd(level=1), big=True))
    out["v3-zstd"] = (3, dict(compressors=ZstdCodec(level=3)))
    out["v3-zstd-checksum"] = (3, dict(compressors=ZstdCodec(level=3, checksum=True)))
    out["v3-gzip"] = (3, dict(compressors=GzipCodec(level=5)))
    out["v3-numcodecs.zlib"] = (3, dict(compressors=zarr3_numcodecs.Zlib(level=5)))
    out["v3-numcodecs.lz4"] = (3, dict(compressors=zarr3_numcodecs.LZ4()))
    out["v3-crc32c"] = (3, dict(compressors=[ZstdCodec(level=1), Crc32cCodec()]))
    out["v3-none"] = (3, dict(compressors=None))
    out["v3-transpose"] = (3, dict(filters=[TransposeCodec(order=(1, 0, 2))], compressors=ZstdCodec(level=1)))
    out["v3-big-endian"] = (3, dict(serializer=BytesCodec(endian="big"), compressors=GzipCodec(level=1)))
    out["v3-sharded"] = (3, dict(shards=(40, 32, 3), compressors=ZstdCodec(level=1)))
    out["v3-sharded-blosc-crc"] = (3, dict(shards=(20, 48, 3), compressors=[BloscCodec(cname="lz4", shuffle="bitshuffle"), Crc32cCodec()]))
    return out


def create(path, data, chunks, fmt, kw, names):
    kw = dict(kw)
    dtype = data.dtype
    if kw.pop("big", False):
        dtype = dtype.newbyteorder(">")
    if fmt == 3:
        kw["dimension_names"] = names
    else:
        kw["attributes"] = {"_ARRAY_DIMENSIONS": names}
    a = zarr.create_array(store=path, shape=data.shape, chunks=chunks, dtype=dtype, zarr_format=fmt, **kw)
    a[...] = data


def read_side(tmp):
    """zarr-python writes; blockflow reads and copies; zarr-python compares."""
    shape, chunks, names = (67, 45, 3), (10, 16, 3), ["y", "x", "c"]
    forms = sources()
    cases = [(name, fmt, kw, "uint16") for name, (fmt, kw) in forms.items()]
    # Every dtype, in both formats' defaults and sharded.
    for dtype in DTYPES:
        cases.append((f"v2-default-{dtype}", 2, {}, dtype))
        cases.append((f"v3-sharded-{dtype}", 3, dict(shards=(20, 32, 3)), dtype))
    for k, (name, fmt, kw, dtype) in enumerate(cases):
        data = values(dtype, shape, k)
        src = os.path.join(tmp, f"src-{name}.zarr")
        create(src, data, chunks, fmt, kw, names)
        # Read twice: in the stored grid, and re-gridded finer (each stored
        # chunk decoded once and cut) into a v3 copy.
        for regrid in (None, [5, 8, 3]):
            out = os.path.join(tmp, f"copy-{name}-{bool(regrid)}.zarr")
            chunk_line = f"chunks = {json.dumps(regrid)}" if regrid else ""
            if not run(f"""
[stage.r]
kind = "read-zarr"
path = "{src}"
{chunk_line}

[stage.w]
kind = "write-zarr"
inputs = ["r"]
path = "{out}"
codec = "none"
""", tmp, f"read-{name}-{bool(regrid)}"):
                check(False, f"zarr-python {name} ({dtype}) -> blockflow")
                continue
            back = zarr.open_array(out, mode="r")[...]
            ok = same(back, data)
            ok_names = names_of(out) == names
            check(ok and ok_names, f"zarr-python {name} ({dtype}) -> blockflow{' re-gridded' if regrid else ''}: values {'exact' if ok else 'DIFFER'}, names {names_of(out)}")


# What blockflow writes: name -> write-zarr parameters.
def writer_forms():
    out = {}
    for fmt in (2, 3):
        for codec in ("zstd", "gzip", "zlib", "lz4", "none"):
            out[f"v{fmt}-{codec}"] = dict(format=fmt, codec=codec)
        for cname in ("lz4", "zstd", "zlib"):
            for shuffle in ("shuffle", "bitshuffle", "noshuffle"):
                out[f"v{fmt}-blosc-{cname}-{shuffle}"] = dict(format=fmt, codec="blosc", cname=cname, shuffle=shuffle)
        out[f"v{fmt}-big-endian"] = dict(format=fmt, codec="zstd", endian="big")
    out["v3-crc32c"] = dict(format=3, codec="zstd", checksum=True)
    out["v3-sharded"] = dict(format=3, codec="zstd", chunks=[10, 16, 3], shards=[20, 32, 3])
    out["v3-sharded-blosc-crc32c-big"] = dict(format=3, codec="blosc", cname="lz4", chunks=[10, 8, 3], shards=[30, 48, 3], checksum=True, endian="big")
    return out


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return json.dumps(v)


def write_side(tmp):
    """blockflow writes every form; zarr-python reads and compares."""
    shape, chunks = (67, 45, 3), (10, 16, 3)
    cases = [(name, params, "int32") for name, params in writer_forms().items()]
    for dtype in DTYPES:
        cases.append((f"v3-sharded-{dtype}", dict(format=3, chunks=[10, 16, 3], shards=[20, 32, 3]), dtype))
        cases.append((f"v2-{dtype}", dict(format=2), dtype))
    for k, (name, params, dtype) in enumerate(cases):
        data = values(dtype, shape, 1000 + k)
        src = os.path.join(tmp, f"wsrc-{name}.zarr")
        # A source without names, so the names come from `axes`.
        zarr.create_array(store=src, shape=shape, chunks=chunks, dtype=data.dtype, zarr_format=3)[...] = data
        out = os.path.join(tmp, f"bf-{name}.zarr")
        lines = "\n".join(f"{key} = {toml_value(v)}" for key, v in params.items())
        if not run(f"""
[stage.r]
kind = "read-zarr"
path = "{src}"
chunks = [20, 16, 3]

[stage.w]
kind = "write-zarr"
inputs = ["r"]
path = "{out}"
axes = ["y", "x", "c"]
{lines}
""", tmp, f"write-{name}"):
            check(False, f"blockflow {name} ({dtype}) -> zarr-python")
            continue
        a = zarr.open_array(out, mode="r")
        back = a[...]
        ok = same(back, data)
        names = names_of(out)
        text = ""
        for f in ("zarr.json", ".zarray", ".zattrs"):
            p = os.path.join(out, f)
            if os.path.exists(p):
                text += open(p).read()
        clean = "_zarrs" not in text
        if params["format"] == 2:
            clean = clean and set(json.load(open(os.path.join(out, ".zarray")))) <= V2_KEYS
        sharded = "shards" not in params or a.shards == tuple(params["shards"])
        check(ok and names == ["y", "x", "c"] and clean and sharded,
              f"blockflow {name} ({dtype}) -> zarr-python: values {'exact' if ok else 'DIFFER'}, names {names}, "
              f"metadata {'standard' if clean else 'NOT standard'}{', shards ' + str(a.shards) if 'shards' in params else ''}")


def main():
    print(f"zarr {zarr.__version__}, numcodecs {numcodecs.__version__}, numpy {np.__version__}; {BIN}")
    with tempfile.TemporaryDirectory() as tmp:
        read_side(tmp)
        write_side(tmp)
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
