"""The live-server row's background writer: dirty data at a steady rate, like the logs,
mail and databases of a hosting server writing to the same filesystem.

    python -m tests.bench.writer FILE [--rate-mb 50] [--ring-mb 2048] [--seconds 600]

Writes 1 MiB blocks of random bytes to FILE with plain ``write(2)`` (no fsync: the data
stays dirty in the page cache until the kernel's flusher writes it back, 30 s later by
default), paced to ``--rate-mb`` MB/s (after a stall it catches up by at most half a second's
worth).  The file is a ring of ``--ring-mb`` MiB that is
overwritten from the start when full, so disk use stays bounded; the process stops by
itself after ``--seconds`` (the bench also terminates it when its rows are done).

Every 0.1 s it prints ``MONOTONIC_TIME TOTAL_BYTES MAX_WRITE_SECONDS`` on stdout (the
largest single write since the line before): the bench computes the writer's throughput
and its longest stall over the time a measured command ran.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

BLOCK = 1 << 20
REPORT_EVERY = 0.1
BURST = 0.5  # seconds: a stalled writer catches up at most this much


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.writer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file")
    parser.add_argument("--rate-mb", type=float, default=50.0, help="MB/s (10^6 bytes) to write")
    parser.add_argument("--ring-mb", type=int, default=2048, help="size of the ring file, MiB")
    parser.add_argument("--seconds", type=float, default=600.0, help="stop after this long")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    block = os.urandom(BLOCK)
    ring = max(1, args.ring_mb) * BLOCK
    fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
                print(f"{now:.6f} {total} {worst:.6f}", flush=True)
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
