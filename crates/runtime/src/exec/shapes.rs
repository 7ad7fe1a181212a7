//! The execution shapes (see [`crate::stages::Exec`]): one loop each, for
//! every stage of that shape. Nothing here knows a stage's kind.

use std::any::Any;
use std::time::Instant;

use blockflow_core::{ArrayData, Chunk, ChunkGrid, Region};
use rayon::prelude::*;

use super::{Ctx, In, Out, Output, RunError};
use crate::plan::PlannedStage;
use crate::stages::{Barrier, BarrierOp, ChunkSink, ChunkSource, KernelState, MapKernel};

/// What a stage's own code may do while it runs: receive, send, use the
/// compute pool, report errors with the stage's name and chunk.
pub struct StageIo<'a, 'b> {
    pub(super) ctx: &'b mut Ctx<'a>,
    pub(super) inputs: &'b [In],
    pub(super) outs: &'b [Out],
}

impl<'a> StageIo<'a, '_> {
    /// The stage being run.
    pub fn stage(&self) -> &'a PlannedStage {
        self.ctx.stage
    }

    /// The compute pool.
    pub fn pool(&self) -> &'a rayon::ThreadPool {
        self.ctx.pool
    }

    /// An error of this stage, at `chunk` if given.
    pub fn err(&self, chunk: Option<&[u64]>, msg: impl Into<String>) -> RunError {
        self.ctx.err(chunk, msg)
    }

    /// Stops when the run is cancelled.
    pub fn check_cancel(&self) -> Result<(), RunError> {
        self.ctx.check_cancel()
    }

    /// The names of the stages its inputs come from.
    pub fn input_names(&self) -> Vec<String> {
        self.inputs.iter().map(|i| i.from.clone()).collect()
    }

    /// Sends `data` as the chunk at `index` of the stage's grid.
    pub fn send(&mut self, index: Vec<u64>, data: ArrayData) -> Result<(), RunError> {
        let region = self.ctx.stage.grid.region(&index);
        self.send_chunk(Chunk::new(index, region, data, self.ctx.meter))
    }

    /// Sends a chunk made elsewhere.
    pub fn send_chunk(&mut self, chunk: Chunk) -> Result<(), RunError> {
        self.ctx.send(self.outs, chunk)
    }

    /// A chunk accounted in the run's meter.
    pub fn chunk(&self, index: Vec<u64>, region: Region, data: ArrayData) -> Chunk {
        Chunk::new(index, region, data, self.ctx.meter)
    }

    /// Runs `f` and counts its time as busy.
    pub fn busy<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
        self.ctx.report.busy_seconds += t.elapsed().as_secs_f64();
        r
    }

    /// Notes bytes held at once, for the report's peak.
    pub fn note_held(&mut self, bytes: u64) {
        self.ctx.note_held(bytes);
    }

    /// Makes the chunks at flat positions `batch` of the stage's grid in
    /// the pool, as a source's loop does (the fault hook applied, each
    /// chunk's time counted as busy): each chunk, or its index and error.
    #[allow(clippy::type_complexity)]
    pub fn make_chunks<F>(
        &mut self,
        batch: &[u64],
        make: F,
    ) -> Vec<Result<Chunk, (Vec<u64>, String)>>
    where
        F: Fn(&Region, &[u64]) -> Result<ArrayData, String> + Sync,
    {
        let grid = self.ctx.stage.grid.clone();
        let made = super::make_batch(self.ctx, &grid, batch, make);
        made.into_iter()
            .map(|r| {
                r.map(|(c, secs)| {
                    self.ctx.report.busy_seconds += secs;
                    c
                })
            })
            .collect()
    }

    /// Counts seconds of the stage's own work in the pool (its wall time
    /// is measured around the whole stage).
    pub fn count_busy(&mut self, busy: f64) {
        self.ctx.report.busy_seconds += busy;
    }

    /// A scratch store's path for this stage in `dir`, unique to the run.
    pub fn scratch_path(&self, dir: &std::path::Path) -> std::path::PathBuf {
        super::scratch_path(self.ctx, dir)
    }
}

/// A source: every chunk of the grid in row-major order, `parallel` at a
/// time (or the source streams itself).
pub(super) fn run_source(
    ctx: &mut Ctx<'_>,
    outs: &[Out],
    src: &dyn ChunkSource,
) -> Result<(), RunError> {
    let streamed = src.stream(&mut StageIo {
        ctx: &mut *ctx,
        inputs: &[],
        outs,
    });
    let result = match streamed {
        Some(r) => r.map(|()| ctx.end(outs)),
        None => super::source(ctx, outs, |region, index| src.read(region, Some(index))),
    };
    ctx.report.stored_chunks_decoded = src.decoded();
    result
}

/// A map: receives sets of chunks (one per input, in lockstep), computes
/// each result chunk in the pool, `parallel` at a time, sends them in order.
pub(super) fn run_map(
    ctx: &mut Ctx<'_>,
    inputs: &[In],
    outs: &[Out],
    kernel: &dyn MapKernel,
) -> Result<(), RunError> {
    let grid = ctx.stage.grid.clone();
    let mut received = 0;
    let mut pos = 0u64;
    let mut state: Option<KernelState> = None;
    loop {
        ctx.check_cancel()?;
        let (batch, ended) = ctx.recv_batch(inputs, &mut received)?;
        if let (Some(k), false) = (kernel.forwards(), batch.is_empty()) {
            // The output is an input as it is: forward it, sharing its buffer.
            for set in batch {
                let mut c = set[k].clone();
                c.index = grid.unravel(pos);
                c.region = grid.region(&c.index);
                pos += 1;
                ctx.send(outs, c)?;
            }
        } else if !batch.is_empty() {
            if state.is_none() {
                let s = kernel
                    .init(&batch[0])
                    .map_err(|m| ctx.err(Some(&batch[0][0].index), m))?;
                state = Some(s);
            }
            let st = state.as_ref().and_then(Clone::clone);
            let chunks = map_batch(ctx, &grid, pos, &batch, kernel, &st)?;
            let held: u64 = batch.iter().flatten().map(Chunk::nbytes).sum();
            let out_bytes: u64 = chunks.iter().map(Chunk::nbytes).sum();
            ctx.note_held(held + out_bytes + kernel.held_bytes(&st, batch.len()));
            drop(batch);
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

/// One batch of a map, in the pool.
fn map_batch(
    ctx: &mut Ctx<'_>,
    grid: &ChunkGrid,
    pos: u64,
    batch: &[Vec<Chunk>],
    kernel: &dyn MapKernel,
    state: &KernelState,
) -> Result<Vec<Chunk>, RunError> {
    let (meter, fault) = (ctx.meter, ctx.fault);
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
                let out = kernel
                    .apply(state, set, &index, &region)
                    .map_err(|m| (index.clone(), m))?;
                check_shape(&out, &region).map_err(|m| (index.clone(), m))?;
                Ok((
                    Chunk::new(index, region, out, meter),
                    t.elapsed().as_secs_f64(),
                ))
            })
            .collect()
    });
    let mut chunks = Vec::with_capacity(results.len());
    for r in results {
        let (c, secs) = r.map_err(|(i, m)| ctx.err(Some(&i), m))?;
        ctx.report.busy_seconds += secs;
        chunks.push(c);
    }
    Ok(chunks)
}

/// A kernel's result must be its region's shape.
pub(crate) fn check_shape(out: &ArrayData, region: &Region) -> Result<(), String> {
    if out
        .shape()
        .iter()
        .map(|&s| s as u64)
        .ne(region.shape.iter().copied())
    {
        return Err(format!(
            "result chunk has shape {:?}, expected {:?}",
            out.shape(),
            region.shape
        ));
    }
    Ok(())
}

/// Receives up to `want` chunks from whichever inputs send (blocking for
/// the first), in each input's order; None once all have ended.
fn drain_batch(
    ctx: &mut Ctx<'_>,
    inputs: &[In],
    open: &mut [bool],
    received: &mut [u64],
    want: usize,
) -> Result<Option<Vec<(usize, Chunk)>>, RunError> {
    let want = want.max(1);
    let mut batch = Vec::with_capacity(want);
    while batch.len() < want && open.iter().any(|&o| o) {
        ctx.check_cancel()?;
        let mut sel = crossbeam_channel::Select::new();
        let mut which = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            if open[i] {
                sel.recv(&input.rx);
                which.push(i);
            }
        }
        let op = if batch.is_empty() {
            let t = Instant::now();
            let op = sel.select();
            ctx.report.blocked_recv_seconds += t.elapsed().as_secs_f64();
            op
        } else {
            match sel.try_select() {
                Ok(op) => op,
                Err(_) => break,
            }
        };
        let i = which[op.index()];
        match op.recv(&inputs[i].rx) {
            Ok(blockflow_core::Msg::Data(c)) => {
                let b = c.nbytes();
                inputs[i]
                    .stats
                    .queued
                    .fetch_sub(b, std::sync::atomic::Ordering::AcqRel);
                ctx.report.chunks_in += 1;
                ctx.report.bytes_in += b;
                if let Some(p) = ctx.progress {
                    p.stage_chunks(ctx.index, 1, 0);
                }
                received[i] += 1;
                if received[i] > inputs[i].expected {
                    return Err(ctx.err(
                        Some(&c.index),
                        format!(
                            "input \"{}\" sent more than the {} chunks planned",
                            inputs[i].from, inputs[i].expected
                        ),
                    ));
                }
                batch.push((i, c));
            }
            Ok(blockflow_core::Msg::End) => {
                open[i] = false;
                if received[i] != inputs[i].expected {
                    return Err(ctx.err(
                        None,
                        format!(
                            "input \"{}\" ended after {} of {} chunks",
                            inputs[i].from, received[i], inputs[i].expected
                        ),
                    ));
                }
            }
            Err(_) => return Err(RunError::Aborted),
        }
    }
    if batch.is_empty() && !open.iter().any(|&o| o) {
        return Ok(None);
    }
    Ok(Some(batch))
}

/// A barrier: takes every chunk of every input (preparing up to
/// `parallel` at once in the pool), then finishes and sends.
pub(super) fn run_barrier(
    ctx: &mut Ctx<'_>,
    inputs: &[In],
    outs: &[Out],
    op: &dyn BarrierOp,
) -> Result<(), RunError> {
    let mut barrier = op.start(&mut StageIo {
        ctx: &mut *ctx,
        inputs,
        outs,
    })?;
    let mut open = vec![true; inputs.len()];
    let mut received = vec![0u64; inputs.len()];
    let want = barrier.at_once(ctx.stage.parallel);
    while let Some(batch) = drain_batch(ctx, inputs, &mut open, &mut received, want)? {
        let b: &dyn Barrier = &*barrier;
        #[allow(clippy::type_complexity)]
        let parts: Vec<(Result<Option<Box<dyn Any + Send>>, String>, f64)> =
            ctx.pool.install(|| {
                batch
                    .par_iter()
                    .map(|(i, c)| {
                        let t = Instant::now();
                        (b.prepare(*i, c), t.elapsed().as_secs_f64())
                    })
                    .collect()
            });
        let held: u64 = batch.iter().map(|(_, c)| c.nbytes()).sum();
        ctx.note_held(held);
        for ((i, c), (part, secs)) in batch.into_iter().zip(parts) {
            ctx.report.busy_seconds += secs;
            let part = part.map_err(|m| ctx.err(Some(&c.index), m))?;
            let t = Instant::now();
            barrier.add(
                &mut StageIo {
                    ctx: &mut *ctx,
                    inputs,
                    outs,
                },
                i,
                c,
                part,
            )?;
            ctx.report.busy_seconds += t.elapsed().as_secs_f64();
        }
    }
    ctx.check_cancel()?;
    barrier.finish(&mut StageIo {
        ctx: &mut *ctx,
        inputs,
        outs,
    })?;
    ctx.end(outs);
    Ok(())
}

/// A sink: writes every chunk of every input, up to `parallel` at once,
/// then finishes; the output is committed when the whole run succeeded.
pub(super) fn run_sink(
    ctx: &mut Ctx<'_>,
    inputs: &[In],
    mut sink: Box<dyn ChunkSink>,
) -> Result<Option<Output>, RunError> {
    let mut open = vec![true; inputs.len()];
    let mut received = vec![0u64; inputs.len()];
    let mut written = 0u64;
    let want = ctx.stage.parallel;
    while let Some(batch) = drain_batch(ctx, inputs, &mut open, &mut received, want)? {
        let held: u64 = batch.iter().map(|(_, c)| c.nbytes()).sum();
        ctx.note_held(held + sink.held_bytes());
        let (fault, first) = (ctx.fault, written);
        let s: &dyn ChunkSink = &*sink;
        let results: Vec<(Result<(), String>, f64)> = ctx.pool.install(|| {
            batch
                .par_iter()
                .enumerate()
                .map(|(k, (i, c))| {
                    let t = Instant::now();
                    Ctx::maybe_fault(fault, first + k as u64);
                    (s.write(*i, c), t.elapsed().as_secs_f64())
                })
                .collect()
        });
        written += batch.len() as u64;
        for ((r, secs), (_, c)) in results.into_iter().zip(&batch) {
            ctx.report.busy_seconds += secs;
            r.map_err(|m| ctx.err(Some(&c.index), m))?;
        }
        if let Some(p) = ctx.progress {
            p.stage_chunks(ctx.index, 0, batch.len() as u64);
            if sink.counts_progress() {
                p.advance(batch.len() as u64, held);
            }
        }
    }
    let names: Vec<String> = inputs.iter().map(|i| i.from.clone()).collect();
    sink.finish(&names).map_err(|m| ctx.err(None, m))?;
    Ok(Some(Output::Sink(sink)))
}
