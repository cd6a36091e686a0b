"""Preflight reads a file's immutable and append-only flags with one ``statx`` where the
filesystem reports them (``libc.statx_attributes``), else with ``FS_IOC_GETFLAGS``: both
give the same answer, on real files whose flags are set with the ioctl chattr uses."""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

import pytest

from mgr_agent import libc, preflight

FS_IOC_SETFLAGS = 0x40086602


def _set(path: Path, flags: int) -> bool:
    """Set the inode flags of ``path`` (as ``chattr`` does); False where it cannot be."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        old = struct.unpack("l", fcntl.ioctl(fd, preflight.FS_IOC_GETFLAGS, struct.pack("l", 0)))[0]
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("l", old & ~preflight.LOCKED | flags))
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def test_nothing_set_missing_or_a_link(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("x")
    (tmp_path / "link").symlink_to(plain)
    mode, attributes, _ = libc.statx_attributes(plain)
    assert mode == os.lstat(plain).st_mode and attributes & preflight.LOCKED == 0
    assert libc.statx_attributes(tmp_path / "link")[0] == os.lstat(tmp_path / "link").st_mode
    for path in (plain, tmp_path, tmp_path / "link", tmp_path / "missing", plain / "below"):
        assert preflight._flags(path) == 0, path
    with pytest.raises(FileNotFoundError):
        libc.statx_attributes(tmp_path / "missing")


@pytest.mark.root
@pytest.mark.parametrize("flags", [preflight.FS_IMMUTABLE_FL, preflight.FS_APPEND_FL,
                                   preflight.LOCKED], ids=["immutable", "append", "both"])
def test_set_flags_are_read_as_the_ioctl_reads_them(tmp_path: Path, flags: int) -> None:
    target, folder = tmp_path / "file", tmp_path / "folder"
    target.write_text("x")
    folder.mkdir()
    if not _set(target, flags):
        pytest.skip("this filesystem has no inode flags")
    try:
        assert _set(folder, flags)
        for path in (target, folder):
            assert preflight._flags(path) == flags == preflight._ioctl_flags(path) & preflight.LOCKED
            _, attributes, reported = libc.statx_attributes(path)
            if reported & preflight.LOCKED == preflight.LOCKED:  # statx answered
                assert attributes & preflight.LOCKED == flags
        (tmp_path / "link").symlink_to(target)
        assert preflight._flags(tmp_path / "link") == 0  # the link's own, not its target's
    finally:
        _set(target, 0)
        _set(folder, 0)
    assert preflight._flags(target) == preflight._flags(folder) == 0


def test_lstat_is_os_lstat_with_the_flags(tmp_path: Path) -> None:
    """``libc.lstat`` (one statx: the planner's lstat) gives what ``os.lstat`` gives of
    every field the planner reads, of a file, a directory and a link (not followed)."""
    plain = tmp_path / "plain"
    plain.write_bytes(b"x" * 1234)
    os.chmod(plain, 0o640)
    (tmp_path / "link").symlink_to(plain)
    for path in (plain, tmp_path, tmp_path / "link"):
        mine, theirs = libc.lstat(str(path)), os.lstat(path)
        for name in ("st_mode", "st_ino", "st_size", "st_mtime_ns", "st_uid", "st_gid"):
            assert getattr(mine, name) == getattr(theirs, name), (path, name)
        if isinstance(mine, libc.Lstat) and mine.reported & preflight.LOCKED == preflight.LOCKED:
            assert mine.attributes & preflight.LOCKED == 0
    with pytest.raises(FileNotFoundError):
        libc.lstat(str(tmp_path / "missing"))
    with pytest.raises(NotADirectoryError):
        libc.lstat(str(plain / "below"))


@pytest.mark.root
def test_lstat_reports_the_flags_statx_reads(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    if not _set(target, preflight.FS_IMMUTABLE_FL):
        pytest.skip("this filesystem has no inode flags")
    try:
        st = libc.lstat(str(target))
        if not isinstance(st, libc.Lstat) or st.reported & preflight.LOCKED != preflight.LOCKED:
            pytest.skip("statx does not report the flags here")
        assert st.attributes & preflight.LOCKED == preflight.FS_IMMUTABLE_FL
    finally:
        _set(target, 0)
