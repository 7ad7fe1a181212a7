//! Zarr in object storage, against real servers on localhost: moto's S3
//! server (started per test from `.venv-s3`, which `scripts/setup` makes;
//! the tests fail, never skip, without it) and a static HTTP server with
//! Range requests (`scripts/range_server.py`).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use blockflow_core::{ArrayData, DType, Region};
use blockflow_io::remote::{RemoteClaim, RemoteStore};
use blockflow_io::zarr::{Codec, ZarrReader, ZarrWriteOptions, ZarrWriter};
use common::s3::{RangeServer, S3Server};
use common::*;

/// Runs the binary with the server's AWS variables; (code, stdout, stderr).
fn run_s3(s3: &S3Server, args: &[&str]) -> (i32, String, String) {
    let mut cmd = bin();
    s3.env(&mut cmd);
    let out = cmd.args(args).output().expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn read_url(s3: &S3Server, url: &str) -> ArrayData {
    let r = ZarrReader::open_with(Path::new(url), &s3.options()).expect("opens");
    let shape = r.info.shape.clone();
    r.read(&Region::new(vec![0; shape.len()], shape), &[])
        .expect("reads")
}

fn keys(s3: &S3Server, url: &str) -> Vec<String> {
    RemoteStore::open(url, &s3.options())
        .expect("store")
        .keys()
        .expect("lists")
}

/// A generated array written by the binary to `path` (a folder or a URL).
fn generate_to(s3: &S3Server, dir: &Path, path: &str, shape: &str, chunks: &str, extra: &str) {
    let cfg = write_config(
        dir,
        "gen.toml",
        &format!(
            "[pipeline]\nname = \"gen\"\nmemory = \"256 MiB\"\n[stage.g]\nkind = \"synthetic\"\npattern = \"terrain\"\nshape = {shape}\nchunks = {chunks}\ndtype = \"uint8\"\nseed = 3\n[stage.w]\nkind = \"write-zarr\"\ninputs = [\"g\"]\npath = \"local.zarr\"\nif_exists = \"overwrite\"\n{extra}"
        ),
    );
    let set = format!("w.path={path}");
    let (code, _, err) = run_s3(
        s3,
        &["run", "-q", cfg.to_str().expect("utf8"), "--set", &set],
    );
    assert_eq!(code, 0, "{err}");
}

/// Seed 003 read from and written to S3 gives what it gives on disk.
#[test]
fn seed003_from_and_to_s3_matches_disk() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let local = d.join("terrain.zarr");
    let (shape, chunks) = ("[600, 700, 4]", "[200, 200, 4]");
    generate_to(&s3, d, local.to_str().expect("utf8"), shape, chunks, "");
    let terrain = s3.url("seed003/terrain.zarr");
    generate_to(&s3, d, &terrain, shape, chunks, "");
    assert_eq!(read_url(&s3, &terrain), read_all(&local));

    let cfg = root().join("configs/elevation.toml");
    let cfg = cfg.to_str().expect("utf8");
    let run = |out: &Path, sets: &[String]| {
        let mut args = vec![
            "run".to_string(),
            "-q".into(),
            cfg.to_string(),
            "--out".into(),
            out.display().to_string(),
            "--set".into(),
            "terrain.kind=read-zarr".into(),
        ];
        for s in sets {
            args.push("--set".into());
            args.push(s.clone());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = run_s3(&s3, &refs);
        assert_eq!(code, 0, "{err}");
    };
    let (a, b) = (d.join("disk"), d.join("s3"));
    // The RGB as a plain array (its OME-Zarr form commits by a local
    // rename, refused in object storage).
    run(
        &a,
        &[
            format!("terrain.path={}", local.display()),
            "rgb_out.ome=none".into(),
        ],
    );
    let (rgb, bstd) = (s3.url("seed003/rgb.zarr"), s3.url("seed003/block-std.zarr"));
    run(
        &b,
        &[
            format!("terrain.path={terrain}"),
            format!("rgb_out.path={rgb}"),
            "rgb_out.ome=none".into(),
            format!("block_std_out.path={bstd}"),
        ],
    );
    assert_eq!(
        read_json(a.join("elevation-summary.json")),
        read_json(b.join("elevation-summary.json"))
    );
    assert_eq!(
        std::fs::read(a.join("elevation-block-std.png")).expect("png"),
        std::fs::read(b.join("elevation-block-std.png")).expect("png")
    );
    assert_eq!(
        read_url(&s3, &bstd),
        read_all(&a.join("elevation-block-std.zarr"))
    );
    assert_eq!(read_url(&s3, &rgb), read_all(&a.join("elevation-rgb.zarr")));
    // Nothing but the arrays: no claim or temporary object left.
    for k in keys(&s3, &rgb) {
        assert!(k == "zarr.json" || k.starts_with("c/"), "{k}");
    }
    // An OME-Zarr image commits by a local rename: refused there, by name.
    let ome = format!("rgb_out.path={}", s3.url("seed003/ome.zarr"));
    let tp = format!("terrain.path={terrain}");
    let (code, _, err) = run_s3(
        &s3,
        &[
            "plan",
            cfg,
            "--set",
            "terrain.kind=read-zarr",
            "--set",
            &tp,
            "--set",
            &ome,
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("OME-Zarr output is written locally") && err.contains("seed003/ome.zarr"),
        "{err}"
    );
    // `inspect` reads the metadata over the network too.
    let (code, out, err) = run_s3(&s3, &["inspect", &bstd]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("shape    (3, 4)"), "{out}");
}

/// A missing bucket and refused credentials: clear errors naming the URL,
/// before anything is written.
#[test]
fn a_missing_bucket_and_bad_credentials_are_named() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        "w.toml",
        "[pipeline]\nname = \"w\"\n[stage.g]\nkind = \"synthetic\"\npattern = \"ramp\"\nshape = [40, 40]\nchunks = [20, 20]\n[stage.w]\nkind = \"write-zarr\"\ninputs = [\"g\"]\npath = \"x.zarr\"\n",
    );
    let cfg = cfg.to_str().expect("utf8");
    let url = "s3://no-such-bucket/a.zarr";
    let (code, _, err) = run_s3(&s3, &["run", "-q", cfg, "--set", &format!("w.path={url}")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(url), "{err}");
    assert!(
        err.contains("NoSuchBucket") || err.contains("bucket"),
        "{err}"
    );
    // Reading from it: a plan error naming the URL.
    let (code, _, err) = run_s3(
        &s3,
        &[
            "plan",
            cfg,
            "--set",
            "g.kind=read-zarr",
            "--set",
            &format!("g.path={url}"),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(url), "{err}");
    // An existing bucket, an empty prefix: no such array.
    let missing = s3.url("nothing.zarr");
    let (code, _, err) = run_s3(
        &s3,
        &[
            "plan",
            cfg,
            "--set",
            "g.kind=read-zarr",
            "--set",
            &format!("g.path={missing}"),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{missing}: no such file")), "{err}");

    // Bad credentials: the secret is wrong.
    let url = s3.url("bad-creds.zarr");
    let mut cmd = bin();
    s3.env(&mut cmd).env("AWS_SECRET_ACCESS_KEY", "wrong");
    let out = cmd
        .args(["run", "-q", cfg, "--set", &format!("w.path={url}")])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&url), "{err}");
    assert!(
        err.contains("SignatureDoesNotMatch") || err.contains("403"),
        "{err}"
    );
    assert!(keys(&s3, &url).is_empty(), "nothing written");
}

/// The claim is a conditional put: a second run on a claimed prefix fails
/// at once naming the holder; an array that exists is refused without
/// overwrite; overwrite leaves exactly the new array.
#[test]
fn claims_refusals_and_overwrite() {
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().expect("tmp");
    let url = s3.url("claimed/a.zarr");
    let claim = RemoteClaim::take(&url, false, &s3.options()).expect("claims");
    let cfg = write_config(
        dir.path(),
        "w.toml",
        "[pipeline]\nname = \"w\"\n[stage.g]\nkind = \"synthetic\"\npattern = \"ramp\"\nshape = [40, 40]\nchunks = [10, 10]\n[stage.w]\nkind = \"write-zarr\"\ninputs = [\"g\"]\npath = \"x.zarr\"\n",
    );
    let cfg = cfg.to_str().expect("utf8");
    let set = format!("w.path={url}");
    let (code, _, err) = run_s3(&s3, &["run", "-q", cfg, "--set", &set]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("in use by another blockflow run"), "{err}");
    assert!(err.contains(".blockflow-claim"), "{err}");
    assert!(RemoteClaim::take(&url, false, &s3.options()).is_err());
    drop(claim);
    let (code, _, err) = run_s3(&s3, &["run", "-q", cfg, "--set", &set]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(keys(&s3, &url).len(), 17, "zarr.json and 16 chunks");
    // Exists: refused without overwrite, untouched.
    let (code, _, err) = run_s3(&s3, &["run", "-q", cfg, "--set", &set]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(keys(&s3, &url).len(), 17);
    // Overwritten by a smaller array: only its objects remain.
    let (code, _, err) = run_s3(
        &s3,
        &[
            "run",
            "-q",
            cfg,
            "--set",
            &set,
            "--set",
            "w.if_exists=overwrite",
            "--set",
            "g.shape=[20, 20]",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let mut k = keys(&s3, &url);
    k.sort();
    assert_eq!(k, vec!["c/0/0", "c/0/1", "c/1/0", "c/1/1", "zarr.json"]);
    assert_eq!(read_url(&s3, &url).shape(), &[20, 20]);
}

/// A writer killed mid-run leaves chunks but no metadata: nothing opens
/// as an array; the next run names the dead run's claim; removed, an
/// overwrite replaces the leftovers. A server that goes away mid-run fails
/// the run in seconds, naming the URL.
#[test]
fn a_killed_writer_or_a_stopped_server_leaves_nothing_that_looks_complete() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        "big.toml",
        "[pipeline]\nname = \"big\"\nmemory = \"256 MiB\"\n[stage.g]\nkind = \"synthetic\"\npattern = \"noise\"\nshape = [3000, 3000]\nchunks = [100, 100]\ndtype = \"float64\"\n[stage.w]\nkind = \"write-zarr\"\ninputs = [\"g\"]\npath = \"x.zarr\"\ncodec = \"none\"\nparallel = 2\n",
    );
    let cfg = cfg.to_str().expect("utf8");
    for stop_server in [false, true] {
        let mut s3 = S3Server::start();
        let url = s3.url("killed/a.zarr");
        let mut cmd = bin();
        s3.env(&mut cmd);
        let mut child = cmd
            .args(["run", "-q", cfg, "--set", &format!("w.path={url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns");
        // Wait for some chunks to land.
        let t = Instant::now();
        while keys(&s3, &url).len() < 20 {
            assert!(t.elapsed() < Duration::from_secs(60), "no chunks written");
            assert!(child.try_wait().expect("wait").is_none(), "ended early");
            std::thread::sleep(Duration::from_millis(50));
        }
        if stop_server {
            s3.stop();
            let t = Instant::now();
            let out = child.wait_with_output().expect("waits");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(err.contains(&url), "{err}");
            assert!(t.elapsed() < Duration::from_secs(90), "{:?}", t.elapsed());
            continue;
        }
        child.kill().expect("kills");
        let _ = child.wait();
        let left = keys(&s3, &url);
        assert!(left.iter().any(|k| k.starts_with("c/")), "{left:?}");
        assert!(!left.iter().any(|k| k == "zarr.json"), "{left:?}");
        let e = ZarrReader::open_with(Path::new(&url), &s3.options()).expect_err("not an array");
        assert!(e.to_string().contains("neither zarr.json"), "{e}");
        // The dead run's claim names it; once removed, overwrite cleans up.
        let (code, _, err) = run_s3(
            &s3,
            &[
                "run",
                "-q",
                cfg,
                "--set",
                &format!("w.path={url}"),
                "--set",
                "w.if_exists=overwrite",
                "--set",
                "g.shape=[200, 200]",
            ],
        );
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("in use") && err.contains(".blockflow-claim"),
            "{err}"
        );
        RemoteStore::open(&url, &s3.options())
            .expect("store")
            .delete_keys(&[".blockflow-claim".into()])
            .expect("removes");
        let (code, _, err) = run_s3(
            &s3,
            &[
                "run",
                "-q",
                cfg,
                "--set",
                &format!("w.path={url}"),
                "--set",
                "w.if_exists=overwrite",
                "--set",
                "g.shape=[200, 200]",
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(keys(&s3, &url).len(), 5, "zarr.json and 4 chunks");
    }
}

/// A sharded array on S3 is read by ranges: a shard's index, then only
/// the inner chunks a region needs, never a whole shard.
#[test]
fn sharded_arrays_on_s3_are_read_with_ranged_requests() {
    let s3 = S3Server::start();
    let url = s3.url("sharded/a.zarr");
    let mut o = ZarrWriteOptions::plain(3, DType::U16, vec![64, 64], vec![8, 8]);
    o.shards = Some(vec![32, 32]);
    o.codec = Codec::None;
    let w = ZarrWriter::create_remote(&url, &o, &s3.options()).expect("creates");
    let full: Vec<u16> = (0..64 * 64).map(|i| i as u16).collect();
    let full = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[64, 64]), full).expect("shape");
    w.write(
        &Region::new(vec![0, 0], vec![64, 64]),
        &ArrayData::U16(full.clone()),
        &[0, 0],
    )
    .expect("writes");
    w.finish().expect("finishes");
    let r = ZarrReader::open_with(Path::new(&url), &s3.options()).expect("opens");
    assert_eq!(r.info.shards, Some(vec![32, 32]));
    let before = r.remote_stats().expect("remote");
    let got = r
        .read(&Region::new(vec![8, 16], vec![8, 8]), &[1, 2])
        .expect("reads");
    let after = r.remote_stats().expect("remote");
    assert_eq!(
        got,
        ArrayData::U16(full.slice(ndarray::s![8..16, 16..24]).to_owned().into_dyn())
    );
    assert_eq!(after.gets, before.gets, "no whole-object read");
    assert!(after.ranged_gets > before.ranged_gets, "{after:?}");
    // One inner chunk (128 bytes) and the shard's index (16 chunks x 16
    // bytes + its crc32c), not the 2048-byte shard.
    let fetched = after.bytes_read - before.bytes_read;
    assert!(fetched <= 128 + 16 * 16 + 4, "{fetched} bytes fetched");
    // Reads in parallel overlap on the network.
    use rayon::prelude::*;
    let regions: Vec<Region> = (0..8)
        .flat_map(|i| (0..8).map(move |j| Region::new(vec![8 * i, 8 * j], vec![8, 8])))
        .collect();
    rayon::ThreadPoolBuilder::new()
        .num_threads(8)
        .build()
        .expect("pool")
        .install(|| {
            regions.par_iter().for_each(|g| {
                r.read(g, &[]).expect("reads");
            })
        });
    assert!(
        r.remote_stats().expect("remote").peak_in_flight > 1,
        "{:?}",
        r.remote_stats()
    );
}

/// A Zarr array read over http(s): the same values, by Range requests.
#[test]
fn an_http_read_of_a_zarr() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let served = d.join("www");
    std::fs::create_dir_all(&served).expect("mkdir");
    let local = served.join("a.zarr");
    let mut o = ZarrWriteOptions::plain(3, DType::I32, vec![40, 30], vec![5, 5]);
    o.shards = Some(vec![20, 15]);
    o.codec = Codec::Zstd;
    o.level = 3;
    let w = ZarrWriter::create(&local, &o).expect("creates");
    let full: Vec<i32> = (0..40 * 30).map(|i| i * 7 - 300).collect();
    let full = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[40, 30]), full).expect("shape");
    w.write(
        &Region::new(vec![0, 0], vec![40, 30]),
        &ArrayData::I32(full),
        &[0, 0],
    )
    .expect("writes");
    w.finish().expect("finishes");
    let http = RangeServer::start(&served, &d.join("gets.log"));
    let url = format!("{}/a.zarr", http.url);
    let cfg = write_config(
        d,
        "h.toml",
        &format!("[pipeline]\nname = \"h\"\n[stage.r]\nkind = \"read-zarr\"\npath = \"{url}\"\n[stage.w]\nkind = \"write-zarr\"\ninputs = [\"r\"]\npath = \"copy.zarr\"\n"),
    );
    let (code, _, err) = blockflow(&["run", "-q", cfg.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(read_all(&d.join("copy.zarr")), read_all(&local));
    let gets = http.gets();
    let shard_gets: Vec<&String> = gets.iter().filter(|g| g.contains("/c/")).collect();
    assert!(!shard_gets.is_empty(), "{gets:?}");
    assert!(
        shard_gets.iter().all(|g| g.contains("bytes=")),
        "every shard read by ranges: {gets:?}"
    );
    // A missing one: a plan error naming the URL.
    let missing = format!("{}/nope.zarr", http.url);
    let (code, _, err) = blockflow(&[
        "plan",
        cfg.to_str().expect("utf8"),
        "--set",
        &format!("r.path={missing}"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&missing), "{err}");
}
