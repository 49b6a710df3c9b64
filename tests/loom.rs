//! Loom models of the ring protocol: every interleaving of the two sides, and every value the
//! C++20 memory model lets each atomic load return, up to a bound on preemptions.
//!
//! Run with (see `.ci/loom.sh`):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --no-default-features --test loom
//! ```
//!
//! The models run the crate's own ring code over a heap ring whose atomics are loom's and whose
//! slots are loom cells (`src/sync/slots.rs`), so a payload read that the protocol does not order
//! after its write is reported as a data race, a lost wake-up as a deadlock (loom's futex has
//! no timeout), and a wrong message by the assertions here. Rings are 2 to 4 slots, so every
//! model wraps around.
//!
//! `LOOM_MAX_PREEMPTIONS` sets the preemption bound (default 2 here).
#![cfg(loom)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use loom::thread;
use shmpipe::{
    Consumer, Heap, Producer, RecvError, Ring, RingConfig, SendError, TryRecvError, TrySendError,
    WaitStrategy,
};

/// Runs `f` under loom with the preemption bound from `LOOM_MAX_PREEMPTIONS`, 2 if unset,
/// and prints how many executions loom explored and how fast (`--nocapture` shows it).
fn model<F: Fn() + Sync + Send + 'static>(name: &str, f: F) {
    let executions = Arc::new(AtomicU64::new(0));
    let counter = executions.clone();
    let mut b = loom::model::Builder::new();
    let bound = *b.preemption_bound.get_or_insert(2);
    let start = Instant::now();
    b.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f();
    });
    let runs = executions.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "loom model {name}: {runs} executions in {secs:.2} s ({:.0}/s), preemption bound {bound}",
        runs as f64 / secs
    );
}

/// A heap ring of `slots` slots of `slot_size` bytes with both sides claimed.
fn pair(slot_size: u32, slots: u32, max: usize, strategy: WaitStrategy) -> (Producer, Consumer) {
    let ring = Ring::create(
        Heap,
        &RingConfig::new()
            .slot_size(slot_size)
            .slot_count(slots)
            .max_message(max),
    )
    .unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    tx.set_wait_strategy(strategy);
    rx.set_wait_strategy(strategy);
    (tx, rx)
}

/// Message `i` of length `len`: every byte tells which message it belongs to, so a torn or
/// stale payload fails the comparison.
fn msg(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j) as u8 | 1).collect()
}

/// Sends with `try_send`, yielding to the model while the ring is full.
fn send_spinning(tx: &mut Producer, m: &[u8]) {
    loop {
        match tx.try_send(m) {
            Ok(()) => return,
            Err(TrySendError::Full) => thread::yield_now(),
            Err(e) => panic!("send failed: {e}"),
        }
    }
}

/// Receives with `try_recv`, yielding while the ring is empty.
fn recv_spinning(rx: &mut Consumer) -> Result<Vec<u8>, TryRecvError> {
    let mut buf = vec![0u8; rx.max_message()];
    loop {
        match rx.try_recv(&mut buf) {
            Ok(n) => return Ok(buf[..n].to_vec()),
            Err(TryRecvError::Empty) => thread::yield_now(),
            Err(e) => return Err(e),
        }
    }
}

/// Sends `lens.len()` messages of these lengths from a spawned producer and checks each one
/// the consumer receives, on a ring of `slots` 16-byte slots whose counters start at `first`.
fn stream_model(name: &str, slots: u32, max: usize, lens: &'static [usize], first: u64) {
    model(name, move || {
        let ring = Ring::create(
            Heap,
            &RingConfig::new()
                .slot_size(16)
                .slot_count(slots)
                .max_message(max)
                .initial_index(first),
        )
        .unwrap();
        let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
        let t = thread::spawn(move || {
            for (i, &len) in lens.iter().enumerate() {
                send_spinning(&mut tx, &msg(i, len));
            }
        });
        for (i, &len) in lens.iter().enumerate() {
            assert_eq!(recv_spinning(&mut rx).unwrap(), msg(i, len));
        }
        t.join().unwrap();
    });
}

/// Single-slot messages through a 2-slot ring: the third message reuses the first one's slot,
/// so the consumer's release must be ordered before the producer's overwrite (C2/P3) and the
/// producer's payload before the consumer's read (P2/C1).
#[test]
fn single_slot_messages_wrap_around() {
    stream_model("single_slot_messages_wrap_around", 2, 8, &[8, 0, 5], 0);
}

/// As above with the 64-bit counters starting just below 2^64, so they wrap to 0 mid-stream.
#[test]
fn counters_wrap_past_u64_max() {
    stream_model("counters_wrap_past_u64_max", 2, 8, &[8, 0, 5], u64::MAX - 1);
}

/// Messages of one and two slots in a 4-slot ring: the third cannot straddle the end of the
/// array, so the producer writes a padding record in slot 3 and the message at slot 0; the
/// consumer must skip the padding and never see it as a message.
#[test]
fn multi_slot_messages_with_padding_at_the_wrap() {
    // Slots: [0] 8 B, [1,2] 20 B, [3] padding + [0,1] 24 B.
    stream_model(
        "multi_slot_messages_with_padding_at_the_wrap",
        4,
        24,
        &[8, 20, 24],
        0,
    );
}

/// Zero copy on both sides: a grant written in place and committed shorter than reserved, a
/// grant dropped (nothing is sent, the slots are reused), and messages lent in place with
/// `try_lend` whose drop releases the slots.
#[test]
fn zero_copy_reserve_commit_drop_and_read_in_place() {
    model("zero_copy_reserve_commit_drop_and_read_in_place", || {
        let (mut tx, mut rx) = pair(16, 2, 8, WaitStrategy::Spin);
        let t = thread::spawn(move || {
            for i in 0..3 {
                // A reservation dropped unsent: must leave no trace.
                loop {
                    match tx.try_reserve(8) {
                        Ok(g) => {
                            drop(g);
                            break;
                        }
                        Err(TrySendError::Full) => thread::yield_now(),
                        Err(e) => panic!("reserve failed: {e}"),
                    }
                }
                loop {
                    match tx.try_reserve(8) {
                        Ok(mut g) => {
                            let m = msg(i, 6);
                            g.view_mut().copy_from(&m);
                            g.commit_len(6);
                            break;
                        }
                        Err(TrySendError::Full) => thread::yield_now(),
                        Err(e) => panic!("reserve failed: {e}"),
                    }
                }
            }
        });
        for i in 0..3 {
            loop {
                match rx.try_lend() {
                    Ok(g) => {
                        assert_eq!(g.to_vec(), &msg(i, 6)[..]);
                        break;
                    }
                    Err(TryRecvError::Empty) => thread::yield_now(),
                    Err(e) => panic!("read failed: {e}"),
                }
            }
        }
        t.join().unwrap();
    });
}

/// Batches: the producer publishes several messages with one store of the tail and the
/// consumer releases several with one store of the head; a batch that meets a full ring
/// publishes what it has first, so it cannot deadlock against a consumer waiting for it.
#[test]
fn batch_publish_and_batch_release() {
    model("batch_publish_and_batch_release", || {
        let (mut tx, mut rx) = pair(16, 4, 8, WaitStrategy::Spin);
        let n = 6;
        let t = thread::spawn(move || {
            let mut b = tx.batch();
            for i in 0..n {
                loop {
                    match b.try_send(&msg(i, 8)) {
                        Ok(()) => break,
                        Err(TrySendError::Full) => thread::yield_now(),
                        Err(e) => panic!("send failed: {e}"),
                    }
                }
            }
            b.publish();
        });
        let mut got = 0;
        let mut buf = [0u8; 8];
        while got < n {
            let mut b = rx.batch();
            // Take whatever is there (up to 3), then release it all with one store.
            let mut took = 0;
            while took < 3 && got < n {
                match b.try_recv(&mut buf) {
                    Ok(len) => {
                        assert_eq!(&buf[..len], &msg(got, 8)[..]);
                        got += 1;
                        took += 1;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(e) => panic!("recv failed: {e}"),
                }
            }
            drop(b);
            if took == 0 {
                thread::yield_now();
            }
        }
        t.join().unwrap();
    });
}

/// A producer that sends and drops: the consumer receives every message, then
/// `Disconnected`, never `Disconnected` first and never a message twice.
#[test]
fn producer_close_delivers_everything_then_end_of_stream() {
    model(
        "producer_close_delivers_everything_then_end_of_stream",
        || {
            let (mut tx, mut rx) = pair(16, 2, 8, WaitStrategy::Spin);
            let t = thread::spawn(move || {
                for i in 0..2 {
                    send_spinning(&mut tx, &msg(i, 4));
                }
                drop(tx);
            });
            for i in 0..2 {
                assert_eq!(recv_spinning(&mut rx).unwrap(), msg(i, 4));
            }
            assert!(matches!(
                recv_spinning(&mut rx),
                Err(TryRecvError::Disconnected)
            ));
            t.join().unwrap();
        },
    );
}

/// A consumer that closes while the producer is filling the ring: the producer's sends end in
/// `Disconnected`, and never spin for ever on a full ring.
#[test]
fn consumer_close_disconnects_the_producer() {
    model("consumer_close_disconnects_the_producer", || {
        let (mut tx, mut rx) = pair(16, 2, 8, WaitStrategy::Spin);
        let t = thread::spawn(move || {
            let mut buf = [0u8; 8];
            let _ = rx.try_recv(&mut buf);
            drop(rx);
        });
        let mut sent = 0;
        loop {
            match tx.try_send(&msg(sent, 8)) {
                Ok(()) => sent += 1,
                Err(TrySendError::Full) => thread::yield_now(),
                Err(TrySendError::Disconnected) => break,
                Err(e) => panic!("send failed: {e}"),
            }
            // The consumer takes at most one message: 2 slots + 1 is all that can fit.
            assert!(sent <= 3);
        }
        t.join().unwrap();
    });
}

/// The sleep/wake handshake (W1/W2 in DESIGN.md): both sides block with a strategy that sleeps
/// at once under loom, on a 2-slot ring, so each side sleeps on the other in some executions.
/// Loom's futex has no timeout: a wake-up the protocol loses leaves a thread parked for ever,
/// which loom reports as a deadlock. The close at the end must wake a consumer asleep on an
/// empty ring.
#[test]
fn blocking_send_and_recv_never_lose_a_wake_up() {
    model("blocking_send_and_recv_never_lose_a_wake_up", || {
        let (mut tx, mut rx) = pair(16, 2, 8, WaitStrategy::SpinThenSleep);
        let t = thread::spawn(move || {
            for i in 0..3 {
                tx.send(&msg(i, 8)).unwrap();
            }
            drop(tx);
        });
        let mut buf = [0u8; 8];
        for i in 0..3 {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &msg(i, 8)[..]);
        }
        assert!(matches!(rx.recv(&mut buf), Err(RecvError::Disconnected)));
        t.join().unwrap();
    });
}

/// The consumer closes while the producer sleeps on a full ring: the close must wake it, and
/// its send must end in `Disconnected`.
#[test]
fn a_producer_asleep_on_a_full_ring_wakes_when_the_consumer_closes() {
    model(
        "a_producer_asleep_on_a_full_ring_wakes_when_the_consumer_closes",
        || {
            let (mut tx, rx) = pair(16, 2, 8, WaitStrategy::Sleep);
            let t = thread::spawn(move || drop(rx));
            let mut disconnected = false;
            for i in 0..3 {
                match tx.send(&msg(i, 8)) {
                    Ok(()) => {}
                    Err(SendError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                    Err(e) => panic!("send failed: {e}"),
                }
            }
            // Two messages fit; the third must end in Disconnected (the consumer never reads).
            assert!(disconnected);
            t.join().unwrap();
        },
    );
}
