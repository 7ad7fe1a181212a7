//! How pipelines are cut into segments and tasks (no file is read or
//! written: synthetic readers and a fake catalog).

use std::path::Path;

use super::*;
use crate::catalog::FakeCatalog;

fn cut(text: &str, tasks: Option<u64>) -> Result<TaskPlan, ClusterError> {
    let raw = crate::config::parse(Path::new("/cfg/p.toml"), text).expect("parses");
    plan_tasks_with(
        &raw,
        &TaskOptions {
            tasks,
            cpus: 2,
            run_dir: PathBuf::from("/runs/p.run"),
        },
        &FakeCatalog::default(),
    )
}

const STENCIL: &str = r#"
[pipeline]
memory = "64 MiB"
[stage.img]
kind = "synthetic"
shape = [40, 50]
chunks = [10, 25]
[stage.smooth]
kind = "filter"
inputs = ["img"]
filter = "gaussian"
sigma = 1.0
[stage.out]
kind = "write-zarr"
inputs = ["smooth"]
path = "out.zarr"
[stage.total]
kind = "reduce"
inputs = ["smooth"]
op = "mean"
[stage.cols]
kind = "reduce"
inputs = ["smooth"]
op = "sum"
axis = 0
[stage.summary]
kind = "write-json"
inputs = ["total", "cols"]
path = "summary.json"
"#;

#[test]
fn an_output_in_object_storage_is_refused_naming_it() {
    let text = STENCIL.replace("path = \"out.zarr\"", "path = \"s3://bucket/out.zarr\"");
    let e = cut(&text, Some(3)).expect_err("refused").to_string();
    assert!(
        e.contains("stage \"out\" writes to s3://bucket/out.zarr") && e.contains("blockflow run"),
        "{e}"
    );
}

#[test]
fn a_stencil_its_reductions_and_writers() {
    let p = cut(STENCIL, Some(3)).expect("plans");
    let place = |n: &str| p.places[n];
    assert_eq!(place("img"), Place::Source);
    assert_eq!(place("smooth"), Place::Region);
    assert_eq!(place("out"), Place::ZarrSink);
    assert_eq!(
        place("total"),
        Place::Partial,
        "a whole-array mean merges from partials"
    );
    assert_eq!(
        place("cols"),
        Place::Whole,
        "along an axis the accumulators take the chunks"
    );
    assert_eq!(place("summary"), Place::Whole);
    let kinds: Vec<SegmentKind> = p.segments.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [SegmentKind::Chunks, SegmentKind::Whole, SegmentKind::Commit]
    );
    let s0 = &p.segments[0];
    assert_eq!(s0.tasks, 3);
    assert_eq!(s0.units, 8, "the smoothed image's 4 x 2 chunks");
    assert_eq!(s0.groups.len(), 1);
    let g = &s0.groups[0];
    assert_eq!(g.stage, "smooth");
    assert_eq!(g.partials, ["total"]);
    // The smoothed image is stored once: the column sums read it back from
    // the output, staged in the run folder.
    assert_eq!(g.stores.len(), 1);
    assert_eq!(g.stores[0].role, "out");
    assert_eq!(
        g.stores[0].path,
        Path::new("/runs/p.run/out/out/path/out.zarr")
    );
    // Only the merged mean, one float64, is stored as an intermediate.
    assert_eq!(p.intermediate_bytes, 8);
    let s1 = &p.segments[1];
    assert_eq!(s1.merges.len(), 1);
    assert_eq!(s1.merges[0].stage, "total");
    assert_eq!(s1.merges[0].from_segment, 0);
    assert_eq!(s1.reads, ["smooth", "total"]);
    assert_eq!(s1.after, [(0, Dependency::AllToAll)]);
    let commit = &p.segments[2];
    assert_eq!(commit.after.len(), 2);
    let finals: Vec<&Path> = p.finals.iter().map(|f| f.path.as_path()).collect();
    assert_eq!(
        finals,
        [Path::new("/cfg/out.zarr"), Path::new("/cfg/summary.json")]
    );
    // The tasks cover the chunks once each.
    let mut covered = Vec::new();
    for i in 0..s0.tasks {
        let (lo, hi) = p.task_units(0, i);
        covered.extend(lo..hi);
    }
    assert_eq!(covered, (0..8).collect::<Vec<u64>>());
}

#[test]
fn a_rechunk_reads_an_intermediate_aligned_to_both_grids() {
    let text = r#"
[stage.img]
kind = "synthetic"
shape = [12, 30]
chunks = [12, 5]
[stage.twice]
kind = "expr"
inputs = ["img"]
expr = "img * 2"
[stage.rows]
kind = "rechunk"
inputs = ["twice"]
chunks = [4, 30]
[stage.plus]
kind = "expr"
inputs = ["rows"]
expr = "rows + 1"
[stage.out]
kind = "write-zarr"
inputs = ["plus"]
path = "out.zarr"
"#;
    let p = cut(text, Some(2)).expect("plans");
    assert_eq!(p.places["rows"], Place::Rechunk);
    let kinds: Vec<SegmentKind> = p.segments.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            SegmentKind::Chunks,
            SegmentKind::Chunks,
            SegmentKind::Commit
        ]
    );
    let inter = &p.segments[0].groups[0];
    assert_eq!(inter.stage, "twice");
    assert_eq!(inter.stores[0].role, "intermediate");
    // Divides the producer's [12, 5] and the consumer's [4, 30].
    assert_eq!(inter.stores[0].chunks, [4, 5]);
    assert_eq!(p.segments[1].reads, ["twice"]);
    assert_eq!(p.segments[1].groups[0].stage, "plus");
    assert_eq!(p.segments[1].groups[0].chunks, [4, 30]);
    assert_eq!(p.segments[1].after, [(0, Dependency::AllToAll)]);
}

#[test]
fn task_counts_are_capped_by_chunks_and_fingerprints_follow_the_plan() {
    let p = cut(STENCIL, Some(100)).expect("plans");
    assert_eq!(p.segments[0].tasks, 8, "no more tasks than chunks");
    let again = cut(STENCIL, Some(100)).expect("plans");
    assert_eq!(p.fingerprint(), again.fingerprint());
    let other = cut(STENCIL, Some(2)).expect("plans");
    assert_ne!(p.fingerprint(), other.fingerprint());
    // Without a count: about one task per 2 GiB of output.
    let p = cut(STENCIL, None).expect("plans");
    assert_eq!(p.segments[0].tasks, 1);
    for n in [1u64, 3, 7, 8] {
        let parts: Vec<(u64, u64)> = (0..n).map(|i| split(8, n, i)).collect();
        assert_eq!(parts.first().map(|p| p.0), Some(0));
        assert_eq!(parts.last().map(|p| p.1), Some(8));
        assert!(parts.windows(2).all(|w| w[0].1 == w[1].0));
    }
}

#[test]
fn a_chunk_over_the_budget_is_refused_with_the_numbers() {
    let text = STENCIL
        .replace("memory = \"64 MiB\"", "memory = \"1 MiB\"")
        .replace(
            "shape = [40, 50]\nchunks = [10, 25]",
            "shape = [4000, 5000]\nchunks = [1000, 2500]",
        );
    let e = cut(&text, Some(2)).expect_err("over budget").to_string();
    assert!(
        e.contains("one chunk needs") && e.contains("1.00 MiB") && e.contains("smooth"),
        "{e}"
    );
}

#[test]
fn a_stateful_stage_and_a_broadcast_input_run_whole() {
    let text = r#"
[stage.frames]
kind = "synthetic"
shape = [4, 8, 8]
chunks = [1, 8, 8]
[stage.shifts]
kind = "register"
inputs = ["frames"]
[stage.moved]
kind = "shift"
inputs = ["frames", "shifts"]
[stage.stack]
kind = "synthetic"
shape = [4, 8, 8]
chunks = [4, 4, 4]
[stage.centred]
kind = "expr"
inputs = ["stack"]
expr = "stack[0] * 2"
[stage.a]
kind = "write-zarr"
inputs = ["moved"]
path = "a.zarr"
[stage.b]
kind = "write-zarr"
inputs = ["centred"]
path = "b.zarr"
"#;
    let p = cut(text, Some(2)).expect("plans");
    assert_eq!(
        p.places["shifts"],
        Place::Whole,
        "registration keeps its reference"
    );
    assert_eq!(
        p.places["moved"],
        Place::Region,
        "shift computes any region"
    );
    assert_eq!(
        p.places["centred"],
        Place::Whole,
        "an input indexed along a leading axis"
    );
    assert_eq!(
        p.places["b"],
        Place::Whole,
        "written by the task that computes it"
    );
    assert_eq!(p.places["a"], Place::ZarrSink);
}
