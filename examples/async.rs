//! A tokio consumer and a blocking producer in another process, and what waking the async side
//! costs.
//!
//! Run it with `cargo run --release --features tokio --example async`. It takes a few seconds.
//!
//! The example re-executes itself as the peer process (selected by the `SHMPIPE_ASYNC_ROLE`
//! environment variable, the ring's shmid passed as an argument) and measures, with 64-byte
//! messages:
//!
//! 1. **streaming**: the child sends 5 million messages as fast as it can with the blocking
//!    `send`; the parent receives them with [`AsyncConsumer::recv`] on a tokio runtime, checking
//!    each. Neither side waits long for the other, so the parent's `recv` almost never parks:
//!    the futex-call counts of both processes ([`shmpipe::wait::futex_calls`]) show how many
//!    system calls the transfer made (none, or a handful, is the expected answer). Then the
//!    same with the parent's blocking `Consumer::recv`, for comparison;
//! 2. **ping-pong with an idle peer**: the child sends a ping every 2 ms (stamped with
//!    `CLOCK_MONOTONIC`) and waits for the pong with a blocking `recv`; the parent, parked in
//!    `recv().await` in between, answers each ping with `send().await`. It prints how long a
//!    ping takes from the child's `send` to the parent's `recv` returning (the cost of waking a
//!    parked async consumer: the child's `FUTEX_WAKE`, a blocking-pool thread waking, then the
//!    task), the round trip seen by the child, and the futex calls per round; then the same with
//!    the parent's blocking `Consumer::recv` instead, for comparison.
//!
//! Every ring is created with [`Key::Private`] and marked for removal (`IPC_RMID`) at once, before
//! the child is started (on Linux a process given the shmid can still attach), so nothing is left
//! in `ipcs -m` whatever happens; the child is killed and reaped if the parent fails, and asks
//! the kernel to kill it if the parent dies (`PR_SET_PDEATHSIG`).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shmpipe::wait::futex_calls;
use shmpipe::{AsyncConsumer, Consumer, Key, Producer, RecvError, Ring, RingConfig, Shmid};

#[allow(
    dead_code,
    reason = "shared with the other examples, which use other parts"
)]
mod common;
use common::{ChildGuard, MSG, Res, fmt_duration, is_message, message};

/// Messages of the streaming run.
const STREAM_MESSAGES: u64 = 5_000_000;
/// Measured ping-pong rounds per mode.
const ROUNDS: u64 = 500;
/// Rounds before the measured ones.
const WARMUP: u64 = 20;
/// The child's pause before each ping: far longer than the parent's spin (20 µs), far shorter
/// than its 10 ms sleep slice, so every ping finds the parent parked.
const GAP: Duration = Duration::from_millis(2);
/// The environment variable that makes the re-executed binary the child, and which one.
const ROLE_ENV: &str = "SHMPIPE_ASYNC_ROLE";
/// Anything that takes longer than this hangs: give up.
const DEADLINE: Duration = Duration::from_secs(60);

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("producer") => producer_child(&args),
        Ok("pinger") => pinger_child(&args),
        _ => parent(),
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in both processes.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> Res<T> {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("child: argument {i} missing or malformed").into())
}

// ---------------------------------------------------------------------------------------------
// The child: a blocking peer

/// Sends `count` checked messages as fast as it can, then closes the ring; prints its futex
/// calls.
fn producer_child(args: &[String]) -> Res<()> {
    let ring = Ring::open(Shmid(arg(args, 0)?), &RingConfig::new())?;
    let count: u64 = arg(args, 1)?;
    let mut tx = ring.producer()?;
    let futex0 = futex_calls();
    for seq in 0..count {
        tx.send(&message(seq))?;
    }
    println!("futex {}", futex_calls() - futex0);
    Ok(())
}

/// Every `GAP`, sends a stamped ping on one ring and waits for the pong on the other; prints
/// the round trips (ns) and its futex calls over the measured rounds.
fn pinger_child(args: &[String]) -> Res<()> {
    let ping = Ring::open(Shmid(arg(args, 0)?), &RingConfig::new())?;
    let pong = Ring::open(Shmid(arg(args, 1)?), &RingConfig::new())?;
    let mut tx = ping.producer()?;
    let mut rx = pong.consumer()?;
    let mut buf = [0u8; MSG];
    let mut rtts = Vec::new();
    let mut futex0 = futex_calls();
    for seq in 0..WARMUP + ROUNDS {
        if seq == WARMUP {
            futex0 = futex_calls();
        }
        std::thread::sleep(GAP);
        let mut m = message(seq);
        let sent = monotonic_ns();
        m[8..16].copy_from_slice(&sent.to_le_bytes());
        tx.send(&m)?;
        let n = rx.recv_timeout(&mut buf, DEADLINE)?;
        if buf[..n] != m {
            return Err(format!("pong {seq} is not ping {seq}").into());
        }
        if seq >= WARMUP {
            rtts.push(monotonic_ns() - sent);
        }
    }
    println!("futex {}", futex_calls() - futex0);
    println!(
        "rtt {}",
        rtts.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The parent: the tokio side

/// Starts this binary again as the child `role`, with `args`, its stdout piped to us.
fn spawn_child(role: &str, args: &[String]) -> Res<ChildGuard> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(ROLE_ENV, role)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
        // is async-signal-safe and touches no memory of ours. The kernel then SIGKILLs the
        // child if we die, so it never outlives the demonstration.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    Ok(ChildGuard::new(cmd.spawn()?))
}

/// Waits for the child to exit successfully and returns what it printed.
fn finish(mut child: ChildGuard) -> Res<String> {
    let mut out = String::new();
    if let Some(mut stdout) = child.child.stdout.take() {
        stdout.read_to_string(&mut out)?;
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("the child failed ({status})").into());
    }
    Ok(out)
}

/// The value printed by the child on its line `name ...`.
fn field<'a>(out: &'a str, name: &str) -> Res<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(name).map(str::trim))
        .ok_or_else(|| format!("the child printed no {name:?}: {out:?}").into())
}

/// A ring nobody can open by key, already marked for removal.
fn private_ring(config: &RingConfig) -> Res<(Ring, String)> {
    let ring = Ring::create(Key::Private, config)?;
    ring.remove()?;
    let shmid = ring.shmid().ok_or("a SysV ring has a shmid")?.to_string();
    Ok((ring, shmid))
}

fn parent() -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_time()
        .build()?;
    println!(
        "shmpipe async: a tokio consumer, a blocking producer in another process ({} CPUs)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    stream(&rt)?;
    ping_pong(&rt)?;
    Ok(())
}

/// Part 1: five million messages into `AsyncConsumer::recv`, then into the blocking
/// `Consumer::recv` for comparison.
fn stream(rt: &tokio::runtime::Runtime) -> Res<()> {
    println!("\nstreaming {STREAM_MESSAGES} messages of {MSG} bytes from a blocking producer:");
    for async_side in [true, false] {
        let (ring, shmid) = private_ring(&RingConfig::new().slot_size(64).slot_count(4096))?;
        let rx = ring.consumer()?;
        let child = spawn_child("producer", &[shmid, STREAM_MESSAGES.to_string()])?;
        let (elapsed, futex) = if async_side {
            rt.block_on(async {
                tokio::time::timeout(DEADLINE, receive_async(rx.into_async()))
                    .await
                    .map_err(|_| "the stream hangs")?
            })?
        } else {
            receive_blocking(rx)?
        };
        let out = finish(child)?;
        println!(
            "  {:<22} {:>6.1} M messages/s ({elapsed:.2?}); futex calls: consumer {futex}, producer {}",
            if async_side {
                "AsyncConsumer::recv"
            } else {
                "Consumer::recv"
            },
            STREAM_MESSAGES as f64 / elapsed.as_secs_f64() / 1e6,
            field(&out, "futex")?
        );
    }
    Ok(())
}

/// Receives and checks the stream with `recv().await`: its time and futex calls from the first
/// message to the last.
async fn receive_async(mut rx: AsyncConsumer) -> Res<(Duration, u64)> {
    let mut buf = [0u8; MSG];
    let n = rx.recv(&mut buf).await?;
    let (start, futex0) = (Instant::now(), futex_calls());
    if !is_message(&buf[..n], 0) {
        return Err("message 0 is wrong".into());
    }
    for seq in 1..STREAM_MESSAGES {
        let n = rx.recv(&mut buf).await?;
        if !is_message(&buf[..n], seq) {
            return Err(format!("message {seq} is wrong").into());
        }
    }
    let (elapsed, futex) = (start.elapsed(), futex_calls() - futex0);
    match rx.recv(&mut buf).await {
        Err(RecvError::Disconnected) => Ok((elapsed, futex)),
        other => Err(format!("after the last message: {other:?}").into()),
    }
}

/// The same with the blocking `recv`, on this thread.
fn receive_blocking(mut rx: Consumer) -> Res<(Duration, u64)> {
    let mut buf = [0u8; MSG];
    let n = rx.recv_timeout(&mut buf, DEADLINE)?;
    let (start, futex0) = (Instant::now(), futex_calls());
    if !is_message(&buf[..n], 0) {
        return Err("message 0 is wrong".into());
    }
    for seq in 1..STREAM_MESSAGES {
        let n = rx.recv_timeout(&mut buf, DEADLINE)?;
        if !is_message(&buf[..n], seq) {
            return Err(format!("message {seq} is wrong").into());
        }
    }
    let (elapsed, futex) = (start.elapsed(), futex_calls() - futex0);
    match rx.recv_timeout(&mut buf, DEADLINE) {
        Err(RecvError::Disconnected) => Ok((elapsed, futex)),
        other => Err(format!("after the last message: {other:?}").into()),
    }
}

/// Part 2: pings every 2 ms into a parked consumer, async, then blocking.
fn ping_pong(rt: &tokio::runtime::Runtime) -> Res<()> {
    println!(
        "\nping-pong, the blocking peer idle {} between pings ({ROUNDS} rounds each):",
        fmt_duration(GAP)
    );
    println!(
        "  {:<22} {:>12} {:>12} {:>12} {:>12} {:>12}   futex calls per round",
        "parent receives with", "wake median", "wake p99", "rtt median", "rtt p99", "CPU/round"
    );
    for async_side in [true, false] {
        let config = RingConfig::new().slot_size(64).slot_count(64);
        let (ping, ping_id) = private_ring(&config)?;
        let (pong, pong_id) = private_ring(&config)?;
        let rx = ping.consumer()?;
        let tx = pong.producer()?;
        let child = spawn_child("pinger", &[ping_id, pong_id])?;
        let (futex0, cpu0) = (futex_calls(), cpu_time());
        let mut wakes = if async_side {
            rt.block_on(async {
                tokio::time::timeout(DEADLINE, echo_async(rx.into_async(), tx))
                    .await
                    .map_err(|_| "the ping-pong hangs")?
            })?
        } else {
            echo_blocking(rx, tx)?
        };
        let (futex, cpu) = (futex_calls() - futex0, cpu_time() - cpu0);
        let out = finish(child)?;
        let mut rtts: Vec<u64> = field(&out, "rtt")?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        let child_futex: u64 = field(&out, "futex")?.parse()?;
        let (w50, w99) = percentiles(&mut wakes);
        let (r50, r99) = percentiles(&mut rtts);
        println!(
            "  {:<22} {:>12} {:>12} {:>12} {:>12} {:>12}   parent {:.2}, pinger {:.2}",
            if async_side {
                "AsyncConsumer::recv"
            } else {
                "Consumer::recv"
            },
            fmt_duration(w50),
            fmt_duration(w99),
            fmt_duration(r50),
            fmt_duration(r99),
            fmt_duration(cpu / (WARMUP + ROUNDS) as u32),
            futex as f64 / (WARMUP + ROUNDS) as f64,
            child_futex as f64 / ROUNDS as f64,
        );
    }
    println!(
        "  (wake: from the pinger's send to the parent's recv returning; rtt: seen by the pinger;\n   \
         CPU/round: the parent process's CPU time, all threads, per round)"
    );
    Ok(())
}

/// Answers every ping with `send().await`; returns the measured wake-up latencies (ns).
async fn echo_async(mut rx: AsyncConsumer, tx: Producer) -> Res<Vec<u64>> {
    let mut tx = tx.into_async();
    let mut buf = [0u8; MSG];
    let mut wakes = Vec::new();
    for seq in 0..WARMUP + ROUNDS {
        let n = rx.recv(&mut buf).await?;
        let now = monotonic_ns();
        tx.send(&buf[..n]).await?;
        if seq >= WARMUP {
            wakes.push(now - u64::from_le_bytes(buf[8..16].try_into()?));
        }
    }
    match rx.recv(&mut buf).await {
        Err(RecvError::Disconnected) => Ok(wakes),
        other => Err(format!("after the last ping: {other:?}").into()),
    }
}

/// The same with the blocking calls, on this thread.
fn echo_blocking(mut rx: Consumer, mut tx: Producer) -> Res<Vec<u64>> {
    let mut buf = [0u8; MSG];
    let mut wakes = Vec::new();
    for seq in 0..WARMUP + ROUNDS {
        let n = rx.recv_timeout(&mut buf, DEADLINE)?;
        let now = monotonic_ns();
        tx.send_timeout(&buf[..n], DEADLINE)?;
        if seq >= WARMUP {
            wakes.push(now - u64::from_le_bytes(buf[8..16].try_into()?));
        }
    }
    match rx.recv_timeout(&mut buf, DEADLINE) {
        Err(RecvError::Disconnected) => Ok(wakes),
        other => Err(format!("after the last ping: {other:?}").into()),
    }
}

/// CPU time (user + system) of this process so far, every thread included.
fn cpu_time() -> Duration {
    // SAFETY: rusage is a plain C struct for which all-zero bytes are a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a writable rusage that outlives the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Median and p99 (nearest rank).
fn percentiles(ns: &mut [u64]) -> (Duration, Duration) {
    ns.sort_unstable();
    let at = |p: f64| {
        let i = ((p * ns.len() as f64).ceil() as usize).clamp(1, ns.len()) - 1;
        Duration::from_nanos(ns[i])
    };
    (at(0.5), at(0.99))
}
