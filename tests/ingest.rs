//! `blockflow run --follow` (configs/ingest.toml): files dropped into a
//! folder while the ingest is killed with SIGKILL at random moments and
//! restarted; a corrupt file among them; SIGTERM; a soak of hundreds of
//! timepoints with the resident set watched.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A small deterministic generator for the kill times.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Setup {
    dir: PathBuf,
    gen: PathBuf,
    watch: PathBuf,
    /// The volumes' edge, declared as the stage's `frame`.
    size: usize,
}

impl Setup {
    fn new(tmp: &Path, count: usize, size: usize) -> Setup {
        let gen = tmp.join("gen");
        generate("timeseries", &gen, count, size, 7);
        let watch = tmp.join("incoming");
        std::fs::create_dir_all(&watch).expect("mkdir");
        Setup {
            dir: tmp.to_path_buf(),
            gen,
            watch,
            size,
        }
    }

    fn sets(&self, extra: &[&str]) -> Vec<String> {
        let d = &self.dir;
        let mut s = vec![
            format!("volumes.path=\"{}/t_*.h5\"", self.watch.display()),
            format!("volumes.frame=[{0}, {0}, {0}]", self.size),
            format!("aligned.path=\"{}\"", d.join("ingest.zarr").display()),
            format!("shifts_json.path=\"{}\"", d.join("shifts.json").display()),
            format!("follow.quarantine=\"{}\"", d.join("quarantine").display()),
            format!("pipeline.report=\"{}\"", d.join("report.json").display()),
            "follow.checkpoint=\"300ms\"".into(),
            "follow.poll=\"50ms\"".into(),
        ];
        s.extend(extra.iter().map(|e| e.to_string()));
        s
    }

    fn spawn(&self, extra: &[&str]) -> Child {
        let cfg = root().join("configs/ingest.toml");
        let mut cmd = bin();
        cmd.args(["run", "--follow", "-q", cfg.to_str().expect("utf-8")]);
        for s in self.sets(extra) {
            cmd.args(["--set", &s]);
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the ingest")
    }

    /// Drops generated timepoint `t` into the folder as an instrument
    /// would: written under a hidden name, then renamed into place.
    fn drop_file(&self, t: usize) {
        let name = format!("t_{t:04}.h5");
        let tmp = self.watch.join(format!(".{name}.part"));
        std::fs::copy(self.gen.join(&name), &tmp).expect("copy");
        std::fs::rename(&tmp, self.watch.join(&name)).expect("rename");
    }

    fn manifest(&self) -> Vec<serde_json::Value> {
        let p = self.dir.join("ingest.zarr.state/manifest.jsonl");
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

fn wait_for(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the ingest did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: Child) -> String {
    let out = child.wait_with_output().expect("output");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the same config as a batch pipeline over `files` of the generated
/// folder; returns the aligned array.
fn batch(s: &Setup, skip: &[usize], count: usize) -> blockflow_core::ArrayData {
    let dir = s.dir.join("batch-in");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for t in (0..count).filter(|t| !skip.contains(t)) {
        let name = format!("t_{t:04}.h5");
        std::fs::copy(s.gen.join(&name), dir.join(&name)).expect("copy");
    }
    let out = s.dir.join("batch.zarr");
    let cfg = root().join("configs/ingest.toml");
    let sets = vec![
        format!("volumes.path=\"{}/t_*.h5\"", dir.display()),
        format!("volumes.frame=[{0}, {0}, {0}]", s.size),
        format!("aligned.path=\"{}\"", out.display()),
        format!(
            "shifts_json.path=\"{}\"",
            s.dir.join("batch-shifts.json").display()
        ),
        format!(
            "pipeline.report=\"{}\"",
            s.dir.join("batch-report.json").display()
        ),
    ];
    let (code, _, err) = run_with_sets(&cfg, &sets);
    assert_eq!(code, 0, "batch run: {err}");
    read_all(&out)
}

#[test]
fn killed_at_random_moments_neither_loses_nor_repeats_a_timepoint() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (count, corrupt) = (24usize, 9usize);
    let s = Setup::new(tmp.path(), count, 24);
    // BLOCKFLOW_CRASH_SEED varies the kill times (a stress loop runs many).
    let seed = std::env::var("BLOCKFLOW_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = Lcg(seed);

    let writer = spawn_writer(&s, count, corrupt);
    // The ingest, killed with SIGKILL after a random 20-400 ms, ten times.
    let mut kills = 0;
    while kills < 10 {
        let mut child = s.spawn(&["follow.settle=\"0s\""]);
        std::thread::sleep(Duration::from_millis(20 + rng.below(380)));
        if child.try_wait().expect("wait").is_some() {
            panic!("the ingest exited early: {}", stderr_of(child));
        }
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        kills += 1;
    }
    writer.join().expect("writer");

    // Then once to the end: it exits 0 once nothing more arrives.
    let mut child = s.spawn(&["follow.settle=\"0s\"", "follow.idle_exit=\"1s\""]);
    let status = wait_for(&mut child, Duration::from_secs(120));
    let err = stderr_of(child);
    assert!(status.success(), "final run: {status:?}\n{err}");

    check_manifest_and_quarantine(&s, count, corrupt);
    let want = check_same_as_batch(&s, count, corrupt);
    check_statistics_and_zscore(&s, &want, count);
}

/// The writer: one timepoint every 80 ms; timepoint `corrupt` arrives
/// truncated.
fn spawn_writer(s: &Setup, count: usize, corrupt: usize) -> std::thread::JoinHandle<()> {
    let (gen, watch, size) = (s.gen.clone(), s.watch.clone(), s.size);
    std::thread::spawn(move || {
        let s = Setup {
            dir: PathBuf::new(),
            gen,
            watch,
            size,
        };
        for t in 0..count {
            if t == corrupt {
                let name = format!("t_{t:04}.h5");
                let bytes = std::fs::read(s.gen.join(&name)).expect("read");
                let tmp = s.watch.join(format!(".{name}.part"));
                std::fs::write(&tmp, &bytes[..bytes.len() / 3]).expect("write");
                std::fs::rename(&tmp, s.watch.join(&name)).expect("rename");
            } else {
                s.drop_file(t);
            }
            std::thread::sleep(Duration::from_millis(80));
        }
    })
}

/// The manifest lists each file once, timepoints in order; the corrupt one
/// is in quarantine, with its reason; all after it went in.
fn check_manifest_and_quarantine(s: &Setup, count: usize, corrupt: usize) {
    let m = s.manifest();
    let mut names: Vec<&str> = m
        .iter()
        .map(|e| e["file"].as_str().expect("file"))
        .collect();
    assert_eq!(m.len(), count, "{m:#?}");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), count, "a file is recorded twice");
    let ingested: Vec<_> = m.iter().filter(|e| e["status"] == "ingested").collect();
    for (i, e) in ingested.iter().enumerate() {
        assert_eq!(e["t"].as_u64(), Some(i as u64), "{e}");
        let want = format!("t_{:04}.h5", if i < corrupt { i } else { i + 1 });
        assert_eq!(e["file"], want.as_str());
    }
    let q: Vec<_> = m.iter().filter(|e| e["status"] == "quarantined").collect();
    assert_eq!(q.len(), 1, "{q:?}");
    let bad = format!("t_{corrupt:04}.h5");
    assert_eq!(q[0]["file"], bad.as_str());
    assert!(
        q[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not a readable HDF5 file")),
        "{q:?}"
    );
    let qdir = s.dir.join("quarantine");
    assert!(qdir.join(&bad).exists());
    let reason = std::fs::read_to_string(qdir.join(format!("{bad}.reason.txt"))).expect("reason");
    assert!(reason.contains("truncated"), "{reason}");
    assert!(!s.watch.join(&bad).exists());
}

/// The appended array equals the batch run over the same good files, bit
/// for bit, and no stray chunk or temporary file is left in it. Returns the
/// batch run's array.
fn check_same_as_batch(s: &Setup, count: usize, corrupt: usize) -> blockflow_core::ArrayData {
    let got = read_all(&s.dir.join("ingest.zarr"));
    let want = batch(s, &[corrupt], count);
    assert_eq!(got.shape(), want.shape());
    assert!(got == want, "the ingested array differs from the batch run");
    let shifts = read_json(s.dir.join("shifts.json"));
    let batch_shifts = read_json(s.dir.join("batch-shifts.json"));
    assert_eq!(shifts, batch_shifts);
    let mut stray = Vec::new();
    let mut stack = vec![s.dir.join("ingest.zarr")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name().to_string_lossy().contains(".tmp-") {
                stray.push(p);
            }
        }
    }
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
    let c_dirs = std::fs::read_dir(s.dir.join("ingest.zarr/c"))
        .expect("chunks")
        .count();
    assert_eq!(c_dirs, count - 1, "chunks past the recorded length");
    want
}

/// The running statistics are those of the whole array `want`, and the
/// exact batch zscore runs over the ingested array at any time.
fn check_statistics_and_zscore(s: &Setup, want: &blockflow_core::ArrayData, count: usize) {
    let stats = s.dir.join("ingest.zarr.stats");
    let attrs = blockflow_io::zarr::group_attributes(&stats).expect("stats group");
    assert_eq!(attrs["count"].as_u64(), Some(count as u64 - 1));
    let mean = read_all(&stats.join("mean")).to_f64();
    let std = read_all(&stats.join("std")).to_f64();
    let a = want.to_f64();
    let n = a.shape()[0] as f64;
    let m0 = a.mean_axis(ndarray::Axis(0)).expect("mean");
    let var = a
        .map_axis(ndarray::Axis(0), |lane| {
            let mu = lane.sum() / n;
            lane.iter().map(|x| (x - mu) * (x - mu)).sum::<f64>() / n
        })
        .mapv(f64::sqrt);
    let dm = (&mean - &m0).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
    let ds = (&std - &var).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
    assert!(
        dm < 1e-12 && ds < 1e-12,
        "statistics off by {dm:e} (mean), {ds:e} (std)"
    );

    let z = s.dir.join("z.zarr");
    let (code, _, err) = run_with_sets(
        &root().join("configs/zscore-ingested.toml"),
        &[
            format!("aligned.path=\"{}\"", s.dir.join("ingest.zarr").display()),
            format!("zscore_zarr.path=\"{}\"", z.display()),
            format!("pipeline.report=\"{}\"", s.dir.join("z.json").display()),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let zs = read_all(&z).to_f64();
    let want_z = (&a - &m0.insert_axis(ndarray::Axis(0))) / &var.insert_axis(ndarray::Axis(0));
    let dz = (&zs - &want_z)
        .iter()
        .filter(|d| d.is_finite())
        .fold(0.0f64, |m, d| m.max(d.abs()));
    assert!(dz < 1e-5, "zscore off by {dz:e}");
}

#[test]
fn sigterm_finishes_what_is_in_flight_and_exits_0() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = Setup::new(tmp.path(), 6, 32);
    for t in 0..4 {
        s.drop_file(t);
    }
    let mut child = s.spawn(&["follow.settle=\"0s\""]);
    let start = Instant::now();
    while s.manifest().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "nothing ingested"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    let k = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(k.success());
    let status = wait_for(&mut child, Duration::from_secs(60));
    let err = stderr_of(child);
    assert_eq!(status.code(), Some(0), "{err}");
    // Whatever it took is committed, in order, and recorded once.
    let m = s.manifest();
    assert!(m.len() >= 2, "{m:?}");
    for (i, e) in m.iter().enumerate() {
        assert_eq!(e["t"].as_u64(), Some(i as u64));
    }
    let got = read_all(&s.dir.join("ingest.zarr"));
    assert_eq!(got.shape()[0], m.len());
    let attrs =
        blockflow_io::zarr::group_attributes(&s.dir.join("ingest.zarr.stats")).expect("stats");
    assert_eq!(attrs["count"].as_u64(), Some(m.len() as u64));

    // A restart takes the rest.
    for t in 4..6 {
        s.drop_file(t);
    }
    let mut child = s.spawn(&["follow.settle=\"0s\"", "follow.idle_exit=\"500ms\""]);
    let status = wait_for(&mut child, Duration::from_secs(60));
    assert!(status.success(), "{}", stderr_of(child));
    let m = s.manifest();
    assert_eq!(m.len(), 6);
    assert_eq!(read_all(&s.dir.join("ingest.zarr")).shape()[0], 6);
}

#[test]
fn wrong_shape_or_missing_dataset_is_quarantined_and_the_ingest_goes_on() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = Setup::new(tmp.path(), 5, 20);
    let other = tmp.path().join("other");
    generate("timeseries", &other, 1, 16, 3);
    s.drop_file(0);
    s.drop_file(1);
    // t_0002 has another shape; t_0003 holds its data under another name.
    std::fs::copy(other.join("t_0000.h5"), s.watch.join("t_0002.h5")).expect("copy");
    let h = blockflow_io::hdf5::Hdf5Writer::create(
        &s.watch.join("t_0003.h5"),
        "elsewhere",
        blockflow_core::DType::F64,
        &[20, 20, 20],
        &[20, 20, 20],
        false,
    )
    .expect("h5");
    let zeros = blockflow_core::ArrayData::zeros(blockflow_core::DType::F64, &[20, 20, 20]);
    h.write(
        &blockflow_core::Region::new(vec![0, 0, 0], vec![20, 20, 20]),
        &zeros,
    )
    .expect("write");
    h.finish().expect("finish");
    s.drop_file(4);
    let mut child = s.spawn(&["follow.settle=\"0s\"", "follow.idle_exit=\"500ms\""]);
    let status = wait_for(&mut child, Duration::from_secs(60));
    assert!(status.success(), "{}", stderr_of(child));
    let m = s.manifest();
    let line = |f: &str| {
        m.iter()
            .find(|e| e["file"] == f)
            .unwrap_or_else(|| panic!("{f} not in the manifest: {m:?}"))
    };
    assert_eq!(line("t_0004.h5")["t"].as_u64(), Some(2));
    let shape = line("t_0002.h5");
    assert_eq!(shape["status"], "quarantined");
    assert!(
        shape["reason"]
            .as_str()
            .is_some_and(|r| r.contains("[16, 16, 16]")),
        "{shape}"
    );
    let missing = line("t_0003.h5");
    assert_eq!(missing["status"], "quarantined");
    assert!(
        missing["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no dataset \"data\"") && r.contains("elsewhere")),
        "{missing}"
    );
    for f in ["t_0002.h5", "t_0003.h5"] {
        assert!(s.dir.join("quarantine").join(f).exists());
        assert!(s
            .dir
            .join("quarantine")
            .join(format!("{f}.reason.txt"))
            .exists());
    }
    assert_eq!(read_all(&s.dir.join("ingest.zarr")).shape()[0], 3);
}

#[test]
fn a_declared_frame_plans_and_starts_before_the_first_file_and_checks_each_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = Setup::new(tmp.path(), 3, 20);
    // An empty folder: the shipped config plans as it is (its declared
    // frame), no file needed.
    let cfg = root().join("configs/ingest.toml");
    let empty = format!("volumes.path=\"{}/t_*.h5\"", s.watch.display());
    let (code, out, err) = blockflow(&["plan", cfg.to_str().expect("utf-8"), "--set", &empty]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("no timepoints yet, each [100, 100, 100] float64"),
        "{out}"
    );
    // A batch run of it has nothing to read, and says which files.
    let (code, _, err) = blockflow(&["run", cfg.to_str().expect("utf-8"), "--set", &empty]);
    assert_ne!(code, 0);
    assert!(
        err.contains("volumes") && err.contains("no file matches"),
        "{err}"
    );
    // The ingest starts on the empty folder (before, it waited for a first
    // file to learn the frame, and idle_exit never came): with nothing
    // arriving it exits on idle, its report written.
    let mut child = s.spawn(&["follow.settle=\"0s\"", "follow.idle_exit=\"300ms\""]);
    let status = wait_for(&mut child, Duration::from_secs(60));
    assert!(status.success(), "{}", stderr_of(child));
    let report = read_json(s.dir.join("report.json"));
    assert_eq!(report["ingested"], 0, "{report}");
    assert!(
        report["projected_bytes"].as_u64().is_some_and(|b| b > 0),
        "{report}"
    );
    // A first file of another shape than declared is quarantined; the
    // files that match are ingested.
    let other = tmp.path().join("other");
    generate("timeseries", &other, 1, 16, 3);
    std::fs::copy(other.join("t_0000.h5"), s.watch.join("t_0000.h5")).expect("copy");
    s.drop_file(1);
    s.drop_file(2);
    let mut child = s.spawn(&["follow.settle=\"0s\"", "follow.idle_exit=\"500ms\""]);
    let status = wait_for(&mut child, Duration::from_secs(60));
    assert!(status.success(), "{}", stderr_of(child));
    let m = s.manifest();
    let first = m
        .iter()
        .find(|e| e["file"] == "t_0000.h5")
        .unwrap_or_else(|| panic!("t_0000.h5 not in the manifest: {m:?}"));
    assert_eq!(first["status"], "quarantined", "{first}");
    assert!(
        first["reason"]
            .as_str()
            .is_some_and(|r| r.contains("[16, 16, 16]")),
        "{first}"
    );
    assert_eq!(read_all(&s.dir.join("ingest.zarr")).shape()[0], 2);
}

#[test]
fn soak_hundreds_of_timepoints_in_bounded_memory() {
    let tmp = tempfile::tempdir().expect("tmp");
    let n = 400;
    let s = Setup::new(tmp.path(), n, 32);
    // The generated folder is watched directly: all 400 are a backlog.
    let s = Setup {
        watch: s.gen.clone(),
        ..s
    };
    let mut child = s.spawn(&["follow.settle=\"0s\"", "follow.idle_exit=\"1s\""]);
    let pid = child.id();
    // The resident set, sampled while it runs, against timepoints done.
    let mut samples: Vec<(usize, u64)> = Vec::new();
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|k| k.parse::<u64>().ok())
            .unwrap_or(0);
        let done = std::fs::read_to_string(s.dir.join("ingest.zarr.state/manifest.jsonl"))
            .map(|t| t.lines().count().saturating_sub(1))
            .unwrap_or(0);
        if rss > 0 {
            samples.push((done, rss * 1024));
        }
        assert!(start.elapsed() < Duration::from_secs(300), "soak too slow");
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = stderr_of(child);
    assert_eq!(s.manifest().len(), n, "{err}");
    assert_eq!(read_all(&s.dir.join("ingest.zarr")).shape()[0], n);
    let peak = |lo: usize, hi: usize| {
        samples
            .iter()
            .filter(|(d, _)| *d >= lo && *d < hi)
            .map(|&(_, r)| r)
            .max()
            .unwrap_or(0)
    };
    let (early, late) = (peak(20, 120), peak(280, n));
    assert!(early > 0 && late > 0, "too few samples: {samples:?}");
    // The last hundred timepoints need no more memory than the first.
    assert!(
        late <= early + early / 5 + (4 << 20),
        "peak RSS grew with the timepoints: {} MiB over 20..120, {} MiB over 280..400",
        early >> 20,
        late >> 20
    );
    let rep = read_json(s.dir.join("report.json"));
    assert!(
        rep["peak_rss_bytes"].as_u64().unwrap_or(u64::MAX) < 256 << 20,
        "{rep}"
    );
}

impl Setup {
    /// The ingest with extra environment variables.
    fn spawn_env(&self, extra: &[&str], env: &[(&str, String)]) -> Child {
        let cfg = root().join("configs/ingest.toml");
        let mut cmd = bin();
        cmd.args(["run", "--follow", "-q", cfg.to_str().expect("utf-8")]);
        for s in self.sets(extra) {
            cmd.args(["--set", &s]);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the ingest")
    }

    fn wait_manifest(&self, rows: usize, child: &mut Child) {
        let start = Instant::now();
        while self.manifest().len() < rows {
            assert!(
                child.try_wait().expect("wait").is_none(),
                "the ingest exited early"
            );
            assert!(start.elapsed() < Duration::from_secs(60), "no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_second_ingest_or_run_on_the_same_output_exits_at_once_naming_the_first() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = Setup::new(tmp.path(), 2, 16);
    s.drop_file(0);
    let mut first = s.spawn(&["follow.settle=\"0s\""]);
    s.wait_manifest(1, &mut first);
    let mut second = s.spawn(&["follow.settle=\"0s\""]);
    let status = wait_for(&mut second, Duration::from_secs(10));
    let err = stderr_of(second);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("in use by another blockflow run")
            && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    // A batch run on the ingest's output is refused too.
    let cfg = root().join("configs/ingest.toml");
    let (code, _, err) = run_with_sets(&cfg, &s.sets(&["aligned.if_exists=\"overwrite\""]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("in use by another blockflow run"), "{err}");
    // The first goes on: one more file, then stopped.
    s.drop_file(1);
    s.wait_manifest(2, &mut first);
    first.kill().expect("kill");
    let _ = first.wait();
    let m = s.manifest();
    assert_eq!(m.len(), 2, "one row per file: {m:?}");
}

#[test]
fn a_file_that_changes_while_it_is_read_is_taken_again_not_ingested_torn() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = Setup::new(tmp.path(), 2, 16);
    // t_0000.h5 first holds other data (t_0001's): the writer is not done.
    std::fs::copy(s.gen.join("t_0001.h5"), s.watch.join("t_0000.h5")).expect("copy");
    let marker = tmp.path().join("read.marker");
    let mut child = s.spawn_env(
        &["follow.settle=\"0s\"", "follow.idle_exit=\"1s\""],
        &[(
            "BLOCKFLOW_TEST_PAUSE",
            format!("ingest-read:{}", marker.display()),
        )],
    );
    let start = Instant::now();
    while !marker.exists() {
        assert!(child.try_wait().expect("wait").is_none(), "exited early");
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(10));
    }
    // Read, not yet taken: the writer finishes the file now.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::copy(s.gen.join("t_0000.h5"), s.watch.join("t_0000.h5")).expect("finish");
    std::fs::remove_file(&marker).expect("resume");
    let status = wait_for(&mut child, Duration::from_secs(60));
    assert!(status.success(), "{}", stderr_of(child));
    let m = s.manifest();
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0]["status"], "ingested");
    assert_eq!(
        read_all(&s.dir.join("ingest.zarr")),
        batch(&s, &[], 1),
        "the finished file's data, not what was read while it changed"
    );
}

#[test]
fn a_file_its_writer_holds_locked_is_not_quarantined() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = Setup::new(tmp.path(), 1, 16);
    let path = s.watch.join("t_0000.h5");
    std::fs::copy(s.gen.join("t_0000.h5"), &path).expect("copy");
    // The writer holds the file as HDF5 does while it writes: an exclusive
    // flock (HDF5's file locking), which makes a reader's open fail.
    let held = std::fs::File::open(&path).expect("open");
    held.lock().expect("lock");
    let mut child = s.spawn(&["follow.settle=\"0s\"", "follow.idle_exit=\"1500ms\""]);
    std::thread::sleep(Duration::from_millis(800));
    assert!(child.try_wait().expect("wait").is_none(), "still waiting");
    assert!(s.manifest().is_empty(), "not taken while locked");
    assert!(!s.dir.join("quarantine").join("t_0000.h5").exists());
    drop(held);
    let status = wait_for(&mut child, Duration::from_secs(60));
    assert!(status.success(), "{}", stderr_of(child));
    let m = s.manifest();
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0]["status"], "ingested", "{m:?}");
    assert!(!s.dir.join("quarantine").join("t_0000.h5").exists());
}

#[test]
fn follow_on_a_config_without_a_watched_reader_is_a_config_error() {
    let cfg = root().join("configs/survey.toml");
    let (code, _, err) = blockflow(&["run", "--follow", "-q", cfg.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("survey.toml") && err.contains("read-hdf5-stack"),
        "{err}"
    );
}

/// A pipeline of map stages the ingest has no code of its own for (a
/// filter with a halo in space, a clip): each timepoint runs through the
/// batch's kernels, and the appended array equals the batch run's.
#[test]
fn any_map_stage_runs_in_the_ingest_as_in_the_batch() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = Setup::new(tmp.path(), 3, 12);
    let config = |smooth_sigma: &str| {
        format!(
            "[pipeline]\nname = \"maps\"\nmemory = \"256 MiB\"\n\
             [follow]\nsettle = \"0s\"\npoll = \"50ms\"\nidle_exit = \"1s\"\n\
             [stage.volumes]\nkind = \"read-hdf5-stack\"\npath = \"in/t_*.h5\"\ndataset = \"data\"\n\
             [stage.smooth]\nkind = \"filter\"\ninputs = [\"volumes\"]\nfilter = \"gaussian\"\nsigma = {smooth_sigma}\nmode = \"nearest\"\n\
             [stage.clipped]\nkind = \"clip\"\ninputs = [\"smooth\"]\nmin = 0.2\nmax = 0.8\n\
             [stage.out]\nkind = \"write-zarr\"\ninputs = [\"clipped\"]\npath = \"out.zarr\"\n"
        )
    };
    let follow_dir = s.dir.join("follow");
    let batch_dir = s.dir.join("batch");
    for d in [&follow_dir, &batch_dir] {
        std::fs::create_dir_all(d.join("in")).expect("mkdir");
        for t in 0..3 {
            let name = format!("t_{t:04}.h5");
            std::fs::copy(s.gen.join(&name), d.join("in").join(&name)).expect("copy");
        }
    }
    let cfg = write_config(&follow_dir, "maps.toml", &config("[0, 1.0, 1.0, 1.0]"));
    let (code, _, err) = blockflow(&["run", "--follow", "-q", cfg.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    let cfg = write_config(&batch_dir, "maps.toml", &config("[0, 1.0, 1.0, 1.0]"));
    let (code, _, err) = blockflow(&["run", "-q", cfg.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    let got = read_all(&follow_dir.join("out.zarr"));
    assert_eq!(got.shape()[0], 3);
    assert_eq!(got, read_all(&batch_dir.join("out.zarr")));

    // A window along time cannot run one timepoint at a time: refused
    // before any file is taken, naming the stage.
    let other = s.dir.join("along-time");
    std::fs::create_dir_all(other.join("in")).expect("mkdir");
    std::fs::copy(s.gen.join("t_0000.h5"), other.join("in/t_0000.h5")).expect("copy");
    let cfg = write_config(&other, "maps.toml", &config("1.0"));
    let (code, _, err) = blockflow(&["run", "--follow", "-q", cfg.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("stage \"smooth\" (filter)") && err.contains("spans several timepoints"),
        "{err}"
    );
}
