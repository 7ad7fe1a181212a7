//! The region contract: any output region of a stage, computed directly
//! from the stored inputs, with no channels and no other stage running.
//!
//! A map stage takes its inputs over its region grown by its halo (clipped
//! to the array; the kernel fills what lies beyond by its boundary mode),
//! each from its input stage by the same contract, down to the sources,
//! which read the region from their stores. The overlap stages the planner
//! inserts and in-memory rechunks pass a region through unchanged (the
//! halo is read from the store instead of assembled from neighbours). A
//! barrier (a reduction, a rechunk through disk, a join, ...) needs its
//! whole input: asking it for a region is an error naming it, as it is a
//! point where a distributed run must materialise.
//!
//! This is what a cluster task runs: the regions of its share of a
//! segment's output, each computed as here.

use std::collections::HashMap;

use blockflow_core::{ArrayData, Chunk, Meter, Region};

use crate::exec::RunError;
use crate::plan::Plan;
use crate::stages::{BuildCx, ChunkSource, Exec, KernelState};

/// Computes regions of a plan's stages; keeps each source open and each
/// kernel's state between regions.
pub struct RegionRunner<'p> {
    plan: &'p Plan,
    sources: HashMap<usize, Box<dyn ChunkSource>>,
    states: HashMap<usize, KernelState>,
    meter: std::sync::Arc<Meter>,
}

impl std::fmt::Debug for RegionRunner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionRunner")
            .field("plan", &self.plan.name)
            .field("open_sources", &self.sources.len())
            .finish()
    }
}

impl<'p> RegionRunner<'p> {
    pub fn new(plan: &'p Plan) -> Self {
        RegionRunner {
            plan,
            sources: HashMap::new(),
            states: HashMap::new(),
            meter: Meter::new(),
        }
    }

    /// The index of the stage called `name`.
    pub fn stage(&self, name: &str) -> Result<usize, RunError> {
        self.plan
            .stages
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| RunError::Build {
                stage: name.to_string(),
                msg: "no such stage in the plan".into(),
            })
    }

    fn err(&self, k: usize, region: &Region, msg: impl Into<String>) -> RunError {
        RunError::Stage {
            stage: self.plan.stages[k].name.clone(),
            chunk: None,
            msg: format!("region {region}: {}", msg.into()),
        }
    }

    /// The values of `region` of stage `k`'s output.
    pub fn compute(&mut self, k: usize, region: &Region) -> Result<ArrayData, RunError> {
        let st = &self.plan.stages[k];
        let Some(out) = st.output.as_ref() else {
            return Err(self.err(k, region, "a writer has no output to compute"));
        };
        let inside = region.ndim() == out.shape().len()
            && (0..region.ndim()).all(|ax| region.origin[ax] + region.shape[ax] <= out.shape()[ax]);
        if !inside {
            return Err(self.err(
                k,
                region,
                format!("outside the stage's array {:?}", out.shape()),
            ));
        }
        let op = &st.kind;
        match op.exec() {
            Exec::Source(src) => {
                let src = match self.sources.entry(k) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let cx = BuildCx {
                            stage: st,
                            inputs: &[],
                        };
                        e.insert(src.open(&cx).map_err(|e| RunError::Build {
                            stage: st.name.clone(),
                            msg: e.to_string(),
                        })?)
                    }
                };
                let read = src.read(region, None);
                read.map_err(|m| self.err(k, region, m))
            }
            Exec::Window(w) => {
                let r = &w.regrid;
                if !r.map.is_empty() || w.drop.iter().any(|&d| d) || r.src.shape() != r.dst.shape() {
                    return Err(self.err(
                        k,
                        region,
                        "a slice cannot be computed by region yet",
                    ));
                }
                // Same positions in the input: the halo comes from the store.
                self.compute(st.inputs[0], region)
            }
            Exec::Map(kernel) => {
                let mut chunks = Vec::with_capacity(st.inputs.len());
                for (pos, &j) in st.inputs.iter().enumerate() {
                    let shape = self.plan.stages[j]
                        .output
                        .as_ref()
                        .map(|o| o.shape().to_vec())
                        .unwrap_or_default();
                    let (want, got) = op.input_region(pos, region, &shape);
                    let data = self.compute(j, &want)?;
                    // The chunk's core is the input region less its halo.
                    let core = Region::new(
                        want.origin.iter().zip(&got).map(|(&o, &(b, _))| o + b).collect(),
                        want.shape.iter().zip(&got).map(|(&n, &(b, a))| n - b - a).collect(),
                    );
                    let mut c = Chunk::new(index_of(st, region), core, data, &self.meter);
                    c.halo = got;
                    chunks.push(c);
                }
                if !self.states.contains_key(&k) {
                    if kernel.keeps_state() {
                        return Err(self.err(
                            k,
                            region,
                            "its kernel keeps state across the stream (a reference); it runs in a batch or the ingest, not by region",
                        ));
                    }
                    let s = kernel.init(&chunks).map_err(|m| self.err(k, region, m))?;
                    self.states.insert(k, s);
                }
                let state = self.states[&k].clone();
                let data = kernel
                    .apply(&state, &chunks, &index_of(st, region), region)
                    .map_err(|m| self.err(k, region, m))?;
                crate::exec::check_shape(&data, region).map_err(|m| self.err(k, region, m))?;
                Ok(data)
            }
            Exec::Barrier(_) => Err(self.err(
                k,
                region,
                "it waits for its whole input (a materialisation point), so it has no region of its own to compute",
            )),
            Exec::Sink(_) => Err(self.err(k, region, "a writer has no output to compute")),
        }
    }
}

/// The grid index of the chunk holding `region`'s origin.
fn index_of(st: &crate::plan::PlannedStage, region: &Region) -> Vec<u64> {
    region
        .origin
        .iter()
        .zip(st.grid.chunk_shape())
        .map(|(&o, &c)| o / c.max(1))
        .collect()
}
