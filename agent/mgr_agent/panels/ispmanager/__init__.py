"""ispmanager 6: the panel (``panel``), its plugin layout (``layout``) and its runtime —
the log reader (``logs``), the ``call`` handler chain (``callchain``), ``debug.conf``
editing (``debugconf``) and the core started outside the agent's service (``outside``)."""

from __future__ import annotations

from mgr_agent.panels.ispmanager.panel import IspManager

__all__ = ["IspManager"]
