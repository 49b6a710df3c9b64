//! The producer handle: sends, zero-copy grants and batches.
//!
//! A Rust `WriteGrant` or `SendBatch` borrows its `Producer` mutably. Here the producer lives
//! in a box of its own that the handle owns; a grant or batch made from it is kept in the
//! handle with its borrow stretched to `'static`, and every call checks what is open before it
//! touches the producer, so the borrow rules hold at run time: while a grant is open only
//! commit and abort are allowed, while a batch is open only its non-blocking calls. The
//! borrows are dropped before the producer they borrow (`Drop`, `shmpipe_producer_close`).

use std::ptr::NonNull;

use shmpipe_rs::{Producer, SendBatch, WriteGrant};

use crate::error::{Fail, ShmpipeStatus, fail, guard};
use crate::{Claimed, Wait, bad_state, bytes, guard_out, handle};

/// The sending side of a ring, claimed with `shmpipe_ring_producer`, freed with
/// `shmpipe_producer_close`. Exactly one exists per ring, across processes. Not thread-safe:
/// one thread at a time may use it (it may move between threads).
pub struct ShmpipeProducer {
    /// The open grant; borrows `producer` (or, through `batch`, the same producer).
    grant: Option<WriteGrant<'static>>,
    /// The open batch; borrows `producer`.
    batch: Option<SendBatch<'static>>,
    /// Owned (`Box::into_raw`), freed in `Drop` after the borrows; `None` once closed.
    producer: Option<NonNull<Producer>>,
    /// The ring's largest message.
    max_message: usize,
    /// The fork count of the process that claimed the side (`crate::forks`).
    claimed_at: u64,
}

impl Claimed for ShmpipeProducer {
    fn claimed_at(&self) -> u64 {
        self.claimed_at
    }
}

impl ShmpipeProducer {
    pub(crate) fn new(producer: Producer) -> ShmpipeProducer {
        let max_message = producer.max_message();
        ShmpipeProducer {
            grant: None,
            batch: None,
            producer: Some(NonNull::from(Box::leak(Box::new(producer)))),
            max_message,
            claimed_at: crate::forks(),
        }
    }

    /// The producer, for as long as the caller likes: only when nothing borrows it.
    fn idle(&mut self) -> Result<&'static mut Producer, Fail> {
        if self.grant.is_some() {
            return Err(bad_state(
                "a reserved message is open: commit or abort it first",
            ));
        }
        if self.batch.is_some() {
            return Err(bad_state(
                "a batch is open: only try_send and try_reserve go into it; end it first",
            ));
        }
        let mut p = self.producer.expect("a live handle has its producer");
        // SAFETY: the box is ours and lives until the handle is dropped or closed; no grant or
        // batch borrows it (checked above), and each caller keeps the reference only for its
        // call or hands it to a grant or batch stored in this handle, which the checks above
        // then see.
        Ok(unsafe { p.as_mut() })
    }

    /// Fails if a grant is open.
    fn no_grant(&self) -> Result<(), Fail> {
        if self.grant.is_some() {
            return Err(bad_state(
                "a reserved message is open: commit or abort it first",
            ));
        }
        Ok(())
    }

    /// The open batch, when no grant is open.
    fn open_batch(&mut self) -> Result<&mut SendBatch<'static>, Fail> {
        self.no_grant()?;
        self.batch
            .as_mut()
            .ok_or_else(|| bad_state("no batch is open"))
    }

    /// Keeps `grant` open and returns where its bytes are.
    fn open_grant(&mut self, grant: WriteGrant<'static>) -> *mut u8 {
        self.grant.insert(grant).view_mut().as_mut_ptr()
    }
}

impl Drop for ShmpipeProducer {
    fn drop(&mut self) {
        // The borrows first (a batch publishes what it holds), then the producer (gives the
        // role back).
        self.grant = None;
        self.batch = None;
        if let Some(p) = self.producer.take() {
            // SAFETY: made by `Box::leak` in `new`, borrowed by nothing now.
            drop(unsafe { Box::from_raw(p.as_ptr()) });
        }
    }
}

/// Sends a message of `len` bytes now if there is room (one copy into the ring): `SHMPIPE_STATUS_OK`,
/// or `SHMPIPE_STATUS_FULL` (nothing sent), `SHMPIPE_STATUS_TOO_LARGE`, `SHMPIPE_STATUS_DISCONNECTED` (the consumer
/// closed), `SHMPIPE_STATUS_CORRUPTED`, ... In an open batch the message joins the batch, visible at
/// its publish; on `SHMPIPE_STATUS_FULL` the batch so far is published first. `data` may be NULL when
/// `len` is 0 (an empty message is a message).
///
/// # Safety
///
/// `producer` is NULL or a live handle; `data` is NULL or points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_producer_try_send(
    producer: *mut ShmpipeProducer,
    data: *const u8,
    len: usize,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { send(producer, data, len, Wait::No) }
}

/// A send of the caller's message, waiting as `wait` says; a `try_` send in an open batch
/// joins it, a waiting one is refused there.
///
/// # Safety
///
/// As `shmpipe_producer_try_send`.
unsafe fn send(
    producer: *mut ShmpipeProducer,
    data: *const u8,
    len: usize,
    wait: Wait,
) -> ShmpipeStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        let (h, msg) = unsafe { (handle(producer, "producer")?, bytes(data, len, "data")?) };
        h.no_grant()?;
        match (wait, &mut h.batch) {
            (Wait::No, Some(batch)) => batch.try_send(msg).map_err(fail),
            (Wait::No, None) => h.idle()?.try_send(msg).map_err(fail),
            (Wait::Forever, _) => h.idle()?.send(msg).map_err(fail),
            (Wait::For(d), _) => h.idle()?.send_timeout(msg, d).map_err(fail),
        }
    })
}

/// Sends a message, waiting for room as the wait strategy says (`SHMPIPE_STATUS_PEER_DIED` if the
/// consumer's process dies meanwhile). Not in a batch (`SHMPIPE_STATUS_BAD_STATE`).
///
/// # Safety
///
/// As `shmpipe_producer_try_send`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_producer_send(
    producer: *mut ShmpipeProducer,
    data: *const u8,
    len: usize,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { send(producer, data, len, Wait::Forever) }
}

/// `shmpipe_producer_send`, giving up with `SHMPIPE_STATUS_TIMEOUT` after `timeout_ns` nanoseconds
/// without room.
///
/// # Safety
///
/// As `shmpipe_producer_try_send`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_producer_send_timeout(
    producer: *mut ShmpipeProducer,
    data: *const u8,
    len: usize,
    timeout_ns: u64,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { send(producer, data, len, Wait::nanos(timeout_ns)) }
}

/// Reserves room for a message of exactly `len` bytes now, if there is room, to build it in
/// place (zero copy): `*data` is where its bytes are. Write them, then
/// `shmpipe_producer_commit` sends it (or `shmpipe_producer_abort` discards it); until then
/// only those two calls are allowed on the producer. The bytes are memory the consumer's
/// process could write if it broke the protocol (see "Zero copy" in the header's opening
/// comment); their initial content is whatever the slots held. In an open batch the message
/// joins the batch at its commit. Errors as `shmpipe_producer_try_send`.
///
/// # Safety
///
/// `producer` is NULL or a live handle; `data` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_producer_try_reserve(
    producer: *mut ShmpipeProducer,
    len: usize,
    data: *mut *mut u8,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { reserve(producer, len, Wait::No, data) }
}

/// Waits for room as the wait strategy says, then reserves as `shmpipe_producer_try_reserve`.
/// Not in a batch. Errors as `shmpipe_producer_send`.
///
/// # Safety
///
/// As `shmpipe_producer_try_reserve`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_producer_reserve(
    producer: *mut ShmpipeProducer,
    len: usize,
    data: *mut *mut u8,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { reserve(producer, len, Wait::Forever, data) }
}

/// `shmpipe_producer_reserve`, giving up with `SHMPIPE_STATUS_TIMEOUT` after `timeout_ns`
/// nanoseconds.
///
/// # Safety
///
/// As `shmpipe_producer_try_reserve`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_producer_reserve_timeout(
    producer: *mut ShmpipeProducer,
    len: usize,
    timeout_ns: u64,
    data: *mut *mut u8,
) -> ShmpipeStatus {
    // SAFETY: as the caller promises.
    unsafe { reserve(producer, len, Wait::nanos(timeout_ns), data) }
}

/// A reserve, waiting as `wait` says; a `try_` reserve in an open batch joins it, a waiting
/// one is refused there.
///
/// # Safety
///
/// As `shmpipe_producer_try_reserve`.
unsafe fn reserve(
    producer: *mut ShmpipeProducer,
    len: usize,
    wait: Wait,
    data: *mut *mut u8,
) -> ShmpipeStatus {
    let body = || {
        // SAFETY: as the caller promises.
        let h = unsafe { handle(producer, "producer") }?;
        h.no_grant()?;
        let grant = match (wait, &mut h.batch) {
            (Wait::No, Some(batch)) => {
                let batch: *mut SendBatch<'static> = batch;
                // SAFETY: the batch stays where it is, in this boxed handle, until the grant is
                // gone: every call checks the grant before it touches the batch, and drop and
                // close drop the grant first.
                unsafe { &mut *batch }.try_reserve(len).map_err(fail)?
            }
            (Wait::No, None) => h.idle()?.try_reserve(len).map_err(fail)?,
            (Wait::Forever, _) => h.idle()?.reserve(len).map_err(fail)?,
            (Wait::For(d), _) => h.idle()?.reserve_timeout(len, d).map_err(fail)?,
        };
        Ok(h.open_grant(grant))
    };
    // SAFETY: `data` as the caller promises.
    unsafe { guard_out(data, "data", body) }
}

/// Sends the reserved message, its first `len` bytes only (at most the length reserved, else
/// `SHMPIPE_STATUS_INVALID_ARGUMENT` and the grant stays open): for a message whose length is known
/// once written. In a batch it joins the batch. `SHMPIPE_STATUS_BAD_STATE` without an open grant.
/// The pointer the reserve gave is not to be used afterwards.
///
/// # Safety
///
/// `producer` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_producer_commit(
    producer: *mut ShmpipeProducer,
    len: usize,
) -> ShmpipeStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        let h = unsafe { handle(producer, "producer") }?;
        let Some(grant) = h.grant.take() else {
            return Err(bad_state("no reserved message to commit"));
        };
        if len > grant.len() {
            let reserved = grant.len();
            h.grant = Some(grant);
            return Err(Fail::new(
                ShmpipeStatus::InvalidArgument,
                format!("commit of {len} bytes, but {reserved} were reserved"),
            ));
        }
        grant.commit_len(len);
        Ok(())
    })
}

/// Discards the reserved message: nothing is sent, the ring is as before.
/// `SHMPIPE_STATUS_BAD_STATE` without an open grant.
///
/// # Safety
///
/// `producer` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_producer_abort(producer: *mut ShmpipeProducer) -> ShmpipeStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        let h = unsafe { handle(producer, "producer") }?;
        // A grant that is not committed leaves the ring as it was.
        match h.grant.take() {
            Some(_) => Ok(()),
            None => Err(bad_state("no reserved message to abort")),
        }
    })
}

/// Opens a batch: messages sent (`shmpipe_producer_try_send`) or committed
/// (`shmpipe_producer_try_reserve`, `shmpipe_producer_commit`) until it ends become visible to
/// the consumer together, with one store, at `shmpipe_producer_batch_publish` or
/// `shmpipe_producer_batch_end`. Blocking calls are refused while it is open.
///
/// # Safety
///
/// `producer` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_producer_batch_begin(
    producer: *mut ShmpipeProducer,
) -> ShmpipeStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        let h = unsafe { handle(producer, "producer") }?;
        let batch = h.idle()?.batch();
        h.batch = Some(batch);
        Ok(())
    })
}

/// Publishes the batch so far; it stays open. `SHMPIPE_STATUS_BAD_STATE` without an open batch, or
/// with a grant open.
///
/// # Safety
///
/// `producer` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_producer_batch_publish(
    producer: *mut ShmpipeProducer,
) -> ShmpipeStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        unsafe { handle(producer, "producer") }?
            .open_batch()?
            .publish();
        Ok(())
    })
}

/// Publishes the batch and closes it. `SHMPIPE_STATUS_BAD_STATE` without an open batch, or with a
/// grant open.
///
/// # Safety
///
/// `producer` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_producer_batch_end(
    producer: *mut ShmpipeProducer,
) -> ShmpipeStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        let h = unsafe { handle(producer, "producer") }?;
        h.open_batch()?;
        h.batch = None; // publishes
        Ok(())
    })
}

/// How blocking calls wait: `SHMPIPE_WAIT_SPIN`, `SHMPIPE_WAIT_SPIN_THEN_SLEEP` (the default)
/// or `SHMPIPE_WAIT_SLEEP`; anything else is `SHMPIPE_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
///
/// `producer` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_producer_set_wait_strategy(
    producer: *mut ShmpipeProducer,
    strategy: i32,
) -> ShmpipeStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        let h = unsafe { handle(producer, "producer") }?;
        let s = crate::strategy(strategy)?;
        h.idle()?.set_wait_strategy(s);
        Ok(())
    })
}

/// Whether the consumer is still there, without sending: `SHMPIPE_STATUS_OK` if it holds the role and
/// lives, or has not come yet; `SHMPIPE_STATUS_DISCONNECTED` if it closed; `SHMPIPE_STATUS_PEER_DIED` if
/// its process died. A send notices a dead consumer only when it has to wait for room.
///
/// # Safety
///
/// `producer` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_producer_check_consumer(
    producer: *mut ShmpipeProducer,
) -> ShmpipeStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        let h = unsafe { handle(producer, "producer") }?;
        h.idle()?.check_consumer().map_err(fail)
    })
}

/// The ring's largest message in bytes (0 for NULL).
///
/// # Safety
///
/// `producer` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_producer_max_message(producer: *const ShmpipeProducer) -> usize {
    // SAFETY: NULL or a live handle (the caller); a plain field, no borrow of the producer.
    unsafe { producer.as_ref() }.map_or(0, |h| h.max_message)
}

/// Closes the producer and frees the handle, whatever the result: an open grant is discarded,
/// an open batch published, then the role is given back and the consumer, after receiving
/// every message, sees the end of stream (`SHMPIPE_STATUS_DISCONNECTED`). Returns `SHMPIPE_STATUS_OK` for a
/// clean end, or `SHMPIPE_STATUS_CORRUPTED` if the role could not be given back (another process
/// rewrote it) or the producer was poisoned before; in a forked child that inherited the handle,
/// `SHMPIPE_STATUS_WRONG_PROCESS` (the handle is freed, the parent's producer untouched). NULL is
/// ignored (`SHMPIPE_STATUS_OK`).
///
/// # Safety
///
/// `producer` is NULL or a live handle, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmpipe_producer_close(producer: *mut ShmpipeProducer) -> ShmpipeStatus {
    if producer.is_null() {
        return ShmpipeStatus::Ok;
    }
    guard(|| {
        // SAFETY: a live handle made by `Box::into_raw`, given back (the caller).
        let mut h = unsafe { Box::from_raw(producer) };
        // In a forked child the handle is freed (dropping `h`) and the parent's side untouched.
        h.check_process("producer")?;
        h.grant = None;
        h.batch = None;
        let p = h.producer.take().expect("a live handle has its producer");
        // SAFETY: made by `Box::leak` in `new`, borrowed by nothing now.
        let p = unsafe { Box::from_raw(p.as_ptr()) };
        p.close().map_err(fail)
    })
}
