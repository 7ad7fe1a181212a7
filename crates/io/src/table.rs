//! Small results as a CSV table.

use std::path::Path;

use blockflow_core::{with_array, ArrayData, Element};

use crate::IoError;

/// The CSV text of small arrays of one length N: a row per index, a column
/// per 1-D array (its name) or per column of a 2-D one (`name_0`, ...);
/// integers as integers, floats as Rust's shortest round-trip form.
/// `path` is only for the error.
pub fn csv_table(path: &Path, names: &[String], arrays: &[ArrayData]) -> Result<String, IoError> {
    let n = arrays.first().map_or(0, |a| a.shape()[0]);
    let mut cols: Vec<(String, Vec<String>)> = Vec::new();
    for (name, a) in names.iter().zip(arrays) {
        let width = a.shape().get(1).copied().unwrap_or(1);
        let two_d = a.shape().len() == 2;
        let float = a.dtype().is_float();
        let flat: Vec<String> = with_array!(a, x => x.iter().map(|v| {
            let f = v.to_f64();
            if float { format!("{f:?}") } else { format!("{}", f as i64) }
        }).collect());
        if flat.len() != n * width {
            return Err(IoError::Store {
                path: path.to_path_buf(),
                why: format!(
                    "column \"{name}\" has {} values, expected {}",
                    flat.len(),
                    n * width
                ),
            });
        }
        for c in 0..width {
            let head = if two_d {
                format!("{name}_{c}")
            } else {
                name.clone()
            };
            cols.push((head, (0..n).map(|r| flat[r * width + c].clone()).collect()));
        }
    }
    let store = |why: String| IoError::Store {
        path: path.to_path_buf(),
        why,
    };
    // Quoting (a name with a comma, quote or newline) is the csv crate's:
    // RFC 4180, as Python's csv module and spreadsheets read it.
    let mut w = csv::Writer::from_writer(Vec::new());
    let head = std::iter::once("index").chain(cols.iter().map(|(h, _)| h.as_str()));
    w.write_record(head).map_err(|e| store(e.to_string()))?;
    for r in 0..n {
        let index = r.to_string();
        let row = std::iter::once(index.as_str()).chain(cols.iter().map(|(_, v)| v[r].as_str()));
        w.write_record(row).map_err(|e| store(e.to_string()))?;
    }
    let bytes = w.into_inner().map_err(|e| store(e.to_string()))?;
    let s = String::from_utf8(bytes).map_err(|e| store(e.to_string()))?;
    Ok(s)
}
