//! `zscore`: scipy.stats.zscore along an axis each chunk holds whole.

use blockflow_core::{with_array, ArrayData, Chunk, DType, Region};

use super::common;
use super::{
    p, Arity, Exec, KernelState, KindDef, MapKernel, MemoryCx, PType, PlanCx, Planned, Stage,
};

pub static KIND: KindDef = KindDef {
    kind: "zscore",
    role: "kernel",
    summary: "scipy.stats.zscore along an axis each chunk holds whole (rechunk to whole time series first): (x - mean) / std with `ddof`; float64 out; a constant series gives NaN, as scipy",
    inputs: Arity::Exactly(1),
    params: &[
        p("axis", PType::Int(-32, 31), Some("0"), "the axis"),
        p("ddof", PType::Int(0, 1_000_000), Some("0"), "delta degrees of freedom, as scipy"),
    ],
    example: "inputs = [\"frames\"]\naxis = 1",
    plan,
};

#[derive(Debug, Clone)]
pub struct Zscore {
    pub axis: usize,
    pub ddof: usize,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let stream = cx.input(0)?.clone();
    let ax = common::axis(cx, stream.shape().len(), "the input's")?;
    if stream.grid.chunk_shape()[ax] != stream.shape()[ax] {
        return cx.err("inputs", format!("zscore along axis {ax} needs each chunk to hold that axis whole: the input {:?} comes in chunks of {:?}; rechunk it (e.g. to whole time series) first", stream.shape(), stream.grid.chunk_shape()));
    }
    let z = Zscore {
        axis: ax,
        ddof: cx.p.int("ddof")? as usize,
    };
    Some(Planned::sends(z, DType::F64, stream.grid))
}

impl Stage for Zscore {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        format!("along axis {}, ddof {}", self.axis, self.ddof)
    }
    /// The chunk as float64, sums, the result.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.parallel * (m.in_bytes + 3 * m.out_bytes)
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Map(self)
    }
}

impl MapKernel for Zscore {
    fn apply(
        &self,
        _state: &KernelState,
        inputs: &[Chunk],
        _index: &[u64],
        _region: &Region,
    ) -> Result<ArrayData, String> {
        let c = inputs.first().ok_or("zscore has no input")?;
        with_array!(c.array(), a => blockflow_kernels::zscore::zscore(a.view(), self.axis, self.ddof)
            .map(ArrayData::F64)
            .map_err(|e| e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn plans_float64_over_the_input_grid() {
        let s = plan_one("kind = \"zscore\"", &[DType::U16], &[6, 10], &[6, 5]);
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::F64));
        assert_eq!(s.grid.chunk_shape(), &[6, 5]);
        // 2 × (30 uint16 + 3 × 30 float64).
        assert_eq!(s.mem.working, 2 * (60 + 3 * 240));
    }

    #[test]
    fn refuses_an_axis_split_into_chunks_or_out_of_range() {
        let e = plan_err("kind = \"zscore\"", &[DType::F32], &[6, 10], &[3, 10]);
        assert!(
            e.contains("needs each chunk to hold that axis whole"),
            "{e}"
        );
        let e = plan_err(
            "kind = \"zscore\"\naxis = 2",
            &[DType::F32],
            &[6, 10],
            &[6, 10],
        );
        assert!(
            e.contains("axis 2 is out of range for the input's 2 axes"),
            "{e}"
        );
    }

    #[test]
    fn standardises_along_the_axis() {
        let k = Zscore { axis: 0, ddof: 0 };
        // [1, 3]: mean 2, std 1.
        let out = apply_map(&k, &[array_f64(&[2, 1], &[1.0, 3.0])]);
        assert_eq!(
            out.to_f64().iter().copied().collect::<Vec<_>>(),
            vec![-1.0, 1.0]
        );
    }
}
