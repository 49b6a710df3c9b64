//! Edge cases of one ring used from one process: message sizes, full and empty, grants and
//! batches, counter wrap-around, over every backing (heap, SysV segment, memfd, file); attach
//! errors for memory that is not a ring, or not a whole one, over every backing another process
//! can map, and for SysV keys and shmids; and a hostile peer that scribbles on the shared
//! indices and record headers through a second mapping of the ring's memory. Which body runs
//! over which backing, and why, is in the harness, `tests/common/conformance.rs`.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::timing::bound;
use common::{
    Backing, Image, KIND_MESSAGE, KIND_PADDING, RemoveOnDrop, TestRing, check_msg, conformance,
    make_msg, unique_key,
};
use shmpipe::{
    Consumer, Corrupted, Corruption, Error, HEADER_SIZE, Key, LAYOUT_VERSION, MAGIC, Producer,
    Ring, RingConfig, Role, Segment, Shmid, TryRecvError, TrySendError,
};

// ---------------------------------------------------------------------------------------------
// Every body over every backing it can run on (tests/common/conformance.rs says which and why)
// ---------------------------------------------------------------------------------------------

conformance! {
    all:
        empty_message,
        max_size_message,
        one_byte_over_max_is_too_large,
        single_slot_ring,
        full_is_reported_on_every_send_path,
        empty_ring_is_empty,
        buffer_too_small_leaves_message,
        dropped_grant_discards,
        commit_len_shortens,
        send_batch_publishes_at_publish_or_drop,
        recv_batch_releases_at_release_or_drop,
        read_guard_releases_on_drop,
        padding_at_the_wrap,
        counters_wrap_near_2_pow_32_and_u64_max,
        second_producer_or_consumer_refused,
        new_producer_continues_the_stream,
        new_consumer_continues_the_stream;
    shared:
        foreign_segment_is_not_shmpipe,
        ready_ring_with_wrong_magic_is_not_shmpipe,
        other_layout_version_is_refused,
        segment_smaller_than_its_header_claims,
        segment_smaller_than_the_header,
        garbage_ready_word_or_fields_are_bad_headers,
        tail_behind_head_is_corruption,
        tail_more_than_a_ring_ahead_is_corruption,
        tail_u64_max_is_corruption,
        tail_moving_backwards_is_corruption,
        record_over_the_maximum_is_corruption,
        unknown_record_kind_is_corruption,
        padding_at_the_start_of_the_array_is_corruption,
        padding_of_the_wrong_length_is_corruption,
        padding_without_a_message_after_it_is_corruption,
        record_past_the_end_of_the_array_is_corruption,
        record_past_the_tail_is_corruption,
        inconsistent_indices_refuse_the_role_claim,
        head_moving_backwards_is_corruption,
        head_beyond_the_tail_is_corruption,
        head_beyond_the_published_tail_is_corruption;
}

fn cfg(slot_size: u32, slot_count: u32) -> RingConfig {
    RingConfig::new()
        .slot_size(slot_size)
        .slot_count(slot_count)
}

fn pair(ring: &Ring) -> (Producer, Consumer) {
    (
        ring.producer().expect("claim producer"),
        ring.consumer().expect("claim consumer"),
    )
}

/// `n` bytes of a pattern that depends on `tag`.
fn bytes(n: usize, tag: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(tag))
        .collect()
}

fn recv_vec(rx: &mut Consumer) -> Vec<u8> {
    let mut v = Vec::new();
    rx.try_recv_vec(&mut v).expect("a message");
    v
}

fn assert_empty(rx: &mut Consumer) {
    let mut buf = [0u8; 8];
    assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Empty));
    assert_eq!(rx.try_lend().map(|m| m.to_vec()), Err(TryRecvError::Empty));
}

// ---------------------------------------------------------------------------------------------
// Message semantics (both backings)
// ---------------------------------------------------------------------------------------------

fn empty_message(b: Backing) {
    let ring = b.ring(&cfg(64, 8));
    let (mut tx, mut rx) = pair(&ring);

    tx.try_send(b"").unwrap();
    // An empty message fits an empty buffer.
    assert_eq!(rx.try_recv(&mut []), Ok(0));

    tx.try_reserve(0).unwrap().commit();
    assert!(rx.try_lend().unwrap().is_empty());

    let mut batch = tx.batch();
    batch.try_send(b"").unwrap();
    batch.try_reserve(0).unwrap().commit();
    drop(batch);
    let mut v = vec![1, 2, 3];
    assert_eq!(rx.try_recv_vec(&mut v), Ok(0));
    assert!(v.is_empty(), "try_recv_vec replaces the contents");
    assert_eq!(rx.batch().try_recv(&mut []), Ok(0));

    assert_empty(&mut rx);
    let st = ring.status();
    assert_eq!((st.sent, st.received), (4, 4));
    // Every record, even an empty one, takes one slot (its header).
    assert_eq!((st.tail, st.head), (4, 4));
}

fn max_size_message(b: Backing) {
    // Default maximum: half the slots less one record header.
    let ring = b.ring(&cfg(64, 16));
    let max = 8 * 64 - 8;
    assert_eq!(ring.max_message(), max);
    let (mut tx, mut rx) = pair(&ring);
    assert_eq!((tx.max_message(), rx.max_message()), (max, max));

    let mut buf = vec![0u8; max];
    // Eight rounds move the tail to every position, so some of these need padding first.
    for round in 0..8u8 {
        let msg = bytes(max, round);
        match round % 3 {
            0 => tx.try_send(&msg).unwrap(),
            1 => {
                let mut g = tx.try_reserve(max).unwrap();
                g.copy_from_slice(&msg);
                g.commit();
            }
            _ => tx.batch().try_send(&msg).unwrap(),
        }
        match round % 3 {
            0 => {
                assert_eq!(rx.try_recv(&mut buf), Ok(max));
                assert_eq!(buf, msg);
            }
            1 => assert_eq!(rx.try_lend().unwrap().to_vec(), &msg[..]),
            _ => assert_eq!(recv_vec(&mut rx), msg),
        }
        // A one-slot message shifts the position for the next round.
        tx.try_send(&[round]).unwrap();
        assert_eq!(recv_vec(&mut rx), [round]);
    }
    assert_empty(&mut rx);

    // An explicit maximum below the shape's limit.
    let ring = b.ring(&cfg(64, 16).max_message(100));
    let (mut tx, mut rx) = pair(&ring);
    assert_eq!(tx.max_message(), 100);
    tx.try_send(&bytes(100, 9)).unwrap();
    assert_eq!(recv_vec(&mut rx), bytes(100, 9));
}

fn one_byte_over_max_is_too_large(b: Backing) {
    let ring = b.ring(&cfg(64, 16).max_message(300));
    let (mut tx, mut rx) = pair(&ring);
    let over = bytes(301, 1);
    let too_large = TrySendError::TooLarge { len: 301, max: 300 };

    assert_eq!(tx.try_send(&over), Err(too_large.clone()));
    assert_eq!(tx.try_reserve(301).map(|_| ()), Err(too_large.clone()));
    {
        let mut batch = tx.batch();
        assert_eq!(batch.try_send(&over), Err(too_large.clone()));
        assert_eq!(batch.try_reserve(301).map(|_| ()), Err(too_large.clone()));
        assert_eq!(batch.pending_slots(), 0);
    }
    assert!(matches!(
        tx.try_send(&vec![0u8; 1 << 20]),
        Err(TrySendError::TooLarge { len, max: 300 }) if len == 1 << 20
    ));
    assert!(matches!(
        tx.try_reserve(usize::MAX),
        Err(TrySendError::TooLarge {
            len: usize::MAX,
            max: 300
        })
    ));

    // Nothing was sent, nothing moved.
    assert_empty(&mut rx);
    let st = ring.status();
    assert_eq!((st.tail, st.sent), (0, 0));

    // The ring still works, at exactly the maximum.
    tx.try_send(&over[..300]).unwrap();
    assert_eq!(recv_vec(&mut rx), over[..300]);
}

fn single_slot_ring(b: Backing) {
    let ring = b.ring(&cfg(64, 1));
    assert_eq!(ring.slot_count(), 1);
    assert_eq!(ring.max_message(), 56, "a one-slot ring may fill its slot");
    let (mut tx, mut rx) = pair(&ring);
    let mut buf = [0u8; 56];
    for round in 0..10u8 {
        let first = bytes(usize::from(round) * 5, round);
        let second = bytes(56, round);
        tx.try_send(&first).unwrap();
        // The second message does not fit.
        assert_eq!(tx.try_send(&second), Err(TrySendError::Full));
        assert_eq!(tx.try_reserve(0).map(|_| ()), Err(TrySendError::Full));
        assert_eq!(rx.try_recv(&mut buf), Ok(first.len()));
        assert_eq!(buf[..first.len()], first[..]);
        // After receiving, sending works again.
        tx.try_send(&second).unwrap();
        assert!(matches!(tx.try_send(b""), Err(TrySendError::Full)));
        assert_eq!(rx.try_lend().unwrap().to_vec(), &second[..]);
        assert_empty(&mut rx);
    }
    assert_eq!(ring.status().tail, 20);
}

fn full_is_reported_on_every_send_path(b: Backing) {
    let ring = b.ring(&cfg(64, 8));
    let (mut tx, mut rx) = pair(&ring);
    for i in 0..8u8 {
        tx.try_send(&[i; 56]).unwrap(); // one slot each
    }
    assert_eq!(ring.status().used_slots, 8);

    let small = vec![0xee_u8; 1];
    let big = bytes(200, 3);
    for msg in [&small, &big] {
        assert_eq!(tx.try_send(msg), Err(TrySendError::Full));
    }
    assert_eq!(tx.try_reserve(1).map(|_| ()), Err(TrySendError::Full));
    {
        let mut batch = tx.batch();
        assert_eq!(batch.try_send(&small), Err(TrySendError::Full));
        assert_eq!(batch.try_reserve(1).map(|_| ()), Err(TrySendError::Full));
    }

    // One slot free at position 0: a one-slot message fits, a two-slot one does not yet.
    assert_eq!(recv_vec(&mut rx), [0; 56]);
    let two_slots = bytes(60, 4);
    assert!(matches!(tx.try_send(&two_slots), Err(TrySendError::Full)));
    assert_eq!(recv_vec(&mut rx), [1; 56]);
    tx.try_send(&two_slots).unwrap();
    for i in 2..8u8 {
        assert_eq!(recv_vec(&mut rx), [i; 56]);
    }
    assert_eq!(recv_vec(&mut rx), two_slots);
    assert_empty(&mut rx);
}

fn empty_ring_is_empty(b: Backing) {
    let ring = b.ring(&cfg(64, 8));
    let (mut tx, mut rx) = pair(&ring);
    for _ in 0..3 {
        assert_empty(&mut rx);
        let mut v = vec![7];
        assert_eq!(rx.try_recv_vec(&mut v), Err(TryRecvError::Empty));
        assert_eq!(v, [7], "an empty ring leaves the vector alone");
        let mut batch = rx.batch();
        assert_eq!(batch.try_recv(&mut [0; 4]), Err(TryRecvError::Empty));
        assert_eq!(
            batch.try_lend().map(|m| m.to_vec()),
            Err(TryRecvError::Empty)
        );
        drop(batch);
        tx.try_send(b"x").unwrap();
        assert_eq!(recv_vec(&mut rx), b"x");
    }
    assert_eq!(ring.status().received, 3);
}

fn buffer_too_small_leaves_message(b: Backing) {
    let ring = b.ring(&cfg(64, 8));
    let (mut tx, mut rx) = pair(&ring);
    let msg = bytes(10, 5);
    tx.try_send(&msg).unwrap();
    tx.try_send(b"next").unwrap();

    let too_small = TryRecvError::BufferTooSmall {
        needed: 10,
        available: 9,
    };
    let mut small = [0u8; 9];
    assert_eq!(rx.try_recv(&mut small), Err(too_small.clone()));
    assert_eq!(rx.try_recv(&mut small), Err(too_small.clone()));
    assert_eq!(rx.batch().try_recv(&mut small), Err(too_small));
    assert_eq!(
        rx.try_recv(&mut []),
        Err(TryRecvError::BufferTooSmall {
            needed: 10,
            available: 0
        })
    );
    assert_eq!(
        small, [0; 9],
        "nothing is copied into a buffer that is too small"
    );
    assert_eq!(ring.status().head, 0, "the message stays in the ring");

    let mut exact = [0u8; 10];
    assert_eq!(rx.try_recv(&mut exact), Ok(10));
    assert_eq!(exact, msg[..]);
    assert_eq!(recv_vec(&mut rx), b"next");
    assert_empty(&mut rx);
}

fn dropped_grant_discards(b: Backing) {
    let ring = b.ring(&cfg(64, 8));
    let (mut tx, mut rx) = pair(&ring);

    {
        let mut g = tx.try_reserve(20).unwrap();
        g.fill(0xaa);
        // The grant goes out of scope without a commit.
    }
    assert_empty(&mut rx);
    let st = ring.status();
    assert_eq!((st.tail, st.sent), (0, 0));

    tx.try_send(b"after").unwrap();
    assert_eq!(recv_vec(&mut rx), b"after");

    // In a batch, a dropped grant leaves the messages around it alone.
    let mut batch = tx.batch();
    batch.try_send(b"one").unwrap();
    batch.try_reserve(30).unwrap().fill(0xbb);
    batch.try_send(b"two").unwrap();
    drop(batch);
    assert_eq!(recv_vec(&mut rx), b"one");
    assert_eq!(recv_vec(&mut rx), b"two");
    assert_empty(&mut rx);

    // At position 3 of 8, a grant of four slots only fits after padding out the array's end;
    // dropping it discards the padding too: the next small message goes at position 3.
    assert_eq!(ring.status().tail, 3);
    tx.try_send(b"p3").unwrap();
    tx.try_send(b"p4").unwrap();
    tx.try_send(b"p5").unwrap();
    for want in [b"p3", b"p4", b"p5"] {
        assert_eq!(recv_vec(&mut rx), want);
    }
    tx.try_reserve(200).unwrap().fill(0xcc);
    tx.try_send(b"p6").unwrap();
    assert_eq!(recv_vec(&mut rx), b"p6");
    let st = ring.status();
    assert_eq!((st.tail, st.head, st.sent), (7, 7, 7));
    assert_empty(&mut rx);
}

fn commit_len_shortens(b: Backing) {
    let ring = b.ring(&cfg(64, 8));
    let (mut tx, mut rx) = pair(&ring);

    let mut g = tx.try_reserve(100).unwrap(); // two slots reserved
    g.fill(0x11);
    g.view_mut().copy_from(b"shorter");
    g.commit_len(7);
    assert_eq!(recv_vec(&mut rx), b"shorter");
    assert_eq!(ring.status().tail, 1, "a 7-byte message takes one slot");

    tx.try_reserve(50).unwrap().commit_len(0);
    assert_eq!(recv_vec(&mut rx), b"");

    let mut g = tx.try_reserve(5).unwrap();
    g.copy_from_slice(b"exact");
    g.commit_len(5);
    assert_eq!(recv_vec(&mut rx), b"exact");

    // The whole maximum reserved, one byte sent: one slot used, not four.
    let tail = ring.status().tail;
    let mut g = tx.try_reserve(248).unwrap();
    g.write_at(0, b'!').unwrap();
    g.commit_len(1);
    assert_eq!(ring.status().tail, tail + 1);
    assert_eq!(recv_vec(&mut rx), b"!");

    let mut batch = tx.batch();
    let mut g = batch.try_reserve(40).unwrap();
    g.view_mut().copy_from(b"abc");
    g.commit_len(3);
    drop(batch);
    assert_eq!(recv_vec(&mut rx), b"abc");
    assert_empty(&mut rx);
}

#[test]
#[should_panic(expected = "exceeds")]
fn commit_len_over_the_reservation_panics() {
    let ring = Backing::Heap.ring(&cfg(64, 8));
    let mut tx = ring.producer().unwrap();
    tx.try_reserve(4).unwrap().commit_len(5);
}

fn send_batch_publishes_at_publish_or_drop(b: Backing) {
    let ring = b.ring(&cfg(64, 16));
    let (mut tx, mut rx) = pair(&ring);

    let mut batch = tx.batch();
    batch.try_send(b"a").unwrap();
    let mut g = batch.try_reserve(1).unwrap();
    g.copy_from_slice(b"b");
    g.commit();
    assert_eq!(batch.pending_slots(), 2);
    assert_empty(&mut rx);
    assert_eq!(
        ring.status().tail,
        0,
        "nothing is published before publish()"
    );
    batch.publish();
    assert_eq!(batch.pending_slots(), 0);
    assert_eq!(ring.status().tail, 2);
    assert_eq!(recv_vec(&mut rx), b"a");
    assert_eq!(recv_vec(&mut rx), b"b");

    batch.try_send(b"c").unwrap();
    assert_empty(&mut rx);
    drop(batch);
    assert_eq!(recv_vec(&mut rx), b"c");

    // A batch that fills the ring: the consumer sees nothing until it is published, and the
    // `Full` that ends it publishes it, so a retry loop cannot wait on itself.
    let mut batch = tx.batch();
    for n in 0..16u8 {
        batch.try_send(&[n]).unwrap();
    }
    assert_empty(&mut rx);
    assert!(matches!(batch.try_send(&[16]), Err(TrySendError::Full)));
    assert_eq!(batch.pending_slots(), 0, "Full published the batch");
    for i in 0..16 {
        assert_eq!(recv_vec(&mut rx), [i]);
    }
    drop(batch);
    assert_empty(&mut rx);
    let st = ring.status();
    assert_eq!((st.sent, st.received), (19, 19));
}

fn recv_batch_releases_at_release_or_drop(b: Backing) {
    let ring = b.ring(&cfg(64, 4));
    let (mut tx, mut rx) = pair(&ring);
    for i in 0..4u8 {
        tx.try_send(&[i]).unwrap();
    }

    let mut batch = rx.batch();
    let mut buf = [0u8; 8];
    assert_eq!(batch.try_recv(&mut buf), Ok(1));
    assert_eq!(buf[0], 0);
    assert_eq!(batch.try_lend().unwrap().to_vec(), [1]);
    // Read but not released: the producer still sees a full ring.
    assert_eq!(ring.status().head, 0);
    assert!(matches!(tx.try_send(b"x"), Err(TrySendError::Full)));
    batch.release();
    assert_eq!(ring.status().head, 2);
    tx.try_send(&[4]).unwrap();
    tx.try_send(&[5]).unwrap();
    assert!(matches!(tx.try_send(b"x"), Err(TrySendError::Full)));

    assert_eq!(batch.try_lend().unwrap().to_vec(), [2]);
    assert_eq!(batch.try_lend().unwrap().to_vec(), [3]);
    assert!(matches!(tx.try_send(b"x"), Err(TrySendError::Full)));
    drop(batch);
    assert_eq!(ring.status().head, 4);
    tx.try_send(&[6]).unwrap();

    for i in 4..7 {
        assert_eq!(recv_vec(&mut rx), [i]);
    }
    assert_empty(&mut rx);
    assert_eq!(ring.status().received, 7);
}

fn read_guard_releases_on_drop(b: Backing) {
    let ring = b.ring(&cfg(64, 2));
    let (mut tx, mut rx) = pair(&ring);
    tx.try_send(b"first").unwrap();
    tx.try_send(b"second").unwrap();
    let guard = rx.try_lend().unwrap();
    assert_eq!(guard.to_vec(), b"first");
    assert!(matches!(tx.try_send(b"x"), Err(TrySendError::Full)));
    assert_eq!(ring.status().head, 0);
    drop(guard);
    assert_eq!(ring.status().head, 1);
    tx.try_send(b"third").unwrap();
    assert_eq!(recv_vec(&mut rx), b"second");
    assert_eq!(recv_vec(&mut rx), b"third");
}

fn padding_at_the_wrap(b: Backing) {
    // 8 slots of 64 bytes; the maximum (248 bytes) takes 4 slots.
    let ring = b.ring(&cfg(64, 8));
    let (mut tx, mut rx) = pair(&ring);
    let big = bytes(248, 8);
    for i in 0..6u8 {
        tx.try_send(&[i]).unwrap();
        assert_eq!(recv_vec(&mut rx), [i]);
    }
    // At position 6, four slots do not fit before the end: two slots of padding, then the
    // message at position 0.
    tx.try_send(&big).unwrap();
    assert_eq!(ring.status().tail, 6 + 2 + 4);
    assert_eq!(recv_vec(&mut rx), big);
    assert_eq!(
        ring.status().head,
        12,
        "the padding is released with the message"
    );
    // At position 4, a 4-slot message fits exactly before the end: no padding.
    tx.try_send(&big).unwrap();
    assert_eq!(ring.status().tail, 16);
    assert_eq!(recv_vec(&mut rx), big);

    // Position 0: fill positions 0..3, release them, then occupy 3..7.
    for i in 0..3u8 {
        tx.try_send(&[i]).unwrap();
        assert_eq!(recv_vec(&mut rx), [i]);
    }
    for i in 3..7u8 {
        tx.try_send(&[i]).unwrap();
    }
    // At position 7 with slots 3..7 in use, four slots are free (7, 0, 1, 2) but not four
    // in a row after the padding: full.
    assert!(matches!(tx.try_send(&big), Err(TrySendError::Full)));
    assert_eq!(recv_vec(&mut rx), [3]);
    // Now slot 3 is free too: one slot of padding at 7, the message at 0..4.
    tx.try_send(&big).unwrap();
    assert_eq!(ring.status().tail, 23 + 1 + 4);
    for i in 4..7u8 {
        assert_eq!(recv_vec(&mut rx), [i]);
    }
    assert_eq!(recv_vec(&mut rx), big);
    assert_empty(&mut rx);
    assert_eq!(ring.status().head, 28);
}

fn counters_wrap_near_2_pow_32_and_u64_max(b: Backing) {
    const SEED: u64 = 0x5eed_0001;
    // (first counter, the boundary the counters must cross)
    for (start, boundary) in [
        ((1u64 << 32) - 3, 1u64 << 32),
        ((1u64 << 32) - 100, 1 << 32),
        (u64::MAX - 2, 0),
        (u64::MAX - 100, 0),
        (u64::MAX, 0),
    ] {
        let ring = b.ring(&cfg(64, 8).initial_index(start));
        let (mut tx, mut rx) = pair(&ring);
        let st = ring.status();
        assert_eq!((st.tail, st.head), (start, start));
        let max = ring.max_message();
        let mut scratch = Vec::new();
        let (mut sent, mut received) = (0u64, 0u64);
        let total = 400;
        while received < total {
            // Fill the ring (through the three send paths), then drain it.
            while sent < total {
                let msg = make_msg(SEED, sent, max);
                let ok = match sent % 3 {
                    0 => tx.try_send(&msg).is_ok(),
                    1 => match tx.try_reserve(msg.len()) {
                        Ok(mut g) => {
                            g.copy_from_slice(&msg);
                            g.commit();
                            true
                        }
                        Err(_) => false,
                    },
                    _ => tx.batch().try_send(&msg).is_ok(),
                };
                if !ok {
                    break;
                }
                sent += 1;
            }
            while let Ok(msg) = rx.try_lend() {
                check_msg(SEED, received, max, &msg.to_vec(), &mut scratch)
                    .unwrap_or_else(|e| panic!("start {start}: {e}"));
                received += 1;
            }
        }
        assert_eq!(sent, total);
        let st = ring.status();
        assert_eq!(st.head, st.tail);
        assert_eq!((st.sent, st.received), (total, total));
        let used = st.tail.wrapping_sub(start);
        assert!(
            used > boundary.wrapping_sub(start),
            "start {start:#x}: the counters must cross {boundary:#x} (moved {used} slots)"
        );
        assert_eq!(st.used_slots, 0);
    }
}

fn second_producer_or_consumer_refused(b: Backing) {
    let ring = b.ring(&cfg(64, 8));
    let pid = std::process::id();
    let second = ring.reopen().unwrap(); // a second attachment (a clone on the heap)

    let tx = ring.producer().unwrap();
    for r in [&ring, &second, &ring.clone()] {
        match r.producer() {
            Err(Error::RoleTaken {
                ident,
                role: Role::Producer,
                pid: holder,
                holder: shmpipe::Liveness::Alive,
            }) => {
                assert_eq!(holder, pid);
                assert_eq!(ident, ring.ident());
            }
            other => panic!("expected RoleTaken(producer), got {other:?}"),
        }
    }
    let rx = second.consumer().unwrap();
    for r in [&ring, &second] {
        match r.consumer() {
            Err(Error::RoleTaken {
                role: Role::Consumer,
                pid: holder,
                ..
            }) => assert_eq!(holder, pid),
            other => panic!("expected RoleTaken(consumer), got {other:?}"),
        }
    }
    let st = ring.status();
    assert_eq!((st.producer_pid, st.consumer_pid), (pid, pid));

    drop(tx);
    drop(rx);
    let st = ring.status();
    assert_eq!((st.producer_pid, st.consumer_pid), (0, 0));
    let _again = (second.producer().unwrap(), ring.consumer().unwrap());
}

fn new_producer_continues_the_stream(b: Backing) {
    let ring = b.ring(&cfg(64, 16));
    let other = ring.reopen().unwrap();
    let mut rx = ring.consumer().unwrap();

    let mut tx = ring.producer().unwrap();
    tx.try_send(b"m0").unwrap();
    tx.try_send(b"m1").unwrap();
    let mut batch = tx.batch();
    batch.try_send(b"m2").unwrap();
    drop(batch);
    assert_eq!(recv_vec(&mut rx), b"m0");
    drop(tx);
    assert_eq!(ring.status().producer_pid, 0);

    // A new producer on another attachment picks up where the last one stopped.
    let mut tx = other.producer().unwrap();
    tx.try_send(b"m3").unwrap();
    tx.try_send(b"m4").unwrap();
    drop(tx);
    let mut tx = ring.producer().unwrap();
    tx.try_send(b"m5").unwrap();
    for i in 1..6 {
        assert_eq!(recv_vec(&mut rx), format!("m{i}").as_bytes());
    }
    assert_empty(&mut rx);
    let st = ring.status();
    assert_eq!((st.sent, st.received, st.tail), (6, 6, 6));
}

fn new_consumer_continues_the_stream(b: Backing) {
    let ring = b.ring(&cfg(64, 16));
    let other = ring.reopen().unwrap();
    let mut tx = ring.producer().unwrap();
    for i in 0..8 {
        tx.try_send(format!("m{i}").as_bytes()).unwrap();
    }

    let mut rx = ring.consumer().unwrap();
    assert_eq!(recv_vec(&mut rx), b"m0");
    let mut batch = rx.batch();
    assert_eq!(batch.try_lend().unwrap().to_vec(), b"m1");
    drop(batch); // released
    drop(rx);
    let mut rx = other.consumer().unwrap();
    assert_eq!(recv_vec(&mut rx), b"m2");
    // A batch still holding reads when its consumer goes: the drop releases them.
    let mut batch = rx.batch();
    assert_eq!(batch.try_lend().unwrap().to_vec(), b"m3");
    drop(batch);
    drop(rx);
    let mut rx = ring.consumer().unwrap();
    for i in 4..8 {
        assert_eq!(recv_vec(&mut rx), format!("m{i}").as_bytes());
    }
    assert_empty(&mut rx);
    assert_eq!(ring.status().received, 8);
}

/// A segment at `key` of `size` zero bytes, not a ring, removed with the guard.
fn raw_segment(key: Key, size: usize) -> (Segment, RemoveOnDrop) {
    let seg = Segment::create(key, size, 0o600).expect("create raw segment");
    let guard = RemoveOnDrop::id(seg.shmid());
    (seg, guard)
}

// ---------------------------------------------------------------------------------------------
// Attach errors
// ---------------------------------------------------------------------------------------------

/// Memory of `b` that is not a ring: `bytes` zero bytes with `magic` in the first word.
fn foreign(b: Backing, bytes: usize, magic: u64) -> Image {
    let mut image = vec![0u8; bytes];
    image[..8].copy_from_slice(&magic.to_ne_bytes());
    b.image(&image)
}

fn foreign_segment_is_not_shmpipe(b: Backing) {
    let image = foreign(b, 4096, 0x0123_4567_89ab_cdef);
    let t0 = Instant::now();
    match image.open() {
        Err(Error::NotShmpipe { ident, found }) => {
            assert_eq!(found, 0x0123_4567_89ab_cdef);
            assert!(image.is(&ident), "{ident:?}");
        }
        other => panic!("expected NotShmpipe, got {other:?}"),
    }
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "a foreign magic is refused at once, without waiting for ready"
    );
}

fn ready_ring_with_wrong_magic_is_not_shmpipe(b: Backing) {
    let ring = b.ring(&cfg(64, 8));
    ring.raw()
        .u64(0)
        .store(u64::from_le_bytes(*b"SHMPIPE2"), Ordering::Relaxed);
    assert!(matches!(
        ring.reopen(),
        Err(Error::NotShmpipe { found, .. }) if found == u64::from_le_bytes(*b"SHMPIPE2")
    ));
}

fn other_layout_version_is_refused(b: Backing) {
    let ring = b.ring(&cfg(64, 8));
    let raw = ring.raw();
    assert_eq!(raw.u64(0).load(Ordering::Relaxed), MAGIC);
    assert_eq!(raw.u32(8).load(Ordering::Relaxed), LAYOUT_VERSION);
    raw.u32(8).store(LAYOUT_VERSION + 1, Ordering::Relaxed);
    match ring.reopen() {
        Err(Error::VersionMismatch {
            found, expected, ..
        }) => assert_eq!((found, expected), (LAYOUT_VERSION + 1, LAYOUT_VERSION)),
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
}

fn segment_smaller_than_its_header_claims(b: Backing) {
    let ring = b.ring(&cfg(64, 256));
    let src = ring.raw();
    let mut header = src.bytes(0..HEADER_SIZE);
    header.resize(4096, 0);
    let small = b.image(&header);
    let claimed = src.u64(40).load(Ordering::Relaxed);
    assert_eq!(claimed, (HEADER_SIZE + 64 * 256) as u64);
    match small.open() {
        Err(Error::SegmentTooSmall {
            ident,
            claimed: c,
            actual,
        }) => {
            assert_eq!((c, actual), (claimed, 4096));
            assert!(small.is(&ident), "{ident:?}");
        }
        other => panic!("expected SegmentTooSmall, got {other:?}"),
    }
}

fn segment_smaller_than_the_header(b: Backing) {
    for size in [1, 100, HEADER_SIZE - 1] {
        match b.image(&vec![0u8; size]).open() {
            Err(Error::SegmentTooSmall {
                claimed, actual, ..
            }) => assert_eq!((claimed, actual), (HEADER_SIZE as u64, size as u64)),
            other => panic!("size {size}: expected SegmentTooSmall, got {other:?}"),
        }
    }
}

// SysV keys and shmids: how a segment ring is found, so over a segment only (the same for memfd
// and file rings is in tests/memfd.rs and tests/file.rs).

#[test]
#[cfg_attr(miri, ignore)]
fn zeroed_segment_times_out() {
    let key = unique_key();
    let (_seg, _rm) = raw_segment(key, 4096);
    let timeout = Duration::from_millis(100);

    let t0 = Instant::now();
    match Ring::open(key, &RingConfig::new().init_timeout(timeout)) {
        Err(Error::InitTimeout { ident, waited }) => {
            assert!(waited >= timeout, "waited only {waited:?}");
            assert_eq!(ident.key, Some(key));
        }
        other => panic!("expected InitTimeout, got {other:?}"),
    }
    let took = t0.elapsed();
    assert!(
        took >= timeout && took < bound(Duration::from_millis(900)),
        "open_timeout(100 ms) took {took:?}"
    );

    // open_or_create finds the segment and waits as configured.
    let t0 = Instant::now();
    assert!(matches!(
        Ring::open_or_create(key, &cfg(64, 8).init_timeout(timeout)),
        Err(Error::InitTimeout { .. })
    ));
    assert!(t0.elapsed() < bound(Duration::from_millis(900)));
}

fn garbage_ready_word_or_fields_are_bad_headers(b: Backing) {
    let ring = b.ring(&cfg(64, 8));
    let raw = ring.raw();
    let good = raw.words(64);
    // (what, offset, u32 value)
    let cases: &[(&str, usize, u32)] = &[
        ("ready word", 60, 0xdead_beef),
        ("header size", 12, 256),
        ("slot size not a power of two", 16, 48),
        ("slot count not a power of two", 20, 3),
        ("max message over the limit", 24, 4 * 64),
        ("unknown flags", 28, 2),
    ];
    for &(what, off, value) in cases {
        raw.write_words(&good);
        raw.u32(off).store(value, Ordering::Relaxed);
        assert!(
            matches!(ring.reopen(), Err(Error::BadHeader { .. })),
            "{what}: expected BadHeader"
        );
    }
    raw.write_words(&good);
    raw.u64(40)
        .store((HEADER_SIZE + 64 * 8 + 64) as u64, Ordering::Relaxed);
    assert!(
        matches!(ring.reopen(), Err(Error::BadHeader { .. })),
        "ring size inconsistent with the shape: expected BadHeader"
    );
    raw.write_words(&good);
    ring.reopen().expect("the restored header is good again");
}

#[test]
#[cfg_attr(miri, ignore)]
fn create_on_an_existing_key_is_exists() {
    let key = unique_key();
    let _rm = RemoveOnDrop::key(key);
    let ring = Ring::create(key, &cfg(64, 8)).unwrap();
    match Ring::create(key, &cfg(64, 8)) {
        Err(Error::Exists { ident }) => assert_eq!(ident.key, Some(key)),
        other => panic!("expected Exists, got {other:?}"),
    }
    assert!(matches!(
        Segment::create(key, 4096, 0o600),
        Err(Error::Exists { .. })
    ));
    // Opening it is fine, and it is the same ring.
    let same = Ring::open(key, &RingConfig::new()).unwrap();
    assert_eq!(same.instance_id(), ring.instance_id());
    assert_eq!(same.shmid(), ring.shmid());
}

#[test]
#[cfg_attr(miri, ignore)]
fn calls_on_a_removed_shmid_are_not_found() {
    let seg = shmpipe::Segment::create(Key::Private, 4096, 0o600).unwrap();
    let id = seg.shmid();
    seg.remove().unwrap();
    drop(seg); // last detach: the kernel frees it and the id is gone
    for r in [
        shmpipe::segment::remove_id(id).map(drop),
        shmpipe::segment::stat_id(id).map(drop),
        Ring::open(Shmid(id), &RingConfig::new()).map(drop),
    ] {
        assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn open_of_a_missing_key_is_not_found() {
    let key = unique_key(); // checked to be free
    let _rm = RemoveOnDrop::key(key); // in case a bug creates it
    match Ring::open(key, &RingConfig::new()) {
        Err(Error::NotFound { ident }) => assert_eq!(ident.key, Some(key)),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        Ring::open(
            key,
            &RingConfig::new().init_timeout(Duration::from_millis(10))
        ),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        Ring::open(Key::Private, &RingConfig::new()),
        Err(Error::NotFound { .. })
    ));
}

#[test]
#[cfg_attr(miri, ignore)]
fn open_or_create_with_another_shape_is_config_mismatch() {
    let key = unique_key();
    let _rm = RemoveOnDrop::key(key);
    let shape = cfg(64, 16).max_message(200);
    let ring = Ring::open_or_create(key, &shape).unwrap();
    let again = Ring::open_or_create(key, &shape).unwrap();
    assert_eq!(again.instance_id(), ring.instance_id());
    for (what, other) in [
        ("slot count", cfg(64, 32).max_message(200)),
        ("slot size", cfg(128, 16).max_message(200)),
        ("max message", cfg(64, 16).max_message(201)),
    ] {
        match Ring::open_or_create(key, &other) {
            Err(Error::ConfigMismatch { ident, .. }) => assert_eq!(ident.key, Some(key)),
            other => panic!("{what}: expected ConfigMismatch, got {other:?}"),
        }
    }
    // A field left unset is not demanded (the header is the authority): the default maximum
    // message joins the ring's 200.
    let joined = Ring::open_or_create(key, &cfg(64, 16)).unwrap();
    assert_eq!(joined.instance_id(), ring.instance_id());
    assert_eq!(joined.max_message(), 200);
    // Non-shape settings do not matter.
    Ring::open_or_create(key, &shape.clone().init_timeout(Duration::from_millis(5))).unwrap();
}

// ---------------------------------------------------------------------------------------------
// A hostile producer (the consumer must refuse what it publishes)
// ---------------------------------------------------------------------------------------------

/// The first call fails with `what`; `repair` then restores a plausible state, and every later
/// call (through every receive path) still fails with the same error at once.
fn assert_recv_poisoned(ring: &Ring, rx: &mut Consumer, what: Corruption, repair: impl FnOnce()) {
    let want = Corrupted {
        ring: ring.ident(),
        what,
    };
    let mut buf = vec![0u8; rx.max_message()];
    assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Corrupted(want)));
    assert_eq!(rx.poisoned(), Some(&want));
    repair();
    for _ in 0..2 {
        let t0 = Instant::now();
        assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Corrupted(want)));
        assert_eq!(
            rx.try_lend().map(|m| m.to_vec()),
            Err(TryRecvError::Corrupted(want))
        );
        let mut v = Vec::new();
        assert_eq!(rx.try_recv_vec(&mut v), Err(TryRecvError::Corrupted(want)));
        let mut batch = rx.batch();
        assert_eq!(
            batch.try_lend().map(|m| m.to_vec()),
            Err(TryRecvError::Corrupted(want))
        );
        assert_eq!(batch.try_recv(&mut buf), Err(TryRecvError::Corrupted(want)));
        drop(batch);
        assert!(t0.elapsed() < bound(Duration::from_millis(100)));
    }
    assert_eq!(rx.poisoned(), Some(&want));
}

/// A ring of 8 slots of 64 bytes (max message 248) with both sides claimed, after `n` one-slot
/// messages went through (so head = tail = n).
fn hostile_setup(b: Backing, n: u64) -> (TestRing, Producer, Consumer) {
    let ring = b.ring(&cfg(64, 8));
    let (mut tx, mut rx) = pair(&ring);
    for i in 0..n {
        tx.try_send(&i.to_le_bytes()).unwrap();
        assert_eq!(recv_vec(&mut rx), i.to_le_bytes());
    }
    (ring, tx, rx)
}

fn tail_behind_head_is_corruption(b: Backing) {
    let (ring, _tx, mut rx) = hostile_setup(b, 3);
    let raw = ring.raw();
    raw.set_tail(2);
    assert_recv_poisoned(
        &ring,
        &mut rx,
        Corruption::TailOutOfRange {
            tail: 2,
            head: 3,
            last_tail: 3,
            capacity: 8,
        },
        || raw.set_tail(3),
    );
}

fn tail_more_than_a_ring_ahead_is_corruption(b: Backing) {
    let (ring, _tx, mut rx) = hostile_setup(b, 3);
    let raw = ring.raw();
    // Exactly a ring ahead would be allowed (if the records were valid); one more is not.
    raw.set_tail(3 + 9);
    assert_recv_poisoned(
        &ring,
        &mut rx,
        Corruption::TailOutOfRange {
            tail: 12,
            head: 3,
            last_tail: 3,
            capacity: 8,
        },
        || raw.set_tail(3),
    );
}

fn tail_u64_max_is_corruption(b: Backing) {
    let (ring, _tx, mut rx) = hostile_setup(b, 0);
    let raw = ring.raw();
    raw.set_tail(u64::MAX);
    assert_recv_poisoned(
        &ring,
        &mut rx,
        Corruption::TailOutOfRange {
            tail: u64::MAX,
            head: 0,
            last_tail: 0,
            capacity: 8,
        },
        || raw.set_tail(0),
    );
}

fn tail_moving_backwards_is_corruption(b: Backing) {
    let (ring, mut tx, mut rx) = hostile_setup(b, 0);
    for i in 0..4u8 {
        tx.try_send(&[i]).unwrap();
    }
    // Read all four without releasing: head (released) 0, tail seen 4.
    let mut batch = rx.batch();
    for i in 0..4u8 {
        assert_eq!(batch.try_lend().unwrap().to_vec(), [i]);
    }
    let raw = ring.raw();
    raw.set_tail(2); // still ahead of the released head, but behind the tail seen
    let want = Corruption::TailOutOfRange {
        tail: 2,
        head: 0,
        last_tail: 4,
        capacity: 8,
    };
    match batch.try_lend().map(|m| m.to_vec()) {
        Err(TryRecvError::Corrupted(c)) => assert_eq!(c.what, want),
        other => panic!("expected Corrupted, got {other:?}"),
    }
    drop(batch);
    assert_recv_poisoned(&ring, &mut rx, want, || raw.set_tail(4));
}

fn record_over_the_maximum_is_corruption(b: Backing) {
    for len in [249, 1 << 20, u32::MAX] {
        let (ring, mut tx, mut rx) = hostile_setup(b, 2);
        tx.try_send(b"0123456789").unwrap();
        let raw = ring.raw();
        raw.set_record(64, 2, len, KIND_MESSAGE);
        assert_recv_poisoned(
            &ring,
            &mut rx,
            Corruption::RecordTooLong {
                at: 2,
                len,
                max: 248,
            },
            || raw.set_record(64, 2, 10, KIND_MESSAGE),
        );
    }
}

fn unknown_record_kind_is_corruption(b: Backing) {
    let (ring, mut tx, mut rx) = hostile_setup(b, 1);
    tx.try_send(b"hello").unwrap();
    let raw = ring.raw();
    raw.set_record(64, 1, 5, 3);
    assert_recv_poisoned(
        &ring,
        &mut rx,
        Corruption::UnknownKind { at: 1, kind: 3 },
        || raw.set_record(64, 1, 5, KIND_MESSAGE),
    );

    // A tail moved over a slot nobody wrote: kind 0.
    let (ring, _tx, mut rx) = hostile_setup(b, 0);
    let raw = ring.raw();
    raw.set_tail(1);
    assert_recv_poisoned(
        &ring,
        &mut rx,
        Corruption::UnknownKind { at: 0, kind: 0 },
        || raw.set_record(64, 0, 0, KIND_MESSAGE),
    );
}

fn padding_at_the_start_of_the_array_is_corruption(b: Backing) {
    let (ring, _tx, mut rx) = hostile_setup(b, 0);
    let raw = ring.raw();
    // Padding at slot 0 would cover the whole array, so no message can follow it.
    raw.set_record(64, 0, 8 * 64 - 8, KIND_PADDING);
    raw.set_record(64, 1, 0, KIND_MESSAGE);
    raw.set_tail(2);
    assert_recv_poisoned(
        &ring,
        &mut rx,
        Corruption::PaddingWithoutMessage { at: 0 },
        || raw.set_record(64, 0, 0, KIND_MESSAGE),
    );
}

fn padding_of_the_wrong_length_is_corruption(b: Backing) {
    let (ring, _tx, mut rx) = hostile_setup(b, 2);
    let raw = ring.raw();
    // Padding at position 2 must cover slots 2..8: length 6 * 64 - 8.
    raw.set_record(64, 2, 64 - 8, KIND_PADDING);
    raw.set_record(64, 0, 0, KIND_MESSAGE);
    raw.set_tail(2 + 6 + 1);
    assert_recv_poisoned(
        &ring,
        &mut rx,
        Corruption::BadPadding {
            at: 2,
            len: 64 - 8,
            expected: 6 * 64 - 8,
        },
        || raw.set_record(64, 2, 6 * 64 - 8, KIND_PADDING),
    );
}

fn padding_without_a_message_after_it_is_corruption(b: Backing) {
    let (ring, _tx, mut rx) = hostile_setup(b, 2);
    let raw = ring.raw();
    raw.set_record(64, 2, 6 * 64 - 8, KIND_PADDING);
    raw.set_tail(2 + 6); // the padding, and nothing after it
    assert_recv_poisoned(
        &ring,
        &mut rx,
        Corruption::PaddingWithoutMessage { at: 2 },
        || {
            raw.set_record(64, 0, 0, KIND_MESSAGE);
            raw.set_tail(2 + 6 + 1);
        },
    );
}

fn record_past_the_end_of_the_array_is_corruption(b: Backing) {
    let (ring, _tx, mut rx) = hostile_setup(b, 7);
    let raw = ring.raw();
    // At position 7 of 8, a 100-byte message needs 2 slots: it would run off the array.
    raw.set_record(64, 7, 100, KIND_MESSAGE);
    raw.set_tail(7 + 2);
    assert_recv_poisoned(
        &ring,
        &mut rx,
        Corruption::RecordOverrunsArray {
            at: 7,
            slots: 2,
            capacity: 8,
        },
        || raw.set_record(64, 7, 1, KIND_MESSAGE),
    );
}

fn record_past_the_tail_is_corruption(b: Backing) {
    let (ring, _tx, mut rx) = hostile_setup(b, 0);
    let raw = ring.raw();
    raw.set_record(64, 0, 100, KIND_MESSAGE); // 2 slots
    raw.set_tail(1); // only 1 published
    assert_recv_poisoned(
        &ring,
        &mut rx,
        Corruption::RecordBeyondTail {
            at: 0,
            slots: 2,
            available: 1,
        },
        || raw.set_tail(2),
    );
}

fn inconsistent_indices_refuse_the_role_claim(b: Backing) {
    let ring = b.ring(&cfg(64, 8));
    let raw = ring.raw();
    raw.set_tail(100);
    let want = Corruption::TailOutOfRange {
        tail: 100,
        head: 0,
        last_tail: 100,
        capacity: 8,
    };
    for role in [Role::Consumer, Role::Producer] {
        let got = match role {
            Role::Consumer => ring.consumer().map(drop),
            Role::Producer => ring.producer().map(drop),
        };
        match got {
            Err(Error::Corrupted(c)) => assert_eq!(c.what, want, "{role}"),
            other => panic!("{role}: expected Corrupted, got {other:?}"),
        }
    }
    // The failed claims gave the roles back.
    let st = ring.status();
    assert_eq!((st.producer_pid, st.consumer_pid), (0, 0));
    raw.set_tail(0);
    let (mut tx, mut rx) = pair(&ring);
    tx.try_send(b"ok").unwrap();
    assert_eq!(recv_vec(&mut rx), b"ok");
}

// ---------------------------------------------------------------------------------------------
// A hostile consumer (the producer must refuse its head and never overwrite unread slots)
// ---------------------------------------------------------------------------------------------

/// The first send fails with `what`; after `repair`, every send path still fails at once with
/// the same error, and the slots (unread records) were never written.
fn assert_send_poisoned(
    ring: &TestRing,
    tx: &mut Producer,
    what: Corruption,
    repair: impl FnOnce(),
) {
    let want = Corrupted {
        ring: ring.ident(),
        what,
    };
    let raw = ring.raw();
    let array = HEADER_SIZE + ring.slot_size() * ring.slot_count();
    let before = raw.words(array)[HEADER_SIZE / 8..].to_vec();
    let msg = b"must not land".to_vec();
    assert_eq!(tx.try_send(&msg), Err(TrySendError::Corrupted(want)));
    assert_eq!(tx.poisoned(), Some(&want));
    repair();
    for _ in 0..2 {
        let t0 = Instant::now();
        assert_eq!(tx.try_send(&msg), Err(TrySendError::Corrupted(want)));
        assert_eq!(tx.try_send(b""), Err(TrySendError::Corrupted(want)));
        assert_eq!(
            tx.try_reserve(1).map(|_| ()),
            Err(TrySendError::Corrupted(want))
        );
        let mut batch = tx.batch();
        assert_eq!(batch.try_send(&msg), Err(TrySendError::Corrupted(want)));
        assert_eq!(
            batch.try_reserve(1).map(|_| ()),
            Err(TrySendError::Corrupted(want))
        );
        drop(batch);
        assert!(t0.elapsed() < bound(Duration::from_millis(100)));
    }
    let after = raw.words(array)[HEADER_SIZE / 8..].to_vec();
    assert!(
        before == after,
        "the poisoned producer wrote into the slots"
    );
}

/// A 4-slot ring, filled by the producer (tail 4) with no consumer: the test plays the consumer
/// by writing the head.
fn full_ring_without_consumer(b: Backing) -> (TestRing, Producer) {
    let ring = b.ring(&cfg(64, 4));
    let mut tx = ring.producer().unwrap();
    for i in 0..4u8 {
        tx.try_send(&[i; 10]).unwrap();
    }
    assert!(matches!(tx.try_send(b"x"), Err(TrySendError::Full)));
    (ring, tx)
}

fn head_moving_backwards_is_corruption(b: Backing) {
    let (ring, mut tx) = full_ring_without_consumer(b);
    let raw = ring.raw();
    raw.set_head(u64::MAX); // one behind the start
    assert_send_poisoned(
        &ring,
        &mut tx,
        Corruption::HeadOutOfRange {
            head: u64::MAX,
            last_head: 0,
            tail: 4,
        },
        || raw.set_head(0),
    );

    // Backwards after real progress.
    let (ring, mut tx) = full_ring_without_consumer(b);
    let raw = ring.raw();
    raw.set_head(2);
    tx.try_send(b"4").unwrap();
    tx.try_send(b"5").unwrap();
    assert!(matches!(tx.try_send(b"x"), Err(TrySendError::Full)));
    raw.set_head(1);
    assert_send_poisoned(
        &ring,
        &mut tx,
        Corruption::HeadOutOfRange {
            head: 1,
            last_head: 2,
            tail: 6,
        },
        || raw.set_head(2),
    );
}

fn head_beyond_the_tail_is_corruption(b: Backing) {
    let (ring, mut tx) = full_ring_without_consumer(b);
    let raw = ring.raw();
    raw.set_head(5);
    assert_send_poisoned(
        &ring,
        &mut tx,
        Corruption::HeadOutOfRange {
            head: 5,
            last_head: 0,
            tail: 4,
        },
        || raw.set_head(4),
    );
}

fn head_beyond_the_published_tail_is_corruption(b: Backing) {
    // Records written by an unpublished batch are not the consumer's: a head over them is a lie.
    let ring = b.ring(&cfg(64, 4));
    let mut tx = ring.producer().unwrap();
    let raw = ring.raw();
    let mut batch = tx.batch();
    for i in 0..4u8 {
        batch.try_send(&[i]).unwrap();
    }
    // The next send finds the cached head full and re-reads it before it could publish.
    raw.set_head(2);
    let want = Corruption::HeadOutOfRange {
        head: 2,
        last_head: 0,
        tail: 0,
    };
    match batch.try_send(b"x") {
        Err(TrySendError::Corrupted(c)) => assert_eq!(c.what, want),
        other => panic!("expected Corrupted, got {other:?}"),
    }
    drop(batch);
    assert_send_poisoned(&ring, &mut tx, want, || raw.set_head(0));
}

#[test]
#[cfg_attr(miri, ignore)]
fn the_header_remembers_the_key_after_the_kernel_forgets_it() {
    let key = unique_key();
    let ring = Ring::create(key, &cfg(64, 8)).unwrap();
    let _rm = RemoveOnDrop::ring(&ring);
    assert!(!ring.is_persistent());
    let (_tx, _rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    // Both roles claimed: marked for removal, and the kernel shows the key as private.
    assert!(matches!(
        shmpipe::Segment::open(key),
        Err(Error::NotFound { .. })
    ));
    let info = shmpipe::gc::inspect(ring.shmid().unwrap()).unwrap();
    assert_eq!(info.stat.key, Key::Private);
    assert_eq!(info.created_key, key);
}
