//! Status codes, the thread's last error, and the guard every entry point runs in: no panic
//! crosses into C, and every failure leaves a code and a message.

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use shmpipe_rs::{Corruption, Error};

/// What a call did. `SHMPIPE_STATUS_OK` (0) is success; every other value is a failure, and
/// `shmpipe_last_error_message` then describes it. The codes mirror the kinds of the Rust
/// library's errors (`shmpipe::Error`), plus a few of the C boundary (`NULL_POINTER`,
/// `INVALID_ARGUMENT`, `BAD_STATE`, `PANIC`). Values are stable; new ones may be added.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShmpipeStatus {
    /// Success.
    Ok = 0,
    /// The ring has no room for the message now (non-blocking send or reserve).
    Full = 1,
    /// No message is waiting (non-blocking receive or lend).
    Empty = 2,
    /// A blocking call's timeout passed first.
    Timeout = 3,
    /// The peer closed the ring. For a consumer: end of stream, every message was received.
    Disconnected = 4,
    /// The peer's process died (confirmed by the kernel); a consumer gets it after receiving
    /// every message the producer published.
    PeerDied = 5,
    /// The message is longer than the ring's maximum message size.
    TooLarge = 6,
    /// The next message does not fit in the buffer given; it stays in the ring and the length
    /// argument holds the size needed.
    BufferTooSmall = 7,
    /// The peer (or a third process) broke the protocol: this side is poisoned and every later
    /// call on it fails the same way. `shmpipe_last_corruption` says what was wrong.
    Corrupted = 8,
    /// The handle was claimed in another process (this one is a forked child).
    WrongProcess = 9,
    /// A range outside a message.
    OutOfBounds = 10,
    /// A segment already exists at the key.
    Exists = 20,
    /// No ring at this key or shmid.
    NotFound = 21,
    /// The kernel refused access to the segment.
    PermissionDenied = 22,
    /// The ring belongs to another user, or its mode is wider than the configuration allows.
    ForeignOwner = 23,
    /// A system limit (`SHMMAX`, `SHMMNI`, memory) was reached.
    SystemLimit = 24,
    /// `ftok` failed (the path does not exist, or the id is 0).
    Ftok = 25,
    /// Another system call failed; the message names it and the errno.
    Sys = 26,
    /// A file operation on a ring file or lock file failed.
    File = 27,
    /// Something already exists at the path.
    FileExists = 28,
    /// No ring file at the path.
    FileNotFound = 29,
    /// An impossible shape or option in the configuration.
    InvalidConfig = 30,
    /// The memory is not a shmpipe ring.
    NotShmpipe = 31,
    /// A ring of a layout version this build does not speak.
    VersionMismatch = 32,
    /// The memory is smaller than its header says.
    SegmentTooSmall = 33,
    /// A header field is invalid (or the descriptor is not a sealed memfd).
    BadHeader = 34,
    /// The creator did not finish initialising the ring in time.
    InitTimeout = 35,
    /// The key's or file's lock stayed held by another process.
    Locked = 36,
    /// The ring differs from a shape field the configuration set.
    ConfigMismatch = 37,
    /// The ring carries typed messages of another type.
    TypeMismatch = 38,
    /// Another live process (or handle) holds the role; a dead holder's role can be taken
    /// over (`shmpipe_ring_take_over_producer`, `shmpipe_ring_take_over_consumer`).
    RoleTaken = 39,
    /// The kernel refused huge pages, or could not back one.
    HugePages = 40,
    /// The ring is on huge pages and the configuration does not accept them.
    HugePagesNotAccepted = 41,
    /// `SIGBUS` is blocked on this thread, and the ring's memory could vanish under it.
    SigbusBlocked = 42,
    /// Locking the ring's memory (`mlock`) failed.
    LockMemory = 43,
    /// A required pointer argument was NULL.
    NullPointer = 60,
    /// An argument is out of range: a length, a flag, a wait strategy, a string that is not
    /// a path.
    InvalidArgument = 61,
    /// The call is not allowed in the handle's state: a reserved message, a lent message or a
    /// batch is open (or the call needs one and none is).
    BadState = 62,
    /// The library panicked (a bug); the handle may be unusable. The message has the panic's.
    Panic = 63,
    /// An error of a kind this version of the C API does not name.
    Other = 64,
}

/// What a peer got wrong, for `SHMPIPE_STATUS_CORRUPTED` (`shmpipe_last_corruption`). Mirrors the
/// Rust library's `shmpipe::Corruption`.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShmpipeCorruption {
    /// The last error was not `SHMPIPE_STATUS_CORRUPTED`.
    None = 0,
    /// The producer's tail is behind the head, behind a tail seen before, or too far ahead.
    TailOutOfRange = 1,
    /// The consumer's head moved backwards or past the published tail.
    HeadOutOfRange = 2,
    /// A record header declares more than the maximum message size.
    RecordTooLong = 3,
    /// A record would run past the end of the slot array.
    RecordOverrunsArray = 4,
    /// A record extends past the published tail.
    RecordBeyondTail = 5,
    /// A record header of an unknown kind.
    UnknownKind = 6,
    /// A padding record of the wrong length.
    BadPadding = 7,
    /// A padding record not followed by a published message.
    PaddingWithoutMessage = 8,
    /// A message of a typed ring that is not one value of its type.
    WrongMessageSize = 9,
    /// The ring's memory disappeared under the mapping (a truncated file, a lost huge page).
    MemoryLost = 10,
    /// This side's owner word was rewritten by another process.
    RoleLost = 11,
    /// The producer's claim count went down.
    ClaimsBackwards = 12,
    /// Messages were published but the producer's claim count is 0.
    PublishedWithoutClaim = 13,
    /// A kind this version of the C API does not name.
    Other = 14,
}

/// A failure on its way to C: its code, its message and, for a corruption, what was wrong.
#[derive(Debug)]
pub(crate) struct Fail {
    status: ShmpipeStatus,
    message: String,
    corruption: ShmpipeCorruption,
}

impl Fail {
    /// A failure of the C boundary itself (a NULL pointer, a bad argument or state).
    pub(crate) fn new(status: ShmpipeStatus, message: impl Into<String>) -> Fail {
        Fail {
            status,
            message: message.into(),
            corruption: ShmpipeCorruption::None,
        }
    }
}

/// Any error of the Rust library, as a failure (every one converts into `shmpipe::Error`).
pub(crate) fn fail(e: impl Into<Error>) -> Fail {
    let e: Error = e.into();
    let corruption = match &e {
        Error::Corrupted(c) => corruption_kind(&c.what),
        _ => ShmpipeCorruption::None,
    };
    Fail {
        status: status_of(&e),
        message: e.to_string(),
        corruption,
    }
}

/// A NULL pointer argument, named.
pub(crate) fn null(what: &str) -> Fail {
    Fail::new(ShmpipeStatus::NullPointer, format!("{what} is NULL"))
}

fn status_of(e: &Error) -> ShmpipeStatus {
    use ShmpipeStatus as S;
    match e {
        Error::Full => S::Full,
        Error::Empty => S::Empty,
        Error::Timeout => S::Timeout,
        Error::Disconnected { .. } => S::Disconnected,
        Error::PeerDied { .. } => S::PeerDied,
        Error::TooLarge { .. } => S::TooLarge,
        Error::BufferTooSmall { .. } => S::BufferTooSmall,
        Error::Corrupted(_) => S::Corrupted,
        Error::WrongProcess(_) => S::WrongProcess,
        Error::OutOfBounds(_) => S::OutOfBounds,
        Error::Exists { .. } => S::Exists,
        Error::NotFound { .. } => S::NotFound,
        Error::PermissionDenied { .. } => S::PermissionDenied,
        Error::ForeignOwner { .. } => S::ForeignOwner,
        Error::SystemLimit { .. } => S::SystemLimit,
        Error::Ftok { .. } => S::Ftok,
        Error::Sys { .. } => S::Sys,
        Error::File { .. } => S::File,
        Error::FileExists { .. } => S::FileExists,
        Error::FileNotFound { .. } => S::FileNotFound,
        Error::InvalidConfig { .. } => S::InvalidConfig,
        Error::NotShmpipe { .. } => S::NotShmpipe,
        Error::VersionMismatch { .. } => S::VersionMismatch,
        Error::SegmentTooSmall { .. } => S::SegmentTooSmall,
        Error::BadHeader { .. } => S::BadHeader,
        Error::InitTimeout { .. } => S::InitTimeout,
        Error::Locked { .. } => S::Locked,
        Error::ConfigMismatch { .. } => S::ConfigMismatch,
        Error::TypeMismatch { .. } => S::TypeMismatch,
        Error::RoleTaken { .. } => S::RoleTaken,
        Error::HugePages { .. } => S::HugePages,
        Error::HugePagesNotAccepted { .. } => S::HugePagesNotAccepted,
        Error::SigbusBlocked { .. } => S::SigbusBlocked,
        Error::LockMemory { .. } => S::LockMemory,
        _ => S::Other,
    }
}

fn corruption_kind(c: &Corruption) -> ShmpipeCorruption {
    use ShmpipeCorruption as K;
    match c {
        Corruption::TailOutOfRange { .. } => K::TailOutOfRange,
        Corruption::HeadOutOfRange { .. } => K::HeadOutOfRange,
        Corruption::RecordTooLong { .. } => K::RecordTooLong,
        Corruption::RecordOverrunsArray { .. } => K::RecordOverrunsArray,
        Corruption::RecordBeyondTail { .. } => K::RecordBeyondTail,
        Corruption::UnknownKind { .. } => K::UnknownKind,
        Corruption::BadPadding { .. } => K::BadPadding,
        Corruption::PaddingWithoutMessage { .. } => K::PaddingWithoutMessage,
        Corruption::WrongMessageSize { .. } => K::WrongMessageSize,
        Corruption::MemoryLost { .. } => K::MemoryLost,
        Corruption::RoleLost { .. } => K::RoleLost,
        Corruption::ClaimsBackwards { .. } => K::ClaimsBackwards,
        Corruption::PublishedWithoutClaim { .. } => K::PublishedWithoutClaim,
        _ => K::Other,
    }
}

/// The last failure of this thread, as C reads it.
struct Last {
    status: ShmpipeStatus,
    message: CString,
    corruption: ShmpipeCorruption,
}

thread_local! {
    static LAST: RefCell<Last> = RefCell::new(Last {
        status: ShmpipeStatus::Ok,
        message: CString::default(),
        corruption: ShmpipeCorruption::None,
    });
}

fn record(f: Fail) -> ShmpipeStatus {
    // A message is text from our own errors; a NUL in it (a path) would cut it short in C.
    let message = CString::new(f.message.replace('\0', "\\0")).unwrap_or_default();
    let status = f.status;
    // `try_with`: a call made while the thread is being torn down still returns its code.
    let _ = LAST.try_with(|last| {
        *last.borrow_mut() = Last {
            status,
            message,
            corruption: f.corruption,
        }
    });
    status
}

/// Runs an entry point's body: its result as a status, every failure recorded as the
/// thread's last error, and a panic caught (it must not unwind into C) and reported as
/// `SHMPIPE_STATUS_PANIC`.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Fail>) -> ShmpipeStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => ShmpipeStatus::Ok,
        Ok(Err(f)) => record(f),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with no message".into());
            record(Fail::new(
                ShmpipeStatus::Panic,
                format!("shmpipe panicked (a bug, please report it): {what}"),
            ))
        }
    }
}

/// A static description of a status code (any `int32_t`; an unknown one gets "unknown status
/// code"). Never NULL; the string lives for the whole program and must not be freed. For the
/// details of the last failure (which ring, which values) use `shmpipe_last_error_message`.
#[unsafe(no_mangle)]
pub extern "C" fn shmpipe_strerror(status: i32) -> *const c_char {
    use ShmpipeStatus as S;
    let codes = [
        (S::Ok, c"success"),
        (S::Full, c"ring is full"),
        (S::Empty, c"ring is empty"),
        (S::Timeout, c"timed out"),
        (S::Disconnected, c"the peer closed the ring"),
        (S::PeerDied, c"the peer's process died"),
        (
            S::TooLarge,
            c"message exceeds the ring's maximum message size",
        ),
        (S::BufferTooSmall, c"the message does not fit in the buffer"),
        (
            S::Corrupted,
            c"the peer broke the protocol (ring corrupted)",
        ),
        (S::WrongProcess, c"handle claimed by another process"),
        (S::OutOfBounds, c"range outside the message"),
        (S::Exists, c"a segment already exists at this key"),
        (S::NotFound, c"no such ring"),
        (S::PermissionDenied, c"permission denied"),
        (
            S::ForeignOwner,
            c"ring owned by another user or with too wide a mode",
        ),
        (S::SystemLimit, c"a system limit was reached"),
        (S::Ftok, c"ftok failed"),
        (S::Sys, c"a system call failed"),
        (S::File, c"a file operation failed"),
        (S::FileExists, c"a file already exists at this path"),
        (S::FileNotFound, c"no ring file at this path"),
        (S::InvalidConfig, c"invalid configuration"),
        (S::NotShmpipe, c"not a shmpipe ring"),
        (S::VersionMismatch, c"ring of another layout version"),
        (
            S::SegmentTooSmall,
            c"memory smaller than the ring's header says",
        ),
        (S::BadHeader, c"invalid ring header"),
        (S::InitTimeout, c"ring not initialised in time"),
        (S::Locked, c"lock held by another process"),
        (S::ConfigMismatch, c"ring differs from the configuration"),
        (S::TypeMismatch, c"ring carries another message type"),
        (S::RoleTaken, c"role held by another process"),
        (S::HugePages, c"huge pages refused or not backed"),
        (S::HugePagesNotAccepted, c"ring on huge pages not accepted"),
        (S::SigbusBlocked, c"SIGBUS is blocked on this thread"),
        (S::LockMemory, c"locking the ring's memory failed"),
        (S::NullPointer, c"NULL pointer argument"),
        (S::InvalidArgument, c"invalid argument"),
        (
            S::BadState,
            c"not allowed while a grant, lent message or batch is open (or without one)",
        ),
        (S::Panic, c"internal error (panic)"),
        (S::Other, c"other error"),
    ];
    codes
        .iter()
        .find(|(s, _)| *s as i32 == status)
        .map_or(c"unknown status code".as_ptr(), |(_, text)| text.as_ptr())
}

/// The message of the last call on this thread that failed: which ring, which values, what
/// to check. Never NULL (an empty string before any failure). The string belongs to the
/// library and stays valid until the next failing call on this thread; copy it to keep it.
#[unsafe(no_mangle)]
pub extern "C" fn shmpipe_last_error_message() -> *const c_char {
    LAST.try_with(|last| last.borrow().message.as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// The status of the last call on this thread that failed (`SHMPIPE_STATUS_OK` before any failure).
#[unsafe(no_mangle)]
pub extern "C" fn shmpipe_last_error() -> ShmpipeStatus {
    LAST.try_with(|last| last.borrow().status)
        .unwrap_or(ShmpipeStatus::Ok)
}

/// What was wrong, if the last call on this thread that failed returned `SHMPIPE_STATUS_CORRUPTED`;
/// `SHMPIPE_CORRUPTION_NONE` otherwise.
#[unsafe(no_mangle)]
pub extern "C" fn shmpipe_last_corruption() -> ShmpipeCorruption {
    LAST.try_with(|last| last.borrow().corruption)
        .unwrap_or(ShmpipeCorruption::None)
}
