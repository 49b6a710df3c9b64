//! Repeated runs (`shmpipe bench --runs N`): each measurement is taken N times, each run in a
//! session of its own framed by its own line probes, so each run has its own cache placement.
//! The figure reported is the median run; the spread is the slowest run over the fastest
//! within one placement (issue #15's target: at most 1.5x over five runs), never across
//! placements, and never counting a run whose placement changed while it ran.

use super::{Cache, Latency, Measured, Placement, Row, record, record_line};

/// What one run (one session) measured.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// Round-trip times.
    pub rtt: Option<Latency>,
    /// Streaming throughput, messages per second.
    pub msgs_per_s: Option<f64>,
    /// The line probes before and after the run (one-way ns; `None` if not taken).
    pub before: Option<f64>,
    /// See `before`.
    pub after: Option<f64>,
}

impl Run {
    /// The cache placement the run's probes show.
    pub fn cache(&self) -> Cache {
        Cache::over([self.before, self.after])
    }
}

/// Adds a run to the entry of (`name`, `size`, `placement`) in `rows`: its probes are added,
/// and the entry's round trip and stream become the medians over its runs.
pub fn record_run(
    rows: &mut Vec<Row>,
    name: &'static str,
    size: usize,
    placement: Placement,
    run: Run,
) {
    record_line(rows, name, size, placement, run.before, run.after);
    let m = record(rows, name, size, placement, None, None);
    m.runs.push(run);
    m.rtt = median_by(m.runs.iter().filter_map(|r| r.rtt), |l| l.median_ns as f64);
    m.msgs_per_s = median_by(m.runs.iter().filter_map(|r| r.msgs_per_s), |&x| x);
}

/// The median item by `key`: the middle one, the lower of the two middles for an even count;
/// `None` if there are none.
pub fn median_by<T: Copy>(items: impl Iterator<Item = T>, key: impl Fn(&T) -> f64) -> Option<T> {
    let mut v: Vec<T> = items.collect();
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    v.get(v.len().saturating_sub(1) / 2).copied()
}

/// How far apart the runs of one cache placement are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// The placement (`shared`, `split`, or `unknown` without probes).
    pub cache: Cache,
    /// Runs in it.
    pub runs: usize,
    /// The largest figure over the smallest (1 for one run): slowest over fastest, whether
    /// higher figures are faster (rates) or slower (times).
    pub ratio: f64,
}

/// The spread of `figures` (each with its run's placement) per placement, in the order
/// shared, split, unknown; runs whose placement changed mid-run are left out.
pub fn spread(figures: impl IntoIterator<Item = (Cache, f64)>) -> Vec<Spread> {
    let figures: Vec<(Cache, f64)> = figures.into_iter().collect();
    [Cache::Shared, Cache::Split, Cache::Unknown]
        .into_iter()
        .filter_map(|cache| {
            let xs: Vec<f64> = figures
                .iter()
                .filter(|(c, x)| *c == cache && *x > 0.0 && x.is_finite())
                .map(|&(_, x)| x)
                .collect();
            let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = xs.iter().copied().fold(0.0, f64::max);
            (!xs.is_empty()).then_some(Spread {
                cache,
                runs: xs.len(),
                ratio: hi / lo,
            })
        })
        .collect()
}

/// The widest spread among placements with at least two runs.
pub fn widest(spreads: impl IntoIterator<Item = Spread>) -> Option<f64> {
    spreads
        .into_iter()
        .filter(|s| s.runs >= 2)
        .map(|s| s.ratio)
        .max_by(f64::total_cmp)
}

impl Measured {
    /// The spread of the runs' median round trips.
    pub fn rtt_spread(&self) -> Vec<Spread> {
        spread(
            self.runs
                .iter()
                .filter_map(|r| Some((r.cache(), r.rtt?.median_ns as f64))),
        )
    }

    /// The spread of the runs' stream throughputs.
    pub fn stream_spread(&self) -> Vec<Spread> {
        spread(
            self.runs
                .iter()
                .filter_map(|r| Some((r.cache(), r.msgs_per_s?))),
        )
    }
}

impl Row {
    /// The widest spread of the row's runs, round trip and stream (`None` without two runs in
    /// one placement).
    pub fn spreads(&self) -> (Option<f64>, Option<f64>) {
        (
            widest(self.measured.iter().flat_map(Measured::rtt_spread)),
            widest(self.measured.iter().flat_map(Measured::stream_spread)),
        )
    }
}

#[cfg(test)]
mod tests {
    // No `use`: see the tests of the parent module.

    #[test]
    fn the_median_is_the_middle_run() {
        let key = |x: &f64| *x;
        assert_eq!(
            super::median_by([3.0, 1.0, 2.0].into_iter(), key),
            Some(2.0)
        );
        assert_eq!(
            super::median_by([4.0, 1.0, 3.0, 2.0].into_iter(), key),
            Some(2.0)
        );
        assert_eq!(super::median_by(std::iter::empty(), key), None);
    }

    #[test]
    fn spread_is_per_placement_and_skips_changed_runs() {
        use super::super::Cache::{Changed, Shared, Split};
        let s = super::spread([
            (Shared, 100.0),
            (Split, 400.0),
            (Shared, 150.0),
            (Changed, 1000.0),
            (Shared, 120.0),
        ]);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!((s[0].cache, s[0].runs, s[0].ratio), (Shared, 3, 1.5));
        assert_eq!((s[1].cache, s[1].runs, s[1].ratio), (Split, 1, 1.0));
        assert_eq!(
            super::widest(s),
            Some(1.5),
            "a single split run has no spread"
        );
        assert_eq!(super::widest(super::spread([(Split, 2.0)])), None);
    }

    #[test]
    fn a_row_reports_the_median_of_its_runs() {
        let mut rows = Vec::new();
        let (shared, split) = (Some(80.0), Some(400.0));
        for (rate, probe) in [(10.0, shared), (30.0, shared), (20.0, shared), (5.0, split)] {
            let run = super::Run {
                rtt: None,
                msgs_per_s: Some(rate),
                before: probe,
                after: probe,
            };
            super::record_run(&mut rows, "x", 64, super::Placement::Pinned, run);
        }
        let m = &rows[0].measured[0];
        assert_eq!(m.msgs_per_s, Some(10.0));
        assert_eq!(m.line_ns.len(), 8);
        assert_eq!(rows[0].spreads(), (None, Some(3.0)));
        assert_eq!(rows[0].line().map(|l| l.2), Some(super::Cache::Changed));
    }
}
