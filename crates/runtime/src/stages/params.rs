//! Parameters: each stage kind declares its own (name, type, default,
//! choices, one-line doc) once, as [`ParamSpec`]s; the parser checks a
//! config's tables against them, `blockflow stages` prints them, and a
//! stage reads its values through [`Params`], which falls back to the
//! declared default. A default is written in one place only.

use blockflow_core::{parse_bytes, DType};
use blockflow_kernels::did_you_mean;

use crate::config::{Diags, RawStage, Sp, Span, Val};

/// What a path parameter names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRole {
    /// A file or store the run reads.
    Input,
    /// A glob of files the run reads.
    InputGlob,
    /// A file or store the run writes.
    Output,
    /// Anything else (a report, a scratch or state folder).
    Other,
}

/// The type of a parameter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PType {
    Str,
    /// A file or folder, and what the run does with it (the checks that
    /// no output lands on an input or another output read this).
    Path(PathRole),
    /// An integer in `[min, max]`.
    Int(i64, i64),
    /// An integer in `[min, max]`, or "auto".
    IntOrAuto(i64, i64),
    Bool,
    /// A human size: `"512 MiB"`.
    Size,
    /// A list of positive integers, one per axis.
    Shape,
    /// Chunk lengths, one per axis, as dask's `rechunk` takes them: an
    /// integer >= 1, -1 (the whole axis) or "auto"; or "auto" for all.
    Chunks,
    /// One of the listed strings.
    Choice(&'static [&'static str]),
    /// A dtype name (`float32`, `u8`, ...).
    DType,
    /// An expression in the `expr` language.
    Expr,
    /// A list of stage names.
    Stages,
    /// A list of names (strings), one per axis.
    Names,
    /// A number.
    Float,
    /// A number, or a list of numbers (one per axis).
    Floats,
    /// An integer, or a list of integers (one per axis).
    Ints,
    /// A duration: `"2s"`, `"250ms"`, or a number of seconds.
    Duration,
}

impl PType {
    pub fn describe(self) -> String {
        match self {
            PType::Str => "string".into(),
            PType::Path(PathRole::InputGlob) => "glob".into(),
            PType::Path(_) => "path".into(),
            PType::Int(lo, hi) if hi == i64::MAX => format!("integer >= {lo}"),
            PType::Int(lo, hi) => format!("integer {lo}..={hi}"),
            PType::IntOrAuto(lo, hi) => format!("integer {lo}..={hi} or \"auto\""),
            PType::Bool => "bool".into(),
            PType::Size => "size (\"512 MiB\")".into(),
            PType::Shape => "list of integers".into(),
            PType::Chunks => "list of integers (-1: the whole axis) or \"auto\"".into(),
            PType::Choice(c) => c
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(" | "),
            PType::DType => "dtype".into(),
            PType::Expr => "expression".into(),
            PType::Stages => "list of stage names".into(),
            PType::Names => "list of strings".into(),
            PType::Float => "number".into(),
            PType::Floats => "number or list".into(),
            PType::Ints => "integer or list".into(),
            PType::Duration => "duration (\"2s\")".into(),
        }
    }

    /// Whether a value of this type is written as a TOML string (so its
    /// default is the bare text).
    fn is_text(self) -> bool {
        matches!(
            self,
            PType::Str
                | PType::Path(_)
                | PType::Choice(_)
                | PType::DType
                | PType::Expr
                | PType::Size
                | PType::Duration
        )
    }
}

/// One parameter of a stage kind.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: PType,
    /// `None`: required. `Some("")`: optional with no default. Otherwise
    /// the default as the TOML writes it, without quotes for strings.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

impl ParamSpec {
    /// The default as a value (None when required or without a default).
    pub fn default_value(&self) -> Option<Result<Val, String>> {
        let text = self.default.filter(|d| !d.is_empty())?;
        if self.ty.is_text() {
            return Some(Ok(Val::Str(text.to_string())));
        }
        Some(
            toml::from_str::<toml::Table>(&format!("v = {text}"))
                .map_err(|e| format!("default `{text}` of `{}`: {e}", self.name))
                .map(|t| from_toml(&t["v"])),
        )
    }
}

fn from_toml(v: &toml::Value) -> Val {
    match v {
        toml::Value::String(s) => Val::Str(s.clone()),
        toml::Value::Integer(i) => Val::Int(*i),
        toml::Value::Float(f) => Val::Float(*f),
        toml::Value::Boolean(b) => Val::Bool(*b),
        toml::Value::Array(a) => Val::Array(
            a.iter()
                .map(|x| Sp {
                    v: from_toml(x),
                    span: Span::None,
                })
                .collect(),
        ),
        _ => Val::Table,
    }
}

/// How many inputs a stage takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    None,
    Exactly(usize),
    AtLeast(usize),
}

/// A parameter (for the tables: `p("sigma", PType::Float, Some("1.5"), "...")`).
pub const fn p(
    name: &'static str,
    ty: PType,
    default: Option<&'static str>,
    doc: &'static str,
) -> ParamSpec {
    ParamSpec {
        name,
        ty,
        default,
        doc,
    }
}

/// A stage's parameters, read through their declarations: a value given
/// in the config (or with `--set`), else the declared default. Reading a
/// name the kind does not declare is a bug the registry tests catch.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    st: &'a RawStage,
    specs: &'a [&'static [ParamSpec]],
}

impl<'a> Params<'a> {
    pub fn new(st: &'a RawStage, specs: &'a [&'static [ParamSpec]]) -> Self {
        Params { st, specs }
    }

    fn spec(&self, key: &str) -> &'static ParamSpec {
        self.specs
            .iter()
            .flat_map(|s| s.iter())
            .find(|s| s.name == key)
            .unwrap_or_else(|| panic!("internal: parameter `{key}` is not declared"))
    }

    /// The value given in the config, if any.
    pub fn given(&self, key: &str) -> Option<&'a Sp<Val>> {
        let _ = self.spec(key);
        self.st.get(key)
    }

    /// Whether the config gives `key`.
    pub fn has(&self, key: &str) -> bool {
        self.given(key).is_some()
    }

    /// The value given, else the default.
    pub fn value(&self, key: &str) -> Option<Val> {
        match self.given(key) {
            Some(v) => Some(v.v.clone()),
            None => self.spec(key).default_value().and_then(Result::ok),
        }
    }

    /// Where `key` was given (else the stage's name).
    pub fn span(&self, key: &str) -> Span {
        self.st
            .get(key)
            .map(|v| v.span.clone())
            .unwrap_or_else(|| self.st.name.span.clone())
    }

    pub fn str(&self, key: &str) -> Option<String> {
        match self.value(key) {
            Some(Val::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.value(key) {
            Some(Val::Int(i)) => Some(i),
            _ => None,
        }
    }

    pub fn float(&self, key: &str) -> Option<f64> {
        match self.value(key) {
            Some(Val::Float(f)) => Some(f),
            Some(Val::Int(i)) => Some(i as f64),
            _ => None,
        }
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.value(key) {
            Some(Val::Bool(b)) => Some(b),
            _ => None,
        }
    }

    /// A list of positive integers.
    pub fn shape(&self, key: &str) -> Option<Vec<u64>> {
        match self.value(key) {
            Some(Val::Array(a)) => a
                .iter()
                .map(|x| match x.v {
                    Val::Int(i) if i >= 1 => Some(i as u64),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }

    /// A list of strings.
    pub fn names(&self, key: &str) -> Option<Vec<String>> {
        match self.value(key) {
            Some(Val::Array(a)) => a
                .iter()
                .map(|x| match &x.v {
                    Val::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }

    /// Chunk lengths for an array of `shape` with `item`-byte elements:
    /// -1 is the whole axis; "auto" axes share what the fixed ones leave of
    /// `target` bytes per chunk, as equally as the axes' lengths allow (as
    /// dask's `rechunk(chunks="auto")` with its chunk-size target).
    pub fn chunks(
        &self,
        key: &str,
        shape: &[u64],
        item: u64,
        target: u64,
    ) -> Option<Result<Vec<u64>, String>> {
        enum C {
            Len(u64),
            Auto,
        }
        let spec: Vec<C> = match self.value(key)? {
            Val::Str(s) if s == "auto" => shape.iter().map(|_| C::Auto).collect(),
            Val::Array(a) => a
                .iter()
                .zip(shape)
                .map(|(x, &n)| match &x.v {
                    Val::Int(-1) => C::Len(n.max(1)),
                    Val::Int(i) => C::Len((*i).max(1) as u64),
                    _ => C::Auto,
                })
                .collect(),
            _ => return None,
        };
        if let Val::Array(a) = self.value(key)? {
            if a.len() != shape.len() {
                return Some(Err(format!(
                    "`{key}` has {} axes but the array has {} ({shape:?})",
                    a.len(),
                    shape.len()
                )));
            }
        }
        let fixed: u64 = spec
            .iter()
            .map(|c| match c {
                C::Len(l) => *l,
                C::Auto => 1,
            })
            .product::<u64>()
            .saturating_mul(item.max(1));
        let mut budget = (target / fixed.max(1)).max(1) as f64;
        let mut auto: Vec<usize> = (0..spec.len())
            .filter(|&a| matches!(spec[a], C::Auto))
            .collect();
        let mut out: Vec<u64> = spec
            .iter()
            .map(|c| match c {
                C::Len(l) => *l,
                C::Auto => 0,
            })
            .collect();
        // Axes shorter than their share take their whole length; the rest
        // share what is left, equally.
        auto.sort_by_key(|&a| shape[a]);
        while let Some(&a) = auto.first() {
            let share = budget.powf(1.0 / auto.len() as f64).floor().max(1.0) as u64;
            if shape[a] <= share {
                out[a] = shape[a].max(1);
                budget /= shape[a].max(1) as f64;
                auto.remove(0);
            } else {
                for &b in &auto {
                    out[b] = share.min(shape[b]).max(1);
                }
                break;
            }
        }
        Some(Ok(out))
    }

    /// A number or list of numbers, as one value per axis of `ndim`
    /// (`ndim` 0: the list as given).
    pub fn floats(&self, key: &str, ndim: usize) -> Option<Result<Vec<f64>, String>> {
        let num = |v: &Val| match v {
            Val::Float(f) => Some(*f),
            Val::Int(i) => Some(*i as f64),
            _ => None,
        };
        match self.value(key)? {
            Val::Array(a) => {
                let v: Vec<f64> = a.iter().filter_map(|x| num(&x.v)).collect();
                Some(if v.len() == ndim || ndim == 0 {
                    Ok(v)
                } else {
                    Err(format!(
                        "`{key}` has {} values but the array has {ndim} axes",
                        v.len()
                    ))
                })
            }
            v => num(&v).map(|x| Ok(vec![x; ndim])),
        }
    }

    /// An integer or list of integers, one per axis of `ndim`.
    pub fn ints(&self, key: &str, ndim: usize) -> Option<Result<Vec<i64>, String>> {
        self.floats(key, ndim)
            .map(|r| r.map(|v| v.into_iter().map(|x| x as i64).collect()))
    }

    /// Every parameter of the kind as the TOML writes it, given or
    /// defaulted (those with neither are left out), in declaration order.
    pub fn resolved(&self) -> Vec<(&'static str, String)> {
        self.specs
            .iter()
            .flat_map(|s| s.iter())
            .filter(|s| !matches!(s.name, "kind" | "inputs" | "capacity" | "parallel"))
            .filter_map(|s| self.value(s.name).map(|v| (s.name, v.to_string())))
            .collect()
    }
}

/// Checks one table's entries against its parameter specs: unknown keys,
/// types, ranges, required keys. Returns whether everything was right.
pub fn check_entries(
    d: &mut Diags,
    stage: Option<&str>,
    table_span: &Span,
    entries: &[(Sp<String>, Sp<Val>)],
    specs: &[&[ParamSpec]],
    what: &str,
) -> bool {
    let before = d.list.len();
    let all: Vec<&ParamSpec> = specs.iter().flat_map(|s| s.iter()).collect();
    for (k, v) in entries {
        let Some(spec) = all.iter().find(|s| s.name == k.v) else {
            let hint = did_you_mean(&k.v, all.iter().map(|s| s.name))
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_else(|| {
                    format!(
                        "; {what} takes {}",
                        all.iter()
                            .map(|s| format!("`{}`", s.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
            d.err(&k.span, stage, format!("unknown parameter `{}`{hint}", k.v));
            continue;
        };
        if let Err(msg) = check_type(spec.ty, &v.v) {
            d.err(&v.span, stage, format!("`{}`: {msg}", k.v));
        }
    }
    for s in all {
        if s.default.is_none() && !entries.iter().any(|(k, _)| k.v == s.name) {
            d.err(
                table_span,
                stage,
                format!(
                    "missing required parameter `{}` ({}: {})",
                    s.name,
                    s.ty.describe(),
                    s.doc
                ),
            );
        }
    }
    d.list.len() == before
}

/// Whether `v` is a value of type `ty`, or why not.
/// A shape: integers >= 1.
fn check_extents(a: &[Sp<Val>]) -> Result<(), String> {
    if a.is_empty() {
        return Err("the list is empty; give one integer per axis".into());
    }
    match a.iter().find(|x| !matches!(x.v, Val::Int(i) if i >= 1)) {
        Some(x) => Err(format!(
            "every extent must be an integer >= 1, found {}",
            x.v
        )),
        None => Ok(()),
    }
}

/// Chunk lengths: integers >= 1, -1 or "auto".
fn check_chunk_lengths(a: &[Sp<Val>]) -> Result<(), String> {
    let ok = |v: &Val| match v {
        Val::Int(i) => *i >= 1 || *i == -1,
        Val::Str(s) => s == "auto",
        _ => false,
    };
    match a.iter().find(|x| !ok(&x.v)) {
        Some(x) => Err(format!(
            "every chunk length must be an integer >= 1, -1 (the whole axis) or \"auto\", found {}",
            x.v
        )),
        None => Ok(()),
    }
}

pub fn check_type(ty: PType, v: &Val) -> Result<(), String> {
    let want = |w: &str| Err(format!("expected {w}, found {} {v}", v.type_name()));
    match (ty, v) {
        (PType::Str | PType::Path(_) | PType::Expr, Val::Str(_)) => Ok(()),
        (PType::Str | PType::Path(_) | PType::Expr, _) => want("a string"),
        (PType::Int(lo, hi), Val::Int(i)) => {
            if *i < lo || *i > hi {
                Err(format!("{i} is out of range ({})", ty.describe()))
            } else {
                Ok(())
            }
        }
        (PType::Int(..), _) => want(&ty.describe()),
        (PType::IntOrAuto(..), Val::Str(s)) if s == "auto" => Ok(()),
        (PType::IntOrAuto(lo, hi), Val::Int(i)) => check_type(PType::Int(lo, hi), v)
            .map_err(|_| format!("{i} is out of range ({})", ty.describe())),
        (PType::IntOrAuto(..), _) => want(&ty.describe()),
        (PType::Bool, Val::Bool(_)) => Ok(()),
        (PType::Bool, _) => want("true or false"),
        (PType::Size, Val::Str(s)) => parse_bytes(s).map(|_| ()),
        (PType::Size, Val::Int(i)) if *i > 0 => Ok(()),
        (PType::Size, _) => want("a size such as \"512 MiB\""),
        (PType::Duration, Val::Str(s)) => crate::plan::parse_duration(s).map(|_| ()),
        (PType::Duration, Val::Int(i)) if *i >= 0 => Ok(()),
        (PType::Duration, Val::Float(f)) if *f >= 0.0 => Ok(()),
        (PType::Duration, _) => want("a duration such as \"2s\" or \"250ms\""),
        (PType::Shape, Val::Array(a)) => check_extents(a),
        (PType::Shape, _) => want("a list of integers such as [500, 500, 3]"),
        (PType::Chunks, Val::Str(s)) if s == "auto" => Ok(()),
        (PType::Chunks, Val::Array(a)) if !a.is_empty() => check_chunk_lengths(a),
        (PType::Chunks, _) => {
            want("a list of chunk lengths such as [-1, 64, \"auto\"], or \"auto\"")
        }
        (PType::Choice(c), Val::Str(s)) => {
            if c.contains(&s.as_str()) {
                Ok(())
            } else {
                let hint = did_you_mean(s, c.iter().copied())
                    .map(|h| format!("; did you mean \"{h}\"?"))
                    .unwrap_or_default();
                Err(format!("\"{s}\" is not one of {}{hint}", ty.describe()))
            }
        }
        (PType::Choice(_), _) => want(&ty.describe()),
        (PType::DType, Val::Str(s)) => DType::parse(s).map(|_| ()).ok_or_else(|| {
            format!(
                "unknown dtype \"{s}\"; use one of {}",
                DType::ALL
                    .iter()
                    .map(|d| d.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }),
        (PType::DType, _) => want("a dtype name such as \"float32\""),
        (PType::Stages, Val::Array(a)) => {
            for x in a {
                if !matches!(x.v, Val::Str(_)) {
                    return Err(format!("expected stage names (strings), found {}", x.v));
                }
            }
            Ok(())
        }
        (PType::Stages, _) => want("a list of stage names such as [\"img\"]"),
        (PType::Names, Val::Array(a)) if !a.is_empty() => {
            if a.iter()
                .all(|x| matches!(&x.v, Val::Str(s) if !s.trim().is_empty()))
            {
                Ok(())
            } else {
                want("a list of non-empty strings such as [\"y\", \"x\", \"c\"]")
            }
        }
        (PType::Names, _) => want("a list of strings such as [\"y\", \"x\", \"c\"]"),
        (PType::Float, Val::Float(f)) => finite(*f),
        (PType::Float, Val::Int(_)) => Ok(()),
        (PType::Float, _) => want("a number"),
        (PType::Floats, Val::Float(f)) => finite(*f),
        (PType::Floats, Val::Int(_)) => Ok(()),
        (PType::Floats, Val::Array(a)) => {
            if a.iter().all(|x| matches!(x.v, Val::Float(_) | Val::Int(_))) && !a.is_empty() {
                a.iter().try_for_each(|x| match x.v {
                    Val::Float(f) => finite(f),
                    _ => Ok(()),
                })
            } else {
                want("a number or a list of numbers")
            }
        }
        (PType::Floats, _) => want("a number or a list of numbers"),
        (PType::Ints, Val::Int(_)) => Ok(()),
        (PType::Ints, Val::Array(a)) => {
            if a.iter().all(|x| matches!(x.v, Val::Int(_))) && !a.is_empty() {
                Ok(())
            } else {
                want("an integer or a list of integers")
            }
        }
        (PType::Ints, _) => want("an integer or a list of integers"),
    }
}

/// Every number parameter is finite: `inf` and `nan` are never a sigma, a
/// weight, a limit or a fill value this engine can honour.
fn finite(f: f64) -> Result<(), String> {
    if f.is_finite() {
        Ok(())
    } else {
        Err(format!("{f} is not a finite number"))
    }
}
