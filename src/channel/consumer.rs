//! The channel's consumer: the ring's consumer state machine (`crate::ring::ConsumerCore`)
//! wrapped with what a user meets: the process check of a handle inherited across `fork`, the
//! blocking waits and their deadlines, a dead producer, the close and the role's give-back,
//! guards and batches.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::roles::{check_process, give_back_role, holder_liveness};
use crate::channel::process::{self as owner, Identity, Liveness};
use crate::channel::region::Region;
use crate::channel::views::RingSlice;
use crate::channel::wait::{self, Deadline, WaitStrategy, Waiter};
use crate::error::{Corrupted, Error, RecvError, Role, TryRecvError, WrongProcess};
use crate::ring::{ConsumerCore, Record, sleep_for_data};
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
    /// The protocol: private indices, the sticky poison, the ring's memory.
    pub(super) core: ConsumerCore<Region>,
    /// Our identity, written into the owner word: the process that claimed the role. In any
    /// other process (a forked child) every operation fails and drop does nothing.
    me: Identity,
    /// How blocking calls wait.
    strategy: WaitStrategy,
    /// The message being read as a byte stream (`Read`/`BufRead`) and how far into it.
    pub(super) partial: Option<(Record, usize)>,
    /// [`Consumer::close`] ran: the drop has nothing left to do.
    closed: bool,
    /// `BufRead`'s private copy of the message in `partial`, when `buffered` says it holds it
    /// (reused from message to message; never shrunk).
    pub(super) stream_buf: Vec<u8>,
    /// Whether `stream_buf` holds the payload of the message in `partial`.
    pub(super) buffered: bool,
    /// Whether `fill_buf` may lend the ring's bytes instead of a copy
    /// ([`Consumer::trust_peer_for_buf_read`]).
    pub(super) trust_peer: bool,
    _not_sync: PhantomData<Cell<()>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (head, released, tail_cache) = self.core.indices();
        f.debug_struct("Consumer")
            .field("ring", &self.region().ident())
            .field("head", &head)
            .field("released", &released)
            .field("tail_cache", &tail_cache)
            .field("poisoned", &self.core.poisoned())
            .finish()
    }
}

impl Consumer {
    pub(super) fn new(region: Arc<Region>, me: Identity) -> Result<Consumer, Error> {
        Ok(Consumer {
            core: ConsumerCore::new(region, me, super::process::light_wake())?,
            me,
            strategy: WaitStrategy::default(),
            partial: None,
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
        self.core.release();
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
    pub(super) fn next_until(&mut self, timeout: Option<Duration>) -> Result<Record, RecvError> {
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
        let (region, head) = (self.region().clone(), self.core.head());
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

    /// Fails with `PeerDied` if the producer's process is dead and nothing more is published.
    /// Also fails if our own owner word was changed (see `Memory::check_owner`).
    #[cold]
    pub(crate) fn check_producer_alive(&mut self) -> Result<(), RecvError> {
        if self.region().revoked() {
            return Err(self.core.lose().into());
        }
        if let Err(c) = self.core.check_owner() {
            return Err(self.core.poison(c.what).into());
        }
        let holder = self
            .region()
            .header()
            .producer
            .owner
            .load(Ordering::Acquire);
        // Unknown (another pid namespace) is not dead.
        if holder == 0 || holder_liveness(self.region(), Role::Producer, holder) != Liveness::Dead {
            return Ok(());
        }
        // Dead: deliver what it published first.
        match self.core.has_data() {
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
        self.region().geometry().max_message as usize
    }

    /// Whether a producer has ever claimed this ring, as far as this consumer can tell (its
    /// role's claim count is non-zero, or this consumer saw one before). For telling the user
    /// what a wait is for ("no producer has come yet"); informational, the peer may write it.
    pub fn peer_has_come(&self) -> bool {
        // Relaxed: a description, nothing is read on the strength of it.
        self.core.producer_seen()
            || self
                .region()
                .header()
                .producer
                .claims
                .load(Ordering::Relaxed)
                != 0
    }

    /// Whether the producer has broken the protocol (then every call fails with this).
    pub fn poisoned(&self) -> Option<&Corrupted> {
        self.core.poisoned()
    }

    /// The ring's region (its memory, backing and name).
    #[inline(always)]
    pub(super) fn region(&self) -> &Arc<Region> {
        self.core.memory()
    }

    /// Fails unless this is the process that claimed the role (see `check_process`), or if
    /// the consumer is poisoned; drops the rest of a message a byte stream read in part.
    #[inline]
    fn before_next(&mut self) -> Result<(), TryRecvError> {
        self.check_process().map_err(TryRecvError::WrongProcess)?;
        if let Some(&c) = self.core.poisoned() {
            return Err(TryRecvError::Corrupted(c));
        }
        if let Some((r, _)) = self.partial.take() {
            // A message API after a partial stream read: the rest of that message is dropped.
            self.core.advance(r);
        }
        Ok(())
    }

    /// Finds the next message without consuming it (see `ConsumerCore::next`).
    #[inline]
    fn next(&mut self) -> Result<Record, TryRecvError> {
        self.before_next()?;
        self.core.next()
    }

    /// Copies the next message into `buf` and consumes it, without releasing its slots.
    #[inline]
    fn copy_next(&mut self, buf: &mut [u8]) -> Result<usize, TryRecvError> {
        self.before_next()?;
        self.core.read(buf)
    }

    #[inline]
    fn lend_next(&mut self, release: bool) -> Result<ReadGuard<'_>, TryRecvError> {
        self.before_next()?;
        let (record, ptr) = self.core.lend()?;
        Ok(ReadGuard {
            consumer: self,
            record,
            ptr,
            release,
        })
    }

    /// Fails unless this is the process that claimed the role (see `check_process`).
    #[inline(always)]
    fn check_process(&self) -> Result<(), WrongProcess> {
        check_process(self.region(), Role::Consumer, self.me)
    }

    /// Hands the slots read so far back to the producer (see `ConsumerCore::release`), if this
    /// is the claimer's process: a guard, batch or consumer inherited by a forked child
    /// releases nothing.
    #[inline]
    pub(super) fn release(&mut self) {
        if self.core.unreleased_slots() != 0 && self.check_process().is_ok() {
            self.core.release();
        }
    }
}

/// The consumer waiting for a message.
struct DataWait<'a>(&'a mut Consumer);

impl Waiter for DataWait<'_> {
    type Error = RecvError;

    fn ready(&mut self) -> Result<bool, RecvError> {
        self.0.core.has_data().map_err(RecvError::from)
    }

    fn sleep(&mut self, slice: Duration) {
        sleep_for_data(self.0.region(), self.0.core.head(), slice);
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
    /// [`Corruption::RoleLost`](crate::Corruption::RoleLost) if the consumer's owner word no longer held its identity
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
        if let Err(c) = self.core.check_owner() {
            self.core.poison(c.what);
            return Err(c); // why nothing was released, whatever poisoned the consumer first
        }
        self.core.release();
        let h = self.region().header();
        // Release: pairs with the producer's Acquire loads of the flag.
        h.producer.consumer_closed.store(1, Ordering::Release);
        give_back_role(self.region(), Role::Consumer, self.me)?;
        self.core.poisoned().map_or(Ok(()), |&c| Err(c))
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
    #[inline]
    fn drop(&mut self) {
        self.consumer.core.advance(self.record);
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
            .field("unreleased_slots", &self.consumer.core.unreleased_slots())
            .finish()
    }
}
