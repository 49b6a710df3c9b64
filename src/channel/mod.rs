//! The channel API: creating and opening a [`Ring`] on each backing, its roles, and the
//! producer and consumer sides with their waits, views, typed and async forms.
//!
//! `mod.rs` owns the life of a ring's header: the creator's initialisation and ready
//! publication, the attacher's bounded wait and validation. The protocol's memory and
//! handshake are `crate::ring`; OS objects are `crate::backing`; byte offsets are `layout`.

#[cfg(feature = "tokio")]
pub(crate) mod asynch;
#[cfg(feature = "tokio")]
pub(crate) mod asynch_typed;
pub mod at;
mod config;
mod consumer;
pub(crate) mod iter;
pub(crate) mod process;
mod producer;
pub(crate) mod region;
pub(crate) mod roles;
pub(crate) mod stale;
mod stream;
#[cfg(test)]
mod tests;
pub(crate) mod typed;
pub mod views;
pub mod wait;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub use crate::channel::wait::WaitStrategy;
pub use config::{DEFAULT_INIT_TIMEOUT, DEFAULT_SLOT_COUNT, DEFAULT_SLOT_SIZE, RingConfig};
pub use consumer::{Consumer, ReadGuard, RecvBatch};
pub use producer::{Producer, SendBatch, WriteGrant};

use crate::backing::file::FileMap;
use crate::backing::keylock::Mode;
use crate::backing::memfd::MemfdMap;
use crate::backing::sysv::{Key, Segment};
use crate::backing::{Backing, HeapRing};
use crate::channel::process::{self as owner, Liveness};
use crate::channel::region::Region;
use crate::error::{Error, Ident, Role};
use crate::layout::MessageType;
use crate::layout::{
    FLAG_PERSISTENT, Geometry, HEADER_SIZE, Header, HeaderProblem, LAYOUT_VERSION, MAGIC, READY,
};
use crate::ring::wake;
use roles::{holder_liveness, mapped, release_role};

/// A handle to a ring in shared memory, from which the [`Producer`] and [`Consumer`] are
/// claimed. Cloning it is cheap (the mapping is shared); the memory stays attached while any
/// clone, producer or consumer lives.
///
/// # Examples
///
/// Two threads here; two processes work the same way, each opening the ring by key.
///
/// ```
/// use shmpipe::{Key, Ring, RingConfig};
/// let ring = Ring::create(Key::Private, &RingConfig::new())?;
/// let mut tx = ring.producer()?;
/// let mut rx = ring.consumer()?;
/// tx.try_send(b"hello").unwrap();
/// let mut buf = [0u8; 64];
/// let n = rx.try_recv(&mut buf).unwrap();
/// assert_eq!(&buf[..n], b"hello");
/// ring.remove()?; // IPC_RMID: freed once everyone detaches
/// # Ok::<(), shmpipe::Error>(())
/// ```
#[derive(Clone)]
pub struct Ring {
    pub(crate) region: Arc<Region>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("ident", &self.region.ident())
            .field("geometry", self.region.geometry())
            .finish()
    }
}

/// The shared counters of a ring at one moment (see [`Ring::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingStatus {
    /// The producer's published tail (slot counter).
    pub tail: u64,
    /// The consumer's released head (slot counter).
    pub head: u64,
    /// `tail - head`: slots holding unreleased records.
    pub used_slots: u64,
    /// Messages published so far.
    pub sent: u64,
    /// Messages released so far.
    pub received: u64,
    /// Pid holding the producer role, 0 if none.
    pub producer_pid: u32,
    /// Pid holding the consumer role, 0 if none.
    pub consumer_pid: u32,
}

/// Writes a fresh header into new memory and wraps it as a ring: the end of every create but
/// the file's (whose header is written before the file gets its name). `persistent` is the
/// region's: whether claims mark the memory for removal.
fn fresh_ring(
    backing: Backing,
    g: Geometry,
    config: &RingConfig,
    key: Key,
    ident: Ident,
    persistent: bool,
) -> Ring {
    init_header(
        backing
            .header()
            .expect("a new ring's memory holds a header"),
        &g,
        config,
        key,
    );
    Ring {
        region: Arc::new(Region::new(backing, g, ident, persistent)),
    }
}

/// Writes a fresh header. The memory is zeroed and nobody else can see a ready word yet.
fn init_header(h: &Header, g: &Geometry, cfg: &RingConfig, key: Key) {
    let c = &h.config;
    // Relaxed throughout: the Release store of `ready` below publishes all of it (R1).
    // Magic goes first so a creator that dies here leaves a segment recognisably ours.
    c.magic.store(MAGIC, Ordering::Relaxed);
    c.version.store(LAYOUT_VERSION, Ordering::Relaxed);
    c.header_size.store(HEADER_SIZE as u32, Ordering::Relaxed);
    c.slot_size.store(g.slot_size, Ordering::Relaxed);
    c.slot_count.store(g.slot_count, Ordering::Relaxed);
    c.max_message.store(g.max_message, Ordering::Relaxed);
    let flags = if cfg.persistent { FLAG_PERSISTENT } else { 0 };
    c.flags.store(flags, Ordering::Relaxed);
    c.instance_id.store(random_u64(), Ordering::Relaxed);
    c.ring_size.store(g.ring_size(), Ordering::Relaxed);
    c.initial_index.store(cfg.initial_index, Ordering::Relaxed);
    c.creator_pid.store(std::process::id(), Ordering::Relaxed);
    c.key.store(key.raw() as u32, Ordering::Relaxed);
    // An untyped ring leaves the three type fields 0.
    if let Some(t) = g.message_type {
        c.type_size.store(t.size, Ordering::Relaxed);
        c.type_fingerprint.store(t.fingerprint, Ordering::Relaxed);
        c.type_align.store(t.align, Ordering::Relaxed);
    }
    // Counters; every other word of the two lines starts at 0, as the memory was zeroed.
    h.producer.tail.store(cfg.initial_index, Ordering::Relaxed);
    h.consumer.head.store(cfg.initial_index, Ordering::Relaxed);
    // R1 (Release): pairs with the Acquire load of `ready` in `wait_ready`.
    c.ready.store(READY, Ordering::Release);
}

/// A random instance id: from getrandom, or time and pid if the kernel has no entropy yet.
fn random_u64() -> u64 {
    let mut v = 0u64;
    // SAFETY: the buffer is the 8 bytes of `v`, writable for the whole call.
    let n = unsafe {
        libc::getrandom(
            (&raw mut v).cast(),
            std::mem::size_of::<u64>(),
            libc::GRND_NONBLOCK,
        )
    };
    if n != 8 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        v = t ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    }
    v
}

/// Checks, before anything reads it, that a ring's memory cannot kill the process with
/// `SIGBUS` (docs/DESIGN.md, "When memory disappears: SIGBUS"). Memory that can vanish under
/// the mapping (a file, huge pages) is refused on a thread with `SIGBUS` blocked, where the
/// kernel would kill the process at a fault. Huge pages are refused unless `accept_huge_pages`
/// (always for a ring we create), and accepted ones are touched page by page now, so a page
/// the pool cannot back is `Error::HugePages` here rather than a fault later.
fn check_memory(backing: &Backing, ident: Ident, accept_huge_pages: bool) -> Result<(), Error> {
    if !backing.can_fault() {
        return Ok(());
    }
    if crate::backing::sigbus::blocked() {
        return Err(Error::SigbusBlocked { ident });
    }
    if !backing.huge_pages() {
        return Ok(());
    }
    let page = backing
        .page_size()
        .expect("a huge-page backing is a mapping");
    if !accept_huge_pages {
        return Err(Error::HugePagesNotAccepted {
            ident,
            page_size: page,
        });
    }
    let (Some(base), Some(entry)) = (backing.mapping(), backing.protection()) else {
        unreachable!("a huge-page backing is a protected mapping")
    };
    // SAFETY: `base` is the start of the backing's mapping, registered as `entry` (whose
    // length is the mapping's, in whole pages), mapped while `backing` is borrowed; SIGBUS is
    // not blocked on this thread (checked above).
    if unsafe { crate::backing::sigbus::prefault(base, entry.len(), page, entry) } {
        return Ok(());
    }
    Err(Error::HugePages {
        ident,
        size: entry.len(),
        source: std::io::Error::from_raw_os_error(libc::ENOMEM),
        hint: "a page of the ring could not be backed when touched: the creator did not \
               reserve its huge pages (SHM_NORESERVE) or a page was removed, and the pool \
               (HugePages_Free in /proc/meminfo) is empty",
    })
}

/// Waits (bounded) for the creator's ready word, then validates the header against the kernel's
/// size of the memory, and returns the ring's region.
pub(crate) fn attach(
    backing: Backing,
    ident: Ident,
    timeout: Duration,
    accept_huge_pages: bool,
) -> Result<Region, Error> {
    check_memory(&backing, ident, accept_huge_pages)?;
    let actual = backing.len() as u64;
    let Some(h) = backing.header() else {
        return Err(Error::SegmentTooSmall {
            ident,
            claimed: HEADER_SIZE as u64,
            actual,
        });
    };
    let start = Instant::now();
    let mut pause = Duration::from_micros(50);
    loop {
        // R1 (Acquire): pairs with the creator's Release store of READY in `init_header`.
        let ready = h.config.ready.load(Ordering::Acquire);
        if ready == READY {
            break;
        }
        let magic = h.config.magic.load(Ordering::Relaxed);
        if magic != 0 && magic != MAGIC {
            return Err(Error::NotShmpipe {
                ident,
                found: magic,
            });
        }
        if ready != 0 {
            return Err(Error::BadHeader {
                ident,
                what: format!("ready word {ready:#x}"),
            });
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(Error::InitTimeout { ident, waited });
        }
        std::thread::sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(Duration::from_millis(5));
    }
    let snap = h.config.snapshot();
    let geometry = snap.validate(actual).map_err(|p| match p {
        HeaderProblem::Magic(found) => Error::NotShmpipe { ident, found },
        HeaderProblem::Version(found) => Error::VersionMismatch {
            ident,
            found,
            expected: LAYOUT_VERSION,
        },
        HeaderProblem::TooSmall { claimed } => Error::SegmentTooSmall {
            ident,
            claimed,
            actual,
        },
        HeaderProblem::Field(what) => Error::BadHeader { ident, what },
    })?;
    let persistent = snap.flags & FLAG_PERSISTENT != 0;
    Ok(Region::new(backing, geometry, ident, persistent))
}

impl Ring {
    /// Creates a new ring at `key` (exclusively: `IPC_CREAT | IPC_EXCL`) and initialises its
    /// header. Use [`Key::Private`] for a ring shared across `fork` or by shmid.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for an impossible shape; [`Error::Exists`] if the key is taken;
    /// [`Error::HugePages`] if [`RingConfig::huge_pages`] is set and the kernel refuses them;
    /// the other segment errors of [`Segment::create`].
    pub(crate) fn create_segment(key: Key, config: &RingConfig) -> Result<Ring, Error> {
        let g = config.geometry()?;
        let size = ring_bytes(&g)?;
        let seg = if config.huge_pages {
            Segment::create_huge_pages(key, size, config.mode)?
        } else {
            Segment::create(key, size, config.mode)?
        };
        let ident = seg.ident();
        let seg = Backing::Segment(seg);
        if let Err(e) = check_memory(&seg, ident, true) {
            // Our own fresh segment, unusable here: do not leave it at the key.
            let _ = crate::backing::sysv::remove_id(ident.shmid.expect("a segment has a shmid"));
            return Err(e);
        }
        Ok(fresh_ring(seg, g, config, key, ident, config.persistent))
    }

    /// Creates a ring in a new anonymous memfd, sealed against resizing, with the configured
    /// mode ([`Memfd`](crate::Memfd)).
    pub(crate) fn create_memfd(config: &RingConfig) -> Result<Ring, Error> {
        let g = config.geometry()?;
        let size = ring_bytes(&g)?;
        let map = MemfdMap::create(size, config.huge_pages)?;
        // A memfd starts as 0777: give it the configured mode, which `open_memfd` checks.
        crate::backing::access::set_mode(map.fd(), config.mode, Ident::default())?;
        let backing = Backing::Memfd(map);
        check_memory(&backing, Ident::default(), true)?;
        Ok(fresh_ring(
            backing,
            g,
            config,
            Key::Private,
            Ident::default(),
            true,
        ))
    }

    /// Opens a ring from a memfd that [`Memfd`](crate::Memfd) made, with the opener's options
    /// of `config`: the owners and the mode it accepts ([`RingConfig::accept_owner`],
    /// [`RingConfig::mode`]; a memfd another user created, its `st_uid`, is refused unless that
    /// user is accepted), [`RingConfig::init_timeout`], and [`RingConfig::accept_huge_pages`] (a
    /// hugetlb memfd is refused without it).
    ///
    /// # Errors
    ///
    /// As [`Ring::open`], and [`Error::HugePages`] if an accepted hugetlb memfd has pages
    /// the pool cannot back.
    pub(crate) fn open_memfd(fd: std::os::fd::OwnedFd, config: &RingConfig) -> Result<Ring, Error> {
        let expect = config.expect();
        let map = MemfdMap::open(fd, &|st| expect.check_stat(Ident::default(), st))?;
        let backing = Backing::Memfd(map);
        Ok(Ring {
            region: Arc::new(attach(
                backing,
                Ident::default(),
                config.init_timeout,
                config.accepts_huge_pages(),
            )?),
        })
    }

    /// The memfd of a ring made at [`Memfd`](crate::Memfd) or opened from one, to hand to the
    /// other process (which opens its [`OwnedFd`](std::os::fd::OwnedFd) with [`Ring::open`]);
    /// `None` for a SysV, file or heap ring.
    pub fn memfd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match self.region.backing() {
            Backing::Memfd(m) => Some(m.fd()),
            _ => None,
        }
    }

    /// Creates a ring in a new file at `path` (`MAP_SHARED`), built under a temporary name
    /// beside it and linked into place once its header is complete, its blocks allocated up
    /// front, its permissions [`RingConfig::mode`] ([`Ring::create`] has the rest).
    pub(crate) fn create_file(path: &Path, config: &RingConfig) -> Result<Ring, Error> {
        // A file can shrink under its mapping: a thread with SIGBUS blocked would die of it.
        if crate::backing::sigbus::blocked() {
            return Err(Error::SigbusBlocked {
                ident: crate::backing::file::ident(path),
            });
        }
        if config.huge_pages {
            return Err(Error::InvalidConfig {
                what: "huge pages for a file ring come from its filesystem (a hugetlbfs \
                       mount), not from an option; use a SysV or memfd ring"
                    .into(),
            });
        }
        let g = config.geometry()?;
        let size = ring_bytes(&g)?;
        let new = FileMap::create(path, size, config.mode)?;
        init_header(
            crate::backing::file_header(new.map()).expect("the file holds a header"),
            &g,
            config,
            Key::Private,
        );
        let map = new.link()?;
        let ident = crate::backing::file::ident(map.path());
        Ok(Ring {
            region: Arc::new(Region::new(Backing::File(map), g, ident, config.persistent)),
        })
    }

    /// Opens the ring in the file at `path`, validating its header against the file's real
    /// size (checked before mapping), as [`Ring::open`] describes. Accepts the owners and the
    /// mode of `config`, checked on the descriptor opened (`fstat`) before it is mapped, and
    /// waits its init timeout. A later truncation becomes [`Corruption::MemoryLost`] (sticky,
    /// [`LostMemory::File`](crate::LostMemory::File)) instead of `SIGBUS`.
    pub(crate) fn open_file(path: &Path, config: &RingConfig) -> Result<Ring, Error> {
        let expect = config.expect();
        let map = FileMap::open(path, &|st| {
            expect.check_stat(crate::backing::file::ident(path), st)
        })?;
        let ident = crate::backing::file::ident(map.path());
        Ok(Ring {
            region: Arc::new(attach(
                Backing::File(map),
                ident,
                config.init_timeout,
                false,
            )?),
        })
    }

    /// Opens the ring file at `path`, or creates it if there is none, so that either side may
    /// start first. An existing ring must have the shape fields `config` demands (`crate::at`). A
    /// non-persistent ring file left by a lone side that died before its peer came (a role held by
    /// a dead process, none by a live one) is removed and created afresh, as
    /// [`Ring::open_or_create`] recycles an orphan segment; a persistent one is opened as it is. An
    /// existing file is opened as [`Ring::open_file`] opens it, with `config`'s mode and accepted
    /// owners, before anything else: another user's file is refused, never removed.
    ///
    /// # Errors
    ///
    /// As [`Ring::create_file`] and [`Ring::open_file`] ([`Error::ForeignOwner`] included),
    /// and [`Error::ConfigMismatch`] if the existing ring differs in a shape field `config` set
    /// explicitly. The decision is made holding the lock file `.<name>.shmpipe-lock`
    /// beside `path` (docs/DESIGN.md, "Recycling a key"): [`Error::Locked`] if another process
    /// held it for 5 s.
    pub(crate) fn open_or_create_file(path: &Path, config: &RingConfig) -> Result<Ring, Error> {
        config.geometry()?;
        // As `open_or_create`: the decision is made holding the path's lock exclusively, so of
        // two sides restarting at once one recycles and the other opens what it created, and
        // no unlink (here or in a claim) can remove the new file by mistake.
        let _lock = crate::backing::keylock::lock_file(
            path,
            Mode::Exclusive,
            crate::backing::keylock::LOCK_TIMEOUT,
        )?;
        let mut last = None;
        // The file can vanish between a failed create and the open (both sides joined and it
        // was unlinked, or its owner removed it): then creating is right again.
        for _ in 0..8 {
            match Ring::create_file(path, config) {
                Err(Error::FileExists { .. }) => {}
                other => return other,
            }
            // The owner is checked before anything else, so a foreign file is never removed.
            match Ring::open_file(path, config) {
                Ok(ring) if ring.is_orphan_file() => {
                    // Left by a lone side that died before its peer came: start afresh, as
                    // `open_or_create` recycles an orphan segment.
                    if let Backing::File(f) = ring.region.backing() {
                        f.unlink_locked()?;
                    }
                    continue;
                }
                Ok(ring) => {
                    config.check_demanded(&ring)?;
                    return Ok(ring);
                }
                Err(e @ Error::FileNotFound { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("loop ran"))
    }

    /// Whether a file ring is an orphan: not persistent, some role was held by a process that
    /// is dead, and no role is held by a live one. Only a lone side that died leaves that (once
    /// both sides are in, a non-persistent file is unlinked).
    fn is_orphan_file(&self) -> bool {
        if self.region.persistent() || self.path().is_none() {
            return false;
        }
        let h = self.region.header();
        // O1 (Acquire): pairs with the holders' claims and releases.
        let holders = [
            (Role::Producer, h.producer.owner.load(Ordering::Acquire)),
            (Role::Consumer, h.consumer.owner.load(Ordering::Acquire)),
        ];
        let held: Vec<Liveness> = holders
            .iter()
            .filter(|&&(_, id)| id != 0)
            .map(|&(role, id)| holder_liveness(&self.region, role, id))
            .collect();
        // A holder in another pid namespace (Unknown) keeps the file, as a live one does.
        !held.is_empty() && held.iter().all(|&l| l == Liveness::Dead)
    }

    /// The path of a file ring, made or opened at a path (it may have been unlinked since);
    /// `None` for other rings.
    pub fn path(&self) -> Option<&Path> {
        match self.region.backing() {
            Backing::File(f) => Some(f.path()),
            _ => None,
        }
    }

    /// Whether the ring is still reachable by its name: a segment's key not yet marked for
    /// removal, or a file ring's path still naming its file. `false` for memfd and in-process
    /// rings, which have no name.
    pub fn is_linked(&self) -> bool {
        match self.region.backing() {
            Backing::File(f) => f.linked(),
            Backing::Segment(s) => s.stat().is_ok_and(|st| !st.marked_for_removal),
            _ => false,
        }
    }

    /// Opens the ring at `key`, waiting up to [`RingConfig::init_timeout`] for its creator to
    /// finish initialising, and validates its header, with the opener's options of `config`:
    /// the owners and the mode it accepts
    /// ([`RingConfig::accept_owner`], [`RingConfig::mode`]), [`RingConfig::init_timeout`], and
    /// [`RingConfig::accept_huge_pages`] (a segment on huge pages is refused without it). The
    /// shape is checked by the caller ([`RingConfig::check_demanded`]). The segment's owner,
    /// creator and mode come from `IPC_STAT` on the segment attached, before a byte of it is read.
    ///
    /// # Errors
    ///
    /// As [`Ring::open`], and [`Error::HugePages`] if an accepted huge-page segment has pages
    /// the pool cannot back.
    pub(crate) fn open_segment(key: Key, config: &RingConfig) -> Result<Ring, Error> {
        // The attach is made under the key's lock, shared: a recycler of the key (which holds
        // it exclusively) then either sees this attach as a user, or has finished and the key
        // names the new ring. Once attached, the attach count speaks for us.
        let seg = {
            let wait = crate::backing::keylock::LOCK_TIMEOUT + config.init_timeout;
            let _lock = crate::backing::keylock::lock_key(key, Mode::Shared, wait)?;
            Segment::open(key)?
        };
        Ring::attach_segment(seg, config)
    }

    /// [`Ring::open_segment`] for a caller that holds the key's lock already.
    fn open_locked(key: Key, config: &RingConfig) -> Result<Ring, Error> {
        Ring::attach_segment(Segment::open(key)?, config)
    }

    /// Opens a ring by shmid, e.g. one created with [`Key::Private`] by another process, with
    /// the opener's options of `config` (see [`Ring::open_segment`]).
    ///
    /// # Errors
    ///
    /// As [`Ring::open_segment`].
    pub(crate) fn open_shmid(shmid: i32, config: &RingConfig) -> Result<Ring, Error> {
        Ring::attach_segment(Segment::attach_id(shmid)?, config)
    }

    /// Checks who owns an attached segment, then waits for its header and validates it.
    fn attach_segment(seg: Segment, config: &RingConfig) -> Result<Ring, Error> {
        let ident = seg.ident();
        config.expect().check_segment(ident, &seg.stat()?)?;
        Ok(Ring {
            region: Arc::new(attach(
                Backing::Segment(seg),
                ident,
                config.init_timeout,
                config.accepts_huge_pages(),
            )?),
        })
    }

    /// Creates the ring at `key`, or opens it if another process created it first, so that
    /// either side may start first. An existing ring must have the shape fields `config` demands
    /// (`crate::at`). A stale ring at the key (see
    /// [`gc::Class::is_stale`](crate::gc::Class::is_stale): nobody attached, no live holder,
    /// nothing waiting to be read, or abandoned mid-initialisation) is removed and recreated if it
    /// is ours (owner and creator our effective uid, or accepted: [`RingConfig::accept_owner`]); a
    /// segment that is not a shmpipe ring, or is another user's, is refused, never touched. An
    /// existing ring is opened as [`Ring::open_segment`] opens it, with `config`'s mode and
    /// accepted owners.
    ///
    /// # Errors
    ///
    /// As [`Ring::create`] and [`Ring::open`] ([`Error::ForeignOwner`] included), and
    /// [`Error::ConfigMismatch`] if the existing ring differs in a shape field `config` set
    /// explicitly. [`Error::Locked`] if another process held the key's lock for 5 s plus
    /// the init timeout (docs/DESIGN.md, "Recycling a key": the whole decision is made under
    /// that lock, so two sides restarting at once, `gc` and `stat` never split them across two
    /// segments); [`Error::File`] if the lock file in `/dev/shm` cannot be opened or created.
    pub(crate) fn open_or_create_segment(key: Key, config: &RingConfig) -> Result<Ring, Error> {
        config.geometry()?;
        // The whole decision (create, or classify and recycle, or open) is made holding the
        // key's lock exclusively (docs/DESIGN.md, "Recycling a key"): no other
        // `open_or_create`, `gc` removal or observer runs meanwhile, and every attach counted
        // by the classification is a user's. A private key names nothing to race for.
        let wait = crate::backing::keylock::LOCK_TIMEOUT + config.init_timeout;
        let _lock = crate::backing::keylock::lock_key(key, Mode::Exclusive, wait)?;
        // The segment can vanish between a failed create and the open (its owner removed it
        // with `Ring::remove`, which takes no lock): then creating is right again. A few
        // rounds settle any such race.
        let mut last = None;
        for _ in 0..8 {
            match Ring::create_segment(key, config) {
                Err(Error::Exists { .. }) => {}
                other => return other,
            }
            // A stale ring (nobody attached, its holders dead or gone and nothing pending, or
            // its creator died mid-init) of ours is removed and created afresh. Anything else
            // at the key is opened (and a foreign segment refused) below.
            if stale::recycle_if_stale_locked(key, &config.accepted_owners) {
                continue;
            }
            match Ring::open_locked(key, config) {
                Ok(ring) => {
                    config.check_demanded(&ring)?;
                    return Ok(ring);
                }
                Err(e @ Error::NotFound { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("loop ran"))
    }

    /// A ring on the heap of this process, for two threads (and for tests under Miri, which
    /// cannot call shmget). It runs exactly the same protocol as a shared-memory ring.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for an impossible shape or failed allocation, or if
    /// [`RingConfig::huge_pages`] is set (huge pages need a segment; this ring is on the heap).
    pub(crate) fn create_heap(config: &RingConfig) -> Result<Ring, Error> {
        let g = config.geometry()?;
        if config.huge_pages {
            return Err(Error::InvalidConfig {
                what: "huge pages need a SysV segment (Ring::create); an in-process ring lives \
                       on the heap"
                    .into(),
            });
        }
        let heap = HeapRing::new(&g).ok_or_else(|| Error::InvalidConfig {
            what: format!("cannot allocate {} bytes", g.ring_size()),
        })?;
        Ok(fresh_ring(
            Backing::Heap(heap),
            g,
            config,
            Key::Private,
            Ident::default(),
            true,
        ))
    }

    /// Claims the producer role.
    ///
    /// # Errors
    ///
    /// [`Error::RoleTaken`] if a producer is attached (in any process), alive or dead;
    /// [`Error::Corrupted`] if the shared indices are inconsistent; [`Error::SigbusBlocked`]
    /// for a file or huge-page ring on a thread with `SIGBUS` blocked.
    pub fn producer(&self) -> Result<Producer, Error> {
        self.claim_producer(false)
    }

    /// Claims the consumer role.
    ///
    /// # Errors
    ///
    /// [`Error::RoleTaken`] if a consumer is attached (in any process), alive or dead;
    /// [`Error::Corrupted`] if the shared indices are inconsistent; [`Error::SigbusBlocked`]
    /// for a file or huge-page ring on a thread with `SIGBUS` blocked.
    pub fn consumer(&self) -> Result<Consumer, Error> {
        self.claim_consumer(false)
    }

    /// Claims the producer role, taking it over from a holder that died without closing. The
    /// kernel must confirm the death (the holder's pid and start time are gone from `/proc`, or
    /// the process no longer maps the ring: it `exec`ed); a slow or stopped holder is alive,
    /// and one in another pid namespace is never judged. The stream continues after the last
    /// message the dead producer published; anything it had written but not published is
    /// overwritten.
    ///
    /// # Errors
    ///
    /// [`Error::RoleTaken`] (with `holder` [`Liveness::Alive`](crate::Liveness::Alive), or
    /// [`Liveness::Unknown`](crate::Liveness::Unknown) for a holder in another pid namespace)
    /// unless the kernel confirms the holder's death;
    /// [`Error::Corrupted`] if the shared indices are inconsistent.
    pub fn take_over_producer(&self) -> Result<Producer, Error> {
        self.claim_producer(true)
    }

    /// Claims the consumer role, taking it over from a holder that died without closing (see
    /// [`Ring::take_over_producer`]). Messages the dead consumer had read but not released are
    /// received again.
    ///
    /// # Errors
    ///
    /// As [`Ring::take_over_producer`].
    pub fn take_over_consumer(&self) -> Result<Consumer, Error> {
        self.claim_consumer(true)
    }

    fn claim_producer(&self, take_over: bool) -> Result<Producer, Error> {
        let h = self.region.header();
        let me = self.claim(Role::Producer, take_over)?;
        let p = Producer::new(self.region.clone(), me);
        if p.is_err() {
            let _ = release_role(&h.producer.owner, me);
        }
        p
    }

    fn claim_consumer(&self, take_over: bool) -> Result<Consumer, Error> {
        let h = self.region.header();
        let me = self.claim(Role::Consumer, take_over)?;
        match Consumer::new(self.region.clone(), me) {
            Ok(c) => {
                // A new consumer reopens the ring for the producer, once its checks passed: a
                // claim refused on corrupt indices leaves an earlier close standing.
                h.producer.consumer_closed.store(0, Ordering::Release);
                Ok(c)
            }
            Err(e) => {
                let _ = release_role(&h.consumer.owner, me);
                Err(e)
            }
        }
    }

    /// Pre-faults every page of the ring and locks it in RAM (`mlock`), so that neither the
    /// hot path nor a wake-up waits for a page fault or swap. Either side may call it after
    /// creating or opening the ring; it locks this process's mapping only (the peer decides for
    /// its own). The lock lasts until the last clone of this `Ring` (and every producer or
    /// consumer from it) is dropped, when the segment is detached, which unlocks it. See
    /// [`Segment::lock_memory`].
    ///
    /// # Errors
    ///
    /// [`Error::LockMemory`]: `EPERM` or `ENOMEM` when `RLIMIT_MEMLOCK` (`ulimit -l`) is too
    /// small for the ring and the process lacks `CAP_IPC_LOCK`; for an in-process ring
    /// (always: its heap memory is not locked, since freeing it would leave locks on pages the
    /// allocator reuses), with an [`Unsupported`](std::io::ErrorKind::Unsupported) source.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmpipe::{Error, Key, Ring, RingConfig};
    /// let ring = Ring::create(Key::Private, &RingConfig::new().slot_count(1024))?;
    /// match ring.lock_memory() {
    ///     Ok(()) => {}
    ///     Err(Error::LockMemory { hint, .. }) => eprintln!("running unlocked: {hint}"),
    ///     Err(e) => return Err(e),
    /// }
    /// ring.remove()?;
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    pub fn lock_memory(&self) -> Result<(), Error> {
        match self.region.backing() {
            Backing::Segment(s) => s.lock_memory(),
            // SAFETY: the mapping lives as long as the region, which `self` holds.
            Backing::Memfd(m) => unsafe {
                crate::backing::sysv::lock_range(self.ident(), m.as_ptr(), m.len())
            },
            // SAFETY: as above.
            Backing::File(f) => unsafe {
                crate::backing::sysv::lock_range(self.ident(), f.as_ptr(), f.len())
            },
            Backing::Heap(_) => Err(Error::LockMemory {
                ident: self.ident(),
                len: self.region.backing().len(),
                source: std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "an in-process ring lives on the heap",
                ),
                hint: "only rings in a SysV segment can be locked",
            }),
        }
    }

    /// The key and shmid (both `None` for an in-process ring).
    pub fn ident(&self) -> Ident {
        self.region.ident()
    }

    /// The segment's id, if the ring lives in a SysV segment.
    pub fn shmid(&self) -> Option<i32> {
        self.segment().map(Segment::shmid)
    }

    /// The underlying segment (for `stat`), if the ring lives in one.
    pub fn segment(&self) -> Option<&Segment> {
        match self.region.backing() {
            Backing::Segment(s) => Some(s),
            Backing::Heap(_) | Backing::Memfd(_) | Backing::File(_) => None,
        }
    }

    /// Marks the segment for removal (`IPC_RMID`): its key disappears now and the kernel frees
    /// it when the last process detaches, so nothing is left behind even if both sides crash
    /// later. Processes already attached carry on; a process that has the shmid can still
    /// attach on Linux. For a file ring, unlinks its path if it still names the ring's file
    /// (the memory stays until both sides unmap it). Does nothing for an in-process or memfd
    /// ring (nothing to remove: the memory goes with its last descriptor and mapping).
    ///
    /// # Errors
    ///
    /// As [`Segment::remove`]; [`Error::File`] if `unlink` fails.
    pub fn remove(&self) -> Result<(), Error> {
        match self.region.backing() {
            Backing::Segment(s) => s.remove(),
            Backing::File(f) => f.unlink(),
            Backing::Heap(_) | Backing::Memfd(_) => Ok(()),
        }
    }

    /// Whether the ring was created persistent ([`RingConfig::persistent`]): then it is never
    /// marked for removal automatically. An in-process ring has no segment and counts as
    /// persistent.
    pub fn is_persistent(&self) -> bool {
        self.region.persistent()
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> usize {
        self.region.geometry().slot_size as usize
    }

    /// Slots in the array.
    pub fn slot_count(&self) -> usize {
        self.region.geometry().slot_count as usize
    }

    /// Largest message in bytes.
    pub fn max_message(&self) -> usize {
        self.region.geometry().max_message as usize
    }

    /// The message type a typed ring records ([`RingConfig::message_type`]), as validated at
    /// attach; `None` for a byte ring.
    pub fn message_type(&self) -> Option<MessageType> {
        self.region.geometry().message_type
    }

    /// Slots a message of `len` bytes occupies: `ceil((RECORD_HEADER + len) / slot_size)`.
    pub fn slots_for(&self, len: usize) -> u64 {
        let g = self.region.geometry();
        (len as u64 + crate::layout::RECORD_HEADER as u64).div_ceil(u64::from(g.slot_size))
    }

    /// A snapshot of the shared counters, for monitoring. The values are whatever the
    /// segment holds now (each read once, not validated): do not base decisions on them.
    pub fn status(&self) -> RingStatus {
        let h = self.region.header();
        // Relaxed: a monitoring snapshot; no data is read on the strength of these values.
        let tail = h.producer.tail.load(Ordering::Relaxed);
        let head = h.consumer.head.load(Ordering::Relaxed);
        RingStatus {
            tail,
            head,
            used_slots: tail.wrapping_sub(head),
            sent: h.producer.sent.load(Ordering::Relaxed),
            received: h.consumer.received.load(Ordering::Relaxed),
            producer_pid: owner::pid_of(h.producer.owner.load(Ordering::Relaxed)),
            consumer_pid: owner::pid_of(h.consumer.owner.load(Ordering::Relaxed)),
        }
    }

    /// The processes holding the producer and consumer roles, with the kernel's word on
    /// whether each lives (one small `/proc` read per holder); `None` where a role is free. For
    /// monitoring, like [`Ring::status`].
    pub fn holders(&self) -> (Option<roles::Holder>, Option<roles::Holder>) {
        roles::holders(self.region.header(), mapped(&self.region))
    }

    /// The random id the creator gave this ring.
    pub fn instance_id(&self) -> u64 {
        self.region
            .header()
            .config
            .instance_id
            .load(Ordering::Relaxed)
    }
}

/// The ring's size in bytes as a `usize`, for `shmget`, `ftruncate` and `mmap`.
fn ring_bytes(g: &Geometry) -> Result<usize, Error> {
    usize::try_from(g.ring_size()).map_err(|_| Error::InvalidConfig {
        what: format!(
            "ring of {} bytes does not fit this address space",
            g.ring_size()
        ),
    })
}
