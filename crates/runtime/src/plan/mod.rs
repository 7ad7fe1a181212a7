//! Validation and planning: raw tables -> a typed graph with the shape,
//! dtype and chunk grid of every edge and the projected peak bytes of every
//! stage. The plan is pure data; only input metadata is read to make it
//! (a Zarr input's shape and dtype), nothing is created or written.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

use blockflow_core::{human_bytes, parse_bytes, ArraySpec, ChunkGrid, DType, GridError};
use blockflow_io::preview::{Colormap, PreviewOptions};
use blockflow_io::synthetic::Pattern;
use blockflow_io::zarr::{Codec, ZarrInfo, ZarrReader, ZarrWriteOptions};
use blockflow_kernels::filters::{self, Boundary, Difference, Pass};
use blockflow_kernels::reduce::Reduction;
use blockflow_kernels::rescale::{InRange, OutRange};
use blockflow_kernels::tensor::{Gradient, TensorParams};
use blockflow_kernels::{did_you_mean, Expr, InputInfo};

use crate::config::{ConfigError, Diags, RawConfig, RawStage, Sp, Span, Val};
use crate::spec::{self, Arity, KindRef, ParamSpec};
use crate::stages::params::{check_entries, Params};
use crate::stages::{InputRef, MemoryCx, PlanCx, SpillCx};

/// What a stage does, with its typed parameters.
#[derive(Debug, Clone)]
pub enum StageKind {
    /// A kind defined in `stages/` (the others move there one by one).
    Unit(Box<dyn crate::stages::Stage>),
    Synthetic {
        pattern: Pattern,
        seed: u64,
    },
    ReadZarr {
        path: PathBuf,
        info: ZarrInfo,
    },
    Expr {
        src: String,
        expr: Box<Expr>,
    },
    WriteZarr {
        options: ZarrWriteOptions,
        path: PathBuf,
    },
    WritePng {
        path: PathBuf,
        options: PreviewOptions,
    },
    WriteJson {
        path: PathBuf,
        overwrite: bool,
    },
    /// The same array in another grid; `src` is the input's. `window`:
    /// the source chunks an in-memory rechunk holds at once.
    Rechunk {
        src: ChunkGrid,
        window: u64,
        /// What the config asked for: None is auto.
        forced: Option<bool>,
        route: RechunkRoute,
    },
    Reduce {
        op: Reduction,
        per_block: bool,
        ddof: u32,
        /// The grid of the stream it reduces.
        input: ChunkGrid,
        /// Reduce only these axes (sorted); None: all of them.
        axes: Option<Vec<usize>>,
    },
    WriteBlocks {
        path: PathBuf,
        csv: Option<PathBuf>,
        threshold: f64,
        overwrite: bool,
    },
    /// Separable passes; `fused` names the filter stages merged into it.
    Filter {
        passes: Vec<Pass>,
        desc: Vec<String>,
        fused: Vec<String>,
    },
    StructureTensor {
        params: TensorParams,
        /// "features", "energy" or "anisotropy".
        output: String,
    },
    ReadHdf5 {
        path: PathBuf,
        dataset: String,
    },
    Median {
        filter: blockflow_kernels::rank::RankFilter,
        desc: String,
    },
    Zscore {
        axis: usize,
        ddof: usize,
    },
    Register {
        upsample: usize,
    },
    Shift {
        order: usize,
        mode: blockflow_kernels::shift::InterpMode,
        cval: f64,
        prefilter: bool,
    },
    ReadHdf5Stack {
        stack: blockflow_io::hdf5::StackReader,
    },
    WriteHdf5 {
        path: PathBuf,
        dataset: String,
        chunks: Vec<u64>,
        overwrite: bool,
    },
    /// Images of one shape and dtype, `(H, W, C)` each, stacked on axis 0.
    ReadImages {
        files: Vec<PathBuf>,
        image: Vec<u64>,
    },
    Rescale {
        in_range: InRange,
        out_range: OutRange,
    },
    /// TSQR over bands of features; `dir` holds the input for the modes' second pass.
    Pca {
        k: usize,
        values: bool,
        dir: PathBuf,
        input: ChunkGrid,
    },
    WriteCsv {
        path: PathBuf,
        overwrite: bool,
    },
    /// One block of the first input, chosen by the second; `src` is the
    /// first input's grid, `dir` where its chunks wait.
    Take {
        src: ChunkGrid,
        dir: PathBuf,
    },
    Diff {
        axis: usize,
    },
    /// Basic indexing: destination position j along axis k is source
    /// position `map[k].0 + j * map[k].1`; `inner` is the result's grid
    /// with the `drop`ped (integer-indexed) axes kept as length 1.
    Slice {
        src: ChunkGrid,
        map: Vec<(u64, u64)>,
        drop: Vec<bool>,
        inner: ChunkGrid,
        window: u64,
        text: String,
    },
    /// `a` streams in bands of whole rows (kept in a scratch store in
    /// `dir` until `b`, held whole, has arrived).
    Matmul {
        a: ChunkGrid,
        b_elems: u64,
        dir: PathBuf,
    },
    /// concatenate (`new_axis` false) or stack; `grids` are the inputs'.
    Join {
        axis: usize,
        new_axis: bool,
        grids: Vec<ChunkGrid>,
        dir: PathBuf,
    },
    /// Output axis k is input axis `perm[k]`; `src` is the input's grid.
    Transpose {
        perm: Vec<usize>,
        src: ChunkGrid,
        dir: PathBuf,
    },
    /// Inserted by the planner: gives each chunk its halo from its
    /// neighbours, keeping a sliding window of chunks.
    Overlap {
        halo: Vec<(usize, usize)>,
        window: u64,
    },
}

impl StageKind {
    /// The scratch folder of a stage that keeps stores there.
    pub fn scratch_dir_mut(&mut self) -> Option<&mut PathBuf> {
        match self {
            StageKind::Unit(op) => op.scratch_dir_mut(),
            StageKind::Rechunk {
                route: RechunkRoute::Disk { dir, .. },
                ..
            }
            | StageKind::Pca { dir, .. }
            | StageKind::Take { dir, .. }
            | StageKind::Matmul { dir, .. }
            | StageKind::Join { dir, .. }
            | StageKind::Transpose { dir, .. } => Some(dir),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            StageKind::Unit(op) => op.kind(),
            StageKind::Filter { .. } => "filter",
            StageKind::WriteBlocks { .. } => "write-blocks",
            StageKind::WritePng { .. } => "write-png",
            StageKind::WriteJson { .. } => "write-json",
            StageKind::Reduce { .. } => "reduce",
            StageKind::Rechunk { .. } => "rechunk",
            StageKind::StructureTensor { .. } => "structure-tensor",
            StageKind::Overlap { .. } => "overlap",
            StageKind::ReadImages { .. } => "read-images",
            StageKind::ReadHdf5 { .. } => "read-hdf5",
            StageKind::Median { .. } => "median",
            StageKind::Zscore { .. } => "zscore",
            StageKind::Register { .. } => "register",
            StageKind::Shift { .. } => "shift",
            StageKind::ReadHdf5Stack { .. } => "read-hdf5-stack",
            StageKind::WriteHdf5 { .. } => "write-hdf5",
            StageKind::Rescale { .. } => "rescale",
            StageKind::Pca { .. } => "pca",
            StageKind::WriteCsv { .. } => "write-csv",
            StageKind::Take { .. } => "take",
            StageKind::Diff { .. } => "diff",
            StageKind::Slice { .. } => "slice",
            StageKind::Matmul { .. } => "matmul",
            StageKind::Join {
                new_axis: false, ..
            } => "concatenate",
            StageKind::Join { new_axis: true, .. } => "stack",
            StageKind::Transpose { .. } => "transpose",
            StageKind::Synthetic { .. } => "synthetic",
            StageKind::ReadZarr { .. } => "read-zarr",
            StageKind::Expr { .. } => "expr",
            StageKind::WriteZarr { .. } => "write-zarr",
        }
    }
}

/// How a rechunk stage moves its data.
#[derive(Debug, Clone, PartialEq)]
pub enum RechunkRoute {
    /// A sliding window of source chunks in memory.
    Memory,
    /// Every source chunk written to an intermediate Zarr store in `dir` as
    /// it arrives, cut into `inter` chunks; once all are in, the new chunks
    /// are read back `group` at a time (a run of consecutive chunks in
    /// row-major order: whole trailing axes, then part of one axis), each
    /// group made of whole intermediate chunks. `why` says why the planner
    /// chose this route.
    Disk {
        inter: Vec<u64>,
        group: Vec<u64>,
        dir: PathBuf,
        why: String,
    },
}

pub(crate) fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

pub use crate::stages::rechunk::{intermediate_chunks, read_group};

/// The disk route for a rechunk from `src` to `dst` under `memory`.
fn disk_route(
    src: &ChunkGrid,
    dst: &ChunkGrid,
    item: u64,
    memory: u64,
    why: String,
) -> RechunkRoute {
    let group = read_group(dst, item, (memory / 32).clamp(1 << 20, 64 << 20));
    RechunkRoute::Disk {
        inter: intermediate_chunks(src, dst, &group),
        group,
        dir: PathBuf::new(),
        why,
    }
}

/// Projected peak bytes of a stage.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StageMemory {
    /// Chunks being read, computed or written, with their temporaries.
    pub working: u64,
    /// Chunks queued in the stage's output channels.
    pub channels: u64,
}

impl StageMemory {
    pub fn total(&self) -> u64 {
        self.working.saturating_add(self.channels)
    }
}

/// One stage of a plan.
#[derive(Debug, Clone)]
pub struct PlannedStage {
    pub name: String,
    pub kind: StageKind,
    /// Its parameters as the TOML writes them, given or defaulted.
    pub params: Vec<(&'static str, String)>,
    pub inputs: Vec<usize>,
    pub consumers: Vec<usize>,
    /// The stream this stage sends (None for writers).
    pub output: Option<ArraySpec>,
    /// The stream this stage works over (its output, or a writer's input).
    pub grid: ChunkGrid,
    pub capacity: usize,
    pub parallel: usize,
    /// Extra chunks each input edge holds beyond its producer's capacity:
    /// where the inputs of a join run at different leads (one through an
    /// overlap window), the others must buffer the difference or the graph
    /// would wait on itself.
    pub input_slack: Vec<usize>,
    pub mem: StageMemory,
}

impl PlannedStage {
    pub fn chunks(&self) -> u64 {
        self.grid.num_chunks()
    }
    pub fn is_sink(&self) -> bool {
        self.output.is_none()
    }
}

/// A validated pipeline, ready to build.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub config: PathBuf,
    pub memory: u64,
    pub threads: usize,
    pub report: PathBuf,
    /// Stages in an order where every input comes before its consumers.
    pub stages: Vec<PlannedStage>,
}

impl Plan {
    pub fn projected_bytes(&self) -> u64 {
        self.stages
            .iter()
            .fold(0, |a, s| a.saturating_add(s.mem.total()))
    }
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// A stage's grid, or a diagnostic on the stage when its shape is too
/// large to count (see [`blockflow_core::MAX_ELEMENTS`]).
fn new_grid(d: &mut Diags, st: &RawStage, shape: Vec<u64>, chunk: Vec<u64>) -> Option<ChunkGrid> {
    match ChunkGrid::new(shape, chunk) {
        Ok(g) => Some(g),
        Err(e) => {
            d.err(&st.name.span, Some(st.name.v.as_str()), e.to_string());
            None
        }
    }
}

fn get<'a>(st: &'a RawStage, key: &str) -> Option<&'a Sp<Val>> {
    st.get(key)
}
fn get_str<'a>(st: &'a RawStage, key: &str) -> Option<&'a str> {
    match get(st, key).map(|v| &v.v) {
        Some(Val::Str(s)) => Some(s),
        _ => None,
    }
}
fn get_int(st: &RawStage, key: &str) -> Option<i64> {
    match get(st, key).map(|v| &v.v) {
        Some(Val::Int(i)) => Some(*i),
        _ => None,
    }
}
fn get_shape(st: &RawStage, key: &str) -> Option<Vec<u64>> {
    match get(st, key).map(|v| &v.v) {
        Some(Val::Array(a)) => a
            .iter()
            .map(|x| match x.v {
                Val::Int(i) if i >= 1 => Some(i as u64),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}
/// The stage's `axis` (negative counts from the end) among `nd` axes; an
/// error naming it when out of range.
fn get_axis(d: &mut Diags, st: &RawStage, default: i64, nd: usize, whose: &str) -> Option<usize> {
    let a = get_int(st, "axis").unwrap_or(default);
    let ax = if a < 0 { a + nd as i64 } else { a };
    if ax < 0 || ax >= nd as i64 {
        d.err(
            &span_of(st, "axis"),
            Some(st.name.v.as_str()),
            format!("axis {a} is out of range for {whose} {nd} axes"),
        );
        return None;
    }
    Some(ax as usize)
}

fn get_bool(st: &RawStage, key: &str) -> Option<bool> {
    match get(st, key).map(|v| &v.v) {
        Some(Val::Bool(b)) => Some(*b),
        _ => None,
    }
}
fn get_float(st: &RawStage, key: &str) -> Option<f64> {
    match get(st, key).map(|v| &v.v) {
        Some(Val::Float(f)) => Some(*f),
        Some(Val::Int(i)) => Some(*i as f64),
        _ => None,
    }
}
/// A number or list of numbers, as one value per axis of `ndim`.
fn get_floats(st: &RawStage, key: &str, ndim: usize) -> Option<Result<Vec<f64>, String>> {
    let num = |v: &Val| match v {
        Val::Float(f) => Some(*f),
        Val::Int(i) => Some(*i as f64),
        _ => None,
    };
    match get(st, key).map(|v| &v.v) {
        Some(Val::Array(a)) => {
            let v: Vec<f64> = a.iter().filter_map(|x| num(&x.v)).collect();
            Some(if v.len() == ndim || ndim == 0 {
                Ok(v)
            } else {
                Err(format!(
                    "`{key}` has {} values but the array has {ndim} axes",
                    v.len()
                ))
            })
        }
        Some(v) => num(v).map(|x| Ok(vec![x; ndim])),
        None => None,
    }
}
fn get_ints(st: &RawStage, key: &str, ndim: usize) -> Option<Result<Vec<i64>, String>> {
    get_floats(st, key, ndim).map(|r| r.map(|v| v.into_iter().map(|x| x as i64).collect()))
}
fn default_of(specs: &[ParamSpec], key: &str) -> &'static str {
    specs
        .iter()
        .find(|s| s.name == key)
        .and_then(|s| s.default)
        .unwrap_or("")
}
fn span_of(st: &RawStage, key: &str) -> Span {
    get(st, key)
        .map(|v| v.span.clone())
        .unwrap_or_else(|| st.name.span.clone())
}

/// Resolves a path parameter: relative to the config's folder when written
/// in the file, to the working directory when given with `--set`.
/// A duration: `"2s"`, `"250ms"`, `"1.5 min"`, `"1h"`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim());
    let x: f64 = num
        .parse()
        .map_err(|_| format!("\"{s}\" is not a duration (e.g. \"2s\", \"250ms\", \"5 min\")"))?;
    let scale = match unit {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "ms" => 1e-3,
        "min" | "m" | "minute" | "minutes" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit \"{other}\" in \"{s}\" (use ms, s, min or h)"
            ))
        }
    };
    std::time::Duration::try_from_secs_f64(x * scale).map_err(|e| format!("\"{s}\": {e}"))
}

/// A duration parameter's value (see [`parse_duration`]).
pub fn duration_of(v: &Val) -> Option<std::time::Duration> {
    match v {
        Val::Str(s) => parse_duration(s).ok(),
        Val::Int(i) if *i >= 0 => Some(std::time::Duration::from_secs(*i as u64)),
        Val::Float(f) if *f >= 0.0 => std::time::Duration::try_from_secs_f64(*f).ok(),
        _ => None,
    }
}

pub(crate) fn resolve(config: &Path, v: &Sp<Val>) -> PathBuf {
    let Val::Str(s) = &v.v else {
        return PathBuf::new();
    };
    let p = PathBuf::from(s);
    if p.is_absolute() || !matches!(v.span, Span::File(_)) {
        return p;
    }
    normalize(&config.parent().map(|d| d.join(&p)).unwrap_or(p))
}

/// Removes `.` and `dir/..` pairs without touching the disk
/// (`configs/../out/a.zarr` -> `out/a.zarr`).
pub(crate) fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}

/// Validates a parsed pipeline into a plan, reporting every problem found.
pub fn plan(raw: &RawConfig) -> Result<Plan, ConfigError> {
    match &raw.fixed_stack {
        Some(stack) => plan_with(
            raw,
            &crate::catalog::FixedStack {
                stack: stack.clone(),
            },
        ),
        None => plan_with(raw, &crate::catalog::FsCatalog),
    }
}

/// [`plan`], reading stored inputs' metadata from `catalog`.
pub fn plan_with(
    raw: &RawConfig,
    catalog: &dyn crate::catalog::Catalog,
) -> Result<Plan, ConfigError> {
    let mut d = Diags::new(&raw.path, &raw.text);
    let top = Span::File(0..0);
    let pipeline_ok = check_entries(
        &mut d,
        None,
        &top,
        &raw.pipeline,
        &[spec::PIPELINE],
        "[pipeline]",
    );
    let pget = |k: &str| {
        raw.pipeline
            .iter()
            .find(|(kk, _)| kk.v == k)
            .map(|(_, v)| v)
    };
    let name = match pget("name").map(|v| &v.v) {
        Some(Val::Str(s)) => s.clone(),
        _ => raw
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".into()),
    };
    let memory = match pget("memory").map(|v| &v.v) {
        Some(Val::Str(s)) => parse_bytes(s).unwrap_or(0),
        Some(Val::Int(i)) => *i as u64,
        _ => parse_bytes(default_of(spec::PIPELINE, "memory")).unwrap_or(1 << 30),
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = match pget("threads").map(|v| &v.v) {
        Some(Val::Int(i)) => *i as usize,
        _ => cores,
    };
    let default_capacity = match pget("capacity").map(|v| &v.v) {
        Some(Val::Int(i)) => *i as usize,
        _ => 2,
    };
    let report = match pget("report") {
        Some(v) if matches!(v.v, Val::Str(_)) => resolve(&raw.path, v),
        _ => PathBuf::from(format!("{name}.report.json")),
    };
    let _ = pipeline_ok;
    check_entries(&mut d, None, &top, &raw.follow, &[spec::FOLLOW], "[follow]");

    // Names, kinds, parameters.
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut kinds: Vec<Option<KindRef>> = Vec::new();
    for (i, st) in raw.stages.iter().enumerate() {
        let sname = st.name.v.as_str();
        if !is_ident(sname) {
            d.err(
                &st.name.span,
                Some(sname),
                "a stage name is an identifier (letters, digits and `_`, not starting with a digit), so expressions can refer to it",
            );
        }
        index.insert(sname, i);
        let kind = match get(st, "kind") {
            None => {
                d.err(
                    &st.name.span,
                    Some(sname),
                    format!(
                        "missing `kind`; one of {}",
                        spec::all()
                            .iter()
                            .map(|k| format!("\"{}\"", k.kind))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                None
            }
            Some(Sp {
                v: Val::Str(k),
                span,
            }) => match spec::kind(k) {
                Some(ks) => Some(ks),
                None => {
                    let hint = did_you_mean(k, spec::all().iter().map(|k| k.kind))
                        .map(|s| format!("; did you mean \"{s}\"?"))
                        .unwrap_or_else(|| {
                            format!(
                                "; the kinds are {}",
                                spec::all()
                                    .iter()
                                    .map(|k| format!("\"{}\"", k.kind))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        });
                    d.err(
                        span,
                        Some(sname),
                        format!("unknown stage kind \"{k}\"{hint}"),
                    );
                    None
                }
            },
            Some(v) => {
                d.err(
                    &v.span,
                    Some(sname),
                    format!("`kind` must be a string, not {}", v.v.type_name()),
                );
                None
            }
        };
        if let Some(ks) = kind {
            check_entries(
                &mut d,
                Some(sname),
                &st.name.span,
                &st.entries,
                &[spec::COMMON, ks.params],
                &format!("a \"{}\" stage", ks.kind),
            );
        }
        kinds.push(kind);
    }

    // Paths against each other: outputs, inputs, report, scratch, config.
    crate::paths::check(&mut d, raw);

    // Inputs and arity.
    let mut inputs: Vec<Vec<usize>> = vec![Vec::new(); raw.stages.len()];
    for (i, st) in raw.stages.iter().enumerate() {
        let sname = st.name.v.as_str();
        let listed: Vec<&Sp<Val>> = match get(st, "inputs").map(|v| &v.v) {
            Some(Val::Array(a)) => a.iter().collect(),
            _ => Vec::new(),
        };
        for item in &listed {
            let Val::Str(n) = &item.v else { continue };
            match index.get(n.as_str()) {
                Some(&j) if j == i => {
                    d.err(&item.span, Some(sname), "a stage cannot be its own input")
                }
                Some(&j) if kinds[j].is_some_and(|k| k.role == "writer") => d.err(
                    &item.span,
                    Some(sname),
                    format!("input \"{n}\" is a writer and sends nothing"),
                ),
                Some(&j) => inputs[i].push(j),
                None => {
                    let hint = did_you_mean(n, raw.stages.iter().map(|s| s.name.v.as_str()))
                        .map(|s| format!("; did you mean \"{s}\"?"))
                        .unwrap_or_default();
                    d.err(
                        &item.span,
                        Some(sname),
                        format!("input \"{n}\" is not a stage{hint}"),
                    );
                }
            }
        }
        if let Some(ks) = kinds[i] {
            let n = listed.len();
            let msg = match ks.inputs {
                Arity::None if n > 0 => Some(format!("a \"{}\" stage takes no inputs", ks.kind)),
                Arity::Exactly(k) if n != k => Some(format!(
                    "a \"{}\" stage takes exactly {k} input{}, got {n}",
                    ks.kind,
                    if k == 1 { "" } else { "s" }
                )),
                Arity::AtLeast(k) if n < k => Some(format!(
                    "a \"{}\" stage takes at least {k} input{}, got {n}",
                    ks.kind,
                    if k == 1 { "" } else { "s" }
                )),
                _ => None,
            };
            if let Some(m) = msg {
                d.err(&span_of(st, "inputs"), Some(sname), m);
            }
        }
    }

    // Topological order (Kahn); what is left is on a cycle.
    let n = raw.stages.len();
    let mut indeg: Vec<usize> = inputs.iter().map(|v| v.len()).collect();
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ins) in inputs.iter().enumerate() {
        for &j in ins {
            consumers[j].push(i);
        }
    }
    let mut order = Vec::with_capacity(n);
    let mut ready: Vec<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    ready.reverse();
    while let Some(i) = ready.pop() {
        order.push(i);
        for &c in consumers[i].iter().rev() {
            indeg[c] -= 1;
            if indeg[c] == 0 {
                ready.push(c);
            }
        }
    }
    if order.len() < n {
        let on_cycle: HashSet<usize> = (0..n).filter(|i| !order.contains(i)).collect();
        let names: Vec<&str> = raw
            .stages
            .iter()
            .enumerate()
            .filter(|(i, _)| on_cycle.contains(i))
            .map(|(_, s)| s.name.v.as_str())
            .collect();
        for &i in &on_cycle {
            let st = &raw.stages[i];
            d.err(
                &span_of(st, "inputs"),
                Some(&st.name.v),
                format!("the inputs form a cycle through {}", names.join(" -> ")),
            );
        }
    }
    if raw.stages.is_empty() {
        d.err(
            &top,
            None,
            "the pipeline has no stages; add `[stage.NAME]` tables",
        );
    }

    // Shapes, dtypes, grids, in order.
    let mut planned: Vec<Option<PlannedStage>> = vec![None; n];
    for &i in &order {
        let st = &raw.stages[i];
        let sname = st.name.v.as_str();
        let Some(ks) = kinds[i] else { continue };
        if d.list.iter().any(|x| x.stage.as_deref() == Some(sname)) {
            continue;
        }
        let ins: Option<Vec<&PlannedStage>> =
            inputs[i].iter().map(|&j| planned[j].as_ref()).collect();
        let Some(ins) = ins else { continue };
        let capacity = get_int(st, "capacity")
            .map(|c| c as usize)
            .unwrap_or(default_capacity);
        let parallel = get_int(st, "parallel")
            .map(|c| c as usize)
            .unwrap_or(threads);
        let made = plan_stage(&mut d, raw, st, &ks, &ins, memory, catalog);
        let specs = [spec::COMMON, ks.params];
        let params = Params::new(st, &specs).resolved();
        if made.is_none() && !d.list.iter().any(|x| x.stage.as_deref() == Some(sname)) {
            // Every refusal should say why; never go on without this stage.
            d.err(
                &st.name.span,
                Some(sname),
                "this stage cannot be planned with these parameters and inputs",
            );
        }
        if let Some((kind, output, grid)) = made {
            // The HDF5 library runs one call at a time (its global lock).
            let parallel = match &kind {
                StageKind::ReadHdf5 { .. }
                | StageKind::ReadHdf5Stack { .. }
                | StageKind::WriteHdf5 { .. } => 1,
                StageKind::Unit(op) if op.serial() => 1,
                _ => parallel,
            };
            planned[i] = Some(PlannedStage {
                name: sname.to_string(),
                kind,
                params,
                inputs: inputs[i].clone(),
                consumers: consumers[i].clone(),
                output,
                grid,
                capacity,
                parallel,
                input_slack: Vec::new(),
                mem: StageMemory::default(),
            });
        }
    }
    if !d.list.is_empty() {
        return Err(ConfigError::Invalid(d.list));
    }

    // Remap to topological positions and project memory.
    let pos: HashMap<usize, usize> = order.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    let stages: Vec<PlannedStage> = order
        .iter()
        .map(|&i| {
            let mut s = planned[i].clone().expect("planned when no diagnostics");
            s.inputs = s.inputs.iter().map(|j| pos[j]).collect();
            s.consumers = s.consumers.iter().map(|j| pos[j]).collect();
            s
        })
        .collect();
    let mut stages = fuse_and_assemble(stages, default_capacity);
    set_slack(&mut stages);
    let scratch = match pget("scratch") {
        Some(v) if matches!(&v.v, Val::Str(s) if !s.is_empty()) => resolve(&raw.path, v),
        _ => stages
            .iter()
            .find_map(|s| match &s.kind {
                StageKind::Unit(op) => match op.writes() {
                    Some(crate::stages::Writes::Zarr { path, .. }) => path.parent().map(|p| {
                        if p.as_os_str().is_empty() {
                            PathBuf::from(".")
                        } else {
                            p.to_path_buf()
                        }
                    }),
                    _ => None,
                },
                StageKind::WriteZarr { path, .. } => path.parent().map(|p| {
                    if p.as_os_str().is_empty() {
                        PathBuf::from(".")
                    } else {
                        p.to_path_buf()
                    }
                }),
                _ => None,
            })
            .unwrap_or_else(std::env::temp_dir),
    };
    project_all(&mut stages);
    // A rechunk left to the planner goes through disk when the plan would
    // not fit in memory otherwise: the biggest first, until it fits.
    loop {
        let projected = stages
            .iter()
            .fold(0u64, |a, s| a.saturating_add(s.mem.total()));
        if projected <= memory {
            break;
        }
        let mut by_size: Vec<usize> = (0..stages.len()).collect();
        by_size.sort_by_key(|&k| std::cmp::Reverse((stages[k].mem.total(), k)));
        let Some(k) = by_size
            .into_iter()
            .find(|&k| spill(&mut stages[k], memory, projected))
        else {
            break;
        };
        project_all(&mut stages);
        let total = stages
            .iter()
            .fold(0u64, |a, s| a.saturating_add(s.mem.total()));
        tune_spill(&mut stages[k], memory, total);
        project_all(&mut stages);
    }
    for s in &mut stages {
        if let Some(dir) = s.kind.scratch_dir_mut() {
            dir.clone_from(&scratch);
        }
    }
    let plan = Plan {
        name,
        config: raw.path.clone(),
        memory,
        threads,
        report,
        stages,
    };
    let projected = plan.projected_bytes();
    if projected > memory {
        let mut by_size: Vec<&PlannedStage> = plan.stages.iter().collect();
        by_size.sort_by_key(|s| std::cmp::Reverse(s.mem.total()));
        let big = by_size[0];
        let chunk = big.output.as_ref().map(|o| o.chunk_bytes()).unwrap_or(0);
        // An overlap stage serves the stage named before its ".halo".
        let own = big.name.strip_suffix(".halo").unwrap_or(&big.name);
        let span = raw
            .stages
            .iter()
            .find(|s| s.name.v == own)
            .map_or(Span::File(0..0), |s| s.name.span.clone());
        // Only the knobs that are not already at their least.
        let knobs: Vec<&str> = [
            ("`parallel`", big.parallel > 1),
            ("`capacity`", big.capacity > 1 && big.mem.channels > 0),
        ]
        .iter()
        .filter(|(_, can)| *can)
        .map(|(k, _)| *k)
        .collect();
        let advice = match &big.kind {
            StageKind::Unit(op) if op.over_budget(own).is_some() => {
                op.over_budget(own).unwrap_or_default()
            }
            StageKind::Overlap { window, .. } => format!(
                "Its sliding window holds up to {window} chunks (about one row of the chunk grid) to give \"{own}\" its halo; use smaller chunks, or raise `memory`"
            ),
            _ if knobs.is_empty() => "Use smaller chunks, or raise `memory`".to_string(),
            _ => format!(
                "Lower its {}, use smaller chunks, or raise `memory`",
                knobs.join(" or ")
            ),
        };
        // When no one stage holds most of the plan, name those that hold
        // the most, so the fix is not looked for in one stage alone.
        let others = if big.mem.total() < projected / 2 {
            let list: Vec<String> = by_size
                .iter()
                .take(5)
                .map(|s| format!("\"{}\" {}", s.name, human_bytes(s.mem.total())))
                .collect();
            format!(
                " No one stage holds most of it; the largest of the {} stages: {}.",
                by_size.len(),
                list.join(", ")
            )
        } else {
            String::new()
        };
        d.err(
            &span,
            Some(&big.name),
            format!(
                "the plan needs {} but `memory` is {}; this stage projects the most, {} ({} working + {} in channels; {} chunks of {} in flight, {} queued per consumer). {advice}.{others}",
                human_bytes(projected),
                human_bytes(memory),
                human_bytes(big.mem.total()),
                human_bytes(big.mem.working),
                human_bytes(big.mem.channels),
                big.parallel,
                human_bytes(chunk.max(big.grid.chunk_elements())),
                big.capacity,
            ),
        );
        return Err(ConfigError::Invalid(d.list));
    }
    Ok(plan)
}

/// What [`crate::stages::Stage::spill`] sees of stage `s`: its grid, the
/// size of its items, its projection.
fn spill_cx(s: &PlannedStage) -> (ChunkGrid, u64, u64) {
    let item = s.output.as_ref().map_or(8, |o| o.dtype.size() as u64);
    (s.grid.clone(), item, s.mem.total())
}

/// Moves stage `s` to disk if it can (see [`crate::stages::Stage::spill`]).
fn spill(s: &mut PlannedStage, memory: u64, projected: u64) -> bool {
    let (dst, item, own) = spill_cx(s);
    match &mut s.kind {
        StageKind::Unit(op) => op.spill(&SpillCx {
            grid: &dst,
            item,
            memory,
            own,
            projected,
        }),
        StageKind::Rechunk {
            src,
            window,
            route,
            forced: None,
        } if *route == RechunkRoute::Memory => {
            *route = disk_route(
                src,
                &dst,
                item,
                memory,
                format!(
                    "in memory it would hold up to {window} source chunks ({} for this stage) and the plan {} of the {} budget",
                    human_bytes(own),
                    human_bytes(projected),
                    human_bytes(memory)
                ),
            );
            true
        }
        _ => false,
    }
}

/// After [`spill`], with the plan at `total`: bigger read groups make bigger
/// intermediate chunks (fewer, larger files), from what the budget has left.
fn tune_spill(s: &mut PlannedStage, memory: u64, total: u64) {
    let (dst, item, own) = spill_cx(s);
    let spare = memory.saturating_sub(total);
    match &mut s.kind {
        StageKind::Unit(op) => op.tune_spill(
            &SpillCx {
                grid: &dst,
                item,
                memory,
                own,
                projected: total,
            },
            spare,
        ),
        StageKind::Rechunk {
            src,
            route: RechunkRoute::Disk { inter, group, .. },
            ..
        } => {
            let now = group.iter().product::<u64>() * dst.chunk_elements() * item;
            let target = (now + spare / 6).min(64 << 20);
            *group = read_group(&dst, item, target);
            *inter = intermediate_chunks(src, &dst, group);
        }
        _ => {}
    }
}

pub use crate::stages::slice::parse_index;

/// Projects every stage's memory (stages in topological order).
fn project_all(stages: &mut [PlannedStage]) {
    for k in 0..stages.len() {
        let (in_bytes, in_elems) = stages[k]
            .inputs
            .iter()
            .map(|&j| sent_chunk(&stages[j]))
            .fold((0u64, 0u64), |(b, e), (bb, ee)| {
                (b.saturating_add(bb), e.saturating_add(ee))
            });
        // Slack on this stage's output edges, held by its consumers' inputs.
        let slack: u64 = stages
            .iter()
            .flat_map(|c| c.inputs.iter().zip(&c.input_slack))
            .filter(|(&i, _)| i == k)
            .map(|(_, &sl)| sl as u64)
            .sum();
        let first_input = stages[k]
            .inputs
            .first()
            .and_then(|&j| stages[j].output.clone());
        stages[k].mem = project(&stages[k], first_input.as_ref(), in_bytes, in_elems, slack);
    }
}

/// Bytes and elements of the largest chunk a stage sends (with its halo
/// for an overlap stage).
pub fn sent_chunk(s: &PlannedStage) -> (u64, u64) {
    let halo = match &s.kind {
        StageKind::Unit(op) => op.sends_halo(),
        StageKind::Overlap { halo, .. } => Some(halo.as_slice()),
        _ => None,
    };
    match (halo, &s.output) {
        (Some(halo), Some(o)) => {
            let e = block_elements(&s.grid, halo);
            (e.saturating_mul(o.dtype.size() as u64), e)
        }
        (_, Some(o)) => (o.chunk_bytes(), o.grid.chunk_elements()),
        (_, None) => (0, 0),
    }
}

/// The projected peak bytes of one stage.
fn project(
    s: &PlannedStage,
    input: Option<&ArraySpec>,
    in_chunk_bytes: u64,
    in_elems: u64,
    slack: u64,
) -> StageMemory {
    // In u128: no product of a grid's counts (at most 2^52 elements, see
    // `ChunkGrid::new`), a window and `parallel` can overflow it. The sum
    // saturates to u64::MAX, which no budget allows.
    let w = |x: u64| x as u128;
    let p = s.parallel as u128;
    let (out_bytes, out_elems) = sent_chunk(s);
    let (out_bytes, out_elems) = (w(out_bytes), w(out_elems));
    let (in_chunk_bytes, in_elems) = (w(in_chunk_bytes), w(in_elems));
    let working: u128 = match &s.kind {
        StageKind::Unit(op) => op.memory(&MemoryCx {
            parallel: p,
            in_bytes: in_chunk_bytes,
            in_elems,
            out_bytes,
            out_elems,
            input,
            grid: &s.grid,
        }),
        // float64 values and the converted chunk (plus the survey's RGB buffer).
        StageKind::Synthetic { .. } => p * (out_elems * 24 + out_bytes),
        StageKind::ReadZarr { info, .. } => {
            let stored = info
                .chunks
                .iter()
                .fold(w(info.dtype.size() as u64), |a, &c| a.saturating_mul(w(c)));
            let stream = s.grid.chunk_shape();
            if blockflow_io::stored_chunks::stream_is_finer(&info.shape, &info.chunks, stream) {
                // Each stored chunk decoded once and held until the last
                // stream chunk in it is cut (about a row of them); each
                // being decoded twice more while it is (its encoded bytes,
                // then its raw bytes beside the typed copy kept, as zarrs
                // decodes); and the stream chunks being cut.
                let held = w(blockflow_io::stored_chunks::held_stored_chunks(
                    &info.shape,
                    &info.chunks,
                    stream,
                    s.parallel as u64,
                ));
                (held + 2 * p.min(held)) * stored + p * out_bytes
            } else {
                // The result and the decoded stored chunks it is cut from.
                p * (out_bytes + 2 * stored)
            }
        }
        // Inputs held, the result, full-size temporaries, tile buffers.
        StageKind::Expr { expr, .. } => {
            p * (in_chunk_bytes + out_bytes + w(expr.temporaries()) * out_elems * 8 + (1 << 20))
        }
        // The chunk, a padded copy, the encoded bytes.
        StageKind::WriteZarr { .. } => p * 3 * in_chunk_bytes,
        StageKind::WriteBlocks { .. } => p * in_chunk_bytes,
        // Every input whole, as arrays and as JSON text.
        StageKind::WriteJson { .. } => in_elems * 8 * 4,
        // The source chunks it must hold, and the chunk being assembled.
        StageKind::Rechunk {
            window,
            route: RechunkRoute::Memory,
            ..
        } => w(*window) * in_chunk_bytes + out_bytes,
        // The chunk being cut into the store and its encoded pieces; the
        // new chunks being read, each with its decoded pieces.
        StageKind::Rechunk {
            route: RechunkRoute::Disk { group, .. },
            ..
        } => {
            2 * in_chunk_bytes
                + group
                    .iter()
                    .fold(2 * out_bytes, |a, &g| a.saturating_mul(w(g)))
        }
        // The chunks being reduced and the result with its partials.
        StageKind::Reduce { .. } => p * in_chunk_bytes + out_elems * 96,
        // The chunks held and the preview's sums and counts.
        StageKind::WritePng { options, .. } => {
            p * in_chunk_bytes + w(options.held_bytes(s.grid.shape()))
        }
        // The window of chunks and the block being assembled.
        StageKind::Overlap { window, .. } => w(*window) * in_chunk_bytes + out_bytes,
        // The block held, as float64, the pass being written, the result.
        StageKind::Filter { .. } => p * (in_chunk_bytes + in_elems * 8 * 3 + out_bytes),
        // The block with its halo, the gathered windows, the result.
        StageKind::Median { .. } => p * (3 * in_chunk_bytes + out_bytes),
        // The chunk as float64, sums, the result.
        StageKind::Zscore { .. } => p * (in_chunk_bytes + 3 * out_bytes),
        // The reference's half spectrum and, per frame being registered,
        // the frame (converted to float64 unless it is float32 or float64),
        // its half spectrum, the product's copy and the real
        // cross-correlation, in the frame's precision.
        StageKind::Register { .. } => {
            let (bytes, convert) = match input.map(|i| i.dtype) {
                Some(DType::F32) => (4, 0),
                Some(DType::F64) => (8, 0),
                _ => (8, in_elems * 8),
            };
            let frame: Vec<usize> = input
                .map(|i| {
                    i.grid.chunk_shape()[1..]
                        .iter()
                        .map(|&n| n as usize)
                        .collect()
                })
                .unwrap_or_default();
            let (reference, working) =
                blockflow_kernels::register::Registrar::memory(&frame, bytes, s.parallel);
            reference as u128 + working as u128 + p * (in_chunk_bytes + convert)
        }
        // The frame as float64, its spline coefficients, the result.
        StageKind::Shift { .. } => p * (in_chunk_bytes + in_elems * 8 * 3),
        // The chunk, as the library reads it and as it is sent.
        StageKind::ReadHdf5 { .. } | StageKind::ReadHdf5Stack { .. } => 2 * out_bytes,
        StageKind::WriteHdf5 { .. } => 2 * in_chunk_bytes,
        // Each image decoded and the chunk it is copied into.
        StageKind::ReadImages { .. } => p * 3 * out_bytes,
        // The chunk, its float64 values, the result.
        StageKind::Rescale { .. } => p * (in_chunk_bytes + in_elems * 8 + out_bytes),
        // The band as float64; the R factor, and both stacked, twice (the
        // QR's own copy); the modes being computed.
        StageKind::Pca { input, .. } => {
            let n = w(input.shape()[0]);
            let r = n * n * 8;
            in_chunk_bytes + in_elems * 8 + r + 2 * (in_elems * 8 + r) + 2 * out_bytes
        }
        StageKind::WriteCsv { .. } => in_elems * 8 * 4,
        // A chunk being kept; the block read back.
        StageKind::Take { .. } => p * in_chunk_bytes + 2 * out_bytes,
        StageKind::Diff { .. } => p * (in_chunk_bytes + 2 * out_bytes),
        // The source chunks it must hold, and the chunk being assembled.
        StageKind::Slice { window, .. } => w(*window) * in_chunk_bytes + 2 * out_bytes,
        // Both inputs whole (they are one chunk each), as float64, and the result.
        // `b` whole as float64 (and as it came), a band of `a` as float64,
        // the result band.
        StageKind::Matmul { a, b_elems, .. } => {
            2 * w(*b_elems) * 8 + 2 * w(a.chunk_elements()) * 8 + 2 * out_bytes
        }
        // A chunk being kept; the result chunk, its parts read back, a cast.
        StageKind::Join { .. } | StageKind::Transpose { .. } => in_chunk_bytes + 3 * out_bytes,
        // The block held, as float64, gradients, products and smoothing passes.
        StageKind::StructureTensor { .. } => p * (in_chunk_bytes + in_elems * 8 * 9 + out_bytes),
    };
    let channels = (s.capacity as u128 * s.consumers.len() as u128 + w(slack)) * out_bytes;
    let sat = |x: u128| u64::try_from(x).unwrap_or(u64::MAX);
    StageMemory {
        working: sat(working),
        channels: sat(channels),
    }
}

type Made = (StageKind, Option<ArraySpec>, ChunkGrid);

/// A stage that sends a stream of `dtype` over `grid` (its own grid too).
fn made(kind: StageKind, dtype: DType, grid: ChunkGrid) -> Made {
    (
        kind,
        Some(ArraySpec {
            dtype,
            grid: grid.clone(),
        }),
        grid,
    )
}

fn plan_stage(
    d: &mut Diags,
    raw: &RawConfig,
    st: &RawStage,
    ks: &KindRef,
    ins: &[&PlannedStage],
    memory: u64,
    catalog: &dyn crate::catalog::Catalog,
) -> Option<Made> {
    let sname = Some(st.name.v.as_str());
    if let Some(def) = ks.def {
        let specs = [spec::COMMON, def.params];
        let inputs: Vec<InputRef> = ins
            .iter()
            .filter_map(|s| {
                s.output.as_ref().map(|spec| InputRef {
                    name: &s.name,
                    spec,
                })
            })
            .collect();
        if inputs.len() < ins.len() {
            return None;
        }
        let mut cx = PlanCx::new(
            d,
            st,
            Params::new(st, &specs),
            inputs,
            memory,
            &raw.path,
            catalog,
        );
        return (def.plan)(&mut cx).map(|p| (StageKind::Unit(p.op), p.output, p.grid));
    }
    match ks.kind {
        "synthetic" => {
            let shape = get_shape(st, "shape")?;
            let chunks = get_shape(st, "chunks")?;
            let dtype =
                DType::parse(get_str(st, "dtype").unwrap_or(default_of(ks.params, "dtype")))?;
            let pattern =
                Pattern::parse(get_str(st, "pattern").unwrap_or(default_of(ks.params, "pattern")))?;
            let seed = get_int(st, "seed").unwrap_or(0) as u64;
            if let Err(m) = pattern.check_shape(&shape) {
                d.err(&span_of(st, "shape"), sname, m);
                return None;
            }
            let grid = match ChunkGrid::new(shape, chunks) {
                Ok(g) => g,
                Err(e) => {
                    let key = if matches!(e, GridError::TooLarge { .. }) {
                        "shape"
                    } else {
                        "chunks"
                    };
                    d.err(&span_of(st, key), sname, e.to_string());
                    return None;
                }
            };
            let spec = ArraySpec {
                dtype,
                grid: grid.clone(),
            };
            Some((StageKind::Synthetic { pattern, seed }, Some(spec), grid))
        }
        "median" => {
            let stream = ins.first()?.output.as_ref()?;
            let nd = stream.shape().len();
            let size: Vec<usize> = match get(st, "size").map(|v| &v.v) {
                Some(Val::Int(i)) if *i >= 1 => vec![*i as usize; nd],
                Some(Val::Array(a)) => a
                    .iter()
                    .filter_map(|x| match x.v {
                        Val::Int(i) if i >= 1 => Some(i as usize),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            if size.len() != nd {
                d.err(&span_of(st, "size"), sname, format!("`size` must be a positive integer or one per axis ({nd} for the input {:?})", stream.shape()));
                return None;
            }
            for (ax, &n) in size.iter().enumerate() {
                if !check_radius(d, st, "size", ax, (n / 2) as f64, stream.shape()[ax]) {
                    return None;
                }
            }
            if size
                .iter()
                .try_fold(1usize, |a, &n| a.checked_mul(n))
                .is_none_or(|n| n > 1 << 32)
            {
                d.err(
                    &span_of(st, "size"),
                    sname,
                    format!("the window {size:?} holds more than 2^32 values"),
                );
                return None;
            }
            let stat = if let Some(r) = get_int(st, "rank") {
                blockflow_kernels::rank::Statistic::Rank(r)
            } else if let Some(q) = get_float(st, "percentile") {
                blockflow_kernels::rank::Statistic::Percentile(q)
            } else {
                blockflow_kernels::rank::Statistic::Median
            };
            let filter = match blockflow_kernels::rank::RankFilter::new(&size, stat, boundary(st)) {
                Ok(f) => f,
                Err(e) => {
                    d.err(&span_of(st, "size"), sname, e.to_string());
                    return None;
                }
            };
            if !check_wrap(d, st, &stream.grid, &filter.halo()) {
                return None;
            }
            let desc = format!(
                "{stat:?} of {size:?} windows, mode {}",
                get_str(st, "mode").unwrap_or("reflect")
            );
            let grid = stream.grid.clone();
            Some(made(StageKind::Median { filter, desc }, stream.dtype, grid))
        }
        "register" | "shift" => {
            let stream = ins.first()?.output.as_ref()?;
            let (shape, c) = (stream.shape(), stream.grid.chunk_shape());
            if shape.len() < 2 || c[0] != 1 || c[1..] != shape[1..] {
                d.err(&span_of(st, "inputs"), sname, format!("{} works frame by frame: the input {shape:?} must come one whole frame per chunk, [1, {:?}...], not {c:?}", ks.kind, &shape[1..]));
                return None;
            }
            let frame_nd = shape.len() as u64 - 1;
            if ks.kind == "register" {
                let grid = new_grid(d, st, vec![shape[0], frame_nd], vec![1, frame_nd])?;
                return Some(made(
                    StageKind::Register {
                        upsample: get_int(st, "upsample_factor").unwrap_or(1) as usize,
                    },
                    DType::F64,
                    grid,
                ));
            }
            let v = ins.get(1)?.output.as_ref()?;
            if v.shape() != [shape[0], frame_nd] || v.grid.chunk_shape()[0] != 1 {
                d.err(&span_of(st, "inputs"), sname, format!("the second input, \"{}\", must hold one vector per frame, [{}, {frame_nd}] in chunks of one row (a `register` stage); it is {:?} in chunks of {:?}", ins[1].name, shape[0], v.shape(), v.grid.chunk_shape()));
                return None;
            }
            let mode = blockflow_kernels::shift::InterpMode::parse(
                get_str(st, "mode").unwrap_or("constant"),
            )?;
            let grid = stream.grid.clone();
            Some(made(
                StageKind::Shift {
                    order: get_int(st, "order").unwrap_or(3) as usize,
                    mode,
                    cval: get_float(st, "cval").unwrap_or(0.0),
                    prefilter: get_bool(st, "prefilter").unwrap_or(true),
                },
                stream.dtype,
                grid,
            ))
        }
        "zscore" => {
            let stream = ins.first()?.output.as_ref()?;
            let ax = get_axis(d, st, 0, stream.shape().len(), "the input's")?;
            if stream.grid.chunk_shape()[ax] != stream.shape()[ax] {
                d.err(&span_of(st, "inputs"), sname, format!("zscore along axis {ax} needs each chunk to hold that axis whole: the input {:?} comes in chunks of {:?}; rechunk it (e.g. to whole time series) first", stream.shape(), stream.grid.chunk_shape()));
                return None;
            }
            let grid = stream.grid.clone();
            Some(made(
                StageKind::Zscore {
                    axis: ax,
                    ddof: get_int(st, "ddof").unwrap_or(0) as usize,
                },
                DType::F64,
                grid,
            ))
        }
        "read-hdf5" | "read-hdf5-stack" => {
            let pv = get(st, "path")?;
            let dataset = get_str(st, "dataset")?.to_string();
            let full = resolve(&raw.path, pv);
            let (kind, shape, dtype, default) = if ks.kind == "read-hdf5" {
                match blockflow_io::hdf5::Hdf5Reader::open(&full, &dataset) {
                    Ok(r) => {
                        let default = r
                            .info
                            .chunks
                            .clone()
                            .unwrap_or_else(|| r.info.shape.clone());
                        (
                            StageKind::ReadHdf5 {
                                path: full,
                                dataset,
                            },
                            r.info.shape.clone(),
                            r.info.dtype,
                            default,
                        )
                    }
                    Err(e) => {
                        d.err(&pv.span, sname, e.to_string());
                        return None;
                    }
                }
            } else {
                let index = match get_str(st, "index").filter(|s| !s.is_empty()) {
                    None => None,
                    Some(re) => match regex::Regex::new(re) {
                        Ok(r) if r.captures_len() > 1 => Some(r),
                        Ok(_) => {
                            d.err(&span_of(st, "index"), sname, format!("`index` = \"{re}\" has no capture group: put the digits in ( )"));
                            return None;
                        }
                        Err(e) => {
                            d.err(
                                &span_of(st, "index"),
                                sname,
                                format!("`index` is not a valid regex: {e}"),
                            );
                            return None;
                        }
                    },
                };
                let stack = match &raw.fixed_stack {
                    Some(s) => Ok(s.clone()),
                    None => blockflow_io::hdf5::StackReader::open_ordered(
                        &full.to_string_lossy(),
                        &dataset,
                        index.as_ref(),
                    ),
                };
                match stack {
                    Ok(stack) => {
                        let shape = stack.shape();
                        let mut default = vec![1];
                        default.extend(&stack.frame);
                        let dtype = stack.dtype;
                        (StageKind::ReadHdf5Stack { stack }, shape, dtype, default)
                    }
                    Err(e) => {
                        d.err(&pv.span, sname, e.to_string());
                        return None;
                    }
                }
            };
            let chunks = get_shape(st, "chunks").unwrap_or(default);
            let grid = match ChunkGrid::new(shape, chunks) {
                Ok(g) => g,
                Err(e) => {
                    d.err(&span_of(st, "chunks"), sname, e.to_string());
                    return None;
                }
            };
            Some(made(kind, dtype, grid))
        }
        "write-hdf5" => {
            let stream = ins.first()?.output.as_ref()?;
            if stream.dtype == DType::Bool {
                d.err(
                    &span_of(st, "inputs"),
                    sname,
                    "HDF5 output of booleans is not supported; cast to uint8 first",
                );
                return None;
            }
            let chunks =
                get_shape(st, "chunks").unwrap_or_else(|| stream.grid.chunk_shape().to_vec());
            Some((
                StageKind::WriteHdf5 {
                    path: resolve(&raw.path, get(st, "path")?),
                    dataset: get_str(st, "dataset").unwrap_or("data").to_string(),
                    chunks,
                    overwrite: get_str(st, "if_exists") == Some("overwrite"),
                },
                None,
                stream.grid.clone(),
            ))
        }
        "read-images" => {
            let pv = get(st, "path")?;
            let Val::Str(pattern) = &pv.v else {
                return None;
            };
            // The glob is relative to the config's folder, as every path.
            let full = resolve(&raw.path, pv);
            let files = match blockflow_io::images::list_images(&full.to_string_lossy()) {
                Ok(f) => f,
                Err(e) => {
                    d.err(&pv.span, sname, format!("{e} (`path = \"{pattern}\"`)"));
                    return None;
                }
            };
            let (image, dtype) = match blockflow_io::images::image_info(&files[0]) {
                Ok(i) => i,
                Err(e) => {
                    d.err(&pv.span, sname, e.to_string());
                    return None;
                }
            };
            let batch = get_int(st, "batch").unwrap_or(1).max(1) as u64;
            let image: Vec<u64> = image.iter().map(|&n| n as u64).collect();
            let mut shape = vec![files.len() as u64];
            shape.extend(&image);
            let mut chunks = vec![batch.min(files.len() as u64)];
            chunks.extend(&image);
            let grid = new_grid(d, st, shape, chunks)?;
            Some(made(StageKind::ReadImages { files, image }, dtype, grid))
        }
        "rescale" => {
            let input = ins.first()?;
            let stream = input.output.as_ref()?;
            let c = stream.grid.chunk_shape();
            if stream.shape().len() < 2 || c[1..] != stream.shape()[1..] {
                d.err(&span_of(st, "inputs"), sname, format!("rescale works per image (axis 0): chunks must hold whole images, but the input {:?} is in chunks of {c:?}; rechunk it first", stream.shape()));
                return None;
            }
            let pair = |key: &str| match get_floats(st, key, 2) {
                Some(Ok(v)) => Some(Ok((v[0], v[1]))),
                Some(Err(e)) => Some(Err(e)),
                None => None,
            };
            let named = |key: &str, v: &str| {
                blockflow_kernels::rescale::NamedRange::parse(v).ok_or_else(|| {
                    format!("`{key} = \"{v}\"`: not image, dtype, or a dtype name (uint8, uint12, float32, ...)")
                })
            };
            let in_range = match (
                pair("in_values"),
                pair("percentiles"),
                get_str(st, "in_range"),
            ) {
                (Some(Ok((lo, hi))), _, _) => Ok(InRange::Values(lo, hi)),
                (_, Some(Ok((lo, hi))), _)
                    if (0.0..=100.0).contains(&lo) && (0.0..=100.0).contains(&hi) && lo <= hi =>
                {
                    Ok(InRange::Percentiles(lo, hi))
                }
                (_, Some(Ok(_)), _) => {
                    Err("`percentiles` must be two values 0 <= lo <= hi <= 100".to_string())
                }
                (Some(Err(e)), _, _) | (_, Some(Err(e)), _) => Err(e),
                (None, None, None | Some("image")) => Ok(InRange::Image),
                (None, None, Some("dtype")) => Ok(InRange::Dtype),
                (None, None, Some(v)) => named("in_range", v).map(InRange::Named),
            };
            let out_range = match (pair("out_values"), get_str(st, "out_range")) {
                (Some(Ok((lo, hi))), _) => Ok(OutRange::Values(lo, hi)),
                (Some(Err(e)), _) => Err(e),
                (None, None | Some("dtype")) => Ok(OutRange::Dtype),
                (None, Some("image")) => Ok(OutRange::Image),
                (None, Some(v)) => named("out_range", v).map(OutRange::Named),
            };
            let (in_range, out_range) = match (in_range, out_range) {
                (Ok(i), Ok(o)) => (i, o),
                (Err(e), _) | (_, Err(e)) => {
                    d.err(&span_of(st, "in_range"), sname, e);
                    return None;
                }
            };
            let dtype = blockflow_kernels::rescale::output_dtype(stream.dtype, &out_range);
            let grid = stream.grid.clone();
            Some(made(
                StageKind::Rescale {
                    in_range,
                    out_range,
                },
                dtype,
                grid,
            ))
        }
        "pca" => {
            let input = ins.first()?;
            let stream = input.output.as_ref()?;
            let (shape, c) = (stream.shape(), stream.grid.chunk_shape());
            if shape.len() < 2 || c[0] != shape[0] {
                d.err(&span_of(st, "inputs"), sname, format!("pca needs every observation (axis 0) in each chunk, each chunk a band of features: the input {shape:?} is in chunks of {c:?}; rechunk it to [{}, ...] first", shape[0]));
                return None;
            }
            let n = shape[0];
            let k = (get_int(st, "k").unwrap_or(10) as u64).min(n);
            let values = get_str(st, "output") == Some("values");
            let (oshape, ochunks) = if values {
                (vec![k], vec![k])
            } else {
                let mut s = vec![k];
                s.extend(&shape[1..]);
                let mut ch = vec![k];
                ch.extend(&c[1..]);
                (s, ch)
            };
            let grid = new_grid(d, st, oshape, ochunks)?;
            Some(made(
                StageKind::Pca {
                    k: k as usize,
                    values,
                    dir: PathBuf::new(),
                    input: stream.grid.clone(),
                },
                DType::F64,
                grid,
            ))
        }
        "take" => {
            let (a, idx) = (ins.first()?.output.as_ref()?, ins.get(1)?.output.as_ref()?);
            if idx.grid.total_elements() != 1 || idx.dtype.is_float() || idx.dtype == DType::Bool {
                d.err(&span_of(st, "inputs"), sname, format!("the second input, \"{}\", must be one integer (a block index, e.g. an argmin); it is {} {:?}", ins[1].name, idx.dtype, idx.shape()));
                return None;
            }
            let grid = ChunkGrid::whole(a.grid.chunk_shape().to_vec());
            Some(made(
                StageKind::Take {
                    src: a.grid.clone(),
                    dir: PathBuf::new(),
                },
                a.dtype,
                grid,
            ))
        }
        "concatenate" | "stack" => {
            let new_axis = ks.kind == "stack";
            let specs: Vec<&ArraySpec> = ins.iter().filter_map(|i| i.output.as_ref()).collect();
            let first = specs.first()?;
            let nd = first.shape().len() + usize::from(new_axis);
            let ax = get_axis(d, st, 0, nd, "the result's")?;
            let mut dtype = first.dtype;
            let mut extent = 0;
            for (i, sp) in specs.iter().enumerate() {
                let same = if new_axis {
                    sp.shape() == first.shape()
                } else {
                    sp.shape().len() == first.shape().len()
                        && (0..sp.shape().len())
                            .all(|k| k == ax || sp.shape()[k] == first.shape()[k])
                };
                if !same {
                    d.err(
                        &span_of(st, "inputs"),
                        sname,
                        format!(
                            "{} needs inputs of one shape{}: \"{}\" is {:?}, \"{}\" is {:?}",
                            ks.kind,
                            if new_axis {
                                ""
                            } else {
                                " but for the joined axis"
                            },
                            ins[0].name,
                            first.shape(),
                            ins[i].name,
                            sp.shape()
                        ),
                    );
                    return None;
                }
                dtype = DType::promote(dtype, sp.dtype);
                if !new_axis {
                    extent += sp.shape()[ax];
                }
            }
            let (shape, chunks) = if new_axis {
                let mut s = first.shape().to_vec();
                s.insert(ax, specs.len() as u64);
                let mut c = first.grid.chunk_shape().to_vec();
                c.insert(ax, 1);
                (s, c)
            } else {
                let mut s = first.shape().to_vec();
                s[ax] = extent;
                (s, first.grid.chunk_shape().to_vec())
            };
            let grid = new_grid(d, st, shape, chunks)?;
            Some(made(
                StageKind::Join {
                    axis: ax,
                    new_axis,
                    grids: specs.iter().map(|s| s.grid.clone()).collect(),
                    dir: PathBuf::new(),
                },
                dtype,
                grid,
            ))
        }
        "transpose" => {
            let stream = ins.first()?.output.as_ref()?;
            let nd = stream.shape().len();
            let perm: Vec<usize> = match get(st, "axes").map(|v| &v.v) {
                None => (0..nd).rev().collect(),
                Some(Val::Array(a)) => {
                    let p: Vec<i64> = a
                        .iter()
                        .filter_map(|x| match x.v {
                            Val::Int(i) => Some(i),
                            _ => None,
                        })
                        .collect();
                    let p: Vec<usize> = p
                        .iter()
                        .map(|&i| {
                            if i < 0 {
                                (i + nd as i64) as usize
                            } else {
                                i as usize
                            }
                        })
                        .collect();
                    let mut sorted = p.clone();
                    sorted.sort_unstable();
                    if sorted != (0..nd).collect::<Vec<_>>() {
                        d.err(&span_of(st, "axes"), sname, format!("`axes` must be a permutation of 0..{nd} (the input {:?} has {nd} axes)", stream.shape()));
                        return None;
                    }
                    p
                }
                Some(_) => {
                    d.err(&span_of(st, "axes"), sname, "`axes` is a list of axes");
                    return None;
                }
            };
            let shape: Vec<u64> = perm.iter().map(|&k| stream.shape()[k]).collect();
            let chunks: Vec<u64> = perm.iter().map(|&k| stream.grid.chunk_shape()[k]).collect();
            let grid = new_grid(d, st, shape, chunks)?;
            Some(made(
                StageKind::Transpose {
                    perm,
                    src: stream.grid.clone(),
                    dir: PathBuf::new(),
                },
                stream.dtype,
                grid,
            ))
        }
        "slice" => {
            let stream = ins.first()?.output.as_ref()?;
            let iv = get(st, "index")?;
            let Val::Str(text) = &iv.v else { return None };
            let (map, drop, extents) = match parse_index(text, stream.shape()) {
                Ok(v) => v,
                Err(e) => {
                    d.err(
                        &iv.span,
                        sname,
                        format!(
                            "`index = \"{text}\"`: {e} (the input is {:?})",
                            stream.shape()
                        ),
                    );
                    return None;
                }
            };
            let kept: Vec<u64> = extents
                .iter()
                .zip(&drop)
                .filter(|(_, &dr)| !dr)
                .map(|(&e, _)| e)
                .collect();
            let src_chunks = stream.grid.chunk_shape();
            let default: Vec<u64> = src_chunks
                .iter()
                .zip(&drop)
                .filter(|(_, &dr)| !dr)
                .map(|(&c, _)| c)
                .collect();
            let out_chunks = get_shape(st, "chunks").unwrap_or(default);
            if out_chunks.len() != kept.len() {
                d.err(
                    &span_of(st, "chunks"),
                    sname,
                    format!(
                        "`chunks` has {} values but the result has {} axes ({kept:?})",
                        out_chunks.len(),
                        kept.len()
                    ),
                );
                return None;
            }
            let grid = new_grid(d, st, kept.clone(), out_chunks.clone())?;
            let mut it = grid.chunk_shape().iter();
            let inner_chunks: Vec<u64> = drop
                .iter()
                .map(|&dr| if dr { 1 } else { *it.next().unwrap_or(&1) })
                .collect();
            let inner = new_grid(d, st, extents.clone(), inner_chunks)?;
            let window = Regrid {
                src: stream.grid.clone(),
                dst: inner.clone(),
                halo: vec![(0, 0); extents.len()],
                map: map.clone(),
            }
            .window();
            Some(made(
                StageKind::Slice {
                    src: stream.grid.clone(),
                    map,
                    drop,
                    inner,
                    window,
                    text: text.clone(),
                },
                stream.dtype,
                grid,
            ))
        }
        "diff" => {
            let stream = ins.first()?.output.as_ref()?;
            let ax = get_axis(d, st, -1, stream.shape().len(), "the input's")?;
            let (n, c) = (stream.shape()[ax], stream.grid.chunk_shape()[ax]);
            if c != n || n < 2 {
                d.err(&span_of(st, "inputs"), sname, format!("diff along axis {ax} needs each chunk to hold that axis whole and at least 2 long: the input {:?} is in chunks of {:?}; rechunk it first", stream.shape(), stream.grid.chunk_shape()));
                return None;
            }
            let mut shape = stream.shape().to_vec();
            shape[ax] -= 1;
            let mut chunks = stream.grid.chunk_shape().to_vec();
            chunks[ax] -= 1;
            let grid = new_grid(d, st, shape, chunks)?;
            Some(made(StageKind::Diff { axis: ax }, stream.dtype, grid))
        }
        "matmul" => {
            let (a, b) = (ins.first()?.output.as_ref()?, ins.get(1)?.output.as_ref()?);
            let (sa, sb) = (a.shape(), b.shape());
            let bad = |d: &mut Diags, why: String| {
                d.err(&span_of(st, "inputs"), sname, why);
            };
            if sa.len() > 2 || sb.len() > 2 {
                bad(
                    d,
                    format!("matmul takes 1-D and 2-D arrays; the inputs are {sa:?} and {sb:?}"),
                );
                return None;
            }
            let k_a = *sa.last()?;
            let k_b = sb[0];
            if k_a != k_b {
                bad(
                    d,
                    format!(
                        "matmul: the inner dimensions differ ({sa:?} @ {sb:?}: {k_a} vs {k_b})"
                    ),
                );
                return None;
            }
            // `a` streams in bands of whole rows; `b` is held whole.
            let banded = sa.len() == 2 && a.grid.num_chunks() > 1;
            if banded && a.grid.chunk_shape()[1] != sa[1] {
                bad(d, format!("matmul streams \"{}\" by bands of whole rows: {sa:?} comes in chunks of {:?}; rechunk it to [{}, {}] (or any band height)", ins[0].name, a.grid.chunk_shape(), a.grid.chunk_shape()[0], sa[1]));
                return None;
            }
            if !banded && a.grid.num_chunks() != 1 {
                bad(d, format!("matmul holds a 1-D \"{}\" whole: {sa:?} comes in chunks of {:?}; rechunk it to one chunk", ins[0].name, a.grid.chunk_shape()));
                return None;
            }
            let mut shape = Vec::new();
            if sa.len() == 2 {
                shape.push(sa[0]);
            }
            if sb.len() == 2 {
                shape.push(sb[1]);
            }
            if shape.is_empty() {
                shape.push(1);
            }
            let dtype = match (a.dtype, b.dtype) {
                (DType::F32, DType::F32) => DType::F32,
                (x, y) if x.is_float() || y.is_float() => DType::F64,
                _ => DType::I64,
            };
            let grid = if banded {
                let mut c = shape.clone();
                c[0] = a.grid.chunk_shape()[0];
                new_grid(d, st, shape, c)?
            } else {
                new_grid(d, st, shape.clone(), shape)?
            };
            Some(made(
                StageKind::Matmul {
                    a: a.grid.clone(),
                    b_elems: b.grid.total_elements(),
                    dir: PathBuf::new(),
                },
                dtype,
                grid,
            ))
        }
        "write-csv" => {
            let first = ins.first()?.output.as_ref()?;
            let n = first.shape()[0];
            for i in ins {
                let o = i.output.as_ref()?;
                if o.shape().len() > 2 || o.shape()[0] != n {
                    d.err(&span_of(st, "inputs"), sname, format!("write-csv takes 1-D or 2-D arrays of one length: \"{}\" is {:?}, \"{}\" is {:?}", ins[0].name, first.shape(), i.name, o.shape()));
                    return None;
                }
                if o.grid.total_elements() > 10_000_000 {
                    d.err(
                        &span_of(st, "inputs"),
                        sname,
                        format!(
                            "\"{}\" has {} values, too many for CSV here; write it with write-zarr",
                            i.name,
                            o.grid.total_elements()
                        ),
                    );
                    return None;
                }
            }
            let path = resolve(&raw.path, get(st, "path")?);
            Some((
                StageKind::WriteCsv {
                    path,
                    overwrite: get_str(st, "if_exists") == Some("overwrite"),
                },
                None,
                first.grid.clone(),
            ))
        }
        "read-zarr" => {
            let pv = get(st, "path")?;
            let path = resolve(&raw.path, pv);
            let reader = match ZarrReader::open(&path) {
                Ok(r) => r,
                Err(e) => {
                    d.err(&pv.span, sname, e.to_string());
                    return None;
                }
            };
            let info = reader.info.clone();
            let chunks = get_shape(st, "chunks").unwrap_or_else(|| info.chunks.clone());
            let grid = match ChunkGrid::new(info.shape.clone(), chunks) {
                Ok(g) => g,
                Err(e) => {
                    d.err(&span_of(st, "chunks"), sname, e.to_string());
                    return None;
                }
            };
            let spec = ArraySpec {
                dtype: info.dtype,
                grid: grid.clone(),
            };
            Some((StageKind::ReadZarr { path, info }, Some(spec), grid))
        }
        "expr" => {
            let ev = get(st, "expr")?;
            let Val::Str(src) = &ev.v else { return None };
            let infos: Vec<InputInfo> = ins
                .iter()
                .map(|s| {
                    let o = s.output.as_ref().expect("inputs produce streams");
                    InputInfo {
                        name: s.name.clone(),
                        dtype: o.dtype,
                        shape: o.shape().to_vec(),
                        chunk: o.grid.chunk_shape().to_vec(),
                    }
                })
                .collect();
            let expr = match Expr::compile(src, &infos) {
                Ok(e) => e,
                Err(e) => {
                    // Column inside the string value (after the opening quote).
                    d.err_at(
                        &ev.span,
                        e.col,
                        sname,
                        format!("in the expression, column {}: {}", e.col, e.msg),
                    );
                    return None;
                }
            };
            let grid = match ChunkGrid::new(expr.shape().to_vec(), expr.chunk().to_vec()) {
                Ok(g) => g,
                Err(e) => {
                    d.err(&ev.span, sname, e.to_string());
                    return None;
                }
            };
            for s in ins {
                let g = &s.output.as_ref().expect("stream").grid;
                if g.num_chunks() != grid.num_chunks() {
                    d.err(
                        &span_of(st, "inputs"),
                        sname,
                        format!(
                            "input \"{}\" streams {} chunks ({}) but the result has {} ({}); inputs must be chunked alike along the axes they share",
                            s.name,
                            g.num_chunks(),
                            g,
                            grid.num_chunks(),
                            grid
                        ),
                    );
                    return None;
                }
            }
            let spec = ArraySpec {
                dtype: expr.dtype(),
                grid: grid.clone(),
            };
            Some((
                StageKind::Expr {
                    src: src.clone(),
                    expr: Box::new(expr),
                },
                Some(spec),
                grid,
            ))
        }
        "filter" => plan_filter(d, st, ins.first()?),
        "write-json" => {
            let total: u64 = ins
                .iter()
                .filter_map(|s| s.output.as_ref())
                .map(|o| o.grid.total_elements())
                .sum();
            if total > 1_000_000 {
                d.err(&span_of(st, "inputs"), sname, format!("{total} values are too many for JSON (at most 1,000,000); write them with write-zarr"));
                return None;
            }
            let path = resolve(&raw.path, get(st, "path")?);
            let grid = ins.first()?.output.as_ref()?.grid.clone();
            Some((
                StageKind::WriteJson {
                    path,
                    overwrite: get_str(st, "if_exists") == Some("overwrite"),
                },
                None,
                grid,
            ))
        }
        "rechunk" => {
            let input = ins.first()?;
            let stream = input.output.as_ref()?;
            let chunks = get_shape(st, "chunks")?;
            let grid = match ChunkGrid::new(stream.shape().to_vec(), chunks) {
                Ok(g) => g,
                Err(e) => {
                    d.err(&span_of(st, "chunks"), sname, e.to_string());
                    return None;
                }
            };
            let src = stream.grid.clone();
            let window = Regrid::new(src.clone(), grid.clone(), vec![(0, 0); src.ndim()]).window();
            let forced = match get_str(st, "route") {
                Some("memory") => Some(false),
                Some("disk") => Some(true),
                _ => None,
            };
            let route = if forced == Some(true) {
                disk_route(
                    &src,
                    &grid,
                    stream.dtype.size() as u64,
                    memory,
                    "`route = \"disk\"` in the config".into(),
                )
            } else {
                RechunkRoute::Memory
            };
            Some(made(
                StageKind::Rechunk {
                    src,
                    window,
                    forced,
                    route,
                },
                stream.dtype,
                grid,
            ))
        }
        "reduce" => {
            let input = ins.first()?;
            let stream = input.output.as_ref()?;
            let op = Reduction::parse(get_str(st, "op")?)?;
            let per_block = get_str(st, "over") == Some("blocks");
            let nd = stream.shape().len();
            let axes = match get(st, "axis").map(|v| &v.v) {
                None => None,
                Some(v) => {
                    let list: Vec<i64> = match v {
                        Val::Int(i) => vec![*i],
                        Val::Array(a) => a
                            .iter()
                            .filter_map(|x| match x.v {
                                Val::Int(i) => Some(i),
                                _ => None,
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    let mut axes = Vec::new();
                    for a in list {
                        let ax = if a < 0 { a + nd as i64 } else { a };
                        if ax < 0 || ax >= nd as i64 {
                            d.err(&span_of(st, "axis"), sname, format!("axis {a} is out of range for the input's {nd} axes (shape {:?})", stream.shape()));
                            return None;
                        }
                        if axes.contains(&(ax as usize)) {
                            d.err(
                                &span_of(st, "axis"),
                                sname,
                                format!("axis {a} is named twice"),
                            );
                            return None;
                        }
                        axes.push(ax as usize);
                    }
                    axes.sort_unstable();
                    if axes.is_empty() {
                        d.err(&span_of(st, "axis"), sname, "`axis` names no axis");
                        return None;
                    }
                    if per_block {
                        d.err(&span_of(st, "axis"), sname, "`axis` reduces axes of the whole array; it cannot be combined with `over = \"blocks\"`");
                        return None;
                    }
                    if matches!(op, Reduction::ArgMin | Reduction::ArgMax)
                        && axes.len() != 1
                        && axes.len() != nd
                    {
                        d.err(&span_of(st, "axis"), sname, "argmin and argmax take one axis (or none, for the whole array), as numpy");
                        return None;
                    }
                    Some(axes)
                }
            };
            let dtype = match op {
                Reduction::Sum | Reduction::NanSum if !stream.dtype.is_float() => DType::I64,
                Reduction::ArgMin | Reduction::ArgMax | Reduction::Count => DType::I64,
                Reduction::Any | Reduction::All => DType::Bool,
                // numpy keeps the dtype for min and max.
                Reduction::Min | Reduction::Max | Reduction::NanMin | Reduction::NanMax
                    if stream.dtype != DType::Bool =>
                {
                    stream.dtype
                }
                _ => DType::F64,
            };
            let shape = if per_block {
                stream.grid.grid_shape()
            } else if let Some(axes) = &axes {
                let r = blockflow_kernels::reduce::AxisReducer::out_shape_of(
                    stream.shape(),
                    axes,
                    get_bool(st, "keepdims").unwrap_or(false),
                );
                if r.is_empty() {
                    vec![1]
                } else {
                    r
                }
            } else {
                vec![1]
            };
            let grid = ChunkGrid::whole(shape);
            let kind = StageKind::Reduce {
                op,
                per_block,
                ddof: get_int(st, "ddof").unwrap_or(0) as u32,
                input: stream.grid.clone(),
                axes,
            };
            Some(made(kind, dtype, grid))
        }
        "write-png" => {
            let input = ins.first()?;
            let stream = input.output.as_ref()?;
            let shape = stream.shape().to_vec();
            let rgb = shape.len() == 3 && shape[2] == 3 && stream.grid.chunk_shape()[2] == 3;
            if shape.len() != 2 && !rgb {
                d.err(&span_of(st, "inputs"), sname, format!("a preview takes an (H, W) array or an RGB (H, W, 3) array with whole channels per chunk; the input is {shape:?} in chunks of {:?}", stream.grid.chunk_shape()));
                return None;
            }
            let region = match get_ints(st, "region", 4) {
                None => None,
                Some(Ok(r))
                    if r.len() == 4
                        && r[0] >= 0
                        && r[2] >= 0
                        && r[0] < r[1]
                        && r[2] < r[3]
                        && r[1] as u64 <= shape[0]
                        && r[3] as u64 <= shape[1] =>
                {
                    Some([r[0] as u64, r[1] as u64, r[2] as u64, r[3] as u64])
                }
                _ => {
                    d.err(
                        &span_of(st, "region"),
                        sname,
                        format!(
                            "`region` is [y0, y1, x0, x1] with y0 < y1 <= {} and x0 < x1 <= {}",
                            shape[0], shape[1]
                        ),
                    );
                    return None;
                }
            };
            let percentiles = match get_floats(st, "percentiles", 2) {
                None => [1.0, 99.5],
                Some(Ok(p)) if p.len() == 2 && 0.0 <= p[0] && p[0] < p[1] && p[1] <= 100.0 => {
                    [p[0], p[1]]
                }
                _ => {
                    d.err(
                        &span_of(st, "percentiles"),
                        sname,
                        "`percentiles` is [low, high] with 0 <= low < high <= 100",
                    );
                    return None;
                }
            };
            let options = PreviewOptions {
                region,
                max_size: get_int(st, "max_size").unwrap_or(1024) as u64,
                colormap: Colormap::parse(get_str(st, "colormap").unwrap_or("gray"))?,
                percentiles,
                max_pool: get_str(st, "downsample") == Some("max"),
                overwrite: get_str(st, "if_exists") == Some("overwrite"),
            };
            let path = resolve(&raw.path, get(st, "path")?);
            Some((
                StageKind::WritePng { path, options },
                None,
                stream.grid.clone(),
            ))
        }
        "write-blocks" => {
            let input = ins.first()?;
            let stream = input.output.as_ref()?;
            let path = resolve(&raw.path, get(st, "path")?);
            let csv = get(st, "csv").map(|v| resolve(&raw.path, v));
            let kind = StageKind::WriteBlocks {
                path,
                csv,
                threshold: get_float(st, "threshold")?,
                overwrite: get_str(st, "if_exists") == Some("overwrite"),
            };
            Some((kind, None, stream.grid.clone()))
        }
        "structure-tensor" => plan_tensor(d, st, ins.first()?),
        "write-zarr" => {
            let pv = get(st, "path")?;
            let path = resolve(&raw.path, pv);
            let input = ins.first()?;
            let Some(stream) = input.output.as_ref() else {
                d.err(
                    &span_of(st, "inputs"),
                    sname,
                    format!("input \"{}\" is a writer and sends nothing", input.name),
                );
                return None;
            };
            let stream_chunks = stream.grid.chunk_shape().to_vec();
            let chunks = get_shape(st, "chunks").unwrap_or_else(|| stream_chunks.clone());
            if chunks.len() != stream.shape().len() {
                d.err(
                    &span_of(st, "chunks"),
                    sname,
                    format!(
                        "`chunks` has {} axes but the array has {} ({:?})",
                        chunks.len(),
                        stream.shape().len(),
                        stream.shape()
                    ),
                );
                return None;
            }
            for ax in 0..chunks.len() {
                let (c, sc, n) = (chunks[ax], stream_chunks[ax], stream.shape()[ax]);
                if sc % c != 0 && !(sc >= n && c >= n) {
                    d.err(
                        &span_of(st, "chunks"),
                        sname,
                        format!(
                            "stored chunks {chunks:?} must divide the stream's chunks {stream_chunks:?} along every axis (axis {ax}: {c} does not divide {sc}); choose divisors, or re-grid the reader"
                        ),
                    );
                    return None;
                }
            }
            let codec = Codec::parse(get_str(st, "codec").unwrap_or("zstd"))?;
            let level = get_int(st, "level").unwrap_or(3) as i32;
            if codec == Codec::Gzip && level > 9 {
                d.err(&span_of(st, "level"), sname, "gzip levels are 0..=9");
                return None;
            }
            if codec == Codec::Blosc && level > 9 {
                d.err(&span_of(st, "level"), sname, "blosc levels are 0..=9");
                return None;
            }
            let options = ZarrWriteOptions {
                zarr_format: get_int(st, "format").unwrap_or(3) as u8,
                dtype: stream.dtype,
                shape: stream.shape().to_vec(),
                chunks,
                codec,
                level,
                overwrite: get_str(st, "if_exists") == Some("overwrite"),
                attributes: Default::default(),
            };
            Some((
                StageKind::WriteZarr { options, path },
                None,
                stream.grid.clone(),
            ))
        }
        _ => None,
    }
}

fn boundary(st: &RawStage) -> Boundary {
    let name = get_str(st, "mode").unwrap_or("reflect");
    Boundary::parse(name, get_float(st, "cval").unwrap_or(0.0)).unwrap_or(Boundary::Reflect)
}

/// `wrap` reads the far end of an axis, which a stream has not brought yet:
/// it needs the axis whole in each chunk.
fn check_wrap(d: &mut Diags, st: &RawStage, grid: &ChunkGrid, halo: &[(usize, usize)]) -> bool {
    let mode = get_str(st, "mode").unwrap_or("reflect");
    if mode != "wrap" && mode != "grid-wrap" {
        return true;
    }
    for (ax, &(b, a)) in halo.iter().enumerate() {
        if b + a > 0 && grid.chunk_shape()[ax] < grid.shape()[ax] {
            d.err(
                &span_of(st, "mode"),
                Some(&st.name.v),
                format!("mode \"wrap\" reads the far end of axis {ax}, which is split into chunks of {}; read it as one chunk along axis {ax}, or choose another mode", grid.chunk_shape()[ax]),
            );
            return false;
        }
    }
    true
}

/// The largest kernel radius (taps on each side) a filter may have along an
/// axis: the axis's length (a wider kernel sees mostly the boundary), but
/// at least [`MIN_RADIUS_BOUND`], and never more than [`MAX_RADIUS`]
/// (a kernel of 2^20 taps per side is 16 MiB of weights).
pub const MAX_RADIUS: u64 = 1 << 20;
/// Small arrays may still take the usual kernels (see [`MAX_RADIUS`]).
pub const MIN_RADIUS_BOUND: u64 = 1024;

/// Whether a kernel of radius `r` along `axis` (of `extent` elements) is
/// within [`MAX_RADIUS`]; a diagnostic on `key` when not.
fn check_radius(d: &mut Diags, st: &RawStage, key: &str, axis: usize, r: f64, extent: u64) -> bool {
    let limit = extent.clamp(MIN_RADIUS_BOUND, MAX_RADIUS);
    if r.is_finite() && r <= limit as f64 {
        return true;
    }
    d.err(
        &span_of(st, key),
        Some(st.name.v.as_str()),
        format!(
            "`{key}` gives a kernel of radius {r:.0} along axis {axis} (of {extent}); the radius may be at most {limit} (the axis's length, at least {MIN_RADIUS_BOUND}, at most {MAX_RADIUS})"
        ),
    );
    false
}

fn plan_filter(d: &mut Diags, st: &RawStage, input: &PlannedStage) -> Option<Made> {
    let sname = Some(st.name.v.as_str());
    let spec = input.output.clone()?;
    let nd = spec.shape().len();
    let mode = boundary(st);
    let which = get_str(st, "filter")?;
    let need = |d: &mut Diags, key: &str| {
        d.err(
            &st.name.span,
            sname,
            format!("filter \"{which}\" needs `{key}`"),
        )
    };
    let axis = |d: &mut Diags| -> Option<usize> {
        let a = get_int(st, "axis").unwrap_or(-1);
        let ax = if a < 0 { a + nd as i64 } else { a };
        if ax < 0 || ax >= nd as i64 {
            d.err(
                &span_of(st, "axis"),
                sname,
                format!("axis {a} is out of range for an array of {nd} axes"),
            );
            None
        } else {
            Some(ax as usize)
        }
    };
    let bad = |d: &mut Diags, key: &str, m: String| d.err(&span_of(st, key), sname, m);
    let mut desc = Vec::new();
    let passes: Vec<Pass> = match which {
        "gaussian" => {
            let sigma = match get_floats(st, "sigma", nd) {
                None => {
                    need(d, "sigma");
                    return None;
                }
                Some(Err(m)) => {
                    bad(d, "sigma", m);
                    return None;
                }
                Some(Ok(s)) => s,
            };
            if sigma.iter().any(|&x| x < 0.0) {
                bad(d, "sigma", "sigma must be >= 0".into());
                return None;
            }
            let order: Vec<usize> = match get_ints(st, "order", nd).unwrap_or(Ok(vec![0; nd])) {
                Ok(o) if o.iter().all(|&x| (0..=3).contains(&x)) => {
                    o.into_iter().map(|x| x as usize).collect()
                }
                Ok(_) => {
                    bad(d, "order", "orders are 0 to 3".into());
                    return None;
                }
                Err(m) => {
                    bad(d, "order", m);
                    return None;
                }
            };
            let radius: Option<Vec<usize>> = match get_ints(st, "radius", nd) {
                None => None,
                Some(Ok(r)) if r.iter().all(|&x| x >= 0) => {
                    Some(r.into_iter().map(|x| x as usize).collect())
                }
                Some(Ok(_)) => {
                    bad(d, "radius", "radius must be >= 0".into());
                    return None;
                }
                Some(Err(m)) => {
                    bad(d, "radius", m);
                    return None;
                }
            };
            let truncate = get_float(st, "truncate").unwrap_or(4.0);
            if truncate < 0.0 {
                bad(d, "truncate", "truncate must be >= 0".into());
                return None;
            }
            // The radius of every pass is checked before a kernel is made.
            for ax in (0..nd).filter(|&ax| sigma[ax] > 1e-15) {
                let (r, key) = match &radius {
                    Some(r) => (r[ax] as f64, "radius"),
                    None => ((truncate * sigma[ax] + 0.5).floor(), "sigma"),
                };
                if !check_radius(d, st, key, ax, r, spec.shape()[ax]) {
                    return None;
                }
            }
            desc.push(format!("gaussian sigma {sigma:?} order {order:?}"));
            filters::gaussian_passes(&sigma, &order, truncate, radius.as_deref(), mode)
        }
        "uniform" => {
            let size = match get_ints(st, "size", nd) {
                None => {
                    need(d, "size");
                    return None;
                }
                Some(Ok(s)) if s.iter().all(|&x| x >= 1) => s,
                Some(Ok(_)) => {
                    bad(d, "size", "sizes must be >= 1".into());
                    return None;
                }
                Some(Err(m)) => {
                    bad(d, "size", m);
                    return None;
                }
            };
            for (ax, &n) in size.iter().enumerate() {
                if !check_radius(d, st, "size", ax, (n / 2) as f64, spec.shape()[ax]) {
                    return None;
                }
            }
            desc.push(format!("uniform size {size:?}"));
            size.iter()
                .enumerate()
                .filter(|(_, &n)| n > 1)
                .map(|(ax, &n)| Pass {
                    axis: ax,
                    weights: vec![1.0 / n as f64; n as usize],
                    origin: 0,
                    mode,
                })
                .collect()
        }
        "sobel" => {
            let ax = axis(d)?;
            desc.push(format!("sobel axis {ax}"));
            let mut v = vec![Pass {
                axis: ax,
                weights: vec![-1.0, 0.0, 1.0],
                origin: 0,
                mode,
            }];
            v.extend((0..nd).filter(|&o| o != ax).map(|o| Pass {
                axis: o,
                weights: vec![1.0, 2.0, 1.0],
                origin: 0,
                mode,
            }));
            v
        }
        "correlate1d" | "convolve1d" => {
            let ax = axis(d)?;
            let w = match get_floats(st, "weights", 0) {
                Some(Ok(w)) if !w.is_empty() => w,
                _ => {
                    need(d, "weights");
                    return None;
                }
            };
            let origin = get_int(st, "origin").unwrap_or(0) as isize;
            if !filters::origin_ok(w.len(), origin) {
                bad(d, "origin", format!("origin {origin} is out of range for {} weights (scipy: -(len/2) <= origin <= (len-1)/2)", w.len()));
                return None;
            }
            desc.push(format!("{which} axis {ax} weights {w:?} origin {origin}"));
            if which == "correlate1d" {
                vec![Pass {
                    axis: ax,
                    weights: w,
                    origin,
                    mode,
                }]
            } else {
                let mut o = -origin;
                if w.len().is_multiple_of(2) {
                    o -= 1;
                }
                vec![Pass {
                    axis: ax,
                    weights: w.into_iter().rev().collect(),
                    origin: o,
                    mode,
                }]
            }
        }
        "difference" => {
            let ax = axis(d)?;
            let kind = if get_str(st, "difference") == Some("central") {
                Difference::Central
            } else {
                Difference::Forward
            };
            desc.push(format!("{kind:?} difference axis {ax}"));
            match kind {
                Difference::Forward => vec![Pass {
                    axis: ax,
                    weights: vec![-1.0, 1.0],
                    origin: -1,
                    mode,
                }],
                Difference::Central => vec![Pass {
                    axis: ax,
                    weights: vec![-0.5, 0.0, 0.5],
                    origin: 0,
                    mode,
                }],
            }
        }
        _ => return None,
    };
    if !check_wrap(d, st, &spec.grid, &filters::passes_halo(&passes, nd)) {
        return None;
    }
    if spec.dtype == DType::Bool {
        d.err(
            &span_of(st, "inputs"),
            sname,
            "filters take numbers, not bool; cast first (expr `u8(x)`)",
        );
        return None;
    }
    let grid = spec.grid.clone();
    Some((
        StageKind::Filter {
            passes,
            desc,
            fused: Vec::new(),
        },
        Some(spec),
        grid,
    ))
}

fn plan_tensor(d: &mut Diags, st: &RawStage, input: &PlannedStage) -> Option<Made> {
    let sname = Some(st.name.v.as_str());
    let spec = input.output.clone()?;
    let shape = spec.shape().to_vec();
    let chunk = spec.grid.chunk_shape().to_vec();
    if shape.len() != 3 || chunk[2] != shape[2] {
        d.err(
            &span_of(st, "inputs"),
            sname,
            format!("the structure tensor takes an image (H, W, C) with whole channels in each chunk; the input is {shape:?} in chunks of {chunk:?}"),
        );
        return None;
    }
    for key in ["sigma", "window_sigma"] {
        if get_float(st, key).is_some_and(|s| s <= 0.0) {
            d.err(&span_of(st, key), sname, format!("`{key}` must be > 0"));
            return None;
        }
    }
    let gradient = if get_str(st, "gradient") == Some("finite-difference") {
        Gradient::FiniteDifference
    } else {
        Gradient::GaussianDerivative {
            sigma: get_float(st, "sigma").unwrap_or(1.5),
            radius: get_int(st, "radius").unwrap_or(10) as usize,
        }
    };
    let params = TensorParams {
        gradient,
        window_sigma: get_float(st, "window_sigma").unwrap_or(2.0),
        window_radius: get_int(st, "window_radius").unwrap_or(10) as usize,
        mode: boundary(st),
    };
    let (hb, ha) = params.halo();
    if !check_wrap(d, st, &spec.grid, &[(hb, ha), (hb, ha), (0, 0)]) {
        return None;
    }
    let output = get_str(st, "output").unwrap_or("features").to_string();
    let (oshape, ochunk) = if output == "features" {
        (shape[..2].to_vec(), chunk[..2].to_vec())
    } else {
        (shape.clone(), chunk.clone())
    };
    let grid = new_grid(d, st, oshape, ochunk)?;
    let out = ArraySpec {
        dtype: DType::F64,
        grid: grid.clone(),
    };
    Some((
        StageKind::StructureTensor { params, output },
        Some(out),
        grid,
    ))
}

/// The halo a stage needs on each axis of its input, if any.
pub fn needs_halo(s: &PlannedStage, input_ndim: usize) -> Option<Vec<(usize, usize)>> {
    let h = match &s.kind {
        StageKind::Unit(op) => op.halo()?,
        StageKind::Filter { passes, .. } => filters::passes_halo(passes, input_ndim),
        StageKind::StructureTensor { params, .. } => {
            let (b, a) = params.halo();
            vec![(b, a), (b, a), (0, 0)]
        }
        StageKind::Median { filter, .. } => filter.halo(),
        _ => return None,
    };
    h.iter().any(|&(b, a)| b + a > 0).then_some(h)
}

/// How many chunks, in row-major order, a halo reaches back and ahead.
pub fn halo_reach(grid: &ChunkGrid, halo: &[(usize, usize)]) -> (u64, u64) {
    let g = grid.grid_shape();
    let c = grid.chunk_shape();
    let mut stride = 1u64;
    let (mut back, mut ahead) = (0u64, 0u64);
    for ax in (0..g.len()).rev() {
        let reach = |h: usize| (h as u64).div_ceil(c[ax]).min(g[ax] - 1);
        back += reach(halo[ax].0) * stride;
        ahead += reach(halo[ax].1) * stride;
        stride *= g[ax];
    }
    (back, ahead)
}

/// Streams the chunks of `src` (arriving in row-major order) into the
/// chunks of `dst`, each with `halo`, in row-major order: the overlap
/// assembler (same grids), the in-memory rechunker (no halo) and the slicer
/// (`map`: destination position j along an axis is source position
/// `start + j * step`).
#[derive(Debug, Clone, PartialEq)]
pub struct Regrid {
    pub src: ChunkGrid,
    pub dst: ChunkGrid,
    pub halo: Vec<(usize, usize)>,
    /// Per axis (start, step); empty: the identity.
    pub map: Vec<(u64, u64)>,
}

impl Regrid {
    /// Same positions in both grids (no slicing).
    pub fn new(src: ChunkGrid, dst: ChunkGrid, halo: Vec<(usize, usize)>) -> Regrid {
        Regrid {
            src,
            dst,
            halo,
            map: Vec::new(),
        }
    }

    fn affine(&self, ax: usize) -> (u64, u64) {
        self.map.get(ax).copied().unwrap_or((0, 1))
    }

    /// Row-major position (in `src`) of the last source chunk that
    /// destination chunk `o` needs.
    pub fn need_last(&self, o: &[u64]) -> u64 {
        let (sc, dc, n, g, nd) = (
            self.src.chunk_shape(),
            self.dst.chunk_shape(),
            self.src.shape(),
            self.src.grid_shape(),
            self.dst.shape(),
        );
        let last: Vec<u64> = (0..n.len())
            .map(|ax| {
                let (start, step) = self.affine(ax);
                let j = ((o[ax] + 1) * dc[ax]).min(nd[ax]).max(1) - 1;
                let pos = start + j * step + self.halo[ax].1 as u64;
                (pos.min(n[ax] - 1) / sc[ax]).min(g[ax] - 1)
            })
            .collect();
        self.src.ravel(&last)
    }

    /// Row-major position (in `dst`) of the last destination chunk that
    /// needs source chunk `a`; None when none does (a slice skips it).
    pub fn last_user(&self, a: &[u64]) -> Option<u64> {
        let (sc, dc, n, nd) = (
            self.src.chunk_shape(),
            self.dst.chunk_shape(),
            self.src.shape(),
            self.dst.shape(),
        );
        let mut last = Vec::with_capacity(n.len());
        for ax in 0..n.len() {
            let (start, step) = self.affine(ax);
            let (h0, h1) = (self.halo[ax].0 as i64, self.halo[ax].1 as i64);
            let a0 = (a[ax] * sc[ax]) as i64;
            let a1 = ((a[ax] + 1) * sc[ax]).min(n[ax]) as i64;
            // Destination positions j whose source span
            // [start + j step - h0, start + j step + h1] meets [a0, a1).
            let (s0, st) = (start as i64, step as i64);
            let lo = (a0 - h1 - s0).max(0);
            let j_lo = (lo + st - 1) / st;
            let hi = a1 - 1 + h0 - s0;
            if hi < 0 {
                return None;
            }
            let j_hi = (hi / st).min(nd[ax] as i64 - 1);
            if j_lo > j_hi {
                return None;
            }
            last.push(j_hi as u64 / dc[ax]);
        }
        Some(self.dst.ravel(&last))
    }

    /// The most source chunks held at once. The stream is simulated on a
    /// grid cut short along axis 0 (see [`Regrid::shortened`]), so the
    /// cost does not grow with the array; past [`SIMULATED_CHUNKS`] it is
    /// bounded instead (see [`Regrid::window_bound`]).
    pub fn window(&self) -> u64 {
        let short = self.shortened();
        let r = short.as_ref().unwrap_or(self);
        if r.dst.num_chunks() <= SIMULATED_CHUNKS && r.src.num_chunks() <= SIMULATED_CHUNKS {
            r.simulate()
        } else {
            self.window_bound()
        }
    }

    /// The same regrid with whole periods of axis 0 removed from the
    /// middle: without slicing, the stream's pattern along axis 0 repeats
    /// every `lcm(source chunk, destination chunk)` elements, and only the
    /// rows within reach of a halo and a chunk of either end differ, so the
    /// most chunks held is the same. None when there is nothing to cut.
    pub fn shortened(&self) -> Option<Regrid> {
        if !self.map.is_empty() || self.src.ndim() == 0 || self.src.shape() != self.dst.shape() {
            return None;
        }
        let (sc, dc) = (self.src.chunk_shape()[0], self.dst.chunk_shape()[0]);
        let period = (sc / gcd(sc, dc)).checked_mul(dc)?;
        let (h0, h1) = (self.halo[0].0 as u64, self.halo[0].1 as u64);
        let reach = h0.saturating_add(h1).saturating_add(2 * period);
        let keep = reach.div_ceil(period).saturating_mul(2).saturating_add(2);
        let n0 = self.src.shape()[0];
        let periods = n0 / period;
        if periods <= keep {
            return None;
        }
        let mut shape = self.src.shape().to_vec();
        shape[0] = n0 - (periods - keep) * period;
        let src = ChunkGrid::new(shape.clone(), self.src.chunk_shape().to_vec()).ok()?;
        let dst = ChunkGrid::new(shape, self.dst.chunk_shape().to_vec()).ok()?;
        Some(Regrid::new(src, dst, self.halo.clone()))
    }

    /// An upper bound on the chunks held, for grids too large to simulate:
    /// while a destination chunk is assembled, the chunks held lie in the
    /// source rows (along axis 0) from its start less the halo before to
    /// its end plus the halo after. With slicing: every source chunk.
    pub fn window_bound(&self) -> u64 {
        let g = self.src.grid_shape();
        if !self.map.is_empty() || g.is_empty() {
            return self.src.num_chunks();
        }
        let (sc, dc) = (self.src.chunk_shape()[0], self.dst.chunk_shape()[0]);
        let span = dc
            .saturating_add(self.halo[0].0 as u64)
            .saturating_add(self.halo[0].1 as u64);
        let rows = (span.div_ceil(sc) + 2).min(g[0]);
        rows.saturating_mul(g[1..].iter().product())
    }

    /// The most source chunks held at once, by simulating the stream.
    pub fn simulate(&self) -> u64 {
        let nd = self.dst.num_chunks() as usize;
        let mut evict_at = vec![0u64; nd + 1];
        let (mut arrived, mut held, mut most) = (0u64, 0u64, 0u64);
        for o in 0..nd as u64 {
            let need = self.need_last(&self.dst.unravel(o)) + 1;
            while arrived < need {
                if let Some(u) = self.last_user(&self.src.unravel(arrived)) {
                    evict_at[(u as usize).min(nd)] += 1;
                    held += 1;
                }
                arrived += 1;
            }
            most = most.max(held);
            held -= evict_at[o as usize];
        }
        most
    }
}

/// The most chunks the planner simulates a stream over (about 0.2 s and
/// 8 MiB); larger grids, after [`Regrid::shortened`], get
/// [`Regrid::window_bound`].
pub const SIMULATED_CHUNKS: u64 = 1 << 20;

/// The most chunks a sliding window keeps to give `grid`'s chunks a halo.
pub fn window_chunks(grid: &ChunkGrid, halo: &[(usize, usize)]) -> u64 {
    Regrid::new(grid.clone(), grid.clone(), halo.to_vec()).window()
}

/// Sets every join's input slack from the stages' leads (how far ahead of a
/// stage's output its sources must be), in topological order.
fn set_slack(stages: &mut [PlannedStage]) {
    let mut lead = vec![0u64; stages.len()];
    for k in 0..stages.len() {
        let base = stages[k].inputs.iter().map(|&i| lead[i]).max().unwrap_or(0);
        lead[k] = match &stages[k].kind {
            StageKind::Overlap { halo, .. } => base + halo_reach(&stages[k].grid, halo).1,
            StageKind::Unit(op) => match op.sends_halo() {
                Some(halo) => base + halo_reach(&stages[k].grid, halo).1,
                None => base,
            },
            _ => base,
        };
        stages[k].input_slack = stages[k]
            .inputs
            .iter()
            .map(|&i| (base - lead[i]) as usize)
            .collect();
    }
}

/// Elements of a chunk with its halo (saturating: a projection this large
/// is refused by any budget).
pub fn block_elements(grid: &ChunkGrid, halo: &[(usize, usize)]) -> u64 {
    grid.chunk_shape()
        .iter()
        .zip(halo)
        .map(|(&c, &(b, a))| c.saturating_add(b as u64).saturating_add(a as u64))
        .fold(1u64, |acc, x| acc.saturating_mul(x))
}

/// Merges chains of filters (a filter whose only consumer is a filter) into
/// one stage, then inserts an overlap stage before every stage that needs
/// a halo. Returns the stages in a new topological order.
fn fuse_and_assemble(stages: Vec<PlannedStage>, capacity: usize) -> Vec<PlannedStage> {
    // Work by name: inputs as names.
    let names: Vec<String> = stages.iter().map(|s| s.name.clone()).collect();
    let mut list: Vec<(PlannedStage, Vec<String>)> = stages
        .into_iter()
        .map(|s| {
            let ins = s.inputs.iter().map(|&j| names[j].clone()).collect();
            (s, ins)
        })
        .collect();
    // Fusion.
    loop {
        let consumers = |list: &[(PlannedStage, Vec<String>)], n: &str| {
            list.iter()
                .filter(|(_, ins)| ins.iter().any(|i| i == n))
                .count()
        };
        let pair = list.iter().enumerate().find_map(|(k, (s, ins))| {
            if !matches!(s.kind, StageKind::Filter { .. }) || ins.len() != 1 {
                return None;
            }
            let j = list.iter().position(|(t, _)| t.name == ins[0])?;
            (matches!(list[j].0.kind, StageKind::Filter { .. }) && consumers(&list, &ins[0]) == 1)
                .then_some((j, k))
        });
        let unit = list.iter().enumerate().find_map(|(k, (s, ins))| {
            let StageKind::Unit(op) = &s.kind else {
                return None;
            };
            if ins.len() != 1 {
                return None;
            }
            let j = list.iter().position(|(t, _)| t.name == ins[0])?;
            let StageKind::Unit(first) = &list[j].0.kind else {
                return None;
            };
            if consumers(&list, &ins[0]) != 1 {
                return None;
            }
            op.fuse_after(first.as_ref(), &list[j].0.name)
                .map(|merged| (j, k, merged))
        });
        if let Some((j, k, merged)) = unit {
            list[k].0.kind = StageKind::Unit(merged);
            list[k].1 = list[j].1.clone();
            list.remove(j);
            continue;
        }
        let Some((j, k)) = pair else { break };
        let (first, first_ins) = list[j].clone();
        if let (
            StageKind::Filter {
                passes: p1,
                desc: d1,
                fused: f1,
            },
            StageKind::Filter {
                passes,
                desc,
                fused,
            },
        ) = (&first.kind, &mut list[k].0.kind)
        {
            let mut all = p1.clone();
            all.append(passes);
            *passes = all;
            let mut dd = d1.clone();
            dd.append(desc);
            *desc = dd;
            let mut ff = f1.clone();
            ff.push(first.name.clone());
            ff.append(fused);
            *fused = ff;
        }
        list[k].1 = first_ins;
        list.remove(j);
    }
    // Overlap stages.
    let mut out: Vec<(PlannedStage, Vec<String>)> = Vec::new();
    for (s, ins) in list {
        let input = ins
            .first()
            .and_then(|n| out.iter().find(|(t, _)| &t.name == n))
            .map(|(t, _)| t.clone());
        if let Some(input) = input {
            let spec = input.output.clone().expect("inputs send");
            if let Some(halo) = needs_halo(&s, spec.shape().len()) {
                let name = format!("{}.halo", s.name);
                let ov = PlannedStage {
                    name: name.clone(),
                    kind: StageKind::Unit(Box::new(crate::stages::overlap::Overlap::new(
                        spec.grid.clone(),
                        halo,
                    ))),
                    params: Vec::new(),
                    inputs: vec![],
                    consumers: vec![],
                    output: Some(spec.clone()),
                    grid: spec.grid.clone(),
                    capacity,
                    parallel: 1,
                    input_slack: Vec::new(),
                    mem: StageMemory::default(),
                };
                out.push((ov, vec![input.name.clone()]));
                out.push((s, vec![name]));
                continue;
            }
        }
        out.push((s, ins));
    }
    // Back to indices.
    let pos: HashMap<String, usize> = out
        .iter()
        .enumerate()
        .map(|(i, (s, _))| (s.name.clone(), i))
        .collect();
    let mut stages: Vec<PlannedStage> = out
        .iter()
        .map(|(s, ins)| {
            let mut s = s.clone();
            s.inputs = ins.iter().map(|n| pos[n]).collect();
            s.consumers.clear();
            s
        })
        .collect();
    for i in 0..stages.len() {
        for j in stages[i].inputs.clone() {
            stages[j].consumers.push(i);
        }
    }
    stages
}

impl Plan {
    /// The plan as a table.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let projected = self.projected_bytes();
        let _ = writeln!(
            s,
            "pipeline \"{}\" ({}): {} stages, {} threads, memory budget {}, projected peak {} ({:.0}%)",
            self.name,
            self.config.display(),
            self.stages.len(),
            self.threads,
            human_bytes(self.memory),
            human_bytes(projected),
            100.0 * projected as f64 / self.memory.max(1) as f64
        );
        let _ = writeln!(
            s,
            "\n{:<12} {:<11} {:<14} {:<8} {:<22} {:<18} {:>7} {:>4} {:>4} {:>11}",
            "stage", "kind", "inputs", "dtype", "shape", "chunks", "n", "par", "cap", "memory"
        );
        for st in &self.stages {
            let inputs: Vec<&str> = st
                .inputs
                .iter()
                .map(|&j| self.stages[j].name.as_str())
                .collect();
            let written = match &st.kind {
                StageKind::Unit(op) => match op.writes() {
                    Some(crate::stages::Writes::Zarr { options, .. }) => Some(options),
                    _ => None,
                },
                _ => None,
            };
            let dtype = match (&st.output, &st.kind) {
                (Some(o), _) => o.dtype.name().to_string(),
                (None, _) if written.is_some() => written
                    .map(|o| o.dtype.name().to_string())
                    .unwrap_or_default(),
                (None, StageKind::WriteZarr { options, .. }) => options.dtype.name().to_string(),
                _ => "-".into(),
            };
            let chunks = match &st.kind {
                _ if written.is_some() => {
                    format!(
                        "{:?}",
                        written.map(|o| o.chunks.clone()).unwrap_or_default()
                    )
                }
                StageKind::WriteZarr { options, .. } => format!("{:?}", options.chunks),
                _ => format!("{:?}", st.grid.chunk_shape()),
            };
            let _ = writeln!(
                s,
                "{:<12} {:<11} {:<14} {:<8} {:<22} {:<18} {:>7} {:>4} {:>4} {:>11}",
                st.name,
                st.kind.name(),
                if inputs.is_empty() {
                    "-".to_string()
                } else {
                    inputs.join(",")
                },
                dtype,
                format!("{:?}", st.grid.shape()),
                chunks,
                st.chunks(),
                st.parallel,
                if st.is_sink() {
                    "-".to_string()
                } else {
                    st.capacity.to_string()
                },
                human_bytes(st.mem.total()),
            );
        }
        let _ = writeln!(s);
        for st in &self.stages {
            let detail = match &st.kind {
                StageKind::Unit(op) => op.describe(),
                StageKind::Synthetic { pattern, seed } => {
                    format!("pattern {pattern:?}, seed {seed}")
                }
                StageKind::ReadImages { files, image } => format!(
                    "{} images of {image:?} ({} ... {})",
                    files.len(),
                    files.first().map(|f| f.display().to_string()).unwrap_or_default(),
                    files.last().map(|f| f.display().to_string()).unwrap_or_default()
                ),
                StageKind::Rescale {
                    in_range,
                    out_range,
                } => format!("rescale_intensity from {in_range:?} to {out_range:?}, per image"),
                StageKind::Pca { k, values, dir, .. } => format!(
                    "TSQR over the bands, SVD of R; {}",
                    if *values {
                        format!("the {k} largest singular values")
                    } else {
                        format!("the first {k} modes u_i s_i (the input kept for a second pass in {})", dir.display())
                    }
                ),
                StageKind::WriteCsv { path, .. } => format!("CSV {}", path.display()),
                StageKind::Median { desc, .. } => desc.clone(),
                StageKind::Zscore { axis, ddof } => format!("along axis {axis}, ddof {ddof}"),
                StageKind::Register { upsample } => format!(
                    "each frame to the first by phase cross-correlation, to 1/{upsample} voxel"
                ),
                StageKind::Shift {
                    order,
                    mode,
                    cval,
                    prefilter,
                } => format!(
                    "each frame by its vector: spline order {order}, {mode:?} (cval {cval}), prefilter {prefilter}"
                ),
                StageKind::ReadHdf5 { path, dataset } => {
                    format!("{} dataset \"{dataset}\"", path.display())
                }
                StageKind::ReadHdf5Stack { stack } => format!(
                    "{} timepoints of {:?} (dataset \"{}\", {} ... {})",
                    stack.files.len(),
                    stack.frame,
                    stack.dataset,
                    stack.files.first().map(|f| f.display().to_string()).unwrap_or_default(),
                    stack.files.last().map(|f| f.display().to_string()).unwrap_or_default()
                ),
                StageKind::WriteHdf5 { path, dataset, .. } => {
                    format!("HDF5 {} dataset \"{dataset}\"", path.display())
                }
                StageKind::Take { src, dir } => format!(
                    "a block of chunks {:?}, chosen at run time (the chunks wait in {})",
                    src.chunk_shape(),
                    dir.display()
                ),
                StageKind::Diff { axis } => format!("diff along axis {axis}"),
                StageKind::Slice { text, window, .. } => {
                    format!("[{text}], holding up to {window} source chunks")
                }
                StageKind::Matmul { a, .. } if a.num_chunks() > 1 => format!(
                    "a @ b, a in {} bands of {:?} (kept in scratch until b has arrived), b held whole",
                    a.num_chunks(),
                    a.chunk_shape()
                ),
                StageKind::Matmul { .. } => "a @ b".to_string(),
                StageKind::Join {
                    axis,
                    new_axis,
                    dir,
                    ..
                } => format!(
                    "{} along axis {axis} (the inputs wait in {})",
                    if *new_axis { "stack" } else { "concatenate" },
                    dir.display()
                ),
                StageKind::Transpose { perm, dir, .. } => {
                    format!("axes {perm:?} (the input waits in {})", dir.display())
                }
                StageKind::ReadZarr { path, info } => {
                    let stream = st.grid.chunk_shape();
                    let regrid = if blockflow_io::stored_chunks::stream_is_finer(
                        &info.shape,
                        &info.chunks,
                        stream,
                    ) {
                        format!(
                            "; each stored chunk decoded once and cut into stream chunks, up to {} held",
                            blockflow_io::stored_chunks::held_stored_chunks(
                                &info.shape,
                                &info.chunks,
                                stream,
                                st.parallel as u64
                            )
                        )
                    } else {
                        String::new()
                    };
                    format!(
                        "{} (zarr v{}, stored chunks {:?}, {}){regrid}",
                        path.display(),
                        info.zarr_format,
                        info.chunks,
                        info.codecs
                    )
                }
                StageKind::Expr { src, .. } => src.clone(),
                StageKind::Filter { desc, fused, .. } => {
                    if fused.is_empty() {
                        desc.join(", ")
                    } else {
                        format!(
                            "{} (fused: {} and this stage run in one pass)",
                            desc.join(" then "),
                            fused.join(", ")
                        )
                    }
                }
                StageKind::StructureTensor { params, output } => format!("{output} of {params:?}"),
                StageKind::WriteJson { path, .. } => format!("JSON {}", path.display()),
                StageKind::Rechunk {
                    src,
                    window,
                    route: RechunkRoute::Memory,
                    ..
                } => format!(
                    "in memory, from chunks {:?}, holding up to {window} of them at once",
                    src.chunk_shape()
                ),
                StageKind::Rechunk {
                    src,
                    route:
                        RechunkRoute::Disk {
                            inter,
                            group,
                            dir,
                            why,
                        },
                    ..
                } => format!(
                    "through disk, from chunks {:?} via an intermediate store of chunks {inter:?} in {} (removed afterwards), read back {group:?} chunks at a time, because {why}",
                    src.chunk_shape(),
                    dir.display()
                ),
                StageKind::Reduce {
                    op,
                    per_block,
                    ddof,
                    axes,
                    ..
                } => format!(
                    "{op:?} over {}{}",
                    match (per_block, axes) {
                        (true, _) => "each block".to_string(),
                        (false, Some(a)) => format!("axes {a:?}"),
                        (false, None) => "the whole array".to_string(),
                    },
                    if *ddof > 0 {
                        format!(", ddof {ddof}")
                    } else {
                        String::new()
                    }
                ),
                StageKind::WritePng { path, options } => format!(
                    "PNG preview {} ({:?}, percentiles {:?}, region {:?}, at most {} px)",
                    path.display(),
                    options.colormap,
                    options.percentiles,
                    options.region,
                    options.max_size
                ),
                StageKind::WriteBlocks {
                    path,
                    csv,
                    threshold,
                    ..
                } => format!(
                    "blocks with values above {threshold} to {}{}",
                    path.display(),
                    csv.as_ref()
                        .map(|c| format!(" and {}", c.display()))
                        .unwrap_or_default()
                ),
                StageKind::Overlap { halo, window } => {
                    format!("halo {halo:?} from a sliding window of at most {window} chunks")
                }
                StageKind::WriteZarr { options, path } => format!(
                    "{} (zarr v{}, {:?} level {}, if exists: {})",
                    path.display(),
                    options.zarr_format,
                    options.codec,
                    options.level,
                    if options.overwrite {
                        "overwrite"
                    } else {
                        "fail"
                    }
                ),
            };
            let slack: Vec<String> = st
                .inputs
                .iter()
                .zip(&st.input_slack)
                .filter(|(_, &sl)| sl > 0)
                .map(|(&i, sl)| format!("{} +{sl}", self.stages[i].name))
                .collect();
            let detail = if slack.is_empty() {
                detail
            } else {
                format!("{detail}; extra room on input edges (chunks), to wait for a halo on another path: {}", slack.join(", "))
            };
            let _ = writeln!(
                s,
                "  {}: {}; memory {} working + {} channels",
                st.name,
                detail,
                human_bytes(st.mem.working),
                human_bytes(st.mem.channels)
            );
            if !st.params.is_empty() {
                let text: Vec<String> = st
                    .params
                    .iter()
                    .map(|(k, v)| format!("{k} = {v}"))
                    .collect();
                let _ = writeln!(s, "      {}", text.join(", "));
            }
        }
        s
    }

    /// The plan as JSON: every stage's kind, inputs, stream (dtype, shape,
    /// chunk grid), parallelism, channel capacity and projected bytes, for
    /// scripts (and the golden plans the tests compare against).
    pub fn to_json(&self) -> serde_json::Value {
        let stages: Vec<serde_json::Value> = self
            .stages
            .iter()
            .map(|st| {
                serde_json::json!({
                    "name": st.name,
                    "kind": st.kind.name(),
                    "inputs": st.inputs.iter().map(|&j| self.stages[j].name.clone()).collect::<Vec<_>>(),
                    "dtype": st.output.as_ref().map(|o| o.dtype.name()),
                    "shape": st.grid.shape(),
                    "chunks": st.grid.chunk_shape(),
                    "num_chunks": st.chunks(),
                    "parallel": st.parallel,
                    "capacity": st.capacity,
                    "input_slack": st.input_slack,
                    "memory": { "working": st.mem.working, "channels": st.mem.channels },
                })
            })
            .collect();
        serde_json::json!({
            "name": self.name,
            "memory": self.memory,
            "threads": self.threads,
            "projected": self.projected_bytes(),
            "stages": stages,
        })
    }

    /// The plan as a Graphviz digraph.
    pub fn to_dot(&self) -> String {
        let mut s = String::from(
            "digraph blockflow {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
        );
        for st in &self.stages {
            let _ = writeln!(
                s,
                "  \"{}\" [label=\"{}\\n{}\\n{} chunks of {:?}\\nmemory {}\"];",
                st.name,
                st.name,
                st.kind.name(),
                st.chunks(),
                st.grid.chunk_shape(),
                human_bytes(st.mem.total())
            );
            for &j in &st.inputs {
                let src = &self.stages[j];
                let o = src.output.as_ref().expect("inputs send");
                let _ = writeln!(
                    s,
                    "  \"{}\" -> \"{}\" [label=\"{} {:?}\\ncap {}\"];",
                    src.name,
                    st.name,
                    o.dtype,
                    o.shape(),
                    src.capacity
                );
            }
        }
        s.push_str("}\n");
        s
    }
}

#[cfg(test)]
mod tests;
