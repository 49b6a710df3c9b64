//! The Python module `shmpipe`: the shmpipe ring from Python (docs/DESIGN.md, "Python").
//!
//! Every object wraps its Rust counterpart behind a `Mutex` (a side is used by one thread at a
//! time; a second thread gets `RuntimeError`, never a wait while holding the GIL). Blocking
//! calls release the GIL in slices of `wait::SLICE` and check for signals between them. Bytes
//! the peer can write reach Python only as copies, except through `Consumer.lend_unsafe`
//! (sides.rs), whose contract is in its docstring.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyType};
use shmpipe::{Key, Liveness, Memfd, RingConfig, Shmid};

/// A side's `#[pymethods]`: the methods given, plus `close` and the context manager, which are
/// the same for the four sides (`Producer`, `Consumer` and the typed ones). Each has a field
/// `side: Held<_>` of a Rust side implementing [`Closing`].
macro_rules! side_methods {
    (impl $ty:ident { $($methods:tt)* }) => {
        #[pyo3::pymethods]
        impl $ty {
            $($methods)*

            /// Closes the side cleanly (the peer sees the end of the stream); idempotent.
            fn close(&self, py: Python<'_>) -> PyResult<()> {
                crate::Closing::may_close(self)?;
                match self.side.take()? {
                    Some(s) => s.close().map_err(|e| crate::errors::from_error(py, e.into())),
                    None => Ok(()),
                }
            }

            fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
                slf
            }

            #[pyo3(signature = (*_exc))]
            fn __exit__(
                &self,
                py: Python<'_>,
                _exc: &Bound<'_, pyo3::types::PyTuple>,
            ) -> PyResult<bool> {
                self.close(py).map(|()| false)
            }
        }
    };
}

/// Whether a side may close now (`side_methods!`): a consumer may not while a view it lent
/// is alive.
pub(crate) trait Closing {
    fn may_close(&self) -> PyResult<()> {
        Ok(())
    }
}

mod admin;
mod errors;
mod sides;
mod typed;
mod wait;

/// A Rust object owned by a Python object: `None` once closed. Calls lock it without waiting.
pub(crate) struct Held<T> {
    inner: Mutex<Option<T>>,
    /// What it is, for error messages ("consumer", "ring", ...).
    what: &'static str,
}

impl<T> Held<T> {
    pub(crate) fn new(value: T, what: &'static str) -> Held<T> {
        Held {
            inner: Mutex::new(Some(value)),
            what,
        }
    }

    fn lock(&self) -> PyResult<MutexGuard<'_, Option<T>>> {
        match self.inner.try_lock() {
            Ok(g) => Ok(g),
            // A panic cannot leave the Rust object half-updated in a way its own API does not
            // report (its state is in the ring, checked on every call): keep using it.
            Err(std::sync::TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => Err(PyRuntimeError::new_err(format!(
                "the {} is in use by another thread (each side belongs to one thread at a time)",
                self.what
            ))),
        }
    }

    /// Runs `f` on the object, or raises `ValueError` if it was closed.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> PyResult<R>) -> PyResult<R> {
        let mut g = self.lock()?;
        match g.as_mut() {
            Some(v) => f(v),
            None => Err(PyValueError::new_err(format!(
                "the {} is closed",
                self.what
            ))),
        }
    }

    /// Takes the object out (closing it); `None` if already closed.
    pub(crate) fn take(&self) -> PyResult<Option<T>> {
        Ok(self.lock()?.take())
    }
}

/// A timeout in seconds (`None`: no limit) as a `Duration`; negative or NaN is a `ValueError`.
pub(crate) fn seconds(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) => Duration::try_from_secs_f64(t)
            .map(Some)
            .map_err(|_| PyValueError::new_err(format!("timeout must be >= 0 seconds, not {t}"))),
    }
}

/// Where a ring lives, from the keyword arguments of `Ring.create`/`open`/`open_or_create`.
enum Place {
    Key(Key),
    Shmid(i32),
    Path(PathBuf),
    /// `memfd=True`: a new memfd (`Ring.create` only).
    Memfd,
    /// `fd=`: our duplicate of the caller's memfd (`Ring.open` only).
    Fd(OwnedFd),
}

/// The options `Ring.create`, `Ring.open` and `Ring.open_or_create` take, as documented in
/// shmpipe.pyi.
struct Options {
    place: Place,
    config: RingConfig,
}

/// Parses `key` and the keyword arguments into a place and a configuration.
fn options(key: Option<i64>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Options> {
    let mut places: Vec<Place> = Vec::new();
    if let Some(k) = key {
        places.push(Place::Key(key_of(k)?));
    }
    let mut config = RingConfig::new();
    let mut typed = typed::TypeArgs::default();
    for (name, value) in kwargs.into_iter().flat_map(|d| d.iter()) {
        let name: String = name.extract()?;
        match name.as_str() {
            "path" => places.push(Place::Path(value.extract()?)),
            "ftok" => {
                let (path, id): (PathBuf, u8) = value.extract()?;
                let key = Key::ftok(path, id).map_err(|e| errors::from_error(value.py(), e))?;
                places.push(Place::Key(key));
            }
            "shmid" => places.push(Place::Shmid(value.extract()?)),
            "private" if value.is_truthy()? => places.push(Place::Key(Key::Private)),
            "private" => {}
            "memfd" if value.is_truthy()? => places.push(Place::Memfd),
            "memfd" => {}
            "fd" => places.push(Place::Fd(dup_fd(&value)?)),
            "slot_size" => config = config.slot_size(value.extract()?),
            "slot_count" => config = config.slot_count(value.extract()?),
            "max_message" => config = config.max_message(value.extract()?),
            "mode" => config = config.mode(value.extract()?),
            "persistent" => config = config.persistent(value.extract()?),
            "huge_pages" => config = config.huge_pages(value.extract()?),
            "accept_huge_pages" => config = config.accept_huge_pages(value.extract()?),
            "init_timeout" => {
                if let Some(t) = seconds(value.extract()?)? {
                    config = config.init_timeout(t);
                }
            }
            "accept_owner" => {
                for uid in uids(&value)? {
                    config = config.accept_owner(uid);
                }
            }
            "join_any_shape" if value.is_truthy()? => config = config.join_any_shape(),
            "join_any_shape" => {}
            _ if typed.take(&name, &value)? => {}
            _ => {
                return Err(PyTypeError::new_err(format!(
                    "unexpected keyword argument {name:?}"
                )));
            }
        }
    }
    if let Some(t) = typed.message_type()? {
        config = config.message_type_raw(t);
    }
    let place = match places.len() {
        1 => places.pop().expect("one place"),
        n => {
            return Err(PyTypeError::new_err(format!(
                "give exactly one of key, path=, ftok=, shmid=, private=True, memfd=True or fd= \
                 (got {n})"
            )));
        }
    };
    Ok(Options { place, config })
}

/// `accept_owner=`: a uid or a sequence of uids.
fn uids(value: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
    match value.extract::<u32>() {
        Ok(uid) => Ok(vec![uid]),
        Err(_) => value.extract(),
    }
}

/// `fd=`: a duplicate (close-on-exec, ours) of the caller's descriptor, which stays the
/// caller's to close.
fn dup_fd(value: &Bound<'_, PyAny>) -> PyResult<OwnedFd> {
    if value.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(
            "fd= is a file descriptor (an int), not a bool",
        ));
    }
    let fd: i32 = value.extract()?;
    // SAFETY: `F_DUPFD_CLOEXEC` reads no memory; a number that is not an open descriptor is
    // `EBADF`, and the caller's descriptor is left as it was.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(PyErr::new::<errors::Sys, _>(format!(
            "duplicating descriptor {fd}: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `new` is a descriptor just opened for us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// A SysV key from a Python int: any value of 32 bits, signed or not (`0xdeadbeef` too).
fn key_of(k: i64) -> PyResult<Key> {
    let raw = i32::try_from(k)
        .or_else(|_| u32::try_from(k).map(|u| u as i32))
        .map_err(|_| PyValueError::new_err(format!("key {k:#x} does not fit in 32 bits")))?;
    if raw == 0 {
        return Err(PyValueError::new_err(
            "key 0 is IPC_PRIVATE: use private=True (Ring.create) and share ring.shmid",
        ));
    }
    Ok(Key::new(raw))
}

/// A shared-memory ring: a SysV segment (by key, ftok or shmid), a file (by path) or a memfd
/// (`memfd=True`, then `fd=` in the other process). See the module's documentation
/// (shmpipe.pyi) for the arguments.
#[pyclass(module = "shmpipe", name = "Ring", frozen)]
struct Ring {
    inner: Held<shmpipe::Ring>,
}

/// Which constructor a call is.
#[derive(Clone, Copy)]
enum Make {
    Create,
    Open,
    OpenOrCreate,
}

impl Ring {
    fn make(
        py: Python<'_>,
        how: Make,
        key: Option<i64>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Ring> {
        let Options { place, config } = options(key, kwargs)?;
        let bad = |what: &str| {
            PyTypeError::new_err(format!(
                "a ring cannot be {what}; see the shmpipe.Ring docs"
            ))
        };
        // Opening may wait for a creator or a key's lock (bounded by init_timeout).
        let ring = match (how, place) {
            (Make::Create, Place::Key(k)) => py.detach(|| shmpipe::Ring::create(k, &config)),
            (Make::Create, Place::Path(p)) => py.detach(|| shmpipe::Ring::create(p, &config)),
            (Make::Create, Place::Memfd) => shmpipe::Ring::create(Memfd, &config),
            (Make::Open, Place::Fd(fd)) => py.detach(|| shmpipe::Ring::open(fd, &config)),
            (_, Place::Memfd) => {
                return Err(bad(
                    "opened by memfd=True: open the creator's Ring.memfd, handed to this \
                     process, with fd=",
                ));
            }
            (_, Place::Fd(_)) => return Err(bad("created by fd= (only opened)")),
            (Make::Open, Place::Key(Key::Private))
            | (Make::OpenOrCreate, Place::Key(Key::Private)) => {
                return Err(bad("opened by private=True: open it by shmid="));
            }
            (Make::Open, Place::Key(k)) => py.detach(|| shmpipe::Ring::open(k, &config)),
            (Make::Open, Place::Path(p)) => py.detach(|| shmpipe::Ring::open(p, &config)),
            (Make::Open, Place::Shmid(id)) => py.detach(|| shmpipe::Ring::open(Shmid(id), &config)),
            (Make::OpenOrCreate, Place::Key(k)) => {
                py.detach(|| shmpipe::Ring::open_or_create(k, &config))
            }
            (Make::OpenOrCreate, Place::Path(p)) => {
                py.detach(|| shmpipe::Ring::open_or_create(p, &config))
            }
            (_, Place::Shmid(_)) => return Err(bad("created by shmid= (only opened)")),
        }
        .map_err(|e| errors::from_error(py, e))?;
        Ok(Ring {
            inner: Held::new(ring, "ring"),
        })
    }

    /// Runs `f` on the open ring.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut shmpipe::Ring) -> PyResult<R>) -> PyResult<R> {
        self.inner.with(f)
    }

    /// Claims a role with `take` (`shmpipe::Ring::producer`, `take_over_consumer`, ...).
    fn claim<S>(
        &self,
        py: Python<'_>,
        take: impl FnOnce(&shmpipe::Ring) -> Result<S, shmpipe::Error>,
    ) -> PyResult<S> {
        self.with(|r| take(r).map_err(|e| errors::from_error(py, e)))
    }
}

#[pymethods]
impl Ring {
    /// Creates a new ring; fails with `Exists` if one is there. See shmpipe.pyi.
    #[classmethod]
    #[pyo3(signature = (key=None, **kwargs))]
    fn create(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        key: Option<i64>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Ring> {
        Ring::make(py, Make::Create, key, kwargs)
    }

    /// Opens an existing ring; fails with `NotFound` if there is none. See shmpipe.pyi.
    #[classmethod]
    #[pyo3(signature = (key=None, **kwargs))]
    fn open(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        key: Option<i64>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Ring> {
        Ring::make(py, Make::Open, key, kwargs)
    }

    /// Opens the ring, creating it if there is none (either side may start first).
    #[classmethod]
    #[pyo3(signature = (key=None, **kwargs))]
    fn open_or_create(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        key: Option<i64>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Ring> {
        Ring::make(py, Make::OpenOrCreate, key, kwargs)
    }

    /// Claims the producer role.
    fn producer(&self, py: Python<'_>) -> PyResult<sides::Producer> {
        self.claim(py, shmpipe::Ring::producer)
            .map(sides::Producer::new)
    }

    /// Claims the consumer role.
    fn consumer(&self, py: Python<'_>) -> PyResult<sides::Consumer> {
        self.claim(py, shmpipe::Ring::consumer)
            .map(sides::Consumer::new)
    }

    /// Claims the producer role from a holder the kernel confirms dead (Rust
    /// `Ring::take_over_producer`); the stream goes on after its last published message.
    fn take_over_producer(&self, py: Python<'_>) -> PyResult<sides::Producer> {
        self.claim(py, shmpipe::Ring::take_over_producer)
            .map(sides::Producer::new)
    }

    /// Claims the consumer role from a holder the kernel confirms dead (Rust
    /// `Ring::take_over_consumer`); messages it had not released are received again.
    fn take_over_consumer(&self, py: Python<'_>) -> PyResult<sides::Consumer> {
        self.claim(py, shmpipe::Ring::take_over_consumer)
            .map(sides::Consumer::new)
    }

    /// Claims the producer role of a typed ring whose values are of `dtype` (`take_over=True`:
    /// from a dead holder).
    #[pyo3(signature = (dtype, *, take_over=false, **kwargs))]
    fn typed_producer(
        &self,
        dtype: &Bound<'_, PyAny>,
        take_over: bool,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<typed::TypedProducer> {
        typed::TypedProducer::claim(self, dtype, kwargs, take_over)
    }

    /// Claims the consumer role of a typed ring whose values are of `dtype` (`take_over=True`:
    /// from a dead holder).
    #[pyo3(signature = (dtype, *, take_over=false, **kwargs))]
    fn typed_consumer(
        &self,
        dtype: &Bound<'_, PyAny>,
        take_over: bool,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<typed::TypedConsumer> {
        typed::TypedConsumer::claim(self, dtype, kwargs, take_over)
    }

    /// The shared counters now (Rust `Ring::status`), as a dict: `tail`, `head`,
    /// `used_slots`, `sent`, `received`, `producer_pid`, `consumer_pid` (0: role free).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.with(|r| Ok(r.status()))?;
        let d = PyDict::new(py);
        d.set_item("tail", s.tail)?;
        d.set_item("head", s.head)?;
        d.set_item("used_slots", s.used_slots)?;
        d.set_item("sent", s.sent)?;
        d.set_item("received", s.received)?;
        d.set_item("producer_pid", s.producer_pid)?;
        d.set_item("consumer_pid", s.consumer_pid)?;
        Ok(d)
    }

    /// `(producer, consumer)`: each `None` (the role is free) or `(pid, liveness)`, liveness
    /// `"alive"`, `"dead"` (it may be taken over) or `"unknown"` (another pid namespace).
    #[allow(clippy::type_complexity)] // the Python tuple, spelled out
    fn holders(&self) -> PyResult<(Option<(u32, &'static str)>, Option<(u32, &'static str)>)> {
        let (p, c) = self.with(|r| Ok(r.holders()))?;
        let holder = |h: Option<shmpipe::gc::Holder>| h.map(|h| (h.pid, liveness(h.liveness)));
        Ok((holder(p), holder(c)))
    }

    /// Marks the segment (or file) for removal now; sides attached keep working.
    fn remove(&self, py: Python<'_>) -> PyResult<()> {
        self.with(|r| r.remove().map_err(|e| errors::from_error(py, e)))
    }

    /// Detaches this handle; producers and consumers claimed from it stay usable.
    fn close(&self) -> PyResult<()> {
        drop(self.inner.take()?);
        Ok(())
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __exit__(
        &self,
        _ty: &Bound<'_, PyAny>,
        _value: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        self.close()?;
        Ok(false)
    }

    /// The SysV shmid, or None for a file ring.
    #[getter]
    fn shmid(&self) -> PyResult<Option<i32>> {
        self.with(|r| Ok(r.shmid()))
    }

    /// The memfd of a memfd ring (owned by this handle: hand it to another process, do not
    /// close it), or None.
    #[getter]
    fn memfd(&self) -> PyResult<Option<i32>> {
        self.with(|r| Ok(r.memfd().map(|fd| fd.as_raw_fd())))
    }

    /// The ring file's path, or None for a SysV ring.
    #[getter]
    fn path(&self) -> PyResult<Option<PathBuf>> {
        self.with(|r| Ok(r.path().map(PathBuf::from)))
    }

    /// Bytes per slot.
    #[getter]
    fn slot_size(&self) -> PyResult<usize> {
        self.with(|r| Ok(r.slot_size()))
    }

    /// Slots in the ring.
    #[getter]
    fn slot_count(&self) -> PyResult<usize> {
        self.with(|r| Ok(r.slot_count()))
    }

    /// The largest message in bytes.
    #[getter]
    fn max_message(&self) -> PyResult<usize> {
        self.with(|r| Ok(r.max_message()))
    }

    /// Whether the ring outlives its last holder.
    #[getter]
    fn is_persistent(&self) -> PyResult<bool> {
        self.with(|r| Ok(r.is_persistent()))
    }

    /// The message type `(size, align, fingerprint)` of a typed ring, or None.
    #[getter]
    fn message_type(&self) -> PyResult<Option<(u32, u32, u64)>> {
        self.with(|r| Ok(r.message_type().map(|t| (t.size, t.align, t.fingerprint))))
    }

    fn __repr__(&self) -> String {
        match self.with(|r| Ok(format!("<shmpipe.Ring {}>", r.ident()))) {
            Ok(s) => s,
            Err(_) => "<shmpipe.Ring (closed or busy)>".to_string(),
        }
    }
}

/// A holder's liveness as Python sees it: "alive", "dead" or "unknown".
fn liveness(l: Liveness) -> &'static str {
    match l {
        Liveness::Alive => "alive",
        Liveness::Dead => "dead",
        // `Liveness` is non-exhaustive: whatever else the kernel cannot confirm is unknown.
        _ => "unknown",
    }
}

/// The fingerprint of a tag name: 64-bit FNV-1a of its UTF-8 bytes (Rust `shmpipe::type_tag`).
#[pyfunction]
fn type_tag(name: &str) -> u64 {
    shmpipe::type_tag(name)
}

/// The default fingerprint of a Rust type: FNV-1a of `std::any::type_name::<T>()`, then its
/// size and alignment as little-endian u64s (Rust `shmpipe::type_fingerprint::<T>()`).
#[pyfunction]
fn type_fingerprint(rust_type: &str, size: u64, align: u64) -> u64 {
    typed::rust_fingerprint(rust_type, size, align)
}

/// The module.
#[pymodule(name = "shmpipe", gil_used = true)]
fn shmpipe_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Ring>()?;
    m.add_class::<sides::Producer>()?;
    m.add_class::<sides::Consumer>()?;
    m.add_class::<sides::UnsafeView>()?;
    m.add_class::<typed::TypedProducer>()?;
    m.add_class::<typed::TypedConsumer>()?;
    m.add_function(wrap_pyfunction!(type_tag, m)?)?;
    m.add_function(wrap_pyfunction!(type_fingerprint, m)?)?;
    m.add_function(wrap_pyfunction!(admin::gc, m)?)?;
    errors::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
