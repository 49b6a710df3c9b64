//! A ring in an anonymous, sealed `memfd` instead of a SysV segment: no key, no `ipcs` entry,
//! nothing to remove. The memory lives while a file descriptor or a mapping of it does, and is
//! shared by handing the descriptor to the other process, across `fork`/`exec` or over a Unix
//! socket (`SCM_RIGHTS`, [`send_fd`]/[`recv_fd`]).
//!
//! The creator seals the file against shrinking and growing before anyone maps it, so no
//! process can truncate it under a mapping (which would turn the next access into `SIGBUS`);
//! an opener refuses a descriptor without those seals ([`Error::BadHeader`]), since a file that
//! can shrink could crash it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::ptr::NonNull;

use crate::error::{Error, Ident};

/// The seals a ring's memfd must carry: its size can never change.
const SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// A shared mapping of a whole sealed memfd, unmapped on drop (the descriptor closes with it).
pub(crate) struct MemfdMap {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
    /// The page size of the memfd (the huge page size for a hugetlb memfd).
    page: usize,
    /// The mapping's entry in the `SIGBUS` registry (`crate::backing::sigbus`).
    guard: &'static crate::backing::sigbus::Entry,
}

// SAFETY: the mapping is plain shared memory reached only through raw pointers and atomics (the
// same rules as a SysV attachment); the descriptor is an owned fd.
unsafe impl Send for MemfdMap {}
// SAFETY: as for Send.
unsafe impl Sync for MemfdMap {}

fn sys(op: &'static str) -> Error {
    Error::Sys {
        ident: Ident::default(),
        op,
        source: io::Error::last_os_error(),
    }
}

impl MemfdMap {
    /// Creates a zeroed memfd of `len` bytes, seals its size, and maps it. With `huge`, the
    /// memfd is backed by huge pages (`MFD_HUGETLB`) and `len` is rounded up to whole ones.
    pub(crate) fn create(len: usize, huge: bool) -> Result<MemfdMap, Error> {
        let huge_error = |size: usize, source: io::Error, hint: &'static str| Error::HugePages {
            ident: Ident::default(),
            size,
            source,
            hint,
        };
        let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
        let len = if huge {
            flags |= libc::MFD_HUGETLB;
            match crate::backing::sysv::huge_page_size() {
                Some(h) => len.div_ceil(h).checked_mul(h).ok_or_else(|| {
                    huge_error(
                        len,
                        io::Error::from_raw_os_error(libc::EINVAL),
                        "size overflows when rounded up to the huge page size",
                    )
                })?,
                None => len,
            }
        } else {
            len
        };
        // SAFETY: the name is a NUL-terminated static string; the flags are valid.
        let raw = unsafe { libc::memfd_create(c"shmpipe".as_ptr(), flags) };
        if raw < 0 {
            if huge {
                return Err(huge_error(
                    len,
                    io::Error::last_os_error(),
                    "the kernel has no hugetlbfs support for memfd (CONFIG_HUGETLBFS)",
                ));
            }
            return Err(sys("memfd_create"));
        }
        // SAFETY: memfd_create returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let size = libc::off_t::try_from(len).map_err(|_| Error::InvalidConfig {
            what: format!("a memfd of {len} bytes"),
        })?;
        // SAFETY: ftruncate on our own descriptor; no memory is passed.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
            return Err(sys("ftruncate"));
        }
        // SAFETY: fcntl(F_ADD_SEALS) on our own descriptor takes an integer argument.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
            return Err(sys("fcntl(F_ADD_SEALS)"));
        }
        MemfdMap::map(fd, len).map_err(|e| match e {
            // Huge pages are reserved when the file is mapped: ENOMEM means none are free.
            Error::Sys { source, .. } if huge => huge_error(
                len,
                source,
                "not enough free huge pages: see /proc/sys/vm/nr_hugepages and \
                 HugePages_Free in /proc/meminfo",
            ),
            e => e,
        })
    }

    /// Maps a ring memfd received from its creator, after checking its seals, that `check`
    /// accepts it (its owner and mode, `crate::backing::access`), and its size.
    pub(crate) fn open(
        fd: OwnedFd,
        check: &dyn Fn(&libc::stat) -> Result<(), Error>,
    ) -> Result<MemfdMap, Error> {
        // SAFETY: fcntl(F_GET_SEALS) on a descriptor we own takes no argument.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 {
            return Err(Error::BadHeader {
                ident: Ident::default(),
                what: format!(
                    "the descriptor is not a sealable memfd: {}",
                    io::Error::last_os_error()
                ),
            });
        }
        if seals & (libc::F_SEAL_SHRINK | libc::F_SEAL_GROW)
            != libc::F_SEAL_SHRINK | libc::F_SEAL_GROW
        {
            return Err(Error::BadHeader {
                ident: Ident::default(),
                what: format!(
                    "the memfd is not sealed against resizing (seals {seals:#x}): it could \
                     shrink under the mapping"
                ),
            });
        }
        let st = fstat(&fd).map_err(|source| Error::Sys {
            ident: Ident::default(),
            op: "fstat",
            source,
        })?;
        check(&st)?;
        let len = usize::try_from(st.st_size).map_err(|_| Error::BadHeader {
            ident: Ident::default(),
            what: format!("memfd size {}", st.st_size),
        })?;
        MemfdMap::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<MemfdMap, Error> {
        if len == 0 {
            return Err(Error::SegmentTooSmall {
                ident: Ident::default(),
                claimed: crate::layout::HEADER_SIZE as u64,
                actual: 0,
            });
        }
        // The file's size is sealed at `len` (checked or set by the caller), so it cannot shrink
        // under the mapping; its pages can still vanish (a hole punched in a hugetlb memfd
        // with the pool empty), which the SIGBUS registry covers.
        let page =
            crate::backing::sigbus::fd_page_size(fd.as_fd()).map_err(|source| Error::Sys {
                ident: Ident::default(),
                op: "fstatfs",
                source,
            })?;
        let ptr = map_shared(&fd, len).map_err(|_| sys("mmap"))?;
        let guard = match crate::backing::sigbus::protect(
            Ident::default(),
            ptr.as_ptr() as usize,
            len,
            page,
        ) {
            Ok(g) => g,
            Err(e) => {
                // SAFETY: the mapping just made, never shared.
                unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
                return Err(e);
            }
        };
        Ok(MemfdMap {
            fd,
            ptr,
            len,
            page,
            guard,
        })
    }

    /// Start of the mapping (page-aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Bytes mapped: the whole (sealed) file.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The page size of the memfd: the huge page size for a hugetlb memfd.
    pub(crate) fn page_size(&self) -> usize {
        self.page
    }

    /// The mapping's `SIGBUS` registry entry.
    pub(crate) fn protection(&self) -> &'static crate::backing::sigbus::Entry {
        self.guard
    }

    /// The memfd, to hand to the peer.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for MemfdMap {
    fn drop(&mut self) {
        // The registered length first (the entry may describe another mapping once
        // unregistered), and unregister before unmapping.
        let len = self.guard.len();
        self.guard.unregister();
        // SAFETY: `ptr` and the registered length (`len` in whole pages) are exactly the mapping
        // made in `map` (or the SIGBUS handler's zero-filled replacement at the same
        // addresses), unmapped once, here; no reference into it outlives the MemfdMap (the
        // region borrows it through `self`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), len) };
    }
}

/// `fstat` of a descriptor we hold (the memfd or a ring file).
pub(crate) fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `stat` into `st`, which is valid for writes.
    if unsafe { libc::fstat(fd.as_raw_fd(), &raw mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Maps `len` bytes of `fd` from offset 0, shared and writable, where the kernel chooses.
pub(crate) fn map_shared(fd: &OwnedFd, len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh shared mapping of `len` bytes of a descriptor we hold, at an address the
    // kernel chooses; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Sends a file descriptor (a ring's [`memfd`](crate::Ring::memfd)) over a Unix stream socket
/// with `SCM_RIGHTS`, with one byte of ordinary data.
///
/// # Errors
///
/// The socket's `sendmsg` error.
pub fn send_fd(sock: &UnixStream, fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // u64s give the control buffer the alignment of a cmsghdr.
    let mut buf = [0u64; 8];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    debug_assert!(space <= std::mem::size_of_val(&buf));
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points to `space` writable, aligned bytes, so CMSG_FIRSTHDR returns
    // a header inside `buf`, and CMSG_DATA of it has room for one c_int (CMSG_SPACE above).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        libc::CMSG_DATA(cmsg)
            .cast::<libc::c_int>()
            .write_unaligned(fd.as_raw_fd());
    }
    // SAFETY: `msg` describes valid buffers (`iov` over `byte`, the control buffer) that live
    // across the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &raw const msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives a file descriptor sent with [`send_fd`]. The descriptor is close-on-exec.
///
/// # Errors
///
/// The socket's `recvmsg` error; `UnexpectedEof` if the peer closed the socket; `InvalidData`
/// if the message carried no descriptor.
pub fn recv_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut buf = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&buf) as _;
    // SAFETY: `msg` describes valid writable buffers that live across the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    // SAFETY: the kernel filled `msg`'s control buffer; CMSG_FIRSTHDR/NXTHDR walk it within
    // msg_controllen, and CMSG_DATA of an SCM_RIGHTS header holds c_ints.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let raw = libc::CMSG_DATA(cmsg).cast::<libc::c_int>().read_unaligned();
                // The kernel installed `raw` in our table for us: we own it now.
                return Ok(OwnedFd::from_raw_fd(raw));
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "the message carried no file descriptor",
    ))
}
