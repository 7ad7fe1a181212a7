//! HDF5: one dataset of one file read by hyperslabs, a glob of
//! per-timepoint files stacked on a new leading axis, a writer, and a
//! generator of seed 002's input. hdf5-metno serialises every call into the
//! library behind its own global lock, so the runtime gives HDF5 I/O stages
//! of their own and reads one chunk at a time in them.

use std::path::{Path, PathBuf};

use blockflow_core::{with_array, with_dtype, ArrayData, ArrayKind, DType, Region};
use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use ndarray::{ArrayD, IxDyn, SliceInfo, SliceInfoElem};

use crate::output::{Claim, Made};
use crate::IoError;

fn h5err(path: &Path, dataset: &str, e: impl std::fmt::Display) -> IoError {
    IoError::Store {
        path: path.to_path_buf(),
        why: format!("dataset \"{dataset}\": {e}"),
    }
}

/// A region as hyperslab bounds.
fn region_slice(region: &Region) -> Vec<SliceInfoElem> {
    region
        .origin
        .iter()
        .zip(&region.shape)
        .map(|(&o, &n)| SliceInfoElem::Slice {
            start: o as isize,
            end: Some((o + n) as isize),
            step: 1,
        })
        .collect()
}

/// Shape and dtype of one dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Hdf5Info {
    pub path: PathBuf,
    pub dataset: String,
    pub shape: Vec<u64>,
    pub dtype: DType,
    /// The dataset's own chunks, if it is chunked.
    pub chunks: Option<Vec<u64>>,
    /// Its axes' names: the dimension labels (h5py's `ds.dims[i].label`),
    /// when every axis has one.
    pub labels: Option<Vec<String>>,
}

/// The dataset's dimension labels (`DIMENSION_LABELS`), if every axis has
/// a distinct non-empty one; anything else (no attribute, another type,
/// an unlabelled axis) is no names, never an error.
fn read_labels(ds: &hdf5::Dataset) -> Option<Vec<String>> {
    let raw = ds
        .attr("DIMENSION_LABELS")
        .ok()?
        .read_raw::<hdf5::types::VarLenAscii>()
        .ok()?;
    let labels: Vec<String> = raw.iter().map(|l| l.as_str().to_string()).collect();
    let distinct = labels
        .iter()
        .enumerate()
        .all(|(k, l)| !labels[..k].contains(l));
    (labels.len() == ds.ndim() && distinct && labels.iter().all(|l| !l.is_empty()))
        .then_some(labels)
}

fn dtype_of(path: &Path, dataset: &str, ds: &hdf5::Dataset) -> Result<DType, IoError> {
    let desc = ds
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| h5err(path, dataset, e))?;
    Ok(match desc {
        TypeDescriptor::Unsigned(IntSize::U1) => DType::U8,
        TypeDescriptor::Unsigned(IntSize::U2) => DType::U16,
        TypeDescriptor::Unsigned(IntSize::U4) => DType::U32,
        TypeDescriptor::Integer(IntSize::U2) => DType::I16,
        TypeDescriptor::Integer(IntSize::U4) => DType::I32,
        TypeDescriptor::Integer(IntSize::U8) => DType::I64,
        TypeDescriptor::Float(FloatSize::U4) => DType::F32,
        TypeDescriptor::Float(FloatSize::U8) => DType::F64,
        other => {
            return Err(IoError::UnsupportedDType {
                path: path.to_path_buf(),
                dtype: format!("{other} (dataset \"{dataset}\")"),
            })
        }
    })
}

/// Says what `name` in `file` is, when it could not be opened as a
/// dataset (`reason`: HDF5's error): not there (and what its group holds),
/// a group, a named datatype, a soft link that does not resolve, an
/// external link whose file or object cannot be opened.
fn not_a_dataset(file: &hdf5::File, name: &str, reason: &str) -> String {
    let members = |g: &hdf5::Group| match g.member_names() {
        Ok(m) if m.is_empty() => "nothing".to_string(),
        Ok(mut m) => {
            m.sort();
            m.join(", ")
        }
        Err(_) => "?".to_string(),
    };
    let trimmed = name.trim_matches('/');
    let (parent_name, leaf) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    let parent = if parent_name.is_empty() {
        file.group("/")
    } else {
        file.group(parent_name)
    };
    let parent = match parent {
        Ok(g) => g,
        Err(_) => {
            return format!(
                "no dataset \"{name}\" (there is no group \"{parent_name}\"; the file has: {})",
                file.group("/").map(|g| members(&g)).unwrap_or_default()
            )
        }
    };
    let link = parent
        .iter_visit_default(None, |_, n, info, found| {
            if n == leaf {
                *found = Some(info.link_type);
            }
            found.is_none()
        })
        .ok()
        .flatten();
    let Some(link) = link else {
        return if parent_name.is_empty() {
            format!("no dataset \"{name}\" (it has: {})", members(&parent))
        } else {
            format!(
                "no dataset \"{name}\" (\"{parent_name}\" has: {})",
                members(&parent)
            )
        };
    };
    let via = match link {
        hdf5::LinkType::Hard => "",
        hdf5::LinkType::Soft => "a soft link to ",
        hdf5::LinkType::External => "an external link to ",
    };
    match parent.loc_type_by_name(leaf) {
        Ok(hdf5::LocationType::Group) => format!(
            "\"{name}\" is {via}a group, not a dataset (it has: {})",
            file.group(trimmed)
                .map(|g| members(&g))
                .unwrap_or_else(|_| "?".into())
        ),
        Ok(hdf5::LocationType::NamedDatatype) => {
            format!("\"{name}\" is {via}a named datatype, not a dataset")
        }
        Ok(_) => format!("\"{name}\" cannot be opened as a dataset: {reason}"),
        Err(_) => match link {
            hdf5::LinkType::Soft => format!(
                "\"{name}\" is a soft link that does not resolve (nothing is at its target)"
            ),
            hdf5::LinkType::External => {
                let target = reason
                    .split_once("external link file name = '")
                    .and_then(|(_, t)| t.split_once('\''))
                    .map(|(t, _)| t);
                match target {
                    Some(t) => format!(
                        "\"{name}\" is an external link into {t}, which cannot be resolved (that file cannot be opened)"
                    ),
                    None => format!(
                        "\"{name}\" is an external link that cannot be resolved: {reason}"
                    ),
                }
            }
            hdf5::LinkType::Hard => format!("\"{name}\" cannot be opened: {reason}"),
        },
    }
}

/// One dataset of one file, read by regions (hyperslabs).
pub struct Hdf5Reader {
    pub info: Hdf5Info,
    ds: hdf5::Dataset,
}

impl std::fmt::Debug for Hdf5Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hdf5Reader")
            .field("info", &self.info)
            .finish()
    }
}

impl Hdf5Reader {
    pub fn open(path: &Path, dataset: &str) -> Result<Self, IoError> {
        if !path.exists() {
            return Err(IoError::Missing {
                path: path.to_path_buf(),
            });
        }
        let file = hdf5::File::open(path).map_err(|e| IoError::Store {
            path: path.to_path_buf(),
            why: format!("not a readable HDF5 file ({e})"),
        })?;
        let ds = file.dataset(dataset).map_err(|e| IoError::Store {
            path: path.to_path_buf(),
            why: not_a_dataset(&file, dataset, &e.to_string()),
        })?;
        let shape: Vec<u64> = ds.shape().iter().map(|&n| n as u64).collect();
        let dtype = dtype_of(path, dataset, &ds)?;
        let chunks = ds.chunk().map(|c| c.iter().map(|&n| n as u64).collect());
        let labels = read_labels(&ds);
        Ok(Hdf5Reader {
            info: Hdf5Info {
                path: path.to_path_buf(),
                dataset: dataset.to_string(),
                shape,
                dtype,
                chunks,
                labels,
            },
            ds,
        })
    }

    /// The values of `region`.
    pub fn read(&self, region: &Region) -> Result<ArrayData, IoError> {
        let elems = region_slice(region);
        let err = |e: String| IoError::Chunk {
            path: self.info.path.clone(),
            chunk: Vec::new(),
            region: region.to_string(),
            why: format!("dataset \"{}\": {e}", self.info.dataset),
        };
        let info = SliceInfo::<_, IxDyn, IxDyn>::try_from(elems).map_err(|e| err(e.to_string()))?;
        Ok(with_dtype!(self.info.dtype, T => {
            read_typed::<T>(&self.ds, info).map_err(err)?
        }))
    }
}

trait H5Elem: ArrayKind {
    fn read(
        ds: &hdf5::Dataset,
        s: SliceInfo<Vec<SliceInfoElem>, IxDyn, IxDyn>,
    ) -> Result<ArrayD<Self>, String>;
    fn write(
        ds: &hdf5::Dataset,
        a: &ArrayD<Self>,
        s: SliceInfo<Vec<SliceInfoElem>, IxDyn, IxDyn>,
    ) -> Result<(), String>;
    fn create(
        f: &hdf5::File,
        name: &str,
        shape: &[usize],
        chunks: &[usize],
        opts: &Hdf5Options,
    ) -> Result<hdf5::Dataset, String>;
}

/// The axes' names as HDF5's dimension-scale labels: the attribute
/// `DIMENSION_LABELS`, one variable-length ASCII string per axis (the
/// type `H5DSset_label` writes, so h5py's `ds.dims[i].label` reads it).
fn write_labels(ds: &hdf5::Dataset, labels: &[String]) -> Result<(), String> {
    let v = labels
        .iter()
        .map(|l| {
            hdf5::types::VarLenAscii::from_ascii(l.as_bytes())
                .map_err(|e| format!("axis name \"{l}\" is not ASCII: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    ds.new_attr::<hdf5::types::VarLenAscii>()
        .shape(v.len())
        .create("DIMENSION_LABELS")
        .and_then(|a| a.write(&v))
        .map_err(|e| e.to_string())
}

/// How a dataset is written beyond its shape and chunks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hdf5Options {
    /// gzip (deflate) level 0..=9, or none.
    pub gzip: Option<u8>,
    /// The byte shuffle filter before gzip (h5py's `shuffle=True`).
    pub shuffle: bool,
    /// String attributes of the dataset, e.g. the pipeline and stage.
    pub attrs: Vec<(String, String)>,
    /// The axes' names, written as the dimension scales' labels
    /// (`DIMENSION_LABELS`, which h5py reads as `ds.dims[i].label`).
    pub labels: Option<Vec<String>>,
}

macro_rules! h5elem {
    ($($t:ty),*) => {$(
        impl H5Elem for $t {
            fn read(ds: &hdf5::Dataset, s: SliceInfo<Vec<SliceInfoElem>, IxDyn, IxDyn>) -> Result<ArrayD<Self>, String> {
                ds.read_slice::<$t, _, IxDyn>(s).map_err(|e| e.to_string())
            }
            fn write(ds: &hdf5::Dataset, a: &ArrayD<Self>, s: SliceInfo<Vec<SliceInfoElem>, IxDyn, IxDyn>) -> Result<(), String> {
                ds.write_slice(a, s).map_err(|e| e.to_string())
            }
            fn create(f: &hdf5::File, name: &str, shape: &[usize], chunks: &[usize], opts: &Hdf5Options) -> Result<hdf5::Dataset, String> {
                let mut b = f.new_dataset::<$t>().shape(shape).chunk(chunks);
                if let Some(level) = opts.gzip {
                    if opts.shuffle {
                        b = b.shuffle();
                    }
                    b = b.deflate(level);
                }
                b.create(name).map_err(|e| e.to_string())
            }
        }
    )*};
}
h5elem!(u8, u16, u32, i16, i32, i64, f32, f64);

impl H5Elem for bool {
    fn read(
        _: &hdf5::Dataset,
        _: SliceInfo<Vec<SliceInfoElem>, IxDyn, IxDyn>,
    ) -> Result<ArrayD<Self>, String> {
        Err("boolean datasets are not supported".into())
    }
    fn write(
        _: &hdf5::Dataset,
        _: &ArrayD<Self>,
        _: SliceInfo<Vec<SliceInfoElem>, IxDyn, IxDyn>,
    ) -> Result<(), String> {
        Err("boolean datasets are not supported; cast to uint8".into())
    }
    fn create(
        _: &hdf5::File,
        _: &str,
        _: &[usize],
        _: &[usize],
        _: &Hdf5Options,
    ) -> Result<hdf5::Dataset, String> {
        Err("boolean datasets are not supported; cast to uint8".into())
    }
}

fn read_typed<T: H5Elem>(
    ds: &hdf5::Dataset,
    s: SliceInfo<Vec<SliceInfoElem>, IxDyn, IxDyn>,
) -> Result<ArrayData, String> {
    T::read(ds, s).map(T::wrap)
}

/// Natural order: runs of digits compare as numbers (t2 before t10), by
/// the `alphanumeric-sort` crate.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    alphanumeric_sort::compare_str(a, b)
}

/// The files of a glob, in natural order of their names.
pub fn list_timepoints(pattern: &str) -> Result<Vec<PathBuf>, IoError> {
    let mut files = crate::images::list_images(pattern)?;
    files.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    Ok(files)
}

/// The timepoint index of a file: the first capture group of `index`
/// matched against its name, as an integer.
pub fn timepoint_index(path: &Path, index: &regex::Regex) -> Result<u64, IoError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bad = |why: String| IoError::Store {
        path: path.to_path_buf(),
        why,
    };
    let caps = index.captures(&name).ok_or_else(|| {
        bad(format!(
            "the name does not match the index pattern `{index}`"
        ))
    })?;
    let text = caps
        .get(1)
        .ok_or_else(|| bad(format!("the index pattern `{index}` has no capture group")))?
        .as_str();
    text.parse::<u64>().map_err(|_| {
        bad(format!(
            "the index pattern `{index}` captures \"{text}\", not an integer"
        ))
    })
}

/// The files of a glob ordered by the index `index` captures from their
/// names (see [`timepoint_index`]); two files with one index are an error.
pub fn list_timepoints_indexed(
    pattern: &str,
    index: &regex::Regex,
) -> Result<Vec<PathBuf>, IoError> {
    let files = crate::images::list_images(pattern)?;
    let mut keyed = files
        .into_iter()
        .map(|f| timepoint_index(&f, index).map(|k| (k, f)))
        .collect::<Result<Vec<_>, _>>()?;
    keyed.sort();
    for w in keyed.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(IoError::Store {
                path: w[1].1.clone(),
                why: format!("has timepoint index {} as {} has", w[0].0, w[0].1.display()),
            });
        }
    }
    Ok(keyed.into_iter().map(|(_, f)| f).collect())
}

/// A glob of per-timepoint files, each holding `dataset` of one shape and
/// dtype, as one array with a new leading axis (time).
#[derive(Debug, Clone)]
pub struct StackReader {
    pub files: Vec<PathBuf>,
    pub dataset: String,
    /// One timepoint's shape (the first file's).
    pub frame: Vec<u64>,
    pub dtype: DType,
}

impl StackReader {
    /// Lists the files (in natural order) and reads the first one's
    /// dataset header.
    pub fn open(pattern: &str, dataset: &str) -> Result<Self, IoError> {
        Self::open_ordered(pattern, dataset, None)
    }

    /// As [`StackReader::open`], the files ordered by the index a regex
    /// captures from their names where one is given.
    pub fn open_ordered(
        pattern: &str,
        dataset: &str,
        index: Option<&regex::Regex>,
    ) -> Result<Self, IoError> {
        let files = match index {
            Some(re) => list_timepoints_indexed(pattern, re)?,
            None => list_timepoints(pattern)?,
        };
        let first = Hdf5Reader::open(&files[0], dataset)?;
        Ok(StackReader {
            frame: first.info.shape.clone(),
            dtype: first.info.dtype,
            files,
            dataset: dataset.to_string(),
        })
    }

    /// The stack's shape: (files, frame...).
    pub fn shape(&self) -> Vec<u64> {
        let mut s = vec![self.files.len() as u64];
        s.extend(&self.frame);
        s
    }

    /// Opens timepoint `t`, checking its shape and dtype against the first.
    pub fn timepoint(&self, t: usize) -> Result<Hdf5Reader, IoError> {
        let path = &self.files[t];
        let r = Hdf5Reader::open(path, &self.dataset)?;
        if r.info.shape != self.frame || r.info.dtype != self.dtype {
            return Err(IoError::Store {
                path: path.clone(),
                why: format!(
                    "dataset \"{}\" is {:?} {}, but the stack's timepoints are {:?} {} (as {})",
                    self.dataset,
                    r.info.shape,
                    r.info.dtype,
                    self.frame,
                    self.dtype,
                    self.files[0].display()
                ),
            });
        }
        Ok(r)
    }

    /// The values of `region` of the stack.
    pub fn read(&self, region: &Region) -> Result<ArrayData, IoError> {
        let (t0, nt) = (region.origin[0] as usize, region.shape[0] as usize);
        let sub = Region::new(region.origin[1..].to_vec(), region.shape[1..].to_vec());
        let shape = region.shape_usize();
        if nt == 1 {
            // One timepoint (the usual chunk): its array as read, no copy.
            let part = self.timepoint(t0)?.read(&sub)?;
            return Ok(with_array!(part, a => ArrayKind::wrap(a.insert_axis(ndarray::Axis(0)))));
        }
        Ok(with_dtype!(self.dtype, T => {
            let mut out = ArrayD::<T>::default(IxDyn(&shape));
            for k in 0..nt {
                let part = self.timepoint(t0 + k)?.read(&sub)?;
                let typed = T::unwrap_ref(&part).ok_or_else(|| IoError::Store {
                    path: self.files[t0 + k].clone(),
                    why: "internal: dtype".into(),
                })?;
                out.index_axis_mut(ndarray::Axis(0), k).assign(typed);
            }
            T::wrap(out)
        }))
    }
}

/// An HDF5 dataset being written: into the run's work name beside `PATH`
/// (under the output's [`Claim`]), renamed into place by
/// [`Hdf5Writer::finish`]; removed if never finished.
pub struct Hdf5Writer {
    pub path: PathBuf,
    partial: PathBuf,
    dataset: String,
    dtype: DType,
    file: Option<hdf5::File>,
    ds: Option<hdf5::Dataset>,
    // Last: dropping it removes an unfinished file and frees the lock.
    claim: Claim,
}

impl std::fmt::Debug for Hdf5Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hdf5Writer")
            .field("path", &self.path)
            .finish()
    }
}

impl Hdf5Writer {
    pub fn create(
        path: &Path,
        dataset: &str,
        dtype: DType,
        shape: &[u64],
        chunks: &[u64],
        overwrite: bool,
    ) -> Result<Self, IoError> {
        Self::create_with(
            path,
            dataset,
            dtype,
            shape,
            chunks,
            overwrite,
            &Hdf5Options::default(),
        )
    }

    /// [`Hdf5Writer::create`] with compression and attributes.
    pub fn create_with(
        path: &Path,
        dataset: &str,
        dtype: DType,
        shape: &[u64],
        chunks: &[u64],
        overwrite: bool,
        opts: &Hdf5Options,
    ) -> Result<Self, IoError> {
        let claim = Claim::take(path, Made::Hdf5, overwrite)?;
        let partial = claim.partial().to_path_buf();
        if let Some(dir) = partial.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| IoError::Os {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let file = hdf5::File::create(&partial).map_err(|e| h5err(&partial, dataset, e))?;
        let shape: Vec<usize> = shape.iter().map(|&n| n as usize).collect();
        let chunks: Vec<usize> = chunks
            .iter()
            .zip(&shape)
            .map(|(&c, &n)| (c as usize).min(n).max(1))
            .collect();
        let ds =
            with_dtype!(dtype, T => <T as H5Elem>::create(&file, dataset, &shape, &chunks, opts))
                .map_err(|e| h5err(path, dataset, e))?;
        for (name, value) in &opts.attrs {
            let v: hdf5::types::VarLenUnicode = value
                .parse()
                .map_err(|e| h5err(path, dataset, format!("attribute \"{name}\": {e}")))?;
            ds.new_attr::<hdf5::types::VarLenUnicode>()
                .create(name.as_str())
                .and_then(|a| a.write_scalar(&v))
                .map_err(|e| h5err(path, dataset, format!("attribute \"{name}\": {e}")))?;
        }
        if let Some(labels) = &opts.labels {
            write_labels(&ds, labels).map_err(|e| {
                h5err(
                    path,
                    dataset,
                    format!("attribute \"DIMENSION_LABELS\": {e}"),
                )
            })?;
        }
        Ok(Hdf5Writer {
            path: path.to_path_buf(),
            partial,
            dataset: dataset.to_string(),
            dtype,
            file: Some(file),
            ds: Some(ds),
            claim,
        })
    }

    pub fn write(&self, region: &Region, data: &ArrayData) -> Result<(), IoError> {
        let err = |why: String| IoError::Chunk {
            path: self.path.clone(),
            chunk: Vec::new(),
            region: region.to_string(),
            why: format!("dataset \"{}\": {why}", self.dataset),
        };
        if data.dtype() != self.dtype {
            return Err(err(format!(
                "data is {} but the dataset is {}",
                data.dtype(),
                self.dtype
            )));
        }
        let ds = self
            .ds
            .as_ref()
            .ok_or_else(|| err("already finished".into()))?;
        let elems = region_slice(region);
        let info = SliceInfo::<_, IxDyn, IxDyn>::try_from(elems).map_err(|e| err(e.to_string()))?;
        with_dtype!(self.dtype, T => {
            let a = T::unwrap_ref(data).ok_or_else(|| err("dtype".into()))?;
            <T as H5Elem>::write(ds, a, info).map_err(err)
        })
    }

    /// Closes the file and moves it into place.
    pub fn finish(mut self) -> Result<PathBuf, IoError> {
        self.ds = None;
        if let Some(f) = self.file.take() {
            f.close()
                .map_err(|e| h5err(&self.partial, &self.dataset, e))?;
        }
        self.claim.commit()?;
        Ok(self.path.clone())
    }
}

impl Drop for Hdf5Writer {
    fn drop(&mut self) {
        // The file is closed before the claim removes an unfinished one.
        self.ds = None;
        self.file = None;
    }
}

/// splitmix64: a small deterministic generator.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn uniform(seed: u64, k: u64) -> f64 {
    (mix(seed ^ mix(k)) >> 11) as f64 / (1u64 << 53) as f64
}

/// The rigid displacement (z, y, x) of timepoint `t` (timepoint 0: none),
/// within ±`max` voxels, in steps of 1/20 voxel.
pub fn timepoint_shift(seed: u64, t: usize, max: f64) -> [f64; 3] {
    if t == 0 {
        return [0.0; 3];
    }
    let mut s = [0.0; 3];
    for (ax, v) in s.iter_mut().enumerate() {
        let u = uniform(seed, (t * 3 + ax) as u64 + 1000);
        *v = ((u * 2.0 - 1.0) * max * 20.0).round() / 20.0;
    }
    s
}

/// One timepoint of seed 002's input: Gaussian blobs (fixed positions and
/// sizes, moved by [`timepoint_shift`]) on a dim background, plus noise.
pub fn timepoint_volume(seed: u64, t: usize, n: usize) -> ArrayD<f64> {
    let blobs: Vec<[f64; 5]> = (0..24u64)
        .map(|b| {
            let u = |k: u64| uniform(seed, b * 8 + k);
            let c = |k: u64| n as f64 * (0.2 + 0.6 * u(k));
            [
                c(0),
                c(1),
                c(2),
                n as f64 * (0.02 + 0.05 * u(3)),
                0.5 + u(4),
            ]
        })
        .collect();
    let d = timepoint_shift(seed, t, 3.0);
    ArrayD::from_shape_fn(IxDyn(&[n, n, n]), |i| {
        let (z, y, x) = (i[0] as f64 - d[0], i[1] as f64 - d[1], i[2] as f64 - d[2]);
        let mut v = 0.1;
        for b in &blobs {
            let r2 = (z - b[0]).powi(2) + (y - b[1]).powi(2) + (x - b[2]).powi(2);
            v += b[4] * (-r2 / (2.0 * b[3] * b[3])).exp();
        }
        let k = ((t * n + i[0]) * n + i[1]) * n + i[2];
        v + 0.05 * (uniform(seed ^ 0xA5A5, k as u64) - 0.5)
    })
}

/// Writes `count` timepoints of `n`^3 float64 as `t_0000.h5`, ... (dataset
/// "data") into `dir`, each atomically, and `shifts.json` with the true
/// displacement of each. Returns the files. [`write_timeseries_as`] with
/// [`DType::F64`].
pub fn write_timeseries(
    dir: &Path,
    count: usize,
    n: usize,
    seed: u64,
) -> Result<Vec<PathBuf>, IoError> {
    write_timeseries_as(dir, count, n, seed, DType::F64)
}

/// [`write_timeseries`] with the volumes stored as `dtype`, float32 or
/// float64: the same generated values (computed in float64, rounded to
/// float32 for [`DType::F32`]) and the same `shifts.json`. Any other dtype
/// is an error, before anything is written.
pub fn write_timeseries_as(
    dir: &Path,
    count: usize,
    size: usize,
    seed: u64,
    dtype: DType,
) -> Result<Vec<PathBuf>, IoError> {
    if !matches!(dtype, DType::F32 | DType::F64) {
        return Err(IoError::Store {
            path: dir.to_path_buf(),
            why: format!(
                "cannot write the time series as {dtype}: its volumes are float32 or float64"
            ),
        });
    }
    let n = size;
    std::fs::create_dir_all(dir).map_err(|source| IoError::Os {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::with_capacity(count);
    for t in 0..count {
        let path = dir.join(format!("t_{t:04}.h5"));
        let v = timepoint_volume(seed, t, n);
        let vol = match dtype {
            DType::F32 => ArrayData::F32(v.mapv(|x| x as f32)),
            _ => ArrayData::F64(v),
        };
        let nn = n as u64;
        let w = Hdf5Writer::create(&path, "data", dtype, &[nn, nn, nn], &[nn, nn, nn], true)?;
        w.write(&Region::new(vec![0, 0, 0], vec![nn, nn, nn]), &vol)?;
        files.push(w.finish()?);
    }
    let shifts: Vec<[f64; 3]> = (0..count).map(|t| timepoint_shift(seed, t, 3.0)).collect();
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "shifts_zyx": shifts,
        "note": "timepoint t is timepoint 0 moved by this vector (voxels)"
    }))
    .map_err(|e| IoError::Store {
        path: dir.join("shifts.json"),
        why: e.to_string(),
    })?;
    crate::blocks::write_atomic(&dir.join("shifts.json"), &text)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float32_timeseries_are_the_float64_values_rounded() {
        let (a, b) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let f64s = write_timeseries(a.path(), 2, 12, 3).expect("float64");
        let f32s = write_timeseries_as(b.path(), 2, 12, 3, DType::F32).expect("float32");
        let whole = Region::new(vec![0, 0, 0], vec![12, 12, 12]);
        for (x, y) in f64s.iter().zip(&f32s) {
            let r = Hdf5Reader::open(y, "data").expect("open");
            assert_eq!(r.info.dtype, DType::F32);
            let wide = Hdf5Reader::open(x, "data")
                .expect("open")
                .read(&whole)
                .expect("read");
            assert_eq!(r.read(&whole).expect("read"), wide.cast(DType::F32));
        }
        assert_eq!(
            std::fs::read_to_string(a.path().join("shifts.json")).expect("json"),
            std::fs::read_to_string(b.path().join("shifts.json")).expect("json")
        );
    }

    #[test]
    fn other_dtypes_are_refused_before_writing() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("vols");
        let err = write_timeseries_as(&out, 2, 8, 1, DType::U16)
            .expect_err("uint16")
            .to_string();
        assert!(
            err.contains("uint16") && err.contains("float32 or float64"),
            "{err}"
        );
        assert!(!out.exists());
    }
}
