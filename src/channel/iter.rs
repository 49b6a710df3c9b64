//! A consumer as an iterator of messages: [`Consumer::iter`] waits for each one and ends at the
//! end of the stream, [`Consumer::try_iter`] takes what is there now. The same for
//! [`TypedConsumer`], yielding values.
//!
//! Both end (`None`) at a clean end of stream: the producer closed the ring and every message
//! was received. Any other error (the producer died, the ring is corrupted, the handle was
//! inherited across `fork`) is yielded once, as `Some(Err(..))`, and the iterator ends after
//! it, so `for msg in rx.iter() { let msg = msg?; .. }` neither loops on a sticky error nor
//! mistakes a truncated stream for a complete one.

use std::iter::FusedIterator;

use bytemuck::Pod;

use crate::channel::Consumer;
use crate::channel::typed::TypedConsumer;
use crate::error::{RecvError, TryRecvError};

/// What a receive's error means to an iterator.
enum Step {
    /// Nothing now, maybe later (`try_iter` on an empty ring): `None`, not latched.
    Pause,
    /// Clean end of stream: `None` from now on.
    End,
    /// Yield the error once, then `None` from now on.
    Fail,
}

trait Outcome {
    fn step(&self) -> Step;
}

impl Outcome for RecvError {
    fn step(&self) -> Step {
        match self {
            RecvError::Disconnected => Step::End,
            _ => Step::Fail,
        }
    }
}

impl Outcome for TryRecvError {
    fn step(&self) -> Step {
        match self {
            TryRecvError::Empty => Step::Pause,
            TryRecvError::Disconnected => Step::End,
            _ => Step::Fail,
        }
    }
}

/// One `next` of any of the iterators: `got` is the receive's result; `done` latches the end.
fn advance<V, E: Outcome>(done: &mut bool, got: Result<V, E>) -> Option<Result<V, E>> {
    match got {
        Ok(v) => Some(Ok(v)),
        Err(e) => match e.step() {
            Step::Pause => None,
            Step::End => {
                *done = true;
                None
            }
            Step::Fail => {
                *done = true;
                Some(Err(e))
            }
        },
    }
}

/// The messages of a [`Consumer`], each copied into a new `Vec`, waiting for each as the
/// consumer's [`WaitStrategy`](crate::WaitStrategy) says: [`Consumer::iter`].
#[derive(Debug)]
pub struct Iter<'a> {
    rx: &'a mut Consumer,
    done: bool,
}

impl Iterator for Iter<'_> {
    type Item = Result<Vec<u8>, RecvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut msg = Vec::new();
        let got = self.rx.recv_vec(&mut msg).map(|_| msg);
        advance(&mut self.done, got)
    }
}

impl FusedIterator for Iter<'_> {}

/// The messages waiting in a [`Consumer`] now, each copied into a new `Vec`, without waiting:
/// [`Consumer::try_iter`].
#[derive(Debug)]
pub struct TryIter<'a> {
    rx: &'a mut Consumer,
    done: bool,
}

impl Iterator for TryIter<'_> {
    type Item = Result<Vec<u8>, TryRecvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut msg = Vec::new();
        let got = self.rx.try_recv_vec(&mut msg).map(|_| msg);
        advance(&mut self.done, got)
    }
}

impl Consumer {
    /// Iterates over the messages, waiting for each (as [`Consumer::recv_vec`]); ends at the
    /// end of the stream. Another error is yielded once, then the iteration ends (see the
    /// module docs of `iter`).
    ///
    /// # Examples
    ///
    /// ```
    /// use shmpipe::{Heap, Ring, RingConfig};
    /// let ring = Ring::create(Heap, &RingConfig::new())?;
    /// let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
    /// let sender = std::thread::spawn(move || -> Result<(), shmpipe::SendError> {
    ///     for line in ["one", "two", "three"] {
    ///         tx.send(line.as_bytes())?;
    ///     }
    ///     Ok(()) // dropping `tx` ends the stream
    /// });
    /// let mut got = Vec::new();
    /// for msg in &mut rx {
    ///     got.push(String::from_utf8(msg?)?);
    /// }
    /// sender.join().unwrap()?;
    /// assert_eq!(got, ["one", "two", "three"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter(&mut self) -> Iter<'_> {
        Iter {
            rx: self,
            done: false,
        }
    }

    /// Iterates over the messages waiting now (as [`Consumer::try_recv_vec`]), without
    /// waiting; ends when the ring is empty or at the end of the stream. Another error is
    /// yielded once, then the iteration ends.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmpipe::{Heap, Ring, RingConfig};
    /// let ring = Ring::create(Heap, &RingConfig::new())?;
    /// let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
    /// tx.try_send(b"a")?;
    /// tx.try_send(b"b")?;
    /// let now: Vec<Vec<u8>> = rx.try_iter().collect::<Result<_, _>>()?;
    /// assert_eq!(now, [b"a", b"b"]);
    /// assert_eq!(rx.try_iter().count(), 0); // empty: ends at once
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    pub fn try_iter(&mut self) -> TryIter<'_> {
        TryIter {
            rx: self,
            done: false,
        }
    }
}

impl<'a> IntoIterator for &'a mut Consumer {
    type Item = Result<Vec<u8>, RecvError>;
    type IntoIter = Iter<'a>;

    /// [`Consumer::iter`].
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The values of a [`TypedConsumer`], waiting for each: [`TypedConsumer::iter`].
#[derive(Debug)]
pub struct TypedIter<'a, T> {
    rx: &'a mut TypedConsumer<T>,
    done: bool,
}

impl<T: Pod> Iterator for TypedIter<'_, T> {
    type Item = Result<T, RecvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let got = self.rx.recv();
        advance(&mut self.done, got)
    }
}

impl<T: Pod> FusedIterator for TypedIter<'_, T> {}

/// The values waiting in a [`TypedConsumer`] now, without waiting: [`TypedConsumer::try_iter`].
#[derive(Debug)]
pub struct TypedTryIter<'a, T> {
    rx: &'a mut TypedConsumer<T>,
    done: bool,
}

impl<T: Pod> Iterator for TypedTryIter<'_, T> {
    type Item = Result<T, TryRecvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let got = self.rx.try_recv();
        advance(&mut self.done, got)
    }
}

impl<T: Pod> TypedConsumer<T> {
    /// Iterates over the values, waiting for each (as [`TypedConsumer::recv`]); ends at the end
    /// of the stream. Another error (a record that is not one `T`, ...) is yielded once, then
    /// the iteration ends.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmpipe::{Heap, Ring, RingConfig};
    /// let ring = Ring::create(Heap, &RingConfig::new().message_type::<u64>())?;
    /// let (mut tx, mut rx) = (ring.typed::<u64>().producer()?, ring.typed::<u64>().consumer()?);
    /// tx.send_slice(&[1, 2, 3])?;
    /// drop(tx);
    /// let sum: u64 = rx.iter().sum::<Result<u64, _>>()?;
    /// assert_eq!(sum, 6);
    /// # Ok::<(), shmpipe::Error>(())
    /// ```
    pub fn iter(&mut self) -> TypedIter<'_, T> {
        TypedIter {
            rx: self,
            done: false,
        }
    }

    /// Iterates over the values waiting now (as [`TypedConsumer::try_recv`]), without waiting;
    /// ends when the ring is empty or at the end of the stream. Another error is yielded once,
    /// then the iteration ends.
    pub fn try_iter(&mut self) -> TypedTryIter<'_, T> {
        TypedTryIter {
            rx: self,
            done: false,
        }
    }
}

impl<'a, T: Pod> IntoIterator for &'a mut TypedConsumer<T> {
    type Item = Result<T, RecvError>;
    type IntoIter = TypedIter<'a, T>;

    /// [`TypedConsumer::iter`].
    fn into_iter(self) -> TypedIter<'a, T> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backing::sysv::{Key, Segment};
    use crate::channel::at::Heap;
    use crate::channel::{Ring, RingConfig};
    use crate::error::Corruption;
    use crate::layout::LINE;

    #[test]
    fn iter_yields_every_message_and_ends_at_disconnected() {
        let ring = Ring::create(Heap, &RingConfig::new().slot_size(16).slot_count(4)).unwrap();
        let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
        let sender = std::thread::spawn(move || {
            for i in 0..100u32 {
                tx.send(&i.to_le_bytes()[..(i % 5) as usize]).unwrap();
            }
        });
        let mut n = 0u32;
        for msg in &mut rx {
            assert_eq!(msg.unwrap(), &n.to_le_bytes()[..(n % 5) as usize]);
            n += 1;
        }
        sender.join().unwrap();
        assert_eq!(n, 100);
        // Fused, and the end was end of stream, not an error.
        let mut it = rx.iter();
        assert!(it.next().is_none() && it.next().is_none());
        assert_eq!(
            rx.try_recv_vec(&mut Vec::new()),
            Err(TryRecvError::Disconnected)
        );
    }

    #[test]
    fn try_iter_takes_what_is_there_and_ends_when_empty_or_closed() {
        let ring = Ring::create(Heap, &RingConfig::new()).unwrap();
        let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
        assert_eq!(rx.try_iter().count(), 0);
        tx.try_send(b"a").unwrap();
        tx.try_send(b"").unwrap();
        let got: Vec<_> = rx.try_iter().map(Result::unwrap).collect();
        assert_eq!(got, [&b"a"[..], b""]);
        // Empty is a pause, not an end: more can come.
        tx.try_send(b"c").unwrap();
        assert_eq!(rx.try_iter().next(), Some(Ok(b"c".to_vec())));
        drop(tx);
        assert_eq!(rx.try_iter().next(), None);
    }

    /// A SysV ring whose producer line we overwrite through a second attachment, as a hostile
    /// producer would.
    #[test]
    #[cfg_attr(miri, ignore)] // no SysV segments under Miri
    fn a_poisoned_ring_yields_its_error_once_then_ends() {
        let ring = Ring::create(Key::Private, &RingConfig::new().slot_count(4)).unwrap();
        let raw = Segment::attach_id(ring.shmid().unwrap()).unwrap();
        let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
        tx.try_send(b"ok").unwrap();
        assert_eq!(rx.try_iter().next(), Some(Ok(b"ok".to_vec())));
        // The producer's tail (the first word of the producer line) far past the capacity.
        // SAFETY: the segment is mapped for `raw`'s life and the producer line starts one
        // line in, 8-aligned; the ring's sides only access it atomically.
        let tail = unsafe {
            &*raw
                .as_ptr()
                .add(LINE)
                .cast::<std::sync::atomic::AtomicU64>()
        };
        tail.store(1 << 40, std::sync::atomic::Ordering::Release);
        let mut it = rx.iter();
        match it.next() {
            Some(Err(RecvError::Corrupted(c))) => {
                assert!(matches!(c.what, Corruption::TailOutOfRange { .. }), "{c}")
            }
            other => panic!("expected the corruption, got {other:?}"),
        }
        assert!(it.next().is_none(), "a sticky error is yielded once");
        let mut it = rx.try_iter();
        assert!(matches!(it.next(), Some(Err(TryRecvError::Corrupted(_)))));
        assert!(it.next().is_none());
        drop((tx, rx, raw));
        ring.remove().unwrap();
    }

    #[test]
    fn typed_iterators_yield_values_and_a_wrong_record_once() {
        let ring = Ring::create(Heap, &RingConfig::new().message_type::<u32>()).unwrap();
        let mut bytes = ring.producer().unwrap();
        let mut rx = ring.typed::<u32>().consumer().unwrap();
        for v in [1u32, 2, 3] {
            bytes.try_send(&v.to_ne_bytes()).unwrap();
        }
        let got: Vec<u32> = rx.try_iter().map(Result::unwrap).collect();
        assert_eq!(got, [1, 2, 3]);
        bytes.try_send(&7u32.to_ne_bytes()).unwrap();
        bytes.try_send(b"no").unwrap();
        let mut it = rx.iter();
        assert_eq!(it.next(), Some(Ok(7)));
        match it.next() {
            Some(Err(RecvError::Corrupted(c))) => {
                assert!(
                    matches!(c.what, Corruption::WrongMessageSize { len: 2, .. }),
                    "{c}"
                )
            }
            other => panic!("expected the wrong size, got {other:?}"),
        }
        assert_eq!(it.next(), None);
        let mut it = rx.try_iter();
        assert!(matches!(it.next(), Some(Err(TryRecvError::Corrupted(_)))));
        assert_eq!(it.next(), None);
        // A clean end on another ring.
        let ring = Ring::create(Heap, &RingConfig::new().message_type::<u32>()).unwrap();
        let mut tx = ring.typed::<u32>().producer().unwrap();
        let mut rx = ring.typed::<u32>().consumer().unwrap();
        tx.send_slice(&[4, 5]).unwrap();
        drop(tx);
        let all: Vec<u32> = (&mut rx).into_iter().map(Result::unwrap).collect();
        assert_eq!(all, [4, 5]);
    }
}
