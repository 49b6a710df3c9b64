//! SIGINT, SIGTERM and SIGHUP during a transfer.
//!
//! The handler only records the signal. Blocking system calls then fail with `EINTR` (the
//! handler is installed without `SA_RESTART`), and the transfer loops, whose waits on the ring
//! are bounded, look at [`caught`] at least every [`POLL`]. They clean up (see
//! `transfer::interrupted`) and then [`die_of`] the signal, so the shell sees the usual
//! "killed by SIGINT" status.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The longest a transfer waits on the ring before it looks for a signal.
pub const POLL: Duration = Duration::from_millis(100);

/// The last signal caught, 0 if none.
static CAUGHT: AtomicI32 = AtomicI32::new(0);

/// The signals that end a transfer.
const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(sig: libc::c_int) {
    // An atomic store is async-signal-safe.
    CAUGHT.store(sig, Ordering::Relaxed);
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub fn install() {
    for sig in SIGNALS {
        // SAFETY: all-zero bytes are a valid `sigaction` (no handler, empty flags) on Linux;
        // the fields that matter are set below.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // No SA_RESTART: a read or write blocked when the signal comes returns EINTR.
        sa.sa_flags = 0;
        // SAFETY: `sa.sa_mask` is a valid sigset_t owned by us.
        unsafe { libc::sigemptyset(&raw mut sa.sa_mask) };
        // SAFETY: `sa` is a fully initialised sigaction whose handler only performs an atomic
        // store (async-signal-safe); the old action is not asked for (null).
        unsafe { libc::sigaction(sig, &raw const sa, std::ptr::null_mut()) };
    }
}

/// The signal caught since [`install`], if any.
pub fn caught() -> Option<libc::c_int> {
    match CAUGHT.load(Ordering::Relaxed) {
        0 => None,
        sig => Some(sig),
    }
}

/// The name of one of the signals that end a transfer.
pub fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// Ends the process by `sig` with its default action, as if no handler had been installed.
pub fn die_of(sig: libc::c_int) -> ! {
    // SAFETY: restoring the default action and raising a signal have no memory-safety
    // preconditions; for SIGINT, SIGTERM and SIGHUP the default action ends the process.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
    // Not reached for these signals; in case it is blocked somehow.
    std::process::exit(128 + sig)
}
