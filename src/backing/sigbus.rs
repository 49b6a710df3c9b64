//! `SIGBUS` protection for every shared mapping of a ring (docs/DESIGN.md, "When memory
//! disappears: SIGBUS").
//!
//! A page of a shared mapping that the kernel cannot back raises `SIGBUS` on access, which
//! kills the process. Three things make that happen to a ring: its file shrank (someone
//! truncated it), a huge page could not be found (the peer removed one with `MADV_REMOVE` or a
//! hole punch and the pool is empty, or the creator made the segment with `SHM_NORESERVE`), or
//! shared memory accounting refused a page (strict overcommit, `vm.overcommit_memory = 2`).
//!
//! Every ring mapping (a SysV attachment, a memfd or a file mapping) is registered here while
//! it is mapped. A process-wide handler, installed once, catches a fault inside a registered
//! mapping, replaces the whole mapping with private zero-filled memory (`mmap` with
//! `MAP_FIXED`, async-signal-safe), records the loss in the entry, and returns: the faulting
//! access retries and reads zeros. The ring reads the entry's flag on its cold paths and
//! reports [`Corruption::MemoryLost`](crate::Corruption::MemoryLost) instead of delivering the
//! zeros. A `SIGBUS` anywhere else goes to the action that was installed before (the Rust
//! runtime's, or the default), unchanged.
//!
//! What cannot be handled: a thread that has `SIGBUS` blocked. The kernel then forces the
//! default action (death) and no handler runs. [`blocked`] tells whether the calling thread is
//! such a thread, and the ring refuses to attach or claim a role there (for a ring that can
//! fault at all); a thread that blocks `SIGBUS` after that check is not caught.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::{Error, Ident};

/// Mappings one process can protect at once. Each entry is four words of `.bss`, so a large
/// table costs nothing until used; the handler scans it only when a `SIGBUS` arrives. A
/// mapping that finds the table full is refused ([`Error::SystemLimit`]), never left
/// unprotected.
pub(crate) const SLOTS: usize = 4096;

/// One registered mapping: `start..start + len`, and whether it was lost.
pub(crate) struct Entry {
    /// Claimed by a mapping (set before `start`, cleared after).
    used: AtomicBool,
    /// First byte, or 0 while the entry describes no mapping.
    start: AtomicUsize,
    len: AtomicUsize,
    /// Set by the handler once it replaced the mapping with zeros.
    lost: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Entry = Entry {
    used: AtomicBool::new(false),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    lost: AtomicBool::new(false),
};

static ENTRIES: [Entry; SLOTS] = [FREE; SLOTS];

/// The action that was installed before ours, to pass on faults that are not ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// Installs the handler once per process.
fn install() -> io::Result<()> {
    static RESULT: OnceLock<Result<(), i32>> = OnceLock::new();
    let r = RESULT.get_or_init(|| {
        // SAFETY: an all-zero sigaction is a valid value (no handler, empty mask).
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: reading the current action only (a null new action).
        if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &raw mut old) } != 0 {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        // Stored before ours is installed, so the handler always finds it.
        let _ = PREVIOUS.set(old);
        // SAFETY: as above.
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = on_sigbus as *const () as usize;
        // SA_ONSTACK: a fault can come from a thread on its alternate stack (the Rust runtime
        // sets one up for stack overflows); SA_NODEFER is not wanted: a fault in the handler
        // itself must not recurse.
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `sa_mask` is ours to initialise.
        unsafe { libc::sigemptyset(&raw mut new.sa_mask) };
        // SAFETY: installs a handler that only touches statics and calls mmap/sigaction.
        if unsafe { libc::sigaction(libc::SIGBUS, &raw const new, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        Ok(())
    });
    r.map_err(io::Error::from_raw_os_error)
}

/// Protects the mapping `start..start + len` whose pages are `page` bytes: installs the handler
/// (once) and registers the mapping, rounded up to whole pages so that a replacement covers
/// exactly the kernel's mapping (a huge-page mapping cannot be split inside a page).
///
/// # Errors
///
/// [`Error::Sys`] if the handler cannot be installed; [`Error::SystemLimit`] if [`SLOTS`]
/// mappings are protected already.
pub(crate) fn protect(
    ident: Ident,
    start: usize,
    len: usize,
    page: usize,
) -> Result<&'static Entry, Error> {
    install().map_err(|source| Error::Sys {
        ident,
        op: "sigaction(SIGBUS)",
        source,
    })?;
    let len = len.div_ceil(page.max(1)) * page.max(1);
    register(start, len).ok_or_else(|| Error::SystemLimit {
        ident,
        what: format!(
            "more than {SLOTS} ring mappings at once in this process (each is protected \
             against SIGBUS, and the table is full)"
        ),
        source: io::Error::from_raw_os_error(libc::ENFILE),
    })
}

/// Registers a mapping; `None` if every entry is in use.
fn register(start: usize, len: usize) -> Option<&'static Entry> {
    let e = ENTRIES.iter().find(|e| {
        e.used
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    })?;
    e.lost.store(false, Ordering::Relaxed);
    e.len.store(len, Ordering::Relaxed);
    // Release: pairs with the handler's Acquire load of `start`, so it sees `len`.
    e.start.store(start, Ordering::Release);
    Some(e)
}

impl Entry {
    /// Forgets the mapping (before it is unmapped).
    pub(crate) fn unregister(&self) {
        self.start.store(0, Ordering::Release);
        // Release: pairs with the Acquire of the next `register`'s claim.
        self.used.store(false, Ordering::Release);
    }

    /// The flag the handler sets once it replaced the mapping with zeros.
    pub(crate) fn lost_flag(&'static self) -> &'static AtomicBool {
        &self.lost
    }

    /// Whether the mapping was replaced with zeros (its memory is now private to this process).
    pub(crate) fn lost(&self) -> bool {
        // Set by the handler on some thread of ours during an access to the mapping; whoever
        // asks (the owner dropping the mapping, or a pre-fault) comes after that access.
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        self.lost.load(Ordering::Acquire)
    }

    /// The registered length (whole pages).
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("len", &self.len())
            .field("lost", &self.lost())
            .finish()
    }
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // Only faults the kernel raised for an access (si_code > 0); a SIGBUS sent with kill()
    // carries no address to trust.
    if code > 0 {
        for e in &ENTRIES {
            // Acquire: pairs with `register`'s Release store, so `len` is the mapping's.
            let start = e.start.load(Ordering::Acquire);
            let len = e.len.load(Ordering::Relaxed);
            if start == 0 || addr < start || addr - start >= len {
                continue;
            }
            // The faulting thread is inside a ring access, so the mapping is live (its owner
            // cannot be dropped under that access) and these addresses are still the ring's.
            // Replace them all with private zero-filled memory: the access retries and reads
            // zeros, which the ring never delivers (it checks `lost`).
            // SAFETY: MAP_FIXED over exactly our own live mapping (whole pages of it, see
            // `protect`); mmap is async-signal-safe.
            let p = unsafe {
                libc::mmap(
                    start as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                e.lost.store(true, Ordering::Release);
                return;
            }
            break;
        }
    }
    chain(sig, info, ctx);
}

/// Hands a fault that is not ours to the previous action.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(prev) = PREVIOUS.get() else { return };
    let h = prev.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // Restore it and return: the access faults again and the default action (a core dump)
        // happens as if we had never been installed. (SIG_IGN for a real fault is the same: the
        // kernel forces the default.)
        // SAFETY: sigaction is async-signal-safe; `prev` is a valid action.
        unsafe { libc::sigaction(libc::SIGBUS, prev, std::ptr::null_mut()) };
        return;
    }
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this type.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: a handler installed without SA_SIGINFO takes only the signal number.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}

/// Whether the calling thread has `SIGBUS` blocked (or the mask cannot be read, which counts
/// as blocked). A fault on such a thread kills the process whatever handler is installed: the
/// kernel unblocks the signal and forces the default action.
pub(crate) fn blocked() -> bool {
    // SAFETY: an all-zero sigset_t is a valid value for pthread_sigmask to overwrite.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a null new set only reads the calling thread's mask into `set`.
    if unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &raw mut set) } != 0 {
        return true;
    }
    // SAFETY: `set` was filled in by pthread_sigmask.
    unsafe { libc::sigismember(&raw const set, libc::SIGBUS) == 1 }
}

/// `HUGETLBFS_MAGIC` from `<linux/magic.h>`: the `f_type` of a hugetlbfs file (a hugetlb memfd
/// or a file on a hugetlbfs mount).
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// The page size of the file behind `fd`: the huge page size for hugetlbfs (its `f_bsize`),
/// the base page size otherwise.
pub(crate) fn fd_page_size(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero statfs is a valid value for fstatfs to overwrite.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes one `statfs` into `st`, which is valid for writes.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &raw mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    if i64::from(st.f_type) == HUGETLBFS_MAGIC {
        #[allow(clippy::unnecessary_cast)]
        return Ok(st.f_bsize as usize);
    }
    Ok(base_page_size())
}

/// `struct procmap_query` of `<linux/fs.h>` (Linux 6.11): one mapping's description, asked of
/// `/proc/self/maps` by address.
#[repr(C)]
#[derive(Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

/// `PROCMAP_QUERY`: `_IOWR('f', 17, struct procmap_query)`.
const PROCMAP_QUERY: libc::c_ulong =
    (3 << 30) | ((std::mem::size_of::<ProcmapQuery>() as libc::c_ulong) << 16) | (0x66 << 8) | 17;

/// The page size of the mapping that starts at `start`, for a SysV attachment, which has no
/// descriptor to ask (the kernel does not report `SHM_HUGETLB` in `IPC_STAT`): the
/// `PROCMAP_QUERY` ioctl on `/proc/self/maps` (Linux 6.11, a few microseconds), or on older
/// kernels `KernelPageSize` in `/proc/self/smaps`, read up to the mapping's record.
pub(crate) fn mapping_page_size(start: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let maps = std::fs::File::open("/proc/self/maps")?;
    let mut q = ProcmapQuery {
        size: std::mem::size_of::<ProcmapQuery>() as u64,
        query_addr: start as u64,
        ..ProcmapQuery::default()
    };
    // SAFETY: PROCMAP_QUERY reads and writes one `procmap_query`, whose layout `ProcmapQuery`
    // repeats and whose size it states; the name and build-id buffers are null with size 0,
    // so the kernel writes nothing else.
    let rc = unsafe { libc::ioctl(maps.as_raw_fd(), PROCMAP_QUERY as _, &raw mut q) };
    if rc == 0 {
        if q.vma_start != start as u64 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no mapping starts at {start:#x}"),
            ));
        }
        return usize::try_from(q.vma_page_size)
            .map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // No mapping covers the address.
        Some(libc::ENOENT) => Err(io::Error::new(io::ErrorKind::NotFound, err)),
        // An older kernel: no such ioctl.
        Some(libc::ENOTTY | libc::EINVAL) => smaps_page_size(start),
        _ => Err(err),
    }
}

/// [`mapping_page_size`] from `/proc/self/smaps`.
fn smaps_page_size(start: usize) -> io::Result<usize> {
    use std::io::BufRead;
    let f = std::fs::File::open("/proc/self/smaps")?;
    let prefix = format!("{start:08x}-");
    let mut found = false;
    for line in io::BufReader::new(f).lines() {
        let line = line?;
        if !found {
            found = line.starts_with(&prefix);
            continue;
        }
        if let Some(rest) = line.strip_prefix("KernelPageSize:") {
            let kib: usize = rest
                .trim()
                .strip_suffix("kB")
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
            return Ok(kib * 1024);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no mapping at {start:#x} in /proc/self/smaps"),
    ))
}

/// The base page size.
pub(crate) fn base_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// Touches one byte of every page of the protected mapping `[base, base + len)` so the kernel
/// backs each now; `false` if a page could not be backed (the handler replaced the mapping).
///
/// # Safety
///
/// The range must be a mapping of this process registered as `entry`, mapped during the call,
/// and the calling thread must not have `SIGBUS` blocked.
pub(crate) unsafe fn prefault(base: *mut u8, len: usize, page: usize, entry: &Entry) -> bool {
    let mut off = 0;
    while off < len && !entry.lost() {
        // SAFETY: `base + off` lies inside the mapping (off < len), mapped during the call by
        // the caller's contract. Atomic because another process may write these bytes; the
        // value is discarded (the read only makes the kernel back the page, or raise the
        // SIGBUS the handler turns into `lost`). A read is enough: a shared hugetlb mapping
        // allocates its page on a read fault.
        let byte = unsafe { std::sync::atomic::AtomicU8::from_ptr(base.add(off)) };
        byte.load(Ordering::Relaxed);
        off += page.max(1);
    }
    !entry.lost()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An anonymous private mapping of `len` bytes, unmapped on drop.
    struct Anon(*mut u8, usize);

    impl Anon {
        fn new(len: usize) -> Anon {
            // SAFETY: a fresh private mapping where the kernel chooses; nothing else is touched.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            Anon(p.cast(), len)
        }
    }

    impl Drop for Anon {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `new`, unmapped once.
            unsafe { libc::munmap(self.0.cast(), self.1) };
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "mmap and SIGBUS: Miri isolates the program from them")]
    fn the_page_size_of_a_mapping_comes_from_the_kernel() {
        let m = Anon::new(3 * base_page_size());
        assert_eq!(mapping_page_size(m.0 as usize).unwrap(), base_page_size());
        assert_eq!(smaps_page_size(m.0 as usize).unwrap(), base_page_size());
        for e in [mapping_page_size(8), smaps_page_size(8)] {
            assert_eq!(e.unwrap_err().kind(), io::ErrorKind::NotFound);
        }
        // Inside a mapping, not at its start: not a mapping that starts there.
        let inside = m.0 as usize + base_page_size();
        assert_eq!(
            mapping_page_size(inside).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "mmap and SIGBUS: Miri isolates the program from them")]
    fn a_memfd_on_normal_pages_has_the_base_page_size() {
        use std::os::fd::{AsFd, FromRawFd, OwnedFd};
        // SAFETY: a NUL-terminated name and valid flags.
        let raw = unsafe { libc::memfd_create(c"t".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: a descriptor memfd_create just returned, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        assert_eq!(fd_page_size(fd.as_fd()).unwrap(), base_page_size());
    }

    #[test]
    #[cfg_attr(miri, ignore = "mmap and SIGBUS: Miri isolates the program from them")]
    fn a_protected_range_is_whole_pages() {
        let page = base_page_size();
        let m = Anon::new(2 * page);
        let e = protect(Ident::default(), m.0 as usize, page + 1, page).unwrap();
        assert_eq!(e.len(), 2 * page);
        assert!(!e.lost());
        // Nothing faults in an anonymous mapping: the pre-fault touches both pages.
        // SAFETY: our own live mapping, registered as `e`; SIGBUS is not blocked here.
        assert!(unsafe { prefault(m.0, 2 * page, page, e) });
        e.unregister();
    }

    #[test]
    #[cfg_attr(miri, ignore = "mmap and SIGBUS: Miri isolates the program from them")]
    fn the_signal_mask_is_read_per_thread() {
        assert!(!blocked());
        std::thread::spawn(|| {
            // SAFETY: an all-zero sigset_t is valid for sigemptyset to initialise; the calls
            // change only this thread's mask.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&raw mut set);
                libc::sigaddset(&raw mut set, libc::SIGBUS);
                libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
            }
            assert!(blocked());
        })
        .join()
        .unwrap();
        assert!(!blocked());
    }
}
