//! Issue 13: the same pipeline as idempotent tasks. Every seed config runs
//! under `blockflow submit --executor local` and `--executor slurm` (a real
//! one-node Slurm started by `scripts/slurm-local`) with outputs identical
//! to `blockflow run`, byte for byte; a failed task is named by `status`
//! with its log and `resume` reruns exactly it; a task over its `--mem` is
//! killed by Slurm and `status` says so; a task killed in the middle of
//! writing a chunk leaves nothing behind once the run is resumed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The seed configs at test sizes, with the data they read.
struct Seeds {
    dir: tempfile::TempDir,
}

/// (config, overrides): small inputs, chunks and task counts that put
/// halos across task borders.
const SEEDS: &[(&str, &[&str])] = &[
    (
        "structure-tensor",
        // Only the input: the preview's block is clipped to the image.
        &["img.shape=[700,800,3]", "img.chunks=[256,300,3]"],
    ),
    ("cells", &["one_image.index=\"3, :, :, :\""]),
    ("timeseries", &[]),
    ("elevation", &["terrain.shape=[600,700,4]"]),
];

impl Seeds {
    fn new() -> Seeds {
        let dir = tempfile::tempdir().expect("tmp");
        let configs = dir.path().join("configs");
        std::fs::create_dir_all(&configs).expect("mkdir");
        for (name, _) in SEEDS {
            let from = root().join("configs").join(format!("{name}.toml"));
            std::fs::copy(&from, configs.join(format!("{name}.toml"))).expect("copy config");
        }
        generate("cells", &dir.path().join("data/cells"), 24, 40, 1);
        generate("timeseries", &dir.path().join("data/volumes"), 5, 24, 2);
        Seeds { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self, name: &str) -> PathBuf {
        self.path().join("configs").join(format!("{name}.toml"))
    }

    /// `blockflow run` of a seed; its outputs moved to `out-batch-NAME`.
    fn batch(&self, name: &str, sets: &[&str]) -> PathBuf {
        let out = self.path().join("out");
        let _ = std::fs::remove_dir_all(&out);
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let (code, _, err) = run_with_sets(&self.config(name), &sets);
        assert_eq!(code, 0, "{name}: {err}");
        let keep = self.path().join(format!("out-batch-{name}"));
        let _ = std::fs::remove_dir_all(&keep);
        std::fs::rename(&out, &keep).expect("keep batch outputs");
        keep
    }
}

/// Runs the binary with `args` and extra environment.
fn run_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = bin();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `submit` args for a seed.
fn submit_args(
    seeds: &Seeds,
    name: &str,
    sets: &[&str],
    executor: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut a = vec![
        "submit".to_string(),
        seeds.config(name).to_string_lossy().into_owned(),
        "--executor".into(),
        executor.into(),
        "--task-count".into(),
        "3".into(),
        "-q".into(),
    ];
    for s in sets {
        a.push("--set".into());
        a.push((*s).to_string());
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Every file under `dir`, relative, skipping run reports and run folders.
fn files(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).expect("read dir").flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".report.json") || name.ends_with(".run") {
                continue;
            }
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).expect("under").to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The outputs in `a` and `b` are the same files with the same bytes.
fn assert_same_outputs(a: &Path, b: &Path, what: &str) {
    let (fa, fb) = (files(a), files(b));
    assert_eq!(fa, fb, "{what}: different files");
    assert!(!fa.is_empty(), "{what}: no outputs");
    for f in &fa {
        let (x, y) = (
            std::fs::read(a.join(f)).expect("read"),
            std::fs::read(b.join(f)).expect("read"),
        );
        assert!(x == y, "{what}: {} differs", f.display());
    }
}

/// No temporary file anywhere under `dir`.
fn assert_no_temporaries(dir: &Path) {
    for f in files(dir) {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert!(
            !name.contains(".tmp-") && !name.contains(".partial-"),
            "stray {}",
            f.display()
        );
    }
}

fn run_dir(seeds: &Seeds, name: &str) -> PathBuf {
    seeds.path().join("out").join(format!("{name}.run"))
}

/// Each seed under an executor, compared with its batch run.
fn every_seed_matches(seeds: &Seeds, executor: &str) {
    for (name, sets) in SEEDS {
        let batch = seeds.batch(name, sets);
        let args = submit_args(seeds, name, sets, executor, &[]);
        let (code, _, err) = blockflow(&strs(&args));
        assert_eq!(code, 0, "{name} under {executor}: {err}");
        assert_same_outputs(
            &batch,
            &seeds.path().join("out"),
            &format!("{name} under {executor}"),
        );
        let rd = run_dir(seeds, name);
        let (code, status, err) = blockflow(&["status", rd.to_str().expect("utf-8")]);
        assert_eq!(code, 0, "{err}");
        assert!(status.contains("complete"), "{status}");
        assert_no_temporaries(&seeds.path().join("out"));
        for d in ["inter", "partials", "out"] {
            assert!(!rd.join(d).exists(), "{name}: {d}/ left in the run folder");
        }
    }
}

/// Fail a task once: `status` names it with its log, `resume` reruns
/// exactly it (the other tasks' chunks are not rewritten), outputs as batch.
fn failed_task_resumes(seeds: &Seeds, executor: &str) {
    let (name, sets) = SEEDS[0];
    let batch = seeds.batch(name, sets);
    let args = submit_args(seeds, name, sets, executor, &[]);
    let (code, _, err) = run_env(&strs(&args), &[("BLOCKFLOW_TASK_FAULT", "0:1:fail")]);
    assert_ne!(code, 0, "the injected fault fails the run: {err}");
    let rd = run_dir(seeds, name);
    let rds = rd.to_str().expect("utf-8");
    let (_, status, _) = blockflow(&["status", rds]);
    assert!(
        status.contains("segment 0 task 1 failed")
            && status.contains("injected fault")
            && status.contains("log "),
        "{status}"
    );
    assert!(
        !seeds.path().join("out/features.zarr").exists(),
        "nothing committed before the run ends"
    );
    let done0 = std::fs::metadata(rd.join("done/s0-t0"))
        .and_then(|m| m.modified())
        .expect("task 0 done");
    let (code, _, err) = blockflow(&["resume", "-q", rds]);
    assert_eq!(code, 0, "{err}");
    let done0_after = std::fs::metadata(rd.join("done/s0-t0"))
        .and_then(|m| m.modified())
        .expect("marker");
    assert_eq!(done0, done0_after, "resume reran a task that was done");
    assert!(rd.join("done/s0-t1").exists());
    assert_same_outputs(&batch, &seeds.path().join("out"), "after resume");
}

/// Kill a task (SIGKILL, a chunk file half written): resume gives the
/// batch outputs and no temporary file is left.
fn killed_task_resumes(seeds: &Seeds, executor: &str) {
    let (name, sets) = SEEDS[0];
    let batch = seeds.batch(name, sets);
    let args = submit_args(seeds, name, sets, executor, &[]);
    let (code, _, _) = run_env(&strs(&args), &[("BLOCKFLOW_TASK_FAULT", "0:2:kill")]);
    assert_ne!(code, 0);
    let rd = run_dir(seeds, name);
    let rds = rd.to_str().expect("utf-8");
    let (_, status, _) = blockflow(&["status", rds]);
    assert!(status.contains("segment 0 task 2 failed"), "{status}");
    let (code, _, err) = blockflow(&["resume", "-q", rds]);
    assert_eq!(code, 0, "{err}");
    assert_same_outputs(&batch, &seeds.path().join("out"), "after a kill and resume");
    assert_no_temporaries(&seeds.path().join("out"));
    assert_no_temporaries(&rd);
}

#[test]
fn every_seed_under_the_local_executor_matches_the_batch_run() {
    let seeds = Seeds::new();
    every_seed_matches(&seeds, "local");
    // A done task does nothing when run again.
    let rd = run_dir(&seeds, "elevation");
    let (code, _, err) = blockflow(&[
        "task",
        rd.to_str().expect("utf-8"),
        "--segment",
        "0",
        "--index",
        "0",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("already done"), "{err}");
}

#[test]
fn local_faults_are_reported_and_resumed() {
    let seeds = Seeds::new();
    failed_task_resumes(&seeds, "local");
    killed_task_resumes(&seeds, "local");
}

#[test]
fn a_task_refuses_a_memory_limit_below_its_projection() {
    let seeds = Seeds::new();
    let (name, sets) = SEEDS[0];
    let args = submit_args(&seeds, name, sets, "local", &[]);
    let (code, _, err) = run_env(&strs(&args), &[("SLURM_MEM_PER_NODE", "1")]);
    assert_ne!(code, 0);
    let rd = run_dir(&seeds, name);
    let (_, status, _) = blockflow(&["status", rd.to_str().expect("utf-8")]);
    assert!(
        status.contains("projected to need")
            && status.contains("may use only 1.00 MiB")
            && status.contains("SLURM_MEM_PER_NODE"),
        "{status}\n{err}"
    );
}

#[test]
fn plan_tasks_shows_segments_tasks_and_memory() {
    let cfg = root().join("configs/structure-tensor.toml");
    let (code, out, err) = blockflow(&[
        "plan",
        "--tasks",
        cfg.to_str().expect("utf-8"),
        "--set",
        "img.shape=[400000,400000,3]",
        "--set",
        "img.chunks=[1000,1000,3]",
        // The OME pyramid of an image 400000 wide holds a band of chunks
        // per level (850 MiB here): more than the config's 512 MiB.
        "--set",
        "pipeline.memory=\"2 GiB\"",
        "--task-count",
        "2000",
        "--run-dir",
        "/tmp/never-written.run",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2002 tasks in 3 segments"), "{out}");
    assert!(out.contains("chunks       2000"), "{out}");
    assert!(
        !Path::new("/tmp/never-written.run").exists(),
        "planning writes nothing"
    );
    // Over the budget per chunk: refused with the numbers.
    let (code, _, err) = blockflow(&[
        "plan",
        "--tasks",
        cfg.to_str().expect("utf-8"),
        "--set",
        "img.shape=[400000,400000,3]",
        "--set",
        "img.chunks=[4000,4000,3]",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("one chunk needs") && err.contains("512.00 MiB"),
        "{err}"
    );
}

/// The one-node Slurm of `scripts/slurm-local`, stopped when dropped if
/// this test started it.
struct Slurm {
    conf: String,
    started: bool,
}

impl Slurm {
    fn up() -> Slurm {
        let script = root().join("scripts/slurm-local");
        if let Ok(conf) = std::env::var("SLURM_CONF") {
            let ok = Command::new("sinfo")
                .env("SLURM_CONF", &conf)
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return Slurm {
                    conf,
                    started: false,
                };
            }
        }
        let out = Command::new(&script)
            .arg("up")
            .output()
            .expect("scripts/slurm-local runs");
        assert!(
            out.status.success(),
            "the Slurm daemons did not start:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let conf = text
            .lines()
            .find_map(|l| l.strip_prefix("export SLURM_CONF="))
            .expect("slurm-local prints SLURM_CONF")
            .trim()
            .to_string();
        Slurm {
            conf,
            started: true,
        }
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        if self.started {
            let _ = Command::new(root().join("scripts/slurm-local"))
                .arg("down")
                .status();
        }
    }
}

#[test]
fn every_seed_on_a_real_slurm_matches_the_batch_run() {
    let slurm = Slurm::up();
    std::env::set_var("SLURM_CONF", &slurm.conf);
    let seeds = Seeds::new();
    every_seed_matches(&seeds, "slurm");
    failed_task_resumes(&seeds, "slurm");
    killed_task_resumes(&seeds, "slurm");

    over_its_mem_slurm_kills_it(&seeds);
    tasks_batched_per_element(&seeds);
    cancelled_then_resumed(&seeds);
}

/// Over its --mem: Slurm kills it, and status says so in words; resume
/// with more memory finishes.
fn over_its_mem_slurm_kills_it(seeds: &Seeds) {
    // Over its --mem: Slurm kills it, and status says so in words.
    let (name, sets) = SEEDS[0];
    seeds.batch(name, sets);
    let args = submit_args(seeds, name, sets, "slurm", &["--mem", "300M"]);
    let (code, _, _) = run_env(
        &strs(&args),
        &[("BLOCKFLOW_TASK_FAULT", "0:0:alloc=1200MiB")],
    );
    assert_ne!(code, 0);
    let rd = run_dir(seeds, name);
    let (_, status, _) = blockflow(&["status", rd.to_str().expect("utf-8")]);
    assert!(
        status.contains("segment 0 task 0 failed: killed by Slurm: out of memory"),
        "{status}"
    );
    let script = std::fs::read_to_string(rd.join("slurm/s0.sh")).expect("sbatch script");
    assert!(
        script.contains("--mem=300M") && script.contains("--cpus-per-task=2"),
        "{script}"
    );
    // More again, for what runs again: resume --mem.
    let (code, _, err) = blockflow(&["resume", "-q", rd.to_str().expect("utf-8"), "--mem", "2G"]);
    assert_eq!(code, 0, "{err}");
    let script = std::fs::read_to_string(rd.join("slurm/s0.sh")).expect("sbatch script");
    assert!(script.contains("--mem=2048M"), "{script}");
}

/// Batched tasks per array element, a cap on elements at once, and the
/// sbatch options passed through.
fn tasks_batched_per_element(seeds: &Seeds) {
    let (name, sets) = SEEDS[3];
    let batch = seeds.batch(name, sets);
    let args = submit_args(
        seeds,
        name,
        sets,
        "slurm",
        &[
            "--tasks-per-job",
            "2",
            "--max-parallel",
            "1",
            "--partition",
            "debug",
            "--time",
            "00:10:00",
            "--sbatch-arg=--comment=blockflow-test",
        ],
    );
    let (code, _, err) = blockflow(&strs(&args));
    assert_eq!(code, 0, "{err}");
    assert_same_outputs(
        &batch,
        &seeds.path().join("out"),
        "elevation, two tasks per element",
    );
    let rd = run_dir(seeds, name);
    let info = read_json(rd.join("run.json"));
    assert_eq!(
        info["jobs"][0]["elements"], "0-1",
        "3 tasks in 2 elements: {info}"
    );
    let script = std::fs::read_to_string(rd.join("slurm/s0.sh")).expect("sbatch script");
    for want in [
        "--partition=debug",
        "--time=00:10:00",
        "--comment=blockflow-test",
        "--element",
    ] {
        assert!(script.contains(want), "{want} in {script}");
    }
}

/// Submitted without waiting, then cancelled: Slurm holds nothing of the
/// run, and resume finishes it.
fn cancelled_then_resumed(seeds: &Seeds) {
    let (name, sets) = SEEDS[2];
    let batch = seeds.batch(name, sets);
    let args = submit_args(
        seeds,
        name,
        sets,
        "slurm",
        &["--no-wait", "--max-parallel", "1"],
    );
    let (code, jobs, err) = blockflow(&strs(&args));
    assert_eq!(code, 0, "{err}");
    let ids = jobs.split_whitespace().collect::<Vec<_>>().join(",");
    assert!(!ids.is_empty(), "submit prints the job ids");
    let rd = run_dir(seeds, name);
    let rds = rd.to_str().expect("utf-8");
    let (code, out, err) = blockflow(&["cancel", rds]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cancelled"), "{out}");
    let held = || {
        let q = Command::new("squeue")
            .args(["-h", "-j", &ids])
            .output()
            .expect("squeue");
        String::from_utf8_lossy(&q.stdout).trim().to_string()
    };
    let mut left = held();
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        left = held();
    }
    assert!(left.is_empty(), "still queued after cancel: {left}");
    let (code, _, err) = blockflow(&["resume", "-q", rds]);
    assert_eq!(code, 0, "{err}");
    assert_same_outputs(
        &batch,
        &seeds.path().join("out"),
        "timeseries after cancel and resume",
    );
}

#[test]
fn paths_written_any_way_give_the_same_run() {
    // `./configs/x.toml`, a relative `--set` path and a relative run
    // folder, then status from another folder: every task plans as submit
    // did (tasks failed with "plans differently" before).
    let seeds = Seeds::new();
    let (name, sets) = SEEDS[0];
    let mut args = vec![
        "submit".to_string(),
        format!("./configs/{name}.toml"),
        "--task-count".into(),
        "2".into(),
        "-q".into(),
        "--run-dir".into(),
        "./runs/../runs/a.run".into(),
        "--set".into(),
        "features.path=elsewhere/features.zarr".into(),
    ];
    for s in sets {
        args.push("--set".into());
        args.push((*s).to_string());
    }
    let out = bin()
        .args(&args)
        .current_dir(seeds.path())
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(seeds
        .path()
        .join("elsewhere/features.zarr/zarr.json")
        .exists());
    let out = bin()
        .args(["status", "../runs/a.run"])
        .current_dir(seeds.path().join("configs"))
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("complete"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
