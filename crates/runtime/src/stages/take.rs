//! `take`: one block of an array, chosen at run time by a flat block index
//! from another stage. The array's chunks wait in a scratch store until
//! the index has arrived; then the chosen block is read back.

use std::path::{Path, PathBuf};

use blockflow_core::{ChunkGrid, DType};

use super::{Arity, Barrier, BarrierOp, Exec, KindDef, MemoryCx, PlanCx, Planned, Stage};
use crate::exec::keep::{AfterKeep, KeepThen, Kept};
use crate::exec::{RunError, StageIo};

pub static KIND: KindDef = KindDef {
    kind: "take",
    role: "kernel",
    summary: "one block (chunk) of an array, chosen at run time by a flat block index from another stage (e.g. the argmin of a per-block reduction): the array's chunks go to a scratch store as they stream, and the chosen block is read back once the index is known; an edge block smaller than the others is taken as the whole-block window that ends at the array's edge (logged), so the result always has the block's shape",
    inputs: Arity::Exactly(2),
    params: &[],
    example: "inputs = [\"f32_2d\", \"best\"]",
    plan,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Take {
    /// The first input's grid.
    pub src: ChunkGrid,
    /// Where its chunks wait.
    pub dir: PathBuf,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let (a, idx) = (cx.input(0)?, cx.input(1)?);
    if idx.grid.total_elements() != 1 || idx.dtype.is_float() || idx.dtype == DType::Bool {
        let name = cx.inputs[1].name;
        return cx.err("inputs", format!("the second input, \"{name}\", must be one integer (a block index, e.g. an argmin); it is {} {:?}", idx.dtype, idx.shape()));
    }
    let grid = ChunkGrid::whole(block_shape(&a.grid));
    let op = Take {
        src: a.grid.clone(),
        dir: PathBuf::new(),
    };
    let about = super::About::text(format!(
        "the block of {} (blocks of {:?}) at the flat block index {}",
        cx.inputs[0].label(),
        a.grid.chunk_shape(),
        cx.inputs[1].label()
    ));
    let names = a.names.clone();
    let mut planned = Planned::sends(op, a.dtype, grid).about(about);
    if let Some(out) = planned.output.as_mut() {
        out.names = names;
    }
    Some(planned)
}

/// The shape of what is taken: a whole block, or the whole array along
/// an axis it holds in less than one block.
fn block_shape(src: &ChunkGrid) -> Vec<u64> {
    src.chunk_shape()
        .iter()
        .zip(src.shape())
        .map(|(&c, &n)| c.min(n))
        .collect()
}

/// The window taken for `block`: the block itself, or for an edge block
/// smaller than the others the whole-block window that ends at the
/// array's edge, so every choice has the planned shape.
fn window(src: &ChunkGrid, block: &[u64]) -> blockflow_core::Region {
    let shape = block_shape(src);
    let own = src.region(block);
    let start = own
        .origin
        .iter()
        .zip(src.shape())
        .zip(&shape)
        .map(|((&s, &n), &w)| s.min(n - w))
        .collect();
    blockflow_core::Region::new(start, shape)
}

impl Stage for Take {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        format!(
            "a block of chunks {:?}, chosen at run time (the chunks wait in {})",
            self.src.chunk_shape(),
            self.dir.display()
        )
    }
    /// A chunk being kept; the block read back.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.parallel * m.in_bytes + 2 * m.out_bytes
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Barrier(self)
    }
    fn scratch_dir_mut(&mut self) -> Option<&mut PathBuf> {
        Some(&mut self.dir)
    }
}

impl BarrierOp for Take {
    fn start(&self, io: &mut StageIo<'_, '_>) -> Result<Box<dyn Barrier>, RunError> {
        Ok(KeepThen::start(self, io))
    }
}

impl AfterKeep for Take {
    fn kept_grids(&self) -> Vec<Option<ChunkGrid>> {
        vec![Some(self.src.clone()), None]
    }
    fn kept_dir(&self) -> &Path {
        &self.dir
    }
    /// Chunks kept at once: as many as it works on.
    fn kept_at_once(&self, parallel: usize) -> usize {
        parallel
    }

    fn after(&self, io: &mut StageIo<'_, '_>, kept: &Kept) -> Result<(), RunError> {
        let src = &self.src;
        let from = io.input_names().get(1).cloned().unwrap_or_default();
        let index = kept
            .chunks(1)
            .first()
            .and_then(|c| c.array().to_f64().iter().next().copied());
        let n = src.num_chunks();
        let k = match index {
            Some(v) if v >= 0.0 && v < n as f64 && v.fract() == 0.0 => v as u64,
            Some(v) => {
                return Err(io.err(
                    None,
                    format!(
                        "block index {v} from \"{from}\" is not one of the {n} blocks (0..{n})"
                    ),
                ))
            }
            None => return Err(io.err(None, format!("\"{from}\" sent no index"))),
        };
        let block = src.unravel(k);
        let region = window(src, &block);
        if region.origin != src.region(&block).origin {
            tracing::info!(
                stage = %io.stage().name,
                "block {block:?} is an edge block of {:?}: taking the whole-block window {region} that ends at the array's edge",
                src.region(&block).shape
            );
        }
        let data = kept
            .reader(io, 0)?
            .read(&region, &block)
            .map_err(|e| io.err(Some(&block), format!("reading the block back: {e}")))?;
        let ndim = io.stage().grid.ndim();
        io.send(vec![0; ndim], data)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn plans_one_block_of_the_first_input() {
        let text = config("kind = \"take\"", &[DType::F32], &[10, 12], &[4, 5])
            + "[stage.i]\nkind = \"reduce\"\ninputs = [\"in0\"]\nop = \"argmin\"\nover = \"blocks\"\n"
            + "[stage.j]\nkind = \"reduce\"\ninputs = [\"i\"]\nop = \"argmin\"\n";
        let text = text.replace(
            "inputs = [\"in0\"]\nkind = \"take\"",
            "inputs = [\"in0\", \"j\"]\nkind = \"take\"",
        );
        let plan = plan_text(&text, &crate::catalog::FakeCatalog::default()).expect("plans");
        let s = stage_named(&plan, "s");
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::F32));
        assert_eq!(s.grid.shape(), &[4, 5]);
        assert_eq!(s.grid.chunk_shape(), &[4, 5]);
        // Two chunks being kept (f32 4 x 5 and the int64 index) and the
        // block read back twice.
        assert_eq!(s.mem.working, 2 * (80 + 8) + 2 * 80);
        let op = &s.kind;
        assert!(op
            .describe()
            .starts_with("a block of chunks [4, 5], chosen at run time"));
    }

    #[test]
    fn refuses_an_index_that_is_not_one_integer() {
        let e = plan_err("kind = \"take\"", &[DType::F32, DType::F32], &[10], &[5]);
        assert!(
            e.contains("the second input, \"in1\", must be one integer (a block index, e.g. an argmin); it is float32 [10]"),
            "{e}"
        );
    }

    #[test]
    fn an_edge_block_is_the_whole_block_window_ending_at_the_edge() {
        // 10 x 12 in blocks of 4 x 5: the last row and column are edge
        // blocks (2 and 2 wide).
        let g = ChunkGrid::new(vec![10, 12], vec![4, 5]).expect("grid");
        let w = window(&g, &[1, 1]);
        assert_eq!((w.origin, w.shape), (vec![4, 5], vec![4, 5]));
        let w = window(&g, &[2, 2]);
        assert_eq!((w.origin, w.shape), (vec![6, 7], vec![4, 5]));
        let w = window(&g, &[2, 0]);
        assert_eq!((w.origin, w.shape), (vec![6, 0], vec![4, 5]));
        // An array smaller than one block along an axis: all of that axis.
        let g = ChunkGrid::new(vec![3, 12], vec![4, 5]).expect("grid");
        assert_eq!(block_shape(&g), vec![3, 5]);
        let w = window(&g, &[0, 2]);
        assert_eq!((w.origin, w.shape), (vec![0, 7], vec![3, 5]));
    }
}
