//! docs/LAYOUT.md is meant to be enough to write a compatible peer in another language. This
//! suite holds it to that: `tests/c/peer.c` is a producer and consumer written in C11 from the
//! document alone (no header or code from this crate), built here with the system's C compiler
//! (`$CC`, else `cc`) and run against the Rust side in both directions and both start orders.
//! Each run sends 200 000 messages of 0 to 300 bytes through 64 slots of 64 bytes, with the
//! counters starting just below 2^64: the tail wraps the array every few dozen messages (often
//! behind a padding record), the counters wrap through 0, and both sides find the ring full
//! and empty and sleep on the futexes. Every message is checked in order and byte for byte on
//! the receiving side, and the stream must end cleanly right after the last one.
//!
//! Both directions also run on a ring file and on a sealed memfd that the Rust side creates:
//! the C peer opens the file by path, or maps the memfd by a descriptor it inherits, with the
//! same checks as for a segment (owner and mode, the memfd's seals, the size against the
//! header), tells whether the Rust side still maps the ring by the file's device and inode,
//! and, claiming second, unlinks the ring file as it marks a segment for removal.
//!
//! A machine without a C compiler fails these tests (with a message saying so) rather than
//! skipping them.

mod common;

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{RemoveFile, RemoveOnDrop, TempDir, temp_path, unique_key};
use shmpipe::{Error, Key, Memfd, RecvError, Ring, RingConfig, Segment};

/// Messages per test.
const N: u64 = 200_000;
/// Largest message: up to 5 slots of 64 bytes, so records straddle the end of the array often.
const SIZE: u32 = 300;
/// Slots of the ring (of 64 bytes): small, so that it is full and empty all the time.
const SLOTS: u32 = 64;
/// Where the counters start: the free-running counters wrap through 0 during the run.
const INITIAL_INDEX: u64 = u64::MAX - 10_000;
/// No test may take longer, whatever goes wrong (a loaded 2-core machine runs one in seconds).
const TIMEOUT: Duration = Duration::from_secs(120);

/// The ring shape both sides create: what the C peer gets with `--slots 64 --slot-size 64`.
fn config() -> RingConfig {
    RingConfig::new()
        .slot_size(64)
        .slot_count(SLOTS)
        .initial_index(INITIAL_INDEX)
}

/// The Rust side's create-or-open of the ring at `key` (the one place that names the
/// constructor).
fn rust_ring(key: Key) -> Ring {
    Ring::open_or_create(key, &config()).expect("Rust side: open_or_create")
}

/// Where the ring of a test lives: the C peer creates or opens a SysV ring at a key; it only
/// opens a file ring (by path) or a memfd ring (by a descriptor it inherits), made by Rust.
#[derive(Clone, Copy, Debug)]
enum Backing {
    Sysv,
    File,
    Memfd,
}

/// Length of message `i` (as `msg_len` in peer.c).
fn msg_len(i: u64) -> usize {
    if i % 13 == 0 {
        return SIZE as usize;
    }
    if i % 17 == 0 {
        return 0;
    }
    let mut x = i;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x % (u64::from(SIZE) + 1)) as usize
}

/// Byte `j` of message `i` (as `msg_byte` in peer.c).
fn msg_byte(i: u64, j: usize) -> u8 {
    (i.wrapping_mul(7)
        .wrapping_add((j as u64).wrapping_mul(13))
        .wrapping_add(i >> 8)) as u8
}

fn fill(i: u64, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend((0..msg_len(i)).map(|j| msg_byte(i, j)));
}

/// The C peer, compiled once per test run into Cargo's temporary directory for tests.
fn peer_binary() -> &'static Path {
    static PEER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PEER.get_or_init(build_peer) {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

fn build_peer() -> Result<PathBuf, String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/peer.c");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = dir.join("shmpipe-c-peer");
    // Built under a name of our own and renamed into place, so concurrent runs never execute
    // a half-written binary.
    let tmp = dir.join(format!("shmpipe-c-peer.{}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut words = cc.split_ascii_whitespace();
    let program = words.next().ok_or("$CC is empty")?;
    let result = Command::new(program)
        .args(words)
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-std=c11", "-o"])
        .arg(&tmp)
        .arg(&source)
        .output();
    let output = match result {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "no C compiler: `{cc}` was not found. These tests build tests/c/peer.c and run it \
                 against the Rust side; install one (e.g. gcc) or set $CC."
            ));
        }
        Err(e) => return Err(format!("running the C compiler `{cc}`: {e}")),
    };
    if !output.status.success() {
        return Err(format!(
            "`{cc}` failed to build {} ({}):\n{}{}",
            source.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    std::fs::rename(&tmp, &out).map_err(|e| format!("rename {}: {e}", tmp.display()))?;
    Ok(out)
}

/// A running C peer. Dropping it kills and reaps the process if it still runs.
struct CPeer {
    child: Child,
    stdout: BufReader<ChildStdout>,
    log: RemoveFile,
    what: String,
}

impl CPeer {
    /// Starts `peer <mode>` on `key` with this suite's parameters.
    fn start(mode: &str, key: Key) -> CPeer {
        let Key::Number(k) = key else {
            panic!("the C peer needs a numeric key")
        };
        let mut cmd = Command::new(peer_binary());
        cmd.arg(mode).args(["--key", &format!("{:#x}", k as u32)]);
        CPeer::start_at(mode, &mut cmd)
    }

    /// Starts `peer <mode>` on the file or memfd ring `ring`, made by the Rust side: `--path`,
    /// or `--fd` with the ring's own descriptor, whose close-on-exec flag is cleared in the
    /// child alone (between `fork` and `exec`), so no other process spawned meanwhile by a
    /// concurrent test inherits it.
    fn start_on(mode: &str, ring: &Ring) -> CPeer {
        let mut cmd = Command::new(peer_binary());
        cmd.arg(mode);
        if let Some(memfd) = ring.memfd() {
            let fd = memfd.as_raw_fd();
            cmd.args(["--fd", &fd.to_string()]);
            // SAFETY: the closure runs in the forked child before exec and only calls fcntl,
            // which is async-signal-safe, on a descriptor number the child has (it is the
            // parent's, open while the ring lives, and the ring outlives this call).
            unsafe {
                cmd.pre_exec(move || {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        } else {
            let path = ring.path().expect("a file or memfd ring");
            cmd.arg("--path").arg(path);
        }
        CPeer::start_at(mode, &mut cmd)
    }

    /// Starts `cmd` (`peer <mode>` and where its ring is) with this suite's parameters.
    fn start_at(mode: &str, cmd: &mut Command) -> CPeer {
        let log = RemoveFile(temp_path(&format!("c-peer-{mode}.log")));
        let err = std::fs::File::create(&log.0).expect("create the C peer's log");
        let mut child = cmd
            .args(["--count", &N.to_string(), "--size", &SIZE.to_string()])
            .args(["--slots", &SLOTS.to_string(), "--slot-size", "64"])
            .args(["--initial-index", &INITIAL_INDEX.to_string()])
            .args(["--timeout", &TIMEOUT.as_secs().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("start the C peer");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        CPeer {
            child,
            stdout,
            log,
            what: format!("C peer `{mode}`"),
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log.0).unwrap_or_else(|e| format!("<no log: {e}>"))
    }

    /// Waits until the peer says it holds its role (it prints `claimed`). Bounded: the peer
    /// exits on its own timeouts, closing its stdout.
    fn wait_claimed(&mut self) {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read the C peer");
        assert_eq!(
            line.trim(),
            "claimed",
            "{} did not claim its role; stderr:\n{}",
            self.what,
            self.stderr()
        );
    }

    /// Waits (bounded) for the peer to exit and fails the test unless it exited 0.
    fn finish(mut self) {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waitpid") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not finish within {TIMEOUT:?}; stderr:\n{}",
                self.what,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(
            status.success(),
            "{} failed with {status}; stderr:\n{}",
            self.what,
            self.stderr()
        ); // What the run went through (padding records, futex sleeps), for `--nocapture`.
        eprintln!("{}", self.stderr().trim());
    }
}

impl Drop for CPeer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends the N messages and closes, as the C consumer expects them.
fn rust_produce(ring: &Ring) {
    let mut tx = ring.producer().expect("Rust producer: claim");
    let mut msg = Vec::with_capacity(SIZE as usize);
    for i in 0..N {
        fill(i, &mut msg);
        if let Err(e) = tx.send_timeout(&msg, TIMEOUT) {
            panic!("Rust producer: message {i}: {e}");
        }
    }
    tx.close().expect("Rust producer: clean close");
}

/// Receives and checks the N messages from the C producer, then the end of stream.
fn rust_consume(ring: &Ring) {
    let mut rx = ring.consumer().expect("Rust consumer: claim");
    let mut buf = vec![0u8; rx.max_message()];
    let mut want = Vec::with_capacity(SIZE as usize);
    for i in 0..N {
        let n = match rx.recv_timeout(&mut buf, TIMEOUT) {
            Ok(n) => n,
            Err(e) => panic!("Rust consumer: message {i}: {e}"),
        };
        fill(i, &mut want);
        assert_eq!(n, want.len(), "Rust consumer: length of message {i}");
        assert!(
            buf[..n] == want[..],
            "Rust consumer: content of message {i}"
        );
    }
    assert_eq!(
        rx.recv_timeout(&mut buf, TIMEOUT),
        Err(RecvError::Disconnected),
        "Rust consumer: after {N} messages the stream must end"
    );
    rx.close().expect("Rust consumer: clean close");
}

/// Once both roles were claimed, whoever claimed second marked the segment for removal: the
/// key names nothing any more (the memory goes with the last detach).
fn assert_removed(key: Key, second: &str) {
    assert!(
        matches!(Segment::open(key), Err(Error::NotFound { .. })),
        "both roles were claimed, so the {second} (which claimed second) must have marked the \
         segment for removal, yet the key still opens it"
    );
}

/// Rust creates the ring on `backing` and claims its role before the C peer starts.
fn rust_first(backing: Backing, c_mode: &str, rust_side: fn(&Ring)) {
    // Built before the Rust side claims: a missing compiler fails now, not after its timeout.
    peer_binary();
    let key = unique_key();
    let _by_key = RemoveOnDrop::key(key);
    let dir = TempDir::new("c-peer-dir");
    let ring = match backing {
        Backing::Sysv => rust_ring(key),
        Backing::File => Ring::create(dir.0.join("ring"), &config()).expect("create ring file"),
        Backing::Memfd => Ring::create(Memfd, &config()).expect("create memfd ring"),
    };
    let _by_id = ring.shmid().map(RemoveOnDrop::id);
    // The Rust side claims its role in its thread; the C peer starts only once it holds it.
    let (peer, result) = std::thread::scope(|s| {
        let ring = &ring;
        let side = s.spawn(move || rust_side(ring));
        while ring.status().producer_pid == 0 && ring.status().consumer_pid == 0 {
            assert!(!side.is_finished(), "Rust side ended before claiming");
            std::thread::sleep(Duration::from_millis(1));
        }
        let peer = match backing {
            Backing::Sysv => CPeer::start(c_mode, key),
            Backing::File | Backing::Memfd => CPeer::start_on(c_mode, ring),
        };
        (peer, side.join())
    });
    if let Err(panic) = result {
        let stderr = peer.stderr();
        drop(peer);
        eprintln!("C peer stderr:\n{stderr}");
        std::panic::resume_unwind(panic);
    }
    peer.finish();
    match backing {
        Backing::Sysv => assert_removed(key, "C peer"),
        // The C peer claimed second, so it unlinked the path (a memfd has no name).
        Backing::File => assert!(
            !ring.is_linked() && std::fs::read_dir(&dir.0).unwrap().next().is_none(),
            "both roles were claimed, so the C peer (which claimed second) must have unlinked \
             the ring file"
        ),
        Backing::Memfd => {}
    }
}

/// The C peer creates the ring and claims its role before the Rust side opens it.
fn c_first(c_mode: &str, rust_side: fn(&Ring)) {
    peer_binary();
    let key = unique_key();
    let _by_key = RemoveOnDrop::key(key);
    let mut peer = CPeer::start(c_mode, key);
    peer.wait_claimed();
    let ring = rust_ring(key);
    let _by_id = RemoveOnDrop::ring(&ring);
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rust_side(&ring)))
    {
        eprintln!("C peer stderr:\n{}", peer.stderr());
        std::panic::resume_unwind(panic);
    }
    peer.finish();
    assert_removed(key, "Rust side");
}

/// One test per direction and backing, the Rust side first: `name: mode of the C peer,
/// Rust side, backing;`.
macro_rules! rust_first_tests {
    ($($name:ident: $c_mode:literal, $rust_side:ident, $backing:ident;)*) => {$(
        #[test]
        fn $name() {
            rust_first(Backing::$backing, $c_mode, $rust_side);
        }
    )*};
}

rust_first_tests! {
    rust_producer_to_c_consumer_rust_first: "recv", rust_produce, Sysv;
    rust_producer_to_c_consumer_on_a_file: "recv", rust_produce, File;
    rust_producer_to_c_consumer_on_a_memfd: "recv", rust_produce, Memfd;
    c_producer_to_rust_consumer_rust_first: "send", rust_consume, Sysv;
    c_producer_to_rust_consumer_on_a_file: "send", rust_consume, File;
    c_producer_to_rust_consumer_on_a_memfd: "send", rust_consume, Memfd;
}

#[test]
fn rust_producer_to_c_consumer_c_first() {
    c_first("recv", rust_produce);
}

#[test]
fn c_producer_to_rust_consumer_c_first() {
    c_first("send", rust_consume);
}
