"""Install, upgrade, roll back and remove through the real CLI, with real zips and hooks."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mgr_agent.sandbox.samples import ispmanager_files, plesk_files, write_dir, write_zip
from tests.helpers import cli, leftovers, snapshot
from tests.waits import wait_for_file, wait_for_lock

MGR = "usr/local/mgr5"
PSA = "usr/local/psa"
EXT = f"{PSA}/admin/plib/modules/demo-ext"


def isp(pkgs: Path, version: str, **kw: object) -> Path:
    return write_zip(ispmanager_files("demo", version, **kw), pkgs / f"demo-{version}-{len(kw)}.zip")  # type: ignore[arg-type]


def ext(pkgs: Path, version: str, **kw: object) -> Path:
    return write_zip(plesk_files("demo-ext", version, **kw), pkgs / f"ext-{version}-{len(kw)}.zip")  # type: ignore[arg-type]


def ok(run: object) -> dict[str, Any]:
    assert run.rc == 0, (run.stdout, run.stderr)  # type: ignore[attr-defined]
    return run.json  # type: ignore[attr-defined,no-any-return]


# ------------------------------------------------------------------ ispmanager
def test_ispmanager_install_upgrade_uninstall(root: Path, pkgs: Path) -> None:
    doc = ok(cli(root, "install", str(isp(pkgs, "1.0"))))
    assert doc["action"] == "installed" and doc["changed"] is True
    assert (doc["name"], doc["panel"], doc["version"], doc["previous_version"]) == \
        ("demo", "ispmanager", "1.0", None)
    assert [h["hook"] for h in doc["hooks"]] == ["pre-install", "post-install"]
    assert doc["hooks"][0]["output"].startswith("pre-install install: demo 1.0")
    handler = root / MGR / "addon/demo.py"
    assert handler.stat().st_mode & 0o777 == 0o755, "handlers are made executable"
    assert (root / MGR / "etc/xml/ispmgr_mod_demo.xml").is_file()
    assert not (root / MGR / "scripts").exists(), "hooks are not installed"

    os.chown(root / MGR / "etc/plugins/ispmgr/demo.xml", 1234, 2345)  # replaced by 1.1
    runtime = root / MGR / "skins/common/img/runtime.cache"
    runtime.write_text("made by the panel")
    new = isp(pkgs, "1.1", extra={"addon/demo-helper.sh": (b"#!/bin/sh\n", 0o755)})
    doc = ok(cli(root, "install", str(new)))
    assert doc["action"] == "upgraded" and doc["previous_version"] == "1.0"
    assert doc["hooks"][0]["argv"][-3:] == ["upgrade", "1.0", ""]
    assert doc["plan"]["summary"]["unchanged"] >= 1
    assert (root / MGR / "addon/demo-helper.sh").is_file()
    assert runtime.read_text() == "made by the panel"
    mod = (root / MGR / "etc/plugins/ispmgr/demo.xml").stat()
    assert (mod.st_uid, mod.st_gid) == (1234, 2345), "a replaced file keeps its owner"

    # obsolete file removed on the next upgrade
    doc = ok(cli(root, "install", str(isp(pkgs, "1.2"))))
    assert f"{MGR}/addon/demo-helper.sh" in doc["plan"]["remove"]
    assert not (root / MGR / "addon/demo-helper.sh").exists()

    doc = ok(cli(root, "uninstall", "demo"))
    assert doc["action"] == "removed" and doc["hooks"][0]["argv"][-1] == "uninstall"
    assert not handler.exists() and not (root / MGR / "etc/xml/ispmgr_mod_demo.xml").exists()
    assert runtime.read_text() == "made by the panel", "files no version shipped are left alone"
    assert (root / MGR / "etc").is_dir(), "directories the plugin did not create stay"
    assert not (root / MGR / "addon").exists(), "directories the plugin created are pruned"
    assert ok(cli(root, "list"))["data"] == []
    assert leftovers(root) == []


@pytest.mark.parametrize("shape", ["wrapped", "leading-prefix", "directory", "tar"])
def test_ispmanager_package_shapes(root: Path, pkgs: Path, shape: str) -> None:
    tree = ispmanager_files("demo", "1.0")
    if shape == "wrapped":
        path = write_zip(tree, pkgs / "w.zip", prefix="demo-plugin-main/")
    elif shape == "leading-prefix":
        moved = {(k if k.startswith("scripts/") else f"{MGR}/{k}"): v for k, v in tree.items()}
        path = write_zip(moved, pkgs / "p.zip")
    elif shape == "directory":
        path = write_dir(tree, pkgs / "dir")
    else:
        src = write_dir(tree, pkgs / "t")
        path = pkgs / "demo.tar.gz"
        subprocess.run(["tar", "-czf", str(path), "-C", str(src), "."], check=True)
    doc = ok(cli(root, "install", str(path)))
    assert doc["name"] == "demo"
    assert (root / MGR / "addon/demo.py").is_file()
    assert ok(cli(root, "uninstall", "demo"))["action"] == "removed"
    # a directory install keeps a zip of itself so that uninstall hooks and rollback work
    assert doc["hooks"][-1]["exit_code"] == 0


def test_version_from_version_file_and_content_hash(root: Path, pkgs: Path) -> None:
    tree = ispmanager_files("demo", "1.0")
    desc = tree["etc/plugins/ispmgr/demo.xml"][0].replace(b'" version="1.0"', b'"')
    tree["etc/plugins/ispmgr/demo.xml"] = (desc, 0o644)
    doc = ok(cli(root, "install", str(write_zip(tree, pkgs / "a.zip"))))
    assert doc["version"].startswith("0+") and len(doc["version"]) == 14
    tree["VERSION"] = (b"2.5\n", 0o644)
    doc = ok(cli(root, "install", str(write_zip(tree, pkgs / "b.zip"))))
    assert doc["version"] == "2.5" and doc["action"] == "upgraded"
    assert not (root / MGR / "VERSION").exists()


# ------------------------------------------------------------------ Plesk
def test_plesk_install_upgrade_keeps_var_and_runtime(root: Path, pkgs: Path) -> None:
    doc = ok(cli(root, "install", str(ext(pkgs, "1.0"))))
    assert doc["hooks"][0]["argv"][0].endswith("php")
    assert doc["hooks"][0]["argv"][-1] == "install"
    assert doc["hooks"][1]["output"].strip() == "post-install install: demo-ext 1.0"
    assert (root / f"{PSA}/admin/htdocs/modules/demo-ext/index.php").is_file()
    assert (root / f"{EXT}/meta.xml").is_file() and (root / f"{EXT}/DESCRIPTION.md").is_file()
    assert (root / f"{PSA}/admin/sbin/modules/demo-ext/helper.sh").stat().st_mode & 0o777 == 0o755
    settings = root / f"{PSA}/var/modules/demo-ext/settings.json"
    assert settings.read_text() == '{"installed_as": "1.0"}\n'
    settings.write_text("admin data")
    runtime = root / f"{EXT}/cache.db"
    runtime.write_text("runtime")

    doc = ok(cli(root, "install", str(ext(pkgs, "1.1"))))
    assert doc["action"] == "upgraded" and doc["previous_version"] == "1.0-1"
    assert doc["hooks"][0]["argv"][-3:] == ["upgrade", "1.0", "1"]
    assert settings.read_text() == "admin data", "var/ is never overwritten"
    assert f"{PSA}/var/modules/demo-ext/settings.json" in doc["plan"]["kept"]
    assert not (root / f"{EXT}/library/Version10.php").exists(), "obsolete file removed"
    assert (root / f"{EXT}/library/Version11.php").is_file()
    assert runtime.read_text() == "runtime"

    doc = ok(cli(root, "uninstall", "demo-ext"))
    assert not (root / f"{PSA}/admin/htdocs/modules/demo-ext").exists()
    assert settings.read_text() == "admin data", "var/ kept without --purge"
    assert runtime.exists() and any("no version of demo-ext shipped" in w for w in doc["warnings"])
    assert any("--purge" in w for w in doc["warnings"])


def test_plesk_purge_removes_var(root: Path, pkgs: Path) -> None:
    ok(cli(root, "install", str(ext(pkgs, "1.0"))))
    (root / f"{PSA}/var/modules/demo-ext/db/x.sqlite").parent.mkdir()
    (root / f"{PSA}/var/modules/demo-ext/db/x.sqlite").write_text("data")
    ok(cli(root, "uninstall", "demo-ext", "--purge"))
    assert not (root / f"{PSA}/var/modules/demo-ext").exists()
    assert not (root / f"{PSA}/admin").exists()
    assert (root / f"{PSA}/version").is_file()


def test_plesk_version_bounds_and_os(root: Path, pkgs: Path) -> None:
    before = snapshot(root)
    too_new = ext(pkgs, "1.0", meta_extra="\n  <plesk_max_version>17.8</plesk_max_version>")
    run = cli(root, "install", str(too_new))
    assert run.rc == 6 and run.json["error"]["code"] == "incompatible-panel"
    assert "plesk_max_version" in run.json["error"]["message"]
    tree = plesk_files("demo-ext", "1.0")
    tree["meta.xml"] = (tree["meta.xml"][0].replace(b"<os>unix</os>", b"<os>win</os>"), 0o644)
    run = cli(root, "install", str(write_zip(tree, pkgs / "win.zip")))
    assert run.rc == 6 and "win only" in run.json["error"]["message"]
    assert snapshot(root) == before


# ------------------------------------------------------------------ failures and rollback
def test_failing_pre_install_changes_nothing(root: Path, pkgs: Path) -> None:
    ok(cli(root, "install", str(ext(pkgs, "1.0"))))
    before = snapshot(root)
    bad = ext(pkgs, "1.1", pre_install='echo "requirement missing: ioncube\\n"; exit(1);')
    run = cli(root, "install", str(bad))
    assert run.rc == 7
    doc = run.json
    assert doc["action"] == "failed" and doc["error"]["code"] == "hook-failed"
    assert "requirement missing: ioncube" in doc["error"]["message"]
    assert snapshot(root) == before
    assert ok(cli(root, "info", "demo-ext"))["version"] == "1.0-1"
    assert leftovers(root) == []


@pytest.mark.parametrize("kind", ["isp", "plesk"])
def test_failing_post_install_rolls_back_byte_for_byte(root: Path, pkgs: Path, kind: str) -> None:
    good, bad = (
        (isp(pkgs, "1.0"), isp(pkgs, "1.1", post_install="echo 'schema migration failed' >&2; exit 4"))
        if kind == "isp" else
        (ext(pkgs, "1.0"), ext(pkgs, "1.1", post_install='echo "schema migration failed"; exit(4);')))
    ok(cli(root, "install", str(good)))
    before = snapshot(root)
    run = cli(root, "install", str(bad))
    assert run.rc == 8, run.stdout
    doc = run.json
    assert doc["action"] == "rolled_back" and doc["changed"] is False
    assert doc["error"]["code"] == "rolled-back"
    assert "schema migration failed" in doc["error"]["message"]
    assert doc["hooks"][-1]["exit_code"] == 4
    assert snapshot(root) == before
    assert leftovers(root) == []
    hist = ok(cli(root, "history"))["data"]
    assert hist[0]["status"] == "rolled_back"


def test_failed_fresh_install_leaves_nothing(root: Path, pkgs: Path) -> None:
    before = snapshot(root)
    run = cli(root, "install", str(ext(pkgs, "1.0", post_install="exit(9);")))
    assert run.rc == 8 and run.json["previous_version"] is None
    assert snapshot(root) == before
    assert ok(cli(root, "list"))["data"] == []
    assert not list((root / "var/lib/mgr-agent/archives").iterdir())


def test_hook_timeout_kills_group_and_rolls_back(root: Path, pkgs: Path) -> None:
    (root / "etc/mgr-agent").mkdir(parents=True)
    (root / "etc/mgr-agent/agent.toml").write_text("[hooks]\ntimeout = 1\n")
    marker = root.parent / "grandchild.pid"
    ok(cli(root, "install", str(isp(pkgs, "1.0"))))
    before = snapshot(root)
    hang = f"(sleep 60 & echo $! > {marker}; wait) ; sleep 60"
    run = cli(root, "install", str(isp(pkgs, "1.1", post_install=hang)))
    assert run.rc == 8 and "timeout of 1 s" in run.json["error"]["message"]
    assert snapshot(root) == before
    pid = int(marker.read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_hook_sees_clean_environment_and_no_inherited_fds(root: Path, pkgs: Path) -> None:
    probe = "ls /proc/self/fd | tr '\\n' ' '; echo; env | sort"
    doc = ok(cli(root, "install", str(isp(pkgs, "1.0", post_install=probe)),
                 env={"SECRET_TOKEN": "leak"}))
    out = doc["hooks"][1]["output"]
    fds = out.splitlines()[1].split()
    assert sorted(fds) == ["0", "1", "2", "3"], fds  # 3 is ls's own directory handle
    assert "SECRET_TOKEN" not in out
    assert f"MGR_AGENT_ROOT={root}" in out and "MGR_AGENT_PLUGIN=demo" in out
    assert f"MGR_AGENT_PANEL_ROOT={root / MGR}" in out


def test_immutable_file_during_upgrade_is_rolled_back(root: Path, pkgs: Path) -> None:
    ok(cli(root, "install", str(isp(pkgs, "1.0"))))
    target = root / MGR / "skins/common/img/demo.txt"
    before = snapshot(root)
    # the pre-install hook runs after preflight: the file becomes immutable mid-transaction
    bad = isp(pkgs, "1.1", pre_install=f"chattr +i {target}")
    try:
        run = cli(root, "install", str(bad))
        assert run.rc == 8, run.stdout
        assert str(target) in run.json["error"]["message"]
        assert "Operation not permitted" in run.json["error"]["message"]
        assert snapshot(root) == before
        assert leftovers(root) == []
        # preflight names an immutable file before anything starts
        run = cli(root, "install", str(isp(pkgs, "1.2")))
        assert run.rc == 10 and str(target) in run.json["error"]["message"]
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=False)


@pytest.mark.root
def test_immutable_file_in_a_directory_removed_whole_is_named(root: Path, pkgs: Path) -> None:
    """The plan reads each file's flags with its lstat (``libc.lstat``); preflight trusts
    that only for files it found clear.  index.php is not the first file the plan meets in
    its directory, so its flags come from the plan's own statx."""
    ok(cli(root, "install", str(ext(pkgs, "1.0"))))
    target = root / PSA / "admin/htdocs/modules/demo-ext/index.php"
    subprocess.run(["chattr", "+i", str(target)], check=True)
    try:
        before = snapshot(root)
        run = cli(root, "uninstall", "demo-ext")
        assert run.rc == 10, run.stdout
        assert str(target) in run.json["error"]["message"]
        assert "immutable" in run.json["error"]["message"]
        assert snapshot(root) == before and leftovers(root) == []
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=False)
    ok(cli(root, "uninstall", "demo-ext"))


def test_rollback_to_kept_version(root: Path, pkgs: Path) -> None:
    ok(cli(root, "install", str(ext(pkgs, "1.0"))))
    v1 = snapshot(root)
    ok(cli(root, "install", str(ext(pkgs, "1.1"))))
    doc = ok(cli(root, "rollback", "demo-ext"))
    assert doc["action"] == "rolled_back" and doc["version"] == "1.0-1"
    assert doc["previous_version"] == "1.1-1"
    assert snapshot(root) == v1
    info = ok(cli(root, "info", "demo-ext"))["data"]
    assert [k["version"] for k in info["kept"]] == ["1.1"]
    run = cli(root, "rollback", "nothing-here")
    assert run.rc == 4


def test_idempotent_reinstall_runs_no_hook(root: Path, pkgs: Path) -> None:
    path = ext(pkgs, "1.0")
    ok(cli(root, "install", str(path)))
    with sqlite3.connect(root / "var/lib/mgr-agent/state.db") as db:  # hashed alongside
        assert db.execute("SELECT archive_sha FROM packages").fetchall() == [
            (hashlib.sha256(path.read_bytes()).hexdigest(),)]
    before = snapshot(root)
    doc = ok(cli(root, "install", str(path)))
    assert (doc["action"], doc["changed"], doc["hooks"]) == ("unchanged", False, [])
    assert snapshot(root) == before
    # --reinstall rewrites damaged files
    (root / f"{EXT}/meta.xml").write_text("damaged")
    doc = ok(cli(root, "install", str(path), "--reinstall"))
    assert doc["changed"] is True and snapshot(root) == before


def test_downgrade_refused_unless_allowed(root: Path, pkgs: Path) -> None:
    ok(cli(root, "install", str(ext(pkgs, "1.10"))))
    run = cli(root, "install", str(ext(pkgs, "1.9")))
    assert run.rc == 6 and run.json["error"]["code"] == "downgrade-refused"
    assert "--allow-downgrade" in run.json["error"]["hint"]
    doc = ok(cli(root, "install", str(ext(pkgs, "1.9")), "--allow-downgrade"))
    assert doc["version"] == "1.9-1"


def test_cross_package_conflict_reported_before_change(root: Path, pkgs: Path) -> None:
    ok(cli(root, "install", str(isp(pkgs, "1.0"))))
    other = ispmanager_files("other", "1.0", extra={"skins/common/img/demo.txt": (b"mine", 0o644)})
    before = snapshot(root)
    run = cli(root, "install", str(write_zip(other, pkgs / "other.zip")))
    assert run.rc == 5 and run.json["error"]["code"] == "file-conflict"
    assert "skins/common/img/demo.txt" in run.json["error"]["message"]
    assert "ispmanager package demo" in run.json["error"]["message"]
    assert snapshot(root) == before


def test_forbidden_panel_paths(root: Path, pkgs: Path) -> None:
    bad = ispmanager_files("demo", "1.0", extra={"sbin/mgrctl": (b"evil", 0o755)})
    run = cli(root, "install", str(write_zip(bad, pkgs / "bad.zip")))
    assert run.rc == 3 and "sbin/mgrctl" in run.json["error"]["message"]
    assert run.json["error"]["details"]["rule"] == "forbidden-path"


def test_panel_file_diverted_and_restored(root: Path, pkgs: Path) -> None:
    template = root / MGR / "etc/templates/nginx-vhosts.template"
    template.parent.mkdir(parents=True)
    template.write_text("panel original")
    template.chmod(0o640)
    os.chown(template, 1234, 2345)
    mine = {"etc/templates/nginx-vhosts.template": (b"plugin version", 0o644)}
    doc = ok(cli(root, "install", str(isp(pkgs, "1.0", extra=mine))))
    assert any("nginx-vhosts.template" in w and "original is kept" in w for w in doc["warnings"])
    assert template.read_text() == "plugin version"
    # an upgrade that stops shipping it puts the original back
    ok(cli(root, "install", str(isp(pkgs, "1.1"))))
    assert template.read_text() == "panel original" and template.stat().st_mode & 0o777 == 0o640
    assert (template.stat().st_uid, template.stat().st_gid) == (1234, 2345), "owner restored"
    # rollback to 1.0 diverts again, uninstall restores
    ok(cli(root, "rollback", "demo"))
    assert template.read_text() == "plugin version"
    ok(cli(root, "uninstall", "demo"))
    assert template.read_text() == "panel original"
    assert not any((root / "var/lib/mgr-agent/diverted").rglob("*.template"))


def test_dry_run_changes_nothing(root: Path, pkgs: Path) -> None:
    ok(cli(root, "install", str(ext(pkgs, "1.0"))))
    before = snapshot(root)
    doc = ok(cli(root, "install", str(ext(pkgs, "1.1")), "--dry-run"))
    assert doc["action"] == "planned" and doc["changed"] is False and doc["hooks"] == []
    assert doc["plan"]["remove"] == [f"{EXT}/library/Version10.php"]
    doc = ok(cli(root, "uninstall", "demo-ext", "--dry-run", "--purge"))
    assert doc["action"] == "planned" and len(doc["plan"]["remove"]) == 11
    assert snapshot(root) == before


def test_sha256_checked(root: Path, pkgs: Path) -> None:
    path = ext(pkgs, "1.0")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    run = cli(root, "install", str(path), "--sha256", "0" * 64)
    assert run.rc == 12 and run.json["error"]["code"] == "checksum-mismatch"
    assert not (root / "var/lib/mgr-agent").exists()
    ok(cli(root, "install", str(path), "--sha256", digest.upper()))


def test_json_shape_and_human_output(root: Path, pkgs: Path) -> None:
    doc = ok(cli(root, "install", str(isp(pkgs, "1.0"))))
    for key in ("schema", "action", "changed", "name", "panel", "version", "previous_version",
                "warnings", "hooks", "tx"):
        assert key in doc
    run = cli(root, "uninstall", "missing")
    assert run.rc == 4 and run.stdout.count("\n") == 1
    assert run.json["error"] == {"code": "not-installed", "message": "missing: not installed",
                                 "hint": "`mgr-agent list` shows what is installed",
                                 "details": {"name": "missing"}}
    text = cli(root, "info", "demo", as_json=False)
    assert text.rc == 0 and "addon/demo.py" in text.stdout and "0755" in text.stdout
    check = ok(cli(root, "check", str(ext(pkgs, "2.0"))))
    assert check["action"] == "checked" and check["data"]["hooks"] == [
        "post-install", "pre-install", "pre-uninstall"]


def test_lock_wait_zero_fails_fast(root: Path, pkgs: Path) -> None:
    slow = isp(pkgs, "1.0", pre_install="sleep 3")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MGR_AGENT_")}
    holder = subprocess.Popen([sys.executable, "-m", "mgr_agent", "--root", str(root), "install",
                               str(slow), "--json"], env=env, stdout=subprocess.PIPE)
    try:
        wait_for_lock(root, holder.pid, alive=lambda: holder.poll() is None)
        run = cli(root, "install", str(ext(pkgs, "1.0")), "--wait", "0")
        assert run.rc == 9 and run.json["error"]["code"] == "lock-busy"
        assert "install demo" in run.json["error"]["message"]
    finally:
        assert holder.wait(30) == 0


def test_sigterm_during_post_install_undoes_and_exits_130(root: Path, pkgs: Path) -> None:
    ok(cli(root, "install", str(isp(pkgs, "1.0"))))
    before = snapshot(root)
    marker = root.parent / "hook-started"
    slow = isp(pkgs, "1.1", post_install=f"touch {marker}; sleep 30")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MGR_AGENT_")}
    proc = subprocess.Popen([sys.executable, "-m", "mgr_agent", "--root", str(root), "install",
                             str(slow), "--json"], env=env, stdout=subprocess.PIPE, text=True)
    wait_for_file(marker, what="the post-install hook to start", alive=lambda: proc.poll() is None)
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    doc = json.loads(out)
    assert doc["error"]["code"] == "interrupted" and "SIGTERM" in doc["error"]["message"]
    assert snapshot(root) == before
    assert leftovers(root) == []
    assert ok(cli(root, "info", "demo"))["version"] == "1.0"
