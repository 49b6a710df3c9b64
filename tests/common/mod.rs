//! Helpers shared by the integration tests: child processes that re-run the test binary in a
//! role, segment clean-up guards, unique keys, a deterministic PRNG and the self-checking
//! message format of the stress tests.
//!
//! Not every test file uses every helper, so the items one of them leaves unused carry
//! `#[allow(dead_code)]`.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use shmpipe::{Error, Key, Segment};

mod conformance;
#[allow(dead_code)]
pub mod timing;
#[allow(unused_imports)]
pub use conformance::*;

/// Environment variable that turns a run of the test binary into a child with a role.
#[allow(dead_code)]
pub const ROLE_VAR: &str = "SHMPIPE_TEST_ROLE";

/// The role this process was started for, or `None` in the normal test run.
#[allow(dead_code)]
pub fn child_role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// A parameter the parent passed to this child through the environment.
///
/// # Panics
///
/// If the variable is missing or does not parse: the parent and the child disagree.
#[allow(dead_code)]
pub fn param<T: FromStr>(name: &str) -> T {
    let raw = std::env::var(name).unwrap_or_else(|_| panic!("child needs ${name}"));
    raw.parse()
        .unwrap_or_else(|_| panic!("${name}={raw:?} does not parse"))
}

/// A parameter the parent may have passed to this child.
#[allow(dead_code)]
pub fn param_opt<T: FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().map(|raw| {
        raw.parse()
            .unwrap_or_else(|_| panic!("${name}={raw:?} does not parse"))
    })
}

/// `IPC_SET`: makes `uid` (and the group of the same number) the owner of a segment, as root
/// may; its creator (`shm_perm.cuid`) stays who it was. How the tests play "another user's
/// ring" without a second account.
#[allow(dead_code)]
pub fn set_segment_owner(shmid: i32, uid: u32) {
    let mut ds = std::mem::MaybeUninit::<libc::shmid_ds>::zeroed();
    // SAFETY: IPC_STAT fills the buffer, which is valid for writes.
    let rc = unsafe { libc::shmctl(shmid, libc::IPC_STAT, ds.as_mut_ptr()) };
    assert_eq!(rc, 0, "IPC_STAT: {}", std::io::Error::last_os_error());
    // SAFETY: filled by IPC_STAT above (and zeroed before).
    let mut ds = unsafe { ds.assume_init() };
    ds.shm_perm.uid = uid;
    ds.shm_perm.gid = uid;
    // SAFETY: IPC_SET reads the buffer, which is valid.
    let rc = unsafe { libc::shmctl(shmid, libc::IPC_SET, &mut ds) };
    assert_eq!(rc, 0, "IPC_SET: {}", std::io::Error::last_os_error());
}

/// A unique path in the temporary directory for this process (nothing is created).
pub fn temp_path(what: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("shmpipe-test-{}-{n}-{what}", std::process::id()))
}

/// Removes a file on drop (ignoring a file that is already gone).
pub struct RemoveFile(pub PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A duplicate of `fd` without close-on-exec, for a child spawned next to inherit across
/// `exec` (its number goes to the child in a variable). Drop it once the child is spawned. Only
/// for tests that spawn one child at a time: a child spawned meanwhile inherits it too.
#[allow(dead_code)]
pub fn inheritable(fd: std::os::fd::BorrowedFd<'_>) -> std::os::fd::OwnedFd {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: dup of a descriptor the caller holds open; `dup` clears close-on-exec.
    let dup = unsafe { libc::dup(fd.as_raw_fd()) };
    assert!(dup >= 0, "dup: {}", std::io::Error::last_os_error());
    // SAFETY: a new descriptor that nothing else owns.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(dup) }
}

/// A new directory of its own in the temporary directory, removed with everything in it on
/// drop (a directory that is already gone is fine).
#[allow(dead_code)]
pub struct TempDir(pub PathBuf);

#[allow(dead_code)]
impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let dir = TempDir(temp_path(what));
        std::fs::create_dir(&dir.0).unwrap_or_else(|e| panic!("create {}: {e}", dir.0.display()));
        dir
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("warning: could not remove {}: {e}", self.0.display());
            }
        }
    }
}

/// A child process running one test of this binary in a role. Dropping the guard kills
/// (SIGKILL) and reaps the child if it is still running, so no test leaves a process behind,
/// even when it panics.
#[allow(dead_code)]
pub struct ChildProcess {
    child: std::process::Child,
    what: String,
    log: RemoveFile,
    status: Option<ExitStatus>,
}

#[allow(dead_code)]
impl ChildProcess {
    /// Re-runs this test binary as `<test> --exact --nocapture --test-threads=1` with
    /// [`ROLE_VAR`]` = role` and the extra variables `vars`. The test function `test` must check
    /// [`child_role`] first and run the role instead of its body. The child's output goes to a
    /// log file that is shown if it fails.
    pub fn spawn(test: &str, role: &str, vars: &[(&str, String)]) -> ChildProcess {
        let exe = std::env::current_exe().expect("path of the test binary");
        let mut cmd = Command::new(exe);
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE_VAR, role)
            .env("RUST_BACKTRACE", "1");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        ChildProcess::start(cmd, role, format!("child {role} ({test})"))
    }

    /// Starts `cmd` (any program) as a child guarded like [`ChildProcess::spawn`]'s: output to
    /// a log named after `name`, killed with the test.
    pub fn start(mut cmd: Command, name: &str, what: String) -> ChildProcess {
        let log = RemoveFile(temp_path(&format!("{name}.log")));
        let out = File::create(&log.0).expect("create child log");
        let err = out.try_clone().expect("dup child log");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the forked child before exec and only calls prctl,
            // which is async-signal-safe and touches no memory of ours. It makes the kernel
            // SIGKILL the child if the thread that spawned it dies, so a test process killed
            // from outside (CI timeout) does not leave a spinning child behind.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("spawn child process");
        ChildProcess {
            child,
            what,
            log,
            status: None,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log.0).unwrap_or_else(|e| format!("<no log: {e}>"))
    }

    /// Non-blocking: `Some(status)` once the child has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("waitpid on child");
        }
        self.status
    }

    /// Panics if the child has exited before it should have (any exit, even 0, while the
    /// parent still expects it to work). Call it while spinning on the child.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_status() {
            panic!(
                "{} exited early with {status}; its output:\n{}",
                self.what,
                self.output()
            );
        }
    }

    /// Waits (polling, never hanging) up to `timeout` for the child to exit, and fails the
    /// test unless it exited with 0 after running exactly one test.
    /// Waits (bounded) for the child to exit, whatever its status, and returns the status.
    pub fn wait_status(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}; its output:\n{}",
                self.what,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn wait_success(mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        self.wait_until(deadline);
    }

    fn wait_until(&mut self, deadline: Instant) {
        loop {
            if let Some(status) = self.try_status() {
                let out = self.output();
                assert!(
                    status.success(),
                    "{} failed with {status}; its output:\n{out}",
                    self.what
                );
                // A misspelt test name would run no test and still exit 0.
                assert!(
                    out.contains("1 passed"),
                    "{} exited 0 but did not run its test; its output:\n{out}",
                    self.what
                );
                return;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "{} did not finish in time and was killed; its output:\n{}",
                    self.what,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Non-blocking: whether the child has stopped (`SIGSTOP`, e.g. at a `test-hooks` crash
    /// point) since the last call. Each stop is reported once. It asks `waitid` for stops only
    /// (`WSTOPPED` without `WEXITED`), so it never reaps the child: its exit status stays for
    /// [`ChildProcess::try_status`] and the guard.
    pub fn poll_stopped(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        // SAFETY: siginfo_t is a plain C struct for which all-zero bytes are a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a writable siginfo_t that outlives the call. Without WEXITED the
        // kernel reports (and consumes) only a stop, never an exit, so nothing is reaped.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                self.child.id() as libc::id_t,
                &raw mut info,
                libc::WSTOPPED | libc::WNOHANG,
            )
        };
        assert_eq!(
            rc,
            0,
            "waitid on {}: {}",
            self.what,
            std::io::Error::last_os_error()
        );
        // With WNOHANG and nothing to report the kernel leaves si_pid at the 0 written above.
        // SAFETY: reads the pid field of the struct waitid filled (or that we zeroed).
        let pid = unsafe { info.si_pid() };
        pid != 0 && info.si_code == libc::CLD_STOPPED
    }

    /// Waits (polling, never hanging) until the child stops, and fails the test with its
    /// output if it exits first or does not stop within `timeout`.
    pub fn wait_stopped(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.poll_stopped() {
            self.assert_running();
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "{} did not stop within {timeout:?} and was killed; its output:\n{}",
                    self.what,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Sends `SIGKILL` to the running (or stopped) child and reaps it. Returns the instant just
    /// before the signal was sent. Fails the test, with the child's output, if the child had
    /// already exited or died of anything but this `SIGKILL`.
    pub fn kill_and_reap(&mut self) -> Instant {
        self.assert_running();
        let at = Instant::now();
        self.child.kill().expect("SIGKILL the child");
        let status = self.child.wait().expect("reap the child");
        self.status = Some(status);
        self.assert_killed(status);
        at
    }

    /// Panics unless `status` says the child died of `SIGKILL`.
    fn assert_killed(&self, status: ExitStatus) {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{} ended with {status}, not by SIGKILL; its output:\n{}",
            self.what,
            self.output()
        );
    }

    fn kill(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

/// Waits for several children at once, failing as soon as any of them fails (the others are
/// then killed by their guards), so that one dead peer cannot leave the test waiting.
#[allow(dead_code)]
pub fn wait_all_success(children: Vec<ChildProcess>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut children = children;
    loop {
        for c in &mut children {
            if let Some(status) = c.try_status() {
                if !status.success() {
                    c.wait_until(deadline); // panics with the log
                }
            }
        }
        if children.iter_mut().all(|c| c.try_status().is_some()) {
            for mut c in children {
                c.wait_until(deadline);
            }
            return;
        }
        if Instant::now() >= deadline {
            for c in &mut children {
                if c.try_status().is_none() {
                    c.wait_until(deadline); // kills it and panics with its log
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a failed removal means the segment is already gone.
fn already_gone(e: &Error) -> bool {
    matches!(e, Error::NotFound { .. })
}

/// What a [`RemoveOnDrop`] removes.
#[derive(Clone, Copy, Debug)]
enum Target {
    Id(i32),
    Key(Key),
}

/// Removes a segment (`IPC_RMID`) when dropped, so every test removes what it creates even
/// when it panics. A segment that is already gone is fine.
#[derive(Debug)]
pub struct RemoveOnDrop(Target);

#[allow(dead_code)]
impl RemoveOnDrop {
    /// Removes the segment with this id.
    pub fn id(shmid: i32) -> RemoveOnDrop {
        RemoveOnDrop(Target::Id(shmid))
    }

    /// Removes whatever segment holds `key` at drop time (a child process may create it).
    /// Create this guard before the child guards so it is dropped after them: the children
    /// are dead by then and cannot create the segment again.
    pub fn key(key: Key) -> RemoveOnDrop {
        RemoveOnDrop(Target::Key(key))
    }

    /// Removes the segment of `ring`.
    pub fn ring(ring: &shmpipe::Ring) -> RemoveOnDrop {
        RemoveOnDrop::id(ring.shmid().expect("ring lives in a SysV segment"))
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let result = match self.0 {
            Target::Id(id) => shmpipe::segment::remove_id(id),
            Target::Key(key) => Segment::open(key).and_then(|seg| seg.remove()),
        };
        match result {
            Ok(()) => {}
            Err(e) if already_gone(&e) => {}
            Err(e) => {
                // Never panic in drop (it may run during a panic); say it loudly instead.
                eprintln!("warning: could not remove test segment {:?}: {e}", self.0);
            }
        }
    }
}

/// A key for this test alone: `0x40000000 | pid << 8 | n`, with `n` counting per process, so
/// tests running in parallel threads (and test binaries running in parallel) never share one.
/// A key someone left a segment at is skipped, not reused.
#[allow(dead_code)]
pub fn unique_key() -> Key {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id() & 0x3f_ffff; // pid_max is at most 2^22
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < 256, "a test binary may take at most 256 keys");
        let key = Key::Number((0x4000_0000 | (pid << 8) | n) as i32);
        match Segment::open(key) {
            Err(Error::NotFound { .. }) => return key,
            _ => eprintln!("note: skipping key {key}: a segment is already there"),
        }
    }
}

/// SplitMix64: a tiny, fast, deterministic PRNG.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

#[allow(dead_code)]
impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }

    /// Uniform in `0..n` (`n > 0`; the tiny modulo bias does not matter here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo) as u64 + 1) as usize
    }
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 finaliser: a good 64-bit mixing function.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Bytes at the start of a stress message long enough to carry them: the sequence number
/// (u64 LE) and the checksum (u64 LE) of the rest.
#[allow(dead_code)]
pub const MSG_HEADER: usize = 16;

/// The length of message `seq` of a stream seeded with `seed`, in `0..=max`. A pure function
/// of its arguments, so the consumer knows what to expect without any shared state. A quarter
/// of the messages are short (under the header), a quarter near the maximum, the rest uniform.
#[allow(dead_code)]
pub fn msg_len(seed: u64, seq: u64, max: usize) -> usize {
    let h = mix64(seed ^ seq.wrapping_mul(GOLDEN) ^ 0x6c65_6e67_7468);
    let r = (h >> 8) as usize;
    match h & 7 {
        0 | 1 => r % (MSG_HEADER.min(max + 1)),
        2 | 3 => max - r % (8.min(max + 1)),
        _ => r % (max + 1),
    }
}

/// Fills `out` with the bytes derived from `seq` (the part after the header).
fn fill_pattern(seed: u64, seq: u64, out: &mut [u8]) {
    let mut state = mix64(seed ^ seq.wrapping_mul(0xd6e8_feb8_6659_fd93));
    let mut chunks = out.chunks_exact_mut(8);
    for c in &mut chunks {
        state = state.wrapping_add(GOLDEN);
        c.copy_from_slice(&mix64(state).to_le_bytes());
    }
    let rest = chunks.into_remainder();
    state = state.wrapping_add(GOLDEN);
    let last = mix64(state).to_le_bytes();
    rest.copy_from_slice(&last[..rest.len()]);
}

/// A 64-bit FNV-1a-style checksum, eight bytes per step, with the length mixed in.
#[allow(dead_code)]
pub fn checksum(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = 0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = (h ^ u64::from_le_bytes(c.try_into().expect("8 bytes"))).wrapping_mul(PRIME);
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    mix64(h)
}

/// Writes message `seq` into `out`, whose length must be [`msg_len`]`(seed, seq, max)`.
/// A message of at least [`MSG_HEADER`] bytes is `seq`, `checksum(rest)`, `rest`; a shorter
/// one is just the first bytes of the pattern of `seq`.
#[allow(dead_code)]
pub fn fill_msg(seed: u64, seq: u64, out: &mut [u8]) {
    if out.len() < MSG_HEADER {
        fill_pattern(seed, seq, out);
        return;
    }
    let (head, rest) = out.split_at_mut(MSG_HEADER);
    fill_pattern(seed, seq, rest);
    head[..8].copy_from_slice(&seq.to_le_bytes());
    head[8..].copy_from_slice(&checksum(rest).to_le_bytes());
}

/// The whole of message `seq`, for tests that want a `Vec`.
#[allow(dead_code)]
pub fn make_msg(seed: u64, seq: u64, max: usize) -> Vec<u8> {
    let mut v = vec![0u8; msg_len(seed, seq, max)];
    fill_msg(seed, seq, &mut v);
    v
}

/// Checks that `got` is exactly message `seq`: its length, then (if long enough) its sequence
/// number and checksum, then every byte. `scratch` is reused to avoid allocating. The error
/// says what is wrong: a wrong length or sequence number means a lost, duplicated or reordered
/// message; a bad checksum means corrupted bytes.
#[allow(dead_code)]
pub fn check_msg(
    seed: u64,
    seq: u64,
    max: usize,
    got: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<(), String> {
    let want = msg_len(seed, seq, max);
    if got.len() != want {
        let found = (got.len() >= MSG_HEADER)
            .then(|| format!(", its sequence field says {}", read_u64(got, 0)));
        return Err(format!(
            "message {seq}: length {} but expected {want}{}",
            got.len(),
            found.unwrap_or_default()
        ));
    }
    if got.len() >= MSG_HEADER {
        let found = read_u64(got, 0);
        if found != seq {
            return Err(format!("message {seq}: sequence field says {found}"));
        }
        let sum = checksum(&got[MSG_HEADER..]);
        if sum != read_u64(got, 8) {
            return Err(format!(
                "message {seq} ({want} bytes): checksum {sum:#x} but the message says {:#x}",
                read_u64(got, 8)
            ));
        }
    }
    scratch.clear();
    scratch.resize(want, 0);
    fill_msg(seed, seq, scratch);
    if let Some(i) = got.iter().zip(scratch.iter()).position(|(a, b)| a != b) {
        return Err(format!(
            "message {seq} ({want} bytes): byte {i} is {:#04x}, expected {:#04x}",
            got[i], scratch[i]
        ));
    }
    Ok(())
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

// ---------------------------------------------------------------------------------------------
// Cross-process clocks, signals and results (added for tests/blocking.rs)
// ---------------------------------------------------------------------------------------------

/// `CLOCK_MONOTONIC` in nanoseconds. Unlike an `Instant`, its value means the same in every
/// process of the machine, so a timestamp taken in one process can be compared in another.
#[allow(dead_code)]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sends signal `sig` to process `pid`, failing the test if the kernel refuses.
#[allow(dead_code)]
pub fn signal_process(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; the pid is one of our own children.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// The state letter of process `pid` from `/proc/PID/stat` (`R`, `S`, `T` for stopped, `Z`...),
/// or `None` if there is no such process.
#[allow(dead_code)]
pub fn process_state(pid: u32) -> Option<char> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    text[text.rfind(')')? + 1..].trim_start().chars().next()
}

/// Prints `RESULT name=value` on stdout, for the parent to read back from the child's output
/// with [`child_result`].
#[allow(dead_code)]
pub fn print_result(name: &str, value: impl std::fmt::Display) {
    use std::io::Write;
    println!("RESULT {name}={value}");
    let _ = std::io::stdout().flush();
}

/// The value a child printed with [`print_result`] under `name` (the last one, if several),
/// or `None` if it printed none. The line may start with other output (libtest prints
/// `test name ... ` without a line break before the test's own output).
#[allow(dead_code)]
pub fn find_result(output: &str, name: &str) -> Option<String> {
    let prefix = format!("RESULT {name}=");
    output
        .lines()
        .rev()
        .find_map(|l| l.find(&prefix).map(|i| &l[i + prefix.len()..]))
        .map(|v| v.trim().to_string())
}

/// [`find_result`], parsed; fails the test (showing the output) if it is missing or malformed.
#[allow(dead_code)]
pub fn child_result<T: FromStr>(output: &str, name: &str) -> T {
    let raw = find_result(output, name)
        .unwrap_or_else(|| panic!("the child printed no RESULT {name}; its output:\n{output}"));
    raw.parse()
        .unwrap_or_else(|_| panic!("RESULT {name}={raw:?} does not parse; output:\n{output}"))
}

#[allow(dead_code)]
impl ChildProcess {
    /// [`ChildProcess::wait_success`], returning the child's output.
    pub fn wait_success_output(mut self, timeout: Duration) -> String {
        self.wait_until(Instant::now() + timeout);
        self.output()
    }
}

/// [`wait_all_success`], returning each child's output, in the order given.
#[allow(dead_code)]
pub fn wait_all_outputs(mut children: Vec<ChildProcess>, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut running = false;
        for c in &mut children {
            match c.try_status() {
                Some(status) if !status.success() => c.wait_until(deadline), // panics with the log
                Some(_) => {}
                None => running = true,
            }
        }
        if !running {
            break;
        }
        if Instant::now() >= deadline {
            for c in &mut children {
                if c.try_status().is_none() {
                    c.wait_until(deadline); // kills it and panics with its log
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    children
        .into_iter()
        .map(|c| c.wait_success_output(Duration::ZERO))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Raw attachment: a second mapping of a ring's memory (added for tests/hostile.rs)
// ---------------------------------------------------------------------------------------------

/// A segment attached with a bare `shmat` by shmid, or a memfd or file mapped with a bare
/// `mmap` (`MAP_SHARED`), bypassing shmpipe entirely, as a foreign or hostile process would
/// map it. Its bytes are reached as atomics of the width asked for (shmpipe itself only ever
/// uses atomics on the shared bytes). Detached (`shmdt`) or unmapped (`munmap`) on drop.
#[allow(dead_code)]
pub struct RawAttach {
    base: *mut u8,
    len: usize,
    mmapped: bool,
}

#[allow(dead_code)]
impl RawAttach {
    /// Attaches segment `shmid` read-write; its size comes from `IPC_STAT`.
    ///
    /// # Panics
    ///
    /// If the kernel refuses either call.
    pub fn new(shmid: i32) -> RawAttach {
        // SAFETY: shmid_ds is a plain C struct for which all-zero bytes are a valid value.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: `ds` is a writable shmid_ds that outlives the call; IPC_STAT only fills it.
        let rc = unsafe { libc::shmctl(shmid, libc::IPC_STAT, &raw mut ds) };
        assert_eq!(
            rc,
            0,
            "shmctl({shmid}, IPC_STAT): {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a null address lets the kernel choose where to map; no existing mapping of
        // ours is affected. The (void*)-1 error value is checked below.
        let addr = unsafe { libc::shmat(shmid, std::ptr::null(), 0) };
        assert!(
            addr as isize != -1,
            "shmat({shmid}): {}",
            std::io::Error::last_os_error()
        );
        RawAttach {
            base: addr.cast(),
            len: ds.shm_segsz,
            mmapped: false,
        }
    }

    /// Maps all of the memfd or file `fd` read-write and shared; its size comes from `fstat`.
    ///
    /// # Panics
    ///
    /// If the kernel refuses either call, or the file is empty.
    pub fn map_fd(fd: std::os::fd::BorrowedFd<'_>) -> RawAttach {
        use std::os::fd::AsRawFd;
        // SAFETY: stat is a plain C struct for which all-zero bytes are a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a writable stat that outlives the call; fstat only fills it.
        let rc = unsafe { libc::fstat(fd.as_raw_fd(), &raw mut st) };
        assert_eq!(rc, 0, "fstat: {}", std::io::Error::last_os_error());
        let len = usize::try_from(st.st_size).expect("a file size");
        assert!(len > 0, "an empty file cannot be mapped");
        // SAFETY: a fresh shared mapping of a descriptor we borrow, where the kernel chooses;
        // no existing mapping of ours is affected. MAP_FAILED is checked below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert!(
            addr != libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        RawAttach {
            base: addr.cast(),
            len,
            mmapped: true,
        }
    }

    /// The segment's size (`shm_segsz`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// The byte at `off`.
    pub fn u8(&self, off: usize) -> &std::sync::atomic::AtomicU8 {
        assert!(off < self.len, "offset {off} out of range");
        // SAFETY: the byte lies inside the attachment, which stays mapped while `self` (and so
        // the returned borrow) lives. Other processes access these bytes only atomically too.
        unsafe { std::sync::atomic::AtomicU8::from_ptr(self.base.add(off)) }
    }

    /// The 32-bit word at `off` (a multiple of 4).
    pub fn u32(&self, off: usize) -> &AtomicU32 {
        assert!(
            off % 4 == 0 && off + 4 <= self.len,
            "offset {off} out of range"
        );
        // SAFETY: as in `u8`; the attachment is page-aligned, so `off % 4 == 0` aligns it.
        unsafe { AtomicU32::from_ptr(self.base.add(off).cast()) }
    }

    /// The 64-bit word at `off` (a multiple of 8).
    pub fn u64(&self, off: usize) -> &std::sync::atomic::AtomicU64 {
        assert!(
            off % 8 == 0 && off + 8 <= self.len,
            "offset {off} out of range"
        );
        // SAFETY: as in `u8`; the attachment is page-aligned, so `off % 8 == 0` aligns it.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(self.base.add(off).cast()) }
    }

    /// A copy of the bytes `range`.
    pub fn bytes(&self, range: std::ops::Range<usize>) -> Vec<u8> {
        range.map(|i| self.u8(i).load(Ordering::Relaxed)).collect()
    }

    /// Overwrites the bytes from `off` with `data`.
    pub fn write_bytes(&self, off: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            self.u8(off + i).store(*b, Ordering::Relaxed);
        }
    }
}

impl Drop for RawAttach {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` are the attachment shmat or mmap returned, detached or
        // unmapped only here; every reference into it borrowed `self` and is gone.
        unsafe {
            if self.mmapped {
                libc::munmap(self.base.cast(), self.len);
            } else {
                libc::shmdt(self.base.cast());
            }
        }
    }
}

/// A 16-byte message: a sequence number and the CLOCK_MONOTONIC time it was sent (see
/// [`monotonic_ns`]), for latency measurements across processes.
#[allow(dead_code)]
pub fn stamp(seq: u64) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m[8..].copy_from_slice(&monotonic_ns().to_le_bytes());
    m
}

/// The sequence number of a [`stamp`]ed message and how long ago it was sent.
#[allow(dead_code)]
pub fn unstamp(m: &[u8]) -> (u64, Duration) {
    assert_eq!(m.len(), 16, "a stamped message is 16 bytes");
    let seq = u64::from_le_bytes(m[..8].try_into().unwrap());
    let sent = u64::from_le_bytes(m[8..].try_into().unwrap());
    (
        seq,
        Duration::from_nanos(monotonic_ns().saturating_sub(sent)),
    )
}

/// Sends `count` messages of the checked stream `seed` (see [`msg_len`], [`fill_msg`]) with
/// blocking sends, then closes the producer.
#[allow(dead_code)]
pub fn send_stream(ring: &shmpipe::Ring, seed: u64, count: u64) {
    let mut tx = ring.producer().expect("claim the producer");
    let max = tx.max_message();
    let mut buf = vec![0u8; max];
    for seq in 0..count {
        let len = msg_len(seed, seq, max);
        fill_msg(seed, seq, &mut buf[..len]);
        tx.send(&buf[..len]).expect("send");
    }
}

/// Receives and checks `count` messages of the stream `seed` with blocking receives, then
/// expects the end of the stream.
#[allow(dead_code)]
pub fn recv_stream(ring: &shmpipe::Ring, seed: u64, count: u64) {
    let mut rx = ring.consumer().expect("claim the consumer");
    let max = rx.max_message();
    let mut buf = vec![0u8; max];
    let mut scratch = Vec::new();
    for seq in 0..count {
        let n = rx.recv(&mut buf).expect("recv");
        check_msg(seed, seq, max, &buf[..n], &mut scratch).unwrap();
    }
    assert_eq!(rx.recv(&mut buf), Err(shmpipe::RecvError::Disconnected));
}
