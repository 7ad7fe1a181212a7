//! Zarr arrays in object storage: `s3://bucket/prefix` (read and written)
//! and `http(s)://host/path` (read), through zarrs' object_store adapter
//! (`zarrs_object_store`) bridged to zarrs' sync API on a tokio runtime.
//!
//! A location is carried through the engine as a `Path` holding the URL
//! as written; [`url_of`] tells one from a local path.
//!
//! Credentials, region and endpoint (S3): the standard AWS environment
//! variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION` / `AWS_DEFAULT_REGION`,
//! `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3`), else the profile
//! `AWS_PROFILE` (or `default`) of `~/.aws/credentials` and `~/.aws/config`
//! (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`). object_store reads
//! only the variables, so the two files are read here ([`ini_section`]).
//!
//! Writing without rename (see [`RemoteClaim`]): the claim object first
//! (a conditional put, so two runs cannot both hold it), an old array's
//! metadata removed before the first chunk, chunks, the new metadata
//! last, then the old array's objects the new one did not rewrite.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::http::HttpBuilder;
use object_store::path::Path as ObjPath;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig};
use zarrs::storage::byte_range::ByteRangeIterator;
use zarrs::storage::storage_adapter::async_to_sync::{
    AsyncToSyncBlockOn, AsyncToSyncStorageAdapter,
};
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytes, MaybeBytesIterator, OffsetBytesIterator,
    ReadableStorageTraits, StorageError, StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix,
    WritableStorageTraits,
};
use zarrs_object_store::AsyncObjectStore;

use crate::IoError;

/// The URL `path` holds, if it names object storage (`s3://`,
/// `http://`, `https://`), with any trailing `/` removed.
pub fn url_of(path: &Path) -> Option<&str> {
    let s = path.to_str()?;
    ["s3://", "http://", "https://"]
        .iter()
        .any(|p| s.starts_with(p))
        .then(|| s.trim_end_matches('/'))
}

/// Whether `path` names object storage rather than a local file.
pub fn is_url(path: &Path) -> bool {
    url_of(path).is_some()
}

/// What a location is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    S3 { bucket: String, prefix: String },
    Http { base: String },
}

fn parse(url: &str) -> Result<Location, String> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err("no bucket: write s3://BUCKET/PREFIX".into());
        }
        return Ok(Location::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        });
    }
    Ok(Location::Http {
        base: url.to_string(),
    })
}

/// S3 settings given in code (tests, embedding); what is left `None` comes
/// from the environment and the profile files.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

/// The settings one S3 client is built with, and where each came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

/// The `[name]` section of an INI text (the AWS profile files): its
/// `key = value` lines, keys lower-cased.
pub fn ini_section(text: &str, name: &str) -> Option<HashMap<String, String>> {
    let mut out: Option<HashMap<String, String>> = None;
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = h.trim() == name;
            if inside {
                out.get_or_insert_with(HashMap::new);
            }
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.get_or_insert_with(HashMap::new)
                    .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
    }
    out
}

/// Resolves S3 settings: `given`, else the environment (`env`), else the
/// profile files, else the region us-east-1 and no endpoint override.
pub fn s3_settings(given: &S3Options, env: &dyn Fn(&str) -> Option<String>) -> S3Settings {
    let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let home = env("HOME").map(PathBuf::from);
    let file = |var: &str, default: &str| {
        env(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(default)))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let creds = ini_section(
        &file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"),
        &profile,
    )
    .unwrap_or_default();
    let config_text = file("AWS_CONFIG_FILE", ".aws/config");
    // ~/.aws/config names profiles `[profile NAME]`, except `[default]`.
    let config = ini_section(&config_text, &format!("profile {profile}"))
        .or_else(|| ini_section(&config_text, &profile))
        .unwrap_or_default();
    let from = |v: &Option<String>, vars: &[&str], file: &HashMap<String, String>, key: &str| {
        v.clone()
            .or_else(|| vars.iter().find_map(|k| env(k)))
            .or_else(|| file.get(key).cloned())
    };
    S3Settings {
        endpoint: from(
            &given.endpoint,
            &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
            &config,
            "endpoint_url",
        ),
        region: from(
            &given.region,
            &["AWS_REGION", "AWS_DEFAULT_REGION"],
            &config,
            "region",
        )
        .unwrap_or_else(|| "us-east-1".into()),
        access_key_id: from(
            &given.access_key_id,
            &["AWS_ACCESS_KEY_ID"],
            &creds,
            "aws_access_key_id",
        ),
        secret_access_key: from(
            &given.secret_access_key,
            &["AWS_SECRET_ACCESS_KEY"],
            &creds,
            "aws_secret_access_key",
        ),
        session_token: from(
            &given.session_token,
            &["AWS_SESSION_TOKEN"],
            &creds,
            "aws_session_token",
        ),
    }
}

/// The runtime every object store's requests run on (a few threads:
/// they only wait on sockets).
fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        // reqwest's rustls is built without a provider; ring is ours.
        let _ = rustls::crypto::ring::default_provider().install_default();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("blockflow-objstore")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the object-store runtime: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// zarrs' sync API over the tokio runtime.
#[derive(Clone)]
struct BlockOn(tokio::runtime::Handle);

impl AsyncToSyncBlockOn for BlockOn {
    fn block_on<F: core::future::Future>(&self, future: F) -> F::Output {
        self.0.block_on(future)
    }
}

/// Retries: a few, quickly, so a server that is gone fails the run in
/// seconds rather than object_store's default three minutes.
fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(20),
        ..Default::default()
    }
}

fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(120))
}

/// The object store for `url` (rooted at the array: keys are the array's
/// own, `zarr.json`, `c/0/0`).
fn build(url: &str, given: &S3Options) -> Result<Arc<dyn ObjectStore>, IoError> {
    let bad = |why: String| IoError::Store {
        path: PathBuf::from(url),
        why,
    };
    match parse(url).map_err(bad)? {
        Location::S3 { bucket, prefix } => {
            let s = s3_settings(given, &|k| std::env::var(k).ok());
            let mut b = AmazonS3Builder::new()
                .with_bucket_name(&bucket)
                .with_region(&s.region)
                .with_retry(retry())
                .with_client_options(client_options());
            if let Some(e) = &s.endpoint {
                b = b
                    .with_endpoint(e.trim_end_matches('/'))
                    .with_allow_http(e.starts_with("http://"));
            }
            if let Some(k) = &s.access_key_id {
                b = b.with_access_key_id(k);
            }
            if let Some(k) = &s.secret_access_key {
                b = b.with_secret_access_key(k);
            }
            if let Some(k) = &s.session_token {
                b = b.with_token(k);
            }
            let store = b.build().map_err(|e| bad(e.to_string()))?;
            Ok(if prefix.is_empty() {
                Arc::new(store)
            } else {
                Arc::new(PrefixStore::new(store, prefix.as_str()))
            })
        }
        Location::Http { base } => {
            let store = HttpBuilder::new()
                .with_url(base.as_str())
                .with_retry(retry())
                .with_client_options(client_options().with_allow_http(true))
                .build()
                .map_err(|e| bad(e.to_string()))?;
            Ok(Arc::new(store))
        }
    }
}

type Adapter = AsyncToSyncStorageAdapter<AsyncObjectStore<Arc<dyn ObjectStore>>, BlockOn>;

/// Requests a remote store has made, for the run report and the tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RemoteStats {
    /// Whole-object reads.
    pub gets: u64,
    /// Ranged reads (calls; each may be several byte ranges).
    pub ranged_gets: u64,
    /// Byte ranges asked for by the ranged reads.
    pub ranges: u64,
    /// Bytes received.
    pub bytes_read: u64,
    /// Objects written.
    pub puts: u64,
    /// The most requests in flight at once.
    pub peak_in_flight: u64,
}

/// A zarrs store over object storage: the sync adapter, counting its
/// requests and remembering what it wrote.
pub struct RemoteStore {
    pub url: String,
    raw: Arc<dyn ObjectStore>,
    inner: Adapter,
    rt: &'static tokio::runtime::Runtime,
    gets: AtomicU64,
    ranged_gets: AtomicU64,
    ranges: AtomicU64,
    bytes_read: AtomicU64,
    puts: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    written: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStore")
            .field("url", &self.url)
            .finish()
    }
}

/// Counts a request in flight while it lives.
struct InFlight<'a>(&'a RemoteStore);

impl<'a> InFlight<'a> {
    fn new(s: &'a RemoteStore) -> Self {
        let now = s.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        s.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight(s)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RemoteStore {
    /// The store at `url` (settings from the environment and profile
    /// files, overridden by `given`).
    pub fn open(url: &str, given: &S3Options) -> Result<Arc<Self>, IoError> {
        let rt = runtime().map_err(|why| IoError::Store {
            path: PathBuf::from(url),
            why,
        })?;
        let raw = build(url, given)?;
        let inner = AsyncToSyncStorageAdapter::new(
            Arc::new(AsyncObjectStore::new(raw.clone())),
            BlockOn(rt.handle().clone()),
        );
        Ok(Arc::new(RemoteStore {
            url: url.to_string(),
            raw,
            inner,
            rt,
            gets: AtomicU64::new(0),
            ranged_gets: AtomicU64::new(0),
            ranges: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
            written: Mutex::new(BTreeSet::new()),
        }))
    }

    pub fn stats(&self) -> RemoteStats {
        RemoteStats {
            gets: self.gets.load(Ordering::Relaxed),
            ranged_gets: self.ranged_gets.load(Ordering::Relaxed),
            ranges: self.ranges.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            puts: self.puts.load(Ordering::Relaxed),
            peak_in_flight: self.peak_in_flight.load(Ordering::Relaxed),
        }
    }

    fn err(&self, why: impl std::fmt::Display) -> IoError {
        IoError::Store {
            path: PathBuf::from(&self.url),
            why: why.to_string(),
        }
    }

    /// Every key under the array (the bucket's listing under its prefix),
    /// sorted; a missing bucket or refused credentials are an error.
    pub fn keys(&self) -> Result<Vec<String>, IoError> {
        let raw = self.raw.clone();
        let metas: Vec<_> = self
            .rt
            .block_on(async move { raw.list(None).collect::<Vec<_>>().await });
        let mut keys = Vec::with_capacity(metas.len());
        for m in metas {
            keys.push(m.map_err(|e| self.err(e))?.location.to_string());
        }
        keys.sort();
        Ok(keys)
    }

    /// The object `key`, or None if there is none.
    pub fn get_key(&self, key: &str) -> Result<Option<Bytes>, IoError> {
        let k = StoreKey::new(key).map_err(|e| self.err(e))?;
        self.get(&k).map_err(|e| self.err(e))
    }

    /// Writes `key` only if no object has that name (HTTP If-None-Match);
    /// returns false if one has.
    pub fn put_if_absent(&self, key: &str, value: Vec<u8>) -> Result<bool, IoError> {
        let raw = self.raw.clone();
        let path = ObjPath::from(key);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let r = self
            .rt
            .block_on(async move { raw.put_opts(&path, PutPayload::from(value), opts).await });
        match r {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.err(format!("cannot write {key}: {e}"))),
        }
    }

    /// Removes `keys` (missing ones are no error).
    pub fn delete_keys(&self, keys: &[String]) -> Result<(), IoError> {
        for k in keys {
            let sk = StoreKey::new(k.as_str()).map_err(|e| self.err(e))?;
            self.inner
                .erase(&sk)
                .map_err(|e| self.err(format!("cannot remove {k}: {e}")))?;
        }
        Ok(())
    }

    /// The keys this store has written (or erased: an all-fill chunk).
    pub fn written(&self) -> BTreeSet<String> {
        self.written.lock().map(|w| w.clone()).unwrap_or_default()
    }

    fn note_written(&self, key: &StoreKey) {
        if let Ok(mut w) = self.written.lock() {
            w.insert(key.as_str().to_string());
        }
    }
}

impl ReadableStorageTraits for RemoteStore {
    fn get(&self, key: &StoreKey) -> Result<MaybeBytes, StorageError> {
        let _f = InFlight::new(self);
        self.gets.fetch_add(1, Ordering::Relaxed);
        let r = self.inner.get(key)?;
        if let Some(b) = &r {
            self.bytes_read.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        Ok(r)
    }
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        let _f = InFlight::new(self);
        self.ranged_gets.fetch_add(1, Ordering::Relaxed);
        let ranges: Vec<_> = byte_ranges.collect();
        self.ranges
            .fetch_add(ranges.len() as u64, Ordering::Relaxed);
        let Some(parts) = self
            .inner
            .get_partial_many(key, Box::new(ranges.into_iter()))?
        else {
            return Ok(None);
        };
        let parts: Vec<Result<Bytes, StorageError>> = parts.collect();
        let n: u64 = parts
            .iter()
            .map(|p| p.as_ref().map_or(0, |b| b.len() as u64))
            .sum();
        self.bytes_read.fetch_add(n, Ordering::Relaxed);
        Ok(Some(Box::new(parts.into_iter())))
    }
    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        let _f = InFlight::new(self);
        self.inner.size_key(key)
    }
    fn supports_get_partial(&self) -> bool {
        true
    }
}

impl ListableStorageTraits for RemoteStore {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        self.inner.list()
    }
    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        self.inner.list_prefix(prefix)
    }
    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        self.inner.list_dir(prefix)
    }
    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        self.inner.size_prefix(prefix)
    }
}

impl WritableStorageTraits for RemoteStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        let _f = InFlight::new(self);
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.set(key, value)?;
        self.note_written(key);
        Ok(())
    }
    fn set_partial_many(
        &self,
        key: &StoreKey,
        offset_values: OffsetBytesIterator,
    ) -> Result<(), StorageError> {
        self.inner.set_partial_many(key, offset_values)?;
        self.note_written(key);
        Ok(())
    }
    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        let _f = InFlight::new(self);
        self.inner.erase(key)?;
        self.note_written(key);
        Ok(())
    }
    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        self.inner.erase_prefix(prefix)
    }
    fn supports_set_partial(&self) -> bool {
        false
    }
}

/// The array metadata objects of Zarr v3 and v2.
pub const METADATA_KEYS: [&str; 3] = ["zarr.json", ".zarray", ".zattrs"];

/// The object beside the array that claims it for one run.
fn claim_key() -> &'static str {
    ".blockflow-claim"
}

/// Whether `key` is one blockflow's Zarr writer makes (metadata, v3
/// chunk keys under `c/`, v2 chunk keys of digits and separators), or
/// its claim.
fn zarr_like(key: &str) -> bool {
    METADATA_KEYS.contains(&key)
        || key == claim_key()
        || key.starts_with("c/")
        || (!key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == '/'))
}

/// A run's hold on an array prefix in object storage, where nothing can
/// be renamed. What "no output that looks complete" means there:
///
/// 1. the claim: `PREFIX/.blockflow-claim` is written with a conditional
///    put (`If-None-Match: *`), so of two runs on one prefix only one gets
///    it; the other fails at once, naming the holder. A run that dies
///    leaves its claim: the error says so and which object to remove;
/// 2. an existing array (its `zarr.json` or `.zarray`) is refused unless
///    `overwrite`; with it, the old metadata is removed before the first
///    chunk is written: from then on the prefix holds no readable array;
/// 3. chunks are written in place; the array's metadata last
///    ([`RemoteClaim::commit`]), so an array that can be opened has all
///    its chunks; a run that fails removes what it wrote (a killed one
///    leaves chunks with no metadata: nothing readable, and the next
///    overwrite removes them);
/// 4. after the new metadata, the old array's objects that the new one
///    did not rewrite are removed, then the claim.
pub struct RemoteClaim {
    pub store: Arc<RemoteStore>,
    /// The old array's keys, removed after the new metadata if not rewritten.
    old: Vec<String>,
    committed: bool,
}

impl std::fmt::Debug for RemoteClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteClaim")
            .field("url", &self.store.url)
            .finish()
    }
}

impl RemoteClaim {
    /// Claims the array at `url` for this run (see the type's doc).
    pub fn take(url: &str, overwrite: bool, given: &S3Options) -> Result<Self, IoError> {
        let path = PathBuf::from(url);
        if !url.starts_with("s3://") {
            return Err(IoError::Store {
                path,
                why: "only s3:// locations can be written (http(s) is read-only)".into(),
            });
        }
        let store = RemoteStore::open(url, given)?;
        // Listing first: a missing bucket or refused credentials fail here,
        // before anything is written.
        let keys = store.keys()?;
        let holder = format!(
            "pid {} on {}, `{}`, started {}",
            std::process::id(),
            hostname(),
            std::env::args().collect::<Vec<_>>().join(" "),
            unix_now()
        );
        if !store.put_if_absent(claim_key(), holder.into_bytes())? {
            let who = store
                .get_key(claim_key())
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|| "unknown".into());
            return Err(IoError::InUse {
                path: path.clone(),
                holder: format!("{who}; if that run is gone, remove the claim object"),
                lock: PathBuf::from(format!("{url}/{}", claim_key())),
            });
        }
        let mut claim = RemoteClaim {
            store,
            old: Vec::new(),
            committed: false,
        };
        let old: Vec<String> = keys.into_iter().filter(|k| k != claim_key()).collect();
        if !old.is_empty() {
            let array = old.iter().any(|k| k == "zarr.json" || k == ".zarray");
            if let Some(foreign) = old.iter().find(|k| !zarr_like(k)) {
                return Err(IoError::NotOurs {
                    path: path.clone(),
                    what: format!("a prefix holding other objects (e.g. {foreign})"),
                    made: "a Zarr array",
                });
            }
            if array && !overwrite {
                return Err(IoError::Exists { path });
            }
            if !array && !overwrite {
                return Err(IoError::Store {
                    path,
                    why: format!(
                        "holds {} objects of an unfinished Zarr array (a run that died); set `if_exists = \"overwrite\"` to replace them",
                        old.len()
                    ),
                });
            }
            // The old array stops being readable before any chunk changes.
            let meta: Vec<String> = METADATA_KEYS.iter().map(|k| k.to_string()).collect();
            claim.store.delete_keys(&meta)?;
            claim.old = old;
        }
        Ok(claim)
    }

    /// After the new metadata is written: removes the old array's objects
    /// the new one did not rewrite, then the claim.
    pub fn commit(&mut self) -> Result<(), IoError> {
        let written = self.store.written();
        let stale: Vec<String> = self
            .old
            .iter()
            .filter(|k| !written.contains(*k))
            .cloned()
            .collect();
        self.store.delete_keys(&stale)?;
        self.committed = true;
        self.store.delete_keys(&[claim_key().to_string()])
    }
}

impl Drop for RemoteClaim {
    /// Uncommitted: removes what this run wrote, then its claim (best
    /// effort: a server that is gone keeps them, and no metadata).
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let written: Vec<String> = self.store.written().into_iter().collect();
        let _ = self.store.delete_keys(&written);
        let _ = self.store.delete_keys(&[claim_key().to_string()]);
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn unix_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs} s after the Unix epoch")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        assert_eq!(
            url_of(Path::new("s3://b/p/a.zarr/")),
            Some("s3://b/p/a.zarr")
        );
        assert!(is_url(Path::new("https://h/x.zarr")));
        assert!(!is_url(Path::new("/data/s3:/x")));
        assert!(!is_url(Path::new("out/a.zarr")));
        assert_eq!(
            parse("s3://bucket/a/b.zarr"),
            Ok(Location::S3 {
                bucket: "bucket".into(),
                prefix: "a/b.zarr".into()
            })
        );
        assert!(parse("s3:///x").is_err());
    }

    #[test]
    fn settings_come_from_code_then_env_then_profile_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let creds = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = D\naws_secret_access_key = DS\n[work]\naws_access_key_id = W\naws_secret_access_key = WS\naws_session_token = WT\n",
        )
        .expect("write");
        std::fs::write(
            &config,
            "[default]\nregion = eu-west-1\n[profile work]\nregion = eu-central-1\nendpoint_url = http://127.0.0.1:9000\n",
        )
        .expect("write");
        let mut env: HashMap<&'static str, String> = HashMap::new();
        env.insert("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string());
        env.insert("AWS_CONFIG_FILE", config.display().to_string());
        fn get(e: &HashMap<&'static str, String>) -> impl Fn(&str) -> Option<String> {
            let e = e.clone();
            move |k| e.get(k).cloned()
        }
        let s = s3_settings(&S3Options::default(), &get(&env));
        assert_eq!(
            (s.access_key_id.as_deref(), s.region.as_str(), s.endpoint),
            (Some("D"), "eu-west-1", None)
        );
        env.insert("AWS_PROFILE", "work".into());
        let s = s3_settings(&S3Options::default(), &get(&env));
        assert_eq!(s.access_key_id.as_deref(), Some("W"));
        assert_eq!(s.session_token.as_deref(), Some("WT"));
        assert_eq!(s.region, "eu-central-1");
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        // The variables win over the files, and code over both.
        env.insert("AWS_ACCESS_KEY_ID", "E".into());
        env.insert("AWS_DEFAULT_REGION", "ap-south-1".into());
        env.insert("AWS_ENDPOINT_URL", "http://localhost:1".into());
        let s = s3_settings(&S3Options::default(), &get(&env));
        assert_eq!(
            (
                s.access_key_id.as_deref(),
                s.region.as_str(),
                s.endpoint.as_deref()
            ),
            (Some("E"), "ap-south-1", Some("http://localhost:1"))
        );
        let given = S3Options {
            region: Some("us-west-2".into()),
            ..Default::default()
        };
        assert_eq!(s3_settings(&given, &get(&env)).region, "us-west-2");
        // No profile anywhere: us-east-1, no keys (object_store then asks
        // the instance metadata service, as the AWS SDKs do).
        let s = s3_settings(&S3Options::default(), &|_| None);
        assert_eq!((s.region.as_str(), s.access_key_id), ("us-east-1", None));
    }

    #[test]
    fn only_zarr_keys_are_ours() {
        for k in [
            "zarr.json",
            ".zarray",
            "c/0/1",
            "0.1",
            "0/1",
            ".blockflow-claim",
        ] {
            assert!(zarr_like(k), "{k}");
        }
        for k in ["notes.txt", "other/zarr.json", ""] {
            assert!(!zarr_like(k), "{k}");
        }
    }
}
