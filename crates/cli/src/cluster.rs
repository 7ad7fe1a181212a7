//! `blockflow plan --tasks`, `task`, `submit`, `status`, `resume`, `cancel`:
//! a pipeline as tasks on Slurm or a local process pool.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use blockflow_core::{human_bytes, parse_bytes};
use blockflow_runtime::cluster::executor;
use blockflow_runtime::cluster::rundir::{RunDir, RunInfo, SlurmSettings};
use blockflow_runtime::cluster::task::{run_planned, Outcome};
use blockflow_runtime::cluster::{plan_tasks, TaskOptions, TaskPlan};

use crate::emit;

/// What `run`, `plan` and `submit` change about the outputs.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Put every output the config names by a relative path, the run
    /// report and the scratch folder under DIR (as they lie under the
    /// folder the outputs share: `../out/features.zarr` becomes
    /// `DIR/features.zarr`). Without it, relative paths are from the
    /// config's folder.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Leave out a stage, and the writers only it feeds (repeatable).
    #[arg(long, value_name = "STAGE")]
    pub skip: Vec<String>,
}

impl OutputArgs {
    pub fn changes(&self, sets: &[String]) -> blockflow_runtime::Changes {
        blockflow_runtime::Changes {
            sets: sets.to_vec(),
            skip: self.skip.clone(),
            out: self
                .out
                .as_ref()
                .map(|d| blockflow_runtime::cluster::absolute(d)),
        }
    }
}

/// How the pipeline is cut into tasks (shared by `plan --tasks` and `submit`).
#[derive(clap::Args, Debug, Clone)]
pub struct SplitArgs {
    /// Tasks per chunk segment (at most one per chunk; default: about one
    /// per 2 GiB of output).
    #[arg(long, value_name = "N")]
    pub task_count: Option<u64>,
    /// CPUs (threads) per task.
    #[arg(long, default_value_t = 2, value_name = "C")]
    pub cpus_per_task: usize,
    /// The run folder, on storage every node reaches (default:
    /// `<name>.run` beside the pipeline's report).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

/// `submit`'s options.
#[derive(clap::Args, Debug, Clone)]
pub struct SubmitArgs {
    pub config: PathBuf,
    #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
    pub sets: Vec<String>,
    #[command(flatten)]
    pub outputs: OutputArgs,
    /// `local`: a process pool on this machine; `slurm`: array jobs.
    #[arg(long, value_parser = ["local", "slurm"], default_value = "local")]
    pub executor: String,
    #[command(flatten)]
    pub split: SplitArgs,
    /// Local executor: processes at once (default: this machine's cores
    /// divided by --cpus-per-task).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Tasks per Slurm array element, so an element runs for minutes.
    #[arg(long, default_value_t = 1)]
    pub tasks_per_job: u64,
    /// At most this many array elements of a segment at once (`%M`).
    #[arg(long)]
    pub max_parallel: Option<u64>,
    /// Memory added to each task's projection for `--mem` (the binary,
    /// libraries, allocator slack); read as `--mem` is (`512M`, `1G`, or
    /// with blockflow's units, `256 MiB`).
    #[arg(long, default_value = "256 MiB")]
    pub mem_reserve: String,
    /// Force `--mem` (e.g. "4G"), instead of the projection plus reserve.
    #[arg(long)]
    pub mem: Option<String>,
    /// Slurm `--time` of each array element.
    #[arg(long)]
    pub time: Option<String>,
    #[arg(long)]
    pub partition: Option<String>,
    #[arg(long)]
    pub account: Option<String>,
    /// Any other sbatch option, passed through (repeatable).
    #[arg(long = "sbatch-arg", value_name = "OPTION", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
    /// Slurm: return once submitted instead of waiting for the run.
    #[arg(long)]
    pub no_wait: bool,
    #[arg(long, short)]
    pub quiet: bool,
}

/// A size as sbatch's `--mem` reads it (`300M`, `4G`, `2T`, `512K`, or a
/// number of MiB), or with a unit as blockflow writes sizes (`300 MiB`),
/// in MiB.
fn slurm_mib(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let scale = match unit {
        "" | "M" | "m" => Some(1),
        "G" | "g" => Some(1 << 10),
        "T" | "t" => Some(1 << 20),
        "K" | "k" => Some(0),
        _ => None,
    };
    match (num.parse::<u64>(), scale) {
        (Ok(n), Some(0)) => Ok(n.div_ceil(1024)),
        (Ok(n), Some(s)) => Ok(n * s),
        _ => parse_bytes(t).map(|b| b.div_ceil(1 << 20)),
    }
}

/// The task plan of a config with its overrides.
pub fn task_plan(
    config: &Path,
    changes: &blockflow_runtime::Changes,
    split: &SplitArgs,
    create: bool,
) -> anyhow::Result<(TaskPlan, PathBuf)> {
    let mut raw = blockflow_runtime::config::load(config)?;
    changes.apply(&mut raw)?;
    let run_dir = match &split.run_dir {
        Some(d) => d.clone(),
        None => blockflow_runtime::cluster::default_run_dir(&raw)?,
    };
    if create {
        // Made first, so the plan names it as the tasks will.
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("cannot create the run folder {}", run_dir.display()))?;
    }
    let run_dir = RunDir::new(&run_dir).path;
    let plan = plan_tasks(
        &raw,
        &TaskOptions {
            tasks: split.task_count,
            cpus: split.cpus_per_task,
            run_dir: run_dir.clone(),
        },
    )?;
    Ok((plan, run_dir))
}

/// `blockflow plan --tasks`.
pub fn plan_cmd(
    config: &Path,
    changes: &blockflow_runtime::Changes,
    split: &SplitArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (plan, _) = task_plan(config, changes, split, false)?;
    if json {
        emit(&format!("{:#}\n", plan.to_json()))
    } else {
        emit(&plan.to_text())
    }
}

/// `blockflow task RUN_DIR --segment S (--index I | --element E)`.
pub fn task_cmd(
    run_dir: &Path,
    segment: usize,
    index: Option<u64>,
    element: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let dir = RunDir::new(run_dir);
    let info = dir.info()?;
    let plan = dir.task_plan(&info)?;
    let seg = plan
        .segments
        .get(segment)
        .with_context(|| format!("the run has {} segments", plan.segments.len()))?;
    let indices: Vec<u64> = match (index, element) {
        (Some(i), None) => vec![i],
        (None, Some(e)) => {
            let tpj = info.tasks_per_job.max(1);
            (e * tpj..((e + 1) * tpj).min(seg.tasks)).collect()
        }
        _ => anyhow::bail!("give --index or --element"),
    };
    if indices.is_empty() {
        anyhow::bail!("array element {element:?} holds no task of segment {segment}");
    }
    for i in indices {
        let t0 = std::time::Instant::now();
        match run_planned(&dir, &plan, segment, i)? {
            Outcome::AlreadyDone => say!("segment {segment} task {i}: already done"),
            Outcome::Done => say!(
                "segment {segment} task {i}: done in {:.2} s, peak RSS {}",
                t0.elapsed().as_secs_f64(),
                human_bytes(blockflow_runtime::report::peak_rss_bytes())
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn workers(args_workers: Option<usize>, cpus: usize) -> usize {
    args_workers.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / cpus.max(1)).max(1)
    })
}

fn said(quiet: bool) -> impl Fn(&str) {
    move |m: &str| {
        if !quiet {
            say!("{m}");
        }
    }
}

/// `blockflow submit`.
pub fn submit_cmd(a: &SubmitArgs) -> anyhow::Result<ExitCode> {
    // Planned as the tasks will plan it: from the file's own path.
    let config =
        std::fs::canonicalize(&a.config).with_context(|| format!("{}", a.config.display()))?;
    let changes = a.outputs.changes(&a.sets);
    let (plan, run_dir) = task_plan(&config, &changes, &a.split, true)?;
    let dir = RunDir::new(&run_dir);
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let mem_forced_mib = a
        .mem
        .as_deref()
        .map(slurm_mib)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--mem: {e}"))?;
    let mem_reserve =
        slurm_mib(&a.mem_reserve).map_err(|e| anyhow::anyhow!("--mem-reserve: {e}"))? << 20;
    let mut info = RunInfo {
        config,
        text,
        sets: a.sets.clone(),
        skip: changes.skip.clone(),
        out: changes.out.clone(),
        tasks: a.split.task_count,
        cpus: a.split.cpus_per_task,
        tasks_per_job: a.tasks_per_job.max(1),
        executor: a.executor.clone(),
        fingerprint: plan.fingerprint(),
        binary: std::env::current_exe().context("cannot find this binary's path")?,
        cwd: std::env::current_dir().context("cannot read the working directory")?,
        slurm: SlurmSettings {
            mem_forced_mib,
            mem_reserve,
            max_parallel: a.max_parallel,
            time: a.time.clone(),
            partition: a.partition.clone(),
            account: a.account.clone(),
            extra: a.sbatch_args.clone(),
        },
        jobs: Vec::new(),
    };
    executor::prepare(&dir, &info, &plan)?;
    let say = said(a.quiet);
    say(&format!(
        "run folder {}: {} tasks in {} segments",
        dir.path.display(),
        plan.total_tasks(),
        plan.segments.len()
    ));
    if a.executor == "local" {
        return finish_local(&dir, &info, &plan, workers(a.workers, plan.cpus), &say);
    }
    let jobs = executor::submit_slurm(&dir, &mut info, &plan)?;
    for j in &jobs {
        println!("{}", j.job_id);
        say(&format!(
            "segment {}: job {} (array {}, --mem {}M)",
            j.segment,
            j.job_id,
            j.elements,
            executor::mem_mib(&info, &plan, j.segment)
        ));
    }
    if a.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    wait_slurm(&dir, &info, &plan, &say)
}

fn finish_local(
    dir: &RunDir,
    info: &RunInfo,
    plan: &TaskPlan,
    workers: usize,
    say: &dyn Fn(&str),
) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find this binary's path")?;
    let _ = info;
    match executor::run_local(dir, plan, &exe, workers, say) {
        Ok(()) => {
            for f in &plan.finals {
                say(&format!("wrote {}", f.path.display()));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            say!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Waits until Slurm holds none of the run's tasks, then says how it ended.
fn wait_slurm(
    dir: &RunDir,
    info: &RunInfo,
    plan: &TaskPlan,
    say: &dyn Fn(&str),
) -> anyhow::Result<ExitCode> {
    while executor::anything_queued(info) {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let (text, complete) = executor::status_text(dir, info, plan);
    say(text.trim_end());
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn open(run_dir: &Path) -> anyhow::Result<(RunDir, RunInfo, TaskPlan)> {
    let dir = RunDir::new(run_dir);
    let info = dir.info()?;
    let plan = dir.task_plan(&info)?;
    Ok((dir, info, plan))
}

/// `blockflow status RUN_DIR`.
pub fn status_cmd(run_dir: &Path) -> anyhow::Result<ExitCode> {
    let (dir, info, plan) = open(run_dir)?;
    let (text, _) = executor::status_text(&dir, &info, &plan);
    emit(&text)
}

/// `blockflow resume RUN_DIR`: the tasks not done, again.
pub fn resume_cmd(r: &ResumeArgs) -> anyhow::Result<ExitCode> {
    let (dir, mut info, plan) = open(&r.run_dir)?;
    let (workers_arg, no_wait, quiet) = (r.workers, r.no_wait, r.quiet);
    // New memory for what runs again (a task Slurm killed for memory).
    if let Some(m) = &r.mem {
        info.slurm.mem_forced_mib = Some(slurm_mib(m).map_err(|e| anyhow::anyhow!("--mem: {e}"))?);
    }
    if let Some(m) = &r.mem_reserve {
        info.slurm.mem_forced_mib = None;
        info.slurm.mem_reserve =
            slurm_mib(m).map_err(|e| anyhow::anyhow!("--mem-reserve: {e}"))? << 20;
    }
    if r.mem.is_some() || r.mem_reserve.is_some() {
        dir.save_info(&info)?;
    }
    let say = said(quiet);
    if info.executor == "local" {
        return finish_local(&dir, &info, &plan, workers(workers_arg, plan.cpus), &say);
    }
    if executor::anything_queued(&info) {
        anyhow::bail!(
            "Slurm still holds tasks of this run; wait for them (blockflow status {}) or cancel them (blockflow cancel {}) first",
            dir.path.display(),
            dir.path.display()
        );
    }
    let jobs = executor::submit_slurm(&dir, &mut info, &plan)?;
    if jobs.is_empty() {
        say("nothing to resume: every task is done");
        return Ok(ExitCode::SUCCESS);
    }
    for j in &jobs {
        println!("{}", j.job_id);
        say(&format!(
            "segment {}: job {} (array {})",
            j.segment, j.job_id, j.elements
        ));
    }
    if no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    wait_slurm(&dir, &info, &plan, &say)
}

/// `resume`'s options.
#[derive(clap::Args, Debug, Clone)]
pub struct ResumeArgs {
    pub run_dir: PathBuf,
    /// Local executor: processes at once.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Slurm: force `--mem` for what is submitted again (e.g. "8G").
    #[arg(long, conflicts_with = "mem_reserve")]
    pub mem: Option<String>,
    /// Slurm: the reserve over each task's projection for `--mem`.
    #[arg(long)]
    pub mem_reserve: Option<String>,
    /// Slurm: return once submitted.
    #[arg(long)]
    pub no_wait: bool,
    #[arg(long, short)]
    pub quiet: bool,
}

/// `blockflow cancel RUN_DIR`.
pub fn cancel_cmd(run_dir: &Path) -> anyhow::Result<ExitCode> {
    let dir = RunDir::new(run_dir);
    let info = dir.info()?;
    let n = executor::cancel(&info)?;
    emit(&format!(
        "cancelled {n} jobs of {}; `blockflow resume` runs what is not done\n",
        dir.path.display()
    ))
}
