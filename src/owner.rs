//! Who holds a role, and whether the kernel says that process is still alive.
//!
//! A role's owner word holds an identity: the holder's pid in the low 32 bits and the low 32
//! bits of its start time (clock ticks since boot, field 22 of `/proc/PID/stat`) in the high 32.
//! The start time tells a live process from a later one that reused the pid. Liveness is
//! decided from `/proc` (the kernel), never from anything else in the segment; a zombie counts
//! as dead (its memory, and so its attachment, is gone).
//!
//! This module reads `/proc` and nothing else; it does not touch the segment.

use std::sync::OnceLock;

/// An owner identity: pid and start time, as stored in an owner word. 0 means "no owner".
pub(crate) type Identity = u64;

/// The pid part of an identity.
pub(crate) fn pid_of(id: Identity) -> u32 {
    id as u32
}

/// Start time of a process in clock ticks since boot, from `/proc/PID/stat`, with its state
/// letter. `None` if the process does not exist (or `/proc` is unreadable).
fn proc_stat(pid: &str) -> Option<(char, u64)> {
    if cfg!(miri) {
        return None; // Miri isolates the program from the file system.
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything: split after the
    // last ')'. Then field 3 (state) is first, and field 22 (starttime) is at index 19.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Zombie or dead task states in `/proc/.../stat`.
fn is_dead_state(state: char) -> bool {
    matches!(state, 'Z' | 'X' | 'x')
}

/// Whether any thread of process `pid` is in a state other than zombie/dead.
fn any_live_thread(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        let tid = t.file_name();
        let path = format!("{pid}/task/{}", tid.to_string_lossy());
        proc_stat(&path).is_some_and(|(state, _)| !is_dead_state(state))
    })
}

/// This process's identity (computed once).
pub(crate) fn me() -> Identity {
    static ME: OnceLock<Identity> = OnceLock::new();
    *ME.get_or_init(|| {
        let pid = std::process::id();
        let start = proc_stat("self").map_or(0, |(_, s)| s);
        ((start & 0xffff_ffff) << 32) | u64::from(pid)
    })
}

/// What the kernel says about an identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// A process with this pid and start time runs.
    Alive,
    /// No such process: it exited, was killed (zombies included), or its pid was reused.
    Dead,
}

/// Asks the kernel whether the process behind `id` is alive. Costs one small `/proc` read.
pub(crate) fn liveness(id: Identity) -> Liveness {
    let pid = pid_of(id);
    let start = id >> 32;
    if pid == 0 || pid > i32::MAX as u32 {
        return Liveness::Dead;
    }
    match proc_stat(&pid.to_string()) {
        Some((state, s)) => {
            let reused = start != 0 && (s & 0xffff_ffff) != start;
            // The state is the main thread's: a process whose main thread exited while other
            // threads run shows 'Z' too. It is dead only when no thread is left running.
            let dead_state = is_dead_state(state) && !any_live_thread(pid);
            if dead_state || reused {
                Liveness::Dead
            } else {
                Liveness::Alive
            }
        }
        // Miri can neither read /proc nor send signals: it sees only live processes.
        None if cfg!(miri) => Liveness::Alive,
        None => {
            // No /proc entry: gone, unless /proc is hidden from us; ask kill(0) then.
            // SAFETY: signal 0 only checks for existence and permission; nothing is sent.
            let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
            if rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
                Liveness::Dead
            } else {
                Liveness::Alive
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "reads /proc, which Miri's isolation forbids")]
    fn we_are_alive_and_have_a_start_time() {
        let id = me();
        assert_eq!(pid_of(id), std::process::id());
        assert_ne!(id >> 32, 0);
        assert_eq!(liveness(id), Liveness::Alive);
        // Same pid, another start time: a reused pid, so the original is dead.
        assert_eq!(liveness(id ^ (1 << 32)), Liveness::Dead);
        assert_eq!(liveness(0), Liveness::Dead);
    }

    #[test]
    #[cfg_attr(miri, ignore = "spawns a process, which Miri cannot")]
    fn a_reaped_child_is_dead_and_a_zombie_too() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = proc_stat(&pid.to_string()).unwrap().1;
        let id = ((start & 0xffff_ffff) << 32) | u64::from(pid);
        assert_eq!(liveness(id), Liveness::Alive);
        child.kill().unwrap();
        // Not reaped yet: a zombie, which must count as dead.
        let t = std::time::Instant::now();
        while liveness(id) == Liveness::Alive {
            assert!(t.elapsed() < std::time::Duration::from_secs(5));
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        child.wait().unwrap();
        assert_eq!(liveness(id), Liveness::Dead);
    }
}
