//! A ring's memory as the channel holds it: the backing that keeps it mapped, the ring
//! [`Memory`] it gives, and what errors name (`ident`) and roles read (`persistent`).

use std::ops::Deref;

use crate::backing::Backing;
use crate::error::{Corruption, Ident};
use crate::layout::Geometry;
use crate::ring::Memory;

/// A ring's memory with its validated geometry and the backing that holds it.
pub(crate) struct Region {
    memory: Memory,
    backing: Backing,
    ident: Ident,
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
            memory: backing.memory(geometry),
            backing,
            ident,
            persistent,
        }
    }

    /// The loss to report once [`Memory::revoked`] is true: which memory was lost.
    #[cold]
    pub(crate) fn memory_lost(&self) -> Corruption {
        Corruption::MemoryLost {
            memory: self.backing.lost_memory(),
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

    /// Which ring this is, for errors.
    #[inline]
    pub(crate) fn ident(&self) -> Ident {
        self.ident
    }
}

impl Deref for Region {
    type Target = Memory;

    #[inline(always)]
    fn deref(&self) -> &Memory {
        &self.memory
    }
}
