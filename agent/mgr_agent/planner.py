"""Compute what a transaction will do: files to add, replace, remove, keep; owned
directories; diversions of panel files.  Conflicts are found here, before any write."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mgr_agent import libc
from mgr_agent.digests import CHUNK, sha256_file
from mgr_agent.dirplan import choose
from mgr_agent.errors import Conflict
from mgr_agent.fsutil import check_no_symlink
from mgr_agent.layout import Layout
from mgr_agent.package import FileSpec, Package
from mgr_agent.panels.base import Panel
from mgr_agent.plan import Op, Plan
from mgr_agent.preflight import known_clear
from mgr_agent.state import FileRow, Installed, State

Stat = os.stat_result | libc.Lstat
"""A file's lstat as the planner takes it: :func:`mgr_agent.libc.lstat`'s, which also
carries its inode flags, or ``os.lstat``'s."""


@dataclass
class Change:
    """A plan plus the state it leads to when committed."""

    plan: Plan
    files: list[tuple[str, FileRow]] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    divert_add: dict[str, str] = field(default_factory=dict)
    divert_drop: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # files the admin changed since the agent put them there: {"path", "then"}, where
    # "then" is "kept" (left as they are) or what happens to them ("replaced", "removed")
    # after their content is saved under saved/NAME/TX/
    modified: list[dict[str, str]] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # files no version shipped, left in place
    staged_rows: dict[int, int] = field(default_factory=dict)  # op i -> its row in ``files``
    previous: dict[str, FileRow] = field(default_factory=dict)  # the installed version's rows

    def stamp(self, written: dict[int, os.stat_result]) -> list[tuple[str, FileRow]]:
        """The manifest rows with the inode and mtime of each file as staging wrote it
        (``Transaction.written``): what tells an unmodified file later without reading it."""
        rows = list(self.files)
        for i, at in self.staged_rows.items():
            st = written.get(i)
            if st is not None:
                target, row = rows[at]
                rows[at] = (target, _stamped(row, st))
        return rows


def _stamped(row: FileRow, st: Stat) -> FileRow:
    """``row`` with the inode and mtime of the file (its stat ``st``); per file, so
    without ``dataclasses.replace``."""
    return FileRow(path=row.path, sha256=row.sha256, size=row.size, mode=row.mode,
                   kind=row.kind, crc32=row.crc32, ino=st.st_ino, mtime_ns=st.st_mtime_ns)


def _matches(st: Stat | None, spec: FileSpec) -> bool:
    """Whether the file on disk (its lstat) still looks like the installed one."""
    if st is None:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == spec.size and stat.S_IMODE(st.st_mode) == spec.mode


def unmodified(st: Stat, row: FileRow) -> bool:
    """Whether the file (its lstat) is still the one the agent left: same size, inode and
    mtime as recorded when it was installed.  False when nothing was recorded."""
    return (row.ino != 0 and st.st_ino == row.ino and st.st_mtime_ns == row.mtime_ns
            and st.st_size == row.size)


def edited(path: str | Path, st: Stat | None, row: FileRow, *,
           trust_stat: bool = True) -> bool:
    """Whether the regular file at ``path`` (its lstat ``st``) differs in content from
    what the manifest ``row`` says the agent put there; a missing file is not edited.
    A file :func:`unmodified` since it was installed is not read unless ``trust_stat``
    is off (``verify``: the sha256 is the reference)."""
    if st is None or not stat.S_ISREG(st.st_mode):
        return False
    if st.st_size != row.size:
        return True
    if trust_stat and unmodified(st, row):
        return False
    return sha256_file(Path(path)) != row.sha256


def verify_flags(layout: Layout, row: FileRow) -> list[str]:
    """How an installed file differs from its manifest row, like ``rpm -V``: ``missing``,
    ``modified`` (content, or no longer a regular file), ``mode``.  Data files (Plesk
    ``var/``) belong to the admin and are never flagged."""
    if row.kind == "data":
        return []
    path = layout.under(row.path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return ["missing"]
    if not stat.S_ISREG(st.st_mode):
        return ["modified"]
    flags = ["modified"] if edited(path, st, row, trust_stat=False) else []
    if stat.S_IMODE(st.st_mode) != row.mode:
        flags.append("mode")
    return flags


def _read_file(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def _lstat(path: str, clear: set[str]) -> Stat | None:
    """lstat of ``path``, None when missing; ``path`` joins ``clear`` when its inode flags
    were read and it is neither immutable nor append-only (see :attr:`Plan.flags_clear`)."""
    try:
        st = libc.lstat(path)
    except FileNotFoundError:
        return None
    if isinstance(st, libc.Lstat) and known_clear(st.attributes, st.reported):
        clear.add(path)
    return st


def _depth_first(dirs: set[str]) -> list[str]:
    return sorted(dirs, key=lambda d: (-d.count("/"), d))


class Planner:
    def __init__(self, layout: Layout, state: State, panel: Panel) -> None:
        self.layout = layout
        self.state = state
        self.panel = panel
        self._present: set[str] = set()
        self._verified: set[str] = set()
        self._missing: set[str] = set()  # directories found missing: their files are too
        self._clear: set[str] = set()  # paths found without the immutable and append flags
        self._root = str(layout.root).rstrip("/")  # paths as plain strings: per file, hot

    def _op(self, plan: Plan, action: str, path: str, mode: int = 0o644, divert: bool = False,
            owner: Stat | None = None, save: bool = False) -> Op:
        """Append an op; the new file gets the owner of the file ``owner`` describes, if any."""
        op = Op(i=len(plan.ops), action=action, path=path, mode=mode, divert=divert,  # type: ignore[arg-type]
                owner=(owner.st_uid, owner.st_gid) if owner is not None else None, save=save)
        plan.ops.append(op)
        return op

    def _mkdirs(self, plan: Plan, target: str, seen: set[str]) -> None:
        """Record the missing parents of root-relative ``target``, outermost first."""
        parent = target.rpartition("/")[0]
        if not parent or parent in seen or parent in self._present:
            return
        if os.path.isdir(os.path.join(self.layout.root, parent)):
            self._present.add(parent)
            return
        self._mkdirs(plan, parent, seen)
        seen.add(parent)
        plan.mkdirs.append(parent)

    def _anchor(self, name: str) -> Path:
        """The panel directory the package lives under; it must be a real directory (a
        panel that follows its own links, like Plesk's usr/local/psa, returns the target)."""
        anchor = self.panel.anchor(name)
        if anchor != self.layout.root:
            check_no_symlink(self.layout.root, anchor, self._verified)
        return anchor

    def install(self, pkg: Package, installed: Installed | None, *, reinstall: bool) -> Change:
        key = (pkg.panel, pkg.name)
        old = self.state.files(*key, installed.tx) if installed else {}
        old_dirs = set(self.state.dirs(*key)) if installed else set()
        owners = self.state.owners(list(pkg.files))
        all_diverted = self.state.diversions()
        mine = self.state.diversions(*key)
        anchor = self._anchor(pkg.name)
        plan = Plan(name=pkg.name)
        change = Change(plan=plan, previous=old)
        made: set[str] = set()
        root = str(self.layout.root).rstrip("/")
        under_anchor = str(anchor) + "/"
        for target, spec in sorted(pkg.files.items()):
            path = f"{root}/{target}"
            st = self._checked_lstat(anchor if path.startswith(under_anchor) else self.layout.root,
                                     path)
            exists = st is not None
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise Conflict(f"{target}: is a directory on disk, but the package installs a file there",
                               path=target)
            row = FileRow(target, spec.sha256, spec.size, spec.mode, spec.kind, spec.crc32)
            if spec.kind == "data":
                if exists:
                    plan.preserved.append(target)
                else:
                    self._mkdirs(plan, target, made)
                    op = self._op(plan, "add", target, spec.mode)
                    self._entry(plan, op, pkg, spec)
                    change.staged_rows[op.i] = len(change.files)
                change.files.append((target, row))
                continue
            owner = owners.get(target)
            if owner is not None and owner != key:
                raise Conflict(
                    f"trying to overwrite {target}, which is also in {owner[0]} package {owner[1]}",
                    path=target, owner=f"{owner[0]}:{owner[1]}",
                    hint=f"uninstall {owner[1]} first, or remove that file from this package")
            prev = old.get(target)
            changed_here = prev is not None and edited(path, st, prev)
            if prev is not None and not reinstall and prev.sha256 == spec.sha256 and (
                    changed_here or (prev.mode == spec.mode and _matches(st, spec))):
                plan.unchanged.append(target)
                if changed_here:  # the new version ships what was there: the admin's file stays
                    change.modified.append({"path": target, "then": "kept"})
                elif st is not None:  # the file is as the manifest says: remember it as it is
                    row = _stamped(row, st)
                change.files.append((target, row))
                continue
            change.staged_rows[len(plan.ops)] = len(change.files)
            change.files.append((target, row))
            divert = False
            if prev is None and exists and target not in mine:
                if target in all_diverted:
                    raise Conflict(f"{target}: already replaced by another package", path=target)
                divert = True
                change.divert_add[target] = target
                change.warnings.append(
                    f"{target}: replaces a file no package owns (a panel file); the original is kept "
                    f"and put back when {pkg.name} is removed or rolled back")
            if not exists:
                self._mkdirs(plan, target, made)
            op = self._op(plan, "replace" if exists else "add", target, spec.mode, divert,
                          owner=st, save=changed_here)
            self._entry(plan, op, pkg, spec)
            if changed_here:
                change.modified.append({"path": target, "then": "replaced"})
        for target, prev in sorted(old.items()):
            if target in pkg.files or prev.kind == "data":
                continue
            self._obsolete(plan, change, target, mine, prev, _lstat(f"{root}/{target}", self._clear))
        change.dirs = sorted(old_dirs | made)
        plan.prune = _depth_first(old_dirs | made)
        for target in mine:
            if target in pkg.files:
                change.divert_add[target] = mine[target]
        choose(self.layout, plan, self.panel.whole_dirs(pkg.name, old_dirs | made),
               {p for p, r in old.items() if r.kind != "data"}, set(all_diverted))
        plan.flags_clear = self._clear
        return change

    @staticmethod
    def _entry(plan: Plan, op: Op, pkg: Package, spec: FileSpec) -> None:
        """``op`` writes the package's entry ``spec``."""
        plan.sources[op.i] = lambda: pkg.chunks(spec)
        plan.sizes[op.i] = spec.size

    def _obsolete(self, plan: Plan, change: Change, target: str, mine: dict[str, str],
                  row: FileRow, st: Stat | None) -> None:
        """A file the package no longer ships (its lstat ``st``; None: missing): removed, or
        the panel's original put back.  An admin's edit of it is saved first."""
        path = f"{self._root}/{target}"
        save = edited(path, st, row)
        if save:
            change.modified.append({"path": target, "then": "replaced by the panel's original"
                                    if target in mine else "removed"})
        if target in mine:
            stored = self.layout.diverted_dir / mine[target]
            mode = stat.S_IMODE(os.lstat(stored).st_mode)
            op = self._op(plan, "replace" if st is not None else "add", target, mode,
                          owner=os.lstat(stored), save=save)
            plan.sources[op.i] = lambda: _read_file(stored)
            change.divert_drop.append(target)
        elif st is not None:
            self._op(plan, "remove", target, save=save)

    def _checked_lstat(self, anchor: Path, path: str) -> Stat | None:
        """lstat of ``path`` (None when missing) after refusing a link on the way to it
        from ``anchor``, or at it (:func:`check_no_symlink`).  The full check runs once
        per directory: those found real are cached (``_verified``), and so are those found
        missing, whose files are missing too."""
        parent, top = path.rpartition("/")[0], str(anchor).rstrip("/")
        if not path.startswith(top + "/"):
            check_no_symlink(anchor, path, self._verified)  # raises: outside the anchor
        if parent in self._missing:
            return None
        if parent not in self._verified:
            first = check_no_symlink(anchor, path, self._verified)  # and the target's lstat
            if parent not in self._verified and parent != top:
                self._missing.add(parent)  # the check stopped at a missing directory
                return None
            return first
        st = _lstat(path, self._clear)
        if st is not None and stat.S_ISLNK(st.st_mode):
            check_no_symlink(anchor, path, self._verified)  # raises: the link, named
        return st

    def uninstall(self, installed: Installed, *, purge: bool) -> Change:
        key = (installed.panel, installed.name)
        files = self.state.files(*key)
        mine = self.state.diversions(*key)
        plan = Plan(name=installed.name)
        change = Change(plan=plan)
        owned_dirs = set(self.state.dirs(*key))
        prune = set(owned_dirs)
        anchor: Path | None = None
        root = self._root
        for target, row in sorted(files.items()):
            if row.kind == "data":
                continue
            anchor = anchor or self._anchor(installed.name)
            st = self._checked_lstat(anchor, f"{root}/{target}")
            self._obsolete(plan, change, target, mine, row, st)
        removing = {op.path for op in plan.ops}
        data_dirs = self.panel.data_dirs(installed.name)
        if purge:
            for rel in data_dirs:
                top = f"{root}/{rel}"
                if not os.path.isdir(top) or os.path.islink(top):
                    continue
                prune.add(rel)
                for dirpath, dirnames, filenames in os.walk(top):
                    here = dirpath[len(root) + 1:]
                    prune.update(f"{here}/{d}" for d in dirnames)
                    for f in sorted(filenames):
                        target = f"{here}/{f}"
                        if target not in removing:
                            self._op(plan, "remove", target)
                            removing.add(target)
        else:  # what is on disk under the data folders, as the summary's "data kept" counts
            data = sorted(f"{d[len(root) + 1:]}/{f}" for rel in data_dirs
                          for d, _, fs in os.walk(f"{root}/{rel}") for f in fs)
            plan.preserved += data
            if data:
                change.warnings.append(
                    f"kept {len(data)} data file(s) under {', '.join(data_dirs)}"
                    " (pass --purge to remove them)")
        plan.prune = _depth_first(prune)
        choose(self.layout, plan, self.panel.whole_dirs(installed.name, owned_dirs),
               {p for p, r in files.items() if r.kind != "data"}, set(self.state.diversions()))
        # a directory removed whole holds only files being removed (``choose`` walked it)
        gone = {d.path for d in plan.dirs if d.how == "remove"}
        self._leftovers(change, installed.name, owned_dirs, removing, gone)
        plan.flags_clear = self._clear
        return change

    def _leftovers(self, change: Change, name: str, owned: set[str], removing: set[str],
                   gone: set[str]) -> None:
        """Files that no version shipped, left in the package's folders: everything under
        the panel's own (Plesk's extension directories), and the files directly inside the
        directories the agent created for it that no package owns.  Directories in ``gone``
        (removed whole, holding nothing else) are not walked."""
        root = self._root
        found: dict[str, str] = {}

        def skipped(rel: str) -> bool:
            return rel in gone or any(rel.startswith(g + "/") for g in gone)

        for rel in self.panel.leftover_dirs(name):
            top = f"{root}/{rel}"
            if skipped(rel) or not os.path.isdir(top) or os.path.islink(top):
                continue
            for d, dirs, fs in os.walk(top):
                here = d[len(root) + 1:]
                if gone:
                    dirs[:] = [x for x in dirs if f"{here}/{x}" not in gone]
                found.update({f"{here}/{f}": rel for f in fs})
        for rel in owned:
            top = f"{root}/{rel}"
            if skipped(rel) or not os.path.isdir(top) or os.path.islink(top):
                continue
            with os.scandir(top) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                        found.setdefault(f"{rel}/{entry.name}", rel)
        data = tuple(d + "/" for d in self.panel.data_dirs(name))
        candidates = [p for p in found if p not in removing and not p.startswith(data)]
        others = self.state.owners(candidates)
        diverted = self.state.diversions()
        change.left = sorted(p for p in candidates if p not in others and p not in diverted)
        if change.left:
            shown, where = change.left, sorted({found[p] for p in change.left})
            change.warnings.append(
                f"left {len(shown)} file(s) that no version of {name} shipped, in "
                f"{', '.join(where)}: {', '.join(shown[:5])}{' ...' if len(shown) > 5 else ''}")
