//! Zarr v2 and v3 arrays through zarrs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::collections::HashMap;
use std::sync::Mutex;

use blockflow_core::{with_array, with_dtype, ArrayData, ArrayKind, DType, Region};
use ndarray::{ArrayD, IxDyn};
use serde_json::Value;
use zarrs::array::{data_type, Array, ArrayMetadata, ArrayShardedExt, ArraySubset, CodecOptions};
use zarrs::filesystem::FilesystemStore;
use zarrs::group::GroupBuilder;
use zarrs::metadata::v3::NodeMetadataV3;
use zarrs::storage::{ReadableStorageTraits, ReadableWritableStorageTraits};

use crate::atomic_store::AtomicFsStore;
use crate::output::{Claim, Made};
use crate::remote::{url_of, RemoteClaim, RemoteStats, RemoteStore, S3Options};
use crate::zarr_meta::ARRAY_DIMENSIONS;
pub use crate::zarr_meta::{BloscCname, Codec, Encoding, Shuffle};
use crate::IoError;

/// What `blockflow inspect` and the planner know of a stored array.
#[derive(Debug, Clone)]
pub struct ZarrInfo {
    pub path: PathBuf,
    pub zarr_format: u8,
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// The chunks values are encoded in: the inner chunks of a sharded
    /// array (as zarr-python's `Array.chunks`).
    pub chunks: Vec<u64>,
    /// The shards of a sharded array (each one file of whole chunks).
    pub shards: Option<Vec<u64>>,
    /// The axes' names: v3 `dimension_names`, or the v2 attribute
    /// `_ARRAY_DIMENSIONS` (xarray's convention).
    pub dimension_names: Option<Vec<String>>,
    /// Codec chain as written in the metadata (v3 `codecs`, or v2 filters and compressor).
    pub codecs: String,
    pub fill_value: String,
}

impl ZarrInfo {
    /// An array of these dims with no shards, names or codecs (tests, fakes).
    pub fn plain(path: &Path, dtype: DType, shape: &[u64], chunks: &[u64]) -> Self {
        ZarrInfo {
            path: path.to_path_buf(),
            zarr_format: 3,
            dtype,
            shape: shape.to_vec(),
            chunks: chunks.to_vec(),
            shards: None,
            dimension_names: None,
            codecs: "bytes".into(),
            fill_value: "0".into(),
        }
    }
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

/// The axes' names of an opened array: v3 `dimension_names` (an unnamed
/// axis among named ones is `dim_K`, as xarray calls it), else the
/// `_ARRAY_DIMENSIONS` attribute; None where neither names every axis.
fn dimension_names<S: ?Sized>(array: &Array<S>) -> Option<Vec<String>> {
    let nd = array.shape().len();
    if let Some(names) = array.dimension_names() {
        if names.len() == nd && names.iter().any(Option::is_some) {
            return Some(
                names
                    .iter()
                    .enumerate()
                    .map(|(k, n)| n.clone().unwrap_or_else(|| format!("dim_{k}")))
                    .collect(),
            );
        }
    }
    let names: Vec<String> = array
        .attributes()
        .get(ARRAY_DIMENSIONS)?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect::<Option<_>>()?;
    (names.len() == nd).then_some(names)
}

/// The codec chain of an opened array, as its metadata names it.
fn codec_text(meta: &ArrayMetadata) -> String {
    let one = |name: &str, cfg: &serde_json::Map<String, Value>| {
        if cfg.is_empty() {
            name.to_string()
        } else {
            format!("{name}{}", Value::Object(cfg.clone()))
        }
    };
    match meta {
        ArrayMetadata::V2(m) => {
            let mut parts: Vec<String> = m
                .filters
                .iter()
                .flatten()
                .map(|f| one(f.id(), f.configuration()))
                .collect();
            parts.push(match &m.compressor {
                Some(c) => one(c.id(), c.configuration()),
                None => "no compressor".into(),
            });
            if m.order == zarrs::metadata::v2::ArrayMetadataV2Order::F {
                parts.insert(0, "order F".into());
            }
            parts.join(" -> ")
        }
        ArrayMetadata::V3(m) => m
            .codecs
            .iter()
            .map(|c| match c.configuration() {
                Some(cfg) => one(c.name(), cfg),
                None => c.name().to_string(),
            })
            .collect::<Vec<_>>()
            .join(" -> "),
    }
}

/// Codec options for one chunk: blockflow runs chunks in parallel itself,
/// so zarrs is asked not to split a chunk's codec work across threads too.
fn chunk_options() -> CodecOptions {
    CodecOptions::default().with_concurrent_target(1)
}

/// The codecs blockflow adds to zarrs' (a stricter gzip decoder,
/// numcodecs' lz4), registered before the first array is opened.
fn register_codecs() {
    crate::gzip_check::register();
    crate::lz4_codec::register();
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
        return check_node_type(path, text.as_bytes());
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

/// Whether a v3 `zarr.json` describes an array.
fn check_node_type(path: &Path, text: &[u8]) -> Result<(), IoError> {
    let v: Value = serde_json::from_slice(text).map_err(|e| IoError::NotZarr {
        path: path.to_path_buf(),
        why: format!("zarr.json is not valid JSON: {e}"),
    })?;
    match v.get("node_type").and_then(Value::as_str) {
        Some("array") => Ok(()),
        Some("group") => Err(IoError::NotZarr {
            path: path.to_path_buf(),
            why: "it is a Zarr group; point at one of its arrays".into(),
        }),
        _ => Err(IoError::NotZarr {
            path: path.to_path_buf(),
            why: "zarr.json has no node_type".into(),
        }),
    }
}

/// As [`check_array_dir`], for an array in object storage: its metadata
/// object, else why there is none (a missing bucket, refused credentials,
/// an empty prefix, other objects).
fn check_remote_array(path: &Path, store: &RemoteStore) -> Result<(), IoError> {
    if let Some(text) = store.get_key("zarr.json")? {
        return check_node_type(path, &text);
    }
    if store.get_key(".zarray")?.is_some() {
        return Ok(());
    }
    if store.get_key(".zgroup")?.is_some() {
        return Err(IoError::NotZarr {
            path: path.to_path_buf(),
            why: "it is a Zarr v2 group; point at one of its arrays".into(),
        });
    }
    // An http(s) server cannot list: the array is simply not there.
    if store.url.starts_with("http") {
        return Err(IoError::Missing {
            path: path.to_path_buf(),
        });
    }
    match store.keys()?.first() {
        None => Err(IoError::Missing {
            path: path.to_path_buf(),
        }),
        Some(k) => Err(IoError::NotZarr {
            path: path.to_path_buf(),
            why: format!(
                "it holds neither zarr.json (v3) nor .zarray (v2) (but e.g. {k}: an unfinished or foreign array)"
            ),
        }),
    }
}

/// A Zarr array opened for reading.
pub struct ZarrReader {
    pub info: ZarrInfo,
    array: Array<dyn ReadableStorageTraits>,
    /// The object store, for an array read over the network.
    remote: Option<Arc<RemoteStore>>,
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
    /// The array at `path`: a local directory, or `s3://` / `http(s)://`
    /// (settings from the environment, see [`crate::remote`]); an OME-Zarr
    /// image (a group whose `multiscales` lists its levels) opens as its
    /// full-resolution level.
    pub fn open(path: &Path) -> Result<Self, IoError> {
        Self::open_with(path, &S3Options::default())
    }

    /// As [`ZarrReader::open`], with S3 settings given in code.
    pub fn open_with(path: &Path, s3: &S3Options) -> Result<Self, IoError> {
        let level0 = url_of(path)
            .is_none()
            .then(|| crate::ome::level0(path))
            .flatten();
        let path = level0.as_deref().unwrap_or(path);
        register_codecs();
        let (store, remote): (Arc<dyn ReadableStorageTraits>, _) = match url_of(path) {
            Some(url) => {
                let remote = RemoteStore::open(url, s3)?;
                check_remote_array(path, &remote)?;
                (remote.clone(), Some(remote))
            }
            None => {
                check_array_dir(path)?;
                let store = FilesystemStore::new(path).map_err(|e| IoError::Store {
                    path: path.to_path_buf(),
                    why: e.to_string(),
                })?;
                (Arc::new(store), None)
            }
        };
        let array = Array::open(store, "/").map_err(|e| IoError::NotZarr {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        let meta = array.metadata();
        let dtype = zarr_dtype(array.data_type()).ok_or_else(|| IoError::UnsupportedDType {
            path: path.to_path_buf(),
            dtype: match meta {
                ArrayMetadata::V2(m) => serde_json::to_string(&m.dtype).unwrap_or_default(),
                ArrayMetadata::V3(m) => m.data_type.name().to_string(),
            },
        })?;
        let not_regular = || IoError::NotZarr {
            path: path.to_path_buf(),
            why: "only regular chunk grids are supported".into(),
        };
        let grid: Vec<u64> = array
            .chunk_shape(&vec![0; array.shape().len()])
            .map_err(|_| not_regular())?
            .iter()
            .map(|c| c.get())
            .collect();
        // A sharded array is decoded by its inner chunks; a shard is one file of them.
        let (chunks, shards) = match array.effective_subchunk_shape() {
            Some(inner) if array.is_sharded() => {
                (inner.iter().map(|c| c.get()).collect(), Some(grid))
            }
            _ => (grid, None),
        };
        let (zarr_format, fill_value) = match meta {
            ArrayMetadata::V2(m) => (2, serde_json::to_string(&m.fill_value)),
            ArrayMetadata::V3(m) => (3, serde_json::to_string(&m.fill_value)),
        };
        Ok(ZarrReader {
            info: ZarrInfo {
                path: path.to_path_buf(),
                zarr_format,
                dtype,
                shape: array.shape().to_vec(),
                chunks,
                shards,
                dimension_names: dimension_names(&array),
                codecs: codec_text(meta),
                fill_value: fill_value.unwrap_or_else(|_| "null".into()),
            },
            array,
            remote,
            decoded: AtomicU64::new(0),
        })
    }

    /// The requests made so far, for an array read over the network.
    pub fn remote_stats(&self) -> Option<RemoteStats> {
        self.remote.as_ref().map(|r| r.stats())
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
        let Some(shards) = &self.info.shards else {
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
            return Ok(out);
        };
        // An inner chunk of a shard (clipped at the array's edge): only
        // its bytes and the shard's index are read.
        let ranges: Vec<std::ops::Range<u64>> = stored
            .iter()
            .zip(&self.info.chunks)
            .zip(&self.info.shape)
            .map(|((&k, &c), &n)| (k * c).min(n)..((k + 1) * c).min(n))
            .collect();
        let shard: Vec<u64> = ranges
            .iter()
            .zip(shards)
            .map(|(r, &s)| r.start / s.max(1))
            .collect();
        let err = |e: zarrs::array::ArrayError| IoError::StoredChunk {
            path: self.info.path.clone(),
            chunk: stored.to_vec(),
            key: format!("{}, inner chunk", self.array.chunk_key(&shard)),
            why: e.to_string(),
        };
        let subset = ArraySubset::new_with_ranges(&ranges);
        let out = with_dtype!(self.info.dtype, T => {
            let a: ArrayD<T> = self.array.retrieve_array_subset_opt(&subset, &chunk_options()).map_err(err)?;
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

    /// Bytes the array's files take on disk (its objects, in an S3
    /// bucket; 0 over http(s), which cannot list).
    pub fn stored_bytes(&self) -> u64 {
        match &self.remote {
            Some(r) => zarrs::storage::ListableStorageTraits::size_prefix(
                &**r,
                &zarrs::storage::StorePrefix::root(),
            )
            .unwrap_or(0),
            None => dir_size(&self.info.path),
        }
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

/// How to create an output array.
#[derive(Debug, Clone)]
pub struct ZarrWriteOptions {
    pub zarr_format: u8,
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// The chunks values are encoded in (a shard's inner chunks).
    pub chunks: Vec<u64>,
    /// Shards (Zarr v3 `sharding_indexed`): each one file of whole
    /// chunks, a multiple of `chunks` along every axis.
    pub shards: Option<Vec<u64>>,
    pub codec: Codec,
    pub level: i32,
    pub encoding: Encoding,
    /// The axes' names (v3 `dimension_names`, v2 `_ARRAY_DIMENSIONS`);
    /// None: `dim_0`, `dim_1`, ... (xarray's names for unnamed axes).
    pub dimension_names: Option<Vec<String>>,
    pub overwrite: bool,
    pub attributes: serde_json::Map<String, Value>,
}

impl ZarrWriteOptions {
    /// Uncompressed, unsharded, unnamed, little-endian options.
    pub fn plain(zarr_format: u8, dtype: DType, shape: Vec<u64>, chunks: Vec<u64>) -> Self {
        ZarrWriteOptions {
            zarr_format,
            dtype,
            shape,
            chunks,
            shards: None,
            codec: Codec::None,
            level: 0,
            encoding: Encoding::default(),
            dimension_names: None,
            overwrite: false,
            attributes: serde_json::Map::new(),
        }
    }

    /// The names the array is written with.
    pub fn names(&self) -> Vec<String> {
        self.dimension_names
            .clone()
            .unwrap_or_else(|| (0..self.shape.len()).map(|k| format!("dim_{k}")).collect())
    }

    /// Why these options cannot make an array (shards that are not whole
    /// chunks, names of another rank), if they cannot.
    pub fn check(&self) -> Result<(), String> {
        let nd = self.shape.len();
        if self.chunks.len() != nd || self.chunks.contains(&0) {
            return Err(format!(
                "chunks {:?} do not fit an array of shape {:?}",
                self.chunks, self.shape
            ));
        }
        if let Some(shards) = &self.shards {
            check_shards(shards, &self.chunks)?;
            if self.zarr_format != 3 {
                return Err("sharding is a Zarr v3 codec; write `format = 3` to shard".into());
            }
        }
        if let Some(names) = &self.dimension_names {
            check_names(names, nd)?;
        }
        Ok(())
    }
}

/// Whether `shards` hold whole `chunks` along every axis.
pub fn check_shards(shards: &[u64], chunks: &[u64]) -> Result<(), String> {
    if shards.len() != chunks.len() {
        return Err(format!(
            "shards {shards:?} have {} axes but the chunks {chunks:?} have {}",
            shards.len(),
            chunks.len()
        ));
    }
    for (ax, (&s, &c)) in shards.iter().zip(chunks).enumerate() {
        if s == 0 || c == 0 || s % c != 0 {
            return Err(format!(
                "shards {shards:?} must be a multiple of the chunks {chunks:?} along every axis (axis {ax}: {s} is not a multiple of {c})"
            ));
        }
    }
    Ok(())
}

/// Whether `names` name `nd` axes, each once, with a non-empty name.
pub fn check_names(names: &[String], nd: usize) -> Result<(), String> {
    if names.len() != nd {
        return Err(format!(
            "{} axis names {names:?} for an array of {nd} axes",
            names.len()
        ));
    }
    for (k, n) in names.iter().enumerate() {
        if n.trim().is_empty() {
            return Err(format!("axis {k} has an empty name"));
        }
        if names[..k].contains(n) {
            return Err(format!("the name \"{n}\" is given to two axes"));
        }
    }
    Ok(())
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
    array: Array<dyn ReadableWritableStorageTraits>,
    /// The shards being filled, for a sharded array (see [`ZarrWriter::write`]).
    shards: Option<Shards>,
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
    /// An output in object storage: written in place under the claim,
    /// its metadata last (see [`RemoteClaim`]).
    Remote(RemoteClaim),
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
        o.check().map_err(|why| IoError::Store {
            path: path.to_path_buf(),
            why,
        })?;
        if let Some(url) = url_of(path) {
            return Self::create_remote(url, o, &S3Options::default());
        }
        let claim = Claim::take(path, Made::Zarr, o.overwrite)?;
        let dir = claim.partial().to_path_buf();
        Self::open_in(path, dir, o, Owner::Claim(claim), false)
    }

    /// An output at an `s3://` URL, claimed there (see [`RemoteClaim`]);
    /// its metadata is written by [`ZarrWriter::finish`], after every chunk.
    pub fn create_remote(url: &str, o: &ZarrWriteOptions, s3: &S3Options) -> Result<Self, IoError> {
        let path = PathBuf::from(url);
        o.check().map_err(|why| IoError::Store {
            path: path.clone(),
            why,
        })?;
        let claim = RemoteClaim::take(url, o.overwrite, s3)?;
        let store: Arc<dyn ReadableWritableStorageTraits> = claim.store.clone();
        let array = new_array(store, &path, o, false, false)?;
        Ok(Self::with_array(&path, o, array, Owner::Remote(claim)))
    }

    /// An array written in place at `dir` (a scratch store of this run, or
    /// a member of a group assembled in a work folder): removed when
    /// dropped unfinished, kept by [`ZarrWriter::finish`].
    pub fn in_place(dir: &Path, o: &ZarrWriteOptions) -> Result<Self, IoError> {
        Self::in_place_with(dir, o, false)
    }

    /// As [`ZarrWriter::in_place`], an array of an OME-Zarr image: a v2
    /// array gets `dimension_separator: "/"` (NGFF 0.4 requires it).
    pub fn in_place_ngff(dir: &Path, o: &ZarrWriteOptions) -> Result<Self, IoError> {
        Self::in_place_with(dir, o, true)
    }

    fn in_place_with(dir: &Path, o: &ZarrWriteOptions, v2_slash: bool) -> Result<Self, IoError> {
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
        Self::open_in(dir, dir.to_path_buf(), o, owner, v2_slash)
    }

    /// An array written in place at `dir` by several processes at once
    /// (the tasks of a distributed run): created if missing, never removed;
    /// each chunk file is written whole and renamed into place.
    pub fn open_existing(dir: &Path, o: &ZarrWriteOptions) -> Result<Self, IoError> {
        let owner = Owner::InPlace {
            dir: dir.to_path_buf(),
            keep: true,
        };
        Self::open_in(dir, dir.to_path_buf(), o, owner, false)
    }

    fn open_in(
        path: &Path,
        dir: PathBuf,
        o: &ZarrWriteOptions,
        owner: Owner,
        v2_slash: bool,
    ) -> Result<Self, IoError> {
        std::fs::create_dir_all(&dir).map_err(|source| IoError::Os {
            path: dir.clone(),
            source,
        })?;
        let store = Arc::new(AtomicFsStore::new(&dir).map_err(|e| IoError::Store {
            path: dir.clone(),
            why: e.to_string(),
        })?);
        let store: Arc<dyn ReadableWritableStorageTraits> = store;
        let array = new_array(store, path, o, true, v2_slash)?;
        Ok(Self::with_array(path, o, array, owner))
    }

    fn with_array(
        path: &Path,
        o: &ZarrWriteOptions,
        array: Array<dyn ReadableWritableStorageTraits>,
        owner: Owner,
    ) -> Self {
        ZarrWriter {
            path: path.to_path_buf(),
            chunks: o.chunks.clone(),
            shape: o.shape.clone(),
            dtype: o.dtype,
            array,
            shards: o.shards.clone().map(|shape| Shards {
                shape,
                pending: Mutex::new(HashMap::new()),
            }),
            owner,
        }
    }

    /// The folder the chunks are written to now (the work folder of an
    /// output, the array itself for one written in place).
    pub fn dir(&self) -> &Path {
        match &self.owner {
            Owner::Claim(c) => c.partial(),
            Owner::InPlace { dir, .. } => dir,
            Owner::Remote(_) => &self.path,
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
        match &self.shards {
            None => store_whole_chunks(&self.array, &self.chunks, &self.shape, region, data),
            Some(shards) => self.write_sharded(shards, region, data),
        }
        .map_err(err)
    }

    /// Writes a region of whole inner chunks of a sharded array: each
    /// shard the region covers whole is stored at once; the part of one it
    /// covers partly is copied into that shard's buffer, and the shard is
    /// stored (one file, renamed into place) when its last part arrives,
    /// in whatever order the parts come. Only this writer writes its
    /// shards, and each once.
    fn write_sharded(
        &self,
        shards: &Shards,
        region: &Region,
        data: &ArrayData,
    ) -> Result<(), String> {
        whole_chunks(&self.chunks, &self.shape, region)?;
        let nd = region.ndim();
        let lo: Vec<u64> = (0..nd)
            .map(|ax| region.origin[ax] / shards.shape[ax])
            .collect();
        let hi: Vec<u64> = (0..nd)
            .map(|ax| (region.end()[ax].max(region.origin[ax] + 1) - 1) / shards.shape[ax])
            .collect();
        for index in crate::stored_chunks::box_indices(&lo, &hi) {
            let shard = Region::new(
                (0..nd).map(|ax| index[ax] * shards.shape[ax]).collect(),
                (0..nd)
                    .map(|ax| {
                        let o = index[ax] * shards.shape[ax];
                        (o + shards.shape[ax]).min(self.shape[ax]) - o
                    })
                    .collect(),
            );
            let part = Region::new(
                (0..nd)
                    .map(|ax| region.origin[ax].max(shard.origin[ax]))
                    .collect(),
                (0..nd)
                    .map(|ax| {
                        region.end()[ax].min(shard.end()[ax])
                            - region.origin[ax].max(shard.origin[ax])
                    })
                    .collect(),
            );
            let piece = if part == *region {
                None
            } else {
                let at: Vec<usize> = (0..nd)
                    .map(|ax| (part.origin[ax] - region.origin[ax]) as usize)
                    .collect();
                Some(with_array!(data, a => cut_at(a, &at, &part.shape_usize())))
            };
            let piece = piece.as_ref().unwrap_or(data);
            if part == shard {
                store_whole_chunks(&self.array, &shards.shape, &self.shape, &shard, piece)?;
            } else if let Some(full) = shards.add(&index, &shard, &part, piece, self.dtype)? {
                store_whole_chunks(&self.array, &shards.shape, &self.shape, &shard, &full)?;
            }
        }
        Ok(())
    }

    /// Bytes of the shards being filled (none for an unsharded array).
    pub fn held_bytes(&self) -> u64 {
        self.shards.as_ref().map_or(0, Shards::held_bytes)
    }

    /// Moves the finished array into place (replacing an old one if
    /// allowed), or keeps an array written in place.
    pub fn finish(mut self) -> Result<PathBuf, IoError> {
        if let Some(shards) = &self.shards {
            let left = shards.unfilled();
            if let Some(first) = left.first() {
                return Err(IoError::Store {
                    path: self.path.clone(),
                    why: format!(
                        "{} shards were never filled (the first at shard index {first:?}): the stream did not bring all their chunks; nothing was put in place",
                        left.len()
                    ),
                });
            }
        }
        match &mut self.owner {
            Owner::Claim(c) => c.commit()?,
            Owner::InPlace { keep, .. } => *keep = true,
            Owner::Remote(claim) => {
                // Every chunk is stored: now the metadata that makes the
                // array readable, then the old array's leftovers go.
                crate::zarr_meta::store_metadata(&self.array, &*claim.store).map_err(|e| {
                    IoError::Store {
                        path: self.path.clone(),
                        why: format!("cannot store the array's metadata: {e}"),
                    }
                })?;
                claim.commit()?;
            }
        }
        Ok(self.path.clone())
    }
}

/// The array `o` describes, created in `store`, with its metadata stored
/// if `store_meta` (else by the caller, once the chunks are).
fn new_array<S: ?Sized + ReadableWritableStorageTraits + 'static>(
    store: Arc<S>,
    path: &Path,
    o: &ZarrWriteOptions,
    store_meta: bool,
    v2_slash: bool,
) -> Result<Array<S>, IoError> {
    let bad = |e: String| IoError::Store {
        path: path.to_path_buf(),
        why: format!("cannot create the array: {e}"),
    };
    o.check().map_err(bad)?;
    register_codecs();
    let names = o.names();
    let spec = crate::zarr_meta::Spec {
        zarr_format: o.zarr_format,
        dtype: o.dtype,
        shape: &o.shape,
        chunks: &o.chunks,
        shards: o.shards.as_deref(),
        codec: o.codec,
        level: o.level,
        encoding: o.encoding,
        names: &names,
        attributes: &o.attributes,
        v2_slash,
    };
    let array = crate::zarr_meta::build(store.clone(), &spec).map_err(bad)?;
    if store_meta {
        crate::zarr_meta::store_metadata(&array, &*store).map_err(bad)?;
    }
    Ok(array)
}

/// The shards of a sharded array being written, and the buffers of those
/// some of whose chunks have arrived.
struct Shards {
    shape: Vec<u64>,
    pending: Mutex<HashMap<Vec<u64>, Pending>>,
}

/// A shard being filled: its values so far and how many have arrived.
struct Pending {
    data: ArrayData,
    filled: u64,
}

impl Shards {
    /// Copies `piece` (the values of `part` of shard `index`, whose region
    /// is `shard`) into the shard's buffer; returns the shard's values
    /// once every one of them has arrived (and forgets the shard).
    fn add(
        &self,
        index: &[u64],
        shard: &Region,
        part: &Region,
        piece: &ArrayData,
        dtype: DType,
    ) -> Result<Option<ArrayData>, String> {
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| "another chunk failed while a shard was filled")?;
        let p = pending.entry(index.to_vec()).or_insert_with(|| Pending {
            data: ArrayData::zeros(dtype, &shard.shape_usize()),
            filled: 0,
        });
        let at: Vec<usize> = (0..shard.ndim())
            .map(|ax| (part.origin[ax] - shard.origin[ax]) as usize)
            .collect();
        with_array!(&mut p.data, b => paste_at(b, piece, &at))?;
        p.filled += part.shape.iter().product::<u64>();
        if p.filled < shard.shape.iter().product::<u64>() {
            return Ok(None);
        }
        Ok(pending.remove(index).map(|p| p.data))
    }

    fn held_bytes(&self) -> u64 {
        self.pending
            .lock()
            .map(|p| p.values().map(|x| x.data.nbytes()).sum())
            .unwrap_or(0)
    }

    /// The shards some but not all of whose chunks arrived, sorted.
    fn unfilled(&self) -> Vec<Vec<u64>> {
        let mut v: Vec<Vec<u64>> = self
            .pending
            .lock()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// A copy of the block of `a` at `at` of `shape`.
fn cut_at<T: ArrayKind + Clone>(a: &ArrayD<T>, at: &[usize], shape: &[usize]) -> ArrayData {
    T::wrap(
        a.slice_each_axis(|ax| {
            let i = ax.axis.index();
            ndarray::Slice::from(at[i]..at[i] + shape[i])
        })
        .to_owned(),
    )
}

/// Writes `piece` into `buf` at `at`.
fn paste_at<T: ArrayKind + Clone>(
    buf: &mut ArrayD<T>,
    piece: &ArrayData,
    at: &[usize],
) -> Result<(), String> {
    let src = T::unwrap_ref(piece).ok_or("a chunk of another dtype than the array's")?;
    buf.slice_each_axis_mut(|ax| {
        let i = ax.axis.index();
        ndarray::Slice::from(at[i]..at[i] + src.shape()[i])
    })
    .assign(src);
    Ok(())
}

/// Whether `region` starts on a chunk boundary and ends on one or at the
/// array's edge along every axis; the chunk index range per axis.
fn whole_chunks(
    chunks: &[u64],
    shape: &[u64],
    region: &Region,
) -> Result<Vec<std::ops::Range<u64>>, String> {
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
    Ok(ranges)
}

/// Stores `data` at `region` of `array` (chunks `chunks`, shape `shape`).
/// The region must start on a chunk boundary and end on one or at the
/// array's edge, so whole chunks are written; edge chunks are stored whole
/// (zarr's convention), padded with the fill value.
fn store_whole_chunks<S: ?Sized + ReadableWritableStorageTraits + 'static>(
    array: &Array<S>,
    chunks: &[u64],
    shape: &[u64],
    region: &Region,
    data: &ArrayData,
) -> Result<(), String> {
    let ranges = whole_chunks(chunks, shape, region)?;
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
    store: Arc<AtomicFsStore>,
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
        let array = new_array(store.clone(), path, &o, true, false)?;
        Ok(ZarrAppender {
            path: path.to_path_buf(),
            array,
            store,
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
        if o.shards.is_some() {
            return Err(IoError::Store {
                path: path.to_path_buf(),
                why: "an array that grows one slab at a time is not sharded (each slab would rewrite its shards); leave `shards` out".into(),
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
        let array = Array::open(store.clone(), "/").map_err(|e| IoError::NotZarr {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        let mut a = ZarrAppender {
            path: path.to_path_buf(),
            array,
            store,
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
        crate::zarr_meta::store_metadata(&self.array, &self.store).map_err(bad)?;
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
    let group_store = Arc::new(AtomicFsStore::new(&partial).map_err(|e| IoError::Store {
        path: partial.clone(),
        why: e.to_string(),
    })?);
    let group = GroupBuilder::new()
        .attributes(attributes)
        .build(group_store, "/")
        .map_err(|e| IoError::Store {
            path: path.to_path_buf(),
            why: format!("cannot create the group: {e}"),
        })?;
    group.store_metadata().map_err(|e| IoError::Store {
        path: path.to_path_buf(),
        why: format!("cannot store the group's metadata: {e}"),
    })?;
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
            shards: None,
            encoding: Default::default(),
            dimension_names: None,
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
    let not_group = |why: String| IoError::NotZarr {
        path: path.to_path_buf(),
        why,
    };
    match serde_json::from_str::<NodeMetadataV3>(&text) {
        Ok(NodeMetadataV3::Group(g)) => Ok(g.attributes),
        Ok(NodeMetadataV3::Array(_)) => Err(not_group("an array, not a Zarr v3 group".into())),
        Err(e) => Err(not_group(format!("not a Zarr v3 group: {e}"))),
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
            shards: None,
            encoding: Default::default(),
            dimension_names: None,
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
            for c in [
                Codec::None,
                Codec::Zstd,
                Codec::Blosc,
                Codec::Gzip,
                Codec::Zlib,
                Codec::Lz4,
            ] {
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
            shards: None,
            encoding: Default::default(),
            dimension_names: None,
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
