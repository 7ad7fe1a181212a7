//! Seed 002's batch pipeline end to end against numpy, scipy and
//! scikit-image (tests/fixtures/seed002_reference/, made by
//! scripts/fixtures/seed002_reference.py from the same generated input):
//! configs/timeseries.toml as shipped, its paths redirected, on 6
//! timepoints of 24^3 (seed 1). The median-filtered stack (HDF5) exact; the
//! registration shifts within 1e-6; the zscore (Zarr, float64 or float32)
//! within 1e-5 absolute.

mod common;

use std::path::Path;

use blockflow_core::{ArrayData, Region};
use common::*;
use serde_json::Value;

/// A raw little-endian float64 file of the fixture.
fn read_f64s(path: &Path) -> Vec<f64> {
    let bytes = std::fs::read(path).expect("read fixture array");
    assert_eq!(bytes.len() % 8, 0, "{}: not whole float64s", path.display());
    bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|n| n.as_u64().expect("int") as usize)
        .collect()
}

/// The multi-index of flat (C order) index `i` in `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (k, &n) in shape.iter().enumerate().rev() {
        idx[k] = i % n;
        i /= n;
    }
    idx
}

/// The element of `got` farthest from `want` (a NaN or infinite difference
/// counts as infinitely far): (flat index, |difference|), and how many
/// elements differ by more than `tol`.
fn worst(got: &[f64], want: &[f64], tol: f64) -> (usize, f64, usize) {
    let mut at = (0, 0.0);
    let mut over = 0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        let d = if d.is_finite() { d } else { f64::INFINITY };
        if d > tol {
            over += 1;
        }
        if d > at.1 {
            at = (i, d);
        }
    }
    (at.0, at.1, over)
}

/// Asserts `got` equals `want` (shape `shape`) within `tol`, naming the
/// worst element, both values and the difference; returns the largest
/// difference.
fn assert_close(what: &str, got: &[f64], want: &[f64], shape: &[usize], tol: f64) -> f64 {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} elements, the reference has {}",
        got.len(),
        want.len()
    );
    let (i, d, over) = worst(got, want, tol);
    assert!(
        d <= tol,
        "{what}: {over} of {} elements differ by more than {tol}; the worst, \
         element {:?} (flat {i}), is {} against the reference {} (difference {d:e})",
        got.len(),
        unravel(i, shape),
        got[i],
        want[i]
    );
    d
}

#[test]
fn timeseries_workflow_matches_scipy_and_skimage() {
    let fxdir = root().join("tests/fixtures/seed002_reference");
    let meta: Value = read_json(fxdir.join("meta.json"));
    let g = &meta["generator"];
    let (count, size, seed) = (
        g["count"].as_u64().expect("count") as usize,
        g["size"].as_u64().expect("size") as usize,
        g["seed"].as_u64().expect("seed"),
    );
    let dataset = g["dataset"].as_str().expect("dataset");
    let shape = vec![count, size, size, size];
    let zshape = usizes(&meta["arrays"]["zscore"]["shape"]);
    let mshape = usizes(&meta["arrays"]["median"]["shape"]);
    assert_eq!(zshape, shape, "fixture zscore shape");
    assert_eq!(mshape, shape, "fixture median shape");
    let want_z = read_f64s(&fxdir.join("zscore.bin"));
    let want_m = read_f64s(&fxdir.join("median.bin"));
    let want_shifts: Value = read_json(fxdir.join("shifts.json"));

    let dir = tempfile::tempdir().expect("tmp");
    let t = dir.path();
    let tp = t.join("tp");
    generate("timeseries", &tp, count, size, seed);
    let p = |f: &str| t.join(f).display().to_string();
    let sets = vec![
        format!("volumes.path={}/t_*.h5", tp.display()),
        format!("volumes.dataset={dataset}"),
        format!("pipeline.report={}", p("report.json")),
        format!("pipeline.scratch={}", t.display()),
        format!("zscore_zarr.path={}", p("zscore.zarr")),
        format!("registered_zarr.path={}", p("registered.zarr")),
        format!("median_h5.path={}", p("median.h5")),
        format!("shifts_json.path={}", p("shifts.json")),
    ];
    let (code, _, err) = run_with_sets(&root().join("configs/timeseries.toml"), &sets);
    assert_eq!(code, 0, "{err}");

    // The median-filtered stack, exact.
    let h5 = blockflow_io::hdf5::Hdf5Reader::open(&t.join("median.h5"), "data")
        .expect("open the median HDF5");
    assert_eq!(
        h5.info.shape,
        shape.iter().map(|&n| n as u64).collect::<Vec<_>>()
    );
    let med = h5
        .read(&Region::new(vec![0; 4], h5.info.shape.clone()))
        .expect("read the median HDF5");
    assert!(matches!(med, ArrayData::F64(_)), "median {:?}", med.dtype());
    let med: Vec<f64> = med.to_f64().iter().copied().collect();
    let med_diff = assert_close("median stack (exact)", &med, &want_m, &shape, 0.0);

    // The shifts, one (z, y, x) vector per timepoint.
    let got: Value = read_json(t.join("shifts.json"));
    let (gs, ws) = (
        got["shifts"].as_array().expect("shifts"),
        want_shifts["shifts"].as_array().expect("shifts"),
    );
    assert_eq!(gs.len(), count, "{got}");
    assert_eq!(ws.len(), count, "{want_shifts}");
    let mut shift_diff: f64 = 0.0;
    for (k, (g, w)) in gs.iter().zip(ws).enumerate() {
        for ax in 0..3 {
            let (g, w) = (
                g[ax].as_f64().unwrap_or(f64::NAN),
                w[ax].as_f64().expect("f64"),
            );
            let d = (g - w).abs();
            assert!(
                d <= 1e-6,
                "shift of timepoint {k}, axis {ax}: {g} against skimage's {w} (difference {d:e})"
            );
            shift_diff = shift_diff.max(d);
        }
    }

    // The zscore along time, whatever float type the config writes.
    let z = read_all(&t.join("zscore.zarr"));
    assert_eq!(z.shape(), shape.as_slice(), "zscore shape");
    let zdtype = z.dtype();
    let z: Vec<f64> = z.to_f64().iter().copied().collect();
    let z_diff = assert_close("zscore", &z, &want_z, &shape, 1e-5);

    println!(
        "seed 002 against scipy/skimage: shifts max |diff| {shift_diff:e}, \
         median max |diff| {med_diff:e}, zscore ({zdtype:?}) max |diff| {z_diff:e}"
    );
}
