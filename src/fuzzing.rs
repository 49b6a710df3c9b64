//! **Not API.** Entry points for the cargo-fuzz targets in `fuzz/`, compiled only with
//! `--cfg fuzzing` (which cargo-fuzz sets) and hidden from the documentation. Nothing here is
//! covered by semver; it may change or vanish in any release.
//!
//! - [`open_image`]: a ring from arbitrary bytes taken as a whole segment image (header and
//!   slots), attached through the same validation [`Ring::open`] runs on a real segment.
//! - [`attack`] and [`WordMap`]: a scripted hostile peer. Under `--cfg fuzzing` every shared
//!   word is read through `crate::sync::hostile`, whose hook may rewrite the word just before
//!   each read; [`WordMap`] tells the hook which word of which ring an address is.

use std::sync::atomic::Ordering;

use crate::backing::{Backing, HeapRing};
use crate::channel::Ring;
use crate::channel::region::Region;
use crate::error::{Error, Ident};
use crate::layout::{HEADER_SIZE, Header, RECORD_HEADER};
pub use crate::sync::hostile::{Access, Hook};
use crate::sync::{AtomicU32, AtomicU64};

/// A reference to one shared header word of either width.
#[derive(Clone, Copy)]
enum WordRef<'a> {
    U32(&'a AtomicU32),
    U64(&'a AtomicU64),
}

impl WordRef<'_> {
    fn addr(self) -> usize {
        match self {
            WordRef::U32(w) => std::ptr::from_ref(w).addr(),
            WordRef::U64(w) => std::ptr::from_ref(w).addr(),
        }
    }
}

/// What a shared word is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Word {
    /// A field of the configuration line, by name.
    Config(&'static str),
    /// `producer.tail`.
    Tail,
    /// `consumer.head`.
    Head,
    /// Another word of the producer line (`sent`, `owner`, `claims`, `data_event`,
    /// `consumer_waiting`, `consumer_closed`).
    Producer(&'static str),
    /// Another word of the consumer line (`received`, `owner`, `claims`, `space_event`,
    /// `producer_waiting`).
    Consumer(&'static str),
    /// The `len` word of the record header in slot `slot` (an index into the array).
    RecordLen {
        /// Slot index.
        slot: u64,
    },
    /// The `kind` word of the record header in slot `slot`.
    RecordKind {
        /// Slot index.
        slot: u64,
    },
}

/// Every atomic word of a header, with what it is. The one list both [`open_image`] (to load a
/// header from bytes) and [`WordMap`] (to name an address) use.
fn header_words(h: &Header) -> [(Word, WordRef<'_>); 29] {
    use WordRef::{U32, U64};
    let (c, p, q) = (&h.config, &h.producer, &h.consumer);
    [
        (Word::Config("magic"), U64(&c.magic)),
        (Word::Config("version"), U32(&c.version)),
        (Word::Config("header_size"), U32(&c.header_size)),
        (Word::Config("slot_size"), U32(&c.slot_size)),
        (Word::Config("slot_count"), U32(&c.slot_count)),
        (Word::Config("max_message"), U32(&c.max_message)),
        (Word::Config("flags"), U32(&c.flags)),
        (Word::Config("instance_id"), U64(&c.instance_id)),
        (Word::Config("ring_size"), U64(&c.ring_size)),
        (Word::Config("initial_index"), U64(&c.initial_index)),
        (Word::Config("creator_pid"), U32(&c.creator_pid)),
        (Word::Config("ready"), U32(&c.ready)),
        (Word::Config("key"), U32(&c.key)),
        (Word::Config("type_size"), U32(&c.type_size)),
        (Word::Config("type_fingerprint"), U64(&c.type_fingerprint)),
        (Word::Config("type_align"), U32(&c.type_align)),
        (Word::Tail, U64(&p.tail)),
        (Word::Producer("sent"), U64(&p.sent)),
        (Word::Producer("owner"), U64(&p.owner)),
        (Word::Producer("claims"), U32(&p.claims)),
        (Word::Producer("data_event"), U32(&p.data_event.word)),
        (Word::Producer("consumer_waiting"), U32(&p.consumer_waiting)),
        (Word::Producer("consumer_closed"), U32(&p.consumer_closed)),
        (Word::Head, U64(&q.head)),
        (Word::Consumer("received"), U64(&q.received)),
        (Word::Consumer("owner"), U64(&q.owner)),
        (Word::Consumer("claims"), U32(&q.claims)),
        (Word::Consumer("space_event"), U32(&q.space_event.word)),
        (Word::Consumer("producer_waiting"), U32(&q.producer_waiting)),
    ]
}

/// Little-endian value of `n` bytes at `off` in `bytes` (which holds them).
fn le(bytes: &[u8], off: usize, n: usize) -> u64 {
    bytes[off..off + n]
        .iter()
        .rev()
        .fold(0, |v, &b| (v << 8) | u64::from(b))
}

/// Opens a ring from `image`, taken as the whole memory of a segment: `HEADER_SIZE` header
/// bytes, then the slot array (and anything beyond it, as in a segment larger than the ring).
///
/// The header words are loaded from the image (the padding between them is never read by
/// anyone), then the ring is attached by the same code [`Ring::open`] runs after `shmat`:
/// the ready word, one snapshot of the configuration line and its validation against the real
/// size of the memory (`image.len()`, playing `IPC_STAT`'s size). An image shorter than a
/// header fails as a segment that small does. On success the slot array is filled from the
/// image, and the caller may claim roles and use the ring.
///
/// # Errors
///
/// Whatever attaching to a segment with this content returns: `NotShmpipe`,
/// `VersionMismatch`, `SegmentTooSmall`, `BadHeader`, `InitTimeout` (the ready word is 0: the
/// wait is zero here), or `InvalidConfig` if the memory cannot be allocated.
pub fn open_image(image: &[u8]) -> Result<Ring, Error> {
    let too_small = || Error::SegmentTooSmall {
        ident: Ident::default(),
        claimed: HEADER_SIZE as u64,
        actual: image.len() as u64,
    };
    let slot_bytes = image.len().checked_sub(HEADER_SIZE).ok_or_else(too_small)?;
    let no_memory = || Error::InvalidConfig {
        what: format!("cannot allocate a {}-byte image", image.len()),
    };
    // The slot memory is the image's whole rest; the ring gets its geometry validated from
    // the image's header.
    let backing = Backing::Heap(HeapRing::with_slot_bytes(slot_bytes).ok_or_else(no_memory)?);
    let header = backing.header().expect("a heap ring has a header");
    let base = std::ptr::from_ref(header).addr();
    for (_, word) in header_words(header) {
        let off = word.addr() - base;
        // Relaxed: nobody else can see this memory yet; attach's Acquire load of `ready`
        // comes after in this thread.
        match word {
            WordRef::U32(w) => w.store(le(image, off, 4) as u32, Ordering::Relaxed),
            WordRef::U64(w) => w.store(le(image, off, 8), Ordering::Relaxed),
        }
    }
    let ring = Ring::attach_image(backing)?;
    // Attached: the validated array fits in the image's slot bytes. Copy it in, through the
    // region's own accessors (record headers as atomics, payload bytes through the pointer).
    let region = ring.fuzz_region();
    let g = *region.geometry();
    let slots = &image[HEADER_SIZE..];
    let size = g.slot_size as usize;
    for i in 0..g.slot_count as usize {
        let slot = &slots[i * size..(i + 1) * size];
        region.write_record(i as u64, le(slot, 0, 4) as u32, le(slot, 4, 4) as u32);
        let rest = &slot[RECORD_HEADER..];
        let dst = region.payload(i as u64, rest.len());
        // SAFETY: `payload(i, n)` points RECORD_HEADER bytes into slot i, inside the array,
        // and `n = slot_size - RECORD_HEADER` bytes reach exactly to the slot's end. No role is
        // claimed yet, so nothing else reads or writes the slots; `rest` is the caller's
        // memory, which cannot overlap the ring's fresh allocation.
        unsafe { std::ptr::copy_nonoverlapping(rest.as_ptr(), dst, rest.len()) };
    }
    Ok(ring)
}

/// Removes this thread's hook when dropped (see [`attack`]).
#[must_use = "the hook is removed when the guard is dropped"]
pub struct AttackGuard(());

impl Drop for AttackGuard {
    fn drop(&mut self) {
        crate::sync::hostile::set_hook(None);
    }
}

/// Installs `hook` for this thread: from now until the guard drops, every read of a shared
/// word of any ring by this thread first calls it, and stores the value it returns (if any)
/// into the word. Reads the hook makes itself (e.g. [`Ring::status`]) are not hooked.
pub fn attack(hook: Hook) -> AttackGuard {
    crate::sync::hostile::set_hook(Some(hook));
    AttackGuard(())
}

/// Names the shared words of one ring by address, for a hook.
#[derive(Clone, Debug)]
pub struct WordMap {
    header: usize,
    fields: Vec<(usize, Word)>,
    slots: usize,
    slot_size: usize,
    slot_count: usize,
}

impl WordMap {
    /// The map of `ring`'s header and record headers.
    pub fn of(ring: &Ring) -> WordMap {
        let region = ring.fuzz_region();
        let header = region.header();
        let g = region.geometry();
        WordMap {
            header: std::ptr::from_ref(header).addr(),
            fields: header_words(header)
                .iter()
                .map(|&(what, word)| (word.addr(), what))
                .collect(),
            // The payload of slot 0 starts RECORD_HEADER bytes into the array (an address
            // only; nothing is dereferenced).
            slots: region.payload(0, 0).addr() - RECORD_HEADER,
            slot_size: g.slot_size as usize,
            slot_count: g.slot_count as usize,
        }
    }

    /// What the word at `addr` is, or `None` if it is not one of this ring's shared words.
    pub fn classify(&self, addr: usize) -> Option<Word> {
        if (self.header..self.header + HEADER_SIZE).contains(&addr) {
            return self
                .fields
                .iter()
                .find(|(a, _)| *a == addr)
                .map(|&(_, w)| w);
        }
        let off = addr.checked_sub(self.slots)?;
        let slot = (off / self.slot_size) as u64;
        if slot >= self.slot_count as u64 {
            return None;
        }
        match off % self.slot_size {
            0 => Some(Word::RecordLen { slot }),
            4 => Some(Word::RecordKind { slot }),
            _ => None,
        }
    }
}

/// Fuzzing only (`--cfg fuzzing`, see `crate::__fuzz` in `src/fuzzing.rs`): attaching to a
/// heap ring whose memory was filled from a segment image, and the region behind a ring.
impl Ring {
    /// Attaches to `backing` (a heap ring whose header the caller filled in) exactly as
    /// [`Ring::open`] attaches to a segment (the same `attach`: ready word, one snapshot of the
    /// configuration line, `ConfigSnapshot::validate` against the memory's real size), with an
    /// init timeout of zero so an unready image fails at once with `InitTimeout`.
    pub(crate) fn attach_image(backing: Backing) -> Result<Ring, Error> {
        let region =
            crate::channel::attach(backing, Ident::default(), std::time::Duration::ZERO, false)?;
        Ok(Ring {
            region: std::sync::Arc::new(region),
        })
    }

    /// The ring's memory and validated geometry.
    pub(crate) fn fuzz_region(&self) -> &Region {
        &self.region
    }
}
