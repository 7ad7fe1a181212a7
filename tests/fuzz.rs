//! Fuzzes the config parser and planner with mutants of `configs/*.toml`:
//! numbers set to extremes, strings swapped, keys and lines deleted,
//! duplicated or moved, kinds changed, expressions nested, text truncated.
//! No mutant may panic, abort or hang, and every refusal is a diagnostic
//! with `file:line:col` (exit 2 through the binary).
//!
//! `FUZZ_MUTANTS=N` (default 5000) and `FUZZ_SEED=S` (default 11) choose
//! the run; a longer one:
//!   FUZZ_MUTANTS=200000 cargo test --release --test fuzz -- --nocapture
//! The mutant being planned is written to `$CARGO_TARGET_TMPDIR/fuzz-current.toml`
//! first, so an abort leaves it behind.

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use blockflow_runtime::config::{self, ConfigError};
use blockflow_runtime::plan;
use common::*;

/// A small seeded generator (xorshift64*): no dependency for a fuzzer.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "3",
    "-0.0",
    "0.5",
    "1e-300",
    "1e18",
    "-1e18",
    "1e308",
    "inf",
    "-inf",
    "nan",
    "9223372036854775807",
    "-9223372036854775808",
    "4294967296",
    "1099511627776",
    "65536",
    "1_000_000",
    "0x7fffffff",
];

const STRINGS: &[&str] = &[
    "",
    "x",
    "..",
    "/",
    ".",
    "nonexistent/*.png",
    "float64",
    "uint8",
    "bool",
    "overwrite",
    "reflect",
    "wrap",
    "constant",
    "gaussian",
    "sobel",
    "mean",
    "argmax",
    "100 GiB",
    "0 B",
    "1 B",
    "-5 MiB",
    "18446744073709551616 B",
    "2s",
    "-1s",
    "1e300 h",
    "x[..., 0]",
    "abs(x,",
    "sum(x, axis=",
    "x[",
    "((((x))))",
    "x[0:0]",
    "x[::0]",
    "x // 0",
    "x ** x ** x ** x",
    "where(x > 0, x, nan)",
    "u8(x) & 3",
];

const KINDS: &[&str] = &[
    "synthetic",
    "read-zarr",
    "read-images",
    "read-hdf5",
    "read-hdf5-stack",
    "expr",
    "filter",
    "median",
    "structure-tensor",
    "rechunk",
    "reduce",
    "slice",
    "take",
    "diff",
    "join",
    "stack",
    "transpose",
    "matmul",
    "pca",
    "rescale",
    "zscore",
    "register",
    "shift",
    "write-zarr",
    "write-hdf5",
    "write-blocks",
    "write-json",
    "write-csv",
    "write-png",
    "nonsense",
];

/// Byte ranges of number literals (outside strings and comments).
fn numbers(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut in_str, mut in_comment) = (0, false, false);
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => in_comment = false,
            b'#' if !in_str => in_comment = true,
            b'"' if !in_comment => in_str = !in_str,
            _ => {}
        }
        let starts = !in_str
            && !in_comment
            && (c.is_ascii_digit() || c == b'-')
            && (i == 0 || matches!(b[i - 1], b' ' | b'[' | b',' | b'='));
        if starts {
            let s = i;
            i += 1;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'.' | b'_' | b'-' | b'+'))
            {
                i += 1;
            }
            if text[s..i].bytes().any(|c| c.is_ascii_digit()) {
                out.push((s, i));
            }
            continue;
        }
        i += 1;
    }
    out
}

/// Byte ranges of string contents (between the quotes, one line).
fn strings(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut off = 0;
    for line in text.split_inclusive('\n') {
        let code = line.split('#').next().unwrap_or("");
        let q: Vec<usize> = code.match_indices('"').map(|(i, _)| i).collect();
        for pair in q.chunks(2) {
            if let [a, b] = pair {
                out.push((off + a + 1, off + b));
            }
        }
        off += line.len();
    }
    out
}

fn replace(text: &str, (a, b): (usize, usize), with: &str) -> String {
    format!("{}{}{}", &text[..a], with, &text[b..])
}

fn floor_char(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One mutation of `text`; `others` are lines of every config.
fn mutate_once(rng: &mut Rng, text: &str, others: &[&str]) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return format!("{}\n", *rng.pick(others));
    }
    let n = lines.len();
    let join = |v: Vec<&str>| v.join("\n") + "\n";
    match rng.below(14) {
        0..=2 => {
            let nums = numbers(text);
            if nums.is_empty() {
                return text.to_string();
            }
            let r = *rng.pick(&nums);
            replace(text, r, rng.pick::<&str>(NUMBERS))
        }
        3 | 4 => another_string(rng, text),
        5 => {
            let mut v = lines.clone();
            v.remove(rng.below(n));
            join(v)
        }
        6 => {
            let mut v = lines.clone();
            let l = lines[rng.below(n)];
            v.insert(rng.below(n + 1), l);
            join(v)
        }
        7 => {
            let mut v = lines.clone();
            let (a, b) = (rng.below(n), rng.below(n));
            v.swap(a, b);
            join(v)
        }
        8 => text[..floor_char(text, rng.below(text.len() + 1))].to_string(),
        9 => another_kind(rng, text),
        10 => deeper_expr(rng, text),
        11 => another_type(rng, text),
        12 => {
            // A line of another config (keys of other stages).
            let mut v = lines.clone();
            v.insert(rng.below(n + 1), *rng.pick(others));
            join(v)
        }
        _ => stray_character(rng, text),
    }
}

/// A string value replaced by a hostile one or another of the config's.
fn another_string(rng: &mut Rng, text: &str) -> String {
    let strs = strings(text);
    if strs.is_empty() {
        return text.to_string();
    }
    let r = *rng.pick(&strs);
    let with = if rng.below(2) == 0 {
        (*rng.pick(STRINGS)).to_string()
    } else {
        let o = *rng.pick(&strs);
        text[o.0..o.1].to_string()
    };
    replace(text, r, &with)
}

/// Another stage kind.
fn another_kind(rng: &mut Rng, text: &str) -> String {
    match text
        .match_indices("kind = \"")
        .nth(rng.below(40) % text.matches("kind = \"").count().max(1))
    {
        Some((i, m)) => {
            let s = i + m.len();
            let e = s + text[s..].find('"').unwrap_or(0);
            replace(text, (s, e), rng.pick::<&str>(KINDS))
        }
        None => text.to_string(),
    }
}

/// Nesting and length in an expression.
fn deeper_expr(rng: &mut Rng, text: &str) -> String {
    match text.find("expr = \"") {
        Some(i) => {
            let s = i + "expr = \"".len();
            let e = s + text[s..].find('"').unwrap_or(0);
            let inner = &text[s..e];
            let k = *rng.pick(&[1usize, 10, 99, 100, 101, 500, 5000]);
            let with = match rng.below(5) {
                0 => format!("{}{inner}{}", "(".repeat(k), ")".repeat(k)),
                1 => format!("{}{inner}{}", "abs(".repeat(k), ")".repeat(k)),
                2 => vec![inner; k.min(3000)].join("+"),
                3 => format!("{}{inner}", "-".repeat(k)),
                _ => format!("{inner}{}", "[...]".repeat(k.min(300))),
            };
            replace(text, (s, e), &with)
        }
        None => text.to_string(),
    }
}

/// A number replaced by a value of another type.
fn another_type(rng: &mut Rng, text: &str) -> String {
    let nums = numbers(text);
    if nums.is_empty() {
        return text.to_string();
    }
    let r = *rng.pick(&nums);
    let with = *rng.pick(&[
        "\"s\"",
        "[]",
        "[1, 2]",
        "[[1]]",
        "true",
        "{ a = 1 }",
        "[1, \"a\"]",
        "[0, 0, 0, 0, 0, 0, 0, 0]",
        "[9223372036854775807, 9223372036854775807]",
        "[4294967296, 4294967296]",
    ]);
    replace(text, r, with)
}

/// A stray character or bracket.
fn stray_character(rng: &mut Rng, text: &str) -> String {
    let i = floor_char(text, rng.below(text.len() + 1));
    let c = *rng.pick(&[
        "[",
        "]",
        "\"",
        "=",
        "\n[stage.x]\n",
        "\u{0}",
        "é",
        "{",
        "'''",
    ]);
    format!("{}{c}{}", &text[..i], &text[i..])
}

fn mutant(rng: &mut Rng, base: &str, others: &[&str]) -> String {
    let mut t = base.to_string();
    for _ in 0..1 + rng.below(3) {
        t = mutate_once(rng, &t, others);
    }
    t
}

/// A folder laid out as the repository: `configs/` with the shipped
/// pipelines, and small inputs where they read (`data/`, `out/`), so
/// mutants of readers get past opening their input.
fn fixture() -> (tempfile::TempDir, Vec<(PathBuf, String)>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("configs")).expect("configs");
    std::fs::create_dir_all(dir.join("out")).expect("out");
    generate("cells", &dir.join("data/cells"), 3, 16, 1);
    generate("timeseries", &dir.join("data/volumes"), 2, 8, 1);
    generate("timeseries", &dir.join("data/incoming"), 2, 8, 1);
    let inputs = write_config(
        dir,
        "inputs.toml",
        r#"[pipeline]
memory = "64 MiB"
report = "out/inputs.report.json"
[stage.rgb]
kind = "synthetic"
pattern = "terrain"
shape = [40, 40, 3]
chunks = [20, 20, 3]
dtype = "uint8"
[stage.vol]
kind = "synthetic"
shape = [3, 10, 10, 10]
chunks = [1, 10, 10, 10]
dtype = "float32"
[stage.rgb_out]
kind = "write-zarr"
inputs = ["rgb"]
path = "out/terrain-rgb.zarr"
[stage.vol_out]
kind = "write-zarr"
inputs = ["vol"]
path = "out/ingest.zarr"
"#,
    );
    let (code, _, err) = blockflow(&["run", "-q", &inputs.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    let mut bases = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(root().join("configs"))
        .expect("configs/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    for p in names {
        let text = std::fs::read_to_string(&p).expect("read config");
        let at = dir.join("configs").join(p.file_name().expect("name"));
        std::fs::write(&at, &text).expect("copy config");
        bases.push((at, text));
    }
    assert!(bases.len() >= 8, "configs/ holds the pipelines");
    (tmp, bases)
}

#[derive(Debug)]
enum Outcome {
    Accepted,
    Refused(ConfigError),
    Panicked(String),
}

/// Parses and plans in-process, as `blockflow plan` does.
fn plan_text(path: &Path, text: &str) -> Outcome {
    let r = std::panic::catch_unwind(|| {
        let raw = config::parse(path, text)?;
        let p = plan::plan(&raw)?;
        // Rendering the plan must not panic either.
        let _ = (p.to_text(), p.to_dot());
        Ok::<_, ConfigError>(())
    });
    match r {
        Ok(Ok(())) => Outcome::Accepted,
        Ok(Err(e)) => Outcome::Refused(e),
        Err(p) => Outcome::Panicked(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        ),
    }
}

/// Whether every diagnostic of a refusal is at `path:LINE:COL`.
fn located(e: &ConfigError, path: &Path) -> Result<(), String> {
    let ConfigError::Invalid(list) = e else {
        return Err(format!("not a diagnostic: {e}"));
    };
    if list.is_empty() {
        return Err("a refusal with no diagnostic".into());
    }
    let prefix = format!("{}:", path.display());
    for d in list {
        let ok = d.location.strip_prefix(&prefix).is_some_and(|lc| {
            let mut it = lc.split(':');
            let (l, c) = (it.next(), it.next());
            it.next().is_none()
                && [l, c].iter().all(|x| {
                    x.is_some_and(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
                })
        });
        if !ok {
            return Err(format!("no file:line:col in `{d}`"));
        }
    }
    if !e.to_string().contains(&prefix) {
        return Err(format!("the rendered text lacks the file: {e}"));
    }
    Ok(())
}

/// The most one mutant may take to plan.
const PER_MUTANT: Duration = Duration::from_secs(10);

/// A number from the environment variable `name`, or `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A worker that plans each (path, text) it is sent and sends the outcome
/// back; it runs with a 2 MiB stack (a test thread's, less than the
/// binary's main thread).
fn spawn_planner() -> (
    mpsc::Sender<(PathBuf, String)>,
    mpsc::Receiver<Outcome>,
    std::thread::JoinHandle<()>,
) {
    let (to_worker, jobs) = mpsc::channel::<(PathBuf, String)>();
    let (to_main, results) = mpsc::channel::<Outcome>();
    let worker = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            for (path, text) in jobs {
                if to_main.send(plan_text(&path, &text)).is_err() {
                    break;
                }
            }
        })
        .expect("spawn");
    (to_worker, results, worker)
}

/// What the mutants came to.
#[derive(Default)]
struct Tally {
    accepted: usize,
    refused: usize,
    failures: Vec<String>,
    slowest: (Duration, String),
    /// A few refused mutants, to run through the real binary.
    refused_samples: Vec<(PathBuf, String)>,
}

impl Tally {
    /// Counts mutant `i` of `path` (`text`), planned in `took`.
    fn record(&mut self, i: usize, path: &Path, text: String, outcome: Outcome, took: Duration) {
        if took > self.slowest.0 {
            self.slowest = (took, format!("mutant {i} of {}", path.display()));
        }
        match outcome {
            Outcome::Accepted => self.accepted += 1,
            Outcome::Refused(e) => {
                self.refused += 1;
                if let Err(m) = located(&e, path) {
                    self.failures
                        .push(format!("mutant {i} of {}: {m}\n{text}", path.display()));
                }
                if self.refused_samples.len() < 6 && i.is_multiple_of(97) {
                    self.refused_samples.push((path.to_path_buf(), text));
                }
            }
            Outcome::Panicked(m) => self.failures.push(format!(
                "mutant {i} of {}: panicked: {m}\n{text}",
                path.display()
            )),
        }
    }
}

#[test]
fn mutated_configs_never_panic_and_every_refusal_has_a_location() {
    let count: usize = env_or("FUZZ_MUTANTS", 5000);
    let seed: u64 = env_or("FUZZ_SEED", 11);
    let (_tmp, bases) = fixture();
    let all_lines: Vec<String> = bases
        .iter()
        .flat_map(|(_, t)| t.lines().map(str::to_string))
        .collect();
    let current = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-current.toml");
    // Plans run on a worker with a 2 MiB stack; the test waits on each with
    // a deadline.
    let (to_worker, results, worker) = spawn_planner();
    // Panics are counted, not printed 2000 times.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let t0 = Instant::now();
    for i in 0..count {
        let (path, base) = &bases[i % bases.len()];
        let others: Vec<&str> = all_lines.iter().map(String::as_str).collect();
        let text = mutant(&mut rng, base, &others);
        std::fs::write(&current, &text).expect("write current mutant");
        let started = Instant::now();
        to_worker
            .send((path.clone(), text.clone()))
            .expect("worker alive");
        let outcome = match results.recv_timeout(PER_MUTANT) {
            Ok(o) => o,
            Err(_) => {
                std::panic::set_hook(hook);
                panic!(
                    "mutant {i} of {} took more than {PER_MUTANT:?} to plan (seed {seed}):\n{text}",
                    path.display()
                );
            }
        };
        tally.record(i, path, text, outcome, started.elapsed());
    }
    std::panic::set_hook(hook);
    drop(to_worker);
    worker.join().expect("worker");
    let Tally {
        accepted,
        refused,
        failures,
        slowest,
        refused_samples,
    } = tally;
    eprintln!(
        "fuzz: {count} mutants (seed {seed}) in {:.1?}: {accepted} accepted, {refused} refused, {} failures; slowest {:.1?} ({})",
        t0.elapsed(),
        failures.len(),
        slowest.0,
        slowest.1
    );
    assert!(
        failures.is_empty(),
        "{} of {count} mutants failed; the first:\n{}",
        failures.len(),
        failures
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n----\n")
    );
    assert!(refused > count / 4, "the mutants should mostly be refused");
    // A few refusals through the real binary: exit 2, with the location.
    for (path, text) in refused_samples {
        std::fs::write(&path, &text).expect("write mutant");
        let (code, out, err) = blockflow(&["plan", &path.to_string_lossy()]);
        assert_eq!(code, 2, "{text}\nstdout: {out}\nstderr: {err}");
        assert!(err.contains(&format!("{}:", path.display())), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
