"""Plesk: the panel (``panel``), the validators of its extensions (``checks_meta``,
``checks_catalog``, ``checks_code``) and the ``new`` skeleton (``skeleton``)."""

from __future__ import annotations

from mgr_agent.panels.plesk.panel import Plesk, product_root

__all__ = ["Plesk", "product_root"]
