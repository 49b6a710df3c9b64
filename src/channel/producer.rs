//! The channel's producer: the ring's producer state machine (`crate::ring::ProducerCore`)
//! wrapped with what a user meets: the process check of a handle inherited across `fork`, the
//! blocking waits and their deadlines, the close and the role's give-back, grants and batches.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::roles::{check_process, give_back_role, holder_liveness};
use crate::channel::process::{self as owner, Identity, Liveness};
use crate::channel::region::Region;
use crate::channel::views::{RingSlice, RingSliceMut};
use crate::channel::wait::{self, Deadline, WaitStrategy, Waiter};
use crate::error::{Corrupted, Error, Role, SendError, TrySendError, WrongProcess};
use crate::ring::{ProducerCore, sleep_for_room};
use crate::sync;

/// The sending side of a ring. `Send` (move it to another thread) but not `Sync` or `Clone`:
/// exactly one producer exists per ring, enforced across processes.
///
/// Dropping it publishes anything a batch left unpublished and gives the producer role back.
///
/// The role belongs to the process that claimed it. A child forked while the producer exists
/// inherits a copy that it cannot use: every operation fails with
/// [`WrongProcess`](crate::WrongProcess) (sending nothing), a grant or batch it inherited
/// commits and publishes nothing, and dropping it does nothing to the ring (the parent still
/// holds the role). The child may claim a free role of its own from the [`Ring`](crate::Ring).
///
/// # Examples
///
/// ```
/// use shmpipe::{Heap, Ring, RingConfig, TrySendError};
/// let ring = Ring::create(Heap, &RingConfig::new().slot_size(64).slot_count(2))?;
/// let mut tx = ring.producer()?;
/// tx.try_send(b"first").unwrap();
/// tx.try_send(b"second").unwrap();
/// // Two slots, two records: full.
/// assert_eq!(tx.try_send(b"third"), Err(TrySendError::Full));
/// # Ok::<(), shmpipe::Error>(())
/// ```
pub struct Producer {
    /// The protocol: private indices, the sticky poison, the ring's memory.
    core: ProducerCore<Region>,
    /// Our identity, written into the owner word: the process that claimed the role. In any
    /// other process (a forked child) every operation fails and drop does nothing.
    me: Identity,
    /// How blocking calls wait.
    strategy: WaitStrategy,
    /// [`Producer::close`] ran: the drop has nothing left to do.
    closed: bool,
    _not_sync: PhantomData<Cell<()>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (tail, published, head_cache) = self.core.indices();
        f.debug_struct("Producer")
            .field("ring", &self.region().ident())
            .field("tail", &tail)
            .field("published", &published)
            .field("head_cache", &head_cache)
            .field("poisoned", &self.core.poisoned())
            .finish()
    }
}

impl Producer {
    pub(super) fn new(region: Arc<Region>, me: Identity) -> Result<Producer, Error> {
        Ok(Producer {
            core: ProducerCore::new(region, me, super::process::light_wake())?,
            me,
            strategy: WaitStrategy::default(),
            closed: false,
            _not_sync: PhantomData,
        })
    }

    /// Sends one message now if there is room, with one copy into the ring.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] if the ring has no room for it now;
    /// [`TrySendError::TooLarge`] if it exceeds [`Producer::max_message`] (nothing is sent);
    /// [`TrySendError::Disconnected`] if the consumer closed the ring;
    /// [`TrySendError::Corrupted`] if the consumer broke the protocol (sticky).
    ///
    /// # Examples
    ///
    /// ```
    /// # use shmpipe::{Heap, Ring, RingConfig, TrySendError};
    /// let ring = Ring::create(Heap, &RingConfig::new())?;
    /// let mut tx = ring.producer()?;
    /// tx.try_send(b"").unwrap(); // empty messages are messages too
    /// let too_big = vec![0u8; tx.max_message() + 1];
    /// assert!(matches!(tx.try_send(&too_big), Err(TrySendError::TooLarge { .. })));
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    #[inline]
    pub fn try_send(&mut self, msg: &[u8]) -> Result<(), TrySendError> {
        self.write(msg)?;
        self.core.publish();
        sync::hook("send:published");
        Ok(())
    }

    /// Reserves room for a message of exactly `len` bytes now, if there is room, and returns a
    /// guard over it, so the message can be built in place (zero copy). [`WriteGrant::commit`]
    /// publishes it; dropping the guard discards it.
    ///
    /// # Errors
    ///
    /// As [`Producer::try_send`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use shmpipe::{Heap, Ring, RingConfig};
    /// let ring = Ring::create(Heap, &RingConfig::new())?;
    /// let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
    /// let mut grant = tx.try_reserve(4)?;
    /// grant.copy_from_slice(&7u32.to_le_bytes());
    /// grant.commit();
    /// assert_eq!(rx.try_lend()?.to_vec(), 7u32.to_le_bytes());
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    #[inline]
    pub fn try_reserve(&mut self, len: usize) -> Result<WriteGrant<'_>, TrySendError> {
        self.grant(len, true)
    }

    /// [`Producer::try_reserve`], waiting for room as the [`WaitStrategy`] says.
    ///
    /// # Errors
    ///
    /// As [`Producer::send`].
    pub fn reserve(&mut self, len: usize) -> Result<WriteGrant<'_>, SendError> {
        self.reserve_until(len, None)
    }

    /// Sends one message, waiting for room as the [`WaitStrategy`] says.
    ///
    /// # Errors
    ///
    /// [`SendError::Disconnected`] if the consumer closed the ring, [`SendError::PeerDied`] if
    /// its process died while we waited (confirmed by the kernel, noticed within about 10 ms),
    /// [`SendError::TooLarge`], [`SendError::Corrupted`].
    pub fn send(&mut self, msg: &[u8]) -> Result<(), SendError> {
        self.send_until(msg, None)
    }

    /// [`Producer::send`], giving up after `timeout` with [`SendError::Timeout`].
    ///
    /// # Errors
    ///
    /// As [`Producer::send`], and [`SendError::Timeout`].
    pub fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<(), SendError> {
        self.send_until(msg, Some(timeout))
    }

    /// [`Producer::reserve`], giving up after `timeout` with [`SendError::Timeout`].
    ///
    /// # Errors
    ///
    /// As [`Producer::send_timeout`].
    pub fn reserve_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
    ) -> Result<WriteGrant<'_>, SendError> {
        self.reserve_until(len, Some(timeout))
    }

    fn reserve_until(
        &mut self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<WriteGrant<'_>, SendError> {
        // The clock is read only once the ring is found full.
        let mut deadline = None;
        let granted = loop {
            match self.grant_slots(len) {
                Ok(granted) => break granted,
                Err(TrySendError::Full) => {
                    let d = *deadline.get_or_insert_with(|| Deadline::after(timeout));
                    self.wait_for_room(len, d)?;
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(WriteGrant::new(self, granted, len, true))
    }

    /// How blocking calls wait (default [`WaitStrategy::SpinThenSleep`]).
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// One sleep of the producer that owns nothing borrowed, for the async producer to run on
    /// tokio's blocking pool: [`sleep_for_room`] on this ring with the head last validated.
    /// Call it after `try_send` found the ring full (which re-read the head).
    #[cfg(feature = "tokio")]
    pub(crate) fn room_sleeper(&self) -> impl FnOnce(Duration) + Send + 'static {
        let (region, head_cache) = (self.region().clone(), self.core.head_cache());
        move |slice| sleep_for_room(&region, head_cache, slice)
    }

    fn send_until(&mut self, msg: &[u8], timeout: Option<Duration>) -> Result<(), SendError> {
        // The clock is read only once the ring is found full: a send with room costs no more
        // with a timeout than without.
        let mut deadline = None;
        loop {
            match self.write(msg) {
                Ok(()) => {
                    self.core.publish();
                    sync::hook("send:published");
                    return Ok(());
                }
                Err(TrySendError::Full) => {
                    let d = *deadline.get_or_insert_with(|| Deadline::after(timeout));
                    self.wait_for_room(msg.len(), d)?;
                }
                Err(e) => return Err(SendError::from(e)),
            }
        }
    }

    /// Waits until a record of `len` bytes fits, the consumer goes away, or the deadline.
    #[cold]
    fn wait_for_room(&mut self, len: usize, deadline: Deadline) -> Result<(), SendError> {
        let strategy = self.strategy;
        wait::wait(&mut RoomWait { p: self, len }, strategy, deadline)
    }

    /// Fails if the consumer closed the ring.
    fn check_closed(&self) -> Result<(), SendError> {
        if self.core.consumer_closed() {
            return Err(SendError::Disconnected);
        }
        Ok(())
    }

    /// Asks whether the consumer is still there, without sending: `Ok` if it holds the role and
    /// its process lives, or if no consumer has attached yet (a producer may fill the ring
    /// first). A send only notices a dead consumer when it has to wait for room; a producer
    /// that rarely fills the ring can call this now and then instead. Costs one small `/proc`
    /// read.
    ///
    /// # Errors
    ///
    /// [`SendError::Disconnected`] if the consumer closed the ring, [`SendError::PeerDied`] if
    /// the kernel says its process is dead, [`SendError::Corrupted`] if the producer is
    /// poisoned (its own owner word is checked by every send, which poisons it).
    #[cold]
    pub fn check_consumer(&self) -> Result<(), SendError> {
        self.check_process().map_err(SendError::WrongProcess)?;
        if let Some(&c) = self.core.poisoned() {
            return Err(SendError::Corrupted(c));
        }
        if self.region().revoked() {
            return Err(SendError::Corrupted(self.region().lost()));
        }
        self.check_closed()?;
        let c = &self.region().header().consumer;
        // O1 (Acquire): pairs with the consumer's release of its role.
        let holder = c.owner.load(Ordering::Acquire);
        if holder == 0 {
            // Gone cleanly (then the flag is set, checked above) or not attached yet: a
            // producer may fill the ring before any consumer arrives.
            return Ok(());
        }
        // Unknown (another pid namespace) is not dead.
        if holder_liveness(self.region(), Role::Consumer, holder) == Liveness::Dead {
            return Err(SendError::PeerDied {
                pid: owner::pid_of(holder),
            });
        }
        Ok(())
    }

    /// Starts a batch: messages sent through it become visible to the consumer together, with
    /// one store of the tail, when it is published or dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// # use shmpipe::{Heap, Ring, RingConfig};
    /// let ring = Ring::create(Heap, &RingConfig::new())?;
    /// let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
    /// let mut batch = tx.batch();
    /// batch.try_send(b"a")?;
    /// batch.try_send(b"b")?;
    /// assert!(rx.try_lend().is_err()); // not yet published
    /// batch.publish();
    /// assert_eq!(rx.try_lend()?.to_vec(), b"a");
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    pub fn batch(&mut self) -> SendBatch<'_> {
        SendBatch { producer: self }
    }

    /// Largest message this ring accepts.
    pub fn max_message(&self) -> usize {
        self.region().geometry().max_message as usize
    }

    /// Slots in the ring.
    pub fn capacity_slots(&self) -> usize {
        self.region().geometry().slot_count as usize
    }

    /// Whether a consumer has ever claimed this ring (its role's claim count is non-zero). For
    /// telling the user what a wait is for ("no consumer has come yet"); informational, the
    /// peer may write it.
    pub fn peer_has_come(&self) -> bool {
        // Relaxed: a description, nothing is read on the strength of it.
        self.region()
            .header()
            .consumer
            .claims
            .load(Ordering::Relaxed)
            != 0
    }

    /// Whether the consumer has broken the protocol (then every call fails with this).
    pub fn poisoned(&self) -> Option<&Corrupted> {
        self.core.poisoned()
    }

    /// The ring's region (its memory, backing and name).
    #[inline(always)]
    pub(super) fn region(&self) -> &Arc<Region> {
        self.core.memory()
    }

    /// Fails unless this is the process that claimed the role (see `check_process`).
    #[inline(always)]
    fn check_process(&self) -> Result<(), WrongProcess> {
        check_process(self.region(), Role::Producer, self.me)
    }

    /// Makes everything written so far visible to the consumer, if this is the claimer's
    /// process: a batch, grant or producer inherited by a forked child publishes nothing.
    #[inline]
    fn publish(&mut self) {
        if self.core.unpublished_slots() != 0 && self.check_process().is_ok() {
            self.core.publish();
        }
    }

    /// Copies `msg` into the ring as a record without publishing it.
    #[inline]
    fn write(&mut self, msg: &[u8]) -> Result<(), TrySendError> {
        self.check_process().map_err(TrySendError::WrongProcess)?;
        self.core.write(msg)
    }

    /// Hands out a guard over a reserved record of `len` bytes.
    #[inline]
    fn grant(&mut self, len: usize, publish: bool) -> Result<WriteGrant<'_>, TrySendError> {
        let granted = self.grant_slots(len)?;
        Ok(WriteGrant::new(self, granted, len, publish))
    }

    /// Reserves a record of `len` bytes to be written in place (see `ProducerCore::grant`),
    /// in the claimer's process only: where it starts and its payload pointer.
    #[inline]
    fn grant_slots(&mut self, len: usize) -> Result<(u64, *mut u8), TrySendError> {
        self.check_process().map_err(TrySendError::WrongProcess)?;
        self.core.grant(len)
    }
}

impl Producer {
    /// Closes the ring as dropping the producer does (publishes anything pending, gives the
    /// role back, wakes the consumer, which receives every message and then the end of
    /// stream), and says whether that was a clean end.
    ///
    /// # Errors
    ///
    /// [`Corruption::RoleLost`](crate::Corruption::RoleLost) if the producer's owner word no longer held its identity
    /// (another process rewrote it; then nothing is published and the word is left as it
    /// was), or the error that poisoned the producer before (the role is given back all the
    /// same). A program that must not report success for a stream the consumer may not have
    /// received whole (the `shmpipe send` command) checks this instead of dropping.
    ///
    /// # Examples
    ///
    /// ```
    /// # use shmpipe::{Heap, Ring, RingConfig};
    /// let ring = Ring::create(Heap, &RingConfig::new())?;
    /// let mut tx = ring.producer()?;
    /// tx.try_send(b"last words").unwrap();
    /// tx.close()?;
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
        // A role another process holds or cleared is not ours to publish into or give back.
        self.core.check_owner()?;
        self.core.publish();
        give_back_role(self.region(), Role::Producer, self.me)?;
        self.core.poisoned().map_or(Ok(()), |&c| Err(c))
    }
}

/// The producer waiting for room for a record of `len` bytes.
struct RoomWait<'a> {
    p: &'a mut Producer,
    len: usize,
}

impl Waiter for RoomWait<'_> {
    type Error = SendError;

    fn ready(&mut self) -> Result<bool, SendError> {
        if self.p.core.room_for(self.len)? {
            return Ok(true);
        }
        self.p.check_closed().map(|()| false)
    }

    fn sleep(&mut self, slice: Duration) {
        // `ready` has just re-read the head into `head_cache` (`room_for`).
        sleep_for_room(self.p.region(), self.p.core.head_cache(), slice);
    }

    fn check_peer(&mut self) -> Result<(), SendError> {
        self.p.core.check_owner()?;
        self.p.check_consumer()
    }

    fn timeout(&self) -> SendError {
        SendError::Timeout
    }
}

impl Drop for Producer {
    /// Publishes anything pending and closes the ring: the consumer receives every message,
    /// then `Disconnected`. Another producer may claim the role later and continue the stream.
    /// If the owner word no longer holds our identity, nothing is published nor released, and
    /// in a process other than the claimer's (a forked child) it does nothing to the ring. A
    /// failure is not reported: use [`Producer::close`] for that.
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.shut();
        }
    }
}

impl From<Corrupted> for SendError {
    fn from(c: Corrupted) -> SendError {
        SendError::Corrupted(c)
    }
}

impl From<TrySendError> for SendError {
    /// `Full` has no blocking equivalent; it becomes `Timeout` (a wait of zero).
    fn from(e: TrySendError) -> SendError {
        match e {
            TrySendError::Full => SendError::Timeout,
            TrySendError::TooLarge { len, max } => SendError::TooLarge { len, max },
            TrySendError::Disconnected => SendError::Disconnected,
            TrySendError::Corrupted(c) => SendError::Corrupted(c),
            TrySendError::WrongProcess(w) => SendError::WrongProcess(w),
        }
    }
}

/// Room for one message in the ring, written in place. [`WriteGrant::commit`] sends it;
/// dropping the grant discards it and the ring is as before.
///
/// The bytes are slots the consumer's process could read or write if it broke the protocol, so
/// the grant does not dereference to `&mut [u8]`: [`WriteGrant::view_mut`] lends them as a
/// [`RingSliceMut`], written by copy (whole, as values, or straight from a file descriptor).
/// Their initial content is whatever the slots held before.
/// [`WriteGrant::as_mut_slice_trusted`] is the full-speed `&mut [u8]` for a trusted peer.
///
/// ```compile_fail
/// # use shmpipe::{Heap, Ring, RingConfig};
/// # let ring = Ring::create(Heap, &RingConfig::new()).unwrap();
/// # let mut tx = ring.producer().unwrap();
/// let mut grant = tx.try_reserve(4).unwrap();
/// grant[0] = 1; // no reference into memory the peer can touch
/// ```
///
/// ```compile_fail
/// # use shmpipe::{Heap, Ring, RingConfig};
/// # let ring = Ring::create(Heap, &RingConfig::new()).unwrap();
/// # let mut tx = ring.producer().unwrap();
/// let mut grant = tx.try_reserve(4).unwrap();
/// let bytes: &mut [u8] = &mut grant;
/// ```
pub struct WriteGrant<'a> {
    producer: &'a mut Producer,
    at: u64,
    ptr: *mut u8,
    len: usize,
    publish: bool,
}

impl<'a> WriteGrant<'a> {
    /// The guard over the record `grant_slots` reserved for `len` bytes: where it starts and
    /// its payload pointer. `publish` says whether its commit publishes (false in a batch).
    #[inline(always)]
    fn new(
        producer: &'a mut Producer,
        (at, ptr): (u64, *mut u8),
        len: usize,
        publish: bool,
    ) -> Self {
        WriteGrant {
            producer,
            at,
            ptr,
            len,
            publish,
        }
    }

    /// Sends the message (in a batch: adds it to the batch).
    #[inline]
    pub fn commit(self) {
        let len = self.len;
        self.commit_len(len);
    }

    /// Sends only the first `len` bytes, for a message whose length is known after writing it
    /// (e.g. a `read` into the grant).
    ///
    /// # Panics
    ///
    /// If `len` exceeds the reserved length.
    #[inline]
    pub fn commit_len(self, len: usize) {
        assert!(
            len <= self.len,
            "commit_len({len}) exceeds the {} bytes reserved",
            self.len
        );
        if self.producer.check_process().is_err() {
            return; // a grant inherited across fork: the slots are the claimer's
        }
        self.producer.core.finish(self.at, len as u32);
        if self.publish {
            self.producer.core.publish();
        }
    }
}

impl WriteGrant<'_> {
    /// The message's bytes as a read view, to read back what was written.
    #[inline]
    pub fn view(&self) -> RingSlice<'_> {
        // SAFETY: as in `view_mut`; the shared borrow of `self` rules out a write view.
        unsafe { RingSlice::new(self.ptr, self.len) }
    }

    /// The message's bytes, lent in place as a view that copies into them.
    #[inline]
    pub fn view_mut(&mut self) -> RingSliceMut<'_> {
        // SAFETY: `ptr..ptr+len` lies inside slots reserved by the producer and not yet
        // published (mapped while the producer's region lives): the protocol gives them to us
        // alone, and the mutable borrow of the producer keeps them reserved while the grant
        // lives; `&mut self` makes this the only view. No reference into them is made here.
        unsafe { RingSliceMut::new(self.ptr, self.len) }
    }

    /// The message's length in bytes (as reserved).
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the grant is for an empty message.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies all of `src` into the message ([`RingSliceMut::copy_from_slice`]).
    ///
    /// # Panics
    ///
    /// If `src.len() != self.len()`, as [`<[u8]>::copy_from_slice`](slice::copy_from_slice).
    #[inline]
    pub fn copy_from_slice(&mut self, src: &[u8]) {
        self.view_mut().copy_from_slice(src);
    }

    /// Sets every byte of the message to `byte` ([`RingSliceMut::fill`]).
    #[inline]
    pub fn fill(&mut self, byte: u8) {
        self.view_mut().fill(byte);
    }

    /// Writes the bytes of `value` at `offset` ([`RingSliceMut::write_at`]).
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`](crate::OutOfBounds) if they do not all fit in the message.
    #[inline]
    pub fn write_at<T: bytemuck::Pod>(
        &mut self,
        offset: usize,
        value: T,
    ) -> Result<(), crate::OutOfBounds> {
        self.view_mut().write_at(offset, value)
    }

    /// The message as a mutable slice, at full speed, for a peer trusted to follow the
    /// protocol.
    ///
    /// # Safety
    ///
    /// The consumer's process must not read or write the message's slots while the slice
    /// lives. The protocol forbids it (they are reserved and not published), so this is the
    /// promise that the peer follows the protocol; one that breaks it makes this undefined
    /// behaviour in this process (see [`RingSliceMut::as_mut_slice_trusted`]).
    #[inline]
    pub unsafe fn as_mut_slice_trusted(&mut self) -> &mut [u8] {
        // SAFETY: the grant's bytes are initialised (the kernel zero-fills segments, the heap
        // ring is zeroed, old records stay behind), mapped and ours while `self` is borrowed
        // mutably; the caller promises the peer does not touch them.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl std::fmt::Debug for WriteGrant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteGrant")
            .field("at", &self.at)
            .field("len", &self.len)
            .finish()
    }
}

/// Several messages published with one store of the tail. Published by
/// [`SendBatch::publish`] or when dropped.
pub struct SendBatch<'a> {
    producer: &'a mut Producer,
}

impl SendBatch<'_> {
    /// Adds a message to the batch (copied into the ring now, visible at publish).
    ///
    /// # Errors
    ///
    /// As [`Producer::try_send`]. When the ring is full, the batch so far is published before
    /// `Full` is returned, so the consumer can make room: retrying in a loop cannot deadlock.
    #[inline]
    pub fn try_send(&mut self, msg: &[u8]) -> Result<(), TrySendError> {
        self.producer.write(msg).inspect_err(|e| {
            if *e == TrySendError::Full {
                self.producer.publish();
            }
        })
    }

    /// Reserves a message in place now, if there is room; its commit adds it to the batch.
    ///
    /// # Errors
    ///
    /// As [`Producer::try_reserve`]; on `Full` the batch so far is published first.
    #[inline]
    pub fn try_reserve(&mut self, len: usize) -> Result<WriteGrant<'_>, TrySendError> {
        // One reservation: `grant` fails without borrowing the producer, so the batch can
        // publish what it holds before `Full` is returned.
        match self.producer.grant_slots(len) {
            Ok(granted) => Ok(WriteGrant::new(self.producer, granted, len, false)),
            Err(e) => {
                if e == TrySendError::Full {
                    self.producer.publish();
                }
                Err(e)
            }
        }
    }

    /// Makes the batch so far visible to the consumer; the batch stays open for more.
    #[inline]
    pub fn publish(&mut self) {
        self.producer.publish();
    }

    /// Slots written and not yet published.
    pub fn pending_slots(&self) -> u64 {
        self.producer.core.unpublished_slots()
    }
}

impl Drop for SendBatch<'_> {
    fn drop(&mut self) {
        self.producer.publish();
    }
}

impl std::fmt::Debug for SendBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("pending_slots", &self.pending_slots())
            .finish()
    }
}
