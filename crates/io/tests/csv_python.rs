//! CSV written by blockflow reads back through Python's `csv` module (the
//! reader pandas and spreadsheets agree with), even where a field holds a
//! comma, a quote and a newline. Needs the system `python3` (standard
//! library only).

use blockflow_core::ArrayData;

/// Python's reading of the CSV file at `path`, row by row.
fn python_rows(path: &std::path::Path) -> Vec<Vec<String>> {
    let script = "import csv, json, sys\nwith open(sys.argv[1], newline='') as f:\n    print(json.dumps(list(csv.reader(f))))";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("this test needs `python3` on PATH (its standard csv module reads the file back): {e}")
        });
    assert!(
        out.status.success(),
        "python3 could not read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python's rows as JSON")
}

#[test]
fn a_field_with_a_comma_a_quote_and_a_newline_round_trips_through_python() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("t.csv");
    let awkward = "data/run 3, \"best\"\nfinal.h5".to_string();
    let names = vec![awkward.clone(), "plain".to_string()];
    let arrays = [
        ArrayData::F64(ndarray::arr1(&[0.5, -2.0]).into_dyn()),
        ArrayData::I64(ndarray::arr1(&[7, 8]).into_dyn()),
    ];
    let bytes = blockflow_io::table::csv_table(&path, &names, &arrays).expect("csv");
    std::fs::write(&path, bytes).expect("write");
    assert_eq!(
        python_rows(&path),
        vec![
            vec!["index".to_string(), awkward, "plain".into()],
            vec!["0".into(), "0.5".into(), "7".into()],
            vec!["1".into(), "-2.0".into(), "8".into()],
        ]
    );
}
