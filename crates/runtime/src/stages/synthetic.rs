//! `synthetic`: a deterministic generated array; every chunk is computed
//! from its region alone, so any chunking gives the same values.

use blockflow_core::{ChunkGrid, DType, GridError};
use blockflow_io::synthetic::{Generated, Pattern};
use blockflow_io::IoError;

use super::stored::StoreSource;
use super::{
    p, Arity, BuildCx, ChunkSource, Exec, KindDef, MemoryCx, PType, PlanCx, Planned, SourceOp,
    Stage,
};

pub static KIND: KindDef = KindDef {
    kind: "synthetic",
    role: "reader",
    summary: "a deterministic generated array; any chunking gives the same values",
    inputs: Arity::None,
    params: &[
        p("shape", PType::Shape, None, "array shape"),
        p("chunks", PType::Shape, None, "chunk shape"),
        p("dtype", PType::DType, Some("float32"), "element type"),
        p("pattern", PType::Choice(&["survey", "terrain", "noise", "ramp"]), Some("noise"),
          "survey: RGB sky with galaxies, stars, red blobs (H, W, 3) in [0, 1]; terrain: RGBA elevation colours (H, W, 4) 0..255 (both axes named y, x, c); noise: uniform; ramp: flat index"),
        p("seed", PType::Int(0, i64::MAX), Some("0"), "random seed"),
        p("axes", PType::Names, Some(""), super::common::AXES_DOC),
    ],
    example: "shape = [10, 12]\nchunks = [5, 5]\npattern = \"ramp\"",
    plan,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Synthetic {
    pub pattern: Pattern,
    pub seed: u64,
    pub shape: Vec<u64>,
    pub dtype: DType,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let shape = cx.p.shape("shape")?;
    let chunks = cx.p.shape("chunks")?;
    let dtype = DType::parse(&cx.p.str("dtype")?)?;
    let pattern = Pattern::parse(&cx.p.str("pattern")?)?;
    let seed = cx.p.int("seed")? as u64;
    if let Err(m) = pattern.check_shape(&shape) {
        return cx.err("shape", m);
    }
    let grid = match ChunkGrid::new(shape.clone(), chunks) {
        Ok(g) => g,
        Err(e) => {
            let key = if matches!(e, GridError::TooLarge { .. }) {
                "shape"
            } else {
                "chunks"
            };
            return cx.err(key, e.to_string());
        }
    };
    let names = matches!(pattern, Pattern::Survey | Pattern::Terrain)
        .then(|| ["y", "x", "c"].map(String::from).to_vec());
    let planned = Planned::sends(
        Synthetic {
            pattern,
            seed,
            shape,
            dtype,
        },
        dtype,
        grid,
    );
    super::common::name_axes(cx, planned, names)
}

impl Stage for Synthetic {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        let what = match self.pattern {
            Pattern::Survey => "an RGB survey image (sky, galaxies, stars, red blobs)",
            Pattern::Terrain => "fractal terrain coloured by elevation",
            Pattern::Noise => "uniform noise",
            Pattern::Ramp => "each element's flat index",
        };
        format!("{what}, generated from seed {}", self.seed)
    }
    /// float64 values and the converted chunk (plus the survey's RGB buffer).
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.parallel * (m.out_elems * 24 + m.out_bytes)
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Source(self)
    }
}

impl SourceOp for Synthetic {
    fn open(&self, cx: &BuildCx<'_>) -> Result<Box<dyn ChunkSource>, IoError> {
        let store = Generated {
            pattern: self.pattern,
            seed: self.seed,
            shape: self.shape.clone(),
            dtype: self.dtype,
        };
        StoreSource::checked(cx, std::path::Path::new(&cx.stage.name), Box::new(store))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::catalog::FakeCatalog;

    fn planned(body: &str) -> Result<crate::plan::PlannedStage, String> {
        let text = format!("[pipeline]\nmemory = \"1 GiB\"\nthreads = 2\n[stage.s]\n{body}\n");
        plan_text(&text, &FakeCatalog::default()).map(|p| stage_named(&p, "s").clone())
    }

    #[test]
    fn plans_its_shape_dtype_grid_and_memory() {
        let s =
            planned("kind = \"synthetic\"\nshape = [10, 12]\nchunks = [4, 5]\ndtype = \"uint16\"")
                .expect("plans");
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::U16));
        assert_eq!(s.grid.shape(), &[10, 12]);
        assert_eq!(s.grid.chunk_shape(), &[4, 5]);
        assert_eq!(s.parallel, 2);
        // 2 chunks at once, each 20 float64 values (24 bytes each with
        // the survey's buffer) and its 40 bytes of uint16.
        assert_eq!(s.mem.working, 2 * (20 * 24 + 40));
        let op = &s.kind;
        assert_eq!(op.describe(), "uniform noise, generated from seed 0");
    }

    #[test]
    fn refuses_a_shape_its_pattern_cannot_make_and_bad_chunks() {
        let e = planned(
            "kind = \"synthetic\"\nshape = [10, 12]\nchunks = [4, 5]\npattern = \"survey\"",
        )
        .expect_err("refused");
        assert!(e.contains("(H, W, 3), not [10, 12]"), "{e}");
        let e =
            planned("kind = \"synthetic\"\nshape = [10, 12]\nchunks = [4]").expect_err("refused");
        // On the `chunks` line.
        assert!(
            e.contains("test.toml:7:") && e.contains("chunk shape [4] has 1 axes"),
            "{e}"
        );
    }

    #[test]
    fn reads_any_region_as_the_whole_array_has_it() {
        use blockflow_core::Region;
        let g = Generated {
            pattern: Pattern::Ramp,
            seed: 0,
            shape: vec![3, 4],
            dtype: DType::F64,
        };
        let part = blockflow_io::ChunkSource::read(&g, &Region::new(vec![1, 2], vec![2, 2]), &[])
            .expect("reads");
        assert_eq!(
            part.to_f64().iter().copied().collect::<Vec<_>>(),
            vec![6.0, 7.0, 10.0, 11.0]
        );
    }
}
