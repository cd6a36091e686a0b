"""ispmanager 6: the panel (``panel``), its plugin layout (``layout``), its validators
(``checks``), its ``new`` skeleton (``skeleton``) and its runtime — the core and its restart
(``core``, ``outside``: started outside the agent's service), the panel log (``logrecords``,
``logreader``, ``logfollow``, ``logs``), the ``call`` handler chain (``callchain``) and
``debug.conf`` editing (``debugconf``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mgr_agent.panels.ispmanager.panel import IspManager as IspManager

__all__ = ["IspManager"]


def __getattr__(name: str) -> object:
    """``IspManager`` at its first use: the log modules here load without the panel."""
    if name == "IspManager":
        from mgr_agent.panels.ispmanager.panel import IspManager  # noqa: PLC0415

        return IspManager
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
