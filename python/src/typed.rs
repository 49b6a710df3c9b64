//! Typed rings as NumPy structured arrays: a dtype checked against the ring's recorded size,
//! alignment and fingerprint (docs/LAYOUT.md, "Typed rings"), values sent and received as
//! arrays, many per publish or release.

use std::sync::Mutex;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use shmpipe::{MessageType, TryRecvError, TrySendError};

use crate::sides::{Buffer, next_message, send_bytes};
use crate::{Closing, Held, Ring, errors, seconds};

/// The fingerprint keywords: `tag=`, `fingerprint=` or `rust_type=`, with `dtype=` when the
/// ring is made or opened (`Ring.create(..., dtype=..., tag=...)`).
#[derive(Default)]
pub(crate) struct TypeArgs<'py> {
    dtype: Option<Bound<'py, PyAny>>,
    tag: Option<String>,
    fingerprint: Option<u64>,
    rust_type: Option<String>,
}

impl<'py> TypeArgs<'py> {
    /// Takes the keyword `name` if it is one of ours.
    pub(crate) fn take(&mut self, name: &str, value: &Bound<'py, PyAny>) -> PyResult<bool> {
        match name {
            "dtype" => self.dtype = Some(value.clone()),
            "tag" => self.tag = Some(value.extract()?),
            "fingerprint" => self.fingerprint = Some(value.extract()?),
            "rust_type" => self.rust_type = Some(value.extract()?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The message type the keywords describe: None without `dtype=`.
    pub(crate) fn message_type(&self) -> PyResult<Option<MessageType>> {
        let Some(dtype) = &self.dtype else {
            if self.tag.is_some() || self.fingerprint.is_some() || self.rust_type.is_some() {
                return Err(PyTypeError::new_err(
                    "tag=, fingerprint= and rust_type= need dtype=",
                ));
            }
            return Ok(None);
        };
        Ok(Some(self.with_dtype(&Dtype::of(dtype)?)?))
    }

    /// The message type of `dtype` with the fingerprint the keywords name (exactly one).
    fn with_dtype(&self, dtype: &Dtype) -> PyResult<MessageType> {
        let fingerprint = match (&self.tag, self.fingerprint, &self.rust_type) {
            (Some(tag), None, None) => shmpipe::type_tag(tag),
            (None, Some(f), None) => f,
            (None, None, Some(name)) => {
                rust_fingerprint(name, u64::from(dtype.size), u64::from(dtype.align))
            }
            _ => {
                return Err(PyTypeError::new_err(
                    "give exactly one of tag= (a name both sides agree on, Rust \
                     `type_tag(name)`), rust_type= (the Rust peer's `std::any::type_name`, its \
                     default fingerprint) or fingerprint= (the value itself)",
                ));
            }
        };
        Ok(MessageType {
            size: dtype.size,
            align: dtype.align,
            fingerprint,
        })
    }
}

/// Rust's `type_fingerprint::<T>()` from `T`'s name, size and alignment (docs/LAYOUT.md).
pub(crate) fn rust_fingerprint(name: &str, size: u64, align: u64) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = shmpipe::type_tag(name); // FNV-1a over the name, then on over size and align
    for b in size.to_le_bytes().into_iter().chain(align.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    h
}

/// A NumPy dtype that can be a message type: plain data laid out as C lays out a struct.
pub(crate) struct Dtype {
    obj: Py<PyAny>,
    size: u32,
    align: u32,
}

impl Dtype {
    /// `numpy.dtype(spec)`, checked: no Python objects in it (their bytes would be pointers a
    /// peer chose), a structured dtype made with `align=True` (the `#[repr(C)]` layout), and a
    /// size that is a multiple of the alignment, as a Rust type's is.
    pub(crate) fn of(spec: &Bound<'_, PyAny>) -> PyResult<Dtype> {
        let py = spec.py();
        let dt = py.import("numpy")?.getattr("dtype")?.call1((spec,))?;
        if dt.getattr("hasobject")?.is_truthy()? {
            return Err(PyTypeError::new_err(format!(
                "dtype {dt} holds Python objects; a ring carries plain data only"
            )));
        }
        if !dt.getattr("fields")?.is_none() && !dt.getattr("isalignedstruct")?.is_truthy()? {
            return Err(PyValueError::new_err(format!(
                "dtype {dt} is not laid out as a C struct: make it with align=True, \
                 numpy.dtype([...], align=True), to match the Rust #[repr(C)] type"
            )));
        }
        let size: u32 = dt.getattr("itemsize")?.extract()?;
        let align: u32 = dt.getattr("alignment")?.extract()?;
        if size == 0 || align == 0 || size % align != 0 {
            return Err(PyValueError::new_err(format!(
                "dtype {dt}: size {size} is not a positive multiple of its alignment {align}"
            )));
        }
        Ok(Dtype {
            obj: dt.unbind(),
            size,
            align,
        })
    }
}

/// Checks that `ring` carries values of `dtype` with the fingerprint of `kwargs` before a
/// role is claimed, as Rust's `Ring::typed::<T>()` does.
fn check_claim(
    ring: &mut shmpipe::Ring,
    py: Python<'_>,
    dtype: &Dtype,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    let mut args = TypeArgs::default();
    for (name, value) in kwargs.into_iter().flat_map(|d| d.iter()) {
        let name: String = name.extract()?;
        if name == "dtype" || !args.take(&name, &value)? {
            return Err(PyTypeError::new_err(format!(
                "unexpected keyword argument {name:?}"
            )));
        }
    }
    let want = args.with_dtype(dtype)?;
    let found = ring.message_type();
    if found == Some(want) {
        return Ok(());
    }
    Err(errors::from_error(
        py,
        shmpipe::Error::TypeMismatch {
            ident: ring.ident(),
            expected: format!("dtype {}, {want}", dtype.obj.bind(py)),
            found: match found {
                Some(t) => t.to_string(),
                None => "untyped byte messages".to_string(),
            },
        },
    ))
}

/// Claims a side of `ring` with `take` once the ring's message type is checked against the dtype
/// `spec` and the fingerprint keywords (`check_claim`).
fn claim<S>(
    ring: &Ring,
    spec: &Bound<'_, PyAny>,
    kwargs: Option<&Bound<'_, PyDict>>,
    take: impl FnOnce(&shmpipe::Ring) -> Result<S, shmpipe::Error>,
) -> PyResult<(S, Dtype)> {
    let py = spec.py();
    let dtype = Dtype::of(spec)?;
    let side = ring.with(|r| {
        check_claim(r, py, &dtype, kwargs)?;
        take(r).map_err(|e| errors::from_error(py, e))
    })?;
    Ok((side, dtype))
}

/// The sending side of a typed ring: `Ring.typed_producer(dtype, tag=...)`.
#[pyclass(module = "shmpipe", name = "TypedProducer", frozen)]
pub struct TypedProducer {
    side: Held<shmpipe::Producer>,
    dtype: Dtype,
}

impl TypedProducer {
    pub(crate) fn claim(
        ring: &Ring,
        spec: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyDict>>,
        take_over: bool,
    ) -> PyResult<TypedProducer> {
        let take = match take_over {
            true => shmpipe::Ring::take_over_producer,
            false => shmpipe::Ring::producer,
        };
        let (p, dtype) = claim(ring, spec, kwargs, take)?;
        Ok(TypedProducer {
            side: Held::new(p, "producer"),
            dtype,
        })
    }

    /// `values` as a C-contiguous array of our dtype (a copy only if it is not one already).
    fn values<'py>(&self, values: &Bound<'py, PyAny>) -> PyResult<Buffer> {
        let py = values.py();
        let np = py.import("numpy")?;
        let arr = np
            .getattr("ascontiguousarray")?
            .call1((values, self.dtype.obj.bind(py)))?;
        Buffer::get(&arr, false)
    }
}

impl Closing for TypedProducer {}

side_methods! {
impl TypedProducer {
    /// Sends every value of `values` (an array of the dtype, or one value), as many per publish
    /// as fit; waits for room at most `timeout` seconds each time the ring is full.
    #[pyo3(signature = (values, timeout=None))]
    fn send(
        &self,
        py: Python<'_>,
        values: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let timeout = seconds(timeout)?;
        let buf = self.values(values)?;
        let size = self.dtype.size as usize;
        self.side.with(|p| {
            let mut rest = buf.bytes(py);
            while !rest.is_empty() {
                rest = &rest[batch(py, p, rest, size)? * size..];
                if let Some(next) = rest.get(..size) {
                    // Full: wait for room for one, then batch again.
                    send_bytes(py, p, next, timeout)?;
                    rest = &rest[size..];
                }
            }
            Ok(())
        })
    }

    /// Sends as many values of `values` as fit now, with one publish, and returns how many;
    /// raises `Full` if none fit.
    fn try_send(&self, py: Python<'_>, values: &Bound<'_, PyAny>) -> PyResult<usize> {
        let buf = self.values(values)?;
        let size = self.dtype.size as usize;
        self.side.with(|p| {
            let all = buf.bytes(py);
            let n = batch(py, p, all, size)?;
            if n == 0 && !all.is_empty() {
                return Err(errors::from_try_send(py, TrySendError::Full));
            }
            Ok(n)
        })
    }

    /// The dtype of the values.
    #[getter]
    fn dtype(&self, py: Python<'_>) -> Py<PyAny> {
        self.dtype.obj.clone_ref(py)
    }
}
}

/// Sends the values of `bytes` (`size` each) that fit now, published with one store; returns
/// how many.
fn batch(py: Python<'_>, p: &mut shmpipe::Producer, bytes: &[u8], size: usize) -> PyResult<usize> {
    let mut b = p.batch();
    let mut n = 0;
    for value in bytes.chunks_exact(size) {
        match b.try_send(value) {
            Ok(()) => n += 1,
            Err(TrySendError::Full) => break,
            Err(e) => return Err(errors::from_try_send(py, e)),
        }
    }
    b.publish();
    Ok(n)
}

/// The receiving side of a typed ring: `Ring.typed_consumer(dtype, tag=...)`.
#[pyclass(module = "shmpipe", name = "TypedConsumer", frozen)]
pub struct TypedConsumer {
    side: Held<shmpipe::Consumer>,
    dtype: Dtype,
    /// Set when a message was not one value long: corruption, sticky as in Rust.
    poisoned: Mutex<Option<String>>,
}

impl TypedConsumer {
    pub(crate) fn claim(
        ring: &Ring,
        spec: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyDict>>,
        take_over: bool,
    ) -> PyResult<TypedConsumer> {
        let take = match take_over {
            true => shmpipe::Ring::take_over_consumer,
            false => shmpipe::Ring::consumer,
        };
        let (c, dtype) = claim(ring, spec, kwargs, take)?;
        Ok(TypedConsumer {
            side: Held::new(c, "consumer"),
            dtype,
            poisoned: Mutex::new(None),
        })
    }

    /// Fills `buf` with whole values: the first waited for (unless `blocking` is false), then
    /// whatever else is waiting, released with one store. Returns how many.
    fn fill(
        &self,
        py: Python<'_>,
        buf: &Buffer,
        timeout: Option<f64>,
        blocking: bool,
    ) -> PyResult<usize> {
        let timeout = seconds(timeout)?;
        let size = self.dtype.size as usize;
        let count = buf.len() / size;
        if count == 0 || buf.len() % size != 0 {
            return Err(PyValueError::new_err(format!(
                "the buffer holds {} bytes: not a positive number of {size}-byte values",
                buf.len()
            )));
        }
        let mut poisoned = self.poisoned.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(what) = poisoned.as_ref() {
            return Err(PyErr::new::<errors::Corrupted, _>(what.clone()));
        }
        let wrong =
            |len: usize| format!("a message of {len} bytes in a typed ring of {size}-byte values");
        let result = self.side.with(|c| {
            let first = next_message(py, c, timeout, blocking, |py, m| {
                if m.len() != size {
                    return Ok(Err(m.len()));
                }
                Ok(Ok(m.copy_to(&mut buf.bytes_mut(py)[..size])))
            })?;
            if let Err(len) = first {
                return Ok(Err(len));
            }
            let out = buf.bytes_mut(py);
            let mut b = c.batch();
            for (n, value) in out.chunks_exact_mut(size).enumerate().skip(1) {
                match b.try_recv(value) {
                    Ok(len) if len == size => {}
                    Ok(len) => return Ok(Err(len)),
                    // Anything else (end of stream, corruption) is reported by the next call;
                    // the values received so far are the caller's.
                    Err(TryRecvError::Empty) | Err(_) => return Ok(Ok(n)),
                }
            }
            Ok(Ok(count))
        })?;
        result.map_err(|len| {
            let what = wrong(len);
            *poisoned = Some(what.clone());
            PyErr::new::<errors::Corrupted, _>(what)
        })
    }

    /// A new array of `max_count` values of our dtype, and its buffer.
    fn empty<'py>(
        &self,
        py: Python<'py>,
        max_count: usize,
    ) -> PyResult<(Bound<'py, PyAny>, Buffer)> {
        if max_count == 0 {
            return Err(PyValueError::new_err("max_count must be at least 1"));
        }
        let np = py.import("numpy")?;
        let arr = np
            .getattr("empty")?
            .call1((max_count, self.dtype.obj.bind(py)))?;
        let buf = Buffer::get(&arr, true)?;
        Ok((arr, buf))
    }

    /// `arr[:n]`.
    fn head<'py>(arr: Bound<'py, PyAny>, n: usize) -> PyResult<Bound<'py, PyAny>> {
        let py = arr.py();
        arr.get_item(pyo3::types::PySlice::new(py, 0, n as isize, 1))
    }
}

impl Closing for TypedConsumer {}

side_methods! {
impl TypedConsumer {
    /// Receives at least one value and at most `max_count` as a new array of the dtype,
    /// waiting for the first at most `timeout` seconds.
    #[pyo3(signature = (max_count=1, timeout=None))]
    fn recv<'py>(
        &self,
        py: Python<'py>,
        max_count: usize,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (arr, buf) = self.empty(py, max_count)?;
        let n = self.fill(py, &buf, timeout, true)?;
        drop(buf);
        TypedConsumer::head(arr, n)
    }

    /// As `recv` without waiting; raises `Empty` if no value is waiting.
    #[pyo3(signature = (max_count=1))]
    fn try_recv<'py>(&self, py: Python<'py>, max_count: usize) -> PyResult<Bound<'py, PyAny>> {
        let (arr, buf) = self.empty(py, max_count)?;
        let n = self.fill(py, &buf, None, false)?;
        drop(buf);
        TypedConsumer::head(arr, n)
    }

    /// Fills `array` (writable, C-contiguous, of the dtype's item size) from its start with
    /// at least one value, waiting at most `timeout` seconds for the first; returns how many.
    /// Allocates nothing.
    #[pyo3(signature = (array, timeout=None))]
    fn recv_into(
        &self,
        py: Python<'_>,
        array: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        if let Ok(dt) = array.getattr("dtype") {
            if !dt.eq(self.dtype.obj.bind(py))? {
                return Err(PyTypeError::new_err(format!(
                    "array of dtype {dt}, the ring carries {}",
                    self.dtype.obj.bind(py)
                )));
            }
        }
        let buf = Buffer::get(array, true)?;
        self.fill(py, &buf, timeout, true)
    }

    /// The dtype of the values.
    #[getter]
    fn dtype(&self, py: Python<'_>) -> Py<PyAny> {
        self.dtype.obj.clone_ref(py)
    }
}
}
