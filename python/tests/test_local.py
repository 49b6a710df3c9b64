"""The Python API within one process: timeouts, errors, the GIL released while waiting,
zero-copy views, typed rings and dtype checks."""

import os
import threading
import time

import numpy as np
import pytest

import shmpipe
from conftest import TICK


@pytest.fixture
def ring():
    """A small ring reachable only by shmid, removed after the test."""
    r = shmpipe.Ring.create(private=True, slot_size=64, slot_count=64)
    yield r
    r.remove()
    r.close()


def test_recv_times_out(ring):
    rx = ring.consumer()
    for timeout in (0.0, 0.2):
        start = time.monotonic()
        with pytest.raises(shmpipe.Timeout, match="timed out"):
            rx.recv(timeout=timeout)
        waited = time.monotonic() - start
        assert timeout <= waited < timeout + 5  # never early; generous on a busy machine
    with pytest.raises(shmpipe.Empty):
        rx.try_recv()
    with pytest.raises(shmpipe.Timeout):
        rx.recv_into(bytearray(8), timeout=0.05)
    with pytest.raises(ValueError):
        rx.recv(timeout=-1)


def test_send_times_out_when_full(ring):
    tx, rx = ring.producer(), ring.consumer()
    sent = 0
    with pytest.raises(shmpipe.Full):
        while True:
            tx.try_send(b"x" * 50)
            sent += 1
    assert sent > 0
    start = time.monotonic()
    with pytest.raises(shmpipe.Timeout, match="room"):
        tx.send(b"y", timeout=0.2)
    assert time.monotonic() - start >= 0.2
    assert rx.recv() == b"x" * 50  # room again
    tx.send(b"y", timeout=5)


def test_errors_are_named_like_the_rust_errors(ring):
    tx = ring.producer()
    with pytest.raises(shmpipe.TooLarge) as e:
        tx.send(bytes(ring.max_message + 1))
    assert (e.value.len, e.value.max) == (ring.max_message + 1, ring.max_message)
    with pytest.raises(shmpipe.RoleTaken):
        ring.producer()
    with pytest.raises(shmpipe.NotFound):
        shmpipe.Ring.open(shmid=2**31 - 1)
    for cls in (shmpipe.Timeout, shmpipe.Disconnected, shmpipe.PeerDied, shmpipe.Corrupted,
                shmpipe.TooLarge, shmpipe.TypeMismatch, shmpipe.Exists, shmpipe.NotFound):
        assert issubclass(cls, shmpipe.Error)
    with pytest.raises(TypeError):
        shmpipe.Ring.open(0x5E000001, path="/dev/shm/x")  # two places
    with pytest.raises(TypeError):
        shmpipe.Ring.open(0x5E000001, slot_sise=64)  # a typo is not ignored


def test_exists_and_a_file_ring(tmp_path):
    path = tmp_path / "ring"
    with shmpipe.Ring.create(path=path, slot_size=64, slot_count=64) as ring:
        assert str(ring.path) == str(path)
        assert ring.shmid is None
        with pytest.raises(shmpipe.Exists):
            shmpipe.Ring.create(path=path)
        with shmpipe.Ring.open(path=path) as peer, peer.consumer() as rx:
            with ring.producer() as tx:
                tx.send(memoryview(b"by path"))
            assert list(rx) == [b"by path"]
        ring.remove()


def test_the_gil_is_released_while_waiting(ring):
    """A thread sends while the main thread waits in recv: with the GIL held the thread could
    not run, and the recv would time out."""
    tx, rx = ring.producer(), ring.consumer()

    def later():
        time.sleep(0.2)
        tx.send(b"from a thread")

    t = threading.Thread(target=later)
    t.start()
    assert rx.recv(timeout=30) == b"from a thread"
    t.join()


def test_a_side_is_used_by_one_thread_at_a_time(ring):
    rx = ring.consumer()
    errors = []
    t = threading.Thread(target=lambda: pytest.raises(shmpipe.Timeout, rx.recv, timeout=1))
    t.start()
    time.sleep(0.2)
    try:
        rx.try_recv()
    except RuntimeError as e:
        errors.append(e)
    t.join()
    assert errors and "another thread" in str(errors[0])


def test_recv_into_keeps_a_message_that_does_not_fit(ring):
    tx, rx = ring.producer(), ring.consumer()
    tx.send(b"0123456789")
    with pytest.raises(shmpipe.BufferTooSmall) as e:
        rx.recv_into(bytearray(4))
    assert (e.value.needed, e.value.available) == (10, 4)
    buf = np.zeros(16, dtype=np.uint8)
    assert rx.recv_into(buf) == 10
    assert buf[:10].tobytes() == b"0123456789"
    with pytest.raises(BufferError):
        rx.recv_into(b"read-only bytes")


def test_lend_unsafe_views_in_place(ring):
    tx, rx = ring.producer(), ring.consumer()
    tx.send(np.arange(4, dtype=np.uint32).tobytes())
    total = rx.lend_unsafe(lambda view: int(np.frombuffer(view, dtype=np.uint32).sum()))
    assert total == 6
    tx.send(b"read-only")
    with pytest.raises(TypeError):
        rx.lend_unsafe(lambda view: view.__setitem__(0, 0))
    kept = []
    tx.send(b"kept view")
    rx.lend_unsafe(kept.append)  # the memoryview itself is released after the callback
    with pytest.raises(ValueError, match="released"):
        bytes(kept.pop())
    tx.send(b"kept array")
    with pytest.warns(RuntimeWarning, match="outlived"):
        rx.lend_unsafe(lambda view: kept.append(np.frombuffer(view, dtype=np.uint8)))
    with pytest.raises(BufferError):
        rx.close()  # the view must not point at unmapped memory
    kept.clear()
    rx.close()


def test_typed_ring_in_process(ring):
    with shmpipe.Ring.create(private=True, slot_size=32, slot_count=64, dtype=TICK,
                             tag="t/v1") as typed:
        try:
            tx = typed.typed_producer(TICK, tag="t/v1")
            rx = typed.typed_consumer(TICK, tag="t/v1")
            values = np.zeros(100, dtype=TICK)
            values["seq"] = np.arange(100)
            n = tx.try_send(values)
            assert 0 < n < 100  # as many as fit
            got = rx.try_recv(max_count=1000)
            assert len(got) == n and (got == values[:n]).all()
            with pytest.raises(shmpipe.Empty):
                rx.try_recv()
            with pytest.raises(TypeError):
                rx.recv_into(np.zeros(4, dtype=np.float64))
        finally:
            typed.remove()


def test_dtypes_that_cannot_be_message_types(ring):
    with pytest.raises(ValueError, match="align=True"):
        shmpipe.Ring.create(private=True, dtype=[("a", "<u1"), ("b", "<u8")], tag="x")
    with pytest.raises(TypeError, match="objects"):
        shmpipe.Ring.create(private=True, dtype=object, tag="x")
    with pytest.raises(TypeError, match="exactly one"):
        shmpipe.Ring.create(private=True, dtype=TICK)
    with pytest.raises(shmpipe.TypeMismatch, match="untyped"):
        ring.typed_consumer(TICK, tag="x")  # a byte ring


def test_fingerprints_match_the_rust_definitions():
    assert shmpipe.type_tag("") == 0xCBF29CE484222325
    assert shmpipe.type_tag("a") == 0xAF63DC4C8601EC8C  # FNV-1a 64 test vector
    assert shmpipe.type_fingerprint("u64", 8, 8) != shmpipe.type_fingerprint("f64", 8, 8)


def test_stats_count_messages_and_name_the_holders(ring):
    s = ring.stats()
    assert set(s) == {"tail", "head", "used_slots", "sent", "received", "producer_pid",
                      "consumer_pid"}
    assert (s["used_slots"], s["sent"], s["received"]) == (0, 0, 0)
    assert (s["producer_pid"], s["consumer_pid"]) == (0, 0)
    assert ring.holders() == (None, None)
    tx, rx = ring.producer(), ring.consumer()
    for m in (b"a", b"bb", b"c" * 60):
        tx.send(m)
    s = ring.stats()
    assert (s["sent"], s["received"]) == (3, 0)
    assert s["used_slots"] == s["tail"] - s["head"] == 4  # 1 + 1 + 2 slots of 64 bytes
    assert (s["producer_pid"], s["consumer_pid"]) == (os.getpid(), os.getpid())
    assert ring.holders() == ((os.getpid(), "alive"), (os.getpid(), "alive"))
    assert [rx.recv() for _ in range(3)] == [b"a", b"bb", b"c" * 60]
    s = ring.stats()
    assert (s["used_slots"], s["received"]) == (0, 3)
    tx.close()
    rx.close()
    assert ring.holders() == (None, None)
