//! Blocking calls from Python: the GIL is released while waiting, in slices, so that other
//! Python threads run and Ctrl-C (`KeyboardInterrupt`) is seen within a slice.

use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::errors;

/// The longest one wait with the GIL released lasts before the signal check.
pub const SLICE: Duration = Duration::from_millis(100);

/// Calls `attempt(py, slice)` until it returns `Some`, with slices of at most [`SLICE`], until
/// `timeout` (None: no limit) has passed; then raises `shmpipe.Timeout` with `what` ("a
/// message", "room in the ring"). `attempt` returns `None` when its slice timed out.
pub fn until<R>(
    py: Python<'_>,
    timeout: Option<Duration>,
    what: &str,
    mut attempt: impl FnMut(Python<'_>, Duration) -> PyResult<Option<R>>,
) -> PyResult<R> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let slice = match deadline {
            None => SLICE,
            Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
        };
        if let Some(r) = attempt(py, slice)? {
            return Ok(r);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let t = timeout.unwrap_or_default();
            return Err(PyErr::new::<errors::Timeout, _>(format!(
                "timed out waiting for {what} after {t:?}"
            )));
        }
        py.check_signals()?;
    }
}
