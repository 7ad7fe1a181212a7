//! Phase cross-correlation against scikit-image (fixtures made by
//! scripts/fixtures/make_register_fixtures.py from `blockflow generate
//! timeseries` volumes, whole and cropped to odd and even axes, in float64
//! and float32): the same shift to the pixel without upsampling, and the
//! same 1/20 grid point with upsample_factor 20 (to 1e-9 in float64; to
//! float32's rounding of it, 1e-6, in float32).

use blockflow_kernels::register::{phase_cross_correlation, RegisterError};
use ndarray::{s, ArrayD, IxDyn};
use serde_json::Value;

#[test]
fn shifts_match_skimage() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/register_skimage.json"
    ))
    .expect("fixture");
    let fx: Value = serde_json::from_str(&text).expect("json");
    let n = fx["size"].as_u64().expect("size") as usize;
    let vols: Vec<ArrayD<f64>> = fx["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| {
            let vals: Vec<f64> = v
                .as_array()
                .expect("list")
                .iter()
                .map(|s| s.as_str().expect("str").parse().expect("f64"))
                .collect();
            ArrayD::from_shape_vec(IxDyn(&[n, n, n]), vals).expect("shape")
        })
        .collect();
    let cases = fx["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 24);
    for case in cases {
        let t = case["t"].as_u64().expect("t") as usize;
        let up = case["upsample"].as_u64().expect("up") as usize;
        let dtype = case["dtype"].as_str().expect("dtype");
        let want: Vec<f64> = case["shift"]
            .as_array()
            .expect("shift")
            .iter()
            .map(|v| v.as_f64().expect("f"))
            .collect();
        let crop = |v: &ArrayD<f64>| -> ArrayD<f64> {
            match case["crop"].as_array() {
                Some(c) => {
                    let c: Vec<usize> = c.iter().map(|v| v.as_u64().expect("n") as usize).collect();
                    v.slice(s![..c[0], ..c[1], ..c[2]]).to_owned().into_dyn()
                }
                None => v.clone(),
            }
        };
        let (a, b) = (crop(&vols[0]), crop(&vols[t]));
        // scikit-image's float32 shifts are the 1/20 grid's values rounded
        // to float32; blockflow returns them in float64.
        let (got, tol) = if dtype == "float32" {
            let (a, b) = (a.mapv(|v| v as f32), b.mapv(|v| v as f32));
            (phase_cross_correlation(a.view(), b.view(), up), 1e-6)
        } else {
            (phase_cross_correlation(a.view(), b.view(), up), 1e-9)
        };
        let got = got.expect("register");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= tol,
                "{dtype} {:?} timepoint {t}, upsample {up}: {got:?} vs skimage {want:?}",
                case["crop"]
            );
        }
    }
}

#[test]
fn a_known_integer_shift_is_found_exactly() {
    let n = 12;
    let a = ArrayD::from_shape_fn(IxDyn(&[n, n]), |i| {
        ((i[0] * 7 + i[1] * 3) % 11) as f64 + (i[0] as f64).sin()
    });
    // b is a rolled by (2, -3): registering b with a gives (-2, 3).
    let b = ArrayD::from_shape_fn(IxDyn(&[n, n]), |i| a[[(i[0] + n - 2) % n, (i[1] + 3) % n]]);
    assert_eq!(
        phase_cross_correlation(a.view(), b.view(), 1).expect("r"),
        vec![-2.0, 3.0]
    );
    assert_eq!(
        phase_cross_correlation(a.view(), b.view(), 10).expect("r"),
        vec![-2.0, 3.0]
    );
    let c = ArrayD::from_elem(IxDyn(&[n, n + 1]), 0.0);
    assert!(matches!(
        phase_cross_correlation(a.view(), c.view(), 1),
        Err(RegisterError::Shape(..))
    ));
}
