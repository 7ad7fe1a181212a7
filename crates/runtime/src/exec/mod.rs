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

use blockflow_core::{
    with_array, with_dtype, ArrayData, ArrayKind, Chunk, ChunkGrid, DType, Element, Meter, Msg,
    Region,
};
use blockflow_io::blocks::{BlockStat, BlocksWriter};
use blockflow_io::json::JsonWriter;
use blockflow_io::preview::PreviewWriter;
use blockflow_io::stored_chunks::{stream_is_finer, StoredChunks};
use blockflow_io::synthetic;
use blockflow_io::zarr::{ZarrReader, ZarrWriteOptions, ZarrWriter};
use blockflow_kernels::{filters, reduce, tensor};
use crossbeam_channel::{bounded, Receiver, Sender};
use rayon::prelude::*;

use crate::plan::{Plan, PlannedStage, RechunkRoute, StageKind};
use crate::stages::{BuildCx, ChunkSink, ChunkSource, Exec};

mod shapes;
use crate::report::{peak_rss_bytes, Report, StageReport};
use blockflow_io::output::{Claim, Made};
pub(crate) use shapes::check_shape;
pub use shapes::StageIo;

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
    fn start(&self, total_chunks: u64);
    fn advance(&self, chunks: u64, bytes: u64);
    fn finish(&self);
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
}

enum Resource {
    None,
    Hdf5(blockflow_io::hdf5::Hdf5Reader),
    Hdf5Writer(blockflow_io::hdf5::Hdf5Writer),
    Reader(ZarrReader),
    Writer(ZarrWriter),
    Blocks(BlocksWriter),
    Png(PreviewWriter),
    Json(JsonWriter),
    Csv(Claim),
    Source(Box<dyn ChunkSource>),
    Sink(Box<dyn ChunkSink>),
}

/// A finished writer's result, committed when every stage succeeded.
enum Output {
    Csv(Claim, String),
    Hdf5(blockflow_io::hdf5::Hdf5Writer),
    Zarr(Box<ZarrWriter>),
    Blocks(BlocksWriter),
    Png(PreviewWriter),
    Json(JsonWriter),
    Sink(Box<dyn ChunkSink>),
}

impl Output {
    fn commit(self) -> Result<Vec<PathBuf>, blockflow_io::IoError> {
        match self {
            Output::Zarr(w) => w.finish().map(|p| vec![p]),
            Output::Blocks(b) => b.finish(),
            Output::Png(p) => p.finish().map(|p| vec![p]),
            Output::Json(j) => j.finish().map(|p| vec![p]),
            Output::Hdf5(w) => w.finish().map(|p| vec![p]),
            Output::Sink(s) => s.commit(),
            Output::Csv(claim, text) => claim
                .commit_bytes(text.as_bytes())
                .map(|_| vec![claim.path().to_path_buf()]),
        }
    }
}

struct Ctx<'a> {
    stage: &'a PlannedStage,
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
    report.peak_buffered_bytes = meter.peak();
    report.peak_rss_bytes = peak_rss_bytes();
    report.ok = result.is_ok();
    report.error = result.as_ref().err().map(|e| e.to_string());
    if let Some(p) = &opts.progress {
        p.finish();
    }
    (report, result)
}

fn build(plan: &Plan) -> Result<Vec<Resource>, RunError> {
    plan.stages
        .iter()
        .map(|st| {
            let fail = |e: blockflow_io::IoError| RunError::Build {
                stage: st.name.clone(),
                msg: e.to_string(),
            };
            Ok(match &st.kind {
                StageKind::Unit(op) => {
                    let inputs: Vec<Option<blockflow_core::ArraySpec>> = st
                        .inputs
                        .iter()
                        .map(|&j| plan.stages[j].output.clone())
                        .collect();
                    let cx = BuildCx {
                        stage: st,
                        inputs: &inputs,
                    };
                    match op.exec() {
                        Exec::Source(s) => Resource::Source(s.open(&cx).map_err(fail)?),
                        Exec::Sink(s) => Resource::Sink(s.open(&cx).map_err(fail)?),
                        _ => Resource::None,
                    }
                }
                StageKind::ReadZarr { path, info } => {
                    let r = ZarrReader::open(path).map_err(fail)?;
                    if r.info.shape != info.shape || r.info.dtype != info.dtype {
                        return Err(RunError::Build {
                            stage: st.name.clone(),
                            msg: format!("{} changed since it was planned", path.display()),
                        });
                    }
                    Resource::Reader(r)
                }
                StageKind::WriteZarr { options, path } => {
                    Resource::Writer(ZarrWriter::create(path, options).map_err(fail)?)
                }
                StageKind::WriteBlocks {
                    path,
                    csv,
                    threshold,
                    overwrite,
                } => Resource::Blocks(
                    BlocksWriter::create(
                        path,
                        csv.as_deref(),
                        *overwrite,
                        *threshold,
                        st.grid.shape().to_vec(),
                        st.grid.chunk_shape().to_vec(),
                    )
                    .map_err(fail)?,
                ),
                StageKind::WritePng { path, options } => Resource::Png(
                    PreviewWriter::create(path, st.grid.shape(), options.clone()).map_err(fail)?,
                ),
                StageKind::WriteJson { path, overwrite } => {
                    Resource::Json(JsonWriter::create(path, *overwrite).map_err(fail)?)
                }
                StageKind::ReadHdf5 { path, dataset } => Resource::Hdf5(
                    blockflow_io::hdf5::Hdf5Reader::open(path, dataset).map_err(fail)?,
                ),
                StageKind::WriteHdf5 {
                    path,
                    dataset,
                    chunks,
                    overwrite,
                } => {
                    let spec = plan
                        .stages
                        .get(st.inputs[0])
                        .and_then(|i| i.output.clone())
                        .ok_or_else(|| RunError::Build {
                            stage: st.name.clone(),
                            msg: "internal: no input".into(),
                        })?;
                    Resource::Hdf5Writer(
                        blockflow_io::hdf5::Hdf5Writer::create(
                            path,
                            dataset,
                            spec.dtype,
                            spec.shape(),
                            chunks,
                            *overwrite,
                        )
                        .map_err(fail)?,
                    )
                }
                StageKind::WriteCsv { path, overwrite } => {
                    Resource::Csv(Claim::take(path, Made::Csv, *overwrite).map_err(fail)?)
                }
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
    let mut resources = build(plan)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(plan.threads)
        .thread_name(|i| format!("blockflow-compute-{i}"))
        .build()
        .map_err(|e| RunError::Build {
            stage: "pipeline".into(),
            msg: format!("cannot start {} compute threads: {e}", plan.threads),
        })?;
    // Channels: one per (producer, consumer) pair.
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
            });
        }
    }
    let total: u64 = plan
        .stages
        .iter()
        .filter(|s| s.is_sink())
        .map(|s| s.chunks())
        .sum();
    if let Some(p) = &opts.progress {
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
    let mut finished: Vec<(usize, StageReport, Option<Output>)> = Vec::new();
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (i, ((stage, out), input)) in plan
            .stages
            .iter()
            .zip(outs.drain(..))
            .zip(ins.drain(..))
            .enumerate()
        {
            let resource = std::mem::replace(&mut resources[i], Resource::None);
            let pool = &pool;
            let progress = opts.progress.as_deref();
            let cancel = &*opts.cancel;
            let record = &record;
            let h = std::thread::Builder::new()
                .name(format!("stage-{}", stage.name))
                .spawn_scoped(scope, move || {
                    let mut ctx = Ctx {
                        stage,
                        pool,
                        meter,
                        cancel,
                        progress,
                        report: StageReport::new(stage),
                        held_peak: 0,
                        fault: fault_for(&stage.name),
                        expected_in: stage
                            .inputs
                            .first()
                            .map_or(stage.chunks(), |&j| plan.stages[j].chunks()),
                    };
                    let res = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        run_stage(&mut ctx, resource, &input, &out)
                    }));
                    let res = match res {
                        Ok(r) => r,
                        Err(payload) => {
                            Err(ctx.err(None, format!("panicked: {}", panic_message(&payload))))
                        }
                    };
                    // Dropping the channel ends here wakes the neighbours.
                    drop(input);
                    drop(out);
                    ctx.report.peak_buffered_bytes = ctx.held_peak;
                    match res {
                        Ok(w) => (i, ctx.report, w),
                        Err(e) => {
                            record(e);
                            (i, ctx.report, None)
                        }
                    }
                });
            match h {
                Ok(h) => handles.push(h),
                Err(e) => record(RunError::Build {
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

fn run_stage(
    ctx: &mut Ctx<'_>,
    resource: Resource,
    inputs: &[In],
    outs: &[Out],
) -> Result<Option<Output>, RunError> {
    let stage = ctx.stage;
    match (&stage.kind, resource) {
        (StageKind::Unit(op), resource) => match (op.exec(), resource) {
            (Exec::Source(_), Resource::Source(src)) => {
                shapes::run_source(ctx, outs, &*src).map(|()| None)
            }
            (Exec::Map(k), _) => shapes::run_map(ctx, inputs, outs, k).map(|()| None),
            (Exec::Window(w), _) => {
                overlap(ctx, &inputs[0], outs, &w.drop, &w.regrid).map(|()| None)
            }
            (Exec::Barrier(b), _) => shapes::run_barrier(ctx, inputs, outs, b).map(|()| None),
            (Exec::Sink(_), Resource::Sink(sink)) => shapes::run_sink(ctx, inputs, sink),
            _ => Err(ctx.err(None, "internal: stage built without its store")),
        },
        (StageKind::Synthetic { pattern, seed }, _) => {
            let spec = stage.output.as_ref().expect("a source has an output");
            let (pattern, seed, dtype) = (*pattern, *seed, spec.dtype);
            let shape = spec.shape().to_vec();
            source(ctx, outs, |region, _| {
                Ok(synthetic::generate(pattern, seed, &shape, dtype, region))
            })?;
            Ok(None)
        }
        (StageKind::Median { filter, .. }, _) => {
            let shape: Vec<usize> = ctx.stage.grid.shape().iter().map(|&n| n as usize).collect();
            kernel_loop(ctx, inputs, outs, |set, _, _| {
                let c = &set[0];
                let geom = block_geometry(c, &shape);
                with_array!(c.array(), a => filter
                    .filter_block(a.view(), &geom)
                    .map(ArrayKind::wrap)
                    .map_err(|e| e.to_string()))
            })?;
            Ok(None)
        }
        (StageKind::Register { upsample }, _) => {
            // Frames arrive in order: the first is the reference; its
            // spectrum is computed once, then up to `parallel` frames are
            // registered against it at once.
            use rayon::prelude::*;
            let grid = ctx.stage.grid.clone();
            let up = *upsample;
            let mut registrar: Option<blockflow_kernels::register::Registrar> = None;
            let mut received = 0;
            loop {
                // Blocks for one frame, takes up to `parallel` that wait.
                let (sets, ended) = ctx.recv_batch(inputs, &mut received)?;
                let batch: Vec<Chunk> = sets
                    .into_iter()
                    .filter_map(|s| s.into_iter().next())
                    .collect();
                if batch.is_empty() {
                    if ended {
                        break;
                    }
                    continue;
                }
                ctx.check_cancel()?;
                let t = Instant::now();
                let mut shifts: Vec<Result<Vec<f64>, _>> = Vec::with_capacity(batch.len());
                let first = if registrar.is_none() {
                    let r = blockflow_kernels::register::Registrar::of_timepoint(batch[0].array())
                        .map_err(|e| ctx.err(Some(&batch[0].index), e.to_string()))?;
                    shifts.push(Ok(vec![0.0; r.shape().len()]));
                    registrar = Some(r);
                    1
                } else {
                    0
                };
                if let Some(r) = &registrar {
                    shifts.extend(ctx.pool.install(|| {
                        batch[first..]
                            .par_iter()
                            .map(|c| r.register_timepoint(c.array(), up))
                            .collect::<Vec<_>>()
                    }));
                }
                ctx.report.busy_seconds += t.elapsed().as_secs_f64();
                if let Some(r) = &registrar {
                    let (reference, working) = blockflow_kernels::register::Registrar::memory(
                        r.shape(),
                        r.precision_bytes(),
                        batch.len(),
                    );
                    let frames: u64 = batch.iter().map(|c| c.nbytes()).sum();
                    ctx.note_held(reference as u64 + working as u64 + frames);
                }
                for (c, shift) in batch.iter().zip(shifts) {
                    let shift = shift.map_err(|e| ctx.err(Some(&c.index), e.to_string()))?;
                    let idx = vec![c.index[0], 0];
                    let n = shift.len();
                    let data = ArrayData::F64(
                        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[1, n]), shift)
                            .map_err(|e| ctx.err(Some(&c.index), e.to_string()))?,
                    );
                    ctx.send(
                        outs,
                        Chunk::new(idx.clone(), grid.region(&idx), data, ctx.meter),
                    )?;
                }
                if ended {
                    break;
                }
            }
            ctx.end(outs);
            Ok(None)
        }
        (
            StageKind::Shift {
                order,
                mode,
                cval,
                prefilter,
            },
            _,
        ) => {
            let buffers = blockflow_kernels::shift::ShiftBuffers::default();
            let (order, mode, cval, prefilter) = (*order, *mode, *cval, *prefilter);
            kernel_loop(ctx, inputs, outs, |set, _, _| {
                let v: Vec<f64> = set[1].array().to_f64().iter().copied().collect();
                blockflow_kernels::shift::shift_timepoint(
                    set[0].array(),
                    &v,
                    order,
                    mode,
                    cval,
                    prefilter,
                    &buffers,
                )
                .map_err(|e| e.to_string())
            })?;
            Ok(None)
        }
        (StageKind::Zscore { axis, ddof }, _) => {
            let (axis, ddof) = (*axis, *ddof);
            kernel_loop(ctx, inputs, outs, |set, _, _| {
                with_array!(set[0].array(), a => blockflow_kernels::zscore::zscore(a.view(), axis, ddof)
                    .map(ArrayData::F64)
                    .map_err(|e| e.to_string()))
            })?;
            Ok(None)
        }
        (StageKind::ReadHdf5 { .. }, Resource::Hdf5(r)) => {
            source(ctx, outs, |region, _| {
                r.read(region).map_err(|e| e.to_string())
            })?;
            Ok(None)
        }
        (StageKind::ReadHdf5Stack { stack }, _) => {
            source(ctx, outs, |region, _| {
                stack.read(region).map_err(|e| e.to_string())
            })?;
            Ok(None)
        }
        (StageKind::WriteHdf5 { .. }, Resource::Hdf5Writer(w)) => {
            let progress = ctx.progress;
            consume_parallel(ctx, inputs, progress, |c| {
                w.write(&c.region, c.array()).map_err(|e| e.to_string())
            })?;
            Ok(Some(Output::Hdf5(w)))
        }
        (StageKind::ReadImages { files, image }, _) => {
            let dtype = stage.output.as_ref().map_or(DType::U8, |o| o.dtype);
            source(ctx, outs, |region, _| {
                blockflow_io::images::read_stack(files, image, dtype, region)
                    .map_err(|e| e.to_string())
            })?;
            Ok(None)
        }
        (
            StageKind::Rescale {
                in_range,
                out_range,
            },
            _,
        ) => {
            kernel_loop(ctx, inputs, outs, |set, _, _| {
                blockflow_kernels::rescale::rescale_each(set[0].array(), in_range, out_range)
                    .map_err(|e| e.to_string())
            })?;
            Ok(None)
        }
        (
            StageKind::Pca {
                k,
                values,
                dir,
                input,
            },
            _,
        ) => {
            pca(ctx, &inputs[0], outs, *k, *values, dir, input)?;
            Ok(None)
        }
        (
            StageKind::Slice {
                src,
                map,
                drop,
                inner,
                ..
            },
            _,
        ) => {
            let regrid = crate::plan::Regrid {
                src: src.clone(),
                dst: inner.clone(),
                halo: vec![(0, 0); inner.ndim()],
                map: map.clone(),
            };
            overlap(ctx, &inputs[0], outs, drop, &regrid)?;
            Ok(None)
        }
        (
            StageKind::Join {
                axis,
                new_axis,
                grids,
                dir,
            },
            _,
        ) => {
            join(ctx, inputs, outs, grids, *axis, *new_axis, dir)?;
            Ok(None)
        }
        (StageKind::Transpose { perm, src, dir }, _) => {
            transpose(ctx, inputs, outs, perm, src, dir)?;
            Ok(None)
        }
        (StageKind::Take { src, dir }, _) => {
            take(ctx, inputs, outs, src, dir)?;
            Ok(None)
        }
        (StageKind::Diff { axis }, _) => {
            let axis = *axis;
            kernel_loop(ctx, inputs, outs, |set, _, _| {
                Ok(blockflow_kernels::ops::diff(set[0].array(), axis))
            })?;
            Ok(None)
        }
        (StageKind::Matmul { a, dir, .. }, _) => {
            let spec = stage.output.clone().expect("matmul sends");
            // Bands of `a` wait in a scratch store while `b` arrives whole.
            let kept = keep(ctx, inputs, &[Some(a), None], dir)?;
            let b = gather(&kept.chunks[1])
                .map_err(|m| ctx.err(None, format!("input \"{}\": {m}", inputs[1].from)))?;
            let reader = kept_reader(ctx, &kept, 0)?;
            let grid = spec.grid.clone();
            for idx in a.indices() {
                ctx.check_cancel()?;
                let region = a.region(&idx);
                let band = reader
                    .read(&region, &idx)
                    .map_err(|e| ctx.err(Some(&idx), format!("reading the band back: {e}")))?;
                let oidx: Vec<u64> = (0..grid.ndim())
                    .map(|k| if k == 0 && a.ndim() == 2 { idx[0] } else { 0 })
                    .collect();
                let oregion = grid.region(&oidx);
                let shape = oregion.shape_usize();
                let t = Instant::now();
                let c = ctx
                    .pool
                    .install(|| blockflow_kernels::ops::matmul(&band, &b, spec.dtype, &shape))
                    .map_err(|e| ctx.err(Some(&idx), e.to_string()))?;
                ctx.report.busy_seconds += t.elapsed().as_secs_f64();
                ctx.note_held(b.nbytes() + 2 * band.nbytes() + 2 * c.nbytes());
                ctx.send(outs, Chunk::new(oidx, oregion, c, ctx.meter))?;
            }
            ctx.end(outs);
            drop(kept);
            Ok(None)
        }
        (StageKind::WriteCsv { path, .. }, Resource::Csv(claim)) => {
            let parts = drain_all(ctx, inputs)?;
            let mut names = Vec::new();
            let mut arrays = Vec::new();
            for (input, chunks) in inputs.iter().zip(&parts) {
                arrays.push(
                    gather(chunks)
                        .map_err(|m| ctx.err(None, format!("input \"{}\": {m}", input.from)))?,
                );
                names.push(input.from.clone());
            }
            let text = blockflow_io::table::csv_table(path, &names, &arrays)
                .map_err(|e| ctx.err(None, e.to_string()))?;
            Ok(Some(Output::Csv(claim, text)))
        }
        (StageKind::ReadZarr { info, .. }, Resource::Reader(r)) => {
            let stream = stage.grid.chunk_shape();
            let result = if stream_is_finer(&info.shape, &info.chunks, stream) {
                source_regrid(ctx, outs, &r)
            } else {
                source(ctx, outs, |region, index| {
                    r.read(region, index).map_err(|e| e.to_string())
                })
            };
            ctx.report.stored_chunks_decoded = Some(r.stored_chunks_decoded());
            result?;
            Ok(None)
        }
        (StageKind::Expr { expr, .. }, _) => {
            if let Some(i) = expr.identity_of() {
                // `expr = "x"`: forward the chunks, sharing their buffers.
                let grid = stage.grid.clone();
                let mut received = 0;
                let mut pos = 0u64;
                loop {
                    ctx.check_cancel()?;
                    let (batch, ended) = ctx.recv_batch(inputs, &mut received)?;
                    for set in batch {
                        let mut c = set[i].clone();
                        c.index = grid.unravel(pos);
                        c.region = grid.region(&c.index);
                        pos += 1;
                        ctx.send(outs, c)?;
                    }
                    if ended {
                        ctx.end(outs);
                        return Ok(None);
                    }
                }
            }
            kernel_loop(ctx, inputs, outs, |set, _, _| {
                let arrays: Vec<&ArrayData> = set.iter().map(|c| c.array()).collect();
                expr.eval(&arrays).map_err(|e| e.to_string())
            })?;
            Ok(None)
        }
        (StageKind::Filter { passes, .. }, _) => {
            let shape: Vec<usize> = ctx.stage.grid.shape().iter().map(|&n| n as usize).collect();
            kernel_loop(ctx, inputs, outs, |set, _, _| {
                let c = &set[0];
                let geom = block_geometry(c, &shape);
                let dtype = c.array().dtype();
                let (block, bshape) = with_array!(c.array(), a => filters::as_f64(a.view()));
                let (core, cshape) =
                    filters::run_passes(block, &bshape, &geom, passes, dtype == DType::F32)?;
                Ok(with_dtype!(dtype, T => T::wrap(
                    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&cshape), core.into_iter().map(T::from_f64).collect())
                        .map_err(|e| e.to_string())?
                )))
            })?;
            Ok(None)
        }
        (StageKind::StructureTensor { params, output }, _) => {
            let input_shape: Vec<usize> = {
                let g = &ctx.stage.grid;
                let mut s: Vec<usize> = g.shape().iter().map(|&n| n as usize).collect();
                s.push(0);
                s
            };
            kernel_loop(ctx, inputs, outs, |set, _, _| {
                let c = &set[0];
                let mut array = input_shape.clone();
                array[2] = c.array().shape()[2];
                let geom = block_geometry(c, &array);
                let (block, bshape) = with_array!(c.array(), a => filters::as_f64(a.view()));
                let (s, core) = tensor::structure_tensor_block(&block, &bshape, &geom, params)?;
                let (dims, values) = if output == "features" {
                    (
                        core[..2].to_vec(),
                        tensor::features(&s, core[0], core[1], core[2]),
                    )
                } else {
                    let (e, a) = tensor::energy_anisotropy(&s);
                    (core.clone(), if output == "energy" { e } else { a })
                };
                Ok(ArrayData::F64(
                    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&dims), values)
                        .map_err(|e| e.to_string())?,
                ))
            })?;
            Ok(None)
        }
        (StageKind::WriteBlocks { .. }, Resource::Blocks(mut w)) => {
            let mut received = 0;
            let thr = w.threshold();
            loop {
                ctx.check_cancel()?;
                let (batch, ended) = ctx.recv_batch(inputs, &mut received)?;
                let t = Instant::now();
                let stats: Vec<(u64, f64, f64)> = ctx.pool.install(|| {
                    batch
                        .par_iter()
                        .map(|set| {
                            let t = Instant::now();
                            let (n, m) = reduce::count_above(set[0].array(), thr);
                            (n, m, t.elapsed().as_secs_f64())
                        })
                        .collect()
                });
                ctx.report.wall_seconds += t.elapsed().as_secs_f64();
                for (set, (above, max, secs)) in batch.iter().zip(stats) {
                    ctx.report.busy_seconds += secs;
                    w.push(BlockStat {
                        index: set[0].index.clone(),
                        above,
                        max,
                    });
                }
                if let Some(p) = ctx.progress {
                    p.advance(
                        batch.len() as u64,
                        batch.iter().map(|s| s[0].nbytes()).sum(),
                    );
                }
                if ended {
                    return Ok(Some(Output::Blocks(w)));
                }
            }
        }
        (StageKind::WritePng { .. }, Resource::Png(mut w)) => {
            let mut received = 0;
            loop {
                ctx.check_cancel()?;
                let (batch, ended) = ctx.recv_batch(inputs, &mut received)?;
                let t = Instant::now();
                for set in &batch {
                    w.add(&set[0].region, set[0].array());
                }
                ctx.report.busy_seconds += t.elapsed().as_secs_f64();
                let held: u64 = batch.iter().map(|s| s[0].nbytes()).sum();
                ctx.note_held(held + w.held_bytes());
                if let Some(p) = ctx.progress {
                    p.advance(batch.len() as u64, held);
                }
                if ended {
                    return Ok(Some(Output::Png(w)));
                }
            }
        }
        (
            StageKind::Reduce {
                op,
                ddof,
                input,
                axes: Some(axes),
                ..
            },
            _,
        ) => {
            let mut acc = reduce::AxisReducer::new(*op, input.shape(), axes);
            loop {
                ctx.check_cancel()?;
                match ctx.recv(&inputs[0])? {
                    Some(c) => {
                        let t = Instant::now();
                        ctx.note_held(c.nbytes());
                        acc.add(c.array(), &c.region.origin);
                        let secs = t.elapsed().as_secs_f64();
                        ctx.report.busy_seconds += secs;
                        ctx.report.wall_seconds += secs;
                    }
                    None => break,
                }
            }
            let values = acc.finish(*ddof);
            let out = ctx.stage.output.clone().expect("reduce sends");
            let dims: Vec<usize> = out.shape().iter().map(|&n| n as usize).collect();
            let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&dims), values)
                .map_err(|e| ctx.err(None, e.to_string()))?;
            let data = ArrayData::F64(a).cast(out.dtype);
            let index = vec![0; dims.len()];
            let region = out.grid.region(&index);
            ctx.send(outs, Chunk::new(index, region, data, ctx.meter))?;
            ctx.end(outs);
            Ok(None)
        }
        (
            StageKind::Reduce {
                op,
                per_block,
                ddof,
                input,
                ..
            },
            _,
        ) => {
            let (op, per_block, ddof) = (*op, *per_block, *ddof);
            let shape = input.shape().to_vec();
            let mut total = reduce::Partial::default();
            let mut values = vec![
                0.0f64;
                if per_block {
                    input.num_chunks() as usize
                } else {
                    0
                }
            ];
            let mut received = 0;
            loop {
                ctx.check_cancel()?;
                let (batch, ended) = ctx.recv_batch(inputs, &mut received)?;
                let t = Instant::now();
                let parts: Vec<(reduce::Partial, f64)> = ctx.pool.install(|| {
                    batch
                        .par_iter()
                        .map(|set| {
                            let t = Instant::now();
                            let c = &set[0];
                            (
                                reduce::partial_of_chunk_op(
                                    c.array(),
                                    &c.region.origin,
                                    &shape,
                                    op,
                                ),
                                t.elapsed().as_secs_f64(),
                            )
                        })
                        .collect()
                });
                ctx.report.wall_seconds += t.elapsed().as_secs_f64();
                for (set, (p, secs)) in batch.iter().zip(parts) {
                    ctx.report.busy_seconds += secs;
                    if per_block {
                        values[input.ravel(&set[0].index) as usize] = p.finish(op, ddof);
                    } else {
                        total = total.merge(&p);
                    }
                }
                if ended {
                    if !per_block {
                        values = vec![total.finish(op, ddof)];
                    }
                    let out = ctx.stage.output.clone().expect("reduce sends");
                    let dims: Vec<usize> = out.shape().iter().map(|&n| n as usize).collect();
                    let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&dims), values)
                        .map_err(|e| ctx.err(None, e.to_string()))?;
                    let data = ArrayData::F64(a).cast(out.dtype);
                    let index = vec![0; dims.len()];
                    let region = out.grid.region(&index);
                    let chunk = Chunk::new(index, region, data, ctx.meter);
                    ctx.send(outs, chunk)?;
                    ctx.end(outs);
                    return Ok(None);
                }
            }
        }
        (StageKind::WriteJson { .. }, Resource::Json(mut w)) => {
            let parts = drain_all(ctx, inputs)?;
            for (input, chunks) in inputs.iter().zip(&parts) {
                let whole = gather(chunks)
                    .map_err(|m| ctx.err(None, format!("input \"{}\": {m}", input.from)))?;
                w.set(&input.from, &whole);
            }
            Ok(Some(Output::Json(w)))
        }
        (
            StageKind::Rechunk {
                route:
                    RechunkRoute::Disk {
                        inter, group, dir, ..
                    },
                ..
            },
            _,
        ) => {
            rechunk_through_disk(ctx, &inputs[0], outs, inter, group, dir)?;
            Ok(None)
        }
        (StageKind::Rechunk { src, .. }, _) => {
            let regrid = crate::plan::Regrid::new(
                src.clone(),
                ctx.stage.grid.clone(),
                vec![(0, 0); src.ndim()],
            );
            overlap(ctx, &inputs[0], outs, &[], &regrid)?;
            Ok(None)
        }
        (StageKind::Overlap { halo, .. }, _) => {
            let g = ctx.stage.grid.clone();
            overlap(
                ctx,
                &inputs[0],
                outs,
                &[],
                &crate::plan::Regrid::new(g.clone(), g, halo.clone()),
            )?;
            Ok(None)
        }
        (StageKind::WriteZarr { .. }, Resource::Writer(w)) => {
            let progress = ctx.progress;
            consume_parallel(ctx, inputs, progress, |c| {
                w.write(&c.region, c.array(), &c.index)
                    .map_err(|e| e.to_string())
            })?;
            Ok(Some(Output::Zarr(Box::new(w))))
        }
        (_, _) => Err(ctx.err(None, "internal: stage built without its store")),
    }
}

/// Every chunk of every input, drained in whatever order they send, so no
/// input waits on another (for writers of small results).
fn drain_all(ctx: &mut Ctx<'_>, inputs: &[In]) -> Result<Vec<Vec<Chunk>>, RunError> {
    let mut parts: Vec<Vec<Chunk>> = vec![Vec::new(); inputs.len()];
    drain_each(ctx, inputs, |_, i, c| {
        parts[i].push(c);
        Ok(())
    })?;
    Ok(parts)
}

/// Hands every chunk of every input to `f` (with the input's position) as
/// it arrives, from whichever input sends, until all have ended.
fn drain_each<F>(ctx: &mut Ctx<'_>, inputs: &[In], mut f: F) -> Result<(), RunError>
where
    F: FnMut(&mut Ctx<'_>, usize, Chunk) -> Result<(), RunError>,
{
    let mut sel = crossbeam_channel::Select::new();
    for input in inputs {
        sel.recv(&input.rx);
    }
    let mut open = inputs.len();
    while open > 0 {
        ctx.check_cancel()?;
        let t = Instant::now();
        let op = sel.select();
        ctx.report.blocked_recv_seconds += t.elapsed().as_secs_f64();
        let i = op.index();
        match op.recv(&inputs[i].rx) {
            Ok(Msg::Data(c)) => {
                inputs[i]
                    .stats
                    .queued
                    .fetch_sub(c.nbytes(), std::sync::atomic::Ordering::AcqRel);
                ctx.report.chunks_in += 1;
                ctx.report.bytes_in += c.nbytes();
                f(ctx, i, c)?;
            }
            Ok(Msg::End) => {
                sel.remove(i);
                open -= 1;
            }
            Err(_) => return Err(RunError::Aborted),
        }
    }
    Ok(())
}

/// A scratch store's path for this stage, unique to the run.
fn scratch_path(ctx: &Ctx<'_>, dir: &std::path::Path) -> PathBuf {
    dir.join(format!(
        ".blockflow-{}-{}.zarr",
        ctx.stage.name.replace(['/', '\\'], "_"),
        std::process::id()
    ))
}

/// An uncompressed scratch array (removed when dropped unfinished).
fn scratch_store(
    ctx: &Ctx<'_>,
    path: &std::path::Path,
    dtype: DType,
    grid: &ChunkGrid,
) -> Result<ZarrWriter, RunError> {
    let options = ZarrWriteOptions {
        zarr_format: 3,
        dtype,
        shape: grid.shape().to_vec(),
        chunks: grid.chunk_shape().to_vec(),
        codec: blockflow_io::zarr::Codec::None,
        level: 0,
        overwrite: true,
        attributes: Default::default(),
    };
    ZarrWriter::in_place(path, &options).map_err(|e| ctx.err(None, e.to_string()))
}

/// What [`keep`] kept: a reader and its store (dropping the store removes
/// it) for each input kept on disk, the chunks of each input kept in memory.
struct Kept {
    readers: Vec<Option<ZarrReader>>,
    stores: Vec<ZarrWriter>,
    chunks: Vec<Vec<Chunk>>,
}

/// Drains every input: the chunks of an input with a grid go into a scratch
/// store of their own (that grid), the others are kept in memory (small
/// inputs: an index, a matrix held whole). Returns once all have ended.
fn keep(
    ctx: &mut Ctx<'_>,
    inputs: &[In],
    grids: &[Option<&ChunkGrid>],
    dir: &std::path::Path,
) -> Result<Kept, RunError> {
    let base = scratch_path(ctx, dir);
    let paths: Vec<PathBuf> = (0..inputs.len())
        .map(|i| PathBuf::from(format!("{}-{i}", base.display())))
        .collect();
    let mut stores: Vec<Option<ZarrWriter>> = (0..inputs.len()).map(|_| None).collect();
    let mut chunks: Vec<Vec<Chunk>> = vec![Vec::new(); inputs.len()];
    drain_each(ctx, inputs, |ctx, i, c| {
        let Some(grid) = grids[i] else {
            chunks[i].push(c);
            return Ok(());
        };
        if stores[i].is_none() {
            stores[i] = Some(scratch_store(ctx, &paths[i], c.array().dtype(), grid)?);
        }
        if let Some(w) = &stores[i] {
            let t = Instant::now();
            w.write(&c.region, c.array(), &c.index)
                .map_err(|e| ctx.err(Some(&c.index), format!("keeping the chunk: {e}")))?;
            ctx.report.busy_seconds += t.elapsed().as_secs_f64();
        }
        Ok(())
    })?;
    let mut kept = Kept {
        readers: Vec::new(),
        stores: Vec::new(),
        chunks,
    };
    for (i, (store, path)) in stores.into_iter().zip(&paths).enumerate() {
        if grids[i].is_none() {
            kept.readers.push(None);
            continue;
        }
        let store =
            store.ok_or_else(|| ctx.err(None, format!("\"{}\" sent no chunks", inputs[i].from)))?;
        kept.readers.push(Some(ZarrReader::open(path).map_err(|e| {
            ctx.err(None, format!("reading \"{}\" back: {e}", inputs[i].from))
        })?));
        kept.stores.push(store);
    }
    Ok(kept)
}

/// The reader of input `i` of what [`keep`] kept on disk.
fn kept_reader<'a>(ctx: &Ctx<'_>, kept: &'a Kept, i: usize) -> Result<&'a ZarrReader, RunError> {
    kept.readers[i]
        .as_ref()
        .ok_or_else(|| ctx.err(None, format!("internal: input {i} was not kept on disk")))
}

/// concatenate / stack: the inputs wait in scratch stores; then every
/// result chunk is read from the stores it spans, in row-major order.
fn join(
    ctx: &mut Ctx<'_>,
    inputs: &[In],
    outs: &[Out],
    grids: &[ChunkGrid],
    axis: usize,
    new_axis: bool,
    dir: &std::path::Path,
) -> Result<(), RunError> {
    let kept = keep(
        ctx,
        inputs,
        &grids.iter().map(Some).collect::<Vec<_>>(),
        dir,
    )?;
    let readers: Vec<&ZarrReader> = (0..inputs.len())
        .map(|i| kept_reader(ctx, &kept, i))
        .collect::<Result<_, _>>()?;
    let spec = ctx
        .stage
        .output
        .clone()
        .ok_or_else(|| ctx.err(None, "internal: no output"))?;
    let grid = ctx.stage.grid.clone();
    for idx in grid.indices() {
        ctx.check_cancel()?;
        let t = Instant::now();
        let region = grid.region(&idx);
        let data = if new_axis {
            let k = region.origin[axis] as usize;
            let mut sub = region.clone();
            sub.origin.remove(axis);
            sub.shape.remove(axis);
            let part = readers[k]
                .read(&sub, &idx)
                .map_err(|e| ctx.err(Some(&idx), e.to_string()))?
                .cast(spec.dtype);
            let shape = region.shape_usize();
            with_array!(part, a => a
                .into_shape_with_order(ndarray::IxDyn(&shape))
                .map(ArrayKind::wrap)
                .map_err(|e| ctx.err(Some(&idx), e.to_string()))?)
        } else {
            let (r0, r1) = (region.origin[axis], region.end()[axis]);
            let mut parts = Vec::new();
            let mut offset = 0;
            for (i, g) in grids.iter().enumerate() {
                let n = g.shape()[axis];
                let (a0, a1) = (r0.max(offset), r1.min(offset + n));
                if a0 < a1 {
                    let mut sub = region.clone();
                    sub.origin[axis] = a0 - offset;
                    sub.shape[axis] = a1 - a0;
                    parts.push(
                        readers[i]
                            .read(&sub, &idx)
                            .map_err(|e| ctx.err(Some(&idx), e.to_string()))?
                            .cast(spec.dtype),
                    );
                }
                offset += n;
            }
            with_dtype!(spec.dtype, T => {
                let views: Vec<ndarray::ArrayViewD<T>> = parts.iter().filter_map(|p| T::unwrap_ref(p).map(|a| a.view())).collect();
                ndarray::concatenate(ndarray::Axis(axis), &views)
                    .map(T::wrap)
                    .map_err(|e| ctx.err(Some(&idx), e.to_string()))?
            })
        };
        ctx.report.busy_seconds += t.elapsed().as_secs_f64();
        ctx.note_held(2 * data.nbytes());
        ctx.send(outs, Chunk::new(idx.clone(), region, data, ctx.meter))?;
    }
    ctx.end(outs);
    drop(kept);
    Ok(())
}

/// transpose: the input waits in a scratch store; each result chunk is the
/// permuted source region read back.
fn transpose(
    ctx: &mut Ctx<'_>,
    inputs: &[In],
    outs: &[Out],
    perm: &[usize],
    src: &ChunkGrid,
    dir: &std::path::Path,
) -> Result<(), RunError> {
    let kept = keep(ctx, inputs, &[Some(src)], dir)?;
    let reader = kept_reader(ctx, &kept, 0)?;
    let grid = ctx.stage.grid.clone();
    for idx in grid.indices() {
        ctx.check_cancel()?;
        let t = Instant::now();
        let region = grid.region(&idx);
        let mut sub = Region::new(vec![0; perm.len()], vec![0; perm.len()]);
        for (k, &p) in perm.iter().enumerate() {
            sub.origin[p] = region.origin[k];
            sub.shape[p] = region.shape[k];
        }
        let part = reader
            .read(&sub, &idx)
            .map_err(|e| ctx.err(Some(&idx), e.to_string()))?;
        let data = with_array!(part, a => ArrayKind::wrap(
            a.permuted_axes(ndarray::IxDyn(perm)).as_standard_layout().into_owned()
        ));
        ctx.report.busy_seconds += t.elapsed().as_secs_f64();
        ctx.note_held(2 * data.nbytes());
        ctx.send(outs, Chunk::new(idx.clone(), region, data, ctx.meter))?;
    }
    ctx.end(outs);
    drop(kept);
    Ok(())
}

/// The `take` stage: the first input's chunks wait in a scratch store
/// until the second input names the block to send.
fn take(
    ctx: &mut Ctx<'_>,
    inputs: &[In],
    outs: &[Out],
    src: &ChunkGrid,
    dir: &std::path::Path,
) -> Result<(), RunError> {
    let kept = keep(ctx, inputs, &[Some(src), None], dir)?;
    let index = kept.chunks[1]
        .first()
        .and_then(|c| c.array().to_f64().iter().next().copied());
    let n = src.num_chunks();
    let k = match index {
        Some(v) if v >= 0.0 && v < n as f64 && v.fract() == 0.0 => v as u64,
        Some(v) => {
            return Err(ctx.err(
                None,
                format!(
                    "block index {v} from \"{}\" is not one of the {n} blocks (0..{n})",
                    inputs[1].from
                ),
            ))
        }
        None => return Err(ctx.err(None, format!("\"{}\" sent no index", inputs[1].from))),
    };
    let block = src.unravel(k);
    let region = src.region(&block);
    if region.shape != src.chunk_shape() {
        return Err(ctx.err(
            Some(&block),
            format!(
                "block {block:?} is an edge block of shape {:?}, not a whole {:?} block",
                region.shape,
                src.chunk_shape()
            ),
        ));
    }
    let data = kept_reader(ctx, &kept, 0)?
        .read(&region, &block)
        .map_err(|e| ctx.err(Some(&block), format!("reading the block back: {e}")))?;
    let grid = ctx.stage.grid.clone();
    let index = vec![0; grid.ndim()];
    ctx.send(
        outs,
        Chunk::new(index.clone(), grid.region(&index), data, ctx.meter),
    )?;
    ctx.end(outs);
    drop(kept);
    Ok(())
}

/// Runs `f` on every chunk of the (first) input, `parallel` at a time, in
/// the stage's pool; advances `progress` by what was done.
fn consume_parallel<F>(
    ctx: &mut Ctx<'_>,
    inputs: &[In],
    progress: Option<&dyn Progress>,
    f: F,
) -> Result<(), RunError>
where
    F: Fn(&Chunk) -> Result<(), String> + Sync,
{
    let mut received = 0;
    loop {
        ctx.check_cancel()?;
        let (batch, ended) = ctx.recv_batch(inputs, &mut received)?;
        if !batch.is_empty() {
            let held: u64 = batch.iter().flatten().map(Chunk::nbytes).sum();
            ctx.note_held(held);
            let t = Instant::now();
            let (fault, first) = (ctx.fault, received - batch.len() as u64);
            let f = &f;
            let results: Vec<(Result<(), String>, f64)> = ctx.pool.install(|| {
                batch
                    .par_iter()
                    .enumerate()
                    .map(|(k, set)| {
                        let t = Instant::now();
                        Ctx::maybe_fault(fault, first + k as u64);
                        (f(&set[0]), t.elapsed().as_secs_f64())
                    })
                    .collect()
            });
            ctx.report.wall_seconds += t.elapsed().as_secs_f64();
            for ((r, secs), set) in results.into_iter().zip(&batch) {
                ctx.report.busy_seconds += secs;
                r.map_err(|m| ctx.err(Some(&set[0].index), m))?;
            }
            if let Some(p) = progress {
                p.advance(batch.len() as u64, held);
            }
        }
        if ended {
            return Ok(());
        }
    }
}

/// The rechunker's disk route (as rechunker and Cubed do it): every source
/// chunk is cut into the intermediate store's chunks as it arrives; when
/// the input has ended, each new chunk is read back whole from the store,
/// in row-major order. The store lives in `dir` under a name unique to the
/// run and is removed when the stage ends, however it ends.
fn rechunk_through_disk(
    ctx: &mut Ctx<'_>,
    input: &In,
    outs: &[Out],
    inter: &[u64],
    group: &[u64],
    dir: &std::path::Path,
) -> Result<(), RunError> {
    let spec = ctx
        .stage
        .output
        .clone()
        .ok_or_else(|| ctx.err(None, "internal: a rechunk without an output"))?;
    let path = scratch_path(ctx, dir);
    let inter_grid = ChunkGrid::new(spec.grid.shape().to_vec(), inter.to_vec())
        .map_err(|e| ctx.err(None, format!("internal: {e}")))?;
    // Dropped unfinished at the end of this function: that removes the store.
    let store = scratch_store(ctx, &path, spec.dtype, &inter_grid)?;
    consume_parallel(ctx, std::slice::from_ref(input), None, |c| {
        store
            .write(&c.region, c.array(), &c.index)
            .map_err(|e| format!("writing the intermediate store: {e}"))
    })?;
    tracing::debug!(stage = %ctx.stage.name, "rechunk: all chunks in the intermediate store");
    let reader = ZarrReader::open(&path)
        .map_err(|e| ctx.err(None, format!("reading the intermediate store back: {e}")))?;
    // Groups of consecutive new chunks: read each group whole, send its
    // chunks in row-major order.
    let grid = ctx.stage.grid.clone();
    let groups = ChunkGrid::new(grid.grid_shape(), group.to_vec())
        .map_err(|e| ctx.err(None, format!("internal: {e}")))?;
    for gi in groups.indices() {
        ctx.check_cancel()?;
        let members = groups.region(&gi);
        let first = grid.region(&members.origin);
        let last: Vec<u64> = members.end().iter().map(|e| e - 1).collect();
        let end = grid.region(&last).end();
        let whole = Region::new(
            first.origin.clone(),
            end.iter().zip(&first.origin).map(|(e, o)| e - o).collect(),
        );
        let t = Instant::now();
        let data = reader.read(&whole, &members.origin).map_err(|e| {
            ctx.err(
                Some(&members.origin),
                format!("reading the intermediate store back: {e}"),
            )
        })?;
        ctx.report.busy_seconds += t.elapsed().as_secs_f64();
        let held = data.nbytes();
        let sub = ChunkGrid::new(members.shape.clone(), vec![1; members.ndim()])
            .map_err(|e| ctx.err(None, format!("internal: {e}")))?;
        for local in sub.indices() {
            let index: Vec<u64> = local
                .iter()
                .zip(&members.origin)
                .map(|(l, o)| l + o)
                .collect();
            let region = grid.region(&index);
            let part = crop(&data, &whole, &region);
            ctx.note_held(held + part.nbytes());
            let chunk = Chunk::new(index, region, part, ctx.meter);
            ctx.send(outs, chunk)?;
        }
    }
    ctx.end(outs);
    tracing::debug!(stage = %ctx.stage.name, "rechunk: all new chunks sent");
    drop(store);
    Ok(())
}

/// The part of `data` (which covers `whole`) that `region` covers.
fn crop(data: &ArrayData, whole: &Region, region: &Region) -> ArrayData {
    let info: Vec<ndarray::SliceInfoElem> = (0..whole.ndim())
        .map(|ax| {
            let a = (region.origin[ax] - whole.origin[ax]) as isize;
            ndarray::SliceInfoElem::Slice {
                start: a,
                end: Some(a + region.shape[ax] as isize),
                step: 1,
            }
        })
        .collect();
    with_array!(data, a => {
        match ndarray::SliceInfo::<_, ndarray::IxDyn, ndarray::IxDyn>::try_from(info) {
            Ok(info) => ArrayKind::wrap(a.slice(info).to_owned()),
            Err(_) => data.clone(),
        }
    })
}

/// PCA by TSQR: each band (all N observations of some features) is stacked
/// under the R factor of the bands before it and factored again (the flat
/// TSQR: one N x N factor held, and fewer flops than a binary tree, whose
/// merges of two full R factors cost as much as the bands' own QRs here);
/// for the modes, the bands also go into a scratch store. The SVD of the
/// last R gives s and V; the modes u_i s_i of a band are the band times V's
/// first k columns, read back from the store band by band.
fn pca(
    ctx: &mut Ctx<'_>,
    input: &In,
    outs: &[Out],
    k: usize,
    values: bool,
    dir: &std::path::Path,
    grid_in: &ChunkGrid,
) -> Result<(), RunError> {
    let path = scratch_path(ctx, dir);
    // Created at the first band (its dtype); dropped unfinished at the end,
    // which removes it.
    let mut store: Option<ZarrWriter> = None;
    use blockflow_kernels::linalg;
    let mut r: Option<ndarray::Array2<f64>> = None;
    while let Some(c) = ctx.recv(input)? {
        ctx.check_cancel()?;
        let t = Instant::now();
        let block = blockflow_kernels::linalg::centred_features(c.array());
        let held = r.as_ref().map_or(0, |r| r.len() as u64 * 8);
        ctx.note_held(c.nbytes() + 2 * (block.len() as u64 * 8 + held) + held);
        let pool = ctx.pool;
        let next = pool
            .install(|| match r.take() {
                None => Ok(linalg::qr_r(block.view())),
                Some(prev) => linalg::stack_r(&prev, &block),
            })
            .map_err(|e| ctx.err(Some(&c.index), e.to_string()))?;
        r = Some(next);
        if !values && store.is_none() {
            store = Some(scratch_store(ctx, &path, c.array().dtype(), grid_in)?);
        }
        if let Some(w) = &store {
            w.write(&c.region, c.array(), &c.index).map_err(|e| {
                ctx.err(
                    Some(&c.index),
                    format!("keeping the band for the second pass: {e}"),
                )
            })?;
        }
        ctx.report.busy_seconds += t.elapsed().as_secs_f64();
    }
    let t = Instant::now();
    let pool = ctx.pool;
    let Some(r) = r else {
        return Err(ctx.err(None, "the input had no bands"));
    };
    let (s, v) = pool
        .install(|| linalg::svd_r(&r))
        .map_err(|e| ctx.err(None, e.to_string()))?;
    ctx.report.busy_seconds += t.elapsed().as_secs_f64();
    let grid = ctx.stage.grid.clone();
    if values {
        let a = ndarray::Array1::from_iter(s.iter().take(k).copied()).into_dyn();
        let index = vec![0];
        ctx.send(
            outs,
            Chunk::new(
                index.clone(),
                grid.region(&index),
                ArrayData::F64(a),
                ctx.meter,
            ),
        )?;
        ctx.end(outs);
        return Ok(());
    }
    let Some(store) = store else {
        return Err(ctx.err(None, "internal: no scratch store"));
    };
    let reader = ZarrReader::open(&path)
        .map_err(|e| ctx.err(None, format!("reading the bands back: {e}")))?;
    for idx in grid_in.indices() {
        ctx.check_cancel()?;
        let t = Instant::now();
        let region = grid_in.region(&idx);
        let data = reader
            .read(&region, &idx)
            .map_err(|e| ctx.err(Some(&idx), format!("reading the band back: {e}")))?;
        let block = blockflow_kernels::linalg::centred_features(&data);
        let p = pool
            .install(|| linalg::project(block.view(), &v, k))
            .map_err(|e| ctx.err(Some(&idx), e.to_string()))?;
        // (features, k) -> (k, band shape without axis 0)
        let mut shape = vec![k];
        shape.extend(region.shape[1..].iter().map(|&x| x as usize));
        let modes = p
            .t()
            .as_standard_layout()
            .to_owned()
            .into_shape_with_order(ndarray::IxDyn(&shape))
            .map_err(|e| ctx.err(Some(&idx), e.to_string()))?;
        let mut oidx = vec![0];
        oidx.extend(&idx[1..]);
        ctx.report.busy_seconds += t.elapsed().as_secs_f64();
        ctx.note_held(data.nbytes() + 2 * block.len() as u64 * 8 + 2 * modes.len() as u64 * 8);
        ctx.send(
            outs,
            Chunk::new(
                oidx.clone(),
                grid.region(&oidx),
                ArrayData::F64(modes),
                ctx.meter,
            ),
        )?;
    }
    ctx.end(outs);
    drop(store);
    Ok(())
}

/// Where a chunk with its halo lies in its array.
fn block_geometry(c: &Chunk, array: &[usize]) -> filters::Geometry {
    filters::Geometry {
        origin: c
            .region
            .origin
            .iter()
            .zip(&c.halo)
            .map(|(&o, &(b, _))| o as isize - b as isize)
            .collect(),
        array: array.to_vec(),
    }
}

/// Receives sets of chunks (one per input), computes each result chunk in
/// the pool, `parallel` at a time, and sends them in order.
fn kernel_loop<F>(
    ctx: &mut Ctx<'_>,
    inputs: &[In],
    outs: &[Out],
    compute: F,
) -> Result<(), RunError>
where
    F: Fn(&[Chunk], &[u64], &blockflow_core::Region) -> Result<ArrayData, String> + Sync,
{
    let grid = ctx.stage.grid.clone();
    let mut received = 0;
    let mut pos = 0u64;
    loop {
        ctx.check_cancel()?;
        let (batch, ended) = ctx.recv_batch(inputs, &mut received)?;
        if !batch.is_empty() {
            let held: u64 = batch.iter().flatten().map(Chunk::nbytes).sum();
            let t = Instant::now();
            let meter = ctx.meter;
            let fault = ctx.fault;
            #[allow(clippy::type_complexity)]
            let results: Vec<Result<(Chunk, f64), (Vec<u64>, String)>> = ctx.pool.install(|| {
                batch
                    .par_iter()
                    .enumerate()
                    .map(|(k, set)| {
                        let t = Instant::now();
                        Ctx::maybe_fault(fault, pos + k as u64);
                        let index = grid.unravel(pos + k as u64);
                        let region = grid.region(&index);
                        let out = compute(set, &index, &region).map_err(|m| (index.clone(), m))?;
                        if out
                            .shape()
                            .iter()
                            .map(|&s| s as u64)
                            .ne(region.shape.iter().copied())
                        {
                            return Err((
                                index,
                                format!(
                                    "result chunk has shape {:?}, expected {:?}",
                                    out.shape(),
                                    region.shape
                                ),
                            ));
                        }
                        Ok((
                            Chunk::new(index, region, out, meter),
                            t.elapsed().as_secs_f64(),
                        ))
                    })
                    .collect()
            });
            ctx.report.wall_seconds += t.elapsed().as_secs_f64();
            drop(batch);
            let mut chunks = Vec::with_capacity(results.len());
            for r in results {
                let (c, secs) = r.map_err(|(i, m)| ctx.err(Some(&i), m))?;
                ctx.report.busy_seconds += secs;
                chunks.push(c);
            }
            let out_bytes: u64 = chunks.iter().map(Chunk::nbytes).sum();
            ctx.note_held(held + out_bytes);
            for c in chunks {
                pos += 1;
                ctx.send(outs, c)?;
            }
        }
        if ended {
            ctx.end(outs);
            return Ok(());
        }
    }
}

/// Gives every chunk of the input grid its halo from its neighbours.
/// Chunks arrive in row-major order; a chunk goes out as soon as the last
/// neighbour its halo touches has arrived, and a chunk is dropped as soon
/// as no later chunk's halo touches it, so the window stays within the
/// plan's bound. Positions beyond the array's edges are left 0 for the
/// kernel to fill by its boundary mode.
fn overlap(
    ctx: &mut Ctx<'_>,
    input: &In,
    outs: &[Out],
    drop: &[bool],
    regrid: &crate::plan::Regrid,
) -> Result<(), RunError> {
    let grid = regrid.dst.clone();
    let src = regrid.src.clone();
    let halo = &regrid.halo;
    let dtype = ctx
        .stage
        .output
        .as_ref()
        .map(|o| o.dtype)
        .unwrap_or(DType::F64);
    let total = grid.num_chunks();
    let need_last = |idx: &[u64]| regrid.need_last(idx);
    let last_user = |idx: &[u64]| regrid.last_user(idx);
    let mut window: std::collections::BTreeMap<u64, Chunk> = std::collections::BTreeMap::new();
    let mut next = 0u64;
    let mut last_in: Option<u64> = None;
    let mut ended = false;
    loop {
        ctx.check_cancel()?;
        match ctx.recv(input)? {
            Some(chunk) => {
                let n = src.ravel(&chunk.index);
                if last_in.is_some_and(|l| n != l + 1) || (last_in.is_none() && n != 0) {
                    return Err(
                        ctx.err(Some(&chunk.index), "chunks arrived out of row-major order")
                    );
                }
                last_in = Some(n);
                // A chunk no destination chunk needs (outside a slice) is dropped.
                if last_user(&chunk.index).is_some() {
                    window.insert(n, chunk);
                }
            }
            None => ended = true,
        }
        while next < total {
            let idx = grid.unravel(next);
            if !ended && last_in.is_none_or(|l| need_last(&idx) > l) {
                break;
            }
            let t = Instant::now();
            let block = if regrid.map.is_empty() {
                assemble(&grid, &idx, halo, dtype, &window)
            } else {
                assemble_sliced(regrid, &idx, dtype, &window)
            }
            .map_err(|m| ctx.err(Some(&idx), m))?;
            ctx.report.busy_seconds += t.elapsed().as_secs_f64();
            let held: u64 = window.values().map(Chunk::nbytes).sum::<u64>() + block.nbytes();
            ctx.note_held(held);
            let chunk = if drop.iter().any(|&d| d) {
                // Axes indexed by an integer leave the result (a slice has no halo).
                let keep = |v: &[u64]| -> Vec<u64> {
                    v.iter()
                        .zip(drop)
                        .filter(|(_, &d)| !d)
                        .map(|(&x, _)| x)
                        .collect()
                };
                let out_idx = keep(&idx);
                let out_grid = &ctx.stage.grid;
                let shape: Vec<usize> = out_grid.region(&out_idx).shape_usize();
                let block = with_array!(block, a => ArrayKind::wrap(
                    a.into_shape_with_order(ndarray::IxDyn(&shape)).map_err(|e| ctx.err(Some(&idx), e.to_string()))?
                ));
                Chunk::new(out_idx.clone(), out_grid.region(&out_idx), block, ctx.meter)
            } else {
                let mut chunk = Chunk::new(idx.clone(), grid.region(&idx), block, ctx.meter);
                chunk.halo = halo.iter().map(|&(b, a)| (b as u64, a as u64)).collect();
                chunk
            };
            ctx.send(outs, chunk)?;
            next += 1;
            window.retain(|&n, _| last_user(&src.unravel(n)).is_some_and(|u| u >= next));
        }
        if ended {
            if next != total {
                return Err(ctx.err(None, format!("input ended after {next} of {total} chunks")));
            }
            ctx.end(outs);
            return Ok(());
        }
    }
}

/// Puts the chunks of a small array together.
pub(crate) fn gather(chunks: &[Chunk]) -> Result<ArrayData, String> {
    let first = chunks.first().ok_or("no chunks")?;
    let nd = first.region.ndim();
    let shape: Vec<usize> = (0..nd)
        .map(|ax| chunks.iter().map(|c| c.region.end()[ax]).max().unwrap_or(0) as usize)
        .collect();
    let dtype = first.array().dtype();
    Ok(with_dtype!(dtype, T => {
        let mut out = ndarray::ArrayD::<T>::default(ndarray::IxDyn(&shape));
        for c in chunks {
            let data = T::unwrap_ref(c.array()).ok_or("mixed dtypes")?;
            let info: Vec<ndarray::SliceInfoElem> = c
                .region
                .origin
                .iter()
                .zip(&c.region.shape)
                .map(|(&o, &n)| ndarray::SliceInfoElem::Slice { start: o as isize, end: Some((o + n) as isize), step: 1 })
                .collect();
            let info = ndarray::SliceInfo::<_, ndarray::IxDyn, ndarray::IxDyn>::try_from(info).map_err(|e| e.to_string())?;
            out.slice_mut(info).assign(data);
        }
        T::wrap(out)
    }))
}

/// Copies the positions of slice destination chunk `idx` (a box of
/// `regrid.dst`; position j along an axis is source position start + j step)
/// from the window's chunks.
fn assemble_sliced(
    regrid: &crate::plan::Regrid,
    idx: &[u64],
    dtype: DType,
    window: &std::collections::BTreeMap<u64, Chunk>,
) -> Result<ArrayData, String> {
    use ndarray::{SliceInfo, SliceInfoElem};
    let region = regrid.dst.region(idx);
    let dims = region.shape_usize();
    let mut filled = 0u64;
    let out = with_dtype!(dtype, T => {
        let mut block = ndarray::ArrayD::<T>::default(ndarray::IxDyn(&dims));
        for chunk in window.values() {
            let r = &chunk.region;
            let mut dst = Vec::with_capacity(dims.len());
            let mut src = Vec::with_capacity(dims.len());
            let mut empty = false;
            for ax in 0..dims.len() {
                let (start, step) = regrid.map[ax];
                let (o0, o1) = (region.origin[ax], region.end()[ax]);
                let (r0, r1) = (r.origin[ax], r.end()[ax]);
                // j with r0 <= start + j step < r1, within [o0, o1).
                let j0 = if r0 > start { (r0 - start).div_ceil(step) } else { 0 }.max(o0);
                if r1 <= start {
                    empty = true;
                    break;
                }
                let j1 = ((r1 - 1 - start) / step + 1).min(o1);
                if j1 <= j0 {
                    empty = true;
                    break;
                }
                dst.push(SliceInfoElem::Slice { start: (j0 - o0) as isize, end: Some((j1 - o0) as isize), step: 1 });
                let s0 = start + j0 * step - r0;
                src.push(SliceInfoElem::Slice { start: s0 as isize, end: Some((s0 + (j1 - j0 - 1) * step + 1) as isize), step: step as isize });
            }
            if empty {
                continue;
            }
            let data = T::unwrap_ref(chunk.array()).ok_or_else(|| format!("chunk {:?} has dtype {}, expected {dtype}", chunk.index, chunk.array().dtype()))?;
            let dst = SliceInfo::<_, ndarray::IxDyn, ndarray::IxDyn>::try_from(dst).map_err(|e| e.to_string())?;
            let src = SliceInfo::<_, ndarray::IxDyn, ndarray::IxDyn>::try_from(src).map_err(|e| e.to_string())?;
            let part = data.slice(src);
            filled += part.len() as u64;
            block.slice_mut(dst).assign(&part);
        }
        T::wrap(block)
    });
    if filled != region.elements() {
        return Err(format!(
            "the window lacked source chunks ({filled} of {} values found)",
            region.elements()
        ));
    }
    Ok(out)
}

/// Copies the parts of the window's chunks that chunk `idx` with its halo covers.
fn assemble(
    grid: &blockflow_core::ChunkGrid,
    idx: &[u64],
    halo: &[(usize, usize)],
    dtype: DType,
    window: &std::collections::BTreeMap<u64, Chunk>,
) -> Result<ArrayData, String> {
    use ndarray::{SliceInfo, SliceInfoElem};
    let region = grid.region(idx);
    let shape = grid.shape();
    let lo: Vec<i64> = region
        .origin
        .iter()
        .zip(halo)
        .map(|(&o, &(b, _))| o as i64 - b as i64)
        .collect();
    let hi: Vec<i64> = region
        .end()
        .iter()
        .zip(halo)
        .map(|(&e, &(_, a))| e as i64 + a as i64)
        .collect();
    let dims: Vec<usize> = lo.iter().zip(&hi).map(|(l, h)| (h - l) as usize).collect();
    let mut filled = 0u64;
    let out = with_dtype!(dtype, T => {
        let mut block = ndarray::ArrayD::<T>::default(ndarray::IxDyn(&dims));
        for chunk in window.values() {
            let r = &chunk.region;
            let mut dst = Vec::with_capacity(dims.len());
            let mut src = Vec::with_capacity(dims.len());
            let mut empty = false;
            for ax in 0..dims.len() {
                let a0 = lo[ax].max(0).max(r.origin[ax] as i64);
                let a1 = hi[ax].min(shape[ax] as i64).min(r.end()[ax] as i64);
                if a1 <= a0 {
                    empty = true;
                    break;
                }
                dst.push(SliceInfoElem::Slice { start: (a0 - lo[ax]) as isize, end: Some((a1 - lo[ax]) as isize), step: 1 });
                src.push(SliceInfoElem::Slice { start: (a0 - r.origin[ax] as i64) as isize, end: Some((a1 - r.origin[ax] as i64) as isize), step: 1 });
            }
            if empty {
                continue;
            }
            let data = T::unwrap_ref(chunk.array()).ok_or_else(|| format!("chunk {:?} has dtype {}, expected {dtype}", chunk.index, chunk.array().dtype()))?;
            let dst = SliceInfo::<_, ndarray::IxDyn, ndarray::IxDyn>::try_from(dst).map_err(|e| e.to_string())?;
            let src = SliceInfo::<_, ndarray::IxDyn, ndarray::IxDyn>::try_from(src).map_err(|e| e.to_string())?;
            let part = data.slice(src);
            filled += part.len() as u64;
            block.slice_mut(dst).assign(&part);
        }
        T::wrap(block)
    });
    // Every in-array position of the block must have been found.
    let want: u64 = (0..dims.len())
        .map(|ax| (hi[ax].min(shape[ax] as i64) - lo[ax].max(0)) as u64)
        .product();
    if filled != want {
        return Err(format!(
            "the window lacked neighbours ({filled} of {want} values found)"
        ));
    }
    Ok(out)
}

/// A `read-zarr` whose stream grid is finer than its stored grid: produces
/// every stream chunk in row-major order, `parallel` at a time, as
/// [`source`] does, but decodes each stored chunk once, when the first
/// stream chunk that needs it comes up, cuts every stream chunk from the
/// decoded stored chunks and drops each after the last stream chunk that
/// needs it (at most `held_stored_chunks` of them at once, as projected).
fn source_regrid(ctx: &mut Ctx<'_>, outs: &[Out], reader: &ZarrReader) -> Result<(), RunError> {
    let grid = ctx.stage.grid.clone();
    let total = grid.num_chunks();
    let p = ctx.stage.parallel.max(1);
    let mut stored = StoredChunks::new(&reader.info, &grid);
    let mut n = 0;
    while n < total {
        ctx.check_cancel()?;
        let batch: Vec<u64> = (n..(n + p as u64).min(total)).collect();
        let t = Instant::now();
        // The stored chunks this batch starts, decoded `parallel` at a time.
        let missing = stored.missing(&batch);
        for group in missing.chunks(p) {
            ctx.check_cancel()?;
            let decoded: Vec<(Vec<u64>, f64, Result<ArrayData, String>)> = ctx.pool.install(|| {
                group
                    .par_iter()
                    .map(|s| {
                        let t = Instant::now();
                        let d = reader.read_stored(s).map_err(|e| e.to_string());
                        (s.clone(), t.elapsed().as_secs_f64(), d)
                    })
                    .collect()
            });
            for (s, secs, d) in decoded {
                ctx.report.busy_seconds += secs;
                // Name the first stream chunk that needed it.
                let first = batch
                    .iter()
                    .map(|&k| grid.unravel(k))
                    .find(|i| stored.needs(&grid.region(i), &s))
                    .unwrap_or_else(|| grid.unravel(batch[0]));
                let d = d.map_err(|m| ctx.err(Some(&first), m))?;
                stored.insert(s, d);
            }
        }
        let results = make_batch(ctx, &grid, &batch, |region, _| {
            stored
                .cut(region, &reader.info.path)
                .map_err(|e| e.to_string())
        });
        ctx.report.wall_seconds += t.elapsed().as_secs_f64();
        let mut bytes = stored.held_bytes();
        let mut chunks = Vec::with_capacity(results.len());
        for r in results {
            let (c, secs) = r.map_err(|(i, m)| ctx.err(Some(&i), m))?;
            ctx.report.busy_seconds += secs;
            bytes += c.nbytes();
            chunks.push(c);
        }
        ctx.note_held(bytes);
        n += batch.len() as u64;
        // Drop what no later stream chunk needs before waiting on the channel.
        stored.release_before(n);
        for c in chunks {
            ctx.send(outs, c)?;
        }
    }
    ctx.end(outs);
    Ok(())
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
        let t = Instant::now();
        let results = make_batch(ctx, &grid, &batch, &make);
        ctx.report.wall_seconds += t.elapsed().as_secs_f64();
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
