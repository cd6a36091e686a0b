"""The interface every panel implements; the engine never asks which panel it has."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mgr_agent.archive import Source
from mgr_agent.config import Config
from mgr_agent.layout import Layout
from mgr_agent.package import Package
from mgr_agent.proc import Runner

HOOKS = ("pre-install", "post-install", "pre-uninstall")


@dataclass(frozen=True)
class Mark:
    """A position in the panel's log: the file's inode and size at a moment."""

    path: Path
    inode: int
    offset: int
    running: bool


@dataclass(frozen=True)
class HookSpec:
    """Where a hook comes from and how it runs.

    ``entry`` is the package entry to extract into the transaction's scratch dir;
    ``installed`` (root-relative) is preferred when that file is in place.
    """

    hook: str
    entry: str | None
    installed: str | None
    cwd: Path
    interpreter: tuple[str, ...] = ()


class Panel(ABC):
    """One panel's layout, metadata rules, hooks and runtime."""

    name: str
    detection_rule: str
    registers = False  # whether the panel keeps its own list of installed plugins (register())
    restarts: bool = True
    """Whether a change needs :meth:`restart` and :meth:`health` (a core that caches files)."""
    loads_note: str | None = None
    """Said after a committed change when the panel needs no restart (how it picks files up)."""

    def __init__(self, layout: Layout, config: Config) -> None:
        self.layout = layout
        self.config = config

    @abstractmethod
    def detect(self, names: set[str]) -> bool:
        """Whether package entry names (wrapping prefix removed) are this panel's."""

    @abstractmethod
    def describe(self, source: Source, prefix: str) -> Package:
        """Read metadata and map entries to targets; raise InvalidPackage on any rule."""

    @abstractmethod
    def anchor(self, name: str) -> Path:
        """The directory under which this package's files live; nothing above it is touched."""

    @abstractmethod
    def hook(self, pkg: Package, hook: str) -> HookSpec | None:
        """How to run ``hook`` for ``pkg``, or None when the package has none."""

    def check_compatible(self, pkg: Package) -> list[str]:
        """Refuse packages this panel cannot take; return warnings."""
        return []

    def data_dirs(self, name: str) -> list[str]:
        """Root-relative directories holding the package's data (removed only by --purge)."""
        return []

    def leftover_dirs(self, name: str) -> list[str]:
        """Root-relative directories an uninstall should leave empty (reported otherwise)."""
        return []

    def whole_dirs(self, name: str, created: Iterable[str]) -> list[str]:
        """Root-relative directories that package ``name`` owns outright, candidates for a
        whole-directory switch (``created``: the directories the agent made for it).  The
        planner still switches file by file in any that holds something else now."""
        return []

    def hook_env(self) -> dict[str, str]:
        """Panel-specific environment for hooks."""
        return {}

    def mark(self) -> Mark | None:
        """Where the panel's log stands now, taken before the switch; None without a log."""
        return None

    def register(self, runner: Runner, name: str, present: bool) -> list[str]:
        """Make the panel's own list of plugins agree with the files: ``name`` registered
        when ``present`` (its files in place), else not; raise RegistrationFailed; notes."""
        return []

    @abstractmethod
    def restart(self, runner: Runner) -> list[str]:
        """Make the panel pick up changed files (transaction step 7); return notes."""

    def health(self, pkg: Package, mark: Mark | None, window: float) -> list[str]:
        """Watch the panel for ``window`` seconds after a change; raise HealthCheckFailed."""
        return []


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
