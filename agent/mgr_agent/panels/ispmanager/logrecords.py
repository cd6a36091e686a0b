"""ispmanager's panel log records: parse lines (ANSI stripped, continuations joined) and filter.

A record is one line ``Mon DD HH:MM:SS [PID:THREAD] MODULE LEVEL message`` plus the lines
after it that do not start with a timestamp (XML dumps, tracebacks). The format and the
level order are described in ``docs/logs.md``; reading files is :mod:`.logreader`, following
one :mod:`.logfollow`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from mgr_agent.errors import UsageError
from mgr_agent.values import Value

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


class Record(Value):
    """One log record; a line that could not be parsed has only ``message`` and ``raw``.
    (A :class:`~mgr_agent.values.Value`, not a ``dataclass``: ``logs -n`` starts without
    that import.)"""

    __slots__ = ("level", "message", "module", "pid", "raw", "thread", "time")
    _FIELDS = ("time", "pid", "thread", "module", "level", "message", "raw")

    def __init__(self, time: datetime | None = None, pid: int | None = None,
                 thread: str | None = None, module: str | None = None, level: str | None = None,
                 message: str = "", raw: str = "") -> None:
        self.time = time
        self.pid = pid
        self.thread = thread
        self.module = module
        self.level = level
        self.message = message
        self.raw = raw          # the line(s) as written, colour codes included

    def append(self, line: str) -> None:
        """Add a continuation line."""
        self.message += "\n" + _ANSI.sub("", line)
        self.raw += "\n" + line

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time.isoformat() if self.time else None, "pid": self.pid,
                "thread": self.thread, "module": self.module, "level": self.level,
                "message": self.message, "raw": self.raw}


    def text(self, colour: bool = False) -> str:
        """``2026-11-21 10:00:00 1234:5 core_module ERR message``; a raw line as it is."""
        if self.time is None and self.level is None:
            return self.message
        ids = f"{'' if self.pid is None else self.pid}:{self.thread or ''}".strip(":")
        head = [self.time.strftime("%Y-%m-%d %H:%M:%S") if self.time else "-", ids or "-",
                self.module or "-", self.level or "-"]
        text = " ".join(head) + " " + self.message
        code = _COLOURS.get(LEVELS.get(self.level or "", -1))
        return f"\033[{code}m{text}\033[0m" if colour and code else text


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


class Assembler:
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


def records(lines: Iterable[str], now: datetime | None = None) -> Iterator[Record]:
    asm = Assembler(now)
    for line in lines:
        rec = asm.feed(line)
        if rec is not None:
            yield rec
    rec = asm.flush()
    if rec is not None:
        yield rec


def parse_lines(lines: Iterable[str], *, now: datetime | None = None) -> list[Record]:
    """Records of lines given in file order (continuations joined, orphans kept raw)."""
    return list(records(lines, now or datetime.now()))


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
