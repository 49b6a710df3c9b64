//! The asymmetric barrier of the sleep/wake handshake ("Sleeping and waking" in
//! docs/DESIGN.md): a waker that registered its process with `membarrier` pays a compiler fence
//! per publish instead of a locked instruction, and the sleeper, which is about to make a
//! system call anyway, pays for both with `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`.
//!
//! Under loom and Miri the two halves are what they stand for in the memory model: a SeqCst
//! fence on each side (loom checks the store-buffering pattern with SeqCst fences exactly).

use std::sync::atomic::Ordering;

/// `membarrier` commands (linux/membarrier.h).
#[cfg(not(any(loom, miri)))]
mod cmd {
    pub(super) const QUERY: libc::c_int = 0;
    pub(super) const GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
    pub(super) const REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;
}

/// Registers this process as a target of other processes' expedited barriers (the kernel
/// keeps the registration for the process until `exec`), so its wakes may be light. Returns
/// whether they may: `false` if the kernel lacks the commands or refuses (a seccomp filter);
/// then this process wakes with the locked swap, which needs no help from the sleeper.
pub(crate) fn register() -> bool {
    #[cfg(any(loom, miri))]
    {
        true
    }
    #[cfg(not(any(loom, miri)))]
    {
        // SAFETY: membarrier takes no pointers; QUERY returns the supported commands' bits.
        let supported = unsafe { libc::syscall(libc::SYS_membarrier, cmd::QUERY, 0, 0) };
        let both = libc::c_long::from(cmd::GLOBAL_EXPEDITED | cmd::REGISTER_GLOBAL_EXPEDITED);
        if supported < 0 || supported & both != both {
            return false;
        }
        // SAFETY: as above; registering changes only how the kernel treats this process.
        unsafe { libc::syscall(libc::SYS_membarrier, cmd::REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0 }
    }
}

/// Whether a waker whose process registered (`registered`) wakes the light way. Under loom,
/// `SHMPIPE_WAKE=heavy` makes every waker use the swap, so `.ci/loom.sh` checks both halves.
#[inline(always)]
pub(crate) fn light(registered: bool) -> bool {
    #[cfg(loom)]
    {
        static HEAVY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        registered
            && !*HEAVY.get_or_init(|| std::env::var("SHMPIPE_WAKE").as_deref() == Ok("heavy"))
    }
    #[cfg(not(loom))]
    {
        registered
    }
}

/// The light waker's half, between its Release store and its load of the announcement word:
/// in the program, a compiler fence (the sleeper's `membarrier` makes it a full barrier when it
/// matters); in the models, the SeqCst fence that stands for that.
#[inline(always)]
pub(crate) fn waker_fence() {
    if super::sabotage::waker_fence_dropped() {
        return;
    }
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
    #[cfg(all(miri, not(loom)))]
    std::sync::atomic::fence(Ordering::SeqCst);
    #[cfg(not(any(loom, miri)))]
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
}

/// The sleeper's half, between its announcement (W1) and its re-check: every registered
/// process's running threads pass a full barrier before this returns. Returns `false` if the
/// kernel refused, and then the sleeper must not trust a long sleep (a light waker may have
/// missed its announcement); it sleeps in short slices instead.
#[inline]
pub(crate) fn sleeper_barrier() -> bool {
    if super::sabotage::sleeper_barrier_dropped() {
        return true;
    }
    #[cfg(loom)]
    {
        loom::sync::atomic::fence(Ordering::SeqCst);
        true
    }
    #[cfg(all(miri, not(loom)))]
    {
        std::sync::atomic::fence(Ordering::SeqCst);
        true
    }
    #[cfg(not(any(loom, miri)))]
    {
        // Our own half of the pattern (the system call is a full barrier for the caller too,
        // but say it in the language's terms).
        std::sync::atomic::fence(Ordering::SeqCst);
        // SAFETY: membarrier takes no pointers.
        unsafe { libc::syscall(libc::SYS_membarrier, cmd::GLOBAL_EXPEDITED, 0, 0) == 0 }
    }
}
