//! Each OS object that can hold a ring, one file each.

pub(crate) mod access;
pub(crate) mod file;
pub(crate) mod heap;
pub(crate) mod keylock;
pub mod memfd;
pub(crate) mod sigbus;
pub mod sysv;

use std::ptr::NonNull;
use std::sync::atomic::AtomicBool;

use crate::error::{Ident, LostMemory};
use crate::layout::{Geometry, HEADER_SIZE, Header};
use crate::ring::Memory;
use file::FileMap;
pub(crate) use heap::HeapRing;
use memfd::MemfdMap;
use sysv::Segment;

/// What keeps the memory mapped or allocated.
pub(crate) enum Backing {
    /// An attached SysV segment.
    Segment(Segment),
    /// A heap allocation (in-process ring).
    Heap(HeapRing),
    /// A shared mapping of a sealed memfd.
    Memfd(MemfdMap),
    /// A shared mapping of a file opened by path.
    File(FileMap),
}

impl Backing {
    /// Bytes of header and slots available; for a segment, the kernel's size.
    pub(crate) fn len(&self) -> usize {
        match self {
            Backing::Segment(s) => s.len(),
            Backing::Heap(h) => HEADER_SIZE + h.slots.layout.size(),
            Backing::Memfd(m) => m.len(),
            Backing::File(f) => f.len(),
        }
    }

    /// The header, or `None` if the memory is too small to hold one.
    pub(crate) fn header(&self) -> Option<&Header> {
        match self {
            Backing::Segment(s) => segment_header(s),
            // SAFETY: `h.header` came from a live Box (see `HeapRing`) that is freed only when
            // the HeapRing drops, after this borrow of it ends.
            Backing::Heap(h) => Some(unsafe { h.header.as_ref() }),
            Backing::Memfd(m) => mapped_header(m.as_ptr(), m.len()),
            Backing::File(f) => mapped_header(f.as_ptr(), f.len()),
        }
    }

    /// The ring memory of `geometry` in this backing: the header, the slots, the revoked flag
    /// of memory that can vanish and what it would lose, the ring's name in errors (`ident`),
    /// and (under loom) the heap ring's model.
    ///
    /// # Panics
    ///
    /// If the backing is smaller than `geometry.ring_size()`, which validation rules out.
    pub(crate) fn memory(&self, geometry: Geometry, ident: Ident) -> Memory {
        assert!(self.len() as u64 >= geometry.ring_size());
        let header = NonNull::from(self.header().expect("ring_size > HEADER_SIZE"));
        let model = match self {
            Backing::Heap(h) => h.model.handle(),
            _ => crate::sync::Model::none(),
        };
        // SAFETY: the header and `array_bytes` of slots lie inside this backing (checked
        // above), which stays mapped while the ring's `Region` holds both; shared bytes are
        // only accessed through atomics and the shared copy.
        unsafe {
            Memory::new(
                header,
                self.slots(),
                geometry,
                self.lost_flag(),
                self.lost_memory(),
                ident,
                model,
            )
        }
    }

    /// Where the slot array starts (only meaningful once `len() >= ring_size`).
    pub(crate) fn slots(&self) -> NonNull<u8> {
        match self {
            Backing::Segment(s) => {
                let base = NonNull::new(s.as_ptr()).expect("attached segment is non-null");
                // SAFETY: callers check len() >= ring_size > HEADER_SIZE first, so the offset
                // stays inside the attachment.
                unsafe { base.add(HEADER_SIZE) }
            }
            Backing::Heap(h) => h.slots.ptr,
            Backing::Memfd(m) => after_header(m.as_ptr()),
            Backing::File(f) => after_header(f.as_ptr()),
        }
    }

    /// The flag the `SIGBUS` handler sets when the memory was lost under the mapping, for the
    /// backings whose pages can disappear through another process's actions: a file (it can
    /// shrink) and huge pages (the peer can remove one while the pool is empty). `None` for the
    /// others: the heap, and a segment or memfd on normal pages, where the peer's
    /// `MADV_REMOVE` or hole punch gives zeros, not a fault (docs/DESIGN.md, "When memory
    /// disappears: SIGBUS"); their mappings are protected too, so a fault there cannot kill
    /// the process, but the ring's hot path does not check it.
    pub(crate) fn lost_flag(&self) -> Option<&'static AtomicBool> {
        if !self.can_fault() {
            return None;
        }
        self.protection().map(|e| e.lost_flag())
    }

    /// The mapping's entry in the `SIGBUS` registry; `None` on the heap.
    pub(crate) fn protection(&self) -> Option<&'static crate::backing::sigbus::Entry> {
        match self {
            Backing::Segment(s) => Some(s.protection()),
            Backing::Memfd(m) => Some(m.protection()),
            Backing::File(f) => Some(f.protection()),
            Backing::Heap(_) => None,
        }
    }

    /// Where a shared mapping starts; `None` on the heap.
    pub(crate) fn mapping(&self) -> Option<*mut u8> {
        match self {
            Backing::Segment(s) => Some(s.as_ptr()),
            Backing::Memfd(m) => Some(m.as_ptr()),
            Backing::File(f) => Some(f.as_ptr()),
            Backing::Heap(_) => None,
        }
    }

    /// The page size of the memory (the huge page size for hugetlb); `None` on the heap.
    pub(crate) fn page_size(&self) -> Option<usize> {
        match self {
            Backing::Segment(s) => Some(s.page_size()),
            Backing::Memfd(m) => Some(m.page_size()),
            Backing::File(_) => Some(crate::backing::sigbus::base_page_size()),
            Backing::Heap(_) => None,
        }
    }

    /// Whether the memory is on huge pages (a hugetlb segment or memfd).
    pub(crate) fn huge_pages(&self) -> bool {
        matches!(self, Backing::Segment(_) | Backing::Memfd(_))
            && self
                .page_size()
                .is_some_and(|p| p > crate::backing::sigbus::base_page_size())
    }

    /// Whether another process can make this memory disappear under our mapping, so that an
    /// access raises `SIGBUS`: a file, or huge pages.
    pub(crate) fn can_fault(&self) -> bool {
        matches!(self, Backing::File(_)) || self.huge_pages()
    }

    /// What memory is lost, for [`Corruption::MemoryLost`](crate::Corruption::MemoryLost).
    pub(crate) fn lost_memory(&self) -> LostMemory {
        match self {
            Backing::File(_) => LostMemory::File,
            _ if self.huge_pages() => LostMemory::HugePages,
            _ => LostMemory::SharedMemory,
        }
    }
}

/// The header of a ring file being created (before it becomes a region).
pub(crate) fn file_header(map: &FileMap) -> Option<&Header> {
    mapped_header(map.as_ptr(), map.len())
}

/// The header of a mapping of `len` bytes at `base`, or `None` if it is too small.
pub(crate) fn mapped_header<'a>(base: *mut u8, len: usize) -> Option<&'a Header> {
    if len < HEADER_SIZE {
        return None;
    }
    overlay_header(NonNull::new(base)?)
}

/// The slot array of a mapping at `base`.
pub(crate) fn after_header(base: *mut u8) -> NonNull<u8> {
    let base = NonNull::new(base).expect("a mapping is non-null");
    // SAFETY: as for a segment: callers check len() >= ring_size > HEADER_SIZE.
    unsafe { base.add(HEADER_SIZE) }
}

/// The header of an attached segment, or `None` if it is too small to hold one.
pub(crate) fn segment_header(seg: &Segment) -> Option<&Header> {
    let base = NonNull::new(seg.as_ptr())?;
    if seg.len() < HEADER_SIZE {
        return None;
    }
    overlay_header(base)
}

/// A header reference over a mapping at `base`, which must be page-aligned and at least
/// HEADER_SIZE bytes, mapped as long as the reference's lifetime.
pub(crate) fn overlay_header<'a>(base: NonNull<u8>) -> Option<&'a Header> {
    // SAFETY: the caller passes an attached mapping's address (page-aligned, so aligned for
    // the header's lines) with at least HEADER_SIZE bytes, borrowed for the lifetime. Every
    // field of Header is an atomic, so a shared reference stays sound while another process
    // writes the same bytes; padding is never read through it.
    Some(unsafe { crate::sync::overlay(base) })
}
