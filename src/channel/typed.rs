//! Typed messages: a ring whose every message is one plain-old-data value of a fixed type `T`
//! ([`bytemuck::Pod`]), sent and received by value, in batches, or in place.
//!
//! A typed ring is an ordinary ring whose creator recorded the message type in the
//! configuration line ([`RingConfig::message_type`]): its size (which is also the ring's
//! maximum message), its alignment, and a fingerprint. [`TypedClaim::producer`] and
//! [`TypedClaim::consumer`] (from [`Ring::typed`]) refuse a ring that records another type, or none, with
//! [`Error::TypeMismatch`], before claiming the role. Everything else is the byte ring's
//! protocol, unchanged: a [`TypedProducer`] wraps a [`Producer`], a [`TypedConsumer`] wraps a
//! [`Consumer`], and each value is one record of exactly `size_of::<T>()` bytes.
//!
//! The other process is still not trusted. A record of any other length (written by a byte
//! producer, or by a hostile one) is [`Corruption::WrongMessageSize`], sticky like every
//! corruption; `T: Pod` means every bit pattern is a valid `T`, so whatever bytes a peer wrote
//! are at worst a wrong value, never an invalid one.
//!
//! See "Typed messages" in `docs/DESIGN.md` for what the fingerprint can and cannot catch.

use std::any::type_name;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::channel::views::{RingSlice, RingSliceMut};
use crate::channel::{Consumer, Producer, ReadGuard, Ring, RingConfig, WaitStrategy, WriteGrant};
use crate::error::{
    Corrupted, Corruption, Error, Ident, RecvError, SendError, TryRecvError, TrySendError,
};
use crate::layout::MessageType;

/// FNV-1a, 64-bit: offset basis and prime.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Folds `bytes` into an FNV-1a state.
const fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

/// The default fingerprint of a message type: the 64-bit FNV-1a hash of
/// [`std::any::type_name::<T>()`](std::any::type_name), followed by `size_of::<T>()` and
/// `align_of::<T>()` as little-endian `u64`s.
///
/// It tells apart types of the same size and alignment that have different names (`Tick` and
/// `Quote`, or `u64` and `f64`). The name is the type's path (`my_crate::Tick`), so both
/// processes must get the type from the same crate (a shared crate of message types), and
/// `type_name` is only promised to be the same for builds by the same compiler; it is a check
/// against mistakes, not a proof of layout. For peers built apart (other crates, other
/// compilers, C), choose the fingerprint yourself: [`type_tag`] and
/// [`RingConfig::message_type_tagged`].
///
/// # Examples
///
/// ```
/// assert_eq!(shmpipe::type_fingerprint::<u64>(), shmpipe::type_fingerprint::<u64>());
/// assert_ne!(shmpipe::type_fingerprint::<u64>(), shmpipe::type_fingerprint::<f64>());
/// ```
pub fn type_fingerprint<T>() -> u64 {
    let h = fnv1a(FNV_OFFSET, type_name::<T>().as_bytes());
    let h = fnv1a(h, &(size_of::<T>() as u64).to_le_bytes());
    fnv1a(h, &(align_of::<T>() as u64).to_le_bytes())
}

/// A fingerprint chosen by name: the 64-bit FNV-1a hash of `name`'s UTF-8 bytes (offset basis
/// `0xcbf29ce484222325`, prime `0x100000001b3`), easy to compute in any language. Use it with
/// [`RingConfig::message_type_tagged`] and [`TypedClaim::tagged`] when the two sides are built
/// apart, naming the message format and its version, e.g. `type_tag("acme.Tick/v2")`.
///
/// # Examples
///
/// ```
/// const TICK: u64 = shmpipe::type_tag("acme.Tick/v2");
/// assert_ne!(TICK, shmpipe::type_tag("acme.Tick/v3"));
/// assert_eq!(shmpipe::type_tag(""), 0xcbf2_9ce4_8422_2325);
/// ```
pub const fn type_tag(name: &str) -> u64 {
    fnv1a(FNV_OFFSET, name.as_bytes())
}

impl MessageType {
    /// The message type of `T` with its default fingerprint ([`type_fingerprint`]).
    pub fn of<T: Pod>() -> MessageType {
        MessageType::tagged::<T>(type_fingerprint::<T>())
    }

    /// The message type of `T` with a fingerprint chosen by the caller (e.g. [`type_tag`]).
    pub fn tagged<T: Pod>(fingerprint: u64) -> MessageType {
        MessageType {
            // A type over 4 GiB saturates, and the ring refuses it as too large.
            size: u32::try_from(size_of::<T>()).unwrap_or(u32::MAX),
            align: u32::try_from(align_of::<T>()).unwrap_or(u32::MAX),
            fingerprint,
        }
    }
}

impl RingConfig {
    /// Makes the ring a typed ring of `T`: it records `T`'s size, alignment and fingerprint
    /// ([`type_fingerprint`]) in its header, and its maximum message becomes `size_of::<T>()`.
    /// Claim its roles with `ring.typed::<T>().producer()` and `.consumer()` ([`Ring::typed`]),
    /// which refuse a ring of another type.
    ///
    /// The slot geometry stays yours to choose. Each value takes
    /// `ceil((8 + size_of::<T>()) / slot_size)` slots; `slot_size((size_of::<T>() +
    /// 8).next_power_of_two())` packs them tightest, while the default 64-byte slots keep
    /// each value of up to 56 bytes on a cache line of its own.
    ///
    /// [`Ring::create`] (and the other constructors) fail with [`Error::InvalidConfig`] if `T`
    /// is zero-sized, aligned to more than 8 bytes (payloads are only 8-aligned), or too large
    /// for the shape; or if [`RingConfig::max_message`] is set to another size afterwards.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmpipe::{Heap, Ring, RingConfig};
    /// let ring = Ring::create(Heap, &RingConfig::new().slot_size(16).message_type::<u64>())?;
    /// assert_eq!(ring.max_message(), 8);
    /// let (mut tx, mut rx) = (ring.typed::<u64>().producer()?, ring.typed::<u64>().consumer()?);
    /// tx.try_send(42).unwrap();
    /// assert_eq!(rx.try_recv(), Ok(42));
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    pub fn message_type<T: Pod>(self) -> RingConfig {
        self.set_message_type(MessageType::of::<T>())
    }

    /// [`RingConfig::message_type`] with a fingerprint of your choice instead of the default
    /// one, for peers built apart (another crate, another compiler, another language), which
    /// then claim with the same tag ([`TypedClaim::tagged`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use shmpipe::{Heap, Ring, RingConfig, type_tag};
    /// const TAG: u64 = type_tag("example.Pair/v1");
    /// let ring = Ring::create(Heap, &RingConfig::new().message_type_tagged::<[u32; 2]>(TAG))?;
    /// let mut tx = ring.typed::<[u32; 2]>().tagged(TAG).producer()?;
    /// tx.try_send([1, 2]).unwrap();
    /// assert!(ring.typed::<[u32; 2]>().consumer().is_err()); // default fingerprint: refused
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    pub fn message_type_tagged<T: Pod>(self, fingerprint: u64) -> RingConfig {
        self.set_message_type(MessageType::tagged::<T>(fingerprint))
    }

    /// [`RingConfig::message_type`] for a type known only at run time, given as its size,
    /// alignment and fingerprint: for bindings to other languages (the Python module's NumPy
    /// dtypes) and for programs that reproduce another ring's type without the Rust type (the
    /// zenoh bridge copies the remote ring's [`Ring::message_type`]). Their sides claim roles
    /// with [`Ring::producer`]/[`Ring::consumer`] after comparing [`Ring::message_type`]
    /// themselves. The fields are checked when the ring is made, as for a Rust type
    /// ([`Error::InvalidConfig`](crate::Error::InvalidConfig)).
    ///
    /// # Examples
    ///
    /// ```
    /// use shmpipe::{Heap, MessageType, Ring, RingConfig, type_tag};
    /// let t = MessageType { size: 16, align: 8, fingerprint: type_tag("example.Pair/v1") };
    /// let ring = Ring::create(Heap, &RingConfig::new().message_type_raw(t))?;
    /// assert_eq!(ring.message_type(), Some(t));
    /// assert_eq!(ring.max_message(), 16);
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    pub fn message_type_raw(self, message_type: MessageType) -> RingConfig {
        self.set_message_type(message_type)
    }
}

impl Ring {
    /// The typed claims of this ring for `T`: [`TypedClaim::producer`] and
    /// [`TypedClaim::consumer`] claim a role of a typed ring of `T` (see
    /// [`RingConfig::message_type`]), [`TypedClaim::tagged`] chooses the fingerprint, and
    /// [`TypedClaim::take_over_producer`] / [`TypedClaim::take_over_consumer`] take a role over
    /// from a dead holder. The ring's recorded type is checked before the role is claimed, so
    /// a refusal leaves the ring untouched.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmpipe::bytemuck::{Pod, Zeroable};
    /// use shmpipe::{Key, Ring, RingConfig, Shmid};
    ///
    /// #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
    /// #[bytemuck(crate = "shmpipe::bytemuck")] // derive through shmpipe's re-export
    /// #[repr(C)]
    /// struct Tick {
    ///     seq: u64,
    ///     price: f64,
    /// }
    ///
    /// let ring = Ring::create(Key::Private, &RingConfig::new().message_type::<Tick>())?;
    /// // The other process: Ring::open(Shmid(shmid), &cfg)?.typed::<Tick>().consumer()?
    /// let peer = Ring::open(Shmid(ring.shmid().unwrap()), &RingConfig::new())?;
    /// let mut rx = peer.typed::<Tick>().consumer()?;
    /// let mut tx = ring.typed::<Tick>().producer()?;
    /// tx.send(Tick { seq: 1, price: 2.5 }).unwrap();
    /// assert_eq!(rx.recv().unwrap(), Tick { seq: 1, price: 2.5 });
    /// ring.remove()?;
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    pub fn typed<T: Pod>(&self) -> TypedClaim<'_, T> {
        TypedClaim {
            ring: self,
            fingerprint: type_fingerprint::<T>(),
            _type: PhantomData,
        }
    }
}

/// How to claim a role of a typed ring ([`Ring::typed`]): with `T`'s default fingerprint or a
/// tag ([`TypedClaim::tagged`]), as a new holder or taking over from a dead one.
pub struct TypedClaim<'r, T> {
    ring: &'r Ring,
    fingerprint: u64,
    _type: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for TypedClaim<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedClaim")
            .field("ring", &self.ring.ident())
            .field("type", &type_name::<T>())
            .field("fingerprint", &format_args!("{:#018x}", self.fingerprint))
            .finish()
    }
}

impl<T: Pod> TypedClaim<'_, T> {
    /// Expects the ring to record `fingerprint` (as created by
    /// [`RingConfig::message_type_tagged`]) instead of `T`'s default fingerprint.
    pub fn tagged(mut self, fingerprint: u64) -> Self {
        self.fingerprint = fingerprint;
        self
    }

    /// Claims the producer role of a typed ring of `T`.
    ///
    /// # Errors
    ///
    /// [`Error::TypeMismatch`] if the ring is untyped or records another size, alignment or
    /// fingerprint; [`Error::InvalidConfig`] if `T` cannot be a message type (zero-sized or
    /// aligned to more than 8); then the errors of [`Ring::producer`].
    pub fn producer(self) -> Result<TypedProducer<T>, Error> {
        self.check()?;
        Ok(TypedProducer::new(self.ring.producer()?))
    }

    /// Claims the consumer role of a typed ring of `T`.
    ///
    /// # Errors
    ///
    /// As [`TypedClaim::producer`], then the errors of [`Ring::consumer`].
    pub fn consumer(self) -> Result<TypedConsumer<T>, Error> {
        self.check()?;
        Ok(TypedConsumer::new(self.ring.consumer()?, self.ring.ident()))
    }

    /// Takes the producer role over from a dead holder; see [`Ring::take_over_producer`].
    ///
    /// # Errors
    ///
    /// As [`TypedClaim::producer`] and [`Ring::take_over_producer`].
    pub fn take_over_producer(self) -> Result<TypedProducer<T>, Error> {
        self.check()?;
        Ok(TypedProducer::new(self.ring.take_over_producer()?))
    }

    /// Takes the consumer role over from a dead holder; see [`Ring::take_over_consumer`].
    ///
    /// # Errors
    ///
    /// As [`TypedClaim::consumer`] and [`Ring::take_over_consumer`].
    pub fn take_over_consumer(self) -> Result<TypedConsumer<T>, Error> {
        self.check()?;
        Ok(TypedConsumer::new(
            self.ring.take_over_consumer()?,
            self.ring.ident(),
        ))
    }

    /// Whether the ring carries `T` with our fingerprint. Reads the geometry validated at
    /// attach (private memory), never the segment.
    fn check(&self) -> Result<(), Error> {
        let want = MessageType::tagged::<T>(self.fingerprint);
        want.check(want.size).map_err(|what| Error::InvalidConfig {
            what: format!("`{}` cannot be a message type: {what}", type_name::<T>()),
        })?;
        let found = self.ring.message_type();
        if found == Some(want) {
            // Validated at attach: a typed ring's maximum message is its type's size.
            debug_assert_eq!(self.ring.max_message(), size_of::<T>());
            return Ok(());
        }
        Err(Error::TypeMismatch {
            ident: self.ring.ident(),
            expected: format!("`{}`, {want}", type_name::<T>()),
            found: match found {
                Some(t) => t.to_string(),
                None => "untyped byte messages".to_string(),
            },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Producer
// ---------------------------------------------------------------------------------------------

/// The sending side of a typed ring of `T`: [`TypedClaim::producer`]. A [`Producer`] that
/// sends each value as one record of `size_of::<T>()` bytes.
///
/// Dropping it closes the ring as dropping a [`Producer`] does.
///
/// # Examples
///
/// ```
/// use shmpipe::{Heap, Ring, RingConfig, TrySendError};
/// let cfg = RingConfig::new().slot_size(16).slot_count(4).message_type::<u32>();
/// let ring = Ring::create(Heap, &cfg)?;
/// let (mut tx, mut rx) = (ring.typed::<u32>().producer()?, ring.typed::<u32>().consumer()?);
/// assert_eq!(tx.try_send_slice(&[1, 2, 3, 4, 5, 6]), Ok(4)); // four slots: four fit
/// assert_eq!(tx.try_send(7), Err(TrySendError::Full));
/// let mut buf = [0u32; 8];
/// assert_eq!(rx.try_recv_slice(&mut buf), Ok(4)); // four values, one release
/// assert_eq!(&buf[..4], &[1, 2, 3, 4]);
/// tx.send_slice(&[5, 6])?;
/// assert_eq!(rx.recv()?, 5);
/// # Ok::<(), shmpipe::Error>(())
/// ```
pub struct TypedProducer<T> {
    inner: Producer,
    _type: PhantomData<fn(T)>,
}

impl<T> std::fmt::Debug for TypedProducer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedProducer")
            .field("type", &type_name::<T>())
            .field("inner", &self.inner)
            .finish()
    }
}

impl<T: Pod> TypedProducer<T> {
    fn new(inner: Producer) -> TypedProducer<T> {
        TypedProducer {
            inner,
            _type: PhantomData,
        }
    }

    /// Sends `value` now if there is room: one copy into the ring, one publish.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] or [`TrySendError::Disconnected`];
    /// [`TrySendError::Corrupted`] if the consumer broke the protocol (sticky).
    #[inline]
    pub fn try_send(&mut self, value: T) -> Result<(), TrySendError> {
        self.inner.try_send(bytemuck::bytes_of(&value))
    }

    /// Sends `value`, waiting for room as the [`WaitStrategy`] says.
    ///
    /// # Errors
    ///
    /// As [`Producer::send`].
    pub fn send(&mut self, value: T) -> Result<(), SendError> {
        self.inner.send(bytemuck::bytes_of(&value))
    }

    /// [`TypedProducer::send`], giving up after `timeout` with [`SendError::Timeout`].
    ///
    /// # Errors
    ///
    /// As [`Producer::send_timeout`].
    pub fn send_timeout(&mut self, value: T, timeout: Duration) -> Result<(), SendError> {
        self.inner.send_timeout(bytemuck::bytes_of(&value), timeout)
    }

    /// Sends as many of `values` as fit now, in order, and publishes them together with one
    /// store (a [`SendBatch`](crate::SendBatch)). Returns how many were sent: at least 1 (0
    /// only for an empty slice).
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] if not even the first fits; [`TrySendError::Disconnected`] or
    /// [`TrySendError::Corrupted`] if the first cannot be sent for that reason. When a later
    /// value meets one of these, the values before it are sent and counted, and the next call
    /// reports it.
    pub fn try_send_slice(&mut self, values: &[T]) -> Result<usize, TrySendError> {
        let mut batch = self.inner.batch();
        for (i, v) in values.iter().enumerate() {
            if let Err(e) = batch.try_send(bytemuck::bytes_of(v)) {
                return if i == 0 { Err(e) } else { Ok(i) };
            }
        }
        Ok(values.len())
        // Dropping the batch publishes it: one Release store of the tail.
    }

    /// Sends all of `values`, in batches of as many as fit, waiting for room as the
    /// [`WaitStrategy`] says whenever the ring is full.
    ///
    /// # Errors
    ///
    /// As [`Producer::send`]. The values before the one that met the error were sent, in
    /// order; it and those after it were not. (To resume after a timeout at the exact value,
    /// loop over [`TypedProducer::try_send_slice`], which counts, and
    /// [`TypedProducer::send_timeout`].)
    pub fn send_slice(&mut self, values: &[T]) -> Result<(), SendError> {
        self.send_slice_until(values, None)
    }

    /// [`TypedProducer::send_slice`], giving up with [`SendError::Timeout`] once `timeout` has
    /// passed (in all, not per wait).
    ///
    /// # Errors
    ///
    /// As [`TypedProducer::send_slice`], and [`SendError::Timeout`].
    pub fn send_slice_timeout(&mut self, values: &[T], timeout: Duration) -> Result<(), SendError> {
        self.send_slice_until(values, Some(Instant::now() + timeout))
    }

    fn send_slice_until(
        &mut self,
        values: &[T],
        deadline: Option<Instant>,
    ) -> Result<(), SendError> {
        let mut sent = 0;
        while sent < values.len() {
            match self.try_send_slice(&values[sent..]) {
                Ok(n) => sent += n,
                Err(TrySendError::Full) => {
                    // Wait for room with a blocking send of the next value; the rest goes in
                    // batches again.
                    let next = bytemuck::bytes_of(&values[sent]);
                    match deadline {
                        None => self.inner.send(next),
                        Some(d) => self
                            .inner
                            .send_timeout(next, d.saturating_duration_since(Instant::now())),
                    }?;
                    sent += 1;
                }
                Err(e) => return Err(SendError::from(e)),
            }
        }
        Ok(())
    }

    /// Reserves the slot of the next value now, if there is room, and lends it in place (zero
    /// copy): the grant holds whatever the slot held before (any bit pattern is a valid `T`).
    /// [`TypedWriteGrant::commit`] sends it; dropping the grant sends nothing.
    ///
    /// # Errors
    ///
    /// As [`Producer::try_reserve`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use shmpipe::{Heap, Ring, RingConfig};
    /// let ring = Ring::create(Heap, &RingConfig::new().message_type::<[u64; 4]>())?;
    /// let mut tx = ring.typed::<[u64; 4]>().producer()?;
    /// let mut rx = ring.typed::<[u64; 4]>().consumer()?;
    /// let mut grant = tx.try_reserve().unwrap();
    /// grant.set([0; 4]);
    /// grant.view_mut().write_at(2 * 8, 7u64)?; // built in the ring, field by field
    /// grant.commit();
    /// assert_eq!(rx.try_lend()?.get()[2], 7); // copied out of the ring
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    #[inline]
    pub fn try_reserve(&mut self) -> Result<TypedWriteGrant<'_, T>, TrySendError> {
        self.inner
            .try_reserve(size_of::<T>())
            .map(TypedWriteGrant::new)
    }

    /// [`TypedProducer::try_reserve`], waiting for room as the [`WaitStrategy`] says.
    ///
    /// # Errors
    ///
    /// As [`Producer::reserve`].
    pub fn reserve(&mut self) -> Result<TypedWriteGrant<'_, T>, SendError> {
        self.inner.reserve(size_of::<T>()).map(TypedWriteGrant::new)
    }

    /// [`TypedProducer::reserve`], giving up after `timeout` with [`SendError::Timeout`].
    ///
    /// # Errors
    ///
    /// As [`Producer::reserve_timeout`].
    pub fn reserve_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<TypedWriteGrant<'_, T>, SendError> {
        self.inner
            .reserve_timeout(size_of::<T>(), timeout)
            .map(TypedWriteGrant::new)
    }

    /// How blocking calls wait (default [`WaitStrategy::SpinThenSleep`]).
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.inner.set_wait_strategy(strategy);
    }

    /// The byte producer underneath (e.g. for [`Producer::check_consumer`]).
    pub fn as_bytes(&self) -> &Producer {
        &self.inner
    }

    /// The byte producer underneath, keeping the role.
    pub fn into_inner(self) -> Producer {
        self.inner
    }
}

/// The slot of one value, reserved by [`TypedProducer::try_reserve`] (or
/// [`TypedProducer::reserve`], [`TypedProducer::reserve_timeout`]) and written in place:
/// [`TypedWriteGrant::set`] copies a value in, [`TypedWriteGrant::view_mut`] writes parts of it
/// ([`RingSliceMut::write_at`]); [`TypedWriteGrant::commit`] sends it, dropping the grant
/// discards it. Like [`WriteGrant`], it hands out no `&mut T` into the ring unless the peer is
/// trusted ([`TypedWriteGrant::get_mut_trusted`]).
///
/// ```compile_fail
/// # use shmpipe::{Heap, Ring, RingConfig};
/// # let ring = Ring::create(Heap, &RingConfig::new().message_type::<u64>()).unwrap();
/// # let mut tx = ring.typed::<u64>().producer().unwrap();
/// let mut grant = tx.try_reserve().unwrap();
/// *grant = 7; // no reference into memory the peer can touch
/// ```
pub struct TypedWriteGrant<'a, T> {
    grant: WriteGrant<'a>,
    _type: PhantomData<&'a mut T>,
}

impl<'a, T: Pod> TypedWriteGrant<'a, T> {
    fn new(grant: WriteGrant<'a>) -> TypedWriteGrant<'a, T> {
        assert_eq!(grant.len(), size_of::<T>(), "a grant of one value");
        // The payload is 8-aligned by construction (docs/LAYOUT.md, `MAX_TYPE_ALIGN`), and a
        // typed ring's T is aligned to at most 8 (checked at claim). Our own geometry decides
        // this, never the peer; the check guards the cast in `get_mut_trusted` against a
        // future backing that broke it.
        assert!(
            grant.view().as_ptr().cast::<T>().is_aligned(),
            "ring payloads are 8-aligned"
        );
        TypedWriteGrant {
            grant,
            _type: PhantomData,
        }
    }

    /// Sends the value (its bytes as they are in the slot now).
    pub fn commit(self) {
        self.grant.commit();
    }

    /// Copies `value` into the slot (not sent until [`TypedWriteGrant::commit`]).
    #[inline]
    pub fn set(&mut self, value: T) {
        self.grant.copy_from_slice(bytemuck::bytes_of(&value));
    }

    /// Writes `value` into the slot and sends it.
    #[inline]
    pub fn write(mut self, value: T) {
        self.set(value);
        self.commit();
    }

    /// The value in the slot now, copied out.
    #[inline]
    pub fn get(&self) -> T {
        self.grant.view().read_at(0).expect("a grant of one value")
    }

    /// The slot's bytes, to write parts of the value ([`RingSliceMut::write_at`] at a field's
    /// `offset_of!`).
    #[inline]
    pub fn view_mut(&mut self) -> RingSliceMut<'_> {
        self.grant.view_mut()
    }

    /// The value in the slot as `&mut T`, at full speed, for a peer trusted to follow the
    /// protocol.
    ///
    /// # Safety
    ///
    /// As [`WriteGrant::as_mut_slice_trusted`]: the consumer's process must not touch the slot
    /// while the reference lives (the protocol forbids it; this is the promise that the peer
    /// follows it).
    #[inline]
    pub unsafe fn get_mut_trusted(&mut self) -> &mut T {
        // SAFETY: the grant's bytes are `size_of::<T>()` bytes (asserted in `new`) of slots the
        // protocol gives the producer alone until it publishes them, initialised, and aligned
        // for `T` (asserted in `new`). `T: Pod` makes any bit pattern a valid `T` with no
        // interior mutability; the caller promises the peer keeps out; the borrow of `self`
        // keeps the slot ours for the reference's lifetime.
        unsafe { &mut *self.grant.as_mut_slice_trusted().as_mut_ptr().cast::<T>() }
    }
}

impl<T> std::fmt::Debug for TypedWriteGrant<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedWriteGrant")
            .field("type", &type_name::<T>())
            .field("grant", &self.grant)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Consumer
// ---------------------------------------------------------------------------------------------

/// The receiving side of a typed ring of `T`: [`TypedClaim::consumer`]. A [`Consumer`] that
/// checks every record is exactly `size_of::<T>()` bytes and hands it out as a `T`.
///
/// A record of another length (from a byte producer or a hostile one) is
/// [`Corruption::WrongMessageSize`]: the consumer is poisoned (every later call returns the
/// same error) and the record stays in the ring, readable through
/// [`TypedConsumer::into_inner`].
///
/// # Examples
///
/// ```
/// use shmpipe::{Corruption, Heap, Ring, RingConfig, TryRecvError};
/// let ring = Ring::create(Heap, &RingConfig::new().message_type::<[u16; 4]>())?;
/// let mut rx = ring.typed::<[u16; 4]>().consumer()?;
/// let mut bytes = ring.producer()?; // a byte producer may share a typed ring...
/// bytes.try_send(&[0u8; 8]).unwrap();
/// bytes.try_send(b"oops").unwrap();
/// assert_eq!(rx.try_recv(), Ok([0; 4]));
/// match rx.try_recv() {
///     // ...but a record that is not one value is refused, never misread.
///     Err(TryRecvError::Corrupted(c)) => {
///         assert!(matches!(c.what, Corruption::WrongMessageSize { len: 4, expected: 8, .. }))
///     }
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), shmpipe::Error>(())
/// ```
pub struct TypedConsumer<T> {
    inner: Consumer,
    ident: Ident,
    poisoned: Option<Corrupted>,
    _type: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for TypedConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedConsumer")
            .field("type", &type_name::<T>())
            .field("inner", &self.inner)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl<T: Pod> TypedConsumer<T> {
    fn new(inner: Consumer, ident: Ident) -> TypedConsumer<T> {
        TypedConsumer {
            inner,
            ident,
            poisoned: None,
            _type: PhantomData,
        }
    }

    /// Receives the next value (one copy out of the ring).
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`]; [`TryRecvError::Disconnected`] once the producer closed the
    /// ring and every value was received; [`TryRecvError::Corrupted`] if the producer broke
    /// the protocol or sent a record that is not one `T` (sticky).
    #[inline]
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.check_poisoned()?;
        let guard = self.inner.try_lend()?;
        Ok(read_value(guard, self.ident, &mut self.poisoned)?)
    }

    /// Receives the next value, waiting for one as the [`WaitStrategy`] says.
    ///
    /// # Errors
    ///
    /// As [`Consumer::recv`] (never `BufferTooSmall`), and [`RecvError::Corrupted`] for a
    /// record that is not one `T`.
    pub fn recv(&mut self) -> Result<T, RecvError> {
        self.recv_opt(None)
    }

    /// [`TypedConsumer::recv`], giving up after `timeout` with [`RecvError::Timeout`].
    ///
    /// # Errors
    ///
    /// As [`TypedConsumer::recv`], and [`RecvError::Timeout`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvError> {
        self.recv_opt(Some(timeout))
    }

    fn recv_opt(&mut self, timeout: Option<Duration>) -> Result<T, RecvError> {
        self.check_poisoned()?;
        let guard = match timeout {
            None => self.inner.lend()?,
            Some(t) => self.inner.lend_timeout(t)?,
        };
        Ok(read_value(guard, self.ident, &mut self.poisoned)?)
    }

    /// Receives as many values as are waiting, up to `out.len()`, into `out`, and releases
    /// their slots together with one store (a [`RecvBatch`](crate::RecvBatch)). Returns how
    /// many: at least 1 (0 only for an empty `out`).
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`], [`TryRecvError::Disconnected`] or [`TryRecvError::Corrupted`]
    /// if not even one value can be received. When a later record meets one of these, the
    /// values before it are received and counted, and the next call reports it.
    pub fn try_recv_slice(&mut self, out: &mut [T]) -> Result<usize, TryRecvError> {
        self.check_poisoned()?;
        let mut batch = self.inner.batch();
        for (i, slot) in out.iter_mut().enumerate() {
            let value = batch
                .try_lend()
                .and_then(|g| Ok(read_value(g, self.ident, &mut self.poisoned)?));
            match value {
                Ok(v) => *slot = v,
                Err(e) => return if i == 0 { Err(e) } else { Ok(i) },
            }
        }
        Ok(out.len())
        // Dropping the batch releases every slot read: one Release store of the head.
    }

    /// Receives at least one value into `out`, waiting for the first as the [`WaitStrategy`]
    /// says, then as many more as are waiting (see [`TypedConsumer::try_recv_slice`]).
    /// Returns how many (0 only for an empty `out`).
    ///
    /// # Errors
    ///
    /// As [`TypedConsumer::recv`], if not even one value can be received.
    pub fn recv_slice(&mut self, out: &mut [T]) -> Result<usize, RecvError> {
        self.recv_slice_opt(out, None)
    }

    /// [`TypedConsumer::recv_slice`], giving up after `timeout` with [`RecvError::Timeout`]
    /// if no value came.
    ///
    /// # Errors
    ///
    /// As [`TypedConsumer::recv_timeout`].
    pub fn recv_slice_timeout(
        &mut self,
        out: &mut [T],
        timeout: Duration,
    ) -> Result<usize, RecvError> {
        self.recv_slice_opt(out, Some(timeout))
    }

    fn recv_slice_opt(
        &mut self,
        out: &mut [T],
        timeout: Option<Duration>,
    ) -> Result<usize, RecvError> {
        match self.try_recv_slice(out) {
            Err(TryRecvError::Empty) => {}
            other => return other.map_err(RecvError::from),
        }
        let Some((first, rest)) = out.split_first_mut() else {
            return Ok(0);
        };
        *first = self.recv_opt(timeout)?;
        // Anything that stops the rest (empty, end of stream, corruption) is reported by the
        // next call, after the value we have.
        Ok(1 + self.try_recv_slice(rest).unwrap_or(0))
    }

    /// Lends the next value in place (zero copy), if one is waiting; its slot is released when
    /// the guard drops.
    ///
    /// # Errors
    ///
    /// As [`TypedConsumer::try_recv`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use shmpipe::{Heap, Ring, RingConfig};
    /// let ring = Ring::create(Heap, &RingConfig::new().message_type::<[u8; 32]>())?;
    /// let (mut tx, mut rx) = (ring.typed().producer()?, ring.typed::<[u8; 32]>().consumer()?);
    /// tx.try_send([9u8; 32]).unwrap();
    /// let value = rx.try_lend()?; // lent in place
    /// assert_eq!(value.view().read_at::<u8>(31), Ok(9)); // one byte copied out
    /// assert_eq!(value.get().iter().map(|&b| u32::from(b)).sum::<u32>(), 9 * 32);
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    #[inline]
    pub fn try_lend(&mut self) -> Result<TypedReadGuard<'_, T>, TryRecvError> {
        self.check_poisoned()?;
        let guard = self.inner.try_lend()?;
        Ok(TypedReadGuard::new(guard, self.ident, &mut self.poisoned)?)
    }

    /// [`TypedConsumer::try_lend`], waiting for a value as the [`WaitStrategy`] says.
    ///
    /// # Errors
    ///
    /// As [`TypedConsumer::recv`].
    pub fn lend(&mut self) -> Result<TypedReadGuard<'_, T>, RecvError> {
        self.check_poisoned()?;
        let guard = self.inner.lend()?;
        Ok(TypedReadGuard::new(guard, self.ident, &mut self.poisoned)?)
    }

    /// [`TypedConsumer::lend`], giving up after `timeout` with [`RecvError::Timeout`].
    ///
    /// # Errors
    ///
    /// As [`TypedConsumer::recv_timeout`].
    pub fn lend_timeout(&mut self, timeout: Duration) -> Result<TypedReadGuard<'_, T>, RecvError> {
        self.check_poisoned()?;
        let guard = self.inner.lend_timeout(timeout)?;
        Ok(TypedReadGuard::new(guard, self.ident, &mut self.poisoned)?)
    }

    /// How blocking calls wait (default [`WaitStrategy::SpinThenSleep`]).
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.inner.set_wait_strategy(strategy);
    }

    /// Whether the producer broke the protocol or sent a record that is not one `T` (then
    /// every call fails with this).
    pub fn poisoned(&self) -> Option<&Corrupted> {
        self.poisoned.as_ref().or(self.inner.poisoned())
    }

    /// The byte consumer underneath, keeping the role. A record refused for its length is
    /// still there, to be read as bytes.
    pub fn into_inner(self) -> Consumer {
        self.inner
    }

    /// The byte consumer underneath, for the async typed consumer's waits.
    #[cfg(feature = "tokio")]
    pub(crate) fn bytes(&self) -> &Consumer {
        &self.inner
    }

    /// The byte consumer underneath, for the async typed consumer's waits.
    #[cfg(feature = "tokio")]
    pub(crate) fn bytes_mut(&mut self) -> &mut Consumer {
        &mut self.inner
    }

    fn check_poisoned(&self) -> Result<(), Corrupted> {
        self.poisoned.map_or(Ok(()), Err)
    }
}

impl From<Corrupted> for TryRecvError {
    fn from(c: Corrupted) -> TryRecvError {
        TryRecvError::Corrupted(c)
    }
}

impl From<Corrupted> for RecvError {
    fn from(c: Corrupted) -> RecvError {
        RecvError::Corrupted(c)
    }
}

/// Checks that a lent record is one `T`. If not, leaves it unconsumed and poisons.
fn check_len<'a, T>(
    guard: ReadGuard<'a>,
    ident: Ident,
    poisoned: &mut Option<Corrupted>,
) -> Result<ReadGuard<'a>, Corrupted> {
    if guard.len() == size_of::<T>() {
        return Ok(guard);
    }
    let c = Corrupted {
        ring: ident,
        what: Corruption::WrongMessageSize {
            at: guard.at(),
            // The byte consumer checked it against the maximum, a u32.
            len: guard.len() as u32,
            expected: size_of::<T>() as u32,
        },
    };
    // Not dropped: dropping would consume the record. Forgetting the guard leaves the
    // consumer's read position where it was (a guard owns no memory: nothing leaks).
    std::mem::forget(guard);
    *poisoned = Some(c);
    Err(c)
}

/// Copies a lent record out as a `T` and consumes it (releasing its slots unless in a batch).
#[inline]
fn read_value<T: Pod>(
    guard: ReadGuard<'_>,
    ident: Ident,
    poisoned: &mut Option<Corrupted>,
) -> Result<T, Corrupted> {
    let guard = check_len::<T>(guard, ident, poisoned)?;
    // Copied out (no alignment assumption at all for the by-value path).
    Ok(guard.read_at(0).expect("checked: one T"))
}

/// One value lent in place by [`TypedConsumer::try_lend`], [`TypedConsumer::lend`] or
/// [`TypedConsumer::lend_timeout`];
/// dropping it consumes the value and frees its slot. [`TypedReadGuard::get`] copies the value
/// out and [`TypedReadGuard::view`] parts of it ([`RingSlice::read_at`] at a field's
/// `offset_of!`): a copy cannot change after it is checked, where a `&T` into the ring could
/// (a range-checked field that the compiler loads again). [`TypedReadGuard::get_trusted`] is
/// the full-speed `&T` for a peer trusted to follow the protocol.
///
/// ```compile_fail
/// # use shmpipe::{Heap, Ring, RingConfig};
/// # let ring = Ring::create(Heap, &RingConfig::new().message_type::<u64>()).unwrap();
/// # let (mut tx, mut rx) = (ring.typed::<u64>().producer().unwrap(), ring.typed::<u64>().consumer().unwrap());
/// # tx.try_send(7).unwrap();
/// let guard = rx.try_lend().unwrap();
/// let value: u64 = *guard; // no reference into memory the peer can write
/// ```
pub struct TypedReadGuard<'a, T> {
    guard: ReadGuard<'a>,
    _type: PhantomData<&'a T>,
}

impl<'a, T: Pod> TypedReadGuard<'a, T> {
    fn new(
        guard: ReadGuard<'a>,
        ident: Ident,
        poisoned: &mut Option<Corrupted>,
    ) -> Result<TypedReadGuard<'a, T>, Corrupted> {
        let guard = check_len::<T>(guard, ident, poisoned)?;
        // As in `TypedWriteGrant::new`: 8-aligned payloads, T aligned to at most 8, decided by
        // our own geometry.
        assert!(
            guard.view().as_ptr().cast::<T>().is_aligned(),
            "ring payloads are 8-aligned"
        );
        Ok(TypedReadGuard {
            guard,
            _type: PhantomData,
        })
    }

    /// The value, copied out of the ring.
    #[inline]
    pub fn get(&self) -> T {
        self.guard.read_at(0).expect("checked: one T")
    }

    /// The value's bytes in the ring, to copy out parts of it.
    #[inline]
    pub fn view(&self) -> RingSlice<'_> {
        self.guard.view()
    }

    /// The value in the ring as `&T`, at full speed, for a peer trusted to follow the protocol.
    ///
    /// # Safety
    ///
    /// As [`ReadGuard::as_slice_trusted`]: the producer's process must not write the slot
    /// while the reference lives (the protocol forbids it; this is the promise that the peer
    /// follows it).
    #[inline]
    pub unsafe fn get_trusted(&self) -> &T {
        // SAFETY: the guard lends `size_of::<T>()` bytes (checked in `new`) of a record the
        // consumer validated and owns until it releases it, after this guard drops; they are
        // initialised and aligned for `T` (checked in `new`), and `T: Pod` makes any bit
        // pattern a valid `T`. The caller promises nobody writes them meanwhile.
        unsafe { &*self.guard.as_slice_trusted().as_ptr().cast::<T>() }
    }
}

impl<T> std::fmt::Debug for TypedReadGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedReadGuard")
            .field("type", &type_name::<T>())
            .field("guard", &self.guard)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::at::Heap;
    use bytemuck::Zeroable;

    #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Tick {
        seq: u64,
        price: f64,
        qty: u32,
        side: u32,
    }

    #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Quote {
        seq: u64,
        bid: f64,
        ask: u32,
        size: u32,
    }

    fn tick(seq: u64) -> Tick {
        Tick {
            seq,
            price: seq as f64 * 0.25,
            qty: seq as u32 ^ 0xabcd,
            side: (seq % 2) as u32,
        }
    }

    #[test]
    fn fingerprint_is_stable_and_tells_types_apart() {
        assert_eq!(type_fingerprint::<Tick>(), type_fingerprint::<Tick>());
        assert_eq!(MessageType::of::<Tick>(), MessageType::of::<Tick>());
        let all = [
            type_fingerprint::<Tick>(),
            type_fingerprint::<Quote>(), // same size and alignment, another name
            type_fingerprint::<u64>(),
            type_fingerprint::<f64>(),
            type_fingerprint::<[u8; 8]>(),
            type_fingerprint::<[u32; 2]>(),
            type_fingerprint::<u32>(),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // FNV-1a 64 reference values.
        assert_eq!(type_tag(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(type_tag("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(type_tag("foobar"), 0x8594_4171_f739_67e8);
        let t = MessageType::of::<Tick>();
        assert_eq!((t.size, t.align), (24, 8));
    }

    #[test]
    fn values_by_copy_in_batches_and_in_place() {
        let cfg = RingConfig::new()
            .slot_size(32)
            .slot_count(16)
            .message_type::<Tick>();
        let ring = Ring::create(Heap, &cfg).unwrap();
        let (mut tx, mut rx) = (
            ring.typed::<Tick>().producer().unwrap(),
            ring.typed::<Tick>().consumer().unwrap(),
        );
        let mut next_out = 0u64;
        let mut next_in = 0u64;
        let mut buf = [Tick::zeroed(); 5];
        // Each round sends 1 to 7 values (the ring holds 16) one way, then drains them another.
        for round in 0..200u64 {
            match round % 4 {
                0 => {
                    tx.try_send(tick(next_out)).unwrap();
                    next_out += 1;
                }
                1 => {
                    let values: Vec<Tick> = (next_out..next_out + 7).map(tick).collect();
                    assert_eq!(tx.try_send_slice(&values), Ok(7));
                    next_out += 7;
                }
                2 => {
                    let mut g = tx.try_reserve().unwrap();
                    g.set(tick(next_out));
                    assert_eq!(g.get(), tick(next_out));
                    g.commit();
                    tx.try_reserve().unwrap().write(tick(next_out + 1));
                    let _ = tx.try_reserve().unwrap(); // discarded: nothing sent
                    next_out += 2;
                }
                _ => {
                    let values: Vec<Tick> = (next_out..next_out + 3).map(tick).collect();
                    tx.send_slice(&values).unwrap();
                    tx.send(tick(next_out + 3)).unwrap();
                    next_out += 4;
                }
            }
            while next_in < next_out {
                match (round + next_in) % 3 {
                    0 => {
                        let n = rx.try_recv_slice(&mut buf).unwrap();
                        for v in &buf[..n] {
                            assert_eq!(*v, tick(next_in));
                            next_in += 1;
                        }
                    }
                    1 => {
                        let v = rx.try_lend().unwrap();
                        assert_eq!(v.get(), tick(next_in));
                        drop(v);
                        next_in += 1;
                    }
                    _ => {
                        assert_eq!(rx.try_recv().unwrap(), tick(next_in));
                        next_in += 1;
                    }
                }
            }
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        }
        // The blocking slice receive: at least one, then what is there (up to the buffer).
        for v in (0..7).map(tick) {
            tx.try_send(v).unwrap();
        }
        assert_eq!(rx.recv_slice(&mut buf), Ok(5));
        assert_eq!(buf, [0, 1, 2, 3, 4].map(tick));
        assert_eq!(
            rx.recv_slice_timeout(&mut buf, Duration::from_secs(1)),
            Ok(2)
        );
        assert_eq!(buf[..2], [5, 6].map(tick));
        assert_eq!(
            rx.recv_slice_timeout(&mut buf, Duration::from_millis(1)),
            Err(RecvError::Timeout)
        );
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(tx);
        assert_eq!(rx.try_recv_slice(&mut buf), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn claims_check_the_recorded_type() {
        let ring = Ring::create(Heap, &RingConfig::new().message_type::<Tick>()).unwrap();
        assert_eq!(ring.message_type(), Some(MessageType::of::<Tick>()));
        for e in [
            ring.typed::<Quote>().consumer().unwrap_err(),
            ring.typed::<[u64; 3]>().consumer().unwrap_err(),
            ring.typed::<Tick>().tagged(1).consumer().unwrap_err(),
        ] {
            assert!(matches!(e, Error::TypeMismatch { .. }), "{e}");
        }
        // Refused before claiming: the role is still free.
        ring.typed::<Tick>().consumer().unwrap();
        let bytes = Ring::create(Heap, &RingConfig::new()).unwrap();
        assert_eq!(bytes.message_type(), None);
        let e = bytes.typed::<u64>().producer().unwrap_err();
        assert!(e.to_string().contains("untyped byte messages"), "{e}");
        // Not a message type at all.
        let e = ring.typed::<()>().producer().unwrap_err();
        assert!(matches!(e, Error::InvalidConfig { .. }), "{e}");
    }

    #[test]
    fn config_refuses_impossible_types() {
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        #[repr(C, align(16))]
        struct Wide([u8; 16]);
        for cfg in [
            RingConfig::new().message_type::<()>(),
            RingConfig::new().message_type::<Wide>(),
            RingConfig::new().message_type::<u64>().max_message(16),
            RingConfig::new().slot_count(1).message_type::<[u8; 64]>(),
        ] {
            assert!(
                matches!(Ring::create(Heap, &cfg), Err(Error::InvalidConfig { .. })),
                "{cfg:?}"
            );
        }
    }

    #[test]
    fn a_record_of_another_length_poisons_and_stays() {
        let ring = Ring::create(Heap, &RingConfig::new().message_type::<u64>()).unwrap();
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.typed::<u64>().consumer().unwrap();
        tx.try_send(&7u64.to_ne_bytes()).unwrap();
        tx.try_send(b"four").unwrap();
        assert_eq!(rx.try_recv(), Ok(7));
        let err = rx.try_recv().unwrap_err();
        let TryRecvError::Corrupted(c) = err else {
            panic!("{err:?}")
        };
        assert!(matches!(
            c.what,
            Corruption::WrongMessageSize {
                len: 4,
                expected: 8,
                ..
            }
        ));
        // Sticky, on every path.
        assert_eq!(rx.try_lend().unwrap_err(), TryRecvError::Corrupted(c));
        assert_eq!(rx.recv(), Err(RecvError::Corrupted(c)));
        assert_eq!(rx.poisoned(), Some(&c));
        // The record is still there for the byte API.
        let mut bytes = rx.into_inner();
        assert_eq!(bytes.try_lend().unwrap().to_vec(), b"four");
    }
}
