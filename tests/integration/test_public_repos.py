"""Public repositories install the way their authors ship them (issue 11), through the CLI.

Working copies carry VCS and editor files, flat ispmanager layouts, plugins one folder
down, several plugins per repository, README/LICENSE at the top.
"""

from __future__ import annotations

import socket
import tarfile
from pathlib import Path

import pytest

from mgr_agent.sandbox.samples import Tree, ispmanager_files, plesk_files, write_dir, write_zip
from mgr_agent.shape import is_junk
from tests.helpers import cli, snapshot

MGR = "usr/local/mgr5"
PLIB = "usr/local/psa/admin/plib/modules/demo-ext"

JUNK: Tree = {
    ".git/HEAD": (b"ref: refs/heads/main\n", 0o644),
    ".git/config": (b"[core]\n", 0o644),
    ".git/objects/ab/cdef0123": (b"x", 0o444),
    ".gitignore": (b"*.pyc\n", 0o644),
    ".gitattributes": (b"* text=auto\n", 0o644),
    ".svn/entries": (b"12\n", 0o644),
    ".hg/store/data": (b"x", 0o644),
    "Thumbs.db": (b"x", 0o644),
    "notes.txt~": (b"old\n", 0o644),
}
JUNK_IN = {  # junk inside folders the panel installs
    "ispmanager": {"addon/.DS_Store": (b"x", 0o644), "addon/.demo.py.swp": (b"x", 0o600),
                   "etc/xml/ispmgr_mod_demo.xml~": (b"<mgrdata/>", 0o644)},
    "plesk": {"htdocs/.DS_Store": (b"x", 0o644), "plib/.index.php.swp": (b"x", 0o600),
              "htdocs/index.php~": (b"<?php\n", 0o644)},
}
DOCS: Tree = {"README.md": (b"# demo\n", 0o644), "LICENSE": (b"MIT\n", 0o644)}


def _tree(panel: str) -> Tree:
    base = ispmanager_files("demo", "1.0") if panel == "ispmanager" else plesk_files("demo-ext", "1.0")
    return {**base, **JUNK, **JUNK_IN[panel], **DOCS}


def _write_tar(tree: Tree, dest: Path) -> Path:
    src = write_dir(tree, dest.with_suffix(".src"))
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(src, arcname="demo-main")  # a code host's wrapping folder
    return dest


def _source(kind: str, tree: Tree, pkgs: Path) -> Path:
    if kind == "zip":
        return write_zip(tree, pkgs / "repo.zip", prefix="demo-main/")
    if kind == "tar":
        return _write_tar(tree, pkgs / "repo.tar.gz")
    path = write_dir(tree, pkgs / "checkout")
    # a working copy's .git/ may hold a socket (git's fsmonitor): never looked into
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path / ".git/fsmonitor--daemon.ipc"))
    sock.close()
    return path


@pytest.mark.parametrize("kind", ["zip", "tar", "dir"])
@pytest.mark.parametrize("panel", ["ispmanager", "plesk"])
def test_vcs_and_editor_junk_never_reaches_the_panel(root: Path, pkgs: Path, panel: str,
                                                     kind: str) -> None:
    tree = _tree(panel)
    junk = sorted(n for n in tree if is_junk(n))
    assert len(junk) == len(JUNK) + 3
    src = _source(kind, tree, pkgs)
    run = cli(root, "install", str(src), "--no-restart")
    assert run.rc == 0, (run.stdout, run.stderr)
    installed = [p for p in snapshot(root) if is_junk(p)]
    assert installed == [], "junk reached the panel tree"
    skipped = run.json["plan"]["skipped"]
    prefix = "" if kind == "dir" else "demo-main/"
    expected = [prefix + n for n in junk]
    if kind == "dir":
        expected.append(".git/fsmonitor--daemon.ipc")
    assert skipped["vcs"] == sorted(expected)
    assert skipped["not_installed"] == ["LICENSE", "README.md"]
    named = [w for w in run.json["warnings"] if any(n.rsplit("/", 1)[-1] in w for n in junk)
             or "README" in w or "LICENSE" in w]
    assert named == [], "one summary, not a warning per file"
    assert any(f"skipped {len(expected)} VCS/editor file(s)" in n for n in run.json["notes"])

    text = cli(root, "check", str(src), as_json=False)
    assert text.rc == 0, text.stderr
    summary = [line for line in text.stdout.splitlines() if "VCS/editor" in line]
    assert len(summary) == 1 and f"skipped {len(expected)} VCS/editor file(s)" in summary[0]
    assert ".git/" in summary[0] and "HEAD" not in summary[0], "a junk folder is named once"
    not_installed = [line for line in text.stdout.splitlines() if "not installed" in line]
    assert len(not_installed) == 1 and "2 file(s)" in not_installed[0], text.stdout


def test_junk_does_not_change_the_content_hash(root: Path, pkgs: Path) -> None:
    clean = cli(root, "check", str(write_zip(plesk_files(), pkgs / "clean.zip")))
    dirty = cli(root, "check", str(write_zip({**plesk_files(), **JUNK}, pkgs / "dirty.zip")))
    assert clean.json["data"]["content_hash"] == dirty.json["data"]["content_hash"]


# ------------------------------------------------------------------ flat ispmanager layout
FLAT_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<mgrdata>
  <handler name="flat.py" type="xml"><func name="flat.settings"/></handler>
  <handler name="flat/cgi.sh" type="cgi"><func name="flat.cgi"/></handler>
</mgrdata>
"""


def _flat() -> Tree:
    return {
        "ispmgr_mod_flat.xml": (FLAT_XML, 0o644),
        "flat.py": (b"#!/usr/bin/env python3\nprint('<doc/>')\n", 0o644),
        "flat/cgi.sh": (b"#!/bin/sh\necho\n", 0o644),
        "flat/lib.sh": (b"# helper beside a handler\n", 0o644),
        "docs/screenshot.txt": (b"x\n", 0o644),
        **DOCS, ".gitignore": (b"*\n", 0o644),
    }


@pytest.mark.parametrize("kind", ["dir", "zip"])
def test_flat_ispmanager_layout_installs_xml_and_handlers(root: Path, pkgs: Path, kind: str) -> None:
    tree = _flat()
    src = write_dir(tree, pkgs / "flat") if kind == "dir" else write_zip(tree, pkgs / "flat.zip",
                                                                          prefix="flat-main/")
    run = cli(root, "install", str(src), "--no-restart")
    assert run.rc == 0, (run.stdout, run.stderr)
    assert run.json["name"] == "flat" and run.json["panel"] == "ispmanager"
    installed = {p for p, (t, _, _) in snapshot(root).items() if t == "file" and p.startswith(MGR)}
    assert installed == {f"{MGR}/etc/xml/ispmgr_mod_flat.xml", f"{MGR}/addon/flat.py",
                         f"{MGR}/addon/flat/cgi.sh", f"{MGR}/addon/flat/lib.sh"}
    assert (root / MGR / "addon/flat.py").stat().st_mode & 0o777 == 0o755
    assert (root / MGR / "addon/flat/cgi.sh").stat().st_mode & 0o777 == 0o755
    assert run.json["plan"]["skipped"]["not_installed"] == ["LICENSE", "README.md",
                                                            "docs/screenshot.txt"]
    assert any(n.startswith("not installed: 3 file(s)") for n in run.json["notes"])


def test_flat_layout_missing_handler_is_named(root: Path, pkgs: Path) -> None:
    tree = _flat()
    del tree["flat/cgi.sh"]
    before = snapshot(root)
    run = cli(root, "install", str(write_dir(tree, pkgs / "flat")))
    assert run.rc == 3
    err = run.json["error"]
    assert err["details"]["rule"] == "handler-missing"
    assert "'flat/cgi.sh' is missing" in err["message"] and "ispmgr_mod_flat.xml" in err["message"]
    assert snapshot(root) == before and not (root / "var/lib/mgr-agent").exists()


# ------------------------------------------------------------------ detection errors
def test_plesk_extension_one_level_down_in_a_folder(root: Path, pkgs: Path) -> None:
    repo = write_dir({**{f"src/{k}": v for k, v in plesk_files().items()}, **DOCS}, pkgs / "repo")
    for command in ("install", "check"):
        run = cli(root, command, str(repo), as_json=False)
        assert run.rc == 3
        assert f"the folder {repo} holds no plugin at its top, but a plesk package in src/" in run.stderr
        assert f"hint: install that folder: mgr-agent install {repo}/src/" in run.stderr
        assert "archive root" not in run.stderr
        assert "mgr-agent check" not in run.stderr, "check does not hint to run check"
    assert not (root / "var/lib/mgr-agent").exists()


def test_ispmanager_tree_one_level_down_in_an_archive(root: Path, pkgs: Path) -> None:
    tree = {f"plugin/{MGR}/{k}": v for k, v in ispmanager_files().items()}
    zipped = write_zip({**tree, **DOCS}, pkgs / "repo.zip", prefix="repo-main/")
    run = cli(root, "install", str(zipped))
    assert run.rc == 3
    err = run.json["error"]
    assert "the archive repo.zip holds no plugin at its top, but a ispmanager package in " \
           "repo-main/plugin/" in err["message"]
    assert err["hint"] == "unpack it, then install that folder: mgr-agent install DIR/repo-main/plugin/"


def test_repository_of_several_plugins_names_each_folder(root: Path, pkgs: Path) -> None:
    tree = {**{f"plugins/one/{k}": v for k, v in ispmanager_files("one").items()},
            **{f"plugins/two/{k}": v for k, v in plesk_files("two").items()}, **DOCS}
    repo = write_dir(tree, pkgs / "many")
    run = cli(root, "install", str(repo))
    assert run.rc == 3
    err = run.json["error"]
    assert "holds 2 plugins, one per folder: plugins/one/ (ispmanager), plugins/two/ (plesk)" \
        in err["message"]
    assert f"mgr-agent install {repo}/plugins/one/" in err["hint"]
    assert err["details"]["found"] == ["plugins/one/", "plugins/two/"]


def test_nothing_recognisable_says_what_is_expected(root: Path, pkgs: Path) -> None:
    repo = write_dir(DOCS, pkgs / "empty-repo")
    run = cli(root, "check", str(repo))
    assert run.rc == 3
    msg = run.json["error"]["message"]
    assert msg.startswith(f"the folder {repo} does not hold a plugin for either panel at its top")
    assert "ispmgr_mod_NAME.xml at the top" in msg and "archive root" not in msg
    assert "mgr-agent check" not in run.json["error"]["hint"]


# ------------------------------------------------------------------ hook output
def test_multi_line_hook_output_keeps_its_lines(root: Path, pkgs: Path) -> None:
    body = 'printf "first\\n  indented by two\\n\\tthird\\nlast\\n"'
    src = write_zip(ispmanager_files("demo", "1.0", post_install=body), pkgs / "hook.zip")
    run = cli(root, "install", str(src), "--no-restart", as_json=False)
    assert run.rc == 0, run.stderr
    lines = run.stdout.splitlines()
    at = lines.index("  hook post-install: exit 0")
    assert lines[at + 1:at + 6] == ["    post-install install: demo 1.0", "    first",
                                    "      indented by two", "    \tthird", "    last"]
