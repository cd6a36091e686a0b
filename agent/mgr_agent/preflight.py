"""Step 2 of a transaction: will every change be possible?  Checked before any write."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from pathlib import Path

from mgr_agent import lateroots, libc
from mgr_agent.errors import PreflightFailed
from mgr_agent.layout import Layout
from mgr_agent.plan import Plan

FS_IOC_GETFLAGS = 0x80086601
FS_IMMUTABLE_FL = 0x10
FS_APPEND_FL = 0x20
LOCKED = FS_IMMUTABLE_FL | FS_APPEND_FL  # statx reports them as the same bits
_ZERO = struct.pack("l", 0)


def _existing(path: str) -> str:
    """``path``, or its nearest ancestor that exists."""
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def _existing_under(root: str, rel: str, found: dict[str, str]) -> str:
    """:func:`_existing` of ``root/rel``, each directory looked at once across calls
    (``found``: relative directory -> its answer): a new package's hundreds of new
    directories share their missing ancestors."""
    answer = found.get(rel)
    if answer is None:
        path = f"{root}/{rel}" if rel else (root or "/")
        if rel and not os.path.exists(path):
            answer = _existing_under(root, rel.rpartition("/")[0], found)
        else:
            answer = path
        found[rel] = answer
    return answer


def known_clear(attributes: int, reported: int) -> bool:
    """Whether a ``statx``'s inode attributes tell a file is neither immutable nor
    append-only: its filesystem reports both flags, and neither is set."""
    return reported & LOCKED == LOCKED and not attributes & LOCKED


def _flags(path: str | Path) -> int:
    """The immutable and append-only flags (chattr) of ``path``, 0 where the filesystem has
    none, where it is missing, or where it is a link: from one ``statx`` when the
    filesystem reports both (``stx_attributes_mask``), else from ``FS_IOC_GETFLAGS``."""
    try:
        mode, attributes, reported = libc.statx_attributes(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return 0
    else:
        if stat.S_ISLNK(mode):
            return 0
        if reported & LOCKED == LOCKED:
            return attributes & LOCKED
    return _ioctl_flags(path) & LOCKED


def _ioctl_flags(path: str | Path) -> int:
    """Inode flags of ``path`` by ``FS_IOC_GETFLAGS``, 0 where there are none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return 0
    try:
        buf = fcntl.ioctl(fd, FS_IOC_GETFLAGS, _ZERO)
        return int(struct.unpack("l", buf)[0])
    except OSError:
        return 0
    finally:
        os.close(fd)


def _check_dir(path: str | Path) -> None:
    if os.statvfs(path).f_flag & os.ST_RDONLY:
        raise PreflightFailed(f"{path}: is on a read-only filesystem", path=str(path),
                              errno=errno.EROFS, hint=lateroots.HINT if os.environ.get(
                                  "INVOCATION_ID") else "remount it read-write")
    if not os.access(path, os.W_OK):
        raise PreflightFailed(f"{path}: is not writable by this user", path=str(path))
    if _flags(path):
        raise PreflightFailed(f"{path}: directory is immutable or append-only (lsattr)",
                              path=str(path), hint="chattr -i / -a it if the change is intended")


def check(layout: Layout, plan: Plan, sizes: dict[str, int], extra_state_bytes: int,
          margin: int) -> None:
    """Writability, immutability and free space of every target."""
    need: dict[int, int] = {}
    where: dict[int, str] = {}
    devices: dict[str, int] = {}
    parents: dict[str, str] = {}
    root = str(layout.root).rstrip("/")  # plain strings: this runs once per file (and dir)
    for op in plan.ops:
        target = f"{root}/{op.path}"
        rel_parent = op.path.rpartition("/")[0]
        parent = parents.get(rel_parent)
        if parent is None:
            parent = _existing_under(root, rel_parent, parents)
            if parent not in devices:
                _check_dir(parent)
                devices[parent] = os.stat(parent).st_dev
        if op.action != "add" and target not in plan.flags_clear and _flags(target):
            raise PreflightFailed(
                f"{target}: is immutable or append-only (lsattr); it cannot be "
                f"{'removed' if op.action == 'remove' else 'replaced'}",
                path=target, hint="chattr -i it if the change is intended")
        if op.action != "remove":
            dev = devices[parent]
            need[dev] = need.get(dev, 0) + sizes.get(op.path, 0) + 4096
            where[dev] = parent
    state = _existing(str(layout.state_dir))
    dev = os.stat(state).st_dev
    need[dev] = need.get(dev, 0) + extra_state_bytes
    where.setdefault(dev, state)
    for dev, bytes_needed in need.items():
        st = os.statvfs(where[dev])
        free = st.f_bavail * st.f_frsize
        if free < bytes_needed + margin:
            raise PreflightFailed(
                f"{where[dev]}: {free // 1024} KiB free, the transaction needs "
                f"{(bytes_needed + margin) // 1024} KiB (including a safety margin)",
                path=str(where[dev]), errno=errno.ENOSPC)
