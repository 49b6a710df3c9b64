//! Typed rings (`RingConfig::message_type`, `ring.typed::<T>().producer()`/`.consumer()`) between
//! two real processes: a million values through every send and receive call, peers built with
//! another type refused on attach, a byte producer's record of the wrong length refused as
//! corruption (never a panic), and batches that send what fits in a nearly full ring.
//!
//! The other process is this test binary run again (`common::ChildProcess`). Every ring lives
//! in a `Key::Private` segment removed by a guard, so nothing is left in `ipcs -m`.

mod common;

use std::mem::offset_of;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{ChildProcess, RawAttach, RemoveOnDrop, SplitMix64, child_role, param};
use shmpipe::bytemuck::{Pod, Zeroable};
use shmpipe::{
    Corrupted, Corruption, Error, Key, MessageType, RecvError, Ring, RingConfig, Shmid,
    TryRecvError, TrySendError,
};

/// The message of the tests, derived through shmpipe's re-export of bytemuck.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[bytemuck(crate = "shmpipe::bytemuck")]
#[repr(C)]
struct Tick {
    seq: u64,
    price: f64,
    qty: u32,
    side: u32,
}

/// Same size (24) and alignment (8) as `Tick`, another name.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[bytemuck(crate = "shmpipe::bytemuck")]
#[repr(C)]
struct Quote {
    seq: u64,
    bid: f64,
    ask: u32,
    size: u32,
}

/// Value `seq` of a stream: every field derived from it, so the receiver can check it.
fn tick(seq: u64) -> Tick {
    Tick {
        seq,
        price: seq as f64 * 0.5 + 0.25,
        qty: (seq as u32).wrapping_mul(2_654_435_761),
        side: (seq % 3) as u32,
    }
}

/// Values of the cross-process stream.
const N: u64 = if cfg!(miri) { 1_000 } else { 1_000_000 };
/// No test may take longer, whatever goes wrong.
const TIMEOUT: Duration = Duration::from_secs(120);
/// One blocking call may not take longer (the peer is alive and working).
const STEP: Duration = Duration::from_secs(30);

const SHMID_VAR: &str = "SHMPIPE_TEST_SHMID";
const COUNT_VAR: &str = "SHMPIPE_TEST_COUNT";

/// 256 slots of 32 bytes: one `Tick` (24 bytes and its 8-byte record header) per slot, and the
/// ring is full or empty all the time.
fn config() -> RingConfig {
    RingConfig::new()
        .slot_size(32)
        .slot_count(256)
        .message_type::<Tick>()
}

/// Opens the ring the parent passed by shmid.
fn child_ring() -> Ring {
    Ring::open(Shmid(param(SHMID_VAR)), &RingConfig::new()).expect("child: open the ring by shmid")
}

// ---------------------------------------------------------------------------------------------
// A million values
// ---------------------------------------------------------------------------------------------

/// Sends `tick(0..count)`, choosing for each step (by a PRNG) `try_send` (falling back to
/// `send_timeout` when full), `send`, a slice by `try_send_slice` or `send_slice`, or a
/// value built in place with `reserve` (sometimes dropped first: nothing is sent).
fn produce(ring: &Ring, count: u64) {
    let mut tx = ring
        .typed::<Tick>()
        .producer()
        .expect("claim the typed producer");
    let mut rng = SplitMix64::new(0x0074_7970_6564);
    let mut seq = 0u64;
    let mut batch = Vec::with_capacity(64);
    while seq < count {
        match rng.below(6) {
            0 => match tx.try_send(tick(seq)) {
                Ok(()) => seq += 1,
                Err(TrySendError::Full) => {
                    tx.send_timeout(tick(seq), STEP)
                        .expect("send_timeout after Full");
                    seq += 1;
                }
                Err(e) => panic!("try_send of {seq}: {e}"),
            },
            1 => {
                tx.send(tick(seq)).expect("send");
                seq += 1;
            }
            2 | 3 => {
                let k = rng.range(1, 64).min((count - seq) as usize) as u64;
                batch.clear();
                batch.extend((seq..seq + k).map(tick));
                if rng.below(2) == 0 {
                    tx.send_slice_timeout(&batch, STEP).expect("send_slice");
                    seq += k;
                } else {
                    match tx.try_send_slice(&batch) {
                        Ok(n) => {
                            assert!((1..=k as usize).contains(&n), "{n} of {k}");
                            seq += n as u64;
                        }
                        Err(TrySendError::Full) => std::thread::yield_now(),
                        Err(e) => panic!("try_send_slice at {seq}: {e}"),
                    }
                }
            }
            _ => {
                let mut grant = match tx.try_reserve() {
                    Ok(g) => g,
                    Err(TrySendError::Full) => tx.reserve_timeout(STEP).expect("room"),
                    Err(e) => panic!("reserve at {seq}: {e}"),
                };
                if rng.below(8) == 0 {
                    // Not committed: discarded, never delivered.
                    grant.set(tick(u64::MAX));
                    continue;
                }
                if rng.below(2) == 0 {
                    grant.set(tick(seq));
                } else {
                    // Field by field, at each field's offset.
                    let mut view = grant.view_mut();
                    view.write_at(offset_of!(Tick, seq), seq).unwrap();
                    view.write_at(offset_of!(Tick, price), tick(seq).price)
                        .unwrap();
                    view.write_at(offset_of!(Tick, qty), tick(seq).qty).unwrap();
                    view.write_at(offset_of!(Tick, side), tick(seq).side)
                        .unwrap();
                }
                grant.commit();
                seq += 1;
            }
        }
    }
}

/// Receives `count` values, choosing for each step `recv_timeout`, `try_recv`, a batch by
/// `try_recv_slice` or `recv_slice_timeout`, or a value read in place by `try_lend` or
/// `lend_timeout`; checks that each is `tick(seq)` in order, then that the stream ends.
fn consume(ring: &Ring, count: u64) {
    let mut rx = ring
        .typed::<Tick>()
        .consumer()
        .expect("claim the typed consumer");
    let mut rng = SplitMix64::new(0x636f_6e73);
    let mut buf = [Tick::zeroed(); 48];
    let mut seq = 0u64;
    let check = |got: &Tick, seq: u64| {
        assert_eq!(*got, tick(seq), "value {seq}");
    };
    while seq < count {
        match rng.below(6) {
            0 => {
                check(&rx.recv_timeout(STEP).expect("recv_timeout"), seq);
                seq += 1;
            }
            1 => match rx.try_recv() {
                Ok(v) => {
                    check(&v, seq);
                    seq += 1;
                }
                Err(TryRecvError::Empty) => std::hint::spin_loop(),
                Err(e) => panic!("try_recv at {seq}: {e}"),
            },
            2 => {
                let want = rng.range(1, buf.len()).min((count - seq) as usize);
                match rx.try_recv_slice(&mut buf[..want]) {
                    Ok(n) => {
                        assert!((1..=want).contains(&n), "{n} of {want}");
                        for v in &buf[..n] {
                            check(v, seq);
                            seq += 1;
                        }
                    }
                    Err(TryRecvError::Empty) => std::hint::spin_loop(),
                    Err(e) => panic!("try_recv_slice at {seq}: {e}"),
                }
            }
            3 => {
                let want = rng.range(1, buf.len()).min((count - seq) as usize);
                let n = rx
                    .recv_slice_timeout(&mut buf[..want], STEP)
                    .expect("recv_slice_timeout");
                assert!((1..=want).contains(&n), "{n} of {want}");
                for v in &buf[..n] {
                    check(v, seq);
                    seq += 1;
                }
            }
            4 => match rx.try_lend() {
                Ok(v) => {
                    check(&v.get(), seq);
                    seq += 1;
                }
                Err(TryRecvError::Empty) => std::hint::spin_loop(),
                Err(e) => panic!("try_lend at {seq}: {e}"),
            },
            _ => {
                let v = rx.lend_timeout(STEP).expect("lend_timeout");
                check(&v.get(), seq);
                seq += 1;
            }
        }
    }
    // The producer drops its side after the last value: nothing more, then the end.
    match rx.recv_timeout(STEP) {
        Err(RecvError::Disconnected) => {}
        other => panic!("after {count} values: {other:?}"),
    }
    assert_eq!(rx.try_recv_slice(&mut buf), Err(TryRecvError::Disconnected));
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_million_values_cross_processes_in_order() {
    if let Some(role) = child_role() {
        assert_eq!(role, "consumer");
        consume(&child_ring(), param(COUNT_VAR));
        return;
    }
    let ring = Ring::create(Key::Private, &config()).unwrap();
    let _rm = RemoveOnDrop::ring(&ring);
    let vars = [
        (SHMID_VAR, ring.shmid().unwrap().to_string()),
        (COUNT_VAR, N.to_string()),
    ];
    let child = ChildProcess::spawn(
        "a_million_values_cross_processes_in_order",
        "consumer",
        &vars,
    );
    let t0 = Instant::now();
    produce(&ring, N);
    let took = t0.elapsed();
    child.wait_success(TIMEOUT);
    let st = ring.status();
    assert_eq!((st.sent, st.received), (N, N), "{st:?}");
    eprintln!(
        "{N} typed values across processes in {took:.2?} ({:.1} M/s)",
        N as f64 / took.as_secs_f64() / 1e6
    );
}

// ---------------------------------------------------------------------------------------------
// Peers of another type
// ---------------------------------------------------------------------------------------------

/// Expects a typed claim to be refused with `TypeMismatch` naming the ring.
fn mismatch<T: std::fmt::Debug>(what: &str, ring: &Ring, r: Result<T, Error>) -> String {
    match r {
        Err(e @ Error::TypeMismatch { ident, .. }) => {
            assert_eq!(ident, ring.ident(), "{what}");
            e.to_string()
        }
        other => panic!("{what}: expected TypeMismatch, got {other:?}"),
    }
}

/// The child (another process, attached by shmid) tries every wrong type, then the right one,
/// and receives one value.
fn refuse_other_types(ring: &Ring) {
    let msg = mismatch("bigger", ring, ring.typed::<[u64; 4]>().consumer());
    assert!(msg.contains("32-byte values"), "{msg}");
    assert!(msg.contains("24-byte values aligned to 8"), "{msg}");
    mismatch("smaller", ring, ring.typed::<[u64; 2]>().consumer());
    let msg = mismatch(
        "same size, another name",
        ring,
        ring.typed::<Quote>().consumer(),
    );
    assert!(msg.contains("Quote"), "{msg}");
    mismatch(
        "same size, align 4",
        ring,
        ring.typed::<[u32; 6]>().consumer(),
    );
    mismatch(
        "same size, align 1",
        ring,
        ring.typed::<[u8; 24]>().consumer(),
    );
    mismatch("a tag", ring, ring.typed::<Tick>().tagged(7).consumer());
    mismatch("producer too", ring, ring.typed::<Quote>().producer());
    // Refusals claim nothing: the role is still free for the right type.
    assert_eq!(ring.status().consumer_pid, 0);
    let mut rx = ring.typed::<Tick>().consumer().expect("the right type");
    assert_eq!(rx.recv_timeout(STEP), Ok(tick(42)));
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_peer_with_another_type_is_refused() {
    if child_role().is_some() {
        refuse_other_types(&child_ring());
        return;
    }
    let ring = Ring::create(Key::Private, &config()).unwrap();
    let _rm = RemoveOnDrop::ring(&ring);
    assert_eq!(ring.message_type(), Some(MessageType::of::<Tick>()));
    let mut tx = ring.typed::<Tick>().producer().unwrap();
    tx.try_send(tick(42)).unwrap();
    let vars = [(SHMID_VAR, ring.shmid().unwrap().to_string())];
    ChildProcess::spawn("a_peer_with_another_type_is_refused", "consumer", &vars)
        .wait_success(TIMEOUT);
}

#[test]
#[cfg_attr(miri, ignore)]
fn untyped_rings_and_other_configurations_are_refused() {
    // An untyped ring: a typed claim on either side is refused, naming what the ring carries.
    let bytes = Ring::create(Key::Private, &RingConfig::new()).unwrap();
    let _rm = RemoveOnDrop::ring(&bytes);
    assert_eq!(bytes.message_type(), None);
    let msg = mismatch("untyped", &bytes, bytes.typed::<Tick>().consumer());
    assert!(msg.contains("untyped byte messages"), "{msg}");
    mismatch("untyped", &bytes, bytes.typed::<u8>().producer());
    let peer = Ring::open(Shmid(bytes.shmid().unwrap()), &RingConfig::new()).unwrap();
    mismatch("untyped, reopened", &peer, peer.typed::<Tick>().consumer());

    // A typed ring reopened by another handle keeps its type; the byte API still works on it.
    let typed = Ring::create(Key::Private, &config()).unwrap();
    let _rm2 = RemoveOnDrop::ring(&typed);
    let other = Ring::open(Shmid(typed.shmid().unwrap()), &RingConfig::new()).unwrap();
    assert_eq!(other.message_type(), Some(MessageType::of::<Tick>()));
    assert_eq!(other.max_message(), 24);

    // open_or_create with another type finds the ring and refuses it.
    let key = common::unique_key();
    let _rm3 = RemoveOnDrop::key(key);
    let _first = Ring::open_or_create(key, &config()).unwrap();
    let quotes = RingConfig::new()
        .slot_size(32)
        .slot_count(256)
        .message_type::<Quote>();
    match Ring::open_or_create(key, &quotes) {
        Err(Error::ConfigMismatch { what, .. }) => {
            assert!(what.contains("fingerprint"), "{what}")
        }
        other => panic!("open_or_create with another type: {other:?}"),
    }
    // A configuration that sets no message type demands none (the header is the authority):
    // it joins the typed ring, which keeps its type, and uses it through the byte API.
    let untyped = RingConfig::new()
        .slot_size(32)
        .slot_count(256)
        .max_message(24);
    let joined = Ring::open_or_create(key, &untyped).expect("no type demanded");
    assert_eq!(joined.message_type(), Some(MessageType::of::<Tick>()));
    // Its shape fields are still demanded.
    match Ring::open_or_create(key, &untyped.max_message(16)) {
        Err(Error::ConfigMismatch { what, .. }) => assert!(what.contains("max_message"), "{what}"),
        other => panic!("open_or_create with another max_message: {other:?}"),
    }
    Ring::open_or_create(key, &config()).expect("the same type");
}

#[test]
#[cfg_attr(miri, ignore)]
fn the_type_fields_are_validated_at_attach_and_never_reread() {
    let ring = Ring::create(Key::Private, &config()).unwrap();
    let _rm = RemoveOnDrop::ring(&ring);
    let shmid = ring.shmid().unwrap();
    let raw = RawAttach::new(shmid);
    // The fields where docs/LAYOUT.md says they are.
    let t = MessageType::of::<Tick>();
    assert_eq!(raw.u32(68).load(Ordering::Relaxed), 24);
    assert_eq!(raw.u64(72).load(Ordering::Relaxed), t.fingerprint);
    assert_eq!(raw.u32(80).load(Ordering::Relaxed), 8);
    // A hostile process rewrites them: a new attach refuses the header...
    for (off, bad) in [(80, 16), (80, 3), (68, 16), (68, 0)] {
        let old = raw.u32(off).load(Ordering::Relaxed);
        raw.u32(off).store(bad, Ordering::Relaxed);
        match Ring::open(Shmid(shmid), &RingConfig::new()) {
            Err(Error::BadHeader { .. }) => {}
            other => panic!("type field at {off} = {bad}: {other:?}"),
        }
        raw.u32(off).store(old, Ordering::Relaxed);
    }
    // ...and one already attached never looks again: it claims by what it validated.
    raw.u64(72).store(0, Ordering::Relaxed);
    raw.u32(80).store(4, Ordering::Relaxed);
    let mut tx = ring.typed::<Tick>().producer().unwrap();
    let mut rx = ring.typed::<Tick>().consumer().unwrap();
    tx.try_send(tick(1)).unwrap();
    assert_eq!(rx.try_recv(), Ok(tick(1)));
}

// ---------------------------------------------------------------------------------------------
// Records that are not one value
// ---------------------------------------------------------------------------------------------

/// A byte producer in the child: a good value, then records of other lengths.
fn send_wrong_lengths(ring: &Ring) {
    let mut tx = ring.producer().expect("a byte producer on a typed ring");
    tx.send(shmpipe::bytemuck::bytes_of(&tick(5))).unwrap();
    tx.send(&[0xee; 10]).unwrap();
    tx.send(&[]).unwrap();
    tx.send(shmpipe::bytemuck::bytes_of(&tick(6))).unwrap();
    // Longer than a value is longer than the ring's maximum: the byte API refuses it.
    assert!(matches!(
        tx.try_send(&[0u8; 25]),
        Err(TrySendError::TooLarge { len: 25, max: 24 })
    ));
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_record_of_the_wrong_length_is_an_error_not_a_panic() {
    if child_role().is_some() {
        send_wrong_lengths(&child_ring());
        return;
    }
    let ring = Ring::create(Key::Private, &config()).unwrap();
    let _rm = RemoveOnDrop::ring(&ring);
    let mut rx = ring.typed::<Tick>().consumer().unwrap();
    let vars = [(SHMID_VAR, ring.shmid().unwrap().to_string())];
    ChildProcess::spawn(
        "a_record_of_the_wrong_length_is_an_error_not_a_panic",
        "producer",
        &vars,
    )
    .wait_success(TIMEOUT);

    let mut buf = [Tick::zeroed(); 4];
    // The good value before it is delivered, even by a batch that then meets the bad one.
    assert_eq!(rx.try_recv_slice(&mut buf), Ok(1));
    assert_eq!(buf[0], tick(5));
    let c = match rx.recv_timeout(STEP) {
        Err(RecvError::Corrupted(c)) => c,
        other => panic!("a 10-byte record: {other:?}"),
    };
    let Corrupted { ring: ident, what } = c;
    assert_eq!(ident, ring.ident());
    match what {
        Corruption::WrongMessageSize { len, expected, .. } => assert_eq!((len, expected), (10, 24)),
        other => panic!("{other:?}"),
    }
    assert!(c.to_string().contains("length 10"), "{c}");
    // Sticky on every call.
    assert_eq!(rx.try_recv(), Err(TryRecvError::Corrupted(c)));
    assert_eq!(rx.try_recv_slice(&mut buf), Err(TryRecvError::Corrupted(c)));
    assert_eq!(rx.try_lend().unwrap_err(), TryRecvError::Corrupted(c));
    assert_eq!(rx.lend().unwrap_err(), RecvError::Corrupted(c));
    assert_eq!(rx.recv_slice(&mut buf), Err(RecvError::Corrupted(c)));
    assert_eq!(rx.poisoned(), Some(&c));
    // The bad records stayed in the ring: the byte consumer underneath reads them.
    let mut bytes = rx.into_inner();
    let mut raw = [0u8; 64];
    assert_eq!(bytes.try_recv(&mut raw), Ok(10));
    assert_eq!(bytes.try_recv(&mut raw), Ok(0));
    assert_eq!(bytes.try_recv(&mut raw), Ok(24));
    assert_eq!(
        shmpipe::bytemuck::pod_read_unaligned::<Tick>(&raw[..24]),
        tick(6)
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn an_empty_record_is_refused_by_a_zero_copy_read_too() {
    let ring = Ring::create(Key::Private, &config()).unwrap();
    let _rm = RemoveOnDrop::ring(&ring);
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.typed::<Tick>().consumer().unwrap();
    tx.try_send(&[]).unwrap();
    match rx.try_lend() {
        Err(TryRecvError::Corrupted(Corrupted {
            what: Corruption::WrongMessageSize { len: 0, .. },
            ..
        })) => {}
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Slices in a nearly full ring
// ---------------------------------------------------------------------------------------------

#[test]
#[cfg_attr(miri, ignore)]
fn a_slice_sends_what_fits_in_a_nearly_full_ring() {
    // 16 slots of 32 bytes: 16 values.
    let cfg = RingConfig::new()
        .slot_size(32)
        .slot_count(16)
        .message_type::<Tick>();
    let ring = Ring::create(Key::Private, &cfg).unwrap();
    let _rm = RemoveOnDrop::ring(&ring);
    let mut tx = ring.typed::<Tick>().producer().unwrap();
    let mut rx = ring.typed::<Tick>().consumer().unwrap();
    let values: Vec<Tick> = (0..100).map(tick).collect();

    assert_eq!(tx.try_send_slice(&values[..13]), Ok(13));
    let tail = ring.status().tail;
    assert_eq!(
        tx.try_send_slice(&values[13..23]),
        Ok(3),
        "three slots were free"
    );
    // The three were published together, with one store of the tail.
    assert_eq!(ring.status().tail, tail + 3);
    assert_eq!(tx.try_send_slice(&values[16..]), Err(TrySendError::Full));
    assert_eq!(tx.try_send(values[16]), Err(TrySendError::Full));
    assert_eq!(tx.try_send_slice(&[]), Ok(0));

    // Five received with one release of the head: room for five more.
    let mut buf = [Tick::zeroed(); 5];
    let head = ring.status().head;
    assert_eq!(rx.try_recv_slice(&mut buf), Ok(5));
    assert_eq!(ring.status().head, head + 5);
    assert_eq!(buf.to_vec(), values[..5]);
    assert_eq!(tx.try_send_slice(&values[16..]), Ok(5));

    // Drain in uneven batches; a buffer larger than what waits gets what waits.
    let mut got: Vec<Tick> = values[..5].to_vec();
    let mut big = [Tick::zeroed(); 40];
    while let Ok(n) = rx.try_recv_slice(&mut big[..7]) {
        got.extend_from_slice(&big[..n]);
    }
    assert_eq!(got, values[..21]);
    assert_eq!(rx.try_recv_slice(&mut big), Err(TryRecvError::Empty));

    // A blocking slice send of more than the ring holds goes through in batches while the
    // consumer (another thread) drains it.
    let rest = values[21..].to_vec();
    let n_rest = rest.len();
    std::thread::scope(|s| {
        s.spawn(move || tx.send_slice_timeout(&rest, STEP).unwrap());
        let mut seen = 0;
        while seen < n_rest {
            let n = rx.recv_slice_timeout(&mut big, STEP).unwrap();
            for v in &big[..n] {
                assert_eq!(*v, values[21 + seen]);
                seen += 1;
            }
        }
    });
}

#[test]
#[cfg_attr(miri, ignore)]
fn slices_wrap_around_padding_and_stop_exactly_when_full() {
    // Values of 40 bytes take 3 slots of 16 bytes: records wrap behind padding records.
    type Wide = [u64; 5];
    let cfg = RingConfig::new()
        .slot_size(16)
        .slot_count(16)
        .message_type::<Wide>();
    let ring = Ring::create(Key::Private, &cfg).unwrap();
    let _rm = RemoveOnDrop::ring(&ring);
    let mut tx = ring.typed::<Wide>().producer().unwrap();
    let mut rx = ring.typed::<Wide>().consumer().unwrap();
    let wide = |i: u64| [i, !i, i * 3, i ^ 0x5555, i.rotate_left(17)];
    let mut rng = SplitMix64::new(9);
    let (mut next_out, mut next_in) = (0u64, 0u64);
    let mut buf = [[0u64; 5]; 8];
    for _ in 0..2_000 {
        let k = rng.range(1, 8) as u64;
        let batch: Vec<Wide> = (next_out..next_out + k).map(wide).collect();
        match tx.try_send_slice(&batch) {
            Ok(n) => {
                assert!(n >= 1 && n as u64 <= k);
                next_out += n as u64;
                if (n as u64) < k {
                    // As many as fit: the next one does not.
                    assert_eq!(tx.try_send(wide(next_out)), Err(TrySendError::Full));
                }
            }
            Err(TrySendError::Full) => {
                assert!(next_out - next_in >= 1, "full with nothing in the ring");
            }
            Err(e) => panic!("{e}"),
        }
        let want = rng.range(1, buf.len());
        if let Ok(n) = rx.try_recv_slice(&mut buf[..want]) {
            for v in &buf[..n] {
                assert_eq!(*v, wide(next_in));
                next_in += 1;
            }
        }
    }
    assert!(next_in > 1_000, "only {next_in} values went through");
    drop(tx);
    loop {
        match rx.try_recv_slice(&mut buf) {
            Ok(n) => {
                for v in &buf[..n] {
                    assert_eq!(*v, wide(next_in));
                    next_in += 1;
                }
            }
            Err(TryRecvError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(next_in, next_out);
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_typed_takeover_checks_the_type_then_the_holder() {
    let ring = Ring::create(Key::Private, &config()).unwrap();
    let _rm = RemoveOnDrop::ring(&ring);
    let mut rx = ring.typed::<Tick>().consumer().unwrap();
    let tx = ring.typed::<Tick>().producer().unwrap();
    // A live holder: refused as for a byte takeover.
    assert!(matches!(
        ring.typed::<Tick>().take_over_producer(),
        Err(Error::RoleTaken {
            holder: shmpipe::Liveness::Alive,
            ..
        })
    ));
    // Another type: refused before the holder is even looked at.
    mismatch(
        "takeover of another type",
        &ring,
        ring.typed::<Quote>().take_over_producer(),
    );
    drop(tx);
    let mut tx = ring.typed::<Tick>().take_over_producer().unwrap();
    tx.send(tick(3)).unwrap();
    assert_eq!(rx.recv_timeout(STEP), Ok(tick(3)));
}

#[test]
#[cfg_attr(miri, ignore)]
fn inspect_shows_the_message_type() {
    let ring = Ring::create(Key::Private, &config()).unwrap();
    let _rm = RemoveOnDrop::ring(&ring);
    let shmid = ring.shmid().unwrap();
    let t = MessageType::of::<Tick>();
    assert_eq!(shmpipe::gc::inspect(shmid).unwrap().message_type, Some(t));
    let bytes = Ring::create(Key::Private, &RingConfig::new()).unwrap();
    let _rm2 = RemoveOnDrop::ring(&bytes);
    let info = shmpipe::gc::inspect(bytes.shmid().unwrap()).unwrap();
    assert_eq!(info.message_type, None);
}
