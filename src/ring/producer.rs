//! The producer's state machine: reserve room, write records, publish the tail.
//!
//! The producer owns the slots from its private tail up to the last head it validated plus the
//! capacity, and the producer line of the header. It reads the consumer's head only when its
//! cached copy says the ring is full, and validates it before use (it must never move backwards
//! nor pass the published tail). It never reads or writes slots the consumer owns. A broken
//! rule poisons it: the first error is the answer to every later call.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Memory, wake};
use crate::error::{Corrupted, Corruption, Role, TrySendError};
use crate::layout::{KIND_MESSAGE, KIND_PADDING};
use crate::sync::{self, copy::copy_to_shared};

/// The producer's private state over the ring memory `R` holds (the channel's region, or a
/// test's heap memory).
pub(crate) struct ProducerCore<R> {
    mem: Arc<R>,
    /// The identity our owner word holds while we hold the role.
    me: u64,
    /// Whether our process registered for the sleeper's barrier: our wakes may be light
    /// (`crate::sync::barrier`).
    light: bool,
    /// Counter one past the last record written (published or not).
    tail: u64,
    /// The tail last stored to the shared line.
    published: u64,
    /// The last head read from the consumer's line and validated.
    head_cache: u64,
    /// Messages written.
    sent: u64,
    /// Sticky error once the consumer (or a third writer) broke the protocol.
    poisoned: Option<Corrupted>,
}

impl<R: Deref<Target = Memory>> ProducerCore<R> {
    /// Starts producing at the tail the line holds, as `me` (the identity in our owner word), waking
    /// the light way if `light` (our process registered for the sleeper's barrier).
    ///
    /// # Errors
    ///
    /// [`Corruption::TailOutOfRange`] if the head and tail are more than a ring apart.
    pub(crate) fn new(mem: Arc<R>, me: u64, light: bool) -> Result<ProducerCore<R>, Corrupted> {
        let h = mem.header();
        // Our own line, but written by whoever held the role before: untrusted too. The claim's
        // Acquire (O1) made the previous holder's last store visible.
        let tail = h.producer.tail.load(Ordering::Relaxed);
        // P3 (Acquire): pairs with the consumer's Release store of the head (C2).
        let head = h.consumer.head.load(Ordering::Acquire);
        mem.check_indices(head, tail)?;
        let sent = h.producer.sent.load(Ordering::Relaxed);
        Ok(ProducerCore {
            mem,
            me,
            light,
            tail,
            published: tail,
            head_cache: head,
            sent,
            poisoned: None,
        })
    }

    /// The ring's memory, as held.
    #[inline(always)]
    pub(crate) fn memory(&self) -> &Arc<R> {
        &self.mem
    }

    /// Copies `msg` into the ring as one record, without publishing it.
    #[inline]
    pub(crate) fn write(&mut self, msg: &[u8]) -> Result<(), TrySendError> {
        let at = self.reserve(msg.len())?;
        sync::hook("send:claimed");
        self.touch(at, msg.len());
        let dst = self.mem.payload(at, msg.len());
        let half = sync::hook_split(msg.len());
        // SAFETY: `reserve` guaranteed the record's slots lie inside the array (live while
        // `mem` is held) and belong to the producer (free: not between the validated head and
        // our tail); no reference into them exists (grants borrow us), and the copy is atomic,
        // so a consumer that writes them anyway is no data race. `msg` is our own memory, so
        // the ranges cannot overlap. `half <= len`.
        unsafe { copy_to_shared(&msg[..half], dst) };
        if half != msg.len() {
            sync::hook("send:mid-payload");
            // SAFETY: as above, for the rest of the payload.
            unsafe { copy_to_shared(&msg[half..], dst.add(half)) };
        }
        if self.mem.revoked() {
            // The memory vanished during the copy: the message went nowhere.
            return Err(TrySendError::Corrupted(self.lose()));
        }
        self.finish(at, msg.len() as u32);
        sync::hook("send:written");
        Ok(())
    }

    /// Reserves a record of `len` bytes to be written in place: where it starts and a pointer
    /// to its `len` payload bytes, which are ours until [`ProducerCore::finish`] (or until the
    /// next reservation, if it is abandoned).
    #[inline]
    pub(crate) fn grant(&mut self, len: usize) -> Result<(u64, *mut u8), TrySendError> {
        let at = self.reserve(len)?;
        if self.mem.revoked() {
            return Err(TrySendError::Corrupted(self.lose()));
        }
        self.touch(at, len);
        Ok((at, self.mem.payload(at, len)))
    }

    /// Finds room for a record of `len` payload bytes, writing a padding record first if it
    /// would straddle the end of the array. Returns the counter where the record starts; the
    /// private tail does not move until [`ProducerCore::finish`], so reserving again finds the
    /// same place.
    #[inline]
    pub(crate) fn reserve(&mut self, len: usize) -> Result<u64, TrySendError> {
        // The common case in one pass: nothing wrong, the record fits before the end of the
        // array and within the cached head. Every check of `reserve_slow` is here, in one
        // branch; anything else (an error, padding, a head to re-read) takes the slow path.
        // The owner word and the closed flag are read once here, in the slow path's order,
        // and their answer stands: a hostile writer may change them between two reads.
        if self.poisoned.is_some() {
            return self.reserve_slow(len, false);
        }
        self.check_owner().map_err(TrySendError::Corrupted)?;
        if self.consumer_closed() {
            return Err(TrySendError::Disconnected);
        }
        let g = self.mem.geometry();
        if len <= g.max_message as usize {
            let slots = g.record_slots(len as u32);
            let room = g.capacity() - self.tail.wrapping_sub(self.head_cache);
            if (self.tail & g.mask()) + slots <= g.capacity() && slots <= room {
                return Ok(self.tail);
            }
        }
        self.reserve_slow(len, true)
    }

    /// [`ProducerCore::reserve`] with every case: the checks in their order of precedence,
    /// the head re-read when the cached one says full, the padding record written. `checked`:
    /// the caller has read the owner word and the closed flag already (they are not read
    /// again).
    #[cold]
    #[inline(never)]
    fn reserve_slow(&mut self, len: usize, checked: bool) -> Result<u64, TrySendError> {
        if let Some(c) = self.poisoned {
            return Err(TrySendError::Corrupted(c));
        }
        if !checked {
            // Our owner word, in our own line like the flag below: a hit unless someone wrote it.
            self.check_owner().map_err(TrySendError::Corrupted)?;
            if self.consumer_closed() {
                return Err(TrySendError::Disconnected);
            }
        }
        let g = *self.mem.geometry();
        if len > g.max_message as usize {
            return Err(TrySendError::TooLarge {
                len,
                max: g.max_message as usize,
            });
        }
        let (pad, need) = self.placement(len);
        if self.free_slots() < need {
            self.refresh_head().map_err(TrySendError::Corrupted)?;
            if self.free_slots() < need {
                return Err(TrySendError::Full);
            }
        }
        if pad != 0 {
            let pos = self.tail & g.mask();
            self.mem
                .write_record(self.tail, g.padding_len(pos), KIND_PADDING);
        }
        Ok(self.tail.wrapping_add(pad))
    }

    /// Where a record of `len` bytes (at most the maximum message) goes from the private tail:
    /// the padding slots in front of it (0 unless it would straddle the end of the array), and
    /// the slots it needs in all, padding included.
    #[inline]
    fn placement(&self, len: usize) -> (u64, u64) {
        let g = self.mem.geometry();
        let slots = g.record_slots(len as u32);
        let to_end = g.capacity() - (self.tail & g.mask());
        let pad = if slots > to_end { to_end } else { 0 };
        (pad, pad + slots)
    }

    /// Slots free by the cached head. `tail - head_cache <= capacity` holds for every validated
    /// head (see `refresh_head`), so this never underflows.
    #[inline]
    fn free_slots(&self) -> u64 {
        self.mem.geometry().capacity() - self.tail.wrapping_sub(self.head_cache)
    }

    /// Tells loom that the record's slots are being written (no-op otherwise).
    #[inline(always)]
    fn touch(&self, at: u64, len: usize) {
        let slots = self.mem.geometry().record_slots(len as u32);
        self.mem.access(at, slots, true);
    }

    /// Completes the record reserved at `at` with `len` payload bytes: writes its header and
    /// moves the private tail past it.
    #[inline]
    pub(crate) fn finish(&mut self, at: u64, len: u32) {
        let slots = self.mem.geometry().record_slots(len);
        self.mem.write_record(at, len, KIND_MESSAGE);
        self.tail = at.wrapping_add(slots);
        self.sent = self.sent.wrapping_add(1);
    }

    /// Makes everything written so far visible to the consumer: one Release store of the tail,
    /// then the wake-up if the consumer sleeps.
    #[inline]
    pub(crate) fn publish(&mut self) {
        if self.tail != self.published {
            let line = &self.mem.header().producer;
            // Informational counter; Relaxed, ordered before the tail by the Release below.
            line.sent.store(self.sent, Ordering::Relaxed);
            // P2 (Release): pairs with the consumer's Acquire load of the tail (C1), making
            // every record header and payload byte written before it visible there.
            line.tail.store(self.tail, sync::sabotage::publish());
            self.published = self.tail;
            wake(&line.consumer_waiting, &line.data_event, self.light);
        }
    }

    /// Slots written and not yet published.
    #[inline]
    pub(crate) fn unpublished_slots(&self) -> u64 {
        self.tail.wrapping_sub(self.published)
    }

    /// Re-reads the consumer's head and validates it: it may only move forward, and never past
    /// what we published.
    #[cold]
    fn refresh_head(&mut self) -> Result<(), Corrupted> {
        // P3 (Acquire): pairs with the consumer's Release store of the head (C2), so its reads
        // of the slots it released happen before we overwrite them.
        let head = self.mem.head().load(Ordering::Acquire);
        let advanced = head.wrapping_sub(self.head_cache);
        let allowed = self.published.wrapping_sub(self.head_cache);
        if advanced > allowed {
            return Err(self.poison(Corruption::HeadOutOfRange {
                head,
                last_head: self.head_cache,
                tail: self.published,
            }));
        }
        self.head_cache = head;
        Ok(())
    }

    /// Whether a record of `len` bytes (and any padding before it) fits now, re-reading the
    /// head: the blocking wait's question.
    pub(crate) fn room_for(&mut self, len: usize) -> Result<bool, Corrupted> {
        if let Some(c) = self.poisoned {
            return Err(c);
        }
        let (_, need) = self.placement(len);
        self.refresh_head()?;
        Ok(self.free_slots() >= need)
    }

    /// The head last validated: a sleeper waits for the consumer's head to leave it.
    #[inline]
    pub(crate) fn head_cache(&self) -> u64 {
        self.head_cache
    }

    /// Whether the consumer closed the ring.
    #[inline]
    pub(crate) fn consumer_closed(&self) -> bool {
        // A word of our own line (hot in our cache): Acquire pairs with the consumer's Release
        // store of it when it closes.
        self.mem
            .header()
            .producer
            .consumer_closed
            .load(Ordering::Acquire)
            != 0
    }

    /// Poisons the producer if its owner word no longer holds its identity (another process
    /// rewrote it: see [`Memory::check_owner`]).
    #[inline]
    pub(crate) fn check_owner(&mut self) -> Result<(), Corrupted> {
        self.mem
            .check_owner(Role::Producer, self.me)
            .inspect_err(|&c| {
                // Sticky: an earlier error stays the answer of every later call.
                self.poisoned.get_or_insert(c);
            })
    }

    /// The error that poisoned the producer, if any.
    #[inline]
    pub(crate) fn poisoned(&self) -> Option<&Corrupted> {
        self.poisoned.as_ref()
    }

    /// Poisons the producer with `what` (or with the loss of the memory, if it was revoked).
    #[cold]
    fn poison(&mut self, what: Corruption) -> Corrupted {
        let c = self.mem.corrupted(what);
        self.poisoned = Some(c);
        c
    }

    /// Poisons the producer because its memory vanished (see [`Memory::revoked`]).
    #[cold]
    pub(crate) fn lose(&mut self) -> Corrupted {
        let c = self.mem.lost();
        self.poisoned = Some(c);
        c
    }

    /// The private indices, for `Debug`: `(tail, published, head_cache)`.
    pub(crate) fn indices(&self) -> (u64, u64, u64) {
        (self.tail, self.published, self.head_cache)
    }
}
