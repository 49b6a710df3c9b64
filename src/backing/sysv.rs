//! System V shared-memory segments: keys, create/open, attach/detach, stat and remove.
//!
//! This module owns every `shmget`/`shmat`/`shmdt`/`shmctl`/`ftok` call in the crate and turns
//! each failure into a typed [`Error`] that names the key and the shmid. It knows nothing about
//! the ring layout: a [`Segment`] is an attached range of bytes and nothing more. The ring code
//! must not call SysV functions itself; it asks this module.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Ident};

/// `SHM_DEST` from `<linux/shm.h>`: set in `shm_perm.mode` once `IPC_RMID` marked the segment.
const SHM_DEST: u32 = 0o1000;
/// `SHM_LOCKED` from `<linux/shm.h>`: set in `shm_perm.mode` while the segment is `SHM_LOCK`ed.
const SHM_LOCKED: u32 = 0o2000;

pub use crate::key::{Key, ParseKeyError};

impl Key {
    /// Derives a key from an existing file and a project id, as `ftok(3)` does.
    ///
    /// Two processes that call `Key::ftok` with the same path and id get the same key. The
    /// key is built from the file's inode and device numbers, so different files can collide;
    /// shmpipe checks what it finds at a key before using it.
    ///
    /// # Errors
    ///
    /// [`Error::Ftok`] if the path does not exist or cannot be examined, or `proj_id` is 0
    /// (ftok ignores all but the low 8 bits, and 0 gives a key that is not portable).
    pub fn ftok(path: impl AsRef<Path>, proj_id: u8) -> Result<Key, Error> {
        let path = path.as_ref();
        let fail = |source: io::Error| Error::Ftok {
            path: path.to_path_buf(),
            proj_id,
            source,
        };
        if proj_id == 0 {
            return Err(fail(io::Error::new(
                io::ErrorKind::InvalidInput,
                "proj_id must not be 0",
            )));
        }
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| fail(io::Error::new(io::ErrorKind::InvalidInput, "NUL in path")))?;
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
        let k = unsafe { libc::ftok(c.as_ptr(), libc::c_int::from(proj_id)) };
        if k == -1 {
            return Err(fail(io::Error::last_os_error()));
        }
        Ok(Key::new(k))
    }
}

/// What `IPC_STAT` says about a segment: the kernel's view, trusted (unlike the segment bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentStat {
    /// The segment's id.
    pub shmid: i32,
    /// The key it was created with ([`Key::Private`] also once it is marked for removal).
    pub key: Key,
    /// Size in bytes as requested at creation (`shm_segsz`).
    pub size: usize,
    /// Number of current attaches (`shm_nattch`), across all processes.
    pub attach_count: u64,
    /// Pid of the process that created the segment (`shm_cpid`).
    pub creator_pid: i32,
    /// Pid of the last process to attach or detach (`shm_lpid`).
    pub last_pid: i32,
    /// Time of the last attach, if any.
    pub attach_time: Option<SystemTime>,
    /// Time of the last detach, if any.
    pub detach_time: Option<SystemTime>,
    /// Time of the last change (creation or `IPC_SET`).
    pub change_time: Option<SystemTime>,
    /// Permission bits (e.g. `0o600`).
    pub mode: u32,
    /// Owner's user id.
    pub uid: u32,
    /// Owner's group id.
    pub gid: u32,
    /// Creator's user id.
    pub creator_uid: u32,
    /// Creator's group id.
    pub creator_gid: u32,
    /// `IPC_RMID` was called: the kernel frees the segment when the last process detaches.
    pub marked_for_removal: bool,
    /// The segment is locked in memory (`SHM_LOCK`).
    pub locked: bool,
}

fn time_of(t: libc::time_t) -> Option<SystemTime> {
    (t > 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_secs(t as u64))
}

/// `IPC_STAT` on a shmid, without attaching.
///
/// # Errors
///
/// [`Error::NotFound`] if no segment has this id, [`Error::PermissionDenied`] if the caller
/// may not read it, [`Error::Sys`] otherwise.
pub fn stat_id(shmid: i32) -> Result<SegmentStat, Error> {
    let ident = Ident::shmid(shmid);
    let mut ds = std::mem::MaybeUninit::<libc::shmid_ds>::zeroed();
    // SAFETY: `ds` is a writable shmid_ds; IPC_STAT fills it and touches nothing else.
    let rc = unsafe { libc::shmctl(shmid, libc::IPC_STAT, ds.as_mut_ptr()) };
    if rc == -1 {
        return Err(id_errno(ident, "shmctl(IPC_STAT)"));
    }
    // SAFETY: shmctl returned 0, so the kernel initialised the whole struct (and it was zeroed
    // before, so even padding is defined).
    let ds = unsafe { ds.assume_init() };
    let mode = u32::from(ds.shm_perm.mode);
    Ok(SegmentStat {
        shmid,
        key: Key::new(ds.shm_perm.__key),
        size: ds.shm_segsz,
        // shmatt_t is c_ulong: u64 here, u32 on 32-bit targets.
        #[allow(clippy::useless_conversion)]
        attach_count: u64::from(ds.shm_nattch),
        creator_pid: ds.shm_cpid,
        last_pid: ds.shm_lpid,
        attach_time: time_of(ds.shm_atime),
        detach_time: time_of(ds.shm_dtime),
        change_time: time_of(ds.shm_ctime),
        mode: mode & 0o777,
        uid: ds.shm_perm.uid,
        gid: ds.shm_perm.gid,
        creator_uid: ds.shm_perm.cuid,
        creator_gid: ds.shm_perm.cgid,
        marked_for_removal: mode & SHM_DEST != 0,
        locked: mode & SHM_LOCKED != 0,
    })
}

/// The system's huge page size in bytes (`Hugepagesize` in `/proc/meminfo`), or `None` if the
/// kernel reports none (no hugetlb support, or `/proc` not mounted). This is the size
/// [`Segment::create_huge_pages`] rounds up to.
///
/// # Examples
///
/// ```
/// if let Some(h) = shmpipe::segment::huge_page_size() {
///     assert!(h.is_power_of_two());
/// }
/// ```
pub fn huge_page_size() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("Hugepagesize:"))?;
    let kib: usize = line
        .trim_start_matches("Hugepagesize:")
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024).filter(|&b| b > 0)
}

/// The base page size.
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// `IPC_RMID` on a shmid: the kernel removes the key at once and frees the memory when the last
/// process detaches. Processes already attached keep working.
///
/// # Errors
///
/// [`Error::NotFound`] if it no longer exists, [`Error::PermissionDenied`] if the caller is not
/// its owner or creator.
pub fn remove_id(shmid: i32) -> Result<(), Error> {
    // SAFETY: IPC_RMID takes no buffer; a null pointer is what the man page specifies.
    let rc = unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) };
    if rc == -1 {
        return Err(id_errno(Ident::shmid(shmid), "shmctl(IPC_RMID)"));
    }
    Ok(())
}

/// The error of a call that takes a shmid: the kernel answers EINVAL for an id that does not
/// (or no longer) exist, which is `NotFound` to the caller.
fn id_errno(ident: Ident, op: &'static str) -> Error {
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EINVAL) {
        return Error::NotFound { ident };
    }
    Error::from_errno(ident, op, err)
}

/// A System V shared-memory segment attached to this process; detached (`shmdt`) on drop.
///
/// Dropping a `Segment` does not remove it: call [`Segment::remove`] (or the `ipcrm` command)
/// for that. The bytes are shared with every other process that attached the segment, so this
/// type only hands out a raw pointer; reading or writing through it is up to the caller.
///
/// An attachment is protected against `SIGBUS` while it exists (docs/DESIGN.md, "When memory
/// disappears: SIGBUS"): if a page of it cannot be backed (a huge page removed by another
/// process with the pool empty, or never reserved with `SHM_NORESERVE`), the access does not
/// kill the process; the attachment is replaced by private zero-filled memory of this process
/// (the segment itself is unchanged for everyone else), which the access then reads.
/// [`Segment::page_size`] tells whether the segment is on huge pages.
///
/// # Examples
///
/// ```
/// use shmpipe::{Key, Segment};
/// let seg = Segment::create(Key::Private, 4096, 0o600)?;
/// assert_eq!(seg.len(), 4096);
/// assert_eq!(seg.stat()?.attach_count, 1);
/// seg.remove()?;
/// # Ok::<(), shmpipe::Error>(())
/// ```
#[derive(Debug)]
pub struct Segment {
    shmid: i32,
    key: Key,
    addr: NonNull<u8>,
    len: usize,
    /// The kernel's page size of the attachment (the huge page size for `SHM_HUGETLB`).
    page: usize,
    /// The attachment's entry in the `SIGBUS` registry (`crate::backing::sigbus`).
    guard: &'static crate::backing::sigbus::Entry,
}

// SAFETY: a Segment is an attachment (address range) owned by the process, usable from any
// thread; it hands out only raw pointers, so moving or sharing it across threads creates no
// unsynchronised access by itself.
unsafe impl Send for Segment {}
// SAFETY: see `Send`; every method takes `&self` and only issues thread-safe syscalls.
unsafe impl Sync for Segment {}

impl Segment {
    /// Creates a new segment of `size` bytes exclusively (`IPC_CREAT | IPC_EXCL`) with the
    /// permission bits `mode` (e.g. `0o600`), and attaches it. The kernel zero-fills it.
    ///
    /// # Errors
    ///
    /// [`Error::Exists`] if the key is taken, [`Error::SystemLimit`] if `size` is outside
    /// `SHMMIN..=SHMMAX` or the system is out of segments or memory, [`Error::PermissionDenied`],
    /// or an attach error.
    pub fn create(key: Key, size: usize, mode: u32) -> Result<Segment, Error> {
        Segment::create_flags(key, size, mode, false)
    }

    /// [`Segment::create`] backed by huge pages (`SHM_HUGETLB`). `size` is rounded up to the
    /// huge page size ([`huge_page_size`]), so [`Segment::len`] (the kernel's `shm_segsz`) is
    /// the whole mapping. The pages come from the pool reserved in `/proc/sys/vm/nr_hugepages`
    /// and are reserved at once: creation fails rather than a later page fault.
    ///
    /// # Errors
    ///
    /// [`Error::HugePages`] when the kernel refuses the huge pages (`ENOMEM`: not enough free
    /// in the pool; `EPERM`: the caller lacks `CAP_IPC_LOCK` and is not in
    /// `/proc/sys/vm/hugetlb_shm_group`; `EINVAL`: size out of range or no huge page support);
    /// never a silent fallback to normal pages. Otherwise as [`Segment::create`].
    ///
    /// # Examples
    ///
    /// ```
    /// use shmpipe::{Error, Key, Segment};
    /// match Segment::create_huge_pages(Key::Private, 4096, 0o600) {
    ///     Ok(seg) => {
    ///         assert_eq!(seg.len() % shmpipe::segment::huge_page_size().unwrap(), 0);
    ///         seg.remove()?;
    ///     }
    ///     Err(Error::HugePages { .. }) => {} // none reserved on this machine
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    pub fn create_huge_pages(key: Key, size: usize, mode: u32) -> Result<Segment, Error> {
        let rounded = match huge_page_size() {
            Some(h) => size
                .div_ceil(h)
                .checked_mul(h)
                .ok_or_else(|| Error::HugePages {
                    ident: Ident::key(key),
                    size,
                    source: io::Error::from_raw_os_error(libc::EINVAL),
                    hint: "size overflows when rounded up to the huge page size",
                })?,
            // No huge page size in /proc/meminfo: let the kernel decide (it answers EINVAL if
            // it has no hugetlb support, which becomes Error::HugePages below).
            None => size,
        };
        Segment::create_flags(key, rounded, mode, true)
    }

    fn create_flags(key: Key, size: usize, mode: u32, huge: bool) -> Result<Segment, Error> {
        let mut flags = libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as libc::c_int;
        if huge {
            flags |= libc::SHM_HUGETLB;
        }
        // SAFETY: shmget takes plain integers and has no memory-safety preconditions.
        let shmid = unsafe { libc::shmget(key.raw(), size, flags) };
        if shmid == -1 {
            let err = io::Error::last_os_error();
            let ident = Ident::key(key);
            let huge_hint = match err.raw_os_error() {
                _ if !huge => None,
                Some(libc::ENOMEM) => Some(
                    "not enough free huge pages: see HugePages_Free in /proc/meminfo and \
                     reserve more in /proc/sys/vm/nr_hugepages",
                ),
                Some(libc::EPERM) => Some(
                    "not allowed to use huge pages for shared memory: needs CAP_IPC_LOCK or \
                     membership of the group in /proc/sys/vm/hugetlb_shm_group",
                ),
                Some(libc::EINVAL) => Some(
                    "size outside SHMMIN..SHMMAX, or no huge page support: see Hugepagesize \
                     in /proc/meminfo",
                ),
                _ => None,
            };
            if let Some(hint) = huge_hint {
                return Err(Error::HugePages {
                    ident,
                    size,
                    source: err,
                    hint,
                });
            }
            return Err(match err.raw_os_error() {
                Some(libc::EEXIST) => Error::Exists { ident },
                Some(libc::EINVAL) => Error::SystemLimit {
                    ident,
                    what: format!("size {size} is outside the system's SHMMIN..SHMMAX"),
                    source: err,
                },
                _ => Error::from_errno(ident, "shmget(IPC_CREAT|IPC_EXCL)", err),
            });
        }
        match Segment::attach_raw(shmid, key) {
            Ok(seg) => Ok(seg),
            Err(e) => {
                // We made it and cannot use it: do not leak it. Removal of our own fresh
                // segment cannot hurt anyone; ignore a failure since the attach error matters more.
                let _ = remove_id(shmid);
                Err(e)
            }
        }
    }

    /// Opens and attaches the existing segment at `key`, whatever its size.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if no segment has this key, [`Error::PermissionDenied`] if its mode
    /// forbids us, or an attach error. [`Key::Private`] cannot be opened by key: use
    /// [`Segment::attach_id`].
    pub fn open(key: Key) -> Result<Segment, Error> {
        if key == Key::Private {
            return Err(Error::NotFound {
                ident: Ident::key(key),
            });
        }
        // SAFETY: shmget takes plain integers; size 0 and no flags opens an existing segment.
        let shmid = unsafe { libc::shmget(key.raw(), 0, 0) };
        if shmid == -1 {
            return Err(Error::from_errno(
                Ident::key(key),
                "shmget",
                io::Error::last_os_error(),
            ));
        }
        Segment::attach_raw(shmid, key)
    }

    /// Attaches the segment with this shmid (for example one created with [`Key::Private`] by
    /// another process that passed us its id). Linux also allows this for a segment already
    /// marked for removal.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if no segment has this id, [`Error::PermissionDenied`], or
    /// [`Error::SystemLimit`] when the address space is exhausted.
    pub fn attach_id(shmid: i32) -> Result<Segment, Error> {
        let key = stat_id(shmid)?.key;
        Segment::attach_raw(shmid, key)
    }

    fn attach_raw(shmid: i32, key: Key) -> Result<Segment, Error> {
        let ident = Ident {
            key: Some(key),
            shmid: Some(shmid),
            path: None,
        };
        // SAFETY: a null address lets the kernel choose where to map; no existing mapping is
        // affected. The result is checked for the (void*)-1 error value below.
        let addr = unsafe { libc::shmat(shmid, std::ptr::null(), 0) };
        if addr as isize == -1 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::ENOMEM) => Error::SystemLimit {
                    ident,
                    what: "no address space left to attach".into(),
                    source: err,
                },
                Some(libc::EINVAL) => Error::NotFound { ident },
                _ => Error::from_errno(ident, "shmat", err),
            });
        }
        let detach = |e: Error| {
            // SAFETY: the attachment just made, never handed out.
            unsafe { libc::shmdt(addr) };
            Err(e)
        };
        // The size must come from the kernel (not from the segment's own bytes), and stat after
        // attaching so the segment cannot be swapped for another between the two calls.
        let len = match stat_id(shmid) {
            Ok(st) => st.size,
            Err(e) => return detach(e),
        };
        // Whether the creator used huge pages is not in IPC_STAT: ask the mapping. The
        // registry must cover the attachment in whole pages of its real size.
        let page = match crate::backing::sigbus::mapping_page_size(addr as usize) {
            Ok(p) => p,
            Err(source) => {
                return detach(Error::Sys {
                    ident,
                    op: "page size of the attachment (/proc/self/maps)",
                    source,
                });
            }
        };
        let guard = match crate::backing::sigbus::protect(ident, addr as usize, len, page) {
            Ok(g) => g,
            Err(e) => return detach(e),
        };
        let seg = Segment {
            shmid,
            key,
            // shmat never returns null on success (the zero page is never mapped for it).
            addr: NonNull::new(addr.cast::<u8>()).expect("shmat returned null"),
            len,
            page,
            guard,
        };
        Ok(seg)
    }

    /// The segment's id.
    pub fn shmid(&self) -> i32 {
        self.shmid
    }

    /// The key it was opened or created with.
    pub fn key(&self) -> Key {
        self.key
    }

    /// Size in bytes, as recorded by the kernel.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length segment (which the kernel never creates).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The size of the pages backing this attachment: the huge page size for a segment made
    /// with `SHM_HUGETLB` (by [`Segment::create_huge_pages`] or any other process), else the
    /// base page size. The kernel does not report `SHM_HUGETLB` in [`Segment::stat`]; this
    /// comes from the mapping itself (the kernel's description of it in `/proc/self/maps`).
    pub fn page_size(&self) -> usize {
        self.page
    }

    /// The address where the segment is attached in this process; valid for [`Segment::len`]
    /// bytes until this `Segment` is dropped. Other processes may write these bytes at any time.
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr.as_ptr()
    }

    /// `IPC_STAT`: the kernel's record of this segment.
    ///
    /// # Errors
    ///
    /// As [`stat_id`].
    pub fn stat(&self) -> Result<SegmentStat, Error> {
        stat_id(self.shmid)
    }

    /// `IPC_RMID`: removes the key now; the memory is freed after the last detach.
    ///
    /// # Errors
    ///
    /// As [`remove_id`].
    pub fn remove(&self) -> Result<(), Error> {
        remove_id(self.shmid)
    }

    /// Pre-faults every page of this attachment and locks it in RAM (`mlock`), so neither side
    /// takes a page fault or waits for swap on the hot path. The lock belongs to this process's
    /// attachment only (the other process locks its own, or not) and ends when the `Segment` is
    /// dropped: `shmdt` unmaps the range, and unmapping removes its locks (mlock(2)). Calling
    /// it again is harmless (locks do not stack).
    ///
    /// # Errors
    ///
    /// [`Error::LockMemory`] if `mlock` fails: `EPERM` (`RLIMIT_MEMLOCK` is 0 and no
    /// `CAP_IPC_LOCK`) or `ENOMEM` (the lock would exceed `RLIMIT_MEMLOCK`). The pages are
    /// faulted in even then.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmpipe::{Error, Key, Segment};
    /// let seg = Segment::create(Key::Private, 1 << 16, 0o600)?;
    /// match seg.lock_memory() {
    ///     Ok(()) => {}                          // locked until `seg` is dropped
    ///     Err(Error::LockMemory { hint, .. }) => eprintln!("not locked: {hint}"),
    ///     Err(e) => return Err(e),
    /// }
    /// seg.remove()?;
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    pub fn lock_memory(&self) -> Result<(), Error> {
        // SAFETY: the attachment [as_ptr, as_ptr + len) stays mapped while `self` is borrowed.
        unsafe { lock_range(self.ident(), self.as_ptr(), self.len) }
    }

    /// The attachment's `SIGBUS` registry entry.
    pub(crate) fn protection(&self) -> &'static crate::backing::sigbus::Entry {
        self.guard
    }

    /// Describes this segment in errors.
    pub(crate) fn ident(&self) -> Ident {
        Ident {
            key: Some(self.key),
            shmid: Some(self.shmid),
            path: None,
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // No munlock first: shmdt unmaps the attachment, and unmapping a range removes any
        // mlock on it (mlock(2): locks are removed "when the address range is unmapped");
        // tests/memory.rs checks VmLck in /proc/self/status falls back after the drop.
        // Read the entry before unregistering it (another mapping may take it at once), and
        // unregister before unmapping (a fault at reused addresses must not be taken for ours).
        let (lost, len) = (self.guard.lost(), self.guard.len());
        self.guard.unregister();
        if lost {
            // The SIGBUS handler replaced the attachment with private anonymous memory: it is
            // no longer a SysV attachment (shmdt would fail with EINVAL and leave it mapped),
            // and the kernel already counted the segment detached when the mapping was
            // replaced. Unmap the replacement.
            // SAFETY: exactly the replacement mapping the handler made (the attachment's
            // address and registered length), unmapped once, here.
            unsafe { libc::munmap(self.addr.as_ptr().cast(), len) };
            return;
        }
        // SAFETY: `addr` is the address shmat returned for this attachment and nothing else
        // detached it; after this no pointer derived from it is used (they borrow `self`).
        unsafe {
            libc::shmdt(self.addr.as_ptr().cast());
        }
    }
}

/// Faults in every page of the shared mapping `[base, base + len)` and `mlock`s it.
///
/// # Safety
///
/// The range must be a mapping of this process that stays mapped during the call.
pub(crate) unsafe fn lock_range(ident: Ident, base: *mut u8, len: usize) -> Result<(), Error> {
    let page = page_size();
    let mut off = 0;
    while off < len {
        // SAFETY: `base + off` lies inside the mapping (off < len), mapped during the call by
        // the caller's contract, and any address is aligned for a byte. The read is atomic
        // because another process may write these bytes at any time (a plain or volatile read
        // would race with it); its value is discarded: the read only makes the kernel map the
        // page.
        let byte = unsafe { std::sync::atomic::AtomicU8::from_ptr(base.add(off)) };
        byte.load(std::sync::atomic::Ordering::Relaxed);
        off += page;
    }
    // SAFETY: mlock only changes the residency of pages of this process's own mapping
    // [base, base + len); it reads and writes no memory of ours.
    let rc = unsafe { libc::mlock(base.cast_const().cast(), len) };
    if rc == -1 {
        let source = io::Error::last_os_error();
        let hint = match source.raw_os_error() {
            Some(libc::EPERM) => {
                "RLIMIT_MEMLOCK is 0 and the process lacks CAP_IPC_LOCK: raise `ulimit -l` \
                 (or memlock in /etc/security/limits.conf) or grant CAP_IPC_LOCK"
            }
            Some(libc::ENOMEM) => {
                "the lock would exceed RLIMIT_MEMLOCK (`ulimit -l`): raise it or grant \
                 CAP_IPC_LOCK"
            }
            _ => "mlock refused",
        };
        return Err(Error::LockMemory {
            ident,
            len,
            source,
            hint,
        });
    }
    Ok(())
}
