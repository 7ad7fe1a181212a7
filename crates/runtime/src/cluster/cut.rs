//! Where each stage runs in a distributed plan (its [`Place`]) and when
//! (its time step: chunk segment k at 2k, whole segment w at 2w + 1).

use std::collections::HashMap;

use super::{planned, str_entry, ClusterError, Place};
use crate::config::{RawConfig, RawStage};
use crate::plan::{Plan, PlannedStage};
use crate::stages::{Exec, Writes};

/// A raw stage's kind and input names.
pub(super) struct Node<'a> {
    pub(super) raw: &'a RawStage,
    pub(super) kind: String,
    pub(super) inputs: Vec<String>,
}

/// Where a stage runs in a distributed plan.
fn place_of(plan: &Plan, node: &Node<'_>) -> Place {
    if node.kind == "rechunk" {
        return Place::Rechunk;
    }
    let Some(st) = planned(plan, &node.raw.name.v) else {
        // Fused into its only consumer: a filter.
        return Place::Region;
    };
    match st.kind.exec() {
        Exec::Source(_) => Place::Source,
        Exec::Map(k) if k.keeps_state() => Place::Whole,
        // An input that is not the output's positions (plus trailing axes
        // the kernel reduces) is broadcast or indexed along a leading axis:
        // no region of it follows from a region of the output.
        Exec::Map(_) if !st.kind.regional() && !positional(plan, st) => Place::Whole,
        Exec::Map(_) => Place::Region,
        Exec::Window(w) => {
            let r = &w.regrid;
            if r.map.is_empty() && !w.drop.iter().any(|&d| d) && r.src.shape() == r.dst.shape() {
                Place::Region
            } else {
                Place::Whole
            }
        }
        Exec::Barrier(_) if st.kind.partials().is_some() => Place::Partial,
        Exec::Barrier(_) => Place::Whole,
        Exec::Sink(_) => match st.kind.writes() {
            Some(Writes::Zarr { .. }) => Place::ZarrSink,
            _ => Place::Whole,
        },
    }
}

/// Whether every input of `st` has the output's shape as its leading axes.
fn positional(plan: &Plan, st: &PlannedStage) -> bool {
    let Some(out) = st.output.as_ref() else {
        return false;
    };
    let n = out.shape().len();
    st.inputs.iter().all(|&j| {
        plan.stages[j]
            .output
            .as_ref()
            .is_some_and(|o| o.shape().len() >= n && o.shape()[..n] == *out.shape())
    })
}

/// What is known of each stage while segments are formed.
pub(super) struct Cut<'a> {
    pub(super) nodes: Vec<Node<'a>>,
    pub(super) by_name: HashMap<String, usize>,
    pub(super) place: Vec<Place>,
    /// The segment time: chunk segment k at 2k, whole segment w at 2w+1.
    pub(super) time: Vec<Option<usize>>,
}

impl<'a> Cut<'a> {
    pub(super) fn new(raw: &'a RawConfig, plan: &Plan) -> Result<Self, ClusterError> {
        let nodes: Vec<Node<'a>> = raw
            .stages
            .iter()
            .map(|st| Node {
                raw: st,
                kind: str_entry(st, "kind").unwrap_or_default(),
                inputs: st.input_names(),
            })
            .collect();
        let by_name: HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.raw.name.v.clone(), i))
            .collect();
        let mut place: Vec<Place> = nodes.iter().map(|n| place_of(plan, n)).collect();
        let mut cut = Cut {
            time: vec![None; nodes.len()],
            nodes,
            by_name,
            place: Vec::new(),
        };
        // A Zarr writer of a stream only one task can make is written by it.
        let order = cut.order()?;
        cut.place = std::mem::take(&mut place);
        for &i in &order {
            // Partials come from the tasks that compute the input by region;
            // of an input one task makes, the reduction runs in that task.
            if cut.place[i] == Place::Partial {
                let j = cut.by_name[&cut.nodes[i].inputs[0]];
                if !matches!(cut.place[j], Place::Source | Place::Region | Place::Rechunk) {
                    cut.place[i] = Place::Whole;
                }
            }
            cut.time[i] = cut.time_of(i);
            if cut.place[i] == Place::ZarrSink {
                let j = cut.by_name[&cut.nodes[i].inputs[0]];
                if matches!(cut.place[j], Place::Whole | Place::Partial) {
                    cut.place[i] = Place::Whole;
                    cut.time[i] = cut.time[j];
                }
            }
        }
        Ok(cut)
    }

    /// Stages, inputs first.
    fn order(&self) -> Result<Vec<usize>, ClusterError> {
        fn visit(c: &Cut<'_>, i: usize, seen: &mut Vec<u8>, out: &mut Vec<usize>) {
            if seen[i] != 0 {
                return;
            }
            seen[i] = 1;
            for n in &c.nodes[i].inputs {
                if let Some(&j) = c.by_name.get(n) {
                    visit(c, j, seen, out);
                }
            }
            seen[i] = 2;
            out.push(i);
        }
        let mut seen = vec![0u8; self.nodes.len()];
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            visit(self, i, &mut seen, &mut out);
        }
        Ok(out)
    }

    fn time_of(&self, i: usize) -> Option<usize> {
        let ins: Vec<(Place, Option<usize>)> = self.nodes[i]
            .inputs
            .iter()
            .map(|n| {
                let j = self.by_name[n];
                (self.place[j], self.time[j])
            })
            .collect();
        let t = |_: Place, t: Option<usize>| t.unwrap_or(0);
        match self.place[i] {
            Place::Source => None,
            Place::Region | Place::ZarrSink => Some(
                ins.iter()
                    .map(|&(p, tj)| match p {
                        Place::Source => 0,
                        Place::Whole | Place::Partial => t(p, tj) + 1,
                        _ => t(p, tj),
                    })
                    .max()
                    .unwrap_or(0),
            ),
            Place::Rechunk => Some(
                ins.iter()
                    .map(|&(p, tj)| match p {
                        Place::Source => 0,
                        Place::Whole | Place::Partial => t(p, tj) + 1,
                        _ => t(p, tj) + 2,
                    })
                    .max()
                    .unwrap_or(0),
            ),
            // Merged by the whole task after the input's chunk task.
            Place::Partial => Some(
                ins.iter()
                    .map(|&(p, tj)| match p {
                        Place::Source => 1,
                        _ => t(p, tj) + 1,
                    })
                    .max()
                    .unwrap_or(1),
            ),
            Place::Whole => Some(
                ins.iter()
                    .map(|&(p, tj)| match p {
                        Place::Source => 1,
                        Place::Whole | Place::Partial => t(p, tj),
                        _ => t(p, tj) + 1,
                    })
                    .max()
                    .unwrap_or(1),
            ),
        }
    }

    pub(super) fn name(&self, i: usize) -> &str {
        &self.nodes[i].raw.name.v
    }

    pub(super) fn consumers(&self, i: usize) -> Vec<usize> {
        let name = self.name(i);
        (0..self.nodes.len())
            .filter(|&c| self.nodes[c].inputs.iter().any(|n| n == name))
            .collect()
    }
}
