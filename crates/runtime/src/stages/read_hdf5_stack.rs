//! `read-hdf5-stack`: a glob of per-timepoint HDF5 files stacked on a new
//! leading axis (the ingest watches its folder).

use std::path::Path;

use blockflow_core::DType;
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
    summary: "a glob of per-timepoint HDF5 files (natural order of their names: t2 before t10), each holding `dataset` of one shape and dtype, stacked on a new leading axis (named t; a frame of 3 axes z, y, x, of 2 y, x); a file whose dataset is missing or differs is an error naming the file and the dataset",
    inputs: Arity::None,
    params: &[
        p("path", PType::Path(PathRole::InputGlob), None, "a glob whose wildcards are in the file name: `volumes/t_*.h5`"),
        p("dataset", PType::Str, None, "the dataset in every file"),
        p("index", PType::Str, Some(""), "order the files by the integer a regex's first group captures from their names, e.g. `_(\\d+)\\.h5$` (default: natural order of the names)"),
        p("chunks", PType::Shape, Some(""), "the chunks to stream (default: one whole timepoint per chunk)"),
        p("frame", PType::Shape, Some(""), "one timepoint's shape, declared (with `dtype`): the pipeline plans before any file has arrived (an ingest starts watching an empty folder), and every file is checked against it"),
        p("dtype", PType::DType, Some(""), "the dataset's element type, declared (with `frame`)"),
        p("axes", PType::Names, Some(""), super::common::AXES_DOC),
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
    let declared = declared(cx)?;
    let stack = match (
        cx.catalog.hdf5_stack(&pattern, &dataset, index.as_ref()),
        declared,
    ) {
        (Ok(s), None) => s,
        (Ok(s), Some((frame, dtype))) => {
            if s.frame != frame || s.dtype != dtype {
                let first = s.files.first().map(|f| f.display().to_string());
                return cx.err(
                    "frame",
                    format!(
                        "{}: dataset \"{dataset}\" is {:?} {}, not the declared `frame = {frame:?}`, `dtype = \"{}\"`",
                        first.unwrap_or_default(),
                        s.frame,
                        s.dtype.name(),
                        dtype.name()
                    ),
                );
            }
            s
        }
        // Nothing has arrived yet: a stack of no timepoints, of the
        // declared frame (an ingest plans its per-timepoint work on it).
        (Err(IoError::NoMatch { .. }), Some((frame, dtype))) => StackReader {
            files: Vec::new(),
            dataset: dataset.clone(),
            frame,
            dtype,
        },
        (Err(e), _) => return cx.err("path", e.to_string()),
    };
    let mut default = vec![1];
    default.extend(&stack.frame);
    let chunks = cx.p.shape("chunks").unwrap_or(default);
    let grid = cx.grid("chunks", stack.shape(), chunks)?;
    let dtype = stack.dtype;
    let names = super::common::spatial_names(&["t"], stack.frame.len() + 1);
    let planned = Planned::sends(ReadHdf5Stack { pattern, stack }, dtype, grid);
    super::common::name_axes(cx, planned, names)
}

/// The declared `frame` and `dtype`: both or neither.
#[allow(clippy::option_option)]
fn declared(cx: &mut PlanCx<'_, '_>) -> Option<Option<(Vec<u64>, DType)>> {
    match (cx.p.has("frame"), cx.p.has("dtype")) {
        (false, false) => Some(None),
        (true, true) => {
            let frame = cx.p.shape("frame")?;
            let dtype = DType::parse(&cx.p.str("dtype")?)?;
            Some(Some((frame, dtype)))
        }
        (true, false) => cx.err(
            "frame",
            "`frame` needs `dtype` beside it: declare both or neither",
        ),
        (false, true) => cx.err(
            "dtype",
            "`dtype` needs `frame` beside it: declare both or neither",
        ),
    }
}

impl Stage for ReadHdf5Stack {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        let s = &self.stack;
        if s.files.is_empty() {
            return format!(
                "no timepoints yet, each {:?} {} (dataset \"{}\", declared)",
                s.frame,
                s.dtype.name(),
                s.dataset
            );
        }
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
        // Planned on a declared frame before any file arrived: a batch run
        // has nothing to read (an ingest reads each file as it comes).
        if self.stack.files.is_empty() {
            return Err(IoError::NoMatch {
                pattern: self.pattern.clone(),
            });
        }
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

    #[test]
    fn a_declared_frame_plans_before_any_file_and_is_checked_against_the_files() {
        let declared = "kind = \"read-hdf5-stack\"\ndataset = \"data\"\nframe = [12, 10, 8]\ndtype = \"uint16\"";
        // No file yet: a stack of no timepoints of the declared frame.
        let s = planned(&format!("{declared}\npath = \"/data/none_*.h5\""))
            .expect("plans with no file");
        assert_eq!(s.grid.shape(), &[0, 12, 10, 8]);
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::U16));
        assert_eq!(
            s.kind.describe(),
            "no timepoints yet, each [12, 10, 8] uint16 (dataset \"data\", declared)"
        );
        // Files that match the declaration.
        let s = planned(&format!("{declared}\npath = \"/data/t_*.h5\"")).expect("plans");
        assert_eq!(s.grid.shape(), &[5, 12, 10, 8]);
        // Files that do not: the first file is named, both shapes said.
        let e = planned("kind = \"read-hdf5-stack\"\ndataset = \"data\"\nframe = [12, 10, 9]\ndtype = \"uint16\"\npath = \"/data/t_*.h5\"")
            .expect_err("refused");
        assert!(
            e.contains("t_0000.h5")
                && e.contains("[12, 10, 8] uint16")
                && e.contains("frame = [12, 10, 9]"),
            "{e}"
        );
        let e = planned("kind = \"read-hdf5-stack\"\ndataset = \"data\"\nframe = [12, 10, 8]\ndtype = \"float32\"\npath = \"/data/t_*.h5\"")
            .expect_err("refused");
        assert!(e.contains("float32"), "{e}");
        // Half a declaration, and no declaration with no file.
        let e = planned("kind = \"read-hdf5-stack\"\ndataset = \"data\"\nframe = [12, 10, 8]\npath = \"/data/none_*.h5\"")
            .expect_err("refused");
        assert!(e.contains("`frame` needs `dtype`"), "{e}");
        let e =
            planned("kind = \"read-hdf5-stack\"\ndataset = \"data\"\npath = \"/data/none_*.h5\"")
                .expect_err("refused");
        assert!(e.contains("no file matches"), "{e}");
    }
}
