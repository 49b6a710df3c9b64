//! The sleep/wake handshake (W1/W2 in docs/DESIGN.md, "Sleeping and waking"): the waker's
//! swap after a Release store, the sleeper's announce, re-check and futex sleep, and each
//! side's re-check predicate.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Memory;
use crate::sync::{AtomicU32, Futex, barrier, futex_wait, futex_wake, sabotage};

/// The longest sleep when the sleeper's barrier is refused (docs/LAYOUT.md, "Futexes").
const UNBARRIERED_SLICE: Duration = Duration::from_millis(1);

/// Wakes the peer if it announced that it sleeps on `event`. Call after a Release store that
/// changes what the peer waits for (an index, a closed flag, an owner word). `light`: this
/// process registered for the sleeper's barrier (`sync::barrier`), so the common case, nobody
/// asleep, is a compiler fence and a load of a word in our own line; otherwise the swap.
#[inline]
pub(crate) fn wake(waiting: &AtomicU32, event: &Futex, light: bool) {
    let announced = if barrier::light(light) {
        // W2 (light): a store-buffering pattern with the sleeper's W1 and its barrier (see
        // `sleep`): the sleeper's `membarrier` puts a full barrier in this thread between the
        // Release store before this call and the load below, or lets it run wholly before or
        // after, so either this load sees the announcement or the sleeper's re-check sees our
        // store. The swap that clears the announcement then synchronises as in the heavy case.
        barrier::waker_fence();
        waiting.load(Ordering::Relaxed) != 0 && waiting.swap(0, Ordering::AcqRel) != 0
    } else if sabotage::wake_loads() {
        waiting.load(Ordering::Acquire) != 0 && waiting.swap(0, Ordering::AcqRel) != 0
    } else {
        // W2 (heavy, AcqRel swap): the announcement word's modification order puts this swap
        // either after the sleeper's W1, and then it reads the announcement (or the sleeper's
        // own later clear, which it makes only once awake), or before W1, and then W1 reads
        // from this swap's release sequence, so our preceding Release store (the index, flag
        // or owner word) happens before the sleeper's re-check. Either the sleeper sees our
        // store or we see it sleeps: no lost wake-up. One locked instruction.
        waiting.swap(0, Ordering::AcqRel) != 0
    };
    if announced {
        // The increment changes the futex value so a sleeper that has not yet slept won't;
        // Release pairs with the sleeper's Acquire load of `event`.
        event.fetch_add(1, Ordering::Release);
        futex_wake(event);
    }
}

/// Sleeps on `event` for at most `slice` unless `ready()` already holds. The load, announce,
/// re-check order is the sleeper's half of the protocol whose other half is `wake`.
fn sleep(waiting: &AtomicU32, event: &Futex, slice: Duration, ready: &mut dyn FnMut() -> bool) {
    // Acquire: pairs with the waker's Release increment, so if this load sees an increment the
    // store that preceded it is visible to `ready()`; an increment it misses changes the value
    // the futex compares, and the wait returns at once.
    let seen = event.load(Ordering::Acquire);
    // W1 (AcqRel swap): pairs with W2 in `wake` (see there). An RMW, not a store, so that it
    // continues the release sequence of the waker's swap and synchronises with it.
    if sabotage::sleep_stores() {
        waiting.store(1, Ordering::Release);
    } else {
        waiting.swap(1, Ordering::AcqRel);
    }
    // The other half of a light waker's W2: a barrier in every registered process between the
    // announcement and the re-check. Refused by the kernel, a light waker may miss us: then
    // sleep only a short slice.
    let slice = if barrier::sleeper_barrier() {
        slice
    } else {
        slice.min(UNBARRIERED_SLICE)
    };
    if !ready() {
        futex_wait(event, seen, slice);
    }
    // Withdraw the announcement so the peer's next publish makes no system call. An RMW too:
    // a plain store here would cut the waker's release sequence, and a later W1 reading it
    // would not synchronise with the waker's W2.
    waiting.swap(0, Ordering::Relaxed);
}

/// The producer's sleep, shared by the blocking wait (`RoomWait`) and the async producer's
/// park on the blocking pool (`crate::channel::asynch`): the sleeper's half of the wake-up handshake on
/// `space_event`, for at most `slice`, unless after announcing it the consumer's line shows a
/// release beyond `head_cache` (the head the producer last validated, with which it found no
/// room) or the consumer's close. (A consumer that has not attached yet wakes us with its
/// first release.)
pub(crate) fn sleep_for_room(mem: &Memory, head_cache: u64, slice: Duration) {
    let h = mem.header();
    sleep(
        &h.consumer.producer_waiting,
        &h.consumer.space_event,
        slice,
        &mut || released_or_closed(mem, head_cache),
    );
}

/// The re-check after announcing a sleep: whether the consumer did what its wake-ups announce
/// (a release: the head moved, or its close). It only reads and validates nothing: `true`
/// sends the waiter back to `ProducerCore::room_for`, which re-reads and validates the head (and
/// poisons on a bad one); a hostile value can at worst make the waiter sleep one slice or not
/// at all. A release too small for the record also ends the sleep: `room_for` then finds no
/// room with the new head cached, and the waiter sleeps again.
fn released_or_closed(mem: &Memory, head_cache: u64) -> bool {
    let h = mem.header();
    // P3 (Acquire): pairs with the consumer's Release store of the head (C2). What makes this
    // load see a release the waker did not announce to us is W1/W2 (see `sleep`).
    mem.head().load(Ordering::Acquire) != head_cache
        // Acquire: pairs with the consumer's Release store of the flag in its drop.
        || h.producer.consumer_closed.load(Ordering::Acquire) != 0
}

/// The consumer's sleep, shared by the blocking wait (`DataWait`) and the async consumer's
/// park on the blocking pool (`crate::channel::asynch`): the sleeper's half of the wake-up handshake on
/// `data_event`, for at most `slice`, unless after announcing it the producer's line shows a
/// record beyond `head` (the consumer's read position: the ring is empty while the tail is
/// there) or the producer's close.
pub(crate) fn sleep_for_data(mem: &Memory, head: u64, slice: Duration) {
    let line = &mem.header().producer;
    sleep(&line.consumer_waiting, &line.data_event, slice, &mut || {
        published_or_closed(mem, head)
    });
}

/// The re-check after announcing a sleep: whether the producer did what its wake-ups announce
/// (a record published beyond `head`, or its close). It only reads and validates nothing:
/// `true` sends the waiter back to `ConsumerCore::has_data`, which re-reads and validates the
/// tail (and poisons on a bad one), and a hostile value can at worst make the waiter sleep one
/// slice or not at all. The loads are those of `empty_or_closed`, in its order.
fn published_or_closed(mem: &Memory, head: u64) -> bool {
    let line = &mem.header().producer;
    // C3 (Acquire), then O1 (Acquire), as in `empty_or_closed` (see there).
    let ever_claimed = line.claims.load(Ordering::Acquire) != 0;
    let holder = line.owner.load(Ordering::Acquire);
    // C1 (Acquire): pairs with the producer's Release store of the tail (P2). What makes this
    // load see a publish the waker did not announce to us is W1/W2 (see `sleep`).
    let tail = mem.tail().load(Ordering::Acquire);
    tail != head || (holder == 0 && ever_claimed)
}
