//! `blockflow plan --tasks`: the task plan as a table.

use std::fmt::Write as _;

use super::{hb, Dependency, SegmentKind, TaskPlan};

fn short(names: &[String], max: usize) -> String {
    if names.len() <= max {
        return names.join(", ");
    }
    format!("{}, ... ({} stages)", names[..max].join(", "), names.len())
}

impl TaskPlan {
    /// The plan as a table a person reads.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "pipeline \"{}\" as {} tasks in {} segments; {} CPUs and a budget of {} per task; run folder {}",
            self.name,
            self.total_tasks(),
            self.segments.len(),
            self.cpus,
            hb(self.memory_budget),
            self.run_dir.display()
        );
        let _ = writeln!(
            s,
            "intermediate storage of the run: {} (in {}/inter)\n",
            hb(self.intermediate_bytes),
            self.run_dir.display()
        );
        let _ = writeln!(
            s,
            "{:>3}  {:<7} {:>9} {:>12} {:>12} {:>12}  {:<22} stages",
            "seg", "kind", "tasks", "memory/task", "input/task", "output/task", "after"
        );
        for seg in &self.segments {
            let kind = match seg.kind {
                SegmentKind::Chunks => "chunks",
                SegmentKind::Whole => "whole",
                SegmentKind::Commit => "commit",
            };
            let after = if seg.after.is_empty() {
                "-".to_string()
            } else {
                seg.after
                    .iter()
                    .map(|(a, d)| match d {
                        Dependency::AllToAll => format!("{a} (all)"),
                        Dependency::OneToOne => format!("{a} (i->i)"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let stages = if seg.kind == SegmentKind::Commit {
                format!("moves {} outputs into place", self.finals.len())
            } else {
                short(&seg.stages, 6)
            };
            let _ = writeln!(
                s,
                "{:>3}  {:<7} {:>9} {:>12} {:>12} {:>12}  {:<22} {}",
                seg.index,
                kind,
                seg.tasks,
                hb(seg.task_memory),
                hb(seg.task_input_bytes),
                hb(seg.task_output_bytes),
                after,
                stages
            );
        }
        let _ = writeln!(s);
        self.details(&mut s);
        s
    }

    /// What each segment reads, computes, stores and merges.
    fn details(&self, s: &mut String) {
        for seg in &self.segments {
            if !seg.reads.is_empty() {
                let _ = writeln!(
                    *s,
                    "segment {} reads the stored {}",
                    seg.index,
                    seg.reads.join(", ")
                );
            }
            for g in &seg.groups {
                let per = g.units.div_ceil(seg.tasks);
                let stores: Vec<String> = g
                    .stores
                    .iter()
                    .map(|st| {
                        if st.role == "intermediate" {
                            format!("intermediate in chunks {:?}", st.chunks)
                        } else {
                            format!("output of \"{}\" in chunks {:?}", st.role, st.chunks)
                        }
                    })
                    .collect();
                let mut to: Vec<String> = stores;
                if !g.partials.is_empty() {
                    to.push(format!("partials of {}", g.partials.join(", ")));
                }
                let _ = writeln!(
                    *s,
                    "segment {} computes \"{}\" {:?} in {} chunks of {:?} (about {per} per task), to the {}",
                    seg.index,
                    g.stage,
                    g.shape,
                    g.units,
                    g.chunks,
                    to.join(" and the ")
                );
            }
            for m in &seg.merges {
                let _ = writeln!(
                    *s,
                    "segment {} merges \"{}\" from the partials segment {} stored, in chunk order",
                    seg.index, m.stage, m.from_segment
                );
            }
        }
    }

    /// The plan as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}
