"""`mgr-agent new` → `check --strict` → `pack` → `install` → `call`, and reproducible packs.

Everything runs through the real CLI in a subprocess: real skeleton files, real zips,
real PHP and shell hooks, the real handler answering through `mgr-agent call`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from mgr_agent import xmlsafe
from tests.helpers import cli, leftovers

EXT, ISP = "night-backup", "nightly"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def new(root: Path, name: str, panel: str, where: Path) -> Path:
    run = cli(root, "new", name, "--panel", panel, "--dir", str(where))
    assert run.rc == 0, run.stderr + run.stdout
    assert run.json["action"] == "created" and run.json["data"]["path"] == str(where)
    return where


def pack(root: Path, tree: Path, dest: Path, *extra: str) -> Path:
    run = cli(root, "pack", str(tree), "-d", str(dest), *extra)
    assert run.rc == 0, run.stderr + run.stdout
    assert run.json["action"] == "packed"
    path = Path(run.json["data"]["path"])
    assert path.parent == dest and sha(path) == run.json["data"]["sha256"]
    return path


def test_plesk_skeleton_checks_packs_and_installs(root: Path, tmp_path: Path) -> None:
    tree = new(root, EXT, "plesk", tmp_path / "src" / EXT)
    strict = cli(root, "check", "--strict", str(tree))
    assert strict.rc == 0 and strict.json["data"]["findings"] == [], strict.stdout
    zipped = pack(root, tree, tmp_path / "dist")
    assert zipped.name == f"{EXT}-1.0-1.zip"
    with zipfile.ZipFile(zipped) as zf:
        names = zf.namelist()
    assert "meta.xml" in names and "_meta/icons/128x128.png" in names and names == sorted(names)
    run = cli(root, "install", "--strict", str(zipped))
    assert run.rc == 0, run.stdout + run.stderr
    assert run.json["action"] == "installed"
    assert [h["hook"] for h in run.json["hooks"]] == ["pre-install", "post-install"]
    assert "post-install night-backup: install" in run.json["hooks"][1]["output"]
    psa = root / "usr/local/psa"
    assert (psa / f"admin/plib/modules/{EXT}/library/Settings.php").is_file()
    assert (psa / f"admin/htdocs/modules/{EXT}/index.php").is_file()
    assert leftovers(root) == []


def test_ispmanager_skeleton_round_trip_through_call(root: Path, tmp_path: Path) -> None:
    tree = new(root, ISP, "ispmanager", tmp_path / ISP)
    assert cli(root, "check", "--strict", str(tree)).rc == 0
    zipped = pack(root, tree, tmp_path / "dist")
    assert zipped.name == f"{ISP}-1.0.zip"
    with zipfile.ZipFile(zipped) as zf:
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in zf.infolist()}
    assert modes[f"addon/{ISP}.py"] == 0o755 and modes[f"etc/xml/ispmgr_mod_{ISP}.xml"] == 0o644
    installed = cli(root, "install", "--strict", "--no-restart", str(zipped))
    assert installed.rc == 0, installed.stdout + installed.stderr

    get = cli(root, "call", f"{ISP}.settings")
    assert get.rc == 0 and get.json["verdict"] == "page", get.stdout
    page = xmlsafe.parse(get.json["xml"].encode(), "answer")
    assert page.findtext("greeting") == "Hello"
    assert page.findtext("messages/msg[@name='title']") == f"{ISP} settings"
    ru = cli(root, "call", f"{ISP}.settings", "--lang", "ru")
    assert f"Настройки {ISP}" in ru.json["xml"]

    saved = cli(root, "call", f"{ISP}.settings", "--param", "clicked_button=ok",
                "--param", "greeting=Hi there")
    assert saved.rc == 0 and saved.json["verdict"] == "ok", saved.stdout
    assert (root / f"usr/local/mgr5/var/{ISP}.json").read_text() == '{"greeting": "Hi there"}'
    again = cli(root, "call", f"{ISP}.settings")
    assert xmlsafe.parse(again.json["xml"].encode(), "answer").findtext("greeting") == "Hi there"

    wrong = cli(root, "call", f"{ISP}.settings", "--param", "sok=ok", "--param", "greeting=")
    assert wrong.rc == 0 and wrong.json["verdict"] == "error", wrong.stdout
    error = xmlsafe.parse(wrong.json["xml"].encode(), "answer").find("error")
    assert error is not None and error.get("object") == "greeting"
    assert (root / f"usr/local/mgr5/var/{ISP}.json").read_text() == '{"greeting": "Hi there"}'



@pytest.mark.parametrize("panel", ["plesk", "ispmanager"])
def test_pack_twice_gives_identical_bytes(panel: str, root: Path, tmp_path: Path) -> None:
    name = EXT if panel == "plesk" else ISP
    tree = new(root, name, panel, tmp_path / "tree")
    first = pack(root, tree, tmp_path / "a")
    second = pack(root, tree, tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    # times, group/other bits and junk do not matter; content does
    for path in tree.rglob("*"):
        os.utime(path, (0, 1_000_000_000))
        if path.is_file():
            path.chmod(path.stat().st_mode | 0o020)
    (tree / ".git/objects").mkdir(parents=True)
    (tree / ".git/HEAD").write_text("ref: refs/heads/main\n")
    (tree / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    some = tree / ("meta.xml" if panel == "plesk" else f"etc/xml/ispmgr_mod_{ISP}.xml")
    (some.parent / (some.name + "~")).write_bytes(b"editor backup")
    third = pack(root, tree, tmp_path / "c")
    assert third.read_bytes() == first.read_bytes()
    with zipfile.ZipFile(third) as zf:
        infos = zf.infolist()
    assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos)
    assert all((i.external_attr >> 16) & 0o777 in (0o644, 0o755) for i in infos)
    assert not any(".git" in i.filename or i.filename.endswith("~") or "DS_Store" in i.filename
                   for i in infos)
    some.write_bytes(some.read_bytes() + b"\n")
    assert pack(root, tree, tmp_path / "d").read_bytes() != first.read_bytes()


def test_pack_finds_the_layouts_of_real_repositories(root: Path, tmp_path: Path) -> None:
    plesk = new(root, EXT, "plesk", tmp_path / "p")
    isp = new(root, ISP, "ispmanager", tmp_path / "i")
    reference = {"plesk": pack(root, plesk, tmp_path / "ref-p"), "isp": pack(root, isp, tmp_path / "ref-i")}

    repo = tmp_path / "ext-repo"  # the extension in src/, beside README and tests
    shutil.copytree(plesk, repo / "src")
    (repo / "README.md").write_text("# night backup\n")
    (repo / "tests").mkdir()
    (repo / "tests/SettingsTest.php").write_text("<?php\n")
    assert pack(root, repo, tmp_path / "o1").read_bytes() == reference["plesk"].read_bytes()

    mgr = tmp_path / "mgr-repo"  # the tree under usr/local/mgr5/, hooks and VERSION at the top
    shutil.copytree(isp / "etc", mgr / "usr/local/mgr5/etc")
    shutil.copytree(isp / "addon", mgr / "usr/local/mgr5/addon")
    shutil.copytree(isp / "scripts", mgr / "scripts")
    out = pack(root, mgr, tmp_path / "o2")
    assert out.read_bytes() == reference["isp"].read_bytes()

    flat = tmp_path / "flat-repo"  # ispmgr_mod_NAME.xml and the handler at the top
    flat.mkdir()
    shutil.copy2(isp / f"etc/xml/ispmgr_mod_{ISP}.xml", flat)
    shutil.copy2(isp / f"addon/{ISP}.py", flat)
    shutil.copytree(isp / "scripts", flat / "scripts")
    shutil.copytree(isp / "etc/plugins", flat / "etc/plugins")
    (flat / "docs").mkdir()
    (flat / "docs/notes.md").write_text("not a plugin file\n")
    out = pack(root, flat, tmp_path / "o3")
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
    assert f"etc/xml/ispmgr_mod_{ISP}.xml" in names and f"addon/{ISP}.py" in names
    assert not any(n.startswith("docs/") for n in names), names
    assert out.read_bytes() == reference["isp"].read_bytes()
    assert cli(root, "install", "--no-restart", str(out)).rc == 0


def test_pack_refuses_what_check_refuses_and_writes_nothing(root: Path, tmp_path: Path) -> None:
    tree = new(root, EXT, "plesk", tmp_path / "t")
    (tree / "plib/scripts/post-install.php").write_text("<?php\nexit(\n")
    dest = tmp_path / "dist"
    run = cli(root, "pack", str(tree), "-d", str(dest))
    assert run.rc == 3 and run.json["error"]["details"]["rule"] == "php-syntax"
    assert not dest.exists() or list(dest.iterdir()) == []
    (tree / "plib/scripts/post-install.php").write_text("<?php\nexit(0);\n")
    (tree / "meta.xml").write_text((tree / "meta.xml").read_text().replace(
        "<release>1</release>", "<release>{{RELEASE}}</release>"))
    assert cli(root, "pack", str(tree), "-d", str(dest)).rc == 0
    strict = cli(root, "pack", "--strict", str(tree), "-d", str(tmp_path / "strict"))
    assert strict.rc == 3 and strict.json["error"]["details"]["rule"] == "meta-placeholder"
    assert not (tmp_path / "strict").exists() or list((tmp_path / "strict").iterdir()) == []


def test_new_refuses_bad_names_and_existing_directories(root: Path, tmp_path: Path) -> None:
    bad = cli(root, "new", "My_Ext", "--panel", "plesk", "--dir", str(tmp_path / "x"))
    assert bad.rc == 2 and "meta-id" in bad.json["error"]["message"] and not (tmp_path / "x").exists()
    bad = cli(root, "new", "../evil", "--panel", "ispmanager", "--dir", str(tmp_path / "y"))
    assert bad.rc == 2 and not (tmp_path / "y").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    run = cli(root, "new", "okname", "--panel", "ispmanager", "--dir", str(busy))
    assert run.rc == 2 and sorted(p.name for p in busy.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "root"]  # no scratch left
