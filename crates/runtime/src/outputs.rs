//! What the command line changes about a pipeline's outputs before it is
//! planned: `--skip STAGE` (drop a stage and the writers only it feeds) and
//! `--out DIR` (every relative output, the report and the scratch under
//! one folder).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::config::{ConfigError, Diagnostic, RawConfig, RawStage, Sp, Span, Val};
use crate::stages::{Arity, PType, PathRole};

fn bad(flag: &str, msg: String) -> ConfigError {
    ConfigError::Invalid(vec![Diagnostic {
        location: flag.to_string(),
        offset: usize::MAX,
        stage: None,
        msg,
    }])
}

fn kind_of(st: &RawStage) -> Option<&'static crate::stages::KindDef> {
    match st.get("kind").map(|v| &v.v) {
        Some(Val::Str(k)) => crate::stages::kind(k),
        _ => None,
    }
}

/// Drops the stages `names`, every writer fed only by dropped stages, and
/// a dropped stage's name from the inputs of a writer that takes several
/// (a JSON or CSV of results). A kernel that reads a dropped stage is an
/// error naming both: skip it too.
pub fn skip(raw: &mut RawConfig, names: &[String]) -> Result<(), ConfigError> {
    let mut gone: HashSet<String> = HashSet::new();
    for n in names {
        if !raw.stages.iter().any(|s| &s.name.v == n) {
            let hint =
                blockflow_kernels::did_you_mean(n, raw.stages.iter().map(|s| s.name.v.as_str()))
                    .map(|h| format!("; did you mean `{h}`?"))
                    .unwrap_or_default();
            return Err(bad(
                &format!("--skip {n}"),
                format!("there is no stage `{n}`{hint}"),
            ));
        }
        gone.insert(n.clone());
    }
    loop {
        let mut changed = false;
        for st in &mut raw.stages {
            if gone.contains(&st.name.v) {
                continue;
            }
            let ins = st.input_names();
            let dropped: Vec<&String> = ins.iter().filter(|i| gone.contains(*i)).collect();
            if dropped.is_empty() {
                continue;
            }
            let def = kind_of(st);
            let writer = def.is_some_and(|d| d.role == "writer");
            if writer && dropped.len() == ins.len() {
                gone.insert(st.name.v.clone());
                changed = true;
            } else if writer && def.is_some_and(|d| matches!(d.inputs, Arity::AtLeast(_))) {
                let keep: Vec<Sp<Val>> = ins
                    .iter()
                    .filter(|i| !gone.contains(*i))
                    .map(|i| Sp {
                        v: Val::Str(i.clone()),
                        span: Span::None,
                    })
                    .collect();
                if let Some((_, v)) = st.entries.iter_mut().find(|(k, _)| k.v == "inputs") {
                    v.v = Val::Array(keep);
                }
                changed = true;
            } else {
                return Err(bad(
                    &format!("--skip {}", dropped[0]),
                    format!(
                        "stage `{}` reads `{}`; skip it too, or keep `{}`",
                        st.name.v, dropped[0], dropped[0]
                    ),
                ));
            }
        }
        if !changed {
            break;
        }
    }
    raw.stages.retain(|s| !gone.contains(&s.name.v));
    Ok(())
}

/// The folder a path written in the config means (relative to the
/// config's folder).
fn from_config(raw: &RawConfig, s: &str) -> PathBuf {
    let base = raw.path.parent().unwrap_or_else(|| Path::new("."));
    crate::plan::normalize(&base.join(s))
}

/// Every output written as a relative path in the file, moved under `dir`
/// as it lay under the folder all of them share (seed 000's
/// `../out/features.zarr` becomes `DIR/features.zarr`); the report (unless
/// given on the command line) and the scratch folder (unless the file
/// names one) go there too.
pub fn relocate(raw: &mut RawConfig, dir: &Path) -> Result<(), ConfigError> {
    let dir = crate::paths::absolute(dir);
    // (stage, key, the path it means)
    let mut outs: Vec<(usize, &'static str, PathBuf)> = Vec::new();
    for (i, st) in raw.stages.iter().enumerate() {
        let Some(def) = kind_of(st) else { continue };
        for ps in def.params {
            if !matches!(ps.ty, PType::Path(PathRole::Output)) {
                continue;
            }
            if let Some(Sp {
                v: Val::Str(s),
                span: Span::File(_),
            }) = st.get(ps.name)
            {
                // An object-store URL stays where it is.
                if !s.is_empty()
                    && Path::new(s).is_relative()
                    && !blockflow_io::remote::is_url(Path::new(s))
                {
                    outs.push((i, ps.name, from_config(raw, s)));
                }
            }
        }
    }
    let report = raw
        .pipeline
        .iter()
        .find(|(k, _)| k.v == "report")
        .and_then(|(_, v)| match v {
            Sp {
                v: Val::Str(s),
                span: Span::File(_),
            } if !s.is_empty() && Path::new(s).is_relative() => Some(from_config(raw, s)),
            _ => None,
        });
    let all: Vec<&PathBuf> = outs
        .iter()
        .map(|(_, _, p)| p)
        .chain(report.iter())
        .collect();
    let common = common_folder(&all);
    let moved = |p: &Path| -> PathBuf {
        match &common {
            Some(c) => dir.join(p.strip_prefix(c).unwrap_or(p)),
            None => dir.join(p.file_name().unwrap_or_default()),
        }
    };
    let set = |entries: &mut Vec<(Sp<String>, Sp<Val>)>, key: &str, p: PathBuf| {
        let v = Sp {
            v: Val::Str(p.to_string_lossy().into_owned()),
            span: Span::Set(format!("--out {}", dir.display())),
        };
        match entries.iter_mut().find(|(k, _)| k.v == key) {
            Some((_, old)) => *old = v,
            None => entries.push((
                Sp {
                    v: key.to_string(),
                    span: Span::None,
                },
                v,
            )),
        }
    };
    for (i, key, p) in &outs {
        let to = moved(p);
        set(&mut raw.stages[*i].entries, key, to);
    }
    let value_of = |k: &str| {
        raw.pipeline
            .iter()
            .find(|(key, _)| key.v == k)
            .and_then(|(_, v)| match &v.v {
                Val::Str(s) if !s.is_empty() => Some(s.clone()),
                _ => None,
            })
    };
    // A relative report in the file moves with the outputs; an unset one
    // takes its default name under DIR; one given otherwise stays.
    let report_to = match (report, value_of("report")) {
        (Some(r), _) => Some(moved(&r)),
        (None, None) => {
            let name = value_of("name")
                .or_else(|| {
                    raw.path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| "pipeline".into());
            Some(dir.join(format!("{name}.report.json")))
        }
        (None, Some(_)) => None,
    };
    let keep_scratch = value_of("scratch").is_some();
    if let Some(r) = report_to {
        set(&mut raw.pipeline, "report", r);
    }
    if !keep_scratch {
        set(&mut raw.pipeline, "scratch", dir.clone());
    }
    Ok(())
}

/// The deepest folder holding every path of `paths` (None if none).
fn common_folder(paths: &[&PathBuf]) -> Option<PathBuf> {
    let first = paths.first()?.parent()?.to_path_buf();
    let mut common = first;
    for p in &paths[1..] {
        while !p.starts_with(&common) {
            common = common.parent()?.to_path_buf();
        }
    }
    Some(common)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[pipeline]
report = "../out/p.report.json"
[stage.img]
kind = "synthetic"
shape = [10, 10]
chunks = [5, 5]
[stage.blur]
kind = "filter"
inputs = ["img"]
filter = "gaussian"
sigma = 1.0
[stage.total]
kind = "reduce"
inputs = ["blur"]
op = "sum"
[stage.z]
kind = "write-zarr"
inputs = ["blur"]
path = "../out/blur.zarr"
[stage.png]
kind = "write-png"
inputs = ["img"]
path = "../out/pics/img.png"
[stage.summary]
kind = "write-json"
inputs = ["total", "img"]
path = "/abs/summary.json"
"#;

    fn raw() -> RawConfig {
        crate::config::parse(Path::new("/work/cfg/p.toml"), TEXT).expect("parses")
    }

    fn names(r: &RawConfig) -> Vec<&str> {
        r.stages.iter().map(|s| s.name.v.as_str()).collect()
    }

    #[test]
    fn skip_drops_the_writers_only_it_feeds() {
        let mut r = raw();
        skip(&mut r, &["png".into()]).expect("skips");
        assert_eq!(names(&r), ["img", "blur", "total", "z", "summary"]);
        let mut r = raw();
        skip(&mut r, &["blur".into(), "total".into()]).expect("skips");
        // The Zarr of blur goes; the JSON keeps its other input.
        assert_eq!(names(&r), ["img", "png", "summary"]);
        assert_eq!(r.stages[2].input_names(), ["img"]);
        let e = skip(&mut raw(), &["blur".into()])
            .expect_err("total reads it")
            .to_string();
        assert!(e.contains("stage `total` reads `blur`; skip it too"), "{e}");
        let e = skip(&mut raw(), &["blurr".into()])
            .expect_err("no such stage")
            .to_string();
        assert!(e.contains("did you mean `blur`"), "{e}");
    }

    #[test]
    fn out_moves_relative_outputs_under_one_folder() {
        let mut r = raw();
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("results");
        relocate(&mut r, &dir).expect("relocates");
        let dir = crate::paths::absolute(&dir);
        let path = |stage: &str| match &r
            .stages
            .iter()
            .find(|s| s.name.v == stage)
            .and_then(|s| s.get("path"))
            .map(|v| v.v.clone())
        {
            Some(Val::Str(s)) => PathBuf::from(s),
            _ => PathBuf::new(),
        };
        assert_eq!(path("z"), dir.join("blur.zarr"));
        assert_eq!(path("png"), dir.join("pics/img.png"));
        assert_eq!(
            path("summary"),
            PathBuf::from("/abs/summary.json"),
            "absolute paths stay"
        );
        let report = r
            .pipeline
            .iter()
            .find(|(k, _)| k.v == "report")
            .map(|(_, v)| v.v.clone());
        assert_eq!(
            report,
            Some(Val::Str(
                dir.join("p.report.json").to_string_lossy().into_owned()
            ))
        );
        let scratch = r
            .pipeline
            .iter()
            .find(|(k, _)| k.v == "scratch")
            .map(|(_, v)| v.v.clone());
        assert_eq!(scratch, Some(Val::Str(dir.to_string_lossy().into_owned())));
    }
}
