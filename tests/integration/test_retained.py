"""Old trees retained for rollback (docs/transactions.md#retained-trees): after an upgrade
the old tree of each directory switched whole is kept under var/lib/mgr-agent/trees/
instead of deleted, and ``rollback`` renames it back as its staged tree, where it still
holds exactly that version's files, each untouched since."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from mgr_agent.sandbox import samples
from tests.helpers import cli, ok, snapshot

PSA = "usr/local/psa"
HTDOCS = f"{PSA}/admin/htdocs/modules/demo-ext"
TREES = "var/lib/mgr-agent/trees"
LOGO = (b"\x89PNG logo, the same in both versions\n", 0o644)


def _ext(pkgs: Path, version: str) -> Path:
    extra = {"htdocs/img/logo.png": LOGO,
             f"htdocs/js/app-{version}.js": (f"// {version}\n".encode(), 0o644),
             "htdocs/css/site.css": (f"/* {version} */\n".encode(), 0o644)}
    return samples.write_zip(samples.plesk_files("demo-ext", version, extra=extra),
                             pkgs / f"ext-{version}.zip")


def _index(root: Path) -> dict[str, dict[str, object]]:
    """Retained version (content hash) -> its directories (root-relative) kept."""
    top = root / TREES
    out = {}
    for child in top.iterdir() if top.is_dir() else []:
        out[child.name] = json.loads((child / "index.json").read_text())["dirs"]
    return out


def _inodes(root: Path) -> dict[str, int]:
    top = root / HTDOCS
    return {p.relative_to(top).as_posix(): p.stat().st_ino for p in top.rglob("*") if p.is_file()}


def _upgraded(root: Path, pkgs: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Install 1.0 then 2.0; the inodes of the extension's htdocs files after each."""
    ok(root, "install", str(_ext(pkgs, "1.0")))
    first = _inodes(root)
    ok(root, "install", str(_ext(pkgs, "2.0")))
    return first, _inodes(root)


def test_a_foreign_file_is_carried_not_retained(root: Path, pkgs: Path) -> None:
    """A file no version shipped, made in the live tree during the upgrade (by its
    pre-install hook here), is carried into the new tree; the old one is not kept."""
    ok(root, "install", str(_ext(pkgs, "1.0")))
    hook = f"file_put_contents('{root / HTDOCS}/cache.tmp', 'run-time data');"
    extra = {"htdocs/img/logo.png": LOGO, "htdocs/js/app-2.0.js": (b"// 2.0\n", 0o644),
             "htdocs/css/site.css": (b"/* 2.0 */\n", 0o644)}
    v2 = samples.write_zip(samples.plesk_files("demo-ext", "2.0", extra=extra, pre_install=hook),
                           pkgs / "ext-2.0-hook.zip")
    ok(root, "install", str(v2))
    assert (root / HTDOCS / "cache.tmp").read_bytes() == b"run-time data"
    assert all(HTDOCS not in dirs for dirs in _index(root).values())
    ok(root, "rollback", "demo-ext")
    assert (root / HTDOCS / "js/app-1.0.js").read_bytes() == b"// 1.0\n"
    assert (root / HTDOCS / "cache.tmp").read_bytes() == b"run-time data"


def test_rollback_takes_the_retained_tree_back(root: Path, pkgs: Path) -> None:
    v1, v2 = _upgraded(root, pkgs)
    (kept,) = _index(root).values()
    assert HTDOCS in kept, "the old htdocs tree is retained"
    assert ok(root, "rollback", "demo-ext")["version"] == "1.0-1"
    # the very files 1.0 had: renamed back whole, not written again
    assert _inodes(root) == v1
    assert (root / HTDOCS / "js/app-1.0.js").read_bytes() == b"// 1.0\n"
    assert ok(root, "verify")["data"]["files"] == []
    # now 2.0's tree is the retained one, and a second rollback takes it back
    (kept,) = _index(root).values()
    assert HTDOCS in kept
    assert ok(root, "rollback", "demo-ext")["version"] == "2.0-1"
    assert _inodes(root) == v2
    assert ok(root, "verify")["data"]["files"] == []


def test_an_edited_old_file_is_not_taken_back(root: Path, pkgs: Path) -> None:
    """The old tree holds the admin's edit (saved by the upgrade): its mtime is not the
    manifest's, so the rollback stages 1.0 from its archive."""
    ok(root, "install", str(_ext(pkgs, "1.0")))
    v1 = _inodes(root)
    (root / HTDOCS / "css/site.css").write_bytes(b"/* the admin's */\n")
    ok(root, "install", str(_ext(pkgs, "2.0")))
    ok(root, "rollback", "demo-ext")
    assert (root / HTDOCS / "css/site.css").read_bytes() == b"/* 1.0 */\n"
    assert _inodes(root)["js/app-1.0.js"] != v1["js/app-1.0.js"], "staged from the archive"
    assert ok(root, "verify")["data"]["files"] == []


@pytest.mark.parametrize("change", ["content", "mode", "extra file", "file gone"])
def test_a_retained_tree_changed_since_is_not_used(root: Path, pkgs: Path, change: str) -> None:
    v1, _ = _upgraded(root, pkgs)
    ((key, dirs),) = _index(root).items()
    tree = root / TREES / key / str(dirs[HTDOCS]["tree"])  # type: ignore[index]
    target = tree / "js/app-1.0.js"
    if change == "content":
        target.write_bytes(b"// tampered\n")
    elif change == "mode":
        target.chmod(0o755)
    elif change == "extra file":
        (tree / "js/planted.js").write_bytes(b"// not 1.0's\n")
    else:
        target.unlink()
    ok(root, "rollback", "demo-ext")
    assert (root / HTDOCS / "js/app-1.0.js").read_bytes() == b"// 1.0\n"
    assert not (root / HTDOCS / "js/planted.js").exists()
    assert _inodes(root)["js/app-1.0.js"] != v1["js/app-1.0.js"], "staged from the archive"
    assert ok(root, "verify")["data"]["files"] == []


def test_no_tree_is_kept_without_retained_versions(root: Path, pkgs: Path) -> None:
    (root / "etc/mgr-agent").mkdir(parents=True)
    (root / "etc/mgr-agent/agent.toml").write_text("[state]\nkeep_versions = 0\n")
    _upgraded(root, pkgs)
    assert _index(root) == {}


def test_uninstall_deletes_the_retained_trees(root: Path, pkgs: Path) -> None:
    _upgraded(root, pkgs)
    assert _index(root) != {}
    ok(root, "uninstall", "demo-ext")
    assert _index(root) == {}
    assert not list((root / TREES).iterdir())


ROLLBACK_POINTS = ("dir-staged:1", "before-staged", "after-staged", "before-switch-dir:1",
                   "mid-switch:1", "after-switched", "before-commit", "after-commit",
                   "before-drop-dir:1")


@pytest.mark.parametrize("fault", ROLLBACK_POINTS)
def test_kill_during_a_rollback_that_takes_a_tree(tmp_path: Path, pkgs: Path, fault: str) -> None:
    """SIGKILL at each step of a rollback staged from a retained tree, then ``recover``:
    the 2.0 tree before the commit, the 1.0 tree after it, byte for byte, and the next
    rollback still works."""
    roots = {}
    for name in ("reference", "killed"):
        root = roots[name] = tmp_path / name
        (root / PSA).mkdir(parents=True)
        (root / PSA / "version").write_text("18.0.60 Debian 12.0 1800240311.09\n")
        (root / "var/lib").mkdir(parents=True)
        _upgraded(root, pkgs)
    ref, killed = roots["reference"], roots["killed"]
    upgraded = snapshot(ref)
    ok(ref, "rollback", "demo-ext")
    rolled_back = snapshot(ref)
    run = cli(killed, "rollback", "demo-ext", env={"MGR_AGENT_FAULT": fault})
    assert run.rc == -signal.SIGKILL, run.stdout + run.stderr
    ok(killed, "recover")
    committed = fault in ("after-commit", "before-drop-dir:1")
    assert snapshot(killed) == (rolled_back if committed else upgraded)
    assert ok(killed, "verify")["data"]["files"] == []
    ok(killed, "rollback", "demo-ext")
    assert snapshot(killed) == (upgraded if committed else rolled_back)
    assert ok(killed, "verify")["data"]["files"] == []


def test_kill_before_the_old_tree_is_kept(root: Path, pkgs: Path) -> None:
    """Killed after the upgrade's commit, before its old tree was moved: recovery deletes
    it (nothing is retained) and the rollback stages 1.0 from its archive."""
    ok(root, "install", str(_ext(pkgs, "1.0")))
    run = cli(root, "install", str(_ext(pkgs, "2.0")), env={"MGR_AGENT_FAULT": "before-drop-dir:1"})
    assert run.rc == -signal.SIGKILL
    ok(root, "recover")
    ok(root, "rollback", "demo-ext")
    assert (root / HTDOCS / "js/app-1.0.js").read_bytes() == b"// 1.0\n"
    assert not os.path.exists(root / HTDOCS / "js/app-2.0.js")
    assert ok(root, "verify")["data"]["files"] == []
