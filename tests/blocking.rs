//! Blocking send and receive, close, timeouts, segment lifetime and `gc`, between real
//! processes (a private futex, a wake-up that only reaches threads, would pass between
//! threads; these tests put the two sides in two processes).
//!
//! The other process is this test binary run again (see `common::ChildProcess`): a test
//! function started with `SHMPIPE_TEST_ROLE` set runs that role (see [`run_child_role`])
//! instead of its body. A child reports numbers back by printing `RESULT name=value` lines,
//! which the parent reads from its log.
//!
//! Covered (numbers refer to the failure cases of RELIABILITY.md): lost wake-ups under stress
//! (4), wake-up latency across processes (5), no system call in steady state, timeouts and
//! signals, close and end of stream in both directions, a stopped peer is not a dead one,
//! segment lifetime and keys (10, 13, 14), permissions (15) and `gc` (17); and a consumer that
//! wakes to find its producer dead must still receive what it published (1, 3).
//!
//! Timing-sensitive tests take the [`TIMING`] lock so they do not run at the same time as each
//! other (the machine may have two cores); tests that create stale segments or run `gc` take
//! [`STALE`], because `gc` removes every stale segment on the system.
//!
//! Bounds on time come in two strengths (`common::timing`): the default suite asserts that
//! deadlines are honoured, nothing stalls and no wake-up is lost, with bounds a busy machine
//! meets or measured against a [`SchedProbe`] calibration taken at the same time; the timing
//! suite (`SHMPIPE_TIMING=1`) asserts the latency figures themselves.
//!
//! The lost-wakeup stress sends the 10^7 messages RELIABILITY.md asks for with the default
//! strategy in the timing suite (20-45 s on two cores), 10^6 in the default suite, and
//! [`STRESS_MESSAGES_SLEEP`] with `WaitStrategy::Sleep`, where every wait is a futex call (10^7
//! would take 130-290 s); `SHMPIPE_STRESS_MESSAGES` sets the count of both.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::timing::{SchedProbe, bound, size, timing_suite};
use common::{
    ChildProcess, RemoveOnDrop, SplitMix64, check_msg, child_result, child_role, fill_msg,
    find_result, monotonic_ns, msg_len, param, param_opt, print_result, process_state,
    signal_process, stamp, unique_key, unstamp, wait_all_outputs,
};
use shmpipe::gc::{self, Class};
use shmpipe::wait::futex_calls;
use shmpipe::{
    Error, HEADER_SIZE, Key, MAGIC, RecvError, Ring, RingConfig, Role, Segment, SendError, Shmid,
    TryRecvError, TrySendError, WaitStrategy,
};

/// No child may take longer, whatever goes wrong.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on waits for a child to reach some point.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Messages of the lost-wakeup stress with the default strategy (about 2-4.5 µs each), in the
/// timing suite and the default suite.
const STRESS_MESSAGES: [u64; 2] = [10_000_000, 1_000_000];
/// Messages of the lost-wakeup stress with `WaitStrategy::Sleep` (about 13-29 µs each).
const STRESS_MESSAGES_SLEEP: [u64; 2] = [1_000_000, 200_000];
/// Longest a single blocking `send` or `recv` of the stress may take. RELIABILITY.md's target
/// is 100 ms, and on a quiet two-core machine the longest call is about 10 ms; but with other
/// work on the machine both processes were seen starved for up to 137 ms at once (while
/// making only one or two futex calls, so not asleep on the ring), hence the margin (and the
/// default suite's `timing::LOADED`).
const STALL_BOUND: Duration = Duration::from_millis(500);
/// Most calls of one side of the stress that may take 9 ms or more, per million messages
/// (at least 10). A lost wake-up costs the sleeper one 10 ms sleep slice (after which it
/// re-checks), so it shows as such a call, not as a hang; a machine that stops both processes
/// now and then makes a few too. A busy machine makes thousands (both processes preempted by
/// other work for 10 ms and more, most often while not asleep on the ring at all), so the
/// default suite counts them only when the sides' [`SchedProbe`]s saw the machine quiet.
const SLOW_CALLS_PER_MILLION: u64 = 50;
/// The default suite's stress: at least this share of its messages, and more until
/// [`STRESS_BUDGET`] has passed (on a busy machine the default strategy's spinning sides were
/// seen 20 times slower than on a quiet one).
const STRESS_MIN_SHARE: u64 = 10;
/// See [`STRESS_MIN_SHARE`].
const STRESS_BUDGET: Duration = Duration::from_secs(15);
/// Bound on the 99th percentile of the wake-up latency of a sleeping consumer, in the timing
/// suite (a spinning consumer preempted by other work was seen at 58 ms, while a sleeping
/// [`SchedProbe`] beside it stayed under 5 ms; the default suite bounds it by
/// `timing::LOADED` and counts the futex sleeps).
const WAKE_P99_BOUND: Duration = Duration::from_millis(10);
/// Bound on how late a timed wait may return after its deadline (the default suite:
/// `timing::LOADED`; never before it, in both).
const OVERSHOOT_BOUND: Duration = Duration::from_millis(10);
/// Messages of the futex-counting streams.
const SPIN_MESSAGES: u64 = 1_000_000;

/// Serialises the tests whose numbers depend on having the machine to themselves.
static TIMING: Mutex<()> = Mutex::new(());
/// Serialises the tests that leave stale segments around (briefly, on purpose) with the test
/// that runs `gc`, which would remove them.
static STALE: Mutex<()> = Mutex::new(());

/// Held while this process forks a child, and while a test looks at attach counts. A forked
/// child holds copies of all of its parent's attachments until it executes the test binary,
/// so a fork by one test while another test has a segment attached for a moment (`gc`,
/// `classify_id` and `open_or_create` attach what they examine) makes that segment look in
/// use (which errs on the safe side, but is not what the test expects).
static FORK: Mutex<()> = Mutex::new(());

fn lock(m: &'static Mutex<()>) -> MutexGuard<'static, ()> {
    // A test that failed while holding the lock does not make the others fail.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// [`ChildProcess::spawn`], under the [`FORK`] lock (`spawn` returns once the child has
/// executed the test binary, which drops the attachments it inherited).
fn spawn_child(test: &str, role: &str, vars: &[(&str, String)]) -> ChildProcess {
    let _fork = lock(&FORK);
    ChildProcess::spawn(test, role, vars)
}

/// Runs `f`, which depends on attach counts, while no child is being forked.
fn no_fork<R>(f: impl FnOnce() -> R) -> R {
    let _fork = lock(&FORK);
    f()
}

// ---------------------------------------------------------------------------------------------
// Parameters passed to children
// ---------------------------------------------------------------------------------------------

const SHMID_VAR: &str = "SHMPIPE_TEST_SHMID";
const SHMID2_VAR: &str = "SHMPIPE_TEST_SHMID2";
const KEY_VAR: &str = "SHMPIPE_TEST_KEY";
const COUNT_VAR: &str = "SHMPIPE_TEST_COUNT";
const SEED_VAR: &str = "SHMPIPE_TEST_SEED";
const STRATEGY_VAR: &str = "SHMPIPE_TEST_STRATEGY";
const WORK_VAR: &str = "SHMPIPE_TEST_WORK_NS";
const PAUSES_VAR: &str = "SHMPIPE_TEST_PAUSES";
const DELAY_VAR: &str = "SHMPIPE_TEST_DELAY_MS";
const GO_VAR: &str = "SHMPIPE_TEST_GO_FILE";
const MIN_VAR: &str = "SHMPIPE_TEST_MIN_COUNT";
const BUDGET_VAR: &str = "SHMPIPE_TEST_BUDGET_MS";

fn strategy_name(s: WaitStrategy) -> &'static str {
    match s {
        WaitStrategy::Spin => "spin",
        WaitStrategy::SpinThenSleep => "spin-then-sleep",
        WaitStrategy::Sleep => "sleep",
    }
}

fn parse_strategy(s: &str) -> WaitStrategy {
    match s {
        "spin" => WaitStrategy::Spin,
        "spin-then-sleep" => WaitStrategy::SpinThenSleep,
        "sleep" => WaitStrategy::Sleep,
        other => panic!("unknown strategy {other:?}"),
    }
}

fn var(name: &'static str, value: impl ToString) -> (&'static str, String) {
    (name, value.to_string())
}

/// The ring a child was given: by shmid if it has one, else by key.
fn ring_from_env() -> Ring {
    match param_opt::<i32>(SHMID_VAR) {
        Some(id) => Ring::open(Shmid(id), &RingConfig::new()),
        None => Ring::open(Key::new(param(KEY_VAR)), &RingConfig::new()),
    }
    .unwrap_or_else(|e| panic!("child: attaching the ring: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// A ring with no key (reached by shmid), removed when the guard drops.
fn private_ring(cfg: &RingConfig) -> (Ring, RemoveOnDrop) {
    let ring = Ring::create(Key::Private, cfg).expect("create a private ring");
    let guard = RemoveOnDrop::ring(&ring);
    (ring, guard)
}

/// `slot_count` slots of 64 bytes.
fn cfg(slot_count: u32) -> RingConfig {
    RingConfig::new().slot_size(64).slot_count(slot_count)
}

/// Polls `cond` every millisecond until it holds; fails if `child` exits first or it takes
/// longer than [`SETUP_TIMEOUT`].
fn wait_until(what: &str, child: &mut ChildProcess, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    while !cond() {
        child.assert_running();
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until `child` has printed `RESULT name=...` and returns the value; fails if it exits
/// without printing it.
fn wait_result(child: &mut ChildProcess, name: &str) -> String {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        let out = child.output();
        if let Some(v) = find_result(&out, name) {
            return v;
        }
        if child.try_status().is_some() {
            panic!("the child exited without RESULT {name}; its output:\n{out}");
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for RESULT {name}:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until the kernel reports `pid` stopped (after a SIGSTOP).
fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    while process_state(pid) != Some('T') {
        assert!(Instant::now() < deadline, "pid {pid} never stopped");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Busy-waits for `d` (a pause that keeps the CPU, unlike a sleep).
fn spin_for(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// The `p`-th percentile (0..=100) of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    assert!(!sorted.is_empty());
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i]
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Measures a call that must return no earlier than `timeout` after `start`; returns by how
/// much it overshot.
fn overshoot(what: &str, start: Instant, timeout: Duration) -> Duration {
    let took = start.elapsed();
    assert!(
        took >= timeout,
        "{what}: returned after {took:?}, before its deadline of {timeout:?}"
    );
    took - timeout
}

// ---------------------------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------------------------

/// If this process is a child, runs its role and returns true.
fn run_child_role() -> bool {
    let Some(role) = child_role() else {
        return false;
    };
    match role.as_str() {
        "stress-producer" => stress_producer(),
        "stress-consumer" => stress_consumer(),
        "stamp-producer" => stamp_producer(),
        "count-producer" => count_producer(),
        "count-consumer" => count_consumer(),
        "hold" => hold(),
        "send-and-exit" => send_and_exit(),
        "recv-then-close" => recv_then_close(),
        "claim-send-close" => claim_send_close(),
        "consumer-first" => consumer_first(),
        "slow-producer" => slow_producer(),
        "slow-consumer" => slow_consumer(),
        "late-creator" => late_creator(),
        "die-mid-init" => die_mid_init(),
        "other-uid" => other_uid(),
        "sleepy-consumer" => sleepy_consumer(),
        "go-producer" => go_producer(),
        other => panic!("unknown role {other:?}"),
    }
    true
}

/// How long blocking calls of one side took.
#[derive(Default)]
struct Blocked {
    max: Duration,
    over_1ms: u64,
    over_5ms: u64,
    over_9ms: u64,
    /// Calls that took 5 ms or more: (sequence number, CLOCK_MONOTONIC start in µs, duration
    /// in µs, futex calls made during the call), the first 50 of them. A lost wake-up would
    /// show as a call of one 10 ms sleep slice, with one futex call, while the peer is not
    /// stalled; a machine that stops both processes shows as calls of both sides at the same
    /// time, often with no futex call at all.
    long: Vec<(u64, u64, u64, u64)>,
}

impl Blocked {
    /// Times one blocking call.
    fn time<R>(&mut self, seq: u64, f: impl FnOnce() -> R) -> R {
        let (start, futex0) = (Instant::now(), futex_calls());
        let r = f();
        let d = start.elapsed();
        self.max = self.max.max(d);
        self.over_1ms += u64::from(d >= Duration::from_millis(1));
        self.over_5ms += u64::from(d >= Duration::from_millis(5));
        self.over_9ms += u64::from(d >= Duration::from_millis(9));
        if d >= Duration::from_millis(5) && self.long.len() < 50 {
            let start_us = (monotonic_ns() - d.as_nanos() as u64) / 1000;
            self.long
                .push((seq, start_us, d.as_micros() as u64, futex_calls() - futex0));
        }
        r
    }

    fn print(&self) {
        print_result("max_blocked_ns", self.max.as_nanos());
        print_result("over_1ms", self.over_1ms);
        print_result("over_5ms", self.over_5ms);
        print_result("over_9ms", self.over_9ms);
        let long: Vec<String> = self
            .long
            .iter()
            .map(|(seq, s, d, f)| format!("#{seq}@{s}+{d}us/{f}f"))
            .collect();
        print_result("long_calls", long.join(" "));
    }
}

/// A random pause before some operations of the stress, so that each side often finds the
/// other asleep: a short sleep (at least the timer slack, ~50 µs: long enough for the peer to
/// run out of spins and yields and sleep on the futex) or a busy pause of up to 20 µs.
/// `per_mille` is how many operations in 1000 pause (half sleeping, half spinning).
fn random_pause(rng: &mut SplitMix64, per_mille: u64) {
    let r = rng.below(2000);
    if r < per_mille {
        std::thread::sleep(Duration::from_micros(rng.range(1, 100) as u64));
    } else if r < 2 * per_mille {
        spin_for(Duration::from_nanos(rng.range(100, 20_000) as u64));
    }
}

const PRODUCER_SALT: u64 = 0x7072_6f64;
const CONSUMER_SALT: u64 = 0x636f_6e73;

/// Stress producer: sends the checked message stream with blocking `send`, pausing at random:
/// `COUNT` messages, or fewer (at least `MIN`) once `BUDGET_MS` have passed; then reports how
/// many and closes.
fn stress_producer() {
    let ring = ring_from_env();
    let count: u64 = param(COUNT_VAR);
    let min: u64 = param(MIN_VAR);
    let budget = Duration::from_millis(param(BUDGET_VAR));
    let seed: u64 = param(SEED_VAR);
    let pauses: u64 = param(PAUSES_VAR);
    let mut tx = ring.producer().expect("claim the producer");
    tx.set_wait_strategy(parse_strategy(&param::<String>(STRATEGY_VAR)));
    let max = tx.max_message();
    let mut rng = SplitMix64::new(seed ^ PRODUCER_SALT);
    let mut buf = vec![0u8; max];
    let mut blocked = Blocked::default();
    let probe = SchedProbe::start();
    let futex0 = futex_calls();
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < count && (sent < min || t0.elapsed() < budget) {
        let seq = sent;
        random_pause(&mut rng, pauses);
        let len = msg_len(seed, seq, max);
        fill_msg(seed, seq, &mut buf[..len]);
        if let Err(e) = blocked.time(seq, || tx.send(&buf[..len])) {
            panic!("send of message {seq}: {e}");
        }
        sent += 1;
    }
    print_result("elapsed_ms", t0.elapsed().as_millis());
    print_result("sent", sent);
    print_result("futex", futex_calls() - futex0);
    blocked.print();
    print_probe(probe);
}

/// Stress consumer: receives and checks the stream with blocking `recv`, pausing at random,
/// up to its end, and reports how many messages it received.
fn stress_consumer() {
    let ring = ring_from_env();
    let seed: u64 = param(SEED_VAR);
    let pauses: u64 = param(PAUSES_VAR);
    let mut rx = ring.consumer().expect("claim the consumer");
    rx.set_wait_strategy(parse_strategy(&param::<String>(STRATEGY_VAR)));
    let max = rx.max_message();
    let mut rng = SplitMix64::new(seed ^ CONSUMER_SALT);
    let mut buf = vec![0u8; max];
    let mut scratch = Vec::new();
    let mut blocked = Blocked::default();
    let probe = SchedProbe::start();
    let futex0 = futex_calls();
    let t0 = Instant::now();
    let mut seq = 0;
    loop {
        random_pause(&mut rng, pauses);
        let n = match blocked.time(seq, || rx.recv(&mut buf)) {
            Ok(n) => n,
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("recv of message {seq}: {e}"),
        };
        if let Err(e) = check_msg(seed, seq, max, &buf[..n], &mut scratch) {
            panic!("consumer: {e}");
        }
        seq += 1;
    }
    print_result("elapsed_ms", t0.elapsed().as_millis());
    print_result("received", seq);
    print_result("futex", futex_calls() - futex0);
    blocked.print();
    print_probe(probe);
}

/// Reports what a stress side's [`SchedProbe`] saw: how often the scheduler alone held up a
/// waiting thread of this process for 9 ms or more.
fn print_probe(probe: SchedProbe) {
    let cal = probe.stop();
    print_result("probe", cal.to_string());
    print_result("probe_quiet", cal.quiet());
}

/// Sends `count` stamped messages with a random 2-5 ms between them, then closes.
fn stamp_producer() {
    let ring = ring_from_env();
    let count: u64 = param(COUNT_VAR);
    let mut tx = ring.producer().expect("claim the producer");
    let mut rng = SplitMix64::new(param(SEED_VAR));
    for seq in 0..count {
        std::thread::sleep(Duration::from_micros(rng.range(2_000, 5_000) as u64));
        tx.send(&stamp(seq)).expect("send");
    }
}

/// Sends the checked stream with blocking `send` and no pause, and reports its futex calls.
fn count_producer() {
    let ring = ring_from_env();
    let count: u64 = param(COUNT_VAR);
    let seed: u64 = param(SEED_VAR);
    let mut tx = ring.producer().expect("claim the producer");
    tx.set_wait_strategy(parse_strategy(&param::<String>(STRATEGY_VAR)));
    let max = tx.max_message();
    let mut buf = vec![0u8; max];
    let futex0 = futex_calls();
    let t0 = Instant::now();
    for seq in 0..count {
        let len = msg_len(seed, seq, max);
        fill_msg(seed, seq, &mut buf[..len]);
        if let Err(e) = tx.send(&buf[..len]) {
            // The state of the ring says who closed or died, should this ever fail.
            panic!(
                "send of message {seq}: {e} (ring {:?}, {:?})",
                ring.status(),
                shmpipe::gc::inspect(ring.shmid().unwrap_or(-1))
            );
        }
    }
    print_result("elapsed_ms", t0.elapsed().as_millis());
    print_result("futex", futex_calls() - futex0);
}

/// Receives and checks the stream with blocking `recv`, working `WORK_NS` per message, and
/// reports its futex calls.
fn count_consumer() {
    let ring = ring_from_env();
    let count: u64 = param(COUNT_VAR);
    let seed: u64 = param(SEED_VAR);
    let work = Duration::from_nanos(param(WORK_VAR));
    let mut rx = ring.consumer().expect("claim the consumer");
    rx.set_wait_strategy(parse_strategy(&param::<String>(STRATEGY_VAR)));
    let max = rx.max_message();
    let mut buf = vec![0u8; max];
    let mut scratch = Vec::new();
    let futex0 = futex_calls();
    let t0 = Instant::now();
    for seq in 0..count {
        let n = rx.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "recv of message {seq}: {e} (ring {:?}, {:?})",
                ring.status(),
                shmpipe::gc::inspect(ring.shmid().unwrap_or(-1))
            )
        });
        if let Err(e) = check_msg(seed, seq, max, &buf[..n], &mut scratch) {
            panic!("consumer: {e}");
        }
        if !work.is_zero() {
            spin_for(work);
        }
    }
    print_result("elapsed_ms", t0.elapsed().as_millis());
    print_result("futex", futex_calls() - futex0);
    // Spinning, the end of stream comes as soon as the producer lets go of its role.
    assert_eq!(rx.recv(&mut buf), Err(RecvError::Disconnected));
}

/// Claims the producer of its ring (and the consumer of the ring `SHMID2`, if given), says
/// so, and idles until killed (at most a minute).
fn hold() {
    let ring = ring_from_env();
    let _tx = ring.producer().expect("claim the producer");
    let other = param_opt::<i32>(SHMID2_VAR)
        .map(|id| Ring::open(Shmid(id), &RingConfig::new()).expect("open ring 2"));
    let _rx = other
        .as_ref()
        .map(|r| r.consumer().expect("claim the consumer"));
    print_result("holding", 1);
    std::thread::sleep(Duration::from_secs(60));
}

/// Sends `COUNT` checked messages with blocking `send`, then closes and exits.
fn send_and_exit() {
    let ring = ring_from_env();
    let count: u64 = param(COUNT_VAR);
    let seed: u64 = param(SEED_VAR);
    let mut tx = ring.producer().expect("claim the producer");
    let max = tx.max_message();
    for seq in 0..count {
        tx.send(&common::make_msg(seed, seq, max))
            .unwrap_or_else(|e| panic!("send of message {seq}: {e}"));
    }
    drop(tx);
    print_result("sent", count);
}

/// Receives `COUNT` checked messages, waits `DELAY_MS` (the parent fills the ring and blocks in
/// `send` meanwhile), notes the time and closes.
fn recv_then_close() {
    let ring = ring_from_env();
    let count: u64 = param(COUNT_VAR);
    let seed: u64 = param(SEED_VAR);
    let mut rx = ring.consumer().expect("claim the consumer");
    let max = rx.max_message();
    let mut buf = vec![0u8; max];
    let mut scratch = Vec::new();
    for seq in 0..count {
        let n = rx.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "recv of message {seq}: {e} (ring {:?}, {:?})",
                ring.status(),
                shmpipe::gc::inspect(ring.shmid().unwrap_or(-1))
            )
        });
        check_msg(seed, seq, max, &buf[..n], &mut scratch).unwrap();
    }
    std::thread::sleep(Duration::from_millis(param(DELAY_VAR)));
    let t = monotonic_ns();
    drop(rx);
    print_result("closed_ns", t);
}

/// `COUNT` rounds of: claim the producer, send message `i`, wait `DELAY_MS`, note the time,
/// close, and wait for the parent's acknowledgement on ring `SHMID2` (so the parent has seen
/// the end of this producer's stream before the next one claims the role).
fn claim_send_close() {
    let ring = ring_from_env();
    let acks = Ring::open(Shmid(param(SHMID2_VAR)), &RingConfig::new()).expect("open the ack ring");
    let mut ack_rx = acks.consumer().expect("claim the ack consumer");
    let rounds: u64 = param(COUNT_VAR);
    let delay = Duration::from_millis(param(DELAY_VAR));
    let mut buf = [0u8; 8];
    for i in 0..rounds {
        let mut tx = ring.producer().expect("claim the producer");
        tx.send(&i.to_le_bytes()).expect("send");
        std::thread::sleep(delay);
        let t = monotonic_ns();
        drop(tx);
        print_result(&format!("closed_ns_{i}"), t);
        let n = ack_rx
            .recv_timeout(&mut buf, Duration::from_secs(10))
            .expect("the parent's acknowledgement");
        assert_eq!(&buf[..n], &i.to_le_bytes());
    }
}

/// Opens the ring by key and claims the consumer before any producer ever attached: a timed
/// receive must time out (not end the stream). Then receives the parent's message.
fn consumer_first() {
    let ring = ring_from_env();
    let mut rx = ring.consumer().expect("claim the consumer");
    let mut buf = [0u8; 64];
    assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Empty));
    for s in [
        WaitStrategy::Spin,
        WaitStrategy::SpinThenSleep,
        WaitStrategy::Sleep,
    ] {
        rx.set_wait_strategy(s);
        let t = Instant::now();
        assert_eq!(
            rx.recv_timeout(&mut buf, Duration::from_millis(30)),
            Err(RecvError::Timeout),
            "{s:?}"
        );
        overshoot("recv_timeout", t, Duration::from_millis(30));
        assert!(matches!(
            rx.lend_timeout(Duration::from_millis(10)),
            Err(RecvError::Timeout)
        ));
    }
    print_result("timed_out", 1);
    let n = rx
        .recv_timeout(&mut buf, Duration::from_secs(10))
        .expect("the parent's message");
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(
        rx.recv_timeout(&mut buf, Duration::from_secs(10)),
        Err(RecvError::Disconnected)
    );
}

/// Sends `COUNT` numbered messages, one per millisecond, then closes.
fn slow_producer() {
    let ring = ring_from_env();
    let count: u64 = param(COUNT_VAR);
    let mut tx = ring.producer().expect("claim the producer");
    for seq in 0..count {
        tx.send(&seq.to_le_bytes()).expect("send");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Receives `COUNT` numbered messages, one per millisecond, then expects the end of stream.
fn slow_consumer() {
    let ring = ring_from_env();
    let count: u64 = param(COUNT_VAR);
    let mut rx = ring.consumer().expect("claim the consumer");
    let mut buf = [0u8; 8];
    for seq in 0..count {
        let n = rx.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "recv of message {seq}: {e} (ring {:?}, {:?})",
                ring.status(),
                shmpipe::gc::inspect(ring.shmid().unwrap_or(-1))
            )
        });
        assert_eq!(&buf[..n], &seq.to_le_bytes());
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(rx.recv(&mut buf), Err(RecvError::Disconnected));
}

/// A 32-bit word of an attached segment, as an atomic.
fn word32(seg: &Segment, off: usize) -> &AtomicU32 {
    assert!(off % 4 == 0 && off + 4 <= seg.len());
    // SAFETY: the offset is 4-aligned (the attachment is page-aligned) and the word lies inside
    // the segment, which stays attached while `seg` is borrowed; every process reaches these
    // words only through atomics.
    unsafe { AtomicU32::from_ptr(seg.as_ptr().add(off).cast()) }
}

/// A 64-bit word of an attached segment, as an atomic.
fn word64(seg: &Segment, off: usize) -> &AtomicU64 {
    assert!(off % 8 == 0 && off + 8 <= seg.len());
    // SAFETY: as in `word32`, with 8-byte alignment and size.
    unsafe { AtomicU64::from_ptr(seg.as_ptr().add(off).cast()) }
}

/// Offset of the ready word in the configuration line (LAYOUT.md).
const READY_OFFSET: usize = 60;
/// The ready word's value once the header is complete (`RDY!`).
const READY: u32 = 0x2159_4452;

/// Plays a slow creator of the zeroed segment at `KEY`: writes the magic at once, the rest of
/// a valid header (taken from a ring it creates for the purpose) after `DELAY_MS`, and the
/// ready word last, with Release.
fn late_creator() {
    let seg = Segment::open(Key::new(param(KEY_VAR))).expect("open the zeroed segment");
    word64(&seg, 0).store(MAGIC, Ordering::Relaxed);
    let template = Ring::create(Key::Private, &cfg(8)).expect("create the template ring");
    let _rm = RemoveOnDrop::ring(&template);
    let src = template.segment().unwrap();
    std::thread::sleep(Duration::from_millis(param(DELAY_VAR)));
    for off in (8..HEADER_SIZE).step_by(4).filter(|&o| o != READY_OFFSET) {
        word32(&seg, off).store(word32(src, off).load(Ordering::Relaxed), Ordering::Relaxed);
    }
    print_result("instance_id", template.instance_id());
    word32(&seg, READY_OFFSET).store(READY, Ordering::Release);
}

/// Plays a creator that dies mid-initialisation: creates the segment at `KEY`, writes the
/// magic and exits.
fn die_mid_init() {
    let key = Key::new(param(KEY_VAR));
    let size = HEADER_SIZE + 64 * 8;
    let seg = Segment::create(key, size, 0o600).expect("create the segment");
    word64(&seg, 0).store(MAGIC, Ordering::Relaxed);
    print_result("shmid", seg.shmid());
}

/// Drops root privileges to `nobody` and tries to open the ring at `KEY` (shmid `SHMID2`).
fn other_uid() {
    const NOBODY: u32 = 65534;
    // SAFETY: plain system calls changing this process's credentials; group first, since
    // without root we could not change it any more.
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0, "setgroups");
        assert_eq!(libc::setgid(NOBODY), 0, "setgid");
        assert_eq!(libc::setuid(NOBODY), 0, "setuid");
    }
    // SAFETY: getters without preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    assert_eq!((uid, gid), (NOBODY, NOBODY));
    let key = Key::new(param(KEY_VAR));
    let shmid: i32 = param(SHMID2_VAR);
    match Ring::open(key, &RingConfig::new()) {
        Err(Error::PermissionDenied { .. }) => {}
        other => panic!("Ring::open as nobody: expected PermissionDenied, got {other:?}"),
    }
    match Ring::open(Shmid(shmid), &RingConfig::new()) {
        Err(Error::PermissionDenied { .. }) => {}
        other => panic!(
            "Ring::open(Shmid, &RingConfig::new()) as nobody: expected PermissionDenied, got {other:?}"
        ),
    }
    match Ring::open_or_create(key, &cfg(8)) {
        Err(Error::PermissionDenied { .. }) => {}
        other => panic!("open_or_create as nobody: expected PermissionDenied, got {other:?}"),
    }
    match shmpipe::segment::remove_id(shmid) {
        Err(Error::PermissionDenied { .. }) => {}
        other => panic!("remove as nobody: expected PermissionDenied, got {other:?}"),
    }
    // gc as nobody neither sees nor removes root's ring.
    let entries = gc::gc(false).expect("gc as nobody");
    assert!(entries.iter().all(|e| e.stat.shmid != shmid || !e.removed));
    print_result("refused", 1);
}

/// Claims the consumer, says which thread will wait, and waits in `recv` (sleeping on the
/// futex), then reports what `recv` returned and what a second `try_recv` finds.
fn sleepy_consumer() {
    let ring = ring_from_env();
    let mut rx = ring.consumer().expect("claim the consumer");
    rx.set_wait_strategy(WaitStrategy::Sleep);
    // SAFETY: gettid has no preconditions.
    print_result("tid", unsafe { libc::gettid() });
    let mut buf = [0u8; 64];
    let first = match rx.recv_timeout(&mut buf, Duration::from_secs(30)) {
        Ok(n) => format!("ok:{}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => format!("err:{e:?}"),
    };
    let second = match rx.try_recv(&mut buf) {
        Ok(n) => format!("ok:{}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => format!("err:{e:?}"),
    };
    print_result("first", first);
    print_result("second", second);
}

/// Claims the producer, waits for the file `GO_FILE` to exist, sends one message and idles
/// until killed.
fn go_producer() {
    let ring = ring_from_env();
    let mut tx = ring.producer().expect("claim the producer");
    print_result("holding", 1);
    let go: String = param(GO_VAR);
    let deadline = Instant::now() + SETUP_TIMEOUT;
    while !std::path::Path::new(&go).exists() {
        assert!(Instant::now() < deadline, "no go");
        std::thread::sleep(Duration::from_millis(1));
    }
    tx.send(b"last words").expect("send");
    print_result("sent", 1);
    std::thread::sleep(Duration::from_secs(60));
}

// ---------------------------------------------------------------------------------------------
// 1. Lost-wakeup stress (RELIABILITY case 4)
// ---------------------------------------------------------------------------------------------

/// What one side of a stress run reported.
struct SideReport {
    elapsed_ms: u64,
    futex: u64,
    max_blocked: Duration,
    over_1ms: u64,
    over_5ms: u64,
    over_9ms: u64,
    probe_quiet: bool,
}

impl SideReport {
    fn parse(out: &str) -> SideReport {
        SideReport {
            elapsed_ms: child_result(out, "elapsed_ms"),
            futex: child_result(out, "futex"),
            max_blocked: Duration::from_nanos(child_result(out, "max_blocked_ns")),
            over_1ms: child_result(out, "over_1ms"),
            over_5ms: child_result(out, "over_5ms"),
            over_9ms: child_result(out, "over_9ms"),
            probe_quiet: child_result(out, "probe_quiet"),
        }
    }
}

/// Streams `full` (timing suite) or `default` checked messages (or `SHMPIPE_STRESS_MESSAGES`) from a producer
/// child to a consumer child through an 8-slot ring, both with `strategy` and both pausing
/// before 8 in 1000 operations (`SHMPIPE_STRESS_PAUSES`; half short sleeps, half busy
/// pauses), and checks how long the longest blocking call took and how many took 9 ms or
/// more (see [`SLOW_CALLS_PER_MILLION`]).
fn stress(test: &str, strategy: WaitStrategy, seed: u64, [full, default]: [u64; 2]) {
    let _serial = lock(&TIMING);
    let count = param_opt::<u64>("SHMPIPE_STRESS_MESSAGES").unwrap_or(size(full, default));
    // The timing suite sends them all, the default suite until its budget is spent.
    let (min, budget) = if timing_suite() {
        (count, CHILD_TIMEOUT)
    } else {
        (count / STRESS_MIN_SHARE, STRESS_BUDGET)
    };
    let pauses = param_opt::<u64>("SHMPIPE_STRESS_PAUSES").unwrap_or(8);
    // Eight slots: messages of up to 120 bytes take two, plus padding at the wrap, so the ring
    // is full or empty nearly all the time.
    let (ring, _rm) = private_ring(&cfg(8).max_message(120));
    let vars = [
        var(SHMID_VAR, ring.shmid().unwrap()),
        var(COUNT_VAR, count),
        var(SEED_VAR, seed),
        var(STRATEGY_VAR, strategy_name(strategy)),
        var(PAUSES_VAR, pauses),
        var(MIN_VAR, min),
        var(BUDGET_VAR, budget.as_millis()),
    ];
    let consumer = spawn_child(test, "stress-consumer", &vars);
    let producer = spawn_child(test, "stress-producer", &vars);
    let t0 = Instant::now();
    let outs = wait_all_outputs(vec![consumer, producer], CHILD_TIMEOUT);
    let took = t0.elapsed();
    let (c, p) = (SideReport::parse(&outs[0]), SideReport::parse(&outs[1]));
    let sent: u64 = child_result(&outs[1], "sent");
    let received: u64 = child_result(&outs[0], "received");
    assert_eq!(received, sent, "messages received and sent");
    assert!(sent >= min, "{sent} messages sent, fewer than {min}");
    let count = sent;
    eprintln!(
        "{test}: {count} messages in {took:.2?} ({:.2} µs/message; 10^7 would take {:.0} s); \
         producer: {} ms, longest send {}, sends >= 1/5/9 ms: {}/{}/{}, {:.3} futex calls/msg; \
         consumer: {} ms, longest recv {}, recvs >= 1/5/9 ms: {}/{}/{}, {:.3} futex calls/msg",
        took.as_secs_f64() * 1e6 / count as f64,
        took.as_secs_f64() * 1e7 / count as f64,
        p.elapsed_ms,
        micros(p.max_blocked),
        p.over_1ms,
        p.over_5ms,
        p.over_9ms,
        p.futex as f64 / count as f64,
        c.elapsed_ms,
        micros(c.max_blocked),
        c.over_1ms,
        c.over_5ms,
        c.over_9ms,
        c.futex as f64 / count as f64,
    );
    for (side, out) in [("producer", &outs[1]), ("consumer", &outs[0])] {
        let long: String = child_result(out, "long_calls");
        if !long.is_empty() {
            eprintln!("{test}: {side} calls >= 5 ms (#seq@start+duration/futex calls): {long}");
        }
        eprintln!("{test}: {side} {}", child_result::<String>(out, "probe"));
    }
    // A lost wake-up is a call of a 10 ms sleep slice; so is a call held up by the scheduler,
    // which the probes see at the same time.
    let slow_bound = (count * SLOW_CALLS_PER_MILLION / 1_000_000).max(10);
    let count_slow = timing_suite() || (p.probe_quiet && c.probe_quiet);
    if !count_slow {
        eprintln!(
            "{test}: calls of 9 ms or more not counted: the probes saw the machine busy, \
             which makes as many"
        );
    }
    let stall_bound = bound(STALL_BOUND);
    for (side, r) in [("send", &p), ("recv", &c)] {
        assert!(
            r.max_blocked < stall_bound,
            "a {side} blocked for {:?} (bound {stall_bound:?})",
            r.max_blocked
        );
        assert!(
            !count_slow || r.over_9ms <= slow_bound,
            "{} {side} calls took 9 ms or more (bound {slow_bound}): lost wake-ups?",
            r.over_9ms
        );
    }
}

/// Both sides with the default strategy (spin, yield, then sleep on the futex).
#[test]
#[cfg_attr(miri, ignore)]
fn lost_wakeup_stress_spin_then_sleep() {
    if run_child_role() {
        return;
    }
    stress(
        "lost_wakeup_stress_spin_then_sleep",
        WaitStrategy::SpinThenSleep,
        0x5712_e550_0001,
        STRESS_MESSAGES,
    );
}

/// Both sides sleep on the futex at once whenever they wait.
#[test]
#[cfg_attr(miri, ignore)]
fn lost_wakeup_stress_sleep() {
    if run_child_role() {
        return;
    }
    stress(
        "lost_wakeup_stress_sleep",
        WaitStrategy::Sleep,
        0x5712_e550_0002,
        STRESS_MESSAGES_SLEEP,
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Wake-up latency across processes (case 5)
// ---------------------------------------------------------------------------------------------

/// The consumer (this process) sleeps in `recv`; a child sends a message holding its
/// CLOCK_MONOTONIC send time every 2-5 ms. The time from the send to the return of `recv` is
/// the wake-up latency: 200 samples with `WaitStrategy::Sleep`, then 200 with the default.
#[test]
#[cfg_attr(miri, ignore)]
fn sleeping_consumer_wakes_within_10ms_of_a_send() {
    if run_child_role() {
        return;
    }
    let _serial = lock(&TIMING);
    const SAMPLES: u64 = 200;
    let (ring, _rm) = private_ring(&cfg(64));
    let mut rx = ring.consumer().unwrap();
    let child = spawn_child(
        "sleeping_consumer_wakes_within_10ms_of_a_send",
        "stamp-producer",
        &[
            var(SHMID_VAR, ring.shmid().unwrap()),
            var(COUNT_VAR, 2 * SAMPLES),
            var(SEED_VAR, 0x3a4e_0005u64),
        ],
    );
    let mut buf = [0u8; 16];
    for (round, strategy) in [WaitStrategy::Sleep, WaitStrategy::SpinThenSleep]
        .into_iter()
        .enumerate()
    {
        rx.set_wait_strategy(strategy);
        let probe = SchedProbe::start();
        let futex0 = futex_calls();
        let mut lat = Vec::new();
        for i in 0..SAMPLES {
            let seq = round as u64 * SAMPLES + i;
            let n = rx.recv(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "recv of message {seq}: {e} (ring {:?}, {:?})",
                    ring.status(),
                    shmpipe::gc::inspect(ring.shmid().unwrap_or(-1))
                )
            });
            let (got, latency) = unstamp(&buf[..n]);
            assert_eq!(got, seq);
            lat.push(latency);
        }
        let slept = futex_calls() - futex0;
        let cal = probe.stop();
        lat.sort();
        let (median, p99, max) = (
            percentile(&lat, 50.0),
            percentile(&lat, 99.0),
            lat[lat.len() - 1],
        );
        eprintln!(
            "wake latency, consumer {}: median {}, p99 {}, max {} over {SAMPLES} sends \
             ({slept} futex calls)",
            strategy_name(strategy),
            micros(median),
            micros(p99),
            micros(max)
        );
        eprintln!("  calibration: {cal}");
        if strategy == WaitStrategy::Sleep {
            assert!(
                slept >= SAMPLES,
                "the consumer slept in the futex only {slept} times"
            );
        }
        let p99_bound = bound(WAKE_P99_BOUND);
        assert!(
            p99 < p99_bound,
            "{strategy:?}: p99 wake latency {p99:?} (bound {p99_bound:?}; {cal})"
        );
    }
    assert_eq!(rx.recv(&mut buf), Err(RecvError::Disconnected));
    child.wait_success(CHILD_TIMEOUT);
}

// ---------------------------------------------------------------------------------------------
// 3. No system call in steady state
// ---------------------------------------------------------------------------------------------

/// Runs a count-producer and a count-consumer child on a 256-slot ring and returns their
/// (futex calls, elapsed ms).
fn count_stream(
    test: &str,
    count: u64,
    producer: WaitStrategy,
    consumer: WaitStrategy,
    work_ns: u64,
) -> ((u64, u64), (u64, u64)) {
    let (ring, _rm) = private_ring(&cfg(256).max_message(120));
    let vars = |s: WaitStrategy| {
        vec![
            var(SHMID_VAR, ring.shmid().unwrap()),
            var(COUNT_VAR, count),
            var(SEED_VAR, 0xf07e_0003u64),
            var(STRATEGY_VAR, strategy_name(s)),
            var(WORK_VAR, work_ns),
        ]
    };
    let c = spawn_child(test, "count-consumer", &vars(consumer));
    let p = spawn_child(test, "count-producer", &vars(producer));
    let outs = wait_all_outputs(vec![p, c], CHILD_TIMEOUT);
    let side =
        |out: &str| -> (u64, u64) { (child_result(out, "futex"), child_result(out, "elapsed_ms")) };
    (side(&outs[0]), side(&outs[1]))
}

/// Both sides spin: a million messages with blocking `send` and `recv` and not one futex call
/// in either process.
#[test]
#[cfg_attr(miri, ignore)]
fn no_futex_call_while_both_sides_spin() {
    if run_child_role() {
        return;
    }
    let _serial = lock(&TIMING);
    let ((pf, pms), (cf, cms)) = count_stream(
        "no_futex_call_while_both_sides_spin",
        SPIN_MESSAGES,
        WaitStrategy::Spin,
        WaitStrategy::Spin,
        0,
    );
    eprintln!(
        "spin/spin: {SPIN_MESSAGES} messages, producer {pf} futex calls in {pms} ms, \
         consumer {cf} futex calls in {cms} ms"
    );
    assert_eq!((pf, cf), (0, 0), "futex calls of (producer, consumer)");
}

/// The default strategy on both sides with a consumer slower than the producer, so the ring
/// is full most of the time: reports futex calls per message, for a consumer that works 2 µs
/// per message (the producer's spinning and yielding mostly outlast that) and one that works
/// 50 µs (the producer sleeps for nearly every message).
#[test]
#[cfg_attr(miri, ignore)]
fn futex_calls_per_message_with_a_busy_consumer() {
    if run_child_role() {
        return;
    }
    let _serial = lock(&TIMING);
    for (count, work_ns) in [(200_000u64, 2_000u64), (20_000, 50_000)] {
        let ((pf, pms), (cf, cms)) = count_stream(
            "futex_calls_per_message_with_a_busy_consumer",
            count,
            WaitStrategy::SpinThenSleep,
            WaitStrategy::SpinThenSleep,
            work_ns,
        );
        eprintln!(
            "busy consumer ({} µs/msg), default strategy: {count} messages; producer {pf} \
             futex calls ({:.4}/msg) in {pms} ms; consumer {cf} futex calls ({:.4}/msg) in \
             {cms} ms",
            work_ns / 1000,
            pf as f64 / count as f64,
            cf as f64 / count as f64
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Timeouts
// ---------------------------------------------------------------------------------------------

/// A ring the parent consumes with a live producer child that sends nothing, and a full ring
/// the parent produces into with a live consumer child that reads nothing: every timed wait
/// returns `Timeout` (with the message back) no earlier than its deadline and at most
/// [`OVERSHOOT_BOUND`] after it, for every strategy.
#[test]
#[cfg_attr(miri, ignore)]
fn timed_waits_time_out_at_their_deadline() {
    if run_child_role() {
        return;
    }
    let _serial = lock(&TIMING);
    let (empty, _rm1) = private_ring(&cfg(8));
    let (full, _rm2) = private_ring(&cfg(8));
    let mut rx = empty.consumer().unwrap();
    let mut tx = full.producer().unwrap();
    let mut child = spawn_child(
        "timed_waits_time_out_at_their_deadline",
        "hold",
        &[
            var(SHMID_VAR, empty.shmid().unwrap()),
            var(SHMID2_VAR, full.shmid().unwrap()),
        ],
    );
    wait_result(&mut child, "holding");
    while tx.try_send(b"filler").is_ok() {}
    let msg = b"not sent".as_slice();

    let mut all = Vec::new();
    let mut buf = [0u8; 64];
    for strategy in [
        WaitStrategy::Spin,
        WaitStrategy::SpinThenSleep,
        WaitStrategy::Sleep,
    ] {
        rx.set_wait_strategy(strategy);
        tx.set_wait_strategy(strategy);
        let mut per = Vec::new();
        for timeout in [0, 1, 5, 20].map(Duration::from_millis) {
            for _ in 0..3 {
                let t = Instant::now();
                assert_eq!(rx.recv_timeout(&mut buf, timeout), Err(RecvError::Timeout));
                per.push(overshoot("recv_timeout", t, timeout));

                let t = Instant::now();
                assert!(matches!(rx.lend_timeout(timeout), Err(RecvError::Timeout)));
                per.push(overshoot("lend_timeout", t, timeout));

                let t = Instant::now();
                match tx.send_timeout(msg, timeout) {
                    Err(SendError::Timeout) => {}
                    other => panic!("send_timeout: expected Timeout, got {other:?}"),
                }
                per.push(overshoot("send_timeout", t, timeout));

                let t = Instant::now();
                assert!(matches!(
                    tx.reserve_timeout(8, timeout),
                    Err(SendError::Timeout)
                ));
                per.push(overshoot("reserve_timeout", t, timeout));
            }
        }
        per.sort();
        eprintln!(
            "timeout overshoot, {}: median {}, p90 {}, max {} ({} timed waits of 0-20 ms)",
            strategy_name(strategy),
            micros(percentile(&per, 50.0)),
            micros(percentile(&per, 90.0)),
            micros(per[per.len() - 1]),
            per.len()
        );
        all.extend(per);
    }
    all.sort();
    let max = all[all.len() - 1];
    assert!(
        max < bound(OVERSHOOT_BOUND),
        "a timed wait overshot its deadline by {max:?}"
    );
    child.assert_running();
}

/// Counts SIGUSR1 deliveries.
static SIGNALS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_sigusr1(_: libc::c_int) {
    // Async-signal-safe: a lock-free atomic increment.
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

/// Installs the no-op SIGUSR1 handler, without `SA_RESTART`, so a futex wait it interrupts
/// returns `EINTR`.
fn install_sigusr1_handler() {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler only
    // increments an atomic (async-signal-safe); sigaction reads the struct and writes nothing.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = 0;
        libc::sigemptyset(&raw mut sa.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &raw const sa, std::ptr::null_mut()),
            0
        );
    }
}

/// Sends SIGUSR1 to the calling thread every millisecond from another thread while `f` runs.
fn with_signals<R>(f: impl FnOnce() -> R) -> (R, u32) {
    // SAFETY: pthread_self has no preconditions.
    let target = unsafe { libc::pthread_self() };
    let stop = AtomicBool::new(false);
    let before = SIGNALS.load(Ordering::Relaxed);
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: `target` is the thread running `f`, alive until the scope ends (this
                // thread is joined before it returns).
                let rc = unsafe { libc::pthread_kill(target, libc::SIGUSR1) };
                assert_eq!(rc, 0, "pthread_kill");
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let r = f();
        stop.store(true, Ordering::Relaxed);
        r
    });
    (r, SIGNALS.load(Ordering::Relaxed) - before)
}

/// A signal that interrupts a sleeping `recv_timeout` or `send_timeout` (EINTR) does not end
/// the wait: it times out at its deadline all the same.
#[test]
#[cfg_attr(miri, ignore)]
fn signals_do_not_end_a_timed_wait_early() {
    if run_child_role() {
        return;
    }
    let _serial = lock(&TIMING);
    install_sigusr1_handler();
    let (empty, _rm1) = private_ring(&cfg(8));
    let (full, _rm2) = private_ring(&cfg(8));
    let mut rx = empty.consumer().unwrap();
    let mut tx = full.producer().unwrap();
    let mut child = spawn_child(
        "signals_do_not_end_a_timed_wait_early",
        "hold",
        &[
            var(SHMID_VAR, empty.shmid().unwrap()),
            var(SHMID2_VAR, full.shmid().unwrap()),
        ],
    );
    wait_result(&mut child, "holding");
    while tx.try_send(b"filler").is_ok() {}
    let timeout = Duration::from_millis(150);
    let mut buf = [0u8; 64];
    for strategy in [WaitStrategy::Sleep, WaitStrategy::SpinThenSleep] {
        rx.set_wait_strategy(strategy);
        tx.set_wait_strategy(strategy);
        let t = Instant::now();
        let (r, n) = with_signals(|| rx.recv_timeout(&mut buf, timeout));
        assert_eq!(r, Err(RecvError::Timeout), "{strategy:?}");
        let late = overshoot("recv_timeout under signals", t, timeout);
        eprintln!(
            "recv_timeout(150 ms), {}, {n} signals: overshoot {}",
            strategy_name(strategy),
            micros(late)
        );
        assert!(n >= 20, "only {n} signals were delivered");
        assert!(late < bound(OVERSHOOT_BOUND), "overshoot {late:?}");

        let t = Instant::now();
        let (r, n) = with_signals(|| tx.send_timeout(b"msg", timeout).map_err(|e| e.to_string()));
        assert_eq!(r, Err(SendError::Timeout.to_string()), "{strategy:?}");
        let late = overshoot("send_timeout under signals", t, timeout);
        eprintln!(
            "send_timeout(150 ms), {}, {n} signals: overshoot {}",
            strategy_name(strategy),
            micros(late)
        );
        assert!(n >= 20, "only {n} signals were delivered");
        assert!(late < bound(OVERSHOOT_BOUND), "overshoot {late:?}");
    }
    child.assert_running();
}

// ---------------------------------------------------------------------------------------------
// 5. Close and end of stream
// ---------------------------------------------------------------------------------------------

/// A child sends N messages through a tiny ring and exits (its producer closes): the consumer
/// receives all N, then `Disconnected` from every receiving call.
#[test]
#[cfg_attr(miri, ignore)]
fn consumer_gets_every_message_then_end_of_stream() {
    if run_child_role() {
        return;
    }
    const N: u64 = 5_000;
    const SEED: u64 = 0xe0f5_0005;
    let (ring, _rm) = private_ring(&cfg(8).max_message(120));
    let mut rx = ring.consumer().unwrap();
    rx.set_wait_strategy(WaitStrategy::Sleep);
    let child = spawn_child(
        "consumer_gets_every_message_then_end_of_stream",
        "send-and-exit",
        &[
            var(SHMID_VAR, ring.shmid().unwrap()),
            var(COUNT_VAR, N),
            var(SEED_VAR, SEED),
        ],
    );
    let max = rx.max_message();
    let mut buf = vec![0u8; max];
    let mut scratch = Vec::new();
    for seq in 0..N {
        let n = rx
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("message {seq}: {e}"));
        check_msg(SEED, seq, max, &buf[..n], &mut scratch).unwrap();
    }
    assert_eq!(rx.recv(&mut buf), Err(RecvError::Disconnected));
    assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Disconnected));
    assert!(matches!(rx.try_lend(), Err(TryRecvError::Disconnected)));
    assert_eq!(
        rx.recv_timeout(&mut buf, Duration::from_secs(5)),
        Err(RecvError::Disconnected)
    );
    assert!(matches!(
        rx.lend_timeout(Duration::from_secs(5)),
        Err(RecvError::Disconnected)
    ));
    child.wait_success(CHILD_TIMEOUT);
    let st = ring.status();
    assert_eq!((st.sent, st.received, st.producer_pid), (N, N, 0), "{st:?}");
}

/// A child consumer receives a few messages and closes while this producer is asleep in
/// `send` on the full ring: the send returns `Disconnected` with the message, promptly, and
/// so does every later sending call.
#[test]
#[cfg_attr(miri, ignore)]
fn producer_gets_its_message_back_once_the_consumer_closes() {
    if run_child_role() {
        return;
    }
    let _serial = lock(&TIMING);
    const K: u64 = 10;
    const SEED: u64 = 0xe0f5_0006;
    let (ring, _rm) = private_ring(&cfg(8).max_message(120));
    let mut tx = ring.producer().unwrap();
    let child = spawn_child(
        "producer_gets_its_message_back_once_the_consumer_closes",
        "recv-then-close",
        &[
            var(SHMID_VAR, ring.shmid().unwrap()),
            var(COUNT_VAR, K),
            var(SEED_VAR, SEED),
            var(DELAY_VAR, 100),
        ],
    );
    let max = tx.max_message();
    for seq in 0..K {
        tx.send(&common::make_msg(SEED, seq, max)).unwrap();
    }
    let deadline = Instant::now() + SETUP_TIMEOUT;
    while ring.status().received < K {
        assert!(Instant::now() < deadline, "the consumer never received {K}");
        std::thread::sleep(Duration::from_millis(1));
    }
    while tx.try_send(b"filler").is_ok() {}
    tx.set_wait_strategy(WaitStrategy::Sleep);
    let msg = b"not sent".as_slice();
    match tx.send(msg) {
        Err(SendError::Disconnected) => {}
        other => panic!("send: expected Disconnected, got {other:?}"),
    }
    let woke = monotonic_ns();
    match tx.try_send(msg) {
        Err(TrySendError::Disconnected) => {}
        other => panic!("try_send: expected Disconnected, got {other:?}"),
    }
    match tx.send_timeout(msg, Duration::from_secs(5)) {
        Err(SendError::Disconnected) => {}
        other => panic!("send_timeout: expected Disconnected, got {other:?}"),
    }
    assert!(matches!(tx.try_reserve(1), Err(TrySendError::Disconnected)));
    assert!(matches!(
        tx.reserve_timeout(1, Duration::from_secs(5)),
        Err(SendError::Disconnected)
    ));
    let out = child.wait_success_output(CHILD_TIMEOUT);
    let closed: u64 = child_result(&out, "closed_ns");
    let latency = Duration::from_nanos(woke.saturating_sub(closed));
    eprintln!(
        "sleeping producer woken by the consumer's close after {}",
        micros(latency)
    );
    assert!(
        latency < bound(WAKE_P99_BOUND),
        "the close woke the producer after {latency:?}"
    );
}

/// A consumer asleep in `recv` when its producer (a child) closes is woken by the close
/// itself, not by the end of a 10 ms sleep slice: over 20 closes, the median delay from the
/// close to `Disconnected` stays well below half a slice.
#[test]
#[cfg_attr(miri, ignore)]
fn consumer_asleep_in_recv_wakes_promptly_when_the_producer_closes() {
    if run_child_role() {
        return;
    }
    let _serial = lock(&TIMING);
    const ROUNDS: u64 = 20;
    let (ring, _rm) = private_ring(&cfg(8));
    let (acks, _rm2) = private_ring(&cfg(8));
    let mut rx = ring.consumer().unwrap();
    let mut ack_tx = acks.producer().unwrap();
    let mut child = spawn_child(
        "consumer_asleep_in_recv_wakes_promptly_when_the_producer_closes",
        "claim-send-close",
        &[
            var(SHMID_VAR, ring.shmid().unwrap()),
            var(SHMID2_VAR, acks.shmid().unwrap()),
            var(COUNT_VAR, ROUNDS),
            var(DELAY_VAR, 20),
        ],
    );
    let mut buf = [0u8; 8];
    let mut woke = Vec::new();
    let probe = SchedProbe::start();
    for i in 0..ROUNDS {
        // Half the rounds with each sleeping strategy.
        rx.set_wait_strategy(if i % 2 == 0 {
            WaitStrategy::Sleep
        } else {
            WaitStrategy::SpinThenSleep
        });
        wait_until("the next producer's message", &mut child, || {
            ring.status().sent > i
        });
        let n = rx.recv(&mut buf).expect("the round's message");
        assert_eq!(&buf[..n], &i.to_le_bytes());
        assert_eq!(rx.recv(&mut buf), Err(RecvError::Disconnected), "round {i}");
        woke.push(monotonic_ns());
        ack_tx.send(&i.to_le_bytes()).unwrap();
    }
    let cal = probe.stop();
    let out = child.wait_success_output(CHILD_TIMEOUT);
    let mut lat: Vec<Duration> = woke
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let closed: u64 = child_result(&out, &format!("closed_ns_{i}"));
            Duration::from_nanos(w.saturating_sub(closed))
        })
        .collect();
    lat.sort();
    let (median, max) = (percentile(&lat, 50.0), lat[lat.len() - 1]);
    eprintln!(
        "consumer asleep in recv woken by the producer's close: median {}, max {} ({ROUNDS} closes)",
        micros(median),
        micros(max)
    );
    // Woken only by its slice, the sleeper would wait 5 ms at the median; a slow scheduler
    // delays the probe's median wake-up as much as the sleeper's.
    let median_bound = if timing_suite() {
        Duration::from_millis(2)
    } else {
        Duration::from_millis(2) + cal.percentile(50.0)
    };
    assert!(
        median < median_bound,
        "median wake-up after a close {median:?} (bound {median_bound:?}; {cal}): the close \
         does not wake the sleeper"
    );
    assert!(
        max < bound(WAKE_P99_BOUND),
        "slowest wake-up after a close {max:?}"
    );
}

/// The consumer (a child) starts first and finds the ring by key: before any producer ever
/// attached, a timed receive times out (it is not the end of a stream); then the producer
/// (this process) comes, sends, closes, and the consumer sees the message and the end.
#[test]
#[cfg_attr(miri, ignore)]
fn recv_before_any_producer_times_out() {
    if run_child_role() {
        return;
    }
    let key = unique_key();
    let _rm = RemoveOnDrop::key(key);
    let ring = Ring::create(key, &cfg(8)).unwrap();
    let mut child = spawn_child(
        "recv_before_any_producer_times_out",
        "consumer-first",
        &[var(KEY_VAR, key.raw())],
    );
    wait_result(&mut child, "timed_out");
    let mut tx = ring.producer().unwrap();
    tx.send(b"hello").unwrap();
    drop(tx);
    child.wait_success(CHILD_TIMEOUT);
}

/// The symmetric case: before any consumer ever attached, a producer fills the ring and a
/// timed send on the full ring times out (not `Disconnected`); a consumer child that comes
/// later receives everything.
#[test]
#[cfg_attr(miri, ignore)]
fn send_before_any_consumer_times_out() {
    if run_child_role() {
        return;
    }
    let (ring, _rm) = private_ring(&cfg(8));
    let mut tx = ring.producer().unwrap();
    let mut sent = 0u64;
    while tx.try_send(&sent.to_le_bytes()).is_ok() {
        sent += 1;
    }
    for s in [
        WaitStrategy::Spin,
        WaitStrategy::SpinThenSleep,
        WaitStrategy::Sleep,
    ] {
        tx.set_wait_strategy(s);
        let msg = sent.to_le_bytes();
        match tx.send_timeout(&msg, Duration::from_millis(30)) {
            Err(SendError::Timeout) => {}
            other => panic!("{s:?}: expected Timeout, got {other:?}"),
        }
    }
    let child = spawn_child(
        "send_before_any_consumer_times_out",
        "slow-consumer",
        &[
            var(SHMID_VAR, ring.shmid().unwrap()),
            var(COUNT_VAR, sent + 50),
        ],
    );
    for seq in sent..sent + 50 {
        tx.send_timeout(&seq.to_le_bytes(), Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("message {seq}: {e}"));
    }
    drop(tx);
    child.wait_success(CHILD_TIMEOUT);
}

// ---------------------------------------------------------------------------------------------
// 6. A stopped peer is not a dead one
// ---------------------------------------------------------------------------------------------

/// SIGSTOP the producer child while the consumer waits with `recv_timeout(300 ms)`: the wait
/// times out (never `PeerDied`); after SIGCONT the stream goes on to its end.
#[test]
#[cfg_attr(miri, ignore)]
fn stopped_producer_is_not_dead() {
    if run_child_role() {
        return;
    }
    const N: u64 = 200;
    let (ring, _rm) = private_ring(&cfg(8));
    let mut rx = ring.consumer().unwrap();
    let child = spawn_child(
        "stopped_producer_is_not_dead",
        "slow-producer",
        &[var(SHMID_VAR, ring.shmid().unwrap()), var(COUNT_VAR, N)],
    );
    let mut buf = [0u8; 8];
    let mut next = 0u64;
    let mut recv = |rx: &mut shmpipe::Consumer, next: &mut u64, t: Duration| {
        let r = rx.recv_timeout(&mut buf, t);
        if let Ok(n) = r {
            assert_eq!(&buf[..n], &next.to_le_bytes());
            *next += 1;
        }
        r
    };
    for strategy in [WaitStrategy::Sleep, WaitStrategy::SpinThenSleep] {
        rx.set_wait_strategy(strategy);
        for _ in 0..20 {
            recv(&mut rx, &mut next, Duration::from_secs(10)).expect("a message");
        }
        signal_process(child.pid(), libc::SIGSTOP);
        wait_stopped(child.pid());
        // Drain what it published before it stopped, then wait on a silent, stopped peer.
        let timeout = Duration::from_millis(300);
        loop {
            let t = Instant::now();
            match recv(&mut rx, &mut next, timeout) {
                Ok(_) => {}
                Err(RecvError::Timeout) => {
                    overshoot("recv_timeout on a stopped producer", t, timeout);
                    break;
                }
                Err(e) => panic!("{strategy:?}: a stopped producer gave {e:?}"),
            }
        }
        signal_process(child.pid(), libc::SIGCONT);
    }
    while next < N {
        recv(&mut rx, &mut next, Duration::from_secs(10)).expect("the rest of the stream");
    }
    assert_eq!(
        rx.recv_timeout(&mut buf, Duration::from_secs(10)),
        Err(RecvError::Disconnected)
    );
    child.wait_success(CHILD_TIMEOUT);
}

/// SIGSTOP the consumer child while the producer waits for room with `send_timeout(300 ms)`:
/// the wait times out (never `PeerDied`); after SIGCONT the stream goes on to its end.
#[test]
#[cfg_attr(miri, ignore)]
fn stopped_consumer_is_not_dead() {
    if run_child_role() {
        return;
    }
    const N: u64 = 200;
    let (ring, _rm) = private_ring(&cfg(8));
    let mut tx = ring.producer().unwrap();
    let child = spawn_child(
        "stopped_consumer_is_not_dead",
        "slow-consumer",
        &[var(SHMID_VAR, ring.shmid().unwrap()), var(COUNT_VAR, N)],
    );
    let mut seq = 0u64;
    for strategy in [WaitStrategy::Sleep, WaitStrategy::SpinThenSleep] {
        tx.set_wait_strategy(strategy);
        for _ in 0..20 {
            tx.send_timeout(&seq.to_le_bytes(), Duration::from_secs(10))
                .expect("send");
            seq += 1;
        }
        signal_process(child.pid(), libc::SIGSTOP);
        wait_stopped(child.pid());
        let timeout = Duration::from_millis(300);
        loop {
            let msg = seq.to_le_bytes();
            let t = Instant::now();
            match tx.send_timeout(&msg, timeout) {
                Ok(()) => seq += 1,
                Err(SendError::Timeout) => {
                    overshoot("send_timeout on a stopped consumer", t, timeout);
                    break;
                }
                Err(e) => panic!("{strategy:?}: a stopped consumer gave {e:?}"),
            }
        }
        signal_process(child.pid(), libc::SIGCONT);
    }
    while seq < N {
        tx.send_timeout(&seq.to_le_bytes(), Duration::from_secs(10))
            .expect("the rest of the stream");
        seq += 1;
    }
    drop(tx);
    child.wait_success(CHILD_TIMEOUT);
}

// ---------------------------------------------------------------------------------------------
// 7. Segment lifetime and keys (cases 10, 13, 14)
// ---------------------------------------------------------------------------------------------

/// Receives the `send-and-exit` stream of `n` messages, then the end of stream.
fn receive_stream(rx: &mut shmpipe::Consumer, seed: u64, n: u64, after_first: impl FnOnce()) {
    let max = rx.max_message();
    let mut buf = vec![0u8; max];
    let mut scratch = Vec::new();
    let mut after_first = Some(after_first);
    for seq in 0..n {
        let m = rx
            .recv_timeout(&mut buf, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("message {seq}: {e}"));
        check_msg(seed, seq, max, &buf[..m], &mut scratch).unwrap();
        if let Some(f) = after_first.take() {
            f();
        }
    }
    assert_eq!(
        rx.recv_timeout(&mut buf, Duration::from_secs(20)),
        Err(RecvError::Disconnected)
    );
}

fn assert_key_gone(key: Key) {
    assert!(
        matches!(Segment::open(key), Err(Error::NotFound { .. })),
        "the key {key} is still there"
    );
}

/// A ring that is not persistent loses its key as soon as both roles are claimed (the
/// producer in a child that opened it by key), and the stream works on.
#[test]
#[cfg_attr(miri, ignore)]
fn non_persistent_ring_leaves_its_key_once_both_sides_claim() {
    if run_child_role() {
        return;
    }
    const SEED: u64 = 0x11fe_0007;
    let key = unique_key();
    let _rm = RemoveOnDrop::key(key);
    let ring = Ring::create(key, &cfg(8)).unwrap();
    let shmid = ring.shmid().unwrap();
    let _rm_id = RemoveOnDrop::id(shmid);
    let mut rx = ring.consumer().unwrap();
    // One side only: still there for the other to find.
    assert_eq!(Segment::open(key).unwrap().shmid(), shmid);
    let child = spawn_child(
        "non_persistent_ring_leaves_its_key_once_both_sides_claim",
        "send-and-exit",
        &[
            var(KEY_VAR, key.raw()),
            var(COUNT_VAR, 1000),
            var(SEED_VAR, SEED),
        ],
    );
    // The first message was sent after the producer's claim returned: the key is gone by then.
    receive_stream(&mut rx, SEED, 1000, || {
        assert_key_gone(key);
        assert!(matches!(
            Ring::open(key, &RingConfig::new()),
            Err(Error::NotFound { .. })
        ));
        let st = ring.segment().unwrap().stat().unwrap();
        assert!(st.marked_for_removal, "{st:?}");
    });
    child.wait_success(CHILD_TIMEOUT);
    assert_key_gone(key);
}

/// A persistent ring keeps its key after both sides claimed, and after they left.
#[test]
#[cfg_attr(miri, ignore)]
fn persistent_ring_keeps_its_key() {
    if run_child_role() {
        return;
    }
    const SEED: u64 = 0x11fe_0008;
    let key = unique_key();
    let _rm = RemoveOnDrop::key(key);
    let ring = Ring::create(key, &cfg(8).persistent(true)).unwrap();
    let shmid = ring.shmid().unwrap();
    let mut rx = ring.consumer().unwrap();
    let child = spawn_child(
        "persistent_ring_keeps_its_key",
        "send-and-exit",
        &[
            var(KEY_VAR, key.raw()),
            var(COUNT_VAR, 1000),
            var(SEED_VAR, SEED),
        ],
    );
    receive_stream(&mut rx, SEED, 1000, || {
        assert_eq!(Segment::open(key).unwrap().shmid(), shmid);
    });
    child.wait_success(CHILD_TIMEOUT);
    drop(rx);
    let again =
        Ring::open(key, &RingConfig::new()).expect("the persistent ring is still at its key");
    assert_eq!(again.instance_id(), ring.instance_id());
    assert!(!ring.segment().unwrap().stat().unwrap().marked_for_removal);
    again.remove().unwrap();
    assert_key_gone(key);
}

/// Creates a ring at `key` and has a `hold` child claim its producer; returns the ring's
/// instance id, shmid and the child (this process keeps no attachment).
fn ring_held_by_a_child(test: &str, key: Key) -> (u64, i32, ChildProcess) {
    let ring = Ring::create(key, &cfg(8)).unwrap();
    let mut child = spawn_child(test, "hold", &[var(KEY_VAR, key.raw())]);
    wait_result(&mut child, "holding");
    assert_eq!(ring.status().producer_pid, child.pid());
    (ring.instance_id(), ring.shmid().unwrap(), child)
}

/// `open_or_create` on a stale ring (its only producer was SIGKILLed, nothing pending, nobody
/// attached) removes it and creates a fresh one.
#[test]
#[cfg_attr(miri, ignore)]
fn open_or_create_recycles_a_stale_ring() {
    if run_child_role() {
        return;
    }
    let _stale = lock(&STALE);
    let key = unique_key();
    let _rm = RemoveOnDrop::key(key);
    let (old_id, old_shmid, child) =
        ring_held_by_a_child("open_or_create_recycles_a_stale_ring", key);
    let _rm_old = RemoveOnDrop::id(old_shmid);
    let pid = child.pid();
    drop(child); // SIGKILL and reap
    match Ring::open(key, &RingConfig::new()).unwrap().producer() {
        Err(Error::RoleTaken {
            role: Role::Producer,
            pid: p,
            holder: shmpipe::Liveness::Dead,
            ..
        }) => assert_eq!(p, pid),
        other => panic!("expected RoleTaken by a dead holder, got {other:?}"),
    }
    let (_, class) = no_fork(|| gc::classify_id(old_shmid)).unwrap();
    assert_eq!(
        class,
        Class::Orphan {
            crashed: true,
            pending_slots: 0
        }
    );
    let ring = no_fork(|| Ring::open_or_create(key, &cfg(8))).expect("recycle the stale ring");
    assert_ne!(
        ring.instance_id(),
        old_id,
        "a fresh ring has a new instance id"
    );
    assert_ne!(ring.shmid().unwrap(), old_shmid);
    assert!(matches!(
        shmpipe::segment::stat_id(old_shmid),
        Err(Error::NotFound { .. })
    ));
    // The fresh ring works.
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    tx.send(b"fresh").unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(rx.recv(&mut buf), Ok(5));
}

/// `open_or_create` on a ring a live child is attached to opens that same ring.
#[test]
#[cfg_attr(miri, ignore)]
fn open_or_create_opens_a_ring_in_use() {
    if run_child_role() {
        return;
    }
    let key = unique_key();
    let _rm = RemoveOnDrop::key(key);
    let (id, shmid, child) = ring_held_by_a_child("open_or_create_opens_a_ring_in_use", key);
    let ring = Ring::open_or_create(key, &cfg(8)).expect("open the ring in use");
    assert_eq!(ring.instance_id(), id);
    assert_eq!(ring.shmid(), Some(shmid));
    assert_eq!(ring.status().producer_pid, child.pid());
    drop(child);
}

/// Fills an attached segment with a recognisable pattern (starting with `first`).
fn fill_foreign(seg: &Segment, first: u64) {
    for i in 0..seg.len() / 8 {
        word64(seg, i * 8).store(
            if i == 0 {
                first
            } else {
                common::mix64(i as u64)
            },
            Ordering::Relaxed,
        );
    }
}

fn assert_foreign_intact(key: Key, shmid: i32, first: u64) {
    let seg = Segment::open(key).expect("the foreign segment is still there");
    assert_eq!(seg.shmid(), shmid);
    for i in 0..seg.len() / 8 {
        let want = if i == 0 {
            first
        } else {
            common::mix64(i as u64)
        };
        assert_eq!(
            word64(&seg, i * 8).load(Ordering::Relaxed),
            want,
            "word {i}"
        );
    }
}

/// `open_or_create` on someone else's segment at the key refuses it as `NotShmpipe` and
/// leaves it exactly as it was; one whose first word happens to be 0 is refused too (its
/// "ready word" is garbage) and left alone.
#[test]
#[cfg_attr(miri, ignore)]
fn open_or_create_refuses_a_foreign_segment() {
    if run_child_role() {
        return;
    }
    for first in [0x0123_4567_89ab_cdefu64, 0] {
        let key = unique_key();
        let _rm = RemoveOnDrop::key(key);
        let seg = Segment::create(key, 4096, 0o600).unwrap();
        let shmid = seg.shmid();
        fill_foreign(&seg, first);
        drop(seg); // nobody attached
        let r = Ring::open_or_create(key, &cfg(8).init_timeout(Duration::from_millis(50)));
        match (first, r) {
            (0, Err(Error::BadHeader { .. })) => {}
            (f, Err(Error::NotShmpipe { found, .. })) if f != 0 => assert_eq!(found, f),
            (_, other) => panic!("first word {first:#x}: got {other:?}"),
        }
        assert_eq!(gc::classify_id(shmid).unwrap().1, Class::Foreign);
        assert_foreign_intact(key, shmid, first);
    }
}

/// An attacher that starts before the creator (a child) finished writing the header waits
/// for the ready word and then succeeds.
#[test]
#[cfg_attr(miri, ignore)]
fn attacher_waits_for_a_slow_creator() {
    if run_child_role() {
        return;
    }
    let key = unique_key();
    let _rm = RemoveOnDrop::key(key);
    let seg = Segment::create(key, HEADER_SIZE + 64 * 8, 0o600).unwrap();
    let t0 = Instant::now();
    let child = spawn_child(
        "attacher_waits_for_a_slow_creator",
        "late-creator",
        &[var(KEY_VAR, key.raw()), var(DELAY_VAR, 50)],
    );
    let ring = Ring::open(
        key,
        &RingConfig::new().init_timeout(Duration::from_secs(10)),
    )
    .expect("wait for the creator");
    let waited = t0.elapsed();
    let out = child.wait_success_output(CHILD_TIMEOUT);
    eprintln!("attacher waited {waited:?} for the creator");
    assert!(
        waited >= Duration::from_millis(50),
        "waited only {waited:?}"
    );
    assert_eq!(ring.instance_id(), child_result::<u64>(&out, "instance_id"));
    assert_eq!(ring.shmid(), Some(seg.shmid()));
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    tx.send(b"works").unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(rx.recv(&mut buf), Ok(5));
}

/// A creator that died mid-initialisation (magic written, ready 0) leaves a segment on which
/// attachers time out, which `gc` calls `AbandonedInit`, and which `open_or_create` recycles.
#[test]
#[cfg_attr(miri, ignore)]
fn creator_that_died_mid_init_is_recycled() {
    if run_child_role() {
        return;
    }
    let _stale = lock(&STALE);
    let key = unique_key();
    let _rm = RemoveOnDrop::key(key);
    let child = spawn_child(
        "creator_that_died_mid_init_is_recycled",
        "die-mid-init",
        &[var(KEY_VAR, key.raw())],
    );
    let out = child.wait_success_output(CHILD_TIMEOUT);
    let shmid: i32 = child_result(&out, "shmid");
    let _rm_old = RemoveOnDrop::id(shmid);
    let timeout = Duration::from_millis(100);
    match Ring::open(key, &RingConfig::new().init_timeout(timeout)) {
        Err(Error::InitTimeout { waited, .. }) => assert!(waited >= timeout),
        other => panic!("expected InitTimeout, got {other:?}"),
    }
    assert_eq!(
        no_fork(|| gc::classify_id(shmid)).unwrap().1,
        Class::AbandonedInit
    );
    let ring =
        no_fork(|| Ring::open_or_create(key, &cfg(8))).expect("recycle the abandoned segment");
    assert_ne!(ring.shmid(), Some(shmid));
    assert!(matches!(
        shmpipe::segment::stat_id(shmid),
        Err(Error::NotFound { .. })
    ));
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    tx.send(b"works").unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(rx.recv(&mut buf), Ok(5));
}

/// While a child holds the producer of one ring and the consumer of another, a second claim
/// of either role is refused with `holder: Liveness::Alive`, takeover too; once the child is
/// killed, the claim says the holder is dead and takeover succeeds.
#[test]
#[cfg_attr(miri, ignore)]
fn second_claim_is_refused_while_the_holder_lives() {
    if run_child_role() {
        return;
    }
    let (a, _rm1) = private_ring(&cfg(8));
    let (b, _rm2) = private_ring(&cfg(8));
    let mut child = spawn_child(
        "second_claim_is_refused_while_the_holder_lives",
        "hold",
        &[
            var(SHMID_VAR, a.shmid().unwrap()),
            var(SHMID2_VAR, b.shmid().unwrap()),
        ],
    );
    wait_result(&mut child, "holding");
    let pid = child.pid();
    let refused = |r: Result<(), Error>, role: Role, alive: bool| match r {
        Err(Error::RoleTaken {
            role: r,
            pid: p,
            holder,
            ..
        }) => assert_eq!(
            (r, p, holder == shmpipe::Liveness::Alive),
            (role, pid, alive)
        ),
        other => panic!("expected RoleTaken, got {other:?}"),
    };
    refused(a.producer().map(drop), Role::Producer, true);
    refused(a.take_over_producer().map(drop), Role::Producer, true);
    refused(b.consumer().map(drop), Role::Consumer, true);
    refused(b.take_over_consumer().map(drop), Role::Consumer, true);
    drop(child);
    refused(a.producer().map(drop), Role::Producer, false);
    refused(b.consumer().map(drop), Role::Consumer, false);
    a.take_over_producer()
        .expect("take over from the dead producer");
    b.take_over_consumer()
        .expect("take over from the dead consumer");
}

// ---------------------------------------------------------------------------------------------
// 8. Permissions (case 15)
// ---------------------------------------------------------------------------------------------

/// A ring created with the default mode is 0600; a process of another uid (a child that
/// drops root privileges to `nobody`) cannot open it, by key or by shmid, nor remove it.
#[test]
#[cfg_attr(miri, ignore)]
fn another_uid_is_refused() {
    if run_child_role() {
        return;
    }
    let key = unique_key();
    let _rm = RemoveOnDrop::key(key);
    let ring = Ring::create(key, &cfg(8)).unwrap();
    let stat = ring.segment().unwrap().stat().unwrap();
    assert_eq!(stat.mode, 0o600);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("note: another_uid_is_refused needs root to switch uids; skipped that part");
        return;
    }
    let child = spawn_child(
        "another_uid_is_refused",
        "other-uid",
        &[
            var(KEY_VAR, key.raw()),
            var(SHMID2_VAR, ring.shmid().unwrap()),
        ],
    );
    child.wait_success(CHILD_TIMEOUT);
    // Untouched.
    assert_eq!(
        Ring::open(key, &RingConfig::new()).unwrap().instance_id(),
        ring.instance_id()
    );
}

// ---------------------------------------------------------------------------------------------
// 9. gc (case 17)
// ---------------------------------------------------------------------------------------------

/// `gc(true)` lists an orphan (its only producer was SIGKILLed, nobody attached) as stale
/// without removing it; `gc(false)` removes it. A foreign segment, a ring in use and a ring
/// holding unread messages of a producer that closed cleanly are never removed.
#[test]
#[cfg_attr(miri, ignore)]
fn gc_removes_orphans_only() {
    if run_child_role() {
        return;
    }
    let _stale = lock(&STALE);
    const TEST: &str = "gc_removes_orphans_only";

    // An orphan: created here, producer claimed by a child that is then killed.
    let orphan = {
        let (ring, rm) = private_ring(&cfg(8));
        let mut child = spawn_child(TEST, "hold", &[var(SHMID_VAR, ring.shmid().unwrap())]);
        wait_result(&mut child, "holding");
        drop(child);
        (ring.shmid().unwrap(), rm)
    };
    // Pending: a child sent 3 messages and closed cleanly; no consumer ever came.
    let pending = {
        let (ring, rm) = private_ring(&cfg(64).max_message(120));
        spawn_child(
            TEST,
            "send-and-exit",
            &[
                var(SHMID_VAR, ring.shmid().unwrap()),
                var(COUNT_VAR, 3),
                var(SEED_VAR, 7),
            ],
        )
        .wait_success(CHILD_TIMEOUT);
        (ring.shmid().unwrap(), rm)
    };
    // In use: a live child holds its producer.
    let (in_use, _rm_in_use) = private_ring(&cfg(8));
    let mut holder = spawn_child(TEST, "hold", &[var(SHMID_VAR, in_use.shmid().unwrap())]);
    wait_result(&mut holder, "holding");
    let in_use_id = in_use.shmid().unwrap();
    drop(in_use); // only the child is attached now
    // Foreign: someone else's bytes, nobody attached.
    let foreign_key = unique_key();
    let _rm_foreign = RemoveOnDrop::key(foreign_key);
    let foreign = Segment::create(foreign_key, HEADER_SIZE + 64 * 8, 0o600).unwrap();
    let foreign_id = foreign.shmid();
    fill_foreign(&foreign, 0x0123_4567_89ab_cdef);
    drop(foreign);

    let class = |entries: &[gc::Entry], id: i32| {
        entries
            .iter()
            .find(|e| e.stat.shmid == id)
            .map(|e| (e.class.clone(), e.removed))
    };
    let exists = |id: i32| shmpipe::segment::stat_id(id).is_ok();

    let dry = no_fork(|| gc::gc(true)).unwrap();
    assert_eq!(
        class(&dry, orphan.0),
        Some((
            Class::Orphan {
                crashed: true,
                pending_slots: 0
            },
            false
        ))
    );
    assert!(
        matches!(class(&dry, pending.0), Some((Class::Pending { pending_slots }, false)) if pending_slots > 0)
    );
    assert!(matches!(
        class(&dry, in_use_id),
        Some((Class::InUse { .. }, false))
    ));
    assert_eq!(
        class(&dry, foreign_id),
        None,
        "foreign segments are not listed"
    );
    assert!(exists(orphan.0), "a dry run removed the orphan");

    let done = no_fork(|| gc::gc(false)).unwrap();
    assert!(matches!(
        class(&done, orphan.0),
        Some((Class::Orphan { .. }, true))
    ));
    assert!(!exists(orphan.0), "gc did not remove the orphan");
    assert!(matches!(
        class(&done, pending.0),
        Some((Class::Pending { .. }, false))
    ));
    assert!(matches!(
        class(&done, in_use_id),
        Some((Class::InUse { .. }, false))
    ));
    assert!(exists(pending.0) && exists(in_use_id));
    assert_foreign_intact(foreign_key, foreign_id, 0x0123_4567_89ab_cdef);
    drop(holder);
}

// ---------------------------------------------------------------------------------------------
// Regression: a consumer that wakes to find its producer dead still gets what it published
// ---------------------------------------------------------------------------------------------

/// The system call thread `tid` of process `pid` is in, from `/proc` (`None` if in user space
/// or unreadable).
fn current_syscall(pid: u32, tid: i32) -> Option<libc::c_long> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    text.split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
        .filter(|&n: &libc::c_long| n >= 0)
}

/// A consumer (child) asleep in `recv` is stopped inside its futex wait; meanwhile the
/// producer (another child) publishes one message, which wakes the futex, and is SIGKILLed.
/// When the consumer continues, its `recv` must return that message (a dead producer yields
/// `PeerDied` only after everything it published was received), not `PeerDied`.
///
/// This is deterministic: the consumer re-checks its peer after every futex wait, finds it
/// dead, and asks `has_data`, whose cached tail is stale; the refresh inside it finds the new
/// message, and `has_data` must then say "data", not "empty".
#[test]
#[cfg_attr(miri, ignore)]
fn consumer_woken_after_the_producer_died_receives_its_last_message() {
    if run_child_role() {
        return;
    }
    const TEST: &str = "consumer_woken_after_the_producer_died_receives_its_last_message";
    let (ring, _rm) = private_ring(&cfg(8));
    let go = common::RemoveFile(common::temp_path("go"));
    let vars = [
        var(SHMID_VAR, ring.shmid().unwrap()),
        var(GO_VAR, go.0.display()),
    ];
    let mut producer = spawn_child(TEST, "go-producer", &vars);
    wait_result(&mut producer, "holding");
    let mut consumer = spawn_child(TEST, "sleepy-consumer", &vars);
    let tid: i32 = wait_result(&mut consumer, "tid").parse().unwrap();
    let cpid = consumer.pid();
    // Stop the consumer while it is inside FUTEX_WAIT (it leaves it every 10 ms to look at
    // its peer, so try a few times).
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(
            attempts < 200,
            "never caught the consumer in its futex wait"
        );
        consumer.assert_running();
        if current_syscall(cpid, tid) != Some(libc::SYS_futex) {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        signal_process(cpid, libc::SIGSTOP);
        wait_stopped(cpid);
        if current_syscall(cpid, tid) == Some(libc::SYS_futex) {
            break;
        }
        signal_process(cpid, libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(3));
    }
    std::fs::write(&go.0, b"go").unwrap();
    wait_result(&mut producer, "sent");
    assert_eq!(ring.status().sent, 1);
    drop(producer); // SIGKILL and reap: the producer role stays held by a dead process
    signal_process(cpid, libc::SIGCONT);
    let out = consumer.wait_success_output(CHILD_TIMEOUT);
    let (first, second): (String, String) =
        (child_result(&out, "first"), child_result(&out, "second"));
    assert_eq!(
        (first.as_str(), second.as_str()),
        ("ok:last words", "err:Empty"),
        "recv on a ring holding a message of a dead producer"
    );
}
