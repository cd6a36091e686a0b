"""The live-server rows: installs while a background writer dirties the same filesystem.

:class:`Writer` runs ``tests.bench.writer`` and reads its progress lines; the bench waits
on them (an amount of data written), never on a clock.
"""

from __future__ import annotations

import bisect
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.bench.trials import REPO


@dataclass(frozen=True)
class Window:
    """What the writer did while one command ran."""

    seconds: float
    written: int            # bytes
    max_stall: float        # longest single 1 MiB write, seconds
    commits: int            # 4 KiB + fdatasync commits completed
    max_commit: float       # slowest commit, seconds (one still waiting counts so far)

    @property
    def mb_per_s(self) -> float:
        return self.written / self.seconds / 1e6 if self.seconds > 0 else 0.0


class Writer:
    """The background writer, started and stopped by the bench (a context manager)."""

    def __init__(self, ring: Path, rate_mb: float, *, seconds: float = 900.0, ring_mb: int = 2048) -> None:
        self.ring = ring
        self.rate_mb = rate_mb
        self.argv = [sys.executable, "-m", "tests.bench.writer", str(ring), "--rate-mb", f"{rate_mb:g}",
                     "--ring-mb", str(ring_mb), "--seconds", f"{seconds:g}"]
        self.times: list[float] = []
        self.totals: list[int] = []
        self.stalls: list[float] = []
        self.commits: list[int] = []
        self.commit_worst: list[float] = []
        self.changed = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None

    def __enter__(self) -> Writer:
        self.ring.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, text=True, cwd=REPO)
        self.reader = threading.Thread(target=self._read, name="writer-progress", daemon=True)
        self.reader.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(30)
        if self.reader is not None:
            self.reader.join(30)
        self.proc = None

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            when, total, stall, commits, commit = line.split()
            with self.changed:
                self.times.append(float(when))
                self.totals.append(int(total))
                self.stalls.append(float(stall))
                self.commits.append(int(commits))
                self.commit_worst.append(float(commit))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def written(self) -> int:
        with self.changed:
            return self.totals[-1] if self.totals else 0

    def wait_written(self, more: int, timeout: float = 120.0) -> None:
        """Block until the writer has written ``more`` bytes beyond what it has now."""
        with self.changed:
            goal = (self.totals[-1] if self.totals else 0) + more
            done = self.changed.wait_for(
                lambda: (bool(self.totals) and self.totals[-1] >= goal)
                or self.proc is None or self.proc.poll() is not None, timeout)
            if not done or not self.totals or self.totals[-1] < goal:
                raise RuntimeError(f"the background writer did not write {more} bytes "
                                   f"(exit {self.proc.poll() if self.proc else '?'})")

    def window(self, start: float, end: float) -> Window:
        """The writer's bytes, longest stall and slowest commit between two ``time.monotonic()`` readings
        (its lines come every 0.1 s: the window is taken between the lines around it)."""
        with self.changed:
            if not self.changed.wait_for(lambda: bool(self.times) and self.times[-1] >= end, 5.0):
                end = self.times[-1] if self.times else end
            i = max(0, bisect.bisect_right(self.times, start) - 1)
            j = min(len(self.times) - 1, bisect.bisect_left(self.times, end))
            if j <= i:
                return Window(0.0, 0, 0.0, 0, 0.0)
            return Window(self.times[j] - self.times[i], self.totals[j] - self.totals[i],
                          max(self.stalls[i + 1:j + 1], default=0.0),
                          self.commits[j] - self.commits[i], max(self.commit_worst[i + 1:j + 1], default=0.0))


def timed(writer: Writer, run: Callable[[], float]) -> tuple[float, Window]:
    """Run ``run()`` (a timed command, returning its seconds) and what the writer did meanwhile."""
    start = time.monotonic()
    seconds = run()
    return seconds, writer.window(start, time.monotonic())
