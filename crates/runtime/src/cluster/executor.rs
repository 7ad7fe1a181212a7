//! The executors: a local process pool (`--executor local`) and Slurm
//! array jobs (`--executor slurm`), both running `blockflow task`; and
//! what a run's status is, from its done markers, failure records, logs
//! and Slurm's queue.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::rundir::{log_verdict, write_atomic, JobRecord, RunDir, RunInfo};
use super::{ClusterError, TaskPlan};

/// Refuses a run that would fail only at its end: an output that exists
/// and may not be replaced.
pub fn check_outputs(plan: &TaskPlan) -> Result<(), ClusterError> {
    for f in &plan.finals {
        if !f.overwrite && std::fs::symlink_metadata(&f.path).is_ok() {
            return Err(ClusterError::Refused(format!(
                "stage \"{}\": {} exists and its `if_exists` is \"fail\"; remove it or set if_exists = \"overwrite\"",
                f.stage,
                f.path.display()
            )));
        }
    }
    Ok(())
}

/// Creates the run folder with `run.json` and `plan.json`.
pub fn prepare(dir: &RunDir, info: &RunInfo, plan: &TaskPlan) -> Result<(), ClusterError> {
    if dir.info_path().exists() {
        return Err(ClusterError::RunDir {
            path: dir.path.clone(),
            why: "already holds a run (see `blockflow status`, `blockflow resume`); choose another --run-dir or remove it".into(),
        });
    }
    check_outputs(plan)?;
    std::fs::create_dir_all(dir.logs()).map_err(|e| ClusterError::RunDir {
        path: dir.path.clone(),
        why: e.to_string(),
    })?;
    write_atomic(
        &dir.path.join("plan.json"),
        format!("{:#}\n", plan.to_json()).as_bytes(),
    )?;
    dir.save_info(info)
}

/// The tasks of segment `s` not done yet.
pub fn missing(dir: &RunDir, plan: &TaskPlan, s: usize) -> Vec<u64> {
    (0..plan.segments[s].tasks)
        .filter(|&i| !dir.is_done(s, i))
        .collect()
}

/// Runs every task not done yet, segment after segment, with `workers`
/// processes of `exe task` at once. Stops after the first segment with a
/// failed task, naming each with its log.
pub fn run_local(
    dir: &RunDir,
    plan: &TaskPlan,
    exe: &Path,
    workers: usize,
    say: &dyn Fn(&str),
) -> Result<(), ClusterError> {
    for seg in &plan.segments {
        let todo = missing(dir, plan, seg.index);
        if todo.is_empty() {
            continue;
        }
        say(&format!(
            "segment {} ({:?}, {} tasks): running {}",
            seg.index,
            seg.kind,
            seg.tasks,
            todo.len()
        ));
        let mut queue = todo.into_iter();
        let mut running: Vec<(u64, Child)> = Vec::new();
        let mut failed: Vec<(u64, String)> = Vec::new();
        loop {
            while running.len() < workers.max(1) {
                let Some(i) = queue.next() else { break };
                let log = dir.local_log(seg.index, i);
                let out = std::fs::File::create(&log).map_err(|e| ClusterError::RunDir {
                    path: log.clone(),
                    why: e.to_string(),
                })?;
                let err = out.try_clone().map_err(|e| ClusterError::RunDir {
                    path: log.clone(),
                    why: e.to_string(),
                })?;
                let child = Command::new(exe)
                    .arg("task")
                    .arg(&dir.path)
                    .args([
                        "--segment",
                        &seg.index.to_string(),
                        "--index",
                        &i.to_string(),
                    ])
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err)
                    .spawn()
                    .map_err(|e| {
                        ClusterError::Refused(format!("cannot start {}: {e}", exe.display()))
                    })?;
                running.push((i, child));
            }
            if running.is_empty() {
                break;
            }
            let mut k = 0;
            while k < running.len() {
                match running[k].1.try_wait() {
                    Ok(Some(status)) => {
                        let (i, _) = running.remove(k);
                        if !status.success() || !dir.is_done(seg.index, i) {
                            let why = dir
                                .failure(seg.index, i)
                                .unwrap_or_else(|| format!("ended with {status}"));
                            failed.push((i, why));
                        }
                    }
                    Ok(None) => k += 1,
                    Err(e) => {
                        let (i, _) = running.remove(k);
                        failed.push((i, e.to_string()));
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if !failed.is_empty() {
            let list: Vec<String> = failed
                .iter()
                .map(|(i, why)| {
                    format!(
                        "  task {i}: {why} (log {})",
                        dir.local_log(seg.index, *i).display()
                    )
                })
                .collect();
            return Err(ClusterError::Refused(format!(
                "segment {}: {} of {} tasks failed:\n{}\nfix the cause, then `blockflow resume {}` runs exactly these again",
                seg.index,
                failed.len(),
                seg.tasks,
                list.join("\n"),
                dir.path.display()
            )));
        }
    }
    Ok(())
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', "'\\''"))
}

/// The `--mem` of segment `s`, in MiB: its task projection plus the
/// reserve, or what the user forced.
pub fn mem_mib(info: &RunInfo, plan: &TaskPlan, s: usize) -> u64 {
    if let Some(m) = info.slurm.mem_forced_mib {
        return m;
    }
    (plan.segments[s].task_memory + info.slurm.mem_reserve).div_ceil(1 << 20)
}

/// Writes segment `s`'s sbatch script and returns its path.
pub fn write_script(
    dir: &RunDir,
    info: &RunInfo,
    plan: &TaskPlan,
    s: usize,
) -> Result<PathBuf, ClusterError> {
    let st = &info.slurm;
    let mut t = String::from("#!/bin/bash\n");
    t += &format!("#SBATCH --job-name=bf-{}-s{s}\n", plan.name);
    t += &format!(
        "#SBATCH --output={}\n",
        dir.logs().join(format!("s{s}-e%a.%A.log")).display()
    );
    t += &format!("#SBATCH --cpus-per-task={}\n", plan.cpus);
    t += &format!("#SBATCH --mem={}M\n", mem_mib(info, plan, s));
    if let Some(v) = &st.time {
        t += &format!("#SBATCH --time={v}\n");
    }
    if let Some(v) = &st.partition {
        t += &format!("#SBATCH --partition={v}\n");
    }
    if let Some(v) = &st.account {
        t += &format!("#SBATCH --account={v}\n");
    }
    for e in &st.extra {
        t += &format!("#SBATCH {e}\n");
    }
    t += &format!(
        "# segment {s}: {} tasks, {} per array element\nexec {} task {} --segment {s} --element \"$SLURM_ARRAY_TASK_ID\"\n",
        plan.segments[s].tasks,
        info.tasks_per_job,
        quote(&info.binary),
        quote(&dir.path)
    );
    let path = dir.path.join("slurm").join(format!("s{s}.sh"));
    write_atomic(&path, t.as_bytes())?;
    Ok(path)
}

/// `0-7` or `2,5,9` for a list of elements.
fn array_spec(elements: &[u64]) -> String {
    let contiguous = elements.windows(2).all(|w| w[1] == w[0] + 1);
    match (elements.first(), elements.last()) {
        (Some(a), Some(b)) if contiguous => format!("{a}-{b}"),
        _ => elements
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn run_cmd(cmd: &mut Command) -> Result<String, ClusterError> {
    let out = cmd.output().map_err(|e| {
        ClusterError::Refused(format!(
            "cannot run {:?}: {e} (is Slurm installed and SLURM_CONF set?)",
            cmd.get_program()
        ))
    })?;
    if !out.status.success() {
        return Err(ClusterError::Refused(format!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Submits, segment after segment, the array elements holding tasks not
/// done yet (all of them for a new run), each segment after the jobs of
/// the segments it waits for. Records the jobs in `run.json`.
pub fn submit_slurm(
    dir: &RunDir,
    info: &mut RunInfo,
    plan: &TaskPlan,
) -> Result<Vec<JobRecord>, ClusterError> {
    let tpj = info.tasks_per_job.max(1);
    let mut job_of: HashMap<usize, String> = HashMap::new();
    let mut new = Vec::new();
    for seg in &plan.segments {
        let elements: BTreeSet<u64> = missing(dir, plan, seg.index)
            .into_iter()
            .map(|i| i / tpj)
            .collect();
        if elements.is_empty() {
            continue;
        }
        let elements: Vec<u64> = elements.into_iter().collect();
        let script = write_script(dir, info, plan, seg.index)?;
        let mut spec = array_spec(&elements);
        if let Some(m) = info.slurm.max_parallel {
            spec = format!("{spec}%{m}");
        }
        let deps: Vec<&str> = seg
            .after
            .iter()
            .filter_map(|(a, _)| job_of.get(a).map(String::as_str))
            .collect();
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable").arg(format!("--array={spec}"));
        if !deps.is_empty() {
            cmd.arg(format!("--dependency=afterok:{}", deps.join(":")));
            cmd.arg("--kill-on-invalid-dep=yes");
        }
        cmd.arg(&script);
        let out = run_cmd(&mut cmd)?;
        let id = out.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() {
            return Err(ClusterError::Refused(format!(
                "sbatch printed no job id for segment {}",
                seg.index
            )));
        }
        job_of.insert(seg.index, id.clone());
        let rec = JobRecord {
            segment: seg.index,
            job_id: id,
            elements: array_spec(&elements),
        };
        info.jobs.push(rec.clone());
        dir.save_info(info)?;
        new.push(rec);
    }
    Ok(new)
}

/// What one task is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    Done,
    Running,
    Pending,
    /// Ended without its marker: why, and its log.
    Failed(String, Option<PathBuf>),
    /// Never ran (not submitted, or cancelled before it started).
    NotRun,
}

/// A segment's tasks by state.
#[derive(Debug, Clone, Default)]
pub struct SegmentStatus {
    pub index: usize,
    pub tasks: u64,
    pub done: u64,
    pub running: u64,
    pub pending: u64,
    pub failed: Vec<(u64, String, Option<PathBuf>)>,
    pub not_run: Vec<u64>,
}

/// Slurm's queue for a run's jobs: (job id, array element) -> state.
fn queue(info: &RunInfo) -> HashMap<(String, u64), String> {
    let mut q = HashMap::new();
    if info.executor != "slurm" || info.jobs.is_empty() {
        return q;
    }
    let ids: Vec<&str> = info.jobs.iter().map(|j| j.job_id.as_str()).collect();
    let Ok(text) = run_cmd(
        Command::new("squeue")
            .args(["-h", "-r", "-o", "%i|%T", "-j"])
            .arg(ids.join(",")),
    ) else {
        return q;
    };
    for line in text.lines() {
        let Some((id, state)) = line.trim().split_once('|') else {
            continue;
        };
        if let Some((job, e)) = id.split_once('_') {
            if let Ok(e) = e.parse::<u64>() {
                q.insert((job.to_string(), e), state.to_string());
            }
        }
    }
    q
}

/// Every task's state.
pub fn status(dir: &RunDir, info: &RunInfo, plan: &TaskPlan) -> Vec<SegmentStatus> {
    let q = queue(info);
    let tpj = info.tasks_per_job.max(1);
    plan.segments
        .iter()
        .map(|seg| {
            let s = seg.index;
            let mut st = SegmentStatus {
                index: s,
                tasks: seg.tasks,
                ..Default::default()
            };
            for i in 0..seg.tasks {
                match task_state(dir, info, &q, s, i, tpj) {
                    TaskState::Done => st.done += 1,
                    TaskState::Running => st.running += 1,
                    TaskState::Pending => st.pending += 1,
                    TaskState::Failed(why, log) => st.failed.push((i, why, log)),
                    TaskState::NotRun => st.not_run.push(i),
                }
            }
            st
        })
        .collect()
}

fn task_state(
    dir: &RunDir,
    info: &RunInfo,
    q: &HashMap<(String, u64), String>,
    s: usize,
    i: u64,
    tpj: u64,
) -> TaskState {
    if dir.is_done(s, i) {
        return TaskState::Done;
    }
    let e = i / tpj;
    for job in info.jobs.iter().rev().filter(|j| j.segment == s) {
        if let Some(state) = q.get(&(job.job_id.clone(), e)) {
            return if state == "RUNNING" || state == "COMPLETING" {
                TaskState::Running
            } else {
                TaskState::Pending
            };
        }
    }
    let log = if info.executor == "slurm" {
        dir.slurm_log(s, e)
    } else {
        Some(dir.local_log(s, i)).filter(|p| p.exists())
    };
    // The log's verdict first: a task Slurm killed wrote no record.
    let verdict = log.as_deref().and_then(log_verdict);
    if let Some(why) = dir.failure(s, i) {
        let why = match &verdict {
            Some(v) if v.starts_with("killed") => v.clone(),
            _ => why,
        };
        return TaskState::Failed(why, log);
    }
    match log {
        Some(l) => TaskState::Failed(
            verdict
                .filter(|v| v.starts_with("killed") || v == "cancelled")
                .unwrap_or_else(|| "ended without finishing (killed?)".into()),
            Some(l),
        ),
        None => TaskState::NotRun,
    }
}

/// The run's status in words.
pub fn status_text(dir: &RunDir, info: &RunInfo, plan: &TaskPlan) -> (String, bool) {
    let st = status(dir, info, plan);
    let mut s = format!(
        "run {} ({} executor, pipeline \"{}\")\n{:>3}  {:<7} {:>6} {:>6} {:>8} {:>8} {:>7} {:>7}\n",
        dir.path.display(),
        info.executor,
        plan.name,
        "seg",
        "kind",
        "tasks",
        "done",
        "running",
        "pending",
        "failed",
        "not run"
    );
    let mut complete = true;
    for (g, seg) in st.iter().zip(&plan.segments) {
        complete &= g.done == g.tasks;
        s += &format!(
            "{:>3}  {:<7} {:>6} {:>6} {:>8} {:>8} {:>7} {:>7}\n",
            g.index,
            format!("{:?}", seg.kind).to_lowercase(),
            g.tasks,
            g.done,
            g.running,
            g.pending,
            g.failed.len(),
            g.not_run.len()
        );
    }
    for g in &st {
        for (i, why, log) in &g.failed {
            s += &format!(
                "segment {} task {i} failed: {why}{}\n",
                g.index,
                log.as_ref()
                    .map(|l| format!(" (log {})", l.display()))
                    .unwrap_or_default()
            );
        }
    }
    if complete {
        s += "complete: every task is done and every output is in place\n";
    } else if st
        .iter()
        .any(|g| !g.failed.is_empty() || !g.not_run.is_empty())
        && st.iter().all(|g| g.running == 0 && g.pending == 0)
    {
        s += &format!(
            "stopped: `blockflow resume {}` runs the tasks not done\n",
            dir.path.display()
        );
    }
    (s, complete)
}

/// Cancels every job of the run that Slurm still holds.
pub fn cancel(info: &RunInfo) -> Result<usize, ClusterError> {
    if info.executor != "slurm" || info.jobs.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = info.jobs.iter().map(|j| j.job_id.clone()).collect();
    run_cmd(Command::new("scancel").args(&ids))?;
    Ok(ids.len())
}

/// Whether Slurm still holds any of the run's tasks.
pub fn anything_queued(info: &RunInfo) -> bool {
    !queue(info).is_empty()
}
