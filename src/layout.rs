//! The byte layout of a ring in shared memory: header lines, constants, the record format, and
//! the validation of a header read from a segment.
//!
//! `docs/LAYOUT.md` is the specification; this module is its executable form and every offset
//! in it is asserted at compile time. The layout is the same for 32-bit and 64-bit processes:
//! only fixed-width integers, `AtomicU64` (8-aligned on every target), explicit alignment.
//! This module decides what the bytes mean; it does not run the ring protocol (see `ring`).

use std::mem::{align_of, offset_of, size_of};
use std::sync::atomic::Ordering;

use crate::sync::{AtomicU32, AtomicU64, Futex};

/// "SHMPIPE1" read as a little-endian u64: the first 8 bytes of every ring.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMPIPE1");
/// The layout version this build reads and writes.
pub const LAYOUT_VERSION: u32 = 6;
/// Value of the ready word once the creator has written the whole header ("RDY!").
pub const READY: u32 = u32::from_le_bytes(*b"RDY!");
/// Bytes of the header: configuration, producer and consumer lines.
pub const HEADER_SIZE: usize = 3 * LINE;
/// Size and alignment of one header line.
pub const LINE: usize = 128;
/// Bytes of a record header at the start of a record's first slot.
pub const RECORD_HEADER: usize = 8;
/// Record kind: a message whose payload follows the record header.
pub const KIND_MESSAGE: u32 = 1;
/// Record kind: padding that fills the array to its end; the next record starts at slot 0.
pub const KIND_PADDING: u32 = 2;
/// Smallest slot: one record header.
pub const MIN_SLOT_SIZE: u32 = RECORD_HEADER as u32;
/// Largest slot accepted (1 MiB).
pub const MAX_SLOT_SIZE: u32 = 1 << 20;
/// Largest slot count accepted (2^30).
pub const MAX_SLOT_COUNT: u32 = 1 << 30;
/// Largest slot array accepted (2 GiB), so every in-array byte distance fits a u32 length.
pub const MAX_ARRAY_BYTES: u64 = 1 << 31;
/// Flag: the ring is persistent: it is not marked for removal when both sides attach.
pub const FLAG_PERSISTENT: u32 = 1;
/// Flags this version defines. A header with other bits set is refused.
pub const KNOWN_FLAGS: u32 = FLAG_PERSISTENT;
/// Largest alignment a typed ring's message type may ask for: payloads start 8 bytes into a
/// slot of at least 8 bytes, and the slot array starts 8-aligned (a page-aligned mapping plus
/// the 384-byte header, or a line-aligned heap buffer), so every payload is 8-aligned.
pub const MAX_TYPE_ALIGN: u32 = 8;

/// What a typed ring records about its message type (the `type_*` fields of the configuration
/// line): every message is one value of exactly `size` bytes.
///
/// Built by [`MessageType::of`] or [`MessageType::tagged`] for a Rust type, read back with
/// [`Ring::message_type`](crate::Ring::message_type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// `size_of::<T>()`: every message is exactly this long (and it is the ring's maximum).
    pub size: u32,
    /// `align_of::<T>()`: a power of two, at most 8.
    pub align: u32,
    /// Tells types of the same size and alignment apart: by default a hash of the type's name,
    /// size and alignment ([`type_fingerprint`](crate::type_fingerprint)); or a value chosen by
    /// the user ([`MessageType::tagged`]).
    pub fingerprint: u64,
}

impl MessageType {
    /// Checks the type against a ring whose largest message is `max_message`. `Err` says what
    /// is wrong.
    pub fn check(&self, max_message: u32) -> Result<(), String> {
        if self.size == 0 {
            return Err(
                "a message type of 0 bytes (a typed ring needs a size of at least 1; \
                        size 0 means an untyped ring)"
                    .into(),
            );
        }
        if !self.align.is_power_of_two() || self.align > MAX_TYPE_ALIGN {
            return Err(format!(
                "message type alignment {} is not a power of two of at most {MAX_TYPE_ALIGN} \
                 (payloads are only {MAX_TYPE_ALIGN}-aligned)",
                self.align
            ));
        }
        if self.size % self.align != 0 {
            return Err(format!(
                "message type size {} is not a multiple of its alignment {}",
                self.size, self.align
            ));
        }
        if self.size != max_message {
            return Err(format!(
                "max message {max_message} differs from the message type's size {} (a typed \
                 ring's max message is the size of its type)",
                self.size
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-byte values aligned to {} (fingerprint {:#018x})",
            self.size, self.align, self.fingerprint
        )
    }
}

/// Line 0: written once by the creator before `ready`, read-only afterwards.
#[repr(C, align(128))]
#[derive(Default)]
pub struct ConfigLine {
    /// [`MAGIC`]; written first, so a half-initialised ring is recognisable as ours.
    pub magic: AtomicU64,
    /// [`LAYOUT_VERSION`].
    pub version: AtomicU32,
    /// [`HEADER_SIZE`]: where the slot array starts.
    pub header_size: AtomicU32,
    /// Bytes per slot, a power of two ≥ 8.
    pub slot_size: AtomicU32,
    /// Slots in the array, a power of two.
    pub slot_count: AtomicU32,
    /// Largest message payload in bytes.
    pub max_message: AtomicU32,
    /// Feature flags; must be a subset of [`KNOWN_FLAGS`].
    pub flags: AtomicU32,
    /// Random id of this ring instance, to tell a recycled key from the ring one attached to.
    pub instance_id: AtomicU64,
    /// Total bytes the ring uses: `header_size + slot_size * slot_count`.
    pub ring_size: AtomicU64,
    /// The value head and tail started from (so `tail - initial_index` is slots ever sent).
    pub initial_index: AtomicU64,
    /// Pid of the creator as it saw itself (informational only, never trusted).
    pub creator_pid: AtomicU32,
    /// [`READY`] once the header is complete (Release by the creator, Acquire by attachers).
    pub ready: AtomicU32,
    /// The key the ring was created at (0 for `IPC_PRIVATE`), as a 32-bit pattern. The kernel
    /// forgets a segment's key once it is marked for removal; this lets tools still find the
    /// ring by the key its users know. Informational: never trusted for anything else.
    pub key: AtomicU32,
    /// A typed ring's message size ([`MessageType::size`]); 0 for an untyped (byte) ring.
    pub type_size: AtomicU32,
    /// A typed ring's [`MessageType::fingerprint`]; 0 for an untyped ring.
    pub type_fingerprint: AtomicU64,
    /// A typed ring's [`MessageType::align`]; 0 for an untyped ring.
    pub type_align: AtomicU32,
}

/// Line 1: the producer's. Only the producer writes it, except the two words the consumer
/// uses to talk to the producer rarely (`consumer_waiting`, `consumer_closed`), which live here
/// so that the producer's per-send checks of them hit its own cache line.
#[repr(C, align(128))]
#[derive(Default)]
pub struct ProducerLine {
    /// Slot counter one past the last published record (Release by the producer).
    pub tail: AtomicU64,
    /// Messages published so far (Relaxed, informational).
    pub sent: AtomicU64,
    /// Identity (pid | start time << 32) of the process holding the producer role; 0 if none.
    pub owner: AtomicU64,
    /// How many times the producer role was claimed (0: no producer ever attached).
    pub claims: AtomicU32,
    /// Futex word the consumer sleeps on; the producer increments it to wake the consumer.
    pub data_event: Futex,
    /// 1 while the consumer is (about to be) asleep on `data_event`. Written by the consumer
    /// (set) and by the producer (cleared when it wakes the consumer).
    pub consumer_waiting: AtomicU32,
    /// 1 once the consumer closed (dropped) cleanly; 0 again when a consumer claims the role.
    /// Written by the consumer.
    pub consumer_closed: AtomicU32,
    /// Pid namespace (inode of `/proc/self/ns/pid`) of the last claimant of the producer role,
    /// written before and after its claim of `owner`; 0 if unknown. A holder whose namespace
    /// differs from the reader's has unknown liveness (see `owner::judge`).
    pub owner_pidns: AtomicU64,
}

/// Line 2: the consumer's. Only the consumer writes it, except `producer_waiting`.
#[repr(C, align(128))]
#[derive(Default)]
pub struct ConsumerLine {
    /// Slot counter one past the last released record (Release by the consumer).
    pub head: AtomicU64,
    /// Messages released so far (Relaxed, informational).
    pub received: AtomicU64,
    /// Identity of the process holding the consumer role; 0 if none.
    pub owner: AtomicU64,
    /// How many times the consumer role was claimed (0: no consumer ever attached).
    pub claims: AtomicU32,
    /// Futex word the producer sleeps on; the consumer increments it to wake the producer.
    pub space_event: Futex,
    /// 1 while the producer is (about to be) asleep on `space_event`. Written by the producer
    /// (set) and by the consumer (cleared when it wakes the producer).
    pub producer_waiting: AtomicU32,
    /// Pid namespace of the last claimant of the consumer role (as in the producer's line).
    pub owner_pidns: AtomicU64,
}

/// The whole header at offset 0 of the segment.
#[repr(C)]
#[derive(Default)]
pub struct Header {
    /// Immutable configuration.
    pub config: ConfigLine,
    /// The producer's line.
    pub producer: ProducerLine,
    /// The consumer's line.
    pub consumer: ConsumerLine,
}

// The layout is a contract with other processes (and other languages): pin every byte. (Under
// loom the atomics are model handles of other sizes, and no segment is ever mapped.)
const _: () = if !crate::sync::LOOM {
    assert!(size_of::<ConfigLine>() == LINE && align_of::<ConfigLine>() == LINE);
    assert!(size_of::<ProducerLine>() == LINE && align_of::<ProducerLine>() == LINE);
    assert!(size_of::<ConsumerLine>() == LINE && align_of::<ConsumerLine>() == LINE);
    assert!(size_of::<Header>() == HEADER_SIZE);
    assert!(offset_of!(Header, config) == 0);
    assert!(offset_of!(Header, producer) == 128);
    assert!(offset_of!(Header, consumer) == 256);
    assert!(offset_of!(ConfigLine, magic) == 0);
    assert!(offset_of!(ConfigLine, version) == 8);
    assert!(offset_of!(ConfigLine, header_size) == 12);
    assert!(offset_of!(ConfigLine, slot_size) == 16);
    assert!(offset_of!(ConfigLine, slot_count) == 20);
    assert!(offset_of!(ConfigLine, max_message) == 24);
    assert!(offset_of!(ConfigLine, flags) == 28);
    assert!(offset_of!(ConfigLine, instance_id) == 32);
    assert!(offset_of!(ConfigLine, ring_size) == 40);
    assert!(offset_of!(ConfigLine, initial_index) == 48);
    assert!(offset_of!(ConfigLine, creator_pid) == 56);
    assert!(offset_of!(ConfigLine, ready) == 60);
    assert!(offset_of!(ConfigLine, key) == 64);
    assert!(offset_of!(ConfigLine, type_size) == 68);
    assert!(offset_of!(ConfigLine, type_fingerprint) == 72);
    assert!(offset_of!(ConfigLine, type_align) == 80);
    assert!(offset_of!(ProducerLine, tail) == 0);
    assert!(offset_of!(ProducerLine, sent) == 8);
    assert!(offset_of!(ProducerLine, owner) == 16);
    assert!(offset_of!(ProducerLine, claims) == 24);
    assert!(offset_of!(ProducerLine, data_event) == 28);
    assert!(offset_of!(ProducerLine, consumer_waiting) == 32);
    assert!(offset_of!(ProducerLine, consumer_closed) == 36);
    assert!(offset_of!(ConsumerLine, head) == 0);
    assert!(offset_of!(ConsumerLine, received) == 8);
    assert!(offset_of!(ConsumerLine, owner) == 16);
    assert!(offset_of!(ConsumerLine, claims) == 24);
    assert!(offset_of!(ConsumerLine, space_event) == 28);
    assert!(offset_of!(ConsumerLine, producer_waiting) == 32);
    assert!(offset_of!(ProducerLine, owner_pidns) == 40);
    assert!(offset_of!(ConsumerLine, owner_pidns) == 40);
};

/// The ring's shape, validated once and then kept in private memory: the ring never re-reads
/// the configuration line, so a peer rewriting it later changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes per slot (power of two).
    pub slot_size: u32,
    /// log2(slot_size).
    pub slot_shift: u32,
    /// Slots in the array (power of two).
    pub slot_count: u32,
    /// Largest payload.
    pub max_message: u32,
    /// The message type of a typed ring (then `max_message` is its size); `None` for bytes.
    pub message_type: Option<MessageType>,
}

impl Geometry {
    /// Checks a shape and computes the derived fields. `Err` says what is wrong.
    pub fn new(slot_size: u32, slot_count: u32, max_message: u32) -> Result<Geometry, String> {
        if !slot_size.is_power_of_two() || !(MIN_SLOT_SIZE..=MAX_SLOT_SIZE).contains(&slot_size) {
            return Err(format!(
                "slot size {slot_size} is not a power of two in {MIN_SLOT_SIZE}..={MAX_SLOT_SIZE}"
            ));
        }
        if !slot_count.is_power_of_two() || slot_count > MAX_SLOT_COUNT {
            return Err(format!(
                "slot count {slot_count} is not a power of two in 1..={MAX_SLOT_COUNT}"
            ));
        }
        if u64::from(slot_count) * u64::from(slot_size) > MAX_ARRAY_BYTES {
            return Err(format!(
                "{slot_count} slots of {slot_size} bytes exceed the {MAX_ARRAY_BYTES}-byte maximum"
            ));
        }
        let g = Geometry {
            slot_size,
            slot_shift: slot_size.trailing_zeros(),
            slot_count,
            max_message,
            message_type: None,
        };
        let limit = g.max_message_limit();
        if u64::from(max_message) > limit {
            return Err(format!(
                "max message {max_message} exceeds {limit}, the most that always fits \
                 ({slot_count} slots of {slot_size} bytes; a message may use at most half the slots)"
            ));
        }
        Ok(g)
    }

    /// This geometry for a typed ring of `message_type` (`None`: an untyped ring), checked
    /// against the maximum message. `Err` says what is wrong.
    pub fn with_message_type(self, message_type: Option<MessageType>) -> Result<Geometry, String> {
        if let Some(t) = message_type {
            t.check(self.max_message)?;
        }
        Ok(Geometry {
            message_type,
            ..self
        })
    }

    /// The shape in words, for error messages: slots, slot size, max message, message type.
    pub fn describe(&self) -> String {
        let typed = match self.message_type {
            Some(t) => format!(", {t}"),
            None => String::new(),
        };
        format!(
            "{} slots of {} bytes (max message {}{typed})",
            self.slot_count, self.slot_size, self.max_message
        )
    }

    /// The largest maximum message this shape supports. A record may take at most half the
    /// slots (all of them in a one-slot ring): then an empty ring always has room for the
    /// largest record plus the padding in front of it, wherever the tail stands.
    pub fn max_message_limit(&self) -> u64 {
        let slots = u64::from((self.slot_count / 2).max(1));
        (slots << self.slot_shift) - RECORD_HEADER as u64
    }

    /// Slots in the array, as a 64-bit counter distance.
    #[inline]
    pub fn capacity(&self) -> u64 {
        u64::from(self.slot_count)
    }

    /// Mask from a free-running counter to a slot index.
    #[inline]
    pub fn mask(&self) -> u64 {
        u64::from(self.slot_count) - 1
    }

    /// Slots a record with `len` payload bytes occupies (header included).
    #[inline]
    pub fn record_slots(&self, len: u32) -> u64 {
        (u64::from(len) + RECORD_HEADER as u64 + u64::from(self.slot_size) - 1) >> self.slot_shift
    }

    /// Bytes of the slot array.
    pub fn array_bytes(&self) -> u64 {
        u64::from(self.slot_count) << self.slot_shift
    }

    /// Bytes of the whole ring: header and slot array.
    pub fn ring_size(&self) -> u64 {
        HEADER_SIZE as u64 + self.array_bytes()
    }

    /// The length field a padding record at slot index `pos` (`pos < slot_count`) must carry:
    /// the bytes from the end of its header to the end of the array. Fits a u32 because the
    /// array is at most [`MAX_ARRAY_BYTES`].
    #[inline]
    pub fn padding_len(&self, pos: u64) -> u32 {
        (((self.capacity() - pos) << self.slot_shift) - RECORD_HEADER as u64) as u32
    }
}

/// A copy of the configuration line taken with one load per field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigSnapshot {
    /// `magic`.
    pub magic: u64,
    /// `version`.
    pub version: u32,
    /// `header_size`.
    pub header_size: u32,
    /// `slot_size`.
    pub slot_size: u32,
    /// `slot_count`.
    pub slot_count: u32,
    /// `max_message`.
    pub max_message: u32,
    /// `flags`.
    pub flags: u32,
    /// `instance_id`.
    pub instance_id: u64,
    /// `ring_size`.
    pub ring_size: u64,
    /// `initial_index`.
    pub initial_index: u64,
    /// `creator_pid`.
    pub creator_pid: u32,
    /// `key`.
    pub key: u32,
    /// `type_size`.
    pub type_size: u32,
    /// `type_fingerprint`.
    pub type_fingerprint: u64,
    /// `type_align`.
    pub type_align: u32,
}

impl ConfigLine {
    /// Reads every field once. Call only after `ready` was loaded with Acquire (R1 in
    /// DESIGN.md), so the creator's writes are visible; Relaxed suffices for the fields.
    pub fn snapshot(&self) -> ConfigSnapshot {
        ConfigSnapshot {
            magic: self.magic.load(Ordering::Relaxed),
            version: self.version.load(Ordering::Relaxed),
            header_size: self.header_size.load(Ordering::Relaxed),
            slot_size: self.slot_size.load(Ordering::Relaxed),
            slot_count: self.slot_count.load(Ordering::Relaxed),
            max_message: self.max_message.load(Ordering::Relaxed),
            flags: self.flags.load(Ordering::Relaxed),
            instance_id: self.instance_id.load(Ordering::Relaxed),
            ring_size: self.ring_size.load(Ordering::Relaxed),
            initial_index: self.initial_index.load(Ordering::Relaxed),
            creator_pid: self.creator_pid.load(Ordering::Relaxed),
            key: self.key.load(Ordering::Relaxed),
            type_size: self.type_size.load(Ordering::Relaxed),
            type_fingerprint: self.type_fingerprint.load(Ordering::Relaxed),
            type_align: self.type_align.load(Ordering::Relaxed),
        }
    }
}

/// Why a configuration line is not acceptable; the caller adds the ring's ident.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderProblem {
    /// Not our magic.
    Magic(u64),
    /// Another layout version.
    Version(u32),
    /// The kernel's segment size is below what the header claims.
    TooSmall {
        /// Claimed ring size.
        claimed: u64,
    },
    /// Any other field out of range.
    Field(String),
}

impl ConfigSnapshot {
    /// Validates the snapshot against the real segment size (from `IPC_STAT`, never from the
    /// segment) and returns the geometry to use from now on.
    pub fn validate(&self, actual_size: u64) -> Result<Geometry, HeaderProblem> {
        if self.magic != MAGIC {
            return Err(HeaderProblem::Magic(self.magic));
        }
        if self.version != LAYOUT_VERSION {
            return Err(HeaderProblem::Version(self.version));
        }
        if self.header_size as usize != HEADER_SIZE {
            return Err(HeaderProblem::Field(format!(
                "header size {} (expected {HEADER_SIZE})",
                self.header_size
            )));
        }
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(HeaderProblem::Field(format!(
                "unknown flags {:#x}",
                self.flags & !KNOWN_FLAGS
            )));
        }
        let g = Geometry::new(self.slot_size, self.slot_count, self.max_message)
            .map_err(HeaderProblem::Field)?;
        if self.ring_size != g.ring_size() {
            return Err(HeaderProblem::Field(format!(
                "ring size {} does not match {} slots of {} bytes",
                self.ring_size, self.slot_count, self.slot_size
            )));
        }
        if self.ring_size > actual_size {
            return Err(HeaderProblem::TooSmall {
                claimed: self.ring_size,
            });
        }
        g.with_message_type(self.message_type()?)
            .map_err(HeaderProblem::Field)
    }

    /// The recorded message type: `None` for an untyped ring (all three `type_*` fields 0).
    /// A zero size with another field set is neither, and refused.
    pub fn message_type(&self) -> Result<Option<MessageType>, HeaderProblem> {
        if self.type_size == 0 {
            if self.type_align != 0 || self.type_fingerprint != 0 {
                return Err(HeaderProblem::Field(format!(
                    "untyped ring (type size 0) with type alignment {} and fingerprint {:#x}",
                    self.type_align, self.type_fingerprint
                )));
            }
            return Ok(None);
        }
        Ok(Some(MessageType {
            size: self.type_size,
            align: self.type_align,
            fingerprint: self.type_fingerprint,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> ConfigSnapshot {
        let g = Geometry::new(64, 16, 100).unwrap();
        ConfigSnapshot {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            header_size: HEADER_SIZE as u32,
            slot_size: 64,
            slot_count: 16,
            max_message: 100,
            flags: 0,
            instance_id: 7,
            ring_size: g.ring_size(),
            initial_index: 0,
            creator_pid: 1,
            key: 0x2020,
            type_size: 0,
            type_fingerprint: 0,
            type_align: 0,
        }
    }

    /// [`good`] as a typed ring of 100-byte values aligned to 4.
    fn good_typed() -> ConfigSnapshot {
        ConfigSnapshot {
            type_size: 100,
            type_fingerprint: 0x1234_5678_9abc_def0,
            type_align: 4,
            ..good()
        }
    }

    #[test]
    fn magic_spells_the_name() {
        assert_eq!(&MAGIC.to_le_bytes(), b"SHMPIPE1");
    }

    #[test]
    fn record_slots_rounds_up_with_header() {
        let g = Geometry::new(64, 16, 100).unwrap();
        assert_eq!(g.record_slots(0), 1);
        assert_eq!(g.record_slots(56), 1);
        assert_eq!(g.record_slots(57), 2);
        assert_eq!(g.record_slots(64), 2);
        assert_eq!(g.padding_len(15), 56);
        assert_eq!(g.max_message_limit(), 8 * 64 - 8);
    }

    #[test]
    fn one_slot_ring_may_fill_its_slot() {
        let g = Geometry::new(64, 1, 56).unwrap();
        assert_eq!(g.max_message_limit(), 56);
        assert!(Geometry::new(64, 1, 57).is_err());
    }

    #[test]
    fn geometry_rejects_bad_shapes() {
        assert!(Geometry::new(48, 16, 8).is_err());
        assert!(Geometry::new(4, 16, 0).is_err());
        assert!(Geometry::new(64, 12, 8).is_err());
        assert!(Geometry::new(64, 0, 8).is_err());
        assert!(Geometry::new(64, 16, 8 * 64 - 7).is_err());
    }

    #[test]
    fn validate_accepts_good_and_names_each_problem() {
        let s = good();
        assert!(s.validate(s.ring_size).is_ok());
        assert_eq!(
            ConfigSnapshot { magic: 1, ..s }.validate(1 << 20),
            Err(HeaderProblem::Magic(1))
        );
        for version in [LAYOUT_VERSION - 1, LAYOUT_VERSION + 1] {
            assert_eq!(
                ConfigSnapshot { version, ..s }.validate(1 << 20),
                Err(HeaderProblem::Version(version))
            );
        }
        assert_eq!(
            s.validate(s.ring_size - 1),
            Err(HeaderProblem::TooSmall {
                claimed: s.ring_size
            })
        );
        for bad in [
            ConfigSnapshot {
                header_size: 256,
                ..s
            },
            ConfigSnapshot { flags: 6, ..s },
            ConfigSnapshot { slot_size: 60, ..s },
            ConfigSnapshot { slot_count: 0, ..s },
            ConfigSnapshot {
                max_message: u32::MAX,
                ..s
            },
            ConfigSnapshot { ring_size: 1, ..s },
            // Untyped rings carry no type alignment or fingerprint.
            ConfigSnapshot { type_align: 8, ..s },
            ConfigSnapshot {
                type_fingerprint: 1,
                ..s
            },
        ] {
            assert!(
                matches!(bad.validate(1 << 30), Err(HeaderProblem::Field(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn typed_header_is_validated() {
        let t = good_typed();
        let g = t.validate(t.ring_size).unwrap();
        assert_eq!(
            g.message_type,
            Some(MessageType {
                size: 100,
                align: 4,
                fingerprint: 0x1234_5678_9abc_def0
            })
        );
        assert_eq!(good().validate(1 << 20).unwrap().message_type, None);
        // Any fingerprint is fine, 0 included: it only has to match the peer's.
        assert!(
            ConfigSnapshot {
                type_fingerprint: 0,
                ..t
            }
            .validate(1 << 20)
            .is_ok()
        );
        for bad in [
            // The size must be the maximum message.
            ConfigSnapshot { type_size: 99, ..t },
            ConfigSnapshot {
                type_size: 104,
                ..t
            },
            // Alignment: a power of two, at most 8, dividing the size.
            ConfigSnapshot { type_align: 0, ..t },
            ConfigSnapshot { type_align: 3, ..t },
            ConfigSnapshot {
                type_align: 16,
                ..t
            },
            ConfigSnapshot { type_align: 8, ..t },
        ] {
            assert!(
                matches!(bad.validate(1 << 20), Err(HeaderProblem::Field(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn geometry_with_message_type_checks_the_type() {
        let g = Geometry::new(64, 16, 24).unwrap();
        let t = |size, align| MessageType {
            size,
            align,
            fingerprint: 7,
        };
        assert_eq!(
            g.with_message_type(Some(t(24, 8))).unwrap().message_type,
            Some(t(24, 8))
        );
        assert!(g.with_message_type(None).unwrap().message_type.is_none());
        assert!(g.with_message_type(Some(t(0, 1))).is_err());
        assert!(g.with_message_type(Some(t(24, 16))).is_err());
        assert!(g.with_message_type(Some(t(16, 8))).is_err());
        assert!(g.describe().contains("max message 24"));
        let typed = g.with_message_type(Some(t(24, 8))).unwrap();
        assert!(typed.describe().contains("24-byte values aligned to 8"));
    }
}
