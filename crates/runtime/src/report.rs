//! The JSON run report: written for every run, successful or not.

use std::path::Path;

use crate::plan::{Plan, PlannedStage};

/// What one stage did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StageReport {
    pub name: String,
    pub kind: String,
    /// The stages it reads.
    pub inputs: Vec<String>,
    /// Its parameters as the run used them (given, overridden or defaulted).
    pub params: std::collections::BTreeMap<String, String>,
    pub chunks_in: u64,
    pub chunks_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// CPU-side time of the stage's tasks (reading, evaluating, writing),
    /// summed over the compute threads.
    pub busy_seconds: f64,
    /// Wall time the stage was at work: from its start to its end, less
    /// the time it waited on its input and output channels (it includes
    /// waiting for compute threads busy with other stages).
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
    /// Stage `i` of `plan`, with the names of its inputs.
    pub fn in_plan(plan: &Plan, i: usize) -> Self {
        let s = &plan.stages[i];
        let mut r = StageReport::new(s);
        r.inputs = s
            .inputs
            .iter()
            .map(|&j| plan.stages[j].name.clone())
            .collect();
        r
    }

    pub fn new(s: &PlannedStage) -> Self {
        StageReport {
            name: s.name.clone(),
            kind: s.kind.name().to_string(),
            params: s
                .params
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
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
    /// blockflow's version.
    pub version: String,
    /// When the run started and ended (RFC 3339, UTC).
    pub started: String,
    pub ended: String,
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
    /// Every output put in place, with its size (a folder's files summed).
    pub outputs: Vec<OutputReport>,
    pub stages: Vec<StageReport>,
}

/// One output of a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OutputReport {
    pub path: String,
    pub bytes: u64,
}

impl OutputReport {
    pub fn of(path: &Path) -> Self {
        OutputReport {
            path: path.display().to_string(),
            bytes: size_of(path),
        }
    }
}

/// Bytes of a file, or of every file under a folder (of every object of
/// a Zarr array in an S3 bucket).
fn size_of(p: &Path) -> u64 {
    if blockflow_io::remote::is_url(p) {
        return blockflow_io::zarr::ZarrReader::open(p).map_or(0, |r| r.stored_bytes());
    }
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| size_of(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// Now, as RFC 3339 in UTC to the millisecond.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl Report {
    pub fn new(plan: &Plan) -> Self {
        Report {
            pipeline: plan.name.clone(),
            config: plan.config.display().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started: now_rfc3339(),
            threads: plan.threads,
            memory_budget_bytes: plan.memory,
            projected_bytes: plan.projected_bytes(),
            stages: plan
                .stages
                .iter()
                .map(|s| {
                    let mut r = StageReport::new(s);
                    r.inputs = s
                        .inputs
                        .iter()
                        .map(|&j| plan.stages[j].name.clone())
                        .collect();
                    r
                })
                .collect(),
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
        // Not a file (`--report /dev/null`, /dev/stdout, a pipe): written
        // into, never renamed over (as root, a rename would put a plain
        // file in place of the device).
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
            return std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, (text + "\n").as_bytes()));
        }
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
