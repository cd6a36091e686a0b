"""Named fault-injection points for crash tests; inert unless ``MGR_AGENT_FAULT`` is set.

``MGR_AGENT_FAULT=NAME`` makes the process SIGKILL itself when it reaches point NAME
(``NAME:N`` at the N-th time it is reached).  ``MGR_AGENT_FAULT=NAME=raise`` raises
instead, to exercise the in-process undo path; ``NAME=hang`` blocks the calling thread
forever (the daemon's watchdog test).
"""

from __future__ import annotations

import os
import signal
import time

_counts: dict[str, int] = {}


class InjectedFault(RuntimeError):
    """Raised at a fault point in ``raise`` mode."""


def point(name: str) -> None:
    """Mark a named point; kill or raise here when the environment asks for it."""
    spec = os.environ.get("MGR_AGENT_FAULT")
    if not spec:
        return
    mode = "kill"
    if "=" in spec:
        spec, mode = spec.split("=", 1)
    want, _, nth = spec.partition(":")
    if want != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if nth and _counts[name] != int(nth):
        return
    if mode == "raise":
        raise InjectedFault(f"injected fault at {name}")
    if mode == "hang":
        while True:
            time.sleep(3600)
    os.kill(os.getpid(), signal.SIGKILL)
