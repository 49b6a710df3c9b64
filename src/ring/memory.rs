//! The seam between the algorithm and whatever holds the ring: a header, a slot array of a
//! validated geometry, and a "revoked?" flag for memory that can disappear. Every slot index is
//! masked here, so no accessor can leave the array.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering, compiler_fence};

use crate::error::{Corrupted, Corruption, Ident, LostMemory, Role};
use crate::layout::{Geometry, Header, RECORD_HEADER};
use crate::sync::{self, AtomicU64, Model};

/// A ring's memory with its validated geometry: the only view of the slots the ring uses.
/// Concrete and `Copy`-cheap to reach (no trait object): the hot path pays a field load.
pub(crate) struct Memory {
    header: NonNull<Header>,
    slots: NonNull<u8>,
    geometry: Geometry,
    revoked: Option<&'static AtomicBool>,
    /// What is lost once `revoked` is set.
    lost: LostMemory,
    /// Which ring this is, for errors.
    ident: Ident,
    model: Model,
}

// SAFETY: Memory hands out atomics and raw pointers only; which side may touch which bytes is
// enforced by the ring protocol, not by the type, and holds across threads as across processes.
unsafe impl Send for Memory {}
// SAFETY: as for Send; all shared state is reached through atomics or raw pointers.
unsafe impl Sync for Memory {}

impl Memory {
    /// Ring memory: the header at `header`, `geometry.array_bytes()` of slots at `slots`.
    /// `revoked`, if any, is set (by a signal handler) once the memory vanished under us, and
    /// `lost` names that memory; `ident` names the ring in errors.
    ///
    /// # Safety
    ///
    /// Both ranges stay allocated (mapped) and aligned (header to its type, slots to a header
    /// line) for as long as the `Memory` lives, and are only ever accessed through atomics, the
    /// copy of `crate::sync::copy`, or by another process.
    pub(crate) unsafe fn new(
        header: NonNull<Header>,
        slots: NonNull<u8>,
        geometry: Geometry,
        revoked: Option<&'static AtomicBool>,
        lost: LostMemory,
        ident: Ident,
        model: Model,
    ) -> Memory {
        Memory {
            header,
            slots,
            geometry,
            revoked,
            lost,
            ident,
            model,
        }
    }

    /// Which ring this is, for errors.
    #[inline]
    pub(crate) fn ident(&self) -> Ident {
        self.ident
    }

    /// The error once [`Memory::revoked`] is true: which memory was lost.
    #[cold]
    pub(crate) fn lost(&self) -> Corrupted {
        Corrupted {
            ring: self.ident,
            what: Corruption::MemoryLost { memory: self.lost },
        }
    }

    /// The error for a broken rule, `what`, unless the memory was revoked: zeros where the ring
    /// was look like a broken protocol, and then the loss is the real cause.
    #[cold]
    pub(crate) fn corrupted(&self, what: Corruption) -> Corrupted {
        if self.revoked() {
            return self.lost();
        }
        Corrupted {
            ring: self.ident,
            what,
        }
    }

    /// Whether `role`'s owner word still holds `me`, the identity its holder wrote there (see
    /// "A third writer" in docs/DESIGN.md). Nobody but the holder writes a held role's word (a
    /// claimant only replaces 0 or a dead holder), so anything else there means another
    /// process rewrote it: the side must stop rather than go on as if it still held the role.
    /// The word sits in the side's own cache line: a load that hits unless someone wrote it.
    #[inline]
    pub(crate) fn check_owner(&self, role: Role, me: u64) -> Result<(), Corrupted> {
        // Relaxed: our own word; nothing is synchronised through this load, only compared.
        let found = self.owner(role).load(Ordering::Relaxed);
        if found == me {
            return Ok(());
        }
        Err(self.corrupted(Corruption::RoleLost { role, found }))
    }

    /// `role`'s owner word.
    #[inline(always)]
    fn owner(&self, role: Role) -> &AtomicU64 {
        let h = self.header();
        match role {
            Role::Producer => &h.producer.owner,
            Role::Consumer => &h.consumer.owner,
        }
    }

    /// Checks `tail - head` read when a side starts: the indices must be at most a ring apart.
    pub(crate) fn check_indices(&self, head: u64, tail: u64) -> Result<(), Corrupted> {
        let capacity = self.geometry.capacity();
        if tail.wrapping_sub(head) > capacity {
            return Err(Corrupted {
                ring: self.ident,
                what: Corruption::TailOutOfRange {
                    tail,
                    head,
                    last_tail: tail,
                    capacity,
                },
            });
        }
        Ok(())
    }

    /// Whether the memory was revoked: a page of the ring's file or huge pages vanished under
    /// the mapping, and the `SIGBUS` handler replaced the mapping with zeros. Always false for
    /// memory whose pages cannot vanish: one well-predicted branch on a word next to the
    /// geometry; for the others, one load of a process-local flag written at most once.
    #[inline]
    pub(crate) fn revoked(&self) -> bool {
        match self.revoked {
            None => false,
            Some(flag) => {
                // The flag is set by a signal handler on this thread, in the middle of an
                // access to the mapping that came before this call: the compiler fence keeps
                // that access before the load, and a Relaxed load suffices (same thread; no
                // other data is published).
                compiler_fence(Ordering::SeqCst);
                flag.load(Ordering::Relaxed)
            }
        }
    }

    /// The header.
    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: `header` stays valid while `self` lives (`Memory::new`).
        unsafe { self.header.as_ref() }
    }

    /// The validated geometry (private copy).
    #[inline]
    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The producer's shared tail.
    #[inline]
    pub(crate) fn tail(&self) -> &AtomicU64 {
        &self.header().producer.tail
    }

    /// The consumer's shared head.
    #[inline]
    pub(crate) fn head(&self) -> &AtomicU64 {
        &self.header().consumer.head
    }

    /// The masked index of counter `at`.
    #[inline(always)]
    fn index(&self, at: u64) -> usize {
        (at & self.geometry.mask()) as usize
    }

    /// Pointer to the start of the slot at counter `at` (masked into the array).
    #[inline]
    fn slot(&self, at: u64) -> *mut u8 {
        // SAFETY: index < slot_count, so the offset is below array_bytes and inside the slots
        // (`Memory::new`).
        unsafe {
            self.slots
                .as_ptr()
                .add(self.index(at) << self.geometry.slot_shift)
        }
    }

    /// Tells the model that this side now accesses the payload of the `slots` slots from `at`
    /// (a no-op outside loom).
    #[inline(always)]
    pub(crate) fn access(&self, at: u64, slots: u64, write: bool) {
        sync::access(self.model, at, slots, self.geometry.mask(), write);
    }

    /// Reads the record header at counter `at` once: `(len, kind)`. The peer may write these
    /// bytes at any time; the values are untrusted until the caller validates them.
    #[inline]
    pub(crate) fn read_record(&self, at: u64) -> (u32, u32) {
        // SAFETY: a slot start, 8-aligned (slot size ≥ 8 from a line-aligned array) with at
        // least 8 bytes, inside the live slots.
        unsafe { sync::read_record(self.slot(at), self.index(at), self.model) }
    }

    /// Writes the record header at counter `at`. Producer only, on slots it owns.
    #[inline]
    pub(crate) fn write_record(&self, at: u64, len: u32, kind: u32) {
        // SAFETY: as in `read_record`.
        unsafe { sync::write_record(self.slot(at), self.index(at), self.model, len, kind) }
    }

    /// Pointer to the payload of the record at counter `at`.
    ///
    /// The caller may use `len` bytes from it only if the record's slots `at..at+record_slots`
    /// do not run past the end of the array (the ring checks this before every use).
    #[inline]
    pub(crate) fn payload(&self, at: u64, len: usize) -> *mut u8 {
        let p = self.slot(at);
        debug_assert!(
            ((at & self.geometry.mask()) << self.geometry.slot_shift)
                + (RECORD_HEADER + len) as u64
                <= self.geometry.array_bytes()
        );
        // SAFETY: a slot has at least RECORD_HEADER bytes, so p + 8 is inside the array.
        unsafe { p.add(RECORD_HEADER) }
    }
}
