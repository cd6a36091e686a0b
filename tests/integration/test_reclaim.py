"""Trees deleted after the command (docs/transactions.md#reclaimed-trees): an uninstall
renames the plugin's old directories into var/lib/mgr-agent/reclaim/ and a detached
process deletes them; recovery deletes what a crash left there."""

from __future__ import annotations

import fcntl
import os
import shlex
import signal
import threading
from pathlib import Path

import pytest

from mgr_agent import reclaim
from mgr_agent.layout import Layout
from mgr_agent.sandbox import samples
from tests.helpers import cli, leftovers, ok, snapshot
from tests.integration.test_faults import open_namespace

PSA = "usr/local/psa"
HTDOCS = f"{PSA}/admin/htdocs/modules/demo-ext"
RECLAIM = "var/lib/mgr-agent/reclaim"


def _ext(pkgs: Path, version: str = "1.0", files: int = 40) -> Path:
    extra = {f"htdocs/js/m{i:03d}.js": (f"// {version} {i}\n".encode(), 0o644) for i in range(files)}
    return samples.write_zip(samples.plesk_files("demo-ext", version, extra=extra),
                             pkgs / f"ext-{version}.zip")


def test_uninstall_hands_the_trees_over_and_a_detached_process_deletes_them(
        root: Path, pkgs: Path) -> None:
    before = snapshot(root)
    ok(root, "install", str(_ext(pkgs)))
    ok(root, "uninstall", "demo-ext", "--purge")
    assert not (root / HTDOCS).exists()  # gone from the panel when the command returns
    assert snapshot(root) == before
    assert reclaim.wait(Layout.at(root), timeout=60)
    assert list((root / RECLAIM).iterdir()) == []


def test_a_tree_with_a_file_no_version_shipped_is_not_handed_over(
        root: Path, pkgs: Path) -> None:
    """The pre-uninstall hook leaves a file in the extension's htdocs: the tree is walked
    and dropped here, the file carried (kept) as before; nothing goes to reclaim/."""
    hook = f"<?php file_put_contents('{root / HTDOCS}/made.txt', 'x');\n".encode()
    files = samples.plesk_files("demo-ext", "1.0", extra={
        f"htdocs/js/m{i}.js": (b"//\n", 0o644) for i in range(5)})
    files["plib/scripts/pre-uninstall.php"] = (hook, 0o644)
    ok(root, "install", str(samples.write_zip(files, pkgs / "ext.zip")))
    done = ok(root, "uninstall", "demo-ext")
    assert (root / HTDOCS / "made.txt").read_bytes() == b"x", done
    assert reclaim.wait(Layout.at(root), timeout=60)  # the other two trees


def _reclaim(root: Path) -> list[Path]:
    top = root / RECLAIM
    return list(top.iterdir()) if top.exists() else []


# after the commit: before any tree goes, between them, once all are handed over
KILL_POINTS = ("after-commit", "before-drop-dir:1", "before-drop-dir:2", "before-drop-dir:3",
               "before-reclaimer")


@pytest.mark.parametrize("fault", KILL_POINTS)
def test_a_kill_after_the_commit_leaves_nothing_once_recovered(
        root: Path, pkgs: Path, fault: str) -> None:
    """Killed after the commit, before or while the trees are handed over, or before the
    reclaimer is started: the next mutating command (``recover`` here) finishes the
    transaction and deletes what is in reclaim/ itself, before it returns; the tree is as
    if uninstalled."""
    before = snapshot(root)
    ok(root, "install", str(_ext(pkgs)))
    run = cli(root, "uninstall", "demo-ext", "--purge", env={"MGR_AGENT_FAULT": fault})
    assert run.rc == -signal.SIGKILL, run.stdout + run.stderr
    handed = {"after-commit": 0, "before-drop-dir:1": 0, "before-drop-dir:2": 1,
              "before-drop-dir:3": 2, "before-reclaimer": 3}[fault]
    assert len(_reclaim(root)) == handed
    ok(root, "recover")
    assert _reclaim(root) == []
    assert snapshot(root) == before


def test_a_reclaimer_that_finds_the_lock_held_leaves_and_the_holder_finishes(
        tmp_path: Path) -> None:
    top = tmp_path / "reclaim"
    top.mkdir()
    (top / "a" / "b").mkdir(parents=True)
    (top / "a" / "b" / "f").write_bytes(b"x")
    holder = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        runner = threading.Thread(target=reclaim.reclaim, args=(str(top),))
        runner.start()
        runner.join(timeout=30)
        assert not runner.is_alive()
        assert (top / "a" / "b" / "f").exists()  # left to the holder
    finally:
        os.close(holder)
    reclaim.reclaim(str(top))  # a later one: everything, links not followed
    assert list(top.iterdir()) == []


def test_a_link_in_reclaim_is_removed_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    top = tmp_path / "reclaim"
    top.mkdir()
    (top / "link").symlink_to(outside)
    reclaim.reclaim(str(top))
    assert list(top.iterdir()) == [] and (outside / "keep").read_bytes() == b"keep"


def test_wait_times_out_while_something_is_left(tmp_path: Path) -> None:
    layout = Layout.at(tmp_path)
    assert reclaim.wait(layout, timeout=0.1)  # no reclaim/ at all
    (layout.reclaim_dir / "x").mkdir(parents=True)
    assert not reclaim.wait(layout, timeout=0.1)



def test_a_retained_tree_pushed_out_is_reclaimed(root: Path, pkgs: Path) -> None:
    """keep_versions = 1: the third version pushes the first one's retained tree out."""
    (root / "etc/mgr-agent").mkdir(parents=True)
    (root / "etc/mgr-agent/agent.toml").write_text("[state]\nkeep_versions = 1\n")
    for version in ("1.0", "2.0", "3.0"):
        ok(root, "install", str(_ext(pkgs, version)))
    assert reclaim.wait(Layout.at(root), timeout=60)
    trees = root / "var/lib/mgr-agent/trees"
    assert len(list(trees.iterdir())) == 1  # 2.0's, the one retained version
    ok(root, "rollback", "demo-ext")
    assert (root / HTDOCS / "js/m000.js").read_bytes() == b"// 2.0 0\n"


def test_under_the_daemons_mounts_trees_are_dropped_in_place(tmp_path: Path, pkgs: Path) -> None:
    """The daemon's unit (ProtectSystem=strict, ReadWritePaths) bind-mounts the panel's and
    the state's directories apart: one filesystem, but a rename between them fails with
    EXDEV.  Old trees are then neither retained nor reclaimed but deleted in place, and
    every command ends clean: no warning, no journal, nothing left."""
    ns = open_namespace(tmp_path / "mount-probe")
    try:
        root = tmp_path / "root"
        for rel in (PSA, "usr/local/mgr5/etc", "var/lib/mgr-agent"):
            (root / rel).mkdir(parents=True, exist_ok=True)
        (root / PSA / "version").write_text("18.0.60 Debian 12.0 1800240311.09\n")
        for rel in (PSA, "var/lib/mgr-agent"):
            at = shlex.quote(str(root / rel))
            ns.sh(f"mount --bind {at} {at}")
        steps = [("install", str(_ext(pkgs, "1.0"))), ("install", str(_ext(pkgs, "2.0"))),
                 ("rollback", "demo-ext"), ("uninstall", "demo-ext", "--purge")]
        for argv in steps:
            run = ns.cli(root, *argv)
            assert run.rc == 0, run.stdout + run.stderr
            assert not [w for w in run.json["warnings"] if "cleaning up failed" in w], run.json
            assert leftovers(root) == []
            assert _reclaim(root) == []
            trees = root / "var/lib/mgr-agent/trees"
            assert not trees.exists() or not any(trees.rglob("t-*"))
        assert not (root / HTDOCS).exists()
    finally:
        ns.close()
