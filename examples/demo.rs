//! shmpipe against an anonymous pipe, between two real processes.
//!
//! Run it with `cargo run --release --example demo`. It takes a few seconds.
//!
//! The demo re-executes itself as a child process (selected by the `SHMPIPE_DEMO_ROLE`
//! environment variable) and measures, for 64-byte messages, in the same run and between the
//! same two processes:
//!
//! - **round-trip time**: ping-pong over two rings (parent to child, child to parent), the child
//!   echoing every message back; median and p99 over 100 000 round trips after a warm-up;
//! - **one-way throughput**: millions of messages streamed from parent to child, the child
//!   checking a sequence number in every one and acknowledging the last; the time runs from the
//!   first send to that acknowledgement;
//!
//! and then the same two things over anonymous pipes (the child's stdin and stdout), one
//! `write` and one `read_exact` of exactly 64 bytes per message.
//!
//! The rings are created with [`Key::Private`] and marked for removal (`IPC_RMID`) right after
//! creation: Linux lets the child still attach them by shmid (passed on its command line), and
//! the kernel frees them when the last process detaches, so nothing is left in `ipcs -m` even if
//! either process is killed. The child is killed and reaped if the parent fails or panics, and it
//! asks the kernel to kill it if the parent dies (`PR_SET_PDEATHSIG`).
//!
//! Both sides use the non-blocking calls and spin (`std::hint::spin_loop`) when a ring is full or
//! empty, to show the ring's own cost with no wait strategy in the way (`examples/wake.rs`
//! measures the blocking calls); the two processes are therefore pinned to different CPUs when
//! the machine has two or more.
//!
//! It prints the machine's load average and, after the run, how much of the CPUs' time other
//! processes took meanwhile, with a warning when that was enough to make the numbers the busy
//! machine's rather than the ring's (the same check as `shmpipe bench`, `cli/src/load.rs`).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use shmpipe::{Consumer, Producer, Ring, RingConfig, Shmid, TryRecvError, TrySendError};

mod common;
/// The machine-load check shared with `shmpipe bench`.
#[path = "../cli/src/load.rs"]
mod load;
use common::{
    ChildGuard, MSG, Res, allowed_cpus, fmt_duration, is_message, message, pin_to, print_flush,
};

/// Round trips before the measured ones (per transport).
const RTT_WARMUP: u64 = 10_000;
/// Measured round trips (per transport).
const RTT_ROUNDS: u64 = 100_000;
/// Messages streamed through the ring.
const SHM_STREAM: u64 = 10_000_000;
/// Messages per batch in the batched shmpipe stream.
const BATCH: u64 = 32;
/// Messages streamed through the pipe: a system call each way per message makes it far slower,
/// so fewer keep the demo short.
const PIPE_STREAM: u64 = 1_000_000;
/// The environment variable that makes the re-executed binary the child.
const ROLE_ENV: &str = "SHMPIPE_DEMO_ROLE";
/// The parent gives up on the shmpipe phases after this long: the child must have hung.
const DEADLINE: Duration = Duration::from_secs(60);

fn main() -> Res<()> {
    if std::env::var_os(ROLE_ENV).is_some_and(|v| v == "child") {
        child_main()
    } else {
        parent_main()
    }
}

/// The ring shape used in both directions: the defaults (4096 slots of 64 bytes). A 64-byte
/// message plus its 8-byte record header takes two slots, so no cache line holds parts of two
/// messages. (8-byte slots pack messages tighter but were no faster here.)
fn ring_config() -> RingConfig {
    RingConfig::new()
}

// ---------------------------------------------------------------------------------------------
// Messages

// ---------------------------------------------------------------------------------------------
// Spinning

/// Spins politely while a ring is full or empty, and every 65 536 spins checks that the peer is
/// still there (and that we have not waited forever).
struct Waiter<'a> {
    spins: u32,
    /// Only one CPU: give it to the peer on every spin, or each side would burn a whole time
    /// slice before the other could answer.
    yield_too: bool,
    check: &'a mut dyn FnMut() -> Res<()>,
}

impl Waiter<'_> {
    #[inline]
    fn wait(&mut self) -> Res<()> {
        std::hint::spin_loop();
        if self.yield_too {
            std::thread::yield_now();
        }
        self.spins = self.spins.wrapping_add(1);
        if self.spins & 0xffff == 0 {
            (self.check)()?;
        }
        Ok(())
    }
}

/// Sends `msg`, spinning while the ring is full.
#[inline]
fn send(tx: &mut Producer, msg: &[u8], w: &mut Waiter<'_>) -> Res<()> {
    loop {
        match tx.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full) => w.wait()?,
            // The error borrows `msg`; turn it into an owned one.
            Err(e) => return Err(format!("send failed: {e}").into()),
        }
    }
}

/// Receives into `buf`, spinning while the ring is empty.
#[inline]
fn recv(rx: &mut Consumer, buf: &mut [u8], w: &mut Waiter<'_>) -> Res<usize> {
    loop {
        match rx.try_recv(buf) {
            Ok(n) => return Ok(n),
            Err(TryRecvError::Empty) => w.wait()?,
            Err(e) => return Err(e.into()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CPUs

// ---------------------------------------------------------------------------------------------
// The parent

/// What one transport achieved.
struct Results {
    rtt_median: Duration,
    rtt_p99: Duration,
    msgs_per_sec: f64,
}

/// Median and p99 (nearest rank) of round-trip times in nanoseconds.
fn percentiles(mut ns: Vec<u64>) -> (Duration, Duration) {
    ns.sort_unstable();
    let rank = |p: f64| {
        let i = ((p * ns.len() as f64).ceil() as usize).clamp(1, ns.len()) - 1;
        Duration::from_nanos(ns[i])
    };
    (rank(0.50), rank(0.99))
}

fn parent_main() -> Res<()> {
    let config = ring_config();
    // Parent to child (pings and the stream) and child to parent (pongs and acknowledgements).
    let down = Ring::create(shmpipe::Key::Private, &config)?;
    // IPC_RMID at once: the kernel keeps the memory while anyone is attached, and Linux still
    // lets the child attach by shmid. From here on nothing can leak, whoever crashes.
    down.remove()?;
    let up = Ring::create(shmpipe::Key::Private, &config)?;
    up.remove()?;
    let down_id = down.shmid().ok_or("ring has no shmid")?;
    let up_id = up.shmid().ok_or("ring has no shmid")?;

    let cpus = allowed_cpus();
    let (parent_cpu, child_cpu) = match cpus.as_slice() {
        [a, b, ..] => (Some(*a), Some(*b)),
        _ => (None, None),
    };

    let mut child = ChildGuard::new(
        Command::new(std::env::current_exe()?)
            .env(ROLE_ENV, "child")
            .arg(down_id.to_string())
            .arg(up_id.to_string())
            .arg(child_cpu.map_or_else(|| "-".to_string(), |c| c.to_string()))
            .arg(std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let mut to_child: ChildStdin = child.child.stdin.take().ok_or("no child stdin")?;
    let mut from_child: ChildStdout = child.child.stdout.take().ok_or("no child stdout")?;
    if let Some(cpu) = parent_cpu {
        pin_to(cpu)?;
    }

    let mut tx = down.producer()?;
    let mut rx = up.consumer()?;
    let load_before = load::Sample::now();

    // The record header is 8 bytes (docs/LAYOUT.md); the API does not export it.
    let slots_per_msg = (8 + MSG).div_ceil(down.slot_size());
    println!("shmpipe demo: {MSG}-byte messages between two processes");
    println!(
        "  rings      2 (one per direction) of {} slots x {} bytes ({} KiB each), max message {} \
         bytes\n             a {MSG}-byte message + its 8-byte record header takes {} slots: {} \
         messages fit",
        down.slot_count(),
        down.slot_size(),
        down.slot_count() * down.slot_size() / 1024,
        down.max_message(),
        slots_per_msg,
        down.slot_count() / slots_per_msg,
    );
    println!(
        "  segments   shmid {down_id} (parent -> child), {up_id} (child -> parent): Key::Private, \
         marked\n             for removal (IPC_RMID) at creation, so they vanish with the two \
         processes"
    );
    println!(
        "  processes  parent pid {}, child pid {}",
        std::process::id(),
        child.child.id()
    );
    match (parent_cpu, child_cpu) {
        (Some(p), Some(c)) => println!("  CPUs       parent pinned to CPU {p}, child to CPU {c}"),
        _ => println!(
            "  CPUs       NOTE: only one CPU available, so no pinning; both sides yield on every \
             spin\n             and the shmpipe numbers measure the scheduler more than the ring"
        ),
    }
    println!(
        "  load       load average {} (1 min) on {} CPUs before the run",
        load::load_average().map_or("unknown".to_string(), |l| format!("{l:.2}")),
        load::cpus()
    );
    println!(
        "  runs       {RTT_ROUNDS} round trips after {RTT_WARMUP} warm-up, per transport\n             \
         stream: {SHM_STREAM} messages over shmpipe (twice: one by one, then in batches of \
         {BATCH}),\n             {PIPE_STREAM} over the pipe"
    );
    println!();

    // The child writes one byte on its stdout once it has attached both rings and claimed its
    // roles (or exits with an error, which reads as end of file here).
    let mut ready = [0u8; 1];
    from_child
        .read_exact(&mut ready)
        .map_err(|e| format!("the child did not start: {e}"))?;

    let started = Instant::now();
    let mut check = || -> Res<()> {
        child.check_alive()?;
        if started.elapsed() > DEADLINE {
            return Err("timed out waiting for the child".into());
        }
        Ok(())
    };
    let mut w = Waiter {
        spins: 0,
        yield_too: child_cpu.is_none(),
        check: &mut check,
    };

    print_flush("shmpipe: ping-pong ... ");
    let shm_rtt = shm_ping_pong(&mut tx, &mut rx, &mut w)?;
    print_flush("stream ... ");
    let shm_rate = shm_stream(&mut tx, &mut rx, &mut w)?;
    print_flush("batched stream ... ");
    let batch_rate = shm_stream_batched(&mut tx, &mut rx, &mut w)?;
    println!("done");

    print_flush("pipe:    ping-pong ... ");
    let pipe_rtt = pipe_ping_pong(&mut to_child, &mut from_child)?;
    print_flush("stream ... ");
    let pipe_rate = pipe_stream(&mut to_child, &mut from_child)?;
    println!("done");

    let status = child.wait()?;
    if !status.success() {
        return Err(format!("the child failed ({status})").into());
    }
    // After the child is reaped, so its CPU time counts as ours.
    let load = load_before
        .zip(load::Sample::now())
        .map(|(a, b)| a.until(&b));

    let shm = Results {
        rtt_median: shm_rtt.0,
        rtt_p99: shm_rtt.1,
        msgs_per_sec: shm_rate,
    };
    let pipe = Results {
        rtt_median: pipe_rtt.0,
        rtt_p99: pipe_rtt.1,
        msgs_per_sec: pipe_rate,
    };
    print_table(&shm, batch_rate, &pipe);
    println!();
    match load {
        Some(l) => {
            println!("machine: {}", l.summary());
            if let Some(w) = l.warning() {
                println!("{w}");
            }
        }
        None => println!("machine: load unknown (/proc not readable)"),
    }
    Ok(())
}

/// Round trips over the rings; returns the median and p99.
fn shm_ping_pong(
    tx: &mut Producer,
    rx: &mut Consumer,
    w: &mut Waiter<'_>,
) -> Res<(Duration, Duration)> {
    let mut samples = Vec::with_capacity(RTT_ROUNDS as usize);
    let mut buf = [0u8; MSG];
    for seq in 0..RTT_WARMUP + RTT_ROUNDS {
        let msg = message(seq);
        let t0 = Instant::now();
        send(tx, &msg, w)?;
        let n = recv(rx, &mut buf, w)?;
        let dt = t0.elapsed();
        if !is_message(&buf[..n], seq) {
            return Err(format!("pong {seq} came back wrong").into());
        }
        if seq >= RTT_WARMUP {
            samples.push(dt.as_nanos() as u64);
        }
    }
    Ok(percentiles(samples))
}

/// Streams `SHM_STREAM` messages, one `try_send` each; returns messages per second, up to the
/// child's acknowledgement of the last one.
fn shm_stream(tx: &mut Producer, rx: &mut Consumer, w: &mut Waiter<'_>) -> Res<f64> {
    let t0 = Instant::now();
    for seq in 0..SHM_STREAM {
        send(tx, &message(seq), w)?;
    }
    await_ack(rx, w, t0)
}

/// The same stream through `SendBatch`: one store of the tail per `BATCH` messages.
fn shm_stream_batched(tx: &mut Producer, rx: &mut Consumer, w: &mut Waiter<'_>) -> Res<f64> {
    let t0 = Instant::now();
    let mut batch = tx.batch();
    for seq in 0..SHM_STREAM {
        let msg = message(seq);
        loop {
            match batch.try_send(&msg) {
                Ok(()) => break,
                Err(TrySendError::Full) => {
                    // The child cannot make room for what it cannot see yet.
                    batch.publish();
                    w.wait()?;
                }
                Err(e) => return Err(format!("send failed: {e}").into()),
            }
        }
        if seq % BATCH == BATCH - 1 {
            batch.publish();
        }
    }
    drop(batch); // publishes the rest
    await_ack(rx, w, t0)
}

/// Waits for the child's acknowledgement of a whole stream; returns messages per second since
/// `t0`.
fn await_ack(rx: &mut Consumer, w: &mut Waiter<'_>, t0: Instant) -> Res<f64> {
    let mut ack = [0u8; MSG];
    let n = recv(rx, &mut ack, w)?;
    let secs = t0.elapsed().as_secs_f64();
    if !is_message(&ack[..n], SHM_STREAM) {
        return Err("the child did not acknowledge the whole stream".into());
    }
    Ok(SHM_STREAM as f64 / secs)
}

/// Round trips over the pipes; returns the median and p99.
fn pipe_ping_pong(to: &mut ChildStdin, from: &mut ChildStdout) -> Res<(Duration, Duration)> {
    let mut samples = Vec::with_capacity(RTT_ROUNDS as usize);
    let mut buf = [0u8; MSG];
    for seq in 0..RTT_WARMUP + RTT_ROUNDS {
        let msg = message(seq);
        let t0 = Instant::now();
        to.write_all(&msg)?;
        from.read_exact(&mut buf)?;
        let dt = t0.elapsed();
        if !is_message(&buf, seq) {
            return Err(format!("pipe pong {seq} came back wrong").into());
        }
        if seq >= RTT_WARMUP {
            samples.push(dt.as_nanos() as u64);
        }
    }
    Ok(percentiles(samples))
}

/// Streams `PIPE_STREAM` messages, one `write` each; returns messages per second.
fn pipe_stream(to: &mut ChildStdin, from: &mut ChildStdout) -> Res<f64> {
    let t0 = Instant::now();
    for seq in 0..PIPE_STREAM {
        to.write_all(&message(seq))?;
    }
    let mut ack = [0u8; MSG];
    from.read_exact(&mut ack)?;
    let secs = t0.elapsed().as_secs_f64();
    if !is_message(&ack, PIPE_STREAM) {
        return Err("the child did not acknowledge the whole pipe stream".into());
    }
    Ok(PIPE_STREAM as f64 / secs)
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else {
        format!("{:.0} k", r / 1e3)
    }
}

fn print_table(shm: &Results, batch_rate: f64, pipe: &Results) {
    let row = |name: &str, median: &str, p99: &str, rate: &str, mb: &str| {
        println!("{name:<20} {median:>11} {p99:>11} {rate:>10} {mb:>8}");
    };
    println!();
    row("transport", "RTT median", "RTT p99", "msgs/s", "MB/s");
    let mb = |rate: f64| format!("{:.0}", rate * MSG as f64 / 1e6);
    row(
        "shmpipe",
        &fmt_duration(shm.rtt_median),
        &fmt_duration(shm.rtt_p99),
        &fmt_rate(shm.msgs_per_sec),
        &mb(shm.msgs_per_sec),
    );
    row(
        &format!("shmpipe (batch {BATCH})"),
        "-",
        "-",
        &fmt_rate(batch_rate),
        &mb(batch_rate),
    );
    row(
        "pipe",
        &fmt_duration(pipe.rtt_median),
        &fmt_duration(pipe.rtt_p99),
        &fmt_rate(pipe.msgs_per_sec),
        &mb(pipe.msgs_per_sec),
    );
    let ratio = |a: f64, b: f64| format!("{:.3}x", a / b);
    row(
        "shmpipe/pipe",
        &ratio(shm.rtt_median.as_secs_f64(), pipe.rtt_median.as_secs_f64()),
        &ratio(shm.rtt_p99.as_secs_f64(), pipe.rtt_p99.as_secs_f64()),
        &ratio(shm.msgs_per_sec, pipe.msgs_per_sec),
        &ratio(shm.msgs_per_sec, pipe.msgs_per_sec),
    );
    println!();
    println!(
        "shmpipe round trips are {:.0}x faster than the pipe's (median); it streams {:.1}x as many\n\
         messages per second one at a time, {:.1}x in batches of {BATCH}.",
        pipe.rtt_median.as_secs_f64() / shm.rtt_median.as_secs_f64(),
        shm.msgs_per_sec / pipe.msgs_per_sec,
        batch_rate / pipe.msgs_per_sec,
    );
    println!(
        "RTT: one message there and back, timed with Instant::now() around each; lower is better."
    );
    println!(
        "msgs/s, MB/s: one way, one try_send (or write) per message unless batched, from the first \
         send\nto the child's acknowledgement of the last; MB = 10^6 bytes of payload; higher is \
         better."
    );
}

// ---------------------------------------------------------------------------------------------
// The child

fn child_main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [down_id, up_id, cpu, parent] = args.as_slice() else {
        return Err("child: expected DOWN_SHMID UP_SHMID CPU|- PARENT_PID".into());
    };
    let parent: u32 = parent.parse()?;
    // Die with the parent, whatever kills it.
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if rc != 0 || std::os::unix::process::parent_id() != parent {
        return Err("child: the parent is already gone".into());
    }
    if cpu != "-" {
        pin_to(cpu.parse()?)?;
    }

    let mut rx = Ring::open(Shmid(down_id.parse()?), &RingConfig::new())?.consumer()?;
    let mut tx = Ring::open(Shmid(up_id.parse()?), &RingConfig::new())?.producer()?;

    // Plain files over our stdin and stdout: std's handles buffer, and every message must be
    // exactly one read and one write.
    let mut pipe_in = File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let mut pipe_out = File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    pipe_out.write_all(b"R")?;

    let single_cpu = cpu == "-";
    let mut check = || -> Res<()> {
        if std::os::unix::process::parent_id() != parent {
            return Err("child: the parent died".into());
        }
        Ok(())
    };
    let mut w = Waiter {
        spins: 0,
        yield_too: single_cpu,
        check: &mut check,
    };

    // shmpipe ping-pong: echo each message back, in place from the ring.
    for _ in 0..RTT_WARMUP + RTT_ROUNDS {
        loop {
            match rx.try_lend() {
                Ok(msg) => {
                    // Copied out of the ring (the safe view), then sent back.
                    let mut buf = [0u8; MSG];
                    let n = msg.copy_to(&mut buf);
                    send(&mut tx, &buf[..n], &mut w)?;
                    break;
                }
                Err(TryRecvError::Empty) => w.wait()?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    // shmpipe stream: check every message, acknowledge the last.
    for seq in 0..SHM_STREAM {
        loop {
            match rx.try_lend() {
                Ok(msg) => {
                    // Checked on a private copy: what the peer writes later cannot change it.
                    let mut buf = [0u8; MSG];
                    let n = msg.copy_to(&mut buf);
                    if msg.len() != MSG || !is_message(&buf[..n], seq) {
                        return Err(format!("child: stream message {seq} is wrong").into());
                    }
                    break;
                }
                Err(TryRecvError::Empty) => w.wait()?,
                Err(e) => return Err(e.into()),
            }
        }
    }
    send(&mut tx, &message(SHM_STREAM), &mut w)?;

    // The batched stream: release the slots once per `BATCH` messages, or when caught up.
    let mut seq = 0;
    while seq < SHM_STREAM {
        let mut batch = rx.batch();
        let mut taken = 0;
        while taken < BATCH && seq < SHM_STREAM {
            match batch.try_lend() {
                Ok(msg) => {
                    let mut buf = [0u8; MSG];
                    let n = msg.copy_to(&mut buf);
                    if msg.len() != MSG || !is_message(&buf[..n], seq) {
                        return Err(format!("child: batched message {seq} is wrong").into());
                    }
                    seq += 1;
                    taken += 1;
                }
                Err(TryRecvError::Empty) if taken > 0 => break,
                Err(TryRecvError::Empty) => w.wait()?,
                Err(e) => return Err(e.into()),
            }
        }
    }
    send(&mut tx, &message(SHM_STREAM), &mut w)?;

    // Pipe ping-pong.
    let mut buf = [0u8; MSG];
    for _ in 0..RTT_WARMUP + RTT_ROUNDS {
        pipe_in.read_exact(&mut buf)?;
        pipe_out.write_all(&buf)?;
    }

    // Pipe stream.
    for seq in 0..PIPE_STREAM {
        pipe_in.read_exact(&mut buf)?;
        if !is_message(&buf, seq) {
            return Err(format!("child: pipe message {seq} is wrong").into());
        }
    }
    pipe_out.write_all(&message(PIPE_STREAM))?;
    Ok(())
}
