//! How this process touches ring memory that is not a header atomic: record headers, slot
//! accesses (tracked under loom) and overlaying the header on mapped bytes. The cfg switches of
//! these accesses live here and nowhere else.

use std::ptr::NonNull;
#[cfg(any(loom, not(miri)))]
use std::sync::atomic::Ordering;

#[cfg(any(loom, not(miri)))]
use super::AtomicU32;

/// Under loom: record headers as model atomics, and one tracked cell per slot, so that the
/// model reports a data race when the protocol fails to order a slot's write before its read.
/// Elsewhere nothing (zero-sized).
#[derive(Default)]
pub(crate) struct SlotModel {
    #[cfg(loom)]
    records: Vec<[AtomicU32; 2]>,
    #[cfg(loom)]
    cells: Vec<loom::cell::UnsafeCell<()>>,
}

impl SlotModel {
    /// The model of `slot_count` slots (nothing outside loom).
    pub(crate) fn new(slot_count: u32) -> SlotModel {
        #[cfg(loom)]
        return SlotModel {
            records: (0..slot_count).map(|_| Default::default()).collect(),
            cells: (0..slot_count)
                .map(|_| loom::cell::UnsafeCell::new(()))
                .collect(),
        };
        #[cfg(not(loom))]
        {
            let _ = slot_count;
            SlotModel {}
        }
    }

    /// A handle to this model for the ring's memory (zero-sized outside loom). It points into
    /// the model's buffers, not at the model, so the ring that owns the model may move.
    pub(crate) fn handle(&self) -> Model {
        Model {
            #[cfg(loom)]
            model: Some((
                NonNull::from(self.records.as_slice()).cast(),
                NonNull::from(self.cells.as_slice()).cast(),
            )),
        }
    }
}

/// The ring memory's handle on its [`SlotModel`]: zero-sized outside loom; under loom, where
/// only heap rings exist, pointers to the heap ring's record and cell buffers (which outlive
/// the memory and never reallocate).
#[derive(Clone, Copy, Default)]
pub(crate) struct Model {
    #[cfg(loom)]
    model: Option<Buffers>,
}

/// Under loom: where the record words and the slot cells start.
#[cfg(loom)]
type Buffers = (NonNull<[AtomicU32; 2]>, NonNull<loom::cell::UnsafeCell<()>>);

impl Model {
    /// No model: memory that is not a heap ring (never used under loom).
    pub(crate) fn none() -> Model {
        Model::default()
    }

    /// The record header words of masked slot `index`.
    #[cfg(loom)]
    fn record<'a>(&self, index: usize) -> &'a [AtomicU32; 2] {
        let (records, _) = self.model.expect("only heap rings exist under loom");
        // SAFETY: `index` is masked below the slot count, the length of the buffer, which the
        // heap ring keeps allocated and unchanged while its memory is in use.
        unsafe { records.add(index).as_ref() }
    }

    /// The tracked cell of masked slot `index`.
    #[cfg(loom)]
    fn cell<'a>(&self, index: usize) -> &'a loom::cell::UnsafeCell<()> {
        let (_, cells) = self.model.expect("only heap rings exist under loom");
        // SAFETY: as in `record`.
        unsafe { cells.add(index).as_ref() }
    }
}

/// Tells the model that this side now accesses the payload of the `slots` slots from masked
/// index `first` of a ring with index `mask` (a no-op outside loom). Loom reports a data race
/// if a write and a read of the same slot are not ordered by the protocol's Release/Acquire.
#[inline(always)]
pub(crate) fn access(model: Model, first: u64, slots: u64, mask: u64, write: bool) {
    #[cfg(loom)]
    for i in 0..slots {
        let cell = model.cell((first.wrapping_add(i) & mask) as usize);
        if write {
            cell.with_mut(|_| ());
        } else {
            cell.with(|_| ());
        }
    }
    #[cfg(not(loom))]
    let _ = (model, first, slots, mask, write);
}

/// Reads the record header (`len`, `kind`) at the slot start `p` (masked index `index`) once.
///
/// # Safety
///
/// `p` is a slot start inside live ring memory: 8-aligned, with at least 8 bytes.
#[inline]
#[cfg(any(loom, not(miri)))]
pub(crate) unsafe fn read_record(p: *mut u8, index: usize, model: Model) -> (u32, u32) {
    // SAFETY: forwarded from the caller.
    let (len, kind) = unsafe { record_words(p, index, &model) };
    // Relaxed: visibility comes from the Acquire load of the tail that covered this record
    // (C1 pairs with P2 in DESIGN.md).
    (len.load(Ordering::Relaxed), kind.load(Ordering::Relaxed))
}

/// Writes the record header at the slot start `p`. Producer only, on slots it owns.
///
/// # Safety
///
/// As [`read_record`].
#[inline]
#[cfg(any(loom, not(miri)))]
pub(crate) unsafe fn write_record(p: *mut u8, index: usize, model: Model, len: u32, kind: u32) {
    // SAFETY: forwarded from the caller.
    let (l, k) = unsafe { record_words(p, index, &model) };
    // Relaxed: published by the producer's Release store of the tail (P2).
    l.store(len, Ordering::Relaxed);
    k.store(kind, Ordering::Relaxed);
}

/// The two 32-bit words of a record header as atomics over the slot's bytes.
#[inline]
#[cfg(not(any(loom, miri)))]
unsafe fn record_words<'a>(p: *mut u8, _: usize, _: &Model) -> (&'a AtomicU32, &'a AtomicU32) {
    let p = p.cast::<AtomicU32>();
    // SAFETY: the caller passes a slot start: aligned to the slot size (≥ 8) from a 128-aligned
    // array, holding at least 8 bytes. AtomicU32 has the size and alignment of u32, and the
    // bytes stay mapped while the ring lives. Both processes access record headers only
    // through atomics.
    unsafe { (&*p, &*p.add(1)) }
}

/// Under loom the record headers are model atomics beside the slots.
#[cfg(loom)]
unsafe fn record_words<'a>(
    _: *mut u8,
    index: usize,
    model: &Model,
) -> (&'a AtomicU32, &'a AtomicU32) {
    let [len, kind] = model.record(index);
    (len, kind)
}

// Under Miri the record header is read and written with plain (non-atomic) accesses, at the
// same place in the slot: docs/DESIGN.md, "Miri and the record header", says why and what it
// keeps. Production keeps the atomics because a hostile peer in another process may write
// these bytes at any time (DESIGN.md, "The peer is untrusted", rule 4).

/// Under Miri: `read_record` with plain loads (see the comment above).
///
/// # Safety
///
/// As the production `read_record`.
#[inline]
#[cfg(all(miri, not(loom)))]
pub(crate) unsafe fn read_record(p: *mut u8, _: usize, _: Model) -> (u32, u32) {
    let p = p.cast::<u32>();
    // SAFETY: a slot start is 8-aligned and holds at least 8 bytes, inside the live allocation
    // (caller). Only the Miri build runs this, on heap rings whose both sides are this
    // process's code, which the protocol orders.
    unsafe { (p.read(), p.add(1).read()) }
}

/// Under Miri: `write_record` with plain stores (see the comment above `read_record`).
///
/// # Safety
///
/// As the production `write_record`.
#[inline]
#[cfg(all(miri, not(loom)))]
pub(crate) unsafe fn write_record(p: *mut u8, _: usize, _: Model, len: u32, kind: u32) {
    let p = p.cast::<u32>();
    // SAFETY: as in `read_record`; the producer owns these slots until it publishes them.
    unsafe {
        p.write(len);
        p.add(1).write(kind);
    }
}

/// A reference to a `T` made of atomics (the ring header) over mapped bytes at `base`.
///
/// # Safety
///
/// `base` is aligned for `T` and at least `size_of::<T>()` bytes stay mapped for `'a`; every
/// field of `T` is an atomic (so a shared reference stays sound while another process writes
/// the same bytes) and padding is never read through it.
#[cfg(not(loom))]
pub(crate) unsafe fn overlay<'a, T>(base: NonNull<u8>) -> &'a T {
    debug_assert!(base.as_ptr().align_offset(align_of::<T>()) == 0);
    // SAFETY: forwarded from the caller.
    unsafe { &*base.as_ptr().cast::<T>() }
}

/// Under loom the header's atomics are model handles, not bytes: mappings are not modelled.
///
/// # Safety
///
/// None needed: it panics.
#[cfg(loom)]
pub(crate) unsafe fn overlay<'a, T>(_base: NonNull<u8>) -> &'a T {
    panic!("mapped rings are not modelled under loom; use Ring::create(Heap, ..)")
}
