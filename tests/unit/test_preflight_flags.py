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
