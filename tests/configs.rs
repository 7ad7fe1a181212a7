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
    for (cfg, sets, reads) in &planned {
        let c = cfg.to_str().expect("utf8");
        if !reads {
            // As shipped, without any override.
            let (code, _, err) = blockflow(&["plan", c]);
            assert_eq!(code, 0, "{c} does not validate:\n{err}");
        }
        let (code, _, err) = run_with_sets(cfg, sets);
        assert_eq!(code, 0, "{c} fails with {sets:?}:\n{err}");
    }
}
