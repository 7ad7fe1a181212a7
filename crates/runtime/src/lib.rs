//! blockflow runtime: a pipeline file becomes a validated plan, then a
//! running graph of stage actors over bounded channels.
//!
//! Phases: [`config::load`] (parse, with spans) → [`plan::plan`] (validate
//! everything, propagate shapes, dtypes and grids, project memory) →
//! [`exec::run`] (build stores and channels, run, report).

pub mod catalog;
pub mod cluster;
pub mod config;
pub mod exec;
pub mod follow;
mod paths;
pub mod plan;
pub mod region;
pub mod report;
pub mod spec;
pub mod stages;

pub use config::{ConfigError, Diagnostic};
pub use exec::{run, Progress, RunError, RunOptions};
pub use plan::Plan;
pub use report::Report;

/// Loads, overrides and validates a pipeline file.
pub fn load_plan(path: &std::path::Path, sets: &[String]) -> Result<Plan, ConfigError> {
    let mut raw = config::load(path)?;
    raw.apply_overrides(sets)?;
    plan::plan(&raw)
}
