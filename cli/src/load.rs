//! How busy the machine was while something was measured: the 1-minute load average against
//! the number of CPUs, and the share of all CPUs' time that other processes took, from
//! `/proc/stat` and `/proc/self/stat` read before and after. Numbers measured beside other
//! work are not the machine's, and the output says so.
//!
//! Used by `shmpipe bench` and, through `#[path]`, by the library's `demo` example, so both
//! judge a run the same way.

/// Other processes may take this share (percent) of all CPUs before a run is called busy: a
/// shell, an editor and the kernel's threads stay well below it.
pub const BUSY_PERCENT: f64 = 10.0;

/// One reading of the counters, in clock ticks (`USER_HZ`, the unit of both files; only ratios
/// are used).
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// All CPUs' time, in clock ticks.
    total: u64,
    /// All CPUs' idle time (idle and iowait).
    idle: u64,
    /// This process's CPU time and its reaped children's.
    ours: u64,
}

/// How busy the machine was between two samples.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// The 1-minute load average at the end.
    pub load_1min: f64,
    /// CPUs online.
    pub cpus: usize,
    /// Percent of all CPUs' time that other processes used (0 to 100).
    pub others_percent: f64,
}

impl Sample {
    /// Reads the counters now (`None` where `/proc` cannot be read).
    pub fn now() -> Option<Sample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        let (total, idle) = parse_cpu_line(&stat)?;
        Some(Sample {
            total,
            idle,
            ours: parse_own_ticks(&own)?,
        })
    }

    /// How busy the machine was from this sample to `later` (taken after this process reaped
    /// the children it ran, so their time counts as ours).
    pub fn until(&self, later: &Sample) -> Load {
        let total = later.total.saturating_sub(self.total).max(1);
        let busy = total.saturating_sub(later.idle.saturating_sub(self.idle));
        let others = busy.saturating_sub(later.ours.saturating_sub(self.ours));
        Load {
            load_1min: load_average().unwrap_or(0.0),
            cpus: cpus(),
            others_percent: (100.0 * others as f64 / total as f64).min(100.0),
        }
    }
}

impl Load {
    /// Whether other processes took enough CPU to change the numbers.
    pub fn busy(&self) -> bool {
        self.others_percent > BUSY_PERCENT
    }

    /// One line: the load and the others' share.
    pub fn summary(&self) -> String {
        format!(
            "load average {:.2} (1 min) on {} CPUs; other processes used {:.0}% of the CPUs' \
             time during the run",
            self.load_1min, self.cpus, self.others_percent
        )
    }

    /// A warning for a busy run, or `None`.
    pub fn warning(&self) -> Option<String> {
        self.busy().then(|| {
            format!(
                "WARNING: the machine was busy (other processes used {:.0}% of the CPUs, more \
                 than {BUSY_PERCENT:.0}%): the numbers are slower and noisier than this machine \
                 can do; run again when it is idle",
                self.others_percent
            )
        })
    }
}

/// The load average of the last minute, from `/proc/loadavg`.
pub fn load_average() -> Option<f64> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// CPUs online: the machine's, not the ones this process may run on (the demo and the bench
/// pin themselves to one).
pub fn cpus() -> usize {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .map(|s| count_cpus(&s))
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

/// The `cpuN` lines of `/proc/stat`.
fn count_cpus(stat: &str) -> usize {
    stat.lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count()
}

/// `(total, idle)` ticks of the aggregate `cpu` line of `/proc/stat`: the sum of its first
/// eight fields (user, nice, system, idle, iowait, irq, softirq, steal; guest time is already
/// in user), and idle plus iowait.
fn parse_cpu_line(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f = numbers(line, 1, 8)?;
    if f.len() < 5 {
        return None;
    }
    Some((f.iter().sum(), f[3] + f[4]))
}

/// utime + stime + cutime + cstime (fields 14 to 17) of `/proc/self/stat`. The command name
/// (field 2) is in parentheses and may hold spaces, so fields are counted after its last `)`.
fn parse_own_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name, so field 14 is the 12th after it.
    let f = numbers(rest, 11, 4)?;
    (f.len() == 4).then(|| f.iter().sum())
}

/// Up to `take` whitespace-separated numbers of `s` after the first `skip` fields.
fn numbers(s: &str, skip: usize, take: usize) -> Option<Vec<u64>> {
    s.split_whitespace()
        .skip(skip)
        .take(take)
        .map(|x| x.parse().ok())
        .collect()
}

/// The first field of `/proc/loadavg`.
fn parse_loadavg(s: &str) -> Option<f64> {
    s.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "cpu  100 5 50 800 20 3 2 10 7 0\ncpu0 50 2 25 400 10 1 1 5 3 0\nintr 1\n";
        assert_eq!(parse_cpu_line(stat), Some((990, 820)));
        assert_eq!(parse_cpu_line("intr 1\n"), None);
        assert_eq!(count_cpus(stat), 1);
        let own = "4242 (a (weird) name) R 1 4242 4242 0 -1 4194304 100 0 0 0 \
                   17 3 2 1 20 0 1 0 12345 1000 100";
        assert_eq!(parse_own_ticks(own), Some(23));
        assert_eq!(parse_own_ticks("4242 (x) R 1"), None);
        assert_eq!(parse_loadavg("2.76 2.45 3.92 7/168 32164\n"), Some(2.76));
    }

    #[test]
    fn others_share_and_warning() {
        let a = Sample {
            total: 1000,
            idle: 800,
            ours: 50,
        };
        // 1000 ticks pass, 500 of them busy, 300 of those ours: others took 20%.
        let b = Sample {
            total: 2000,
            idle: 1300,
            ours: 350,
        };
        let load = a.until(&b);
        assert!((load.others_percent - 20.0).abs() < 1e-9);
        assert!(load.busy() && load.warning().is_some());
        // Only our own work: not busy.
        let c = Sample {
            total: 2000,
            idle: 1300,
            ours: 550,
        };
        assert_eq!(a.until(&c).others_percent, 0.0);
        assert!(a.until(&c).warning().is_none());
        assert!(Sample::now().is_some(), "/proc is readable on Linux");
    }
}
