//! The C API of shmpipe: `libshmpipe.so` and `libshmpipe.a`, with the header
//! `include/shmpipe.h` generated from these definitions by cbindgen (`tests/header.rs` fails
//! when the checked-in header is stale) and the header-only C++ wrapper `include/shmpipe.hpp`.
//!
//! Every entry point returns a status (or a value that cannot fail), runs in
//! [`error::guard`] (a panic never unwinds into C; it becomes `SHMPIPE_STATUS_PANIC`), checks its
//! pointers for NULL and its lengths, and records the message of a failure for
//! `shmpipe_last_error_message`. The Rust library's borrows (a grant, a lent message, a batch
//! borrows its side) become states of the side's handle, checked on every call
//! (`SHMPIPE_STATUS_BAD_STATE`). The header's opening comment is the reference: the trust model and
//! the zero-copy contract are there.

#![deny(unsafe_op_in_unsafe_fn, missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod consumer;
pub mod error;
pub mod producer;
pub mod ring;

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use error::{Fail, ShmpipeStatus, null};

/// The caller's `len` bytes at `data` (NULL is allowed for 0 bytes).
///
/// # Safety
///
/// Unless NULL, `data` points to `len` readable bytes that stay unchanged for `'a`.
unsafe fn bytes<'a>(data: *const u8, len: usize, what: &str) -> Result<&'a [u8], Fail> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(null(what));
    }
    check_len(len, what)?;
    // SAFETY: non-NULL, `len <= isize::MAX` bytes, readable and unchanged (the caller).
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

/// The caller's buffer of `cap` bytes at `buf` (NULL is allowed for 0 bytes).
///
/// # Safety
///
/// Unless NULL, `buf` points to `cap` writable bytes that nothing else uses for `'a`.
unsafe fn buffer<'a>(buf: *mut u8, cap: usize, what: &str) -> Result<&'a mut [u8], Fail> {
    if cap == 0 {
        return Ok(&mut []);
    }
    if buf.is_null() {
        return Err(null(what));
    }
    check_len(cap, what)?;
    // SAFETY: non-NULL, `cap <= isize::MAX` writable bytes used by nothing else (the caller).
    Ok(unsafe { std::slice::from_raw_parts_mut(buf, cap) })
}

/// A length no object can have (over `isize::MAX`): a negative number cast to `size_t`.
fn check_len(len: usize, what: &str) -> Result<(), Fail> {
    if len > isize::MAX as usize {
        return Err(Fail::new(
            ShmpipeStatus::InvalidArgument,
            format!("{what}: length {len} is larger than any object (a negative value?)"),
        ));
    }
    Ok(())
}

/// Stores `value` at the caller's out-pointer.
///
/// # Safety
///
/// Unless NULL, `out` is valid for a write of a `T`.
unsafe fn put<T>(out: *mut T, value: T, what: &str) -> Result<(), Fail> {
    if out.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-NULL and writable (the caller); `write` drops nothing old.
    unsafe { out.write(value) };
    Ok(())
}

/// Runs an entry point whose result goes to the caller's out-pointer `out` (named `what`), as
/// [`error::guard`] does: NULL is refused before `body` runs, so nothing is made (a ring, a
/// side, a grant) that could not be handed over, and `out` is written only on success.
///
/// # Safety
///
/// Unless NULL, `out` is valid for a write of a `T`.
unsafe fn guard_out<T>(
    out: *mut T,
    what: &str,
    body: impl FnOnce() -> Result<T, Fail>,
) -> ShmpipeStatus {
    error::guard(|| {
        if out.is_null() {
            return Err(null(what));
        }
        let value = body()?;
        // SAFETY: non-NULL and writable (the caller); `write` drops nothing old.
        unsafe { out.write(value) };
        Ok(())
    })
}

/// How long a call waits for room or a message: its `try_` form, its plain form (as the wait
/// strategy says) and its `_timeout` form.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// Not at all (`try_`): full or empty is an error at once.
    No,
    /// Until the peer acts, closes or dies.
    Forever,
    /// At most this long (`SHMPIPE_STATUS_TIMEOUT`).
    For(Duration),
}

impl Wait {
    /// The `_timeout` form's wait, from the caller's nanoseconds.
    fn nanos(timeout_ns: u64) -> Wait {
        Wait::For(Duration::from_nanos(timeout_ns))
    }
}

/// Forks in this process's ancestry: every child adds one as `fork` returns in it (a
/// `pthread_atfork` handler), so a side's handle, which keeps the count of the process that
/// claimed it, knows when it was inherited by a child. One load per call, no system call.
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn forked() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// This process's fork count, the handler installed first (so before any side is claimed).
fn forks() -> u64 {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: `forked` only adds to an atomic (async-signal-safe) and lives as long as this
        // library (glibc drops a library's handlers when it is unloaded).
        unsafe { libc::pthread_atfork(None, None, Some(forked)) };
    });
    FORKS.load(Ordering::Relaxed)
}

/// A side's handle: the fork count of the process that claimed it ([`forks`] then).
trait Claimed {
    fn claimed_at(&self) -> u64;

    /// Fails in a forked child: the role is the parent's (the Rust side publishes, releases
    /// and gives back nothing there, so every call says so rather than seeming to succeed).
    fn check_process(&self, what: &str) -> Result<(), Fail> {
        if self.claimed_at() != FORKS.load(Ordering::Relaxed) {
            return Err(Fail::new(
                ShmpipeStatus::WrongProcess,
                format!(
                    "the {what} was claimed in another process (this one is a forked child \
                     of it): claim a side of this process's own"
                ),
            ));
        }
        Ok(())
    }
}

/// The caller's side handle, in the process that claimed it.
///
/// # Safety
///
/// `h` is NULL or a live handle of this library that no other thread uses during the call.
unsafe fn handle<'a, T: Claimed>(h: *mut T, what: &str) -> Result<&'a mut T, Fail> {
    // SAFETY: NULL or live, and ours alone for the call (the caller).
    let h = unsafe { h.as_mut() }.ok_or_else(|| null(what))?;
    h.check_process(what)?;
    Ok(h)
}

/// `shmpipe_*_set_wait_strategy`: spin until the peer acts (lowest latency, a CPU busy).
pub const SHMPIPE_WAIT_SPIN: i32 = 0;
/// `shmpipe_*_set_wait_strategy`: spin briefly, then sleep on the futex (the default).
pub const SHMPIPE_WAIT_SPIN_THEN_SLEEP: i32 = 1;
/// `shmpipe_*_set_wait_strategy`: sleep on the futex at once.
pub const SHMPIPE_WAIT_SLEEP: i32 = 2;

/// The wait strategy a C caller named.
fn strategy(code: i32) -> Result<shmpipe_rs::WaitStrategy, Fail> {
    use shmpipe_rs::WaitStrategy as W;
    match code {
        SHMPIPE_WAIT_SPIN => Ok(W::Spin),
        SHMPIPE_WAIT_SPIN_THEN_SLEEP => Ok(W::SpinThenSleep),
        SHMPIPE_WAIT_SLEEP => Ok(W::Sleep),
        _ => Err(Fail::new(
            ShmpipeStatus::InvalidArgument,
            format!("wait strategy {code} is not SHMPIPE_WAIT_SPIN, _SPIN_THEN_SLEEP or _SLEEP"),
        )),
    }
}

/// A call made in a state that does not allow it.
fn bad_state(what: &str) -> Fail {
    Fail::new(ShmpipeStatus::BadState, what)
}
