//! Helpers for the stages' unit tests: plan a stage on generated inputs
//! with a fake catalog (no files), run a map kernel on small arrays.

use std::path::Path;

use blockflow_core::{ArrayData, Chunk, DType, Meter, Region};

use super::MapKernel;
use crate::catalog::FakeCatalog;
use crate::plan::{Plan, PlannedStage};

/// Plans `text` (a whole config) on `catalog`; the errors as one text.
pub fn plan_text(text: &str, catalog: &FakeCatalog) -> Result<Plan, String> {
    let raw = crate::config::parse(Path::new("/cfg/test.toml"), text).map_err(|e| e.to_string())?;
    crate::plan::plan_with(&raw, catalog).map_err(|e| e.to_string())
}

/// A config: one generated input per dtype (`in0`, `in1`, ...) of `shape`
/// in `chunks`, and stage `s` of `stage` (its table's body) reading them.
pub fn config(stage: &str, dtypes: &[DType], shape: &[u64], chunks: &[u64]) -> String {
    let mut t = String::from("[pipeline]\nmemory = \"64 GiB\"\nthreads = 2\n");
    let mut names = Vec::new();
    for (i, d) in dtypes.iter().enumerate() {
        t.push_str(&format!(
            "[stage.in{i}]\nkind = \"synthetic\"\nshape = {shape:?}\nchunks = {chunks:?}\ndtype = \"{}\"\n",
            d.name()
        ));
        names.push(format!("\"in{i}\""));
    }
    t.push_str(&format!(
        "[stage.s]\ninputs = [{}]\n{stage}\n",
        names.join(", ")
    ));
    t
}

/// Stage `s` planned on generated inputs (see [`config`]).
pub fn plan_one(stage: &str, dtypes: &[DType], shape: &[u64], chunks: &[u64]) -> PlannedStage {
    let plan = plan_text(
        &config(stage, dtypes, shape, chunks),
        &FakeCatalog::default(),
    )
    .unwrap_or_else(|e| panic!("plans:\n{e}"));
    stage_named(&plan, "s").clone()
}

/// The diagnostics of planning stage `s` on generated inputs.
pub fn plan_err(stage: &str, dtypes: &[DType], shape: &[u64], chunks: &[u64]) -> String {
    match plan_text(
        &config(stage, dtypes, shape, chunks),
        &FakeCatalog::default(),
    ) {
        Ok(_) => panic!("expected a refusal of:\n{stage}"),
        Err(e) => e,
    }
}

/// The stage called `name`.
pub fn stage_named<'a>(plan: &'a Plan, name: &str) -> &'a PlannedStage {
    plan.stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no stage {name}"))
}

/// A float64 array.
pub fn array_f64(shape: &[usize], values: &[f64]) -> ArrayData {
    ArrayData::F64(
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), values.to_vec()).expect("shape"),
    )
}

/// Each array as one whole chunk (no halo).
pub fn whole_chunks(inputs: &[ArrayData]) -> Vec<Chunk> {
    let meter = Meter::new();
    inputs
        .iter()
        .map(|a| {
            let shape: Vec<u64> = a.shape().iter().map(|&n| n as u64).collect();
            let region = Region::new(vec![0; shape.len()], shape);
            Chunk::new(vec![0; a.shape().len()], region, a.clone(), &meter)
        })
        .collect()
}

/// A map kernel on whole arrays: its state from them, then its output
/// for the first input's whole region.
pub fn apply_map(kernel: &dyn MapKernel, inputs: &[ArrayData]) -> ArrayData {
    let chunks = whole_chunks(inputs);
    let state = kernel.init(&chunks).expect("init");
    let region = chunks[0].region.clone();
    kernel
        .apply(&state, &chunks, &chunks[0].index, &region)
        .expect("applies")
}
