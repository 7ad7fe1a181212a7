//! Nothing lost, nothing clobbered: two runs on one output, a kill at the
//! commit, conflicting paths in one config, overwrite of what blockflow did
//! not write, scratch stores of killed runs. Real processes throughout.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A small synthetic pipeline: a 600 x 700 float32 image in 100 x 100
/// chunks (42 chunks), written as Zarr.
fn config(dir: &Path, seed: u64, extra: &str) -> PathBuf {
    write_config(
        dir,
        &format!("p{seed}.toml"),
        &format!(
            r#"[pipeline]
name = "p"
memory = "256 MiB"
report = "report-{seed}.json"

[stage.img]
kind = "synthetic"
pattern = "noise"
shape = [600, 700]
chunks = [100, 100]
dtype = "float32"
seed = {seed}

[stage.out]
kind = "write-zarr"
inputs = ["img"]
path = "out.zarr"
{extra}
"#
        ),
    )
}

fn spawn(cfg: &Path, env: &[(&str, String)]) -> Child {
    let mut cmd = bin();
    cmd.args(["run", "-q", cfg.to_str().expect("utf-8")]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn blockflow")
}

fn wait_for_file(p: &Path, child: &mut Child) {
    let start = Instant::now();
    while !p.exists() {
        if let Some(s) = child.try_wait().expect("wait") {
            panic!("blockflow exited ({s:?}) before {}", p.display());
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} never appeared",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stderr_of(child: Child) -> (i32, String) {
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The whole array a seed gives (from a run into a folder of its own).
fn expected(tmp: &Path, seed: u64) -> blockflow_core::ArrayData {
    let d = tmp.join(format!("expected-{seed}"));
    std::fs::create_dir_all(&d).expect("mkdir");
    let cfg = config(&d, seed, "");
    let (code, _, err) = run_with_sets(&cfg, &[]);
    assert_eq!(code, 0, "{err}");
    read_all(&d.join("out.zarr"))
}

/// Chunk files of a v3 array (every chunk of a survey image is written).
fn chunk_files(p: &Path) -> usize {
    fn walk(p: &Path, n: &mut usize) {
        for e in std::fs::read_dir(p).expect("ls").flatten() {
            if e.file_type().expect("type").is_dir() {
                walk(&e.path(), n);
            } else if e.file_name() != "zarr.json" {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(&p.join("c"), &mut n);
    n
}

/// What is in `dir` besides the configs and reports.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !n.ends_with(".toml") && !n.starts_with("report-") && !n.starts_with("expected-")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_second_run_on_an_output_in_use_fails_at_once_naming_the_first() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let want = expected(d, 1);
    let cfg = config(d, 1, "");
    // The first run holds its output while it pauses at the commit.
    let marker = d.join("paused");
    let mut first = spawn(
        &cfg,
        &[(
            "BLOCKFLOW_TEST_PAUSE",
            format!("commit-before:{}", marker.display()),
        )],
    );
    wait_for_file(&marker, &mut first);
    let started = Instant::now();
    let (code, _, err) = run_with_sets(&cfg, &[]);
    assert_ne!(code, 0, "the second run must fail");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it fails at once"
    );
    assert!(
        err.contains("in use by another blockflow run")
            && err.contains(&format!("pid {}", first.id())),
        "names the first run: {err}"
    );
    // The first goes on and commits the whole array.
    std::fs::remove_file(&marker).expect("resume");
    let (code, err) = stderr_of(first);
    assert_eq!(code, 0, "{err}");
    assert_eq!(chunk_files(&d.join("out.zarr")), 42);
    assert_eq!(read_all(&d.join("out.zarr")), want);
    assert_eq!(leftovers(d), ["out.zarr"], "no lock or work folder left");
}

#[test]
fn concurrent_overwriting_runs_never_leave_a_partial_array() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let want = expected(d, 3);
    let cfg = config(d, 3, "if_exists = \"overwrite\"");
    for round in 0..4 {
        let a = spawn(&cfg, &[]);
        std::thread::sleep(Duration::from_millis(round * 15));
        let b = spawn(&cfg, &[]);
        for (code, err) in [stderr_of(a), stderr_of(b)] {
            assert!(
                code == 0 || err.contains("in use by another blockflow run"),
                "round {round}: {code} {err}"
            );
        }
        assert_eq!(chunk_files(&d.join("out.zarr")), 42, "round {round}");
        assert_eq!(read_all(&d.join("out.zarr")), want, "round {round}");
        assert_eq!(leftovers(d), ["out.zarr"], "round {round}");
    }
}

#[test]
fn a_kill_at_the_commit_leaves_the_whole_old_or_the_whole_new_array() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let (old, new) = (expected(d, 5), expected(d, 6));
    assert_ne!(old, new);
    let (code, _, err) = run_with_sets(&config(d, 5, ""), &[]);
    assert_eq!(code, 0, "{err}");
    let cfg = config(d, 6, "if_exists = \"overwrite\"");
    for (point, want) in [("commit-before", &old), ("commit-after", &new)] {
        let marker = d.join(format!("{point}.marker"));
        let mut child = spawn(
            &cfg,
            &[(
                "BLOCKFLOW_TEST_PAUSE",
                format!("{point}:{}", marker.display()),
            )],
        );
        wait_for_file(&marker, &mut child);
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        std::fs::remove_file(&marker).expect("rm marker");
        assert_eq!(chunk_files(&d.join("out.zarr")), 42, "{point}");
        assert_eq!(&read_all(&d.join("out.zarr")), want, "{point}");
    }
    // The next run cleans up what the killed ones left and commits.
    let (code, _, err) = run_with_sets(&cfg, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(read_all(&d.join("out.zarr")), new);
    assert_eq!(leftovers(d), ["out.zarr"]);
}

#[test]
fn conflicting_paths_in_one_config_are_validation_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let cases = [
        // Two writers on one path.
        "[stage.o2]\nkind = \"write-zarr\"\ninputs = [\"img\"]\npath = \"./out.zarr\"\n",
        // One output inside another.
        "[stage.o2]\nkind = \"write-png\"\ninputs = [\"img\"]\npath = \"out.zarr/p.png\"\n",
        // An output on the config's folder.
        "[stage.o2]\nkind = \"write-zarr\"\ninputs = [\"img\"]\npath = \".\"\nif_exists = \"overwrite\"\n",
        // An output that is the config file.
        "[stage.o2]\nkind = \"write-json\"\ninputs = [\"img\"]\npath = \"p9.toml\"\n",
        // An empty path.
        "[stage.o2]\nkind = \"write-json\"\ninputs = [\"img\"]\npath = \"\"\n",
    ];
    for case in cases {
        let cfg = config(d, 9, case);
        let (code, _, err) = blockflow(&["plan", cfg.to_str().expect("utf-8")]);
        assert_eq!(code, 2, "{case}: {err}");
        assert!(err.contains("p9.toml:"), "file:line:col: {err}");
        let (code, _, _) = run_with_sets(&cfg, &[]);
        assert_eq!(code, 2, "{case}");
        assert!(!d.join("out.zarr").exists(), "{case}: nothing written");
    }
    // The report on the output.
    let cfg = config(d, 9, "");
    let report = format!("pipeline.report=\"{}\"", d.join("out.zarr").display());
    let (code, _, err) = run_with_sets(&cfg, &[report]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn overwrite_replaces_only_what_blockflow_writes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let sub = d.join("work");
    std::fs::create_dir_all(&sub).expect("mkdir");
    // path = ".." (the config's parent folder) with overwrite: refused
    // before anything runs, the folder untouched.
    std::fs::write(d.join("notes.txt"), "precious").expect("write");
    let cfg = config(&sub, 1, "");
    let (code, _, err) = run_with_sets(
        &cfg,
        &[
            format!("out.path=\"{}\"", d.display()),
            "out.if_exists=\"overwrite\"".into(),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        std::fs::read_to_string(d.join("notes.txt")).expect("kept"),
        "precious"
    );
    // A folder of other files in the output's place: an error naming it.
    let foreign = d.join("data");
    std::fs::create_dir_all(&foreign).expect("mkdir");
    std::fs::write(foreign.join("keep.txt"), "mine").expect("write");
    let (code, _, err) = run_with_sets(
        &cfg,
        &[
            format!("out.path=\"{}\"", foreign.display()),
            "out.if_exists=\"overwrite\"".into(),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a Zarr array or group"), "{err}");
    assert!(err.contains(&foreign.display().to_string()), "{err}");
    assert_eq!(
        std::fs::read_to_string(foreign.join("keep.txt")).expect("kept"),
        "mine"
    );
    // A Zarr array blockflow wrote is replaced.
    let (code, _, err) = run_with_sets(&cfg, &["out.if_exists=\"overwrite\"".into()]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_with_sets(&cfg, &["out.if_exists=\"overwrite\"".into()]);
    assert_eq!(code, 0, "{err}");
}

/// A disk rechunk: its scratch store stays on disk while the run goes.
fn rechunk_config(dir: &Path) -> PathBuf {
    write_config(
        dir,
        "rc.toml",
        r#"[pipeline]
name = "rc"
memory = "256 MiB"
scratch = "scratch"
report = "report-rc.json"

[stage.img]
kind = "synthetic"
pattern = "noise"
shape = [4000, 4000]
chunks = [4000, 250]
dtype = "float32"

[stage.rc]
kind = "rechunk"
inputs = ["img"]
chunks = [250, 4000]
route = "disk"

[stage.out]
kind = "write-zarr"
inputs = ["rc"]
path = "rc.zarr"
if_exists = "overwrite"
"#,
    )
}

#[test]
fn scratch_stores_of_killed_runs_are_removed_by_the_next_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let cfg = rechunk_config(d);
    let scratch = d.join("scratch");
    let stores = |s: &Path| -> Vec<String> {
        std::fs::read_dir(s)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".blockflow-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    // One left by a blockflow from before the locks, its process gone.
    std::fs::create_dir_all(scratch.join(".blockflow-rc-4194307.zarr.partial")).expect("mkdir");
    let mut killed = Vec::new();
    {
        let mut child = spawn(&cfg, &[]);
        let start = Instant::now();
        while !stores(&scratch).iter().any(|n| n.contains(".zarr")) {
            assert!(
                child.try_wait().expect("wait").is_none(),
                "finished too early"
            );
            assert!(start.elapsed() < Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        killed.push(child.id());
    }
    let left = stores(&scratch);
    for pid in &killed {
        assert!(
            left.iter().any(|n| n.contains(&format!("-{pid}.zarr"))),
            "the kill left the store of {pid}: {left:?}"
        );
    }
    let (code, _, err) = run_with_sets(&cfg, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(stores(&scratch), Vec::<String>::new(), "all removed");
}

#[test]
fn a_failed_run_leaves_nothing_and_frees_its_output() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    let cfg = config(d, 2, "");
    let out = bin()
        .args(["run", "-q", cfg.to_str().expect("utf-8")])
        .env("BLOCKFLOW_FAULT", "panic:out:3")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(leftovers(d), Vec::<String>::new());
    let (code, _, err) = run_with_sets(&cfg, &[]);
    assert_eq!(code, 0, "{err}");
}
