//! # shmpipe
//!
//! A lock-free single-producer/single-consumer ring buffer between two processes (or two
//! threads), for **Linux only**. Messages, byte slices from 0 bytes up to a maximum fixed at
//! creation, go from a [`Producer`] to a [`Consumer`] through shared memory with no system call
//! on the hot path: the producer publishes with one Release store, the consumer reads with
//! Acquire, and a side sleeps on a futex only when the ring stays full or empty. The memory is
//! a System V segment, a memfd, a file or this process's heap; a ring is made or joined with
//! [`Ring::create`], [`Ring::open`] or [`Ring::open_or_create`], whose first argument ([`at`])
//! says where it lives and whose [`RingConfig`] says how.
//!
//! **Trust model.** The other process is not trusted: every index and record header read from
//! shared memory is read once and validated, and a violation is a sticky [`Corrupted`] error,
//! never a panic, an out-of-bounds access or a hang. No safe call hands out a reference into
//! memory the peer can write: what is lent in place is a view ([`RingSlice`], [`RingSliceMut`])
//! that copies bytes out and in.
//!
//! # Where a ring lives
//!
//! The [`at`] module has the table of which place each constructor accepts; any other
//! combination is a compile error. Whoever creates a ring fixes its shape; whoever joins it
//! takes that shape unless it set a shape field itself ("the header is the authority").
//!
//! **A System V segment**, by [`Key`] (a number, [`Key::ftok`], or [`Key::Private`]) or by
//! [`Shmid`]. Two programs agreeing on a key start in either order with
//! [`Ring::open_or_create`]; a private segment is found by its shmid, or inherited across
//! `fork`:
//!
//! ```
//! use shmpipe::{Key, Ring, RingConfig, Shmid};
//!
//! // Both programs: Ring::open_or_create(Key::Number(0x2020), &RingConfig::new())?
//! let ring = Ring::create(Key::Private, &RingConfig::new().slot_count(1024))?;
//! let id = Shmid(ring.shmid().expect("a segment has a shmid"));
//! let peer = Ring::open(id, &RingConfig::new())?; // the other process, given the shmid
//! let (mut tx, mut rx) = (ring.producer()?, peer.consumer()?);
//! tx.send(b"hello")?;
//! let mut buf = [0u8; 16];
//! let n = rx.recv(&mut buf)?;
//! assert_eq!(&buf[..n], b"hello");
//! ring.remove()?; // happens anyway once both roles are claimed, unless persistent
//! # Ok::<(), shmpipe::Error>(())
//! ```
//!
//! **A sealed memfd** ([`Memfd`]): no key and nothing to clean up. The other process gets the
//! descriptor across `exec` or over a Unix socket ([`memfd::send_fd`], [`memfd::recv_fd`]) and
//! opens the [`OwnedFd`](std::os::fd::OwnedFd):
//!
//! ```
//! use std::os::unix::net::UnixStream;
//! use shmpipe::{Memfd, Ring, RingConfig, memfd};
//!
//! let ring = Ring::create(Memfd, &RingConfig::new())?;
//! let (here, there) = UnixStream::pair()?;
//! memfd::send_fd(&here, ring.memfd().expect("a memfd ring"))?;
//! // The other process, at the other end of the socket:
//! let peer = Ring::open(memfd::recv_fd(&there)?, &RingConfig::new())?;
//! let (mut tx, mut rx) = (ring.producer()?, peer.consumer()?);
//! tx.send(b"through a memfd")?;
//! assert_eq!(rx.recv_vec(&mut Vec::new())?, 15);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **A file** named by a [`Path`](std::path::Path) (in `/dev/shm`, or on a disk where a
//! [`persistent`](RingConfig::persistent) ring survives restarts); a file truncated under the
//! ring is an error, never a `SIGBUS`:
//!
//! ```
//! use shmpipe::{Ring, RingConfig};
//!
//! let path = std::env::temp_dir().join(format!("shmpipe-doc-{}", std::process::id()));
//! let ring = Ring::create(path.as_path(), &RingConfig::new())?;
//! let peer = Ring::open(path.as_path(), &RingConfig::new())?;
//! let (mut tx, mut rx) = (ring.producer()?, peer.consumer()?);
//! tx.send(b"through a file")?;
//! assert_eq!(rx.try_lend()?.to_vec(), b"through a file");
//! ring.remove()?; // unlinks the file
//! # Ok::<(), shmpipe::Error>(())
//! ```
//!
//! **The heap** ([`Heap`]): the same protocol between two threads of one process.
//!
//! ```
//! use shmpipe::{Heap, Ring, RingConfig};
//!
//! let ring = Ring::create(Heap, &RingConfig::new().slot_size(64).slot_count(256))?;
//! let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
//! std::thread::spawn(move || tx.send(b"from a thread")).join().unwrap()?;
//! assert_eq!(rx.try_lend()?.to_vec(), b"from a thread");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Roles
//!
//! A ring has one producer and one consumer, enforced across processes: [`Ring::producer`] and
//! [`Ring::consumer`] claim a role, and a role held by another live side is
//! [`Error::RoleTaken`]. A role whose holder died without closing is taken over with
//! [`Ring::take_over_producer`] / [`Ring::take_over_consumer`] once the kernel confirms the
//! death; the stream continues where the dead side left it. Closing the producer
//! ([`Producer::close`], or dropping it) ends the stream: the consumer receives every message,
//! then end of stream ([`RecvError::Disconnected`]); a dead producer is
//! [`RecvError::PeerDied`] instead, and a closed or dead consumer makes sends fail.
//!
//! ```
//! use shmpipe::{Error, Heap, Liveness, Ring, RingConfig};
//!
//! let ring = Ring::create(Heap, &RingConfig::new())?;
//! let tx = match ring.producer() {
//!     Err(Error::RoleTaken { holder: Liveness::Dead, .. }) => ring.take_over_producer()?,
//!     claimed => claimed?,
//! };
//! assert!(matches!(ring.producer(), Err(Error::RoleTaken { holder: Liveness::Alive, .. })));
//! tx.close()?; // a clean end of stream, and the role is free again
//! let _next = ring.producer()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Sending and receiving
//!
//! `try_x` never blocks, `x` blocks, `x_timeout(.., Duration)` blocks at most that long.
//! [`Producer::send`] and [`Consumer::recv`] copy a message in and out. To skip a copy, a
//! message is built in place in a [`WriteGrant`] ([`Producer::try_reserve`], then
//! [`commit`](WriteGrant::commit)) and read in place from a [`ReadGuard`]
//! ([`Consumer::try_lend`], released on drop); both are views, whose accessors copy the bytes
//! (the `unsafe` `&[u8]` of [`shared`] is for a peer trusted to follow the protocol).
//!
//! ```
//! use shmpipe::{Heap, Ring, RingConfig};
//!
//! let ring = Ring::create(Heap, &RingConfig::new())?;
//! let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
//!
//! let mut grant = tx.try_reserve(12)?; // 12 bytes of ring, written in place
//! grant.write_at(0, 7u32)?;
//! grant.write_at(4, 42u64)?;
//! grant.commit();
//!
//! let msg = rx.try_lend()?; // lent in place until dropped
//! assert_eq!((msg.len(), msg.read_at::<u64>(4)?), (12, 42));
//! drop(msg); // releases its slots to the producer
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Batches
//!
//! [`Producer::batch`] publishes any number of messages with one store, [`Consumer::batch`]
//! releases what it received with one store (on [`publish`](SendBatch::publish) /
//! [`release`](RecvBatch::release), or on drop):
//!
//! ```
//! use shmpipe::{Heap, Ring, RingConfig};
//!
//! let ring = Ring::create(Heap, &RingConfig::new())?;
//! let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
//! let mut batch = tx.batch();
//! for i in 0..10u8 {
//!     batch.try_send(&[i])?;
//! }
//! batch.publish(); // the consumer sees all ten at once
//!
//! let mut batch = rx.batch();
//! let (mut buf, mut sum) = ([0u8; 1], 0);
//! while let Ok(1) = batch.try_recv(&mut buf) {
//!     sum += buf[0];
//! }
//! assert_eq!(sum, 45);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Waiting
//!
//! A blocked call waits as its side's [`WaitStrategy`] says (spin, spin then sleep on the
//! futex, or sleep at once), and a dead peer ends the wait with an error within about 20 ms,
//! never a hang:
//!
//! ```
//! use std::time::Duration;
//! use shmpipe::{Heap, RecvError, Ring, RingConfig, WaitStrategy};
//!
//! let ring = Ring::create(Heap, &RingConfig::new())?;
//! let (_tx, mut rx) = (ring.producer()?, ring.consumer()?);
//! rx.set_wait_strategy(WaitStrategy::Sleep);
//! let mut buf = [0u8; 64];
//! let waited = rx.recv_timeout(&mut buf, Duration::from_millis(5));
//! assert!(matches!(waited, Err(RecvError::Timeout)));
//! # Ok::<(), shmpipe::Error>(())
//! ```
//!
//! # Iterating
//!
//! [`Consumer::iter`] (or `for msg in &mut rx`) yields each message as a `Vec<u8>` and ends at
//! a clean end of stream; [`Consumer::try_iter`] takes what is waiting now:
//!
//! ```
//! use shmpipe::{Heap, Ring, RingConfig};
//!
//! let ring = Ring::create(Heap, &RingConfig::new())?;
//! let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
//! tx.send(b"one")?;
//! tx.send(b"two")?;
//! drop(tx); // ends the stream
//! let all: Vec<Vec<u8>> = rx.iter().collect::<Result<_, _>>()?;
//! assert_eq!(all, [b"one", b"two"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Typed rings
//!
//! A ring can carry values of one plain-old-data type ([`bytemuck::Pod`]) instead of bytes:
//! [`Ring::typed`] claims a [`TypedProducer`] or [`TypedConsumer`], and a peer claiming it with
//! another type gets [`Error::TypeMismatch`]. Values go one by one, in slices published with
//! one store, or in place ([`TypedWriteGrant`], [`TypedReadGuard`]):
//!
//! ```
//! use shmpipe::{Heap, Ring, RingConfig};
//!
//! let ring = Ring::create(Heap, &RingConfig::new().message_type::<u64>())?;
//! let mut tx = ring.typed::<u64>().producer()?;
//! let mut rx = ring.typed::<u64>().consumer()?;
//! tx.send(1)?;
//! tx.send_slice(&[2, 3])?;
//! let mut out = [0u64; 4];
//! assert_eq!(rx.recv()?, 1);
//! assert_eq!(rx.recv_slice(&mut out)?, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Async (feature `tokio`)
//!
//! `into_async()` turns any side into a tokio one (`AsyncProducer`, `AsyncConsumer`,
//! `AsyncTypedProducer`, `AsyncTypedConsumer`): `send().await` and `recv().await` spin briefly,
//! then park on tokio's blocking pool, and are cancel-safe. The peer may be blocking or async:
//!
//! ```
//! # #[cfg(feature = "tokio")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use shmpipe::{Heap, Ring, RingConfig};
//!
//! let ring = Ring::create(Heap, &RingConfig::new())?;
//! let (mut tx, rx) = (ring.producer()?, ring.consumer()?);
//! let mut rx = rx.into_async();
//! let producer = std::thread::spawn(move || tx.send(b"awaited"));
//! let rt = tokio::runtime::Builder::new_current_thread().build()?;
//! let mut buf = [0u8; 64];
//! let n = rt.block_on(rx.recv(&mut buf))?;
//! assert_eq!(&buf[..n], b"awaited");
//! producer.join().unwrap()?;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "tokio"))]
//! # fn main() {}
//! ```
//!
//! # Byte streams
//!
//! A [`Producer`] is an [`io::Write`](std::io::Write) and a [`Consumer`] an
//! [`io::Read`](std::io::Read) and [`io::BufRead`](std::io::BufRead), like the two ends of a
//! pipe: end of file is the producer closing, and a dead producer is an error, so a truncated
//! stream is never taken for a whole one.
//!
//! ```
//! use std::io::{BufRead, Write};
//! use shmpipe::{Heap, Ring, RingConfig};
//!
//! let ring = Ring::create(Heap, &RingConfig::new())?;
//! let (mut tx, rx) = (ring.producer()?, ring.consumer()?);
//! writeln!(tx, "hello")?;
//! writeln!(tx, "world")?;
//! drop(tx);
//! let lines: Vec<String> = rx.lines().collect::<Result<_, _>>()?;
//! assert_eq!(lines, ["hello", "world"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Errors
//!
//! Each call returns the error type of what it can go wrong with ([`TrySendError`],
//! [`SendError`], [`TryRecvError`], [`RecvError`], [`Error`] for making rings and claiming
//! roles; all in [`error`]), and every one converts into [`Error`] and into
//! [`std::io::Error`] keeping what happened, so `?` works in a function returning either (or
//! `Box<dyn Error>`):
//!
//! ```
//! use std::io;
//! use shmpipe::{Heap, Ring, RingConfig};
//!
//! fn first_message(ring: &Ring) -> io::Result<Vec<u8>> {
//!     let mut rx = ring.consumer()?; // shmpipe::Error into io::Error
//!     let mut msg = Vec::new();
//!     rx.try_recv_vec(&mut msg)?; // TryRecvError into io::Error
//!     Ok(msg)
//! }
//!
//! let ring = Ring::create(Heap, &RingConfig::new())?;
//! let err = first_message(&ring).unwrap_err(); // nothing sent yet
//! assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
//! # Ok::<(), shmpipe::Error>(())
//! ```
//!
//! # Inspecting and collecting rings
//!
//! [`Ring::status`] and [`Ring::holders`] show a ring's counters and role holders. A SysV ring
//! left behind by crashed processes is recycled by the next [`Ring::open_or_create`] of its
//! key; [`gc::scan`] classifies every segment on the system and [`gc::gc`] removes the stale
//! shmpipe rings, never another program's segment nor another user's ring:
//!
//! ```
//! use shmpipe::{Key, Ring, RingConfig, gc};
//!
//! let ring = Ring::create(Key::Private, &RingConfig::new())?;
//! let mut tx = ring.producer()?;
//! tx.send(b"counted")?;
//! assert_eq!(ring.status().sent, 1);
//! assert!(ring.holders().0.is_some_and(|producer| producer.alive()));
//! for entry in gc::gc(true)? {
//!     // dry run: what would be removed
//!     println!("{:#x} {}: {:?}", entry.stat.key.raw(), entry.stat.shmid, entry.class);
//! }
//! ring.remove()?;
//! # Ok::<(), shmpipe::Error>(())
//! ```
//!
//! # The `shmpipe` command
//!
//! The crate [`shmpipe-cli`](https://crates.io/crates/shmpipe-cli) is the `shmpipe` command
//! (`cargo install shmpipe-cli`): `send` and `recv` stream files or lines through a ring, and
//! `stat`, `create`, `rm` and `gc` inspect and manage rings, as `ipcs`/`ipcrm` do for
//! segments. A library user compiles none of its dependencies.
//!
//! # The protocol
//!
//! [docs/DESIGN.md](https://github.com/shmpipe/shmpipe/blob/main/docs/DESIGN.md) is the
//! protocol (who writes which word, which orderings pair, what a crash at each step leaves,
//! and where the code is); [docs/LAYOUT.md](https://github.com/shmpipe/shmpipe/blob/main/docs/LAYOUT.md)
//! is the byte-level contract, enough to write a compatible peer in another language. Both are
//! also in the published crate.

#![cfg_attr(docsrs, feature(doc_cfg))]
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
    Consumer, DEFAULT_INIT_TIMEOUT, DEFAULT_SLOT_COUNT, DEFAULT_SLOT_SIZE, Producer, ReadGuard,
    RecvBatch, Ring, RingConfig, RingStatus, SendBatch, WaitStrategy, WriteGrant,
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
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use channel::asynch::{AsyncConsumer, AsyncProducer};
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use channel::asynch_typed::{AsyncTypedConsumer, AsyncTypedProducer};
