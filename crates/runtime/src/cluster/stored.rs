//! What a distributed run stores between segments: intermediates (where,
//! in which chunks), the staged outputs, and the catalog that answers for
//! intermediates before they are written.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use blockflow_core::DType;
use blockflow_io::hdf5::{Hdf5Info, StackReader};
use blockflow_io::zarr::{Codec, ZarrInfo, ZarrWriteOptions};
use blockflow_io::IoError;

use super::cut::Cut;
use super::{absolute, made_name, planned, str_entry, FinalOutput, Place};
use crate::catalog::Catalog;
use crate::config::{RawConfig, Val};
use crate::plan::Plan;
use crate::stages::{PType, PathRole, Writes};

/// A catalog that answers for the intermediates a run will have written
/// before a segment reads them, and asks the files for everything else.
pub(super) struct RunCatalog<'a> {
    pub(super) inner: &'a dyn Catalog,
    pub(super) inter: HashMap<PathBuf, ZarrInfo>,
}

impl Catalog for RunCatalog<'_> {
    fn zarr(&self, path: &Path) -> Result<ZarrInfo, IoError> {
        match self.inter.get(path) {
            Some(i) => Ok(i.clone()),
            None => self.inner.zarr(path),
        }
    }
    fn hdf5(&self, path: &Path, dataset: &str) -> Result<Hdf5Info, IoError> {
        self.inner.hdf5(path, dataset)
    }
    fn hdf5_stack(
        &self,
        pattern: &str,
        dataset: &str,
        index: Option<&regex::Regex>,
    ) -> Result<StackReader, IoError> {
        self.inner.hdf5_stack(pattern, dataset, index)
    }
    fn images(&self, pattern: &str) -> Result<(Vec<PathBuf>, Vec<usize>, DType), IoError> {
        self.inner.images(pattern)
    }
}

/// The options of an intermediate array.
pub(super) fn inter_options(dtype: DType, shape: Vec<u64>, chunks: Vec<u64>) -> ZarrWriteOptions {
    ZarrWriteOptions {
        zarr_format: 3,
        dtype,
        shape,
        chunks,
        codec: Codec::Zstd,
        level: 1,
        shards: None,
        encoding: Default::default(),
        dimension_names: None,
        overwrite: true,
        attributes: Default::default(),
    }
}

/// The stages stored for other segments: in which chunks, where, and
/// which of them are read back from an output of the same chunks.
pub(super) struct Stored<'a> {
    pub(super) chunks: &'a HashMap<usize, Vec<u64>>,
    pub(super) at: &'a HashMap<usize, PathBuf>,
    pub(super) shared: &'a HashSet<usize>,
}

/// The stages stored for another segment, with their chunks: a stage read
/// by a stage of another segment, in its own stream chunks, or, read by a
/// rechunk, in chunks that divide both grids. A merged reduction is stored
/// by its merge; its input is not stored for it (the partials are made
/// where the input is computed).
pub(super) fn materialised(cut: &Cut<'_>, full: &Plan) -> HashMap<usize, Vec<u64>> {
    let mut stored = HashMap::new();
    for i in 0..cut.nodes.len() {
        if cut.place[i] == Place::Source {
            continue;
        }
        let Some(out) = planned(full, cut.name(i)).and_then(|s| s.output.as_ref()) else {
            continue;
        };
        let mut chunks: Option<Vec<u64>> = None;
        for c in cut.consumers(i) {
            let same = cut.time[c] == cut.time[i] && cut.place[i] != Place::Partial;
            if (same && cut.place[c] != Place::Rechunk) || cut.place[c] == Place::Partial {
                continue;
            }
            let mine = out.grid.chunk_shape().to_vec();
            let want = if cut.place[c] == Place::Rechunk {
                let dst = planned(full, cut.name(c))
                    .and_then(|s| s.output.as_ref())
                    .map_or_else(|| out.grid.clone(), |o| o.grid.clone());
                let ones = vec![1; mine.len()];
                crate::plan::intermediate_chunks(&out.grid, &dst, &ones)
            } else {
                mine
            };
            chunks = Some(match chunks {
                None => want,
                Some(have) => have
                    .iter()
                    .zip(&want)
                    .map(|(&a, &b)| crate::plan::gcd(a, b).max(1))
                    .collect(),
            });
        }
        if let Some(c) = chunks {
            stored.insert(i, c);
        }
    }
    stored
}

/// Staged output paths by (stage, parameter).
pub(super) type Staged = HashMap<(usize, &'static str), PathBuf>;

/// Every output the run writes, staged in the run folder
/// (`out/<stage>/<param>/<name>`) until the commit moves it into place.
pub(super) fn staged_outputs(
    raw: &RawConfig,
    cut: &Cut<'_>,
    run_dir: &Path,
) -> (Vec<FinalOutput>, Staged) {
    let mut finals = Vec::new();
    let mut staged = HashMap::new();
    for (i, node) in cut.nodes.iter().enumerate() {
        let Some(def) = crate::stages::kind(&node.kind) else {
            continue;
        };
        for ps in def.params {
            if !matches!(ps.ty, PType::Path(PathRole::Output)) {
                continue;
            }
            let Some(v) = node.raw.get(ps.name) else {
                continue;
            };
            if !matches!(&v.v, Val::Str(s) if !s.is_empty()) {
                continue;
            }
            let path = absolute(&crate::plan::resolve(&raw.path, v));
            let base = path.file_name().map(PathBuf::from).unwrap_or_default();
            let at = run_dir
                .join("out")
                .join(cut.name(i))
                .join(ps.name)
                .join(base);
            finals.push(FinalOutput {
                stage: cut.name(i).to_string(),
                staged: at.clone(),
                path,
                made: made_name(&node.kind, ps.name).to_string(),
                overwrite: str_entry(node.raw, "if_exists").as_deref() == Some("overwrite"),
            });
            staged.insert((i, ps.name), at);
        }
    }
    (finals, staged)
}

/// Where each stored stage is: `inter/<stage>.zarr`, or, when a
/// `write-zarr` of the same segment writes it in the same chunks, that
/// output (staged until the commit) instead of a second copy.
pub(super) fn locate(
    cut: &Cut<'_>,
    full: &Plan,
    chunks: &HashMap<usize, Vec<u64>>,
    staged: &Staged,
    run_dir: &Path,
) -> (HashMap<usize, PathBuf>, HashSet<usize>) {
    let mut at = HashMap::new();
    let mut shared = HashSet::new();
    for (&i, c) in chunks {
        let sink = cut.consumers(i).into_iter().find(|&k| {
            cut.place[i] != Place::Partial
                && cut.nodes[k].kind == "write-zarr"
                && cut.time[k] == cut.time[i]
                && planned(full, cut.name(k)).is_some_and(|st| {
                    matches!(st.kind.writes(), Some(Writes::Zarr { options, .. }) if options.chunks == *c)
                })
        });
        match sink.and_then(|k| staged.get(&(k, "path"))) {
            Some(p) => {
                at.insert(i, p.clone());
                shared.insert(i);
            }
            None => {
                at.insert(
                    i,
                    run_dir.join("inter").join(format!("{}.zarr", cut.name(i))),
                );
            }
        }
    }
    (at, shared)
}

/// The catalog planning the segments reads (answering for intermediates
/// not yet written), and the bytes of the intermediates.
pub(super) fn catalog<'a>(
    inner: &'a dyn Catalog,
    cut: &Cut<'_>,
    full: &Plan,
    stored: &Stored<'_>,
) -> (RunCatalog<'a>, u64) {
    let mut inter = HashMap::new();
    let mut bytes = 0u64;
    for (&i, chunks) in stored.chunks {
        let Some(out) = planned(full, cut.name(i)).and_then(|s| s.output.as_ref()) else {
            continue;
        };
        if !stored.shared.contains(&i) {
            bytes += out.total_bytes();
        }
        let path = stored.at[&i].clone();
        inter.insert(
            path.clone(),
            ZarrInfo {
                path,
                zarr_format: 3,
                dtype: out.dtype,
                shape: out.shape().to_vec(),
                chunks: chunks.clone(),
                shards: None,
                dimension_names: out.names.clone(),
                codecs: "zstd".into(),
                fill_value: "0".into(),
            },
        );
    }
    (RunCatalog { inner, inter }, bytes)
}
