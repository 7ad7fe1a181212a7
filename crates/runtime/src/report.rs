//! The JSON run report: written for every run, successful or not.

use std::path::Path;

use crate::plan::{Plan, PlannedStage};

/// What one stage did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StageReport {
    pub name: String,
    pub kind: String,
    pub chunks_in: u64,
    pub chunks_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// CPU-side time of the stage's tasks (reading, evaluating, writing),
    /// summed over the compute threads.
    pub busy_seconds: f64,
    /// Wall time the stage waited for its batches of tasks to finish
    /// (includes waiting for compute threads busy with other stages).
    pub wall_seconds: f64,
    /// Time blocked on an empty input channel.
    pub blocked_recv_seconds: f64,
    /// Time blocked on a full output channel.
    pub blocked_send_seconds: f64,
    /// Most bytes the stage held at once plus its output channels' peaks.
    pub peak_buffered_bytes: u64,
    /// The plan's projection for this stage.
    pub projected_bytes: u64,
    /// A `read-zarr`: how many stored chunks it decoded (the array's
    /// stored chunk count when each is decoded once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_chunks_decoded: Option<u64>,
}

impl StageReport {
    pub fn new(s: &PlannedStage) -> Self {
        StageReport {
            name: s.name.clone(),
            kind: s.kind.name().to_string(),
            projected_bytes: s.mem.total(),
            ..Default::default()
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub pipeline: String,
    pub config: String,
    pub ok: bool,
    pub error: Option<String>,
    pub wall_seconds: f64,
    pub threads: usize,
    pub memory_budget_bytes: u64,
    pub projected_bytes: u64,
    /// Most chunk bytes alive at once, over every channel and stage.
    pub peak_buffered_bytes: u64,
    /// The process's peak resident set size (VmHWM).
    pub peak_rss_bytes: u64,
    pub stages: Vec<StageReport>,
}

impl Report {
    pub fn new(plan: &Plan) -> Self {
        Report {
            pipeline: plan.name.clone(),
            config: plan.config.display().to_string(),
            threads: plan.threads,
            memory_budget_bytes: plan.memory,
            projected_bytes: plan.projected_bytes(),
            stages: plan.stages.iter().map(StageReport::new).collect(),
            ..Default::default()
        }
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        // Whole or not at all: a temporary name, then a rename.
        let mut tmp = path.as_os_str().to_os_string();
        tmp.push(format!(".tmp-{}", std::process::id()));
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(&tmp, path)
    }
}

/// The process's peak resident set size in bytes (0 where unknown).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
