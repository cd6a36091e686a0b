"""Panels behind one interface: ispmanager 6 and Plesk, each a folder."""

from __future__ import annotations

from mgr_agent.config import Config
from mgr_agent.errors import UsageError
from mgr_agent.layout import Layout
from mgr_agent.panels.base import HookSpec, LogQuery, Panel
from mgr_agent.panels.ispmanager import IspManager
from mgr_agent.panels.plesk import Plesk

__all__ = ["PANEL_CLASSES", "HookSpec", "IspManager", "LogQuery", "Panel", "Plesk", "all_panels",
           "serving"]

PANEL_CLASSES: tuple[type[Panel], ...] = (IspManager, Plesk)
"""Every panel the agent knows; a new panel is a folder here and one entry in this list."""


def all_panels(layout: Layout, config: Config) -> list[Panel]:
    return [cls(layout, config) for cls in PANEL_CLASSES]


def serving(panels: list[Panel], command: str) -> Panel:
    """The panel that answers a runtime command (``logs``, ``call``, ``debug``): the first
    that serves it. These commands take no ``--panel``; each has one panel today."""
    for panel in panels:
        if command in panel.serves:
            return panel
    raise UsageError(f"mgr-agent {command}: none of the panels ({', '.join(p.name for p in panels)}) "
                     "has it")
