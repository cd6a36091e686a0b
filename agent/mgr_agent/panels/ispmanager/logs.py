"""``mgr-agent logs`` on ispmanager: the records of ``var/ispmgr.log`` the options ask for —
the last N (or those since a time), then with ``follow`` the new ones as they come.

Records are yielded, never printed: the CLI and the daemon render them (text, ``--json``,
record events). Parsing is :mod:`.logrecords`, reading :mod:`.logreader`, following
:mod:`.logfollow`; the format and the rotation rules are in ``docs/logs.md``.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from mgr_agent.errors import NotFound
from mgr_agent.panels.ispmanager.logreader import (
    last_records,
    log_path,
    open_log,
    parse_since,
    since_records,
    whole_lines_end,
)
from mgr_agent.panels.ispmanager.logrecords import Filter, Record, make_filter

if TYPE_CHECKING:
    import threading
    from pathlib import Path

    from mgr_agent.panels import LogQuery

__all__ = ["DEFAULT_N", "log_path", "records"]

DEFAULT_N = 10


def records(path: Path, query: LogQuery, *, stop: threading.Event | None = None,
            timeout: float | None = None, now: datetime | None = None) -> Iterator[Record]:
    """The last ``query.n`` records (default 10; with ``since``: every record of the window,
    or its last ``n``), then with ``follow`` the new ones until ``stop`` is set or ``timeout``
    passes. Raises NotFound for a missing log and UsageError for a bad level or time here,
    before the first record."""
    keep = make_filter(level=query.level, plugin_names=query.plugin_names)
    when = parse_since(query.since, now=now) if query.since is not None else None
    if not path.is_file():
        raise NotFound(f"no panel log at {path}",
                       hint="is ispmanager installed under this root? (--root)")
    return _records(path, query, keep, when, stop, timeout, now)


def _records(path: Path, query: LogQuery, keep: Filter, when: datetime | None,
             stop: threading.Event | None, timeout: float | None,
             now: datetime | None) -> Iterator[Record]:
    if when is not None:
        fd = open_log(path)
        try:
            end = whole_lines_end(fd) if query.follow else os.fstat(fd).st_size
        finally:
            os.close(fd)
        found: Iterable[Record] = since_records(path, when, keep, now, end)
        if query.n is not None:
            found = collections.deque(found, maxlen=max(query.n, 0))
    else:
        found, end = last_records(path, DEFAULT_N if query.n is None else query.n, keep, now,
                                  whole_lines=query.follow)
    yield from found
    if query.follow:
        # inotify (ctypes) and the follower only for ``-f``, not for the last N records
        from mgr_agent.panels.ispmanager.logfollow import follow  # noqa: PLC0415

        yield from follow(path, start=end, level=query.level, plugin_names=query.plugin_names,
                          stop=stop, timeout=timeout)
