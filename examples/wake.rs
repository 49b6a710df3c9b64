//! What sleeping costs: shmpipe's wake-up latency and peer-death detection, between two real
//! processes, against a raw futex wake-up between the same two processes.
//!
//! Run it with `cargo run --release --example wake`. It takes about seven seconds.
//!
//! Like `demo`, it re-executes itself as a child process (selected by the `SHMPIPE_WAKE_ROLE`
//! environment variable) and pins parent and child to different CPUs when it may use two or
//! more. In one run, with 64-byte messages and the blocking `send`/`recv`, it measures:
//!
//! 1. **busy ping-pong**: round trips over two rings (parent to child, child to parent), the
//!    child echoing every message at once, both sides with the default
//!    [`WaitStrategy::SpinThenSleep`]; the peer is always spinning, so no futex call is expected;
//! 2. **asleep ping-pong**: the same, but the parent waits 2 ms before every ping, long enough
//!    for the echoing child to spin, yield and fall asleep on the futex, so every ping has to
//!    wake it with `FUTEX_WAKE`; with `SpinThenSleep` on both sides, then with
//!    [`WaitStrategy::Sleep`] on both sides;
//! 3. **raw futex round trip**, the floor for (2): two `u32` words in a small SysV segment,
//!    shared (not `FUTEX_PRIVATE_FLAG`) futexes; the parent sets word A and wakes it, the child
//!    (asleep on A) sets word B and wakes the parent (asleep on B); the same 2 ms gap; and the
//!    same again with each side reading the other's `/proc/PID/stat` after every futex wait,
//!    which is what the library's liveness check adds to a wake-up. The four modes of (2) and
//!    (3) run interleaved, in ten blocks in a rotating order, so that drift in the machine's
//!    state (other load, the host's scheduling of the vCPUs) hits them all alike;
//! 4. **peer-death detection**: a fresh child claims the producer role of a fresh ring and
//!    sleeps; the parent blocks in `recv`; a timer thread SIGKILLs the child 20 ms (plus a sweep
//!    of 0 to 9.5 ms, to sample every phase of the library's 10 ms sleep slice) after the
//!    parent started waiting; the time from the `kill` call to `recv` returning
//!    [`RecvError::PeerDied`], with the parent waiting with `SpinThenSleep`, then with `Spin`.
//!
//! It also prints the [`shmpipe::wait::futex_calls`] deltas of both processes over the measured
//! round trips (and, for the busy ping-pong, how many round trips made any and the longest run
//! of such), and as diagnostics the cost of reading `/proc/PID/stat` (back to back, and after
//! 2 ms asleep, as after a wake-up) and how long a blocked `recv` with `SpinThenSleep` spins and
//! yields before its first futex call.
//!
//! Every segment is created with [`Key::Private`] and marked for removal (`IPC_RMID`) at once,
//! so nothing is left in `ipcs -m` whatever happens; the children are killed and reaped if the
//! parent fails, and ask the kernel to kill them if it dies (`PR_SET_PDEATHSIG`).

use std::io::{Read, Write};
use std::process::{ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use shmpipe::{
    Consumer, Heap, Key, Producer, RecvError, Ring, RingConfig, Segment, Shmid, WaitStrategy,
};

mod common;
use common::{
    ChildGuard, MSG, Res, allowed_cpus, fmt_duration, is_message, message, pin_to, print_flush,
};

/// Busy round trips before the measured ones.
const BUSY_WARMUP: u64 = 2_000;
/// Measured busy round trips.
const BUSY_ROUNDS: u64 = 20_000;
/// Measured round trips with a gap, per mode (two shmpipe strategies, two raw futex ones).
const ASLEEP_ROUNDS: u64 = 500;
/// The modes with a gap take turns in this many blocks.
const ASLEEP_BLOCKS: u64 = 10;
/// Round trips with a gap before the measured ones of each block.
const BLOCK_WARMUP: u64 = 2;
/// The parent's pause before each "asleep" ping: far longer than the child's spin and yield
/// phases (200 spins and 20 `sched_yield`s), far shorter than the 10 ms sleep slice.
const GAP: Duration = Duration::from_millis(2);
/// Peer-death trials per wait strategy.
const DEATH_TRIALS: u32 = 20;
/// The child is killed this long after the parent starts waiting...
const KILL_AFTER: Duration = Duration::from_millis(20);
/// ...plus `trial * KILL_STEP`, so the 20 trials spread over one 10 ms sleep slice.
const KILL_STEP: Duration = Duration::from_micros(500);
/// Timed back-to-back reads of `/proc/PID/stat` (a diagnostic).
const PROC_READS: u32 = 1_000;
/// Timed reads of `/proc/PID/stat`, each after `GAP` asleep (a diagnostic).
const PROC_READS_AFTER_GAP: u32 = 200;
/// Timed waits of the spin-and-yield budget (a diagnostic).
const SPIN_TRIALS: u32 = 50;
/// The environment variable that makes the re-executed binary a child, and which one.
const ROLE_ENV: &str = "SHMPIPE_WAKE_ROLE";
/// The whole run is abandoned after this long: something hangs.
const DEADLINE: Duration = Duration::from_secs(60);
/// How long one raw futex wait lasts before the waiter checks on its peer.
const FUTEX_SLICE: Duration = Duration::from_millis(100);

/// Control messages (any length but `MSG`): the command byte, then an argument byte. The
/// child answers each with the command byte and its own `futex_calls()` (8 bytes, LE).
const CTL_MARK: u8 = b'M';
/// Set the child's wait strategy (both its producer and its consumer) to the argument.
const CTL_STRATEGY: u8 = b'S';
/// Switch to the raw futex protocol until word A holds `FUTEX_QUIT`.
const CTL_FUTEX: u8 = b'F';
/// Exit.
const CTL_QUIT: u8 = b'Q';
/// The value of word A that ends the raw futex phase.
const FUTEX_QUIT: u32 = u32::MAX;

fn main() -> Res<()> {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("echo") => echo_child(),
        Ok("producer") => producer_child(),
        _ => parent_main(),
    }
}

// ---------------------------------------------------------------------------------------------
// Messages and strategies

fn strategy_code(s: WaitStrategy) -> u8 {
    match s {
        WaitStrategy::Spin => 0,
        WaitStrategy::SpinThenSleep => 1,
        WaitStrategy::Sleep => 2,
    }
}

fn strategy_from(code: u8) -> Res<WaitStrategy> {
    match code {
        0 => Ok(WaitStrategy::Spin),
        1 => Ok(WaitStrategy::SpinThenSleep),
        2 => Ok(WaitStrategy::Sleep),
        _ => Err(format!("no wait strategy {code}").into()),
    }
}

// ---------------------------------------------------------------------------------------------
// CPUs (as in demo.rs)

/// Pins the calling thread to the CPU named by a child's argument (`-`: none).
fn pin_arg(cpu: &str) -> Res<()> {
    if cpu != "-" {
        pin_to(cpu.parse()?)?;
    }
    Ok(())
}

fn cpu_arg(cpu: Option<usize>) -> String {
    cpu.map_or_else(|| "-".to_string(), |c| c.to_string())
}

// ---------------------------------------------------------------------------------------------
// Raw shared futexes

/// Two futex words in a SysV segment: A (parent to child) at offset 0 and B (child to parent)
/// at offset 64, on separate cache lines as the ring's event words are.
struct FutexWords {
    seg: Segment,
}

impl FutexWords {
    fn word(&self, offset: usize) -> &AtomicU32 {
        assert!(offset + 4 <= self.seg.len() && offset % 4 == 0);
        // SAFETY: the segment is attached (page-aligned) for as long as `self.seg` lives, which
        // the returned borrow cannot outlive; `offset` is 4-aligned and inside it (asserted).
        // AtomicU32 has the layout of u32, the kernel zero-filled the memory, and the other
        // process only ever accesses these words atomically (or through the futex syscall).
        unsafe { AtomicU32::from_ptr(self.seg.as_ptr().add(offset).cast::<u32>()) }
    }

    fn a(&self) -> &AtomicU32 {
        self.word(0)
    }

    fn b(&self) -> &AtomicU32 {
        self.word(64)
    }
}

/// `FUTEX_WAIT` (shared) on `word` while it holds `expected`, for at most `timeout`.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned 32-bit word that outlives the call, and `ts` a valid
    // relative timeout; FUTEX_WAIT only reads the word. The last two arguments are ignored.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &raw const ts,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
    // Woken, value changed (EAGAIN), signal or timeout: the caller re-checks in every case.
}

/// `FUTEX_WAKE` (shared) of everyone asleep on `word`.
fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned 32-bit word; FUTEX_WAKE only hashes its address. The
    // last three arguments are ignored.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The parent

impl ChildGuard {
    fn spawn(role: &str, args: &[String]) -> Res<ChildGuard> {
        let child = Command::new(std::env::current_exe()?)
            .env(ROLE_ENV, role)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        Ok(ChildGuard::new(child))
    }

    /// Waits for the one byte the child writes on its stdout once it is ready.
    fn await_ready(&mut self) -> Res<ChildStdout> {
        let mut out = self.child.stdout.take().ok_or("no child stdout")?;
        let mut ready = [0u8; 1];
        out.read_exact(&mut ready)
            .map_err(|e| format!("the child did not start: {e}"))?;
        Ok(out)
    }
}

/// One way of doing the "asleep" round trip.
#[derive(Clone, Copy)]
enum Mode {
    /// Over the rings, both sides waiting with this strategy.
    Shm(WaitStrategy),
    /// Raw futexes; with `liveness`, each side reads the other's `/proc/PID/stat` after every
    /// futex wait, as the library does.
    Raw { liveness: bool },
}

impl Mode {
    fn index(self) -> usize {
        match self {
            Mode::Shm(WaitStrategy::SpinThenSleep) => 0,
            Mode::Shm(_) => 1,
            Mode::Raw { liveness: false } => 2,
            Mode::Raw { liveness: true } => 3,
        }
    }
}

/// Median and p99 (nearest rank) of samples in nanoseconds, and the maximum.
struct Stats {
    n: usize,
    median: Duration,
    p99: Duration,
    max: Duration,
}

fn stats(mut ns: Vec<u64>) -> Stats {
    ns.sort_unstable();
    let rank = |p: f64| {
        let i = ((p * ns.len() as f64).ceil() as usize).clamp(1, ns.len()) - 1;
        Duration::from_nanos(ns[i])
    };
    Stats {
        n: ns.len(),
        median: rank(0.50),
        p99: rank(0.99),
        max: Duration::from_nanos(*ns.last().unwrap_or(&0)),
    }
}

/// One round-trip measurement and the futex calls each process made during it.
struct RttResult {
    stats: Stats,
    parent_futex: u64,
    child_futex: u64,
    /// Round trips during which the parent made at least one futex call.
    with_calls: u64,
    /// The longest run of consecutive such round trips.
    longest_run: u64,
}

/// The parent's ends of the two rings to the echoing child.
struct Echo {
    tx: Producer,
    rx: Consumer,
    seq: u64,
}

impl Echo {
    /// One timed round trip.
    fn ping(&mut self) -> Res<Duration> {
        let msg = message(self.seq);
        let mut buf = [0u8; MSG];
        let t0 = Instant::now();
        self.tx
            .send(&msg)
            .map_err(|e| format!("ping {}: {e}", self.seq))?;
        let n = self.rx.recv(&mut buf)?;
        let dt = t0.elapsed();
        if !is_message(&buf[..n], self.seq) {
            return Err(format!("pong {} came back wrong", self.seq).into());
        }
        self.seq += 1;
        Ok(dt)
    }

    /// Sends a control message and returns the child's futex-call count from its answer.
    fn ctl(&mut self, cmd: u8, arg: u8) -> Res<u64> {
        self.tx
            .send(&[cmd, arg])
            .map_err(|e| format!("control {}: {e}", cmd as char))?;
        let mut buf = [0u8; MSG];
        let n = self.rx.recv(&mut buf)?;
        if n != 9 || buf[0] != cmd {
            return Err(format!("bad answer to control {}", cmd as char).into());
        }
        Ok(u64::from_le_bytes(buf[1..9].try_into()?))
    }

    /// Both processes wait with `s` from now on.
    fn set_strategy(&mut self, s: WaitStrategy) -> Res<()> {
        self.tx.set_wait_strategy(s);
        self.rx.set_wait_strategy(s);
        self.ctl(CTL_STRATEGY, strategy_code(s))?;
        Ok(())
    }

    /// `warmup` then `rounds` timed round trips, each after `gap` if given, added to `acc`.
    fn measure(
        &mut self,
        warmup: u64,
        rounds: u64,
        gap: Option<Duration>,
        acc: &mut Acc,
    ) -> Res<()> {
        for _ in 0..warmup {
            if let Some(g) = gap {
                std::thread::sleep(g);
            }
            self.ping()?;
        }
        // Right after a round trip, so the child is still spinning and the marks themselves
        // cost no futex call.
        let child0 = self.ctl(CTL_MARK, 0)?;
        let parent0 = shmpipe::wait::futex_calls();
        let mut run = 0;
        for _ in 0..rounds {
            if let Some(g) = gap {
                std::thread::sleep(g);
            }
            // Outside the timed part of `ping`.
            let before = shmpipe::wait::futex_calls();
            acc.samples.push(self.ping()?.as_nanos() as u64);
            if shmpipe::wait::futex_calls() != before {
                acc.with_calls += 1;
                run += 1;
                acc.longest_run = acc.longest_run.max(run);
            } else {
                run = 0;
            }
        }
        let parent1 = shmpipe::wait::futex_calls();
        let child1 = self.ctl(CTL_MARK, 0)?;
        acc.parent_futex += parent1 - parent0;
        acc.child_futex += child1 - child0;
        Ok(())
    }
}

/// Round-trip samples and futex-call counts, gathered over one or more blocks.
#[derive(Default)]
struct Acc {
    samples: Vec<u64>,
    parent_futex: u64,
    child_futex: u64,
    with_calls: u64,
    longest_run: u64,
}

impl Acc {
    fn finish(self) -> RttResult {
        RttResult {
            stats: stats(self.samples),
            parent_futex: self.parent_futex,
            child_futex: self.child_futex,
            with_calls: self.with_calls,
            longest_run: self.longest_run,
        }
    }
}

/// Reads `/proc/PID/stat`, as the library's liveness check does after every futex sleep.
fn read_proc_stat(pid: u32) -> Res<()> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    std::hint::black_box(text);
    Ok(())
}

/// The raw futex round trips; the child must have been told (`CTL_FUTEX`, with the same
/// `liveness` flag) to switch to the futex protocol. With `liveness`, each side reads the
/// other's `/proc/PID/stat` after every futex wait, as the library does.
/// `warmup` then `rounds` round trips, each after `GAP`; the samples go to `acc`.
fn raw_futex(
    words: &FutexWords,
    child: &mut ChildGuard,
    started: Instant,
    liveness: bool,
    (warmup, rounds): (u64, u64),
    acc: &mut Acc,
) -> Res<()> {
    let (a, b) = (words.a(), words.b());
    let child_pid = child.child.id();
    // Waits until the child has copied `v` to B.
    let mut await_b = |v: u32, t0: Instant| -> Res<()> {
        loop {
            let seen = b.load(Ordering::Acquire);
            if seen == v {
                return Ok(());
            }
            futex_wait(b, seen, FUTEX_SLICE);
            if liveness {
                read_proc_stat(child_pid)?;
            }
            if t0.elapsed() >= FUTEX_SLICE {
                child.check_alive()?;
                if started.elapsed() > DEADLINE {
                    return Err("timed out waiting for the child's futex wake".into());
                }
            }
        }
    };
    for v in 1..=(warmup + rounds) as u32 {
        std::thread::sleep(GAP);
        let t0 = Instant::now();
        a.store(v, Ordering::Release);
        futex_wake(a);
        await_b(v, t0)?;
        let dt = t0.elapsed();
        if u64::from(v) > warmup {
            acc.samples.push(dt.as_nanos() as u64);
        }
    }
    // The child acknowledges the end on B too, so the words may be reset after this.
    a.store(FUTEX_QUIT, Ordering::Release);
    futex_wake(a);
    await_b(FUTEX_QUIT, Instant::now())
}

/// One peer-death trial: a fresh ring and producer child, killed `delay` after we start
/// waiting in `recv` with `strategy`. Returns the time from `kill` to `PeerDied`.
fn death_trial(strategy: WaitStrategy, delay: Duration, child_cpu: Option<usize>) -> Res<Duration> {
    let ring = Ring::create(Key::Private, &RingConfig::new())?;
    ring.remove()?;
    let shmid = ring.shmid().ok_or("ring has no shmid")?;
    let mut rx = ring.consumer()?;
    rx.set_wait_strategy(strategy);
    let mut child = ChildGuard::spawn(
        "producer",
        &[
            shmid.to_string(),
            cpu_arg(child_cpu),
            std::process::id().to_string(),
        ],
    )?;
    let _out = child.await_ready()?;
    let pid = child.child.id();

    let start = Instant::now();
    let killer = std::thread::spawn(move || -> Result<Instant, String> {
        // The child sleeps on its CPU: run there, not beside a parent that may be spinning.
        if let Some(cpu) = child_cpu {
            pin_to(cpu)?;
        }
        std::thread::sleep((start + delay).saturating_duration_since(Instant::now()));
        let t = Instant::now();
        // SAFETY: kill takes plain integers; `pid` is our unreaped child, so it cannot have
        // been reused by another process.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        if rc != 0 {
            return Err(format!("kill: {}", std::io::Error::last_os_error()));
        }
        Ok(t)
    });
    let mut buf = [0u8; MSG];
    let got = rx.recv(&mut buf);
    let returned = Instant::now();
    let killed = killer.join().map_err(|_| "the killer thread panicked")??;
    child.wait()?;
    match got {
        Err(RecvError::PeerDied { pid: p }) if p == pid => {}
        other => return Err(format!("recv returned {other:?}, expected PeerDied({pid})").into()),
    }
    if returned < killed {
        return Err("recv returned before the kill".into());
    }
    Ok(returned - killed)
}

/// What reading `/proc/PID/stat` costs (the library's liveness check after every futex sleep):
/// back to back, or each after `gap` asleep (as after a wake-up).
fn proc_stat_cost(pid: u32, reads: u32, gap: Option<Duration>) -> Res<Stats> {
    let mut samples = Vec::with_capacity(reads as usize);
    for _ in 0..reads {
        if let Some(g) = gap {
            std::thread::sleep(g);
        }
        let t0 = Instant::now();
        read_proc_stat(pid)?;
        samples.push(t0.elapsed().as_nanos() as u64);
    }
    Ok(stats(samples))
}

/// How long a blocked `recv` with `SpinThenSleep` spins and yields before its first futex
/// call: a consumer of an empty in-process ring waits, and a watcher thread on another CPU
/// (pinned to `watch_cpu`) notes when this process's `futex_calls()` moves, then sends a
/// message to end the wait.
fn spin_budget(watch_cpu: usize) -> Res<Stats> {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let mut samples = Vec::with_capacity(SPIN_TRIALS as usize);
    let mut buf = [0u8; MSG];
    for _ in 0..SPIN_TRIALS {
        let ring = Ring::create(Heap, &RingConfig::new().slot_count(64))?;
        let mut tx = ring.producer()?;
        let mut rx = ring.consumer()?;
        let before = shmpipe::wait::futex_calls();
        let ready = Arc::new(AtomicBool::new(false));
        let watcher = {
            let ready = ready.clone();
            std::thread::spawn(
                move || -> Result<Instant, Box<dyn std::error::Error + Send + Sync>> {
                    pin_to(watch_cpu)?;
                    ready.store(true, Ordering::Release);
                    let give_up = Instant::now() + Duration::from_secs(5);
                    while shmpipe::wait::futex_calls() == before {
                        std::hint::spin_loop();
                        if Instant::now() > give_up {
                            return Err("the waiter never made a futex call".into());
                        }
                    }
                    let first_call = Instant::now();
                    tx.try_send(b"x")?;
                    Ok(first_call)
                },
            )
        };
        while !ready.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        let t0 = Instant::now();
        let got = rx.recv_timeout(&mut buf, Duration::from_secs(10));
        let first_call = watcher
            .join()
            .map_err(|_| "the watcher panicked")?
            .map_err(|e| -> Box<dyn std::error::Error> { e })?;
        if got != Ok(1) {
            return Err(format!("spin budget: recv returned {got:?}").into());
        }
        samples.push(first_call.saturating_duration_since(t0).as_nanos() as u64);
    }
    Ok(stats(samples))
}

fn parent_main() -> Res<()> {
    let started = Instant::now();
    // Whatever hangs, the run ends: the children die with us (PR_SET_PDEATHSIG) and every
    // segment is already marked for removal.
    std::thread::spawn(|| {
        std::thread::sleep(DEADLINE);
        eprintln!("wake: still running after {DEADLINE:?}: giving up");
        std::process::exit(2);
    });

    let config = RingConfig::new();
    let down = Ring::create(Key::Private, &config)?;
    // IPC_RMID at once: the kernel keeps the memory while anyone is attached, and Linux still
    // lets the child attach by shmid. From here on nothing can leak, whoever crashes.
    down.remove()?;
    let up = Ring::create(Key::Private, &config)?;
    up.remove()?;
    let futex_seg = Segment::create(Key::Private, 4096, 0o600)?;
    futex_seg.remove()?;
    let down_id = down.shmid().ok_or("ring has no shmid")?;
    let up_id = up.shmid().ok_or("ring has no shmid")?;
    let futex_id = futex_seg.shmid();
    let words = FutexWords { seg: futex_seg };

    let cpus = allowed_cpus();
    let (parent_cpu, child_cpu) = match cpus.as_slice() {
        [a, b, ..] => (Some(*a), Some(*b)),
        _ => (None, None),
    };

    let mut child = ChildGuard::spawn(
        "echo",
        &[
            down_id.to_string(),
            up_id.to_string(),
            futex_id.to_string(),
            cpu_arg(child_cpu),
            std::process::id().to_string(),
        ],
    )?;
    if let Some(cpu) = parent_cpu {
        pin_to(cpu)?;
    }
    let mut echo = Echo {
        tx: down.producer()?,
        rx: up.consumer()?,
        seq: 0,
    };
    let _out = child.await_ready()?;

    println!("shmpipe wake: sleeping and waking between two processes, {MSG}-byte messages");
    println!(
        "  processes  parent pid {}, echoing child pid {}",
        std::process::id(),
        child.child.id()
    );
    match (parent_cpu, child_cpu) {
        (Some(p), Some(c)) => println!(
            "  CPUs       parent pinned to CPU {p}, children to CPU {c} ({} CPUs allowed)",
            cpus.len()
        ),
        _ => println!("  CPUs       NOTE: only one CPU available, so no pinning"),
    }
    println!(
        "  rings      two (one per direction), {} slots x {} bytes, Key::Private, removed at \
         creation",
        down.slot_count(),
        down.slot_size()
    );
    println!(
        "  library    SpinThenSleep = 200 spins, 20 sched_yields, then futex sleeps of at most \
         {:?}",
        shmpipe::wait::SLEEP_SLICE
    );
    println!();

    print_flush("busy ping-pong ... ");
    echo.set_strategy(WaitStrategy::SpinThenSleep)?;
    let mut busy = Acc::default();
    echo.measure(BUSY_WARMUP, BUSY_ROUNDS, None, &mut busy)?;
    let busy = busy.finish();

    // The four "asleep" modes run interleaved, in blocks, in a rotating order: the machine's
    // state drifts (other load, host scheduling), and this way all four see the same drift.
    print_flush("asleep: shmpipe and raw futex, interleaved ... ");
    let mut modes = [
        Mode::Shm(WaitStrategy::SpinThenSleep),
        Mode::Shm(WaitStrategy::Sleep),
        Mode::Raw { liveness: false },
        Mode::Raw { liveness: true },
    ];
    let mut accs: [Acc; 4] = Default::default();
    let per_block = ASLEEP_ROUNDS / ASLEEP_BLOCKS;
    for _ in 0..ASLEEP_BLOCKS {
        for mode in modes {
            let acc = &mut accs[mode.index()];
            match mode {
                Mode::Shm(strategy) => {
                    echo.set_strategy(strategy)?;
                    echo.measure(BLOCK_WARMUP, per_block, Some(GAP), acc)?;
                }
                Mode::Raw { liveness } => {
                    // The child ignores the words outside the futex phase; both start from 0.
                    words.a().store(0, Ordering::Relaxed);
                    words.b().store(0, Ordering::Relaxed);
                    echo.ctl(CTL_FUTEX, u8::from(liveness))?;
                    let rounds = (BLOCK_WARMUP, per_block);
                    raw_futex(&words, &mut child, started, liveness, rounds, acc)?;
                }
            }
        }
        modes.rotate_left(1);
    }
    let [asleep, asleep_sleep, raw, raw_proc] = accs.map(Acc::finish);
    echo.set_strategy(WaitStrategy::SpinThenSleep)?;
    print_flush("diagnostics ... ");
    let diag = Diagnostics {
        proc_warm: proc_stat_cost(child.child.id(), PROC_READS, None)?,
        proc_after_gap: proc_stat_cost(child.child.id(), PROC_READS_AFTER_GAP, Some(GAP))?,
        // The watcher must run beside the spinner, not take turns with it.
        spin_budget: child_cpu.map(spin_budget).transpose()?,
    };
    echo.ctl(CTL_QUIT, 0)?;
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("the echoing child failed ({status})").into());
    }
    drop(echo);

    let mut deaths = Vec::new();
    for strategy in [WaitStrategy::SpinThenSleep, WaitStrategy::Spin] {
        print_flush(&format!("peer death ({strategy:?}) ... "));
        let mut samples = Vec::new();
        for i in 0..DEATH_TRIALS {
            let delay = KILL_AFTER + KILL_STEP * i;
            samples.push(death_trial(strategy, delay, child_cpu)?.as_nanos() as u64);
        }
        deaths.push((strategy, stats(samples)));
    }
    println!("done in {:.1} s", started.elapsed().as_secs_f64());

    print_tables(
        &busy,
        &asleep,
        &asleep_sleep,
        &[raw.stats, raw_proc.stats],
        &deaths,
        &diag,
    );
    Ok(())
}

/// The diagnostics behind the wake-up numbers.
struct Diagnostics {
    proc_warm: Stats,
    proc_after_gap: Stats,
    /// `None` on one CPU, where it cannot be measured.
    spin_budget: Option<Stats>,
}

fn print_tables(
    busy: &RttResult,
    asleep: &RttResult,
    asleep_sleep: &RttResult,
    futex: &[Stats],
    deaths: &[(WaitStrategy, Stats)],
    diag: &Diagnostics,
) {
    let gap = GAP.as_millis();
    let header = |title: &str, extra: &str| {
        println!(
            "{title:<50} {:>6} {:>10} {:>10} {:>10}   {extra}",
            "n", "median", "p99", "max"
        );
    };
    let row = |name: &str, s: &Stats, extra: &str| {
        println!(
            "{name:<50} {:>6} {:>10} {:>10} {:>10}   {extra}",
            s.n,
            fmt_duration(s.median),
            fmt_duration(s.p99),
            fmt_duration(s.max),
        );
    };
    let calls = |r: &RttResult| {
        format!(
            "{:>5} / {:<5} ({:.2} / {:.2})",
            r.parent_futex,
            r.child_futex,
            r.parent_futex as f64 / r.stats.n as f64,
            r.child_futex as f64 / r.stats.n as f64
        )
    };
    println!();
    header(
        "round trip, 64 B (both sides' wait strategy)",
        "futex calls parent / child (per round trip)",
    );
    row(
        "shmpipe, peer busy (SpinThenSleep)",
        &busy.stats,
        &calls(busy),
    );
    row(
        &format!("shmpipe, peer asleep, {gap} ms gap (SpinThenSleep)"),
        &asleep.stats,
        &calls(asleep),
    );
    row(
        &format!("shmpipe, peer asleep, {gap} ms gap (Sleep)"),
        &asleep_sleep.stats,
        &calls(asleep_sleep),
    );
    row(
        &format!("raw shared futex, {gap} ms gap (the floor)"),
        &futex[0],
        "1 / 1 wake, 1 / 1 wait (by construction)",
    );
    row(
        "raw futex + /proc/PID/stat read after each wait",
        &futex[1],
        "(what the library adds after every sleep)",
    );
    println!();
    header("kill -> recv returns PeerDied (parent's strategy)", "");
    for (strategy, s) in deaths {
        row(&format!("{strategy:?}"), s, "");
    }
    println!();
    header("diagnostics", "");
    row("read /proc/PID/stat, back to back", &diag.proc_warm, "");
    row(
        &format!("read /proc/PID/stat, each after {gap} ms asleep"),
        &diag.proc_after_gap,
        "",
    );
    match &diag.spin_budget {
        Some(budget) => row(
            "SpinThenSleep: recv's spin+yield before 1st futex",
            budget,
            "(empty in-process ring)",
        ),
        None => {
            println!("SpinThenSleep: recv's spin+yield before 1st futex: not measured on one CPU")
        }
    }
    println!();
    let pct = |r: &RttResult| 100.0 * r.with_calls as f64 / r.stats.n as f64;
    println!(
        "busy ping-pong: {} of {} round trips ({:.1}%) made futex calls in the parent; the longest \
         run of\nconsecutive ones was {} round trips.",
        busy.with_calls,
        busy.stats.n,
        pct(busy),
        busy.longest_run,
    );
    println!(
        "asleep - floor (medians): {} with SpinThenSleep ({:.1}x), {} with Sleep ({:.1}x); \
         the floor\nplus a /proc read after each wait: {} ({:.1}x).",
        fmt_signed(asleep.stats.median, futex[0].median),
        ratio(asleep.stats.median, futex[0].median),
        fmt_signed(asleep_sleep.stats.median, futex[0].median),
        ratio(asleep_sleep.stats.median, futex[0].median),
        fmt_signed(futex[1].median, futex[0].median),
        ratio(futex[1].median, futex[0].median),
    );
    println!(
        "Round trip: one {MSG}-byte message there and back with blocking send/recv, timed around \
         both;\nraw futex: a store + FUTEX_WAKE each way, both sides asleep in FUTEX_WAIT, same \
         two processes.\nFutex calls: shmpipe::wait::futex_calls() deltas over the measured \
         round trips, per process.\nPeerDied: from the kill(SIGKILL) call to recv returning; \
         kills at {} ms + 0..{} ms after the\nparent started waiting, to sample every phase of \
         the library's {} ms sleep slice.",
        KILL_AFTER.as_millis(),
        (KILL_STEP * (DEATH_TRIALS - 1)).as_secs_f64() * 1e3,
        shmpipe::wait::SLEEP_SLICE.as_millis(),
    );
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// `a - b`, signed.
fn fmt_signed(a: Duration, b: Duration) -> String {
    if a >= b {
        format!("+{}", fmt_duration(a - b))
    } else {
        format!("-{}", fmt_duration(b - a))
    }
}

// ---------------------------------------------------------------------------------------------
// The children

/// Dies with the parent, whatever kills it; fails if it is already gone.
fn die_with_parent(parent: &str) -> Res<()> {
    let parent: u32 = parent.parse()?;
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if rc != 0 || std::os::unix::process::parent_id() != parent {
        return Err("child: the parent is already gone".into());
    }
    Ok(())
}

/// Echoes pings, obeys control messages (see `CTL_*`).
fn echo_child() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [down_id, up_id, futex_id, cpu, parent] = args.as_slice() else {
        return Err("echo child: expected DOWN UP FUTEX_SHMID CPU|- PARENT_PID".into());
    };
    die_with_parent(parent)?;
    pin_arg(cpu)?;
    let mut rx = Ring::open(Shmid(down_id.parse()?), &RingConfig::new())?.consumer()?;
    let mut tx = Ring::open(Shmid(up_id.parse()?), &RingConfig::new())?.producer()?;
    let words = FutexWords {
        seg: Segment::attach_id(futex_id.parse()?)?,
    };
    std::io::stdout().write_all(b"R")?;
    std::io::stdout().flush()?;

    let mut buf = [0u8; MSG];
    loop {
        let n = rx.recv(&mut buf)?;
        if n == MSG {
            tx.send(&buf[..n]).map_err(|e| format!("echo child: {e}"))?;
            continue;
        }
        let (cmd, arg) = match buf[..n] {
            [cmd, arg] => (cmd, arg),
            _ => return Err(format!("echo child: bad control message of {n} bytes").into()),
        };
        if cmd == CTL_STRATEGY {
            let s = strategy_from(arg)?;
            rx.set_wait_strategy(s);
            tx.set_wait_strategy(s);
        }
        let mut answer = [0u8; 9];
        answer[0] = cmd;
        answer[1..].copy_from_slice(&shmpipe::wait::futex_calls().to_le_bytes());
        tx.send(&answer).map_err(|e| format!("echo child: {e}"))?;
        match cmd {
            CTL_FUTEX => futex_echo(&words, arg != 0)?,
            CTL_QUIT => return Ok(()),
            CTL_MARK | CTL_STRATEGY => {}
            _ => return Err(format!("echo child: unknown control {}", cmd as char).into()),
        }
    }
}

/// The child's half of the raw futex round trip: asleep on A, answers each new value on B;
/// with `liveness`, reads the parent's `/proc/PID/stat` after every futex wait.
fn futex_echo(words: &FutexWords, liveness: bool) -> Res<()> {
    let (a, b) = (words.a(), words.b());
    let parent = std::os::unix::process::parent_id();
    // The parent resets A to 0 before CTL_FUTEX and writes it only after our answer.
    let mut last = 0;
    loop {
        let v = a.load(Ordering::Acquire);
        if v == last {
            futex_wait(a, last, FUTEX_SLICE);
            if liveness {
                read_proc_stat(parent)?;
            }
            if std::os::unix::process::parent_id() != parent {
                return Err("echo child: the parent died".into());
            }
            continue;
        }
        last = v;
        b.store(v, Ordering::Release);
        futex_wake(b);
        if v == FUTEX_QUIT {
            return Ok(());
        }
    }
}

/// Claims the producer role of the given ring, says so, and sleeps until killed.
fn producer_child() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [shmid, cpu, parent] = args.as_slice() else {
        return Err("producer child: expected SHMID CPU|- PARENT_PID".into());
    };
    die_with_parent(parent)?;
    pin_arg(cpu)?;
    let _tx = Ring::open(Shmid(shmid.parse()?), &RingConfig::new())?.producer()?;
    std::io::stdout().write_all(b"R")?;
    std::io::stdout().flush()?;
    // The parent kills us within a second; never outlive a minute regardless.
    std::thread::sleep(DEADLINE);
    Err("producer child: never killed".into())
}
