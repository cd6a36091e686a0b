"""A package: its panel, identity, version and the files it installs, read and verified.

Loading reads every entry once: it verifies sizes and checksums, hashes the content,
and parses every XML file through :mod:`mgr_agent.xmlsafe`, so that an invalid
package is refused before anything is written.  On an upgrade from a zip, entries whose
CRC-32, size and mode equal the installed manifest's are not read at all (their content
is the installed one: docs/transactions.md, "Change detection").  ``install`` hashes the
entries it does not keep in memory on a thread while its checks run (``background``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mgr_agent import hashproc, secretscan, xmlsafe
from mgr_agent.archive import Source, open_source
from mgr_agent.errors import ChecksumMismatch, InvalidPackage
from mgr_agent.fsutil import sha256_file
from mgr_agent.limits import Limits
from mgr_agent.shape import detect_layout, junk_root, summarize
from mgr_agent.zipsource import ZipSource

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
    pending: _Pending | hashproc.Helper | None = field(default=None, repr=False)
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


@dataclass(frozen=True)
class Scan:
    """What to run on the bytes of each entry of up to ``limit`` bytes as it is hashed."""

    run: Callable[[bytes], object]
    limit: int


class _Pending:
    """The hashes of some entries, computed on two threads of their own while the caller
    goes on (zlib and hashlib release the GIL on large buffers)."""

    def __init__(self, source: Source, names: list[str], done: dict[str, str],
                 scan: Scan | None = None) -> None:
        """``scan``: run on the bytes of every entry of up to ``scan.limit`` bytes as it is
        hashed (the secrets scan: those entries need no second read); see :meth:`results`."""
        self._stop = threading.Event()
        self._done = done
        self._scan = scan
        self.names = frozenset(n for n in names if source.entries[n].size <= scan.limit) \
            if scan is not None else frozenset()
        self._results: dict[str, object] = {}
        # two threads: the caller mostly waits for them once its own checks are done
        ways = 2 if len(names) > 1 else 1
        self._pool = ThreadPoolExecutor(ways, thread_name_prefix="mga-hash")
        self._futures = [self._pool.submit(self._run, source, names[i::ways])
                         for i in range(ways)]

    def _run(self, source: Source, names: list[str]) -> dict[str, str]:
        hashes: dict[str, str] = {}
        for name in names:
            if self._stop.is_set():
                break
            scanned = self._scan is not None and name in self.names
            digest, data = _hash_one(source, name, scanned)
            hashes[name] = digest
            if self._scan is not None and data is not None:
                self._results[name] = self._scan.run(data)
        return hashes

    def results(self) -> dict[str, object]:
        """The scan's result for each entry of :attr:`names`, once the threads are done
        (raises what reading an entry raised)."""
        for future in self._futures:
            future.result()
        return self._results

    def result(self) -> dict[str, str]:
        """Every entry's hash (those computed before, and the threads')."""
        try:
            hashes = dict(self._done)
            for future in self._futures:
                hashes |= future.result()
            return hashes
        finally:
            self._pool.shutdown()

    def cancel(self) -> None:
        """Stop after the entry being read, and wait for that."""
        self._stop.set()
        self._pool.shutdown(wait=True)


def _digest_aside(path: Path) -> Future[str]:
    """The sha256 of the archive at ``path``, on a thread of its own."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="mga-digest")
    try:
        return pool.submit(sha256_file, path)
    finally:
        pool.shutdown(wait=False)  # its thread ends when the hash is done; the future stays


HELPER_FROM = 8 * 1024 * 1024
"""Bytes of entries left to hash from which the helper process (:mod:`mgr_agent.hashproc`)
hashes them instead of two threads: below, its start (~25 ms) costs more than it saves."""


def _helper(source: Source, names: list[str], done: dict[str, str], scan: Scan | None,
            runner: Runner | None) -> hashproc.Helper | None:
    """The helper process to hash ``names`` while the caller goes on, where it pays: the
    entries are stored or deflated zip members, together large enough, the scan (if any)
    is the secrets scan, and there are two CPUs; else None (threads do it)."""
    if (not isinstance(source, ZipSource) or runner is None or (os.cpu_count() or 1) < 2
            or sum(source.entries[n].size for n in names) < HELPER_FROM
            or (scan is not None and scan.run is not secretscan.secret_hits)):
        return None
    members = [source.member(n) for n in names]
    entries: list[hashproc.Request] = []
    for name, member in zip(names, members, strict=True):
        if member is None:
            return None
        size = source.entries[name].size
        entries.append((name, *member, size, scan is not None and size <= scan.limit))
    try:
        return hashproc.Helper(runner, source.fileno(), entries, done,
                               lambda name, keep: _hash_one(source, name, keep),
                               scan.run if scan is not None else None)
    except OSError as exc:  # no process could be started (out of pids, memory): threads do it
        hashproc.warn(f"the hashing helper could not start ({exc}): hashing on threads")
        return None


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
# and inflate them a second time: the smallest files first (per file, opening a member
# costs more than inflating a few KB), up to a total, so that a large package is never
# held in memory whole (the others are inflated again when checked and staged).  With
# 24 MiB, a 5,000-file / 60 MB install peaks at about 84-87 MiB RSS and its upgrade at
# 89 MiB (the agent alone; 32 MiB saved another 5% of CPU but peaked at 92 MiB).
KEEP_FILE = 256 * 1024
MEMORY_BUDGET = 24 * 1024 * 1024
# threads that inflate and hash the large entries (zlib and hashlib release the GIL on
# large buffers); entries from this size on go to them
WORKERS = min(4, max(2, os.cpu_count() or 2))
PARALLEL_FROM = 256 * 1024


def parallel_reads(source: Source) -> bool:
    """Whether entries may be read by several threads at once: zip members and files of a
    directory may; tar members share one (possibly compressed) stream and may not."""
    return source.kind != "tar"


def _hash_one(source: Source, name: str, keep: bool) -> tuple[str, bytes | None]:
    """sha256 of one entry, read as a stream (this also verifies its size and CRC); its
    bytes when ``keep``."""
    digest = hashlib.sha256()
    parts: list[bytes] = []
    for chunk in source.chunks(name):
        digest.update(chunk)
        if keep:
            parts.append(chunk)
    if not keep:
        return digest.hexdigest(), None
    return digest.hexdigest(), parts[0] if len(parts) == 1 else b"".join(parts)


def _keep(source: Source, names: list[str], inflated: dict[str, bytes]) -> set[str]:
    """The entries of ``names`` to hold in memory once inflated: the smallest first, while
    the budget lasts (by size, then name: deterministic)."""
    budget = MEMORY_BUDGET - sum(len(v) for v in inflated.values())
    keep: set[str] = set()
    for size, name in sorted((source.entries[n].size, n) for n in names if n not in inflated):
        if size > KEEP_FILE or size > budget:
            break
        keep.add(name)
        budget -= size
    return keep


def _hash_entries(source: Source, names: list[str], inflated: dict[str, bytes]) -> dict[str, str]:
    """sha256 of the entries ``names``; the smallest leave their inflated bytes in
    ``inflated`` while the budget lasts (by size, then name: deterministic).

    Entries of at least :data:`PARALLEL_FROM` bytes are hashed on a few threads (zlib and
    hashlib release the GIL on large buffers) while this thread does the small ones: a
    pool for small entries costs more in handing them over than it saves (measured in
    docs/performance.md)."""
    keep = _keep(source, names, inflated)
    large = [n for n in names if source.entries[n].size >= PARALLEL_FROM]
    results: dict[str, tuple[str, bytes | None]] = {}
    if WORKERS < 2 or len(large) < 2 or not parallel_reads(source):
        large = []
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="mga-hash") if large else \
            contextlib.nullcontext() as pool:
        futures = [(n, pool.submit(_hash_one, source, n, n in keep)) for n in large] \
            if pool is not None else []
        skip = set(large)
        for name in names:
            if name not in skip:
                results[name] = _hash_one(source, name, name in keep)
        for name, future in futures:
            results[name] = future.result()
    hashes: dict[str, str] = {}
    for name in names:
        digest, data = results[name]
        hashes[name] = digest
        if data is not None:
            inflated[name] = data
    return hashes


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
    scan: Scan | None = None,
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
            hashes = _hash_entries(source, xml, inflated)
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
        if background and pkg.version and parallel_reads(source):
            keep = _keep(source, rest, inflated)
            later = [n for n in rest if n not in keep]
            # the helper process starts before this thread hashes the kept entries, threads
            # after them (beside this thread they would only slow it: the GIL)
            helper = _helper(source, later, hashes, scan, runner) if later else None
            pkg.pending = helper
            if unhashed:  # by the helper, which hashes the archive too, else on a thread
                pkg.digest = helper.digest if helper is not None else _digest_aside(path)
                unhashed = False
            hashes.update(_hash_entries(source, [n for n in rest if n in keep], inflated))
            if later:  # (``hashes`` is their ``done``: complete before they are asked)
                pkg.pending = pkg.pending or _Pending(source, later, hashes, scan)
                return pkg
        else:
            hashes |= _hash_entries(source, rest, inflated)
        if unhashed:
            pkg.digest = _digest_aside(path)
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
