//! Tall-skinny SVD against numpy.linalg.svd (fixtures made by
//! scripts/fixtures/make_linalg_fixtures.py, which stores only the results:
//! the matrices are rebuilt here from the same integer hash). Every matrix
//! goes through TSQR in several row-block sizes and arrival orders:
//! singular values within 1e-9·s[0] absolutely, U equal to numpy's up to
//! the sign of each column (columns with s ≈ 0 are arbitrary and skipped).

use std::time::Instant;

use blockflow_kernels::linalg::{left_singular, project, qr_r, svd_r, Tsqr};
use ndarray::{s, Array1, Array2};
use serde_json::Value;

fn value(salt: u64, i: u64, j: u64) -> f64 {
    let mut z = (salt << 40) ^ (i << 20) ^ j;
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 * 2f64.powi(-53) - 0.5
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|s| s.as_str().expect("str").parse().expect("f64"))
        .collect()
}

fn rebuild(m: &Value) -> Array2<f64> {
    let salt = m["salt"].as_u64().expect("salt");
    let shape: Vec<usize> = m["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect();
    let mut a = Array2::from_shape_fn((shape[0], shape[1]), |(i, j)| {
        value(salt, i as u64, j as u64)
    });
    if m["col_scale_pow2"].as_bool().expect("flag") {
        for (j, mut col) in a.columns_mut().into_iter().enumerate() {
            col.mapv_inplace(|x| x * 2f64.powi(-(j as i32)));
        }
    }
    if m["centre_rows"].as_bool().expect("flag") {
        for mut row in a.rows_mut() {
            let mean = row.sum() / row.len() as f64;
            row.mapv_inplace(|x| x - mean);
        }
    }
    a
}

/// Block start rows for a block size, in one of three orders.
fn blocks(m: usize, size: usize, order: usize) -> Vec<(u64, usize, usize)> {
    let mut b: Vec<(u64, usize, usize)> = (0..m.div_ceil(size))
        .map(|k| (k as u64, k * size, ((k + 1) * size).min(m)))
        .collect();
    match order {
        0 => {}
        1 => b.reverse(),
        _ => {
            // A fixed shuffle (Fisher-Yates with an LCG).
            let mut x = 12345u64;
            for i in (1..b.len()).rev() {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                b.swap(i, (x >> 33) as usize % (i + 1));
            }
        }
    }
    b
}

#[test]
fn tsqr_matches_numpy_svd() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/svd_numpy.json"
    ))
    .expect("fixture");
    let fx: Value = serde_json::from_str(&text).expect("json");
    let mats = fx["matrices"].as_object().expect("matrices");
    assert_eq!(mats.len(), 3);
    for (name, m) in mats {
        let a = rebuild(m);
        let (rows, n) = a.dim();
        let s_np = Array1::from(floats(&m["s"]));
        let u_np = Array2::from_shape_vec((rows, n), floats(&m["u"])).expect("u");
        let tol = 1e-9 * s_np[0];
        for size in [rows, 16, 7, 3, 1] {
            for order in 0..3 {
                let what = format!("{name} blocks of {size} order {order}");
                let mut t = Tsqr::new(n);
                for (i, (key, r0, r1)) in blocks(rows, size, order).into_iter().enumerate() {
                    let block = a.slice(s![r0..r1, ..]);
                    // Half the blocks as R factors computed "elsewhere".
                    if i % 2 == 0 {
                        t.push(key, block).expect("push");
                    } else {
                        t.push_r(key, qr_r(block)).expect("push_r");
                    }
                }
                if order == 0 {
                    let levels = (rows.div_ceil(size) as f64).log2().floor() as usize + 1;
                    assert!(t.peak_held() <= levels, "{what}: held {}", t.peak_held());
                }
                let (s, v) = t.finish().expect("finish");
                assert_eq!(s.len(), n, "{what}");
                for (j, (x, y)) in s.iter().zip(s_np.iter()).enumerate() {
                    assert!((x - y).abs() <= tol, "{what}: s[{j}] {x} vs numpy {y}");
                }
                // V is orthonormal and signed by its largest component.
                let vtv = v.t().dot(&v);
                for ((i, j), x) in vtv.indexed_iter() {
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((x - want).abs() < 1e-12, "{what}: VᵀV[{i},{j}] = {x}");
                }
                for col in v.columns() {
                    let big = col
                        .iter()
                        .fold(0f64, |b, x| if x.abs() > b.abs() { *x } else { b });
                    assert!(big > 0.0, "{what}: sign convention");
                }
                // U of every block, compared column by column up to sign.
                let mut u = Array2::zeros((rows, n));
                for (_, r0, r1) in blocks(rows, size, 0) {
                    let block = a.slice(s![r0..r1, ..]);
                    let ub = left_singular(block, &v, &s, n).expect("left singular");
                    u.slice_mut(s![r0..r1, ..]).assign(&ub);
                    let scores = project(block, &v, n).expect("project");
                    for ((i, j), x) in scores.indexed_iter() {
                        assert!((x - ub[[i, j]] * s[j]).abs() <= 1e-12 * s[0], "{what}");
                    }
                }
                for j in 0..n {
                    if s_np[j] <= 1e-8 * s_np[0] {
                        continue; // the null direction of a centred matrix
                    }
                    let dot: f64 = u.column(j).dot(&u_np.column(j));
                    let sign = dot.signum();
                    for i in 0..rows {
                        let (x, y) = (u[[i, j]] * sign, u_np[[i, j]]);
                        assert!((x - y).abs() <= 1e-9, "{what}: U[{i},{j}] {x} vs numpy {y}");
                    }
                }
            }
        }
        // The tree's answer is the same bit for bit in any arrival order.
        let run = |order| {
            let mut t = Tsqr::new(n);
            for (key, r0, r1) in blocks(rows, 7, order) {
                t.push(key, a.slice(s![r0..r1, ..])).expect("push");
            }
            t.finish().expect("finish")
        };
        assert_eq!(run(0), run(2), "{name}: order changed the result");
    }
}

#[test]
fn svd_of_a_short_r_pads_with_zeros() {
    let a = Array2::from_shape_fn((3, 5), |(i, j)| value(9, i as u64, j as u64));
    let (s, v) = svd_r(&qr_r(a.view())).expect("svd");
    assert_eq!(s.len(), 5);
    assert_eq!(v.dim(), (5, 5));
    assert!(s[3].abs() < 1e-15 && s[4].abs() < 1e-15, "{s}");
}

/// Seed 001's size: 196608 x 844 in row blocks of 12288. Run with
/// `cargo test --release -p blockflow-kernels --test linalg_numpy -- --ignored --nocapture`.
#[test]
#[ignore]
fn tsqr_timing_seed_size() {
    let (m, n, rows) = (196_608usize, 844usize, 12_288usize);
    let mut t = Tsqr::new(n);
    let (mut gen, mut qr, mut combine) = (0.0, 0.0, 0.0);
    let mut blocks_kept = Vec::new();
    for k in 0..m / rows {
        let t0 = Instant::now();
        let block = Array2::from_shape_fn((rows, n), |(i, j)| {
            value(7, (k * rows + i) as u64, j as u64)
        });
        let t1 = Instant::now();
        let r = qr_r(block.view());
        let t2 = Instant::now();
        t.push_r(k as u64, r).expect("push");
        let t3 = Instant::now();
        gen += (t1 - t0).as_secs_f64();
        qr += (t2 - t1).as_secs_f64();
        combine += (t3 - t2).as_secs_f64();
        if k == 0 {
            blocks_kept.push(block);
        }
    }
    let t0 = Instant::now();
    let r = t.finish_r().expect("finish");
    let t1 = Instant::now();
    let (s, v) = svd_r(&r).expect("svd");
    let t2 = Instant::now();
    let _scores = project(blocks_kept[0].view(), &v, 100).expect("project");
    let t3 = Instant::now();
    combine += (t1 - t0).as_secs_f64();
    let svd = (t2 - t1).as_secs_f64();
    let proj = (t3 - t2).as_secs_f64();
    let total = qr + combine + svd;
    let flops = 2.0 * m as f64 * (n * n) as f64;
    println!(
        "TSQR {m} x {n}, blocks of {rows}: block QRs {qr:.2} s, combines {combine:.2} s, \
         SVD of R {svd:.2} s, total {total:.2} s ({:.1} GFLOP/s by 2mn²/t); \
         project one block on 100 components {proj:.3} s; generating data {gen:.2} s; \
         rayon threads {}; s[0] = {:.3}, s[{}] = {:.3}",
        flops / total / 1e9,
        rayon_threads(),
        s[0],
        n - 1,
        s[n - 1]
    );
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
