"""What every engine operation works with on one root, as one value.

The facade (:mod:`mgr_agent.engine`) builds it once; the transaction steps, recovery,
the archive store and the read-only queries take it instead of a row of parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mgr_agent.config import Config
from mgr_agent.errors import UsageError
from mgr_agent.layout import Layout

if TYPE_CHECKING:  # types only: a read-only command loads no package
    from mgr_agent.package import Package
    from mgr_agent.panels import Panel
    from mgr_agent.proc import Runner
    from mgr_agent.state import FileRow

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """A progress callback that says nothing."""


@dataclass(frozen=True)
class EngineContext:
    layout: Layout
    config: Config
    panels: list[Panel]
    runner: Runner
    """Runs hooks and panel commands (subprocesses), not transactions."""
    progress: Progress
    lock_wait: float
    restart: bool
    """Restart the panel after a change (off with ``--no-restart``)."""
    health_window: float
    actor: str
    """Who asked: "cli" in-process, "uid U pid P" through the daemon."""

    def panel(self, name: str) -> Panel:
        for panel in self.panels:
            if panel.name == name:
                return panel
        raise UsageError(f"unknown panel {name!r}")

    def load(self, path: Path, panel: str | None, sha256: str | None,
             digest: str | None = None, *,
             installed: Callable[[str, str], Mapping[str, FileRow]] | None = None,
             background: bool = False, scan: bool = False) -> Package:
        """Open and verify the package at ``path`` (``digest``: its sha256, if known);
        ``installed``: the installed version's manifest, whose entries are not read again
        (an install: docs/transactions.md, "Change detection"); ``background``: see
        :func:`mgr_agent.package.load`; ``scan``: the entries hashed on its thread are
        scanned for secrets there (the checks will run)."""
        from mgr_agent import hashing, package, secretscan  # noqa: PLC0415 - when a package is read
        from mgr_agent.checks import safety  # noqa: PLC0415

        self.progress(f"reading {path}")
        return package.load(path, self.panels, panel_hint=panel, sha256=sha256,
                            limits=self.config.limits, archive_sha256=digest,
                            installed=installed, background=background, runner=self.runner,
                            scan=hashing.Scan(secretscan.secret_hits, safety.SCAN_LIMIT) if scan else None)
