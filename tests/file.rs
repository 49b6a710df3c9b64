//! Rings in a memory-mapped file opened by path: found by another process through the path,
//! either side first; refused when the file is not a ring or is too small; removed (unlinked)
//! like a segment once both sides are in, or kept across a restart when persistent; and a file
//! that shrinks under the mapping turns into a typed error on both sides, in this process and
//! across processes, with no `SIGBUS` reaching the program. A `SIGBUS` that is not about a ring
//! still kills the process, as it would without shmpipe.
mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{ChildProcess, RemoveFile, child_role, param};
use shmpipe::{
    Corrupted, Corruption, Error, HEADER_SIZE, LostMemory, RecvError, Ring, RingConfig, SendError,
    TryRecvError, TrySendError,
};

const PATH_VAR: &str = "SHMPIPE_TEST_RING_PATH";
const COUNT_VAR: &str = "SHMPIPE_TEST_COUNT";
const SEED: u64 = 0x6669_6c65_0000;
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

fn config() -> RingConfig {
    RingConfig::new()
        .slot_size(64)
        .slot_count(64)
        .max_message(500)
}

/// A fresh path in `/dev/shm` (memory-backed, like a segment), removed on drop.
fn ring_path(what: &str) -> RemoveFile {
    let p = common::temp_path(what);
    let name = p.file_name().unwrap().to_owned();
    let dir = PathBuf::from("/dev/shm");
    RemoveFile(if dir.is_dir() { dir.join(name) } else { p })
}

/// Cuts the file at `path` to 0 bytes under every mapping of it.
fn truncate(path: &std::path::Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

/// Writes a file of ours that only we may use (mode 0600, as a ring is made), so that what is
/// refused is its content, not its owner or mode (docs/DESIGN.md, "Whose ring is it").
fn write_private(path: &std::path::Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn refused(r: Result<Ring, Error>) -> Error {
    match r {
        Ok(_) => panic!("the file was accepted as a ring"),
        Err(e) => e,
    }
}

fn is_shrank(c: &Corrupted) -> bool {
    c.what
        == Corruption::MemoryLost {
            memory: LostMemory::File,
        }
}

/// Either side may start first: both call `open_or_create` at a path; the path is gone once both
/// are in (a non-persistent ring), and the stream arrives intact.
#[test]
fn two_processes_meet_at_a_path_either_first() {
    if let Some(role) = child_role() {
        let path: PathBuf = param(PATH_VAR);
        let ring = Ring::open_or_create(&path, &config()).expect("open or create");
        match role.as_str() {
            "producer" => common::send_stream(&ring, SEED, param(COUNT_VAR)),
            _ => common::recv_stream(&ring, SEED, param(COUNT_VAR)),
        }
        return;
    }
    for parent_role in ["producer", "consumer"] {
        let path = ring_path("meet");
        let count = 200_000u64;
        let child_role = if parent_role == "producer" {
            "consumer"
        } else {
            "producer"
        };
        let child = ChildProcess::spawn(
            "two_processes_meet_at_a_path_either_first",
            child_role,
            &[
                (PATH_VAR, path.0.display().to_string()),
                (COUNT_VAR, count.to_string()),
            ],
        );
        // Let the child create the file first in one of the rounds.
        if parent_role == "consumer" {
            std::thread::sleep(Duration::from_millis(50));
        }
        let ring = Ring::open_or_create(&path.0, &config()).unwrap();
        assert_eq!(ring.path(), Some(path.0.as_path()));
        assert_eq!(ring.shmid(), None);
        if parent_role == "producer" {
            common::send_stream(&ring, SEED, count);
        } else {
            common::recv_stream(&ring, SEED, count);
        }
        child.wait_success(CHILD_TIMEOUT);
        assert!(
            !path.0.exists(),
            "a non-persistent ring file outlived the transfer"
        );
        assert!(!ring.is_linked());
    }
}

/// Nothing that is not a complete ring is mapped past its end or accepted.
#[test]
fn files_that_are_not_rings_are_refused() {
    let missing = ring_path("missing");
    assert!(matches!(
        refused(Ring::open(&missing.0, &RingConfig::new())),
        Error::FileNotFound { .. }
    ));

    let small = ring_path("small");
    write_private(&small.0, b"SHMPIPE1");
    assert!(matches!(
        refused(Ring::open(&small.0, &RingConfig::new())),
        Error::SegmentTooSmall { actual: 8, .. }
    ));

    let foreign = ring_path("foreign");
    write_private(&foreign.0, &vec![0x5a; 64 * 1024]);
    let e = refused(Ring::open(&foreign.0, &RingConfig::new()));
    assert!(matches!(e, Error::NotShmpipe { .. }), "{e}");
    assert!(e.to_string().contains("ring file"), "{e}");

    // A real ring whose file was cut short before anyone opened it: the header claims more
    // than the file holds.
    let cut = ring_path("cut");
    let ring = Ring::create(&cut.0, &config().persistent(true)).unwrap();
    drop(ring);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&cut.0)
        .unwrap();
    f.set_len(HEADER_SIZE as u64 + 64).unwrap();
    assert!(matches!(
        refused(Ring::open(&cut.0, &RingConfig::new())),
        Error::SegmentTooSmall { .. }
    ));

    let dir = ring_path("dir");
    std::fs::create_dir(&dir.0).unwrap();
    let e = refused(Ring::open(&dir.0, &RingConfig::new()));
    let _ = std::fs::remove_dir(&dir.0);
    assert!(
        matches!(e, Error::File { .. } | Error::BadHeader { .. }),
        "{e}"
    );
}

/// `create` at a path never replaces a file; an existing ring of another shape is refused by
/// `open_or_create` at a path; huge pages are refused for files.
#[test]
fn create_is_exclusive_and_shapes_must_match() {
    let path = ring_path("exclusive");
    let ring = Ring::create(&path.0, &config().persistent(true)).unwrap();
    assert!(matches!(
        refused(Ring::create(&path.0, &config())),
        Error::FileExists { .. }
    ));
    assert!(matches!(
        refused(Ring::open_or_create(&path.0, &config().slot_count(128))),
        Error::ConfigMismatch { .. }
    ));
    assert!(ring.is_linked());
    ring.remove().unwrap();
    assert!(!path.0.exists());
    assert!(matches!(
        refused(Ring::create(
            &ring_path("huge").0,
            &config().huge_pages(true)
        )),
        Error::InvalidConfig { .. }
    ));
    // No temporary files are left beside the ring.
    let dir = path.0.parent().unwrap();
    let name = path.0.file_name().unwrap().to_string_lossy().into_owned();
    for entry in std::fs::read_dir(dir).unwrap() {
        let n = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.contains(&name), "left behind: {n}");
    }
}

/// A persistent ring on a file keeps its messages across a restart of both sides, including a
/// producer that died holding its role (taken over once the kernel confirms the death).
#[test]
fn a_persistent_file_ring_survives_a_restart() {
    if child_role().is_some() {
        let ring = Ring::open(param::<PathBuf>(PATH_VAR), &RingConfig::new()).unwrap();
        let mut tx = ring.producer().unwrap();
        for i in 0..10u8 {
            tx.send(&[i; 20]).unwrap();
        }
        // Die holding the producer role, without closing the ring.
        std::process::abort();
    }
    let path = ring_path("persist");
    drop(Ring::create(&path.0, &config().persistent(true)).unwrap());
    let mut child = ChildProcess::spawn(
        "a_persistent_file_ring_survives_a_restart",
        "producer",
        &[(PATH_VAR, path.0.display().to_string())],
    );
    child.wait_status(CHILD_TIMEOUT);
    // "After the restart": a new process opens the file by its path.
    let ring = Ring::open(&path.0, &RingConfig::new()).unwrap();
    assert!(ring.is_persistent());
    assert!(matches!(
        ring.producer(),
        Err(Error::RoleTaken {
            holder: shmpipe::Liveness::Dead,
            ..
        })
    ));
    let mut rx = ring.consumer().unwrap();
    let mut buf = [0u8; 64];
    for i in 0..10u8 {
        let n = rx.try_recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[i; 20]);
    }
    let mut tx = ring.take_over_producer().unwrap();
    tx.send(b"after the restart").unwrap();
    let n = rx.try_recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"after the restart");
    assert!(path.0.exists(), "a persistent ring file was removed");
}

/// Truncating the file under both sides in this process: the next operations fail with
/// `MemoryLost` (sticky), nothing is delivered from the lost memory, and no SIGBUS is raised.
#[test]
fn a_file_that_shrinks_is_an_error_not_a_sigbus() {
    let path = ring_path("shrink");
    let ring = Ring::create(&path.0, &config().persistent(true)).unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    for i in 0..5u8 {
        tx.try_send(&[i; 100]).unwrap();
    }
    let mut buf = [0u8; 500];
    assert_eq!(rx.try_recv(&mut buf), Ok(100));

    truncate(&path.0);

    let e = rx.try_recv(&mut buf).unwrap_err();
    assert!(
        matches!(e, TryRecvError::Corrupted(ref c) if is_shrank(c)),
        "{e:?}"
    );
    assert!(matches!(rx.try_lend(), Err(TryRecvError::Corrupted(ref c)) if is_shrank(c)));
    assert!(is_shrank(rx.poisoned().unwrap()));
    let e = tx.try_send(b"into the void").unwrap_err();
    assert!(
        matches!(e, TrySendError::Corrupted(ref c) if is_shrank(c)),
        "{e:?}"
    );
    assert!(matches!(
        tx.send(b"again"),
        Err(SendError::Corrupted(ref c)) if is_shrank(c)
    ));
    let msg = e.to_string();
    assert!(msg.contains("shrank") && msg.contains("ring file"), "{msg}");
}

/// The consumer process blocks in `recv` on an empty ring; another process truncates the
/// file; the consumer's wait ends with `MemoryLost` (the futex it slept on is gone with the
/// memory; its periodic checks find the loss), and the process exits normally.
#[test]
fn a_blocked_peer_process_sees_the_file_shrink() {
    if child_role().is_some() {
        let ring = Ring::open(param::<PathBuf>(PATH_VAR), &RingConfig::new()).unwrap();
        let mut rx = ring.consumer().unwrap();
        let mut buf = [0u8; 500];
        assert_eq!(rx.recv(&mut buf), Ok(3));
        let started = Instant::now();
        match rx.recv(&mut buf) {
            Err(RecvError::Corrupted(c)) if is_shrank(&c) => {}
            other => panic!("expected MemoryLost, got {other:?}"),
        }
        println!("noticed after {:?}", started.elapsed());
        return;
    }
    let path = ring_path("shrink-peer");
    let ring = Ring::create(&path.0, &config().persistent(true)).unwrap();
    let mut tx = ring.producer().unwrap();
    tx.send(b"abc").unwrap();
    let child = ChildProcess::spawn(
        "a_blocked_peer_process_sees_the_file_shrink",
        "consumer",
        &[(PATH_VAR, path.0.display().to_string())],
    );
    // Wait until the child has taken the message and sleeps on the empty ring.
    let deadline = Instant::now() + CHILD_TIMEOUT;
    while ring.status().received < 1 {
        assert!(Instant::now() < deadline, "the child never received");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(100));
    truncate(&path.0);
    child.wait_success(CHILD_TIMEOUT);
    // This side finds out at its next operation too.
    assert!(matches!(
        tx.try_send(b"x"),
        Err(TrySendError::Corrupted(ref c)) if is_shrank(c)
    ));
}

/// The handler passes on what is not a ring's: a process that opened a file ring (so the
/// handler is installed) and then touches a truncated mapping of some other file dies of
/// SIGBUS, exactly as it would without shmpipe.
#[test]
fn a_sigbus_elsewhere_still_kills() {
    if child_role().is_some() {
        let ring_file = ring_path("other-ring");
        let _ring = Ring::create(&ring_file.0, &config()).unwrap();
        let other = ring_path("not-a-ring");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&other.0)
            .unwrap();
        f.set_len(8192).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared mapping of our own file.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        f.set_len(0).unwrap();
        drop(ring_file);
        drop(other);
        // SAFETY: deliberately touching a page past the file's end: this must raise SIGBUS.
        let v = unsafe { std::ptr::read_volatile(p.cast::<u8>().add(4096)) };
        println!("read {v} from a truncated mapping: SIGBUS was swallowed");
        std::process::exit(0);
    }
    let mut child = ChildProcess::spawn("a_sigbus_elsewhere_still_kills", "victim", &[]);
    let status = child.wait_status(CHILD_TIMEOUT);
    assert_eq!(
        status.signal(),
        Some(libc::SIGBUS),
        "child: {status:?}\n{}",
        child.output()
    );
}

/// A non-persistent ring file left by a lone producer that died is recycled by the next
/// `open_or_create` at a path: the newcomer gets a fresh ring, not the dead run's messages.
#[test]
fn an_orphan_ring_file_is_recycled() {
    if child_role().is_some() {
        let ring = Ring::open_or_create(param::<PathBuf>(PATH_VAR), &config()).unwrap();
        let mut tx = ring.producer().unwrap();
        tx.send(b"stale").unwrap();
        // Die holding the role (a producer that closed cleanly would leave a pending ring,
        // which is opened as it is, like a pending segment).
        std::process::abort();
    }
    let path = ring_path("orphan");
    let mut child = ChildProcess::spawn(
        "an_orphan_ring_file_is_recycled",
        "lone-producer",
        &[(PATH_VAR, path.0.display().to_string())],
    );
    child.wait_status(CHILD_TIMEOUT);
    assert!(path.0.exists(), "the lone side's file should be left");
    let ring = Ring::open_or_create(&path.0, &config()).unwrap();
    let mut rx = ring.consumer().unwrap();
    let mut tx = ring.producer().expect("a fresh ring has no dead producer");
    let mut buf = [0u8; 64];
    assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Empty));
    tx.try_send(b"fresh").unwrap();
    let n = rx.try_recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"fresh");
}
