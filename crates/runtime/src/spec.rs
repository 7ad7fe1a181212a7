//! The stage kinds and their parameters: the one table the parser checks
//! configs against and `blockflow stages` prints, so the two cannot drift.

pub use crate::stages::params::{p, Arity, PType, ParamSpec};

/// A stage kind.
#[derive(Debug, Clone, Copy)]
pub struct KindSpec {
    pub kind: &'static str,
    pub role: &'static str,
    pub summary: &'static str,
    pub inputs: Arity,
    pub params: &'static [ParamSpec],
}

/// Parameters every stage has.
pub const COMMON: &[ParamSpec] = &[
    p(
        "kind",
        PType::Str,
        None,
        "the stage kind (this table's headings)",
    ),
    p(
        "inputs",
        PType::Stages,
        Some(""),
        "the stages whose output this stage consumes, in order",
    ),
    p(
        "capacity",
        PType::Int(1, 1024),
        Some(""),
        "chunks the output channel holds (default: the pipeline's `capacity`)",
    ),
    p(
        "parallel",
        PType::Int(1, 256),
        Some(""),
        "chunks this stage works on at once (default: the pipeline's `threads`)",
    ),
];

/// Parameters of the `[pipeline]` table.
pub const PIPELINE: &[ParamSpec] = &[
    p(
        "name",
        PType::Str,
        Some(""),
        "a name for reports (default: the file's stem)",
    ),
    p(
        "memory",
        PType::Size,
        Some("1 GiB"),
        "the budget: a plan whose projected peak exceeds it is refused",
    ),
    p(
        "threads",
        PType::Int(1, 1024),
        Some(""),
        "compute threads (default: all cores)",
    ),
    p(
        "capacity",
        PType::Int(1, 1024),
        Some("2"),
        "default chunks per channel",
    ),
    p(
        "report",
        PType::Path,
        Some(""),
        "where the JSON run report goes (default: <name>.report.json in the working directory)",
    ),
    p(
        "scratch",
        PType::Path,
        Some(""),
        "the folder for intermediate stores (a rechunk through disk); default: the folder of the first Zarr output, else the system's temporary folder",
    ),
];

/// Parameters of the `[follow]` table (`blockflow run --follow`).
pub const FOLLOW: &[ParamSpec] = &[
    p(
        "settle",
        PType::Duration,
        Some("2s"),
        "a file counts as complete once its size and modification time have not changed for this long; \"0s\" where files are renamed into place whole",
    ),
    p(
        "poll",
        PType::Duration,
        Some("250ms"),
        "how often the folder is listed",
    ),
    p(
        "quarantine",
        PType::Path,
        Some(""),
        "where a file that cannot be read is moved, with a .reason.txt beside it (default: `quarantine/` in the watched folder)",
    ),
    p(
        "state",
        PType::Path,
        Some(""),
        "the ingest's folder: manifest.jsonl (every timepoint done, once) and the registration reference (default: <output>.state beside the Zarr output)",
    ),
    p(
        "stats",
        PType::Path,
        Some(""),
        "the running per-voxel statistics along time (Welford), a Zarr group with `mean`, `std` (ddof 0) and `m2` (default: <output>.stats beside the Zarr output)",
    ),
    p(
        "checkpoint",
        PType::Duration,
        Some("10s"),
        "how often the statistics (and a write-json of shifts) are written; always on exit",
    ),
    p(
        "idle_exit",
        PType::Duration,
        Some(""),
        "exit (0) once nothing has arrived and nothing is pending for this long (default: run until SIGTERM or Ctrl-C)",
    ),
];

pub const KINDS: &[KindSpec] = &[
    KindSpec {
        kind: "synthetic",
        role: "reader",
        summary: "a deterministic generated array; any chunking gives the same values",
        inputs: Arity::None,
        params: &[
            p("shape", PType::Shape, None, "array shape"),
            p("chunks", PType::Shape, None, "chunk shape"),
            p("dtype", PType::DType, Some("float32"), "element type"),
            p("pattern", PType::Choice(&["survey", "terrain", "noise", "ramp"]), Some("noise"),
              "survey: RGB sky with galaxies, stars, red blobs (H, W, 3) in [0, 1]; terrain: RGBA elevation colours (H, W, 4) 0..255; noise: uniform; ramp: flat index"),
            p("seed", PType::Int(0, i64::MAX), Some("0"), "random seed"),
        ],
    },
    KindSpec {
        kind: "read-zarr",
        role: "reader",
        summary: "a Zarr v2 or v3 array, read chunk by chunk (only the stored chunks each region needs)",
        inputs: Arity::None,
        params: &[
            p("path", PType::Path, None, "the array's directory (relative paths are from the config's folder)"),
            p("chunks", PType::Shape, Some(""), "stream chunks, if not the stored ones (as dask's from_zarr(chunks=...))"),
        ],
    },
    KindSpec {
        kind: "read-hdf5",
        role: "reader",
        summary: "one dataset of one HDF5 file, read by hyperslabs (uint8..uint32, int16..int64, float32, float64); HDF5 I/O runs one chunk at a time (the library's global lock)",
        inputs: Arity::None,
        params: &[
            p("path", PType::Path, None, "the HDF5 file"),
            p("dataset", PType::Str, None, "the dataset's path in the file, e.g. `data` or `/group/volume`"),
            p("chunks", PType::Shape, Some(""), "the chunks to stream (default: the dataset's own chunks, or the whole dataset)"),
        ],
    },
    KindSpec {
        kind: "read-hdf5-stack",
        role: "reader",
        summary: "a glob of per-timepoint HDF5 files (natural order of their names: t2 before t10), each holding `dataset` of one shape and dtype, stacked on a new leading axis; a file whose dataset is missing or differs is an error naming the file and the dataset",
        inputs: Arity::None,
        params: &[
            p("path", PType::Path, None, "a glob whose wildcards are in the file name: `volumes/t_*.h5`"),
            p("dataset", PType::Str, None, "the dataset in every file"),
            p("index", PType::Str, Some(""), "order the files by the integer a regex's first group captures from their names, e.g. `_(\\d+)\\.h5$` (default: natural order of the names)"),
            p("index", PType::Str, Some(""), "order the files by the integer a regex's first group captures from their names, e.g. `_(\\d+)\\.h5$` (default: natural order of the names)"),
            p("chunks", PType::Shape, Some(""), "the chunks to stream (default: one whole timepoint per chunk)"),
        ],
    },
    KindSpec {
        kind: "read-images",
        role: "reader",
        summary: "a sorted glob of PNG, JPEG or TIFF files (format by content) as one (N, H, W, C) array, `batch` images per chunk; every image must have the first one's shape and dtype (an error names the file that differs or does not decode)",
        inputs: Arity::None,
        params: &[
            p("path", PType::Path, None, "a glob whose wildcards (*, ?, [abc]) are in the file name: `cells/*.png`; sorted as Python's sorted(glob(...))"),
            p("batch", PType::Int(1, 1_000_000), Some("1"), "images per chunk"),
        ],
    },
    KindSpec {
        kind: "write-hdf5",
        role: "writer",
        summary: "the stream as one chunked HDF5 dataset, written in `PATH.partial` and moved into place when the whole run succeeded; readable by h5py",
        inputs: Arity::Exactly(1),
        params: &[
            p("path", PType::Path, None, "the HDF5 file"),
            p("dataset", PType::Str, Some("data"), "the dataset's name"),
            p("chunks", PType::Shape, Some(""), "the dataset's chunks (default: the stream's)"),
            p("if_exists", PType::Choice(&["fail", "overwrite"]), Some("fail"), "what to do when the file exists"),
        ],
    },
    KindSpec {
        kind: "write-csv",
        role: "writer",
        summary: "small arrays of the same length N (1-D, or 2-D (N, C)) as one CSV table: a row per index, a column per input (name) or per input and column (name_0, name_1, ...)",
        inputs: Arity::AtLeast(1),
        params: &[
            p("path", PType::Path, None, "the CSV file"),
            p("if_exists", PType::Choice(&["fail", "overwrite"]), Some("fail"), "what to do when the file exists"),
        ],
    },
    KindSpec {
        kind: "write-json",
        role: "writer",
        summary: "small results (a reduction's scalar, a per-block table) as one JSON document, one key per input stage",
        inputs: Arity::AtLeast(1),
        params: &[
            p("path", PType::Path, None, "the JSON file"),
            p("if_exists", PType::Choice(&["fail", "overwrite"]), Some("fail"), "what to do when the file exists"),
        ],
    },
    KindSpec {
        kind: "write-blocks",
        role: "writer",
        summary: "per chunk (block), how many values exceed a threshold; the blocks with any, as JSON (and every block's count as CSV)",
        inputs: Arity::Exactly(1),
        params: &[
            p("path", PType::Path, None, "the JSON file"),
            p("csv", PType::Path, Some(""), "a CSV file with every block's count and maximum"),
            p("threshold", PType::Float, None, "values above it count (NaN never does)"),
            p("if_exists", PType::Choice(&["fail", "overwrite"]), Some("fail"), "what to do when a file exists"),
        ],
    },
    KindSpec {
        kind: "write-png",
        role: "writer",
        summary: "a PNG preview of an (H, W) or RGB (H, W, 3) array: a region, or the whole array averaged down, stretched between percentiles",
        inputs: Arity::Exactly(1),
        params: &[
            p("path", PType::Path, None, "the PNG file"),
            p("max_size", PType::Int(8, 16384), Some("1024"), "the picture's longer side in pixels (the array is block-averaged down to it)"),
            p("region", PType::Ints, Some(""), "[y0, y1, x0, x1]: preview only this part of the array"),
            p("colormap", PType::Choice(&["gray", "viridis", "pink_r"]), Some("gray"), "for single-channel arrays"),
            p("percentiles", PType::Floats, Some("[1.0, 99.5]"), "values at these percentiles map to the ends of the colormap"),
            p("downsample", PType::Choice(&["mean", "max"]), Some("mean"), "how a block of pixels becomes one: mean, or max (for sparse peaks)"),
            p("if_exists", PType::Choice(&["fail", "overwrite"]), Some("fail"), "what to do when the file exists"),
        ],
    },
    KindSpec {
        kind: "write-zarr",
        role: "writer",
        summary: "writes its input as a Zarr array; chunk files are atomic and the array appears at `path` only when the run succeeds",
        inputs: Arity::Exactly(1),
        params: &[
            p("path", PType::Path, None, "the array's directory (relative paths are from the config's folder)"),
            p("format", PType::Int(2, 3), Some("3"), "Zarr format, 2 or 3"),
            p("chunks", PType::Shape, Some(""), "stored chunks (default: the stream's); each must divide the stream's chunks"),
            p("codec", PType::Choice(&["zstd", "blosc", "gzip", "none"]), Some("zstd"), "compression"),
            p("level", PType::Int(0, 22), Some("3"), "compression level"),
            p("if_exists", PType::Choice(&["fail", "overwrite"]), Some("fail"), "what to do when `path` exists"),
        ],
    },
];

/// A kind from either table: `stages::KINDS` (kinds defined in their own
/// file) or the rows above (kinds not moved there yet).
#[derive(Debug, Clone, Copy)]
pub struct KindRef {
    pub kind: &'static str,
    pub role: &'static str,
    pub summary: &'static str,
    pub inputs: Arity,
    pub params: &'static [ParamSpec],
    pub def: Option<&'static crate::stages::KindDef>,
}

pub fn kind(name: &str) -> Option<KindRef> {
    all().into_iter().find(|k| k.kind == name)
}

/// Every kind.
pub fn all() -> Vec<KindRef> {
    let old = KINDS.iter().map(|k| KindRef {
        kind: k.kind,
        role: k.role,
        summary: k.summary,
        inputs: k.inputs,
        params: k.params,
        def: None,
    });
    let new = crate::stages::KINDS.iter().map(|k| KindRef {
        kind: k.kind,
        role: k.role,
        summary: k.summary,
        inputs: k.inputs,
        params: k.params,
        def: Some(*k),
    });
    new.chain(old).collect()
}

/// The text of `blockflow stages`.
pub fn describe_all() -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let table = |s: &mut String, params: &[ParamSpec]| {
        for prm in params {
            let default = match prm.default {
                None => "required".to_string(),
                Some("") => "optional".to_string(),
                Some(d) => format!("default {d}"),
            };
            let _ = writeln!(
                s,
                "    {:<10} {:<28} {:<16} {}",
                prm.name,
                prm.ty.describe(),
                default,
                prm.doc
            );
        }
    };
    let _ = writeln!(s, "[pipeline]");
    table(&mut s, PIPELINE);
    let _ = writeln!(
        s,
        "\n[follow]  (blockflow run --follow: watch the folder of a read-hdf5-stack stage)"
    );
    table(&mut s, FOLLOW);
    let _ = writeln!(s, "\nevery [stage.NAME]");
    table(&mut s, COMMON);
    for k in all() {
        let inputs = match k.inputs {
            Arity::None => "no inputs".to_string(),
            Arity::Exactly(n) => format!("{n} input{}", if n == 1 { "" } else { "s" }),
            Arity::AtLeast(n) => format!("{n} or more inputs"),
        };
        let _ = writeln!(
            s,
            "\nkind = \"{}\"  ({}, {}): {}",
            k.kind, k.role, inputs, k.summary
        );
        table(&mut s, k.params);
        if let Some(def) = k.def {
            let _ = writeln!(s, "  example:\n    kind = \"{}\"", k.kind);
            for line in def.example.lines() {
                let _ = writeln!(s, "    {line}");
            }
        }
    }
    let _ = writeln!(s, "\nexpression reference (kind = \"expr\"):");
    for (f, doc) in blockflow_kernels::expr::FUNCTIONS {
        let _ = writeln!(s, "    {f:<52} {doc}");
    }
    s
}
