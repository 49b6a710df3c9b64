//! What each backing costs: round trip and throughput of the same ring between two processes,
//! in a SysV segment (the default), a sealed memfd, a file in `/dev/shm` and a file on disk,
//! measured in one run so the ratios against SysV are taken on the same machine state.
//!
//! ```sh
//! cargo run --release --example backings            # 3 rounds
//! cargo run --release --example backings -- 5       # 5 rounds
//! ```
//!
//! Each measurement forks a child that opens the two rings its own way (by shmid, from the
//! inherited memfd descriptor, by path), echoes 64-byte messages for the round trips, then
//! receives a stream. Both sides busy-spin and are pinned to different CPUs when there are two.
//! Nothing is left behind: segments are marked for removal at once, files are unlinked once both
//! sides are in.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

use shmpipe::{Key, Memfd, Ring, RingConfig, Shmid, WaitStrategy};

#[allow(
    dead_code,
    reason = "shared with the other examples, which use other parts"
)]
mod common;
use common::{MSG, allowed_cpus, pin_to};

const RTT_ROUNDS: usize = 100_000;
const STREAM: u64 = 5_000_000;

#[derive(Clone, Copy, PartialEq)]
enum Backing {
    Sysv,
    Memfd,
    DevShm,
    Disk,
}

impl Backing {
    fn name(self) -> &'static str {
        match self {
            Backing::Sysv => "SysV segment",
            Backing::Memfd => "sealed memfd",
            Backing::DevShm => "file in /dev/shm",
            Backing::Disk => "file on disk",
        }
    }
}

/// How the child finds a ring the parent made.
enum Handle {
    Shmid(i32),
    Fd(i32),
    Path(PathBuf),
}

fn config() -> RingConfig {
    RingConfig::new()
        .slot_size(64)
        .slot_count(4096)
        .max_message(MSG)
}

fn create(backing: Backing, n: usize) -> (Ring, Handle) {
    match backing {
        Backing::Sysv => {
            let ring = Ring::create(Key::Private, &config()).expect("create segment");
            let id = ring.shmid().unwrap();
            (ring, Handle::Shmid(id))
        }
        Backing::Memfd => {
            let ring = Ring::create(Memfd, &config()).expect("create memfd");
            let fd = ring.memfd().unwrap().as_raw_fd();
            (ring, Handle::Fd(fd))
        }
        Backing::DevShm | Backing::Disk => {
            let dir = if backing == Backing::DevShm {
                PathBuf::from("/dev/shm")
            } else {
                // target/ is on the disk the project was checked out on.
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target")
            };
            let path = dir.join(format!("shmpipe-backings-{}-{n}", std::process::id()));
            let ring = Ring::create(&path, &config()).expect("create file ring");
            (ring, Handle::Path(path))
        }
    }
}

fn open(h: &Handle) -> Ring {
    match h {
        Handle::Shmid(id) => Ring::open(Shmid(*id), &RingConfig::new()).expect("open by shmid"),
        Handle::Fd(fd) => {
            // SAFETY: a duplicate of the inherited descriptor, owned by the new OwnedFd.
            let dup = unsafe { libc::dup(*fd) };
            assert!(dup >= 0);
            // SAFETY: `dup` is a new descriptor nothing else owns.
            Ring::open(unsafe { OwnedFd::from_raw_fd(dup) }, &RingConfig::new())
                .expect("open memfd")
        }
        Handle::Path(p) => Ring::open(p, &RingConfig::new()).expect("open file ring"),
    }
}

/// One measurement: (median round trip in ns, stream in M msg/s). With `cpus`, the parent
/// runs pinned to the first and the child to the second.
fn measure(backing: Backing, n: usize, cpus: Option<(usize, usize)>) -> (u64, f64) {
    let (ping, ping_h) = create(backing, 2 * n);
    let (pong, pong_h) = create(backing, 2 * n + 1);
    // SAFETY: the example is single-threaded, so the child may run ordinary Rust code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // The child drops the parent's handles and opens the rings its own way.
        let (ping_c, pong_c) = (open(&ping_h), open(&pong_h));
        std::mem::forget((ping, pong)); // the parent's; leave them to it
        if let Some((_, cpu)) = cpus {
            pin_to(cpu).expect("pin the child");
        }
        let mut rx = ping_c.consumer().unwrap();
        let mut tx = pong_c.producer().unwrap();
        rx.set_wait_strategy(WaitStrategy::Spin);
        tx.set_wait_strategy(WaitStrategy::Spin);
        let mut buf = [0u8; MSG];
        for _ in 0..RTT_ROUNDS {
            let k = rx.recv(&mut buf).unwrap();
            tx.send(&buf[..k]).unwrap();
        }
        let mut got = 0u64;
        while rx.recv(&mut buf).is_ok() {
            got += 1;
        }
        // SAFETY: _exit ends the child without running the parent's destructors twice.
        unsafe { libc::_exit(if got == STREAM { 0 } else { 1 }) };
    }
    if let Some((cpu, _)) = cpus {
        pin_to(cpu).expect("pin the parent");
    }
    let mut tx = ping.producer().unwrap();
    let mut rx = pong.consumer().unwrap();
    tx.set_wait_strategy(WaitStrategy::Spin);
    rx.set_wait_strategy(WaitStrategy::Spin);
    let msg = [7u8; MSG];
    let mut buf = [0u8; MSG];
    let mut rtts = Vec::with_capacity(RTT_ROUNDS);
    for _ in 0..RTT_ROUNDS {
        let t = Instant::now();
        tx.send(&msg).unwrap();
        rx.recv(&mut buf).unwrap();
        rtts.push(t.elapsed().as_nanos() as u64);
    }
    rtts.sort_unstable();
    let t = Instant::now();
    for _ in 0..STREAM {
        tx.send(&msg).unwrap();
    }
    drop(tx);
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let secs = t.elapsed().as_secs_f64();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child failed"
    );
    if let Some(p) = ping.path() {
        assert!(!p.exists(), "the ring file outlived both sides joining");
    }
    (rtts[RTT_ROUNDS / 2], STREAM as f64 / secs / 1e6)
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(3, |a| a.parse().expect("rounds"));
    let allowed = allowed_cpus();
    let cpus = match allowed[..] {
        [a, b, ..] => Some((a, b)),
        _ => None,
    };
    let all = [
        Backing::Sysv,
        Backing::Memfd,
        Backing::DevShm,
        Backing::Disk,
    ];
    println!(
        "{} round trips and {} streamed messages of {MSG} B per backing, {} CPUs",
        RTT_ROUNDS,
        STREAM,
        allowed.len()
    );
    println!(
        "{:<6} {:<17} {:>10} {:>8} {:>12} {:>8}",
        "round", "backing", "RTT (ns)", "vs SysV", "M msg/s", "vs SysV"
    );
    for round in 0..rounds {
        let mut base = None;
        for (i, &b) in all.iter().enumerate() {
            let (rtt, rate) = measure(b, round * all.len() + i, cpus);
            let (brtt, brate) = *base.get_or_insert((rtt, rate));
            println!(
                "{:<6} {:<17} {:>10} {:>7.2}x {:>12.2} {:>7.2}x",
                round + 1,
                b.name(),
                rtt,
                rtt as f64 / brtt as f64,
                rate,
                rate / brate
            );
        }
    }
}
