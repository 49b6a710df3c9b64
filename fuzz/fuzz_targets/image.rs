//! `image`: arbitrary bytes as a whole segment image (header and slots), attached through the
//! same validation as a real segment (`shmpipe::__fuzz::open_image`), then used by a producer,
//! a consumer or both. Allowed outcomes: attach errors, messages no longer than the maximum,
//! and typed errors; `Corrupted` stays the same for every later call of that side. A panic,
//! an out-of-bounds access (AddressSanitizer) or a hang (libFuzzer's timeout) is a failure.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shmpipe::__fuzz::open_image;
use shmpipe::{
    Consumer, Corrupted, Error, Liveness, Producer, RecvError, Ring, TryRecvError, TrySendError,
};
use shmpipe::{HEADER_SIZE, LAYOUT_VERSION, MAGIC, RECORD_HEADER};
use shmpipe_fuzz::{Finish, ImageAction, ImageInput, Roles, message};

fuzz_target!(|input: ImageInput<'_>| run(input));

/// A side and the `Corrupted` it reported, if any: from then on it must report that again.
struct Side<T> {
    side: T,
    poisoned: Option<Corrupted>,
}

impl<T> Side<T> {
    fn new(side: T) -> Side<T> {
        Side {
            side,
            poisoned: None,
        }
    }

    /// Records a `Corrupted` result, or checks that an earlier one is repeated.
    fn corrupted(&mut self, got: Option<Corrupted>, what: &str) {
        match (self.poisoned, got) {
            (None, c) => self.poisoned = c,
            (Some(before), Some(now)) => assert_eq!(before, now, "{what}: Corrupted changed"),
            (Some(before), None) => panic!("{what}: not sticky: {before} forgotten"),
        }
    }
}

/// Claims a role the way an application would: normally, or by taking over from a holder
/// the kernel says is dead.
fn claim<T>(
    normal: impl Fn() -> Result<T, Error>,
    take_over: impl Fn() -> Result<T, Error>,
) -> Option<T> {
    match normal() {
        Ok(s) => Some(s),
        Err(Error::RoleTaken {
            holder: Liveness::Dead,
            ..
        }) => take_over().ok(),
        Err(Error::RoleTaken { .. } | Error::Corrupted(_)) => None,
        Err(e) => panic!("unexpected claim error: {e}"),
    }
}

/// Makes the configuration line of `image` valid, keeping what the fuzzer chose where it can:
/// our magic, version, header size and ready word; a slot size of `8 << (field % 5)` and a
/// slot count of `1 << (field % 5)` (up to 128 bytes and 16 slots), a maximum message within
/// the limit, known flags only, the matching ring size, and enough bytes for the ring; an
/// untyped ring (the three type fields 0), or, if the `type_size` field is odd and the maximum
/// is a whole number of values of `1 << (type_align % 4)` bytes, a typed ring of the maximum's
/// size with the fuzzer's fingerprint. The
/// head is put at most a ring behind the tail (`tail - head_field % (count + 1)`), so both
/// roles can attach and the records are what is left to validate.
fn repair(image: &mut Vec<u8>) {
    let word =
        |image: &[u8], off: usize| u32::from_le_bytes(image[off..off + 4].try_into().unwrap());
    let put32 = |image: &mut Vec<u8>, off: usize, v: u32| {
        image[off..off + 4].copy_from_slice(&v.to_le_bytes())
    };
    let put64 = |image: &mut Vec<u8>, off: usize, v: u64| {
        image[off..off + 8].copy_from_slice(&v.to_le_bytes())
    };
    if image.len() < HEADER_SIZE {
        image.resize(HEADER_SIZE, 0);
    }
    let slot_size = 8u32 << (word(image, 16) % 5);
    let slot_count = 1u32 << (word(image, 20) % 5);
    let limit = (slot_count / 2).max(1) * slot_size - RECORD_HEADER as u32;
    let max = word(image, 24) % (limit + 1);
    let ring_size = HEADER_SIZE as u64 + u64::from(slot_size) * u64::from(slot_count);
    put64(image, 0, MAGIC);
    put32(image, 8, LAYOUT_VERSION);
    put32(image, 12, HEADER_SIZE as u32);
    put32(image, 16, slot_size);
    put32(image, 20, slot_count);
    put32(image, 24, max);
    let flags = word(image, 28) & 1;
    put32(image, 28, flags);
    put64(image, 40, ring_size);
    put32(image, 60, u32::from_le_bytes(*b"RDY!"));
    let align = 1u32 << (word(image, 80) % 4);
    if word(image, 68) % 2 == 1 && max > 0 && max % align == 0 {
        put32(image, 68, max); // type_size; the fingerprint at 72 stays as it is
        put32(image, 80, align);
    } else {
        image[68..84].fill(0);
    }
    let tail = u64::from_le_bytes(image[128..136].try_into().unwrap());
    let behind =
        u64::from_le_bytes(image[256..264].try_into().unwrap()) % (u64::from(slot_count) + 1);
    put64(image, 256, tail.wrapping_sub(behind));
    if (image.len() as u64) < ring_size {
        image.resize(ring_size as usize, 0);
    }
}

fn run(input: ImageInput<'_>) {
    let mut repaired = Vec::new();
    let image = if input.repair {
        repaired.extend_from_slice(input.image);
        repair(&mut repaired);
        &repaired[..]
    } else {
        input.image
    };
    let ring = match open_image(image) {
        Ok(r) => r,
        Err(
            Error::NotShmpipe { .. }
            | Error::VersionMismatch { .. }
            | Error::SegmentTooSmall { .. }
            | Error::BadHeader { .. }
            | Error::InitTimeout { .. },
        ) => return,
        Err(e) => panic!("unexpected attach error: {e}"),
    };
    let max = ring.max_message();
    shmpipe_fuzz::trace!("attached: {ring:?} {:?}", ring.status());
    assert!(
        (ring.slots_for(max) as usize) <= (ring.slot_count() / 2).max(1),
        "validated maximum message does not fit half the ring"
    );
    let _ = ring.status();
    let claim_producer = || claim(|| ring.producer(), || ring.take_over_producer());
    let claim_consumer = || claim(|| ring.consumer(), || ring.take_over_consumer());
    let (mut tx, mut rx) = match input.roles {
        Roles::Consumer => (None, claim_consumer()),
        Roles::Producer => (claim_producer(), None),
        Roles::Both => (claim_producer(), claim_consumer()),
    };
    let mut tx = tx.take().map(Side::new);
    let mut rx = rx.take().map(Side::new);
    let mut seq = 0u64;
    for op in &input.ops {
        for _ in 0..=op.repeat % 8 {
            match op.what {
                ImageAction::Recv(b) => {
                    if let Some(rx) = rx.as_mut() {
                        recv(rx, b.resolve(max), max);
                    }
                }
                ImageAction::Read => {
                    if let Some(rx) = rx.as_mut() {
                        let got = rx.side.try_lend().map(|g| g.len());
                        check_recv(rx, got, max, "try_lend");
                    }
                }
                ImageAction::RecvTimeout => {
                    if let Some(rx) = rx.as_mut() {
                        let mut buf = vec![0; max];
                        match rx.side.recv_timeout(&mut buf, Duration::ZERO) {
                            Ok(n) => {
                                assert!(n <= max);
                                rx.corrupted(None, "recv_timeout");
                            }
                            Err(RecvError::Corrupted(c)) => rx.corrupted(Some(c), "recv_timeout"),
                            Err(RecvError::Timeout | RecvError::Disconnected) => {
                                rx.corrupted(None, "recv_timeout")
                            }
                            Err(e) => panic!("recv_timeout: {e}"),
                        }
                    }
                }
                ImageAction::Send(l) => {
                    if let Some(tx) = tx.as_mut() {
                        seq += 1;
                        let len = l.resolve(max, ring.slot_size(), ring.slot_count());
                        let data = message(seq, len);
                        let got = tx.side.try_send(&data);
                        check_send(tx, got, len, max, "try_send");
                    }
                }
                ImageAction::Reserve(l, f) => {
                    if let Some(tx) = tx.as_mut() {
                        let len = l.resolve(max, ring.slot_size(), ring.slot_count());
                        let got = match tx.side.try_reserve(len) {
                            Ok(mut g) => {
                                g.fill(0x3c);
                                match f {
                                    Finish::Commit => g.commit(),
                                    Finish::Short(v) => g.commit_len(usize::from(v) % (len + 1)),
                                    Finish::Drop => {} // discarded: nothing is sent
                                }
                                Ok(())
                            }
                            Err(e) => Err(e),
                        };
                        check_send(tx, got, len, max, "reserve");
                    }
                }
                ImageAction::RecvBatch(n) => {
                    if let Some(rx) = rx.as_mut() {
                        let mut batch = rx.side.batch();
                        let mut results = Vec::new();
                        for _ in 0..=n % 8 {
                            let got = batch.try_lend().map(|g| g.len());
                            let stop = got.is_err();
                            results.push(got);
                            if stop {
                                break;
                            }
                        }
                        drop(batch);
                        for got in results {
                            check_recv(rx, got, max, "batch try_lend");
                        }
                    }
                }
                ImageAction::SendBatch(n) => {
                    if let Some(tx) = tx.as_mut() {
                        let mut batch = tx.side.batch();
                        let mut results = Vec::new();
                        for i in 0..=u64::from(n % 8) {
                            let len = (i as usize * 13) % (max + 1);
                            let data = message(seq + i, len);
                            let got = batch.try_send(&data);
                            results.push((got, len));
                        }
                        drop(batch);
                        seq += 9;
                        for (got, len) in results {
                            check_send(tx, got, len, max, "batch try_send");
                        }
                    }
                }
            }
        }
    }
    // Drain: whatever the consumer still finds ends within a ring's worth of records.
    if let Some(rx) = rx.as_mut() {
        for _ in 0..=ring.slot_count() {
            let got = rx.side.try_lend().map(|g| g.len());
            let stop = got.is_err();
            check_recv(rx, got, max, "drain");
            if stop {
                break;
            }
        }
    }
    drop_sides(tx, rx, &ring);
}

fn recv(rx: &mut Side<Consumer>, size: usize, max: usize) {
    let mut buf = vec![0; size];
    match rx.side.try_recv(&mut buf) {
        Err(TryRecvError::BufferTooSmall { needed, available }) => {
            assert!(needed <= max && needed > available && available == size);
            rx.corrupted(None, "try_recv");
        }
        got => check_recv(rx, got, max, "try_recv"),
    }
}

fn check_recv(rx: &mut Side<Consumer>, got: Result<usize, TryRecvError>, max: usize, what: &str) {
    shmpipe_fuzz::trace!("consumer {what}: {got:?}");
    match got {
        Ok(n) => {
            assert!(n <= max, "{what}: a message of {n} bytes, maximum {max}");
            rx.corrupted(None, what);
        }
        Err(TryRecvError::Corrupted(c)) => {
            rx.corrupted(Some(c), what);
            assert_eq!(rx.side.poisoned(), Some(&c));
        }
        Err(TryRecvError::Empty | TryRecvError::Disconnected) => rx.corrupted(None, what),
        Err(e) => panic!("{what}: {e}"),
    }
}

fn check_send(
    tx: &mut Side<Producer>,
    got: Result<(), TrySendError>,
    len: usize,
    max: usize,
    what: &str,
) {
    shmpipe_fuzz::trace!("producer {what} {len}: {got:?}");
    match got {
        Ok(()) => {
            assert!(len <= max);
            tx.corrupted(None, what);
        }
        Err(TrySendError::TooLarge { len: l, max: m }) => {
            assert!(
                l == len && m == max && len > max,
                "{what}: TooLarge {l} > {m}"
            );
            tx.corrupted(None, what);
        }
        Err(TrySendError::Corrupted(c)) => {
            tx.corrupted(Some(c), what);
            assert_eq!(tx.side.poisoned(), Some(&c));
        }
        Err(TrySendError::Full | TrySendError::Disconnected) => tx.corrupted(None, what),
        // One process, never forked: no handle runs outside its claimer's process.
        Err(e) => panic!("{what}: {e}"),
    }
}

/// Drops both sides (publishing, releasing, closing) and reads the status once more.
fn drop_sides(tx: Option<Side<Producer>>, rx: Option<Side<Consumer>>, ring: &Ring) {
    drop(tx);
    drop(rx);
    let _ = ring.status();
}
