//! Roles: claiming, giving back and taking over the producer and consumer roles, and the
//! kernel's word on whether a role's holder lives (docs/DESIGN.md, "Roles and owners").

use std::sync::atomic::Ordering;

use super::process::{self as owner, Identity, Mapped};
use super::region::Region;
use super::{Ring, wake};
use crate::backing::Backing;
use crate::error::{Corrupted, Corruption, Error, Liveness, Role, WrongProcess};
use crate::layout::Header;
use crate::sync::AtomicU64;

impl Ring {
    /// Takes a role: its owner word goes from 0 (or, taking over, from a dead holder's
    /// identity) to ours. Marks a non-persistent segment for removal once both roles are held.
    pub(super) fn claim(&self, role: Role, take_over: bool) -> Result<Identity, Error> {
        let h = self.region.header();
        let (owner, claims, other_claims) = match role {
            Role::Producer => (&h.producer.owner, &h.producer.claims, &h.consumer.claims),
            Role::Consumer => (&h.consumer.owner, &h.consumer.claims, &h.producer.claims),
        };
        // A role is where this thread starts touching the ring: refuse it on a thread that
        // would die of a fault the handler cannot catch (docs/DESIGN.md, "When memory
        // disappears: SIGBUS").
        if self.region.backing().can_fault() && crate::backing::sigbus::blocked() {
            return Err(Error::SigbusBlocked {
                ident: self.ident(),
            });
        }
        let pidns = owner_pidns(h, role);
        // Computed in this process (a forked child gets its own), with its pid namespace.
        let me = owner::me();
        let my_ns = owner::my_pidns();
        let taken = |holder: Identity| Error::RoleTaken {
            ident: self.ident(),
            role,
            pid: owner::pid_of(holder),
            holder: holder_liveness(&self.region, role, holder),
        };
        // O1 (Acquire): pairs with the previous holder's Release in `release_role`.
        let current = owner.load(Ordering::Acquire);
        if current != 0
            && !(take_over && holder_liveness(&self.region, role, current) == Liveness::Dead)
        {
            return Err(taken(current));
        }
        // N1 (Relaxed, published by the O1 CAS below): our namespace is recorded before our
        // identity appears in the owner word, so whoever reads our identity (O1 Acquire) and
        // then the namespace sees ours: there is no moment at which a holder in another
        // namespace looks like one of ours. A claimant that dies here leaves only this word
        // changed, which describes nobody (the owner word is unchanged).
        pidns.store(my_ns, Ordering::Relaxed);
        // O1 (SeqCst, so also AcqRel): Acquire sees the previous holder's last index stores.
        owner
            .compare_exchange(current, me, Ordering::SeqCst, Ordering::Acquire)
            .map_err(taken)?;
        // N1 again: a racing claimant that lost the CAS may have overwritten the word between
        // our store and our CAS. (One that stores after this is the window DESIGN.md names.)
        pidns.store(my_ns, Ordering::Relaxed);
        // SeqCst increment, then SeqCst load of the other role's count: of two racing
        // claimants at least one sees both counts non-zero.
        claims.fetch_add(1, Ordering::SeqCst);
        if !self.region.persistent() && other_claims.load(Ordering::SeqCst) != 0 {
            // Both roles have been claimed: from now on the kernel frees the segment when
            // everyone has detached, crash or not. An error here (already marked, or not ours
            // to remove) leaves the ring usable, so it is not fatal.
            let _ = self.remove();
        }
        Ok(me)
    }
}

/// The word where a role's claimant records its pid namespace.
pub(crate) fn owner_pidns(h: &Header, role: Role) -> &AtomicU64 {
    match role {
        Role::Producer => &h.producer.owner_pidns,
        Role::Consumer => &h.consumer.owner_pidns,
    }
}

/// What the kernel says about `holder`, an identity read (O1) from the owner word of `role`:
/// its recorded pid namespace, `/proc`, and whether it still maps this ring (see
/// `owner::judge`). Cold path: a few small `/proc` reads.
pub(crate) fn holder_liveness(region: &Region, role: Role, holder: Identity) -> Liveness {
    // The address this process maps the ring at, for the exec check; a heap ring has none.
    role_liveness(region.header(), mapped(region), role, holder)
}

/// What the exec check of `owner::judge` looks for in a holder's maps: the segment's shmid, or
/// where this process maps a memfd or file ring; `None` for a heap ring (nothing to check: it
/// lives in this process).
pub(crate) fn mapped(region: &Region) -> Option<Mapped> {
    match region.backing() {
        Backing::Heap(_) => None,
        Backing::Segment(s) => Some(Mapped::Segment(s.shmid())),
        Backing::Memfd(_) | Backing::File(_) => {
            Some(Mapped::At(std::ptr::from_ref(region.header()).addr()))
        }
    }
}

/// [`holder_liveness`] for a header mapped at `mapped` (`gc` classifies segments it attached
/// without building a ring).
pub(crate) fn role_liveness(
    h: &Header,
    mapped: Option<Mapped>,
    role: Role,
    holder: Identity,
) -> Liveness {
    let owner = match role {
        Role::Producer => &h.producer.owner,
        Role::Consumer => &h.consumer.owner,
    };
    // N1 (Relaxed): after the caller's O1 Acquire load that returned `holder`, which
    // synchronised with the holder's claim CAS, this sees the namespace stored before it.
    let pidns = owner_pidns(h, role).load(Ordering::Relaxed);
    // O1 (Acquire): the re-read that confirms a dead verdict (see `owner::judge`).
    owner::judge(holder, pidns, mapped, || {
        owner.load(Ordering::Acquire) == holder
    })
}

/// Gives a role back if we still hold it; `Err` with what the word held if we did not.
pub(crate) fn release_role(owner: &AtomicU64, me: Identity) -> Result<(), u64> {
    // O1 (Release): pairs with the Acquire of the next `claim`, and, through the Release RMW
    // in the `wake` that follows, with a sleeping peer's announcement (W1/W2).
    owner
        .compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed)
        .map(|_| ())
}

/// The end of a close: gives `role` back (O1), then wakes the peer, which may sleep waiting for
/// this very change (W2). `Err(RoleLost)` if the owner word no longer held `me`: another process
/// rewrote it, and the word is left as it was (the peer is woken all the same, to see it).
pub(crate) fn give_back_role(region: &Region, role: Role, me: Identity) -> Result<(), Corrupted> {
    let h = region.header();
    let released = match role {
        Role::Producer => {
            let released = release_role(&h.producer.owner, me);
            wake(&h.producer.consumer_waiting, &h.producer.data_event, false);
            released
        }
        Role::Consumer => {
            let released = release_role(&h.consumer.owner, me);
            wake(&h.consumer.producer_waiting, &h.consumer.space_event, false);
            released
        }
    };
    released.map_err(|found| Corrupted {
        ring: region.ident(),
        what: Corruption::RoleLost { role, found },
    })
}

/// Fails unless the calling process is the one that claimed `role` as `me`: two loads of
/// process-local memory and a branch (see `owner::current`). A handle inherited across `fork`
/// neither uses nor releases the claimer's role ("Fork, exec and pid namespaces" in
/// docs/DESIGN.md).
#[inline(always)]
pub(crate) fn check_process(region: &Region, role: Role, me: Identity) -> Result<(), WrongProcess> {
    if owner::current() == me {
        Ok(())
    } else {
        Err(wrong_process(region, role, me))
    }
}

#[cold]
#[inline(never)]
pub(crate) fn wrong_process(region: &Region, role: Role, me: Identity) -> WrongProcess {
    WrongProcess {
        ring: region.ident(),
        role,
        claimer: owner::pid_of(me),
        current: owner::pid_now(),
    }
}

/// A role holder as recorded in a ring, with the kernel's word on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The pid written by the holder (in its own pid namespace).
    pub pid: u32,
    /// Whether that process (same pid and start time, still mapping the ring) is alive, dead,
    /// or in another pid namespace (unknown).
    pub liveness: Liveness,
}

impl Holder {
    /// Whether the kernel says the holder lives ([`Liveness::Alive`]).
    pub fn alive(&self) -> bool {
        self.liveness == Liveness::Alive
    }
}

/// The producer's and consumer's role holders recorded in a header, each with the kernel's
/// word on whether it lives (one `/proc` read per holder); `None` where a role is free.
pub(crate) fn holders(h: &Header, mapped: Option<Mapped>) -> (Option<Holder>, Option<Holder>) {
    let holder = |role: Role, id: u64| {
        (id != 0).then(|| Holder {
            pid: owner::pid_of(id),
            liveness: role_liveness(h, mapped, role, id),
        })
    };
    // Relaxed: a monitoring snapshot.
    (
        holder(Role::Producer, h.producer.owner.load(Ordering::Relaxed)),
        holder(Role::Consumer, h.consumer.owner.load(Ordering::Relaxed)),
    )
}
