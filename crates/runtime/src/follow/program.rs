//! The pipeline as per-timepoint steps: each map stage runs on one whole
//! timepoint through its own kernel (the batch's), the overlap windows the
//! planner inserted are passed through, and the source and the sinks are
//! the ingest's own (the watched files, the appended array, the shifts).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use blockflow_core::{with_array, ArrayData, ArrayKind, Chunk, DType, Meter, Region};
use blockflow_io::hdf5::Hdf5Reader;
use blockflow_io::zarr::ZarrWriteOptions;
use ndarray::Axis;

use super::{FollowError, Source};
use crate::plan::{Plan, PlannedStage};
use crate::stages::{Exec, KernelState, MapKernel, Writes};

/// One per-timepoint step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Source,
    /// Overlap windows the planner inserted: a whole timepoint needs none
    /// (its kernel fills the edges by its boundary mode).
    Pass,
    /// A map stage, run by its kernel.
    Map,
    /// A sink the ingest handles itself (the appended Zarr, shifts JSON).
    Sink,
}

/// The pipeline as per-timepoint steps over one `(1, ...)` timepoint.
#[derive(Clone)]
pub(super) struct Program {
    pub(super) names: Vec<String>,
    pub(super) stages: Vec<PlannedStage>,
    steps: Vec<(Step, Vec<usize>)>,
    /// The stage whose output is appended, and the writer's options.
    pub(super) out: usize,
    pub(super) out_path: PathBuf,
    pub(super) options: ZarrWriteOptions,
    /// The stage whose kernel keeps a state (the registration's
    /// reference), if any: the ingest keeps its first input's timepoint
    /// and records its results (the shifts) in the manifest.
    pub(super) stateful: Option<usize>,
    /// The dtype of that first input (the reference's).
    pub(super) reference_dtype: DType,
    /// A write-json of the stateful stage's results.
    pub(super) shifts_json: Option<PathBuf>,
    /// Bytes one worker holds for one timepoint.
    pub(super) worker_bytes: u64,
    meter: Arc<Meter>,
}

/// The kernels' states, one slot per step, shared by the workers: made
/// from the first timepoint a step sees (the stateful one's is published
/// once that timepoint has been computed whole, or made from the kept
/// reference when the ingest resumes).
pub(super) type States = Vec<RwLock<Option<KernelState>>>;

/// The map kernel of a planned stage, if it is a map.
fn map_kernel(s: &PlannedStage) -> Option<&dyn MapKernel> {
    match s.kind.exec() {
        Exec::Map(k) => Some(k),
        _ => None,
    }
}

/// The Zarr array a stage writes: (its path, its options).
fn zarr_sink(s: &PlannedStage) -> Option<(PathBuf, ZarrWriteOptions)> {
    match s.kind.writes() {
        Some(Writes::Zarr { path, options }) => Some((path.to_path_buf(), options.clone())),
        _ => None,
    }
}

/// The file a JSON writer writes (a write-json of the stateful stage's
/// vectors is the ingest's shifts file).
fn json_sink(s: &PlannedStage) -> Option<PathBuf> {
    match s.kind.writes() {
        Some(Writes::Json(path)) => Some(path.to_path_buf()),
        _ => None,
    }
}

/// Refuses a stage an ingest cannot run on one timepoint at a time.
fn unsupported(name: &str, kind: &str, why: &str) -> FollowError {
    FollowError::Unfit(format!(
        "stage \"{name}\" ({kind}) cannot run on one timepoint at a time{why}; an ingest runs read-hdf5-stack → stages that map each timepoint on its own (median, register, shift, expr, filter, ...) → write-zarr (and write-json of the shifts); run the rest as a batch pipeline over the ingest's output"
    ))
}

/// What the stages classified so far hold beside their steps.
struct Found {
    /// The appended stage's input, the array's path and its options.
    out: Option<(usize, PathBuf, ZarrWriteOptions)>,
    stateful: Option<usize>,
    reference_dtype: DType,
    shifts_json: Option<PathBuf>,
}

impl Found {
    /// The step of stage `i`, or why an ingest cannot run it.
    fn step(&mut self, plan: &Plan, i: usize, src: &Source) -> Result<Step, FollowError> {
        let s = &plan.stages[i];
        let source = matches!(s.kind.exec(), Exec::Source(_)) && s.name == src.stage;
        let overlap = s.kind.sends_halo().is_some();
        if source {
            source_step(s, src)
        } else if overlap {
            Ok(Step::Pass)
        } else if let Some((path, options)) = zarr_sink(s) {
            self.zarr_step(s, path, options)
        } else if let (Some(path), [input]) = (json_sink(s), s.inputs.as_slice()) {
            if self.stateful != Some(*input) {
                return Err(unsupported(&s.name, s.kind.name(), ""));
            }
            self.shifts_json = Some(path);
            Ok(Step::Sink)
        } else if let Some(k) = map_kernel(s) {
            self.map_step(plan, i, k)
        } else {
            Err(unsupported(&s.name, s.kind.name(), ""))
        }
    }

    /// The appended array: one, chunked by single timepoints.
    fn zarr_step(
        &mut self,
        s: &PlannedStage,
        path: PathBuf,
        options: ZarrWriteOptions,
    ) -> Result<Step, FollowError> {
        if self.out.is_some() {
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
        if options.shards.is_some() {
            return Err(FollowError::Unfit(format!(
                "stage \"{}\": the appended array grows one timepoint at a time, which would rewrite its shards; leave `shards` out",
                s.name
            )));
        }
        self.out = Some((s.inputs[0], path, options));
        Ok(Step::Sink)
    }

    /// A map stage `i` run by its kernel `k` on whole timepoints, one at a
    /// time; at most one keeps a state.
    fn map_step(&mut self, plan: &Plan, i: usize, k: &dyn MapKernel) -> Result<Step, FollowError> {
        let s = &plan.stages[i];
        let halo = s.kind.halo();
        if halo.is_some_and(|h| h.first().is_some_and(|&(b, a)| b + a > 0)) {
            return Err(unsupported(
                &s.name,
                s.kind.name(),
                ": its window spans several timepoints (give size 1 along time)",
            ));
        }
        let (shape, chunk) = (s.grid.shape(), s.grid.chunk_shape());
        if chunk.first() != Some(&1) || chunk[1..] != shape[1..] {
            return Err(unsupported(
                &s.name,
                s.kind.name(),
                &format!(": it works in chunks of {chunk:?}, not whole timepoints"),
            ));
        }
        if k.keeps_state() {
            if let Some(j) = self.stateful {
                return Err(FollowError::Unfit(format!(
                    "stages \"{}\" and \"{}\" both keep a state across timepoints; an ingest keeps one (the registration's reference)",
                    plan.stages[j].name, s.name
                )));
            }
            self.stateful = Some(i);
            if let Some(o) = s
                .inputs
                .first()
                .and_then(|&j| plan.stages[j].output.as_ref())
            {
                self.reference_dtype = o.dtype;
            }
        }
        Ok(Step::Map)
    }
}

/// The watched source: one whole timepoint per chunk.
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

/// The pipeline as per-timepoint steps, or why it cannot run as an ingest.
pub(super) fn program(plan: &Plan, src: &Source) -> Result<Program, FollowError> {
    let mut steps = Vec::new();
    let mut found = Found {
        out: None,
        stateful: None,
        reference_dtype: DType::F64,
        shifts_json: None,
    };
    for (i, s) in plan.stages.iter().enumerate() {
        let step = found.step(plan, i, src)?;
        steps.push((step, s.inputs.clone()));
    }
    let Some((out, out_path, options)) = found.out else {
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
        stages: plan.stages.clone(),
        steps,
        out,
        out_path,
        options,
        stateful: found.stateful,
        reference_dtype: found.reference_dtype,
        shifts_json: found.shifts_json,
        worker_bytes,
        meter: Meter::new(),
    })
}

impl Program {
    /// Empty state slots, one per step.
    pub(super) fn states(&self) -> States {
        self.steps.iter().map(|_| RwLock::new(None)).collect()
    }

    /// Where stage `i`'s timepoint lies: the whole first chunk of its grid
    /// (a timepoint is planned as the only one), and as its grid index the
    /// timepoint's position `seq` in the ingest's stream, so that a
    /// kernel's state can tell the timepoint it was made from.
    fn place(&self, i: usize, seq: Option<u64>) -> (Vec<u64>, Region) {
        let grid = &self.stages[i].grid;
        let zero = vec![0; grid.ndim()];
        let region = grid.region(&zero);
        let index = match seq {
            Some(t) => std::iter::once(t)
                .chain(zero[1..].iter().copied())
                .collect(),
            None => Vec::new(),
        };
        (index, region)
    }

    fn chunk(&self, i: usize, seq: Option<u64>, data: ArrayData) -> Chunk {
        let (index, region) = self.place(i, seq);
        Chunk::new(index, region, data, &self.meter)
    }

    /// The stateful stage's state from a reference kept by an earlier run
    /// (`(1, ...)`, its first input's timepoint): a timepoint of no
    /// position in this run's stream.
    pub(super) fn resume_state(
        &self,
        i: usize,
        reference: ArrayData,
    ) -> Result<KernelState, String> {
        let k = map_kernel(&self.stages[i]).ok_or("internal: not a map stage")?;
        let input = self.steps[i].1[0];
        k.init(&[self.chunk(input, None, reference)])
    }
}
/// One timepoint to compute.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub(super) seq: u64,
    pub(super) path: PathBuf,
    pub(super) name: String,
    pub(super) bytes: u64,
    /// The modification time the file settled at.
    pub(super) mtime: Option<SystemTime>,
    pub(super) seen: SystemTime,
    pub(super) seen_at: Instant,
}

pub(super) enum Outcome {
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
pub(super) enum NotRead {
    Bad(String),
    NotReady(String),
}

/// The file's size and modification time now.
pub(super) fn stamp(path: &Path) -> Option<(u64, Option<SystemTime>)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.len(), m.modified().ok()))
}

/// Reads a job's timepoint only if the file is the one that settled and
/// stays so across the read: a change, or a lock its writer holds, makes
/// it "not ready" rather than bad.
pub(super) fn read_settled(
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
pub(super) fn read_timepoint(
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
pub(super) fn compute(
    prog: &Program,
    job: &Job,
    src: &Source,
    frame: &[u64],
    dtype: DType,
    states: &States,
) -> Outcome {
    let mut vals: Vec<Option<Chunk>> = vec![None; prog.steps.len()];
    let mut shift = None;
    let mut became = None;
    let mut new_state = None;
    let seq = Some(job.seq);
    for (i, (step, inputs)) in prog.steps.iter().enumerate() {
        let name = &prog.names[i];
        let fail = |e: String| Outcome::Bad(format!("stage \"{name}\": {e}"));
        let input = |k: usize| vals[inputs[k]].clone().expect("inputs come first");
        let c = match step {
            Step::Source => match src.index.as_ref().map_or(Ok(0), |re| {
                blockflow_io::hdf5::timepoint_index(&job.path, re)
            }) {
                Err(e) => return fail(e.to_string()),
                Ok(_) => match read_settled(job, src, frame, dtype) {
                    Ok(d) => prog.chunk(i, seq, d),
                    Err(NotRead::Bad(e)) => return fail(e),
                    Err(NotRead::NotReady(why)) => return Outcome::NotReady(why),
                },
            },
            Step::Pass => input(0),
            Step::Map => {
                let Some(k) = map_kernel(&prog.stages[i]) else {
                    return fail("internal: not a map stage".into());
                };
                let ins: Vec<Chunk> = (0..inputs.len()).map(input).collect();
                let known = states[i].read().ok().and_then(|s| s.clone());
                let state = match known {
                    Some(s) => s,
                    None => match k.init(&ins) {
                        Ok(s) if k.keeps_state() => {
                            // The first timepoint: the reference, kept
                            // once this timepoint is done.
                            became = Some(Arc::new(ins[0].array().clone()));
                            new_state = Some((i, s.clone()));
                            s
                        }
                        Ok(s) => {
                            if let Ok(mut w) = states[i].write() {
                                w.get_or_insert_with(|| s.clone());
                            }
                            s
                        }
                        Err(e) => return fail(e),
                    },
                };
                let c = match k.forwards() {
                    Some(f) => ins[f].clone(),
                    None => {
                        let (index, region) = prog.place(i, seq);
                        let out = match k.apply(&state, &ins, &index, &region) {
                            Ok(d) => d,
                            Err(e) => return fail(e),
                        };
                        if let Err(e) = crate::exec::check_shape(&out, &region) {
                            return fail(e);
                        }
                        Chunk::new(index, region, out, &prog.meter)
                    }
                };
                if prog.stateful == Some(i) {
                    shift = Some(c.array().to_f64().iter().copied().collect());
                }
                c
            }
            Step::Sink => continue,
        };
        vals[i] = Some(c);
    }
    if let Some((i, s)) = new_state {
        if let Ok(mut w) = states[i].write() {
            *w = Some(s);
        }
    }
    let data = match vals[prog.out].take() {
        Some(c) => c.array().clone(),
        None => return Outcome::Bad("internal: the appended stage computed nothing".into()),
    };
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
