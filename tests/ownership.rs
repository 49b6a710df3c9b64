//! Whose ring is it: every open path checks the kernel's record of the memory it attaches to
//! (owner, a segment's creator, mode) before reading a byte of it (docs/DESIGN.md, "Whose ring
//! is it").
//!
//! Failure cases of RELIABILITY.md covered here: 21 (another user pre-creates a valid-looking
//! ring at our key, mode 0666, including when we are root: refused with the owner and mode
//! named, unless that owner is accepted) and 15 (a process of another uid cannot use our 0600
//! ring; created rings get exactly the configured mode).
//!
//! The tests run as root. To play another user, a child (this test binary run again in a role,
//! see `common::ChildProcess`) drops to `nobody` (65534); or root gives an object away itself
//! (`IPC_SET`, `chown`, `fchown`). Tests that need root say so and skip that part otherwise.

mod common;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use common::{
    ChildProcess, RemoveFile, RemoveOnDrop, child_result, child_role, param, print_result,
    set_segment_owner, temp_path, unique_key,
};
use shmpipe::{Error, Key, Memfd, Ring, RingConfig, Shmid};

/// The uid (and gid) a child drops to.
const NOBODY: u32 = 65534;
/// No child may take longer.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

const KEY_VAR: &str = "SHMPIPE_TEST_OWNER_KEY";
const MODE_VAR: &str = "SHMPIPE_TEST_OWNER_MODE";
const PERSIST_VAR: &str = "SHMPIPE_TEST_OWNER_PERSIST";
const GIVE_VAR: &str = "SHMPIPE_TEST_OWNER_GIVE_TO";
const PATH_VAR: &str = "SHMPIPE_TEST_OWNER_PATH";
const FD_VAR: &str = "SHMPIPE_TEST_OWNER_FD";

fn small() -> RingConfig {
    RingConfig::new().slot_count(16)
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Whether this process may switch uids and give objects away; prints a note if not.
fn root(test: &str) -> bool {
    if euid() == 0 {
        return true;
    }
    eprintln!("note: {test} needs root to play another user; skipped");
    false
}

/// In a child: become `nobody` for good (groups, gid, then uid).
fn drop_to_nobody() {
    // SAFETY: plain system calls changing this process's credentials; groups and gid first,
    // since without root we could not change them any more.
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0, "setgroups");
        assert_eq!(libc::setgid(NOBODY), 0, "setgid");
        assert_eq!(libc::setuid(NOBODY), 0, "setuid");
    }
    assert_eq!(euid(), NOBODY);
}

/// Runs this process's role if it is a child; `true` if it was.
fn run_child_role() -> bool {
    match child_role().as_deref() {
        None => false,
        Some("squatter") => {
            squatter();
            true
        }
        Some("other-user") => {
            other_user();
            true
        }
        Some("umask-creator") => {
            umask_creator();
            true
        }
        Some(other) => panic!("unknown role {other}"),
    }
}

/// The squatter: as `nobody`, creates a well-formed ring at `KEY` with `MODE` (persistent or
/// not), optionally gives it to the uid `GIVE_TO` with `IPC_SET` (which its creator may do, and
/// which keeps the creator's own access), prints its shmid and leaves it there.
fn squatter() {
    drop_to_nobody();
    let key = Key::new(param(KEY_VAR));
    let mode: u32 = param(MODE_VAR);
    let persistent: bool = param(PERSIST_VAR);
    let ring = Ring::create(key, &small().mode(mode).persistent(persistent))
        .expect("the squatter creates its ring");
    let shmid = ring.shmid().unwrap();
    if let Some(to) = common::param_opt::<u32>(GIVE_VAR) {
        set_segment_owner(shmid, to);
        let st = ring.segment().unwrap().stat().unwrap();
        assert_eq!((st.uid, st.creator_uid), (to, NOBODY));
    }
    print_result("shmid", shmid);
}

/// Starts the squatter and returns the shmid of the ring it left at `key`.
fn squat(test: &str, key: Key, mode: u32, persistent: bool, give_to: Option<u32>) -> i32 {
    let mut vars = vec![
        (KEY_VAR, key.raw().to_string()),
        (MODE_VAR, mode.to_string()),
        (PERSIST_VAR, persistent.to_string()),
    ];
    if let Some(uid) = give_to {
        vars.push((GIVE_VAR, uid.to_string()));
    }
    let out = ChildProcess::spawn(test, "squatter", &vars).wait_success_output(CHILD_TIMEOUT);
    child_result(&out, "shmid")
}

/// Asserts a `ForeignOwner` refusal with these fields, whose message names owner and mode.
#[track_caller]
fn assert_foreign(
    r: Result<Ring, Error>,
    owner: u32,
    creator: Option<u32>,
    mode: u32,
    allowed: u32,
) -> String {
    match r {
        Err(
            e @ Error::ForeignOwner {
                owner_uid,
                creator_uid,
                mode: m,
                expected_uid,
                allowed_mode,
                ..
            },
        ) => {
            assert_eq!(
                (owner_uid, creator_uid, m, expected_uid, allowed_mode),
                (owner, creator, mode, euid(), allowed),
                "{e}"
            );
            let msg = e.to_string();
            assert!(msg.contains(&format!("uid {owner}")), "{msg}");
            assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
            msg
        }
        Err(e) => panic!("expected ForeignOwner, got {e:?}"),
        Ok(ring) => panic!("a foreign ring was opened: {:?}", ring.ident()),
    }
}

/// One message through two handles of a ring, to show an accepted ring works.
fn roundtrip(a: &Ring, b: &Ring) {
    let mut tx = a.producer().expect("producer");
    let mut rx = b.consumer().expect("consumer");
    tx.try_send(b"accepted").unwrap();
    let mut buf = [0u8; 16];
    let n = rx.try_recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"accepted");
}

/// Case 21: `nobody` creates a valid persistent ring at our key with mode 0666. Root's
/// `open` (by key and by `Shmid`) and `open_or_create` refuse it with `ForeignOwner` naming owner 65534 and
/// mode 0666; accepting uid 65534 opens it.
#[test]
#[cfg_attr(miri, ignore)]
fn a_squatted_key_is_refused_unless_its_owner_is_accepted() {
    const TEST: &str = "a_squatted_key_is_refused_unless_its_owner_is_accepted";
    if run_child_role() || !root(TEST) {
        return;
    }
    let key = unique_key();
    let _rm = RemoveOnDrop::key(key);
    let shmid = squat(TEST, key, 0o666, true, None);

    let msg = assert_foreign(
        Ring::open(key, &RingConfig::new()),
        NOBODY,
        Some(NOBODY),
        0o666,
        0o600,
    );
    assert!(msg.contains(&key.to_string()), "{msg}");
    assert_foreign(
        Ring::open(Shmid(shmid), &RingConfig::new()),
        NOBODY,
        Some(NOBODY),
        0o666,
        0o600,
    );
    assert_foreign(
        Ring::open_or_create(key, &small()),
        NOBODY,
        Some(NOBODY),
        0o666,
        0o600,
    );
    // Widening the mode does not accept another owner.
    assert_foreign(
        Ring::open(key, &small().mode(0o666)),
        NOBODY,
        Some(NOBODY),
        0o666,
        0o666,
    );
    let st = shmpipe::segment::stat_id(shmid).expect("the squatter's ring is untouched");
    assert_eq!((st.uid, st.key), (NOBODY, key));

    let accept = small().accept_owner(NOBODY);
    let a = Ring::open(key, &accept).expect("open, accepting nobody");
    let b = Ring::open(Shmid(shmid), &accept).expect("open by shmid, accepting nobody");
    let c = Ring::open_or_create(key, &accept).expect("open_or_create, accepting nobody");
    assert_eq!(a.shmid(), Some(shmid));
    assert_eq!(c.shmid(), Some(shmid));
    roundtrip(&a, &b);
}

/// A squatter's ring that is stale by every other measure (nobody attached, empty, not
/// persistent) is not recycled by root's `open_or_create`: not ours to remove. Refused, and
/// left where it is.
#[test]
#[cfg_attr(miri, ignore)]
fn a_stale_ring_of_another_user_is_neither_recycled_nor_opened() {
    const TEST: &str = "a_stale_ring_of_another_user_is_neither_recycled_nor_opened";
    if run_child_role() || !root(TEST) {
        return;
    }
    let key = unique_key();
    let _rm = RemoveOnDrop::key(key);
    let shmid = squat(TEST, key, 0o666, false, None);
    let (_, class) = shmpipe::gc::classify_id(shmid).unwrap();
    assert!(class.is_stale(), "{class:?}");

    assert_foreign(
        Ring::open_or_create(key, &small()),
        NOBODY,
        Some(NOBODY),
        0o666,
        0o600,
    );
    let st = shmpipe::segment::stat_id(shmid).expect("the squatter's ring was removed");
    assert_eq!(st.key, key);
    assert!(!shmpipe::gc::may_remove(&st, &[]));
    assert!(shmpipe::gc::may_remove(&st, &[NOBODY]));
}

/// The squatter creates a 0600 ring and gives it to root (`IPC_SET` uid 0): it looks exactly
/// like one of root's own, and its creator can still read it. The creator (`shm_perm.cuid`,
/// which cannot be changed) gives it away: refused, naming both.
#[test]
#[cfg_attr(miri, ignore)]
fn a_segment_given_to_us_is_refused_by_its_creator() {
    const TEST: &str = "a_segment_given_to_us_is_refused_by_its_creator";
    if run_child_role() || !root(TEST) {
        return;
    }
    let key = unique_key();
    let _rm = RemoveOnDrop::key(key);
    let shmid = squat(TEST, key, 0o600, true, Some(0));
    let st = shmpipe::segment::stat_id(shmid).unwrap();
    assert_eq!((st.uid, st.creator_uid, st.mode), (0, NOBODY, 0o600));

    let msg = assert_foreign(
        Ring::open(key, &RingConfig::new()),
        0,
        Some(NOBODY),
        0o600,
        0o600,
    );
    assert!(msg.contains(&format!("created by uid {NOBODY}")), "{msg}");
    assert_foreign(
        Ring::open(Shmid(shmid), &RingConfig::new()),
        0,
        Some(NOBODY),
        0o600,
        0o600,
    );
    let ring = Ring::open(key, &small().accept_owner(NOBODY)).expect("accepting nobody");
    assert_eq!(ring.shmid(), Some(shmid));
}

/// A ring of our own whose mode grants group or others more than the opener asked for
/// (default 0600) is refused on every backing; a configured mode that covers it opens it, one
/// that does not still refuses.
#[test]
#[cfg_attr(miri, ignore)]
fn our_ring_with_a_wider_mode_than_asked_is_refused() {
    let me = euid();
    for mode in [0o644, 0o660, 0o666, 0o604] {
        // SysV.
        let key = unique_key();
        let _rm = RemoveOnDrop::key(key);
        let ring = Ring::create(key, &small().mode(mode).persistent(true)).unwrap();
        assert_eq!(ring.segment().unwrap().stat().unwrap().mode, mode);
        assert_foreign(
            Ring::open(key, &RingConfig::new()),
            me,
            Some(me),
            mode,
            0o600,
        );
        assert_foreign(
            Ring::open_or_create(key, &small()),
            me,
            Some(me),
            mode,
            0o600,
        );
        let narrower = if mode & 0o007 != 0 { 0o660 } else { 0o606 };
        assert_foreign(
            Ring::open(key, &small().mode(narrower)),
            me,
            Some(me),
            mode,
            narrower,
        );
        Ring::open(key, &small().mode(mode)).expect("open with the same mode");
        Ring::open(key, &small().mode(0o666)).expect("open with a wider mode");
        Ring::open_or_create(key, &small().mode(mode)).expect("open_or_create, same mode");

        // File.
        let path = RemoveFile(temp_path("wide"));
        Ring::create(&path.0, &small().mode(mode).persistent(true)).unwrap();
        assert_foreign(
            Ring::open(&path.0, &RingConfig::new()),
            me,
            None,
            mode,
            0o600,
        );
        assert_foreign(
            Ring::open_or_create(&path.0, &small()),
            me,
            None,
            mode,
            0o600,
        );
        Ring::open(&path.0, &small().mode(mode)).expect("open a path, same mode");

        // Memfd.
        let ring = Ring::create(Memfd, &small().mode(mode)).unwrap();
        let dup = || ring.memfd().unwrap().try_clone_to_owned().unwrap();
        assert_foreign(Ring::open(dup(), &RingConfig::new()), me, None, mode, 0o600);
        Ring::open(dup(), &small().mode(mode)).expect("open a memfd, same mode");
    }
}

/// A ring file owned by another user is refused by `open` and `open_or_create` at a path (and
/// not removed); accepting its owner opens it.
#[test]
#[cfg_attr(miri, ignore)]
fn a_file_of_another_user_is_refused_unless_accepted() {
    if !root("a_file_of_another_user_is_refused_unless_accepted") {
        return;
    }
    let path = RemoveFile(temp_path("foreign"));
    Ring::create(&path.0, &small().persistent(true)).unwrap();
    std::os::unix::fs::chown(&path.0, Some(NOBODY), Some(NOBODY)).unwrap();

    assert_foreign(
        Ring::open(&path.0, &RingConfig::new()),
        NOBODY,
        None,
        0o600,
        0o600,
    );
    assert_foreign(
        Ring::open_or_create(&path.0, &small()),
        NOBODY,
        None,
        0o600,
        0o600,
    );
    assert!(path.0.exists(), "a foreign file was removed");
    let accept = small().accept_owner(NOBODY);
    let a = Ring::open(&path.0, &accept).expect("accepting nobody");
    let b = Ring::open_or_create(&path.0, &accept).expect("accepting nobody");
    roundtrip(&a, &b);
}

/// A memfd owned by another user (`fchown`), or ours with a wide mode (`fchmod`), is refused
/// by `open` of a memfd; accepting the owner (or the mode) opens it.
#[test]
#[cfg_attr(miri, ignore)]
fn a_memfd_of_another_user_or_wide_mode_is_refused() {
    let ring = Ring::create(Memfd, &small()).unwrap();
    let fd = ring.memfd().unwrap().as_raw_fd();
    let dup = || -> OwnedFd { ring.memfd().unwrap().try_clone_to_owned().unwrap() };
    // SAFETY: fchmod on a descriptor the ring holds open.
    assert_eq!(unsafe { libc::fchmod(fd, 0o666) }, 0);
    assert_foreign(
        Ring::open(dup(), &RingConfig::new()),
        euid(),
        None,
        0o666,
        0o600,
    );
    Ring::open(dup(), &small().mode(0o666)).expect("accepting mode 0666");
    if !root("a_memfd_of_another_user_or_wide_mode_is_refused") {
        return;
    }
    // SAFETY: fchown on a descriptor the ring holds open.
    assert_eq!(unsafe { libc::fchown(fd, NOBODY, NOBODY) }, 0);
    assert_foreign(
        Ring::open(dup(), &RingConfig::new()),
        NOBODY,
        None,
        0o666,
        0o600,
    );
    let peer = Ring::open(dup(), &small().accept_owner(NOBODY)).expect("accepted");
    roundtrip(&ring, &peer);
}

/// Case 15 for files and memfds (segments: `tests/blocking.rs`): a process of another uid
/// cannot open our 0600 ring file (the kernel refuses it), and a memfd of ours it inherits is
/// refused as foreign unless it accepts our uid.
#[test]
#[cfg_attr(miri, ignore)]
fn another_user_cannot_use_our_rings() {
    const TEST: &str = "another_user_cannot_use_our_rings";
    if run_child_role() || !root(TEST) {
        return;
    }
    let path = RemoveFile(temp_path("ours"));
    Ring::create(&path.0, &small().persistent(true)).unwrap();
    let ring = Ring::create(Memfd, &small()).unwrap();
    // The child inherits a duplicate without close-on-exec, closed here once it started.
    // SAFETY: dup of a descriptor the ring holds open; closed below.
    let dup = unsafe { libc::dup(ring.memfd().unwrap().as_raw_fd()) };
    assert!(dup >= 0);
    let child = ChildProcess::spawn(
        TEST,
        "other-user",
        &[
            (PATH_VAR, path.0.display().to_string()),
            (FD_VAR, dup.to_string()),
            ("SHMPIPE_TEST_OWNER_ROOT", euid().to_string()),
        ],
    );
    // SAFETY: our own duplicate from above; the child has its copy.
    unsafe { libc::close(dup) };
    let out = child.wait_success_output(CHILD_TIMEOUT);
    assert_eq!(
        child_result::<i32>(&out, "file_errno"),
        libc::EACCES,
        "{out}"
    );
    assert_eq!(child_result::<u32>(&out, "memfd_refused_owner"), 0, "{out}");
    assert_eq!(child_result::<u32>(&out, "memfd_accepted"), 1, "{out}");
}

/// The other user of [`another_user_cannot_use_our_rings`].
fn other_user() {
    use std::os::fd::FromRawFd;
    drop_to_nobody();
    let path: PathBuf = param(PATH_VAR);
    let fd: i32 = param(FD_VAR);
    let root_uid: u32 = param("SHMPIPE_TEST_OWNER_ROOT");
    match Ring::open(&path, &small().accept_owner(root_uid)) {
        Err(Error::File { source, .. }) => {
            print_result("file_errno", source.raw_os_error().unwrap())
        }
        other => panic!("open a path as nobody: {other:?}"),
    }
    // SAFETY: the parent left this descriptor open for us across exec; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let again = fd.try_clone().unwrap();
    match Ring::open(fd, &RingConfig::new()) {
        Err(Error::ForeignOwner { owner_uid, .. }) => {
            print_result("memfd_refused_owner", owner_uid)
        }
        other => panic!("open a memfd as nobody: {other:?}"),
    }
    Ring::open(again, &small().accept_owner(root_uid)).expect("accepting root");
    print_result("memfd_accepted", 1);
}

/// A ring is created with exactly the configured mode, whatever the umask: a segment (`shmget`
/// ignores the umask), a file (`open` applies it; `fchmod` corrects it) and a memfd (created
/// 0777; `fchmod` sets it). Run in a child so the umask of the other tests is untouched.
#[test]
#[cfg_attr(miri, ignore)]
fn created_rings_have_exactly_the_configured_mode() {
    const TEST: &str = "created_rings_have_exactly_the_configured_mode";
    if run_child_role() {
        return;
    }
    let key = unique_key();
    let _rm = RemoveOnDrop::key(key);
    let path = RemoveFile(temp_path("mode"));
    let out = ChildProcess::spawn(
        TEST,
        "umask-creator",
        &[
            (KEY_VAR, key.raw().to_string()),
            (PATH_VAR, path.0.display().to_string()),
        ],
    )
    .wait_success_output(CHILD_TIMEOUT);
    assert_eq!(child_result::<u32>(&out, "checked"), 6, "{out}");
}

/// The child of [`created_rings_have_exactly_the_configured_mode`]: umask 0o077, then each
/// backing with 0600 and 0666, each checked against the kernel's record.
fn umask_creator() {
    // SAFETY: umask has no preconditions; this child process is ours alone.
    unsafe { libc::umask(0o077) };
    let key = Key::new(param(KEY_VAR));
    let path: PathBuf = param(PATH_VAR);
    let mut checked = 0;
    for mode in [0o600, 0o666] {
        let cfg = small().mode(mode).persistent(true);
        let ring = Ring::create(key, &cfg).unwrap();
        assert_eq!(
            ring.segment().unwrap().stat().unwrap().mode,
            mode,
            "segment"
        );
        ring.remove().unwrap();
        checked += 1;

        let ring = Ring::create(&path, &cfg).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            mode
        );
        ring.remove().unwrap();
        checked += 1;

        let ring = Ring::create(Memfd, &cfg).unwrap();
        let fd = ring.memfd().unwrap().as_raw_fd();
        // SAFETY: an all-zero stat is valid for fstat to overwrite; the fd is the ring's.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
        assert_eq!(st.st_mode & 0o777, mode, "memfd");
        checked += 1;
    }
    print_result("checked", checked);
}
