//! Build and run: one thread per stage actor, bounded crossbeam channels
//! between them, a rayon pool for compute.
//!
//! Every stage sends its chunks in row-major order of its grid, so a stage
//! with several inputs takes one chunk from each in lockstep. A stage that
//! fails records the error (with its chunk) and returns; dropping its
//! channel ends wakes its neighbours, which stop in turn, so the whole
//! graph stops without a hang. A panic is caught and becomes an error.
//! Outputs are committed (renamed into place) only when every stage
//! succeeded.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use blockflow_core::{ArrayData, Chunk, ChunkGrid, Meter, Msg};
use crossbeam_channel::{bounded, Receiver, Sender};
use rayon::prelude::*;

use crate::plan::{Plan, PlannedStage};
use crate::report::{peak_rss_bytes, Report, StageReport};
use crate::stages::{BuildCx, ChunkSink, ChunkSource, Exec};

pub mod keep;
mod shapes;
mod window;

pub(crate) use shapes::check_shape;
pub use shapes::StageIo;
pub(crate) use window::{crop, gather};

/// Errors of the build and run phases.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunError {
    #[error("stage \"{stage}\": {msg}")]
    Build { stage: String, msg: String },
    #[error("stage \"{stage}\"{}: {msg}", chunk_label(.chunk))]
    Stage {
        stage: String,
        chunk: Option<Vec<u64>>,
        msg: String,
    },
    #[error("interrupted; no output was committed")]
    Cancelled,
    /// A neighbour stopped; the neighbour's error is the one reported.
    #[error("stopped because another stage failed")]
    Aborted,
}

fn chunk_label(c: &Option<Vec<u64>>) -> String {
    match c {
        Some(c) => format!(", chunk {c:?}"),
        None => String::new(),
    }
}

/// Receives progress from a run (the binary draws a bar with it).
pub trait Progress: Send + Sync {
    /// The run starts: the chunks its writers will write in all.
    fn start(&self, total_chunks: u64);
    /// Writers wrote `chunks` more; `bytes` are held by the one that did.
    fn advance(&self, chunks: u64, bytes: u64);
    fn finish(&self);
    /// Every stage, in plan order, with the chunks of its own grid and
    /// of its inputs: the indices of [`Progress::stage_chunks`].
    fn stages(&self, _stages: &[StageTotal]) {}
    /// Stage `stage` read `read` more input chunks and made `made` more of
    /// its own (sent, or for a writer written).
    fn stage_chunks(&self, _stage: usize, _read: u64, _made: u64) {}
    /// A stage has ended (its report so far: chunks, busy time).
    fn stage_done(&self, _report: &crate::report::StageReport) {}
}

/// A stage as a progress display counts it.
#[derive(Debug, Clone)]
pub struct StageTotal {
    pub name: String,
    pub kind: &'static str,
    /// The chunks of the stage's own grid: what it makes (a writer: writes).
    pub chunks: u64,
    /// The chunks its inputs bring, all inputs together.
    pub chunks_in: u64,
}

impl StageTotal {
    /// The stages of a plan.
    pub fn of(plan: &Plan) -> Vec<StageTotal> {
        plan.stages
            .iter()
            .map(|s| StageTotal {
                name: s.name.clone(),
                kind: s.kind.kind(),
                chunks: s.chunks(),
                chunks_in: s.inputs.iter().map(|&j| plan.stages[j].chunks()).sum(),
            })
            .collect()
    }
}

/// Options of one run.
#[derive(Default, Clone)]
pub struct RunOptions {
    /// Set (e.g. by Ctrl-C) to stop the run.
    pub cancel: Arc<AtomicBool>,
    pub progress: Option<Arc<dyn Progress>>,
}

struct EdgeStats {
    queued: AtomicU64,
    peak: AtomicU64,
}

struct Out {
    tx: Sender<Msg>,
    stats: Arc<EdgeStats>,
}

struct In {
    rx: Receiver<Msg>,
    stats: Arc<EdgeStats>,
    from: String,
    /// The chunks its producer sends.
    expected: u64,
}

/// What a stage holds open through a run.
enum Resource {
    None,
    Source(Box<dyn ChunkSource>),
    Sink(Box<dyn ChunkSink>),
}

/// A finished writer's result, committed when every stage succeeded.
enum Output {
    Sink(Box<dyn ChunkSink>),
}

impl Output {
    fn commit(self) -> Result<Vec<PathBuf>, blockflow_io::IoError> {
        match self {
            Output::Sink(s) => s.commit(),
        }
    }
}

struct Ctx<'a> {
    stage: &'a PlannedStage,
    /// The stage's position in the plan.
    index: usize,
    pool: &'a rayon::ThreadPool,
    meter: &'a Arc<Meter>,
    cancel: &'a AtomicBool,
    progress: Option<&'a dyn Progress>,
    report: StageReport,
    held_peak: u64,
    /// Test hook: the chunk position at which this stage panics.
    fault: Option<u64>,
    /// Chunks each input brings.
    expected_in: u64,
}

impl Ctx<'_> {
    fn err(&self, chunk: Option<&[u64]>, msg: impl Into<String>) -> RunError {
        RunError::Stage {
            stage: self.stage.name.clone(),
            chunk: chunk.map(<[u64]>::to_vec),
            msg: msg.into(),
        }
    }

    fn check_cancel(&self) -> Result<(), RunError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(RunError::Cancelled)
        } else {
            Ok(())
        }
    }

    fn send(&mut self, outs: &[Out], chunk: Chunk) -> Result<(), RunError> {
        let bytes = chunk.nbytes();
        self.report.chunks_out += 1;
        self.report.bytes_out += bytes;
        if let Some(p) = self.progress {
            p.stage_chunks(self.index, 0, 1);
        }
        let t = Instant::now();
        for o in outs {
            let q = o.stats.queued.fetch_add(bytes, Ordering::AcqRel) + bytes;
            o.stats.peak.fetch_max(q, Ordering::AcqRel);
            if o.tx.send(Msg::Data(chunk.clone())).is_err() {
                return Err(RunError::Aborted);
            }
        }
        self.report.blocked_send_seconds += t.elapsed().as_secs_f64();
        Ok(())
    }

    fn end(&mut self, outs: &[Out]) {
        for o in outs {
            let _ = o.tx.send(Msg::End);
        }
    }

    /// The next chunk of an input, `None` at its end.
    fn recv(&mut self, input: &In) -> Result<Option<Chunk>, RunError> {
        let t = Instant::now();
        let msg = input.rx.recv();
        self.report.blocked_recv_seconds += t.elapsed().as_secs_f64();
        match msg {
            Ok(Msg::Data(c)) => {
                let b = c.nbytes();
                input.stats.queued.fetch_sub(b, Ordering::AcqRel);
                self.report.chunks_in += 1;
                self.report.bytes_in += b;
                if let Some(p) = self.progress {
                    p.stage_chunks(self.index, 1, 0);
                }
                Ok(Some(c))
            }
            Ok(Msg::End) => Ok(None),
            Err(_) => Err(RunError::Aborted),
        }
    }

    /// Up to `parallel` sets of chunks, one from each input: blocks for the
    /// first set, takes more only if they are already waiting. Returns the
    /// sets and whether the inputs have ended.
    fn recv_batch(
        &mut self,
        inputs: &[In],
        received: &mut u64,
    ) -> Result<(Vec<Vec<Chunk>>, bool), RunError> {
        let want = self.stage.parallel;
        let expected = self.expected_in;
        let mut batch = Vec::with_capacity(want);
        while batch.len() < want {
            if !batch.is_empty() && inputs[0].rx.is_empty() {
                break;
            }
            let mut set = Vec::with_capacity(inputs.len());
            let mut ended = Vec::new();
            for input in inputs {
                match self.recv(input)? {
                    Some(c) => set.push(c),
                    None => ended.push(input.from.clone()),
                }
            }
            if !ended.is_empty() {
                if ended.len() < inputs.len() || *received != expected {
                    return Err(self.err(
                        None,
                        format!(
                            "input \"{}\" ended after {} of {} chunks",
                            ended[0], received, expected
                        ),
                    ));
                }
                return Ok((batch, true));
            }
            *received += 1;
            if *received > expected {
                return Err(self.err(
                    Some(&set[0].index),
                    format!("received more than the {expected} chunks planned"),
                ));
            }
            batch.push(set);
        }
        Ok((batch, false))
    }

    /// Panics at the chunk chosen by `BLOCKFLOW_FAULT=panic:STAGE:N` (a test
    /// hook to prove that a panic stops the run with an error, not a hang).
    fn maybe_fault(fault: Option<u64>, pos: u64) {
        if fault == Some(pos) {
            panic!("injected fault at chunk position {pos}");
        }
    }

    fn note_held(&mut self, bytes: u64) {
        self.held_peak = self.held_peak.max(bytes);
    }
}

/// Runs a validated plan. Always returns the report; the result says
/// whether the run succeeded and, if not, the first error.
pub fn run(plan: &Plan, opts: &RunOptions) -> (Report, Result<Vec<PathBuf>, RunError>) {
    let started = Instant::now();
    let meter = Meter::new();
    let mut report = Report::new(plan);
    let result = run_inner(plan, opts, &meter, &mut report);
    report.wall_seconds = started.elapsed().as_secs_f64();
    report.ended = crate::report::now_rfc3339();
    if let Ok(paths) = &result {
        report.outputs = paths
            .iter()
            .map(|p| crate::report::OutputReport::of(p))
            .collect();
    }
    report.peak_buffered_bytes = meter.peak();
    report.peak_rss_bytes = peak_rss_bytes();
    report.ok = result.is_ok();
    report.error = result.as_ref().err().map(|e| e.to_string());
    if let Some(p) = &opts.progress {
        p.finish();
    }
    (report, result)
}

/// Opens every source and claims every output, in plan order.
fn build(plan: &Plan) -> Result<Vec<Resource>, RunError> {
    plan.stages
        .iter()
        .map(|st| {
            let fail = |e: blockflow_io::IoError| RunError::Build {
                stage: st.name.clone(),
                msg: e.to_string(),
            };
            let inputs: Vec<Option<blockflow_core::ArraySpec>> = st
                .inputs
                .iter()
                .map(|&j| plan.stages[j].output.clone())
                .collect();
            let cx = BuildCx {
                stage: st,
                inputs: &inputs,
            };
            Ok(match st.kind.exec() {
                Exec::Source(s) => Resource::Source(s.open(&cx).map_err(fail)?),
                Exec::Sink(s) => Resource::Sink(s.open(&cx).map_err(fail)?),
                _ => Resource::None,
            })
        })
        .collect()
}

/// The scratch folders the plan keeps stores in.
fn scratch_dirs(plan: &Plan) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for s in &plan.stages {
        let mut kind = s.kind.clone();
        if let Some(d) = kind.scratch_dir_mut() {
            if !dirs.contains(d) {
                dirs.push(d.clone());
            }
        }
    }
    dirs
}

/// What a stage thread returns: its position, its report, its output.
type Finished = (usize, StageReport, Option<Output>);

/// Every edge's statistics, by the position of the stage that sends on it.
type Edges = Vec<(usize, Arc<EdgeStats>)>;

fn run_inner(
    plan: &Plan,
    opts: &RunOptions,
    meter: &Arc<Meter>,
    report: &mut Report,
) -> Result<Vec<PathBuf>, RunError> {
    // Held for the run: the scratch folders (what dead runs left there is
    // removed first), then every output (another run on one is refused).
    let _scratch = scratch_dirs(plan)
        .into_iter()
        .map(|d| {
            blockflow_io::output::scratch_lock(&d).map_err(|e| RunError::Build {
                stage: "pipeline".into(),
                msg: format!("scratch folder: {e}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let resources = build(plan)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(plan.threads)
        .thread_name(|i| format!("blockflow-compute-{i}"))
        .build()
        .map_err(|e| RunError::Build {
            stage: "pipeline".into(),
            msg: format!("cannot start {} compute threads: {e}", plan.threads),
        })?;
    let (outs, ins, edges) = channels(plan);
    let total: u64 = plan
        .stages
        .iter()
        .filter(|s| s.is_sink())
        .map(|s| s.chunks())
        .sum();
    if let Some(p) = &opts.progress {
        p.stages(&StageTotal::of(plan));
        p.start(total);
    }
    let first_error: Mutex<Option<RunError>> = Mutex::new(None);
    let record = |e: RunError| {
        let mut g = first_error.lock().unwrap_or_else(|p| p.into_inner());
        let replace = match (&*g, &e) {
            (None, _) => true,
            // A real error outranks the echoes of it.
            (Some(RunError::Aborted), RunError::Aborted) => false,
            (Some(RunError::Aborted), _) => true,
            _ => false,
        };
        if replace {
            *g = Some(e);
        }
    };
    let threads = Threads {
        plan,
        opts,
        meter,
        pool: &pool,
        record: &record,
    };
    let mut finished = threads.run(resources, outs, ins);
    finished.sort_by_key(|(i, _, _)| *i);
    // Each stage's peak adds what its output channels held at their peak.
    for (i, rep, _) in finished.iter_mut() {
        rep.peak_buffered_bytes += edges
            .iter()
            .filter(|(j, _)| j == i)
            .map(|(_, s)| s.peak.load(Ordering::Acquire))
            .sum::<u64>();
    }
    let error = first_error.into_inner().unwrap_or_else(|p| p.into_inner());
    let error = error.or_else(|| {
        opts.cancel
            .load(Ordering::Relaxed)
            .then_some(RunError::Cancelled)
    });
    report.stages = finished.iter().map(|(_, r, _)| r.clone()).collect();
    if let Some(e) = error {
        return Err(e);
    }
    commit_all(plan, finished)
}

/// One bounded channel per (producer, consumer) pair: each stage's output
/// ends and input ends, and every edge's statistics.
fn channels(plan: &Plan) -> (Vec<Vec<Out>>, Vec<Vec<In>>, Edges) {
    let n = plan.stages.len();
    let mut outs: Vec<Vec<Out>> = (0..n).map(|_| Vec::new()).collect();
    let mut ins: Vec<Vec<In>> = (0..n).map(|_| Vec::new()).collect();
    let mut edges = Vec::new();
    for (i, st) in plan.stages.iter().enumerate() {
        for (pos, &j) in st.inputs.iter().enumerate() {
            let slack = st.input_slack.get(pos).copied().unwrap_or(0);
            let (tx, rx) = bounded(plan.stages[j].capacity + slack);
            let stats = Arc::new(EdgeStats {
                queued: AtomicU64::new(0),
                peak: AtomicU64::new(0),
            });
            edges.push((j, Arc::clone(&stats)));
            outs[j].push(Out {
                tx,
                stats: Arc::clone(&stats),
            });
            ins[i].push(In {
                rx,
                stats,
                from: plan.stages[j].name.clone(),
                expected: plan.stages[j].chunks(),
            });
        }
    }
    (outs, ins, edges)
}

/// What every stage thread shares.
struct Threads<'a, R: Fn(RunError) + Sync> {
    plan: &'a Plan,
    opts: &'a RunOptions,
    meter: &'a Arc<Meter>,
    pool: &'a rayon::ThreadPool,
    record: &'a R,
}

impl<R: Fn(RunError) + Sync> Threads<'_, R> {
    /// One thread per stage; returns when all have ended.
    fn run(
        &self,
        mut resources: Vec<Resource>,
        mut outs: Vec<Vec<Out>>,
        mut ins: Vec<Vec<In>>,
    ) -> Vec<Finished> {
        let mut finished = Vec::new();
        std::thread::scope(|scope| {
            let mut handles = Vec::new();
            for (i, ((stage, out), input)) in self
                .plan
                .stages
                .iter()
                .zip(outs.drain(..))
                .zip(ins.drain(..))
                .enumerate()
            {
                let resource = std::mem::replace(&mut resources[i], Resource::None);
                let h = std::thread::Builder::new()
                    .name(format!("stage-{}", stage.name))
                    .spawn_scoped(scope, move || self.stage(i, resource, input, out));
                match h {
                    Ok(h) => handles.push(h),
                    Err(e) => (self.record)(RunError::Build {
                        stage: stage.name.clone(),
                        msg: format!("cannot start a thread: {e}"),
                    }),
                }
            }
            for h in handles {
                if let Ok(r) = h.join() {
                    finished.push(r);
                }
            }
        });
        finished
    }

    /// Runs stage `i` on its thread; a panic becomes its error.
    fn stage(&self, i: usize, resource: Resource, input: Vec<In>, out: Vec<Out>) -> Finished {
        let stage = &self.plan.stages[i];
        let mut ctx = Ctx {
            stage,
            index: i,
            pool: self.pool,
            meter: self.meter,
            cancel: &self.opts.cancel,
            progress: self.opts.progress.as_deref(),
            report: StageReport::in_plan(self.plan, i),
            held_peak: 0,
            fault: fault_for(&stage.name),
            expected_in: stage
                .inputs
                .first()
                .map_or(stage.chunks(), |&j| self.plan.stages[j].chunks()),
        };
        let began = Instant::now();
        let res = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_stage(&mut ctx, resource, &input, &out)
        }));
        let r = &mut ctx.report;
        r.wall_seconds =
            (began.elapsed().as_secs_f64() - r.blocked_recv_seconds - r.blocked_send_seconds)
                .max(0.0);
        let res = match res {
            Ok(r) => r,
            Err(payload) => Err(ctx.err(None, format!("panicked: {}", panic_message(&payload)))),
        };
        // Dropping the channel ends here wakes the neighbours.
        drop(input);
        drop(out);
        ctx.report.peak_buffered_bytes = ctx.held_peak;
        if let (Some(p), Ok(_)) = (ctx.progress, &res) {
            p.stage_done(&ctx.report);
        }
        match res {
            Ok(w) => (i, ctx.report, w),
            Err(e) => {
                (self.record)(e);
                (i, ctx.report, None)
            }
        }
    }
}

/// Every output put in place, in plan order.
fn commit_all(plan: &Plan, finished: Vec<Finished>) -> Result<Vec<PathBuf>, RunError> {
    let mut paths = Vec::new();
    for (i, _, w) in finished {
        if let Some(w) = w {
            paths.extend(w.commit().map_err(|e| RunError::Stage {
                stage: plan.stages[i].name.clone(),
                chunk: None,
                msg: format!("cannot commit the output: {e}"),
            })?);
        }
    }
    Ok(paths)
}

/// Parses `BLOCKFLOW_FAULT=panic:STAGE:N` for `stage`.
fn fault_for(stage: &str) -> Option<u64> {
    let v = std::env::var("BLOCKFLOW_FAULT").ok()?;
    let mut parts = v.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("panic"), Some(s), Some(n)) if s == stage => n.parse().ok(),
        _ => None,
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Runs a stage by its execution shape.
fn run_stage(
    ctx: &mut Ctx<'_>,
    resource: Resource,
    inputs: &[In],
    outs: &[Out],
) -> Result<Option<Output>, RunError> {
    match (ctx.stage.kind.exec(), resource) {
        (Exec::Source(_), Resource::Source(src)) => {
            shapes::run_source(ctx, outs, &*src).map(|()| None)
        }
        (Exec::Map(k), _) => shapes::run_map(ctx, inputs, outs, k).map(|()| None),
        (Exec::Window(w), _) => {
            window::overlap(ctx, &inputs[0], outs, &w.drop, &w.regrid).map(|()| None)
        }
        (Exec::Barrier(b), _) => shapes::run_barrier(ctx, inputs, outs, b).map(|()| None),
        (Exec::Sink(_), Resource::Sink(sink)) => shapes::run_sink(ctx, inputs, sink),
        _ => Err(ctx.err(None, "internal: stage built without its store")),
    }
}

/// A scratch store's path for this stage, unique to the run.
fn scratch_path(ctx: &Ctx<'_>, dir: &std::path::Path) -> PathBuf {
    dir.join(format!(
        ".blockflow-{}-{}.zarr",
        ctx.stage.name.replace(['/', '\\'], "_"),
        std::process::id()
    ))
}

/// One batch of a source's chunks (flat indices `batch` of `grid`), made
/// in parallel: each chunk with the seconds it took, or its index and error.
#[allow(clippy::type_complexity)]
fn make_batch<F>(
    ctx: &Ctx<'_>,
    grid: &ChunkGrid,
    batch: &[u64],
    make: F,
) -> Vec<Result<(Chunk, f64), (Vec<u64>, String)>>
where
    F: Fn(&blockflow_core::Region, &[u64]) -> Result<ArrayData, String> + Sync,
{
    let (meter, fault) = (ctx.meter, ctx.fault);
    ctx.pool.install(|| {
        batch
            .par_iter()
            .map(|&k| {
                let t = Instant::now();
                Ctx::maybe_fault(fault, k);
                let index = grid.unravel(k);
                let region = grid.region(&index);
                match make(&region, &index) {
                    Ok(data) => Ok((
                        Chunk::new(index, region, data, meter),
                        t.elapsed().as_secs_f64(),
                    )),
                    Err(m) => Err((index, m)),
                }
            })
            .collect()
    })
}

/// Produces every chunk of the stage's grid in row-major order, `parallel` at a time.
fn source<F>(ctx: &mut Ctx<'_>, outs: &[Out], make: F) -> Result<(), RunError>
where
    F: Fn(&blockflow_core::Region, &[u64]) -> Result<ArrayData, String> + Sync,
{
    let grid = ctx.stage.grid.clone();
    let total = grid.num_chunks();
    let p = ctx.stage.parallel as u64;
    let mut n = 0;
    while n < total {
        ctx.check_cancel()?;
        let batch: Vec<u64> = (n..(n + p).min(total)).collect();
        let results = make_batch(ctx, &grid, &batch, &make);
        let results: Vec<Result<Chunk, (Vec<u64>, String)>> = results
            .into_iter()
            .map(|r| {
                r.map(|(c, secs)| {
                    ctx.report.busy_seconds += secs;
                    c
                })
            })
            .collect();
        let bytes: u64 = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(Chunk::nbytes)
            .sum();
        ctx.note_held(bytes);
        for r in results {
            let c = r.map_err(|(i, m)| ctx.err(Some(&i), m))?;
            ctx.send(outs, c)?;
        }
        n += batch.len() as u64;
    }
    ctx.end(outs);
    Ok(())
}
