use super::*;
use ndarray::{ArrayD, IxDyn};

fn info(name: &str, dtype: DType, shape: &[u64], chunk: &[u64]) -> InputInfo {
    InputInfo {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        chunk: chunk.to_vec(),
    }
}

fn rgb_u8() -> ArrayData {
    let v: Vec<u8> = (0..2 * 3 * 4).map(|i| (i * 11 % 256) as u8).collect();
    ArrayData::U8(ArrayD::from_shape_vec(IxDyn(&[2, 3, 4]), v).expect("shape"))
}

#[test]
fn luminosity_matches_numpy_order_of_operations() {
    let x = rgb_u8();
    let e = Expr::compile(
        "0.21*x[...,0] + 0.72*x[...,1] + 0.07*x[...,2]",
        &[info("img", DType::U8, &[2, 3, 4], &[2, 3, 4])],
    )
    .expect("compiles");
    assert_eq!(e.dtype(), DType::F64);
    assert_eq!(e.shape(), &[2, 3]);
    let out = e.eval(&[&x]).expect("evals");
    let ArrayData::F64(out) = out else {
        panic!("dtype")
    };
    let xs = x.as_typed::<u8>().expect("u8");
    for i in 0..2 {
        for j in 0..3 {
            let want = (0.21 * xs[[i, j, 0]] as f64 + 0.72 * xs[[i, j, 1]] as f64)
                + 0.07 * xs[[i, j, 2]] as f64;
            assert_eq!(out[[i, j]], want);
        }
    }
}

#[test]
fn weak_scalars_and_wrapping_follow_numpy() {
    let x = rgb_u8();
    let inp = [info("x", DType::U8, &[2, 3, 4], &[2, 3, 4])];
    // u8 + int literal stays u8 and wraps.
    let e = Expr::compile("x + 200", &inp).expect("compiles");
    assert_eq!(e.dtype(), DType::U8);
    let ArrayData::U8(o) = e.eval(&[&x]).expect("eval") else {
        panic!()
    };
    let xs = x.as_typed::<u8>().expect("u8");
    assert_eq!(o[[1, 2, 3]], xs[[1, 2, 3]].wrapping_add(200));
    // u8 / 2 is float64; f32(x) * 0.5 stays float32.
    assert_eq!(Expr::compile("x / 2", &inp).expect("c").dtype(), DType::F64);
    assert_eq!(
        Expr::compile("f32(x) * 0.5", &inp).expect("c").dtype(),
        DType::F32
    );
    assert_eq!(
        Expr::compile("x > 3", &inp).expect("c").dtype(),
        DType::Bool
    );
    assert_eq!(
        Expr::compile("sum(x)", &inp).expect("c").dtype(),
        DType::I64
    );
    assert_eq!(
        Expr::compile("x[..., 0:3]", &inp).expect("c").shape(),
        &[2, 3, 3]
    );
    assert_eq!(
        Expr::compile("x[..., ::-1]", &inp).expect("c").shape(),
        &[2, 3, 4]
    );
    assert_eq!(
        Expr::compile("x[..., None]", &inp).expect("c").shape(),
        &[2, 3, 4, 1]
    );
}

#[test]
fn reductions_slices_lists_and_where() {
    let x = rgb_u8();
    let xs = x.as_typed::<u8>().expect("u8").mapv(|v| v as f64);
    let inp = [info("x", DType::U8, &[2, 3, 4], &[1, 3, 4])];
    let e = Expr::compile("mean(x[..., 0:3], axis=-1)", &inp).expect("c");
    let ArrayData::F64(o) = e.eval(&[&x]).expect("eval") else {
        panic!()
    };
    let want = (xs[[1, 1, 0]] + xs[[1, 1, 1]] + xs[[1, 1, 2]]) / 3.0;
    assert!((o[[1, 1]] - want).abs() < 1e-12);
    let e = Expr::compile("sum(x[..., 0:3] * [0.5, 0.25, 2.0])", &inp).expect("c");
    let ArrayData::F64(o) = e.eval(&[&x]).expect("eval") else {
        panic!()
    };
    let want = xs[[0, 2, 0]] * 0.5 + xs[[0, 2, 1]] * 0.25 + xs[[0, 2, 2]] * 2.0;
    assert!((o[[0, 2]] - want).abs() < 1e-12);
    let e = Expr::compile("where(x > 100, x, 0)", &inp).expect("c");
    let ArrayData::U8(o) = e.eval(&[&x]).expect("eval") else {
        panic!()
    };
    let xs8 = x.as_typed::<u8>().expect("u8");
    for (a, b) in o.iter().zip(xs8.iter()) {
        assert_eq!(*a, if *b > 100 { *b } else { 0 });
    }
    let e = Expr::compile("x[..., ::-1]", &inp).expect("c");
    let ArrayData::U8(o) = e.eval(&[&x]).expect("eval") else {
        panic!()
    };
    assert_eq!(o[[1, 2, 0]], xs8[[1, 2, 3]]);
    let e = Expr::compile("amax(x) - amin(x, axis=2)", &inp).expect("c");
    let ArrayData::U8(o) = e.eval(&[&x]).expect("eval") else {
        panic!()
    };
    let row = xs8.slice(ndarray::s![0, 1, ..]);
    let want = row.iter().max().expect("max") - row.iter().min().expect("min");
    assert_eq!(o[[0, 1]], want);
}

#[test]
fn two_inputs_broadcast_along_channels() {
    let x = rgb_u8();
    let m: Vec<f32> = (0..6).map(|i| i as f32 + 0.5).collect();
    let m = ArrayData::F32(ArrayD::from_shape_vec(IxDyn(&[2, 3]), m).expect("shape"));
    let inp = [
        info("img", DType::U8, &[2, 3, 4], &[1, 3, 4]),
        info("mask", DType::F32, &[2, 3], &[1, 3]),
    ];
    let e = Expr::compile("img * mask[..., None]", &inp).expect("c");
    assert_eq!(e.dtype(), DType::F32);
    let ArrayData::F32(o) = e.eval(&[&x, &m]).expect("eval") else {
        panic!()
    };
    let xs = x.as_typed::<u8>().expect("u8");
    assert_eq!(o[[1, 2, 3]], xs[[1, 2, 3]] as f32 * 5.5);
}

#[test]
fn errors_point_at_the_column() {
    let inp = [info("img", DType::U8, &[100, 100, 4], &[10, 10, 4])];
    let err = Expr::compile("img + imgg", &inp).expect_err("unknown");
    assert_eq!(err.col, 7);
    assert!(err.msg.contains("`imgg` is not an input"), "{err}");
    let err = Expr::compile("img[0]", &inp).expect_err("chunked axis");
    assert!(err.msg.contains("split into chunks"), "{err}");
    let err = Expr::compile("sqrtt(img)", &inp).expect_err("unknown fn");
    assert!(err.msg.contains("did you mean `sqrt`"), "{err}");
    let err = Expr::compile("img[..., 5]", &inp).expect_err("range");
    assert!(err.msg.contains("out of range"), "{err}");
    let err = Expr::compile("img * (2", &inp).expect_err("paren");
    assert_eq!(err.col, 9, "{err}");
    let err = Expr::compile("1 + 2", &inp).expect_err("no input");
    assert!(err.msg.contains("uses no input"), "{err}");
    let err = Expr::compile("img # 2", &inp).expect_err("char");
    assert_eq!(err.col, 5);
}

#[test]
fn float32_rounds_after_every_operation() {
    let v = vec![0.1f32, 1e8, 3.3, -7.25];
    let x = ArrayData::F32(ArrayD::from_shape_vec(IxDyn(&[4]), v.clone()).expect("s"));
    let e = Expr::compile(
        "(x + 1.1) * 3.7 - x / 3",
        &[info("x", DType::F32, &[4], &[4])],
    )
    .expect("c");
    let ArrayData::F32(o) = e.eval(&[&x]).expect("e") else {
        panic!()
    };
    for (i, &a) in v.iter().enumerate() {
        let want = (a + 1.1f32) * 3.7f32 - a / 3f32;
        assert_eq!(o[i], want);
    }
}

#[test]
fn large_arrays_cross_tile_boundaries() {
    let n = 10_000;
    let v: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let x = ArrayData::F64(ArrayD::from_shape_vec(IxDyn(&[100, 100]), v).expect("s"));
    let e = Expr::compile(
        "x[::-1, :] * 2",
        &[info("x", DType::F64, &[100, 100], &[100, 100])],
    )
    .expect("c");
    let ArrayData::F64(o) = e.eval(&[&x]).expect("e") else {
        panic!()
    };
    assert_eq!(o[[0, 5]], (99 * 100 + 5) as f64 * 2.0);
    assert_eq!(o[[99, 99]], 99.0 * 2.0);
}

fn f64_input() -> ([InputInfo; 1], ArrayData) {
    let x = ArrayData::F64(
        ArrayD::from_shape_vec(IxDyn(&[4, 5]), (0..20).map(f64::from).collect()).expect("shape"),
    );
    ([info("x", DType::F64, &[4, 5], &[4, 5])], x)
}

#[test]
fn an_unfinished_call_is_an_error_not_a_panic() {
    let (inp, _) = f64_input();
    for src in [
        "abs(x,",
        "abs(x",
        "abs(",
        "clip(x, 0,",
        "sum(x, axis",
        "sum(x, axis=",
        "x[",
    ] {
        let e = Expr::compile(src, &inp).expect_err(src);
        assert!(e.col >= 1 && e.col <= src.len() + 1, "{src}: {e}");
    }
    assert!(Expr::parse("abs(x,").is_err());
}

#[test]
fn deep_nesting_is_refused_with_a_column() {
    let (inp, _) = f64_input();
    // 5,000 overflowed the parser's stack in `plan`; past the token bound.
    let parens = format!("{}x{}", "(".repeat(5000), ")".repeat(5000));
    assert!(Expr::compile(&parens, &inp).is_err());
    let parens = format!("{}x{}", "(".repeat(400), ")".repeat(400));
    let e = Expr::compile(&parens, &inp).expect_err("too deep");
    assert!(e.msg.contains("nests too deeply") && e.col == 101, "{e}");
    let negs = format!("{}x", "-".repeat(5000));
    assert!(Expr::compile(&negs, &inp).is_err());
    let calls = format!("{}x{}", "abs(".repeat(3000), ")".repeat(3000));
    assert!(Expr::compile(&calls, &inp).is_err());
    let pow = vec!["x"; 3000].join("**");
    assert!(Expr::compile(&pow, &inp).is_err());
}

#[test]
fn a_long_chain_is_refused_at_compile_not_in_eval() {
    let (inp, _) = f64_input();
    // 2,600 terms: once accepted, then overflowed the stack in `run`.
    let chain = vec!["x"; 2600].join("+");
    let e = Expr::compile(&chain, &inp).expect_err("too long");
    assert!(e.msg.contains("too long"), "{e}");
    // Under the token bound but deeper than the depth bound.
    let chain = vec!["x"; parse::MAX_DEPTH + 2].join("+");
    let e = Expr::compile(&chain, &inp).expect_err("too deep");
    assert!(e.msg.contains("nests too deeply"), "{e}");
    let index = format!("x{}", "[...]".repeat(parse::MAX_DEPTH + 1));
    assert!(Expr::compile(&index, &inp).is_err());
}

/// What the bounds accept evaluates on a thread with a small stack (the
/// runtime's workers have 2 MiB), so a plan that passes cannot overflow.
#[test]
fn the_deepest_accepted_expressions_evaluate_on_a_small_stack() {
    let (inp, x) = f64_input();
    let levels = parse::MAX_DEPTH / 3 - 1;
    let srcs = [
        vec!["x"; parse::MAX_DEPTH].join("+"),
        format!(
            "{}x{}",
            "(".repeat(parse::MAX_DEPTH - 1),
            ")".repeat(parse::MAX_DEPTH - 1)
        ),
        format!(
            "{}x{}",
            "abs(".repeat(parse::MAX_DEPTH - 1),
            ")".repeat(parse::MAX_DEPTH - 1)
        ),
        format!(
            "{}x{}",
            "sum(x[..., None] + (".repeat(levels),
            ")[..., None], axis=-1)".repeat(levels)
        ),
    ];
    for src in srcs {
        let e = Expr::compile(&src, &inp).unwrap_or_else(|e| panic!("{src}: {e}"));
        let x = x.clone();
        let h = std::thread::Builder::new()
            .stack_size(512 << 10)
            .spawn(move || e.eval(&[&x]).map(|a| a.shape().to_vec()))
            .expect("spawn");
        assert_eq!(h.join().expect("no overflow").expect("evals"), vec![4, 5]);
    }
}
