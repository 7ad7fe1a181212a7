//! The planner refuses hostile parameters with a diagnostic (file:line:col
//! and stage) instead of panicking, aborting or working without bound.

use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::config;

const FILE: &str = "/cfg/t.toml";

fn plan_of(text: &str) -> Result<Plan, ConfigError> {
    let raw = config::parse(Path::new(FILE), text)?;
    plan(&raw)
}

/// The rendered refusal; panics when the plan is accepted.
fn refusal(text: &str) -> String {
    match plan_of(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// The line (1-based) of the first line of `text` that starts with `key`.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(key))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("no line {key}"))
}

fn pipeline(memory: &str, source: &str, stage: &str) -> String {
    format!(
        r#"[pipeline]
name = "t"
memory = "{memory}"

[stage.src]
kind = "synthetic"
pattern = "noise"
dtype = "float32"
{source}

[stage.k]
inputs = ["src"]
{stage}

[stage.out]
kind = "write-zarr"
inputs = ["k"]
path = "/nonexistent/out.zarr"
"#
    )
}

fn small() -> &'static str {
    "shape = [100, 100]\nchunks = [50, 50]"
}

fn gaussian(params: &str) -> String {
    pipeline(
        "256 MiB",
        small(),
        &format!("kind = \"filter\"\nfilter = \"gaussian\"\n{params}"),
    )
}

/// Asserts a refusal names `key`'s line in the file and the stage.
fn assert_at(text: &str, key: &str, stage: &str, what: &str) {
    let e = refusal(text);
    let at = format!("{FILE}:{}:", line_of(text, key));
    assert!(e.contains(&at), "want {at} in: {e}");
    assert!(e.contains(&format!("stage \"{stage}\"")), "{e}");
    assert!(e.contains(what), "want {what:?} in: {e}");
}

#[test]
fn float_parameters_must_be_finite() {
    for v in ["inf", "-inf", "nan", "+nan"] {
        // `sigma = inf` passed plan and panicked in run; `sigma = nan`
        // was accepted and left the data unfiltered.
        assert_at(
            &gaussian(&format!("sigma = {v}")),
            "sigma",
            "k",
            "not a finite number",
        );
        assert_at(
            &gaussian(&format!("sigma = [1.0, {v}]")),
            "sigma",
            "k",
            "not a finite number",
        );
        assert_at(
            &gaussian(&format!("sigma = 1.0\ntruncate = {v}")),
            "truncate",
            "k",
            "not a finite number",
        );
        assert_at(
            &gaussian(&format!("sigma = 1.0\nmode = \"constant\"\ncval = {v}")),
            "cval",
            "k",
            "not a finite number",
        );
    }
}

#[test]
fn huge_kernels_are_refused_before_they_are_made() {
    for (params, key) in [
        ("sigma = 1e18", "sigma"),
        ("sigma = 1e300", "sigma"),
        ("sigma = [1e18, 1.0]", "sigma"),
        ("sigma = 1.0\nradius = 9223372036854775807", "radius"),
        ("sigma = 1.0\nradius = 1099511627776", "radius"),
        ("sigma = 1.0\ntruncate = 1e300", "sigma"),
    ] {
        let t0 = Instant::now();
        assert_at(&gaussian(params), key, "k", "radius");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{params}: {:?}",
            t0.elapsed()
        );
    }
    let uniform = pipeline(
        "256 MiB",
        small(),
        "kind = \"filter\"\nfilter = \"uniform\"\nsize = 9223372036854775807",
    );
    assert_at(&uniform, "size", "k", "radius");
    let median = pipeline("256 MiB", small(), "kind = \"median\"\nsize = 4294967296");
    assert_at(&median, "size", "k", "radius");
    // Usual kernels, larger than a small array, are still taken.
    let roomy = |params: &str| {
        pipeline(
            "16 GiB",
            small(),
            &format!("kind = \"filter\"\nfilter = \"gaussian\"\n{params}"),
        )
    };
    assert!(plan_of(&roomy("sigma = 100.0")).is_ok());
    assert!(plan_of(&roomy("sigma = 1.0\nradius = 1024")).is_ok());
    assert_at(
        &gaussian("sigma = 1.0\nradius = 1025"),
        "radius",
        "k",
        "at most 1024",
    );
    assert_at(
        &gaussian("sigma = 1.0\ntruncate = -1.0"),
        "truncate",
        "k",
        ">= 0",
    );
}

#[test]
fn the_structure_tensor_takes_positive_sigmas() {
    for key in ["sigma", "window_sigma"] {
        let text = pipeline(
            "256 MiB",
            "shape = [100, 100, 3]\nchunks = [50, 50, 3]",
            &format!("kind = \"structure-tensor\"\n{key} = 0.0"),
        );
        assert_at(&text, key, "k", "must be > 0");
    }
}

#[test]
fn shapes_whose_sizes_overflow_are_refused() {
    // Aborted allocating 3.98e18 bytes.
    let text = pipeline(
        "256 MiB",
        "shape = [9223372036854775807, 13500, 3]\nchunks = [500, 500, 3]",
        "kind = \"expr\"\nexpr = \"x\"",
    );
    assert_at(&text, "shape", "src", "too large");
    // Projected "0 B" and was accepted; the run panicked.
    let text = pipeline(
        "256 MiB",
        "shape = [4294967296, 4294967296]\nchunks = [4294967296, 4294967296]",
        "kind = \"expr\"\nexpr = \"x\"",
    );
    assert_at(&text, "shape", "src", "too large");
    // Within the counts but not the budget: refused by the projection,
    // which saturates instead of wrapping.
    let text = pipeline(
        "256 MiB",
        "shape = [67108864, 67108864]\nchunks = [67108864, 1]",
        "kind = \"expr\"\nexpr = \"x\"",
    );
    assert!(refusal(&text).contains("`memory` is 256.00 MiB"));
    let text = pipeline(
        "256 MiB",
        "shape = [1048576, 1048576]\nchunks = [1048576, 1048576]",
        "kind = \"expr\"\nexpr = \"x\"\nparallel = 256",
    );
    let e = refusal(&text);
    assert!(
        e.contains("`memory` is 256.00 MiB") && !e.contains(" 0 B"),
        "{e}"
    );
}

#[test]
fn expression_limits_are_config_diagnostics() {
    for expr in [
        "abs(x,".to_string(),
        format!("{}x{}", "(".repeat(5000), ")".repeat(5000)),
        vec!["x"; 2600].join("+"),
        vec!["x"; 150].join("+"),
    ] {
        let text = pipeline(
            "256 MiB",
            small(),
            &format!("kind = \"expr\"\nexpr = \"{expr}\""),
        );
        assert_at(&text, "expr", "k", "in the expression, column");
    }
}

/// A filter over [1e7, 1e7] in [1000, 1000] chunks (10^8 chunks) took 14 s
/// and 783 MiB to plan before the budget refused it.
#[test]
fn planning_does_not_grow_with_the_chunk_count() {
    let text = pipeline(
        "256 MiB",
        "shape = [10000000, 10000000]\nchunks = [1000, 1000]",
        "kind = \"filter\"\nfilter = \"gaussian\"\nsigma = 2.0",
    );
    let t0 = Instant::now();
    let e = refusal(&text);
    let took = t0.elapsed();
    assert!(e.contains("`memory` is 256.00 MiB"), "{e}");
    assert!(took < Duration::from_secs(1), "planning took {took:?}");
    // Its window is the one simulated over fewer rows (about two rows).
    let halo = [(8, 8), (8, 8)];
    let grid = ChunkGrid::new(vec![10_000_000; 2], vec![1000; 2]).expect("grid");
    let rows = ChunkGrid::new(vec![20_000, 10_000_000], vec![1000; 2]).expect("grid");
    let want = Regrid::new(rows.clone(), rows, halo.to_vec()).simulate();
    assert!((2 * 10_000..3 * 10_000).contains(&want), "{want}");
    assert_eq!(window_chunks(&grid, &halo), want);
    // Inner axes too long to simulate get the bound, promptly.
    let grid = ChunkGrid::new(vec![4, 1 << 40], vec![1, 1 << 10]).expect("grid");
    let t0 = Instant::now();
    let w = window_chunks(&grid, &[(1, 1), (1, 1)]);
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!((2 << 30..=4 << 30).contains(&w), "{w}");
}

/// Cutting axis 0 short gives the window of the whole stream.
#[test]
fn the_shortened_window_is_the_simulated_one() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut cut = 0;
    for _ in 0..400 {
        let nd = 1 + next(3) as usize;
        let shape: Vec<u64> = (0..nd)
            .map(|ax| {
                if ax == 0 {
                    20 + next(300)
                } else {
                    1 + next(12)
                }
            })
            .collect();
        let sc: Vec<u64> = shape.iter().map(|&s| 1 + next(s.min(9))).collect();
        let dc: Vec<u64> = shape.iter().map(|&s| 1 + next(s.min(9))).collect();
        let halo: Vec<(usize, usize)> = (0..nd)
            .map(|_| (next(12) as usize, next(12) as usize))
            .collect();
        let src = ChunkGrid::new(shape.clone(), sc).expect("grid");
        let dst = ChunkGrid::new(shape, dc).expect("grid");
        for r in [
            Regrid::new(src.clone(), src.clone(), halo.clone()),
            Regrid::new(src.clone(), dst.clone(), vec![(0, 0); nd]),
        ] {
            if let Some(s) = r.shortened() {
                cut += 1;
                assert!(s.src.num_chunks() < r.src.num_chunks());
                assert_eq!(s.simulate(), r.simulate(), "{r:?}");
            }
            assert_eq!(r.window(), r.simulate(), "{r:?}");
            assert!(r.window_bound() >= r.simulate(), "{r:?}");
        }
    }
    assert!(cut > 100, "only {cut} regrids were shortened");
}

#[test]
fn a_refusal_advises_only_what_can_be_lowered() {
    let text = pipeline(
        "1 MiB",
        "shape = [2000, 2000]\nchunks = [1000, 1000]\nparallel = 1\ncapacity = 1",
        "kind = \"expr\"\nexpr = \"x * 2\"\nparallel = 1\ncapacity = 1",
    );
    let e = refusal(&text);
    assert!(e.contains("`memory` is 1.00 MiB"), "{e}");
    assert!(
        !e.contains("`parallel`") && !e.contains("`capacity`"),
        "{e}"
    );
    assert!(e.contains("Use smaller chunks"), "{e}");
    let text = pipeline(
        "1 MiB",
        "shape = [2000, 2000]\nchunks = [1000, 1000]\nparallel = 4\ncapacity = 1",
        "kind = \"expr\"\nexpr = \"x * 2\"\nparallel = 4\ncapacity = 1",
    );
    let e = refusal(&text);
    assert!(e.contains("Lower its `parallel`,"), "{e}");
}

#[test]
fn a_budget_spread_over_many_stages_names_the_largest() {
    let mut text = pipeline(
        "40 MiB",
        "shape = [1000, 1000]\nchunks = [500, 500]\nparallel = 1\ncapacity = 1",
        "kind = \"expr\"\nexpr = \"x + 1\"\nparallel = 1\ncapacity = 1",
    );
    for i in 0..12 {
        text.push_str(&format!(
            "\n[stage.e{i}]\nkind = \"expr\"\ninputs = [\"src\"]\nexpr = \"x * {i}\"\nparallel = 1\ncapacity = 1\n\n[stage.w{i}]\nkind = \"write-zarr\"\ninputs = [\"e{i}\"]\npath = \"/nonexistent/w{i}.zarr\"\nparallel = 1\n"
        ));
    }
    let e = refusal(&text);
    assert!(e.contains("No one stage holds most of it"), "{e}");
    assert!(e.contains("\"e0\" "), "{e}");
}
