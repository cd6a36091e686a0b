"""Moving and deleting the trees of a whole-directory switch (:mod:`mgr_agent.dirswitch`).

A tree that goes (the old version's after the commit, the new one's after an undo) may
hold entries that no version shipped: made by a hook or by the panel while the
transaction ran.  :class:`Carry` moves them into the tree that stays, so that nothing
is lost with the tree; :meth:`Carry.drop` does that and deletes the rest in one walk.
Trees are deleted through directory descriptors (``unlinkat``), never following a link.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from mgr_agent.fsutil import UNSUPPORTED
from mgr_agent.libc import RENAME_NOREPLACE, renameat2

PROBE = ".mga-probe-"  # the two directories of the probe, made at the top of a staged tree


def parents(rels: Iterable[str]) -> set[str]:
    """Every directory above the relative paths ``rels`` (``a/b/c`` gives ``a`` and ``a/b``)."""
    return {rel.rsplit("/", i)[0] for rel in rels for i in range(1, rel.count("/") + 1)}


def _mkdir_like(dst: str, src: str) -> None:
    """``dst`` and its missing parents, each with the mode of its counterpart under ``src``."""
    if os.path.isdir(dst):
        return
    _mkdir_like(os.path.dirname(dst), os.path.dirname(src))
    with contextlib.suppress(FileExistsError):
        os.mkdir(dst, 0o700)
        st = os.lstat(src)
        os.chmod(dst, stat.S_IMODE(st.st_mode))
        if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
            os.chown(dst, st.st_uid, st.st_gid)


def _move(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` if ``dst`` does not exist (FileExistsError otherwise)."""
    try:
        renameat2(src, dst, RENAME_NOREPLACE)
    except OSError as exc:
        if exc.errno not in UNSUPPORTED:
            raise
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst) from exc
        os.rename(src, dst)


class Carry:
    """Moves what a tree holds beyond the files a version shipped into the tree that
    stays: nothing no version shipped is ever deleted with a backup or a staged tree."""

    def __init__(self, expected: set[str], rescue: Path) -> None:
        self.expected = expected
        self.wanted = parents(expected)
        self.rescue = rescue  # where an entry goes when the tree that stays has its name
        self.changed: set[str] = set()

    def run(self, src: str, dst: str, prefix: str = "", everything: bool = False) -> None:
        if not os.path.isdir(src) or os.path.islink(src):
            return
        with os.scandir(src) as it:
            entries = list(it)
        for entry in entries:
            rel = prefix + entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if not prefix and entry.name.startswith(PROBE):
                continue  # the probe's own directories (a crash in the probe): deleted with the tree
            if not everything and is_dir and rel in self.wanted:
                self.run(entry.path, f"{dst}/{entry.name}", rel + "/")
                continue
            if not everything and not is_dir and rel in self.expected:
                continue
            self._carry(src, dst, entry.name, rel, is_dir)

    def _carry(self, src: str, dst: str, name: str, rel: str, is_dir: bool) -> bool:
        """Move ``src/name`` into ``dst`` (merged into a directory there of its name, else
        put under the rescue folder); whether ``src/name`` is left (an emptied directory)."""
        target = f"{dst}/{name}"
        _mkdir_like(dst, src)
        try:
            _move(f"{src}/{name}", target)
        except FileExistsError:
            if is_dir and os.path.isdir(target) and not os.path.islink(target):
                self.run(f"{src}/{name}", target, rel + "/", everything=True)
                return True
            kept = self.rescue / rel
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(f"{src}/{name}", str(kept))
            return False
        self.changed.add(dst)
        return False

    def drop(self, src: str, dst: str) -> None:
        """What :meth:`run` does, deleting the expected files and their directories on
        the way, then ``src`` itself: one walk of a tree that goes.  Idempotent: a walk cut
        short leaves a smaller tree, which the next one finishes."""
        try:
            fd = os.open(src, _DIR_FLAGS)
        except FileNotFoundError:
            return
        try:
            self._drop(fd, src, dst, "")
        finally:
            os.close(fd)
        os.rmdir(src)

    def _drop(self, fd: int, src: str, dst: str, prefix: str) -> None:
        with os.scandir(fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for name, is_dir in entries:
            rel = prefix + name
            if is_dir and not prefix and name.startswith(PROBE):
                _remove_at(fd, name)  # the probe's own directories (a crash in the probe)
            elif is_dir and rel in self.wanted:
                sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                try:
                    self._drop(sub, f"{src}/{name}", f"{dst}/{name}", rel + "/")
                finally:
                    os.close(sub)
                os.rmdir(name, dir_fd=fd)
            elif not is_dir and rel in self.expected:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)
            elif self._carry(src, dst, name, rel, is_dir):
                _remove_at(fd, name)  # merged into the directory of its name: empty now


# deleting trees: by directory descriptors, never following a link, one unlinkat per file
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _clear(fd: int) -> None:
    """Delete everything in the directory open as ``fd``."""
    with os.scandir(fd) as it:
        entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    for name, is_dir in entries:
        if is_dir:
            _remove_at(fd, name)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)


def _remove_at(parent: int | None, name: str) -> None:
    """Delete the directory ``name`` of the directory open as ``parent`` (None: ``name``
    is a path), with its content; nothing when it is not there."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        return
    try:
        _clear(fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


def rmtree(path: str) -> None:
    """Delete the tree at ``path``, if there is one (a link there is an error)."""
    _remove_at(None, path)
