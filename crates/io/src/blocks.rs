//! Small per-block results (counts above a threshold, the blocks of
//! interest) written as JSON and CSV when the run commits.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::output::{Claim, Made};
use crate::IoError;

/// One block's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockStat {
    pub index: Vec<u64>,
    /// Values above the threshold (NaN is not above).
    pub above: u64,
    /// The largest value, NaN ignored (NaN when the block holds only NaN).
    pub max: f64,
}

/// Collects block statistics; [`BlocksWriter::finish`] writes them.
#[derive(Debug)]
pub struct BlocksWriter {
    json: PathBuf,
    csv: Option<PathBuf>,
    claims: Vec<Claim>,
    threshold: f64,
    array_shape: Vec<u64>,
    block_shape: Vec<u64>,
    stats: Vec<BlockStat>,
}

/// Writes `text` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, text: &str) -> Result<(), IoError> {
    write_atomic_bytes(path, text.as_bytes())
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic_bytes(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let os = |source| IoError::Os {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(os)?;
        }
    }
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(os)?;
    std::fs::rename(&tmp, path).map_err(os)
}

impl BlocksWriter {
    pub fn create(
        json: &Path,
        csv: Option<&Path>,
        overwrite: bool,
        threshold: f64,
        array_shape: Vec<u64>,
        block_shape: Vec<u64>,
    ) -> Result<Self, IoError> {
        let mut claims = vec![Claim::take(json, Made::Json, overwrite)?];
        if let Some(c) = csv {
            claims.push(Claim::take(c, Made::Csv, overwrite)?);
        }
        Ok(BlocksWriter {
            json: json.to_path_buf(),
            csv: csv.map(Path::to_path_buf),
            claims,
            threshold,
            array_shape,
            block_shape,
            stats: Vec::new(),
        })
    }

    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    pub fn push(&mut self, s: BlockStat) {
        self.stats.push(s);
    }

    /// The CSV table: a row per block, its index, count above and maximum
    /// (empty when NaN), written by the csv crate.
    fn csv_text(&self) -> Result<Vec<u8>, String> {
        let nd = self.block_shape.len();
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut head: Vec<String> = (0..nd).map(|k| format!("block_{k}")).collect();
        head.extend(["above".to_string(), "max".to_string()]);
        w.write_record(&head).map_err(|e| e.to_string())?;
        for s in &self.stats {
            let mut row: Vec<String> = s.index.iter().map(u64::to_string).collect();
            row.push(s.above.to_string());
            row.push(if s.max.is_nan() {
                String::new()
            } else {
                format!("{}", s.max)
            });
            w.write_record(&row).map_err(|e| e.to_string())?;
        }
        w.into_inner().map_err(|e| e.to_string())
    }

    /// Writes the JSON (and CSV); returns the paths written.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, IoError> {
        self.stats.sort_by(|a, b| a.index.cmp(&b.index));
        let interest: Vec<&BlockStat> = self.stats.iter().filter(|s| s.above > 0).collect();
        let num = |v: f64| if v.is_finite() { json!(v) } else { json!(null) };
        let doc = json!({
            "threshold": self.threshold,
            "array_shape": self.array_shape,
            "block_shape": self.block_shape,
            "blocks": self.stats.len(),
            "blocks_of_interest": interest.iter().map(|s| s.index.clone()).collect::<Vec<_>>(),
            "count": interest.len(),
            "details": interest.iter().map(|s| json!({"index": s.index, "above": s.above, "max": num(s.max)})).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
        self.claims[0].commit_bytes(text.as_bytes())?;
        let mut written = vec![self.json.clone()];
        if let Some(csv) = &self.csv {
            let text = self.csv_text().map_err(|why| IoError::Store {
                path: csv.clone(),
                why,
            })?;
            if let Some(claim) = self.claims.get(1) {
                claim.commit_bytes(&text)?;
            }
            written.push(csv.clone());
        }
        Ok(written)
    }
}
