"""ispmanager 6: the panel (``panel``), its plugin layout (``layout``), its validators
(``checks``), its ``new`` skeleton (``skeleton``) and its runtime — the core and its restart
(``core``, ``outside``: started outside the agent's service), the panel log (``logrecords``,
``logreader``, ``logfollow``, ``logs``), the ``call`` handler chain (``callchain``) and
``debug.conf`` editing (``debugconf``)."""

from __future__ import annotations

from mgr_agent.panels.ispmanager.panel import IspManager

__all__ = ["IspManager"]
