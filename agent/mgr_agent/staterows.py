"""The rows of the state database as the code reads and writes them (``mgr_agent.state``
exports them): an installed package, a manifest's file, a retained version, a commit.

Their own module so that ``list`` and ``history``, which read plain tuples, start without
``dataclasses``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


@dataclass(frozen=True)
class Installed:
    panel: str
    name: str
    version: str
    release: str
    content_hash: str
    archive: str
    installed_at: float
    tx: str
    meta: dict[str, Any]
    archive_sha: str = ""

    @property
    def label(self) -> str:
        return f"{self.version}-{self.release}" if self.release else self.version


class FileRow(NamedTuple):
    """One file of a manifest.  ``crc32`` is the zip entry's CRC-32 (None from tar and
    directory sources, and in rows written before it was kept); ``ino`` and ``mtime_ns``
    are the on-disk file's as the agent left it (0: unknown), so that an unmodified file
    is recognised without reading it.  A named tuple: a manifest of thousands is read
    at every upgrade and uninstall, and a tuple is made four times faster than a frozen
    dataclass."""

    path: str
    sha256: str
    size: int
    mode: int
    kind: str
    crc32: int | None = None
    ino: int = 0
    mtime_ns: int = 0


@dataclass(frozen=True)
class RetainedVersion:
    """A row of the ``kept`` table: an earlier version available for rollback."""

    panel: str
    name: str
    version: str
    release: str
    content_hash: str
    archive: str
    retained_at: float  # column kept_at
    tx: str


@dataclass
class Commit:
    """Everything a committed transaction writes, applied atomically."""

    tx: str
    panel: str
    name: str
    package: Installed | None
    files: list[tuple[str, FileRow]]
    dirs: list[str]
    diversions_add: dict[str, str]
    diversions_drop: list[str]
    retain_previous: RetainedVersion | None
    """The version being replaced, retained for rollback."""
    drop_retained_hash: str | None
    """A retained version with this content hash is dropped (it is the one installed now)."""
    retain_versions: int
    """How many retained versions to leave (``[state] keep_versions``)."""
    history: dict[str, Any]
    previous: dict[str, FileRow] | None = None
    """The package's manifest as the plan read it under the lock (an upgrade's, a
    rollback's): only the rows that differ from it are written."""
