//! Every error the crate returns.
//!
//! Setting up and attaching fail with [`Error`], which names the key and shmid involved. The
//! hot-path operations have small per-operation enums ([`TrySendError`], [`TryRecvError`]) so
//! that the common outcomes (full, empty) cost nothing to build. A peer that broke the protocol
//! is reported as [`Corrupted`], which says what was wrong.
//!
//! Every error converts into [`Error`] and into [`std::io::Error`] without losing its kind (see
//! `convert.rs`), so `?` works in a function returning either, or `Box<dyn Error>`:
//!
//! ```
//! use shmpipe::{Heap, Ring, RingConfig};
//! fn greet(ring: &Ring) -> Result<(), Box<dyn std::error::Error>> {
//!     let mut tx = ring.producer()?;
//!     tx.send("hello".as_bytes())?;
//!     Ok(())
//! }
//! fn greet_io(ring: &Ring) -> std::io::Result<()> {
//!     let mut tx = ring.producer()?;
//!     tx.send(b"hello")?;
//!     Ok(())
//! }
//! fn greet_crate(ring: &Ring) -> Result<(), shmpipe::Error> {
//!     ring.producer()?.send(b"hello")?;
//!     Ok(())
//! }
//! let ring = Ring::create(Heap, &RingConfig::new())?;
//! let mut rx = ring.consumer()?;
//! greet(&ring)?;
//! greet_io(&ring)?;
//! greet_crate(&ring)?;
//! for msg in rx.try_iter() {
//!     assert_eq!(msg?, b"hello");
//! }
//! // The kind survives: end of stream is still end of stream, whichever type carries it.
//! let e = std::io::Error::from(shmpipe::RecvError::Disconnected);
//! assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
//! assert!(e.get_ref().unwrap().is::<shmpipe::RecvError>());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::key::Key;

/// Which ring an error is about: its key and shmid where it has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Ident {
    /// The key the segment was created or opened with.
    pub key: Option<Key>,
    /// The segment's id.
    pub shmid: Option<i32>,
    /// The file of a ring in a memory-mapped file. (A thin reference to an interned path, so
    /// that an `Ident`, carried by every hot-path error, stays three words.)
    pub path: Option<&'static PathBuf>,
}

impl Ident {
    pub(crate) fn key(key: Key) -> Ident {
        Ident {
            key: Some(key),
            ..Ident::default()
        }
    }

    pub(crate) fn shmid(shmid: i32) -> Ident {
        Ident {
            shmid: Some(shmid),
            ..Ident::default()
        }
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = self.path {
            return write!(f, "ring file {}", path.display());
        }
        match (self.key, self.shmid) {
            (Some(k), Some(id)) => write!(f, "key {k} (shmid {id})"),
            (Some(k), None) => write!(f, "key {k}"),
            (None, Some(id)) => write!(f, "shmid {id}"),
            (None, None) => f.write_str("in-process ring"),
        }
    }
}

/// One side of a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The side that sends (writes the tail).
    Producer,
    /// The side that receives (writes the head).
    Consumer,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        })
    }
}

/// Errors of creating, opening and attaching segments and rings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `IPC_CREAT | IPC_EXCL` found a segment at the key already.
    #[error("{ident}: a segment already exists at this key")]
    Exists {
        /// The key.
        ident: Ident,
    },
    /// No segment has this key or id (or it was removed).
    #[error("{ident}: no such segment")]
    NotFound {
        /// The key or id looked for.
        ident: Ident,
    },
    /// The segment's mode or ownership forbids what was asked.
    #[error("{ident}: permission denied ({op})")]
    PermissionDenied {
        /// The segment.
        ident: Ident,
        /// The call that was refused.
        op: &'static str,
    },
    /// The ring's memory is not ours to trust: its owner (or, for a SysV segment, its creator)
    /// is not this process's effective uid nor a uid accepted with
    /// [`RingConfig::accept_owner`](crate::RingConfig::accept_owner), or it is ours but its
    /// mode grants group or others a permission [`RingConfig::mode`](crate::RingConfig::mode)
    /// does not (default 0600: none). Nothing was read from it or written to it. Root is no
    /// exception: someone else may have created the ring at our key to read what we send.
    ///
    /// ```
    /// use shmpipe::{Error, Key, Ring, RingConfig, Shmid};
    /// let ring = Ring::create(Key::Private, &RingConfig::new().mode(0o666))?;
    /// let id = ring.shmid().unwrap();
    /// // Ours, but wider than the 0600 an opener accepts by default.
    /// match Ring::open(Shmid(id), &RingConfig::new()) {
    ///     Err(Error::ForeignOwner { mode, allowed_mode, .. }) => {
    ///         assert_eq!((mode, allowed_mode), (0o666, 0o600));
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// // Saying so opens it.
    /// let again = Ring::open(Shmid(id), &RingConfig::new().mode(0o666))?;
    /// ring.remove()?;
    /// # drop(again);
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    #[error("{ident}: {}", foreign_owner(*owner_uid, *creator_uid, *mode, *expected_uid, *allowed_mode))]
    ForeignOwner {
        /// The ring.
        ident: Ident,
        /// Its owner (`shm_perm.uid`, or the file's `st_uid`).
        owner_uid: u32,
        /// A SysV segment's creator (`shm_perm.cuid`, which even its owner cannot change);
        /// `None` for a file or memfd.
        creator_uid: Option<u32>,
        /// Its permission bits.
        mode: u32,
        /// Our effective uid.
        expected_uid: u32,
        /// The widest mode accepted on a ring of our own ([`RingConfig::mode`](crate::RingConfig::mode)).
        allowed_mode: u32,
    },
    /// A system limit: segment size outside `SHMMIN..SHMMAX`, too many segments (`SHMMNI`),
    /// total shared memory (`SHMALL`), or address space.
    #[error("{ident}: {what}: {source}")]
    SystemLimit {
        /// The segment.
        ident: Ident,
        /// Which limit, in words.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// `ftok` could not derive a key.
    #[error("ftok({path:?}, {proj_id}) failed: {source}")]
    Ftok {
        /// The path given.
        path: PathBuf,
        /// The project id given.
        proj_id: u8,
        /// The OS error.
        source: io::Error,
    },
    /// Any other failed system call.
    #[error("{ident}: {op} failed: {source}")]
    Sys {
        /// The segment.
        ident: Ident,
        /// The call.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A system call on a ring file failed.
    #[error("ring file {path:?}: {op} failed: {source}")]
    File {
        /// The ring's path.
        path: PathBuf,
        /// The call.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// [`Ring::create`](crate::Ring::create) at a path found a file there already.
    #[error("ring file {path:?}: a file already exists at this path")]
    FileExists {
        /// The path.
        path: PathBuf,
    },
    /// No file at the path given to [`Ring::open`](crate::Ring::open).
    #[error("ring file {path:?}: no such file")]
    FileNotFound {
        /// The path.
        path: PathBuf,
    },
    /// The [`RingConfig`](crate::RingConfig) asked for is impossible.
    #[error("invalid ring configuration: {what}")]
    InvalidConfig {
        /// What is wrong with it.
        what: String,
    },
    /// The segment does not start with shmpipe's magic number: it belongs to someone else.
    #[error("{ident}: not a shmpipe ring (magic {found:#018x})")]
    NotShmpipe {
        /// The segment.
        ident: Ident,
        /// The first 8 bytes found.
        found: u64,
    },
    /// A shmpipe ring of a layout version this build does not speak.
    #[error("{ident}: ring has layout version {found}, this build speaks version {expected}")]
    VersionMismatch {
        /// The segment.
        ident: Ident,
        /// The version in the segment.
        found: u32,
        /// The version of this build.
        expected: u32,
    },
    /// The kernel's size of the segment is smaller than its header says it is.
    #[error("{ident}: segment is {actual} bytes but its header claims {claimed}")]
    SegmentTooSmall {
        /// The segment.
        ident: Ident,
        /// The size the header claims (or the minimum header size).
        claimed: u64,
        /// The size from `IPC_STAT`.
        actual: u64,
    },
    /// A header field is outside what the layout allows.
    #[error("{ident}: invalid ring header: {what}")]
    BadHeader {
        /// The segment.
        ident: Ident,
        /// Which field, with what value.
        what: String,
    },
    /// The creator did not publish the header in time: it is still starting, or it died
    /// while initialising.
    #[error("{ident}: ring not initialised after {waited:?}; its creator is slow or died")]
    InitTimeout {
        /// The segment.
        ident: Ident,
        /// How long we waited.
        waited: Duration,
    },
    /// The lock that serialises recycling a name (a key's or a ring file's lock file, see
    /// docs/DESIGN.md, "Recycling a key") stayed held by another process for `waited`: a
    /// stuck or hostile holder. (A holder that dies releases it at once.)
    #[error("{ident}: lock {lock:?} held by another process for {waited:?}")]
    Locked {
        /// The key or ring file.
        ident: Ident,
        /// The lock file.
        lock: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// [`Ring::open`](crate::Ring::open) or [`Ring::open_or_create`](crate::Ring::open_or_create)
    /// found a ring that differs in a shape field the configuration set explicitly
    /// ([`at`](crate::at#the-header-is-the-authority)).
    #[error("{ident}: existing ring differs from the configuration asked for: {what}")]
    ConfigMismatch {
        /// The ring.
        ident: Ident,
        /// Which field, what was asked and what was found.
        what: String,
    },
    /// A typed claim ([`TypedClaim::producer`](crate::TypedClaim::producer),
    /// [`TypedClaim::consumer`](crate::TypedClaim::consumer)) found a ring that carries another
    /// message type (another size, alignment or fingerprint), or an untyped ring. Nothing was
    /// claimed.
    #[error("{ident}: the ring carries {found}, not {expected}")]
    TypeMismatch {
        /// The ring.
        ident: Ident,
        /// The type asked for: its name, size, alignment and fingerprint.
        expected: String,
        /// What the ring records: size, alignment and fingerprint, or untyped byte messages.
        found: String,
    },
    /// Another process (or another handle in this one) holds the role. If the holder is dead
    /// (`holder` is [`Liveness::Dead`]), the role can be taken over with
    /// [`Ring::take_over_producer`](crate::Ring::take_over_producer) or
    /// [`Ring::take_over_consumer`](crate::Ring::take_over_consumer); an alive holder, or one
    /// whose liveness is unknown (it is in another pid namespace), cannot be taken over.
    #[error("{ident}: the {role} role is held by pid {pid} ({})",
        if *holder == Liveness::Dead { "dead: it can be taken over".to_string() } else { holder.to_string() })]
    RoleTaken {
        /// The ring.
        ident: Ident,
        /// The role asked for.
        role: Role,
        /// The pid written by the holder (in its own pid namespace).
        pid: u32,
        /// What the kernel says about the holder.
        holder: Liveness,
    },
    /// The kernel refused a huge-page segment ([`RingConfig::huge_pages`](crate::RingConfig::huge_pages),
    /// [`Segment::create_huge_pages`](crate::Segment::create_huge_pages)): `ENOMEM` (not enough
    /// free huge pages reserved), `EPERM` (the caller may not use huge pages for shared memory)
    /// or `EINVAL` (size out of range, or huge pages unsupported). shmpipe never falls back to
    /// normal pages on its own.
    ///
    /// ```
    /// use shmpipe::{Error, Key, Ring, RingConfig};
    /// match Ring::create(Key::Private, &RingConfig::new().huge_pages(true)) {
    ///     Ok(ring) => ring.remove()?, // huge pages were available
    ///     Err(Error::HugePages { source, hint, .. }) => {
    ///         eprintln!("no huge pages (errno {:?}): {hint}", source.raw_os_error());
    ///     }
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    ///
    /// Also at attach: a huge-page ring whose pages could not all be backed when every page
    /// was touched (a creator that used `SHM_NORESERVE`, or a page the peer removed, with the
    /// pool empty), with an `ENOMEM` source.
    #[error("{ident}: cannot get huge pages for {size} bytes: {source} ({hint})")]
    HugePages {
        /// The key asked for.
        ident: Ident,
        /// Bytes asked for (rounded up to the huge page size).
        size: usize,
        /// The OS error; its `raw_os_error()` is the errno.
        source: io::Error,
        /// What to check, in words (e.g. `/proc/sys/vm/nr_hugepages`).
        hint: &'static str,
    },
    /// The ring's memory is on huge pages (hugetlb) and was made by another process, which was
    /// not accepted ([`RingConfig::accept_huge_pages`](crate::RingConfig::accept_huge_pages)).
    /// A creator can make huge pages that have no memory behind them (`SHM_NORESERVE`, or a
    /// page removed later), and touching one then raises `SIGBUS`; accepting them makes the
    /// opener touch every page at attach, so a shortage is [`Error::HugePages`] there.
    #[error(
        "{ident}: the ring is on huge pages of {page_size} bytes made by another process; \
         accept them with RingConfig::accept_huge_pages (--accept-huge-pages)"
    )]
    HugePagesNotAccepted {
        /// The ring.
        ident: Ident,
        /// The kernel's page size of the mapping.
        page_size: usize,
    },
    /// The calling thread has `SIGBUS` blocked, and the ring's memory can disappear under the
    /// mapping (a file ring, or one on huge pages): the kernel would kill the process at such a
    /// fault whatever handler is installed, so the ring refuses to attach or claim a role on
    /// this thread. Unblock `SIGBUS` (`pthread_sigmask`) in threads that use rings.
    #[error(
        "{ident}: SIGBUS is blocked in this thread; a fault in this ring's memory would kill \
         the process (unblock SIGBUS in threads that use file or huge-page rings)"
    )]
    SigbusBlocked {
        /// The ring.
        ident: Ident,
    },
    /// [`Ring::lock_memory`](crate::Ring::lock_memory) could not lock the ring's pages in RAM:
    /// `EPERM` or `ENOMEM` from `mlock` when `RLIMIT_MEMLOCK` (`ulimit -l`) is too small and
    /// the process lacks `CAP_IPC_LOCK`; `Unsupported` (no errno) for an in-process ring.
    #[error("{ident}: cannot lock {len} bytes of ring memory: {source} ({hint})")]
    LockMemory {
        /// The ring.
        ident: Ident,
        /// Bytes asked to lock.
        len: usize,
        /// The OS error; its `raw_os_error()` is the errno.
        source: io::Error,
        /// What to check, in words (e.g. `RLIMIT_MEMLOCK`).
        hint: &'static str,
    },
    /// The ring's shared state broke the protocol.
    #[error(transparent)]
    Corrupted(#[from] Corrupted),
    /// A side was used in a process other than the one that claimed its role.
    #[error(transparent)]
    WrongProcess(#[from] WrongProcess),
    /// A range outside a ring view.
    #[error(transparent)]
    OutOfBounds(#[from] OutOfBounds),
    /// [`TrySendError::Full`]: no room in the ring now.
    #[error("ring is full")]
    Full,
    /// [`TryRecvError::Empty`]: no message is waiting.
    #[error("ring is empty")]
    Empty,
    /// [`SendError::Timeout`] or [`RecvError::Timeout`]: the deadline passed.
    #[error("timed out waiting for the peer")]
    Timeout,
    /// The peer closed the ring: for a sender, the consumer is gone; for a receiver, the
    /// producer is gone and every message it sent was received (end of stream).
    #[error("the {peer} closed the ring")]
    Disconnected {
        /// The side that closed the ring.
        peer: Role,
    },
    /// The peer's process died (confirmed by the kernel).
    #[error("the {peer} (pid {pid}) died")]
    PeerDied {
        /// The side that died.
        peer: Role,
        /// Its pid.
        pid: u32,
    },
    /// A message longer than the ring's maximum message size.
    #[error("message of {len} bytes exceeds the ring's maximum of {max} bytes")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The ring's maximum.
        max: usize,
    },
    /// The next message does not fit in the buffer given; it stays in the ring.
    #[error("next message is {needed} bytes, the buffer holds {available}")]
    BufferTooSmall {
        /// The message's length.
        needed: usize,
        /// The buffer's length.
        available: usize,
    },
}

/// The message of [`Error::ForeignOwner`]: who owns it, with what mode, and what would accept
/// it.
fn foreign_owner(owner: u32, creator: Option<u32>, mode: u32, me: u32, allowed: u32) -> String {
    let created = match creator {
        Some(c) if c != owner => format!(" (created by uid {c})"),
        _ => String::new(),
    };
    let mut strangers: Vec<u32> = [Some(owner), creator]
        .into_iter()
        .flatten()
        .filter(|&uid| uid != me)
        .collect();
    strangers.dedup();
    let names: Vec<String> = strangers.iter().map(u32::to_string).collect();
    if !names.is_empty() {
        format!(
            "owned by uid {owner}{created} with mode {mode:04o}, not by this process's uid \
             {me}: refused (someone else may read what goes through it; accept uid {} \
             explicitly to use it)",
            names.join(" and ")
        )
    } else {
        format!(
            "owned by uid {owner} with mode {mode:04o}, which lets group or others in beyond \
             the mode {allowed:04o} accepted: refused (accept mode {:04o} explicitly to use it)",
            mode | allowed
        )
    }
}

impl Error {
    /// Maps an errno from a SysV call to the matching variant.
    pub(crate) fn from_errno(ident: Ident, op: &'static str, source: io::Error) -> Error {
        match source.raw_os_error() {
            Some(libc::ENOENT | libc::EIDRM) => Error::NotFound { ident },
            Some(libc::EACCES | libc::EPERM) => Error::PermissionDenied { ident, op },
            Some(libc::ENOSPC) => Error::SystemLimit {
                ident,
                what: "the system limit on segments or shared memory is reached".into(),
                source,
            },
            Some(libc::ENOMEM) => Error::SystemLimit {
                ident,
                what: "out of memory".into(),
                source,
            },
            _ => Error::Sys { ident, op, source },
        }
    }
}

/// The memory behind a ring that was lost ([`Corruption::MemoryLost`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostMemory {
    /// A ring file that shrank under the mapping (someone truncated it), or whose filesystem
    /// could not back a page.
    File,
    /// A SysV segment or memfd on huge pages: a page could not be backed (the peer removed it
    /// with `MADV_REMOVE` or a hole punch, or the creator never reserved it with
    /// `SHM_NORESERVE`, and the huge page pool is empty).
    HugePages,
    /// A SysV segment or memfd on normal pages whose page the kernel could not back (only
    /// under strict overcommit accounting).
    SharedMemory,
}

impl fmt::Display for LostMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LostMemory::File => {
                "the ring's file shrank under the mapping (truncated by another process) or \
                 could not back a page; the ring's memory is lost"
            }
            LostMemory::HugePages => {
                "a huge page of the ring could not be backed (removed by the peer or never \
                 reserved, and the huge page pool is empty); the ring's memory is lost"
            }
            LostMemory::SharedMemory => {
                "a page of the ring's shared memory could not be backed; the ring's memory is \
                 lost"
            }
        })
    }
}

/// What a peer did to the ring that the protocol does not allow.
///
/// Indices are the free-running 64-bit slot counters; `at` is a slot counter too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Corruption {
    /// The tail the producer published is behind the consumer's head, behind a tail seen
    /// before, or more than the capacity ahead of the head.
    TailOutOfRange {
        /// The tail read.
        tail: u64,
        /// The consumer's released head.
        head: u64,
        /// The tail seen before.
        last_tail: u64,
        /// Slots in the ring.
        capacity: u64,
    },
    /// The head the consumer published moved backwards or past what was published.
    HeadOutOfRange {
        /// The head read.
        head: u64,
        /// The head seen before.
        last_head: u64,
        /// The producer's published tail.
        tail: u64,
    },
    /// A record header declares more payload than the ring's maximum message size.
    RecordTooLong {
        /// Where the record starts.
        at: u64,
        /// Its length field.
        len: u32,
        /// The ring's maximum.
        max: u32,
    },
    /// A record would run past the end of the slot array.
    RecordOverrunsArray {
        /// Where the record starts.
        at: u64,
        /// Slots it would need.
        slots: u64,
        /// Slots in the array.
        capacity: u64,
    },
    /// A record extends past the published tail.
    RecordBeyondTail {
        /// Where the record starts.
        at: u64,
        /// Slots it would need.
        slots: u64,
        /// Slots published from `at`.
        available: u64,
    },
    /// A record header of a kind the protocol does not define.
    UnknownKind {
        /// Where the record starts.
        at: u64,
        /// Its kind field.
        kind: u32,
    },
    /// A padding record whose length is not exactly the rest of the array.
    BadPadding {
        /// Where the record starts.
        at: u64,
        /// Its length field.
        len: u32,
        /// The only valid length at this position.
        expected: u32,
    },
    /// A padding record that is not followed by a published message (this includes padding at
    /// the start of the array, which would cover all of it).
    PaddingWithoutMessage {
        /// Where the record starts.
        at: u64,
    },
    /// A message in a typed ring that is not exactly one value of the ring's type (a typed
    /// consumer found it; the record stays in the ring).
    WrongMessageSize {
        /// Where the record starts.
        at: u64,
        /// Its length field.
        len: u32,
        /// The size of the ring's message type.
        expected: u32,
    },
    /// The ring's memory disappeared under this side's mapping: a page the kernel could not
    /// back (the file shrank; a huge page was removed by the peer or never reserved, with the
    /// pool empty). This side now sees private zeros instead of the ring (docs/DESIGN.md,
    /// "When memory disappears: SIGBUS"). The side reports it at its next record or index
    /// read, empty ring or wait, and then at every call.
    MemoryLost {
        /// Which memory was lost.
        memory: LostMemory,
    },
    /// This side's own `owner` word no longer holds its identity: another process (neither
    /// side, or a claimant that wrongly took the role over) rewrote it. The side stops using the
    /// ring and leaves the word as it found it.
    RoleLost {
        /// Whose owner word: this side's role.
        role: Role,
        /// What the word held (0: cleared).
        found: u64,
    },
    /// The producer's `claims` count went down. It only grows (one per claim), so something
    /// other than a claimant rewrote it, and "has a producer ever come?" can no longer be
    /// answered from it.
    ClaimsBackwards {
        /// The count read.
        claims: u32,
        /// The count read before.
        last_claims: u32,
    },
    /// The producer's `claims` count is 0 (no producer ever claimed the ring), yet messages
    /// were published: the count was rewritten.
    PublishedWithoutClaim {
        /// The producer's tail (its `sent` count, if the tail did not move, is in `sent`).
        tail: u64,
        /// The producer's `sent` count.
        sent: u64,
    },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Corruption::TailOutOfRange {
                tail,
                head,
                last_tail,
                capacity,
            } => write!(
                f,
                "tail {tail} out of range (head {head}, last tail {last_tail}, capacity {capacity} slots)"
            ),
            Corruption::HeadOutOfRange {
                head,
                last_head,
                tail,
            } => write!(
                f,
                "head {head} out of range (last head {last_head}, published tail {tail})"
            ),
            Corruption::RecordTooLong { at, len, max } => {
                write!(f, "record at {at} has length {len}, over the maximum {max}")
            }
            Corruption::RecordOverrunsArray {
                at,
                slots,
                capacity,
            } => write!(
                f,
                "record at {at} needs {slots} slots and runs past the end of the {capacity}-slot array"
            ),
            Corruption::RecordBeyondTail {
                at,
                slots,
                available,
            } => write!(
                f,
                "record at {at} needs {slots} slots but only {available} are published"
            ),
            Corruption::UnknownKind { at, kind } => {
                write!(f, "record at {at} has unknown kind {kind:#x}")
            }
            Corruption::BadPadding { at, len, expected } => write!(
                f,
                "padding record at {at} has length {len}, expected {expected}"
            ),
            Corruption::MemoryLost { memory } => write!(f, "{memory}"),
            Corruption::WrongMessageSize { at, len, expected } => write!(
                f,
                "record at {at} has length {len}, but every message of this typed ring is \
                 {expected} bytes"
            ),
            Corruption::RoleLost { role, found } => write!(
                f,
                "the {role}'s owner word was changed under it by another process (it holds \
                 {found:#x}, pid {}); the {role} stopped",
                found as u32
            ),
            Corruption::ClaimsBackwards {
                claims,
                last_claims,
            } => write!(
                f,
                "the producer's claim count went back from {last_claims} to {claims} \
                 (rewritten by another process)"
            ),
            Corruption::PublishedWithoutClaim { tail, sent } => write!(
                f,
                "messages were published (tail {tail}, sent {sent}) but the producer's claim \
                 count is 0 (rewritten by another process)"
            ),
            Corruption::PaddingWithoutMessage { at } => {
                write!(
                    f,
                    "padding record at {at} is not followed by a published message"
                )
            }
        }
    }
}

/// A peer broke the ring's protocol. The side that saw it is poisoned: every later call on it
/// returns this same error at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{ring}: ring corrupted: {what}")]
pub struct Corrupted {
    /// The ring.
    pub ring: Ident,
    /// What was wrong.
    pub what: Corruption,
}

/// A [`Producer`](crate::Producer) or [`Consumer`](crate::Consumer) (or a wrapper of one) used
/// in a process other than the one that claimed its role: a child that inherited it across
/// `fork`. The role belongs to the claimer: every operation of the inherited handle fails with
/// this error and touches nothing, and dropping it does nothing to the ring. The child may
/// claim a free role of its own from its [`Ring`](crate::Ring). See docs/DESIGN.md, "Fork,
/// exec and pid namespaces".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{ring}: this {role} was claimed by pid {claimer}, and pid {current} (a forked child) \
         may not use it"
)]
#[non_exhaustive]
pub struct WrongProcess {
    /// The ring.
    pub ring: Ident,
    /// The handle's role.
    pub role: Role,
    /// The pid of the process that claimed the role.
    pub claimer: u32,
    /// The pid of the process that used the handle.
    pub current: u32,
}

/// Why [`Producer::try_send`](crate::Producer::try_send) or
/// [`Producer::try_reserve`](crate::Producer::try_reserve) did not send. Nothing is given back:
/// the caller still has the message (a borrowed slice, or a `Copy` value of a typed ring).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// No room now. Try again once the consumer catches up.
    #[error("ring is full")]
    Full,
    /// The message is longer than the ring's maximum message size; it will never fit.
    #[error("message of {len} bytes exceeds the ring's maximum of {max} bytes")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The ring's maximum.
        max: usize,
    },
    /// The consumer closed the ring (dropped its `Consumer`).
    #[error("the consumer closed the ring")]
    Disconnected,
    /// The consumer broke the protocol; the producer is poisoned.
    #[error(transparent)]
    Corrupted(Corrupted),
    /// The producer was claimed by another process (this one is a forked child): nothing was
    /// sent.
    #[error(transparent)]
    WrongProcess(WrongProcess),
}

/// Why a blocking send ([`Producer::send`](crate::Producer::send),
/// [`Producer::send_timeout`](crate::Producer::send_timeout),
/// [`Producer::reserve`](crate::Producer::reserve),
/// [`Producer::reserve_timeout`](crate::Producer::reserve_timeout)) did not send. Nothing is
/// given back: the caller still has the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The deadline passed with no room.
    #[error("timed out waiting for room in the ring")]
    Timeout,
    /// The consumer closed the ring.
    #[error("the consumer closed the ring")]
    Disconnected,
    /// The consumer's process died (confirmed by the kernel) while we waited for room.
    #[error("the consumer (pid {pid}) died")]
    PeerDied {
        /// The dead consumer's pid.
        pid: u32,
    },
    /// The message is longer than the ring's maximum message size.
    #[error("message of {len} bytes exceeds the ring's maximum of {max} bytes")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The ring's maximum.
        max: usize,
    },
    /// The consumer broke the protocol; the producer is poisoned.
    #[error(transparent)]
    Corrupted(Corrupted),
    /// The producer was claimed by another process (this one is a forked child): nothing was
    /// sent.
    #[error(transparent)]
    WrongProcess(WrongProcess),
}

/// Why a blocking receive ([`Consumer::recv`](crate::Consumer::recv),
/// [`Consumer::recv_timeout`](crate::Consumer::recv_timeout),
/// [`Consumer::lend`](crate::Consumer::lend), [`Consumer::lend_timeout`](crate::Consumer::lend_timeout))
/// returned no message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The deadline passed with no message.
    #[error("timed out waiting for a message")]
    Timeout,
    /// The producer closed the ring and every message it sent has been received: end of stream.
    #[error("the producer closed the ring")]
    Disconnected,
    /// The producer's process died (confirmed by the kernel); every message it published before
    /// has been received.
    #[error("the producer (pid {pid}) died")]
    PeerDied {
        /// The dead producer's pid.
        pid: u32,
    },
    /// The next message does not fit in the buffer given; it stays in the ring.
    #[error("next message is {needed} bytes, the buffer holds {available}")]
    BufferTooSmall {
        /// The message's length.
        needed: usize,
        /// The buffer's length.
        available: usize,
    },
    /// The producer broke the protocol; the consumer is poisoned.
    #[error(transparent)]
    Corrupted(Corrupted),
    /// The consumer was claimed by another process (this one is a forked child): nothing was
    /// received.
    #[error(transparent)]
    WrongProcess(WrongProcess),
}

/// Why [`Consumer::try_recv`](crate::Consumer::try_recv) or
/// [`Consumer::try_lend`](crate::Consumer::try_lend) returned no message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// No message is waiting.
    #[error("ring is empty")]
    Empty,
    /// No message is waiting and the producer closed the ring: end of stream.
    #[error("the producer closed the ring")]
    Disconnected,
    /// The next message does not fit in the buffer given; it stays in the ring.
    #[error("next message is {needed} bytes, the buffer holds {available}")]
    BufferTooSmall {
        /// The message's length.
        needed: usize,
        /// The buffer's length.
        available: usize,
    },
    /// The producer broke the protocol; the consumer is poisoned.
    #[error(transparent)]
    Corrupted(Corrupted),
    /// The consumer was claimed by another process (this one is a forked child): nothing was
    /// received.
    #[error(transparent)]
    WrongProcess(WrongProcess),
}

/// A range outside a ring view ([`RingSlice`](crate::RingSlice),
/// [`RingSliceMut`](crate::RingSliceMut)): `size` bytes at `offset` do not fit in its `len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{size} bytes at offset {offset} do not fit in a view of {len} bytes")]
#[non_exhaustive]
pub struct OutOfBounds {
    /// Where the range starts.
    pub offset: usize,
    /// Its length.
    pub size: usize,
    /// The view's length.
    pub len: usize,
}

/// What the kernel says about a role holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Liveness {
    /// A process with this pid and start time runs (and, for a shared ring, still maps it).
    Alive,
    /// No such process: it exited, was killed (zombies included), its pid was reused, or it no
    /// longer maps the ring (it called `exec`). Its role may be taken over.
    Dead,
    /// The holder recorded another pid namespace than ours: its pid means nothing here, so it
    /// is never called dead (no `PeerDied`, no takeover; `gc` keeps its ring).
    Unknown,
}

impl std::fmt::Display for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Liveness::Alive => "alive",
            Liveness::Dead => "dead",
            Liveness::Unknown => "unknown: another pid namespace",
        })
    }
}
