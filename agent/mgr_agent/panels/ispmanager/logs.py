"""The panel log (``var/ispmgr.log``): parse records, the last N, since a time, and follow.

A record is one line ``Mon DD HH:MM:SS [PID:THREAD] MODULE LEVEL message`` plus the lines
after it that do not start with a timestamp (XML dumps, tracebacks). ``last`` reads a
multi-gigabyte file backwards from its end; ``since`` bisects the current file and reads the
compressed archives under ``var/logs/`` when the window reaches back into them; ``follow``
survives in-place truncation and rename rotation without losing or repeating a line. The
format, the level order and the rotation rules are described in ``docs/logs.md``.
"""

from __future__ import annotations

import bz2
import collections
import contextlib
import ctypes
import errno
import functools
import gzip
import io
import itertools
import json
import lzma
import os
import re
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from mgr_agent import libc as mgr_libc
from mgr_agent.errors import NotFound, UsageError
from mgr_agent.layout import Layout

LOG_REL = "var/ispmgr.log"
BLOCK = 64 * 1024
SCAN_BLOCK = 1024 * 1024
MAX_LINE = 1024 * 1024          # a longer "line" (binary junk) is cut so memory stays bounded
FINGERPRINT = 1024              # bytes before the read offset that identify the followed content
TICK = 0.25                     # with inotify: wake this often anyway (stop flag, safety stat)
DEFAULT_N = 10

Filter = Callable[["Record"], bool]

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_HEAD = re.compile(r"""
    (?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),?\s+)?
    (?: (?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})[T\ ]
      | (?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+(?P<md>\d{1,2}),?
        (?:\s+(?P<my>\d{4}))?\s+ )
    (?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})(?:[.,](?P<frac>\d{1,6})\d*)?
    (?P<tz>Z|[+-]\d{2}:?\d{2})?
    (?:\s+|$)
    (?:\[(?P<ids>[^\]]*)\]\s*)?
    (?P<rest>.*)
    """, re.X | re.S)
_MODULE = re.compile(r"[A-Za-z_][\w.\-/:]*")

# Severity order, lowest first. ispmanager's debug.conf numbers (9 trace ... 1 notes) are
# verbosity, not severity: a note is informational, so it ranks between INFO and WARNING.
LEVELS: dict[str, int] = {
    "TRACE": 0, "DEBUG": 1, "EXTINFO": 2, "INFO": 3, "NOTE": 4, "NOTICE": 4,
    "WARN": 5, "WARNING": 5, "ERR": 6, "ERROR": 6, "FATAL": 7, "CRIT": 7, "CRITICAL": 7,
}
_COLOURS = {0: "2", 1: "2", 4: "36", 5: "33", 6: "31", 7: "31;1"}


@dataclass
class Record:
    """One log record; a line that could not be parsed has only ``message`` and ``raw``."""

    time: datetime | None = None
    pid: int | None = None
    thread: str | None = None
    module: str | None = None
    level: str | None = None
    message: str = ""
    raw: str = ""           # the line(s) as written, colour codes included

    def append(self, line: str) -> None:
        """Add a continuation line."""
        self.message += "\n" + _ANSI.sub("", line)
        self.raw += "\n" + line

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time.isoformat() if self.time else None, "pid": self.pid,
                "thread": self.thread, "module": self.module, "level": self.level,
                "message": self.message, "raw": self.raw}


# ---------------------------------------------------------------- parsing

def _year_for(month: int, day: int, hms: tuple[int, int, int], now: datetime) -> datetime | None:
    """The panel writes no year: the current one, or an earlier one if that is in the future."""
    for year in range(now.year, now.year - 5, -1):
        try:
            when = datetime(year, month, day, *hms)
        except ValueError:      # Feb 29 outside a leap year
            continue
        if when <= now + timedelta(days=1):
            return when
    return None


def parse_line(text: str, *, now: datetime | None = None) -> Record | None:
    """The record a line starts, or None when it does not start with a timestamp (a
    continuation of the previous record). A timestamped line whose rest does not fit the
    format gives a record with the time and the rest as its message."""
    text = text.rstrip("\r\n")
    clean = _ANSI.sub("", text)
    m = _HEAD.match(clean)
    if m is None:
        return None
    hms = (int(m["h"]), int(m["mi"]), int(m["s"]))
    try:
        if m["y"]:
            when: datetime | None = datetime(int(m["y"]), int(m["mo"]), int(m["d"]), *hms)
        elif m["my"]:
            when = datetime(int(m["my"]), _MONTHS[m["mon"]], int(m["md"]), *hms)
        else:
            when = _year_for(_MONTHS[m["mon"]], int(m["md"]), hms, now or datetime.now())
    except ValueError:
        return None
    if when is None:
        return None
    if m["frac"]:
        when = when.replace(microsecond=int(m["frac"].ljust(6, "0")))
    if m["tz"]:
        tz = datetime.strptime(m["tz"].replace(":", "").replace("Z", "+0000"), "%z").tzinfo
        when = when.replace(tzinfo=tz).astimezone().replace(tzinfo=None)
    rec = Record(time=when, raw=text)
    if m["ids"] is not None:
        pid, _, thread = m["ids"].strip().partition(":")
        if pid.isdigit():
            rec.pid, rec.thread = int(pid), thread or None
        else:
            rec.thread = m["ids"].strip() or None
    rest = m["rest"].rstrip()
    first, _, after = rest.partition(" ")
    second, _, after2 = after.lstrip().partition(" ")
    if first.rstrip(":") in LEVELS:
        rec.level, rec.message = first.rstrip(":"), after.lstrip()
    elif second.rstrip(":") in LEVELS and _MODULE.fullmatch(first):
        rec.module, rec.level, rec.message = first, second.rstrip(":"), after2.lstrip()
    else:
        rec.message = rest
    return rec


def raw_record(text: str) -> Record:
    """A line kept as it is: no timestamp and no record before it to continue."""
    text = text.rstrip("\r\n")
    return Record(message=_ANSI.sub("", text), raw=text)


class _Assembler:
    """Lines in file order in, records out: continuation lines join the open record."""

    def __init__(self, now: datetime | None) -> None:
        self.now = now
        self.open: Record | None = None

    def feed(self, line: str) -> Record | None:
        rec = parse_line(line, now=self.now)
        if rec is None:
            if self.open is not None:
                self.open.append(line.rstrip("\r\n"))
                return None
            return raw_record(line) if line.strip() else None
        done, self.open = self.open, rec
        return done

    def flush(self) -> Record | None:
        done, self.open = self.open, None
        return done


def _records(lines: Iterable[str], now: datetime | None = None) -> Iterator[Record]:
    asm = _Assembler(now)
    for line in lines:
        rec = asm.feed(line)
        if rec is not None:
            yield rec
    rec = asm.flush()
    if rec is not None:
        yield rec


def parse_lines(lines: Iterable[str], *, now: datetime | None = None) -> list[Record]:
    """Records of lines given in file order (continuations joined, orphans kept raw)."""
    return list(_records(lines, now or datetime.now()))


# ---------------------------------------------------------------- filters

def level_rank(level: str) -> int:
    """Position of ``level`` in :data:`LEVELS` (case-insensitive); UsageError if unknown."""
    try:
        return LEVELS[level.upper()]
    except KeyError:
        raise UsageError(f"unknown log level {level!r}",
                         hint="one of " + ", ".join(LEVELS)) from None


def level_at_least(record: Record, level: str) -> bool:
    """Whether the record is as severe as ``level``; a missing or unknown level counts as INFO."""
    rank = LEVELS.get(record.level or "", LEVELS["INFO"])
    return rank >= level_rank(level)


@functools.lru_cache(maxsize=32)
def _plugin_pattern(names: frozenset[str]) -> re.Pattern[str]:
    words = sorted((n for n in names if n), key=len, reverse=True)
    if not words:
        return re.compile(r"(?!)")
    return re.compile(r"(?<![\w\-])(?:" + "|".join(map(re.escape, words)) + r")(?![\w\-])")


def matches_plugin(record: Record, names: Iterable[str]) -> bool:
    """Whether the message or module names one of a plugin's handlers, funcs or XML file,
    as a whole word (``.`` and ``/`` separate words; ``_`` and ``-`` do not)."""
    pattern = _plugin_pattern(frozenset(names))
    return bool(pattern.search(record.message) or (record.module and pattern.search(record.module)))


def make_filter(*, level: str | None = None, plugin_names: Iterable[str] | None = None,
                match: Filter | None = None) -> Filter:
    """One predicate for the options; ``plugin_names=None`` means every plugin."""
    rank = level_rank(level) if level else None
    names = frozenset(plugin_names) if plugin_names is not None else None

    def keep(rec: Record) -> bool:
        if rank is not None and LEVELS.get(rec.level or "", LEVELS["INFO"]) < rank:
            return False
        if names is not None and not matches_plugin(rec, names):
            return False
        return match is None or match(rec)
    return keep


# ---------------------------------------------------------------- reading files

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


def _decode(lines: Iterable[bytes]) -> Iterator[str]:
    return (line.decode("utf-8", "replace") for line in lines)


def _whole_lines_end(fd: int) -> int:
    """The size of ``fd`` without a last line that is still being written."""
    size = os.fstat(fd).st_size
    k = min(BLOCK, size)
    tail = os.pread(fd, k, size - k) if k else b""
    i = tail.rfind(b"\n")
    return size - k + i + 1 if i >= 0 else size - k


def _open_log(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"no log file at {path}",
                       hint="is ispmanager installed under this root? (--root)") from None


def _last(path: Path, n: int, keep: Filter, now: datetime | None,
          whole_lines: bool = False) -> tuple[list[Record], int]:
    fd = _open_log(path)
    try:
        end = _whole_lines_end(fd) if whole_lines else os.fstat(fd).st_size
        out: list[Record] = []
        pending: list[str] = []          # continuation lines, newest first
        if n <= 0:
            return out, end
        now = now or datetime.now()
        for text in _decode(_lines_backward(fd, end)):
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
    return _last(Path(path), n, make_filter(level=level, plugin_names=plugin_names, match=match),
                 now)[0]


# ---------------------------------------------------------------- since: archives

def _open_any(path: Path) -> io.BufferedIOBase:
    name = path.name
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".xz"):
        return lzma.open(path, "rb")
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    return open(path, "rb")


def _archive_lines(path: Path) -> Iterator[str]:
    with contextlib.suppress(OSError, EOFError, lzma.LZMAError), _open_any(path) as fh:
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


def _since(path: Path, when: datetime, keep: Filter, now: datetime | None, end: int | None,
           use_archives: bool = True) -> Iterator[Record]:
    now = now or datetime.now()
    fd = _open_log(path)
    try:
        stop = os.fstat(fd).st_size if end is None else end
        sources: list[Iterator[Record]] = []
        first = _first_time(_decode(itertools.islice(_lines_forward(fd, 0, stop, BLOCK), 1000)), now)
        start = 0
        if first is None or when < first:
            if use_archives:
                dated = archives(path, now=now)
                begin = max((i for i, (t, _) in enumerate(dated) if t <= when), default=0)
                sources += [_records(_archive_lines(p), now) for _, p in dated[begin:]]
        else:
            start = _seek_time(fd, stop, when, now)
        sources.append(_records(_decode(_lines_forward(fd, start, stop)), now))
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
    return list(_since(Path(path), when, keep, now, None, use_archives))


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


# ---------------------------------------------------------------- follow

class _Inotify:
    """inotify through libc (no dependency): only used to sleep until something changes."""

    MODIFY, ATTRIB, MOVED_FROM, MOVED_TO, CREATE, DELETE = 0x2, 0x4, 0x40, 0x80, 0x100, 0x200
    DELETE_SELF, MOVE_SELF = 0x400, 0x800
    DIR_MASK = CREATE | MOVED_TO | MOVED_FROM | DELETE
    FILE_MASK = MODIFY | ATTRIB | DELETE_SELF | MOVE_SELF

    def __init__(self) -> None:
        self.libc = mgr_libc.load()                        # the process's own libc symbols
        fd = int(self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.fd = fd
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)

    def add(self, path: Path, mask: int) -> int:
        wd = int(self.libc.inotify_add_watch(self.fd, os.fsencode(path), mask))
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        return wd

    def remove(self, wd: int) -> None:
        self.libc.inotify_rm_watch(self.fd, wd)     # fails harmlessly if the inode is gone

    def wait(self, timeout: float) -> None:
        if self.poller.poll(max(0, int(timeout * 1000))):
            with contextlib.suppress(BlockingIOError):
                while os.read(self.fd, 65536):
                    pass

    def close(self) -> None:
        os.close(self.fd)


class _Follower:
    """State of one follow: the open file, the read offset, and the unfinished line/record."""

    def __init__(self, path: Path, keep: Filter) -> None:
        self.path = path
        self.keep = keep
        self.fd: int | None = None
        self.ident: tuple[int, int] = (0, 0)
        self.offset = 0
        self.tail = b""         # the bytes just before offset, to recognise the same content
        self.partial = b""      # a line without its newline yet
        self.asm = _Assembler(None)
        self.out: collections.deque[Record] = collections.deque()
        self.last_data = time.monotonic()
        self.read_at = time.time()
        self.watch: _Inotify | None = None
        self.wd: int | None = None

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
                with _open_any(cand) as fh:
                    fh.seek(self.offset - len(self.tail))
                    if fh.read(len(self.tail)) == self.tail:
                        return fh.read(256 * 1024 * 1024)
            except (OSError, EOFError, lzma.LZMAError):
                continue
        return b""

    def open(self, start: int | None) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        st = os.fstat(fd)
        self.fd, self.ident = fd, (st.st_dev, st.st_ino)
        self.offset = _whole_lines_end(fd) if start is None else start
        if self.offset > st.st_size:
            self.offset = 0
        self.tail = os.pread(fd, min(FINGERPRINT, self.offset), max(0, self.offset - FINGERPRINT))
        if self.watch is not None:
            old, self.wd = self.wd, None
            with contextlib.suppress(OSError):
                self.wd = self.watch.add(self.path, _Inotify.FILE_MASK)
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

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        if self.watch is not None:
            self.watch.close()


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
    flw = _Follower(Path(path), keep)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        if use_inotify:
            try:
                flw.watch = _Inotify()
                flw.watch.add(flw.path.parent, _Inotify.DIR_MASK)
            except (OSError, AttributeError):
                if flw.watch is not None:
                    flw.watch.close()
                flw.watch = None
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
                yield from flw.out
                return
            wait = TICK if flw.watch is not None else poll_interval
            if flw.asm.open is not None:
                wait = min(wait, max(0.01, flush_after - idle))
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            if flw.watch is not None:
                flw.watch.wait(wait)
            elif stop is not None:
                stop.wait(wait)
            else:
                time.sleep(wait)
    finally:
        flw.close()


_follow = follow     # run_logs has a parameter named follow


# ---------------------------------------------------------------- the command

def log_path(layout: Layout) -> Path:
    return layout.mgr / LOG_REL


def format_record(rec: Record, colour: bool = False) -> str:
    """``2026-11-21 10:00:00 1234:5 core_module ERR message``; a raw line as it is."""
    if rec.time is None and rec.level is None:
        return rec.message
    ids = f"{'' if rec.pid is None else rec.pid}:{rec.thread or ''}".strip(":")
    head = [rec.time.strftime("%Y-%m-%d %H:%M:%S") if rec.time else "-", ids or "-",
            rec.module or "-", rec.level or "-"]
    text = " ".join(head) + " " + rec.message
    code = _COLOURS.get(LEVELS.get(rec.level or "", -1))
    return f"\033[{code}m{text}\033[0m" if colour and code else text


def run_logs(layout: Layout, *, n: int | None = None, follow: bool = False,
             plugin_names: set[str] | None = None, level: str | None = None,
             since: str | None = None, as_json: bool = False, out: TextIO,
             stop: threading.Event | None = None, timeout: float | None = None,
             now: datetime | None = None) -> int:
    """``mgr-agent logs``: print the last ``n`` records (default 10; with ``since``: every
    record of the window, or its last ``n``), then with ``follow`` the new ones as they come.
    Raises NotFound for a missing log, UsageError for a bad level or time."""
    path = log_path(layout)
    keep = make_filter(level=level, plugin_names=plugin_names)
    when = parse_since(since, now=now) if since is not None else None
    if not path.is_file():
        raise NotFound(f"no panel log at {path}",
                       hint="is ispmanager installed under this root? (--root)")
    colour = not as_json and out.isatty() and "NO_COLOR" not in os.environ

    def emit(rec: Record) -> None:
        out.write((json.dumps(rec.to_json(), ensure_ascii=False) if as_json
                   else format_record(rec, colour)) + "\n")

    try:
        if when is not None:
            fd = _open_log(path)
            try:
                end = _whole_lines_end(fd) if follow else os.fstat(fd).st_size
            finally:
                os.close(fd)
            records: Iterable[Record] = _since(path, when, keep, now, end)
            if n is not None:
                records = collections.deque(records, maxlen=max(n, 0))
        else:
            records, end = _last(path, DEFAULT_N if n is None else n, keep, now, whole_lines=follow)
        for rec in records:
            emit(rec)
        out.flush()
        if follow:
            for rec in _follow(path, start=end, level=level, plugin_names=plugin_names,
                               stop=stop, timeout=timeout):
                emit(rec)
                out.flush()
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:     # `logs | head`: stop quietly, and let the exit flush go nowhere
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 128 + signal.SIGPIPE  # the status of `yes | head`'s `yes`
    return 0
