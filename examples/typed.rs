//! A typed ring between two processes: `Tick` values, sent one by one and in batches.
//!
//! Run it with `cargo run --release --example typed`.
//!
//! The parent creates a typed ring of `Tick` in a `Key::Private` segment and marks it for
//! removal at once (Linux still lets a process that knows the shmid attach it, and the kernel
//! frees it when the last process detaches: nothing is left in `ipcs -m`, even after a crash).
//! It then runs itself again as the consumer (`typed consumer SHMID`) and sends:
//!
//! 1. [`VALUES`] ticks by value (`send`), one publish each;
//! 2. [`VALUES`] ticks in slices of [`BATCH`] (`send_slice`), one publish per batch that fits;
//! 3. [`VALUES`] ticks built in place (`reserve`, fields written at their offsets, `commit`).
//!
//! The consumer receives them with `recv`, `recv_slice` and `lend` (lent in place and
//! copied out with `get`: no reference into the ring) respectively, checks every field of every
//! tick, and prints the throughput of each phase from its first tick to its last.
//!
//! A peer built with another message type is refused when it claims its role; the example
//! shows that too, before the transfer.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use shmpipe::bytemuck::{Pod, Zeroable};
use shmpipe::{Error, Key, Ring, RingConfig, Shmid};

/// One market tick: what goes through the ring, by value, 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[bytemuck(crate = "shmpipe::bytemuck")] // derived through shmpipe's re-export of bytemuck
#[repr(C)]
struct Tick {
    seq: u64,
    price: f64,
    qty: u32,
    side: u32,
}

/// Tick `seq` of the stream: every field derived from `seq`, so the consumer can check it.
fn tick(seq: u64) -> Tick {
    Tick {
        seq,
        price: 100.0 + (seq % 1000) as f64 * 0.01,
        qty: (seq % 500) as u32 + 1,
        side: (seq & 1) as u32,
    }
}

/// Ticks per phase.
const VALUES: u64 = 300_000;
/// Ticks per slice in the batched phase.
const BATCH: usize = 64;
/// How long the consumer waits for the end of the stream after the last tick. (The other
/// blocking calls wait without a deadline: if the other process dies, they return `PeerDied`
/// within about 20 ms, and a deadline would cost a clock read per call.)
const END: Duration = Duration::from_secs(10);

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [role, shmid] if role == "consumer" => consumer(shmid.parse()?),
        [] => producer(),
        _ => Err("usage: typed [consumer SHMID]".into()),
    }
}

/// The ring: 4096 slots of 32 bytes, one tick (24 bytes and the 8-byte record header) a slot.
fn config() -> RingConfig {
    RingConfig::new()
        .slot_size(32)
        .slot_count(4096)
        .message_type::<Tick>()
}

/// Kills and reaps the consumer if the producer fails before it is done.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn producer() -> Res<()> {
    let ring = Ring::create(Key::Private, &config())?;
    ring.remove()?; // marked now: freed when both processes have detached
    let shmid = ring.shmid().ok_or("a segment has a shmid")?;
    println!(
        "typed ring of {} (shmid {shmid}), {} slots of {} bytes",
        ring.message_type().ok_or("typed")?,
        ring.slot_count(),
        ring.slot_size()
    );

    // A peer with another idea of the message is refused before it claims anything.
    #[derive(Clone, Copy, Pod, Zeroable)]
    #[bytemuck(crate = "shmpipe::bytemuck")]
    #[repr(C)]
    struct Quote {
        seq: u64,
        bid: f64,
        ask: f64,
    }
    match ring.typed::<Quote>().consumer() {
        Err(e @ Error::TypeMismatch { .. }) => println!("a Quote consumer is refused: {e}"),
        other => return Err(format!("a Quote consumer: {other:?}").into()),
    }

    let mut tx = ring.typed::<Tick>().producer()?;
    let child = Command::new(std::env::current_exe()?)
        .args(["consumer", &shmid.to_string()])
        .spawn()?;
    let mut child = ChildGuard(Some(child));

    // 1. By value.
    for seq in 0..VALUES {
        tx.send(tick(seq))?;
    }
    // 2. In slices.
    let mut batch = Vec::with_capacity(BATCH);
    let mut seq = VALUES;
    while seq < 2 * VALUES {
        batch.clear();
        batch.extend((seq..(seq + BATCH as u64).min(2 * VALUES)).map(tick));
        tx.send_slice(&batch)?;
        seq += batch.len() as u64;
    }
    // 3. In place.
    for seq in 2 * VALUES..3 * VALUES {
        let mut slot = tx.reserve()?;
        // Field by field, in the ring: each field's bytes copied to its offset.
        let mut view = slot.view_mut();
        view.write_at(std::mem::offset_of!(Tick, seq), seq)?;
        view.write_at(std::mem::offset_of!(Tick, price), tick(seq).price)?;
        view.write_at(std::mem::offset_of!(Tick, qty), tick(seq).qty)?;
        view.write_at(std::mem::offset_of!(Tick, side), tick(seq).side)?;
        slot.commit();
    }
    drop(tx); // closes the ring: the consumer sees the end after the last tick

    let status = child.0.take().ok_or("child")?.wait()?;
    if !status.success() {
        return Err(format!("the consumer failed: {status}").into());
    }
    Ok(())
}

fn consumer(shmid: i32) -> Res<()> {
    let ring = Ring::open(Shmid(shmid), &RingConfig::new())?;
    let mut rx = ring.typed::<Tick>().consumer()?;
    let check = |got: &Tick, seq: u64| -> Res<()> {
        if *got != tick(seq) {
            return Err(format!("tick {seq}: got {got:?}").into());
        }
        Ok(())
    };
    let report = |what: &str, n: u64, t0: Instant| {
        let s = t0.elapsed().as_secs_f64();
        println!(
            "{what:<28} {n} ticks in {:7.2} ms: {:6.2} M ticks/s, {:7.1} MB/s",
            s * 1e3,
            n as f64 / s / 1e6,
            (n * size_of::<Tick>() as u64) as f64 / s / 1e6
        );
    };

    // 1. By value. The clock starts at the first tick, so the producer's start-up is not
    // counted.
    check(&rx.recv()?, 0)?;
    let t0 = Instant::now();
    for seq in 1..VALUES {
        check(&rx.recv()?, seq)?;
    }
    report("send / recv (by value)", VALUES - 1, t0);

    // 2. In slices.
    let mut buf = [Tick::zeroed(); BATCH];
    let t0 = Instant::now();
    let mut seq = VALUES;
    let mut calls = 0u64;
    while seq < 2 * VALUES {
        let want = ((2 * VALUES - seq) as usize).min(BATCH);
        let n = rx.recv_slice(&mut buf[..want])?;
        for v in &buf[..n] {
            check(v, seq)?;
            seq += 1;
        }
        calls += 1;
    }
    report("send_slice / recv_slice", VALUES, t0);
    println!(
        "{:<28} {:.1} ticks per recv_slice call",
        "",
        VALUES as f64 / calls as f64
    );

    // 3. In place: lent from the ring, copied out by `get`.
    let t0 = Instant::now();
    for seq in 2 * VALUES..3 * VALUES {
        let v = rx.lend()?;
        check(&v.get(), seq)?; // copied out of the ring, then checked
    }
    report("reserve / read (in place)", VALUES, t0);

    match rx.recv_timeout(END) {
        Err(shmpipe::RecvError::Disconnected) => {
            println!("all {} ticks checked; end of stream", 3 * VALUES);
            Ok(())
        }
        other => Err(format!("after the last tick: {other:?}").into()),
    }
}
