//! Deliberate breakage for the loom suite's negative controls: in a `--cfg loom` build only,
//! the environment variable `SHMPIPE_BREAK` names one ordering or one half of the sleep/wake
//! handshake to weaken, and `.ci/loom.sh` checks that a model then fails. In every other build
//! nothing is broken and these fold to the protocol's real orderings at compile time.

use std::sync::atomic::Ordering;

/// Whether `SHMPIPE_BREAK` names `what` (read once).
#[cfg(loom)]
fn broken(what: &str) -> bool {
    static BREAK: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BREAK
        .get_or_init(|| std::env::var("SHMPIPE_BREAK").ok())
        .as_deref()
        == Some(what)
}

/// Nothing is broken outside loom.
#[cfg(not(loom))]
#[inline(always)]
const fn broken(_what: &str) -> bool {
    false
}

/// P2, the producer's publish of the tail: Release (`publish-relaxed`: Relaxed).
#[inline(always)]
pub(crate) fn publish() -> Ordering {
    if broken("publish-relaxed") {
        Ordering::Relaxed
    } else {
        Ordering::Release
    }
}

/// C2, the consumer's release of the head: Release (`release-relaxed`: Relaxed).
#[inline(always)]
pub(crate) fn release() -> Ordering {
    if broken("release-relaxed") {
        Ordering::Relaxed
    } else {
        Ordering::Release
    }
}

/// `wake-load`: the heavy waker reads the announcement with a plain load instead of the W2
/// swap (run with `SHMPIPE_WAKE=heavy`).
#[inline(always)]
pub(crate) fn wake_loads() -> bool {
    broken("wake-load")
}

/// `sleep-store`: the sleeper announces with a plain store instead of the W1 swap (run with
/// `SHMPIPE_WAKE=heavy`).
#[inline(always)]
pub(crate) fn sleep_stores() -> bool {
    broken("sleep-store")
}

/// `wake-no-fence`: the light waker drops its fence between the index and the announcement.
#[inline(always)]
pub(crate) fn waker_fence_dropped() -> bool {
    broken("wake-no-fence")
}

/// `sleep-no-barrier`: the sleeper drops its barrier between announcing and re-checking.
#[inline(always)]
pub(crate) fn sleeper_barrier_dropped() -> bool {
    broken("sleep-no-barrier")
}
