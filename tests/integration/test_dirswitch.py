"""Whole-directory switches (docs/transactions.md#whole-directory-switches): a Plesk
extension's own directories, and an ispmanager plugin's own subfolders, are staged as
sibling trees and switched with one renameat2 each; the per-file switch remains where a
directory holds anything else, and where the filesystem has no RENAME_EXCHANGE."""

from __future__ import annotations

import errno
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from mgr_agent.fsutil import rename_exchange
from mgr_agent.sandbox import samples
from tests.helpers import cli, leftovers, snapshot

PSA = "usr/local/psa"
HTDOCS = f"{PSA}/admin/htdocs/modules/demo-ext"
PLIB = f"{PSA}/admin/plib/modules/demo-ext"
NO_EXCHANGE = {"MGR_AGENT_NO_EXCHANGE": "1"}
LOGO = (b"\x89PNG logo, the same in both versions\n", 0o644)


def _ext(pkgs: Path, version: str, **hooks: str) -> Path:
    extra = {"htdocs/img/logo.png": LOGO,
             f"htdocs/js/app-{version}.js": (f"// {version}\n".encode(), 0o644)}
    return samples.write_zip(samples.plesk_files("demo-ext", version, extra=extra, **hooks),
                             pkgs / f"ext-{version}-{len(hooks)}.zip")


def _ok(run: object) -> None:
    assert getattr(run, "rc", None) == 0, getattr(run, "stdout", "") + getattr(run, "stderr", "")


@pytest.mark.parametrize("env", [{}, NO_EXCHANGE], ids=["exchange", "per-file"])
def test_upgrade_switches_the_extension_directory_whole(root: Path, pkgs: Path,
                                                        env: dict[str, str]) -> None:
    _ok(cli(root, "install", str(_ext(pkgs, "1.0")), env=env))
    htdocs, logo = os.lstat(root / HTDOCS), os.lstat(root / HTDOCS / "img/logo.png")
    run = cli(root, "install", str(_ext(pkgs, "2.0")), env=env)
    _ok(run)
    assert run.json["action"] == "upgraded"
    assert (root / HTDOCS / "js/app-2.0.js").read_bytes() == b"// 2.0\n"
    assert not (root / HTDOCS / "js/app-1.0.js").exists()
    # the unchanged file is the same inode either way: hard-linked into the staged tree, or
    # not touched at all
    assert os.lstat(root / HTDOCS / "img/logo.png").st_ino == logo.st_ino
    exchanged = os.lstat(root / HTDOCS).st_ino != htdocs.st_ino
    assert exchanged == (not env), "the directory itself is the staged one after an exchange"
    assert os.lstat(root / HTDOCS).st_mode == htdocs.st_mode
    assert leftovers(root) == []
    assert cli(root, "verify").rc == 0


def test_both_switches_give_the_same_trees(tmp_path: Path, pkgs: Path) -> None:
    """Install, upgrade, rollback, uninstall: byte for byte the same trees with and without
    RENAME_EXCHANGE."""
    v1, v2 = _ext(pkgs, "1.0"), _ext(pkgs, "2.0")
    trees = []
    for env in ({}, NO_EXCHANGE):
        root = tmp_path / ("per-file" if env else "exchange")
        (root / PSA).mkdir(parents=True)
        (root / "var/lib").mkdir(parents=True)
        seen = []
        for argv in (("install", str(v1)), ("install", str(v2)), ("rollback", "demo-ext"),
                     ("uninstall", "demo-ext"), ("install", str(v2))):
            _ok(cli(root, *argv, env=env))
            assert leftovers(root) == []
            seen.append(snapshot(root))
        trees.append(seen)
    assert trees[0] == trees[1]


def test_failed_fresh_install_leaves_nothing(root: Path, pkgs: Path) -> None:
    before = snapshot(root)
    run = cli(root, "install", str(_ext(pkgs, "1.0", post_install='echo "no";\nexit(1);')))
    assert run.rc == 8, run.stdout
    assert snapshot(root) == before
    assert leftovers(root) == []


def test_a_file_made_during_the_transaction_is_carried_over(root: Path, pkgs: Path) -> None:
    """A file that appears in a directory switched whole after the plan was made (here the
    pre-install hook writes one into the old tree, the post-install hook one into the new
    tree) is never lost: after the commit it is moved from the old tree into the new one,
    after a rollback from the new tree into the old one."""
    _ok(cli(root, "install", str(_ext(pkgs, "1.0"))))
    write = ('$d = getenv("MGR_AGENT_PANEL_ROOT") . "/admin/htdocs/modules/demo-ext/cache";\n'
             '@mkdir($d);\nfile_put_contents("$d/{name}", "{name}\\n");\n')
    pre = write.replace("{name}", "pre.txt")
    run = cli(root, "install", str(_ext(pkgs, "2.0", pre_install=pre)))
    _ok(run)
    assert (root / HTDOCS / "cache/pre.txt").read_bytes() == b"pre.txt\n"
    assert (root / HTDOCS / "js/app-2.0.js").exists()
    assert leftovers(root) == []

    old = snapshot(root)
    post = write.replace("{name}", "post.txt") + "exit(1);\n"
    run = cli(root, "install", str(_ext(pkgs, "3.0", pre_install=pre.replace("pre.txt", "pre3.txt"),
                                        post_install=post)))
    assert run.rc == 8, run.stdout
    after = snapshot(root)
    made = {f"{HTDOCS}/cache/pre3.txt", f"{HTDOCS}/cache/post.txt"}
    assert set(after) - set(old) == made
    assert {p: v for p, v in after.items() if p not in made} == old
    assert leftovers(root) == []


def test_a_file_no_version_shipped_keeps_the_per_file_switch(root: Path, pkgs: Path) -> None:
    """A directory holding anything the package did not ship is switched file by file: no
    switch-dir step is reached (a fault there would fail the upgrade)."""
    _ok(cli(root, "install", str(_ext(pkgs, "1.0"))))
    for rel in (HTDOCS, PLIB, f"{PSA}/admin/sbin/modules/demo-ext"):
        (root / rel / "made-at-run-time.db").write_bytes(b"data\n")
    run = cli(root, "install", str(_ext(pkgs, "2.0")),
              env={"MGR_AGENT_FAULT": "before-switch-dir=raise"})
    _ok(run)
    assert (root / HTDOCS / "made-at-run-time.db").read_bytes() == b"data\n"
    assert leftovers(root) == []
    # the same upgrade with the directories clean is switched whole
    root2 = root.parent / "clean"
    (root2 / PSA).mkdir(parents=True)
    (root2 / "var/lib").mkdir(parents=True)
    _ok(cli(root2, "install", str(_ext(pkgs, "1.0"))))
    run = cli(root2, "install", str(_ext(pkgs, "2.0")),
              env={"MGR_AGENT_FAULT": "before-switch-dir=raise"})
    assert run.rc == 8 and "before-switch-dir" in run.json["error"]["message"], run.stdout


def test_ispmanager_plugin_folders_switched_whole_shared_ones_not(root: Path, pkgs: Path) -> None:
    """The plugin's own folders (addon/myplug/, skins/common/img/myplug/) are switched whole;
    etc/xml, addon/ and skins/common/img/, which the agent created on this bare root too,
    are the panel's shared directories and never are."""
    def plug(version: str) -> Path:
        extra = {f"addon/myplug/{n}.sh": (f"#!/bin/sh\necho {n} {version}\n".encode(), 0o755)
                 for n in ("a", "b", "c")}
        extra.update({f"skins/common/img/myplug/{n}.png": (f"png {n} {version}".encode(), 0o644)
                      for n in ("x", "y")})
        return samples.write_zip(samples.ispmanager_files("myplug", version, extra=extra),
                                 pkgs / f"myplug-{version}.zip")

    _ok(cli(root, "install", str(plug("1.0"))))
    before = snapshot(root)
    fault = cli(root, "install", str(plug("2.0")), env={"MGR_AGENT_FAULT": "before-switch-dir:2=raise"})
    assert fault.rc == 8, fault.stdout
    assert snapshot(root) == before
    run = cli(root, "install", str(plug("2.0")), env={"MGR_AGENT_FAULT": "before-switch-dir:3=raise"})
    _ok(run)
    assert (root / "usr/local/mgr5/addon/myplug/a.sh").read_bytes() == b"#!/bin/sh\necho a 2.0\n"
    assert leftovers(root) == []


def test_rename_exchange_swaps_two_directories(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("in a")
    ino_a = a.stat().st_ino
    rename_exchange(str(a), str(b))
    assert (b / "f").read_text() == "in a" and not (a / "f").exists()
    assert b.stat().st_ino == ino_a
    with pytest.raises(OSError) as exc:
        rename_exchange(str(a), str(tmp_path / "missing"))
    assert exc.value.errno == errno.ENOENT


def _plug_with_hook(pkgs: Path, hook: str) -> Path:
    """An ispmanager plugin whose own folder addon/myplug/ is removed whole on uninstall,
    with a pre-uninstall hook (run in MGR) given as shell lines."""
    extra = {f"addon/myplug/{n}.sh": (f"#!/bin/sh\necho {n}\n".encode(), 0o755) for n in "abcd"}
    extra["scripts/pre-uninstall"] = (f"#!/bin/sh\n{hook}\n".encode(), 0o755)
    return samples.write_zip(samples.ispmanager_files("myplug", "1.0", extra=extra),
                             pkgs / "myplug.zip")


def test_uninstall_carries_what_a_hook_made_out_of_a_folder_removed_whole(root: Path,
                                                                          pkgs: Path) -> None:
    """What the pre-uninstall hook writes into a folder that is then removed whole is not
    deleted with it: after the commit it is moved back to where it was (the one walk that
    deletes the old tree), also when that walk is killed and finished by `recover`."""
    mgr = "usr/local/mgr5"
    plug = _plug_with_hook(pkgs, "mkdir -p addon/myplug/cache && echo kept > addon/myplug/cache/made.txt"
                                 " && echo top > addon/myplug/top.txt")
    _ok(cli(root, "install", str(plug)))
    copy = root.parent / "killed"
    shutil.copytree(root, copy, symlinks=True)

    run = cli(root, "uninstall", "myplug")
    _ok(run)
    assert (root / mgr / "addon/myplug/cache/made.txt").read_text() == "kept\n"
    assert (root / mgr / "addon/myplug/top.txt").read_text() == "top\n"
    assert sorted(p.name for p in (root / mgr / "addon/myplug").iterdir()) == ["cache", "top.txt"]
    assert not (root / mgr / "etc/xml/ispmgr_mod_myplug.xml").exists()
    assert leftovers(root) == []

    killed = cli(copy, "uninstall", "myplug", env={"MGR_AGENT_FAULT": "before-drop-dir:1"})
    assert killed.rc == -9, killed.stdout + killed.stderr  # the folder was removed whole
    _ok(cli(copy, "recover"))
    assert snapshot(copy) == snapshot(root)
    assert leftovers(copy) == []
    assert cli(copy, "list").json["data"] == []


def _damage(root: Path, entry: str = "meta.xml") -> None:
    """The stored archive's ``entry`` can no longer be read (its local header is zeroed);
    the central directory is intact."""
    (stored,) = (root / "var/lib/mgr-agent/archives").iterdir()
    with zipfile.ZipFile(stored) as zf:
        at = zf.getinfo(entry).header_offset
    data = bytearray(stored.read_bytes())
    data[at:at + 4] = b"\0\0\0\0"
    stored.write_bytes(bytes(data))


def test_uninstall_reads_only_the_hook_from_the_stored_package(root: Path, pkgs: Path) -> None:
    """Only the pre-uninstall hook needs the stored package, and of it only the hook's
    entry is read: a plugin without one is removed even when its stored archive can no
    longer be read, and so is one whose hook is intact; a damaged hook is refused before
    anything changes, and --force removes the plugin without it."""
    tree = samples.plesk_files("demo-ext", "1.0")
    del tree["plib/scripts/pre-uninstall.php"]
    _ok(cli(root, "install", str(samples.write_zip(tree, pkgs / "e.zip"))))
    _damage(root)
    run = cli(root, "uninstall", "demo-ext")
    _ok(run)
    assert run.json["hooks"] == [] and not (root / PLIB).exists()
    assert leftovers(root) == []

    _ok(cli(root, "install", str(_ext(pkgs, "1.0"))))
    _damage(root)  # not the hook's entry: the hook runs
    run = cli(root, "uninstall", "demo-ext")
    _ok(run)
    assert [h["hook"] for h in run.json["hooks"]] == ["pre-uninstall"]
    assert not (root / PLIB).exists() and leftovers(root) == []

    # the hook's own entry damaged: reported, and nothing changes
    _ok(cli(root, "install", str(_ext(pkgs, "1.0"))))
    _damage(root, "plib/scripts/pre-uninstall.php")
    before = snapshot(root)
    refused = cli(root, "uninstall", "demo-ext")
    assert refused.rc != 0 and "--force" in refused.json["error"]["hint"], refused.stdout
    assert refused.json["error"]["message"].startswith(
        "entry 'plib/scripts/pre-uninstall.php': cannot be read"), refused.stdout
    assert snapshot(root) == before
    forced = cli(root, "uninstall", "demo-ext", "--force")
    _ok(forced)
    assert forced.json["hooks"] == []
    assert any("cannot be read" in w and "hook was not run (--force)" in w
               for w in forced.json["warnings"]), forced.stdout
    assert not (root / PLIB).exists() and leftovers(root) == []
