//! The measurement engine shared by `shmpipe bench` and the criterion suite `benches/ipc.rs`:
//! every transport, the peer (a process, or a thread for the in-process ring), the timed loops,
//! the latency histogram and the results table. One implementation, compiled twice: as
//! `cli::bench::transports` in the `shmpipe` binary, and through `#[path]` as a module of
//! `benches/ipc.rs`. It uses only std, libc and the library's public API, so it is no part of
//! the library's API.
//!
//! # What is measured
//!
//! Two endpoints exchange messages of one size over one transport: the measuring side (the
//! caller's thread) and a peer, which is a process re-executed from the current binary (a
//! thread for `thread-ring`), started once per [`Session`] and pinned to another CPU. Every
//! message is written whole by its sender ([`fill`]: every byte, with a sequence number at both
//! ends) and read whole by its receiver ([`check`]: both sequence numbers compared, every byte
//! summed), whether the transport copies or lends it in place.
//!
//! - Round trip ([`Session::round_trips`]): the measuring side sends message `seq` and waits for
//!   the peer to send it back; each round trip is timed alone into a [`Histogram`].
//! - Streaming ([`Session::stream`]): the measuring side sends `n` messages one way, then waits
//!   for the peer's acknowledgement of the last; the time runs from the first send to that
//!   acknowledgement.
//!
//! - Cache placement ([`Session::probe_line`]): one cache line, in a page both sides map,
//!   bounced between them; classified by [`Cache::over`] against [`SHARED_CACHE_NS`]. Method
//!   and threshold: docs/BENCHMARKS.md.
//!
//! Before each run the measuring side sends a command (operation, count, first sequence
//! number) down a control pipe, and the peer answers over the transport itself with a "ready"
//! message, so the timed part starts with the peer awake and waiting on the transport.
//!
//! # Transports
//!
//! - `shmpipe-spin`, `shmpipe`: two rings (one per direction), `send`/`recv` (one copy in, one
//!   out) with [`WaitStrategy::Spin`] and with the default [`WaitStrategy::SpinThenSleep`].
//! - `shmpipe-batch`: the zero-copy API, spinning: messages built in place (`reserve`/`commit`)
//!   and read in place (`try_lend`); streams through `batch()` on both sides, published and
//!   released every [`batch_len`] messages. Both ends are this program, so the peer is trusted
//!   to follow the protocol and the messages are reached through the full-speed `unsafe`
//!   opt-in (`as_mut_slice_trusted`, `as_slice_trusted`), as a user with a trusted peer would.
//! - `thread-ring`: `shmpipe-spin` between two threads of one process (an in-process ring): the
//!   upper bound, with no process boundary.
//! - `pipe` (two anonymous pipes), `unix-stream` (`socketpair`), `tcp` (loopback,
//!   `TCP_NODELAY`): byte streams, so each message is framed: a 4-byte length, then the
//!   payload, sent with one `write`; read through a 64 KiB `BufReader` with `read_exact`.
//! - `unix-seqpacket` (`socketpair`): one `write` and one `read` per message, no framing.
//! - `reference`: a hand-written batched ring in a memfd (`reference.rs`): the machine's bound.
//! - `iceoryx2` (cargo feature `iceoryx2`): its publish-subscribe over shared memory, one
//!   service each way, loaned samples, spinning; in `iceoryx2.rs`.
//!
//! Fixed-rate one-way latency (`shmpipe bench --latency`) is in `latency.rs`; runs repeated
//! with `--runs` are summarised in `runs.rs`.
//!
//! Rings are created with [`Key::Private`] and marked for removal at once (with SIGINT, SIGTERM,
//! SIGHUP and SIGQUIT blocked in between), so the kernel frees them when the two processes are
//! gone, however they end. The peer process dies with the measuring side
//! (`PR_SET_PDEATHSIG`), and a [`Session`] kills and reaps it when dropped.

use std::fs::File;
use std::hint::black_box;
use std::io::{self, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shmpipe::{
    Consumer, Heap, Key, Producer, Ring, RingConfig, Shmid, TryRecvError, TrySendError,
    WaitStrategy,
};

/// The `iceoryx2` transport (a file of its own: only the feature compiles it).
#[cfg(feature = "iceoryx2")]
#[path = "iceoryx2.rs"]
mod iceoryx2;

/// Errors: a message for the user, from any source.
pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The smallest message: room for the sequence number.
pub const MIN_SIZE: usize = 8;
/// The largest message (a Unix seqpacket record must fit the default socket buffer).
pub const MAX_SIZE: usize = 64 << 10;
/// The sizes measured by default.
pub const DEFAULT_SIZES: [usize; 4] = [8, 64, 1 << 10, 64 << 10];

// ---------------------------------------------------------------------------------------------
// Transports and placements

/// A way of moving messages between the two sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// shmpipe between two threads of one process: the upper bound.
    ThreadRing,
    /// shmpipe, `send`/`recv` spinning ([`WaitStrategy::Spin`]).
    ShmpipeSpin,
    /// shmpipe, zero copy (`reserve`/`commit`, `try_lend`) and batches, spinning.
    ShmpipeBatch,
    /// shmpipe, `send`/`recv` with the default [`WaitStrategy::SpinThenSleep`].
    Shmpipe,
    /// Two anonymous pipes.
    Pipe,
    /// A Unix stream socket pair.
    UnixStream,
    /// A Unix seqpacket socket pair.
    UnixSeqpacket,
    /// TCP over loopback with `TCP_NODELAY`.
    Tcp,
    /// A hand-written batched ring in shared memory (`reference.rs`): the machine's bound.
    Reference,
    /// iceoryx2 publish-subscribe, loaned samples, spinning (`iceoryx2.rs`).
    #[cfg(feature = "iceoryx2")]
    Iceoryx2,
}

impl Transport {
    /// Every transport, in table order.
    pub const ALL: [Transport; 9 + cfg!(feature = "iceoryx2") as usize] = [
        Transport::Reference,
        Transport::ThreadRing,
        Transport::ShmpipeSpin,
        Transport::ShmpipeBatch,
        Transport::Shmpipe,
        Transport::Pipe,
        Transport::UnixStream,
        Transport::UnixSeqpacket,
        Transport::Tcp,
        #[cfg(feature = "iceoryx2")]
        Transport::Iceoryx2,
    ];

    /// The name in tables, JSON and benchmark ids.
    pub fn name(self) -> &'static str {
        match self {
            Transport::ThreadRing => "thread-ring",
            Transport::ShmpipeSpin => "shmpipe-spin",
            Transport::ShmpipeBatch => "shmpipe-batch",
            Transport::Shmpipe => "shmpipe",
            Transport::Pipe => "pipe",
            Transport::UnixStream => "unix-stream",
            Transport::UnixSeqpacket => "unix-seqpacket",
            Transport::Tcp => "tcp",
            Transport::Reference => "reference",
            #[cfg(feature = "iceoryx2")]
            Transport::Iceoryx2 => "iceoryx2",
        }
    }

    /// The transport called `name`.
    pub fn from_name(name: &str) -> Option<Transport> {
        Transport::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether the kernel carries the messages (then both placements are measured).
    pub fn is_kernel(self) -> bool {
        matches!(
            self,
            Transport::Pipe | Transport::UnixStream | Transport::UnixSeqpacket | Transport::Tcp
        )
    }

    /// The placements measured: the spinning shmpipe transports pinned to two CPUs; the kernel
    /// transports also left to the scheduler, which may keep both sides on one CPU. With one
    /// CPU nothing is pinned.
    pub fn placements(self) -> &'static [Placement] {
        match (cpu_pair().is_some(), self.is_kernel()) {
            (false, _) => &[Placement::Unpinned],
            (true, false) => &[Placement::Pinned],
            (true, true) => &[Placement::Pinned, Placement::Unpinned],
        }
    }
}

/// Where the two sides run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Placement {
    /// The measuring side on one CPU, the peer on another.
    Pinned,
    /// Both free to run on any allowed CPU (the scheduler's choice).
    Unpinned,
}

impl Placement {
    /// `pinned` or `unpinned`.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Pinned => "pinned",
            Placement::Unpinned => "unpinned",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CPUs

/// The CPUs this process was allowed when it started, and the two used for pinning.
struct Cpus {
    original: libc::cpu_set_t,
    pair: Option<(usize, usize)>,
}

/// The affinity mask as it was at the first call: call [`init_cpus`] before pinning anything.
fn cpus() -> &'static Cpus {
    static CPUS: OnceLock<Cpus> = OnceLock::new();
    CPUS.get_or_init(|| {
        // SAFETY: cpu_set_t is a plain bit array, for which all zeroes is the valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a writable cpu_set_t and we pass its exact size; 0 is this thread.
        let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
        let allowed: Vec<usize> = if rc == 0 {
            (0..libc::CPU_SETSIZE as usize)
                // SAFETY: `cpu` is below CPU_SETSIZE, so CPU_ISSET reads inside `set`.
                .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
                .collect()
        } else {
            Vec::new()
        };
        let pair = match allowed.as_slice() {
            [a, b, ..] => Some((*a, *b)),
            _ => None,
        };
        Cpus {
            original: set,
            pair,
        }
    })
}

/// Records the CPUs this process may use. Call it first thing: later calls see the mask that
/// pinning left.
pub fn init_cpus() {
    cpus();
}

/// The CPU of the measuring side and the CPU of the peer, if at least two are allowed.
pub fn cpu_pair() -> Option<(usize, usize)> {
    cpus().pair
}

/// Sets the calling thread's affinity mask.
fn set_affinity(set: &libc::cpu_set_t) -> Res<()> {
    // SAFETY: `set` is an initialised cpu_set_t and we pass its exact size; 0 is this thread.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), set) };
    if rc != 0 {
        return Err(format!("sched_setaffinity: {}", io::Error::last_os_error()).into());
    }
    Ok(())
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> Res<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(format!("no CPU {cpu}").into());
    }
    // SAFETY: as in `cpus`, all zeroes is a valid cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so CPU_SET writes inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set_affinity(&set)
}

/// Places the calling thread, the measuring side: on the first CPU of the pair, or back on
/// every CPU it was allowed at start.
pub fn place_self(placement: Placement) -> Res<()> {
    match (placement, cpu_pair()) {
        (Placement::Pinned, Some((mine, _))) => pin_to(mine),
        _ => set_affinity(&cpus().original),
    }
}

/// The peer's CPU under `placement`, if it is pinned.
fn peer_cpu(placement: Placement) -> Option<usize> {
    match placement {
        Placement::Pinned => cpu_pair().map(|(_, peer)| peer),
        Placement::Unpinned => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Messages

/// Writes message `seq`: every byte (`seq as u8`), then `seq` in the first 8 bytes and, from
/// 16 bytes on, in the last 8.
#[inline]
pub fn fill(msg: &mut [u8], seq: u64) {
    msg.fill(seq as u8);
    stamp(msg, seq);
}

/// Writes `seq` in the first 8 bytes of `msg` and, from 16 bytes on, in the last 8: [`fill`]
/// without its first pass, for a sender that writes every byte otherwise.
#[inline]
pub fn stamp(msg: &mut [u8], seq: u64) {
    let stamp = seq.to_le_bytes();
    let n = msg.len();
    msg[..8].copy_from_slice(&stamp);
    if n >= 16 {
        msg[n - 8..].copy_from_slice(&stamp);
    }
}

/// Reads message `seq` of `len` bytes: checks its length and both stamps, and returns a sum of
/// all its bytes (which the caller passes to `black_box`, so no byte read is optimised away).
#[inline]
pub fn check(msg: &[u8], len: usize, seq: u64) -> Res<u64> {
    let stamp = seq.to_le_bytes();
    if msg.len() != len || msg[..8] != stamp || (len >= 16 && msg[len - 8..] != stamp) {
        return Err(wrong_message(msg, len, seq));
    }
    let mut words = msg.chunks_exact(8);
    let mut sum = 0u64;
    for w in &mut words {
        sum = sum.wrapping_add(u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    for &b in words.remainder() {
        sum = sum.wrapping_add(u64::from(b));
    }
    Ok(sum)
}

#[cold]
fn wrong_message(msg: &[u8], len: usize, seq: u64) -> Box<dyn std::error::Error + Send + Sync> {
    let front = msg
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    format!(
        "expected message {seq} of {len} bytes, got {} bytes starting with {front:?}",
        msg.len()
    )
    .into()
}

/// The sequence number of the peer's "ready" message.
const READY: u64 = u64::MAX;

// ---------------------------------------------------------------------------------------------
// Latency histogram

/// Sub-buckets per power of two: values are kept to within 1/256 (values below 256 exactly).
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;

/// A log-linear histogram of durations in nanoseconds: exact below 256 ns, within 0.4 % above,
/// in a fixed 58 KiB whatever the number of samples.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; (SUB * (64 - SUB_BITS as u64 + 1)) as usize],
            total: 0,
            sum: 0,
            max: 0,
        }
    }

    fn index(ns: u64) -> usize {
        if ns < 2 * SUB {
            return ns as usize;
        }
        let msb = 63 - ns.leading_zeros();
        let shift = msb - SUB_BITS;
        (SUB as usize) * (shift as usize + 1) + ((ns >> shift) - SUB) as usize
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> u64 {
        if i < 2 * SUB as usize {
            return i as u64;
        }
        let shift = (i / SUB as usize - 1) as u32;
        let low = (SUB + (i as u64 % SUB)) << shift;
        low + (1u64 << shift) / 2
    }

    /// Adds one sample.
    #[inline]
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Histogram::index(ns)] += 1;
        self.total += 1;
        self.sum += u128::from(ns);
        self.max = self.max.max(ns);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0 to 1), by nearest rank.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Histogram::value(i).min(self.max);
            }
        }
        self.max
    }

    /// The summary of the samples.
    pub fn latency(&self) -> Latency {
        Latency {
            median_ns: self.quantile(0.5),
            p99_ns: self.quantile(0.99),
            p999_ns: self.quantile(0.999),
            mean_ns: if self.total == 0 {
                0.0
            } else {
                self.sum as f64 / self.total as f64
            },
            max_ns: self.max,
            samples: self.total,
        }
    }
}

/// Round-trip times, summarised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    /// Median.
    pub median_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Mean.
    pub mean_ns: f64,
    /// Largest.
    pub max_ns: u64,
    /// Round trips measured.
    pub samples: u64,
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// Whom a spinning side watches, so that it fails instead of spinning for ever.
#[derive(Clone)]
enum Watch {
    /// The peer process (from the measuring side): its exit is seen without reaping it.
    Child(libc::pid_t),
    /// The measuring process (from the peer): gone once we are re-parented.
    Parent(libc::pid_t),
    /// Nobody: the in-process ring's peer thread (its ring ends close when it stops).
    Nobody,
}

impl Watch {
    fn alive(&self) -> bool {
        match *self {
            Watch::Child(pid) => {
                // SAFETY: all zeroes is a valid siginfo_t; waitid fills it in.
                let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                // SAFETY: `info` is writable; WNOWAIT leaves the child to be reaped by its
                // guard, WNOHANG makes this a query.
                let rc = unsafe {
                    libc::waitid(
                        libc::P_PID,
                        pid as libc::id_t,
                        &mut info,
                        libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                    )
                };
                // SAFETY: waitid filled in (or left zero) the fields si_pid reads.
                rc == 0 && unsafe { info.si_pid() } == 0
            }
            Watch::Parent(ppid) => {
                // SAFETY: getppid has no preconditions.
                let now = unsafe { libc::getppid() };
                now == ppid
            }
            Watch::Nobody => true,
        }
    }
}

/// After this long waiting on one message, a spinning side checks that its peer lives.
const CHECK_PEER_AFTER: Duration = Duration::from_millis(20);
/// After this long waiting on one message, a spinning side gives up.
const STALLED_AFTER: Duration = Duration::from_secs(60);

/// How a spinning side waits: whom it watches, and whether it must yield the CPU (when the
/// two sides may share one, the peer cannot run while we spin).
struct Waiting {
    watch: Watch,
    yields: bool,
}

/// One wait of a spin loop: spins (and yields, if told to), and after a while checks the peer
/// and the time.
struct Spin<'a> {
    how: &'a Waiting,
    rounds: u32,
    since: Option<Instant>,
}

impl<'a> Spin<'a> {
    #[inline]
    fn new(how: &'a Waiting) -> Spin<'a> {
        Spin {
            how,
            rounds: 0,
            since: None,
        }
    }

    #[inline]
    fn pause(&mut self) -> Res<()> {
        std::hint::spin_loop();
        self.rounds = self.rounds.wrapping_add(1);
        if self.rounds % 1024 == 0 || self.how.yields {
            self.slow()?;
        }
        Ok(())
    }

    #[cold]
    fn slow(&mut self) -> Res<()> {
        if self.how.yields {
            std::thread::yield_now();
        }
        let now = Instant::now();
        let waited = now - *self.since.get_or_insert(now);
        if waited > CHECK_PEER_AFTER && !self.how.watch.alive() {
            return Err("the peer is gone".into());
        }
        if waited > STALLED_AFTER {
            return Err(format!("the peer has not answered for {waited:?}").into());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Endpoints

/// One side of a transport: sends and receives messages of the session's size.
trait Endpoint {
    /// Writes message `seq` of `len` bytes and sends it.
    fn send(&mut self, len: usize, seq: u64) -> Res<()>;
    /// Receives message `seq` and reads it ([`check`]); returns its sum.
    fn recv(&mut self, len: usize, seq: u64) -> Res<u64>;
    /// Receives message `seq`, reads it, and sends it back.
    fn echo(&mut self, len: usize, seq: u64) -> Res<u64>;
    /// Sends messages `first..first + count`.
    fn send_stream(&mut self, len: usize, first: u64, count: u64) -> Res<()> {
        for seq in first..first + count {
            self.send(len, seq)?;
        }
        Ok(())
    }
    /// Receives messages `first..first + count`; returns the sum of their sums.
    fn recv_stream(&mut self, len: usize, first: u64, count: u64) -> Res<u64> {
        let mut sum = 0u64;
        for seq in first..first + count {
            sum = sum.wrapping_add(self.recv(len, seq)?);
        }
        Ok(sum)
    }
}

/// How a shmpipe endpoint sends and receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShmStyle {
    /// `send`/`recv`, with the producer's and consumer's wait strategy set to this.
    Copy(WaitStrategy),
    /// `reserve`/`commit` and `try_lend`, batches for streams, spinning.
    ZeroCopy,
}

/// One side of two shmpipe rings.
struct ShmEnd {
    tx: Producer,
    rx: Consumer,
    style: ShmStyle,
    /// Messages per published (or released) batch in a stream.
    batch: u64,
    buf: Vec<u8>,
    waiting: Waiting,
}

impl ShmEnd {
    fn new(
        mut tx: Producer,
        mut rx: Consumer,
        style: ShmStyle,
        size: usize,
        waiting: Waiting,
    ) -> Self {
        if let ShmStyle::Copy(strategy) = style {
            tx.set_wait_strategy(strategy);
            rx.set_wait_strategy(strategy);
        }
        // The bench's rings are in slots of the default size (`ring_config`).
        let slot = shmpipe::DEFAULT_SLOT_SIZE as usize;
        let batch = batch_len(tx.capacity_slots() * slot, slot, size);
        ShmEnd {
            tx,
            rx,
            style,
            batch,
            buf: vec![0; size],
            waiting,
        }
    }

    /// Reserves room for `len` bytes, writes message `seq` there and commits it.
    #[inline]
    fn send_in_place(&mut self, len: usize, seq: u64) -> Res<()> {
        let mut spin = Spin::new(&self.waiting);
        loop {
            match self.tx.try_reserve(len) {
                Ok(mut grant) => {
                    // SAFETY: the peer is this program (a process re-executed from this binary,
                    // or a thread), which follows the protocol: it never touches a claimed slot.
                    fill(unsafe { grant.as_mut_slice_trusted() }, seq);
                    grant.commit();
                    return Ok(());
                }
                Err(TrySendError::Full) => spin.pause()?,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Endpoint for ShmEnd {
    #[inline]
    fn send(&mut self, len: usize, seq: u64) -> Res<()> {
        if self.style == ShmStyle::ZeroCopy {
            return self.send_in_place(len, seq);
        }
        let msg = &mut self.buf[..len];
        fill(msg, seq);
        self.tx.send(msg).map_err(|e| e.to_string())?;
        Ok(())
    }

    #[inline]
    fn recv(&mut self, len: usize, seq: u64) -> Res<u64> {
        if self.style == ShmStyle::ZeroCopy {
            let mut spin = Spin::new(&self.waiting);
            loop {
                match self.rx.try_lend() {
                    // SAFETY: the peer is this program, which follows the protocol: it never
                    // writes a published slot before we release it.
                    Ok(msg) => return check(unsafe { msg.as_slice_trusted() }, len, seq),
                    Err(TryRecvError::Empty) => spin.pause()?,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let n = self.rx.recv(&mut self.buf)?;
        check(&self.buf[..n], len, seq)
    }

    #[inline]
    fn echo(&mut self, len: usize, seq: u64) -> Res<u64> {
        if self.style != ShmStyle::ZeroCopy {
            let n = self.rx.recv(&mut self.buf)?;
            let sum = check(&self.buf[..n], len, seq)?;
            self.tx.send(&self.buf[..n]).map_err(|e| e.to_string())?;
            return Ok(sum);
        }
        // In place both ways: the message is read where it lies and copied straight into the
        // room reserved for the reply.
        let mut spin = Spin::new(&self.waiting);
        loop {
            match self.rx.try_lend() {
                Ok(msg) => {
                    // SAFETY: the peer is this program, which follows the protocol.
                    let msg = unsafe { msg.as_slice_trusted() };
                    let sum = check(msg, len, seq)?;
                    let mut spin = Spin::new(&self.waiting);
                    loop {
                        match self.tx.try_reserve(len) {
                            Ok(mut grant) => {
                                grant.copy_from_slice(msg);
                                grant.commit();
                                return Ok(sum);
                            }
                            Err(TrySendError::Full) => spin.pause()?,
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Err(TryRecvError::Empty) => spin.pause()?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn send_stream(&mut self, len: usize, first: u64, count: u64) -> Res<()> {
        if self.style != ShmStyle::ZeroCopy {
            for seq in first..first + count {
                self.send(len, seq)?;
            }
            return Ok(());
        }
        let every = self.batch;
        let mut batch = self.tx.batch();
        for (i, seq) in (first..first + count).enumerate() {
            let mut spin = Spin::new(&self.waiting);
            loop {
                // A full ring publishes the batch so far (SendBatch does), so this cannot
                // wait for ever on messages the consumer cannot see.
                match batch.try_reserve(len) {
                    Ok(mut grant) => {
                        // SAFETY: the peer is this program, which follows the protocol.
                        fill(unsafe { grant.as_mut_slice_trusted() }, seq);
                        grant.commit();
                        break;
                    }
                    Err(TrySendError::Full) => spin.pause()?,
                    Err(e) => return Err(e.into()),
                }
            }
            if (i as u64 + 1) % every == 0 {
                batch.publish();
            }
        }
        drop(batch); // publishes the rest
        Ok(())
    }

    fn recv_stream(&mut self, len: usize, first: u64, count: u64) -> Res<u64> {
        if self.style != ShmStyle::ZeroCopy {
            let mut sum = 0u64;
            for seq in first..first + count {
                sum = sum.wrapping_add(self.recv(len, seq)?);
            }
            return Ok(sum);
        }
        let every = self.batch;
        let mut batch = self.rx.batch();
        let mut sum = 0u64;
        let mut got = 0u64;
        let mut spin = Spin::new(&self.waiting);
        while got < count {
            let read = match batch.try_lend() {
                Ok(msg) => {
                    // SAFETY: the peer is this program, which follows the protocol.
                    let msg = unsafe { msg.as_slice_trusted() };
                    sum = sum.wrapping_add(check(msg, len, first + got)?);
                    true
                }
                Err(TryRecvError::Empty) => false,
                Err(e) => return Err(e.into()),
            };
            if read {
                got += 1;
                if got % every == 0 {
                    batch.release();
                }
                spin = Spin::new(&self.waiting);
            } else {
                // Give back what we have read, so the producer has room.
                batch.release();
                spin.pause()?;
            }
        }
        Ok(sum)
    }
}

/// One side of a byte stream (pipe, Unix stream socket, TCP): length-prefixed frames.
struct StreamEnd {
    w: File,
    r: BufReader<File>,
    /// A frame: 4-byte little-endian length, then the payload.
    buf: Vec<u8>,
}

/// Bytes of the length prefix.
const FRAME_HEADER: usize = 4;

impl StreamEnd {
    fn new(r: File, w: File, size: usize) -> StreamEnd {
        StreamEnd {
            w,
            r: BufReader::with_capacity(64 << 10, r),
            buf: vec![0; FRAME_HEADER + size],
        }
    }

    /// Reads one frame into `buf`, which must hold `len` bytes of payload.
    #[inline]
    fn read_frame(&mut self, len: usize) -> Res<()> {
        self.r.read_exact(&mut self.buf[..FRAME_HEADER])?;
        let n = u32::from_le_bytes(self.buf[..FRAME_HEADER].try_into().expect("4 bytes"));
        if n as usize != len {
            return Err(format!("frame of {n} bytes, expected {len}").into());
        }
        self.r
            .read_exact(&mut self.buf[FRAME_HEADER..FRAME_HEADER + len])?;
        Ok(())
    }
}

impl Endpoint for StreamEnd {
    #[inline]
    fn send(&mut self, len: usize, seq: u64) -> Res<()> {
        let frame = &mut self.buf[..FRAME_HEADER + len];
        frame[..FRAME_HEADER].copy_from_slice(&(len as u32).to_le_bytes());
        fill(&mut frame[FRAME_HEADER..], seq);
        self.w.write_all(frame)?;
        Ok(())
    }

    #[inline]
    fn recv(&mut self, len: usize, seq: u64) -> Res<u64> {
        self.read_frame(len)?;
        check(&self.buf[FRAME_HEADER..FRAME_HEADER + len], len, seq)
    }

    #[inline]
    fn echo(&mut self, len: usize, seq: u64) -> Res<u64> {
        self.read_frame(len)?;
        let sum = check(&self.buf[FRAME_HEADER..FRAME_HEADER + len], len, seq)?;
        self.w.write_all(&self.buf[..FRAME_HEADER + len])?;
        Ok(sum)
    }
}

/// One side of a Unix seqpacket socket: one record per message.
struct PacketEnd {
    sock: File,
    /// One byte more than a message, so a longer record shows up as one.
    buf: Vec<u8>,
}

impl PacketEnd {
    fn new(sock: File, size: usize) -> PacketEnd {
        PacketEnd {
            sock,
            buf: vec![0; size + 1],
        }
    }

    /// Receives one record into `buf`; returns its length.
    #[inline]
    fn read_record(&mut self) -> Res<usize> {
        loop {
            match self.sock.read(&mut self.buf) {
                Ok(0) => return Err("the peer closed the socket".into()),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends `buf[..len]` as one record.
    #[inline]
    fn write_record(&mut self, len: usize) -> Res<()> {
        loop {
            match self.sock.write(&self.buf[..len]) {
                Ok(n) if n == len => return Ok(()),
                Ok(n) => return Err(format!("sent {n} of {len} bytes of a record").into()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Endpoint for PacketEnd {
    #[inline]
    fn send(&mut self, len: usize, seq: u64) -> Res<()> {
        fill(&mut self.buf[..len], seq);
        self.write_record(len)
    }

    #[inline]
    fn recv(&mut self, len: usize, seq: u64) -> Res<u64> {
        let n = self.read_record()?;
        check(&self.buf[..n], len, seq)
    }

    #[inline]
    fn echo(&mut self, len: usize, seq: u64) -> Res<u64> {
        let n = self.read_record()?;
        let sum = check(&self.buf[..n], len, seq)?;
        self.write_record(n)?;
        Ok(sum)
    }
}

/// Any endpoint; the timed loops are generic, and this picks the instance. (One per session:
/// the size of the largest variant does not matter, and boxing it would add an indirection.)
#[allow(clippy::large_enum_variant)]
enum AnyEnd {
    Shm(ShmEnd),
    Stream(StreamEnd),
    Packet(PacketEnd),
    Reference(reference::RefEnd),
    #[cfg(feature = "iceoryx2")]
    Ice(iceoryx2::IceEnd),
}

/// Runs `$body` with `$e` bound to the concrete endpoint inside `$end`.
macro_rules! with_end {
    ($end:expr, $e:ident => $body:expr) => {
        match $end {
            AnyEnd::Shm($e) => $body,
            AnyEnd::Stream($e) => $body,
            AnyEnd::Packet($e) => $body,
            AnyEnd::Reference($e) => $body,
            #[cfg(feature = "iceoryx2")]
            AnyEnd::Ice($e) => $body,
        }
    };
}

// After `with_end!`, which they use.
#[path = "latency.rs"]
pub mod latency;
#[path = "reference.rs"]
mod reference;
#[path = "runs.rs"]
pub mod runs;

// ---------------------------------------------------------------------------------------------
// Ring shapes

/// Bytes of each ring for messages of `size` bytes unless `--ring-bytes` says otherwise: room
/// for at least 8 messages, and at least the library's default ring (1 MiB), the shape a user
/// who sets nothing gets.
pub fn ring_bytes(size: usize) -> usize {
    let default = shmpipe::DEFAULT_SLOT_SIZE as usize * shmpipe::DEFAULT_SLOT_COUNT as usize;
    (8 * (size + 8)).next_power_of_two().max(default)
}

/// A ring of `ring` bytes (a power of two) in slots of the library's default size.
fn ring_config(ring: usize) -> RingConfig {
    let slot = shmpipe::DEFAULT_SLOT_SIZE;
    RingConfig::new()
        .slot_size(slot)
        .slot_count(u32::try_from(ring / slot as usize).unwrap_or(u32::MAX))
}

/// Messages per batch in `shmpipe-batch` streams through a ring of `ring` bytes in `slot`-byte
/// slots: a quarter of the ring, at most 32.
pub fn batch_len(ring: usize, slot: usize, size: usize) -> u64 {
    let record = (size + 8).div_ceil(slot) * slot;
    (ring / 4 / record).clamp(1, 32) as u64
}

/// Blocks the signals that end a process from the terminal while alive, so that a ring cannot
/// be left between its creation and its removal mark: a signal that comes in between is
/// delivered (and ends the process) once the ring is marked.
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn new() -> SignalsBlocked {
        // SAFETY: all zeroes is a valid sigset_t to pass to sigemptyset, which initialises it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` and `old` are valid sigset_t values we own; the signal numbers are
        // valid; pthread_sigmask only changes this thread's mask.
        unsafe {
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                libc::sigaddset(&mut set, sig);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        }
        SignalsBlocked(old)
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new`, a valid sigset_t.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// A ring in a new private segment, already marked for removal: the kernel frees it once both
/// processes have detached, however they end.
fn private_ring(config: &RingConfig) -> Res<Ring> {
    let _blocked = SignalsBlocked::new();
    let ring = Ring::create(Key::Private, config)?;
    ring.remove()?;
    Ok(ring)
}

// ---------------------------------------------------------------------------------------------
// Kernel transports

/// A pipe: (read end, write end), close-on-exec.
fn pipe() -> Res<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2: {}", io::Error::last_os_error()).into());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A connected pair of Unix sockets of `kind` (SOCK_STREAM or SOCK_SEQPACKET), close-on-exec.
fn socket_pair(kind: libc::c_int) -> Res<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            kind | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(format!("socketpair: {}", io::Error::last_os_error()).into());
    }
    // SAFETY: socketpair succeeded, so both are open descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A connected pair of TCP sockets over loopback, both with `TCP_NODELAY`.
fn tcp_pair() -> Res<(OwnedFd, OwnedFd)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let ours = TcpStream::connect(listener.local_addr()?)?;
    let (theirs, _) = listener.accept()?;
    ours.set_nodelay(true)?;
    theirs.set_nodelay(true)?;
    Ok((ours.into(), theirs.into()))
}

/// What the measuring side keeps of a transport it set up for a peer process (one per
/// session, so the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
enum Ours {
    Shm(Producer, Consumer, ShmStyle),
    Stream(File, File),
    Packet(File),
    Reference(std::sync::Arc<reference::Map>),
    #[cfg(feature = "iceoryx2")]
    Ice(iceoryx2::Services),
}

impl Ours {
    fn into_end(self, size: usize, waiting: Waiting) -> Res<AnyEnd> {
        Ok(match self {
            Ours::Shm(tx, rx, style) => AnyEnd::Shm(ShmEnd::new(tx, rx, style, size, waiting)),
            Ours::Stream(r, w) => AnyEnd::Stream(StreamEnd::new(r, w, size)),
            Ours::Packet(sock) => AnyEnd::Packet(PacketEnd::new(sock, size)),
            Ours::Reference(map) => {
                AnyEnd::Reference(reference::RefEnd::new(&map, 0, size, waiting))
            }
            #[cfg(feature = "iceoryx2")]
            Ours::Ice(services) => AnyEnd::Ice(services.into_end(size, waiting)?),
        })
    }
}

/// The shmpipe style of a transport.
fn shm_style(t: Transport) -> Option<ShmStyle> {
    match t {
        Transport::ShmpipeSpin | Transport::ThreadRing => Some(ShmStyle::Copy(WaitStrategy::Spin)),
        Transport::Shmpipe => Some(ShmStyle::Copy(WaitStrategy::SpinThenSleep)),
        Transport::ShmpipeBatch => Some(ShmStyle::ZeroCopy),
        _ => None,
    }
}

/// Sets up `t` for a peer process: what we keep, the descriptors the peer inherits, and the
/// two values (`a`, `b`) that tell it where its ends are (shmids or descriptor numbers; for
/// `reference`, the memfd's number and the ring's bytes). `size`: bytes per message; `ring`:
/// bytes of each ring.
fn set_up(t: Transport, size: usize, ring: usize) -> Res<(Ours, Vec<OwnedFd>, [i64; 2])> {
    // Only iceoryx2 sizes its buffers by the message size.
    #[cfg(not(feature = "iceoryx2"))]
    let _ = size;
    if t == Transport::Reference {
        let (map, fd) = reference::Map::create(ring)?;
        let ab = [i64::from(fd.as_raw_fd()), i64::try_from(ring)?];
        return Ok((Ours::Reference(std::sync::Arc::new(map)), vec![fd], ab));
    }
    if let Some(style) = shm_style(t) {
        let config = ring_config(ring);
        // Down: we produce, the peer consumes. Up: the other way.
        let down = private_ring(&config)?;
        let up = private_ring(&config)?;
        let ids = [
            i64::from(down.shmid().ok_or("ring has no shmid")?),
            i64::from(up.shmid().ok_or("ring has no shmid")?),
        ];
        return Ok((
            Ours::Shm(down.producer()?, up.consumer()?, style),
            Vec::new(),
            ids,
        ));
    }
    #[cfg(feature = "iceoryx2")]
    if t == Transport::Iceoryx2 {
        let (services, session) = iceoryx2::set_up(size)?;
        return Ok((Ours::Ice(services), Vec::new(), [session, -1]));
    }
    let (ours, theirs) = match t {
        Transport::Pipe => {
            let (down_r, down_w) = pipe()?;
            let (up_r, up_w) = pipe()?;
            (
                Ours::Stream(File::from(up_r), File::from(down_w)),
                vec![down_r, up_w],
            )
        }
        Transport::UnixStream | Transport::Tcp => {
            let (a, b) = if t == Transport::Tcp {
                tcp_pair()?
            } else {
                socket_pair(libc::SOCK_STREAM)?
            };
            let a = File::from(a);
            (Ours::Stream(a.try_clone()?, a), vec![b])
        }
        Transport::UnixSeqpacket => {
            let (a, b) = socket_pair(libc::SOCK_SEQPACKET)?;
            (Ours::Packet(File::from(a)), vec![b])
        }
        _ => unreachable!("shmpipe transports are set up above"),
    };
    let mut numbers = [-1i64; 2];
    for (n, fd) in numbers.iter_mut().zip(&theirs) {
        *n = i64::from(fd.as_raw_fd());
    }
    Ok((ours, theirs, numbers))
}

// ---------------------------------------------------------------------------------------------
// The peer

/// The first argument that makes the current executable a peer, followed by its instructions:
/// `shmpipe __bench-peer SPEC` (a hidden subcommand), or the criterion bench binary, whose
/// `main` looks for it before criterion parses the arguments.
pub const PEER_ARG: &str = "__bench-peer";

/// Control commands, from the measuring side to the peer: 24 bytes, (operation, count, first
/// sequence number), little-endian.
const OP_QUIT: u64 = 0;
const OP_ROUND_TRIPS: u64 = 1;
const OP_STREAM: u64 = 2;
const OP_PROBE: u64 = 3;

/// Serves commands from `control` until `OP_QUIT` or end of file; answers probes on `line`
/// pinned to `line_cpu`.
fn serve<E: Endpoint>(
    e: &mut E,
    control: &mut dyn Read,
    size: usize,
    line: &Line,
    line_cpu: Option<usize>,
) -> Res<()> {
    let mut cmd = [0u8; 24];
    loop {
        match control.read_exact(&mut cmd) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(err) => return Err(err.into()),
        }
        let word = |i: usize| u64::from_le_bytes(cmd[i * 8..i * 8 + 8].try_into().expect("8"));
        let (op, count, first) = (word(0), word(1), word(2));
        match op {
            OP_QUIT => return Ok(()),
            OP_ROUND_TRIPS => {
                e.send(size, READY)?;
                let mut sum = 0u64;
                for seq in first..first + count {
                    sum = sum.wrapping_add(e.echo(size, seq)?);
                }
                black_box(sum);
            }
            OP_STREAM => {
                e.send(size, READY)?;
                black_box(e.recv_stream(size, first, count)?);
                e.send(size, first + count)?;
            }
            OP_PROBE => match line_cpu {
                Some(cpu) => pinned_for(cpu, || line.answer(first, count))?,
                None => line.answer(first, count),
            },
            latency::OP_FIXED_RATE => latency::serve(e, control, size, first, count)?,
            _ => return Err(format!("unknown command {op}").into()),
        }
    }
}

/// What a peer process is told, as `key=value` words.
struct PeerSpec {
    transport: Transport,
    size: usize,
    cpu: Option<usize>,
    parent: libc::pid_t,
    a: i64,
    b: i64,
    /// The descriptor of the probe's line.
    line: i64,
    /// The CPU the peer answers probes on (the pair's second, whatever the placement).
    line_cpu: Option<usize>,
}

impl PeerSpec {
    fn encode(&self) -> String {
        format!(
            "transport={} size={} cpu={} parent={} a={} b={} line={} line_cpu={}",
            self.transport.name(),
            self.size,
            cpu_word(self.cpu),
            self.parent,
            self.a,
            self.b,
            self.line,
            cpu_word(self.line_cpu),
        )
    }

    fn decode(spec: &str) -> Res<PeerSpec> {
        let mut transport = None;
        let (mut size, mut cpu, mut parent, mut a, mut b) = (None, None, None, None, None);
        let (mut line, mut line_cpu) = (None, None);
        for word in spec.split_whitespace() {
            let (k, v) = word
                .split_once('=')
                .ok_or_else(|| format!("bad peer argument {word:?}"))?;
            match k {
                "transport" => {
                    transport =
                        Some(Transport::from_name(v).ok_or_else(|| format!("no transport {v:?}"))?)
                }
                "size" => size = Some(v.parse()?),
                "cpu" => cpu = Some(parse_cpu_word(v)?),
                "line_cpu" => line_cpu = Some(parse_cpu_word(v)?),
                "line" => line = Some(v.parse()?),
                "parent" => parent = Some(v.parse()?),
                "a" => a = Some(v.parse()?),
                "b" => b = Some(v.parse()?),
                _ => return Err(format!("bad peer argument {word:?}").into()),
            }
        }
        let missing = || format!("incomplete peer arguments {spec:?}");
        Ok(PeerSpec {
            transport: transport.ok_or_else(missing)?,
            size: size.ok_or_else(missing)?,
            cpu: cpu.ok_or_else(missing)?,
            parent: parent.ok_or_else(missing)?,
            a: a.ok_or_else(missing)?,
            b: b.ok_or_else(missing)?,
            line: line.ok_or_else(missing)?,
            line_cpu: line_cpu.ok_or_else(missing)?,
        })
    }
}

/// A CPU in a peer spec: its number, or `-` for none.
fn cpu_word(cpu: Option<usize>) -> String {
    cpu.map_or_else(|| "-".to_string(), |c| c.to_string())
}

/// The inverse of [`cpu_word`].
fn parse_cpu_word(v: &str) -> Res<Option<usize>> {
    Ok(if v == "-" { None } else { Some(v.parse()?) })
}

/// A descriptor the measuring side passed us.
fn inherited(n: i64) -> Res<File> {
    let fd = RawFd::try_from(n)?;
    // SAFETY: F_GETFD only asks whether `fd` is open.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(format!("descriptor {n} was not passed").into());
    }
    // SAFETY: the measuring side opened this descriptor for us alone and kept no reference to
    // it in this process (it was inherited across exec); nothing else here owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The peer process: `spec` comes from the measuring side (the argument after [`PEER_ARG`]). Serves commands read
/// from standard input until told to quit.
///
/// # Errors
///
/// Any failure of the transport or of the protocol; the caller prints it and exits non-zero.
pub fn peer_main(spec: &str) -> Res<()> {
    let spec = PeerSpec::decode(spec)?;
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != spec.parent {
        return Err("the measuring process is gone".into());
    }
    if let Some(cpu) = spec.cpu {
        pin_to(cpu)?;
    }
    let size = spec.size;
    let mut end = if let Some(style) = shm_style(spec.transport) {
        let down = Ring::open(Shmid(i32::try_from(spec.a)?), &RingConfig::new())?;
        let up = Ring::open(Shmid(i32::try_from(spec.b)?), &RingConfig::new())?;
        // Pinned, the peer has a CPU of its own. Unpinned (only with a single CPU: the
        // spinning transports are otherwise always pinned) it must yield while it spins. (Its
        // inherited affinity mask says nothing: it is the measuring side's at spawn.)
        let waiting = Waiting {
            watch: Watch::Parent(spec.parent),
            yields: spec.cpu.is_none(),
        };
        AnyEnd::Shm(ShmEnd::new(
            up.producer()?,
            down.consumer()?,
            style,
            size,
            waiting,
        ))
    } else {
        match spec.transport {
            Transport::Pipe => {
                AnyEnd::Stream(StreamEnd::new(inherited(spec.a)?, inherited(spec.b)?, size))
            }
            Transport::UnixStream | Transport::Tcp => {
                let sock = inherited(spec.a)?;
                AnyEnd::Stream(StreamEnd::new(sock.try_clone()?, sock, size))
            }
            Transport::UnixSeqpacket => AnyEnd::Packet(PacketEnd::new(inherited(spec.a)?, size)),
            Transport::Reference => {
                let fd = OwnedFd::from(inherited(spec.a)?);
                let map = reference::Map::open(&fd, usize::try_from(spec.b)?)?;
                let waiting = Waiting {
                    watch: Watch::Parent(spec.parent),
                    yields: spec.cpu.is_none(),
                };
                let map = std::sync::Arc::new(map);
                AnyEnd::Reference(reference::RefEnd::new(&map, 1, size, waiting))
            }
            #[cfg(feature = "iceoryx2")]
            Transport::Iceoryx2 => {
                let waiting = Waiting {
                    watch: Watch::Parent(spec.parent),
                    yields: spec.cpu.is_none(),
                };
                AnyEnd::Ice(iceoryx2::open(spec.parent, spec.a, size, waiting)?)
            }
            _ => unreachable!("shmpipe transports are handled above"),
        }
    };
    let line = Line::map(&OwnedFd::from(inherited(spec.line)?))?;
    let mut control = io::stdin().lock();
    with_end!(&mut end, e => serve(e, &mut control, size, &line, spec.line_cpu))
}

// ---------------------------------------------------------------------------------------------
// The placement probe: one cache line between the two CPUs

/// Round trips of the line per probe, after one untimed handshake: `PROBE_BATCHES` batches of
/// `PROBE_BATCH`, each timed as a whole (so clock reads do not count).
const PROBE_BATCHES: usize = 20;
const PROBE_BATCH: u64 = 100;
/// How long either side waits for the other's first move, and then for each move, before the
/// probe gives up (and reports nothing rather than hang).
const PROBE_FIRST_PATIENCE: Duration = Duration::from_secs(1);
const PROBE_PATIENCE: Duration = Duration::from_millis(100);
/// One-way time of a cache line between the two CPUs below which they share a cache: the
/// middle of the gap between the two placements such machines show (docs/BENCHMARKS.md).
pub const SHARED_CACHE_NS: f64 = 150.0;

/// A shared page (a memfd mapped shared by both sides) whose first word is the probe's line.
struct Line(std::ptr::NonNull<u8>);

const LINE_BYTES: usize = 4096;

impl Line {
    /// A new zeroed page and the descriptor the peer maps it from (close-on-exec).
    fn create() -> Res<(Line, OwnedFd)> {
        // SAFETY: the name is a NUL-terminated literal; memfd_create touches no other memory.
        let fd = unsafe { libc::memfd_create(c"shmpipe-bench-line".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("memfd_create: {}", io::Error::last_os_error()).into());
        }
        // SAFETY: memfd_create succeeded, so `fd` is open and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        File::from(fd.try_clone()?).set_len(LINE_BYTES as u64)?;
        Ok((Line::map(&fd)?, fd))
    }

    /// Maps the page of `fd`, shared.
    fn map(fd: &OwnedFd) -> Res<Line> {
        // SAFETY: a fresh shared mapping chosen by the kernel; it aliases no Rust object.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LINE_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap of the probe line: {}", io::Error::last_os_error()).into());
        }
        Ok(Line(
            std::ptr::NonNull::new(p.cast()).ok_or("mmap returned null")?,
        ))
    }

    fn word(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned, LINE_BYTES long and lives as long as `self`;
        // both processes only ever access this word atomically, and every bit pattern is a
        // valid u64, so whatever the peer writes is read soundly.
        unsafe { AtomicU64::from_ptr(self.0.as_ptr().cast()) }
    }

    /// Writes `v` to the line.
    fn put(&self, v: u64) {
        // Relaxed: the value is the whole message, nothing else is published by it (pair: the
        // other side's load in `wait_for`).
        self.word().store(v, Ordering::Relaxed);
    }

    /// Spins until the line holds `want`; false if `patience` passes first.
    fn wait_for(&self, want: u64, patience: Duration) -> bool {
        let start = Instant::now();
        let mut spins = 0u32;
        // Relaxed: pairs with the other side's store in `put`; only the value matters.
        while self.word().load(Ordering::Relaxed) != want {
            spins = spins.wrapping_add(1);
            if spins % 1024 == 0 && start.elapsed() > patience {
                return false;
            }
            std::hint::spin_loop();
        }
        true
    }

    /// The value round trip `i` of a probe starting at `first` sends (odd); the answer is one
    /// more. Each probe uses values no earlier probe used, so a late answer cannot be mistaken.
    fn value(first: u64, i: u64) -> u64 {
        first.wrapping_add(i).wrapping_mul(2) | 1
    }

    /// The measuring side of a probe of `1 + PROBE_BATCHES * PROBE_BATCH` round trips: the
    /// median over the batches of the one-way time (half a round trip), in ns; `None` if the
    /// peer stopped answering.
    fn probe(&self, first: u64) -> Option<f64> {
        self.put(Line::value(first, 0));
        if !self.wait_for(Line::value(first, 0) + 1, PROBE_FIRST_PATIENCE) {
            return None;
        }
        let mut one_way = [0f64; PROBE_BATCHES];
        let mut i = 1;
        for slot in &mut one_way {
            let t0 = Instant::now();
            for _ in 0..PROBE_BATCH {
                let v = Line::value(first, i);
                self.put(v);
                if !self.wait_for(v + 1, PROBE_PATIENCE) {
                    return None;
                }
                i += 1;
            }
            *slot = t0.elapsed().as_nanos() as f64 / (2 * PROBE_BATCH) as f64;
        }
        one_way.sort_unstable_by(f64::total_cmp);
        Some(one_way[PROBE_BATCHES / 2])
    }

    /// The peer's side of a probe: answers `count` round trips, or stops when the measuring
    /// side has given up.
    fn answer(&self, first: u64, count: u64) {
        for i in 0..count {
            let v = Line::value(first, i);
            let patience = if i == 0 {
                PROBE_FIRST_PATIENCE
            } else {
                PROBE_PATIENCE
            };
            if !self.wait_for(v, patience) {
                return;
            }
            self.put(v + 1);
        }
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` made; no reference to it outlives `self`.
        unsafe { libc::munmap(self.0.as_ptr().cast(), LINE_BYTES) };
    }
}

/// Round trips in one probe, the handshake included.
const PROBE_COUNT: u64 = 1 + PROBE_BATCHES as u64 * PROBE_BATCH;

/// Runs `f` with the calling thread pinned to `cpu`, then restores its affinity mask.
fn pinned_for<T>(cpu: usize, f: impl FnOnce() -> T) -> Res<T> {
    // SAFETY: as in `cpus`, all zeroes is a valid cpu_set_t.
    let mut saved: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `saved` is a writable cpu_set_t and we pass its exact size; 0 is this thread.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut saved) } != 0 {
        return Err(format!("sched_getaffinity: {}", io::Error::last_os_error()).into());
    }
    pin_to(cpu)?;
    let out = f();
    set_affinity(&saved)?;
    Ok(out)
}

/// What the two CPUs share, as the probe saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    /// Every probe: a line crosses in under [`SHARED_CACHE_NS`] (the CPUs share a cache).
    Shared,
    /// Every probe: [`SHARED_CACHE_NS`] or more (no shared cache).
    Split,
    /// Some probes said shared, some split: the host moved the CPUs during the measurement.
    Changed,
    /// A probe could not be taken (one CPU, or the peer did not answer), and none disagreed.
    Unknown,
}

impl Cache {
    /// The placement that a series of probes (in ns one way; `None` for a failed one) shows.
    pub fn over(probes: impl IntoIterator<Item = Option<f64>>) -> Cache {
        let (mut shared, mut split, mut unknown) = (false, false, false);
        for p in probes {
            match p {
                Some(ns) if ns < SHARED_CACHE_NS => shared = true,
                Some(_) => split = true,
                None => unknown = true,
            }
        }
        match (shared, split, unknown) {
            (true, true, _) => Cache::Changed,
            (_, _, true) | (false, false, false) => Cache::Unknown,
            (true, false, false) => Cache::Shared,
            (false, true, false) => Cache::Split,
        }
    }

    /// `shared`, `split`, `changed` or `unknown`.
    pub fn name(self) -> &'static str {
        match self {
            Cache::Shared => "shared",
            Cache::Split => "split",
            Cache::Changed => "changed",
            Cache::Unknown => "unknown",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// The peer of a session.
enum Peer {
    Process(Child),
    Thread(JoinHandle<Res<()>>),
}

/// The measuring side of one transport and message size, with its peer running. Dropping it
/// stops the peer (killing it if it does not stop within a second).
pub struct Session {
    size: usize,
    end: Option<AnyEnd>,
    control: Option<File>,
    peer: Option<Peer>,
    /// The probe's line, shared with the peer.
    line: Line,
    /// The next sequence number (probes take theirs from it too).
    seq: u64,
    /// The iceoryx2 session's files, removed when this is dropped: after `drop` has stopped
    /// the peer.
    #[cfg(feature = "iceoryx2")]
    _ice_files: Option<iceoryx2::Files>,
}

impl Session {
    /// Places the calling thread as `placement` says, sets up `t` for messages of `size` bytes
    /// and starts the peer: the current executable, run with [`PEER_ARG`]. The shmpipe
    /// transports' and `reference`'s rings have `ring` bytes each (a power of two), or
    /// [`ring_bytes`] of `size` if `None`.
    ///
    /// # Errors
    ///
    /// If the transport cannot be set up, its rings cannot carry messages of `size` bytes, or
    /// the peer cannot be started.
    pub fn start(
        t: Transport,
        size: usize,
        placement: Placement,
        ring: Option<usize>,
    ) -> Res<Session> {
        if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
            return Err(format!("messages must be {MIN_SIZE} to {MAX_SIZE} bytes").into());
        }
        let ring = ring.unwrap_or_else(|| ring_bytes(size));
        if t == Transport::Reference || shm_style(t).is_some() {
            reference::check_ring(ring, size)?;
        }
        place_self(placement)?;
        let (control_r, control_w) = pipe()?;
        let (line, line_fd) = Line::create()?;
        if t == Transport::ThreadRing {
            let control = File::from(control_r);
            return Session::start_thread(size, ring, placement, control, control_w, line, line_fd);
        }
        let (ours, mut theirs, ab) = set_up(t, size, ring)?;
        #[cfg(feature = "iceoryx2")]
        let ice_files = match &ours {
            Ours::Ice(services) => Some(services.files()),
            _ => None,
        };
        let line_no = i64::from(line_fd.as_raw_fd());
        theirs.push(line_fd);
        let spec = PeerSpec {
            transport: t,
            size,
            cpu: peer_cpu(placement),
            parent: std::process::id() as libc::pid_t,
            a: ab[0],
            b: ab[1],
            line: line_no,
            line_cpu: peer_cpu(Placement::Pinned),
        }
        .encode();
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg(PEER_ARG)
            .arg(&spec)
            .stdin(Stdio::from(control_r))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let mut keep = [-1 as RawFd; 3];
        for (k, fd) in keep.iter_mut().zip(&theirs) {
            *k = fd.as_raw_fd();
        }
        // SAFETY: the closure runs in the child between fork and exec. It only calls fcntl,
        // which is async-signal-safe, on descriptor numbers copied in beforehand; it allocates
        // nothing and touches no lock. Clearing FD_CLOEXEC lets exactly these descriptors (the
        // peer's ends, close-on-exec in this process) survive the exec.
        unsafe {
            cmd.pre_exec(move || {
                for fd in keep {
                    if fd >= 0 && libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let waiting = Waiting {
            watch: Watch::Child(child.id() as libc::pid_t),
            yields: cpu_pair().is_none(),
        };
        drop(theirs); // the peer has its copies
        Ok(Session {
            size,
            end: Some(ours.into_end(size, waiting)?),
            control: Some(File::from(control_w)),
            peer: Some(Peer::Process(child)),
            line,
            seq: 0,
            #[cfg(feature = "iceoryx2")]
            _ice_files: ice_files,
        })
    }

    /// `thread-ring`: two in-process rings, the peer a thread pinned to the other CPU.
    fn start_thread(
        size: usize,
        ring: usize,
        placement: Placement,
        mut control: File,
        control_w: OwnedFd,
        line: Line,
        line_fd: OwnedFd,
    ) -> Res<Session> {
        let config = ring_config(ring);
        let down = Ring::create(Heap, &config)?;
        let up = Ring::create(Heap, &config)?;
        let style = ShmStyle::Copy(WaitStrategy::Spin);
        let cpu = peer_cpu(placement);
        let waiting = move || Waiting {
            watch: Watch::Nobody,
            yields: cpu.is_none(),
        };
        let ours = ShmEnd::new(down.producer()?, up.consumer()?, style, size, waiting());
        let (tx, rx) = (up.producer()?, down.consumer()?);
        let line_cpu = peer_cpu(Placement::Pinned);
        let thread = std::thread::Builder::new()
            .name("bench-peer".into())
            .spawn(move || -> Res<()> {
                if let Some(cpu) = cpu {
                    pin_to(cpu)?;
                }
                // If the measuring side stops, its ring ends close and our waits fail.
                let mut end = ShmEnd::new(tx, rx, style, size, waiting());
                // Its own mapping of the line: as between processes, two mappings of a page.
                let line = Line::map(&line_fd)?;
                serve(&mut end, &mut control, size, &line, line_cpu)
            })?;
        Ok(Session {
            size,
            end: Some(AnyEnd::Shm(ours)),
            control: Some(File::from(control_w)),
            peer: Some(Peer::Thread(thread)),
            line,
            seq: 0,
            #[cfg(feature = "iceoryx2")]
            _ice_files: None,
        })
    }

    /// Sends a command to the peer; returns the first sequence number of its messages.
    fn command(&mut self, op: u64, count: u64) -> Res<u64> {
        self.command_with(op, count, &[])
    }

    /// [`Session::command`] followed by `extra` words (which `op` tells the peer to read).
    fn command_with(&mut self, op: u64, count: u64, extra: &[u64]) -> Res<u64> {
        let first = self.seq;
        self.seq += count;
        let cmd = command_bytes(op, count, first, extra);
        let control = self.control.as_mut().ok_or("session closed")?;
        control
            .write_all(&cmd)
            .map_err(|e| format!("the peer is gone ({e})"))?;
        Ok(first)
    }

    /// Times one cache line going back and forth between the two sides, each pinned to its
    /// CPU of the pair for the while (whatever the session's placement): the one-way time in
    /// ns, the median of batches of round trips. `None` with one CPU, or if the peer stopped
    /// answering for [`PROBE_PATIENCE`].
    ///
    /// # Errors
    ///
    /// If the peer is gone or the calling thread cannot be pinned.
    pub fn probe_line(&mut self) -> Res<Option<f64>> {
        let Some((mine, _)) = cpu_pair() else {
            return Ok(None);
        };
        let first = self.command(OP_PROBE, PROBE_COUNT)?;
        let line = &self.line;
        pinned_for(mine, || line.probe(first))
    }

    /// `n` round trips, each timed alone into `hist`; returns their total time.
    ///
    /// # Errors
    ///
    /// Any failure of the transport or of the peer.
    pub fn round_trips(&mut self, n: u64, hist: &mut Histogram) -> Res<Duration> {
        let first = self.command(OP_ROUND_TRIPS, n)?;
        let size = self.size;
        let end = self.end.as_mut().ok_or("session closed")?;
        with_end!(end, e => round_trips(e, size, first, n, hist))
    }

    /// Streams `n` messages to the peer; returns the time from the first send to the peer's
    /// acknowledgement of the last.
    ///
    /// # Errors
    ///
    /// Any failure of the transport or of the peer.
    pub fn stream(&mut self, n: u64) -> Res<Duration> {
        let first = self.command(OP_STREAM, n)?;
        let size = self.size;
        let end = self.end.as_mut().ok_or("session closed")?;
        with_end!(end, e => stream(e, size, first, n))
    }
}

/// A control command: operation, count, first sequence number, then `extra`, each word
/// little-endian.
fn command_bytes(op: u64, count: u64, first: u64, extra: &[u64]) -> Vec<u8> {
    [op, count, first]
        .iter()
        .chain(extra)
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

fn round_trips<E: Endpoint>(
    e: &mut E,
    size: usize,
    first: u64,
    n: u64,
    hist: &mut Histogram,
) -> Res<Duration> {
    e.recv(size, READY)?;
    let mut total = Duration::ZERO;
    let mut sum = 0u64;
    for seq in first..first + n {
        let t0 = Instant::now();
        e.send(size, seq)?;
        sum = sum.wrapping_add(e.recv(size, seq)?);
        let dt = t0.elapsed();
        hist.record(dt);
        total += dt;
    }
    black_box(sum);
    Ok(total)
}

fn stream<E: Endpoint>(e: &mut E, size: usize, first: u64, n: u64) -> Res<Duration> {
    e.recv(size, READY)?;
    let t0 = Instant::now();
    e.send_stream(size, first, n)?;
    e.recv(size, first + n)?;
    Ok(t0.elapsed())
}

impl Drop for Session {
    fn drop(&mut self) {
        // Our ends first: a peer stuck in a wait on them then fails instead of waiting on.
        self.end = None;
        if let Some(mut control) = self.control.take() {
            let _ = control.write_all(&[0u8; 24]); // OP_QUIT
        }
        match self.peer.take() {
            Some(Peer::Process(mut child)) => {
                let deadline = Instant::now() + Duration::from_secs(1);
                while Instant::now() < deadline {
                    match child.try_wait() {
                        Ok(Some(_)) | Err(_) => return,
                        Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            Some(Peer::Thread(thread)) => {
                let _ = thread.join();
            }
            None => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reference: two memcpy per message

/// `count` messages of `size` bytes written ([`fill`]), copied into a ring-sized buffer (at
/// successive offsets, as records in a ring), copied out and read ([`check`]), all in the
/// calling thread: what the copying API would cost if moving the bytes between cores were
/// free. Returns the time taken.
pub fn memcpy_reference(size: usize, count: u64) -> Duration {
    let stride = (size + 8).next_multiple_of(shmpipe::DEFAULT_SLOT_SIZE as usize);
    let slots = (ring_bytes(size) / stride).max(1);
    let mut src = vec![0u8; size];
    let mut ring = vec![0u8; slots * stride];
    let mut dst = vec![0u8; size];
    let mut sum = 0u64;
    let t0 = Instant::now();
    for seq in 0..count {
        fill(&mut src, seq);
        let at = (seq as usize % slots) * stride;
        ring[at..at + size].copy_from_slice(&src);
        black_box(&mut ring[at..at + size]);
        dst.copy_from_slice(&ring[at..at + size]);
        sum = sum.wrapping_add(check(&dst, size, seq).expect("the same message"));
    }
    let dt = t0.elapsed();
    black_box(sum);
    dt
}

// ---------------------------------------------------------------------------------------------
// Results

/// What one placement of one transport and size achieved (either part may be missing).
#[derive(Clone, Debug)]
pub struct Measured {
    /// Where the two sides ran.
    pub placement: Placement,
    /// Round-trip times.
    pub rtt: Option<Latency>,
    /// Streaming throughput, messages per second.
    pub msgs_per_s: Option<f64>,
    /// The line probes ([`Session::probe_line`]) before and after each session of this entry,
    /// in order (empty if it was not probed).
    pub line_ns: Vec<Option<f64>>,
    /// Each run's figures, when it was measured in runs (`shmpipe bench --runs`); then `rtt`
    /// and `msgs_per_s` are their medians ([`runs::record_run`]).
    pub runs: Vec<runs::Run>,
}

/// Everything measured for one transport (or reference) and size.
#[derive(Clone, Debug)]
pub struct Row {
    /// A transport's name, or `memcpy-2x` for the reference.
    pub name: &'static str,
    /// Message size in bytes.
    pub size: usize,
    /// One entry per placement measured.
    pub measured: Vec<Measured>,
}

impl Row {
    /// The round trip at its best placement (lowest median).
    pub fn best_rtt(&self) -> Option<(Placement, Latency)> {
        self.measured
            .iter()
            .filter_map(|m| Some((m.placement, m.rtt?)))
            .min_by_key(|(_, l)| l.median_ns)
    }

    /// The stream at its best placement (most messages per second).
    pub fn best_stream(&self) -> Option<(Placement, f64)> {
        self.measured
            .iter()
            .filter_map(|m| Some((m.placement, m.msgs_per_s?)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// The probes around the whole row (its sessions ran one after another): the first
    /// session's before, the last one's after, and what all of them together show. `None` if
    /// nothing was probed.
    pub fn line(&self) -> Option<(Option<f64>, Option<f64>, Cache)> {
        line_summary(self.measured.iter().flat_map(|m| m.line_ns.iter().copied()))
    }
}

/// Adds a result to `rows`, into the row of `name` and `size` and the entry of `placement`;
/// returns that entry.
pub fn record<'a>(
    rows: &'a mut Vec<Row>,
    name: &'static str,
    size: usize,
    placement: Placement,
    rtt: Option<Latency>,
    msgs_per_s: Option<f64>,
) -> &'a mut Measured {
    let i = match rows.iter().position(|r| r.name == name && r.size == size) {
        Some(i) => i,
        None => {
            rows.push(Row {
                name,
                size,
                measured: Vec::new(),
            });
            rows.len() - 1
        }
    };
    let measured = &mut rows[i].measured;
    let m = match measured.iter().position(|m| m.placement == placement) {
        Some(j) => &mut measured[j],
        None => {
            measured.push(Measured {
                placement,
                rtt: None,
                msgs_per_s: None,
                line_ns: Vec::new(),
                runs: Vec::new(),
            });
            measured.last_mut().expect("just pushed")
        }
    };
    m.rtt = rtt.or(m.rtt);
    m.msgs_per_s = msgs_per_s.or(m.msgs_per_s);
    m
}

/// The first probe, the last and what all of them show; `None` if there are none.
pub fn line_summary(
    probes: impl Iterator<Item = Option<f64>> + Clone,
) -> Option<(Option<f64>, Option<f64>, Cache)> {
    let first = probes.clone().next()?;
    let last = probes.clone().last()?;
    Some((first, last, Cache::over(probes)))
}

/// Adds the line probes taken before and after a session to its entry in `rows`.
pub fn record_line(
    rows: &mut Vec<Row>,
    name: &'static str,
    size: usize,
    placement: Placement,
    before: Option<f64>,
    after: Option<f64>,
) {
    let m = record(rows, name, size, placement, None, None);
    m.line_ns.extend([before, after]);
}

/// "8 B", "64 B", "1 KiB", "64 KiB", "1.5 KiB".
pub fn fmt_size(bytes: usize) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// A time in ns, µs or ms.
pub fn fmt_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

/// A line probe's ns for the table, `?` if it failed.
fn line_ns(ns: Option<f64>) -> String {
    ns.map_or_else(|| "?".to_string(), |ns| format!("{ns:.0}"))
}

/// A rate with k, M or G (powers of 1000).
pub fn fmt_rate(r: f64, unit: &str) -> String {
    if r >= 1e9 {
        format!("{:.2} G{unit}", r / 1e9)
    } else if r >= 1e6 {
        format!("{:.2} M{unit}", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k{unit}", r / 1e3)
    } else {
        format!("{r:.0} {unit}")
    }
}

/// The results as a table, one block per size, with the ratios to the pipe (at its best
/// placement) when the pipe was measured, and the spread of the runs if there were several.
pub fn table(rows: &[Row]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let in_runs = rows
        .iter()
        .any(|r| r.measured.iter().any(|m| m.runs.len() > 1));
    let spread = |row: &Row| {
        if !in_runs {
            return String::new();
        }
        let x = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"));
        let (rtt, stream) = row.spreads();
        format!(" {:>11}", format!("{}/{}", x(rtt), x(stream)))
    };
    let _ = writeln!(
        out,
        "{:<8} {:<15} {:>10} {:>10} {:>10} {:>11} {:>11} {:>9} {:>9} {:>6} {:>9}{} cache",
        "size",
        "transport",
        "RTT med",
        "RTT p99",
        "RTT p99.9",
        "msgs/s",
        "bytes/s",
        "RTT/pipe",
        "msg/pipe",
        "where",
        "line ns",
        if in_runs {
            format!(" {:>11}", "spread")
        } else {
            String::new()
        },
    );
    let ratio = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |x| format!("{x:.1}x"));
    for size in sizes {
        let pipe = rows.iter().find(|r| r.size == size && r.name == "pipe");
        let pipe_rtt = pipe
            .and_then(Row::best_rtt)
            .map(|(_, l)| l.median_ns as f64);
        let pipe_rate = pipe.and_then(Row::best_stream).map(|(_, r)| r);
        let mut first = true;
        for row in rows.iter().filter(|r| r.size == size) {
            let rtt = row.best_rtt();
            let rate = row.best_stream();
            let t = |f: fn(&Latency) -> f64| rtt.map_or_else(|| "-".into(), |(_, l)| fmt_ns(f(&l)));
            let place = |p: Option<Placement>| match p {
                Some(Placement::Pinned) => "P",
                Some(Placement::Unpinned) => "U",
                None => "-",
            };
            let _ = writeln!(
                out,
                "{:<8} {:<15} {:>10} {:>10} {:>10} {:>11} {:>11} {:>9} {:>9} {:>6} {:>9}{} {}",
                if first { fmt_size(size) } else { String::new() },
                row.name,
                t(|l| l.median_ns as f64),
                t(|l| l.p99_ns as f64),
                t(|l| l.p999_ns as f64),
                rate.map_or_else(|| "-".into(), |(_, r)| fmt_rate(r, "")),
                rate.map_or_else(|| "-".into(), |(_, r)| fmt_rate(r * size as f64, "B/s")),
                ratio(
                    pipe_rtt
                        .zip(rtt)
                        .map(|(p, (_, l))| p / l.median_ns.max(1) as f64)
                ),
                ratio(pipe_rate.zip(rate).map(|(p, (_, r))| r / p)),
                format!("{}/{}", place(rtt.map(|x| x.0)), place(rate.map(|x| x.0))),
                row.line().map_or_else(
                    || "-".to_string(),
                    |(b, a, _)| format!("{}/{}", line_ns(b), line_ns(a))
                ),
                spread(row),
                row.line().map_or("-", |(_, _, c)| match c {
                    Cache::Changed => "changed*",
                    c => c.name(),
                }),
            );
            first = false;
        }
    }
    out.push_str(
        "RTT/pipe: the pipe's median round trip over this one's (higher is faster); msg/pipe: \
         messages/s over the pipe's.\nwhere (RTT/stream): P pinned to two CPUs, U unpinned \
         (the scheduler's choice); kernel transports show the better of the two.\n",
    );
    let _ = writeln!(
        out,
        "line ns: one-way time of a cache line between the two CPUs, probed before/after the \
         row's measurements;\ncache: shared below {SHARED_CACHE_NS:.0} ns, split above; \
         changed* the host moved the CPUs mid-row, so its figures mix two machines."
    );
    if in_runs {
        out.push_str(
            "Several runs: each figure is the median run; spread (RTT/stream): the slowest run \
             over the fastest within one\ncache placement (runs whose placement changed left \
             out; - with fewer than two runs in any placement).\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    // No `use super::*`: the criterion bench includes this file with `cfg(test)` set but its
    // `#[test]` functions dropped, where the import would be unused.

    #[test]
    fn the_histogram_is_exact_below_256_and_close_above() {
        for ns in [
            0u64,
            1,
            255,
            256,
            257,
            1000,
            123_456,
            10_000_000_000,
            u64::MAX / 2,
        ] {
            let v = super::Histogram::value(super::Histogram::index(ns));
            let err = (v as f64 - ns as f64).abs() / (ns.max(1) as f64);
            assert!(err <= 1.0 / 256.0, "{ns} -> {v}");
            if ns < 256 {
                assert_eq!(v, ns);
            }
        }
        let mut h = super::Histogram::new();
        for ns in 1..=1000u64 {
            h.record(super::Duration::from_nanos(ns));
        }
        let l = h.latency();
        assert_eq!(l.samples, 1000);
        assert!((498..=502).contains(&l.median_ns), "{l:?}");
        assert!((986..=994).contains(&l.p99_ns), "{l:?}");
        assert!(l.p999_ns <= 1000 && l.p999_ns >= 995, "{l:?}");
    }

    #[test]
    fn messages_check_and_catch_mistakes() {
        for len in [8usize, 9, 64, 1000] {
            let mut m = vec![0u8; len];
            super::fill(&mut m, 42);
            assert!(super::check(&m, len, 42).is_ok());
            assert!(super::check(&m, len, 43).is_err());
            assert!(super::check(&m[..len - 1], len, 42).is_err());
        }
    }

    #[test]
    fn probes_classify_by_the_threshold_and_flag_a_change() {
        use super::Cache;
        let t = super::SHARED_CACHE_NS;
        assert_eq!(Cache::over([Some(60.0), Some(90.0)]), Cache::Shared);
        assert_eq!(Cache::over([Some(t - 1.0), Some(1.0)]), Cache::Shared);
        assert_eq!(Cache::over([Some(t), Some(480.0)]), Cache::Split);
        assert_eq!(Cache::over([Some(80.0), Some(400.0)]), Cache::Changed);
        assert_eq!(Cache::over([Some(400.0), Some(80.0)]), Cache::Changed);
        // A disagreement is a change even if another probe failed; a failure alone is unknown.
        assert_eq!(Cache::over([Some(80.0), None, Some(400.0)]), Cache::Changed);
        assert_eq!(Cache::over([Some(80.0), None]), Cache::Unknown);
        assert_eq!(Cache::over([]), Cache::Unknown);
        assert_eq!(Cache::Changed.name(), "changed");
    }

    #[test]
    fn a_probe_is_answered_through_a_second_mapping_and_gives_up_without_one() {
        let (line, fd) = super::Line::create().unwrap();
        let t0 = super::Instant::now();
        assert_eq!(line.probe(0), None, "nobody answers");
        assert!(t0.elapsed() < super::Duration::from_secs(10));
        // The same page mapped again, answered from another thread, each side on its CPU of
        // the pair as in a session (only the value is checked, not the speed).
        // With one CPU the engine never probes (each move would wait for a context switch).
        let Some((mine, cpu)) = super::cpu_pair() else {
            return;
        };
        let first = 1000;
        let peer = std::thread::spawn(move || {
            let theirs = super::Line::map(&fd).unwrap();
            super::pinned_for(cpu, || theirs.answer(first, super::PROBE_COUNT)).unwrap();
        });
        let ns = super::pinned_for(mine, || line.probe(first)).unwrap();
        peer.join().unwrap();
        let ns = ns.expect("answered");
        assert!(ns > 0.0 && ns < 1e8, "{ns}");
    }

    #[test]
    fn peer_specs_round_trip() {
        let spec = super::PeerSpec {
            transport: super::Transport::UnixSeqpacket,
            size: 65536,
            cpu: Some(1),
            parent: 77,
            a: 5,
            b: -1,
            line: 7,
            line_cpu: None,
        };
        let back = super::PeerSpec::decode(&spec.encode()).unwrap();
        assert_eq!(back.transport, super::Transport::UnixSeqpacket);
        assert_eq!(
            (back.size, back.cpu, back.parent, back.a, back.b),
            (65536, Some(1), 77, 5, -1)
        );
        assert_eq!((back.line, back.line_cpu), (7, None));
        assert!(super::PeerSpec::decode("transport=nope size=1").is_err());
        // `reference`: the memfd's descriptor and the ring's bytes.
        let spec = super::PeerSpec {
            transport: super::Transport::Reference,
            a: 9,
            b: 4 << 20,
            ..spec
        };
        let back = super::PeerSpec::decode(&spec.encode()).unwrap();
        assert_eq!(back.transport, super::Transport::Reference);
        assert_eq!((back.a, back.b), (9, 4 << 20));
    }
}
