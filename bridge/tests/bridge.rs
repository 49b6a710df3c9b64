//! Two bridges as separate processes (`shmpipe-bridge out` and `in`) over loopback TCP with
//! explicit endpoints and multicast scouting off; this test process is the producer of the
//! source ring and the consumer of the destination ring.
//!
//! `SHMPIPE_BRIDGE_MESSAGES` sets the count of the byte-exact streams: a million per start
//! order by default (about 15 s each on a busy 2-core machine); fewer for a quick run.
//!
//! A vanished machine is played by a bridge process stopped with `SIGSTOP`: its sockets stay
//! open and say nothing, so only zenoh's lease notices. Those tests give both bridges a zenoh
//! configuration file with a short lease, `SHMPIPE_BRIDGE_LEASE_MS` (2000 by default; 0 for no
//! file, i.e. zenoh's default of 10 s). The router tests run both bridges as zenoh clients of a
//! router that is this test binary re-run in a role.

mod common;

use std::ffi::OsStr;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    ChildProcess, RemoveFile, RemoveOnDrop, check_msg, fill_msg, msg_len, signal_process,
    unique_key,
};
use shmpipe::{Error, Key, RecvError, Ring, RingConfig, SendError};
use shmpipe_bridge::ZenohOptions;
use zenoh::Wait;

const BIN: &str = env!("CARGO_BIN_EXE_shmpipe-bridge");

/// A generous bound for anything that should take milliseconds, on a busy 2-core machine.
const SLOW: Duration = Duration::from_secs(60);
/// How soon the far side must report a killed bridge or router (measured: tens of
/// milliseconds).
const DEATH_BOUND: Duration = Duration::from_secs(10);

/// A zenoh key expression and a free loopback port for one test.
struct Link {
    key: String,
    port: u16,
}

fn link() -> Link {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    Link {
        key: format!(
            "shmpipe-test/{}/{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ),
        port,
    }
}

/// Starts `shmpipe-bridge <dir>` on ring `ring`; the side that starts first listens.
fn bridge(dir: &str, ring: Key, link: &Link, listen: bool) -> ChildProcess {
    bridge_at(dir, ["--key", &ring.to_string()], link, listen)
}

/// [`bridge`] with the ring given by `ring_args` (`--key K` or `--path P`).
fn bridge_at(dir: &str, ring_args: [&str; 2], link: &Link, listen: bool) -> ChildProcess {
    let endpoint = format!("tcp/127.0.0.1:{}", link.port);
    let zenoh = [if listen { "--listen" } else { "--connect" }, &endpoint];
    bridge_with(dir, ring_args, &link.key, &zenoh)
}

/// Starts `shmpipe-bridge <dir>` on the ring given by `ring_args`, for the zenoh key
/// expression `key`, with multicast scouting off and the zenoh options `zenoh`.
fn bridge_with<S: AsRef<OsStr>>(
    dir: &str,
    ring_args: [&str; 2],
    key: &str,
    zenoh: &[S],
) -> ChildProcess {
    let mut cmd = Command::new(BIN);
    let key_flag = if dir == "out" { "--to" } else { "--from" };
    cmd.arg(dir)
        .args(ring_args)
        .args([key_flag, key])
        .args(["--no-multicast-scouting"])
        .args(zenoh);
    ChildProcess::start(cmd, &format!("bridge-{dir}"), format!("bridge {dir}"))
}

/// The shape of the source rings of the streams: 1 MiB of 64-byte slots, messages up to
/// 2 KiB (so a million random sizes stay under a gigabyte).
fn source_shape() -> RingConfig {
    RingConfig::new()
        .slot_size(64)
        .slot_count(16384)
        .max_message(2048)
}

/// Creates the source ring at `key` (before the `out` bridge, which would otherwise create
/// one of the default shape).
fn source(key: Key, cfg: &RingConfig) -> Ring {
    Ring::create(key, cfg).expect("source ring")
}

/// Sends `n` messages (for ever if `None`) of the stress format into `ring`, then closes it.
/// Returns how many were sent, the error that stopped it early, and when.
fn produce(
    ring: Ring,
    seed: u64,
    n: Option<u64>,
    sent: Arc<AtomicU64>,
) -> JoinHandle<(u64, Result<(), SendError>, Instant)> {
    std::thread::spawn(move || {
        let max = ring.max_message();
        let mut tx = ring.producer().expect("producer");
        let mut buf = vec![0u8; max];
        let mut seq = 0;
        while n.is_none_or(|n| seq < n) {
            let len = msg_len(seed, seq, max);
            fill_msg(seed, seq, &mut buf[..len]);
            if let Err(e) = tx.send(&buf[..len]) {
                return (seq, Err(e), Instant::now());
            }
            seq += 1;
            sent.store(seq, Ordering::Relaxed);
        }
        tx.close().expect("clean close");
        (seq, Ok(()), Instant::now())
    })
}

/// Waits for the bridge to create the ring at `key`, then receives and checks every message
/// until the stream ends; `delay` after each one makes a slow consumer. Returns the count, why
/// it stopped, and when.
fn consume(
    key: Key,
    seed: u64,
    max: usize,
    delay: Duration,
    got: Arc<AtomicU64>,
) -> JoinHandle<(u64, RecvError, Instant)> {
    std::thread::spawn(move || {
        let ring = open_when_there(key);
        let mut rx = ring.consumer().expect("consumer");
        let (mut msg, mut scratch) = (Vec::new(), Vec::new());
        let mut seq = 0;
        loop {
            match rx.recv_vec(&mut msg) {
                Ok(_) => {
                    if let Err(what) = check_msg(seed, seq, max, &msg, &mut scratch) {
                        panic!("not the stream sent: {what}");
                    }
                    seq += 1;
                    got.store(seq, Ordering::Relaxed);
                    if !delay.is_zero() {
                        std::thread::sleep(delay);
                    }
                }
                Err(e) => return (seq, e, Instant::now()),
            }
        }
    })
}

/// Opens the ring at `key` once someone (the `in` bridge) has created it.
fn open_when_there(key: Key) -> Ring {
    let deadline = Instant::now() + SLOW;
    loop {
        match Ring::open(key, &RingConfig::new()) {
            Ok(r) => return r,
            Err(Error::NotFound { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("opening {key}: {e}"),
        }
    }
}

fn count() -> u64 {
    std::env::var("SHMPIPE_BRIDGE_MESSAGES")
        .ok()
        .map_or(1_000_000, |v| {
            v.parse().expect("SHMPIPE_BRIDGE_MESSAGES: a number")
        })
}

/// Streams `count()` random-size messages (0 bytes to the ring's maximum) and checks every
/// byte, the end of stream, and both bridges' clean exit.
fn byte_exact(out_first: bool) {
    let (src, dst) = (unique_key(), unique_key());
    let _guards = (RemoveOnDrop::key(src), RemoveOnDrop::key(dst));
    let link = link();
    let seed = 0x5eed_0000 + u64::from(out_first);
    let n = count();
    let ring = source(src, &source_shape());
    let (mut first, mut second) = if out_first {
        let out = bridge("out", src, &link, true);
        std::thread::sleep(Duration::from_millis(300));
        (out, bridge("in", dst, &link, false))
    } else {
        let inb = bridge("in", dst, &link, true);
        std::thread::sleep(Duration::from_millis(300));
        (inb, bridge("out", src, &link, false))
    };
    let start = Instant::now();
    let p = produce(ring, seed, Some(n), Arc::default());
    let c = consume(dst, seed, 2048, Duration::ZERO, Arc::default());
    let (sent, sres, _) = p.join().expect("producer");
    sres.expect("the producer sent everything");
    let (got, end, _) = c.join().expect("consumer");
    assert_eq!(end, RecvError::Disconnected, "{got} of {sent} received");
    assert_eq!(got, n);
    for b in [&mut first, &mut second] {
        let st = b.wait_status(SLOW);
        assert!(st.success(), "a bridge failed: {}", b.output());
    }
    eprintln!(
        "{n} messages byte-exact in {:?} ({} first)",
        start.elapsed(),
        if out_first { "out" } else { "in" }
    );
}

#[test]
fn random_sizes_byte_exact_out_first() {
    byte_exact(true);
}

#[test]
fn random_sizes_byte_exact_in_first() {
    byte_exact(false);
}

/// Empty messages, one byte, and the largest message the default ring allows cross intact,
/// the end of stream follows the last one, and the ring the `in` bridge creates has the
/// source's shape.
#[test]
fn boundaries_and_end_of_stream() {
    let (src, dst) = (unique_key(), unique_key());
    let _guards = (RemoveOnDrop::key(src), RemoveOnDrop::key(dst));
    let link = link();
    let ring = source(src, &RingConfig::new());
    let mut inb = bridge("in", dst, &link, true);
    let mut out = bridge("out", src, &link, false);
    let max = ring.max_message();
    let msgs: Vec<Vec<u8>> = [0, 1, max, 0, max - 1, 0, 7]
        .iter()
        .enumerate()
        .map(|(i, &len)| (0..len).map(|j| (i * 31 + j * 7) as u8).collect())
        .collect();
    let mut tx = ring.producer().expect("producer");
    for m in &msgs {
        tx.send(m).expect("send");
    }
    tx.close().expect("close");
    let peer = open_when_there(dst);
    assert_eq!(
        (peer.slot_size(), peer.slot_count(), peer.max_message()),
        (ring.slot_size(), ring.slot_count(), max),
        "the in bridge creates the ring with the source's shape"
    );
    let mut rx = peer.consumer().expect("consumer");
    let mut got = Vec::new();
    for m in &msgs {
        rx.recv_vec_timeout(&mut got, SLOW).expect("a message");
        assert_eq!(&got, m);
    }
    assert_eq!(
        rx.recv_vec_timeout(&mut got, SLOW),
        Err(RecvError::Disconnected)
    );
    for b in [&mut out, &mut inb] {
        assert!(b.wait_status(SLOW).success(), "{}", b.output());
    }
    assert!(inb.output().contains("end of stream after 7 messages"));
}

/// Rings in files (`--path`) at both ends: the `in` bridge creates the file ring.
#[test]
fn ring_files_at_both_ends() {
    let (src, dst) = (common::temp_path("src.ring"), common::temp_path("dst.ring"));
    let _files = (RemoveFile(src.clone()), RemoveFile(dst.clone()));
    let link = link();
    let ring = Ring::create(src.as_path(), &RingConfig::new()).expect("source");
    let mut out = bridge_at("out", ["--path", src.to_str().unwrap()], &link, true);
    let mut inb = bridge_at("in", ["--path", dst.to_str().unwrap()], &link, false);
    let mut tx = ring.producer().expect("producer");
    for i in 0..1000u32 {
        tx.send(&i.to_le_bytes()).expect("send");
    }
    tx.close().expect("close");
    let deadline = Instant::now() + SLOW;
    let peer = loop {
        match Ring::open(dst.as_path(), &RingConfig::new()) {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("{e}"),
        }
    };
    let mut rx = peer.consumer().expect("consumer");
    let mut buf = [0u8; 4];
    for i in 0..1000u32 {
        assert_eq!(rx.recv_timeout(&mut buf, SLOW), Ok(4));
        assert_eq!(u32::from_le_bytes(buf), i);
    }
    assert_eq!(
        rx.recv_timeout(&mut buf, SLOW),
        Err(RecvError::Disconnected)
    );
    for b in [&mut out, &mut inb] {
        assert!(b.wait_status(SLOW).success(), "{}", b.output());
    }
}

/// A typed ring's type crosses: a destination ring of another type is refused by the `in`
/// bridge (both bridges fail, nothing is delivered), one of the same type gets the values.
#[test]
fn typed_rings_carry_their_type_check() {
    for same in [false, true] {
        let (src, dst) = (unique_key(), unique_key());
        let _guards = (RemoveOnDrop::key(src), RemoveOnDrop::key(dst));
        let link = link();
        let dst_cfg = if same {
            RingConfig::new().message_type::<[u32; 2]>()
        } else {
            RingConfig::new().message_type::<u64>() // same size and alignment, another type
        };
        let peer = Ring::create(dst, &dst_cfg).expect("destination");
        let mut rx = peer.typed::<[u32; 2]>().consumer();
        let ring = source(src, &RingConfig::new().message_type::<[u32; 2]>());
        let mut inb = bridge("in", dst, &link, true);
        let mut out = bridge("out", src, &link, false);
        let mut tx = ring.typed::<[u32; 2]>().producer().expect("producer");
        tx.send([1, 2]).expect("send");
        tx.send([3, 4]).expect("send");
        drop(tx);
        let (ist, ost) = (inb.wait_status(SLOW), out.wait_status(SLOW));
        if same {
            let rx = rx.as_mut().expect("same type");
            assert_eq!(rx.recv_timeout(SLOW), Ok([1, 2]));
            assert_eq!(rx.recv_timeout(SLOW), Ok([3, 4]));
            assert!(ist.success() && ost.success(), "{}", inb.output());
        } else {
            assert!(
                rx.is_err(),
                "our own claim with the wrong type is refused too"
            );
            assert!(!ist.success(), "the in bridge refuses: {}", inb.output());
            assert!(inb.output().contains("stream refused"), "{}", inb.output());
            assert!(inb.output().contains("fingerprint"), "{}", inb.output());
            assert!(
                !ost.success(),
                "the out bridge sees it go: {}",
                out.output()
            );
        }
    }
}

/// Which process of a stream a test takes away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Victim {
    Out,
    In,
    Router,
}

/// How it goes: killed (its sockets close), or stopped (`SIGSTOP`: a machine that vanished,
/// whose sockets stay open and silent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Kill,
    Stop,
}

/// The processes of a stream: the two bridges and, for the router tests, the router.
struct Bridges {
    out: ChildProcess,
    inb: ChildProcess,
    router: Option<ChildProcess>,
}

/// Streams from a fresh source ring through the bridges `start(src, dst)` starts, then takes
/// `victim` away by `fault` mid-stream. Every bridge left must exit with the remote death,
/// and the ring users at the far end from the victim must get their error, within `bound`;
/// the consumer must have received an exact prefix of the stream (checked message by
/// message) before its `PeerDied`. Returns how long the far ring user took.
fn fault_mid_stream(
    victim: Victim,
    fault: Fault,
    bound: Duration,
    start: impl FnOnce(Key, Key) -> Bridges,
) -> Duration {
    let (src, dst) = (unique_key(), unique_key());
    let _guards = (RemoveOnDrop::key(src), RemoveOnDrop::key(dst));
    let ring = source(src, &source_shape());
    let mut b = start(src, dst);
    let seed = 0xdead + victim as u64 * 2 + fault as u64;
    let got = Arc::new(AtomicU64::new(0));
    let p = produce(ring, seed, None, Arc::default());
    let c = consume(dst, seed, 2048, Duration::ZERO, got.clone());
    let deadline = Instant::now() + SLOW;
    while got.load(Ordering::Relaxed) < 20_000 {
        assert!(Instant::now() < deadline, "the stream does not flow");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (gone, left): (&mut ChildProcess, Vec<&mut ChildProcess>) = match victim {
        Victim::Out => (&mut b.out, vec![&mut b.inb]),
        Victim::In => (&mut b.inb, vec![&mut b.out]),
        Victim::Router => (
            b.router.as_mut().expect("a router"),
            vec![&mut b.out, &mut b.inb],
        ),
    };
    let at = match fault {
        Fault::Kill => gone.kill_and_reap(),
        Fault::Stop => {
            let at = Instant::now();
            signal_process(gone.pid(), libc::SIGSTOP);
            at
        }
    };
    // The bridges left fail (exit 1) with the remote death, within the bound: waiting longer
    // fails the test, so broken detection is a failure, not a hang.
    let mut exited = Vec::new();
    for other in left {
        let st = other.wait_status(bound.saturating_sub(at.elapsed()));
        exited.push(at.elapsed());
        assert!(!st.success(), "{}", other.output());
        assert!(other.output().contains("died"), "{}", other.output());
    }
    // The far ring user had its error by now. A stopped bridge still holds its ring role,
    // so the user on its own side waits until it is killed: the clean-up, not the test.
    let (n, why, when, sres, swhen);
    if victim == Victim::In {
        (_, sres, swhen) = p.join().expect("producer");
        if fault == Fault::Stop {
            gone.kill_and_reap();
        }
        (n, why, when) = c.join().expect("consumer");
    } else {
        (n, why, when) = c.join().expect("consumer");
        if fault == Fault::Stop {
            gone.kill_and_reap();
        }
        (_, sres, swhen) = p.join().expect("producer");
    }
    // The consumer got an exact prefix, then the in bridge's death; the producer failed: the
    // out bridge dropped its consumer (`Disconnected`) or died.
    assert!(matches!(why, RecvError::PeerDied { .. }), "{why:?}");
    assert!(
        matches!(
            sres,
            Err(SendError::PeerDied { .. } | SendError::Disconnected)
        ),
        "{sres:?}"
    );
    let far = if victim == Victim::In {
        swhen.duration_since(at)
    } else {
        when.duration_since(at)
    };
    eprintln!(
        "{fault:?} the {victim:?} process after {n} messages: the bridges left exited \
         {exited:?} later, the far ring user (the {}) saw it {far:?} later",
        if victim == Victim::In {
            "producer"
        } else {
            "consumer"
        },
    );
    assert!(far < bound, "{far:?}");
    far
}

/// Two bridges connected directly, `in` listening; `config` adds a zenoh configuration file.
fn direct(link: &Link, config: Option<&Path>) -> impl FnOnce(Key, Key) -> Bridges {
    let listen = format!("tcp/127.0.0.1:{}", link.port);
    let connect = listen.clone();
    let key = link.key.clone();
    let config = config.map(|p| p.to_str().expect("a UTF-8 path").to_string());
    move |src, dst| {
        let with_config = |mut args: Vec<String>| {
            if let Some(c) = &config {
                args.extend(["--config".into(), c.clone()]);
            }
            args
        };
        let inb = with_config(vec!["--listen".into(), listen]);
        let out = with_config(vec!["--connect".into(), connect]);
        Bridges {
            inb: bridge_with("in", ["--key", &dst.to_string()], &key, &inb),
            out: bridge_with("out", ["--key", &src.to_string()], &key, &out),
            router: None,
        }
    }
}

#[test]
fn killing_the_out_bridge_ends_the_far_consumer_with_an_error() {
    fault_mid_stream(Victim::Out, Fault::Kill, DEATH_BOUND, direct(&link(), None));
}

#[test]
fn killing_the_in_bridge_ends_the_near_producer_with_an_error() {
    fault_mid_stream(Victim::In, Fault::Kill, DEATH_BOUND, direct(&link(), None));
}

/// zenoh's lease for the vanished-machine tests, in ms (`None`: zenoh's default, 10 s).
fn lease_ms() -> Option<u64> {
    let ms = std::env::var("SHMPIPE_BRIDGE_LEASE_MS")
        .ok()
        .map_or(2000, |v| {
            v.parse().expect("SHMPIPE_BRIDGE_LEASE_MS: a number")
        });
    (ms > 0).then_some(ms)
}

/// Stops (`SIGSTOP`) one bridge mid-stream, as a machine that vanished without closing its
/// sockets: the far side fails within the lease and a few seconds.
fn vanish_mid_stream(victim: Victim) {
    let lease = lease_ms();
    let config = lease.map(|ms| {
        let file = RemoveFile(common::temp_path("zenoh.json5"));
        // zenoh's own configuration format: the key `transport/link/tx/lease`.
        let text = format!("{{ transport: {{ link: {{ tx: {{ lease: {ms} }} }} }} }}\n");
        std::fs::write(&file.0, text).expect("write the zenoh configuration");
        file
    });
    let lease = Duration::from_millis(lease.unwrap_or(10_000));
    let bound = lease + Duration::from_secs(8);
    let link = link();
    let far = fault_mid_stream(
        victim,
        Fault::Stop,
        bound,
        direct(&link, config.as_ref().map(|f| f.0.as_path())),
    );
    eprintln!("lease {lease:?}: the far side knew {far:?} after the stop");
}

#[test]
fn a_vanished_out_machine_ends_the_far_consumer_with_an_error() {
    vanish_mid_stream(Victim::Out);
}

#[test]
fn a_vanished_in_machine_ends_the_near_producer_with_an_error() {
    vanish_mid_stream(Victim::In);
}

/// The environment variable that gives the router child its port.
const ROUTER_PORT: &str = "SHMPIPE_BRIDGE_ROUTER_PORT";

/// In a child started by [`router`], runs the zenoh router and never returns; in the test
/// itself, does nothing.
fn serve_router_if_child() {
    if common::child_role().as_deref() != Some("router") {
        return;
    }
    let port: u16 = common::param(ROUTER_PORT);
    let opts = ZenohOptions {
        listen: vec![format!("tcp/127.0.0.1:{port}")],
        mode: Some("router".into()),
        no_multicast_scouting: true,
        ..Default::default()
    };
    let _session = zenoh::open(opts.to_config().expect("router configuration"))
        .wait()
        .expect("router session");
    eprintln!("router listening on {port}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Starts a zenoh router on the link's port (this binary re-run as test `test` in the role
/// `router`) and waits until it accepts connections.
fn router(test: &str, link: &Link) -> ChildProcess {
    let mut r = ChildProcess::spawn(test, "router", &[(ROUTER_PORT, link.port.to_string())]);
    let deadline = Instant::now() + SLOW;
    while TcpStream::connect(("127.0.0.1", link.port)).is_err() {
        r.assert_running();
        assert!(Instant::now() < deadline, "the router does not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    r
}

/// Both bridges as zenoh clients of a router on the link's port, the router first.
fn through_router(test: &'static str, link: &Link) -> impl FnOnce(Key, Key) -> Bridges {
    let r = router(test, link);
    let endpoint = format!("tcp/127.0.0.1:{}", link.port);
    let key = link.key.clone();
    move |src, dst| {
        let zenoh = ["--mode", "client", "--connect", &endpoint];
        Bridges {
            inb: bridge_with("in", ["--key", &dst.to_string()], &key, &zenoh),
            out: bridge_with("out", ["--key", &src.to_string()], &key, &zenoh),
            router: Some(r),
        }
    }
}

/// 100 000 random-size messages through a router arrive byte-exact, with the end of stream.
#[test]
fn a_stream_through_a_router_arrives_byte_exact() {
    serve_router_if_child();
    let (src, dst) = (unique_key(), unique_key());
    let _guards = (RemoveOnDrop::key(src), RemoveOnDrop::key(dst));
    let link = link();
    let ring = source(src, &source_shape());
    let mut b = through_router("a_stream_through_a_router_arrives_byte_exact", &link)(src, dst);
    let (n, seed) = (100_000, 0x5eed_0100);
    let p = produce(ring, seed, Some(n), Arc::default());
    let c = consume(dst, seed, 2048, Duration::ZERO, Arc::default());
    p.join()
        .expect("producer")
        .1
        .expect("the producer sent everything");
    let (got, end, _) = c.join().expect("consumer");
    assert_eq!((got, end), (n, RecvError::Disconnected));
    for b in [&mut b.out, &mut b.inb] {
        assert!(b.wait_status(SLOW).success(), "{}", b.output());
    }
    b.router.as_mut().expect("router").assert_running();
}

/// A router killed mid-stream: both bridges and the ring users at both ends fail within
/// [`DEATH_BOUND`], after an exact prefix.
#[test]
fn killing_the_router_ends_the_stream_with_an_error() {
    serve_router_if_child();
    let link = link();
    let start = through_router("killing_the_router_ends_the_stream_with_an_error", &link);
    fault_mid_stream(Victim::Router, Fault::Kill, DEATH_BOUND, start);
}

/// Peak resident memory of a process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A consumer far slower than the producer: the producer is held back to what the rings and
/// the bridges' bounded queues hold, and the bridges' memory stays bounded.
#[test]
fn a_slow_far_consumer_slows_the_near_producer() {
    let (src, dst) = (unique_key(), unique_key());
    let _guards = (RemoveOnDrop::key(src), RemoveOnDrop::key(dst));
    let link = link();
    // Messages up to 64 KiB (40 KiB on average) through 256 KiB rings: 3000 are 120 MiB.
    let shape = RingConfig::new().slot_size(1024).slot_count(256);
    let (n, max) = (3000u64, 65536usize);
    let ring = source(src, &shape.max_message(max));
    let mut inb = bridge("in", dst, &link, true);
    let mut out = bridge("out", src, &link, false);
    let (sent, got) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let p = produce(ring, 7, Some(n), sent.clone());
    let c = consume(dst, 7, max, Duration::from_millis(1), got.clone());
    let (mut ahead, mut peak) = (0u64, [0u64; 2]);
    while !p.is_finished() || !c.is_finished() {
        ahead = ahead.max(sent.load(Ordering::Relaxed) - got.load(Ordering::Relaxed).min(n));
        for (i, b) in [&inb, &out].iter().enumerate() {
            if let Some(kib) = peak_rss_kib(b.pid()) {
                peak[i] = peak[i].max(kib);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, end, _) = c.join().expect("consumer");
    assert_eq!(end, RecvError::Disconnected);
    p.join().expect("producer").1.expect("sent");
    for b in [&mut inb, &mut out] {
        assert!(b.wait_status(SLOW).success(), "{}", b.output());
    }
    eprintln!(
        "slow consumer: the producer was at most {ahead} messages ahead; peak RSS: \
         in bridge {} MiB, out bridge {} MiB",
        peak[0] / 1024,
        peak[1] / 1024
    );
    // Unbounded buffering would let the producer finish (3000 ahead) while the consumer has
    // taken a few hundred, and hold over 100 MiB in a bridge.
    assert!(ahead < 1000, "the producer ran {ahead} messages ahead");
    for (i, kib) in peak.iter().enumerate() {
        assert!(*kib < 120 * 1024, "bridge {i} peaked at {kib} KiB");
    }
}
