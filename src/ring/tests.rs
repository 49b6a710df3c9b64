//! The state machines run directly on heap memory, without roles, processes or waits (the
//! Miri suite's view of the algorithm). Heap memory comes from `crate::backing::heap`, the one
//! import of a backing `ring/` has, and only here (tests/imports.rs).

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{ConsumerCore, Memory, ProducerCore};
use crate::backing::heap::HeapRing;
use crate::error::{Corruption, Ident, LostMemory, Role, TryRecvError, TrySendError};
use crate::layout::{Geometry, KIND_MESSAGE, KIND_PADDING};

/// The identities the tests' sides write into their owner words.
const PRODUCER: u64 = 11;
const CONSUMER: u64 = 22;

/// Ring memory on the heap: the allocation and the `Memory` over it, dropped together.
struct HeapMemory {
    mem: Memory,
    _heap: HeapRing,
}

// SAFETY: the heap ring only keeps the memory allocated; everything shared is reached through
// `Memory` (atomics and raw pointers), as for the channel's region.
unsafe impl Send for HeapMemory {}
// SAFETY: as for Send.
unsafe impl Sync for HeapMemory {}

impl Deref for HeapMemory {
    type Target = Memory;
    fn deref(&self) -> &Memory {
        &self.mem
    }
}

/// A zeroed ring of `slot_count` slots of `slot_size` bytes, counters starting at `start`,
/// both roles held (owner words written, one producer claim counted).
fn heap(slot_size: u32, slot_count: u32, start: u64) -> Arc<HeapMemory> {
    let shape = Geometry::new(slot_size, slot_count, 0).unwrap();
    let g = Geometry::new(slot_size, slot_count, shape.max_message_limit() as u32).unwrap();
    let heap = HeapRing::new(&g).unwrap();
    // SAFETY: the header box and the line-aligned slot buffer of `array_bytes` live in `heap`,
    // which the returned value owns next to the `Memory`; they are reached only through it.
    let mem = unsafe {
        Memory::new(
            heap.header,
            heap.slots.ptr,
            g,
            None,
            LostMemory::SharedMemory,
            Ident::default(),
            heap.model.handle(),
        )
    };
    let h = mem.header();
    h.producer.tail.store(start, Ordering::Relaxed);
    h.consumer.head.store(start, Ordering::Relaxed);
    h.producer.owner.store(PRODUCER, Ordering::Relaxed);
    h.consumer.owner.store(CONSUMER, Ordering::Relaxed);
    h.producer.claims.store(1, Ordering::Relaxed);
    h.consumer.claims.store(1, Ordering::Relaxed);
    Arc::new(HeapMemory { mem, _heap: heap })
}

type Sides = (ProducerCore<HeapMemory>, ConsumerCore<HeapMemory>);

fn sides(mem: &Arc<HeapMemory>) -> Sides {
    (
        ProducerCore::new(mem.clone(), PRODUCER, true).unwrap(),
        ConsumerCore::new(mem.clone(), CONSUMER, true).unwrap(),
    )
}

/// A message of `len` bytes that says which one it is.
fn message(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i as usize * 31 + k) as u8).collect()
}

fn send(tx: &mut ProducerCore<HeapMemory>, msg: &[u8]) -> Result<(), TrySendError> {
    tx.write(msg)?;
    tx.publish();
    Ok(())
}

fn recv(rx: &mut ConsumerCore<HeapMemory>) -> Result<Vec<u8>, TryRecvError> {
    let mut buf = vec![0u8; rx.memory().geometry().max_message as usize];
    let n = rx.read(&mut buf)?;
    rx.release();
    buf.truncate(n);
    Ok(buf)
}

/// The corruption a side reports, asserting it is sticky: asked again, the same answer.
fn corruption_rx(rx: &mut ConsumerCore<HeapMemory>) -> Corruption {
    let Err(TryRecvError::Corrupted(c)) = recv(rx) else {
        panic!("expected a corrupted ring");
    };
    assert_eq!(recv(rx), Err(TryRecvError::Corrupted(c)), "sticky");
    assert_eq!(rx.poisoned(), Some(&c));
    c.what
}

fn corruption_tx(tx: &mut ProducerCore<HeapMemory>, len: usize) -> Corruption {
    let Err(TrySendError::Corrupted(c)) = send(tx, &message(0, len)) else {
        panic!("expected a corrupted ring");
    };
    assert_eq!(send(tx, b""), Err(TrySendError::Corrupted(c)), "sticky");
    c.what
}

#[test]
fn messages_of_every_length_cross_the_wrap_in_order() {
    // 16-byte slots, 8 of them: a message takes 1 to 4 slots and the wrap comes often.
    for start in [0, u64::MAX - 20] {
        let mem = heap(16, 8, start);
        let (mut tx, mut rx) = sides(&mem);
        let max = mem.geometry().max_message as usize;
        let mut lens = (0..=max).cycle();
        for i in 0..200u64 {
            let msg = message(i, lens.next().unwrap());
            send(&mut tx, &msg).unwrap();
            assert_eq!(recv(&mut rx).unwrap(), msg, "message {i}");
        }
        assert_eq!(recv(&mut rx), Err(TryRecvError::Empty));
        assert_eq!(mem.tail().load(Ordering::Relaxed), rx.head());
    }
}

#[test]
fn a_record_that_would_straddle_the_end_is_preceded_by_padding() {
    let mem = heap(16, 8, 0);
    let (mut tx, mut rx) = sides(&mem);
    for i in 0..3 {
        send(&mut tx, &message(i, 8)).unwrap(); // 8 + 8 bytes: one slot each, 0..3
    }
    send(&mut tx, &message(3, 24)).unwrap(); // two slots: 3..5
    for _ in 0..4 {
        recv(&mut rx).unwrap();
    }
    // Slots 5, 6, 7 are left before the end; a 56-byte message needs 4: padding over 5..8,
    // the message at 8 (slot 0).
    send(&mut tx, &message(4, 56)).unwrap();
    assert_eq!(mem.read_record(5), (3 * 16 - 8, KIND_PADDING));
    assert_eq!(mem.read_record(8), (56, KIND_MESSAGE));
    assert_eq!(recv(&mut rx).unwrap(), message(4, 56));
    assert_eq!(rx.head(), 12, "the padding was skipped");
}

#[test]
fn a_full_ring_refuses_until_the_consumer_releases() {
    let mem = heap(16, 8, 0);
    let (mut tx, mut rx) = sides(&mem);
    assert_eq!(recv(&mut rx), Err(TryRecvError::Empty));
    for i in 0..8 {
        send(&mut tx, &message(i, 4)).unwrap();
    }
    assert_eq!(send(&mut tx, b"x"), Err(TrySendError::Full));
    // Read but not released: still full.
    let mut buf = [0u8; 8];
    assert_eq!(rx.read(&mut buf), Ok(4));
    assert_eq!(send(&mut tx, b"x"), Err(TrySendError::Full));
    rx.release();
    send(&mut tx, b"x").unwrap();
    let too_big = message(0, mem.geometry().max_message as usize + 1);
    assert!(matches!(
        send(&mut tx, &too_big),
        Err(TrySendError::TooLarge { .. })
    ));
    // Unpublished records are not visible; reserving again finds the same place.
    let mut rx_buf = Vec::new();
    while let Ok(m) = recv(&mut rx) {
        rx_buf.push(m);
    }
    assert_eq!(rx_buf.len(), 8);
    tx.write(b"later").unwrap();
    assert_eq!(tx.unpublished_slots(), 1);
    assert_eq!(recv(&mut rx), Err(TryRecvError::Empty));
    tx.publish();
    assert_eq!(recv(&mut rx).unwrap(), b"later");
    assert_eq!(tx.reserve(3), tx.reserve(3));
}

#[test]
fn a_buffer_too_small_leaves_the_message_in_the_ring() {
    let mem = heap(16, 8, 0);
    let (mut tx, mut rx) = sides(&mem);
    send(&mut tx, b"twelve bytes").unwrap();
    assert_eq!(
        rx.read(&mut [0u8; 4]),
        Err(TryRecvError::BufferTooSmall {
            needed: 12,
            available: 4
        })
    );
    assert_eq!(recv(&mut rx).unwrap(), b"twelve bytes");
}

#[test]
fn closes_are_disconnected_on_both_sides() {
    let mem = heap(16, 8, 0);
    let (mut tx, mut rx) = sides(&mem);
    send(&mut tx, b"last").unwrap();
    // The consumer's close.
    let closed = &mem.header().producer.consumer_closed;
    closed.store(1, Ordering::Release);
    assert_eq!(send(&mut tx, b"x"), Err(TrySendError::Disconnected));
    closed.store(0, Ordering::Release);
    // The producer gives its role back: every message first, then the end.
    mem.header().producer.owner.store(0, Ordering::Release);
    assert_eq!(recv(&mut rx).unwrap(), b"last");
    assert_eq!(recv(&mut rx), Err(TryRecvError::Disconnected));
}

#[test]
fn hostile_tails_poison_the_consumer() {
    // Beyond a ring's worth of slots, and backwards.
    let mem = heap(16, 8, 100);
    let (_tx, mut rx) = sides(&mem);
    mem.tail().store(100 + 9, Ordering::Release);
    assert!(matches!(
        corruption_rx(&mut rx),
        Corruption::TailOutOfRange { tail: 109, .. }
    ));
    // Sticky even once the tail looks sane again.
    mem.tail().store(100, Ordering::Release);
    assert!(matches!(recv(&mut rx), Err(TryRecvError::Corrupted(_))));

    let mem = heap(16, 8, 100);
    let (mut tx, mut rx) = sides(&mem);
    send(&mut tx, b"a").unwrap();
    assert_eq!(recv(&mut rx).unwrap(), b"a");
    mem.tail().store(100, Ordering::Release);
    assert!(matches!(
        corruption_rx(&mut rx),
        Corruption::TailOutOfRange { tail: 100, .. }
    ));

    // Inconsistent from the start: no side is made at all.
    let mem = heap(16, 8, 0);
    mem.tail().store(9, Ordering::Relaxed);
    assert!(ConsumerCore::new(mem.clone(), CONSUMER, true).is_err());
    assert!(ProducerCore::new(mem.clone(), PRODUCER, true).is_err());
}

#[test]
fn hostile_records_poison_the_consumer() {
    type Check = fn(&Corruption) -> bool;
    // (where the counters start, len, kind, slots published, what the consumer must say)
    let cases: [(u64, u32, u32, u64, Check); 7] = [
        (0, 57, KIND_MESSAGE, 4, |c| {
            matches!(c, Corruption::RecordTooLong { len: 57, .. })
        }),
        (0, 40, KIND_MESSAGE, 2, |c| {
            matches!(c, Corruption::RecordBeyondTail { slots: 3, .. })
        }),
        (6, 40, KIND_MESSAGE, 7, |c| {
            matches!(c, Corruption::RecordOverrunsArray { slots: 3, .. })
        }),
        (0, 0, 7, 1, |c| {
            matches!(c, Corruption::UnknownKind { kind: 7, .. })
        }),
        (0, 0, 0, 1, |c| {
            matches!(c, Corruption::UnknownKind { kind: 0, .. })
        }),
        (6, 24, KIND_PADDING, 2, |c| {
            matches!(c, Corruption::PaddingWithoutMessage { at: 6 })
        }),
        (6, 0, KIND_PADDING, 3, |c| {
            matches!(
                c,
                Corruption::BadPadding {
                    at: 6,
                    len: 0,
                    expected: 24
                }
            )
        }),
    ];
    for (i, (start, len, kind, published, check)) in cases.into_iter().enumerate() {
        let mem = heap(16, 8, start);
        let (_tx, mut rx) = sides(&mem);
        mem.write_record(start, len, kind);
        mem.tail().store(start + published, Ordering::Release);
        let what = corruption_rx(&mut rx);
        assert!(check(&what), "case {i}: {what:?}");
    }
}

#[test]
fn hostile_heads_poison_the_producer() {
    // Past what was published, and backwards.
    for head in [9, u64::MAX] {
        let mem = heap(16, 8, 0);
        let (mut tx, _rx) = sides(&mem);
        for i in 0..8 {
            send(&mut tx, &message(i, 1)).unwrap();
        }
        mem.head().store(head, Ordering::Release);
        // The head is read only when the ring looks full.
        assert!(matches!(
            corruption_tx(&mut tx, 1),
            Corruption::HeadOutOfRange {
                last_head: 0,
                tail: 8,
                ..
            }
        ));
    }
}

#[test]
fn a_rewritten_owner_word_stops_each_side() {
    let mem = heap(16, 8, 0);
    let (mut tx, mut rx) = sides(&mem);
    send(&mut tx, b"a").unwrap();
    mem.header().producer.owner.store(99, Ordering::Relaxed);
    let lost = corruption_tx(&mut tx, 1);
    assert_eq!(
        lost,
        Corruption::RoleLost {
            role: Role::Producer,
            found: 99
        }
    );
    // The consumer stops at its release: nothing is released in a role it lost.
    mem.header().consumer.owner.store(98, Ordering::Relaxed);
    let mut buf = [0u8; 8];
    assert_eq!(rx.read(&mut buf), Ok(1));
    rx.release();
    assert_eq!(mem.head().load(Ordering::Relaxed), 0);
    assert!(matches!(
        rx.poisoned().map(|c| c.what),
        Some(Corruption::RoleLost {
            role: Role::Consumer,
            found: 98
        })
    ));
}

#[test]
fn a_claim_count_going_down_or_to_zero_poisons_the_consumer() {
    let mem = heap(16, 8, 0);
    let (_tx, mut rx) = sides(&mem);
    mem.header().producer.claims.store(0, Ordering::Relaxed);
    assert!(matches!(
        corruption_rx(&mut rx),
        Corruption::ClaimsBackwards {
            claims: 0,
            last_claims: 1
        }
    ));
}

#[test]
fn two_threads_deliver_every_message_in_order() {
    let n: u64 = if crate::sync::MIRI { 150 } else { 100_000 };
    let mem = heap(16, 8, u64::MAX - 50);
    let (mut tx, mut rx) = sides(&mem);
    let max = mem.geometry().max_message as usize;
    let producer = std::thread::spawn(move || {
        let mut lens = (0..=max).cycle();
        for i in 0..n {
            let msg = message(i, lens.next().unwrap());
            loop {
                match send(&mut tx, &msg) {
                    Ok(()) => break,
                    Err(TrySendError::Full) => std::thread::yield_now(),
                    Err(e) => panic!("send {i}: {e}"),
                }
            }
        }
    });
    let mut lens = (0..=max).cycle();
    for i in 0..n {
        let want = message(i, lens.next().unwrap());
        loop {
            match recv(&mut rx) {
                Ok(got) => {
                    assert_eq!(got, want, "message {i}");
                    break;
                }
                Err(TryRecvError::Empty) => std::thread::yield_now(),
                Err(e) => panic!("recv {i}: {e}"),
            }
        }
    }
    producer.join().unwrap();
    assert_eq!(recv(&mut rx), Err(TryRecvError::Empty));
}
