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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use blockflow_core::{human_bytes, ChunkGrid, DType};
use blockflow_io::hdf5::{Hdf5Info, StackReader};
use blockflow_io::zarr::{Codec, ZarrInfo, ZarrWriteOptions};
use blockflow_io::IoError;
use serde::Serialize;

use crate::catalog::{Catalog, FsCatalog};
use crate::config::{ConfigError, RawConfig, RawStage, Sp, Span, Val};
use crate::plan::{Plan, PlannedStage};
use crate::stages::{Exec, PType, PathRole, Writes};

pub mod executor;
pub mod memory;
pub mod rundir;
pub mod task;
mod text;

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

/// A raw stage's kind and input names.
struct Node<'a> {
    raw: &'a RawStage,
    kind: String,
    inputs: Vec<String>,
}

fn str_entry(st: &RawStage, key: &str) -> Option<String> {
    match st.get(key).map(|v| &v.v) {
        Some(Val::Str(s)) => Some(s.clone()),
        _ => None,
    }
}

fn input_names(st: &RawStage) -> Vec<String> {
    match st.get("inputs").map(|v| &v.v) {
        Some(Val::Array(a)) => a
            .iter()
            .filter_map(|v| match &v.v {
                Val::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn sp<T>(v: T) -> Sp<T> {
    Sp {
        v,
        span: Span::None,
    }
}

fn set_entry(entries: &mut Vec<(Sp<String>, Sp<Val>)>, key: &str, v: Val) {
    match entries.iter_mut().find(|(k, _)| k.v == key) {
        Some((_, val)) => val.v = v,
        None => entries.push((sp(key.to_string()), sp(v))),
    }
}

fn path_val(p: &Path) -> Val {
    Val::Str(p.to_string_lossy().into_owned())
}

fn shape_val(s: &[u64]) -> Val {
    Val::Array(s.iter().map(|&n| sp(Val::Int(n as i64))).collect())
}

/// The planned stage called `name` (absent for a filter fused into its
/// consumer).
fn planned<'p>(plan: &'p Plan, name: &str) -> Option<&'p PlannedStage> {
    plan.stages.iter().find(|s| s.name == name)
}

/// Where a stage runs in a distributed plan.
fn place_of(plan: &Plan, node: &Node<'_>) -> Place {
    if node.kind == "rechunk" {
        return Place::Rechunk;
    }
    let Some(st) = planned(plan, &node.raw.name.v) else {
        // Fused into its only consumer: a filter.
        return Place::Region;
    };
    match st.kind.exec() {
        Exec::Source(_) => Place::Source,
        Exec::Map(k) if k.keeps_state() => Place::Whole,
        // An input that is not the output's positions (plus trailing axes
        // the kernel reduces) is broadcast or indexed along a leading axis:
        // no region of it follows from a region of the output.
        Exec::Map(_) if !st.kind.regional() && !positional(plan, st) => Place::Whole,
        Exec::Map(_) => Place::Region,
        Exec::Window(w) => {
            let r = &w.regrid;
            if r.map.is_empty() && !w.drop.iter().any(|&d| d) && r.src.shape() == r.dst.shape() {
                Place::Region
            } else {
                Place::Whole
            }
        }
        Exec::Barrier(_) if st.kind.partials().is_some() => Place::Partial,
        Exec::Barrier(_) => Place::Whole,
        Exec::Sink(_) => match st.kind.writes() {
            Some(Writes::Zarr { .. }) => Place::ZarrSink,
            _ => Place::Whole,
        },
    }
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
fn unbounded(raw: &RawConfig) -> RawConfig {
    let mut r = raw.clone();
    set_entry(&mut r.pipeline, "memory", Val::Str("1024 TiB".into()));
    r
}

/// Whether every input of `st` has the output's shape as its leading axes.
fn positional(plan: &Plan, st: &PlannedStage) -> bool {
    let Some(out) = st.output.as_ref() else {
        return false;
    };
    let n = out.shape().len();
    st.inputs.iter().all(|&j| {
        plan.stages[j]
            .output
            .as_ref()
            .is_some_and(|o| o.shape().len() >= n && o.shape()[..n] == *out.shape())
    })
}

/// A catalog that answers for the intermediates a run will have written
/// before a segment reads them, and asks the files for everything else.
struct RunCatalog<'a> {
    inner: &'a dyn Catalog,
    inter: HashMap<PathBuf, ZarrInfo>,
}

impl Catalog for RunCatalog<'_> {
    fn zarr(&self, path: &Path) -> Result<ZarrInfo, IoError> {
        match self.inter.get(path) {
            Some(i) => Ok(i.clone()),
            None => self.inner.zarr(path),
        }
    }
    fn hdf5(&self, path: &Path, dataset: &str) -> Result<Hdf5Info, IoError> {
        self.inner.hdf5(path, dataset)
    }
    fn hdf5_stack(
        &self,
        pattern: &str,
        dataset: &str,
        index: Option<&regex::Regex>,
    ) -> Result<StackReader, IoError> {
        self.inner.hdf5_stack(pattern, dataset, index)
    }
    fn images(&self, pattern: &str) -> Result<(Vec<PathBuf>, Vec<usize>, DType), IoError> {
        self.inner.images(pattern)
    }
}

/// The options of an intermediate array.
fn inter_options(dtype: DType, shape: Vec<u64>, chunks: Vec<u64>) -> ZarrWriteOptions {
    ZarrWriteOptions {
        zarr_format: 3,
        dtype,
        shape,
        chunks,
        codec: Codec::Zstd,
        level: 1,
        overwrite: true,
        attributes: Default::default(),
    }
}

/// What is known of each stage while segments are formed.
struct Cut<'a> {
    nodes: Vec<Node<'a>>,
    by_name: HashMap<String, usize>,
    place: Vec<Place>,
    /// The segment time: chunk segment k at 2k, whole segment w at 2w+1.
    time: Vec<Option<usize>>,
}

impl<'a> Cut<'a> {
    fn new(raw: &'a RawConfig, plan: &Plan) -> Result<Self, ClusterError> {
        let nodes: Vec<Node<'a>> = raw
            .stages
            .iter()
            .map(|st| Node {
                raw: st,
                kind: str_entry(st, "kind").unwrap_or_default(),
                inputs: input_names(st),
            })
            .collect();
        let by_name: HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.raw.name.v.clone(), i))
            .collect();
        let mut place: Vec<Place> = nodes.iter().map(|n| place_of(plan, n)).collect();
        let mut cut = Cut {
            time: vec![None; nodes.len()],
            nodes,
            by_name,
            place: Vec::new(),
        };
        // A Zarr writer of a stream only one task can make is written by it.
        let order = cut.order()?;
        cut.place = std::mem::take(&mut place);
        for &i in &order {
            // Partials come from the tasks that compute the input by region;
            // of an input one task makes, the reduction runs in that task.
            if cut.place[i] == Place::Partial {
                let j = cut.by_name[&cut.nodes[i].inputs[0]];
                if !matches!(cut.place[j], Place::Source | Place::Region | Place::Rechunk) {
                    cut.place[i] = Place::Whole;
                }
            }
            cut.time[i] = cut.time_of(i);
            if cut.place[i] == Place::ZarrSink {
                let j = cut.by_name[&cut.nodes[i].inputs[0]];
                if matches!(cut.place[j], Place::Whole | Place::Partial) {
                    cut.place[i] = Place::Whole;
                    cut.time[i] = cut.time[j];
                }
            }
        }
        Ok(cut)
    }

    /// Stages, inputs first.
    fn order(&self) -> Result<Vec<usize>, ClusterError> {
        fn visit(c: &Cut<'_>, i: usize, seen: &mut Vec<u8>, out: &mut Vec<usize>) {
            if seen[i] != 0 {
                return;
            }
            seen[i] = 1;
            for n in &c.nodes[i].inputs {
                if let Some(&j) = c.by_name.get(n) {
                    visit(c, j, seen, out);
                }
            }
            seen[i] = 2;
            out.push(i);
        }
        let mut seen = vec![0u8; self.nodes.len()];
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            visit(self, i, &mut seen, &mut out);
        }
        Ok(out)
    }

    fn time_of(&self, i: usize) -> Option<usize> {
        let ins: Vec<(Place, Option<usize>)> = self.nodes[i]
            .inputs
            .iter()
            .map(|n| {
                let j = self.by_name[n];
                (self.place[j], self.time[j])
            })
            .collect();
        let t = |_: Place, t: Option<usize>| t.unwrap_or(0);
        match self.place[i] {
            Place::Source => None,
            Place::Region | Place::ZarrSink => Some(
                ins.iter()
                    .map(|&(p, tj)| match p {
                        Place::Source => 0,
                        Place::Whole | Place::Partial => t(p, tj) + 1,
                        _ => t(p, tj),
                    })
                    .max()
                    .unwrap_or(0),
            ),
            Place::Rechunk => Some(
                ins.iter()
                    .map(|&(p, tj)| match p {
                        Place::Source => 0,
                        Place::Whole | Place::Partial => t(p, tj) + 1,
                        _ => t(p, tj) + 2,
                    })
                    .max()
                    .unwrap_or(0),
            ),
            // Merged by the whole task after the input's chunk task.
            Place::Partial => Some(
                ins.iter()
                    .map(|&(p, tj)| match p {
                        Place::Source => 1,
                        _ => t(p, tj) + 1,
                    })
                    .max()
                    .unwrap_or(1),
            ),
            Place::Whole => Some(
                ins.iter()
                    .map(|&(p, tj)| match p {
                        Place::Source => 1,
                        Place::Whole | Place::Partial => t(p, tj),
                        _ => t(p, tj) + 1,
                    })
                    .max()
                    .unwrap_or(1),
            ),
        }
    }

    fn name(&self, i: usize) -> &str {
        &self.nodes[i].raw.name.v
    }

    fn consumers(&self, i: usize) -> Vec<usize> {
        let name = self.name(i);
        (0..self.nodes.len())
            .filter(|&c| self.nodes[c].inputs.iter().any(|n| n == name))
            .collect()
    }
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
    // is, below.
    let budget = crate::plan::plan_budget(&raw);
    let full = crate::plan::plan_with(&unbounded(&raw), catalog)?;
    let run_dir = absolute(&opts.run_dir);
    let cut = Cut::new(&raw, &full)?;
    let n = cut.nodes.len();

    // What must be stored: a stage read by a stage of another segment.
    let mut inter_chunks: HashMap<usize, Vec<u64>> = HashMap::new();
    for i in 0..n {
        if cut.place[i] == Place::Source {
            continue;
        }
        let Some(st) = planned(&full, cut.name(i)) else {
            continue;
        };
        let Some(out) = st.output.as_ref() else {
            continue;
        };
        let mut chunks: Option<Vec<u64>> = None;
        for c in cut.consumers(i) {
            // A merged reduction is stored by its merge, even for consumers
            // of the same task; its partials are made where its input is.
            let same = cut.time[c] == cut.time[i] && cut.place[i] != Place::Partial;
            if (same && cut.place[c] != Place::Rechunk) || cut.place[c] == Place::Partial {
                continue;
            }
            let mine = out.grid.chunk_shape().to_vec();
            let want = if cut.place[c] == Place::Rechunk {
                let dst = planned(&full, cut.name(c))
                    .and_then(|s| s.output.as_ref())
                    .map(|o| o.grid.clone())
                    .unwrap_or_else(|| out.grid.clone());
                let ones = vec![1; mine.len()];
                crate::plan::intermediate_chunks(&out.grid, &dst, &ones)
            } else {
                mine
            };
            chunks = Some(match chunks {
                None => want,
                Some(have) => have
                    .iter()
                    .zip(&want)
                    .map(|(&a, &b)| crate::plan::gcd(a, b).max(1))
                    .collect(),
            });
        }
        if let Some(c) = chunks {
            inter_chunks.insert(i, c);
        }
    }

    // The outputs, staged in the run folder and moved into place at the end.
    let mut finals = Vec::new();
    let mut staged_paths: HashMap<(usize, &'static str), PathBuf> = HashMap::new();
    for i in 0..n {
        let Some(def) = crate::stages::kind(&cut.nodes[i].kind) else {
            continue;
        };
        for ps in def.params {
            if !matches!(ps.ty, PType::Path(PathRole::Output)) {
                continue;
            }
            let Some(v) = cut.nodes[i].raw.get(ps.name) else {
                continue;
            };
            let Val::Str(s) = &v.v else { continue };
            if s.is_empty() {
                continue;
            }
            let path = absolute(&crate::plan::resolve(&raw.path, v));
            let base = path.file_name().map(PathBuf::from).unwrap_or_default();
            let staged = run_dir
                .join("out")
                .join(cut.name(i))
                .join(ps.name)
                .join(base);
            let overwrite =
                str_entry(cut.nodes[i].raw, "if_exists").as_deref() == Some("overwrite");
            finals.push(FinalOutput {
                stage: cut.name(i).to_string(),
                staged: staged.clone(),
                path,
                made: made_name(&cut.nodes[i].kind, ps.name).to_string(),
                overwrite,
            });
            staged_paths.insert((i, ps.name), staged);
        }
    }

    // Where each intermediate is: a stage also written by a `write-zarr`
    // of the same segment, in the same chunks, is read back from that
    // output (staged in the run folder until the commit), not stored twice.
    let mut inter_at: HashMap<usize, PathBuf> = HashMap::new();
    let mut shared: HashSet<usize> = HashSet::new();
    for (&i, chunks) in &inter_chunks {
        let sink = cut.consumers(i).into_iter().find(|&c| {
            cut.place[i] != Place::Partial
                && cut.nodes[c].kind == "write-zarr"
                && cut.time[c] == cut.time[i]
                && planned(&full, cut.name(c)).is_some_and(|st| {
                    matches!(st.kind.writes(), Some(Writes::Zarr { options, .. }) if options.chunks == *chunks)
                })
        });
        match sink.and_then(|c| staged_paths.get(&(c, "path"))) {
            Some(p) => {
                inter_at.insert(i, p.clone());
                shared.insert(i);
            }
            None => {
                inter_at.insert(
                    i,
                    run_dir.join("inter").join(format!("{}.zarr", cut.name(i))),
                );
            }
        }
    }
    let mut inter_info: HashMap<PathBuf, ZarrInfo> = HashMap::new();
    let mut intermediate_bytes = 0u64;
    for (&i, chunks) in &inter_chunks {
        let out = planned(&full, cut.name(i)).and_then(|s| s.output.as_ref());
        let Some(out) = out else { continue };
        if !shared.contains(&i) {
            intermediate_bytes += out.total_bytes();
        }
        inter_info.insert(
            inter_at[&i].clone(),
            ZarrInfo {
                path: inter_at[&i].clone(),
                zarr_format: 3,
                dtype: out.dtype,
                shape: out.shape().to_vec(),
                chunks: chunks.clone(),
                codecs: "zstd".into(),
                fill_value: "0".into(),
            },
        );
    }
    let run_catalog = RunCatalog {
        inner: catalog,
        inter: inter_info,
    };
    // Each stage's stream chunks in the full plan: an intermediate is read
    // back in them, so its consumers see the chunks a batch run sends.
    let stream: HashMap<usize, Vec<u64>> = (0..n)
        .filter_map(|i| {
            planned(&full, cut.name(i))
                .and_then(|s| s.output.as_ref())
                .map(|o| (i, o.grid.chunk_shape().to_vec()))
        })
        .collect();
    // Segments in time order.
    let is_partial = |i: usize| cut.place[i] == Place::Partial;
    let mut times: Vec<usize> = cut.time.iter().flatten().copied().collect();
    // A merged reduction's partials are made in the segment before its merge.
    times.extend(
        (0..n)
            .filter(|&i| is_partial(i))
            .filter_map(|i| cut.time[i])
            .map(|t| t - 1),
    );
    times.sort_unstable();
    times.dedup();
    let mut segments: Vec<Segment> = Vec::new();
    let mut seg_of_time: HashMap<usize, usize> = HashMap::new();
    for &t in &times {
        let members: Vec<usize> = (0..n)
            .filter(|&i| cut.time[i] == Some(t) && !is_partial(i))
            .collect();
        // Reductions whose partials this segment makes, and those it merges.
        let partials_here: Vec<usize> = (0..n)
            .filter(|&i| is_partial(i) && cut.time[i] == Some(t + 1))
            .collect();
        let merges_here: Vec<usize> = (0..n)
            .filter(|&i| is_partial(i) && cut.time[i] == Some(t))
            .collect();
        let also: Vec<usize> = partials_here
            .iter()
            .map(|&x| cut.by_name[&cut.nodes[x].inputs[0]])
            .collect();
        let index = segments.len();
        let kind = if t % 2 == 0 {
            SegmentKind::Chunks
        } else {
            SegmentKind::Whole
        };
        let sub = sub_config(
            &raw,
            &cut,
            &members,
            &also,
            &Stored {
                chunks: &inter_chunks,
                at: &inter_at,
                shared: &shared,
            },
            &staged_paths,
            &stream,
            &run_dir,
            t,
        );
        // A chunk segment's tasks compute regions, holding no window: its
        // stages' per-chunk memory is checked below instead.
        let sub_raw = if kind == SegmentKind::Chunks {
            unbounded(&sub.raw)
        } else {
            sub.raw.clone()
        };
        let sub_plan = if sub_raw.stages.is_empty() {
            None
        } else {
            Some(crate::plan::plan_with(&sub_raw, &run_catalog).map_err(|e| {
                ClusterError::Refused(format!(
                    "segment {index} (stages {}) cannot be planned on its own: {e}",
                    members
                        .iter()
                        .map(|&i| cut.name(i))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?)
        };
        let merged_from = t.checked_sub(1).and_then(|p| seg_of_time.get(&p).copied());
        let mut after: Vec<(usize, Dependency)> = sub
            .reads
            .iter()
            .filter_map(|&j| cut.time[j].and_then(|tj| seg_of_time.get(&tj).copied()))
            .chain(merges_here.iter().filter_map(|_| merged_from))
            .map(|s| (s, Dependency::AllToAll))
            .collect();
        after.sort_unstable_by_key(|a| a.0);
        after.dedup_by_key(|a| a.0);
        let mut stage_names: Vec<String> = merges_here
            .iter()
            .map(|&x| format!("{} (merge)", cut.name(x)))
            .collect();
        stage_names.extend(members.iter().map(|&i| cut.name(i).to_string()));
        stage_names.extend(
            partials_here
                .iter()
                .map(|&x| format!("{} (partials)", cut.name(x))),
        );
        let mut merges = Vec::new();
        for &x in &merges_here {
            let out = planned(&full, cut.name(x)).and_then(|s| s.output.as_ref());
            let (Some(out), Some(from)) = (out, merged_from) else {
                return Err(ClusterError::Refused(format!(
                    "stage \"{}\": no segment makes its partials",
                    cut.name(x)
                )));
            };
            let chunks = out.grid.chunk_shape().to_vec();
            merges.push(Merge {
                stage: cut.name(x).to_string(),
                from_segment: from,
                path: inter_at
                    .get(&x)
                    .cloned()
                    .unwrap_or_else(|| run_dir.join("inter").join(format!("{}.zarr", cut.name(x)))),
                options: inter_options(out.dtype, out.shape().to_vec(), chunks.clone()),
                chunks,
            });
        }
        let mut seg = Segment {
            index,
            kind,
            stages: stage_names,
            merges,
            reads: sub.reads.iter().map(|&j| cut.name(j).to_string()).collect(),
            groups: Vec::new(),
            tasks: 1,
            units: 1,
            workers: opts.cpus.max(1),
            after,
            task_memory: sub_plan.as_ref().map_or(16 << 20, Plan::projected_bytes),
            task_input_bytes: 0,
            task_output_bytes: 0,
            intermediate_bytes: 0,
            raw: None,
            plan: None,
        };
        for &i in &members {
            if inter_chunks.contains_key(&i) && !shared.contains(&i) {
                if let Some(o) = planned(&full, cut.name(i)).and_then(|s| s.output.as_ref()) {
                    seg.intermediate_bytes += o.total_bytes();
                }
            }
        }
        if let (SegmentKind::Chunks, Some(sub_plan)) = (kind, sub_plan.as_ref()) {
            let stored = Stored {
                chunks: &inter_chunks,
                at: &inter_at,
                shared: &shared,
            };
            let partials: Vec<(String, String)> = partials_here
                .iter()
                .zip(&also)
                .map(|(&x, &j)| (cut.name(x).to_string(), cut.name(j).to_string()))
                .collect();
            chunk_groups(
                &mut seg,
                &cut,
                &members,
                &partials,
                sub_plan,
                &stored,
                &staged_paths,
            )?;
            seg.units = seg.groups.iter().map(|g| g.units).sum();
            let out_bytes: u64 = seg
                .groups
                .iter()
                .map(|g| {
                    let item = planned(sub_plan, &g.stage)
                        .and_then(|s| s.output.as_ref())
                        .map_or(1, |o| o.dtype.size() as u64);
                    g.shape.iter().product::<u64>() * item * g.stores.len() as u64
                })
                .sum();
            let tasks = match opts.tasks {
                Some(t) => t,
                None => out_bytes.div_ceil(DEFAULT_TASK_OUTPUT),
            };
            seg.tasks = tasks.clamp(1, seg.units.max(1));
            let per_unit: u64 = sub_plan
                .stages
                .iter()
                .filter(|s| !matches!(s.kind.exec(), Exec::Window(_)))
                .map(|s| s.mem.working / s.parallel.max(1) as u64)
                .sum();
            if per_unit > budget {
                return Err(ClusterError::Refused(format!(
                    "segment {index} (stages {}): one chunk needs {} to compute by region, over the pipeline's `memory` of {}; use smaller chunks, or raise `memory`",
                    seg.stages.join(", "),
                    hb(per_unit),
                    hb(budget)
                )));
            }
            // As many threads as the CPUs, and as the budget holds.
            let fit = (budget / per_unit.max(1)).max(1);
            seg.workers = (opts.cpus.max(1) as u64).min(fit) as usize;
            seg.task_memory = per_unit.saturating_mul(seg.workers as u64);
            seg.task_output_bytes = out_bytes.div_ceil(seg.tasks);
            seg.task_input_bytes = input_bytes(sub_plan, &seg).div_ceil(seg.tasks);
        } else if let Some(sub_plan) = sub_plan.as_ref() {
            seg.task_input_bytes = sub_plan
                .stages
                .iter()
                .filter(|s| s.inputs.is_empty())
                .filter_map(|s| s.output.as_ref().map(|o| o.total_bytes()))
                .sum();
            seg.task_output_bytes = seg.intermediate_bytes;
        }
        seg.raw = Some(sub.raw);
        seg.plan = sub_plan;
        seg_of_time.insert(t, index);
        segments.push(seg);
    }
    if !finals.is_empty() {
        let index = segments.len();
        segments.push(Segment {
            index,
            kind: SegmentKind::Commit,
            stages: Vec::new(),
            merges: Vec::new(),
            reads: Vec::new(),
            groups: Vec::new(),
            tasks: 1,
            units: 1,
            workers: opts.cpus.max(1),
            after: (0..index).map(|s| (s, Dependency::AllToAll)).collect(),
            task_memory: 16 << 20,
            task_input_bytes: 0,
            task_output_bytes: 0,
            intermediate_bytes: 0,
            raw: None,
            plan: None,
        });
    }
    let places = (0..n)
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

/// Bytes a chunk segment reads from stored inputs: each group's units'
/// leaves (sources) over the unit grown by the halos on the way, estimated
/// from one interior unit of each group.
fn input_bytes(plan: &Plan, seg: &Segment) -> u64 {
    let mut total = 0u64;
    for g in &seg.groups {
        let Some(k) = plan.stages.iter().position(|s| s.name == g.stage) else {
            continue;
        };
        let grid = match ChunkGrid::new(g.shape.clone(), g.chunks.clone()) {
            Ok(gr) => gr,
            Err(_) => continue,
        };
        let mid: Vec<u64> = grid.grid_shape().iter().map(|&n| n / 2).collect();
        let per = leaf_bytes(plan, k, &grid.region(&mid));
        total = total.saturating_add(per.saturating_mul(g.units));
    }
    total
}

fn leaf_bytes(plan: &Plan, k: usize, region: &blockflow_core::Region) -> u64 {
    let st = &plan.stages[k];
    let item = st.output.as_ref().map_or(1, |o| o.dtype.size() as u64);
    if st.inputs.is_empty() {
        return region.shape.iter().product::<u64>() * item;
    }
    match st.kind.exec() {
        Exec::Map(_) => st
            .inputs
            .iter()
            .enumerate()
            .map(|(pos, &j)| {
                let shape = plan.stages[j]
                    .output
                    .as_ref()
                    .map(|o| o.shape().to_vec())
                    .unwrap_or_default();
                let (want, _) = st.kind.input_region(pos, region, &shape);
                leaf_bytes(plan, j, &want)
            })
            .sum(),
        _ => leaf_bytes(plan, st.inputs[0], region),
    }
}

/// The kind of file an output parameter names, for the commit's checks.
fn made_name(kind: &str, param: &str) -> &'static str {
    match (kind, param) {
        ("write-zarr", _) => "zarr",
        ("write-hdf5", _) => "hdf5",
        ("write-png", _) => "png",
        ("write-csv", _) | (_, "csv") => "csv",
        _ => "json",
    }
}

/// `p` from the root, without `.` and `dir/..` (the same path written two
/// ways gives one plan).
pub(crate) fn absolute(p: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    crate::plan::normalize(&abs)
}

/// The stages stored for other segments: in which chunks, where, and
/// which of them are read back from an output of the same chunks.
struct Stored<'a> {
    chunks: &'a HashMap<usize, Vec<u64>>,
    at: &'a HashMap<usize, PathBuf>,
    shared: &'a HashSet<usize>,
}

/// A segment as a pipeline of its own.
struct Sub {
    raw: RawConfig,
    /// The stages whose stored output it reads.
    reads: Vec<usize>,
}

#[allow(clippy::too_many_arguments)]
/// The pipeline a segment runs: its stages as the user wrote them (outputs
/// staged in the run folder); each input from outside as the reader the
/// user wrote, or as a `read-zarr` of its intermediate under the same
/// name, in the same chunks; a `write-zarr` of each of its stages a later
/// segment reads.
fn sub_config(
    raw: &RawConfig,
    cut: &Cut<'_>,
    members: &[usize],
    also: &[usize],
    stored: &Stored<'_>,
    staged: &HashMap<(usize, &'static str), PathBuf>,
    stream: &HashMap<usize, Vec<u64>>,
    run_dir: &Path,
    t: usize,
) -> Sub {
    let mut stages: Vec<RawStage> = Vec::new();
    let mut have: HashSet<usize> = HashSet::new();
    let mut reads = Vec::new();
    let member: HashSet<usize> = members.iter().copied().collect();
    let inter = |i: usize| stored.at[&i].clone();
    let add_read = |stages: &mut Vec<RawStage>, j: usize, chunks: Option<Vec<u64>>, name: &str| {
        let mut entries = vec![
            (sp("kind".to_string()), sp(Val::Str("read-zarr".into()))),
            (sp("path".to_string()), sp(path_val(&inter(j)))),
        ];
        if let Some(c) = chunks {
            entries.push((sp("chunks".to_string()), sp(shape_val(&c))));
        }
        stages.push(RawStage {
            name: sp(name.to_string()),
            entries,
        });
    };
    // Inputs from outside, in the order the members name them.
    for &i in members {
        for input in &cut.nodes[i].inputs {
            let j = cut.by_name[input];
            if member.contains(&j) || have.contains(&j) {
                continue;
            }
            have.insert(j);
            if cut.place[j] == Place::Source {
                stages.push(cut.nodes[j].raw.clone());
            } else {
                reads.push(j);
                add_read(&mut stages, j, stream.get(&j).cloned(), input);
            }
        }
    }
    // The readers of the streams whose partials it makes.
    for &j in also {
        if !member.contains(&j) && have.insert(j) && cut.place[j] == Place::Source {
            stages.push(cut.nodes[j].raw.clone());
        }
    }
    for &i in members {
        let node = &cut.nodes[i];
        if cut.place[i] == Place::Rechunk {
            // Read from its input's intermediate in its own chunks.
            let j = cut.by_name[&node.inputs[0]];
            if cut.place[j] == Place::Source {
                stages.push(node.raw.clone());
            } else {
                if !reads.contains(&j) {
                    reads.push(j);
                }
                let chunks = stream.get(&i).cloned();
                let mut st_entries = vec![
                    (sp("kind".to_string()), sp(Val::Str("read-zarr".into()))),
                    (sp("path".to_string()), sp(path_val(&inter(j)))),
                ];
                if let Some(c) = chunks {
                    st_entries.push((sp("chunks".to_string()), sp(shape_val(&c))));
                }
                stages.push(RawStage {
                    name: node.raw.name.clone(),
                    entries: st_entries,
                });
            }
            continue;
        }
        let mut st = node.raw.clone();
        if let Some(def) = crate::stages::kind(&node.kind) {
            for ps in def.params {
                if let Some(p) = staged.get(&(i, ps.name)) {
                    set_entry(&mut st.entries, ps.name, path_val(p));
                    set_entry(&mut st.entries, "if_exists", Val::Str("overwrite".into()));
                }
            }
        }
        stages.push(st);
    }
    // Stores of members read elsewhere.
    for &i in members {
        if stored.shared.contains(&i) {
            continue;
        }
        if let Some(chunks) = stored.chunks.get(&i) {
            stages.push(RawStage {
                name: sp(format!("__store_{}", cut.name(i))),
                entries: vec![
                    (sp("kind".to_string()), sp(Val::Str("write-zarr".into()))),
                    (
                        sp("inputs".to_string()),
                        sp(Val::Array(vec![sp(Val::Str(cut.name(i).to_string()))])),
                    ),
                    (sp("path".to_string()), sp(path_val(&inter(i)))),
                    (sp("chunks".to_string()), sp(shape_val(chunks))),
                    (sp("level".to_string()), sp(Val::Int(1))),
                    (
                        sp("if_exists".to_string()),
                        sp(Val::Str("overwrite".into())),
                    ),
                ],
            });
        }
    }
    let mut pipeline = raw.pipeline.clone();
    set_entry(
        &mut pipeline,
        "report",
        path_val(&run_dir.join("reports").join(format!("t{t}.report.json"))),
    );
    // A rechunk through disk inside a task: the pipeline's scratch if it
    // names one, else the node's ($TMPDIR, which Slurm sites point at local
    // disk), else the run folder.
    let has_scratch = pipeline
        .iter()
        .any(|(k, v)| k.v == "scratch" && matches!(&v.v, Val::Str(s) if !s.is_empty()));
    if !has_scratch {
        let scratch = std::env::var_os("TMPDIR")
            .map(PathBuf::from)
            .filter(|d| d.is_absolute())
            .map_or_else(|| run_dir.join("scratch"), |d| d.join("blockflow-scratch"));
        set_entry(&mut pipeline, "scratch", path_val(&scratch));
    }
    Sub {
        raw: RawConfig {
            path: raw.path.clone(),
            text: raw.text.clone(),
            pipeline,
            follow: Vec::new(),
            stages,
            fixed_stack: None,
        },
        reads,
    }
}

/// The groups of a chunk segment: each stage it stores, with its stores.
#[allow(clippy::too_many_arguments)]
fn chunk_groups(
    seg: &mut Segment,
    cut: &Cut<'_>,
    members: &[usize],
    partials: &[(String, String)],
    sub_plan: &Plan,
    stored: &Stored<'_>,
    staged: &HashMap<(usize, &'static str), PathBuf>,
) -> Result<(), ClusterError> {
    let mut groups: Vec<Group> = Vec::new();
    let mut push = |stage: &str,
                    store: Option<Store>,
                    partial: Option<&str>|
     -> Result<(), ClusterError> {
        let k = match groups.iter().position(|g| g.stage == stage) {
            Some(k) => k,
            None => {
                let st = planned(sub_plan, stage).ok_or_else(|| {
                    ClusterError::Refused(format!("stage \"{stage}\" is not in its segment's plan"))
                })?;
                let out = st.output.as_ref().ok_or_else(|| {
                    ClusterError::Refused(format!("stage \"{stage}\" has no output to store"))
                })?;
                groups.push(Group {
                    stage: stage.to_string(),
                    shape: out.shape().to_vec(),
                    chunks: out.grid.chunk_shape().to_vec(),
                    units: out.grid.num_chunks(),
                    stores: Vec::new(),
                    partials: Vec::new(),
                });
                groups.len() - 1
            }
        };
        groups[k].stores.extend(store);
        groups[k].partials.extend(partial.map(str::to_string));
        Ok(())
    };
    for &i in members {
        if cut.place[i] == Place::ZarrSink {
            let input = &cut.nodes[i].inputs[0];
            let Some(st) = planned(sub_plan, cut.name(i)) else {
                continue;
            };
            let Some(Writes::Zarr { options, .. }) = st.kind.writes() else {
                continue;
            };
            let path = staged.get(&(i, "path")).cloned().unwrap_or_default();
            push(
                input,
                Some(Store {
                    stage: input.clone(),
                    role: cut.name(i).to_string(),
                    path,
                    chunks: options.chunks.clone(),
                    options: options.clone(),
                }),
                None,
            )?;
        }
        if stored.shared.contains(&i) {
            continue;
        }
        if let Some(chunks) = stored.chunks.get(&i) {
            let st = planned(sub_plan, cut.name(i));
            let Some(out) = st.and_then(|s| s.output.as_ref()) else {
                continue;
            };
            push(
                cut.name(i),
                Some(Store {
                    stage: cut.name(i).to_string(),
                    role: "intermediate".into(),
                    path: stored.at[&i].clone(),
                    chunks: chunks.clone(),
                    options: inter_options(out.dtype, out.shape().to_vec(), chunks.clone()),
                }),
                None,
            )?;
        }
    }
    for (x, input) in partials {
        push(input, None, Some(x))?;
    }
    seg.groups = groups;
    Ok(())
}

/// `human_bytes` for tables.
pub(crate) fn hb(b: u64) -> String {
    human_bytes(b)
}

#[cfg(test)]
mod tests;
