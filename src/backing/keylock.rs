//! Per-name locks that the kernel releases when their holder dies: `flock` on a small lock
//! file, one per SysV key (`/dev/shm/.shmpipe-key-XXXXXXXX.lock`) or per ring file
//! (`.<name>.shmpipe-lock` beside it). They make recycling a name race-free (docs/DESIGN.md,
//! "Recycling a key"): whoever decides that what a name holds is stale and replaces it holds
//! the lock exclusively, and whoever attaches to look or to use holds it shared while the
//! attach is made, so the decision never counts an observer as a user and never misses a user.
//!
//! The file holds no data; only its inode matters. Whoever holds the lock exclusively may
//! unlink the file (each holder tries on its way out, so lock files do not pile up), and a
//! locker re-checks after every `flock` that the path still names the inode it locked (else it
//! locked a file already unlinked, and starts again). This module touches no segment and no
//! ring; it only opens, locks, checks and unlinks lock files.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::backing::sysv::Key;
use crate::error::{Error, Ident};

/// Where the lock files of SysV keys live: the memory file system every process sharing the
/// IPC namespace normally shares too (it is also where POSIX shared memory lives).
pub(crate) const KEY_LOCK_DIR: &str = "/dev/shm";

/// How long `Ring::open_or_create` and `Ring::open` wait for a key's lock, on top of their own
/// init timeout. Holders keep it for a create, a classification or an attach (microseconds),
/// or while waiting for a slow creator's ready word (up to an init timeout), so only a stuck
/// or hostile holder makes a locker wait this long; then it fails with [`Error::Locked`].
pub(crate) const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an observer (`gc` removing, `inspect`, `classify_id`) waits: it skips a name whose
/// lock is busy rather than hold up a restart.
pub(crate) const OBSERVER_TIMEOUT: Duration = Duration::from_secs(1);

/// Shared (observers, openers) or exclusive (recyclers, `gc`'s removal, unlinkers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Many at once; excludes `Exclusive`.
    Shared,
    /// One alone.
    Exclusive,
}

/// A held lock; released (and the file unlinked if nobody else holds it) on drop.
#[derive(Debug)]
pub(crate) struct NameLock {
    fd: OwnedFd,
    path: CString,
    mode: Mode,
}

/// The lock file of a SysV key, `None` for [`Key::Private`] (no name to race for).
pub(crate) fn key_lock_path(key: Key) -> Option<PathBuf> {
    match key {
        Key::Private => None,
        Key::Number(k) => {
            Some(Path::new(KEY_LOCK_DIR).join(format!(".shmpipe-key-{:08x}.lock", k as u32)))
        }
    }
}

/// The lock file of a ring file: `.<name>.shmpipe-lock` in the same directory.
pub(crate) fn file_lock_path(path: &Path) -> Result<PathBuf, Error> {
    let name = path.file_name().ok_or_else(|| Error::InvalidConfig {
        what: format!("{} does not name a file", path.display()),
    })?;
    let mut lock = std::ffi::OsString::from(".");
    lock.push(name);
    lock.push(".shmpipe-lock");
    Ok(path.with_file_name(lock))
}

/// Locks the lock file of `key`. `None` for [`Key::Private`] (no name to race for), and when
/// no lock file can be made because its directory is missing, read-only or not writable by
/// us (then the key is used unlocked, as before locks existed; see docs/DESIGN.md).
pub(crate) fn lock_key(key: Key, mode: Mode, timeout: Duration) -> Result<Option<NameLock>, Error> {
    match key_lock_path(key) {
        None => Ok(None),
        Some(path) => NameLock::acquire(&path, mode, timeout, Ident::key(key)),
    }
}

/// Locks the lock file of the ring file at `path` (`None` as for [`lock_key`]).
pub(crate) fn lock_file(
    path: &Path,
    mode: Mode,
    timeout: Duration,
) -> Result<Option<NameLock>, Error> {
    let lock = file_lock_path(path)?;
    NameLock::acquire(&lock, mode, timeout, crate::backing::file::ident(path))
}

fn file_error(path: &CString, op: &'static str, source: io::Error) -> Error {
    Error::File {
        path: PathBuf::from(std::ffi::OsStr::from_bytes(path.as_bytes())),
        op,
        source,
    }
}

/// `stat` of a path: device and inode, `None` if nothing is there.
fn path_id(path: &CString) -> io::Result<Option<(u64, u64)>> {
    // SAFETY: an all-zero stat is a valid value for stat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path; lstat writes one `stat` into `st`.
    if unsafe { libc::lstat(path.as_ptr(), &raw mut st) } != 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(err),
        };
    }
    Ok(Some((st.st_dev, st.st_ino)))
}

/// Opens the lock file, creating it if there is none. Without `O_CREAT` first: in a sticky
/// world-writable directory (`/dev/shm`, `/tmp`) `fs.protected_regular` refuses `O_CREAT` on
/// another user's file even when it exists. A symlink, FIFO or directory at the path is
/// refused (`O_NOFOLLOW`, `O_NONBLOCK`, then the type is checked). `None` if there is none and
/// the directory cannot hold one (missing, read-only, not writable by us).
fn open_lock_file(path: &CString) -> Result<Option<OwnedFd>, Error> {
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK;
    loop {
        // SAFETY: a NUL-terminated path and valid flags.
        let raw = unsafe { libc::open(path.as_ptr(), flags) };
        let raw = if raw >= 0 {
            raw
        } else {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ENOENT) {
                return Err(file_error(path, "open (lock file)", err));
            }
            // SAFETY: as above; the mode is the variadic argument O_CREAT requires.
            let raw = unsafe {
                libc::open(
                    path.as_ptr(),
                    flags | libc::O_CREAT | libc::O_EXCL,
                    0o444 as libc::c_uint,
                )
            };
            if raw < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EEXIST) => continue, // someone else created it: open theirs
                    Some(libc::ENOENT | libc::EROFS | libc::EACCES) => return Ok(None),
                    _ => {}
                }
                return Err(file_error(path, "create (lock file)", err));
            }
            // Readable by everyone, whatever the umask: a lock needs only a read-only open, and
            // every user of the name must be able to take it.
            // SAFETY: fchmod on the descriptor just created, which we own.
            unsafe { libc::fchmod(raw, 0o444) };
            raw
        };
        // SAFETY: open returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let st = crate::backing::memfd::fstat(&fd)
            .map_err(|e| file_error(path, "fstat (lock file)", e))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(file_error(
                path,
                "open (lock file)",
                io::Error::new(io::ErrorKind::InvalidData, "not a regular file"),
            ));
        }
        return Ok(Some(fd));
    }
}

impl NameLock {
    /// Takes the lock at `path` in `mode`, waiting up to `timeout` for holders of the other
    /// mode (polling: `flock` cannot time out by itself).
    fn acquire(
        path: &Path,
        mode: Mode,
        timeout: Duration,
        ident: Ident,
    ) -> Result<Option<NameLock>, Error> {
        let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::InvalidConfig {
            what: format!("path {} contains a NUL byte", path.display()),
        })?;
        let op = match mode {
            Mode::Shared => libc::LOCK_SH,
            Mode::Exclusive => libc::LOCK_EX,
        };
        let start = Instant::now();
        let mut pause = Duration::from_micros(20);
        loop {
            let Some(fd) = open_lock_file(&path)? else {
                return Ok(None);
            };
            loop {
                // SAFETY: flock on our own descriptor.
                if unsafe { libc::flock(fd.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
                    break;
                }
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                    return Err(file_error(&path, "flock", err));
                }
                let waited = start.elapsed();
                if waited >= timeout {
                    return Err(Error::Locked {
                        ident,
                        lock: PathBuf::from(std::ffi::OsStr::from_bytes(path.as_bytes())),
                        waited,
                    });
                }
                std::thread::sleep(pause.min(timeout - waited));
                pause = (pause * 2).min(Duration::from_millis(2));
            }
            // The lock is ours; it counts only if the path still names this inode (an
            // exclusive holder may have unlinked it while we waited: then start again).
            let st =
                crate::backing::memfd::fstat(&fd).map_err(|e| file_error(&path, "fstat", e))?;
            let here = path_id(&path).map_err(|e| file_error(&path, "stat (lock file)", e))?;
            if here == Some((st.st_dev, st.st_ino)) {
                return Ok(Some(NameLock { fd, path, mode }));
            }
        }
    }
}

impl Drop for NameLock {
    /// Unlinks the lock file if nobody else holds it (so lock files do not pile up), then
    /// releases the lock (closing the descriptor). Holding it exclusively makes the unlink
    /// safe: anyone who opened the file meanwhile and locks it next finds the path no longer
    /// names it and starts again with a new file. Errors are ignored: a file left behind (not
    /// ours to unlink in a sticky directory, say) costs nothing and `gc` removes it.
    fn drop(&mut self) {
        let fd = self.fd.as_raw_fd();
        // Shared: try to become the only holder. A failed conversion drops the shared lock,
        // which is fine: we are leaving, and the remaining holder tries on its way out.
        // SAFETY: flock on our own descriptor.
        let exclusive = self.mode == Mode::Exclusive
            || unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0;
        // Only while the path still names our inode (it always does unless someone outside
        // this protocol replaced the file).
        let ours = crate::backing::memfd::fstat(&self.fd)
            .ok()
            .zip(path_id(&self.path).ok().flatten())
            .is_some_and(|(st, here)| here == (st.st_dev, st.st_ino));
        if exclusive && ours {
            // SAFETY: a NUL-terminated path; unlink touches no memory of ours.
            unsafe { libc::unlink(self.path.as_ptr()) };
        }
        // Closing the descriptor (dropping `fd`) releases the lock.
    }
}

/// `gc` of lock files: removes every key lock file in [`KEY_LOCK_DIR`] that nobody holds
/// (one left by a process that died holding it, or that could not unlink another user's).
/// Returns how many it removed. Safe at any time: a lock file is only unlinked while held
/// exclusively, and lockers re-check the inode.
pub(crate) fn sweep_key_locks() -> usize {
    let Ok(dir) = std::fs::read_dir(KEY_LOCK_DIR) else {
        return 0;
    };
    let mut removed = 0;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with(".shmpipe-key-") && name.ends_with(".lock")) {
            continue;
        }
        let path = entry.path();
        if let Ok(Some(lock)) =
            NameLock::acquire(&path, Mode::Exclusive, Duration::ZERO, Ident::default())
        {
            drop(lock); // unlinks
            removed += usize::from(!path.exists());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_ring_path(what: &str) -> PathBuf {
        std::env::temp_dir().join(format!("shmpipe-keylock-{}-{what}", std::process::id()))
    }

    #[test]
    #[cfg_attr(miri, ignore = "flock and files: Miri isolates the program from them")]
    fn exclusive_excludes_shared_and_the_last_holder_unlinks() {
        let ring = temp_ring_path("modes");
        let lock = file_lock_path(&ring).unwrap();
        let a = lock_file(&ring, Mode::Shared, Duration::ZERO)
            .unwrap()
            .unwrap();
        let b = lock_file(&ring, Mode::Shared, Duration::ZERO)
            .unwrap()
            .unwrap();
        assert!(matches!(
            lock_file(&ring, Mode::Exclusive, Duration::from_millis(20)),
            Err(Error::Locked { .. })
        ));
        drop(a);
        assert!(lock.exists(), "unlinked while another holder had it");
        assert!(matches!(
            lock_file(&ring, Mode::Exclusive, Duration::ZERO),
            Err(Error::Locked { .. })
        ));
        drop(b);
        assert!(!lock.exists(), "the last holder leaves no lock file");
        let c = lock_file(&ring, Mode::Exclusive, Duration::ZERO)
            .unwrap()
            .unwrap();
        assert!(matches!(
            lock_file(&ring, Mode::Shared, Duration::ZERO),
            Err(Error::Locked { .. })
        ));
        drop(c);
        assert!(!lock.exists());
    }

    #[test]
    #[cfg_attr(miri, ignore = "flock and files: Miri isolates the program from them")]
    fn a_waiter_whose_file_was_unlinked_locks_the_new_one() {
        let ring = temp_ring_path("unlinked");
        let first = lock_file(&ring, Mode::Exclusive, Duration::ZERO)
            .unwrap()
            .unwrap();
        let waiter = std::thread::spawn({
            let ring = ring.clone();
            move || {
                lock_file(&ring, Mode::Exclusive, Duration::from_secs(10))
                    .unwrap()
                    .unwrap()
            }
        });
        // Let the waiter open the file and start polling, then unlink it on release.
        std::thread::sleep(Duration::from_millis(50));
        drop(first);
        let second = waiter.join().unwrap();
        // The waiter holds the file the path names now, not the unlinked one: nobody else
        // can take the lock.
        assert!(file_lock_path(&ring).unwrap().exists());
        assert!(matches!(
            lock_file(&ring, Mode::Shared, Duration::ZERO),
            Err(Error::Locked { .. })
        ));
        drop(second);
        assert!(!file_lock_path(&ring).unwrap().exists());
    }

    #[test]
    #[cfg_attr(miri, ignore = "flock and files: Miri isolates the program from them")]
    fn sweep_removes_only_unheld_key_locks() {
        let base = 0x7e00_0000 | ((std::process::id() & 0x3f_ffff) << 2) as i32;
        let (held_key, left_key) = (Key::Number(base), Key::Number(base + 1));
        let held = lock_key(held_key, Mode::Shared, Duration::ZERO)
            .unwrap()
            .unwrap();
        // A lock file left behind by a holder that died before unlinking it.
        let left = key_lock_path(left_key).unwrap();
        std::fs::write(&left, b"").unwrap();
        sweep_key_locks();
        assert!(!left.exists(), "an unheld lock file is swept");
        assert!(
            key_lock_path(held_key).unwrap().exists(),
            "a held one stays"
        );
        drop(held);
        assert!(!key_lock_path(held_key).unwrap().exists());
        assert!(
            lock_key(Key::Private, Mode::Exclusive, Duration::ZERO)
                .unwrap()
                .is_none()
        );
    }
}
