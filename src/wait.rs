//! Waiting for the peer: shared futexes, wait strategies, deadlines.
//!
//! This module owns every futex system call and the spin/yield/sleep policy. It knows nothing of
//! rings: the caller gives it a futex word in shared memory and a closure that says whether the
//! wait is over. The announce/fence/re-check protocol that makes sleeping safe is the caller's
//! (see `ring` and DESIGN.md, "Sleeping and waking").

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How a blocked side waits for its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WaitStrategy {
    /// Spin on the shared index and never sleep: the lowest latency, and a whole core burnt
    /// while waiting. The peer still checks for sleepers after publishing (one fence).
    Spin,
    /// Spin briefly, then yield, then sleep on the futex (the default).
    #[default]
    SpinThenSleep,
    /// Sleep on the futex at once: the least CPU, a system call per wait.
    Sleep,
}

/// Iterations of pure spinning before yielding in [`WaitStrategy::SpinThenSleep`].
const SPIN_ROUNDS: u32 = 200;
/// Calls to `sched_yield` before sleeping in [`WaitStrategy::SpinThenSleep`].
const YIELD_ROUNDS: u32 = 20;
/// Longest single futex sleep: after it the waiter re-checks the peer's liveness, so a dead
/// peer is noticed within about this long (plus the check).
pub const SLEEP_SLICE: Duration = Duration::from_millis(10);
/// How often a spinning waiter checks its peer's liveness.
const SPIN_CHECK_EVERY: Duration = Duration::from_millis(10);

/// One side's view of a wait: what it waits for, how it sleeps, how it checks the peer.
pub(crate) trait Waiter {
    /// Why the wait can end without success.
    type Error;
    /// Whether the wait is over: `Ok(true)` when the condition holds, `Err` when it never will.
    fn ready(&mut self) -> Result<bool, Self::Error>;
    /// Sleeps on the futex for at most `slice`, unless the condition holds after announcing
    /// the sleep (the sleeper's half of the wake-up protocol).
    fn sleep(&mut self, slice: Duration);
    /// Asks the kernel whether the peer lives; `Err` if it is dead.
    fn check_peer(&mut self) -> Result<(), Self::Error>;
    /// The error for a passed deadline.
    fn timeout(&self) -> Self::Error;
}

/// Waits as `strategy` says until `w` is ready, fails, or the deadline passes. The peer's
/// liveness is checked after every sleep and every [`SPIN_CHECK_EVERY`] of spinning.
pub(crate) fn wait<W: Waiter>(
    w: &mut W,
    strategy: WaitStrategy,
    deadline: Deadline,
) -> Result<(), W::Error> {
    let mut round = 0u32;
    let mut next_check = Instant::now() + SPIN_CHECK_EVERY;
    loop {
        if w.ready()? {
            return Ok(());
        }
        if deadline.passed() {
            return Err(w.timeout());
        }
        let sleep_now = match strategy {
            WaitStrategy::Spin => false,
            WaitStrategy::Sleep => true,
            WaitStrategy::SpinThenSleep => round >= SPIN_ROUNDS + YIELD_ROUNDS,
        };
        if sleep_now {
            w.sleep(deadline.slice());
            w.check_peer()?;
            continue;
        }
        if round < SPIN_ROUNDS || strategy == WaitStrategy::Spin {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        round = round.saturating_add(1);
        if round % 64 == 0 && Instant::now() >= next_check {
            w.check_peer()?;
            next_check = Instant::now() + SPIN_CHECK_EVERY;
        }
    }
}

/// Futex system calls made by this process (waits and wakes), for tests and monitoring.
static FUTEX_CALLS: AtomicU64 = AtomicU64::new(0);

/// How many futex system calls (waits and wakes) this process has made through shmpipe. While
/// both sides of a ring are busy, sending and receiving make none.
pub fn futex_calls() -> u64 {
    FUTEX_CALLS.load(Ordering::Relaxed)
}

/// Sleeps on a shared futex word while it holds `expected`, for at most `timeout`. Returns when
/// woken, when the word no longer holds `expected`, on a signal, or on timeout; the caller
/// re-checks its condition in every case.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    FUTEX_CALLS.fetch_add(1, Ordering::Relaxed);
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned 32-bit word that outlives the call; FUTEX_WAIT (shared:
    // no FUTEX_PRIVATE_FLAG, so a waker in another process reaches us) only reads it, and `ts`
    // is a valid relative timeout. The unused arguments are ignored for FUTEX_WAIT.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &raw const ts,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
    // EAGAIN (value changed), EINTR (signal) and ETIMEDOUT all mean "re-check".
}

/// Wakes every process sleeping on a shared futex word.
pub(crate) fn futex_wake(word: &AtomicU32) {
    FUTEX_CALLS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `word` is a valid, aligned 32-bit word; FUTEX_WAKE does not access it beyond
    // hashing its address. The unused arguments are ignored for FUTEX_WAKE.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// An optional deadline.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    /// `None`: wait for ever.
    pub(crate) fn after(timeout: Option<Duration>) -> Deadline {
        Deadline(timeout.and_then(|t| Instant::now().checked_add(t)))
    }

    /// Time left, `None` for no deadline; zero once passed.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has passed.
    pub(crate) fn passed(&self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }

    /// The next sleep: one slice, or less if the deadline comes first.
    pub(crate) fn slice(&self) -> Duration {
        self.remaining().map_or(SLEEP_SLICE, |r| r.min(SLEEP_SLICE))
    }
}
