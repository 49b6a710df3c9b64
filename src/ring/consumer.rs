//! The consumer's state machine: find the next record, validate it, copy or lend it, release
//! its slots by publishing the head.
//!
//! The consumer owns the slots between its released head and the last tail it validated, and
//! the consumer line of the header. It re-reads the producer's tail only when its cached copy
//! says the ring is empty. Every tail and record header from the memory is read once into a
//! local and checked against private state before use: a tail that moves backwards or past a
//! ring's worth of slots, a record that is too long, runs off the array or past the tail, of an
//! unknown kind, or padding where padding cannot be, poisons the consumer with [`Corrupted`]:
//! the first error is the answer to every later call.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Memory, wake};
use crate::error::{Corrupted, Corruption, Role, TryRecvError};
use crate::layout::{KIND_MESSAGE, KIND_PADDING};
use crate::sync::{self, copy::copy_from_shared};

/// Where a validated message lies: its first slot counter, its length, and the counter just
/// past it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Record {
    pub(crate) at: u64,
    pub(crate) len: usize,
    pub(crate) next: u64,
}

/// The consumer's private state over the ring memory `R` holds (the channel's region, or a
/// test's heap memory).
pub(crate) struct ConsumerCore<R> {
    mem: Arc<R>,
    /// The identity our owner word holds while we hold the role.
    me: u64,
    /// Whether our process registered for the sleeper's barrier: our wakes may be light
    /// (`crate::sync::barrier`).
    light: bool,
    /// Counter where the next record starts (read position, may be ahead of `released`).
    head: u64,
    /// The head last stored to the shared line.
    released: u64,
    /// The last tail read from the producer's line and validated.
    tail_cache: u64,
    /// Messages consumed.
    received: u64,
    /// The producer's `claims` count as last read: it only grows.
    last_claims: u32,
    /// Whether a producer has been seen (a claim counted, a tail moved or messages recorded as
    /// sent): from then on a claim count of 0 is a rewritten word, not "none has come yet".
    producer_seen: bool,
    /// Sticky error once the producer (or a third writer) broke the protocol.
    poisoned: Option<Corrupted>,
}

impl<R: Deref<Target = Memory>> ConsumerCore<R> {
    /// Starts consuming at the head the line holds, as `me` (the identity in our owner word), waking
    /// the light way if `light` (our process registered for the sleeper's barrier).
    ///
    /// # Errors
    ///
    /// [`Corruption::TailOutOfRange`] if the head and tail are more than a ring apart.
    pub(crate) fn new(mem: Arc<R>, me: u64, light: bool) -> Result<ConsumerCore<R>, Corrupted> {
        let h = mem.header();
        // Our own line, written by whoever held the role before (visible through O1).
        let head = h.consumer.head.load(Ordering::Relaxed);
        // C1 (Acquire): pairs with the producer's Release store of the tail (P2).
        let tail = h.producer.tail.load(Ordering::Acquire);
        mem.check_indices(head, tail)?;
        let received = h.consumer.received.load(Ordering::Relaxed);
        // After the tail (C1): a tail a producer published comes after its claim's increment,
        // so a count read now includes that claim. Both only describe the producer's line to
        // `check_claims`, which validates them.
        // C3 (Acquire): pairs with the claimant's SeqCst increment in `Ring::claim`.
        let claims = h.producer.claims.load(Ordering::Acquire);
        let sent = h.producer.sent.load(Ordering::Relaxed);
        Ok(ConsumerCore {
            mem,
            me,
            light,
            head,
            released: head,
            tail_cache: tail,
            received,
            last_claims: claims,
            producer_seen: claims != 0 || tail != head || sent != 0,
            poisoned: None,
        })
    }

    /// The ring's memory, as held.
    #[inline(always)]
    pub(crate) fn memory(&self) -> &Arc<R> {
        &self.mem
    }

    /// Copies the next message into `buf` and moves the read position past it (its slots are
    /// released by [`ConsumerCore::release`]); returns its length.
    #[inline]
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Result<usize, TryRecvError> {
        let r = self.next()?;
        if buf.len() < r.len {
            return Err(TryRecvError::BufferTooSmall {
                needed: r.len,
                available: buf.len(),
            });
        }
        sync::hook("recv:found");
        self.touch(r);
        let src = self.mem.payload(r.at, r.len);
        let half = sync::hook_split(r.len);
        // SAFETY: `next` validated that the record's slots lie inside the array (live while
        // `mem` is held) and were published; no reference into them exists (guards borrow
        // us). The peer may still write them: the copy is atomic. `buf` is our own memory and
        // at least `len` bytes; `half <= len`.
        unsafe { copy_from_shared(src, &mut buf[..half]) };
        if half != r.len {
            sync::hook("recv:mid-copy");
            // SAFETY: as above, for the rest of the payload.
            unsafe { copy_from_shared(src.add(half), &mut buf[half..r.len]) };
        }
        self.advance(r);
        sync::hook("recv:consumed");
        Ok(r.len)
    }

    /// Finds the next message to be read in place: where it is and a pointer to its payload,
    /// which stays ours until the read position passes it and it is released.
    #[inline]
    pub(crate) fn lend(&mut self) -> Result<(Record, *const u8), TryRecvError> {
        let r = self.next()?;
        self.touch(r);
        Ok((r, self.mem.payload(r.at, r.len)))
    }

    /// Finds and validates the next message, skipping one padding record. Finding is
    /// idempotent until [`ConsumerCore::advance`] consumes the record.
    #[inline]
    pub(crate) fn next(&mut self) -> Result<Record, TryRecvError> {
        // The common case in one pass: a message record below the cached tail that passes
        // every check of `next_slow`. Anything else (an error, padding, the cached tail
        // reached) takes the slow path, with the header words already read.
        let mut read = None;
        if self.poisoned.is_none() && self.head != self.tail_cache {
            let g = self.mem.geometry();
            let at = self.head;
            // Read once; only the locals are used from here on (and passed on below).
            let (len, kind) = self.mem.read_record(at);
            if kind == KIND_MESSAGE && len <= g.max_message {
                let slots = g.record_slots(len);
                if (at & g.mask()) + slots <= g.capacity()
                    && slots <= self.tail_cache.wrapping_sub(at)
                {
                    return Ok(Record {
                        at,
                        len: len as usize,
                        next: at.wrapping_add(slots),
                    });
                }
            }
            read = Some((len, kind));
        }
        self.next_slow(read)
    }

    /// [`ConsumerCore::next`] with every case: errors, padding, the tail re-read when the
    /// cached one is reached. `read` is the record header at the head if the caller read it
    /// (it is not read again).
    #[cold]
    #[inline(never)]
    fn next_slow(&mut self, mut read: Option<(u32, u32)>) -> Result<Record, TryRecvError> {
        if let Some(c) = self.poisoned {
            return Err(TryRecvError::Corrupted(c));
        }
        let g = *self.mem.geometry();
        // At most two rounds: after a padding record the head is at slot 0, where padding is
        // never valid (it would have to cover the whole array, and so more than is published).
        loop {
            if self.head == self.tail_cache {
                let e = self.empty_or_closed();
                if self.head == self.tail_cache || self.poisoned.is_some() {
                    return Err(e);
                }
            }
            let at = self.head;
            let available = self.tail_cache.wrapping_sub(at);
            let pos = at & g.mask();
            // Read once (or taken from the caller, who read it once); only the locals are used
            // from here on.
            let (len, kind) = read.take().unwrap_or_else(|| self.mem.read_record(at));
            match kind {
                KIND_MESSAGE => {
                    if len > g.max_message {
                        return Err(self.poison(Corruption::RecordTooLong {
                            at,
                            len,
                            max: g.max_message,
                        }));
                    }
                    let slots = g.record_slots(len);
                    if pos + slots > g.capacity() {
                        return Err(self.poison(Corruption::RecordOverrunsArray {
                            at,
                            slots,
                            capacity: g.capacity(),
                        }));
                    }
                    if slots > available {
                        return Err(self.poison(Corruption::RecordBeyondTail {
                            at,
                            slots,
                            available,
                        }));
                    }
                    return Ok(Record {
                        at,
                        len: len as usize,
                        next: at.wrapping_add(slots),
                    });
                }
                KIND_PADDING => {
                    let slots = g.capacity() - pos;
                    if slots >= available {
                        return Err(self.poison(Corruption::PaddingWithoutMessage { at }));
                    }
                    let expected = g.padding_len(pos);
                    if len != expected {
                        return Err(self.poison(Corruption::BadPadding { at, len, expected }));
                    }
                    // Padding is skipped privately; its slots are released with the message.
                    self.head = at.wrapping_add(slots);
                }
                kind => return Err(self.poison(Corruption::UnknownKind { at, kind })),
            }
        }
    }

    /// Tells loom that the record's slots are being read (no-op otherwise).
    #[inline(always)]
    pub(crate) fn touch(&self, r: Record) {
        self.mem.access(r.at, r.next.wrapping_sub(r.at), false);
    }

    /// Moves the read position past a record.
    #[inline]
    pub(crate) fn advance(&mut self, r: Record) {
        self.head = r.next;
        self.received = self.received.wrapping_add(1);
    }

    /// Hands the slots read so far back to the producer: one Release store of the head, then
    /// the wake-up if the producer sleeps. A role we lost is not ours to release slots in: then
    /// nothing is released, the consumer is poisoned, and the next call reports it.
    #[inline]
    pub(crate) fn release(&mut self) {
        if self.head != self.released {
            // Our owner word, in the line we are about to write: a hit unless someone wrote it.
            if let Err(c) = self.check_owner() {
                self.poison(c.what);
                return;
            }
            let line = &self.mem.header().consumer;
            // Informational counter; Relaxed, ordered before the head by the Release below.
            line.received.store(self.received, Ordering::Relaxed);
            // C2 (Release): pairs with the producer's Acquire load of the head (P3): our reads
            // of these slots happen before the producer reuses them.
            line.head.store(self.head, sync::sabotage::release());
            self.released = self.head;
            wake(&line.producer_waiting, &line.space_event, self.light);
        }
    }

    /// Whether a record is published beyond our read position (re-reading the tail);
    /// `Err(Disconnected)` if not and the producer closed the ring: the blocking wait's
    /// question.
    pub(crate) fn has_data(&mut self) -> Result<bool, TryRecvError> {
        if let Some(c) = self.poisoned {
            return Err(TryRecvError::Corrupted(c));
        }
        if self.head != self.tail_cache {
            return Ok(true);
        }
        match self.empty_or_closed() {
            // "Empty" also covers "the re-read tail shows new records": look again.
            TryRecvError::Empty => Ok(self.head != self.tail_cache),
            e => Err(e),
        }
    }

    /// Called when the cached tail says empty: re-reads the tail, and if still empty tells
    /// `Empty` from `Disconnected` (no producer attached, one was before).
    #[cold]
    fn empty_or_closed(&mut self) -> TryRecvError {
        // The claim count first, then the owner: a claimant takes the owner word and only then
        // increments the count, so once we see the count, the owner load sees its claim (or a
        // later release). Read the other way round, a producer claiming between the two loads
        // looked like one that had come and gone: a false end of stream before its first send.
        // C3 (Acquire): pairs with the claimant's SeqCst increment in `Ring::claim`.
        let claims = self.mem.header().producer.claims.load(Ordering::Acquire);
        // Against what was seen before this call (not the tail re-read below: a producer
        // claiming and publishing after this load is not an inconsistency).
        if let Err(e) = self.check_claims(claims) {
            return e;
        }
        // O1 (Acquire): pairs with the producer's release of its role, which follows its last
        // publish: if we see it gone, the tail load below sees its final tail.
        let holder = self.mem.header().producer.owner.load(Ordering::Acquire);
        if let Err(e) = self.refresh_tail() {
            return e;
        }
        if self.head != self.tail_cache {
            return TryRecvError::Empty; // not empty after all: the caller looks again
        }
        // Before taking anything for the end of the stream: is the role still ours?
        if let Err(c) = self.check_owner() {
            return self.poison(c.what);
        }
        if holder == 0 && claims != 0 {
            return TryRecvError::Disconnected;
        }
        // A lost file ring reads as all zeros, which can look empty (a tail of 0 where nothing
        // was ever sent): report the loss instead of waiting for ever.
        if self.mem.revoked() {
            return self.lose();
        }
        TryRecvError::Empty
    }

    /// Re-reads the producer's tail and validates it: it may only move forward, and at most a
    /// ring's worth of slots ahead of the released head.
    #[cold]
    fn refresh_tail(&mut self) -> Result<(), TryRecvError> {
        // C1 (Acquire): pairs with the producer's Release store of the tail (P2), making the
        // records below it visible.
        let tail = self.mem.tail().load(Ordering::Acquire);
        let capacity = self.mem.geometry().capacity();
        let ahead = tail.wrapping_sub(self.released);
        let seen = self.tail_cache.wrapping_sub(self.released);
        if ahead > capacity || ahead < seen {
            return Err(self.poison(Corruption::TailOutOfRange {
                tail,
                head: self.released,
                last_tail: self.tail_cache,
                capacity,
            }));
        }
        if tail != self.tail_cache {
            self.producer_seen = true;
        }
        self.tail_cache = tail;
        Ok(())
    }

    /// Checks the producer's claim count, read once by the caller, against what this consumer
    /// saw before (see "A third writer" in docs/DESIGN.md): it never goes down, and it is not 0
    /// once a producer was seen. Either would be another process's write, and taken at face
    /// value would make the consumer wait for ever for a producer that "has not come yet".
    #[cold]
    fn check_claims(&mut self, claims: u32) -> Result<(), TryRecvError> {
        if claims < self.last_claims {
            return Err(self.poison(Corruption::ClaimsBackwards {
                claims,
                last_claims: self.last_claims,
            }));
        }
        if claims == 0 && self.producer_seen {
            let sent = self.mem.header().producer.sent.load(Ordering::Relaxed);
            return Err(self.poison(Corruption::PublishedWithoutClaim {
                tail: self.tail_cache,
                sent,
            }));
        }
        self.last_claims = claims;
        self.producer_seen |= claims != 0;
        Ok(())
    }

    /// Whether our owner word still holds our identity (see [`Memory::check_owner`]); the
    /// error is the word's, the poisoning is the caller's.
    #[inline]
    pub(crate) fn check_owner(&self) -> Result<(), Corrupted> {
        self.mem.check_owner(Role::Consumer, self.me)
    }

    /// Poisons the consumer with `what` (or with the loss of the memory, if it was revoked),
    /// unless it is poisoned already: the first error stays the answer (a release or close
    /// that finds the owner word changed after an earlier poisoning must not replace it).
    #[cold]
    pub(crate) fn poison(&mut self, what: Corruption) -> TryRecvError {
        if let Some(c) = self.poisoned {
            return TryRecvError::Corrupted(c);
        }
        let c = self.mem.corrupted(what);
        self.poisoned = Some(c);
        TryRecvError::Corrupted(c)
    }

    /// Poisons the consumer because its memory vanished (see [`Memory::revoked`]), unless it is
    /// poisoned already.
    #[cold]
    pub(crate) fn lose(&mut self) -> TryRecvError {
        self.poison(self.mem.lost().what)
    }

    /// The error that poisoned the consumer, if any.
    #[inline]
    pub(crate) fn poisoned(&self) -> Option<&Corrupted> {
        self.poisoned.as_ref()
    }

    /// The read position: the ring is empty while the tail is there.
    #[inline]
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// Slots read and not yet released.
    #[inline]
    pub(crate) fn unreleased_slots(&self) -> u64 {
        self.head.wrapping_sub(self.released)
    }

    /// Whether a producer has been seen (see the field).
    #[inline]
    pub(crate) fn producer_seen(&self) -> bool {
        self.producer_seen
    }

    /// The private indices, for `Debug`: `(head, released, tail_cache)`.
    pub(crate) fn indices(&self) -> (u64, u64, u64) {
        (self.head, self.released, self.tail_cache)
    }
}
