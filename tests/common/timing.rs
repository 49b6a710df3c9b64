//! The two suites' bounds on time and size.
//!
//! The default suite (the README's test command) must pass on a small machine that is doing
//! other things, so it asserts liveness (no lost wake-up, no stall beyond a bound, deadlines
//! honoured) with bounds a slow scheduler meets: a deadline is never returned before, and a
//! bound on lateness is one that only a hang or a missed wake-up exceeds, or is measured
//! against a calibration of this process's own scheduling taken at the same time
//! ([`SchedProbe`]). The timing suite, `SHMPIPE_TIMING=1` (a CI step of its own, on a quiet
//! machine), asserts the latency figures of RELIABILITY's targets and runs the stresses at
//! full size. Children inherit the variable, so both sides of a test agree.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The variable that selects the timing suite.
pub const TIMING_VAR: &str = "SHMPIPE_TIMING";

/// Whether this run is the timing suite.
pub fn timing_suite() -> bool {
    std::env::var(TIMING_VAR).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The default suite's bound on how long something may take: long enough for a starved
/// process, and still below the failures such bounds tell apart (a wait for a blocking call's
/// 10 s timeout, a hang).
pub const LOADED: Duration = Duration::from_secs(5);

/// `tight` in the timing suite, else [`LOADED`] (or `tight`, if longer).
pub fn bound(tight: Duration) -> Duration {
    if timing_suite() {
        tight
    } else {
        tight.max(LOADED)
    }
}

/// A stress size: `full` in the timing suite, else `default`.
pub fn size(full: u64, default: u64) -> u64 {
    if timing_suite() { full } else { default }
}

/// How late a thread of this process wakes from a 1 ms sleep, sampled in the background while
/// a test runs: what the scheduler alone does to a waiting thread right now, to compare a
/// test's wake-up latencies with.
pub struct SchedProbe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Duration>>>,
}

/// The lateness of the probe's wake-ups, sorted.
pub struct Calibration(Vec<Duration>);

impl SchedProbe {
    /// Starts sampling.
    pub fn start() -> SchedProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut late = Vec::new();
            // Relaxed: a flag with no data behind it; the join publishes the samples.
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                std::thread::sleep(Duration::from_millis(1));
                late.push(t.elapsed().saturating_sub(Duration::from_millis(1)));
            }
            late
        });
        SchedProbe {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling and returns what it saw.
    pub fn stop(mut self) -> Calibration {
        self.stop.store(true, Ordering::Relaxed);
        let mut late = self
            .thread
            .take()
            .unwrap()
            .join()
            .expect("the probe thread");
        late.sort();
        Calibration(late)
    }
}

impl Drop for SchedProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Calibration {
    /// No wake-up was held up for 2 ms or more (a fifth of a 10 ms sleep slice), so a delay of
    /// one slice, the mark of a lost wake-up, would not be the scheduler's doing. (Under two CPU
    /// hogs on two CPUs the probe's worst wake-up was 1.7 to 7 ms late: a sleeping thread is
    /// preempted less than a spinning one, so this errs towards "busy".)
    pub fn quiet(&self) -> bool {
        self.percentile(100.0) < Duration::from_millis(2)
    }

    /// Wake-ups sampled.
    pub fn samples(&self) -> usize {
        self.0.len()
    }

    /// Wake-ups at least `d` late.
    pub fn late(&self, d: Duration) -> usize {
        self.0.len() - self.0.partition_point(|&x| x < d)
    }

    /// The `p`-th percentile (0..=100) of the lateness (zero with no sample).
    pub fn percentile(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.0.len() - 1) as f64 * p / 100.0).round() as usize;
        self.0[i]
    }
}

impl std::fmt::Display for Calibration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} probe wake-ups late by median {:.2?}, p99 {:.2?}, max {:.2?}; {} >= 9 ms",
            self.samples(),
            self.percentile(50.0),
            self.percentile(99.0),
            self.percentile(100.0),
            self.late(Duration::from_millis(9))
        )
    }
}
