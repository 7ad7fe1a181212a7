//! `blockflow run --follow`: a long-running ingest of per-timepoint files.
//!
//! The pipeline's `read-hdf5-stack` stage watches the folder of its glob.
//! A file counts once it is complete (its size and modification time
//! unchanged for `[follow] settle`; files renamed into place count at
//! once with `settle = "0s"`). Each new timepoint goes through the
//! pipeline's map stages on its own, each run by its kernel, the one the
//! batch runs (median, register against the reference, shift, expr, filter,
//! clip, ...: see [`program`]), and is appended along time to the Zarr
//! array of the `write-zarr` stage, which grows; running per-voxel
//! statistics along time (Welford) are written beside it.
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
//!
//! The files: this one (settings, the run), [`program`] (the steps and
//! one timepoint's computation), [`committer`] (appending, statistics,
//! the reference), [`manifest`], [`scanning`] (the folder).

mod committer;
mod manifest;
mod program;
mod scanning;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockflow_core::{human_bytes, DType};
use blockflow_io::hdf5::StackReader;
use blockflow_io::zarr::ZarrAppender;
use blockflow_io::IoError;
use blockflow_kernels::zscore::Welford;
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use serde_json::{json, Value};

use crate::config::{ConfigError, RawConfig, Val};
use crate::plan::{self, Plan};
use crate::report::peak_rss_bytes;
use crate::stages::KernelState;
use committer::{load_reference, move_file, resume_stats, Committer, Latencies, Shared};
use manifest::Manifest;
use program::{compute, program, Job, Outcome, Program, States};
use scanning::{scan, wait_for_first};

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
    /// The stage's declared `frame` and `dtype`: the ingest plans on
    /// them at once instead of waiting for the first file.
    declared: Option<(Vec<u64>, DType)>,
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
        .filter(|st| kind(st) == crate::stages::read_hdf5_stack::KIND.kind)
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
    // Both or neither; the planner reports a half declaration (and bad
    // values) with their place in the file.
    let frame = match st.get("frame").map(|v| &v.v) {
        Some(Val::Array(a)) => a
            .iter()
            .map(|x| match x.v {
                Val::Int(i) if i >= 1 => Some(i as u64),
                _ => None,
            })
            .collect::<Option<Vec<u64>>>(),
        _ => None,
    };
    let dtype = str_of("dtype").and_then(|d| DType::parse(&d));
    Ok(Source {
        stage: st.name.v.clone(),
        glob: plan::resolve(&raw.path, pv).to_string_lossy().into_owned(),
        dataset,
        index,
        declared: frame.zip(dtype),
    })
}

/// The path of the pipeline's one write-zarr stage, as the planner resolves it.
fn output_path(raw: &RawConfig) -> Option<PathBuf> {
    let mut outs = raw.stages.iter().filter(
        |st| matches!(st.get("kind").map(|v| &v.v), Some(Val::Str(k)) if k == crate::stages::write_zarr::KIND.kind),
    );
    let st = outs.next()?;
    if outs.next().is_some() {
        return None;
    }
    st.get("path").map(|v| plan::resolve(&raw.path, v))
}

/// Runs the ingest until it is stopped (or idle for `idle_exit`).
pub fn run(mut raw: RawConfig, opts: &FollowOptions) -> Result<IngestSummary, FollowError> {
    let started = Instant::now();
    // The per-timepoint plan is made on the frame the output already
    // holds (a resumed ingest), else on the stage's declared `frame` and
    // `dtype` (at once, before any file), else on the first file.
    let src = find_source(&raw)?;
    let set = settings(&raw, &src);
    // One ingest (or run) per output: held until this run ends. A second
    // one fails here, naming this one.
    let _lock = output_path(&raw)
        .map(|p| blockflow_io::output::Lock::acquire(&blockflow_io::output::lock_path(&p), &p))
        .transpose()?;

    let mut pre_quarantined: Vec<(Job, String)> = Vec::new();
    let (frame, dtype) = stream_shape(&raw, &src, &set, opts, &mut pre_quarantined)?;
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
    let (workers, projected) = memory_bound(&plan, &prog, &frame)?;

    let mut resumed = resume(&plan, &prog, &src, &frame, dtype, &state, &stats_path)?;
    let len = resumed.len;
    let states = prog.states();
    if let Some((i, s)) = resumed.kernel_state.take() {
        *states[i].write().unwrap_or_else(|p| p.into_inner()) = Some(s);
    }
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
        reference_ready: AtomicBool::new(prog.stateful.is_none() || len > 0),
        status: std::sync::Mutex::new(IngestStatus {
            total: len,
            quarantined: resumed.manifest.quarantined,
            ..Default::default()
        }),
    });
    let mut taken: HashSet<String> = resumed.manifest.done.clone();
    let mut committer = committer(&prog, resumed, &set, &stats_path, &shared);
    // Files found bad while waiting for the first one.
    for (job, why) in pre_quarantined.drain(..) {
        if taken.insert(job.name.clone()) {
            committer.quarantine(job, why)?;
        }
    }

    let summary = IngestSummary {
        pipeline: plan.name.clone(),
        output: prog.out_path.clone(),
        state,
        stats: stats_path,
        resumed_from: len,
        threads: workers,
        memory_budget_bytes: plan.memory,
        projected_bytes: projected,
        ..Default::default()
    };
    let work = Work {
        prog: &prog,
        src: &src,
        frame: &frame,
        dtype,
        states: &states,
        shared: &shared,
    };
    let result = ingest(work, workers, &set, opts, &mut committer, &mut taken);
    if let Some(p) = &opts.progress {
        p.finish();
    }
    let summary = summary.finish(&committer, started);
    if let Err(e) = write_report(&plan.report, &summary) {
        tracing::warn!("cannot write the report {}: {e}", plan.report.display());
    }
    result.map(|_| summary)
}

impl IngestSummary {
    /// The summary of a run that has ended: what its committer did.
    fn finish(self, committer: &Committer, started: Instant) -> IngestSummary {
        IngestSummary {
            ingested: committer.ingested,
            total: committer.appender.len(),
            quarantined: committer.manifest.quarantined,
            wall_seconds: started.elapsed().as_secs_f64(),
            timepoints_per_second: committer.rate(),
            latency_p50_seconds: committer.latencies.quantile(0.5),
            latency_p99_seconds: committer.latencies.quantile(0.99),
            latency_max_seconds: committer.latencies.max,
            peak_rss_bytes: peak_rss_bytes(),
            ..self
        }
    }
}

/// The stream's shape and dtype: from an existing state's header, else
/// from the first complete file that opens (files found bad on the way
/// are added to `pre_quarantined`).
fn stream_shape(
    raw: &RawConfig,
    src: &Source,
    set: &Settings,
    opts: &FollowOptions,
    pre_quarantined: &mut Vec<(Job, String)>,
) -> Result<(Vec<u64>, DType), FollowError> {
    let state_guess = set
        .state
        .clone()
        .or_else(|| output_path(raw).map(|p| blockflow_io::zarr::with_suffix(&p, ".state")));
    let recorded = state_guess
        .as_ref()
        .map(|d| d.join("manifest.jsonl"))
        .and_then(|m| std::fs::read_to_string(m).ok())
        .and_then(|t| {
            t.lines()
                .next()
                .and_then(|l| serde_json::from_str::<Value>(l).ok())
        });
    let recorded = match recorded.as_ref().and_then(|h| {
        Some((
            h.get("frame")?.as_array()?.clone(),
            h.get("dtype")?.as_str()?.to_string(),
        ))
    }) {
        Some((f, d)) => Some((
            f.iter().filter_map(Value::as_u64).collect::<Vec<u64>>(),
            DType::parse(&d).ok_or_else(|| {
                state_err(
                    state_guess.as_deref().unwrap_or(Path::new(".")),
                    "bad dtype in the manifest",
                )
            })?,
        )),
        None => None,
    };
    match (recorded, &src.declared) {
        (Some(r), Some(d)) if r != *d => Err(FollowError::Unfit(format!(
            "stage \"{}\" declares `frame = {:?}`, `dtype = \"{}\"`, but the output this ingest resumes holds timepoints of {:?} {} (its manifest in {})",
            src.stage,
            d.0,
            d.1.name(),
            r.0,
            r.1.name(),
            state_guess.as_deref().unwrap_or(Path::new(".")).display()
        ))),
        (Some(r), _) => Ok(r),
        (None, Some(d)) => Ok(d.clone()),
        (None, None) => wait_for_first(src, set, opts, pre_quarantined)?
            .ok_or_else(|| FollowError::Pipeline("stopped before any file arrived".into())),
    }
}

/// The memory bound: workers each hold one timepoint's working set, the
/// committer a reorder window of finished timepoints, the statistics and
/// the reference. Returns (workers, the projected bytes), or refuses a
/// projection over the budget.
fn memory_bound(plan: &Plan, prog: &Program, frame: &[u64]) -> Result<(usize, u64), FollowError> {
    let frame_elems: u64 = frame.iter().product();
    let out_bytes = frame_elems * prog.options.dtype.size() as u64;
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
    Ok((workers, projected))
}

/// Where an earlier run left the ingest, made whole again.
struct Resumed {
    header: Value,
    manifest: Manifest,
    appender: ZarrAppender,
    reference_path: PathBuf,
    /// The stateful kernel's state (the registration reference), made
    /// again from the timepoint it was made from: (its step, the state).
    kernel_state: Option<(usize, KernelState)>,
    welford: Welford,
    /// Timepoints in the output.
    len: u64,
}

/// Opens (or starts) the state in `state`, finishes what a killed run
/// left half done and cuts the output back to the manifest's length.
fn resume(
    plan: &Plan,
    prog: &Program,
    src: &Source,
    frame: &[u64],
    dtype: DType,
    state: &Path,
    stats_path: &Path,
) -> Result<Resumed, FollowError> {
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
    let manifest = Manifest::open(state, &header, prog.shifts_json.is_some())?;
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
    let kernel_state = match (prog.stateful, len > 0) {
        (Some(i), true) => {
            let r = load_reference(&reference_path, frame, prog.reference_dtype)?;
            let s = prog
                .resume_state(i, r)
                .map_err(|e| state_err(&reference_path, e))?;
            Some((i, s))
        }
        _ => None,
    };
    let frame_us: Vec<usize> = frame.iter().map(|&n| n as usize).collect();
    let welford = resume_stats(stats_path, &prog.out_path, &frame_us, len)?;
    Ok(Resumed {
        header,
        manifest,
        appender,
        reference_path,
        kernel_state,
        welford,
        len,
    })
}

/// The committer of a resumed ingest.
fn committer(
    prog: &Program,
    resumed: Resumed,
    set: &Settings,
    stats_path: &Path,
    shared: &Arc<Shared>,
) -> Committer {
    Committer {
        prog: prog.clone(),
        appender: resumed.appender,
        manifest: resumed.manifest,
        welford: resumed.welford,
        stats: stats_path.to_path_buf(),
        reference_path: resumed.reference_path,
        quarantine: set.quarantine.clone(),
        checkpoint: set.checkpoint,
        last_checkpoint: Instant::now(),
        // What a killed run committed after its last checkpoint is in the
        // statistics now (caught up by `resume`) but not yet on disk.
        dirty: resumed.len > 0,
        latencies: Latencies::new(),
        first_taken: None,
        last_written: None,
        ingested: 0,
        shared: Arc::clone(shared),
        header: resumed.header,
    }
}

/// What the workers compute with, shared read-only.
#[derive(Clone, Copy)]
struct Work<'a> {
    prog: &'a Program,
    src: &'a Source,
    frame: &'a [u64],
    dtype: DType,
    states: &'a States,
    shared: &'a Shared,
}

/// The ingest proper: `workers` worker threads, one committer thread, and
/// the scan loop on this thread, until the scan stops and what was in
/// flight is committed.
fn ingest(
    work: Work<'_>,
    workers: usize,
    set: &Settings,
    opts: &FollowOptions,
    committer: &mut Committer,
    taken: &mut HashSet<String>,
) -> Result<(), FollowError> {
    let (job_tx, job_rx) = bounded::<Job>(workers);
    let (res_tx, res_rx) = unbounded::<(Job, Outcome)>();
    let (wake_tx, wake_rx) = unbounded::<()>();
    let (retry_tx, retry_rx) = unbounded::<String>();
    std::thread::scope(|scope| -> Result<(), FollowError> {
        for k in 0..workers {
            let (job_rx, res_tx) = (job_rx.clone(), res_tx.clone());
            std::thread::Builder::new()
                .name(format!("ingest-{k}"))
                .spawn_scoped(scope, move || work_loop(work, job_rx, res_tx))
                .map_err(|e| FollowError::Pipeline(format!("cannot start a worker: {e}")))?;
        }
        drop(res_tx);
        drop(job_rx);
        let shared = work.shared;
        let commit_thread = std::thread::Builder::new()
            .name("ingest-commit".into())
            .spawn_scoped(scope, move || {
                commit_loop(committer, shared, res_rx, retry_tx, wake_tx)
            })
            .map_err(|e| FollowError::Pipeline(format!("cannot start the committer: {e}")))?;

        let scanned = scan(
            work.src,
            set,
            opts,
            shared,
            taken,
            job_tx,
            (&wake_rx, &retry_rx),
        );
        let committed = commit_thread
            .join()
            .unwrap_or_else(|_| Err(FollowError::Pipeline("the committer panicked".into())));
        committed.and(scanned)
    })
}

/// A worker: computes each timepoint it is handed, until the scan stops
/// handing them out.
fn work_loop(w: Work<'_>, jobs: Receiver<Job>, results: Sender<(Job, Outcome)>) {
    for job in jobs {
        let outcome = compute(w.prog, &job, w.src, w.frame, w.dtype, w.states);
        if matches!(
            outcome,
            Outcome::Done {
                reference: Some(_),
                ..
            }
        ) {
            w.shared.reference_ready.store(true, Ordering::SeqCst);
        }
        if results.send((job, outcome)).is_err() {
            break;
        }
    }
}

/// The committer: takes the workers' results in the order the files were
/// taken, hands back those not ready yet to be taken again, commits the
/// rest, and saves a checkpoint once the workers are done. The first
/// failure stops committing (the rest still count down `in_flight`).
fn commit_loop(
    committer: &mut Committer,
    shared: &Shared,
    results: Receiver<(Job, Outcome)>,
    retry: Sender<String>,
    wake: Sender<()>,
) -> Result<(), FollowError> {
    let mut pending: BTreeMap<u64, (Job, Outcome)> = BTreeMap::new();
    let mut told: HashSet<String> = HashSet::new();
    let mut next = 0u64;
    let mut result = Ok(());
    for (job, outcome) in results {
        pending.insert(job.seq, (job, outcome));
        while let Some((job, outcome)) = pending.remove(&next) {
            next += 1;
            if let Outcome::NotReady(why) = &outcome {
                if told.insert(job.name.clone()) {
                    tracing::info!(file = %job.path.display(), "not ready yet, taken again once it settles: {why}");
                }
                let _ = retry.send(job.name.clone());
            } else if result.is_ok() {
                result = committer.commit(job, outcome);
                if result.is_err() {
                    shared.failed.store(true, Ordering::SeqCst);
                }
            }
            shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            let _ = wake.send(());
        }
    }
    let saved = committer.save_checkpoint();
    result.and(saved)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        let d = |s: &str| plan::parse_duration(s).expect(s);
        assert_eq!(d("2s"), Duration::from_secs(2));
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("1.5 min"), Duration::from_secs(90));
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("2.5"), Duration::from_millis(2500));
        assert_eq!(d("5 min"), Duration::from_secs(300));
        assert_eq!(d("1h 30min"), Duration::from_secs(5400));
        let e = plan::parse_duration("5 parsecs").expect_err("unknown unit");
        assert!(
            e.contains("\"5 parsecs\" is not a duration") && e.contains("parsecs"),
            "{e}"
        );
        assert!(plan::parse_duration("soon").is_err());
        assert!(plan::parse_duration("-2s").is_err());
        assert!(plan::parse_duration("").is_err());
    }
}
