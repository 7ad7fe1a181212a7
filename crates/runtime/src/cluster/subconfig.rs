//! A segment as a pipeline of its own: the user's tables of its stages,
//! its inputs as the readers the user wrote or as `read-zarr` stages of
//! the same name over the stored intermediates, and a `write-zarr` of each
//! of its stages another segment reads.

use std::collections::HashSet;
use std::path::PathBuf;

use super::segments::Cx;
use super::{path_val, planned, set_entry, shape_val, sp, Place};
use crate::config::{RawConfig, RawStage, Sp, Val};

/// A segment as a pipeline of its own.
pub(super) struct Sub {
    pub(super) raw: RawConfig,
    /// The stages whose stored output it reads.
    pub(super) reads: Vec<usize>,
}

/// A `read-zarr` of the stored stage `j`, named `name`, in `chunks`.
fn reader(cx: &Cx<'_>, j: usize, name: &str, chunks: Option<Vec<u64>>) -> RawStage {
    let mut entries = vec![
        (sp("kind".to_string()), sp(Val::Str("read-zarr".into()))),
        (sp("path".to_string()), sp(path_val(&cx.stored.at[&j]))),
    ];
    if let Some(c) = chunks {
        entries.push((sp("chunks".to_string()), sp(shape_val(&c))));
    }
    RawStage {
        name: sp(name.to_string()),
        entries,
    }
}

/// Stage `i`'s stream chunks in the whole pipeline's plan: an intermediate
/// is read back in them, so its consumers see the chunks a batch run sends.
fn stream_chunks(cx: &Cx<'_>, i: usize) -> Option<Vec<u64>> {
    planned(cx.full, cx.cut.name(i))
        .and_then(|s| s.output.as_ref())
        .map(|o| o.grid.chunk_shape().to_vec())
}

/// The pipeline segment step `t` runs: see the module's documentation.
/// `also`: streams whose partials it makes (their readers are added).
pub(super) fn sub_config(cx: &Cx<'_>, members: &[usize], also: &[usize], t: usize) -> Sub {
    let cut = cx.cut;
    let mut stages: Vec<RawStage> = Vec::new();
    let mut have: HashSet<usize> = HashSet::new();
    let mut reads = Vec::new();
    let member: HashSet<usize> = members.iter().copied().collect();
    // Inputs from outside, in the order the members name them.
    for &i in members {
        for input in &cut.nodes[i].inputs {
            let j = cut.by_name[input];
            if member.contains(&j) || !have.insert(j) {
                continue;
            }
            if cut.place[j] == Place::Source {
                stages.push(cut.nodes[j].raw.clone());
            } else {
                reads.push(j);
                stages.push(reader(cx, j, input, stream_chunks(cx, j)));
            }
        }
    }
    for &j in also {
        if !member.contains(&j) && have.insert(j) && cut.place[j] == Place::Source {
            stages.push(cut.nodes[j].raw.clone());
        }
    }
    for &i in members {
        let node = &cut.nodes[i];
        let j = node.inputs.first().map(|n| cut.by_name[n]);
        match j {
            // A rechunk of a stored stream: its intermediate, read in the
            // rechunk's own chunks.
            Some(j) if cut.place[i] == Place::Rechunk && cut.place[j] != Place::Source => {
                if !reads.contains(&j) {
                    reads.push(j);
                }
                stages.push(reader(cx, j, &node.raw.name.v, stream_chunks(cx, i)));
            }
            _ => stages.push(staged_table(cx, i)),
        }
    }
    stages.extend(store_tables(cx, members));
    Sub {
        raw: RawConfig {
            path: cx.raw.path.clone(),
            text: cx.raw.text.clone(),
            pipeline: pipeline_table(cx, t),
            follow: Vec::new(),
            stages,
            fixed_stack: None,
        },
        reads,
    }
}

/// Stage `i`'s table as the user wrote it, its outputs pointed at their
/// staging paths.
fn staged_table(cx: &Cx<'_>, i: usize) -> RawStage {
    let node = &cx.cut.nodes[i];
    let mut st = node.raw.clone();
    if let Some(def) = crate::stages::kind(&node.kind) {
        for ps in def.params {
            if let Some(p) = cx.staged.get(&(i, ps.name)) {
                set_entry(&mut st.entries, ps.name, path_val(p));
                set_entry(&mut st.entries, "if_exists", Val::Str("overwrite".into()));
            }
        }
    }
    st
}

/// A `write-zarr` of each member another segment reads (unless an output
/// of the same chunks already holds it).
fn store_tables(cx: &Cx<'_>, members: &[usize]) -> Vec<RawStage> {
    let mut out = Vec::new();
    for &i in members {
        if cx.stored.shared.contains(&i) {
            continue;
        }
        let Some(chunks) = cx.stored.chunks.get(&i) else {
            continue;
        };
        let name = cx.cut.name(i);
        let text = |s: &str| sp(Val::Str(s.to_string()));
        out.push(RawStage {
            name: sp(format!("__store_{name}")),
            entries: vec![
                (sp("kind".to_string()), text("write-zarr")),
                (sp("inputs".to_string()), sp(Val::Array(vec![text(name)]))),
                (sp("path".to_string()), sp(path_val(&cx.stored.at[&i]))),
                (sp("chunks".to_string()), sp(shape_val(chunks))),
                (sp("level".to_string()), sp(Val::Int(1))),
                (sp("if_exists".to_string()), text("overwrite")),
            ],
        });
    }
    out
}

/// The `[pipeline]` table: the user's, with the report in the run folder
/// and a scratch folder for a rechunk through disk inside a task (the
/// pipeline's if it names one, else the node's `$TMPDIR`, which Slurm sites
/// point at local disk, else the run folder).
fn pipeline_table(cx: &Cx<'_>, t: usize) -> Vec<(Sp<String>, Sp<Val>)> {
    let mut pipeline = cx.raw.pipeline.clone();
    set_entry(
        &mut pipeline,
        "report",
        path_val(&cx.run_dir.join("reports").join(format!("t{t}.report.json"))),
    );
    let has_scratch = pipeline
        .iter()
        .any(|(k, v)| k.v == "scratch" && matches!(&v.v, Val::Str(s) if !s.is_empty()));
    if !has_scratch {
        let scratch = std::env::var_os("TMPDIR")
            .map(PathBuf::from)
            .filter(|d| d.is_absolute())
            .map_or_else(
                || cx.run_dir.join("scratch"),
                |d| d.join("blockflow-scratch"),
            );
        set_entry(&mut pipeline, "scratch", path_val(&scratch));
    }
    pipeline
}
