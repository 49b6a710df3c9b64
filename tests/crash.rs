//! Crash tests: a producer or consumer process is SIGKILLed at a chosen instruction of the
//! protocol (the `test-hooks` feature stops it there with SIGSTOP, the test sees the stop and
//! kills it), at a random moment, or while its peer sleeps on the futex; then the survivor must
//! deliver exactly the published prefix, return `PeerDied` within the documented bound, and let
//! a new process take the dead side's role over. Last, both sides die, and `gc` must find and
//! remove the orphan (and nothing else), or the kernel must free an auto-removed ring itself.
//!
//! Every scenario runs on a SysV segment. The core ones (a sleeping side whose peer is killed,
//! producers killed at random moments, and a producer and a consumer killed mid-message and
//! taken over) run on a ring file and on a sealed memfd too, with fewer runs (see [`Backing`]):
//! the same promises hold whatever the memory is.
//!
//! Run with `cargo test --features test-hooks --test crash`. The other processes are this test
//! binary run again (see `common::ChildProcess`): a test function started with
//! `SHMPIPE_TEST_ROLE` set runs that role instead of its body. The tests take one lock, so they
//! run one at a time: the detection times are then not disturbed by other tests, and no `gc`
//! can see another test's ring in a transient state. Each prints what it measured (run with
//! `--nocapture` to see it).

mod common;

use std::fmt::Debug;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::timing::bound;
use common::{
    ChildProcess, RemoveOnDrop, SplitMix64, TempDir, check_msg, child_role, fill_msg, make_msg,
    msg_len, param, param_opt, process_state, signal_process, unique_key,
};
use shmpipe::gc::{self, Class, Entry};
use shmpipe::{
    Error, HEADER_SIZE, Key, Memfd, RecvError, Ring, RingConfig, Role, Segment, SendError, Shmid,
    TryRecvError, TrySendError, WaitStrategy,
};

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

/// The parameters a child gets. It attaches the ring by the one of these three it is given
/// (see [`Backing`]).
const SHMID_VAR: &str = "SHMPIPE_TEST_SHMID";
const PATH_VAR: &str = "SHMPIPE_TEST_RING_PATH";
/// The number of a memfd descriptor the child inherited (no close-on-exec).
const FD_VAR: &str = "SHMPIPE_TEST_MEMFD";
const SEED_VAR: &str = "SHMPIPE_TEST_SEED";
/// Messages to send or receive before idling; absent: stream until killed.
const COUNT_VAR: &str = "SHMPIPE_TEST_COUNT";
/// The first sequence number a successor producer sends.
const START_VAR: &str = "SHMPIPE_TEST_START";
/// The pid of the producer a successor replaces.
const DEAD_PID_VAR: &str = "SHMPIPE_TEST_DEAD_PID";
/// The shmid of a small segment whose first word a producer sets to its count of `Ok` sends.
const ACK_VAR: &str = "SHMPIPE_TEST_ACK_SHMID";
/// Read by the library's `test-hooks`: `POINT:N` stops the process the N-th time at POINT.
const CRASH_VAR: &str = "SHMPIPE_CRASH_AT";

/// The bound asserted on every `PeerDied` detection: DESIGN.md promises 100 ms (and expects
/// 10-20 ms); the margin keeps a loaded CI machine from failing the timing suite, and the
/// default suite allows a starved process `timing::LOADED`. The measured times are printed.
const BOUND: Duration = Duration::from_millis(500);
/// No step of a test may take longer, whatever goes wrong.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long a call that must block is given to get there (and fall asleep) before the kill.
const SETTLE: Duration = Duration::from_millis(30);
/// The crash tests stop their victim at the first long message from this one on: far past the
/// first wrap-around of the 64-slot ring.
const K: u64 = 1000;
/// Messages a successor producer sends after a takeover.
const SUCCESSOR_COUNT: u64 = 300;
/// Runs of each futex-sleep test on a SysV segment ([`Backing::runs`] gives the others fewer).
const SLEEP_RUNS: u64 = 20;
/// Runs of the random-kill test on a SysV segment.
const RANDOM_RUNS: u64 = 200;
/// A child that streams "until killed" gives up (and fails) after this many messages, and an
/// idle child after [`CHILD_LIFETIME`].
const STREAM_CAP: u64 = 20_000_000;
const CHILD_LIFETIME: Duration = Duration::from_secs(60);

/// Seeds of the message streams: the first producer's and a successor's differ, so a record
/// left behind by the dead producer can never pass for the successor's message.
const SEED: u64 = 0xc4a5_0001;
const SUCCESSOR_SEED: u64 = 0xc4a5_0002;
const RANDOM_SEED: u64 = 0xc4a5_0003;

/// 64 slots of 64 bytes, messages of up to 256 bytes (5 slots): the counters wrap every
/// twenty messages or so, often behind a padding record, and the ring is full all the time.
fn config(persistent: bool) -> RingConfig {
    RingConfig::new()
        .slot_size(64)
        .slot_count(64)
        .max_message(256)
        .persistent(persistent)
}

// ---------------------------------------------------------------------------------------------
// Helpers of the parent
// ---------------------------------------------------------------------------------------------

/// Runs the tests of this file one at a time (see the module comment).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a test's ring lives. The parent creates it; a child attaches it by what [`spawn`]
/// puts in its environment, read by [`attach`].
#[derive(Clone, Copy, Debug, PartialEq)]
enum Backing {
    /// A SysV segment with no key: the child attaches by shmid.
    Sysv,
    /// A file in a temporary directory of its own: the child opens the path. Once both roles
    /// have been claimed the path is unlinked (not persistent), so a later process cannot
    /// attach it: the tests on a file spawn no successor.
    File,
    /// A sealed memfd: the child inherits a duplicate of the descriptor across `exec`.
    Memfd,
}

impl Backing {
    /// How many of `sysv_runs` a repeated test makes on this backing: the SysV runs are the
    /// full suite; the other backings share all of the code but how the memory is made and
    /// named, and run a fifth of them to keep the suite's time small.
    fn runs(self, sysv_runs: u64) -> u64 {
        match self {
            Backing::Sysv => sysv_runs,
            Backing::File | Backing::Memfd => sysv_runs.div_ceil(5),
        }
    }
}

/// What removes a test ring: its segment, or its file's directory (a memfd ring goes with its
/// last descriptor and mapping).
#[allow(dead_code)] // held for their `Drop` only
enum Cleanup {
    Segment(RemoveOnDrop),
    Dir(TempDir),
    Nothing,
}

/// A ring with no key (children attach by shmid) and the guard that removes it.
fn private_ring(persistent: bool) -> (Ring, Cleanup) {
    ring_on(Backing::Sysv, persistent)
}

/// A new ring on `backing` and the guard that removes it.
fn ring_on(backing: Backing, persistent: bool) -> (Ring, Cleanup) {
    let config = config(persistent);
    match backing {
        Backing::Sysv => {
            let ring = Ring::create(Key::Private, &config).expect("create ring");
            let guard = RemoveOnDrop::ring(&ring);
            (ring, Cleanup::Segment(guard))
        }
        Backing::File => {
            let dir = TempDir::new("crash-dir");
            let ring = Ring::create(dir.0.join("ring"), &config).expect("create ring file");
            (ring, Cleanup::Dir(dir))
        }
        Backing::Memfd => {
            let ring = Ring::create(Memfd, &config).expect("create memfd ring");
            (ring, Cleanup::Nothing)
        }
    }
}

/// Starts this test binary again as `role` on `ring`, telling it how to attach the ring: its
/// shmid, its path, or the number of a memfd descriptor it inherits (a duplicate without
/// close-on-exec, closed here once the child has been spawned; the tests run one at a time, so
/// no other child is spawned meanwhile to inherit it too).
fn spawn(test: &str, role: &str, ring: &Ring, seed: u64, extra: &[(&str, String)]) -> ChildProcess {
    let mut vars = vec![(SEED_VAR, seed.to_string())];
    let mut inherited = None;
    if let Some(shmid) = ring.shmid() {
        vars.push((SHMID_VAR, shmid.to_string()));
    } else if let Some(memfd) = ring.memfd() {
        let fd = common::inheritable(memfd);
        vars.push((FD_VAR, fd.as_raw_fd().to_string()));
        inherited = Some(fd);
    } else {
        let path = ring.path().expect("a SysV, memfd or file ring");
        vars.push((PATH_VAR, path.display().to_string()));
    }
    vars.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    let child = ChildProcess::spawn(test, role, &vars);
    drop(inherited);
    child
}

/// Polls `cond` until it holds, failing (with the children's output) if one of them exits or
/// the timeout passes.
fn wait_for(what: &str, children: &mut [&mut ChildProcess], mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        for c in children.iter_mut() {
            c.assert_running();
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The first message from `from` on that is long enough for "half copied" to mean something.
fn long_message_from(seed: u64, from: u64, max: usize) -> u64 {
    (from..).find(|&s| msg_len(seed, s, max) >= 64).unwrap()
}

/// `N` for `SHMPIPE_CRASH_AT=point:N` to stop at message `seq`: the send and receive points
/// are passed once per message, the mid-payload and mid-copy points only by non-empty ones.
fn hook_hits(point: &str, seed: u64, max: usize, seq: u64) -> u64 {
    if point.contains(":mid-") {
        (0..=seq).filter(|&s| msg_len(seed, s, max) > 0).count() as u64
    } else {
        seq + 1
    }
}

/// What the consumer expects next: message `next` of the stream seeded with `seed`.
struct Expect {
    seed: u64,
    next: u64,
    max: usize,
    scratch: Vec<u8>,
}

impl Expect {
    fn new(seed: u64, next: u64, max: usize) -> Expect {
        Expect {
            seed,
            next,
            max,
            scratch: Vec::new(),
        }
    }

    /// Checks that `msg` is intact and is the next message (in order, no gap, no duplicate).
    fn got(&mut self, msg: &[u8]) -> Result<(), String> {
        check_msg(self.seed, self.next, self.max, msg, &mut self.scratch)
            .map_err(|e| format!("consumer: {e}"))?;
        self.next += 1;
        Ok(())
    }
}

/// Receives with `try_recv` until the ring is empty, checking every message.
fn drain(rx: &mut shmpipe::Consumer, exp: &mut Expect, buf: &mut [u8]) {
    loop {
        match rx.try_recv(buf) {
            Ok(n) => exp.got(&buf[..n]).unwrap_or_else(|e| panic!("{e}")),
            Err(TryRecvError::Empty) => return,
            Err(e) => panic!("draining at message {}: {e}", exp.next),
        }
    }
}

/// Asserts that claiming a role failed because `pid` holds it, alive or dead as given.
fn assert_role_taken<T: Debug>(got: Result<T, Error>, role: Role, pid: u32, alive: bool) {
    match got {
        Err(Error::RoleTaken {
            role: r,
            pid: p,
            holder,
            ..
        }) if r == role && p == pid && (holder == shmpipe::Liveness::Alive) == alive => {}
        other => panic!(
            "claiming the {role} role held by pid {pid} (alive: {alive}): expected RoleTaken, \
             got {other:?}"
        ),
    }
}

/// A blocking call running in a thread of its own, so the test can kill the peer while the
/// call waits and still never hang: the join is bounded.
struct Blocked<T> {
    handle: JoinHandle<(T, Instant)>,
    what: &'static str,
}

/// Starts `f` in a thread; its result comes back with the instant it returned.
fn block<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Blocked<T> {
    let handle = std::thread::spawn(move || {
        let r = f();
        (r, Instant::now())
    });
    Blocked { handle, what }
}

impl<T: Debug> Blocked<T> {
    /// Fails if the call already returned (while the peer is still alive).
    fn assert_blocked(self) -> Blocked<T> {
        if self.handle.is_finished() {
            let what = self.what;
            let (r, _) = self.join();
            panic!("{what} returned while the peer was alive: {r:?}");
        }
        self
    }

    /// Waits (bounded by [`TIMEOUT`]) for the call to return; re-raises a panic of the thread.
    fn join(self) -> (T, Instant) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.handle.is_finished() {
            assert!(
                Instant::now() < deadline,
                "{} still blocked {TIMEOUT:?} after its peer was killed: it hangs",
                self.what
            );
            std::thread::sleep(Duration::from_micros(100));
        }
        self.handle
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

/// The outcome of a `send` that must fail with `PeerDied`: the pid, if it did; what it
/// returned otherwise.
fn peer_died(got: Result<(), SendError>) -> Result<u32, String> {
    match got {
        Err(SendError::PeerDied { pid }) => Ok(pid),
        other => Err(format!("{other:?}")),
    }
}

/// Prints detection times and returns (median, max).
fn summarize(what: &str, times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    let (median, max) = (times[times.len() / 2], times[times.len() - 1]);
    eprintln!(
        "{what}: PeerDied {} time(s) after SIGKILL: median {median:.2?}, max {max:.2?}",
        times.len()
    );
    (median, max)
}

/// Asserts one detection time against [`BOUND`] and prints it.
fn detected(what: &str, took: Duration) {
    eprintln!("{what}: PeerDied {took:.2?} after SIGKILL");
    assert!(
        took < bound(BOUND),
        "{what}: PeerDied took {took:?}, over {:?}",
        bound(BOUND)
    );
}

// ---------------------------------------------------------------------------------------------
// The children
// ---------------------------------------------------------------------------------------------

/// If this process is a child, runs its role and returns true.
fn run_child_role() -> bool {
    let Some(role) = child_role() else {
        return false;
    };
    let ring = attach().unwrap_or_else(|e| panic!("child {role}: attaching: {e}"));
    let seed: u64 = param(SEED_VAR);
    match role.as_str() {
        "producer" => role_producer(&ring, seed),
        "successor" => role_successor(&ring, seed),
        "consumer" => role_consumer(&ring, seed),
        "consumer-until-peer-died" => role_consumer_until_peer_died(&ring, seed),
        "producer-without-main-thread" => role_producer_without_main_thread(&ring, seed),
        other => panic!("unknown role {other:?}"),
    }
    true
}

/// Attaches the ring as [`spawn`] said: by shmid, path or inherited memfd.
fn attach() -> Result<Ring, Error> {
    let config = RingConfig::new();
    if let Some(shmid) = param_opt(SHMID_VAR) {
        Ring::open(Shmid(shmid), &config)
    } else if let Some(path) = param_opt::<PathBuf>(PATH_VAR) {
        Ring::open(&path, &config)
    } else {
        let fd: i32 = param(FD_VAR);
        // SAFETY: the parent left this descriptor open for us across exec; nothing else in
        // this process owns it.
        Ring::open(unsafe { OwnedFd::from_raw_fd(fd) }, &config)
    }
}

/// Sleeps until killed (and fails if nobody does), keeping whatever role the caller holds.
fn idle() -> ! {
    let t0 = Instant::now();
    while t0.elapsed() < CHILD_LIFETIME {
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nobody killed this child within {CHILD_LIFETIME:?}");
}

/// The first word of a segment, as a shared counter.
fn ack_word(seg: &Segment) -> &AtomicU64 {
    assert!(seg.len() >= 8);
    // SAFETY: shmat maps segments at page boundaries, so the first word is aligned for a u64,
    // and the segment has at least 8 bytes (its kernel size, checked above); the reference
    // borrows `seg`, so the mapping outlives it. The word is only ever accessed atomically,
    // by this test's processes.
    unsafe { &*seg.as_ptr().cast::<AtomicU64>() }
}

/// Claims the producer role and sends messages `0..COUNT` with the blocking `send` (for ever
/// if no count is given: until killed), then idles. With an ack segment, it stores its count
/// of `Ok` sends there after each one.
fn role_producer(ring: &Ring, seed: u64) {
    let mut tx = ring.producer().expect("claim the producer role");
    let count: Option<u64> = param_opt(COUNT_VAR);
    let ack_seg =
        param_opt::<i32>(ACK_VAR).map(|id| Segment::attach_id(id).expect("attach the ack segment"));
    let ack = ack_seg.as_ref().map(ack_word);
    let max = tx.max_message();
    let mut buf = vec![0u8; max];
    for seq in 0..count.unwrap_or(STREAM_CAP) {
        let len = msg_len(seed, seq, max);
        fill_msg(seed, seq, &mut buf[..len]);
        if let Err(e) = tx.send(&buf[..len]) {
            panic!(
                "producer: send of message {seq}: {e} (ring {:?}, {:?})",
                ring.status(),
                shmpipe::gc::inspect(ring.shmid().unwrap_or(-1))
            );
        }
        if let Some(ack) = ack {
            ack.store(seq + 1, Ordering::Release);
        }
    }
    assert!(
        count.is_some(),
        "streamed {STREAM_CAP} messages, never killed"
    );
    idle();
}

/// Takes the producer role over from the dead `DEAD_PID` (after checking that a plain claim is
/// refused), sends messages `START..START + COUNT`, and closes the ring.
fn role_successor(ring: &Ring, seed: u64) {
    let dead: u32 = param(DEAD_PID_VAR);
    let start: u64 = param(START_VAR);
    let count: u64 = param(COUNT_VAR);
    assert_role_taken(ring.producer(), Role::Producer, dead, false);
    let mut tx = ring
        .take_over_producer()
        .expect("take the producer role over");
    assert_eq!(
        ring.status().sent,
        start,
        "the dead producer published {start} messages"
    );
    let max = tx.max_message();
    for seq in start..start + count {
        let msg = make_msg(seed, seq, max);
        if let Err(e) = tx.send(&msg) {
            panic!("successor: send of message {seq}: {e}");
        }
    }
    drop(tx);
}

/// Claims the consumer role and receives messages `0..COUNT` with the blocking `recv`,
/// checking each (for ever if no count is given: until killed), then idles.
fn role_consumer(ring: &Ring, seed: u64) {
    let mut rx = ring.consumer().expect("claim the consumer role");
    let count: Option<u64> = param_opt(COUNT_VAR);
    let max = rx.max_message();
    let mut buf = vec![0u8; max];
    let mut exp = Expect::new(seed, 0, max);
    while exp.next < count.unwrap_or(STREAM_CAP) {
        let n = rx
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("consumer: recv of message {}: {e}", exp.next));
        exp.got(&buf[..n]).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        count.is_some(),
        "received {STREAM_CAP} messages, never killed"
    );
    idle();
}

/// Claims the consumer role and receives with `recv` (sleeping on the futex at once) until
/// `PeerDied`, which must come after exactly `COUNT` messages, with nothing left behind.
fn role_consumer_until_peer_died(ring: &Ring, seed: u64) {
    let mut rx = ring.consumer().expect("claim the consumer role");
    rx.set_wait_strategy(WaitStrategy::Sleep);
    let count: u64 = param(COUNT_VAR);
    let max = rx.max_message();
    let mut buf = vec![0u8; max];
    let mut exp = Expect::new(seed, 0, max);
    let pid = loop {
        match rx.recv(&mut buf) {
            Ok(n) => exp.got(&buf[..n]).unwrap_or_else(|e| panic!("{e}")),
            Err(RecvError::PeerDied { pid }) => break pid,
            Err(e) => panic!("consumer: recv of message {}: {e}", exp.next),
        }
    };
    let before = exp.next;
    while let Ok(n) = rx.try_recv(&mut buf) {
        exp.got(&buf[..n]).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        (before, exp.next),
        (count, count),
        "PeerDied (pid {pid}) after {before} messages, but the producer had published {} \
         (received after PeerDied: {})",
        exp.next,
        exp.next - before
    );
}

/// Ends this process's main thread (the test harness's, idle in a wait) while this thread goes
/// on, as `pthread_exit` in `main` would, and waits until `/proc/self/stat` shows the main
/// thread as a zombie: from then on the process is alive with a zombie thread-group leader.
fn exit_main_thread() {
    extern "C" fn exit_this_thread(_: libc::c_int) {
        // SAFETY: SYS_exit ends only the calling thread (not the process); it is
        // async-signal-safe and does not return.
        unsafe { libc::syscall(libc::SYS_exit, 0) };
    }
    let handler: extern "C" fn(libc::c_int) = exit_this_thread;
    // SAFETY: installs a handler for SIGUSR1 that only makes one system call.
    let old = unsafe { libc::signal(libc::SIGUSR1, handler as libc::sighandler_t) };
    assert_ne!(old, libc::SIG_ERR, "signal(SIGUSR1)");
    let pid = std::process::id() as libc::pid_t;
    // SAFETY: tgkill takes plain integers; it sends SIGUSR1 to the main thread alone (its tid
    // is the pid), whose handler then ends that thread.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGUSR1) };
    assert_eq!(rc, 0, "tgkill: {}", std::io::Error::last_os_error());
    let t0 = Instant::now();
    while process_state(std::process::id()) != Some('Z') {
        assert!(t0.elapsed() < TIMEOUT, "the main thread did not exit");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Claims the producer role, sends message 0, ends the main thread, and 300 ms later sends
/// message 1, then idles: a live producer all along.
fn role_producer_without_main_thread(ring: &Ring, seed: u64) {
    let mut tx = ring.producer().expect("claim the producer role");
    let max = tx.max_message();
    tx.send(&make_msg(seed, 0, max)).expect("send message 0");
    exit_main_thread();
    std::thread::sleep(Duration::from_millis(300));
    tx.send(&make_msg(seed, 1, max)).expect("send message 1");
    idle();
}

// ---------------------------------------------------------------------------------------------
// Cases 1 and 11: the producer killed at each send point, then taken over
// ---------------------------------------------------------------------------------------------

/// A producer child streams with `send` into a small ring while this process receives; the
/// child stops at `point` of message `k` (past a thousand messages and many wrap-arounds) and
/// is SIGKILLed there. The consumer must have received exactly the published messages
/// (`0..k`, or `0..=k` once the tail of `k` was stored), each intact and in order, and then
/// its blocking `recv` returns `PeerDied` with the child's pid within the bound; the record in
/// flight never appears. While the child was only stopped, it counted as alive: `recv` timed
/// out and a takeover was refused. After the kill a new process is refused a plain claim
/// (`holder: Liveness::Dead`), takes the role over, and continues the stream right after the
/// last published message. On a file the ring is persistent: a non-persistent ring file is
/// unlinked once both roles were claimed, and the successor, a new process, could not open it.
fn producer_crash(test: &str, point: &str, backing: Backing) {
    if run_child_role() {
        return;
    }
    let _serial = serial();
    let (ring, _rm) = ring_on(backing, backing == Backing::File);
    let mut rx = ring.consumer().unwrap();
    let max = ring.max_message();
    let k = long_message_from(SEED, K, max);
    let hits = hook_hits(point, SEED, max, k);
    // Message k was published (its send stopped after the tail store) or it was not.
    let published = if point == "send:published" { k + 1 } else { k };
    let mut child = spawn(
        test,
        "producer",
        &ring,
        SEED,
        &[(CRASH_VAR, format!("{point}:{hits}"))],
    );
    let pid = child.pid();

    // Receive while the producer streams, until it stops at the hook.
    let mut exp = Expect::new(SEED, 0, max);
    let mut buf = vec![0u8; max];
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match rx.recv_timeout(&mut buf, Duration::from_millis(5)) {
            Ok(n) => exp.got(&buf[..n]).unwrap_or_else(|e| panic!("{e}")),
            Err(RecvError::Timeout) => {
                if child.poll_stopped() {
                    break;
                }
                child.assert_running();
                assert!(
                    Instant::now() < deadline,
                    "the producer never stopped at {point}:{hits}"
                );
            }
            Err(e) => panic!(
                "receiving message {}: {e}; the producer's output:\n{}",
                exp.next,
                child.output()
            ),
        }
    }
    // It may have published more between our last look and its stop.
    drain(&mut rx, &mut exp, &mut buf);
    assert_eq!(
        exp.next, published,
        "producer stopped at {point} of message {k}"
    );
    let st = ring.status();
    assert_eq!(
        (st.sent, st.used_slots, st.producer_pid),
        (published, 0, pid),
        "{st:?}"
    );

    // Stopped is not dead: a receive times out, and the role cannot be taken over.
    assert_eq!(
        rx.recv_timeout(&mut buf, Duration::from_millis(50)),
        Err(RecvError::Timeout)
    );
    assert_role_taken(ring.producer(), Role::Producer, pid, true);
    assert_role_taken(ring.take_over_producer(), Role::Producer, pid, true);

    // Killed while the consumer is blocked in `recv`.
    let blocked = block("recv", move || {
        let r = rx.recv(&mut buf);
        (r, rx, buf)
    });
    std::thread::sleep(SETTLE);
    let blocked = blocked.assert_blocked();
    let killed = child.kill_and_reap();
    let ((got, mut rx, mut buf), done) = blocked.join();
    assert_eq!(got, Err(RecvError::PeerDied { pid }));
    detected(
        &format!("{test} (producer killed at {point})"),
        done - killed,
    );

    // The record in flight is never delivered, however often we look.
    assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Empty));
    assert_eq!(
        rx.recv_timeout(&mut buf, Duration::from_secs(1)),
        Err(RecvError::PeerDied { pid })
    );
    assert_eq!(exp.next, published);

    continue_with_successor(test, &ring, &mut rx, exp, pid);
}

/// A new process takes the producer role over from the dead `dead` and sends
/// [`SUCCESSOR_COUNT`] more messages, numbered on from what the consumer has received, then
/// closes; the consumer receives exactly those, then end of stream.
fn continue_with_successor(
    test: &str,
    ring: &Ring,
    rx: &mut shmpipe::Consumer,
    exp: Expect,
    dead: u32,
) {
    let start = exp.next;
    let mut next = Expect::new(SUCCESSOR_SEED, start, exp.max);
    let mut successor = spawn(
        test,
        "successor",
        ring,
        SUCCESSOR_SEED,
        &[
            (START_VAR, start.to_string()),
            (COUNT_VAR, SUCCESSOR_COUNT.to_string()),
            (DEAD_PID_VAR, dead.to_string()),
        ],
    );
    // Until the successor holds the role, a receive would report the old producer's death.
    let new_pid = successor.pid();
    wait_for("the successor's takeover", &mut [&mut successor], || {
        ring.status().producer_pid == new_pid
    });
    let mut buf = vec![0u8; rx.max_message()];
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match rx.recv_timeout(&mut buf, Duration::from_millis(100)) {
            Ok(n) => next.got(&buf[..n]).unwrap_or_else(|e| {
                panic!(
                    "after the takeover: {e}; successor:\n{}",
                    successor.output()
                )
            }),
            Err(RecvError::Disconnected) => break,
            Err(RecvError::Timeout) => assert!(Instant::now() < deadline, "successor stalled"),
            Err(e) => panic!(
                "after the takeover, at message {}: {e}; successor:\n{}",
                next.next,
                successor.output()
            ),
        }
    }
    assert_eq!(
        next.next,
        start + SUCCESSOR_COUNT,
        "end of the successor's stream"
    );
    successor.wait_success(TIMEOUT);
    let st = ring.status();
    assert_eq!(
        (st.sent, st.received, st.used_slots, st.producer_pid),
        (start + SUCCESSOR_COUNT, start + SUCCESSOR_COUNT, 0, 0),
        "{st:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Cases 2 and 11: the consumer killed at each receive point while the producer blocks
// ---------------------------------------------------------------------------------------------

/// A consumer child receives with `recv` while this process sends; the child stops at `point`
/// of message `s`, the ring fills, and the producer blocks in `send`. While the child is
/// stopped the send only times out and a takeover is refused; once it is SIGKILLed, the
/// blocked `send` returns `PeerDied` with the child's pid (the message unsent),
/// within the bound. Then `consumer()` is refused (`holder: Liveness::Dead`) and
/// `take_over_consumer()` resumes after the last *released* message: message `s` again unless
/// the child died after storing the head (`recv:released`), every later one once, in order.
fn consumer_crash(test: &str, point: &str, backing: Backing) {
    if run_child_role() {
        return;
    }
    let _serial = serial();
    let (ring, _rm) = ring_on(backing, false);
    let mut tx = ring.producer().unwrap();
    let max = ring.max_message();
    let s = long_message_from(SEED, K, max);
    let hits = hook_hits(point, SEED, max, s);
    let mut child = spawn(
        test,
        "consumer",
        &ring,
        SEED,
        &[(CRASH_VAR, format!("{point}:{hits}"))],
    );
    let pid = child.pid();

    // Send while the consumer receives, until it stops at the hook.
    let mut seq = 0u64;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let msg = make_msg(SEED, seq, max);
        match tx.send_timeout(&msg, Duration::from_millis(5)) {
            Ok(()) => seq += 1,
            Err(SendError::Timeout) => {
                if child.poll_stopped() {
                    break;
                }
                child.assert_running();
                assert!(
                    Instant::now() < deadline,
                    "the consumer never stopped at {point}:{hits}"
                );
            }
            Err(e) => panic!(
                "sending message {seq}: {e}; the consumer's output:\n{}",
                child.output()
            ),
        }
    }
    // Fill the ring: the next send must block.
    loop {
        let msg = make_msg(SEED, seq, max);
        match tx.try_send(&msg) {
            Ok(()) => seq += 1,
            Err(TrySendError::Full) => break,
            Err(e) => panic!("filling the ring at message {seq}: {e}"),
        }
    }
    assert!(seq > s, "sent {seq} messages, the consumer stopped at {s}");
    let msg = make_msg(SEED, seq, max);

    // Stopped is not dead: a send times out, and the role cannot be taken over.
    assert!(
        matches!(
            tx.send_timeout(&msg, Duration::from_millis(50)),
            Err(SendError::Timeout)
        ),
        "send to a stopped consumer"
    );
    assert_role_taken(ring.consumer(), Role::Consumer, pid, true);
    assert_role_taken(ring.take_over_consumer(), Role::Consumer, pid, true);

    // Killed while the producer is blocked in `send` on the full ring.
    let blocked = block("send", move || {
        let r = peer_died(tx.send(&msg));
        (r, tx, msg)
    });
    std::thread::sleep(SETTLE);
    let blocked = blocked.assert_blocked();
    let killed = child.kill_and_reap();
    let ((got, mut tx, msg), done) = blocked.join();
    assert_eq!(got, Ok(pid), "send when the consumer died");
    detected(
        &format!("{test} (consumer killed at {point})"),
        done - killed,
    );

    // Takeover: resume after the last released message.
    assert_role_taken(ring.consumer(), Role::Consumer, pid, false);
    let mut rx = ring
        .take_over_consumer()
        .expect("take the consumer role over");
    let first = if point == "recv:released" { s + 1 } else { s };
    let mut exp = Expect::new(SEED, first, max);
    let mut buf = vec![0u8; max];
    drain(&mut rx, &mut exp, &mut buf);
    assert_eq!(
        exp.next, seq,
        "the new consumer received {first}..{}",
        exp.next
    );
    // The message not sent can be sent again, and the stream ends cleanly.
    tx.send(&msg).expect("send to the new consumer");
    drop(tx);
    let n = rx
        .recv_timeout(&mut buf, TIMEOUT)
        .expect("the resent message");
    exp.got(&buf[..n]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        rx.recv_timeout(&mut buf, TIMEOUT),
        Err(RecvError::Disconnected)
    );
    let st = ring.status();
    assert_eq!((st.sent, st.received), (seq + 1, seq + 1), "{st:?}");
}

macro_rules! crash_tests {
    ($($name:ident: $run:ident($point:literal, $backing:ident);)*) => {$(
        #[test]
        #[cfg_attr(miri, ignore)]
        fn $name() {
            $run(stringify!($name), $point, Backing::$backing);
        }
    )*};
}

// Every point on a SysV segment; one of each side on the other backings, which share all of
// the code but how the memory is made and named.
crash_tests! {
    producer_killed_before_the_payload: producer_crash("send:claimed", Sysv);
    producer_killed_mid_payload: producer_crash("send:mid-payload", Sysv);
    producer_killed_mid_payload_on_a_file: producer_crash("send:mid-payload", File);
    producer_killed_mid_payload_on_a_memfd: producer_crash("send:mid-payload", Memfd);
    producer_killed_after_the_payload_before_publish: producer_crash("send:written", Sysv);
    producer_killed_after_publish: producer_crash("send:published", Sysv);
    consumer_killed_after_finding_a_record: consumer_crash("recv:found", Sysv);
    consumer_killed_mid_copy: consumer_crash("recv:mid-copy", Sysv);
    consumer_killed_mid_copy_on_a_file: consumer_crash("recv:mid-copy", File);
    consumer_killed_mid_copy_on_a_memfd: consumer_crash("recv:mid-copy", Memfd);
    consumer_killed_after_copying_before_release: consumer_crash("recv:consumed", Sysv);
    consumer_killed_after_release: consumer_crash("recv:released", Sysv);
}

// ---------------------------------------------------------------------------------------------
// Case 3: a side asleep on the futex when its peer is killed
// ---------------------------------------------------------------------------------------------

/// The consumer sleeps in `recv` (`WaitStrategy::Sleep`, and the futex counter shows it did)
/// on an empty ring when the producer, idle after one message, is SIGKILLed: `PeerDied` with
/// its pid. Twenty runs (on a SysV segment); the median and maximum detection times are printed.
fn sleeping_consumer(test: &str, backing: Backing) {
    if run_child_role() {
        return;
    }
    let _serial = serial();
    let mut times = Vec::new();
    for _ in 0..backing.runs(SLEEP_RUNS) {
        let (ring, _rm) = ring_on(backing, false);
        let mut rx = ring.consumer().unwrap();
        rx.set_wait_strategy(WaitStrategy::Sleep);
        let max = rx.max_message();
        let mut child = spawn(test, "producer", &ring, SEED, &[(COUNT_VAR, "1".into())]);
        let pid = child.pid();
        let mut buf = vec![0u8; max];
        let n = rx
            .recv_timeout(&mut buf, TIMEOUT)
            .unwrap_or_else(|e| panic!("message 0: {e}; producer:\n{}", child.output()));
        Expect::new(SEED, 0, max)
            .got(&buf[..n])
            .unwrap_or_else(|e| panic!("{e}"));

        let futex_before = shmpipe::wait::futex_calls();
        let blocked = block("recv", move || rx.recv(&mut buf));
        std::thread::sleep(SETTLE);
        let blocked = blocked.assert_blocked();
        assert!(
            shmpipe::wait::futex_calls() > futex_before,
            "the consumer did not sleep on the futex"
        );
        let killed = child.kill_and_reap();
        let (got, done) = blocked.join();
        assert_eq!(got, Err(RecvError::PeerDied { pid }));
        assert!(
            done - killed < bound(BOUND),
            "PeerDied took {:?}",
            done - killed
        );
        times.push(done - killed);
    }
    summarize(&format!("{test} ({backing:?})"), &mut times);
}

/// The producer sleeps in `send` (`WaitStrategy::Sleep`) on a full ring when the consumer,
/// idle since its claim, is SIGKILLed: `PeerDied` with its pid.
/// Twenty runs (on a SysV segment); the median and maximum detection times are printed.
fn sleeping_producer(test: &str, backing: Backing) {
    if run_child_role() {
        return;
    }
    let _serial = serial();
    let mut times = Vec::new();
    for _ in 0..backing.runs(SLEEP_RUNS) {
        let (ring, _rm) = ring_on(backing, false);
        let mut tx = ring.producer().unwrap();
        tx.set_wait_strategy(WaitStrategy::Sleep);
        let max = tx.max_message();
        let mut child = spawn(test, "consumer", &ring, SEED, &[(COUNT_VAR, "0".into())]);
        let pid = child.pid();
        // A producer may fill a ring before any consumer comes: wait for the claim first.
        wait_for("the consumer's claim", &mut [&mut child], || {
            ring.status().consumer_pid == pid
        });
        let mut seq = 0;
        while tx.try_send(&make_msg(SEED, seq, max)).is_ok() {
            seq += 1;
        }
        let msg = make_msg(SEED, seq, max);

        let futex_before = shmpipe::wait::futex_calls();
        let blocked = block("send", move || peer_died(tx.send(&msg)));
        std::thread::sleep(SETTLE);
        let blocked = blocked.assert_blocked();
        assert!(
            shmpipe::wait::futex_calls() > futex_before,
            "the producer did not sleep on the futex"
        );
        let killed = child.kill_and_reap();
        let (got, done) = blocked.join();
        assert_eq!(got, Ok(pid), "send when the consumer died");
        assert!(
            done - killed < bound(BOUND),
            "PeerDied took {:?}",
            done - killed
        );
        times.push(done - killed);
    }
    summarize(&format!("{test} ({backing:?})"), &mut times);
}

// ---------------------------------------------------------------------------------------------
// Case 1, at random moments
// ---------------------------------------------------------------------------------------------

/// Two hundred producers streaming with `send` are SIGKILLed at a random moment, 0 to 5 ms
/// after they claimed the role. Each acknowledges its `Ok` sends in a word of a second
/// segment. The consumer (blocking `recv`) must get an intact, in-order, gap-free prefix of
/// the stream, then `PeerDied`: never a hang. The prefix holds every acknowledged message,
/// and at most one more (published, killed before it could acknowledge). On a file or memfd,
/// a fifth of the runs.
fn random_kills(test: &str, backing: Backing) {
    if run_child_role() {
        return;
    }
    let _serial = serial();
    let runs = backing.runs(RANDOM_RUNS);
    let ack_seg = Segment::create(Key::Private, 4096, 0o600).expect("ack segment");
    let _rm_ack = RemoveOnDrop::id(ack_seg.shmid());
    let ack = ack_word(&ack_seg);
    let mut rng = SplitMix64::new(RANDOM_SEED);
    let mut times = Vec::new();
    let (mut delivered, mut unacked) = (0u64, 0u64);
    let mut late = Vec::new();
    let t0 = Instant::now();
    for run in 0..runs {
        let seed = RANDOM_SEED.wrapping_add(run);
        let delay = Duration::from_micros(rng.below(5001));
        let what = format!("run {run} (seed {seed:#x}, killed {delay:?} after the claim)");
        ack.store(0, Ordering::Relaxed);
        let (ring, _rm) = ring_on(backing, false);
        let mut rx = ring.consumer().unwrap();
        let max = rx.max_message();
        let mut child = spawn(
            test,
            "producer",
            &ring,
            seed,
            &[(ACK_VAR, ack_seg.shmid().to_string())],
        );
        let pid = child.pid();

        // Receives until PeerDied, then looks for anything that still comes: every message
        // is checked; it returns (received before PeerDied, received after it).
        let consumer = block("recv", move || {
            let mut exp = Expect::new(seed, 0, max);
            let mut buf = vec![0u8; max];
            loop {
                match rx.recv_timeout(&mut buf, TIMEOUT) {
                    Ok(n) => exp.got(&buf[..n])?,
                    Err(RecvError::PeerDied { pid: p }) if p == pid => break,
                    Err(e) => return Err(format!("at message {}: {e}", exp.next)),
                }
            }
            let before = exp.next;
            loop {
                match rx.try_recv(&mut buf) {
                    Ok(n) => exp.got(&buf[..n])?,
                    Err(TryRecvError::Empty) => return Ok((before, exp.next - before)),
                    Err(e) => return Err(format!("after PeerDied: {e}")),
                }
            }
        });
        wait_for("the producer's claim", &mut [&mut child], || {
            ring.status().producer_pid == pid
        });
        std::thread::sleep(delay);
        let killed = child.kill_and_reap();
        let (got, done) = consumer.join();
        let (n, after) =
            got.unwrap_or_else(|e| panic!("{what}: {e}; producer:\n{}", child.output()));
        let acked = ack.load(Ordering::Acquire);
        let total = n + after;
        assert!(
            total == acked || total == acked + 1,
            "{what}: {total} messages delivered, {acked} acknowledged"
        );
        if after > 0 {
            late.push(format!(
                "{what}: {after} message(s) after PeerDied, {n} before"
            ));
        }
        delivered += total;
        unacked += total - acked;
        times.push(done - killed);
        assert!(
            done - killed < bound(BOUND),
            "{what}: PeerDied took {:?}",
            done - killed
        );
    }
    eprintln!(
        "{test} ({backing:?}): {runs} runs in {:.2?}, {delivered} messages delivered \
         ({unacked} runs delivered one published but unacknowledged message)",
        t0.elapsed()
    );
    summarize(&format!("{test} ({backing:?})"), &mut times);
    // PeerDied promises that every published message was received before it.
    assert!(
        late.is_empty(),
        "{} of {runs} runs received messages after PeerDied (see \
         consumer_woken_after_the_producer_died_first_receives_everything):\n{}",
        late.len(),
        late.join("\n")
    );
}

/// One test per scenario and backing: `name: scenario(backing);`.
macro_rules! backing_tests {
    ($($name:ident: $run:ident($backing:ident);)*) => {$(
        #[test]
        #[cfg_attr(miri, ignore)]
        fn $name() {
            $run(stringify!($name), Backing::$backing);
        }
    )*};
}

backing_tests! {
    sleeping_consumer_sees_a_killed_producer: sleeping_consumer(Sysv);
    sleeping_consumer_sees_a_killed_producer_on_a_file: sleeping_consumer(File);
    sleeping_consumer_sees_a_killed_producer_on_a_memfd: sleeping_consumer(Memfd);
    sleeping_producer_sees_a_killed_consumer: sleeping_producer(Sysv);
    sleeping_producer_sees_a_killed_consumer_on_a_file: sleeping_producer(File);
    sleeping_producer_sees_a_killed_consumer_on_a_memfd: sleeping_producer(Memfd);
    producer_killed_at_random_moments: random_kills(Sysv);
    producer_killed_at_random_moments_on_a_file: random_kills(File);
    producer_killed_at_random_moments_on_a_memfd: random_kills(Memfd);
}

// ---------------------------------------------------------------------------------------------
// Case 1: messages published while the consumer sleeps, then the producer dies
// ---------------------------------------------------------------------------------------------

/// A consumer child sleeps in `recv` on an empty ring and is frozen there (SIGSTOP). A
/// producer child publishes ten messages and is SIGKILLed; then the consumer is continued.
/// It wakes to a dead producer and a stale cached tail: it must still receive all ten
/// messages before `PeerDied` ("every message it published before has been received"), and
/// nothing may come after it.
#[test]
#[cfg_attr(miri, ignore)]
fn consumer_woken_after_the_producer_died_first_receives_everything() {
    const TEST: &str = "consumer_woken_after_the_producer_died_first_receives_everything";
    if run_child_role() {
        return;
    }
    let _serial = serial();
    let (ring, _rm) = private_ring(false);
    let mut consumer = spawn(
        TEST,
        "consumer-until-peer-died",
        &ring,
        SEED,
        &[(COUNT_VAR, "10".into())],
    );
    let c = consumer.pid();
    wait_for("the consumer's claim", &mut [&mut consumer], || {
        ring.status().consumer_pid == c
    });
    std::thread::sleep(SETTLE); // it is asleep on the futex now
    signal_process(c, libc::SIGSTOP);
    consumer.wait_stopped(TIMEOUT);

    let mut producer = spawn(TEST, "producer", &ring, SEED, &[(COUNT_VAR, "10".into())]);
    let p = producer.pid();
    wait_for("10 messages published", &mut [&mut producer], || {
        let st = ring.status();
        (st.producer_pid, st.sent) == (p, 10)
    });
    producer.kill_and_reap();
    signal_process(c, libc::SIGCONT);
    consumer.wait_success(TIMEOUT);
}

// ---------------------------------------------------------------------------------------------
// A live process whose main thread is a zombie
// ---------------------------------------------------------------------------------------------

/// The kernel shows a process's main thread as a zombie (`Z` in `/proc/PID/stat`) as soon as
/// that thread has exited, even while other threads of the process still run: after
/// `pthread_exit` in `main`, and for a few microseconds in every multi-threaded process killed
/// by SIGKILL (the idle main thread often exits before a thread busy on another core). Here
/// the main thread of the producer's process exits for good while its producer thread goes on
/// sending. The producer is alive: a receive must time out, not report `PeerDied`, and a
/// takeover must be refused (a second producer would write the ring beside the first).
#[test]
#[cfg_attr(miri, ignore)]
fn a_producer_whose_main_thread_exited_is_alive() {
    const TEST: &str = "a_producer_whose_main_thread_exited_is_alive";
    if run_child_role() {
        return;
    }
    let _serial = serial();
    let (ring, _rm) = private_ring(false);
    let mut rx = ring.consumer().unwrap();
    let max = rx.max_message();
    let mut child = spawn(TEST, "producer-without-main-thread", &ring, SEED, &[]);
    let pid = child.pid();
    let mut exp = Expect::new(SEED, 0, max);
    let mut buf = vec![0u8; max];
    let n = rx
        .recv_timeout(&mut buf, TIMEOUT)
        .unwrap_or_else(|e| panic!("message 0: {e}; producer:\n{}", child.output()));
    exp.got(&buf[..n]).unwrap_or_else(|e| panic!("{e}"));
    wait_for(
        "the producer's main thread to exit",
        &mut [&mut child],
        || process_state(pid) == Some('Z'),
    );

    // Message 1 comes 300 ms after message 0: until then, the producer is alive and idle.
    assert_eq!(
        rx.recv_timeout(&mut buf, Duration::from_millis(100)),
        Err(RecvError::Timeout),
        "a live producer (its main thread exited) was reported dead"
    );
    assert_role_taken(ring.take_over_producer(), Role::Producer, pid, true);
    let n = rx
        .recv_timeout(&mut buf, TIMEOUT)
        .unwrap_or_else(|e| panic!("message 1: {e}; producer:\n{}", child.output()));
    exp.got(&buf[..n]).unwrap_or_else(|e| panic!("{e}"));
    child.kill_and_reap();
}

// ---------------------------------------------------------------------------------------------
// Case 17: both sides crash
// ---------------------------------------------------------------------------------------------

/// `gc`'s entry for `shmid`, if it lists it.
fn entry(entries: &[Entry], shmid: i32) -> Option<&Entry> {
    entries.iter().find(|e| e.stat.shmid == shmid)
}

/// Runs `gc` and returns its entries.
fn run_gc(dry_run: bool) -> Vec<Entry> {
    gc::gc(dry_run).unwrap_or_else(|e| panic!("gc(dry_run: {dry_run}): {e}"))
}

/// Whether `ipcs -m` lists the segment (`None` if `ipcs` cannot be run).
fn ipcs_lists(shmid: i32) -> Option<bool> {
    let out = std::process::Command::new("ipcs").arg("-m").output().ok()?;
    let id = shmid.to_string();
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.lines()
            .any(|l| l.split_ascii_whitespace().nth(1) == Some(id.as_str())),
    )
}

/// Asserts that the kernel no longer has the segment: `IPC_STAT` fails, and neither
/// `/proc/sysvipc/shm` nor `ipcs -m` lists it.
fn assert_gone(shmid: i32) {
    assert!(
        matches!(
            shmpipe::segment::stat_id(shmid),
            Err(Error::NotFound { .. })
        ),
        "segment {shmid} still exists: {:?}",
        shmpipe::segment::stat_id(shmid)
    );
    assert!(!gc::segment_ids().unwrap().contains(&shmid));
    assert_ne!(ipcs_lists(shmid), Some(true), "ipcs -m lists {shmid}");
}

/// A non-persistent ring whose consumer claimed its role and was SIGKILLed before any
/// producer came: it was never marked for removal, so it stays. While the consumer lives, `gc`
/// leaves it alone (in use). Once it is dead, a dry run lists it as a crashed orphan without
/// removing it; a real run removes it, and the kernel no longer knows it.
#[test]
#[cfg_attr(miri, ignore)]
fn gc_removes_a_ring_whose_only_side_was_killed() {
    const TEST: &str = "gc_removes_a_ring_whose_only_side_was_killed";
    if run_child_role() {
        return;
    }
    let _serial = serial();
    let (ring, _rm) = private_ring(false);
    let shmid = ring.shmid().unwrap();
    let mut child = spawn(TEST, "consumer", &ring, SEED, &[(COUNT_VAR, "0".into())]);
    let pid = child.pid();
    wait_for("the consumer's claim", &mut [&mut child], || {
        ring.status().consumer_pid == pid
    });
    drop(ring);

    // In use: the live consumer is attached (and maybe, for a moment, another process's gc).
    let e = entry(&run_gc(false), shmid)
        .cloned()
        .expect("gc lists the ring");
    assert!(
        matches!(e.class, Class::InUse { attached: 1.. }) && !e.removed,
        "{e:?}"
    );
    shmpipe::segment::stat_id(shmid).expect("a ring in use stays");

    child.kill_and_reap();
    let st = shmpipe::segment::stat_id(shmid).expect("the orphan stays");
    assert_eq!(
        (st.attach_count, st.marked_for_removal),
        (0, false),
        "{st:?}"
    );

    let dry = run_gc(true);
    let e = entry(&dry, shmid).expect("a dry run lists the orphan");
    assert!(
        matches!(
            e.class,
            Class::Orphan {
                crashed: true,
                pending_slots: 0
            }
        ) && e.class.is_stale(),
        "{e:?}"
    );
    assert!(dry.iter().all(|e| !e.removed), "a dry run removed {dry:?}");
    shmpipe::segment::stat_id(shmid).expect("a dry run removes nothing");
    assert_ne!(
        ipcs_lists(shmid),
        Some(false),
        "ipcs -m no longer lists {shmid}"
    );

    let e = entry(&run_gc(false), shmid)
        .cloned()
        .expect("gc lists the orphan");
    assert!(e.removed, "{e:?}");
    assert_gone(shmid);
}

/// A persistent ring at a key, both sides SIGKILLed with messages still in it; beside it a
/// ring in use and two segments that are not shmpipe rings (one with foreign bytes, one
/// zeroed), nobody attached to those. A dry run lists the crashed orphan with its pending
/// slots and removes nothing; a real run removes the orphan (its key is free again) and
/// nothing else: the foreign segments keep their bytes and are never listed, the ring in use
/// keeps working.
#[test]
#[cfg_attr(miri, ignore)]
fn gc_removes_a_persistent_ring_after_both_sides_were_killed_and_nothing_else() {
    const TEST: &str = "gc_removes_a_persistent_ring_after_both_sides_were_killed_and_nothing_else";
    if run_child_role() {
        return;
    }
    let _serial = serial();
    let key = unique_key();
    let _rm_key = RemoveOnDrop::key(key);
    let ring = Ring::create(key, &config(true)).expect("create ring");
    let shmid = ring.shmid().unwrap();
    let _rm = RemoveOnDrop::id(shmid);
    let mut producer = spawn(TEST, "producer", &ring, SEED, &[(COUNT_VAR, "10".into())]);
    let mut consumer = spawn(TEST, "consumer", &ring, SEED, &[(COUNT_VAR, "4".into())]);
    let (p, c) = (producer.pid(), consumer.pid());
    wait_for(
        "10 sent, 4 received",
        &mut [&mut producer, &mut consumer],
        || {
            let st = ring.status();
            (st.producer_pid, st.consumer_pid, st.sent, st.received) == (p, c, 10, 4)
        },
    );
    let pending = ring.status().used_slots;
    assert!(pending > 0);
    drop(ring);

    // Foreign segments, detached: nobody is attached to them either.
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    let foreign = Segment::create(Key::Private, pattern.len(), 0o600).unwrap();
    let _rm_foreign = RemoveOnDrop::id(foreign.shmid());
    // SAFETY: our fresh segment of `pattern.len()` bytes, attached here and nowhere else.
    unsafe { std::ptr::copy_nonoverlapping(pattern.as_ptr(), foreign.as_ptr(), pattern.len()) };
    let zeroed = Segment::create(Key::Private, HEADER_SIZE * 2, 0o600).unwrap();
    let _rm_zeroed = RemoveOnDrop::id(zeroed.shmid());
    let (foreign_id, zeroed_id) = (foreign.shmid(), zeroed.shmid());
    drop((foreign, zeroed));
    // A ring in use: we hold it and its producer role.
    let (busy, _rm_busy) = private_ring(true);
    let mut busy_tx = busy.producer().unwrap();
    let busy_id = busy.shmid().unwrap();

    producer.kill_and_reap();
    consumer.kill_and_reap();

    let dry = run_gc(true);
    assert!(dry.iter().all(|e| !e.removed), "a dry run removed {dry:?}");
    let e = entry(&dry, shmid).expect("a dry run lists the orphan");
    assert!(
        matches!(e.class, Class::Orphan { crashed: true, pending_slots } if pending_slots == pending),
        "{e:?}, {pending} slots pending"
    );
    Segment::open(key).expect("a dry run removes nothing");

    let entries = run_gc(false);
    assert!(entry(&entries, shmid).expect("gc lists the orphan").removed);
    let e = entry(&entries, busy_id).expect("gc lists the ring in use");
    assert!(
        matches!(e.class, Class::InUse { attached: 1.. }) && !e.removed,
        "{e:?}"
    );
    for id in [foreign_id, zeroed_id] {
        assert!(entry(&dry, id).is_none() && entry(&entries, id).is_none());
    }
    assert_gone(shmid);
    assert!(matches!(Segment::open(key), Err(Error::NotFound { .. })));

    // Untouched: the foreign bytes, the zeroed segment, the ring in use.
    let foreign = Segment::attach_id(foreign_id).expect("the foreign segment stays");
    let mut now = vec![0u8; pattern.len()];
    // SAFETY: the segment is attached for its kernel size, `pattern.len()` bytes; nobody else
    // is attached to write it.
    unsafe { std::ptr::copy_nonoverlapping(foreign.as_ptr(), now.as_mut_ptr(), now.len()) };
    assert!(now == pattern, "gc changed a foreign segment");
    let zeroed = Segment::attach_id(zeroed_id).expect("the zeroed segment stays");
    let mut now = vec![1u8; zeroed.len()];
    // SAFETY: as above, for the zeroed segment's kernel size.
    unsafe { std::ptr::copy_nonoverlapping(zeroed.as_ptr(), now.as_mut_ptr(), now.len()) };
    assert!(now.iter().all(|&b| b == 0), "gc changed a zeroed segment");
    busy_tx
        .try_send(b"still here")
        .expect("the ring in use works");
    let mut rx = busy.consumer().unwrap();
    assert_eq!(rx.try_lend().unwrap().to_vec(), b"still here");
}

/// The normal case: both sides claimed their roles, so the (non-persistent) ring was marked
/// for removal; both are SIGKILLed with messages in flight, and the kernel frees the segment
/// by itself, with no `gc`.
#[test]
#[cfg_attr(miri, ignore)]
fn both_sides_killed_after_both_claimed_leaves_nothing() {
    const TEST: &str = "both_sides_killed_after_both_claimed_leaves_nothing";
    if run_child_role() {
        return;
    }
    let _serial = serial();
    let (ring, _rm) = private_ring(false);
    let shmid = ring.shmid().unwrap();
    let mut producer = spawn(TEST, "producer", &ring, SEED, &[(COUNT_VAR, "10".into())]);
    let mut consumer = spawn(TEST, "consumer", &ring, SEED, &[(COUNT_VAR, "4".into())]);
    let (p, c) = (producer.pid(), consumer.pid());
    wait_for(
        "10 sent, 4 received",
        &mut [&mut producer, &mut consumer],
        || {
            let st = ring.status();
            (st.producer_pid, st.consumer_pid, st.sent, st.received) == (p, c, 10, 4)
        },
    );
    drop(ring);
    let st = shmpipe::segment::stat_id(shmid).unwrap();
    assert_eq!(
        (st.marked_for_removal, st.attach_count),
        (true, 2),
        "{st:?}"
    );
    producer.kill_and_reap();
    consumer.kill_and_reap();
    assert_gone(shmid);
}
