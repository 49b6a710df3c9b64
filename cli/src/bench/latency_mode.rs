//! `shmpipe bench --latency`: one-way latency at fixed send rates (the method is in
//! `transports::latency`), with each session's round-trip median beside it, as a table or JSON.
//!
//! Each (transport, size) gets a session per run, pinned like the other measurements and
//! framed by two line probes: round trips (for the median), then for each rate a warm-up run of
//! a fifth of the duration (thrown away) and a run of the duration.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use super::transports::latency::messages_in;
use super::transports::runs::{self, median_by};
use super::transports::{self, Cache, Histogram, Latency, Placement, Session, Transport};
use super::{
    CliError, json_line, json_load, json_number, json_rows, json_runs, json_string, measure_rtt,
};
use crate::load::Load;

/// The transports measured unless `--transports` says otherwise (those that exist).
const DEFAULT_NAMES: [&str; 4] = ["shmpipe-spin", "shmpipe", "reference", "iceoryx2"];

/// What the table's header says about the method.
pub const EXPLANATION: &str = "One-way latency at a fixed rate: the peer sends message i at t0 + i/rate (spinning on \
     the clock), the\nmeasuring side stamps it once read whole; latency = arrival - scheduled \
     time (corrected for coordinated\nomission: a late send is charged to its message). RTT \
     med: the same session's round-trip median.\n";

/// The transports `--latency` measures by default.
pub fn default_transports() -> Vec<Transport> {
    DEFAULT_NAMES
        .iter()
        .filter_map(|n| Transport::from_name(n))
        .collect()
}

/// What to measure.
pub struct Plan {
    pub sizes: Vec<usize>,
    pub transports: Vec<Transport>,
    pub rates: Vec<u64>,
    pub runs: u32,
    pub warm_up: Duration,
    pub duration: Duration,
    pub ring: Option<usize>,
}

/// One run of one (transport, size, rate).
#[derive(Clone, Copy, Debug)]
pub struct LatencyRun {
    /// The one-way latencies.
    pub latency: Latency,
    /// The session's round-trip median, ns.
    pub rtt_median_ns: u64,
    /// The session's line probes (one-way ns).
    pub before: Option<f64>,
    pub after: Option<f64>,
}

impl LatencyRun {
    fn cache(&self) -> Cache {
        Cache::over([self.before, self.after])
    }
}

/// Every run of one (transport, size, rate).
pub struct LatencyRow {
    pub name: &'static str,
    pub size: usize,
    pub rate: u64,
    pub placement: Placement,
    pub runs: Vec<LatencyRun>,
}

impl LatencyRow {
    /// The median run, by p50.
    fn median(&self) -> Option<LatencyRun> {
        median_by(self.runs.iter().copied(), |r| r.latency.median_ns as f64)
    }

    /// The spread of the runs' p50 per cache placement.
    fn spread(&self) -> Vec<runs::Spread> {
        runs::spread(
            self.runs
                .iter()
                .map(|r| (r.cache(), r.latency.median_ns as f64)),
        )
    }

    /// What all the runs' probes show.
    fn cache(&self) -> Cache {
        Cache::over(self.runs.iter().flat_map(|r| [r.before, r.after]))
    }
}

impl Plan {
    /// Measures everything; rows in the order size, transport, rate.
    pub fn run(&self) -> Result<Vec<LatencyRow>, CliError> {
        let progress = std::io::stderr().is_terminal();
        let placement = if transports::cpu_pair().is_some() {
            Placement::Pinned
        } else {
            Placement::Unpinned
        };
        let mut rows: Vec<LatencyRow> = Vec::new();
        let sessions = self.sizes.len() * self.transports.len() * self.runs as usize;
        let mut i = 0;
        for &size in &self.sizes {
            for &t in &self.transports {
                let first = rows.len();
                for &rate in &self.rates {
                    rows.push(LatencyRow {
                        name: t.name(),
                        size,
                        rate,
                        placement,
                        runs: Vec::new(),
                    });
                }
                for _ in 0..self.runs {
                    i += 1;
                    if progress {
                        eprint!(
                            "\r\x1b[K[{i}/{sessions}] {} {} latency",
                            t.name(),
                            transports::fmt_size(size)
                        );
                    }
                    let runs = self.session(t, size, placement).map_err(|e| {
                        CliError::new(format!(
                            "bench --latency: {} {}: {e}",
                            t.name(),
                            transports::fmt_size(size)
                        ))
                    })?;
                    for (row, run) in rows[first..].iter_mut().zip(runs) {
                        row.runs.push(run);
                    }
                }
            }
        }
        if progress {
            eprint!("\r\x1b[K");
        }
        Ok(rows)
    }

    /// One session: a probe, round trips, each rate, a probe; one run per rate.
    fn session(
        &self,
        t: Transport,
        size: usize,
        placement: Placement,
    ) -> transports::Res<Vec<LatencyRun>> {
        let mut session = Session::start(t, size, placement, self.ring)?;
        let before = session.probe_line()?;
        let rtt = measure_rtt(&mut session, self.warm_up, self.duration)?;
        let mut out = Vec::new();
        for &rate in &self.rates {
            let mut warm = Histogram::new();
            session.fixed_rate(messages_in(self.warm_up, rate), rate, &mut warm)?;
            let mut hist = Histogram::new();
            session.fixed_rate(messages_in(self.duration, rate), rate, &mut hist)?;
            out.push(hist.latency());
        }
        let after = session.probe_line()?;
        Ok(out
            .into_iter()
            .map(|latency| LatencyRun {
                latency,
                rtt_median_ns: rtt.median_ns,
                before,
                after,
            })
            .collect())
    }
}

/// `x / y` with two decimals and an x, or `-`.
fn ratio(x: f64, y: f64) -> String {
    if y > 0.0 {
        format!("{:.2}x", x / y)
    } else {
        "-".to_string()
    }
}

/// The latency table: one line per (size, transport, rate).
pub fn table(rows: &[LatencyRow]) -> String {
    let in_runs = rows.iter().any(|r| r.runs.len() > 1);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<15} {:>7} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10} {:>8} {:>8}{} {:>9} cache",
        "size",
        "transport",
        "rate",
        "p50",
        "p99",
        "p99.9",
        "max",
        "count",
        "RTT med",
        "p50/RTT",
        "p99/p50",
        if in_runs {
            format!(" {:>7}", "spread")
        } else {
            String::new()
        },
        "line ns",
    );
    let mut last_size = None;
    for row in rows {
        let Some(m) = row.median() else { continue };
        let l = m.latency;
        let line = |x: Option<f64>| x.map_or_else(|| "?".to_string(), |x| format!("{x:.0}"));
        let first = row.runs.first().and_then(|r| r.before);
        let last = row.runs.last().and_then(|r| r.after);
        let spread = if in_runs {
            let s = runs::widest(row.spread()).map_or_else(|| "-".into(), |x| format!("{x:.2}x"));
            format!(" {s:>7}")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:<8} {:<15} {:>7} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10} {:>8} {:>8}{spread} {:>9} {}",
            if last_size == Some(row.size) {
                String::new()
            } else {
                transports::fmt_size(row.size)
            },
            row.name,
            transports::fmt_rate(row.rate as f64, ""),
            transports::fmt_ns(l.median_ns as f64),
            transports::fmt_ns(l.p99_ns as f64),
            transports::fmt_ns(l.p999_ns as f64),
            transports::fmt_ns(l.max_ns as f64),
            l.samples,
            transports::fmt_ns(m.rtt_median_ns as f64),
            ratio(l.median_ns as f64, m.rtt_median_ns as f64),
            ratio(l.p99_ns as f64, l.median_ns as f64),
            format!("{}/{}", line(first), line(last)),
            match row.cache() {
                Cache::Changed => "changed*",
                c => c.name(),
            },
        );
        last_size = Some(row.size);
    }
    out.push_str(
        "p50/RTT: the one-way median over the session's round-trip median (issue #15's target \
         at 1 M/s: at most 0.6x);\np99/p50: at most 3x. line ns, cache: as in the round-trip \
         table (probed before/after each session).\n",
    );
    if in_runs {
        out.push_str(
            "Several runs: each line is the median run (by p50); spread: the slowest run's p50 \
             over the fastest's within one\ncache placement.\n",
        );
    }
    out
}

/// The latency results as a JSON array: one object per (transport, size, rate), figures of the
/// median run, and every run under `runs` (docs/BENCHMARKS.md lists the fields).
pub fn json(rows: &[LatencyRow], load: Option<&Load>) -> String {
    let figures = |out: &mut String, r: &LatencyRun| {
        let l = r.latency;
        let _ = write!(
            out,
            ", \"latency_ns_p50\": {}, \"latency_ns_p99\": {}, \"latency_ns_p999\": {}, \
             \"latency_ns_max\": {}, \"count\": {}, \"rtt_ns_median\": {}, \
             \"p50_over_rtt_median\": {}, \"p99_over_p50\": {}",
            l.median_ns,
            l.p99_ns,
            l.p999_ns,
            l.max_ns,
            l.samples,
            r.rtt_median_ns,
            json_number(l.median_ns as f64 / r.rtt_median_ns.max(1) as f64),
            json_number(l.p99_ns as f64 / l.median_ns.max(1) as f64),
        );
    };
    let measured = rows.iter().filter_map(|row| Some((row, row.median()?)));
    json_rows(measured, |out, (row, m)| {
        let _ = write!(
            out,
            "\"transport\": {}, \"size\": {}, \"rate\": {}, \"placement\": {}",
            json_string(row.name),
            row.size,
            row.rate,
            json_string(row.placement.name())
        );
        figures(out, &m);
        let first_probe = row.runs.first().and_then(|r| r.before);
        let last_probe = row.runs.last().and_then(|r| r.after);
        json_line(out, first_probe, last_probe, row.cache());
        json_load(out, load);
        out.push_str(", \"p50_spread\": ");
        super::json_spread(out, &row.spread());
        out.push_str(", \"runs\": ");
        json_runs(out, &row.runs, |out, r| {
            figures(out, r);
            json_line(out, r.before, r.after, r.cache());
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p50: u64, probe: f64) -> LatencyRun {
        LatencyRun {
            latency: Latency {
                median_ns: p50,
                p99_ns: 3 * p50,
                p999_ns: 4 * p50,
                mean_ns: p50 as f64,
                max_ns: 10 * p50,
                samples: 1000,
            },
            rtt_median_ns: 2 * p50,
            before: Some(probe),
            after: Some(probe),
        }
    }

    #[test]
    fn rows_report_the_median_run_and_its_spread() {
        let row = LatencyRow {
            name: "reference",
            size: 64,
            rate: 1_000_000,
            placement: Placement::Pinned,
            runs: vec![
                run(300, 80.0),
                run(100, 80.0),
                run(200, 80.0),
                run(900, 400.0),
            ],
        };
        assert_eq!(row.median().map(|r| r.latency.median_ns), Some(200));
        assert_eq!(row.cache(), Cache::Changed);
        assert_eq!(runs::widest(row.spread()), Some(3.0));
        let text = json(std::slice::from_ref(&row), None);
        let v = crate::bench::tests_json::parse(&text).unwrap();
        let o = &v.as_array().unwrap()[0];
        assert_eq!(
            o.get("latency_ns_p50").and_then(|x| x.as_f64()),
            Some(200.0)
        );
        assert_eq!(
            o.get("p50_over_rtt_median").and_then(|x| x.as_f64()),
            Some(0.5)
        );
        assert_eq!(
            o.get("runs").and_then(|x| x.as_array()).map(<[_]>::len),
            Some(4)
        );
        let t = table(&[row]);
        assert!(
            t.contains("0.50x") && t.contains("3.00x") && t.contains("changed*"),
            "{t}"
        );
    }

    #[test]
    fn the_defaults_are_transports_that_exist() {
        let d = default_transports();
        for t in [
            Transport::ShmpipeSpin,
            Transport::Shmpipe,
            Transport::Reference,
        ] {
            assert!(d.contains(&t), "{d:?}");
        }
    }
}
