//! Local servers for the object-storage tests: moto's S3 server (from the
//! virtualenv `scripts/setup` makes, `.venv-s3`) and a static HTTP server
//! with Range requests (`scripts/range_server.py`, the standard library
//! only). Each is started on a free port, waited for, and killed when its
//! handle is dropped (and stops by itself when its standard input closes,
//! so a test process that dies takes its servers with it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use blockflow_io::remote::S3Options;

use super::root;

/// A running moto S3 server with one user and one bucket.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
    pub key: String,
    pub secret: String,
    pub bucket: String,
}

fn first_line(child: &mut Child, what: &str) -> serde_json::Value {
    let out = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{what}: cannot read its first line: {e}"));
    serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("{what} did not start (it printed {line:?}: {e})"))
}

impl S3Server {
    /// Starts moto's server; fails (never skips) if `.venv-s3` is missing.
    pub fn start() -> Self {
        let py = root().join(".venv-s3/bin/python");
        assert!(
            py.exists(),
            "the object-storage tests need moto's S3 server in {}: run ./scripts/setup (it makes it with `python3 -m venv .venv-s3 && .venv-s3/bin/pip install 'moto[server]'`)",
            py.display()
        );
        let mut child = Command::new(&py)
            .arg(root().join("scripts/s3_server.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", py.display()));
        let v = first_line(&mut child, "moto's S3 server (scripts/s3_server.py)");
        let s = |k: &str| v[k].as_str().expect("a string").to_string();
        S3Server {
            endpoint: s("endpoint"),
            key: s("key"),
            secret: s("secret"),
            bucket: s("bucket"),
            child,
        }
    }

    /// `s3://BUCKET/key`.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// The settings for this server, for readers and writers in this process.
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some(self.key.clone()),
            secret_access_key: Some(self.secret.clone()),
            session_token: None,
        }
    }

    /// Points `cmd` at this server by the standard AWS variables (and at
    /// no profile file, so the machine's own ~/.aws plays no part).
    pub fn env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL_S3")
    }

    /// Kills the server now (a server that goes away mid-run).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A static HTTP server with Range requests over a folder, logging each GET.
pub struct RangeServer {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl RangeServer {
    pub fn start(dir: &Path, log: &Path) -> Self {
        let mut child = Command::new("python3")
            .arg(root().join("scripts/range_server.py"))
            .arg(dir)
            .arg(log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs scripts/range_server.py");
        let v = first_line(&mut child, "scripts/range_server.py");
        RangeServer {
            url: v["url"].as_str().expect("url").to_string(),
            log: log.to_path_buf(),
            child,
        }
    }

    /// The GET lines logged so far (`GET PATH RANGE-OR-whole`).
    pub fn gets(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for RangeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
