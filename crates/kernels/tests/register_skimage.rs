//! Phase cross-correlation against scikit-image (fixtures made by
//! scripts/fixtures/make_register_fixtures.py from `blockflow generate
//! timeseries` volumes): the same shift to the pixel without upsampling,
//! and to 1e-9 with upsample_factor 20 (the same 1/20 grid point).

use blockflow_kernels::register::{phase_cross_correlation, RegisterError};
use ndarray::{ArrayD, IxDyn};
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
    assert_eq!(cases.len(), 6);
    for case in cases {
        let t = case["t"].as_u64().expect("t") as usize;
        let up = case["upsample"].as_u64().expect("up") as usize;
        let want: Vec<f64> = case["shift"]
            .as_array()
            .expect("shift")
            .iter()
            .map(|v| v.as_f64().expect("f"))
            .collect();
        let got = phase_cross_correlation(vols[0].view(), vols[t].view(), up).expect("register");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-9,
                "timepoint {t}, upsample {up}: {got:?} vs skimage {want:?}"
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
