//! Seed 002's kernels, with numbers: the (3, 3, 3) median filter and the
//! cubic-spline shift on 128^3 volumes (voxels/s, one call = one volume).
//!
//!     cargo bench --bench timeseries

use blockflow_kernels::filters::Boundary;
use blockflow_kernels::rank::median_filter;
use blockflow_kernels::shift::{shift, InterpMode};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ndarray::{ArrayD, IxDyn};

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

criterion_group!(benches, bench);
criterion_main!(benches);
