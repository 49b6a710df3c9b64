//! One-way latency at a fixed send rate (issue #15): the peer sends message `i` of a run at
//! its scheduled time `t0 + i / rate` (busy-waiting on the clock, never sleeping), the
//! measuring side stamps each message's arrival once it has read it whole, and the latency is
//! arrival minus the *scheduled* time, not the actual send time. A producer that fell behind
//! (a stall, a full ring, a preemption) thus charges its delay to every message it sent late,
//! as a real source with its own schedule would see it: the coordinated-omission correction of
//! HdrHistogram's and Aeron's tools. Both processes read one clock, `CLOCK_MONOTONIC`, so the
//! measuring side computes each message's scheduled time from `t0` and the rate it chose.

use std::hint::black_box;
use std::io::{self, Read};
use std::time::Duration;

use super::{AnyEnd, Endpoint, Histogram, READY, Res, Session};

/// How far ahead of the command the first message is scheduled: time for the peer to read it
/// from the control pipe and be spinning on the clock.
const LEAD: Duration = Duration::from_millis(2);

/// Control command: a fixed-rate run. The usual 24 bytes (op, count, first sequence number)
/// are followed by 16 more: the rate in messages/s and `t0` in ns of `CLOCK_MONOTONIC`.
pub const OP_FIXED_RATE: u64 = 4;

/// `CLOCK_MONOTONIC` in ns: the clock both processes read.
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// When message `i` of a run starting at `t0` is due at `rate` messages/s, in ns: exact (no
/// accumulated rounding), whatever the rate.
#[inline]
pub fn scheduled(t0: u64, rate: u64, i: u64) -> u64 {
    t0 + (u128::from(i) * 1_000_000_000 / u128::from(rate.max(1))) as u64
}

/// The latency of a message due at `due` that arrived at `arrived` (0 if the clock says it
/// arrived before it was due, which one clock cannot, but a bad `t0` could).
#[inline]
pub fn corrected(due: u64, arrived: u64) -> u64 {
    arrived.saturating_sub(due)
}

/// The peer's side of a fixed-rate run: reads the rate and `t0` that follow the command, says
/// it is ready, then sends messages `first..first + count`, each at its scheduled time.
pub(super) fn serve<E: Endpoint>(
    e: &mut E,
    control: &mut dyn Read,
    size: usize,
    first: u64,
    count: u64,
) -> Res<()> {
    let [rate, t0] = read_words(control)?;
    e.send(size, READY)?;
    for i in 0..count {
        let due = scheduled(t0, rate, i);
        while now_ns() < due {
            std::hint::spin_loop();
        }
        e.send(size, first + i)?;
    }
    Ok(())
}

impl Session {
    /// `n` messages from the peer at `rate` messages/s, each one's latency (arrival after it
    /// was read whole, minus its scheduled time) recorded into `hist`.
    ///
    /// # Errors
    ///
    /// Any failure of the transport or of the peer.
    pub fn fixed_rate(&mut self, n: u64, rate: u64, hist: &mut Histogram) -> Res<()> {
        if rate == 0 {
            return Err("a rate of 0 messages/s".into());
        }
        let t0 = now_ns() + LEAD.as_nanos() as u64;
        let first = self.command_with(OP_FIXED_RATE, n, &[rate, t0])?;
        let size = self.size;
        let end = self.end.as_mut().ok_or("session closed")?;
        with_end!(end, e => receive(e, size, first, n, rate, t0, hist))
    }
}

fn receive<E: Endpoint>(
    e: &mut E,
    size: usize,
    first: u64,
    n: u64,
    rate: u64,
    t0: u64,
    hist: &mut Histogram,
) -> Res<()> {
    e.recv(size, READY)?;
    let mut sum = 0u64;
    for i in 0..n {
        sum = sum.wrapping_add(e.recv(size, first + i)?);
        let arrived = now_ns();
        hist.record(Duration::from_nanos(corrected(
            scheduled(t0, rate, i),
            arrived,
        )));
    }
    black_box(sum);
    Ok(())
}

/// Messages in a run of `d` at `rate` (at least 100, so a percentile means something).
pub fn messages_in(d: Duration, rate: u64) -> u64 {
    ((d.as_secs_f64() * rate as f64) as u64).max(100)
}

/// Reads the two words that follow a fixed-rate command (written by `command_bytes`).
fn read_words(control: &mut dyn Read) -> io::Result<[u64; 2]> {
    let mut b = [0u8; 16];
    control.read_exact(&mut b)?;
    let word = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    Ok([word(0), word(1)])
}

#[cfg(test)]
mod tests {
    // No `use`: see the tests of the parent module.

    #[test]
    fn the_schedule_is_exact_and_does_not_drift() {
        let t0 = 1_000;
        assert_eq!(super::scheduled(t0, 1_000_000, 0), 1_000);
        assert_eq!(super::scheduled(t0, 1_000_000, 5), 6_000);
        assert_eq!(super::scheduled(t0, 100_000, 3), 31_000);
        // 3 M/s: 333.33 ns apart, rounded down each time but never accumulated.
        assert_eq!(super::scheduled(0, 3_000_000, 1), 333);
        assert_eq!(super::scheduled(0, 3_000_000, 3), 1_000);
        assert_eq!(super::scheduled(0, 3_000_000, 3_000_000), 1_000_000_000);
        // Far into a long run, still exact.
        assert_eq!(super::scheduled(0, 7, 7 * 3600), 3600 * 1_000_000_000);
        assert_eq!(
            super::messages_in(super::Duration::from_millis(40), 1_000_000),
            40_000
        );
        assert_eq!(
            super::messages_in(super::Duration::from_millis(1), 1_000),
            100
        );
    }

    /// A producer stalled for 200 µs at 1 M/s then sends the 200 messages it owes at once. Timed
    /// from their actual send (what a naive tool does), they look like 100 ns each; charged
    /// from their schedule, the stall shows: 2 % of the messages waited from 1 µs to 200 µs, so
    /// the p99 is about 100 µs and the worst the whole stall.
    #[test]
    fn latency_is_charged_from_the_schedule() {
        let (rate, n, wire) = (1_000_000u64, 10_000u64, 100u64);
        let (stall_from, stall_until) = (5_000_000u64, 5_200_000u64);
        let (mut naive, mut fair) = (super::Histogram::new(), super::Histogram::new());
        for i in 0..n {
            let due = super::scheduled(0, rate, i);
            let sent = if (stall_from..stall_until).contains(&due) {
                stall_until
            } else {
                due
            };
            let arrived = sent + wire;
            naive.record(super::Duration::from_nanos(arrived - sent));
            fair.record(super::Duration::from_nanos(super::corrected(due, arrived)));
        }
        assert_eq!(naive.latency().p99_ns, wire);
        assert_eq!(naive.latency().max_ns, wire);
        let fair = fair.latency();
        assert_eq!(fair.median_ns, wire);
        assert!((99_000..=101_000).contains(&fair.p99_ns), "{fair:?}");
        assert_eq!(fair.max_ns, stall_until - stall_from + wire);
        assert_eq!(super::corrected(10, 5), 0, "never negative");
    }

    /// The command as the measuring side writes it, read as the peer reads it: the usual 24
    /// bytes, then the rate and the start.
    #[test]
    fn the_command_carries_rate_and_start() {
        let bytes = super::super::command_bytes(super::OP_FIXED_RATE, 10, 99, &[1_000_000, 12345]);
        assert_eq!(bytes.len(), 40);
        assert_eq!(&bytes[..8], &super::OP_FIXED_RATE.to_le_bytes());
        assert_eq!(&bytes[16..24], &99u64.to_le_bytes());
        let mut rest = &bytes[24..];
        assert_eq!(super::read_words(&mut rest).unwrap(), [1_000_000, 12345]);
    }
}
