//! Seed 002's kernels, with numbers: the (3, 3, 3) median filter and the
//! cubic-spline shift on 128^3 volumes (voxels/s, one call = one volume),
//! and registration by phase cross-correlation of a 256^3 float64 volume
//! against a shifted copy (elements/s; volumes/s = that / 256^3).
//!
//!     cargo bench --bench timeseries
//!     cargo bench --bench timeseries -- register

use blockflow_kernels::filters::Boundary;
use blockflow_kernels::rank::median_filter;
use blockflow_kernels::register::phase_cross_correlation;
use blockflow_kernels::shift::{shift, InterpMode};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use ndarray::{ArrayD, IxDyn};
use std::time::Duration;

fn volume(n: usize) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(&[n, n, n]), |i| {
        let k = (i[0] * 131 + i[1] * 17 + i[2] * 7) % 1009;
        (k as f64 / 1009.0).sin() + 0.01 * (i[0] as f64)
    })
}

fn bench(c: &mut Criterion) {
    let n = 128;
    let v = volume(n);
    let v32 = v.mapv(|x| x as f32);
    let mut g = c.benchmark_group("seed 002 kernels, 128^3");
    g.sample_size(10);
    g.throughput(Throughput::Elements((n * n * n) as u64));
    g.bench_function("median (3,3,3) float32", |b| {
        b.iter(|| median_filter(v32.view(), &[3, 3, 3], Boundary::Reflect).expect("median"))
    });
    g.bench_function("median (3,3,3) float64", |b| {
        b.iter(|| median_filter(v.view(), &[3, 3, 3], Boundary::Reflect).expect("median"))
    });
    g.bench_function("shift order 3, prefilter, float64", |b| {
        b.iter(|| {
            shift(
                v.view(),
                &[1.3, -0.7, 2.25],
                3,
                InterpMode::Constant,
                0.0,
                true,
            )
            .expect("shift")
        })
    });
    g.bench_function("shift order 1, float64", |b| {
        b.iter(|| {
            shift(
                v.view(),
                &[1.3, -0.7, 2.25],
                1,
                InterpMode::Constant,
                0.0,
                false,
            )
            .expect("shift")
        })
    });
    g.finish();
}

/// phase_cross_correlation of a 256^3 float64 volume against a copy moved
/// by (2.35, -1.6, 0.8) voxels (cubic spline), to the voxel and to 1/20.
/// One call = one volume registered: volumes/s = elements/s / 256^3.
fn bench_register(c: &mut Criterion) {
    let n = 256;
    let reference = volume(n);
    let moving = shift(
        reference.view(),
        &[2.35, -1.6, 0.8],
        3,
        InterpMode::Constant,
        0.0,
        true,
    )
    .expect("shift");
    let mut g = c.benchmark_group("seed 002 register, 256^3 float64");
    // Seconds a call: ten samples of one call or so each, not criterion's
    // linear 1 + 2 + ... + 10 calls.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements((n * n * n) as u64));
    for up in [1usize, 20] {
        g.bench_function(format!("phase_cross_correlation upsample {up}"), |b| {
            b.iter(|| {
                phase_cross_correlation(reference.view(), moving.view(), up).expect("register")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, bench_register);
criterion_main!(benches);
