//! blockflow io: readers and writers.
//!
//! - [`zarr`]: Zarr v2 and v3 arrays through zarrs, read by region and
//!   written chunk by chunk with atomic chunk files;
//! - [`images`]: sorted globs of PNG/JPEG/TIFF images decoded to (H, W, C)
//!   arrays, and a generator of fluorescence-like cell images;
//! - [`synthetic`]: deterministic generated arrays (a survey image, an RGBA
//!   terrain, noise, ramps) whose every chunk is computed from its region
//!   alone, so any chunking gives the same array.
//!
//! Readers implement [`ChunkSource`] (an array spec, any region read) and
//! writers [`ChunkSink`] (chunks written, then committed): the seams the
//! engine's stages hold them by.
//!
//! Every error names the path and, where there is one, the chunk.

pub mod atomic_store;
pub mod blocks;
mod gzip_check;
pub mod hdf5;
pub mod images;
pub mod json;
mod lz4_codec;
pub mod ome;
pub mod output;
pub mod preview;
pub mod remote;
pub mod store;
pub mod stored_chunks;
pub mod synthetic;
pub mod table;
pub mod zarr;
mod zarr_meta;

use std::path::PathBuf;

pub use store::{ChunkSink, ChunkSource, StoreSpec};

/// Errors of readers and writers.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{path}: no such file or directory")]
    Missing { path: PathBuf },
    #[error("{path}: not a Zarr array ({why})")]
    NotZarr { path: PathBuf, why: String },
    #[error("{path}: data type `{dtype}` is not supported (supported: bool, uint8, uint16, uint32, int16, int32, int64, float32, float64)")]
    UnsupportedDType { path: PathBuf, dtype: String },
    #[error("{path}: chunk {chunk:?} (region {region}): {why}")]
    Chunk {
        path: PathBuf,
        chunk: Vec<u64>,
        region: String,
        why: String,
    },
    #[error("{path}: stored chunk {chunk:?} (file {key}): {why}")]
    StoredChunk {
        path: PathBuf,
        chunk: Vec<u64>,
        key: String,
        why: String,
    },
    #[error("{path}: {why}")]
    Store { path: PathBuf, why: String },
    #[error("{path} already exists; set `if_exists = \"overwrite\"` (or `--set STAGE.if_exists=overwrite`) to replace it")]
    Exists { path: PathBuf },
    #[error("{path} is in use by another blockflow run ({holder}); wait for it to finish or write elsewhere (lock: {lock})")]
    InUse {
        path: PathBuf,
        holder: String,
        lock: PathBuf,
    },
    #[error("{path} is {what}, not {made} that blockflow wrote; overwrite replaces only that. Move it away or choose another path")]
    NotOurs {
        path: PathBuf,
        what: String,
        made: &'static str,
    },
    #[error("{path}: cannot read the image: {why}")]
    Image { path: PathBuf, why: String },
    #[error("{pattern}: no file matches the pattern (wildcards `*`, `?`, `[...]` are allowed in the file name only)")]
    NoMatch { pattern: String },
    #[error("{path}: {source}")]
    Os {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
