//! A third process that writes the role words (rows 23 and 25 of the failure table in
//! docs/DESIGN.md's trust section, "A third writer").
//!
//! Each test runs both sides on a real SysV segment in this process and plays the third process
//! with a bare `shmat` of the segment (`common::RawAttach`), writing the words a third process
//! could: the producer's `owner` and `claims`, the consumer's `owner`, the whole segment. What
//! must hold: no side waits for ever (every blocking call here has a 10 s timeout and must
//! return within [`BOUND`]), no side goes on as if nothing happened (each ends with a typed
//! `Corrupted` error), and a side that finds its own owner word changed says so. The last test
//! is row 25: a producer that claimed and closed without sending leaves an empty stream, which
//! a later consumer receives as an immediate end of stream.
//!
//! Every segment is removed by a guard (`common::RemoveOnDrop`), also when a test fails.

mod common;

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::timing::bound;
use common::{RawAttach, RemoveOnDrop, unique_key};
use shmpipe::{
    Consumer, Corruption, Key, Producer, RecvError, Ring, RingConfig, SendError, TryRecvError,
    TrySendError,
};

/// Producer line (docs/LAYOUT.md): `tail`, `sent`, `owner`, `claims`.
const P_TAIL: usize = 128;
const P_OWNER: usize = 144;
const P_CLAIMS: usize = 152;
/// Consumer line: `owner`.
const C_OWNER: usize = 272;

/// A side must notice within this long (one call, or one 10 ms sleep slice of a blocking call;
/// the rest is room for a loaded 2-core machine; the default suite allows `timing::LOADED`,
/// still half of [`LONG`]). A hang bound, not a speed claim.
const BOUND: Duration = Duration::from_secs(2);
/// The timeout of blocking calls that must not wait that long: a side that waits for it has
/// missed what the third process did.
const LONG: Duration = Duration::from_secs(10);

/// A ring in a private SysV segment, the third process's attachment of it, and its removal.
struct Real {
    ring: Ring,
    raw: RawAttach,
    _rm: RemoveOnDrop,
}

impl Real {
    fn new() -> Real {
        let cfg = RingConfig::new().slot_size(64).slot_count(16);
        let ring = Ring::create(Key::Private, &cfg).expect("create a SysV ring");
        let rm = RemoveOnDrop::ring(&ring);
        let raw = RawAttach::new(ring.shmid().expect("a SysV ring"));
        Real { ring, raw, _rm: rm }
    }

    fn pair(&self) -> (Producer, Consumer) {
        let tx = self.ring.producer().expect("claim the producer");
        let rx = self.ring.consumer().expect("claim the consumer");
        (tx, rx)
    }

    /// What the third process does in finding 5: zeroes the producer's owner and claims.
    fn zero_producer_role(&self) {
        self.raw.u64(P_OWNER).store(0, Ordering::Relaxed);
        self.raw.u32(P_CLAIMS).store(0, Ordering::Relaxed);
    }
}

/// Calls `recv_timeout(LONG)` and returns what it gave and how long it took.
fn timed_recv(rx: &mut Consumer) -> (Result<usize, RecvError>, Duration) {
    let mut buf = [0u8; 64];
    let t = Instant::now();
    let got = rx.recv_timeout(&mut buf, LONG);
    (got, t.elapsed())
}

/// Receives until the consumer fails, each call bounded; the error must be `Corrupted` and come
/// within [`BOUND`] of the call, and it must be sticky.
fn assert_consumer_fails(rx: &mut Consumer, what: &str) -> Corruption {
    for _ in 0..4 {
        let (got, took) = timed_recv(rx);
        assert!(
            took < bound(BOUND),
            "{what}: a receive took {took:?} ({got:?})"
        );
        match got {
            Ok(_) => continue, // a message published before the write: delivered first
            Err(RecvError::Corrupted(c)) => {
                let mut buf = [0u8; 64];
                assert_eq!(
                    rx.try_recv(&mut buf),
                    Err(TryRecvError::Corrupted(c)),
                    "{what}: not sticky"
                );
                return c.what;
            }
            Err(e) => panic!("{what}: the consumer ended with {e:?}, not a corruption error"),
        }
    }
    panic!("{what}: the consumer went on receiving");
}

#[test]
#[cfg_attr(miri, ignore)]
fn zeroed_producer_owner_and_claims_end_both_sides_with_an_error() {
    let r = Real::new();
    let (mut tx, mut rx) = r.pair();
    tx.try_send(b"one").expect("room");
    assert_eq!(timed_recv(&mut rx).0, Ok(3));
    r.zero_producer_role();
    // The consumer saw a producer claim the ring: "no producer has come yet" is a lie now, and
    // waiting for one would be for ever.
    let what = assert_consumer_fails(&mut rx, "consumer");
    assert!(
        matches!(what, Corruption::ClaimsBackwards { .. }),
        "consumer: {what:?}"
    );
    // The producer's own owner word is not its identity any more.
    match tx.try_send(b"two") {
        Err(TrySendError::Corrupted(c)) => {
            assert!(matches!(c.what, Corruption::RoleLost { .. }), "{c}")
        }
        other => panic!("producer: {other:?}"),
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_consumer_asleep_when_the_producer_role_is_zeroed_wakes_with_an_error() {
    let r = Real::new();
    let (mut tx, mut rx) = r.pair();
    tx.try_send(b"one").expect("room");
    assert_eq!(timed_recv(&mut rx).0, Ok(3));
    let asleep = thread::spawn(move || {
        let got = timed_recv(&mut rx);
        (rx, got)
    });
    thread::sleep(Duration::from_millis(200));
    assert!(!asleep.is_finished(), "the receive did not wait");
    r.zero_producer_role();
    let (_rx, (got, _)) = asleep.join().expect("the receive panicked");
    // It slept 200 ms before the write; it must have noticed within BOUND after it.
    assert!(
        matches!(got, Err(RecvError::Corrupted(_))),
        "the sleeping consumer ended with {got:?}"
    );
    drop(tx);
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_zeroed_segment_mid_stream_ends_both_sides_with_an_error() {
    let r = Real::new();
    let (mut tx, mut rx) = r.pair();
    for m in [&b"one"[..], b"two"] {
        tx.try_send(m).expect("room");
        assert_eq!(timed_recv(&mut rx).0, Ok(3));
    }
    let tail = r.raw.u64(P_TAIL).load(Ordering::Relaxed);
    let len = r.raw.len();
    r.raw.write_bytes(0, &vec![0u8; len]);
    // The producer must not go on writing into a ring whose words are gone.
    match tx.try_send(b"three") {
        Err(TrySendError::Corrupted(c)) => {
            assert!(matches!(c.what, Corruption::RoleLost { .. }), "{c}")
        }
        other => panic!("producer: {other:?}"),
    }
    // A producer that did not check would publish its next tail over the zeros (the tail it
    // had); the consumer must not take the zeroed claims for "no producer yet" then either.
    r.raw.u64(P_TAIL).store(tail, Ordering::Release);
    let what = assert_consumer_fails(&mut rx, "consumer");
    assert!(
        matches!(what, Corruption::ClaimsBackwards { .. }),
        "consumer: {what:?}"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn published_messages_without_a_producer_claim_are_corruption() {
    let r = Real::new();
    let mut tx = r.ring.producer().expect("claim the producer");
    tx.try_send(b"one").expect("room");
    tx.try_send(b"two").expect("room");
    drop(tx);
    r.zero_producer_role();
    // The consumer comes later: the ring holds messages, yet says no producer ever claimed it.
    let mut rx = r.ring.consumer().expect("claim the consumer");
    let what = assert_consumer_fails(&mut rx, "late consumer");
    assert!(
        matches!(what, Corruption::PublishedWithoutClaim { .. }),
        "consumer: {what:?}"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_consumer_whose_owner_word_changed_reports_it() {
    for found in [0u64, 0x1234_5678] {
        let r = Real::new();
        let (mut tx, mut rx) = r.pair();
        r.raw.u64(C_OWNER).store(found, Ordering::Relaxed);
        let what = assert_consumer_fails(&mut rx, "consumer");
        assert!(
            matches!(what, Corruption::RoleLost { found: f, .. } if f == found),
            "consumer: {what:?}"
        );
        assert!(rx.close().is_err(), "close reported success");
        tx.try_send(b"x").expect("the producer is not affected");
        assert!(tx.close().is_ok());
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_producer_asleep_on_a_full_ring_reports_its_owner_word_changed() {
    let r = Real::new();
    let (mut tx, rx) = r.pair();
    while tx.try_send(&[0u8; 56]).is_ok() {}
    let asleep = thread::spawn(move || {
        let t = Instant::now();
        static MSG: [u8; 56] = [1; 56];
        let got = tx.send_timeout(&MSG, LONG);
        (tx, got, t.elapsed())
    });
    thread::sleep(Duration::from_millis(200));
    assert!(!asleep.is_finished(), "the send did not wait");
    r.raw.u64(P_OWNER).store(0x1234_5678, Ordering::Relaxed);
    let (tx, got, took) = asleep.join().expect("the send panicked");
    assert!(took < bound(BOUND), "the send took {took:?}: {got:?}");
    match got {
        Err(SendError::Corrupted(c)) => {
            assert!(
                matches!(
                    c.what,
                    Corruption::RoleLost {
                        found: 0x1234_5678,
                        ..
                    }
                ),
                "{c}"
            )
        }
        other => panic!("producer: {other:?}"),
    }
    // Closing fails too: the role is not ours to give back, and the word is left alone.
    assert!(tx.close().is_err());
    assert_eq!(r.raw.u64(P_OWNER).load(Ordering::Relaxed), 0x1234_5678);
    drop(rx);
}

#[test]
#[cfg_attr(miri, ignore)]
fn close_reports_a_clean_end_and_a_poisoned_side() {
    let r = Real::new();
    let (mut tx, mut rx) = r.pair();
    tx.try_send(b"one").expect("room");
    assert!(tx.close().is_ok(), "a clean close");
    assert_eq!(timed_recv(&mut rx).0, Ok(3));
    assert_eq!(timed_recv(&mut rx).0, Err(RecvError::Disconnected));
    assert!(rx.close().is_ok(), "a clean close after the end of stream");
    assert_eq!(r.raw.u64(P_OWNER).load(Ordering::Relaxed), 0);
    assert_eq!(r.raw.u64(C_OWNER).load(Ordering::Relaxed), 0);

    // A consumer poisoned by a bad tail says so when it closes.
    let (mut tx, mut rx) = r.pair();
    r.raw.u64(P_TAIL).store(u64::MAX, Ordering::Release);
    assert!(matches!(
        timed_recv(&mut rx).0,
        Err(RecvError::Corrupted(_))
    ));
    assert!(matches!(rx.close(), Err(c) if matches!(c.what, Corruption::TailOutOfRange { .. })));
    let _ = tx.try_send(b"x");
    drop(tx);
}

/// Row 25: a producer that claimed and closed without sending, before any consumer came,
/// leaves a complete (empty) stream: `open_or_create` must not recycle it, `gc` must keep it,
/// and the consumer that comes later gets the end of stream at once.
#[test]
#[cfg_attr(miri, ignore)]
fn an_empty_stream_is_received_as_an_immediate_end_of_stream() {
    let key = unique_key();
    let _rm = RemoveOnDrop::key(key);
    let cfg = RingConfig::new().slot_size(64).slot_count(16);
    let ring = Ring::open_or_create(key, &cfg).expect("create");
    let (shmid, instance) = (ring.shmid().expect("a segment"), ring.instance_id());
    drop(ring.producer().expect("claim the producer"));
    drop(ring);

    let (_, class) = shmpipe::gc::classify_id(shmid).expect("classify");
    assert!(
        !class.is_stale(),
        "gc would remove the empty stream: {class:?}"
    );

    let ring = Ring::open_or_create(key, &cfg).expect("open");
    assert_eq!(
        (ring.shmid(), ring.instance_id()),
        (Some(shmid), instance),
        "the empty stream was recycled"
    );
    let mut rx = ring.consumer().expect("claim the consumer");
    let (got, took) = timed_recv(&mut rx);
    assert_eq!(got, Err(RecvError::Disconnected));
    assert!(took < bound(BOUND), "the end of stream took {took:?}");
}

/// The first error stays the answer: a consumer poisoned because its owner word read X, whose
/// batch then releases (or which closes) while the word reads Y, still reports X. (Found by the
/// `hostile` fuzz target: the release replaced the poison.)
#[test]
#[cfg_attr(miri, ignore)]
fn the_first_role_error_stays_the_answer() {
    let r = Real::new();
    let (mut tx, mut rx) = r.pair();
    tx.try_send(b"one").expect("room");
    let mut batch = rx.batch();
    assert_eq!(batch.try_lend().map(|m| m.len()).ok(), Some(3));
    r.raw.u64(C_OWNER).store(0x1111, Ordering::Relaxed);
    let first = match batch.try_lend().map(|m| m.len()) {
        Err(TryRecvError::Corrupted(c)) => c,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        first.what,
        Corruption::RoleLost { found: 0x1111, .. }
    ));
    r.raw.u64(C_OWNER).store(0x2222, Ordering::Relaxed);
    drop(batch); // releases: finds the word changed again
    let mut buf = [0u8; 8];
    assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Corrupted(first)));
    assert_eq!(rx.poisoned(), Some(&first));
    drop(tx);
}
