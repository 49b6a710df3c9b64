//! The memory a ring lives in: a header followed by a slot array, in a SysV segment or on the
//! heap (for two threads, tests and Miri).
//!
//! This module owns the raw pointers. It turns a validated [`Geometry`] and a base address into
//! the few accessors the ring protocol needs (the shared indices, record headers, payload
//! pointers) and guarantees they stay inside the mapping: every slot index is masked here. It
//! does not decide when to read or write them; that is the ring's job (`ring`).

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::AtomicBool;
#[cfg(any(loom, not(miri)))]
use std::sync::atomic::Ordering;

#[cfg(any(loom, not(miri)))]
use crate::sync::AtomicU32;
use crate::sync::AtomicU64;

use crate::backing::file::FileMap;
use crate::backing::memfd::MemfdMap;
use crate::backing::sysv::Segment;
use crate::error::{Corruption, Ident, LostMemory};
use crate::layout::{Geometry, HEADER_SIZE, Header, LINE, RECORD_HEADER};

/// A zeroed, 128-aligned heap allocation, freed on drop.
pub(crate) struct HeapBuf {
    ptr: NonNull<u8>,
    layout: Layout,
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
    header: NonNull<Header>,
    slots: HeapBuf,
    #[cfg(loom)]
    model: LoomSlots,
}

/// Under loom: record headers as model atomics, and one tracked cell per slot so that the model
/// reports a data race when the protocol fails to order a slot's write before its read.
#[cfg(loom)]
struct LoomSlots {
    records: Vec<[AtomicU32; 2]>,
    cells: Vec<loom::cell::UnsafeCell<()>>,
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

    /// Where the slot array starts (only meaningful once `len() >= ring_size`).
    fn slots(&self) -> NonNull<u8> {
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
    fn lost_flag(&self) -> Option<&'static AtomicBool> {
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
    fn lost_memory(&self) -> LostMemory {
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
fn mapped_header<'a>(base: *mut u8, len: usize) -> Option<&'a Header> {
    if len < HEADER_SIZE {
        return None;
    }
    overlay_header(NonNull::new(base)?)
}

/// The slot array of a mapping at `base`.
fn after_header(base: *mut u8) -> NonNull<u8> {
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

/// A header reference over segment memory at `base`, which must be page-aligned and at least
/// HEADER_SIZE bytes, mapped as long as the reference's lifetime.
#[cfg(not(loom))]
fn overlay_header<'a>(base: NonNull<u8>) -> Option<&'a Header> {
    debug_assert!(base.as_ptr().align_offset(LINE) == 0);
    // SAFETY: the caller passes an attached segment's address (page-aligned, so LINE-aligned)
    // with at least HEADER_SIZE bytes, borrowed for the lifetime. Every field of Header is an
    // atomic, so a shared reference stays sound while another process writes the same bytes;
    // padding is never read through it.
    Some(unsafe { &*base.as_ptr().cast::<Header>() })
}

/// Under loom the header's atomics are model handles, not bytes: segments are not modelled.
#[cfg(loom)]
fn overlay_header<'a>(_base: NonNull<u8>) -> Option<&'a Header> {
    panic!("SysV segments are not modelled under loom; use Ring::in_process")
}

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
