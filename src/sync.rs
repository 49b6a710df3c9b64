//! The one switch between real atomics and loom's model of them (`--cfg loom`).
//!
//! Everything in the ring protocol that another thread or process reads or writes concurrently
//! goes through these types, so loom can explore every interleaving and every ordering the
//! memory model allows. Under loom, SysV segments are not modelled (loom's atomics are handles
//! into the model, not memory that can be overlaid on a segment): only the heap ring exists.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64};
#[cfg(not(loom))]
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
