//! `blockflow run --follow`: a long-running ingest of per-timepoint files.
//!
//! The pipeline's `read-hdf5-stack` stage watches the folder of its glob.
//! A file counts once it is complete (its size and modification time
//! unchanged for `[follow] settle`; files renamed into place count at
//! once with `settle = "0s"`). Each new timepoint goes through the
//! pipeline's per-timepoint stages (median, register against the reference,
//! shift, expr) on its own, and is appended along time to the Zarr array of
//! the `write-zarr` stage, which grows; running per-voxel statistics along
//! time (Welford) are written beside it.
//!
//! **Exactly once.** `STATE/manifest.jsonl` is the commit record: one line
//! per file, appended after the timepoint's chunks are written and before
//! the array's length is raised. A run killed at any moment restarts from
//! it: the array is cut back to the manifest's length (chunks a killed run
//! wrote past it are removed, every chunk file was written whole by a
//! rename), the statistics are rebuilt from their last checkpoint plus the
//! stored timepoints after it, and the files it lists are never taken
//! again.
//!
//! **Bad files.** A file that cannot be read (not HDF5, truncated, no such
//! dataset, another shape or dtype) or whose timepoint fails in a kernel is
//! moved to the quarantine folder with a `.reason.txt` beside it, recorded
//! in the manifest, and skipped.
//!
//! **Threads.** The caller's thread lists the folder and hands complete
//! files, in natural order, to `threads` workers (each computes a whole
//! timepoint); one committer appends them in order. At most `threads + 1`
//! timepoints are in flight, so memory does not grow with the run's length.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use blockflow_core::{human_bytes, with_array, ArrayData, ArrayKind, DType, Region};
use blockflow_io::hdf5::{Hdf5Reader, StackReader};
use blockflow_io::json::JsonWriter;
use blockflow_io::zarr::{Codec, ZarrAppender, ZarrReader, ZarrWriteOptions, ZarrWriter};
use blockflow_io::IoError;
use blockflow_kernels::register::Registrar;
use blockflow_kernels::zscore::Welford;
use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use ndarray::{ArrayD, Axis, IxDyn};
use serde_json::{json, Value};

use crate::config::{ConfigError, RawConfig, Val};
use crate::plan::{self, Plan, PlannedStage, StageKind};
use crate::report::peak_rss_bytes;
use crate::stages::{self, Writes};

/// Errors of a follow run. Each names the file, stage or path at fault.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configuration cannot run as an ingest (a config error: exit 2).
    #[error("--follow: {0}")]
    Unfit(String),
    /// The ingest could not go on.
    #[error("--follow: {0}")]
    Pipeline(String),
    #[error("{path}: {why}")]
    State { path: PathBuf, why: String },
    #[error(transparent)]
    Io(#[from] IoError),
    /// Writing a timepoint failed (the run stops; the manifest is intact).
    #[error("timepoint {t} ({file}): {msg}")]
    Timepoint { t: u64, file: PathBuf, msg: String },
}

fn state_err(path: &Path, why: impl Into<String>) -> FollowError {
    FollowError::State {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Where an ingest stands, for a progress display.
#[derive(Debug, Clone, Default)]
pub struct IngestStatus {
    /// Timepoints in the output, this run's and earlier runs'.
    pub total: u64,
    /// Timepoints this run appended.
    pub ingested: u64,
    /// Files seen but not yet written (waiting to settle, queued, in flight).
    pub backlog: u64,
    pub quarantined: u64,
    /// Seconds from a file's arrival to its data being written: the last
    /// one, and the median and 99th percentile of this run.
    pub last_latency: f64,
    pub p50: f64,
    pub p99: f64,
    /// Timepoints per second since the first one this run.
    pub rate: f64,
    /// True once a stop was asked for and the ingest is draining.
    pub draining: bool,
}

/// Receives the ingest's status (the binary draws a spinner with it).
pub trait IngestProgress: Send + Sync {
    fn update(&self, status: &IngestStatus);
    fn finish(&self);
}

/// Options of a follow run.
#[derive(Default, Clone)]
pub struct FollowOptions {
    /// Set (SIGTERM, Ctrl-C) to stop taking files, finish those in flight
    /// and exit.
    pub stop: Arc<AtomicBool>,
    pub progress: Option<Arc<dyn IngestProgress>>,
}

/// What a follow run did (also written as its report).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IngestSummary {
    pub pipeline: String,
    pub output: PathBuf,
    pub state: PathBuf,
    pub stats: PathBuf,
    /// Timepoints in the output when the run started.
    pub resumed_from: u64,
    pub ingested: u64,
    pub total: u64,
    pub quarantined: u64,
    pub wall_seconds: f64,
    /// Timepoints per second from the first file taken to the last written.
    pub timepoints_per_second: f64,
    pub latency_p50_seconds: f64,
    pub latency_p99_seconds: f64,
    pub latency_max_seconds: f64,
    pub threads: usize,
    pub memory_budget_bytes: u64,
    pub projected_bytes: u64,
    pub peak_rss_bytes: u64,
}

/// The `[follow]` table, resolved.
#[derive(Debug, Clone)]
struct Settings {
    settle: Duration,
    poll: Duration,
    quarantine: PathBuf,
    state: Option<PathBuf>,
    stats: Option<PathBuf>,
    checkpoint: Duration,
    idle_exit: Option<Duration>,
}

/// The watched source: the pipeline's `read-hdf5-stack` stage.
#[derive(Debug, Clone)]
struct Source {
    stage: String,
    glob: String,
    dataset: String,
    /// Orders the files by the integer it captures from their names.
    index: Option<regex::Regex>,
}

fn settings(raw: &RawConfig, src: &Source) -> Settings {
    let get = |k: &str| raw.follow.iter().find(|(kk, _)| kk.v == k).map(|(_, v)| v);
    let dur = |k: &str, d: Duration| get(k).and_then(|v| plan::duration_of(&v.v)).unwrap_or(d);
    let path = |k: &str| {
        get(k)
            .filter(|v| matches!(&v.v, Val::Str(s) if !s.is_empty()))
            .map(|v| plan::resolve(&raw.path, v))
    };
    let folder = Path::new(&src.glob)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Settings {
        settle: dur("settle", Duration::from_secs(2)),
        poll: dur("poll", Duration::from_millis(250)).max(Duration::from_millis(10)),
        quarantine: path("quarantine").unwrap_or_else(|| folder.join("quarantine")),
        state: path("state"),
        stats: path("stats"),
        checkpoint: dur("checkpoint", Duration::from_secs(10)),
        idle_exit: get("idle_exit").and_then(|v| plan::duration_of(&v.v)),
    }
}

fn find_source(raw: &RawConfig) -> Result<Source, FollowError> {
    let kind = |st: &crate::config::RawStage| match st.get("kind").map(|v| &v.v) {
        Some(Val::Str(k)) => k.clone(),
        _ => String::new(),
    };
    let found: Vec<_> = raw
        .stages
        .iter()
        .filter(|st| kind(st) == "read-hdf5-stack")
        .collect();
    let [st] = found.as_slice() else {
        return Err(FollowError::Unfit(format!(
            "a followed pipeline has one `read-hdf5-stack` stage, whose folder it watches; {} has {}",
            raw.path.display(),
            found.len()
        )));
    };
    let str_of = |k: &str| match st.get(k).map(|v| &v.v) {
        Some(Val::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let (Some(_), Some(dataset)) = (str_of("path"), str_of("dataset")) else {
        return Err(FollowError::Unfit(format!(
            "stage \"{}\" needs `path` and `dataset`",
            st.name.v
        )));
    };
    let pv = st.get("path").expect("checked above");
    let index = match str_of("index").filter(|s| !s.is_empty()) {
        None => None,
        Some(re) => Some(regex::Regex::new(&re).map_err(|e| {
            FollowError::Unfit(format!(
                "stage \"{}\": `index` is not a valid regex: {e}",
                st.name.v
            ))
        })?),
    };
    Ok(Source {
        stage: st.name.v.clone(),
        glob: plan::resolve(&raw.path, pv).to_string_lossy().into_owned(),
        dataset,
        index,
    })
}

/// The path of the pipeline's one write-zarr stage, as the planner resolves it.
fn output_path(raw: &RawConfig) -> Option<PathBuf> {
    let mut outs = raw.stages.iter().filter(
        |st| matches!(st.get("kind").map(|v| &v.v), Some(Val::Str(k)) if k == "write-zarr"),
    );
    let st = outs.next()?;
    if outs.next().is_some() {
        return None;
    }
    st.get("path").map(|v| plan::resolve(&raw.path, v))
}

/// One per-timepoint step.
#[derive(Debug, Clone)]
enum Step {
    Source,
    /// Overlap windows the planner inserted: a whole timepoint needs none.
    Pass,
    Median(blockflow_kernels::rank::RankFilter),
    Register(usize),
    Shift {
        order: usize,
        mode: blockflow_kernels::shift::InterpMode,
        cval: f64,
        prefilter: bool,
    },
    Expr(Box<blockflow_kernels::Expr>),
    /// A sink the ingest handles itself (the appended Zarr, shifts JSON).
    Sink,
}

/// The pipeline as per-timepoint steps over one `(1, ...)` timepoint.
#[derive(Debug, Clone)]
struct Program {
    names: Vec<String>,
    steps: Vec<(Step, Vec<usize>)>,
    /// The stage whose output is appended, and the writer's options.
    out: usize,
    out_path: PathBuf,
    options: ZarrWriteOptions,
    /// The register stage, if any, and a write-json of its shifts.
    register: Option<usize>,
    /// The dtype of the frames it registers (its reference's).
    reference_dtype: DType,
    shifts_json: Option<PathBuf>,
    /// Bytes one worker holds for one timepoint.
    worker_bytes: u64,
    /// The shift steps' working buffers, kept between timepoints.
    shift_buffers: Arc<blockflow_kernels::shift::ShiftBuffers>,
}

fn program(plan: &Plan, src: &Source) -> Result<Program, FollowError> {
    let mut steps = Vec::new();
    let mut out = None;
    let mut register = None;
    let mut reference_dtype = DType::F64;
    let mut shifts_json = None;
    let unsupported = |name: &str, kind: &str, why: &str| {
        FollowError::Unfit(format!(
            "stage \"{name}\" ({kind}) cannot run on one timepoint at a time{why}; an ingest runs read-hdf5-stack → median, register, shift, expr → write-zarr (and write-json of the shifts); run the rest as a batch pipeline over the ingest's output"
        ))
    };
    for (i, s) in plan.stages.iter().enumerate() {
        let step = match &s.kind {
            StageKind::ReadHdf5Stack { .. } => source_step(s, src)?,
            StageKind::Unit(op) if op.kind() == stages::read_hdf5_stack::KIND.kind => {
                source_step(s, src)?
            }
            StageKind::Overlap { .. } => Step::Pass,
            StageKind::Median { filter, .. } => {
                if filter.size().first() != Some(&1) {
                    return Err(unsupported(
                        &s.name,
                        "median",
                        ": its window spans several timepoints (give size 1 along time)",
                    ));
                }
                Step::Median(filter.clone())
            }
            StageKind::Register { upsample } => {
                register = Some(i);
                if let Some(o) = s
                    .inputs
                    .first()
                    .and_then(|&j| plan.stages[j].output.as_ref())
                {
                    reference_dtype = o.dtype;
                }
                Step::Register(*upsample)
            }
            StageKind::Shift {
                order,
                mode,
                cval,
                prefilter,
            } => Step::Shift {
                order: *order,
                mode: *mode,
                cval: *cval,
                prefilter: *prefilter,
            },
            StageKind::Expr { expr, .. } => Step::Expr(expr.clone()),
            StageKind::WriteZarr { options, path } => zarr_sink(s, path, options, &mut out)?,
            StageKind::Unit(op) if op.kind() == stages::write_zarr::KIND.kind => {
                match op.writes() {
                    Some(Writes::Zarr { path, options }) => zarr_sink(s, path, options, &mut out)?,
                    _ => return Err(unsupported(&s.name, op.kind(), "")),
                }
            }
            StageKind::WriteJson { path, .. } if shifts_of_register(plan, s) => {
                shifts_json = Some(path.clone());
                Step::Sink
            }
            StageKind::Unit(op)
                if op.kind() == stages::write_json::KIND.kind && shifts_of_register(plan, s) =>
            {
                match op.writes() {
                    Some(Writes::Files([path])) => {
                        shifts_json = Some(path.clone());
                        Step::Sink
                    }
                    _ => return Err(unsupported(&s.name, op.kind(), "")),
                }
            }
            other => return Err(unsupported(&s.name, other.name(), "")),
        };
        steps.push((step, s.inputs.clone()));
    }
    let Some((out, out_path, options)) = out else {
        return Err(FollowError::Unfit(
            "an ingest appends to a Zarr array: the pipeline needs a write-zarr stage".into(),
        ));
    };
    let worker_bytes = plan
        .stages
        .iter()
        .map(|s| s.mem.working / s.parallel.max(1) as u64)
        .sum();
    Ok(Program {
        names: plan.stages.iter().map(|s| s.name.clone()).collect(),
        steps,
        out,
        out_path,
        options,
        register,
        reference_dtype,
        shifts_json,
        worker_bytes,
        shift_buffers: Default::default(),
    })
}

/// The source stage: one whole timepoint per chunk.
fn source_step(s: &PlannedStage, src: &Source) -> Result<Step, FollowError> {
    let want: Vec<u64> = std::iter::once(1)
        .chain(s.grid.shape()[1..].iter().copied())
        .collect();
    if s.grid.chunk_shape() != want.as_slice() {
        return Err(FollowError::Unfit(format!(
            "stage \"{}\" must stream one whole timepoint per chunk (remove its `chunks`)",
            src.stage
        )));
    }
    Ok(Step::Source)
}

/// The one write-zarr stage, whose array the ingest appends to.
fn zarr_sink(
    s: &PlannedStage,
    path: &Path,
    options: &ZarrWriteOptions,
    out: &mut Option<(usize, PathBuf, ZarrWriteOptions)>,
) -> Result<Step, FollowError> {
    if out.is_some() {
        return Err(FollowError::Unfit(format!(
            "stage \"{}\": an ingest appends to one Zarr array; this pipeline has two write-zarr stages",
            s.name
        )));
    }
    if options.chunks.first() != Some(&1) {
        return Err(FollowError::Unfit(format!(
            "stage \"{}\": the appended array needs chunks of 1 along time, not {:?} (set `chunks`)",
            s.name, options.chunks
        )));
    }
    *out = Some((s.inputs[0], path.to_path_buf(), options.clone()));
    Ok(Step::Sink)
}

/// Whether a writer takes the shifts of a register stage alone.
fn shifts_of_register(plan: &Plan, s: &PlannedStage) -> bool {
    s.inputs.len() == 1 && plan.stages[s.inputs[0]].kind.name() == "register"
}

/// The registration reference, shared by the workers: the first
/// timepoint's input to the register stage, its spectrum computed once.
type Reference = Arc<RwLock<Option<Arc<Registrar>>>>;

/// One timepoint to compute.
#[derive(Debug, Clone)]
struct Job {
    seq: u64,
    path: PathBuf,
    name: String,
    bytes: u64,
    /// The modification time the file settled at.
    mtime: Option<SystemTime>,
    seen: SystemTime,
    seen_at: Instant,
}

enum Outcome {
    Done {
        data: ArrayData,
        shift: Option<Vec<f64>>,
        /// Set when this timepoint became the reference.
        reference: Option<Arc<ArrayData>>,
    },
    /// The file cannot be used: quarantine it.
    Bad(String),
    /// The file changed while it was read, or its writer still holds it:
    /// not taken now, tried again once it has settled anew.
    NotReady(String),
}

/// Why a timepoint was not read.
enum NotRead {
    Bad(String),
    NotReady(String),
}

/// The file's size and modification time now.
fn stamp(path: &Path) -> Option<(u64, Option<SystemTime>)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.len(), m.modified().ok()))
}

/// Reads a job's timepoint only if the file is the one that settled and
/// stays so across the read: a change, or a lock its writer holds, makes
/// it "not ready" rather than bad.
fn read_settled(
    job: &Job,
    src: &Source,
    frame: &[u64],
    dtype: DType,
) -> Result<ArrayData, NotRead> {
    let settled = Some((job.bytes, job.mtime));
    if stamp(&job.path) != settled {
        return Err(NotRead::NotReady("it changed after it settled".into()));
    }
    let read = read_timepoint(&job.path, src, frame, dtype);
    blockflow_io::output::test_pause("ingest-read");
    if stamp(&job.path) != settled {
        return Err(NotRead::NotReady("it changed while it was read".into()));
    }
    read.map_err(|e| {
        if e.contains("unable to lock file") || e.contains("lock file") {
            NotRead::NotReady(format!("its writer still holds it ({e})"))
        } else {
            NotRead::Bad(e)
        }
    })
}

/// Reads one timepoint as `(1, ...)`, checking it against the stream's.
fn read_timepoint(
    path: &Path,
    src: &Source,
    frame: &[u64],
    dtype: DType,
) -> Result<ArrayData, String> {
    let r = Hdf5Reader::open(path, &src.dataset).map_err(|e| e.to_string())?;
    if r.info.shape != frame || r.info.dtype != dtype {
        return Err(format!(
            "dataset \"{}\" is {:?} {}, but the stream's timepoints are {:?} {}",
            src.dataset, r.info.shape, r.info.dtype, frame, dtype
        ));
    }
    let whole = Region::new(vec![0; frame.len()], frame.to_vec());
    let data = r.read(&whole).map_err(|e| e.to_string())?;
    Ok(with_array!(data, a => ArrayKind::wrap(a.insert_axis(Axis(0)))))
}

/// Runs the program on one timepoint.
fn compute(
    prog: &Program,
    job: &Job,
    src: &Source,
    frame: &[u64],
    dtype: DType,
    reference: &Reference,
) -> Outcome {
    let mut vals: Vec<Option<ArrayData>> = vec![None; prog.steps.len()];
    let mut shift = None;
    let mut became = None;
    for (i, (step, inputs)) in prog.steps.iter().enumerate() {
        let name = &prog.names[i];
        let input = |k: usize| vals[inputs[k]].as_ref().expect("inputs come first");
        let fail = |e: String| Outcome::Bad(format!("stage \"{name}\": {e}"));
        let v = match step {
            Step::Source => match src.index.as_ref().map_or(Ok(0), |re| {
                blockflow_io::hdf5::timepoint_index(&job.path, re)
            }) {
                Err(e) => return fail(e.to_string()),
                Ok(_) => match read_settled(job, src, frame, dtype) {
                    Ok(d) => d,
                    Err(NotRead::Bad(e)) => return fail(e),
                    Err(NotRead::NotReady(why)) => return Outcome::NotReady(why),
                },
            },
            Step::Pass => input(0).clone(),
            Step::Median(f) => {
                match with_array!(input(0), a => f.apply(a.view()).map(ArrayKind::wrap)) {
                    Ok(d) => d,
                    Err(e) => return fail(e.to_string()),
                }
            }
            Step::Register(up) => {
                let frame = input(0);
                let current = reference.read().map(|r| r.clone()).unwrap_or(None);
                let v = match current {
                    None => {
                        let zeros = vec![0.0; frame.shape().len().saturating_sub(1)];
                        let r = match Registrar::of_timepoint(frame) {
                            Ok(r) => r,
                            Err(e) => return fail(e.to_string()),
                        };
                        if let Ok(mut w) = reference.write() {
                            *w = Some(Arc::new(r));
                        }
                        became = Some(Arc::new(frame.clone()));
                        zeros
                    }
                    Some(r) => match r.register_timepoint(frame, *up) {
                        Ok(v) => v,
                        Err(e) => return fail(e.to_string()),
                    },
                };
                shift = Some(v.clone());
                let n = v.len();
                ArrayData::F64(ArrayD::from_shape_vec(IxDyn(&[1, n]), v).expect("1 × n"))
            }
            Step::Shift {
                order,
                mode,
                cval,
                prefilter,
            } => {
                let v: Vec<f64> = input(1).to_f64().iter().copied().collect();
                match blockflow_kernels::shift::shift_timepoint(
                    input(0),
                    &v,
                    *order,
                    *mode,
                    *cval,
                    *prefilter,
                    &prog.shift_buffers,
                ) {
                    Ok(d) => d,
                    Err(e) => return fail(e.to_string()),
                }
            }
            Step::Expr(e) => {
                let ins: Vec<&ArrayData> = (0..inputs.len()).map(input).collect();
                match e.eval(&ins) {
                    Ok(d) => d,
                    Err(e) => return fail(e.to_string()),
                }
            }
            Step::Sink => continue,
        };
        vals[i] = Some(v);
    }
    let data = vals[prog.out].take().expect("computed");
    let data = if data.dtype() == prog.options.dtype {
        data
    } else {
        data.cast(prog.options.dtype)
    };
    Outcome::Done {
        data,
        shift,
        reference: became,
    }
}

/// One line of the manifest.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Entry {
    file: String,
    /// "ingested" or "quarantined".
    status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shift: Option<Vec<f64>>,
    /// Unix seconds: when the ingest first saw the file, and when its
    /// timepoint was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seen: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    written: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    latency_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    moved_to: Option<String>,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The manifest: a header line, then one line per file done, appended.
struct Manifest {
    path: PathBuf,
    file: std::fs::File,
    /// Names of the files done (ingested or quarantined).
    done: HashSet<String>,
    ingested: u64,
    quarantined: u64,
    /// Shifts of the ingested timepoints, kept only for a write-json sink.
    shifts: Option<Vec<Vec<f64>>>,
    /// Quarantined files as recorded when opened: (file, moved_to).
    quarantined_files: Vec<(String, String)>,
}

impl Manifest {
    /// Opens (or starts) the manifest in `dir`. `header` describes the
    /// stream; an existing manifest must have been made for the same one.
    fn open(dir: &Path, header: &Value, keep_shifts: bool) -> Result<Manifest, FollowError> {
        std::fs::create_dir_all(dir).map_err(|e| state_err(dir, e.to_string()))?;
        let path = dir.join("manifest.jsonl");
        let mut done = HashSet::new();
        let (mut ingested, mut quarantined) = (0u64, 0u64);
        let mut shifts = keep_shifts.then(Vec::new);
        let mut quarantined_files = Vec::new();
        if path.exists() {
            let f = std::fs::File::open(&path).map_err(|e| state_err(&path, e.to_string()))?;
            let mut good_len = 0u64;
            let mut lines = std::io::BufReader::new(f).split(b'\n').peekable();
            let mut first = true;
            let mut lineno = 0;
            while let Some(line) = lines.next() {
                lineno += 1;
                let line = line.map_err(|e| state_err(&path, e.to_string()))?;
                let last = lines.peek().is_none();
                let parsed: Result<Value, _> = serde_json::from_slice(&line);
                let v = match parsed {
                    Ok(v) => v,
                    // A line cut short by a kill: the record was never made.
                    Err(_) if last => break,
                    Err(e) => {
                        return Err(state_err(
                            &path,
                            format!("line {lineno} is not JSON ({e}); the manifest is damaged"),
                        ))
                    }
                };
                if first {
                    first = false;
                    for key in ["dataset", "frame", "dtype"] {
                        if v.get(key) != header.get(key) {
                            return Err(state_err(
                                &path,
                                format!(
                                    "this state was made for {key} {}, but the pipeline now reads {key} {}; point [follow] state at a new folder",
                                    v.get(key).unwrap_or(&Value::Null),
                                    header.get(key).unwrap_or(&Value::Null)
                                ),
                            ));
                        }
                    }
                } else {
                    let e: Entry = serde_json::from_value(v)
                        .map_err(|e| state_err(&path, format!("line {lineno}: {e}")))?;
                    if e.status == "ingested" {
                        if e.t != Some(ingested) {
                            return Err(state_err(
                                &path,
                                format!(
                                    "line {lineno} records timepoint {:?} where {ingested} comes next; the manifest is damaged",
                                    e.t
                                ),
                            ));
                        }
                        ingested += 1;
                        if let Some(s) = shifts.as_mut() {
                            s.push(e.shift.clone().unwrap_or_default());
                        }
                    } else {
                        quarantined += 1;
                        if let Some(to) = &e.moved_to {
                            quarantined_files.push((e.file.clone(), to.clone()));
                        }
                    }
                    if !done.insert(e.file.clone()) {
                        return Err(state_err(
                            &path,
                            format!("line {lineno}: {} is recorded twice", e.file),
                        ));
                    }
                }
                good_len += line.len() as u64 + 1;
            }
            // Cut a torn last line so the next record starts on its own line.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| state_err(&path, e.to_string()))?;
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if good_len < len {
                f.set_len(good_len)
                    .map_err(|e| state_err(&path, e.to_string()))?;
            }
            if first {
                // Empty file: write the header below.
                drop(f);
                std::fs::remove_file(&path).map_err(|e| state_err(&path, e.to_string()))?;
            }
        }
        let fresh = !path.exists();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| state_err(&path, e.to_string()))?;
        if fresh {
            let line = serde_json::to_string(header).unwrap_or_default() + "\n";
            file.write_all(line.as_bytes())
                .and_then(|_| file.sync_data())
                .map_err(|e| state_err(&path, e.to_string()))?;
        }
        Ok(Manifest {
            path,
            file,
            done,
            ingested,
            quarantined,
            shifts,
            quarantined_files,
        })
    }

    /// Appends one record in one write, and syncs it.
    fn append(&mut self, e: &Entry) -> Result<(), FollowError> {
        let line = serde_json::to_string(e).unwrap_or_default() + "\n";
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.sync_data())
            .map_err(|err| state_err(&self.path, err.to_string()))?;
        self.done.insert(e.file.clone());
        if e.status == "ingested" {
            self.ingested += 1;
            if let Some(s) = self.shifts.as_mut() {
                s.push(e.shift.clone().unwrap_or_default());
            }
        } else {
            self.quarantined += 1;
        }
        Ok(())
    }
}

/// Latencies in logarithmic buckets (50 per decade, 0.1 ms to 1e5 s):
/// quantiles within about 2.3% in constant memory, however long the run.
struct Latencies {
    counts: Vec<u64>,
    n: u64,
    max: f64,
}

const LAT_MIN: f64 = 1e-4;
const LAT_PER_DECADE: f64 = 50.0;
const LAT_BUCKETS: usize = 9 * 50;

impl Latencies {
    fn new() -> Self {
        Latencies {
            counts: vec![0; LAT_BUCKETS],
            n: 0,
            max: 0.0,
        }
    }
    fn push(&mut self, s: f64) {
        let b = ((s.max(LAT_MIN) / LAT_MIN).log10() * LAT_PER_DECADE) as usize;
        self.counts[b.min(LAT_BUCKETS - 1)] += 1;
        self.n += 1;
        self.max = self.max.max(s);
    }
    fn quantile(&self, q: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let want = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                let mid = LAT_MIN * 10f64.powf((b as f64 + 0.5) / LAT_PER_DECADE);
                return mid.min(self.max);
            }
        }
        self.max
    }
}

/// State shared between the scanner, the workers and the committer.
struct Shared {
    in_flight: AtomicU64,
    /// Set by the committer when it fails: the scanner stops.
    failed: AtomicBool,
    reference_ready: AtomicBool,
    status: std::sync::Mutex<IngestStatus>,
}

/// The committer: appends finished timepoints in order.
struct Committer {
    prog: Program,
    appender: ZarrAppender,
    manifest: Manifest,
    welford: Welford,
    stats: PathBuf,
    reference_path: PathBuf,
    quarantine: PathBuf,
    checkpoint: Duration,
    last_checkpoint: Instant,
    dirty: bool,
    latencies: Latencies,
    first_taken: Option<Instant>,
    last_written: Option<Instant>,
    ingested: u64,
    shared: Arc<Shared>,
    header: Value,
}

impl Committer {
    fn commit(&mut self, job: Job, outcome: Outcome) -> Result<(), FollowError> {
        self.first_taken.get_or_insert(job.seen_at);
        match outcome {
            Outcome::Done {
                data,
                shift,
                reference,
            } => self.append(job, data, shift, reference),
            Outcome::Bad(reason) => self.quarantine(job, reason),
            // Handed back to the scanner by the commit loop.
            Outcome::NotReady(_) => Ok(()),
        }
    }

    fn append(
        &mut self,
        job: Job,
        data: ArrayData,
        shift: Option<Vec<f64>>,
        reference: Option<Arc<ArrayData>>,
    ) -> Result<(), FollowError> {
        let t = self.appender.len();
        let fail = |msg: String| FollowError::Timepoint {
            t,
            file: job.path.clone(),
            msg,
        };
        if let Some(r) = reference {
            if t != 0 {
                return Err(fail("internal: a second registration reference".into()));
            }
            save_reference(&self.reference_path, &r).map_err(|e| fail(e.to_string()))?;
        }
        self.appender
            .write(t, &data)
            .map_err(|e| fail(e.to_string()))?;
        let written = SystemTime::now();
        let latency = job.seen_at.elapsed().as_secs_f64();
        self.manifest.append(&Entry {
            file: job.name.clone(),
            status: "ingested".into(),
            t: Some(t),
            bytes: Some(job.bytes),
            shift,
            seen: Some(unix(job.seen)),
            written: Some(unix(written)),
            latency_s: Some((latency * 1e6).round() / 1e6),
            reason: None,
            moved_to: None,
        })?;
        self.appender
            .set_len(t + 1)
            .map_err(|e| fail(e.to_string()))?;
        with_array!(&data, a => self.welford.push(a.index_axis(Axis(0), 0)))
            .map_err(|e| fail(e.to_string()))?;
        self.dirty = true;
        self.latencies.push(latency);
        self.ingested += 1;
        self.last_written = Some(Instant::now());
        tracing::info!(t, file = %job.path.display(), latency_s = latency, "ingested");
        {
            let mut s = self.shared.status.lock().unwrap_or_else(|p| p.into_inner());
            s.total = t + 1;
            s.ingested = self.ingested;
            s.last_latency = latency;
            s.p50 = self.latencies.quantile(0.5);
            s.p99 = self.latencies.quantile(0.99);
            s.rate = self.rate();
        }
        if self.last_checkpoint.elapsed() >= self.checkpoint {
            self.save_checkpoint()?;
        }
        Ok(())
    }

    fn rate(&self) -> f64 {
        match (self.first_taken, self.last_written) {
            (Some(a), Some(b)) if b > a => self.ingested as f64 / (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }

    fn quarantine(&mut self, job: Job, reason: String) -> Result<(), FollowError> {
        let q = &self.quarantine;
        let os = |p: &Path, e: std::io::Error| {
            state_err(p, format!("cannot quarantine {}: {e}", job.path.display()))
        };
        std::fs::create_dir_all(q).map_err(|e| os(q, e))?;
        let dest = q.join(&job.name);
        let note = q.join(format!("{}.reason.txt", job.name));
        std::fs::write(
            &note,
            format!(
                "{}\nquarantined by blockflow at unix time {:.3}: {reason}\n",
                job.path.display(),
                unix(SystemTime::now())
            ),
        )
        .map_err(|e| os(&note, e))?;
        // Recorded first, then moved: a run killed in between finishes the
        // move when it starts again.
        self.manifest.append(&Entry {
            file: job.name.clone(),
            status: "quarantined".into(),
            t: None,
            bytes: Some(job.bytes),
            shift: None,
            seen: Some(unix(job.seen)),
            written: None,
            latency_s: None,
            reason: Some(reason.clone()),
            moved_to: Some(dest.display().to_string()),
        })?;
        move_file(&job.path, &dest).map_err(|e| os(&dest, e))?;
        tracing::warn!(file = %job.path.display(), to = %dest.display(), "quarantined: {reason}");
        let mut s = self.shared.status.lock().unwrap_or_else(|p| p.into_inner());
        s.quarantined = self.manifest.quarantined;
        Ok(())
    }

    /// Writes the statistics (and the shifts JSON) for what is committed.
    fn save_checkpoint(&mut self) -> Result<(), FollowError> {
        self.last_checkpoint = Instant::now();
        if !self.dirty {
            return Ok(());
        }
        save_stats(&self.stats, &self.welford, &self.prog.options, &self.header)?;
        if let (Some(path), Some(shifts), Some(reg)) = (
            &self.prog.shifts_json,
            &self.manifest.shifts,
            self.prog.register,
        ) {
            let n = shifts.first().map_or(0, Vec::len);
            let flat: Vec<f64> = shifts.iter().flatten().copied().collect();
            let a = ArrayD::from_shape_vec(IxDyn(&[shifts.len(), n]), flat)
                .map_err(|e| state_err(path, e.to_string()))?;
            let mut w = JsonWriter::create(path, true)?;
            w.set(&self.prog.names[reg], &ArrayData::F64(a));
            w.finish()?;
        }
        self.dirty = false;
        Ok(())
    }
}

/// Moves a file, across filesystems too (copy, then remove).
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    if let Err(e) = std::fs::rename(from, to) {
        if !from.exists() {
            return Err(e);
        }
        std::fs::copy(from, to)?;
        std::fs::remove_file(from)?;
    }
    Ok(())
}

/// Saves the reference timepoint `(1, ...)` as a Zarr array of the frame's
/// shape, in its dtype.
fn save_reference(path: &Path, r: &ArrayData) -> Result<(), IoError> {
    let r: ArrayData = with_array!(r, a => ArrayKind::wrap(a.index_axis(Axis(0), 0).to_owned()));
    let shape: Vec<u64> = r.shape().iter().map(|&n| n as u64).collect();
    let o = ZarrWriteOptions {
        zarr_format: 3,
        dtype: r.dtype(),
        shape: shape.clone(),
        chunks: shape.iter().map(|&n| n.max(1)).collect(),
        codec: Codec::None,
        level: 0,
        overwrite: true,
        attributes: serde_json::Map::new(),
    };
    let w = ZarrWriter::create(path, &o)?;
    w.write(&Region::new(vec![0; shape.len()], shape), &r, &[])?;
    w.finish()?;
    Ok(())
}

/// The reference timepoint `(1, ...)` in `dtype` (a state written before
/// references kept their dtype holds float64).
fn load_reference(path: &Path, frame: &[u64], dtype: DType) -> Result<ArrayData, FollowError> {
    let r = ZarrReader::open(path).map_err(|e| {
        state_err(
            path,
            format!(
                "the registration reference is missing or unreadable ({e}); the state is damaged"
            ),
        )
    })?;
    if r.info.shape != frame {
        return Err(state_err(
            path,
            "the registration reference has another shape",
        ));
    }
    let data = r
        .read(&Region::new(vec![0; frame.len()], frame.to_vec()), &[])?
        .cast(dtype);
    Ok(with_array!(data, a => ArrayKind::wrap(a.insert_axis(Axis(0)))))
}

fn save_stats(
    path: &Path,
    w: &Welford,
    o: &ZarrWriteOptions,
    header: &Value,
) -> Result<(), FollowError> {
    let mut attrs = serde_json::Map::new();
    attrs.insert("count".into(), json!(w.n));
    attrs.insert("ddof".into(), json!(0));
    attrs.insert(
        "description".into(),
        json!("running per-voxel statistics along time of the ingested array (Welford): mean, std (ddof 0), m2 (sum of squared deviations, to resume)"),
    );
    if let Some(src) = header.get("output") {
        attrs.insert("of".into(), src.clone());
    }
    let std = w.std(0);
    blockflow_io::zarr::write_group(
        path,
        attrs,
        &[("mean", &w.mean), ("std", &std), ("m2", &w.m2)],
        &o.chunks[1..],
        Codec::Zstd,
    )?;
    Ok(())
}

/// The statistics of the first `len` timepoints of `out`: from the last
/// checkpoint where it is usable, plus the stored timepoints after it.
fn resume_stats(
    stats: &Path,
    out: &Path,
    frame: &[usize],
    len: u64,
) -> Result<Welford, FollowError> {
    let saved = (|| -> Option<Welford> {
        let attrs = blockflow_io::zarr::group_attributes(stats).ok()?;
        let n = attrs.get("count")?.as_u64()?;
        if n > len {
            return None;
        }
        let whole = Region::new(
            vec![0; frame.len()],
            frame.iter().map(|&n| n as u64).collect(),
        );
        let read = |name: &str| -> Option<Vec<f64>> {
            let r = ZarrReader::open(&stats.join(name)).ok()?;
            Some(r.read(&whole, &[]).ok()?.to_f64().into_iter().collect())
        };
        Welford::from_parts(n, frame, read("mean")?, read("m2")?).ok()
    })();
    let mut w = match saved {
        Some(w) => w,
        None => {
            if len > 0 {
                tracing::info!(stats = %stats.display(), "no usable statistics checkpoint: rebuilding from the output");
            }
            Welford::new(frame)
        }
    };
    if w.n < len {
        let r = ZarrReader::open(out)?;
        for t in w.n..len {
            let mut origin = vec![t];
            origin.extend(std::iter::repeat_n(0, frame.len()));
            let mut shape = vec![1];
            shape.extend(frame.iter().map(|&n| n as u64));
            let d = r.read(&Region::new(origin, shape), &[t])?;
            with_array!(&d, a => w.push(a.index_axis(Axis(0), 0)))
                .map_err(|e| state_err(out, e.to_string()))?;
        }
    }
    Ok(w)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A file seen in the folder and not yet taken.
struct Candidate {
    bytes: u64,
    mtime: Option<SystemTime>,
    seen: SystemTime,
    seen_at: Instant,
    stable_since: Instant,
}

/// Runs the ingest until it is stopped (or idle for `idle_exit`).
pub fn run(mut raw: RawConfig, opts: &FollowOptions) -> Result<IngestSummary, FollowError> {
    let started = Instant::now();
    // Validate everything the batch planner checks, [follow] included,
    // before waiting on any file: plan once over what the glob holds now,
    // if it holds anything.
    let src = find_source(&raw)?;
    let set = settings(&raw, &src);
    // One ingest (or run) per output: held until this run ends. A second
    // one fails here, naming this one.
    let _lock = output_path(&raw)
        .map(|p| blockflow_io::output::Lock::acquire(&blockflow_io::output::lock_path(&p), &p))
        .transpose()?;

    // The stream's shape and dtype: from an existing state's header, else
    // from the first complete file that opens.
    let state_guess = set
        .state
        .clone()
        .or_else(|| output_path(&raw).map(|p| blockflow_io::zarr::with_suffix(&p, ".state")));
    let recorded = state_guess
        .as_ref()
        .map(|d| d.join("manifest.jsonl"))
        .and_then(|m| std::fs::read_to_string(m).ok())
        .and_then(|t| {
            t.lines()
                .next()
                .and_then(|l| serde_json::from_str::<Value>(l).ok())
        });
    let mut pre_quarantined: Vec<(Job, String)> = Vec::new();
    let (frame, dtype) = match recorded.as_ref().and_then(|h| {
        Some((
            h.get("frame")?.as_array()?.clone(),
            h.get("dtype")?.as_str()?.to_string(),
        ))
    }) {
        Some((f, d)) => (
            f.iter().filter_map(Value::as_u64).collect::<Vec<u64>>(),
            DType::parse(&d).ok_or_else(|| {
                state_err(
                    state_guess.as_deref().unwrap_or(Path::new(".")),
                    "bad dtype in the manifest",
                )
            })?,
        ),
        None => wait_for_first(&src, &set, opts, &mut pre_quarantined)?
            .ok_or_else(|| FollowError::Pipeline("stopped before any file arrived".into()))?,
    };
    raw.fixed_stack = Some(StackReader {
        files: vec![PathBuf::from(&src.glob)],
        dataset: src.dataset.clone(),
        frame: frame.clone(),
        dtype,
    });
    let plan = plan::plan(&raw)?;
    let prog = program(&plan, &src)?;
    let state = set
        .state
        .clone()
        .unwrap_or_else(|| blockflow_io::zarr::with_suffix(&prog.out_path, ".state"));
    let stats_path = set
        .stats
        .clone()
        .unwrap_or_else(|| blockflow_io::zarr::with_suffix(&prog.out_path, ".stats"));
    let frame_us: Vec<usize> = frame.iter().map(|&n| n as usize).collect();
    let frame_elems: u64 = frame.iter().product();
    let out_bytes = frame_elems * prog.options.dtype.size() as u64;

    // The memory bound: workers each hold one timepoint's working set, the
    // committer a reorder window of finished timepoints, the statistics and
    // the reference.
    let workers = plan.threads.max(1);
    let window = workers as u64 + 1;
    let projected =
        workers as u64 * prog.worker_bytes + (window + 1) * out_bytes + frame_elems * 8 * 3;
    if projected > plan.memory {
        return Err(FollowError::Unfit(format!(
            "{workers} workers × {} per timepoint, {} of finished timepoints and {} of statistics and reference project {}, over the budget `memory = \"{}\"`; raise it or lower `threads`",
            human_bytes(prog.worker_bytes),
            human_bytes((window + 1) * out_bytes),
            human_bytes(frame_elems * 24),
            human_bytes(projected),
            human_bytes(plan.memory)
        )));
    }

    let header = json!({
        "blockflow_ingest": 1,
        "pipeline": plan.name,
        "source": src.glob,
        "dataset": src.dataset,
        "frame": frame,
        "dtype": dtype.name(),
        "output": prog.out_path.display().to_string(),
    });
    let had_state = state.join("manifest.jsonl").exists();
    if !had_state && prog.out_path.exists() {
        return Err(state_err(
            &prog.out_path,
            format!(
                "exists, but there is no ingest state for it in {}; an ingest never overwrites: remove it, or point [follow] state at the state of the ingest that made it",
                state.display()
            ),
        ));
    }
    let manifest = Manifest::open(&state, &header, prog.shifts_json.is_some())?;
    let len = manifest.ingested;
    // Quarantines a killed run recorded but did not finish moving.
    let folder = Path::new(&src.glob).parent().unwrap_or(Path::new("."));
    for (file, to) in &manifest.quarantined_files {
        let (from, to) = (folder.join(file), PathBuf::from(to));
        if from.exists() && !to.exists() {
            move_file(&from, &to).map_err(|e| {
                state_err(&to, format!("cannot quarantine {}: {e}", from.display()))
            })?;
        }
    }
    let appender = if prog.out_path.exists() {
        ZarrAppender::open(&prog.out_path, &prog.options, len)?
    } else if len == 0 {
        ZarrAppender::create(&prog.out_path, &prog.options)?
    } else {
        return Err(state_err(
            &prog.out_path,
            format!(
                "is missing, but the manifest {} records {len} timepoints written to it",
                state.join("manifest.jsonl").display()
            ),
        ));
    };
    let reference_path = state.join("reference.zarr");
    let reference: Reference = Arc::new(RwLock::new(None));
    if prog.register.is_some() && len > 0 {
        let r = load_reference(&reference_path, &frame, prog.reference_dtype)?;
        let r =
            Registrar::of_timepoint(&r).map_err(|e| state_err(&reference_path, e.to_string()))?;
        *reference.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(r));
    }
    let welford = resume_stats(&stats_path, &prog.out_path, &frame_us, len)?;
    tracing::info!(
        output = %prog.out_path.display(),
        resumed_from = len,
        workers,
        projected = %human_bytes(projected),
        "following {}",
        src.glob
    );

    let shared = Arc::new(Shared {
        in_flight: AtomicU64::new(0),
        failed: AtomicBool::new(false),
        reference_ready: AtomicBool::new(prog.register.is_none() || len > 0),
        status: std::sync::Mutex::new(IngestStatus {
            total: len,
            quarantined: manifest.quarantined,
            ..Default::default()
        }),
    });
    let mut taken: HashSet<String> = manifest.done.clone();
    let mut committer = Committer {
        prog: prog.clone(),
        appender,
        manifest,
        welford,
        stats: stats_path.clone(),
        reference_path,
        quarantine: set.quarantine.clone(),
        checkpoint: set.checkpoint,
        last_checkpoint: Instant::now(),
        // What a killed run committed after its last checkpoint is in the
        // statistics now (caught up above) but not yet on disk.
        dirty: len > 0,
        latencies: Latencies::new(),
        first_taken: None,
        last_written: None,
        ingested: 0,
        shared: Arc::clone(&shared),
        header: header.clone(),
    };
    // Files found bad while waiting for the first one.
    for (job, why) in pre_quarantined.drain(..) {
        if taken.insert(job.name.clone()) {
            committer.quarantine(job, why)?;
        }
    }

    let (job_tx, job_rx) = bounded::<Job>(workers);
    let (res_tx, res_rx) = unbounded::<(Job, Outcome)>();
    let (wake_tx, wake_rx) = unbounded::<()>();
    let (retry_tx, retry_rx) = unbounded::<String>();
    let result = std::thread::scope(|scope| -> Result<(), FollowError> {
        for k in 0..workers {
            let (job_rx, res_tx) = (job_rx.clone(), res_tx.clone());
            let (prog, src, frame, reference, shared) = (&prog, &src, &frame, &reference, &shared);
            std::thread::Builder::new()
                .name(format!("ingest-{k}"))
                .spawn_scoped(scope, move || {
                    for job in job_rx {
                        let outcome = compute(prog, &job, src, frame, dtype, reference);
                        if matches!(
                            outcome,
                            Outcome::Done {
                                reference: Some(_),
                                ..
                            }
                        ) {
                            shared.reference_ready.store(true, Ordering::SeqCst);
                        }
                        if res_tx.send((job, outcome)).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| FollowError::Pipeline(format!("cannot start a worker: {e}")))?;
        }
        drop(res_tx);
        drop(job_rx);
        let committer = &mut committer;
        let shared_c = Arc::clone(&shared);
        let commit_thread = std::thread::Builder::new()
            .name("ingest-commit".into())
            .spawn_scoped(scope, move || -> Result<(), FollowError> {
                let mut pending: BTreeMap<u64, (Job, Outcome)> = BTreeMap::new();
                let mut told: HashSet<String> = HashSet::new();
                let mut next = 0u64;
                let mut result = Ok(());
                for (job, outcome) in res_rx {
                    pending.insert(job.seq, (job, outcome));
                    while let Some((job, outcome)) = pending.remove(&next) {
                        next += 1;
                        if let Outcome::NotReady(why) = &outcome {
                            if told.insert(job.name.clone()) {
                                tracing::info!(file = %job.path.display(), "not ready yet, taken again once it settles: {why}");
                            }
                            let _ = retry_tx.send(job.name.clone());
                        } else if result.is_ok() {
                            result = committer.commit(job, outcome);
                            if result.is_err() {
                                shared_c.failed.store(true, Ordering::SeqCst);
                            }
                        }
                        shared_c.in_flight.fetch_sub(1, Ordering::SeqCst);
                        let _ = wake_tx.send(());
                    }
                }
                let saved = committer.save_checkpoint();
                result.and(saved)
            })
            .map_err(|e| FollowError::Pipeline(format!("cannot start the committer: {e}")))?;

        let scanned = scan(
            &src,
            &set,
            opts,
            &shared,
            &mut taken,
            job_tx,
            (&wake_rx, &retry_rx),
        );
        let committed = commit_thread
            .join()
            .unwrap_or_else(|_| Err(FollowError::Pipeline("the committer panicked".into())));
        committed.and(scanned)
    });
    if let Some(p) = &opts.progress {
        p.finish();
    }
    let summary = IngestSummary {
        pipeline: plan.name.clone(),
        output: prog.out_path.clone(),
        state,
        stats: stats_path,
        resumed_from: len,
        ingested: committer.ingested,
        total: committer.appender.len(),
        quarantined: committer.manifest.quarantined,
        wall_seconds: started.elapsed().as_secs_f64(),
        timepoints_per_second: committer.rate(),
        latency_p50_seconds: committer.latencies.quantile(0.5),
        latency_p99_seconds: committer.latencies.quantile(0.99),
        latency_max_seconds: committer.latencies.max,
        threads: workers,
        memory_budget_bytes: plan.memory,
        projected_bytes: projected,
        peak_rss_bytes: peak_rss_bytes(),
    };
    if let Err(e) = write_report(&plan.report, &summary) {
        tracing::warn!("cannot write the report {}: {e}", plan.report.display());
    }
    result.map(|_| summary)
}

fn write_report(path: &Path, s: &IngestSummary) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let text = serde_json::to_string_pretty(s).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

/// Lists the glob: the files it matches now (none if the folder is missing).
fn list(glob: &str) -> Result<Vec<PathBuf>, FollowError> {
    match blockflow_io::hdf5::list_timepoints(glob) {
        Ok(f) => Ok(f),
        Err(IoError::NoMatch { .. }) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Updates the candidates from a listing and returns the complete ones in
/// natural order.
fn settle(
    files: Vec<PathBuf>,
    taken: &HashSet<String>,
    cands: &mut HashMap<PathBuf, Candidate>,
    settle: Duration,
) -> Vec<PathBuf> {
    let now = Instant::now();
    let now_sys = SystemTime::now();
    let present: HashSet<&PathBuf> = files.iter().collect();
    cands.retain(|p, _| present.contains(p));
    let mut ready = Vec::new();
    for p in &files {
        let name = file_name(p);
        if taken.contains(&name) {
            continue;
        }
        let Ok(md) = std::fs::metadata(p) else {
            cands.remove(p);
            continue;
        };
        let (bytes, mtime) = (md.len(), md.modified().ok());
        let c = cands.entry(p.clone()).or_insert_with(|| {
            // A file last changed `settle` ago or more is complete already.
            let age = mtime
                .and_then(|m| now_sys.duration_since(m).ok())
                .unwrap_or_default()
                .min(settle);
            Candidate {
                bytes,
                mtime,
                seen: now_sys,
                seen_at: now,
                stable_since: now.checked_sub(age).unwrap_or(now),
            }
        });
        if c.bytes != bytes || c.mtime != mtime {
            c.bytes = bytes;
            c.mtime = mtime;
            c.stable_since = now;
        }
        if now.duration_since(c.stable_since) >= settle {
            ready.push(p.clone());
        }
    }
    ready
}

/// Waits for the first complete file that opens; files that do not are
/// returned for quarantine. None if stopped first.
fn wait_for_first(
    src: &Source,
    set: &Settings,
    opts: &FollowOptions,
    bad: &mut Vec<(Job, String)>,
) -> Result<Option<(Vec<u64>, DType)>, FollowError> {
    let mut cands = HashMap::new();
    let mut tried = HashSet::new();
    let mut told = HashSet::new();
    let mut announced = false;
    while !opts.stop.load(Ordering::SeqCst) {
        let ready = settle(list(&src.glob)?, &tried, &mut cands, set.settle);
        for p in ready {
            let name = file_name(&p);
            tried.insert(name.clone());
            let c = cands.remove(&p);
            match Hdf5Reader::open(&p, &src.dataset) {
                Ok(r) => return Ok(Some((r.info.shape.clone(), r.info.dtype))),
                Err(e) => {
                    let (seen, seen_at, bytes, mtime) = c
                        .map(|c| (c.seen, c.seen_at, c.bytes, c.mtime))
                        .unwrap_or((SystemTime::now(), Instant::now(), 0, None));
                    let text = e.to_string();
                    if stamp(&p) != Some((bytes, mtime))
                        || text.contains("unable to lock file")
                        || text.contains("lock file")
                    {
                        // Still being written: tried again once settled.
                        if told.insert(name.clone()) {
                            tracing::info!(file = %p.display(), "not ready yet: {text}");
                        }
                        tried.remove(&name);
                        continue;
                    }
                    bad.push((
                        Job {
                            seq: 0,
                            path: p.clone(),
                            name,
                            bytes,
                            mtime,
                            seen,
                            seen_at,
                        },
                        format!("stage \"{}\": {e}", src.stage),
                    ));
                }
            }
        }
        if !announced {
            tracing::info!("waiting for the first timepoint matching {}", src.glob);
            announced = true;
        }
        std::thread::sleep(set.poll);
    }
    Ok(None)
}

/// The scanner: lists the folder, hands complete files to the workers in
/// natural order, keeps the status, and stops on request, on failure or
/// when idle; then lets what is in flight finish.
fn scan(
    src: &Source,
    set: &Settings,
    opts: &FollowOptions,
    shared: &Shared,
    taken: &mut HashSet<String>,
    job_tx: Sender<Job>,
    (wake, retry): (&Receiver<()>, &Receiver<String>),
) -> Result<(), FollowError> {
    let mut cands: HashMap<PathBuf, Candidate> = HashMap::new();
    let mut seq = 0u64;
    let mut idle_since = Instant::now();
    let workers = job_tx.capacity().unwrap_or(1) as u64;
    let mut result = Ok(());
    loop {
        if opts.stop.load(Ordering::SeqCst) || shared.failed.load(Ordering::SeqCst) {
            break;
        }
        // Files that were not ready when read: candidates again.
        while let Ok(name) = retry.try_recv() {
            taken.remove(&name);
        }
        let files = match list(&src.glob) {
            Ok(f) => f,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let mut ready = settle(files, taken, &mut cands, set.settle);
        if let Some(re) = &src.index {
            // By the captured index; names it does not match first, to be
            // quarantined.
            ready.sort_by_key(|p| blockflow_io::hdf5::timepoint_index(p, re).ok());
        }
        for p in ready {
            let in_flight = shared.in_flight.load(Ordering::SeqCst);
            if in_flight > workers {
                break;
            }
            // The first timepoint becomes the reference: nothing else
            // starts before it is computed.
            if !shared.reference_ready.load(Ordering::SeqCst) && in_flight > 0 {
                break;
            }
            let Some(c) = cands.remove(&p) else { continue };
            let name = file_name(&p);
            taken.insert(name.clone());
            shared.in_flight.fetch_add(1, Ordering::SeqCst);
            let job = Job {
                seq,
                path: p,
                name,
                bytes: c.bytes,
                mtime: c.mtime,
                seen: c.seen,
                seen_at: c.seen_at,
            };
            seq += 1;
            if job_tx.send(job).is_err() {
                break;
            }
        }
        let in_flight = shared.in_flight.load(Ordering::SeqCst);
        {
            let mut s = shared.status.lock().unwrap_or_else(|p| p.into_inner());
            s.backlog = cands.len() as u64 + in_flight;
            if let Some(p) = &opts.progress {
                p.update(&s);
            }
        }
        if cands.is_empty() && in_flight == 0 {
            if let Some(d) = set.idle_exit.filter(|d| idle_since.elapsed() >= *d) {
                tracing::info!("nothing arrived for {d:?}: exiting");
                break;
            }
        } else {
            idle_since = Instant::now();
        }
        match wake.recv_timeout(set.poll) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while wake.try_recv().is_ok() {}
    }
    // Drain: no new files; what is in flight finishes and is committed.
    drop(job_tx);
    {
        let mut s = shared.status.lock().unwrap_or_else(|p| p.into_inner());
        s.draining = true;
        if let Some(p) = &opts.progress {
            p.update(&s);
        }
    }
    while shared.in_flight.load(Ordering::SeqCst) > 0 && !shared.failed.load(Ordering::SeqCst) {
        let _ = wake.recv_timeout(Duration::from_millis(50));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_keeps_its_dtype_across_a_restart() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("reference.zarr");
        let frame = ArrayD::from_shape_fn(IxDyn(&[1, 4, 6]), |i| {
            (i[1] * 6 + i[2]) as f32 * 0.1 + 1.0 / 3.0
        });
        let data = ArrayData::F32(frame.clone());
        save_reference(&path, &data).expect("save");
        let back = load_reference(&path, &[4, 6], DType::F32).expect("load");
        assert_eq!(
            back, data,
            "float32 read back bit for bit, with its time axis"
        );
        // A registrar made from it registers in single precision, as the
        // one made from the original timepoint did.
        let r = Registrar::of_timepoint(&back).expect("registrar");
        assert_eq!(r.precision_bytes(), 4);
        // A state written before references kept their dtype holds float64.
        save_reference(&path, &ArrayData::F64(frame.mapv(f64::from))).expect("save f64");
        assert_eq!(
            load_reference(&path, &[4, 6], DType::F32).expect("load"),
            data
        );
        assert!(
            load_reference(&path, &[4, 5], DType::F32).is_err(),
            "another shape"
        );
    }

    #[test]
    fn durations_parse_with_units() {
        let d = |s: &str| plan::parse_duration(s).expect(s);
        assert_eq!(d("2s"), Duration::from_secs(2));
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("1.5 min"), Duration::from_secs(90));
        assert_eq!(d("0"), Duration::ZERO);
        assert!(plan::parse_duration("5 parsecs").is_err());
        assert!(plan::parse_duration("soon").is_err());
    }

    #[test]
    fn latency_quantiles_within_their_bucket() {
        let mut l = Latencies::new();
        for i in 1..=1000 {
            l.push(i as f64 * 1e-3);
        }
        for (q, want) in [(0.5, 0.5), (0.99, 0.99)] {
            let got = l.quantile(q);
            assert!((got / want - 1.0).abs() < 0.03, "q{q}: {got} vs {want}");
        }
        assert_eq!(l.max, 1.0);
        assert_eq!(Latencies::new().quantile(0.5), 0.0);
    }

    fn entry(file: &str, t: Option<u64>) -> Entry {
        Entry {
            file: file.into(),
            status: if t.is_some() {
                "ingested"
            } else {
                "quarantined"
            }
            .into(),
            t,
            bytes: None,
            shift: t.map(|t| vec![t as f64, 0.0]),
            seen: None,
            written: None,
            latency_s: None,
            reason: None,
            moved_to: t.is_none().then(|| "q/x".to_string()),
        }
    }

    #[test]
    fn manifest_survives_a_torn_last_line_and_refuses_damage() {
        let dir = tempfile::tempdir().expect("tmp");
        let header = json!({"dataset": "data", "frame": [2, 2], "dtype": "float64"});
        {
            let mut m = Manifest::open(dir.path(), &header, true).expect("new");
            m.append(&entry("a.h5", Some(0))).expect("a");
            m.append(&entry("bad.h5", None)).expect("bad");
            m.append(&entry("b.h5", Some(1))).expect("b");
        }
        let path = dir.path().join("manifest.jsonl");
        // A kill in the middle of a record.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(br#"{"file":"c.h5","sta"#).expect("torn");
        drop(f);
        let mut m = Manifest::open(dir.path(), &header, true).expect("reopen");
        assert_eq!((m.ingested, m.quarantined), (2, 1));
        assert!(m.done.contains("bad.h5") && !m.done.contains("c.h5"));
        assert_eq!(m.shifts.as_ref().map(Vec::len), Some(2));
        assert_eq!(m.quarantined_files, vec![("bad.h5".into(), "q/x".into())]);
        m.append(&entry("c.h5", Some(2))).expect("c");
        drop(m);
        let m = Manifest::open(dir.path(), &header, false).expect("again");
        assert_eq!(m.ingested, 3);

        // Another stream's state is refused, naming what differs.
        let other = json!({"dataset": "data", "frame": [3, 3], "dtype": "float64"});
        let err = Manifest::open(dir.path(), &other, false)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("frame"), "{err}");

        // A timepoint out of sequence is damage, not something to guess at.
        let text = std::fs::read_to_string(&path).expect("read");
        let bad = text.replace("\"t\":1", "\"t\":5");
        std::fs::write(&path, bad).expect("write");
        let err = Manifest::open(dir.path(), &header, false)
            .err()
            .expect("damaged");
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
