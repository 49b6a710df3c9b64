//! `hostile`: an honest side against a side whose every read of the shared memory goes through
//! a scripted hostile peer (`shmpipe::__fuzz::attack`): just before each read of an index, a
//! record header word or any other shared word, the script may rewrite it (keep it, set any
//! value, add a small delta, flip a bit, or pick a value near a boundary: old ± 1, u64::MAX,
//! the capacity edges, the maximum message, padding lengths, unknown kinds). The memory
//! returns a different value each time it is read.
//!
//! Mode `Consumer`: an honest producer against a consumer under attack. Mode `Producer`: an
//! honest consumer against a producer under attack (RELIABILITY case 8).
//!
//! Checks, beyond "no panic, no out-of-bounds access (the heap ring's slot array is allocated
//! to its exact size, so AddressSanitizer sees any access past it), no hang":
//! - while the script has changed nothing, both sides match the reference model exactly;
//! - afterwards, every message is at most the maximum, every error is typed, and `Corrupted`,
//!   once returned by a side, is returned by every later call of that side;
//! - producer under attack: unless the script served a `head` that lies ahead of what the
//!   honest consumer released yet within what was published (a lie the protocol cannot tell
//!   from the truth), the producer never reports room the model does not have (it never
//!   overwrites unconsumed data), and the honest consumer receives exactly the messages sent;
//! - the role words (DESIGN.md, "A third writer"): a side served its own `owner` word holding
//!   anything but its identity is poisoned by the end of that call (`RoleLost`, or an earlier
//!   `Corrupted`), and a consumer served a producer `claims` count below one it was served
//!   before (the honest producer claimed once before the consumer attached, so 0 included) is
//!   poisoned too (`ClaimsBackwards`, `PublishedWithoutClaim`). The "other" attack list is the
//!   one that reaches these words, with `sent`, `consumer_closed` and the futex words.
#![no_main]

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shmpipe::__fuzz::{Access, Hook, Word, WordMap, attack};
use shmpipe::{
    Consumer, Corrupted, Corruption, Heap, Producer, RecvError, Ring, SendError, TryRecvError,
    TrySendError, WaitStrategy,
};
use shmpipe_fuzz::{Attack, Finish, HostileInput, Len, Mode, Model, RecvFail, SendFail, Step};

fuzz_target!(|input: HostileInput| run(input));

/// The hostile peer's script and what it has done so far.
struct Script {
    mode: Mode,
    index: Vec<Attack>,
    records: Vec<Attack>,
    other: Vec<Attack>,
    /// How many of each list were used.
    used: [usize; 3],
    /// Attacks apply only while the side under test runs.
    armed: bool,
    /// Some read returned a value other than what the memory held.
    modified: bool,
    /// The producer under attack was served a head ahead of the honest consumer's, within the
    /// published tail: it may then overwrite unconsumed records, as the protocol allows.
    licensed: bool,
    /// The honest consumer's stored head (producer mode).
    real_head: u64,
    /// The last tail (consumer mode) or head (producer mode) the side under attack must have
    /// accepted, by the protocol's rule for a new index.
    index_cache: u64,
    /// The first index served that the rule rejects: the side must be poisoned by it.
    violation: Option<u64>,
    /// The side's own owner word as the memory held it at its first read: its identity.
    identity: Option<u64>,
    /// The largest producer claim count served to the consumer under attack (1 at its attach).
    claims_floor: u64,
    /// Why the side under attack must be poisoned by the end of the current step.
    must_poison: Option<String>,
    /// The side's own owner word was served (and so stored) as something else: the honest
    /// peer may now see the role released, e.g. the producer's as its close (end of stream:
    /// the limit documented in DESIGN.md, "A third writer").
    owner_changed: bool,
    map: WordMap,
    ring: Ring,
    max: u64,
}

impl Script {
    fn next(&mut self, list: usize) -> Attack {
        let attacks = match list {
            0 => &self.index,
            1 => &self.records,
            _ => &self.other,
        };
        let a = attacks
            .get(self.used[list])
            .copied()
            .unwrap_or(Attack::Keep);
        self.used[list] += 1;
        a
    }

    /// A value near a boundary of what `word` may hold.
    fn near(&self, word: Word, k: u8, old: u64) -> u64 {
        let s = self.ring.status(); // not hooked: the hook is out while it runs
        let cap = self.ring.slot_count() as u64;
        let ss = self.ring.slot_size() as u64;
        let (t, h) = (s.tail, s.head);
        let pad = |slot: u64| (cap - slot) * ss - 8;
        let c: [u64; 8] = match word {
            Word::Tail => [
                h.wrapping_add(cap),
                h.wrapping_add(cap + 1),
                h.wrapping_sub(1),
                old.wrapping_add(1),
                old.wrapping_sub(1),
                u64::MAX,
                old.wrapping_add(cap),
                h,
            ],
            Word::Head => [
                t,
                t.wrapping_add(1),
                old.wrapping_sub(1),
                old.wrapping_add(1),
                old.wrapping_sub(cap),
                u64::MAX,
                t.wrapping_sub(cap + 1),
                0,
            ],
            Word::RecordLen { slot } => [
                self.max,
                self.max + 1,
                pad(slot),
                pad(slot) + 1,
                pad(slot).wrapping_sub(1),
                ss - 8,
                ss - 7,
                u64::from(u32::MAX),
            ],
            Word::RecordKind { .. } => [0, 1, 2, 3, 2, 1, u64::from(u32::MAX), 0],
            _ => [
                0,
                1,
                old.wrapping_add(1),
                old.wrapping_sub(1),
                u64::MAX,
                old ^ 1,
                2,
                u64::from(u32::MAX),
            ],
        };
        c[usize::from(k % 8)]
    }

    fn on_read(&mut self, a: &Access) -> Option<u64> {
        if !self.armed {
            return None;
        }
        let word = self.map.classify(a.addr)?;
        let list = match word {
            Word::Tail | Word::Head => 0,
            Word::RecordLen { .. } | Word::RecordKind { .. } => 1,
            _ => 2,
        };
        let new = match self.next(list) {
            Attack::Keep => None,
            Attack::Set(v) => Some(v),
            Attack::Add(d) => Some(a.value.wrapping_add(i64::from(d) as u64)),
            Attack::Flip(b) => Some(a.value ^ (1 << (u32::from(b) % a.bits))),
            Attack::Near(k) => Some(self.near(word, k, a.value)),
        };
        let mask = if a.bits == 32 {
            u64::from(u32::MAX)
        } else {
            u64::MAX
        };
        let new = new.map(|v| v & mask);
        let served = new.unwrap_or(a.value);
        if served != a.value {
            shmpipe_fuzz::trace!("  attack: {word:?} {:#x} -> {served:#x}", a.value);
        }
        if served != a.value {
            self.modified = true;
        }
        if self.mode == Mode::Producer && word == Word::Head {
            let real = self.real_head;
            let published = self.ring.status().tail;
            if served != real && served.wrapping_sub(real) <= published.wrapping_sub(real) {
                self.licensed = true;
            }
        }
        self.judge_index(word, served);
        self.judge_role_words(word, a.value, served);
        new
    }

    /// The oracle for the role words (see the module documentation): which served values the
    /// side under attack must not survive.
    fn judge_role_words(&mut self, word: Word, held: u64, served: u64) {
        if self.must_poison.is_some() {
            return;
        }
        let own = match self.mode {
            Mode::Consumer => Word::Consumer("owner"),
            Mode::Producer => Word::Producer("owner"),
        };
        if word == own {
            // Only the hook writes a role's owner word here, and the first read of it is
            // where an attack on it can first happen: the memory still held the identity.
            let me = *self.identity.get_or_insert(held);
            if served != me {
                self.owner_changed = true;
                self.must_poison = Some(format!("its owner word read {served:#x}, not {me:#x}"));
            }
        }
        if self.mode == Mode::Consumer && word == Word::Producer("claims") {
            if served < self.claims_floor {
                self.must_poison = Some(format!(
                    "the producer's claims read {served} after {}",
                    self.claims_floor
                ));
            } else {
                self.claims_floor = served;
            }
        }
    }

    /// The oracle for RELIABILITY cases 6 and 8: applies the protocol's rule for a new index
    /// (DESIGN.md, "Validating the peer's counter") to the value served, independently of the
    /// code under test. The side's own line is not attacked, so the counters the rule needs
    /// (the consumer's released head, the producer's published tail) are what the memory holds.
    fn judge_index(&mut self, word: Word, served: u64) {
        if self.violation.is_some() {
            return;
        }
        let s = self.ring.status();
        let cache = self.index_cache;
        let valid = match (self.mode, word) {
            (Mode::Consumer, Word::Tail) => {
                let ahead = served.wrapping_sub(s.head);
                ahead <= self.ring.slot_count() as u64 && ahead >= cache.wrapping_sub(s.head)
            }
            (Mode::Producer, Word::Head) => {
                served.wrapping_sub(cache) <= s.tail.wrapping_sub(cache)
            }
            _ => return,
        };
        if valid {
            self.index_cache = served;
        } else {
            self.violation = Some(served);
        }
    }
}

/// A send's outcome, whatever the call.
#[derive(Debug)]
enum Sent {
    Full,
    TooLarge(usize, usize),
    Disconnected,
    Corrupted(Corrupted),
}

impl From<TrySendError> for Sent {
    fn from(e: TrySendError) -> Sent {
        match e {
            TrySendError::Full => Sent::Full,
            TrySendError::TooLarge { len, max } => Sent::TooLarge(len, max),
            TrySendError::Disconnected => Sent::Disconnected,
            TrySendError::Corrupted(c) => Sent::Corrupted(c),
            // One process, never forked: no handle runs outside its claimer's process.
            e => panic!("{e:?}"),
        }
    }
}

impl From<SendError> for Sent {
    fn from(e: SendError) -> Sent {
        match e {
            SendError::Timeout => Sent::Full,
            SendError::TooLarge { len, max } => Sent::TooLarge(len, max),
            SendError::Disconnected => Sent::Disconnected,
            SendError::Corrupted(c) => Sent::Corrupted(c),
            e => panic!("{e:?}"),
        }
    }
}

/// A receive's outcome, whatever the call.
#[derive(Debug)]
enum Got {
    TooSmall(usize, usize),
    Empty,
    Disconnected,
    Corrupted(Corrupted),
}

impl From<TryRecvError> for Got {
    fn from(e: TryRecvError) -> Got {
        match e {
            TryRecvError::Empty => Got::Empty,
            TryRecvError::Disconnected => Got::Disconnected,
            TryRecvError::BufferTooSmall { needed, available } => Got::TooSmall(needed, available),
            TryRecvError::Corrupted(c) => Got::Corrupted(c),
            e => panic!("{e:?}"),
        }
    }
}

impl From<RecvError> for Got {
    fn from(e: RecvError) -> Got {
        match e {
            RecvError::Timeout => Got::Empty,
            RecvError::Disconnected => Got::Disconnected,
            RecvError::BufferTooSmall { needed, available } => Got::TooSmall(needed, available),
            RecvError::Corrupted(c) => Got::Corrupted(c),
            e => panic!("{e:?}"),
        }
    }
}

/// One run: the ring, both sides, the model, and the script.
struct World {
    ring: Ring,
    model: Model,
    script: Rc<RefCell<Script>>,
    tx_poison: Option<Corrupted>,
    rx_poison: Option<Corrupted>,
}

fn run(input: HostileInput) {
    let ring = Ring::create(Heap, &input.shape.config()).expect("the shape is valid");
    let mut tx = ring.producer().expect("producer");
    let mut rx = ring.consumer().expect("consumer");
    tx.set_wait_strategy(WaitStrategy::Spin);
    rx.set_wait_strategy(WaitStrategy::Spin);
    let script = Rc::new(RefCell::new(Script {
        mode: input.mode,
        index: input.index,
        records: input.records,
        other: input.other,
        used: [0; 3],
        armed: false,
        modified: false,
        licensed: false,
        real_head: 0,
        index_cache: input.shape.initial_index(),
        violation: None,
        identity: None,
        claims_floor: 1,
        must_poison: None,
        owner_changed: false,
        map: WordMap::of(&ring),
        ring: ring.clone(),
        max: ring.max_message() as u64,
    }));
    let hook: Hook = {
        let script = script.clone();
        Box::new(move |a: &Access| script.borrow_mut().on_read(a))
    };
    let guard = attack(hook);
    let mut w = World {
        model: Model::new(&ring, input.shape.initial_index()),
        ring,
        script,
        tx_poison: None,
        rx_poison: None,
    };
    for step in input.steps {
        let by_producer = step.is_producer();
        {
            let mut s = w.script.borrow_mut();
            s.armed = by_producer == (s.mode == Mode::Producer);
            s.real_head = w.model.released;
        }
        if by_producer {
            w.producer_step(&mut tx, step);
        } else {
            w.consumer_step(&mut rx, step);
        }
        w.script.borrow_mut().armed = false;
        let poisoned = match input.mode {
            Mode::Producer => tx.poisoned(),
            Mode::Consumer => rx.poisoned(),
        };
        w.check_index_oracle(poisoned.copied());
        if let Some(why) = &w.script.borrow().must_poison {
            assert!(
                poisoned.is_some(),
                "the side under attack goes on although {why}"
            );
        }
    }
    drop(guard);
    drop((tx, rx));
}

impl World {
    fn len(&self, l: Len) -> usize {
        self.model.len(l)
    }

    /// Whether the producer's outcomes must match the model exactly.
    fn producer_exact(&self) -> bool {
        !self.script.borrow().modified
    }

    /// Whether the consumer's outcomes must match the model exactly.
    fn consumer_exact(&self) -> bool {
        let s = self.script.borrow();
        match s.mode {
            Mode::Consumer => !s.modified,
            Mode::Producer => !s.licensed && !s.owner_changed,
        }
    }

    fn producer_step(&mut self, tx: &mut Producer, step: Step) {
        match step {
            Step::Send(l) => {
                let len = self.len(l);
                let data = self.model.new_message(len);
                let got = tx.try_send(&data).map_err(Sent::from);
                self.sent(tx, got, data, true);
            }
            Step::SendTimeout(l) => {
                let len = self.len(l);
                let data = self.model.new_message(len);
                let got = tx.send_timeout(&data, Duration::ZERO).map_err(Sent::from);
                self.sent(tx, got, data, true);
            }
            Step::Reserve(l, f) => {
                let len = self.len(l);
                let mut data = self.model.new_message(len);
                let got = match tx.try_reserve(len) {
                    Ok(mut g) => {
                        assert_eq!(g.len(), len);
                        g.copy_from_slice(&data);
                        match f {
                            Finish::Commit => g.commit(),
                            Finish::Short(v) => {
                                let n = usize::from(v) % (len + 1);
                                g.commit_len(n);
                                data.truncate(n);
                            }
                            Finish::Drop => {
                                // The grant is discarded (nothing sent): only check that the
                                // claim agreed with the model.
                                self.check_room(len);
                                return;
                            }
                        }
                        Ok(())
                    }
                    Err(e) => Err(Sent::from(e)),
                };
                let claimed = self.len(l);
                self.sent_claimed(tx, got, data, claimed, true);
            }
            Step::SendBatch(lens) => {
                let mut batch = tx.batch();
                let mut results = Vec::new();
                for l in lens {
                    let len = self.len(l);
                    let data = self.model.new_message(len);
                    let got = batch.try_send(&data).map_err(Sent::from);
                    results.push((got, data));
                }
                drop(batch);
                // The batch was published when full and when dropped: replaying the outcomes
                // into the model in order, with a publish after each Full, ends in the same
                // state (nothing else happened meanwhile).
                for (got, data) in results {
                    let full = matches!(got, Err(Sent::Full));
                    self.sent(tx, got, data, false);
                    if full {
                        self.model.publish();
                    }
                }
                self.model.publish();
                self.check_counters();
            }
            _ => unreachable!("a consumer step"),
        }
    }

    /// Checks a send of `data` (its whole length claimed); `publish`: it was published.
    fn sent(&mut self, tx: &Producer, got: Result<(), Sent>, data: Vec<u8>, publish: bool) {
        let len = data.len();
        self.sent_claimed(tx, got, data, len, publish);
    }

    /// Whether a successful claim must have had room by the model: always while nothing was
    /// attacked, and for the producer under attack unless it was served a licensed lie.
    fn room_checked(&self) -> bool {
        let s = self.script.borrow();
        !s.modified || (s.mode == Mode::Producer && !s.licensed)
    }

    /// A claim of `claimed` bytes succeeded and its grant was dropped.
    fn check_room(&mut self, claimed: usize) {
        if self.room_checked() {
            assert!(
                self.model.claim(claimed).is_ok(),
                "reserve({claimed}) beyond the model"
            );
        }
    }

    /// Checks a send that claimed `claimed` bytes and, if it succeeded, wrote `data`.
    fn sent_claimed(
        &mut self,
        tx: &Producer,
        got: Result<(), Sent>,
        data: Vec<u8>,
        claimed: usize,
        publish: bool,
    ) {
        let max = self.model.max;
        shmpipe_fuzz::trace!("producer: {claimed} bytes: {got:?}");
        if let Some(before) = self.tx_poison {
            match got {
                Err(Sent::Corrupted(c)) => assert_eq!(c, before, "producer: Corrupted changed"),
                other => panic!("producer: not sticky: {before} forgotten: {other:?}"),
            }
            return;
        }
        let want = self.model.claim(claimed);
        let exact = self.producer_exact();
        let room_check = self.room_checked();
        match got {
            Ok(()) => {
                assert!(claimed <= max, "sent {claimed} bytes, maximum {max}");
                match want {
                    Ok(at) => {
                        self.model.finish(at, data);
                        if publish {
                            self.model.publish();
                        }
                    }
                    // Only after a lie the protocol cannot detect may the producer find room
                    // the model does not have: otherwise it would overwrite unconsumed data.
                    Err(f) => assert!(
                        !room_check,
                        "producer sent {claimed} bytes where the model says {f:?}"
                    ),
                }
            }
            Err(Sent::Corrupted(c)) => {
                assert!(!exact, "producer Corrupted with no attack: {c}");
                assert_eq!(tx.poisoned(), Some(&c));
                self.tx_poison = Some(c);
            }
            Err(Sent::TooLarge(l, m)) => {
                assert!(
                    l == claimed && m == max && claimed > max,
                    "TooLarge({l}, {m})"
                );
                if exact {
                    assert_eq!(want.err(), Some(SendFail::TooLarge));
                }
            }
            Err(e @ (Sent::Full | Sent::Disconnected)) => {
                if exact {
                    let expected = match e {
                        Sent::Full => SendFail::Full,
                        _ => SendFail::Disconnected,
                    };
                    assert_eq!(want.err(), Some(expected), "producer {e:?}");
                }
            }
        }
    }

    fn consumer_step(&mut self, rx: &mut Consumer, step: Step) {
        let max = self.model.max;
        match step {
            Step::Recv(b) => {
                let mut buf = vec![0xa5; b.resolve(max)];
                let got = match rx.try_recv(&mut buf) {
                    Ok(n) => Ok(buf[..n].to_vec()),
                    Err(e) => Err(Got::from(e)),
                };
                self.got(rx, got, buf.len(), true);
            }
            Step::Read => {
                let got = match rx.try_lend() {
                    Ok(g) => Ok(g.to_vec()),
                    Err(e) => Err(Got::from(e)),
                };
                self.got(rx, got, max, true);
            }
            Step::RecvTimeout => {
                let mut buf = vec![0; max];
                let got = match rx.recv_timeout(&mut buf, Duration::ZERO) {
                    Ok(n) => Ok(buf[..n].to_vec()),
                    Err(e) => Err(Got::from(e)),
                };
                self.got(rx, got, max, true);
            }
            Step::RecvBatch(n) => {
                let mut batch = rx.batch();
                let mut results = Vec::new();
                for _ in 0..=n % 8 {
                    let got = match batch.try_lend() {
                        Ok(g) => Ok(g.to_vec()),
                        Err(e) => Err(Got::from(e)),
                    };
                    let stop = got.is_err();
                    results.push(got);
                    if stop {
                        break;
                    }
                }
                drop(batch);
                for got in results {
                    self.got(rx, got, max, false);
                }
                if self.consumer_exact() {
                    self.model.release();
                }
                self.check_counters();
            }
            _ => unreachable!("a producer step"),
        }
    }

    /// Checks a receive into a buffer of `room` bytes; `release`: it released at once.
    fn got(&mut self, rx: &Consumer, got: Result<Vec<u8>, Got>, room: usize, release: bool) {
        let max = self.model.max;
        shmpipe_fuzz::trace!("consumer: {:?}", got.as_ref().map(Vec::len));
        if let Some(before) = self.rx_poison {
            match got {
                Err(Got::Corrupted(c)) => assert_eq!(c, before, "consumer: Corrupted changed"),
                other => panic!("consumer: not sticky: {before} forgotten: {other:?}"),
            }
            return;
        }
        if let Ok(m) = &got {
            assert!(
                m.len() <= max && m.len() <= room,
                "received {} bytes",
                m.len()
            );
        }
        if let Err(Got::TooSmall(needed, available)) = got {
            assert!(needed <= max && needed > available && available == room);
        }
        if let Err(Got::Corrupted(c)) = got {
            assert_eq!(rx.poisoned(), Some(&c));
            self.rx_poison = Some(c);
        }
        if !self.consumer_exact() {
            return;
        }
        match (self.model.next_message(), got) {
            (Ok(m), Ok(data)) => {
                assert_eq!(data, m, "received content");
                self.model.consume();
                if release {
                    self.model.release();
                }
            }
            (Ok(m), Err(Got::TooSmall(needed, _))) => assert_eq!(needed, m.len()),
            (Err(RecvFail::Empty), Err(Got::Empty))
            | (Err(RecvFail::Disconnected), Err(Got::Disconnected)) => {}
            (want, got) => panic!("consumer: model {want:?}, ring {got:?}"),
        }
        if release {
            self.check_counters();
        }
    }

    /// The side under attack was poisoned by exactly the first out-of-range index it was
    /// served, and never by an index the rule accepts; its own counter stays within what the
    /// accepted peer index allows.
    fn check_index_oracle(&self, poisoned: Option<Corrupted>) {
        let violation = self.script.borrow().violation;
        let rejected = poisoned.and_then(|c| match c.what {
            Corruption::TailOutOfRange { tail, .. } => Some(tail),
            Corruption::HeadOutOfRange { head, .. } => Some(head),
            _ => None,
        });
        match (violation, poisoned) {
            (Some(v), Some(c)) => assert_eq!(rejected, Some(v), "served index {v:#x}, got {c}"),
            (Some(v), None) => panic!("out-of-range index {v:#x} accepted"),
            (None, Some(c)) => assert!(rejected.is_none(), "in-range index rejected: {c}"),
            (None, None) => {}
        }
        // The side's own counter never passes what the accepted peer index allows: the
        // consumer releases nothing beyond the last tail it accepted (no record read past the
        // tail), and the producer publishes nothing beyond the last head it accepted plus the
        // capacity (no unconsumed slot overwritten, by its own view of the head).
        let s = self.ring.status();
        let cache = self.script.borrow().index_cache;
        let cap = self.model.cap;
        match self.script.borrow().mode {
            Mode::Consumer => assert!(
                cache.wrapping_sub(s.head) <= cap,
                "consumer released head {:#x} past the accepted tail {cache:#x}",
                s.head
            ),
            Mode::Producer => assert!(
                s.tail.wrapping_sub(cache) <= cap,
                "producer published tail {:#x} more than a ring past the accepted head {cache:#x}",
                s.tail
            ),
        }
    }

    /// While nothing was attacked, the shared counters are what the model says.
    fn check_counters(&self) {
        if self.producer_exact() && self.consumer_exact() {
            // The harness's own reads are not attacked.
            let armed = std::mem::replace(&mut self.script.borrow_mut().armed, false);
            let s = self.ring.status();
            self.script.borrow_mut().armed = armed;
            assert_eq!(
                (s.tail, s.head),
                (self.model.published, self.model.released)
            );
        }
    }
}
