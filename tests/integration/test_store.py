"""The archive store (store.py): what install leaves under var/lib/mgr-agent/archives/,
through the real CLI.  A zip or tar is stored byte for byte, a folder as a zip of its
entries with their modes; nothing half-written stays; a retained folder install rolls
back from its stored zip; what nothing refers to any more is removed."""

from __future__ import annotations

import hashlib
import stat
import subprocess
import zipfile
from pathlib import Path

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
