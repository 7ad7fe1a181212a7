//! `read-hdf5`: one dataset of one HDF5 file, read by hyperslabs.

use std::path::PathBuf;

use blockflow_io::hdf5::Hdf5Reader;
use blockflow_io::IoError;

use super::stored::StoreSource;
use super::{
    p, Arity, BuildCx, ChunkSource, Exec, KindDef, MemoryCx, PType, PathRole, PlanCx, Planned,
    SourceOp, Stage,
};

pub static KIND: KindDef = KindDef {
    kind: "read-hdf5",
    role: "reader",
    summary: "one dataset of one HDF5 file, read by hyperslabs (uint8..uint32, int16..int64, float32, float64); its dimension labels (h5py's `ds.dims[i].label`), when every axis has one, name the axes; HDF5 I/O runs one chunk at a time (the library's global lock)",
    inputs: Arity::None,
    params: &[
        p("path", PType::Path(PathRole::Input), None, "the HDF5 file"),
        p("dataset", PType::Str, None, "the dataset's path in the file, e.g. `data` or `/group/volume`"),
        p("chunks", PType::Shape, Some(""), "the chunks to stream (default: the dataset's own chunks, or the whole dataset)"),
        p("axes", PType::Names, Some(""), super::common::AXES_DOC),
    ],
    example: "path = \"in.h5\"\ndataset = \"data\"",
    plan,
};

#[derive(Debug, Clone, PartialEq)]
pub struct ReadHdf5 {
    pub path: PathBuf,
    pub dataset: String,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let path = cx.path("path")?;
    let dataset = cx.p.str("dataset")?;
    let info = match cx.catalog.hdf5(&path, &dataset) {
        Ok(i) => i,
        Err(e) => return cx.err("path", e.to_string()),
    };
    let chunks =
        cx.p.shape("chunks")
            .or(info.chunks)
            .unwrap_or_else(|| info.shape.clone());
    let grid = cx.grid("chunks", info.shape, chunks)?;
    let planned = Planned::sends(ReadHdf5 { path, dataset }, info.dtype, grid);
    super::common::name_axes(cx, planned, info.labels)
}

impl Stage for ReadHdf5 {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        format!("{} dataset \"{}\"", self.path.display(), self.dataset)
    }
    /// The chunk, as the library reads it and as it is sent.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        2 * m.out_bytes
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Source(self)
    }
    fn serial(&self) -> bool {
        true
    }
}

impl SourceOp for ReadHdf5 {
    fn open(&self, cx: &BuildCx<'_>) -> Result<Box<dyn ChunkSource>, IoError> {
        let reader = Hdf5Reader::open(&self.path, &self.dataset)?;
        StoreSource::checked(cx, &self.path, Box::new(reader))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::catalog::FakeCatalog;
    use blockflow_core::DType;
    use std::path::Path;

    fn planned(body: &str) -> Result<crate::plan::PlannedStage, String> {
        let c = FakeCatalog::default();
        c.add_hdf5(Path::new("/data/v.h5"), "vol", DType::F32, &[8, 30, 40]);
        let text = format!("[pipeline]\nmemory = \"1 GiB\"\nthreads = 4\n[stage.s]\n{body}\n");
        plan_text(&text, &c).map(|p| stage_named(&p, "s").clone())
    }

    #[test]
    fn plans_the_whole_dataset_one_chunk_at_a_time() {
        let s = planned("kind = \"read-hdf5\"\npath = \"/data/v.h5\"\ndataset = \"vol\"")
            .expect("plans");
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::F32));
        // Stored contiguously: one chunk, the whole dataset.
        assert_eq!(s.grid.chunk_shape(), &[8, 30, 40]);
        assert_eq!(s.parallel, 1, "the HDF5 library's global lock");
        assert_eq!(s.mem.working, 2 * 8 * 30 * 40 * 4);
        assert!(s.kind.name() == "read-hdf5");
    }

    #[test]
    fn plans_given_chunks_and_refuses_a_missing_dataset() {
        let s = planned(
            "kind = \"read-hdf5\"\npath = \"/data/v.h5\"\ndataset = \"vol\"\nchunks = [1, 30, 40]",
        )
        .expect("plans");
        assert_eq!(s.grid.num_chunks(), 8);
        let e = planned("kind = \"read-hdf5\"\npath = \"/data/v.h5\"\ndataset = \"other\"")
            .expect_err("refused");
        assert!(e.contains("/data/v.h5"), "{e}");
    }
}
