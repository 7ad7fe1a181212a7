//! Issue 4's kernels and stages, with numbers:
//!
//! - rechunk: a 4-D float32 array stored one timepoint per chunk, rechunked
//!   to whole time series per chunk through the engine (read-zarr ->
//!   rechunk -> write-zarr, uncompressed), in memory and through disk,
//!   against the disk's plain write speed measured in the same run (the
//!   same bytes written as files);
//! - each reduction over axis 0 and over the whole array (elements/s);
//! - matmul: the matrixmultiply kernel the stage calls, float64 and
//!   float32 (GFLOP/s);
//! - TSQR: the flat QR step of the pca stage on two bands of the seed's
//!   shape, 12288 x 844 each (GFLOP/s by 2 m n^2).
//!
//!     cargo bench --bench arrays
//!
//! A last line prints the rechunk routes' MB/s as ratios of the plain write.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blockflow_core::ArrayData;
use blockflow_kernels::linalg;
use blockflow_kernels::reduce::{partial_of_chunk_op, AxisReducer, Reduction};
use criterion::{Criterion, Throughput};
use ndarray::{Array2, ArrayD, IxDyn};

const T: u64 = 16;
const N: u64 = 128;

fn data_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data");
    std::fs::create_dir_all(&d).expect("bench data folder");
    d
}

fn run_config(name: &str, text: &str) {
    let p = data_dir().join(name);
    std::fs::write(&p, text).expect("config");
    let plan = blockflow_runtime::load_plan(&p, &[]).expect("plan");
    let (_, r) = blockflow_runtime::run(&plan, &Default::default());
    r.expect("run");
}

/// 128 MiB of float32, (16, 128, 128, 128), one timepoint per chunk.
fn rechunk_input() -> u64 {
    let dir = data_dir();
    if !dir.join("ts-128mib.zarr/zarr.json").exists() {
        run_config(
            "make-ts.toml",
            &format!(
                "[pipeline]\nreport = \"make-ts.report.json\"\n\n[stage.a]\nkind = \"synthetic\"\npattern = \"noise\"\nshape = [{T}, {N}, {N}, {N}]\nchunks = [1, {N}, {N}, {N}]\ndtype = \"float32\"\n\n[stage.w]\nkind = \"write-zarr\"\ninputs = [\"a\"]\npath = \"ts-128mib.zarr\"\ncodec = \"none\"\nif_exists = \"overwrite\"\n"
            ),
        );
    }
    T * N * N * N * 4
}

fn rechunk(route: &str) {
    run_config(
        &format!("rechunk-{route}.toml"),
        &format!(
            "[pipeline]\nmemory = \"1 GiB\"\nreport = \"rechunk-{route}.report.json\"\n\n[stage.r]\nkind = \"read-zarr\"\npath = \"ts-128mib.zarr\"\n\n[stage.t]\nkind = \"rechunk\"\ninputs = [\"r\"]\nchunks = [{T}, 16, 16, 16]\nroute = \"{route}\"\n\n[stage.w]\nkind = \"write-zarr\"\ninputs = [\"t\"]\npath = \"rechunk-{route}-out.zarr\"\ncodec = \"none\"\nif_exists = \"overwrite\"\n"
        ),
    );
}

/// The disk's plain write speed for the same bytes: one file per timepoint.
fn plain_write(bytes: u64) {
    let dir = data_dir().join("plain-write");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let part = vec![7u8; (bytes / T) as usize];
    for t in 0..T {
        std::fs::write(dir.join(t.to_string()), &part).expect("write");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .configure_from_args();

    let bytes = rechunk_input();
    let mut g = c.benchmark_group("rechunk 128 MiB (16,128,128,128) to (16,16,16,16)");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("plain write of the same bytes", |b| {
        b.iter(|| plain_write(bytes))
    });
    g.bench_function("engine, in memory", |b| b.iter(|| rechunk("memory")));
    g.bench_function("engine, through disk", |b| b.iter(|| rechunk("disk")));
    g.finish();

    // Reductions: 8 Mi float64 values, as (64, 128, 1024).
    let shape = [64usize, 128, 1024];
    let n: usize = shape.iter().product();
    let data = ArrayData::F64(ArrayD::from_shape_fn(IxDyn(&shape), |i| {
        ((i[0] * 31 + i[1] * 7 + i[2]) % 1000) as f64 * 0.25
    }));
    let shape64: Vec<u64> = shape.iter().map(|&s| s as u64).collect();
    let mut g = c.benchmark_group("reduce 8 Mi float64");
    g.throughput(Throughput::Elements(n as u64));
    for op in ["sum", "mean", "std", "min", "argmin", "any"] {
        let r = Reduction::parse(op).expect("op");
        g.bench_function(format!("{op} over axis 0"), |b| {
            b.iter(|| {
                let mut acc = AxisReducer::new(r, &shape64, &[0]);
                acc.add(&data, &[0, 0, 0]);
                acc.finish(0)
            })
        });
        g.bench_function(format!("{op} of the whole array"), |b| {
            b.iter(|| partial_of_chunk_op(&data, &[0, 0, 0], &shape64, r).finish(r, 0))
        });
    }
    g.finish();

    let m = 1024usize;
    let mut g = c.benchmark_group("matmul 1024 x 1024 (matrixmultiply)");
    g.throughput(Throughput::Elements((2 * m * m * m) as u64));
    let a = Array2::from_shape_fn((m, m), |(i, j)| ((i * 3 + j) % 17) as f64);
    let b = Array2::from_shape_fn((m, m), |(i, j)| ((i + j * 5) % 13) as f64);
    g.bench_function("float64 (elements = flops)", |bch| bch.iter(|| a.dot(&b)));
    let (a32, b32) = (a.mapv(|v| v as f32), b.mapv(|v| v as f32));
    g.bench_function("float32 (elements = flops)", |bch| {
        bch.iter(|| a32.dot(&b32))
    });
    g.finish();

    let (rows, cols) = (12288usize, 844usize);
    let band = Array2::from_shape_fn((rows, cols), |(i, j)| {
        (((i * 2654435761 + j * 40503) % 65521) as f64) / 65521.0 - 0.5
    });
    let mut g = c.benchmark_group("TSQR step, bands of 12288 x 844");
    // First band's QR plus one stacked step (R over a band).
    let flops = 2.0 * rows as f64 * (cols * cols) as f64
        + 2.0 * (rows + cols) as f64 * (cols * cols) as f64
        - 4.0 / 3.0 * (cols * cols * cols) as f64;
    g.throughput(Throughput::Elements(flops as u64));
    g.bench_function("two bands (elements = flops)", |bch| {
        bch.iter(|| {
            let r = linalg::qr_r(band.view());
            linalg::stack_r(&r, &band).expect("stack")
        })
    });
    g.finish();

    // Rechunk ratios, alternating runs so noise hits all alike.
    let mut times: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..5 {
        for (k, f) in [
            &(|| plain_write(bytes)) as &dyn Fn(),
            &|| rechunk("memory"),
            &|| rechunk("disk"),
        ]
        .iter()
        .enumerate()
        {
            let t = Instant::now();
            f();
            times[k].push(t.elapsed().as_secs_f64());
        }
    }
    let mbs = |t: f64| bytes as f64 / t / 1e6;
    let [plain, mem, disk] = times.map(median);
    println!(
        "rechunk 128 MiB, medians of 5 alternating runs: plain write {:.0} MB/s; engine in memory {:.0} MB/s ({:.2} of plain); through disk {:.0} MB/s ({:.2} of plain; it writes and reads the bytes twice)",
        mbs(plain),
        mbs(mem),
        plain / mem,
        mbs(disk),
        plain / disk
    );
}
