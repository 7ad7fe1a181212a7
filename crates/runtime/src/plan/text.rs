//! The plan for people and scripts: a table with each stage's parameters
//! as the TOML writes them (`blockflow plan`), Graphviz (`--dot`), JSON with
//! exact bytes (`--json`).

use std::fmt::Write;

use blockflow_core::human_bytes;

use super::{Plan, PlannedStage};
use crate::stages::Writes;

impl Plan {
    /// The plan as a table, then a line per stage in words.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let projected = self.projected_bytes();
        let _ = writeln!(
            s,
            "pipeline \"{}\" ({}): {} stages, {} threads, memory budget {}, projected peak {} ({:.0}%)",
            self.name,
            self.config.display(),
            self.stages.len(),
            self.threads,
            human_bytes(self.memory),
            human_bytes(projected),
            100.0 * projected as f64 / self.memory.max(1) as f64
        );
        let _ = writeln!(
            s,
            "\n{:<12} {:<11} {:<14} {:<8} {:<22} {:<18} {:>7} {:>4} {:>4} {:>11}",
            "stage", "kind", "inputs", "dtype", "shape", "chunks", "n", "par", "cap", "memory"
        );
        for st in &self.stages {
            let _ = writeln!(s, "{}", self.row(st));
        }
        let _ = writeln!(s);
        for st in &self.stages {
            self.detail(&mut s, st);
        }
        s
    }

    /// One row of the table.
    fn row(&self, st: &PlannedStage) -> String {
        let inputs: Vec<&str> = st
            .inputs
            .iter()
            .map(|&j| self.stages[j].name.as_str())
            .collect();
        // A Zarr writer shows what it stores: its dtype and stored chunks.
        let written = match st.kind.writes() {
            Some(Writes::Zarr { options, .. }) => Some(options),
            Some(Writes::Ome { options, .. }) => Some(&options.array),
            _ => None,
        };
        let dtype = match (&st.output, written) {
            (Some(o), _) => o.dtype.name().to_string(),
            (None, Some(w)) => w.dtype.name().to_string(),
            _ => "-".into(),
        };
        let chunks = match written {
            Some(w) => format!("{:?}", w.chunks),
            None => format!("{:?}", st.grid.chunk_shape()),
        };
        format!(
            "{:<12} {:<11} {:<14} {:<8} {:<22} {:<18} {:>7} {:>4} {:>4} {:>11}",
            st.name,
            st.kind.kind(),
            if inputs.is_empty() {
                "-".to_string()
            } else {
                inputs.join(",")
            },
            dtype,
            format!("{:?}", st.grid.shape()),
            chunks,
            st.chunks(),
            st.parallel,
            if st.is_sink() {
                "-".to_string()
            } else {
                st.capacity.to_string()
            },
            human_bytes(st.mem.total()),
        )
    }

    /// A stage in words, its memory, and its parameters as written.
    fn detail(&self, s: &mut String, st: &PlannedStage) {
        let slack: Vec<String> = st
            .inputs
            .iter()
            .zip(&st.input_slack)
            .filter(|(_, &sl)| sl > 0)
            .map(|(&i, sl)| format!("{} +{sl}", self.stages[i].name))
            .collect();
        let mut detail = st.kind.describe();
        if !slack.is_empty() {
            let _ = write!(
                detail,
                "; extra room on input edges (chunks), to wait for a halo on another path: {}",
                slack.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "  {}: {}; memory {} working + {} channels",
            st.name,
            detail,
            human_bytes(st.mem.working),
            human_bytes(st.mem.channels)
        );
        if !st.params.is_empty() {
            let text: Vec<String> = st
                .params
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect();
            let _ = writeln!(s, "      {}", text.join(", "));
        }
        for (key, about) in st.kind.result_keys() {
            let _ = writeln!(s, "      key {key}: {about}");
        }
    }

    /// The plan as a Graphviz digraph; each edge is labelled with the
    /// stream its source sends.
    pub fn to_dot(&self) -> String {
        let mut s = String::from(
            "digraph blockflow {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
        );
        for st in &self.stages {
            let _ = writeln!(
                s,
                "  \"{}\" [label=\"{}\\n{}\\n{} chunks of {:?}\\nmemory {}\"];",
                st.name,
                st.name,
                st.kind.kind(),
                st.chunks(),
                st.grid.chunk_shape(),
                human_bytes(st.mem.total())
            );
            for &j in &st.inputs {
                let src = &self.stages[j];
                let Some(o) = src.output.as_ref() else {
                    continue;
                };
                let _ = writeln!(
                    s,
                    "  \"{}\" -> \"{}\" [label=\"{} {:?}\\ncap {}\"];",
                    src.name,
                    st.name,
                    o.dtype,
                    o.shape(),
                    src.capacity
                );
            }
        }
        s.push_str("}\n");
        s
    }

    /// The plan as JSON: every stage's kind, inputs, stream (dtype, shape,
    /// chunk grid), parallelism, channel capacity and projected bytes, for
    /// scripts (and the golden plans the tests compare against).
    pub fn to_json(&self) -> serde_json::Value {
        let stages: Vec<serde_json::Value> = self
            .stages
            .iter()
            .map(|st| {
                serde_json::json!({
                    "name": st.name,
                    "kind": st.kind.kind(),
                    "inputs": st.inputs.iter().map(|&j| self.stages[j].name.clone()).collect::<Vec<_>>(),
                    "dtype": st.output.as_ref().map(|o| o.dtype.name()),
                    "shape": st.grid.shape(),
                    "chunks": st.grid.chunk_shape(),
                    "num_chunks": st.chunks(),
                    "parallel": st.parallel,
                    "capacity": st.capacity,
                    "input_slack": st.input_slack,
                    "memory": { "working": st.mem.working, "channels": st.mem.channels },
                })
            })
            .collect();
        serde_json::json!({
            "name": self.name,
            "memory": self.memory,
            "threads": self.threads,
            "projected": self.projected_bytes(),
            "stages": stages,
        })
    }
}
