"""A Python side against the Rust peer (python/examples/py_peer.rs): bytes and typed values in
both directions, each in both start orders, and a peer that dies."""

import numpy as np
import pytest

import shmpipe
from conftest import TAG, TICK, msg, segment_keys, wait_for

N = 3000

def ticks(start, stop):
    """Ticks start..stop, as the peer makes them."""
    seq = np.arange(start, stop, dtype=np.uint64)
    out = np.zeros(stop - start, dtype=TICK)
    out["seq"] = seq
    out["price"] = seq * 0.5
    out["qty"] = seq % 1000
    out["side"] = seq % 2
    return out


def start(order, key, spawn, *peer_args):
    """Starts the peer before the Python side opens the ring (`rust_first`, waiting for its
    segment) or after (`python_first`: the returned function starts it)."""
    if order == "rust_first":
        peer = spawn(*peer_args)
        wait_for(lambda: key in segment_keys() or peer.proc.poll() is not None, "the peer's ring")
        return lambda: peer
    return lambda: spawn(*peer_args)


ORDERS = ["python_first", "rust_first"]


@pytest.mark.parametrize("order", ORDERS)
def test_python_sends_rust_receives(order, key, spawn):
    later = start(order, key, spawn, "recv", hex(key), N)
    with shmpipe.Ring.open_or_create(key, slot_size=64, slot_count=256) as ring, ring.producer() as tx:
        peer = later()
        for i in range(N):
            tx.send(msg(i), timeout=30)
    assert peer.finish() == f"ok {N}"


@pytest.mark.parametrize("order", ORDERS)
def test_rust_sends_python_receives(order, key, spawn):
    later = start(order, key, spawn, "send", hex(key), N)
    with shmpipe.Ring.open_or_create(key, slot_size=64, slot_count=256) as ring, ring.consumer() as rx:
        peer = later()
        got = list(rx)  # ends at the peer's clean close
    assert len(got) == N
    assert got == [msg(i) for i in range(N)]
    assert peer.finish() == f"ok {N}"


@pytest.mark.parametrize("order", ORDERS)
def test_rust_sends_python_receives_into_a_buffer(order, key, spawn):
    later = start(order, key, spawn, "send", hex(key), N)
    buf = np.zeros(4096, dtype=np.uint8)
    with shmpipe.Ring.open_or_create(key, slot_size=64, slot_count=256) as ring, ring.consumer() as rx:
        peer = later()
        for i in range(N):
            n = rx.recv_into(buf, timeout=30)
            assert buf[:n].tobytes() == msg(i)
        with pytest.raises(shmpipe.Disconnected):
            rx.recv(timeout=30)
    peer.finish()


@pytest.mark.parametrize("order", ORDERS)
def test_typed_numpy_to_rust(order, key, spawn):
    later = start(order, key, spawn, "recv-ticks", hex(key), N, "tag")
    with shmpipe.Ring.open_or_create(
        key, slot_size=32, slot_count=256, dtype=TICK, tag=TAG
    ) as ring:
        assert ring.message_type == (24, 8, shmpipe.type_tag(TAG))
        with ring.typed_producer(TICK, tag=TAG) as tx:
            peer = later()
            all_ticks = ticks(0, N)
            tx.send(all_ticks[:1000], timeout=30)  # batches of as many as fit
            for t in all_ticks[1000:]:  # and one value at a time (a numpy.void)
                tx.send(t, timeout=30)
    assert peer.finish() == f"ok {N}"


@pytest.mark.parametrize("order", ORDERS)
def test_typed_rust_to_numpy(order, key, spawn):
    """The Rust side uses its default fingerprint (the type's name): Python names the type."""
    later = start(order, key, spawn, "send-ticks", hex(key), N, "default")
    cfg = dict(slot_size=32, slot_count=256, dtype=TICK, rust_type="py_peer::Tick")
    with shmpipe.Ring.open_or_create(key, **cfg) as ring:
        with ring.typed_consumer(TICK, rust_type="py_peer::Tick") as rx:
            peer = later()
            got = [rx.recv(max_count=100, timeout=30)]
            buf = np.zeros(64, dtype=TICK)
            while sum(map(len, got)) < N:
                n = rx.recv_into(buf, timeout=30)
                assert 1 <= n <= 64
                got.append(buf[:n].copy())
            with pytest.raises(shmpipe.Disconnected):
                rx.recv(timeout=30)
    got = np.concatenate(got)
    assert got.dtype == TICK
    assert (got == ticks(0, N)).all()
    assert peer.finish() == f"ok {N}"


def test_a_peer_of_another_type_is_refused(key, spawn):
    peer = spawn("send-ticks", hex(key), 10, "tag")
    wait_for(lambda: key in segment_keys(), "the peer's ring")
    with shmpipe.Ring.open(key) as ring:
        with pytest.raises(shmpipe.TypeMismatch, match="fingerprint"):
            ring.typed_consumer(TICK, tag="shmpipe.test.Tick/v2")
        with pytest.raises(shmpipe.TypeMismatch):
            ring.typed_consumer(np.dtype([("seq", "<u8"), ("x", "<u8")], align=True), tag=TAG)
        with pytest.raises(shmpipe.TypeMismatch):
            ring.typed_consumer(TICK, rust_type="py_peer::Tick")  # the peer used the tag
        # Refused before the role was taken: the right claim still succeeds.
        with ring.typed_consumer(TICK, tag=TAG) as rx:
            got = []
            while True:
                try:
                    got.append(rx.recv(max_count=10, timeout=30))
                except shmpipe.Disconnected:
                    break
    assert (np.concatenate(got) == ticks(0, 10)).all()
    peer.finish()


def test_the_peer_dying_is_peer_died(key, spawn):
    """The peer fills the ring and blocks; killed, its messages are still received, then
    PeerDied (not the end of the stream)."""
    peer = spawn("send", hex(key), 1_000_000)
    wait_for(lambda: key in segment_keys(), "the peer's ring")
    with shmpipe.Ring.open(key) as ring, ring.consumer() as rx:
        first = rx.recv(timeout=30)
        assert first == msg(0)
        peer.kill()
        with pytest.raises(shmpipe.PeerDied) as died:
            for _ in rx:
                pass
        assert died.value.pid == peer.proc.pid
        assert isinstance(died.value, shmpipe.Error)
