//! Recycling races (docs/DESIGN.md, "Recycling a key"): a ring crashed at a key, and then, at
//! the same moment, a restarted producer and a restarted consumer (`Ring::open_or_create` in
//! two processes) and observers (`gc::inspect` as `shmpipe stat` does, `gc::classify_id`, and
//! `gc::remove_if_stale` as `shmpipe gc` does, in two more processes). Every round, both sides
//! must end on the same new segment and the consumer must receive the new producer's message,
//! never the crashed stream's.
//!
//! Attach counts are per process, so every party is a process: a pool of long-lived workers
//! (this test binary run again in a role) takes one command per round over a pipe, so
//! thousands of rounds fit in a few seconds. `SHMPIPE_RECYCLE_ROUNDS` sets the number of
//! rounds (default 5000) for a longer soak.

mod common;

use std::any::Any;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{
    ROLE_VAR, RawAttach, RemoveOnDrop, SplitMix64, child_role, param, param_opt, unique_key,
};
use shmpipe::{Error, Key, Ring, RingConfig, gc};

/// The key the workers use.
const KEY_VAR: &str = "SHMPIPE_TEST_KEY";
/// The ring file the workers use instead of a key, if set.
const PATH_VAR: &str = "SHMPIPE_TEST_RING_PATH";
/// Rounds to run (default [`DEFAULT_ROUNDS`]).
const ROUNDS_VAR: &str = "SHMPIPE_RECYCLE_ROUNDS";
const DEFAULT_ROUNDS: u32 = 5000;
/// The run stops early after this many failed rounds (each one is reported).
const MAX_FAILURES: usize = 20;
/// Messages the crashed producer left in its ring.
const OLD: usize = 3;
/// Offset of the producer's owner word (LAYOUT.md: producer line at 128, `owner` at +16).
const PRODUCER_OWNER: usize = 128 + 16;
/// A worker that has not answered by then is stuck: the test fails.
const WATCHDOG: Duration = Duration::from_secs(600);

fn config() -> RingConfig {
    RingConfig::new().slot_size(64).slot_count(64)
}

/// The shmid at `key` from `/proc/sysvipc/shm` (no attach: looking must not count as a user).
fn shmid_at(key: Key) -> Option<i32> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").ok()?;
    text.lines().skip(1).find_map(|l| {
        let mut f = l.split_ascii_whitespace();
        let k: i32 = f.next()?.parse().ok()?;
        let id: i32 = f.next()?.parse().ok()?;
        (k == key.raw()).then_some(id)
    })
}

/// Where the workers' ring lives.
enum Place {
    Key(Key),
    File(std::path::PathBuf),
}

impl Place {
    fn open_or_create(&self) -> Result<Ring, Error> {
        match self {
            Place::Key(key) => Ring::open_or_create(*key, &config()),
            Place::File(path) => Ring::open_or_create(path, &config()),
        }
    }
}

/// Spins for `us` microseconds (a sleep would be rounded up to the scheduler's tick).
fn spin(us: u64) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_micros(us) {
        std::hint::spin_loop();
    }
}

// ---------------------------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------------------------

/// A worker: reads one command per line, answers one line starting with `@@ ` (the test
/// harness prints its own lines to the same stdout). The handles a command opened are kept
/// until the next command, so a side stays attached while the parent compares the answers.
fn worker() {
    let place = match param_opt::<String>(PATH_VAR) {
        Some(path) => Place::File(path.into()),
        None => Place::Key(Key::new(param::<i32>(KEY_VAR))),
    };
    let mut held: Vec<Box<dyn Any>> = Vec::new();
    let mut out = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("read a command");
        let f: Vec<u64> = line
            .split_ascii_whitespace()
            .skip(1)
            .map(|w| w.parse().expect("a number"))
            .collect();
        // Last in, first out: the role before its ring.
        while let Some(h) = held.pop() {
            drop(h);
        }
        let reply = match line.split_ascii_whitespace().next() {
            Some("P") => {
                spin(f[1]);
                produce(&place, f[0], &mut held)
            }
            Some("C") => {
                spin(f[1]);
                consume(&place, f[0], &mut held)
            }
            Some("O") => match &place {
                Place::Key(key) => observe(*key, f[1], f[2]),
                Place::File(_) => "done".into(),
            },
            _ => break,
        };
        writeln!(out, "@@ {reply}").expect("answer");
        out.flush().expect("answer");
    }
}

/// A restarted producer: open or create, claim, send `new-<round>`.
fn produce(place: &Place, round: u64, held: &mut Vec<Box<dyn Any>>) -> String {
    let ring = match place.open_or_create() {
        Ok(r) => r,
        Err(e) => return format!("ERR open: {e}"),
    };
    let id = format!("{} {:x}", ring.shmid().unwrap_or(-1), ring.instance_id());
    let mut tx = match ring.producer() {
        Ok(p) => p,
        Err(e) => return format!("ERR {id} claim: {e}"),
    };
    if let Err(e) = tx.send(format!("new-{round}").as_bytes()) {
        return format!("ERR {id} send: {e}");
    }
    held.push(Box::new(ring));
    held.push(Box::new(tx));
    format!("OK {id}")
}

/// A restarted consumer: open or create, claim, receive one message.
fn consume(place: &Place, round: u64, held: &mut Vec<Box<dyn Any>>) -> String {
    let _ = round;
    let ring = match place.open_or_create() {
        Ok(r) => r,
        Err(e) => return format!("ERR open: {e}"),
    };
    let id = format!("{} {:x}", ring.shmid().unwrap_or(-1), ring.instance_id());
    let mut rx = match ring.consumer() {
        Ok(c) => c,
        Err(e) => return format!("ERR {id} claim: {e}"),
    };
    let mut buf = [0u8; 64];
    let got = match rx.recv_timeout(&mut buf, Duration::from_secs(2)) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => return format!("ERR {id} recv: {e}"),
    };
    held.push(Box::new(ring));
    held.push(Box::new(rx));
    format!("OK {id} {got}")
}

/// `iters` looks at whatever is at the key, as `shmpipe stat` and `shmpipe gc` do.
fn observe(key: Key, iters: u64, seed: u64) -> String {
    let mut rng = SplitMix64::new(seed);
    for _ in 0..iters {
        if let Some(id) = shmid_at(key) {
            match rng.below(3) {
                0 => drop(gc::inspect(id)),
                1 => drop(gc::classify_id(id)),
                _ => drop(gc::remove_if_stale(id, &[])),
            }
        }
        spin(rng.below(40));
    }
    "done".into()
}

/// A worker process with pipes to its stdin and stdout; killed and reaped on drop.
struct Worker {
    name: &'static str,
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Worker {
    fn spawn(test: &str, name: &'static str, vars: &[(&str, String)]) -> Worker {
        let exe = std::env::current_exe().expect("path of the test binary");
        let mut cmd = Command::new(exe);
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE_VAR, name)
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: runs in the forked child before exec and only calls prctl, which is
            // async-signal-safe: the child is killed if this test's thread dies.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn a worker");
        let input = child.stdin.take().expect("piped stdin");
        let output = BufReader::new(child.stdout.take().expect("piped stdout"));
        Worker {
            name,
            child,
            input,
            output,
        }
    }

    fn send(&mut self, command: &str) {
        writeln!(self.input, "{command}").expect("command a worker");
        self.input.flush().expect("command a worker");
    }

    fn answer(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.output.read_line(&mut line).expect("read a worker");
            assert!(n > 0, "worker {} exited", self.name);
            // The harness prints `test <name> ... ` without a newline before the first answer.
            if let Some((_, a)) = line.trim_end().split_once("@@ ") {
                return a.to_owned();
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The parent
// ---------------------------------------------------------------------------------------------

/// Leaves a crashed ring at `key`: a producer claimed it, sent [`OLD`] messages and "died" (its
/// owner word names this pid with another start time, which the kernel says is dead), and
/// nobody is attached. `open_or_create` must classify it as a stale orphan and recycle it.
fn crash_ring(key: Key) -> (i32, String) {
    let ring = Ring::create(key, &config()).expect("create the ring to crash");
    let id = ring.shmid().expect("a segment");
    let mut tx = ring.producer().expect("claim the producer");
    for i in 0..OLD {
        tx.send(format!("old-{i}").as_bytes()).expect("send");
    }
    let raw = RawAttach::new(id);
    let me = raw.u64(PRODUCER_OWNER).load(Ordering::SeqCst);
    raw.u64(PRODUCER_OWNER)
        .store(me ^ (1 << 32), Ordering::SeqCst);
    // The producer's drop cannot release a role it no longer holds: the dead holder stays.
    let instance = format!("{:x}", ring.instance_id());
    drop(tx);
    drop(ring);
    drop(raw);
    (id, instance)
}

/// Removes whatever a failed round left at the key.
fn clear_key(key: Key) {
    while let Some(id) = shmid_at(key) {
        match shmpipe::segment::remove_id(id) {
            Ok(()) | Err(Error::NotFound { .. }) => {}
            Err(e) => panic!("cannot clear key {key}: {e}"),
        }
    }
}

/// One side's answer: `OK shmid instance [message]` or `ERR [shmid instance] what`.
#[derive(Debug)]
struct Answer {
    ok: bool,
    ring: Option<(i32, String)>,
    rest: String,
}

fn parse(a: &str) -> Answer {
    let mut w = a.splitn(4, ' ');
    let ok = w.next() == Some("OK");
    let first = w.next().unwrap_or_default();
    let ring = first
        .parse::<i32>()
        .ok()
        .map(|id| (id, w.next().unwrap_or_default().to_owned()));
    let rest = if ring.is_some() {
        w.collect::<Vec<_>>().join(" ")
    } else {
        a.to_owned()
    };
    Answer { ok, ring, rest }
}

#[test]
fn restarts_racing_gc_and_stat_end_on_one_segment() {
    if child_role().is_some() {
        worker();
        return;
    }
    // A stuck worker would hang the read of its answer: abort (the workers die with us).
    let (watchdog, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if rx.recv_timeout(WATCHDOG) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            eprintln!("recycle race: no progress for {WATCHDOG:?}; aborting");
            std::process::abort();
        }
    });
    let rounds: u32 = param_opt(ROUNDS_VAR).unwrap_or(DEFAULT_ROUNDS);
    let key = unique_key();
    let _rm = RemoveOnDrop::key(key);
    let test = "restarts_racing_gc_and_stat_end_on_one_segment";
    let vars = [(KEY_VAR, key.raw().to_string())];
    let mut producer = Worker::spawn(test, "producer", &vars);
    let mut consumer = Worker::spawn(test, "consumer", &vars);
    let mut observers = [
        Worker::spawn(test, "observer-1", &vars),
        Worker::spawn(test, "observer-2", &vars),
    ];
    race(
        "segment",
        rounds,
        &mut producer,
        &mut consumer,
        &mut observers,
        || {
            clear_key(key);
            crash_ring(key)
        },
    );
    for w in [&mut producer, &mut consumer]
        .into_iter()
        .chain(observers.iter_mut())
    {
        w.send("Q");
    }
    drop((producer, consumer, observers));
    clear_key(key);
    drop(watchdog);
    let lock = lock_path(key);
    assert!(
        !std::path::Path::new(&lock).exists(),
        "lock file {lock} left behind"
    );
}

/// Runs `rounds` restarts: `crash` leaves a crashed ring at the place (returning its identity:
/// shmid, or -1 for a file, and instance id), then the observers, the producer and the
/// consumer are set off together. Prints what happened and fails if any round went wrong.
fn race(
    what: &str,
    rounds: u32,
    producer: &mut Worker,
    consumer: &mut Worker,
    observers: &mut [Worker],
    mut crash: impl FnMut() -> (i32, String),
) {
    let mut rng = SplitMix64::new(0x5eed_0012);
    let (mut split, mut joined_crash, mut other) = (0u32, 0u32, 0u32);
    let mut failures = Vec::new();
    let started = Instant::now();
    let mut ran = 0;
    for round in 0..rounds {
        let crashed = crash();
        for o in observers.iter_mut() {
            o.send(&format!(
                "O {round} {} {}",
                4 + rng.below(12),
                rng.next_u64()
            ));
        }
        producer.send(&format!("P {round} {}", rng.below(150)));
        consumer.send(&format!("C {round} {}", rng.below(150)));
        let (p, c) = (producer.answer(), consumer.answer());
        for o in observers.iter_mut() {
            o.answer();
        }
        ran += 1;
        let (pa, ca) = (parse(&p), parse(&c));
        let want = format!("new-{round}");
        let fine = pa.ok && ca.ok && pa.ring == ca.ring && ca.rest == want;
        if fine {
            continue;
        }
        let on_crashed = |a: &Answer| a.ring.as_ref() == Some(&crashed);
        if pa.ring.is_some() && ca.ring.is_some() && pa.ring != ca.ring {
            split += 1;
        } else if on_crashed(&pa) || on_crashed(&ca) || ca.rest.starts_with("old-") {
            joined_crash += 1;
        } else {
            other += 1;
        }
        failures.push(format!(
            "round {round} (crashed ring {crashed:?}): producer [{p}], consumer [{c}]"
        ));
        if failures.len() >= MAX_FAILURES {
            break;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "recycle race ({what}): {ran} rounds in {elapsed:.1?}: {split} split across two rings, \
         {joined_crash} joined the crashed ring, {other} other failures"
    );
    for f in &failures {
        println!("  {f}");
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} rounds failed ({split} split, {joined_crash} joined the crashed ring, \
         {other} other): see above",
        failures.len()
    );
}

/// Leaves a crashed ring file at `path`, as [`crash_ring`] does at a key (the owner word is
/// rewritten through the file).
fn crash_file(path: &std::path::Path) -> (i32, String) {
    use std::os::unix::fs::FileExt;
    let ring = Ring::create(path, &config()).expect("create the ring file to crash");
    let instance = format!("{:x}", ring.instance_id());
    let mut tx = ring.producer().expect("claim the producer");
    for i in 0..OLD {
        tx.send(format!("old-{i}").as_bytes()).expect("send");
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open the ring file");
    let mut word = [0u8; 8];
    file.read_exact_at(&mut word, PRODUCER_OWNER as u64)
        .expect("read the owner");
    let dead = u64::from_le_bytes(word) ^ (1 << 32);
    file.write_all_at(&dead.to_le_bytes(), PRODUCER_OWNER as u64)
        .expect("write the owner");
    drop(tx);
    drop(ring);
    (-1, instance)
}

#[test]
fn file_restarts_end_on_one_file() {
    if child_role().is_some() {
        worker();
        return;
    }
    let rounds: u32 = param_opt(ROUNDS_VAR).unwrap_or(DEFAULT_ROUNDS / 2);
    let path = common::temp_path("recycled-ring");
    let _rm = common::RemoveFile(path.clone());
    let test = "file_restarts_end_on_one_file";
    let vars = [(PATH_VAR, path.display().to_string())];
    let mut producer = Worker::spawn(test, "producer", &vars);
    let mut consumer = Worker::spawn(test, "consumer", &vars);
    race(
        "file",
        rounds,
        &mut producer,
        &mut consumer,
        &mut [],
        || {
            let _ = std::fs::remove_file(&path);
            crash_file(&path)
        },
    );
    producer.send("Q");
    consumer.send("Q");
    drop((producer, consumer));
    let _ = std::fs::remove_file(&path);
    let mut lock = std::ffi::OsString::from(".");
    lock.push(path.file_name().expect("a file name"));
    lock.push(".shmpipe-lock");
    let lock = path.with_file_name(lock);
    assert!(!lock.exists(), "lock file {lock:?} left behind");
}

/// The lock file of a key (docs/DESIGN.md, "Recycling a key").
fn lock_path(key: Key) -> String {
    format!("/dev/shm/.shmpipe-key-{:08x}.lock", key.raw() as u32)
}

/// Holds the key's lock exclusively, as a recycler does, until killed.
fn hold_lock(key: Key) {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path(key))
        .expect("open the lock file");
    // SAFETY: flock on a descriptor that `file` owns and keeps open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    println!("@@ held");
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_recycler_that_dies_holding_the_lock_does_not_wedge_the_key() {
    if child_role().is_some() {
        hold_lock(Key::new(param::<i32>(KEY_VAR)));
        return;
    }
    let key = unique_key();
    let _rm = RemoveOnDrop::key(key);
    let (crashed, _) = crash_ring(key);
    let mut holder = Worker::spawn(
        "a_recycler_that_dies_holding_the_lock_does_not_wedge_the_key",
        "holder",
        &[(KEY_VAR, key.raw().to_string())],
    );
    assert_eq!(holder.answer(), "held");
    // Stuck holder: a typed error after the documented wait, not a hang, and nothing removed.
    let t = Instant::now();
    match Ring::open_or_create(key, &config()) {
        Err(Error::Locked { waited, .. }) => assert!(waited >= Duration::from_secs(1)),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(
        shmid_at(key),
        Some(crashed),
        "nothing recycled without the lock"
    );
    // gc skips it too rather than wait.
    assert!(!gc::remove_if_stale(crashed, &[]));
    // The holder dies (SIGKILL; reaped): the kernel releases its lock, and the key recycles.
    drop(holder);
    let ring = Ring::open_or_create(key, &config()).expect("recycle after the holder died");
    assert_ne!(ring.shmid(), Some(crashed), "the crashed ring was recycled");
    let mut tx = ring.producer().expect("a fresh producer role");
    tx.send(b"fresh").unwrap();
    drop(tx);
    drop(ring);
    // The dead holder's lock file was unlinked by the next holder: nothing is left.
    assert!(!std::path::Path::new(&lock_path(key)).exists());
    clear_key(key);
}
