//! Validation and planning: raw tables -> a typed graph with the shape,
//! dtype and chunk grid of every edge and the projected peak bytes of every
//! stage. The plan is pure data; only input metadata is read to make it
//! (through a [`Catalog`]), nothing is created or written.
//!
//! Each stage is planned by its kind (see [`crate::stages`]); this module
//! checks what is common to every stage (tables, names, inputs, arity,
//! cycles, paths), then [`assemble`] turns the planned stages into the
//! graph that runs.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use blockflow_core::{parse_bytes, ArraySpec, ChunkGrid};
use blockflow_kernels::did_you_mean;

use crate::catalog::{Catalog, FixedStack, FsCatalog};
use crate::config::{ConfigError, Diags, RawConfig, RawStage, Sp, Span, Val};
use crate::spec;
use crate::stages::params::{check_entries, Params};
use crate::stages::{About, InputRef, KindDef, PlanCx, Stage, Writes};

mod assemble;
mod names;
mod regrid;
mod text;
mod values;

pub use crate::stages::common::{MAX_RADIUS, MIN_RADIUS_BOUND};
pub use crate::stages::rechunk::{intermediate_chunks, read_group};
pub use crate::stages::slice::parse_index;
pub use assemble::sent_chunk;
pub(crate) use regrid::gcd;
pub use regrid::{block_elements, halo_reach, window_chunks, Regrid, SIMULATED_CHUNKS};
pub use values::{duration_of, parse_duration};
pub(crate) use values::{normalize, resolve};

/// Projected peak bytes of a stage.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StageMemory {
    /// Chunks being read, computed or written, with their temporaries.
    pub working: u64,
    /// Chunks queued in the stage's output channels.
    pub channels: u64,
}

impl StageMemory {
    pub fn total(&self) -> u64 {
        self.working.saturating_add(self.channels)
    }
}

/// One stage of a plan.
#[derive(Debug, Clone)]
pub struct PlannedStage {
    pub name: String,
    /// What it does: its kind's typed parameters and derived geometry.
    pub kind: Box<dyn Stage>,
    /// Its parameters as the TOML writes them, given or defaulted.
    pub params: Vec<(&'static str, String)>,
    pub inputs: Vec<usize>,
    pub consumers: Vec<usize>,
    /// The stream this stage sends (None for writers).
    pub output: Option<ArraySpec>,
    /// The stream this stage works over (its output, or a writer's input).
    pub grid: ChunkGrid,
    /// What its values are, for the readers of results.
    pub about: About,
    pub capacity: usize,
    pub parallel: usize,
    /// Extra chunks each input edge holds beyond its producer's capacity:
    /// where the inputs of a join run at different leads (one through an
    /// overlap window), the others must buffer the difference or the graph
    /// would wait on itself.
    pub input_slack: Vec<usize>,
    pub mem: StageMemory,
}

impl PlannedStage {
    pub fn chunks(&self) -> u64 {
        self.grid.num_chunks()
    }
    pub fn is_sink(&self) -> bool {
        self.output.is_none()
    }
}

/// A validated pipeline, ready to build.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub config: PathBuf,
    pub memory: u64,
    pub threads: usize,
    pub report: PathBuf,
    /// Stages in an order where every input comes before its consumers.
    pub stages: Vec<PlannedStage>,
}

impl Plan {
    pub fn projected_bytes(&self) -> u64 {
        self.stages
            .iter()
            .fold(0, |a, s| a.saturating_add(s.mem.total()))
    }
}

/// The budget `[pipeline] memory` sets (its default where unset).
pub fn plan_budget(raw: &RawConfig) -> u64 {
    let default_memory = spec::PIPELINE
        .iter()
        .find(|p| p.name == "memory")
        .and_then(|p| p.default)
        .and_then(|m| parse_bytes(m).ok())
        .unwrap_or(1 << 30);
    match raw
        .pipeline
        .iter()
        .find(|(k, _)| k.v == "memory")
        .map(|(_, v)| &v.v)
    {
        Some(Val::Str(s)) => parse_bytes(s).unwrap_or(0),
        Some(Val::Int(i)) => *i as u64,
        _ => default_memory,
    }
}

/// The `[pipeline]` table's settings.
struct Settings {
    name: String,
    memory: u64,
    threads: usize,
    capacity: usize,
    report: PathBuf,
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

fn get_int(st: &RawStage, key: &str) -> Option<i64> {
    match st.get(key).map(|v| &v.v) {
        Some(Val::Int(i)) => Some(*i),
        _ => None,
    }
}

fn span_of(st: &RawStage, key: &str) -> Span {
    st.get(key)
        .map(|v| v.span.clone())
        .unwrap_or_else(|| st.name.span.clone())
}

/// Validates a parsed pipeline into a plan, reporting every problem found.
pub fn plan(raw: &RawConfig) -> Result<Plan, ConfigError> {
    match &raw.fixed_stack {
        Some(stack) => plan_with(
            raw,
            &FixedStack {
                stack: stack.clone(),
            },
        ),
        None => plan_with(raw, &FsCatalog),
    }
}

/// [`plan`], reading stored inputs' metadata from `catalog`.
pub fn plan_with(raw: &RawConfig, catalog: &dyn Catalog) -> Result<Plan, ConfigError> {
    plan_knowing(raw, catalog, &HashMap::new())
}

/// [`plan_with`], where `known` says what the streams of some stages are
/// (by name) instead of their kinds: a cluster segment's readers of stored
/// intermediates stand for the stages of the whole pipeline, whose
/// [`About`] its writers' descriptions and coordinates need.
pub fn plan_knowing(
    raw: &RawConfig,
    catalog: &dyn Catalog,
    known: &HashMap<String, About>,
) -> Result<Plan, ConfigError> {
    let mut d = Diags::new(&raw.path, &raw.text);
    let settings = pipeline_settings(&mut d, raw);
    let kinds = check_stage_tables(&mut d, raw);
    // Paths against each other: outputs, inputs, report, scratch, config.
    crate::paths::check(&mut d, raw);
    let inputs = link_inputs(&mut d, raw, &kinds);
    let (order, consumers) = topological_order(&mut d, raw, &inputs);
    let graph = Graph {
        kinds: &kinds,
        inputs: &inputs,
        consumers: &consumers,
    };
    let planned = plan_stages(&mut d, raw, &graph, &order, &settings, catalog, known);
    if !d.list.is_empty() {
        return Err(ConfigError::Invalid(d.list));
    }
    // Remap to topological positions.
    let pos: HashMap<usize, usize> = order.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    let stages: Vec<PlannedStage> = order
        .iter()
        .filter_map(|&i| planned[i].clone())
        .map(|mut s| {
            s.inputs = s.inputs.iter().map(|j| pos[j]).collect();
            s.consumers = s.consumers.iter().map(|j| pos[j]).collect();
            s
        })
        .collect();
    let mut stages = assemble::fuse_and_assemble(stages, settings.capacity);
    assemble::set_slack(&mut stages);
    let scratch = scratch_folder(raw, &stages);
    assemble::project_all(&mut stages);
    assemble::spill_until_it_fits(&mut stages, settings.memory);
    for s in &mut stages {
        if let Some(dir) = s.kind.scratch_dir_mut() {
            dir.clone_from(&scratch);
        }
    }
    let plan = Plan {
        name: settings.name,
        config: raw.path.clone(),
        memory: settings.memory,
        threads: settings.threads,
        report: settings.report,
        stages,
    };
    if plan.projected_bytes() > plan.memory {
        return Err(assemble::over_budget(&mut d, raw, &plan));
    }
    Ok(plan)
}

/// The `[pipeline]` and `[follow]` tables checked, and the settings.
fn pipeline_settings(d: &mut Diags, raw: &RawConfig) -> Settings {
    let top = Span::File(0..0);
    check_entries(
        d,
        None,
        &top,
        &raw.pipeline,
        &[spec::PIPELINE],
        "[pipeline]",
    );
    check_entries(d, None, &top, &raw.follow, &[spec::FOLLOW], "[follow]");
    let pget = |k: &str| {
        raw.pipeline
            .iter()
            .find(|(kk, _)| kk.v == k)
            .map(|(_, v)| &v.v)
    };
    let name = match pget("name") {
        Some(Val::Str(s)) => s.clone(),
        _ => raw
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".into()),
    };
    let memory = plan_budget(raw);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = match pget("threads") {
        Some(Val::Int(i)) => *i as usize,
        _ => cores,
    };
    let capacity = match pget("capacity") {
        Some(Val::Int(i)) => *i as usize,
        _ => 2,
    };
    let report = match raw.pipeline.iter().find(|(k, _)| k.v == "report") {
        Some((_, v)) if matches!(v.v, Val::Str(_)) => resolve(&raw.path, v),
        _ => PathBuf::from(format!("{name}.report.json")),
    };
    Settings {
        name,
        memory,
        threads,
        capacity,
        report,
    }
}

/// The kinds' names, quoted, for messages.
fn kind_list() -> String {
    crate::stages::KINDS
        .iter()
        .map(|k| format!("\"{}\"", k.kind))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every stage's name and kind checked, and its table against its kind's
/// parameters; the kind of each stage (None where it is wrong).
fn check_stage_tables(d: &mut Diags, raw: &RawConfig) -> Vec<Option<&'static KindDef>> {
    let mut kinds = Vec::with_capacity(raw.stages.len());
    for st in &raw.stages {
        let sname = st.name.v.as_str();
        if !is_ident(sname) {
            d.err(
                &st.name.span,
                Some(sname),
                "a stage name is an identifier (letters, digits and `_`, not starting with a digit), so expressions can refer to it",
            );
        }
        let kind = match st.get("kind") {
            None => {
                d.err(
                    &st.name.span,
                    Some(sname),
                    format!("missing `kind`; one of {}", kind_list()),
                );
                None
            }
            Some(Sp {
                v: Val::Str(k),
                span,
            }) => {
                let found = crate::stages::kind(k);
                if found.is_none() {
                    let hint = did_you_mean(k, crate::stages::KINDS.iter().map(|k| k.kind))
                        .map(|s| format!("; did you mean \"{s}\"?"))
                        .unwrap_or_else(|| format!("; the kinds are {}", kind_list()));
                    d.err(
                        span,
                        Some(sname),
                        format!("unknown stage kind \"{k}\"{hint}"),
                    );
                }
                found
            }
            Some(v) => {
                d.err(
                    &v.span,
                    Some(sname),
                    format!("`kind` must be a string, not {}", v.v.type_name()),
                );
                None
            }
        };
        if let Some(k) = kind {
            check_entries(
                d,
                Some(sname),
                &st.name.span,
                &st.entries,
                &[spec::COMMON, k.params],
                &format!("a \"{}\" stage", k.kind),
            );
        }
        kinds.push(kind);
    }
    kinds
}

/// Each stage's inputs (by position in the file), checked: they exist, are
/// not writers nor the stage itself, and as many as its kind takes.
fn link_inputs(
    d: &mut Diags,
    raw: &RawConfig,
    kinds: &[Option<&'static KindDef>],
) -> Vec<Vec<usize>> {
    let index: HashMap<&str, usize> = raw
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.v.as_str(), i))
        .collect();
    let mut inputs: Vec<Vec<usize>> = vec![Vec::new(); raw.stages.len()];
    for (i, st) in raw.stages.iter().enumerate() {
        let sname = st.name.v.as_str();
        let listed: Vec<&Sp<Val>> = match st.get("inputs").map(|v| &v.v) {
            Some(Val::Array(a)) => a.iter().collect(),
            _ => Vec::new(),
        };
        for item in &listed {
            let Val::Str(n) = &item.v else { continue };
            match index.get(n.as_str()) {
                Some(&j) if j == i => {
                    d.err(&item.span, Some(sname), "a stage cannot be its own input")
                }
                Some(&j) if kinds[j].is_some_and(|k| k.role == "writer") => d.err(
                    &item.span,
                    Some(sname),
                    format!("input \"{n}\" is a writer and sends nothing"),
                ),
                Some(&j) => inputs[i].push(j),
                None => {
                    let hint = did_you_mean(n, raw.stages.iter().map(|s| s.name.v.as_str()))
                        .map(|s| format!("; did you mean \"{s}\"?"))
                        .unwrap_or_default();
                    d.err(
                        &item.span,
                        Some(sname),
                        format!("input \"{n}\" is not a stage{hint}"),
                    );
                }
            }
        }
        if let Some(k) = kinds[i] {
            if let Some(m) = arity_error(k, listed.len()) {
                d.err(&span_of(st, "inputs"), Some(sname), m);
            }
        }
    }
    inputs
}

/// Why `n` inputs are wrong for kind `k`, if they are.
fn arity_error(k: &KindDef, n: usize) -> Option<String> {
    use crate::stages::Arity;
    let s = |k: usize| if k == 1 { "" } else { "s" };
    match k.inputs {
        Arity::None if n > 0 => Some(format!("a \"{}\" stage takes no inputs", k.kind)),
        Arity::Exactly(m) if n != m => Some(format!(
            "a \"{}\" stage takes exactly {m} input{}, got {n}",
            k.kind,
            s(m)
        )),
        Arity::AtLeast(m) if n < m => Some(format!(
            "a \"{}\" stage takes at least {m} input{}, got {n}",
            k.kind,
            s(m)
        )),
        _ => None,
    }
}

/// The stages in topological order (Kahn's, stable), and each one's
/// consumers; the stages on a cycle are reported.
fn topological_order(
    d: &mut Diags,
    raw: &RawConfig,
    inputs: &[Vec<usize>],
) -> (Vec<usize>, Vec<Vec<usize>>) {
    let n = raw.stages.len();
    let mut indeg: Vec<usize> = inputs.iter().map(Vec::len).collect();
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ins) in inputs.iter().enumerate() {
        for &j in ins {
            consumers[j].push(i);
        }
    }
    let mut order = Vec::with_capacity(n);
    let mut ready: Vec<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    ready.reverse();
    while let Some(i) = ready.pop() {
        order.push(i);
        for &c in consumers[i].iter().rev() {
            indeg[c] -= 1;
            if indeg[c] == 0 {
                ready.push(c);
            }
        }
    }
    if order.len() < n {
        let on_cycle: HashSet<usize> = (0..n).filter(|i| !order.contains(i)).collect();
        let names: Vec<&str> = raw
            .stages
            .iter()
            .enumerate()
            .filter(|(i, _)| on_cycle.contains(i))
            .map(|(_, s)| s.name.v.as_str())
            .collect();
        for &i in &on_cycle {
            let st = &raw.stages[i];
            d.err(
                &span_of(st, "inputs"),
                Some(&st.name.v),
                format!("the inputs form a cycle through {}", names.join(" -> ")),
            );
        }
    }
    if raw.stages.is_empty() {
        d.err(
            &Span::File(0..0),
            None,
            "the pipeline has no stages; add `[stage.NAME]` tables",
        );
    }
    (order, consumers)
}

/// The graph as checked so far.
struct Graph<'g> {
    kinds: &'g [Option<&'static KindDef>],
    inputs: &'g [Vec<usize>],
    consumers: &'g [Vec<usize>],
}

/// Each stage planned by its kind, in topological order (by position in
/// the file; None where it or an input could not be).
fn plan_stages(
    d: &mut Diags,
    raw: &RawConfig,
    g: &Graph,
    order: &[usize],
    settings: &Settings,
    catalog: &dyn Catalog,
    known: &HashMap<String, About>,
) -> Vec<Option<PlannedStage>> {
    let mut planned: Vec<Option<PlannedStage>> = vec![None; raw.stages.len()];
    for &i in order {
        let st = &raw.stages[i];
        let sname = st.name.v.as_str();
        let Some(kind) = g.kinds[i] else { continue };
        if d.list.iter().any(|x| x.stage.as_deref() == Some(sname)) {
            continue;
        }
        let ins: Option<Vec<&PlannedStage>> =
            g.inputs[i].iter().map(|&j| planned[j].as_ref()).collect();
        let Some(ins) = ins else { continue };
        let specs = [spec::COMMON, kind.params];
        let refs: Vec<InputRef> = ins
            .iter()
            .filter_map(|s| {
                s.output.as_ref().map(|spec| InputRef {
                    name: &s.name,
                    spec,
                    about: &s.about,
                })
            })
            .collect();
        if refs.len() < ins.len() {
            continue;
        }
        let mut cx = PlanCx::new(
            d,
            st,
            Params::new(st, &specs),
            refs,
            settings.memory,
            &raw.path,
            catalog,
            &settings.name,
        );
        let Some(made) = (kind.plan)(&mut cx) else {
            if !d.list.iter().any(|x| x.stage.as_deref() == Some(sname)) {
                // Every refusal should say why; never go on without this stage.
                d.err(
                    &st.name.span,
                    Some(sname),
                    "this stage cannot be planned with these parameters and inputs",
                );
            }
            continue;
        };
        let mut output = made.output;
        if let Some(out) = output.as_mut().filter(|o| o.names.is_none()) {
            let specs: Vec<&ArraySpec> = ins.iter().filter_map(|s| s.output.as_ref()).collect();
            let names = names::inherit(&*made.op, &specs, out);
            out.names = names;
        }
        let parallel = if made.op.serial() {
            1
        } else {
            get_int(st, "parallel").map_or(settings.threads, |c| c as usize)
        };
        let about = known.get(sname).cloned().or(made.about).unwrap_or_else(|| {
            let names: Vec<&str> = ins.iter().map(|s| s.name.as_str()).collect();
            About::text(if names.is_empty() {
                format!("{} ({})", sname, kind.kind)
            } else {
                format!("{} of {}", kind.kind, names.join(", "))
            })
        });
        planned[i] = Some(PlannedStage {
            name: sname.to_string(),
            about,
            params: Params::new(st, &specs).resolved(),
            kind: made.op,
            inputs: g.inputs[i].clone(),
            consumers: g.consumers[i].clone(),
            output,
            grid: made.grid,
            capacity: get_int(st, "capacity").map_or(settings.capacity, |c| c as usize),
            parallel,
            input_slack: Vec::new(),
            mem: StageMemory::default(),
        });
    }
    planned
}

/// Where scratch stores go: the pipeline's `scratch`, else the folder of
/// the first Zarr output, else the system's temporary folder.
fn scratch_folder(raw: &RawConfig, stages: &[PlannedStage]) -> PathBuf {
    if let Some((_, v)) = raw.pipeline.iter().find(|(k, _)| k.v == "scratch") {
        if matches!(&v.v, Val::Str(s) if !s.is_empty()) {
            return resolve(&raw.path, v);
        }
    }
    stages
        .iter()
        .find_map(|s| match s.kind.writes() {
            Some(Writes::Zarr { path, .. } | Writes::Ome { path, .. })
                if !blockflow_io::remote::is_url(path) =>
            {
                path.parent().map(|p| {
                    if p.as_os_str().is_empty() {
                        PathBuf::from(".")
                    } else {
                        p.to_path_buf()
                    }
                })
            }
            _ => None,
        })
        .unwrap_or_else(std::env::temp_dir)
}

#[cfg(test)]
mod tests;
