//! `clip`: numpy's `clip(x, min, max)`, either bound optional.

use blockflow_core::{ArrayData, Chunk, DType, Region};

use super::{
    p, Arity, Exec, KernelState, KindDef, MapKernel, MemoryCx, PType, PlanCx, Planned, Stage,
};

pub static KIND: KindDef = KindDef {
    kind: "clip",
    role: "kernel",
    summary: "numpy's clip(x, min, max): values below `min` become `min`, above `max` become `max` (NaN stays NaN); keeps the dtype (integers are clipped to the integers within the bounds)",
    inputs: Arity::Exactly(1),
    params: &[
        p("min", PType::Float, Some(""), "the lower bound (default: none)"),
        p("max", PType::Float, Some(""), "the upper bound (default: none)"),
    ],
    example: "inputs = [\"f32_2d\"]\nmin = 0.25\nmax = 0.75",
    plan,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let input = cx.input(0)?;
    let (min, max) = (cx.p.float("min"), cx.p.float("max"));
    match (min, max) {
        (None, None) => return cx.err_stage("clip needs `min`, `max` or both"),
        (Some(lo), Some(hi)) if lo > hi => {
            return cx.err("min", format!("`min` ({lo}) is above `max` ({hi})"))
        }
        _ => {}
    }
    if input.dtype == DType::Bool {
        return cx.err(
            "inputs",
            "clip takes numbers, not bool; cast first (expr `u8(x)`)",
        );
    }
    Some(Planned::sends(
        Clip { min, max },
        input.dtype,
        input.grid.clone(),
    ))
}

impl Stage for Clip {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => format!("values clipped to [{lo}, {hi}]"),
            (Some(lo), None) => format!("values below {lo} raised to it"),
            (None, Some(hi)) => format!("values above {hi} lowered to it"),
            (None, None) => "values unchanged".into(),
        }
    }
    /// The chunk and its clipped copy.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.parallel * (m.in_bytes + m.out_bytes)
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Map(self)
    }
}

impl MapKernel for Clip {
    fn apply(
        &self,
        _state: &KernelState,
        inputs: &[Chunk],
        _index: &[u64],
        _region: &Region,
    ) -> Result<ArrayData, String> {
        let c = inputs.first().ok_or("clip has no input")?;
        Ok(blockflow_kernels::ops::clip(c.array(), self.min, self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn plans_the_input_stream_unchanged() {
        let s = plan_one(
            "kind = \"clip\"\nmin = 0\nmax = 1.5",
            &[DType::F32],
            &[10, 12],
            &[4, 5],
        );
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::F32));
        assert_eq!(s.grid.shape(), &[10, 12]);
        assert_eq!(s.grid.chunk_shape(), &[4, 5]);
        assert!(s.mem.working > 0);
    }

    #[test]
    fn refuses_no_bound_inverted_bounds_and_bool() {
        let e = plan_err("kind = \"clip\"", &[DType::F32], &[10], &[5]);
        assert!(e.contains("needs `min`, `max` or both"), "{e}");
        let e = plan_err(
            "kind = \"clip\"\nmin = 2\nmax = 1",
            &[DType::F32],
            &[10],
            &[5],
        );
        assert!(e.contains("`min` (2) is above `max` (1)"), "{e}");
        let e = plan_err("kind = \"clip\"\nmax = 1", &[DType::Bool], &[10], &[5]);
        assert!(e.contains("not bool"), "{e}");
    }

    #[test]
    fn clips_a_chunk() {
        let k = Clip {
            min: Some(0.0),
            max: None,
        };
        let out = apply_map(&k, &[array_f64(&[4], &[-1.0, 0.5, -0.0, 2.0])]);
        assert_eq!(out.to_f64().as_slice().expect("std"), &[0.0, 0.5, 0.0, 2.0]);
    }
}
