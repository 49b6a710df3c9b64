//! Where a ring lives: the places [`Ring::create`], [`Ring::open`] and
//! [`Ring::open_or_create`] accept. Every ring is made or joined by one of these three calls;
//! the first argument says where, the [`RingConfig`] how.
//!
//! | place | backing | [`create`](Ring::create) | [`open`](Ring::open) | [`open_or_create`](Ring::open_or_create) |
//! |---|---|---|---|---|
//! | [`Key`] | SysV segment by key ([`Key::Private`]: a new segment reached by shmid) | yes | yes | yes |
//! | [`Shmid`] | SysV segment by id | — | yes | — |
//! | [`Memfd`] | a new anonymous memfd, sealed against resizing | yes | — | — |
//! | [`OwnedFd`] | an existing ring memfd (inherited, or received with [`memfd::recv_fd`](crate::memfd::recv_fd)) | — | yes | — |
//! | [`&Path`](Path), [`PathBuf`], [`&PathBuf`](PathBuf) | a ring file (`MAP_SHARED`), e.g. in `/dev/shm` or on a disk | yes | yes | yes |
//! | [`Heap`] | this process's heap, for two threads (and Miri) | yes | — | — |
//!
//! Any other combination does not compile: the traits [`Create`], [`Open`] and
//! [`OpenOrCreate`] are sealed and implemented exactly as the table says.
//!
//! There is no place for a `&str`: a string could mean a file, an `ftok` path or a key
//! number, so the caller says which ([`Path::new`], [`Key::ftok`], [`Key::new`]).
//!
//! # The header is the authority
//!
//! A ring's shape (slot size, slot count, maximum message, and a typed ring's message type) is
//! fixed by whoever creates it and recorded in its header. [`Ring::create`] uses the shape of
//! the [`RingConfig`], the defaults for whatever it does not set. [`Ring::open`], and
//! [`Ring::open_or_create`] when the ring exists already, join a ring of any valid shape,
//! except for the shape fields the caller set explicitly ([`RingConfig::slot_size`],
//! [`RingConfig::slot_count`], [`RingConfig::max_message`], [`RingConfig::message_type`]):
//! each of those must match, or the open fails with [`Error::ConfigMismatch`] naming the
//! field, what was asked and what was found. So two programs that leave the shape alone agree
//! on a key or path in either start order, whatever shape the first one chose.
//! [`RingConfig::join_any_shape`] keeps a shape for creating only.
//!
//! ```
//! use shmpipe::{Key, Ring, RingConfig, Shmid};
//! let ring = Ring::create(Key::Private, &RingConfig::new().slot_count(65536))?;
//! let id = Shmid(ring.shmid().unwrap());
//! // Whoever joins takes the shape the creator chose...
//! assert_eq!(Ring::open(id, &RingConfig::new())?.slot_count(), 65536);
//! // ...unless it demands one.
//! let demand = RingConfig::new().slot_count(1024);
//! assert!(matches!(Ring::open(id, &demand), Err(shmpipe::Error::ConfigMismatch { .. })));
//! ring.remove()?;
//! # Ok::<(), shmpipe::Error>(())
//! ```

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::{Error, Ring, RingConfig};

pub use crate::backing::sysv::Key;

/// A SysV segment named by its shmid ([`Ring::shmid`]), e.g. one another process created
/// with [`Key::Private`]: [`Ring::open`] only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shmid(pub i32);

/// A new anonymous memfd, sealed against shrinking and growing: [`Ring::create`] only. No key,
/// no `ipcs` entry, nothing to remove or collect; the memory is freed when the last descriptor
/// and mapping of it are gone. Hand [`Ring::memfd`] to the other process (inherited across
/// `fork`/`exec`, or sent with [`memfd::send_fd`](crate::memfd::send_fd)), which opens its
/// [`OwnedFd`] with [`Ring::open`]: a descriptor that is not a memfd sealed against resizing is
/// refused with [`Error::BadHeader`], one of another user or with a mode wider than
/// [`RingConfig::mode`] with [`Error::ForeignOwner`], a hugetlb one without
/// [`RingConfig::accept_huge_pages`] with [`Error::HugePagesNotAccepted`].
///
/// # Examples
///
/// ```
/// use shmpipe::{Memfd, Ring, RingConfig};
/// let ring = Ring::create(Memfd, &RingConfig::new())?;
/// // The peer opens its own copy of the descriptor (here: a dup in this process).
/// let fd = ring.memfd().unwrap().try_clone_to_owned().unwrap();
/// let peer = Ring::open(fd, &RingConfig::new())?;
/// let (mut tx, mut rx) = (ring.producer()?, peer.consumer()?);
/// tx.send(b"through a memfd").unwrap();
/// let mut buf = [0u8; 64];
/// let n = rx.recv(&mut buf).unwrap();
/// assert_eq!(&buf[..n], b"through a memfd");
/// # Ok::<(), shmpipe::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Memfd;

/// A ring on the heap of this process, for two threads (and for tests under Miri, which cannot
/// call `shmget`): [`Ring::create`] only. It runs exactly the same protocol as a shared-memory
/// ring; [`RingConfig::huge_pages`] is refused with [`Error::InvalidConfig`].
///
/// # Examples
///
/// ```
/// use shmpipe::{Heap, Ring, RingConfig};
/// let ring = Ring::create(Heap, &RingConfig::new().slot_count(64))?;
/// let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
/// tx.try_send(b"in process").unwrap();
/// assert_eq!(rx.try_lend().unwrap().to_vec(), b"in process");
/// # Ok::<(), shmpipe::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Heap;

/// The shape fields a [`RingConfig`] set explicitly, which an opener demands of an existing
/// ring (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Demanded {
    pub(crate) slot_size: bool,
    pub(crate) slot_count: bool,
    pub(crate) max_message: bool,
    pub(crate) message_type: bool,
}

/// The real trait methods, out of reach of other crates: nobody else can add a place.
mod sealed {
    use crate::{Error, Ring, RingConfig};

    pub trait Create {
        fn create(self, config: &RingConfig) -> Result<Ring, Error>;
    }
    pub trait Open {
        fn open(self, config: &RingConfig) -> Result<Ring, Error>;
    }
    pub trait OpenOrCreate {
        fn open_or_create(self, config: &RingConfig) -> Result<Ring, Error>;
    }
}

/// A place [`Ring::create`] can make a ring at (the module docs have the table). Sealed.
pub trait Create: sealed::Create {}
/// A place [`Ring::open`] can join a ring at (the module docs have the table). Sealed.
pub trait Open: sealed::Open {}
/// A place [`Ring::open_or_create`] accepts (the module docs have the table). Sealed.
pub trait OpenOrCreate: sealed::OpenOrCreate {}

impl Create for Key {}
impl sealed::Create for Key {
    fn create(self, config: &RingConfig) -> Result<Ring, Error> {
        Ring::create_segment(self, config)
    }
}
impl Open for Key {}
impl sealed::Open for Key {
    fn open(self, config: &RingConfig) -> Result<Ring, Error> {
        joined(Ring::open_segment(self, config), config)
    }
}
impl OpenOrCreate for Key {}
impl sealed::OpenOrCreate for Key {
    fn open_or_create(self, config: &RingConfig) -> Result<Ring, Error> {
        Ring::open_or_create_segment(self, config)
    }
}

impl Open for Shmid {}
impl sealed::Open for Shmid {
    fn open(self, config: &RingConfig) -> Result<Ring, Error> {
        joined(Ring::open_shmid(self.0, config), config)
    }
}

impl Create for Memfd {}
impl sealed::Create for Memfd {
    fn create(self, config: &RingConfig) -> Result<Ring, Error> {
        Ring::create_memfd(config)
    }
}
impl Open for OwnedFd {}
impl sealed::Open for OwnedFd {
    fn open(self, config: &RingConfig) -> Result<Ring, Error> {
        joined(Ring::open_memfd(self, config), config)
    }
}

impl Create for Heap {}
impl sealed::Create for Heap {
    fn create(self, config: &RingConfig) -> Result<Ring, Error> {
        Ring::create_heap(config)
    }
}

/// A ring file by path, in each form a caller holds one.
macro_rules! file_place {
    ($($t:ty),*) => {$(
        impl Create for $t {}
        impl sealed::Create for $t {
            fn create(self, config: &RingConfig) -> Result<Ring, Error> {
                Ring::create_file(self.as_ref(), config)
            }
        }
        impl Open for $t {}
        impl sealed::Open for $t {
            fn open(self, config: &RingConfig) -> Result<Ring, Error> {
                joined(Ring::open_file(self.as_ref(), config), config)
            }
        }
        impl OpenOrCreate for $t {}
        impl sealed::OpenOrCreate for $t {
            fn open_or_create(self, config: &RingConfig) -> Result<Ring, Error> {
                Ring::open_or_create_file(self.as_ref(), config)
            }
        }
    )*};
}
file_place!(&Path, PathBuf, &PathBuf);

/// An opened ring, checked against the shape fields `config` demands.
fn joined(ring: Result<Ring, Error>, config: &RingConfig) -> Result<Ring, Error> {
    let ring = ring?;
    config.check_demanded(&ring)?;
    Ok(ring)
}

impl Ring {
    /// Creates a new ring at `at` (exclusively) with the shape and permissions of `config`
    /// ([`RingConfig::new`] for the defaults) and initialises its header. `at` is a [`Key`]
    /// (`IPC_CREAT | IPC_EXCL`; [`Key::Private`] for a ring shared across `fork` or by shmid),
    /// [`Memfd`], a path ([`&Path`](Path), [`PathBuf`]) or [`Heap`]: the table is in
    /// [`at`](crate::at).
    ///
    /// A file ring is built under a temporary name beside the path and linked into place once
    /// its header is complete, so an opener never sees half a ring; its blocks are allocated
    /// up front, so a full disk fails here rather than at a later write. Like a segment, it is
    /// unlinked once both roles have been claimed unless [`RingConfig::persistent`]; a
    /// persistent one stays for [`Ring::open`] after a restart (then
    /// [`Ring::take_over_producer`]/[`Ring::take_over_consumer`] reclaim roles whose holders
    /// died).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for an impossible shape, or [`RingConfig::huge_pages`] on a
    /// file or heap ring; [`Error::Exists`] if the key is taken, [`Error::FileExists`] if
    /// something is at the path; [`Error::HugePages`] if huge pages are asked for and the
    /// kernel refuses them (never a silent fall back to normal pages);
    /// [`Error::SigbusBlocked`] for a file ring on a thread with `SIGBUS` blocked;
    /// [`Error::Sys`] and [`Error::File`] for a failed system call (e.g. `ENOSPC`).
    ///
    /// # Examples
    ///
    /// ```
    /// use shmpipe::{Ring, RingConfig};
    /// let path = std::env::temp_dir().join(format!("doc-ring-{}", std::process::id()));
    /// let ring = Ring::create(&path, &RingConfig::new().slot_count(1024))?;
    /// // Another process: Ring::open(&path, &RingConfig::new())?.consumer()?
    /// let peer = Ring::open(&path, &RingConfig::new())?;
    /// let (mut tx, mut rx) = (ring.producer()?, peer.consumer()?);
    /// assert!(!path.exists()); // both sides are in: the name is gone, the ring is not
    /// tx.send(b"through a file").unwrap();
    /// let mut buf = [0u8; 64];
    /// let n = rx.recv(&mut buf).unwrap();
    /// assert_eq!(&buf[..n], b"through a file");
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    pub fn create(at: impl Create, config: &RingConfig) -> Result<Ring, Error> {
        sealed::Create::create(at, config)
    }

    /// Opens the existing ring at `at`: a [`Key`], a [`Shmid`], a memfd's [`OwnedFd`] or a path
    /// (the table is in [`at`](crate::at)). It waits up to [`RingConfig::init_timeout`] for
    /// the creator to finish initialising, then validates the header against the real size of
    /// the memory (a segment, memfd or file too small for the ring its header describes is
    /// refused, never touched past its end). The ring's shape is whatever its header says,
    /// unless `config` set a shape field explicitly ([the header is the
    /// authority](crate::at#the-header-is-the-authority)). Before a byte of it is read, its
    /// owner and mode are checked against [`RingConfig::accept_owner`] and
    /// [`RingConfig::mode`]; a ring on huge pages needs [`RingConfig::accept_huge_pages`].
    ///
    /// A file ring can be truncated by anyone who may write it: the access that finds its
    /// memory gone reports [`Corruption::MemoryLost`](crate::Corruption::MemoryLost) instead
    /// of raising `SIGBUS` (docs/DESIGN.md, "When memory disappears: SIGBUS").
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] / [`Error::FileNotFound`]; [`Error::ForeignOwner`] for a ring
    /// another user owns or created, or one of ours whose mode is wider than
    /// [`RingConfig::mode`]; [`Error::NotShmpipe`]; [`Error::VersionMismatch`];
    /// [`Error::SegmentTooSmall`]; [`Error::BadHeader`] (also for a descriptor that is not a
    /// memfd sealed against resizing, or a path that is not a regular file);
    /// [`Error::InitTimeout`]; [`Error::ConfigMismatch`] for a demanded shape field that
    /// differs; [`Error::HugePagesNotAccepted`], and [`Error::HugePages`] if accepted huge
    /// pages cannot be backed; [`Error::SigbusBlocked`] for a file or huge-page ring on a
    /// thread with `SIGBUS` blocked; [`Error::Locked`] or [`Error::File`] for a key's lock,
    /// which the attach is made under (shared) so that a recycler of the key counts it.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmpipe::{Key, Ring, RingConfig, Shmid};
    /// let ring = Ring::create(Key::Private, &RingConfig::new().slot_count(1024))?;
    /// // The other process, told the shmid:
    /// let peer = Ring::open(Shmid(ring.shmid().unwrap()), &RingConfig::new())?;
    /// assert_eq!(peer.slot_count(), 1024);
    /// ring.remove()?;
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    pub fn open(at: impl Open, config: &RingConfig) -> Result<Ring, Error> {
        sealed::Open::open(at, config)
    }

    /// Creates the ring at `at` (a [`Key`] or a path), or opens it if another process created
    /// it first, so that either side may start first. An existing ring is opened as
    /// [`Ring::open`] opens it: any shape, unless `config` demands one ([the header is the
    /// authority](crate::at#the-header-is-the-authority)), with `config`'s mode and accepted
    /// owners, checked before anything else.
    ///
    /// A stale ring at a key (see [`gc::Class::is_stale`](crate::gc::Class::is_stale): nobody
    /// attached, no live holder, nothing waiting to be read, or abandoned mid-initialisation)
    /// is removed and recreated if it is ours (owner and creator our effective uid, or
    /// accepted); a non-persistent ring file left by a lone side that died before its peer came
    /// is removed and created afresh (a persistent one is opened as it is). A segment that is
    /// not a shmpipe ring, or another user's ring, is refused, never touched.
    ///
    /// # Errors
    ///
    /// As [`Ring::create`] and [`Ring::open`]. The whole decision is made holding the key's
    /// lock exclusively (for a path, the lock file `.<name>.shmpipe-lock` beside it;
    /// docs/DESIGN.md, "Recycling a key"), so two sides restarting at once, `gc` and `stat`
    /// never split them across two rings: [`Error::Locked`] if another process held it for
    /// 5 s plus the init timeout; [`Error::File`] if the lock file cannot be opened or
    /// created.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmpipe::{Ring, RingConfig};
    /// let path = std::env::temp_dir().join(format!("doc-either-{}", std::process::id()));
    /// // Whichever side starts first creates the ring; the other joins it, whatever its shape.
    /// let first = Ring::open_or_create(&path, &RingConfig::new().slot_count(8192))?;
    /// let second = Ring::open_or_create(&path, &RingConfig::new())?;
    /// assert_eq!(second.slot_count(), 8192);
    /// # drop((first, second));
    /// std::fs::remove_file(&path).unwrap();
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    pub fn open_or_create(at: impl OpenOrCreate, config: &RingConfig) -> Result<Ring, Error> {
        sealed::OpenOrCreate::open_or_create(at, config)
    }
}
