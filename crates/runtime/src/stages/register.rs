//! `register`: rigid registration of each frame of a stack to the first,
//! by phase cross-correlation. Its state is the reference: the first
//! frame's spectrum, computed once per run (or, in the ingest, from the
//! reference it keeps).

use std::sync::Arc;

use blockflow_core::{ArrayData, Chunk, ChunkGrid, DType, Region};
use blockflow_kernels::register::Registrar;

use super::{
    p, Arity, Exec, KernelState, KindDef, MapKernel, MemoryCx, PType, PlanCx, Planned, Stage,
};

pub static KIND: KindDef = KindDef {
    kind: "register",
    role: "kernel",
    summary: "rigid registration of each frame of a stack (one whole frame per chunk along axis 0) to the first, by phase cross-correlation as scikit-image's phase_cross_correlation, in the frames' precision as scikit-image computes it (float32 frames in single precision, others in double): the stream is the shift that registers each frame, (N, frame axes) float64 in chunks of one frame, ready for a `shift` stage",
    inputs: Arity::Exactly(1),
    params: &[p(
        "upsample_factor",
        PType::Int(1, 10_000),
        Some("1"),
        "1: to the voxel; k: to 1/k voxel by an upsampled DFT around the peak",
    )],
    example: "inputs = [\"frames\"]\nupsample_factor = 4",
    plan,
};

#[derive(Debug, Clone)]
pub struct Register {
    pub upsample: usize,
}

/// The input of `register` and `shift`: whole frames, one per chunk;
/// returns the stack's shape.
pub(super) fn check_frames(cx: &mut PlanCx<'_, '_>, kind: &str) -> Option<Vec<u64>> {
    let stream = cx.input(0)?;
    let (shape, c) = (stream.shape(), stream.grid.chunk_shape());
    if shape.len() < 2 || c[0] != 1 || c[1..] != shape[1..] {
        return cx.err("inputs", format!("{kind} works frame by frame: the input {shape:?} must come one whole frame per chunk, [1, {:?}...], not {c:?}", &shape[1..]));
    }
    Some(shape.to_vec())
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let shape = check_frames(cx, KIND.kind)?;
    let frame_nd = shape.len() as u64 - 1;
    let grid = match ChunkGrid::new(vec![shape[0], frame_nd], vec![1, frame_nd]) {
        Ok(g) => g,
        Err(e) => return cx.err_stage(e.to_string()),
    };
    let r = Register {
        upsample: cx.p.int("upsample_factor")? as usize,
    };
    let about = super::About::text(format!(
        "the shift registering each frame of {} to frame 0 (one row per frame, {frame_nd} values: one per frame axis; phase cross-correlation)",
        cx.inputs[0].label()
    ));
    Some(Planned::sends(r, DType::F64, grid).about(about))
}

/// A run's reference: its spectrum, and the grid index of the frame it was
/// made from (empty when it is no frame of this stream: the ingest's
/// reference kept from an earlier run).
#[derive(Debug)]
pub struct Reference {
    pub registrar: Registrar,
    pub index: Vec<u64>,
}

impl Register {
    fn reference(state: &KernelState) -> Result<&Reference, String> {
        state
            .as_deref()
            .and_then(|s| s.downcast_ref::<Reference>())
            .ok_or_else(|| "internal: register runs without its reference".to_string())
    }
}

impl Stage for Register {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        format!(
            "each frame to the first by phase cross-correlation, to 1/{} voxel",
            self.upsample
        )
    }
    /// The reference's half spectrum and, per frame being registered, the
    /// frame (converted to float64 unless it is float32 or float64), its
    /// half spectrum, the product's copy and the real cross-correlation,
    /// in the frame's precision.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        let (bytes, convert) = match m.input.map(|i| i.dtype) {
            Some(DType::F32) => (4, 0),
            Some(DType::F64) => (8, 0),
            _ => (8, m.in_elems * 8),
        };
        let frame: Vec<usize> = m
            .input
            .map(|i| {
                i.grid.chunk_shape()[1..]
                    .iter()
                    .map(|&n| n as usize)
                    .collect()
            })
            .unwrap_or_default();
        let (reference, working) = Registrar::memory(&frame, bytes, m.parallel as usize);
        reference as u128 + working as u128 + m.parallel * (m.in_bytes + convert)
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Map(self)
    }
}

impl MapKernel for Register {
    /// The first frame is the reference.
    fn init(&self, first: &[Chunk]) -> Result<KernelState, String> {
        let c = first.first().ok_or("register has no input")?;
        let registrar = Registrar::of_timepoint(c.array()).map_err(|e| e.to_string())?;
        Ok(Some(Arc::new(Reference {
            registrar,
            index: c.index.clone(),
        })))
    }
    fn apply(
        &self,
        state: &KernelState,
        inputs: &[Chunk],
        _index: &[u64],
        _region: &Region,
    ) -> Result<ArrayData, String> {
        let c = inputs.first().ok_or("register has no input")?;
        let r = Self::reference(state)?;
        let shift = if c.index == r.index {
            // The reference itself.
            vec![0.0; r.registrar.shape().len()]
        } else {
            r.registrar
                .register_timepoint(c.array(), self.upsample)
                .map_err(|e| e.to_string())?
        };
        let n = shift.len();
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[1, n]), shift)
            .map(ArrayData::F64)
            .map_err(|e| e.to_string())
    }
    /// The reference's spectrum and each frame's working memory.
    fn held_bytes(&self, state: &KernelState, chunks: usize) -> u64 {
        match Self::reference(state) {
            Ok(r) => {
                let (reference, working) =
                    Registrar::memory(r.registrar.shape(), r.registrar.precision_bytes(), chunks);
                (reference + working) as u64
            }
            Err(_) => 0,
        }
    }
    fn keeps_state(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use blockflow_core::Meter;

    #[test]
    fn plans_one_vector_per_frame() {
        let s = plan_one("kind = \"register\"", &[DType::F32], &[5, 8, 8], &[1, 8, 8]);
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::F64));
        assert_eq!(s.grid.shape(), &[5, 2]);
        assert_eq!(s.grid.chunk_shape(), &[1, 2]);
        // Reference 8 × 5 complex float32 (320), per frame (× 2) the
        // product and its copy (2 × 320) and the real correlation (256);
        // the frames (2 × 256).
        assert_eq!(s.mem.working, 320 + 2 * (640 + 256) + 2 * 256);
    }

    #[test]
    fn refuses_frames_split_into_chunks() {
        let e = plan_err("kind = \"register\"", &[DType::F32], &[5, 8, 8], &[1, 4, 8]);
        assert!(e.contains("register works frame by frame"), "{e}");
    }

    #[test]
    fn the_reference_gives_zeros_and_a_shifted_frame_its_shift() {
        let meter = Meter::new();
        let frame = |dy: usize| {
            let a = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[1, 8, 8]), |i| {
                let (y, x) = ((i[1] + 8 - dy) % 8, i[2]);
                ((y * 3 + x * 5) % 7) as f64 + if (y, x) == (2, 3) { 10.0 } else { 0.0 }
            });
            ArrayData::F64(a)
        };
        let chunk = |t: u64, dy: usize| {
            Chunk::new(
                vec![t, 0, 0],
                Region::new(vec![t, 0, 0], vec![1, 8, 8]),
                frame(dy),
                &meter,
            )
        };
        let k = Register { upsample: 1 };
        let first = [chunk(0, 0)];
        let state = k.init(&first).expect("init");
        assert!(k.held_bytes(&state, 1) > 0);
        let out = |c: Chunk| {
            k.apply(&state, &[c], &[0, 0], &Region::new(vec![0, 0], vec![1, 2]))
                .expect("applies")
                .to_f64()
                .iter()
                .copied()
                .collect::<Vec<f64>>()
        };
        assert_eq!(out(chunk(0, 0)), vec![0.0, 0.0]);
        // Frame 1 is the reference rolled by 2 along y: registering it
        // takes it back by -2.
        assert_eq!(out(chunk(1, 2)), vec![-2.0, 0.0]);
        // A reference from elsewhere (no index): frame 0's data is no
        // special case, and registers to 0 by computation.
        let kept = k
            .init(&[Chunk::new(
                vec![],
                Region::new(vec![0, 0, 0], vec![1, 8, 8]),
                frame(0),
                &meter,
            )])
            .expect("init");
        let v = k
            .apply(
                &kept,
                &[chunk(1, 2)],
                &[1, 0],
                &Region::new(vec![1, 0], vec![1, 2]),
            )
            .expect("applies");
        assert_eq!(
            v.to_f64().iter().copied().collect::<Vec<_>>(),
            vec![-2.0, 0.0]
        );
    }
}
