//! Baseline benchmarks of the ring inside one process (`Ring::create(Heap, ..)`), with 64-byte
//! messages:
//!
//! - `throughput/*`: one producer thread (criterion's) streams messages to a consumer thread,
//!   one message at a time (`try_send`/`try_recv`) or in batches of 32 (`batch()` on both
//!   sides). The consumer thread is started once per benchmark; each measurement runs from the
//!   first send until the consumer has received the last message, so the figure is end-to-end
//!   throughput, not just the producer's speed.
//! - `rtt_threads`: ping-pong over two rings between two threads (the consumer side echoes), one
//!   round trip per iteration.
//! - `send_recv/*`: one thread sends a message and receives it back at once: the cost of the
//!   protocol itself, with every cache line local.
//!
//! With two or more CPUs the two threads are pinned to different ones. Run with
//! `cargo bench --bench ring`; the default run takes under a minute (about 50 s on two CPUs).
//! Cross-process benchmarks will come separately; this is the in-process baseline.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shmpipe::{Consumer, Heap, Producer, Ring, RingConfig, TryRecvError, TrySendError};

/// Payload bytes per message.
const MSG: usize = 64;
/// Messages per batch in the batch benchmark.
const BATCH: usize = 32;

/// The first two CPUs this process may run on, if it has two: the producer (criterion's thread)
/// and the consumer thread are pinned apart so that neither spins on the other's CPU.
fn two_cpus() -> Option<(usize, usize)> {
    // SAFETY: cpu_set_t is a plain bit array, for which all zeroes is the valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a writable cpu_set_t and we pass its exact size.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return None;
    }
    let mut cpus = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, so CPU_ISSET reads inside `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) });
    Some((cpus.next()?, cpus.next()?))
}

/// Pins the calling thread to `cpu` (best effort: a failure only makes the numbers noisier).
fn pin_to(cpu: usize) {
    if cpu >= libc::CPU_SETSIZE as usize {
        return;
    }
    // SAFETY: as in `two_cpus`, all zeroes is a valid cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so CPU_SET writes inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is an initialised cpu_set_t and we pass its exact size; 0 is this thread.
    unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
}

/// Pins this thread to the first CPU and returns the second, for the other thread. The pair
/// is found once, before any pinning: afterwards this thread's own mask holds one CPU.
fn pin_pair() -> Option<usize> {
    static PAIR: OnceLock<Option<(usize, usize)>> = OnceLock::new();
    let (a, b) = (*PAIR.get_or_init(two_cpus))?;
    pin_to(a);
    Some(b)
}

/// A fresh in-process ring with the default shape (4096 slots of 64 bytes).
fn ring() -> (Producer, Consumer) {
    let ring = Ring::create(Heap, &RingConfig::new()).expect("in-process ring");
    (
        ring.producer().expect("producer role"),
        ring.consumer().expect("consumer role"),
    )
}

/// A message carrying `seq` in its first 8 bytes.
#[inline]
fn stamp(msg: &mut [u8; MSG], seq: u64) {
    msg[..8].copy_from_slice(&seq.to_le_bytes());
}

/// A consumer thread that counts what it receives until told to stop.
struct Sink {
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Sink {
    /// Starts the thread; `batched` selects `RecvBatch` (release every `BATCH` messages or when
    /// the ring runs empty) instead of one `try_recv` per message.
    fn start(mut rx: Consumer, batched: bool) -> Sink {
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        let cpu = pin_pair();
        let handle = std::thread::spawn(move || {
            if let Some(cpu) = cpu {
                pin_to(cpu);
            }
            let mut buf = [0u8; MSG];
            let mut count = 0u64;
            loop {
                let got = if batched {
                    let mut batch = rx.batch();
                    let mut k = 0;
                    while k < BATCH {
                        match batch.try_recv(&mut buf) {
                            Ok(_) => k += 1,
                            Err(TryRecvError::Empty) => break,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    k as u64
                } else {
                    match rx.try_recv(&mut buf) {
                        Ok(_) => 1,
                        Err(TryRecvError::Empty) => 0,
                        Err(e) => panic!("{e}"),
                    }
                };
                if got > 0 {
                    black_box(&buf);
                    count += got;
                    // Release: the producer's Acquire sees every message counted as received.
                    r.store(count, Ordering::Release);
                } else if s.load(Ordering::Relaxed) {
                    return;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        Sink {
            received,
            stop,
            handle: Some(handle),
        }
    }

    /// Spins until the consumer has received `total` messages in all.
    fn wait_for(&self, total: u64) {
        while self.received.load(Ordering::Acquire) < total {
            std::hint::spin_loop();
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            // A panic in the consumer thread has already been printed; do not panic twice.
            let _ = h.join();
        }
    }
}

/// Sends `msg`, spinning while the ring is full.
#[inline]
fn send(tx: &mut Producer, msg: &[u8]) {
    loop {
        match tx.try_send(msg) {
            Ok(()) => return,
            Err(TrySendError::Full) => std::hint::spin_loop(),
            Err(e) => panic!("{e}"),
        }
    }
}

/// Receives into `buf`, spinning while the ring is empty.
#[inline]
fn recv(rx: &mut Consumer, buf: &mut [u8]) -> usize {
    loop {
        match rx.try_recv(buf) {
            Ok(n) => return n,
            Err(TryRecvError::Empty) => std::hint::spin_loop(),
            Err(e) => panic!("{e}"),
        }
    }
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput");
    group.throughput(Throughput::Elements(1));

    group.bench_function("try_send-try_recv", |b| {
        let (mut tx, rx) = ring();
        let sink = Sink::start(rx, false);
        let mut sent = 0u64;
        let mut msg = [0u8; MSG];
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                stamp(&mut msg, sent);
                send(&mut tx, &msg);
                sent += 1;
            }
            sink.wait_for(sent);
            start.elapsed()
        });
    });

    group.bench_function("batch32", |b| {
        let (mut tx, rx) = ring();
        let sink = Sink::start(rx, true);
        let mut sent = 0u64;
        let mut msg = [0u8; MSG];
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut batch = tx.batch();
            for i in 0..iters {
                stamp(&mut msg, sent);
                loop {
                    match batch.try_send(&msg) {
                        Ok(()) => break,
                        Err(TrySendError::Full) => {
                            // Let the consumer see what we have so it can make room.
                            batch.publish();
                            std::hint::spin_loop();
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                sent += 1;
                if (i + 1) % BATCH as u64 == 0 {
                    batch.publish();
                }
            }
            drop(batch); // publishes the rest
            sink.wait_for(sent);
            start.elapsed()
        });
    });
    group.finish();
}

fn rtt_threads(c: &mut Criterion) {
    c.bench_function("rtt_threads", |b| {
        let (mut ping_tx, mut ping_rx) = ring();
        let (mut pong_tx, mut pong_rx) = ring();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        // A consumer cannot see that its producer has gone, so the echo thread polls a flag.
        let cpu = pin_pair();
        let echo = std::thread::spawn(move || {
            if let Some(cpu) = cpu {
                pin_to(cpu);
            }
            loop {
                match ping_rx.try_lend() {
                    Ok(msg) => {
                        let mut buf = [0u8; MSG];
                        let n = msg.copy_to(&mut buf);
                        send(&mut pong_tx, &buf[..n])
                    }
                    Err(TryRecvError::Empty) => {
                        if s.load(Ordering::Relaxed) {
                            return;
                        }
                        std::hint::spin_loop();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let mut msg = [0u8; MSG];
        let mut buf = [0u8; MSG];
        let mut seq = 0u64;
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                stamp(&mut msg, seq);
                send(&mut ping_tx, &msg);
                recv(&mut pong_rx, &mut buf);
                seq += 1;
            }
            start.elapsed()
        });
        stop.store(true, Ordering::Relaxed);
        let _ = echo.join();
    });
}

fn send_recv(c: &mut Criterion) {
    let mut group = c.benchmark_group("send_recv");
    group.bench_function("try_send-try_recv", |b| {
        let (mut tx, mut rx) = ring();
        let msg = [7u8; MSG];
        let mut buf = [0u8; MSG];
        b.iter(|| {
            tx.try_send(black_box(&msg)).expect("room");
            let n = rx.try_recv(&mut buf).expect("a message");
            black_box(&buf[..n]);
        });
    });
    group.bench_function("reserve-try_lend", |b| {
        let (mut tx, mut rx) = ring();
        let msg = [7u8; MSG];
        b.iter(|| {
            let mut grant = tx.try_reserve(MSG).expect("room");
            grant.copy_from_slice(black_box(&msg));
            grant.commit();
            let m = rx.try_lend().expect("a message");
            let mut out = [0u8; MSG];
            black_box(m.copy_to(&mut out));
            black_box(out);
        });
    });
    group.finish();
}

/// The group: `criterion_group!` makes a public function without docs, so it lives in a private
/// module.
mod group {
    use super::*;

    criterion_group! {
        name = benches;
        // Short by default so `cargo bench --bench ring` stays under a minute; pass
        // `--measurement-time` for steadier numbers.
        config = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(30);
        targets = throughput, rtt_threads, send_recv
    }
}
criterion_main!(group::benches);
