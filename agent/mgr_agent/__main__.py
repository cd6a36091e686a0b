"""``python -m mgr_agent``."""

from mgr_agent.cli import console

console()
