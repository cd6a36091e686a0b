"""Waiting in tests for the event itself, never for a guessed time.

- :class:`Feed`: items another thread appends (datagrams, records, lines); a waiter blocks on
  its condition variable and wakes at each append.
- :class:`LineReader`: a child's output pipe read in a thread into a :class:`Feed` of lines;
  ``wait_for_line`` returns the first line matching a pattern.
- :func:`wait_for_file`: blocks on inotify until a file exists (and its content matches).
- :func:`wait_for`: polls a condition that has no event to block on (a process's state),
  with a deadline.

Every wait has a deadline and fails with an ``AssertionError`` that says what was awaited
and what was seen instead. A wait may also be given ``alive`` (e.g. ``lambda: proc.poll() is
None``): when the process it depends on ends, waiting longer is pointless and it fails at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Generic, TypeVar

from mgr_agent import libc

T = TypeVar("T")
R = TypeVar("R")

Alive = Callable[[], bool]
RECHECK = 0.1        # how often ``alive`` is asked while blocked on an event


def _fail(what: str, timeout: float, seen: str = "", *, ended: bool = False) -> AssertionError:
    why = "the process it depends on ended" if ended else f"timed out after {timeout:g} s"
    return AssertionError(f"waiting for {what}: {why}" + (f"; seen: {seen}" if seen else ""))


def wait_for(predicate: Callable[[], R | None], *, what: str, timeout: float = 30.0,
             interval: float = 0.02, alive: Alive | None = None,
             seen: Callable[[], str] | None = None) -> R:
    """Call ``predicate`` every ``interval`` s until it returns something truthy; return it.

    Only for conditions no event announces (a process's state in /proc, a lock file's
    content written by another process); prefer the other waits."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if alive is not None and not alive():
            value = predicate()          # it may have happened just before the end
            if value:
                return value
            raise _fail(what, timeout, seen() if seen else "", ended=True)
        if time.monotonic() >= deadline:
            raise _fail(what, timeout, seen() if seen else "")
        time.sleep(interval)


class Feed(Generic[T]):
    """A list one thread appends to and others wait on (thread-safe)."""

    def __init__(self) -> None:
        self._items: list[T] = []
        self._changed = threading.Condition()
        self.closed = False

    def append(self, item: T) -> None:
        with self._changed:
            self._items.append(item)
            self._changed.notify_all()

    def close(self) -> None:
        """No more items will come (the source reached its end)."""
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def items(self) -> list[T]:
        with self._changed:
            return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> T:
        return self._items[index]

    def __iter__(self) -> Iterator[T]:
        return iter(self.items())

    def wait_until(self, predicate: Callable[[list[T]], R], *, what: str, timeout: float = 30.0,
                   alive: Alive | None = None) -> R:
        """Block until ``predicate(items)`` is truthy; return its value."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = predicate(self._items)
                if value:
                    return value
                ended = self.closed or (alive is not None and not alive())
                left = deadline - time.monotonic()
                if ended or left <= 0:
                    raise _fail(what, timeout, repr(self._items[-20:]), ended=ended)
                self._changed.wait(min(left, RECHECK) if alive is not None else left)

    def wait_for_item(self, match: Callable[[T], bool], *, what: str, after: int = 0,
                      timeout: float = 30.0, alive: Alive | None = None) -> int:
        """Index of the first item from ``after`` on that ``match`` accepts."""
        def found(items: list[T]) -> int:
            for index in range(after, len(items)):
                if match(items[index]):
                    return index + 1     # truthy even for index 0
            return 0
        return self.wait_until(found, what=what, timeout=timeout, alive=alive) - 1

    def stays_without(self, match: Callable[[T], bool], *, within: float, after: int = 0) -> bool:
        """True if no item from ``after`` on matches during the next ``within`` seconds (an
        event that must not happen: woken by every append, it fails as soon as one matches)."""
        deadline = time.monotonic() + within
        with self._changed:
            while True:
                if any(match(item) for item in self._items[after:]):
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return True
                self._changed.wait(left)


class LineReader:
    """Reads a text stream to its end in a thread; its lines (without the newline) go into
    :attr:`lines`. Drains the pipe, so the child never blocks on a full one."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lines: Feed[str] = Feed()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self.stream:
                self.lines.append(line.rstrip("\n"))
        finally:
            self.lines.close()

    def wait_for_line(self, pattern: str | re.Pattern[str], *, timeout: float = 30.0,
                      after: int = 0) -> str:
        """The first line from ``after`` on in which ``pattern`` (a regular expression) is found."""
        regex = re.compile(pattern)
        index = self.lines.wait_for_item(lambda line: regex.search(line) is not None,
                                         what=f"a line matching {regex.pattern!r}",
                                         after=after, timeout=timeout)
        return self.lines[index]

    def text(self, timeout: float = 30.0) -> str:
        """Everything, once the stream has ended (the writer exited or closed it)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream did not end"
        return "".join(line + "\n" for line in self.lines)


IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x2, 0x4, 0x8, 0x80, 0x100
_FILE_EVENTS = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE


def wait_for_file(path: Path, predicate: Callable[[bytes], bool] | None = None, *,
                  what: str | None = None, timeout: float = 30.0,
                  alive: Alive | None = None) -> bytes:
    """Block on inotify until ``path`` exists and (if given) ``predicate(content)`` holds;
    returns the content. Directories on the way that do not exist yet are waited for too."""
    what = what or (f"{path} to exist" if predicate is None else f"{path} to have the expected content")
    deadline = time.monotonic() + timeout
    fd = libc.inotify_init1()
    try:
        while True:
            watched = path.parent                 # the nearest directory there is
            while not watched.is_dir() and watched != watched.parent:
                watched = watched.parent
            with contextlib.suppress(FileNotFoundError):   # removed meanwhile: look again
                libc.inotify_add_watch(fd, watched, _FILE_EVENTS)
            content = None
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                content = path.read_bytes()
            if content is not None and (predicate is None or predicate(content)):
                return content
            ended = alive is not None and not alive()
            left = deadline - time.monotonic()
            if ended or left <= 0:
                seen = "no such file" if content is None else repr(content[-500:])
                raise _fail(what, timeout, seen, ended=ended)
            if select.select([fd], [], [], min(left, RECHECK) if alive is not None else left)[0]:
                with contextlib.suppress(BlockingIOError):
                    os.read(fd, 65536)
    finally:
        os.close(fd)


def wait_for_lock(root: Path, pid: int, *, timeout: float = 30.0, alive: Alive | None = None) -> None:
    """Until process ``pid`` holds the agent's lock under ``root`` (it writes its pid into
    the lock file once it has the lock)."""
    needle = f'"pid": {pid},'.encode()
    wait_for_file(root / "var/lib/mgr-agent/lock", lambda content: needle in content,
                  what=f"pid {pid} to hold the agent's lock", timeout=timeout, alive=alive)
