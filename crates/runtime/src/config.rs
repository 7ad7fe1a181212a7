//! Parsing a pipeline file into raw tables that remember where every key
//! and value came from, so each diagnostic names the file, line and stage.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// Where a value came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Span {
    /// Byte range in the pipeline file.
    File(Range<usize>),
    /// A `--set` override (its text).
    Set(String),
    /// Nowhere (a default).
    None,
}

/// A value with its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Sp<T> {
    pub v: T,
    pub span: Span,
}

/// A TOML value of a parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<Sp<Val>>),
    Table,
}

impl Val {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Str(_) => "a string",
            Val::Int(_) => "an integer",
            Val::Float(_) => "a float",
            Val::Bool(_) => "a bool",
            Val::Array(_) => "a list",
            Val::Table => "a table",
        }
    }
}

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Str(s) => write!(f, "\"{s}\""),
            Val::Int(i) => write!(f, "{i}"),
            // As TOML writes a float: `2.0`, not `2` (an integer).
            Val::Float(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 => {
                write!(f, "{x:.1}")
            }
            Val::Float(x) => write!(f, "{x}"),
            Val::Bool(b) => write!(f, "{b}"),
            Val::Array(a) => {
                write!(f, "[")?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{}", v.v)?;
                }
                write!(f, "]")
            }
            Val::Table => write!(f, "{{...}}"),
        }
    }
}

pub type Entries = Vec<(Sp<String>, Sp<Val>)>;

/// One `[stage.NAME]` table.
#[derive(Debug, Clone)]
pub struct RawStage {
    pub name: Sp<String>,
    pub entries: Entries,
}

impl RawStage {
    pub fn get(&self, key: &str) -> Option<&Sp<Val>> {
        self.entries
            .iter()
            .find(|(k, _)| k.v == key)
            .map(|(_, v)| v)
    }

    /// The names its `inputs` list gives (none if it has no such list).
    pub fn input_names(&self) -> Vec<String> {
        match self.get("inputs").map(|v| &v.v) {
            Some(Val::Array(a)) => a
                .iter()
                .filter_map(|v| match &v.v {
                    Val::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A parsed pipeline file.
#[derive(Debug, Clone)]
pub struct RawConfig {
    pub path: PathBuf,
    pub text: String,
    pub pipeline: Entries,
    /// The `[follow]` table: how `blockflow run --follow` watches its folder.
    pub follow: Entries,
    pub stages: Vec<RawStage>,
    /// Set by `--follow`: the `read-hdf5-stack` stage is planned as this
    /// stack (one timepoint) instead of listing its glob, which may match
    /// nothing yet.
    pub fixed_stack: Option<blockflow_io::hdf5::StackReader>,
}

/// One problem found in a pipeline, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// `file:line:col`, or `--set KEY=VALUE`.
    pub location: String,
    /// Byte offset in the file, to list diagnostics in file order.
    pub offset: usize,
    pub stage: Option<String>,
    pub msg: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.location)?;
        if let Some(s) = &self.stage {
            write!(f, "stage \"{s}\": ")?;
        }
        f.write_str(&self.msg)
    }
}

/// Errors of the parse and validate phases.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the pipeline file: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render(d: &[Diagnostic]) -> String {
    let mut d: Vec<&Diagnostic> = d.iter().collect();
    d.sort_by_key(|x| x.offset);
    let mut s = String::new();
    for (i, d) in d.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        s.push_str(&format!("error: {d}"));
    }
    if d.len() > 1 {
        s.push_str(&format!("\n{} errors", d.len()));
    }
    s
}

/// Collects diagnostics against one file.
#[derive(Debug)]
pub struct Diags<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    pub list: Vec<Diagnostic>,
}

impl<'a> Diags<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Diags {
            path,
            text,
            list: Vec::new(),
        }
    }

    /// `file:line:col` of a span (with `extra_cols` added to the column).
    pub fn location(&self, span: &Span, extra_cols: usize) -> String {
        match span {
            Span::File(r) => {
                let (line, col) = line_col(self.text, r.start);
                format!("{}:{}:{}", self.path.display(), line, col + extra_cols)
            }
            Span::Set(s) => format!("--set {s}"),
            Span::None => format!("{}", self.path.display()),
        }
    }

    pub fn err(&mut self, span: &Span, stage: Option<&str>, msg: impl Into<String>) {
        self.err_at(span, 0, stage, msg)
    }

    pub fn err_at(
        &mut self,
        span: &Span,
        extra_cols: usize,
        stage: Option<&str>,
        msg: impl Into<String>,
    ) {
        let d = Diagnostic {
            location: self.location(span, extra_cols),
            offset: match span {
                Span::File(r) => r.start,
                _ => usize::MAX,
            },
            stage: stage.map(str::to_string),
            msg: msg.into(),
        };
        if !self.list.contains(&d) {
            self.list.push(d);
        }
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.chars().count(), |p| before[p + 1..].chars().count())
        + 1;
    (line, col)
}

fn convert(v: &toml::Spanned<DeValue<'_>>) -> Sp<Val> {
    let span = Span::File(v.span());
    let val = match v.get_ref() {
        DeValue::String(s) => Val::Str(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .map(Val::Int)
            .unwrap_or(Val::Float(f64::NAN)),
        DeValue::Float(x) => Val::Float(x.as_str().replace('_', "").parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => Val::Bool(*b),
        DeValue::Datetime(d) => Val::Str(d.to_string()),
        DeValue::Array(a) => Val::Array(a.iter().map(convert).collect()),
        DeValue::Table(_) => Val::Table,
    };
    Sp { v: val, span }
}

fn entries(t: &DeTable<'_>) -> Entries {
    let mut e: Entries = t
        .iter()
        .map(|(k, v)| {
            (
                Sp {
                    v: k.get_ref().to_string(),
                    span: Span::File(k.span()),
                },
                convert(v),
            )
        })
        .collect();
    e.sort_by_key(|(k, _)| match &k.span {
        Span::File(r) => r.start,
        _ => usize::MAX,
    });
    e
}

/// Parses the text of a pipeline file. Syntax errors are reported with
/// their line and column; structure errors (unknown top-level tables) are
/// collected.
pub fn parse(path: &Path, text: &str) -> Result<RawConfig, ConfigError> {
    let mut diags = Diags::new(path, text);
    let doc = match DeTable::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let span = e.span().map(Span::File).unwrap_or(Span::None);
            let msg = e.message().trim().to_string();
            diags.err(&span, None, format!("not valid TOML: {msg}"));
            return Err(ConfigError::Invalid(diags.list));
        }
    };
    let mut pipeline = Entries::new();
    let mut follow = Entries::new();
    let mut stages = Vec::new();
    let mut top: Vec<_> = doc.get_ref().iter().collect();
    top.sort_by_key(|(k, _)| k.span().start);
    for (k, v) in top {
        let span = Span::File(k.span());
        match (k.get_ref().as_ref(), v.get_ref()) {
            ("pipeline", DeValue::Table(t)) => pipeline = entries(t),
            ("follow", DeValue::Table(t)) => follow = entries(t),
            ("stage", DeValue::Table(t)) => {
                let mut list: Vec<_> = t.iter().collect();
                list.sort_by_key(|(k, _)| k.span().start);
                for (name, body) in list {
                    let name_sp = Sp {
                        v: name.get_ref().to_string(),
                        span: Span::File(name.span()),
                    };
                    match body.get_ref() {
                        DeValue::Table(t) => stages.push(RawStage {
                            name: name_sp,
                            entries: entries(t),
                        }),
                        other => diags.err(
                            &name_sp.span,
                            Some(&name_sp.v),
                            format!(
                                "a stage is a table `[stage.{}]`, not {}",
                                name_sp.v,
                                other.type_str()
                            ),
                        ),
                    }
                }
            }
            ("pipeline" | "stage" | "follow", other) => diags.err(
                &span,
                None,
                format!(
                    "`{}` must be a table, not {}",
                    k.get_ref(),
                    other.type_str()
                ),
            ),
            (other, _) => {
                let hint = blockflow_kernels::did_you_mean(other, ["pipeline", "stage", "follow"])
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                diags.err(
                    &span,
                    None,
                    format!("unknown table `{other}`: a pipeline file has `[pipeline]`, `[stage.NAME]` and `[follow]` tables{hint}"),
                );
            }
        }
    }
    if !diags.list.is_empty() {
        return Err(ConfigError::Invalid(diags.list));
    }
    Ok(RawConfig {
        path: path.to_path_buf(),
        text: text.to_string(),
        pipeline,
        follow,
        stages,
        fixed_stack: None,
    })
}

/// Reads and parses a pipeline file.
pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses the value side of a `--set`: a TOML value, or else a bare string.
fn parse_set_value(text: &str, origin: &str) -> Sp<Val> {
    let span = Span::Set(origin.to_string());
    match DeValue::parse(text) {
        Ok(v) => {
            let mut sp = convert(&v);
            fn respan(v: &mut Sp<Val>, span: &Span) {
                v.span = span.clone();
                if let Val::Array(a) = &mut v.v {
                    for x in a {
                        respan(x, span);
                    }
                }
            }
            respan(&mut sp, &span);
            sp
        }
        Err(_) => Sp {
            v: Val::Str(text.to_string()),
            span,
        },
    }
}

impl RawConfig {
    /// Applies `STAGE.PARAM=VALUE` overrides (`pipeline.PARAM` for the
    /// pipeline table). Every bad override is reported.
    pub fn apply_overrides(&mut self, sets: &[String]) -> Result<(), ConfigError> {
        let mut errs = Vec::new();
        for s in sets {
            let bad = |msg: String| Diagnostic {
                location: format!("--set {s}"),
                offset: usize::MAX,
                stage: None,
                msg,
            };
            let Some((key, value)) = s.split_once('=') else {
                errs.push(bad("expected STAGE.PARAM=VALUE".into()));
                continue;
            };
            let Some((stage, param)) = key.trim().split_once('.') else {
                errs.push(bad(
                    "expected STAGE.PARAM=VALUE (e.g. `out.path=/data/out.zarr`)".into(),
                ));
                continue;
            };
            let value = parse_set_value(value.trim(), s);
            let key = Sp {
                v: param.trim().to_string(),
                span: Span::Set(s.clone()),
            };
            let target = if stage == "pipeline" {
                Some(&mut self.pipeline)
            } else if stage == "follow" {
                Some(&mut self.follow)
            } else {
                self.stages
                    .iter_mut()
                    .find(|st| st.name.v == stage)
                    .map(|st| &mut st.entries)
            };
            match target {
                Some(entries) => {
                    // A new kind from the command line replaces the stage:
                    // the file's parameters the new kind does not take go.
                    if key.v == "kind" {
                        if let Val::Str(k) = &value.v {
                            if let Some(spec) = crate::stages::kind(k) {
                                entries.retain(|(p, _)| {
                                    p.v == "kind"
                                        || !matches!(p.span, Span::File(_))
                                        || crate::spec::COMMON
                                            .iter()
                                            .chain(spec.params)
                                            .any(|s| s.name == p.v)
                                });
                            }
                        }
                    }
                    if let Some(e) = entries.iter_mut().find(|(k, _)| k.v == key.v) {
                        e.1 = value;
                    } else {
                        entries.push((key, value));
                    }
                }
                None => {
                    let names = self
                        .stages
                        .iter()
                        .map(|s| s.name.v.as_str())
                        .chain(["pipeline", "follow"]);
                    let hint = blockflow_kernels::did_you_mean(stage, names)
                        .map(|n| format!("; did you mean `{n}`?"))
                        .unwrap_or_default();
                    errs.push(bad(format!("there is no stage `{stage}`{hint}")));
                }
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errs))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_give_lines_and_overrides_apply() {
        let text =
            "[pipeline]\nmemory = \"1 GiB\"\n\n[stage.a]\nkind = \"synthetic\"\nshape = [4, 4]\n";
        let mut c = parse(Path::new("p.toml"), text).expect("parses");
        assert_eq!(c.stages.len(), 1);
        let d = Diags::new(Path::new("p.toml"), text);
        let shape = c.stages[0].get("shape").expect("shape");
        assert_eq!(d.location(&shape.span, 0), "p.toml:6:9");
        c.apply_overrides(&["a.shape=[8, 8]".into(), "a.path=/x y/z.zarr".into()])
            .expect("overrides");
        assert_eq!(
            c.stages[0].get("path").expect("p").v,
            Val::Str("/x y/z.zarr".into())
        );
        let err = c
            .apply_overrides(&["b.shape=1".into()])
            .expect_err("no stage b");
        assert!(err.to_string().contains("no stage `b`"), "{err}");
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let err = parse(Path::new("p.toml"), "[pipeline]\nmemory = \n").expect_err("bad");
        let s = err.to_string();
        assert!(s.starts_with("error: p.toml:2:"), "{s}");
        let err = parse(Path::new("p.toml"), "[pipelin]\n").expect_err("unknown");
        assert!(err.to_string().contains("did you mean `pipeline`"), "{err}");
    }
}
