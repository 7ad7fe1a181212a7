//! `matmul`: numpy's a @ b for 1-D and 2-D arrays, out of core in `a`: a
//! 2-D `a` streams in bands of whole rows, kept in a scratch store until
//! `b` (held whole) has arrived; then each band gives a band of the result.

use std::path::{Path, PathBuf};

use blockflow_core::{ChunkGrid, DType};

use super::{Arity, Barrier, BarrierOp, Exec, KindDef, MemoryCx, PlanCx, Planned, Stage};
use crate::exec::keep::{AfterKeep, KeepThen, Kept};
use crate::exec::{RunError, StageIo};

pub static KIND: KindDef = KindDef {
    kind: "matmul",
    role: "kernel",
    summary: "numpy's a @ b for 1-D and 2-D arrays (1-D @ 1-D: the inner product, a 1-element array), with matrixmultiply's blocked kernels for floats; integers accumulate in int64, never wrapping silently (an overflowing product is an error). Out of core in `a`: a 2-D `a` streams in bands of whole rows (its chunks must span the rows), kept in a scratch store until `b` has arrived; `b` is held whole (the plan counts it); the result comes in the same bands",
    inputs: Arity::Exactly(2),
    params: &[],
    example: "inputs = [\"mat\", \"vec4\"]",
    plan,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Matmul {
    /// `a`'s grid: bands of whole rows (or one chunk).
    pub a: ChunkGrid,
    /// Elements of `b`, held whole.
    pub b_elems: u64,
    /// Where `a`'s bands wait.
    pub dir: PathBuf,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    let (sa, sb) = (a.shape(), b.shape());
    if sa.len() > 2 || sb.len() > 2 {
        return cx.err(
            "inputs",
            format!("matmul takes 1-D and 2-D arrays; the inputs are {sa:?} and {sb:?}"),
        );
    }
    let k_a = *sa.last()?;
    let k_b = sb[0];
    if k_a != k_b {
        return cx.err(
            "inputs",
            format!("matmul: the inner dimensions differ ({sa:?} @ {sb:?}: {k_a} vs {k_b})"),
        );
    }
    // `a` streams in bands of whole rows; `b` is held whole.
    let banded = sa.len() == 2 && a.grid.num_chunks() > 1;
    let a_name = cx.inputs[0].name;
    if banded && a.grid.chunk_shape()[1] != sa[1] {
        return cx.err("inputs", format!("matmul streams \"{a_name}\" by bands of whole rows: {sa:?} comes in chunks of {:?}; rechunk it to [{}, {}] (or any band height)", a.grid.chunk_shape(), a.grid.chunk_shape()[0], sa[1]));
    }
    if !banded && a.grid.num_chunks() != 1 {
        return cx.err("inputs", format!("matmul holds a 1-D \"{a_name}\" whole: {sa:?} comes in chunks of {:?}; rechunk it to one chunk", a.grid.chunk_shape()));
    }
    let mut shape = Vec::new();
    if sa.len() == 2 {
        shape.push(sa[0]);
    }
    if sb.len() == 2 {
        shape.push(sb[1]);
    }
    if shape.is_empty() {
        shape.push(1);
    }
    let dtype = match (a.dtype, b.dtype) {
        (DType::F32, DType::F32) => DType::F32,
        (x, y) if x.is_float() || y.is_float() => DType::F64,
        _ => DType::I64,
    };
    let grid = if banded {
        let mut c = shape.clone();
        c[0] = a.grid.chunk_shape()[0];
        cx.stage_grid(shape, c)?
    } else {
        cx.stage_grid(shape.clone(), shape)?
    };
    let op = Matmul {
        a: a.grid.clone(),
        b_elems: b.grid.total_elements(),
        dir: PathBuf::new(),
    };
    let about = super::About::text(format!(
        "{} @ {}",
        cx.inputs[0].label(),
        cx.inputs[1].label()
    ));
    let names = product_names(cx.inputs[0].spec, cx.inputs[1].spec);
    let mut planned = Planned::sends(op, dtype, grid).about(about);
    if let Some(out) = planned.output.as_mut() {
        out.names = names;
    }
    Some(planned)
}

/// The axes' names of `a @ b`: `a`'s rows and `b`'s columns (of those
/// that are 2-D), when both are named and the two names differ (`y @ y`
/// of an image by its transpose has no names that would not clash).
fn product_names(
    a: &blockflow_core::ArraySpec,
    b: &blockflow_core::ArraySpec,
) -> Option<Vec<String>> {
    let (na, nb) = (a.names.as_ref()?, b.names.as_ref()?);
    let mut out = Vec::new();
    if na.len() == 2 {
        out.push(na[0].clone());
    }
    if nb.len() == 2 {
        out.push(nb[1].clone());
    }
    let clash = out.len() == 2 && out[0] == out[1];
    (!out.is_empty() && !clash).then_some(out)
}

impl Stage for Matmul {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        if self.a.num_chunks() > 1 {
            format!(
                "a @ b, a in {} bands of {:?} (kept in scratch until b has arrived), b held whole",
                self.a.num_chunks(),
                self.a.chunk_shape()
            )
        } else {
            "a @ b".to_string()
        }
    }
    /// `b` whole as float64 (and as it came), a band of `a` as float64,
    /// the result band.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        2 * self.b_elems as u128 * 8 + 2 * self.a.chunk_elements() as u128 * 8 + 2 * m.out_bytes
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Barrier(self)
    }
    fn scratch_dir_mut(&mut self) -> Option<&mut PathBuf> {
        Some(&mut self.dir)
    }
}

impl BarrierOp for Matmul {
    fn start(&self, io: &mut StageIo<'_, '_>) -> Result<Box<dyn Barrier>, RunError> {
        Ok(KeepThen::start(self, io))
    }
}

impl AfterKeep for Matmul {
    fn kept_grids(&self) -> Vec<Option<ChunkGrid>> {
        vec![Some(self.a.clone()), None]
    }
    fn kept_dir(&self) -> &Path {
        &self.dir
    }

    fn after(&self, io: &mut StageIo<'_, '_>, kept: &Kept) -> Result<(), RunError> {
        let a = &self.a;
        let spec = io
            .stage()
            .output
            .clone()
            .ok_or_else(|| io.err(None, "internal: a matmul without an output"))?;
        let from = io.input_names().get(1).cloned().unwrap_or_default();
        let b = crate::exec::gather(kept.chunks(1))
            .map_err(|m| io.err(None, format!("input \"{from}\": {m}")))?;
        let reader = kept.reader(io, 0)?;
        let grid = &spec.grid;
        let pool = io.pool();
        for idx in a.indices() {
            io.check_cancel()?;
            let region = a.region(&idx);
            let band = reader
                .read(&region, &idx)
                .map_err(|e| io.err(Some(&idx), format!("reading the band back: {e}")))?;
            let oidx: Vec<u64> = (0..grid.ndim())
                .map(|k| if k == 0 && a.ndim() == 2 { idx[0] } else { 0 })
                .collect();
            let shape = grid.region(&oidx).shape_usize();
            let c = io
                .busy(|| {
                    pool.install(|| blockflow_kernels::ops::matmul(&band, &b, spec.dtype, &shape))
                })
                .map_err(|e| io.err(Some(&idx), e.to_string()))?;
            io.note_held(b.nbytes() + 2 * band.nbytes() + 2 * c.nbytes());
            io.send(oidx, c)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn plans_bands_of_a_times_b_whole() {
        // a: 8 x 6 in bands of 2 rows; b: 6 x 6 (one chunk, as generated).
        let text = config("kind = \"matmul\"", &[DType::F32], &[8, 6], &[2, 6])
            + "[stage.b]\nkind = \"synthetic\"\nshape = [6, 3]\nchunks = [6, 3]\ndtype = \"float64\"\n";
        let text = text.replace(
            "inputs = [\"in0\"]\nkind = \"matmul\"",
            "inputs = [\"in0\", \"b\"]\nkind = \"matmul\"",
        );
        let plan = plan_text(&text, &crate::catalog::FakeCatalog::default()).expect("plans");
        let s = stage_named(&plan, "s");
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::F64));
        assert_eq!(s.grid.shape(), &[8, 3]);
        assert_eq!(s.grid.chunk_shape(), &[2, 3]);
        // b (18 values) twice as float64, a band (12 values) twice, the
        // result band (6 float64) twice.
        assert_eq!(s.mem.working, 2 * 18 * 8 + 2 * 12 * 8 + 2 * 48);
        let op = &s.kind;
        assert_eq!(
            op.describe(),
            "a @ b, a in 4 bands of [2, 6] (kept in scratch until b has arrived), b held whole"
        );
    }

    #[test]
    fn refuses_what_numpy_refuses_and_bands_that_split_rows() {
        let e = plan_err(
            "kind = \"matmul\"",
            &[DType::F32, DType::F32],
            &[4, 3],
            &[4, 3],
        );
        assert!(
            e.contains("matmul: the inner dimensions differ ([4, 3] @ [4, 3]: 3 vs 4)"),
            "{e}"
        );
        let e = plan_err(
            "kind = \"matmul\"",
            &[DType::F32, DType::F32],
            &[4, 4],
            &[2, 2],
        );
        assert!(
            e.contains("matmul streams \"in0\" by bands of whole rows"),
            "{e}"
        );
        let e = plan_err(
            "kind = \"matmul\"",
            &[DType::F32, DType::F32],
            &[2, 2, 2],
            &[2, 2, 2],
        );
        assert!(e.contains("matmul takes 1-D and 2-D arrays"), "{e}");
    }
}
