//! `write-csv`: small arrays of one length N as one CSV table.

use std::path::PathBuf;

use blockflow_core::Chunk;
use blockflow_io::output::{Claim, Made};
use blockflow_io::IoError;

use super::stored::Gathered;
use super::{
    p, Arity, BuildCx, ChunkSink, Exec, KindDef, MemoryCx, PType, PathRole, PlanCx, Planned,
    SinkOp, Stage, Writes,
};

pub static KIND: KindDef = KindDef {
    kind: "write-csv",
    role: "writer",
    summary: "small arrays of the same length N (1-D, or 2-D (N, C)) as one CSV table: a row per index, a column per input (name) or per input and column (name_0, name_1, ...)",
    inputs: Arity::AtLeast(1),
    params: &[
        p("path", PType::Path(PathRole::Output), None, "the CSV file"),
        p("if_exists", PType::Choice(&["fail", "overwrite"]), Some("fail"), "what to do when the file exists"),
    ],
    example: "inputs = [\"vec4\"]\npath = \"out.csv\"",
    plan,
};

#[derive(Debug, Clone, PartialEq)]
pub struct WriteCsv {
    pub path: PathBuf,
    pub overwrite: bool,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let first = *cx.inputs.first()?;
    let n = first.spec.shape()[0];
    for i in cx.inputs.clone() {
        let o = i.spec;
        if o.shape().len() > 2 || o.shape()[0] != n {
            return cx.err("inputs", format!("write-csv takes 1-D or 2-D arrays of one length: \"{}\" is {:?}, \"{}\" is {:?}", first.name, first.spec.shape(), i.name, o.shape()));
        }
        if o.grid.total_elements() > 10_000_000 {
            return cx.err(
                "inputs",
                format!(
                    "\"{}\" has {} values, too many for CSV here; write it with write-zarr",
                    i.name,
                    o.grid.total_elements()
                ),
            );
        }
    }
    let path = cx.path("path")?;
    let overwrite = cx.p.str("if_exists").as_deref() == Some("overwrite");
    Some(Planned::sink(
        WriteCsv { path, overwrite },
        first.spec.grid.clone(),
    ))
}

impl Stage for WriteCsv {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        format!("CSV {}, a row per index", self.path.display())
    }
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.in_elems * 8 * 4
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Sink(self)
    }
    fn writes(&self) -> Option<Writes<'_>> {
        Some(Writes::Files(std::slice::from_ref(&self.path)))
    }
}

impl SinkOp for WriteCsv {
    fn open(&self, cx: &BuildCx<'_>) -> Result<Box<dyn ChunkSink>, IoError> {
        Ok(Box::new(CsvSink {
            claim: Claim::take(&self.path, Made::Csv, self.overwrite)?,
            parts: Gathered::new(cx.inputs.len()),
            text: None,
        }))
    }
}

/// The inputs kept whole until they have all ended, then the table.
struct CsvSink {
    claim: Claim,
    parts: Gathered,
    text: Option<String>,
}

impl ChunkSink for CsvSink {
    fn write(&self, input: usize, chunk: &Chunk) -> Result<(), String> {
        self.parts.keep(input, chunk)
    }
    fn finish(&mut self, inputs: &[String]) -> Result<(), String> {
        let arrays = self.parts.arrays(inputs)?;
        let text = blockflow_io::table::csv_table(self.claim.path(), inputs, &arrays)
            .map_err(|e| e.to_string())?;
        self.text = Some(text);
        Ok(())
    }
    fn counts_progress(&self) -> bool {
        false
    }
    fn commit(self: Box<Self>) -> Result<Vec<PathBuf>, IoError> {
        let text = self.text.as_deref().ok_or_else(|| IoError::Store {
            path: self.claim.path().to_path_buf(),
            why: "internal: committed before its inputs ended".into(),
        })?;
        self.claim.commit_bytes(text.as_bytes())?;
        Ok(vec![self.claim.path().to_path_buf()])
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use blockflow_core::{DType, Meter, Region};

    #[test]
    fn plans_columns_of_one_length() {
        let s = plan_one(
            "kind = \"write-csv\"\npath = \"t.csv\"",
            &[DType::F64, DType::I64],
            &[12],
            &[12],
        );
        assert!(s.output.is_none());
        assert_eq!(s.grid.shape(), &[12]);
        assert_eq!(s.mem.working, 24 * 8 * 4);
    }

    #[test]
    fn refuses_3_d_arrays() {
        let e = plan_err(
            "kind = \"write-csv\"\npath = \"t.csv\"",
            &[DType::F64],
            &[4, 3, 2],
            &[4, 3, 2],
        );
        assert!(
            e.contains("write-csv takes 1-D or 2-D arrays of one length: \"in0\" is [4, 3, 2]"),
            "{e}"
        );
    }

    #[test]
    fn writes_a_row_per_index_when_committed() {
        let dir = tempfile::tempdir().expect("tmp");
        let stage = WriteCsv {
            path: dir.path().join("t.csv"),
            overwrite: false,
        };
        let plan = plan_text(
            &config(
                "kind = \"write-csv\"\npath = \"x.csv\"",
                &[DType::F64],
                &[3],
                &[3],
            ),
            &crate::catalog::FakeCatalog::default(),
        )
        .expect("plans");
        let mut sink = stage
            .open(&BuildCx {
                stage: stage_named(&plan, "s"),
                inputs: &[None],
            })
            .expect("opens");
        let meter = Meter::new();
        let c = Chunk::new(
            vec![0],
            Region::new(vec![0], vec![3]),
            array_f64(&[3], &[0.5, 1.0, -2.0]),
            &meter,
        );
        sink.write(0, &c).expect("writes");
        sink.finish(&["v".into()]).expect("finishes");
        assert!(!stage.path.exists());
        sink.commit().expect("commits");
        assert_eq!(
            std::fs::read_to_string(&stage.path).expect("csv"),
            "index,v\n0,0.5\n1,1.0\n2,-2.0\n"
        );
    }
}
