//! The exception hierarchy: one class per variant of the Rust errors (src/error.rs), all under
//! `shmpipe.Error`, each raised with the Rust error's message (which names the key, shmid or
//! path and what was wrong).

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::{PyTypeInfo, create_exception};
use shmpipe::{Error as E, RecvError, SendError, TryRecvError, TrySendError};

create_exception!(
    shmpipe,
    Error,
    PyException,
    "Base class of every error shmpipe raises."
);

/// Declares one subclass of `shmpipe.Error` per name, and `register` adding them all.
macro_rules! exceptions {
    ($($name:ident: $doc:literal,)*) => {
        $(create_exception!(shmpipe, $name, Error, $doc);)*

        /// Adds `Error` and every subclass to the module.
        pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
            m.add("Error", m.py().get_type::<Error>())?;
            $(m.add(stringify!($name), m.py().get_type::<$name>())?;)*
            Ok(())
        }
    };
}

exceptions! {
    Timeout: "The call waited as long as it was allowed to (`timeout`).",
    Disconnected: "The peer closed the ring cleanly (for a consumer: after every message was received).",
    PeerDied: "The peer process died (for a consumer: after every message it published was received). Attribute `pid`.",
    Corrupted: "The ring's shared memory broke the protocol (a hostile or broken peer); sticky: every later call fails too.",
    TooLarge: "The message is longer than the ring's maximum. Attributes `len` and `max`.",
    BufferTooSmall: "The next message does not fit the buffer given; it stays in the ring. Attributes `needed` and `available`.",
    Full: "`try_send`: the ring has no room now.",
    Empty: "`try_recv`: no message is waiting now.",
    WrongProcess: "The producer or consumer was claimed by another process (inherited across fork).",
    OutOfBounds: "An offset or length outside a message.",
    Exists: "A ring already exists at this key (or path).",
    NotFound: "No ring at this key, shmid (or path).",
    PermissionDenied: "The system refused access to the segment or file.",
    ForeignOwner: "The ring belongs to another user, or has a wider mode than accepted (`accept_owner`, `mode`).",
    SystemLimit: "A system limit (SHMMAX, SHMALL, ...) refused the ring.",
    Ftok: "ftok(path, id) failed.",
    Sys: "A system call failed.",
    InvalidConfig: "The configuration (shape, message type, ...) is invalid.",
    NotShmpipe: "The memory is not a shmpipe ring.",
    VersionMismatch: "The ring has another layout version.",
    SegmentTooSmall: "The segment is smaller than its header claims.",
    BadHeader: "The ring's header is invalid.",
    InitTimeout: "The ring's creator did not finish initialising it in time.",
    Locked: "Another process held the key's lock too long.",
    ConfigMismatch: "The existing ring's shape differs from the one demanded.",
    TypeMismatch: "The ring carries another message type (size, alignment or fingerprint differ), or none.",
    RoleTaken: "The producer or consumer role is held by another process: a live one, or a dead one for a plain claim (`Ring.take_over_producer` takes it from a dead one).",
    HugePages: "Huge pages were asked for and the system has none to give.",
    HugePagesNotAccepted: "The ring is in huge pages, which this opener did not accept.",
    SigbusBlocked: "SIGBUS is blocked in this thread, so a file or huge-page ring is refused.",
    LockMemory: "Locking the ring's memory failed.",
}

/// An exception of class `T` with `msg` and the attributes `attrs`.
fn raise<T: PyTypeInfo>(py: Python<'_>, msg: String, attrs: &[(&str, u64)]) -> PyErr {
    let err = PyErr::new::<T, _>(msg);
    for (name, value) in attrs {
        // Setting an attribute on a fresh exception instance cannot fail in practice; if it
        // did, the exception still carries the message.
        let _ = err.value(py).setattr(*name, *value);
    }
    err
}

/// The exception for an error of the library.
pub fn from_error(py: Python<'_>, e: E) -> PyErr {
    let msg = e.to_string();
    match e {
        E::Exists { .. } | E::FileExists { .. } => raise::<Exists>(py, msg, &[]),
        E::NotFound { .. } | E::FileNotFound { .. } => raise::<NotFound>(py, msg, &[]),
        E::PermissionDenied { .. } => raise::<PermissionDenied>(py, msg, &[]),
        E::ForeignOwner { .. } => raise::<ForeignOwner>(py, msg, &[]),
        E::SystemLimit { .. } => raise::<SystemLimit>(py, msg, &[]),
        E::Ftok { .. } => raise::<Ftok>(py, msg, &[]),
        E::Sys { .. } | E::File { .. } => raise::<Sys>(py, msg, &[]),
        E::InvalidConfig { .. } => raise::<InvalidConfig>(py, msg, &[]),
        E::NotShmpipe { .. } => raise::<NotShmpipe>(py, msg, &[]),
        E::VersionMismatch { .. } => raise::<VersionMismatch>(py, msg, &[]),
        E::SegmentTooSmall { .. } => raise::<SegmentTooSmall>(py, msg, &[]),
        E::BadHeader { .. } => raise::<BadHeader>(py, msg, &[]),
        E::InitTimeout { .. } => raise::<InitTimeout>(py, msg, &[]),
        E::Locked { .. } => raise::<Locked>(py, msg, &[]),
        E::ConfigMismatch { .. } => raise::<ConfigMismatch>(py, msg, &[]),
        E::TypeMismatch { .. } => raise::<TypeMismatch>(py, msg, &[]),
        E::RoleTaken { .. } => raise::<RoleTaken>(py, msg, &[]),
        E::HugePages { .. } => raise::<HugePages>(py, msg, &[]),
        E::HugePagesNotAccepted { .. } => raise::<HugePagesNotAccepted>(py, msg, &[]),
        E::SigbusBlocked { .. } => raise::<SigbusBlocked>(py, msg, &[]),
        E::LockMemory { .. } => raise::<LockMemory>(py, msg, &[]),
        E::Corrupted(_) => raise::<Corrupted>(py, msg, &[]),
        E::WrongProcess(_) => raise::<WrongProcess>(py, msg, &[]),
        E::OutOfBounds(_) => raise::<OutOfBounds>(py, msg, &[]),
        E::Full => raise::<Full>(py, msg, &[]),
        E::Empty => raise::<Empty>(py, msg, &[]),
        E::Timeout => raise::<Timeout>(py, msg, &[]),
        E::Disconnected { .. } => raise::<Disconnected>(py, msg, &[]),
        E::PeerDied { pid, .. } => raise::<PeerDied>(py, msg, &[("pid", u64::from(pid))]),
        E::TooLarge { len, max } => {
            raise::<TooLarge>(py, msg, &[("len", len as u64), ("max", max as u64)])
        }
        E::BufferTooSmall { needed, available } => raise::<BufferTooSmall>(
            py,
            msg,
            &[("needed", needed as u64), ("available", available as u64)],
        ),
        // `Error` is non-exhaustive: a variant added later is still a `shmpipe.Error`.
        _ => raise::<Error>(py, msg, &[]),
    }
}

/// The exception for a failed `send`/`send_timeout`.
pub fn from_send(py: Python<'_>, e: SendError) -> PyErr {
    from_error(py, e.into())
}

/// The exception for a failed `try_send`.
pub fn from_try_send(py: Python<'_>, e: TrySendError) -> PyErr {
    from_error(py, e.into())
}

/// The exception for a failed `recv`/`lend`.
pub fn from_recv(py: Python<'_>, e: RecvError) -> PyErr {
    from_error(py, e.into())
}

/// The exception for a failed `try_recv`/`try_lend`.
pub fn from_try_recv(py: Python<'_>, e: TryRecvError) -> PyErr {
    from_error(py, e.into())
}
