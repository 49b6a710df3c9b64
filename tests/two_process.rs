//! Two real processes share one ring: millions of messages of random lengths (0 to the ring's
//! maximum) go from one process to the other and each is checked in order and byte for byte,
//! with either side starting first; a ring shared by shmid (`Key::Private`); and a ring whose
//! key both processes derive from a file with `ftok`.
//!
//! The start-order tests are the core suite that every backing must pass: the same body runs
//! over a SysV segment (`*::sysv`), a sealed memfd the child inherits (`*::memfd`) and a file
//! in the temporary directory (`*::file`), through the conformance harness of
//! `tests/common/conformance.rs` (a heap ring cannot reach another process), with ten million
//! messages each in the timing suite (about 8 s per test on two cores) and one million in the
//! default suite. A memfd has no name, so this process creates it before the child
//! starts whatever the order; "producer first" then means that the producer claims its role
//! and fills the ring before the consumer touches it. The shmid and ftok tests are about
//! SysV keys and run over a segment only.
//!
//! The other process is this test binary run again (see `common::ChildProcess`): a test
//! function started with `SHMPIPE_TEST_ROLE` set runs that role instead of its body. There is
//! no blocking API yet, so both sides spin (with `crossbeam_utils::Backoff`) on full and empty,
//! and every wait is bounded by [`TIMEOUT`] and by the peer staying alive.

mod common;

use std::time::{Duration, Instant};

use common::timing::size;
use common::{
    Backing, ChildProcess, RemoveFile, RemoveOnDrop, SplitMix64, check_msg, child_ring, child_role,
    fill_msg, msg_len, param, param_opt, temp_path, wait_all_success,
};
use crossbeam_utils::Backoff;
use shmpipe::{
    Consumer, Error, Key, Producer, Ring, RingConfig, Shmid, TryRecvError, TrySendError,
};

/// Messages of each start-order test, whatever the backing: ten million in the timing suite
/// (`common::timing`), one million (still ten thousand wraps of the ring) in the default suite,
/// where a busy machine may run the spinning sides ten times slower.
fn n() -> u64 {
    if cfg!(miri) {
        1_000
    } else {
        size(10_000_000, 1_000_000)
    }
}
/// Messages of the tests about how the ring is found (shmid, ftok).
const N_SMALL: u64 = if cfg!(miri) { 1_000 } else { 1_000_000 };
/// No test may take longer, whatever goes wrong.
const TIMEOUT: Duration = Duration::from_secs(120);

/// 256 slots of 64 bytes with messages of up to 256 bytes (5 slots): the tail wraps every
/// hundred messages or so, usually behind a padding record, and the ring is full or empty
/// all the time.
fn config() -> RingConfig {
    RingConfig::new()
        .slot_size(64)
        .slot_count(256)
        .max_message(256)
}

/// The parameters a child gets.
const SHMID_VAR: &str = "SHMPIPE_TEST_SHMID";
const FTOK_PATH_VAR: &str = "SHMPIPE_TEST_FTOK_PATH";
const FTOK_PROJ_VAR: &str = "SHMPIPE_TEST_FTOK_PROJ";
const COUNT_VAR: &str = "SHMPIPE_TEST_COUNT";
const SEED_VAR: &str = "SHMPIPE_TEST_SEED";

/// Salts that keep the API choices of the two sides independent of the message stream.
const PRODUCER_SALT: u64 = 0x7072_6f64_7563_6572;
const CONSUMER_SALT: u64 = 0x636f_6e73_756d_6572;

// ---------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------

/// Spins with backoff while the ring is full or empty, and fails the test instead of hanging:
/// past the deadline, or once the peer process has exited and a retry still found nothing.
struct Watch<'a> {
    deadline: Instant,
    peer: Option<&'a mut ChildProcess>,
    peer_exited: bool,
    backoff: Backoff,
    spins: u64,
    /// Waits in all (for the report).
    waits: u64,
}

impl<'a> Watch<'a> {
    fn new(deadline: Instant, peer: Option<&'a mut ChildProcess>) -> Watch<'a> {
        Watch {
            deadline,
            peer,
            peer_exited: false,
            backoff: Backoff::new(),
            spins: 0,
            waits: 0,
        }
    }

    /// One more failed attempt: back off, and now and then check the clock and the peer.
    fn wait(&mut self, what: impl Fn() -> String) {
        self.waits += 1;
        if self.peer_exited {
            // The peer's last writes happened before its exit, which we saw before this retry:
            // nothing more is coming.
            let out = self.peer.as_ref().map(|p| p.output()).unwrap_or_default();
            panic!("{}: the peer exited; its output:\n{out}", what());
        }
        self.backoff.snooze();
        self.spins += 1;
        if self.spins % 256 == 0 {
            assert!(
                Instant::now() < self.deadline,
                "timed out after {TIMEOUT:?}: {}",
                what()
            );
            if let Some(peer) = self.peer.as_mut() {
                self.peer_exited = peer.try_status().is_some();
            }
        }
    }

    /// Progress was made: start backing off from scratch.
    fn progress(&mut self) {
        self.backoff.reset();
        self.spins = 0;
    }
}

// ---------------------------------------------------------------------------------------------
// The two sides
// ---------------------------------------------------------------------------------------------

/// Sends messages `0..count`, choosing for each step (by a PRNG) `try_send`, `reserve` +
/// `commit` (sometimes a longer grant shortened by `commit_len`, sometimes a grant dropped
/// first), or a batch of up to 32 messages mixing both.
fn produce(tx: &mut Producer, seed: u64, count: u64, watch: &mut Watch<'_>) {
    let max = tx.max_message();
    let mut rng = SplitMix64::new(seed ^ PRODUCER_SALT);
    let mut buf = vec![0u8; max];
    let mut seq = 0u64;
    while seq < count {
        match rng.below(8) {
            0..=2 => {
                let len = msg_len(seed, seq, max);
                fill_msg(seed, seq, &mut buf[..len]);
                let msg = &buf[..len];
                loop {
                    match tx.try_send(msg) {
                        Ok(()) => break,
                        Err(TrySendError::Full) => {
                            watch.wait(|| format!("room for message {seq} (try_send)"));
                        }
                        Err(e) => panic!("try_send of message {seq}: {e}"),
                    }
                }
                watch.progress();
                seq += 1;
            }
            3..=4 => {
                let len = msg_len(seed, seq, max);
                let extra = if rng.below(4) == 0 {
                    rng.range(0, max - len)
                } else {
                    0
                };
                if rng.below(16) == 0 {
                    // A grant dropped without commit sends nothing.
                    if let Ok(mut g) = tx.try_reserve(rng.range(0, max)) {
                        g.fill(0xa5);
                    }
                }
                loop {
                    match tx.try_reserve(len + extra) {
                        Ok(mut g) => {
                            let mut m = vec![0; len];
                            fill_msg(seed, seq, &mut m);
                            g.view_mut().copy_from(&m);
                            if extra == 0 && rng.below(2) == 0 {
                                g.commit();
                            } else {
                                g.commit_len(len);
                            }
                            break;
                        }
                        Err(TrySendError::Full) => {
                            watch.wait(|| format!("room for message {seq} (reserve)"));
                        }
                        Err(e) => panic!("reserve for message {seq}: {e}"),
                    }
                }
                watch.progress();
                seq += 1;
            }
            _ => {
                let k = 1 + rng.below(32);
                let mut batch = tx.batch();
                for _ in 0..k {
                    if seq == count {
                        break;
                    }
                    let len = msg_len(seed, seq, max);
                    if rng.below(2) == 0 {
                        fill_msg(seed, seq, &mut buf[..len]);
                        loop {
                            match batch.try_send(&buf[..len]) {
                                Ok(()) => break,
                                Err(TrySendError::Full) => {
                                    // Nothing frees room until the consumer sees the batch.
                                    batch.publish();
                                    watch.wait(|| format!("room for message {seq} (batch)"));
                                }
                                Err(e) => panic!("batch try_send of message {seq}: {e}"),
                            }
                        }
                    } else {
                        loop {
                            match batch.try_reserve(len) {
                                Ok(mut g) => {
                                    let mut m = vec![0; len];
                                    fill_msg(seed, seq, &mut m);
                                    g.copy_from_slice(&m);
                                    g.commit();
                                    break;
                                }
                                Err(TrySendError::Full) => {
                                    batch.publish();
                                    watch
                                        .wait(|| format!("room for message {seq} (batch reserve)"));
                                }
                                Err(e) => panic!("batch reserve for message {seq}: {e}"),
                            }
                        }
                    }
                    watch.progress();
                    seq += 1;
                    if rng.below(8) == 0 {
                        batch.publish();
                    }
                }
                // Dropping the batch publishes the rest.
            }
        }
    }
}

fn unexpected(seq: u64, e: TryRecvError) -> ! {
    panic!("receiving message {seq}: {e}")
}

fn check(seed: u64, seq: u64, max: usize, got: &[u8], scratch: &mut Vec<u8>) {
    if let Err(e) = check_msg(seed, seq, max, got, scratch) {
        panic!("consumer: {e}");
    }
}

/// Receives messages `0..count` and checks each, choosing for each step `try_recv` (sometimes
/// into a buffer one byte too small first, which must leave the message in the ring),
/// `try_lend`, `try_recv_vec`, or a batch of up to 32 reads.
fn consume(rx: &mut Consumer, seed: u64, count: u64, watch: &mut Watch<'_>) {
    let max = rx.max_message();
    let mut rng = SplitMix64::new(seed ^ CONSUMER_SALT);
    let mut buf = vec![0u8; max];
    let mut vec = Vec::new();
    let mut scratch = Vec::new();
    let mut seq = 0u64;
    while seq < count {
        match rng.below(8) {
            0..=2 => {
                let want = msg_len(seed, seq, max);
                if want > 0 && rng.below(16) == 0 {
                    loop {
                        match rx.try_recv(&mut buf[..want - 1]) {
                            Err(TryRecvError::BufferTooSmall { needed, available }) => {
                                assert_eq!((needed, available), (want, want - 1), "message {seq}");
                                break;
                            }
                            Err(TryRecvError::Empty) => {
                                watch.wait(|| format!("message {seq} (small buffer)"));
                            }
                            Ok(n) => panic!("message {seq}: {n} bytes fit {} bytes", want - 1),
                            Err(e) => unexpected(seq, e),
                        }
                    }
                }
                let n = loop {
                    match rx.try_recv(&mut buf) {
                        Ok(n) => break n,
                        Err(TryRecvError::Empty) => {
                            watch.wait(|| format!("message {seq} (try_recv)"));
                        }
                        Err(e) => unexpected(seq, e),
                    }
                };
                check(seed, seq, max, &buf[..n], &mut scratch);
            }
            3..=4 => loop {
                match rx.try_lend() {
                    Ok(msg) => {
                        check(seed, seq, max, &msg.to_vec(), &mut scratch);
                        break;
                    }
                    Err(TryRecvError::Empty) => {
                        watch.wait(|| format!("message {seq} (try_lend)"));
                    }
                    Err(e) => unexpected(seq, e),
                }
            },
            5 => loop {
                match rx.try_recv_vec(&mut vec) {
                    Ok(n) => {
                        assert_eq!(n, vec.len());
                        check(seed, seq, max, &vec, &mut scratch);
                        break;
                    }
                    Err(TryRecvError::Empty) => {
                        watch.wait(|| format!("message {seq} (try_recv_vec)"));
                    }
                    Err(e) => unexpected(seq, e),
                }
            },
            _ => {
                let k = 1 + rng.below(32);
                let mut batch = rx.batch();
                let mut got = 0;
                while got < k && seq < count {
                    let r = if rng.below(2) == 0 {
                        batch
                            .try_lend()
                            .map(|msg| check(seed, seq, max, &msg.to_vec(), &mut scratch))
                    } else {
                        batch
                            .try_recv(&mut buf)
                            .map(|n| check(seed, seq, max, &buf[..n], &mut scratch))
                    };
                    match r {
                        Ok(()) => {
                            got += 1;
                            seq += 1;
                            watch.progress();
                            if rng.below(8) == 0 {
                                batch.release();
                            }
                        }
                        // Do not sit on unreleased slots while the ring is empty.
                        Err(TryRecvError::Empty) if got > 0 => break,
                        Err(TryRecvError::Empty) => {
                            watch.wait(|| format!("message {seq} (batch)"));
                        }
                        Err(e) => unexpected(seq, e),
                    }
                }
                continue; // `seq` already counted
            }
        }
        watch.progress();
        seq += 1;
    }
}

/// After `count` messages: once the producer has let go of its role (so everything it sent is
/// published), nothing more may be waiting (end of stream), and the shared counters agree.
fn assert_stream_complete(ring: &Ring, rx: &mut Consumer, count: u64, watch: &mut Watch<'_>) {
    while ring.status().producer_pid != 0 {
        watch.wait(|| "the producer to let go of its role".to_string());
    }
    let mut buf = vec![0u8; rx.max_message()];
    assert_eq!(
        rx.try_recv(&mut buf),
        Err(TryRecvError::Disconnected),
        "the consumer saw more than {count} messages, or no end of stream"
    );
    let st = ring.status();
    assert_eq!(st.sent, count, "{st:?}");
    assert_eq!(st.received, count, "{st:?}");
    assert_eq!(st.head, st.tail, "{st:?}");
}

fn report(test: &str, count: u64, took: Duration, waits: u64) {
    eprintln!(
        "{test}: {count} messages in {took:.2?} ({:.2} M msg/s, {waits} waits on the peer)",
        count as f64 / took.as_secs_f64() / 1e6
    );
}

// ---------------------------------------------------------------------------------------------
// The child's side
// ---------------------------------------------------------------------------------------------

/// If this process is a child, runs its role and returns true.
fn run_child_role() -> bool {
    let Some(role) = child_role() else {
        return false;
    };
    let watch = &mut Watch::new(Instant::now() + TIMEOUT, None);
    let ring = if let Some(shmid) = param_opt::<i32>(SHMID_VAR) {
        Ring::open(Shmid(shmid), &RingConfig::new())
    } else if let Some(path) = param_opt::<String>(FTOK_PATH_VAR) {
        // Derived here, independently of the parent and the other child.
        let key = Key::ftok(path, param(FTOK_PROJ_VAR)).expect("ftok in the child");
        Ring::open_or_create(key, &config())
    } else {
        child_ring(&config()).expect("the parent named a ring")
    }
    .unwrap_or_else(|e| panic!("child {role}: attaching: {e}"));
    let count: u64 = param(COUNT_VAR);
    let seed: u64 = param(SEED_VAR);
    let t0 = Instant::now();
    match role.as_str() {
        "producer" => {
            let mut tx = ring.producer().expect("claim the producer role");
            produce(&mut tx, seed, count, watch);
        }
        "consumer" => {
            let mut rx = ring.consumer().expect("claim the consumer role");
            consume(&mut rx, seed, count, watch);
            assert_stream_complete(&ring, &mut rx, count, watch);
        }
        other => panic!("unknown role {other:?}"),
    }
    report(&format!("child {role}"), count, t0.elapsed(), watch.waits);
    true
}

fn child_vars(count: u64, seed: u64) -> Vec<(&'static str, String)> {
    vec![(COUNT_VAR, count.to_string()), (SEED_VAR, seed.to_string())]
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

// The start-order bodies over every backing another process can reach (the harness in
// tests/common/conformance.rs; a heap ring never leaves its process).
common::conformance! {
    processes(crate::run_child_role): consumer_first, producer_first;
}

/// The consumer (this process) creates the ring, claims its role and waits; the producer
/// starts afterwards and finds the ring already there. (A memfd ring is created before the
/// producer starts whatever the order, since the producer inherits its descriptor.)
fn consumer_first(test: &str, backing: Backing) {
    const SEED: u64 = 0xc0de_0001;
    let deadline = Instant::now() + TIMEOUT;
    let place = backing.place(&config());
    let ring = place
        .open_or_create(&config())
        .expect("consumer creates the ring");
    if let Some(seg) = ring.segment() {
        assert_eq!(seg.stat().unwrap().creator_pid as u32, std::process::id());
    }
    let mut rx = ring.consumer().unwrap();

    let mut child = place.spawn(test, "producer", &child_vars(n(), SEED));
    let t0 = Instant::now();
    let mut watch = Watch::new(deadline, Some(&mut child));
    consume(&mut rx, SEED, n(), &mut watch);
    report(test, n(), t0.elapsed(), watch.waits);
    child.wait_success(deadline.saturating_duration_since(Instant::now()));
    assert_stream_complete(&ring, &mut rx, n(), &mut Watch::new(deadline, None));
    place.assert_unlinked(&ring);
}

/// The producer (a child) creates the ring, claims its role and fills it; the consumer (this
/// process) attaches only once the producer holds its role. (A memfd ring is created by this
/// process before the producer starts, since the producer inherits its descriptor; this
/// process then leaves it alone until the producer holds its role.)
fn producer_first(test: &str, backing: Backing) {
    const SEED: u64 = 0xc0de_0002;
    let deadline = Instant::now() + TIMEOUT;
    let place = backing.place(&config());
    let mut child = place.spawn(test, "producer", &child_vars(n(), SEED));

    // Wait (bounded) until the producer has created the ring and claimed its role.
    loop {
        child.assert_running();
        assert!(Instant::now() < deadline, "the producer never started");
        match place.open() {
            Ok(Some(r)) if r.status().producer_pid == child.pid() => break,
            Ok(_) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("waiting for the producer's ring: {e}"),
        }
    }
    let ring = place
        .open_or_create(&config())
        .expect("consumer opens the ring");
    if let Some(seg) = ring.segment() {
        assert_eq!(
            seg.stat().unwrap().creator_pid as u32,
            child.pid(),
            "the producer created it"
        );
    }
    let mut rx = ring.consumer().unwrap();

    let t0 = Instant::now();
    let mut watch = Watch::new(deadline, Some(&mut child));
    consume(&mut rx, SEED, n(), &mut watch);
    report(test, n(), t0.elapsed(), watch.waits);
    child.wait_success(deadline.saturating_duration_since(Instant::now()));
    assert_stream_complete(&ring, &mut rx, n(), &mut Watch::new(deadline, None));
    place.assert_unlinked(&ring);
}

/// A ring with no key: this process creates it and produces; the child attaches by shmid and
/// consumes.
#[test]
#[cfg_attr(miri, ignore)]
fn private_key_shared_by_shmid() {
    if run_child_role() {
        return;
    }
    const SEED: u64 = 0xc0de_0003;
    let deadline = Instant::now() + TIMEOUT;
    let ring = Ring::create(Key::Private, &config()).unwrap();
    let _rm = RemoveOnDrop::ring(&ring);
    let mut tx = ring.producer().unwrap();

    let mut vars = child_vars(N_SMALL, SEED);
    vars.push((SHMID_VAR, ring.shmid().unwrap().to_string()));
    let mut child = ChildProcess::spawn("private_key_shared_by_shmid", "consumer", &vars);
    let t0 = Instant::now();
    let mut watch = Watch::new(deadline, Some(&mut child));
    produce(&mut tx, SEED, N_SMALL, &mut watch);
    report(
        "private_key_shared_by_shmid",
        N_SMALL,
        t0.elapsed(),
        watch.waits,
    );
    // Let go of the role: the child checks that nothing follows the last message.
    drop(tx);
    child.wait_success(deadline.saturating_duration_since(Instant::now()));
    let st = ring.status();
    assert_eq!((st.sent, st.received), (N_SMALL, N_SMALL), "{st:?}");
    assert_eq!(st.consumer_pid, 0, "{st:?}");
}

/// Both sides are children and find the ring by `ftok` of the same file, each deriving the key
/// on its own; they start together, so either may create it.
#[test]
#[cfg_attr(miri, ignore)]
fn ftok_key_derived_by_both() {
    if run_child_role() {
        return;
    }
    const SEED: u64 = 0xc0de_0004;
    let deadline = Instant::now() + TIMEOUT;
    let file = RemoveFile(temp_path("ftok"));
    std::fs::write(&file.0, b"shmpipe ftok test\n").unwrap();
    // Different files can give the same key: take a project id whose key is free.
    let (key, proj) = (1..=u8::MAX)
        .rev()
        .find_map(|proj| {
            let key = Key::ftok(&file.0, proj).expect("ftok");
            matches!(shmpipe::Segment::open(key), Err(Error::NotFound { .. }))
                .then_some((key, proj))
        })
        .expect("a free ftok key");
    let _rm = RemoveOnDrop::key(key);

    let mut vars = child_vars(N_SMALL, SEED);
    vars.push((FTOK_PATH_VAR, file.0.to_str().unwrap().to_string()));
    vars.push((FTOK_PROJ_VAR, proj.to_string()));
    let consumer = ChildProcess::spawn("ftok_key_derived_by_both", "consumer", &vars);
    let producer = ChildProcess::spawn("ftok_key_derived_by_both", "producer", &vars);
    let t0 = Instant::now();
    wait_all_success(
        vec![consumer, producer],
        deadline.saturating_duration_since(Instant::now()),
    );
    report("ftok_key_derived_by_both", N_SMALL, t0.elapsed(), 0);

    // A ring is not persistent by default: once both sides had claimed their roles it was
    // marked for removal, so with both children gone the key is free again.
    assert!(
        matches!(shmpipe::Segment::open(key), Err(Error::NotFound { .. })),
        "the ring outlived both of its sides"
    );
}
