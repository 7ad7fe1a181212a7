//! Scratch stores for the barriers that keep their inputs until all have
//! arrived (take, transpose, concatenate, stack, matmul's bands, pca's
//! second pass): a [`Keeper`] made in `BarrierOp::start`, fed by
//! `Barrier::add`, read back in `Barrier::finish` as [`Kept`]. Every store
//! lives in the stage's scratch folder under a name unique to the run and
//! is removed when the stage ends, however it ends.

use std::path::{Path, PathBuf};

use blockflow_core::{Chunk, ChunkGrid, DType};
use blockflow_io::zarr::{Codec, ZarrReader, ZarrWriteOptions, ZarrWriter};
use blockflow_io::IoError;

use super::{RunError, StageIo};

/// An uncompressed scratch array at `path` (removed when dropped unfinished).
pub fn scratch_store(path: &Path, dtype: DType, grid: &ChunkGrid) -> Result<ZarrWriter, IoError> {
    let options = ZarrWriteOptions {
        zarr_format: 3,
        dtype,
        shape: grid.shape().to_vec(),
        chunks: grid.chunk_shape().to_vec(),
        codec: Codec::None,
        level: 0,
        shards: None,
        encoding: Default::default(),
        dimension_names: None,
        overwrite: true,
        attributes: Default::default(),
    };
    ZarrWriter::in_place(path, &options)
}

/// Keeps each input's chunks as they arrive: those of an input with a
/// grid in a scratch store of their own (that grid, the first chunk's
/// dtype), the others in memory (small inputs: an index, a matrix held
/// whole).
#[derive(Debug)]
pub struct Keeper {
    grids: Vec<Option<ChunkGrid>>,
    paths: Vec<PathBuf>,
    names: Vec<String>,
    stores: Vec<Option<ZarrWriter>>,
    chunks: Vec<Vec<Chunk>>,
}

impl Keeper {
    /// A keeper of the stage's inputs (`grids`: one per input) in `dir`.
    pub fn new(io: &StageIo<'_, '_>, dir: &Path, grids: Vec<Option<ChunkGrid>>) -> Keeper {
        let base = io.scratch_path(dir);
        let n = grids.len();
        Keeper {
            paths: (0..n)
                .map(|i| PathBuf::from(format!("{}-{i}", base.display())))
                .collect(),
            names: io.input_names(),
            stores: (0..n).map(|_| None).collect(),
            chunks: vec![Vec::new(); n],
            grids,
        }
    }

    /// Keeps chunk `c` of input `input`.
    pub fn add(&mut self, io: &StageIo<'_, '_>, input: usize, c: Chunk) -> Result<(), RunError> {
        let Some(grid) = self.grids.get(input).and_then(Option::as_ref) else {
            if let Some(list) = self.chunks.get_mut(input) {
                list.push(c);
            }
            return Ok(());
        };
        if self.stores[input].is_none() {
            let store = scratch_store(&self.paths[input], c.array().dtype(), grid)
                .map_err(|e| io.err(None, e.to_string()))?;
            self.stores[input] = Some(store);
        }
        if let Some(w) = &self.stores[input] {
            w.write(&c.region, c.array(), &c.index)
                .map_err(|e| io.err(Some(&c.index), format!("keeping the chunk: {e}")))?;
        }
        Ok(())
    }

    /// Every input has ended: opens the stores to read back.
    pub fn finish(self, io: &StageIo<'_, '_>) -> Result<Kept, RunError> {
        let mut kept = Kept {
            readers: Vec::new(),
            stores: Vec::new(),
            chunks: self.chunks,
        };
        for (i, (store, path)) in self.stores.into_iter().zip(&self.paths).enumerate() {
            if self.grids[i].is_none() {
                kept.readers.push(None);
                continue;
            }
            let name = self.names.get(i).map_or("?", String::as_str);
            let store = store.ok_or_else(|| io.err(None, format!("\"{name}\" sent no chunks")))?;
            kept.readers
                .push(Some(ZarrReader::open(path).map_err(|e| {
                    io.err(None, format!("reading \"{name}\" back: {e}"))
                })?));
            kept.stores.push(store);
        }
        Ok(kept)
    }
}

/// What a [`Keeper`] kept: a reader and its store for each input kept on
/// disk (dropping it removes the stores), the chunks of those kept in memory.
#[derive(Debug)]
pub struct Kept {
    readers: Vec<Option<ZarrReader>>,
    stores: Vec<ZarrWriter>,
    chunks: Vec<Vec<Chunk>>,
}

impl Kept {
    /// The reader of input `i`, kept on disk.
    pub fn reader(&self, io: &StageIo<'_, '_>, i: usize) -> Result<&ZarrReader, RunError> {
        self.readers
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| io.err(None, format!("internal: input {i} was not kept on disk")))
    }

    /// The chunks of input `i`, kept in memory, in arrival order.
    pub fn chunks(&self, i: usize) -> &[Chunk] {
        self.chunks.get(i).map_or(&[], Vec::as_slice)
    }
}

/// What a barrier that keeps all its inputs (see [`Keeper`]) does once
/// every input has arrived; [`KeepThen`] is the barrier.
pub trait AfterKeep: Clone + Send + Sync + 'static {
    /// Per input, the grid of a scratch store to keep it in (None: kept
    /// in memory, for small inputs).
    fn kept_grids(&self) -> Vec<Option<ChunkGrid>>;
    /// The scratch folder.
    fn kept_dir(&self) -> &Path;
    /// Chunks kept at once; the stage's memory projection counts this many.
    fn kept_at_once(&self, _parallel: usize) -> usize {
        1
    }
    /// Computes and sends the result from what was kept.
    fn after(&self, io: &mut StageIo<'_, '_>, kept: &Kept) -> Result<(), RunError>;
}

/// The barrier that keeps every chunk of its inputs, then runs `T::after`.
pub struct KeepThen<T> {
    op: T,
    keeper: Keeper,
}

impl<T: AfterKeep> KeepThen<T> {
    /// The barrier for a run of `op` (for `BarrierOp::start`).
    pub fn start(op: &T, io: &StageIo<'_, '_>) -> Box<dyn crate::stages::Barrier> {
        Box::new(KeepThen {
            keeper: Keeper::new(io, op.kept_dir(), op.kept_grids()),
            op: op.clone(),
        })
    }
}

impl<T: AfterKeep> crate::stages::Barrier for KeepThen<T> {
    fn at_once(&self, parallel: usize) -> usize {
        self.op.kept_at_once(parallel)
    }

    fn add(
        &mut self,
        io: &mut StageIo<'_, '_>,
        input: usize,
        chunk: Chunk,
        _part: Option<Box<dyn std::any::Any + Send>>,
    ) -> Result<(), RunError> {
        self.keeper.add(io, input, chunk)
    }

    fn finish(self: Box<Self>, io: &mut StageIo<'_, '_>) -> Result<(), RunError> {
        let KeepThen { op, keeper } = *self;
        let kept = keeper.finish(io)?;
        op.after(io, &kept)
    }
}
