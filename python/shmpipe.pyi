"""shmpipe: a lock-free single-producer/single-consumer ring buffer between two processes, in
shared memory (Linux), that does not trust the peer.

Either side may be Python, Rust (the ``shmpipe`` crate) or anything that speaks the byte
protocol (docs/LAYOUT.md). A ring lives in a System V segment (by ``key``, ``ftok=`` or
``shmid=``), in a file (``path=``) or in a memfd handed to the other process as a file
descriptor (``memfd=True``, then ``fd=``)::

    import shmpipe
    with shmpipe.Ring.open_or_create(0x2020) as ring, ring.consumer() as rx:
        for msg in rx:              # bytes, until the producer closes the ring
            print(msg)

    # the other process
    with shmpipe.Ring.open_or_create(0x2020) as ring, ring.producer() as tx:
        tx.send(b"hello")

Blocking calls release the GIL while they wait and raise ``KeyboardInterrupt`` within 0.1 s of
Ctrl-C. Errors are subclasses of :class:`Error` named like the Rust errors (``Timeout``,
``Disconnected``, ``PeerDied``, ``Corrupted``, ``TooLarge``, ...), with the Rust message, which
names the key, shmid or path.

The peer is not trusted: the ring's memory reaches Python only as copies (``recv`` makes
``bytes``, ``recv_into`` fills your buffer without allocating), except through
:meth:`Consumer.lend_unsafe`, whose contract says what a hostile peer can do to the view.

Each producer or consumer belongs to one thread at a time: a second thread calling it meanwhile
gets ``RuntimeError``.
"""

import os
from typing import (
    Any, Callable, Iterator, List, Literal, Optional, Tuple, TypedDict, TypeVar, Union,
)

from typing_extensions import Buffer, Self

__version__: str

_T = TypeVar("_T")
_Path = Union[str, "os.PathLike[str]"]
_Holder = Optional[Tuple[int, Literal["alive", "dead", "unknown"]]]

class _Stats(TypedDict):
    """:meth:`Ring.stats` (a ``dict`` at run time): the ring's shared counters at one moment,
    read from memory the peer can write (information to display, not to act on)."""

    tail: int
    """The producer's published tail (a slot counter)."""
    head: int
    """The consumer's released head (a slot counter)."""
    used_slots: int
    """``tail - head``: slots holding messages not yet released."""
    sent: int
    """Messages published so far."""
    received: int
    """Messages released so far."""
    producer_pid: int
    """The pid holding the producer role, 0 if none."""
    consumer_pid: int
    """The pid holding the consumer role, 0 if none."""

class Ring:
    """A ring in shared memory: a SysV segment, a file or a memfd. Claim one side of it with
    :meth:`producer` or :meth:`consumer` (one producer and one consumer per ring, across all
    processes), or :meth:`typed_producer` / :meth:`typed_consumer` for a typed ring.

    The constructors take the place as exactly one of:

    - ``key``: a SysV key, any 32-bit value but 0 (e.g. ``0x2020``);
    - ``ftok=(path, id)``: the key ``ftok(3)`` derives from an existing file and an id 1..255;
    - ``shmid=``: an existing segment by id (:meth:`open` only);
    - ``private=True``: a new segment reachable only by :attr:`shmid` (:meth:`create` only);
    - ``path=``: a ring file, e.g. in ``/dev/shm`` or on a disk;
    - ``memfd=True``: a new anonymous memfd (:meth:`create` only): no key, nothing in ``ipcs``,
      nothing to remove; the memory goes with the last descriptor and mapping of it. Hand
      :attr:`memfd` to the other process, e.g. ``subprocess.Popen(..., pass_fds=[ring.memfd])``
      or across ``os.fork``, which opens it with ``fd=``;
    - ``fd=``: the descriptor number of a ring's memfd in this process (:meth:`open` only). The
      ring works on its own duplicate: the caller still owns ``fd`` and may close it at once.
      A descriptor that is not a memfd sealed against resizing is refused (``BadHeader``), as
      is one another user created (``ForeignOwner``).

    and these keywords (all optional; the Rust ``RingConfig``):

    - ``slot_size``, ``slot_count``, ``max_message``: the shape. :meth:`create` makes it
      (defaults: 4096 slots of 64 bytes, ``max_message`` half the ring); an opener joins any
      shape unless it sets one of these, which must then match (``ConfigMismatch``);
      ``join_any_shape=True`` keeps them for creating only;
    - ``mode`` (default ``0o600``), ``accept_owner`` (a uid or a list of uids): whose rings an
      opener accepts (``ForeignOwner`` otherwise);
    - ``persistent``: the ring outlives its last holder (default: removed then);
    - ``init_timeout``: seconds an opener waits for a creator to finish (default 1);
    - ``huge_pages``, ``accept_huge_pages``;
    - ``dtype`` with one of ``tag=``, ``rust_type=``, ``fingerprint=``: a typed ring (see
      :meth:`typed_consumer`).

    A ring is a context manager; :meth:`close` detaches this handle (sides claimed from it stay
    usable). A ring is removed when both sides are gone unless ``persistent``.
    """

    @classmethod
    def create(cls, key: Optional[int] = None, **kwargs: Any) -> "Ring":
        """Creates a new ring (mode 0600 by default); raises ``Exists`` if one is there."""
    @classmethod
    def open(cls, key: Optional[int] = None, **kwargs: Any) -> "Ring":
        """Opens an existing ring; raises ``NotFound`` if there is none, ``InitTimeout`` if its
        creator does not finish in ``init_timeout`` seconds."""
    @classmethod
    def open_or_create(cls, key: Optional[int] = None, **kwargs: Any) -> "Ring":
        """Opens the ring, or creates it if there is none: either side may start first (and a
        stale ring a crash left is recycled)."""
    def producer(self) -> "Producer":
        """Claims the producer role; raises ``RoleTaken`` if a process holds it, alive or dead
        (:meth:`take_over_producer` takes it from a dead one)."""
    def consumer(self) -> "Consumer":
        """Claims the consumer role; raises ``RoleTaken`` if a process holds it, alive or dead
        (:meth:`take_over_consumer` takes it from a dead one)."""
    def take_over_producer(self) -> "Producer":
        """Claims the producer role from a holder that died without closing (killed, crashed).
        The kernel must confirm the death (its pid and start time are gone from ``/proc``, or it
        no longer maps the ring: it called ``exec``); a slow or stopped holder is alive, and one
        in another pid namespace is never judged: both raise ``RoleTaken``. The stream goes on
        after the last message the dead producer published; what it had written but not
        published is overwritten. :meth:`producer` never takes a role over: it raises
        ``RoleTaken`` whether the holder lives or not (:meth:`holders` tells which)::

            try:
                tx = ring.producer()
            except shmpipe.RoleTaken:
                tx = ring.take_over_producer()   # only if its holder is dead
        """
    def take_over_consumer(self) -> "Consumer":
        """Claims the consumer role from a holder that died without closing, as
        :meth:`take_over_producer`. Messages the dead consumer had received but not released
        are received again."""
    def typed_producer(
        self,
        dtype: Any,
        *,
        take_over: bool = False,
        tag: Optional[str] = None,
        rust_type: Optional[str] = None,
        fingerprint: Optional[int] = None,
    ) -> "TypedProducer":
        """Claims the producer role of a typed ring of ``dtype``; see :meth:`typed_consumer`.
        ``take_over=True`` claims it from a dead holder (:meth:`take_over_producer`)."""
    def typed_consumer(
        self,
        dtype: Any,
        *,
        take_over: bool = False,
        tag: Optional[str] = None,
        rust_type: Optional[str] = None,
        fingerprint: Optional[int] = None,
    ) -> "TypedConsumer":
        """Claims the consumer role of a typed ring whose values are NumPy ``dtype``.

        ``dtype`` must be plain data (no Python objects) and, if structured, made with
        ``align=True``, which lays it out as C (and Rust's ``#[repr(C)]``) lays out the struct,
        e.g. for ``struct Tick { seq: u64, price: f64, qty: u32, side: u32 }``::

            numpy.dtype([("seq", "<u8"), ("price", "<f8"), ("qty", "<u4"), ("side", "<u4")],
                        align=True)

        The ring records the Rust type's size, alignment and a 64-bit fingerprint; the claim
        is refused with ``TypeMismatch``, before the role is taken, unless the dtype's
        ``itemsize`` and ``alignment`` equal them and the fingerprint named by exactly one of
        these equals the recorded one:

        - ``tag="acme.Tick/v2"``: a name both sides agree on (Rust: ``RingConfig::
          message_type_tagged::<Tick>(type_tag("acme.Tick/v2"))``); see :func:`type_tag`;
        - ``rust_type="my_crate::Tick"``: the Rust peer's ``std::any::type_name::<Tick>()``,
          for a ring made with Rust's default ``message_type::<Tick>()``; see
          :func:`type_fingerprint`;
        - ``fingerprint=``: the value itself.

        Field names and types are not recorded: a dtype of the same size and alignment with
        other fields passes, which is what the fingerprint is for.

        ``take_over=True`` claims the role from a dead holder (:meth:`take_over_consumer`).
        """
    def stats(self) -> _Stats:
        """The shared counters now: messages sent and received, slots in use, the pids holding
        the roles (Rust ``Ring::status``, C ``shmpipe_ring_stats``)."""
    def holders(self) -> Tuple[_Holder, _Holder]:
        """``(producer, consumer)``: each None if the role is free, else ``(pid, liveness)``
        with the kernel's word on the holder: ``"alive"``, ``"dead"`` (its role may be taken
        over) or ``"unknown"`` (another pid namespace)."""
    def remove(self) -> None:
        """Marks the segment or file for removal now; attached sides keep working. Nothing to
        do for a memfd ring."""
    def close(self) -> None:
        """Detaches this handle. Idempotent."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: Any) -> bool: ...
    @property
    def shmid(self) -> Optional[int]:
        """The SysV shmid, or None for a file ring."""
    @property
    def path(self) -> Optional[str]:
        """The ring file's path, or None for a SysV ring."""
    @property
    def memfd(self) -> Optional[int]:
        """The memfd of a memfd ring, or None. It belongs to this handle (close-on-exec): hand
        it to another process (``pass_fds``, ``os.fork``), do not close it."""
    @property
    def slot_size(self) -> int: ...
    @property
    def slot_count(self) -> int: ...
    @property
    def max_message(self) -> int:
        """The largest message in bytes."""
    @property
    def is_persistent(self) -> bool: ...
    @property
    def message_type(self) -> Optional[Tuple[int, int, int]]:
        """``(size, align, fingerprint)`` of a typed ring, or None for a byte ring."""

class Producer:
    """The sending side of a ring (:meth:`Ring.producer`). A context manager: leaving it, or
    :meth:`close`, ends the stream cleanly, and the consumer then gets ``Disconnected`` after
    the last message."""

    def send(self, data: Buffer, timeout: Optional[float] = None) -> None:
        """Sends one message: any bytes-like object (``bytes``, ``bytearray``, ``memoryview``,
        a C-contiguous NumPy array), copied into the ring. Waits while the ring is full, at
        most ``timeout`` seconds (None: no limit), with the GIL released.

        Raises ``Timeout``, ``TooLarge`` (longer than :attr:`max_message`), ``Disconnected``
        (the consumer closed the ring), ``PeerDied`` (its process died), ``Corrupted``.
        """
    def try_send(self, data: Buffer) -> None:
        """Sends one message if there is room now; raises ``Full`` if not."""
    @property
    def max_message(self) -> int: ...
    @property
    def peer_has_come(self) -> bool:
        """Whether a consumer has ever attached."""
    def close(self) -> None:
        """Ends the stream cleanly. Raises ``Corrupted`` if another process took the role
        meanwhile. Idempotent."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: Any) -> bool: ...

class Consumer:
    """The receiving side of a ring (:meth:`Ring.consumer`). Iterating over it yields each
    message as ``bytes`` until the producer closes the ring (``PeerDied`` and other errors are
    raised). A context manager; :meth:`close` closes it."""

    def recv(self, timeout: Optional[float] = None) -> bytes:
        """The next message as ``bytes`` (one copy out of the ring). Waits at most ``timeout``
        seconds (None: no limit) with the GIL released.

        Raises ``Timeout``, ``Disconnected`` (the producer closed the ring and every message
        was received), ``PeerDied`` (its process died; every message it published was
        received), ``Corrupted`` (the peer broke the protocol; sticky).
        """
    def try_recv(self) -> bytes:
        """The next message if one is waiting; raises ``Empty`` if not."""
    def recv_into(self, buffer: Buffer, timeout: Optional[float] = None) -> int:
        """Copies the next message into ``buffer`` (writable and C-contiguous: ``bytearray``,
        ``memoryview``, NumPy array, ``mmap``) from its start and returns its length. Allocates
        nothing: the fast way to receive. Raises ``BufferTooSmall`` (attributes ``needed``,
        ``available``) if it does not fit; the message then stays in the ring. Other errors
        as :meth:`recv`. The buffer must not be written by another thread during the call."""
    def lend_unsafe(
        self, callback: Callable[[memoryview], _T], timeout: Optional[float] = None
    ) -> _T:
        """Zero copy: calls ``callback(view)`` with the next message lent in place, as a
        read-only ``memoryview`` of the ring's shared memory, releases the message when the
        callback returns, and returns what it returned. Waits as :meth:`recv`.

        UNSAFE CONTRACT -- the view is memory the producer's process can write. A producer
        that follows the protocol never writes it while it is lent, and the view is then the
        message. One that breaks the protocol (hostile, buggy, or a third process with access
        to the segment) can change the bytes at any moment, also between two reads of the
        same byte: a length or checksum checked in the view may no longer hold when the data
        is used. What it cannot do: make the view point outside the ring, make it writable,
        or unmap it (Python stays memory-safe). Use it only with a producer you trust, or copy
        what you check out of the view first (``bytes(view)``, :meth:`recv_into`) and use the
        copy.

        The view is valid during the callback only: it is released when the callback returns
        (using it then raises ``ValueError``). An object made on it that keeps the buffer, such
        as ``numpy.frombuffer(view)``, must not outlive the callback either: the slots are the
        producer's again and show later messages. If one does, a ``RuntimeWarning`` says so,
        and :meth:`close` raises ``BufferError`` until it is gone.
        """
    @property
    def max_message(self) -> int: ...
    @property
    def peer_has_come(self) -> bool:
        """Whether a producer has ever attached."""
    def __iter__(self) -> Iterator[bytes]: ...
    def __next__(self) -> bytes: ...
    def close(self) -> None:
        """Closes the consumer: the producer's next send raises ``Disconnected``. Raises
        ``Corrupted`` if another process took the role meanwhile. Idempotent."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: Any) -> bool: ...

class UnsafeView:
    """The buffer exporter behind :meth:`Consumer.lend_unsafe`'s memoryview (read-only)."""

    def __len__(self) -> int: ...
    def __buffer__(self, flags: int) -> memoryview: ...

class TypedProducer:
    """The sending side of a typed ring (:meth:`Ring.typed_producer`)."""

    def send(self, values: Any, timeout: Optional[float] = None) -> None:
        """Sends every value of ``values`` (an array of :attr:`dtype`, or anything
        ``numpy.ascontiguousarray(values, dtype)`` accepts) in order, as many per publish
        (one store) as fit; waits for room at most ``timeout`` seconds each time the ring is
        full. Errors as :meth:`Producer.send`."""
    def try_send(self, values: Any) -> int:
        """Sends as many leading values of ``values`` as fit now (one publish) and returns
        how many; raises ``Full`` if none fit."""
    @property
    def dtype(self) -> Any: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: Any) -> bool: ...

class TypedConsumer:
    """The receiving side of a typed ring (:meth:`Ring.typed_consumer`): values arrive in
    NumPy arrays of :attr:`dtype`, copied out of the ring. Every message must be exactly one
    value long; one that is not is corruption (``Corrupted``, sticky)."""

    def recv(self, max_count: int = 1, timeout: Optional[float] = None) -> Any:
        """A new array of at least one and at most ``max_count`` values: the first waited
        for at most ``timeout`` seconds, then whatever else is waiting (released with one
        store). Errors as :meth:`Consumer.recv`."""
    def try_recv(self, max_count: int = 1) -> Any:
        """As :meth:`recv` without waiting; raises ``Empty`` if no value is waiting."""
    def recv_into(self, array: Any, timeout: Optional[float] = None) -> int:
        """Fills ``array`` (writable, C-contiguous, of :attr:`dtype`) from its start with at
        least one value and returns how many. Allocates nothing."""
    @property
    def dtype(self) -> Any: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: Any) -> bool: ...

def gc(
    key: Optional[int] = None,
    *,
    shmid: Optional[int] = None,
    dry_run: bool = False,
    accept_owner: Union[int, List[int], None] = None,
) -> List[int]:
    """Removes the SysV rings that dead processes left behind (``shmpipe gc``, Rust
    ``shmpipe::gc``): those nobody is attached to and no live process holds a role of, left by a
    crash (or closed and empty, or abandoned while being created). Never a segment that is not
    a shmpipe ring, one in use, one keeping messages for a consumer that may still come, a
    persistent one, nor another user's ring unless ``accept_owner`` names its owner.

    Every ring on the system (and the key lock files nobody holds), or only the one at ``key``
    or ``shmid`` (``NotFound`` if there is none, ``NotShmpipe`` if it is not a ring). Returns
    the shmids of the rings removed; with ``dry_run``, of those it would remove, removing
    nothing. Memfd rings need no collecting, and file rings are removed by path
    (:meth:`Ring.remove`).
    """

def type_tag(name: str) -> int:
    """The fingerprint of a tag: 64-bit FNV-1a of the name's UTF-8 bytes (Rust
    ``shmpipe::type_tag``)."""

def type_fingerprint(rust_type: str, size: int, align: int) -> int:
    """Rust's default fingerprint of a type (``shmpipe::type_fingerprint::<T>()``): FNV-1a of
    ``std::any::type_name::<T>()``, continued over its size and alignment as little-endian
    u64s."""

class Error(Exception):
    """Base class of every error shmpipe raises."""

class Timeout(Error):
    """The call waited as long as ``timeout`` allowed."""

class Disconnected(Error):
    """The peer closed the ring cleanly (for a consumer: after every message was received)."""

class PeerDied(Error):
    """The peer process died (for a consumer: after every message it published was
    received)."""

    pid: int

class Corrupted(Error):
    """The ring's memory broke the protocol (a hostile or broken peer); sticky."""

class TooLarge(Error):
    """The message is longer than the ring's maximum."""

    len: int
    max: int

class BufferTooSmall(Error):
    """The next message does not fit the buffer; it stays in the ring."""

    needed: int
    available: int

class Full(Error):
    """``try_send``: no room now."""

class Empty(Error):
    """``try_recv``: no message now."""

class WrongProcess(Error):
    """The side was claimed by another process (inherited across ``fork``)."""

class OutOfBounds(Error): ...

class Exists(Error):
    """A ring already exists at this key or path."""

class NotFound(Error):
    """No ring at this key, shmid or path."""

class PermissionDenied(Error): ...

class ForeignOwner(Error):
    """The ring belongs to another user, or its mode is wider than accepted (``mode=``,
    ``accept_owner=``)."""

class SystemLimit(Error): ...
class Ftok(Error): ...
class Sys(Error): ...
class InvalidConfig(Error): ...
class NotShmpipe(Error): ...
class VersionMismatch(Error): ...
class SegmentTooSmall(Error): ...
class BadHeader(Error): ...
class InitTimeout(Error): ...
class Locked(Error): ...

class ConfigMismatch(Error):
    """The existing ring's shape differs from the one demanded."""

class TypeMismatch(Error):
    """The ring carries another message type, or none."""

class RoleTaken(Error):
    """The role is held by another process: a live one, or a dead one for a plain claim
    (:meth:`Ring.take_over_producer` takes it from a dead one)."""

class HugePages(Error): ...
class HugePagesNotAccepted(Error): ...
class SigbusBlocked(Error): ...
class LockMemory(Error): ...
