"""Deleting the trees of a whole-directory switch (trees.py), on real directories: what
the old tree holds beyond the files a version shipped is carried into the tree that
stays, the rest is deleted in the same walk, and a walk cut short is finished by the
next one with the same result."""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

import pytest

from mgr_agent.trees import PROBE, Carry, rmtree
from tests.helpers import snapshot

FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_IMMUTABLE_FL = 0x80086601, 0x40086602, 0x10
EXPECTED = {"a.php", "lib/b.php", "lib/deep/c.php", "img/d.png"}


def _write(path: Path, data: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)


def _trees(tmp_path: Path) -> tuple[Path, Path, Path]:
    """An old tree with the version's files and entries nobody shipped; the live tree."""
    old, live, rescue = tmp_path / "old", tmp_path / "live", tmp_path / "rescue"
    for rel in EXPECTED:
        _write(old / rel, f"old {rel}")
    _write(old / "made-at-top.txt", "top")  # beside the shipped files
    _write(old / "lib/deep/cache.db", "cache")  # inside a shipped directory
    _write(old / "uploads/u1/photo.jpg", "photo")  # a directory nobody shipped
    _write(old / "logs/old.log", "old log")  # merged into live's logs/
    _write(old / "clash.txt", "from the old tree")  # live has one of that name
    (old / f"{PROBE}a").mkdir()  # a probe interrupted by a crash
    _write(live / "a.php", "new a")
    _write(live / "logs/new.log", "new log")
    _write(live / "clash.txt", "live's own")
    return old, live, rescue


def _expected_after(tmp_path: Path) -> dict[str, tuple[str, int, str]]:
    old, live, rescue = _trees(tmp_path / "reference")
    Carry(set(EXPECTED), rescue).run(str(old), str(live))
    rmtree(str(old))
    return snapshot(tmp_path / "reference")


def test_drop_carries_what_no_version_shipped_and_deletes_the_rest(tmp_path: Path) -> None:
    old, live, rescue = _trees(tmp_path / "t")
    carry = Carry(set(EXPECTED), rescue)
    carry.drop(str(old), str(live))
    assert not old.exists()
    assert (live / "made-at-top.txt").read_text() == "top"
    assert (live / "lib/deep/cache.db").read_text() == "cache"
    assert (live / "uploads/u1/photo.jpg").read_text() == "photo"
    assert sorted(p.name for p in (live / "logs").iterdir()) == ["new.log", "old.log"]
    assert (live / "clash.txt").read_text() == "live's own"
    assert (rescue / "clash.txt").read_text() == "from the old tree"
    assert not (live / "lib/b.php").exists() and (live / "a.php").read_text() == "new a"
    assert str(live) in carry.changed
    # the same outcome as carrying first and deleting the tree afterwards
    assert snapshot(tmp_path / "t") == _expected_after(tmp_path)


def test_drop_of_a_missing_tree_does_nothing(tmp_path: Path) -> None:
    Carry(set(EXPECTED), tmp_path / "rescue").drop(str(tmp_path / "gone"), str(tmp_path / "live"))
    assert list(tmp_path.iterdir()) == []


def _set_immutable(path: Path, on: bool) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = struct.unpack("l", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("l", 0)))[0]
        flags = flags | FS_IMMUTABLE_FL if on else flags & ~FS_IMMUTABLE_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("l", flags))
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


@pytest.mark.root
def test_a_drop_cut_short_is_finished_by_the_next(tmp_path: Path) -> None:
    """A file that cannot be deleted (immutable) stops the walk half-way, as a crash
    would; once it can be, a second walk ends where an uninterrupted one does."""
    old, live, rescue = _trees(tmp_path / "t")
    stuck = old / "lib/deep/c.php"
    if not _set_immutable(stuck, True):
        pytest.skip("this filesystem has no immutable flag")
    try:
        with pytest.raises(PermissionError):
            Carry(set(EXPECTED), rescue).drop(str(old), str(live))
        assert old.exists() and stuck.exists()
    finally:
        _set_immutable(stuck, False)
    Carry(set(EXPECTED), rescue).drop(str(old), str(live))
    assert snapshot(tmp_path / "t") == _expected_after(tmp_path)


def test_rmtree_deletes_a_tree_without_following_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _write(outside / "precious.txt", "keep me")
    tree = tmp_path / "tree"
    _write(tree / "a/b/c.txt")
    _write(tree / "d.txt")
    (tree / "a/link-to-dir").symlink_to(outside)
    (tree / "link-to-file").symlink_to(outside / "precious.txt")
    rmtree(str(tree))
    assert not tree.exists()
    assert (outside / "precious.txt").read_text() == "keep me"
    rmtree(str(tree))  # nothing there: nothing to do


def test_rmtree_refuses_a_link_in_place_of_the_tree(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _write(outside / "precious.txt", "keep me")
    (tmp_path / "tree").symlink_to(outside)
    with pytest.raises(OSError):
        rmtree(str(tmp_path / "tree"))
    assert (outside / "precious.txt").read_text() == "keep me"
