//! `read-images`: a sorted glob of PNG, JPEG or TIFF files as one
//! `(N, H, W, C)` array, `batch` images per chunk.

use std::path::{Path, PathBuf};

use blockflow_core::{ChunkGrid, DType};
use blockflow_io::images::ImageStack;
use blockflow_io::IoError;

use super::stored::StoreSource;
use super::{
    p, Arity, BuildCx, ChunkSource, Exec, KindDef, MemoryCx, PType, PathRole, PlanCx, Planned,
    SourceOp, Stage,
};

pub static KIND: KindDef = KindDef {
    kind: "read-images",
    role: "reader",
    summary: "a sorted glob of PNG, JPEG or TIFF files (format by content) as one (N, H, W, C) array (axes named image, y, x, c), `batch` images per chunk; every image must have the first one's shape and dtype (an error names the file that differs or does not decode)",
    inputs: Arity::None,
    params: &[
        p("path", PType::Path(PathRole::InputGlob), None, "a glob whose wildcards (*, ?, [abc]) are in the file name: `cells/*.png`; sorted as Python's sorted(glob(...))"),
        p("batch", PType::Int(1, 1_000_000), Some("1"), "images per chunk"),
        p("axes", PType::Names, Some(""), super::common::AXES_DOC),
    ],
    example: "path = \"img_*.png\"\nbatch = 2",
    plan,
};

#[derive(Debug, Clone)]
pub struct ReadImages {
    /// The glob, resolved.
    pub pattern: String,
    pub files: Vec<PathBuf>,
    /// One image's shape `(H, W, C)`.
    pub image: Vec<u64>,
    pub dtype: DType,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let written = cx.p.str("path")?;
    // The glob is relative to the config's folder, as every path.
    let pattern = cx.path("path")?.to_string_lossy().into_owned();
    let (files, image, dtype) = match cx.catalog.images(&pattern) {
        Ok(found) => found,
        Err(e @ IoError::Image { .. }) => return cx.err("path", e.to_string()),
        Err(e) => return cx.err("path", format!("{e} (`path = \"{written}\"`)")),
    };
    let batch = cx.p.int("batch")?.max(1) as u64;
    let image: Vec<u64> = image.iter().map(|&n| n as u64).collect();
    let mut shape = vec![files.len() as u64];
    shape.extend(&image);
    let mut chunks = vec![batch.min(files.len() as u64)];
    chunks.extend(&image);
    let grid = match ChunkGrid::new(shape, chunks) {
        Ok(g) => g,
        Err(e) => return cx.err_stage(e.to_string()),
    };
    let planned = Planned::sends(
        ReadImages {
            pattern,
            files,
            image,
            dtype,
        },
        dtype,
        grid,
    );
    let names = ["image", "y", "x", "c"].map(String::from).to_vec();
    super::common::name_axes(cx, planned, Some(names))
}

impl Stage for ReadImages {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        let name = |f: Option<&PathBuf>| f.map(|f| f.display().to_string()).unwrap_or_default();
        format!(
            "{} images of {:?} ({} ... {})",
            self.files.len(),
            self.image,
            name(self.files.first()),
            name(self.files.last())
        )
    }
    /// Each image decoded and the chunk it is copied into.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.parallel * 3 * m.out_bytes
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Source(self)
    }
}

impl SourceOp for ReadImages {
    fn open(&self, cx: &BuildCx<'_>) -> Result<Box<dyn ChunkSource>, IoError> {
        let stack = ImageStack {
            files: self.files.clone(),
            image: self.image.clone(),
            dtype: self.dtype,
        };
        StoreSource::checked(cx, Path::new(&self.pattern), Box::new(stack))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::catalog::FakeCatalog;

    fn planned(body: &str) -> Result<crate::plan::PlannedStage, String> {
        let c = FakeCatalog::default();
        c.add_images("/cfg/cells/*.png", 7, &[20, 30, 3], DType::U8);
        let text = format!("[pipeline]\nmemory = \"1 GiB\"\nthreads = 2\n[stage.s]\n{body}\n");
        plan_text(&text, &c).map(|p| stage_named(&p, "s").clone())
    }

    #[test]
    fn plans_batches_of_whole_images() {
        let s =
            planned("kind = \"read-images\"\npath = \"cells/*.png\"\nbatch = 3").expect("plans");
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::U8));
        assert_eq!(s.grid.shape(), &[7, 20, 30, 3]);
        assert_eq!(s.grid.chunk_shape(), &[3, 20, 30, 3]);
        assert_eq!(s.grid.num_chunks(), 3);
        assert_eq!(s.mem.working, 2 * 3 * (3 * 20 * 30 * 3));
        let op = &s.kind;
        assert_eq!(
            op.describe(),
            "7 images of [20, 30, 3] (img_0000.png ... img_0006.png)"
        );
    }

    #[test]
    fn a_batch_beyond_the_stack_is_the_whole_stack_and_no_match_names_the_glob() {
        let s =
            planned("kind = \"read-images\"\npath = \"cells/*.png\"\nbatch = 50").expect("plans");
        assert_eq!(s.grid.chunk_shape()[0], 7);
        let e = planned("kind = \"read-images\"\npath = \"other/*.png\"").expect_err("refused");
        assert!(e.contains("(`path = \"other/*.png\"`)"), "{e}");
    }
}
