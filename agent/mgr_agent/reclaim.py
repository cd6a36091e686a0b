"""Deleting, after the command has returned, the trees that nothing refers to any more.

After an uninstall commits, the plugin's old directories are already out of the panel's
tree (renamed aside by the switch): deleting their thousands of files is the longest
step left (5,000 files: about 130 ms), and nobody needs to wait for it.  Such a tree is
renamed into ``var/lib/mgr-agent/reclaim/`` (:func:`hand_over`: only when the walk that
would carry files no version shipped finds none, and on the same filesystem; otherwise
it is dropped in place as before), and a detached process deletes what is there
(:func:`start`, then :func:`main` in the child).  The same goes for a retained tree whose
version is no longer retained.

A reclaimer holds ``flock`` on the directory while it deletes; another one that finds it
held leaves, and the holder lists the directory again after unlocking, so that an entry
handed over at any moment is deleted by someone.  Recovery, at the start of every
mutating command, deletes what it finds there itself when no reclaimer holds the lock (a
crash left it): :func:`drain`.  Nothing here is ever undone or read back: an entry is
garbage from the moment it is renamed in.  :func:`wait` (tests, the benchmark) waits,
by inotify, until the directory is empty.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
import time
from pathlib import Path

from mgr_agent.fsutil import rename_within_mount
from mgr_agent.layout import Layout
from mgr_agent.libc import Inotify
from mgr_agent.proc import Runner
from mgr_agent.trees import rmtree


def hand_over(layout: Layout, tree: str, name: str) -> bool:
    """Rename ``tree`` to ``reclaim/name`` (``name`` unique, e.g. the transaction's id and
    the directory's index); False when it cannot go there (another filesystem or mount):
    the caller deletes it itself.  Not made durable: after a crash the tree is found where it was
    (and recovery drops it) or in ``reclaim/`` (and recovery deletes it)."""
    top = layout.reclaim_dir
    top.mkdir(mode=0o700, exist_ok=True)
    return rename_within_mount(tree, top / name)


def pending(layout: Layout) -> bool:
    """Whether anything waits to be deleted."""
    try:
        with os.scandir(layout.reclaim_dir) as it:
            return any(True for _ in it)
    except (FileNotFoundError, NotADirectoryError):
        return False


def start(runner: Runner, layout: Layout) -> None:
    """Start a detached reclaimer for what waits in ``reclaim/`` (nothing when empty)."""
    if not pending(layout):
        return
    package_parent = str(Path(__file__).resolve().parents[1])
    runner.spawn([sys.executable, "-S", "-m", "mgr_agent.reclaim", str(layout.reclaim_dir)],
                 cwd=Path("/"), env={"PYTHONPATH": package_parent})


def _delete_all(top: str) -> None:
    for name in os.listdir(top):
        path = f"{top}/{name}"
        try:
            rmtree(path)
        except FileNotFoundError:
            continue
        except OSError as exc:  # not a directory (or a link to one): not ours, but garbage
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _locked(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def drain(layout: Layout) -> None:
    """Delete what waits in ``reclaim/`` now, unless a reclaimer is at it."""
    if not pending(layout):
        return
    fd = os.open(layout.reclaim_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _locked(fd):
            _delete_all(str(layout.reclaim_dir))
    finally:
        os.close(fd)  # and the lock with it


def reclaim(top: str) -> None:
    """The reclaimer: delete everything in ``top`` until it stays empty (see the module)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        while _locked(fd):
            while os.listdir(top):
                _delete_all(top)
            fcntl.flock(fd, fcntl.LOCK_UN)
            if not os.listdir(top):
                return
    finally:
        os.close(fd)


def wait(layout: Layout, timeout: float) -> bool:
    """Wait until ``reclaim/`` is empty (or missing), woken by inotify; False on timeout."""
    deadline = time.monotonic() + timeout
    watch = Inotify()
    try:
        try:
            watch.add(layout.reclaim_dir, Inotify.DELETE | Inotify.MOVED_FROM | Inotify.DELETE_SELF)
        except FileNotFoundError:
            return True
        while pending(layout):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            watch.wait(left)
        return True
    finally:
        watch.close()


def main(argv: list[str]) -> int:
    """``python -m mgr_agent.reclaim DIR``: what :func:`start` runs, detached."""
    try:
        reclaim(argv[0])
    except OSError:
        return 1  # recovery deletes what is left, at the next command
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
