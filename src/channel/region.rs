//! The memory a ring lives in: a header followed by a slot array, in a SysV segment or on the
//! heap (for two threads, tests and Miri).
//!
//! This module owns the raw pointers. It turns a validated [`Geometry`] and a base address into
//! the few accessors the ring protocol needs (the shared indices, record headers, payload
//! pointers) and guarantees they stay inside the mapping: every slot index is masked here. It
//! does not decide when to read or write them; that is the ring's job (`ring`).

use std::ptr::NonNull;
use std::sync::atomic::AtomicBool;
#[cfg(any(loom, not(miri)))]
use std::sync::atomic::Ordering;

#[cfg(any(loom, not(miri)))]
use crate::sync::AtomicU32;
use crate::sync::AtomicU64;

use crate::backing::Backing;
use crate::error::{Corruption, Ident};
use crate::layout::{Geometry, Header, RECORD_HEADER};

/// A ring's memory with its validated geometry: the only view of the slots the ring uses.
pub(crate) struct Region {
    backing: Backing,
    header: NonNull<Header>,
    slots: NonNull<u8>,
    geometry: Geometry,
    ident: Ident,
    persistent: bool,
    lost: Option<&'static AtomicBool>,
}

// SAFETY: Region hands out atomics and raw pointers only; which side may touch which bytes is
// enforced by the ring protocol, not by the type, and holds across threads as across processes.
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
        assert!(backing.len() as u64 >= geometry.ring_size());
        let header = NonNull::from(backing.header().expect("ring_size > HEADER_SIZE"));
        let slots = backing.slots();
        let lost = backing.lost_flag();
        Region {
            backing,
            header,
            slots,
            geometry,
            ident,
            persistent,
            lost,
        }
    }

    /// Whether the memory was lost: a page of the ring's file or huge pages vanished under the
    /// mapping, and the `SIGBUS` handler replaced the mapping with zeros (see `crate::backing::sigbus`).
    /// Always false for the backings whose pages cannot vanish (`Backing::lost_flag`): for
    /// them it is one well-predicted branch on a word next to the geometry; for the others,
    /// one load of a process-local flag that is written at most once.
    #[inline]
    pub(crate) fn lost(&self) -> bool {
        match self.lost {
            None => false,
            Some(flag) => {
                // The flag is set by a signal handler on this thread, in the middle of an
                // access to the mapping that came before this call: the compiler fence keeps
                // that access before the load, and a Relaxed load suffices (same thread; no
                // other data is published).
                std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
                flag.load(std::sync::atomic::Ordering::Relaxed)
            }
        }
    }

    /// The loss to report once [`Region::lost`] is true: which memory was lost.
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

    /// The header.
    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: `header` was derived from `backing.header()` (which checked size and
        // alignment) and the backing lives as long as `self`.
        unsafe { self.header.as_ref() }
    }

    /// The backing memory.
    pub(crate) fn backing(&self) -> &Backing {
        &self.backing
    }

    /// The validated geometry (private copy).
    #[inline]
    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Which ring this is, for errors.
    #[inline]
    pub(crate) fn ident(&self) -> Ident {
        self.ident
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

    /// Pointer to the start of the slot at counter `at` (masked into the array).
    #[inline]
    fn slot(&self, at: u64) -> *mut u8 {
        let index = (at & self.geometry.mask()) as usize;
        // SAFETY: index < slot_count, so the offset is below array_bytes and inside the region
        // (checked in `new`).
        unsafe { self.slots.as_ptr().add(index << self.geometry.slot_shift) }
    }

    /// The two 32-bit words of a record header (`len`, `kind`) as one read each.
    #[inline]
    #[cfg(not(any(loom, miri)))]
    fn record_words(&self, at: u64) -> (&AtomicU32, &AtomicU32) {
        let p = self.slot(at).cast::<AtomicU32>();
        // SAFETY: slot starts are aligned to the slot size (≥ 8) from a 128-aligned array, and
        // a slot holds at least 8 bytes. AtomicU32 has the size and alignment of u32, and the
        // bytes stay mapped while `self` lives. Both processes access record headers only
        // through atomics.
        unsafe { (&*p, &*p.add(1)) }
    }

    /// Under loom the record headers are model atomics beside the slots.
    #[cfg(loom)]
    fn record_words(&self, at: u64) -> (&AtomicU32, &AtomicU32) {
        let Backing::Heap(h) = &self.backing else {
            unreachable!("only heap rings exist under loom")
        };
        let [len, kind] = &h.model.records[(at & self.geometry.mask()) as usize];
        (len, kind)
    }

    /// Tells the model that this side now accesses the payload of the `slots` slots from `at`
    /// (a no-op outside loom). Loom reports a data race if a write and a read of the same slot
    /// are not ordered by the protocol's Release/Acquire pairs.
    #[inline(always)]
    pub(crate) fn access(&self, at: u64, slots: u64, write: bool) {
        #[cfg(loom)]
        {
            let Backing::Heap(h) = &self.backing else {
                unreachable!("only heap rings exist under loom")
            };
            for i in 0..slots {
                let cell = &h.model.cells[(at.wrapping_add(i) & self.geometry.mask()) as usize];
                if write {
                    cell.with_mut(|_| ());
                } else {
                    cell.with(|_| ());
                }
            }
        }
        #[cfg(not(loom))]
        let _ = (at, slots, write);
    }

    /// Reads the record header at counter `at` once: `(len, kind)`. The peer may write these
    /// bytes at any time; the values are untrusted until the caller validates them.
    #[inline]
    #[cfg(any(loom, not(miri)))]
    pub(crate) fn read_record(&self, at: u64) -> (u32, u32) {
        let (len, kind) = self.record_words(at);
        // Relaxed: visibility comes from the Acquire load of the tail that covered this record
        // (C1 pairs with P2 in DESIGN.md).
        (len.load(Ordering::Relaxed), kind.load(Ordering::Relaxed))
    }

    /// Writes the record header at counter `at`. Producer only, on slots it owns.
    #[inline]
    #[cfg(any(loom, not(miri)))]
    pub(crate) fn write_record(&self, at: u64, len: u32, kind: u32) {
        let (l, k) = self.record_words(at);
        // Relaxed: published by the producer's Release store of the tail (P2).
        l.store(len, Ordering::Relaxed);
        k.store(kind, Ordering::Relaxed);
    }

    // Under Miri the record header is read and written with plain (non-atomic) accesses, at
    // the same place in the slot. Why: a header's bytes are, at other times, payload bytes of a
    // longer record copied with `copy_nonoverlapping`, and a payload copy can end inside a
    // header word (slot size 16, a 9-byte message covers the first byte of the next slot's
    // `len`). Mixing such a partially overlapping non-atomic write with later 32-bit atomic
    // stores is legal Rust (the accesses are ordered by the protocol), but Miri's weak-memory
    // emulation (nightly 2026-05-19) ICEs on it: the non-atomic write drops the word's store
    // buffer while the bytes it missed still count as atomically written, and the next atomic
    // store panics ("cannot have empty store buffer when previous write was atomic",
    // weak_memory.rs; the family of rust-lang/miri#5185). Without this Miri could only run
    // with `-Zmiri-disable-weak-memory-emulation`.
    //
    // What this keeps: the same address arithmetic, masking, alignment and bounds as the
    // production accessors (a misaligned or out-of-bounds header is still UB that Miri
    // reports). What it changes: in-process both sides are our own code, so a plain access is
    // data-race free exactly when the protocol orders the header write (P2) before the read
    // (C1) and the read (C2) before the next write (P3); Miri's race detector then checks that
    // ordering for every header, where Relaxed atomics would have hidden a missing
    // Release/Acquire. Production keeps the atomics because a hostile peer in another process
    // may write these bytes at any time (DESIGN.md, "The peer is untrusted", rule 4).

    /// Under Miri: `read_record` with plain loads (see the comment above).
    #[inline]
    #[cfg(all(miri, not(loom)))]
    pub(crate) fn read_record(&self, at: u64) -> (u32, u32) {
        let p = self.slot(at).cast::<u32>();
        // SAFETY: as in `record_words`: a slot start is 8-aligned and holds at least 8 bytes,
        // inside the live allocation. Only the Miri build runs this, on heap rings whose both
        // sides are this process's code, which the protocol orders (see above).
        unsafe { (p.read(), p.add(1).read()) }
    }

    /// Under Miri: `write_record` with plain stores (see the comment above `read_record`).
    #[inline]
    #[cfg(all(miri, not(loom)))]
    pub(crate) fn write_record(&self, at: u64, len: u32, kind: u32) {
        let p = self.slot(at).cast::<u32>();
        // SAFETY: as in `read_record`; the producer owns these slots until it publishes them.
        unsafe {
            p.write(len);
            p.add(1).write(kind);
        }
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
