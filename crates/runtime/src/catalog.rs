//! What planning reads of stored inputs: metadata only (shape, dtype,
//! chunks, the files of a stack), through [`Catalog`], so a plan can be
//! made, and tested, without any file ([`FakeCatalog`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use blockflow_core::DType;
use blockflow_io::hdf5::{Hdf5Info, StackReader};
use blockflow_io::zarr::ZarrInfo;
use blockflow_io::IoError;

/// The metadata of stored inputs.
pub trait Catalog: Send + Sync {
    /// A Zarr array's metadata.
    fn zarr(&self, path: &Path) -> Result<ZarrInfo, IoError>;
    /// One HDF5 dataset's metadata.
    fn hdf5(&self, path: &Path, dataset: &str) -> Result<Hdf5Info, IoError>;
    /// The files of a per-timepoint HDF5 stack (natural order, or by the
    /// index a regex captures) and their first dataset's metadata.
    fn hdf5_stack(
        &self,
        pattern: &str,
        dataset: &str,
        index: Option<&regex::Regex>,
    ) -> Result<StackReader, IoError>;
    /// The image files a glob matches (natural order), and the first
    /// one's shape `(H, W, C)` and dtype.
    fn images(&self, pattern: &str) -> Result<(Vec<PathBuf>, Vec<usize>, DType), IoError>;
}

/// The files on this machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsCatalog;

impl Catalog for FsCatalog {
    fn zarr(&self, path: &Path) -> Result<ZarrInfo, IoError> {
        blockflow_io::zarr::ZarrReader::open(path).map(|r| r.info)
    }

    fn hdf5(&self, path: &Path, dataset: &str) -> Result<Hdf5Info, IoError> {
        blockflow_io::hdf5::Hdf5Reader::open(path, dataset).map(|r| r.info)
    }

    fn hdf5_stack(
        &self,
        pattern: &str,
        dataset: &str,
        index: Option<&regex::Regex>,
    ) -> Result<StackReader, IoError> {
        StackReader::open_ordered(pattern, dataset, index)
    }

    fn images(&self, pattern: &str) -> Result<(Vec<PathBuf>, Vec<usize>, DType), IoError> {
        let files = blockflow_io::images::list_images(pattern)?;
        let (shape, dtype) = blockflow_io::images::image_info(&files[0])?;
        Ok((files, shape, dtype))
    }
}

/// The files on this machine, except one stack frozen to a given list
/// (the ingest plans its per-timepoint program on the files it has).
#[derive(Debug, Clone)]
pub struct FixedStack {
    pub stack: StackReader,
}

impl Catalog for FixedStack {
    fn zarr(&self, path: &Path) -> Result<ZarrInfo, IoError> {
        FsCatalog.zarr(path)
    }
    fn hdf5(&self, path: &Path, dataset: &str) -> Result<Hdf5Info, IoError> {
        FsCatalog.hdf5(path, dataset)
    }
    fn hdf5_stack(
        &self,
        _pattern: &str,
        _dataset: &str,
        _index: Option<&regex::Regex>,
    ) -> Result<StackReader, IoError> {
        Ok(self.stack.clone())
    }
    fn images(&self, pattern: &str) -> Result<(Vec<PathBuf>, Vec<usize>, DType), IoError> {
        FsCatalog.images(pattern)
    }
}

/// An image stack's files, the first image's `(H, W, C)` and its dtype.
type ImageList = (Vec<PathBuf>, Vec<usize>, DType);

/// Metadata held in memory, for plan tests with no files: register what
/// a test's config reads, by path (or glob).
#[derive(Debug, Default)]
pub struct FakeCatalog {
    zarr: Mutex<HashMap<PathBuf, ZarrInfo>>,
    hdf5: Mutex<HashMap<(PathBuf, String), Hdf5Info>>,
    stacks: Mutex<HashMap<String, StackReader>>,
    images: Mutex<HashMap<String, ImageList>>,
}

fn missing(what: &str, path: &str) -> IoError {
    IoError::Missing {
        path: PathBuf::from(format!("{path} ({what} not in the fake catalog)")),
    }
}

impl FakeCatalog {
    /// A Zarr array of `shape` stored in `chunks` of `dtype` at `path`.
    pub fn add_zarr(&self, path: &Path, dtype: DType, shape: &[u64], chunks: &[u64]) {
        let info = ZarrInfo::plain(path, dtype, shape, chunks);
        if let Ok(mut m) = self.zarr.lock() {
            m.insert(path.to_path_buf(), info);
        }
    }

    /// A Zarr array whose axes are named `names`.
    pub fn add_zarr_named(
        &self,
        path: &Path,
        dtype: DType,
        shape: &[u64],
        chunks: &[u64],
        names: &[&str],
    ) {
        let mut info = ZarrInfo::plain(path, dtype, shape, chunks);
        info.dimension_names = Some(names.iter().map(|n| n.to_string()).collect());
        if let Ok(mut m) = self.zarr.lock() {
            m.insert(path.to_path_buf(), info);
        }
    }

    /// An HDF5 dataset.
    pub fn add_hdf5(&self, path: &Path, dataset: &str, dtype: DType, shape: &[u64]) {
        let info = Hdf5Info {
            path: path.to_path_buf(),
            dataset: dataset.to_string(),
            shape: shape.to_vec(),
            dtype,
            chunks: None,
            labels: None,
        };
        if let Ok(mut m) = self.hdf5.lock() {
            m.insert((path.to_path_buf(), dataset.to_string()), info);
        }
    }

    /// A stack of `n` timepoints of `frame` (files `t_0000.h5`, ...).
    pub fn add_stack(&self, pattern: &str, dataset: &str, n: usize, frame: &[u64], dtype: DType) {
        let stack = StackReader {
            files: (0..n)
                .map(|t| PathBuf::from(format!("t_{t:04}.h5")))
                .collect(),
            dataset: dataset.to_string(),
            frame: frame.to_vec(),
            dtype,
        };
        if let Ok(mut m) = self.stacks.lock() {
            m.insert(pattern.to_string(), stack);
        }
    }

    /// `n` images of `(H, W, C)`.
    pub fn add_images(&self, pattern: &str, n: usize, image: &[usize], dtype: DType) {
        let files = (0..n)
            .map(|i| PathBuf::from(format!("img_{i:04}.png")))
            .collect();
        if let Ok(mut m) = self.images.lock() {
            m.insert(pattern.to_string(), (files, image.to_vec(), dtype));
        }
    }
}

impl Catalog for FakeCatalog {
    fn zarr(&self, path: &Path) -> Result<ZarrInfo, IoError> {
        let m = self.zarr.lock().map_err(|_| missing("lock", ""))?;
        m.get(path)
            .cloned()
            .ok_or_else(|| missing("Zarr array", &path.display().to_string()))
    }
    fn hdf5(&self, path: &Path, dataset: &str) -> Result<Hdf5Info, IoError> {
        let m = self.hdf5.lock().map_err(|_| missing("lock", ""))?;
        m.get(&(path.to_path_buf(), dataset.to_string()))
            .cloned()
            .ok_or_else(|| missing("HDF5 dataset", &path.display().to_string()))
    }
    fn hdf5_stack(
        &self,
        pattern: &str,
        _dataset: &str,
        _index: Option<&regex::Regex>,
    ) -> Result<StackReader, IoError> {
        let m = self.stacks.lock().map_err(|_| missing("lock", ""))?;
        // As on disk: a glob no registered stack answers matches no file.
        m.get(pattern).cloned().ok_or_else(|| IoError::NoMatch {
            pattern: pattern.to_string(),
        })
    }
    fn images(&self, pattern: &str) -> Result<(Vec<PathBuf>, Vec<usize>, DType), IoError> {
        let m = self.images.lock().map_err(|_| missing("lock", ""))?;
        m.get(pattern)
            .cloned()
            .ok_or_else(|| missing("image stack", pattern))
    }
}
