//! Waiting for the peer: wait strategies, deadlines.
//!
//! This module owns the spin/yield/sleep policy (the futex calls are `crate::sync`'s). It knows
//! nothing of rings: the caller says through a `Waiter` whether the wait is over and how to
//! sleep. The announce/re-check protocol that makes sleeping safe is the caller's
//! (see `ring` and DESIGN.md, "Sleeping and waking").

use std::time::{Duration, Instant};

pub use crate::sync::futex_calls;
use crate::sync::{LOOM, spin};

/// How a blocked side waits for its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WaitStrategy {
    /// Spin on the shared index and never sleep: the lowest latency, and a whole core burnt
    /// while waiting. The peer still checks for sleepers after publishing (one atomic swap).
    Spin,
    /// Spin briefly, then yield, then sleep on the futex (the default).
    #[default]
    SpinThenSleep,
    /// Sleep on the futex at once: the least CPU, a system call per wait.
    Sleep,
}

/// How long [`WaitStrategy::SpinThenSleep`] spins before it starts yielding.
pub(crate) const SPIN_FOR: Duration = Duration::from_micros(20);
/// How long [`WaitStrategy::SpinThenSleep`] spins and yields before it sleeps: longer than a
/// futex wake-up takes here (25-35 us), so a peer that answers at once is caught awake.
const SLEEP_AFTER: Duration = Duration::from_micros(100);
/// Longest single futex sleep: after it the waiter re-checks the peer's liveness, so a dead
/// peer is noticed within about this long (plus the check).
pub const SLEEP_SLICE: Duration = Duration::from_millis(10);
/// How often a waiter asks the kernel whether its peer lives (a `/proc` read, 10-30 us).
const CHECK_PEER_EVERY: Duration = Duration::from_millis(10);

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
/// liveness is checked every [`CHECK_PEER_EVERY`] of waiting (not after every wake-up: a wake-up
/// means the peer acted, and the check costs a `/proc` read).
pub(crate) fn wait<W: Waiter>(
    w: &mut W,
    strategy: WaitStrategy,
    deadline: Deadline,
) -> Result<(), W::Error> {
    let mut clock = WaitClock::start();
    loop {
        if w.ready()? {
            return Ok(());
        }
        if deadline.passed() {
            return Err(w.timeout());
        }
        // Under loom the clock is not read at all: the model must run the same operations on
        // every replay, and its peers never die.
        if !LOOM && clock.tick(strategy == WaitStrategy::Sleep) {
            w.check_peer()?;
        }
        // Under loom there is no clock: a non-Spin strategy sleeps at once, so every model
        // exercises the sleep/wake handshake.
        let waited = if LOOM { SLEEP_AFTER } else { clock.waited() };
        match strategy {
            WaitStrategy::Spin => spin(),
            WaitStrategy::SpinThenSleep if waited < SPIN_FOR => spin(),
            WaitStrategy::SpinThenSleep if waited < SLEEP_AFTER => std::thread::yield_now(),
            WaitStrategy::SpinThenSleep | WaitStrategy::Sleep => {
                w.sleep(deadline.slice().min(clock.until_check()));
                clock.slept();
            }
        }
    }
}

/// The clock of one wait, shared by the blocking waits ([`wait`]) and the async ones
/// (`crate::channel::asynch`): when the wait started, the time last read, and when the peer is due to
/// be checked next ([`CHECK_PEER_EVERY`]). Reading the clock costs ~25 ns, so while spinning
/// it is read on every 64th round only.
pub(crate) struct WaitClock {
    start: Instant,
    now: Instant,
    next_check: Instant,
    round: u32,
}

impl WaitClock {
    /// A wait starting now.
    pub(crate) fn start() -> WaitClock {
        let start = Instant::now();
        WaitClock {
            start,
            now: start,
            next_check: start + CHECK_PEER_EVERY,
            round: 0,
        }
    }

    /// One round of waiting: reads the clock if `always`, or on every 64th round. Returns
    /// `true` when the peer is due to be checked now (the next check is then scheduled).
    pub(crate) fn tick(&mut self, always: bool) -> bool {
        let mut due = false;
        if always || self.round % 64 == 0 {
            self.now = Instant::now();
            if self.now >= self.next_check {
                self.next_check = self.now + CHECK_PEER_EVERY;
                due = true;
            }
        }
        self.round = self.round.wrapping_add(1);
        due
    }

    /// How long the wait has lasted, as of the last clock read.
    pub(crate) fn waited(&self) -> Duration {
        self.now - self.start
    }

    /// The longest sleep that still lets the peer be checked on time.
    pub(crate) fn until_check(&self) -> Duration {
        self.next_check.saturating_duration_since(self.now)
    }

    /// After a sleep: the clock is read again at the next round.
    pub(crate) fn slept(&mut self) {
        self.round = 0;
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
