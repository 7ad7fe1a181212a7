//! Reductions against numpy (fixtures made by
//! scripts/fixtures/make_reduce_fixtures.py): over the whole array from
//! partials of several chunkings merged in different orders, and per block.

use blockflow_kernels::reduce::{partial_of_chunk_op, Partial, Reduction};
use serde_json::Value;

const H: usize = 37;
const W: usize = 29;

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|s| s.as_str().expect("str").parse().expect("f64"))
        .collect()
}

fn block_partial(x: &[f64], y0: usize, y1: usize, x0: usize, x1: usize, skip: bool) -> Partial {
    Partial::of(
        (y0..y1).flat_map(|y| (x0..x1).map(move |c| ((y * W + c) as u64, x[y * W + c]))),
        skip,
    )
}

fn same(got: f64, want: f64, exact: bool) -> bool {
    if got.is_nan() || want.is_nan() {
        return got.is_nan() && want.is_nan();
    }
    if exact {
        got == want
    } else {
        (got - want).abs() <= 1e-12 * want.abs().max(1.0)
    }
}

#[test]
fn reductions_match_numpy_whole_and_per_block() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reduce_numpy.json"
    ))
    .expect("fixture");
    let fx: Value = serde_json::from_str(&text).expect("json");
    let cases = fx["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 60);
    for case in cases {
        let name = case["input"].as_str().expect("input");
        let x = floats(&fx["inputs"][name]);
        let op = Reduction::parse(case["op"].as_str().expect("op")).expect("known op");
        let ddof = case["ddof"].as_u64().expect("ddof") as u32;
        let exact = matches!(
            op,
            Reduction::Min
                | Reduction::Max
                | Reduction::NanMin
                | Reduction::NanMax
                | Reduction::ArgMin
                | Reduction::ArgMax
                | Reduction::Any
                | Reduction::All
        );
        let want: f64 = case["whole"].as_str().expect("whole").parse().expect("f64");
        let what = format!("{name} {op:?} ddof {ddof}");
        check_whole(&x, op, ddof, want, exact, &what);
        check_blocks(&x, case, op, ddof, exact, &what);
    }
}

/// Whole array: partials of chunks, merged left to right and as a tree.
fn check_whole(x: &[f64], op: Reduction, ddof: u32, want: f64, exact: bool, what: &str) {
    for (ch, cw) in [(37, 29), (10, 7), (3, 4), (1, 29)] {
        let mut parts = Vec::new();
        for y in (0..H).step_by(ch) {
            for c in (0..W).step_by(cw) {
                parts.push(block_partial(
                    x,
                    y,
                    (y + ch).min(H),
                    c,
                    (c + cw).min(W),
                    op.skips_nan(),
                ));
            }
        }
        let linear = parts.iter().skip(1).fold(parts[0], |a, b| a.merge(b));
        let mut tree = parts.clone();
        while tree.len() > 1 {
            tree = tree
                .chunks(2)
                .map(|p| {
                    if p.len() == 2 {
                        p[0].merge(&p[1])
                    } else {
                        p[0]
                    }
                })
                .collect();
        }
        for (how, p) in [("linear", linear), ("tree", tree[0])] {
            let got = p.finish(op, ddof);
            assert!(
                same(got, want, exact),
                "{what}, chunks {ch}x{cw} merged {how}: {got} vs numpy {want}"
            );
        }
    }
}

/// Per block: the partial of each block, and the op-aware partial of the
/// block as a chunk.
fn check_blocks(x: &[f64], case: &Value, op: Reduction, ddof: u32, exact: bool, what: &str) {
    for (bs, vals) in case["blocks"].as_object().expect("blocks") {
        let (bh, bw): (usize, usize) = {
            let mut it = bs.split('x').map(|v| v.parse::<usize>().expect("n"));
            (it.next().expect("h"), it.next().expect("w"))
        };
        let want = floats(vals);
        let mut k = 0;
        for y in (0..H).step_by(bh) {
            for c in (0..W).step_by(bw) {
                let got = block_partial(x, y, (y + bh).min(H), c, (c + bw).min(W), op.skips_nan())
                    .finish(op, ddof);
                assert!(
                    same(got, want[k], exact),
                    "{what}, block {bs} #{k}: {got} vs numpy {}",
                    want[k]
                );
                // The op-aware partial of the block as a chunk.
                let (y1, c1) = ((y + bh).min(H), (c + bw).min(W));
                let block = ndarray::Array2::from_shape_fn((y1 - y, c1 - c), |(i, j)| {
                    x[(y + i) * W + c + j]
                })
                .into_dyn();
                let got = partial_of_chunk_op(
                    &blockflow_core::ArrayData::F64(block),
                    &[y as u64, c as u64],
                    &[H as u64, W as u64],
                    op,
                )
                .finish(op, ddof);
                assert!(
                    same(got, want[k], exact),
                    "{what}, block {bs} #{k} (op-aware partial): {got} vs numpy {}",
                    want[k]
                );
                k += 1;
            }
        }
    }
}
