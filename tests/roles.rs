//! Roles follow the process, not a cache (docs/DESIGN.md, "Roles" and "Fork, exec and pid
//! namespaces"): a forked child gets an identity of its own and cannot use or release the
//! roles its parent claimed; a holder that `exec`s is seen dead; a holder in another pid
//! namespace is "unknown", never dead.
//!
//! Forking inside the multi-threaded test harness is unsafe, so every `fork` here happens in a
//! child process (this test binary re-run in a role, see `common::ChildProcess`), and the forked
//! process ends with `_exit` without returning into the harness. The tests take one lock so
//! that their timing is not disturbed by each other.

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::timing::bound;
use common::{ChildProcess, RemoveOnDrop, child_role, param, process_state, signal_process};
use shmpipe::{
    Error, Key, RecvError, Ring, RingConfig, Role, SendError, Shmid, TryRecvError, TrySendError,
    WrongProcess,
};

/// The shmid a child attaches to.
const SHMID_VAR: &str = "SHMPIPE_TEST_SHMID";
/// The path of a file ring a child opens.
const PATH_VAR: &str = "SHMPIPE_TEST_PATH";
/// A second ring's shmid, whose role the child keeps after detaching it.
const DETACHED_VAR: &str = "SHMPIPE_TEST_DETACHED_SHMID";
/// No step may take longer, whatever goes wrong.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The bound asserted on a `PeerDied` detection: DESIGN.md promises 100 ms; the margin keeps a
/// loaded 2-core machine from failing the test (the default suite allows `timing::LOADED`).
const BOUND: Duration = Duration::from_secs(2);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn small() -> RingConfig {
    RingConfig::new().slot_size(64).slot_count(16)
}

fn getpid() -> u32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() as u32 }
}

/// Forks; the new process runs `f` and ends with `_exit` of its result (101 if it panicked),
/// never returning into the test harness. Returns the new process's pid.
fn fork_run(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: called from a role child whose test thread is the only one doing work; glibc's
    // fork leaves malloc usable in the child, which only runs `f` and then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: ends the forked process at once, without running the harness's code.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits (bounded) for a forked process and returns its exit code, or 128 + the signal.
fn wait_pid(pid: libc::pid_t, timeout: Duration) -> i32 {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; `pid` is our own child.
        let rc = unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) };
        assert!(rc >= 0, "waitpid: {}", std::io::Error::last_os_error());
        if rc == pid {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            return 128 + libc::WTERMSIG(status);
        }
        if Instant::now() >= deadline {
            // SAFETY: kill and reap our own child before failing.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &raw mut status, 0);
            }
            panic!("forked process {pid} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Polls `cond` every millisecond for up to `timeout`.
fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Fills the ring with 8-byte messages until it is full.
fn fill(tx: &mut shmpipe::Producer) {
    while tx.try_send(&[7u8; 8]).is_ok() {}
}

// ---------------------------------------------------------------------------------------------
// Fork: a child's inherited handles leave the parent's roles alone
// ---------------------------------------------------------------------------------------------

/// Row 18 of the failure table: a ring shared with a forked child, and the child uses, then
/// drops, the producer and consumer it inherited (and the ring) before it exits. The child's
/// operations fail (they would act on the parent's roles) and its drops do nothing to the
/// shared memory: the parent still holds both roles, nothing was sent or received in the
/// child, no end of stream was announced, and the parent's ring carries on.
#[test]
fn a_forked_child_cannot_use_or_release_inherited_roles() {
    if child_role().is_some() {
        return child_drops_inherited_handles();
    }
    let _serial = serial();
    ChildProcess::spawn(
        "a_forked_child_cannot_use_or_release_inherited_roles",
        "forker",
        &[],
    )
    .wait_success(TIMEOUT);
}

fn child_drops_inherited_handles() {
    let ring = Ring::create(Key::Private, &small()).unwrap();
    let _rm = RemoveOnDrop::ring(&ring);
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    tx.try_send(b"before").unwrap();
    // A batch left open at the fork: written, not yet published. A drop of the producer would
    // publish it; the child's drop of its copy must not.
    let mut batch = tx.batch();
    batch.try_send(b"unpublished").unwrap();
    std::mem::forget(batch);
    let me = getpid();
    let pid = fork_run(|| {
        // The forked process's copies of the parent's handles: what `fork` gives a child. (The
        // originals are never dropped in this process: it ends with `_exit`.)
        // SAFETY: each value is read once here and the original is not used again in this
        // process.
        let (mut tx, mut rx, ring) = unsafe {
            (
                std::ptr::read(&raw const tx),
                std::ptr::read(&raw const rx),
                std::ptr::read(&raw const ring),
            )
        };
        let mut wrong = 0;
        // Each operation on an inherited handle fails with the typed error naming the claimer
        // and this process, and leaves the ring alone.
        let named = |w: WrongProcess, role| {
            w.role == role && w.claimer == me && w.current == getpid() && w.current != me
        };
        match tx.try_send(b"from the child") {
            Err(TrySendError::WrongProcess(w)) if named(w, Role::Producer) => {}
            _ => wrong |= 1,
        }
        match tx.send_timeout(b"from the child", Duration::from_millis(10)) {
            Err(SendError::WrongProcess(w)) if named(w, Role::Producer) => {}
            _ => wrong |= 1,
        }
        if !matches!(tx.try_reserve(8), Err(TrySendError::WrongProcess(_))) {
            wrong |= 1;
        }
        let mut buf = [0u8; 64];
        match rx.try_recv(&mut buf) {
            Err(TryRecvError::WrongProcess(w)) if named(w, Role::Consumer) => {}
            _ => wrong |= 2,
        }
        if !matches!(
            rx.recv_timeout(&mut buf, Duration::from_millis(10)),
            Err(RecvError::WrongProcess(_))
        ) {
            wrong |= 2;
        }
        if !matches!(rx.try_lend(), Err(TryRecvError::WrongProcess(_))) {
            wrong |= 2;
        }
        drop(tx);
        drop(rx);
        drop(ring);
        wrong
    });
    let code = wait_pid(pid, TIMEOUT);
    let status = ring.status();
    let again = ring.producer();
    let mut buf = [0u8; 64];
    let first = rx.try_recv(&mut buf).map(|n| buf[..n].to_vec());
    let second = rx.try_recv(&mut buf).map(|n| buf[..n].to_vec());
    let sent_after = tx.try_send(b"after"); // publishes the batch too
    let third = rx.try_recv(&mut buf).map(|n| buf[..n].to_vec());
    let fourth = rx.try_recv(&mut buf).map(|n| buf[..n].to_vec());
    println!(
        "child exit {code}; holders {}/{}; producer() {again:?}; recv {first:?} {second:?}; \
         send after {sent_after:?}; recv {third:?} {fourth:?}",
        status.producer_pid, status.consumer_pid
    );
    assert_eq!(
        code, 0,
        "the child's inherited handles worked (bits: 1 send, 2 recv)"
    );
    assert_eq!(
        (status.producer_pid, status.consumer_pid),
        (me, me),
        "the child's drops released the parent's roles"
    );
    assert!(
        matches!(again, Err(Error::RoleTaken { role: Role::Producer, pid, .. }) if pid == me),
        "a second producer was claimed in the parent: {again:?}"
    );
    assert_eq!(first.as_deref(), Ok(&b"before"[..]));
    assert_eq!(
        second,
        Err(TryRecvError::Empty),
        "false end of stream, the child's message, or the parent's batch published by the child"
    );
    assert_eq!(
        sent_after,
        Ok(()),
        "the child's consumer drop closed the ring"
    );
    assert_eq!(third.as_deref(), Ok(&b"unpublished"[..]));
    assert_eq!(fourth.as_deref(), Ok(&b"after"[..]));
}

/// Row 18: the parent produces, a forked child claims the consumer role (with an identity of
/// its own) and is SIGKILLed. The parent, blocked in `send_timeout` on a full ring, gets
/// `PeerDied` within the bound, and may then take the consumer role over.
#[test]
fn a_killed_forked_consumer_is_seen_dead() {
    if child_role().is_some() {
        return parent_of_forked_consumer();
    }
    let _serial = serial();
    ChildProcess::spawn("a_killed_forked_consumer_is_seen_dead", "forker", &[])
        .wait_success(TIMEOUT);
}

fn parent_of_forked_consumer() {
    let ring = Ring::create(Key::Private, &small().persistent(true)).unwrap();
    let _rm = RemoveOnDrop::ring(&ring);
    let mut tx = ring.producer().unwrap();
    let child_ring = ring.clone();
    let pid = fork_run(move || {
        let Ok(rx) = child_ring.consumer() else {
            return 1;
        };
        loop {
            // SAFETY: pause has no preconditions; the parent kills us.
            unsafe { libc::pause() };
            let _ = &rx;
        }
    });
    wait_for("the forked child claims the consumer", TIMEOUT, || {
        ring.status().consumer_pid != 0
    });
    println!(
        "consumer claimed as pid {} (child {pid})",
        ring.status().consumer_pid
    );
    fill(&mut tx);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let at = Instant::now();
        signal_process(pid as u32, libc::SIGKILL);
        at
    });
    let got = tx.send_timeout(b"blocked", Duration::from_secs(10));
    let returned = Instant::now();
    let killed_at = killer.join().unwrap();
    // While the child lived (and mapped the ring) it was alive: no PeerDied before the kill.
    assert!(
        returned > killed_at,
        "send_timeout returned {got:?} before the kill"
    );
    let took = killed_at.elapsed();
    wait_pid(pid, TIMEOUT);
    println!("send_timeout after the kill: {got:?} after {took:?}");
    assert!(
        matches!(got, Err(SendError::PeerDied { pid: p, .. }) if p == pid as u32),
        "expected PeerDied from pid {pid}, got {got:?}"
    );
    assert!(took < bound(BOUND), "PeerDied took {took:?}");
    ring.take_over_consumer()
        .expect("the dead child's consumer role can be taken over");
}

// ---------------------------------------------------------------------------------------------
// Exec: a holder that replaced its program no longer maps the ring
// ---------------------------------------------------------------------------------------------

/// Row 19: a consumer process `exec`s `/bin/sleep`: same pid, same start time, but the ring is
/// no longer mapped, so it can never release the role. Before the exec it is alive (it maps
/// the ring); after it, the producer blocked on the full ring gets `PeerDied` within the bound,
/// and the role can be taken over, although the process lives on. A SysV ring (found in the
/// holder's maps by its shmid) here, a file ring (by device and inode) below.
#[test]
fn a_holder_that_execs_is_seen_dead() {
    if child_role().is_some() {
        return claim_then_exec();
    }
    let _serial = serial();
    let ring = Ring::create(Key::Private, &small().persistent(true)).unwrap();
    let _rm = RemoveOnDrop::ring(&ring);
    let shmid = ring.shmid().unwrap().to_string();
    exec_case(
        &ring,
        "a_holder_that_execs_is_seen_dead",
        &[(SHMID_VAR, shmid)],
    );
}

/// Row 19 for a ring in a file.
#[test]
fn a_holder_of_a_file_ring_that_execs_is_seen_dead() {
    if child_role().is_some() {
        return claim_then_exec();
    }
    let _serial = serial();
    let path = common::temp_path("exec-ring");
    let _rm = common::RemoveFile(path.clone());
    let ring = Ring::create(&path, &small().persistent(true)).unwrap();
    exec_case(
        &ring,
        "a_holder_of_a_file_ring_that_execs_is_seen_dead",
        &[(PATH_VAR, path.display().to_string())],
    );
}

/// The child: opens the ring (by shmid or path), claims the consumer role, and after a while
/// replaces itself with `sleep`.
fn claim_then_exec() {
    let ring = match std::env::var_os(PATH_VAR) {
        Some(path) => Ring::open(std::path::PathBuf::from(path), &RingConfig::new()).unwrap(),
        None => Ring::open(Shmid(param(SHMID_VAR)), &RingConfig::new()).unwrap(),
    };
    let rx = ring.consumer().unwrap();
    std::thread::sleep(Duration::from_secs(2)); // the parent checks that we count as alive
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new("/bin/sleep").arg("60").exec();
    drop(rx);
    panic!("exec failed: {err}");
}

fn exec_case(ring: &Ring, test: &str, vars: &[(&str, String)]) {
    let mut tx = ring.producer().unwrap();
    let mut child = ChildProcess::spawn(test, "exec", vars);
    let pid = child.pid();
    let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    wait_for("the child claims the consumer", TIMEOUT, || {
        child.assert_running();
        ring.status().consumer_pid == pid
    });
    // Still the test binary, mapping the ring: alive.
    let before = tx.check_consumer();
    if comm().trim() != "sleep" {
        assert_eq!(before, Ok(()), "a holder that maps the ring was judged");
    }
    wait_for("the child execs sleep", TIMEOUT, || {
        child.assert_running();
        comm().trim() == "sleep"
    });
    fill(&mut tx);
    let start = Instant::now();
    let got = tx.send_timeout(b"blocked", Duration::from_secs(10));
    let took = start.elapsed();
    println!("send_timeout with the exec'd consumer: {got:?} after {took:?}");
    assert!(
        matches!(got, Err(SendError::PeerDied { pid: p, .. }) if p == pid),
        "expected PeerDied from pid {pid}, got {got:?}"
    );
    assert!(took < bound(BOUND), "PeerDied took {took:?}");
    assert_eq!(
        process_state(pid).map(|s| s != 'Z'),
        Some(true),
        "sleep still runs"
    );
    ring.take_over_consumer()
        .expect("the exec'd holder's role can be taken over");
    child.kill_and_reap();
}

// ---------------------------------------------------------------------------------------------
// Pid namespaces: a holder we cannot see is unknown, never dead
// ---------------------------------------------------------------------------------------------

/// Row 20: the consumer is a process in another pid namespace (same IPC namespace), pid 1
/// there. Its pid means nothing in ours, so its liveness is unknown: a timed send on the full
/// ring times out (no `PeerDied`), taking the role over is refused, and the holder is reported
/// as unknown. It also holds the consumer role of a second ring that it has detached (without
/// closing) and that nobody else maps: `gc` must not call that ring stale either, since its
/// holder cannot be judged. Needs root (`unshare(CLONE_NEWPID)`); skipped with a message
/// otherwise.
#[test]
fn a_holder_in_another_pid_namespace_is_never_dead() {
    if child_role().is_some() {
        return namespace_parent();
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: unshare(CLONE_NEWPID) needs root, and this test runs as a user");
        return;
    }
    let _serial = serial();
    let ring = Ring::create(Key::Private, &small().persistent(true)).unwrap();
    let _rm = RemoveOnDrop::ring(&ring);
    let mut tx = ring.producer().unwrap();
    let shmid = ring.shmid().unwrap();
    let detached = Ring::create(Key::Private, &small().persistent(true)).unwrap();
    let detached_id = detached.shmid().unwrap();
    let _rm_detached = RemoveOnDrop::id(detached_id);
    let mut child = ChildProcess::spawn(
        "a_holder_in_another_pid_namespace_is_never_dead",
        "ns",
        &[
            (SHMID_VAR, shmid.to_string()),
            (DETACHED_VAR, detached_id.to_string()),
        ],
    );
    wait_for("the grandchild claims both consumers", TIMEOUT, || {
        child.assert_running();
        ring.status().consumer_pid != 0
            && detached.status().consumer_pid != 0
            && shmpipe::segment::stat_id(detached_id).is_ok_and(|st| st.attach_count == 1)
    });
    drop(detached); // now nobody maps it
    let (_, class) = shmpipe::gc::classify_id(detached_id).unwrap();
    println!("class of the detached ring: {class:?}");
    assert!(
        !class.is_stale(),
        "gc calls the ring of a holder it cannot judge stale: {class:?}"
    );
    let consumer = ring.holders().1.expect("the consumer holds the role");
    assert_eq!(
        consumer.liveness,
        shmpipe::Liveness::Unknown,
        "{consumer:?}"
    );
    println!(
        "consumer holder pid (its namespace): {}",
        ring.status().consumer_pid
    );
    fill(&mut tx);
    let got = tx.send_timeout(b"blocked", Duration::from_millis(300));
    println!("send_timeout: {got:?}");
    assert!(
        matches!(got, Err(SendError::Timeout)),
        "a live holder in another pid namespace was judged: {got:?}"
    );
    let check = tx.check_consumer();
    assert!(check.is_ok(), "check_consumer: {check:?}");
    let taken = ring.take_over_consumer();
    println!("take_over_consumer: {taken:?}");
    assert!(
        matches!(
            taken,
            Err(Error::RoleTaken {
                role: Role::Consumer,
                ..
            })
        ),
        "took over a live holder in another pid namespace: {taken:?}"
    );
    child.kill_and_reap();
}

/// The child: enters a new pid namespace for its children and forks the holder, pid 1 there,
/// which attaches by shmid, claims the consumer role and sleeps until the test kills the child
/// (the holder dies with it: `PR_SET_PDEATHSIG`).
fn namespace_parent() {
    // SAFETY: unshare has no memory-safety preconditions.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWPID) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWPID): {}",
        std::io::Error::last_os_error()
    );
    let shmid: i32 = param(SHMID_VAR);
    let pid = fork_run(move || {
        // SAFETY: prctl has no memory-safety preconditions.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
        println!("holder: pid {} in its namespace", getpid());
        let Ok(ring) = Ring::open(Shmid(shmid), &RingConfig::new()) else {
            return 1;
        };
        let Ok(rx) = ring.consumer() else {
            return 2;
        };
        // The second ring: claim its consumer role, then detach it without closing.
        let Ok(other) = Ring::open(Shmid(param(DETACHED_VAR)), &RingConfig::new()) else {
            return 3;
        };
        let Ok(other_rx) = other.consumer() else {
            return 4;
        };
        let addr = other.segment().unwrap().as_ptr();
        std::mem::forget(other_rx);
        std::mem::forget(other);
        // SAFETY: detaches the second ring's mapping, which nothing of ours uses any more (its
        // handles were forgotten, never to be dropped).
        if unsafe { libc::shmdt(addr.cast()) } != 0 {
            return 5;
        }
        loop {
            // SAFETY: pause has no preconditions; the holder dies with its parent.
            unsafe { libc::pause() };
            let _ = &rx;
        }
    });
    // Wait for the holder until the test kills us (the holder then gets SIGKILL too).
    let code = wait_pid(pid, Duration::from_secs(120));
    panic!("the holder exited with {code} before the test ended");
}
