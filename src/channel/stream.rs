//! The sides as byte streams: `std::io::Write` for the [`Producer`] (each write one message),
//! `std::io::Read` and `std::io::BufRead` for the [`Consumer`] (messages back to back, end of
//! stream when the producer closes).

use super::{Consumer, Producer};
use crate::error::RecvError;
use crate::ring::Record;
use crate::sync::copy::copy_from_shared;

/// The producer as a byte stream: each `write` sends up to [`Producer::stream_chunk`] bytes as
/// one message, waiting for room as the [`WaitStrategy`](crate::WaitStrategy) says. Dropping the producer ends the
/// stream. A closed or dead consumer is `BrokenPipe`, as for a pipe.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// # use shmpipe::{Heap, Ring, RingConfig};
/// let ring = Ring::create(Heap, &RingConfig::new())?;
/// let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
/// let t = std::thread::spawn(move || tx.write_all(&[7u8; 1 << 20]));
/// let mut all = Vec::new();
/// rx.read_to_end(&mut all)?;
/// t.join().unwrap()?;
/// assert_eq!(all.len(), 1 << 20);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl std::io::Write for Producer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min(self.stream_chunk());
        self.send(&buf[..n])?;
        Ok(n)
    }

    /// Every write is published when it returns; nothing to do.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Producer {
    /// The largest message a byte-stream `write` sends: the maximum message, but at most an
    /// eighth of the ring, so the consumer can read one chunk while the next is written.
    pub fn stream_chunk(&self) -> usize {
        let g = self.region().geometry();
        let eighth = (g.array_bytes() / 8).saturating_sub(crate::layout::RECORD_HEADER as u64);
        (g.max_message as usize).min(eighth.max(1) as usize)
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
            let p = self.region().payload(r.at, r.len);
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
            let p = self.region().payload(r.at, r.len);
            // SAFETY: as above (validated, ours until released); the copy is atomic, so a
            // producer that writes the slots anyway changes the copy, not our reference to it.
            unsafe { copy_from_shared(p, &mut self.stream_buf[..r.len]) };
            self.buffered = true;
        }
        Ok(&self.stream_buf[off..r.len])
    }

    fn consume(&mut self, amt: usize) {
        if let Some((r, off)) = self.partial {
            let off = off.saturating_add(amt).min(r.len);
            if off == r.len {
                self.partial = None;
                self.core.advance(r);
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
                self.core.advance(r);
                self.release();
            }
            match self.next_until(None) {
                Ok(r) => {
                    self.core.touch(r);
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
            let p = self.region().payload(r.at, r.len);
            // SAFETY: as in `fill_buf`: validated, ours until released, `off + n <= len`; no
            // reference into the slots exists (the copy is atomic).
            unsafe { copy_from_shared(p.add(off), &mut buf[..n]) };
        }
        self.consume(n);
        Ok(n)
    }
}
