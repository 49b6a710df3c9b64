//! # shmpipe
//!
//! A lock-free single-producer/single-consumer ring buffer between two processes, inside one
//! System V shared-memory segment. Messages (byte slices from 0 bytes up to a maximum fixed at
//! creation) go from the [`Producer`] to the [`Consumer`] with no system call on the hot path:
//! the producer publishes with one Release store, the consumer reads with Acquire, and each side
//! re-reads the other's index only when its cached copy says full or empty.
//!
//! The other process is not trusted. Every index and record header read from the segment is
//! read once, checked against private state, and a violation becomes a sticky
//! [`Corrupted`] error: never a panic, an out-of-bounds access or a hang. No safe API hands out
//! a reference into memory the peer can write: messages lent in place are views
//! ([`RingSlice`], [`RingSliceMut`]) that copy bytes out and in, and the `&[u8]` of zero-copy
//! reads is an `unsafe` opt-in for a peer trusted to follow the protocol.
//!
//! ```
//! use shmpipe::{Key, Ring, RingConfig, Shmid};
//!
//! // Process A (here: the same process, for the example) creates the ring by key...
//! let ring = Ring::create(Key::Private, &RingConfig::new().slot_count(1024))?;
//! let mut tx = ring.producer()?;
//! // ...process B would call Ring::open(key, &cfg) or Ring::open(Shmid(shmid), &cfg), then
//! // consumer().
//! let mut rx = Ring::open(Shmid(ring.shmid().unwrap()), &RingConfig::new())?.consumer()?;
//!
//! tx.try_send(b"hello")?;
//! let msg = rx.try_lend()?; // lent in place...
//! assert_eq!(msg.to_vec(), b"hello"); // ...and copied out, so the peer cannot change it
//! # drop(msg);
//! ring.remove()?;
//! # Ok::<(), shmpipe::Error>(())
//! ```
//!
//! The protocol is in `docs/DESIGN.md`, the byte layout in `docs/LAYOUT.md`.
//!
//! ## Modules
//! - [`at`]: where a ring lives (key, shmid, memfd, file, heap) and which of [`Ring::create`],
//!   [`Ring::open`] and [`Ring::open_or_create`] each place accepts.
//! - [`segment`]: SysV keys and segments (shmget/shmat/shmdt/shmctl/ftok), nothing else.
//! - [`memfd`]: passing a memfd ring's descriptor to another process.
//! - [`shared`]: the one copy to and from memory the peer can write, and the views
//!   ([`RingSlice`], [`RingSliceMut`]) that lend ring bytes without references.
//! - [`wait`]: wait strategies and the futex call count.
//! - [`gc`]: finding, classifying and removing stale rings.
//! - [`error`]: every error type, each converting into [`Error`] and `std::io::Error`.
//! - Typed rings of plain-old-data values ([`TypedProducer`], [`TypedConsumer`]), a consumer as
//!   an iterator ([`Consumer::iter`], [`Consumer::try_iter`]), and with feature `tokio` the async
//!   sides (`AsyncProducer`, `AsyncConsumer`, `AsyncTypedProducer`, `AsyncTypedConsumer`) that
//!   park on tokio's blocking pool instead of spinning or blocking.
//!
//! Inside, the tree is the architecture (docs/DESIGN.md, "Where the code is"): `sync` (atomics,
//! futex, the loom/Miri/fuzzing switches), `layout` (the bytes), `ring` (the algorithm over any
//! memory), `backing` (one file per OS object), `channel` (`Ring`, roles, the sides, waits,
//! typed and async), `admin` (`gc`).

#![deny(unsafe_op_in_unsafe_fn, missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

/// Not API: fuzzing entry points, only with `--cfg fuzzing` (see `fuzz/`).
#[cfg(all(fuzzing, not(loom)))]
#[doc(hidden)]
#[path = "fuzzing.rs"]
pub mod __fuzz;
mod admin;
mod backing;
mod channel;
mod convert;
pub mod error;
mod key;
mod layout;
mod ring;
mod sync;

pub use admin::gc;
pub use backing::memfd;
pub use backing::sysv as segment;
pub use channel::at;
pub use channel::views as shared;
pub use channel::wait;

pub use at::{Create, Heap, Memfd, Open, OpenOrCreate, Shmid};
pub use channel::iter::{Iter, TryIter, TypedIter, TypedTryIter};
pub use channel::{
    Consumer, DEFAULT_INIT_TIMEOUT, Producer, ReadGuard, RecvBatch, Ring, RingConfig, RingStatus,
    SendBatch, WaitStrategy, WriteGrant,
};
pub use error::{
    Corrupted, Corruption, Error, Ident, Liveness, LostMemory, OutOfBounds, RecvError, Role,
    SendError, TryRecvError, TrySendError, WrongProcess,
};
pub use layout::{HEADER_SIZE, LAYOUT_VERSION, MAGIC, RECORD_HEADER};
pub use segment::{Key, Segment, SegmentStat};
pub use shared::{RingChunks, RingSlice, RingSliceMut};

/// The `bytemuck` crate, whose [`Pod`](bytemuck::Pod) trait says what a typed ring may carry.
/// Derive it through this re-export with `#[bytemuck(crate = "shmpipe::bytemuck")]` (see
/// [`Ring::typed`]), or depend on `bytemuck` yourself.
pub use bytemuck;
pub use channel::typed::{
    TypedClaim, TypedConsumer, TypedProducer, TypedReadGuard, TypedWriteGrant, type_fingerprint,
    type_tag,
};
pub use layout::MessageType;

#[cfg(feature = "tokio")]
pub use channel::asynch::{AsyncConsumer, AsyncProducer};
#[cfg(feature = "tokio")]
pub use channel::asynch_typed::{AsyncTypedConsumer, AsyncTypedProducer};
