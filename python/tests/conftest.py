"""Fixtures of the Python tests: the Rust peer (python/examples/py_peer.rs), fresh SysV keys,
and a check that every test leaves no segment and no key lock file behind."""

import gc
import os
import random
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]

# The typed ring's value, as py_peer's `Tick` (a `#[repr(C)]` struct), and the tag both sides
# use for its fingerprint.
TICK = np.dtype(
    [("seq", "<u8"), ("price", "<f8"), ("qty", "<u4"), ("side", "<u4")], align=True
)
TAG = "shmpipe.test.Tick/v1"


def segment_keys():
    """The keys of the SysV segments that exist now (from /proc/sysvipc/shm)."""
    with open("/proc/sysvipc/shm") as f:
        next(f)
        return {int(line.split()[0]) & 0xFFFFFFFF for line in f if line.strip()}


def lock_file(key):
    """The per-key lock file shmpipe uses while recycling a key (docs/DESIGN.md)."""
    return Path(f"/dev/shm/.shmpipe-key-{key & 0xFFFFFFFF:08x}.lock")


def wait_for(cond, what, timeout=30.0):
    """Polls `cond` until it is true; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {timeout} s")
        time.sleep(0.01)


def msg(i):
    """Byte message i, as the peer (py_peer's `msg`) makes it."""
    return i.to_bytes(8, "little") + bytes((i + j) & 0xFF for j in range(i % 300))


def shmid_of(key):
    """The shmid of the segment at `key` (from /proc/sysvipc/shm)."""
    with open("/proc/sysvipc/shm") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields and int(fields[0]) & 0xFFFFFFFF == key:
                return int(fields[1])
    pytest.fail(f"no segment at key {key:#x}")


@pytest.fixture(scope="session")
def peer_bin():
    """The Rust peer: $SHMPIPE_PY_PEER, else built with cargo (debug profile)."""
    path = os.environ.get("SHMPIPE_PY_PEER")
    if path:
        return path
    subprocess.run(
        ["cargo", "build", "--quiet", "-p", "shmpipe-python", "--example", "py_peer"],
        cwd=REPO,
        check=True,
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return str(target / "debug" / "examples" / "py_peer")


@pytest.fixture
def key():
    """A key no segment has, and afterwards the check that the test left none at it (and no
    lock file): every ring is removed once both sides are gone."""
    existing = segment_keys()
    while True:
        k = random.randrange(0x5E000000, 0x5EFFFFFF)
        if k not in existing and not lock_file(k).exists():
            break
    yield k
    gc.collect()
    # The peer may still be detaching when the test returns.
    try:
        wait_for(lambda: k not in segment_keys(), f"segment at key {k:#x} to go", timeout=10)
    finally:
        # A test that failed with a killed peer's ring still there: remove it all the same.
        if k in segment_keys():
            subprocess.run(["ipcrm", "-M", hex(k)], check=False)
    assert not lock_file(k).exists()


@pytest.fixture(autouse=True)
def no_segment_leaked():
    """No test leaves a segment it made, whatever its key (private rings too)."""
    before = segment_ids()
    yield
    gc.collect()  # sides a test did not close, kept alive by a traceback's frames
    wait_for(lambda: not (segment_ids() - before), "new segments to go", timeout=10)


def segment_ids():
    """The shmids of the segments that exist now and belong to shmpipe's test keys or to no
    key (IPC_PRIVATE), created by this user."""
    uid = os.getuid()
    ids = set()
    with open("/proc/sysvipc/shm") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields and int(fields[9]) == uid:
                k = int(fields[0]) & 0xFFFFFFFF
                if k == 0 or 0x5E000000 <= k <= 0x5EFFFFFF:
                    ids.add(int(fields[1]))
    return ids


class Peer:
    """A running py_peer process."""

    def __init__(self, peer_bin, *args):
        self.proc = subprocess.Popen(
            [peer_bin, *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, timeout=60):
        """Waits for the peer; returns its stdout, failing the test if it failed."""
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"peer failed ({self.proc.returncode}): {out} {err}"
        return out.strip()

    def kill(self):
        self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def spawn(peer_bin):
    """Starts py_peer with arguments; every peer is reaped (killed if still running) after
    the test."""
    peers = []

    def start(*args):
        p = Peer(peer_bin, *args)
        peers.append(p)
        return p

    yield start
    for p in peers:
        if p.proc.poll() is None:
            p.kill()
