//! `structure-tensor`: seed 000's feature map of an (H, W, C) image, fused
//! per chunk with the halo the gradient and the window need.

use blockflow_core::{with_array, ArrayData, Chunk, DType, Region};
use blockflow_kernels::filters;
use blockflow_kernels::simd::Isa;
use blockflow_kernels::tensor::{self, Gradient, TensorParams};

use super::common::{self, MODES};
use super::{
    p, Arity, Exec, KernelState, KindDef, MapKernel, MemoryCx, PType, PlanCx, Planned, Stage,
};

pub static KIND: KindDef = KindDef {
    kind: "structure-tensor",
    role: "kernel",
    summary: "seed 000's feature map of an (H, W, C) image: gradient, products, window smoothing, eigenvalues, energy and anisotropy, fused per chunk; float64 (H, W)",
    inputs: Arity::Exactly(1),
    params: &[
        p("gradient", PType::Choice(&["gaussian", "finite-difference"]), Some("gaussian"), "Gaussian derivative (a correlation, as the seed's stencil) or forward differences"),
        p("sigma", PType::Float, Some("1.5"), "the Gaussian derivative's sigma"),
        p("radius", PType::Int(1, 1000), Some("10"), "the Gaussian derivative's radius"),
        p("window_sigma", PType::Float, Some("2.0"), "the smoothing window's sigma"),
        p("window_radius", PType::Int(0, 1000), Some("10"), "the smoothing window's radius"),
        p("mode", PType::Choice(MODES), Some("reflect"),
          "edges, as scipy, for every step; none: the seed under dask (a zero frame, NaN features there)"),
        p("output", PType::Choice(&["features", "energy", "anisotropy"]), Some("features"),
          "features: the seed's map (H, W); energy = l0 + l1 or anisotropy = (l1 - l0)/energy per channel (H, W, C)"),
    ],
    example: "inputs = [\"f32_rgb\"]\nsigma = 1.0\nradius = 3\nwindow_radius = 3",
    plan,
};

/// What the stage sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Features,
    Energy,
    Anisotropy,
}

#[derive(Debug, Clone)]
pub struct StructureTensor {
    pub params: TensorParams,
    pub output: Output,
    /// The input's shape (H, W, C).
    pub array: Vec<usize>,
    pub halo: Vec<(usize, usize)>,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let spec = cx.input(0)?.clone();
    let shape = spec.shape().to_vec();
    let chunk = spec.grid.chunk_shape().to_vec();
    if shape.len() != 3 || chunk[2] != shape[2] {
        return cx.err(
            "inputs",
            format!("the structure tensor takes an image (H, W, C) with whole channels in each chunk; the input is {shape:?} in chunks of {chunk:?}"),
        );
    }
    for key in ["sigma", "window_sigma"] {
        if cx.p.has(key) && cx.p.float(key).is_some_and(|s| s <= 0.0) {
            return cx.err(key, format!("`{key}` must be > 0"));
        }
    }
    let gradient = if cx.p.str("gradient")? == "finite-difference" {
        Gradient::FiniteDifference
    } else {
        Gradient::GaussianDerivative {
            sigma: cx.p.float("sigma")?,
            radius: cx.p.int("radius")? as usize,
        }
    };
    let params = TensorParams {
        gradient,
        window_sigma: cx.p.float("window_sigma")?,
        window_radius: cx.p.int("window_radius")? as usize,
        // It takes no `cval`: the constant mode extends by 0.
        mode: filters::Boundary::parse(&cx.p.str("mode")?, 0.0)?,
    };
    let (hb, ha) = params.halo();
    let halo = vec![(hb, ha), (hb, ha), (0, 0)];
    if !common::check_wrap(cx, &spec.grid, &halo) {
        return None;
    }
    let output = match cx.p.str("output")?.as_str() {
        "energy" => Output::Energy,
        "anisotropy" => Output::Anisotropy,
        _ => Output::Features,
    };
    let (oshape, ochunk) = if output == Output::Features {
        (shape[..2].to_vec(), chunk[..2].to_vec())
    } else {
        (shape.clone(), chunk.clone())
    };
    let grid = match blockflow_core::ChunkGrid::new(oshape, ochunk) {
        Ok(g) => g,
        Err(e) => return cx.err_stage(e.to_string()),
    };
    let st = StructureTensor {
        params,
        output,
        array: shape.iter().map(|&n| n as usize).collect(),
        halo,
    };
    let mut planned = Planned::sends(st, DType::F64, grid);
    if let (Some(out), Some(names)) = (planned.output.as_mut(), spec.names.as_ref()) {
        // The features have the image's axes less its channels.
        out.names = Some(names[..out.grid.ndim()].to_vec());
    }
    Some(planned)
}

impl Stage for StructureTensor {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        let what = match self.output {
            Output::Features => "the seed's feature map",
            Output::Energy => "energy (l0 + l1) per channel",
            Output::Anisotropy => "anisotropy ((l1 - l0) / energy) per channel",
        };
        let (b, a) = self.params.halo();
        format!("{what} of the structure tensor, fused per chunk with a halo of {b} before and {a} after on each image axis")
    }
    /// The block held, as float64, gradients, products and smoothing passes.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.parallel * (m.in_bytes + m.in_elems * 8 * 9 + m.out_bytes)
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Map(self)
    }
    fn halo(&self) -> Option<Vec<(usize, usize)>> {
        Some(self.halo.clone())
    }
}

impl MapKernel for StructureTensor {
    fn apply(
        &self,
        _state: &KernelState,
        inputs: &[Chunk],
        _index: &[u64],
        _region: &Region,
    ) -> Result<ArrayData, String> {
        let c = inputs.first().ok_or("structure-tensor has no input")?;
        let (padded, geom) = common::block(c, &self.halo, &self.array)?;
        let data = padded.as_ref().unwrap_or(c.array());
        let map = match self.output {
            Output::Features => tensor::FeatureMap::Features,
            Output::Energy => tensor::FeatureMap::Energy,
            Output::Anisotropy => tensor::FeatureMap::Anisotropy,
        };
        // The fused kernel reads the block in its own dtype (no float64 copy).
        let (values, dims) = with_array!(data, a => match a.as_slice() {
            Some(v) => tensor::feature_map_block(v, a.shape(), &geom, &self.params, map, Isa::Avx512Fma),
            None => {
                let v: Vec<_> = a.iter().copied().collect();
                tensor::feature_map_block(&v, a.shape(), &geom, &self.params, map, Isa::Avx512Fma)
            }
        })?;
        Ok(ArrayData::F64(
            ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&dims), values)
                .map_err(|e| e.to_string())?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn plans_features_with_the_declared_defaults() {
        let s = plan_one(
            "kind = \"structure-tensor\"",
            &[DType::F32],
            &[40, 50, 3],
            &[20, 25, 3],
        );
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::F64));
        assert_eq!(s.grid.shape(), &[40, 50]);
        assert_eq!(s.grid.chunk_shape(), &[20, 25]);
        let op = &s.kind;
        // radius 10 + window radius 10 on each side of both image axes.
        assert_eq!(op.halo(), Some(vec![(20, 20), (20, 20), (0, 0)]));
        // 2 × (block (60 × 65 × 3) float32 + 9 float64 copies + (20 × 25) float64).
        let block = 60 * 65 * 3;
        assert_eq!(s.mem.working, 2 * (block * 4 + block * 72 + 500 * 8));
        let e = plan_one(
            "kind = \"structure-tensor\"\noutput = \"energy\"\ngradient = \"finite-difference\"",
            &[DType::F32],
            &[40, 50, 3],
            &[20, 25, 3],
        );
        assert_eq!(e.grid.shape(), &[40, 50, 3]);
    }

    #[test]
    fn refuses_split_channels_and_a_zero_sigma() {
        let e = plan_err(
            "kind = \"structure-tensor\"",
            &[DType::F32],
            &[40, 50, 3],
            &[20, 25, 1],
        );
        assert!(e.contains("whole channels in each chunk"), "{e}");
        let e = plan_err(
            "kind = \"structure-tensor\"\nsigma = 0",
            &[DType::F32],
            &[40, 50, 3],
            &[20, 25, 3],
        );
        assert!(e.contains("`sigma` must be > 0"), "{e}");
    }

    #[test]
    fn a_whole_image_gives_the_whole_array_result() {
        // Energy of a small ramp image against the whole-image kernel.
        let params = TensorParams {
            gradient: Gradient::FiniteDifference,
            window_sigma: 1.0,
            window_radius: 2,
            mode: filters::Boundary::Reflect,
        };
        let (b, a) = params.halo();
        let k = StructureTensor {
            params,
            output: Output::Energy,
            array: vec![5, 6, 1],
            halo: vec![(b, a), (b, a), (0, 0)],
        };
        let values: Vec<f64> = (0..30).map(|i| ((i * 7) % 11) as f64).collect();
        let out = apply_map(&k, &[array_f64(&[5, 6, 1], &values)]);
        let s = tensor::structure_tensor(&values, &[5, 6, 1], &params);
        let (energy, _) = tensor::energy_anisotropy(&s);
        assert_eq!(out.to_f64().iter().copied().collect::<Vec<_>>(), energy);
    }
}
