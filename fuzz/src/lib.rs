//! Shared pieces of the shmpipe fuzz targets (`fuzz_targets/`): the inputs the fuzzer decodes
//! (with `arbitrary`), a reference model of the ring, and an encoder that writes inputs back
//! as bytes for the committed seed corpora (`examples/seeds.rs`).
//!
//! Only the public API of shmpipe is used here, so this library also builds without
//! `--cfg fuzzing` (the seed generator runs on stable).

use std::collections::VecDeque;

use arbitrary::Arbitrary;
use shmpipe::{Ring, RingConfig};

pub mod encode;

/// Whether `SHMPIPE_FUZZ_TRACE` is set: then the targets print every outcome to stderr, to
/// see what a corpus entry or a crash does (`cargo fuzz run T FILE` with it set).
pub fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SHMPIPE_FUZZ_TRACE").is_some())
}

/// Prints to stderr when [`tracing`] is on.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::tracing() {
            eprintln!($($arg)*);
        }
    };
}

/// Bytes of a record header.
pub const RECORD_HEADER: usize = shmpipe::RECORD_HEADER;

/// Where the free-running counters start.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    /// Near 0 (a negative offset starts just below 2^64).
    Zero,
    /// Near 2^32.
    Two32,
    /// Just below 2^64 (the offset is subtracted from 2^64).
    Two64,
}

/// A small ring shape and the counters' starting value.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Slot size is `8 << (slot_size_log % 5)`: 8 to 128 bytes.
    pub slot_size_log: u8,
    /// Slot count is `2 << (slot_count_log % 4)`: 2 to 16 slots.
    pub slot_count_log: u8,
    /// Maximum message, modulo the largest the shape allows plus one.
    pub max_message: u16,
    /// Counter base.
    pub base: Base,
    /// Offset from the base.
    pub offset: i16,
}

impl Shape {
    /// Bytes per slot.
    pub fn slot_size(&self) -> u32 {
        8 << (self.slot_size_log % 5)
    }

    /// Slots in the ring.
    pub fn slot_count(&self) -> u32 {
        2 << (self.slot_count_log % 4)
    }

    /// The maximum message: at most half the slots less a record header.
    pub fn max_message(&self) -> usize {
        let limit =
            (self.slot_count() / 2).max(1) as usize * self.slot_size() as usize - RECORD_HEADER;
        usize::from(self.max_message) % (limit + 1)
    }

    /// The counters' starting value.
    pub fn initial_index(&self) -> u64 {
        let off = i64::from(self.offset) as u64;
        match self.base {
            Base::Zero => off,
            Base::Two32 => (1u64 << 32).wrapping_add(off),
            Base::Two64 => 0u64.wrapping_sub(u64::from(self.offset.unsigned_abs())),
        }
    }

    /// The configuration of an in-process ring of this shape.
    pub fn config(&self) -> RingConfig {
        RingConfig::new()
            .slot_size(self.slot_size())
            .slot_count(self.slot_count())
            .max_message(self.max_message())
            .initial_index(self.initial_index())
    }
}

/// A message length, resolved against the ring's shape.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Len {
    /// An empty message.
    Zero,
    /// The maximum message.
    Max,
    /// One byte over the maximum (`TooLarge`).
    OverMax,
    /// Exactly fills `k % slot_count + 1` slots (may exceed the maximum).
    Slots(u8),
    /// Any length up to the maximum plus one.
    Any(u16),
}

impl Len {
    /// The length in bytes for a ring of this shape.
    pub fn resolve(self, max: usize, slot_size: usize, slot_count: usize) -> usize {
        match self {
            Len::Zero => 0,
            Len::Max => max,
            Len::OverMax => max + 1,
            Len::Slots(k) => (usize::from(k) % slot_count + 1) * slot_size - RECORD_HEADER,
            Len::Any(v) => usize::from(v) % (max + 2),
        }
    }
}

/// The receive buffer's size.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buf {
    /// Large enough for any message.
    Max,
    /// `v % (max + 1)` bytes: may be too small.
    Short(u16),
}

impl Buf {
    /// The size in bytes for a ring whose maximum message is `max`.
    pub fn resolve(self, max: usize) -> usize {
        match self {
            Buf::Max => max,
            Buf::Short(v) => usize::from(v) % (max + 1),
        }
    }
}

/// What happens to a reserved write grant.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// `commit()`: the whole reserved length.
    Commit,
    /// `commit_len(v % (len + 1))`: a shorter message.
    Short(u16),
    /// Dropped: nothing is sent.
    Drop,
}

/// The content of the `seq`-th message of `len` bytes: its sequence number first, so a
/// message delivered out of order or twice never compares equal.
pub fn message(seq: u64, len: usize) -> Vec<u8> {
    let tag = seq.to_le_bytes();
    (0..len)
        .map(|i| {
            if i < 8 {
                tag[i]
            } else {
                (seq as u8).wrapping_mul(31).wrapping_add(i as u8) ^ 0x5a
            }
        })
        .collect()
}

/// Input of the `ops` target: a ring shape and operations on it, checked against [`Model`].
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct OpsInput {
    /// The ring.
    pub shape: Shape,
    /// What to do, in order.
    pub ops: Vec<Op>,
}

/// One operation of the `ops` target.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `try_send`.
    Send(Len),
    /// `send_timeout` with a zero timeout.
    SendTimeout(Len),
    /// `reserve`, then commit, commit a shorter length, or drop.
    Reserve(Len, Finish),
    /// `try_recv` into a buffer of this size.
    Recv(Buf),
    /// `try_recv_vec`.
    RecvVec,
    /// `try_lend`, then drop the guard.
    Read,
    /// `recv_timeout` with a zero timeout.
    RecvTimeout,
    /// `lend_timeout` with a zero timeout.
    ReadTimeout,
    /// A send batch, with consumer operations while it is open.
    SendBatch(Vec<BatchSendOp>),
    /// A receive batch, with producer operations while it is open.
    RecvBatch(Vec<BatchRecvOp>),
    /// Drop the producer (publishes, closes).
    DropProducer,
    /// Claim the producer role (fails while one is held).
    ClaimProducer,
    /// Drop the consumer (releases, closes).
    DropConsumer,
    /// Claim the consumer role (fails while one is held).
    ClaimConsumer,
}

/// An operation while a send batch is open.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum BatchSendOp {
    /// `SendBatch::try_send`.
    Send(Len),
    /// `SendBatch::reserve`.
    Reserve(Len, Finish),
    /// `SendBatch::publish`.
    Publish,
    /// The consumer's `try_recv` meanwhile.
    Recv(Buf),
}

/// An operation while a receive batch is open.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum BatchRecvOp {
    /// `RecvBatch::try_recv`.
    Recv(Buf),
    /// `RecvBatch::try_lend`.
    Read,
    /// `RecvBatch::release`.
    Release,
    /// The producer's `try_send` meanwhile.
    Send(Len),
}

/// Input of the `image` target: which roles to take, what to do, and the segment image.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct ImageInput<'a> {
    /// Roles to claim.
    pub roles: Roles,
    /// Make the configuration line valid first (see the target): the fuzzer then explores
    /// counters and slots without having to find a consistent header. Without it, the header's
    /// validation itself is fuzzed.
    pub repair: bool,
    /// Operations, each repeated `1 + repeat % 8` times.
    pub ops: Vec<ImageOp>,
    /// The whole segment: header, then slots.
    pub image: &'a [u8],
}

/// Which roles the `image` target claims on the image.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Roles {
    /// The consumer only: it reads what the image holds.
    Consumer,
    /// The producer only: it writes into the image's free slots.
    Producer,
    /// Both.
    Both,
}

/// One operation of the `image` target.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageOp {
    /// What.
    pub what: ImageAction,
    /// Extra repetitions.
    pub repeat: u8,
}

/// What an [`ImageOp`] does.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageAction {
    /// `try_recv`.
    Recv(Buf),
    /// `try_lend`.
    Read,
    /// `recv_timeout` with a zero timeout.
    RecvTimeout,
    /// `try_send`.
    Send(Len),
    /// `reserve`.
    Reserve(Len, Finish),
    /// A receive batch of up to `n % 8 + 1` messages.
    RecvBatch(u8),
    /// A send batch of `n % 8 + 1` messages.
    SendBatch(u8),
}

/// Input of the `hostile` target.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct HostileInput {
    /// The ring.
    pub shape: Shape,
    /// Which side is under attack.
    pub mode: Mode,
    /// What the hostile peer does at each read of an index (`tail` when the consumer is under
    /// attack, `head` when the producer is), in order; once used up, it keeps every value.
    pub index: Vec<Attack>,
    /// The same for each read of a record header word (`len`, `kind`).
    pub records: Vec<Attack>,
    /// The same for each read of any other shared word (owner, claims, closed and waiting
    /// flags, futex words).
    pub other: Vec<Attack>,
    /// Operations of either side.
    pub steps: Vec<Step>,
}

/// The side under attack.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The consumer's reads of the shared words are attacked; the producer is honest.
    Consumer,
    /// The producer's reads are attacked; the consumer is honest.
    Producer,
}

/// What the hostile peer does to a word just before the side under test reads it.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// Leave it.
    Keep,
    /// Any value.
    Set(u64),
    /// Add a small delta.
    Add(i8),
    /// Flip bit `n % width`.
    Flip(u8),
    /// A value near a boundary of what the word may hold (chosen by the word's meaning).
    Near(u8),
}

/// One operation of the `hostile` target, by either side.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Producer: `try_send`.
    Send(Len),
    /// Producer: `send_timeout` with a zero timeout.
    SendTimeout(Len),
    /// Producer: `reserve`.
    Reserve(Len, Finish),
    /// Producer: a send batch.
    SendBatch(Vec<Len>),
    /// Consumer: `try_recv`.
    Recv(Buf),
    /// Consumer: `try_lend`.
    Read,
    /// Consumer: `recv_timeout` with a zero timeout.
    RecvTimeout,
    /// Consumer: a receive batch of up to `n % 8 + 1` messages.
    RecvBatch(u8),
}

impl Step {
    /// Whether the producer does it.
    pub fn is_producer(&self) -> bool {
        matches!(
            self,
            Step::Send(_) | Step::SendTimeout(_) | Step::Reserve(..) | Step::SendBatch(_)
        )
    }
}

/// One message the model's producer wrote.
#[derive(Clone, Debug)]
pub struct Msg {
    /// Its bytes.
    pub data: Vec<u8>,
    /// The counter its record starts at (after any padding in front of it).
    pub at: u64,
    /// The counter just past it.
    pub next: u64,
    /// Whether the producer has published it.
    pub published: bool,
}

/// Why the model says a send fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendFail {
    /// No room now.
    Full,
    /// Longer than the maximum message.
    TooLarge,
    /// The consumer closed the ring.
    Disconnected,
}

/// Why the model says a receive finds nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvFail {
    /// Nothing published, the producer is there.
    Empty,
    /// Nothing published and the producer left.
    Disconnected,
}

/// A reference model of one ring: both sides' private counters, the shared ones, and the
/// messages in flight, computed from the protocol's rules (`docs/LAYOUT.md`) alone.
#[derive(Clone, Debug)]
pub struct Model {
    /// Slots.
    pub cap: u64,
    /// Bytes per slot.
    pub slot_size: u64,
    /// Maximum message.
    pub max: usize,
    /// The producer's write position.
    pub tail: u64,
    /// The tail stored in the ring.
    pub published: u64,
    /// The consumer's read position (past a padding record it has looked behind).
    pub chead: u64,
    /// The head stored in the ring.
    pub released: u64,
    /// Messages written and not yet consumed, oldest first.
    pub queue: VecDeque<Msg>,
    /// A producer holds its role.
    pub producer: bool,
    /// A consumer holds its role.
    pub consumer: bool,
    /// `consumer_closed` is clear: a consumer is there or none ever left.
    pub consumer_open: bool,
    seq: u64,
}

impl Model {
    /// The message length `l` stands for in this ring's shape.
    pub fn len(&self, l: Len) -> usize {
        l.resolve(self.max, self.slot_size as usize, self.cap as usize)
    }

    /// The model of a fresh ring with both roles claimed.
    pub fn new(ring: &Ring, initial: u64) -> Model {
        Model {
            cap: ring.slot_count() as u64,
            slot_size: ring.slot_size() as u64,
            max: ring.max_message(),
            tail: initial,
            published: initial,
            chead: initial,
            released: initial,
            queue: VecDeque::new(),
            producer: true,
            consumer: true,
            consumer_open: true,
            seq: 0,
        }
    }

    /// A fresh message of `len` bytes.
    pub fn new_message(&mut self, len: usize) -> Vec<u8> {
        self.seq += 1;
        message(self.seq, len)
    }

    /// Slots a record of `len` bytes takes.
    pub fn slots(&self, len: usize) -> u64 {
        (len as u64 + RECORD_HEADER as u64).div_ceil(self.slot_size)
    }

    /// Free slots by the stored head.
    pub fn free(&self) -> u64 {
        self.cap - self.tail.wrapping_sub(self.released)
    }

    /// Where the producer's claim of `len` bytes puts the record, or why it fails.
    pub fn claim(&self, len: usize) -> Result<u64, SendFail> {
        if !self.consumer_open {
            return Err(SendFail::Disconnected);
        }
        if len > self.max {
            return Err(SendFail::TooLarge);
        }
        let slots = self.slots(len);
        let to_end = self.cap - (self.tail & (self.cap - 1));
        let pad = if slots > to_end { to_end } else { 0 };
        if self.free() < pad + slots {
            return Err(SendFail::Full);
        }
        Ok(self.tail.wrapping_add(pad))
    }

    /// The producer finished the record claimed at `at` with `data`.
    pub fn finish(&mut self, at: u64, data: Vec<u8>) {
        let next = at.wrapping_add(self.slots(data.len()));
        self.tail = next;
        self.queue.push_back(Msg {
            data,
            at,
            next,
            published: false,
        });
    }

    /// The producer stored its tail.
    pub fn publish(&mut self) {
        self.published = self.tail;
        for m in self.queue.iter_mut().rev() {
            if m.published {
                break;
            }
            m.published = true;
        }
    }

    /// The message the consumer finds next (its read position moves past any padding in front
    /// of it, even if it is not consumed), or why there is none.
    pub fn next_message(&mut self) -> Result<Vec<u8>, RecvFail> {
        match self.queue.front() {
            Some(m) if m.published => {
                self.chead = m.at;
                Ok(m.data.clone())
            }
            _ if self.producer => Err(RecvFail::Empty),
            _ => Err(RecvFail::Disconnected),
        }
    }

    /// The consumer consumed the message `next_message` returned.
    pub fn consume(&mut self) {
        let m = self.queue.pop_front().expect("a message was found");
        self.chead = m.next;
    }

    /// The consumer stored its head.
    pub fn release(&mut self) {
        self.released = self.chead;
    }

    /// The producer dropped: it published what it had and left.
    pub fn drop_producer(&mut self) {
        self.publish();
        self.producer = false;
    }

    /// A new producer claimed the role: it continues from the stored tail.
    pub fn claim_producer(&mut self) {
        self.producer = true;
        self.tail = self.published;
    }

    /// The consumer dropped: it released what it had read and closed the ring.
    pub fn drop_consumer(&mut self) {
        self.release();
        self.consumer = false;
        self.consumer_open = false;
    }

    /// A new consumer claimed the role: it continues from the stored head.
    pub fn claim_consumer(&mut self) {
        self.consumer = true;
        self.consumer_open = true;
        self.chead = self.released;
    }
}
