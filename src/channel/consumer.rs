//! The consumer's half of the protocol: find the next record, validate it, copy or lend it,
//! release its slots by publishing the head.
//!
//! The consumer owns the slots between its released head and the last tail it validated, and
//! the consumer line of the header. It re-reads the producer's tail only when its cached copy
//! says the ring is empty. Every tail and record header from the segment is read once into a
//! local and checked against private state before use: a tail that moves backwards or past a
//! ring's worth of slots, a record that is too long, runs off the array or past the tail, of an
//! unknown kind, or padding where padding cannot be, poisons the consumer with [`Corrupted`].

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::check_indices;
use super::roles::{check_own_role, check_process, give_back_role, holder_liveness};
use crate::channel::process::{self as owner, Identity, Liveness};
use crate::channel::region::Region;
use crate::channel::views::{self as shared, RingSlice};
use crate::channel::wait::{self, Deadline, WaitStrategy, Waiter};
use crate::error::{Corrupted, Corruption, Error, RecvError, Role, TryRecvError, WrongProcess};
use crate::layout::{KIND_MESSAGE, KIND_PADDING};
use crate::ring::{sleep_for_data, wake};
use crate::sync;

/// The receiving side of a ring. `Send` but not `Sync` or `Clone`: exactly one consumer exists
/// per ring, enforced across processes.
///
/// Dropping it releases any slots a batch still held and gives the consumer role back.
///
/// The role belongs to the process that claimed it. A child forked while the consumer exists
/// inherits a copy that it cannot use: every operation fails with
/// [`WrongProcess`](crate::WrongProcess) (receiving nothing), a guard or batch it inherited
/// releases nothing, and dropping it does nothing to the ring (the parent still holds the role
/// and the producer is not told of any close). The child may claim a free role of its own.
///
/// # Examples
///
/// ```
/// use shmpipe::{Heap, Ring, RingConfig, TryRecvError};
/// let ring = Ring::create(Heap, &RingConfig::new())?;
/// let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
/// let mut buf = [0u8; 16];
/// assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Empty));
/// tx.try_send(b"ping").unwrap();
/// assert_eq!(rx.try_recv(&mut buf), Ok(4));
/// # Ok::<(), shmpipe::Error>(())
/// ```
pub struct Consumer {
    region: Arc<Region>,
    /// Counter where the next record starts (read position, may be ahead of `released`).
    head: u64,
    /// The head last stored to the shared line.
    released: u64,
    /// The last tail read from the producer's line and validated.
    tail_cache: u64,
    /// Messages consumed.
    received: u64,
    /// Sticky error once the producer broke the protocol.
    poisoned: Option<Corrupted>,
    /// Our identity, written into the owner word: the process that claimed the role. In any
    /// other process (a forked child) every operation fails and drop does nothing.
    me: Identity,
    /// How blocking calls wait.
    strategy: WaitStrategy,
    /// The message being read as a byte stream (`Read`/`BufRead`) and how far into it.
    partial: Option<(Record, usize)>,
    /// The producer's `claims` count as last read: it only grows.
    last_claims: u32,
    /// Whether a producer has been seen (a claim counted, a tail moved or messages recorded as
    /// sent): from then on a claim count of 0 is a rewritten word, not "none has come yet".
    producer_seen: bool,
    /// [`Consumer::close`] ran: the drop has nothing left to do.
    closed: bool,
    /// `BufRead`'s private copy of the message in `partial`, when `buffered` says it holds it
    /// (reused from message to message; never shrunk).
    stream_buf: Vec<u8>,
    /// Whether `stream_buf` holds the payload of the message in `partial`.
    buffered: bool,
    /// Whether `fill_buf` may lend the ring's bytes instead of a copy
    /// ([`Consumer::trust_peer_for_buf_read`]).
    trust_peer: bool,
    _not_sync: PhantomData<Cell<()>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("ring", &self.region.ident())
            .field("head", &self.head)
            .field("released", &self.released)
            .field("tail_cache", &self.tail_cache)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

/// Where a validated message lies: its first slot counter, its length, and the counter just
/// past it.
#[derive(Clone, Copy)]
struct Record {
    at: u64,
    len: usize,
    next: u64,
}

impl Consumer {
    pub(super) fn new(region: Arc<Region>, me: Identity) -> Result<Consumer, Error> {
        let h = region.header();
        // Our own line, written by whoever held the role before (visible through O1).
        let head = h.consumer.head.load(Ordering::Relaxed);
        // C1 (Acquire): pairs with the producer's Release store of the tail (P2).
        let tail = h.producer.tail.load(Ordering::Acquire);
        check_indices(&region, head, tail)?;
        let received = h.consumer.received.load(Ordering::Relaxed);
        // After the tail (C1): a tail a producer published comes after its claim's increment,
        // so a count read now includes that claim. Both only describe the producer's line to
        // `check_claims`, which validates them.
        // C3 (Acquire): pairs with the claimant's SeqCst increment in `Ring::claim`.
        let claims = h.producer.claims.load(Ordering::Acquire);
        let sent = h.producer.sent.load(Ordering::Relaxed);
        Ok(Consumer {
            region,
            head,
            released: head,
            tail_cache: tail,
            received,
            poisoned: None,
            me,
            strategy: WaitStrategy::default(),
            partial: None,
            last_claims: claims,
            producer_seen: claims != 0 || tail != head || sent != 0,
            closed: false,
            stream_buf: Vec::new(),
            buffered: false,
            trust_peer: false,
            _not_sync: PhantomData,
        })
    }

    /// Receives the next message into `buf` (one copy out of the ring) and returns its length.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] if no message waits; [`TryRecvError::Disconnected`] if none
    /// waits and the producer closed the ring; [`TryRecvError::BufferTooSmall`] if it does
    /// not fit in `buf` (it stays in the ring: use a buffer of [`Consumer::max_message`]
    /// bytes, or [`Consumer::try_lend`]); [`TryRecvError::Corrupted`] if the producer broke the
    /// protocol (sticky).
    #[inline]
    pub fn try_recv(&mut self, buf: &mut [u8]) -> Result<usize, TryRecvError> {
        let len = self.copy_next(buf)?;
        self.release_read();
        sync::hook("recv:released");
        Ok(len)
    }

    /// Receives the next message into `out`, replacing its contents, and returns its length.
    ///
    /// # Errors
    ///
    /// As [`Consumer::try_recv`], except that the buffer is never too small.
    pub fn try_recv_vec(&mut self, out: &mut Vec<u8>) -> Result<usize, TryRecvError> {
        let msg = self.try_lend()?;
        Ok(copy_into_vec(msg, out))
    }

    /// [`Consumer::try_recv_vec`], waiting for a message as the [`WaitStrategy`] says.
    ///
    /// # Errors
    ///
    /// As [`Consumer::recv`], except that the buffer is never too small.
    pub fn recv_vec(&mut self, out: &mut Vec<u8>) -> Result<usize, RecvError> {
        let msg = self.lend()?;
        Ok(copy_into_vec(msg, out))
    }

    /// [`Consumer::recv_vec`], giving up after `timeout` with [`RecvError::Timeout`].
    ///
    /// # Errors
    ///
    /// As [`Consumer::recv_timeout`], except that the buffer is never too small.
    pub fn recv_vec_timeout(
        &mut self,
        out: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<usize, RecvError> {
        let msg = self.lend_timeout(timeout)?;
        Ok(copy_into_vec(msg, out))
    }

    /// Lends the next message in place (zero copy), if one is waiting. Its slots are released
    /// when the guard is dropped.
    ///
    /// # Errors
    ///
    /// As [`Consumer::try_recv`], except that the buffer is never too small.
    #[inline]
    pub fn try_lend(&mut self) -> Result<ReadGuard<'_>, TryRecvError> {
        self.lend_next(true)
    }

    /// Receives the next message into `buf`, waiting for one as the [`WaitStrategy`] says.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] once the producer closed the ring and every message was
    /// received (end of stream); [`RecvError::PeerDied`] once its process died (confirmed by
    /// the kernel, noticed within about 10 ms) and every message it published was received;
    /// [`RecvError::BufferTooSmall`]; [`RecvError::Corrupted`].
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, RecvError> {
        self.recv_until(buf, None)
    }

    /// [`Consumer::recv`], giving up after `timeout` with [`RecvError::Timeout`].
    ///
    /// # Errors
    ///
    /// As [`Consumer::recv`], and [`RecvError::Timeout`].
    pub fn recv_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, RecvError> {
        self.recv_until(buf, Some(timeout))
    }

    /// [`Consumer::try_lend`], waiting for a message as the [`WaitStrategy`] says. (Not
    /// `read`: that is [`std::io::Read::read`], the byte stream.)
    ///
    /// # Errors
    ///
    /// As [`Consumer::recv`], except that the buffer is never too small.
    pub fn lend(&mut self) -> Result<ReadGuard<'_>, RecvError> {
        self.lend_until(None)
    }

    /// [`Consumer::lend`], giving up after `timeout` with [`RecvError::Timeout`].
    ///
    /// # Errors
    ///
    /// As [`Consumer::recv_timeout`], except that the buffer is never too small.
    pub fn lend_timeout(&mut self, timeout: Duration) -> Result<ReadGuard<'_>, RecvError> {
        self.lend_until(Some(timeout))
    }

    fn lend_until(&mut self, timeout: Option<Duration>) -> Result<ReadGuard<'_>, RecvError> {
        self.next_until(timeout)?;
        // A message is there: `next` finds it again (finding is idempotent until consumed).
        self.lend_next(true).map_err(RecvError::from)
    }

    /// Waits for the next message and returns where it is, without consuming it.
    fn next_until(&mut self, timeout: Option<Duration>) -> Result<Record, RecvError> {
        // The clock is read only once the ring is found empty.
        let mut deadline = None;
        loop {
            match self.next() {
                Ok(r) => return Ok(r),
                Err(TryRecvError::Empty) => {
                    let d = *deadline.get_or_insert_with(|| Deadline::after(timeout));
                    self.wait_for_data(d)?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// How blocking calls wait (default [`WaitStrategy::SpinThenSleep`]).
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// One sleep of the consumer that owns nothing borrowed, for the async consumer to run on
    /// tokio's blocking pool: [`sleep_for_data`] on this ring from the current read position.
    /// Call it after `try_recv` found the ring empty.
    #[cfg(feature = "tokio")]
    pub(crate) fn data_sleeper(&self) -> impl FnOnce(Duration) + Send + 'static {
        let (region, head) = (self.region.clone(), self.head);
        move |slice| sleep_for_data(&region, head, slice)
    }

    fn recv_until(
        &mut self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<usize, RecvError> {
        // The clock is read only once the ring is found empty: a receive that finds a message
        // costs no more with a timeout than without.
        let mut deadline = None;
        loop {
            match self.try_recv(buf) {
                Err(TryRecvError::Empty) => {
                    let d = *deadline.get_or_insert_with(|| Deadline::after(timeout));
                    self.wait_for_data(d)?;
                }
                other => return other.map_err(RecvError::from),
            }
        }
    }

    /// Waits until a message is published, the producer goes away, or the deadline.
    #[cold]
    fn wait_for_data(&mut self, deadline: Deadline) -> Result<(), RecvError> {
        let strategy = self.strategy;
        wait::wait(&mut DataWait(self), strategy, deadline)
    }

    /// Whether a record is published beyond our read position (re-reading the tail);
    /// `Err(Disconnected)` if not and the producer closed the ring.
    fn has_data(&mut self) -> Result<bool, TryRecvError> {
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
        let claims = self.region.header().producer.claims.load(Ordering::Acquire);
        // Against what was seen before this call (not the tail re-read below: a producer
        // claiming and publishing after this load is not an inconsistency).
        if let Err(e) = self.check_claims(claims) {
            return e;
        }
        // O1 (Acquire): pairs with the producer's release of its role, which follows its last
        // publish: if we see it gone, the tail load below sees its final tail.
        let holder = self.region.header().producer.owner.load(Ordering::Acquire);
        if let Err(e) = self.refresh_tail() {
            return e;
        }
        if self.head != self.tail_cache {
            return TryRecvError::Empty; // not empty after all: the caller looks again
        }
        // Before taking anything for the end of the stream: is the role still ours?
        if let Err(c) = check_own_role(&self.region, Role::Consumer, self.me) {
            return self.poison(c.what);
        }
        if holder == 0 && claims != 0 {
            return TryRecvError::Disconnected;
        }
        // A lost file ring reads as all zeros, which can look empty (a tail of 0 where nothing
        // was ever sent): report the loss instead of waiting for ever.
        if self.region.revoked() {
            return self.poison(self.region.memory_lost());
        }
        TryRecvError::Empty
    }

    /// Fails with `PeerDied` if the producer's process is dead and nothing more is published.
    /// Also fails if our own owner word was changed (see `check_own_role`).
    #[cold]
    pub(crate) fn check_producer_alive(&mut self) -> Result<(), RecvError> {
        if self.region.revoked() {
            return Err(self.poison(self.region.memory_lost()).into());
        }
        if let Err(c) = check_own_role(&self.region, Role::Consumer, self.me) {
            return Err(self.poison(c.what).into());
        }
        let holder = self.region.header().producer.owner.load(Ordering::Acquire);
        // Unknown (another pid namespace) is not dead.
        if holder == 0 || holder_liveness(&self.region, Role::Producer, holder) != Liveness::Dead {
            return Ok(());
        }
        // Dead: deliver what it published first.
        match self.has_data() {
            Ok(true) => Ok(()),
            Ok(false) => Err(RecvError::PeerDied {
                pid: owner::pid_of(holder),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts a batch: messages read through it are released together, with one store of the
    /// head, when the batch is released or dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// # use shmpipe::{Heap, Ring, RingConfig};
    /// let ring = Ring::create(Heap, &RingConfig::new())?;
    /// let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
    /// for m in [b"a", b"b", b"c"] {
    ///     tx.try_send(m).unwrap();
    /// }
    /// let mut batch = rx.batch();
    /// let mut got = Vec::new();
    /// while let Ok(msg) = batch.try_lend() {
    ///     msg.view().append_to(&mut got); // copied out, one after the other
    /// }
    /// drop(batch); // one store of the head frees all three
    /// assert_eq!(got, b"abc");
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    pub fn batch(&mut self) -> RecvBatch<'_> {
        RecvBatch { consumer: self }
    }

    /// Largest message this ring carries.
    pub fn max_message(&self) -> usize {
        self.region.geometry().max_message as usize
    }

    /// Whether a producer has ever claimed this ring, as far as this consumer can tell (its
    /// role's claim count is non-zero, or this consumer saw one before). For telling the user
    /// what a wait is for ("no producer has come yet"); informational, the peer may write it.
    pub fn peer_has_come(&self) -> bool {
        // Relaxed: a description, nothing is read on the strength of it.
        self.producer_seen || self.region.header().producer.claims.load(Ordering::Relaxed) != 0
    }

    /// Whether the producer has broken the protocol (then every call fails with this).
    pub fn poisoned(&self) -> Option<&Corrupted> {
        self.poisoned.as_ref()
    }

    #[inline]
    fn copy_next(&mut self, buf: &mut [u8]) -> Result<usize, TryRecvError> {
        let r = self.next()?;
        if buf.len() < r.len {
            return Err(TryRecvError::BufferTooSmall {
                needed: r.len,
                available: buf.len(),
            });
        }
        sync::hook("recv:found");
        self.touch(r);
        let src = self.region.payload(r.at, r.len);
        let half = sync::hook_split(r.len);
        // SAFETY: `next` validated that the record's slots lie inside the array (mapped while
        // the region lives) and were published; no reference into them exists (guards borrow
        // `self`). The peer may still write them: the copy is atomic (`crate::channel::views`). `buf`
        // is our own memory and at least `len` bytes; `half <= len`.
        unsafe { shared::copy_from_shared(src, &mut buf[..half]) };
        if half != r.len {
            sync::hook("recv:mid-copy");
            // SAFETY: as above, for the rest of the payload.
            unsafe { shared::copy_from_shared(src.add(half), &mut buf[half..r.len]) };
        }
        self.advance(r);
        sync::hook("recv:consumed");
        Ok(r.len)
    }

    #[inline]
    fn lend_next(&mut self, release: bool) -> Result<ReadGuard<'_>, TryRecvError> {
        let r = self.next()?;
        self.touch(r);
        let ptr = self.region.payload(r.at, r.len);
        Ok(ReadGuard {
            consumer: self,
            record: r,
            ptr,
            release,
        })
    }

    /// Tells loom that the record's slots are being read (no-op otherwise).
    #[inline(always)]
    fn touch(&self, r: Record) {
        self.region.access(r.at, r.next.wrapping_sub(r.at), false);
    }

    /// Moves the read position past a record.
    #[inline]
    fn advance(&mut self, r: Record) {
        self.head = r.next;
        self.received = self.received.wrapping_add(1);
    }

    /// Fails unless this is the process that claimed the role (see `check_process`).
    #[inline(always)]
    fn check_process(&self) -> Result<(), WrongProcess> {
        check_process(&self.region, Role::Consumer, self.me)
    }

    /// Hands the slots read so far back to the producer (see `release_read`), if this is the
    /// claimer's process: a guard, batch or consumer inherited by a forked child releases
    /// nothing.
    #[inline]
    fn release(&mut self) {
        if self.head != self.released && self.check_process().is_ok() {
            self.release_read();
        }
    }

    /// Hands the slots read so far back to the producer: one Release store of the head. Only
    /// after a `next` of this operation checked the process.
    #[inline]
    fn release_read(&mut self) {
        if self.head != self.released {
            // Our owner word, in the line we are about to write: a hit unless someone wrote it.
            // A role we lost is not ours to release slots in; the next call reports it.
            if let Err(c) = check_own_role(&self.region, Role::Consumer, self.me) {
                self.poison(c.what);
                return;
            }
            let line = &self.region.header().consumer;
            // Informational counter; Relaxed, ordered before the head by the Release below.
            line.received.store(self.received, Ordering::Relaxed);
            // C2 (Release): pairs with the producer's Acquire load of the head (P3): our reads
            // of these slots happen before the producer reuses them.
            line.head.store(self.head, crate::sync::sabotage::release());
            self.released = self.head;
            wake(&line.producer_waiting, &line.space_event);
        }
    }

    /// Finds and validates the next message, skipping one padding record.
    #[inline]
    fn next(&mut self) -> Result<Record, TryRecvError> {
        self.check_process().map_err(TryRecvError::WrongProcess)?;
        if let Some(c) = self.poisoned {
            return Err(TryRecvError::Corrupted(c));
        }
        if let Some((r, _)) = self.partial.take() {
            // A message API after a partial stream read: the rest of that message is dropped.
            self.advance(r);
        }
        let g = *self.region.geometry();
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
            // Read once; only the locals are used from here on.
            let (len, kind) = self.region.read_record(at);
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

    /// Re-reads the producer's tail and validates it: it may only move forward, and at most a
    /// ring's worth of slots ahead of the released head.
    #[cold]
    fn refresh_tail(&mut self) -> Result<(), TryRecvError> {
        // C1 (Acquire): pairs with the producer's Release store of the tail (P2), making the
        // records below it visible.
        let tail = self.region.tail().load(Ordering::Acquire);
        let ahead = tail.wrapping_sub(self.released);
        let seen = self.tail_cache.wrapping_sub(self.released);
        if ahead > self.region.geometry().capacity() || ahead < seen {
            return Err(self.poison(Corruption::TailOutOfRange {
                tail,
                head: self.released,
                last_tail: self.tail_cache,
                capacity: self.region.geometry().capacity(),
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
            let sent = self.region.header().producer.sent.load(Ordering::Relaxed);
            return Err(self.poison(Corruption::PublishedWithoutClaim {
                tail: self.tail_cache,
                sent,
            }));
        }
        self.last_claims = claims;
        self.producer_seen |= claims != 0;
        Ok(())
    }

    #[cold]
    fn poison(&mut self, what: Corruption) -> TryRecvError {
        // Sticky: the first error stays the answer (a release or close that finds the owner
        // word changed after an earlier poisoning must not replace it).
        if let Some(c) = self.poisoned {
            return TryRecvError::Corrupted(c);
        }
        // Zeros where the ring was look like a broken protocol: name the real cause.
        let what = if self.region.revoked() {
            self.region.memory_lost()
        } else {
            what
        };
        let c = Corrupted {
            ring: self.region.ident(),
            what,
        };
        self.poisoned = Some(c);
        TryRecvError::Corrupted(c)
    }
}

/// The consumer waiting for a message.
struct DataWait<'a>(&'a mut Consumer);

impl Waiter for DataWait<'_> {
    type Error = RecvError;

    fn ready(&mut self) -> Result<bool, RecvError> {
        self.0.has_data().map_err(RecvError::from)
    }

    fn sleep(&mut self, slice: Duration) {
        sleep_for_data(&self.0.region, self.0.head, slice);
    }

    fn check_peer(&mut self) -> Result<(), RecvError> {
        self.0.check_producer_alive()
    }

    fn timeout(&self) -> RecvError {
        RecvError::Timeout
    }
}

impl Consumer {
    /// Closes the ring as dropping the consumer does (releases what was read, tells the
    /// producer nobody reads any more, gives the role back) and says whether the consumer
    /// ends clean.
    ///
    /// # Errors
    ///
    /// [`Corruption::RoleLost`] if the consumer's owner word no longer held its identity
    /// (another process rewrote it; then the ring is left as it was), or the error that
    /// poisoned the consumer before (the role is given back all the same).
    ///
    /// # Examples
    ///
    /// ```
    /// # use shmpipe::{Heap, RecvError, Ring, RingConfig};
    /// let ring = Ring::create(Heap, &RingConfig::new())?;
    /// let (tx, mut rx) = (ring.producer()?, ring.consumer()?);
    /// tx.close()?;
    /// assert_eq!(rx.recv(&mut [0u8; 8]), Err(RecvError::Disconnected));
    /// rx.close()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(mut self) -> Result<(), Corrupted> {
        self.closed = true;
        self.shut()
    }

    /// What both `close` and the drop do.
    fn shut(&mut self) -> Result<(), Corrupted> {
        if self.check_process().is_err() {
            // Inherited across fork: the role, the indices and the close are the claimer's;
            // the child's copy goes away without touching the ring.
            return Ok(());
        }
        if let Err(c) = check_own_role(&self.region, Role::Consumer, self.me) {
            self.poison(c.what);
            return Err(c); // why nothing was released, whatever poisoned the consumer first
        }
        self.release();
        let h = self.region.header();
        // Release: pairs with the producer's Acquire loads of the flag.
        h.producer.consumer_closed.store(1, Ordering::Release);
        give_back_role(&self.region, Role::Consumer, self.me)?;
        self.poisoned.map_or(Ok(()), Err)
    }
}

impl Drop for Consumer {
    /// Releases what was read and closes the ring for the producer: its sends fail with
    /// `Disconnected` until another consumer claims the role. If the owner word no longer
    /// holds our identity, the ring is left alone, and in a process other than the claimer's
    /// (a forked child) it does nothing to the ring. A failure is not reported: use
    /// [`Consumer::close`] for that.
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.shut();
        }
    }
}

/// Copies a lent message into `out`, replacing its contents, and consumes it.
fn copy_into_vec(msg: ReadGuard<'_>, out: &mut Vec<u8>) -> usize {
    out.clear();
    msg.view().append_to(out);
    msg.len()
}

impl From<TryRecvError> for RecvError {
    /// `Empty` has no blocking equivalent; it becomes `Timeout` (a wait of zero).
    fn from(e: TryRecvError) -> RecvError {
        match e {
            TryRecvError::Empty => RecvError::Timeout,
            TryRecvError::Disconnected => RecvError::Disconnected,
            TryRecvError::BufferTooSmall { needed, available } => {
                RecvError::BufferTooSmall { needed, available }
            }
            TryRecvError::Corrupted(c) => RecvError::Corrupted(c),
            TryRecvError::WrongProcess(w) => RecvError::WrongProcess(w),
        }
    }
}

/// A message lent in place by [`Consumer::try_lend`], [`Consumer::lend`],
/// [`Consumer::lend_timeout`] or [`RecvBatch::try_lend`]; dropping it consumes the message and
/// frees its slots (in a batch: when the batch is released).
///
/// Its bytes stay in the ring, where the producer's process could write them if it broke the
/// protocol, so the guard does not dereference to `&[u8]`: [`ReadGuard::view`] lends them as a
/// [`RingSlice`], which copies them out (whole, in part, as values, or straight to a file
/// descriptor), and what was copied cannot change. [`ReadGuard::as_slice_trusted`] is the
/// full-speed `&[u8]` for a peer trusted to follow the protocol.
///
/// ```compile_fail
/// # use shmpipe::{Heap, Ring, RingConfig};
/// # let ring = Ring::create(Heap, &RingConfig::new()).unwrap();
/// # let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
/// # tx.try_send(b"x").unwrap();
/// let guard = rx.try_lend().unwrap();
/// let bytes: &[u8] = &guard; // no reference into memory the peer can write
/// ```
///
/// ```compile_fail
/// # use shmpipe::{Heap, Ring, RingConfig};
/// # let ring = Ring::create(Heap, &RingConfig::new()).unwrap();
/// # let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
/// # tx.try_send(b"x").unwrap();
/// let guard = rx.try_lend().unwrap();
/// let first = guard[0];
/// ```
///
/// ```compile_fail
/// # use shmpipe::{Heap, Ring, RingConfig};
/// # let ring = Ring::create(Heap, &RingConfig::new()).unwrap();
/// # let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
/// # tx.try_send(b"x").unwrap();
/// let guard = rx.try_lend().unwrap();
/// assert_eq!(&*guard, b"x");
/// ```
///
/// # Examples
///
/// ```
/// # use shmpipe::{Heap, Ring, RingConfig};
/// let ring = Ring::create(Heap, &RingConfig::new())?;
/// let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
/// tx.try_send("grüße".as_bytes()).unwrap();
/// let msg = rx.try_lend()?;
/// // Validate the copy, not the ring: the copy cannot change after the check.
/// let text = String::from_utf8(msg.to_vec()).unwrap();
/// assert_eq!(text, "grüße");
/// # Ok::<(), shmpipe::Error>(())
/// ```
pub struct ReadGuard<'a> {
    consumer: &'a mut Consumer,
    record: Record,
    ptr: *const u8,
    release: bool,
}

impl ReadGuard<'_> {
    /// The slot counter where the record starts (for error reports: `crate::channel::typed`).
    pub(crate) fn at(&self) -> u64 {
        self.record.at
    }

    /// The message's bytes, lent in place as a view that copies them out.
    #[inline]
    pub fn view(&self) -> RingSlice<'_> {
        // SAFETY: the record was validated to lie inside the array (mapped while the consumer,
        // and so its region, lives) and below the published tail; its slots are the
        // consumer's until it releases them, which happens only after this guard is dropped
        // (it borrows the consumer mutably). No reference into them is made here.
        unsafe { RingSlice::new(self.ptr, self.record.len) }
    }

    /// The message's length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.record.len
    }

    /// Whether the message is empty (empty messages are messages too).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.record.len == 0
    }

    /// The message, copied into a new vector ([`RingSlice::to_vec`]).
    #[inline]
    pub fn to_vec(&self) -> Vec<u8> {
        self.view().to_vec()
    }

    /// Copies the first `min(self.len(), dst.len())` bytes into `dst` and returns how many
    /// ([`RingSlice::copy_to`]).
    #[inline]
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        self.view().copy_to(dst)
    }

    /// The value of type `T` whose bytes start at `offset` ([`RingSlice::read_at`]).
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`](crate::OutOfBounds) if they are not all in the message.
    #[inline]
    pub fn read_at<T: bytemuck::Pod>(&self, offset: usize) -> Result<T, crate::OutOfBounds> {
        self.view().read_at(offset)
    }

    /// The message as a slice, at full speed, for a peer trusted to follow the protocol.
    ///
    /// # Safety
    ///
    /// The producer's process must not write the message's slots while the slice lives. The
    /// protocol forbids it (they are the consumer's until this guard drops), so this is the
    /// promise that the peer follows the protocol; one that breaks it makes this undefined
    /// behaviour in this process (see [`RingSlice::as_slice_trusted`]).
    #[inline]
    pub unsafe fn as_slice_trusted(&self) -> &[u8] {
        // SAFETY: the view's bytes are mapped while `self` is borrowed; the caller promises
        // nobody writes them.
        unsafe { self.view().as_slice_trusted() }
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        self.consumer.advance(self.record);
        if self.release {
            self.consumer.release();
        }
    }
}

impl std::fmt::Debug for ReadGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadGuard")
            .field("at", &self.record.at)
            .field("len", &self.record.len)
            .finish()
    }
}

/// Several messages released with one store of the head: on [`RecvBatch::release`] or drop.
pub struct RecvBatch<'a> {
    consumer: &'a mut Consumer,
}

impl RecvBatch<'_> {
    /// Receives the next message into `buf`; its slots are freed when the batch is released.
    ///
    /// # Errors
    ///
    /// As [`Consumer::try_recv`].
    #[inline]
    pub fn try_recv(&mut self, buf: &mut [u8]) -> Result<usize, TryRecvError> {
        self.consumer.copy_next(buf)
    }

    /// Lends the next message in place, if one is waiting; its slots are freed when the batch
    /// is released.
    ///
    /// # Errors
    ///
    /// As [`Consumer::try_lend`].
    #[inline]
    pub fn try_lend(&mut self) -> Result<ReadGuard<'_>, TryRecvError> {
        self.consumer.lend_next(false)
    }

    /// Frees the slots of every message read so far; the batch stays open.
    #[inline]
    pub fn release(&mut self) {
        self.consumer.release();
    }
}

impl Drop for RecvBatch<'_> {
    fn drop(&mut self) {
        self.consumer.release();
    }
}

impl std::fmt::Debug for RecvBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field(
                "unreleased_slots",
                &self.consumer.head.wrapping_sub(self.consumer.released),
            )
            .finish()
    }
}

/// The consumer as a byte stream: messages are read back to back, empty messages are skipped,
/// and end of stream is the producer closing the ring. A dead producer or a corrupted ring is
/// an error, not end of stream, so a truncated transfer is never mistaken for a complete one.
///
/// `read` copies straight from the ring into the caller's buffer. `fill_buf` must return a
/// `&[u8]`, so it copies the current message into a buffer the consumer owns (reused from
/// message to message) and lends that; after [`Consumer::trust_peer_for_buf_read`] it lends
/// the message in place instead (zero copy).
///
/// Switching to the message API in the middle of a message drops the rest of that message.
///
/// # Examples
///
/// ```
/// use std::io::{BufRead, Read, Write};
/// # use shmpipe::{Heap, Ring, RingConfig};
/// let ring = Ring::create(Heap, &RingConfig::new())?;
/// let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
/// tx.write_all(b"hello\nworld\n")?;
/// drop(tx); // closes the stream
/// let lines: Vec<String> = rx.lines().collect::<Result<_, _>>()?;
/// assert_eq!(lines, ["hello", "world"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl std::io::BufRead for Consumer {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        let Some((r, off)) = self.stream_next()? else {
            return Ok(&[]);
        };
        if self.trust_peer && !self.buffered {
            let p = self.region.payload(r.at, r.len);
            // SAFETY: the record was validated (inside the array, below the published tail)
            // and is ours until released, which happens only in `consume` once fully read;
            // `off < len`, and the slice borrows `self`. That the producer does not write the
            // slots meanwhile is the promise given to `trust_peer_for_buf_read`.
            return Ok(unsafe { std::slice::from_raw_parts(p.add(off), r.len - off) });
        }
        if !self.buffered {
            if self.stream_buf.len() < r.len {
                self.stream_buf.resize(r.len, 0);
            }
            let p = self.region.payload(r.at, r.len);
            // SAFETY: as above (validated, ours until released); the copy is atomic, so a
            // producer that writes the slots anyway changes the copy, not our reference to it.
            unsafe { shared::copy_from_shared(p, &mut self.stream_buf[..r.len]) };
            self.buffered = true;
        }
        Ok(&self.stream_buf[off..r.len])
    }

    fn consume(&mut self, amt: usize) {
        if let Some((r, off)) = self.partial {
            let off = off.saturating_add(amt).min(r.len);
            if off == r.len {
                self.partial = None;
                self.advance(r);
                self.release();
            } else {
                self.partial = Some((r, off));
            }
        }
    }
}

impl Consumer {
    /// Lets [`BufRead::fill_buf`](std::io::BufRead::fill_buf) lend the current message in place
    /// (zero copy) instead of copying it into the consumer's own buffer first.
    ///
    /// # Safety
    ///
    /// The producer's process must be trusted to follow the protocol: it must never write the
    /// slots of a published message before this consumer releases them. `fill_buf` returns a
    /// `&[u8]` into those slots, and a producer that writes them while it lives makes that
    /// undefined behaviour in this process, not just a wrong message.
    pub unsafe fn trust_peer_for_buf_read(&mut self) {
        self.trust_peer = true;
    }

    /// The message the byte stream is in and the offset into it, waiting for the next message
    /// once the current one is read; `None` at end of stream.
    fn stream_next(&mut self) -> std::io::Result<Option<(Record, usize)>> {
        loop {
            if let Some((r, off)) = self.partial {
                if off < r.len {
                    return Ok(Some((r, off)));
                }
                self.partial = None;
                self.advance(r);
                self.release();
            }
            match self.next_until(None) {
                Ok(r) => {
                    self.touch(r);
                    self.partial = Some((r, 0));
                    self.buffered = false;
                }
                Err(RecvError::Disconnected) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl std::io::Read for Consumer {
    /// Copies from the current message straight into `buf` (one copy out of the ring).
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::BufRead;
        if buf.is_empty() {
            return Ok(0);
        }
        let Some((r, off)) = self.stream_next()? else {
            return Ok(0);
        };
        let n = (r.len - off).min(buf.len());
        if self.buffered {
            // `fill_buf` copied this message already: read the copy, as it lent it.
            buf[..n].copy_from_slice(&self.stream_buf[off..off + n]);
        } else {
            let p = self.region.payload(r.at, r.len);
            // SAFETY: as in `fill_buf`: validated, ours until released, `off + n <= len`; no
            // reference into the slots exists (the copy is atomic).
            unsafe { shared::copy_from_shared(p.add(off), &mut buf[..n]) };
        }
        self.consume(n);
        Ok(n)
    }
}
