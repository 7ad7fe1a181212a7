//! `diff`: numpy's diff (n = 1) along an axis each chunk holds whole.

use blockflow_core::{ArrayData, Chunk, ChunkGrid, Region};

use super::common;
use super::{
    p, Arity, Exec, KernelState, KindDef, MapKernel, MemoryCx, PType, PlanCx, Planned, Stage,
};

pub static KIND: KindDef = KindDef {
    kind: "diff",
    role: "kernel",
    summary: "numpy's diff (n = 1) along an axis that each chunk holds whole: out[i] = a[i + 1] - a[i]; integers wrap as numpy's do, booleans give not-equal",
    inputs: Arity::Exactly(1),
    params: &[p("axis", PType::Int(-32, 31), Some("-1"), "the axis (negative counts from the end)")],
    example: "inputs = [\"mat\"]\naxis = 1",
    plan,
};

#[derive(Debug, Clone)]
pub struct Diff {
    pub axis: usize,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let stream = cx.input(0)?.clone();
    let ax = common::axis(cx, stream.shape().len(), "the input's")?;
    let (n, c) = (stream.shape()[ax], stream.grid.chunk_shape()[ax]);
    if c != n || n < 2 {
        return cx.err("inputs", format!("diff along axis {ax} needs each chunk to hold that axis whole and at least 2 long: the input {:?} is in chunks of {:?}; rechunk it first", stream.shape(), stream.grid.chunk_shape()));
    }
    let mut shape = stream.shape().to_vec();
    shape[ax] -= 1;
    let mut chunks = stream.grid.chunk_shape().to_vec();
    chunks[ax] -= 1;
    let grid = match ChunkGrid::new(shape, chunks) {
        Ok(g) => g,
        Err(e) => return cx.err_stage(e.to_string()),
    };
    let about = super::About::text(format!(
        "differences along axis {ax} of {} (numpy's diff)",
        cx.inputs[0].label()
    ));
    Some(Planned::sends(Diff { axis: ax }, stream.dtype, grid).about(about))
}

impl Stage for Diff {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        format!("diff along axis {}", self.axis)
    }
    /// The chunk, the result and its temporary.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.parallel * (m.in_bytes + 2 * m.out_bytes)
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Map(self)
    }
    /// One more element along the axis than the output region.
    fn regional(&self) -> bool {
        true
    }
    fn input_region(&self, _k: usize, region: &Region, shape: &[u64]) -> (Region, Vec<(u64, u64)>) {
        let mut r = region.clone();
        if let Some(n) = shape.get(self.axis) {
            r.shape[self.axis] = (r.shape[self.axis] + 1).min(n - r.origin[self.axis]);
        }
        (r, vec![(0, 0); shape.len()])
    }
}

impl MapKernel for Diff {
    fn apply(
        &self,
        _state: &KernelState,
        inputs: &[Chunk],
        _index: &[u64],
        _region: &Region,
    ) -> Result<ArrayData, String> {
        let c = inputs.first().ok_or("diff has no input")?;
        Ok(blockflow_kernels::ops::diff(c.array(), self.axis))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use blockflow_core::DType;

    #[test]
    fn plans_one_less_along_the_last_axis() {
        let s = plan_one("kind = \"diff\"", &[DType::I32], &[4, 10], &[2, 10]);
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::I32));
        assert_eq!(s.grid.shape(), &[4, 9]);
        assert_eq!(s.grid.chunk_shape(), &[2, 9]);
        // 2 × (20 int32 + 2 × 18 int32).
        assert_eq!(s.mem.working, 2 * (80 + 2 * 72));
    }

    #[test]
    fn refuses_a_split_axis() {
        let e = plan_err(
            "kind = \"diff\"\naxis = 0",
            &[DType::I32],
            &[4, 10],
            &[2, 10],
        );
        assert!(
            e.contains("diff along axis 0 needs each chunk to hold that axis whole"),
            "{e}"
        );
    }

    #[test]
    fn differences_along_the_axis() {
        let k = Diff { axis: 1 };
        let out = apply_map(&k, &[array_f64(&[2, 3], &[1.0, 4.0, 9.0, 0.0, -1.0, 1.0])]);
        assert_eq!(
            out.to_f64().iter().copied().collect::<Vec<_>>(),
            vec![3.0, 5.0, -1.0, 2.0]
        );
    }
}
