//! Values of parameters that are not stage-specific: durations, paths.

use std::path::{Path, PathBuf};

use crate::config::{Sp, Span, Val};

/// A duration: `"2s"`, `"250ms"`, `"1.5 min"`, `"1h 30min"` (humantime's
/// units: ms, s, min or m, h, d, ...), or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let bad = |why: String| {
        format!("\"{s}\" is not a duration (e.g. \"2s\", \"250ms\", \"5 min\"): {why}")
    };
    // A bare number is seconds (humantime wants a unit).
    if let Some(x) = t
        .starts_with(|c: char| c.is_ascii_digit() || c == '.')
        .then(|| t.parse::<f64>().ok())
        .flatten()
    {
        return std::time::Duration::try_from_secs_f64(x).map_err(|e| bad(e.to_string()));
    }
    humantime::parse_duration(t).map_err(|e| bad(e.to_string()))
}

/// A duration parameter's value (see [`parse_duration`]).
pub fn duration_of(v: &Val) -> Option<std::time::Duration> {
    match v {
        Val::Str(s) => parse_duration(s).ok(),
        Val::Int(i) if *i >= 0 => Some(std::time::Duration::from_secs(*i as u64)),
        Val::Float(f) if *f >= 0.0 => std::time::Duration::try_from_secs_f64(*f).ok(),
        _ => None,
    }
}

/// Resolves a path parameter: relative to the config's folder when written
/// in the file, to the working directory when given with `--set`.
pub(crate) fn resolve(config: &Path, v: &Sp<Val>) -> PathBuf {
    let Val::Str(s) = &v.v else {
        return PathBuf::new();
    };
    let p = PathBuf::from(s);
    // An object-store URL (`s3://`, `http(s)://`) is taken as written.
    if blockflow_io::remote::is_url(&p) {
        return p;
    }
    if p.is_absolute() || !matches!(v.span, Span::File(_)) {
        return p;
    }
    normalize(&config.parent().map(|d| d.join(&p)).unwrap_or(p))
}

/// Removes `.` and `dir/..` pairs without touching the disk
/// (`configs/../out/a.zarr` -> `out/a.zarr`).
pub(crate) fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}
