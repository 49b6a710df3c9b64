//! `shmpipe bench`, run as a user would (the real binary):
//!
//! - `--json` with a tiny duration and one size prints an array with one object per transport,
//!   every transport present, the documented fields numbers (or strings) that agree with each
//!   other;
//! - the output says how busy the machine was (JSON fields on every object, a line of the
//!   table), whatever it was;
//! - usage errors exit with status 2 and print nothing on standard output;
//! - neither a finished run nor one interrupted by SIGINT leaves a shared-memory segment or a
//!   peer process behind;
//! - `--latency` gives one object per transport and rate with ordered percentiles, as many
//!   messages as the rate and duration say, and its runs; `--runs` gives every run.
//! - with the `iceoryx2` feature, its rows are measured, and neither a finished run nor the
//!   next run after an interrupted one leaves an iceoryx2 file behind.
//!
//! Nothing about speed is asserted: the machine may be busy.

use std::collections::HashSet;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The JSON reader of `examples/plot_bench`, which reads the same output.
#[path = "../examples/plot_bench/json.rs"]
mod json;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_shmpipe");

/// No command may take longer, whatever goes wrong.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The transports `--json` must name.
const TRANSPORTS: [&str; 8] = [
    "reference",
    "shmpipe-spin",
    "shmpipe-batch",
    "shmpipe",
    "pipe",
    "unix-stream",
    "unix-seqpacket",
    "tcp",
];

/// Waits for `child`, killing it after [`TIMEOUT`]; returns its status, stdout and stderr.
fn finish(mut child: Child) -> (ExitStatus, String, String) {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let status = wait_bounded(&mut child, "shmpipe bench took too long");
    let out = out.join().expect("reader").expect("stdout is UTF-8");
    let err = err.join().expect("reader").expect("stderr is UTF-8");
    (status, out, err)
}

/// Starts `shmpipe ARGS` with its output piped (for [`finish`]).
fn spawn_bench(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shmpipe bench")
}

/// Runs `shmpipe ARGS` to its end (bounded by [`TIMEOUT`]); returns its status, stdout and
/// stderr.
fn run_bench(args: &[&str]) -> (ExitStatus, String, String) {
    finish(spawn_bench(args))
}

/// Runs `shmpipe ARGS`, failing the test unless it succeeds; returns its stdout and stderr.
fn run_ok(args: &[&str]) -> (String, String) {
    let (status, out, err) = run_bench(args);
    assert!(status.success(), "shmpipe bench failed ({status}): {err}");
    (out, err)
}

/// Waits for a `--json` run started with [`spawn_bench`], failing the test unless it succeeds
/// and prints a JSON array; returns the array's objects, and the run's stdout and stderr.
fn json_of(child: Child) -> (Vec<json::Json>, String, String) {
    let (status, out, err) = finish(child);
    assert!(status.success(), "shmpipe bench failed ({status}): {err}");
    let v = json::parse(&out).unwrap_or_else(|e| panic!("{e} in:\n{out}"));
    let items = v.as_array().expect("a JSON array").to_vec();
    (items, out, err)
}

/// The number `o` has at `k`, failing the test if it has none.
fn num(o: &json::Json, k: &str) -> f64 {
    o.get(k)
        .and_then(json::Json::as_f64)
        .unwrap_or_else(|| panic!("{k} is not a number in {o:?}"))
}

/// Waits for `child` to end; after [`TIMEOUT`], kills it and fails the test with `what`.
fn wait_bounded(child: &mut Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} (over {TIMEOUT:?})");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends SIGINT to `child` and waits for it to end (bounded by [`TIMEOUT`]).
fn interrupt(child: &mut Child) -> ExitStatus {
    // SAFETY: kill with a valid signal number has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    wait_bounded(child, "shmpipe bench ignored SIGINT")
}

/// The shmids of the segments that process `pid` created (`/proc/sysvipc/shm`: cpid).
fn segments_created_by(pid: u32) -> Vec<i32> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").expect("read /proc/sysvipc/shm");
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            let (shmid, cpid) = (f.get(1)?.parse().ok()?, f.get(4)?.parse::<u32>().ok()?);
            (cpid == pid).then_some(shmid)
        })
        .collect()
}

/// Whether `pid` is a live (not zombie) benchmark peer, `shmpipe __bench-peer ...`.
fn is_live_peer(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    matches!(state_and_parent(pid), Some((s, _)) if s != 'Z')
        && cmdline.split(|&b| b == 0).any(|arg| arg == b"__bench-peer")
}

/// The live benchmark peers whose parent is `pid`.
fn peers_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if state_and_parent(child).is_some_and(|(_, ppid)| ppid == pid) && is_live_peer(child) {
            out.push(child);
        }
    }
    out
}

/// A process's state letter and parent, from `/proc/PID/stat` (None once it is gone).
fn state_and_parent(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold anything, so split after its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace();
    let state = f.next()?.chars().next()?;
    Some((state, f.next()?.parse().ok()?))
}

/// Waits up to 5 s for `cond`.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Every object, and every placement in it, carries the line probes taken around its
/// measurement: one-way times between 0 and 1 ms (null only with one CPU, where nothing is
/// probed) and a `cache` label from the documented set; the table has their columns.
#[test]
fn results_carry_the_line_probes_and_their_cache_label() {
    let args = [
        "bench",
        "--quick",
        "--json",
        "--transports",
        "shmpipe",
        "--sizes",
        "64",
    ];
    let (items, out, _) = json_of(spawn_bench(&args));
    assert_eq!(items.len(), 1, "{out}");
    let two_cpus = std::thread::available_parallelism().unwrap().get() >= 2;
    let check = |o: &json::Json| {
        let cache = o.get("cache").and_then(json::Json::as_str);
        assert!(
            matches!(cache, Some("shared" | "split" | "changed" | "unknown")),
            "cache = {cache:?} in {o:?}"
        );
        for k in ["line_ns_before", "line_ns_after"] {
            match o.get(k) {
                Some(json::Json::Null) if !two_cpus => {}
                Some(x) => {
                    let ns = x.as_f64().unwrap_or_else(|| panic!("{k} = {x:?}"));
                    assert!(ns > 0.0 && ns < 1e6, "{k} = {ns}");
                }
                None => panic!("no {k} in {o:?}"),
            }
        }
        if two_cpus {
            assert_ne!(cache, Some("unknown"), "{o:?}");
        }
    };
    for item in &items {
        check(item);
        let placements = item.get("placements").and_then(json::Json::as_array);
        for p in placements.expect("placements") {
            check(p);
        }
    }
    let table_args: Vec<&str> = args.iter().copied().filter(|a| *a != "--json").collect();
    let (table, _) = run_ok(&table_args);
    assert!(
        table.contains("line ns") && table.contains("cache: shared below"),
        "{table}"
    );
}

/// `--quick --json` (two transports, one size, to stay short) carries the machine's load in
/// every object, agreeing with `/proc`; the table says it in its header.
#[test]
fn output_says_how_busy_the_machine_was() {
    let args = [
        "bench",
        "--quick",
        "--sizes",
        "64",
        "--transports",
        "shmpipe,pipe",
    ];
    let (items, out, err) = json_of(spawn_bench(&[&args[..], &["--json"]].concat()));
    assert_eq!(items.len(), 2, "{out}");
    let cpus = std::thread::available_parallelism().unwrap().get() as f64;
    for item in &items {
        assert_eq!(num(item, "cpus"), cpus);
        assert!(num(item, "load_1min") >= 0.0);
        let others = num(item, "others_cpu_percent");
        assert!((0.0..=100.0).contains(&others), "{others}");
        let busy = match item.get("busy") {
            Some(json::Json::Bool(b)) => *b,
            other => panic!("busy is {other:?}"),
        };
        assert_eq!(busy, others > 10.0, "{item:?}");
        // A busy run says so on stderr as well, where a JSON consumer's user sees it.
        assert_eq!(busy, err.contains("WARNING: the machine was busy"), "{err}");
    }
    let (table, _) = run_ok(&args);
    assert!(
        table.contains("Machine: load average") && table.contains("other processes used"),
        "{table}"
    );
}

#[test]
fn json_names_every_transport_with_numbers() {
    let child = spawn_bench(&["bench", "--json", "--duration", "5ms", "--sizes", "64"]);
    let pid = child.id();
    let (items, out, _) = json_of(child);
    let mut names = HashSet::new();
    for item in &items {
        let name = item
            .get("transport")
            .and_then(json::Json::as_str)
            .unwrap_or_else(|| panic!("no transport name in {item:?}"));
        assert!(names.insert(name.to_string()), "{name} twice");
        assert_eq!(num(item, "size"), 64.0, "{name}");
        for k in [
            "rtt_ns_median",
            "rtt_ns_p99",
            "rtt_ns_p999",
            "msgs_per_s",
            "bytes_per_s",
        ] {
            let x = num(item, k);
            assert!(x.is_finite() && x > 0.0, "{name}: {k} = {x}");
        }
        for k in ["rtt_ns_median", "rtt_ns_p99", "rtt_samples"] {
            assert_eq!(
                num(item, k).fract(),
                0.0,
                "{name}: {k} is a whole number of ns"
            );
        }
        assert!(
            num(item, "rtt_ns_p99") >= num(item, "rtt_ns_median"),
            "{name}"
        );
        let (msgs, bytes) = (num(item, "msgs_per_s"), num(item, "bytes_per_s"));
        assert!(
            (bytes - msgs * 64.0).abs() <= 1e-6 * bytes + 1.0,
            "{name}: {msgs} msgs/s, {bytes} B/s"
        );
        for k in ["rtt_placement", "stream_placement"] {
            let p = item.get(k).and_then(json::Json::as_str);
            assert!(
                matches!(p, Some("pinned" | "unpinned")),
                "{name}: {k} = {p:?}"
            );
        }
        if name == "pipe" {
            assert_eq!(num(item, "rtt_vs_pipe"), 1.0);
            assert_eq!(num(item, "msgs_vs_pipe"), 1.0);
        }
    }
    for t in TRANSPORTS {
        assert!(names.contains(t), "{t} missing from:\n{out}");
    }
    // Built with the feature, iceoryx2 is one of "all" (the tests below look at it closer).
    let iceoryx2 = cfg!(feature = "iceoryx2");
    assert_eq!(names.contains("iceoryx2"), iceoryx2, "{names:?}");
    assert!(
        names.iter().all(|n| TRANSPORTS.contains(&n.as_str())
            || n == "thread-ring"
            || (iceoryx2 && n == "iceoryx2")),
        "unknown transports in {names:?}"
    );
    assert!(
        eventually(|| segments_created_by(pid).is_empty()),
        "segments left: {:?}",
        segments_created_by(pid)
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        ["bench", "--sizes", "4"],
        ["bench", "--sizes", "1M"],
        ["bench", "--transports", "udp"],
        ["bench", "--duration", "fast"],
        ["bench", "--ring-bytes", "3M"],
        ["bench", "--rates", "1M"],
        ["bench", "--runs", "0"],
    ] {
        let (status, out, err) = run_bench(&args);
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} printed {out:?}");
    }
}

#[test]
fn an_interrupted_run_leaves_no_segment_and_no_peer() {
    use std::os::unix::process::ExitStatusExt;
    // Long sessions of the transports that use segments, so the signal comes mid-session.
    let args = [
        "bench",
        "--duration",
        "300ms",
        "--sizes",
        "64K",
        "--transports",
        "shmpipe-spin,shmpipe-batch,shmpipe",
    ];
    let made = |pid| !segments_created_by(pid).is_empty();
    let (pid, status) = interrupt_mid_session(&args, made, "segment");
    assert!(
        status.signal() == Some(libc::SIGINT) || status.success(),
        "unexpected status {status}"
    );
    assert!(
        eventually(|| segments_created_by(pid).is_empty()),
        "segments left: {:?}",
        segments_created_by(pid)
    );
}

/// Starts `shmpipe ARGS`, sends it SIGINT once it runs a peer and `made(its pid)` holds (it
/// made a segment or a file), and checks that no peer outlives it; returns its pid and status.
/// `what` names what `made` looks for, for the failure message.
fn interrupt_mid_session(
    args: &[&str],
    made: impl Fn(u32) -> bool,
    what: &str,
) -> (u32, ExitStatus) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shmpipe bench");
    let pid = child.id();
    let mut peers = Vec::new();
    let found = eventually(|| {
        peers = peers_of(pid);
        !peers.is_empty() && made(pid)
    });
    let status = interrupt(&mut child);
    assert!(found, "no peer or {what} seen while shmpipe bench ran");
    for peer in peers {
        assert!(eventually(|| !is_live_peer(peer)), "peer {peer} still runs");
    }
    (pid, status)
}

/// The cache label of an object or run, and its line probes: each a positive time, or null
/// when the probe gave up (one CPU, or a machine too busy to answer within its patience), and
/// then the label must not claim a placement unless the other probe saw both.
fn check_probes(o: &json::Json) {
    let cache = o.get("cache").and_then(json::Json::as_str);
    assert!(
        matches!(cache, Some("shared" | "split" | "changed" | "unknown")),
        "cache = {cache:?} in {o:?}"
    );
    let mut gave_up = false;
    for k in ["line_ns_before", "line_ns_after"] {
        match o.get(k) {
            Some(json::Json::Null) => gave_up = true,
            Some(x) => assert!(x.as_f64().is_some_and(|ns| ns > 0.0), "{k} = {x:?}"),
            None => panic!("no {k} in {o:?}"),
        }
    }
    if gave_up {
        assert!(
            matches!(cache, Some("unknown" | "changed")),
            "a probe gave up, yet cache = {cache:?} in {o:?}"
        );
    }
}

/// `--latency --json`: one object per transport and rate; the percentiles in order; the count
/// what the rate and the duration (40 ms with `--quick`) make; the ratio to the round trip
/// what the two figures give; one run, itself with the same figures and probes.
#[test]
fn latency_json_has_every_transport_and_rate() {
    let args = [
        "bench",
        "--quick",
        "--latency",
        "--transports",
        "reference,shmpipe-spin",
        "--sizes",
        "64",
        "--json",
    ];
    let (items, out, _) = json_of(spawn_bench(&args));
    let mut seen = HashSet::new();
    for item in &items {
        let name = item.get("transport").and_then(json::Json::as_str).unwrap();
        let rate = num(item, "rate");
        assert!(
            seen.insert((name.to_string(), rate as u64)),
            "{name} {rate} twice"
        );
        assert_eq!(num(item, "size"), 64.0);
        let figures = |o: &json::Json| {
            let p: Vec<f64> = [
                "latency_ns_p50",
                "latency_ns_p99",
                "latency_ns_p999",
                "latency_ns_max",
            ]
            .iter()
            .map(|k| num(o, k))
            .collect();
            assert!(p.windows(2).all(|w| w[0] <= w[1]), "{name}: {p:?}");
            assert_eq!(num(o, "count"), rate * 0.04, "{name} at {rate}/s");
            let rtt = num(o, "rtt_ns_median");
            assert!(rtt > 0.0);
            let ratio = num(o, "p50_over_rtt_median");
            assert!(
                (ratio - p[0] / rtt).abs() <= 1e-3 + 1e-6 * ratio,
                "{ratio} {p:?} {rtt}"
            );
            check_probes(o);
        };
        figures(item);
        let runs = item
            .get("runs")
            .and_then(json::Json::as_array)
            .expect("runs");
        assert_eq!(runs.len(), 1, "{item:?}");
        figures(&runs[0]);
        assert!(
            item.get("p50_spread")
                .and_then(json::Json::as_array)
                .is_some()
        );
        assert!(item.get("others_cpu_percent").is_some(), "load fields");
    }
    let want: HashSet<(String, u64)> = ["reference", "shmpipe-spin"]
        .iter()
        .flat_map(|t| [(t.to_string(), 100_000), (t.to_string(), 1_000_000)])
        .collect();
    assert_eq!(seen, want, "{out}");
}

/// `--runs 2` with `--ring-bytes`: the JSON carries both runs of each placement, each with its
/// own probes, and the spread per cache placement; the table has its spread column.
#[test]
fn runs_are_each_reported_with_their_placement() {
    let args = [
        "bench",
        "--quick",
        "--runs",
        "2",
        "--ring-bytes",
        "4M",
        "--transports",
        "reference,shmpipe-batch",
        "--sizes",
        "64",
    ];
    let (items, out, _) = json_of(spawn_bench(&[&args[..], &["--json"]].concat()));
    assert_eq!(items.len(), 2, "{out}");
    for item in &items {
        assert_eq!(
            item.get("run_count").and_then(json::Json::as_f64),
            Some(2.0)
        );
        for p in item
            .get("placements")
            .and_then(json::Json::as_array)
            .unwrap()
        {
            let runs = p.get("runs").and_then(json::Json::as_array).expect("runs");
            assert_eq!(runs.len(), 2, "{p:?}");
            for r in runs {
                check_probes(r);
                for k in ["rtt_ns_median", "msgs_per_s"] {
                    assert!(
                        r.get(k)
                            .and_then(json::Json::as_f64)
                            .is_some_and(|x| x > 0.0)
                    );
                }
            }
            for k in ["rtt_spread", "stream_spread"] {
                for s in p.get(k).and_then(json::Json::as_array).expect(k) {
                    let ratio = s.get("ratio").and_then(json::Json::as_f64).unwrap();
                    assert!(ratio >= 1.0, "{s:?}");
                }
            }
        }
    }
    let (table, _) = run_ok(&args);
    assert!(
        table.contains("spread") && table.contains("median run"),
        "{table}"
    );
}

/// The `iceoryx2` transport (cargo feature `iceoryx2`, docs/BENCHMARKS.md).
#[cfg(feature = "iceoryx2")]
mod iceoryx2 {
    use super::*;

    /// The files a measuring process `pid`'s iceoryx2 sessions made: its root directories
    /// (in the temporary directory) and its objects in `/dev/shm`, by their documented names.
    fn files_of(pid: u32) -> Vec<String> {
        let root = format!("shmpipe-bench-iceoryx2-{pid}-");
        let shm = format!("shmpipe_bench_{pid}_");
        let mut out = Vec::new();
        for (dir, start) in [(std::env::temp_dir(), root), ("/dev/shm".into(), shm)] {
            for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&start) {
                    out.push(format!("{}/{name}", dir.display()));
                }
            }
        }
        out
    }

    /// `--quick --json` of iceoryx2 alone: its row, with numbers, and no file left.
    #[test]
    fn iceoryx2_is_measured_and_leaves_no_file() {
        let child = spawn_bench(&[
            "bench",
            "--quick",
            "--json",
            "--transports",
            "iceoryx2",
            "--sizes",
            "64",
        ]);
        let pid = child.id();
        let (items, out, _) = json_of(child);
        assert_eq!(items.len(), 1, "{out}");
        let item = &items[0];
        assert_eq!(
            item.get("transport").and_then(json::Json::as_str),
            Some("iceoryx2")
        );
        assert_eq!(num(item, "size"), 64.0);
        for k in ["rtt_ns_median", "rtt_ns_p99", "msgs_per_s", "bytes_per_s"] {
            assert!(num(item, k) > 0.0, "{k} in {item:?}");
        }
        assert!(num(item, "rtt_samples") >= 16.0, "{item:?}");
        assert_eq!(files_of(pid), Vec::<String>::new());
    }

    /// An iceoryx2 session interrupted by SIGINT leaves its files (nothing runs to remove
    /// them), and the next iceoryx2 run removes them; no peer is left either.
    #[test]
    fn the_next_run_removes_what_an_interrupted_one_left() {
        let args = [
            "bench",
            "--duration",
            "2s",
            "--sizes",
            "64K",
            "--transports",
            "iceoryx2",
        ];
        let made = |pid| !files_of(pid).is_empty();
        let (pid, _) = interrupt_mid_session(&args, made, "iceoryx2 file");
        assert!(!files_of(pid).is_empty(), "SIGINT left nothing to clean up");
        run_ok(&[
            "bench",
            "--quick",
            "--transports",
            "iceoryx2",
            "--sizes",
            "8",
        ]);
        assert_eq!(files_of(pid), Vec::<String>::new());
    }
}
