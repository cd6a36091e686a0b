"""A package: its panel, identity, version and the files it installs, read and verified.

Loading reads every entry once: it verifies sizes and checksums, hashes the content,
and parses every XML file through :mod:`mgr_agent.xmlsafe`, so that an invalid
package is refused before anything is written.  On an upgrade from a zip, entries whose
CRC-32, size and mode equal the installed manifest's are not read at all (their content
is the installed one: docs/transactions.md, "Change detection").  ``install`` hashes the
entries it does not keep in memory in the background while its checks run
(``background``: :mod:`mgr_agent.hashing`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mgr_agent import hashing, hashproc, xmlsafe
from mgr_agent.archive import Source, open_source
from mgr_agent.digests import sha256_file
from mgr_agent.errors import ChecksumMismatch, InvalidPackage
from mgr_agent.limits import Limits
from mgr_agent.shape import detect_layout, junk_root, summarize

if TYPE_CHECKING:
    from mgr_agent.panels.base import Panel
    from mgr_agent.proc import Runner
    from mgr_agent.state import FileRow

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
    crc32: int | None = None  # the zip entry's; None from tar and directory sources


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
    same: frozenset[str] = frozenset()
    """Entries taken to hold the installed version's content (CRC-32, size and mode equal
    the manifest's): never read, their sha256 is the manifest's."""
    pending: hashing.Threads | hashproc.Helper | None = field(default=None, repr=False)
    """Hashes still being computed on threads or by the helper process
    (``load(background=True)``): see :meth:`hashed`."""
    digest: Future[str] | None = field(default=None, repr=False)
    """The archive's sha256 being computed on a thread or by the helper process: see
    :meth:`archive_digest`."""

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

    def hashed(self) -> None:
        """Wait for the entries' hashes ``load(background=True)`` left computing and fill
        in ``FileSpec.sha256`` and ``content_hash``; raises what reading an entry raised (a
        damaged entry: the package is refused).  Before it, neither is set."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            _finish(self, pending.result())

    def archive_digest(self) -> str:
        """The archive's sha256 (``archive_sha256``), waiting for its thread if it runs:
        only the commit needs it, so a transaction does not wait for it before then."""
        if self.digest is not None:
            digest, self.digest = self.digest, None
            self.archive_sha256 = digest.result()
        return self.archive_sha256

    def close(self) -> None:
        if self.pending is not None:  # nothing may still read the source once it is closed
            self.pending.cancel()
            self.pending = None
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


def _installed_content(pkg: Package, rows: Mapping[str, FileRow]) -> dict[str, str]:
    """The sha256 of every entry whose zip CRC-32, size, mode and kind equal the installed
    manifest's row for its target: taken to be the installed content, never read
    (docs/transactions.md, "Change detection").  Records each file's CRC-32 and size."""
    found: dict[str, str] = {}
    for spec in pkg.files.values():
        entry = pkg.source.entries[spec.entry]
        spec.size, spec.crc32 = entry.size, entry.crc32
        row = rows.get(spec.target)
        if (row is not None and entry.crc32 is not None and row.crc32 == entry.crc32
                and row.size == entry.size and row.mode == spec.mode and row.kind == spec.kind
                and row.sha256):
            found[spec.entry] = row.sha256
    return found


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
    installed: Callable[[str, str], Mapping[str, FileRow]] | None = None,
    background: bool = False,
    scan: hashing.Scan | None = None,
    runner: Runner | None = None,
) -> Package:
    """Open, verify and describe the package at ``path``.

    ``verify=False`` skips hashing and XML checks: only for the agent's own stored copy
    of a package it verified when installing it (to run its uninstall hook).
    ``installed(panel, name)`` gives the manifest of the installed version, if any: entries
    it already holds (same CRC-32, size and mode) are not read (``Package.same``).
    ``background``: the archive's sha256 (unless given or checked against ``sha256``) and
    the entries not held in memory are hashed on threads while the caller goes on (the
    checks); :meth:`Package.hashed` waits for them (the entries of a zip or a directory of
    a package with a version: a tar is read in one stream, and a version made of the
    content hash is needed at once).  ``scan`` runs on those entries' bytes on that thread
    (``Package.pending.results()``): the secrets scan, which then does not read them again.
    With a ``runner``, a large share of such entries is hashed (and scanned) by a helper
    process instead (:mod:`mgr_agent.hashproc`), beside this thread's own hashing.
    """
    archive_sha = ""
    unhashed = False  # the archive's sha256 is for later (see background)
    if path.is_file() and background and archive_sha256 is None and sha256 is None:
        unhashed = True
    elif path.is_file():
        archive_sha = archive_sha256 or sha256_file(path)
        if sha256 is not None and archive_sha != sha256.lower():
            raise ChecksumMismatch(
                f"{path}: sha256 is {archive_sha}, expected {sha256.lower()}", path=str(path)
            )
    elif sha256 is not None and path.is_dir():
        raise InvalidPackage(f"{path}: --sha256 applies to an archive file, not a directory")
    source = open_source(path, limits)
    pkg: Package | None = None
    try:
        where, install_path = _where(path)
        panel, prefix = detect_layout(set(source.entries), panels, panel_hint, where=where,
                                      install_path=install_path)
        inflated: dict[str, bytes] = {}
        hashes: dict[str, str] = {}
        if verify:  # XML is refused before the panel reads any of it
            xml = sorted(n for n in source.entries if n.endswith(".xml") and n.startswith(prefix))
            hashes = hashing.hash_entries(source, xml, inflated)
            for name in xml:
                data = inflated.get(name)
                xmlsafe.parse(data if data is not None else b"".join(source.chunks(name)),
                              name[len(prefix):])
        pkg = panel.describe(source, prefix)
        pkg.inflated = inflated
        if not verify:
            return pkg
        same = _installed_content(pkg, installed(panel.name, pkg.name) if installed else {})
        hashes |= same
        pkg.same = frozenset(same)
        rest = sorted(n for n in source.entries if n not in hashes)
        pkg.archive_sha256 = archive_sha
        if background and pkg.version and hashing.parallel_reads(source):
            keep = hashing.to_keep(source, rest, inflated)
            later = [n for n in rest if n not in keep]
            # the helper process starts before this thread hashes the kept entries, threads
            # after them (beside this thread they would only slow it: the GIL)
            helper = hashing.helper(source, later, hashes, scan, runner) if later else None
            pkg.pending = helper
            if unhashed:  # by the helper, which hashes the archive too, else on a thread
                pkg.digest = helper.digest if helper is not None else hashing.digest_aside(path)
                unhashed = False
            hashes.update(hashing.hash_entries(source, [n for n in rest if n in keep], inflated))
            if later:  # (``hashes`` is their ``done``: complete before they are asked)
                pkg.pending = pkg.pending or hashing.Threads(source, later, hashes, scan)
                return pkg
        else:
            hashes |= hashing.hash_entries(source, rest, inflated)
        if unhashed:
            pkg.digest = hashing.digest_aside(path)
        _finish(pkg, hashes)
        return pkg
    except BaseException:
        if pkg is not None and pkg.pending is not None:
            pkg.pending.cancel()  # nothing may still read the source once it is closed
        source.close()
        raise


def _finish(pkg: Package, hashes: dict[str, str]) -> None:
    """Every entry's sha256 known: the files' and the package's content hash."""
    for spec in pkg.files.values():
        spec.sha256 = hashes[spec.entry]
    pkg.content_hash = content_hash(pkg.panel, pkg.name, pkg.source, hashes)
    if not pkg.version:
        pkg.version = "0+" + pkg.content_hash[:12]
