//! Filters, Gaussian kernels, eigenvalues and seed 000's structure tensor
//! against scipy/numpy (fixtures made by scripts/fixtures/make_filter_fixtures.py).
//! float64 within 1e-12 relative, float32 within 1e-5.

use blockflow_kernels::filters::{self, Boundary};
use blockflow_kernels::tensor::{self, Gradient, TensorParams};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use serde_json::Value;

fn fixture() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/filters_scipy.json"
    ))
    .expect("fixture");
    serde_json::from_str(&text).expect("json")
}

fn values(v: &Value) -> (Vec<f64>, Vec<usize>, String) {
    let shape = v["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|s| s.as_u64().expect("dim") as usize)
        .collect();
    let vals = v["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|s| s.as_str().expect("str").parse::<f64>().expect("f64"))
        .collect();
    (vals, shape, v["dtype"].as_str().expect("dtype").to_string())
}

fn close(got: &[f64], want: &[f64], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(
        0.0f64,
        |m, v| if v.is_finite() { m.max(v.abs()) } else { m },
    );
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan())
            || (g - w).abs() <= rel * w.abs().max(scale * 1e-3).max(1e-300);
        assert!(ok, "{what}: element {k}: got {g}, want {w}");
    }
}

fn mode(args: &Value) -> Boundary {
    Boundary::parse(
        args["mode"].as_str().expect("mode"),
        args["cval"].as_f64().unwrap_or(0.0),
    )
    .expect("known mode")
}

#[test]
fn filters_match_scipy_in_every_mode() {
    let fx = fixture();
    let (a, a_shape, _) = values(&fx["A"]);
    let (b, b_shape, _) = values(&fx["B"]);
    let a64 = ArrayD::from_shape_vec(IxDyn(&a_shape), a).expect("A");
    let b32 =
        ArrayD::from_shape_vec(IxDyn(&b_shape), b.iter().map(|&v| v as f32).collect()).expect("B");
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() > 300);
    for case in cases {
        let f = case["fn"].as_str().expect("fn");
        let args = &case["args"];
        let (want, want_shape, dtype) = values(&case["result"]);
        let what = format!("{f} {args}");
        let got: ArrayD<f64> = if case["input"] == "A" {
            filter_f64(f, args, a64.view())
        } else {
            filter_f32(f, args, b32.view()).mapv(|v| v as f64)
        };
        assert_eq!(got.shape(), &want_shape[..], "{what}: shape");
        let rel = if dtype == "float32" { 1e-5 } else { 1e-12 };
        close(got.as_slice().expect("standard"), &want, rel, &what);
    }
}

fn f64_list(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|v| v.as_f64().expect("f"))
        .collect()
}

fn usize_list(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|v| v.as_u64().expect("u") as usize)
        .collect()
}

/// The fixture's filter `f` with `args` on float64 input A.
fn filter_f64(f: &str, args: &Value, x: ArrayViewD<'_, f64>) -> ArrayD<f64> {
    let axis = args["axis"].as_u64().unwrap_or(0) as usize;
    let origin = args["origin"].as_i64().unwrap_or(0) as isize;
    match f {
        "correlate1d" | "convolve1d" => {
            let w = f64_list(&args["weights"]);
            if f == "correlate1d" {
                filters::correlate1d(x, &w, axis, mode(args), origin)
            } else {
                filters::convolve1d(x, &w, axis, mode(args), origin)
            }
        }
        "gaussian_filter1d" => filters::gaussian_filter1d(
            x,
            args["sigma"].as_f64().expect("s"),
            axis,
            args["order"].as_u64().expect("o") as usize,
            mode(args),
            args["truncate"].as_f64().expect("t"),
            args["radius"].as_u64().map(|r| r as usize),
        ),
        "gaussian_filter" => filters::gaussian_filter(
            x,
            &f64_list(&args["sigma"]),
            &usize_list(&args["order"]),
            mode(args),
            args["truncate"].as_f64().expect("t"),
            None,
        ),
        "uniform_filter1d" => filters::uniform_filter1d(
            x,
            args["size"].as_u64().expect("n") as usize,
            axis,
            mode(args),
            origin,
        ),
        "uniform_filter" => filters::uniform_filter(x, &usize_list(&args["size"]), mode(args)),
        "sobel" => filters::sobel(x, axis, mode(args)),
        other => panic!("unknown fn {other}"),
    }
}

/// The fixture's filter `f` with `args` on float32 input B.
fn filter_f32(f: &str, args: &Value, x: ArrayViewD<'_, f32>) -> ArrayD<f32> {
    let axis = args["axis"].as_u64().unwrap_or(0) as usize;
    match f {
        "gaussian_filter1d" => filters::gaussian_filter1d(
            x,
            args["sigma"].as_f64().expect("s"),
            axis,
            args["order"].as_u64().expect("o") as usize,
            mode(args),
            args["truncate"].as_f64().expect("t"),
            args["radius"].as_u64().map(|r| r as usize),
        ),
        "gaussian_filter" => filters::gaussian_filter(
            x,
            &f64_list(&args["sigma"]),
            &usize_list(&args["order"]),
            mode(args),
            args["truncate"].as_f64().expect("t"),
            None,
        ),
        other => panic!("unknown fn {other} on B"),
    }
}

#[test]
fn gaussian_kernels_and_eigenvalues_match() {
    let fx = fixture();
    for k in fx["kernels"].as_array().expect("kernels") {
        let (want, _, _) = values(&k["result"]);
        let got = filters::gaussian_kernel1d(
            k["sigma"].as_f64().expect("s"),
            k["order"].as_u64().expect("o") as usize,
            k["radius"].as_u64().expect("r") as usize,
        );
        close(&got, &want, 1e-12, &format!("kernel {k}"));
    }
    let (m2, _, _) = values(&fx["eigh"]["m2"]);
    let (w2, _, _) = values(&fx["eigh"]["w2"]);
    for (m, w) in m2.chunks(4).zip(w2.chunks(2)) {
        close(&tensor::eigh2(m[0], m[1], m[3]), w, 1e-12, "eigh2");
    }
    let (m3, _, _) = values(&fx["eigh"]["m3"]);
    let (w3, _, _) = values(&fx["eigh"]["w3"]);
    for (m, w) in m3.chunks(9).zip(w3.chunks(3)) {
        let mat = [[m[0], m[1], m[2]], [m[3], m[4], m[5]], [m[6], m[7], m[8]]];
        close(&tensor::eigh3(mat).0, w, 1e-12, "eigh3");
    }
}

#[test]
fn seed_000_structure_tensor_features_and_blocks() {
    let fx = fixture();
    let seed = &fx["seed000"];
    let (img, shape, _) = values(&seed["image"]);
    let (h, w, c) = (shape[0], shape[1], shape[2]);
    for (method, gradient) in [
        (
            "gaussian",
            Gradient::GaussianDerivative {
                sigma: 1.5,
                radius: 10,
            },
        ),
        ("fd", Gradient::FiniteDifference),
    ] {
        let p = TensorParams {
            gradient,
            ..TensorParams::seed(Boundary::Zero)
        };
        let s = tensor::structure_tensor(&img, &shape, &p);
        for (k, name) in ["sxx", "sxy", "syy"].iter().enumerate() {
            let (want, _, _) = values(&seed[method][name]);
            close(&s[k], &want, 1e-9, &format!("{method} {name}"));
        }
        let feat = tensor::features(&s, h, w, c);
        let (want, _, _) = values(&seed[method]["features"]);
        close(&feat, &want, 1e-9, &format!("{method} features"));
        // The NaN frame is the same pixels.
        let nan_got: Vec<bool> = feat.iter().map(|v| v.is_nan()).collect();
        let nan_want: Vec<bool> = want.iter().map(|v| v.is_nan()).collect();
        assert_eq!(nan_got, nan_want, "{method}: NaN mask");
        assert!(
            nan_got[0] && !nan_got[20 * w + 20],
            "frame NaN, inside finite"
        );
        // Blocks of interest: any feature above the threshold (NaN is not).
        let thr = seed[method]["threshold"].as_f64().expect("thr");
        let [bh, bw] = [12usize, 19usize];
        let mut blocks = Vec::new();
        for by in 0..h.div_ceil(bh) {
            for bx in 0..w.div_ceil(bw) {
                let hit = (by * bh..((by + 1) * bh).min(h))
                    .any(|y| (bx * bw..((bx + 1) * bw).min(w)).any(|x| feat[y * w + x] > thr));
                if hit {
                    blocks.push(serde_json::json!([by, bx]));
                }
            }
        }
        assert_eq!(
            Value::Array(blocks),
            seed[method]["blocks"],
            "{method}: blocks of interest"
        );
    }
}

#[test]
fn structure_tensor_on_blocks_tiles_to_the_whole_image() {
    let fx = fixture();
    let (img, shape, _) = values(&fx["seed000"]["image"]);
    let (h, w, c) = (shape[0], shape[1], shape[2]);
    for mode in [Boundary::Zero, Boundary::Reflect, Boundary::Nearest] {
        for gradient in [
            Gradient::GaussianDerivative {
                sigma: 1.5,
                radius: 10,
            },
            Gradient::FiniteDifference,
        ] {
            let p = TensorParams {
                gradient,
                ..TensorParams::seed(mode)
            };
            let whole = tensor::features(&tensor::structure_tensor(&img, &shape, &p), h, w, c);
            let (hb, ha) = p.halo();
            for (ch, cw) in [(7usize, 9usize), (48, 57), (20, 5)] {
                for y0 in (0..h).step_by(ch) {
                    for x0 in (0..w).step_by(cw) {
                        let (y1, x1) = ((y0 + ch).min(h), (x0 + cw).min(w));
                        let lo = [y0 as isize - hb as isize, x0 as isize - hb as isize];
                        let (bh, bw) = (y1 - y0 + hb + ha, x1 - x0 + hb + ha);
                        let mut block = vec![999.0; bh * bw * c];
                        for by in 0..bh {
                            for bx in 0..bw {
                                let (gy, gx) = (lo[0] + by as isize, lo[1] + bx as isize);
                                if gy >= 0 && gx >= 0 && (gy as usize) < h && (gx as usize) < w {
                                    for k in 0..c {
                                        block[(by * bw + bx) * c + k] =
                                            img[((gy as usize) * w + gx as usize) * c + k];
                                    }
                                }
                            }
                        }
                        let geom = blockflow_kernels::filters::Geometry {
                            origin: vec![lo[0], lo[1], 0],
                            array: shape.clone(),
                        };
                        let (s, core) =
                            tensor::structure_tensor_block(&block, &[bh, bw, c], &geom, &p)
                                .expect("block");
                        assert_eq!(core, vec![y1 - y0, x1 - x0, c]);
                        let f = tensor::features(&s, y1 - y0, x1 - x0, c);
                        for y in y0..y1 {
                            for x in x0..x1 {
                                let (g, wv) =
                                    (f[(y - y0) * (x1 - x0) + (x - x0)], whole[y * w + x]);
                                assert!((g.is_nan() && wv.is_nan()) || (g - wv).abs() <= 1e-12 * wv.abs().max(1e-12), "{mode:?} {gradient:?} chunk {ch}x{cw} at ({y},{x}): {g} vs {wv}");
                            }
                        }
                    }
                }
            }
        }
    }
}
