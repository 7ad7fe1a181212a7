//! `rescale`: scikit-image's rescale_intensity, per image along axis 0.

use blockflow_core::{ArrayData, Chunk, Region};
use blockflow_kernels::rescale::{InRange, NamedRange, OutRange};

use super::{
    p, Arity, Exec, KernelState, KindDef, MapKernel, MemoryCx, PType, PlanCx, Planned, Stage,
};

pub static KIND: KindDef = KindDef {
    kind: "rescale",
    role: "kernel",
    summary: "scikit-image's rescale_intensity, per image: each chunk's images (along axis 0) are stretched from `in_range` to `out_range`; chunks must hold whole images",
    inputs: Arity::Exactly(1),
    params: &[
        p("in_range", PType::Str, Some("image"), "image (each image's min and max over all channels), dtype (the dtype's limits), or a dtype-like name (uint10, uint12, ...)"),
        p("in_values", PType::Floats, Some(""), "[lo, hi]: explicit input limits (instead of `in_range`)"),
        p("percentiles", PType::Floats, Some(""), "[p_lo, p_hi]: each image's percentiles as input limits (numpy's linear method), e.g. [2, 98]"),
        p("out_range", PType::Str, Some("dtype"), "dtype (the input dtype's limits; the output keeps the dtype), image, or a dtype name (uint8, float32, ...: output in that dtype's range)"),
        p("out_values", PType::Floats, Some(""), "[lo, hi]: explicit output limits (float64 output unless the input is float)"),
    ],
    example: "inputs = [\"u8_stack\"]\npercentiles = [2, 98]",
    plan,
};

#[derive(Debug, Clone)]
pub struct Rescale {
    pub in_range: InRange,
    pub out_range: OutRange,
    /// The ranges as written (for the plan).
    pub in_text: String,
    pub out_text: String,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let stream = cx.input(0)?.clone();
    let c = stream.grid.chunk_shape();
    if stream.shape().len() < 2 || c[1..] != stream.shape()[1..] {
        return cx.err("inputs", format!("rescale works per image (axis 0): chunks must hold whole images, but the input {:?} is in chunks of {c:?}; rechunk it first", stream.shape()));
    }
    let pair = |key: &str| match cx.p.floats(key, 2) {
        Some(Ok(v)) => Some(Ok((v[0], v[1]))),
        Some(Err(e)) => Some(Err(e)),
        None => None,
    };
    let named = |key: &str, v: &str| {
        NamedRange::parse(v).ok_or_else(|| {
            format!("`{key} = \"{v}\"`: not image, dtype, or a dtype name (uint8, uint12, float32, ...)")
        })
    };
    let in_text = cx.p.str("in_range")?;
    let out_text = cx.p.str("out_range")?;
    let (in_values, percentiles) = (pair("in_values"), pair("percentiles"));
    let in_range = match (in_values, percentiles, in_text.as_str()) {
        (Some(Ok((lo, hi))), _, _) => Ok(InRange::Values(lo, hi)),
        (_, Some(Ok((lo, hi))), _)
            if (0.0..=100.0).contains(&lo) && (0.0..=100.0).contains(&hi) && lo <= hi =>
        {
            Ok(InRange::Percentiles(lo, hi))
        }
        (_, Some(Ok(_)), _) => {
            Err("`percentiles` must be two values 0 <= lo <= hi <= 100".to_string())
        }
        (Some(Err(e)), _, _) | (_, Some(Err(e)), _) => Err(e),
        (None, None, "image") => Ok(InRange::Image),
        (None, None, "dtype") => Ok(InRange::Dtype),
        (None, None, v) => named("in_range", v).map(InRange::Named),
    };
    let out_range = match (pair("out_values"), out_text.as_str()) {
        (Some(Ok((lo, hi))), _) => Ok(OutRange::Values(lo, hi)),
        (Some(Err(e)), _) => Err(e),
        (None, "dtype") => Ok(OutRange::Dtype),
        (None, "image") => Ok(OutRange::Image),
        (None, v) => named("out_range", v).map(OutRange::Named),
    };
    let (in_range, out_range) = match (in_range, out_range) {
        (Ok(i), Ok(o)) => (i, o),
        (Err(e), _) | (_, Err(e)) => return cx.err("in_range", e),
    };
    let dtype = blockflow_kernels::rescale::output_dtype(stream.dtype, &out_range);
    let r = Rescale {
        in_range,
        out_range,
        in_text,
        out_text,
    };
    Some(Planned::sends(r, dtype, stream.grid))
}

impl Stage for Rescale {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        let from = match self.in_range {
            InRange::Image => "each image's min and max".to_string(),
            InRange::Dtype => "the dtype's limits".to_string(),
            InRange::Named(_) => format!("the range of {}", self.in_text),
            InRange::Values(lo, hi) => format!("[{lo}, {hi}]"),
            InRange::Percentiles(lo, hi) => {
                format!("each image's percentiles {lo} and {hi}")
            }
        };
        let to = match self.out_range {
            OutRange::Dtype => "the dtype's limits".to_string(),
            OutRange::Image => "each image's min and max".to_string(),
            OutRange::Named(_) => format!("the range of {}", self.out_text),
            OutRange::Values(lo, hi) => format!("[{lo}, {hi}]"),
        };
        format!("rescale_intensity from {from} to {to}, per image")
    }
    /// The chunk, its float64 values, the result.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.parallel * (m.in_bytes + m.in_elems * 8 + m.out_bytes)
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Map(self)
    }
}

impl MapKernel for Rescale {
    fn apply(
        &self,
        _state: &KernelState,
        inputs: &[Chunk],
        _index: &[u64],
        _region: &Region,
    ) -> Result<ArrayData, String> {
        let c = inputs.first().ok_or("rescale has no input")?;
        blockflow_kernels::rescale::rescale_each(c.array(), &self.in_range, &self.out_range)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use blockflow_core::DType;

    #[test]
    fn plans_the_output_dtype_of_the_range() {
        let s = plan_one(
            "kind = \"rescale\"\nout_range = \"uint8\"",
            &[DType::U16],
            &[4, 6, 6],
            &[2, 6, 6],
        );
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::U8));
        // 2 × (72 uint16 + 72 float64 + 72 uint8).
        assert_eq!(s.mem.working, 2 * (144 + 576 + 72));
        let op = &s.kind;
        assert_eq!(
            op.describe(),
            "rescale_intensity from each image's min and max to the range of uint8, per image"
        );
    }

    #[test]
    fn refuses_split_images_and_bad_percentiles() {
        let e = plan_err("kind = \"rescale\"", &[DType::U8], &[4, 6, 6], &[2, 3, 6]);
        assert!(e.contains("chunks must hold whole images"), "{e}");
        let e = plan_err(
            "kind = \"rescale\"\npercentiles = [50, 2]",
            &[DType::U8],
            &[4, 6],
            &[2, 6],
        );
        assert!(e.contains("`percentiles` must be two values"), "{e}");
    }

    #[test]
    fn stretches_each_image() {
        let k = Rescale {
            in_range: InRange::Image,
            out_range: OutRange::Values(0.0, 1.0),
            in_text: "image".into(),
            out_text: "dtype".into(),
        };
        let out = apply_map(&k, &[array_f64(&[2, 2], &[1.0, 3.0, 10.0, 20.0])]);
        assert_eq!(
            out.to_f64().iter().copied().collect::<Vec<_>>(),
            vec![0.0, 1.0, 0.0, 1.0]
        );
    }
}
