"""The live-server rows' background writer: dirty data at a steady rate, like the logs,
mail and databases of a hosting server writing to the same filesystem, and a small
synchronous commit every 0.1 s, like a database's.

    python -m tests.bench.writer FILE [--rate-mb 50] [--ring-mb 2048] [--seconds 900]
                                      [--commit-every 0.1]

Writes 1 MiB blocks of random bytes to FILE with plain ``write(2)`` (no fsync: the data
stays dirty in the page cache until the kernel's flusher writes it back, 30 s later by
default), paced to ``--rate-mb`` MB/s (after a stall it catches up by at most half a
second's worth).  The file is a ring of ``--ring-mb`` MiB that is overwritten from the
start when full, so disk use stays bounded; the process stops by itself after
``--seconds`` (the bench also terminates it when its rows are done).

A second thread "commits" every ``--commit-every`` seconds: 4 KiB appended to
``FILE.commit`` (a ring of 4 MiB too) and ``fdatasync``, the way a database makes a
transaction durable; how long that takes is what other services on a live server feel
when an installer floods the disk.

Every 0.1 s it prints ``MONOTONIC_TIME TOTAL_BYTES MAX_WRITE_SECONDS COMMITS
MAX_COMMIT_SECONDS`` on stdout (maxima since the line before; a commit still waiting
counts with its time so far): the bench computes the writer's throughput, its longest
write stall and its slowest commit over the time a measured command ran.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

BLOCK = 1 << 20
COMMIT = 4096
COMMIT_RING = 4 << 20
REPORT_EVERY = 0.1
BURST = 0.5  # seconds: a stalled writer catches up at most this much


class Committer(threading.Thread):
    """4 KiB + fdatasync every ``every`` seconds; keeps the count and the slowest."""

    def __init__(self, path: str, every: float) -> None:
        super().__init__(name="committer", daemon=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.every = every
        self.lock = threading.Lock()
        self.count = 0
        self.worst = 0.0
        self.started: float | None = None   # the commit in progress, if any
        self.record = os.urandom(COMMIT)

    def run(self) -> None:
        offset = 0
        next_commit = time.monotonic()
        while True:
            now = time.monotonic()
            if now < next_commit:
                time.sleep(next_commit - now)
            next_commit = max(next_commit + self.every, time.monotonic())
            with self.lock:
                self.started = start = time.monotonic()
            os.pwrite(self.fd, self.record, offset)
            os.fdatasync(self.fd)
            took = time.monotonic() - start
            offset = (offset + COMMIT) % COMMIT_RING
            with self.lock:
                self.started = None
                self.count += 1
                self.worst = max(self.worst, took)

    def take(self, now: float) -> tuple[int, float]:
        """(commits so far, slowest since the last call, including one still waiting)."""
        with self.lock:
            worst = self.worst
            if self.started is not None:
                worst = max(worst, now - self.started)
            self.worst = 0.0
            return self.count, worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.writer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file")
    parser.add_argument("--rate-mb", type=float, default=50.0, help="MB/s (10^6 bytes) to write")
    parser.add_argument("--ring-mb", type=int, default=2048, help="size of the ring file, MiB")
    parser.add_argument("--seconds", type=float, default=900.0, help="stop after this long")
    parser.add_argument("--commit-every", type=float, default=0.1, help="seconds between commits")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    block = os.urandom(BLOCK)
    ring = max(1, args.ring_mb) * BLOCK
    fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    committer = Committer(args.file + ".commit", args.commit_every)
    committer.start()
    rate = args.rate_mb * 1e6
    start = last = time.monotonic()
    total = offset = 0
    tokens = float(BLOCK)  # a token bucket: bytes allowed now, at most BURST seconds' worth
    worst = 0.0
    next_report = start
    try:
        while True:
            now = time.monotonic()
            if now - start >= args.seconds:
                return 0
            tokens = min(tokens + (now - last) * rate, max(BURST * rate, BLOCK))
            last = now
            if now >= next_report:
                commits, slowest = committer.take(now)
                print(f"{now:.6f} {total} {worst:.6f} {commits} {slowest:.6f}", flush=True)
                worst = 0.0
                next_report = now + REPORT_EVERY
            if tokens < BLOCK:
                time.sleep(min((BLOCK - tokens) / rate, max(next_report - now, 0.001)))
                continue
            os.pwrite(fd, block, offset)
            worst = max(worst, time.monotonic() - now)
            tokens -= BLOCK
            total += BLOCK
            offset = (offset + BLOCK) % ring
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
