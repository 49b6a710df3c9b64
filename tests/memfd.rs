//! Rings in a sealed memfd: handed to another process across `exec` (an inherited descriptor)
//! and over a Unix socket (`SCM_RIGHTS`), and refused when the descriptor could shrink or the
//! memory is not a ring. No SysV segment is involved: `ipcs -m` does not change.
mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use common::{ChildProcess, RemoveFile, child_role, param};
use shmpipe::memfd::{recv_fd, send_fd};
use shmpipe::{Error, Memfd, Ring, RingConfig};

const FD_VAR: &str = "SHMPIPE_TEST_MEMFD";
const SOCK_VAR: &str = "SHMPIPE_TEST_SOCK";
const COUNT_VAR: &str = "SHMPIPE_TEST_COUNT";
const SEED: u64 = 0x6d65_6d66_6400;
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// SysV segments on the machine, to show a memfd ring creates none.
fn segment_ids() -> Vec<String> {
    let out = std::process::Command::new("ipcs")
        .arg("-m")
        .output()
        .expect("run ipcs -m");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .filter(|id| id.parse::<i32>().is_ok())
        .collect()
}

/// The error of an open that must fail.
fn refused(r: Result<Ring, Error>) -> Error {
    match r {
        Ok(_) => panic!("the descriptor was accepted"),
        Err(e) => e,
    }
}

fn config() -> RingConfig {
    RingConfig::new()
        .slot_size(64)
        .slot_count(64)
        .max_message(500)
}

/// The creator produces; a child process that inherited the memfd across `exec` (a descriptor
/// without close-on-exec, its number in the environment) opens it and consumes.
#[test]
fn a_memfd_ring_reaches_a_process_that_inherits_the_descriptor() {
    if child_role().is_some() {
        let fd: i32 = param(FD_VAR);
        // SAFETY: the parent left this descriptor open for us across exec; nothing else in
        // this process owns it.
        let ring = Ring::open(unsafe { OwnedFd::from_raw_fd(fd) }, &RingConfig::new())
            .expect("open memfd");
        assert_eq!(ring.shmid(), None);
        common::recv_stream(&ring, SEED, param(COUNT_VAR));
        return;
    }
    let before = segment_ids();
    let count = 100_000u64;
    let ring = Ring::create(Memfd, &config()).unwrap();
    assert_eq!(ring.shmid(), None);
    let memfd = ring.memfd().expect("a memfd ring has its descriptor");
    let inherited = common::inheritable(memfd);
    let child = ChildProcess::spawn(
        "a_memfd_ring_reaches_a_process_that_inherits_the_descriptor",
        "memfd-consumer",
        &[
            (FD_VAR, inherited.as_raw_fd().to_string()),
            (COUNT_VAR, count.to_string()),
        ],
    );
    drop(inherited);
    common::send_stream(&ring, SEED, count);
    child.wait_success(CHILD_TIMEOUT);
    assert_eq!(segment_ids(), before, "a memfd ring created a SysV segment");
}

/// The child connects to a Unix socket, receives the memfd with `SCM_RIGHTS`, and produces;
/// the creator consumes.
#[test]
fn a_memfd_ring_passed_over_a_unix_socket() {
    if child_role().is_some() {
        let sock = UnixStream::connect(param::<String>(SOCK_VAR)).expect("connect");
        let fd = recv_fd(&sock).expect("receive the memfd");
        let ring = Ring::open(fd, &RingConfig::new()).expect("open memfd");
        common::send_stream(&ring, SEED, param(COUNT_VAR));
        return;
    }
    let count = 50_000u64;
    let ring = Ring::create(Memfd, &config()).unwrap();
    let path = RemoveFile(common::temp_path("memfd.sock"));
    let listener = UnixListener::bind(&path.0).expect("bind");
    let child = ChildProcess::spawn(
        "a_memfd_ring_passed_over_a_unix_socket",
        "memfd-producer",
        &[
            (SOCK_VAR, path.0.display().to_string()),
            (COUNT_VAR, count.to_string()),
        ],
    );
    let (sock, _) = listener.accept().expect("accept");
    send_fd(&sock, ring.memfd().unwrap()).expect("send the memfd");
    common::recv_stream(&ring, SEED, count);
    child.wait_success(CHILD_TIMEOUT);
}

/// A descriptor whose file could shrink under the mapping is refused before it is mapped: a
/// plain file, and a memfd without the creator's seals.
#[test]
fn descriptors_that_could_shrink_are_refused() {
    let path = RemoveFile(common::temp_path("not-a-memfd"));
    std::fs::write(&path.0, vec![0u8; 1 << 16]).unwrap();
    let file = std::fs::File::open(&path.0).unwrap();
    let err = refused(Ring::open(OwnedFd::from(file), &RingConfig::new()));
    assert!(matches!(err, Error::BadHeader { .. }), "{err}");

    // SAFETY: the name is a NUL-terminated literal.
    let raw = unsafe { libc::memfd_create(c"unsealed".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0);
    // SAFETY: a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ftruncate on our own descriptor.
    let rc = unsafe { libc::ftruncate(fd.as_raw_fd(), 1 << 16) };
    assert_eq!(rc, 0);
    let err = refused(Ring::open(fd, &RingConfig::new()));
    assert!(matches!(err, Error::BadHeader { .. }), "{err}");
}

/// A sealed memfd that does not hold a ring is refused by the same header checks as a
/// segment: someone else's magic number.
#[test]
fn a_sealed_memfd_without_a_ring_is_refused() {
    // SAFETY: the name is a NUL-terminated literal.
    let raw = unsafe {
        libc::memfd_create(
            c"foreign".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    assert!(raw >= 0);
    // SAFETY: a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut bytes = vec![0u8; 1 << 16];
    bytes[..8].copy_from_slice(b"NOTOURS!");
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, &bytes).unwrap();
    let fd = OwnedFd::from(file);
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
    // SAFETY: fcntl(F_ADD_SEALS) on our own descriptor takes an integer.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    assert_eq!(rc, 0);
    // memfd_create makes it 0777; 0600, as a ring's creator makes it, so that what is refused
    // is its content, not its mode (docs/DESIGN.md, "Whose ring is it").
    // SAFETY: fchmod on our own descriptor.
    assert_eq!(unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) }, 0);
    let err = refused(Ring::open(fd, &RingConfig::new()));
    assert!(
        matches!(err, Error::NotShmpipe { .. } | Error::BadHeader { .. }),
        "{err}"
    );
}

/// The creator's own descriptor carries the seals, so nobody can resize the ring: a grow or
/// shrink of the file fails with EPERM.
#[test]
fn the_ring_memfd_cannot_be_resized() {
    let ring = Ring::create(Memfd, &config()).unwrap();
    let fd = ring.memfd().unwrap();
    for len in [0, 1 << 30] {
        // SAFETY: ftruncate on a descriptor the ring owns; the seals make it fail.
        let rc = unsafe { libc::ftruncate(fd.as_raw_fd(), len) };
        assert_eq!(rc, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EPERM)
        );
    }
    // And it still works.
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    tx.send(b"still here").unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(rx.recv(&mut buf), Ok(10));
}
