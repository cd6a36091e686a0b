"""Following ispmanager's panel log as it grows: survives in-place truncation and rename
rotation without losing or repeating a line; sleeps on inotify. The health check after a
restart reads the same way (:class:`Follower`)."""

from __future__ import annotations

import collections
import contextlib
import lzma
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from mgr_agent.libc import Inotify
from mgr_agent.panels.ispmanager.logreader import (
    SCAN_BLOCK,
    open_any,
    rotated_copies,
    whole_lines_end,
)
from mgr_agent.panels.ispmanager.logrecords import Assembler, Filter, Record, make_filter

FINGERPRINT = 1024              # bytes before the read offset that identify the followed content
TICK = 0.25                     # with inotify: wake this often anyway (stop flag, safety stat)


class Follower:
    """State of one follow: the open file, the read offset, and the unfinished line/record.

    ``check`` reads what was appended (across truncation and rotation) into ``out``;
    ``wait`` sleeps until the log changes (inotify) or for a poll interval. Used by
    :func:`follow` and by the health check after a restart (from a :class:`Mark`)."""

    def __init__(self, path: Path, keep: Filter, *, use_inotify: bool = True,
                 poll_interval: float = 1.0) -> None:
        self.path = path
        self.keep = keep
        self.fd: int | None = None
        self.ident: tuple[int, int] = (0, 0)
        self.offset = 0
        self.tail = b""         # the bytes just before offset, to recognise the same content
        self.partial = b""      # a line without its newline yet
        self.asm = Assembler(None)
        self.out: collections.deque[Record] = collections.deque()
        self.last_data = time.monotonic()
        self.read_at = time.time()
        self.watch: Inotify | None = None
        self.wd: int | None = None
        self.poll_interval = poll_interval
        if use_inotify:
            try:
                self.watch = Inotify()
                self.watch.add(path.parent, Inotify.DIR_MASK)
            except (OSError, AttributeError):
                if self.watch is not None:
                    self.watch.close()
                self.watch = None

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading
    def _lines(self, data: bytes) -> None:
        parts = (self.partial + data.replace(b"\0", b"")).split(b"\n")
        self.partial = parts.pop()
        for line in parts:
            self._feed(line.decode("utf-8", "replace"))

    def _feed(self, line: str) -> None:
        rec = self.asm.feed(line)
        if rec is not None and self.keep(rec):
            self.out.append(rec)

    def flush(self, partial: bool = True) -> None:
        if partial and self.partial:
            self._feed(self.partial.decode("utf-8", "replace"))
            self.partial = b""
        rec = self.asm.flush()
        if rec is not None and self.keep(rec):
            self.out.append(rec)

    def _read(self) -> None:
        assert self.fd is not None
        while True:
            try:
                pos = os.lseek(self.fd, self.offset, os.SEEK_DATA)
            except OSError:
                return          # nothing but a hole (or nothing) after offset
            if pos > self.offset:
                self.offset, self.tail = pos, b""
                self._lines(b"\n")      # a hole ends a line
            data = os.pread(self.fd, SCAN_BLOCK, self.offset)
            if not data:
                return
            self.offset += len(data)
            self.tail = (self.tail + data)[-FINGERPRINT:]
            self.last_data, self.read_at = time.monotonic(), time.time()
            self._lines(data)

    def _same_content(self, size: int) -> bool:
        assert self.fd is not None
        if size < self.offset:
            return False
        k = len(self.tail)
        return not k or os.pread(self.fd, k, self.offset - k) == self.tail

    def _recover(self) -> bytes:
        """What was appended after our offset before an in-place truncation, taken from the
        rotated copy (ispmanager's archive, logrotate's copy) that holds the same content."""
        if not self.tail:
            return b""
        recent = []
        for p in rotated_copies(self.path):
            with contextlib.suppress(OSError):
                if (mtime := p.stat().st_mtime) >= self.read_at - 5:
                    recent.append((mtime, p))
        for _, cand in sorted(recent, reverse=True)[:3]:
            try:
                with open_any(cand) as fh:
                    fh.seek(self.offset - len(self.tail))
                    if fh.read(len(self.tail)) == self.tail:
                        return fh.read(256 * 1024 * 1024)
            except (OSError, EOFError, lzma.LZMAError):
                continue
        return b""

    def open(self, start: int | None, at: Path | None = None) -> bool:
        """Open the log (or ``at``, the same log under its rotated name) at byte ``start``
        (None: the end of its last whole line); False when it does not exist."""
        try:
            fd = os.open(at or self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        st = os.fstat(fd)
        self.fd, self.ident = fd, (st.st_dev, st.st_ino)
        self.offset = whole_lines_end(fd) if start is None else start
        if self.offset > st.st_size:
            self.offset = 0
        self.tail = os.pread(fd, min(FINGERPRINT, self.offset), max(0, self.offset - FINGERPRINT))
        if self.watch is not None:
            old, self.wd = self.wd, None
            with contextlib.suppress(OSError):
                self.wd = self.watch.add(self.path, Inotify.FILE_MASK)
            if old is not None and old != self.wd:
                self.watch.remove(old)
        return True

    def check(self) -> None:
        """Read what is new; handle truncation in place and rename + new file."""
        if self.fd is None and not self.open(0):
            return
        assert self.fd is not None
        if not self._same_content(os.fstat(self.fd).st_size):      # truncated in place
            self._lines(self._recover())
            self.flush()
            self.offset, self.tail = 0, b""
        self._read()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return          # moved away, the new file is not there yet: keep the old one
        if (st.st_dev, st.st_ino) != self.ident:                   # renamed + new file
            self._read()    # the rest of the old file, written before the new one appeared
            self.flush()
            os.close(self.fd)
            self.fd = None
            if self.open(0):
                self._read()

    def resume(self, inode: int, offset: int) -> None:
        """Start where a mark (inode, size) left the log: at ``offset`` in that file, found
        under its rotated name (``ispmgr.log.1``) if it was renamed since, so that its rest
        is read before the new log; from the start of the log when the marked file is gone
        or shorter, or there was none."""
        for candidate in (self.path, *rotated_copies(self.path)) if inode else ():
            with contextlib.suppress(OSError):
                st = os.stat(candidate)
                if st.st_ino == inode and st.st_size >= offset and self.open(offset, candidate):
                    return
        self.open(0)

    def drain(self) -> list[Record]:
        """The records read so far that pass the filter, oldest first (and forget them)."""
        got = list(self.out)
        self.out.clear()
        return got

    def wait(self, seconds: float, stop: threading.Event | None = None) -> None:
        """Sleep up to ``seconds``: until the log changes (inotify), else a poll interval."""
        if self.watch is not None:
            self.watch.wait(min(seconds, TICK))
        elif stop is not None:
            stop.wait(min(seconds, self.poll_interval))
        else:
            time.sleep(max(0.0, min(seconds, self.poll_interval)))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.watch is not None:
            self.watch.close()
            self.watch = None


def follow(path: str | Path, *, start: int | None = None, level: str | None = None,
           plugin_names: Iterable[str] | None = None, match: Filter | None = None,
           stop: threading.Event | None = None, timeout: float | None = None,
           poll_interval: float = 1.0, use_inotify: bool = True,
           flush_after: float = 0.3) -> Iterator[Record]:
    """Yield records as they are appended to ``path`` until ``stop`` is set or ``timeout``
    seconds pass (forever if neither). ``start`` is a byte offset (default: the end).

    Survives truncation in place (the size shrinks or the bytes before the offset change:
    what was missed is taken from the rotated copy, then the file is read from 0) and rename +
    new file (the old file is read to its end, then the new one from 0). Sleeps on inotify;
    without it, polls every ``poll_interval`` seconds. A record is yielded when the next one
    starts or after ``flush_after`` seconds without new data (its continuation lines)."""
    keep = make_filter(level=level, plugin_names=plugin_names, match=match)
    deadline = None if timeout is None else time.monotonic() + timeout
    with Follower(Path(path), keep, use_inotify=use_inotify, poll_interval=poll_interval) as flw:
        flw.open(start)
        while True:
            flw.check()
            idle = time.monotonic() - flw.last_data
            if flw.asm.open is not None and idle >= flush_after:
                flw.flush(partial=False)
            while flw.out:
                yield flw.out.popleft()
            ended = (stop is not None and stop.is_set()) or (
                deadline is not None and time.monotonic() >= deadline)
            if ended:
                flw.check()
                flw.flush()
                yield from flw.drain()
                return
            wait = TICK if flw.watch is not None else poll_interval
            if flw.asm.open is not None:
                wait = min(wait, max(0.01, flush_after - idle))
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            flw.wait(wait, stop)
