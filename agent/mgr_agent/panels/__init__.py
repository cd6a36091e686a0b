"""Panels behind one interface: ispmanager 6 and Plesk."""

from __future__ import annotations

from mgr_agent.config import Config
from mgr_agent.layout import Layout
from mgr_agent.panels.base import HookSpec, Panel
from mgr_agent.panels.ispmanager import IspManager
from mgr_agent.panels.plesk import Plesk

__all__ = ["HookSpec", "IspManager", "Panel", "Plesk", "all_panels"]


def all_panels(layout: Layout, config: Config) -> list[Panel]:
    return [IspManager(layout, config), Plesk(layout, config)]
