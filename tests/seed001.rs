//! Seed 001 end to end against numpy and scikit-image
//! (tests/fixtures/cells_numpy.json, made by
//! scripts/fixtures/make_cells_fixtures.py from the same generated stack):
//! configs/cells.toml as shipped, its paths redirected, on 16 images of
//! 16 x 16 x 3. Integer results and rescaled images exact; float statistics
//! within 1e-12 relative; singular values and modes within 1e-9 s0, the
//! modes with dask's signs (every one of them checked).

mod common;

use blockflow_core::ArrayData;
use common::*;
use serde_json::Value;

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|s| s.as_str().expect("str").parse().expect("f64"))
        .collect()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|s| s.as_i64().expect("int"))
        .collect()
}

fn close(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= tol * want.abs().max(1.0)
}

fn f64s(a: ArrayData) -> Vec<f64> {
    a.to_f64().iter().copied().collect()
}

#[test]
fn cells_workflow_matches_numpy_and_skimage() {
    let fx: Value = read_json(root().join("tests/fixtures/cells_numpy.json"));
    let (n, size, seed, k) = (
        fx["n"].as_u64().expect("n"),
        fx["size"].as_u64().expect("size"),
        fx["seed"].as_u64().expect("seed"),
        fx["k"].as_u64().expect("k"),
    );
    let dir = tempfile::tempdir().expect("tmp");
    let t = dir.path();
    let stack = t.join("stack");
    generate("cells", &stack, n as usize, size as usize, seed);
    let p = |f: &str| t.join(f).display().to_string();
    let sets = vec![
        format!("cells.path={}/*.png", stack.display()),
        format!("pipeline.report={}", p("r.json")),
        format!("pipeline.scratch={}", t.display()),
        format!("mean_image_zarr.path={}", p("mean.zarr")),
        format!("mean_image_png.path={}", p("mean.png")),
        format!("stats.path={}", p("stats.csv")),
        format!("rescaled_zarr.path={}", p("rescaled.zarr")),
        format!("modes_zarr.path={}", p("modes.zarr")),
        format!("first_mode_png.path={}", p("mode0.png")),
        format!("second_mode_png.path={}", p("mode1.png")),
        format!("third_mode_png.path={}", p("mode2.png")),
        format!("summary.path={}", p("summary.json")),
        format!("modes.k={k}"),
        // The third image from the end, counted as numpy counts it.
        "one_image.index=\"-3, :, :, :\"".to_string(),
    ];
    let (code, _, err) = run_with_sets(&root().join("configs/cells.toml"), &sets);
    assert_eq!(code, 0, "{err}");

    // The mean image.
    let mean = f64s(read_all(&t.join("mean.zarr")));
    for (g, w) in mean.iter().zip(floats(&fx["mean_image"])) {
        assert!(close(*g, w, 1e-12), "mean image {g} vs {w}");
    }
    // Per-image statistics, from the CSV.
    let csv = std::fs::read_to_string(t.join("stats.csv")).expect("csv");
    let mut lines = csv.lines();
    let head: Vec<&str> = lines.next().expect("header").split(',').collect();
    assert_eq!(head[0], "index");
    assert_eq!(head[1], "channel_mean_0");
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().expect("number")).collect())
        .collect();
    assert_eq!(rows.len() as u64, n);
    let (cm, cx, cn, im) = (
        floats(&fx["channel_mean"]),
        ints(&fx["channel_max"]),
        ints(&fx["channel_min"]),
        ints(&fx["image_max"]),
    );
    for (i, r) in rows.iter().enumerate() {
        for c in 0..3 {
            assert!(
                close(r[1 + c], cm[i * 3 + c], 1e-12),
                "image {i} channel {c} mean"
            );
            assert_eq!(r[4 + c] as i64, cx[i * 3 + c], "image {i} channel {c} max");
            assert_eq!(r[7 + c] as i64, cn[i * 3 + c], "image {i} channel {c} min");
        }
        assert_eq!(r[10] as i64, im[i], "image {i} max");
        assert_eq!(r[11] == 1.0, cm[i * 3] < cm[i * 3 + 1], "image {i} green");
    }
    // The green count and the singular values (the modes' norms).
    let summary: Value = read_json(t.join("summary.json"));
    assert_eq!(summary["green_count"], fx["green_count"]);
    assert_eq!(summary["one_image_max"].as_i64(), Some(im[n as usize - 3]));
    // Each key says what it is, the negative index resolved.
    assert_eq!(
        summary["about"]["one_image_max"],
        format!(
            "max of cells[{}, :, :, :] (index -3 from the end of axis 0, length {n})",
            n - 3
        )
    );
    assert_eq!(
        summary["about"]["green_count"],
        "sum of (channel_mean[..., 0] < channel_mean[..., 1])"
    );
    assert_eq!(summary["about"]["top10"], "sqrt(sv_sum)");
    let s = floats(&fx["singular_values"]);
    let s0 = s[0];
    let top: Vec<f64> = summary["top10"]
        .as_array()
        .expect("top")
        .iter()
        .map(|v| v.as_f64().expect("f"))
        .collect();
    assert_eq!(top.len() as u64, k);
    for (i, (g, w)) in top.iter().zip(&s).enumerate() {
        assert!(
            (g - w).abs() <= 1e-9 * s0,
            "singular value {i}: {g} vs numpy {w}"
        );
    }
    // Rescaled images, exact.
    let ArrayData::U8(mut res) = read_all(&t.join("rescaled.zarr")) else {
        panic!("rescaled uint8")
    };
    // An OME-Zarr image: level 0 stored (image, c, y, x); numpy's order is
    // (image, y, x, c).
    assert_eq!(res.shape()[1], 3);
    res.swap_axes(1, 2);
    res.swap_axes(2, 3);
    let want = ints(&fx["rescaled"]);
    assert!(
        res.iter().zip(&want).all(|(g, w)| *g as i64 == *w),
        "rescaled images differ from skimage"
    );
    // Every mode u_i s_i with dask's signs (svd_flip(u, v,
    // u_based_decision=True): each mode's sum non-negative), value by value
    // within 1e-9 s0: no sign is fitted. Each sign is also checked on its
    // own where it means something (s_i > 1e-9 s0; the last mode of the
    // centred data is ~0 and its direction arbitrary): the mode's sum has
    // numpy's sign and, divided by s_i, numpy's sum of u's column.
    let modes = f64s(read_all(&t.join("modes.zarr")));
    let want = floats(&fx["modes"]);
    let usums = floats(&fx["u_col_sums"]);
    assert_eq!(modes.len(), want.len());
    let per = want.len() / k as usize;
    let mut signed = 0;
    for m in 0..k as usize {
        let (g, w) = (
            &modes[m * per..(m + 1) * per],
            &want[m * per..(m + 1) * per],
        );
        if s[m] > 1e-9 * s0 {
            let sum: f64 = g.iter().sum();
            assert!(
                sum > 0.0 && (sum / s[m] - usums[m]).abs() <= 1e-9 * usums[m].abs().max(1.0),
                "mode {m}: sum {sum} (/ s = {}) vs numpy's u sum {} with dask's flip",
                sum / s[m],
                usums[m]
            );
            signed += 1;
        }
        let worst = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst <= 1e-9 * s0,
            "mode {m} differs from numpy's with dask's signs by {worst}"
        );
    }
    assert_eq!(signed, k as usize - 1, "every mode but the null one signed");

    // The first 4 modes alone come from the Gram matrix (all well above
    // its rounding), to the same tolerance; all 16 (the null one among
    // them) came from TSQR over the kept bands, which auto falls back to.
    let mut four = sets.clone();
    four.retain(|s| !s.starts_with("modes.k=") && !s.starts_with("modes_zarr.path="));
    four.push("modes.k=4".into());
    four.push(format!("modes_zarr.path={}", p("modes4.zarr")));
    let cfg = root().join("configs/cells.toml");
    let mut args = vec!["plan".to_string(), cfg.display().to_string()];
    for s in &four {
        args.extend(["--set".to_string(), s.clone()]);
    }
    let (code, out, err) = blockflow(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("the Gram matrix over the bands"), "{out}");
    let (code, _, err) = run_with_sets(&cfg, &four);
    assert_eq!(code, 0, "{err}");
    let modes4 = f64s(read_all(&t.join("modes4.zarr")));
    assert_eq!(modes4.len(), 4 * per);
    let worst = modes4
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= 1e-9 * s0,
        "Gram modes differ from numpy's by {worst}"
    );

    // Every singular value, the centred data's last one ~0 included.
    let cfg = write_config(
        t,
        "values.toml",
        &format!(
            r#"
[stage.cells]
kind = "read-images"
path = "{}/*.png"

[stage.bands]
kind = "rechunk"
inputs = ["cells"]
chunks = [{n}, 3, {size}, 3]
route = "disk"

[stage.s]
kind = "pca"
inputs = ["bands"]
k = {n}
output = "values"

[stage.w]
kind = "write-json"
inputs = ["s"]
path = "values.json"
"#,
            stack.display()
        ),
    );
    let (code, _, err) = blockflow(&["run", "-q", cfg.to_str().expect("u")]);
    assert_eq!(code, 0, "{err}");
    let v: Value = read_json(t.join("values.json"));
    let got: Vec<f64> = v["s"]
        .as_array()
        .expect("s")
        .iter()
        .map(|x| x.as_f64().unwrap_or(f64::NAN))
        .collect();
    assert_eq!(got.len(), s.len());
    for (i, (g, w)) in got.iter().zip(&s).enumerate() {
        assert!(
            (g - w).abs() <= 1e-9 * s0,
            "singular value {i}: {g} vs numpy {w}"
        );
    }
}

/// Bad image stacks are clear errors that name the file.
#[test]
fn bad_images_are_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = dir.path();
    generate("cells", t, 4, 16, 1);
    let cfg = write_config(
        t,
        "p.toml",
        r#"
[stage.cells]
kind = "read-images"
path = "cell_*.png"

[stage.m]
kind = "reduce"
inputs = ["cells"]
op = "mean"
axis = 0

[stage.w]
kind = "write-zarr"
inputs = ["m"]
path = "m.zarr"
"#,
    );
    // An image of another shape.
    let small = blockflow_core::ArrayData::U8(ndarray::ArrayD::zeros(ndarray::IxDyn(&[8, 8, 3])));
    blockflow_io::images::write_png(&t.join("cell_0002.png"), &small).expect("png");
    let (code, _, err) = blockflow(&["run", "-q", cfg.to_str().expect("u")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cell_0002.png") && err.contains("[8, 8, 3]"),
        "{err}"
    );
    // A file that does not decode.
    std::fs::write(t.join("cell_0002.png"), b"not a picture").expect("write");
    let (code, _, err) = blockflow(&["run", "-q", cfg.to_str().expect("u")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cell_0002.png"), "{err}");
    // No image at all.
    let cfg2 = std::fs::read_to_string(&cfg)
        .expect("cfg")
        .replace("cell_*.png", "nothing_*.png");
    let cfg2 = write_config(t, "q.toml", &cfg2);
    let (code, _, err) = blockflow(&["plan", cfg2.to_str().expect("u")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nothing_*.png"), "{err}");
}
