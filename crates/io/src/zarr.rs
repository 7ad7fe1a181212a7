//! Zarr v2 and v3 arrays through zarrs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use blockflow_core::{with_array, with_dtype, ArrayData, ArrayKind, DType, Region};
use ndarray::{ArrayD, IxDyn};
use serde_json::{json, Value};
use zarrs::array::{
    data_type, Array, ArrayMetadata, ArrayMetadataV2, ArrayMetadataV3, ArraySubset, CodecOptions,
};
use zarrs::filesystem::FilesystemStore;

use crate::atomic_store::AtomicFsStore;
use crate::output::{Claim, Made};
use crate::IoError;

/// What `blockflow inspect` and the planner know of a stored array.
#[derive(Debug, Clone)]
pub struct ZarrInfo {
    pub path: PathBuf,
    pub zarr_format: u8,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub chunks: Vec<u64>,
    /// Codec chain as written in the metadata (v3 `codecs`, or v2 filters and compressor).
    pub codecs: String,
    pub fill_value: String,
}

fn zarr_dtype(dt: &zarrs::array::DataType) -> Option<DType> {
    let table = [
        (data_type::bool(), DType::Bool),
        (data_type::uint8(), DType::U8),
        (data_type::uint16(), DType::U16),
        (data_type::uint32(), DType::U32),
        (data_type::int16(), DType::I16),
        (data_type::int32(), DType::I32),
        (data_type::int64(), DType::I64),
        (data_type::float32(), DType::F32),
        (data_type::float64(), DType::F64),
    ];
    table.into_iter().find(|(z, _)| z == dt).map(|(_, d)| d)
}

/// Codec options for one chunk: blockflow runs chunks in parallel itself,
/// so zarrs is asked not to split a chunk's codec work across threads too.
fn chunk_options() -> CodecOptions {
    CodecOptions::default().with_concurrent_target(1)
}

/// Checks that `path` looks like a Zarr array before zarrs sees it, so the
/// error says what is wrong in the user's terms.
fn check_array_dir(path: &Path) -> Result<(), IoError> {
    if !path.exists() {
        return Err(IoError::Missing {
            path: path.to_path_buf(),
        });
    }
    if !path.is_dir() {
        return Err(IoError::NotZarr {
            path: path.to_path_buf(),
            why: "it is a file; a Zarr array is a directory".into(),
        });
    }
    let v3 = path.join("zarr.json");
    if path.join(".zarray").is_file() {
        return Ok(());
    }
    if v3.is_file() {
        let text = std::fs::read_to_string(&v3).map_err(|source| IoError::Os {
            path: v3.clone(),
            source,
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| IoError::NotZarr {
            path: path.to_path_buf(),
            why: format!("zarr.json is not valid JSON: {e}"),
        })?;
        return match v.get("node_type").and_then(Value::as_str) {
            Some("array") => Ok(()),
            Some("group") => Err(IoError::NotZarr {
                path: path.to_path_buf(),
                why: "it is a Zarr group; point at one of its arrays".into(),
            }),
            _ => Err(IoError::NotZarr {
                path: path.to_path_buf(),
                why: "zarr.json has no node_type".into(),
            }),
        };
    }
    if path.join(".zgroup").is_file() {
        return Err(IoError::NotZarr {
            path: path.to_path_buf(),
            why: "it is a Zarr v2 group; point at one of its arrays".into(),
        });
    }
    Err(IoError::NotZarr {
        path: path.to_path_buf(),
        why: "it holds neither zarr.json (v3) nor .zarray (v2)".into(),
    })
}

/// A Zarr array opened for reading.
pub struct ZarrReader {
    pub info: ZarrInfo,
    array: Array<FilesystemStore>,
    /// Stored chunks decoded so far (by [`ZarrReader::read`] and
    /// [`ZarrReader::read_stored`]), for the run report and the tests.
    decoded: AtomicU64,
}

impl std::fmt::Debug for ZarrReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZarrReader")
            .field("info", &self.info)
            .finish()
    }
}

impl ZarrReader {
    pub fn open(path: &Path) -> Result<Self, IoError> {
        check_array_dir(path)?;
        crate::gzip_check::register();
        let store = FilesystemStore::new(path).map_err(|e| IoError::Store {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        let array = Array::open(Arc::new(store), "/").map_err(|e| IoError::NotZarr {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        let meta = serde_json::to_value(array.metadata()).unwrap_or(Value::Null);
        let dtype = zarr_dtype(array.data_type()).ok_or_else(|| IoError::UnsupportedDType {
            path: path.to_path_buf(),
            dtype: meta
                .get("data_type")
                .or_else(|| meta.get("dtype"))
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into()),
        })?;
        let (zarr_format, chunks, codecs) = match array.metadata() {
            ArrayMetadata::V2(m) => {
                let mut parts = Vec::new();
                if let Some(f) = &m.filters {
                    for f in f {
                        parts.push(serde_json::to_string(f).unwrap_or_default());
                    }
                }
                parts.push(match &m.compressor {
                    Some(c) => serde_json::to_string(c).unwrap_or_default(),
                    None => "no compressor".into(),
                });
                (
                    2,
                    m.chunks.iter().map(|c| c.get()).collect(),
                    parts.join(" -> "),
                )
            }
            ArrayMetadata::V3(_) => {
                let chunks = meta
                    .pointer("/chunk_grid/configuration/chunk_shape")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .ok_or_else(|| IoError::NotZarr {
                        path: path.to_path_buf(),
                        why: "only regular chunk grids are supported".into(),
                    })?;
                let codecs = meta
                    .get("codecs")
                    .and_then(Value::as_array)
                    .map(|cs| {
                        cs.iter()
                            .map(|c| {
                                let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
                                match c.get("configuration") {
                                    Some(cfg) if cfg.as_object().is_some_and(|o| !o.is_empty()) => {
                                        format!("{name}{cfg}")
                                    }
                                    _ => name.to_string(),
                                }
                            })
                            .collect::<Vec<_>>()
                            .join(" -> ")
                    })
                    .unwrap_or_default();
                (3, chunks, codecs)
            }
        };
        let fill_value = meta
            .get("fill_value")
            .map(|v| v.to_string())
            .unwrap_or_else(|| "null".into());
        Ok(ZarrReader {
            info: ZarrInfo {
                path: path.to_path_buf(),
                zarr_format,
                dtype,
                shape: array.shape().to_vec(),
                chunks,
                codecs,
                fill_value,
            },
            array,
            decoded: AtomicU64::new(0),
        })
    }

    /// Reads `region`, decoding only the stored chunks it intersects.
    /// `chunk` is the caller's grid index, for the error message.
    pub fn read(&self, region: &Region, chunk: &[u64]) -> Result<ArrayData, IoError> {
        let subset = ArraySubset::new_with_ranges(&region.ranges());
        let err = |e: zarrs::array::ArrayError| IoError::Chunk {
            path: self.info.path.clone(),
            chunk: chunk.to_vec(),
            region: region.to_string(),
            why: e.to_string(),
        };
        let out = with_dtype!(self.info.dtype, T => {
            let a: ArrayD<T> = self.array.retrieve_array_subset_opt(&subset, &chunk_options()).map_err(err)?;
            T::wrap(a)
        });
        // zarrs decodes each stored chunk the region overlaps once.
        let overlapped: u64 = region
            .origin
            .iter()
            .zip(&region.shape)
            .zip(&self.info.chunks)
            .map(|((&o, &n), &c)| {
                let c = c.max(1);
                if n == 0 {
                    0
                } else {
                    (o + n - 1) / c - o / c + 1
                }
            })
            .product();
        self.decoded.fetch_add(overlapped, Ordering::Relaxed);
        Ok(out)
    }

    /// Decodes the whole stored chunk at stored grid index `stored` (its
    /// full chunk shape, padded past the array's edge as stored), for
    /// [`crate::stored_chunks::StoredChunks`]. A chunk that is not stored
    /// reads as the fill value.
    pub fn read_stored(&self, stored: &[u64]) -> Result<ArrayData, IoError> {
        let err = |e: zarrs::array::ArrayError| IoError::StoredChunk {
            path: self.info.path.clone(),
            chunk: stored.to_vec(),
            key: self.array.chunk_key(stored).to_string(),
            why: e.to_string(),
        };
        let out = with_dtype!(self.info.dtype, T => {
            let a: ArrayD<T> = self.array.retrieve_chunk_opt(stored, &chunk_options()).map_err(err)?;
            T::wrap(a)
        });
        self.decoded.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }

    /// Stored chunks this reader has decoded so far (a stored chunk that
    /// several reads overlap counts once per read).
    pub fn stored_chunks_decoded(&self) -> u64 {
        self.decoded.load(Ordering::Relaxed)
    }

    /// Bytes the array's files take on disk.
    pub fn stored_bytes(&self) -> u64 {
        dir_size(&self.info.path)
    }
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// Codec of a written array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Zstd,
    Blosc,
    Gzip,
}

impl Codec {
    pub const NAMES: [&'static str; 4] = ["zstd", "blosc", "gzip", "none"];
    pub fn parse(s: &str) -> Option<Codec> {
        match s {
            "none" => Some(Codec::None),
            "zstd" => Some(Codec::Zstd),
            "blosc" => Some(Codec::Blosc),
            "gzip" => Some(Codec::Gzip),
            _ => None,
        }
    }
}

/// How to create an output array.
#[derive(Debug, Clone)]
pub struct ZarrWriteOptions {
    pub zarr_format: u8,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub chunks: Vec<u64>,
    pub codec: Codec,
    pub level: i32,
    pub overwrite: bool,
    pub attributes: serde_json::Map<String, Value>,
}

fn v2_dtype(d: DType) -> &'static str {
    match d {
        DType::Bool => "|b1",
        DType::U8 => "|u1",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::I16 => "<i2",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::F32 => "<f4",
        DType::F64 => "<f8",
    }
}

fn fill_zero(d: DType) -> Value {
    match d {
        DType::Bool => json!(false),
        d if d.is_float() => json!(0.0),
        _ => json!(0),
    }
}

/// The metadata document of an array to create.
pub fn metadata_json(o: &ZarrWriteOptions) -> Value {
    let typesize = o.dtype.size();
    if o.zarr_format == 2 {
        let compressor = match o.codec {
            Codec::None => Value::Null,
            Codec::Zstd => json!({"id": "zstd", "level": o.level}),
            Codec::Gzip => json!({"id": "gzip", "level": o.level}),
            Codec::Blosc => {
                json!({"id": "blosc", "cname": "zstd", "clevel": o.level, "shuffle": 1, "blocksize": 0})
            }
        };
        json!({
            "zarr_format": 2,
            "shape": o.shape,
            "chunks": o.chunks,
            "dtype": v2_dtype(o.dtype),
            "compressor": compressor,
            "fill_value": fill_zero(o.dtype),
            "order": "C",
            "filters": null,
            "dimension_separator": ".",
            "attributes": o.attributes,
        })
    } else {
        let mut codecs = vec![json!({"name": "bytes", "configuration": {"endian": "little"}})];
        match o.codec {
            Codec::None => {}
            Codec::Zstd => codecs.push(json!({"name": "zstd", "configuration": {"level": o.level, "checksum": false}})),
            Codec::Gzip => codecs.push(json!({"name": "gzip", "configuration": {"level": o.level}})),
            Codec::Blosc => codecs.push(json!({"name": "blosc", "configuration": {
                "cname": "zstd", "clevel": o.level, "shuffle": if typesize > 1 { "shuffle" } else { "noshuffle" },
                "typesize": typesize, "blocksize": 0}})),
        }
        json!({
            "zarr_format": 3,
            "node_type": "array",
            "shape": o.shape,
            "data_type": o.dtype.name(),
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": o.chunks}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": fill_zero(o.dtype),
            "codecs": codecs,
            "attributes": o.attributes,
        })
    }
}

/// A Zarr array being written. Chunks go into the run's work folder beside
/// the path (under the output's [`Claim`]: an exclusive lock, per-run work
/// names), each chunk file atomically; [`ZarrWriter::finish`] moves the
/// folder into place in one exchange, so a path that exists is always a
/// complete result, old or new.
pub struct ZarrWriter {
    pub path: PathBuf,
    chunks: Vec<u64>,
    shape: Vec<u64>,
    dtype: DType,
    array: Array<AtomicFsStore>,
    // Last: dropping it removes an unfinished array.
    owner: Owner,
}

/// Where a writer's chunks go and who removes them.
enum Owner {
    /// An output: assembled under the claim's work name, committed by it.
    Claim(Claim),
    /// A scratch array or a member of a group being assembled: written in
    /// place, removed when dropped unless kept.
    InPlace { dir: PathBuf, keep: bool },
}

impl Drop for Owner {
    fn drop(&mut self) {
        if let Owner::InPlace { dir, keep: false } = self {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl std::fmt::Debug for ZarrWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZarrWriter")
            .field("path", &self.path)
            .finish()
    }
}

/// `path` with `suffix` appended to its last component (`a.zarr` ->
/// `a.zarr.state`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

impl ZarrWriter {
    /// An output at `path`: claimed (refused if another run holds it, or
    /// if it exists and may not, or cannot, be replaced), written under
    /// the claim's work name.
    pub fn create(path: &Path, o: &ZarrWriteOptions) -> Result<Self, IoError> {
        let claim = Claim::take(path, Made::Zarr, o.overwrite)?;
        let dir = claim.partial().to_path_buf();
        Self::open_in(path, dir, o, Owner::Claim(claim))
    }

    /// An array written in place at `dir` (a scratch store of this run, or
    /// a member of a group assembled in a work folder): removed when
    /// dropped unfinished, kept by [`ZarrWriter::finish`].
    pub fn in_place(dir: &Path, o: &ZarrWriteOptions) -> Result<Self, IoError> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|source| IoError::Os {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let owner = Owner::InPlace {
            dir: dir.to_path_buf(),
            keep: false,
        };
        Self::open_in(dir, dir.to_path_buf(), o, owner)
    }

    /// An array written in place at `dir` by several processes at once
    /// (the tasks of a distributed run): created if missing, never removed;
    /// each chunk file is written whole and renamed into place.
    pub fn open_existing(dir: &Path, o: &ZarrWriteOptions) -> Result<Self, IoError> {
        let owner = Owner::InPlace {
            dir: dir.to_path_buf(),
            keep: true,
        };
        Self::open_in(dir, dir.to_path_buf(), o, owner)
    }

    fn open_in(
        path: &Path,
        dir: PathBuf,
        o: &ZarrWriteOptions,
        owner: Owner,
    ) -> Result<Self, IoError> {
        std::fs::create_dir_all(&dir).map_err(|source| IoError::Os {
            path: dir.clone(),
            source,
        })?;
        let store = Arc::new(AtomicFsStore::new(&dir).map_err(|e| IoError::Store {
            path: dir.clone(),
            why: e.to_string(),
        })?);
        let array = new_array(store, path, o)?;
        Ok(ZarrWriter {
            path: path.to_path_buf(),
            chunks: o.chunks.clone(),
            shape: o.shape.clone(),
            dtype: o.dtype,
            array,
            owner,
        })
    }

    /// The folder the chunks are written to now (the work folder of an
    /// output, the array itself for one written in place).
    pub fn dir(&self) -> &Path {
        match &self.owner {
            Owner::Claim(c) => c.partial(),
            Owner::InPlace { dir, .. } => dir,
        }
    }

    /// Writes `data` at `region`. The region must start on a chunk boundary
    /// and end on one or at the array's edge, so whole chunks are written.
    pub fn write(&self, region: &Region, data: &ArrayData, chunk: &[u64]) -> Result<(), IoError> {
        let err = |why: String| IoError::Chunk {
            path: self.path.clone(),
            chunk: chunk.to_vec(),
            region: region.to_string(),
            why,
        };
        if data.dtype() != self.dtype {
            return Err(err(format!(
                "data is {} but the array is {}",
                data.dtype(),
                self.dtype
            )));
        }
        store_whole_chunks(&self.array, &self.chunks, &self.shape, region, data).map_err(err)
    }

    /// Moves the finished array into place (replacing an old one if
    /// allowed), or keeps an array written in place.
    pub fn finish(mut self) -> Result<PathBuf, IoError> {
        match &mut self.owner {
            Owner::Claim(c) => c.commit()?,
            Owner::InPlace { keep, .. } => *keep = true,
        }
        Ok(self.path.clone())
    }
}

/// The array `o` describes, created in `store` with its metadata stored.
fn new_array(
    store: Arc<AtomicFsStore>,
    path: &Path,
    o: &ZarrWriteOptions,
) -> Result<Array<AtomicFsStore>, IoError> {
    let meta = metadata_json(o);
    let bad = |e: String| IoError::Store {
        path: path.to_path_buf(),
        why: format!("cannot create the array: {e}"),
    };
    let metadata = if o.zarr_format == 2 {
        let mut m = meta.clone();
        let attrs = m.as_object_mut().and_then(|o| o.remove("attributes"));
        let mut v2: ArrayMetadataV2 = serde_json::from_value(m).map_err(|e| bad(e.to_string()))?;
        if let Some(Value::Object(a)) = attrs {
            v2 = v2.with_attributes(a);
        }
        ArrayMetadata::V2(v2)
    } else {
        let v3: ArrayMetadataV3 = serde_json::from_value(meta).map_err(|e| bad(e.to_string()))?;
        ArrayMetadata::V3(v3)
    };
    let array = Array::new_with_metadata(store, "/", metadata).map_err(|e| bad(e.to_string()))?;
    array.store_metadata().map_err(|e| bad(e.to_string()))?;
    Ok(array)
}

/// Stores `data` at `region` of `array` (chunks `chunks`, shape `shape`).
/// The region must start on a chunk boundary and end on one or at the
/// array's edge, so whole chunks are written; edge chunks are stored whole
/// (zarr's convention), padded with the fill value.
fn store_whole_chunks(
    array: &Array<AtomicFsStore>,
    chunks: &[u64],
    shape: &[u64],
    region: &Region,
    data: &ArrayData,
) -> Result<(), String> {
    let mut ranges = Vec::with_capacity(region.ndim());
    for ax in 0..region.ndim() {
        let (o, e, c) = (region.origin[ax], region.end()[ax], chunks[ax]);
        if o % c != 0 || (e % c != 0 && e != shape[ax]) {
            return Err(format!(
                "region does not cover whole output chunks of {chunks:?}"
            ));
        }
        ranges.push(o / c..e.div_ceil(c));
    }
    let padded: Vec<usize> = ranges
        .iter()
        .zip(chunks)
        .map(|(r, c)| ((r.end - r.start) * c) as usize)
        .collect();
    with_array!(data, a => {
        if a.shape() == &padded[..] && a.is_standard_layout() {
            // Borrowed: zarrs encodes straight from the chunk's buffer.
            array.store_chunks_opt(&ranges, a, &chunk_options()).map_err(|e| e.to_string())
        } else {
            let mut p = ArrayD::default(IxDyn(&padded));
            let view: Vec<ndarray::SliceInfoElem> = a
                .shape()
                .iter()
                .map(|&n| ndarray::SliceInfoElem::Slice { start: 0, end: Some(n as isize), step: 1 })
                .collect();
            let info = ndarray::SliceInfo::<_, IxDyn, IxDyn>::try_from(view)
                .map_err(|e| e.to_string())?;
            p.slice_mut(info).assign(a);
            array.store_chunks_opt(&ranges, &p, &chunk_options()).map_err(|e| e.to_string())
        }
    })
}

/// A Zarr array that grows along its first axis, one slab (index) at a
/// time, for an ingest that appends data as it arrives. Chunks along the
/// first axis are 1, so a slab is whole chunks; each chunk file is written
/// atomically (renamed into place). The stored length (the metadata's
/// shape) is raised only by [`ZarrAppender::set_len`], which the caller
/// calls once it has recorded the slab as done: a reader never sees a
/// length whose chunks are not all written, and [`ZarrAppender::open`]
/// removes the chunks of slabs past the length, which a killed run may
/// have left.
pub struct ZarrAppender {
    pub path: PathBuf,
    array: Array<AtomicFsStore>,
    chunks: Vec<u64>,
    len: u64,
}

impl std::fmt::Debug for ZarrAppender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZarrAppender")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish()
    }
}

impl ZarrAppender {
    /// Creates an empty array (length 0 along the first axis) with the
    /// options' dtype, trailing shape, chunks and codec.
    pub fn create(path: &Path, o: &ZarrWriteOptions) -> Result<Self, IoError> {
        if path.exists() {
            return Err(IoError::Store {
                path: path.to_path_buf(),
                why: "exists, but the ingest has no record of it (no state); remove it or point the ingest at its state".into(),
            });
        }
        Self::check_chunks(path, o)?;
        std::fs::create_dir_all(path).map_err(|source| IoError::Os {
            path: path.to_path_buf(),
            source,
        })?;
        let mut o = o.clone();
        o.shape[0] = 0;
        let store = Arc::new(AtomicFsStore::new(path).map_err(|e| IoError::Store {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?);
        let array = new_array(store, path, &o)?;
        Ok(ZarrAppender {
            path: path.to_path_buf(),
            array,
            chunks: o.chunks.clone(),
            len: 0,
        })
    }

    fn check_chunks(path: &Path, o: &ZarrWriteOptions) -> Result<(), IoError> {
        if o.chunks.first() != Some(&1) {
            return Err(IoError::Store {
                path: path.to_path_buf(),
                why: format!(
                    "an array that grows along its first axis needs chunks of 1 along it, not {:?}",
                    o.chunks
                ),
            });
        }
        Ok(())
    }

    /// Opens the array an earlier run created with these options, keeping
    /// its first `len` slabs: its length is set to `len` and the chunk
    /// files of later slabs (and temporary files of interrupted writes) are
    /// removed.
    pub fn open(path: &Path, o: &ZarrWriteOptions, len: u64) -> Result<Self, IoError> {
        Self::check_chunks(path, o)?;
        let i = ZarrReader::open(path)?.info;
        if i.dtype != o.dtype || i.shape[1..] != o.shape[1..] || i.chunks != o.chunks {
            return Err(IoError::Store {
                path: path.to_path_buf(),
                why: format!(
                    "holds {} {:?} in chunks {:?}, but this pipeline appends {} (_, {:?}) in chunks {:?}",
                    i.dtype,
                    i.shape,
                    i.chunks,
                    o.dtype,
                    &o.shape[1..],
                    o.chunks
                ),
            });
        }
        // A run killed after recording slab `len - 1` but before raising
        // the stored length leaves it one short: the slab's chunks were
        // written before it was recorded.
        if i.shape[0] + 1 < len {
            return Err(IoError::Store {
                path: path.to_path_buf(),
                why: format!(
                    "holds {} timepoints but the manifest records {len}: the array was changed outside the ingest",
                    i.shape[0]
                ),
            });
        }
        let os = |p: &Path, source| IoError::Os {
            path: p.to_path_buf(),
            source,
        };
        remove_slabs_from(path, i.zarr_format, len).map_err(|e| os(path, e))?;
        let store = Arc::new(AtomicFsStore::new(path).map_err(|e| IoError::Store {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?);
        let array = Array::open(store, "/").map_err(|e| IoError::NotZarr {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        let mut a = ZarrAppender {
            path: path.to_path_buf(),
            array,
            chunks: o.chunks.clone(),
            len,
        };
        a.set_len(len)?;
        Ok(a)
    }

    /// The stored length along the first axis.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes slab `t` (data of shape `(1, ...)`) without changing the
    /// stored length.
    pub fn write(&mut self, t: u64, data: &ArrayData) -> Result<(), IoError> {
        let mut shape = self.array.shape().to_vec();
        let region = Region::new(
            std::iter::once(t)
                .chain(shape[1..].iter().map(|_| 0))
                .collect(),
            std::iter::once(1)
                .chain(shape[1..].iter().copied())
                .collect(),
        );
        let err = |why: String| IoError::Chunk {
            path: self.path.clone(),
            chunk: vec![t],
            region: region.to_string(),
            why,
        };
        if data.shape() != region.shape_usize() {
            return Err(err(format!(
                "a slab of shape {:?} where {:?} was expected",
                data.shape(),
                region.shape
            )));
        }
        if shape[0] < t + 1 {
            shape[0] = t + 1;
            self.array
                .set_shape(shape.clone())
                .map_err(|e| err(e.to_string()))?;
        }
        store_whole_chunks(&self.array, &self.chunks, &shape, &region, data).map_err(err)
    }

    /// Stores the length `len` in the array's metadata (atomically).
    pub fn set_len(&mut self, len: u64) -> Result<(), IoError> {
        let mut shape = self.array.shape().to_vec();
        shape[0] = len;
        let bad = |e: String| IoError::Store {
            path: self.path.clone(),
            why: format!("cannot store the length {len}: {e}"),
        };
        self.array
            .set_shape(shape)
            .map_err(|e| bad(e.to_string()))?;
        self.array
            .store_metadata()
            .map_err(|e| bad(e.to_string()))?;
        self.len = len;
        Ok(())
    }
}

/// Removes the chunk files of slabs `len..` along the first axis of the
/// array at `path` (v3 `c/T/...`, v2 `T.…`), and temporary files of writes
/// that never finished.
fn remove_slabs_from(path: &Path, zarr_format: u8, len: u64) -> std::io::Result<()> {
    let (dir, v3) = if zarr_format == 3 {
        (path.join("c"), true)
    } else {
        (path.to_path_buf(), false)
    };
    if !dir.exists() {
        return remove_tmp(path);
    }
    for e in std::fs::read_dir(&dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let first = if v3 {
            name.as_str()
        } else {
            name.split('.').next().unwrap_or("")
        };
        if name.starts_with('.') && name.contains(".tmp-") {
            std::fs::remove_file(e.path())?;
        } else if let Ok(t) = first.parse::<u64>() {
            if t >= len {
                if e.file_type()?.is_dir() {
                    std::fs::remove_dir_all(e.path())?;
                } else {
                    std::fs::remove_file(e.path())?;
                }
            }
        }
    }
    remove_tmp(path)
}

/// Removes `.NAME.tmp-…` files (interrupted atomic writes) under `dir`.
fn remove_tmp(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type()?.is_dir() {
            remove_tmp(&e.path())?;
        } else if name.starts_with('.') && name.contains(".tmp-") {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// Writes a Zarr v3 group at `path` of float64 arrays of one shape, with
/// `attributes` on the group, replacing an earlier one: under the path's
/// [`Claim`], everything is written into the run's work folder, then
/// exchanged with the old group in one step, so a reader finds the whole
/// old group or the whole new one.
pub fn write_group(
    path: &Path,
    attributes: serde_json::Map<String, Value>,
    arrays: &[(&str, &ArrayD<f64>)],
    chunks: &[u64],
    codec: Codec,
) -> Result<(), IoError> {
    let claim = Claim::take(path, Made::Zarr, true)?;
    let partial = claim.partial().to_path_buf();
    let os = |p: &Path, source| IoError::Os {
        path: p.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(&partial).map_err(|e| os(&partial, e))?;
    let group = json!({"zarr_format": 3, "node_type": "group", "attributes": attributes});
    let text = serde_json::to_string_pretty(&group).unwrap_or_default() + "\n";
    std::fs::write(partial.join("zarr.json"), text).map_err(|e| os(&partial, e))?;
    for (name, a) in arrays {
        let shape: Vec<u64> = a.shape().iter().map(|&n| n as u64).collect();
        let o = ZarrWriteOptions {
            zarr_format: 3,
            dtype: DType::F64,
            shape: shape.clone(),
            chunks: chunks
                .iter()
                .zip(&shape)
                .map(|(&c, &n)| c.min(n).max(1))
                .collect(),
            codec,
            level: 1,
            overwrite: true,
            attributes: serde_json::Map::new(),
        };
        let w = ZarrWriter::in_place(&partial.join(name), &o)?;
        let region = Region::new(vec![0; shape.len()], shape);
        let data = ArrayData::F64((*a).clone());
        w.write(&region, &data, &[])?;
        w.finish()?;
    }
    claim.commit()
}

/// The attributes of the Zarr v3 group at `path`.
pub fn group_attributes(path: &Path) -> Result<serde_json::Map<String, Value>, IoError> {
    let meta = path.join("zarr.json");
    let text = std::fs::read_to_string(&meta).map_err(|source| IoError::Os {
        path: meta.clone(),
        source,
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| IoError::NotZarr {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    match v.get("attributes") {
        Some(Value::Object(m)) if v.get("node_type") == Some(&json!("group")) => Ok(m.clone()),
        _ => Err(IoError::NotZarr {
            path: path.to_path_buf(),
            why: "not a Zarr v3 group with attributes".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(format: u8, codec: Codec) {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("a.zarr");
        let o = ZarrWriteOptions {
            zarr_format: format,
            dtype: DType::I16,
            shape: vec![5, 7],
            chunks: vec![2, 3],
            codec,
            level: 3,
            overwrite: false,
            attributes: Default::default(),
        };
        let w = ZarrWriter::create(&path, &o).expect("create");
        let full: Vec<i16> = (0..35).map(|i| i * 3 - 50).collect();
        let full = ArrayD::from_shape_vec(IxDyn(&[5, 7]), full).expect("shape");
        // Write in regions of 2x6 (whole chunks) and the edges.
        for (r0, r1) in [(0, 2), (2, 4), (4, 5)] {
            for (c0, c1) in [(0, 6), (6, 7)] {
                let region = Region::new(vec![r0, c0], vec![r1 - r0, c1 - c0]);
                let part = full
                    .slice(ndarray::s![
                        r0 as usize..r1 as usize,
                        c0 as usize..c1 as usize
                    ])
                    .to_owned()
                    .into_dyn();
                w.write(&region, &ArrayData::I16(part), &[0, 0])
                    .expect("write");
            }
        }
        assert!(!path.exists(), "no output before finish");
        w.finish().expect("finish");
        let r = ZarrReader::open(&path).expect("open");
        assert_eq!(r.info.zarr_format, format);
        assert_eq!(r.info.chunks, vec![2, 3]);
        let back = r
            .read(&Region::new(vec![0, 0], vec![5, 7]), &[0, 0])
            .expect("read");
        assert_eq!(back, ArrayData::I16(full.clone()));
        let part = r
            .read(&Region::new(vec![1, 2], vec![3, 4]), &[0, 0])
            .expect("read");
        assert_eq!(
            part,
            ArrayData::I16(full.slice(ndarray::s![1..4, 2..6]).to_owned().into_dyn())
        );
    }

    #[test]
    fn roundtrips_every_format_and_codec() {
        for f in [2, 3] {
            for c in [Codec::None, Codec::Zstd, Codec::Blosc, Codec::Gzip] {
                roundtrip(f, c);
            }
        }
    }

    #[test]
    fn clear_errors_for_bad_paths() {
        let dir = tempfile::tempdir().expect("tmp");
        let e = ZarrReader::open(&dir.path().join("nope.zarr")).expect_err("missing");
        assert!(e.to_string().contains("no such file"), "{e}");
        let e = ZarrReader::open(dir.path()).expect_err("not zarr");
        assert!(e.to_string().contains("neither zarr.json"), "{e}");
        std::fs::write(dir.path().join("zarr.json"), "{nope").expect("write");
        let e = ZarrReader::open(dir.path()).expect_err("bad json");
        assert!(e.to_string().contains("not valid JSON"), "{e}");
    }

    #[test]
    fn appender_grows_and_a_reopen_cuts_unrecorded_slabs() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("grow.zarr");
        let o = ZarrWriteOptions {
            zarr_format: 3,
            dtype: DType::F32,
            shape: vec![0, 4, 6],
            chunks: vec![1, 4, 3],
            codec: Codec::Zstd,
            level: 1,
            overwrite: false,
            attributes: serde_json::Map::new(),
        };
        let slab = |v: f32| ArrayData::F32(ArrayD::from_elem(IxDyn(&[1, 4, 6]), v));
        let mut a = ZarrAppender::create(&path, &o).expect("create");
        for t in 0..3 {
            a.write(t, &slab(t as f32 + 1.0)).expect("write");
            a.set_len(t + 1).expect("len");
        }
        // Slab 3 written but never recorded (a kill), and a torn temp file.
        a.write(3, &slab(9.0)).expect("write");
        std::fs::write(path.join("c/.x.tmp-1-2"), b"torn").expect("tmp");
        drop(a);
        assert_eq!(
            ZarrReader::open(&path).expect("open").info.shape,
            vec![3, 4, 6]
        );
        let mut a = ZarrAppender::open(&path, &o, 3).expect("reopen");
        assert!(!path.join("c/3").exists() && !path.join("c/.x.tmp-1-2").exists());
        a.write(3, &slab(4.0)).expect("write");
        a.set_len(4).expect("len");
        let r = ZarrReader::open(&path).expect("open");
        let all = r
            .read(&Region::new(vec![0, 0, 0], vec![4, 4, 6]), &[])
            .expect("read")
            .to_f64();
        for t in 0..4 {
            assert!(all
                .index_axis(ndarray::Axis(0), t)
                .iter()
                .all(|&x| x == t as f64 + 1.0));
        }
        // Reopened by other options, or short of the record, it refuses.
        let mut other = o.clone();
        other.dtype = DType::F64;
        assert!(ZarrAppender::open(&path, &other, 4).is_err());
        assert!(ZarrAppender::open(&path, &o, 6).is_err());
        assert!(ZarrAppender::create(&path, &o).is_err());
    }
}
