//! A pipeline as idempotent tasks for a cluster (Slurm array jobs) or a
//! local process pool, with no coordinator: the plan is cut into segments
//! at the points where a distributed run must materialise, each segment
//! into tasks over disjoint sets of whole output chunks.
//!
//! - A *chunk* segment holds stages that can compute any region from
//!   stored inputs (readers, map kernels, overlaps, in-memory rechunks; see
//!   [`crate::region`]). Its tasks split the chunks of what it stores (a
//!   `write-zarr` output, or an intermediate a later segment reads); each
//!   computes its chunks by region, reading halos straight from the stored
//!   inputs, and writes whole chunk files (temporary name, then rename).
//! - A *whole* segment holds the stages that wait for their whole input
//!   (reductions, PCA, `take`, joins, registration, writers of one file):
//!   one task runs them with the batch engine, reading their inputs from
//!   the stored intermediates in the same chunks and order as a batch run,
//!   so its results are the batch run's, bit for bit.
//! - A rechunk reads its input from an intermediate Zarr array whose chunks
//!   divide both sides' (written whole by the producer's tasks, read whole
//!   by the consumer's).
//! - A last *commit* task moves every output into place, as a batch run's
//!   commit does (locks, `if_exists`, one rename each).
//!
//! Every segment is an ordinary pipeline (a sub-configuration of the user's
//! file, with stored intermediates as `read-zarr` stages of the same name),
//! planned and checked by the same planner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use blockflow_core::human_bytes;
use blockflow_io::zarr::ZarrWriteOptions;
use blockflow_io::IoError;
use serde::Serialize;

use crate::catalog::{Catalog, FsCatalog};
use crate::config::{ConfigError, RawConfig, RawStage, Sp, Span, Val};
use crate::plan::{Plan, PlannedStage};

mod cut;
pub mod executor;
pub mod memory;
pub mod rundir;
mod segments;
mod stored;
mod subconfig;
pub mod task;
mod text;

use cut::Cut;
use stored::Stored;

pub use rundir::{RunDir, RunInfo};

/// Errors of cutting a pipeline into tasks and of running one.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Refused(String),
    #[error("{path}: {why}")]
    RunDir { path: PathBuf, why: String },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("segment {segment} task {index}: {msg}")]
    Task {
        segment: usize,
        index: u64,
        msg: String,
    },
}

/// How a task plan is made.
#[derive(Debug, Clone)]
pub struct TaskOptions {
    /// Tasks per chunk segment (at most one per chunk); None: about one
    /// per [`DEFAULT_TASK_OUTPUT`] of output.
    pub tasks: Option<u64>,
    /// CPUs per task: the threads each task runs.
    pub cpus: usize,
    /// The run folder (on storage every task can reach).
    pub run_dir: PathBuf,
}

/// Output bytes per task when the user does not set a task count.
pub const DEFAULT_TASK_OUTPUT: u64 = 2 << 30;

/// Where a stage runs in a distributed plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Place {
    /// A reader: read by region wherever it is needed.
    Source,
    /// Computable by region (map kernels, overlaps, windows that pass
    /// regions through).
    Region,
    /// A rechunk: its input is materialised with chunks aligned to both.
    Rechunk,
    /// Waits for its whole input: one task runs it.
    Whole,
    /// A Zarr writer of a region-computable stream: written chunk by chunk.
    ZarrSink,
    /// A reduction of a region-computable stream to per-chunk partials:
    /// the tasks computing its input store them, one task merges them.
    Partial,
}

/// What a segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegmentKind {
    Chunks,
    Whole,
    Commit,
}

/// How a segment's tasks wait for an earlier segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dependency {
    /// Every task after the whole earlier segment (Slurm `afterok`).
    AllToAll,
    /// Task i after task i of the earlier segment (Slurm `aftercorr`).
    OneToOne,
}

/// An array a segment stores, chunk by chunk.
#[derive(Debug, Clone, Serialize)]
pub struct Store {
    /// The stage whose output it holds.
    pub stage: String,
    /// `intermediate`, or the writer stage's name for an output.
    pub role: String,
    pub path: PathBuf,
    #[serde(skip)]
    pub options: ZarrWriteOptions,
    pub chunks: Vec<u64>,
}

/// A stage a chunk segment computes, with its grid and what it is stored to.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub stage: String,
    pub shape: Vec<u64>,
    /// The units: the stage's stream chunks.
    pub chunks: Vec<u64>,
    pub units: u64,
    pub stores: Vec<Store>,
    /// Reductions of the stage whose per-chunk partials are stored.
    pub partials: Vec<String>,
}

/// A reduction merged from the partials a chunk segment stored.
#[derive(Debug, Clone, Serialize)]
pub struct Merge {
    pub stage: String,
    /// The segment whose tasks stored the partials.
    pub from_segment: usize,
    /// Where the result is stored.
    pub path: PathBuf,
    #[serde(skip)]
    pub options: ZarrWriteOptions,
    pub chunks: Vec<u64>,
}

/// An output moved into place by the commit task.
#[derive(Debug, Clone, Serialize)]
pub struct FinalOutput {
    pub stage: String,
    pub staged: PathBuf,
    pub path: PathBuf,
    pub made: String,
    pub overwrite: bool,
}

/// One segment of a task plan.
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    pub index: usize,
    pub kind: SegmentKind,
    /// The user's stages it runs.
    pub stages: Vec<String>,
    /// Reductions it merges from partials before it runs its stages.
    pub merges: Vec<Merge>,
    /// Stored arrays it reads (intermediates of earlier segments).
    pub reads: Vec<String>,
    pub groups: Vec<Group>,
    pub tasks: u64,
    pub units: u64,
    /// Threads of each task.
    pub workers: usize,
    /// Earlier segments it waits for, and how.
    pub after: Vec<(usize, Dependency)>,
    /// Projected peak bytes of one task.
    pub task_memory: u64,
    /// Bytes the largest task reads and writes.
    pub task_input_bytes: u64,
    pub task_output_bytes: u64,
    /// Bytes the whole segment stores as intermediates.
    pub intermediate_bytes: u64,
    /// The segment as a pipeline (not serialised).
    #[serde(skip)]
    pub raw: Option<RawConfig>,
    #[serde(skip)]
    pub plan: Option<Plan>,
}

/// A pipeline cut into segments and tasks.
#[derive(Debug, Clone, Serialize)]
pub struct TaskPlan {
    pub name: String,
    pub config: PathBuf,
    pub run_dir: PathBuf,
    pub cpus: usize,
    pub memory_budget: u64,
    pub places: BTreeMap<String, Place>,
    pub segments: Vec<Segment>,
    pub finals: Vec<FinalOutput>,
    /// Bytes of every intermediate array of the run.
    pub intermediate_bytes: u64,
    /// The whole pipeline as planned (its stages' kinds).
    #[serde(skip)]
    pub full: Option<Plan>,
}

impl TaskPlan {
    pub fn total_tasks(&self) -> u64 {
        self.segments.iter().map(|s| s.tasks).sum()
    }
    /// A fingerprint of the plan (what each task checks it still agrees with).
    pub fn fingerprint(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }
    /// The first unit and the unit past the last of task `i` of segment `s`.
    pub fn task_units(&self, s: usize, i: u64) -> (u64, u64) {
        let seg = &self.segments[s];
        split(seg.units, seg.tasks, i)
    }
}

/// Units `[lo, hi)` of part `i` of `n` over `units`.
pub fn split(units: u64, n: u64, i: u64) -> (u64, u64) {
    let n = n.max(1);
    let lo = (u128::from(units) * u128::from(i) / u128::from(n)) as u64;
    let hi = (u128::from(units) * u128::from(i + 1) / u128::from(n)) as u64;
    (lo, hi)
}

pub(super) fn str_entry(st: &RawStage, key: &str) -> Option<String> {
    match st.get(key).map(|v| &v.v) {
        Some(Val::Str(s)) => Some(s.clone()),
        _ => None,
    }
}

pub(super) fn sp<T>(v: T) -> Sp<T> {
    Sp {
        v,
        span: Span::None,
    }
}

pub(super) fn set_entry(entries: &mut Vec<(Sp<String>, Sp<Val>)>, key: &str, v: Val) {
    match entries.iter_mut().find(|(k, _)| k.v == key) {
        Some((_, val)) => val.v = v,
        None => entries.push((sp(key.to_string()), sp(v))),
    }
}

pub(super) fn path_val(p: &Path) -> Val {
    Val::Str(p.to_string_lossy().into_owned())
}

pub(super) fn shape_val(s: &[u64]) -> Val {
    Val::Array(s.iter().map(|&n| sp(Val::Int(n as i64))).collect())
}

/// The planned stage called `name` (absent for a filter fused into its
/// consumer).
pub(super) fn planned<'p>(plan: &'p Plan, name: &str) -> Option<&'p PlannedStage> {
    plan.stages.iter().find(|s| s.name == name)
}

/// The default run folder: `<name>.run` beside the pipeline's report.
pub fn default_run_dir(raw: &RawConfig) -> Result<PathBuf, ClusterError> {
    let plan = crate::plan::plan(&unbounded(raw))?;
    let parent = plan
        .report
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    Ok(parent.join(format!("{}.run", plan.name)))
}

/// `raw` with a budget no plan exceeds.
pub(super) fn unbounded(raw: &RawConfig) -> RawConfig {
    let mut r = raw.clone();
    set_entry(&mut r.pipeline, "memory", Val::Str("1024 TiB".into()));
    r
}

/// Cuts the pipeline `raw` (its overrides applied) into a task plan.
pub fn plan_tasks(raw: &RawConfig, opts: &TaskOptions) -> Result<TaskPlan, ClusterError> {
    plan_tasks_with(raw, opts, &FsCatalog)
}

/// [`plan_tasks`], reading stored inputs' metadata from `catalog`.
pub fn plan_tasks_with(
    raw: &RawConfig,
    opts: &TaskOptions,
    catalog: &dyn Catalog,
) -> Result<TaskPlan, ClusterError> {
    let mut raw = raw.clone();
    set_entry(
        &mut raw.pipeline,
        "threads",
        Val::Int(opts.cpus.max(1) as i64),
    );
    // The whole pipeline is planned for its shapes, grids and kinds only:
    // no task runs it, so its batch memory (an overlap's row of chunks on
    // a 400,000-pixel-wide image) is not held to the budget; each segment
    // is (segments.rs).
    let budget = crate::plan::plan_budget(&raw);
    let full = crate::plan::plan_with(&unbounded(&raw), catalog)?;
    let run_dir = absolute(&opts.run_dir);
    let cut = Cut::new(&raw, &full)?;
    let chunks = stored::materialised(&cut, &full);
    let (finals, staged) = stored::staged_outputs(&raw, &cut, &run_dir);
    // Outputs are staged in the run folder and renamed into place by the
    // commit; an object store has no rename (and its own protocol, which
    // `blockflow run` follows).
    if let Some(f) = finals
        .iter()
        .find(|f| blockflow_io::remote::is_url(&f.path))
    {
        return Err(ClusterError::Refused(format!(
            "stage \"{}\" writes to {}: a distributed run stages each output in its run folder and renames it into place, which object storage cannot do; use `blockflow run` for it, or write to a shared filesystem",
            f.stage,
            f.path.display()
        )));
    }
    let (at, shared) = stored::locate(&cut, &full, &chunks, &staged, &run_dir);
    let stored = Stored {
        chunks: &chunks,
        at: &at,
        shared: &shared,
    };
    let (run_catalog, intermediate_bytes) = stored::catalog(catalog, &cut, &full, &stored);
    let cx = segments::Cx {
        cut: &cut,
        full: &full,
        raw: &raw,
        opts,
        budget,
        run_dir: &run_dir,
        stored,
        staged: &staged,
        catalog: &run_catalog,
    };
    let mut segments = segments::all(&cx)?;
    if !finals.is_empty() {
        segments.push(segments::commit(segments.len()));
    }
    let places = (0..cut.nodes.len())
        .map(|i| (cut.name(i).to_string(), cut.place[i]))
        .collect();
    Ok(TaskPlan {
        name: full.name.clone(),
        config: absolute(&raw.path),
        run_dir,
        cpus: opts.cpus.max(1),
        memory_budget: budget,
        places,
        segments,
        finals,
        intermediate_bytes,
        full: Some(full),
    })
}

/// The kind of file an output parameter names, for the commit's checks.
pub(super) fn made_name(kind: &str, param: &str) -> &'static str {
    match (kind, param) {
        ("write-zarr", _) => "zarr",
        ("write-hdf5", _) => "hdf5",
        ("write-png", _) => "png",
        ("write-csv", _) | (_, "csv") => "csv",
        _ => "json",
    }
}

/// `p` absolute, canonical as far as it exists (the same path written two
/// ways gives one plan).
pub fn absolute(p: &Path) -> PathBuf {
    crate::paths::absolute(p)
}

/// `human_bytes` for tables.
pub(crate) fn hb(b: u64) -> String {
    human_bytes(b)
}

#[cfg(test)]
mod tests;
