//! Small results as one JSON document: each named input becomes a number
//! (a one-element array) or nested lists; NaN and infinities become null.

use std::path::{Path, PathBuf};

use blockflow_core::{with_array, ArrayData, Element};
use serde_json::{Map, Value};

use crate::output::{Claim, Made};
use crate::IoError;

/// Collects named arrays; [`JsonWriter::finish`] writes them.
#[derive(Debug)]
pub struct JsonWriter {
    path: PathBuf,
    doc: Map<String, Value>,
    claim: Claim,
}

fn number(v: f64, integer: bool) -> Value {
    if !v.is_finite() {
        Value::Null
    } else if integer {
        Value::from(v as i64)
    } else {
        Value::from(v)
    }
}

fn nest(values: &[Value], shape: &[usize]) -> Value {
    if shape.len() <= 1 {
        return Value::Array(values.to_vec());
    }
    let step = values.len() / shape[0].max(1);
    Value::Array(
        values
            .chunks(step.max(1))
            .map(|c| nest(c, &shape[1..]))
            .collect(),
    )
}

impl JsonWriter {
    pub fn create(path: &Path, overwrite: bool) -> Result<Self, IoError> {
        Ok(JsonWriter {
            path: path.to_path_buf(),
            doc: Map::new(),
            claim: Claim::take(path, Made::Json, overwrite)?,
        })
    }

    /// Adds a whole array under `name`.
    pub fn set(&mut self, name: &str, data: &ArrayData) {
        let integer = !data.dtype().is_float();
        let shape = data.shape().to_vec();
        // int64 exactly (beyond 2^53 a float64 would round it).
        let values: Vec<Value> = match data {
            ArrayData::I64(a) => a.iter().map(|&v| Value::from(v)).collect(),
            _ => with_array!(data, a => a.iter().map(|v| number(v.to_f64(), integer)).collect()),
        };
        let v = if values.len() == 1 {
            values[0].clone()
        } else {
            nest(&values, &shape)
        };
        self.doc.insert(name.to_string(), v);
    }

    /// Adds any JSON value under `name` (coordinates, descriptions).
    pub fn set_value(&mut self, name: &str, v: Value) {
        self.doc.insert(name.to_string(), v);
    }

    pub fn finish(self) -> Result<PathBuf, IoError> {
        let text =
            serde_json::to_string_pretty(&Value::Object(self.doc)).unwrap_or_default() + "\n";
        self.claim.commit_bytes(text.as_bytes())?;
        Ok(self.path)
    }
}
