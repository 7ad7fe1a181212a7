//! The OME-Zarr metadata blockflow writes, validated against the NGFF
//! JSON schemas of 0.4 and 0.5 (`tests/fixtures/ngff/`, from
//! github.com/ome/ngff-spec; see the README there): the plain and the
//! strict image schema, for images with and without channels, units, a
//! custom (stack) axis, every downsampling.

use std::path::{Path, PathBuf};

use blockflow_core::{ArrayData, ChunkGrid, DType};
use blockflow_io::ome::{Downsample, NgffVersion, OmeOptions, OmeWriter};
use blockflow_io::zarr::ZarrWriteOptions;
use ndarray::{ArrayD, IxDyn};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/ngff")
}

/// Resolves the schemas' `$ref`s to `https://ngff.openmicroscopy.org/V/schemas/NAME`
/// from the fixtures (no network).
struct Fixtures;

impl jsonschema::Retrieve for Fixtures {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let s = uri.as_str();
        let rest = s
            .strip_prefix("https://ngff.openmicroscopy.org/")
            .ok_or_else(|| format!("not an NGFF schema: {s}"))?;
        let (version, name) = rest
            .split_once("/schemas/")
            .ok_or_else(|| format!("not an NGFF schema: {s}"))?;
        let text = std::fs::read_to_string(fixtures().join(version).join(name))?;
        Ok(serde_json::from_str(&text)?)
    }
}

fn validator(version: &str, name: &str) -> jsonschema::Validator {
    let text =
        std::fs::read_to_string(fixtures().join(version).join(name)).expect("schema fixture");
    let schema: Value = serde_json::from_str(&text).expect("schema JSON");
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .with_retriever(Fixtures)
        .build(&schema)
        .expect("schema compiles")
}

/// The errors of `doc` against the image and strict image schemas.
fn errors(version: &str, doc: &Value) -> Vec<String> {
    ["image.schema", "strict_image.schema"]
        .iter()
        .flat_map(|s| {
            validator(version, s)
                .iter_errors(doc)
                .map(|e| format!("{s}: {e} at {}", e.instance_path()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Writes an image of `shape` (stream order, axes `axes`) and returns its
/// group attributes as a reader finds them.
fn written(
    dir: &Path,
    version: NgffVersion,
    axes: &[&str],
    shape: &[u64],
    dtype: DType,
    how: Downsample,
    units: bool,
) -> Value {
    let chunks: Vec<u64> = shape.iter().map(|&n| n.div_ceil(2)).collect();
    let array = ZarrWriteOptions::plain(3, dtype, shape.to_vec(), chunks.clone());
    let names: Vec<String> = axes.iter().map(|s| s.to_string()).collect();
    let mut o = OmeOptions::image(version, array, &names, Some(3), how).expect("options");
    o.name = "test".into();
    if units {
        for (a, n) in o.names.clone().iter().enumerate() {
            if ["z", "y", "x"].contains(&n.as_str()) {
                o.units[a] = Some("micrometer".into());
                o.scale[a] = 0.25;
            }
        }
    }
    let path = dir.join(format!("{}-{}.zarr", version.name(), axes.join("")));
    let w = OmeWriter::create(&path, &o).expect("create");
    let grid = ChunkGrid::new(shape.to_vec(), chunks).expect("grid");
    for index in grid.indices() {
        let r = grid.region(&index);
        let data = ArrayData::F64(ArrayD::from_elem(IxDyn(&r.shape_usize()), 3.0)).cast(dtype);
        w.write(&r, &data, &index).expect("write");
    }
    w.finish().expect("finish");
    match version {
        NgffVersion::V05 => {
            let meta: Value = serde_json::from_str(
                &std::fs::read_to_string(path.join("zarr.json")).expect("zarr.json"),
            )
            .expect("json");
            meta["attributes"].clone()
        }
        NgffVersion::V04 => {
            serde_json::from_str(&std::fs::read_to_string(path.join(".zattrs")).expect(".zattrs"))
                .expect("json")
        }
    }
}

/// Axes, shape, dtype, downsampling, units.
type Case = (
    &'static [&'static str],
    &'static [u64],
    DType,
    Downsample,
    bool,
);

#[test]
fn written_metadata_validates_against_the_ngff_schemas() {
    let dir = tempfile::tempdir().expect("tmp");
    let cases: &[Case] = &[
        (&["y", "x"], &[20, 18], DType::F64, Downsample::Mean, false),
        (
            &["y", "x", "c"],
            &[16, 12, 3],
            DType::U8,
            Downsample::Mean,
            true,
        ),
        (
            &["t", "z", "y", "x"],
            &[2, 8, 9, 7],
            DType::F32,
            Downsample::Mean,
            true,
        ),
        (
            &["image", "y", "x", "c"],
            &[3, 8, 8, 4],
            DType::U8,
            Downsample::Nearest,
            false,
        ),
        (
            &["z", "y", "x"],
            &[6, 10, 10],
            DType::U16,
            Downsample::Mode,
            true,
        ),
    ];
    let mut checked = 0;
    for version in [NgffVersion::V05, NgffVersion::V04] {
        for (axes, shape, dtype, how, units) in cases {
            let attrs = written(dir.path(), version, axes, shape, *dtype, *how, *units);
            let errs = errors(version.name(), &attrs);
            assert!(
                errs.is_empty(),
                "NGFF {} {axes:?}: {errs:#?}\n{attrs:#}",
                version.name()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 10);
}

#[test]
fn the_schemas_refuse_what_ngff_forbids() {
    // The validators bite: the written metadata, broken as NGFF forbids.
    let dir = tempfile::tempdir().expect("tmp");
    let good = written(
        dir.path(),
        NgffVersion::V05,
        &["y", "x"],
        &[8, 8],
        DType::F32,
        Downsample::Mean,
        false,
    );
    assert!(errors("0.5", &good).is_empty());
    let mut one_space_axis = good.clone();
    one_space_axis["ome"]["multiscales"][0]["axes"][0]["type"] = "channel".into();
    assert!(!errors("0.5", &one_space_axis).is_empty());
    let mut no_datasets = good.clone();
    no_datasets["ome"]["multiscales"][0]["datasets"] = Value::Array(vec![]);
    assert!(!errors("0.5", &no_datasets).is_empty());
    let mut wrong_version = good.clone();
    wrong_version["ome"]["version"] = "0.4".into();
    assert!(!errors("0.5", &wrong_version).is_empty());
    let mut no_name = good;
    no_name["ome"]["multiscales"][0]
        .as_object_mut()
        .expect("object")
        .remove("name");
    let errs = errors("0.5", &no_name);
    assert!(
        errs.iter().all(|e| e.starts_with("strict_image")) && !errs.is_empty(),
        "{errs:?}"
    );
    // 0.4 puts the version in each multiscale.
    let v04 = written(
        dir.path(),
        NgffVersion::V04,
        &["y", "x"],
        &[8, 8],
        DType::F32,
        Downsample::Mean,
        false,
    );
    let mut bad = v04;
    bad["multiscales"][0]["version"] = "0.5".into();
    assert!(!errors("0.4", &bad).is_empty());
}
