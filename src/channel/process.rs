//! Who holds a role, and whether the kernel says that process is still alive.
//!
//! A role's owner word holds an identity: the holder's pid in the low 32 bits and the low 32
//! bits of its start time (clock ticks since boot, field 22 of `/proc/PID/stat`) in the high 32.
//! The start time tells a live process from a later one that reused the pid. Next to it, the
//! claimant records its pid namespace (the inode of `/proc/self/ns/pid`): a pid is only
//! meaningful in the namespace it came from. Liveness is decided from `/proc` (the kernel),
//! never from anything else in the segment; a zombie counts as dead (its memory, and so its
//! attachment, is gone), and so does a process that no longer maps the ring (it `exec`ed); a
//! holder in another pid namespace is [`Liveness::Unknown`], never dead.
//!
//! This process's identity lives in a page that the kernel zeroes in a forked child
//! (`MADV_WIPEONFORK`, and a `pthread_atfork` child handler as well), so a child computes an
//! identity of its own, and a handle can tell in two loads whether it is still in the process
//! that claimed its role ([`current`]).
//!
//! This module reads `/proc` and nothing else; it does not touch the segment.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

pub(crate) use crate::error::Liveness;

/// An owner identity: pid and start time, as stored in an owner word. 0 means "no owner".
pub(crate) type Identity = u64;

/// The pid part of an identity.
pub(crate) fn pid_of(id: Identity) -> u32 {
    id as u32
}

/// Start time of a process in clock ticks since boot, from `/proc/PID/stat`, with its state
/// letter. `None` if the process does not exist (or `/proc` is unreadable).
fn proc_stat(pid: &str) -> Option<(char, u64)> {
    if crate::sync::MIRI {
        return None; // Miri isolates the program from the file system.
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything: split after the
    // last ')'. Then field 3 (state) is first, and field 22 (starttime) is at index 19.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Zombie or dead task states in `/proc/.../stat`.
fn is_dead_state(state: char) -> bool {
    matches!(state, 'Z' | 'X' | 'x')
}

/// Whether any thread of process `pid` is in a state other than zombie/dead.
fn any_live_thread(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        let tid = t.file_name();
        let path = format!("{pid}/task/{}", tid.to_string_lossy());
        proc_stat(&path).is_some_and(|(state, _)| !is_dead_state(state))
    })
}

/// This process's identity and pid namespace, computed on first use in each process. The
/// identity word is 0 until computed, and again in a forked child.
#[repr(C)]
struct ProcessCell {
    identity: AtomicU64,
    pidns: AtomicU64,
    /// 1 once this process registered for other processes' expedited barriers (its wakes may
    /// be light: `crate::sync::barrier`), 0 otherwise. Zeroed in a forked child with the rest.
    light_wake: AtomicU64,
}

/// Bytes of the page the cell lives in (the smallest page size; `mmap` rounds up).
const CELL_PAGE: usize = 4096;

/// The cell, in a page of its own that a forked child sees zeroed (once set up by [`cell`]).
static CELL: AtomicPtr<ProcessCell> = AtomicPtr::new(std::ptr::null_mut());
/// The cell when no page can be mapped (or under Miri): zeroed in a child by the atfork handler
/// only, which a raw `fork` system call skips.
static FALLBACK: ProcessCell = ProcessCell {
    identity: AtomicU64::new(0),
    pidns: AtomicU64::new(0),
    light_wake: AtomicU64::new(0),
};

/// This process's cell, set up on first use.
#[inline]
fn cell() -> &'static ProcessCell {
    // Acquire: pairs with the AcqRel publication in `set_up_cell`, so the mapping is seen.
    let p = CELL.load(Ordering::Acquire);
    if p.is_null() {
        return set_up_cell();
    }
    // SAFETY: a non-null CELL points at a ProcessCell in a page that is never unmapped (or at
    // FALLBACK); the page is zeroed in a forked child, and zero is a valid ProcessCell.
    unsafe { &*p }
}

/// Maps the wipe-on-fork page and registers the atfork handler (once per process: a forked
/// child inherits both).
#[cold]
fn set_up_cell() -> &'static ProcessCell {
    let fallback = std::ptr::from_ref(&FALLBACK).cast_mut();
    let mut fresh = fallback;
    if !crate::sync::MIRI {
        // SAFETY: an anonymous private mapping of one page, no address hint; checked below.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                CELL_PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if page != libc::MAP_FAILED {
            // SAFETY: `page` is the mapping made above. If the kernel is too old for
            // MADV_WIPEONFORK (before 4.14), the atfork handler below still zeroes the cell.
            unsafe { libc::madvise(page, CELL_PAGE, libc::MADV_WIPEONFORK) };
            fresh = page.cast();
        }
    }
    match CELL.compare_exchange(
        std::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => {
            if !crate::sync::MIRI {
                // SAFETY: registers a child handler that only stores to atomics; done once,
                // by the thread that published the cell.
                unsafe { libc::pthread_atfork(None, None, Some(wipe_in_child)) };
            }
            // SAFETY: as in `cell`: `fresh` is the page (or FALLBACK), never unmapped.
            unsafe { &*fresh }
        }
        Err(winner) => {
            if fresh != fallback {
                // SAFETY: our page lost the race and was never published: unmap it.
                unsafe { libc::munmap(fresh.cast(), CELL_PAGE) };
            }
            // SAFETY: as in `cell`.
            unsafe { &*winner }
        }
    }
}

/// `pthread_atfork` child handler: forget the parent's identity (async-signal-safe: atomic
/// stores only).
extern "C" fn wipe_in_child() {
    let p = CELL.load(Ordering::Relaxed);
    if !p.is_null() {
        // SAFETY: as in `cell`.
        unsafe { (*p).identity.store(0, Ordering::Relaxed) };
    }
    FALLBACK.identity.store(0, Ordering::Relaxed);
}

/// This process's identity, computed on first use in each process (after a `fork`, again in
/// the child).
pub(crate) fn me() -> Identity {
    let c = cell();
    // Acquire: pairs with the Release store in `compute`, which follows the namespace's store.
    match c.identity.load(Ordering::Acquire) {
        0 => compute(c),
        id => id,
    }
}

#[cold]
fn compute(c: &ProcessCell) -> Identity {
    // getpid, never a cached value: the child of a raw `fork` system call has its own pid.
    let pid = pid_now();
    let start = proc_stat("self").map_or(0, |(_, s)| s);
    let id = ((start & 0xffff_ffff) << 32) | u64::from(pid);
    c.pidns.store(read_pidns(), Ordering::Relaxed);
    // Before any role is claimed under this identity: a handle wakes light only once its
    // process is a target of the sleeper's barrier.
    c.light_wake.store(
        u64::from(crate::sync::barrier::register()),
        Ordering::Relaxed,
    );
    c.identity.store(id, Ordering::Release);
    id
}

/// Whether this process registered for the sleeper's barrier, so the handles it claims may wake
/// the light way. Call after [`me`] (which registers).
pub(crate) fn light_wake() -> bool {
    // Relaxed: stored before the identity's Release store, which `me` loaded with Acquire.
    cell().light_wake.load(Ordering::Relaxed) != 0
}

/// The identity this process has computed, or 0 if none yet (in particular in a forked child
/// before it claims anything). Two loads of process-local memory: a handle compares it with the
/// identity it claimed with, to find out whether it is still in the claimer's process.
#[inline(always)]
pub(crate) fn current() -> Identity {
    // Relaxed: the cell was published (and our identity stored) before any handle existed: a
    // claim calls `me`, and the handle was created in this thread or sent to it since.
    let p = CELL.load(Ordering::Relaxed);
    if p.is_null() {
        return 0;
    }
    // SAFETY: as in `cell`.
    unsafe { (*p).identity.load(Ordering::Relaxed) }
}

/// The pid of the calling process, asked of the kernel (no cache).
pub(crate) fn pid_now() -> u32 {
    if crate::sync::MIRI {
        return std::process::id();
    }
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() as u32 }
}

/// This process's pid namespace (the inode of `/proc/self/ns/pid`), 0 if unknown.
pub(crate) fn my_pidns() -> u64 {
    me();
    cell().pidns.load(Ordering::Relaxed)
}

fn read_pidns() -> u64 {
    if crate::sync::MIRI {
        return 0;
    }
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

/// Judges the holder `id` of a role, recorded with pid namespace `pidns`, of the ring `ring`
/// this process maps (`None`: a heap ring, no mapping to check):
///
/// - a namespace other than ours (both known): [`Liveness::Unknown`];
/// - otherwise `/proc` decides ([`liveness`]), and a live process must also still map the ring
///   (`/proc/PID/maps` shows a mapping of the same object: see [`Mapped`]), or it has `exec`ed
///   and is dead. Maps we may not read (another user without ptrace rights) mean alive.
///
/// A dead verdict must survive `still_holds()` (a re-read of the owner word): a holder that
/// released its role and unmapped the ring (or exited) after the caller read the owner word is
/// not dead: the caller then finds the role free.
///
/// Cold path only (waits every 10 ms, claims, `gc`): it reads up to three small `/proc` files.
pub(crate) fn judge(
    id: Identity,
    pidns: u64,
    ring: Option<Mapped>,
    still_holds: impl Fn() -> bool,
) -> Liveness {
    if pidns != 0 {
        let mine = my_pidns();
        if mine != 0 && pidns != mine {
            return Liveness::Unknown;
        }
    }
    let verdict = match (liveness(id), ring) {
        (Liveness::Alive, Some(ring)) if !leader_gone(pid_of(id)) => {
            if maps_ring(pid_of(id), ring) {
                Liveness::Alive
            } else {
                Liveness::Dead
            }
        }
        (v, _) => v,
    };
    if verdict == Liveness::Dead && !still_holds() {
        return Liveness::Alive;
    }
    verdict
}

/// Whether the main thread of live process `pid` has exited (other threads run): its maps then
/// read empty, so they cannot be checked.
fn leader_gone(pid: u32) -> bool {
    proc_stat(&pid.to_string()).is_some_and(|(state, _)| is_dead_state(state))
}

/// The device and inode fields of the line of a maps file whose range contains `addr`.
fn mapping_at(maps: &str, addr: usize) -> Option<(&str, &str)> {
    maps.lines().find_map(|l| {
        let mut f = l.split_ascii_whitespace();
        let (lo, hi) = f.next()?.split_once('-')?;
        let lo = usize::from_str_radix(lo, 16).ok()?;
        let hi = usize::from_str_radix(hi, 16).ok()?;
        if !(lo..hi).contains(&addr) {
            return None;
        }
        let mut rest = f.skip(2); // permissions, offset
        Some((rest.next()?, rest.next()?))
    })
}

/// Calls `f` on each line of a `/proc/.../maps` file until it returns `Some`, reading the file
/// in chunks, so a match near the start spares the kernel formatting the rest.
fn scan_maps<T>(path: &str, mut f: impl FnMut(&str) -> Option<T>) -> std::io::Result<Option<T>> {
    use std::io::BufRead;
    let mut r = std::io::BufReader::with_capacity(16 << 10, std::fs::File::open(path)?);
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        // Paths may be any bytes; the fields compared (addresses, device, inode) are ASCII.
        if let Some(v) = f(&String::from_utf8_lossy(&line)) {
            return Ok(Some(v));
        }
    }
}

/// Which ring a liveness check looks for in a holder's `/proc/PID/maps`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mapped {
    /// A SysV segment: its mappings show as `/SYSV<key> (deleted)` with the shmid as inode, so
    /// our own maps need not be read.
    Segment(i32),
    /// A memfd or file mapped in this process at this address: the device and inode come from
    /// our own maps line for it.
    At(usize),
}

/// Whether process `pid` maps the ring `ring`. `true` whenever that cannot be decided: our own
/// mapping not found or anonymous, or the holder's maps unreadable (permissions).
fn maps_ring(pid: u32, ring: Mapped) -> bool {
    if crate::sync::MIRI {
        return true;
    }
    let (dev, inode) = match ring {
        Mapped::Segment(shmid) => (None, shmid.to_string()),
        Mapped::At(addr) => {
            let ours = scan_maps("/proc/self/maps", |l| {
                mapping_at(l, addr).map(|(dev, inode)| (dev.to_owned(), inode.to_owned()))
            });
            match ours {
                Ok(Some((_, inode))) if inode == "0" => return true,
                Ok(Some((dev, inode))) => (Some(dev), inode),
                _ => return true,
            }
        }
    };
    let theirs = scan_maps(&format!("/proc/{pid}/maps"), |l| {
        let mut f = l.split_ascii_whitespace().skip(3);
        let (d, i, path) = (f.next(), f.next(), f.next());
        let same = match &dev {
            Some(dev) => d == Some(dev.as_str()),
            None => path.is_some_and(|p| p.starts_with("/SYSV")),
        };
        (same && i == Some(inode.as_str())).then_some(())
    });
    match theirs {
        Ok(found) => found.is_some(),
        // Gone since `/proc/PID/stat` said it lives: dead.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        // EACCES (another uid without ptrace rights) and the rest: we cannot tell, so alive.
        Err(_) => true,
    }
}

/// Asks the kernel whether the process behind `id` is alive, from `/proc` alone (no namespace
/// or mapping check: see [`judge`]; never [`Liveness::Unknown`]). Costs one small `/proc` read.
pub(crate) fn liveness(id: Identity) -> Liveness {
    let pid = pid_of(id);
    let start = id >> 32;
    if pid == 0 || pid > i32::MAX as u32 {
        return Liveness::Dead;
    }
    match proc_stat(&pid.to_string()) {
        Some((state, s)) => {
            let reused = start != 0 && (s & 0xffff_ffff) != start;
            // The state is the main thread's: a process whose main thread exited while other
            // threads run shows 'Z' too. It is dead only when no thread is left running.
            let dead_state = is_dead_state(state) && !any_live_thread(pid);
            if dead_state || reused {
                Liveness::Dead
            } else {
                Liveness::Alive
            }
        }
        // Miri can neither read /proc nor send signals: it sees only live processes.
        None if crate::sync::MIRI => Liveness::Alive,
        None => {
            // No /proc entry: gone, unless /proc is hidden from us; ask kill(0) then.
            // SAFETY: signal 0 only checks for existence and permission; nothing is sent.
            let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
            if rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
                Liveness::Dead
            } else {
                Liveness::Alive
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "reads /proc, which Miri's isolation forbids")]
    fn we_are_alive_and_have_a_start_time() {
        let id = me();
        assert_eq!(pid_of(id), std::process::id());
        assert_ne!(id >> 32, 0);
        assert_eq!(liveness(id), Liveness::Alive);
        // Same pid, another start time: a reused pid, so the original is dead.
        assert_eq!(liveness(id ^ (1 << 32)), Liveness::Dead);
        assert_eq!(liveness(0), Liveness::Dead);
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads /proc, which Miri's isolation forbids")]
    fn another_namespace_is_unknown_and_a_dead_verdict_is_confirmed() {
        let id = me();
        assert_eq!(me(), id, "computed once per process");
        assert_eq!(current(), id);
        let ns = my_pidns();
        assert_ne!(ns, 0);
        assert_eq!(judge(id, ns ^ 1, None, || true), Liveness::Unknown);
        assert_eq!(judge(id, ns, None, || true), Liveness::Alive);
        assert_eq!(judge(id, 0, None, || true), Liveness::Alive);
        let reused = id ^ (1 << 32);
        assert_eq!(judge(reused, ns, None, || true), Liveness::Dead);
        // The owner word changed meanwhile: the holder let go, it is not dead.
        assert_eq!(judge(reused, ns, None, || false), Liveness::Alive);
    }

    #[test]
    fn a_maps_line_gives_device_and_inode() {
        let maps = "55d0-55e0 r-xp 00000000 08:01 1234 /bin/x\n\
                    7f00-7f10 rw-s 00000000 00:01 42                         /SYSV00000000 (deleted)\n";
        assert_eq!(mapping_at(maps, 0x7f08), Some(("00:01", "42")));
        assert_eq!(mapping_at(maps, 0x7f10), None);
        assert_eq!(mapping_at(maps, 0x55d0), Some(("08:01", "1234")));
    }

    #[test]
    #[cfg_attr(miri, ignore = "spawns a process, which Miri cannot")]
    fn a_reaped_child_is_dead_and_a_zombie_too() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = proc_stat(&pid.to_string()).unwrap().1;
        let id = ((start & 0xffff_ffff) << 32) | u64::from(pid);
        assert_eq!(liveness(id), Liveness::Alive);
        child.kill().unwrap();
        // Not reaped yet: a zombie, which must count as dead.
        let t = std::time::Instant::now();
        while liveness(id) == Liveness::Alive {
            assert!(t.elapsed() < std::time::Duration::from_secs(5));
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        child.wait().unwrap();
        assert_eq!(liveness(id), Liveness::Dead);
    }
}
