//! Hostile peers for real (issue #5), and rows 6 to 9 of `RELIABILITY.md`, against rings in real
//! shared memory: every test runs over a SysV segment, a memfd and a file (`<test>::sysv`,
//! `::memfd`, `::file`), through the conformance harness of `tests/common/conformance.rs`. A heap
//! ring sits out: it has no second mapping for a hostile to write through.
//!
//! # Part 1: a hostile process
//!
//! Each `hostile_<region>_vs_<side>` test runs the side under test (a consumer looping on
//! `recv_timeout`/`lend_timeout` or on `try_recv`/`try_lend`, or a producer looping on
//! `send_timeout`/`reserve_timeout` or on `try_send`/`try_reserve`) in a child process, with an
//! honest peer in another child or with no peer at all, and then starts a third process that
//! maps the ring's memory with a bare `shmat` (by shmid) or `mmap` (of an inherited memfd or file
//! descriptor) and writes seeded random bytes, as fast as
//! it can, over one region: the configuration line, the producer line, the consumer line, the
//! slot array (record headers and payloads), or everything. Running the side in a child means a
//! panic, abort or segfault shows up as a failed exit status (with the child's log) instead of
//! killing the test harness. The seed is printed with every failure; set
//! `SHMPIPE_HOSTILE_SEED` to rerun with it (the interleaving of the processes is not
//! reproducible, the bytes written are).
//!
//! What the side can honestly be required to do depends on what it reads ([`expectation`]):
//!
//! - It reads what the hostile writes (a consumer and the producer line's `tail`, owner word or
//!   claim count, or its own line's owner word; a producer and the consumer line's `head` or
//!   owner word, or its own line's `consumer_closed` or owner word; either side and
//!   everything): it must **end with an error** of the kinds
//!   listed for that case (`Corrupted`, `PeerDied`, `Disconnected`), within [`BOUND`] (1 s) of the
//!   first hostile write. Detection takes one call or, for a blocking call, one 10 ms sleep
//!   slice; the bound leaves two orders of magnitude for a loaded 2-core CI machine. It is a
//!   hang bound, not a speed claim. Where an honest peer keeps rewriting the word (the tail,
//!   the head), the side fails only when it reads between the hostile's write and the peer's;
//!   the hostile writes continuously, so that takes milliseconds too, and such a side gets no
//!   message budget that could end it first.
//! - The hostile writes what only an honest peer reads (the consumer line against a consumer
//!   with an honest producer, and so on): the peer notices, closes or fails, and the side must
//!   end within the bound with the error that brings (mostly `Disconnected`).
//! - Random bytes over the slot array against a consumer: record headers are mostly caught
//!   (`Corrupted`), but a payload byte is data; the requirement is no crash, every message
//!   returned no longer than `max_message`, and the side ends (an error, or the message budget)
//!   within the bound. Against a producer (which never reads slots) the consumer peer fails and
//!   closes the ring, or the budget ends it.
//! - The configuration line is read once, at attach: with an honest peer every message must
//!   arrive intact and the side must end by its budget, with no error at all.
//! - The side reads nothing the hostile writes (its peer is absent and the region is the slots
//!   or the configuration): no error is possible, and none may be
//!   invented. The side must return only `Timeout`/`Empty`/`Full`, each call within its
//!   timeout, and stop promptly when told to.
//!
//! In every case: no call may last longer than the bound, and a `Corrupted` side must return the
//! same error again at once from every path (sticky).
//!
//! # Part 2: rows 6 to 9, deterministic, in real shared memory
//!
//! `tests/edges.rs` already covers over every backing but the heap (through a second mapping,
//! non-blocking calls, stickiness checked after a repair):
//!
//! - row 6: tail behind head (`tail_behind_head_is_corruption`), tail − head > capacity
//!   (`tail_more_than_a_ring_ahead_is_corruption`), tail = u64::MAX (`tail_u64_max_is_corruption`),
//!   tail moving backwards inside a batch (`tail_moving_backwards_is_corruption`), head moving
//!   backwards (`head_moving_backwards_is_corruption`), inconsistent indices at a role claim
//!   (`inconsistent_indices_refuse_the_role_claim`);
//! - row 7: over the maximum (`record_over_the_maximum_is_corruption`), past the end of the array
//!   (`record_past_the_end_of_the_array_is_corruption`), past the tail, which is also a tail
//!   ending inside a record (`record_past_the_tail_is_corruption`), unknown kinds including the
//!   all-zero header of a slot never written (`unknown_record_kind_is_corruption`), padding at
//!   slot 0 (`padding_at_the_start_of_the_array_is_corruption`), of the wrong length
//!   (`padding_of_the_wrong_length_is_corruption`), or with no message after it
//!   (`padding_without_a_message_after_it_is_corruption`);
//! - row 8: head backwards, beyond the tail, beyond the published tail
//!   (`head_moving_backwards_is_corruption`, `head_beyond_the_tail_is_corruption`,
//!   `head_beyond_the_published_tail_is_corruption`), each checking the slots were not written;
//! - row 9: `counters_wrap_near_2_pow_32_and_u64_max` (one process, non-blocking calls).
//!
//! Added here (`r6_*` to `r9_*`), from a second mapping of the memory as a peer has it: row 6
//! through every receive and send path including the blocking ones with a 10 s timeout, the first
//! call timed too, with the bad index written before the call or while the call sleeps, and with
//! counters near 2^32 and 2^64; row 7 zero-length records where they are and are not allowed, a
//! configured maximum below the shape's limit, misaligned record headers (read out of the middle
//! of a payload after a record was shortened: a record cannot start off a slot boundary, as
//! positions are slot counters), padding right after padding and padding in a one-slot ring;
//! row 8 in memory larger than the ring whose excess is a guard pattern (a write out of bounds
//! would change it), with far and wrapped head values, a producer asleep in a blocking send, and
//! an honest consumer reading every unread record intact afterwards; row 9 between two processes
//! with the blocking calls, and the range checks exact to one slot across the 2^64 wrap.
//!
//! Every segment and file is removed by the harness's guards, also when a test fails.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::timing::bound;
use common::{
    Backing, ChildProcess, KIND_MESSAGE, KIND_PADDING, RawAttach, RemoveFile, SLOTS, SplitMix64,
    TAIL, TestRing, check_msg, child_image_raw, child_image_ring, child_result, child_role,
    conformance, fill_msg, find_result, mix64, monotonic_ns, msg_len, param, print_result,
    temp_path,
};
use shmpipe::{
    Consumer, Corrupted, Corruption, HEADER_SIZE, Producer, RecvError, Ring, RingConfig, SendError,
    TryRecvError, TrySendError,
};

// ---------------------------------------------------------------------------------------------
// Bounds and layout
// ---------------------------------------------------------------------------------------------

/// The hang bound of part 1: a side must end within this long of the first hostile write, and no
/// single call may take longer. Detection takes one call, or one 10 ms sleep slice of a blocking
/// call (measured on a 2-core machine with a load average of 5 to 7: medians of 1 to 7 ms, at
/// most 33 ms); this leaves ample room for a loaded CI machine. A correctness bound, not a
/// speed claim.
const BOUND: Duration = Duration::from_secs(1);
/// "Returns immediately", for a single call (part 2, and the stickiness checks of part 1); the
/// default suite allows a starved process `timing::LOADED`, still half of [`LONG`].
const AT_ONCE: Duration = Duration::from_millis(100);
/// The timeout of blocking calls that must not wait at all: long enough that waiting for it
/// would fail [`AT_ONCE`] by two orders of magnitude, short enough to fail rather than hang.
const LONG: Duration = Duration::from_secs(10);
/// How long a call is left blocked before the peer misbehaves (it sleeps after 100 µs). A call
/// asleep when the bad index appears notices at its next re-check, at most one 10 ms sleep
/// slice later; it must return within [`BOUND`] of the write (then it was woken by its re-check,
/// not by its 10 s timeout), which leaves room for a machine loaded with other tests.
const BLOCK_FIRST: Duration = Duration::from_millis(20);

/// Byte offset of the producer's `sent` counter (`docs/LAYOUT.md`; the others are in `common`).
const SENT: usize = 136;

/// Counter starts: the ordinary one, and just before the 2^32 and 2^64 wraps.
const STARTS: [u64; 3] = [0, (1 << 32) - 2, u64::MAX - 1];

/// The tests of this file one at a time: the hostile spins on a core, and on a 2-core machine
/// anything beside it would measure the scheduler, not the ring (the whole file takes a few
/// seconds anyway).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------------------------

const VAR_SEED: &str = "SHMPIPE_HOSTILE_CHILD_SEED";
const VAR_BLOCKING: &str = "SHMPIPE_HOSTILE_BLOCKING";
const VAR_BUDGET: &str = "SHMPIPE_HOSTILE_BUDGET";
const VAR_GO: &str = "SHMPIPE_HOSTILE_GO";
const VAR_STOP: &str = "SHMPIPE_HOSTILE_STOP";
const VAR_TARGET: &str = "SHMPIPE_HOSTILE_TARGET";
const VAR_COUNT: &str = "SHMPIPE_HOSTILE_COUNT";

/// If this process is a child, runs its role and returns true.
fn run_child_role() -> bool {
    let Some(role) = child_role() else {
        return false;
    };
    match role.as_str() {
        "consumer" | "producer" => side_child(&role),
        "hostile" => hostile_child(),
        "wrap-producer" => wrap_producer_child(),
        other => panic!("unknown role {other:?}"),
    }
    true
}

/// Timeout of each blocking call of the sides and peers.
const CALL: Duration = Duration::from_millis(20);
/// Messages a side exchanges after the hostile started before it may stop on its own: few, so
/// that reaching it within the bound is no throughput claim on a loaded machine.
const BUDGET: u64 = 50;
/// The hostile gives up by itself after this long (the test kills it much earlier).
const HOSTILE_MAX: Duration = Duration::from_secs(5);

/// The go file (created by the hostile after its first writes) and the stop file (created by the
/// test), looked at no more than once a millisecond.
struct Control {
    go: PathBuf,
    stop: PathBuf,
    next_look: Instant,
    go_seen: bool,
    stop_seen: bool,
}

impl Control {
    fn from_env() -> Control {
        Control {
            go: param(VAR_GO),
            stop: param(VAR_STOP),
            next_look: Instant::now(),
            go_seen: false,
            stop_seen: false,
        }
    }

    fn poll(&mut self) {
        let now = Instant::now();
        if now >= self.next_look {
            self.next_look = now + Duration::from_millis(1);
            self.go_seen = self.go_seen || self.go.exists();
            self.stop_seen = self.stop_seen || self.stop.exists();
        }
    }
}

/// How a side's loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Corrupted,
    PeerDied,
    Disconnected,
    /// The message budget after the hostile started.
    Budget,
    /// Told to stop by the test.
    Stopped,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::str::FromStr for End {
    type Err = String;
    fn from_str(s: &str) -> Result<End, String> {
        Ok(match s {
            "Corrupted" => End::Corrupted,
            "PeerDied" => End::PeerDied,
            "Disconnected" => End::Disconnected,
            "Budget" => End::Budget,
            "Stopped" => End::Stopped,
            _ => return Err(format!("no End {s:?}")),
        })
    }
}

/// What one call of a side's loop did.
enum Step {
    /// A message went through.
    Done,
    /// `Timeout`, `Empty` or `Full`: nothing happened, try again.
    Nothing,
    /// An error that ends the loop, with its text.
    End(End, String),
}

/// A side's counts.
#[derive(Default)]
struct Tally {
    msgs: u64,
    after_go: u64,
    bad: u64,
    first_bad: Option<String>,
    calls: u64,
    quiet: u64,
    max_call: Duration,
}

impl Tally {
    /// Checks a received message: never over the maximum (a hard failure: the ring validated
    /// it), and whether it is the one expected (garbage is expected under some attacks).
    fn check(&mut self, seed: u64, max: usize, m: &[u8], scratch: &mut Vec<u8>) {
        assert!(
            m.len() <= max,
            "received a message of {} bytes, over the maximum {max}",
            m.len()
        );
        if let Err(e) = check_msg(seed, self.msgs, max, m, scratch) {
            self.bad += 1;
            self.first_bad.get_or_insert(e);
        }
    }
}

/// Runs `step` until it ends the loop, the budget is reached after the go signal, or the stop
/// file appears. Returns how it ended, the error's text, and `CLOCK_MONOTONIC` at the end.
///
/// A non-blocking loop that finds nothing to do 64 times in a row yields the CPU, so that on a
/// 2-core machine it does not starve its peer while the hostile spins on the other core.
fn side_loop(
    ctl: &mut Control,
    tally: &mut Tally,
    budget: u64,
    blocking: bool,
    mut step: impl FnMut(&mut Tally) -> Step,
) -> (End, String, u64) {
    let mut idle = 0u64;
    loop {
        ctl.poll();
        if ctl.stop_seen {
            return (End::Stopped, String::new(), monotonic_ns());
        }
        if ctl.go_seen && tally.after_go >= budget {
            return (End::Budget, String::new(), monotonic_ns());
        }
        let t0 = Instant::now();
        let s = step(tally);
        tally.max_call = tally.max_call.max(t0.elapsed());
        tally.calls += 1;
        match s {
            Step::Done => {
                tally.msgs += 1;
                tally.after_go += u64::from(ctl.go_seen);
                idle = 0;
            }
            Step::Nothing => {
                tally.quiet += 1;
                idle += 1;
                if !blocking && idle % 64 == 0 {
                    thread::yield_now();
                }
            }
            Step::End(end, text) => return (end, text, monotonic_ns()),
        }
    }
}

/// A side or an honest peer: claims its role, prints `ready`, runs its loop (blocking calls, or
/// the non-blocking ones; each loop alternates the copying and the zero-copy API), and prints
/// how it ended.
fn side_child(role: &str) {
    let blocking = param::<u8>(VAR_BLOCKING) != 0;
    let seed: u64 = param(VAR_SEED);
    let budget: u64 = param(VAR_BUDGET);
    let ring = child_image_ring().expect("attach the ring");
    let mut ctl = Control::from_env();
    let mut tally = Tally::default();
    let (end, text, end_ns, sticky) = if role == "consumer" {
        consumer_loop(&ring, blocking, seed, budget, &mut ctl, &mut tally)
    } else {
        producer_loop(&ring, blocking, seed, budget, &mut ctl, &mut tally)
    };
    print_result("outcome", end);
    print_result("end_ns", end_ns);
    print_result("error", text);
    print_result("msgs", tally.msgs);
    print_result("after_go", tally.after_go);
    print_result("bad", tally.bad);
    print_result("first_bad", tally.first_bad.unwrap_or_default());
    print_result("calls", tally.calls);
    print_result("quiet", tally.quiet);
    print_result("max_call_ns", tally.max_call.as_nanos());
    print_result("sticky", sticky);
}

fn consumer_loop(
    ring: &Ring,
    blocking: bool,
    seed: u64,
    budget: u64,
    ctl: &mut Control,
    tally: &mut Tally,
) -> (End, String, u64, String) {
    let mut rx = ring.consumer().expect("claim the consumer role");
    let max = rx.max_message();
    let mut buf = vec![0u8; max];
    let mut scratch = Vec::new();
    print_result("ready", 1);
    let (end, text, end_ns) = side_loop(ctl, tally, budget, blocking, |t| {
        let zero_copy = t.calls % 2 == 1;
        let mut on_msg = |m: &[u8]| t.check(seed, max, m, &mut scratch);
        match (blocking, zero_copy) {
            (true, false) => match rx.recv_timeout(&mut buf, CALL) {
                Ok(n) => {
                    on_msg(&buf[..n]);
                    Step::Done
                }
                Err(e) => recv_step(&e),
            },
            (true, true) => match rx.lend_timeout(CALL) {
                Ok(m) => {
                    on_msg(&m.to_vec());
                    Step::Done
                }
                Err(e) => recv_step(&e),
            },
            (false, false) => match rx.try_recv(&mut buf) {
                Ok(n) => {
                    on_msg(&buf[..n]);
                    Step::Done
                }
                Err(e) => recv_step(&RecvError::from(e)),
            },
            (false, true) => match rx.try_lend() {
                Ok(m) => {
                    on_msg(&m.to_vec());
                    Step::Done
                }
                Err(e) => recv_step(&RecvError::from(e)),
            },
        }
    });
    let sticky = if end == End::Corrupted {
        consumer_sticky(&mut rx)
    } else {
        "n/a".to_string()
    };
    (end, text, end_ns, sticky)
}

/// A receive error as a step. `Empty` arrives as `Timeout` (`From<TryRecvError>`).
fn recv_step(e: &RecvError) -> Step {
    let end = match e {
        RecvError::Timeout => return Step::Nothing,
        RecvError::Corrupted(_) => End::Corrupted,
        RecvError::PeerDied { .. } => End::PeerDied,
        RecvError::Disconnected => End::Disconnected,
        other => panic!("a receive failed with {other:?}, which no peer can cause here"),
    };
    Step::End(end, e.to_string())
}

/// After `Corrupted`: every receive path returns the same error at once. "ok", or what failed.
fn consumer_sticky(rx: &mut Consumer) -> String {
    let Some(&want) = rx.poisoned() else {
        return "Corrupted was returned but poisoned() is None".into();
    };
    let mut problems = Vec::new();
    for _ in 0..2 {
        for path in RecvPath::ALL {
            let t0 = Instant::now();
            let got = path.run(rx);
            let took = t0.elapsed();
            if got != Err(Ok(want)) {
                problems.push(format!("{path:?} returned {got:?} after {want}"));
            } else if took >= bound(AT_ONCE) {
                problems.push(format!("{path:?} took {took:?}"));
            }
        }
    }
    if problems.is_empty() {
        "ok".into()
    } else {
        problems.join("; ")
    }
}

fn producer_loop(
    ring: &Ring,
    blocking: bool,
    seed: u64,
    budget: u64,
    ctl: &mut Control,
    tally: &mut Tally,
) -> (End, String, u64, String) {
    let mut tx = ring.producer().expect("claim the producer role");
    let max = tx.max_message();
    let mut buf = vec![0u8; max];
    print_result("ready", 1);
    let (end, text, end_ns) = side_loop(ctl, tally, budget, blocking, |t| {
        let len = msg_len(seed, t.msgs, max);
        fill_msg(seed, t.msgs, &mut buf[..len]);
        let msg = &buf[..len];
        let path = match (blocking, t.calls % 2 == 1) {
            (true, false) => SendPath::SendTimeout,
            (true, true) => SendPath::ReserveTimeout,
            (false, false) => SendPath::TrySend,
            (false, true) => SendPath::Reserve,
        };
        // `CALL` instead of `LONG` for the blocking paths of the loop.
        let got = match path {
            SendPath::SendTimeout => tx.send_timeout(msg, CALL).map_err(send_err),
            SendPath::ReserveTimeout => tx
                .reserve_timeout(len, CALL)
                .map(|mut g| {
                    g.copy_from_slice(msg);
                    g.commit();
                })
                .map_err(send_err),
            _ => path.run(&mut tx, msg),
        };
        match got {
            Ok(()) => Step::Done,
            Err(Ok(c)) => Step::End(End::Corrupted, c.to_string()),
            Err(Err(text)) if text.starts_with("Timeout") || text.starts_with("Full") => {
                Step::Nothing
            }
            Err(Err(text)) if text.starts_with("Disconnected") => {
                Step::End(End::Disconnected, text)
            }
            Err(Err(text)) if text.starts_with("PeerDied") => Step::End(End::PeerDied, text),
            Err(Err(text)) => panic!("a send failed with {text}, which no peer can cause here"),
        }
    });
    let sticky = if end == End::Corrupted {
        producer_sticky(&mut tx, &buf[..1])
    } else {
        "n/a".to_string()
    };
    (end, text, end_ns, sticky)
}

/// After `Corrupted`: every send path returns the same error at once. "ok", or what failed.
fn producer_sticky(tx: &mut Producer, msg: &[u8]) -> String {
    let Some(&want) = tx.poisoned() else {
        return "Corrupted was returned but poisoned() is None".into();
    };
    let mut problems = Vec::new();
    for _ in 0..2 {
        for path in SendPath::ALL {
            let t0 = Instant::now();
            let got = path.run(tx, msg);
            let took = t0.elapsed();
            if got != Err(Ok(want)) {
                problems.push(format!("{path:?} returned {got:?} after {want}"));
            } else if took >= bound(AT_ONCE) {
                problems.push(format!("{path:?} took {took:?}"));
            }
        }
    }
    if problems.is_empty() {
        "ok".into()
    } else {
        problems.join("; ")
    }
}

// ---------------------------------------------------------------------------------------------
// Every receive and send path, for checking one error everywhere
// ---------------------------------------------------------------------------------------------

/// The ways to receive one message.
#[derive(Clone, Copy, Debug)]
enum RecvPath {
    TryRecv,
    TryRecvVec,
    TryRead,
    BatchTryRecv,
    BatchTryRead,
    RecvTimeout,
    ReadTimeout,
}

/// What a path returned: the message's length, or the `Corrupted` it failed with, or any other
/// error as text.
type Got<T> = Result<T, Result<Corrupted, String>>;

fn try_recv_err(e: TryRecvError) -> Result<Corrupted, String> {
    match e {
        TryRecvError::Corrupted(c) => Ok(c),
        e => Err(format!("{e:?}")),
    }
}

fn recv_err(e: RecvError) -> Result<Corrupted, String> {
    match e {
        RecvError::Corrupted(c) => Ok(c),
        e => Err(format!("{e:?}")),
    }
}

fn try_send_err(e: TrySendError) -> Result<Corrupted, String> {
    match e {
        TrySendError::Corrupted(c) => Ok(c),
        TrySendError::Full => Err("Full".into()),
        TrySendError::Disconnected => Err("Disconnected".into()),
        TrySendError::TooLarge { len, max } => Err(format!("TooLarge {len} > {max}")),
        TrySendError::WrongProcess(w) => Err(format!("{w:?}")),
        e => Err(format!("{e:?}")),
    }
}

fn send_err(e: SendError) -> Result<Corrupted, String> {
    match e {
        SendError::Corrupted(c) => Ok(c),
        SendError::Timeout => Err("Timeout".into()),
        SendError::Disconnected => Err("Disconnected".into()),
        SendError::PeerDied { pid, .. } => Err(format!("PeerDied (pid {pid})")),
        SendError::TooLarge { len, max } => Err(format!("TooLarge {len} > {max}")),
        SendError::WrongProcess(w) => Err(format!("{w:?}")),
        e => Err(format!("{e:?}")),
    }
}

impl RecvPath {
    const ALL: [RecvPath; 7] = [
        RecvPath::TryRecv,
        RecvPath::TryRecvVec,
        RecvPath::TryRead,
        RecvPath::BatchTryRecv,
        RecvPath::BatchTryRead,
        RecvPath::RecvTimeout,
        RecvPath::ReadTimeout,
    ];
    const BLOCKING: [RecvPath; 2] = [RecvPath::RecvTimeout, RecvPath::ReadTimeout];

    /// Receives one message this way (blocking ones wait up to [`LONG`]).
    fn run(self, rx: &mut Consumer) -> Got<usize> {
        let mut buf = vec![0u8; rx.max_message()];
        match self {
            RecvPath::TryRecv => rx.try_recv(&mut buf).map_err(try_recv_err),
            RecvPath::TryRecvVec => rx.try_recv_vec(&mut Vec::new()).map_err(try_recv_err),
            RecvPath::TryRead => rx.try_lend().map(|m| m.len()).map_err(try_recv_err),
            RecvPath::BatchTryRecv => rx.batch().try_recv(&mut buf).map_err(try_recv_err),
            RecvPath::BatchTryRead => rx.batch().try_lend().map(|m| m.len()).map_err(try_recv_err),
            RecvPath::RecvTimeout => rx.recv_timeout(&mut buf, LONG).map_err(recv_err),
            RecvPath::ReadTimeout => rx.lend_timeout(LONG).map(|m| m.len()).map_err(recv_err),
        }
    }

    /// This path fails at once with `want`.
    fn expect(self, rx: &mut Consumer, want: Corrupted) {
        let t0 = Instant::now();
        let got = self.run(rx);
        let took = t0.elapsed();
        assert_eq!(got, Err(Ok(want)), "{self:?}");
        assert!(
            took < bound(AT_ONCE),
            "{self:?} took {took:?} to fail with {want}"
        );
    }
}

/// The ways to send one message.
#[derive(Clone, Copy, Debug)]
enum SendPath {
    TrySend,
    Reserve,
    BatchTrySend,
    BatchReserve,
    SendTimeout,
    ReserveTimeout,
}

impl SendPath {
    const ALL: [SendPath; 6] = [
        SendPath::TrySend,
        SendPath::Reserve,
        SendPath::BatchTrySend,
        SendPath::BatchReserve,
        SendPath::SendTimeout,
        SendPath::ReserveTimeout,
    ];
    const BLOCKING: [SendPath; 2] = [SendPath::SendTimeout, SendPath::ReserveTimeout];

    /// Sends `msg` this way (blocking ones wait up to [`LONG`]).
    fn run(self, tx: &mut Producer, msg: &[u8]) -> Got<()> {
        let write = |mut g: shmpipe::WriteGrant<'_>| {
            g.copy_from_slice(msg);
            g.commit();
        };
        match self {
            SendPath::TrySend => tx.try_send(msg).map_err(try_send_err),
            SendPath::Reserve => tx.try_reserve(msg.len()).map(write).map_err(try_send_err),
            SendPath::BatchTrySend => tx.batch().try_send(msg).map_err(try_send_err),
            SendPath::BatchReserve => tx
                .batch()
                .try_reserve(msg.len())
                .map(write)
                .map_err(try_send_err),
            SendPath::SendTimeout => tx.send_timeout(msg, LONG).map_err(send_err),
            SendPath::ReserveTimeout => tx
                .reserve_timeout(msg.len(), LONG)
                .map(write)
                .map_err(send_err),
        }
    }

    /// This path fails at once with `want`.
    fn expect(self, tx: &mut Producer, msg: &[u8], want: Corrupted) {
        let t0 = Instant::now();
        let got = self.run(tx, msg);
        let took = t0.elapsed();
        assert_eq!(got, Err(Ok(want)), "{self:?}");
        assert!(
            took < bound(AT_ONCE),
            "{self:?} took {took:?} to fail with {want}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The hostile process
// ---------------------------------------------------------------------------------------------

/// Where the hostile writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Config,
    ProducerLine,
    ConsumerLine,
    Slots,
    Everything,
}

impl Target {
    /// The byte range `lo..hi` of a segment of `len` bytes.
    fn range(self, len: usize) -> (usize, usize) {
        match self {
            Target::Config => (0, 128),
            Target::ProducerLine => (128, 256),
            Target::ConsumerLine => (256, 384),
            Target::Slots => (SLOTS, len),
            Target::Everything => (0, len),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Config => "config-line",
            Target::ProducerLine => "producer-line",
            Target::ConsumerLine => "consumer-line",
            Target::Slots => "slots",
            Target::Everything => "everything",
        })
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        [
            Target::Config,
            Target::ProducerLine,
            Target::ConsumerLine,
            Target::Slots,
            Target::Everything,
        ]
        .into_iter()
        .find(|t| t.to_string() == s)
        .ok_or_else(|| format!("no target {s:?}"))
    }
}

/// Maps the ring with a bare `shmat` or `mmap` (`common::child_image_raw`), writes random bytes over its target until killed (or
/// [`HOSTILE_MAX`]), creating the go file after the first 256 writes. Prints `start_ns`, taken
/// just before the first write.
fn hostile_child() {
    let raw = child_image_raw();
    let target: Target = param(VAR_TARGET);
    let mut rng = SplitMix64::new(param(VAR_SEED));
    let (lo, hi) = target.range(raw.len());
    let start = monotonic_ns();
    for _ in 0..256 {
        scribble(&raw, lo, hi, &mut rng);
    }
    // Only now: a side's budget counts messages after this.
    std::fs::write(param::<PathBuf>(VAR_GO), b"").expect("create the go file");
    print_result("start_ns", start);
    let until = Instant::now() + HOSTILE_MAX;
    let mut writes = 256u64;
    while Instant::now() < until {
        for _ in 0..256 {
            scribble(&raw, lo, hi, &mut rng);
        }
        writes += 256;
    }
    print_result("writes", writes);
}

/// One hostile write in `lo..hi` (both multiples of 8): mostly random words and bytes, and some
/// values that nearly pass the checks (a word nudged by a little: counters a few slots off,
/// lengths a few bytes off; small 32-bit values: kinds, flags, short lengths).
fn scribble(raw: &RawAttach, lo: usize, hi: usize, rng: &mut SplitMix64) {
    let word = |rng: &mut SplitMix64, size: usize| {
        lo + rng.below(((hi - lo) / size) as u64) as usize * size
    };
    let nudge = |rng: &mut SplitMix64| rng.below(12).wrapping_sub(3);
    match rng.below(8) {
        0..=2 => {
            let off = word(rng, 8);
            raw.u64(off).store(rng.next_u64(), Ordering::Relaxed);
        }
        3 => {
            let off = lo + rng.below((hi - lo) as u64) as usize;
            let n = rng.range(1, 16).min(hi - off);
            for i in 0..n {
                raw.u8(off + i)
                    .store(rng.next_u64() as u8, Ordering::Relaxed);
            }
        }
        4 | 5 => {
            let w = raw.u64(word(rng, 8));
            let d = nudge(rng);
            w.store(w.load(Ordering::Relaxed).wrapping_add(d), Ordering::Relaxed);
        }
        6 => {
            let off = word(rng, 4);
            raw.u32(off).store(rng.below(4) as u32, Ordering::Relaxed);
        }
        _ => {
            let w = raw.u32(word(rng, 4));
            let d = nudge(rng) as u32;
            w.store(w.load(Ordering::Relaxed).wrapping_add(d), Ordering::Relaxed);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Part 1: scenarios
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Consumer,
    Producer,
}

/// One run: the hostile's target, the side under test, its loop, and whether an honest peer runs.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    target: Target,
    side: Side,
    blocking: bool,
    peer: bool,
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} vs {:?} ({}, {})",
            self.target,
            self.side,
            if self.blocking {
                "blocking"
            } else {
                "non-blocking"
            },
            if self.peer { "honest peer" } else { "no peer" }
        )
    }
}

/// What a scenario must end with (see the module documentation).
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// One of these errors within the bound.
    Error(&'static [End]),
    /// One of these errors, or the message budget, within the bound.
    ErrorOrBudget(&'static [End]),
    /// No error; every message intact; the budget within the bound.
    Intact,
    /// Nothing the side reads changes: only `Timeout`/`Empty`/`Full` until told to stop.
    Blind,
}

fn expectation(sc: Scenario) -> Expect {
    use End::{Corrupted, Disconnected, PeerDied};
    match (sc.target, sc.side, sc.peer) {
        // The tail (range checks), the owner word (liveness: mostly dead), the claim count and
        // owner (end of stream), all read by the consumer.
        (Target::ProducerLine, Side::Consumer, _) => {
            Expect::Error(&[Corrupted, PeerDied, Disconnected])
        }
        // `consumer_closed` and the producer's own owner word (`RoleLost`), read on every send.
        // An honest consumer may also accept a nudged tail, read stale records and release a
        // head past the published tail.
        (Target::ProducerLine, Side::Producer, true) => Expect::Error(&[Disconnected, Corrupted]),
        (Target::ProducerLine, Side::Producer, false) => Expect::Error(&[Disconnected, Corrupted]),
        // The consumer reads its own owner word (`RoleLost`) on every release and whenever the
        // ring is empty; its producer checks the head, fails and closes the ring (or, trusting
        // a head nudged forward, overwrites records being read, which the consumer may find
        // corrupt).
        (Target::ConsumerLine, Side::Consumer, _) => Expect::Error(&[Disconnected, Corrupted]),
        // The head (range checks), the consumer's owner word (liveness), and a consumer that
        // fails on records overwritten under it and closes.
        (Target::ConsumerLine, Side::Producer, true) => {
            Expect::Error(&[Corrupted, PeerDied, Disconnected])
        }
        (Target::ConsumerLine, Side::Producer, false) => Expect::Error(&[Corrupted, PeerDied]),
        // Record headers are checked, payload bytes cannot be.
        (Target::Slots, Side::Consumer, true) => Expect::ErrorOrBudget(&[Corrupted]),
        // The producer never reads slots; its consumer may fail on them and close.
        (Target::Slots, Side::Producer, true) => Expect::ErrorOrBudget(&[Disconnected]),
        // Without a peer nothing is published or released: nobody reads a slot.
        (Target::Slots, _, false) => Expect::Blind,
        // Read once, at attach, before the hostile started.
        (Target::Config, _, true) => Expect::Intact,
        (Target::Config, _, false) => Expect::Blind,
        (Target::Everything, _, _) => Expect::Error(&[Corrupted, PeerDied, Disconnected]),
    }
}

/// The base seed: `SHMPIPE_HOSTILE_SEED` (decimal or 0x-hex), or a fresh one.
fn base_seed() -> u64 {
    match std::env::var("SHMPIPE_HOSTILE_SEED") {
        Ok(s) => {
            let s = s.trim();
            match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            }
            .unwrap_or_else(|_| panic!("SHMPIPE_HOSTILE_SEED={s:?} does not parse"))
        }
        Err(_) => mix64(monotonic_ns() ^ u64::from(std::process::id()) << 40),
    }
}

/// A string's FNV-1a hash, to give each test its own seeds from the base seed.
fn name_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Polls `child`'s output until it prints `RESULT name=...` (bounded), and returns the value.
fn wait_for_result(child: &mut ChildProcess, name: &str, ctx: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = find_result(&child.output(), name) {
            return v;
        }
        child.assert_running();
        assert!(
            Instant::now() < deadline,
            "{ctx}: the child never printed {name}; its output:\n{}",
            child.output()
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// How a side ended, from its output.
struct Report {
    end: End,
    end_ns: u64,
    error: String,
    msgs: u64,
    bad: u64,
    first_bad: String,
    max_call: Duration,
    sticky: String,
}

impl Report {
    fn parse(out: &str) -> Report {
        Report {
            end: child_result(out, "outcome"),
            end_ns: child_result(out, "end_ns"),
            error: find_result(out, "error").unwrap_or_default(),
            msgs: child_result(out, "msgs"),
            bad: child_result(out, "bad"),
            first_bad: find_result(out, "first_bad").unwrap_or_default(),
            max_call: Duration::from_nanos(child_result(out, "max_call_ns")),
            sticky: child_result(out, "sticky"),
        }
    }
}

/// Runs one scenario and checks its expectation. Returns the time from the first hostile write
/// to the side's end.
fn run_scenario(test: &str, b: Backing, sc: Scenario, seed: u64, base: u64) -> Duration {
    let ctx = format!("{sc}, {b:?}, seed {seed:#x} (rerun with SHMPIPE_HOSTILE_SEED={base:#x})");
    println!("scenario: {ctx}");
    let expect = expectation(sc);
    // Counters start at 0 or just before a wrap, so the wraps are attacked too.
    let start = [0, (1u64 << 32) - 20, u64::MAX - 20][(seed % 3) as usize];
    let cfg = RingConfig::new()
        .slot_size(64)
        .slot_count(16)
        .initial_index(start);
    let ring = b.ring(&cfg);
    let go = RemoveFile(temp_path("go"));
    let stop = RemoveFile(temp_path("stop"));
    let stream_seed = mix64(seed ^ 0x7374_7265_616d);
    let vars = |blocking: bool, budget: u64| {
        vec![
            (VAR_SEED, stream_seed.to_string()),
            (VAR_BLOCKING, u8::from(blocking).to_string()),
            (VAR_BUDGET, budget.to_string()),
            (VAR_GO, go.0.display().to_string()),
            (VAR_STOP, stop.0.display().to_string()),
        ]
    };
    let (side_role, peer_role) = match sc.side {
        Side::Consumer => ("consumer", "producer"),
        Side::Producer => ("producer", "consumer"),
    };
    // No budget where the side must end with an error: an honest peer rewrites the words the
    // hostile writes, so the side may see only good values for a while (while the hostile is
    // descheduled, say), and a budget would let it stop before its error.
    let budget = match expect {
        Expect::Error(_) => u64::MAX,
        _ => BUDGET,
    };
    let mut side = ring.spawn(test, side_role, &vars(sc.blocking, budget));
    // An honest peer: blocking calls, no budget.
    let mut peer = sc
        .peer
        .then(|| ring.spawn(test, peer_role, &vars(true, u64::MAX)));
    wait_for_result(&mut side, "ready", &ctx);
    if let Some(p) = peer.as_mut() {
        wait_for_result(p, "ready", &ctx);
    }
    let mut hostile = ring.spawn(
        test,
        "hostile",
        &[
            (VAR_TARGET, sc.target.to_string()),
            (VAR_SEED, seed.to_string()),
            (VAR_GO, go.0.display().to_string()),
        ],
    );
    let start_ns: u64 = wait_for_result(&mut hostile, "start_ns", &ctx)
        .parse()
        .expect("start_ns");

    // A side that must end by itself gets 1.5 s (so one that ends late is reported with its
    // time); a blind one is told to stop after 200 ms. Either must then return within 3 s.
    let stop_after = match expect {
        Expect::Blind => Duration::from_millis(200),
        _ => BOUND + BOUND / 2,
    };
    let stop_at = start_ns + stop_after.as_nanos() as u64;
    let mut stop_ns = None;
    while side.try_status().is_none() {
        let now = monotonic_ns();
        if stop_ns.is_none() && now >= stop_at {
            std::fs::write(&stop.0, b"").expect("create the stop file");
            stop_ns = Some(now);
        }
        if let Some(s) = stop_ns {
            assert!(
                now - s < 3_000_000_000,
                "{ctx}: the side did not return within 3 s of being told to stop (hung in a \
                 call); its output:\n{}",
                side.output()
            );
        }
        thread::sleep(Duration::from_millis(1));
    }
    hostile.assert_running();
    drop(hostile);
    std::fs::write(&stop.0, b"").expect("create the stop file");
    let side_out = side.wait_success_output(Duration::ZERO);
    let peer_out = peer.map(|p| p.wait_success_output(Duration::from_secs(3)));

    let r = Report::parse(&side_out);
    let show = || format!("{ctx}: side output:\n{side_out}\npeer output:\n{peer_out:?}");
    let ttl = Duration::from_nanos(r.end_ns.checked_sub(start_ns).unwrap_or_else(|| {
        panic!(
            "{}\nthe side ended ({}: {}) before the first hostile write",
            show(),
            r.end,
            r.error
        )
    }));
    assert!(
        r.max_call < BOUND,
        "{}\none call took {:?}",
        show(),
        r.max_call
    );
    if r.end == End::Corrupted {
        assert_eq!(r.sticky, "ok", "{}\nnot sticky", show());
    }
    match expect {
        Expect::Error(kinds) => assert!(
            kinds.contains(&r.end),
            "{}\nended with {} ({}), expected one of {kinds:?}",
            show(),
            r.end,
            r.error
        ),
        Expect::ErrorOrBudget(kinds) => assert!(
            r.end == End::Budget || kinds.contains(&r.end),
            "{}\nended with {} ({}), expected the budget or one of {kinds:?}",
            show(),
            r.end,
            r.error
        ),
        Expect::Intact => {
            assert_eq!(r.end, End::Budget, "{}\n{}", show(), r.error);
            assert_eq!(r.bad, 0, "{}\n{}", show(), r.first_bad);
            let p = peer_out.as_deref().expect("an honest peer");
            let (pend, pbad): (End, u64) = (child_result(p, "outcome"), child_result(p, "bad"));
            assert!(
                matches!(pend, End::Stopped | End::Disconnected) && pbad == 0,
                "{}\nthe honest peer ended with {pend} after {pbad} bad messages",
                show()
            );
        }
        Expect::Blind => {
            assert_eq!(
                r.end,
                End::Stopped,
                "{}\nan error although the side reads nothing the hostile writes: {}",
                show(),
                r.error
            );
            let since = Duration::from_nanos(r.end_ns.saturating_sub(stop_ns.unwrap_or(0)));
            assert!(since < BOUND, "{}\nstopped {since:?} after told", show());
        }
    }
    if !matches!(expect, Expect::Blind) {
        assert!(
            ttl < BOUND,
            "{}\nended ({}) {ttl:?} after the first hostile write",
            show(),
            r.end
        );
    }
    println!(
        "TTE target={} side={:?} loop={} peer={} end={} ms={:.3} msgs={}",
        sc.target,
        sc.side,
        if sc.blocking { "blocking" } else { "try" },
        if sc.peer { "honest" } else { "absent" },
        r.end,
        ttl.as_secs_f64() * 1e3,
        r.msgs
    );
    ttl
}

/// The four scenarios of one target and side: honest peer or none, blocking loop or not.
fn run_variant(test: &str, b: Backing, target: Target, side: Side) {
    let _one_at_a_time = serial();
    let base = base_seed();
    for (i, (peer, blocking)) in [(true, true), (true, false), (false, true), (false, false)]
        .into_iter()
        .enumerate()
    {
        let sc = Scenario {
            target,
            side,
            blocking,
            peer,
        };
        let seed = mix64(base ^ name_hash(test) ^ i as u64);
        run_scenario(test, b, sc, seed, base);
    }
}

// Every body over every backing another process can map (the harness in
// tests/common/conformance.rs; a heap ring has no second mapping and never leaves its process).
conformance! {
    processes(crate::run_child_role):
        hostile_producer_line_vs_consumer,
        hostile_producer_line_vs_producer,
        hostile_consumer_line_vs_consumer,
        hostile_consumer_line_vs_producer,
        hostile_slots_vs_consumer,
        hostile_slots_vs_producer,
        hostile_config_line_vs_consumer,
        hostile_config_line_vs_producer,
        hostile_everything_vs_consumer,
        hostile_everything_vs_producer,
        r9_two_processes_deliver_across_the_counter_wraps;
    shared:
        r6_tail_behind_head_is_corrupted_at_once,
        r6_tail_more_than_capacity_ahead_is_corrupted_at_once,
        r6_tail_u64_max_is_corrupted_at_once,
        r6_head_moving_backwards_is_corrupted_at_once,
        r7_zero_length_padding_where_not_allowed_is_corrupted,
        r7_zero_length_records_where_allowed_are_delivered,
        r7_over_a_configured_maximum_is_corrupted,
        r7_misaligned_record_headers_are_corrupted,
        r7_padding_in_the_wrong_place_is_corrupted,
        r8_head_beyond_tail_never_overwrites_unread_records_nor_writes_out_of_bounds,
        r8_head_at_zero_or_u64_max_never_overwrites_unread_records,
        r9_index_checks_are_exact_across_the_wrap;
}

fn hostile_producer_line_vs_consumer(test: &str, b: Backing) {
    run_variant(test, b, Target::ProducerLine, Side::Consumer);
}

fn hostile_producer_line_vs_producer(test: &str, b: Backing) {
    run_variant(test, b, Target::ProducerLine, Side::Producer);
}

fn hostile_consumer_line_vs_consumer(test: &str, b: Backing) {
    run_variant(test, b, Target::ConsumerLine, Side::Consumer);
}

fn hostile_consumer_line_vs_producer(test: &str, b: Backing) {
    run_variant(test, b, Target::ConsumerLine, Side::Producer);
}

fn hostile_slots_vs_consumer(test: &str, b: Backing) {
    run_variant(test, b, Target::Slots, Side::Consumer);
}

fn hostile_slots_vs_producer(test: &str, b: Backing) {
    run_variant(test, b, Target::Slots, Side::Producer);
}

fn hostile_config_line_vs_consumer(test: &str, b: Backing) {
    run_variant(test, b, Target::Config, Side::Consumer);
}

fn hostile_config_line_vs_producer(test: &str, b: Backing) {
    run_variant(test, b, Target::Config, Side::Producer);
}

fn hostile_everything_vs_consumer(test: &str, b: Backing) {
    run_variant(test, b, Target::Everything, Side::Consumer);
}

fn hostile_everything_vs_producer(test: &str, b: Backing) {
    run_variant(test, b, Target::Everything, Side::Producer);
}

// ---------------------------------------------------------------------------------------------
// Part 2: real segments seen through a second attachment
// ---------------------------------------------------------------------------------------------

/// Filler of the guard zone past a ring's slot array.
const GUARD_BYTE: u8 = 0xa5;
/// Bytes of the guard zone.
const GUARD: usize = 4096;

/// A ring in real shared memory, and that memory mapped a second time with a bare `shmat` or
/// `mmap`, as the peer process has it.
struct Real {
    ring: TestRing,
}

fn cfg(slot_size: u32, slot_count: u32) -> RingConfig {
    RingConfig::new()
        .slot_size(slot_size)
        .slot_count(slot_count)
}

impl Real {
    fn new(b: Backing, cfg: &RingConfig) -> Real {
        Real { ring: b.ring(cfg) }
    }

    /// A ring in memory [`GUARD`] bytes longer than the ring, the excess filled with
    /// [`GUARD_BYTE`]: a write past the slot array changes it. The header is copied from a
    /// ring the library created (and removed at once).
    fn with_guard(b: Backing, cfg: &RingConfig) -> Real {
        let template = b.ring(cfg);
        let ring_size = HEADER_SIZE + template.slot_size() * template.slot_count();
        let mut bytes = template.raw().bytes(0..HEADER_SIZE);
        bytes.resize(ring_size, 0);
        bytes.resize(ring_size + GUARD, GUARD_BYTE);
        Real {
            ring: b.image(&bytes).into_ring(),
        }
    }

    fn raw(&self) -> &RawAttach {
        self.ring.raw()
    }

    fn ring_size(&self) -> usize {
        HEADER_SIZE + self.ring.slot_size() * self.ring.slot_count()
    }

    fn set_tail(&self, tail: u64) {
        self.raw().set_tail(tail);
    }

    fn set_head(&self, head: u64) {
        self.raw().set_head(head);
    }

    /// The slot index of counter `at`.
    fn index(&self, at: u64) -> usize {
        (at & (self.ring.slot_count() as u64 - 1)) as usize
    }

    fn set_record(&self, at: u64, len: u32, kind: u32) {
        self.raw()
            .set_record(self.ring.slot_size(), self.index(at), len, kind);
    }

    fn record(&self, at: u64) -> (u32, u32) {
        self.raw().record(self.ring.slot_size(), self.index(at))
    }

    /// The slot array's bytes.
    fn slots(&self) -> Vec<u8> {
        self.raw().bytes(SLOTS..self.ring_size())
    }

    /// The bytes after the ring, to the end of the segment.
    fn beyond(&self) -> Vec<u8> {
        self.raw().bytes(self.ring_size()..self.raw().len())
    }

    fn corrupted(&self, what: Corruption) -> Corrupted {
        Corrupted {
            ring: self.ring.ident(),
            what,
        }
    }
}

/// Both roles claimed, and one-slot messages passed through until the head (and tail) stand at
/// slot index `index`. Returns the head counter too.
fn pair_at(r: &Real, index: u64) -> (Producer, Consumer, u64) {
    let mut tx = r.ring.producer().expect("claim the producer");
    let mut rx = r.ring.consumer().expect("claim the consumer");
    let mask = r.ring.slot_count() as u64 - 1;
    let mut buf = [0u8; 8];
    let mut i = 0u8;
    while r.ring.status().head & mask != index {
        tx.try_send(&[i]).expect("room");
        assert_eq!(rx.try_recv(&mut buf), Ok(1));
        i += 1;
    }
    let st = r.ring.status();
    assert_eq!(st.head, st.tail);
    (tx, rx, st.head)
}

fn recv_vec(rx: &mut Consumer) -> Vec<u8> {
    let mut v = Vec::new();
    rx.try_recv_vec(&mut v).expect("a message");
    v
}

/// Runs `call` on `state` in a thread, lets it block for [`BLOCK_FIRST`], then runs `strike`.
/// Returns the state, what the call returned, and how long after the strike it returned.
fn strike_while_blocked<S: Send + 'static, R: Send + 'static>(
    state: S,
    call: impl FnOnce(&mut S) -> R + Send + 'static,
    strike: impl FnOnce(),
) -> (S, R, Duration) {
    let handle = thread::spawn(move || {
        let mut state = state;
        let got = call(&mut state);
        (state, got, Instant::now())
    });
    thread::sleep(BLOCK_FIRST);
    assert!(
        !handle.is_finished(),
        "the call returned before the peer misbehaved"
    );
    let at = Instant::now();
    strike();
    let (state, got, done) = handle.join().expect("the blocked call panicked");
    (state, got, done.saturating_duration_since(at))
}

/// The first receive (through `first`) fails at once with `what`; after `repair` puts back a
/// plausible state, every receive path, blocking ones included, still fails at once with the
/// same error.
fn assert_recv_corrupted(
    r: &Real,
    rx: &mut Consumer,
    what: Corruption,
    first: RecvPath,
    repair: impl FnOnce(),
) {
    let want = r.corrupted(what);
    first.expect(rx, want);
    assert_eq!(rx.poisoned(), Some(&want));
    repair();
    for path in RecvPath::ALL {
        path.expect(rx, want);
    }
    assert_eq!(rx.poisoned(), Some(&want));
}

// ---------------------------------------------------------------------------------------------
// Row 6: indices out of range
// ---------------------------------------------------------------------------------------------

/// After three messages (head = tail = h, 8 slots), the producer's line says `tail = bad(h)`:
/// written before the first receive, or while a blocking receive sleeps. The first receive and
/// then every path (after a repair) fail at once with `TailOutOfRange`.
fn tail_case(b: Backing, start: u64, bad: u64, asleep: bool, first: RecvPath) {
    let r = Real::new(b, &cfg(64, 8).initial_index(start));
    let (_tx, mut rx, h) = pair_at(&r, start.wrapping_add(3) & 7);
    assert!(bad.wrapping_sub(h) > 8, "the case must be out of range");
    let want = r.corrupted(Corruption::TailOutOfRange {
        tail: bad,
        head: h,
        last_tail: h,
        capacity: 8,
    });
    let ctx = format!("start {start:#x}, head {h:#x}, tail {bad:#x}, {first:?}, asleep {asleep}");
    if asleep {
        let (back, got, after) =
            strike_while_blocked(rx, move |rx| first.run(rx), || r.set_tail(bad));
        rx = back;
        assert_eq!(got, Err(Ok(want)), "{ctx}");
        assert!(after < BOUND, "{ctx}: returned {after:?} after the write");
    } else {
        r.set_tail(bad);
        let t0 = Instant::now();
        first.expect(&mut rx, want);
        assert!(t0.elapsed() < bound(AT_ONCE), "{ctx}");
    }
    r.set_tail(h);
    for path in RecvPath::ALL {
        path.expect(&mut rx, want);
    }
    assert_eq!(rx.poisoned(), Some(&want), "{ctx}");
}

/// Runs [`tail_case`] for each start, each bad tail, before and during a blocking call,
/// rotating the path that meets the bad tail first.
fn tail_cases(b: Backing, bad: &[fn(u64) -> u64]) {
    let mut n = 0;
    for start in STARTS {
        let h = start.wrapping_add(3);
        for f in bad {
            for asleep in [false, true] {
                let first = if asleep {
                    RecvPath::BLOCKING[n / 2 % 2]
                } else {
                    RecvPath::ALL[n / 2 % RecvPath::ALL.len()]
                };
                tail_case(b, start, f(h), asleep, first);
                n += 1;
            }
        }
    }
}

fn r6_tail_behind_head_is_corrupted_at_once(b: Backing) {
    let _one_at_a_time = serial();
    tail_cases(
        b,
        &[
            |h| h.wrapping_sub(1),
            |h| h.wrapping_sub(8),
            |h| h.wrapping_sub(1 << 62),
        ],
    );
}

fn r6_tail_more_than_capacity_ahead_is_corrupted_at_once(b: Backing) {
    let _one_at_a_time = serial();
    tail_cases(
        b,
        &[
            |h| h.wrapping_add(9),
            |h| h.wrapping_add(1 << 32),
            |h| h.wrapping_add(1 << 63),
        ],
    );
}

fn r6_tail_u64_max_is_corrupted_at_once(b: Backing) {
    let _one_at_a_time = serial();
    // Also 0: for the start just before the 2^64 wrap, the head is already past it.
    tail_cases(b, &[|_| u64::MAX, |_| 0]);
}

/// A 4-slot ring in a segment with a guard zone, filled by the producer; no consumer: the test
/// plays it through the head word. With `progress`, the head first moves forward by two
/// legitimately and the producer fills the ring again. Then the head becomes `bad(head, tail)`,
/// before the first send (through `first`) or while a blocking send sleeps: every send fails at
/// once with `HeadOutOfRange`, the slot array, the producer's tail and the guard zone are
/// unchanged, and an honest consumer then reads every unread record intact.
fn head_case(
    b: Backing,
    start: u64,
    progress: bool,
    bad: fn(u64, u64) -> u64,
    asleep: bool,
    first: SendPath,
) {
    let r = Real::with_guard(b, &cfg(64, 4).initial_index(start));
    let mut tx = r.ring.producer().expect("claim the producer");
    let msgs: Vec<Vec<u8>> = (1..=6u8)
        .map(|i| (0..40).map(|j| i.wrapping_mul(37) ^ j).collect())
        .collect();
    for m in &msgs[..4] {
        tx.try_send(m).expect("room");
    }
    let (mut head, mut tail, mut unread) = (start, start.wrapping_add(4), 0..4);
    if progress {
        r.set_head(start.wrapping_add(2));
        tx.try_send(&msgs[4]).expect("room after the head moved");
        tx.try_send(&msgs[5]).expect("room after the head moved");
        (head, tail, unread) = (start.wrapping_add(2), start.wrapping_add(6), 2..6);
    }
    assert!(matches!(tx.try_send(b"x"), Err(TrySendError::Full)));
    let bad = bad(head, tail);
    assert!(
        bad.wrapping_sub(head) > tail.wrapping_sub(head),
        "the case must be out of range"
    );
    let want = r.corrupted(Corruption::HeadOutOfRange {
        head: bad,
        last_head: head,
        tail,
    });
    let ctx = format!(
        "start {start:#x}, progress {progress}, head {head:#x} -> {bad:#x}, tail {tail:#x}, \
         {first:?}, asleep {asleep}"
    );
    let before = (
        r.slots(),
        r.raw().u64(TAIL).load(Ordering::Relaxed),
        r.raw().u64(SENT).load(Ordering::Relaxed),
    );
    let msg = vec![0xee; 40];
    if asleep {
        let m = msg.clone();
        let (back, got, after) =
            strike_while_blocked(tx, move |tx| first.run(tx, &m), || r.set_head(bad));
        tx = back;
        assert_eq!(got, Err(Ok(want)), "{ctx}");
        assert!(after < BOUND, "{ctx}: returned {after:?} after the write");
    } else {
        r.set_head(bad);
        first.expect(&mut tx, &msg, want);
    }
    r.set_head(head);
    for path in SendPath::ALL {
        path.expect(&mut tx, &msg, want);
    }
    assert_eq!(tx.poisoned(), Some(&want), "{ctx}");
    let after = (
        r.slots(),
        r.raw().u64(TAIL).load(Ordering::Relaxed),
        r.raw().u64(SENT).load(Ordering::Relaxed),
    );
    assert!(
        before == after,
        "{ctx}: the producer wrote after the bad head"
    );
    assert!(
        r.beyond().iter().all(|&b| b == GUARD_BYTE),
        "{ctx}: the producer wrote past the slot array"
    );
    drop(tx);
    let mut rx = r.ring.consumer().expect("claim the consumer");
    for i in unread {
        assert_eq!(recv_vec(&mut rx), msgs[i], "{ctx}: unread message {i}");
    }
    assert_eq!(
        rx.try_recv(&mut [0u8; 64]),
        Err(TryRecvError::Disconnected),
        "{ctx}"
    );
}

/// Runs [`head_case`] for each start, with and without progress first, for each bad head,
/// before and during a blocking send, rotating the path that meets the bad head first.
fn head_cases(b: Backing, bad: &[fn(u64, u64) -> u64]) {
    let mut n = 0;
    for start in STARTS {
        for progress in [false, true] {
            for &f in bad {
                for asleep in [false, true] {
                    let first = if asleep {
                        SendPath::BLOCKING[n / 2 % 2]
                    } else {
                        SendPath::ALL[n / 2 % SendPath::ALL.len()]
                    };
                    head_case(b, start, progress, f, asleep, first);
                    n += 1;
                }
            }
        }
    }
}

fn r6_head_moving_backwards_is_corrupted_at_once(b: Backing) {
    let _one_at_a_time = serial();
    head_cases(
        b,
        &[
            |h, _| h.wrapping_sub(1),
            |h, _| h.wrapping_sub(4),
            |h, _| h.wrapping_sub(1 << 62),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Row 7: record lengths
// ---------------------------------------------------------------------------------------------

fn r7_zero_length_padding_where_not_allowed_is_corrupted(b: Backing) {
    let _one_at_a_time = serial();
    for start in STARTS {
        // 8 slots of 64 bytes; padding at index 2 must cover 6 slots: 6 * 64 - 8 bytes.
        let r = Real::new(b, &cfg(64, 8).initial_index(start));
        let (_tx, mut rx, h) = pair_at(&r, 2);
        r.set_record(h, 0, KIND_PADDING);
        r.set_record(h.wrapping_add(6), 0, KIND_MESSAGE);
        r.set_tail(h.wrapping_add(7));
        let first = RecvPath::ALL[(start % 7) as usize];
        assert_recv_corrupted(
            &r,
            &mut rx,
            Corruption::BadPadding {
                at: h,
                len: 0,
                expected: 6 * 64 - 8,
            },
            first,
            || r.set_record(h, 6 * 64 - 8, KIND_PADDING),
        );
    }
}

/// The complement of the test above: a zero-length message is a message, and padding of one
/// 8-byte slot has length 0. The honest producer writes both; the consumer accepts both.
fn r7_zero_length_records_where_allowed_are_delivered(b: Backing) {
    let _one_at_a_time = serial();
    for start in STARTS {
        let r = Real::new(b, &cfg(8, 16).initial_index(start));
        let (mut tx, mut rx, h) = pair_at(&r, 14);
        tx.try_send(b"").expect("room");
        assert_eq!(r.record(h), (0, KIND_MESSAGE));
        // At index 15 an 8-byte message (2 slots) does not fit: one slot of padding, length 0.
        tx.try_send(b"8 bytes!").expect("room");
        assert_eq!(r.record(h.wrapping_add(1)), (0, KIND_PADDING));
        assert_eq!(r.record(h.wrapping_add(2)), (8, KIND_MESSAGE));
        let mut buf = [0u8; 56];
        assert_eq!(rx.recv_timeout(&mut buf, LONG), Ok(0));
        assert_eq!(rx.recv_timeout(&mut buf, LONG), Ok(8));
        assert_eq!(&buf[..8], b"8 bytes!");
        assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Empty));
        assert_eq!(r.ring.status().head, h.wrapping_add(4));
    }
}

fn r7_over_a_configured_maximum_is_corrupted(b: Backing) {
    let _one_at_a_time = serial();
    // 8 slots of 64 bytes allow 248; this ring allows 100, and 101 still fits in 2 slots.
    for (i, len) in [101u32, 120, 248].into_iter().enumerate() {
        let r = Real::new(b, &cfg(64, 8).max_message(100));
        let (mut tx, mut rx, h) = pair_at(&r, 1);
        tx.try_send(&[7u8; 100]).expect("room");
        r.set_record(h, len, KIND_MESSAGE);
        assert_recv_corrupted(
            &r,
            &mut rx,
            Corruption::RecordTooLong {
                at: h,
                len,
                max: 100,
            },
            RecvPath::ALL[i * 3],
            || r.set_record(h, 100, KIND_MESSAGE),
        );
    }
}

/// Records start on slot boundaries by construction, so a misaligned record is a header read
/// from the middle of another record: here a 3-slot record whose length the hostile shortened
/// to one slot. The shortened message cannot be told from a real one (it is delivered); the
/// "header" after it is payload bytes, and each kind of garbage there is caught.
fn r7_misaligned_record_headers_are_corrupted(b: Backing) {
    let _one_at_a_time = serial();
    let words = |len: u32, kind: u32| [len.to_ne_bytes(), kind.to_ne_bytes()].concat();
    type Case = (Vec<u8>, fn(u64) -> Corruption);
    let cases: [Case; 5] = [
        (words(0x1234_5678, 0xdead_beef), |at| {
            Corruption::UnknownKind {
                at,
                kind: 0xdead_beef,
            }
        }),
        (words(0, 0), |at| Corruption::UnknownKind { at, kind: 0 }),
        // Padding from index 2 would cover 6 slots, more than the 3 published.
        (words(5, KIND_PADDING), |at| {
            Corruption::PaddingWithoutMessage { at }
        }),
        (words(300, KIND_MESSAGE), |at| Corruption::RecordTooLong {
            at,
            len: 300,
            max: 248,
        }),
        // 4 slots from index 2, of which 3 are published.
        (words(200, KIND_MESSAGE), |at| {
            Corruption::RecordBeyondTail {
                at,
                slots: 4,
                available: 3,
            }
        }),
    ];
    for start in STARTS {
        for (i, (fake, what)) in cases.iter().enumerate() {
            let r = Real::new(b, &cfg(64, 8).initial_index(start));
            let (mut tx, mut rx, h) = pair_at(&r, 1);
            // 150 bytes: 3 slots; payload bytes 56..64 are the first 8 bytes of the 2nd slot.
            let mut a: Vec<u8> = (0..150u8).collect();
            a[56..64].copy_from_slice(fake);
            tx.try_send(&a).expect("room");
            tx.try_send(b"after").expect("room");
            r.set_record(h, 40, KIND_MESSAGE);
            assert_eq!(recv_vec(&mut rx), a[..40], "start {start:#x}");
            assert_recv_corrupted(
                &r,
                &mut rx,
                what(h.wrapping_add(1)),
                RecvPath::ALL[i],
                || r.set_record(h.wrapping_add(1), 0, KIND_MESSAGE),
            );
        }
    }
}

fn r7_padding_in_the_wrong_place_is_corrupted(b: Backing) {
    let _one_at_a_time = serial();
    for start in STARTS {
        // Valid padding at index 6 (2 slots), then padding again at index 0, where it would
        // cover the whole array: no message can follow it.
        for (i, tail_after) in [3u64, 8].into_iter().enumerate() {
            let r = Real::new(b, &cfg(64, 8).initial_index(start));
            let (_tx, mut rx, h) = pair_at(&r, 6);
            r.set_record(h, 2 * 64 - 8, KIND_PADDING);
            r.set_record(h.wrapping_add(2), 8 * 64 - 8, KIND_PADDING);
            r.set_tail(h.wrapping_add(tail_after));
            assert_recv_corrupted(
                &r,
                &mut rx,
                Corruption::PaddingWithoutMessage {
                    at: h.wrapping_add(2),
                },
                RecvPath::ALL[i + 4],
                || r.set_record(h.wrapping_add(2), 0, KIND_MESSAGE),
            );
        }
    }
    // A one-slot ring: every position is slot 0, so padding is never valid.
    let r = Real::new(b, &cfg(64, 1));
    let (_tx, mut rx, h) = pair_at(&r, 0);
    r.set_record(h, 56, KIND_PADDING);
    r.set_tail(h.wrapping_add(1));
    assert_recv_corrupted(
        &r,
        &mut rx,
        Corruption::PaddingWithoutMessage { at: h },
        RecvPath::RecvTimeout,
        || r.set_record(h, 0, KIND_MESSAGE),
    );
}

// ---------------------------------------------------------------------------------------------
// Row 8: a hostile consumer moving the head beyond the tail or backwards
// ---------------------------------------------------------------------------------------------

/// The head beyond the published tail by one, by enough that the full ring would look empty
/// (and more), and by half the counter space; backwards is in row 6 above, through the same
/// checks ([`head_case`]: slots, tail and guard zone unchanged, unread records intact).
fn r8_head_beyond_tail_never_overwrites_unread_records_nor_writes_out_of_bounds(b: Backing) {
    let _one_at_a_time = serial();
    head_cases(
        b,
        &[
            |_, t| t.wrapping_add(1),
            |_, t| t.wrapping_add(4),
            |_, t| t.wrapping_add(5),
            |_, t| t.wrapping_add(1 << 63),
        ],
    );
}

/// Absolute values that are out of range for some starts (0 and u64::MAX around the wraps).
fn r8_head_at_zero_or_u64_max_never_overwrites_unread_records(b: Backing) {
    let _one_at_a_time = serial();
    let mut n = 0;
    for start in STARTS {
        for bad in [0, u64::MAX] {
            let (head, tail) = (start, start.wrapping_add(4));
            if bad.wrapping_sub(head) <= tail.wrapping_sub(head) {
                continue; // in range for this start
            }
            let f: fn(u64, u64) -> u64 = if bad == 0 { |_, _| 0 } else { |_, _| u64::MAX };
            head_case(
                b,
                start,
                false,
                f,
                n % 2 == 1,
                SendPath::BLOCKING[n / 2 % 2],
            );
            n += 1;
        }
    }
    assert_eq!(n, 3, "cases out of range");
}

// ---------------------------------------------------------------------------------------------
// Row 9: counters near 2^32 and 2^64
// ---------------------------------------------------------------------------------------------

/// The child of the row 9 test: sends `count` messages with blocking calls (send, reserve,
/// and batches).
fn wrap_producer_child() {
    let ring = child_image_ring().expect("attach the ring");
    let seed: u64 = param(VAR_SEED);
    let count: u64 = param(VAR_COUNT);
    let mut tx = ring.producer().expect("claim the producer");
    let max = tx.max_message();
    let mut buf = vec![0u8; max];
    let mut seq = 0;
    while seq < count {
        let len = msg_len(seed, seq, max);
        fill_msg(seed, seq, &mut buf[..len]);
        match seq % 3 {
            0 => tx.send_timeout(&buf[..len], LONG).expect("send"),
            1 => {
                let mut g = tx.reserve_timeout(len, LONG).expect("reserve");
                g.copy_from_slice(&buf[..len]);
                g.commit();
            }
            _ => {
                // A batch of what fits now (at least this message: room was waited for).
                tx.reserve_timeout(len, LONG).map(drop).expect("room");
                let mut batch = tx.batch();
                while seq < count {
                    let len = msg_len(seed, seq, max);
                    fill_msg(seed, seq, &mut buf[..len]);
                    if batch.try_send(&buf[..len]).is_err() {
                        break;
                    }
                    seq += 1;
                }
                continue;
            }
        }
        seq += 1;
    }
    print_result("sent", seq);
}

fn r9_two_processes_deliver_across_the_counter_wraps(test: &str, b: Backing) {
    let _one_at_a_time = serial();
    const COUNT: u64 = 5_000;
    const SEED: u64 = 0x5eed_0009;
    for (start, boundary) in [
        ((1u64 << 32) - 40, 1u64 << 32),
        (u64::MAX - 40, 0),
        (u64::MAX, 0),
    ] {
        let r = Real::new(b, &cfg(64, 16).initial_index(start));
        let max = r.ring.max_message();
        let child = r.ring.spawn(
            test,
            "wrap-producer",
            &[(VAR_SEED, SEED.to_string()), (VAR_COUNT, COUNT.to_string())],
        );
        let mut rx = r.ring.consumer().expect("claim the consumer");
        let mut buf = vec![0u8; max];
        let mut scratch = Vec::new();
        for seq in 0..COUNT {
            let checked = if seq % 2 == 0 {
                let n = rx.recv_timeout(&mut buf, LONG).expect("a message");
                check_msg(SEED, seq, max, &buf[..n], &mut scratch)
            } else {
                let m = rx.lend_timeout(LONG).expect("a message");
                check_msg(SEED, seq, max, &m.to_vec(), &mut scratch)
            };
            checked.unwrap_or_else(|e| panic!("start {start:#x}: {e}"));
        }
        assert_eq!(
            rx.recv_timeout(&mut buf, LONG),
            Err(RecvError::Disconnected)
        );
        child.wait_success(LONG);
        let st = r.ring.status();
        assert_eq!((st.head, st.sent, st.received), (st.tail, COUNT, COUNT));
        let moved = st.tail.wrapping_sub(start);
        assert!(
            moved > boundary.wrapping_sub(start),
            "start {start:#x}: the counters must cross {boundary:#x} (moved {moved})"
        );
    }
}

/// The range checks hold to one slot across the 2^64 wrap: a tail exactly a ring ahead of the
/// head is accepted and one more is not; a head exactly at the published tail is accepted and
/// one more is not.
fn r9_index_checks_are_exact_across_the_wrap(b: Backing) {
    let _one_at_a_time = serial();
    // Consumer: a full ring of one-slot messages across the wrap.
    let start = u64::MAX - 3;
    let r = Real::new(b, &cfg(64, 8).initial_index(start));
    let (mut tx, mut rx) = (r.ring.producer().unwrap(), r.ring.consumer().unwrap());
    let msgs: Vec<[u8; 2]> = (0..8u8).map(|i| [i, !i]).collect();
    for m in &msgs {
        tx.try_send(m).expect("room");
    }
    assert_eq!(r.ring.status().tail, 4, "the tail wrapped");
    for m in &msgs {
        assert_eq!(recv_vec(&mut rx), m);
    }
    // A hostile tail exactly a ring ahead: accepted; the consumer reads the old records again
    // (a peer can always replay records; it cannot make the consumer leave the array).
    let h = r.ring.status().head;
    r.set_tail(h.wrapping_add(8));
    for m in &msgs {
        assert_eq!(recv_vec(&mut rx), m);
    }
    let h = h.wrapping_add(8);
    r.set_tail(h.wrapping_add(9));
    assert_recv_corrupted(
        &r,
        &mut rx,
        Corruption::TailOutOfRange {
            tail: h.wrapping_add(9),
            head: h,
            last_tail: h,
            capacity: 8,
        },
        RecvPath::RecvTimeout,
        || r.set_tail(h),
    );

    // Producer: a full 4-slot ring across the wrap, no consumer.
    let start = u64::MAX - 1;
    let r = Real::new(b, &cfg(64, 4).initial_index(start));
    let mut tx = r.ring.producer().unwrap();
    for i in 0..4u8 {
        tx.try_send(&[i]).expect("room");
    }
    let t = start.wrapping_add(4);
    r.set_head(t); // exactly the published tail: everything released
    for i in 4..8u8 {
        tx.send_timeout(&[i], LONG)
            .expect("room after the head moved");
    }
    let t = t.wrapping_add(4);
    r.set_head(t.wrapping_add(1));
    let want = r.corrupted(Corruption::HeadOutOfRange {
        head: t.wrapping_add(1),
        last_head: t.wrapping_sub(4),
        tail: t,
    });
    SendPath::SendTimeout.expect(&mut tx, b"x", want);
    r.set_head(t);
    for path in SendPath::ALL {
        path.expect(&mut tx, b"x", want);
    }
}
