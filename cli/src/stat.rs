//! `shmpipe stat` (alias `info`): the `ipcs -m` view of shmpipe rings, with what only shmpipe
//! knows: shape, bytes and messages in the ring, totals, the role holders and whether they
//! live.
//!
//! The list of segments comes from `/proc/sysvipc/shm`; each is then looked at once with
//! `shmpipe::gc::inspect`, a brief attach whose own attach is not counted. Segments that are
//! not shmpipe rings (or that this user may not attach) are not listed. Rings of other users
//! are listed, marked with their owner: `send` and `recv` refuse them unless told to accept
//! that owner, but `stat` claims nothing and sends nothing, so it shows them.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;

use shmpipe::Liveness;
use shmpipe::gc::{self, Class, Holder, RingInfo};

use super::bench::json_string;
use super::{CliError, StatArgs, sysv};

/// `shmpipe stat`.
pub fn stat(a: StatArgs) -> Result<ExitCode, CliError> {
    if let Some(path) = &a.path {
        let (ring, uid, mode) = open_ring_file(path)?;
        let view = FileView::of(&ring, path, uid, mode);
        if a.json {
            println!("{}", view.json());
        } else {
            print!("{}", view.details());
        }
        return Ok(ExitCode::SUCCESS);
    }
    match a.target.resolve()? {
        Some(target) => {
            let shmid = sysv::shmid_of(target)?;
            let info = gc::inspect(shmid).map_err(|e| match e {
                shmpipe::Error::SegmentTooSmall { .. } => CliError::new(format!(
                    "{target} (shmid {shmid}): not a shmpipe ring (smaller than a ring header)"
                )),
                e => e.into(),
            })?;
            if a.json {
                println!("{}", json(&info));
            } else {
                print!("{}", details(&info));
            }
        }
        None => {
            let rows: Vec<Row> = sysv::segments()?
                .into_iter()
                .filter_map(|s| match gc::inspect(s.shmid) {
                    Ok(info) => Some(Row::Ring(Box::new(info))),
                    // Listed as `ipcs -m` lists it: we cannot tell whether it is a ring.
                    Err(e) if no_access(&e) => Some(Row::NoAccess(s)),
                    // Foreign, or vanished since the listing: not ours to show.
                    Err(_) => None,
                })
                .collect();
            if a.json {
                let items: Vec<String> = rows.iter().map(Row::json).collect();
                println!("[{}]", items.join(","));
            } else {
                print!("{}", table(&rows));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of the list: a ring, or a segment we may not read.
enum Row {
    /// A shmpipe ring.
    Ring(Box<RingInfo>),
    /// A segment this user may not attach: what `/proc/sysvipc/shm` says, state "no-access".
    NoAccess(sysv::ProcShm),
}

impl Row {
    fn json(&self) -> String {
        let s = match self {
            Row::Ring(i) => return json(i),
            Row::NoAccess(s) => s,
        };
        let key = s.key.raw() as u32;
        format!(
            "{{\"key\":{key},\"key_hex\":\"0x{key:08x}\",\"shmid\":{},\"mode\":{},\
             \"perms\":\"{:o}\",\"uid\":{},\"size\":{},\"attached\":{},\
             \"marked_for_removal\":{},\"state\":\"no-access\"}}",
            s.shmid,
            s.perms & 0o777,
            s.perms & 0o777,
            s.uid,
            s.size,
            s.nattch,
            s.perms & SHM_DEST != 0
        )
    }
}

/// The bit `/proc/sysvipc/shm` sets in `perms` once a segment is marked for removal.
const SHM_DEST: u32 = 0o1000;

/// Whether an error means this user may not read the segment (not: it is not a ring).
fn no_access(e: &shmpipe::Error) -> bool {
    if matches!(e, shmpipe::Error::PermissionDenied { .. }) {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// Opens the ring in the file at `path` without claiming a role, whoever owns the file and with
/// whatever mode (it is shown or removed, never used); also its owner and permission bits. A
/// file swapped in between this look and the open is refused; a file that is not a ring is
/// "not a shmpipe ring".
pub(super) fn open_ring_file(path: &Path) -> Result<(shmpipe::Ring, u32, u32), CliError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| CliError::new(format!("ring file {}: {e}", path.display())))?;
    let (uid, mode) = (meta.uid(), meta.mode() & 0o777);
    let cfg = shmpipe::RingConfig::new().accept_owner(uid).mode(mode);
    let ring = shmpipe::Ring::open(path, &cfg).map_err(|e| {
        let why = match e {
            shmpipe::Error::SegmentTooSmall { actual, .. } => {
                format!("{actual} bytes, smaller than a ring header")
            }
            shmpipe::Error::InitTimeout { .. } => {
                "no ring header, or its creator is slow or died".to_string()
            }
            e => return CliError::from(e),
        };
        CliError::new(format!(
            "ring file {}: not a shmpipe ring ({why})",
            path.display()
        ))
    })?;
    Ok((ring, uid, mode))
}

/// A ring in a file, read through a mapping of it (no role is claimed). The kernel has no
/// `IPC_STAT` for it: what a segment's view takes from there comes from the file.
struct FileView {
    path: String,
    linked: bool,
    persistent: bool,
    slot_size: u64,
    slot_count: u64,
    max_message: u64,
    message_type: Option<shmpipe::MessageType>,
    status: shmpipe::RingStatus,
    holders: (Option<Holder>, Option<Holder>),
    instance_id: u64,
    uid: u32,
    mode: u32,
}

impl FileView {
    fn of(ring: &shmpipe::Ring, path: &std::path::Path, uid: u32, mode: u32) -> FileView {
        FileView {
            uid,
            mode,
            path: path.display().to_string(),
            linked: ring.is_linked(),
            persistent: ring.is_persistent(),
            slot_size: ring.slot_size() as u64,
            slot_count: ring.slot_count() as u64,
            max_message: ring.max_message() as u64,
            message_type: ring.message_type(),
            status: ring.status(),
            holders: ring.holders(),
            instance_id: ring.instance_id(),
        }
    }

    fn messages(&self) -> u64 {
        self.status.sent.wrapping_sub(self.status.received)
    }

    fn used_bytes(&self) -> u64 {
        self.status.used_slots.saturating_mul(self.slot_size)
    }

    fn details(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, value: String| {
            let _ = writeln!(out, "{name:<13}{value}");
        };
        line("file", self.path.clone());
        line("mode", owner_line(self.mode, self.uid, None));
        line(
            "shape",
            format!(
                "{} slots x {} bytes = {}; largest message {} bytes",
                self.slot_count,
                self.slot_size,
                human(self.slot_count * self.slot_size),
                self.max_message
            ),
        );
        if let Some(t) = self.message_type {
            line("message type", t.to_string());
        }
        line(
            "persistent",
            if self.persistent { "yes" } else { "no" }.to_string(),
        );
        line(
            "in the ring",
            format!(
                "{} in {} slots, {} messages",
                human(self.used_bytes()),
                self.status.used_slots,
                self.messages()
            ),
        );
        line("sent", format!("{} messages", self.status.sent));
        line("received", format!("{} messages", self.status.received));
        line("producer", holder_long(self.holders.0));
        line("consumer", holder_long(self.holders.1));
        line(
            "removal",
            if self.linked {
                "linked: the path names the ring".to_string()
            } else {
                "unlinked: freed when the last process unmaps it".to_string()
            },
        );
        out
    }

    fn json(&self) -> String {
        let fields: Vec<(&str, String)> = vec![
            ("path", json_string(&self.path)),
            ("mode", self.mode.to_string()),
            ("uid", self.uid.to_string()),
            ("capacity", (self.slot_count * self.slot_size).to_string()),
            ("slot_size", self.slot_size.to_string()),
            ("slot_count", self.slot_count.to_string()),
            ("max_message", self.max_message.to_string()),
            ("message_type", json_message_type(self.message_type)),
            ("persistent", self.persistent.to_string()),
            ("linked", self.linked.to_string()),
            ("used_slots", self.status.used_slots.to_string()),
            ("used_bytes", self.used_bytes().to_string()),
            ("messages", self.messages().to_string()),
            ("sent", self.status.sent.to_string()),
            ("received", self.status.received.to_string()),
            ("producer", json_holder(self.holders.0)),
            ("consumer", json_holder(self.holders.1)),
            ("instance_id", format!("\"{:016x}\"", self.instance_id)),
        ];
        let body: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", body.join(","))
    }
}

/// Bytes of the slot array.
fn capacity(i: &RingInfo) -> u64 {
    u64::from(i.slot_size) * u64::from(i.slot_count)
}

/// Bytes of the slots holding unreceived records (record headers and padding included).
fn used_bytes(i: &RingInfo) -> u64 {
    i.used_slots.saturating_mul(u64::from(i.slot_size))
}

/// Messages published and not yet received.
fn messages(i: &RingInfo) -> u64 {
    i.sent.wrapping_sub(i.received)
}

/// A short name of a ring's state. A ring that both sides joined is marked for removal while
/// still in use: that is "in-use" (with `dest`, as ipcs says), not "removing".
fn state(i: &RingInfo) -> &'static str {
    match i.class {
        Class::Removing if i.stat.attach_count > 0 => "in-use",
        Class::Removing => "removing",
        Class::Foreign => "foreign",
        Class::Unreadable => "unreadable",
        Class::OtherVersion(_) => "other-version",
        Class::InUse { .. } => "in-use",
        Class::Initialising => "initialising",
        Class::AbandonedInit => "abandoned-init",
        Class::Orphan { .. } => "orphan",
        Class::Pending { .. } => "pending",
        Class::Idle => "idle",
        _ => "unknown",
    }
}

/// `1.5 MiB`, `512 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The owner (or, if the owner is us, the creator) of a ring that is not ours: not this
/// process's effective uid.
fn stranger(owner: u32, creator: Option<u32>) -> Option<u32> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    [Some(owner), creator]
        .into_iter()
        .flatten()
        .find(|&uid| uid != me)
}

/// "0600 (owner uid 0)", with the creator if another, and a warning for a ring not ours.
fn owner_line(mode: u32, owner: u32, creator: Option<u32>) -> String {
    let mut s = format!("{mode:04o} (owner uid {owner}");
    if let Some(c) = creator.filter(|&c| c != owner) {
        s.push_str(&format!(", created by uid {c}"));
    }
    s.push(')');
    if let Some(uid) = stranger(owner, creator) {
        s.push_str(&format!(
            "; not ours: send and recv refuse it without --accept-owner {uid}"
        ));
    }
    s
}

fn holder_short(h: Option<Holder>) -> String {
    match h {
        None => "-".into(),
        Some(h) if h.alive() => h.pid.to_string(),
        Some(h) if h.liveness == Liveness::Unknown => format!("{}(?)", h.pid),
        Some(h) => format!("{}(dead)", h.pid),
    }
}

fn holder_long(h: Option<Holder>) -> String {
    match h {
        None => "none".into(),
        Some(h) => format!("pid {} ({})", h.pid, h.liveness),
    }
}

/// One line per ring, under a header, like `ipcs -m`.
fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:>10} {:<5} {:>9} {:>9} {:>8} {:>10} {:>12} {:>12} {:>6}  STATE",
        "KEY",
        "SHMID",
        "PERMS",
        "CAPACITY",
        "USED",
        "MSGS",
        "SENT",
        "PRODUCER",
        "CONSUMER",
        "NATTCH"
    );
    for row in rows {
        // KEY SHMID PERMS, the ring's own columns, NATTCH, and STATE built from its first word.
        let (key, shmid, perms, ring, nattch, mut st) = match row {
            Row::Ring(i) => {
                let ring = [
                    human(capacity(i)),
                    human(used_bytes(i)),
                    messages(i).to_string(),
                    i.sent.to_string(),
                    holder_short(i.producer),
                    holder_short(i.consumer),
                ];
                let mut st = state(i).to_string();
                if i.stat.marked_for_removal {
                    st.push_str(" dest");
                }
                if i.persistent {
                    st.push_str(" persistent");
                }
                let owner = stranger(i.stat.uid, Some(i.stat.creator_uid));
                let (key, id, mode) = (i.stat.key, i.stat.shmid, i.stat.mode);
                (key, id, mode, ring, i.stat.attach_count, (st, owner))
            }
            Row::NoAccess(s) => {
                let mut st = "no-access".to_string();
                if s.perms & SHM_DEST != 0 {
                    st.push_str(" dest");
                }
                let ring = std::array::from_fn(|_| "-".to_string());
                let owner = stranger(s.uid, None);
                (s.key, s.shmid, s.perms & 0o777, ring, s.nattch, (st, owner))
            }
        };
        if let Some(uid) = st.1 {
            // Not ours: send and recv refuse it unless told to accept this user.
            st.0.push_str(&format!(" owner={uid}"));
        }
        let [capacity, used, msgs, sent, producer, consumer] = ring;
        let _ = writeln!(
            out,
            "{:<10} {:>10} {:<5} {:>9} {:>9} {:>8} {:>10} {:>12} {:>12} {:>6}  {}",
            key.to_string().replace("IPC_PRIVATE", "0x00000000"),
            shmid,
            format!("{perms:o}"),
            capacity,
            used,
            msgs,
            sent,
            producer,
            consumer,
            nattch,
            st.0
        );
    }
    out
}

/// Everything about one ring, one field a line (the `info` view).
fn details(i: &RingInfo) -> String {
    let mut out = String::new();
    let key = match (i.stat.key, i.created_key) {
        (shmpipe::Key::Private, shmpipe::Key::Private) => "none (private)".to_string(),
        (shmpipe::Key::Private, created) => {
            format!("{created} (created there; the kernel shows 0 once marked for removal)")
        }
        (k, _) => k.to_string(),
    };
    let mut line = |name: &str, value: String| {
        let _ = writeln!(out, "{name:<13}{value}");
    };
    line("key", key);
    line("shmid", i.stat.shmid.to_string());
    line(
        "mode",
        owner_line(i.stat.mode, i.stat.uid, Some(i.stat.creator_uid)),
    );
    line(
        "shape",
        format!(
            "{} slots x {} bytes = {}; largest message {} bytes",
            i.slot_count,
            i.slot_size,
            human(capacity(i)),
            i.max_message
        ),
    );
    if let Some(t) = i.message_type {
        line("message type", t.to_string());
    }
    line(
        "persistent",
        if i.persistent { "yes" } else { "no" }.to_string(),
    );
    line("state", state(i).to_string());
    line(
        "in the ring",
        format!(
            "{} in {} slots, {} messages",
            human(used_bytes(i)),
            i.used_slots,
            messages(i)
        ),
    );
    line(
        "sent",
        format!("{} messages ({} slots)", i.sent, i.sent_slots),
    );
    line("received", format!("{} messages", i.received));
    line("producer", holder_long(i.producer));
    line("consumer", holder_long(i.consumer));
    line("attached", format!("{} processes", i.stat.attach_count));
    line(
        "removal",
        if i.stat.marked_for_removal {
            "marked: freed when the last process detaches".to_string()
        } else {
            "not marked".to_string()
        },
    );
    line("creator pid", i.stat.creator_pid.to_string());
    line("instance", format!("{:016x}", i.instance_id));
    out
}

fn json_holder(h: Option<Holder>) -> String {
    match h {
        None => "null".into(),
        Some(h) => format!(
            "{{\"pid\":{},\"alive\":{},\"liveness\":\"{}\"}}",
            h.pid,
            h.alive(),
            match h.liveness {
                Liveness::Alive => "alive",
                Liveness::Dead => "dead",
                _ => "unknown",
            }
        ),
    }
}

/// A typed ring's message type as a JSON object (`null` for a byte ring). The fingerprint is a
/// hex string: a u64 does not survive a JSON number in every reader.
fn json_message_type(t: Option<shmpipe::MessageType>) -> String {
    match t {
        None => "null".into(),
        Some(t) => format!(
            "{{\"size\":{},\"align\":{},\"fingerprint\":\"{:016x}\"}}",
            t.size, t.align, t.fingerprint
        ),
    }
}

/// One ring as a JSON object. Numbers are JSON numbers; the only strings are fixed words and
/// hex digits, so nothing needs escaping.
fn json(i: &RingInfo) -> String {
    let key = i.stat.key.raw() as u32;
    let fields: Vec<(&str, String)> = vec![
        ("key", key.to_string()),
        ("key_hex", format!("\"0x{key:08x}\"")),
        ("created_key", (i.created_key.raw() as u32).to_string()),
        ("shmid", i.stat.shmid.to_string()),
        ("mode", i.stat.mode.to_string()),
        ("perms", format!("\"{:o}\"", i.stat.mode)),
        ("uid", i.stat.uid.to_string()),
        ("creator_uid", i.stat.creator_uid.to_string()),
        ("size", i.stat.size.to_string()),
        ("capacity", capacity(i).to_string()),
        ("slot_size", i.slot_size.to_string()),
        ("slot_count", i.slot_count.to_string()),
        ("max_message", i.max_message.to_string()),
        ("message_type", json_message_type(i.message_type)),
        ("persistent", i.persistent.to_string()),
        ("state", format!("\"{}\"", state(i))),
        ("used_slots", i.used_slots.to_string()),
        ("used_bytes", used_bytes(i).to_string()),
        ("messages", messages(i).to_string()),
        ("sent", i.sent.to_string()),
        ("received", i.received.to_string()),
        ("sent_slots", i.sent_slots.to_string()),
        ("producer", json_holder(i.producer)),
        ("consumer", json_holder(i.consumer)),
        ("attached", i.stat.attach_count.to_string()),
        ("marked_for_removal", i.stat.marked_for_removal.to_string()),
        ("creator_pid", i.stat.creator_pid.to_string()),
        ("instance_id", format!("\"{:016x}\"", i.instance_id)),
    ];
    let body: Vec<String> = fields
        .into_iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    format!("{{{}}}", body.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(4 << 20), "4.0 MiB");
        assert_eq!(human(1536), "1.5 KiB");
    }
}
