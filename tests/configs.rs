//! Every pipeline in `configs/` validates as it is and runs end to end:
//! synthetic inputs shrunk 10x along their first two axes, image stacks
//! replaced by a small generated one, every path redirected into a
//! temporary folder (readers find there what earlier configs wrote).

mod common;

use blockflow_runtime::config::{self, Val};
use common::*;

fn overrides(cfg: &std::path::Path, tmp: &std::path::Path) -> (Vec<String>, bool) {
    let raw = config::load(cfg).expect("loads");
    let mut sets = vec![format!(
        "pipeline.report=\"{}\"",
        tmp.join("report.json").display()
    )];
    let mut reads = false;
    for st in &raw.stages {
        let name = &st.name.v;
        let kind = st.get("kind").map(|v| &v.v);
        if matches!(kind, Some(Val::Str(k)) if k == "read-images") {
            // A small generated stack in place of the shipped one.
            let stack = tmp.join("images");
            if !stack.exists() {
                generate("cells", &stack, 844, 16, 1);
            }
            sets.push(format!("{name}.path=\"{}/*.png\"", stack.display()));
        } else if matches!(kind, Some(Val::Str(k)) if k == "read-hdf5-stack") {
            // A few small generated timepoints.
            let volumes = tmp.join("volumes");
            if !volumes.exists() {
                generate("timeseries", &volumes, 4, 20, 1);
            }
            sets.push(format!("{name}.path=\"{}/t_*.h5\"", volumes.display()));
            if st.get("frame").is_some() {
                sets.push(format!("{name}.frame=[20, 20, 20]"));
            }
        } else if let Some(Val::Str(p)) = st.get("path").map(|v| &v.v) {
            let file = std::path::Path::new(p).file_name().expect("file name");
            sets.push(format!("{name}.path=\"{}\"", tmp.join(file).display()));
        }
        // Regions shrink with the arrays.
        if let Some(Val::Array(r)) = st.get("region").map(|v| &v.v) {
            let vals: Vec<String> = r
                .iter()
                .map(|v| match v.v {
                    Val::Int(n) => (n / 10).to_string(),
                    _ => "0".into(),
                })
                .collect();
            sets.push(format!("{name}.region=[{}]", vals.join(", ")));
        }
        if let Some(Val::Str(k)) = st.get("kind").map(|v| &v.v) {
            reads |= k == "read-zarr" || k == "read-images" || k == "read-hdf5-stack";
            if k == "synthetic" {
                if let Some(Val::Array(shape)) = st.get("shape").map(|v| &v.v) {
                    let dims: Vec<String> = shape
                        .iter()
                        .enumerate()
                        .map(|(i, v)| match v.v {
                            Val::Int(n) if i < 2 => ((n + 9) / 10).to_string(),
                            Val::Int(n) => n.to_string(),
                            _ => "1".into(),
                        })
                        .collect();
                    sets.push(format!("{name}.shape=[{}]", dims.join(", ")));
                }
            }
        }
    }
    (sets, reads)
}

#[test]
fn every_config_validates_and_runs() {
    let dir = root().join("configs");
    let mut configs: Vec<_> = std::fs::read_dir(&dir)
        .expect("configs/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    assert!(configs.len() >= 3, "configs/ holds the pipelines");
    let tmp = tempfile::tempdir().expect("tmp");
    // Writers first, then the configs that read what they wrote.
    let mut planned: Vec<(std::path::PathBuf, Vec<String>, bool)> = configs
        .drain(..)
        .map(|c| {
            let (sets, reads) = overrides(&c, tmp.path());
            (c, sets, reads)
        })
        .collect();
    planned.sort_by_key(|(c, _, reads)| (*reads, c.clone()));
    let mut stale = Vec::new();
    for (cfg, sets, reads) in &planned {
        let c = cfg.to_str().expect("utf8");
        let stem = cfg
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        if !reads {
            // As shipped, without any override.
            let (code, _, err) = blockflow(&["plan", c]);
            assert_eq!(code, 0, "{c} does not validate:\n{err}");
            stale.extend(golden_plan(cfg, &[], &format!("{stem}.shipped")));
        }
        stale.extend(golden_plan(cfg, sets, &stem));
        let (code, _, err) = run_with_sets(cfg, sets);
        assert_eq!(code, 0, "{c} fails with {sets:?}:\n{err}");
    }
    assert!(
        stale.is_empty(),
        "plans differ from tests/golden/plans (rerun with BLOCKFLOW_BLESS=1 to accept a change made on purpose):\n{}",
        stale.join("\n")
    );
}

/// `blockflow plan --json` of a config (two threads, so the plan does not
/// depend on the machine) against `tests/golden/plans/NAME.json`: the same
/// stages, kinds, inputs, dtypes, shapes, grids, parallelism and projected
/// bytes. Returns what differs; `BLOCKFLOW_BLESS=1` writes the file instead.
fn golden_plan(cfg: &std::path::Path, sets: &[String], name: &str) -> Option<String> {
    let c = cfg.to_str().expect("utf8");
    let mut args = vec!["plan", "--json", c, "--set", "pipeline.threads=2"];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let (code, out, err) = blockflow(&args);
    assert_eq!(code, 0, "{c}: plan --json fails:\n{err}");
    let got: serde_json::Value = serde_json::from_str(&out).expect("plan --json prints JSON");
    let file = root()
        .join("tests/golden/plans")
        .join(format!("{name}.json"));
    if std::env::var_os("BLOCKFLOW_BLESS").is_some() {
        std::fs::create_dir_all(file.parent().expect("dir")).expect("golden dir");
        std::fs::write(&file, format!("{got:#}\n")).expect("write golden");
        return None;
    }
    let want = read_json(&file);
    if want == got {
        return None;
    }
    let (ws, gs) = (&want["stages"], &got["stages"]);
    let n = ws
        .as_array()
        .map_or(0, Vec::len)
        .max(gs.as_array().map_or(0, Vec::len));
    let diffs: Vec<String> = (0..n)
        .filter(|&i| ws[i] != gs[i])
        .map(|i| {
            format!(
                "  stage {i}: expected {}\n           got      {}",
                ws[i], gs[i]
            )
        })
        .collect();
    Some(format!(
        "{name}: projected {} -> {}\n{}",
        want["projected"],
        got["projected"],
        diffs.join("\n")
    ))
}

#[test]
fn the_timeseries_config_runs_on_a_longer_series() {
    // Its rechunk takes the whole time axis (-1), so any number of
    // timepoints fits; with [10, 10, 10, 10] a series of 20 was refused
    // ("zscore along axis 0 needs each chunk to hold that axis whole").
    let tmp = tempfile::tempdir().expect("tmp");
    generate("timeseries", &tmp.path().join("volumes"), 20, 12, 4);
    let cfg = root().join("configs/timeseries.toml");
    let (sets, _) = overrides(&cfg, tmp.path());
    let (code, _, err) = run_with_sets(&cfg, &sets);
    assert_eq!(code, 0, "{err}");
    let z = read_all(&tmp.path().join("timeseries-zscore.zarr"));
    assert_eq!(z.shape(), &[20, 12, 12, 12]);
}

/// Runs `configs/NAME.toml` with `--out` into `out` and the given sets
/// (only the input's); panics with its stderr when it fails.
fn run_seed(name: &str, out: &std::path::Path, sets: &[String]) {
    let cfg = root().join(format!("configs/{name}.toml"));
    let mut args = vec![
        "run".to_string(),
        "-q".into(),
        cfg.to_string_lossy().into_owned(),
        "--out".into(),
        out.to_string_lossy().into_owned(),
    ];
    for s in sets {
        args.push("--set".into());
        args.push(s.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = blockflow(&args);
    assert_eq!(code, 0, "{name} with {sets:?}:\n{err}");
}

#[test]
fn every_seed_config_runs_at_two_other_sizes_overriding_only_its_input() {
    // Sizes that are not multiples of the configs' chunks, shorter and
    // longer series, fewer images: nothing but the input is overridden.
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    // Seed 000: the survey image's shape.
    for (k, (h, w)) in [(700usize, 1300usize), (1234, 567)].into_iter().enumerate() {
        let out = t.join(format!("st{k}"));
        run_seed(
            "structure-tensor",
            &out,
            &[format!("img.shape=[{h}, {w}, 3]")],
        );
        assert_eq!(read_all(&out.join("features.zarr")).shape(), &[h, w]);
        for png in ["image.png", "image-block-0-20.png", "features.png"] {
            assert!(out.join(png).is_file(), "{png}");
        }
        assert!(read_json(out.join("blocks-of-interest.json")).is_object());
    }
    // Seed 001: a stack of other length and image size.
    for (k, (n, px)) in [(150usize, 40usize), (260, 72)].into_iter().enumerate() {
        let images = t.join(format!("cells{k}"));
        generate("cells", &images, n, px, 5);
        let out = t.join(format!("c{k}"));
        run_seed(
            "cells",
            &out,
            &[format!("cells.path=\"{}/*.png\"", images.display())],
        );
        assert_eq!(
            read_all(&out.join("cells-modes.zarr")).shape(),
            &[10, px, px, 3]
        );
        let csv = std::fs::read_to_string(out.join("cells-stats.csv")).expect("csv");
        assert_eq!(csv.lines().count(), n + 1, "a header and a row per image");
        assert!(read_json(out.join("cells-summary.json")).is_object());
    }
    // Seed 002: series of other lengths and volume sizes, as a batch and
    // as the ingest's batch run (its declared frame is part of its input).
    for (k, (n, edge)) in [(6usize, 24usize), (13, 40)].into_iter().enumerate() {
        let volumes = t.join(format!("volumes{k}"));
        generate("timeseries", &volumes, n, edge, 9);
        let glob = format!("volumes.path=\"{}/t_*.h5\"", volumes.display());
        let out = t.join(format!("ts{k}"));
        run_seed("timeseries", &out, std::slice::from_ref(&glob));
        let e = edge;
        assert_eq!(
            read_all(&out.join("timeseries-zscore.zarr")).shape(),
            &[n, e, e, e]
        );
        let out = t.join(format!("in{k}"));
        run_seed(
            "ingest",
            &out,
            &[glob, format!("volumes.frame=[{edge}, {edge}, {edge}]")],
        );
        assert_eq!(read_all(&out.join("ingest.zarr")).shape(), &[n, e, e, e]);
    }
    // Seed 003: terrains whose smoothest block may be an edge block.
    for (k, (h, w)) in [(1100usize, 1500usize), (450, 2630)]
        .into_iter()
        .enumerate()
    {
        let out = t.join(format!("el{k}"));
        run_seed("elevation", &out, &[format!("terrain.shape=[{h}, {w}, 4]")]);
        let s = read_json(out.join("elevation-summary.json"));
        let blocks = h.div_ceil(200) * w.div_ceil(200);
        assert!(
            s["smoothest_block"]
                .as_u64()
                .is_some_and(|b| (b as usize) < blocks),
            "{s}"
        );
        assert_eq!(s["zoom_std"].as_array().map(Vec::len), Some(20), "{s}");
        assert_eq!(
            read_all(&out.join("elevation-block-std.zarr")).shape(),
            &[h.div_ceil(200), w.div_ceil(200)]
        );
    }
}
