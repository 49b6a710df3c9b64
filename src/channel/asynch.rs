//! The async producer and consumer (feature `tokio`): `send().await` and `recv().await`.
//!
//! Both wrap the blocking side and run the same protocol (DESIGN.md, "Async: parking on tokio's
//! blocking pool"). An operation first tries the non-blocking call: when it succeeds there is no
//! system call and no await point at all. When the ring is full (or empty), it spins for up to
//! `SPIN_FOR` (20 µs) on the worker thread, yields to the runtime once, then *parks*: it runs the
//! blocking side's sleep (`sleep_for_data` / `sleep_for_room`: announce with the W1 swap,
//! re-check, `FUTEX_WAIT` for at most one `SLEEP_SLICE`, 10 ms) on tokio's blocking pool and
//! awaits it, so the worker thread is free for other tasks and nothing spins. The peer is
//! unchanged: its W2 swap makes a `FUTEX_WAKE` only when we announced a sleep, so while both
//! sides are busy the async side costs no system call. After each park the operation tries
//! again, and every `CHECK_PEER_EVERY` (10 ms) of waiting asks the kernel whether the peer lives,
//! with the blocking side's own check, so a dead or closed peer gives the blocking API's errors,
//! never a hang.

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::channel::wait::{SLEEP_SLICE, SPIN_FOR, WaitClock};
use crate::channel::{Consumer, Producer};
use crate::error::{RecvError, SendError, TryRecvError, TrySendError};

/// A sleep running on the blocking pool: kept by the side, not by the operation's future, so
/// that an operation dropped while parked leaves it there for the next one to await instead of
/// starting a second sleeper on the same futex (the handshake has one sleeper per side).
pub(crate) type Park = Option<JoinHandle<()>>;

/// What one async operation waits for (the typed sides' too: `crate::asynch_typed`).
pub(crate) trait Op {
    /// The operation's result.
    type Output;
    /// Why it fails.
    type Error;
    /// Tries the operation without waiting: `None` if the ring is full (or empty).
    fn attempt(&mut self) -> Option<Result<Self::Output, Self::Error>>;
    /// The blocking side's liveness check of the peer.
    fn check_peer(&mut self) -> Result<(), Self::Error>;
    /// One sleep that borrows nothing, to run on the blocking pool. Call it right after
    /// `attempt` returned `None` (which re-read the peer's index).
    fn sleeper(&self) -> impl FnOnce(Duration) + Send + 'static;
}

/// Waits until `op` completes or fails: spin, yield once, then park slice after slice, checking
/// the peer every 10 ms (`WaitClock`). The policy of `wait::wait` with `SpinThenSleep`, with
/// the yield phase shortened to one `yield_now` and the sleep moved off the worker thread.
pub(crate) async fn wait<O: Op>(op: &mut O, park: &mut Park) -> Result<O::Output, O::Error> {
    let mut clock = WaitClock::start();
    let mut spinning = true;
    let mut yielded = false;
    loop {
        if let Some(done) = op.attempt() {
            return done;
        }
        // While spinning the clock is read every 64th round only (see `WaitClock`).
        if clock.tick(!spinning) {
            op.check_peer()?;
        }
        spinning = clock.waited() < SPIN_FOR;
        if spinning {
            std::hint::spin_loop();
        } else if !yielded {
            // Once: other tasks of this worker run, and a peer that answers at once is caught
            // without a park.
            yielded = true;
            tokio::task::yield_now().await;
        } else {
            let slice = SLEEP_SLICE.min(clock.until_check());
            if !park_once(park, op.sleeper(), slice).await {
                // The runtime is shutting down and runs no more blocking tasks: sleep one
                // slice here rather than spin (the caller is about to be dropped anyway).
                op.sleeper()(slice);
            }
        }
    }
}

/// Sleeps once on the blocking pool: awaits the park left by a cancelled operation if there is
/// one, else runs `sleep` for `slice` there. Returns when the sleeper does (woken by the peer,
/// or after its slice): `true`, or `false` if the runtime cancelled it unrun.
async fn park_once<F>(park: &mut Park, sleep: F, slice: Duration) -> bool
where
    F: FnOnce(Duration) + Send + 'static,
{
    let handle = park.get_or_insert_with(|| tokio::task::spawn_blocking(move || sleep(slice)));
    // If this future is dropped here, the handle stays in `park`: the sleeper ends by itself
    // within its slice (or at the peer's next wake-up), and the next operation awaits it.
    let done = handle.await;
    *park = None;
    match done {
        Ok(()) => true,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => false,
    }
}

/// The receiving side of a ring, for tokio: [`AsyncConsumer::recv`] waits for a message
/// without blocking the runtime's thread and without spinning while the ring stays empty.
///
/// Made from a [`Consumer`] with [`Consumer::into_async`] and turned
/// back into one with [`AsyncConsumer::into_inner`]. The producer may be blocking or async, in
/// this process or another: the protocol is the same.
///
/// **Cost.** A message that is already there is received with no system call and no await.
/// When the ring is empty, `recv` spins for up to 20 µs, yields once, then parks: a tokio
/// blocking-pool thread sleeps on the ring's futex (in slices of 10 ms) while the task waits,
/// and the producer's next publish wakes it with one `FUTEX_WAKE`, which it makes only because
/// we announced the sleep. So while the producer keeps up, no system call is made on either
/// side; a parked wait holds one blocking-pool thread (the pool is shared and capped: tokio's
/// `max_blocking_threads`, 512 by default). Must be polled inside a tokio runtime (it panics
/// otherwise, as `tokio::task::spawn_blocking` does).
///
/// **Cancellation.** `recv` and `recv_vec` are cancel-safe: a message is consumed only when
/// they return `Ok`, so dropping the future (a `tokio::time::timeout`, a `select!` branch that
/// lost) loses and duplicates nothing, and the next call receives the next message. A park
/// left running by a dropped future ends by itself within 10 ms, and the next `recv` awaits it
/// rather than starting a second one.
///
/// # Examples
///
/// ```
/// use shmpipe::{Heap, RecvError, Ring, RingConfig};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rt = tokio::runtime::Builder::new_current_thread().build()?;
/// rt.block_on(async {
///     let ring = Ring::create(Heap, &RingConfig::new())?;
///     let mut rx = ring.consumer()?.into_async();
///     let mut tx = ring.producer()?;
///     // A blocking producer on a thread (or in another process).
///     let producer = std::thread::spawn(move || {
///         std::thread::sleep(std::time::Duration::from_millis(20));
///         tx.send(b"hello").unwrap();
///         // Dropping `tx` closes the ring.
///     });
///     let mut buf = [0u8; 64];
///     let n = rx.recv(&mut buf).await?; // parks until the message comes
///     assert_eq!(&buf[..n], b"hello");
///     assert_eq!(rx.recv(&mut buf).await, Err(RecvError::Disconnected));
///     producer.join().unwrap();
///     Ok(())
/// })
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncConsumer {
    inner: Consumer,
    park: Park,
}

impl AsyncConsumer {
    /// The blocking consumer back. If a cancelled `recv` left a park running, it ends by
    /// itself within 10 ms; until then a blocking wait on the returned consumer may miss one
    /// wake-up and see its message up to 10 ms late (never later).
    pub fn into_inner(self) -> Consumer {
        self.inner
    }

    /// The consumer, for its non-blocking calls (`try_recv`, `try_lend`, `batch`, ...).
    pub fn get_mut(&mut self) -> &mut Consumer {
        &mut self.inner
    }

    /// The consumer.
    pub fn get_ref(&self) -> &Consumer {
        &self.inner
    }

    /// Receives the next message into `buf` and returns its length, waiting for one without
    /// blocking the thread. Cancel-safe.
    ///
    /// # Errors
    ///
    /// As [`Consumer::recv`]: [`RecvError::Disconnected`] once the producer closed the ring and
    /// every message was received; [`RecvError::PeerDied`] once its process died (noticed
    /// within about 10 ms) and every message it published was received;
    /// [`RecvError::BufferTooSmall`] (the message stays in the ring); [`RecvError::Corrupted`].
    /// Never [`RecvError::Timeout`]: wrap the call in `tokio::time::timeout` for a deadline.
    pub async fn recv(&mut self, buf: &mut [u8]) -> Result<usize, RecvError> {
        let mut op = RecvOp {
            rx: &mut self.inner,
            op: |rx: &mut Consumer| rx.try_recv(buf),
        };
        if let Some(done) = op.attempt() {
            return done;
        }
        wait(&mut op, &mut self.park).await
    }

    /// Receives the next message into `out`, replacing its contents, and returns its length.
    /// Cancel-safe.
    ///
    /// # Errors
    ///
    /// As [`AsyncConsumer::recv`], except that the buffer is never too small.
    pub async fn recv_vec(&mut self, out: &mut Vec<u8>) -> Result<usize, RecvError> {
        let mut op = RecvOp {
            rx: &mut self.inner,
            op: |rx: &mut Consumer| rx.try_recv_vec(out),
        };
        if let Some(done) = op.attempt() {
            return done;
        }
        wait(&mut op, &mut self.park).await
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl Consumer {
    /// This consumer for tokio: see [`AsyncConsumer`].
    pub fn into_async(self) -> AsyncConsumer {
        AsyncConsumer {
            inner: self,
            park: None,
        }
    }
}

/// A receive: `op` is the non-blocking call (`try_recv` or `try_recv_vec`).
struct RecvOp<'a, F> {
    rx: &'a mut Consumer,
    op: F,
}

impl<F> Op for RecvOp<'_, F>
where
    F: FnMut(&mut Consumer) -> Result<usize, TryRecvError>,
{
    type Output = usize;
    type Error = RecvError;

    #[inline]
    fn attempt(&mut self) -> Option<Result<usize, RecvError>> {
        match (self.op)(self.rx) {
            Err(TryRecvError::Empty) => None,
            done => Some(done.map_err(RecvError::from)),
        }
    }

    fn check_peer(&mut self) -> Result<(), RecvError> {
        self.rx.check_producer_alive()
    }

    fn sleeper(&self) -> impl FnOnce(Duration) + Send + 'static {
        self.rx.data_sleeper()
    }
}

/// The sending side of a ring, for tokio: [`AsyncProducer::send`] waits for room without
/// blocking the runtime's thread and without spinning while the ring stays full.
///
/// Made from a [`Producer`] with [`Producer::into_async`] and turned
/// back into one with [`AsyncProducer::into_inner`]. Costs and the wake-up are as for
/// [`AsyncConsumer`], with the roles swapped: a send that fits makes no system call and does
/// not await; on a full ring it spins up to 20 µs, yields once, then parks on the blocking pool
/// until the consumer frees room. Dropping it closes the ring, as dropping the producer does.
///
/// **Cancellation.** `send` is cancel-safe: the message is written only when `send` returns
/// `Ok`, so a dropped future sent nothing and the message can be sent again.
///
/// # Examples
///
/// ```
/// use shmpipe::{Heap, Ring, RingConfig};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rt = tokio::runtime::Builder::new_current_thread().build()?;
/// rt.block_on(async {
///     // Two slots: the second message has to wait for the consumer.
///     let ring = Ring::create(Heap, &RingConfig::new().slot_size(64).slot_count(2))?;
///     let mut tx = ring.producer()?.into_async();
///     let mut rx = ring.consumer()?;
///     let consumer = std::thread::spawn(move || {
///         let mut buf = [0u8; 64];
///         (0..3).map(|_| rx.recv(&mut buf).map(|n| buf[..n].to_vec())).collect::<Result<Vec<_>, _>>()
///     });
///     for msg in [&b"one"[..], b"two", b"three"] {
///         tx.send(msg).await?; // parks while the ring is full
///     }
///     assert_eq!(consumer.join().unwrap()?, [&b"one"[..], b"two", b"three"]);
///     Ok(())
/// })
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncProducer {
    inner: Producer,
    park: Park,
}

impl AsyncProducer {
    /// The blocking producer back (see [`AsyncConsumer::into_inner`] about a park left running
    /// by a cancelled `send`).
    pub fn into_inner(self) -> Producer {
        self.inner
    }

    /// The producer, for its non-blocking calls (`try_send`, `try_reserve`, `batch`, ...).
    pub fn get_mut(&mut self) -> &mut Producer {
        &mut self.inner
    }

    /// The producer.
    pub fn get_ref(&self) -> &Producer {
        &self.inner
    }

    /// Sends one message, waiting for room without blocking the thread. Cancel-safe.
    ///
    /// # Errors
    ///
    /// As [`Producer::send`]: [`SendError::Disconnected`] if the consumer closed the ring,
    /// [`SendError::PeerDied`] if its process died while we waited (noticed within about
    /// 10 ms), [`SendError::TooLarge`], [`SendError::Corrupted`]. Never [`SendError::Timeout`]:
    /// wrap the call in `tokio::time::timeout` for a deadline.
    pub async fn send(&mut self, msg: &[u8]) -> Result<(), SendError> {
        let mut op = SendOp {
            tx: &mut self.inner,
            msg,
        };
        if let Some(done) = op.attempt() {
            return done;
        }
        wait(&mut op, &mut self.park).await
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl Producer {
    /// This producer for tokio: see [`AsyncProducer`].
    pub fn into_async(self) -> AsyncProducer {
        AsyncProducer {
            inner: self,
            park: None,
        }
    }
}

/// A send of `msg`.
struct SendOp<'a, 'm> {
    tx: &'a mut Producer,
    msg: &'m [u8],
}

impl Op for SendOp<'_, '_> {
    type Output = ();
    type Error = SendError;

    #[inline]
    fn attempt(&mut self) -> Option<Result<(), SendError>> {
        match self.tx.try_send(self.msg) {
            Ok(()) => Some(Ok(())),
            Err(TrySendError::Full) => None,
            Err(e) => Some(Err(SendError::from(e))),
        }
    }

    fn check_peer(&mut self) -> Result<(), SendError> {
        self.tx.check_consumer()
    }

    fn sleeper(&self) -> impl FnOnce(Duration) + Send + 'static {
        self.tx.room_sleeper()
    }
}
