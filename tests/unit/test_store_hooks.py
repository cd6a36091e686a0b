"""Uninstall opens the stored package only for its hook (store.open_stored): a stored zip
whose entry names do not hold the hook's name is not read at all.  That rests on every
panel naming a hook's entry after the hook; both are checked here, on real zips."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import pytest

from mgr_agent.config import Config
from mgr_agent.layout import Layout
from mgr_agent.package import load
from mgr_agent.panels import all_panels
from mgr_agent.sandbox.samples import ispmanager_files, plesk_files, write_zip
from mgr_agent.store import _names_may_hold

HOOKS = ("pre-install", "post-install", "pre-uninstall")


@pytest.mark.parametrize(("tree", "prefix"), [
    (ispmanager_files("demo", "1.0"), ""), (ispmanager_files("demo", "1.0"), "demo-main/"),
    (plesk_files("demo-ext", "1.0"), ""), (plesk_files("demo-ext", "1.0"), "demo-ext-main/")],
    ids=["isp", "isp-wrapped", "plesk", "plesk-wrapped"])
def test_every_panel_names_a_hook_entry_after_the_hook(tmp_path: Path, tree: dict[str, tuple[bytes, int]],
                                                       prefix: str) -> None:
    zipped = write_zip(tree, tmp_path / "p.zip", prefix=prefix)
    pkg = load(zipped, all_panels(Layout.at(tmp_path), Config()), verify=False)
    try:
        assert sorted(pkg.hooks) == sorted(HOOKS)
        for hook, entry in pkg.hooks.items():
            assert hook in entry
    finally:
        pkg.close()
    assert all(_names_may_hold(zipped, hook) for hook in HOOKS)


def test_a_zip_without_the_name_is_told_apart(tmp_path: Path) -> None:
    tree = ispmanager_files("demo", "1.0")
    del tree["scripts/pre-uninstall"]
    zipped = write_zip(tree, tmp_path / "p.zip")
    assert not _names_may_hold(zipped, "pre-uninstall")
    assert _names_may_hold(zipped, "pre-install")
    with zipfile.ZipFile(zipped, "a") as zf:  # a comment after the central directory
        zf.comment = b"built by hand"
    assert not _names_may_hold(zipped, "pre-uninstall")
    assert _names_may_hold(zipped, "post-install")


def test_unsure_means_read_the_package(tmp_path: Path) -> None:
    """Whatever the quick look cannot judge is read in full: never a hook missed."""
    tree = ispmanager_files("demo", "1.0")
    del tree["scripts/pre-uninstall"]
    whole = write_zip(tree, tmp_path / "p.zip").read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole[: len(whole) - 30])  # the end record damaged
    assert _names_may_hold(cut, "pre-uninstall")
    trailing = tmp_path / "trailing.zip"
    trailing.write_bytes(whole + b"garbage")
    assert _names_may_hold(trailing, "pre-uninstall")
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w"):
        pass
    assert _names_may_hold(empty, "pre-uninstall")
    tarball = tmp_path / "p.tar"
    with tarfile.open(tarball, "w"):
        pass
    assert _names_may_hold(tarball, "pre-uninstall")
    assert _names_may_hold(tmp_path / "missing.zip", "pre-uninstall")
