//! Reductions over chosen axes against numpy (fixtures made by
//! scripts/fixtures/make_reduce_axes_fixtures.py), fed as chunks of several
//! chunkings in forward and reverse order: the result must not depend on
//! either.

use blockflow_core::ArrayData;
use blockflow_kernels::reduce::{AxisReducer, Reduction};
use ndarray::{ArrayD, IxDyn, SliceInfoElem};
use serde_json::Value;

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|s| s.as_str().expect("str").parse().expect("f64"))
        .collect()
}

fn same(got: f64, want: f64) -> bool {
    if got.is_nan() || want.is_nan() {
        return got.is_nan() && want.is_nan();
    }
    (got - want).abs() <= 1e-12 * want.abs().max(1.0)
}

/// The chunks of `x` in a grid of `chunk`, with their origins.
fn chunks(x: &ArrayD<f64>, chunk: &[usize]) -> Vec<(ArrayData, Vec<u64>)> {
    let shape = x.shape().to_vec();
    let grid: Vec<usize> = shape
        .iter()
        .zip(chunk)
        .map(|(n, c)| n.div_ceil(*c))
        .collect();
    let mut out = Vec::new();
    let total: usize = grid.iter().product();
    for k in 0..total {
        let mut rem = k;
        let mut idx = vec![0; shape.len()];
        for ax in (0..shape.len()).rev() {
            idx[ax] = rem % grid[ax];
            rem /= grid[ax];
        }
        let info: Vec<SliceInfoElem> = (0..shape.len())
            .map(|ax| SliceInfoElem::Slice {
                start: (idx[ax] * chunk[ax]) as isize,
                end: Some(((idx[ax] + 1) * chunk[ax]).min(shape[ax]) as isize),
                step: 1,
            })
            .collect();
        let info = ndarray::SliceInfo::<_, IxDyn, IxDyn>::try_from(info).expect("slice");
        let origin = (0..shape.len())
            .map(|ax| (idx[ax] * chunk[ax]) as u64)
            .collect();
        out.push((ArrayData::F64(x.slice(info).to_owned()), origin));
    }
    out
}

#[test]
fn axis_reductions_match_numpy_in_any_chunking_and_order() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reduce_axes_numpy.json"
    ))
    .expect("fixture");
    let fx: Value = serde_json::from_str(&text).expect("json");
    let shape: Vec<usize> = fx["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|v| v.as_u64().expect("n") as usize)
        .collect();
    let shape64: Vec<u64> = shape.iter().map(|&n| n as u64).collect();
    let cases = fx["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 342);
    let mut checked = 0;
    for case in cases {
        let name = case["input"].as_str().expect("input");
        let x = ArrayD::from_shape_vec(IxDyn(&shape), floats(&fx["inputs"][name])).expect("x");
        let op = Reduction::parse(case["op"].as_str().expect("op")).expect("op");
        let axes: Vec<usize> = case["axes"]
            .as_array()
            .expect("axes")
            .iter()
            .map(|v| v.as_u64().expect("ax") as usize)
            .collect();
        let ddof = case["ddof"].as_u64().expect("ddof") as u32;
        let want = floats(&case["values"]);
        let want_shape: Vec<u64> = case["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|v| v.as_u64().expect("n"))
            .collect();
        for chunk in [[7, 6, 5], [3, 2, 5], [2, 4, 3], [1, 1, 1]] {
            for reverse in [false, true] {
                let mut r = AxisReducer::new(op, &shape64, &axes);
                assert_eq!(r.out_shape(false), want_shape);
                let mut parts = chunks(&x, &chunk);
                if reverse {
                    parts.reverse();
                }
                for (data, origin) in &parts {
                    r.add(data, origin);
                }
                let got = r.finish(ddof);
                assert_eq!(got.len(), want.len());
                for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        same(*g, *w),
                        "{name} {op:?} axes {axes:?} ddof {ddof} chunks {chunk:?} reverse {reverse}: element {k}: {g} vs numpy {w}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 342 * 8);
}

#[test]
fn keepdims_keeps_reduced_axes_as_one() {
    let r = AxisReducer::new(Reduction::Mean, &[844, 256, 256, 3], &[1, 2]);
    assert_eq!(r.out_shape(false), vec![844, 3]);
    assert_eq!(r.out_shape(true), vec![844, 1, 1, 3]);
}
