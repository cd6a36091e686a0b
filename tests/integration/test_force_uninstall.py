"""``uninstall --force``: a way out of a plugin whose pre-uninstall hook fails or hangs;
it never bypasses the safety rules or the lock.  Through the real CLI and the daemon."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from mgr_agent.sandbox.samples import ispmanager_files, plesk_files, write_zip
from tests.helpers import cli, leftovers, snapshot
from tests.integration.test_daemon import start, via  # noqa: F401 - start is a fixture

if TYPE_CHECKING:
    from mgr_agent.commands.reads import VerifyData

MGR = "usr/local/mgr5"
PSA = "usr/local/psa"
FAIL = b"#!/bin/sh\necho 'needs class Modules_Demo_Service, which is gone' >&2\nexit 3\n"
HANG = b"#!/bin/sh\necho waiting for a service that never answers\nexec sleep 600\n"
needs_php = pytest.mark.skipif(not any(os.access(f"{d}/php", os.X_OK) for d in
                                       os.environ.get("PATH", "").split(":")),
                               reason="php-cli not installed")


def _install(root: Path, pkgs: Path, hook: bytes) -> None:
    tree = ispmanager_files("demo", "1.0")
    tree["scripts/pre-uninstall"] = (hook, 0o755)
    done = cli(root, "install", str(write_zip(tree, pkgs / "demo.zip")))
    assert done.rc == 0, done.stdout


def test_failing_pre_uninstall_refusal_names_force(root: Path, pkgs: Path) -> None:
    _install(root, pkgs, FAIL)
    before = snapshot(root)
    done = cli(root, "uninstall", "demo")
    assert done.rc == 7, done.stdout
    hint = done.json["error"]["hint"]
    assert "`mgr-agent uninstall demo --force`" in hint
    assert "skips only a failing or hanging pre-uninstall hook" in hint
    assert snapshot(root) == before

    forced = cli(root, "uninstall", "demo", "--force")
    assert forced.rc == 0, forced.stdout
    assert forced.json["action"] == "removed"
    (warning,) = [w for w in forced.json["warnings"] if "--force" in w]
    assert "pre-uninstall hook of demo exited with 3" in warning
    assert "needs class Modules_Demo_Service, which is gone" in warning
    assert forced.json["hooks"][0]["exit_code"] == 3
    assert not (root / MGR / "etc/xml/ispmgr_mod_demo.xml").exists()
    assert cli(root, "list").json["data"] == []
    assert leftovers(root) == []


def test_hanging_pre_uninstall_is_killed_and_removal_goes_on(root: Path, pkgs: Path) -> None:
    conf = root / "etc/mgr-agent/agent.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text("[hooks]\ntimeout = 1\n")
    _install(root, pkgs, HANG)
    text = cli(root, "uninstall", "demo", "--force", as_json=False)
    assert text.rc == 0, text.stderr
    assert "ran over its timeout of 1 s" in text.stdout
    assert "waiting for a service that never answers" in text.stdout
    assert "removing it anyway (--force)" in text.stdout
    assert cli(root, "list").json["data"] == []


def test_force_does_not_bypass_the_lock_or_the_symlink_rule(root: Path, pkgs: Path) -> None:
    _install(root, pkgs, FAIL)
    addon = root / MGR / "addon"
    moved = root / "elsewhere"
    addon.rename(moved)
    addon.symlink_to(moved)  # a planted link in the panel tree
    before = snapshot(root)
    done = cli(root, "uninstall", "demo", "--force")
    assert done.rc == 5, done.stdout
    assert "is a symbolic link" in done.json["error"]["message"]
    assert snapshot(root) == before
    addon.unlink()
    moved.rename(addon)

    from mgr_agent.layout import Layout  # noqa: PLC0415
    from mgr_agent.lock import Lock  # noqa: PLC0415

    lock = Lock(Layout.at(root).lock_file, "test holds the lock")
    lock.acquire(0)
    try:
        busy = cli(root, "uninstall", "demo", "--force", "--wait", "0")
        assert busy.rc == 9, busy.stdout
    finally:
        lock.release()


@needs_php
def test_plesk_force_uninstall(root: Path, pkgs: Path) -> None:
    refuse = b'<?php\necho "pm_ApiCli missing\\n";\nexit(2);\n'
    tree = plesk_files("demo-ext", "1.0")
    tree["plib/scripts/pre-uninstall.php"] = (refuse, 0o644)
    assert cli(root, "install", str(write_zip(tree, pkgs / "e.zip"))).rc == 0
    assert cli(root, "uninstall", "demo-ext").rc == 7
    forced = cli(root, "uninstall", "demo-ext", "--force")
    assert forced.rc == 0, forced.stdout
    assert any("pm_ApiCli missing" in w for w in forced.json["warnings"])
    assert not (root / PSA / "admin/plib/modules/demo-ext/meta.xml").exists()


def test_force_and_verify_through_the_daemon(root: Path, pkgs: Path, start: Any) -> None:  # noqa: F811
    """The daemon's API takes ``force`` for uninstall and the ``verify`` op."""
    from mgr_agent import api  # noqa: PLC0415
    from mgr_agent.layout import Layout  # noqa: PLC0415

    start(root).ready()
    _install(root, pkgs, FAIL)
    (root / MGR / "addon/demo.py").write_bytes(b"#!/bin/sh\n# edited\n")
    client = api.Client(Layout.at(root).socket_path)
    checked = client.call("verify", {"name": "demo"}, root=root)
    assert checked.exit_code == 16
    assert [f["path"] for f in cast("VerifyData", checked.data)["files"]] == [f"{MGR}/addon/demo.py"]
    refused = via(root, "uninstall", "demo", daemon=True)
    assert refused.rc == 7 and "--force" in refused.json["error"]["hint"]
    forced = via(root, "uninstall", "demo", "--force", daemon=True)
    assert forced.rc == 0, forced.stdout
    assert any("--force" in w for w in forced.json["warnings"])
    assert any("addon/demo.py: changed on this server" in w for w in forced.json["warnings"])
    assert cli(root, "list").json["data"] == []
