//! A ring in a memory-mapped file (`MAP_SHARED`), opened by path: in `/dev/shm` (memory, gone
//! at reboot) or on a disk (the ring's contents survive a restart of both sides).
//!
//! Unlike a SysV segment or a sealed memfd, a file can shrink under its mappings: anyone who may
//! write it can `truncate` it, and the next access to a page past the new end raises `SIGBUS`,
//! which kills the process. shmpipe does not let that signal reach the user:
//!
//! - The size is checked before mapping (a file smaller than a header, or than the ring its
//!   header describes, is refused with a typed error; nothing is touched).
//! - While a file ring is mapped, it is protected by the `SIGBUS` handler of `crate::backing::sigbus`
//!   (as every ring mapping is): a fault inside it replaces the whole mapping with private
//!   zero-filled memory and records the loss; the faulting access retries and reads zeros. The
//!   ring checks the flag after each payload copy and in every error and wait path, and
//!   reports [`Corruption::MemoryLost`](crate::Corruption::MemoryLost) (sticky, with
//!   [`LostMemory::File`](crate::LostMemory::File)) instead of delivering the zeros.
//! - A new ring is built in a temporary file next to the target and linked into place only
//!   once its header is complete, so an opener never sees a half-written ring, and a ring's
//!   blocks are allocated up front (`posix_fallocate`), so a full disk fails the create instead
//!   of faulting later.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Ident};

/// Largest file accepted as a ring: the header plus the largest slot array.
const MAX_FILE: u64 = crate::layout::HEADER_SIZE as u64 + crate::layout::MAX_ARRAY_BYTES;

/// A shared mapping of a whole ring file, unmapped on drop.
pub(crate) struct FileMap {
    ptr: NonNull<u8>,
    len: usize,
    path: &'static Path,
    /// Device and inode of the file mapped, to unlink the path only while it names this file.
    id: (u64, u64),
    guard: &'static crate::backing::sigbus::Entry,
}

// SAFETY: the mapping is plain shared memory reached only through raw pointers and atomics (the
// same rules as a SysV attachment); the descriptor is an owned fd; the registry entry is a
// static of atomics.
unsafe impl Send for FileMap {}
// SAFETY: as for Send.
unsafe impl Sync for FileMap {}

/// The identity of a file ring in errors: its path, interned (each distinct path is leaked
/// once, so `Ident` stays `Copy`).
pub(crate) fn ident(path: &Path) -> Ident {
    static PATHS: Mutex<Option<HashMap<PathBuf, &'static PathBuf>>> = Mutex::new(None);
    let mut map = PATHS.lock().unwrap_or_else(|e| e.into_inner());
    let map = map.get_or_insert_with(HashMap::new);
    let interned = match map.get(path) {
        Some(p) => *p,
        None => {
            let leaked: &'static PathBuf = Box::leak(Box::new(path.to_path_buf()));
            map.insert(path.to_path_buf(), leaked);
            leaked
        }
    };
    Ident {
        path: Some(interned),
        ..Ident::default()
    }
}

fn c_path(path: &Path) -> Result<CString, Error> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::InvalidConfig {
        what: format!("path {} contains a NUL byte", path.display()),
    })
}

fn sys(path: &Path, op: &'static str, source: io::Error) -> Error {
    Error::File {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn last(path: &Path, op: &'static str) -> Error {
    sys(path, op, io::Error::last_os_error())
}

fn fstat(path: &Path, fd: &OwnedFd) -> Result<libc::stat, Error> {
    crate::backing::memfd::fstat(fd).map_err(|e| sys(path, "fstat", e))
}

/// Removes a file, ignoring errors: clean-up of our own temporary file.
fn unlink_quietly(path: &CString) {
    // SAFETY: a NUL-terminated path; unlink touches no memory of ours.
    unsafe { libc::unlink(path.as_ptr()) };
}

/// A new ring file, mapped but not yet visible at its path (see [`FileMap::create`]).
pub(crate) struct Unlinked {
    map: FileMap,
    tmp: CString,
}

impl Unlinked {
    /// The mapping, to write the header into.
    pub(crate) fn map(&self) -> &FileMap {
        &self.map
    }

    /// Makes the file visible at its path (`link`, which never replaces an existing file).
    pub(crate) fn link(self) -> Result<FileMap, Error> {
        let path = self.map.path;
        let target = c_path(path)?;
        // SAFETY: two NUL-terminated paths; link touches no memory of ours.
        let rc = unsafe { libc::link(self.tmp.as_ptr(), target.as_ptr()) };
        let err = io::Error::last_os_error();
        unlink_quietly(&self.tmp);
        if rc != 0 {
            return Err(if err.raw_os_error() == Some(libc::EEXIST) {
                Error::FileExists {
                    path: path.to_path_buf(),
                }
            } else {
                sys(path, "link", err)
            });
        }
        Ok(self.map)
    }
}

impl FileMap {
    /// Creates a zeroed ring file of `len` bytes for `path` under a temporary name in the same
    /// directory, with `mode`, its blocks allocated, and maps it. [`Unlinked::link`] then gives
    /// it its name; dropping the `Unlinked` instead removes it.
    pub(crate) fn create(path: &Path, len: usize, mode: u32) -> Result<Unlinked, Error> {
        if len as u64 > MAX_FILE {
            return Err(Error::InvalidConfig {
                what: format!("a ring file of {len} bytes"),
            });
        }
        let name = path.file_name().ok_or_else(|| Error::InvalidConfig {
            what: format!("{} does not name a file", path.display()),
        })?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        // Unique among live processes (pid) and across a process's own creates (a counter).
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        tmp_name.push(format!(
            ".shmpipe-new-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = c_path(&path.with_file_name(tmp_name))?;
        // SAFETY: a NUL-terminated path and valid flags; the mode is passed as the variadic
        // argument O_CREAT requires.
        let raw = unsafe {
            libc::open(
                tmp.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if raw < 0 {
            return Err(last(path, "open (temporary file)"));
        }
        // SAFETY: open returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let result = (|| {
            // open's mode is filtered by the umask; the ring's mode is what the caller asked.
            // SAFETY: fchmod on our own descriptor.
            if unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) } != 0 {
                return Err(last(path, "fchmod"));
            }
            // Allocating the blocks now turns "disk full" into an error here, not a SIGBUS on
            // the first write to a hole later. (It also sets the size.)
            // SAFETY: posix_fallocate on our own descriptor; no memory is passed.
            let rc = unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, len as libc::off_t) };
            if rc != 0 {
                return Err(sys(
                    path,
                    "posix_fallocate",
                    io::Error::from_raw_os_error(rc),
                ));
            }
            let st = fstat(path, &fd)?;
            FileMap::map(path, fd, len, (st.st_dev, st.st_ino))
        })();
        match result {
            Ok(map) => Ok(Unlinked { map, tmp }),
            Err(e) => {
                unlink_quietly(&tmp);
                Err(e)
            }
        }
    }

    /// Opens and maps an existing ring file, after checking that it is a regular file that
    /// `check` accepts (its owner and mode, `crate::backing::access`) and of a plausible size. The
    /// caller validates the header against [`FileMap::len`].
    pub(crate) fn open(
        path: &Path,
        check: &dyn Fn(&libc::stat) -> Result<(), Error>,
    ) -> Result<FileMap, Error> {
        let c = c_path(path)?;
        // SAFETY: a NUL-terminated path and valid flags.
        let raw = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if raw < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::ENOENT) => Error::FileNotFound {
                    path: path.to_path_buf(),
                },
                _ => sys(path, "open", err),
            });
        }
        // SAFETY: open returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let st = fstat(path, &fd)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Error::BadHeader {
                ident: ident(path),
                what: "not a regular file".into(),
            });
        }
        // Who owns the file we hold (not whatever the path names by now), before mapping it.
        check(&st)?;
        let size = st.st_size as u64;
        if size < crate::layout::HEADER_SIZE as u64 {
            return Err(Error::SegmentTooSmall {
                ident: ident(path),
                claimed: crate::layout::HEADER_SIZE as u64,
                actual: size,
            });
        }
        // A file larger than any ring is mapped only as far as the largest ring reaches; the
        // header's ring size is then checked against that.
        let len = size.min(MAX_FILE) as usize;
        FileMap::map(path, fd, len, (st.st_dev, st.st_ino))
    }

    fn map(path: &Path, fd: OwnedFd, len: usize, id: (u64, u64)) -> Result<FileMap, Error> {
        // A file on a hugetlbfs mount is mapped in whole huge pages: the protected range must
        // cover them exactly (see `sigbus::protect`).
        let page = crate::backing::sigbus::fd_page_size(fd.as_fd())
            .map_err(|e| sys(path, "fstatfs", e))?;
        let ptr = crate::backing::memfd::map_shared(&fd, len).map_err(|e| sys(path, "mmap", e))?;
        let guard =
            match crate::backing::sigbus::protect(ident(path), ptr.as_ptr() as usize, len, page) {
                Ok(g) => g,
                Err(e) => {
                    // SAFETY: the mapping just made, never shared.
                    unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
                    return Err(e);
                }
            };
        let path = ident(path).path.expect("a file ident has a path").as_path();
        // The mapping keeps the file; the descriptor is no longer needed.
        drop(fd);
        Ok(FileMap {
            ptr,
            len,
            path,
            id,
            guard,
        })
    }

    /// Start of the mapping (page-aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Bytes mapped.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The path the ring was created or opened at.
    pub(crate) fn path(&self) -> &'static Path {
        self.path
    }

    /// The `SIGBUS` registry entry of this mapping.
    pub(crate) fn protection(&self) -> &'static crate::backing::sigbus::Entry {
        self.guard
    }

    /// Removes the path if it still names the file mapped (a file put there since is left
    /// alone). The mapping and the file's memory stay until the last side unmaps it. The check
    /// and the unlink are made holding the path's lock exclusively, so that a recycler
    /// (`Ring::open_or_create` at a path) cannot link a new file between them.
    pub(crate) fn unlink(&self) -> Result<(), Error> {
        let _lock = crate::backing::keylock::lock_file(
            self.path,
            crate::backing::keylock::Mode::Exclusive,
            crate::backing::keylock::LOCK_TIMEOUT,
        )?;
        self.unlink_locked()
    }

    /// [`FileMap::unlink`] for a caller that holds the path's lock already.
    pub(crate) fn unlink_locked(&self) -> Result<(), Error> {
        let c = c_path(self.path)?;
        if !self.names_this_file(&c)? {
            return Ok(());
        }
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::unlink(c.as_ptr()) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ENOENT) {
                return Err(sys(self.path, "unlink", err));
            }
        }
        Ok(())
    }

    /// Whether the path still names the file mapped (`false` if it cannot be told).
    pub(crate) fn linked(&self) -> bool {
        c_path(self.path).is_ok_and(|c| self.names_this_file(&c).unwrap_or(false))
    }

    /// Whether `c` (our path) names the file mapped: `false` if nothing is there or another
    /// file is (device and inode compared).
    fn names_this_file(&self, c: &CString) -> Result<bool, Error> {
        // SAFETY: an all-zero stat is a valid value for stat to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path; stat writes one `stat` into `st`.
        if unsafe { libc::stat(c.as_ptr(), &raw mut st) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOENT) {
                return Ok(false);
            }
            return Err(sys(self.path, "stat", err));
        }
        Ok((st.st_dev, st.st_ino) == self.id)
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        // Unregister first: once the mapping is gone its addresses may be reused, and a fault
        // there must not be taken for ours. No thread of ours can be inside the mapping now
        // (the region, which every access goes through, is being dropped).
        // (The length is read first: once unregistered, the entry may describe another mapping.)
        let len = self.guard.len();
        self.guard.unregister();
        // SAFETY: `ptr` and the registered length (`len` in whole pages) are exactly the mapping
        // made in `map` (or its zero-filled replacement at the same addresses), unmapped once,
        // here.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), len) };
    }
}

impl std::fmt::Debug for FileMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileMap")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish()
    }
}
