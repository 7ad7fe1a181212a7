//! Sources and sinks over the io crate's seams ([`blockflow_io::ChunkSource`],
//! [`blockflow_io::ChunkSink`]): the readers and writers whose store
//! reads any region or writes any chunk hold one of these, and never ask
//! which store it is.

use std::path::{Path, PathBuf};

use blockflow_core::{ArrayData, Chunk, Region};
use blockflow_io::{IoError, StoreSpec};

use super::{BuildCx, ChunkSink, ChunkSource};

/// A store opened for a run.
pub struct StoreSource {
    store: Box<dyn blockflow_io::ChunkSource>,
}

impl StoreSource {
    /// `store` for a run of `cx`'s stage: refused when its array is no
    /// longer the one planned (the file at `path` changed since).
    pub fn checked(
        cx: &BuildCx<'_>,
        path: &Path,
        store: Box<dyn blockflow_io::ChunkSource>,
    ) -> Result<Box<dyn ChunkSource>, IoError> {
        check_planned(cx, path, &store.spec())?;
        Ok(Box::new(StoreSource { store }))
    }
}

/// Whether a store still holds the array the plan read (shape and dtype).
pub fn check_planned(cx: &BuildCx<'_>, path: &Path, spec: &StoreSpec) -> Result<(), IoError> {
    let Some(planned) = &cx.stage.output else {
        return Ok(());
    };
    if spec.shape.as_slice() != planned.shape() || spec.dtype != planned.dtype {
        return Err(IoError::Store {
            path: path.to_path_buf(),
            why: format!(
                "changed since it was planned: it holds {:?} {} now, the plan read {:?} {}",
                spec.shape,
                spec.dtype,
                planned.shape(),
                planned.dtype
            ),
        });
    }
    Ok(())
}

impl ChunkSource for StoreSource {
    fn read(&self, region: &Region, index: Option<&[u64]>) -> Result<ArrayData, String> {
        self.store
            .read(region, index.unwrap_or(&[]))
            .map_err(|e| e.to_string())
    }
}

/// An output that takes each chunk of its one input where it belongs.
pub struct StoreSink {
    store: Box<dyn blockflow_io::ChunkSink>,
}

impl StoreSink {
    pub fn boxed(store: Box<dyn blockflow_io::ChunkSink>) -> Box<dyn ChunkSink> {
        Box::new(StoreSink { store })
    }
}

impl ChunkSink for StoreSink {
    fn write(&self, _input: usize, chunk: &Chunk) -> Result<(), String> {
        self.store
            .write(&chunk.region, chunk.array(), &chunk.index)
            .map_err(|e| e.to_string())
    }
    fn held_bytes(&self) -> u64 {
        self.store.held_bytes()
    }
    fn commit(self: Box<Self>) -> Result<Vec<PathBuf>, IoError> {
        self.store.commit()
    }
}

/// The chunks of each input of a writer of small results, kept until
/// every input has ended, then each input assembled whole.
pub struct Gathered {
    parts: std::sync::Mutex<Vec<Vec<Chunk>>>,
}

impl Gathered {
    pub fn new(inputs: usize) -> Self {
        Gathered {
            parts: std::sync::Mutex::new(vec![Vec::new(); inputs]),
        }
    }

    /// Keeps a chunk of input `input`.
    pub fn keep(&self, input: usize, chunk: &Chunk) -> Result<(), String> {
        let mut parts = self
            .parts
            .lock()
            .map_err(|_| "another chunk failed while it was kept")?;
        parts
            .get_mut(input)
            .ok_or_else(|| format!("internal: no input {input}"))?
            .push(chunk.clone());
        Ok(())
    }

    /// Each input whole, in order; an error names the input (`names`).
    pub fn arrays(&mut self, names: &[String]) -> Result<Vec<ArrayData>, String> {
        let parts = std::mem::take(
            self.parts
                .get_mut()
                .map_err(|_| "a chunk failed while it was kept")?,
        );
        parts
            .iter()
            .zip(names)
            .map(|(chunks, name)| {
                crate::exec::gather(chunks).map_err(|m| format!("input \"{name}\": {m}"))
            })
            .collect()
    }
}
