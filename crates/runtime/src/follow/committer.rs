//! The committer: appends finished timepoints in order, keeps the
//! manifest, the running statistics and the registration reference.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use blockflow_core::{with_array, ArrayData, ArrayKind, DType, Region};
use blockflow_io::json::JsonWriter;
use blockflow_io::zarr::{Codec, ZarrAppender, ZarrReader, ZarrWriteOptions, ZarrWriter};
use blockflow_io::IoError;
use blockflow_kernels::zscore::Welford;
use ndarray::{ArrayD, Axis, IxDyn};
use serde_json::{json, Value};

use super::manifest::{unix, Entry, Manifest};
use super::program::{Job, Outcome, Program};
use super::{state_err, FollowError, IngestStatus};

/// Latencies in logarithmic buckets (50 per decade, 0.1 ms to 1e5 s):
/// quantiles within about 2.3% in constant memory, however long the run.
pub(super) struct Latencies {
    pub(super) counts: Vec<u64>,
    pub(super) n: u64,
    pub(super) max: f64,
}

pub(super) const LAT_MIN: f64 = 1e-4;
pub(super) const LAT_PER_DECADE: f64 = 50.0;
pub(super) const LAT_BUCKETS: usize = 9 * 50;

impl Latencies {
    pub(super) fn new() -> Self {
        Latencies {
            counts: vec![0; LAT_BUCKETS],
            n: 0,
            max: 0.0,
        }
    }
    pub(super) fn push(&mut self, s: f64) {
        let b = ((s.max(LAT_MIN) / LAT_MIN).log10() * LAT_PER_DECADE) as usize;
        self.counts[b.min(LAT_BUCKETS - 1)] += 1;
        self.n += 1;
        self.max = self.max.max(s);
    }
    pub(super) fn quantile(&self, q: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let want = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                let mid = LAT_MIN * 10f64.powf((b as f64 + 0.5) / LAT_PER_DECADE);
                return mid.min(self.max);
            }
        }
        self.max
    }
}

/// State shared between the scanner, the workers and the committer.
pub(super) struct Shared {
    pub(super) in_flight: AtomicU64,
    /// Set by the committer when it fails: the scanner stops.
    pub(super) failed: AtomicBool,
    pub(super) reference_ready: AtomicBool,
    pub(super) status: std::sync::Mutex<IngestStatus>,
}

/// The committer: appends finished timepoints in order.
pub(super) struct Committer {
    pub(super) prog: Program,
    pub(super) appender: ZarrAppender,
    pub(super) manifest: Manifest,
    pub(super) welford: Welford,
    pub(super) stats: PathBuf,
    pub(super) reference_path: PathBuf,
    pub(super) quarantine: PathBuf,
    pub(super) checkpoint: Duration,
    pub(super) last_checkpoint: Instant,
    pub(super) dirty: bool,
    pub(super) latencies: Latencies,
    pub(super) first_taken: Option<Instant>,
    pub(super) last_written: Option<Instant>,
    pub(super) ingested: u64,
    pub(super) shared: Arc<Shared>,
    pub(super) header: Value,
}

impl Committer {
    pub(super) fn commit(&mut self, job: Job, outcome: Outcome) -> Result<(), FollowError> {
        self.first_taken.get_or_insert(job.seen_at);
        match outcome {
            Outcome::Done {
                data,
                shift,
                reference,
            } => self.append(job, data, shift, reference),
            Outcome::Bad(reason) => self.quarantine(job, reason),
            // Handed back to the scanner by the commit loop.
            Outcome::NotReady(_) => Ok(()),
        }
    }

    pub(super) fn append(
        &mut self,
        job: Job,
        data: ArrayData,
        shift: Option<Vec<f64>>,
        reference: Option<Arc<ArrayData>>,
    ) -> Result<(), FollowError> {
        let t = self.appender.len();
        let fail = |msg: String| FollowError::Timepoint {
            t,
            file: job.path.clone(),
            msg,
        };
        if let Some(r) = reference {
            if t != 0 {
                return Err(fail("internal: a second registration reference".into()));
            }
            save_reference(&self.reference_path, &r).map_err(|e| fail(e.to_string()))?;
        }
        self.appender
            .write(t, &data)
            .map_err(|e| fail(e.to_string()))?;
        let written = SystemTime::now();
        let latency = job.seen_at.elapsed().as_secs_f64();
        self.manifest.append(&Entry {
            file: job.name.clone(),
            status: "ingested".into(),
            t: Some(t),
            bytes: Some(job.bytes),
            shift,
            seen: Some(unix(job.seen)),
            written: Some(unix(written)),
            latency_s: Some((latency * 1e6).round() / 1e6),
            reason: None,
            moved_to: None,
        })?;
        self.appender
            .set_len(t + 1)
            .map_err(|e| fail(e.to_string()))?;
        with_array!(&data, a => self.welford.push(a.index_axis(Axis(0), 0)))
            .map_err(|e| fail(e.to_string()))?;
        self.dirty = true;
        self.latencies.push(latency);
        self.ingested += 1;
        self.last_written = Some(Instant::now());
        tracing::info!(t, file = %job.path.display(), latency_s = latency, "ingested");
        {
            let mut s = self.shared.status.lock().unwrap_or_else(|p| p.into_inner());
            s.total = t + 1;
            s.ingested = self.ingested;
            s.last_latency = latency;
            s.p50 = self.latencies.quantile(0.5);
            s.p99 = self.latencies.quantile(0.99);
            s.rate = self.rate();
        }
        if self.last_checkpoint.elapsed() >= self.checkpoint {
            self.save_checkpoint()?;
        }
        Ok(())
    }

    pub(super) fn rate(&self) -> f64 {
        match (self.first_taken, self.last_written) {
            (Some(a), Some(b)) if b > a => self.ingested as f64 / (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }

    pub(super) fn quarantine(&mut self, job: Job, reason: String) -> Result<(), FollowError> {
        let q = &self.quarantine;
        let os = |p: &Path, e: std::io::Error| {
            state_err(p, format!("cannot quarantine {}: {e}", job.path.display()))
        };
        std::fs::create_dir_all(q).map_err(|e| os(q, e))?;
        let dest = q.join(&job.name);
        let note = q.join(format!("{}.reason.txt", job.name));
        std::fs::write(
            &note,
            format!(
                "{}\nquarantined by blockflow at unix time {:.3}: {reason}\n",
                job.path.display(),
                unix(SystemTime::now())
            ),
        )
        .map_err(|e| os(&note, e))?;
        // Recorded first, then moved: a run killed in between finishes the
        // move when it starts again.
        self.manifest.append(&Entry {
            file: job.name.clone(),
            status: "quarantined".into(),
            t: None,
            bytes: Some(job.bytes),
            shift: None,
            seen: Some(unix(job.seen)),
            written: None,
            latency_s: None,
            reason: Some(reason.clone()),
            moved_to: Some(dest.display().to_string()),
        })?;
        move_file(&job.path, &dest).map_err(|e| os(&dest, e))?;
        tracing::warn!(file = %job.path.display(), to = %dest.display(), "quarantined: {reason}");
        let mut s = self.shared.status.lock().unwrap_or_else(|p| p.into_inner());
        s.quarantined = self.manifest.quarantined;
        Ok(())
    }

    /// Writes the statistics (and the shifts JSON) for what is committed.
    pub(super) fn save_checkpoint(&mut self) -> Result<(), FollowError> {
        self.last_checkpoint = Instant::now();
        if !self.dirty {
            return Ok(());
        }
        save_stats(&self.stats, &self.welford, &self.prog.options, &self.header)?;
        if let (Some(path), Some(shifts), Some(reg)) = (
            &self.prog.shifts_json,
            &self.manifest.shifts,
            self.prog.stateful,
        ) {
            let n = shifts.first().map_or(0, Vec::len);
            let flat: Vec<f64> = shifts.iter().flatten().copied().collect();
            let a = ArrayD::from_shape_vec(IxDyn(&[shifts.len(), n]), flat)
                .map_err(|e| state_err(path, e.to_string()))?;
            let mut w = JsonWriter::create(path, true)?;
            let name = &self.prog.names[reg];
            w.set(name, &ArrayData::F64(a));
            // As write-json's in a batch run: what the key is.
            let mut about = serde_json::Map::new();
            about.insert(
                name.clone(),
                serde_json::Value::from(self.prog.stages[reg].about.text.clone()),
            );
            w.set_value("about", serde_json::Value::Object(about));
            w.finish()?;
        }
        self.dirty = false;
        Ok(())
    }
}

/// Moves a file, across filesystems too (copy, then remove).
pub(super) fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    if let Err(e) = std::fs::rename(from, to) {
        if !from.exists() {
            return Err(e);
        }
        std::fs::copy(from, to)?;
        std::fs::remove_file(from)?;
    }
    Ok(())
}

/// Saves the reference timepoint `(1, ...)` as a Zarr array of the frame's
/// shape, in its dtype.
pub(super) fn save_reference(path: &Path, r: &ArrayData) -> Result<(), IoError> {
    let r: ArrayData = with_array!(r, a => ArrayKind::wrap(a.index_axis(Axis(0), 0).to_owned()));
    let shape: Vec<u64> = r.shape().iter().map(|&n| n as u64).collect();
    let o = ZarrWriteOptions {
        zarr_format: 3,
        dtype: r.dtype(),
        shape: shape.clone(),
        chunks: shape.iter().map(|&n| n.max(1)).collect(),
        codec: Codec::None,
        level: 0,
        shards: None,
        encoding: Default::default(),
        dimension_names: None,
        overwrite: true,
        attributes: serde_json::Map::new(),
    };
    let w = ZarrWriter::create(path, &o)?;
    w.write(&Region::new(vec![0; shape.len()], shape), &r, &[])?;
    w.finish()?;
    Ok(())
}

/// The reference timepoint `(1, ...)` in `dtype` (a state written before
/// references kept their dtype holds float64).
pub(super) fn load_reference(
    path: &Path,
    frame: &[u64],
    dtype: DType,
) -> Result<ArrayData, FollowError> {
    let r = ZarrReader::open(path).map_err(|e| {
        state_err(
            path,
            format!(
                "the registration reference is missing or unreadable ({e}); the state is damaged"
            ),
        )
    })?;
    if r.info.shape != frame {
        return Err(state_err(
            path,
            "the registration reference has another shape",
        ));
    }
    let data = r
        .read(&Region::new(vec![0; frame.len()], frame.to_vec()), &[])?
        .cast(dtype);
    Ok(with_array!(data, a => ArrayKind::wrap(a.insert_axis(Axis(0)))))
}

pub(super) fn save_stats(
    path: &Path,
    w: &Welford,
    o: &ZarrWriteOptions,
    header: &Value,
) -> Result<(), FollowError> {
    let mut attrs = serde_json::Map::new();
    attrs.insert("count".into(), json!(w.n));
    attrs.insert("ddof".into(), json!(0));
    attrs.insert(
        "description".into(),
        json!("running per-voxel statistics along time of the ingested array (Welford): mean, std (ddof 0), m2 (sum of squared deviations, to resume)"),
    );
    if let Some(src) = header.get("output") {
        attrs.insert("of".into(), src.clone());
    }
    let std = w.std(0);
    blockflow_io::zarr::write_group(
        path,
        attrs,
        &[("mean", &w.mean), ("std", &std), ("m2", &w.m2)],
        &o.chunks[1..],
        Codec::Zstd,
    )?;
    Ok(())
}

/// The statistics of the first `len` timepoints of `out`: from the last
/// checkpoint where it is usable, plus the stored timepoints after it.
pub(super) fn resume_stats(
    stats: &Path,
    out: &Path,
    frame: &[usize],
    len: u64,
) -> Result<Welford, FollowError> {
    let saved = (|| -> Option<Welford> {
        let attrs = blockflow_io::zarr::group_attributes(stats).ok()?;
        let n = attrs.get("count")?.as_u64()?;
        if n > len {
            return None;
        }
        let whole = Region::new(
            vec![0; frame.len()],
            frame.iter().map(|&n| n as u64).collect(),
        );
        let read = |name: &str| -> Option<Vec<f64>> {
            let r = ZarrReader::open(&stats.join(name)).ok()?;
            Some(r.read(&whole, &[]).ok()?.to_f64().into_iter().collect())
        };
        Welford::from_parts(n, frame, read("mean")?, read("m2")?).ok()
    })();
    let mut w = match saved {
        Some(w) => w,
        None => {
            if len > 0 {
                tracing::info!(stats = %stats.display(), "no usable statistics checkpoint: rebuilding from the output");
            }
            Welford::new(frame)
        }
    };
    if w.n < len {
        let r = ZarrReader::open(out)?;
        for t in w.n..len {
            let mut origin = vec![t];
            origin.extend(std::iter::repeat_n(0, frame.len()));
            let mut shape = vec![1];
            shape.extend(frame.iter().map(|&n| n as u64));
            let d = r.read(&Region::new(origin, shape), &[t])?;
            with_array!(&d, a => w.push(a.index_axis(Axis(0), 0)))
                .map_err(|e| state_err(out, e.to_string()))?;
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockflow_kernels::register::Registrar;

    #[test]
    fn the_reference_keeps_its_dtype_across_a_restart() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("reference.zarr");
        let frame = ArrayD::from_shape_fn(IxDyn(&[1, 4, 6]), |i| {
            (i[1] * 6 + i[2]) as f32 * 0.1 + 1.0 / 3.0
        });
        let data = ArrayData::F32(frame.clone());
        save_reference(&path, &data).expect("save");
        let back = load_reference(&path, &[4, 6], DType::F32).expect("load");
        assert_eq!(
            back, data,
            "float32 read back bit for bit, with its time axis"
        );
        // A registrar made from it registers in single precision, as the
        // one made from the original timepoint did.
        let r = Registrar::of_timepoint(&back).expect("registrar");
        assert_eq!(r.precision_bytes(), 4);
        // A state written before references kept their dtype holds float64.
        save_reference(&path, &ArrayData::F64(frame.mapv(f64::from))).expect("save f64");
        assert_eq!(
            load_reference(&path, &[4, 6], DType::F32).expect("load"),
            data
        );
        assert!(
            load_reference(&path, &[4, 5], DType::F32).is_err(),
            "another shape"
        );
    }

    #[test]
    fn latency_quantiles_within_their_bucket() {
        let mut l = Latencies::new();
        for i in 1..=1000 {
            l.push(i as f64 * 1e-3);
        }
        for (q, want) in [(0.5, 0.5), (0.99, 0.99)] {
            let got = l.quantile(q);
            assert!((got / want - 1.0).abs() < 0.03, "q{q}: {got} vs {want}");
        }
        assert_eq!(l.max, 1.0);
        assert_eq!(Latencies::new().quantile(0.5), 0.0);
    }
}
