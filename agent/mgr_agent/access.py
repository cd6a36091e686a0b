"""How commands reach the state: under the lock for changes, without it for reads.

Both recover an interrupted transaction first, so that what is read or changed agrees
with the files on disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mgr_agent.context import EngineContext
from mgr_agent.errors import LockBusy
from mgr_agent.layout import Layout
from mgr_agent.lock import Lock
from mgr_agent.state import FileRow, State


def interrupted_journals(layout: Layout) -> bool:
    """A journal is left: a transaction was interrupted (or is running right now)."""
    return layout.journals_left()


class StateAccess:
    """Opens the state for one engine; remembers what the last recovery did."""

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        self.last_recovered: list[dict[str, Any]] = []

    def _recover(self, state: State) -> None:
        # The undo machinery (transaction, steps, archive store) loads for changes and
        # for reads that find a journal, not for every ``list``.
        from mgr_agent import recovery  # noqa: PLC0415

        self.last_recovered = recovery.recover(self.ctx, state)

    @contextmanager
    def mutating(self, purpose: str) -> Iterator[State]:
        """Take the lock, open the state, finish any interrupted transaction first."""
        layout = self.ctx.layout
        lock = Lock(layout.lock_file, purpose)
        lock.acquire(self.ctx.lock_wait, self.ctx.progress)
        try:
            state = State(layout.db_file)
            try:
                state.check()
                with state.guard():
                    self._recover(state)
                    yield state
            finally:
                state.close()
        finally:
            lock.release()

    @contextmanager
    def reading(self) -> Iterator[State]:
        """The state for read-only commands; nothing is created on a root without state.

        An interrupted transaction (a journal while nobody holds the lock) is recovered
        first, so that what is read agrees with the files; a running one is left alone.
        """
        layout = self.ctx.layout
        if interrupted_journals(layout):
            lock = Lock(layout.lock_file, "recover")
            try:
                lock.acquire(0)
            except LockBusy:
                pass
            else:
                try:
                    writable = State(layout.db_file)
                    try:
                        writable.check()
                        self._recover(writable)
                    finally:
                        writable.close()
                finally:
                    lock.release()
        state = State(layout.db_file if layout.db_file.exists() else None)
        try:
            state.check()
            with state.guard():
                yield state
        finally:
            state.close()

    def manifest(self, panel: str, name: str) -> dict[str, FileRow]:
        """The installed version's manifest, read before the lock: only a hint for which
        entries need no reading (any later decision is made under the lock)."""
        if not self.ctx.layout.db_file.exists():
            return {}
        with self.reading() as state:
            found = state.find(name, panel)
            return state.files(panel, name, found[0].tx) if found else {}
