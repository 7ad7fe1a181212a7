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
pub mod outputs;
mod paths;
pub mod plan;
pub mod region;
pub mod report;
pub mod spec;
pub mod stages;

pub use config::{ConfigError, Diagnostic};
pub use exec::{run, Progress, RunError, RunOptions, StageTotal};
pub use plan::Plan;
pub use report::Report;

/// Loads, overrides and validates a pipeline file.
pub fn load_plan(path: &std::path::Path, sets: &[String]) -> Result<Plan, ConfigError> {
    load_plan_with(path, &Changes::sets(sets))
}

/// What the command line changes in a pipeline: `--set`s, `--skip`ped
/// stages, an `--out` folder.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub sets: Vec<String>,
    pub skip: Vec<String>,
    pub out: Option<std::path::PathBuf>,
}

impl Changes {
    pub fn sets(sets: &[String]) -> Changes {
        Changes {
            sets: sets.to_vec(),
            ..Default::default()
        }
    }

    /// Applies them: overrides, then skips, then the output folder.
    pub fn apply(&self, raw: &mut config::RawConfig) -> Result<(), ConfigError> {
        raw.apply_overrides(&self.sets)?;
        if !self.skip.is_empty() {
            outputs::skip(raw, &self.skip)?;
        }
        if let Some(dir) = &self.out {
            outputs::relocate(raw, dir)?;
        }
        Ok(())
    }
}

/// [`load_plan`] with every command-line change.
pub fn load_plan_with(path: &std::path::Path, changes: &Changes) -> Result<Plan, ConfigError> {
    let mut raw = config::load(path)?;
    changes.apply(&mut raw)?;
    plan::plan(&raw)
}
