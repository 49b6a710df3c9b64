//! Unit tests of the protocol on heap memory: they run under Miri too.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use super::*;
use crate::at::Heap;
use crate::error::{Corruption, RecvError, SendError, TryRecvError, TrySendError};
use crate::layout::{KIND_MESSAGE, KIND_PADDING};

/// splitmix64: a small deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn message(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

fn small(slot_size: u32, slot_count: u32) -> RingConfig {
    RingConfig::new()
        .slot_size(slot_size)
        .slot_count(slot_count)
}

/// Runs random operations against a `VecDeque` model; any divergence fails.
fn model_run(cfg: RingConfig, seed: u64, ops: usize) {
    let ring = Ring::create(Heap, &cfg).unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    let max = tx.max_message();
    let mut rng = Rng(seed);
    // Messages sent and not yet received, in order; `unpublished` counts the tail of `model`
    // still inside an open send batch (none here: batches are closed within one op).
    let mut model: VecDeque<Vec<u8>> = VecDeque::new();
    let mut seq = 0u64;
    let mut buf = vec![0u8; max];
    for _ in 0..ops {
        match rng.below(8) {
            0 | 1 => {
                let len = rng.below(max as u64 + 1) as usize;
                let m = message(seq, len);
                match tx.try_send(&m) {
                    Ok(()) => {
                        model.push_back(m);
                        seq += 1;
                    }
                    Err(TrySendError::Full) => {
                        assert!(!model.is_empty(), "full while the model is empty");
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            2 => {
                let len = rng.below(max as u64 + 1) as usize;
                let m = message(seq, len);
                match tx.try_reserve(len) {
                    Ok(mut g) => {
                        g.copy_from_slice(&m);
                        if rng.below(4) == 0 {
                            // Not committed: the grant goes out of scope and nothing is sent.
                        } else {
                            g.commit();
                            model.push_back(m);
                            seq += 1;
                        }
                    }
                    Err(TrySendError::Full) => assert!(!model.is_empty()),
                    Err(e) => panic!("{e}"),
                }
            }
            3 => {
                let mut batch = tx.batch();
                for _ in 0..rng.below(5) {
                    let len = rng.below(max as u64 + 1) as usize;
                    let m = message(seq, len);
                    if batch.try_send(&m).is_err() {
                        break;
                    }
                    model.push_back(m);
                    seq += 1;
                }
            }
            4 | 5 => match rx.try_recv(&mut buf) {
                Ok(n) => assert_eq!(&buf[..n], &model.pop_front().unwrap()[..]),
                Err(TryRecvError::Empty) => assert!(model.is_empty()),
                Err(e) => panic!("{e}"),
            },
            6 => match rx.try_lend() {
                Ok(m) => assert_eq!(m.to_vec(), &model.pop_front().unwrap()[..]),
                Err(TryRecvError::Empty) => assert!(model.is_empty()),
                Err(e) => panic!("{e}"),
            },
            _ => {
                let mut batch = rx.batch();
                for _ in 0..rng.below(5) {
                    match batch.try_lend() {
                        Ok(m) => assert_eq!(m.to_vec(), &model.pop_front().unwrap()[..]),
                        Err(TryRecvError::Empty) => {
                            assert!(model.is_empty());
                            break;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
    }
    while let Some(m) = model.pop_front() {
        assert_eq!(rx.try_lend().unwrap().to_vec(), &m[..]);
    }
    assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Empty));
}

#[test]
fn matches_a_queue_model() {
    let ops = if crate::sync::MIRI { 300 } else { 200_000 };
    for (i, cfg) in [small(8, 16), small(16, 8), small(64, 4), small(64, 1)]
        .into_iter()
        .enumerate()
    {
        model_run(cfg, 42 + i as u64, ops);
    }
}

#[test]
fn matches_a_queue_model_across_index_wrap() {
    let ops = if crate::sync::MIRI { 300 } else { 50_000 };
    for start in [u64::MAX - 37, u64::from(u32::MAX) - 5] {
        model_run(small(16, 8).initial_index(start), start, ops);
    }
}

/// The length of message `seq` in the two-thread streams: every size from empty to the
/// maximum, so records take one to many slots and some straddle the end of the array (padding).
fn stream_len(seq: u64, max: usize) -> usize {
    let mut rng = Rng(seq ^ 0x5eed);
    match rng.below(8) {
        0 => 0,
        1 => max,
        2 => 1 + rng.below(8) as usize, // one slot
        _ => rng.below(max as u64 + 1) as usize,
    }
}

/// Checks what a two-thread stream left behind: the counters wrapped around the array several
/// times, padding was written at the wrap, and messages of one and of several slots went through.
fn assert_stream_covered(ring: &Ring, start: u64, n: u64, max: usize) {
    let st = ring.status();
    let used = st.tail.wrapping_sub(start);
    let slots: Vec<u64> = (0..n).map(|s| ring.slots_for(stream_len(s, max))).collect();
    let message_slots: u64 = slots.iter().sum();
    assert_eq!(st.head, st.tail, "everything was received");
    assert_eq!((st.sent, st.received), (n, n));
    assert!(used > message_slots, "no padding was ever written");
    assert!(
        used >= 4 * ring.slot_count() as u64,
        "the ring wrapped only {used} slots"
    );
    assert!(slots.contains(&1) && slots.iter().any(|&k| k > 2));
}

/// A producer thread and a consumer thread exchange a stream with every send and receive call,
/// blocking and not, across the wrap of the array and of the 64-bit counters; the producer's
/// drop closes the ring and the consumer sees end of stream after the last message.
#[test]
fn two_threads_deliver_in_order() {
    let n: u64 = if crate::sync::MIRI { 120 } else { 100_000 };
    for (start, strategy) in [
        (0, WaitStrategy::SpinThenSleep),
        (u64::MAX - 40, WaitStrategy::Sleep),
    ] {
        let ring = Ring::create(Heap, &small(16, 16).initial_index(start)).unwrap();
        let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
        tx.set_wait_strategy(strategy);
        rx.set_wait_strategy(strategy);
        let max = tx.max_message();
        let long = std::time::Duration::from_secs(3600);
        let t = std::thread::spawn(move || {
            let mut rng = Rng(start ^ 1);
            let mut seq = 0;
            while seq < n {
                let m = message(seq, stream_len(seq, max));
                match rng.below(6) {
                    0 => loop {
                        match tx.try_send(&m) {
                            Ok(()) => break,
                            Err(TrySendError::Full) => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    },
                    1 => tx.send(&m).unwrap(),
                    2 => tx.send_timeout(&m, long).unwrap(),
                    3 => {
                        let mut g = tx.reserve(m.len()).unwrap();
                        g.copy_from_slice(&m);
                        g.commit();
                    }
                    4 => loop {
                        match tx.try_reserve(m.len()) {
                            Ok(mut g) => {
                                g.copy_from_slice(&m);
                                g.commit();
                                break;
                            }
                            Err(TrySendError::Full) => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    },
                    _ => {
                        // A batch of up to four, published together (or when it fills up).
                        let mut batch = tx.batch();
                        for _ in 0..1 + rng.below(4) {
                            if seq == n {
                                break;
                            }
                            let m = message(seq, stream_len(seq, max));
                            while let Err(e) = batch.try_send(&m) {
                                assert!(matches!(e, TrySendError::Full), "{e}");
                                std::thread::yield_now();
                            }
                            seq += 1;
                        }
                        continue;
                    }
                }
                seq += 1;
            }
            // Dropping the producer closes the ring.
        });
        let mut rng = Rng(start ^ 2);
        let mut buf = vec![0u8; max];
        let mut seq = 0;
        while seq < n {
            let want = message(seq, stream_len(seq, max));
            match rng.below(6) {
                0 => loop {
                    match rx.try_recv(&mut buf) {
                        Ok(len) => break assert_eq!(&buf[..len], &want[..], "message {seq}"),
                        Err(TryRecvError::Empty) => std::thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                },
                1 => {
                    let len = rx.recv(&mut buf).unwrap();
                    assert_eq!(&buf[..len], &want[..], "message {seq}");
                }
                2 => {
                    let len = rx.recv_timeout(&mut buf, long).unwrap();
                    assert_eq!(&buf[..len], &want[..], "message {seq}");
                }
                3 => assert_eq!(rx.lend().unwrap().to_vec(), &want[..], "message {seq}"),
                4 => loop {
                    match rx.try_lend() {
                        Ok(m) => break assert_eq!(m.to_vec(), &want[..], "message {seq}"),
                        Err(TryRecvError::Empty) => std::thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                },
                _ => {
                    // Up to four in a batch, released together; stop early when empty.
                    let mut batch = rx.batch();
                    for _ in 0..1 + rng.below(4) {
                        if seq == n {
                            break;
                        }
                        let want = message(seq, stream_len(seq, max));
                        match batch.try_recv(&mut buf) {
                            Ok(len) => assert_eq!(&buf[..len], &want[..], "message {seq}"),
                            Err(TryRecvError::Empty) => break,
                            Err(e) => panic!("{e}"),
                        }
                        seq += 1;
                    }
                    continue;
                }
            }
            seq += 1;
        }
        // End of stream, by every call, once the producer is gone.
        assert_eq!(rx.recv(&mut buf), Err(RecvError::Disconnected));
        t.join().unwrap();
        assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Disconnected));
        assert!(matches!(rx.try_lend(), Err(TryRecvError::Disconnected)));
        assert!(matches!(rx.lend(), Err(RecvError::Disconnected)));
        assert_stream_covered(&ring, start, n, max);
    }
}

/// Zero copy on both sides, in two threads: the producer builds records in place
/// (`reserve`/`commit`, `commit_len`, in batches, and grants it drops without committing), the
/// consumer reads them in place (`try_lend`, in batches) while the producer writes the next ones.
#[test]
fn two_threads_zero_copy_reserve_commit_and_try_lend() {
    let n: u64 = if crate::sync::MIRI { 120 } else { 100_000 };
    let ring = Ring::create(Heap, &small(16, 16)).unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    let max = tx.max_message();
    /// Reserves `$len` bytes from `$r` (a producer or a send batch), yielding while the ring is
    /// full. A grant that comes back is dropped unused and the reservation made again, which
    /// then succeeds (claiming is idempotent until a record is finished): a loop that returned
    /// the first grant would keep `$r` borrowed across iterations.
    macro_rules! reserve_spin {
        ($r:expr, $len:expr) => {{
            while let Err(e) = $r.try_reserve($len) {
                assert!(matches!(e, TrySendError::Full), "{e}");
                std::thread::yield_now();
            }
            $r.try_reserve($len).unwrap()
        }};
    }
    let t = std::thread::spawn(move || {
        let mut rng = Rng(7);
        let mut seq = 0;
        while seq < n {
            let m = message(seq, stream_len(seq, max));
            match rng.below(4) {
                0 => {
                    // A grant that goes out of scope without commit sends nothing, whatever
                    // it wrote.
                    reserve_spin!(tx, max).view_mut().fill(0xee);
                    let mut g = reserve_spin!(tx, m.len());
                    g.copy_from_slice(&m);
                    g.commit();
                }
                1 => {
                    // Reserve more than needed, commit what was written.
                    let extra = (max - m.len()).min(1 + rng.below(20) as usize);
                    let mut g = reserve_spin!(tx, m.len() + extra);
                    g.view_mut().copy_from(&m);
                    g.commit_len(m.len());
                }
                2 => {
                    let mut batch = tx.batch();
                    for _ in 0..1 + rng.below(4) {
                        if seq == n {
                            break;
                        }
                        let m = message(seq, stream_len(seq, max));
                        let mut g = reserve_spin!(batch, m.len());
                        g.copy_from_slice(&m);
                        g.commit();
                        seq += 1;
                    }
                    continue;
                }
                _ => {
                    let mut g = reserve_spin!(tx, m.len());
                    g.copy_from_slice(&m);
                    g.commit();
                }
            }
            seq += 1;
        }
    });
    let mut rng = Rng(8);
    let mut seq = 0;
    while seq < n {
        if rng.below(3) == 0 {
            // Several guards of one batch, each dropped before the next; released together.
            let mut batch = rx.batch();
            for _ in 0..1 + rng.below(4) {
                if seq == n {
                    break;
                }
                match batch.try_lend() {
                    Ok(m) => assert_eq!(m.to_vec(), &message(seq, stream_len(seq, max))[..]),
                    Err(TryRecvError::Empty) => break,
                    Err(e) => panic!("{e}"),
                }
                seq += 1;
            }
            continue;
        }
        match rx.try_lend() {
            Ok(m) => {
                assert_eq!(
                    m.to_vec(),
                    &message(seq, stream_len(seq, max))[..],
                    "message {seq}"
                );
                seq += 1;
            }
            Err(TryRecvError::Empty) => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
    t.join().unwrap();
    assert!(matches!(rx.try_lend(), Err(TryRecvError::Disconnected)));
    assert_stream_covered(&ring, 0, n, max);
}

#[test]
fn padding_is_written_and_skipped_at_the_wrap() {
    let ring = Ring::create(Heap, &small(16, 4)).unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    tx.try_send(&[1; 8]).unwrap(); // slot 0
    tx.try_send(&[2; 8]).unwrap(); // slot 1
    tx.try_send(&[3; 8]).unwrap(); // slot 2
    let mut buf = [0u8; 24];
    for _ in 0..3 {
        rx.try_recv(&mut buf).unwrap();
    }
    // Two slots needed, one left at the end: padding at slot 3, message at slot 0.
    tx.try_send(&[4; 24]).unwrap();
    assert_eq!(ring.region.read_record(3), (8, KIND_PADDING));
    assert_eq!(ring.region.read_record(4), (24, KIND_MESSAGE));
    assert_eq!(rx.try_recv(&mut buf), Ok(24));
    assert_eq!(buf, [4; 24]);
    assert_eq!(ring.status().head, 6);
}

#[test]
fn role_is_exclusive_and_reusable() {
    let ring = Ring::create(Heap, &small(16, 4)).unwrap();
    let tx = ring.producer().unwrap();
    assert!(matches!(
        ring.producer(),
        Err(Error::RoleTaken {
            role: Role::Producer,
            ..
        })
    ));
    drop(tx);
    let _tx = ring.producer().unwrap();
    let _rx = ring.consumer().unwrap();
    assert!(matches!(
        ring.consumer(),
        Err(Error::RoleTaken {
            role: Role::Consumer,
            ..
        })
    ));
}

/// A consumer claim refused because a third party left the indices out of range must not
/// reopen the ring: the producer still sees the earlier consumer's close (docs/DESIGN.md,
/// "Closing and reopening").
#[test]
fn a_refused_consumer_claim_leaves_the_ring_closed() {
    let ring = Ring::create(Heap, &small(16, 4)).unwrap();
    ring.consumer().unwrap().close().unwrap();
    let good = ring.region.tail().load(Ordering::Relaxed);
    ring.region.tail().store(u64::MAX, Ordering::Release);
    assert!(matches!(ring.consumer(), Err(Error::Corrupted(_))));
    ring.region.tail().store(good, Ordering::Release);
    let mut tx = ring.producer().unwrap();
    assert_eq!(tx.try_send(b"x"), Err(TrySendError::Disconnected));
    // A claim that passes its checks reopens it.
    let _rx = ring.consumer().unwrap();
    assert_eq!(tx.try_send(b"x"), Ok(()));
}

fn assert_poisoned_rx(rx: &mut Consumer, check: impl Fn(&Corruption) -> bool) {
    let mut buf = [0u8; 64];
    let first = rx.try_recv(&mut buf).unwrap_err();
    match &first {
        TryRecvError::Corrupted(c) => assert!(check(&c.what), "{c}"),
        e => panic!("expected corruption, got {e}"),
    }
    // Sticky: the same error again, whatever the segment says now.
    assert_eq!(rx.try_recv(&mut buf).unwrap_err(), first);
    assert!(rx.poisoned().is_some());
}

#[test]
fn consumer_rejects_hostile_tails() {
    for tail in [u64::MAX, 5, 100] {
        let ring = Ring::create(Heap, &small(16, 4).initial_index(10)).unwrap();
        let mut rx = ring.consumer().unwrap();
        ring.region.tail().store(tail, Ordering::Release);
        assert_poisoned_rx(&mut rx, |c| matches!(c, Corruption::TailOutOfRange { .. }));
    }
}

#[test]
fn consumer_rejects_a_tail_moving_backwards() {
    let ring = Ring::create(Heap, &small(16, 4)).unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    tx.try_send(b"a").unwrap();
    tx.try_send(b"b").unwrap();
    let mut buf = [0u8; 8];
    rx.try_recv(&mut buf).unwrap(); // caches tail 2
    rx.try_recv(&mut buf).unwrap();
    ring.region.tail().store(1, Ordering::Release);
    assert_poisoned_rx(&mut rx, |c| matches!(c, Corruption::TailOutOfRange { .. }));
}

#[test]
fn consumer_rejects_hostile_records() {
    type Check = fn(&Corruption) -> bool;
    let cases: [(u64, u32, u32, u64, Check); 6] = [
        // (slot, len, kind, published tail, expected)
        (0, 1000, KIND_MESSAGE, 1, |c| {
            matches!(c, Corruption::RecordTooLong { .. })
        }),
        (0, 20, KIND_MESSAGE, 1, |c| {
            matches!(c, Corruption::RecordBeyondTail { .. })
        }),
        (0, 0, 7, 1, |c| {
            matches!(c, Corruption::UnknownKind { kind: 7, .. })
        }),
        (0, 0, 0, 1, |c| {
            matches!(c, Corruption::UnknownKind { kind: 0, .. })
        }),
        // Padding at slot 0 would cover the whole array.
        (0, 56, KIND_PADDING, 4, |c| {
            matches!(c, Corruption::PaddingWithoutMessage { .. })
        }),
        // 9 bytes + header need two 16-byte slots; one is published.
        (0, 9, KIND_MESSAGE, 1, |c| {
            matches!(c, Corruption::RecordBeyondTail { .. })
        }),
    ];
    for (slot, len, kind, tail, check) in cases {
        let ring = Ring::create(Heap, &small(16, 4)).unwrap();
        let mut rx = ring.consumer().unwrap();
        ring.region.write_record(slot, len, kind);
        ring.region.tail().store(tail, Ordering::Release);
        assert_poisoned_rx(&mut rx, check);
    }
}

#[test]
fn consumer_rejects_records_running_off_the_array() {
    // Head at slot 3 of 4; a 2-slot message there would run past the end.
    let ring = Ring::create(Heap, &small(16, 4).initial_index(3)).unwrap();
    let mut rx = ring.consumer().unwrap();
    ring.region.write_record(3, 20, KIND_MESSAGE);
    ring.region.tail().store(5, Ordering::Release);
    assert_poisoned_rx(&mut rx, |c| {
        matches!(c, Corruption::RecordOverrunsArray { .. })
    });
}

#[test]
fn consumer_rejects_bad_padding() {
    let ring = Ring::create(Heap, &small(16, 4).initial_index(2)).unwrap();
    let mut rx = ring.consumer().unwrap();
    ring.region.write_record(2, 0, KIND_PADDING); // must be 2 * 16 - 8 = 24
    ring.region.write_record(4, 1, KIND_MESSAGE);
    ring.region.tail().store(5, Ordering::Release);
    assert_poisoned_rx(&mut rx, |c| {
        matches!(
            c,
            Corruption::BadPadding {
                len: 0,
                expected: 24,
                ..
            }
        )
    });
}

#[test]
fn producer_rejects_hostile_heads() {
    for head in [3u64, u64::MAX, 9] {
        let ring = Ring::create(Heap, &small(16, 4).initial_index(4)).unwrap();
        let mut tx = ring.producer().unwrap();
        for _ in 0..4 {
            tx.try_send(b"x").unwrap(); // tail 8, ring full
        }
        // Backwards (3), wildly out (MAX), or past the published tail (9).
        ring.region.head().store(head, Ordering::Release);
        let e = tx.try_send(b"y").unwrap_err();
        assert!(
            matches!(&e, TrySendError::Corrupted(c) if matches!(c.what, Corruption::HeadOutOfRange { .. })),
            "{e:?}"
        );
        // Sticky, and nothing was written past the array or over unconsumed records.
        assert_eq!(tx.try_send(b"z").unwrap_err(), e);
        assert_eq!(ring.status().tail, 8);
    }
}

#[test]
fn attach_rejects_inconsistent_indices() {
    let ring = Ring::create(Heap, &small(16, 4)).unwrap();
    ring.region.tail().store(100, Ordering::Relaxed);
    assert!(matches!(ring.consumer(), Err(Error::Corrupted(_))));
    assert!(matches!(ring.producer(), Err(Error::Corrupted(_))));
    // The failed claims gave the roles back.
    ring.region.tail().store(0, Ordering::Relaxed);
    assert!(ring.consumer().is_ok());
}

#[test]
fn blocking_threads_sleep_and_wake_without_losing_messages() {
    let n: u64 = if crate::sync::MIRI { 60 } else { 100_000 };
    for strategy in [WaitStrategy::Sleep, WaitStrategy::SpinThenSleep] {
        let ring = Ring::create(Heap, &small(16, 4)).unwrap();
        let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
        tx.set_wait_strategy(strategy);
        rx.set_wait_strategy(strategy);
        let max = tx.max_message() as u64;
        let t = std::thread::spawn(move || {
            for seq in 0..n {
                tx.send(&message(seq, (seq % (max + 1)) as usize)).unwrap();
            }
            // Dropping the producer closes the ring.
        });
        let mut buf = vec![0u8; max as usize];
        for seq in 0..n {
            let len = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..len], &message(seq, (seq % (max + 1)) as usize)[..]);
        }
        assert_eq!(rx.recv(&mut buf), Err(RecvError::Disconnected));
        assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Disconnected));
        t.join().unwrap();
    }
}

#[test]
fn closed_consumer_fails_sends() {
    let ring = Ring::create(Heap, &small(16, 4)).unwrap();
    let (mut tx, rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    tx.try_send(b"a").unwrap();
    drop(rx);
    assert_eq!(tx.try_send(b"b"), Err(TrySendError::Disconnected));
    assert_eq!(tx.send(b"c"), Err(SendError::Disconnected));
    // A new consumer reopens the ring and gets what was sent before.
    let mut rx = ring.consumer().unwrap();
    tx.try_send(b"d").unwrap();
    assert_eq!(rx.try_lend().unwrap().to_vec(), b"a");
    assert_eq!(rx.try_lend().unwrap().to_vec(), b"d");
}

#[test]
fn timeouts_return_what_they_waited_for() {
    let ring = Ring::create(Heap, &small(16, 1)).unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    let mut buf = [0u8; 8];
    let d = std::time::Duration::from_millis(if crate::sync::MIRI { 1 } else { 20 });
    assert_eq!(rx.recv_timeout(&mut buf, d), Err(RecvError::Timeout));
    assert!(matches!(rx.lend_timeout(d), Err(RecvError::Timeout)));
    tx.try_send(b"x").unwrap();
    assert_eq!(tx.send_timeout(b"y", d), Err(SendError::Timeout));
    assert!(matches!(tx.reserve_timeout(1, d), Err(SendError::Timeout)));
    assert_eq!(rx.recv_timeout(&mut buf, d), Ok(1));
    let mut g = tx.reserve_timeout(1, d).unwrap();
    g.write_at(0, b'z').unwrap();
    g.commit();
    assert_eq!(rx.lend_timeout(d).unwrap().to_vec(), b"z");
}

#[test]
fn batch_publishes_when_full_so_retrying_cannot_deadlock() {
    let ring = Ring::create(Heap, &small(16, 2)).unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    let mut batch = tx.batch();
    batch.try_send(b"1").unwrap();
    batch.try_send(b"2").unwrap();
    assert!(matches!(batch.try_send(b"3"), Err(TrySendError::Full)));
    // The two messages became visible when the batch hit Full.
    assert_eq!(rx.try_lend().unwrap().to_vec(), b"1");
    assert_eq!(rx.try_lend().unwrap().to_vec(), b"2");
    batch.try_send(b"3").unwrap();
}

#[test]
fn a_full_ring_without_consumer_sleeps_rather_than_spins() {
    let ring = Ring::create(Heap, &small(16, 1)).unwrap();
    let mut tx = ring.producer().unwrap();
    tx.set_wait_strategy(WaitStrategy::Sleep);
    tx.try_send(b"x").unwrap();
    let before = crate::channel::wait::futex_calls();
    let d = std::time::Duration::from_millis(if crate::sync::MIRI { 5 } else { 30 });
    assert_eq!(tx.send_timeout(b"y", d), Err(SendError::Timeout));
    // It went to sleep on the futex (a re-check that always said "ready" would spin instead).
    assert!(crate::channel::wait::futex_calls() > before);
}

#[test]
fn byte_stream_round_trips_with_odd_sized_reads_and_writes() {
    use std::io::{BufRead, Read, Write};
    let total = if crate::sync::MIRI { 3_000 } else { 300_000 };
    let data: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
    let ring = Ring::create(Heap, &small(16, 8)).unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    let src = data.clone();
    let t = std::thread::spawn(move || {
        let mut rng = Rng(9);
        let mut at = 0;
        while at < src.len() {
            let n = (rng.below(40) as usize).min(src.len() - at);
            let w = tx.write(&src[at..at + n]).unwrap();
            assert!(w <= n && (n == 0 || w > 0));
            at += w;
            if rng.below(10) == 0 {
                tx.try_send(b"").ok(); // empty messages are skipped by the stream
            }
        }
    });
    let mut got = Vec::new();
    let mut rng = Rng(3);
    let mut buf = [0u8; 64];
    loop {
        if rng.below(2) == 0 {
            let n = rx.read(&mut buf[..1 + rng.below(63) as usize]).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        } else {
            let avail = rx.fill_buf().unwrap();
            if avail.is_empty() {
                break;
            }
            let n = avail.len().min(1 + rng.below(5) as usize);
            got.extend_from_slice(&avail[..n]);
            rx.consume(n);
        }
    }
    t.join().unwrap();
    assert_eq!(got, data);
}

#[test]
fn message_api_after_a_partial_stream_read_drops_the_rest() {
    use std::io::Read;
    let ring = Ring::create(Heap, &small(16, 8)).unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    tx.try_send(b"abcdef").unwrap();
    tx.try_send(b"next").unwrap();
    let mut two = [0u8; 2];
    rx.read_exact(&mut two).unwrap();
    assert_eq!(&two, b"ab");
    assert_eq!(rx.try_lend().unwrap().to_vec(), b"next");
}

#[test]
fn check_consumer_says_whether_a_consumer_is_there() {
    let ring = Ring::create(Heap, &small(16, 4)).unwrap();
    let tx = ring.producer().unwrap();
    assert_eq!(
        tx.check_consumer(),
        Ok(()),
        "no consumer yet is not an error"
    );
    let rx = ring.consumer().unwrap();
    assert_eq!(tx.check_consumer(), Ok(()), "a live consumer");
    drop(rx);
    assert_eq!(tx.check_consumer(), Err(SendError::Disconnected));
}

#[test]
fn a_producer_claiming_while_the_consumer_waits_is_not_end_of_stream() {
    // The consumer waits for a producer that claims its role at some moment during the wait;
    // a claim landing between the consumer's reads of the owner word and the claim count once
    // looked like a producer that had come and gone.
    let rounds = if crate::sync::MIRI { 20 } else { 5_000 };
    for _ in 0..rounds {
        let ring = Ring::create(Heap, &small(16, 4)).unwrap();
        let mut rx = ring.consumer().unwrap();
        rx.set_wait_strategy(WaitStrategy::Spin);
        let r = ring.clone();
        let t = std::thread::spawn(move || {
            let mut tx = r.producer().unwrap();
            tx.try_send(b"first").unwrap();
            tx
        });
        let mut buf = [0u8; 8];
        assert_eq!(rx.recv(&mut buf), Ok(5));
        drop(t.join().unwrap());
        assert_eq!(rx.recv(&mut buf), Err(RecvError::Disconnected));
    }
}

/// A pointer into the ring for the "hostile peer" thread below.
struct PeerPtr(*mut u8);
// SAFETY: the thread only stores through it with atomics, as a peer process would write.
unsafe impl Send for PeerPtr {}

/// The peer breaks the protocol: while the consumer holds a lent message, another thread (in
/// place of the producer's process) rewrites its bytes with atomic stores. Reading the message
/// through the view is no data race (Miri checks this: with the old slice deref or a
/// `copy_nonoverlapping` out of the ring it reports one), and every copy is private: each of
/// its bytes is an old or a new one, and a copy that was valid UTF-8 stays valid, however the
/// ring changes after (docs/DESIGN.md, "The peer is untrusted", rule 4).
#[test]
fn a_peer_rewriting_a_lent_message_races_with_no_copy() {
    const LEN: usize = 40;
    let ring = Ring::create(Heap, &small(64, 4)).unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    tx.try_send(&[b'a'; LEN]).unwrap();
    let guard = rx.try_lend().unwrap();
    let view = guard.view();
    let peer = PeerPtr(view.as_ptr().cast_mut());
    let rounds = if crate::sync::MIRI { 3 } else { 2000 };
    let writer = std::thread::spawn(move || {
        let p = peer;
        for round in 0..rounds {
            for i in 0..LEN {
                // An invalid UTF-8 byte (a lead byte with nothing after it) or back to 'a'.
                let b = if (round + i) % 2 == 0 { 0xf0 } else { b'a' };
                // SAFETY: inside the lent payload, which stays allocated while the ring lives
                // (joined below); every access to it is atomic.
                unsafe { std::sync::atomic::AtomicU8::from_ptr(p.0.add(i)) }
                    .store(b, Ordering::Relaxed);
            }
        }
    });
    for _ in 0..rounds {
        let copy = view.to_vec();
        assert_eq!(copy.len(), LEN);
        assert!(copy.iter().all(|&b| b == b'a' || b == 0xf0), "{copy:?}");
        if let Ok(s) = std::str::from_utf8(&copy) {
            // The copy cannot change under the check: it walks exactly its own characters.
            assert_eq!(s.chars().count(), LEN);
        }
        let mut part = [0u8; 8];
        assert_eq!(view.subslice(32, 8).unwrap().copy_to(&mut part), 8);
        assert!(view.read_at::<u64>(33).is_err());
    }
    writer.join().unwrap();
    drop(guard);
    assert_eq!(rx.try_recv(&mut [0u8; 64]), Err(TryRecvError::Empty));
}

/// The views copy out and in exactly what slicing would give, and every range past the end is
/// an `OutOfBounds` error (nothing written), never a panic.
#[test]
fn views_copy_out_and_in_with_checked_ranges() {
    use crate::error::OutOfBounds;
    let ring = Ring::create(Heap, &small(128, 4)).unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    let m = message(3, 100);

    let mut g = tx.try_reserve(100).unwrap();
    assert_eq!((g.len(), g.is_empty()), (100, false));
    g.fill(0xee);
    let mut view = g.view_mut();
    assert_eq!(view.copy_from(&m[..60]), 60); // the first 60 bytes
    let (_, mut rest) = view.split_at_mut(60).unwrap();
    assert_eq!(rest.len(), 40);
    assert_eq!(rest.copy_from(&m[60..]), 40);
    assert_eq!(rest.copy_from(&[0; 50]), 40); // as much as fits...
    rest.copy_from_slice(&m[60..]); // ...and back
    let mut v = g.view_mut();
    let before = v.as_view().to_vec();
    assert_eq!(
        v.write_at(97, 0u32),
        Err(OutOfBounds {
            offset: 97,
            size: 4,
            len: 100
        })
    );
    assert!(v.write_at(usize::MAX, 0u8).is_err());
    assert!(v.subslice_mut(90, 11).is_err());
    assert_eq!(
        v.as_view().to_vec(),
        before,
        "a refused write wrote nothing"
    );
    assert_eq!(before, m);
    let word = u32::from_ne_bytes(m[96..].try_into().unwrap());
    assert_eq!(v.read_at::<u32>(96), Ok(word));
    v.subslice_mut(10, 2).unwrap().copy_from_slice(&m[10..12]);
    g.commit();
    tx.try_send(b"").unwrap();

    let msg = rx.try_lend().unwrap();
    let view = msg.view();
    assert_eq!(msg.to_vec(), m);
    let mut short = [0u8; 30];
    assert_eq!(msg.copy_to(&mut short), 30);
    assert_eq!(short[..], m[..30]);
    let mut long = [0u8; 130];
    assert_eq!(view.copy_to(&mut long), 100);
    assert_eq!(long[..100], m[..]);
    for at in 0..=104 {
        let want = m
            .get(at..at + 8)
            .map(|b| u64::from_ne_bytes(b.try_into().unwrap()));
        assert_eq!(msg.read_at::<u64>(at).ok(), want, "read_at({at})");
    }
    assert_eq!(view.subslice(95, 5).unwrap().to_vec(), m[95..]);
    assert_eq!(
        view.subslice(95, 6).unwrap_err(),
        OutOfBounds {
            offset: 95,
            size: 6,
            len: 100
        }
    );
    let (a, b) = view.split_at(33).unwrap();
    assert_eq!(
        (a.to_vec(), b.to_vec()),
        (m[..33].to_vec(), m[33..].to_vec())
    );
    assert!(view.split_at(101).is_err());
    let chunks: Vec<Vec<u8>> = view.chunks(7).map(|c| c.to_vec()).collect();
    assert_eq!(chunks.len(), 15);
    assert_eq!(chunks, m.chunks(7).map(<[u8]>::to_vec).collect::<Vec<_>>());
    let mut out = Vec::new();
    view.write_to(&mut out).unwrap();
    assert_eq!(out, m);
    let mut appended = b"x".to_vec();
    view.append_to(&mut appended);
    assert_eq!(appended[1..], m[..]);
    drop(msg);

    let empty = rx.try_lend().unwrap();
    assert!(empty.is_empty() && empty.view().chunks(4).next().is_none());
    assert_eq!(empty.to_vec(), b"");
}

/// `fill_buf` lends a private copy unless the peer is trusted (then the ring's own bytes), and
/// `read` copies straight from the ring, also after a `fill_buf` of the same message.
#[test]
fn buf_read_copies_unless_the_peer_is_trusted() {
    use std::io::{BufRead, Read};
    let ring = Ring::create(Heap, &small(64, 8)).unwrap();
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    for m in [&b"zero"[..], b"one", b"two", b"three", b"four"] {
        tx.try_send(m).unwrap();
    }
    drop(tx);
    // Message 0 tells where the slots are: payloads start 8 bytes into 64-byte slots.
    let base = rx.try_lend().unwrap().view().as_ptr().wrapping_sub(8);
    let payload = |slot: usize| base.wrapping_add(slot * 64 + 8);

    let copy = rx.fill_buf().unwrap();
    assert_eq!(copy, b"one");
    assert_ne!(copy.as_ptr(), payload(1), "a copy, not the ring");
    rx.consume(1);
    let mut two = [0u8; 2];
    assert_eq!(rx.read(&mut two).unwrap(), 2);
    assert_eq!(&two, b"ne");

    let mut buf = [0u8; 2];
    assert_eq!(rx.read(&mut buf).unwrap(), 2); // straight from the ring
    assert_eq!(&buf, b"tw");

    // SAFETY: the producer is this test's, dropped: nobody writes the slots.
    unsafe { rx.trust_peer_for_buf_read() };
    assert_eq!(rx.fill_buf().unwrap(), b"o");
    assert_eq!(rx.fill_buf().unwrap().as_ptr(), payload(2).wrapping_add(2));
    rx.consume(1);
    let lent = rx.fill_buf().unwrap();
    assert_eq!((lent, lent.as_ptr()), (&b"three"[..], payload(3)));
    let mut rest = String::new();
    rx.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "threefour");
}
