"""Hashing a package's entries as it is read: on the calling thread (keeping the smallest
inflated in memory for the staging), and, for ``install``, those it does not keep in the
background while the checks run — on two threads (:class:`Threads`), or for a large zip
in the helper process (:mod:`mgr_agent.hashproc`), which also hashes the archive itself.
The secrets scan (:class:`Scan`) runs where an entry is hashed, so that it is read once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mgr_agent import hashproc, secretscan
from mgr_agent.archive import Source
from mgr_agent.digests import sha256_file
from mgr_agent.zipsource import ZipSource

if TYPE_CHECKING:
    from mgr_agent.proc import Runner

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


def hash_one(source: Source, name: str, keep: bool) -> tuple[str, bytes | None]:
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


def to_keep(source: Source, names: list[str], inflated: dict[str, bytes]) -> set[str]:
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


def hash_entries(source: Source, names: list[str], inflated: dict[str, bytes]) -> dict[str, str]:
    """sha256 of the entries ``names``; the smallest leave their inflated bytes in
    ``inflated`` while the budget lasts (by size, then name: deterministic).

    Entries of at least :data:`PARALLEL_FROM` bytes are hashed on a few threads (zlib and
    hashlib release the GIL on large buffers) while this thread does the small ones: a
    pool for small entries costs more in handing them over than it saves (measured in
    docs/performance.md)."""
    keep = to_keep(source, names, inflated)
    large = [n for n in names if source.entries[n].size >= PARALLEL_FROM]
    results: dict[str, tuple[str, bytes | None]] = {}
    if WORKERS < 2 or len(large) < 2 or not parallel_reads(source):
        large = []
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="mga-hash") if large else \
            contextlib.nullcontext() as pool:
        futures = [(n, pool.submit(hash_one, source, n, n in keep)) for n in large] \
            if pool is not None else []
        skip = set(large)
        for name in names:
            if name not in skip:
                results[name] = hash_one(source, name, name in keep)
        for name, future in futures:
            results[name] = future.result()
    hashes: dict[str, str] = {}
    for name in names:
        digest, data = results[name]
        hashes[name] = digest
        if data is not None:
            inflated[name] = data
    return hashes


@dataclass(frozen=True)
class Scan:
    """What to run on the bytes of each entry of up to ``limit`` bytes as it is hashed."""

    run: Callable[[bytes], object]
    limit: int


class Threads:
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
            digest, data = hash_one(source, name, scanned)
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


def digest_aside(path: Path) -> Future[str]:
    """The sha256 of the archive at ``path``, on a thread of its own."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="mga-digest")
    try:
        return pool.submit(sha256_file, path)
    finally:
        pool.shutdown(wait=False)  # its thread ends when the hash is done; the future stays


HELPER_FROM = 8 * 1024 * 1024
"""Bytes of entries left to hash from which the helper process (:mod:`mgr_agent.hashproc`)
hashes them instead of two threads: below, its start (~25 ms) costs more than it saves."""


def helper(source: Source, names: list[str], done: dict[str, str], scan: Scan | None,
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
                               lambda name, keep: hash_one(source, name, keep),
                               scan.run if scan is not None else None)
    except OSError as exc:  # no process could be started (out of pids, memory): threads do it
        hashproc.warn(f"the hashing helper could not start ({exc}): hashing on threads")
        return None
