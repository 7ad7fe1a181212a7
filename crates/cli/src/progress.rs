//! Progress where there is no terminal (a batch job's log, a notebook's
//! `!blockflow run`): a line every few seconds with the chunks written of
//! the total, the rate, the time left and the memory, and a line per
//! stage as it ends once the run has lasted that long.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blockflow_core::human_bytes;
use blockflow_runtime::report::StageReport;
use blockflow_runtime::Progress;

/// Seconds between lines: `BLOCKFLOW_PROGRESS_SECS` (default 5).
pub fn interval() -> Duration {
    std::env::var("BLOCKFLOW_PROGRESS_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(5), Duration::from_secs_f64)
}

struct State {
    start: Instant,
    total: AtomicU64,
    done: AtomicU64,
    held: AtomicU64,
    stop: AtomicBool,
}

/// Log lines on stderr.
pub struct LogLines {
    every: Duration,
    state: Arc<State>,
    ticker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LogLines {
    pub fn new(every: Duration) -> Self {
        LogLines {
            every,
            state: Arc::new(State {
                start: Instant::now(),
                total: AtomicU64::new(0),
                done: AtomicU64::new(0),
                held: AtomicU64::new(0),
                stop: AtomicBool::new(false),
            }),
            ticker: Mutex::new(None),
        }
    }
}

fn line(s: &State) -> String {
    let (done, total) = (
        s.done.load(Ordering::Relaxed),
        s.total.load(Ordering::Relaxed),
    );
    let secs = s.start.elapsed().as_secs_f64();
    let rate = done as f64 / secs.max(1e-9);
    let eta = if done > 0 && total > done {
        format!(", about {:.0} s left", (total - done) as f64 / rate)
    } else {
        String::new()
    };
    format!(
        "progress: {done}/{total} chunks written ({:.0}%) in {secs:.1} s, {rate:.1} chunks/s{eta}; holding {}, peak RSS {}",
        100.0 * done as f64 / total.max(1) as f64,
        human_bytes(s.held.load(Ordering::Relaxed)),
        human_bytes(blockflow_runtime::report::peak_rss_bytes())
    )
}

impl Progress for LogLines {
    fn start(&self, total: u64) {
        self.state.total.store(total, Ordering::Relaxed);
        let state = Arc::clone(&self.state);
        let every = self.every;
        let h = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let mut next = Instant::now() + every;
                while !state.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50).min(every));
                    if Instant::now() >= next {
                        say!("{}", line(&state));
                        next += every;
                    }
                }
            })
            .ok();
        *self.ticker.lock().unwrap_or_else(|p| p.into_inner()) = h;
    }

    fn advance(&self, chunks: u64, bytes: u64) {
        self.state.done.fetch_add(chunks, Ordering::Relaxed);
        self.state.held.store(bytes, Ordering::Relaxed);
    }

    fn stage_done(&self, r: &StageReport) {
        // A short run stays quiet: its summary says it all.
        if self.state.start.elapsed() >= self.every {
            say!(
                "stage \"{}\" ({}) done after {:.1} s: {} chunks in, {} out, {:.1} s busy",
                r.name,
                r.kind,
                self.state.start.elapsed().as_secs_f64(),
                r.chunks_in,
                r.chunks_out,
                r.busy_seconds
            );
        }
    }

    fn finish(&self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.ticker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}
