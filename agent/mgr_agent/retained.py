"""Old trees kept for rollback (docs/transactions.md#retained-trees).

After an upgrade commits, the old tree of a directory switched whole (see
:mod:`mgr_agent.dirswitch`) holds the previous version's files under that directory.  When
that version is retained for rollback (table ``kept``) and the tree holds exactly its files,
the tree is moved to ``var/lib/mgr-agent/trees/HASH/`` (HASH: the version's content hash)
instead of being deleted, and ``index.json`` there records each file's manifest row:
sha256, CRC-32, mode, size, inode and mtime.  Installing that version again (``rollback``)
renames the tree back as its staged tree: no entry is inflated, written or fsynced again.

The index is a cache, never the reference: a tree is taken only while every file has the
inode, mtime, size and mode recorded (and the owner the plan gives it) and the tree holds
nothing else; otherwise the version is staged from its retained archive as before.  Trees
of versions no longer retained are deleted with the archives (:func:`collect`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Callable, Mapping
from typing import Any

from mgr_agent.dirplan import DirOp, known_tree
from mgr_agent.fsutil import rename_within_mount
from mgr_agent.layout import Layout
from mgr_agent.reclaim import hand_over
from mgr_agent.staterows import FileRow
from mgr_agent.trees import parents, rmtree

INDEX = "index.json"
# one file of the index: sha256, crc32, mode, size, inode, mtime_ns, kind (its manifest row)
Record = list[Any]
RECORD = 7
Manifest = Callable[[str, str], Mapping[str, FileRow]]


def _tree_name(path: str) -> str:
    return "t-" + hashlib.sha256(path.encode()).hexdigest()[:16]


def _walk(top: str, files: Mapping[str, object]) -> dict[str, os.stat_result] | None:
    """The lstat of every file under ``top`` if it holds exactly ``files`` (relative
    paths) as regular files and only their directories; None at the first other entry."""
    wanted = parents(files)
    found: dict[str, os.stat_result] = {}
    stack = [""]
    while stack:
        prefix = stack.pop()
        with os.scandir(f"{top}/{prefix}" if prefix else top) as it:
            for entry in it:
                rel = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    if rel not in wanted:
                        return None
                    stack.append(rel + "/")
                    continue
                if rel not in files or not entry.is_file(follow_symlinks=False):
                    return None
                found[rel] = entry.stat(follow_symlinks=False)
    return found if len(found) == len(files) else None


# the index read last (a rollback reads it twice): path -> (its stat, data); one at most,
# so that a long-running daemon does not keep every index it ever read
_read: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}


def _load(top: str, key: str) -> dict[str, Any]:
    """The index of version ``key`` (``archive_sha256``, ``dirs``: directory -> its tree
    and files); {} if there is none or it cannot be read.  Read again only once changed."""
    path = f"{top}/{key}/{INDEX}"
    try:
        st = os.stat(path)
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        if path in _read and _read[path][0] == sig:
            return _read[path][1]
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("dirs"), dict):
        return {}
    _read.clear()
    _read[path] = (sig, data)
    return data


def _index(top: str, key: str) -> dict[str, Any]:
    """The ``dirs`` of the index of version ``key``."""
    dirs: dict[str, Any] = _load(top, key).get("dirs", {})
    return dirs


def for_rollback(layout: Layout, key: str, manifest: Manifest) -> tuple[Manifest, str | None]:
    """For installing retained version ``key`` again: ``manifest`` (the installed version's
    rows) with, over it, the rows of the files in that version's retained trees, by
    root-relative path, which :func:`mgr_agent.package.load` may take an entry's sha256
    from when its CRC-32, size and mode match (that version's own manifest, as it was
    installed); and the sha256 of the archive it was installed from, if recorded."""
    top = str(layout.trees_dir)

    def rows(panel: str, name: str) -> Mapping[str, FileRow]:
        out = dict(manifest(panel, name))
        for path, entry in _index(top, key).items():
            files = entry.get("files") if isinstance(entry, dict) else None
            for rel, rec in (files if isinstance(files, dict) else {}).items():
                if isinstance(rec, list) and len(rec) == RECORD:
                    out[f"{path}/{rel}"] = FileRow(f"{path}/{rel}", rec[0], rec[3], rec[2],
                                                   rec[6], rec[1])
        return out

    digest = _load(top, key).get("archive_sha256")
    return rows, digest if isinstance(digest, str) and digest else None


class Retention:
    """The retained trees of one transaction: the one it may take for its staging
    (``take_hash``), the ones it keeps after its commit (``keep_hash``)."""

    def __init__(self, layout: Layout, *, take_hash: str | None, new_rows: Mapping[str, FileRow],
                 keep_hash: str | None, old_rows: Mapping[str, FileRow],
                 keep_archive: str = "") -> None:
        self.top = str(layout.trees_dir)
        self.take_hash, self.new_rows = take_hash, new_rows
        self.keep_hash, self.old_rows = keep_hash, old_rows
        self.keep_archive = keep_archive  # the sha256 of the archive it was installed from
        self._kept: dict[str, dict[str, Any]] = {}
        self._taking: dict[str, Any] | None = None  # the index of take_hash, read once
        self.taken: set[str] = set()  # the staged trees that are retained trees

    def offers(self, d: DirOp) -> bool:
        """Whether the index of ``take_hash`` names a tree for ``d`` (read once)."""
        if self.take_hash is None:
            return False
        if self._taking is None:
            self._taking = _index(self.top, self.take_hash)
        return d.path in self._taking

    def take(self, d: DirOp, dest: str, owners: Mapping[str, tuple[int, int] | None]
             ) -> dict[str, os.stat_result] | None:
        """Rename the retained tree of ``d`` to ``dest`` if it holds exactly the files
        ``owners`` names (relative to ``d``; each with the owner it needs, None: any), with
        the sha256 and mode of the new manifest, each as the index recorded it; their lstat
        (what the manifest stamps), or None (nothing moved: stage as usual)."""
        if not self.offers(d):
            return None
        entry = self._taking.get(d.path) if self._taking else None
        if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict):
            return None
        records: dict[str, Record] = entry["files"]
        if records.keys() != owners.keys():
            return None
        for rel, rec in records.items():
            row = self.new_rows.get(f"{d.path}/{rel}")
            if (row is None or not isinstance(rec, list) or len(rec) != RECORD
                    or (rec[0], rec[2], rec[6]) != (row.sha256, row.mode, row.kind)):
                return None
        tree = f"{self.top}/{self.take_hash}/{entry.get('tree')}"
        try:
            if os.lstat(tree).st_dev != os.lstat(os.path.dirname(dest)).st_dev:
                return None
            found = _walk(tree, records)
        except OSError:
            return None
        if found is None:
            return None
        for rel, st in found.items():
            rec, owner = records[rel], owners[rel]
            if [stat.S_IMODE(st.st_mode), st.st_size, st.st_ino, st.st_mtime_ns] != rec[2:6]:
                return None
            if owner is not None and (st.st_uid, st.st_gid) != owner:
                return None
        try:
            os.rename(tree, dest)
        except OSError:
            return None  # (staged from the archive instead)
        self.taken.add(dest)
        return found

    def keep(self, d: DirOp, old: str) -> bool:
        """After the commit: move ``old``, the old tree of ``d``, under the retained
        version's folder if it holds exactly that version's files under ``d`` (by name and
        type: each one's row is checked when the tree is taken); whether it was moved
        (else it is deleted, files no version shipped carried out of it first)."""
        if self.keep_hash is None:
            return False
        prefix = d.path + "/"
        rows = {p[len(prefix):]: r for p, r in self.old_rows.items()
                if p.startswith(prefix) and r.kind != "data"}
        if any(row.ino == 0 for row in rows.values()):
            return False  # a file never recorded as written: its tree could not be checked
        folder = f"{self.top}/{self.keep_hash}"
        try:
            # names and types only (the rule that chose the directory): each file's inode,
            # mtime, size and mode are checked against its row when the tree is taken
            if known_tree(old, "", rows.keys()) != len(rows):
                return False
            os.makedirs(folder, mode=0o700, exist_ok=True)
        except OSError:
            return False
        name = _tree_name(d.path)
        rmtree(f"{folder}/{name}")  # a stale one of the same version
        if not rename_within_mount(old, f"{folder}/{name}"):  # another filesystem or mount
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # made above, empty unless the version kept other trees
            return False
        self._kept[d.path] = {"tree": name, "files": {
            rel: [r.sha256, r.crc32, r.mode, r.size, r.ino, r.mtime_ns, r.kind]
            for rel, r in sorted(rows.items())}}
        return True

    def write_index(self) -> None:
        """Record the trees :meth:`keep` moved (merged with the version's earlier ones)."""
        if self.keep_hash is None or not self._kept:
            return
        dirs = {**_index(self.top, self.keep_hash), **self._kept}
        path = f"{self.top}/{self.keep_hash}/{INDEX}"
        data = {"archive_sha256": self.keep_archive, "dirs": dirs}
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            fh.write(json.dumps(data, separators=(",", ":")))  # dumps: the C encoder
        os.replace(path + ".tmp", path)


def collect(layout: Layout, wanted: set[str], *, later: bool = False) -> None:
    """Delete the trees of versions not in ``wanted`` (content hashes still retained); with
    ``later``, hand them over to be deleted after the command (:mod:`mgr_agent.reclaim`)."""
    top = layout.trees_dir
    if not top.is_dir():
        return
    for child in top.iterdir():
        if child.name in wanted:
            continue
        if child.is_symlink() or not child.is_dir():
            child.unlink(missing_ok=True)
        elif not (later and hand_over(layout, str(child),
                                      f"trees-{child.name}-{os.urandom(4).hex()}")):
            rmtree(str(child))
