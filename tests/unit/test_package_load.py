"""package.load on real zips: memory held for staging is bounded, and entries the installed
manifest already holds (same CRC-32, size, mode) are not read."""

from __future__ import annotations

import hashlib
import random
import zlib
from pathlib import Path

import pytest

from mgr_agent import hashing, package
from mgr_agent.config import Config
from mgr_agent.errors import InvalidPackage
from mgr_agent.layout import Layout
from mgr_agent.panels import Panel, all_panels
from mgr_agent.sandbox import samples
from mgr_agent.state import FileRow
from tests.helpers import damage

MGR = "usr/local/mgr5"


def _panels(tmp_path: Path) -> list[Panel]:
    return all_panels(Layout.at(tmp_path / "root"), Config())


def _text(i: int, size: int) -> bytes:
    line = f"<?php // file {i}: some code that compresses like code does\n".encode()
    return (line * (size // len(line) + 1))[:size]


def test_a_large_package_is_not_held_in_memory(tmp_path: Path) -> None:
    extra = {f"skins/common/img/mem/s{i:03d}.txt": (_text(i, 200 * 1024), 0o644) for i in range(180)}
    extra |= {f"skins/common/img/mem/big{i}.bin": (random.Random(i).randbytes(3_200_000), 0o644)
              for i in range(3)}  # incompressible: the ratio rule stays quiet
    tree = samples.ispmanager_files("mem", extra=extra)
    zip_path = samples.write_zip(tree, tmp_path / "mem.zip")
    pkg = package.load(zip_path, _panels(tmp_path))
    try:
        total = sum(len(data) for data in pkg.inflated.values())
        assert sum(len(data) for data, _ in extra.values()) > hashing.MEMORY_BUDGET + 8 * 2**20
        assert 0 < total <= hashing.MEMORY_BUDGET
        assert all(len(data) <= hashing.KEEP_FILE for data in pkg.inflated.values())
        for name, (data, _) in tree.items():
            spec = pkg.files.get(f"{MGR}/{name}")
            if spec is None:
                continue  # hooks: not installed
            assert spec.sha256 == hashlib.sha256(data).hexdigest(), name
            assert spec.crc32 == zlib.crc32(data)
            assert b"".join(pkg.chunks(spec)) == data  # from memory or inflated again
        assert not any(name.endswith(".bin") for name in pkg.inflated)
    finally:
        pkg.close()


def test_entries_the_manifest_holds_are_taken_from_it(tmp_path: Path) -> None:
    """The CRC-32, size and mode decide; the sha256 then comes from the manifest, unread."""
    tree = samples.ispmanager_files("same", extra={
        f"skins/common/img/same/f{i}.txt": (_text(i, 5000), 0o644) for i in range(6)})
    zip_path = samples.write_zip(tree, tmp_path / "same.zip")
    claimed = "ab" * 32  # what the manifest says: not the entry's real sha256
    data = tree["skins/common/img/same/f0.txt"][0]
    manifest = {
        f"{MGR}/skins/common/img/same/f0.txt": FileRow(f"{MGR}/skins/common/img/same/f0.txt", claimed,
                                                       len(data), 0o644, "file", zlib.crc32(data)),
        # another CRC, another mode, no CRC (tar source): all read and hashed
        f"{MGR}/skins/common/img/same/f1.txt": FileRow(f"{MGR}/skins/common/img/same/f1.txt", claimed,
                                                       5000, 0o644, "file", 1),
        f"{MGR}/skins/common/img/same/f2.txt": FileRow(
            f"{MGR}/skins/common/img/same/f2.txt", claimed, 5000, 0o755, "file",
            zlib.crc32(tree["skins/common/img/same/f2.txt"][0])),
        f"{MGR}/skins/common/img/same/f3.txt": FileRow(f"{MGR}/skins/common/img/same/f3.txt", claimed,
                                                       5000, 0o644, "file", None),
    }
    asked: list[tuple[str, str]] = []

    def installed(panel: str, name: str) -> dict[str, FileRow]:
        asked.append((panel, name))
        return manifest

    pkg = package.load(zip_path, _panels(tmp_path), installed=installed)
    try:
        assert asked == [("ispmanager", "same")]
        entry = pkg.files[f"{MGR}/skins/common/img/same/f0.txt"].entry
        assert pkg.same == {entry}
        assert entry not in pkg.inflated
        assert pkg.files[f"{MGR}/skins/common/img/same/f0.txt"].sha256 == claimed
        for k in (1, 2, 3, 4):
            name = f"skins/common/img/same/f{k}.txt"
            assert pkg.files[f"{MGR}/{name}"].sha256 == hashlib.sha256(tree[name][0]).hexdigest()
    finally:
        pkg.close()
    plain = package.load(zip_path, _panels(tmp_path))
    try:  # the content hash is the same either way when the manifest tells the truth
        assert plain.same == frozenset()
    finally:
        plain.close()


def _background_tree() -> samples.Tree:
    extra = {f"skins/common/img/bg/s{i:03d}.txt": (_text(i, 3000), 0o644) for i in range(40)}
    extra |= {f"skins/common/img/bg/big{i}.bin": (random.Random(i).randbytes(400_000), 0o644)
              for i in range(4)}  # over KEEP_FILE: hashed on the thread
    return samples.ispmanager_files("bg", extra=extra)


def test_background_hashing_gives_the_same_hashes(tmp_path: Path) -> None:
    zip_path = samples.write_zip(_background_tree(), tmp_path / "bg.zip")
    now = package.load(zip_path, _panels(tmp_path))
    later = package.load(zip_path, _panels(tmp_path), background=True)
    try:
        assert later.pending is not None and later.content_hash == ""
        assert later.archive_sha256 == ""  # hashed alongside too (no --sha256 to check)
        later.hashed()
        assert later.pending is None and later.content_hash == now.content_hash != ""
        # the archive's sha256 is waited for only when asked (the commit needs it)
        assert later.archive_digest() == later.archive_sha256 == now.archive_sha256 == \
            hashlib.sha256(zip_path.read_bytes()).hexdigest()
        assert {n: s.sha256 for n, s in later.files.items()} == \
            {n: s.sha256 for n, s in now.files.items()}
    finally:
        now.close()
        later.close()


def test_background_hashing_reports_a_damaged_entry_and_close_stops_it(tmp_path: Path) -> None:
    tree = _background_tree()
    zip_path = samples.write_zip(tree, tmp_path / "bg.zip")
    damage(zip_path, tree["skins/common/img/bg/big2.bin"][0])
    pkg = package.load(zip_path, _panels(tmp_path), background=True)
    try:
        with pytest.raises(InvalidPackage, match=r"big2\.bin"):
            pkg.hashed()
    finally:
        pkg.close()
    closing = package.load(zip_path, _panels(tmp_path), background=True)
    closing.close()  # while the thread still reads: it stops, and nothing raises
    assert closing.pending is None
