"""Reading ispmanager's panel log: the last N records from the end, and the records since a
time across the compressed archives under ``var/logs/``.

``last`` reads a multi-gigabyte file backwards from its end; ``since`` bisects the current
file and reads the archives when the window reaches back into them. The rotation rules are
described in ``docs/logs.md``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import os
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

from mgr_agent.errors import NotFound, UsageError
from mgr_agent.layout import Layout
from mgr_agent.panels.ispmanager.logrecords import (
    Filter,
    Record,
    make_filter,
    parse_line,
    raw_record,
    records,
)

LOG_REL = "var/ispmgr.log"
BLOCK = 64 * 1024
SCAN_BLOCK = 1024 * 1024
MAX_LINE = 1024 * 1024          # a longer "line" (binary junk) is cut so memory stays bounded


def log_path(layout: Layout) -> Path:
    return layout.mgr / LOG_REL


def _data_extents(fd: int, end: int) -> list[tuple[int, int]]:
    """The [start, stop) ranges of ``fd`` below ``end`` that hold data (holes skipped)."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < end:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
            stop = os.lseek(fd, start, os.SEEK_HOLE)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break
            return [(0, end)]   # no SEEK_DATA here: all of it is data
        if start >= end:
            break
        out.append((start, min(stop, end)))
        pos = stop
    return out


def _lines_backward(fd: int, end: int) -> Iterator[bytes]:
    """Lines of ``fd[:end]`` from the last to the first, without reading what is skipped."""
    first = True
    for start, stop in reversed(_data_extents(fd, end)):
        buf, pos = b"", stop
        while pos > start:
            size = min(BLOCK, pos - start)
            pos -= size
            parts = (os.pread(fd, size, pos).replace(b"\0", b"") + buf).split(b"\n")
            buf = parts[0]
            for line in reversed(parts[1:]):
                if not (first and not line):
                    yield line
                first = False
            if len(buf) > MAX_LINE:
                yield buf
                buf = b""
        if buf:
            yield buf
        first = False


def _lines_forward(fd: int, start: int, end: int, block: int = SCAN_BLOCK) -> Iterator[bytes]:
    """Lines of ``fd[start:end]``, holes skipped (each hole ends a line)."""
    for lo, hi in _data_extents(fd, end):
        if hi <= start:
            continue
        pos, buf = max(lo, start), b""
        while pos < hi:
            chunk = os.pread(fd, min(block, hi - pos), pos)
            if not chunk:
                break
            pos += len(chunk)
            parts = (buf + chunk.replace(b"\0", b"")).split(b"\n")
            buf = parts.pop()
            yield from parts
            if len(buf) > MAX_LINE:
                yield buf
                buf = b""
        if buf:
            yield buf


def decode(lines: Iterable[bytes]) -> Iterator[str]:
    return (line.decode("utf-8", "replace") for line in lines)


def whole_lines_end(fd: int) -> int:
    """The size of ``fd`` without a last line that is still being written."""
    size = os.fstat(fd).st_size
    k = min(BLOCK, size)
    tail = os.pread(fd, k, size - k) if k else b""
    i = tail.rfind(b"\n")
    return size - k + i + 1 if i >= 0 else size - k


def open_log(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"no log file at {path}",
                       hint="is ispmanager installed under this root? (--root)") from None


def last_records(path: Path, n: int, keep: Filter, now: datetime | None,
          whole_lines: bool = False) -> tuple[list[Record], int]:
    fd = open_log(path)
    try:
        end = whole_lines_end(fd) if whole_lines else os.fstat(fd).st_size
        out: list[Record] = []
        pending: list[str] = []          # continuation lines, newest first
        if n <= 0:
            return out, end
        now = now or datetime.now()
        for text in decode(_lines_backward(fd, end)):
            rec = parse_line(text, now=now)
            if rec is None:
                pending.append(text.rstrip("\r"))
                continue
            for line in reversed(pending):
                rec.append(line)
            pending.clear()
            if keep(rec):
                out.append(rec)
                if len(out) >= n:
                    break
        else:   # the start of the file: lines before the first record are kept one by one
            for line in pending:
                if line.strip() and len(out) < n and keep(orphan := raw_record(line)):
                    out.append(orphan)
        out.reverse()
        return out, end
    finally:
        os.close(fd)


def last(path: str | Path, n: int, *, level: str | None = None,
         plugin_names: Iterable[str] | None = None, match: Filter | None = None,
         now: datetime | None = None) -> list[Record]:
    """The last ``n`` records that pass the filters, oldest first, read backwards from the
    end in 64 KiB blocks: only as much of the file as those records take is read."""
    return last_records(Path(path), n, make_filter(level=level, plugin_names=plugin_names, match=match),
                 now)[0]


# ---------------------------------------------------------------- since: archives

def open_any(path: Path) -> io.BufferedIOBase:
    # the decompressors load for rotated archives, not for the last N lines of the live log
    name = path.name
    if name.endswith(".gz"):
        import gzip  # noqa: PLC0415

        return gzip.open(path, "rb")
    if name.endswith(".xz"):
        import lzma  # noqa: PLC0415

        return lzma.open(path, "rb")
    if name.endswith(".bz2"):
        import bz2  # noqa: PLC0415

        return bz2.open(path, "rb")
    return open(path, "rb")


def _archive_lines(path: Path) -> Iterator[str]:
    import lzma  # noqa: PLC0415 - for its error class

    with contextlib.suppress(OSError, EOFError, lzma.LZMAError), open_any(path) as fh:
        for line in fh:
            yield line.rstrip(b"\n").replace(b"\0", b"").decode("utf-8", "replace")


def _first_time(lines: Iterable[str], now: datetime) -> datetime | None:
    for text in itertools.islice(lines, 1000):
        rec = parse_line(text, now=now)
        if rec is not None and rec.time is not None:
            return rec.time
    return None


def rotated_copies(path: str | Path) -> list[Path]:
    """Rotated copies of a log: any file under ``logs/`` beside it whose name starts with the
    log's name (ispmanager: ``var/logs/ispmgr.log.<date-time>.gz``), and ``NAME.*``/``NAME-*``
    beside it (logrotate: ``ispmgr.log.1``, ``ispmgr.log.2.gz``)."""
    path = Path(path)
    found: list[Path] = []
    for folder, prefixes in ((path.parent / "logs", (path.name,)),
                             (path.parent, (path.name + ".", path.name + "-"))):
        with contextlib.suppress(OSError):
            found += [p for p in folder.iterdir() if p.name.startswith(prefixes) and p.is_file()]
    return found


def archives(path: str | Path, *, now: datetime | None = None) -> list[tuple[datetime, Path]]:
    """Rotated copies of ``path`` with their first record's time, oldest first."""
    now = now or datetime.now()
    dated = []
    for p in rotated_copies(path):
        first = _first_time(_archive_lines(p), now)
        if first is not None:
            dated.append((first, p))
    return sorted(dated)


def _seek_time(fd: int, end: int, when: datetime, now: datetime) -> int:
    """A line start before every record written at or after ``when`` (bisection on time)."""
    lo, hi = 0, end
    while hi - lo > BLOCK:
        mid = (lo + hi) // 2
        chunk = os.pread(fd, BLOCK, mid)
        nl = chunk.find(b"\n")
        off, found = mid + nl + 1, None
        for line in chunk[nl + 1:].split(b"\n")[:-1] if nl >= 0 else []:
            rec = parse_line(line.decode("utf-8", "replace"), now=now)
            if rec is not None and rec.time is not None:
                found = rec.time
                break
            off += len(line) + 1
        if found is not None and found < when and off < hi:
            lo = off
        else:
            hi = mid
    return lo


def since_records(path: Path, when: datetime, keep: Filter, now: datetime | None, end: int | None,
           use_archives: bool = True) -> Iterator[Record]:
    now = now or datetime.now()
    fd = open_log(path)
    try:
        stop = os.fstat(fd).st_size if end is None else end
        sources: list[Iterator[Record]] = []
        first = _first_time(decode(itertools.islice(_lines_forward(fd, 0, stop, BLOCK), 1000)), now)
        start = 0
        if first is None or when < first:
            if use_archives:
                dated = archives(path, now=now)
                begin = max((i for i, (t, _) in enumerate(dated) if t <= when), default=0)
                sources += [records(_archive_lines(p), now) for _, p in dated[begin:]]
        else:
            start = _seek_time(fd, stop, when, now)
        sources.append(records(decode(_lines_forward(fd, start, stop)), now))
        last_time: datetime | None = None
        for rec in itertools.chain.from_iterable(sources):
            last_time = rec.time or last_time      # a record without time inherits one
            if last_time is not None and last_time >= when and keep(rec):
                yield rec
    finally:
        os.close(fd)


def since(path: str | Path, when: datetime, *, level: str | None = None,
          plugin_names: Iterable[str] | None = None, match: Filter | None = None,
          use_archives: bool = True, now: datetime | None = None) -> list[Record]:
    """Records written at or after ``when`` (naive local time), oldest first; the rotated
    archives are read too when ``when`` is before the current file's first record."""
    keep = make_filter(level=level, plugin_names=plugin_names, match=match)
    return list(since_records(Path(path), when, keep, now, None, use_archives))


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``15m``/``2h``/``1d``/``1w``/``30s`` ago, ``HH:MM[:SS]`` (today, or yesterday if that is
    still ahead), ``today``/``yesterday``, or an ISO date/time (``2026-11-21 10:00``)."""
    now = now or datetime.now()
    t = text.strip()
    if m := re.fullmatch(r"(\d+)\s*([smhdw])", t):
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m[2]]
        return now - timedelta(**{unit: int(m[1])})
    if t in ("today", "yesterday"):
        day = now.date() - timedelta(days=1 if t == "yesterday" else 0)
        return datetime.combine(day, datetime.min.time())
    try:
        if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", t):
            clock = datetime.strptime(t if t.count(":") == 2 else t + ":00", "%H:%M:%S").time()
            when = datetime.combine(now.date(), clock)
            return when - timedelta(days=1) if when > now else when
        when = datetime.fromisoformat(t)
    except ValueError:
        raise UsageError(f"--since: cannot read the time {text!r}",
                         hint="use 2026-11-21 10:00, 10:00, or 15m / 2h / 1d ago") from None
    return when.astimezone().replace(tzinfo=None) if when.tzinfo else when
