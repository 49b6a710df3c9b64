//! The `shmpipe` command, driven as a user would: the real binary (`CARGO_BIN_EXE_shmpipe`) in
//! real processes and shell pipelines.
//!
//! - a 1 GiB stream is byte-exact (sha256) with either side started first;
//! - `send`/`recv` work inside shell pipelines, reading standard input and writing standard
//!   output;
//! - `--lines` makes each line one message, both ways;
//! - `stat --json` parses and agrees with `ipcs -m`;
//! - `gc` removes an orphan and leaves a foreign segment alone; `rm` refuses a foreign one;
//! - errors are one line naming the key, with exit status 1; usage errors exit 2;
//! - killing either side ends the other with an error, not a hang; interrupting a lone side
//!   removes its ring;
//! - `create`/`rm`, private rings by shmid, `--ftok` keys and `--persist`.
//!
//! Every test removes the segments it creates (guards remove them even when a test panics) and
//! checks that the segments its transfers used are gone afterwards.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

// The library's test helpers (one of them is used here): `tests/common` is a symlink to the
// library's, so the published package carries them.
mod common;
use common::set_segment_owner;
use shmpipe::gc::{self, RingInfo};
use shmpipe::{Key, RecvError, Ring, RingConfig, Segment};

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_shmpipe");

/// No single command may take longer, whatever goes wrong.
const TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Keys, segments and clean-up
// ---------------------------------------------------------------------------------------------

/// A key for this test alone: `0x20000000 | pid << 6 | n` (bit 30 clear, so never one of
/// `tests/common`'s keys). A key someone left a segment at is skipped.
fn unique_key() -> Key {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id() & 0x3f_ffff;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < 64, "this test binary may take at most 64 keys");
        let key = Key::Number((0x2000_0000 | (pid << 6) | n) as i32);
        if shmid_of_key(key).is_none() {
            return key;
        }
    }
}

/// The segments the kernel lists, as (key, shmid), from `/proc/sysvipc/shm` (no attach).
fn proc_segments() -> Vec<(i32, i32)> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").expect("read /proc/sysvipc/shm");
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect()
}

/// The shmid of the segment at `key`, if there is one.
fn shmid_of_key(key: Key) -> Option<i32> {
    proc_segments()
        .into_iter()
        .find(|&(k, _)| k == key.raw())
        .map(|(_, id)| id)
}

/// Whether a segment with this id exists.
fn exists(shmid: i32) -> bool {
    proc_segments().iter().any(|&(_, id)| id == shmid)
}

/// Asserts that the segments a test used are gone (the kernel frees a marked segment when
/// the last process detaches, which is when the commands exit).
fn assert_gone(key: Key, shmids: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left_key = shmid_of_key(key);
        let left: Vec<i32> = shmids.iter().copied().filter(|&id| exists(id)).collect();
        if left_key.is_none() && left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "segments left behind: key {key} -> {left_key:?}, shmids {left:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes the segment at a key, or with an id, when dropped (also when the test panics).
enum Cleanup {
    Key(Key),
    Id(i32),
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let id = match *self {
            Cleanup::Key(k) => shmid_of_key(k),
            Cleanup::Id(id) => Some(id),
        };
        if let Some(id) = id {
            let _ = shmpipe::segment::remove_id(id);
        }
    }
}

/// Removes a file when dropped.
struct RemoveFile(PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A path for a scratch file of this process, in tmpfs if there is one.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from("/dev/shm");
    let dir = if dir.is_dir() {
        dir
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("shmpipe-cli-test-{}-{name}", std::process::id()))
}

/// What `gc::inspect` says about the ring at a key or id, if it is there.
fn inspect(key: Option<Key>, id: Option<i32>) -> Option<RingInfo> {
    let id = id.or_else(|| shmid_of_key(key?))?;
    gc::inspect(id).ok()
}

/// Waits until the ring at `key` (or `id`) has a live holder of the role (`producer` or not),
/// and returns its shmid.
fn wait_for_holder(
    key: Option<Key>,
    id: Option<i32>,
    producer: bool,
    procs: &mut [&mut Proc],
) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(info) = inspect(key, id) {
            let holder = if producer {
                info.producer
            } else {
                info.consumer
            };
            if holder.is_some_and(|h| h.alive()) {
                return info.stat.shmid;
            }
        }
        for p in procs.iter_mut() {
            p.assert_running();
        }
        assert!(
            Instant::now() < deadline,
            "no {} appeared at {key:?}/{id:?}",
            if producer { "producer" } else { "consumer" }
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A command of the binary under test.
fn shmpipe(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    die_with_parent(&mut cmd);
    cmd
}

/// Makes the kernel SIGKILL the child if the test thread that started it dies, so a test
/// killed from outside leaves no process behind.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A running process, killed and reaped when dropped if it is still running.
struct Proc {
    child: Child,
    what: String,
    status: Option<ExitStatus>,
}

impl Proc {
    fn spawn(cmd: &mut Command, what: &str) -> Proc {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        Proc {
            child,
            what: what.to_string(),
            status: None,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Panics if the process has exited.
    fn assert_running(&mut self) {
        if let Some(st) = self.try_status() {
            let err = self.stderr();
            panic!("{} exited early with {st}: {err}", self.what);
        }
    }

    /// Waits (bounded) for the exit status.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                return st;
            }
            if Instant::now() >= deadline {
                self.signal(libc::SIGKILL);
                let _ = self.child.wait();
                panic!("{} did not exit within {timeout:?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits and returns what it wrote on standard error (if piped).
    fn wait_stderr(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let st = self.wait(timeout);
        (st, self.stderr())
    }

    /// What the process wrote on standard error (if piped), once it has exited.
    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Runs the binary with `input` on standard input and returns its output (bounded in time).
fn run(args: &[&str], input: &[u8]) -> Output {
    let mut cmd = shmpipe(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run_cmd(cmd, input, &format!("shmpipe {}", args.join(" ")))
}

/// Runs a command with `input` on standard input; its output, bounded in time.
fn run_cmd(mut cmd: Command, input: &[u8], what: &str) -> Output {
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let pid = child.id();
    let mut stdin = child.stdin.take();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(&input);
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.expect("wait for output"),
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{what} did not finish within {TIMEOUT:?}");
        }
    };
    writer.join().expect("stdin writer");
    out
}

/// Asserts success and returns standard output as text.
fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

/// Asserts exit status `code` with exactly one line on standard error, and returns that line.
fn fails(out: &Output, code: i32, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit status {code}, got {}; stderr: {err}",
        out.status
    );
    if code == 1 {
        assert_eq!(err.lines().count(), 1, "{what}: not one line: {err:?}");
        assert!(err.starts_with("shmpipe: "), "{what}: {err:?}");
    }
    err
}

// ---------------------------------------------------------------------------------------------
// Hashes
// ---------------------------------------------------------------------------------------------

/// A SHA-256 command reading standard input: `openssl dgst -sha256 -r` where there is one
/// (several times faster), else coreutils `sha256sum`. Both print the digest first.
fn sha256_cmd() -> Command {
    static OPENSSL: OnceLock<bool> = OnceLock::new();
    let openssl = *OPENSSL.get_or_init(|| {
        Command::new("openssl")
            .args(["dgst", "-sha256", "-r"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    let mut cmd = if openssl {
        let mut c = Command::new("openssl");
        c.args(["dgst", "-sha256", "-r"]);
        c
    } else {
        Command::new("sha256sum")
    };
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// The digest a hash command printed.
fn digest(out: Output) -> String {
    let text = ok(&out, "sha256");
    let d = text.split_whitespace().next().unwrap_or("").to_string();
    assert_eq!(d.len(), 64, "not a sha256 digest: {text:?}");
    d
}

/// SHA-256 of a file.
fn sha256_file(path: &std::path::Path) -> String {
    let mut cmd = sha256_cmd();
    cmd.stdin(std::fs::File::open(path).expect("open file to hash"));
    digest(cmd.output().expect("run sha256"))
}

/// A hash process reading the standard output of `p`.
fn hash_stdout_of(p: &mut Proc) -> Proc {
    let out = p.child.stdout.take().expect("piped stdout");
    let mut cmd = sha256_cmd();
    cmd.stdin(Stdio::from(out));
    Proc::spawn(&mut cmd, "sha256 of the output")
}

/// The digest printed by a hash process.
fn hash_result(mut h: Proc) -> String {
    h.wait(TIMEOUT);
    let mut s = String::new();
    h.child
        .stdout
        .take()
        .expect("hash stdout")
        .read_to_string(&mut s)
        .expect("read digest");
    let d = s.split_whitespace().next().unwrap_or("").to_string();
    assert_eq!(d.len(), 64, "not a sha256 digest: {s:?}");
    d
}

/// SplitMix64, for a deterministic pattern that differs at every offset.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Writes `len` bytes of the pattern to a new file.
fn write_pattern(path: &std::path::Path, len: u64) {
    let mut f = std::fs::File::create(path).expect("create pattern file");
    let block = 8 << 20;
    let mut buf = vec![0u8; block];
    let mut word = 0u64;
    let mut left = len;
    while left > 0 {
        for chunk in buf.chunks_exact_mut(8) {
            chunk.copy_from_slice(&mix(word).to_le_bytes());
            word += 1;
        }
        let n = left.min(block as u64) as usize;
        f.write_all(&buf[..n]).expect("write pattern");
        left -= n as u64;
    }
}

// ---------------------------------------------------------------------------------------------
// `stat --json` is read with the strict JSON reader of `examples/plot_bench` (also used by
// tests/bench_cli.rs), plus accessors that fail the test naming what is missing.
// ---------------------------------------------------------------------------------------------

#[path = "../examples/plot_bench/json.rs"]
mod json;
use json::Json;

/// Typed access to an object's members; a missing or mistyped member fails the test.
trait Fields {
    fn field(&self, key: &str) -> &Json;
    fn num(&self, key: &str) -> f64;
    fn string(&self, key: &str) -> &str;
    fn boolean(&self, key: &str) -> bool;
}

impl Fields for Json {
    fn field(&self, key: &str) -> &Json {
        self.get(key)
            .unwrap_or_else(|| panic!("no field {key:?} in {self:?}"))
    }

    fn num(&self, key: &str) -> f64 {
        let v = self.field(key);
        v.as_f64()
            .unwrap_or_else(|| panic!("{key} is not a number: {v:?}"))
    }

    fn string(&self, key: &str) -> &str {
        let v = self.field(key);
        v.as_str()
            .unwrap_or_else(|| panic!("{key} is not a string: {v:?}"))
    }

    fn boolean(&self, key: &str) -> bool {
        match self.field(key) {
            Json::Bool(b) => *b,
            other => panic!("{key} is not a boolean: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// A 1 GiB stream arrives byte for byte (equal SHA-256), first with the sender started first
/// (`send FILE`), then with the receiver started first (`send < FILE`), each time through a
/// ring created on demand and gone afterwards. Nothing extra is printed: stderr is not a
/// terminal, so there is no progress bar.
#[test]
#[cfg_attr(miri, ignore)]
fn a_gibibyte_arrives_byte_exact_with_either_side_first() {
    const LEN: u64 = 1 << 30;
    let start = Instant::now();
    let file = RemoveFile(scratch("gib.bin"));
    write_pattern(&file.0, LEN);
    let expected = sha256_file(&file.0);
    let path = file.0.to_str().expect("utf-8 path").to_string();

    // The sender first: it creates the ring, fills it and waits for the receiver.
    let key = unique_key();
    let _clean = Cleanup::Key(key);
    let k = key.to_string();
    let mut send = Proc::spawn(
        shmpipe(&["send", "--key", &k, &path]).stderr(Stdio::piped()),
        "send (first)",
    );
    let shmid = wait_for_holder(Some(key), None, true, &mut [&mut send]);
    let mut recv = Proc::spawn(
        shmpipe(&["recv", "--key", &k])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        "recv (second)",
    );
    let hash = hash_stdout_of(&mut recv);
    let (st, err) = send.wait_stderr(TIMEOUT);
    assert!(st.success() && err.is_empty(), "send: {st}: {err}");
    let (st, err) = recv.wait_stderr(TIMEOUT);
    assert!(st.success() && err.is_empty(), "recv: {st}: {err}");
    assert_eq!(
        hash_result(hash),
        expected,
        "sender first: the data differs"
    );
    assert_gone(key, &[shmid]);

    // The receiver first: it creates the ring and waits; the sender reads standard input.
    let key = unique_key();
    let _clean2 = Cleanup::Key(key);
    let k = key.to_string();
    let mut recv = Proc::spawn(
        shmpipe(&["recv", "--key", &k])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        "recv (first)",
    );
    let hash = hash_stdout_of(&mut recv);
    let shmid = wait_for_holder(Some(key), None, false, &mut [&mut recv]);
    let input = std::fs::File::open(&file.0).expect("open pattern");
    let mut send = Proc::spawn(
        shmpipe(&["send", "--key", &k])
            .stdin(input)
            .stderr(Stdio::piped()),
        "send (second)",
    );
    let (st, err) = send.wait_stderr(TIMEOUT);
    assert!(st.success() && err.is_empty(), "send: {st}: {err}");
    let (st, err) = recv.wait_stderr(TIMEOUT);
    assert!(st.success() && err.is_empty(), "recv: {st}: {err}");
    assert_eq!(
        hash_result(hash),
        expected,
        "receiver first: the data differs"
    );
    assert_gone(key, &[shmid]);
    eprintln!("1 GiB twice, hashes included: {:?}", start.elapsed());
}

/// `send` reads standard input and `recv` writes standard output inside ordinary shell
/// pipelines, started in either order, and both exit 0.
#[test]
#[cfg_attr(miri, ignore)]
fn send_and_recv_work_inside_shell_pipelines() {
    let key = unique_key();
    let _clean = Cleanup::Key(key);
    let script = r#"
        set -e
        seq 1 200000 | "$BIN" send --key "$KEY" &
        sender=$!
        "$BIN" recv --key "$KEY" | cksum
        wait "$sender"
        seq 1 200000 | cksum
        ("$BIN" recv --key "$KEY" | tr a-z A-Z > "$OUT") &
        receiver=$!
        sleep 0.2
        printf 'hello\nworld\n' | "$BIN" send --key "$KEY"
        wait "$receiver"
        cat "$OUT"
        head -c 3000000 /dev/zero | "$BIN" send --key "$KEY" &
        sender=$!
        "$BIN" recv --key "$KEY" | wc -c
        wait "$sender"
    "#;
    let out_file = RemoveFile(scratch("pipeline.out"));
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script])
        .env("BIN", BIN)
        .env("KEY", key.to_string())
        .env("OUT", &out_file.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let out = run_cmd(cmd, b"", "shell pipeline");
    let text = ok(&out, "shell pipeline");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(lines[0], lines[1], "seq through shmpipe differs");
    assert_eq!(lines[2..], ["HELLO", "WORLD", "3000000"]);
    assert_gone(key, &[]);
}

/// `send --lines` sends each line as one message (an empty line is an empty message, a last
/// line without a newline is a message too), read here with the library; `recv --lines`
/// writes each message of a library producer as one line.
#[test]
#[cfg_attr(miri, ignore)]
fn lines_are_one_message_each() {
    // The command sends, the library receives.
    let key = unique_key();
    let _clean = Cleanup::Key(key);
    let ring = Ring::open_or_create(key, &RingConfig::new()).expect("create ring");
    let shmid = ring.shmid().expect("shmid");
    let mut rx = ring.consumer().expect("consumer");
    let out = run(
        &["send", "--key", &key.to_string(), "--lines"],
        b"alpha\n\nbeta gamma\nlast without newline",
    );
    ok(&out, "send --lines");
    let mut got = Vec::new();
    loop {
        match rx.lend_timeout(Duration::from_secs(10)) {
            Ok(msg) => got.push(String::from_utf8(msg.to_vec()).expect("utf-8")),
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("receiving: {e}"),
        }
    }
    assert_eq!(got, ["alpha", "", "beta gamma", "last without newline"]);
    drop(rx);
    drop(ring);
    assert_gone(key, &[shmid]);

    // The library sends, the command receives.
    let key = unique_key();
    let _clean2 = Cleanup::Key(key);
    let ring = Ring::open_or_create(key, &RingConfig::new()).expect("create ring");
    let shmid = ring.shmid().expect("shmid");
    let mut tx = ring.producer().expect("producer");
    let long = "x".repeat(5000);
    for m in ["one", "", "two words", &long] {
        tx.send(m.as_bytes()).expect("send");
    }
    drop(tx); // end of stream
    drop(ring);
    let out = run(&["recv", "--key", &key.to_string(), "--lines"], b"");
    let text = ok(&out, "recv --lines");
    assert_eq!(text, format!("one\n\ntwo words\n{long}\n"));
    assert_gone(key, &[shmid]);
}

/// `stat --json` is JSON with real numbers, says what is in the ring and who holds it, and
/// agrees with `ipcs -m` on key, shmid, permissions, size and attach count. The table and the
/// detailed view (`info`) show the ring too.
#[test]
#[cfg_attr(miri, ignore)]
fn stat_json_parses_and_agrees_with_ipcs() {
    let key = unique_key();
    let k = key.to_string();
    let _clean = Cleanup::Key(key);
    let out = run(&["create", "--key", &k, "--capacity", "64K"], b"");
    let shmid: i32 = ok(&out, "create")
        .trim()
        .parse()
        .expect("create prints the shmid");
    let _clean_id = Cleanup::Id(shmid);

    // A receiver that attaches and is then stopped, and three lines sent meanwhile.
    let mut recv = Proc::spawn(
        shmpipe(&["recv", "--key", &k, "-o", "/dev/null"]).stderr(Stdio::piped()),
        "recv",
    );
    wait_for_holder(Some(key), None, false, &mut [&mut recv]);
    recv.signal(libc::SIGSTOP);
    ok(
        &run(&["send", "--key", &k, "--lines"], b"a\nb\nc\n"),
        "send",
    );

    // Other tests may attach to every segment for an instant (gc, stat): retry until ipcs,
    // stat and ipcs again agree.
    let mut tries = 0;
    let (obj, row) = loop {
        tries += 1;
        let before = ipcs_row(shmid);
        let text = ok(&run(&["stat", "--key", &k, "--json"], b""), "stat --json");
        let obj = json::parse(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
        let after = ipcs_row(shmid);
        if before == after && obj.num("attached").to_string() == after[5] || tries == 20 {
            break (obj, after);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(obj.num("key"), f64::from(key.raw() as u32));
    assert_eq!(obj.string("key_hex"), row[0]);
    assert_eq!(obj.num("shmid"), f64::from(shmid));
    assert_eq!(row[1], shmid.to_string());
    assert_eq!(obj.num("mode"), f64::from(0o600));
    assert_eq!(obj.string("perms"), row[3]);
    assert_eq!(obj.num("size").to_string(), row[4]);
    assert_eq!(obj.num("attached").to_string(), row[5], "nattch");
    assert_eq!(obj.num("attached"), 1.0);
    assert_eq!(
        obj.boolean("marked_for_removal"),
        row.len() > 6 && row[6] == "dest"
    );
    assert_eq!(obj.num("capacity"), 65536.0);
    assert_eq!(obj.num("messages"), 3.0);
    assert_eq!(obj.num("sent"), 3.0);
    assert_eq!(obj.num("received"), 0.0);
    assert_eq!(obj.num("used_slots"), 3.0);
    assert_eq!(obj.num("used_bytes"), 3.0 * obj.num("slot_size"));
    assert!(obj.boolean("persistent"));
    assert_eq!(obj.field("producer"), &Json::Null, "the sender has closed");
    let consumer = obj.field("consumer");
    assert_eq!(consumer.num("pid"), f64::from(recv.pid()));
    assert!(consumer.boolean("alive"), "a stopped process is alive");

    // The list (JSON and table) holds it too; `info` is `stat`.
    let text = ok(&run(&["stat", "--json"], b""), "stat --json (all)");
    let all = json::parse(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    let Json::Arr(items) = all else {
        panic!("not an array: {text}")
    };
    assert!(items.iter().any(|o| o.num("shmid") == f64::from(shmid)));
    let table = ok(&run(&["stat"], b""), "stat");
    assert!(table.starts_with("KEY"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(&shmid.to_string())),
        "{table}"
    );
    let info = ok(&run(&["info", "--id", &shmid.to_string()], b""), "info");
    assert!(info.contains("messages"), "{info}");

    // The receiver gets the three lines and the end of stream; rm removes the ring.
    recv.signal(libc::SIGCONT);
    let (st, err) = recv.wait_stderr(TIMEOUT);
    assert!(st.success(), "recv: {st}: {err}");
    ok(&run(&["rm", "--key", &k], b""), "rm");
    assert_gone(key, &[shmid]);
}

/// The fields of the `ipcs -m` line of a segment: key shmid owner perms bytes nattch [status].
fn ipcs_row(shmid: i32) -> Vec<String> {
    let out = Command::new("ipcs")
        .arg("-m")
        .output()
        .expect("run ipcs -m");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&shmid.to_string()))
        .unwrap_or_else(|| panic!("shmid {shmid} not in ipcs -m: {text}"))
}

/// A segment that is not a shmpipe ring, detached, with its first bytes set to something else.
fn foreign_segment(key: Key) -> i32 {
    let seg = Segment::create(key, 4096, 0o600).expect("create foreign segment");
    // SAFETY: the segment is attached for the lifetime of `seg`, at least 4096 bytes long, and
    // nobody else knows it yet.
    unsafe { std::ptr::copy_nonoverlapping(b"NOTOURS!".as_ptr(), seg.as_ptr(), 8) };
    seg.shmid()
}

/// `gc --dry-run` names an orphan (its sender was SIGKILLed) and removes nothing; `gc`
/// removes it and leaves a foreign segment alone, which neither `stat` lists nor `rm` removes.
#[test]
#[cfg_attr(miri, ignore)]
fn gc_removes_an_orphan_and_leaves_a_foreign_segment_alone() {
    let orphan_key = unique_key();
    let _clean = Cleanup::Key(orphan_key);
    let mut send = Proc::spawn(
        shmpipe(&["send", "--key", &orphan_key.to_string()]).stdin(Stdio::piped()),
        "send",
    );
    let orphan = wait_for_holder(Some(orphan_key), None, true, &mut [&mut send]);
    let _clean_orphan = Cleanup::Id(orphan);
    send.signal(libc::SIGKILL);
    send.wait(TIMEOUT);

    let foreign_key = unique_key();
    let foreign = foreign_segment(foreign_key);
    let _clean_foreign = Cleanup::Id(foreign);

    let dry = ok(&run(&["gc", "--dry-run"], b""), "gc --dry-run");
    assert!(
        dry.contains(&format!("would remove shmid {orphan} ")),
        "{dry}"
    );
    assert!(!dry.contains(&format!("shmid {foreign} ")), "{dry}");
    assert!(exists(orphan) && exists(foreign));

    let table = ok(&run(&["stat"], b""), "stat");
    let ids: Vec<String> = table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    assert!(ids.contains(&orphan.to_string()), "{table}");
    assert!(!ids.contains(&foreign.to_string()), "{table}");

    let err = fails(
        &run(&["rm", "--id", &foreign.to_string()], b""),
        1,
        "rm foreign",
    );
    assert!(err.contains("not a shmpipe ring"), "{err}");
    assert!(exists(foreign));

    let done = ok(&run(&["gc"], b""), "gc");
    assert!(done.contains(&format!("removed shmid {orphan} ")), "{done}");
    assert!(!exists(orphan), "the orphan is still there");
    assert!(exists(foreign), "gc removed a foreign segment");
    assert!(matches!(
        Segment::open(foreign_key),
        Ok(seg) if seg.shmid() == foreign
    ));
    shmpipe::segment::remove_id(foreign).expect("remove the foreign segment");
    assert_gone(orphan_key, &[orphan, foreign]);
}

/// Usage errors exit 2; other errors exit 1 with one line on stderr naming the key and what is
/// wrong.
#[test]
#[cfg_attr(miri, ignore)]
fn errors_are_one_line_naming_the_key() {
    for args in [
        &["send"][..],
        &["send", "--key", "nonsense"],
        &["recv", "--key", "1", "--id", "2"],
        &["recv", "--ftok", "/"],
        &["frobnicate"],
        &["send", "--key", "1", "--capacity", "3M"],
        &["create", "--id", "5"],
        &["stat", "--bogus"],
    ] {
        fails(&run(args, b""), 2, &args.join(" "));
    }

    // A segment that is not ours.
    let key = unique_key();
    let k = key.to_string();
    let foreign = foreign_segment(key);
    let _clean = Cleanup::Id(foreign);
    for args in [
        &["recv", "--key", &k][..],
        &["send", "--key", &k],
        &["stat", "--key", &k],
        &["rm", "--key", &k],
    ] {
        let err = fails(&run(args, b""), 1, &args.join(" "));
        assert!(err.contains(&k), "{err}");
        assert!(err.contains("not a shmpipe ring"), "{err}");
    }
    assert!(exists(foreign));
    shmpipe::segment::remove_id(foreign).expect("remove foreign");

    // Nothing there.
    let key = unique_key();
    let k = key.to_string();
    for args in [&["rm", "--key", &k][..], &["stat", "--key", &k]] {
        let err = fails(&run(args, b""), 1, &args.join(" "));
        assert!(err.contains(&k) && err.contains("no such segment"), "{err}");
    }
    let err = fails(&run(&["recv", "--id", "2147483000"], b""), 1, "recv --id");
    assert!(err.contains("shmid 2147483000"), "{err}");

    // A missing input file: reported before any ring is made.
    let err = fails(
        &run(&["send", "--key", &k, "/nonexistent/file"], b""),
        1,
        "send missing file",
    );
    assert!(err.contains("/nonexistent/file"), "{err}");
    assert_eq!(shmid_of_key(key), None);

    // A line longer than the ring's largest message: an error, and the ring it made is gone.
    let mut input = b"short\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 40_000));
    input.push(b'\n');
    let err = fails(
        &run(
            &["send", "--key", &k, "--lines", "--capacity", "64K"],
            &input,
        ),
        1,
        "send a long line",
    );
    assert!(
        err.contains("line 2 is longer") && err.contains(&k),
        "{err}"
    );
    assert_eq!(shmid_of_key(key), None, "the failed sender left its ring");

    // A ring of another shape than asked for.
    let _clean = Cleanup::Key(key);
    let out = run(&["create", "--key", &k, "--capacity", "64K"], b"");
    let shmid: i32 = ok(&out, "create").trim().parse().expect("shmid");
    let err = fails(&run(&["create", "--key", &k], b""), 1, "create twice");
    assert!(err.contains(&k) && err.contains("already exists"), "{err}");
    let err = fails(
        &run(&["send", "--key", &k, "--capacity", "1M"], b"x"),
        1,
        "send --capacity 1M",
    );
    assert!(err.contains(&k) && err.contains("differs"), "{err}");
    ok(&run(&["rm", "--key", &k], b""), "rm");
    assert_gone(key, &[shmid]);
}

/// SIGKILL one side in the middle of a transfer: the other exits with status 1 and an error
/// that says the peer died, within a few seconds; the ring is gone afterwards.
#[test]
#[cfg_attr(miri, ignore)]
fn killing_the_peer_ends_the_other_side_with_an_error() {
    // Kill the sender; the receiver reports it.
    let key = unique_key();
    let _clean = Cleanup::Key(key);
    let k = key.to_string();
    let mut recv = Proc::spawn(
        shmpipe(&["recv", "--key", &k, "-o", "/dev/null"]).stderr(Stdio::piped()),
        "recv",
    );
    // Once both sides are in, the ring is marked for removal and has no key: follow its id.
    let shmid = wait_for_holder(Some(key), None, false, &mut [&mut recv]);
    let zero = std::fs::File::open("/dev/zero").expect("open /dev/zero");
    let mut send = Proc::spawn(shmpipe(&["send", "--key", &k]).stdin(zero), "send");
    wait_for_holder(None, Some(shmid), true, &mut [&mut recv, &mut send]);
    std::thread::sleep(Duration::from_millis(100));
    send.signal(libc::SIGKILL);
    send.wait(TIMEOUT);
    let t = Instant::now();
    let (st, err) = recv.wait_stderr(Duration::from_secs(10));
    assert_eq!(st.code(), Some(1), "recv: {st}: {err}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    assert!(err.contains("died") && err.contains("incomplete"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_gone(key, &[shmid]);

    // Kill the receiver (blocked writing to a pipe nobody reads); the sender reports it.
    let key = unique_key();
    let _clean2 = Cleanup::Key(key);
    let k = key.to_string();
    let zero = std::fs::File::open("/dev/zero").expect("open /dev/zero");
    let mut send = Proc::spawn(
        shmpipe(&["send", "--key", &k])
            .stdin(zero)
            .stderr(Stdio::piped()),
        "send",
    );
    let shmid = wait_for_holder(Some(key), None, true, &mut [&mut send]);
    let mut recv = Proc::spawn(
        shmpipe(&["recv", "--key", &k]).stdout(Stdio::piped()),
        "recv",
    );
    wait_for_holder(None, Some(shmid), false, &mut [&mut recv, &mut send]);
    std::thread::sleep(Duration::from_millis(100));
    recv.signal(libc::SIGKILL);
    recv.wait(TIMEOUT);
    let t = Instant::now();
    let (st, err) = send.wait_stderr(Duration::from_secs(10));
    assert_eq!(st.code(), Some(1), "send: {st}: {err}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        err.contains(&k) && err.contains("receiver") && err.contains("died"),
        "{err}"
    );
    assert_gone(key, &[shmid]);

    // A server writing a line now and then into a ring that never fills: it notices the
    // killed receiver all the same.
    let key = unique_key();
    let _clean3 = Cleanup::Key(key);
    let k = key.to_string();
    let mut send = Proc::spawn(
        shmpipe(&["send", "--key", &k, "--lines"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped()),
        "send --lines",
    );
    let shmid = wait_for_holder(Some(key), None, true, &mut [&mut send]);
    let mut recv = Proc::spawn(
        &mut shmpipe(&["recv", "--key", &k, "--lines", "-o", "/dev/null"]),
        "recv --lines",
    );
    wait_for_holder(None, Some(shmid), false, &mut [&mut recv, &mut send]);
    let mut lines = send.child.stdin.take().expect("stdin");
    recv.signal(libc::SIGKILL);
    recv.wait(TIMEOUT);
    let t = Instant::now();
    while send.try_status().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the sender did not notice"
        );
        // A broken pipe once it has exited is fine.
        let _ = lines.write_all(b"a line from the server\n");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (st, err) = send.wait_stderr(TIMEOUT);
    assert_eq!(st.code(), Some(1), "send: {st}: {err}");
    assert!(err.contains("receiver") && err.contains("died"), "{err}");
    drop(lines);
    assert_gone(key, &[shmid]);
}

/// SIGINT or SIGTERM to a side whose peer never came ends it by that signal and removes the
/// ring it made.
#[test]
#[cfg_attr(miri, ignore)]
fn interrupting_a_lone_side_removes_its_ring() {
    let key = unique_key();
    let _clean = Cleanup::Key(key);
    let mut recv = Proc::spawn(
        shmpipe(&["recv", "--key", &key.to_string()]).stderr(Stdio::piped()),
        "recv",
    );
    let shmid = wait_for_holder(Some(key), None, false, &mut [&mut recv]);
    recv.signal(libc::SIGINT);
    let (st, err) = recv.wait_stderr(Duration::from_secs(5));
    assert_eq!(st.signal(), Some(libc::SIGINT), "recv: {st}: {err}");
    assert_gone(key, &[shmid]);

    let key = unique_key();
    let _clean2 = Cleanup::Key(key);
    let mut send = Proc::spawn(
        shmpipe(&["send", "--key", &key.to_string()])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped()),
        "send",
    );
    let shmid = wait_for_holder(Some(key), None, true, &mut [&mut send]);
    send.signal(libc::SIGTERM);
    let (st, err) = send.wait_stderr(Duration::from_secs(5));
    assert_eq!(st.signal(), Some(libc::SIGTERM), "send: {st}: {err}");
    assert_gone(key, &[shmid]);
}

/// Explicit lifetimes: `create --key private` prints a shmid both sides use with `--id`, and
/// the ring stays (persistent) until `rm`; `--persist` keeps a ring made on demand; `--ftok`
/// derives the same key on both sides.
#[test]
#[cfg_attr(miri, ignore)]
fn create_rm_private_rings_persist_and_ftok() {
    // A private ring by shmid.
    let out = run(&["create", "--key", "private", "--capacity", "64K"], b"");
    let shmid: i32 = ok(&out, "create").trim().parse().expect("shmid");
    let _clean = Cleanup::Id(shmid);
    let id = shmid.to_string();
    ok(
        &run(&["send", "--id", &id], b"hello through a private ring"),
        "send --id",
    );
    let got = ok(&run(&["recv", "--id", &id], b""), "recv --id");
    assert_eq!(got, "hello through a private ring");
    let info = ok(&run(&["stat", "--id", &id], b""), "stat --id");
    assert!(info.contains("persistent   yes"), "{info}");
    ok(&run(&["rm", "--id", &id], b""), "rm --id");
    assert!(!exists(shmid));

    // --persist: the ring made on demand outlives the transfer.
    let key = unique_key();
    let _clean2 = Cleanup::Key(key);
    let k = key.to_string();
    ok(
        &run(&["send", "--key", &k, "--persist"], b"kept"),
        "send --persist",
    );
    assert_eq!(ok(&run(&["recv", "--key", &k], b""), "recv"), "kept");
    let shmid = shmid_of_key(key).expect("a persistent ring stays at its key");
    ok(&run(&["rm", "--key", &k], b""), "rm");
    assert_gone(key, &[shmid]);

    // --ftok: both sides derive the key from a file.
    let path = RemoveFile(scratch("ftok"));
    std::fs::write(&path.0, b"").expect("create ftok file");
    let p = path.0.to_str().expect("utf-8 path");
    let key = Key::ftok(p, b'z').expect("ftok");
    let _clean3 = Cleanup::Key(key);
    let mut recv = Proc::spawn(
        shmpipe(&["recv", "--ftok", p, "--proj-id", "z"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        "recv --ftok",
    );
    let shmid = wait_for_holder(Some(key), None, false, &mut [&mut recv]);
    ok(
        &run(&["send", "--ftok", p, "--proj-id", "122"], b"by ftok"),
        "send --ftok",
    );
    let (st, err) = recv.wait_stderr(TIMEOUT);
    assert!(st.success(), "recv: {st}: {err}");
    let mut got = String::new();
    recv.child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut got)
        .expect("read");
    assert_eq!(got, "by ftok");
    assert_gone(key, &[shmid]);
}

/// `--path` puts the ring in a file instead of a segment: either side may start first, the
/// file is gone after the transfer (unless `--persist`), and no segment is created. The
/// memory options answer with one line when the system (or the backing) refuses them.
#[test]
#[cfg_attr(miri, ignore)]
fn path_rings_and_memory_options() {
    let ring_file = RemoveFile(scratch("path-ring"));
    let before = proc_segments();
    let script = r#"
        set -e
        seq 1 200000 | "$BIN" send --path "$RING" &
        sender=$!
        "$BIN" recv --path "$RING" | cksum
        wait "$sender"
        seq 1 200000 | cksum
        test ! -e "$RING" && echo unlinked
        printf 'kept\n' | "$BIN" send --path "$RING" --persist --lines
        test -e "$RING" && echo persisted
        "$BIN" stat --path "$RING" --json
        "$BIN" recv --path "$RING" --lines
        test -e "$RING" && echo still-there
    "#;
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script])
        .env("BIN", BIN)
        .env("RING", &ring_file.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let out = run_cmd(cmd, b"", "path pipeline");
    let text = ok(&out, "path pipeline");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(lines.len(), 7, "{text}");
    assert_eq!(lines[0], lines[1], "seq through a file ring differs");
    assert_eq!(lines[2..4], ["unlinked", "persisted"]);
    assert_eq!(lines[5..], ["kept", "still-there"]);
    // `stat --path` shows the waiting message and the closed sender of the persistent ring.
    let obj = json::parse(lines[4]).unwrap_or_else(|e| panic!("{e}: {}", lines[4]));
    assert_eq!(obj.string("path"), ring_file.0.display().to_string());
    assert_eq!(obj.num("messages"), 1.0);
    assert_eq!(obj.num("sent"), 1.0);
    assert!(obj.boolean("persistent") && obj.boolean("linked"));
    assert_eq!(obj.field("producer"), &Json::Null, "the sender has closed");
    std::fs::remove_file(&ring_file.0).unwrap();
    assert_eq!(proc_segments(), before, "a file ring created a segment");

    // Huge pages are a SysV (or memfd) option: a file ring refuses them in one line.
    let path = ring_file.0.display().to_string();
    let err = fails(
        &run(&["send", "--path", &path, "--huge-pages"], b"x"),
        1,
        "send --path --huge-pages",
    );
    assert!(err.contains("huge pages"), "{err}");
    assert!(!ring_file.0.exists());

    // On a machine without free huge pages (the default), --huge-pages fails in one line and
    // leaves no segment; with them, the transfer works.
    let key = unique_key();
    let _clean = Cleanup::Key(key);
    let out = run(&["send", "--key", &key.to_string(), "--huge-pages"], b"x");
    if out.status.success() {
        let got = run(&["recv", "--key", &key.to_string()], b"");
        assert_eq!(ok(&got, "recv of a huge-page ring"), "x");
    } else {
        let err = fails(&out, 1, "send --huge-pages");
        assert!(err.contains("huge"), "{err}");
    }
    assert_gone(key, &[]);

    // --lock on both sides: the data arrives, or (RLIMIT_MEMLOCK too small) one line says why.
    let key = unique_key();
    let _clean = Cleanup::Key(key);
    let k = key.to_string();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let out_file = RemoveFile(scratch("locked.out"));
    let out_path = out_file.0.display().to_string();
    let mut recv = Proc::spawn(
        shmpipe(&[
            "recv",
            "--key",
            &k,
            "--lock",
            "--capacity",
            "64K",
            "-o",
            &out_path,
        ])
        .stderr(Stdio::piped()),
        "recv --lock",
    );
    let sent = run(&["send", "--key", &k, "--lock", "--capacity", "64K"], &data);
    if sent.status.success() {
        let (st, err) = recv.wait_stderr(Duration::from_secs(30));
        assert!(st.success(), "recv --lock: {st}: {err}");
        let got = std::fs::read(&out_file.0).unwrap();
        assert!(got == data, "data through a locked ring differs");
    } else {
        let err = fails(&sent, 1, "send --lock");
        assert!(err.contains("lock"), "{err}");
    }
    assert_gone(key, &[]);
}

/// Case 21 through the command: a ring at our key owned by another user (uid 65534, mode
/// 0666) makes `send` and `recv` exit 1 with one line naming owner and mode; `stat` lists it
/// marked with its owner; `gc` does not remove another user's stale ring; `--accept-owner`
/// opens (or collects) it. A ring of ours with a wider mode than `--mode` is refused likewise.
#[test]
#[cfg_attr(miri, ignore)]
fn a_ring_of_another_user_is_refused_unless_accepted() {
    const NOBODY: u32 = 65534;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("note: needs root to give a segment to another user; skipped");
        return;
    }
    let key = unique_key();
    let k = key.to_string();
    let _clean = Cleanup::Key(key);
    let out = run(
        &["create", "--key", &k, "--mode", "0666", "--capacity", "64K"],
        b"",
    );
    let shmid: i32 = ok(&out, "create").trim().parse().expect("shmid");
    set_segment_owner(shmid, NOBODY);
    for args in [&["recv", "--key", &k][..], &["send", "--key", &k]] {
        let err = fails(&run(args, b"secret"), 1, &args.join(" "));
        assert!(err.contains(&k), "{err}");
        assert!(err.contains("uid 65534") && err.contains("0666"), "{err}");
        assert!(err.contains("--accept-owner 65534"), "{err}");
    }
    let id = shmid.to_string();
    let err = fails(&run(&["recv", "--id", &id], b""), 1, "recv --id");
    assert!(err.contains("uid 65534"), "{err}");
    assert_eq!(inspect(None, Some(shmid)).expect("still there").sent, 0);

    let table = ok(&run(&["stat"], b""), "stat");
    let row = table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(id.as_str()))
        .unwrap_or_else(|| panic!("stat does not list the foreign ring: {table}"));
    assert!(row.contains("owner=65534"), "{row}");
    let info = ok(&run(&["stat", "--key", &k], b""), "stat --key");
    assert!(
        info.contains("owner uid 65534") && info.contains("not ours"),
        "{info}"
    );

    let accept = ["--accept-owner", "65534"];
    ok(
        &run(&[&["send", "--key", &k][..], &accept].concat(), b"accepted"),
        "send --accept-owner",
    );
    let got = run(&[&["recv", "--key", &k][..], &accept].concat(), b"");
    assert_eq!(ok(&got, "recv --accept-owner"), "accepted");
    ok(&run(&["rm", "--key", &k], b""), "rm");
    assert_gone(key, &[shmid]);

    // A stale ring (not persistent, nobody attached, empty) of another user: gc keeps it.
    let key = unique_key();
    let _clean = Cleanup::Key(key);
    let ring = Ring::create(key, &RingConfig::new().slot_count(16)).expect("create");
    let stale = ring.shmid().unwrap();
    drop(ring);
    set_segment_owner(stale, NOBODY);
    let id = stale.to_string();
    let out = ok(&run(&["gc", "--id", &id], b""), "gc --id");
    assert!(out.contains("not removed (not ours)"), "{out}");
    assert!(out.contains("--accept-owner 65534"), "{out}");
    assert!(exists(stale), "gc removed another user's ring");
    let out = ok(&run(&["gc", "--dry-run"], b""), "gc --dry-run");
    assert!(
        !out.contains(&format!("would remove shmid {stale} ")),
        "{out}"
    );
    let out = ok(
        &run(&["gc", "--id", &id, "--accept-owner", "65534"], b""),
        "gc --accept-owner",
    );
    assert!(out.contains(&format!("removed shmid {stale} ")), "{out}");
    assert_gone(key, &[stale]);

    // Ours, but 0644: wider than the default --mode 0600.
    let key = unique_key();
    let k = key.to_string();
    let _clean = Cleanup::Key(key);
    let out = run(
        &["create", "--key", &k, "--mode", "644", "--capacity", "64K"],
        b"",
    );
    let shmid: i32 = ok(&out, "create").trim().parse().expect("shmid");
    let err = fails(&run(&["send", "--key", &k], b"x"), 1, "send to a 0644 ring");
    assert!(err.contains("0644") && err.contains("--mode 0644"), "{err}");
    ok(
        &run(&["send", "--key", &k, "--mode", "0644"], b"x"),
        "send --mode",
    );
    assert_eq!(
        ok(&run(&["recv", "--key", &k, "--mode", "0644"], b""), "recv"),
        "x"
    );
    ok(&run(&["rm", "--key", &k], b""), "rm");
    assert_gone(key, &[shmid]);
}

// ---------------------------------------------------------------------------------------------
// A third process, an empty stream, --timeout (docs/DESIGN.md, "A third writer" and "Roles,
// close and end of stream")
// ---------------------------------------------------------------------------------------------

/// Writes `bytes` at `off` of segment `shmid` through a bare `shmat`, as a third process that
/// is neither side would.
fn third_party_write(shmid: i32, off: usize, bytes: &[u8]) {
    // SAFETY: a null address lets the kernel choose where to map; the error value is checked.
    let addr = unsafe { libc::shmat(shmid, std::ptr::null(), 0) };
    assert!(
        addr as isize != -1,
        "shmat({shmid}): {}",
        std::io::Error::last_os_error()
    );
    for (i, &b) in bytes.iter().enumerate() {
        // SAFETY: the caller passes offsets inside the segment, which stays attached until the
        // shmdt below; its users access these bytes only atomically too.
        let byte = unsafe { std::sync::atomic::AtomicU8::from_ptr(addr.cast::<u8>().add(off + i)) };
        byte.store(b, Ordering::Relaxed);
    }
    // SAFETY: `addr` is the attachment made above; no reference into it outlives this line.
    unsafe { libc::shmdt(addr) };
}

/// Row 23: a third process zeroes the producer's owner and claims words, or the whole
/// segment, while a `send | recv` transfer runs. Both sides must end with an error (exit 1,
/// one line) and neither may hang; on the old code the sender exited 0 and the receiver
/// waited for ever for "a producer that has not come yet".
#[test]
#[cfg_attr(miri, ignore)]
fn a_third_process_zeroing_the_ring_ends_both_sides_with_an_error() {
    for whole in [false, true] {
        let key = unique_key();
        let _clean = Cleanup::Key(key);
        let k = key.to_string();
        let mut recv = Proc::spawn(
            shmpipe(&["recv", "--key", &k, "-q"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
            "recv",
        );
        let shmid = wait_for_holder(Some(key), None, false, &mut [&mut recv]);
        let _clean_id = Cleanup::Id(shmid);
        let mut send = Proc::spawn(
            shmpipe(&["send", "--key", &k, "-q"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped()),
            "send",
        );
        wait_for_holder(None, Some(shmid), true, &mut [&mut recv, &mut send]);
        let mut input = send.child.stdin.take().expect("stdin");
        let mut output = recv.child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = output.read(&mut buf) {
                if n == 0 || tx.send(n).is_err() {
                    break;
                }
            }
        });
        input.write_all(b"the first part\n").expect("write");
        // The receiver has it: the transfer is under way.
        let mut got = 0;
        while got < 15 {
            got += rx
                .recv_timeout(Duration::from_secs(20))
                .expect("the receiver wrote nothing");
        }
        if whole {
            let size = inspect(None, Some(shmid)).expect("inspect").stat.size;
            third_party_write(shmid, 0, &vec![0u8; size]);
        } else {
            third_party_write(shmid, 144, &[0u8; 8]); // the producer's owner
            third_party_write(shmid, 152, &[0u8; 4]); // the producer's claims
        }
        // The sender reads on, and its input ends: it must not report a clean end.
        let _ = input.write_all(b"the second part\n");
        drop(input);
        let (st, err) = send.wait_stderr(Duration::from_secs(10));
        assert_eq!(st.code(), Some(1), "send (whole: {whole}): {st}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("owner word"), "{err}");
        let (st, err) = recv.wait_stderr(Duration::from_secs(10));
        assert_eq!(st.code(), Some(1), "recv (whole: {whole}): {st}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// Row 25: `send` with empty input and no receiver exits 0 and leaves an empty stream; a later
/// `recv` ends at once with empty output, and nothing is left behind.
#[test]
#[cfg_attr(miri, ignore)]
fn an_empty_input_is_an_empty_stream_for_a_later_receiver() {
    let key = unique_key();
    let _clean = Cleanup::Key(key);
    let k = key.to_string();
    ok(&run(&["send", "--key", &k], b""), "send </dev/null");
    let shmid = shmid_of_key(key).expect("the sender left its (empty) stream");
    let mut recv = Proc::spawn(
        shmpipe(&["recv", "--key", &k])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        "recv",
    );
    let t = Instant::now();
    let (st, err) = recv.wait_stderr(Duration::from_secs(10));
    assert!(st.success(), "recv: {st}: {err}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    let mut out = Vec::new();
    recv.child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut out)
        .expect("read");
    assert!(out.is_empty(), "{} bytes of output", out.len());
    assert_gone(key, &[shmid]);
}

/// `--timeout` bounds a side's wait for a peer that never comes; while waiting it says, once,
/// on standard error, what it waits for.
#[test]
#[cfg_attr(miri, ignore)]
fn timeout_bounds_the_wait_for_a_peer_that_never_comes() {
    let key = unique_key();
    let _clean = Cleanup::Key(key);
    let k = key.to_string();
    let t = Instant::now();
    let out = run(&["recv", "--key", &k, "--timeout", "2s"], b"");
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(1), "recv: {}", out.status);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].contains("waiting for a producer") && lines[0].contains(&k),
        "{err}"
    );
    assert!(
        lines[1].contains("timed out") && lines[1].contains("2s"),
        "{err}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "took {took:?}"
    );
    assert_gone(key, &[]);

    // A sender whose ring fills before any receiver comes.
    let key = unique_key();
    let _clean = Cleanup::Key(key);
    let k = key.to_string();
    let out = run(
        &[
            "send",
            "--key",
            &k,
            "--capacity",
            "4096",
            "--timeout",
            "1500ms",
        ],
        &[7u8; 64 << 10],
    );
    assert_eq!(out.status.code(), Some(1), "send: {}", out.status);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("waiting for a receiver"), "{err}");
    assert!(
        err.lines().last().is_some_and(|l| l.contains("timed out")),
        "{err}"
    );
    assert_gone(key, &[]);

    // A malformed duration is a usage error.
    let out = run(&["recv", "--key", &k, "--timeout", "soon"], b"");
    assert_eq!(out.status.code(), Some(2), "{}", out.status);
}

/// `stat` shows a typed ring's message type: size, alignment and fingerprint in JSON, and a
/// "message type" line in the detailed view.
#[test]
fn stat_shows_a_typed_rings_message_type() {
    use shmpipe::bytemuck::{Pod, Zeroable};
    #[derive(Clone, Copy, Pod, Zeroable)]
    #[bytemuck(crate = "shmpipe::bytemuck")]
    #[repr(C)]
    struct Tick {
        seq: u64,
        price: f64,
        qty: u32,
        side: u32,
    }
    let cfg = RingConfig::new().slot_count(256).message_type::<Tick>();
    let ring = Ring::create(Key::Private, &cfg).expect("create");
    let shmid = ring.shmid().expect("a segment");
    let _rm = Cleanup::Id(shmid);
    let t = shmpipe::MessageType::of::<Tick>();
    let id = shmid.to_string();
    let json = ok(&run(&["stat", "--id", &id, "--json"], b""), "stat --json");
    let want = format!(
        "\"message_type\":{{\"size\":24,\"align\":8,\"fingerprint\":\"{:016x}\"}}",
        t.fingerprint
    );
    assert!(json.contains(&want), "{json}");
    let text = ok(&run(&["stat", "--id", &id], b""), "stat");
    assert!(
        text.lines()
            .any(|l| l.starts_with("message type") && l.contains("24-byte values aligned to 8")),
        "{text}"
    );
}

/// `--key 0` is `IPC_PRIVATE`: a new ring no other process can find by key. It is refused as
/// a usage error that names `--key private`, instead of silently making a private ring.
#[test]
fn key_zero_is_refused_with_a_pointer_to_key_private() {
    for args in [
        &["send", "--key", "0"][..],
        &["recv", "--key", "0"],
        &["create", "--key", "0x0"],
        &["stat", "--key", "0"],
    ] {
        let err = fails(&run(args, b"x"), 2, &args.join(" "));
        assert!(err.contains("--key private"), "{args:?}: {err}");
        assert!(!err.contains("created private ring"), "{args:?}: {err}");
    }
}

/// Every argument the command refuses, whatever the value, is a usage error: exit status 2
/// with clap's "error:" message, never 1 for some sizes and 2 for others. The limits are in
/// `--help`.
#[test]
fn shape_arguments_out_of_range_are_usage_errors() {
    let key = unique_key();
    let _clean = Cleanup::Key(key);
    let k = key.to_string();
    for shape in [
        &["--capacity", "8"][..],
        &["--capacity", "4G"],
        &["--capacity", "64G"],
        &["--capacity", "1T"],
        &["--capacity", "1024T"],
        &["--slot-size", "4"],
        &["--slot-size", "2M"],
        &["--slot-size", "8G"],
        &["--slot-size", "1M", "--capacity", "64K"],
    ] {
        for cmd in ["create", "send"] {
            let mut args = vec![cmd, "--key", &k];
            args.extend_from_slice(shape);
            let err = fails(&run(&args, b""), 2, &args.join(" "));
            assert!(err.starts_with("error: "), "{args:?}: {err}");
        }
    }
    assert_eq!(shmid_of_key(key), None, "a refused command made a ring");
    let help = ok(&run(&["create", "--help"], b""), "create --help");
    for limit in ["2G", "1M", "8"] {
        assert!(
            help.contains(limit),
            "create --help does not name {limit}: {help}"
        );
    }
}

/// Shell completions and the man page come from the command's own definitions: every
/// subcommand and option is in them, the bash script parses, and an unknown shell is a usage
/// error.
#[test]
fn completions_and_man_page_are_generated() {
    let bash = ok(&run(&["completions", "bash"], b""), "completions bash");
    for word in [
        "_shmpipe",
        "send",
        "recv",
        "stat",
        "--capacity",
        "--timeout",
    ] {
        assert!(bash.contains(word), "bash completions lack {word}");
    }
    let script = RemoveFile(scratch("completion.bash"));
    std::fs::write(&script.0, &bash).expect("write the script");
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script.0)
        .output()
        .expect("bash -n");
    assert!(check.status.success(), "{check:?}");
    let zsh = ok(&run(&["completions", "zsh"], b""), "completions zsh");
    assert!(zsh.starts_with("#compdef shmpipe"), "{zsh}");
    for shell in ["fish", "elvish", "powershell"] {
        ok(&run(&["completions", shell], b""), shell);
    }
    fails(&run(&["completions", "tcsh"], b""), 2, "completions tcsh");

    let man = ok(&run(&["man"], b""), "man");
    assert!(man.contains(".TH shmpipe 1"), "{man}");
    for word in ["send", "recv", "stat", "completions", "Exit status"] {
        assert!(man.contains(word), "the man page lacks {word}");
    }
}

/// Ctrl-C in the middle of a transfer: the progress bar (if any) is cleared and one line says
/// where the transfer stopped (bytes and, with `--lines`, messages so far, naming the key);
/// the process then ends by SIGINT, which a shell reports as status 130.
#[test]
#[cfg_attr(miri, ignore)]
fn ctrl_c_says_where_the_transfer_stopped() {
    let key = unique_key();
    let _clean = Cleanup::Key(key);
    let k = key.to_string();
    let mut send = Proc::spawn(
        shmpipe(&["send", "--key", &k, "--lines"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped()),
        "send",
    );
    // Three lines, and the input stays open: the sender is mid-transfer.
    let mut stdin = send.child.stdin.take().expect("stdin");
    stdin.write_all(b"one\ntwo\nthree\n").expect("write");
    // The ring loses its key once both sides are in: follow it by shmid.
    let shmid = wait_for_holder(Some(key), None, true, &mut [&mut send]);
    let mut recv = Proc::spawn(
        shmpipe(&["recv", "--key", &k, "--lines"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        "recv",
    );
    let deadline = Instant::now() + TIMEOUT;
    while inspect(None, Some(shmid)).is_none_or(|i| i.received < 3) {
        assert!(Instant::now() < deadline, "the three lines never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    for (what, p, verb) in [("recv", &mut recv, "received"), ("send", &mut send, "sent")] {
        p.signal(libc::SIGINT);
        let (st, err) = p.wait_stderr(Duration::from_secs(5));
        assert_eq!(st.signal(), Some(libc::SIGINT), "{what}: {st}: {err}");
        let line = err
            .lines()
            .find(|l| l.contains("interrupted"))
            .unwrap_or_else(|| panic!("{what} did not say where it stopped: {err:?}"));
        assert!(
            line.contains(&k) && line.contains("14 bytes") && line.contains("3 messages"),
            "{what}: {line}"
        );
        assert!(line.contains(verb), "{what}: {line}");
    }
    drop(stdin);
}

/// `stat --path` on a file that is not a ring (text, zeros, random bytes) says "not a shmpipe
/// ring", naming the file, with exit status 1.
#[test]
fn stat_path_on_a_file_that_is_not_a_ring() {
    let file = RemoveFile(scratch("not-a-ring"));
    let p = file.0.display().to_string();
    let random: Vec<u8> = (0..100_000u64).map(|i| mix(i) as u8).collect();
    for (what, bytes) in [
        ("text", b"hello\n".to_vec()),
        ("zeros", vec![0; 100_000]),
        ("random", random),
    ] {
        std::fs::write(&file.0, bytes).expect("write");
        let err = fails(&run(&["stat", "--path", &p], b""), 1, what);
        assert!(
            err.contains("not a shmpipe ring") && err.contains(&p),
            "{what}: {err}"
        );
    }
}

/// `rm --path` removes a ring file: it refuses a file that is not a ring, and a ring whose
/// roles live processes hold unless `--force` (they carry on; nobody new finds it).
#[test]
#[cfg_attr(miri, ignore)]
fn rm_path_removes_a_ring_file() {
    let file = RemoveFile(scratch("rm-path"));
    let p = file.0.display().to_string();
    std::fs::write(&file.0, b"not a ring\n").expect("write");
    let err = fails(&run(&["rm", "--path", &p], b""), 1, "rm a text file");
    assert!(
        err.contains("not a shmpipe ring") && err.contains(&p),
        "{err}"
    );
    assert!(file.0.exists(), "rm removed a file that is not a ring");
    std::fs::remove_file(&file.0).expect("remove the text file");

    // A sender holding the ring, its input still open.
    let mut send = Proc::spawn(
        shmpipe(&["send", "--path", &p, "--persist", "--lines"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped()),
        "send",
    );
    // The ring exists before its creator claims the producer role: wait for the claim, which
    // `stat` shows as a live producer pid.
    let holding = format!("\"producer\":{{\"pid\":{}", send.pid());
    let deadline = Instant::now() + TIMEOUT;
    while !String::from_utf8_lossy(&run(&["stat", "--path", &p, "--json"], b"").stdout)
        .contains(&holding)
    {
        assert!(
            Instant::now() < deadline,
            "the sender never claimed its ring"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let err = fails(&run(&["rm", "--path", &p], b""), 1, "rm a ring in use");
    assert!(err.contains("in use") && err.contains("--force"), "{err}");
    assert!(file.0.exists());
    ok(&run(&["rm", "--path", &p, "--force"], b""), "rm --force");
    assert!(!file.0.exists(), "rm --force left the file");
    send.signal(libc::SIGTERM);
    send.wait(Duration::from_secs(5));

    // A persistent ring nobody holds any more.
    ok(
        &run(&["send", "--path", &p, "--persist", "--lines"], b"kept\n"),
        "send --persist",
    );
    assert!(file.0.exists());
    ok(&run(&["rm", "--path", &p], b""), "rm");
    assert!(!file.0.exists(), "rm left the file");
}

/// `stat` run by a user who may not read a ring (here: `nobody`, against root's 0600 ring)
/// lists it anyway, as `ipcs -m` does, with what the kernel shows and the state "no-access",
/// instead of hiding it; the JSON list has the same entry.
#[test]
#[cfg_attr(miri, ignore)]
fn stat_lists_a_ring_it_cannot_read_as_no_access() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: running stat as another user needs root");
        return;
    }
    let key = unique_key();
    let _clean = Cleanup::Key(key);
    let ring = Ring::create(key, &RingConfig::new().slot_count(16)).expect("create");
    let shmid = ring.shmid().expect("a segment");
    let as_nobody = |args: &[&str]| {
        let mut cmd = shmpipe(args);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(65534) != 0
                    || libc::setuid(65534) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        run_cmd(cmd, b"", &format!("shmpipe {} as nobody", args.join(" ")))
    };
    let table = ok(&as_nobody(&["stat"]), "stat as nobody");
    let row = table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(&shmid.to_string()))
        .unwrap_or_else(|| panic!("shmid {shmid} is not listed:\n{table}"));
    assert!(row.contains("no-access") && row.contains("600"), "{row}");
    let json = ok(&as_nobody(&["stat", "--json"]), "stat --json as nobody");
    let Json::Arr(all) = json::parse(json.trim()).unwrap_or_else(|e| panic!("{e}: {json}")) else {
        panic!("not an array: {json}")
    };
    let entry = all
        .iter()
        .find(|e| e.num("shmid") == f64::from(shmid))
        .unwrap_or_else(|| panic!("shmid {shmid} is not in {json}"));
    assert_eq!(entry.string("state"), "no-access", "{json}");
    drop(ring);
}

/// Every state `stat` prints is explained in `stat --help`.
#[test]
fn stat_help_documents_every_state() {
    let help = ok(&run(&["stat", "--help"], b""), "stat --help");
    for state in [
        "in-use",
        "removing",
        "initialising",
        "abandoned-init",
        "orphan",
        "pending",
        "idle",
        "other-version",
        "unreadable",
        "no-access",
        "dest",
        "persistent",
        "owner=UID",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(state)),
            "stat --help does not explain {state}:\n{help}"
        );
    }
}
