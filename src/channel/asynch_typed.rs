//! The async sides of typed rings (feature `tokio`): [`AsyncTypedProducer`] and
//! [`AsyncTypedConsumer`], the typed sides' calls with `.await`. They wait exactly as the byte
//! ones do (`crate::asynch`: spin, yield once, park on tokio's blocking pool, check the peer
//! every 10 ms), on the same `Op` machinery.

use std::time::Duration;

use bytemuck::Pod;

use crate::channel::asynch::{Op, Park, wait};
use crate::channel::typed::{TypedConsumer, TypedProducer};
use crate::error::{RecvError, SendError, TryRecvError, TrySendError};

/// The sending side of a typed ring of `T`, for tokio: [`AsyncTypedProducer::send`] waits for
/// room without blocking the runtime's thread. Made with [`TypedProducer::into_async`]; costs,
/// wake-ups and the runtime it needs are as for [`AsyncProducer`](crate::AsyncProducer).
///
/// **Cancellation.** `send` is cancel-safe (a dropped future sent nothing). `send_slice` is
/// not: dropped part-way, it has sent a prefix of the values, as `write_all` would have.
///
/// # Examples
///
/// ```
/// use shmpipe::{Heap, Ring, RingConfig};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rt = tokio::runtime::Builder::new_current_thread().build()?;
/// rt.block_on(async {
///     // Two 64-byte slots, one value each: the producer parks until the consumer thread
///     // frees room.
///     let ring = Ring::create(Heap, &RingConfig::new().slot_size(64).slot_count(2).message_type::<u64>())?;
///     let mut tx = ring.typed::<u64>().producer()?.into_async();
///     let mut rx = ring.typed::<u64>().consumer()?;
///     let consumer = std::thread::spawn(move || rx.iter().sum::<Result<u64, _>>());
///     tx.send(1).await?;
///     tx.send_slice(&[2, 3, 4]).await?;
///     drop(tx); // ends the stream
///     assert_eq!(consumer.join().unwrap()?, 10);
///     Ok(())
/// })
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncTypedProducer<T> {
    inner: TypedProducer<T>,
    park: Park,
}

#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl<T: Pod> TypedProducer<T> {
    /// This producer for tokio: see [`AsyncTypedProducer`].
    pub fn into_async(self) -> AsyncTypedProducer<T> {
        AsyncTypedProducer {
            inner: self,
            park: None,
        }
    }
}

impl<T: Pod> AsyncTypedProducer<T> {
    /// The blocking producer back (see [`AsyncConsumer::into_inner`](crate::AsyncConsumer::into_inner)
    /// about a park left running by a cancelled `send`).
    pub fn into_inner(self) -> TypedProducer<T> {
        self.inner
    }

    /// The producer, for its non-blocking calls (`try_send`, `try_send_slice`, `try_reserve`).
    pub fn get_mut(&mut self) -> &mut TypedProducer<T> {
        &mut self.inner
    }

    /// The producer.
    pub fn get_ref(&self) -> &TypedProducer<T> {
        &self.inner
    }

    /// Sends `value`, waiting for room without blocking the thread. Cancel-safe.
    ///
    /// # Errors
    ///
    /// As [`AsyncProducer::send`](crate::AsyncProducer::send).
    pub async fn send(&mut self, value: T) -> Result<(), SendError> {
        let mut op = SendOp {
            tx: &mut self.inner,
            value,
        };
        if let Some(done) = op.attempt() {
            return done;
        }
        wait(&mut op, &mut self.park).await
    }

    /// Sends all of `values`, in batches of as many as fit (one publish each, as
    /// [`TypedProducer::try_send_slice`]), waiting for room without blocking the thread
    /// whenever the ring is full. Not cancel-safe (see the type's docs).
    ///
    /// # Errors
    ///
    /// As [`AsyncTypedProducer::send`]; the values before the one that met the error were sent.
    pub async fn send_slice(&mut self, values: &[T]) -> Result<(), SendError> {
        let mut sent = 0;
        while sent < values.len() {
            match self.inner.try_send_slice(&values[sent..]) {
                Ok(n) => sent += n,
                Err(TrySendError::Full) => {
                    // Wait for room with a send of the next value; the rest goes in batches.
                    self.send(values[sent]).await?;
                    sent += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// A send of one value.
struct SendOp<'a, T> {
    tx: &'a mut TypedProducer<T>,
    value: T,
}

impl<T: Pod> Op for SendOp<'_, T> {
    type Output = ();
    type Error = SendError;

    #[inline]
    fn attempt(&mut self) -> Option<Result<(), SendError>> {
        match self.tx.try_send(self.value) {
            Err(TrySendError::Full) => None,
            done => Some(done.map_err(SendError::from)),
        }
    }

    fn check_peer(&mut self) -> Result<(), SendError> {
        self.tx.as_bytes().check_consumer()
    }

    fn sleeper(&self) -> impl FnOnce(Duration) + Send + 'static {
        self.tx.as_bytes().room_sleeper()
    }
}

/// The receiving side of a typed ring of `T`, for tokio: [`AsyncTypedConsumer::recv`] waits
/// for a value without blocking the runtime's thread. Made with [`TypedConsumer::into_async`];
/// costs, wake-ups and the runtime it needs are as for [`AsyncConsumer`](crate::AsyncConsumer).
///
/// **Cancellation.** `recv` and `recv_slice` are cancel-safe: values are consumed only when
/// they return `Ok`.
///
/// # Examples
///
/// ```
/// use shmpipe::{Heap, RecvError, Ring, RingConfig};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rt = tokio::runtime::Builder::new_current_thread().build()?;
/// rt.block_on(async {
///     let ring = Ring::create(Heap, &RingConfig::new().message_type::<[u32; 2]>())?;
///     let mut rx = ring.typed::<[u32; 2]>().consumer()?.into_async();
///     let mut tx = ring.typed::<[u32; 2]>().producer()?;
///     let producer = std::thread::spawn(move || tx.send_slice(&[[1, 2], [3, 4]]));
///     assert_eq!(rx.recv().await?, [1, 2]); // parks until the value comes
///     let mut rest = [[0; 2]; 4];
///     let n = rx.recv_slice(&mut rest).await?;
///     assert_eq!(&rest[..n], &[[3, 4]]);
///     producer.join().unwrap()?;
///     assert_eq!(rx.recv().await, Err(RecvError::Disconnected));
///     Ok(())
/// })
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncTypedConsumer<T> {
    inner: TypedConsumer<T>,
    park: Park,
}

#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl<T: Pod> TypedConsumer<T> {
    /// This consumer for tokio: see [`AsyncTypedConsumer`].
    pub fn into_async(self) -> AsyncTypedConsumer<T> {
        AsyncTypedConsumer {
            inner: self,
            park: None,
        }
    }
}

impl<T: Pod> AsyncTypedConsumer<T> {
    /// The blocking consumer back (see [`AsyncConsumer::into_inner`](crate::AsyncConsumer::into_inner)
    /// about a park left running by a cancelled `recv`).
    pub fn into_inner(self) -> TypedConsumer<T> {
        self.inner
    }

    /// The consumer, for its non-blocking calls (`try_recv`, `try_recv_slice`, `try_lend`).
    pub fn get_mut(&mut self) -> &mut TypedConsumer<T> {
        &mut self.inner
    }

    /// The consumer.
    pub fn get_ref(&self) -> &TypedConsumer<T> {
        &self.inner
    }

    /// Receives the next value, waiting for one without blocking the thread. Cancel-safe.
    ///
    /// # Errors
    ///
    /// As [`TypedConsumer::recv`], never [`RecvError::Timeout`]: wrap the call in
    /// `tokio::time::timeout` for a deadline.
    pub async fn recv(&mut self) -> Result<T, RecvError> {
        self.recv_with(TypedConsumer::try_recv).await
    }

    /// Receives at least one value into `out`, waiting for the first without blocking the
    /// thread, then as many more as are waiting (as [`TypedConsumer::try_recv_slice`]).
    /// Returns how many (0 only for an empty `out`). Cancel-safe.
    ///
    /// # Errors
    ///
    /// As [`AsyncTypedConsumer::recv`], if not even one value can be received.
    pub async fn recv_slice(&mut self, out: &mut [T]) -> Result<usize, RecvError> {
        self.recv_with(|rx: &mut TypedConsumer<T>| rx.try_recv_slice(out))
            .await
    }

    async fn recv_with<V, F>(&mut self, op: F) -> Result<V, RecvError>
    where
        F: FnMut(&mut TypedConsumer<T>) -> Result<V, TryRecvError>,
    {
        let mut op = RecvOp {
            rx: &mut self.inner,
            op,
        };
        if let Some(done) = op.attempt() {
            return done;
        }
        wait(&mut op, &mut self.park).await
    }
}

/// A receive: `op` is the non-blocking call (`try_recv` or `try_recv_slice`).
struct RecvOp<'a, T, F> {
    rx: &'a mut TypedConsumer<T>,
    op: F,
}

impl<T: Pod, V, F> Op for RecvOp<'_, T, F>
where
    F: FnMut(&mut TypedConsumer<T>) -> Result<V, TryRecvError>,
{
    type Output = V;
    type Error = RecvError;

    #[inline]
    fn attempt(&mut self) -> Option<Result<V, RecvError>> {
        match (self.op)(self.rx) {
            Err(TryRecvError::Empty) => None,
            done => Some(done.map_err(RecvError::from)),
        }
    }

    fn check_peer(&mut self) -> Result<(), RecvError> {
        self.rx.bytes_mut().check_producer_alive()
    }

    fn sleeper(&self) -> impl FnOnce(Duration) + Send + 'static {
        self.rx.bytes().data_sleeper()
    }
}
