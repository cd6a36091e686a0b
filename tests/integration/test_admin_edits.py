"""Files an admin changed after the agent put them there are kept or saved, never silently
overwritten (dpkg's conffile rule, adapted); ``verify`` and ``info`` show them; files no
version shipped are reported on uninstall.  All through the real CLI."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mgr_agent.sandbox.samples import ispmanager_files, plesk_files, write_zip
from tests.helpers import cli, leftovers, snapshot

MGR = "usr/local/mgr5"
PSA = "usr/local/psa"
EXT = f"{PSA}/admin/plib/modules/demo-ext"
SAVED = "var/lib/mgr-agent/saved"

# v1 -> v2: same.conf ships the same bytes; tmpl.conf changes; gone.conf is dropped
V1 = {"etc/demo/same.conf": (b"same in both\n", 0o644),
      "etc/demo/tmpl.conf": (b"template 1\n", 0o644),
      "etc/demo/gone.conf": (b"only in 1\n", 0o644)}
V2 = {"etc/demo/same.conf": (b"same in both\n", 0o644),
      "etc/demo/tmpl.conf": (b"template 2\n", 0o644)}


def _zips(pkgs: Path) -> tuple[Path, Path]:
    one = write_zip(ispmanager_files("demo", "1.0", extra=V1), pkgs / "demo1.zip")
    two = write_zip(ispmanager_files("demo", "2.0", extra=V2), pkgs / "demo2.zip")
    return one, two


def _edit(root: Path) -> None:
    (root / MGR / "etc/demo/same.conf").write_bytes(b"same in both\n# admin: tuned\n")
    (root / MGR / "etc/demo/tmpl.conf").write_bytes(b"template 1\n# admin: my change\n")
    (root / MGR / "etc/demo/gone.conf").write_bytes(b"admin data\n")


def _saved(root: Path) -> dict[str, bytes]:
    top = root / SAVED
    return {p.relative_to(top).as_posix(): p.read_bytes() for p in top.rglob("*") if p.is_file()}


def test_upgrade_keeps_or_saves_the_admins_edits(root: Path, pkgs: Path) -> None:
    one, two = _zips(pkgs)
    assert cli(root, "install", str(one)).rc == 0
    _edit(root)

    dry = cli(root, "install", str(two), "--dry-run")
    assert dry.rc == 0, dry.stdout
    modified = {m["path"]: m for m in dry.json["plan"]["modified"]}
    assert {p: m["then"] for p, m in modified.items()} == {
        f"{MGR}/etc/demo/same.conf": "kept", f"{MGR}/etc/demo/tmpl.conf": "replaced",
        f"{MGR}/etc/demo/gone.conf": "removed"}
    assert any("tmpl.conf: changed on this server" in w and "it would be replaced" in w
               for w in dry.json["warnings"])
    text = cli(root, "install", str(two), "--dry-run", as_json=False)
    assert "same.conf: changed on this server since it was installed; the new version ships " \
           "the same content" in text.stdout
    assert not (root / SAVED).exists()

    done = cli(root, "install", str(two))
    assert done.rc == 0, done.stdout
    tx = done.json["tx"]
    assert (root / MGR / "etc/demo/same.conf").read_bytes() == b"same in both\n# admin: tuned\n"
    assert (root / MGR / "etc/demo/tmpl.conf").read_bytes() == b"template 2\n"
    assert not (root / MGR / "etc/demo/gone.conf").exists()
    assert _saved(root) == {f"demo/{tx}/{MGR}/etc/demo/tmpl.conf": b"template 1\n# admin: my change\n",
                            f"demo/{tx}/{MGR}/etc/demo/gone.conf": b"admin data\n"}
    rows = {m["path"]: m["saved"] for m in done.json["plan"]["modified"]}
    assert rows[f"{MGR}/etc/demo/tmpl.conf"] == f"{SAVED}/demo/{tx}/{MGR}/etc/demo/tmpl.conf"
    assert rows[f"{MGR}/etc/demo/same.conf"] is None
    assert any(f"tmpl.conf: changed on this server since it was installed; it was replaced; your "
               f"version is saved in {SAVED}/demo/{tx}/{MGR}/etc/demo/tmpl.conf" in w
               for w in done.json["warnings"])
    assert any("gone.conf" in w and "it was removed" in w for w in done.json["warnings"])

    # the admin's kept file is still reported as modified against the new manifest
    ver = cli(root, "verify", "demo")
    assert ver.rc == 16, ver.stdout
    assert [(f["path"], f["flags"]) for f in ver.json["data"]["files"]] == [
        (f"{MGR}/etc/demo/same.conf", ["modified"])]

    # rollback to 1.0: same.conf ships the same content again (kept); tmpl.conf is as 2.0
    # installed it, so it is replaced without saving anything
    back = cli(root, "rollback", "demo")
    assert back.rc == 0, back.stdout
    assert (root / MGR / "etc/demo/same.conf").read_bytes() == b"same in both\n# admin: tuned\n"
    assert (root / MGR / "etc/demo/tmpl.conf").read_bytes() == b"template 1\n"


def test_failed_upgrade_puts_the_admins_files_back_byte_for_byte(root: Path, pkgs: Path) -> None:
    one, _ = _zips(pkgs)
    assert cli(root, "install", str(one)).rc == 0
    _edit(root)
    os.chmod(root / MGR / "etc/demo/tmpl.conf", 0o600)
    before = snapshot(root)
    bad = write_zip(ispmanager_files("demo", "2.0", extra=V2, post_install="exit 3"),
                    pkgs / "bad.zip")
    done = cli(root, "install", str(bad))
    assert done.rc == 8, done.stdout
    assert done.json["action"] == "rolled_back"
    assert snapshot(root) == before
    assert _saved(root) == {}, "a rolled-back transaction saves nothing"
    assert not any("is saved in" in w for w in done.json["warnings"])
    assert {m["then"] for m in done.json["plan"]["modified"]} == {"kept", "replaced", "removed"}
    assert all(m["saved"] is None for m in done.json["plan"]["modified"])
    assert leftovers(root) == []


def test_uninstall_saves_edits_and_reports_files_no_version_shipped(root: Path, pkgs: Path) -> None:
    one, _ = _zips(pkgs)
    assert cli(root, "install", str(one)).rc == 0
    (root / MGR / "etc/demo/tmpl.conf").write_bytes(b"edited\n")
    (root / MGR / "etc/demo/local.conf").write_bytes(b"the admin's own file\n")
    done = cli(root, "uninstall", "demo")
    assert done.rc == 0, done.stdout
    tx = done.json["tx"]
    assert _saved(root) == {f"demo/{tx}/{MGR}/etc/demo/tmpl.conf": b"edited\n"}
    assert done.json["plan"]["left"] == [f"{MGR}/etc/demo/local.conf"]
    assert any(w.startswith("left 1 file(s) that no version of demo shipped, in "
                            f"{MGR}/etc/demo: {MGR}/etc/demo/local.conf") for w in done.json["warnings"])
    assert (root / MGR / "etc/demo/local.conf").read_bytes() == b"the admin's own file\n"
    assert not (root / MGR / "etc/demo/tmpl.conf").exists()


def test_plesk_upgrade_saves_an_edited_php_file(root: Path, pkgs: Path) -> None:
    one = write_zip(plesk_files("demo-ext", "1.0", extra={"plib/library/Conf.php": (b"<?php // 1\n", 0o644)}),
                    pkgs / "e1.zip")
    two = write_zip(plesk_files("demo-ext", "2.0", extra={"plib/library/Conf.php": (b"<?php // 2\n", 0o644)}),
                    pkgs / "e2.zip")
    assert cli(root, "install", str(one)).rc == 0
    (root / EXT / "library/Conf.php").write_bytes(b"<?php // admin\n")
    done = cli(root, "install", str(two))
    assert done.rc == 0, done.stdout
    assert _saved(root) == {f"demo-ext/{done.json['tx']}/{EXT}/library/Conf.php": b"<?php // admin\n"}
    assert not list((root / EXT).rglob("*.mga-*"))


def test_verify_and_info_flag_modified_missing_and_mode(root: Path, pkgs: Path) -> None:
    one, _ = _zips(pkgs)
    assert cli(root, "install", str(one)).rc == 0
    clean = cli(root, "verify")
    assert clean.rc == 0, clean.stdout
    assert clean.json["data"]["files"] == []
    assert cli(root, "verify", as_json=False).stdout.strip().startswith("ok")

    (root / MGR / "etc/demo/tmpl.conf").write_bytes(b"template 9\n")  # same size: hashed
    (root / MGR / "etc/demo/gone.conf").unlink()
    os.chmod(root / MGR / "etc/demo/same.conf", 0o600)
    ver = cli(root, "verify", "demo")
    assert ver.rc == 16, ver.stdout
    assert ver.json["error"]["code"] == "verify-failed"
    assert {f["path"]: f["flags"] for f in ver.json["data"]["files"]} == {
        f"{MGR}/etc/demo/tmpl.conf": ["modified"], f"{MGR}/etc/demo/gone.conf": ["missing"],
        f"{MGR}/etc/demo/same.conf": ["mode"]}
    text = cli(root, "verify", as_json=False)
    assert text.rc == 16
    assert f"modified  demo  {MGR}/etc/demo/tmpl.conf" in text.stdout
    assert f"missing   demo  {MGR}/etc/demo/gone.conf" in text.stdout

    info = cli(root, "info", "demo")
    flags = {f["path"]: f["flags"] for f in info.json["data"]["files"]}
    assert flags[f"{MGR}/etc/demo/gone.conf"] == ["missing"]
    assert flags[f"{MGR}/addon/demo.py"] == []
    assert f"{MGR}/etc/demo/tmpl.conf (modified)" in cli(root, "info", "demo", as_json=False).stdout
    assert cli(root, "verify", "nosuch").rc == 4
    digest = hashlib.sha256(b"template 9\n").hexdigest()
    assert digest not in ver.stdout, "verify reports flags, not the admin's content"
