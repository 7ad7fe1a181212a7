//! The `blockflow` binary: run, plan, inspect, stages.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use blockflow_core::{human_bytes, ChunkGrid};
use blockflow_io::zarr::ZarrReader;
use blockflow_runtime::follow::{FollowError, FollowOptions, IngestProgress, IngestStatus};
use blockflow_runtime::{ConfigError, Progress, RunError, RunOptions};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

/// `eprintln!` that never panics: stderr may be a pipe its reader closed
/// (a log collector gone, `2>&1 | head`); the message is then lost, the
/// run goes on.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}
#[allow(unused_imports)]
pub(crate) use say;

mod cluster;
mod progress;

/// Kernels allocate and free multi-megabyte buffers per chunk; glibc
/// serves those with fresh mmaps, so every chunk paid its page faults
/// again (system time equal to user time on the structure tensor).
/// mimalloc reuses freed memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "blockflow",
    version,
    about = "Run array pipelines larger than memory, chunk by chunk, under a hard memory budget"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run a pipeline.
    Run {
        /// The pipeline file (TOML).
        config: PathBuf,
        /// Override a parameter: STAGE.PARAM=VALUE (or pipeline.PARAM=VALUE); repeatable.
        #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
        sets: Vec<String>,
        /// Where to write the JSON run report (default: the pipeline's `report`).
        #[arg(long)]
        report: Option<PathBuf>,
        #[command(flatten)]
        outputs: cluster::OutputArgs,
        /// No progress bar and no summary.
        #[arg(long, short)]
        quiet: bool,
        /// Ingest: watch the folder of the pipeline's read-hdf5-stack stage
        /// and append each complete new timepoint to the write-zarr output
        /// as it arrives (see the [follow] table). Runs until SIGTERM or
        /// Ctrl-C (which finish what is in flight and exit 0), or until
        /// `[follow] idle_exit`. Restarting resumes where the manifest says.
        #[arg(long)]
        follow: bool,
    },
    /// Validate a pipeline and print its plan: stages, shapes, dtypes, chunk grids, projected memory.
    Plan {
        config: PathBuf,
        #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
        sets: Vec<String>,
        /// Print the plan as a Graphviz digraph.
        #[arg(long, conflicts_with = "json")]
        dot: bool,
        /// Print the plan as JSON (exact projected bytes, for scripts).
        #[arg(long)]
        json: bool,
        /// Show the pipeline cut into segments and tasks for a cluster
        /// (`submit`): each task's memory, input and output, and the
        /// intermediate storage of the run.
        #[arg(long, conflicts_with = "dot")]
        tasks: bool,
        #[command(flatten)]
        split: cluster::SplitArgs,
        #[command(flatten)]
        outputs: cluster::OutputArgs,
    },
    /// Run one task of a submitted run (what each Slurm array element runs).
    Task {
        run_dir: PathBuf,
        #[arg(long)]
        segment: usize,
        /// The task's index in its segment.
        #[arg(long, conflicts_with = "element")]
        index: Option<u64>,
        /// An array element: the tasks it holds (`--tasks-per-job` of them).
        #[arg(long)]
        element: Option<u64>,
    },
    /// Cut a pipeline into tasks and run them on Slurm or a local process pool.
    Submit(cluster::SubmitArgs),
    /// A submitted run's tasks per segment: done, running, pending, failed (with logs).
    Status { run_dir: PathBuf },
    /// Run again exactly the tasks of a run that are not done.
    Resume(cluster::ResumeArgs),
    /// Cancel a run's Slurm jobs.
    Cancel { run_dir: PathBuf },
    /// Show a Zarr array's shape, dtype, chunks, size and codecs.
    Inspect { path: PathBuf },
    /// List every stage kind with its parameters.
    Stages,
    /// Write generated input data: `cells` writes seed 001's stack of RGB
    /// PNG images (cell_0000.png, ...); `timeseries` writes seed 002's
    /// per-timepoint HDF5 volumes (t_0000.h5, ..., dataset "data", float64,
    /// blobs and noise moved by a known rigid shift per timepoint, listed in
    /// shifts.json).
    Generate {
        /// What to generate.
        #[arg(value_parser = ["cells", "timeseries"])]
        what: String,
        /// The folder to write into (created if missing).
        dir: PathBuf,
        /// How many images or timepoints (default: 844 images, 10 timepoints).
        #[arg(long)]
        count: Option<usize>,
        /// Image height and width, or volume edge, in pixels (default: 256, 100).
        #[arg(long)]
        size: Option<usize>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Element type of the generated timepoints: float64 or float32.
        #[arg(long, default_value = "float64")]
        dtype: String,
    },
}

/// mimalloc's `purge_delay` option (its enum `mi_option_t`, v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Return freed memory to the OS 100 ms after it was last used, not
    // mimalloc's 1 s, and not never: keeping it (-1) saved the page faults
    // of chunks that reuse the same buffers (main job: 0.35 s of system
    // time instead of 1.1 s) but let every thread keep its own high-water
    // mark, so a 1.1 GiB rechunk through disk with a 256 MiB budget peaked
    // at 407 MiB RSS (108 MiB of chunks live); at 100 ms it peaks at 250 MiB
    // and the budget holds. MIMALLOC_PURGE_DELAY (milliseconds) overrides.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        #[allow(unsafe_code)]
        // SAFETY: sets an integer option; called once, before any other thread exists.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 100);
        }
    }
    let cli = Cli::parse();
    // An ingest without a terminal (a service, a log file) logs each
    // timepoint; with one, the spinner shows them.
    let default = match &cli.cmd {
        Cmd::Run {
            follow: true,
            quiet: false,
            ..
        } if !std::io::stderr().is_terminal() => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BLOCKFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // Written without panicking: stderr may be a closed pipe too.
            let mut err = std::io::stderr().lock();
            if let Some(c) = e.downcast_ref::<ConfigError>() {
                let _ = writeln!(err, "{c}");
                return ExitCode::from(2);
            }
            if let Some(FollowError::Unfit(why)) = e.downcast_ref::<FollowError>() {
                // The configuration cannot run as an ingest: a config error.
                let _ = writeln!(err, "error: {why} (--follow)");
                return ExitCode::from(2);
            }
            let _ = writeln!(err, "error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Generate {
            what,
            dir,
            count,
            size,
            seed,
            dtype,
        } => {
            if what == "timeseries" {
                let (count, size) = (count.unwrap_or(10), size.unwrap_or(100));
                let dt = blockflow_core::DType::parse(&dtype)
                    .with_context(|| format!("unknown dtype \"{dtype}\" (float64 or float32)"))?;
                let files = blockflow_io::hdf5::write_timeseries_as(&dir, count, size, seed, dt)?;
                emit(&format!(
                    "wrote {} timepoints of {size}^3 {dt} into {} (and shifts.json)\n",
                    files.len(),
                    dir.display()
                ))
            } else {
                let (count, size) = (count.unwrap_or(844), size.unwrap_or(256));
                let files = blockflow_io::images::write_cell_images(&dir, count, size, size, seed)?;
                emit(&format!(
                    "wrote {} images of {size} x {size} x 3 into {}\n",
                    files.len(),
                    dir.display()
                ))
            }
        }
        Cmd::Stages => emit(&blockflow_runtime::spec::describe_all()),
        Cmd::Plan {
            config,
            sets,
            dot,
            json,
            tasks,
            split,
            outputs,
        } => {
            let changes = outputs.changes(&sets);
            if tasks {
                return cluster::plan_cmd(&config, &changes, &split, json);
            }
            let plan = blockflow_runtime::load_plan_with(&config, &changes)?;
            if dot {
                emit(&plan.to_dot())
            } else if json {
                emit(&format!("{:#}\n", plan.to_json()))
            } else {
                emit(&plan.to_text())
            }
        }
        Cmd::Inspect { path } => inspect(&path),
        Cmd::Task {
            run_dir,
            segment,
            index,
            element,
        } => cluster::task_cmd(&run_dir, segment, index, element),
        Cmd::Submit(a) => cluster::submit_cmd(&a),
        Cmd::Status { run_dir } => cluster::status_cmd(&run_dir),
        Cmd::Resume(r) => cluster::resume_cmd(&r),
        Cmd::Cancel { run_dir } => cluster::cancel_cmd(&run_dir),
        Cmd::Run {
            config,
            sets,
            report,
            outputs,
            quiet,
            follow,
        } => {
            let changes = outputs.changes(&sets);
            if follow {
                follow_run(&config, &changes, report, quiet)
            } else {
                run(&config, &changes, report, quiet)
            }
        }
    }
}

/// Free budget above which freed memory is kept for reuse for 1 s.
const ROOMY: u64 = 256 << 20;

/// Keeps freed memory 1 s instead of 100 ms (see `main`) when the plan
/// leaves at least [`ROOMY`] of the budget unprojected. What the allocator
/// then holds beyond the live chunks is what was freed and not yet reused
/// in the last second; large per-chunk buffers come back warm instead of
/// as fresh pages (seed 002 at 20 x 256^3, 3.0 GiB peak RSS of a 5 GiB
/// budget: 17.1 s against 17.8 s in interleaved runs, 16.6 s against 22 s
/// and 7 s of system time against 16 s when fresh pages were slow). Tight
/// budgets keep 100 ms: the 4-D rechunk of tests/memory.rs (226 MiB
/// projected of 256 MiB) peaked at 247-250 MiB with it, 265-310 MiB with 1 s.
fn keep_freed_memory_longer(budget: u64, projected: u64) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() || budget < projected + ROOMY {
        return;
    }
    tracing::debug!(
        "keeping freed memory for 1 s: the plan leaves {} of the budget",
        human_bytes(budget - projected)
    );
    #[allow(unsafe_code)]
    // SAFETY: sets an integer option, which mimalloc reads atomically.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000);
    }
}

fn run(
    config: &Path,
    changes: &blockflow_runtime::Changes,
    report: Option<PathBuf>,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    // --report goes through the config's checks like `pipeline.report`.
    let mut changes = changes.clone();
    if let Some(r) = &report {
        changes
            .sets
            .push(format!("pipeline.report={}", r.display()));
    }
    let plan = blockflow_runtime::load_plan_with(config, &changes)?;
    if let Some(dir) = &changes.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    keep_freed_memory_longer(plan.memory, plan.projected_bytes());
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = Arc::clone(&cancel);
        ctrlc::set_handler(move || {
            if cancel.swap(true, Ordering::SeqCst) {
                // A second interrupt: stop now.
                std::process::exit(130);
            }
            say!("\ninterrupted: stopping (press Ctrl-C again to exit at once)");
        })
        .context("cannot install the Ctrl-C handler")?;
    }
    let progress: Option<Arc<dyn Progress>> = if !quiet && !std::io::stderr().is_terminal() {
        Some(Arc::new(progress::LogLines::new(progress::interval())))
    } else if !quiet {
        Some(Arc::new(progress::Bars::new()))
    } else {
        None
    };
    let opts = RunOptions {
        cancel: Arc::clone(&cancel),
        progress,
    };
    tracing::info!(pipeline = %plan.name, stages = plan.stages.len(), "running");
    let (rep, result) = blockflow_runtime::run(&plan, &opts);
    let report_path = plan.report.clone();
    if let Err(e) = rep.write(&report_path) {
        say!(
            "warning: cannot write the run report {}: {e}",
            report_path.display()
        );
    }
    match result {
        Ok(_) => {
            if !quiet {
                say!("{}", results_by_kind(&rep.outputs));
                say!(
                    "done in {:.2} s; peak buffered {} of {} projected, peak RSS {}; report {}",
                    rep.wall_seconds,
                    human_bytes(rep.peak_buffered_bytes),
                    human_bytes(rep.projected_bytes),
                    human_bytes(rep.peak_rss_bytes),
                    report_path.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(RunError::Cancelled) => {
            say!(
                "interrupted: no output was committed; report {}",
                report_path.display()
            );
            Ok(ExitCode::from(130))
        }
        Err(e) => {
            say!("error: {e}");
            say!("no output was committed; report {}", report_path.display());
            Ok(ExitCode::from(1))
        }
    }
}

/// The outputs of a run grouped by what they are, each with its size:
/// where to look once it is done.
fn results_by_kind(outputs: &[blockflow_runtime::report::OutputReport]) -> String {
    let kind = |p: &str| {
        let ext = Path::new(p.trim_end_matches('/'))
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "zarr" => "Zarr",
            "json" => "JSON",
            "png" => "PNG",
            "csv" => "CSV",
            "h5" | "hdf5" => "HDF5",
            _ => "other",
        }
    };
    let order = ["Zarr", "HDF5", "JSON", "CSV", "PNG", "other"];
    let mut text = String::from("results:");
    for k in order {
        let of_kind: Vec<String> = outputs
            .iter()
            .filter(|o| kind(&o.path) == k)
            .map(|o| format!("{} ({})", o.path, human_bytes(o.bytes)))
            .collect();
        if !of_kind.is_empty() {
            text.push_str(&format!("\n  {k:<5} {}", of_kind.join("\n        ")));
        }
    }
    if outputs.is_empty() {
        text.push_str(" none written");
    }
    text
}

struct Spinner(ProgressBar);

impl IngestProgress for Spinner {
    fn update(&self, s: &IngestStatus) {
        self.0.set_message(format!(
            "{} timepoints ({} this run), backlog {}, quarantined {}, {:.2}/s, latency {:.2} s (p50 {:.2}, p99 {:.2}){}",
            s.total,
            s.ingested,
            s.backlog,
            s.quarantined,
            s.rate,
            s.last_latency,
            s.p50,
            s.p99,
            if s.draining { "; draining" } else { "" }
        ));
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// `run --follow`: the ingest, until SIGTERM / Ctrl-C or idle.
fn follow_run(
    config: &Path,
    changes: &blockflow_runtime::Changes,
    report: Option<PathBuf>,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let mut raw = blockflow_runtime::config::load(config)?;
    let mut changes = changes.clone();
    if let Some(r) = report {
        changes
            .sets
            .push(format!("pipeline.report={}", r.display()));
    }
    changes.apply(&mut raw)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            say!("\nstopping: finishing the timepoints in flight (again to exit at once; the next run resumes)");
        })
        .context("cannot install the signal handler")?;
    }
    let progress: Option<Arc<dyn IngestProgress>> = if !quiet && std::io::stderr().is_terminal() {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Some(Arc::new(Spinner(bar)))
    } else {
        None
    };
    let opts = FollowOptions { stop, progress };
    let s = blockflow_runtime::follow::run(raw, &opts).map_err(|e| match e {
        FollowError::Config(c) => anyhow::Error::new(c),
        FollowError::Unfit(why) => {
            anyhow::Error::new(FollowError::Unfit(format!("{}: {why}", config.display())))
        }
        other => anyhow::Error::new(other),
    })?;
    if !quiet {
        say!(
            "ingested {} timepoints this run ({} in {}; resumed from {}), {} quarantined; {:.2} timepoints/s, latency p50 {:.3} s, p99 {:.3} s; peak RSS {}",
            s.ingested,
            s.total,
            s.output.display(),
            s.resumed_from,
            s.quarantined,
            s.timepoints_per_second,
            s.latency_p50_seconds,
            s.latency_p99_seconds,
            human_bytes(s.peak_rss_bytes)
        );
        say!(
            "manifest {}, statistics {}",
            s.state.join("manifest.jsonl").display(),
            s.stats.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to stdout through its lock. A closed stdout
/// (`blockflow plan ... | head -1`) ends the command quietly with exit 0, as
/// ripgrep does: the reader has what it wanted.
pub(crate) fn emit(text: &str) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
    }
}

fn inspect(path: &Path) -> anyhow::Result<ExitCode> {
    let r = ZarrReader::open(path)?;
    let i = &r.info;
    let grid = ChunkGrid::new(i.shape.clone(), i.chunks.clone())?;
    let total = grid.total_elements() * i.dtype.size() as u64;
    let stored = r.stored_bytes();
    let tuple = |v: &[u64]| {
        format!(
            "({})",
            v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        )
    };
    let mut out = String::new();
    writeln!(out, "path     {}", i.path.display())?;
    writeln!(out, "format   zarr v{}", i.zarr_format)?;
    writeln!(out, "shape    {}", tuple(&i.shape))?;
    writeln!(out, "dtype    {}", i.dtype)?;
    writeln!(
        out,
        "chunks   {}: {} chunks in a {} grid, {} each",
        tuple(&i.chunks),
        grid.num_chunks(),
        tuple(&grid.grid_shape()),
        human_bytes(grid.chunk_elements() * i.dtype.size() as u64)
    )?;
    if let Some(shards) = &i.shards {
        let g = ChunkGrid::new(i.shape.clone(), shards.clone())?;
        writeln!(
            out,
            "shards   {}: {} shards (files) in a {} grid",
            tuple(shards),
            g.num_chunks(),
            tuple(&g.grid_shape())
        )?;
    }
    if let Some(names) = &i.dimension_names {
        writeln!(out, "axes     {}", names.join(", "))?;
    }
    writeln!(
        out,
        "bytes    {} uncompressed, {} stored{}",
        human_bytes(total),
        human_bytes(stored),
        if stored > 0 {
            format!(" (ratio {:.2})", total as f64 / stored as f64)
        } else {
            String::new()
        }
    )?;
    writeln!(out, "codecs   {}", i.codecs)?;
    writeln!(out, "fill     {}", i.fill_value)?;
    emit(&out)
}
