//! Helpers for the end-to-end tests: run the binary, write configs, read results.
#![allow(dead_code)]

pub mod s3;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use blockflow_core::{ArrayData, Region};
use blockflow_io::zarr::ZarrReader;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blockflow"))
}

/// Runs the binary with `args`; returns (exit code, stdout, stderr).
pub fn blockflow(args: &[&str]) -> (i32, String, String) {
    let out: Output = bin().args(args).output().expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a pipeline file into `dir`.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

/// Reads a whole Zarr array.
pub fn read_all(path: &Path) -> ArrayData {
    let r = ZarrReader::open(path).expect("open output");
    let shape = r.info.shape.clone();
    r.read(&Region::new(vec![0; shape.len()], shape), &[])
        .expect("read output")
}

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `blockflow run -q CONFIG --set S...`; returns (exit code, stdout, stderr).
pub fn run_with_sets(cfg: &Path, sets: &[String]) -> (i32, String, String) {
    let mut args = vec![
        "run".to_string(),
        "-q".to_string(),
        cfg.to_string_lossy().into_owned(),
    ];
    for s in sets {
        args.push("--set".into());
        args.push(s.clone());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    blockflow(&refs)
}

/// Runs `blockflow run -q CONFIG --report REPORT`, which must succeed;
/// returns the run report.
pub fn run_reported(cfg: &Path, report: &Path) -> serde_json::Value {
    let (code, _, err) = blockflow(&[
        "run",
        "-q",
        cfg.to_str().expect("utf-8 path"),
        "--report",
        report.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(code, 0, "{err}");
    read_json(report)
}

/// Runs `blockflow generate WHAT DIR --count N --size S --seed SEED`.
pub fn generate(what: &str, dir: &Path, count: usize, size: usize, seed: u64) {
    let out = bin()
        .args(["generate", what, dir.to_str().expect("utf-8 path")])
        .args(["--count", &count.to_string(), "--size", &size.to_string()])
        .args(["--seed", &seed.to_string()])
        .output()
        .expect("generate");
    assert!(out.status.success(), "{out:?}");
}

/// A JSON file (a run report, a result).
pub fn read_json(path: impl AsRef<Path>) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read JSON")).expect("parse JSON")
}

/// The whole stack of the timepoints `dir/t_*.h5` (dataset "data").
pub fn read_timepoints(dir: &Path) -> ArrayData {
    let s = blockflow_io::hdf5::StackReader::open(&format!("{}/t_*.h5", dir.display()), "data")
        .expect("stack");
    let shape = s.shape();
    s.read(&Region::new(vec![0; shape.len()], shape))
        .expect("read stack")
}
