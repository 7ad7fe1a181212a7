//! The memory a task may use: its cgroup's limit (v2 `memory.max`, v1
//! `memory.limit_in_bytes`) or Slurm's (`SLURM_MEM_PER_NODE`,
//! `SLURM_MEM_PER_CPU`), whichever is smaller.

/// The smallest limit found, with where it comes from; None if none.
pub fn limit() -> Option<(u64, String)> {
    let mut found: Vec<(u64, String)> = Vec::new();
    let mib = |v: &str| v.trim().parse::<u64>().ok().map(|m| m << 20);
    if let Some(b) = std::env::var("SLURM_MEM_PER_NODE")
        .ok()
        .as_deref()
        .and_then(mib)
    {
        found.push((b, "Slurm's --mem (SLURM_MEM_PER_NODE)".into()));
    }
    if let Some(b) = std::env::var("SLURM_MEM_PER_CPU")
        .ok()
        .as_deref()
        .and_then(mib)
    {
        let cpus = std::env::var("SLURM_CPUS_PER_TASK")
            .ok()
            .and_then(|c| c.trim().parse::<u64>().ok())
            .unwrap_or(1);
        found.push((
            b.saturating_mul(cpus),
            "Slurm's --mem-per-cpu times --cpus-per-task".into(),
        ));
    }
    if let Some(c) = cgroup_limit() {
        found.push(c);
    }
    found.into_iter().min_by_key(|(b, _)| *b)
}

/// The memory limit of this process's cgroup, if it has one.
fn cgroup_limit() -> Option<(u64, String)> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut best: Option<(u64, String)> = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let file = if controllers.is_empty() {
            format!("/sys/fs/cgroup{path}/memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
        } else {
            continue;
        };
        let Ok(v) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(b) = v.trim().parse::<u64>() else {
            continue; // "max": no limit
        };
        if b >= 1 << 60 {
            continue; // v1's "no limit"
        }
        if best.as_ref().is_none_or(|(x, _)| b < *x) {
            best = Some((b, format!("its cgroup's limit ({file})")));
        }
    }
    best
}
