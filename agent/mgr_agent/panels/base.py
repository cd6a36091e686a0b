"""The interface every panel implements; the engine never asks which panel it has."""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mgr_agent.config import Config
from mgr_agent.errors import UsageError
from mgr_agent.layout import Layout
from mgr_agent.panels import LogQuery as LogQuery  # noqa: PLC0414 - re-exported: declared light, in __init__

if TYPE_CHECKING:  # types only: the archive readers, checks and subprocess load when used
    from mgr_agent.archive import Source
    from mgr_agent.checks.base import Validator
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


Tree = dict[str, tuple[bytes, int]]
"""Relative path -> (content, mode)."""


@dataclass(frozen=True)
class Skeleton:
    """What ``mgr-agent new`` writes for a panel: the files and the version they carry."""

    tree: Tree
    version: str


class LogRecord(Protocol):
    """One record of a panel's log, as the CLI and the daemon render it."""

    def to_json(self) -> dict[str, Any]: ...

    def text(self, colour: bool = False) -> str: ...


class CallAnswer(Protocol):
    """The outcome of ``mgr-agent call``: text or JSON for people, and the exit code."""

    @property
    def exit_code(self) -> int: ...

    def to_json(self) -> dict[str, Any]: ...

    def text(self) -> str: ...


class Panel(ABC):
    """One panel's layout, metadata rules, hooks and runtime."""

    name: str
    detection_rule: str
    registers = False  # whether the panel keeps its own list of installed plugins (register())
    restarts: bool = True
    """Whether a change needs :meth:`restart` and :meth:`health` (a core that caches files)."""
    loads_note: str | None = None
    """Said after a committed change when the panel needs no restart (how it picks files up)."""
    serves: frozenset[str] = frozenset()
    """The runtime commands this panel answers (``logs``, ``call``, ``debug``): see
    :func:`mgr_agent.panels.serving`; the others refuse with :meth:`lacks`."""

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

    @abstractmethod
    def hook_entry(self, hook: str) -> str:
        """The package entry (below any wrapping folder) that holds ``hook``, the one
        :meth:`describe` takes for it; its name holds the hook's.  Uninstall finds the hook
        of a stored package with it, from the zip's entry names alone."""

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

    # ------------------------------------------------------------ authors' tools
    @classmethod
    def skeleton(cls, name: str) -> Skeleton:
        """``mgr-agent new NAME``: a plugin skeleton that passes ``check --strict``; raise
        UsageError for a name this panel does not take."""
        raise UsageError(f"mgr-agent new: {cls.name} has no skeleton")

    def validators(self) -> tuple[Validator, ...]:
        """This panel's validators for ``check`` (docs/check.md), after the common ones."""
        return ()

    def check_names(self, source: Source, prefix: str) -> dict[str, str]:
        """Package-relative name -> entry, as this panel's validators (and ``pack``) see the
        package; by default the entries under ``prefix`` with it removed."""
        return {n[len(prefix):]: n for n in source.entries if n.startswith(prefix)}

    def pack_modes(self, pkg: Package) -> dict[str, int] | None:
        """Zip name -> mode in this panel's canonical layout, or None for the package's own
        names (under its prefix)."""
        return None

    # ------------------------------------------------------------ runtime commands
    def lacks(self, command: str, what: str) -> UsageError:
        """The refusal of a runtime command this panel does not have."""
        return UsageError(f"mgr-agent {command}: {self.name} has no {what}")

    def log_names(self, name: str, meta: Mapping[str, Any]) -> set[str]:
        """Names by which the panel log mentions an installed plugin (``logs --plugin``)."""
        return {name}

    def log(self, query: LogQuery, *, stop: threading.Event | None = None,
            timeout: float | None = None) -> Iterator[LogRecord]:
        """``mgr-agent logs``: the panel log's records (NotFound without a log, UsageError
        for a bad level or time, raised before the first record)."""
        raise self.lacks("logs", "panel log")

    def debug(self, module: str | None, level: int | None, *, off: bool) -> list[str]:
        """``mgr-agent debug``: set (or with ``off`` put back) a log level; the changes made."""
        raise self.lacks("debug", "log level file")

    def call(self, func: str, params: Mapping[str, str], *, user: str, lang: str,
             input_path: Path | None, timeout: float) -> CallAnswer:
        """``mgr-agent call``: run the handlers bound to ``func`` like the panel does."""
        raise self.lacks("call", "handler chain")


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
