"""SIGTERM and SIGHUP become exceptions so that undo and cleanup run; critical sections
(undo, commit + cleanup) hold them back until they are done."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from mgr_agent.errors import Interrupted

CAUGHT = (signal.SIGTERM, signal.SIGHUP)
HELD = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT}


def _raise(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


def install_handlers() -> None:
    """Turn SIGTERM and SIGHUP into :class:`Interrupted` (SIGINT is KeyboardInterrupt)."""
    for sig in CAUGHT:
        signal.signal(sig, _raise)


@contextmanager
def held() -> Iterator[None]:
    """Defer SIGTERM/SIGHUP/SIGINT until the block ends (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
