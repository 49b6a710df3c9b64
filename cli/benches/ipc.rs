//! Cross-process benchmarks: shmpipe against pipes and sockets (issue #6).
//!
//! For each message size (8 B, 64 B, 1 KiB, 64 KiB) two criterion groups, each holding every
//! transport so the report shows them side by side:
//!
//! - `rtt-<size>`: round trips, one per iteration. Each is also timed alone into a histogram,
//!   and its median, 99th and 99.9th percentiles are printed after the benchmark (criterion's
//!   own statistics are of means per sample).
//! - `stream-<size>`: one message per iteration streamed one way; each sample is timed from
//!   the first send to the peer's acknowledgement of the last message. Criterion reports
//!   bytes/s; messages/s are printed after the benchmark. `memcpy-2x` is the reference of two
//!   memcpy per message in one thread.
//!
//! Transports: `reference` (a hand-written batched ring between the two processes: the
//! machine's bound), `thread-ring` (in-process ring between two threads: the upper bound),
//! `shmpipe-spin`, `shmpipe-batch` (zero copy and batches), `shmpipe` (spin, then sleep),
//! `pipe`, `unix-stream`, `unix-seqpacket`, `tcp`; the kernel ones twice, `/pinned` to two
//! CPUs and `/unpinned` (the scheduler's choice). With `--features iceoryx2`, also `iceoryx2`
//! (its publish-subscribe, loaned samples, spinning: docs/BENCHMARKS.md). The peer is this binary re-executed (its
//! `main` recognises the peer argument before criterion sees the command line), started once
//! per benchmark and pinned to the other CPU. After all groups, a table gives each transport
//! at its best placement with the ratios to the pipe.
//!
//! The transports, the peer and the timed loops are `cli/src/bench/transports.rs`, the same
//! source `shmpipe bench` is built from, included here by `#[path]`.
//!
//! `cargo bench --bench ipc` runs everything (about 5 minutes on two CPUs); a filter selects,
//! e.g. `cargo bench --bench ipc -- rtt-64B` or `-- 'stream-64KiB/(shmpipe|pipe)'`. Criterion's
//! own plots and HTML report are off (they would take longer than the measurements);
//! `SHMPIPE_BENCH_PLOTS=1 cargo bench --bench ipc` turns them on. `cli/examples/plot_bench` draws
//! the comparison from `shmpipe bench --json`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};

#[path = "../src/bench/transports.rs"]
// `shmpipe bench`'s fixed-rate latency and repeated runs are not part of this suite; the
// binary's build still reports dead code in this file.
#[allow(dead_code)]
mod transports;

use transports::{DEFAULT_SIZES, Histogram, Placement, Row, Session, Transport};

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some(transports::PEER_ARG) {
        let spec = args.next().unwrap_or_default();
        if let Err(e) = transports::peer_main(&spec) {
            eprintln!("bench peer: {e}");
            std::process::exit(1);
        }
        return;
    }
    transports::init_cpus();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    // Criterion's plots (its HTML report) take longer than the measurements here: a hundred
    // benchmarks at several seconds each. Off unless asked for.
    if std::env::var_os("SHMPIPE_BENCH_PLOTS").is_none() {
        c = c.without_plots();
    }
    let mut c = c.configure_from_args();
    let mut rows = Vec::new();
    for size in DEFAULT_SIZES {
        rtt_group(&mut c, size, &mut rows);
    }
    for size in DEFAULT_SIZES {
        stream_group(&mut c, size, &mut rows);
    }
    c.final_summary();
    let _ = transports::place_self(Placement::Unpinned);
    if !rows.is_empty() {
        println!("\nEach transport at its best placement:\n");
        print!("{}", transports::table(&rows));
    }
}

/// The benchmark's id: the transport, and the placement for kernel transports.
fn id(t: Transport, p: Placement) -> BenchmarkId {
    if t.is_kernel() {
        BenchmarkId::new(t.name(), p.name())
    } else {
        BenchmarkId::from_parameter(t.name())
    }
}

/// Starts a session, or panics saying which (criterion has no way to report an error); also
/// returns the line probe taken before the measurement.
fn start(t: Transport, size: usize, p: Placement) -> (Session, Option<f64>) {
    let mut s = Session::start(t, size, p, None)
        .unwrap_or_else(|e| panic!("{} {size} B {}: {e}", t.name(), p.name()));
    let before = probe(&mut s, t);
    (s, before)
}

/// A line probe, or panics saying which.
fn probe(s: &mut Session, t: Transport) -> Option<f64> {
    s.probe_line()
        .unwrap_or_else(|e| panic!("{} line probe: {e}", t.name()))
}

/// Probes the line after a session and records both probes.
fn finish(
    rows: &mut Vec<Row>,
    session: Option<(Session, Option<f64>)>,
    t: Transport,
    size: usize,
    p: Placement,
) {
    if let Some((mut s, before)) = session {
        let after = probe(&mut s, t);
        transports::record_line(rows, t.name(), size, p, before, after);
    }
}

fn rtt_group(c: &mut Criterion, size: usize, rows: &mut Vec<Row>) {
    let mut group = c.benchmark_group(format!("rtt-{}", label(size)));
    for t in Transport::ALL {
        for &p in t.placements() {
            let mut session = None;
            let mut hist = Histogram::new();
            // The closure runs once per sample (and during the warm-up): the peer is started
            // on the first run only, and only if the benchmark is not filtered out.
            group.bench_function(id(t, p), |b| {
                let (s, _) = session.get_or_insert_with(|| start(t, size, p));
                b.iter_custom(|n| {
                    s.round_trips(n, &mut hist)
                        .unwrap_or_else(|e| panic!("{} {size} B: {e}", t.name()))
                });
            });
            finish(rows, session, t, size, p);
            if hist.count() > 0 {
                let l = hist.latency();
                println!(
                    "{:>24}  median {}  p99 {}  p99.9 {}  ({} round trips, warm-up included)",
                    "percentiles:",
                    transports::fmt_ns(l.median_ns as f64),
                    transports::fmt_ns(l.p99_ns as f64),
                    transports::fmt_ns(l.p999_ns as f64),
                    l.samples
                );
                transports::record(rows, t.name(), size, p, Some(l), None);
            }
        }
    }
    group.finish();
}

fn stream_group(c: &mut Criterion, size: usize, rows: &mut Vec<Row>) {
    let mut group = c.benchmark_group(format!("stream-{}", label(size)));
    group.throughput(Throughput::Bytes(size as u64));
    let report = |rows: &mut Vec<Row>, name, p, msgs: u64, time: Duration| {
        if msgs > 0 {
            let rate = msgs as f64 / time.as_secs_f64();
            println!(
                "{:>24}  {} messages/s, {} (mean of {msgs} messages, warm-up included)",
                "throughput:",
                transports::fmt_rate(rate, ""),
                transports::fmt_rate(rate * size as f64, "B/s"),
            );
            transports::record(rows, name, size, p, None, Some(rate));
        }
    };
    for t in Transport::ALL {
        for &p in t.placements() {
            let mut session = None;
            let (mut msgs, mut time) = (0u64, Duration::ZERO);
            group.bench_function(id(t, p), |b| {
                let (s, _) = session.get_or_insert_with(|| start(t, size, p));
                b.iter_custom(|n| {
                    let d = s
                        .stream(n)
                        .unwrap_or_else(|e| panic!("{} {size} B: {e}", t.name()));
                    msgs += n;
                    time += d;
                    d
                });
            });
            finish(rows, session, t, size, p);
            report(rows, t.name(), p, msgs, time);
        }
    }
    let (mut msgs, mut time) = (0u64, Duration::ZERO);
    group.bench_function("memcpy-2x", |b| {
        let _ = transports::place_self(Placement::Pinned);
        b.iter_custom(|n| {
            let d = transports::memcpy_reference(size, n);
            msgs += n;
            time += d;
            d
        });
    });
    report(rows, "memcpy-2x", Placement::Pinned, msgs, time);
    group.finish();
}

/// "8B", "64B", "1KiB", "64KiB": group names without spaces.
fn label(size: usize) -> String {
    transports::fmt_size(size).replace(' ', "")
}
