//! `shift`: scipy.ndimage.shift of each frame of a stack by its vector
//! from the second input (a `register` stage's).

use std::sync::Arc;

use blockflow_core::{ArrayData, Chunk, Region};
use blockflow_kernels::shift::{InterpMode, ShiftBuffers};

use super::common::INTERP_MODES;
use super::register::check_frames;
use super::{
    p, Arity, Exec, KernelState, KindDef, MapKernel, MemoryCx, PType, PlanCx, Planned, Stage,
};

pub static KIND: KindDef = KindDef {
    kind: "shift",
    role: "kernel",
    summary: "scipy.ndimage.shift of each frame of a stack (one whole frame per chunk along axis 0) by that frame's vector from the second input (e.g. a `register` stage): spline interpolation, scipy's modes; keeps the dtype",
    inputs: Arity::Exactly(2),
    params: &[
        p("order", PType::Int(0, 5), Some("3"), "the spline order (0 nearest, 1 linear, 3 cubic)"),
        p("mode", PType::Choice(INTERP_MODES), Some("constant"), "how the frame is extended beyond its edges, as scipy.ndimage"),
        p("cval", PType::Float, Some("0.0"), "the value beyond the edges for the constant modes"),
        p("prefilter", PType::Bool, Some("true"), "spline-filter first (orders > 1), as scipy"),
    ],
    example: "inputs = [\"frames\", \"shifts\"]\norder = 1",
    plan,
};

#[derive(Debug, Clone)]
pub struct Shift {
    pub order: usize,
    pub mode: InterpMode,
    pub cval: f64,
    pub prefilter: bool,
    /// Working buffers kept between frames (and shared by the clones the
    /// plan makes of the stage).
    pub buffers: Arc<ShiftBuffers>,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let shape = check_frames(cx, KIND.kind)?;
    let frame_nd = shape.len() as u64 - 1;
    let stream = cx.input(0)?;
    let v = cx.input(1)?;
    if v.shape() != [shape[0], frame_nd] || v.grid.chunk_shape()[0] != 1 {
        let msg = format!("the second input, \"{}\", must hold one vector per frame, [{}, {frame_nd}] in chunks of one row (a `register` stage); it is {:?} in chunks of {:?}", cx.inputs[1].name, shape[0], v.shape(), v.grid.chunk_shape());
        return cx.err("inputs", msg);
    }
    let s = Shift {
        order: cx.p.int("order")? as usize,
        mode: InterpMode::parse(&cx.p.str("mode")?)?,
        cval: cx.p.float("cval")?,
        prefilter: cx.p.bool("prefilter")?,
        buffers: Arc::default(),
    };
    Some(Planned::sends(s, stream.dtype, stream.grid.clone()))
}

impl Stage for Shift {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        format!(
            "each frame shifted by its vector, by spline interpolation of order {}",
            self.order
        )
    }
    /// The frame as float64, its spline coefficients, the result.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.parallel * (m.in_bytes + m.in_elems * 8 * 3)
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Map(self)
    }
    /// A region's frames whole (a shift moves values across the region's
    /// borders; what lies outside it counts as halo and is cropped), and
    /// their vectors.
    fn input_region(&self, k: usize, region: &Region, shape: &[u64]) -> (Region, Vec<(u64, u64)>) {
        let mut origin = vec![region.origin[0]];
        let mut extent = vec![region.shape[0]];
        let mut got = vec![(0, 0)];
        for (ax, &n) in shape.iter().enumerate().skip(1) {
            origin.push(0);
            extent.push(n);
            got.push(if k == 0 && ax < region.ndim() {
                let end = region.origin[ax] + region.shape[ax];
                (region.origin[ax], n.saturating_sub(end))
            } else {
                (0, 0)
            });
        }
        (Region::new(origin, extent), got)
    }
    fn regional(&self) -> bool {
        true
    }
}

impl MapKernel for Shift {
    fn apply(
        &self,
        _state: &KernelState,
        inputs: &[Chunk],
        _index: &[u64],
        _region: &Region,
    ) -> Result<ArrayData, String> {
        let [frame, vector] = inputs else {
            return Err("shift takes a frame and its vector".into());
        };
        let v: Vec<f64> = vector.array().to_f64().iter().copied().collect();
        let data = frame.array();
        let n = data.shape().first().copied().unwrap_or(0);
        let nd = data.shape().len().saturating_sub(1);
        let shift_one = |d: &ArrayData, vec: &[f64]| {
            blockflow_kernels::shift::shift_timepoint(
                d,
                vec,
                self.order,
                self.mode,
                self.cval,
                self.prefilter,
                &self.buffers,
            )
            .map_err(|e| e.to_string())
        };
        // One frame per chunk in a stream; a region may hold several.
        let whole = if n <= 1 {
            shift_one(data, &v)?
        } else {
            let mut rest = data.shape().to_vec();
            rest[0] = 1;
            let mut parts = Vec::with_capacity(n);
            for t in 0..n {
                let mut start = vec![0; rest.len()];
                start[0] = t;
                let row = v
                    .get(t * nd..(t + 1) * nd)
                    .ok_or("fewer vectors than frames")?;
                parts.push(shift_one(&data.crop(&start, &rest), row)?);
            }
            ArrayData::concat0(&parts).ok_or("frames of different shapes")?
        };
        if frame.halo.iter().all(|&(b, a)| b == 0 && a == 0) {
            return Ok(whole);
        }
        // Asked for part of the frame (by region): the core of the whole.
        let start: Vec<usize> = frame.halo.iter().map(|&(b, _)| b as usize).collect();
        let len: Vec<usize> = whole
            .shape()
            .iter()
            .zip(&frame.halo)
            .map(|(&n, &(b, a))| n - b as usize - a as usize)
            .collect();
        Ok(whole.crop(&start, &len))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use blockflow_core::DType;

    #[test]
    fn plans_the_frames_stream_with_the_declared_defaults() {
        let cfg = config("kind = \"register\"", &[DType::U16], &[3, 4, 6], &[1, 4, 6])
            + "[stage.t]\nkind = \"shift\"\ninputs = [\"in0\", \"s\"]\n";
        let plan = plan_text(&cfg, &crate::catalog::FakeCatalog::default()).expect("plans");
        let t = stage_named(&plan, "t");
        assert_eq!(t.output.as_ref().map(|o| o.dtype), Some(DType::U16));
        assert_eq!(t.grid.chunk_shape(), &[1, 4, 6]);
        let op = &t.kind;
        assert_eq!(
            op.describe(),
            "each frame shifted by its vector, by spline interpolation of order 3"
        );
        // 2 × (a uint16 frame of 24 + the vector of 2 float64, and 26 × 8 × 3).
        assert_eq!(t.mem.working, 2 * (48 + 16 + 26 * 24));
    }

    #[test]
    fn refuses_vectors_that_are_not_one_per_frame() {
        let cfg = config(
            "kind = \"shift\"",
            &[DType::F32, DType::F64],
            &[3, 4],
            &[1, 4],
        );
        let e = plan_text(&cfg, &crate::catalog::FakeCatalog::default()).expect_err("refused");
        assert!(e.contains("must hold one vector per frame, [3, 1]"), "{e}");
    }

    #[test]
    fn shifts_a_frame_by_whole_voxels() {
        let k = Shift {
            order: 1,
            mode: InterpMode::Constant,
            cval: 0.0,
            prefilter: true,
            buffers: Arc::default(),
        };
        let out = apply_map(
            &k,
            &[
                array_f64(&[1, 5], &[1.0, 2.0, 3.0, 4.0, 5.0]),
                array_f64(&[1, 1], &[2.0]),
            ],
        );
        assert_eq!(
            out.to_f64().iter().copied().collect::<Vec<_>>(),
            vec![0.0, 0.0, 1.0, 2.0, 3.0]
        );
    }
}
