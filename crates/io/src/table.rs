//! Small results as a CSV table.

use std::fmt::Write as _;
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
    let mut s = String::from("index");
    for (h, _) in &cols {
        let _ = write!(s, ",{h}");
    }
    s.push('\n');
    for r in 0..n {
        let _ = write!(s, "{r}");
        for (_, v) in &cols {
            let _ = write!(s, ",{}", v[r]);
        }
        s.push('\n');
    }
    Ok(s)
}
