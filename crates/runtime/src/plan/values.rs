//! Values of parameters that are not stage-specific: durations, paths.

use std::path::{Path, PathBuf};

use crate::config::{Sp, Span, Val};

/// A duration: `"2s"`, `"250ms"`, `"1.5 min"`, `"1h"`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim());
    let x: f64 = num
        .parse()
        .map_err(|_| format!("\"{s}\" is not a duration (e.g. \"2s\", \"250ms\", \"5 min\")"))?;
    let scale = match unit {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "ms" => 1e-3,
        "min" | "m" | "minute" | "minutes" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit \"{other}\" in \"{s}\" (use ms, s, min or h)"
            ))
        }
    };
    std::time::Duration::try_from_secs_f64(x * scale).map_err(|e| format!("\"{s}\": {e}"))
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
