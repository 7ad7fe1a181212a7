//! `read-hdf5-stack`: a glob of per-timepoint HDF5 files stacked on a new
//! leading axis (the ingest watches its folder).

use std::path::Path;

use blockflow_io::hdf5::StackReader;
use blockflow_io::IoError;

use super::stored::StoreSource;
use super::{
    p, Arity, BuildCx, ChunkSource, Exec, KindDef, MemoryCx, PType, PathRole, PlanCx, Planned,
    SourceOp, Stage,
};

pub static KIND: KindDef = KindDef {
    kind: "read-hdf5-stack",
    role: "reader",
    summary: "a glob of per-timepoint HDF5 files (natural order of their names: t2 before t10), each holding `dataset` of one shape and dtype, stacked on a new leading axis; a file whose dataset is missing or differs is an error naming the file and the dataset",
    inputs: Arity::None,
    params: &[
        p("path", PType::Path(PathRole::InputGlob), None, "a glob whose wildcards are in the file name: `volumes/t_*.h5`"),
        p("dataset", PType::Str, None, "the dataset in every file"),
        p("index", PType::Str, Some(""), "order the files by the integer a regex's first group captures from their names, e.g. `_(\\d+)\\.h5$` (default: natural order of the names)"),
        p("chunks", PType::Shape, Some(""), "the chunks to stream (default: one whole timepoint per chunk)"),
    ],
    example: "path = \"t_*.h5\"\ndataset = \"data\"",
    plan,
};

#[derive(Debug, Clone)]
pub struct ReadHdf5Stack {
    /// The glob, resolved.
    pub pattern: String,
    /// The files as planned (the ingest plans on the files it has).
    pub stack: StackReader,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let full = cx.path("path")?;
    let dataset = cx.p.str("dataset")?;
    let index = match cx.p.str("index").filter(|s| !s.is_empty()) {
        None => None,
        Some(re) => match regex::Regex::new(&re) {
            Ok(r) if r.captures_len() > 1 => Some(r),
            Ok(_) => {
                return cx.err(
                    "index",
                    format!("`index` = \"{re}\" has no capture group: put the digits in ( )"),
                )
            }
            Err(e) => return cx.err("index", format!("`index` is not a valid regex: {e}")),
        },
    };
    let pattern = full.to_string_lossy().into_owned();
    let stack = match cx.catalog.hdf5_stack(&pattern, &dataset, index.as_ref()) {
        Ok(s) => s,
        Err(e) => return cx.err("path", e.to_string()),
    };
    let mut default = vec![1];
    default.extend(&stack.frame);
    let chunks = cx.p.shape("chunks").unwrap_or(default);
    let grid = cx.grid("chunks", stack.shape(), chunks)?;
    let dtype = stack.dtype;
    Some(Planned::sends(
        ReadHdf5Stack { pattern, stack },
        dtype,
        grid,
    ))
}

impl Stage for ReadHdf5Stack {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        let s = &self.stack;
        let name =
            |f: Option<&std::path::PathBuf>| f.map(|f| f.display().to_string()).unwrap_or_default();
        format!(
            "{} timepoints of {:?} (dataset \"{}\", {} ... {})",
            s.files.len(),
            s.frame,
            s.dataset,
            name(s.files.first()),
            name(s.files.last())
        )
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

impl SourceOp for ReadHdf5Stack {
    fn open(&self, cx: &BuildCx<'_>) -> Result<Box<dyn ChunkSource>, IoError> {
        StoreSource::checked(cx, Path::new(&self.pattern), Box::new(self.stack.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::catalog::FakeCatalog;
    use blockflow_core::DType;

    fn planned(body: &str) -> Result<crate::plan::PlannedStage, String> {
        let c = FakeCatalog::default();
        c.add_stack("/data/t_*.h5", "data", 5, &[12, 10, 8], DType::U16);
        let text = format!("[pipeline]\nmemory = \"1 GiB\"\nthreads = 4\n[stage.s]\n{body}\n");
        plan_text(&text, &c).map(|p| stage_named(&p, "s").clone())
    }

    #[test]
    fn plans_one_timepoint_per_chunk_serially() {
        let s = planned("kind = \"read-hdf5-stack\"\npath = \"/data/t_*.h5\"\ndataset = \"data\"")
            .expect("plans");
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::U16));
        assert_eq!(s.grid.shape(), &[5, 12, 10, 8]);
        assert_eq!(s.grid.chunk_shape(), &[1, 12, 10, 8]);
        assert_eq!(s.parallel, 1);
        assert_eq!(s.mem.working, 2 * 12 * 10 * 8 * 2);
        let op = &s.kind;
        assert_eq!(
            op.describe(),
            "5 timepoints of [12, 10, 8] (dataset \"data\", t_0000.h5 ... t_0004.h5)"
        );
    }

    #[test]
    fn refuses_an_index_without_a_group_and_a_bad_regex() {
        let e = planned("kind = \"read-hdf5-stack\"\npath = \"/data/t_*.h5\"\ndataset = \"data\"\nindex = \"t_\\\\d+\"")
            .expect_err("refused");
        assert!(e.contains("has no capture group"), "{e}");
        let e = planned("kind = \"read-hdf5-stack\"\npath = \"/data/t_*.h5\"\ndataset = \"data\"\nindex = \"(\"")
            .expect_err("refused");
        assert!(e.contains("not a valid regex"), "{e}");
        let e = planned("kind = \"read-hdf5-stack\"\npath = \"/data/u_*.h5\"\ndataset = \"data\"")
            .expect_err("refused");
        assert!(e.contains("u_*.h5"), "{e}");
    }
}
