//! `filter`: separable filters with scipy.ndimage's conventions, chunk by
//! chunk with the halo their passes need; a chain of filters runs fused.

use blockflow_core::{with_array, with_dtype, ArrayData, ArrayKind, Chunk, DType, Element, Region};
use blockflow_kernels::filters::{self, Boundary, Difference, Pass};

use super::common::{self, MODES};
use super::{
    p, Arity, Exec, KernelState, KindDef, MapKernel, MemoryCx, PType, PlanCx, Planned, Stage,
};

pub static KIND: KindDef = KindDef {
    kind: "filter",
    role: "kernel",
    summary: "a separable filter with scipy.ndimage's conventions; the planner gives chunks their halo, and consecutive filters run fused in one pass",
    inputs: Arity::Exactly(1),
    params: &[
        p("filter", PType::Choice(&["gaussian", "uniform", "sobel", "correlate1d", "convolve1d", "difference"]), None, "which filter"),
        p("sigma", PType::Floats, Some(""), "gaussian: standard deviation per axis (one number for every axis; 0 skips an axis)"),
        p("order", PType::Ints, Some("0"), "gaussian: derivative order per axis, 0 to 3"),
        p("truncate", PType::Float, Some("4.0"), "gaussian: radius = int(truncate * sigma + 0.5)"),
        p("radius", PType::Ints, Some(""), "gaussian: kernel radius per axis, instead of truncate"),
        p("size", PType::Ints, Some(""), "uniform: window per axis"),
        p("axis", PType::Int(-32, 31), Some(""), "sobel, correlate1d, convolve1d, difference: the axis (negative counts from the end)"),
        p("weights", PType::Floats, Some(""), "correlate1d, convolve1d: the weights"),
        p("origin", PType::Int(-1024, 1024), Some("0"), "correlate1d, convolve1d: shift of the window, as scipy"),
        p("difference", PType::Choice(&["forward", "central"]), Some("forward"), "difference: x[i+1]-x[i], or (x[i+1]-x[i-1])/2"),
        p("mode", PType::Choice(MODES), Some("reflect"),
          "how the array is extended at its edges, as scipy; none: 0 where the window leaves the array (the seed's stencils)"),
        p("cval", PType::Float, Some("0.0"), "the value beyond the edges for mode = \"constant\""),
    ],
    example: "inputs = [\"f32_2d\"]\nfilter = \"gaussian\"\nsigma = 1.0",
    plan,
};

/// Separable passes over an array of `array`'s shape; `fused` names the
/// filter stages merged into this one (in order, before it).
#[derive(Debug, Clone)]
pub struct Filter {
    pub passes: Vec<Pass>,
    /// What each merged filter does, in words.
    pub desc: Vec<String>,
    pub fused: Vec<String>,
    pub array: Vec<usize>,
    pub halo: Vec<(usize, usize)>,
}

impl Filter {
    fn new(passes: Vec<Pass>, desc: Vec<String>, fused: Vec<String>, array: Vec<usize>) -> Self {
        let halo = filters::passes_halo(&passes, array.len());
        Filter {
            passes,
            desc,
            fused,
            array,
            halo,
        }
    }
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let spec = cx.input(0)?.clone();
    let nd = spec.shape().len();
    let mode = common::boundary(cx)?;
    let which = cx.p.str("filter")?;
    let (passes, desc) = match which.as_str() {
        "gaussian" => gaussian(cx, spec.shape(), mode)?,
        "uniform" => uniform(cx, spec.shape(), mode)?,
        "sobel" => sobel(filter_axis(cx, nd)?, nd, mode),
        "correlate1d" | "convolve1d" => {
            let ax = filter_axis(cx, nd)?;
            correlate(cx, &which, ax, mode)?
        }
        "difference" => {
            let ax = filter_axis(cx, nd)?;
            difference(cx, ax, mode)?
        }
        _ => return None,
    };
    if !common::check_wrap(cx, &spec.grid, &filters::passes_halo(&passes, nd)) {
        return None;
    }
    if spec.dtype == DType::Bool {
        return cx.err(
            "inputs",
            "filters take numbers, not bool; cast first (expr `u8(x)`)",
        );
    }
    let array = spec.shape().iter().map(|&n| n as usize).collect();
    let grid = spec.grid.clone();
    Some(Planned::sends(
        Filter::new(passes, vec![desc], Vec::new(), array),
        spec.dtype,
        grid,
    ))
}

/// The passes of one filter, and its description.
type Passes = (Vec<Pass>, String);

/// The refusal of a filter that lacks a parameter it needs.
fn need<T>(cx: &mut PlanCx<'_, '_>, key: &str) -> Option<T> {
    let which = cx.p.str("filter").unwrap_or_default();
    cx.err_stage(format!("filter \"{which}\" needs `{key}`"))
}

/// The axis of sobel, correlate1d, convolve1d and difference: the last
/// unless given.
fn filter_axis(cx: &mut PlanCx<'_, '_>, nd: usize) -> Option<usize> {
    let a = cx.p.int("axis").unwrap_or(-1);
    let ax = if a < 0 { a + nd as i64 } else { a };
    if ax < 0 || ax >= nd as i64 {
        cx.err(
            "axis",
            format!("axis {a} is out of range for an array of {nd} axes"),
        )
    } else {
        Some(ax as usize)
    }
}

fn gaussian(cx: &mut PlanCx<'_, '_>, shape: &[u64], mode: Boundary) -> Option<Passes> {
    let nd = shape.len();
    let sigma = match cx.p.floats("sigma", nd) {
        None => return need(cx, "sigma"),
        Some(Err(m)) => return cx.err("sigma", m),
        Some(Ok(s)) => s,
    };
    if sigma.iter().any(|&x| x < 0.0) {
        return cx.err("sigma", "sigma must be >= 0");
    }
    let order: Vec<usize> = match cx.p.ints("order", nd)? {
        Ok(o) if o.iter().all(|&x| (0..=3).contains(&x)) => {
            o.into_iter().map(|x| x as usize).collect()
        }
        Ok(_) => return cx.err("order", "orders are 0 to 3"),
        Err(m) => return cx.err("order", m),
    };
    let radius: Option<Vec<usize>> = match cx.p.ints("radius", nd) {
        None => None,
        Some(Ok(r)) if r.iter().all(|&x| x >= 0) => {
            Some(r.into_iter().map(|x| x as usize).collect())
        }
        Some(Ok(_)) => return cx.err("radius", "radius must be >= 0"),
        Some(Err(m)) => return cx.err("radius", m),
    };
    let truncate = cx.p.float("truncate")?;
    if truncate < 0.0 {
        return cx.err("truncate", "truncate must be >= 0");
    }
    // The radius of every pass is checked before a kernel is made.
    for ax in (0..nd).filter(|&ax| sigma[ax] > 1e-15) {
        let (r, key) = match &radius {
            Some(r) => (r[ax] as f64, "radius"),
            None => ((truncate * sigma[ax] + 0.5).floor(), "sigma"),
        };
        if !common::check_radius(cx, key, ax, r, shape[ax]) {
            return None;
        }
    }
    Some((
        filters::gaussian_passes(&sigma, &order, truncate, radius.as_deref(), mode),
        format!("gaussian sigma {sigma:?} order {order:?}"),
    ))
}

fn uniform(cx: &mut PlanCx<'_, '_>, shape: &[u64], mode: Boundary) -> Option<Passes> {
    let size = match cx.p.ints("size", shape.len()) {
        None => return need(cx, "size"),
        Some(Ok(s)) if s.iter().all(|&x| x >= 1) => s,
        Some(Ok(_)) => return cx.err("size", "sizes must be >= 1"),
        Some(Err(m)) => return cx.err("size", m),
    };
    for (ax, &n) in size.iter().enumerate() {
        if !common::check_radius(cx, "size", ax, (n / 2) as f64, shape[ax]) {
            return None;
        }
    }
    let passes = size
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 1)
        .map(|(ax, &n)| Pass {
            axis: ax,
            weights: vec![1.0 / n as f64; n as usize],
            origin: 0,
            mode,
        })
        .collect();
    Some((passes, format!("uniform size {size:?}")))
}

fn sobel(ax: usize, nd: usize, mode: Boundary) -> Passes {
    let mut v = vec![Pass {
        axis: ax,
        weights: vec![-1.0, 0.0, 1.0],
        origin: 0,
        mode,
    }];
    v.extend((0..nd).filter(|&o| o != ax).map(|o| Pass {
        axis: o,
        weights: vec![1.0, 2.0, 1.0],
        origin: 0,
        mode,
    }));
    (v, format!("sobel axis {ax}"))
}

fn correlate(cx: &mut PlanCx<'_, '_>, which: &str, ax: usize, mode: Boundary) -> Option<Passes> {
    let w = match cx.p.floats("weights", 0) {
        Some(Ok(w)) if !w.is_empty() => w,
        _ => return need(cx, "weights"),
    };
    let origin = cx.p.int("origin")? as isize;
    if !filters::origin_ok(w.len(), origin) {
        return cx.err("origin", format!("origin {origin} is out of range for {} weights (scipy: -(len/2) <= origin <= (len-1)/2)", w.len()));
    }
    let desc = format!("{which} axis {ax} weights {w:?} origin {origin}");
    let pass = if which == "correlate1d" {
        Pass {
            axis: ax,
            weights: w,
            origin,
            mode,
        }
    } else {
        let mut o = -origin;
        if w.len().is_multiple_of(2) {
            o -= 1;
        }
        Pass {
            axis: ax,
            weights: w.into_iter().rev().collect(),
            origin: o,
            mode,
        }
    };
    Some((vec![pass], desc))
}

fn difference(cx: &mut PlanCx<'_, '_>, ax: usize, mode: Boundary) -> Option<Passes> {
    let name = cx.p.str("difference")?;
    let kind = if name == "central" {
        Difference::Central
    } else {
        Difference::Forward
    };
    let pass = match kind {
        Difference::Forward => Pass {
            axis: ax,
            weights: vec![-1.0, 1.0],
            origin: -1,
            mode,
        },
        Difference::Central => Pass {
            axis: ax,
            weights: vec![-0.5, 0.0, 0.5],
            origin: 0,
            mode,
        },
    };
    Some((vec![pass], format!("{name} difference axis {ax}")))
}

impl Stage for Filter {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        if self.fused.is_empty() {
            self.desc.join(", ")
        } else {
            format!(
                "{} (fused: {} and this stage run in one pass)",
                self.desc.join(" then "),
                self.fused.join(", ")
            )
        }
    }
    /// The block held, as float64, the pass being written, the result.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.parallel * (m.in_bytes + m.in_elems * 8 * 3 + m.out_bytes)
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Map(self)
    }
    fn halo(&self) -> Option<Vec<(usize, usize)>> {
        Some(self.halo.clone())
    }
    /// A filter after a filter (whose only consumer it is): the passes of
    /// both in one stage.
    fn fuse_after(&self, first: &dyn Stage, first_name: &str) -> Option<Box<dyn Stage>> {
        let f = first.as_any().downcast_ref::<Filter>()?;
        let passes = f.passes.iter().chain(&self.passes).cloned().collect();
        let desc = f.desc.iter().chain(&self.desc).cloned().collect();
        let fused = f
            .fused
            .iter()
            .cloned()
            .chain(std::iter::once(first_name.to_string()))
            .chain(self.fused.iter().cloned())
            .collect();
        Some(Box::new(Filter::new(
            passes,
            desc,
            fused,
            self.array.clone(),
        )))
    }
}

impl MapKernel for Filter {
    fn apply(
        &self,
        _state: &KernelState,
        inputs: &[Chunk],
        _index: &[u64],
        _region: &Region,
    ) -> Result<ArrayData, String> {
        let c = inputs.first().ok_or("filter has no input")?;
        let (padded, geom) = common::block(c, &self.halo, &self.array)?;
        let data = padded.as_ref().unwrap_or(c.array());
        let dtype = data.dtype();
        let (block, bshape) = with_array!(data, a => filters::as_f64(a.view()));
        let (core, cshape) =
            filters::run_passes(block, &bshape, &geom, &self.passes, dtype == DType::F32)?;
        Ok(with_dtype!(dtype, T => T::wrap(
            ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&cshape), core.into_iter().map(T::from_f64).collect())
                .map_err(|e| e.to_string())?
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn plans_the_halo_and_memory() {
        let s = plan_one(
            "kind = \"filter\"\nfilter = \"uniform\"\nsize = [3, 1]",
            &[DType::F32],
            &[10, 12],
            &[4, 6],
        );
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::F32));
        assert_eq!(s.grid.chunk_shape(), &[4, 6]);
        let op = &s.kind;
        assert_eq!(op.halo(), Some(vec![(1, 1), (0, 0)]));
        // The input comes with its halo: (4 + 2) x 6 float32 values.
        // 2 × (144 + 36 × 8 × 3 + 96).
        assert_eq!(s.mem.working, 2 * (144 + 36 * 24 + 96));
    }

    #[test]
    fn refuses_what_scipy_would_not_take() {
        let e = plan_err(
            "kind = \"filter\"\nfilter = \"gaussian\"",
            &[DType::F32],
            &[10],
            &[5],
        );
        assert!(e.contains("filter \"gaussian\" needs `sigma`"), "{e}");
        let e = plan_err(
            "kind = \"filter\"\nfilter = \"sobel\"\naxis = 2",
            &[DType::F32],
            &[10, 10],
            &[5, 5],
        );
        assert!(
            e.contains("axis 2 is out of range for an array of 2 axes"),
            "{e}"
        );
        let e = plan_err(
            "kind = \"filter\"\nfilter = \"uniform\"\nsize = 3\nmode = \"wrap\"",
            &[DType::F32],
            &[10],
            &[5],
        );
        assert!(
            e.contains("mode \"wrap\" reads the far end of axis 0"),
            "{e}"
        );
        let e = plan_err(
            "kind = \"filter\"\nfilter = \"uniform\"\nsize = 3",
            &[DType::Bool],
            &[10],
            &[5],
        );
        assert!(e.contains("not bool"), "{e}");
    }

    #[test]
    fn two_filters_fuse_into_one_stage_that_says_so() {
        let cfg = config(
            "kind = \"filter\"\nfilter = \"uniform\"\nsize = [3, 1]",
            &[DType::F64],
            &[8, 8],
            &[4, 4],
        )
            + "[stage.t]\nkind = \"filter\"\ninputs = [\"s\"]\nfilter = \"sobel\"\naxis = 0\n";
        let plan = plan_text(&cfg, &crate::catalog::FakeCatalog::default()).expect("plans");
        assert!(plan.stages.iter().all(|s| s.name != "s"), "s is fused");
        let t = stage_named(&plan, "t");
        let op = &t.kind;
        assert_eq!(
            op.describe(),
            "uniform size [3, 1] then sobel axis 0 (fused: s and this stage run in one pass)"
        );
        assert_eq!(op.halo(), Some(vec![(2, 2), (1, 1)]));
        assert!(plan.stages.iter().any(|s| s.name == "t.halo"));
    }

    #[test]
    fn filters_a_whole_array_with_its_edges_by_the_mode() {
        // uniform size 3, mode nearest, on [1, 2, 4]: scipy gives
        // [(1+1+2)/3, (1+2+4)/3, (2+4+4)/3].
        let k = Filter::new(
            vec![Pass {
                axis: 0,
                weights: vec![1.0 / 3.0; 3],
                origin: 0,
                mode: filters::Boundary::Nearest,
            }],
            vec![],
            vec![],
            vec![3],
        );
        let out = apply_map(&k, &[array_f64(&[3], &[1.0, 2.0, 4.0])]);
        let got = out.to_f64();
        let want = [4.0 / 3.0, 7.0 / 3.0, 10.0 / 3.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
    }
}
