"""Recovering from a process that died holding a role (py_peer killed with SIGKILL): taking
its role over (bytes and typed), and gc of the ring it left."""

import numpy as np
import pytest

import shmpipe
from conftest import TAG, TICK, msg, segment_keys, shmid_of, wait_for


def claimed(ring, role, pid):
    """Waits until `pid` holds `role` ("producer" or "consumer") of `ring`."""
    wait_for(lambda: ring.stats()[f"{role}_pid"] == pid, f"pid {pid} to claim the {role}")


def test_take_over_the_producer_of_a_killed_process(key, spawn):
    """The peer fills the ring and waits for room; killed, its role is taken over and the
    stream goes on after the last message it published."""
    peer = spawn("send", hex(key), 1_000_000)
    wait_for(lambda: key in segment_keys(), "the peer's ring")
    with shmpipe.Ring.open(key) as ring:
        claimed(ring, "producer", peer.proc.pid)
        assert ring.holders() == ((peer.proc.pid, "alive"), None)
        with pytest.raises(shmpipe.RoleTaken, match="alive"):
            ring.take_over_producer()  # never from a live holder
        peer.kill()
        assert ring.holders() == ((peer.proc.pid, "dead"), None)
        with pytest.raises(shmpipe.RoleTaken, match="taken over"):
            ring.producer()  # a plain claim does not take a role over
        with ring.take_over_producer() as tx, ring.consumer() as rx:
            got = []
            while True:
                try:
                    got.append(rx.try_recv())
                except shmpipe.Empty:
                    break
            assert got and got == [msg(i) for i in range(len(got))]
            tx.send(b"after the takeover", timeout=30)
            assert rx.recv(timeout=30) == b"after the takeover"


def test_take_over_the_consumer_of_a_killed_process(key, spawn):
    """The peer receives msg(0..); killed after ten, its role is taken over and the new
    consumer gets what is sent next."""
    peer = spawn("recv", hex(key), 1_000_000)
    wait_for(lambda: key in segment_keys(), "the peer's ring")
    with shmpipe.Ring.open(key) as ring, ring.producer() as tx:
        claimed(ring, "consumer", peer.proc.pid)
        for i in range(10):
            tx.send(msg(i), timeout=30)
        wait_for(lambda: ring.stats()["received"] == 10, "the peer to receive 10 messages")
        with pytest.raises(shmpipe.RoleTaken, match="alive"):
            ring.take_over_consumer()
        peer.kill()
        with pytest.raises(shmpipe.RoleTaken, match="taken over"):
            ring.consumer()
        with ring.take_over_consumer() as rx:
            tx.send(msg(10), timeout=30)
            assert rx.recv(timeout=30) == msg(10)


def test_gc_removes_the_ring_a_killed_process_left(key, spawn):
    peer = spawn("send", hex(key), 1_000_000)
    wait_for(lambda: key in segment_keys(), "the peer's ring")
    shmid = shmid_of(key)
    # In use while its producer lives: kept.
    assert shmpipe.gc(key, dry_run=True) == []
    assert shmpipe.gc(shmid=shmid) == []
    assert key in segment_keys()
    peer.kill()
    # Stale now: a dry run names it and leaves it, here and in the scan of the whole system.
    assert shmpipe.gc(key, dry_run=True) == [shmid]
    assert shmid in shmpipe.gc(dry_run=True)
    assert key in segment_keys()
    # Removed (by key here; only this ring: other stale rings on the machine are not ours to
    # remove in a test).
    assert shmpipe.gc(key) == [shmid]
    assert key not in segment_keys()
    with pytest.raises(shmpipe.NotFound):
        shmpipe.gc(key)
    with pytest.raises(shmpipe.NotFound):
        shmpipe.gc(shmid=shmid)
    with pytest.raises(TypeError):
        shmpipe.gc(key, shmid=shmid)  # one target at most


def test_take_over_a_typed_producer(key, spawn):
    peer = spawn("send-ticks", hex(key), 1_000_000, "tag")
    wait_for(lambda: key in segment_keys(), "the peer's ring")
    with shmpipe.Ring.open(key) as ring:
        claimed(ring, "producer", peer.proc.pid)
        with pytest.raises(shmpipe.RoleTaken, match="alive"):
            ring.typed_producer(TICK, tag=TAG, take_over=True)
        peer.kill()
        with pytest.raises(shmpipe.RoleTaken, match="taken over"):
            ring.typed_producer(TICK, tag=TAG)
        with ring.typed_producer(TICK, tag=TAG, take_over=True) as tx:
            with ring.typed_consumer(TICK, tag=TAG) as rx:
                got = rx.try_recv(max_count=1 << 20)
                assert len(got) > 0 and (got["seq"] == np.arange(len(got))).all()
                tx.send(np.array([(12345, 0.5, 1, 0)], dtype=TICK), timeout=30)
                assert rx.recv(timeout=30)["seq"].tolist() == [12345]
