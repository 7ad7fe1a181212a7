//! The parameters of the `[pipeline]` and `[follow]` tables and those every
//! stage has, and `blockflow stages`: every kind's parameters, from the
//! same declarations the parser checks configs against (see
//! [`crate::stages`]), so the two cannot drift.

pub use crate::stages::params::{p, Arity, PType, ParamSpec, PathRole};

/// Parameters every stage has.
pub const COMMON: &[ParamSpec] = &[
    p(
        "kind",
        PType::Str,
        None,
        "the stage kind (this table's headings)",
    ),
    p(
        "inputs",
        PType::Stages,
        Some(""),
        "the stages whose output this stage consumes, in order",
    ),
    p(
        "capacity",
        PType::Int(1, 1024),
        Some(""),
        "chunks the output channel holds (default: the pipeline's `capacity`)",
    ),
    p(
        "parallel",
        PType::Int(1, 256),
        Some(""),
        "chunks this stage works on at once (default: the pipeline's `threads`)",
    ),
];

/// Parameters of the `[pipeline]` table.
pub const PIPELINE: &[ParamSpec] = &[
    p(
        "name",
        PType::Str,
        Some(""),
        "a name for reports (default: the file's stem)",
    ),
    p(
        "memory",
        PType::Size,
        Some("1 GiB"),
        "the budget: a plan whose projected peak exceeds it is refused",
    ),
    p(
        "threads",
        PType::Int(1, 1024),
        Some(""),
        "compute threads (default: all cores)",
    ),
    p(
        "capacity",
        PType::Int(1, 1024),
        Some("2"),
        "default chunks per channel",
    ),
    p(
        "report",
        PType::Path(PathRole::Other),
        Some(""),
        "where the JSON run report goes (default: <name>.report.json in the working directory)",
    ),
    p(
        "scratch",
        PType::Path(PathRole::Other),
        Some(""),
        "the folder for intermediate stores (a rechunk through disk); default: the folder of the first Zarr output, else the system's temporary folder",
    ),
];

/// Parameters of the `[follow]` table (`blockflow run --follow`).
pub const FOLLOW: &[ParamSpec] = &[
    p(
        "settle",
        PType::Duration,
        Some("2s"),
        "a file counts as complete once its size and modification time have not changed for this long; \"0s\" where files are renamed into place whole",
    ),
    p(
        "poll",
        PType::Duration,
        Some("250ms"),
        "how often the folder is listed",
    ),
    p(
        "quarantine",
        PType::Path(PathRole::Other),
        Some(""),
        "where a file that cannot be read is moved, with a .reason.txt beside it (default: `quarantine/` in the watched folder)",
    ),
    p(
        "state",
        PType::Path(PathRole::Other),
        Some(""),
        "the ingest's folder: manifest.jsonl (every timepoint done, once) and the registration reference (default: <output>.state beside the Zarr output)",
    ),
    p(
        "stats",
        PType::Path(PathRole::Other),
        Some(""),
        "the running per-voxel statistics along time (Welford), a Zarr group with `mean`, `std` (ddof 0) and `m2` (default: <output>.stats beside the Zarr output)",
    ),
    p(
        "checkpoint",
        PType::Duration,
        Some("10s"),
        "how often the statistics (and a write-json of shifts) are written; always on exit",
    ),
    p(
        "idle_exit",
        PType::Duration,
        Some(""),
        "exit (0) once nothing has arrived and nothing is pending for this long (default: run until SIGTERM or Ctrl-C)",
    ),
];

/// The text of `blockflow stages`.
pub fn describe_all() -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let table = |s: &mut String, params: &[ParamSpec]| {
        for prm in params {
            let default = match prm.default {
                None => "required".to_string(),
                Some("") => "optional".to_string(),
                Some(d) => format!("default {d}"),
            };
            let _ = writeln!(
                s,
                "    {:<10} {:<28} {:<16} {}",
                prm.name,
                prm.ty.describe(),
                default,
                prm.doc
            );
        }
    };
    let _ = writeln!(s, "[pipeline]");
    table(&mut s, PIPELINE);
    let _ = writeln!(
        s,
        "\n[follow]  (blockflow run --follow: watch the folder of a read-hdf5-stack stage)"
    );
    table(&mut s, FOLLOW);
    let _ = writeln!(s, "\nevery [stage.NAME]");
    table(&mut s, COMMON);
    for k in crate::stages::KINDS {
        let inputs = match k.inputs {
            Arity::None => "no inputs".to_string(),
            Arity::Exactly(n) => format!("{n} input{}", if n == 1 { "" } else { "s" }),
            Arity::AtLeast(n) => format!("{n} or more inputs"),
        };
        let _ = writeln!(
            s,
            "\nkind = \"{}\"  ({}, {}): {}",
            k.kind, k.role, inputs, k.summary
        );
        table(&mut s, k.params);
        let _ = writeln!(s, "  example:\n    kind = \"{}\"", k.kind);
        for line in k.example.lines() {
            let _ = writeln!(s, "    {line}");
        }
        if k.kind == crate::stages::write_json::KIND.kind {
            let _ = writeln!(s, "  {}", crate::stages::write_json::JSON_DOC);
        }
    }
    let _ = writeln!(s, "\nexpression reference (kind = \"expr\"):");
    for (f, doc) in blockflow_kernels::expr::FUNCTIONS {
        let _ = writeln!(s, "    {f:<52} {doc}");
    }
    s
}
