//! The run folder: what a submitted run is (its configuration as it was
//! submitted, its options, its jobs) and what its tasks have done (a done
//! marker per task, written last; a failure record per failed task; logs).
//!
//! ```text
//! RUN_DIR/run.json            the run: config text, overrides, options, jobs
//! RUN_DIR/plan.json           the task plan (as `plan --tasks --json`)
//! RUN_DIR/done/s<S>-t<I>      task I of segment S finished (written last)
//! RUN_DIR/failed/s<S>-t<I>.txt  why it failed (removed when it succeeds)
//! RUN_DIR/logs/               task logs
//! RUN_DIR/inter/<stage>.zarr  intermediates
//! RUN_DIR/out/<stage>/...     outputs, until the commit task moves them
//! RUN_DIR/slurm/s<S>.sh       the sbatch script of segment S
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{plan_tasks, ClusterError, TaskOptions, TaskPlan};
use crate::config;

/// A submitted job (one segment's array, or part of it on resume).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub segment: usize,
    pub job_id: String,
    /// The array elements submitted (`0-7`, or `2,5` on resume).
    pub elements: String,
}

/// Slurm settings of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SlurmSettings {
    /// `--mem` in MiB per segment (projection plus reserve), or forced.
    pub mem_forced_mib: Option<u64>,
    pub mem_reserve: u64,
    pub max_parallel: Option<u64>,
    pub time: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub extra: Vec<String>,
}

/// What `run.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    /// The pipeline file (its folder is where relative paths start).
    pub config: PathBuf,
    /// Its text when the run was submitted.
    pub text: String,
    pub sets: Vec<String>,
    /// `--skip` stages.
    #[serde(default)]
    pub skip: Vec<String>,
    /// `--out` (absolute).
    #[serde(default)]
    pub out: Option<PathBuf>,
    pub tasks: Option<u64>,
    pub cpus: usize,
    pub tasks_per_job: u64,
    pub executor: String,
    pub fingerprint: String,
    /// The binary the tasks run.
    pub binary: PathBuf,
    /// The folder it was submitted from (relative paths of `--set` start there).
    #[serde(default)]
    pub cwd: PathBuf,
    #[serde(default)]
    pub slurm: SlurmSettings,
    #[serde(default)]
    pub jobs: Vec<JobRecord>,
}

/// An open run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub path: PathBuf,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ClusterError + '_ {
    move |e| ClusterError::RunDir {
        path: path.to_path_buf(),
        why: e.to_string(),
    }
}

/// Writes `bytes` to `path` atomically (temporary name, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ClusterError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let tmp = blockflow_io::zarr::with_suffix(path, &format!(".tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

impl RunDir {
    pub fn new(path: &Path) -> Self {
        RunDir {
            path: super::absolute(path),
        }
    }

    pub fn info_path(&self) -> PathBuf {
        self.path.join("run.json")
    }

    /// Reads `run.json`.
    pub fn info(&self) -> Result<RunInfo, ClusterError> {
        let p = self.info_path();
        let text = std::fs::read_to_string(&p).map_err(|e| ClusterError::RunDir {
            path: self.path.clone(),
            why: format!("not a run folder (cannot read run.json: {e})"),
        })?;
        serde_json::from_str(&text).map_err(|e| ClusterError::RunDir {
            path: p.clone(),
            why: format!("damaged: {e}"),
        })
    }

    pub fn save_info(&self, info: &RunInfo) -> Result<(), ClusterError> {
        let text = serde_json::to_string_pretty(info).unwrap_or_default();
        write_atomic(&self.info_path(), text.as_bytes())
    }

    /// The task plan the run was submitted with, made again from its saved
    /// configuration and checked against the fingerprint saved then.
    pub fn task_plan(&self, info: &RunInfo) -> Result<TaskPlan, ClusterError> {
        // Paths given relative (on the command line) are from where the
        // run was submitted.
        if !info.cwd.as_os_str().is_empty() {
            std::env::set_current_dir(&info.cwd).map_err(|e| ClusterError::RunDir {
                path: self.path.clone(),
                why: format!(
                    "cannot work from {}, the folder the run was submitted from: {e}",
                    info.cwd.display()
                ),
            })?;
        }
        let mut raw = config::parse(&info.config, &info.text)?;
        crate::Changes {
            sets: info.sets.clone(),
            skip: info.skip.clone(),
            out: info.out.clone(),
        }
        .apply(&mut raw)?;
        let plan = plan_tasks(
            &raw,
            &TaskOptions {
                tasks: info.tasks,
                cpus: info.cpus,
                run_dir: self.path.clone(),
            },
        )?;
        let now = plan.fingerprint();
        if now != info.fingerprint {
            return Err(ClusterError::RunDir {
                path: self.path.clone(),
                why: format!(
                    "the pipeline now plans differently from when it was submitted (plan {now}, submitted {}): an input it reads changed (its shape, chunks or files), or blockflow was upgraded; start a new run",
                    info.fingerprint
                ),
            });
        }
        Ok(plan)
    }

    pub fn done_marker(&self, s: usize, i: u64) -> PathBuf {
        self.path.join("done").join(format!("s{s}-t{i}"))
    }
    pub fn failed_record(&self, s: usize, i: u64) -> PathBuf {
        self.path.join("failed").join(format!("s{s}-t{i}.txt"))
    }
    pub fn is_done(&self, s: usize, i: u64) -> bool {
        self.done_marker(s, i).exists()
    }
    pub fn logs(&self) -> PathBuf {
        self.path.join("logs")
    }
    /// The log of task `i` of segment `s` under the local executor.
    pub fn local_log(&self, s: usize, i: u64) -> PathBuf {
        self.logs().join(format!("s{s}-t{i}.log"))
    }
    /// The newest Slurm log of array element `e` of segment `s`.
    pub fn slurm_log(&self, s: usize, e: u64) -> Option<PathBuf> {
        let prefix = format!("s{s}-e{e}.");
        let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
        for entry in std::fs::read_dir(self.logs()).ok()?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&prefix) || !name.ends_with(".log") {
                continue;
            }
            let t = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                best = Some((t, entry.path()));
            }
        }
        best.map(|(_, p)| p)
    }
    /// Task `i` of segment `s` is done: its marker, written last.
    pub fn mark_done(&self, s: usize, i: u64) -> Result<(), ClusterError> {
        let _ = std::fs::remove_file(self.failed_record(s, i));
        write_atomic(&self.done_marker(s, i), b"done\n")
    }
    pub fn mark_failed(&self, s: usize, i: u64, why: &str) {
        let _ = write_atomic(&self.failed_record(s, i), format!("{why}\n").as_bytes());
    }
    /// Why task `i` of segment `s` failed, if it said.
    pub fn failure(&self, s: usize, i: u64) -> Option<String> {
        std::fs::read_to_string(self.failed_record(s, i))
            .ok()
            .map(|t| t.trim().to_string())
    }
}

/// Why a log says its task ended, in words (Slurm's kills).
pub fn log_verdict(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let low = text.to_lowercase();
    if low.contains("exceeded memory limit")
        || low.contains("oom-kill")
        || low.contains("out of memory")
        || low.contains("out_of_memory")
    {
        return Some(
            "killed by Slurm: out of memory (it used more than its --mem; see the log)".into(),
        );
    }
    if low.contains("due to time limit") {
        return Some("killed by Slurm: over its --time".into());
    }
    if low.contains("cancelled") {
        return Some("cancelled".into());
    }
    text.lines()
        .rev()
        .find(|l| l.contains("error"))
        .map(|l| l.trim().to_string())
}
