//! The consumer handle: receives into the caller's buffer, zero-copy lends and batches.
//!
//! As in `producer.rs`: the Rust `ReadGuard` and `RecvBatch` borrow the `Consumer` mutably, so
//! the consumer lives in a box the handle owns, an open lend or batch is kept in the handle
//! with its borrow stretched to `'static`, and every call checks what is open before it
//! touches the consumer.

use std::ptr::NonNull;

use shmpipe_rs::{Consumer, Error, ReadGuard, RecvBatch};

use crate::error::{Fail, ShmpipeStatus, fail, guard, null};
use crate::{Claimed, Wait, bad_state, buffer, handle, put};

/// The receiving side of a ring, claimed with `shmpipe_ring_consumer`, freed with
/// `shmpipe_consumer_close`. Exactly one exists per ring, across processes. Not thread-safe:
/// one thread at a time may use it (it may move between threads).
pub struct ShmpipeConsumer {
    /// The lent message; borrows `consumer` (or, through `batch`, the same consumer).
    lent: Option<ReadGuard<'static>>,
    /// The open batch; borrows `consumer`.
    batch: Option<RecvBatch<'static>>,
    /// Owned (`Box::leak`), freed in `Drop` after the borrows; `None` once closed.
    consumer: Option<NonNull<Consumer>>,
    /// The ring's largest message.
    max_message: usize,
    /// The fork count of the process that claimed the side (`crate::forks`).
    claimed_at: u64,
}

impl Claimed for ShmpipeConsumer {
    fn claimed_at(&self) -> u64 {
        self.claimed_at
    }
}

impl ShmpipeConsumer {
    pub(crate) fn new(consumer: Consumer) -> ShmpipeConsumer {
        let max_message = consumer.max_message();
        ShmpipeConsumer {
            lent: None,
            batch: None,
            consumer: Some(NonNull::from(Box::leak(Box::new(consumer)))),
            max_message,
            claimed_at: crate::forks(),
        }
    }

    /// The consumer, for as long as the caller likes: only when nothing borrows it.
    fn idle(&mut self) -> Result<&'static mut Consumer, Fail> {
        self.not_lent()?;
        if self.batch.is_some() {
            return Err(bad_state(
                "a batch is open: only try_recv and try_lend go into it; end it first",
            ));
        }
        let mut c = self.consumer.expect("a live handle has its consumer");
        // SAFETY: the box is ours and lives until the handle is dropped or closed; no lend or
        // batch borrows it (checked above), and each caller keeps the reference only for its
        // call or hands it to a lend or batch stored in this handle, which the checks above
        // then see.
        Ok(unsafe { c.as_mut() })
    }

    /// The open batch, when no message is lent.
    fn open_batch(&mut self) -> Result<&mut RecvBatch<'static>, Fail> {
        self.not_lent()?;
        self.batch
            .as_mut()
            .ok_or_else(|| bad_state("no batch is open"))
    }

    /// Fails if a message is lent.
    fn not_lent(&self) -> Result<(), Fail> {
        if self.lent.is_some() {
            return Err(bad_state(
                "a lent message is open: release it first (shmpipe_consumer_release)",
            ));
        }
        Ok(())
    }
}

impl Drop for ShmpipeConsumer {
    fn drop(&mut self) {
        // The borrows first (they release their slots), then the consumer (gives the role
        // back).
        self.lent = None;
        self.batch = None;
        if let Some(c) = self.consumer.take() {
            // SAFETY: made by `Box::leak` in `new`, borrowed by nothing now.
            drop(unsafe { Box::from_raw(c.as_ptr()) });
        }
    }
}

/// A receive's result for C: the length at `len`, also when the buffer was too small (then
/// the length needed).
///
/// # Safety
///
/// `len` is valid for a write (checked non-NULL by the caller).
unsafe fn received(got: Result<usize, Error>, len: *mut usize) -> Result<(), Fail> {
    let e = match got {
        // SAFETY: as the caller promises.
        Ok(n) => return unsafe { put(len, n, "len") },
        Err(e) => e,
    };
    if let Error::BufferTooSmall { needed, .. } = e {
        // SAFETY: as the caller promises.
        unsafe { put(len, needed, "len") }?;
    }
    Err(fail(e))
}

/// A receive into the caller's buffer, waiting as `wait` says; a `try_` receive in an open
/// batch joins it, a waiting one is refused there.
///
/// # Safety
///
/// As `shmpipe_consumer_try_recv`.
unsafe fn recv(
    consumer: *mut ShmpipeConsumer,
    buf: *mut u8,
    capacity: usize,
    len: *mut usize,
    wait: Wait,
) -> ShmpipeStatus {
    guard(|| {
        if len.is_null() {
            return Err(null("len"));
        }
        // SAFETY: as the caller promises.
        let (h, buf) = unsafe { (handle(consumer, "consumer")?, buffer(buf, capacity, "buf")?) };
        h.not_lent()?;
        let got = match (wait, &mut h.batch) {
            (Wait::No, Some(batch)) => batch.try_recv(buf).map_err(Error::from),
            (Wait::No, None) => h.idle()?.try_recv(buf).map_err(Error::from),
            (Wait::Forever, _) => h.idle()?.recv(buf).map_err(Error::from),
            (Wait::For(d), _) => h.idle()?.recv_timeout(buf, d).map_err(Error::from),
        };
        // SAFETY: `len` is non-NULL (checked) and writable (the caller).
        unsafe { received(got, len) }
    })
}

/// Receives the next message now, if one is waiting, by copying it into `buf` (`capacity`
/// bytes); `*len` is its length. `SHMPIPE_STATUS_EMPTY` if none waits, `SHMPIPE_STATUS_DISCONNECTED` if none
/// waits and the producer closed (end of stream), `SHMPIPE_STATUS_BUFFER_TOO_SMALL` if it does not
/// fit: it stays in the ring and `*len` is the capacity needed (a buffer of
/// `shmpipe_consumer_max_message` bytes always fits); `SHMPIPE_STATUS_CORRUPTED` if the producer broke
/// the protocol. Never writes past `buf + capacity`, whatever the peer wrote into the ring.
/// In an open batch the message's slots are freed at the batch's release.
///
/// # Safety
///
/// `consumer` is NULL or a live handle; `buf` is NULL (then `capacity` is 0) or valid for
/// `capacity` writes; `len` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_consumer_try_recv(
    consumer: *mut ShmpipeConsumer,
    buf: *mut u8,
    capacity: usize,
    len: *mut usize,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { recv(consumer, buf, capacity, len, Wait::No) }
}

/// Receives the next message, waiting for one as the wait strategy says. As
/// `shmpipe_consumer_try_recv`, and `SHMPIPE_STATUS_PEER_DIED` once the producer's process died and
/// every message it published was received. Not in a batch (`SHMPIPE_STATUS_BAD_STATE`).
///
/// # Safety
///
/// As `shmpipe_consumer_try_recv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_consumer_recv(
    consumer: *mut ShmpipeConsumer,
    buf: *mut u8,
    capacity: usize,
    len: *mut usize,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { recv(consumer, buf, capacity, len, Wait::Forever) }
}

/// `shmpipe_consumer_recv`, giving up with `SHMPIPE_STATUS_TIMEOUT` after `timeout_ns` nanoseconds
/// without a message.
///
/// # Safety
///
/// As `shmpipe_consumer_try_recv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_consumer_recv_timeout(
    consumer: *mut ShmpipeConsumer,
    buf: *mut u8,
    capacity: usize,
    len: *mut usize,
    timeout_ns: u64,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { recv(consumer, buf, capacity, len, Wait::nanos(timeout_ns)) }
}

/// Keeps `lent` open and tells the caller where its bytes are.
///
/// # Safety
///
/// `data` and `len` are valid for writes (checked non-NULL by the caller).
unsafe fn open_lent(
    h: &mut ShmpipeConsumer,
    lent: ReadGuard<'static>,
    data: *mut *const u8,
    len: *mut usize,
) -> Result<(), Fail> {
    let lent = h.lent.insert(lent);
    let view = lent.view();
    // SAFETY: as the caller promises.
    unsafe {
        put(data, view.as_ptr(), "data")?;
        put(len, view.len(), "len")
    }
}

/// Lends the next message in place (zero copy), if one is waiting: `*data` and `*len` say
/// where its bytes are, until `shmpipe_consumer_release` (until then only that call, and
/// `shmpipe_consumer_close`, are allowed on the consumer). The library validated the record,
/// so `*data .. *data + *len` lies inside the ring's mapping and stays there until the
/// release; but the bytes are memory the producer's process can write at any time (see "Zero
/// copy" in the header's opening comment): read each byte once, or copy out what you check.
/// Errors as `shmpipe_consumer_try_recv` (a buffer is never too small).
///
/// # Safety
///
/// `consumer` is NULL or a live handle; `data` and `len` are valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_consumer_try_lend(
    consumer: *mut ShmpipeConsumer,
    data: *mut *const u8,
    len: *mut usize,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { lend(consumer, Wait::No, data, len) }
}

/// Waits for a message as the wait strategy says, then lends it as
/// `shmpipe_consumer_try_lend`. Not in a batch. Errors as `shmpipe_consumer_recv`.
///
/// # Safety
///
/// As `shmpipe_consumer_try_lend`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_consumer_lend(
    consumer: *mut ShmpipeConsumer,
    data: *mut *const u8,
    len: *mut usize,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { lend(consumer, Wait::Forever, data, len) }
}

/// `shmpipe_consumer_lend`, giving up with `SHMPIPE_STATUS_TIMEOUT` after `timeout_ns` nanoseconds.
///
/// # Safety
///
/// As `shmpipe_consumer_try_lend`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_consumer_lend_timeout(
    consumer: *mut ShmpipeConsumer,
    timeout_ns: u64,
    data: *mut *const u8,
    len: *mut usize,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { lend(consumer, Wait::nanos(timeout_ns), data, len) }
}

/// A lend, waiting as `wait` says; a `try_` lend in an open batch joins it, a waiting one is
/// refused there.
///
/// # Safety
///
/// As `shmpipe_consumer_try_lend`.
unsafe fn lend(
    consumer: *mut ShmpipeConsumer,
    wait: Wait,
    data: *mut *const u8,
    len: *mut usize,
) -> ShmpipeStatus {
    guard(|| {
        if data.is_null() {
            return Err(null("data"));
        }
        if len.is_null() {
            return Err(null("len"));
        }
        // SAFETY: as the caller promises.
        let h = unsafe { handle(consumer, "consumer") }?;
        h.not_lent()?;
        let lent = match (wait, &mut h.batch) {
            (Wait::No, Some(batch)) => {
                let batch: *mut RecvBatch<'static> = batch;
                // SAFETY: the batch stays where it is, in this boxed handle, until the lent
                // message is released: every call checks `lent` before it touches the batch,
                // and drop and close drop the lent message first.
                unsafe { &mut *batch }.try_lend().map_err(fail)?
            }
            (Wait::No, None) => h.idle()?.try_lend().map_err(fail)?,
            (Wait::Forever, _) => h.idle()?.lend().map_err(fail)?,
            (Wait::For(d), _) => h.idle()?.lend_timeout(d).map_err(fail)?,
        };
        // SAFETY: `data` and `len` are non-NULL (checked) and writable (the caller).
        unsafe { open_lent(h, lent, data, len) }
    })
}

/// Ends the lend: the message's slots go back to the producer (in a batch: at the batch's
/// release). The pointer the lend gave must not be used afterwards. `SHMPIPE_STATUS_BAD_STATE` if
/// nothing is lent.
///
/// # Safety
///
/// `consumer` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_consumer_release(consumer: *mut ShmpipeConsumer) -> ShmpipeStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        let h = unsafe { handle(consumer, "consumer") }?;
        match h.lent.take() {
            Some(lent) => {
                drop(lent);
                Ok(())
            }
            None => Err(bad_state("no message is lent")),
        }
    })
}

/// Opens a batch: the slots of messages received (`shmpipe_consumer_try_recv`) or lent and
/// released (`shmpipe_consumer_try_lend`, `shmpipe_consumer_release`) until it ends go back
/// to the producer together, with one store, at `shmpipe_consumer_batch_release` or
/// `shmpipe_consumer_batch_end`. Blocking calls are refused while it is open.
///
/// # Safety
///
/// `consumer` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_consumer_batch_begin(
    consumer: *mut ShmpipeConsumer,
) -> ShmpipeStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        let h = unsafe { handle(consumer, "consumer") }?;
        let batch = h.idle()?.batch();
        h.batch = Some(batch);
        Ok(())
    })
}

/// Frees the slots of every message of the batch so far; it stays open. `SHMPIPE_STATUS_BAD_STATE`
/// without an open batch, or with a message lent.
///
/// # Safety
///
/// `consumer` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_consumer_batch_release(
    consumer: *mut ShmpipeConsumer,
) -> ShmpipeStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        unsafe { handle(consumer, "consumer") }?
            .open_batch()?
            .release();
        Ok(())
    })
}

/// Frees the batch's slots and closes it. `SHMPIPE_STATUS_BAD_STATE` without an open batch, or with
/// a message lent.
///
/// # Safety
///
/// `consumer` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_consumer_batch_end(
    consumer: *mut ShmpipeConsumer,
) -> ShmpipeStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        let h = unsafe { handle(consumer, "consumer") }?;
        h.open_batch()?;
        h.batch = None; // releases
        Ok(())
    })
}

/// How blocking calls wait: `SHMPIPE_WAIT_SPIN`, `SHMPIPE_WAIT_SPIN_THEN_SLEEP` (the default)
/// or `SHMPIPE_WAIT_SLEEP`; anything else is `SHMPIPE_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `consumer` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_consumer_set_wait_strategy(
    consumer: *mut ShmpipeConsumer,
    strategy: i32,
) -> ShmpipeStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        let h = unsafe { handle(consumer, "consumer") }?;
        let s = crate::strategy(strategy)?;
        h.idle()?.set_wait_strategy(s);
        Ok(())
    })
}

/// The ring's largest message in bytes (0 for NULL): a receive buffer this large always fits.
///
/// # Safety
///
/// `consumer` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_consumer_max_message(consumer: *const ShmpipeConsumer) -> usize {
    // SAFETY: NULL or a live handle (the caller); a plain field, no borrow of the consumer.
    unsafe { consumer.as_ref() }.map_or(0, |h| h.max_message)
}

/// Closes the consumer and frees the handle, whatever the result: a lent message and an open
/// batch are released, then the role is given back (sends then fail with
/// `SHMPIPE_STATUS_DISCONNECTED`). Returns `SHMPIPE_STATUS_OK` for a clean end, or `SHMPIPE_STATUS_CORRUPTED` if
/// the role could not be given back or the consumer was poisoned before; in a forked child that
/// inherited the handle, `SHMPIPE_STATUS_WRONG_PROCESS` (the handle is freed, the parent's consumer
/// untouched). NULL is ignored.
///
/// # Safety
///
/// `consumer` is NULL or a live handle, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_consumer_close(consumer: *mut ShmpipeConsumer) -> ShmpipeStatus {
    if consumer.is_null() {
        return ShmpipeStatus::Ok;
    }
    guard(|| {
        // SAFETY: a live handle made by `Box::into_raw`, given back (the caller).
        let mut h = unsafe { Box::from_raw(consumer) };
        // In a forked child the handle is freed (dropping `h`) and the parent's side untouched.
        h.check_process("consumer")?;
        h.lent = None;
        h.batch = None;
        let c = h.consumer.take().expect("a live handle has its consumer");
        // SAFETY: made by `Box::leak` in `new`, borrowed by nothing now.
        let c = unsafe { Box::from_raw(c.as_ptr()) };
        c.close().map_err(fail)
    })
}
