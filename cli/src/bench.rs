//! `shmpipe bench`: a quick run of the cross-process benchmarks (round trip and streaming, for
//! each transport and message size), printed as a table with the ratios to a pipe, or as JSON.
//!
//! The measurements themselves are in `transports` (shared with the criterion suite,
//! `benches/ipc.rs`). Here: the command line, how long each measurement runs, and the output.
//! Each (transport, size, placement) gets its own peer process, started by re-executing this
//! binary as `shmpipe __bench-peer SPEC` (a hidden subcommand).
//!
//! Every measurement is a warm-up of a fifth of `--duration`, then runs of growing length until
//! `--duration` has passed; round trips go into one histogram, and the throughput is all the
//! messages streamed over all the time the streams took.
//!
//! Each session is framed by two line probes (`Session::probe_line`), which say whether the
//! two CPUs shared a cache during it, and whether that changed.
//!
//! The machine's load (`crate::load`) is read before and after: the header says what it was,
//! and warns when other processes took enough CPU to make the numbers this run's, not the
//! machine's; the JSON carries it in every object.
//!
//! `--runs N` repeats each session N times (`transports::runs`); `--latency` measures one-way
//! latency at fixed send rates instead (`latency_mode`, engine in `transports::latency`).

mod latency_mode;
/// The JSON reader of `examples/plot_bench`, to check what the tests print.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../examples/plot_bench/json.rs"]
mod tests_json;
mod transports;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use super::CliError;
use crate::load::{self, Load};
use transports::runs::{self, Run};
use transports::{
    Cache, DEFAULT_SIZES, Histogram, MAX_SIZE, MIN_SIZE, Placement, Row, Session, Transport,
};

/// The hidden subcommand that makes this binary a benchmark peer.
pub const PEER_SUBCOMMAND: &str = transports::PEER_ARG;

/// Time per measurement unless `--duration` or `--quick` says otherwise.
const DEFAULT_DURATION: Duration = Duration::from_millis(150);
/// Time per measurement with `--quick`.
const QUICK_DURATION: Duration = Duration::from_millis(40);

/// `shmpipe bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Message sizes in bytes, comma-separated, with an optional K suffix (8 to 64K).
    #[arg(long, value_name = "SIZES", value_delimiter = ',', value_parser = parse_msg_size,
          default_value = "8,64,1K,64K")]
    pub sizes: Vec<usize>,
    /// Only these transports, comma-separated: reference, thread-ring, shmpipe-spin,
    /// shmpipe-batch, shmpipe, pipe, unix-stream, unix-seqpacket, tcp, and iceoryx2 in a build
    /// with the cargo feature `iceoryx2`. [default: all; with --latency: shmpipe-spin, shmpipe,
    /// reference (and iceoryx2)]
    #[arg(long, value_name = "NAMES", value_delimiter = ',', value_parser = parse_transport)]
    pub transports: Vec<Transport>,
    /// How long each measurement runs, after a warm-up of a fifth of it (e.g. 150ms, 1s).
    /// The whole run takes about 140 times this with the default sizes. [default: 150ms]
    #[arg(long, value_name = "TIME", value_parser = parse_duration, conflicts_with = "quick")]
    pub duration: Option<Duration>,
    /// A quicker, noisier run: 40 ms per measurement (about 10 s in all).
    #[arg(long)]
    pub quick: bool,
    /// Print a JSON array, one object per transport and size, instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Bytes of each ring of the shmpipe transports and of `reference`: a power of two, with
    /// an optional K, M or G suffix (e.g. 4M). [default: room for 8 messages, at least 256K]
    #[arg(long, value_name = "BYTES", value_parser = parse_ring_bytes)]
    pub ring_bytes: Option<usize>,
    /// Repeat every measurement this many times, each in a session of its own: the table
    /// shows the median run and the spread within one cache placement, the JSON every run.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
    /// Measure one-way latency at fixed send rates (see --rates) instead of round trips and
    /// streams; the round-trip median of each session is shown beside it.
    #[arg(long)]
    pub latency: bool,
    /// Send rates for --latency, messages per second, comma-separated, with an optional k or
    /// M suffix.
    #[arg(long, value_name = "RATES", value_delimiter = ',', value_parser = parse_rate,
          default_value = "100k,1M", requires = "latency")]
    pub rates: Vec<u64>,
}

/// `shmpipe __bench-peer`.
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// What the measuring process asks of this peer.
    pub spec: String,
}

/// Runs the peer side of one benchmark session.
pub fn peer(a: PeerArgs) -> Result<ExitCode, CliError> {
    transports::peer_main(&a.spec).map_err(|e| CliError::new(format!("bench peer: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `shmpipe bench`.
pub fn bench(a: BenchArgs) -> Result<ExitCode, CliError> {
    transports::init_cpus();
    let started = Instant::now();
    let load_before = load::Sample::now();
    let duration = match (a.duration, a.quick) {
        (Some(d), _) => d,
        (None, true) => QUICK_DURATION,
        (None, false) => DEFAULT_DURATION,
    };
    let warm_up = duration / 5;
    let chosen: Vec<Transport> = if a.transports.is_empty() {
        if a.latency {
            latency_mode::default_transports()
        } else {
            Transport::ALL.to_vec()
        }
    } else {
        Transport::ALL
            .into_iter()
            .filter(|t| a.transports.contains(t))
            .collect()
    };
    let mut sizes = a.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() {
        sizes = DEFAULT_SIZES.to_vec();
    }
    if a.latency {
        let plan = latency_mode::Plan {
            sizes,
            transports: chosen,
            rates: a.rates.clone(),
            runs: a.runs,
            warm_up,
            duration,
            ring: a.ring_bytes,
        };
        let results = plan.run()?;
        let _ = transports::place_self(Placement::Unpinned);
        let load = load_since(load_before);
        let text = if a.json {
            latency_mode::json(&results, load.as_ref())
        } else {
            header(duration, warm_up, started.elapsed(), load.as_ref(), true)
                + &latency_mode::table(&results)
        };
        return print(&text);
    }
    let units: Vec<(usize, Transport, Placement)> = sizes
        .iter()
        .flat_map(|&s| {
            chosen
                .iter()
                .flat_map(move |&t| t.placements().iter().map(move |&p| (s, t, p)))
        })
        .collect();
    let progress = std::io::stderr().is_terminal();
    if progress {
        let estimate = (warm_up + duration) * 2 * units.len() as u32 * a.runs;
        eprintln!(
            "shmpipe bench: {} measurements of {} after {} warm-up, about {:.0} s",
            units.len() * 2 * a.runs as usize,
            fmt_duration(duration),
            fmt_duration(warm_up),
            estimate.as_secs_f64() * 1.1 + 0.5
        );
    }

    let mut rows: Vec<Row> = Vec::new();
    for (i, &(size, t, placement)) in units.iter().enumerate() {
        if progress {
            eprint!(
                "\r\x1b[K[{}/{}] {} {} {}",
                i + 1,
                units.len(),
                t.name(),
                transports::fmt_size(size),
                placement.name()
            );
        }
        let what = || {
            format!(
                "{} {} {}",
                t.name(),
                transports::fmt_size(size),
                placement.name()
            )
        };
        for _ in 0..a.runs {
            let run = measure(t, size, placement, warm_up, duration, a.ring_bytes)
                .map_err(|e| CliError::new(format!("bench: {}: {e}", what())))?;
            runs::record_run(&mut rows, t.name(), size, placement, run);
        }
    }
    // The reference: two memcpy per message in one thread, on the measuring side's CPU.
    for &size in &sizes {
        let _ = transports::place_self(Placement::Pinned);
        let rate = run_for(warm_up, duration, |n, _| {
            Ok(transports::memcpy_reference(size, n))
        })
        .map_err(|e| CliError::new(format!("bench: memcpy reference: {e}")))?;
        transports::record(
            &mut rows,
            "memcpy-2x",
            size,
            Placement::Pinned,
            None,
            Some(rate),
        );
    }
    let _ = transports::place_self(Placement::Unpinned);
    if progress {
        eprint!("\r\x1b[K");
    }
    // Every peer has been reaped, so its CPU time counts as ours.
    let load = load_since(load_before);

    let text = if a.json {
        json(&rows, load.as_ref())
    } else {
        header(duration, warm_up, started.elapsed(), load.as_ref(), false)
            + &transports::table(&rows)
    };
    print(&text)
}

/// Writes the results to standard output.
fn print(text: &str) -> Result<ExitCode, CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| CliError::new(format!("writing the results: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

/// One session: a line probe, round trips, streaming, another line probe.
fn measure(
    t: Transport,
    size: usize,
    placement: Placement,
    warm_up: Duration,
    duration: Duration,
    ring: Option<usize>,
) -> transports::Res<Run> {
    let mut session = Session::start(t, size, placement, ring)?;
    let before = session.probe_line()?;
    let rtt = measure_rtt(&mut session, warm_up, duration)?;
    let rate = run_for(warm_up, duration, |n, _| session.stream(n))?;
    let after = session.probe_line()?;
    Ok(Run {
        rtt: Some(rtt),
        msgs_per_s: Some(rate),
        before,
        after,
    })
}

/// Round trips for `duration` after `warm_up`, whose round trips are thrown away.
fn measure_rtt(
    session: &mut Session,
    warm_up: Duration,
    duration: Duration,
) -> transports::Res<transports::Latency> {
    let (mut warm_hist, mut hist) = (Histogram::new(), Histogram::new());
    run_for(warm_up, duration, |n, warm| {
        session.round_trips(n, if warm { &mut warm_hist } else { &mut hist })
    })?;
    if hist.count() == 0 {
        return Err("no round trip was measured".into());
    }
    Ok(hist.latency())
}

/// Runs `f(n, warm)` (which does `n` things and returns the time they took) for `warm_up` with
/// `warm` true, then for `duration`, with `n` sized so that each call takes about a quarter of
/// the phase (at most what is left of it). Returns the things done per second after the
/// warm-up.
fn run_for(
    warm_up: Duration,
    duration: Duration,
    mut f: impl FnMut(u64, bool) -> transports::Res<Duration>,
) -> transports::Res<f64> {
    let mut per_item = 0.0f64; // seconds, as measured so far
    let mut rate = 0.0;
    for (limit, warm) in [(warm_up, true), (duration, false)] {
        let start = Instant::now();
        let (mut done, mut spent) = (0u64, Duration::ZERO);
        loop {
            let n = if per_item > 0.0 {
                let left = limit.saturating_sub(start.elapsed()).min(limit / 4);
                ((left.as_secs_f64() / per_item) as u64).clamp(16, 1 << 30)
            } else {
                16
            };
            spent += f(n, warm)?;
            done += n;
            per_item = spent.as_secs_f64() / done as f64;
            if start.elapsed() >= limit {
                break;
            }
        }
        rate = done as f64 / spent.as_secs_f64().max(1e-9);
    }
    Ok(rate)
}

/// The lines above the table (of round trips and streams, or of `latency`).
fn header(
    duration: Duration,
    warm_up: Duration,
    took: Duration,
    load: Option<&Load>,
    latency: bool,
) -> String {
    let cpus = match transports::cpu_pair() {
        Some((a, b)) => format!("measuring side on CPU {a}, peer on CPU {b} when pinned"),
        None => "one CPU: nothing pinned, spinning sides yield".to_string(),
    };
    let load = match load {
        Some(l) => format!(
            "Machine: {}.\n{}",
            l.summary(),
            l.warning().map_or(String::new(), |w| w + "\n")
        ),
        None => "Machine: load unknown (/proc not readable).\n".to_string(),
    };
    let what = if latency {
        latency_mode::EXPLANATION
    } else {
        "Round trip: one message there and back, each timed alone. Stream: messages one way, \
         timed to the\npeer's acknowledgement of the last. Every payload byte is written by \
         the sender and read by the receiver.\nmemcpy-2x: fill, copy into a ring-sized buffer, \
         copy out, check, in one thread (a bound for copying APIs).\n"
    };
    format!(
        "shmpipe bench: {cpus}; {} per measurement after {} warm-up; took {:.1} s\n{load}\
         {what}\n",
        fmt_duration(duration),
        fmt_duration(warm_up),
        took.as_secs_f64()
    )
}

/// The machine's load since `before` (None where `/proc` could not be read); if it was busy,
/// says so on stderr (where a JSON consumer's user sees it too).
fn load_since(before: Option<load::Sample>) -> Option<Load> {
    let load = before.zip(load::Sample::now()).map(|(a, b)| a.until(&b));
    if let Some(w) = load.as_ref().and_then(Load::warning) {
        eprintln!("shmpipe bench: {w}");
    }
    load
}

fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The results as a JSON array: one object per transport and size (the `memcpy-2x` reference,
/// which has no round trip, is left out). Each object also says how busy the machine was during
/// the whole run (`load_1min`, `cpus`, `others_cpu_percent`, `busy`; null where `/proc` could
/// not be read).
fn json(rows: &[Row], load: Option<&Load>) -> String {
    use std::fmt::Write as _;
    let pipe = |size: usize| rows.iter().find(|r| r.name == "pipe" && r.size == size);
    let measured = rows
        .iter()
        .filter_map(|row| Some((row, row.best_rtt()?, row.best_stream()?)));
    json_rows(measured, |out, (row, (rtt_at, rtt), (rate_at, rate))| {
        let _ = write!(
            out,
            "\"transport\": {}, \"size\": {}, \"rtt_ns_median\": {}, \"rtt_ns_p99\": {}, \
             \"rtt_ns_p999\": {}, \"rtt_ns_mean\": {}, \"rtt_samples\": {}, \
             \"rtt_placement\": {}, \"msgs_per_s\": {}, \"bytes_per_s\": {}, \
             \"stream_placement\": {}",
            json_string(row.name),
            row.size,
            rtt.median_ns,
            rtt.p99_ns,
            rtt.p999_ns,
            json_number(rtt.mean_ns),
            rtt.samples,
            json_string(rtt_at.name()),
            json_number(rate),
            json_number(rate * row.size as f64),
            json_string(rate_at.name()),
        );
        json_load(out, load);
        if let Some(p) = pipe(row.size) {
            if let (Some((_, p_rtt)), Some((_, p_rate))) = (p.best_rtt(), p.best_stream()) {
                let _ = write!(
                    out,
                    ", \"rtt_vs_pipe\": {}, \"msgs_vs_pipe\": {}",
                    json_number(p_rtt.median_ns as f64 / rtt.median_ns.max(1) as f64),
                    json_number(rate / p_rate),
                );
            }
        }
        if let Some((before, after, cache)) = row.line() {
            json_line(out, before, after, cache);
        }
        out.push_str(", \"placements\": ");
        json_objects(out, &row.measured, |out, m| {
            let _ = write!(out, "\"placement\": {}", json_string(m.placement.name()));
            json_figures(out, m.rtt, m.msgs_per_s);
            if let Some((before, after, cache)) =
                transports::line_summary(m.line_ns.iter().copied())
            {
                json_line(out, before, after, cache);
            }
            out.push_str(", \"rtt_spread\": ");
            json_spread(out, &m.rtt_spread());
            out.push_str(", \"stream_spread\": ");
            json_spread(out, &m.stream_spread());
            out.push_str(", \"runs\": ");
            json_runs(out, &m.runs, |out, r| {
                json_figures(out, r.rtt, r.msgs_per_s);
                json_line(out, r.before, r.after, r.cache());
            });
        });
        let (rtt_spread, stream_spread) = row.spreads();
        let _ = write!(
            out,
            ", \"run_count\": {}, \"rtt_spread\": {}, \"stream_spread\": {}",
            row.measured.iter().map(|m| m.runs.len()).max().unwrap_or(0),
            json_opt(rtt_spread),
            json_opt(stream_spread)
        );
    })
}

/// A JSON array of one object per item, each on a line of its own (the layout of `--json`):
/// `write` writes an item's fields, without the braces.
pub(super) fn json_rows<T>(
    items: impl IntoIterator<Item = T>,
    mut write: impl FnMut(&mut String, T),
) -> String {
    let mut out = String::from("[");
    let mut first = true;
    for item in items {
        out.push_str(if first { "\n  {" } else { ",\n  {" });
        first = false;
        write(&mut out, item);
        out.push('}');
    }
    out.push_str(if first { "]\n" } else { "\n]\n" });
    out
}

/// A JSON array of objects on one line, `[{...}, {...}]`: `write` writes an item's fields,
/// without the braces.
fn json_objects<T>(
    out: &mut String,
    items: impl IntoIterator<Item = T>,
    mut write: impl FnMut(&mut String, T),
) {
    out.push('[');
    for (i, item) in items.into_iter().enumerate() {
        out.push_str(if i == 0 { "{" } else { ", {" });
        write(out, item);
        out.push('}');
    }
    out.push(']');
}

/// The runs of a measurement, `[{"run": 1, ...}, ...]`: `write` writes a run's other fields.
pub(super) fn json_runs<T>(out: &mut String, runs: &[T], mut write: impl FnMut(&mut String, &T)) {
    json_objects(out, runs.iter().enumerate(), |out, (i, r)| {
        out.push_str(&format!("\"run\": {}", i + 1));
        write(out, r);
    });
}

/// The figures of a placement, or of one run of it, where measured: the round trip's median
/// and p99, the stream's rate.
fn json_figures(out: &mut String, rtt: Option<transports::Latency>, msgs_per_s: Option<f64>) {
    if let Some(l) = rtt {
        out.push_str(&format!(
            ", \"rtt_ns_median\": {}, \"rtt_ns_p99\": {}",
            l.median_ns, l.p99_ns
        ));
    }
    if let Some(r) = msgs_per_s {
        out.push_str(&format!(", \"msgs_per_s\": {}", json_number(r)));
    }
}

/// The machine's load fields (null where `/proc` could not be read).
fn json_load(out: &mut String, load: Option<&Load>) {
    match load {
        Some(l) => out.push_str(&format!(
            ", \"load_1min\": {}, \"cpus\": {}, \"others_cpu_percent\": {}, \"busy\": {}",
            json_number(l.load_1min),
            l.cpus,
            json_number(l.others_percent),
            l.busy()
        )),
        None => out.push_str(
            ", \"load_1min\": null, \"cpus\": null, \"others_cpu_percent\": null, \
             \"busy\": null",
        ),
    }
}

/// A number, or null.
fn json_opt(x: Option<f64>) -> String {
    x.map_or_else(|| "null".to_string(), json_number)
}

/// The spreads of runs, per cache placement: `[{"cache": .., "runs": .., "ratio": ..}]`.
fn json_spread(out: &mut String, spreads: &[runs::Spread]) {
    json_objects(out, spreads, |out, s| {
        out.push_str(&format!(
            "\"cache\": {}, \"runs\": {}, \"ratio\": {}",
            json_string(s.cache.name()),
            s.runs,
            json_number(s.ratio)
        ));
    });
}

/// The line probe fields: `cache` and the one-way ns before and after (null if not taken).
fn json_line(out: &mut String, before: Option<f64>, after: Option<f64>, cache: Cache) {
    out.push_str(&format!(
        ", \"cache\": {}, \"line_ns_before\": {}, \"line_ns_after\": {}",
        json_string(cache.name()),
        json_opt(before),
        json_opt(after)
    ));
}

/// A JSON number: finite, with at most 3 decimals (non-finite values, which cannot occur from
/// a completed measurement, become 0).
fn json_number(x: f64) -> String {
    if !x.is_finite() {
        return "0".to_string();
    }
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// A JSON string literal (also for `stat --json`).
pub(super) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Parses a message size: bytes, with an optional K suffix ("64", "1K", "64KiB").
fn parse_msg_size(s: &str) -> Result<usize, String> {
    let (n, shift) = super::size_parts(s, 10, "K", "64, 1K")?;
    let bytes = usize::try_from(n.saturating_mul(1 << shift)).unwrap_or(usize::MAX);
    if !(MIN_SIZE..=MAX_SIZE).contains(&bytes) {
        return Err(format!(
            "{s:?}: message sizes go from {MIN_SIZE} bytes to 64K"
        ));
    }
    Ok(bytes)
}

/// Parses a ring size: a power of two from 4 KiB to 1 GiB, with an optional K, M or G suffix
/// ("4M", "262144", "256KiB").
fn parse_ring_bytes(s: &str) -> Result<usize, String> {
    let (n, shift) = super::size_parts(s, 30, "K, M or G", "256K, 4M")?;
    n.checked_mul(1 << shift)
        .filter(|b| b.is_power_of_two() && (4 << 10..=1 << 30).contains(b))
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("{s:?}: ring sizes are powers of two from 4K to 1G"))
}

/// Parses a send rate: messages per second, with an optional k or M suffix ("100k", "1M").
fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, scale) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'M')) => (&t[..i], 1e6),
        _ => (t, 1.0),
    };
    let x: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a rate (e.g. 100k, 1M)"))?;
    let rate = x * scale;
    if !(1.0..=1e9).contains(&rate) {
        return Err(format!("{s:?}: rates go from 1 to 1G messages/s"));
    }
    Ok(rate.round() as u64)
}

/// Parses a transport name.
fn parse_transport(s: &str) -> Result<Transport, String> {
    Transport::from_name(s.trim()).ok_or_else(|| {
        let names: Vec<&str> = Transport::ALL.iter().map(|t| t.name()).collect();
        format!("{s:?} is not a transport ({})", names.join(", "))
    })
}

/// Parses a duration: a number with ms or s ("150ms", "1s", "0.5s"); a bare number is ms.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1e-3)
    };
    let x: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 150ms, 1s)"))?;
    let secs = x * scale;
    if !(0.001..=600.0).contains(&secs) {
        return Err(format!("{s:?}: give 1ms to 600s"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse() {
        assert_eq!(parse_msg_size("64"), Ok(64));
        assert_eq!(parse_msg_size("1K"), Ok(1024));
        assert_eq!(parse_msg_size("64KiB"), Ok(65536));
        assert!(parse_msg_size("4").is_err());
        assert!(parse_msg_size("128K").is_err());
        assert!(parse_msg_size("1M").is_err());
        assert_eq!(parse_duration("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_millis(5)));
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_transport("tcp"), Ok(Transport::Tcp));
        assert_eq!(parse_transport("reference"), Ok(Transport::Reference));
        assert_eq!(parse_ring_bytes("4M"), Ok(4 << 20));
        assert_eq!(parse_ring_bytes("256KiB"), Ok(256 << 10));
        assert_eq!(parse_ring_bytes("65536"), Ok(65536));
        assert!(parse_ring_bytes("3M").is_err(), "not a power of two");
        assert!(parse_ring_bytes("1K").is_err(), "too small");
        assert!(parse_ring_bytes("2G").is_err(), "too large");
        assert!(parse_ring_bytes("99999999999999999999G").is_err());
        assert_eq!(parse_rate("100k"), Ok(100_000));
        assert_eq!(parse_rate("1M"), Ok(1_000_000));
        assert_eq!(parse_rate("2.5M"), Ok(2_500_000));
        assert_eq!(parse_rate("750"), Ok(750));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_transport("udp").is_err());
    }

    #[test]
    fn json_is_escaped_and_numbers_are_plain() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        assert_eq!(json_number(1.5), "1.5");
        assert_eq!(json_number(2.0), "2");
        assert_eq!(json_number(1234567.891), "1234567.891");
        assert_eq!(json_number(f64::NAN), "0");
    }
}
