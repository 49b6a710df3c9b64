//! What the measuring examples (`demo`, `wake`, `async`, `backings`) share: the checked 64-byte
//! message, CPU pinning, a guard that kills and reaps the child process, and output helpers.

use std::io::Write;
use std::process::{Child, ExitStatus};
use std::time::Duration;

/// The examples' error type.
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Bytes per message.
pub const MSG: usize = 64;

/// Message `seq`: the sequence number at the front, its complement at the back (so a torn or
/// misplaced message is caught), filler in between.
pub fn message(seq: u64) -> [u8; MSG] {
    let mut m = [seq as u8; MSG];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m[MSG - 8..].copy_from_slice(&(!seq).to_le_bytes());
    m
}

/// Whether `m` is message `seq`.
pub fn is_message(m: &[u8], seq: u64) -> bool {
    m.len() == MSG
        && m[..8] == seq.to_le_bytes()
        && m[MSG - 8..] == (!seq).to_le_bytes()
        && m[8..MSG - 8].iter().all(|&b| b == seq as u8)
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is a plain bit array, for which all zeroes is the valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a writable cpu_set_t and we pass its exact size.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, so CPU_ISSET reads inside `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins the calling thread to `cpu`. (A `String` error, so threads can return it.)
pub fn pin_to(cpu: usize) -> Result<(), String> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(format!("no CPU {cpu}"));
    }
    // SAFETY: as in `allowed_cpus`, all zeroes is a valid cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so CPU_SET writes inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is an initialised cpu_set_t and we pass its exact size.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(format!(
            "sched_setaffinity(CPU {cpu}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The child process: killed and reaped on drop unless it was waited for.
pub struct ChildGuard {
    /// The child.
    pub child: Child,
    /// Whether it has been waited for.
    pub reaped: bool,
}

impl ChildGuard {
    /// Wraps a spawned child.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard {
            child,
            reaped: false,
        }
    }

    /// Returns an error if the child has exited (it should not before we wait for it).
    pub fn check_alive(&mut self) -> Res<()> {
        if let Some(status) = self.child.try_wait()? {
            self.reaped = true;
            return Err(format!("the child exited early ({status})").into());
        }
        Ok(())
    }

    /// Waits for the child to exit by itself.
    pub fn wait(&mut self) -> Res<ExitStatus> {
        let status = self.child.wait()?;
        self.reaped = true;
        Ok(status)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if !self.reaped {
            // Both can only fail if the child is already gone.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Prints without a newline, at once.
pub fn print_flush(s: &str) {
    print!("{s}");
    let _ = std::io::stdout().flush();
}

/// A duration in ns, µs or ms, whichever reads best.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.2} µs", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}
