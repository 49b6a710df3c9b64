//! Huge pages (`RingConfig::huge_pages`) and memory locking (`Ring::lock_memory`).
//!
//! The huge-page test takes whichever branch the machine allows: with enough free huge pages
//! (`HugePages_Free * Hugepagesize` in `/proc/meminfo`) the ring is created and used; without
//! (the default: `nr_hugepages` is 0) creation must fail with `Error::HugePages` and leave no
//! segment behind. The tests never change `/proc/sys/vm/nr_hugepages`.
//!
//! The locking tests run as root (as the rest of the suite does) and check `VmLck` in
//! `/proc/self/status`; the failure case runs in a child process that sets `RLIMIT_MEMLOCK` to
//! 0 and drops to `nobody`. Only `lock_memory_as_root` locks memory in the test process itself,
//! so the `VmLck` figures it reads are its own.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{ChildProcess, RemoveOnDrop, child_result, child_role, param, print_result};
use shmpipe::{Error, Heap, Key, Memfd, Ring, RingConfig, Segment, Shmid};

const SHMID_VAR: &str = "SHMPIPE_TEST_SHMID";

/// A field of `/proc/meminfo` (`HugePages_Free`: a count; `Hugepagesize`: kB).
fn meminfo(field: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.split(':').next() == Some(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `VmLck` of this process in bytes.
fn vm_locked() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmLck in /proc/self/status");
    kib * 1024
}

/// Whether `ipcs -m` lists this shmid.
fn ipcs_lists(shmid: i32) -> bool {
    let out = Command::new("ipcs")
        .arg("-m")
        .output()
        .expect("run ipcs -m");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&shmid.to_string()))
}

/// Sends `n` messages from `ring`'s producer to its consumer and checks each arrives intact.
fn round_trip(tx_ring: &Ring, rx_ring: &Ring, n: u32) {
    let mut tx = tx_ring.producer().expect("claim the producer");
    let mut rx = rx_ring.consumer().expect("claim the consumer");
    let mut buf = vec![0u8; 256];
    for i in 0..n {
        let msg = format!("message {i}");
        tx.try_send(msg.as_bytes()).expect("room in the ring");
        let len = rx.try_recv(&mut buf).expect("the message just sent");
        assert_eq!(&buf[..len], msg.as_bytes());
    }
}

/// A huge-page ring of 1024 slots of 64 bytes, the bytes it needs, the huge page size, and the
/// bytes of free huge pages.
struct HugeSetup {
    cfg: RingConfig,
    ring_size: u64,
    huge: Option<u64>,
    free: u64,
}

fn huge_setup() -> HugeSetup {
    let cfg = RingConfig::new()
        .slot_size(64)
        .slot_count(1024)
        .huge_pages(true);
    let ring_size = (shmpipe::HEADER_SIZE as u64) + cfg.capacity_bytes();
    let huge = shmpipe::segment::huge_page_size().map(|h| h as u64);
    let free = match (meminfo("HugePages_Free"), huge) {
        (Some(pages), Some(h)) => pages * h,
        _ => 0,
    };
    HugeSetup {
        cfg,
        ring_size,
        huge,
        free,
    }
}

/// With enough free huge pages, a huge-page ring is created (rounded up to the huge page size,
/// as `IPC_STAT` and `ipcs` show), opened by shmid and used; without, creation fails with
/// exactly `Error::HugePages` and leaves nothing at the key.
#[test]
fn huge_pages_create_or_typed_error() {
    let HugeSetup {
        cfg,
        ring_size,
        huge,
        free,
    } = huge_setup();
    let key = common::unique_key();
    let _rm = RemoveOnDrop::key(key);
    match huge {
        Some(h) if free >= ring_size.div_ceil(h) * h => {
            eprintln!("{free} bytes of free huge pages: creating a huge-page ring");
            let ring = Ring::create(key, &cfg).expect("create a huge-page ring");
            let shmid = ring.shmid().unwrap();
            let stat = ring.segment().unwrap().stat().expect("IPC_STAT");
            assert_eq!(stat.size as u64, ring_size.div_ceil(h) * h, "rounded up");
            assert!(ipcs_lists(shmid), "ipcs -m lists shmid {shmid}");
            // The attacher validates the header against the (larger) kernel size.
            // Another process's huge pages are accepted only when asked (the config asks for
            // huge pages, which accepts them); plain `open` refuses them.
            assert!(matches!(
                Ring::open(Shmid(shmid), &RingConfig::new()),
                Err(Error::HugePagesNotAccepted { .. })
            ));
            let opened = Ring::open(Shmid(shmid), &cfg).expect("open the huge-page ring by shmid");
            assert_eq!(opened.slot_count(), 1024);
            round_trip(&ring, &opened, 1000);
        }
        _ => {
            eprintln!("{free} bytes of free huge pages: creation must fail");
            match Ring::create(key, &cfg) {
                Err(e @ Error::HugePages { .. }) => {
                    eprintln!("as expected: {e}");
                    let Error::HugePages {
                        ident,
                        size,
                        source,
                        hint,
                    } = e
                    else {
                        unreachable!()
                    };
                    assert_eq!(ident.key, Some(key));
                    assert!(size as u64 >= ring_size);
                    let errno = source.raw_os_error().expect("an errno");
                    assert!(
                        [libc::ENOMEM, libc::EPERM, libc::EINVAL].contains(&errno),
                        "errno {errno}"
                    );
                    if errno == libc::ENOMEM {
                        assert!(hint.contains("nr_hugepages"), "hint: {hint}");
                    }
                }
                other => panic!("expected Error::HugePages, got {other:?}"),
            }
            // No segment left at the key, and open_or_create reports the same error (it does
            // not loop or fall back).
            assert!(matches!(Segment::open(key), Err(Error::NotFound { .. })));
            assert!(matches!(
                Ring::open_or_create(key, &cfg),
                Err(Error::HugePages { .. })
            ));
            assert!(matches!(Segment::open(key), Err(Error::NotFound { .. })));
        }
    }
    // The same configuration without huge pages works everywhere.
    let plain = Ring::create(Key::Private, &cfg.clone().huge_pages(false)).expect("create");
    let _rm_plain = RemoveOnDrop::ring(&plain);
    round_trip(&plain, &plain, 10);
}

/// An in-process ring refuses huge pages and cannot be locked: both are typed errors.
#[test]
fn heap_rings_refuse_huge_pages_and_locking() {
    match Ring::create(Heap, &RingConfig::new().huge_pages(true)) {
        Err(Error::InvalidConfig { what }) => assert!(what.contains("huge pages"), "{what}"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    let ring = Ring::create(Heap, &RingConfig::new().slot_count(64)).expect("heap ring");
    match ring.lock_memory() {
        Err(Error::LockMemory { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::Unsupported);
        }
        other => panic!("expected LockMemory, got {other:?}"),
    }
}

/// As root, both the creator and an opener lock a 4 MiB ring; `VmLck` grows by the segment
/// for each attachment, messages still flow, and dropping the rings (shmdt) unlocks it all.
#[test]
fn lock_memory_as_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (CAP_IPC_LOCK) to lock 8 MiB");
        return;
    }
    let cfg = RingConfig::new().slot_size(64).slot_count(65536); // 4 MiB of slots
    let before = vm_locked();
    {
        let ring = Ring::create(Key::Private, &cfg).expect("create");
        let _rm = RemoveOnDrop::ring(&ring);
        let len = ring.segment().unwrap().len() as u64;
        let t = Instant::now();
        ring.lock_memory().expect("lock as creator");
        let took = t.elapsed();
        eprintln!("lock_memory on a {len}-byte ring (creator) took {took:?}");
        assert!(
            vm_locked() >= before + len,
            "VmLck after the creator locked"
        );

        let opened =
            Ring::open(Shmid(ring.shmid().unwrap()), &RingConfig::new()).expect("open by shmid");
        let t = Instant::now();
        opened.lock_memory().expect("lock as opener");
        eprintln!(
            "lock_memory (opener, pages already resident) took {:?}",
            t.elapsed()
        );
        // A second attachment is a second mapping: locked separately.
        assert!(
            vm_locked() >= before + 2 * len,
            "VmLck after the opener locked"
        );
        // Locking again does not stack.
        ring.lock_memory().expect("lock again");
        assert!(vm_locked() < before + 3 * len);

        round_trip(&ring, &opened, 100_000);
    }
    // Both attachments were detached (shmdt), which unlocked them.
    assert_eq!(vm_locked(), before, "VmLck after detaching");
}

/// In a child with `RLIMIT_MEMLOCK` 0 that dropped to `nobody` (so without `CAP_IPC_LOCK`),
/// `lock_memory` fails with `Error::LockMemory` (EPERM), and the ring still works afterwards.
#[test]
fn lock_memory_fails_without_memlock() {
    if child_role().as_deref() == Some("unprivileged_locker") {
        unprivileged_locker();
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to drop to nobody");
        return;
    }
    // Mode 0666 so that nobody may attach.
    let ring = Ring::create(
        Key::Private,
        &RingConfig::new().slot_count(1024).mode(0o666),
    )
    .expect("create");
    let _rm = RemoveOnDrop::ring(&ring);
    let mut rx = ring.consumer().expect("claim the consumer");
    let child = ChildProcess::spawn(
        "lock_memory_fails_without_memlock",
        "unprivileged_locker",
        &[(SHMID_VAR, ring.shmid().unwrap().to_string())],
    );
    let out = child.wait_success_output(Duration::from_secs(30));
    assert_eq!(child_result::<i32>(&out, "errno"), libc::EPERM, "{out}");
    let mut buf = [0u8; 64];
    let n = rx
        .recv_timeout(&mut buf, Duration::from_secs(5))
        .expect("the child's message");
    assert_eq!(&buf[..n], b"sent after a failed lock");
}

/// The child: `RLIMIT_MEMLOCK` to 0, drop to `nobody`, open the ring, fail to lock it, then
/// send one message anyway.
fn unprivileged_locker() {
    const NOBODY: u32 = 65534;
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls changing this process's limits and credentials; the limit
    // first (lowering it needs no privilege, but do it while we surely may), then the group,
    // since without root we could not change it any more.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_MEMLOCK, &zero), 0, "setrlimit");
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0, "setgroups");
        assert_eq!(libc::setgid(NOBODY), 0, "setgid");
        assert_eq!(libc::setuid(NOBODY), 0, "setuid");
    }
    // SAFETY: getters without preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    assert_eq!((uid, gid), (NOBODY, NOBODY));
    // Root's ring: accepted by name (docs/DESIGN.md, "Whose ring is it").
    let ring = Ring::open(Shmid(param(SHMID_VAR)), &RingConfig::new().accept_owner(0))
        .expect("open the ring as nobody");
    match ring.lock_memory() {
        Err(Error::LockMemory {
            ident,
            len,
            source,
            hint,
        }) => {
            assert_eq!(ident, ring.ident());
            assert_eq!(len, ring.segment().unwrap().len());
            assert!(hint.contains("RLIMIT_MEMLOCK"), "hint: {hint}");
            assert!(hint.contains("CAP_IPC_LOCK"), "hint: {hint}");
            print_result("errno", source.raw_os_error().unwrap_or(0));
        }
        other => panic!("lock_memory as nobody with RLIMIT_MEMLOCK 0: got {other:?}"),
    }
    let mut tx = ring.producer().expect("claim the producer");
    tx.try_send(b"sent after a failed lock").expect("send");
}

/// A memfd ring honours `huge_pages` with `MFD_HUGETLB`: with enough free huge pages it is
/// created (its size rounded up), opened from a duplicate of its descriptor and used; without,
/// creation fails with exactly `Error::HugePages`, never falling back to normal pages.
#[test]
fn memfd_huge_pages_create_or_typed_error() {
    let HugeSetup {
        cfg,
        ring_size,
        huge,
        free,
    } = huge_setup();
    match (huge, Ring::create(Memfd, &cfg)) {
        (Some(h), Ok(ring)) => {
            assert!(
                free >= ring_size.div_ceil(h) * h,
                "created without free huge pages"
            );
            let fd = ring.memfd().unwrap().try_clone_to_owned().unwrap();
            let dup = fd.try_clone().unwrap();
            assert!(matches!(
                Ring::open(dup, &RingConfig::new()),
                Err(Error::HugePagesNotAccepted { .. })
            ));
            let opened = Ring::open(fd, &cfg).expect("open the huge-page memfd");
            round_trip(&ring, &opened, 1000);
        }
        (_, Ok(_)) => panic!("a huge-page memfd without a huge page size"),
        (_, Err(Error::HugePages { size, source, .. })) => {
            eprintln!("{free} bytes of free huge pages: refused with {source}");
            assert!(size as u64 >= ring_size);
            let errno = source.raw_os_error().expect("an errno");
            assert!(
                [libc::ENOMEM, libc::EPERM, libc::EINVAL, libc::ENOSPC].contains(&errno),
                "errno {errno}"
            );
        }
        (_, Err(e)) => panic!("expected Error::HugePages, got {e:?}"),
    }
}
