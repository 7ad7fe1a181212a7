//! rescale_intensity against scikit-image 0.26 (fixtures made by
//! scripts/fixtures/make_rescale_fixtures.py): every case exactly, dtype
//! and bits, including np.percentile's linear interpolation.

use blockflow_core::{ArrayData, DType};
use blockflow_kernels::rescale::{percentiles, rescale_intensity, InRange, NamedRange, OutRange};
use ndarray::{ArrayD, IxDyn};
use serde_json::Value;

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().expect("f64"),
        other => other.as_f64().expect("number"),
    }
}

fn decode(v: &Value) -> ArrayData {
    let dtype = DType::parse(v["dtype"].as_str().expect("dtype")).expect("known dtype");
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect();
    let values: Vec<f64> = v["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(num)
        .collect();
    let f64s = ArrayData::F64(ArrayD::from_shape_vec(IxDyn(&shape), values).expect("shape"));
    // Every fixture value is exact in float64, so a cast gives the array back.
    f64s.cast(dtype)
}

fn in_range(v: &Value) -> InRange {
    match v {
        Value::String(s) if s == "image" => InRange::Image,
        Value::String(s) if s == "dtype" => InRange::Dtype,
        Value::String(s) => InRange::Named(NamedRange::parse(s).expect("range name")),
        Value::Array(a) if a[0] == "percentiles" => InRange::Percentiles(num(&a[1]), num(&a[2])),
        Value::Array(a) => InRange::Values(num(&a[0]), num(&a[1])),
        other => panic!("in_range {other}"),
    }
}

fn out_range(v: &Value) -> OutRange {
    match v {
        Value::String(s) if s == "image" => OutRange::Image,
        Value::String(s) if s == "dtype" => OutRange::Dtype,
        Value::String(s) => OutRange::Named(NamedRange::parse(s).expect("range name")),
        Value::Array(a) => OutRange::Values(num(&a[0]), num(&a[1])),
        other => panic!("out_range {other}"),
    }
}

#[test]
fn rescale_matches_skimage_exactly() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rescale_skimage.json"
    ))
    .expect("fixture");
    let fx: Value = serde_json::from_str(&text).expect("json");
    let cases = fx["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 35);
    for case in cases {
        let name = case["image"].as_str().expect("image");
        let image = decode(&fx["images"][name]);
        let (ir, or) = (in_range(&case["in_range"]), out_range(&case["out_range"]));
        let what = format!("{name} in {ir:?} out {or:?}");
        if let (InRange::Percentiles(p, q), Some(want)) = (ir, case.get("percentiles")) {
            let got = percentiles(&image, p, q).expect("percentiles");
            let want = [num(&want[0]), num(&want[1])];
            assert_eq!(
                got.map(f64::to_bits),
                want.map(f64::to_bits),
                "{what}: {got:?} vs {want:?}"
            );
        }
        let want = decode(&case["out"]);
        let got = rescale_intensity(&image, &ir, &or).expect("rescale");
        assert_eq!(got.dtype(), want.dtype(), "{what}");
        assert_eq!(got.shape(), want.shape(), "{what}");
        let (g, w) = (got.to_f64(), want.to_f64());
        for (i, (a, b)) in g.iter().zip(w.iter()).enumerate() {
            assert!(
                a.to_bits() == b.to_bits(),
                "{what}: element {i}: {a} vs skimage {b}"
            );
        }
    }
}

#[test]
fn percentile_arguments_are_checked() {
    let image = ArrayData::U8(ArrayD::from_elem(IxDyn(&[2, 2]), 3u8));
    assert!(percentiles(&image, -1.0, 50.0).is_err());
    assert!(percentiles(&image, 1.0, 100.5).is_err());
    let empty = ArrayData::U8(ArrayD::from_elem(IxDyn(&[0, 2]), 3u8));
    assert!(rescale_intensity(&empty, &InRange::Image, &OutRange::Dtype).is_err());
    // A dtype in_range needs no statistic, so an empty image is fine.
    let out = rescale_intensity(&empty, &InRange::Dtype, &OutRange::Dtype).expect("empty");
    assert_eq!(out.shape(), &[0, 2]);
}
