"""Messages per second from Python between two processes: shmpipe against
multiprocessing.Queue and multiprocessing.shared_memory with a pipe for signalling.

    python python/bench/bench.py [--messages N] [--size BYTES] [--repeat R]

Each method moves N messages of SIZE bytes from a producer process to the consumer (this
process) and is timed by the consumer from before the first message to after the last, R times;
the best run is reported (each run's rate is printed too). The producer is forked after the
channel is made, and each message is a fresh `bytes` the consumer gets as a Python object (or,
for `recv_into`, in a buffer it reuses), so every method pays the same Python overhead per
message. docs/BENCHMARKS.md ("Python") has the method and results.
"""

import argparse
import json
import multiprocessing as mp
import os
import struct
import time
from multiprocessing import shared_memory

import shmpipe

CTX = mp.get_context("fork")


def payload(size):
    return bytes(range(256)) * (size // 256) + bytes(range(size % 256))


# --- shmpipe -------------------------------------------------------------------------------


def shmpipe_producer(shmid, n, size):
    msg = payload(size)
    with shmpipe.Ring.open(shmid=shmid) as ring, ring.producer() as tx:
        for _ in range(n):
            tx.send(msg)


def run_shmpipe(n, size, into):
    ring = shmpipe.Ring.create(private=True, slot_size=64, slot_count=4096)
    try:
        rx = ring.consumer()
        p = CTX.Process(target=shmpipe_producer, args=(ring.shmid, n, size))
        p.start()
        start = time.perf_counter()
        if into:
            buf = bytearray(size)
            for _ in range(n):
                rx.recv_into(buf)
        else:
            for _ in range(n):
                rx.recv()
        elapsed = time.perf_counter() - start
        p.join()
        rx.close()
        return elapsed
    finally:
        ring.remove()
        ring.close()


# --- multiprocessing.Queue -----------------------------------------------------------------


def queue_producer(q, n, size):
    msg = payload(size)
    for _ in range(n):
        q.put(msg)


def run_queue(n, size):
    q = CTX.Queue(maxsize=4096)
    p = CTX.Process(target=queue_producer, args=(q, n, size))
    p.start()
    start = time.perf_counter()
    for _ in range(n):
        q.get()
    elapsed = time.perf_counter() - start
    p.join()
    return elapsed


# --- multiprocessing.shared_memory + pipes ---------------------------------------------------
# A ring of SLOTS slots in a SharedMemory block: the producer writes message i into slot
# i % SLOTS and writes its length to a pipe; the consumer reads the length from the pipe,
# copies the message out, and returns a credit on a second pipe; the producer waits for a
# credit before reusing a slot. Lengths and credits are batched by the kernel's pipe buffer.

SLOTS = 256


def shm_producer(name, data_w, credit_r, n, size):
    shm = shared_memory.SharedMemory(name=name)
    msg = payload(size)
    credits = SLOTS
    hdr = struct.Struct("<I")
    try:
        for i in range(n):
            while credits == 0:
                credits += len(os.read(credit_r, 4096))
            off = (i % SLOTS) * size
            shm.buf[off : off + size] = msg
            os.write(data_w, hdr.pack(size))
            credits -= 1
    finally:
        shm.close()


def run_shared_memory(n, size):
    shm = shared_memory.SharedMemory(create=True, size=SLOTS * size)
    data_r, data_w = os.pipe()
    credit_r, credit_w = os.pipe()
    try:
        p = CTX.Process(target=shm_producer, args=(shm.name, data_w, credit_r, n, size))
        p.start()
        hdr = struct.Struct("<I")
        pending = b""
        start = time.perf_counter()
        for i in range(n):
            while len(pending) < 4:
                pending += os.read(data_r, 65536)
            (length,) = hdr.unpack_from(pending)
            pending = pending[4:]
            off = (i % SLOTS) * size
            bytes(shm.buf[off : off + length])
            os.write(credit_w, b"c")
        elapsed = time.perf_counter() - start
        p.join()
        return elapsed
    finally:
        for fd in (data_r, data_w, credit_r, credit_w):
            os.close(fd)
        shm.close()
        shm.unlink()


METHODS = {
    "shmpipe recv (bytes)": lambda n, s: run_shmpipe(n, s, into=False),
    "shmpipe recv_into (bytearray)": lambda n, s: run_shmpipe(n, s, into=True),
    "multiprocessing.Queue": run_queue,
    "shared_memory + pipe": run_shared_memory,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="one JSON object per method")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    print(f"# {args.messages} messages of {args.size} bytes, best of {args.repeat}; "
          f"{os.cpu_count()} CPUs, load average {load:.1f} before the run")
    for name, run in METHODS.items():
        rates = [args.messages / run(args.messages, args.size) for _ in range(args.repeat)]
        best = max(rates)
        if args.json:
            print(json.dumps({"method": name, "messages": args.messages, "size": args.size,
                              "best_msgs_per_s": round(best), "runs": [round(r) for r in rates],
                              "load_1min": load}))
        else:
            runs = ", ".join(f"{r / 1e3:.0f}k" for r in rates)
            print(f"{name:32} {best / 1e3:8.0f}k msg/s   (runs: {runs})")


if __name__ == "__main__":
    main()
