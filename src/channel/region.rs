//! A ring's memory as the channel holds it: the backing that keeps it mapped, the ring
//! [`Memory`] it gives (which also names the ring in errors), and what roles read
//! (`persistent`).

use std::ops::Deref;

use crate::backing::Backing;
use crate::error::Ident;
use crate::layout::Geometry;
use crate::ring::Memory;

/// A ring's memory with its validated geometry and the backing that holds it.
pub(crate) struct Region {
    memory: Memory,
    backing: Backing,
    persistent: bool,
}

// SAFETY: the backing only keeps the memory mapped; Region hands out atomics and raw pointers
// only, and which side may touch which bytes is enforced by the ring protocol, across threads
// as across processes.
unsafe impl Send for Region {}
// SAFETY: as for Send; all shared state is reached through atomics or raw pointers.
unsafe impl Sync for Region {}

impl Region {
    /// Wraps memory whose header was validated to describe `geometry`.
    ///
    /// # Panics
    ///
    /// If the backing is smaller than `geometry.ring_size()`, which validation rules out.
    pub(crate) fn new(
        backing: Backing,
        geometry: Geometry,
        ident: Ident,
        persistent: bool,
    ) -> Region {
        Region {
            memory: backing.memory(geometry, ident),
            backing,
            persistent,
        }
    }

    /// Whether the ring was created persistent (read once, at attach).
    pub(crate) fn persistent(&self) -> bool {
        self.persistent
    }

    /// The backing memory.
    pub(crate) fn backing(&self) -> &Backing {
        &self.backing
    }
}

impl Deref for Region {
    type Target = Memory;

    #[inline(always)]
    fn deref(&self) -> &Memory {
        &self.memory
    }
}
