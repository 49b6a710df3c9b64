//! The heap backing: a ring in this process's memory, for two threads, tests, loom and Miri.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

use crate::layout::{Geometry, Header, LINE};
use crate::sync::SlotModel;

/// A zeroed, 128-aligned heap allocation, freed on drop.
pub(crate) struct HeapBuf {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) layout: Layout,
}

impl HeapBuf {
    /// Allocates `len` zeroed bytes aligned to a header line.
    pub(crate) fn zeroed(len: usize) -> Option<HeapBuf> {
        let layout = Layout::from_size_align(len.max(1), LINE).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc::alloc_zeroed(layout) })?;
        Some(HeapBuf { ptr, layout })
    }
}

impl Drop for HeapBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with exactly this layout and is freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// A ring on the heap: the header in a box of its own, the slots in a line-aligned buffer. The
/// same protocol runs on it as on a segment; under loom it also carries the model's view of the
/// record headers and slot accesses.
pub(crate) struct HeapRing {
    /// From `Box::into_raw`, freed in `Drop`: a raw pointer, not a `Box`, because the region
    /// keeps a pointer into it while the ring moves, and moving a `Box` would assert that it
    /// is the only way to the header (Miri's Stacked Borrows reports that).
    pub(crate) header: NonNull<Header>,
    pub(crate) slots: HeapBuf,
    /// Loom's model of the slots (nothing in other builds).
    pub(crate) model: SlotModel,
}

impl HeapRing {
    /// A zeroed ring of this shape.
    pub(crate) fn new(geometry: &Geometry) -> Option<HeapRing> {
        let mut ring = HeapRing::with_slot_bytes(usize::try_from(geometry.array_bytes()).ok()?)?;
        ring.model = SlotModel::new(geometry.slot_count);
        Some(ring)
    }

    /// A zeroed header and `bytes` of zeroed slot memory (the fuzzer sizes it to a whole
    /// segment image, not a geometry).
    pub(crate) fn with_slot_bytes(bytes: usize) -> Option<HeapRing> {
        Some(HeapRing {
            header: NonNull::from(Box::leak(Box::<Header>::default())),
            slots: HeapBuf::zeroed(bytes)?,
            model: SlotModel::default(),
        })
    }
}

impl Drop for HeapRing {
    fn drop(&mut self) {
        // SAFETY: `header` came from `Box::leak` in `new` and is freed exactly once, here; no
        // reference to it outlives the HeapRing (the region borrows it through `self`).
        drop(unsafe { Box::from_raw(self.header.as_ptr()) });
    }
}
