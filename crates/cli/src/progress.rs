//! Progress of a run, per stage, each counted in the chunks of its own
//! grid (a reducer, whose grid is one chunk, by the chunks it has read).
//!
//! - [`LogLines`] where there is no terminal (a batch job's log, a
//!   notebook's `!blockflow run`): a line every few seconds with the share
//!   done, the rate, the time left, the memory and each unfinished stage's
//!   chunks done of its total, and a line per stage as it ends once the run
//!   has lasted that long.
//! - [`Bars`] on a terminal: a total bar and one bar per stage under it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blockflow_core::human_bytes;
use blockflow_runtime::report::StageReport;
use blockflow_runtime::{Progress, StageTotal};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Seconds between lines: `BLOCKFLOW_PROGRESS_SECS` (default 5).
pub fn interval() -> Duration {
    std::env::var("BLOCKFLOW_PROGRESS_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(5), Duration::from_secs_f64)
}

/// One stage's counts.
struct Counted {
    total: StageTotal,
    read: AtomicU64,
    made: AtomicU64,
    done: AtomicBool,
}

impl Counted {
    /// A stage whose own grid is smaller than what it reads (a reducer:
    /// one chunk out after all its input) is counted by what it read.
    fn by_input(&self) -> bool {
        self.total.chunks < self.total.chunks_in
    }
    /// (done, of) in the stage's unit.
    fn counts(&self) -> (u64, u64) {
        let (done, of) = if self.by_input() {
            (self.read.load(Ordering::Relaxed), self.total.chunks_in)
        } else {
            (self.made.load(Ordering::Relaxed), self.total.chunks)
        };
        if self.done.load(Ordering::Relaxed) {
            (of, of)
        } else {
            (done.min(of), of)
        }
    }
    fn label(&self) -> String {
        let (done, of) = self.counts();
        let unit = if self.by_input() { " read" } else { "" };
        format!("{} {done}/{of}{unit}", self.total.name)
    }
}

/// What both displays count.
struct Counts {
    start: Instant,
    stages: Mutex<Arc<Vec<Counted>>>,
    held: AtomicU64,
}

impl Counts {
    fn new() -> Self {
        Counts {
            start: Instant::now(),
            stages: Mutex::new(Arc::new(Vec::new())),
            held: AtomicU64::new(0),
        }
    }
    fn set(&self, stages: &[StageTotal]) {
        let v = stages
            .iter()
            .map(|t| Counted {
                total: t.clone(),
                read: AtomicU64::new(0),
                made: AtomicU64::new(0),
                done: AtomicBool::new(false),
            })
            .collect();
        *self.stages.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(v);
    }
    fn stages(&self) -> Arc<Vec<Counted>> {
        Arc::clone(&self.stages.lock().unwrap_or_else(|p| p.into_inner()))
    }
    fn add(&self, stage: usize, read: u64, made: u64) {
        if let Some(c) = self.stages().get(stage) {
            c.read.fetch_add(read, Ordering::Relaxed);
            c.made.fetch_add(made, Ordering::Relaxed);
        }
    }
    fn done(&self, name: &str) {
        if let Some(c) = self.stages().iter().find(|c| c.total.name == name) {
            c.done.store(true, Ordering::Relaxed);
        }
    }
    /// The share of all stages' chunks done, 0..=1; below 1 while a
    /// stage has not ended (a reducer that has read everything may still
    /// be computing).
    fn fraction(&self) -> f64 {
        let (mut done, mut of, mut open) = (0u64, 0u64, false);
        for c in self.stages().iter() {
            let (d, o) = c.counts();
            done += d;
            of += o;
            open |= !c.done.load(Ordering::Relaxed);
        }
        let f = if of == 0 {
            0.0
        } else {
            done as f64 / of as f64
        };
        if open {
            f.min(0.99)
        } else {
            f
        }
    }
}

/// Log lines on stderr.
pub struct LogLines {
    every: Duration,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    ticker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LogLines {
    pub fn new(every: Duration) -> Self {
        LogLines {
            every,
            counts: Arc::new(Counts::new()),
            stop: Arc::new(AtomicBool::new(false)),
            ticker: Mutex::new(None),
        }
    }
}

fn line(c: &Counts) -> String {
    let f = c.fraction();
    let secs = c.start.elapsed().as_secs_f64();
    let eta = if f > 0.0 && f < 0.99 {
        format!(", about {:.0} s left", secs * (1.0 - f) / f)
    } else {
        String::new()
    };
    let stages = c.stages();
    let finished = stages
        .iter()
        .filter(|s| s.done.load(Ordering::Relaxed))
        .count();
    // The stages under way, each in the chunks of its own grid; those
    // that have not started are counted.
    let (mut busy, mut waiting) = (Vec::new(), 0);
    for s in stages.iter().filter(|s| !s.done.load(Ordering::Relaxed)) {
        if s.read.load(Ordering::Relaxed) + s.made.load(Ordering::Relaxed) == 0 {
            waiting += 1;
        } else {
            busy.push(s.label());
        }
    }
    format!(
        "progress: {:.0}% in {secs:.1} s{eta}; holding {}, peak RSS {}; stages: {finished} done, {waiting} waiting, {} under way{}{}",
        100.0 * f,
        human_bytes(c.held.load(Ordering::Relaxed)),
        human_bytes(blockflow_runtime::report::peak_rss_bytes()),
        busy.len(),
        if busy.is_empty() { "" } else { ": " },
        busy.join(", ")
    )
}

impl Progress for LogLines {
    fn start(&self, _total: u64) {
        let (counts, stop) = (Arc::clone(&self.counts), Arc::clone(&self.stop));
        let every = self.every;
        let h = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let mut next = Instant::now() + every;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50).min(every));
                    if Instant::now() >= next {
                        say!("{}", line(&counts));
                        next += every;
                    }
                }
            })
            .ok();
        *self.ticker.lock().unwrap_or_else(|p| p.into_inner()) = h;
    }

    fn stages(&self, stages: &[StageTotal]) {
        self.counts.set(stages);
    }

    fn stage_chunks(&self, stage: usize, read: u64, made: u64) {
        self.counts.add(stage, read, made);
    }

    fn advance(&self, _chunks: u64, bytes: u64) {
        self.counts.held.store(bytes, Ordering::Relaxed);
    }

    fn stage_done(&self, r: &StageReport) {
        self.counts.done(&r.name);
        // A short run stays quiet: its summary says it all.
        if self.counts.start.elapsed() >= self.every {
            say!(
                "stage \"{}\" ({}) done after {:.1} s: {} chunks in, {} out, {:.1} s busy",
                r.name,
                r.kind,
                self.counts.start.elapsed().as_secs_f64(),
                r.chunks_in,
                r.chunks_out,
                r.busy_seconds
            );
        }
    }

    fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.ticker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}

/// Bars on a terminal: the total, then a line per stage.
pub struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    bars: Mutex<Vec<ProgressBar>>,
    counts: Counts,
}

impl Bars {
    pub fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let total = multi.add(ProgressBar::new(1000));
        total.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {percent:>3}% of all stages' chunks, ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        total.enable_steady_tick(Duration::from_millis(200));
        Bars {
            multi,
            total,
            bars: Mutex::new(Vec::new()),
            counts: Counts::new(),
        }
    }

    fn refresh_total(&self) {
        self.total
            .set_position((self.counts.fraction() * 1000.0).round() as u64);
    }
}

impl Progress for Bars {
    fn start(&self, _total: u64) {}

    fn stages(&self, stages: &[StageTotal]) {
        self.counts.set(stages);
        let width = stages.iter().map(|s| s.name.len()).max().unwrap_or(4);
        let style = ProgressStyle::with_template(&format!(
            "  {{prefix:<{width}}} {{bar:30}} {{pos}}/{{len}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bars = self
            .counts
            .stages()
            .iter()
            .map(|c| {
                let (_, of) = c.counts();
                let b = self.multi.add(ProgressBar::new(of));
                b.set_style(style.clone());
                b.set_prefix(c.total.name.clone());
                let unit = if c.by_input() {
                    "chunks read"
                } else {
                    "chunks"
                };
                b.set_message(format!("{unit} ({})", c.total.kind));
                b
            })
            .collect();
        *self.bars.lock().unwrap_or_else(|p| p.into_inner()) = bars;
    }

    fn stage_chunks(&self, stage: usize, read: u64, made: u64) {
        self.counts.add(stage, read, made);
        let stages = self.counts.stages();
        if let (Some(c), Some(b)) = (
            stages.get(stage),
            self.bars
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(stage),
        ) {
            b.set_position(c.counts().0);
        }
        self.refresh_total();
    }

    fn advance(&self, _chunks: u64, bytes: u64) {
        self.total
            .set_message(format!("holding {}", human_bytes(bytes)));
    }

    fn stage_done(&self, r: &StageReport) {
        self.counts.done(&r.name);
        let stages = self.counts.stages();
        if let Some(i) = stages.iter().position(|c| c.total.name == r.name) {
            if let Some(b) = self.bars.lock().unwrap_or_else(|p| p.into_inner()).get(i) {
                let (_, of) = stages[i].counts();
                b.set_position(of);
                b.finish();
            }
        }
        self.refresh_total();
    }

    fn finish(&self) {
        for b in self.bars.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            b.finish_and_clear();
        }
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(name: &str, chunks: u64, chunks_in: u64) -> StageTotal {
        StageTotal {
            name: name.into(),
            kind: "k",
            chunks,
            chunks_in,
        }
    }

    #[test]
    fn each_stage_counts_its_own_grid_a_reducer_its_reads() {
        let c = Counts::new();
        c.set(&[total("src", 4, 0), total("sum", 1, 4), total("out", 4, 4)]);
        c.add(0, 0, 2);
        c.add(1, 2, 0);
        c.add(2, 1, 1);
        let s = c.stages();
        assert_eq!(s[0].label(), "src 2/4");
        assert_eq!(s[1].label(), "sum 2/4 read");
        assert_eq!(s[2].label(), "out 1/4");
        assert!((c.fraction() - 5.0 / 12.0).abs() < 1e-12);
        // Everything read, nothing ended: not yet 100%.
        c.add(0, 0, 2);
        c.add(1, 2, 0);
        c.add(2, 3, 3);
        assert!((c.fraction() - 0.99).abs() < 1e-12);
        for n in ["src", "sum", "out"] {
            c.done(n);
        }
        assert!((c.fraction() - 1.0).abs() < 1e-12);
        let l = line(&c);
        assert!(l.contains("3 done, 0 waiting, 0 under way"), "{l}");
    }
}
