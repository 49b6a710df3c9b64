"""Rings in a memfd: no key, no segment; handed to another process as a file descriptor
(subprocess with pass_fds, or os.fork)."""

import hashlib
import os
import subprocess
import sys

import pytest

import shmpipe
from conftest import msg

N = 2000

# The other process: opens the ring from the descriptor number it is given and prints how
# many messages it received and their digest (each length-prefixed), until the clean close.
CHILD = """
import hashlib, sys
import shmpipe
with shmpipe.Ring.open(fd=int(sys.argv[1])) as ring, ring.consumer() as rx:
    h, n = hashlib.sha256(), 0
    for m in rx:
        h.update(len(m).to_bytes(4, "little") + m)
        n += 1
print(n, h.hexdigest())
"""


def digest(messages):
    h = hashlib.sha256()
    for m in messages:
        h.update(len(m).to_bytes(4, "little") + m)
    return h.hexdigest()


def test_a_memfd_ring_passed_to_a_subprocess():
    with shmpipe.Ring.create(memfd=True, slot_size=64, slot_count=256) as ring:
        assert ring.shmid is None and ring.path is None
        fd = ring.memfd
        assert isinstance(fd, int) and fd >= 0
        assert not os.get_inheritable(fd)  # close-on-exec unless handed over on purpose
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(fd)],
            pass_fds=[fd],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with ring.producer() as tx:
                for i in range(N):
                    tx.send(msg(i), timeout=30)
            out, err = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
    assert child.returncode == 0, err
    assert out.split() == [str(N), digest(msg(i) for i in range(N))]


def test_a_memfd_ring_shared_across_fork():
    with shmpipe.Ring.create(memfd=True, slot_size=64, slot_count=256) as ring:
        pid = os.fork()
        if pid == 0:  # the child: sends, and never returns into pytest
            code = 1
            try:
                with shmpipe.Ring.open(fd=ring.memfd) as mine, mine.producer() as tx:
                    for i in range(N):
                        tx.send(msg(i), timeout=30)
                code = 0
            finally:
                os._exit(code)
        with ring.consumer() as rx:
            got = list(rx)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert got == [msg(i) for i in range(N)]


def test_open_by_fd_duplicates_it_and_checks_it(tmp_path):
    with shmpipe.Ring.create(memfd=True, slot_size=64, slot_count=64) as ring:
        fd = os.dup(ring.memfd)
        with shmpipe.Ring.open(fd=fd) as peer:
            os.close(fd)  # the ring keeps its own copy
            assert peer.memfd is not None and peer.memfd != fd
            assert (peer.slot_size, peer.slot_count) == (64, 64)
            with ring.producer() as tx, peer.consumer() as rx:
                tx.send(b"through a memfd")
                assert rx.recv(timeout=30) == b"through a memfd"
    # Not a ring memfd: a plain file is refused, and so is a number that is no descriptor.
    with open(tmp_path / "plain", "wb+") as f:
        f.truncate(1 << 20)
        with pytest.raises(shmpipe.BadHeader):
            shmpipe.Ring.open(fd=f.fileno())
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(shmpipe.Sys):
        shmpipe.Ring.open(fd=r)
    with pytest.raises(TypeError):
        shmpipe.Ring.open(fd=True)  # a bool is not a descriptor
    with pytest.raises(TypeError):
        shmpipe.Ring.open_or_create(fd=0)  # a memfd ring is opened only
    with pytest.raises(TypeError):
        shmpipe.Ring.open(memfd=True)  # ...and made only by create
    with pytest.raises(TypeError):
        shmpipe.Ring.create(0x5E000001, memfd=True)  # one place
