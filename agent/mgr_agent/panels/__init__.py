"""Panels behind one interface: ispmanager 6 and Plesk, each a folder.

The panel classes are imported at their first use (``PANEL_CLASSES``, ``all_panels``):
``logs`` reads the panel log without them (``read_log``), at start-up cost."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, NamedTuple

from mgr_agent.errors import UsageError

if TYPE_CHECKING:
    import threading
    from collections.abc import Iterator

    from mgr_agent.config import Config
    from mgr_agent.layout import Layout
    from mgr_agent.panels.base import HookSpec as HookSpec
    from mgr_agent.panels.base import LogRecord
    from mgr_agent.panels.base import Panel as Panel
    from mgr_agent.panels.ispmanager import IspManager as IspManager
    from mgr_agent.panels.plesk import Plesk as Plesk

__all__ = ["PANEL_CLASSES", "HookSpec", "IspManager", "LogQuery", "Panel", "Plesk", "all_panels",
           "read_log", "serving"]

PANELS = (("mgr_agent.panels.ispmanager", "IspManager"), ("mgr_agent.panels.plesk", "Plesk"))
"""Every panel the agent knows, as (its folder, its class); a new panel is a folder here
and one entry in this list."""

PANEL_CLASSES: tuple[type[Panel], ...]
"""The classes of ``PANELS``, in its order (imported at the first use)."""

_LAZY = {"HookSpec": "mgr_agent.panels.base", "Panel": "mgr_agent.panels.base",
         "IspManager": "mgr_agent.panels.ispmanager", "Plesk": "mgr_agent.panels.plesk"}


class LogQuery(NamedTuple):
    """What ``mgr-agent logs`` asks of a panel's log: the last ``n`` records (or those since
    ``since``), at ``level`` or above, naming one of ``plugin_names`` (None: any), then with
    ``follow`` the new ones.  (Declared here, not in ``base``: ``logs`` makes one without
    importing the panels.)"""

    n: int | None = None
    follow: bool = False
    level: str | None = None
    since: str | None = None
    plugin_names: frozenset[str] | None = None


def __getattr__(name: str) -> object:
    if name == "PANEL_CLASSES":
        classes = tuple(getattr(importlib.import_module(m), c) for m, c in PANELS)
        globals()["PANEL_CLASSES"] = classes
        return classes
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def all_panels(layout: Layout, config: Config) -> list[Panel]:
    classes: tuple[type[Panel], ...] = __getattr__("PANEL_CLASSES")  # type: ignore[assignment]
    return [cls(layout, config) for cls in classes]


def serving(panels: list[Panel], command: str) -> Panel:
    """The panel that answers a runtime command (``logs``, ``call``, ``debug``): the first
    that serves it. These commands take no ``--panel``; each has one panel today."""
    for panel in panels:
        if command in panel.serves:
            return panel
    raise UsageError(f"mgr-agent {command}: none of the panels ({', '.join(p.name for p in panels)}) "
                     "has it")


def read_log(layout: Layout, query: LogQuery, *, stop: threading.Event | None = None
             ) -> Iterator[LogRecord]:
    """``serving(all_panels(layout, config), "logs").log(query, stop=stop)`` without
    importing the panels, their package rules and ``dataclasses``: ``logs`` without
    ``--plugin`` is read at start-up cost (a test holds both to the same records)."""
    from mgr_agent.panels.ispmanager import logs  # noqa: PLC0415

    return logs.records(logs.log_path(layout), query, stop=stop)
