"""Plesk where Plesk really lives (PRODUCT_ROOT_D from etc/psa/psa.conf; the Debian layout
with usr/local/psa a symlink to opt/psa), and registration with Plesk's ``extension``
utility (the stand-in), as one step of the transaction and of its undo.  Real CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mgr_agent.sandbox.samples import plesk_files, write_zip
from mgr_agent.sandbox.standin import install_plesk_standin
from tests.helpers import cli, leftovers, snapshot

EXT = "demo-ext"
REGISTRY = "var/standin-extensions.json"
VERSION = "18.0.60 Debian 12.0 1800240311.09\n"
needs_php = pytest.mark.skipif(not any(os.access(f"{d}/php", os.X_OK) for d in
                                       os.environ.get("PATH", "").split(":")),
                               reason="php-cli not installed")
pytestmark = needs_php


def debian_root(base: Path, *, conf: bool = True, link: str = "/opt/psa") -> Path:
    """A root laid out like Plesk on Debian: opt/psa, usr/local/psa -> /opt/psa, psa.conf."""
    root = base / "debian"
    (root / "opt/psa").mkdir(parents=True)
    (root / "opt/psa/version").write_text(VERSION)
    (root / "usr/local").mkdir(parents=True)
    (root / "usr/local/psa").symlink_to(link)
    (root / "var/lib").mkdir(parents=True)
    if conf:
        (root / "etc/psa").mkdir(parents=True)
        (root / "etc/psa/psa.conf").write_text(
            "# Plesk configuration\nPRODUCT_ROOT_D\t\t\t/opt/psa\nPLESK_MAILNAMES_D\t/var/qmail/mailnames\n")
    return root


def ext(pkgs: Path, version: str, **kw: object) -> Path:
    return write_zip(plesk_files(EXT, version, **kw), pkgs / f"{EXT}-{version}-{len(kw)}.zip")  # type: ignore[arg-type]


def registry(psa: Path) -> dict[str, dict[str, str]]:
    path = psa / REGISTRY
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.parametrize("conf", [True, False], ids=["psa.conf", "symlink-only"])
def test_debian_layout_installs_into_opt_psa(tmp_path: Path, pkgs: Path, conf: bool) -> None:
    root = debian_root(tmp_path, conf=conf)
    one = ext(pkgs, "1.0", extra={"_meta/icons/32x32.png": (b"\x89PNG icon\n", 0o644)})
    done = cli(root, "install", str(one))
    assert done.rc == 0, done.stdout + done.stderr
    assert (root / "opt/psa/admin/plib/modules/demo-ext/meta.xml").is_file()
    assert (root / "opt/psa/admin/share/modules/demo-ext/_meta/icons/32x32.png").is_file()
    assert (root / "usr/local/psa").is_symlink(), "the link is left as it is"
    info = cli(root, "info", EXT).json["data"]
    paths = [f["path"] for f in info["files"]]
    assert paths and all(p.startswith("opt/psa/") for p in paths), paths  # real paths recorded
    assert "opt/psa/admin/plib/modules/demo-ext/meta.xml" in done.json["plan"]["add"]
    assert cli(root, "verify", EXT).rc == 0
    gone = cli(root, "uninstall", EXT)
    assert gone.rc == 0, gone.stdout
    assert not (root / "opt/psa/admin/plib/modules/demo-ext").exists()
    assert leftovers(root) == []


def test_rhel_layout_from_psa_conf(root: Path, pkgs: Path) -> None:
    (root / "etc/psa").mkdir(parents=True)
    (root / "etc/psa/psa.conf").write_text("PRODUCT_ROOT_D /usr/local/psa\n")
    done = cli(root, "install", str(ext(pkgs, "1.0")))
    assert done.rc == 0, done.stdout
    assert (root / "usr/local/psa/admin/plib/modules/demo-ext/meta.xml").is_file()
    assert not (root / "opt").exists()


def test_symlinks_inside_the_extension_are_still_refused(tmp_path: Path, pkgs: Path) -> None:
    root = debian_root(tmp_path)
    (root / "opt/psa/admin/plib/modules").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "opt/psa/admin/plib/modules/demo-ext").symlink_to(outside)
    before = snapshot(root)
    done = cli(root, "install", str(ext(pkgs, "1.0")))
    assert done.rc == 5, done.stdout
    assert "opt/psa/admin/plib/modules/demo-ext: is a symbolic link" in done.json["error"]["message"]
    assert snapshot(root) == before and list(outside.iterdir()) == []


def test_a_link_out_of_the_root_is_not_followed(tmp_path: Path, pkgs: Path) -> None:
    root = debian_root(tmp_path, conf=False, link="../../../../elsewhere")
    before = snapshot(root)
    done = cli(root, "install", str(ext(pkgs, "1.0")))
    assert done.rc == 5, done.stdout
    assert "usr/local/psa: is a symbolic link" in done.json["error"]["message"]
    assert snapshot(root) == before


# ------------------------------------------------------------------ registration
def test_registration_follows_install_upgrade_rollback_uninstall(root: Path, pkgs: Path) -> None:
    psa = root / "usr/local/psa"
    install_plesk_standin(psa)
    done = cli(root, "install", str(ext(pkgs, "1.0")))
    assert done.rc == 0, done.stdout
    assert registry(psa) == {EXT: {"name": f"Demo {EXT}", "version": "1.0", "release": "1"}}
    assert f"Plesk: registered {EXT}" in done.json["notes"]

    assert cli(root, "install", str(ext(pkgs, "2.0"))).rc == 0
    assert registry(psa)[EXT]["version"] == "2.0"

    # a failing post-install after the registration: the 1.0 registration is put back
    bad = cli(root, "install", str(ext(pkgs, "3.0", post_install="exit(4);")))
    assert bad.rc == 8, bad.stdout
    assert registry(psa)[EXT]["version"] == "2.0"

    back = cli(root, "rollback", EXT)
    assert back.rc == 0, back.stdout
    assert registry(psa)[EXT]["version"] == "1.0"

    gone = cli(root, "uninstall", EXT)
    assert gone.rc == 0, gone.stdout
    assert registry(psa) == {}
    assert f"Plesk: unregistered {EXT}" in gone.json["notes"]


def test_failed_registration_rolls_a_fresh_install_back(root: Path, pkgs: Path) -> None:
    psa = root / "usr/local/psa"
    install_plesk_standin(psa)
    (psa / "var/standin-extension-fail").write_text("register\n")
    before = snapshot(root)
    done = cli(root, "install", str(ext(pkgs, "1.0")))
    assert done.rc == 8, done.stdout
    err = done.json["error"]
    assert err["code"] == "rolled-back" and err["details"]["cause_code"] == "registration-failed"
    assert f"plesk bin extension --register {EXT} exited with 1" in err["message"]
    assert "fails on demand" in err["message"]
    assert snapshot(root) == before
    assert cli(root, "list").json["data"] == []
    assert leftovers(root) == []


def test_failed_upgrade_registration_keeps_the_old_one(root: Path, pkgs: Path) -> None:
    psa = root / "usr/local/psa"
    install_plesk_standin(psa)
    assert cli(root, "install", str(ext(pkgs, "1.0"))).rc == 0
    (psa / "var/standin-extension-fail").write_text("register\n")
    before = snapshot(root)
    done = cli(root, "install", str(ext(pkgs, "2.0")))
    assert done.rc == 8, done.stdout
    assert any("putting the plesk registration" in w for w in done.json["warnings"]), \
        "the stand-in refuses to register 1.0 again too, and says so"
    (psa / "var/standin-extension-fail").unlink()
    assert snapshot(root) == {k: v for k, v in before.items()
                              if k != "usr/local/psa/var/standin-extension-fail"}
    assert registry(psa)[EXT]["version"] == "1.0"


def test_failed_unregistration_keeps_the_extension(root: Path, pkgs: Path) -> None:
    psa = root / "usr/local/psa"
    install_plesk_standin(psa)
    assert cli(root, "install", str(ext(pkgs, "1.0"))).rc == 0
    (psa / "var/standin-extension-fail").write_text("unregister\n")
    before = snapshot(root)
    done = cli(root, "uninstall", EXT)
    assert done.rc == 8, done.stdout
    assert done.json["error"]["code"] == "registration-failed"
    assert snapshot(root) == before
    assert registry(psa)[EXT]["version"] == "1.0"
    assert cli(root, "info", EXT).rc == 0


def test_without_plesk_the_extension_is_not_registered_and_says_so_once(root: Path, pkgs: Path) -> None:
    done = cli(root, "install", str(ext(pkgs, "1.0")))
    assert done.rc == 0, done.stdout
    said = [n for n in done.json["notes"] if "was not registered with Plesk" in n]
    assert len(said) == 1, done.json["notes"]
    assert f"{EXT} was not registered" in said[0]
