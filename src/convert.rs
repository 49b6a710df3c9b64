//! Every error into [`Error`] and into [`io::Error`], keeping its kind, so that `?` works in a
//! function returning `shmpipe::Error`, `io::Result` or `Box<dyn Error>`.
//!
//! Into [`Error`], a hot-path error becomes the flattened variant of the same meaning
//! ([`Error::Full`], [`Error::Disconnected`] naming the peer, ...), and a [`Corrupted`] or
//! [`WrongProcess`] inside one becomes [`Error::Corrupted`] or [`Error::WrongProcess`].
//!
//! Into [`io::Error`], each carries the original error as its payload (`get_ref()` /
//! `into_inner()` and `downcast_ref` recover it) and a kind chosen so that code written for
//! pipes and sockets does the right thing:
//!
//! | error | `io::ErrorKind` |
//! |---|---|
//! | `Full`, `Empty` | `WouldBlock` |
//! | `Timeout` | `TimedOut` |
//! | send `Disconnected`, send `PeerDied` | `BrokenPipe` (as writing to a closed pipe) |
//! | receive `Disconnected` | `UnexpectedEof`: a message was asked for and the stream had ended (the `io::Read` impl itself returns `Ok(0)` there) |
//! | receive `PeerDied` | `ConnectionAborted`: the stream was cut, not ended |
//! | `TooLarge`, `BufferTooSmall`, `OutOfBounds`, `InvalidConfig` | `InvalidInput` |
//! | `Corrupted` and a ring that is not shmpipe's or not as expected | `InvalidData` |
//! | `WrongProcess`, a refused owner or mode | `PermissionDenied` |
//! | an [`Error`] with an OS error inside | that OS error's kind; its errno is at `source()` |

use std::io::{self, ErrorKind};

use crate::error::{
    Corrupted, Error, OutOfBounds, RecvError, Role, SendError, TryRecvError, TrySendError,
    WrongProcess,
};

impl From<TrySendError> for Error {
    fn from(e: TrySendError) -> Error {
        match e {
            TrySendError::Full => Error::Full,
            TrySendError::TooLarge { len, max } => Error::TooLarge { len, max },
            TrySendError::Disconnected => Error::Disconnected {
                peer: Role::Consumer,
            },
            TrySendError::Corrupted(c) => Error::Corrupted(c),
            TrySendError::WrongProcess(w) => Error::WrongProcess(w),
        }
    }
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Error {
        match e {
            SendError::Timeout => Error::Timeout,
            SendError::Disconnected => Error::Disconnected {
                peer: Role::Consumer,
            },
            SendError::PeerDied { pid } => Error::PeerDied {
                peer: Role::Consumer,
                pid,
            },
            SendError::TooLarge { len, max } => Error::TooLarge { len, max },
            SendError::Corrupted(c) => Error::Corrupted(c),
            SendError::WrongProcess(w) => Error::WrongProcess(w),
        }
    }
}

impl From<TryRecvError> for Error {
    fn from(e: TryRecvError) -> Error {
        match e {
            TryRecvError::Empty => Error::Empty,
            TryRecvError::Disconnected => Error::Disconnected {
                peer: Role::Producer,
            },
            TryRecvError::BufferTooSmall { needed, available } => {
                Error::BufferTooSmall { needed, available }
            }
            TryRecvError::Corrupted(c) => Error::Corrupted(c),
            TryRecvError::WrongProcess(w) => Error::WrongProcess(w),
        }
    }
}

impl From<RecvError> for Error {
    fn from(e: RecvError) -> Error {
        match e {
            RecvError::Timeout => Error::Timeout,
            RecvError::Disconnected => Error::Disconnected {
                peer: Role::Producer,
            },
            RecvError::PeerDied { pid } => Error::PeerDied {
                peer: Role::Producer,
                pid,
            },
            RecvError::BufferTooSmall { needed, available } => {
                Error::BufferTooSmall { needed, available }
            }
            RecvError::Corrupted(c) => Error::Corrupted(c),
            RecvError::WrongProcess(w) => Error::WrongProcess(w),
        }
    }
}

/// `e` as an [`io::Error`]: the kind of the [`Error`] it converts into (so every error of one
/// meaning has one kind, decided in [`io_kind`]), and `e` itself as the payload.
fn into_io<E>(e: E) -> io::Error
where
    E: Clone + Into<Error> + std::error::Error + Send + Sync + 'static,
{
    io::Error::new(io_kind(&e.clone().into()), e)
}

impl From<TrySendError> for io::Error {
    fn from(e: TrySendError) -> io::Error {
        into_io(e)
    }
}

impl From<SendError> for io::Error {
    fn from(e: SendError) -> io::Error {
        into_io(e)
    }
}

impl From<TryRecvError> for io::Error {
    fn from(e: TryRecvError) -> io::Error {
        into_io(e)
    }
}

impl From<RecvError> for io::Error {
    fn from(e: RecvError) -> io::Error {
        into_io(e)
    }
}

impl From<Corrupted> for io::Error {
    fn from(e: Corrupted) -> io::Error {
        into_io(e)
    }
}

impl From<WrongProcess> for io::Error {
    fn from(e: WrongProcess) -> io::Error {
        into_io(e)
    }
}

impl From<OutOfBounds> for io::Error {
    fn from(e: OutOfBounds) -> io::Error {
        into_io(e)
    }
}

impl From<Error> for io::Error {
    /// The kind of the error's meaning (the table above); the [`Error`] is the payload, and an
    /// OS error inside it (with its errno) is the `source()`.
    fn from(e: Error) -> io::Error {
        io::Error::new(io_kind(&e), e)
    }
}

/// The `io::ErrorKind` of each meaning (the table above).
fn io_kind(e: &Error) -> ErrorKind {
    match e {
        Error::Exists { .. } | Error::FileExists { .. } => ErrorKind::AlreadyExists,
        Error::NotFound { .. } | Error::FileNotFound { .. } => ErrorKind::NotFound,
        Error::PermissionDenied { .. }
        | Error::ForeignOwner { .. }
        | Error::HugePagesNotAccepted { .. }
        | Error::WrongProcess(_) => ErrorKind::PermissionDenied,
        Error::SystemLimit { source, .. }
        | Error::Ftok { source, .. }
        | Error::Sys { source, .. }
        | Error::File { source, .. }
        | Error::HugePages { source, .. }
        | Error::LockMemory { source, .. } => source.kind(),
        Error::InvalidConfig { .. }
        | Error::OutOfBounds(_)
        | Error::TooLarge { .. }
        | Error::BufferTooSmall { .. } => ErrorKind::InvalidInput,
        Error::NotShmpipe { .. }
        | Error::VersionMismatch { .. }
        | Error::SegmentTooSmall { .. }
        | Error::BadHeader { .. }
        | Error::ConfigMismatch { .. }
        | Error::TypeMismatch { .. }
        | Error::Corrupted(_) => ErrorKind::InvalidData,
        Error::InitTimeout { .. } | Error::Locked { .. } | Error::Timeout => ErrorKind::TimedOut,
        Error::RoleTaken { .. } => ErrorKind::ResourceBusy,
        Error::SigbusBlocked { .. } => ErrorKind::Other,
        Error::Full | Error::Empty => ErrorKind::WouldBlock,
        // The side facing a closed or dead peer: a producer's writes hit a broken pipe; a
        // consumer reads an ended stream, or one that was cut.
        Error::Disconnected {
            peer: Role::Consumer,
        }
        | Error::PeerDied {
            peer: Role::Consumer,
            ..
        } => ErrorKind::BrokenPipe,
        Error::Disconnected {
            peer: Role::Producer,
        } => ErrorKind::UnexpectedEof,
        Error::PeerDied {
            peer: Role::Producer,
            ..
        } => ErrorKind::ConnectionAborted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Corruption, Ident};
    use std::error::Error as _;

    fn corrupted() -> Corrupted {
        Corrupted {
            ring: Ident::shmid(7),
            what: Corruption::UnknownKind { at: 3, kind: 9 },
        }
    }

    fn wrong_process() -> WrongProcess {
        WrongProcess {
            ring: Ident::shmid(7),
            role: Role::Producer,
            claimer: 1,
            current: 2,
        }
    }

    /// `e` into `io::Error` has `kind`, and its payload is `e` again.
    fn io_keeps<E>(e: E, kind: ErrorKind)
    where
        E: Into<io::Error> + std::error::Error + PartialEq + Clone + Send + Sync + 'static,
    {
        let io: io::Error = e.clone().into();
        assert_eq!(io.kind(), kind, "{e:?}");
        assert_eq!(io.get_ref().and_then(|p| p.downcast_ref::<E>()), Some(&e));
    }

    #[test]
    fn try_send_errors_keep_their_kind() {
        let cases = [
            (TrySendError::Full, Error::Full, ErrorKind::WouldBlock),
            (
                TrySendError::TooLarge { len: 9, max: 8 },
                Error::TooLarge { len: 9, max: 8 },
                ErrorKind::InvalidInput,
            ),
            (
                TrySendError::Disconnected,
                Error::Disconnected {
                    peer: Role::Consumer,
                },
                ErrorKind::BrokenPipe,
            ),
            (
                TrySendError::Corrupted(corrupted()),
                Error::Corrupted(corrupted()),
                ErrorKind::InvalidData,
            ),
            (
                TrySendError::WrongProcess(wrong_process()),
                Error::WrongProcess(wrong_process()),
                ErrorKind::PermissionDenied,
            ),
        ];
        for (e, want, kind) in cases {
            assert_eq!(format!("{:?}", Error::from(e.clone())), format!("{want:?}"));
            io_keeps(e, kind);
        }
    }

    #[test]
    fn send_errors_keep_their_kind() {
        let cases = [
            (SendError::Timeout, Error::Timeout, ErrorKind::TimedOut),
            (
                SendError::Disconnected,
                Error::Disconnected {
                    peer: Role::Consumer,
                },
                ErrorKind::BrokenPipe,
            ),
            (
                SendError::PeerDied { pid: 42 },
                Error::PeerDied {
                    peer: Role::Consumer,
                    pid: 42,
                },
                ErrorKind::BrokenPipe,
            ),
            (
                SendError::TooLarge { len: 9, max: 8 },
                Error::TooLarge { len: 9, max: 8 },
                ErrorKind::InvalidInput,
            ),
            (
                SendError::Corrupted(corrupted()),
                Error::Corrupted(corrupted()),
                ErrorKind::InvalidData,
            ),
            (
                SendError::WrongProcess(wrong_process()),
                Error::WrongProcess(wrong_process()),
                ErrorKind::PermissionDenied,
            ),
        ];
        for (e, want, kind) in cases {
            assert_eq!(format!("{:?}", Error::from(e.clone())), format!("{want:?}"));
            io_keeps(e, kind);
        }
    }

    #[test]
    fn try_recv_errors_keep_their_kind() {
        let cases = [
            (TryRecvError::Empty, Error::Empty, ErrorKind::WouldBlock),
            (
                TryRecvError::Disconnected,
                Error::Disconnected {
                    peer: Role::Producer,
                },
                ErrorKind::UnexpectedEof,
            ),
            (
                TryRecvError::BufferTooSmall {
                    needed: 9,
                    available: 8,
                },
                Error::BufferTooSmall {
                    needed: 9,
                    available: 8,
                },
                ErrorKind::InvalidInput,
            ),
            (
                TryRecvError::Corrupted(corrupted()),
                Error::Corrupted(corrupted()),
                ErrorKind::InvalidData,
            ),
            (
                TryRecvError::WrongProcess(wrong_process()),
                Error::WrongProcess(wrong_process()),
                ErrorKind::PermissionDenied,
            ),
        ];
        for (e, want, kind) in cases {
            assert_eq!(format!("{:?}", Error::from(e.clone())), format!("{want:?}"));
            io_keeps(e, kind);
        }
    }

    #[test]
    fn recv_errors_keep_their_kind() {
        let cases = [
            (RecvError::Timeout, Error::Timeout, ErrorKind::TimedOut),
            (
                RecvError::Disconnected,
                Error::Disconnected {
                    peer: Role::Producer,
                },
                ErrorKind::UnexpectedEof,
            ),
            (
                RecvError::PeerDied { pid: 42 },
                Error::PeerDied {
                    peer: Role::Producer,
                    pid: 42,
                },
                ErrorKind::ConnectionAborted,
            ),
            (
                RecvError::BufferTooSmall {
                    needed: 9,
                    available: 8,
                },
                Error::BufferTooSmall {
                    needed: 9,
                    available: 8,
                },
                ErrorKind::InvalidInput,
            ),
            (
                RecvError::Corrupted(corrupted()),
                Error::Corrupted(corrupted()),
                ErrorKind::InvalidData,
            ),
            (
                RecvError::WrongProcess(wrong_process()),
                Error::WrongProcess(wrong_process()),
                ErrorKind::PermissionDenied,
            ),
        ];
        for (e, want, kind) in cases {
            assert_eq!(format!("{:?}", Error::from(e.clone())), format!("{want:?}"));
            io_keeps(e, kind);
        }
    }

    #[test]
    fn plain_errors_keep_their_kind() {
        io_keeps(corrupted(), ErrorKind::InvalidData);
        io_keeps(wrong_process(), ErrorKind::PermissionDenied);
        let oob = OutOfBounds {
            offset: 4,
            size: 8,
            len: 8,
        };
        io_keeps(oob, ErrorKind::InvalidInput);
        assert!(matches!(Error::from(corrupted()), Error::Corrupted(c) if c == corrupted()));
        assert!(
            matches!(Error::from(wrong_process()), Error::WrongProcess(w) if w == wrong_process())
        );
        assert!(matches!(Error::from(oob), Error::OutOfBounds(o) if o == oob));
    }

    #[test]
    fn crate_errors_into_io_keep_kind_payload_and_errno() {
        // An OS error inside: its kind outside, its errno one `source()` away.
        let e = Error::Sys {
            ident: Ident::shmid(7),
            op: "shmat",
            source: io::Error::from_raw_os_error(libc::EINVAL),
        };
        let io = io::Error::from(e);
        assert_eq!(io.kind(), ErrorKind::InvalidInput);
        let inner = io.get_ref().and_then(|p| p.downcast_ref::<Error>());
        assert!(
            matches!(inner, Some(Error::Sys { op: "shmat", .. })),
            "{io:?}"
        );
        let errno = io
            .source()
            .and_then(|s| s.downcast_ref::<io::Error>())
            .and_then(io::Error::raw_os_error);
        assert_eq!(errno, Some(libc::EINVAL));
        // The flattened hot-path kinds, and one of each other family.
        for (e, kind) in [
            (Error::Full, ErrorKind::WouldBlock),
            (Error::Empty, ErrorKind::WouldBlock),
            (Error::Timeout, ErrorKind::TimedOut),
            (
                Error::Disconnected {
                    peer: Role::Consumer,
                },
                ErrorKind::BrokenPipe,
            ),
            (
                Error::Disconnected {
                    peer: Role::Producer,
                },
                ErrorKind::UnexpectedEof,
            ),
            (
                Error::PeerDied {
                    peer: Role::Producer,
                    pid: 1,
                },
                ErrorKind::ConnectionAborted,
            ),
            (Error::Corrupted(corrupted()), ErrorKind::InvalidData),
            (
                Error::NotFound {
                    ident: Ident::shmid(7),
                },
                ErrorKind::NotFound,
            ),
            (
                Error::InvalidConfig { what: "x".into() },
                ErrorKind::InvalidInput,
            ),
        ] {
            let shown = e.to_string();
            let io = io::Error::from(e);
            assert_eq!(io.kind(), kind, "{shown}");
            let back = io.get_ref().and_then(|p| p.downcast_ref::<Error>());
            assert_eq!(back.map(ToString::to_string), Some(shown));
        }
    }
}
