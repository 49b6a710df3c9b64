//! The heap backing: a ring in this process's memory, for two threads, tests, loom and Miri.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

use crate::layout::{Geometry, Header, LINE};
#[cfg(loom)]
use crate::sync::AtomicU32;

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
    #[cfg(loom)]
    pub(crate) model: LoomSlots,
}

/// Under loom: record headers as model atomics, and one tracked cell per slot so that the model
/// reports a data race when the protocol fails to order a slot's write before its read.
#[cfg(loom)]
pub(crate) struct LoomSlots {
    pub(crate) records: Vec<[AtomicU32; 2]>,
    pub(crate) cells: Vec<loom::cell::UnsafeCell<()>>,
}

impl HeapRing {
    /// A zeroed ring of this shape.
    pub(crate) fn new(geometry: &Geometry) -> Option<HeapRing> {
        let bytes = usize::try_from(geometry.array_bytes()).ok()?;
        Some(HeapRing {
            header: NonNull::from(Box::leak(Box::<Header>::default())),
            slots: HeapBuf::zeroed(bytes)?,
            #[cfg(loom)]
            model: LoomSlots {
                records: (0..geometry.slot_count)
                    .map(|_| Default::default())
                    .collect(),
                cells: (0..geometry.slot_count)
                    .map(|_| loom::cell::UnsafeCell::new(()))
                    .collect(),
            },
        })
    }
}

/// Fuzzing only: a ring whose slot memory is sized to a whole segment image, not a geometry.
#[cfg(all(fuzzing, not(loom)))]
impl HeapRing {
    /// A zeroed header and `bytes` of zeroed slot memory.
    pub(crate) fn with_slot_bytes(bytes: usize) -> Option<HeapRing> {
        Some(HeapRing {
            header: NonNull::from(Box::leak(Box::<Header>::default())),
            slots: HeapBuf::zeroed(bytes)?,
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
