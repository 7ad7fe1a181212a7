//! Outputs that nothing clobbers.
//!
//! Every writer takes a [`Claim`] on its final path before it writes a byte:
//!
//! - **One run per output.** The claim is an exclusive `flock` on
//!   `PATH.lock` beside the output, held until the run has committed or
//!   given up. A second run on the same output fails at once with an error
//!   naming the first (its pid, command and age). The lock file says who
//!   holds it; it is removed by its holder on exit, and a lock file left by
//!   a killed run is free (the kernel drops a dead process's locks).
//! - **Per-run work names.** The output is assembled in
//!   `PATH.partial-<pid>`. Whatever a dead run left there (`PATH.partial*`,
//!   `PATH.old-*`, `PATH.tmp-*`) is removed by the next claim, which holds
//!   the lock and so knows no live run owns it.
//! - **Atomic replacement.** A directory output (a Zarr array) is committed
//!   with `renameat2(RENAME_EXCHANGE)`: the path holds the whole old array
//!   until the one system call that makes it hold the whole new one; the old
//!   one, now at the work name, is deleted after. Where the filesystem lacks
//!   the exchange, the old array is renamed aside first, and the next claim
//!   puts it back if the run died before the new one was in place. A file
//!   output is written to a temporary name and renamed over the old one.
//! - **Overwrite replaces only what blockflow makes.** With
//!   `if_exists = "overwrite"`, an existing path is replaced only if it is
//!   what the writer itself would make there (a Zarr array or group, an
//!   HDF5 file, a PNG, a JSON document, a CSV text); anything else, a
//!   folder of other files, a symbolic link, is an error naming it.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::IoError;

/// What a writer makes at its path (what overwrite may replace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// A Zarr array or group: a folder with `zarr.json`, `.zarray` or `.zgroup`.
    Zarr,
    /// An HDF5 file (its signature at 0, 512, 1024, ...).
    Hdf5,
    /// A PNG image.
    Png,
    /// A JSON document.
    Json,
    /// A CSV table (UTF-8 text).
    Csv,
}

impl Made {
    fn noun(self) -> &'static str {
        match self {
            Made::Zarr => "a Zarr array or group",
            Made::Hdf5 => "an HDF5 file",
            Made::Png => "a PNG image",
            Made::Json => "a JSON document",
            Made::Csv => "a CSV file",
        }
    }
}

fn os(path: &Path) -> impl FnOnce(std::io::Error) -> IoError + '_ {
    move |source| IoError::Os {
        path: path.to_path_buf(),
        source,
    }
}

/// `path` with `suffix` appended to its last component.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The lock file of an output.
pub fn lock_path(path: &Path) -> PathBuf {
    suffixed(path, ".lock")
}

/// The test hook `BLOCKFLOW_TEST_PAUSE=POINT:FILE`: the first time this
/// process reaches POINT (`commit-before`, `commit-after`, `ingest-read`),
/// it creates FILE (holding its pid) and waits there until FILE is removed
/// (at most a minute), so a test can act, or kill it, at that moment.
pub fn test_pause(point: &str) {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Ok(v) = std::env::var("BLOCKFLOW_TEST_PAUSE") else {
        return;
    };
    match v.split_once(':') {
        Some((p, file)) if p == point && !DONE.swap(true, Ordering::SeqCst) => {
            let file = Path::new(file);
            let _ = std::fs::write(file, std::process::id().to_string());
            let until = std::time::Instant::now() + Duration::from_secs(60);
            while file.exists() && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        _ => {}
    }
}

/// Who holds a lock, as written in the lock file.
fn holder_text() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cmd: Vec<String> = std::env::args().collect();
    format!(
        "pid={}\nstarted={secs}\ncommand={}\n",
        std::process::id(),
        cmd.join(" ")
    )
}

/// The holder of a lock file in words ("pid 4242, `blockflow run a.toml`,
/// started 3 s ago").
fn describe_holder(text: &str) -> String {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .map(str::trim)
    };
    let mut parts = Vec::new();
    if let Some(p) = field("pid") {
        parts.push(format!("pid {p}"));
    }
    if let Some(c) = field("command").filter(|c| !c.is_empty()) {
        parts.push(format!("`{c}`"));
    }
    if let Some(s) = field("started").and_then(|s| s.parse::<u64>().ok()) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        parts.push(format!("started {} s ago", now.saturating_sub(s)));
    }
    if parts.is_empty() {
        "a process that has not said who it is".into()
    } else {
        parts.join(", ")
    }
}

/// An exclusive lock on `LOCK` (a file), held until dropped; the file is
/// removed by its holder.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
    file: Option<File>,
}

impl Lock {
    /// Takes the lock at once or fails with [`IoError::InUse`] naming
    /// `what` and the holder.
    pub fn acquire(lock: &Path, what: &Path) -> Result<Lock, IoError> {
        if let Some(dir) = lock.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(os(dir))?;
        }
        // A holder removes the file before it lets go, so a lock taken on a
        // file that is no longer at the path is retried on the new one.
        for _ in 0..100 {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(lock)
                .map_err(os(lock))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    return Err(IoError::InUse {
                        path: what.to_path_buf(),
                        holder: describe_holder(&text),
                        lock: lock.to_path_buf(),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(os(lock)(e)),
            }
            if !same_file(&file, lock) {
                continue;
            }
            file.set_len(0).map_err(os(lock))?;
            file.write_all(holder_text().as_bytes()).map_err(os(lock))?;
            return Ok(Lock {
                path: lock.to_path_buf(),
                file: Some(file),
            });
        }
        Err(IoError::Store {
            path: lock.to_path_buf(),
            why: "the lock file keeps being replaced; is another program removing it?".into(),
        })
    }

    /// Whether a lock file is held by a live process right now.
    pub fn is_held(lock: &Path) -> bool {
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(lock)
        else {
            return false;
        };
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(std::fs::TryLockError::WouldBlock) => true,
            Err(std::fs::TryLockError::Error(_)) => false,
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Removed while still held, so nobody takes a lock on a file that
        // is about to disappear (see `acquire`).
        let _ = std::fs::remove_file(&self.path);
        drop(self.file.take());
    }
}

/// Whether `file` is the file now at `path` (same device and inode).
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// This process's work name suffix, unique among live processes.
fn run_tag() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    if n == 0 {
        format!("{}", std::process::id())
    } else {
        format!("{}-{n}", std::process::id())
    }
}

/// A run's hold on one output path: the lock, the work name, the commit.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
    made: Made,
    overwrite: bool,
    partial: PathBuf,
    _lock: Lock,
}

impl Claim {
    /// Takes `path` for a writer that makes `made` there: an empty path is
    /// refused; the lock is taken (or the holder named); what dead runs
    /// left is cleaned up; an existing path must be allowed to go
    /// (`overwrite`) and be what this writer makes.
    pub fn take(path: &Path, made: Made, overwrite: bool) -> Result<Claim, IoError> {
        if path.as_os_str().is_empty() || path.file_name().is_none() {
            return Err(IoError::Store {
                path: path.to_path_buf(),
                why: "not a path an output can be written to (it must name a file or folder)"
                    .into(),
            });
        }
        let lock = Lock::acquire(&lock_path(path), path)?;
        clean_stale(path)?;
        if std::fs::symlink_metadata(path).is_ok() {
            if !overwrite {
                return Err(IoError::Exists {
                    path: path.to_path_buf(),
                });
            }
            check_replaceable(path, made)?;
        }
        Ok(Claim {
            path: path.to_path_buf(),
            made,
            overwrite,
            partial: suffixed(path, &format!(".partial-{}", run_tag())),
            _lock: lock,
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The work name this run assembles the output under.
    pub fn partial(&self) -> &Path {
        &self.partial
    }

    /// Moves the assembled output (at [`Claim::partial`]) into place.
    pub fn commit(&self) -> Result<(), IoError> {
        let exists = std::fs::symlink_metadata(&self.path).is_ok();
        if exists {
            if !self.overwrite {
                return Err(IoError::Exists {
                    path: self.path.clone(),
                });
            }
            // Checked again: something else may have been put there.
            check_replaceable(&self.path, self.made)?;
        }
        test_pause("commit-before");
        if !exists {
            rename_noreplace(&self.partial, &self.path)?;
            test_pause("commit-after");
            return Ok(());
        }
        let is_dir = std::fs::symlink_metadata(&self.partial)
            .map_err(os(&self.partial))?
            .is_dir();
        if !is_dir {
            // A file replaces a file in one rename.
            std::fs::rename(&self.partial, &self.path).map_err(os(&self.path))?;
            test_pause("commit-after");
            return Ok(());
        }
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &self.partial,
            rustix::fs::CWD,
            &self.path,
            rustix::fs::RenameFlags::EXCHANGE,
        ) {
            Ok(()) => {
                // The old output now sits at the work name.
                test_pause("commit-after");
                remove_any(&self.partial)
            }
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
                // No exchange on this filesystem: aside, in, then delete.
                let old = suffixed(&self.path, &format!(".old-{}", run_tag()));
                std::fs::rename(&self.path, &old).map_err(os(&self.path))?;
                std::fs::rename(&self.partial, &self.path).map_err(os(&self.partial))?;
                test_pause("commit-after");
                remove_any(&old)
            }
            Err(e) => Err(os(&self.path)(e.into())),
        }
    }

    /// Writes `bytes` as the whole file output and commits it.
    pub fn commit_bytes(&self, bytes: &[u8]) -> Result<(), IoError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(os(dir))?;
        }
        std::fs::write(&self.partial, bytes).map_err(os(&self.partial))?;
        self.commit()
    }
}

impl Drop for Claim {
    /// Whatever was not committed is removed (the lock goes after it).
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.partial).is_ok() {
            let _ = remove_any(&self.partial);
        }
    }
}

fn rename_noreplace(from: &Path, to: &Path) -> Result<(), IoError> {
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::EXIST || e == rustix::io::Errno::NOTEMPTY => {
            Err(IoError::Exists {
                path: to.to_path_buf(),
            })
        }
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            if std::fs::symlink_metadata(to).is_ok() {
                return Err(IoError::Exists {
                    path: to.to_path_buf(),
                });
            }
            std::fs::rename(from, to).map_err(os(to))
        }
        Err(e) => Err(os(to)(e.into())),
    }
}

/// Removes a file or a folder.
pub fn remove_any(p: &Path) -> Result<(), IoError> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).map_err(os(p)),
        Ok(_) => std::fs::remove_file(p).map_err(os(p)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(os(p)(e)),
    }
}

/// Removes what dead runs left beside `path` (the caller holds its lock):
/// work folders `NAME.partial`, `NAME.partial-*`, temporary files
/// `NAME.tmp-*`, and old outputs `NAME.old-*`; an old output is put back
/// when the path itself is missing (a run died between moving it aside and
/// moving the new one in).
fn clean_stale(path: &Path) -> Result<(), IoError> {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(());
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut olds = Vec::new();
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = n.strip_prefix(name.as_str()) else {
            continue;
        };
        if rest == ".partial"
            || rest.strip_prefix(".partial-").is_some_and(is_tag)
            || rest.strip_prefix(".tmp-").is_some_and(is_tag)
        {
            remove_any(&e.path())?;
        } else if rest.strip_prefix(".old-").is_some_and(is_tag) {
            olds.push(e.path());
        }
    }
    olds.sort();
    if std::fs::symlink_metadata(path).is_err() {
        if let Some(last) = olds.pop() {
            std::fs::rename(&last, path).map_err(os(&last))?;
        }
    }
    for o in olds {
        remove_any(&o)?;
    }
    Ok(())
}

/// A run tag: digits, or digits-digits.
fn is_tag(s: &str) -> bool {
    !s.is_empty()
        && s.split('-')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether the existing `path` is something a writer making `made` may
/// replace; an error naming it otherwise.
pub fn check_replaceable(path: &Path, made: Made) -> Result<(), IoError> {
    let refuse = |what: String| IoError::NotOurs {
        path: path.to_path_buf(),
        what,
        made: made.noun(),
    };
    let meta = std::fs::symlink_metadata(path).map_err(os(path))?;
    if meta.file_type().is_symlink() {
        return Err(refuse("a symbolic link".into()));
    }
    match made {
        Made::Zarr => {
            if !meta.is_dir() {
                return Err(refuse("a file".into()));
            }
            let is_zarr = ["zarr.json", ".zarray", ".zgroup"]
                .iter()
                .any(|m| path.join(m).is_file());
            if !is_zarr {
                return Err(refuse("a folder that is not a Zarr array or group".into()));
            }
            Ok(())
        }
        _ if meta.is_dir() => Err(refuse("a folder".into())),
        _ if !meta.is_file() => Err(refuse("not a regular file".into())),
        Made::Hdf5 => {
            let mut f = File::open(path).map_err(os(path))?;
            let mut head = vec![0u8; 8];
            // The superblock is at 0, 512, 1024, 2048, ... (after a user block).
            let mut at = 0u64;
            while at < meta.len() && at <= 1 << 20 {
                use std::io::Seek;
                f.seek(std::io::SeekFrom::Start(at)).map_err(os(path))?;
                if f.read_exact(&mut head).is_ok() && head == b"\x89HDF\r\n\x1a\n" {
                    return Ok(());
                }
                at = if at == 0 { 512 } else { at * 2 };
            }
            Err(refuse("a file that is not HDF5".into()))
        }
        Made::Png => {
            let mut head = [0u8; 8];
            let ok = File::open(path)
                .and_then(|mut f| f.read_exact(&mut head))
                .is_ok()
                && head == *b"\x89PNG\r\n\x1a\n";
            if ok {
                Ok(())
            } else {
                Err(refuse("a file that is not a PNG image".into()))
            }
        }
        Made::Json => {
            if meta.len() > 256 << 20 {
                return Err(refuse(
                    "a file too large to be one of its JSON results".into(),
                ));
            }
            let text = std::fs::read(path).map_err(os(path))?;
            if serde_json::from_slice::<serde_json::Value>(&text).is_ok() {
                Ok(())
            } else {
                Err(refuse("a file that is not a JSON document".into()))
            }
        }
        Made::Csv => {
            let mut head = Vec::new();
            File::open(path)
                .map_err(os(path))?
                .take(1 << 20)
                .read_to_end(&mut head)
                .map_err(os(path))?;
            let text_like = !head.contains(&0)
                && (std::str::from_utf8(&head).is_ok() || head.len() as u64 == 1 << 20);
            if text_like {
                Ok(())
            } else {
                Err(refuse("a file that is not CSV text".into()))
            }
        }
    }
}

/// The lock a run holds on a scratch folder while it keeps stores there:
/// `.blockflow-run-<pid>.lock`, one per process and folder, shared by the
/// stages that keep scratch stores (named `.blockflow-<stage>-<pid>.zarr…`).
#[derive(Debug)]
pub struct ScratchLock {
    _lock: Lock,
}

/// Takes this process's lock on the scratch folder `dir` (or shares the
/// one it holds), after removing what dead runs left there: the scratch
/// stores whose run lock is free (or, for runs from before the locks,
/// whose process is gone) and their lock files.
pub fn scratch_lock(dir: &Path) -> Result<std::sync::Arc<ScratchLock>, IoError> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, Weak};
    static HELD: Mutex<Option<HashMap<PathBuf, Weak<ScratchLock>>>> = Mutex::new(None);
    let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
    let map = held.get_or_insert_with(HashMap::new);
    if let Some(l) = map.get(dir).and_then(Weak::upgrade) {
        return Ok(l);
    }
    std::fs::create_dir_all(dir).map_err(os(dir))?;
    sweep_scratch(dir)?;
    let lock = dir.join(format!(".blockflow-run-{}.lock", std::process::id()));
    let l = Arc::new(ScratchLock {
        _lock: Lock::acquire(&lock, dir)?,
    });
    map.insert(dir.to_path_buf(), Arc::downgrade(&l));
    Ok(l)
}

/// The pid a scratch entry belongs to: `.blockflow-run-<pid>.lock`, or
/// `.blockflow-<stage>-<pid>.zarr…`.
fn scratch_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(".blockflow-")?;
    if let Some(pid) = rest
        .strip_prefix("run-")
        .and_then(|r| r.strip_suffix(".lock"))
    {
        return pid.parse().ok();
    }
    let stem = &rest[..rest.find(".zarr")?];
    stem.rsplit('-').next()?.parse().ok()
}

/// Removes the scratch stores of dead runs in `dir` (see [`scratch_lock`]).
pub fn sweep_scratch(dir: &Path) -> Result<Vec<PathBuf>, IoError> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(removed);
    };
    let me = std::process::id();
    let mut locks = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = scratch_owner(&name) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let lock = dir.join(format!(".blockflow-run-{pid}.lock"));
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        if name.ends_with(".lock") {
            locks.push((e.path(), alive));
            continue;
        }
        let dead = !Lock::is_held(&lock) && (lock.exists() || !alive);
        if dead {
            remove_any(&e.path())?;
            removed.push(e.path());
        }
    }
    // A free lock file goes only with its process: a live one may be
    // about to take it.
    for (lock, alive) in locks {
        if !alive && !Lock::is_held(&lock) {
            let _ = std::fs::remove_file(&lock);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_on_a_path_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.zarr");
        let c = Claim::take(&p, Made::Zarr, false).expect("first");
        let e = Claim::take(&p, Made::Zarr, false).expect_err("second");
        let msg = e.to_string();
        assert!(msg.contains("in use by another blockflow run"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(c);
        assert!(!lock_path(&p).exists(), "the lock file is removed");
        Claim::take(&p, Made::Zarr, false).expect("free again");
    }

    #[test]
    fn stale_work_folders_are_removed_and_an_old_output_put_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.zarr");
        std::fs::create_dir_all(suffixed(&p, ".partial-123")).expect("mk");
        std::fs::create_dir_all(suffixed(&p, ".partial")).expect("mk");
        std::fs::create_dir_all(suffixed(&p, ".old-77")).expect("mk");
        std::fs::write(suffixed(&p, ".old-77").join("zarr.json"), "{}").expect("w");
        // Not ours: kept.
        std::fs::create_dir_all(suffixed(&p, ".partial-notes")).expect("mk");
        let c = Claim::take(&p, Made::Zarr, true).expect("claim");
        assert!(!suffixed(&p, ".partial-123").exists());
        assert!(!suffixed(&p, ".partial").exists());
        assert!(suffixed(&p, ".partial-notes").exists());
        assert!(p.join("zarr.json").exists(), "the old output is back");
        drop(c);
    }

    #[test]
    fn overwrite_replaces_only_what_the_writer_makes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("notes");
        std::fs::create_dir_all(&folder).expect("mk");
        std::fs::write(folder.join("x.txt"), "keep").expect("w");
        let e = Claim::take(&folder, Made::Zarr, true).expect_err("not a zarr");
        assert!(e.to_string().contains("not a Zarr array or group"), "{e}");
        let text = dir.path().join("t.json");
        std::fs::write(&text, "not json").expect("w");
        assert!(Claim::take(&text, Made::Json, true).is_err());
        std::fs::write(&text, "{\"a\": 1}").expect("w");
        Claim::take(&text, Made::Json, true).expect("a JSON document may go");
        let png = dir.path().join("p.png");
        std::fs::write(&png, "text").expect("w");
        assert!(Claim::take(&png, Made::Png, true).is_err());
        assert!(Claim::take(&folder, Made::Csv, true).is_err());
        assert!(Claim::take(Path::new(""), Made::Csv, true).is_err());
        assert!(Claim::take(Path::new(".."), Made::Zarr, true).is_err());
        assert_eq!(
            std::fs::read_to_string(folder.join("x.txt")).expect("r"),
            "keep"
        );
    }

    #[test]
    fn a_directory_commit_exchanges_whole_outputs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.zarr");
        std::fs::create_dir_all(&p).expect("mk");
        std::fs::write(p.join("zarr.json"), "old").expect("w");
        let c = Claim::take(&p, Made::Zarr, true).expect("claim");
        std::fs::create_dir_all(c.partial()).expect("mk");
        std::fs::write(c.partial().join("zarr.json"), "new").expect("w");
        c.commit().expect("commit");
        assert_eq!(
            std::fs::read_to_string(p.join("zarr.json")).expect("r"),
            "new"
        );
        assert!(!c.partial().exists());
        drop(c);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[test]
    fn scratch_of_dead_runs_is_swept_and_live_runs_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        // A dead run with a lock file (free) and one from before the locks
        // (pid 2^22 + 1 is above Linux's pid_max default; not alive).
        std::fs::create_dir_all(d.join(".blockflow-rc-4194305.zarr.partial")).expect("mk");
        std::fs::create_dir_all(d.join(".blockflow-take-4194306.zarr-0")).expect("mk");
        std::fs::write(d.join(".blockflow-run-4194306.lock"), "").expect("w");
        // A live run (this test's parent process holds no lock; pid 1 is alive).
        std::fs::create_dir_all(d.join(".blockflow-rc-1.zarr")).expect("mk");
        std::fs::create_dir_all(d.join("keep.zarr")).expect("mk");
        let guard = scratch_lock(d).expect("lock");
        assert!(!d.join(".blockflow-rc-4194305.zarr.partial").exists());
        assert!(!d.join(".blockflow-take-4194306.zarr-0").exists());
        assert!(!d.join(".blockflow-run-4194306.lock").exists());
        assert!(d.join(".blockflow-rc-1.zarr").exists(), "pid 1 is alive");
        assert!(d.join("keep.zarr").exists());
        let me = d.join(format!(".blockflow-run-{}.lock", std::process::id()));
        assert!(Lock::is_held(&me));
        drop(guard);
        assert!(!me.exists());
    }

    #[test]
    fn a_commit_without_overwrite_never_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("r.json");
        let c = Claim::take(&p, Made::Json, false).expect("claim");
        std::fs::write(&p, "{}").expect("someone else");
        assert!(matches!(c.commit_bytes(b"[]"), Err(IoError::Exists { .. })));
        assert_eq!(std::fs::read_to_string(&p).expect("r"), "{}");
    }
}
