//! `write-blocks`: per chunk (block), how many values exceed a threshold;
//! the blocks with any as JSON (and every block's count as CSV).

use std::path::PathBuf;
use std::sync::Mutex;

use blockflow_core::Chunk;
use blockflow_io::blocks::{BlockStat, BlocksWriter};
use blockflow_io::IoError;

use super::{
    p, Arity, BuildCx, ChunkSink, Exec, KindDef, MemoryCx, PType, PathRole, PlanCx, Planned,
    SinkOp, Stage, Writes,
};

pub static KIND: KindDef = KindDef {
    kind: "write-blocks",
    role: "writer",
    summary: "per chunk (block), how many values exceed a threshold; the blocks with any, as JSON (and every block's count as CSV)",
    inputs: Arity::Exactly(1),
    params: &[
        p("path", PType::Path(PathRole::Output), None, "the JSON file"),
        p("csv", PType::Path(PathRole::Output), Some(""), "a CSV file with every block's count and maximum"),
        p("threshold", PType::Float, None, "values above it count (NaN never does)"),
        p("if_exists", PType::Choice(&["fail", "overwrite"]), Some("fail"), "what to do when a file exists"),
    ],
    example: "inputs = [\"f32_2d\"]\npath = \"blocks.json\"\nthreshold = 0.5",
    plan,
};

#[derive(Debug, Clone, PartialEq)]
pub struct WriteBlocks {
    /// The JSON file, then the CSV file if any.
    pub paths: Vec<PathBuf>,
    pub threshold: f64,
    pub overwrite: bool,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let stream = cx.input(0)?;
    let mut paths = vec![cx.path("path")?];
    paths.extend(cx.path("csv"));
    let stage = WriteBlocks {
        paths,
        threshold: cx.p.float("threshold")?,
        overwrite: cx.p.str("if_exists").as_deref() == Some("overwrite"),
    };
    Some(Planned::sink(stage, stream.grid.clone()))
}

impl Stage for WriteBlocks {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        let csv = self
            .paths
            .get(1)
            .map(|c| format!(" and {}", c.display()))
            .unwrap_or_default();
        format!(
            "blocks with values above {} to {}{csv}",
            self.threshold,
            self.paths[0].display()
        )
    }
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.parallel * m.in_bytes
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Sink(self)
    }
    fn writes(&self) -> Option<Writes<'_>> {
        Some(Writes::Files(&self.paths))
    }
}

impl SinkOp for WriteBlocks {
    fn open(&self, cx: &BuildCx<'_>) -> Result<Box<dyn ChunkSink>, IoError> {
        let g = &cx.stage.grid;
        let w = BlocksWriter::create(
            &self.paths[0],
            self.paths.get(1).map(PathBuf::as_path),
            self.overwrite,
            self.threshold,
            g.shape().to_vec(),
            g.chunk_shape().to_vec(),
        )?;
        Ok(Box::new(BlocksSink {
            path: self.paths[0].clone(),
            threshold: self.threshold,
            w: Mutex::new(w),
        }))
    }
}

/// Each block's count, taken from chunks written at once.
struct BlocksSink {
    path: PathBuf,
    threshold: f64,
    w: Mutex<BlocksWriter>,
}

impl ChunkSink for BlocksSink {
    fn write(&self, _input: usize, chunk: &Chunk) -> Result<(), String> {
        let (above, max) = blockflow_kernels::reduce::count_above(chunk.array(), self.threshold);
        let mut w = self
            .w
            .lock()
            .map_err(|_| "another chunk failed while its count was kept")?;
        w.push(BlockStat {
            index: chunk.index.clone(),
            above,
            max,
        });
        Ok(())
    }
    fn commit(self: Box<Self>) -> Result<Vec<PathBuf>, IoError> {
        let BlocksSink { path, w, .. } = *self;
        let w = w.into_inner().map_err(|_| IoError::Store {
            path,
            why: "a chunk failed while its count was kept".into(),
        })?;
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use blockflow_core::{DType, Meter, Region};

    #[test]
    fn plans_a_count_per_block() {
        let s = plan_one(
            "kind = \"write-blocks\"\npath = \"b.json\"\ncsv = \"b.csv\"\nthreshold = 0.5",
            &[DType::F64],
            &[10, 12],
            &[4, 5],
        );
        assert!(s.output.is_none());
        assert_eq!(s.grid.num_chunks(), 9);
        assert_eq!(s.mem.working, 2 * 160);
        let op = &s.kind;
        assert_eq!(
            op.describe(),
            "blocks with values above 0.5 to /cfg/b.json and /cfg/b.csv"
        );
        assert!(matches!(op.writes(), Some(Writes::Files(p)) if p.len() == 2));
    }

    #[test]
    fn refuses_no_threshold() {
        let e = plan_err(
            "kind = \"write-blocks\"\npath = \"b.json\"",
            &[DType::F64],
            &[10],
            &[5],
        );
        assert!(e.contains("missing required parameter `threshold`"), "{e}");
    }

    #[test]
    fn counts_each_block_written_at_once_and_commits_the_table() {
        let dir = tempfile::tempdir().expect("tmp");
        let stage = WriteBlocks {
            paths: vec![dir.path().join("b.json"), dir.path().join("b.csv")],
            threshold: 1.5,
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
        let s = stage_named(&plan, "s");
        let sink = stage
            .open(&BuildCx {
                stage: s,
                inputs: &[],
            })
            .expect("opens");
        let meter = Meter::new();
        let chunks: Vec<Chunk> = [[0.0, 2.0], [3.0, f64::NAN]]
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let k = i as u64;
                Chunk::new(
                    vec![k],
                    Region::new(vec![2 * k], vec![2]),
                    array_f64(&[2], v),
                    &meter,
                )
            })
            .collect();
        std::thread::scope(|t| {
            for c in &chunks {
                let sink = &sink;
                t.spawn(move || sink.write(0, c).expect("writes"));
            }
        });
        let paths = sink.commit().expect("commits");
        assert_eq!(paths.len(), 2);
        let csv = std::fs::read_to_string(&paths[1]).expect("csv");
        assert_eq!(csv, "block_0,above,max\n0,1,2\n1,1,3\n");
    }
}
