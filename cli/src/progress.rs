//! The progress bar of a transfer: bytes, throughput and (when the size is known) how far and
//! how long still. Drawn on standard error only when it is a terminal, and only once a transfer
//! has run for [`SHOW_AFTER`], so short transfers and scripts see nothing extra.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A transfer shorter than this shows no bar.
const SHOW_AFTER: Duration = Duration::from_millis(500);

/// Counts the bytes of a transfer and draws them.
pub struct Progress {
    /// Whether a bar may be drawn at all.
    enabled: bool,
    start: Instant,
    bytes: u64,
    /// Messages counted by [`Progress::add_message`] (`--lines`).
    messages: u64,
    total: Option<u64>,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A counter for a transfer of `total` bytes (if known). `allowed`: the user did not ask
    /// for no bar; a bar is drawn only if standard error is also a terminal.
    pub fn new(allowed: bool, total: Option<u64>) -> Progress {
        Progress {
            enabled: allowed && std::io::stderr().is_terminal(),
            start: Instant::now(),
            bytes: 0,
            messages: 0,
            total,
            bar: None,
        }
    }

    /// Counts `n` more bytes (0 just lets the bar appear while waiting).
    #[inline]
    pub fn add(&mut self, n: u64) {
        self.bytes += n;
        if self.enabled {
            self.draw();
        }
    }

    /// Counts one message of `n` bytes (with `--lines`, its newline included).
    #[inline]
    pub fn add_message(&mut self, n: u64) {
        self.messages += 1;
        self.add(n);
    }

    /// How far the transfer got: "14 bytes", or "14 bytes in 3 messages" once any message was
    /// counted.
    pub fn so_far(&self) -> String {
        let plural = |n: u64| if n == 1 { "" } else { "s" };
        let bytes = format!("{} byte{}", self.bytes, plural(self.bytes));
        match self.messages {
            0 => bytes,
            m => format!("{bytes} in {m} message{}", plural(m)),
        }
    }

    fn draw(&mut self) {
        match &self.bar {
            Some(bar) => bar.set_position(self.bytes),
            None if self.start.elapsed() >= SHOW_AFTER => {
                let (len, template) = match self.total {
                    Some(t) => (
                        Some(t),
                        "{spinner} {bytes}/{total_bytes} [{wide_bar}] {binary_bytes_per_sec}, \
                         {eta} left",
                    ),
                    None => (None, "{spinner} {bytes} {binary_bytes_per_sec} ({elapsed})"),
                };
                let style = ProgressStyle::with_template(template)
                    .expect("the template is valid")
                    .progress_chars("=> ");
                let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr())
                    .with_style(style)
                    .with_elapsed(self.start.elapsed())
                    .with_position(self.bytes);
                bar.enable_steady_tick(Duration::from_millis(200));
                self.bar = Some(bar);
            }
            None => {}
        }
    }

    /// The transfer succeeded: the bar (if any) stays with its final numbers.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            // The bar's rate is a recent one; the summary gives the average.
            let secs = self.start.elapsed().as_secs_f64().max(1e-9);
            let rate = HumanBytes((self.bytes as f64 / secs) as u64);
            let style = ProgressStyle::with_template("{bytes} in {elapsed}, {msg}")
                .expect("the template is valid");
            bar.set_style(style);
            bar.set_position(self.bytes);
            bar.finish_with_message(format!("{rate}/s"));
        }
    }

    /// The transfer failed: the bar (if any) is removed so the error line stands alone.
    pub fn abandon(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
