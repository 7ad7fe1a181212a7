//! `write-json`: small results as one JSON document, one key per input.

use std::path::PathBuf;

use blockflow_core::Chunk;
use blockflow_io::json::JsonWriter;
use blockflow_io::IoError;

use super::stored::Gathered;
use super::{
    p, Arity, BuildCx, ChunkSink, Exec, KindDef, MemoryCx, PType, PathRole, PlanCx, Planned,
    SinkOp, Stage, Writes,
};

pub static KIND: KindDef = KindDef {
    kind: "write-json",
    role: "writer",
    summary: "small results (a reduction's scalar, a per-block table) as one JSON document, one key per input stage",
    inputs: Arity::AtLeast(1),
    params: &[
        p("path", PType::Path(PathRole::Output), None, "the JSON file"),
        p("if_exists", PType::Choice(&["fail", "overwrite"]), Some("fail"), "what to do when the file exists"),
    ],
    example: "inputs = [\"best\"]\npath = \"out.json\"",
    plan,
};

#[derive(Debug, Clone, PartialEq)]
pub struct WriteJson {
    pub path: PathBuf,
    pub overwrite: bool,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let total: u64 = cx.inputs.iter().map(|i| i.spec.grid.total_elements()).sum();
    if total > 1_000_000 {
        return cx.err("inputs", format!("{total} values are too many for JSON (at most 1,000,000); write them with write-zarr"));
    }
    let path = cx.path("path")?;
    let grid = cx.input(0)?.grid.clone();
    let overwrite = cx.p.str("if_exists").as_deref() == Some("overwrite");
    Some(Planned::sink(WriteJson { path, overwrite }, grid))
}

impl Stage for WriteJson {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        format!("JSON {}, a key per input", self.path.display())
    }
    /// Every input whole, as arrays and as JSON text.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.in_elems * 8 * 4
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Sink(self)
    }
    fn writes(&self) -> Option<Writes<'_>> {
        Some(Writes::Json(&self.path))
    }
}

impl SinkOp for WriteJson {
    fn open(&self, cx: &BuildCx<'_>) -> Result<Box<dyn ChunkSink>, IoError> {
        Ok(Box::new(JsonSink {
            w: JsonWriter::create(&self.path, self.overwrite)?,
            parts: Gathered::new(cx.inputs.len()),
        }))
    }
}

/// The inputs kept whole until they have all ended.
struct JsonSink {
    w: JsonWriter,
    parts: Gathered,
}

impl ChunkSink for JsonSink {
    fn write(&self, input: usize, chunk: &Chunk) -> Result<(), String> {
        self.parts.keep(input, chunk)
    }
    fn finish(&mut self, inputs: &[String]) -> Result<(), String> {
        for (name, whole) in inputs.iter().zip(self.parts.arrays(inputs)?) {
            self.w.set(name, &whole);
        }
        Ok(())
    }
    fn counts_progress(&self) -> bool {
        false
    }
    fn commit(self: Box<Self>) -> Result<Vec<PathBuf>, IoError> {
        self.w.finish().map(|p| vec![p])
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use blockflow_core::{DType, Meter, Region};

    #[test]
    fn plans_small_results_and_refuses_large_ones() {
        let s = plan_one(
            "kind = \"write-json\"\npath = \"r.json\"",
            &[DType::F64, DType::I64],
            &[10],
            &[5],
        );
        assert!(s.output.is_none());
        // One chunk of each input: 10 elements, 32 bytes each.
        assert_eq!(s.mem.working, 10 * 8 * 4);
        let e = plan_err(
            "kind = \"write-json\"\npath = \"r.json\"",
            &[DType::U8],
            &[1001, 1000],
            &[100, 100],
        );
        assert!(e.contains("1001000 values are too many for JSON"), "{e}");
    }

    #[test]
    fn writes_each_input_whole_under_its_name() {
        let dir = tempfile::tempdir().expect("tmp");
        let stage = WriteJson {
            path: dir.path().join("r.json"),
            overwrite: false,
        };
        let plan = plan_text(
            &config(
                "kind = \"write-json\"\npath = \"x.json\"",
                &[DType::F64],
                &[4],
                &[2],
            ),
            &crate::catalog::FakeCatalog::default(),
        )
        .expect("plans");
        let mut sink = stage
            .open(&BuildCx {
                stage: stage_named(&plan, "s"),
                inputs: &[None, None],
            })
            .expect("opens");
        let meter = Meter::new();
        let chunk = |k: u64, v: &[f64]| {
            Chunk::new(
                vec![k],
                Region::new(vec![2 * k], vec![2]),
                array_f64(&[2], v),
                &meter,
            )
        };
        sink.write(0, &chunk(1, &[3.0, 4.5])).expect("writes");
        sink.write(1, &chunk(0, &[7.0, 8.0])).expect("writes");
        sink.write(0, &chunk(0, &[1.0, 2.0])).expect("writes");
        sink.finish(&["a".into(), "b".into()]).expect("finishes");
        assert!(!stage.path.exists(), "written only when committed");
        let paths = sink.commit().expect("commits");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&paths[0]).expect("json"))
                .expect("parses");
        assert_eq!(
            doc,
            serde_json::json!({"a": [1.0, 2.0, 3.0, 4.5], "b": [7.0, 8.0]})
        );
    }
}
