//! Seed 000's fused structure-tensor kernel beside the float64 FMA peak of
//! one core, both in GFLOP/s (criterion's "elements" here are flops, so
//! its Gelem/s reads as GFLOP/s). One thread.
//!
//!     cargo bench --bench tensor_peak
//!
//! - fma-peak/<isa>: 12 independent vectors of fused multiply-adds held in
//!   registers (`simd::FmaChains`), compiled for each instruction set this
//!   CPU has and chosen the way the kernels choose it: the most float64
//!   flops one core can do.
//! - structure-tensor/{nominal,executed}-540x540x3: the feature map of one
//!   chunk of `configs/structure-tensor.toml` (500 x 500 x 3 float32 with
//!   its 20-pixel halo) by the fused kernel, as the stage computes it.
//!   `nominal` counts the seed's flops (`tensor::flops`: 1,088 a pixel of
//!   the core: gradients over the 520 x 520 the window needs, 20 non-zero
//!   taps each way, a multiply and an add per tap; the 3 products; the
//!   21-tap window along x over 520 x 500 and along y over 500 x 500; the
//!   eigenvalues and features); `executed` the flops the folded taps
//!   execute (817 a pixel). Same kernel, same timing, two counts.
//! - structure-tensor/nominal-520x520x3: a 520 x 520 x 3 block (a 480 x
//!   480 core), nominal count.

use std::hint::black_box;
use std::time::Duration;

use blockflow_core::{ArrayData, DType, Region};
use blockflow_io::synthetic::{generate, Pattern};
use blockflow_kernels::filters::{Boundary, Geometry};
use blockflow_kernels::simd::{self, FmaChains, Isa};
use blockflow_kernels::tensor::{self, FeatureMap, TensorParams};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn survey(h: u64, w: u64) -> Vec<f32> {
    match generate(
        Pattern::Survey,
        1,
        &[h, w, 3],
        DType::F32,
        &Region::new(vec![0, 0, 0], vec![h, w, 3]),
    ) {
        ArrayData::F32(a) => a.into_raw_vec_and_offset().0,
        _ => unreachable!("survey is float32 here"),
    }
}

fn peak(c: &mut Criterion) {
    let mut g = c.benchmark_group("fma-peak");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    let chains = FmaChains {
        iters: 200_000,
        a: black_box(0.999_999),
        b: black_box(1e-6),
    };
    for limit in [Isa::Portable, Isa::Avx2Fma, Isa::Avx512Fma] {
        if Isa::detect() < limit {
            continue;
        }
        g.throughput(Throughput::Elements(chains.flops(limit)));
        g.bench_function(format!("{limit:?}"), |b| {
            b.iter(|| simd::run(limit, black_box(chains)))
        });
    }
    g.finish();
}

fn kernel(c: &mut Criterion) {
    let p = TensorParams::seed(Boundary::Reflect);
    let mut g = c.benchmark_group("structure-tensor");
    g.sample_size(30).measurement_time(Duration::from_secs(8));
    eprintln!("structure tensor on {}", Isa::detect().name());
    for (n, counts) in [
        (540usize, &["nominal", "executed"][..]),
        (520, &["nominal"][..]),
    ] {
        let block = survey(n as u64, n as u64);
        let shape = [n, n, 3];
        // An interior chunk of the tutorial's image.
        let geom = Geometry {
            origin: vec![480, 980, 0],
            array: vec![12000, 13500, 3],
        };
        let (nominal, executed) = tensor::flops(&p, n, n, 3);
        let core = ((n - 40) * (n - 40)) as f64;
        eprintln!(
            "{n}x{n}x3: {nominal} flops nominal ({:.0} a pixel), {executed} executed ({:.0} a pixel)",
            nominal as f64 / core,
            executed as f64 / core
        );
        for &count in counts {
            let f = if count == "nominal" {
                nominal
            } else {
                executed
            };
            g.throughput(Throughput::Elements(f));
            g.bench_function(format!("{count}-{n}x{n}x3"), |b| {
                b.iter(|| {
                    tensor::feature_map_block(
                        &block,
                        &shape,
                        &geom,
                        &p,
                        FeatureMap::Features,
                        Isa::Avx512Fma,
                    )
                    .expect("block")
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, peak, kernel);
criterion_main!(benches);
