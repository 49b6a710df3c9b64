//! Whether a segment is a stale ring: the classification `gc` reports and
//! `Ring::open_or_create` uses to recycle a key (docs/DESIGN.md, "Existing keys and `gc`").

use std::sync::atomic::Ordering;

use super::process::{self as owner, Liveness, Mapped};
use super::roles::role_liveness;
use crate::backing::access::may_remove;
use crate::backing::segment_header;
use crate::backing::sysv::{Key, Segment};
use crate::error::{Error, Role};
use crate::layout::{FLAG_PERSISTENT, LAYOUT_VERSION, MAGIC, READY};

/// What a segment is, as far as shmpipe is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Class {
    /// Not a shmpipe ring (another magic number, or too small): never touched.
    Foreign,
    /// We may not attach it (permissions), so we cannot tell: never touched.
    Unreadable,
    /// Already marked for removal: the kernel frees it at the last detach.
    Removing,
    /// A shmpipe ring of another layout version: left alone.
    OtherVersion(u32),
    /// Other processes are attached: in use.
    InUse {
        /// Attaches other than the classifier's own.
        attached: u64,
    },
    /// Its creator is still writing the header.
    Initialising,
    /// Its creator died before finishing the header, and nobody is attached: stale.
    AbandonedInit,
    /// Nobody is attached and no role holder lives; either the ring is empty (and not
    /// persistent) or a holder died: stale.
    Orphan {
        /// A role holder died without closing (as opposed to: everyone closed cleanly).
        crashed: bool,
        /// Messages published and not yet received (lost if removed).
        pending_slots: u64,
    },
    /// Nobody is attached, everyone closed cleanly, and messages wait for a consumer that
    /// may still come (e.g. a server that sent and exited before its client started): kept.
    /// `pending_slots` is 0 for an empty stream: a producer claimed the ring and closed it
    /// without sending, and no consumer has claimed it yet (it receives the end of stream).
    Pending {
        /// Slots holding unreceived messages.
        pending_slots: u64,
    },
    /// A persistent ring that nobody uses now, closed cleanly: kept until removed explicitly.
    Idle,
}

impl Class {
    /// Whether `gc` removes a segment of this class.
    pub fn is_stale(&self) -> bool {
        matches!(self, Class::AbandonedInit | Class::Orphan { .. })
    }
}

/// Whether a pid (from the kernel, e.g. `shm_cpid`) is alive. Without a start time a reused
/// pid reads as alive, which errs on the side of keeping a segment.
fn pid_alive(pid: i32) -> bool {
    u32::try_from(pid).is_ok_and(|p| owner::liveness(u64::from(p)) == Liveness::Alive)
}

/// Classifies an attached segment. `seg` is our own attach, excluded from the counts.
pub(crate) fn classify_attached(seg: &Segment) -> Result<Class, Error> {
    let stat = seg.stat()?;
    if stat.marked_for_removal {
        return Ok(Class::Removing);
    }
    let others = stat.attach_count.saturating_sub(1);
    let Some(h) = segment_header(seg) else {
        return Ok(Class::Foreign);
    };
    if h.config.magic.load(Ordering::Relaxed) != MAGIC {
        return Ok(Class::Foreign);
    }
    // R1 (Acquire): pairs with the creator's Release store of READY.
    if h.config.ready.load(Ordering::Acquire) != READY {
        let abandoned = others == 0 && !pid_alive(stat.creator_pid);
        return Ok(if abandoned {
            Class::AbandonedInit
        } else {
            Class::Initialising
        });
    }
    let version = h.config.version.load(Ordering::Relaxed);
    if version != LAYOUT_VERSION {
        return Ok(Class::OtherVersion(version));
    }
    if others > 0 {
        return Ok(Class::InUse { attached: others });
    }
    // O1 (Acquire): pairs with the holders' claims and releases.
    let holders = [
        (Role::Producer, h.producer.owner.load(Ordering::Acquire)),
        (Role::Consumer, h.consumer.owner.load(Ordering::Acquire)),
    ];
    let mapped = Some(Mapped::Segment(seg.shmid()));
    let mut crashed = false;
    for (role, holder) in holders.into_iter().filter(|&(_, o)| o != 0) {
        match role_liveness(h, mapped, role, holder) {
            Liveness::Dead => crashed = true,
            // Alive but not attached (it detached without closing), or in another pid
            // namespace (Unknown): not ours to judge, never stale.
            _ => return Ok(Class::InUse { attached: 0 }),
        }
    }
    // Monitoring values: read once, used only to describe and to decide keep-or-remove.
    let tail = h.producer.tail.load(Ordering::Acquire);
    let head = h.consumer.head.load(Ordering::Acquire);
    let pending_slots = tail.wrapping_sub(head);
    let persistent = h.config.flags.load(Ordering::Relaxed) & FLAG_PERSISTENT != 0;
    // A producer claimed and closed cleanly, and no consumer has come: even with nothing in it
    // the ring is a complete stream, an empty one, which the consumer must still receive as
    // its end (`shmpipe send </dev/null` before the receiver starts). Kept like any pending
    // stream; recycling it would leave the consumer waiting for a producer that came and went.
    let empty_stream = !crashed
        && h.producer.claims.load(Ordering::Relaxed) != 0
        && h.consumer.claims.load(Ordering::Relaxed) == 0;
    Ok(
        if crashed || (pending_slots == 0 && !persistent && !empty_stream) {
            Class::Orphan {
                crashed,
                pending_slots,
            }
        } else if pending_slots == 0 && persistent {
            Class::Idle
        } else {
            Class::Pending { pending_slots }
        },
    )
}

/// For `Ring::open_or_create`, which holds the key's lock exclusively: if the segment at `key`
/// is stale and ours (or of an owner in `owners`), remove it so a fresh ring can be created.
/// Returns whether it did.
///
/// Under the lock, every attach counted is a user's: observers and openers by key attach only
/// while holding the lock shared, and other recyclers and `gc` wait for it. So one
/// classification decides, and the removal follows it while still attached.
pub(crate) fn recycle_if_stale_locked(key: Key, owners: &[u32]) -> bool {
    let Ok(seg) = Segment::open(key) else {
        return false;
    };
    if !classify_attached(&seg).is_ok_and(|c| c.is_stale()) {
        return false;
    }
    if !seg.stat().is_ok_and(|stat| may_remove(&stat, owners)) {
        return false;
    }
    seg.remove().is_ok()
}
