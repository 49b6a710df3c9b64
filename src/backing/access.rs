//! Whose memory we are about to use: the ownership check every open path makes before it
//! reads a byte of a segment, memfd or file it did not create.
//!
//! A key or a path is a name anyone may take first. A local user can create a well-formed ring
//! at our key with mode 0666 (or give a segment it created to us with `IPC_SET`, keeping its
//! own access as its creator), and whatever we send into it is theirs to read. So, before
//! trusting an object, the kernel's record of it is compared with what the caller expects
//! (`docs/DESIGN.md`, "Whose ring is it"):
//!
//! - its owner (`shm_perm.uid`, `st_uid`) and, for a SysV segment, its creator
//!   (`shm_perm.cuid`, which nobody can change) must be our effective uid, or a uid the caller
//!   accepted ([`RingConfig::accept_owner`](crate::RingConfig::accept_owner));
//! - a ring entirely ours (owner and creator our uid) must not grant group or others any
//!   permission that [`RingConfig::mode`](crate::RingConfig::mode) (default 0600) does not.
//!   A ring of an accepted owner comes with the mode its owner chose: the owner can change it
//!   at any time, so checking it would promise nothing.
//!
//! Root is no exception. This module only decides; the stat calls are `segment`'s and the
//! descriptors' (`memfd::fstat`).

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::backing::sysv::SegmentStat;
use crate::error::{Error, Ident};

/// Permission bits of group and others.
const OTHERS: u32 = 0o077;

/// The effective uid of this process: the one the kernel checks access with, and the one a
/// ring must belong to.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// What the caller accepts: the widest mode of a ring of its own, and other owners it trusts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Expect<'a> {
    /// Permission bits the caller would create with; group and other bits beyond these are
    /// refused on a ring it owns.
    pub(crate) mode: u32,
    /// Uids besides our own whose rings (as owner or creator) the caller accepts.
    pub(crate) owners: &'a [u32],
}

/// The kernel's record of who owns an object and who may use it.
#[derive(Clone, Copy, Debug)]
struct Found {
    owner_uid: u32,
    /// A SysV segment's creator; `None` for a file or memfd (which has no separate creator).
    creator_uid: Option<u32>,
    mode: u32,
}

impl Expect<'_> {
    fn accepts(&self, me: u32, uid: u32) -> bool {
        uid == me || self.owners.contains(&uid)
    }

    /// `Ok` if an object with this owner, creator and mode may be used; `ForeignOwner`
    /// otherwise.
    fn check(&self, ident: Ident, found: Found) -> Result<(), Error> {
        let me = euid();
        let refuse = || Error::ForeignOwner {
            ident,
            owner_uid: found.owner_uid,
            creator_uid: found.creator_uid,
            mode: found.mode,
            expected_uid: me,
            allowed_mode: self.mode & 0o777,
        };
        let creator = found.creator_uid.unwrap_or(found.owner_uid);
        if !self.accepts(me, found.owner_uid) || !self.accepts(me, creator) {
            return Err(refuse());
        }
        let ours = found.owner_uid == me && creator == me;
        if ours && found.mode & OTHERS & !self.mode != 0 {
            return Err(refuse());
        }
        Ok(())
    }

    /// Checks an attached segment by its `IPC_STAT` record.
    pub(crate) fn check_segment(&self, ident: Ident, stat: &SegmentStat) -> Result<(), Error> {
        self.check(
            ident,
            Found {
                owner_uid: stat.uid,
                creator_uid: Some(stat.creator_uid),
                mode: stat.mode & 0o777,
            },
        )
    }

    /// Checks a file or memfd by its `fstat` record.
    pub(crate) fn check_stat(&self, ident: Ident, st: &libc::stat) -> Result<(), Error> {
        self.check(
            ident,
            Found {
                owner_uid: st.st_uid,
                creator_uid: None,
                mode: st.st_mode & 0o777,
            },
        )
    }
}

/// Whether `gc` (or `open_or_create` recycling a stale ring) may remove this segment: its
/// owner and creator are our effective uid or accepted. "Never remove a segment that is not
/// ours" holds for root too, unless root names the owner.
pub(crate) fn may_remove(stat: &SegmentStat, owners: &[u32]) -> bool {
    let me = euid();
    let ok = |uid: u32| uid == me || owners.contains(&uid);
    ok(stat.uid) && ok(stat.creator_uid)
}

/// Gives a descriptor we created exactly the permission bits `mode`: a memfd starts as 0777,
/// and `open`'s mode is filtered by the umask.
pub(crate) fn set_mode(fd: BorrowedFd<'_>, mode: u32, ident: Ident) -> Result<(), Error> {
    // SAFETY: fchmod on a descriptor we hold; no memory is passed.
    if unsafe { libc::fchmod(fd.as_raw_fd(), (mode & 0o777) as libc::mode_t) } != 0 {
        return Err(Error::Sys {
            ident,
            op: "fchmod",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}
