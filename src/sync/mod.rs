//! The one switch between real atomics and loom's model of them (`--cfg loom`).
//!
//! Everything in the ring protocol that another thread or process reads or writes concurrently
//! goes through these types, so loom can explore every interleaving and every ordering the
//! memory model allows. Under loom, SysV segments are not modelled (loom's atomics are handles
//! into the model, not memory that can be overlaid on a segment): only the heap ring exists.
//!
//! Under `--cfg fuzzing` (cargo-fuzz sets it), the two atomics are instead the wrappers of
//! `hostile`, which let a fuzz target play a hostile peer that rewrites any shared word just
//! before this process reads it. Without that cfg the std (or loom) types are re-exported
//! unchanged, so production code is not affected.

pub(crate) mod barrier;
pub(crate) mod copy;
mod futex;
pub(crate) mod hooks;
pub(crate) mod sabotage;
mod slots;

pub use futex::futex_calls;
pub(crate) use futex::{futex_wait, futex_wake, spin};
pub(crate) use hooks::{hit as hook, split as hook_split};
pub(crate) use slots::{Model, SlotModel, access, overlay, read_record, write_record};

/// Whether this is a loom build (`--cfg loom`): no clock, no SysV, the model's scheduler.
pub(crate) const LOOM: bool = cfg!(loom);
/// Whether this runs under Miri, which isolates the program from `/proc`, `fork` and the
/// clock-driven paths: callers skip what Miri cannot do.
pub(crate) const MIRI: bool = cfg!(miri);

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64};
#[cfg(not(any(loom, fuzzing)))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64};

/// A 32-bit word that a side sleeps on with a futex. In production it is exactly an
/// `AtomicU32` in the segment; under loom it also carries a model of the kernel's wait queue.
#[cfg_attr(not(loom), repr(transparent))]
#[derive(Default)]
pub(crate) struct Futex {
    /// The futex value.
    pub(crate) word: AtomicU32,
    /// Loom's stand-in for the kernel's wait queue of this word.
    #[cfg(loom)]
    pub(crate) queue: loom::sync::Notify,
}

impl std::ops::Deref for Futex {
    type Target = AtomicU32;
    fn deref(&self) -> &AtomicU32 {
        &self.word
    }
}

#[cfg(all(fuzzing, not(loom)))]
pub(crate) use hostile::{AtomicU32, AtomicU64};

/// Fuzzing only: the shared atomics with a hook before every read.
#[cfg(all(fuzzing, not(loom)))]
pub(crate) mod hostile;
