//! The segments of a task plan, each planned as a pipeline of its own,
//! with its tasks, their memory, input and output.

use std::collections::HashMap;
use std::path::Path;

use blockflow_core::ChunkGrid;

use super::cut::Cut;
use super::stored::{inter_options, RunCatalog, Staged, Stored};
use super::subconfig::{sub_config, Sub};
use super::{
    hb, planned, unbounded, ClusterError, Dependency, Group, Merge, Place, Segment, SegmentKind,
    Store, TaskOptions, DEFAULT_TASK_OUTPUT,
};
use crate::config::RawConfig;
use crate::plan::Plan;
use crate::stages::{Exec, Writes};

/// What every segment is cut from.
pub(super) struct Cx<'a> {
    pub(super) cut: &'a Cut<'a>,
    pub(super) full: &'a Plan,
    pub(super) raw: &'a RawConfig,
    pub(super) opts: &'a TaskOptions,
    pub(super) budget: u64,
    pub(super) run_dir: &'a Path,
    pub(super) stored: Stored<'a>,
    pub(super) staged: &'a Staged,
    pub(super) catalog: &'a RunCatalog<'a>,
}

/// The stages of one time step.
struct Step {
    t: usize,
    members: Vec<usize>,
    /// Reductions whose partials it makes, and the streams they reduce.
    partials: Vec<(usize, usize)>,
    /// Reductions it merges.
    merges: Vec<usize>,
}

/// The segments, in time order.
pub(super) fn all(cx: &Cx<'_>) -> Result<Vec<Segment>, ClusterError> {
    let cut = cx.cut;
    let n = cut.nodes.len();
    let is_partial = |i: usize| cut.place[i] == Place::Partial;
    let mut times: Vec<usize> = cut.time.iter().flatten().copied().collect();
    // A merged reduction's partials are made in the segment before its merge.
    times.extend(
        (0..n)
            .filter(|&i| is_partial(i))
            .filter_map(|i| cut.time[i])
            .map(|t| t - 1),
    );
    times.sort_unstable();
    times.dedup();
    let mut segments: Vec<Segment> = Vec::new();
    let mut seg_of_time: HashMap<usize, usize> = HashMap::new();
    for &t in &times {
        let step = Step {
            t,
            members: (0..n)
                .filter(|&i| cut.time[i] == Some(t) && !is_partial(i))
                .collect(),
            partials: (0..n)
                .filter(|&i| is_partial(i) && cut.time[i] == Some(t + 1))
                .map(|x| (x, cut.by_name[&cut.nodes[x].inputs[0]]))
                .collect(),
            merges: (0..n)
                .filter(|&i| is_partial(i) && cut.time[i] == Some(t))
                .collect(),
        };
        let seg = segment_at(cx, &step, segments.len(), &seg_of_time)?;
        seg_of_time.insert(t, seg.index);
        segments.push(seg);
    }
    Ok(segments)
}

/// The last segment: one task that moves every output into place.
pub(super) fn commit(index: usize) -> Segment {
    Segment {
        index,
        kind: SegmentKind::Commit,
        stages: Vec::new(),
        merges: Vec::new(),
        reads: Vec::new(),
        groups: Vec::new(),
        tasks: 1,
        units: 1,
        workers: 1,
        after: (0..index).map(|s| (s, Dependency::AllToAll)).collect(),
        task_memory: 16 << 20,
        task_input_bytes: 0,
        task_output_bytes: 0,
        intermediate_bytes: 0,
        raw: None,
        plan: None,
    }
}

/// The segment of time step `step.t`.
fn segment_at(
    cx: &Cx<'_>,
    step: &Step,
    index: usize,
    seg_of_time: &HashMap<usize, usize>,
) -> Result<Segment, ClusterError> {
    let cut = cx.cut;
    let kind = if step.t.is_multiple_of(2) {
        SegmentKind::Chunks
    } else {
        SegmentKind::Whole
    };
    let also: Vec<usize> = step.partials.iter().map(|&(_, j)| j).collect();
    let sub = sub_config(cx, &step.members, &also, step.t);
    let sub_plan = plan_sub(cx, &sub, kind, index, &step.members)?;
    let merged_from = step
        .t
        .checked_sub(1)
        .and_then(|p| seg_of_time.get(&p).copied());
    let mut after: Vec<(usize, Dependency)> = sub
        .reads
        .iter()
        .filter_map(|&j| cut.time[j].and_then(|tj| seg_of_time.get(&tj).copied()))
        .chain(step.merges.iter().filter_map(|_| merged_from))
        .map(|s| (s, Dependency::AllToAll))
        .collect();
    after.sort_unstable_by_key(|a| a.0);
    after.dedup_by_key(|a| a.0);
    let mut stages: Vec<String> = step
        .merges
        .iter()
        .map(|&x| format!("{} (merge)", cut.name(x)))
        .collect();
    stages.extend(step.members.iter().map(|&i| cut.name(i).to_string()));
    stages.extend(
        step.partials
            .iter()
            .map(|&(x, _)| format!("{} (partials)", cut.name(x))),
    );
    let mut seg = Segment {
        index,
        kind,
        stages,
        merges: merges_of(cx, &step.merges, merged_from)?,
        reads: sub.reads.iter().map(|&j| cut.name(j).to_string()).collect(),
        groups: Vec::new(),
        tasks: 1,
        units: 1,
        workers: cx.opts.cpus.max(1),
        after,
        task_memory: sub_plan.as_ref().map_or(16 << 20, Plan::projected_bytes),
        task_input_bytes: 0,
        task_output_bytes: 0,
        intermediate_bytes: 0,
        raw: None,
        plan: None,
    };
    for &i in &step.members {
        if cx.stored.chunks.contains_key(&i) && !cx.stored.shared.contains(&i) {
            if let Some(o) = planned(cx.full, cut.name(i)).and_then(|s| s.output.as_ref()) {
                seg.intermediate_bytes += o.total_bytes();
            }
        }
    }
    match (kind, sub_plan.as_ref()) {
        (SegmentKind::Chunks, Some(p)) => chunk_tasks(cx, &mut seg, step, p)?,
        (_, Some(p)) => {
            seg.task_input_bytes = p
                .stages
                .iter()
                .filter(|s| s.inputs.is_empty())
                .filter_map(|s| s.output.as_ref().map(|o| o.total_bytes()))
                .sum();
            seg.task_output_bytes = seg.intermediate_bytes;
        }
        _ => {}
    }
    seg.raw = Some(sub.raw);
    seg.plan = sub_plan;
    Ok(seg)
}

/// The segment's pipeline planned: a whole segment's held to the budget
/// like any run; a chunk segment's not (its tasks compute regions and
/// hold no window; its per-chunk memory is checked in [`chunk_tasks`]).
fn plan_sub(
    cx: &Cx<'_>,
    sub: &Sub,
    kind: SegmentKind,
    index: usize,
    members: &[usize],
) -> Result<Option<Plan>, ClusterError> {
    if sub.raw.stages.is_empty() {
        return Ok(None);
    }
    let raw = if kind == SegmentKind::Chunks {
        unbounded(&sub.raw)
    } else {
        sub.raw.clone()
    };
    // Its readers of stored intermediates stand for the whole pipeline's
    // stages: what those are (for its writers) is the whole plan's.
    let known = cx
        .full
        .stages
        .iter()
        .map(|s| (s.name.clone(), s.about.clone()))
        .collect();
    crate::plan::plan_knowing(&raw, cx.catalog, &known)
        .map(Some)
        .map_err(|e| {
            ClusterError::Refused(format!(
                "segment {index} (stages {}) cannot be planned on its own: {e}",
                members
                    .iter()
                    .map(|&i| cx.cut.name(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// The reductions a whole segment merges from the partials segment
/// `from` stored.
fn merges_of(
    cx: &Cx<'_>,
    merges: &[usize],
    from: Option<usize>,
) -> Result<Vec<Merge>, ClusterError> {
    let mut out = Vec::new();
    for &x in merges {
        let name = cx.cut.name(x);
        let spec = planned(cx.full, name).and_then(|s| s.output.as_ref());
        let (Some(spec), Some(from)) = (spec, from) else {
            return Err(ClusterError::Refused(format!(
                "stage \"{name}\": no segment makes its partials"
            )));
        };
        let chunks = spec.grid.chunk_shape().to_vec();
        out.push(Merge {
            stage: name.to_string(),
            from_segment: from,
            path: cx
                .stored
                .at
                .get(&x)
                .cloned()
                .unwrap_or_else(|| cx.run_dir.join("inter").join(format!("{name}.zarr"))),
            options: inter_options(spec.dtype, spec.shape().to_vec(), chunks.clone()),
            chunks,
        });
    }
    Ok(out)
}

/// A chunk segment's groups, task count, threads, and per-task memory,
/// input and output.
fn chunk_tasks(
    cx: &Cx<'_>,
    seg: &mut Segment,
    step: &Step,
    sub_plan: &Plan,
) -> Result<(), ClusterError> {
    let cut = cx.cut;
    let partials: Vec<(String, String)> = step
        .partials
        .iter()
        .map(|&(x, j)| (cut.name(x).to_string(), cut.name(j).to_string()))
        .collect();
    chunk_groups(
        seg,
        cut,
        &step.members,
        &partials,
        sub_plan,
        &cx.stored,
        cx.staged,
    )?;
    seg.units = seg.groups.iter().map(|g| g.units).sum();
    let out_bytes: u64 = seg
        .groups
        .iter()
        .map(|g| {
            let item = planned(sub_plan, &g.stage)
                .and_then(|s| s.output.as_ref())
                .map_or(1, |o| o.dtype.size() as u64);
            g.shape.iter().product::<u64>() * item * g.stores.len() as u64
        })
        .sum();
    let tasks = cx
        .opts
        .tasks
        .unwrap_or_else(|| out_bytes.div_ceil(DEFAULT_TASK_OUTPUT));
    seg.tasks = tasks.clamp(1, seg.units.max(1));
    let per_unit: u64 = sub_plan
        .stages
        .iter()
        .filter(|s| !matches!(s.kind.exec(), Exec::Window(_)))
        .map(|s| s.mem.working / s.parallel.max(1) as u64)
        .sum();
    if per_unit > cx.budget {
        return Err(ClusterError::Refused(format!(
            "segment {} (stages {}): one chunk needs {} to compute by region, over the pipeline's `memory` of {}; use smaller chunks, or raise `memory`",
            seg.index,
            seg.stages.join(", "),
            hb(per_unit),
            hb(cx.budget)
        )));
    }
    // As many threads as the CPUs, and as the budget holds.
    let fit = (cx.budget / per_unit.max(1)).max(1);
    seg.workers = (cx.opts.cpus.max(1) as u64).min(fit) as usize;
    seg.task_memory = per_unit.saturating_mul(seg.workers as u64);
    seg.task_output_bytes = out_bytes.div_ceil(seg.tasks);
    seg.task_input_bytes = input_bytes(sub_plan, seg).div_ceil(seg.tasks);
    Ok(())
}

/// The groups of a chunk segment: each stage it stores, with its stores.
#[allow(clippy::too_many_arguments)]
fn chunk_groups(
    seg: &mut Segment,
    cut: &Cut<'_>,
    members: &[usize],
    partials: &[(String, String)],
    sub_plan: &Plan,
    stored: &Stored<'_>,
    staged: &Staged,
) -> Result<(), ClusterError> {
    let mut groups: Vec<Group> = Vec::new();
    let mut push = |stage: &str,
                    store: Option<Store>,
                    partial: Option<&str>|
     -> Result<(), ClusterError> {
        let k = match groups.iter().position(|g| g.stage == stage) {
            Some(k) => k,
            None => {
                let st = planned(sub_plan, stage).ok_or_else(|| {
                    ClusterError::Refused(format!("stage \"{stage}\" is not in its segment's plan"))
                })?;
                let out = st.output.as_ref().ok_or_else(|| {
                    ClusterError::Refused(format!("stage \"{stage}\" has no output to store"))
                })?;
                groups.push(Group {
                    stage: stage.to_string(),
                    shape: out.shape().to_vec(),
                    chunks: out.grid.chunk_shape().to_vec(),
                    units: out.grid.num_chunks(),
                    stores: Vec::new(),
                    partials: Vec::new(),
                });
                groups.len() - 1
            }
        };
        groups[k].stores.extend(store);
        groups[k].partials.extend(partial.map(str::to_string));
        Ok(())
    };
    for &i in members {
        if cut.place[i] == Place::ZarrSink {
            let input = &cut.nodes[i].inputs[0];
            let Some(st) = planned(sub_plan, cut.name(i)) else {
                continue;
            };
            let Some(Writes::Zarr { options, .. }) = st.kind.writes() else {
                continue;
            };
            if let Some(shards) = &options.shards {
                // Tasks write whole units (the stream's chunks) in separate
                // processes: a shard split between units would have two writers.
                if !crate::stages::write_zarr::stream_fills_shards(
                    &options.shape,
                    st.grid.chunk_shape(),
                    shards,
                ) {
                    return Err(ClusterError::Refused(format!(
                        "stage \"{}\" writes shards {shards:?}, but its input streams chunks {:?}: in a distributed run each task writes whole stream chunks, so a shard split between them would have two writers. Rechunk the input to multiples of the shards, or run it with `blockflow run`",
                        cut.name(i),
                        st.grid.chunk_shape()
                    )));
                }
            }
            let path = staged.get(&(i, "path")).cloned().unwrap_or_default();
            push(
                input,
                Some(Store {
                    stage: input.clone(),
                    role: cut.name(i).to_string(),
                    path,
                    chunks: options.chunks.clone(),
                    options: options.clone(),
                }),
                None,
            )?;
        }
        if stored.shared.contains(&i) {
            continue;
        }
        if let Some(chunks) = stored.chunks.get(&i) {
            let st = planned(sub_plan, cut.name(i));
            let Some(out) = st.and_then(|s| s.output.as_ref()) else {
                continue;
            };
            push(
                cut.name(i),
                Some(Store {
                    stage: cut.name(i).to_string(),
                    role: "intermediate".into(),
                    path: stored.at[&i].clone(),
                    chunks: chunks.clone(),
                    options: inter_options(out.dtype, out.shape().to_vec(), chunks.clone()),
                }),
                None,
            )?;
        }
    }
    for (x, input) in partials {
        push(input, None, Some(x))?;
    }
    seg.groups = groups;
    Ok(())
}

/// Bytes a chunk segment reads from stored inputs: each group's units'
/// leaves (sources) over the unit grown by the halos on the way, estimated
/// from one interior unit of each group.
fn input_bytes(plan: &Plan, seg: &Segment) -> u64 {
    let mut total = 0u64;
    for g in &seg.groups {
        let Some(k) = plan.stages.iter().position(|s| s.name == g.stage) else {
            continue;
        };
        let grid = match ChunkGrid::new(g.shape.clone(), g.chunks.clone()) {
            Ok(gr) => gr,
            Err(_) => continue,
        };
        let mid: Vec<u64> = grid.grid_shape().iter().map(|&n| n / 2).collect();
        let per = leaf_bytes(plan, k, &grid.region(&mid));
        total = total.saturating_add(per.saturating_mul(g.units));
    }
    total
}

fn leaf_bytes(plan: &Plan, k: usize, region: &blockflow_core::Region) -> u64 {
    let st = &plan.stages[k];
    let item = st.output.as_ref().map_or(1, |o| o.dtype.size() as u64);
    if st.inputs.is_empty() {
        return region.shape.iter().product::<u64>() * item;
    }
    match st.kind.exec() {
        Exec::Map(_) => st
            .inputs
            .iter()
            .enumerate()
            .map(|(pos, &j)| {
                let shape = plan.stages[j]
                    .output
                    .as_ref()
                    .map(|o| o.shape().to_vec())
                    .unwrap_or_default();
                let (want, _) = st.kind.input_region(pos, region, &shape);
                leaf_bytes(plan, j, &want)
            })
            .sum(),
        _ => leaf_bytes(plan, st.inputs[0], region),
    }
}
