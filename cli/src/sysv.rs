//! The kernel's list of SysV segments, `/proc/sysvipc/shm`: reading it needs no attach, so it
//! is how the command finds a segment by key (and how `ipcs -m` lists them).

use shmpipe::Key;

use super::{CliError, Target};

/// One line of `/proc/sysvipc/shm`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcShm {
    /// The key (0, `IPC_PRIVATE`, also once the segment is marked for removal).
    pub key: Key,
    /// The segment's id.
    pub shmid: i32,
    /// Permission bits, with `SHM_DEST` (0o1000) once marked for removal, as `ipcs -m` shows.
    pub perms: u32,
    /// Size in bytes.
    pub size: u64,
    /// Attached processes.
    pub nattch: u64,
    /// The owner's user id.
    pub uid: u32,
}

/// Parses the text of `/proc/sysvipc/shm`. Columns: key shmid perms (octal) size cpid lpid
/// nattch uid ...;
/// the first line names them. Lines that do not parse are skipped.
fn parse(text: &str) -> Vec<ProcShm> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let key = f.next()?.parse::<i32>().ok()?;
            let shmid = f.next()?.parse::<i32>().ok()?;
            let perms = u32::from_str_radix(f.next()?, 8).ok()?;
            let size = f.next()?.parse().ok()?;
            let nattch = f.nth(2)?.parse().ok()?;
            let uid = f.next()?.parse().ok()?;
            Some(ProcShm {
                key: Key::new(key),
                shmid,
                perms,
                size,
                nattch,
                uid,
            })
        })
        .collect()
}

/// Every segment the kernel lists.
pub fn segments() -> Result<Vec<ProcShm>, CliError> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm")
        .map_err(|e| CliError::new(format!("cannot read /proc/sysvipc/shm: {e}")))?;
    Ok(parse(&text))
}

/// The shmid a target names: looked up by key in `/proc/sysvipc/shm` (no attach).
pub fn shmid_of(target: Target) -> Result<i32, CliError> {
    let key = match target {
        Target::Id(id) => return Ok(id),
        Target::Key(Key::Private) => {
            return Err(CliError::usage(
                "a private key names no existing segment: give its shmid with --id",
            ));
        }
        Target::Key(k) => k,
    };
    let segs = segments()?;
    if let Some(s) = segs.iter().find(|s| s.key == key) {
        return Ok(s.shmid);
    }
    // Once both sides have attached, a ring is marked for removal and the kernel shows its key
    // as 0; the ring's header still says which key it was created at.
    segs.iter()
        .filter(|s| s.key == Key::Private)
        .find(|s| shmpipe::gc::inspect(s.shmid).is_ok_and(|i| i.created_key == key))
        .map(|s| s.shmid)
        .ok_or_else(|| CliError::new(format!("key {key}: no such segment")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_lines_parse() {
        let text = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n\
                    \x20     8224      98307  1600               4194688  1234  1240      2  1000     0     0     0 1700000000 1700000000 1700000000               4194688                     0\n\
                    \x20        0      98308   600                  4096  1234  1240      0     0     0     0     0          0          0 1700000000                  4096                     0\n\
                    \x20      -17          9   600                  4096  1234  1240      0     0     0     0     0          0          0 1700000000                  4096                     0\n";
        let got = parse(text);
        assert_eq!(
            got,
            [
                ProcShm {
                    key: Key::Number(8224),
                    shmid: 98307,
                    perms: 0o1600,
                    size: 4194688,
                    nattch: 2,
                    uid: 1000,
                },
                ProcShm {
                    key: Key::Private,
                    shmid: 98308,
                    perms: 0o600,
                    size: 4096,
                    nattch: 0,
                    uid: 0,
                },
                ProcShm {
                    key: Key::Number(-17),
                    shmid: 9,
                    perms: 0o600,
                    size: 4096,
                    nattch: 0,
                    uid: 0,
                },
            ]
        );
    }
}
