"""A package: its panel, identity, version and the files it installs, read and verified.

Loading reads every entry once: it verifies sizes and checksums, hashes the content,
and parses every XML file through :mod:`mgr_agent.xmlsafe`, so that an invalid
package is refused before anything is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mgr_agent import xmlsafe
from mgr_agent.archive import Source, open_source
from mgr_agent.errors import ChecksumMismatch, InvalidPackage
from mgr_agent.fsutil import sha256_file
from mgr_agent.limits import Limits
from mgr_agent.shape import detect_layout, junk_root, summarize

if TYPE_CHECKING:
    from mgr_agent.panels.base import Panel

FileKind = Literal["file", "data"]


@dataclass
class FileSpec:
    """One file the package puts under the root.

    ``kind == "data"`` marks Plesk ``var/`` files: installed when absent, never
    replaced or removed by an upgrade, and not owned by the package.
    """

    target: str
    entry: str
    sha256: str = ""
    size: int = 0
    mode: int = 0o644
    kind: FileKind = "file"


@dataclass
class Package:
    panel: str
    name: str
    version: str
    release: str
    source: Source
    prefix: str
    files: dict[str, FileSpec]
    hooks: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    content_hash: str = ""
    archive_sha256: str = ""
    inflated: dict[str, bytes] = field(default_factory=dict, repr=False)
    """Entries already inflated in memory by the verifying pass (source entry -> bytes)."""
    not_installed: list[str] = field(default_factory=list)
    """Entries the panel does not install (README, LICENSE ...), package-relative."""
    not_installed_why: str = "the panel does not use"

    @property
    def label(self) -> str:
        return f"{self.version}-{self.release}" if self.release else self.version

    def entry(self, name: str) -> str:
        """Source entry name of a package-relative name."""
        return self.prefix + name

    def chunks(self, spec: FileSpec) -> Iterator[bytes]:
        data = self.inflated.get(spec.entry)
        if data is not None:
            return iter((data,))
        return self.source.chunks(spec.entry)

    def close(self) -> None:
        self.source.close()


def skip_notes(pkg: Package) -> list[str]:
    """One line per kind of file the package holds but does not install."""
    notes = []
    junk = pkg.source.skipped
    if junk:
        roots = sorted({junk_root(n) for n in junk})
        notes.append(f"skipped {len(junk)} VCS/editor file(s) ("
                     + ", ".join(roots[:5]) + (", …" if len(roots) > 5 else "") + ")"
                     + ("; all listed in --json" if len(junk) > len(roots[:5]) else ""))
    if pkg.not_installed:
        notes.append(summarize(pkg.not_installed, f"file(s) {pkg.not_installed_why}",
                               verb="not installed:"))
    return notes


def skipped_json(pkg: Package) -> dict[str, list[str]]:
    """The full lists behind :func:`skip_notes`, for ``--json``."""
    return {"vcs": sorted(pkg.source.skipped), "not_installed": sorted(pkg.not_installed)}


def _where(path: Path) -> tuple[str, str]:
    """How messages name a source, and the path a suggested command starts with."""
    if path.is_dir():
        return f"the folder {path}", str(path).rstrip("/")
    return f"the archive {path.name}", "DIR"


# Inflated entries held in memory from the verifying pass, so that staging does not read
# and inflate the archive a second time; bigger packages are read again when staged.
MEMORY_BUDGET = 256 * 1024 * 1024


def _hash_entries(source: Source, inflated: dict[str, bytes]) -> dict[str, str]:
    """sha256 of every entry (this also verifies sizes and CRCs); small enough packages
    leave their inflated bytes in ``inflated``."""
    in_memory = sum(e.size for e in source.entries.values()) <= MEMORY_BUDGET
    hashes: dict[str, str] = {}
    for name in sorted(source.entries):
        parts = list(source.chunks(name))
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        hashes[name] = hashlib.sha256(data).hexdigest()
        if in_memory:
            inflated[name] = data
    return hashes


def content_hash(panel: str, name: str, source: Source, hashes: dict[str, str]) -> str:
    digest = hashlib.sha256(f"{panel}\0{name}\0".encode())
    for entry in sorted(source.entries):
        digest.update(f"{entry}\0{source.entries[entry].mode:o}\0{hashes[entry]}\n".encode())
    return digest.hexdigest()


def load(
    path: Path,
    panels: list[Panel],
    *,
    panel_hint: str | None = None,
    sha256: str | None = None,
    limits: Limits | None = None,
    verify: bool = True,
    archive_sha256: str | None = None,
) -> Package:
    """Open, verify and describe the package at ``path``.

    ``verify=False`` skips hashing and XML checks: only for the agent's own stored copy
    of a package it verified when installing it (to run its uninstall hook).
    """
    archive_sha = ""
    if path.is_file():
        archive_sha = archive_sha256 or sha256_file(path)
        if sha256 is not None and archive_sha != sha256.lower():
            raise ChecksumMismatch(
                f"{path}: sha256 is {archive_sha}, expected {sha256.lower()}", path=str(path)
            )
    elif sha256 is not None and path.is_dir():
        raise InvalidPackage(f"{path}: --sha256 applies to an archive file, not a directory")
    source = open_source(path, limits)
    try:
        where, install_path = _where(path)
        panel, prefix = detect_layout(set(source.entries), panels, panel_hint, where=where,
                                      install_path=install_path)
        inflated: dict[str, bytes] = {}
        hashes = _hash_entries(source, inflated) if verify else {}
        for name in source.entries:
            if verify and name.endswith(".xml") and name.startswith(prefix):
                data = inflated.get(name)
                xmlsafe.parse(data if data is not None else b"".join(source.chunks(name)),
                              name[len(prefix):])
        pkg = panel.describe(source, prefix)
        pkg.inflated = inflated
        if not verify:
            return pkg
        for spec in pkg.files.values():
            spec.sha256 = hashes[spec.entry]
            spec.size = source.entries[spec.entry].size
        pkg.content_hash = content_hash(panel.name, pkg.name, source, hashes)
        pkg.archive_sha256 = archive_sha
        if not pkg.version:
            pkg.version = "0+" + pkg.content_hash[:12]
        return pkg
    except BaseException:
        source.close()
        raise
