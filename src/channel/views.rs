//! Memory the peer can write: the one primitive that copies bytes between private memory and
//! ring slots, and the views ([`RingSlice`], [`RingSliceMut`]) that lend slots in place without
//! ever handing out a Rust reference to them.
//!
//! Why not references: a `&[u8]` or `&T` promises that the bytes do not change while it lives,
//! and the compiler (and std: `str::from_utf8` followed by `chars`) relies on it, e.g. by
//! loading a byte again after checking it. The protocol gives a side the slots it reads or
//! writes, but the peer is another process that may break the protocol and write them anyway
//! (docs/DESIGN.md, "The peer is untrusted", rule 4). Every access to slot memory therefore goes
//! through [`copy_from_shared`] or [`copy_to_shared`], whose accesses are atomic in Rust's
//! model, so a concurrent write by the peer is never a data race: a copy may see old bytes, new
//! bytes or a mix, and what it copied into private memory stays as it was copied.
//!
//! The copy itself is `crate::sync::copy` (re-exported here as `shmpipe::shared::*`).

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd};

use bytemuck::Pod;

use crate::error::OutOfBounds;
use crate::sync::copy::read_shared;
pub use crate::sync::copy::{REP_MOVSB_FROM, copy_from_shared, copy_to_shared, strategies};

/// Bytes lent in place from a ring, which the peer process can write: the read view of a
/// [`ReadGuard`](crate::ReadGuard) (and of a grant's own bytes).
///
/// It never dereferences to `&[u8]`: a reference would promise bytes that do not change, which
/// a peer that breaks the protocol could falsify under it (docs/DESIGN.md, "The peer is
/// untrusted"). Instead the bytes are copied out, whole ([`to_vec`](RingSlice::to_vec),
/// [`copy_to_slice`](RingSlice::copy_to_slice)), in part ([`copy_to`](RingSlice::copy_to),
/// [`subslice`](RingSlice::subslice), [`chunks`](RingSlice::chunks)), as values
/// ([`read_at`](RingSlice::read_at)), or straight to a file descriptor
/// ([`write_to_fd`](RingSlice::write_to_fd)); what was copied is private and stays as copied.
/// A peer that follows the protocol never writes them, so the copy is then the message.
/// [`as_slice_trusted`](RingSlice::as_slice_trusted) is the full-speed `&[u8]` for a trusted
/// peer.
///
/// Out-of-range offsets are [`OutOfBounds`] errors, never panics; only
/// [`copy_to_slice`](RingSlice::copy_to_slice) (lengths differ) and
/// [`chunks`](RingSlice::chunks) (size 0) panic, as their `[u8]` namesakes do.
///
/// # Examples
///
/// ```
/// # use shmpipe::{Heap, Ring, RingConfig};
/// let ring = Ring::create(Heap, &RingConfig::new())?;
/// let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
/// tx.try_send(b"\x07\x00\x00\x00hello").unwrap();
/// let msg = rx.try_lend().unwrap();
/// let view = msg.view();
/// assert_eq!(view.read_at::<u32>(0), Ok(u32::from_le(7)));
/// assert_eq!(view.subslice(4, 5).unwrap().to_vec(), b"hello");
/// assert!(view.read_at::<u64>(4).is_err()); // 8 bytes at 4 are not in a 9-byte message
/// # Ok::<(), shmpipe::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct RingSlice<'a> {
    ptr: *const u8,
    len: usize,
    _lent: PhantomData<&'a ()>,
}

impl<'a> RingSlice<'a> {
    /// A view of `len` bytes at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr..ptr + len` stays mapped for `'a`, and for `'a` no Rust reference points into it
    /// except through [`RingSlice::as_slice_trusted`] (whose caller answers for it).
    #[inline]
    pub(crate) unsafe fn new(ptr: *const u8, len: usize) -> RingSlice<'a> {
        RingSlice {
            ptr,
            len,
            _lent: PhantomData,
        }
    }

    /// Bytes in the view.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the bytes are (for system calls and FFI; reading through it is the caller's
    /// unsafe business, see [`copy_from_shared`]).
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// Copies the first `min(self.len(), dst.len())` bytes into `dst` and returns how many.
    #[inline]
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let n = self.len.min(dst.len());
        // SAFETY: `n <= len` bytes of the view (mapped for 'a, no references: `new`).
        unsafe { copy_from_shared(self.ptr, &mut dst[..n]) };
        n
    }

    /// Copies all the bytes into `dst`.
    ///
    /// # Panics
    ///
    /// If `dst.len() != self.len()`, as [`<[u8]>::copy_from_slice`](slice::copy_from_slice).
    #[inline]
    pub fn copy_to_slice(&self, dst: &mut [u8]) {
        assert_eq!(
            dst.len(),
            self.len,
            "destination and view have different lengths"
        );
        self.copy_to(dst);
    }

    /// The bytes, copied into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.append_to(&mut v);
        v
    }

    /// Appends the bytes to `out` (one copy, no zero-filling first).
    pub fn append_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.len);
        let end = out.len();
        // SAFETY: `reserve` made room for `len` more bytes after `end`; the source is the
        // view (see `copy_to`), the destination the vector's private spare capacity.
        unsafe { read_shared(self.ptr, out.as_mut_ptr().add(end), self.len) };
        // SAFETY: the copy initialised `end..end + len`.
        unsafe { out.set_len(end + self.len) };
    }

    /// The value of type `T` whose bytes start at `offset` (copied out; no alignment needed).
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] if `size_of::<T>()` bytes at `offset` are not all in the view.
    #[inline]
    pub fn read_at<T: Pod>(&self, offset: usize) -> Result<T, OutOfBounds> {
        let part = self.subslice(offset, size_of::<T>())?;
        let mut value = T::zeroed();
        part.copy_to(bytemuck::bytes_of_mut(&mut value));
        Ok(value)
    }

    /// The `len` bytes at `offset`, as a view.
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] if they are not all in the view.
    #[inline]
    pub fn subslice(&self, offset: usize, len: usize) -> Result<RingSlice<'a>, OutOfBounds> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(RingSlice {
                // SAFETY: `offset <= end <= len`: inside the view.
                ptr: unsafe { self.ptr.add(offset) },
                len,
                _lent: PhantomData,
            }),
            _ => Err(OutOfBounds {
                offset,
                size: len,
                len: self.len,
            }),
        }
    }

    /// The view cut in two at `mid`: `[0, mid)` and `[mid, len)`.
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] if `mid > self.len()`.
    #[inline]
    pub fn split_at(&self, mid: usize) -> Result<(RingSlice<'a>, RingSlice<'a>), OutOfBounds> {
        let head = self.subslice(0, mid)?;
        let tail = self.subslice(mid, self.len - mid)?;
        Ok((head, tail))
    }

    /// Views of `size` bytes each, in order (the last one shorter if `size` does not divide the
    /// length); copy each out with [`RingSlice::copy_to`] into a buffer of `size` bytes to work
    /// through a large message without allocating.
    ///
    /// # Panics
    ///
    /// If `size` is 0, as [`<[u8]>::chunks`](slice::chunks).
    pub fn chunks(&self, size: usize) -> RingChunks<'a> {
        assert!(size != 0, "chunk size must be non-zero");
        RingChunks { rest: *self, size }
    }

    /// Writes all the bytes to `w`, copied out through a buffer on the stack (8 KiB at a time).
    ///
    /// # Errors
    ///
    /// What `w.write_all` returns.
    pub fn write_to(&self, w: &mut impl io::Write) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        for chunk in self.chunks(buf.len()) {
            let n = chunk.copy_to(&mut buf);
            w.write_all(&buf[..n])?;
        }
        Ok(())
    }

    /// One `write(2)` of the bytes to `fd`, straight from the ring (no copy in this process:
    /// the kernel reads them). Returns how many were written, as `write` does.
    ///
    /// # Errors
    ///
    /// The system call's error (`EINTR` included: retry).
    pub fn write_to_fd(&self, fd: impl AsFd) -> io::Result<usize> {
        // SAFETY: the kernel reads `len` bytes of the view, mapped for 'a; no Rust reference
        // is made (the kernel's copy is, like ours, outside the compiler's view: see the
        // module comment). A file ring whose file shrank makes this `EFAULT`, not a signal.
        let n = unsafe { libc::write(fd.as_fd().as_raw_fd(), self.ptr.cast(), self.len) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// The bytes as a slice, at full speed, for a peer trusted to follow the protocol.
    ///
    /// # Safety
    ///
    /// Nobody may write these bytes while the slice lives. The protocol guarantees it for a
    /// peer that follows it (a producer never writes slots between the published tail and the
    /// consumer's head, a consumer never writes slots at all), so the caller must trust the
    /// peer process not to break the protocol: a peer that writes them anyway makes this
    /// undefined behaviour in this process (e.g. a byte re-read after a UTF-8 check may differ),
    /// not just a wrong message.
    #[inline]
    pub unsafe fn as_slice_trusted(&self) -> &'a [u8] {
        // SAFETY: mapped for 'a (`new`); immutable for as long, by the caller's promise.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl std::fmt::Debug for RingSlice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingSlice").field("len", &self.len).finish()
    }
}

/// The views [`RingSlice::chunks`] yields.
#[derive(Clone, Debug)]
pub struct RingChunks<'a> {
    rest: RingSlice<'a>,
    size: usize,
}

impl<'a> Iterator for RingChunks<'a> {
    type Item = RingSlice<'a>;

    fn next(&mut self) -> Option<RingSlice<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let (head, tail) = self
            .rest
            .split_at(self.size.min(self.rest.len))
            .expect("min(size, len) <= len");
        self.rest = tail;
        Some(head)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.rest.len.div_ceil(self.size);
        (n, Some(n))
    }
}

impl ExactSizeIterator for RingChunks<'_> {}

/// Bytes of a ring to write in place, which the peer process can write too: the write view of
/// a [`WriteGrant`](crate::WriteGrant).
///
/// It never dereferences to `&mut [u8]` (see [`RingSlice`] for why). Bytes go in by copy
/// ([`copy_from_slice`](RingSliceMut::copy_from_slice), [`copy_from`](RingSliceMut::copy_from),
/// [`fill`](RingSliceMut::fill)), as values ([`write_at`](RingSliceMut::write_at)), or straight
/// from a file descriptor ([`read_from_fd`](RingSliceMut::read_from_fd)).
/// [`as_mut_slice_trusted`](RingSliceMut::as_mut_slice_trusted) is the full-speed `&mut [u8]`
/// for a trusted peer. Their initial content is whatever the slots held before.
///
/// # Examples
///
/// ```
/// # use shmpipe::{Heap, Ring, RingConfig};
/// let ring = Ring::create(Heap, &RingConfig::new())?;
/// let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
/// let mut grant = tx.try_reserve(12).unwrap();
/// let mut view = grant.view_mut();
/// view.write_at(0, 42u32.to_le()).unwrap();
/// view.write_at(4, *b"answer!!").unwrap();
/// assert!(view.write_at(10, 0u32).is_err()); // would end past byte 12
/// grant.commit();
/// assert_eq!(rx.try_lend().unwrap().to_vec(), b"\x2a\0\0\0answer!!");
/// # Ok::<(), shmpipe::Error>(())
/// ```
pub struct RingSliceMut<'a> {
    ptr: *mut u8,
    len: usize,
    _lent: PhantomData<&'a mut ()>,
}

impl<'a> RingSliceMut<'a> {
    /// A writable view of `len` bytes at `ptr`.
    ///
    /// # Safety
    ///
    /// As [`RingSlice::new`], and the bytes are writable for `'a`, by this view alone among the
    /// views of this process.
    #[inline]
    pub(crate) unsafe fn new(ptr: *mut u8, len: usize) -> RingSliceMut<'a> {
        RingSliceMut {
            ptr,
            len,
            _lent: PhantomData,
        }
    }

    /// Bytes in the view.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the bytes are (for system calls and FFI; see [`copy_to_shared`]).
    #[inline]
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }

    /// The bytes as a read view (to read back what was written).
    #[inline]
    pub fn as_view(&self) -> RingSlice<'_> {
        // SAFETY: the same bytes, borrowed from `self` (mapped, no references: `new`).
        unsafe { RingSlice::new(self.ptr, self.len) }
    }

    /// Copies `min(self.len(), src.len())` bytes from the start of `src` and returns how many.
    #[inline]
    pub fn copy_from(&mut self, src: &[u8]) -> usize {
        let n = self.len.min(src.len());
        // SAFETY: `n <= len` bytes of the view (mapped and writable for 'a, no references).
        unsafe { copy_to_shared(&src[..n], self.ptr) };
        n
    }

    /// Copies all of `src` into the view.
    ///
    /// # Panics
    ///
    /// If `src.len() != self.len()`, as [`<[u8]>::copy_from_slice`](slice::copy_from_slice).
    #[inline]
    pub fn copy_from_slice(&mut self, src: &[u8]) {
        assert_eq!(
            src.len(),
            self.len,
            "source and view have different lengths"
        );
        self.copy_from(src);
    }

    /// Sets every byte to `byte`.
    pub fn fill(&mut self, byte: u8) {
        let buf = [byte; 256];
        let mut at = 0;
        while at < self.len {
            let n = (self.len - at).min(buf.len());
            // SAFETY: `at + n <= len` bytes of the view, as in `copy_from`.
            unsafe { copy_to_shared(&buf[..n], self.ptr.add(at)) };
            at += n;
        }
    }

    /// Writes the bytes of `value` at `offset` (no alignment needed).
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] if `size_of::<T>()` bytes at `offset` are not all in the view; nothing
    /// is written then.
    #[inline]
    pub fn write_at<T: Pod>(&mut self, offset: usize, value: T) -> Result<(), OutOfBounds> {
        self.subslice_mut(offset, size_of::<T>())?
            .copy_from(bytemuck::bytes_of(&value));
        Ok(())
    }

    /// The value of type `T` whose bytes start at `offset` (copied out).
    ///
    /// # Errors
    ///
    /// As [`RingSlice::read_at`].
    #[inline]
    pub fn read_at<T: Pod>(&self, offset: usize) -> Result<T, OutOfBounds> {
        self.as_view().read_at(offset)
    }

    /// The `len` bytes at `offset`, as a writable view.
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] if they are not all in the view.
    #[inline]
    pub fn subslice_mut(
        &mut self,
        offset: usize,
        len: usize,
    ) -> Result<RingSliceMut<'_>, OutOfBounds> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(RingSliceMut {
                // SAFETY: `offset <= end <= len`: inside the view.
                ptr: unsafe { self.ptr.add(offset) },
                len,
                _lent: PhantomData,
            }),
            _ => Err(OutOfBounds {
                offset,
                size: len,
                len: self.len,
            }),
        }
    }

    /// The view cut in two writable views at `mid`: `[0, mid)` and `[mid, len)`.
    ///
    /// # Errors
    ///
    /// [`OutOfBounds`] if `mid > self.len()`.
    pub fn split_at_mut(
        self,
        mid: usize,
    ) -> Result<(RingSliceMut<'a>, RingSliceMut<'a>), OutOfBounds> {
        if mid > self.len {
            return Err(OutOfBounds {
                offset: 0,
                size: mid,
                len: self.len,
            });
        }
        let head = RingSliceMut {
            ptr: self.ptr,
            len: mid,
            _lent: PhantomData,
        };
        let tail = RingSliceMut {
            // SAFETY: `mid <= len`: inside the view; the two halves do not overlap.
            ptr: unsafe { self.ptr.add(mid) },
            len: self.len - mid,
            _lent: PhantomData,
        };
        Ok((head, tail))
    }

    /// One `read(2)` from `fd` straight into the view (no copy in this process: the kernel
    /// writes the bytes). Returns how many were read, as `read` does (0 at end of file).
    ///
    /// # Errors
    ///
    /// The system call's error (`EINTR` included: retry).
    pub fn read_from_fd(&mut self, fd: impl AsFd) -> io::Result<usize> {
        // SAFETY: the kernel writes at most `len` bytes of the view, mapped and writable for
        // 'a; no Rust reference to them exists (module comment).
        let n = unsafe { libc::read(fd.as_fd().as_raw_fd(), self.ptr.cast(), self.len) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// The bytes as a mutable slice, at full speed, for a peer trusted to follow the protocol.
    ///
    /// # Safety
    ///
    /// Nobody else may read or write these bytes while the slice lives. The protocol
    /// guarantees it for a consumer that follows it (it never touches slots the producer has
    /// reserved and not published), so the caller must trust the peer process not to break the
    /// protocol: a peer that touches them anyway makes this undefined behaviour in this
    /// process, not just a wrong message.
    #[inline]
    pub unsafe fn as_mut_slice_trusted(&mut self) -> &mut [u8] {
        // SAFETY: mapped and writable for 'a (`new`), borrowed mutably from `self`; exclusive
        // by the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl std::fmt::Debug for RingSliceMut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingSliceMut")
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length up to 300 (and a few large ones), from every alignment of either side, in
    /// both directions: the bytes arrive, and nothing outside the range is touched.
    #[test]
    fn copies_every_length_and_alignment_exactly() {
        let lens: Vec<usize> = if crate::sync::MIRI {
            (0..40).chain([64, 100]).collect()
        } else {
            (0..300).chain([1000, 4095, 4096, 4097, 70_000]).collect()
        };
        for &len in &lens {
            for shift in [0usize, 1, 3, 7] {
                let src: Vec<u8> = (0..len + 16).map(|i| (i * 7 + 3) as u8).collect();
                // "Shared" side: 8-aligned storage, offset by `shift`.
                let mut ring = vec![0u64; (len + 32) / 8 + 1];
                let base = ring.as_mut_ptr().cast::<u8>();
                // SAFETY: `shift + len + 8 <= ring's bytes`; no reference into `ring` is used
                // until the copies are done.
                unsafe {
                    copy_to_shared(&src[shift..shift + len], base.add(shift));
                    let mut back = vec![0xeeu8; len + 2];
                    copy_from_shared(base.add(shift), &mut back[1..len + 1]);
                    assert_eq!(&back[1..len + 1], &src[shift..shift + len], "len {len}");
                    assert_eq!((back[0], back[len + 1]), (0xee, 0xee), "len {len}");
                }
                let bytes: &[u8] = bytemuck::cast_slice(&ring);
                assert!(bytes[..shift].iter().all(|&b| b == 0), "len {len}");
                assert!(bytes[shift + len..].iter().all(|&b| b == 0), "len {len}");
            }
        }
    }
}
