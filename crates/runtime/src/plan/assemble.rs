//! From the planned stages to the graph that runs: separable filters fused,
//! an overlap stage before each stage that needs a halo, slack on the
//! edges of joins, every stage's memory projected, rechunks over the budget
//! sent through disk, and a plan over the budget refused with advice.

use std::collections::HashMap;

use blockflow_core::{human_bytes, ArraySpec};

use super::regrid::{block_elements, halo_reach};
use super::{Plan, PlannedStage, StageMemory};
use crate::config::{ConfigError, Diags, RawConfig, Span};
use crate::stages::{MemoryCx, SpillCx};

/// A stage with its inputs by name, while the graph is rearranged.
type Named = (PlannedStage, Vec<String>);

/// Merges chains of stages that fuse (a filter whose only consumer is a
/// filter, see [`crate::stages::Stage::fuse_after`]) into one stage, then
/// inserts an overlap stage before every stage that needs a halo. Returns
/// the stages in a new topological order.
pub(super) fn fuse_and_assemble(stages: Vec<PlannedStage>, capacity: usize) -> Vec<PlannedStage> {
    let names: Vec<String> = stages.iter().map(|s| s.name.clone()).collect();
    let mut list: Vec<Named> = stages
        .into_iter()
        .map(|s| {
            let ins = s.inputs.iter().map(|&j| names[j].clone()).collect();
            (s, ins)
        })
        .collect();
    while let Some((j, k, merged)) = fusable(&list) {
        list[k].0.kind = merged;
        list[k].1 = list[j].1.clone();
        list.remove(j);
    }
    let out = with_overlaps(list, capacity);
    // Back to indices.
    let pos: HashMap<String, usize> = out
        .iter()
        .enumerate()
        .map(|(i, (s, _))| (s.name.clone(), i))
        .collect();
    let mut stages: Vec<PlannedStage> = out
        .into_iter()
        .map(|(mut s, ins)| {
            s.inputs = ins.iter().map(|n| pos[n]).collect();
            s.consumers.clear();
            s
        })
        .collect();
    for i in 0..stages.len() {
        for j in stages[i].inputs.clone() {
            stages[j].consumers.push(i);
        }
    }
    stages
}

/// A stage `k` that merges with its only input `j` (whose only consumer
/// it is), and the merged stage.
fn fusable(list: &[Named]) -> Option<(usize, usize, Box<dyn crate::stages::Stage>)> {
    let consumers = |n: &str| {
        list.iter()
            .filter(|(_, ins)| ins.iter().any(|i| i == n))
            .count()
    };
    list.iter().enumerate().find_map(|(k, (s, ins))| {
        if ins.len() != 1 || consumers(&ins[0]) != 1 {
            return None;
        }
        let j = list.iter().position(|(t, _)| t.name == ins[0])?;
        s.kind
            .fuse_after(list[j].0.kind.as_ref(), &list[j].0.name)
            .map(|merged| (j, k, merged))
    })
}

/// The list with an overlap stage `NAME.halo` before every stage that
/// needs a halo.
fn with_overlaps(list: Vec<Named>, capacity: usize) -> Vec<Named> {
    let mut out: Vec<Named> = Vec::new();
    for (s, ins) in list {
        let halo = s.kind.halo().filter(|h| h.iter().any(|&(b, a)| b + a > 0));
        let input = ins
            .first()
            .and_then(|n| out.iter().find(|(t, _)| &t.name == n))
            .and_then(|(t, _)| {
                t.output
                    .clone()
                    .map(|o| (t.name.clone(), o, t.about.clone()))
            });
        if let (Some(halo), Some((from, spec, about))) = (halo, input) {
            let name = format!("{}.halo", s.name);
            let ov = PlannedStage {
                name: name.clone(),
                kind: Box::new(crate::stages::overlap::Overlap::new(
                    spec.grid.clone(),
                    halo,
                )),
                params: Vec::new(),
                inputs: vec![],
                consumers: vec![],
                grid: spec.grid.clone(),
                about,
                output: Some(spec),
                capacity,
                parallel: 1,
                input_slack: Vec::new(),
                mem: StageMemory::default(),
            };
            out.push((ov, vec![from]));
            out.push((s, vec![name]));
        } else {
            out.push((s, ins));
        }
    }
    out
}

/// Sets every join's input slack from the stages' leads (how far ahead of a
/// stage's output its sources must be), in topological order.
pub(super) fn set_slack(stages: &mut [PlannedStage]) {
    let mut lead = vec![0u64; stages.len()];
    for k in 0..stages.len() {
        let base = stages[k].inputs.iter().map(|&i| lead[i]).max().unwrap_or(0);
        lead[k] = match stages[k].kind.sends_halo() {
            Some(halo) => base + halo_reach(&stages[k].grid, halo).1,
            None => base,
        };
        stages[k].input_slack = stages[k]
            .inputs
            .iter()
            .map(|&i| (base - lead[i]) as usize)
            .collect();
    }
}

/// Projects every stage's memory (stages in topological order).
pub(super) fn project_all(stages: &mut [PlannedStage]) {
    for k in 0..stages.len() {
        let (in_bytes, in_elems) = stages[k]
            .inputs
            .iter()
            .map(|&j| sent_chunk(&stages[j]))
            .fold((0u64, 0u64), |(b, e), (bb, ee)| {
                (b.saturating_add(bb), e.saturating_add(ee))
            });
        // Slack on this stage's output edges, held by its consumers' inputs.
        let slack: u64 = stages
            .iter()
            .flat_map(|c| c.inputs.iter().zip(&c.input_slack))
            .filter(|(&i, _)| i == k)
            .map(|(_, &sl)| sl as u64)
            .sum();
        let first_input = stages[k]
            .inputs
            .first()
            .and_then(|&j| stages[j].output.clone());
        stages[k].mem = project(&stages[k], first_input.as_ref(), in_bytes, in_elems, slack);
    }
}

/// Bytes and elements of the largest chunk a stage sends (with its halo
/// for an overlap stage).
pub fn sent_chunk(s: &PlannedStage) -> (u64, u64) {
    match (s.kind.sends_halo(), &s.output) {
        (Some(halo), Some(o)) => {
            let e = block_elements(&s.grid, halo);
            (e.saturating_mul(o.dtype.size() as u64), e)
        }
        (_, Some(o)) => (o.chunk_bytes(), o.grid.chunk_elements()),
        (_, None) => (0, 0),
    }
}

/// The projected peak bytes of one stage: its working memory (the stage's
/// own projection) and what its output channels hold.
fn project(
    s: &PlannedStage,
    input: Option<&ArraySpec>,
    in_chunk_bytes: u64,
    in_elems: u64,
    slack: u64,
) -> StageMemory {
    // In u128: no product of a grid's counts (at most 2^52 elements, see
    // `ChunkGrid::new`), a window and `parallel` can overflow it. The sum
    // saturates to u64::MAX, which no budget allows.
    let w = |x: u64| x as u128;
    let (out_bytes, out_elems) = sent_chunk(s);
    let working = s.kind.memory(&MemoryCx {
        parallel: s.parallel as u128,
        in_bytes: w(in_chunk_bytes),
        in_elems: w(in_elems),
        out_bytes: w(out_bytes),
        out_elems: w(out_elems),
        input,
        grid: &s.grid,
    });
    let channels = (s.capacity as u128 * s.consumers.len() as u128 + w(slack)) * w(out_bytes);
    let sat = |x: u128| u64::try_from(x).unwrap_or(u64::MAX);
    StageMemory {
        working: sat(working),
        channels: sat(channels),
    }
}

fn total(stages: &[PlannedStage]) -> u64 {
    stages
        .iter()
        .fold(0u64, |a, s| a.saturating_add(s.mem.total()))
}

/// What [`crate::stages::Stage::spill`] sees of stage `s`.
fn spill_cx(s: &PlannedStage, memory: u64, projected: u64) -> (u64, u64, u64, u64) {
    let item = s.output.as_ref().map_or(8, |o| o.dtype.size() as u64);
    (item, memory, s.mem.total(), projected)
}

/// A stage that can trade memory for disk (a rechunk left to the planner)
/// does, the biggest first, until the plan fits or none can.
pub(super) fn spill_until_it_fits(stages: &mut [PlannedStage], memory: u64) {
    loop {
        let projected = total(stages);
        if projected <= memory {
            return;
        }
        let mut by_size: Vec<usize> = (0..stages.len()).collect();
        by_size.sort_by_key(|&k| std::cmp::Reverse((stages[k].mem.total(), k)));
        let Some(k) = by_size.into_iter().find(|&k| {
            let (item, memory, own, projected) = spill_cx(&stages[k], memory, projected);
            let grid = stages[k].grid.clone();
            stages[k].kind.spill(&SpillCx {
                grid: &grid,
                item,
                memory,
                own,
                projected,
            })
        }) else {
            return;
        };
        project_all(stages);
        let now = total(stages);
        let (item, memory, own, _) = spill_cx(&stages[k], memory, now);
        let grid = stages[k].grid.clone();
        stages[k].kind.tune_spill(
            &SpillCx {
                grid: &grid,
                item,
                memory,
                own,
                projected: now,
            },
            memory.saturating_sub(now),
        );
        project_all(stages);
    }
}

/// The error for a plan over its budget: the stage that projects the
/// most, what it holds, and what to change.
pub(super) fn over_budget(d: &mut Diags, raw: &RawConfig, plan: &Plan) -> ConfigError {
    let (memory, projected) = (plan.memory, plan.projected_bytes());
    let mut by_size: Vec<&PlannedStage> = plan.stages.iter().collect();
    by_size.sort_by_key(|s| std::cmp::Reverse(s.mem.total()));
    let big = by_size[0];
    let chunk = big.output.as_ref().map(|o| o.chunk_bytes()).unwrap_or(0);
    // An overlap stage serves the stage named before its ".halo".
    let own = big.name.strip_suffix(".halo").unwrap_or(&big.name);
    let span = raw
        .stages
        .iter()
        .find(|s| s.name.v == own)
        .map_or(Span::File(0..0), |s| s.name.span.clone());
    // Only the knobs that are not already at their least.
    let knobs: Vec<&str> = [
        ("`parallel`", big.parallel > 1),
        ("`capacity`", big.capacity > 1 && big.mem.channels > 0),
    ]
    .iter()
    .filter(|(_, can)| *can)
    .map(|(k, _)| *k)
    .collect();
    let advice = match big.kind.over_budget(own) {
        Some(a) => a,
        None if knobs.is_empty() => "Use smaller chunks, or raise `memory`".to_string(),
        None => format!(
            "Lower its {}, use smaller chunks, or raise `memory`",
            knobs.join(" or ")
        ),
    };
    // When no one stage holds most of the plan, name those that hold
    // the most, so the fix is not looked for in one stage alone.
    let others = if big.mem.total() < projected / 2 {
        let list: Vec<String> = by_size
            .iter()
            .take(5)
            .map(|s| format!("\"{}\" {}", s.name, human_bytes(s.mem.total())))
            .collect();
        format!(
            " No one stage holds most of it; the largest of the {} stages: {}.",
            by_size.len(),
            list.join(", ")
        )
    } else {
        String::new()
    };
    d.err(
        &span,
        Some(&big.name),
        format!(
            "the plan needs {} but `memory` is {}; this stage projects the most, {} ({} working + {} in channels; {} chunks of {} in flight, {} queued per consumer). {advice}.{others}",
            human_bytes(projected),
            human_bytes(memory),
            human_bytes(big.mem.total()),
            human_bytes(big.mem.working),
            human_bytes(big.mem.channels),
            big.parallel,
            human_bytes(chunk.max(big.grid.chunk_elements())),
            big.capacity,
        ),
    );
    ConfigError::Invalid(std::mem::take(&mut d.list))
}
