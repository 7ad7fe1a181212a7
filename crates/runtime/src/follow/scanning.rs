//! Watching the folder: which files are complete, handing them to the
//! workers in order, waiting for the first one.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use blockflow_core::DType;
use blockflow_io::hdf5::Hdf5Reader;
use blockflow_io::IoError;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::committer::Shared;
use super::program::{stamp, Job};
use super::{FollowError, FollowOptions, Settings, Source};

pub(super) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A file seen in the folder and not yet taken.
pub(super) struct Candidate {
    pub(super) bytes: u64,
    pub(super) mtime: Option<SystemTime>,
    pub(super) seen: SystemTime,
    pub(super) seen_at: Instant,
    pub(super) stable_since: Instant,
}

/// Lists the glob: the files it matches now (none if the folder is missing).
pub(super) fn list(glob: &str) -> Result<Vec<PathBuf>, FollowError> {
    match blockflow_io::hdf5::list_timepoints(glob) {
        Ok(f) => Ok(f),
        Err(IoError::NoMatch { .. }) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Updates the candidates from a listing and returns the complete ones in
/// natural order.
pub(super) fn settle(
    files: Vec<PathBuf>,
    taken: &HashSet<String>,
    cands: &mut HashMap<PathBuf, Candidate>,
    settle: Duration,
) -> Vec<PathBuf> {
    let now = Instant::now();
    let now_sys = SystemTime::now();
    let present: HashSet<&PathBuf> = files.iter().collect();
    cands.retain(|p, _| present.contains(p));
    let mut ready = Vec::new();
    for p in &files {
        let name = file_name(p);
        if taken.contains(&name) {
            continue;
        }
        let Ok(md) = std::fs::metadata(p) else {
            cands.remove(p);
            continue;
        };
        let (bytes, mtime) = (md.len(), md.modified().ok());
        let c = cands.entry(p.clone()).or_insert_with(|| {
            // A file last changed `settle` ago or more is complete already.
            let age = mtime
                .and_then(|m| now_sys.duration_since(m).ok())
                .unwrap_or_default()
                .min(settle);
            Candidate {
                bytes,
                mtime,
                seen: now_sys,
                seen_at: now,
                stable_since: now.checked_sub(age).unwrap_or(now),
            }
        });
        if c.bytes != bytes || c.mtime != mtime {
            c.bytes = bytes;
            c.mtime = mtime;
            c.stable_since = now;
        }
        if now.duration_since(c.stable_since) >= settle {
            ready.push(p.clone());
        }
    }
    ready
}

/// Waits for the first complete file that opens; files that do not are
/// returned for quarantine. None if stopped first.
pub(super) fn wait_for_first(
    src: &Source,
    set: &Settings,
    opts: &FollowOptions,
    bad: &mut Vec<(Job, String)>,
) -> Result<Option<(Vec<u64>, DType)>, FollowError> {
    let mut cands = HashMap::new();
    let mut tried = HashSet::new();
    let mut told = HashSet::new();
    let mut announced = false;
    while !opts.stop.load(Ordering::SeqCst) {
        let ready = settle(list(&src.glob)?, &tried, &mut cands, set.settle);
        for p in ready {
            let name = file_name(&p);
            tried.insert(name.clone());
            let c = cands.remove(&p);
            match Hdf5Reader::open(&p, &src.dataset) {
                Ok(r) => return Ok(Some((r.info.shape.clone(), r.info.dtype))),
                Err(e) => {
                    let (seen, seen_at, bytes, mtime) = c
                        .map(|c| (c.seen, c.seen_at, c.bytes, c.mtime))
                        .unwrap_or((SystemTime::now(), Instant::now(), 0, None));
                    let text = e.to_string();
                    if stamp(&p) != Some((bytes, mtime))
                        || text.contains("unable to lock file")
                        || text.contains("lock file")
                    {
                        // Still being written: tried again once settled.
                        if told.insert(name.clone()) {
                            tracing::info!(file = %p.display(), "not ready yet: {text}");
                        }
                        tried.remove(&name);
                        continue;
                    }
                    bad.push((
                        Job {
                            seq: 0,
                            path: p.clone(),
                            name,
                            bytes,
                            mtime,
                            seen,
                            seen_at,
                        },
                        format!("stage \"{}\": {e}", src.stage),
                    ));
                }
            }
        }
        if !announced {
            tracing::info!("waiting for the first timepoint matching {}", src.glob);
            announced = true;
        }
        std::thread::sleep(set.poll);
    }
    Ok(None)
}

/// The scanner: lists the folder, hands complete files to the workers in
/// natural order, keeps the status, and stops on request, on failure or
/// when idle; then lets what is in flight finish.
pub(super) fn scan(
    src: &Source,
    set: &Settings,
    opts: &FollowOptions,
    shared: &Shared,
    taken: &mut HashSet<String>,
    job_tx: Sender<Job>,
    (wake, retry): (&Receiver<()>, &Receiver<String>),
) -> Result<(), FollowError> {
    let mut cands: HashMap<PathBuf, Candidate> = HashMap::new();
    let mut seq = 0u64;
    let mut idle_since = Instant::now();
    let workers = job_tx.capacity().unwrap_or(1) as u64;
    let mut result = Ok(());
    loop {
        if opts.stop.load(Ordering::SeqCst) || shared.failed.load(Ordering::SeqCst) {
            break;
        }
        // Files that were not ready when read: candidates again.
        while let Ok(name) = retry.try_recv() {
            taken.remove(&name);
        }
        let files = match list(&src.glob) {
            Ok(f) => f,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let mut ready = settle(files, taken, &mut cands, set.settle);
        if let Some(re) = &src.index {
            // By the captured index; names it does not match first, to be
            // quarantined.
            ready.sort_by_key(|p| blockflow_io::hdf5::timepoint_index(p, re).ok());
        }
        for p in ready {
            let in_flight = shared.in_flight.load(Ordering::SeqCst);
            if in_flight > workers {
                break;
            }
            // The first timepoint becomes the reference: nothing else
            // starts before it is computed.
            if !shared.reference_ready.load(Ordering::SeqCst) && in_flight > 0 {
                break;
            }
            let Some(c) = cands.remove(&p) else { continue };
            let name = file_name(&p);
            taken.insert(name.clone());
            shared.in_flight.fetch_add(1, Ordering::SeqCst);
            let job = Job {
                seq,
                path: p,
                name,
                bytes: c.bytes,
                mtime: c.mtime,
                seen: c.seen,
                seen_at: c.seen_at,
            };
            seq += 1;
            if job_tx.send(job).is_err() {
                break;
            }
        }
        let in_flight = shared.in_flight.load(Ordering::SeqCst);
        {
            let mut s = shared.status.lock().unwrap_or_else(|p| p.into_inner());
            s.backlog = cands.len() as u64 + in_flight;
            if let Some(p) = &opts.progress {
                p.update(&s);
            }
        }
        if cands.is_empty() && in_flight == 0 {
            if let Some(d) = set.idle_exit.filter(|d| idle_since.elapsed() >= *d) {
                tracing::info!("nothing arrived for {d:?}: exiting");
                break;
            }
        } else {
            idle_since = Instant::now();
        }
        match wake.recv_timeout(set.poll) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while wake.try_recv().is_ok() {}
    }
    // Drain: no new files; what is in flight finishes and is committed.
    drop(job_tx);
    {
        let mut s = shared.status.lock().unwrap_or_else(|p| p.into_inner());
        s.draining = true;
        if let Some(p) = &opts.progress {
            p.update(&s);
        }
    }
    while shared.in_flight.load(Ordering::SeqCst) > 0 && !shared.failed.load(Ordering::SeqCst) {
        let _ = wake.recv_timeout(Duration::from_millis(50));
    }
    result
}
