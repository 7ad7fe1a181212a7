//! Configs a hostile user would write, through the real binary: each is
//! refused with exit 2, `file:line:col` and the stage (issue 11), or runs;
//! never a panic, an abort or unbounded work. And a closed stdout ends
//! `plan`, `stages` and `inspect` quietly.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn pipeline(dir: &Path, source: &str, stage: &str) -> String {
    format!(
        r#"[pipeline]
name = "h"
memory = "256 MiB"
report = "{dir}/h.report.json"

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
path = "{dir}/out.zarr"
if_exists = "overwrite"
"#,
        dir = dir.display()
    )
}

const SMALL: &str = "shape = [100, 100]\nchunks = [50, 50]";

fn gaussian(params: &str) -> String {
    format!("kind = \"filter\"\nfilter = \"gaussian\"\n{params}")
}

/// `plan` refuses the config with exit 2 at `key`'s line, naming `stage`.
fn refused(dir: &Path, text: &str, key: &str, stage: &str) -> String {
    let cfg = write_config(dir, "h.toml", text);
    let line = text
        .lines()
        .position(|l| l.starts_with(key))
        .expect("key in text")
        + 1;
    let t0 = Instant::now();
    let (code, out, err) = blockflow(&["plan", &cfg.to_string_lossy()]);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "{key}: {:?}",
        t0.elapsed()
    );
    assert_eq!(code, 2, "{text}\nstdout: {out}\nstderr: {err}");
    assert!(
        err.contains(&format!("{}:{line}:", cfg.display())),
        "want line {line}: {err}"
    );
    assert!(err.contains(&format!("stage \"{stage}\"")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn hostile_expressions_are_config_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    for expr in [
        "abs(x,".to_string(),
        format!("{}x{}", "(".repeat(5000), ")".repeat(5000)),
        vec!["x"; 2600].join("+"),
    ] {
        let text = pipeline(d, SMALL, &format!("kind = \"expr\"\nexpr = \"{expr}\""));
        let err = refused(d, &text, "expr", "k");
        assert!(err.contains("in the expression, column"), "{err}");
    }
}

/// The deepest chain the parser accepts runs: a plan that is accepted
/// cannot overflow a worker's stack in `run`.
#[test]
fn the_deepest_accepted_expression_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let expr = vec!["x"; 100].join(" + ");
    let cfg = write_config(
        d,
        "h.toml",
        &pipeline(d, SMALL, &format!("kind = \"expr\"\nexpr = \"{expr}\"")),
    );
    let (code, _, err) = blockflow(&["run", "-q", &cfg.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    let expr = vec!["x"; 101].join(" + ");
    let text = pipeline(d, SMALL, &format!("kind = \"expr\"\nexpr = \"{expr}\""));
    assert!(refused(d, &text, "expr", "k").contains("nests too deeply"));
}

#[test]
fn hostile_filter_parameters_are_config_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    for (params, key) in [
        ("sigma = 1e18", "sigma"),
        ("sigma = 1.0\nradius = 9223372036854775807", "radius"),
        ("sigma = 1.0\nradius = 1099511627776", "radius"),
        ("sigma = inf", "sigma"),
        ("sigma = nan", "sigma"),
    ] {
        refused(d, &pipeline(d, SMALL, &gaussian(params)), key, "k");
    }
}

#[test]
fn hostile_shapes_are_config_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    for source in [
        "shape = [9223372036854775807, 13500, 3]\nchunks = [500, 500, 3]",
        "shape = [4294967296, 4294967296]\nchunks = [4294967296, 4294967296]",
    ] {
        let text = pipeline(d, source, "kind = \"expr\"\nexpr = \"x\"");
        let err = refused(d, &text, "shape", "src");
        assert!(err.contains("too large"), "{err}");
    }
}

/// 10^8 chunks took 14 s and 783 MiB to plan before the refusal.
#[test]
fn a_plan_of_many_chunks_is_refused_promptly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let text = pipeline(
        d,
        "shape = [10000000, 10000000]\nchunks = [1000, 1000]",
        &gaussian("sigma = 2.0"),
    );
    let cfg = write_config(d, "h.toml", &text);
    let t0 = Instant::now();
    let (code, _, err) = blockflow(&["plan", &cfg.to_string_lossy()]);
    let took = t0.elapsed();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`memory` is 256.00 MiB"), "{err}");
    assert!(took < Duration::from_secs(2), "planning took {took:?}");
}

/// Runs the binary with stdout a pipe whose reader is already closed.
fn closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = bin()
        .args(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `blockflow plan|stages|inspect ... | head -1` panicked with a backtrace.
#[test]
fn a_closed_stdout_ends_quietly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let cfg = write_config(
        d,
        "h.toml",
        &pipeline(d, SMALL, "kind = \"expr\"\nexpr = \"x * 2\""),
    );
    let (code, _, err) = blockflow(&["run", "-q", &cfg.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    let cfg = cfg.to_string_lossy().into_owned();
    let zarr = d.join("out.zarr").to_string_lossy().into_owned();
    for args in [
        vec!["stages"],
        vec!["plan", &cfg],
        vec!["plan", "--dot", &cfg],
        vec!["inspect", &zarr],
    ] {
        let (code, err) = closed_stdout(&args);
        // 0, or killed by SIGPIPE (no code), or 141 as a shell reports it.
        assert!(
            matches!(code, Some(0) | Some(141) | None),
            "{args:?}: {code:?} {err}"
        );
        assert!(
            !err.contains("panicked") && err.is_empty(),
            "{args:?}: {err}"
        );
    }
}

/// A run whose stderr is a pipe closed by its reader (a log collector that
/// went away, `2>&1 | head -0`) still runs to the end, commits its output
/// and exits 0: its messages are lost, never a panic (was exit 101, a panic
/// in `eprintln!`). So does a refused one, with its exit code 2.
#[test]
fn a_closed_stderr_does_not_panic_a_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let cfg = write_config(
        d,
        "h.toml",
        &pipeline(d, SMALL, "kind = \"expr\"\nexpr = \"x * 2\""),
    );
    let bad = write_config(d, "bad.toml", &pipeline(d, SMALL, "kind = \"exp\""));
    for (cfg, want) in [(&cfg, 0), (&bad, 2)] {
        let mut child = bin()
            .args(["run", &cfg.to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns");
        // The reader goes away before the run writes anything.
        drop(child.stderr.take());
        let status = child.wait().expect("waits");
        assert_eq!(status.code(), Some(want), "{}: {status:?}", cfg.display());
    }
    assert!(
        d.join("out.zarr").join("zarr.json").exists(),
        "the output is committed"
    );
}

#[test]
fn a_report_to_a_device_or_pipe_is_written_into_not_replaced() {
    // `--report /dev/null` as root renamed a plain file over the device
    // (munged then failed: "Failed to open /dev/null"). A named pipe stands
    // in for the device here: it must still be a pipe, and carry the JSON.
    use std::os::unix::fs::FileTypeExt;
    let tmp = tempfile::tempdir().expect("tmp");
    let fifo = tmp.path().join("report.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).expect("read the pipe"))
    };
    let cfg = write_config(
        tmp.path(),
        "p.toml",
        &format!(
            "[stage.a]\nkind = \"synthetic\"\nshape = [20, 20]\nchunks = [10, 10]\n\
             [stage.w]\nkind = \"write-zarr\"\ninputs = [\"a\"]\npath = \"{}/a.zarr\"\n",
            tmp.path().display()
        ),
    );
    let (code, _, err) = blockflow(&[
        "run",
        "-q",
        cfg.to_str().expect("utf-8"),
        "--report",
        fifo.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{err}");
    // Checked first: a replaced pipe leaves its reader waiting forever.
    let ft = std::fs::symlink_metadata(&fifo)
        .expect("still there")
        .file_type();
    assert!(ft.is_fifo(), "the pipe was replaced by a {ft:?}");
    let text = reader.join().expect("reader");
    let v: serde_json::Value = serde_json::from_str(&text).expect("the report's JSON");
    assert_eq!(v["ok"], true);
}
