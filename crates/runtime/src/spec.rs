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
        kind: "expr",
        role: "kernel",
        summary: "an elementwise expression over its inputs (numpy semantics); see the expression reference below",
        inputs: Arity::AtLeast(1),
        params: &[p("expr", PType::Expr, None, "the expression; inputs by stage name, `x` is the first")],
    },
    KindSpec {
        kind: "filter",
        role: "kernel",
        summary: "a separable filter with scipy.ndimage's conventions; the planner gives chunks their halo, and consecutive filters run fused in one pass",
        inputs: Arity::Exactly(1),
        params: &[
            p("filter", PType::Choice(&["gaussian", "uniform", "sobel", "correlate1d", "convolve1d", "difference"]), None, "which filter"),
            p("sigma", PType::Floats, Some(""), "gaussian: standard deviation per axis (one number for every axis; 0 skips an axis)"),
            p("order", PType::Ints, Some("0"), "gaussian: derivative order per axis, 0 to 3"),
            p("truncate", PType::Float, Some("4.0"), "gaussian: radius = int(truncate * sigma + 0.5)"),
            p("radius", PType::Ints, Some(""), "gaussian: kernel radius per axis, instead of truncate"),
            p("size", PType::Ints, Some(""), "uniform: window per axis"),
            p("axis", PType::Int(-32, 31), Some(""), "sobel, correlate1d, convolve1d, difference: the axis (negative counts from the end)"),
            p("weights", PType::Floats, Some(""), "correlate1d, convolve1d: the weights"),
            p("origin", PType::Int(-1024, 1024), Some("0"), "correlate1d, convolve1d: shift of the window, as scipy"),
            p("difference", PType::Choice(&["forward", "central"]), Some("forward"), "difference: x[i+1]-x[i], or (x[i+1]-x[i-1])/2"),
            p("mode", PType::Choice(&["reflect", "mirror", "nearest", "wrap", "constant", "grid-mirror", "grid-wrap", "grid-constant", "none"]), Some("reflect"),
              "how the array is extended at its edges, as scipy; none: 0 where the window leaves the array (the seed's stencils)"),
            p("cval", PType::Float, Some("0.0"), "the value beyond the edges for mode = \"constant\""),
        ],
    },
    KindSpec {
        kind: "structure-tensor",
        role: "kernel",
        summary: "seed 000's feature map of an (H, W, C) image: gradient, products, window smoothing, eigenvalues, energy and anisotropy, fused per chunk; float64 (H, W)",
        inputs: Arity::Exactly(1),
        params: &[
            p("gradient", PType::Choice(&["gaussian", "finite-difference"]), Some("gaussian"), "Gaussian derivative (a correlation, as the seed's stencil) or forward differences"),
            p("sigma", PType::Float, Some("1.5"), "the Gaussian derivative's sigma"),
            p("radius", PType::Int(1, 1000), Some("10"), "the Gaussian derivative's radius"),
            p("window_sigma", PType::Float, Some("2.0"), "the smoothing window's sigma"),
            p("window_radius", PType::Int(0, 1000), Some("10"), "the smoothing window's radius"),
            p("mode", PType::Choice(&["reflect", "mirror", "nearest", "wrap", "constant", "grid-mirror", "grid-wrap", "grid-constant", "none"]), Some("reflect"),
              "edges, as scipy, for every step; none: the seed under dask (a zero frame, NaN features there)"),
            p("output", PType::Choice(&["features", "energy", "anisotropy"]), Some("features"),
              "features: the seed's map (H, W); energy = l0 + l1 or anisotropy = (l1 - l0)/energy per channel (H, W, C)"),
        ],
    },
    KindSpec {
        kind: "rechunk",
        role: "kernel",
        summary: "the same array in other chunks, in a stream: in memory when the chunks it must hold fit the budget, else through an intermediate Zarr store on disk (written as chunks arrive, read back in the new chunks, removed afterwards); `blockflow plan` says which and why",
        inputs: Arity::Exactly(1),
        params: &[
            p("chunks", PType::Shape, None, "the new chunk shape"),
            p("route", PType::Choice(&["auto", "memory", "disk"]), Some("auto"), "auto: in memory unless the plan would exceed `memory`; memory or disk to force one"),
        ],
    },
    KindSpec {
        kind: "median",
        role: "kernel",
        summary: "scipy.ndimage's median_filter (or rank_filter, percentile_filter) with a window size per axis, e.g. [1, 3, 3, 3] on a (T, Z, Y, X) stack: chunk by chunk with the halo the window needs, equal to scipy on the whole array; keeps the dtype",
        inputs: Arity::Exactly(1),
        params: &[
            p("size", PType::Ints, None, "the window's size per axis (an integer: every axis); 1 leaves an axis alone"),
            p("rank", PType::Int(i64::MIN, i64::MAX), Some(""), "rank_filter: this rank of each window instead of the median (negative counts from the top)"),
            p("percentile", PType::Float, Some(""), "percentile_filter: this percentile (0..100) instead of the median"),
            p("mode", PType::Choice(&["reflect", "mirror", "nearest", "wrap", "constant", "none"]), Some("reflect"), "how the array is extended at its edges, as scipy.ndimage"),
            p("cval", PType::Float, Some("0.0"), "the value beyond the edges for mode = \"constant\""),
        ],
    },
    KindSpec {
        kind: "register",
        role: "kernel",
        summary: "rigid registration of each frame of a stack (one whole frame per chunk along axis 0) to the first, by phase cross-correlation as scikit-image's phase_cross_correlation, in the frames' precision as scikit-image computes it (float32 frames in single precision, others in double): the stream is the shift that registers each frame, (N, frame axes) float64 in chunks of one frame, ready for a `shift` stage",
        inputs: Arity::Exactly(1),
        params: &[p("upsample_factor", PType::Int(1, 10_000), Some("1"), "1: to the voxel; k: to 1/k voxel by an upsampled DFT around the peak")],
    },
    KindSpec {
        kind: "shift",
        role: "kernel",
        summary: "scipy.ndimage.shift of each frame of a stack (one whole frame per chunk along axis 0) by that frame's vector from the second input (e.g. a `register` stage): spline interpolation, scipy's modes; keeps the dtype",
        inputs: Arity::Exactly(2),
        params: &[
            p("order", PType::Int(0, 5), Some("3"), "the spline order (0 nearest, 1 linear, 3 cubic)"),
            p("mode", PType::Choice(&["constant", "grid-constant", "nearest", "reflect", "mirror", "grid-mirror", "wrap", "grid-wrap"]), Some("constant"), "how the frame is extended beyond its edges, as scipy.ndimage"),
            p("cval", PType::Float, Some("0.0"), "the value beyond the edges for the constant modes"),
            p("prefilter", PType::Bool, Some("true"), "spline-filter first (orders > 1), as scipy"),
        ],
    },
    KindSpec {
        kind: "zscore",
        role: "kernel",
        summary: "scipy.stats.zscore along an axis each chunk holds whole (rechunk to whole time series first): (x - mean) / std with `ddof`; float64 out; a constant series gives NaN, as scipy",
        inputs: Arity::Exactly(1),
        params: &[
            p("axis", PType::Int(-32, 31), Some("0"), "the axis"),
            p("ddof", PType::Int(0, 1_000_000), Some("0"), "delta degrees of freedom, as scipy"),
        ],
    },
    KindSpec {
        kind: "rescale",
        role: "kernel",
        summary: "scikit-image's rescale_intensity, per image: each chunk's images (along axis 0) are stretched from `in_range` to `out_range`; chunks must hold whole images",
        inputs: Arity::Exactly(1),
        params: &[
            p("in_range", PType::Str, Some("image"), "image (each image's min and max over all channels), dtype (the dtype's limits), or a dtype-like name (uint10, uint12, ...)"),
            p("in_values", PType::Floats, Some(""), "[lo, hi]: explicit input limits (instead of `in_range`)"),
            p("percentiles", PType::Floats, Some(""), "[p_lo, p_hi]: each image's percentiles as input limits (numpy's linear method), e.g. [2, 98]"),
            p("out_range", PType::Str, Some("dtype"), "dtype (the input dtype's limits; the output keeps the dtype), image, or a dtype name (uint8, float32, ...: output in that dtype's range)"),
            p("out_values", PType::Floats, Some(""), "[lo, hi]: explicit output limits (float64 output unless the input is float)"),
        ],
    },
    KindSpec {
        kind: "pca",
        role: "kernel",
        summary: "principal components of a stack (N, ...): the data matrix is features x observations (each image a column), centred by the mean image, decomposed by a tall-skinny QR over the chunks (each a band of features of all N images; rechunk to whole axis 0 first) and an SVD of R; the stream is the first k modes u_i s_i as (k, ...) images (their norms are the singular values), or the singular values",
        inputs: Arity::Exactly(1),
        params: &[
            p("k", PType::Int(1, 1_000_000), Some("10"), "how many modes (or singular values)"),
            p("output", PType::Choice(&["modes", "values"]), Some("modes"), "modes: (k, ...) as the input's chunks, u_i s_i (the seed's u.dot(diag(s))); values: the k largest singular values. Modes read the input a second time from a scratch store"),
        ],
    },
    KindSpec {
        kind: "slice",
        role: "kernel",
        summary: "numpy's basic indexing on any axes, split or not, in a stream: `index = \"730, :, :, :\"` (one image of a stack; an integer drops its axis), `\"100:, 100:\"` (a crop), `\"::2, ::2\"` (a step), `\"..., :3\"`; only the source chunks the slice touches are held, in a sliding window",
        inputs: Arity::Exactly(1),
        params: &[
            p("index", PType::Str, None, "the index, as in numpy: integers, start:stop:step slices (step > 0; negative start/stop count from the end), `...`; axes left out are taken whole"),
            p("chunks", PType::Shape, Some(""), "the result's chunks (default: the input's, clipped to the result)"),
        ],
    },
    KindSpec {
        kind: "concatenate",
        role: "kernel",
        summary: "numpy's concatenate of several inputs along an existing axis (the other axes equal, dtypes promoted as numpy); the inputs wait in scratch stores until all have arrived, then the result streams in its own chunks (the first input's)",
        inputs: Arity::AtLeast(2),
        params: &[p("axis", PType::Int(-32, 31), Some("0"), "the axis to join along")],
    },
    KindSpec {
        kind: "stack",
        role: "kernel",
        summary: "numpy's stack of several inputs of one shape along a new axis (one chunk per input along it); the inputs wait in scratch stores until all have arrived",
        inputs: Arity::AtLeast(2),
        params: &[p("axis", PType::Int(-33, 32), Some("0"), "where the new axis goes")],
    },
    KindSpec {
        kind: "transpose",
        role: "kernel",
        summary: "numpy's transpose: the axes permuted (reversed by default); the input waits in a scratch store, then each result chunk is read back and permuted",
        inputs: Arity::Exactly(1),
        params: &[p("axes", PType::Ints, Some(""), "the permutation, as numpy's `axes` (default: reversed)")],
    },
    KindSpec {
        kind: "take",
        role: "kernel",
        summary: "one block (chunk) of an array, chosen at run time by a flat block index from another stage (e.g. the argmin of a per-block reduction): the array's chunks go to a scratch store as they stream, and the chosen block is read back once the index is known",
        inputs: Arity::Exactly(2),
        params: &[],
    },
    KindSpec {
        kind: "diff",
        role: "kernel",
        summary: "numpy's diff (n = 1) along an axis that each chunk holds whole: out[i] = a[i + 1] - a[i]; integers wrap as numpy's do, booleans give not-equal",
        inputs: Arity::Exactly(1),
        params: &[p("axis", PType::Int(-32, 31), Some("-1"), "the axis (negative counts from the end)")],
    },
    KindSpec {
        kind: "matmul",
        role: "kernel",
        summary: "numpy's a @ b for 1-D and 2-D arrays (1-D @ 1-D: the inner product, a 1-element array), with matrixmultiply's blocked kernels for floats; integers accumulate in int64, never wrapping silently (an overflowing product is an error). Out of core in `a`: a 2-D `a` streams in bands of whole rows (its chunks must span the rows), kept in a scratch store until `b` has arrived; `b` is held whole (the plan counts it); the result comes in the same bands",
        inputs: Arity::Exactly(2),
        params: &[],
    },
    KindSpec {
        kind: "reduce",
        role: "kernel",
        summary: "a statistic of the whole array (a 1-element array), over chosen axes, or of each block (one value per chunk, an array shaped like the chunk grid); float64 accumulation and results (min and max keep the dtype; sums of integers and booleans int64, exact; count, argmin, argmax int64; any, all bool); argmin/argmax of the whole array or of blocks give global flat indices",
        inputs: Arity::Exactly(1),
        params: &[
            p("op", PType::Choice(&["sum", "mean", "min", "max", "std", "var", "count", "argmin", "argmax", "any", "all", "nansum", "nanmean", "nanmin", "nanmax", "nanstd", "nanvar"]), None, "the statistic, as numpy names it (nan*: NaN skipped; else NaN propagates)"),
            p("over", PType::Choice(&["all", "blocks"]), Some("all"), "the whole array, or each block (chunk) of the stream"),
            p("axis", PType::Ints, Some(""), "reduce only these axes (an integer or a list; negative counts from the end), as numpy's `axis`: the result has the other axes (argmin/argmax: one axis, the index along it)"),
            p("keepdims", PType::Bool, Some("false"), "with `axis`: keep the reduced axes, as length 1"),
            p("ddof", PType::Int(0, 1_000_000), Some("0"), "std and var: delta degrees of freedom, as numpy"),
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
    }
    let _ = writeln!(s, "\nexpression reference (kind = \"expr\"):");
    for (f, doc) in blockflow_kernels::expr::FUNCTIONS {
        let _ = writeln!(s, "    {f:<52} {doc}");
    }
    s
}
