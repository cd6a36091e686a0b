"""Per-file durability, dpkg's way: write-back started as each file is written, then each
file fsynced in a second pass, many at once (``[durability] mode = writeback``).

Starting write-back (``sync_file_range``) costs the writer about 25 µs a file in the kernel,
submitting the file's pages; a :class:`Closer` thread does it, and closes the file, while
the writer goes on inflating and writing the next ones (5,000 files: about 90 ms less;
docs/performance.md).  Nothing here makes data durable by itself but :func:`fsync_all`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mgr_agent import libc

# fsyncs in flight at once: an fsync mostly waits for the disk, and concurrent ones share
# the filesystem's journal commits (5,000 staged files on ext4: 0.60 s on one thread,
# 0.29-0.42 s on two, 0.14 s on eight, 0.20 s on 32; docs/performance.md)
FSYNC_THREADS = 8
FSYNC_POOL_FROM = 32  # paths: fewer are fsynced on the calling thread


def fsync_file(path: str | Path) -> None:
    """fsync a file or directory written earlier (never through a symlink)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_all(paths: Sequence[str | Path]) -> None:
    """fsync every file or directory of ``paths`` (never through a symlink), on
    :data:`FSYNC_THREADS` threads when there are many; all are done when it returns, the
    first failure raised."""
    if len(paths) < FSYNC_POOL_FROM:
        for path in paths:
            fsync_file(path)
        return

    def fsync_share(share: Sequence[str | Path]) -> None:
        for path in share:
            fsync_file(path)

    shares = [paths[k::FSYNC_THREADS] for k in range(FSYNC_THREADS)]  # one task per thread
    with ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="mga-fsync") as pool:
        for _ in pool.map(fsync_share, shares):
            pass


def fsync_dirs(paths: Iterable[Path]) -> None:
    """fsync each of ``paths`` that is a directory."""
    fsync_all([p for p in set(paths) if p.is_dir()])


def start_writeback(fd: int) -> None:
    """``sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)``: start writing the file's dirty
    pages out without waiting, as dpkg does while it unpacks, so that the fsync that
    follows finds little left to write.  Only a hint: a failure (a filesystem without it)
    is ignored, the fsync is what makes the data durable."""
    with contextlib.suppress(OSError):
        libc.sync_file_range(fd)


class Closer:
    """Takes over files just written: starts their write-back and closes them, in the
    order given, on a thread of its own.  :meth:`finish`
    waits until every file handed over is closed and raises the first failure to close
    one, naming it; after a failure elsewhere, :meth:`abandon` waits the same way and
    drops its failures."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[int, str] | None] = queue.SimpleQueue()
        self._failure: OSError | None = None
        self._thread: threading.Thread | None = threading.Thread(
            target=self._run, name="mga-writeback", daemon=True)
        self._thread.start()

    def take(self, fd: int, path: str | Path) -> None:
        """Start ``fd``'s write-back and close it, soon; it is no longer the caller's (any
        thread may hand files over)."""
        self._queue.put((fd, str(path)))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            fd, path = item
            start_writeback(fd)
            try:
                os.close(fd)
            except OSError as exc:
                if self._failure is None:
                    self._failure = OSError(exc.errno, exc.strerror, path)

    def finish(self) -> None:
        """Wait for every file handed over to be closed; raise the first failure."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def abandon(self) -> None:
        """Wait for every file handed over to be closed, whatever their failures."""
        with contextlib.suppress(OSError):
            self.finish()
