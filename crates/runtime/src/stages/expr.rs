//! `expr`: an elementwise expression over the inputs (numpy semantics).

use blockflow_core::{ArrayData, ArraySpec, Chunk, ChunkGrid, Region};
use blockflow_kernels::{Expr as Compiled, InputInfo};

use super::{
    p, Arity, Exec, KernelState, KindDef, MapKernel, MemoryCx, PType, PlanCx, Planned, Stage,
};

pub static KIND: KindDef = KindDef {
    kind: "expr",
    role: "kernel",
    summary: "an elementwise expression over its inputs (numpy semantics); see the expression reference below",
    inputs: Arity::AtLeast(1),
    params: &[p(
        "expr",
        PType::Expr,
        None,
        "the expression; inputs by stage name, `x` is the first",
    )],
    example: "inputs = [\"f32_2d\"]\nexpr = \"x * 2 + 1\"",
    plan,
};

/// A compiled expression and its text.
#[derive(Debug, Clone)]
pub struct Expr {
    pub src: String,
    pub expr: Box<Compiled>,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let ev = cx.p.given("expr")?;
    let crate::config::Val::Str(src) = &ev.v else {
        return None;
    };
    let infos: Vec<InputInfo> = cx
        .inputs
        .iter()
        .map(|i| InputInfo {
            name: i.name.to_string(),
            dtype: i.spec.dtype,
            shape: i.spec.shape().to_vec(),
            chunk: i.spec.grid.chunk_shape().to_vec(),
        })
        .collect();
    let expr = match Compiled::compile(src, &infos) {
        Ok(e) => e,
        Err(e) => {
            // Column inside the string value (after the opening quote).
            let (d, st) = cx.diags();
            d.err_at(
                &ev.span,
                e.col,
                Some(st.name.v.as_str()),
                format!("in the expression, column {}: {}", e.col, e.msg),
            );
            return None;
        }
    };
    let grid = match ChunkGrid::new(expr.shape().to_vec(), expr.chunk().to_vec()) {
        Ok(g) => g,
        Err(e) => return cx.err("expr", e.to_string()),
    };
    for i in &cx.inputs {
        let g = &i.spec.grid;
        if g.num_chunks() != grid.num_chunks() {
            let msg = format!(
                "input \"{}\" streams {} chunks ({}) but the result has {} ({}); inputs must be chunked alike along the axes they share",
                i.name,
                g.num_chunks(),
                g,
                grid.num_chunks(),
                grid
            );
            return cx.err("inputs", msg);
        }
    }
    let out = ArraySpec::new(expr.dtype(), grid.clone());
    Some(Planned {
        op: Box::new(Expr {
            src: src.clone(),
            expr: Box::new(expr),
        }),
        output: Some(out),
        grid,
        about: Some(super::About {
            text: src.clone(),
            inline: true,
            ..Default::default()
        }),
    })
}

impl Stage for Expr {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        match self.expr.identity_of() {
            Some(_) => format!("{} (its input as it is, sharing its chunks)", self.src),
            None => self.src.clone(),
        }
    }
    /// Inputs held, the result, full-size temporaries, tile buffers.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.parallel
            * (m.in_bytes
                + m.out_bytes
                + self.expr.temporaries() as u128 * m.out_elems * 8
                + (1 << 20))
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Map(self)
    }
}

impl MapKernel for Expr {
    fn apply(
        &self,
        _state: &KernelState,
        inputs: &[Chunk],
        _index: &[u64],
        _region: &Region,
    ) -> Result<ArrayData, String> {
        let arrays: Vec<&ArrayData> = inputs.iter().map(|c| c.array()).collect();
        self.expr.eval(&arrays).map_err(|e| e.to_string())
    }
    /// `expr = "x"` (or an input's name): the chunks go on as they are.
    fn forwards(&self) -> Option<usize> {
        self.expr.identity_of()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use blockflow_core::DType;

    #[test]
    fn plans_the_result_dtype_and_grid() {
        let s = plan_one(
            "kind = \"expr\"\nexpr = \"f32(in0 + in1 * 2)\"",
            &[DType::U8, DType::F64],
            &[10, 12],
            &[4, 5],
        );
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::F32));
        assert_eq!(s.grid.shape(), &[10, 12]);
        assert_eq!(s.grid.chunk_shape(), &[4, 5]);
        // parallel 2 × (u8 + f64 chunk in, f32 out, 1 MiB of tiles; the
        // expression's temporaries counted per output element).
        let e = Compiled::compile(
            "f32(in0 + in1 * 2)",
            &[
                InputInfo {
                    name: "in0".into(),
                    dtype: DType::U8,
                    shape: vec![10, 12],
                    chunk: vec![4, 5],
                },
                InputInfo {
                    name: "in1".into(),
                    dtype: DType::F64,
                    shape: vec![10, 12],
                    chunk: vec![4, 5],
                },
            ],
        )
        .expect("compiles");
        let want = 2 * (20 + 160 + 80 + e.temporaries() * 20 * 8 + (1 << 20));
        assert_eq!(s.mem.working, want);
    }

    #[test]
    fn refuses_a_bad_expression_at_its_column() {
        let e = plan_err(
            "kind = \"expr\"\nexpr = \"in0 + nope\"",
            &[DType::F32],
            &[10],
            &[5],
        );
        assert!(e.contains("in the expression, column"), "{e}");
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn evaluates_and_forwards_the_identity() {
        let info = |n: &str| InputInfo {
            name: n.into(),
            dtype: DType::F64,
            shape: vec![3],
            chunk: vec![3],
        };
        let k = Expr {
            src: "x * 2 + y".into(),
            expr: Box::new(Compiled::compile("x * 2 + y", &[info("x"), info("y")]).expect("c")),
        };
        assert_eq!(k.forwards(), None);
        let out = apply_map(
            &k,
            &[
                array_f64(&[3], &[1.0, 2.0, 3.0]),
                array_f64(&[3], &[0.5, 0.5, -1.0]),
            ],
        );
        assert_eq!(out.to_f64().as_slice().expect("std"), &[2.5, 4.5, 5.0]);
        let id = Expr {
            src: "x".into(),
            expr: Box::new(Compiled::compile("x", &[info("x")]).expect("c")),
        };
        assert_eq!(id.forwards(), Some(0));
    }
}
