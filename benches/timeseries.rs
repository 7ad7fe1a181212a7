//! Seed 002's kernels, with numbers: the (3, 3, 3) median filter and the
//! cubic-spline shift on 128^3 volumes (voxels/s, one call = one volume),
//! registration by phase cross-correlation of a 256^3 volume against a
//! shifted copy, float64 and float32 (elements/s; volumes/s = that /
//! 256^3), and the shift of one 256^3 float32 timepoint.
//!
//!     cargo bench --bench timeseries
//!     cargo bench --bench timeseries -- 256

use blockflow_core::ArrayData;
use blockflow_kernels::filters::Boundary;
use blockflow_kernels::rank::median_filter;
use blockflow_kernels::register::Registrar;
use blockflow_kernels::shift::{shift, shift_timepoint, InterpMode, ShiftBuffers};
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

/// Registration of a 256^3 volume against a copy moved by (2.35, -1.6,
/// 0.8) voxels (cubic spline), to the voxel and to 1/20, in float64 and in
/// float32 (the seed's data; computed in single precision as scikit-image
/// does), the reference's spectrum prepared once as the register stage
/// does. One call = one volume registered: volumes/s = elements/s / 256^3.
/// Then one timepoint shifted as the shift stage does (float32 in and out,
/// float64 inside, working buffers kept between timepoints).
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
    let (reference32, moving32) = (reference.mapv(|v| v as f32), moving.mapv(|v| v as f32));
    let mut g = c.benchmark_group("seed 002, 256^3");
    // Seconds a call: ten samples of one call or so each, not criterion's
    // linear 1 + 2 + ... + 10 calls.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements((n * n * n) as u64));
    let r64 = Registrar::new(reference.view()).expect("reference");
    let r32 = Registrar::new(reference32.view()).expect("reference");
    for up in [1usize, 20] {
        g.bench_function(format!("register float64 upsample {up}"), |b| {
            b.iter(|| r64.register(moving.view(), up).expect("register"))
        });
        g.bench_function(format!("register float32 upsample {up}"), |b| {
            b.iter(|| r32.register(moving32.view(), up).expect("register"))
        });
    }
    let frame = ArrayData::F32(moving32.clone().insert_axis(ndarray::Axis(0)));
    let buffers = ShiftBuffers::default();
    g.bench_function("shift_timepoint float32, order 3, prefilter", |b| {
        b.iter(|| {
            shift_timepoint(
                &frame,
                &[-2.35, 1.6, -0.8],
                3,
                InterpMode::Constant,
                0.0,
                true,
                &buffers,
            )
            .expect("shift")
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_register);
criterion_main!(benches);
