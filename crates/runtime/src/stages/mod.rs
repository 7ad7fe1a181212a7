//! The stage kinds, one file each, and the traits the planner and the
//! executor see them through.
//!
//! A kind is a [`KindDef`]: its name, role, arity, parameters (declared
//! once, see [`params`]) and a `plan` function that checks its parameters
//! and inputs and returns a [`Planned`] stage: a value implementing
//! [`Stage`] (its typed parameters and derived geometry), the stream it
//! sends and the grid it works over. [`KINDS`] lists them; the parser,
//! `blockflow stages` and `docs/stages.md` all read that list.
//!
//! The executor never asks which kind a stage is. It asks [`Stage::exec`]
//! for the stage's *execution shape*:
//! - [`Exec::Source`]: reads chunks of a region ([`ChunkSource`]);
//! - [`Exec::Map`]: one output chunk from one chunk of each input, with a
//!   halo where [`Stage::halo`] asks for one ([`MapKernel`]);
//! - [`Exec::Window`]: chunks of one grid into another ([`Regrid`]):
//!   overlap, in-memory rechunk, slice;
//! - [`Exec::Barrier`]: takes every chunk of its inputs, then emits
//!   ([`Barrier`]): reductions, TSQR, take, matmul, joins, disk rechunk;
//! - [`Exec::Sink`]: writes chunks and commits at the end ([`ChunkSink`]).
//!
//! The same kernels run in a batch (`exec`), in the ingest (`follow`) and
//! for a given set of output regions (`region`).

pub mod clip;
pub mod common;
pub mod diff;
pub mod expr;
pub mod filter;
pub mod join;
pub mod matmul;
pub mod median;
pub mod ome_plan;
pub mod overlap;
pub mod params;
pub mod pca;
pub mod read_hdf5;
pub mod read_hdf5_stack;
pub mod read_images;
pub mod read_zarr;
pub mod rechunk;
pub mod reduce;
pub mod register;
#[cfg(test)]
mod registry_tests;
pub mod rescale;
pub mod shift;
pub mod slice;
pub mod stored;
pub mod structure_tensor;
pub mod synthetic;
pub mod take;
#[cfg(test)]
pub(crate) mod testing;
pub mod transpose;
pub mod write_blocks;
pub mod write_csv;
pub mod write_hdf5;
pub mod write_json;
pub mod write_png;
pub mod write_zarr;
pub mod zscore;

use std::any::Any;
use std::fmt;
use std::path::{Path, PathBuf};

use blockflow_core::{ArrayData, ArraySpec, Chunk, ChunkGrid, Region};
use blockflow_io::IoError;

use crate::catalog::Catalog;
use crate::config::{Diags, RawStage, Span};
use crate::exec::{RunError, StageIo};
use crate::plan::{PlannedStage, Regrid};
pub use params::{p, Arity, PType, ParamSpec, Params, PathRole};

/// A stage kind: everything the parser, the docs and the planner need.
#[derive(Debug)]
pub struct KindDef {
    pub kind: &'static str,
    /// "reader", "kernel" or "writer".
    pub role: &'static str,
    pub summary: &'static str,
    pub inputs: Arity,
    pub params: &'static [ParamSpec],
    /// A small stage of this kind, as its table's body, over the generated
    /// inputs of the registry test (`f32_2d`, `f32_rgb`, `u8_stack`,
    /// `frames`, `shifts`, `mat`, `vec4`, `bands`, `best`; stored `in.zarr`, `in.h5`,
    /// `t_*.h5`, `img_*.png`): the test plans it, `blockflow stages` shows it.
    pub example: &'static str,
    /// Checks the parameters against the inputs and plans the stage; on
    /// refusal, records why in `cx` and returns None.
    pub plan: fn(&mut PlanCx<'_, '_>) -> Option<Planned>,
}

/// Every stage kind a config may name, in the order `blockflow stages`
/// lists them. Adding a kind: its file in this folder, one line here.
pub static KINDS: &[&KindDef] = &[
    &synthetic::KIND,
    &read_zarr::KIND,
    &read_hdf5::KIND,
    &read_hdf5_stack::KIND,
    &read_images::KIND,
    &expr::KIND,
    &clip::KIND,
    &filter::KIND,
    &structure_tensor::KIND,
    &median::KIND,
    &register::KIND,
    &shift::KIND,
    &zscore::KIND,
    &rescale::KIND,
    &diff::KIND,
    &rechunk::KIND,
    &slice::KIND,
    &join::CONCATENATE,
    &join::STACK,
    &transpose::KIND,
    &reduce::KIND,
    &pca::KIND,
    &take::KIND,
    &matmul::KIND,
    &write_zarr::KIND,
    &write_hdf5::KIND,
    &write_png::KIND,
    &write_json::KIND,
    &write_csv::KIND,
    &write_blocks::KIND,
];

/// The kind called `name`.
pub fn kind(name: &str) -> Option<&'static KindDef> {
    KINDS.iter().copied().find(|k| k.kind == name)
}

/// What a stream's values are, for the readers of results (write-json's
/// `about` and its coordinate keys): a line of text, and what the planner
/// knows of where the values come from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct About {
    /// One line, e.g. "max of cells[730, :, :, :]".
    pub text: String,
    /// Whether `text` may stand for the stream in another stage's text (a
    /// slice, a short expression) instead of the stage's name.
    pub inline: bool,
    /// One value per block of another array (a per-block reduction).
    pub blocks_of: Option<BlocksOf>,
    /// A flat (row-major) index into another array (argmin or argmax of a
    /// whole array, as numpy's).
    pub index_into: Option<IndexInto>,
}

impl About {
    /// A line of text, no more.
    pub fn text(text: impl Into<String>) -> About {
        About {
            text: text.into(),
            ..About::default()
        }
    }
}

/// The array a per-block statistic is of: its stage and its blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct BlocksOf {
    pub array: String,
    pub grid: ChunkGrid,
}

/// The array a flat index points into: its stage, its shape, and, where it
/// is itself a per-block statistic, the array whose blocks it counts.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexInto {
    pub array: String,
    pub shape: Vec<u64>,
    pub blocks_of: Option<BlocksOf>,
}

/// Where a closing note " (...)" begins in `t`, if it ends with one.
fn note_start(t: &str) -> Option<usize> {
    if !t.ends_with(')') {
        return None;
    }
    let mut depth = 0i32;
    for (k, c) in t.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' => {
                depth -= 1;
                if depth == 0 {
                    return (k > 0 && t[..k].ends_with(' ')).then(|| k - 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// What planning a stage makes.
#[derive(Debug)]
pub struct Planned {
    pub op: Box<dyn Stage>,
    /// The stream it sends (None for writers).
    pub output: Option<ArraySpec>,
    /// The grid it works over (its output's, or a writer's input's).
    pub grid: ChunkGrid,
    /// What its values are (None: the planner says "KIND of INPUTS").
    pub about: Option<About>,
}

impl Planned {
    /// A stage that sends a stream of `dtype` over `grid`.
    pub fn sends(
        op: impl Stage + 'static,
        dtype: blockflow_core::DType,
        grid: ChunkGrid,
    ) -> Planned {
        Planned {
            op: Box::new(op),
            output: Some(ArraySpec::new(dtype, grid.clone())),
            grid,
            about: None,
        }
    }

    /// A writer working over its input's `grid`.
    pub fn sink(op: impl Stage + 'static, grid: ChunkGrid) -> Planned {
        Planned {
            op: Box::new(op),
            output: None,
            grid,
            about: None,
        }
    }

    /// With what its values are.
    pub fn about(mut self, about: About) -> Planned {
        self.about = Some(about);
        self
    }
}

/// One input of a stage being planned.
#[derive(Debug, Clone, Copy)]
pub struct InputRef<'a> {
    pub name: &'a str,
    pub spec: &'a ArraySpec,
    /// What its values are.
    pub about: &'a About,
}

impl InputRef<'_> {
    /// How another stage's text names this input: its own text where that
    /// may stand for it and is short (`cells[730, :, :, :]`, parenthesised
    /// where it is more than an indexed name), else its stage's name.
    pub fn label(&self) -> String {
        let t = &self.about.text;
        if !self.about.inline || t.is_empty() || t.chars().count() > 80 {
            return self.name.to_string();
        }
        // Outside brackets, a space means an operator: parenthesise. A
        // note in parentheses at the end (a slice's) does not count.
        let main = note_start(t).map_or(t.as_str(), |k| &t[..k]);
        let mut depth = 0i32;
        let bare = main.chars().all(|c| {
            match c {
                '[' | '(' => depth += 1,
                ']' | ')' => depth -= 1,
                _ => {}
            }
            depth > 0 || c != ' '
        });
        if bare {
            t.clone()
        } else {
            format!("({t})")
        }
    }
}

/// What a kind's `plan` sees: its parameters, its inputs' streams, the
/// budget, the catalog of stored inputs; and where to put diagnostics.
pub struct PlanCx<'a, 'd> {
    d: &'a mut Diags<'d>,
    pub st: &'a RawStage,
    pub p: Params<'a>,
    pub inputs: Vec<InputRef<'a>>,
    /// The pipeline's memory budget.
    pub memory: u64,
    /// The config file (relative paths are from its folder).
    pub config: &'a Path,
    pub catalog: &'a dyn Catalog,
    /// The pipeline's name (writers record it beside their data).
    pub pipeline: &'a str,
}

impl<'a, 'd> PlanCx<'a, 'd> {
    // One field each: the planner's one call site names them all.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        d: &'a mut Diags<'d>,
        st: &'a RawStage,
        p: Params<'a>,
        inputs: Vec<InputRef<'a>>,
        memory: u64,
        config: &'a Path,
        catalog: &'a dyn Catalog,
        pipeline: &'a str,
    ) -> Self {
        PlanCx {
            d,
            st,
            p,
            inputs,
            memory,
            config,
            catalog,
            pipeline,
        }
    }

    /// The stage's name.
    pub fn name(&self) -> &'a str {
        self.st.name.v.as_str()
    }

    /// Records an error on parameter `key` (where it was written, else on
    /// the stage) and returns None, for `return cx.err(...)`.
    pub fn err<T>(&mut self, key: &str, msg: impl Into<String>) -> Option<T> {
        let span = self.p.span(key);
        self.d.err(&span, Some(self.st.name.v.as_str()), msg);
        None
    }

    /// Records an error on the stage's name.
    pub fn err_stage<T>(&mut self, msg: impl Into<String>) -> Option<T> {
        let span = self.st.name.span.clone();
        self.d.err(&span, Some(self.st.name.v.as_str()), msg);
        None
    }

    /// Input `k`'s stream (None if it has fewer inputs; arity is checked
    /// before planning).
    pub fn input(&self, k: usize) -> Option<&'a ArraySpec> {
        self.inputs.get(k).map(|i| i.spec)
    }

    /// A path parameter, resolved: relative to the config's folder when
    /// written in the file, to the working directory when given with `--set`.
    pub fn path(&self, key: &str) -> Option<PathBuf> {
        let v = self.p.given(key)?;
        Some(crate::plan::resolve(self.config, v))
    }

    /// A grid, or an error on `key` when the shape cannot be cut so.
    pub fn grid(&mut self, key: &str, shape: Vec<u64>, chunks: Vec<u64>) -> Option<ChunkGrid> {
        match ChunkGrid::new(shape, chunks) {
            Ok(g) => Some(g),
            Err(e) => self.err(key, e.to_string()),
        }
    }

    /// A grid the stage derives, or an error on the stage when it cannot
    /// be cut so (a shape too large to count).
    pub fn stage_grid(&mut self, shape: Vec<u64>, chunks: Vec<u64>) -> Option<ChunkGrid> {
        match ChunkGrid::new(shape, chunks) {
            Ok(g) => Some(g),
            Err(e) => self.err_stage(e.to_string()),
        }
    }

    /// Where diagnostics go, for checks shared between kinds.
    pub fn diags(&mut self) -> (&mut Diags<'d>, &'a RawStage) {
        (self.d, self.st)
    }

    /// The span of `key` (or the stage).
    pub fn span(&self, key: &str) -> Span {
        self.p.span(key)
    }
}

/// What the memory projection of a stage sees, in u128 (no product of a
/// grid's counts, a window and `parallel` can overflow it).
#[derive(Debug, Clone, Copy)]
pub struct MemoryCx<'a> {
    /// Chunks worked on at once.
    pub parallel: u128,
    /// Bytes and elements of one chunk of each input, summed.
    pub in_bytes: u128,
    pub in_elems: u128,
    /// Bytes and elements of one chunk it sends.
    pub out_bytes: u128,
    pub out_elems: u128,
    /// The first input's stream.
    pub input: Option<&'a ArraySpec>,
    /// The grid it works over.
    pub grid: &'a ChunkGrid,
}

/// What a stage writes, for the checks and reports that need its paths.
#[derive(Debug, Clone, Copy)]
pub enum Writes<'a> {
    Zarr {
        path: &'a Path,
        options: &'a blockflow_io::zarr::ZarrWriteOptions,
    },
    /// An OME-Zarr image (a group of levels written by one writer: a
    /// distributed run writes it whole, an ingest cannot append to it).
    Ome {
        path: &'a Path,
        options: &'a blockflow_io::ome::OmeOptions,
    },
    /// A JSON document of small results, one key per input.
    Json(&'a Path),
    Files(&'a [PathBuf]),
}

/// A planned stage: its typed parameters and derived geometry.
pub trait Stage: StageBase + fmt::Debug + Send + Sync {
    /// The kind's name.
    fn kind(&self) -> &'static str;
    /// One line for `blockflow plan`: what it does, in words (the
    /// parameters as written are printed beside it).
    fn describe(&self) -> String;
    /// Projected working bytes (chunks being read, computed or written,
    /// with their temporaries; not what waits in channels).
    fn memory(&self, m: &MemoryCx<'_>) -> u128;
    /// How the executor runs it.
    fn exec(&self) -> Exec<'_>;
    /// The halo it needs on each axis of its (first) input, if any.
    fn halo(&self) -> Option<Vec<(usize, usize)>> {
        None
    }
    /// The region of input `k` (of `shape`) that output `region` needs,
    /// and the halo on each side of it (for the region contract, see
    /// `region.rs`). Default: the same positions, grown by `halo()` on the
    /// first input and clipped to the array; input axes beyond the output's
    /// (channels a kernel reduces) whole.
    fn input_region(&self, k: usize, region: &Region, shape: &[u64]) -> (Region, Vec<(u64, u64)>) {
        let halo = if k == 0 { self.halo() } else { None };
        let mut origin = Vec::with_capacity(shape.len());
        let mut extent = Vec::with_capacity(shape.len());
        let mut got = Vec::with_capacity(shape.len());
        for (ax, &n) in shape.iter().enumerate() {
            if ax >= region.ndim() {
                origin.push(0);
                extent.push(n);
                got.push((0, 0));
                continue;
            }
            let (b, a) = halo
                .as_ref()
                .and_then(|h| h.get(ax))
                .map_or((0, 0), |&(b, a)| (b as u64, a as u64));
            let end = region.origin[ax] + region.shape[ax];
            let lo = region.origin[ax].saturating_sub(b);
            let hi = end.saturating_add(a).min(n).max(end.min(n));
            origin.push(lo);
            extent.push(hi - lo);
            got.push((region.origin[ax] - lo, hi.saturating_sub(end)));
        }
        (Region::new(origin, extent), got)
    }
    /// The halo its sent chunks carry (an overlap stage's).
    fn sends_halo(&self) -> Option<&[(usize, usize)]> {
        None
    }
    /// Runs one call at a time (a library with a global lock).
    fn serial(&self) -> bool {
        false
    }
    /// The scratch folder of a stage that keeps stores there.
    fn scratch_dir_mut(&mut self) -> Option<&mut PathBuf> {
        None
    }
    /// What it writes, for writers.
    fn writes(&self) -> Option<Writes<'_>> {
        None
    }
    /// The keys of the results it writes and what each one is (write-json),
    /// for `blockflow plan` and the docs.
    fn result_keys(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// A barrier whose result merges from per-chunk partials (a reduction
    /// over the whole array or per block): a distributed run has the
    /// tasks that compute its input store each chunk's partial, and one
    /// task merge them in chunk order, as the batch run does.
    fn partials(&self) -> Option<&dyn PartialReduce> {
        None
    }
    /// Whether its `input_region` gives the right input regions where an
    /// input's shape is not the output's (a vector per frame, a difference
    /// along an axis); a distributed run otherwise computes such a stage in
    /// one task.
    fn regional(&self) -> bool {
        false
    }
    /// Merges this stage with `first`, its only input, whose only consumer
    /// it is (separable filters run as one pass), or None.
    fn fuse_after(&self, _first: &dyn Stage, _first_name: &str) -> Option<Box<dyn Stage>> {
        None
    }
    /// A stage that can trade memory for disk (a rechunk left to the
    /// planner): switch to disk and say why; false if it cannot.
    fn spill(&mut self, _cx: &SpillCx<'_>) -> bool {
        false
    }
    /// After a spill, given `spare` bytes of the budget: use some to make
    /// the disk route cheaper.
    fn tune_spill(&mut self, _cx: &SpillCx<'_>, _spare: u64) {}
    /// What to advise when this stage projects the most of a plan over
    /// its budget (`serves`: the stage it works for), instead of the usual
    /// knobs (`parallel`, `capacity`, smaller chunks); None: those.
    fn over_budget(&self, _serves: &str) -> Option<String> {
        None
    }
}

/// What [`Stage::spill`] sees.
#[derive(Debug, Clone, Copy)]
pub struct SpillCx<'a> {
    pub grid: &'a ChunkGrid,
    pub item: u64,
    pub memory: u64,
    /// This stage's projection, and the plan's, before the spill.
    pub own: u64,
    pub projected: u64,
}

/// Cloning and downcasting for every [`Stage`] (implemented for any
/// `Clone` stage).
pub trait StageBase {
    fn clone_box(&self) -> Box<dyn Stage>;
    fn as_any(&self) -> &dyn Any;
}

impl<T: Stage + Clone + 'static> StageBase for T {
    fn clone_box(&self) -> Box<dyn Stage> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl dyn Stage {
    /// The kind's name (as [`Stage::kind`]).
    pub fn name(&self) -> &'static str {
        self.kind()
    }
}

impl Clone for Box<dyn Stage> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// How a stage runs.
pub enum Exec<'a> {
    Source(&'a dyn SourceOp),
    Map(&'a dyn MapKernel),
    Window(Window),
    Barrier(&'a dyn BarrierOp),
    Sink(&'a dyn SinkOp),
}

/// A stream from one grid into another (see [`Regrid`]); `drop`: the axes
/// an integer index removes (a slice).
#[derive(Debug, Clone)]
pub struct Window {
    pub regrid: Regrid,
    pub drop: Vec<bool>,
}

/// What opening a source or a sink sees.
#[derive(Debug, Clone, Copy)]
pub struct BuildCx<'a> {
    pub stage: &'a PlannedStage,
    /// The inputs' streams, in order.
    pub inputs: &'a [Option<ArraySpec>],
}

/// A stage that reads its chunks from a store (or makes them).
pub trait SourceOp: Send + Sync {
    /// Opens the store for a run, checking it is still what was planned.
    fn open(&self, cx: &BuildCx<'_>) -> Result<Box<dyn ChunkSource>, IoError>;
}

/// An open store: reads any region of its array.
pub trait ChunkSource: Send + Sync {
    /// The data of `region`; `index` is the stream chunk's grid index when
    /// the region is one (a hint for caches), None for any other region.
    fn read(&self, region: &Region, index: Option<&[u64]>) -> Result<ArrayData, String>;
    /// Streams the whole grid itself when it can do better than reading
    /// chunk by chunk (each stored chunk decoded once); None: it cannot.
    fn stream(&self, _io: &mut StageIo<'_, '_>) -> Option<Result<(), RunError>> {
        None
    }
    /// For the report: stored chunks decoded.
    fn decoded(&self) -> Option<u64> {
        None
    }
}

/// Per-run state of a map kernel (registration's reference), made from
/// the first set of inputs it sees; shared by the chunks computed at once.
pub type KernelState = Option<std::sync::Arc<dyn Any + Send + Sync>>;

/// One output chunk from one chunk of each input.
pub trait MapKernel: Send + Sync {
    /// The state for a run, from the first set of inputs (None if the
    /// kernel keeps none).
    fn init(&self, _first: &[Chunk]) -> Result<KernelState, String> {
        Ok(None)
    }
    /// The output for `region` (grid index `index`) from `inputs`, each
    /// with the halo the stage asked for (fewer at the array's edges).
    fn apply(
        &self,
        state: &KernelState,
        inputs: &[Chunk],
        index: &[u64],
        region: &Region,
    ) -> Result<ArrayData, String>;
    /// Bytes the state holds, and per chunk beyond its input and output,
    /// for the run report.
    fn held_bytes(&self, _state: &KernelState, _chunks: usize) -> u64 {
        0
    }
    /// `Some(k)`: the output is input `k` unchanged (its buffers are shared).
    fn forwards(&self) -> Option<usize> {
        None
    }
    /// Whether `init` makes a state that the results depend on (a
    /// registration's reference, made from the first frame): the ingest
    /// keeps what it was made from and makes it again when it resumes, and
    /// the kernel cannot compute an arbitrary region on its own.
    fn keeps_state(&self) -> bool {
        false
    }
}

/// A barrier that reduces each chunk to a partial and merges them in
/// chunk order (see [`Stage::partials`]).
pub trait PartialReduce: Send + Sync {
    /// The partial of the chunk of `data` at `origin`, as bytes.
    fn chunk_partial(&self, data: &ArrayData, origin: &[u64]) -> Vec<u8>;
    /// The output (`out`), from the partials of every chunk of the input,
    /// in its row-major chunk order.
    fn merge(
        &self,
        parts: &mut dyn Iterator<Item = Vec<u8>>,
        out: &ArraySpec,
    ) -> Result<ArrayData, String>;
}

/// A stage that takes every chunk of its inputs before it emits.
pub trait BarrierOp: Send + Sync {
    fn start(&self, io: &mut StageIo<'_, '_>) -> Result<Box<dyn Barrier>, RunError>;
}

/// A barrier's state through a run.
pub trait Barrier: Send + Sync {
    /// Work on one chunk that runs beside other chunks' (in the compute
    /// pool): a reduction's partial. Default: none.
    fn prepare(
        &self,
        _input: usize,
        _chunk: &Chunk,
    ) -> Result<Option<Box<dyn Any + Send>>, String> {
        Ok(None)
    }
    /// Takes a chunk with what `prepare` made of it, in each input's
    /// row-major order (inputs interleave in any order).
    fn add(
        &mut self,
        io: &mut StageIo<'_, '_>,
        input: usize,
        chunk: Chunk,
        part: Option<Box<dyn Any + Send>>,
    ) -> Result<(), RunError>;
    /// Every input has ended: compute and send.
    fn finish(self: Box<Self>, io: &mut StageIo<'_, '_>) -> Result<(), RunError>;
    /// How many chunks it takes from its inputs at once (prepared together
    /// in the pool), given the stage's `parallel`. A barrier that works on
    /// one chunk at a time says 1, so it holds no more than it projects.
    fn at_once(&self, parallel: usize) -> usize {
        parallel
    }
}

/// A writer.
pub trait SinkOp: Send + Sync {
    /// Claims the output and opens it for a run.
    fn open(&self, cx: &BuildCx<'_>) -> Result<Box<dyn ChunkSink>, IoError>;
}

/// An open output: takes chunks (several at once, from the compute pool),
/// then commits when every stage of the run succeeded.
pub trait ChunkSink: Send + Sync {
    /// Writes one chunk of input `input`.
    fn write(&self, input: usize, chunk: &Chunk) -> Result<(), String>;
    /// Every input has ended: check and assemble what is written at the end.
    fn finish(&mut self, _inputs: &[String]) -> Result<(), String> {
        Ok(())
    }
    /// Bytes it holds beyond the chunks being written (a preview's sums).
    fn held_bytes(&self) -> u64 {
        0
    }
    /// Whether each chunk written counts as progress.
    fn counts_progress(&self) -> bool {
        true
    }
    /// Puts the output in place; returns the paths written.
    fn commit(self: Box<Self>) -> Result<Vec<PathBuf>, IoError>;
}
