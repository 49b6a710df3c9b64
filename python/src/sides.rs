//! `Producer` and `Consumer` (bytes), the buffers they read and fill, and `UnsafeView`, the one
//! way to see a message in place (docs/DESIGN.md, "Python").

use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyBufferError, PyRuntimeWarning, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView};
use pyo3::{ffi, intern};
use shmpipe::{ReadGuard, RecvError, SendError, TryRecvError, TrySendError};

use crate::{Closing, Held, errors, seconds, wait};

/// A caller's buffer (`bytes`, `bytearray`, `memoryview`, NumPy array, ...), C-contiguous,
/// held (exported) for as long as this lives, so its memory cannot move or be freed.
pub(crate) struct Buffer {
    buf: PyUntypedBuffer,
}

impl Buffer {
    /// Gets `obj`'s buffer; `writable` demands one that may be written.
    pub(crate) fn get(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<Buffer> {
        let buf = PyUntypedBuffer::get(obj)?;
        if !buf.is_c_contiguous() {
            return Err(PyBufferError::new_err("the buffer must be C-contiguous"));
        }
        if writable && buf.readonly() {
            return Err(PyBufferError::new_err("the buffer is read-only"));
        }
        Ok(Buffer { buf })
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len_bytes()
    }

    /// The bytes, to read. Call with the GIL held and drop the slice before releasing it.
    pub(crate) fn bytes(&self, _py: Python<'_>) -> &[u8] {
        if self.len() == 0 {
            return &[];
        }
        // SAFETY: the buffer is exported to us (held by `self.buf`, so neither freed nor
        // resized) and C-contiguous, so `len` bytes at `buf_ptr` are the object's memory. The
        // GIL is held while the slice lives (the `py` token): Python code cannot write it
        // meanwhile. (Native code in another thread that writes a buffer it released the GIL
        // for breaks the buffer protocol's contract, as for any reader.)
        unsafe { std::slice::from_raw_parts(self.buf.buf_ptr().cast::<u8>(), self.len()) }
    }

    /// The bytes, to write: as [`Buffer::bytes`], for a buffer got with `writable`.
    #[allow(clippy::mut_from_ref)] // the memory is the Python object's, not `self`'s
    pub(crate) fn bytes_mut(&self, _py: Python<'_>) -> &mut [u8] {
        if self.len() == 0 {
            return &mut [];
        }
        // SAFETY: as in `bytes`; the buffer is writable (checked in `get`). No other slice of
        // it is alive: each caller takes one for the length of one copy, GIL held.
        unsafe { std::slice::from_raw_parts_mut(self.buf.buf_ptr().cast::<u8>(), self.len()) }
    }
}

/// Waits for the next message of `c` (no wait if `blocking` is false: `Empty`), and runs `f`
/// on it with the GIL held; the message is released when `f` returns. The GIL is released
/// only while waiting (see `wait::until`).
pub(crate) fn next_message<R: Send>(
    py: Python<'_>,
    c: &mut shmpipe::Consumer,
    timeout: Option<Duration>,
    blocking: bool,
    f: impl Fn(Python<'_>, &ReadGuard<'_>) -> PyResult<R> + Sync,
) -> PyResult<R> {
    match c.try_lend() {
        Ok(m) => return f(py, &m),
        Err(TryRecvError::Empty) if blocking => {}
        Err(e) => return Err(errors::from_try_recv(py, e)),
    }
    wait::until(py, timeout, "a message", |py, slice| {
        let got = py.detach(|| match c.lend_timeout(slice) {
            // Holding the message, take the GIL back for `f` (it may wait for another thread).
            Ok(m) => Ok(Some(Python::attach(|py| f(py, &m)))),
            Err(RecvError::Timeout) => Ok(None),
            Err(e) => Err(e),
        });
        match got {
            Ok(Some(r)) => r.map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(errors::from_recv(py, e)),
        }
    })
}

/// Sends `msg`: at once if there is room, else with the GIL released until there is (from a
/// private copy, so the caller's buffer is not read without the GIL).
pub(crate) fn send_bytes(
    py: Python<'_>,
    p: &mut shmpipe::Producer,
    msg: &[u8],
    timeout: Option<Duration>,
) -> PyResult<()> {
    match p.try_send(msg) {
        Ok(()) => return Ok(()),
        Err(TrySendError::Full) => {}
        Err(e) => return Err(errors::from_try_send(py, e)),
    }
    let msg = msg.to_vec();
    wait::until(py, timeout, "room in the ring", |py, slice| {
        match py.detach(|| p.send_timeout(&msg, slice)) {
            Ok(()) => Ok(Some(())),
            Err(SendError::Timeout) => Ok(None),
            Err(e) => Err(errors::from_send(py, e)),
        }
    })
}

/// The sending side of a byte ring: `Ring.producer()`.
#[pyclass(module = "shmpipe", name = "Producer", frozen)]
pub struct Producer {
    side: Held<shmpipe::Producer>,
}

impl Producer {
    pub(crate) fn new(p: shmpipe::Producer) -> Producer {
        Producer {
            side: Held::new(p, "producer"),
        }
    }
}

impl Closing for Producer {}

side_methods! {
impl Producer {
    /// Sends one message (any bytes-like object), waiting for room at most `timeout` seconds.
    #[pyo3(signature = (data, timeout=None))]
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<()> {
        let timeout = seconds(timeout)?;
        let buf = Buffer::get(data, false)?;
        self.side
            .with(|p| send_bytes(py, p, buf.bytes(py), timeout))
    }

    /// Sends one message if there is room now; raises `Full` if not.
    fn try_send(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let buf = Buffer::get(data, false)?;
        self.side.with(|p| {
            p.try_send(buf.bytes(py))
                .map_err(|e| errors::from_try_send(py, e))
        })
    }

    /// The largest message in bytes.
    #[getter]
    fn max_message(&self) -> PyResult<usize> {
        self.side.with(|p| Ok(p.max_message()))
    }

    /// Whether a consumer has ever attached.
    #[getter]
    fn peer_has_come(&self) -> PyResult<bool> {
        self.side.with(|p| Ok(p.peer_has_come()))
    }
}
}

/// The receiving side of a byte ring: `Ring.consumer()`.
#[pyclass(module = "shmpipe", name = "Consumer", frozen)]
pub struct Consumer {
    side: Held<shmpipe::Consumer>,
    /// Buffer exports of `UnsafeView`s lent by this consumer that are still alive.
    exports: Arc<AtomicUsize>,
    /// `recv_into`'s private buffer for waits with the GIL released (grown, never shrunk).
    scratch: Mutex<Vec<u8>>,
}

impl Consumer {
    pub(crate) fn new(c: shmpipe::Consumer) -> Consumer {
        Consumer {
            side: Held::new(c, "consumer"),
            exports: Arc::new(AtomicUsize::new(0)),
            scratch: Mutex::new(Vec::new()),
        }
    }

    fn recv_with(
        &self,
        py: Python<'_>,
        timeout: Option<Duration>,
        blocking: bool,
    ) -> PyResult<Py<PyBytes>> {
        self.side.with(|c| {
            next_message(py, c, timeout, blocking, |py, m| {
                let bytes = PyBytes::new_with(py, m.len(), |out| {
                    m.copy_to(out);
                    Ok(())
                })?;
                Ok(bytes.unbind())
            })
        })
    }
}

impl Closing for Consumer {
    /// Not while a view from `lend_unsafe` is exported: it must not outlive the mapping.
    fn may_close(&self) -> PyResult<()> {
        // Relaxed: the count is only changed and read with the GIL held (`gil_used`).
        if self.exports.load(Ordering::Relaxed) > 0 {
            return Err(PyBufferError::new_err(
                "cannot close the consumer: a view from lend_unsafe is still alive",
            ));
        }
        Ok(())
    }
}

side_methods! {
impl Consumer {
    /// Receives the next message as `bytes` (a copy), waiting at most `timeout` seconds.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyBytes>> {
        self.recv_with(py, seconds(timeout)?, true)
    }

    /// Receives the next message if one is waiting; raises `Empty` if not.
    fn try_recv(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
        self.recv_with(py, None, false)
    }

    /// Copies the next message into `buffer` (a writable bytes-like object: bytearray,
    /// memoryview, NumPy array) and returns its length. Allocates nothing (once warm).
    #[pyo3(signature = (buffer, timeout=None))]
    fn recv_into(
        &self,
        py: Python<'_>,
        buffer: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        let timeout = seconds(timeout)?;
        let buf = Buffer::get(buffer, true)?;
        self.side.with(|c| {
            match c.try_recv(buf.bytes_mut(py)) {
                Ok(n) => return Ok(n),
                Err(TryRecvError::Empty) => {}
                Err(e) => return Err(errors::from_try_recv(py, e)),
            }
            // Wait into a private buffer of the caller's size (so that a message too long for
            // it stays in the ring), then copy with the GIL held: the caller's buffer is only
            // touched while Python code cannot run.
            let len = buf.len().min(c.max_message());
            let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
            let scratch: &mut Vec<u8> = &mut guard;
            if scratch.len() < len {
                scratch.resize(len, 0);
            }
            let n = wait::until(py, timeout, "a message", |py, slice| {
                match py.detach(|| c.recv_timeout(&mut scratch[..len], slice)) {
                    Ok(n) => Ok(Some(n)),
                    Err(RecvError::Timeout) => Ok(None),
                    Err(e) => Err(errors::from_recv(py, e)),
                }
            })?;
            buf.bytes_mut(py)[..n].copy_from_slice(&scratch[..n]);
            Ok(n)
        })
    }

    /// Calls `callback(view)` with the next message lent in place as a read-only memoryview,
    /// and returns what it returns. UNSAFE: see shmpipe.pyi for the contract.
    #[pyo3(signature = (callback, timeout=None))]
    fn lend_unsafe(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let timeout = seconds(timeout)?;
        let me = slf.get();
        let owner = slf.clone().unbind();
        let callback = callback.clone().unbind();
        me.side.with(|c| {
            next_message(py, c, timeout, true, |py, m| {
                let view = Py::new(
                    py,
                    UnsafeView {
                        ptr: m.view().as_ptr() as usize,
                        len: m.len(),
                        live: AtomicBool::new(true),
                        exports: me.exports.clone(),
                        _owner: owner.clone_ref(py),
                    },
                )?;
                let mv = PyMemoryView::from(view.bind(py).as_any())?;
                let r = callback.call1(py, (&mv,));
                // Relaxed here and below: `live` and `exports` are only touched with the GIL
                // held (`gil_used`), which orders them; no data is published through them.
                view.get().live.store(false, Ordering::Relaxed);
                // Our own memoryview goes; one the callback kept (or an array on it) stays.
                mv.call_method0(intern!(py, "release"))?;
                if me.exports.load(Ordering::Relaxed) > 0 {
                    PyErr::warn(
                        py,
                        &py.get_type::<PyRuntimeWarning>(),
                        c"a view of a lent message outlived lend_unsafe's callback; it now shows \
                          whatever the ring holds there later",
                        1,
                    )?;
                }
                r
            })
        })
    }

    /// The largest message in bytes.
    #[getter]
    fn max_message(&self) -> PyResult<usize> {
        self.side.with(|c| Ok(c.max_message()))
    }

    /// Whether a producer has ever attached.
    #[getter]
    fn peer_has_come(&self) -> PyResult<bool> {
        self.side.with(|c| Ok(c.peer_has_come()))
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// The next message; the iteration ends when the producer closed the ring and every
    /// message was received (`Disconnected`). `PeerDied` and the other errors are raised.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        match self.recv_with(py, None, true) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_instance_of::<errors::Disconnected>(py) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
}

/// A message lent in place by `Consumer.lend_unsafe`, exported as a read-only buffer while
/// the callback runs. It keeps its consumer (and so the mapping) alive, and the consumer
/// refuses to close while a buffer of it is exported, so a view that escapes the callback
/// never points at unmapped memory.
#[pyclass(module = "shmpipe", name = "UnsafeView", frozen)]
pub struct UnsafeView {
    /// Where the message starts in the mapping (an address: the struct must be `Send`).
    ptr: usize,
    len: usize,
    /// Whether the message is still lent (the callback runs): no new export afterwards.
    live: AtomicBool,
    exports: Arc<AtomicUsize>,
    _owner: Py<Consumer>,
}

#[pymethods]
impl UnsafeView {
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let me = slf.get();
        // Relaxed: GIL held, as in `lend_unsafe`.
        if !me.live.load(Ordering::Relaxed) {
            return Err(PyBufferError::new_err("the lent message was released"));
        }
        if flags & ffi::PyBUF_WRITABLE != 0 {
            return Err(PyBufferError::new_err("a lent message is read-only"));
        }
        let len = isize::try_from(me.len).map_err(|_| PyValueError::new_err("too long"))?;
        // SAFETY: `view` is the caller's Py_buffer to fill (buffer protocol). `ptr..ptr+len`
        // is the lent message inside the consumer's mapping, which `_owner` keeps alive and
        // which the consumer does not unmap while `exports` > 0. Read-only (1): Python code
        // cannot write the ring through it.
        let rc =
            unsafe { ffi::PyBuffer_FillInfo(view, slf.as_ptr(), me.ptr as *mut _, len, 1, flags) };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        me.exports.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        // Relaxed: GIL held, as in `lend_unsafe`.
        self.exports.fetch_sub(1, Ordering::Relaxed);
    }

    fn __len__(&self) -> usize {
        self.len
    }
}
