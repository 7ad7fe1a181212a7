//! The manifest: the ingest's commit record, one line per file done.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::{state_err, FollowError};

/// One line of the manifest.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Entry {
    pub(super) file: String,
    /// "ingested" or "quarantined".
    pub(super) status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) t: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) shift: Option<Vec<f64>>,
    /// Unix seconds: when the ingest first saw the file, and when its
    /// timepoint was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) seen: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) written: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) latency_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) moved_to: Option<String>,
}

pub(super) fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The manifest: a header line, then one line per file done, appended.
pub(super) struct Manifest {
    pub(super) path: PathBuf,
    pub(super) file: std::fs::File,
    /// Names of the files done (ingested or quarantined).
    pub(super) done: HashSet<String>,
    pub(super) ingested: u64,
    pub(super) quarantined: u64,
    /// Shifts of the ingested timepoints, kept only for a write-json sink.
    pub(super) shifts: Option<Vec<Vec<f64>>>,
    /// Quarantined files as recorded when opened: (file, moved_to).
    pub(super) quarantined_files: Vec<(String, String)>,
}

impl Manifest {
    /// Opens (or starts) the manifest in `dir`. `header` describes the
    /// stream; an existing manifest must have been made for the same one.
    pub(super) fn open(
        dir: &Path,
        header: &Value,
        keep_shifts: bool,
    ) -> Result<Manifest, FollowError> {
        std::fs::create_dir_all(dir).map_err(|e| state_err(dir, e.to_string()))?;
        let path = dir.join("manifest.jsonl");
        let mut rec = Recorded {
            shifts: keep_shifts.then(Vec::new),
            ..Recorded::default()
        };
        if path.exists() {
            let (good_len, has_header) = rec.read(&path, header)?;
            cut_torn(&path, good_len, has_header)?;
        }
        let file = open_for_append(&path, header)?;
        Ok(Manifest {
            path,
            file,
            done: rec.done,
            ingested: rec.ingested,
            quarantined: rec.quarantined,
            shifts: rec.shifts,
            quarantined_files: rec.quarantined_files,
        })
    }

    /// Appends one record in one write, and syncs it.
    pub(super) fn append(&mut self, e: &Entry) -> Result<(), FollowError> {
        let line = serde_json::to_string(e).unwrap_or_default() + "\n";
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.sync_data())
            .map_err(|err| state_err(&self.path, err.to_string()))?;
        self.done.insert(e.file.clone());
        if e.status == "ingested" {
            self.ingested += 1;
            if let Some(s) = self.shifts.as_mut() {
                s.push(e.shift.clone().unwrap_or_default());
            }
        } else {
            self.quarantined += 1;
        }
        Ok(())
    }
}

/// What an existing manifest records (the fields of [`Manifest`] but its
/// file).
#[derive(Default)]
struct Recorded {
    done: HashSet<String>,
    ingested: u64,
    quarantined: u64,
    shifts: Option<Vec<Vec<f64>>>,
    quarantined_files: Vec<(String, String)>,
}

impl Recorded {
    /// Reads the manifest at `path`, checking its header against `header`
    /// and its records' sequence. Returns the bytes of its whole lines (a
    /// torn last line, cut short by a kill, is left out) and whether it has
    /// a header line.
    fn read(&mut self, path: &Path, header: &Value) -> Result<(u64, bool), FollowError> {
        let f = std::fs::File::open(path).map_err(|e| state_err(path, e.to_string()))?;
        let mut good_len = 0u64;
        let mut lines = std::io::BufReader::new(f).split(b'\n').peekable();
        let mut first = true;
        let mut lineno = 0;
        while let Some(line) = lines.next() {
            lineno += 1;
            let line = line.map_err(|e| state_err(path, e.to_string()))?;
            let last = lines.peek().is_none();
            let parsed: Result<Value, _> = serde_json::from_slice(&line);
            let v = match parsed {
                Ok(v) => v,
                // A line cut short by a kill: the record was never made.
                Err(_) if last => break,
                Err(e) => {
                    return Err(state_err(
                        path,
                        format!("line {lineno} is not JSON ({e}); the manifest is damaged"),
                    ))
                }
            };
            if first {
                first = false;
                check_header(path, &v, header)?;
            } else {
                self.record(path, lineno, v)?;
            }
            good_len += line.len() as u64 + 1;
        }
        Ok((good_len, !first))
    }

    /// Takes in the record on line `lineno`.
    fn record(&mut self, path: &Path, lineno: usize, v: Value) -> Result<(), FollowError> {
        let e: Entry = serde_json::from_value(v)
            .map_err(|e| state_err(path, format!("line {lineno}: {e}")))?;
        if e.status == "ingested" {
            if e.t != Some(self.ingested) {
                return Err(state_err(
                    path,
                    format!(
                        "line {lineno} records timepoint {:?} where {} comes next; the manifest is damaged",
                        e.t, self.ingested
                    ),
                ));
            }
            self.ingested += 1;
            if let Some(s) = self.shifts.as_mut() {
                s.push(e.shift.clone().unwrap_or_default());
            }
        } else {
            self.quarantined += 1;
            if let Some(to) = &e.moved_to {
                self.quarantined_files.push((e.file.clone(), to.clone()));
            }
        }
        if !self.done.insert(e.file.clone()) {
            return Err(state_err(
                path,
                format!("line {lineno}: {} is recorded twice", e.file),
            ));
        }
        Ok(())
    }
}

/// Refuses a manifest made for another stream than `header`'s.
fn check_header(path: &Path, found: &Value, header: &Value) -> Result<(), FollowError> {
    for key in ["dataset", "frame", "dtype"] {
        if found.get(key) != header.get(key) {
            return Err(state_err(
                path,
                format!(
                    "this state was made for {key} {}, but the pipeline now reads {key} {}; point [follow] state at a new folder",
                    found.get(key).unwrap_or(&Value::Null),
                    header.get(key).unwrap_or(&Value::Null)
                ),
            ));
        }
    }
    Ok(())
}

/// Cuts a torn last line so the next record starts on its own line; removes
/// a manifest without a header, to be started again.
fn cut_torn(path: &Path, good_len: u64, has_header: bool) -> Result<(), FollowError> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| state_err(path, e.to_string()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if good_len < len {
        f.set_len(good_len)
            .map_err(|e| state_err(path, e.to_string()))?;
    }
    if !has_header {
        // Empty file: the header is written when it is opened again.
        drop(f);
        std::fs::remove_file(path).map_err(|e| state_err(path, e.to_string()))?;
    }
    Ok(())
}

/// Opens the manifest to append to, starting it with `header` if it is new.
fn open_for_append(path: &Path, header: &Value) -> Result<std::fs::File, FollowError> {
    let fresh = !path.exists();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| state_err(path, e.to_string()))?;
    if fresh {
        let line = serde_json::to_string(header).unwrap_or_default() + "\n";
        file.write_all(line.as_bytes())
            .and_then(|_| file.sync_data())
            .map_err(|e| state_err(path, e.to_string()))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(file: &str, t: Option<u64>) -> Entry {
        Entry {
            file: file.into(),
            status: if t.is_some() {
                "ingested"
            } else {
                "quarantined"
            }
            .into(),
            t,
            bytes: None,
            shift: t.map(|t| vec![t as f64, 0.0]),
            seen: None,
            written: None,
            latency_s: None,
            reason: None,
            moved_to: t.is_none().then(|| "q/x".to_string()),
        }
    }

    #[test]
    fn manifest_survives_a_torn_last_line_and_refuses_damage() {
        let dir = tempfile::tempdir().expect("tmp");
        let header = json!({"dataset": "data", "frame": [2, 2], "dtype": "float64"});
        {
            let mut m = Manifest::open(dir.path(), &header, true).expect("new");
            m.append(&entry("a.h5", Some(0))).expect("a");
            m.append(&entry("bad.h5", None)).expect("bad");
            m.append(&entry("b.h5", Some(1))).expect("b");
        }
        let path = dir.path().join("manifest.jsonl");
        // A kill in the middle of a record.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(br#"{"file":"c.h5","sta"#).expect("torn");
        drop(f);
        let mut m = Manifest::open(dir.path(), &header, true).expect("reopen");
        assert_eq!((m.ingested, m.quarantined), (2, 1));
        assert!(m.done.contains("bad.h5") && !m.done.contains("c.h5"));
        assert_eq!(m.shifts.as_ref().map(Vec::len), Some(2));
        assert_eq!(m.quarantined_files, vec![("bad.h5".into(), "q/x".into())]);
        m.append(&entry("c.h5", Some(2))).expect("c");
        drop(m);
        let m = Manifest::open(dir.path(), &header, false).expect("again");
        assert_eq!(m.ingested, 3);

        // Another stream's state is refused, naming what differs.
        let other = json!({"dataset": "data", "frame": [3, 3], "dtype": "float64"});
        let err = Manifest::open(dir.path(), &other, false)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("frame"), "{err}");

        // A timepoint out of sequence is damage, not something to guess at.
        let text = std::fs::read_to_string(&path).expect("read");
        let bad = text.replace("\"t\":1", "\"t\":5");
        std::fs::write(&path, bad).expect("write");
        let err = Manifest::open(dir.path(), &header, false)
            .err()
            .expect("damaged");
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
