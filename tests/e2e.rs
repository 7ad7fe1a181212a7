//! The binary end to end: results, chunk invariance, every kind of bad
//! input, interrupts and panics.

mod common;

use blockflow_core::ArrayData;
use common::*;

fn pipeline(dir: &std::path::Path, chunks: &str, capacity: usize, out: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!("p-{out}.toml"),
        &format!(
            r#"
[pipeline]
memory = "256 MiB"
capacity = {capacity}

[stage.img]
kind = "synthetic"
pattern = "terrain"
shape = [203, 157, 4]
chunks = {chunks}
dtype = "uint8"

[stage.noise]
kind = "synthetic"
pattern = "noise"
shape = [203, 157]
chunks = {chunks2}
dtype = "float32"
seed = 9

[stage.feet]
kind = "expr"
inputs = ["img", "noise"]
expr = "(1070 / 255) * (0.21*img[..., 0] + 0.72*img[..., 1] + 0.07*img[..., 2]) + 30 + noise"

[stage.out]
kind = "write-zarr"
inputs = ["feet"]
path = "{out}.zarr"
"#,
            chunks2 = {
                let v: Vec<&str> = chunks
                    .trim_matches(|c| c == '[' || c == ']')
                    .split(',')
                    .collect();
                format!("[{}, {}]", v[0].trim(), v[1].trim())
            },
        ),
    )
}

#[test]
fn same_result_for_every_chunk_shape_and_capacity() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut results = Vec::new();
    // A small deterministic sweep of chunk shapes (including 1-pixel-wide
    // and whole-array chunks) and channel capacities.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        1 + state % n
    };
    let mut cases = vec![
        ("[203, 157, 4]".to_string(), 1),
        ("[1, 157, 4]".to_string(), 3),
    ];
    for _ in 0..6 {
        cases.push((
            format!("[{}, {}, 4]", next(120), next(90)),
            next(4) as usize,
        ));
    }
    for (k, (chunks, cap)) in cases.iter().enumerate() {
        let name = format!("out{k}");
        let cfg = pipeline(dir.path(), chunks, *cap, &name);
        let (code, _, err) = blockflow(&[
            "run",
            "-q",
            cfg.to_str().expect("utf8"),
            "--report",
            dir.path()
                .join(format!("{name}.json"))
                .to_str()
                .expect("utf8"),
        ]);
        assert_eq!(code, 0, "chunks {chunks}: {err}");
        results.push((
            chunks.clone(),
            read_all(&dir.path().join(format!("{name}.zarr"))),
        ));
    }
    let (c0, first) = &results[0];
    assert!(
        matches!(first, ArrayData::F64(_)),
        "u8 * float literal is float64"
    );
    for (c, r) in &results[1..] {
        assert_eq!(r, first, "chunks {c} differ from {c0}");
    }
    // And it is the formula: check one pixel against a direct computation.
    let ArrayData::F64(a) = first else {
        unreachable!()
    };
    assert!(
        a.iter().all(|v| (30.0..1101.0).contains(v)),
        "feet in range"
    );
}

#[test]
fn plan_text_dot_stages_and_inspect() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = pipeline(dir.path(), "[50, 50, 4]", 2, "o");
    let (code, out, err) = blockflow(&["plan", cfg.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("projected peak"), "{out}");
    assert!(
        out.contains("feet") && out.contains("[203, 157]") && out.contains("float64"),
        "{out}"
    );
    let (code, out, _) = blockflow(&["plan", "--dot", cfg.to_str().expect("utf8")]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("digraph") && out.contains("\"img\" -> \"feet\""),
        "{out}"
    );
    let (code, out, _) = blockflow(&["stages"]);
    assert_eq!(code, 0);
    for k in [
        "synthetic",
        "read-zarr",
        "expr",
        "write-zarr",
        "if_exists",
        "capacity",
    ] {
        assert!(out.contains(k), "stages lists {k}");
    }
    let (code, _, err) = blockflow(&[
        "run",
        "-q",
        cfg.to_str().expect("utf8"),
        "--report",
        dir.path().join("r.json").to_str().expect("utf8"),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) =
        blockflow(&["inspect", dir.path().join("o.zarr").to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("(203, 157)")
            && out.contains("float64")
            && out.contains("(50, 50)")
            && out.contains("zstd"),
        "{out}"
    );
    assert!(out.contains("20 chunks"), "{out}");
    // The report has per-stage numbers.
    let rep: serde_json::Value = read_json(dir.path().join("r.json"));
    assert_eq!(rep["ok"], true);
    assert_eq!(rep["stages"][0]["chunks_out"], 20);
    assert!(rep["peak_rss_bytes"].as_u64().expect("rss") > 0);
    assert!(rep["peak_buffered_bytes"].as_u64() <= rep["projected_bytes"].as_u64());
}

#[test]
fn read_regrid_and_write_formats_roundtrip() {
    let dir = tempfile::tempdir().expect("tmp");
    let src = write_config(
        dir.path(),
        "src.toml",
        r#"
[stage.a]
kind = "synthetic"
pattern = "ramp"
shape = [60, 70]
chunks = [20, 35]
dtype = "int32"

[stage.w]
kind = "write-zarr"
inputs = ["a"]
path = "a.zarr"
format = 2
codec = "blosc"
"#,
    );
    assert_eq!(blockflow(&["run", "-q", src.to_str().expect("u")]).0, 0);
    // Re-grid on read (12 x 7 chunks over 20 x 35 stored ones), write v3 with
    // smaller stored chunks that divide the stream's.
    let cfg = write_config(
        dir.path(),
        "copy.toml",
        r#"
[stage.r]
kind = "read-zarr"
path = "a.zarr"
chunks = [12, 14]

[stage.e]
kind = "expr"
inputs = ["r"]
expr = "where(r % 2 == 0, r // 2, -r)"

[stage.w]
kind = "write-zarr"
inputs = ["e"]
path = "b.zarr"
chunks = [6, 7]
codec = "gzip"
"#,
    );
    let (code, _, err) = blockflow(&[
        "run",
        "-q",
        cfg.to_str().expect("u"),
        "--report",
        dir.path().join("r.json").to_str().expect("u"),
    ]);
    assert_eq!(code, 0, "{err}");
    let ArrayData::I32(a) = read_all(&dir.path().join("a.zarr")) else {
        panic!("i32")
    };
    // numpy: int32 with weak integer literals stays int32.
    let ArrayData::I32(b) = read_all(&dir.path().join("b.zarr")) else {
        panic!("int32 result")
    };
    for (x, y) in a.iter().zip(b.iter()) {
        let want = if x % 2 == 0 { *x / 2 } else { -*x };
        assert_eq!(*y, want);
    }
}

#[test]
fn existing_output_fails_unless_overwrite() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = pipeline(dir.path(), "[100, 100, 4]", 2, "x");
    let c = cfg.to_str().expect("u");
    assert_eq!(blockflow(&["run", "-q", c]).0, 0);
    let (code, _, err) = blockflow(&["run", "-q", c]);
    assert_eq!(code, 1);
    assert!(
        err.contains("already exists") && err.contains("if_exists"),
        "{err}"
    );
    let (code, _, err) = blockflow(&["run", "-q", c, "--set", "out.if_exists=overwrite"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn every_validation_error_is_reported_at_once_with_file_line_and_stage() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        "bad.toml",
        r#"[pipeline]
memory = "1 GiB"
threads = 0

[stage.img]
kind = "synthetc"
shape = [10, 10]

[stage.a]
kind = "synthetic"
shape = [10, 10]
chunks = [5, 5]
colour = "red"

[stage.b]
kind = "expr"
inputs = ["aa"]
expr = "a + 1"

[stage.c]
kind = "expr"
inputs = ["d"]
expr = "d * 2"

[stage.d]
kind = "expr"
inputs = ["c"]
expr = "c * 2"

[stage.w]
kind = "write-zarr"
inputs = []
path = "o.zarr"
level = 99
"#,
    );
    let (code, _, err) = blockflow(&["plan", cfg.to_str().expect("u")]);
    assert_eq!(code, 2, "{err}");
    let f = cfg.to_str().expect("u");
    for want in [
        format!("{f}:3:11: `threads`: 0 is out of range"),
        format!(
            "{f}:6:8: stage \"img\": unknown stage kind \"synthetc\"; did you mean \"synthetic\"?"
        ),
        format!("{f}:13:1: stage \"a\": unknown parameter `colour`"),
        format!("{f}:17:11: stage \"b\": input \"aa\" is not a stage; did you mean \"a\"?"),
        "the inputs form a cycle through c -> d".to_string(),
        "stage \"w\": a \"write-zarr\" stage takes exactly 1 input, got 0".to_string(),
        format!("{f}:34:9: stage \"w\": `level`: 99 is out of range"),
    ] {
        assert!(err.contains(&want), "missing `{want}` in:\n{err}");
    }
    assert!(err.lines().count() >= 7, "{err}");
}

#[test]
fn expression_errors_point_into_the_expression() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        "e.toml",
        r#"[stage.img]
kind = "synthetic"
shape = [10, 10, 3]
chunks = [5, 5, 3]

[stage.g]
kind = "expr"
inputs = ["img"]
expr = "img[..., 0] + sqrtt(img[..., 1])"
"#,
    );
    let (code, _, err) = blockflow(&["plan", cfg.to_str().expect("u")]);
    assert_eq!(code, 2);
    let f = cfg.to_str().expect("u");
    assert!(err.contains(&format!("{f}:9:23: stage \"g\": in the expression, column 15: unknown function `sqrtt`; did you mean `sqrt`?")), "{err}");
}

#[test]
fn malformed_toml_and_missing_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        "m.toml",
        "[stage.a]\nkind = \"synthetic\"\nshape = [1, 2\n",
    );
    let (code, _, err) = blockflow(&["plan", cfg.to_str().expect("u")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("m.toml:3:") && err.contains("not valid TOML"),
        "{err}"
    );
    let (code, _, err) = blockflow(&["run", dir.path().join("nope.toml").to_str().expect("u")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("nope.toml: cannot read the pipeline file"),
        "{err}"
    );
}

fn reader_config(dir: &std::path::Path, path: &str) -> std::path::PathBuf {
    write_config(
        dir,
        "r.toml",
        &format!(
            r#"[stage.r]
kind = "read-zarr"
path = "{path}"

[stage.w]
kind = "write-zarr"
inputs = ["r"]
path = "copy.zarr"
"#
        ),
    )
}

#[test]
fn bad_inputs_name_the_file_stage_and_chunk() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    // Missing path.
    let cfg = reader_config(d, "missing.zarr");
    let (code, _, err) = blockflow(&["run", cfg.to_str().expect("u")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("r.toml:3:8: stage \"r\":") && err.contains("missing.zarr: no such file"),
        "{err}"
    );
    // A directory that is not a Zarr array.
    std::fs::create_dir(d.join("plain")).expect("mkdir");
    let cfg = reader_config(d, "plain");
    let (code, _, err) = blockflow(&["run", cfg.to_str().expect("u")]);
    assert_eq!(code, 2);
    assert!(err.contains("not a Zarr array"), "{err}");
    // A dtype blockflow does not take.
    std::fs::create_dir(d.join("cplx.zarr")).expect("mkdir");
    std::fs::write(
        d.join("cplx.zarr/zarr.json"),
        r#"{"zarr_format":3,"node_type":"array","shape":[4],"data_type":"complex64","chunk_grid":{"name":"regular","configuration":{"chunk_shape":[2]}},"chunk_key_encoding":{"name":"default"},"fill_value":[0.0,0.0],"codecs":[{"name":"bytes","configuration":{"endian":"little"}}]}"#,
    )
    .expect("write");
    let cfg = reader_config(d, "cplx.zarr");
    let (code, _, err) = blockflow(&["run", cfg.to_str().expect("u")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("stage \"r\"") && err.contains("complex64") && err.contains("not supported"),
        "{err}"
    );
    // A corrupt chunk: the run fails naming the chunk, and no output appears.
    let src = write_config(d, "mk.toml", "[stage.a]\nkind = \"synthetic\"\nshape = [40, 40]\nchunks = [10, 10]\n\n[stage.w]\nkind = \"write-zarr\"\ninputs = [\"a\"]\npath = \"good.zarr\"\n");
    assert_eq!(blockflow(&["run", "-q", src.to_str().expect("u")]).0, 0);
    std::fs::write(d.join("good.zarr/c/2/1"), b"this is not zstd").expect("corrupt");
    let cfg = reader_config(d, "good.zarr");
    let (code, _, err) = blockflow(&["run", "-q", cfg.to_str().expect("u")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("stage \"r\", chunk [2, 1]") && err.contains("good.zarr"),
        "{err}"
    );
    assert!(
        !d.join("copy.zarr").exists() && nothing_named(d, "copy.zarr"),
        "no output, work folder or lock after a failure"
    );
    // A dtype an expression cannot take.
    let cfg = write_config(d, "t.toml", "[stage.a]\nkind = \"synthetic\"\nshape = [4]\nchunks = [2]\n\n[stage.e]\nkind = \"expr\"\ninputs = [\"a\"]\nexpr = \"~a\"\n");
    let (code, _, err) = blockflow(&["plan", cfg.to_str().expect("u")]);
    assert_eq!(code, 2);
    assert!(err.contains("`~` needs bool or integer values"), "{err}");
}

#[test]
fn a_budget_too_small_is_refused_with_what_to_change() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = pipeline(dir.path(), "[203, 157, 4]", 2, "b");
    let (code, _, err) = blockflow(&[
        "plan",
        cfg.to_str().expect("u"),
        "--set",
        "pipeline.memory=\"1 MiB\"",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the plan needs")
            && err.contains("`memory` is 1.00 MiB")
            && err.contains("parallel"),
        "{err}"
    );
}

#[test]
fn a_panicking_stage_stops_the_run_with_an_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = pipeline(dir.path(), "[20, 20, 4]", 1, "p");
    let out = bin()
        .args(["run", "-q", cfg.to_str().expect("u")])
        .env("BLOCKFLOW_FAULT", "panic:feet:7")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stage \"feet\"")
            && err.contains("panicked")
            && err.contains("injected fault"),
        "{err}"
    );
    assert!(!dir.path().join("p.zarr").exists());
}

#[test]
fn interrupt_stops_cleanly_and_commits_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        "long.toml",
        "[pipeline]\ncapacity = 1\n\n[stage.a]\nkind = \"synthetic\"\npattern = \"survey\"\nshape = [20000, 20000, 3]\nchunks = [500, 500, 3]\n\n[stage.w]\nkind = \"write-zarr\"\ninputs = [\"a\"]\npath = \"big.zarr\"\n",
    );
    let child = bin()
        .args([
            "run",
            "-q",
            cfg.to_str().expect("u"),
            "--report",
            dir.path().join("r.json").to_str().expect("u"),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let ok = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
    let t = std::time::Instant::now();
    let out = child.wait_with_output().expect("wait");
    assert!(t.elapsed().as_secs() < 30, "stops promptly");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(nothing_named(dir.path(), "big.zarr"));
    let rep: serde_json::Value = read_json(dir.path().join("r.json"));
    assert_eq!(rep["ok"], false);
}

#[test]
fn the_stage_reference_in_docs_is_current() {
    let (code, out, _) = blockflow(&["stages"]);
    assert_eq!(code, 0);
    let doc = std::fs::read_to_string(root().join("docs/stages.md")).expect("docs/stages.md");
    assert!(
        doc.contains(&out),
        "docs/stages.md is out of date: run scripts/gen-docs"
    );
    // The keys of the shipped configs' JSON results, as the plan gives
    // them (one that plans without input data here).
    let (code, plan, err) = blockflow(&[
        "plan",
        root()
            .join("configs/elevation.toml")
            .to_str()
            .expect("utf8"),
    ]);
    assert_eq!(code, 0, "{err}");
    let keys: Vec<&str> = plan
        .lines()
        .filter_map(|l| l.strip_prefix("      key "))
        .collect();
    assert!(keys.len() >= 11, "{plan}");
    for k in keys {
        assert!(
            doc.contains(&format!("    {k}\n")),
            "docs/stages.md lacks the key line `{k}`: run scripts/gen-docs"
        );
    }
}

#[test]
fn a_writer_cannot_feed_a_stage() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        "w.toml",
        "[stage.a]\nkind = \"synthetic\"\nshape = [4]\nchunks = [2]\n\n[stage.w]\nkind = \"write-zarr\"\ninputs = [\"a\"]\npath = \"o.zarr\"\n\n[stage.e]\nkind = \"expr\"\ninputs = [\"w\"]\nexpr = \"w + 1\"\n\n[stage.w2]\nkind = \"write-zarr\"\ninputs = [\"w\"]\npath = \"o2.zarr\"\n",
    );
    let (code, _, err) = blockflow(&["plan", cfg.to_str().expect("u")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("stage \"e\": input \"w\" is a writer and sends nothing"),
        "{err}"
    );
    assert!(
        err.contains("stage \"w2\": input \"w\" is a writer and sends nothing"),
        "{err}"
    );
}

#[test]
fn a_killed_run_leaves_only_whole_chunks() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        "k.toml",
        "[stage.a]\nkind = \"synthetic\"\npattern = \"survey\"\nshape = [20000, 20000, 3]\nchunks = [250, 250, 3]\n\n[stage.w]\nkind = \"write-zarr\"\ninputs = [\"a\"]\npath = \"k.zarr\"\n",
    );
    let mut child = bin()
        .args([
            "run",
            "-q",
            cfg.to_str().expect("u"),
            "--report",
            dir.path().join("r.json").to_str().expect("u"),
        ])
        .spawn()
        .expect("spawn");
    // Kill it hard once chunks are being written.
    // The run's own work folder (per-run names: PATH.partial-<pid>).
    let partial = dir.path().join(format!("k.zarr.partial-{}", child.id()));
    let t = std::time::Instant::now();
    let count = |p: &std::path::Path| {
        walk(p)
            .iter()
            .filter(|f| {
                !f.file_name()
                    .expect("name")
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count()
    };
    while count(&partial.join("c")) < 20 && t.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    assert!(!dir.path().join("k.zarr").exists(), "nothing committed");
    let files = walk(&partial.join("c"));
    let chunks: Vec<_> = files
        .iter()
        .filter(|p| {
            !p.file_name()
                .expect("name")
                .to_string_lossy()
                .starts_with('.')
        })
        .collect();
    assert!(
        chunks.len() >= 20,
        "chunks were written before the kill: {} files, {:?}",
        files.len(),
        files.iter().take(3).collect::<Vec<_>>()
    );
    // Every chunk file that exists decodes: none is half-written.
    let r = blockflow_io::zarr::ZarrReader::open(&partial).expect("open partial");
    for c in chunks {
        let rel = c.strip_prefix(partial.join("c")).expect("under c/");
        let idx: Vec<u64> = rel
            .iter()
            .map(|s| s.to_string_lossy().parse().expect("index"))
            .collect();
        let region =
            blockflow_core::Region::new(idx.iter().map(|i| i * 250).collect(), vec![250, 250, 3]);
        r.read(&region, &idx)
            .unwrap_or_else(|e| panic!("chunk {idx:?} is damaged: {e}"));
    }
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn stencil_pipeline(
    dir: &std::path::Path,
    chunks: [u64; 2],
    cap: usize,
    tag: &str,
    mode: &str,
) -> std::path::PathBuf {
    write_config(
        dir,
        &format!("s-{tag}.toml"),
        &format!(
            r#"
[pipeline]
capacity = {cap}

[stage.img]
kind = "synthetic"
pattern = "survey"
shape = [90, 110, 3]
chunks = [{c0}, {c1}, 3]
seed = 5

[stage.blur]
kind = "filter"
filter = "gaussian"
inputs = ["img"]
sigma = [1.5, 2.5, 0]
order = [0, 1, 0]
mode = "{mode}"

[stage.edges]
kind = "filter"
filter = "sobel"
inputs = ["blur"]
axis = 0
mode = "nearest"

[stage.st]
kind = "structure-tensor"
inputs = ["img"]
mode = "{mode}"

[stage.w1]
kind = "write-zarr"
inputs = ["edges"]
path = "edges-{tag}.zarr"

[stage.w2]
kind = "write-zarr"
inputs = ["st"]
path = "st-{tag}.zarr"
"#,
            c0 = chunks[0],
            c1 = chunks[1],
        ),
    )
}

#[test]
fn stencils_are_chunk_invariant_and_equal_the_whole_array_kernels() {
    use blockflow_kernels::filters::{self, Boundary};
    use blockflow_kernels::tensor::{self, TensorParams};
    let dir = tempfile::tempdir().expect("tmp");
    for mode in ["reflect", "none", "constant"] {
        let mut outs = Vec::new();
        for (k, (chunks, cap)) in [
            ([90, 110], 1),
            ([7, 9], 2),
            ([30, 11], 1),
            ([45, 110], 3),
            ([13, 50], 2),
        ]
        .iter()
        .enumerate()
        {
            let tag = format!("{mode}{k}");
            let cfg = stencil_pipeline(dir.path(), *chunks, *cap, &tag, mode);
            let (code, _, err) = blockflow(&[
                "run",
                "-q",
                cfg.to_str().expect("u"),
                "--report",
                dir.path().join(format!("{tag}.json")).to_str().expect("u"),
            ]);
            assert_eq!(code, 0, "{mode} {chunks:?}: {err}");
            let e = read_all(&dir.path().join(format!("edges-{tag}.zarr")));
            let s = read_all(&dir.path().join(format!("st-{tag}.zarr")));
            outs.push((chunks, e, s));
        }
        let (_, e0, s0) = &outs[0];
        for (c, e, s) in &outs[1..] {
            assert_eq!(e, e0, "{mode}: filter chain with chunks {c:?}");
            let (ArrayData::F64(a), ArrayData::F64(b)) = (s, s0) else {
                panic!("f64")
            };
            assert!(
                a.iter()
                    .zip(b.iter())
                    .all(|(x, y)| x == y || (x.is_nan() && y.is_nan())),
                "{mode}: structure tensor with chunks {c:?}"
            );
        }
        // The whole-array kernels give the same numbers.
        let img = blockflow_io::synthetic::generate(
            blockflow_io::synthetic::Pattern::Survey,
            5,
            &[90, 110, 3],
            blockflow_core::DType::F32,
            &blockflow_core::Region::new(vec![0, 0, 0], vec![90, 110, 3]),
        );
        let ArrayData::F32(img) = img else {
            panic!("f32")
        };
        let m = Boundary::parse(mode, 0.0).expect("mode");
        let blur = filters::gaussian_filter(img.view(), &[1.5, 2.5, 0.0], &[0, 1, 0], m, 4.0, None);
        let edges = filters::sobel(blur.view(), 0, Boundary::Nearest);
        let ArrayData::F32(e0) = e0 else {
            panic!("f32")
        };
        let worst = e0
            .iter()
            .zip(edges.iter())
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
            .fold(0.0f32, f32::max);
        assert!(
            worst < 1e-5,
            "{mode}: filter chain vs whole-array kernels: {worst}"
        );
        let (v, shape) = filters::as_f64(img.view());
        let st = tensor::structure_tensor(&v, &shape, &TensorParams::seed(m));
        let f = tensor::features(&st, 90, 110, 3);
        let ArrayData::F64(s0) = s0 else {
            panic!("f64")
        };
        for (a, b) in s0.iter().zip(&f) {
            assert!(
                (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-12 * b.abs().max(1e-12),
                "{mode}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn blocks_of_interest_and_png_previews() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        "bp.toml",
        r#"
[stage.img]
kind = "synthetic"
pattern = "ramp"
shape = [40, 60]
chunks = [10, 20]
dtype = "float64"

[stage.blocks]
kind = "write-blocks"
inputs = ["img"]
threshold = 2000
path = "blocks.json"
csv = "blocks.csv"

[stage.rgb]
kind = "synthetic"
pattern = "survey"
shape = [300, 500, 3]
chunks = [64, 100, 3]

[stage.preview]
kind = "write-png"
inputs = ["img"]
path = "img.png"
colormap = "viridis"
max_size = 30

[stage.preview_rgb]
kind = "write-png"
inputs = ["rgb"]
path = "rgb.png"
region = [100, 300, 0, 250]
"#,
    );
    let (code, _, err) = blockflow(&[
        "run",
        "-q",
        cfg.to_str().expect("u"),
        "--report",
        dir.path().join("r.json").to_str().expect("u"),
    ]);
    assert_eq!(code, 0, "{err}");
    // ramp: value = 60*y + x; above 2000 means y >= 33 (or y = 33, x > 20).
    let doc: serde_json::Value = read_json(dir.path().join("blocks.json"));
    assert_eq!(
        doc["blocks_of_interest"],
        serde_json::json!([[3, 0], [3, 1], [3, 2]])
    );
    assert_eq!(doc["count"], 3);
    let csv = std::fs::read_to_string(dir.path().join("blocks.csv")).expect("csv");
    assert_eq!(csv.lines().count(), 1 + 12);
    assert!(csv.starts_with("block_0,block_1,above,max\n"), "{csv}");
    // Block (3, 0): rows 30..40, cols 0..20: values above 2000 are y >= 34 (all 20 cols) and y = 33, x > 20 (none here).
    assert!(csv.contains("\n3,0,120,2359\n"), "{csv}");
    // img: 40 x 60 down to 30 px. rgb: a 200 x 250 region, enlarged twice
    // to reach min_size 256 on its shorter side.
    for (name, w, h) in [("img.png", 30, 20), ("rgb.png", 500, 400)] {
        let bytes = std::fs::read(dir.path().join(name)).expect("png");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name} is a PNG");
        // IHDR: width and height, big-endian, at bytes 16..24.
        let wd = u32::from_be_bytes(bytes[16..20].try_into().expect("4"));
        let ht = u32::from_be_bytes(bytes[20..24].try_into().expect("4"));
        assert_eq!((wd, ht), (w, h), "{name} size");
    }
}

#[test]
fn set_can_point_a_config_at_your_own_zarr() {
    let dir = tempfile::tempdir().expect("tmp");
    // A user's image.
    let mk = write_config(
        dir.path(),
        "mk.toml",
        "[stage.a]\nkind = \"synthetic\"\npattern = \"survey\"\nshape = [300, 260, 3]\nchunks = [100, 100, 3]\n\n[stage.w]\nkind = \"write-zarr\"\ninputs = [\"a\"]\npath = \"mine.zarr\"\n",
    );
    assert_eq!(blockflow(&["run", "-q", mk.to_str().expect("u")]).0, 0);
    let cfg = root().join("configs/structure-tensor.toml");
    let t = dir.path().to_str().expect("u");
    let sets = [
        "img.kind=read-zarr".to_string(),
        format!("img.path={t}/mine.zarr"),
        format!("features.path={t}/f.zarr"),
        format!("blocks.path={t}/b.json"),
        format!("blocks.csv={t}/b.csv"),
        format!("image_png.path={t}/i.png"),
        format!("block_png.path={t}/bp.png"),
        "block_png.region=[0, 100, 0, 100]".to_string(),
        format!("features_png.path={t}/fp.png"),
        format!("pipeline.report={t}/r.json"),
    ];
    let (code, _, err) = run_with_sets(&cfg, &sets);
    assert_eq!(code, 0, "{err}");
    let r = blockflow_io::zarr::ZarrReader::open(&dir.path().join("f.zarr")).expect("features");
    assert_eq!(r.info.shape, vec![300, 260]);
}

#[test]
fn a_diamond_around_a_halo_does_not_deadlock() {
    // img feeds `sharp` directly and through a blur that needs a halo two
    // rows of chunks deep: the direct edge must hold the chunks the blur's
    // window runs ahead, or the graph would wait on itself forever.
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        "d.toml",
        r#"
[pipeline]
capacity = 1

[stage.img]
kind = "synthetic"
pattern = "noise"
shape = [100, 120]
chunks = [10, 10]

[stage.blur]
kind = "filter"
filter = "gaussian"
inputs = ["img"]
sigma = 4.0

[stage.sharp]
kind = "expr"
inputs = ["img", "blur"]
expr = "img + 0.7 * (img - blur)"

[stage.w]
kind = "write-zarr"
inputs = ["sharp"]
path = "sharp.zarr"
"#,
    );
    let mut child = bin()
        .args([
            "run",
            "-q",
            cfg.to_str().expect("u"),
            "--report",
            dir.path().join("r.json").to_str().expect("u"),
        ])
        .spawn()
        .expect("spawn");
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t.elapsed().as_secs() > 60 {
            let _ = child.kill();
            panic!("the run hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success());
    let out = read_all(&dir.path().join("sharp.zarr"));
    assert_eq!(out.shape(), &[100, 120]);
}

#[test]
fn reductions_per_block_and_whole_through_the_engine() {
    use blockflow_kernels::reduce::{Partial, Reduction};
    let dir = tempfile::tempdir().expect("tmp");
    let shape = [50u64, 70];
    let img = blockflow_io::synthetic::generate(
        blockflow_io::synthetic::Pattern::Noise,
        4,
        &shape,
        blockflow_core::DType::F64,
        &blockflow_core::Region::new(vec![0, 0], shape.to_vec()),
    );
    let ArrayData::F64(img) = img else {
        panic!("f64")
    };
    let v: Vec<f64> = img.iter().copied().collect();
    for chunks in [[10u64, 14], [7, 70], [50, 3]] {
        let tag = format!("{}x{}", chunks[0], chunks[1]);
        let cfg = write_config(
            dir.path(),
            &format!("r{tag}.toml"),
            &format!(
                "[stage.a]\nkind = \"synthetic\"\npattern = \"noise\"\nshape = [50, 70]\nchunks = [{}, {}]\ndtype = \"float64\"\nseed = 4\n\n\
[stage.std]\nkind = \"reduce\"\ninputs = [\"a\"]\nop = \"std\"\nover = \"blocks\"\nddof = 1\n\n\
[stage.mean]\nkind = \"reduce\"\ninputs = [\"a\"]\nop = \"mean\"\n\n\
[stage.arg]\nkind = \"reduce\"\ninputs = [\"a\"]\nop = \"argmin\"\n\n\
[stage.w1]\nkind = \"write-zarr\"\ninputs = [\"std\"]\npath = \"std-{tag}.zarr\"\n\n\
[stage.w2]\nkind = \"write-zarr\"\ninputs = [\"mean\"]\npath = \"mean-{tag}.zarr\"\n\n\
[stage.w3]\nkind = \"write-zarr\"\ninputs = [\"arg\"]\npath = \"arg-{tag}.zarr\"\n",
                chunks[0], chunks[1]
            ),
        );
        let (code, _, err) = blockflow(&[
            "run",
            "-q",
            cfg.to_str().expect("u"),
            "--report",
            dir.path().join(format!("{tag}.json")).to_str().expect("u"),
        ]);
        assert_eq!(code, 0, "{err}");
        // Per block, against the kernel on each block of the whole array.
        let ArrayData::F64(std) = read_all(&dir.path().join(format!("std-{tag}.zarr"))) else {
            panic!("f64")
        };
        let (gy, gx) = (
            50u64.div_ceil(chunks[0]) as usize,
            70u64.div_ceil(chunks[1]) as usize,
        );
        assert_eq!(std.shape(), &[gy, gx]);
        for by in 0..gy {
            for bx in 0..gx {
                let (y0, x0) = (by * chunks[0] as usize, bx * chunks[1] as usize);
                let (y1, x1) = (
                    (y0 + chunks[0] as usize).min(50),
                    (x0 + chunks[1] as usize).min(70),
                );
                let p = Partial::of(
                    (y0..y1)
                        .flat_map(|y| (x0..x1).map(move |x| ((y * 70 + x) as u64, 0.0)))
                        .map(|(i, _)| (i, v[i as usize])),
                    false,
                );
                let want = p.finish(Reduction::Std, 1);
                assert!(
                    (std[[by, bx]] - want).abs() <= 1e-12 * want.abs(),
                    "{tag} block ({by},{bx})"
                );
            }
        }
        let ArrayData::F64(mean) = read_all(&dir.path().join(format!("mean-{tag}.zarr"))) else {
            panic!("f64")
        };
        let want = v.iter().sum::<f64>() / v.len() as f64;
        assert!((mean[[0]] - want).abs() <= 1e-12 * want.abs(), "{tag} mean");
        let ArrayData::I64(arg) = read_all(&dir.path().join(format!("arg-{tag}.zarr"))) else {
            panic!("i64")
        };
        let amin = v
            .iter()
            .enumerate()
            .fold(
                (0, f64::INFINITY),
                |(bi, bv), (i, &x)| if x < bv { (i, x) } else { (bi, bv) },
            )
            .0;
        assert_eq!(arg[[0]], amin as i64, "{tag} argmin");
    }
}

#[test]
fn rechunk_to_any_grid_keeps_the_data() {
    let dir = tempfile::tempdir().expect("tmp");
    let grids = [
        "[16, 9, 3]",
        "[45, 70, 3]",
        "[1, 70, 3]",
        "[7, 5, 1]",
        "[10, 14, 3]",
    ];
    // Each grid in memory and through disk (the intermediate store's chunks
    // then follow the gcd of the two grids: 1 x 1 x 1 for [7, 5, 1]).
    for (k, (to, route)) in grids
        .iter()
        .flat_map(|g| [(g, "memory"), (g, "disk")])
        .enumerate()
    {
        let cfg = write_config(
            dir.path(),
            &format!("rc{k}.toml"),
            &format!(
                "[stage.a]\nkind = \"synthetic\"\npattern = \"ramp\"\nshape = [45, 70, 3]\nchunks = [10, 14, 3]\ndtype = \"int32\"\n\n\
[pipeline]\nscratch = \"scratch\"\n\n\
[stage.r]\nkind = \"rechunk\"\ninputs = [\"a\"]\nchunks = {to}\nroute = \"{route}\"\n\n\
[stage.w]\nkind = \"write-zarr\"\ninputs = [\"r\"]\npath = \"rc{k}.zarr\"\n"
            ),
        );
        let report = dir.path().join(format!("rc{k}.json"));
        let (code, out, err) = blockflow(&["plan", cfg.to_str().expect("u")]);
        assert_eq!(code, 0, "{err}");
        let how = if route == "disk" {
            "through disk"
        } else {
            "holding up to"
        };
        assert!(out.contains(how), "{out}");
        let (code, _, err) = blockflow(&[
            "run",
            "-q",
            cfg.to_str().expect("u"),
            "--report",
            report.to_str().expect("u"),
        ]);
        assert_eq!(code, 0, "rechunk to {to}: {err}");
        let r = blockflow_io::zarr::ZarrReader::open(&dir.path().join(format!("rc{k}.zarr")))
            .expect("open");
        let want: Vec<u64> = to
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|v| v.trim().parse().expect("n"))
            .collect();
        assert_eq!(r.info.chunks, want);
        let data = read_all(&dir.path().join(format!("rc{k}.zarr")));
        let ArrayData::I32(a) = &data else {
            panic!("i32")
        };
        for (i, v) in a.iter().enumerate() {
            assert_eq!(*v as usize, i, "ramp value at {i} after rechunk to {to}");
        }
        let rep: serde_json::Value = read_json(&report);
        assert!(
            rep["peak_buffered_bytes"].as_u64() <= rep["projected_bytes"].as_u64(),
            "{to}"
        );
        let left = std::fs::read_dir(dir.path().join("scratch")).map_or(0, |d| d.count());
        assert_eq!(left, 0, "the intermediate store of {to} was left behind");
    }
}

#[test]
fn small_results_as_one_json_document() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        "j.toml",
        "[stage.a]\nkind = \"synthetic\"\npattern = \"ramp\"\nshape = [20, 30]\nchunks = [10, 10]\ndtype = \"int32\"\n\n\
[stage.mean]\nkind = \"reduce\"\ninputs = [\"a\"]\nop = \"mean\"\n\n\
[stage.block_max]\nkind = \"reduce\"\ninputs = [\"a\"]\nop = \"max\"\nover = \"blocks\"\n\n\
[stage.where_min]\nkind = \"reduce\"\ninputs = [\"a\"]\nop = \"argmin\"\n\n\
[stage.summary]\nkind = \"write-json\"\ninputs = [\"mean\", \"block_max\", \"where_min\"]\npath = \"summary.json\"\n",
    );
    let (code, _, err) = blockflow(&[
        "run",
        "-q",
        cfg.to_str().expect("u"),
        "--report",
        dir.path().join("r.json").to_str().expect("u"),
    ]);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = read_json(dir.path().join("summary.json"));
    assert_eq!(doc["mean"], serde_json::json!(299.5));
    // Block maxima of a ramp 30 wide: block (by, bx) ends at row 10*by+9,
    // col 10*bx+9; max keeps the input's dtype (int32), as numpy.
    assert_eq!(
        doc["block_max"],
        serde_json::json!([[279, 289, 299], [579, 589, 599]])
    );
    assert_eq!(doc["where_min"], serde_json::json!(0));
}

#[test]
fn structure_tensor_energy_and_anisotropy_outputs() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut text = String::from("[stage.img]\nkind = \"synthetic\"\npattern = \"survey\"\nshape = [80, 90, 3]\nchunks = [25, 40, 3]\n\n");
    for out in ["features", "energy", "anisotropy"] {
        text.push_str(&format!(
            "[stage.{out}]\nkind = \"structure-tensor\"\ninputs = [\"img\"]\noutput = \"{out}\"\n\n[stage.w_{out}]\nkind = \"write-zarr\"\ninputs = [\"{out}\"]\npath = \"{out}.zarr\"\n\n"
        ));
    }
    let cfg = write_config(dir.path(), "ea.toml", &text);
    let (code, _, err) = blockflow(&[
        "run",
        "-q",
        cfg.to_str().expect("u"),
        "--report",
        dir.path().join("r.json").to_str().expect("u"),
    ]);
    assert_eq!(code, 0, "{err}");
    let get = |n: &str| match read_all(&dir.path().join(format!("{n}.zarr"))) {
        ArrayData::F64(a) => a,
        _ => panic!("f64"),
    };
    let (f, e, a) = (get("features"), get("energy"), get("anisotropy"));
    assert_eq!(e.shape(), &[80, 90, 3]);
    assert_eq!(f.shape(), &[80, 90]);
    let e: Vec<f64> = e.iter().copied().collect();
    let a: Vec<f64> = a.iter().copied().collect();
    let again = blockflow_kernels::tensor::features_from(&e, &a, 80 * 90, 3);
    for (x, y) in f.iter().zip(&again) {
        assert!(x == y || (x.is_nan() && y.is_nan()), "{x} vs {y}");
    }
}

/// Reductions over chosen axes, as the seeds use them: `sum` over (1, 2)
/// of an int32 ramp (int64, exact), `mean` over axis 0 with keepdims,
/// `argmax` along the last axis; an axis out of range is a config error
/// that names it.
#[test]
fn reduce_over_chosen_axes() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        "ax.toml",
        r#"
[stage.a]
kind = "synthetic"
pattern = "ramp"
shape = [4, 5, 6]
chunks = [3, 2, 4]
dtype = "int32"

[stage.s]
kind = "reduce"
inputs = ["a"]
op = "sum"
axis = [1, 2]

[stage.m]
kind = "reduce"
inputs = ["a"]
op = "mean"
axis = 0
keepdims = true

[stage.am]
kind = "reduce"
inputs = ["a"]
op = "argmax"
axis = -1

[stage.ws]
kind = "write-zarr"
inputs = ["s"]
path = "s.zarr"

[stage.wm]
kind = "write-zarr"
inputs = ["m"]
path = "m.zarr"

[stage.wa]
kind = "write-zarr"
inputs = ["am"]
path = "am.zarr"
"#,
    );
    let (code, _, err) = blockflow(&["run", "-q", cfg.to_str().expect("u")]);
    assert_eq!(code, 0, "{err}");
    let ArrayData::I64(s) = read_all(&dir.path().join("s.zarr")) else {
        panic!("sums of integers are int64")
    };
    for t in 0..4i64 {
        let want: i64 = (0..30).map(|k| t * 30 + k).sum();
        assert_eq!(s[[t as usize]], want);
    }
    let ArrayData::F64(m) = read_all(&dir.path().join("m.zarr")) else {
        panic!("f64 mean")
    };
    assert_eq!(m.shape(), &[1, 5, 6]);
    assert_eq!(m[[0, 2, 3]], (15.0 + 45.0 + 75.0 + 105.0) / 4.0);
    let ArrayData::I64(am) = read_all(&dir.path().join("am.zarr")) else {
        panic!("i64 argmax")
    };
    assert_eq!(am.shape(), &[4, 5]);
    assert!(am.iter().all(|&v| v == 5));

    let bad = std::fs::read_to_string(&cfg)
        .expect("cfg")
        .replace("axis = [1, 2]", "axis = [1, 3]");
    let bad = write_config(dir.path(), "bad.toml", &bad);
    let (code, _, err) = blockflow(&["plan", bad.to_str().expect("u")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("stage \"s\"") && err.contains("axis 3 is out of range"),
        "{err}"
    );
}

/// configs/elevation.toml at 800 x 800: the matrix-product sum equals the
/// exact integer sum computed here from the RGB it wrote; the zoomed
/// block's statistics come from the block the argmin named.
/// An OME-Zarr RGB image's level 0 (stored (c, y, x), as NGFF orders
/// axes) as (y, x, c).
fn ome_rgb_as_yxc(path: &std::path::Path, n: usize) -> ndarray::ArrayD<u8> {
    let ArrayData::U8(cyx) = read_all(path) else {
        panic!("u8")
    };
    assert_eq!(cyx.shape(), &[3, n, n]);
    let mut rgb = cyx;
    rgb.swap_axes(0, 1);
    rgb.swap_axes(1, 2);
    rgb
}

#[test]
fn elevation_exact_matmul_sum_and_the_smoothest_block() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = dir.path();
    let p = |f: &str| t.join(f).display().to_string();
    let sets = vec![
        "terrain.shape=[800, 800, 4]".to_string(),
        format!("pipeline.report={}", p("r.json")),
        format!("rgb_out.path={}", p("rgb.zarr")),
        format!("block_std_out.path={}", p("std.zarr")),
        format!("block_std_png.path={}", p("std.png")),
        format!("summary.path={}", p("s.json")),
    ];
    let (code, _, err) = run_with_sets(&root().join("configs/elevation.toml"), &sets);
    assert_eq!(code, 0, "{err}");
    // The 4 x 4 per-block std as a picture of 4 x 4 squares of 64 pixels.
    let png = std::fs::read(t.join("std.png")).expect("png");
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("4"));
    assert_eq!((size(16), size(20)), (256, 256), "width, height");
    let rgb = ome_rgb_as_yxc(&t.join("rgb.zarr"), 800);
    let (mut r, mut g) = (vec![0i128; 800], vec![0i128; 800]);
    for y in 0..800 {
        for x in 0..800 {
            r[x] += i128::from(rgb[[y, x, 0]]);
            g[x] += i128::from(rgb[[y, x, 1]]);
        }
    }
    let exact: i128 = r.iter().zip(&g).map(|(a, b)| a * b).sum();
    let s: serde_json::Value = read_json(t.join("s.json"));
    assert_eq!(i128::from(s["matmul_sum"].as_i64().expect("int")), exact);
    // The smoothest block: the argmin of the per-block std it wrote.
    let stds = read_all(&t.join("std.zarr")).to_f64();
    let (k, _) =
        stds.iter().enumerate().fold(
            (0, f64::INFINITY),
            |(bk, bv), (k, &v)| if v < bv { (k, v) } else { (bk, bv) },
        );
    assert_eq!(s["smoothest_block"].as_i64(), Some(k as i64));
    let (by, bx) = (k / 4, k % 4);
    // The same block as (row, column) of the 4 x 4 std array, and as the
    // pixels of feet it covers; each key with what it is.
    assert_eq!(s["smoothest_block_index"], serde_json::json!([by, bx]));
    assert_eq!(
        s["smoothest_block_region"],
        serde_json::json!([[by * 200, by * 200 + 200], [bx * 200, bx * 200 + 200]])
    );
    let about = &s["about"];
    assert_eq!(
        about["smoothest_block"],
        "flat index (row-major, numpy's argmin) of the first min of block_std, shape [4, 4]"
    );
    assert_eq!(
        about["smoothest_block_index"],
        "smoothest_block as an index into block_std (shape [4, 4]): [row, column]"
    );
    assert_eq!(
        about["smoothest_block_region"],
        "the part of feet (shape [800, 800], blocks of [200, 200]) that block covers: [start, stop] per axis, stop exclusive"
    );
    assert_eq!(about["block_std"], serde_json::Value::Null, "not an input");
    assert_eq!(about["alpha_min"], "min of terrain[..., 3]");
    assert_eq!(
        about["zoom_max_dx"],
        "differences along axis 1 of zoom_max (numpy's diff)"
    );
    let keys: Vec<&String> = s.as_object().expect("object").keys().collect();
    let described: Vec<&String> = about.as_object().expect("about").keys().collect();
    assert_eq!(
        keys.len(),
        described.len() + 1,
        "every key but about described: {keys:?}"
    );
    let feet = |y: usize, x: usize| {
        let c = |ch: usize| f64::from(rgb[[by * 200 + y, bx * 200 + x, ch]]);
        (1070.0 / 255.0) * ((0.21 * c(0) + 0.72 * c(1)) + 0.07 * c(2)) + 30.0
    };
    let zmax: Vec<Vec<f64>> = (0..20)
        .map(|i| {
            (0..20)
                .map(|j| {
                    (0..100)
                        .map(|q| feet(i * 10 + q / 10, j * 10 + q % 10))
                        .fold(f64::NEG_INFINITY, f64::max)
                })
                .collect()
        })
        .collect();
    for i in 0..20 {
        for j in 0..20 {
            assert_eq!(
                s["zoom_max"][i][j].as_f64(),
                Some(zmax[i][j]),
                "zoom max ({i}, {j})"
            );
            if j < 19 {
                assert_eq!(
                    s["zoom_max_dx"][i][j].as_f64(),
                    Some(zmax[i][j + 1] - zmax[i][j]),
                    "diff along x ({i}, {j})"
                );
            }
        }
    }
}

/// A matmul and diff pipeline: a 5x7 int32 ramp `a`, its column sums `v`,
/// `a @ v` in int64 and float64, `v @ v`, and diffs of int32 and uint8
/// values, written to `mm.json`.
const MATMUL_CONFIG: &str = r#"
[stage.a]
kind = "synthetic"
pattern = "ramp"
shape = [5, 7]
chunks = [5, 7]
dtype = "int32"

[stage.bt]
kind = "expr"
inputs = ["a"]
expr = "a * 3 - 40"

[stage.af]
kind = "expr"
inputs = ["a"]
expr = "float64(a) * 0.5"

[stage.v]
kind = "reduce"
inputs = ["a"]
op = "sum"
axis = 0

[stage.ab]
kind = "matmul"
inputs = ["a", "v"]

[stage.ff]
kind = "matmul"
inputs = ["af", "v"]

[stage.big]
kind = "expr"
inputs = ["a"]
expr = "int64(a + 1) * 1000000000"

[stage.bigdot]
kind = "matmul"
inputs = ["v", "v"]

[stage.d]
kind = "diff"
inputs = ["bt"]
axis = 0

[stage.du]
kind = "expr"
inputs = ["a"]
expr = "uint8(34 - a)"

[stage.dd]
kind = "diff"
inputs = ["du"]

[stage.w]
kind = "write-json"
inputs = ["ab", "ff", "bigdot", "d", "dd"]
path = "mm.json"
"#;

/// matmul as numpy's @ (2-D, 1-D), and diff with numpy's integer wrap.
#[test]
fn matmul_and_diff_as_numpy() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(dir.path(), "mm.toml", MATMUL_CONFIG);
    let (code, _, err) = blockflow(&["run", "-q", cfg.to_str().expect("u")]);
    assert_eq!(code, 0, "{err}");
    let s: serde_json::Value = read_json(dir.path().join("mm.json"));
    let a = |i: i64, j: i64| i * 7 + j;
    let v: Vec<i64> = (0..7).map(|j| (0..5).map(|i| a(i, j)).sum()).collect();
    for i in 0..5 {
        let want: i64 = (0..7).map(|j| a(i, j) * v[j as usize]).sum();
        assert_eq!(s["ab"][i as usize].as_i64(), Some(want));
        assert_eq!(s["ff"][i as usize].as_f64(), Some(want as f64 * 0.5));
    }
    let dot: i64 = v.iter().map(|x| x * x).sum();
    assert_eq!(s["bigdot"].as_i64(), Some(dot));
    assert_eq!(
        s["d"][0][0].as_i64(),
        Some(21),
        "(a*3-40) rows differ by 21"
    );
    // uint8 diff wraps as numpy's: (34 - a) decreases by 1, so each step is 255.
    assert_eq!(s["dd"][0][0].as_i64(), Some(255));
}

/// matmul of int64 values: exact beyond float64's 2^53, an int64 overflow
/// as an error naming the stage.
#[test]
fn matmul_int64_is_exact_past_2_53_and_refuses_overflow() {
    let dir = tempfile::tempdir().expect("tmp");
    // Past 2^53 the product is still exact; past int64 it is an error.
    let big = |value: i64| {
        MATMUL_CONFIG
            .replace(r#"inputs = ["v", "v"]"#, r#"inputs = ["bigrow", "bigrow"]"#)
            .replace(
                "[stage.d]\n",
                &format!("[stage.bigrow]\nkind = \"expr\"\ninputs = [\"a\"]\nexpr = \"int64(a[0]) * 0 + {value}\"\n\n[stage.d]\n"),
            )
    };
    let exact = write_config(
        dir.path(),
        "big.toml",
        &big(1_012_333_499).replace("mm.json", "big.json"),
    );
    let (code, _, err) = blockflow(&["run", "-q", exact.to_str().expect("u")]);
    assert_eq!(code, 0, "{err}");
    let s: serde_json::Value = read_json(dir.path().join("big.json"));
    assert_eq!(
        s["bigdot"].as_i64(),
        Some(7 * 1_012_333_499i64 * 1_012_333_499)
    );
    assert!(7.0 * 1_012_333_499f64 * 1_012_333_499f64 > 2f64.powi(53));
    let over = write_config(
        dir.path(),
        "over.toml",
        &big(3_037_000_499).replace("mm.json", "over.json"),
    );
    let (code, _, err) = blockflow(&["run", "-q", over.to_str().expect("u")]);
    assert_eq!(code, 1, "7 x 3037000499^2 overflows int64: {err}");
    assert!(
        err.contains("does not fit int64") && err.contains("bigdot"),
        "{err}"
    );
}

/// A budget too small for any plan: even through disk the rechunk must
/// hold a source chunk and a group of new ones; the refusal names the
/// stage and the numbers.
#[test]
fn a_budget_too_small_for_any_plan_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        "tiny.toml",
        r#"
[pipeline]
memory = "4 MiB"

[stage.a]
kind = "synthetic"
pattern = "noise"
shape = [8, 256, 256]
chunks = [1, 256, 256]
dtype = "float64"

[stage.t]
kind = "rechunk"
inputs = ["a"]
chunks = [8, 32, 32]

[stage.w]
kind = "write-zarr"
inputs = ["t"]
path = "t.zarr"
"#,
    );
    let (code, _, err) = blockflow(&["plan", cfg.to_str().expect("u")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("tiny.toml")
            && err.contains("the plan needs")
            && err.contains("`memory` is 4.00 MiB"),
        "{err}"
    );
    // With room for a chunk or two it runs, through disk.
    let (code, out, err) = blockflow(&[
        "plan",
        cfg.to_str().expect("u"),
        "--set",
        "pipeline.memory=\"9 MiB\"",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("through disk"), "{out}");
}

/// slice: numpy's basic indexing on split axes, in a stream: one image of a
/// stack (its axis dropped), a crop with a step, a negative index; the
/// values are the ramp's, so each position is checked; a bad index is a
/// config error naming it.
#[test]
fn slice_as_numpy_basic_indexing() {
    let dir = tempfile::tempdir().expect("tmp");
    let shape = [9u64, 10, 11];
    for (k, (index, want_shape)) in [
        ("5, :, :", vec![10u64, 11]),
        ("1:8:3, 2:, ::4", vec![3, 8, 3]),
        ("-1, -3", vec![11]),
        ("..., 4", vec![9, 10]),
        ("2:3, 7, 1:-1:2", vec![1, 5]),
    ]
    .iter()
    .enumerate()
    {
        for chunks in ["[2, 3, 4]", "[9, 10, 11]", "[1, 1, 5]"] {
            let cfg = write_config(
                dir.path(),
                &format!("s{k}.toml"),
                &format!(
                    "[stage.a]\nkind = \"synthetic\"\npattern = \"ramp\"\nshape = {shape:?}\nchunks = {chunks}\ndtype = \"int32\"\n\n\
[stage.s]\nkind = \"slice\"\ninputs = [\"a\"]\nindex = \"{index}\"\n\n\
[stage.w]\nkind = \"write-zarr\"\ninputs = [\"s\"]\npath = \"s{k}.zarr\"\nif_exists = \"overwrite\"\n"
                ),
            );
            let (code, _, err) = blockflow(&["run", "-q", cfg.to_str().expect("u")]);
            assert_eq!(code, 0, "[{index}] in chunks {chunks}: {err}");
            let ArrayData::I32(got) = read_all(&dir.path().join(format!("s{k}.zarr"))) else {
                panic!("i32")
            };
            let got_shape: Vec<u64> = got.shape().iter().map(|&n| n as u64).collect();
            assert_eq!(&got_shape, want_shape, "[{index}]");
            // numpy's result, from the ramp's formula.
            let (map, drop, _) =
                blockflow_runtime::plan::parse_index(index, &shape).expect("index");
            for (pos, v) in got.indexed_iter() {
                let pos: Vec<usize> = ndarray::Dimension::slice(&pos).to_vec();
                let mut it = pos.iter();
                let src: Vec<u64> = (0..3)
                    .map(|ax| {
                        let j = if drop[ax] {
                            0
                        } else {
                            *it.next().expect("axis") as u64
                        };
                        map[ax].0 + j * map[ax].1
                    })
                    .collect();
                let flat = (src[0] * shape[1] + src[1]) * shape[2] + src[2];
                assert_eq!(*v as u64, flat, "[{index}] at {pos:?} in chunks {chunks}");
            }
        }
    }
    let bad = write_config(
        dir.path(),
        "bad.toml",
        "[stage.a]\nkind = \"synthetic\"\npattern = \"ramp\"\nshape = [9, 10]\nchunks = [2, 3]\n\n[stage.s]\nkind = \"slice\"\ninputs = [\"a\"]\nindex = \"12, :\"\n\n[stage.w]\nkind = \"write-zarr\"\ninputs = [\"s\"]\npath = \"b.zarr\"\n",
    );
    let (code, _, err) = blockflow(&["plan", bad.to_str().expect("u")]);
    assert_eq!(code, 2);
    assert!(
        err.contains("stage \"s\"") && err.contains("index 12 is out of range for axis 0"),
        "{err}"
    );
}

/// concatenate, stack and transpose as numpy's, in several chunkings; the
/// values are ramps, so every position is checked.
#[test]
fn concatenate_stack_and_transpose_as_numpy() {
    let dir = tempfile::tempdir().expect("tmp");
    for chunks in ["[2, 3]", "[5, 7]", "[1, 4]"] {
        let cfg = write_config(
            dir.path(),
            "j.toml",
            &format!(
                r#"
[stage.a]
kind = "synthetic"
pattern = "ramp"
shape = [5, 7]
chunks = {chunks}
dtype = "int32"

[stage.b]
kind = "expr"
inputs = ["a"]
expr = "float32(a) + 0.5"

[stage.c]
kind = "concatenate"
inputs = ["a", "b", "a"]
axis = 1

[stage.s]
kind = "stack"
inputs = ["a", "b"]
axis = 1

[stage.t]
kind = "transpose"
inputs = ["a"]

[stage.wc]
kind = "write-zarr"
inputs = ["c"]
path = "c.zarr"
if_exists = "overwrite"

[stage.ws]
kind = "write-zarr"
inputs = ["s"]
path = "s.zarr"
if_exists = "overwrite"

[stage.wt]
kind = "write-zarr"
inputs = ["t"]
path = "t.zarr"
if_exists = "overwrite"
"#
            ),
        );
        let (code, _, err) = blockflow(&["run", "-q", cfg.to_str().expect("u")]);
        assert_eq!(code, 0, "chunks {chunks}: {err}");
        let a = |i: usize, j: usize| (i * 7 + j) as f64;
        // int32 with float32 promotes to float64, as numpy.
        let ArrayData::F64(c) = read_all(&dir.path().join("c.zarr")) else {
            panic!("f64")
        };
        assert_eq!(c.shape(), &[5, 21]);
        for i in 0..5 {
            for j in 0..21 {
                let want = a(i, j % 7) + if (7..14).contains(&j) { 0.5 } else { 0.0 };
                assert_eq!(c[[i, j]], want, "concatenate ({i}, {j}) in chunks {chunks}");
            }
        }
        let ArrayData::F64(s) = read_all(&dir.path().join("s.zarr")) else {
            panic!("f64")
        };
        assert_eq!(s.shape(), &[5, 2, 7]);
        for i in 0..5 {
            for j in 0..7 {
                assert_eq!(s[[i, 0, j]], a(i, j));
                assert_eq!(s[[i, 1, j]], a(i, j) + 0.5);
            }
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".blockflow-"))
            .collect();
        assert!(left.is_empty(), "scratch stores left behind: {left:?}");
        let ArrayData::I32(t) = read_all(&dir.path().join("t.zarr")) else {
            panic!("i32")
        };
        assert_eq!(t.shape(), &[7, 5]);
        for i in 0..5 {
            for j in 0..7 {
                assert_eq!(
                    f64::from(t[[j, i]]),
                    a(i, j),
                    "transpose in chunks {chunks}"
                );
            }
        }
    }
}

/// matmul out of core: `a` streams in bands of whole rows (kept in scratch
/// until `b` has arrived), `b` in any chunks is held whole; float64 and
/// int64 results equal the product computed here.
#[test]
fn matmul_streams_bands_of_rows() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        "mb.toml",
        r#"
[stage.a]
kind = "synthetic"
pattern = "ramp"
shape = [50, 30]
chunks = [7, 30]
dtype = "int32"

[stage.b]
kind = "synthetic"
pattern = "ramp"
shape = [30, 20]
chunks = [4, 5]
dtype = "int32"

[stage.af]
kind = "expr"
inputs = ["a"]
expr = "float64(a) / 8"

[stage.c]
kind = "matmul"
inputs = ["a", "b"]

[stage.cf]
kind = "matmul"
inputs = ["af", "b"]

[stage.w]
kind = "write-zarr"
inputs = ["c"]
path = "c.zarr"

[stage.wf]
kind = "write-zarr"
inputs = ["cf"]
path = "cf.zarr"
"#,
    );
    let (code, out, err) = blockflow(&["plan", cfg.to_str().expect("u")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("a in 8 bands of [7, 30]"), "{out}");
    let (code, _, err) = blockflow(&["run", "-q", cfg.to_str().expect("u")]);
    assert_eq!(code, 0, "{err}");
    let ArrayData::I64(c) = read_all(&dir.path().join("c.zarr")) else {
        panic!("int64")
    };
    let ArrayData::F64(cf) = read_all(&dir.path().join("cf.zarr")) else {
        panic!("f64")
    };
    assert_eq!(c.shape(), &[50, 20]);
    for i in 0..50i64 {
        for j in 0..20i64 {
            let want: i64 = (0..30).map(|k| (i * 30 + k) * (k * 20 + j)).sum();
            assert_eq!(c[[i as usize, j as usize]], want, "({i}, {j})");
            assert_eq!(
                cf[[i as usize, j as usize]],
                want as f64 / 8.0,
                "({i}, {j})"
            );
        }
    }
}

/// Seed 002's input through the HDF5 stages: generated per-timepoint files
/// stacked (natural order), rechunked to whole time series, written as HDF5
/// and Zarr; both equal the files; a timepoint of another shape is an error
/// naming the file and the dataset, and leaves no output.
#[test]
fn hdf5_timepoints_stack_rechunk_and_write() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = dir.path();
    generate("timeseries", &t.join("tp"), 5, 12, 1);
    let cfg = write_config(
        t,
        "ts.toml",
        r#"
[stage.tp]
kind = "read-hdf5-stack"
path = "tp/t_*.h5"
dataset = "data"

[stage.series]
kind = "rechunk"
inputs = ["tp"]
chunks = [5, 4, 4, 4]

[stage.h5]
kind = "write-hdf5"
inputs = ["series"]
path = "series.h5"
dataset = "volume"

[stage.z]
kind = "write-zarr"
inputs = ["series"]
path = "series.zarr"
"#,
    );
    let (code, plan, err) = blockflow(&["plan", cfg.to_str().expect("u")]);
    assert_eq!(code, 0, "{err}");
    assert!(plan.contains("5 timepoints of [12, 12, 12]"), "{plan}");
    let (code, _, err) = blockflow(&["run", "-q", cfg.to_str().expect("u")]);
    assert_eq!(code, 0, "{err}");
    let whole = blockflow_core::Region::new(vec![0, 0, 0, 0], vec![5, 12, 12, 12]);
    let stack = read_timepoints(&t.join("tp"));
    let h5 = blockflow_io::hdf5::Hdf5Reader::open(&t.join("series.h5"), "volume").expect("open");
    assert_eq!(h5.read(&whole).expect("read"), stack);
    assert_eq!(read_all(&t.join("series.zarr")), stack);

    // A timepoint of another shape: an error naming it; nothing committed.
    std::fs::remove_file(t.join("series.h5")).expect("rm");
    let w = blockflow_io::hdf5::Hdf5Writer::create(
        &t.join("tp/t_0003.h5"),
        "data",
        blockflow_core::DType::F64,
        &[12, 12, 11],
        &[12, 12, 11],
        true,
    )
    .expect("create");
    w.write(
        &blockflow_core::Region::new(vec![0, 0, 0], vec![12, 12, 11]),
        &ArrayData::F64(ndarray::ArrayD::zeros(ndarray::IxDyn(&[12, 12, 11]))),
    )
    .expect("write");
    w.finish().expect("finish");
    let (code, _, err) = blockflow(&[
        "run",
        "-q",
        cfg.to_str().expect("u"),
        "--set",
        "z.if_exists=overwrite",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("t_0003.h5") && err.contains("\"data\"") && err.contains("[12, 12, 11]"),
        "{err}"
    );
    assert!(!t.join("series.h5").exists());
}

/// Seed 002's median and zscore as stages: a (1, 3, 3, 3) median of the
/// stacked timepoints in several chunkings (the halo from the overlap
/// window) equals scipy's whole-array median (the kernel is checked against
/// scipy); zscore along time after a rechunk to whole time series equals the
/// whole-array zscore.
#[test]
fn median_and_zscore_stages_match_the_whole_array() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = dir.path();
    generate("timeseries", &t.join("tp"), 4, 14, 1);
    let ArrayData::F64(stack) = read_timepoints(&t.join("tp")) else {
        panic!("f64")
    };
    let med = blockflow_kernels::rank::median_filter(
        stack.view(),
        &[1, 3, 3, 3],
        blockflow_kernels::filters::Boundary::Reflect,
    )
    .expect("median");
    let z = blockflow_kernels::zscore::zscore(med.view(), 0, 0).expect("zscore");
    for (k, chunks) in ["[1, 14, 14, 14]", "[1, 5, 4, 14]", "[2, 3, 14, 6]"]
        .iter()
        .enumerate()
    {
        let cfg = write_config(
            t,
            &format!("m{k}.toml"),
            &format!(
                r#"
[stage.tp]
kind = "read-hdf5-stack"
path = "tp/t_*.h5"
dataset = "data"
chunks = {chunks}

[stage.med]
kind = "median"
inputs = ["tp"]
size = [1, 3, 3, 3]

[stage.series]
kind = "rechunk"
inputs = ["med"]
chunks = [4, 7, 7, 7]

[stage.z]
kind = "zscore"
inputs = ["series"]
axis = 0

[stage.wm]
kind = "write-zarr"
inputs = ["med"]
path = "med{k}.zarr"

[stage.wz]
kind = "write-zarr"
inputs = ["z"]
path = "z{k}.zarr"
"#
            ),
        );
        let (code, _, err) = blockflow(&["run", "-q", cfg.to_str().expect("u")]);
        assert_eq!(code, 0, "chunks {chunks}: {err}");
        assert_eq!(
            read_all(&t.join(format!("med{k}.zarr"))),
            ArrayData::F64(med.clone()),
            "median in chunks {chunks}"
        );
        let ArrayData::F64(got) = read_all(&t.join(format!("z{k}.zarr"))) else {
            panic!("f64")
        };
        let worst = got
            .iter()
            .zip(z.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst <= 1e-12,
            "zscore in chunks {chunks} differs by {worst}"
        );
    }
}

/// register and shift as stages: each timepoint registered to the first
/// (phase cross-correlation, upsampled) and moved back; the shifts equal
/// the kernel's on the same frames and undo the generator's known
/// displacements to within 0.1 voxel; each shifted frame equals the
/// kernel's shift of it.
#[test]
fn register_and_shift_stages() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = dir.path();
    generate("timeseries", &t.join("tp"), 4, 24, 1);
    let cfg = write_config(
        t,
        "rs.toml",
        r#"
[stage.tp]
kind = "read-hdf5-stack"
path = "tp/t_*.h5"
dataset = "data"

[stage.shifts]
kind = "register"
inputs = ["tp"]
upsample_factor = 20

[stage.moved]
kind = "shift"
inputs = ["tp", "shifts"]

[stage.json]
kind = "write-json"
inputs = ["shifts"]
path = "shifts.json"

[stage.z]
kind = "write-zarr"
inputs = ["moved"]
path = "moved.zarr"
"#,
    );
    let (code, _, err) = blockflow(&["run", "-q", cfg.to_str().expect("u")]);
    assert_eq!(code, 0, "{err}");
    let got: serde_json::Value = read_json(t.join("shifts.json"));
    let truth: serde_json::Value = read_json(t.join("tp/shifts.json"));
    let ArrayData::F64(stack) = read_timepoints(&t.join("tp")) else {
        panic!("f64")
    };
    let ArrayData::F64(moved) = read_all(&t.join("moved.zarr")) else {
        panic!("f64")
    };
    let reference = stack.index_axis(ndarray::Axis(0), 0);
    for k in 0..4 {
        let frame = stack.index_axis(ndarray::Axis(0), k);
        let want = blockflow_kernels::register::phase_cross_correlation(
            reference.view(),
            frame.view(),
            20,
        )
        .expect("register");
        for ax in 0..3 {
            let g = got["shifts"][k][ax].as_f64().expect("f");
            assert_eq!(g, want[ax], "timepoint {k} axis {ax}");
            let true_shift = truth["shifts_zyx"][k][ax].as_f64().expect("f");
            assert!(
                (g + true_shift).abs() <= 0.1,
                "timepoint {k} axis {ax}: {g} vs -{true_shift}"
            );
        }
        let shifted = blockflow_kernels::shift::shift(
            frame.view(),
            &want,
            3,
            blockflow_kernels::shift::InterpMode::Constant,
            0.0,
            true,
        )
        .expect("shift");
        assert_eq!(
            moved.index_axis(ndarray::Axis(0), k),
            shifted.view(),
            "timepoint {k}"
        );
    }
}

/// Whether nothing in `dir` is named `prefix` or starts with it (the
/// output, its work folders `PREFIX.partial-*`, its lock `PREFIX.lock`).
fn nothing_named(dir: &std::path::Path, prefix: &str) -> bool {
    std::fs::read_dir(dir)
        .expect("ls")
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().starts_with(prefix))
}

#[test]
fn progress_lines_without_a_terminal() {
    // stderr to a pipe, as in a batch job's log: lines every interval with
    // chunks written of the total, and each stage as it ends.
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        tmp.path(),
        "p.toml",
        &format!(
            "[pipeline]\nmemory = \"256 MiB\"\nthreads = 1\n\
             [stage.img]\nkind = \"synthetic\"\nshape = [3000, 4000]\nchunks = [250, 250]\n\
             [stage.blur]\nkind = \"filter\"\ninputs = [\"img\"]\nfilter = \"gaussian\"\nsigma = 4.0\n\
             [stage.out]\nkind = \"write-zarr\"\ninputs = [\"blur\"]\npath = \"{}/o.zarr\"\nif_exists = \"overwrite\"\n\
             [stage.small]\nkind = \"rechunk\"\ninputs = [\"img\"]\nchunks = [125, 125]\n\
             [stage.mean]\nkind = \"reduce\"\ninputs = [\"small\"]\nop = \"mean\"\n\
             [stage.json]\nkind = \"write-json\"\ninputs = [\"mean\"]\npath = \"{0}/m.json\"\nif_exists = \"overwrite\"\n",
            tmp.path().display()
        ),
    );
    let out = bin()
        .args(["run", cfg.to_str().expect("utf-8")])
        .env("BLOCKFLOW_PROGRESS_SECS", "0.1")
        .current_dir(tmp.path())
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("progress: "))
        .collect();
    assert!(!lines.is_empty(), "{err}");
    // Each stage under way in the chunks of its own grid: 192 of the
    // image's, 768 of the rechunked copy's, the mean by the chunks it read
    // (its own grid is one chunk); before, one count of the writers'
    // chunks summed over writers.
    assert!(lines.iter().all(|l| l.contains("% in ")), "{err}");
    let said = |pat: &str| lines.iter().any(|l| l.contains(pat));
    assert!(said("/192") && said("img "), "{err}");
    assert!(said("small ") && said("/768"), "{err}");
    assert!(said("/768 read"), "{err}");
    assert!(err.contains("stage \"blur\" (filter) done after"), "{err}");
    assert!(
        err.contains("stage \"out\" (write-zarr) done after"),
        "{err}"
    );
    // Quiet is quiet.
    let out = bin()
        .args(["run", "-q", cfg.to_str().expect("utf-8")])
        .env("BLOCKFLOW_PROGRESS_SECS", "0.1")
        .current_dir(tmp.path())
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn out_puts_every_output_under_one_folder_and_skip_drops_stages() {
    // Seed 000's config as shipped, only its input made small: every
    // output, the report and the scratch land under --out; --skip drops the
    // previews of the image.
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = root().join("configs/structure-tensor.toml");
    let results = tmp.path().join("results");
    let out = bin()
        .args(["run", "-q", cfg.to_str().expect("utf-8")])
        .args(["--set", "img.shape=[300,400,3]"])
        .args(["--out", results.to_str().expect("utf-8")])
        .args(["--skip", "image_png", "--skip", "block_png"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(&results)
        .expect("results")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "blocks-of-interest.json",
            "blocks.csv",
            "features.png",
            "features.zarr",
            "structure-tensor.report.json"
        ]
    );
    // A kernel reading a skipped stage: refused, naming both.
    let (code, _, err) = blockflow(&["plan", cfg.to_str().expect("utf-8"), "--skip", "img"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("stage `tensor` reads `img`; skip it too"),
        "{err}"
    );
}

#[test]
fn the_report_says_what_ran_when_and_what_it_wrote() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path().display();
    let cfg = write_config(
        tmp.path(),
        "r.toml",
        &format!(
            "[pipeline]\nreport = \"{d}/r.report.json\"\n\
             [stage.img]\nkind = \"synthetic\"\nshape = [600, 700]\nchunks = [100, 100]\n\
             [stage.blur]\nkind = \"filter\"\ninputs = [\"img\"]\nfilter = \"gaussian\"\nsigma = 2.0\n\
             [stage.total]\nkind = \"reduce\"\ninputs = [\"blur\"]\nop = \"mean\"\n\
             [stage.rows]\nkind = \"rechunk\"\ninputs = [\"blur\"]\nchunks = [-1, 50]\n\
             [stage.z]\nkind = \"write-zarr\"\ninputs = [\"rows\"]\npath = \"{d}/z.zarr\"\n\
             [stage.j]\nkind = \"write-json\"\ninputs = [\"total\"]\npath = \"{d}/j.json\"\n"
        ),
    );
    let rep = run_reported(&cfg, &tmp.path().join("r.report.json"));
    assert_eq!(rep["version"], env!("CARGO_PKG_VERSION"));
    for k in ["started", "ended"] {
        let t = rep[k].as_str().unwrap_or("");
        assert!(
            t.len() >= 20 && t.ends_with('Z') && t.contains('T'),
            "{k}: {t}"
        );
    }
    let outs = rep["outputs"].as_array().expect("outputs");
    assert_eq!(outs.len(), 2, "{rep}");
    assert!(
        outs.iter().all(|o| o["bytes"].as_u64().unwrap_or(0) > 0),
        "{rep}"
    );
    for st in rep["stages"].as_array().expect("stages") {
        let worked =
            st["chunks_in"].as_u64().unwrap_or(0) + st["chunks_out"].as_u64().unwrap_or(0) > 0;
        assert!(
            !worked || st["wall_seconds"].as_f64().unwrap_or(0.0) > 0.0,
            "{st}"
        );
    }
    let blur = rep["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "blur"))
        .expect("blur");
    assert_eq!(blur["params"]["sigma"], "2.0", "{blur}");
    assert_eq!(blur["inputs"][0], "blur.halo", "{blur}");
}
