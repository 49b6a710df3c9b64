//! The async producer and consumer (feature `tokio`) in tokio runtimes, against blocking peers
//! in other processes (the test binary run again in a role, see `common::ChildProcess`) and, for
//! cancellation and many rings on one thread, on threads of this process.
//!
//! Every test takes the [`SERIAL`] lock: several of them measure this process (futex calls,
//! CPU time from `getrusage`), which another test running at the same time would disturb. Every
//! async body runs under a [`TEST_TIMEOUT`], every child under [`CHILD_TIMEOUT`], so nothing can
//! hang; every segment is removed by a guard (`ipcs -m` is empty afterwards).

mod common;

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::timing::{SchedProbe, bound, timing_suite};
use common::{
    ChildProcess, RemoveOnDrop, SplitMix64, check_msg, child_result, child_role, fill_msg,
    find_result, make_msg, msg_len, param, print_result, stamp, unstamp,
};
use shmpipe::wait::{SLEEP_SLICE, futex_calls};
use shmpipe::{
    AsyncConsumer, AsyncProducer, AsyncTypedConsumer, AsyncTypedProducer, Heap, Key, RecvError,
    Ring, RingConfig, SendError, Shmid, TryRecvError,
};

/// Bound on each test's async part.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on each child process.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on waits for a child to reach some point.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long after a peer's death (or close) an await must have returned. The library notices a
/// death within about 10-20 ms (DESIGN.md); the margin is for a loaded machine (and the default
/// suite allows `timing::LOADED`).
const DEATH_BOUND: Duration = Duration::from_secs(1);

const SHMID_VAR: &str = "SHMPIPE_TEST_SHMID";
const COUNT_VAR: &str = "SHMPIPE_TEST_COUNT";
const SEED_VAR: &str = "SHMPIPE_TEST_SEED";
const DELAY_VAR: &str = "SHMPIPE_TEST_DELAY_MS";
const GAP_VAR: &str = "SHMPIPE_TEST_GAP_MS";
const PAUSE_EVERY_VAR: &str = "SHMPIPE_TEST_PAUSE_EVERY";

/// Serialises every test of this file (see the module doc).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    // A test that failed while holding the lock does not make the others fail.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on a fresh two-worker runtime, failing the test after [`TEST_TIMEOUT`].
fn block_on<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("build a tokio runtime");
    rt.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, f)
            .await
            .expect("the test's async part timed out")
    })
}

fn var(name: &'static str, value: impl ToString) -> (&'static str, String) {
    (name, value.to_string())
}

/// A ring with no key, reached by shmid, removed when the guard drops.
fn private_ring(cfg: &RingConfig) -> (Ring, RemoveOnDrop) {
    let ring = Ring::create(Key::Private, cfg).expect("create a private ring");
    let guard = RemoveOnDrop::ring(&ring);
    (ring, guard)
}

/// The ring a child was given.
fn ring_from_env() -> Ring {
    Ring::open(Shmid(param(SHMID_VAR)), &RingConfig::new())
        .unwrap_or_else(|e| panic!("child: attaching the ring: {e}"))
}

/// Waits until `child` has printed `RESULT name=...` and returns the value.
fn wait_result(child: &mut ChildProcess, name: &str) -> String {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        let out = child.output();
        if let Some(v) = find_result(&out, name) {
            return v;
        }
        child.assert_running();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for RESULT {name}:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// CPU time (user + system) of this whole process so far, every thread included.
fn cpu_time() -> Duration {
    // SAFETY: rusage is a plain C struct for which all-zero bytes are a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a writable rusage that outlives the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut ru) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

// ---------------------------------------------------------------------------------------------
// Children: blocking peers
// ---------------------------------------------------------------------------------------------

/// If this process is a child, runs its role and returns true.
fn run_child_role() -> bool {
    let Some(role) = child_role() else {
        return false;
    };
    match role.as_str() {
        "stream-producer" => stream_producer(),
        "slow-consumer" => slow_consumer(),
        "late-producer" => late_producer(),
        "hung-producer" => hung_producer(),
        "hung-consumer" => hung_consumer(),
        "closing-consumer" => closing_consumer(),
        other => panic!("unknown role {other:?}"),
    }
    true
}

/// Sends `COUNT` checked messages of random sizes as fast as it can, then closes the ring.
fn stream_producer() {
    let ring = ring_from_env();
    let mut tx = ring.producer().expect("claim the producer");
    let (count, seed): (u64, u64) = (param(COUNT_VAR), param(SEED_VAR));
    let max = tx.max_message();
    let mut buf = vec![0u8; max];
    let futex0 = futex_calls();
    for seq in 0..count {
        let len = msg_len(seed, seq, max);
        fill_msg(seed, seq, &mut buf[..len]);
        tx.send(&buf[..len]).expect("send");
    }
    print_result("futex", futex_calls() - futex0);
}

/// Receives and checks `COUNT` messages, pausing `GAP` ms after every `PAUSE_EVERY` of them
/// (so the producer finds the ring full for a while), then closes.
fn slow_consumer() {
    let ring = ring_from_env();
    let mut rx = ring.consumer().expect("claim the consumer");
    let (count, seed): (u64, u64) = (param(COUNT_VAR), param(SEED_VAR));
    let (every, gap): (u64, u64) = (param(PAUSE_EVERY_VAR), param(GAP_VAR));
    let max = rx.max_message();
    let (mut buf, mut scratch) = (vec![0u8; max], Vec::new());
    print_result("ready", 1);
    for seq in 0..count {
        if seq % every == every - 1 {
            std::thread::sleep(Duration::from_millis(gap));
        }
        let n = rx.recv(&mut buf).expect("recv");
        check_msg(seed, seq, max, &buf[..n], &mut scratch).unwrap();
    }
    print_result("received", count);
}

/// Waits `DELAY` ms, then sends `COUNT` stamped messages `GAP` ms apart, reporting the futex
/// calls the sends made, then closes the ring.
fn late_producer() {
    let ring = ring_from_env();
    let mut tx = ring.producer().expect("claim the producer");
    let (count, delay, gap): (u64, u64, u64) = (param(COUNT_VAR), param(DELAY_VAR), param(GAP_VAR));
    std::thread::sleep(Duration::from_millis(delay));
    for seq in 0..count {
        if seq > 0 {
            std::thread::sleep(Duration::from_millis(gap));
        }
        let futex0 = futex_calls();
        tx.send(&stamp(seq)).expect("send");
        print_result(&format!("futex{seq}"), futex_calls() - futex0);
    }
    // Let the consumer park again before the close wakes it.
    std::thread::sleep(Duration::from_millis(gap));
}

/// Sends `COUNT` messages, says so, then holds the role until killed.
fn hung_producer() {
    let ring = ring_from_env();
    let mut tx = ring.producer().expect("claim the producer");
    for seq in 0..param::<u64>(COUNT_VAR) {
        tx.send(&stamp(seq)).expect("send");
    }
    print_result("sent", 1);
    std::thread::sleep(CHILD_TIMEOUT);
}

/// Claims the consumer role, says so, then holds it without reading until killed.
fn hung_consumer() {
    let ring = ring_from_env();
    let _rx = ring.consumer().expect("claim the consumer");
    print_result("ready", 1);
    std::thread::sleep(CHILD_TIMEOUT);
}

/// Receives `COUNT` messages after `DELAY` ms, then closes the ring (exits).
fn closing_consumer() {
    let ring = ring_from_env();
    let mut rx = ring.consumer().expect("claim the consumer");
    print_result("ready", 1);
    std::thread::sleep(Duration::from_millis(param(DELAY_VAR)));
    let mut buf = vec![0u8; rx.max_message()];
    for _ in 0..param::<u64>(COUNT_VAR) {
        rx.recv(&mut buf).expect("recv");
    }
}

// ---------------------------------------------------------------------------------------------
// Across processes
// ---------------------------------------------------------------------------------------------

/// A tokio consumer receives a million messages of random sizes from a blocking producer in
/// another process, checking every byte, then the end of the stream; half through `recv`, half
/// through `recv_vec`, on a task of a multi-threaded runtime (so the futures are `Send`).
#[test]
fn async_consumer_receives_a_million_checked_messages_from_a_process() {
    if run_child_role() {
        return;
    }
    let _serial = serial();
    const TEST: &str = "async_consumer_receives_a_million_checked_messages_from_a_process";
    let count: u64 = std::env::var("SHMPIPE_STRESS_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let seed = 0xa51c_0001;
    let (ring, _rm) = private_ring(
        &RingConfig::new()
            .slot_size(64)
            .slot_count(1024)
            .max_message(1000),
    );
    let rx = ring.consumer().unwrap().into_async();
    let vars = [
        var(SHMID_VAR, ring.shmid().unwrap()),
        var(COUNT_VAR, count),
        var(SEED_VAR, seed),
    ];
    let producer = ChildProcess::spawn(TEST, "stream-producer", &vars);
    let futex0 = futex_calls();
    let start = Instant::now();
    let received = block_on(async move {
        tokio::spawn(async move {
            let mut rx: AsyncConsumer = rx;
            let max = rx.get_ref().max_message();
            let (mut buf, mut vec, mut scratch) = (vec![0u8; max], Vec::new(), Vec::new());
            for seq in 0..count {
                let got = if seq % 2 == 0 {
                    let n = rx.recv(&mut buf).await.expect("recv");
                    &buf[..n]
                } else {
                    let n = rx.recv_vec(&mut vec).await.expect("recv_vec");
                    assert_eq!(n, vec.len());
                    &vec[..]
                };
                check_msg(seed, seq, max, got, &mut scratch).unwrap();
            }
            assert_eq!(rx.recv(&mut buf).await, Err(RecvError::Disconnected));
            count
        })
        .await
        .expect("the consumer task")
    });
    let elapsed = start.elapsed();
    let out = producer.wait_success_output(CHILD_TIMEOUT);
    assert_eq!(received, count);
    eprintln!(
        "{count} messages in {elapsed:?} ({:.0}/s); futex calls: consumer {}, producer {}",
        count as f64 / elapsed.as_secs_f64(),
        futex_calls() - futex0,
        child_result::<u64>(&out, "futex")
    );
}

/// A tokio producer sends to a blocking consumer in another process that pauses now and then,
/// so the ring (16 slots) is full for tens of milliseconds at a time: the send parks (futex
/// calls are made) instead of spinning (the process's CPU time stays far below the wall time),
/// and the consumer receives every message intact.
#[test]
fn async_producer_parks_on_a_full_ring_for_a_slow_consumer_process() {
    if run_child_role() {
        return;
    }
    let _serial = serial();
    const TEST: &str = "async_producer_parks_on_a_full_ring_for_a_slow_consumer_process";
    const COUNT: u64 = 2_000;
    const EVERY: u64 = 200;
    const GAP_MS: u64 = 30;
    let seed = 0xa51c_0002;
    let (ring, _rm) = private_ring(
        &RingConfig::new()
            .slot_size(64)
            .slot_count(16)
            .max_message(100),
    );
    let mut tx = ring.producer().unwrap().into_async();
    let vars = [
        var(SHMID_VAR, ring.shmid().unwrap()),
        var(COUNT_VAR, COUNT),
        var(SEED_VAR, seed),
        var(PAUSE_EVERY_VAR, EVERY),
        var(GAP_VAR, GAP_MS),
    ];
    let mut consumer = ChildProcess::spawn(TEST, "slow-consumer", &vars);
    wait_result(&mut consumer, "ready");
    let (futex0, cpu0, start) = (futex_calls(), cpu_time(), Instant::now());
    block_on(async {
        let max = tx.get_ref().max_message();
        for seq in 0..COUNT {
            tx.send(&make_msg(seed, seq, max)).await.expect("send");
        }
    });
    let (futex, cpu, wall) = (futex_calls() - futex0, cpu_time() - cpu0, start.elapsed());
    drop(tx);
    let out = consumer.wait_success_output(CHILD_TIMEOUT);
    assert_eq!(child_result::<u64>(&out, "received"), COUNT);
    eprintln!("async producer: {futex} futex calls, {cpu:?} CPU in {wall:?}");
    let pauses = COUNT / EVERY;
    assert!(
        futex >= pauses,
        "{futex} futex calls over {pauses} pauses of {GAP_MS} ms: the send did not park"
    );
    // At most one FUTEX_WAIT (a park) and one FUTEX_WAKE (the consumer asleep on an empty
    // ring) per send, plus a slice's wait per 10 ms of the pauses. (On this 16-slot ring the
    // two sides often take turns sleeping: the consumer empties the ring faster than a parked
    // task wakes, and sleeps too; so the count is not much below that.) Spinning through the
    // pauses instead would make no futex call and burn the CPU, which the next check catches.
    let slices = pauses * GAP_MS / SLEEP_SLICE.as_millis() as u64;
    assert!(
        futex <= 2 * COUNT + slices + pauses,
        "{futex} futex calls for {COUNT} sends"
    );
    assert!(
        cpu < wall / 3,
        "the async producer used {cpu:?} of CPU in {wall:?}: it spins while the ring is full"
    );
}

/// A tokio consumer waits 300 ms for a blocking producer in another process, then 5 more
/// messages 40 ms apart, then the close. While parked it does not spin: the process's CPU time
/// over the long wait is a small fraction of the wall time, and its futex calls are about one
/// per 10 ms slice (not a count that grows with spinning). Each message wakes it with exactly
/// one `FUTEX_WAKE` made by the producer (so it was asleep and announced it), promptly; the
/// close after the last message ends the stream while it is parked.
#[test]
fn parked_recv_does_not_spin_and_is_woken_by_a_message() {
    if run_child_role() {
        return;
    }
    let _serial = serial();
    const TEST: &str = "parked_recv_does_not_spin_and_is_woken_by_a_message";
    const MESSAGES: u64 = 6;
    const DELAY_MS: u64 = 300;
    const GAP_MS: u64 = 40;
    let (ring, _rm) = private_ring(&RingConfig::new().slot_size(64).slot_count(64));
    let mut rx = ring.consumer().unwrap().into_async();
    let vars = [
        var(SHMID_VAR, ring.shmid().unwrap()),
        var(COUNT_VAR, MESSAGES),
        var(DELAY_VAR, DELAY_MS),
        var(GAP_VAR, GAP_MS),
    ];
    let producer = ChildProcess::spawn(TEST, "late-producer", &vars);
    let (futex0, cpu0, start) = (futex_calls(), cpu_time(), Instant::now());
    let probe = SchedProbe::start();
    let (first, latencies, end) = block_on(async {
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).await.expect("recv the first message");
        let (seq, latency) = unstamp(&buf[..n]);
        assert_eq!(seq, 0);
        let first = (start.elapsed(), futex_calls() - futex0, cpu_time() - cpu0);
        let mut latencies = vec![latency];
        for want in 1..MESSAGES {
            let n = rx.recv(&mut buf).await.expect("recv");
            let (seq, latency) = unstamp(&buf[..n]);
            assert_eq!(seq, want);
            latencies.push(latency);
        }
        let closed_at = Instant::now();
        let end = rx.recv(&mut buf).await;
        (first, latencies, (end, closed_at.elapsed()))
    });
    let cal = probe.stop();
    let out = producer.wait_success_output(CHILD_TIMEOUT);
    let (wall, futex, cpu) = first;
    eprintln!("parked {wall:?}: {futex} futex calls, {cpu:?} CPU; wake-up latencies {latencies:?}");
    assert!(
        wall >= Duration::from_millis(DELAY_MS),
        "woke after {wall:?}"
    );
    let slices = (wall.as_millis() / SLEEP_SLICE.as_millis()) as u64;
    assert!(
        futex <= slices + 5,
        "{futex} futex calls while parked for {wall:?} ({slices} slices)"
    );
    assert!(
        cpu < wall / 10,
        "{cpu:?} of CPU while parked for {wall:?}: the wait spins"
    );
    // Each send makes one FUTEX_WAKE if it finds the consumer's announcement, none if not.
    // The parked consumer withdraws it for some microseconds every 10 ms slice (to look at
    // its peer), so a send may rarely fall in that window; one such miss is tolerated.
    let wakes: Vec<u64> = (0..MESSAGES)
        .map(|seq| child_result(&out, &format!("futex{seq}")))
        .collect();
    assert!(
        wakes.iter().all(|&w| w <= 1) && wakes.iter().sum::<u64>() >= MESSAGES - 1,
        "FUTEX_WAKEs per send: {wakes:?}: the producer did not find the consumer asleep"
    );
    let mut sorted = latencies.clone();
    sorted.sort();
    assert!(
        sorted[sorted.len() / 2] < bound(Duration::from_millis(5)),
        "median wake-up latency {:?} ({latencies:?}; {cal})",
        sorted[sorted.len() / 2]
    );
    assert!(
        sorted[sorted.len() - 1] < bound(Duration::from_millis(100)),
        "wake-up latencies {latencies:?}"
    );
    let (end, after) = end;
    assert_eq!(end, Err(RecvError::Disconnected));
    assert!(after < Duration::from_millis(GAP_MS) + bound(DEATH_BOUND));
}

/// SIGKILLs `child` after `delay`, from another thread (the test's thread is inside the
/// runtime, awaiting); the join gives back the guard and when the kill was reaped.
fn kill_after(
    mut child: ChildProcess,
    delay: Duration,
) -> std::thread::JoinHandle<(ChildProcess, Instant)> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let at = child.kill_and_reap();
        (child, at)
    })
}

/// A producer process is SIGKILLed while the tokio consumer awaits its next message: `recv`
/// returns `PeerDied` with its pid (after the messages it had sent), never hangs.
#[test]
fn recv_returns_peer_died_when_the_producer_process_is_killed() {
    if run_child_role() {
        return;
    }
    let _serial = serial();
    const TEST: &str = "recv_returns_peer_died_when_the_producer_process_is_killed";
    const SENT: u64 = 100;
    let (ring, _rm) = private_ring(&RingConfig::new().slot_size(64).slot_count(256));
    let mut rx = ring.consumer().unwrap().into_async();
    let vars = [var(SHMID_VAR, ring.shmid().unwrap()), var(COUNT_VAR, SENT)];
    let mut producer = ChildProcess::spawn(TEST, "hung-producer", &vars);
    let pid = producer.pid();
    wait_result(&mut producer, "sent");
    let killer = kill_after(producer, Duration::from_millis(150));
    let (result, returned) = block_on(async {
        let mut buf = [0u8; 64];
        for want in 0..SENT {
            let n = rx.recv(&mut buf).await.expect("recv");
            assert_eq!(unstamp(&buf[..n]).0, want);
        }
        let r = rx.recv(&mut buf).await;
        (r, Instant::now())
    });
    let (_producer, killed_at) = killer.join().unwrap();
    assert_eq!(result, Err(RecvError::PeerDied { pid }));
    let after = returned.duration_since(killed_at);
    eprintln!("PeerDied {after:?} after the kill");
    assert!(
        after < bound(DEATH_BOUND),
        "PeerDied only {after:?} after the kill"
    );
}

/// A consumer process holding the role is SIGKILLed while the tokio producer is parked on a
/// full ring: `send` returns `PeerDied` with its pid.
#[test]
fn send_returns_peer_died_when_the_consumer_process_is_killed() {
    if run_child_role() {
        return;
    }
    let _serial = serial();
    const TEST: &str = "send_returns_peer_died_when_the_consumer_process_is_killed";
    let (ring, _rm) = private_ring(&RingConfig::new().slot_size(64).slot_count(8));
    let mut tx = ring.producer().unwrap().into_async();
    let vars = [var(SHMID_VAR, ring.shmid().unwrap())];
    let mut consumer = ChildProcess::spawn(TEST, "hung-consumer", &vars);
    let pid = consumer.pid();
    wait_result(&mut consumer, "ready");
    let killer = kill_after(consumer, Duration::from_millis(150));
    let msg = [7u8; 40];
    let (sent, result, returned) = block_on(async {
        let mut sent = 0u64;
        let result = loop {
            match tx.send(&msg).await {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
        };
        (sent, result, Instant::now())
    });
    let (_consumer, killed_at) = killer.join().unwrap();
    assert_eq!(sent, 8, "a 40-byte message takes one 64-byte slot");
    assert_eq!(result, SendError::PeerDied { pid });
    let after = returned.duration_since(killed_at);
    eprintln!("PeerDied {after:?} after the kill");
    assert!(
        after < bound(DEATH_BOUND),
        "PeerDied only {after:?} after the kill"
    );
}

/// A consumer process reads ten messages and exits (closing the ring) while the tokio producer
/// is parked on the full ring: `send` returns `Disconnected` with the message.
#[test]
fn send_returns_disconnected_when_the_consumer_process_closes() {
    if run_child_role() {
        return;
    }
    let _serial = serial();
    const TEST: &str = "send_returns_disconnected_when_the_consumer_process_closes";
    let (ring, _rm) = private_ring(&RingConfig::new().slot_size(64).slot_count(8));
    let mut tx = ring.producer().unwrap().into_async();
    let vars = [
        var(SHMID_VAR, ring.shmid().unwrap()),
        var(DELAY_VAR, 100),
        var(COUNT_VAR, 10),
    ];
    let mut consumer = ChildProcess::spawn(TEST, "closing-consumer", &vars);
    wait_result(&mut consumer, "ready");
    let msg = [9u8; 40];
    let (sent, result) = block_on(async {
        let mut sent = 0u64;
        loop {
            match tx.send(&msg).await {
                Ok(()) => sent += 1,
                Err(e) => return (sent, e),
            }
        }
    });
    consumer.wait_success(CHILD_TIMEOUT);
    assert_eq!(result, SendError::Disconnected);
    // 8 fit at once; the consumer read 10, so at least 10 were sent and at most 8 more.
    assert!((10..=18).contains(&sent), "{sent} sends succeeded");
}

// ---------------------------------------------------------------------------------------------
// Cancellation, and many rings on one thread (threads of this process as peers)
// ---------------------------------------------------------------------------------------------

/// Dropping a `recv` or `send` future (here through `tokio::time::timeout`), parked or not,
/// loses and duplicates nothing: after a timed-out `recv` the next one gets the next message,
/// and a stream of 3000 numbered messages arrives complete and in order through receives and
/// sends that time out at random, parked or spinning.
#[test]
fn recv_and_send_are_cancel_safe() {
    let _serial = serial();
    block_on(async {
        // A timed-out recv with no sender, then the next message.
        let ring = Ring::create(Heap, &RingConfig::new()).unwrap();
        let mut rx = ring.consumer().unwrap().into_async();
        let mut tx = ring.producer().unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            let r = tokio::time::timeout(Duration::from_millis(30), rx.recv(&mut buf)).await;
            assert!(r.is_err(), "recv returned {r:?} with nothing sent");
        }
        tx.send(b"first").unwrap();
        tx.send(b"second").unwrap();
        let n = rx.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"first");
        let mut v = Vec::new();
        assert_eq!(rx.recv_vec(&mut v).await, Ok(6));
        assert_eq!(v, b"second");
        assert_eq!(rx.get_mut().try_recv(&mut buf), Err(TryRecvError::Empty));

        // Timed-out recvs racing a bursty producer thread.
        const STREAM: u64 = 3000;
        let producer = std::thread::spawn(move || {
            let mut rng = SplitMix64::new(1);
            for seq in 0..STREAM {
                match rng.below(100) {
                    0..=2 => std::thread::sleep(Duration::from_millis(rng.below(4) + 1)),
                    3..=20 => std::thread::sleep(Duration::from_micros(rng.below(200))),
                    _ => {}
                }
                tx.send(&seq.to_le_bytes()).unwrap();
            }
        });
        let mut rng = SplitMix64::new(2);
        let (mut next, mut cancelled) = (0u64, 0u64);
        loop {
            let limit = Duration::from_micros(rng.below(3000));
            match tokio::time::timeout(limit, rx.recv(&mut buf)).await {
                Err(_) => cancelled += 1,
                Ok(Ok(n)) => {
                    assert_eq!(u64::from_le_bytes(buf[..n].try_into().unwrap()), next);
                    next += 1;
                }
                Ok(Err(RecvError::Disconnected)) => break,
                Ok(Err(e)) => panic!("recv: {e}"),
            }
        }
        producer.join().unwrap();
        assert_eq!(next, STREAM);
        eprintln!("recv: {cancelled} receives cancelled");
        assert!(cancelled > 10, "only {cancelled} receives were cancelled");

        // Timed-out sends on a two-slot ring racing a bursty consumer thread.
        let ring = Ring::create(Heap, &RingConfig::new().slot_size(64).slot_count(2)).unwrap();
        let mut tx: AsyncProducer = ring.producer().unwrap().into_async();
        let mut rx = ring.consumer().unwrap();
        let consumer = std::thread::spawn(move || {
            let mut rng = SplitMix64::new(3);
            let mut buf = [0u8; 64];
            let mut next = 0u64;
            loop {
                if rng.below(100) < 3 {
                    std::thread::sleep(Duration::from_millis(rng.below(4) + 1));
                }
                match rx.recv(&mut buf) {
                    Ok(n) => {
                        assert_eq!(u64::from_le_bytes(buf[..n].try_into().unwrap()), next);
                        next += 1;
                    }
                    Err(RecvError::Disconnected) => return next,
                    Err(e) => panic!("recv: {e}"),
                }
            }
        });
        let mut cancelled = 0u64;
        for seq in 0..STREAM {
            let msg = seq.to_le_bytes();
            loop {
                let limit = Duration::from_micros(rng.below(3000));
                match tokio::time::timeout(limit, tx.send(&msg)).await {
                    Err(_) => cancelled += 1,
                    Ok(r) => break r.unwrap(),
                }
            }
        }
        drop(tx);
        assert_eq!(consumer.join().unwrap(), STREAM);
        eprintln!("send: {cancelled} sends cancelled");
        assert!(cancelled > 10, "only {cancelled} sends were cancelled");
    });
}

/// Eight rings, each awaited by its own task on a current-thread runtime, are woken one by one
/// in reverse order by producer threads: each task gets its message promptly whatever the
/// others do (their parks are on the blocking pool, not on the runtime's one thread), and a
/// 1 ms ticker on the same thread keeps ticking throughout.
#[test]
fn parked_waits_of_many_rings_do_not_block_one_thread() {
    let _serial = serial();
    const RINGS: u64 = 8;
    const STEP_MS: u64 = 40;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let probe = SchedProbe::start();
    let latencies =
        rt.block_on(async {
            tokio::time::timeout(TEST_TIMEOUT, async {
            let mut tasks = Vec::new();
            let mut producers = Vec::new();
            for i in 0..RINGS {
                let ring = Ring::create(Heap, &RingConfig::new().slot_count(64)).unwrap();
                let mut rx = ring.consumer().unwrap().into_async();
                let mut tx = ring.producer().unwrap();
                tasks.push(tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let n = rx.recv(&mut buf).await.unwrap();
                    let (seq, latency) = unstamp(&buf[..n]);
                    assert_eq!(seq, i);
                    assert_eq!(rx.recv(&mut buf).await, Err(RecvError::Disconnected));
                    latency
                }));
                producers.push(std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(50 + STEP_MS * (RINGS - i)));
                    tx.send(&stamp(i)).unwrap();
                }));
            }
            let ticker = tokio::spawn(async {
                let mut ticks = 0u64;
                let mut interval = tokio::time::interval(Duration::from_millis(1));
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let start = Instant::now();
                while start.elapsed() < Duration::from_millis(STEP_MS * RINGS) {
                    interval.tick().await;
                    ticks += 1;
                }
                ticks
            });
            let mut latencies = Vec::new();
            for t in tasks {
                latencies.push(t.await.unwrap());
            }
            let ticks = ticker.await.unwrap();
            for p in producers {
                p.join().unwrap();
            }
            let expected = STEP_MS * RINGS;
            eprintln!("ticks {ticks} of {expected}; wake-up latencies {latencies:?}");
            // A blocked thread would tick a few times; a starved one ticks late.
            let min_ticks = if timing_suite() { expected / 2 } else { expected / 16 };
            assert!(
                ticks >= min_ticks,
                "the ticker ticked {ticks} times in {expected} ms: the runtime's thread was blocked"
            );
            latencies
        })
        .await
        .expect("timed out")
        });
    let cal = probe.stop();
    let mut sorted = latencies.clone();
    sorted.sort();
    assert!(
        sorted[sorted.len() / 2] < bound(Duration::from_millis(5)),
        "median wake-up latency {:?} ({latencies:?}; {cal})",
        sorted[sorted.len() / 2]
    );
    assert!(
        sorted[sorted.len() - 1] < bound(Duration::from_millis(100)),
        "wake-up latencies {latencies:?}"
    );
}

/// A typed value of the async typed tests: a sequence number and a check word.
fn typed_value(seq: u64) -> [u64; 2] {
    [seq, seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)]
}

/// Typed rings are async too: an async typed producer (`send`, `send_slice`) parks on a
/// four-slot ring for a blocking typed consumer thread, and an async typed consumer (`recv`,
/// `recv_slice`) parks for a blocking typed producer thread; every value arrives once, in
/// order, and the stream ends with `Disconnected`.
#[test]
fn typed_sides_are_async_across_threads() {
    let _serial = serial();
    const VALUES: u64 = 20_000;
    block_on(async {
        let cfg = RingConfig::new()
            .slot_size(32)
            .slot_count(4)
            .message_type::<[u64; 2]>();
        // Async producer, blocking consumer.
        let ring = Ring::create(Heap, &cfg).unwrap();
        let mut tx: AsyncTypedProducer<[u64; 2]> =
            ring.typed::<[u64; 2]>().producer().unwrap().into_async();
        let mut rx = ring.typed::<[u64; 2]>().consumer().unwrap();
        let consumer = std::thread::spawn(move || {
            let mut next = 0u64;
            for v in &mut rx {
                assert_eq!(v.expect("typed recv"), typed_value(next));
                next += 1;
            }
            next
        });
        let mut rng = SplitMix64::new(11);
        let mut seq = 0u64;
        while seq < VALUES {
            if rng.below(2) == 0 {
                tx.send(typed_value(seq)).await.unwrap();
                seq += 1;
            } else {
                let n = (rng.below(9) + 1).min(VALUES - seq);
                let values: Vec<_> = (seq..seq + n).map(typed_value).collect();
                tx.send_slice(&values).await.unwrap();
                seq += n;
            }
        }
        assert!(tx.get_ref().as_bytes().check_consumer().is_ok());
        drop(tx.into_inner());
        assert_eq!(consumer.join().unwrap(), VALUES);

        // Blocking producer, async consumer.
        let ring = Ring::create(Heap, &cfg).unwrap();
        let mut tx = ring.typed::<[u64; 2]>().producer().unwrap();
        let mut rx: AsyncTypedConsumer<[u64; 2]> =
            ring.typed::<[u64; 2]>().consumer().unwrap().into_async();
        let producer = std::thread::spawn(move || {
            let mut rng = SplitMix64::new(12);
            for seq in 0..VALUES {
                if rng.below(500) == 0 {
                    std::thread::sleep(Duration::from_millis(1)); // let the consumer park
                }
                tx.send(typed_value(seq)).unwrap();
            }
        });
        let mut buf = [[0u64; 2]; 7];
        let mut next = 0u64;
        loop {
            let got = if next % 3 == 0 {
                rx.recv().await.map(|v| {
                    buf[0] = v;
                    1
                })
            } else {
                rx.recv_slice(&mut buf).await
            };
            match got {
                Ok(n) => {
                    assert!(n >= 1);
                    for v in &buf[..n] {
                        assert_eq!(*v, typed_value(next));
                        next += 1;
                    }
                }
                Err(RecvError::Disconnected) => break,
                Err(e) => panic!("typed recv: {e}"),
            }
        }
        producer.join().unwrap();
        assert_eq!(next, VALUES);
        assert_eq!(rx.recv().await, Err(RecvError::Disconnected));
        assert_eq!(rx.get_mut().try_recv(), Err(TryRecvError::Disconnected));
        drop(rx.into_inner());
    });
}

/// Polls `fut` until it completes or until the runtime has run `yields` other rounds, then
/// drops it: a cancellation at a point chosen by count, not by the clock.
async fn cancel_after<F: Future>(yields: u64, fut: F) -> Option<F::Output> {
    let other = async {
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
    };
    tokio::select! {
        biased;
        out = fut => Some(out),
        () = other => None,
    }
}

/// Dropping the async typed sides' futures loses and duplicates nothing: a `recv` cancelled
/// on an empty ring, then values sent, gives the first value; and streams of numbered values
/// arrive complete and in order through `recv`, `recv_slice` and `send` futures cancelled
/// after a random number of runtime rounds (no clock decides).
#[test]
fn typed_recv_and_send_are_cancel_safe() {
    let _serial = serial();
    const STREAM: u64 = 3000;
    block_on(async {
        let cfg = RingConfig::new()
            .slot_size(64)
            .slot_count(2)
            .message_type::<u64>();
        let ring = Ring::create(Heap, &cfg).unwrap();
        let mut rx = ring.typed::<u64>().consumer().unwrap().into_async();
        let mut tx = ring.typed::<u64>().producer().unwrap();
        for yields in 0..3 {
            assert_eq!(cancel_after(yields, rx.recv()).await, None);
        }
        tx.send(7).unwrap();
        tx.send(8).unwrap();
        assert_eq!(rx.recv().await, Ok(7));
        let mut out = [0u64; 4];
        assert_eq!(rx.recv_slice(&mut out).await, Ok(1));
        assert_eq!(out[0], 8);

        // Cancelled receives racing a bursty producer thread.
        let producer = std::thread::spawn(move || {
            let mut rng = SplitMix64::new(21);
            for seq in 0..STREAM {
                if rng.below(50) == 0 {
                    std::thread::sleep(Duration::from_micros(rng.below(500)));
                }
                tx.send(seq).unwrap();
            }
        });
        let mut rng = SplitMix64::new(22);
        let (mut next, mut cancelled) = (0u64, 0u64);
        loop {
            let yields = rng.below(4);
            let got = if rng.below(2) == 0 {
                cancel_after(yields, rx.recv()).await.map(|r| {
                    r.map(|v| {
                        out[0] = v;
                        1
                    })
                })
            } else {
                cancel_after(yields, rx.recv_slice(&mut out)).await
            };
            match got {
                None => cancelled += 1,
                Some(Ok(n)) => {
                    for v in &out[..n] {
                        assert_eq!(*v, next);
                        next += 1;
                    }
                }
                Some(Err(RecvError::Disconnected)) => break,
                Some(Err(e)) => panic!("typed recv: {e}"),
            }
        }
        producer.join().unwrap();
        assert_eq!(next, STREAM);
        eprintln!("typed recv: {cancelled} receives cancelled");

        // Cancelled sends on a two-slot ring racing a bursty consumer thread.
        let ring = Ring::create(Heap, &cfg).unwrap();
        let mut tx = ring.typed::<u64>().producer().unwrap().into_async();
        let mut rx = ring.typed::<u64>().consumer().unwrap();
        let consumer = std::thread::spawn(move || {
            let mut rng = SplitMix64::new(23);
            let mut next = 0u64;
            loop {
                if rng.below(50) == 0 {
                    std::thread::sleep(Duration::from_micros(rng.below(500)));
                }
                match rx.recv() {
                    Ok(v) => {
                        assert_eq!(v, next);
                        next += 1;
                    }
                    Err(RecvError::Disconnected) => return next,
                    Err(e) => panic!("typed recv: {e}"),
                }
            }
        });
        let mut cancelled = 0u64;
        for seq in 0..STREAM {
            loop {
                match cancel_after(rng.below(4), tx.send(seq)).await {
                    None => cancelled += 1,
                    Some(r) => break r.unwrap(),
                }
            }
        }
        drop(tx);
        assert_eq!(consumer.join().unwrap(), STREAM);
        eprintln!("typed send: {cancelled} sends cancelled");
    });
}
