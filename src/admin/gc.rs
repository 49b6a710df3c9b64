//! Finding shmpipe segments on the system, telling stale ones from live and foreign ones, and
//! removing only the stale ones.
//!
//! The kernel's records (`/proc/sysvipc/shm`, `IPC_STAT`: attach counts, creator pids) and
//! `/proc/PID/stat` decide; the segment's own bytes only say whether it is ours (magic) and who
//! claimed its roles. A segment whose magic is not ours is never modified nor removed. This
//! module decides; the SysV calls themselves are `segment`'s.

use std::sync::atomic::Ordering;

use crate::backing::keylock::{self, Mode};
use crate::backing::segment_header;
use crate::backing::sysv::{self as segment, Key, Segment, SegmentStat};
use crate::channel::process::Mapped;
pub use crate::channel::roles::Holder;
use crate::channel::roles::holders;
pub use crate::channel::stale::Class;
use crate::channel::stale::classify_attached;
use crate::error::Error;
use crate::layout::{FLAG_PERSISTENT, HEADER_SIZE, MAGIC, MessageType, READY};

/// One segment seen by [`scan`] or [`gc`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The kernel's record of it.
    pub stat: SegmentStat,
    /// What it is.
    pub class: Class,
    /// Whether `gc` removed it.
    pub removed: bool,
}

impl Entry {
    /// Whether `gc` removed it, or, in a dry run, would have: stale, and ours or of one of
    /// `owners` ([`may_remove`]).
    pub fn collected(&self, dry_run: bool, owners: &[u32]) -> bool {
        self.removed || (dry_run && self.class.is_stale() && may_remove(&self.stat, owners))
    }
}

/// Classifies the segment with this shmid. Its attach is made under its key's lock, held
/// shared (docs/DESIGN.md, "Recycling a key"), so that a recycler of the key never counts it
/// as a user.
///
/// # Errors
///
/// [`Error::NotFound`] if it is gone; [`Error::Locked`] if its key's lock stayed held
/// exclusively (a recycler stuck for a second); other stat errors.
pub fn classify_id(shmid: i32) -> Result<(SegmentStat, Class), Error> {
    let stat = segment::stat_id(shmid)?;
    let _lock = keylock::lock_key(stat.key, Mode::Shared, keylock::OBSERVER_TIMEOUT)?;
    classify_id_locked(stat)
}

/// [`classify_id`] for a caller that holds the key's lock (either mode) already.
fn classify_id_locked(stat: SegmentStat) -> Result<(SegmentStat, Class), Error> {
    if stat.marked_for_removal {
        return Ok((stat, Class::Removing));
    }
    if stat.size < HEADER_SIZE {
        return Ok((stat, Class::Foreign));
    }
    match Segment::attach_id(stat.shmid) {
        Ok(seg) => {
            let class = classify_attached(&seg)?;
            Ok((stat, class))
        }
        Err(Error::PermissionDenied { .. }) => Ok((stat, Class::Unreadable)),
        Err(e) => Err(e),
    }
}

/// Ids of every SysV segment on the system, from `/proc/sysvipc/shm` (no attach needed).
///
/// # Errors
///
/// [`Error::Sys`] if the file cannot be read.
pub fn segment_ids() -> Result<Vec<i32>, Error> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").map_err(|source| Error::Sys {
        ident: Default::default(),
        op: "read /proc/sysvipc/shm",
        source,
    })?;
    // Columns: key shmid perms size cpid lpid nattch ...; the first line names them.
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_ascii_whitespace().nth(1)?.parse().ok())
        .collect())
}

/// Every segment on the system that is, or might be, a shmpipe ring, classified. Foreign and
/// unreadable segments are left out.
///
/// # Errors
///
/// As [`segment_ids`].
pub fn scan() -> Result<Vec<Entry>, Error> {
    let mut out = Vec::new();
    for id in segment_ids()? {
        // A segment may vanish between the listing and the look: skip it then.
        let Ok((stat, class)) = classify_id(id) else {
            continue;
        };
        if !matches!(class, Class::Foreign | Class::Unreadable) {
            out.push(Entry {
                stat,
                class,
                removed: false,
            });
        }
    }
    Ok(out)
}

/// Finds orphaned shmpipe segments (ours, nobody attached, no live role holder, and either
/// empty or left by a crash; or abandoned mid-initialisation) and removes them, unless
/// `dry_run`. Returns every shmpipe segment seen, with what was done. Never touches a segment
/// that is not a shmpipe ring, one in use, or one holding messages for a consumer that may come.
/// Unless `dry_run`, also removes the key lock files nobody holds (left by a process that died
/// holding one, or by another user; see docs/DESIGN.md, "Recycling a key").
///
/// Only segments whose owner and creator are this process's effective uid are removed, root
/// included: another user's stale ring is listed (its entry not removed) and left to its owner
/// or to [`gc_accepting`].
///
/// # Errors
///
/// As [`segment_ids`]. Failing to remove one segment is reported in its entry (not removed),
/// not as an error.
pub fn gc(dry_run: bool) -> Result<Vec<Entry>, Error> {
    gc_accepting(dry_run, &[])
}

/// [`gc`], also removing stale rings owned (and created) by the users `owners`, e.g. root
/// clearing what a crashed service account left.
///
/// # Errors
///
/// As [`gc`].
pub fn gc_accepting(dry_run: bool, owners: &[u32]) -> Result<Vec<Entry>, Error> {
    let mut entries = scan()?;
    for e in entries.iter_mut().filter(|e| e.class.is_stale()) {
        if !dry_run {
            e.removed = remove_if_stale(e.stat.shmid, owners);
        }
    }
    if !dry_run {
        keylock::sweep_key_locks();
    }
    Ok(entries)
}

/// [`gc_accepting`] of the one segment `shmid`: its entry, removed if stale and ours (or of
/// one of `owners`), classified once more under its key's lock first ([`remove_if_stale`]). A
/// segment that is not a shmpipe ring comes back as [`Class::Foreign`], left alone.
///
/// # Errors
///
/// As [`classify_id`].
pub fn gc_one(shmid: i32, dry_run: bool, owners: &[u32]) -> Result<Entry, Error> {
    let (stat, class) = classify_id(shmid)?;
    let removed = class.is_stale() && !dry_run && remove_if_stale(shmid, owners);
    Ok(Entry {
        stat,
        class,
        removed,
    })
}

/// Whether `gc` may remove this segment: its owner and its creator are this process's
/// effective uid or one of `owners`. A segment that is not ours is never removed, not even by
/// root, unless its owner is named.
pub fn may_remove(stat: &SegmentStat, owners: &[u32]) -> bool {
    crate::backing::access::may_remove(stat, owners)
}

/// `gc` of one segment: removes it if it is stale (see [`Class::is_stale`]) and ours (or of an
/// owner in `owners`; see [`may_remove`]), classifying it once more right before, with its
/// key's lock held exclusively, so that nobody can attach by key between that classification
/// and the removal, and no observer's attach is in the count. Returns whether it was removed.
/// Never removes a segment in use, a foreign one, another user's, or one that keeps messages
/// for a consumer; skips one whose key's lock stays busy.
pub fn remove_if_stale(shmid: i32, owners: &[u32]) -> bool {
    let Ok(stat) = segment::stat_id(shmid) else {
        return false;
    };
    let Ok(_lock) = keylock::lock_key(stat.key, Mode::Exclusive, keylock::OBSERVER_TIMEOUT) else {
        return false;
    };
    match classify_id_locked(stat) {
        Ok((stat, class)) if class.is_stale() && may_remove(&stat, owners) => {
            segment::remove_id(shmid).is_ok()
        }
        _ => false,
    }
}

/// What a ring holds, read from its header once, for monitoring (`shmpipe stat`). Values come
/// from the segment and are not validated beyond the header check: display them, do not act
/// on them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingInfo {
    /// The kernel's record of the segment. `attach_count` excludes the inspector's own attach.
    pub stat: SegmentStat,
    /// Its class.
    pub class: Class,
    /// The key the ring was created at, from its header: the kernel shows the key as 0
    /// (private) once the segment is marked for removal.
    pub created_key: Key,
    /// Bytes per slot.
    pub slot_size: u32,
    /// Slots.
    pub slot_count: u32,
    /// Largest message.
    pub max_message: u32,
    /// A typed ring's message type (size, alignment, fingerprint); `None` for a byte ring (or
    /// a header whose type fields are inconsistent, which `Ring::open` would refuse).
    pub message_type: Option<MessageType>,
    /// Created persistent.
    pub persistent: bool,
    /// The creator's random id.
    pub instance_id: u64,
    /// Slots holding unreceived records (`tail - head`).
    pub used_slots: u64,
    /// Messages published in total.
    pub sent: u64,
    /// Messages released in total.
    pub received: u64,
    /// Slots published in total (`tail - initial_index`).
    pub sent_slots: u64,
    /// The producer, if one holds the role.
    pub producer: Option<Holder>,
    /// The consumer, if one holds the role.
    pub consumer: Option<Holder>,
}

/// Reads a shmpipe ring's header and counters by shmid (attaching briefly).
///
/// # Errors
///
/// [`Error::NotFound`], [`Error::PermissionDenied`], [`Error::NotShmpipe`] for a foreign
/// segment, or the header errors of [`Ring::open`](crate::Ring::open).
pub fn inspect(shmid: i32) -> Result<RingInfo, Error> {
    // The attach is made under the key's lock, shared, as in `classify_id`. Locals drop in
    // reverse order: the segment is detached before the lock is released.
    let key = segment::stat_id(shmid)?.key;
    let _lock = keylock::lock_key(key, Mode::Shared, keylock::OBSERVER_TIMEOUT)?;
    let seg = Segment::attach_id(shmid)?;
    let class = classify_attached(&seg)?;
    let mut stat = seg.stat()?;
    stat.attach_count = stat.attach_count.saturating_sub(1);
    read_info(&seg, class, stat)
}

/// The body of [`inspect`]: reads the header of an attached segment.
fn read_info(seg: &Segment, class: Class, stat: SegmentStat) -> Result<RingInfo, Error> {
    let ident = seg.ident();
    let h = segment_header(seg).ok_or(Error::SegmentTooSmall {
        ident,
        claimed: HEADER_SIZE as u64,
        actual: seg.len() as u64,
    })?;
    let magic = h.config.magic.load(Ordering::Relaxed);
    if magic != MAGIC {
        return Err(Error::NotShmpipe {
            ident,
            found: magic,
        });
    }
    // R1 (Acquire): pairs with the creator's Release of READY; then the fields are complete.
    let ready = h.config.ready.load(Ordering::Acquire) == READY;
    let c = h.config.snapshot();
    let (producer, consumer) = holders(h, Some(Mapped::Segment(seg.shmid())));
    // Relaxed: a monitoring snapshot.
    let tail = h.producer.tail.load(Ordering::Relaxed);
    let head = h.consumer.head.load(Ordering::Relaxed);
    Ok(RingInfo {
        stat,
        class,
        created_key: Key::new(c.key as i32),
        slot_size: if ready { c.slot_size } else { 0 },
        slot_count: if ready { c.slot_count } else { 0 },
        max_message: if ready { c.max_message } else { 0 },
        message_type: if ready {
            c.message_type().ok().flatten()
        } else {
            None
        },
        persistent: c.flags & FLAG_PERSISTENT != 0,
        instance_id: c.instance_id,
        used_slots: tail.wrapping_sub(head),
        sent: h.producer.sent.load(Ordering::Relaxed),
        received: h.consumer.received.load(Ordering::Relaxed),
        sent_slots: tail.wrapping_sub(c.initial_index),
        producer,
        consumer,
    })
}
