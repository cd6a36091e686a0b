"""The archive store (store.py): what install leaves under var/lib/mgr-agent/archives/,
through the real CLI.  A zip or tar is stored byte for byte, a folder as a zip of its
entries with their modes; nothing half-written stays; a retained folder install rolls
back from its stored zip; what nothing refers to any more is removed."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

from mgr_agent import package as packages
from mgr_agent.config import Config
from mgr_agent.layout import Layout
from mgr_agent.panels import all_panels
from mgr_agent.sandbox.samples import ispmanager_files, write_dir, write_zip
from mgr_agent.store import store_archive, stored_path
from tests.helpers import cli

MGR = "usr/local/mgr5"


def _archives(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (root / "var/lib/mgr-agent/archives").iterdir()}


def _ok(root: Path, *args: str) -> dict:  # type: ignore[type-arg]
    run = cli(root, *args)
    assert run.rc == 0, (run.stdout, run.stderr)
    return run.json


def test_zip_and_tar_are_stored_byte_for_byte(root: Path, pkgs: Path) -> None:
    package = write_zip(ispmanager_files("demo", "1.0"), pkgs / "demo-1.0.zip")
    _ok(root, "install", str(package))
    stored = _archives(root)
    assert list(stored.values()) == [package.read_bytes()]
    (name,) = stored
    assert name.endswith(".zip") and len(name) == 64 + 4  # <content-hash>.zip

    src = write_dir(ispmanager_files("demo", "1.1"), pkgs / "t")
    tarball = pkgs / "demo-1.1.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(src), "."], check=True)
    _ok(root, "install", str(tarball))
    stored = _archives(root)  # 1.1 installed, 1.0 retained for rollback
    assert sorted(n.rsplit(".", 1)[1] for n in stored) == ["tar", "zip"]
    assert tarball.read_bytes() in stored.values()


def test_a_folder_is_stored_as_a_zip_and_rolls_back_from_it(root: Path, pkgs: Path) -> None:
    tree = ispmanager_files("demo", "1.0")
    folder = write_dir(tree, pkgs / "demo")
    _ok(root, "install", str(folder))
    (stored,) = (root / "var/lib/mgr-agent/archives").iterdir()
    with zipfile.ZipFile(stored) as zf:
        entries = {i.filename: (zf.read(i), stat.S_IMODE(i.external_attr >> 16))
                   for i in zf.infolist()}
    assert entries == tree  # content and mode of every entry (hooks 0755, the rest 0644)
    assert entries["scripts/pre-install"][1] == 0o755

    handler = root / MGR / "addon/demo.py"
    shipped = handler.read_bytes()
    _ok(root, "install", str(write_zip(ispmanager_files("demo", "1.1"), pkgs / "demo-1.1.zip")))
    doc = _ok(root, "rollback", "demo")
    assert (doc["action"], doc["version"]) == ("rolled_back", "1.0")
    assert hashlib.sha256(handler.read_bytes()).digest() == hashlib.sha256(shipped).digest()
    assert not [p for p in (root / "var/lib/mgr-agent/archives").iterdir()
                if p.name.endswith(".tmp")], "no temp file stays in the store"


def test_uninstall_removes_what_nothing_refers_to(root: Path, pkgs: Path) -> None:
    _ok(root, "install", str(write_zip(ispmanager_files("demo", "1.0"), pkgs / "a.zip")))
    _ok(root, "install", str(write_zip(ispmanager_files("demo", "1.1"), pkgs / "b.zip")))
    assert len(_archives(root)) == 2  # installed and retained
    _ok(root, "uninstall", "demo")
    assert _archives(root) == {}
    assert not any((root / "var/lib/mgr-agent/tmp").iterdir())


def test_the_store_keeps_the_archive_the_agent_opened(tmp_path: Path, pkgs: Path) -> None:
    """A file put at the archive's path after the agent opened it is not what the store
    keeps: the copy is made from the file the agent verified (its descriptor)."""
    layout = Layout.at(tmp_path / "root")
    zip_path = write_zip(ispmanager_files("demo", "1.0"), pkgs / "demo.zip")
    original = zip_path.read_bytes()
    pkg = packages.load(zip_path, all_panels(layout, Config()))
    try:
        write_zip(ispmanager_files("demo", "6.6"), pkgs / "other.zip").replace(zip_path)
        store_archive(layout, pkg)
        assert stored_path(layout, pkg).read_bytes() == original != zip_path.read_bytes()
    finally:
        pkg.close()


def _loop_xfs(image: Path, mount: Path) -> str | None:
    """An xfs image (reflinks on, as mkfs.xfs makes it) mounted on ``mount``; why not."""
    if os.geteuid() != 0 or not shutil.which("mkfs.xfs") or not Path("/dev/loop-control").exists():
        return "needs root, loop devices and mkfs.xfs (xfsprogs)"
    with open(image, "wb") as fh:
        fh.truncate(512 << 20)
    mount.mkdir()
    for argv in (["mkfs.xfs", "-q", str(image)], ["mount", "-o", "loop", str(image), str(mount)]):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"{' '.join(argv)}: {done.stderr.strip()}"
    return None


def test_on_xfs_the_store_shares_the_archives_blocks_instead_of_writing_them(tmp_path: Path) -> None:
    """copy_file_range on a filesystem with reflinks: the stored archive's extents are
    the uploaded zip's (``filefrag`` flags them shared), and it stays whole when the
    upload is changed in place afterwards (copy on write)."""
    mount = tmp_path / "xfs"
    why = _loop_xfs(tmp_path / "xfs.img", mount)
    if why is not None:
        pytest.skip(why)
    try:
        root = mount / "root"
        (root / MGR / "etc").mkdir(parents=True)
        big = {"addon/big.bin": (os.urandom(1 << 20), 0o644)}
        zip_path = write_zip(ispmanager_files("demo", "1.0", extra=big), mount / "demo.zip")
        original = zip_path.read_bytes()
        _ok(root, "install", str(zip_path))
        (stored,) = (root / "var/lib/mgr-agent/archives").iterdir()
        extents = subprocess.run(["filefrag", "-v", str(stored)], capture_output=True, text=True,
                                 check=True).stdout
        assert "shared" in extents, extents
        with open(zip_path, "r+b") as fh:  # the upload rewritten in place (cp over it)
            fh.write(b"\0" * 4096)
        assert stored.read_bytes() == original
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
