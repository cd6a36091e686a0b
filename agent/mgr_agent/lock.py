"""One lock under the root serialises every mutating operation (CLI, daemon, Ansible)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from mgr_agent.errors import LockBusy
from mgr_agent.fsutil import makedirs_private


class Lock:
    """An exclusive ``flock`` on ``var/lib/mgr-agent/lock``; the file says who holds it."""

    def __init__(self, path: Path, purpose: str) -> None:
        self.path = path
        self.purpose = purpose
        self._fd = -1

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return "another process"
        since = time.strftime("%H:%M:%S", time.localtime(info.get("since", 0)))
        return f"pid {info.get('pid', '?')} ({info.get('purpose', '?')}, since {since})"

    def acquire(self, wait: float, on_wait: Callable[[str], None] | None = None) -> None:
        makedirs_private(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        deadline = time.monotonic() + max(wait, 0.0)
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self.holder()
                    os.close(fd)
                    raise LockBusy(f"{self.path}: held by {holder}; gave up after {wait:g} s",
                                   holder=holder) from None
                if not told and on_wait is not None:
                    on_wait(f"waiting for the lock held by {self.holder()}")
                    told = True
                time.sleep(0.05)
        try:  # who holds the lock is information only: a full disk must not fail the command
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "purpose": self.purpose,
                                      "since": time.time()}).encode(), 0)
        except OSError:
            pass
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        self.release()
