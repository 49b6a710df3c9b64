//! `shmpipe create`, `shmpipe rm` and `shmpipe gc`: explicit lifetimes, and clearing what
//! crashes left behind. Nothing here ever removes a segment that is not a shmpipe ring.

use std::path::Path;
use std::process::ExitCode;

use shmpipe::gc::{self, Class};
use shmpipe::segment;
use shmpipe::{Key, Liveness, Ring, SegmentStat};

use super::{CliError, CreateArgs, GcArgs, RmArgs, Target, sysv};

/// `shmpipe create`: a persistent ring, which stays until `shmpipe rm` (or `ipcrm`). Prints its
/// shmid, which is how the other side finds a private ring (`--id`).
pub fn create(a: CreateArgs) -> Result<ExitCode, CliError> {
    let key = match a.target.required()? {
        Target::Key(k) => k,
        Target::Id(_) => {
            return Err(CliError::usage(
                "create takes --key or --ftok: the kernel chooses the shmid",
            ));
        }
    };
    let cfg = a.shape.config(true)?;
    let ring = Ring::create(key, &cfg)?;
    println!("{}", ring.shmid().unwrap_or(-1));
    Ok(ExitCode::SUCCESS)
}

/// `shmpipe rm`: marks a ring for removal (`IPC_RMID`). Processes using it carry on; the kernel
/// frees it when the last one detaches.
pub fn rm(a: RmArgs) -> Result<ExitCode, CliError> {
    if let Some(path) = &a.path {
        return rm_file(path, a.force);
    }
    let target = a.target.required()?;
    let shmid = sysv::shmid_of(target)?;
    let what = describe(target, shmid);
    let (_, class) = gc::classify_id(shmid)?;
    match class {
        Class::Foreign => {
            return Err(CliError::new(format!(
                "{what}: not a shmpipe ring; not removed (ipcrm -m {shmid} removes any segment)"
            )));
        }
        Class::Unreadable => {
            return Err(CliError::new(format!(
                "{what}: permission denied: cannot tell whether it is a shmpipe ring"
            )));
        }
        Class::Removing => return Ok(ExitCode::SUCCESS), // already marked
        Class::InUse { attached } if attached > 0 => {
            eprintln!(
                "shmpipe: {what}: in use by {attached} process(es); removed from its key now, \
                 freed when they detach"
            );
        }
        _ => {}
    }
    segment::remove_id(shmid)?;
    Ok(ExitCode::SUCCESS)
}

/// `shmpipe rm --path`: unlinks a ring file, unless live processes hold its roles (`force`
/// unlinks it anyway; they carry on with the mapping, as with a segment marked for removal).
fn rm_file(path: &Path, force: bool) -> Result<ExitCode, CliError> {
    let (ring, _, _) = super::stat::open_ring_file(path)?;
    let (producer, consumer) = ring.holders();
    let live: Vec<String> = [("producer", producer), ("consumer", consumer)]
        .into_iter()
        .filter_map(|(role, h)| h.map(|h| (role, h)))
        // A holder in another pid namespace may be alive: counted as live.
        .filter(|(_, h)| h.liveness != Liveness::Dead)
        .map(|(role, h)| format!("{role} pid {}", h.pid))
        .collect();
    if !live.is_empty() && !force {
        return Err(CliError::new(format!(
            "ring file {}: in use ({}); not removed (--force removes it: they carry on, nobody \
             new finds it)",
            path.display(),
            live.join(", ")
        )));
    }
    ring.remove()?;
    Ok(ExitCode::SUCCESS)
}

/// "key 0x00002020 (shmid 7)" or "shmid 7".
fn describe(target: Target, shmid: i32) -> String {
    match target {
        Target::Key(k) => format!("key {k} (shmid {shmid})"),
        Target::Id(_) => format!("shmid {shmid}"),
    }
}

/// Why a segment is (or is not) garbage, in words.
fn reason(class: &Class, stat: &SegmentStat) -> String {
    match class {
        Class::AbandonedInit => "its creator died while initialising it".into(),
        Class::Orphan {
            crashed: true,
            pending_slots,
        } => {
            let mut s = "a side died and nobody is attached".to_string();
            if *pending_slots > 0 {
                s.push_str(&format!(" ({pending_slots} slots unread)"));
            }
            s
        }
        Class::Orphan { .. } => "closed, empty and nobody attached".into(),
        Class::Pending { pending_slots: 0 } => {
            "an empty stream waits for a receiver (the sender closed without sending)".into()
        }
        Class::Pending { pending_slots } => {
            format!("messages wait for a receiver ({pending_slots} slots)")
        }
        Class::Idle => "persistent".into(),
        Class::InUse { attached } => format!("in use ({attached} attached)"),
        Class::Initialising => "being initialised".into(),
        Class::Removing if stat.attach_count > 0 => format!(
            "in use ({} attached), marked for removal",
            stat.attach_count
        ),
        Class::Removing => "already marked for removal".into(),
        Class::OtherVersion(v) => format!("layout version {v}, not this build's"),
        Class::Unreadable => "not readable by this user".into(),
        Class::Foreign => "not a shmpipe ring".into(),
        other => format!("{other:?}"),
    }
}

/// `shmpipe gc`: removes orphaned shmpipe rings: nobody attached, no live role holder, and
/// either left by a crash, or closed and empty; or abandoned while being created. Rings holding
/// messages for a receiver that may still come, persistent rings, rings in use and segments
/// that are not shmpipe rings are kept; so are rings of other users (root included) unless
/// `--accept-owner` names their owner.
pub fn gc(a: GcArgs) -> Result<ExitCode, CliError> {
    let owners = &a.owners.accept_owner;
    let entries = match a.target.resolve()? {
        None => gc::gc_accepting(a.dry_run, owners)?,
        Some(target) => {
            let shmid = sysv::shmid_of(target)?;
            let entry = gc::gc_one(shmid, a.dry_run, owners)?;
            if entry.class == Class::Foreign {
                return Err(CliError::new(format!(
                    "{}: not a shmpipe ring",
                    describe(target, shmid)
                )));
            }
            vec![entry]
        }
    };
    for e in &entries {
        let key = match e.stat.key {
            Key::Private => "0x00000000".to_string(),
            k => k.to_string(),
        };
        let ours = gc::may_remove(&e.stat, owners);
        let action = if e.removed {
            "removed"
        } else if e.class.is_stale() && !ours {
            // Stale, but another user's: never removed unless that owner is named.
            "not removed (not ours)"
        } else if e.class.is_stale() && a.dry_run {
            "would remove"
        } else if e.class.is_stale() {
            // In use again since it was classified, or not ours to remove (permissions).
            "not removed"
        } else if a.verbose {
            "kept"
        } else {
            continue;
        };
        let mut why = reason(&e.class, &e.stat);
        if e.class.is_stale() && !ours {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let me = unsafe { libc::geteuid() };
            let mut flags: Vec<String> = [e.stat.uid, e.stat.creator_uid]
                .into_iter()
                .filter(|&u| u != me && !owners.contains(&u))
                .map(|u| format!("--accept-owner {u}"))
                .collect();
            flags.dedup();
            why.push_str(&format!(
                "; owned by uid {} (created by uid {}): {} removes it",
                e.stat.uid,
                e.stat.creator_uid,
                flags.join(" ")
            ));
        }
        println!("{action} shmid {} key {key}: {why}", e.stat.shmid);
    }
    Ok(ExitCode::SUCCESS)
}
