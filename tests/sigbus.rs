//! No `SIGBUS` reaches the program from any backing (docs/DESIGN.md, "When memory disappears:
//! SIGBUS"): huge pages that vanish under a ring (a hostile `SHM_NORESERVE` creator, a peer's
//! `MADV_REMOVE`, a hole punched in a sealed hugetlb memfd, each with the pool drained) are
//! refused or reported as a typed error, and a thread with `SIGBUS` blocked is refused a ring
//! whose memory can vanish.
//!
//! The victim always runs in a child process (this binary re-run in a role): the parent
//! asserts that it exits normally, having printed the typed error, instead of dying of
//! signal 7.
//!
//! The huge-page tests change `/proc/sys/vm/nr_hugepages` (as root): [`HugePool`] takes a
//! mutex that serialises them within this binary, and restores the old value when dropped,
//! also when a test fails. Without root or hugetlb support they print why and return.
mod common;
mod huge;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{ChildProcess, RemoveFile, RemoveOnDrop, child_role, param, print_result};
use huge::{HostileSegment, HugePool, two_page_config};
use shmpipe::{Consumer, Error, Memfd, Producer, Ring, RingConfig, Segment, Shmid, TrySendError};

const DIR_VAR: &str = "SHMPIPE_TEST_SYNC_DIR";
const SHMID_VAR: &str = "SHMPIPE_TEST_SHMID";
const FD_VAR: &str = "SHMPIPE_TEST_FD";
const PATH_VAR: &str = "SHMPIPE_TEST_RING_PATH";
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// A directory for the files parent and child synchronise with, removed on drop.
struct SyncDir(PathBuf);

impl SyncDir {
    fn new(what: &str) -> SyncDir {
        let p = common::temp_path(what);
        std::fs::create_dir(&p).unwrap();
        SyncDir(p)
    }
}

impl Drop for SyncDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `name` in `dir` (atomically: written aside, then renamed).
fn signal(dir: &Path, name: &str, content: &str) {
    let tmp = dir.join(format!(".{name}"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

/// Waits (bounded) for `name` in `dir` and returns its content.
fn wait_for(dir: &Path, name: &str) -> String {
    let deadline = Instant::now() + CHILD_TIMEOUT;
    loop {
        if let Ok(s) = std::fs::read_to_string(dir.join(name)) {
            return s;
        }
        assert!(Instant::now() < deadline, "no {name} in {dir:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Fills the ring from a fresh producer until it is full or fails; the typed error, or `full`.
fn fill(ring: &Ring) -> String {
    match ring.producer() {
        Ok(mut tx) => fill_from(&mut tx),
        Err(e) => format!("{e:?}"),
    }
}

/// A ring that has been used for a while: every page of its slots written and read once (a
/// page the victim never touched would keep its huge page reservation through a hole punch).
fn warmed_up(ring: &Ring) -> (Producer, Consumer) {
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    assert_eq!(fill_from(&mut tx), "full");
    let mut buf = [0u8; 1000];
    while rx.try_recv(&mut buf).is_ok() {}
    (tx, rx)
}

/// Sends until the ring is full or the producer fails; the typed error, or `full`.
fn fill_from(tx: &mut Producer) -> String {
    let msg = [0xa5u8; 1000];
    loop {
        match tx.try_send(&msg) {
            Ok(()) => {}
            Err(TrySendError::Full) => return "full".into(),
            Err(e) => return format!("{e:?}"),
        }
    }
}

/// Waits for the victim and fails unless it exited normally (not by a signal) with 0.
fn assert_survived(mut child: ChildProcess) -> String {
    let status = child.wait_status(CHILD_TIMEOUT);
    assert_eq!(
        status.signal(),
        None,
        "the victim died of signal {:?} (7 is SIGBUS); its output:\n{}",
        status.signal(),
        child.output()
    );
    assert!(status.success(), "the victim failed:\n{}", child.output());
    child.output()
}

/// An opener's configuration that accepts huge pages made by another process.
fn accepting() -> RingConfig {
    RingConfig::new().accept_huge_pages(true)
}

/// A hostile creator makes a SysV segment with `SHM_HUGETLB | SHM_NORESERVE` holding a valid
/// ring header, while the pool cannot back its second page. The victim opening it is refused
/// (huge pages from another creator, not accepted), and with the opt-in gets
/// `Error::HugePages` at attach (every page is touched there), never a signal.
#[test]
fn a_noreserve_hugetlb_segment_is_refused_or_a_typed_error() {
    if child_role().is_some() {
        let shmid: i32 = param(SHMID_VAR);
        match Ring::open(Shmid(shmid), &RingConfig::new()) {
            Err(Error::HugePagesNotAccepted { page_size, .. }) => {
                assert_eq!(page_size, 2 << 20);
                print_result("refused", "HugePagesNotAccepted");
            }
            Err(e) => panic!("expected HugePagesNotAccepted, got {e:?}"),
            Ok(ring) => print_result("refused", fill(&ring)),
        }
        match Ring::open(Shmid(shmid), &accepting()) {
            Err(e @ Error::HugePages { .. }) => {
                assert!(e.to_string().contains("SHM_NORESERVE"), "{e}");
                print_result("accepted", "HugePages");
            }
            Err(e) => panic!("expected HugePages, got {e:?}"),
            Ok(ring) => print_result("accepted", fill(&ring)),
        }
        return;
    }
    let Some(pool) = HugePool::take() else { return };
    // One free page: the header's; nothing for the second page of the segment.
    if !pool.set_extra(1) {
        return;
    }
    let hostile = HostileSegment::new();
    let shmid = hostile.shmid;
    let child = ChildProcess::spawn(
        "a_noreserve_hugetlb_segment_is_refused_or_a_typed_error",
        "victim",
        &[(SHMID_VAR, shmid.to_string())],
    );
    let out = assert_survived(child);
    assert_eq!(
        common::child_result::<String>(&out, "refused"),
        "HugePagesNotAccepted"
    );
    assert_eq!(
        common::child_result::<String>(&out, "accepted"),
        "HugePages"
    );
}

/// An honest `huge_pages(true)` ring in the victim; the peer removes its second huge page
/// (`MADV_REMOVE`) and drains the pool. The victim's next write there is a typed error
/// (`Corruption::MemoryLost` with `LostMemory::HugePages`), not a SIGBUS.
#[test]
fn a_huge_page_removed_by_the_peer_is_a_typed_error() {
    if child_role().is_some() {
        let dir: PathBuf = param(DIR_VAR);
        let ring = Ring::create(shmpipe::Key::Private, &two_page_config().huge_pages(true))
            .expect("create the huge-page ring");
        let (mut tx, rx) = warmed_up(&ring);
        signal(&dir, "ready", &ring.shmid().unwrap().to_string());
        wait_for(&dir, "go");
        print_result("outcome", fill_from(&mut tx));
        drop((tx, rx, ring));
        print_result("dropped", "yes");
        return;
    }
    let Some(pool) = HugePool::take() else { return };
    if !pool.set_extra(2) {
        return;
    }
    let dir = SyncDir::new("madv-remove");
    let child = ChildProcess::spawn(
        "a_huge_page_removed_by_the_peer_is_a_typed_error",
        "victim",
        &[(DIR_VAR, dir.0.display().to_string())],
    );
    let shmid: i32 = wait_for(&dir.0, "ready").trim().parse().unwrap();
    let _cleanup = RemoveOnDrop::id(shmid);
    let peer = Segment::attach_id(shmid).unwrap();
    let huge = 2usize << 20;
    assert_eq!(peer.page_size(), huge);
    // SAFETY: the second huge page of our own attachment; madvise reads no memory of ours.
    let rc = unsafe { libc::madvise(peer.as_ptr().add(huge).cast(), huge, libc::MADV_REMOVE) };
    assert_eq!(rc, 0, "MADV_REMOVE: {}", std::io::Error::last_os_error());
    pool.set_extra(0);
    signal(&dir.0, "go", "");
    let out = assert_survived(child);
    let outcome: String = common::child_result(&out, "outcome");
    assert!(
        outcome.contains("MemoryLost") && outcome.contains("HugePages"),
        "{outcome}"
    );
    assert_eq!(common::child_result::<String>(&out, "dropped"), "yes");
    drop(peer);
}

/// A sealed hugetlb memfd ring: the victim opens it (accepting huge pages), then the creator
/// punches a hole in it (`fallocate(PUNCH_HOLE | KEEP_SIZE)`, which the size seals allow) and
/// drains the pool. The victim's next write there is a typed error, not a SIGBUS.
#[test]
fn a_hole_punched_in_a_hugetlb_memfd_is_a_typed_error() {
    if child_role().is_some() {
        let dir: PathBuf = param(DIR_VAR);
        let path = format!(
            "/proc/{}/fd/{}",
            param::<u32>("SHMPIPE_TEST_PPID"),
            param::<i32>(FD_VAR)
        );
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        // SAFETY: a descriptor we just opened and own.
        let fd = unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(file)) };
        let ring = Ring::open(fd, &accepting()).expect("open the memfd ring");
        let (mut tx, _rx) = warmed_up(&ring);
        signal(&dir, "ready", "");
        wait_for(&dir, "go");
        print_result("outcome", fill_from(&mut tx));
        return;
    }
    let Some(pool) = HugePool::take() else { return };
    if !pool.set_extra(2) {
        return;
    }
    let ring = Ring::create(Memfd, &two_page_config().huge_pages(true)).expect("create");
    let fd = ring.memfd().unwrap().as_raw_fd();
    let dir = SyncDir::new("punch");
    let child = ChildProcess::spawn(
        "a_hole_punched_in_a_hugetlb_memfd_is_a_typed_error",
        "victim",
        &[
            (DIR_VAR, dir.0.display().to_string()),
            (FD_VAR, fd.to_string()),
            ("SHMPIPE_TEST_PPID", std::process::id().to_string()),
        ],
    );
    wait_for(&dir.0, "ready");
    let huge = 2 << 20;
    // SAFETY: fallocate on the ring's descriptor; no memory of ours is passed.
    let rc = unsafe {
        libc::fallocate(
            fd,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            huge,
            huge,
        )
    };
    assert_eq!(rc, 0, "punch: {}", std::io::Error::last_os_error());
    pool.set_extra(0);
    signal(&dir.0, "go", "");
    let out = assert_survived(child);
    let outcome: String = common::child_result(&out, "outcome");
    assert!(
        outcome.contains("MemoryLost") && outcome.contains("HugePages"),
        "{outcome}"
    );
}

/// Blocks `SIGBUS` in the calling thread.
fn block_sigbus() {
    // SAFETY: an all-zero sigset_t is valid for sigemptyset to initialise.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; pthread_sigmask changes this thread's mask only.
    unsafe {
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGBUS);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut()),
            0
        );
    }
}

/// A file ring used from a thread that has `SIGBUS` blocked, whose file is then truncated:
/// a fault there cannot be handled (the kernel forces the default action), so the thread is
/// refused the ring up front: opening, creating and claiming a role fail with
/// `Error::SigbusBlocked`. The victim process survives.
#[test]
fn a_thread_with_sigbus_blocked_is_refused_a_file_ring() {
    if child_role().is_some() {
        let path: PathBuf = param(PATH_VAR);
        let ring = Ring::open(&path, &RingConfig::new()).expect("open on a normal thread");
        let outcome = std::thread::scope(|s| {
            s.spawn(|| {
                block_sigbus();
                let opened = match Ring::open(&path, &RingConfig::new()) {
                    Err(e @ Error::SigbusBlocked { .. }) => format!("{e:?}"),
                    other => format!("opened: {:?}", other.map(|_| ())),
                };
                print_result("open", opened.split_whitespace().next().unwrap_or(""));
                let created = Ring::create(path.with_extension("new"), &RingConfig::new());
                print_result(
                    "create",
                    matches!(created, Err(Error::SigbusBlocked { .. })),
                );
                // A role claimed on this thread, then the file truncated under it.
                let mut rx = match ring.consumer() {
                    Err(e @ Error::SigbusBlocked { .. }) => return format!("{e:?}"),
                    Err(e) => return format!("claim failed otherwise: {e:?}"),
                    Ok(rx) => rx,
                };
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                let mut buf = [0u8; 64];
                format!("received: {:?}", rx.try_recv(&mut buf))
            })
            .join()
            .unwrap()
        });
        print_result("claim", outcome.split_whitespace().next().unwrap_or(""));
        return;
    }
    let path = RemoveFile(
        PathBuf::from("/dev/shm").join(common::temp_path("blocked").file_name().unwrap()),
    );
    let _new = RemoveFile(path.0.with_extension("new"));
    let ring = Ring::create(&path.0, &RingConfig::new().slot_count(64).persistent(true)).unwrap();
    let child = ChildProcess::spawn(
        "a_thread_with_sigbus_blocked_is_refused_a_file_ring",
        "victim",
        &[(PATH_VAR, path.0.display().to_string())],
    );
    let out = assert_survived(child);
    assert_eq!(
        common::child_result::<String>(&out, "open"),
        "SigbusBlocked"
    );
    assert_eq!(common::child_result::<String>(&out, "create"), "true");
    assert_eq!(
        common::child_result::<String>(&out, "claim"),
        "SigbusBlocked"
    );
    drop(ring);
}

/// The backings whose pages cannot vanish: a peer's `MADV_REMOVE` on a plain SysV segment
/// gives zero pages, not a fault, so a thread with `SIGBUS` blocked may use such a ring, and
/// the zeros surface as the ring's own validation finds them.
#[test]
fn plain_segments_do_not_fault_and_are_allowed_with_sigbus_blocked() {
    let ring = Ring::create(shmpipe::Key::Private, &RingConfig::new().slot_count(64)).unwrap();
    let _cleanup = RemoveOnDrop::ring(&ring);
    // SAFETY: sysconf has no preconditions.
    let base = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    assert_eq!(ring.segment().unwrap().page_size(), base);
    std::thread::scope(|s| {
        s.spawn(|| {
            block_sigbus();
            let mut tx = ring.producer().expect("a plain segment cannot fault");
            tx.try_send(b"hello").unwrap();
            let peer = Segment::attach_id(ring.shmid().unwrap()).unwrap();
            // SAFETY: the whole of our own attachment; madvise reads no memory of ours.
            let rc = unsafe { libc::madvise(peer.as_ptr().cast(), peer.len(), libc::MADV_REMOVE) };
            assert_eq!(rc, 0);
            // The header is zeros now: no signal; the producer finds a head it never saw.
            let e = tx.try_send(&[1u8; 200]);
            assert!(
                e.is_ok() || matches!(e, Err(TrySendError::Corrupted(_))),
                "{e:?}"
            );
        })
        .join()
        .unwrap();
    });
}
