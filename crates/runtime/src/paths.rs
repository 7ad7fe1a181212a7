//! The paths of one config checked against each other before anything
//! runs: no two outputs on one path or one inside another, no output on an
//! input or on the config file (or a folder holding either), the report and
//! the scratch folder on no output or input, no empty path.

use std::path::{Path, PathBuf};

use crate::config::{Diags, RawConfig, Sp, Span, Val};
use crate::plan::{normalize, resolve};
use crate::stages::params::{PType, PathRole};

/// What a path is to the run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Output,
    Input,
    /// A glob of input files: only its folder and its pattern are known.
    InputGlob,
}

struct Named {
    role: Role,
    /// The absolute path, symbolic links of its existing part resolved.
    abs: PathBuf,
    /// As the config wrote it, for messages.
    shown: String,
    stage: Option<String>,
    span: Span,
}

/// `p` absolute, with the longest existing prefix canonicalised (so a
/// symbolic link or `..` through one compares as the real folder).
pub(crate) fn absolute(p: &Path) -> PathBuf {
    // A URL compares as written (less a trailing `/`): by its components,
    // `s3://b/p/x` is inside `s3://b/p`, and never a local path.
    if let Some(url) = blockflow_io::remote::url_of(p) {
        return PathBuf::from(url);
    }
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let abs = normalize(&abs);
    let mut head = abs.clone();
    let mut tail: Vec<std::ffi::OsString> = Vec::new();
    loop {
        if let Ok(c) = head.canonicalize() {
            let mut out = c;
            for t in tail.iter().rev() {
                out.push(t);
            }
            return out;
        }
        match (head.file_name().map(|n| n.to_os_string()), head.parent()) {
            (Some(n), Some(parent)) => {
                tail.push(n);
                head = parent.to_path_buf();
            }
            _ => return abs,
        }
    }
}

/// The folder and file-name pattern of a glob.
fn glob_parts(p: &Path) -> (PathBuf, String) {
    let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (dir, name)
}

/// Checks the config's paths; every conflict is a diagnostic at the path
/// parameter's location.
pub(crate) fn check(d: &mut Diags<'_>, raw: &RawConfig) {
    let named = collect(d, raw);
    let config = absolute(&raw.path);
    let outputs: Vec<&Named> = named.iter().filter(|n| n.role == Role::Output).collect();
    let inputs: Vec<&Named> = named.iter().filter(|n| n.role != Role::Output).collect();
    check_outputs_apart(d, &outputs);
    check_outputs_off_inputs(d, raw, &config, &outputs, &inputs);
    check_report(d, raw, &config, &named);
    check_scratch(d, raw, &named);
}

/// The paths the stages read and write; an empty one is a diagnostic.
fn collect(d: &mut Diags<'_>, raw: &RawConfig) -> Vec<Named> {
    let mut named: Vec<Named> = Vec::new();
    let mut add = |d: &mut Diags<'_>, role: Role, stage: &str, v: &Sp<Val>| {
        let Val::Str(s) = &v.v else { return };
        if s.trim().is_empty() {
            d.err(
                &v.span,
                Some(stage),
                "an empty path; name the file or folder to use",
            );
            return;
        }
        let p = resolve(&raw.path, v);
        named.push(Named {
            role,
            abs: absolute(&p),
            shown: s.clone(),
            stage: Some(stage.to_string()),
            span: v.span.clone(),
        });
    };
    for st in &raw.stages {
        let Some(Val::Str(kind)) = st.get("kind").map(|v| &v.v) else {
            continue;
        };
        let Some(def) = crate::stages::kind(kind) else {
            continue;
        };
        let name = st.name.v.as_str();
        // Every path parameter the kind declares, by what it names.
        for spec in def.params {
            let role = match spec.ty {
                PType::Path(PathRole::Output) => Role::Output,
                PType::Path(PathRole::Input) => Role::Input,
                PType::Path(PathRole::InputGlob) => Role::InputGlob,
                _ => continue,
            };
            let given = st.get(spec.name).filter(|v| {
                // An optional output left empty is not written.
                !(spec.default.is_some() && matches!(&v.v, Val::Str(s) if s.is_empty()))
            });
            if let Some(v) = given {
                add(d, role, name, v);
            }
        }
    }
    named
}

/// Outputs against each other: no two on one path or one inside another.
fn check_outputs_apart(d: &mut Diags<'_>, outputs: &[&Named]) {
    for (i, a) in outputs.iter().enumerate() {
        for b in &outputs[i + 1..] {
            let why = if a.abs == b.abs {
                Some("the same path")
            } else if a.abs.starts_with(&b.abs) || b.abs.starts_with(&a.abs) {
                Some("one inside the other")
            } else {
                None
            };
            if let Some(why) = why {
                for (x, y) in [(a, b), (b, a)] {
                    d.err(
                        &x.span,
                        x.stage.as_deref(),
                        format!(
                            "output \"{}\" and the output of stage \"{}\" (\"{}\") are {why}; each output needs a path of its own",
                            x.shown,
                            y.stage.as_deref().unwrap_or("?"),
                            y.shown
                        ),
                    );
                }
            }
        }
    }
}

/// Outputs against inputs and the config file (`config`, absolute).
fn check_outputs_off_inputs(
    d: &mut Diags<'_>,
    raw: &RawConfig,
    config: &Path,
    outputs: &[&Named],
    inputs: &[&Named],
) {
    for o in outputs {
        for i in inputs {
            let clash = match i.role {
                Role::InputGlob => {
                    let (dir, pattern) = glob_parts(&i.abs);
                    let name = o
                        .abs
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    dir.starts_with(&o.abs)
                        || (o.abs.parent() == Some(dir.as_path())
                            && blockflow_io::images::glob_matches(&pattern, &name))
                }
                _ => o.abs == i.abs || i.abs.starts_with(&o.abs) || o.abs.starts_with(&i.abs),
            };
            if clash {
                d.err(
                    &o.span,
                    o.stage.as_deref(),
                    format!(
                        "output \"{}\" would write over the input of stage \"{}\" (\"{}\"); write the output elsewhere",
                        o.shown,
                        i.stage.as_deref().unwrap_or("?"),
                        i.shown
                    ),
                );
            }
        }
        if config.starts_with(&o.abs) {
            d.err(
                &o.span,
                o.stage.as_deref(),
                format!(
                    "output \"{}\" is the config file {} or a folder holding it; write the output elsewhere",
                    o.shown,
                    raw.path.display()
                ),
            );
        }
    }
}

/// The `[pipeline]` entry `k`, if the config sets it.
fn pipeline_entry<'r>(raw: &'r RawConfig, k: &str) -> Option<&'r Sp<Val>> {
    raw.pipeline
        .iter()
        .find(|(kk, _)| kk.v == k)
        .map(|(_, v)| v)
}

/// The report: not empty, not on an output or input, not the config file.
fn check_report(d: &mut Diags<'_>, raw: &RawConfig, config: &Path, named: &[Named]) {
    let Some(v) = pipeline_entry(raw, "report") else {
        return;
    };
    let Val::Str(s) = &v.v else { return };
    if s.trim().is_empty() {
        d.err(&v.span, None, "an empty report path; name the JSON file");
        return;
    }
    let r = absolute(&resolve(&raw.path, v));
    let hit = named
        .iter()
        .find(|n| r == n.abs || (n.role == Role::Output && r.starts_with(&n.abs)))
        .map(|n| (n.role, n.shown.clone(), n.stage.clone()));
    if let Some((role, shown, stage)) = hit {
        d.err(
            &v.span,
            None,
            format!(
                "the report \"{s}\" is on the {} of stage \"{}\" (\"{shown}\"); give it a path of its own",
                if role == Role::Output { "output" } else { "input" },
                stage.as_deref().unwrap_or("?")
            ),
        );
    } else if r == config {
        d.err(
            &v.span,
            None,
            format!("the report \"{s}\" would replace the config file itself"),
        );
    }
}

/// The scratch folder: not inside an output or input.
fn check_scratch(d: &mut Diags<'_>, raw: &RawConfig, named: &[Named]) {
    let Some(v) = pipeline_entry(raw, "scratch") else {
        return;
    };
    let Val::Str(s) = &v.v else { return };
    if s.trim().is_empty() {
        return;
    }
    let sc = absolute(&resolve(&raw.path, v));
    let hit = named.iter().find(|n| match n.role {
        Role::Output => sc.starts_with(&n.abs),
        Role::Input => sc == n.abs || sc.starts_with(&n.abs),
        Role::InputGlob => false,
    });
    if let Some(n) = hit {
        d.err(
            &v.span,
            None,
            format!(
                "the scratch folder \"{s}\" is inside the {} of stage \"{}\" (\"{}\"); scratch stores would be written into it",
                if n.role == Role::Output { "output" } else { "input" },
                n.stage.as_deref().unwrap_or("?"),
                n.shown
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("p.toml");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mk");
        std::fs::write(&path, text).expect("write");
        let raw = crate::config::parse(&path, text).expect("parses");
        let mut d = Diags::new(&path, text);
        check(&mut d, &raw);
        d.list.iter().map(|x| x.to_string()).collect()
    }

    const HEAD: &str = "[pipeline]\nname = \"t\"\n[stage.a]\nkind = \"synthetic\"\n";

    #[test]
    fn two_outputs_on_one_path_or_nested_are_refused() {
        let e = errors(&format!(
            "{HEAD}[stage.w1]\nkind = \"write-zarr\"\ninputs = [\"a\"]\npath = \"o.zarr\"\n[stage.w2]\nkind = \"write-zarr\"\ninputs = [\"a\"]\npath = \"./o.zarr\"\n"
        ));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("the same path"), "{e:?}");
        assert!(e[0].contains("p.toml:8:8:"), "file:line:col: {e:?}");
        let e = errors(&format!(
            "{HEAD}[stage.w1]\nkind = \"write-zarr\"\ninputs = [\"a\"]\npath = \"o.zarr\"\n[stage.w2]\nkind = \"write-json\"\ninputs = [\"a\"]\npath = \"o.zarr/x.json\"\n"
        ));
        assert!(
            e.iter().any(|x| x.contains("one inside the other")),
            "{e:?}"
        );
    }

    #[test]
    fn outputs_on_inputs_the_config_or_its_folder_are_refused() {
        let e = errors(&format!(
            "{HEAD}[stage.r]\nkind = \"read-zarr\"\npath = \"in.zarr\"\n[stage.w]\nkind = \"write-zarr\"\ninputs = [\"r\"]\npath = \"in.zarr\"\n"
        ));
        assert!(e.iter().any(|x| x.contains("over the input")), "{e:?}");
        for p in ["..", ".", "p.toml", ""] {
            let e = errors(&format!(
                "{HEAD}[stage.w]\nkind = \"write-zarr\"\ninputs = [\"a\"]\npath = \"{p}\"\nif_exists = \"overwrite\"\n"
            ));
            assert_eq!(e.len(), 1, "{p}: {e:?}");
        }
        let e = errors(&format!(
            "{HEAD}[stage.r]\nkind = \"read-images\"\npath = \"cells/*.png\"\n[stage.w]\nkind = \"write-png\"\ninputs = [\"a\"]\npath = \"cells/new.png\"\n"
        ));
        assert!(e.iter().any(|x| x.contains("over the input")), "{e:?}");
        let e = errors(&format!(
            "{HEAD}[stage.r]\nkind = \"read-images\"\npath = \"cells/*.png\"\n[stage.w]\nkind = \"write-zarr\"\ninputs = [\"a\"]\npath = \"cells/out.zarr\"\n"
        ));
        assert!(e.is_empty(), "beside the inputs, not matching: {e:?}");
    }

    #[test]
    fn urls_are_checked_as_written_against_each_other() {
        let conf = |input: &str, output: &str| {
            errors(&format!(
                "{HEAD}[stage.r]\nkind = \"read-zarr\"\npath = \"{input}\"\n[stage.w]\nkind = \"write-zarr\"\ninputs = [\"r\"]\npath = \"{output}\"\n"
            ))
        };
        for (i, o) in [
            ("s3://b/in.zarr", "s3://b/in.zarr"),
            ("s3://b/in.zarr", "s3://b/in.zarr/"),
            ("s3://b/in.zarr/x", "s3://b/in.zarr"),
            ("s3://b/d", "s3://b/d/out.zarr"),
        ] {
            let e = conf(i, o);
            assert!(
                e.len() == 1 && e[0].contains("over the input"),
                "{i} -> {o}: {e:?}"
            );
        }
        for (i, o) in [
            ("s3://b/in.zarr", "s3://b/in.zarr2"),
            ("s3://b/in.zarr", "s3://c/in.zarr"),
            ("in.zarr", "s3://b/in.zarr"),
            ("https://h/b/in.zarr", "s3://b/out.zarr"),
        ] {
            assert!(conf(i, o).is_empty(), "{i} -> {o}: {:?}", conf(i, o));
        }
    }

    #[test]
    fn the_report_and_scratch_stay_off_outputs_and_inputs() {
        let e = errors(
            "[pipeline]\nname = \"t\"\nreport = \"o.zarr\"\nscratch = \"o.zarr/tmp\"\n[stage.a]\nkind = \"synthetic\"\n[stage.w]\nkind = \"write-zarr\"\ninputs = [\"a\"]\npath = \"o.zarr\"\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("the report"), "{e:?}");
        assert!(e[1].contains("scratch"), "{e:?}");
    }
}
