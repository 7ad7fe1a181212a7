//! One task of a run: `blockflow task RUN_DIR --segment S --index I`.
//!
//! A task is idempotent: a done task (its marker exists) does nothing; a
//! task that failed or was killed rewrites only its own chunks (each chunk
//! file written whole under a temporary name, then renamed); its done
//! marker is written last.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use blockflow_core::human_bytes;
use blockflow_io::output::{Claim, Made};
use blockflow_io::zarr::ZarrWriter;

use super::rundir::{write_atomic, RunDir};
use super::{ClusterError, Segment, SegmentKind, TaskPlan};
use crate::region::RegionRunner;
use crate::stages::PartialReduce;
use crate::RunOptions;

/// What running a task came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It ran and its marker is written.
    Done,
    /// Its marker was there: nothing was done.
    AlreadyDone,
}

/// Runs task `index` of segment `segment` of the run in `dir`.
pub fn run_task(dir: &RunDir, segment: usize, index: u64) -> Result<Outcome, ClusterError> {
    let info = dir.info()?;
    let plan = dir.task_plan(&info)?;
    run_planned(dir, &plan, segment, index)
}

/// [`run_task`] with the plan made.
pub fn run_planned(
    dir: &RunDir,
    plan: &TaskPlan,
    segment: usize,
    index: u64,
) -> Result<Outcome, ClusterError> {
    let task_err = |msg: String| ClusterError::Task {
        segment,
        index,
        msg,
    };
    let seg = plan.segments.get(segment).ok_or_else(|| {
        task_err(format!(
            "the run has {} segments (0 to {})",
            plan.segments.len(),
            plan.segments.len().saturating_sub(1)
        ))
    })?;
    if index >= seg.tasks {
        return Err(task_err(format!(
            "segment {segment} has {} tasks (0 to {})",
            seg.tasks,
            seg.tasks - 1
        )));
    }
    if dir.is_done(segment, index) {
        return Ok(Outcome::AlreadyDone);
    }
    let result = check_memory(seg)
        .and_then(|()| inject_fault(dir, segment, index, seg))
        .and_then(|()| match seg.kind {
            SegmentKind::Chunks => run_chunks(dir, plan, seg, index),
            SegmentKind::Whole => merge_partials(dir, plan, seg).and_then(|()| run_whole(seg)),
            SegmentKind::Commit => commit(dir, plan),
        });
    match result {
        Ok(()) => {
            dir.mark_done(segment, index)?;
            Ok(Outcome::Done)
        }
        Err(msg) => {
            let e = task_err(msg);
            dir.mark_failed(segment, index, &e.to_string());
            Err(e)
        }
    }
}

/// Refuses to start when the memory this task may use is below its
/// projection.
fn check_memory(seg: &Segment) -> Result<(), String> {
    let Some((limit, from)) = super::memory::limit() else {
        return Ok(());
    };
    if limit < seg.task_memory {
        return Err(format!(
            "this task is projected to need {} but may use only {} ({from}); give it more memory (submit --mem-reserve, or the cluster's limit) or lower the pipeline's memory budget",
            human_bytes(seg.task_memory),
            human_bytes(limit)
        ));
    }
    tracing::info!(
        "memory: projected {}, may use {} ({from})",
        human_bytes(seg.task_memory),
        human_bytes(limit)
    );
    Ok(())
}

/// The test hook `BLOCKFLOW_TASK_FAULT=S:I:WHAT` (WHAT: `fail`, fail once;
/// `kill`, SIGKILL itself once in the middle of writing a chunk file;
/// `alloc=BYTES`, take and touch that much memory and hold it 3 s).
fn inject_fault(dir: &RunDir, s: usize, i: u64, seg: &Segment) -> Result<(), String> {
    let Ok(v) = std::env::var("BLOCKFLOW_TASK_FAULT") else {
        return Ok(());
    };
    let mut parts = v.splitn(3, ':');
    let (Some(fs), Some(fi), Some(what)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(());
    };
    if fs.parse::<usize>().ok() != Some(s) || fi.parse::<u64>().ok() != Some(i) {
        return Ok(());
    }
    let fired = dir.path.join("faults").join(format!("s{s}-t{i}"));
    if fired.exists() {
        return Ok(());
    }
    let _ = write_atomic(&fired, what.as_bytes());
    if what == "fail" {
        return Err("injected fault (BLOCKFLOW_TASK_FAULT)".into());
    }
    if what == "kill" {
        // A chunk file half written, as a kill in the middle leaves it.
        if let Some(store) = seg.groups.first().and_then(|g| g.stores.first()) {
            let _ = std::fs::create_dir_all(&store.path);
            let tmp = store.path.join(format!(".c.tmp-{}-0", std::process::id()));
            let _ = std::fs::write(tmp, b"half a chunk");
        }
        let _ = std::process::Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        std::thread::sleep(std::time::Duration::from_secs(60));
        return Err("injected kill did not kill".into());
    }
    if let Some(n) = what.strip_prefix("alloc=") {
        let bytes =
            blockflow_core::parse_bytes(n).map_err(|e| format!("BLOCKFLOW_TASK_FAULT: {e}"))?;
        let mut v = vec![0u8; bytes as usize];
        for k in (0..v.len()).step_by(4096) {
            v[k] = 1;
        }
        std::thread::sleep(std::time::Duration::from_secs(3));
        std::hint::black_box(&v);
    }
    Ok(())
}

/// A chunk segment's groups, opened for a task: each group's stores, its
/// stage in the segment's plan, its grid, its reductions' partials, and
/// its first unit.
struct Groups<'p> {
    writers: Vec<Vec<ZarrWriter>>,
    stage_of: Vec<usize>,
    grids: Vec<blockflow_core::ChunkGrid>,
    reducers: Vec<Vec<&'p dyn PartialReduce>>,
    starts: Vec<u64>,
}

fn open_groups<'p>(full: &'p crate::plan::Plan, seg: &Segment) -> Result<Groups<'p>, String> {
    let sub = seg.plan.as_ref().ok_or("the segment has no plan")?;
    let mut gr = Groups {
        writers: Vec::new(),
        stage_of: Vec::new(),
        grids: Vec::new(),
        reducers: Vec::new(),
        starts: Vec::new(),
    };
    let mut start = 0;
    for g in &seg.groups {
        let mut rs = Vec::new();
        for x in &g.partials {
            let st = full
                .stages
                .iter()
                .find(|s| &s.name == x)
                .and_then(|s| s.kind.partials())
                .ok_or_else(|| format!("stage \"{x}\" has no partials"))?;
            rs.push(st);
        }
        gr.reducers.push(rs);
        let mut ws = Vec::new();
        for st in &g.stores {
            ws.push(ZarrWriter::open_existing(&st.path, &st.options).map_err(|e| e.to_string())?);
        }
        gr.writers.push(ws);
        gr.stage_of.push(
            sub.stages
                .iter()
                .position(|s| s.name == g.stage)
                .ok_or_else(|| format!("stage \"{}\" is not in the segment's plan", g.stage))?,
        );
        gr.grids.push(
            blockflow_core::ChunkGrid::new(g.shape.clone(), g.chunks.clone())
                .map_err(|e| e.to_string())?,
        );
        gr.starts.push(start);
        start += g.units;
    }
    Ok(gr)
}

/// A chunk task: its units, each computed by region and written to every
/// store of its group (and reduced to its partials), over the task's
/// threads.
fn run_chunks(dir: &RunDir, plan: &TaskPlan, seg: &Segment, index: u64) -> Result<(), String> {
    let sub = seg.plan.as_ref().ok_or("the segment has no plan")?;
    let full = plan.full.as_ref().ok_or("the task plan has no pipeline")?;
    let (lo, hi) = plan.task_units(seg.index, index);
    let gr = open_groups(full, seg)?;
    // (unit, partial position in its group, bytes)
    let parts: Mutex<Vec<(u64, usize, Vec<u8>)>> = Mutex::new(Vec::new());
    let next = AtomicU64::new(lo);
    let failed = AtomicBool::new(false);
    let first_err: Mutex<Option<String>> = Mutex::new(None);
    let workers = seg.workers.clamp(1, (hi - lo).max(1) as usize);
    let one = |runner: &mut RegionRunner<'_>, u: u64| -> Result<(), String> {
        let g = gr.starts.iter().rposition(|&s| s <= u).unwrap_or(0);
        let idx = gr.grids[g].unravel(u - gr.starts[g]);
        let region = gr.grids[g].region(&idx);
        let data = runner
            .compute(gr.stage_of[g], &region)
            .map_err(|e| e.to_string())?;
        let at = |e: String| format!("stage \"{}\" chunk {idx:?}: {e}", seg.groups[g].stage);
        for w in &gr.writers[g] {
            w.write(&region, &data, &idx)
                .map_err(|e| at(e.to_string()))?;
        }
        for (k, r) in gr.reducers[g].iter().enumerate() {
            let b = r.chunk_partial(&data, &region.origin);
            parts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((u, k, b));
        }
        Ok(())
    };
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut runner = RegionRunner::new(sub);
                while !failed.load(Ordering::Relaxed) {
                    let u = next.fetch_add(1, Ordering::Relaxed);
                    if u >= hi {
                        return;
                    }
                    if let Err(e) = one(&mut runner, u) {
                        failed.store(true, Ordering::Relaxed);
                        let mut slot = first_err.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let parts = parts.into_inner().unwrap_or_else(|p| p.into_inner());
    write_partials(dir, seg, &gr.starts, parts, (lo, hi), index)
}

/// Each reduction's partials of this task's units, in unit order, in one
/// file written whole.
fn write_partials(
    dir: &RunDir,
    seg: &Segment,
    starts: &[u64],
    mut parts: Vec<(u64, usize, Vec<u8>)>,
    (lo, hi): (u64, u64),
    index: u64,
) -> Result<(), String> {
    parts.sort_by_key(|(u, k, _)| (*k, *u));
    for (g, group) in seg.groups.iter().enumerate() {
        for (k, x) in group.partials.iter().enumerate() {
            let (gs, ge) = (starts[g], starts[g] + group.units);
            if lo.max(gs) >= hi.min(ge) {
                continue;
            }
            let mut bytes = Vec::new();
            for (_, _, b) in parts
                .iter()
                .filter(|(u, kk, _)| *kk == k && (gs..ge).contains(u))
            {
                bytes.extend_from_slice(&(b.len() as u32).to_le_bytes());
                bytes.extend_from_slice(b);
            }
            write_atomic(&partials_file(dir, x, index), &bytes).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Where task `i` stores the partials of reduction `x`.
fn partials_file(dir: &RunDir, x: &str, i: u64) -> std::path::PathBuf {
    dir.path.join("partials").join(x).join(format!("t{i}.bin"))
}

/// Merges each reduction of a whole segment from the partials its chunk
/// segment's tasks stored, in chunk order, and stores the result.
fn merge_partials(dir: &RunDir, plan: &TaskPlan, seg: &Segment) -> Result<(), String> {
    let full = plan.full.as_ref().ok_or("the task plan has no pipeline")?;
    for m in &seg.merges {
        let st = full
            .stages
            .iter()
            .find(|s| s.name == m.stage)
            .ok_or_else(|| format!("no stage \"{}\"", m.stage))?;
        let reducer = st.kind.partials().ok_or("not a merged reduction")?;
        let out = st.output.as_ref().ok_or("a reduction without an output")?;
        let from = &plan.segments[m.from_segment];
        let mut gs = 0;
        let mut group = None;
        for g in &from.groups {
            if g.partials.contains(&m.stage) {
                group = Some(g);
                break;
            }
            gs += g.units;
        }
        let g = group.ok_or_else(|| {
            format!(
                "segment {} makes no partials of \"{}\"",
                from.index, m.stage
            )
        })?;
        let ge = gs + g.units;
        let mut all: Vec<Vec<u8>> = Vec::with_capacity(g.units as usize);
        for i in 0..from.tasks {
            let (lo, hi) = plan.task_units(from.index, i);
            let (a, b) = (lo.max(gs), hi.min(ge));
            if a >= b {
                continue;
            }
            let f = partials_file(dir, &m.stage, i);
            let bytes = std::fs::read(&f).map_err(|e| {
                format!(
                    "{}: {e} (task {i} of segment {} has not stored its partials)",
                    f.display(),
                    from.index
                )
            })?;
            let mut rest = &bytes[..];
            let mut n = 0;
            while rest.len() >= 4 {
                let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let body = rest
                    .get(4..4 + len)
                    .ok_or_else(|| format!("{}: cut short", f.display()))?;
                all.push(body.to_vec());
                rest = &rest[4 + len..];
                n += 1;
            }
            if n != b - a {
                return Err(format!(
                    "{}: {n} partials for the {} chunks of task {i}",
                    f.display(),
                    b - a
                ));
            }
        }
        let data = reducer
            .merge(&mut all.into_iter(), out)
            .map_err(|e| format!("stage \"{}\": {e}", m.stage))?;
        let w = ZarrWriter::in_place(&m.path, &m.options).map_err(|e| e.to_string())?;
        let shape = out.shape().to_vec();
        let region = blockflow_core::Region::new(vec![0; shape.len()], shape.clone());
        w.write(&region, &data, &vec![0; shape.len()])
            .map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A whole task: its segment's pipeline through the batch engine.
fn run_whole(seg: &Segment) -> Result<(), String> {
    let Some(sub) = seg.plan.as_ref() else {
        return Ok(()); // only merges
    };
    let (rep, result) = crate::exec::run(sub, &RunOptions::default());
    if let Err(e) = rep.write(&sub.report) {
        tracing::warn!("cannot write the report {}: {e}", sub.report.display());
    }
    result.map(|_| ()).map_err(|e| e.to_string())
}

fn made_of(name: &str) -> Made {
    match name {
        "zarr" => Made::Zarr,
        "hdf5" => Made::Hdf5,
        "png" => Made::Png,
        "csv" => Made::Csv,
        _ => Made::Json,
    }
}

/// The commit task: stray temporaries of killed tasks removed, then each
/// output moved into place under its lock, as a batch run commits.
fn commit(dir: &RunDir, plan: &TaskPlan) -> Result<(), String> {
    for root in [dir.path.join("out"), dir.path.join("inter")] {
        sweep_temporaries(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    }
    for f in &plan.finals {
        let key = format!(
            "{}-{}",
            f.stage,
            f.staged
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let committed = dir.path.join("committed").join(key);
        if committed.exists() {
            continue;
        }
        if std::fs::symlink_metadata(&f.staged).is_err() {
            return Err(format!(
                "stage \"{}\": its output {} was not written (a task that writes it has not finished)",
                f.stage,
                f.staged.display()
            ));
        }
        let claim =
            Claim::take(&f.path, made_of(&f.made), f.overwrite).map_err(|e| e.to_string())?;
        move_into(&f.staged, claim.partial())?;
        claim.commit().map_err(|e| e.to_string())?;
        write_atomic(&committed, b"").map_err(|e| e.to_string())?;
        tracing::info!("wrote {}", f.path.display());
    }
    // Every output is in place: the intermediates, partials and staging
    // folders are of no further use (a run's intermediates can be larger
    // than its outputs). Markers, logs and the plan stay for `status`.
    for d in ["inter", "partials", "out", "scratch"] {
        let p = dir.path.join(d);
        if p.exists() {
            blockflow_io::output::remove_any(&p).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Renames `from` to `to`, or copies it where they are on different
/// filesystems.
fn move_into(from: &Path, to: &Path) -> Result<(), String> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(18) => {
            copy_tree(from, to).map_err(|e| format!("copying {}: {e}", from.display()))?;
            let _ = blockflow_io::output::remove_any(from);
            Ok(())
        }
        Err(e) => Err(format!("{} -> {}: {e}", from.display(), to.display())),
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if std::fs::metadata(from)?.is_dir() {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(|_| ())
    }
}

/// Removes the temporary files (`.NAME.tmp-PID-N`) killed writers left.
fn sweep_temporaries(root: &Path) -> std::io::Result<()> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let ft = e.file_type()?;
        if ft.is_dir() {
            sweep_temporaries(&e.path())?;
        } else if name.starts_with('.') && name.contains(".tmp-") {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}
