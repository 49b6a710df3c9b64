//! Rings: the configuration, making and joining a ring in each place, what a ring says about
//! itself, handing a memfd to another process, `ftok` and `gc`.

use std::ffi::{CStr, c_char, c_int};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use shmpipe_rs::{Create, Error, Heap, Key, Memfd, Open, OpenOrCreate, Ring, RingConfig, Shmid};
use shmpipe_rs::{gc, memfd};

use crate::consumer::ShmpipeConsumer;
use crate::error::{Fail, ShmpipeStatus, fail, guard, null};
use crate::guard_out;
use crate::producer::ShmpipeProducer;

/// `shmpipe_config.flags`: the ring stays until removed (`shmpipe_ring_remove`), instead of
/// going once both roles were claimed and both sides are gone.
pub const SHMPIPE_PERSISTENT: u32 = 1;
/// `shmpipe_config.flags`: create the ring on huge pages (or fail with `SHMPIPE_STATUS_HUGE_PAGES`).
pub const SHMPIPE_HUGE_PAGES: u32 = 2;
/// `shmpipe_config.flags`: an opener accepts a ring on huge pages made by another process.
pub const SHMPIPE_ACCEPT_HUGE_PAGES: u32 = 4;
/// `shmpipe_config.flags`: the shape fields set are for creating only; an opener joins a ring
/// of any shape.
pub const SHMPIPE_JOIN_ANY_SHAPE: u32 = 8;
const ALL_FLAGS: u32 =
    SHMPIPE_PERSISTENT | SHMPIPE_HUGE_PAGES | SHMPIPE_ACCEPT_HUGE_PAGES | SHMPIPE_JOIN_ANY_SHAPE;

/// How a ring is made or joined. All zeros (`shmpipe_config cfg = {0};`, or a NULL pointer)
/// is the default: 4096 slots of 64 bytes, the largest maximum message the shape allows,
/// mode 0600, a 1 s init timeout. A zero field keeps its default; a shape field that is set
/// (`slot_size`, `slot_count`, `max_message`) is also demanded of an existing ring an opener
/// joins (`SHMPIPE_STATUS_CONFIG_MISMATCH` if it differs), unless `SHMPIPE_JOIN_ANY_SHAPE`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ShmpipeConfig {
    /// Bytes per slot: a power of two from 8 to 1 MiB (0: 64).
    pub slot_size: u32,
    /// Number of slots: a power of two, at most 2^30 (0: 4096).
    pub slot_count: u32,
    /// Largest message in bytes (0: half the ring less a record header).
    pub max_message: u64,
    /// Permission bits of a ring created, and the widest mode accepted on a ring of ours that
    /// is opened (0: 0600).
    pub mode: u32,
    /// How long an opener waits for the creator to finish, in milliseconds (0: 1000).
    pub init_timeout_ms: u32,
    /// Where the free-running counters start (0: 0).
    pub initial_index: u64,
    /// `SHMPIPE_PERSISTENT`, `SHMPIPE_HUGE_PAGES`, `SHMPIPE_ACCEPT_HUGE_PAGES`,
    /// `SHMPIPE_JOIN_ANY_SHAPE`, or'ed; other bits are `SHMPIPE_STATUS_INVALID_ARGUMENT`.
    pub flags: u32,
    /// Number of uids in `accept_owners`.
    pub accept_owners_len: u32,
    /// Users besides ourselves whose rings an opener accepts (NULL if `accept_owners_len` is
    /// 0): by default a ring another user owns or created is refused (`SHMPIPE_STATUS_FOREIGN_OWNER`).
    pub accept_owners: *const u32,
}

impl ShmpipeConfig {
    /// The Rust configuration this one says.
    ///
    /// # Safety
    ///
    /// `accept_owners` points to `accept_owners_len` readable uids, or the length is 0.
    unsafe fn to_rust(self) -> Result<RingConfig, Fail> {
        let mut cfg = RingConfig::new();
        if self.slot_size != 0 {
            cfg = cfg.slot_size(self.slot_size);
        }
        if self.slot_count != 0 {
            cfg = cfg.slot_count(self.slot_count);
        }
        if self.max_message != 0 {
            let max = usize::try_from(self.max_message).unwrap_or(usize::MAX);
            cfg = cfg.max_message(max);
        }
        if self.mode != 0 {
            cfg = cfg.mode(self.mode);
        }
        if self.init_timeout_ms != 0 {
            cfg = cfg.init_timeout(Duration::from_millis(self.init_timeout_ms.into()));
        }
        cfg = cfg.initial_index(self.initial_index);
        if self.flags & !ALL_FLAGS != 0 {
            return Err(Fail::new(
                ShmpipeStatus::InvalidArgument,
                format!("shmpipe_config.flags has unknown bits {:#x}", self.flags),
            ));
        }
        cfg = cfg
            .persistent(self.flags & SHMPIPE_PERSISTENT != 0)
            .huge_pages(self.flags & SHMPIPE_HUGE_PAGES != 0)
            .accept_huge_pages(self.flags & SHMPIPE_ACCEPT_HUGE_PAGES != 0);
        if self.flags & SHMPIPE_JOIN_ANY_SHAPE != 0 {
            cfg = cfg.join_any_shape();
        }
        // SAFETY: `accept_owners_len` readable uids (the caller).
        let owners = unsafe {
            crate::bytes(
                self.accept_owners.cast::<u8>(),
                (self.accept_owners_len as usize).saturating_mul(size_of::<u32>()),
                "shmpipe_config.accept_owners",
            )?
        };
        for uid in owners.chunks_exact(size_of::<u32>()) {
            cfg = cfg.accept_owner(u32::from_ne_bytes(uid.try_into().expect("4 bytes")));
        }
        Ok(cfg)
    }
}

/// A ring: made or joined by one of the `shmpipe_ring_create_*` / `_open_*` /
/// `_open_or_create_*` functions, freed by `shmpipe_ring_close`. Producers and consumers
/// claimed from it keep the memory mapped on their own, so the ring handle may be closed
/// first. May be used by several threads at once.
pub struct ShmpipeRing {
    ring: Ring,
}

/// What a ring is: its shape and where it lives (`shmpipe_ring_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ShmpipeRingInfo {
    /// Bytes per slot.
    pub slot_size: u64,
    /// Slots in the ring.
    pub slot_count: u64,
    /// Largest message the ring carries.
    pub max_message: u64,
    /// The SysV segment's id, or -1 for a memfd, file or heap ring.
    pub shmid: i32,
    /// The memfd (owned by the ring handle: do not close it), or -1.
    pub memfd: i32,
    /// 1 if the ring stays until removed.
    pub persistent: u32,
}

/// The shared counters of a ring at one moment (`shmpipe_ring_stats`). They are read from
/// memory the peer can write: information, not something to rely on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ShmpipeStats {
    /// The producer's published tail (a slot counter).
    pub tail: u64,
    /// The consumer's released head (a slot counter).
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

/// The caller's configuration, or the defaults for NULL.
///
/// # Safety
///
/// Unless NULL, `config` points to a readable `shmpipe_config` (whose `accept_owners` holds
/// `accept_owners_len` uids).
unsafe fn config(config: *const ShmpipeConfig) -> Result<RingConfig, Fail> {
    if config.is_null() {
        return Ok(RingConfig::new());
    }
    // SAFETY: non-NULL and readable (the caller); plain integers and a pointer, any bits valid.
    let c = unsafe { config.read() };
    // SAFETY: as the caller promises of `config`.
    unsafe { c.to_rust() }
}

/// The caller's NUL-terminated path.
///
/// # Safety
///
/// Unless NULL, `path` points to a NUL-terminated string.
unsafe fn path<'a>(path: *const c_char) -> Result<&'a Path, Fail> {
    if path.is_null() {
        return Err(null("path"));
    }
    // SAFETY: non-NULL and NUL-terminated (the caller).
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    if bytes.is_empty() {
        return Err(Fail::new(ShmpipeStatus::InvalidArgument, "path is empty"));
    }
    Ok(Path::new(std::ffi::OsStr::from_bytes(bytes)))
}

/// Makes or joins a ring with `make` and hands it to the caller at `out`.
///
/// # Safety
///
/// As [`config`] for `cfg`; `out` is NULL or valid for a write of a pointer.
unsafe fn ring_at(
    cfg: *const ShmpipeConfig,
    out: *mut *mut ShmpipeRing,
    make: impl FnOnce(&RingConfig) -> Result<Ring, Fail>,
) -> ShmpipeStatus {
    // SAFETY: `out` and `cfg` as the caller promises.
    unsafe {
        guard_out(out, "out", || {
            let cfg = config(cfg)?;
            let ring = make(&cfg)?;
            Ok(Box::into_raw(Box::new(ShmpipeRing { ring })))
        })
    }
}

/// Which of the three calls makes or joins a ring, at a place that takes all three (a key, a
/// path).
#[derive(Clone, Copy, Debug)]
enum Make {
    Create,
    Open,
    OpenOrCreate,
}

impl Make {
    fn at(self, at: impl Create + Open + OpenOrCreate, cfg: &RingConfig) -> Result<Ring, Fail> {
        match self {
            Make::Create => Ring::create(at, cfg),
            Make::Open => Ring::open(at, cfg),
            Make::OpenOrCreate => Ring::open_or_create(at, cfg),
        }
        .map_err(fail)
    }
}

/// The ring at `key`, made or joined as `how` says.
///
/// # Safety
///
/// As `shmpipe_ring_create_key`.
unsafe fn at_key(
    how: Make,
    key: i32,
    cfg: *const ShmpipeConfig,
    out: *mut *mut ShmpipeRing,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { ring_at(cfg, out, |c| how.at(Key::new(key), c)) }
}

/// The ring file at `path`, made or joined as `how` says.
///
/// # Safety
///
/// As `shmpipe_ring_create_path`.
unsafe fn at_path(
    how: Make,
    path: *const c_char,
    cfg: *const ShmpipeConfig,
    out: *mut *mut ShmpipeRing,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { ring_at(cfg, out, |c| how.at(self::path(path)?, c)) }
}

/// Creates a new ring in a SysV segment at `key` (exclusively: `SHMPIPE_STATUS_EXISTS` if the key
/// is taken); key 0 (`IPC_PRIVATE`) makes a segment only reachable by its shmid
/// (`shmpipe_ring_info`). `config` may be NULL for the defaults. On success `*out` is the new
/// ring; on failure it is untouched.
///
/// # Safety
///
/// `config` is NULL or a valid `shmpipe_config`; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ring_create_key(
    key: i32,
    config: *const ShmpipeConfig,
    out: *mut *mut ShmpipeRing,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { at_key(Make::Create, key, config, out) }
}

/// Opens the existing ring at `key`, waiting up to the init timeout for its creator to
/// finish. Its shape is the header's, unless `config` sets a shape field (demanded). A ring
/// another user owns, or ours with a mode wider than `config->mode`, is refused
/// (`SHMPIPE_STATUS_FOREIGN_OWNER`) unless accepted.
///
/// # Safety
///
/// As `shmpipe_ring_create_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ring_open_key(
    key: i32,
    config: *const ShmpipeConfig,
    out: *mut *mut ShmpipeRing,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { at_key(Make::Open, key, config, out) }
}

/// Creates the ring at `key`, or opens it if another process created it first, so either side
/// may start first; a stale ring of ours at the key (left by crashed processes) is recycled.
///
/// # Safety
///
/// As `shmpipe_ring_create_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ring_open_or_create_key(
    key: i32,
    config: *const ShmpipeConfig,
    out: *mut *mut ShmpipeRing,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { at_key(Make::OpenOrCreate, key, config, out) }
}

/// Opens the ring in the SysV segment `shmid` (e.g. one another process created at key 0 and
/// told us the shmid of).
///
/// # Safety
///
/// As `shmpipe_ring_create_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ring_open_shmid(
    shmid: i32,
    config: *const ShmpipeConfig,
    out: *mut *mut ShmpipeRing,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { ring_at(config, out, |c| Ring::open(Shmid(shmid), c).map_err(fail)) }
}

/// The SysV key `ftok(3)` derives from an existing `path` and `id` (1 to 255), for the
/// `_key` functions.
///
/// # Safety
///
/// `path` is NULL or a NUL-terminated string; `key` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ftok(
    path: *const c_char,
    id: c_int,
    key: *mut i32,
) -> ShmpipeStatus {
    // SAFETY: `key` and `path` as the caller promises.
    unsafe {
        guard_out(key, "key", || {
            let path = self::path(path)?;
            let id = u8::try_from(id).map_err(|_| {
                Fail::new(
                    ShmpipeStatus::InvalidArgument,
                    format!("ftok id {id} is not in 1..=255"),
                )
            })?;
            Ok(Key::ftok(path, id).map_err(fail)?.raw())
        })
    }
}

/// Creates a ring in a new anonymous memfd, sealed against resizing. No key, nothing in
/// `ipcs`, nothing to remove. Hand the descriptor (`shmpipe_ring_info`'s `memfd`) to the
/// other process, across `fork`/`exec` or over a Unix socket (`shmpipe_memfd_send`); it
/// opens it with `shmpipe_ring_open_memfd`.
///
/// # Safety
///
/// As `shmpipe_ring_create_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ring_create_memfd(
    config: *const ShmpipeConfig,
    out: *mut *mut ShmpipeRing,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { ring_at(config, out, |c| Ring::create(Memfd, c).map_err(fail)) }
}

/// Opens the ring in the memfd `fd` (inherited, or received with `shmpipe_memfd_recv`). The
/// library duplicates `fd`: the caller still owns it and may close it at once. A descriptor
/// that is not a memfd sealed against resizing is refused (`SHMPIPE_STATUS_BAD_HEADER`), as is one of
/// another user (`SHMPIPE_STATUS_FOREIGN_OWNER`).
///
/// # Safety
///
/// As `shmpipe_ring_create_key`. (`fd` may be any number: a closed one is `SHMPIPE_STATUS_SYS`.)
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ring_open_memfd(
    fd: c_int,
    config: *const ShmpipeConfig,
    out: *mut *mut ShmpipeRing,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe {
        ring_at(config, out, |c| {
            let owned = dup(fd)?;
            Ring::open(owned, c).map_err(fail)
        })
    }
}

/// A duplicate of the caller's descriptor, close-on-exec, owned by us.
fn dup(fd: RawFd) -> Result<OwnedFd, Fail> {
    // SAFETY: `F_DUPFD_CLOEXEC` reads no memory; a descriptor that is not open is `EBADF`.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(Fail::new(
            ShmpipeStatus::Sys,
            format!(
                "duplicating descriptor {fd}: {}",
                std::io::Error::last_os_error()
            ),
        ));
    }
    // SAFETY: `new` is a descriptor just opened for us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The caller's Unix socket `socket`, borrowed for one call.
fn with_socket<T>(
    socket: RawFd,
    f: impl FnOnce(&UnixStream) -> std::io::Result<T>,
) -> Result<T, Fail> {
    // The caller keeps its socket: work on a duplicate, closed when done.
    let stream = UnixStream::from(dup(socket)?);
    f(&stream).map_err(|e| {
        Fail::new(
            ShmpipeStatus::Sys,
            format!("passing a memfd over socket {socket}: {e}"),
        )
    })
}

/// Sends the descriptor `fd` (a ring's memfd) over the connected Unix socket `socket`
/// (`SCM_RIGHTS`, one byte of data). Neither descriptor is closed.
#[unsafe(no_mangle)]
pub extern "C" fn shmpipe_memfd_send(socket: c_int, fd: c_int) -> ShmpipeStatus {
    guard(|| {
        let fd = dup(fd)?;
        with_socket(socket, |s| memfd::send_fd(s, fd.as_fd_borrowed()))
    })
}

/// Receives a descriptor sent with `shmpipe_memfd_send` (or the Rust library's
/// `memfd::send_fd`) from the Unix socket `socket`; `*fd` is then a new close-on-exec
/// descriptor the caller owns (pass it to `shmpipe_ring_open_memfd`, then close it).
///
/// # Safety
///
/// `fd` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_memfd_recv(socket: c_int, fd: *mut c_int) -> ShmpipeStatus {
    // SAFETY: `fd` as the caller promises; the descriptor becomes the caller's.
    unsafe {
        guard_out(fd, "fd", || {
            let got = with_socket(socket, memfd::recv_fd)?;
            Ok(std::os::fd::IntoRawFd::into_raw_fd(got))
        })
    }
}

/// A descriptor as a borrowed one, for one call.
trait AsFdBorrowed {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_>;
}

impl AsFdBorrowed for OwnedFd {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        // SAFETY: `self` owns the descriptor, open for as long as the borrow of `self`.
        unsafe { BorrowedFd::borrow_raw(self.as_raw_fd()) }
    }
}

/// Creates a new ring in a file at `path` (`SHMPIPE_STATUS_FILE_EXISTS` if something is there),
/// e.g. in `/dev/shm` or on a disk; built under a temporary name and linked into place
/// complete. A file truncated under the ring is `SHMPIPE_STATUS_CORRUPTED` (memory lost), never a
/// `SIGBUS`.
///
/// # Safety
///
/// As `shmpipe_ring_create_key`; `path` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ring_create_path(
    path: *const c_char,
    config: *const ShmpipeConfig,
    out: *mut *mut ShmpipeRing,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { at_path(Make::Create, path, config, out) }
}

/// Opens the ring file at `path`.
///
/// # Safety
///
/// As `shmpipe_ring_create_path`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ring_open_path(
    path: *const c_char,
    config: *const ShmpipeConfig,
    out: *mut *mut ShmpipeRing,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { at_path(Make::Open, path, config, out) }
}

/// Creates the ring file at `path`, or opens it if another process created it first.
///
/// # Safety
///
/// As `shmpipe_ring_create_path`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ring_open_or_create_path(
    path: *const c_char,
    config: *const ShmpipeConfig,
    out: *mut *mut ShmpipeRing,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { at_path(Make::OpenOrCreate, path, config, out) }
}

/// Creates a ring on this process's heap, for two threads.
///
/// # Safety
///
/// As `shmpipe_ring_create_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ring_create_heap(
    config: *const ShmpipeConfig,
    out: *mut *mut ShmpipeRing,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { ring_at(config, out, |c| Ring::create(Heap, c).map_err(fail)) }
}

/// The caller's ring handle.
///
/// # Safety
///
/// `ring` is NULL or a live handle from this library.
unsafe fn ring_ref<'a>(ring: *const ShmpipeRing) -> Result<&'a Ring, Fail> {
    // SAFETY: NULL or a live handle (the caller).
    unsafe { ring.as_ref() }
        .map(|r| &r.ring)
        .ok_or_else(|| null("ring"))
}

/// Frees a ring handle (NULL is ignored). Producers and consumers claimed from it stay valid.
///
/// # Safety
///
/// `ring` is NULL or a live handle, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ring_close(ring: *mut ShmpipeRing) {
    if ring.is_null() {
        return;
    }
    guard(|| {
        // SAFETY: a live handle made by `Box::into_raw`, given back (the caller).
        drop(unsafe { Box::from_raw(ring) });
        Ok(())
    });
}

/// Removes the ring now: a segment is marked for removal (freed once everyone detaches), a
/// file unlinked; a memfd or heap ring has nothing to remove. Sides attached keep working.
///
/// # Safety
///
/// `ring` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ring_remove(ring: *const ShmpipeRing) -> ShmpipeStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        unsafe { ring_ref(ring) }?.remove().map_err(fail)
    })
}

/// The ring's shape and where it lives.
///
/// # Safety
///
/// `ring` is NULL or a live handle; `info` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ring_info(
    ring: *const ShmpipeRing,
    info: *mut ShmpipeRingInfo,
) -> ShmpipeStatus {
    // SAFETY: `info` and `ring` as the caller promises.
    unsafe {
        guard_out(info, "info", || {
            let r = ring_ref(ring)?;
            Ok(ShmpipeRingInfo {
                slot_size: r.slot_size() as u64,
                slot_count: r.slot_count() as u64,
                max_message: r.max_message() as u64,
                shmid: r.shmid().unwrap_or(-1),
                memfd: r.memfd().map_or(-1, |fd| fd.as_raw_fd()),
                persistent: r.is_persistent().into(),
            })
        })
    }
}

/// The ring's shared counters now: messages sent and received, slots used, role holders.
///
/// # Safety
///
/// `ring` is NULL or a live handle; `stats` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ring_stats(
    ring: *const ShmpipeRing,
    stats: *mut ShmpipeStats,
) -> ShmpipeStatus {
    // SAFETY: `stats` and `ring` as the caller promises.
    unsafe {
        guard_out(stats, "stats", || {
            let s = ring_ref(ring)?.status();
            Ok(ShmpipeStats {
                tail: s.tail,
                head: s.head,
                used_slots: s.used_slots,
                sent: s.sent,
                received: s.received,
                producer_pid: s.producer_pid,
                consumer_pid: s.consumer_pid,
            })
        })
    }
}

/// Claims a side with `claim` and hands its handle to the caller at `out`.
///
/// # Safety
///
/// `ring` is NULL or a live handle; `out` is NULL or valid for a write.
unsafe fn claim<T>(
    ring: *const ShmpipeRing,
    out: *mut *mut T,
    claim: impl FnOnce(&Ring) -> Result<T, Error>,
) -> ShmpipeStatus {
    // SAFETY: `out` and `ring` as the caller promises.
    unsafe {
        guard_out(out, "out", || {
            let side = claim(ring_ref(ring)?).map_err(fail)?;
            Ok(Box::into_raw(Box::new(side)))
        })
    }
}

/// Claims the producer role (`SHMPIPE_STATUS_ROLE_TAKEN` if another side holds it). Free the handle
/// with `shmpipe_producer_close`.
///
/// # Safety
///
/// `ring` is NULL or a live handle; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ring_producer(
    ring: *const ShmpipeRing,
    out: *mut *mut ShmpipeProducer,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { claim(ring, out, |r| r.producer().map(ShmpipeProducer::new)) }
}

/// Claims the consumer role (`SHMPIPE_STATUS_ROLE_TAKEN` if another side holds it). Free the handle
/// with `shmpipe_consumer_close`.
///
/// # Safety
///
/// As `shmpipe_ring_producer`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ring_consumer(
    ring: *const ShmpipeRing,
    out: *mut *mut ShmpipeConsumer,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { claim(ring, out, |r| r.consumer().map(ShmpipeConsumer::new)) }
}

/// Claims the producer role from a holder the kernel confirms dead; the stream goes on after
/// the last message it published.
///
/// # Safety
///
/// As `shmpipe_ring_producer`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ring_take_over_producer(
    ring: *const ShmpipeRing,
    out: *mut *mut ShmpipeProducer,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe {
        claim(ring, out, |r| {
            r.take_over_producer().map(ShmpipeProducer::new)
        })
    }
}

/// Claims the consumer role from a holder the kernel confirms dead; messages it had read but
/// not released are received again.
///
/// # Safety
///
/// As `shmpipe_ring_producer`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_ring_take_over_consumer(
    ring: *const ShmpipeRing,
    out: *mut *mut ShmpipeConsumer,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe {
        claim(ring, out, |r| {
            r.take_over_consumer().map(ShmpipeConsumer::new)
        })
    }
}

/// Removes the SysV rings that crashed processes left behind (nobody attached, no live
/// holder, nothing waiting to be read), never a segment that is not a shmpipe ring nor
/// another user's ring. With `dry_run` non-zero nothing is removed. The shmids of the stale
/// rings found (removed unless a dry run) go to `shmids`, at most `capacity` of them
/// (`shmids` may be NULL if `capacity` is 0); `*count` is how many were found, which may be
/// more than `capacity`.
///
/// # Safety
///
/// `shmids` is NULL or valid for `capacity` writes; `count` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_gc(
    dry_run: c_int,
    shmids: *mut i32,
    capacity: usize,
    count: *mut usize,
) -> ShmpipeStatus {
    // SAFETY: `count` as the caller promises, and `shmids` NULL only for a `capacity` of 0,
    // else `capacity` writable ints.
    unsafe {
        guard_out(count, "count", || {
            let size = capacity.saturating_mul(size_of::<i32>());
            let out = crate::buffer(shmids.cast::<u8>(), size, "shmids")?;
            let stale: Vec<i32> = gc::gc(dry_run != 0)
                .map_err(fail)?
                .into_iter()
                .filter(|e| e.collected(dry_run != 0, &[]))
                .map(|e| e.stat.shmid)
                .collect();
            for (slot, id) in out.chunks_exact_mut(size_of::<i32>()).zip(&stale) {
                slot.copy_from_slice(&id.to_ne_bytes());
            }
            Ok(stale.len())
        })
    }
}
