//! Bridging over zenoh, measured (docs/BENCHMARKS.md, "Bridging over zenoh"): messages/s and
//! round trip through ring -> bridge -> zenoh -> bridge -> ring on loopback, beside zenoh's own
//! publisher/subscriber between two processes and a TCP socket, for 8 B, 64 B, 1 KiB and
//! 64 KiB messages.
//!
//! `cargo bench -p shmpipe-bridge --bench bridge`. The bridges are `shmpipe-bridge` processes
//! (release build); zenoh and TCP peers are this binary re-run in a role.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shmpipe::{Error, Key, Ring, RingConfig};
use shmpipe_bridge::ZenohOptions;
use zenoh::Wait;
use zenoh::qos::CongestionControl;

const BIN: &str = env!("CARGO_BIN_EXE_shmpipe-bridge");
const ROLE: &str = "SHMPIPE_BRIDGE_BENCH_ROLE";
const SIZES: [usize; 4] = [8, 64, 1024, 65536];
/// Round trips timed per size (after as many warm-up ones as a tenth of this).
const ROUND_TRIPS: u32 = 2000;

/// A child process killed on drop.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes a ring's segment on drop.
struct Remove(Key);

impl Drop for Remove {
    fn drop(&mut self) {
        if let Ok(s) = shmpipe::Segment::open(self.0) {
            let _ = s.remove();
        }
    }
}

fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn key(n: u32) -> Key {
    Key::Number((0x5b00_0000 | ((std::process::id() & 0xffff) << 8) | n) as i32)
}

fn bridge(dir: &str, ring: Key, zkey: &str, port: u16, listen: bool) -> Peer {
    let flag = if dir == "out" { "--to" } else { "--from" };
    let ep = format!("tcp/127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args([
            dir,
            "--key",
            &ring.to_string(),
            flag,
            zkey,
            "--no-multicast-scouting",
        ])
        .args([if listen { "--listen" } else { "--connect" }, &ep])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a bridge");
    Peer(child)
}

fn me(role: &str, port: u16, size: usize, n: u64) -> Peer {
    let child = Command::new(std::env::current_exe().expect("this binary"))
        .env(ROLE, format!("{role} {port} {size} {n}"))
        .stdin(Stdio::null())
        .spawn()
        .expect("start a peer");
    Peer(child)
}

fn shape() -> RingConfig {
    RingConfig::new().slot_size(64).slot_count(16384)
}

fn open_when_there(key: Key) -> Ring {
    loop {
        match Ring::open(key, &RingConfig::new()) {
            Ok(r) => return r,
            Err(Error::NotFound { .. }) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("{e}"),
        }
    }
}

fn count(size: usize) -> u64 {
    (256 << 20) as u64 / size.max(1024) as u64
}

/// Runs `once` (one round trip) a tenth of [`ROUND_TRIPS`] times to warm up, then
/// [`ROUND_TRIPS`] times timed: the mean round trip, in µs.
fn round_trip_us(mut once: impl FnMut()) -> f64 {
    for _ in 0..ROUND_TRIPS / 10 {
        once();
    }
    let t = Instant::now();
    for _ in 0..ROUND_TRIPS {
        once();
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(ROUND_TRIPS)
}

/// Messages/s from a ring through two bridges into a ring.
fn bridge_rate(size: usize, base: u32) -> f64 {
    let (a, b) = (key(base), key(base + 1));
    let _r = (Remove(a), Remove(b));
    let p = port();
    // Before the out bridge, which would make one of the default shape.
    let ring = Ring::create(a, &shape()).expect("source");
    let _o = bridge("out", a, "bench/rate", p, true);
    let _i = bridge("in", b, "bench/rate", p, false);
    let n = count(size);
    let producer = std::thread::spawn(move || {
        let mut tx = ring.producer().expect("producer");
        let msg = vec![7u8; size];
        for _ in 0..=n {
            tx.send(&msg).expect("send");
        }
    });
    let mut rx = open_when_there(b).consumer().expect("consumer");
    let mut buf = vec![0u8; size];
    rx.recv(&mut buf).expect("first");
    let t = Instant::now();
    for _ in 0..n {
        rx.recv(&mut buf).expect("recv");
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    producer.join().expect("producer");
    rate
}

/// Round trip ring -> bridges -> ring -> echo -> ring -> bridges -> ring, in µs.
fn bridge_rtt(size: usize, base: u32) -> f64 {
    let k: [Key; 4] = std::array::from_fn(|i| key(base + i as u32));
    let _r: Vec<Remove> = k.iter().map(|&k| Remove(k)).collect();
    let (p1, p2) = (port(), port());
    let ping = Ring::create(k[0], &shape()).expect("ping");
    let pong = Ring::create(k[2], &shape()).expect("pong");
    let _b = [
        bridge("out", k[0], "bench/ping", p1, true),
        bridge("in", k[1], "bench/ping", p1, false),
        bridge("out", k[2], "bench/pong", p2, true),
        bridge("in", k[3], "bench/pong", p2, false),
    ];
    let mut tx = ping.producer().expect("producer");
    let echo = std::thread::spawn(move || {
        let mut rx = open_when_there(k[1]).consumer().expect("consumer");
        let mut tx = pong.producer().expect("producer");
        let mut m = Vec::new();
        while rx.recv_vec(&mut m).is_ok() {
            tx.send(&m).expect("echo");
        }
    });
    let mut rx = open_when_there(k[3]).consumer().expect("consumer");
    let (msg, mut buf) = (vec![1u8; size], vec![0u8; size]);
    let rtt = round_trip_us(|| {
        tx.send(&msg).expect("ping");
        rx.recv(&mut buf).expect("pong");
    });
    drop(tx);
    echo.join().expect("echo");
    rtt
}

fn session(port: u16, listen: bool) -> zenoh::Session {
    let ep = vec![format!("tcp/127.0.0.1:{port}")];
    let opts = ZenohOptions {
        listen: if listen { ep.clone() } else { vec![] },
        connect: if listen { vec![] } else { ep },
        no_multicast_scouting: true,
        ..Default::default()
    };
    zenoh::open(opts.to_config().expect("config"))
        .wait()
        .expect("session")
}

/// A publisher on `key` that blocks when zenoh's queues are full, as the bridges' do.
fn blocking_publisher(s: &zenoh::Session, key: &'static str) -> zenoh::pubsub::Publisher<'static> {
    s.declare_publisher(key)
        .congestion_control(CongestionControl::Block)
        .wait()
        .expect("publisher")
}

/// zenoh alone: messages/s one way, and the round trip through an echoing process, in µs.
fn zenoh_pair(size: usize) -> (f64, f64) {
    let p = port();
    let s = session(p, true);
    let (tx, rx) = mpsc::channel();
    let _sub = s
        .declare_subscriber("bench/back")
        .callback(move |_| {
            let _ = tx.send(());
        })
        .wait()
        .expect("subscriber");
    let publ = blocking_publisher(&s, "bench/there");
    let msg = vec![3u8; size];
    // Rate: the sink answers once it has counted them all (and once at the start: ready).
    let n = count(size);
    let _sink = me("zenoh-sink", p, size, n);
    rx.recv().expect("sink ready");
    let t = Instant::now();
    for _ in 0..n {
        publ.put(msg.clone()).wait().expect("put");
    }
    rx.recv().expect("sink done");
    let rate = n as f64 / t.elapsed().as_secs_f64();
    drop(_sink);
    let _echo = me("zenoh-echo", p, size, 0);
    rx.recv().expect("echo ready");
    let rtt = round_trip_us(|| {
        publ.put(msg.clone()).wait().expect("put");
        rx.recv().expect("echo");
    });
    (rate, rtt)
}

fn zenoh_peer(role: &str, port: u16, n: u64) {
    let s = session(port, false);
    let (tx, rx) = mpsc::channel();
    let _sub = s
        .declare_subscriber("bench/there")
        .callback(move |sample| {
            let _ = tx.send(sample.payload().to_bytes().into_owned());
        })
        .wait()
        .expect("subscriber");
    let back = blocking_publisher(&s, "bench/back");
    // Ready once the parent's subscriber reached us: a put it receives.
    std::thread::sleep(Duration::from_millis(500));
    back.put(vec![0u8]).wait().expect("ready");
    if role == "zenoh-sink" {
        for _ in 0..n {
            rx.recv().expect("message");
        }
        back.put(vec![0u8]).wait().expect("done");
        std::thread::sleep(Duration::from_millis(200));
    } else {
        while let Ok(m) = rx.recv() {
            back.put(m).wait().expect("echo");
        }
    }
}

/// A TCP socket: messages/s one way (length-prefixed frames), and the round trip, in µs.
fn tcp_pair(size: usize) -> (f64, f64) {
    let l = TcpListener::bind("127.0.0.1:0").expect("listen");
    let p = l.local_addr().expect("addr").port();
    let n = count(size);
    let msg = vec![5u8; size];
    let frame = |s: &mut TcpStream| {
        s.write_all(&(size as u32).to_le_bytes()).expect("write");
        s.write_all(&msg).expect("write");
    };
    let _sink = me("tcp-sink", p, size, n);
    let (mut s, _) = l.accept().expect("accept");
    s.set_nodelay(true).expect("nodelay");
    let t = Instant::now();
    for _ in 0..n {
        frame(&mut s);
    }
    s.read_exact(&mut [0u8]).expect("sink done");
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let _echo = me("tcp-echo", p, size, 0);
    let (mut s, _) = l.accept().expect("accept");
    s.set_nodelay(true).expect("nodelay");
    let mut buf = vec![0u8; size + 4];
    let rtt = round_trip_us(|| {
        frame(&mut s);
        s.read_exact(&mut buf).expect("echo");
    });
    (rate, rtt)
}

fn tcp_peer(role: &str, port: u16, size: usize, n: u64) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut buf = vec![0u8; size + 4];
    if role == "tcp-sink" {
        for _ in 0..n {
            s.read_exact(&mut buf).expect("frame");
        }
        s.write_all(&[1]).expect("done");
    } else {
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf).expect("echo");
        }
    }
}

fn main() {
    if let Ok(spec) = std::env::var(ROLE) {
        let v: Vec<&str> = spec.split(' ').collect();
        let (port, size, n) = (
            v[1].parse().expect("port"),
            v[2].parse().expect("size"),
            v[3].parse().expect("n"),
        );
        match v[0] {
            r @ ("zenoh-sink" | "zenoh-echo") => zenoh_peer(r, port, n),
            r => tcp_peer(r, port, size, n),
        }
        return;
    }
    // `cargo test --benches` runs this with --test (or --bench): measure only under --bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "bridging over zenoh, loopback, load average {}",
        load.split(' ').take(3).collect::<Vec<_>>().join(" ")
    );
    println!(
        "{:>6} | {:>12} {:>12} {:>12} | {:>10} {:>10} {:>10} | {:>7} {:>7}",
        "size",
        "bridge msg/s",
        "zenoh msg/s",
        "tcp msg/s",
        "bridge RTT",
        "zenoh RTT",
        "tcp RTT",
        "rate %",
        "RTT +µs"
    );
    for (i, &size) in SIZES.iter().enumerate() {
        let base = i as u32 * 8;
        let b_rate = bridge_rate(size, base);
        let b_rtt = bridge_rtt(size, base + 2);
        let (z_rate, z_rtt) = zenoh_pair(size);
        let (t_rate, t_rtt) = tcp_pair(size);
        println!(
            "{:>6} | {:>12.0} {:>12.0} {:>12.0} | {:>8.1}µs {:>8.1}µs {:>8.1}µs | {:>6.0}% {:>7.1}",
            size,
            b_rate,
            z_rate,
            t_rate,
            b_rtt,
            z_rtt,
            t_rtt,
            100.0 * b_rate / z_rate,
            b_rtt - z_rtt
        );
    }
}
