//! The registry: names unique, every default a value of its parameter's
//! type, every choice accepted, and every kind plans its example (and
//! plans or refuses, never panics, with each of its choices).

use blockflow_core::DType;

use super::params::check_type;
use super::testing::plan_text;
use super::{PType, KINDS};
use crate::catalog::FakeCatalog;

/// Generated inputs every example may read.
const FIXTURES: &str = r#"
[pipeline]
memory = "64 GiB"
threads = 2
[stage.f32_2d]
kind = "synthetic"
shape = [12, 14]
chunks = [5, 7]
[stage.f32_rgb]
kind = "synthetic"
shape = [12, 14, 3]
chunks = [5, 7, 3]
[stage.u8_stack]
kind = "synthetic"
shape = [4, 6, 7, 3]
chunks = [1, 6, 7, 3]
dtype = "uint8"
[stage.frames]
kind = "synthetic"
shape = [4, 6, 6, 6]
chunks = [1, 6, 6, 6]
dtype = "float64"
[stage.shifts]
kind = "register"
inputs = ["frames"]
[stage.mat]
kind = "synthetic"
shape = [6, 4]
chunks = [3, 4]
dtype = "float64"
[stage.vec4]
kind = "synthetic"
shape = [4]
chunks = [4]
dtype = "float64"
[stage.bands]
kind = "synthetic"
shape = [4, 12]
chunks = [4, 6]
dtype = "float64"
[stage.block_std]
kind = "reduce"
inputs = ["f32_2d"]
op = "std"
over = "blocks"
[stage.best]
kind = "reduce"
inputs = ["block_std"]
op = "argmin"
"#;

/// The stored inputs the examples may read.
fn catalog() -> FakeCatalog {
    let c = FakeCatalog::default();
    c.add_zarr(
        std::path::Path::new("/cfg/in.zarr"),
        DType::F32,
        &[12, 14, 3],
        &[6, 7, 3],
    );
    c.add_hdf5(
        std::path::Path::new("/cfg/in.h5"),
        "data",
        DType::F64,
        &[4, 6, 6],
    );
    c.add_stack("/cfg/t_*.h5", "data", 3, &[6, 6, 6], DType::F64);
    c.add_images("/cfg/img_*.png", 5, &[6, 7, 3], DType::U8);
    c
}

fn config(kind: &str, body: &str) -> String {
    format!("{FIXTURES}[stage.s]\nkind = \"{kind}\"\n{body}\n")
}

#[test]
fn names_are_unique() {
    let mut names: Vec<&str> = KINDS.iter().map(|k| k.kind).collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "a kind is registered twice");
    for k in KINDS {
        let mut params: Vec<&str> = k.params.iter().map(|p| p.name).collect();
        params.sort_unstable();
        let n = params.len();
        params.dedup();
        assert_eq!(params.len(), n, "{}: a parameter is declared twice", k.kind);
        for p in k.params {
            assert!(
                !crate::spec::COMMON.iter().any(|c| c.name == p.name),
                "{}: `{}` is a parameter every stage has",
                k.kind,
                p.name
            );
            assert!(!p.doc.is_empty(), "{}: `{}` has no doc", k.kind, p.name);
        }
    }
}

#[test]
fn every_default_is_a_value_of_its_type() {
    for k in KINDS {
        for p in k.params {
            if let Some(v) = p.default_value() {
                let v = v.unwrap_or_else(|e| panic!("{}: {e}", k.kind));
                check_type(p.ty, &v).unwrap_or_else(|e| {
                    panic!(
                        "{}: the default of `{}` is not a {}: {e}",
                        k.kind,
                        p.name,
                        p.ty.describe()
                    )
                });
            }
        }
    }
}

#[test]
fn every_kind_plans_its_example() {
    let cat = catalog();
    for k in KINDS {
        let plan = plan_text(&config(k.kind, k.example), &cat)
            .unwrap_or_else(|e| panic!("{}: its example does not plan:\n{e}", k.kind));
        let s = plan
            .stages
            .iter()
            .find(|s| s.name == "s")
            .unwrap_or_else(|| panic!("{}: no stage s", k.kind));
        assert_eq!(s.kind.name(), k.kind);
        assert!(s.mem.total() > 0, "{}: projects no memory", k.kind);
        let text = plan.to_text();
        assert!(
            !text.contains("Some("),
            "{}: Debug text in the plan:\n{text}",
            k.kind
        );
    }
}

#[test]
fn every_choice_plans_or_is_refused_with_a_reason() {
    let cat = catalog();
    for k in KINDS {
        for p in k.params {
            let PType::Choice(choices) = p.ty else {
                continue;
            };
            for c in choices {
                let body = format!("{}\n{} = \"{c}\"", without(k.example, p.name), p.name);
                let r = std::panic::catch_unwind(|| plan_text(&config(k.kind, &body), &cat));
                match r {
                    Err(_) => panic!("{}: `{} = \"{c}\"` panics the planner", k.kind, p.name),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => assert!(
                        e.contains("stage \"s\"") && !e.contains("cannot be planned with these"),
                        "{}: `{} = \"{c}\"` is refused without a reason:\n{e}",
                        k.kind,
                        p.name
                    ),
                }
            }
        }
    }
}

/// The example without its line setting `key`.
fn without(example: &str, key: &str) -> String {
    example
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with(&format!("{key} "))
                && !l.trim_start().starts_with(&format!("{key}="))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
