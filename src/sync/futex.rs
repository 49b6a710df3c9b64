//! The futex system calls (compare-then-park under loom), counted, and one round of a spin.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Futex;

/// One round of a spin loop. Under loom, a yield to the model's scheduler: a spin loop that
/// never yields would be explored for ever.
#[inline(always)]
pub(crate) fn spin() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
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
#[cfg(not(loom))]
pub(crate) fn futex_wait(futex: &Futex, expected: u32, timeout: Duration) {
    FUTEX_CALLS.fetch_add(1, Ordering::Relaxed);
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `futex.word` is a valid, aligned 32-bit word that outlives the call; FUTEX_WAIT
    // (shared: no FUTEX_PRIVATE_FLAG, so a waker in another process reaches us) only reads it,
    // and `ts` is a valid relative timeout. The unused arguments are ignored for FUTEX_WAIT.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex.word.as_ptr(),
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
#[cfg(not(loom))]
pub(crate) fn futex_wake(futex: &Futex) {
    FUTEX_CALLS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `futex.word` is a valid, aligned 32-bit word; FUTEX_WAKE does not access it
    // beyond hashing its address. The unused arguments are ignored for FUTEX_WAKE.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex.word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Loom's futex: compare, then park until woken. There is no timeout, so a wake-up the protocol
/// loses leaves the sleeper parked for ever, which loom reports as a deadlock. A wake with no
/// sleeper leaves a permit, a spurious wake-up that real futexes may give too.
#[cfg(loom)]
pub(crate) fn futex_wait(futex: &Futex, expected: u32, _timeout: Duration) {
    FUTEX_CALLS.fetch_add(1, Ordering::Relaxed);
    if futex.word.load(Ordering::SeqCst) == expected {
        futex.queue.wait();
    }
}

/// Loom's futex wake.
#[cfg(loom)]
pub(crate) fn futex_wake(futex: &Futex) {
    FUTEX_CALLS.fetch_add(1, Ordering::Relaxed);
    futex.queue.notify();
}
