//! Crash-injection points for tests, compiled in only with the `test-hooks` feature.
//!
//! With `SHMPIPE_CRASH_AT=POINT:N` in the environment, the N-th time this process passes the
//! named point it stops itself with `SIGSTOP`, so a test can watch for the stop
//! (`waitpid(WUNTRACED)`) and `SIGKILL` it at exactly that instruction of the protocol. Points:
//! `send:claimed`, `send:mid-payload`, `send:written`, `send:published`, `recv:found`,
//! `recv:mid-copy`, `recv:consumed`, `recv:released`. Without the feature `hit` is an empty
//! inline function.

/// Passes a crash-injection point.
#[cfg(feature = "test-hooks")]
pub(crate) fn hit(point: &str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let target = TARGET.get_or_init(|| {
        let v = std::env::var("SHMPIPE_CRASH_AT").ok()?;
        let (p, n) = v.rsplit_once(':')?;
        Some((p.to_owned(), n.parse().ok()?))
    });
    if let Some((p, n)) = target {
        if p == point && COUNT.fetch_add(1, Ordering::Relaxed) + 1 == *n {
            // SAFETY: raise has no memory-safety preconditions; SIGSTOP stops the process
            // until the test kills (or continues) it.
            unsafe {
                libc::raise(libc::SIGSTOP);
            }
        }
    }
}

/// Passes a crash-injection point (no-op without the `test-hooks` feature).
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(crate) fn hit(_point: &str) {}

/// Where a payload copy is split to pass a `mid-` point: halfway with `test-hooks`, else at
/// the end (one copy, no second branch taken).
#[inline(always)]
pub(crate) const fn split(len: usize) -> usize {
    if cfg!(feature = "test-hooks") {
        len / 2
    } else {
        len
    }
}
