//! The `reference` transport: a hand-written batched SPSC ring between the two pinned
//! processes, the machine's bound that every other transport is compared against (issue #15).
//!
//! Two rings (one per direction) in one memfd that both processes map. Each ring: the producer's
//! index on its own 128 bytes, the consumer's on the next 128 (separate cache lines, and apart
//! from the adjacent-line prefetcher's pairs), then `ring` data bytes (a power of two). Indices
//! are byte positions that only grow; a record is an 8-byte length, then the payload padded to
//! 8 bytes (a 64 B message is a 72-byte record). A record that would run past the end of the
//! data is put at its start instead, behind a [`WRAP`] header where it would have been.
//!
//! Every payload byte is written by [`fill`] and read by [`check`], in place, like the other
//! transports. The producer publishes its index (one `Release` store) once per batch of
//! [`batch_len`] messages in a stream, and after each message otherwise; the consumer releases
//! its index (one `Release` store) once per drain: when it has read everything it last saw
//! published. Each side caches the other's index and reads it again only when its cache says
//! the ring is full (producer) or empty (consumer). Both ends are this program, so the peer is
//! trusted to follow the protocol; the records are still checked to lie inside the ring.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Endpoint, Res, Spin, Waiting, check, fill};

/// Offsets in one ring: the producer's index, the consumer's index, the data.
const HEAD_AT: usize = 0;
const TAIL_AT: usize = 128;
const DATA_AT: usize = 256;

/// The header of a skipped stretch at the end of the data: the next record is at its start.
const WRAP: u64 = u64::MAX;

/// Bytes of the record of a message of `len` bytes: the length, then the payload padded to 8.
pub fn record_len(len: usize) -> usize {
    8 + len.next_multiple_of(8)
}

/// Messages per published batch in a stream: a quarter of the ring, at most 32 (as
/// `shmpipe-batch`).
pub fn batch_len(ring: usize, len: usize) -> u64 {
    (ring / 4 / record_len(len)).clamp(1, 32) as u64
}

/// Checks a ring size: a power of two that holds at least two records of `len` bytes.
pub fn check_ring(ring: usize, len: usize) -> Res<()> {
    if !ring.is_power_of_two() || ring < 2 * record_len(len) {
        return Err(format!(
            "a reference ring of {ring} bytes cannot carry {len}-byte messages (a power of two \
             of at least {} bytes is needed)",
            (2 * record_len(len)).next_power_of_two()
        )
        .into());
    }
    Ok(())
}

/// A shared mapping of a memfd holding the two rings.
pub struct Map {
    base: NonNull<u8>,
    len: usize,
    ring: usize,
}

// SAFETY: `Map` only owns the mapping (unmapped once, on drop) and hands out its address to
// the ends, which access the indices atomically and the data only as the protocol allows.
unsafe impl Send for Map {}
// SAFETY: as above: `&Map` gives access to nothing but the address and sizes.
unsafe impl Sync for Map {}

impl Map {
    /// A new memfd for two rings of `ring` data bytes each, mapped; and its descriptor
    /// (close-on-exec), for the peer.
    pub fn create(ring: usize) -> Res<(Map, OwnedFd)> {
        // SAFETY: the name is a NUL-terminated literal; memfd_create touches no other memory.
        let fd = unsafe { libc::memfd_create(c"shmpipe-bench-ref".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("memfd_create: {}", io::Error::last_os_error()).into());
        }
        // SAFETY: memfd_create succeeded, so `fd` is open and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        File::from(fd.try_clone()?).set_len(Map::bytes(ring) as u64)?;
        Ok((Map::open(&fd, ring)?, fd))
    }

    fn bytes(ring: usize) -> usize {
        2 * (DATA_AT + ring)
    }

    /// Maps the two rings of `ring` data bytes in `fd`, shared.
    pub fn open(fd: &OwnedFd, ring: usize) -> Res<Map> {
        if !ring.is_power_of_two() {
            return Err(format!("reference ring of {ring} bytes: not a power of two").into());
        }
        let len = Map::bytes(ring);
        let size = File::from(fd.try_clone()?).metadata()?.len();
        if size < len as u64 {
            return Err(format!("reference memfd of {size} bytes, {len} expected").into());
        }
        // SAFETY: a fresh shared mapping chosen by the kernel; it aliases no Rust object, and
        // the file is at least `len` bytes long (checked above).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!(
                "mmap of the reference rings: {}",
                io::Error::last_os_error()
            )
            .into());
        }
        let base = NonNull::new(p.cast()).ok_or("mmap returned null")?;
        Ok(Map { base, len, ring })
    }

    /// Ring 0 (measuring side to peer) or 1 (back).
    fn ring(&self, i: usize) -> Ring {
        // SAFETY: `i` is 0 or 1 and the mapping holds two rings of DATA_AT + ring bytes.
        let base = unsafe { self.base.add((i & 1) * (DATA_AT + self.ring)) };
        Ring {
            base,
            mask: self.ring - 1,
        }
    }

    /// The producer of ring `to` and the consumer of the other.
    pub fn ends(self: &Arc<Map>, to: usize) -> (Tx, Rx) {
        let tx = Tx {
            ring: self.ring(to),
            head: 0,
            published: 0,
            tail_cache: 0,
            _map: Arc::clone(self),
        };
        let rx = Rx {
            ring: self.ring(to ^ 1),
            tail: 0,
            released: 0,
            head_cache: 0,
            _map: Arc::clone(self),
        };
        (tx, rx)
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `open` made; every `Tx` and `Rx` holds an `Arc` of
        // this map, so none outlives it.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// One ring inside a [`Map`].
#[derive(Clone, Copy)]
struct Ring {
    base: NonNull<u8>,
    /// Data bytes minus one.
    mask: usize,
}

// SAFETY: a `Ring` points into a mapping that its end keeps alive (the end's `Arc<Map>`); each
// ring has one `Tx` and one `Rx`, each used through `&mut self`, so by one thread at a time.
unsafe impl Send for Ring {}

impl Ring {
    fn index(&self, at: usize) -> &AtomicU64 {
        // SAFETY: HEAD_AT and TAIL_AT are 8-aligned offsets inside the page-aligned ring header,
        // which lives as long as the map (held by every end); both processes access these words
        // only atomically, and every bit pattern is a valid u64.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(at).cast()) }
    }

    fn cap(&self) -> usize {
        self.mask + 1
    }

    /// The data byte at offset `off` (below `cap`).
    fn data(&self, off: usize) -> *mut u8 {
        debug_assert!(off < self.cap());
        // SAFETY: the data follows the header and is `cap` bytes long; `off` is below `cap`.
        unsafe { self.base.as_ptr().add(DATA_AT + off) }
    }
}

/// The producing end of a ring.
pub struct Tx {
    ring: Ring,
    /// Bytes written, published or not.
    head: u64,
    /// The producer index as last published.
    published: u64,
    /// The consumer index as last read.
    tail_cache: u64,
    _map: Arc<Map>,
}

impl Tx {
    /// Makes every record written so far visible to the consumer.
    #[inline]
    pub fn publish(&mut self) {
        if self.published != self.head {
            // Release: the records written before it (pair: the consumer's Acquire load of
            // the head in `Rx::next`).
            self.ring.index(HEAD_AT).store(self.head, Ordering::Release);
            self.published = self.head;
        }
    }

    /// Writes message `seq` of `len` bytes with `write`, without publishing it; waits (with
    /// `waiting`) while the ring is full, publishing first so the consumer can make room.
    #[inline]
    pub fn write(
        &mut self,
        len: usize,
        waiting: &Waiting,
        write: impl FnOnce(&mut [u8]),
    ) -> Res<()> {
        let cap = self.ring.cap();
        let rec = record_len(len);
        let off = self.head as usize & self.ring.mask;
        let skip = if off + rec > cap { cap - off } else { 0 };
        let need = (skip + rec) as u64;
        if need > cap as u64 {
            return Err(format!("a {len}-byte message does not fit a {cap}-byte ring").into());
        }
        if self.head + need - self.tail_cache > cap as u64 {
            let mut spin = Spin::new(waiting);
            loop {
                self.publish();
                // Acquire: the consumer is done with what it released (pair: its Release
                // store in `Rx::release`).
                let tail = self.ring.index(TAIL_AT).load(Ordering::Acquire);
                if tail > self.head || self.head - tail > cap as u64 {
                    return Err(format!("reference ring: consumer index {tail} is wrong").into());
                }
                self.tail_cache = tail;
                if self.head + need - tail <= cap as u64 {
                    break;
                }
                spin.pause()?;
            }
        }
        let mut at = off;
        if skip > 0 {
            // SAFETY: `at` is 8-aligned inside the data (offsets stay multiples of 8, and the
            // data is page-aligned plus DATA_AT); the bytes from the head up to the released
            // tail plus `cap` are ours alone under the protocol (the peer is this program).
            unsafe { self.ring.data(at).cast::<u64>().write(WRAP) };
            at = 0;
        }
        // SAFETY: as above, `rec` bytes from `at` are inside the data (`at + rec <= cap`) and
        // ours alone until published; no other reference to them exists.
        let msg = unsafe {
            self.ring.data(at).cast::<u64>().write(len as u64);
            std::slice::from_raw_parts_mut(self.ring.data(at).add(8), len)
        };
        write(msg);
        self.head += need;
        Ok(())
    }
}

/// The consuming end of a ring.
pub struct Rx {
    ring: Ring,
    /// Bytes read.
    tail: u64,
    /// The consumer index as last released.
    released: u64,
    /// The producer index as last read.
    head_cache: u64,
    _map: Arc<Map>,
}

impl Rx {
    /// Gives the space of every record read so far back to the producer.
    #[inline]
    pub fn release(&mut self) {
        if self.released != self.tail {
            // Release: our reads of those records are done (pair: the producer's Acquire
            // load of the tail in `Tx::write`).
            self.ring.index(TAIL_AT).store(self.tail, Ordering::Release);
            self.released = self.tail;
        }
    }

    /// Waits (with `waiting`) for the next record and reads it with `read`; releases only when
    /// everything published has been read.
    #[inline]
    pub fn read<T>(&mut self, waiting: &Waiting, read: impl FnOnce(&[u8]) -> T) -> Res<T> {
        let cap = self.ring.cap();
        loop {
            if self.tail == self.head_cache {
                self.release();
                let mut spin = Spin::new(waiting);
                loop {
                    // Acquire: the records written before it (pair: the producer's Release
                    // store in `Tx::publish`).
                    let head = self.ring.index(HEAD_AT).load(Ordering::Acquire);
                    if head < self.tail || head - self.tail > cap as u64 {
                        return Err(
                            format!("reference ring: producer index {head} is wrong").into()
                        );
                    }
                    if head != self.tail {
                        self.head_cache = head;
                        break;
                    }
                    spin.pause()?;
                }
            }
            let off = self.tail as usize & self.ring.mask;
            // SAFETY: `off` is 8-aligned inside the data, and published (below head_cache), so
            // the producer no longer writes it.
            let len = unsafe { self.ring.data(off).cast::<u64>().read() };
            if len == WRAP {
                self.tail += (cap - off) as u64;
                if self.tail > self.head_cache {
                    return Err(format!("reference ring: a skip at {off} passes the head").into());
                }
                continue;
            }
            let rec = record_len(len as usize) as u64;
            if len > cap as u64
                || off as u64 + rec > cap as u64
                || self.tail + rec > self.head_cache
            {
                return Err(format!("reference ring: record of {len} bytes at {off}").into());
            }
            // SAFETY: the record lies inside the data (checked above) and is published, so
            // the producer does not write it until we release it; no mutable reference exists.
            let msg =
                unsafe { std::slice::from_raw_parts(self.ring.data(off).add(8), len as usize) };
            let out = read(msg);
            self.tail += rec;
            return Ok(out);
        }
    }
}

/// One side of the reference transport.
pub struct RefEnd {
    tx: Tx,
    rx: Rx,
    batch: u64,
    waiting: Waiting,
}

impl RefEnd {
    /// The side that produces into ring `to` of `map`, for messages of `size` bytes.
    pub fn new(map: &Arc<Map>, to: usize, size: usize, waiting: Waiting) -> RefEnd {
        let (tx, rx) = map.ends(to);
        RefEnd {
            tx,
            rx,
            batch: batch_len(map.ring, size),
            waiting,
        }
    }
}

impl Endpoint for RefEnd {
    #[inline]
    fn send(&mut self, len: usize, seq: u64) -> Res<()> {
        self.tx.write(len, &self.waiting, |m| fill(m, seq))?;
        self.tx.publish();
        Ok(())
    }

    #[inline]
    fn recv(&mut self, len: usize, seq: u64) -> Res<u64> {
        let sum = self.rx.read(&self.waiting, |m| check(m, len, seq))??;
        self.rx.release();
        Ok(sum)
    }

    #[inline]
    fn echo(&mut self, len: usize, seq: u64) -> Res<u64> {
        let (tx, waiting) = (&mut self.tx, &self.waiting);
        let sum = self.rx.read(waiting, |m| -> Res<u64> {
            let sum = check(m, len, seq)?;
            tx.write(len, waiting, |out| out.copy_from_slice(m))?;
            Ok(sum)
        })??;
        self.rx.release();
        self.tx.publish();
        Ok(sum)
    }

    fn send_stream(&mut self, len: usize, first: u64, count: u64) -> Res<()> {
        for (i, seq) in (first..first + count).enumerate() {
            self.tx.write(len, &self.waiting, |m| fill(m, seq))?;
            if (i as u64 + 1) % self.batch == 0 {
                self.tx.publish();
            }
        }
        self.tx.publish();
        Ok(())
    }

    fn recv_stream(&mut self, len: usize, first: u64, count: u64) -> Res<u64> {
        let mut sum = 0u64;
        for seq in first..first + count {
            sum = sum.wrapping_add(self.rx.read(&self.waiting, |m| check(m, len, seq))??);
        }
        self.rx.release();
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    // No `use`: the criterion bench includes this file with `cfg(test)` set but its `#[test]`
    // functions dropped, where the imports would be unused.

    fn end(map: &std::sync::Arc<super::Map>, to: usize, len: usize) -> super::RefEnd {
        let waiting = super::Waiting {
            watch: super::super::Watch::Nobody,
            yields: true,
        };
        super::RefEnd::new(map, to, len, waiting)
    }

    #[test]
    fn records_are_padded_to_eight_bytes() {
        assert_eq!(super::record_len(64), 72);
        assert_eq!(super::record_len(8), 16);
        assert_eq!(super::record_len(9), 24);
        assert!(super::check_ring(256, 64).is_ok());
        assert!(super::check_ring(128, 64).is_err(), "two records must fit");
        assert!(super::check_ring(3000, 8).is_err(), "not a power of two");
    }

    /// Odd sizes in small rings, in one thread: records wrap at every offset, and each comes
    /// out whole and in order, through both directions (as echo does).
    #[test]
    fn odd_sizes_wrap_around_a_small_ring() {
        use super::Endpoint as _;
        for (ring, len) in [
            (256usize, 9usize),
            (256, 13),
            (512, 100),
            (128, 8),
            (4096, 1000),
        ] {
            let (map, _fd) = super::Map::create(ring).unwrap();
            let map = std::sync::Arc::new(map);
            let (mut a, mut b) = (end(&map, 0, len), end(&map, 1, len));
            // At most what fits with a wrap's skip in front: ring / record - 1, at least 1.
            let fits = (ring / super::record_len(len)).saturating_sub(1).max(1) as u64;
            let mut seq = 0u64;
            for round in 0..50u64 {
                let n = round % fits + 1;
                a.send_stream(len, seq, n).unwrap();
                b.recv_stream(len, seq, n).unwrap();
                seq += n;
                a.send(len, seq).unwrap();
                b.echo(len, seq).unwrap();
                a.recv(len, seq).unwrap();
                seq += 1;
            }
            let bytes = seq * super::record_len(len) as u64;
            assert!(bytes > 4 * ring as u64, "{ring}/{len}: no wrap");
        }
    }

    /// A stream between two threads through a ring of a few records: the producer waits on a
    /// full ring, the consumer on an empty one, and every message arrives whole, in order.
    #[test]
    fn a_stream_passes_a_small_ring_between_threads() {
        use super::Endpoint as _;
        let (ring, len, n) = (512usize, 24usize, 20_000u64);
        let (map, _fd) = super::Map::create(ring).unwrap();
        let map = std::sync::Arc::new(map);
        let (mut a, mut b) = (end(&map, 0, len), end(&map, 1, len));
        let consumer =
            std::thread::spawn(move || b.recv_stream(len, 7, n).map_err(|e| e.to_string()));
        a.send_stream(len, 7, n).unwrap();
        consumer.join().unwrap().unwrap();
    }
}
