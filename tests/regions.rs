//! The region contract (issue 12): any output region of a map stage,
//! computed directly from the stored input with `RegionRunner`, equals the
//! same region of a full streaming run. Seed 000's structure tensor (halo
//! across chunk borders) over a Zarr store, and seed 002's median over a
//! stack of HDF5 timepoints; a stage that needs the whole stream says so.

mod common;

use blockflow_core::Region;
use blockflow_runtime::region::RegionRunner;
use common::*;
use ndarray::{ArrayD, Slice};

/// `full[region]`.
fn cut(full: &ArrayD<f64>, region: &Region) -> ArrayD<f64> {
    full.slice_each_axis(|ax| {
        let i = ax.axis.index();
        let o = region.origin[i] as isize;
        Slice::from(o..o + region.shape[i] as isize)
    })
    .to_owned()
}

/// The largest difference relative to the largest magnitude.
fn rel_diff(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let scale = b.iter().fold(f64::MIN_POSITIVE, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

fn check(cfg: &std::path::Path, stage: &str, full: &ArrayD<f64>, regions: &[(Vec<u64>, Vec<u64>)]) {
    let plan = blockflow_runtime::load_plan(cfg, &[]).expect("plans");
    let mut runner = RegionRunner::new(&plan);
    let k = runner.stage(stage).expect("stage");
    for (origin, shape) in regions {
        let region = Region::new(origin.clone(), shape.clone());
        let got = runner
            .compute(k, &region)
            .unwrap_or_else(|e| panic!("region {region}: {e}"))
            .to_f64();
        let want = cut(full, &region);
        let d = rel_diff(&got, &want);
        assert!(
            d <= 1e-12,
            "{stage} region {region}: relative difference {d:e}"
        );
    }
}

#[test]
fn tensor_regions_from_the_store_match_the_full_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path().display();
    let img = write_config(
        tmp.path(),
        "img.toml",
        &format!(
            "[stage.img]\nkind = \"synthetic\"\npattern = \"survey\"\nshape = [230, 270, 3]\nchunks = [64, 64, 3]\n\
             [stage.out]\nkind = \"write-zarr\"\ninputs = [\"img\"]\npath = \"{d}/img.zarr\"\n"
        ),
    );
    let (code, _, err) = run_with_sets(&img, &[]);
    assert_eq!(code, 0, "{err}");
    // Seed 000's tensor, its parameters as configs/structure-tensor.toml.
    let cfg = write_config(
        tmp.path(),
        "tensor.toml",
        &format!(
            "[stage.img]\nkind = \"read-zarr\"\npath = \"{d}/img.zarr\"\n\
             [stage.tensor]\nkind = \"structure-tensor\"\ninputs = [\"img\"]\nsigma = 1.5\nradius = 10\n\
             window_sigma = 2.0\nwindow_radius = 10\nmode = \"reflect\"\n\
             [stage.features]\nkind = \"write-zarr\"\ninputs = [\"tensor\"]\npath = \"{d}/features.zarr\"\n"
        ),
    );
    let (code, _, err) = run_with_sets(&cfg, &[]);
    assert_eq!(code, 0, "{err}");
    let full = read_all(&tmp.path().join("features.zarr")).to_f64();
    assert_eq!(full.shape(), &[230, 270]);
    check(
        &cfg,
        "tensor",
        &full,
        &[
            // Across chunk borders, at the edges, one pixel, the whole array.
            (vec![37, 101], vec![114, 69]),
            (vec![0, 0], vec![20, 270]),
            (vec![229, 0], vec![1, 31]),
            (vec![128, 192], vec![1, 1]),
            (vec![0, 0], vec![230, 270]),
        ],
    );
}

#[test]
fn median_regions_from_the_stack_match_the_full_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path().display();
    generate("timeseries", &tmp.path().join("volumes"), 4, 20, 3);
    let cfg = write_config(
        tmp.path(),
        "median.toml",
        &format!(
            "[stage.volumes]\nkind = \"read-hdf5-stack\"\npath = \"{d}/volumes/t_*.h5\"\ndataset = \"data\"\n\
             [stage.median]\nkind = \"median\"\ninputs = [\"volumes\"]\nsize = [1, 3, 3, 3]\n\
             [stage.out]\nkind = \"write-zarr\"\ninputs = [\"median\"]\npath = \"{d}/median.zarr\"\n\
             [stage.shifts]\nkind = \"register\"\ninputs = [\"median\"]\n\
             [stage.total]\nkind = \"reduce\"\ninputs = [\"median\"]\nop = \"sum\"\n\
             [stage.sums]\nkind = \"write-json\"\ninputs = [\"shifts\", \"total\"]\npath = \"{d}/sums.json\"\n"
        ),
    );
    let (code, _, err) = run_with_sets(&cfg, &[]);
    assert_eq!(code, 0, "{err}");
    let full = read_all(&tmp.path().join("median.zarr")).to_f64();
    assert_eq!(full.shape(), &[4, 20, 20, 20]);
    check(
        &cfg,
        "median",
        &full,
        &[
            (vec![1, 0, 0, 0], vec![2, 20, 20, 20]),
            (vec![0, 5, 7, 9], vec![4, 3, 13, 1]),
            (vec![3, 19, 19, 19], vec![1, 1, 1, 1]),
            (vec![2, 0, 10, 0], vec![1, 20, 1, 20]),
        ],
    );
    // What cannot be computed by region says why, naming the stage.
    let plan = blockflow_runtime::load_plan(&cfg, &[]).expect("plans");
    let mut runner = RegionRunner::new(&plan);
    let one = Region::new(vec![0, 0], vec![1, 3]);
    let e = runner
        .compute(runner.stage("shifts").expect("stage"), &one)
        .expect_err("register keeps a reference")
        .to_string();
    assert!(e.contains("\"shifts\"") && e.contains("state"), "{e}");
    let e = runner
        .compute(
            runner.stage("total").expect("stage"),
            &Region::new(vec![0], vec![1]),
        )
        .expect_err("a reduction waits for its whole input")
        .to_string();
    assert!(e.contains("\"total\"") && e.contains("whole input"), "{e}");
    let e = runner
        .compute(
            runner.stage("median").expect("stage"),
            &Region::new(vec![0, 0, 0, 0], vec![5, 1, 1, 1]),
        )
        .expect_err("outside the array")
        .to_string();
    assert!(e.contains("outside"), "{e}");
}

#[test]
fn shift_regions_within_frames_match_the_full_run() {
    // A shift moves values across any border inside a frame: a region that
    // is part of a frame takes its frames whole and keeps its own part
    // (before, a partial frame was shifted as if it were the whole frame).
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path().display();
    generate("timeseries", &tmp.path().join("volumes"), 3, 12, 5);
    let vectors = write_config(
        tmp.path(),
        "vectors.toml",
        &format!(
            "[stage.ramp]\nkind = \"synthetic\"\npattern = \"ramp\"\nshape = [3, 3]\nchunks = [1, 3]\ndtype = \"float64\"\n\
             [stage.v]\nkind = \"expr\"\ninputs = [\"ramp\"]\nexpr = \"ramp * 0.37 - 1.1\"\n\
             [stage.out]\nkind = \"write-zarr\"\ninputs = [\"v\"]\npath = \"{d}/vectors.zarr\"\n"
        ),
    );
    let (code, _, err) = run_with_sets(&vectors, &[]);
    assert_eq!(code, 0, "{err}");
    let cfg = write_config(
        tmp.path(),
        "shift.toml",
        &format!(
            "[stage.volumes]\nkind = \"read-hdf5-stack\"\npath = \"{d}/volumes/t_*.h5\"\ndataset = \"data\"\n\
             [stage.vectors]\nkind = \"read-zarr\"\npath = \"{d}/vectors.zarr\"\n\
             [stage.moved]\nkind = \"shift\"\ninputs = [\"volumes\", \"vectors\"]\nmode = \"nearest\"\n\
             [stage.out]\nkind = \"write-zarr\"\ninputs = [\"moved\"]\npath = \"{d}/moved.zarr\"\n"
        ),
    );
    let (code, _, err) = run_with_sets(&cfg, &[]);
    assert_eq!(code, 0, "{err}");
    let full = read_all(&tmp.path().join("moved.zarr")).to_f64();
    assert_eq!(full.shape(), &[3, 12, 12, 12]);
    check(
        &cfg,
        "moved",
        &full,
        &[
            (vec![1, 0, 0, 0], vec![1, 12, 12, 12]),
            (vec![0, 3, 5, 7], vec![2, 4, 6, 5]),
            (vec![2, 11, 0, 11], vec![1, 1, 12, 1]),
        ],
    );
}
