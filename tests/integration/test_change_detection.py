"""Change detection without reading unchanged content (issue 13, docs/transactions.md
"Change detection").

On an upgrade from a zip, an entry whose CRC-32, size and mode equal the installed
manifest's is taken to be the installed content: it is never inflated, and its file on
disk, when its size, inode and mtime are as the agent left them, is never read either.
Everything else (tar and directory sources, manifests written before this, files whose
stat changed) is hashed as before.  ``verify`` always hashes.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from mgr_agent.sandbox import samples
from mgr_agent.sandbox.samples import Tree
from tests.helpers import cli, leftovers, snapshot
from tests.reliability.random_kill import bulk_trees

MGR = "usr/local/mgr5"
STRACE = shutil.which("strace")

# The state database as the agent wrote it before CRC-32 and stat columns existed (the
# SCHEMA of state.py at 6316521, verbatim): an old state.db must be migrated.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS packages (
    panel TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, release TEXT NOT NULL,
    content_hash TEXT NOT NULL, archive TEXT NOT NULL, installed_at REAL NOT NULL,
    tx TEXT NOT NULL, meta TEXT NOT NULL, archive_sha TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (panel, name));
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, panel TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL,
    size INTEGER NOT NULL, mode INTEGER NOT NULL, kind TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS files_pkg ON files (panel, name);
CREATE TABLE IF NOT EXISTS dirs (
    path TEXT NOT NULL, panel TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (path, panel, name));
CREATE TABLE IF NOT EXISTS diversions (
    path TEXT PRIMARY KEY, panel TEXT NOT NULL, name TEXT NOT NULL, stored TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kept (
    panel TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, release TEXT NOT NULL,
    content_hash TEXT NOT NULL, archive TEXT NOT NULL, kept_at REAL NOT NULL, tx TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    tx TEXT PRIMARY KEY, op TEXT NOT NULL, panel TEXT, name TEXT, from_version TEXT,
    to_version TEXT, started REAL NOT NULL, ended REAL, status TEXT NOT NULL, action TEXT,
    detail TEXT NOT NULL DEFAULT '{}');
"""


def _root(path: Path) -> Path:
    for rel in ("usr/local/psa", f"{MGR}/etc", "var/lib"):
        (path / rel).mkdir(parents=True)
    (path / "usr/local/psa/version").write_text("18.0.60 Debian 12.0 1800240311.09\n")
    return path


@pytest.fixture(scope="module")
def trees() -> tuple[Tree, Tree]:
    return bulk_trees("ispmanager", files=40)


def _same(v1: Tree, v2: Tree) -> list[str]:
    """Package names whose content and mode v2 ships unchanged (plugin files, not hooks)."""
    return sorted(n for n in v2 if n in v1 and v1[n] == v2[n] and not n.startswith("scripts/"))


def _corrupt(zip_path: Path, name: str) -> None:
    """Garble the compressed data of entry ``name`` in place; its central directory record
    (CRC-32, sizes) stays as it was, so only reading the entry can tell."""
    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo(name)
    with open(zip_path, "r+b") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(fh.read(2), "little") for _ in range(2))
        start = info.header_offset + 30 + name_len + extra_len
        fh.seek(start)
        data = fh.read(info.compress_size)
        fh.seek(start)
        fh.write(bytes(b ^ 0x5A for b in data))


def _installed(root: Path, name: str) -> Path:
    return root / MGR / name


def test_unchanged_entries_are_never_inflated(tmp_path: Path, trees: tuple[Tree, Tree]) -> None:
    v1, v2 = trees
    same = [n for n in _same(v1, v2) if not n.endswith(".xml")]
    assert len(same) >= 10
    victim = same[len(same) // 2]
    p1 = samples.write_zip(v1, tmp_path / "v1.zip")
    bad = samples.write_zip(v2, tmp_path / "v2-garbled.zip")
    _corrupt(bad, victim)

    # read in full (nothing installed), the garbled entry is refused
    fresh = _root(tmp_path / "fresh")
    done = cli(fresh, "install", str(bad))
    assert done.rc == 3, done.stdout + done.stderr
    assert done.json["error"]["details"]["rule"] == "corrupt-data"
    assert done.json["error"]["details"]["entry"] == victim

    # on an upgrade from v1 the entry is v1's content by its CRC-32 and size: never read
    root = _root(tmp_path / "root")
    assert cli(root, "install", str(p1)).rc == 0
    done = cli(root, "install", str(bad))
    assert done.rc == 0, done.stdout + done.stderr
    summary = done.json["plan"]["summary"]
    assert summary["unchanged"] == len(_same(v1, v2))
    assert _installed(root, victim).read_bytes() == v1[victim][0]

    # the result is exactly what the intact v2 gives
    reference = _root(tmp_path / "reference")
    assert cli(reference, "install", str(p1)).rc == 0
    assert cli(reference, "install", str(samples.write_zip(v2, tmp_path / "v2.zip"))).rc == 0
    assert snapshot(root) == snapshot(reference)
    assert cli(root, "verify").rc == 0  # the sha256 manifest agrees with every file
    assert leftovers(root) == []


@pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt-get install strace)")
def test_unmodified_files_on_disk_are_not_opened(tmp_path: Path, trees: tuple[Tree, Tree]) -> None:
    v1, v2 = trees
    root = _root(tmp_path / "root")
    assert cli(root, "install", str(samples.write_zip(v1, tmp_path / "v1.zip"))).rc == 0
    log = tmp_path / "strace.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MGR_AGENT_")}
    done = subprocess.run(
        [str(STRACE), "-f", "-e", "trace=openat,open", "-o", str(log), sys.executable, "-m",
         "mgr_agent", "--root", str(root), "install", str(samples.write_zip(v2, tmp_path / "v2.zip")),
         "--json"], env=env, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 and "ptrace" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stdout + done.stderr
    opened = set(re.findall(r'open(?:at)?\((?:AT_FDCWD|\d+), "([^"]+)"', log.read_text()))
    same = {str(_installed(root, n)) for n in _same(v1, v2)}
    changed = {str(_installed(root, n)) for n in v2
               if n in v1 and v1[n] != v2[n] and not n.startswith("scripts/")}
    assert same and changed
    assert not same & opened, sorted(same & opened)[:5]
    # the replaced files were written: staged next to their targets, or inside the staged
    # tree of a directory switched whole (docs/transactions.md)
    staged = [p for p in opened if "/.mga-" in p]
    for path in changed:
        head, _, base = path.rpartition("/")
        assert any(q.endswith("/" + base) or q.rpartition("/")[0] == head for q in staged), path


def test_edits_are_found_by_stat_then_content(tmp_path: Path, trees: tuple[Tree, Tree]) -> None:
    """An edit of the same size changes the mtime: found, and its content saved.  A file
    only touched (mtime changed, content the same) is hashed and found unchanged."""
    v1, v2 = trees
    same = _same(v1, v2)
    edited, touched = same[0], same[1]
    root = _root(tmp_path / "root")
    assert cli(root, "install", str(samples.write_zip(v1, tmp_path / "v1.zip"))).rc == 0
    path = _installed(root, edited)
    original = path.read_bytes()
    with open(path, "r+b") as fh:  # in place: same inode, same size, new mtime
        fh.write(bytes([original[0] ^ 1]))
    st = os.stat(path)
    os.utime(_installed(root, touched), ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    done = cli(root, "install", str(samples.write_zip(v2, tmp_path / "v2.zip")))
    assert done.rc == 0, done.stdout + done.stderr
    modified = {m["path"]: m["then"] for m in done.json["plan"]["modified"]}
    assert modified == {f"{MGR}/{edited}": "kept"}
    assert path.read_bytes()[1:] == original[1:] and path.read_bytes() != original
    assert _installed(root, touched).read_bytes() == v1[touched][0]


def test_verify_hashes_even_when_the_stat_is_unchanged(tmp_path: Path,
                                                       trees: tuple[Tree, Tree]) -> None:
    """The sha256 manifest stays the reference: an edit that keeps size, inode and mtime
    (made on purpose) is still found by ``verify``."""
    v1, _ = trees
    name = _same(*trees)[0]
    root = _root(tmp_path / "root")
    assert cli(root, "install", str(samples.write_zip(v1, tmp_path / "v1.zip"))).rc == 0
    path = _installed(root, name)
    st = os.stat(path)
    data = path.read_bytes()
    with open(path, "r+b") as fh:
        fh.write(bytes([data[0] ^ 1]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == st.st_mtime_ns and os.stat(path).st_ino == st.st_ino
    done = cli(root, "verify")
    assert done.rc == 16, done.stdout + done.stderr
    assert [f["path"] for f in done.json["data"]["files"]] == [f"{MGR}/{name}"]


def _write_tar(tree: Tree, dest: Path) -> Path:
    with tarfile.open(dest, "w") as tf:
        for name, (data, mode) in sorted(tree.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return dest


@pytest.mark.parametrize("kind", ["tar", "dir"])
def test_sources_without_crc_are_hashed(tmp_path: Path, trees: tuple[Tree, Tree], kind: str) -> None:
    """Tar archives and directories carry no CRC-32: every entry is hashed, and the
    upgrade gives exactly what the zip gives."""
    v1, v2 = trees
    if kind == "tar":
        p1, p2 = _write_tar(v1, tmp_path / "v1.tar"), _write_tar(v2, tmp_path / "v2.tar")
    else:
        p1, p2 = samples.write_dir(v1, tmp_path / "v1"), samples.write_dir(v2, tmp_path / "v2")
    root = _root(tmp_path / "root")
    assert cli(root, "install", str(p1)).rc == 0
    done = cli(root, "install", str(p2))
    assert done.rc == 0, done.stdout + done.stderr
    assert done.json["plan"]["summary"]["unchanged"] == len(_same(v1, v2))
    reference = _root(tmp_path / "reference")
    assert cli(reference, "install", str(samples.write_zip(v1, tmp_path / "v1.zip"))).rc == 0
    assert cli(reference, "install", str(samples.write_zip(v2, tmp_path / "v2.zip"))).rc == 0
    assert snapshot(root) == snapshot(reference)
    with sqlite3.connect(root / "var/lib/mgr-agent/state.db") as db:
        rows = db.execute("SELECT crc32, ino FROM files").fetchall()
    assert rows and all(crc is None and ino for crc, ino in rows)


def _downgrade_schema(db_file: Path) -> None:
    """Rewrite ``db_file`` in the schema of the agent before this change, same rows."""
    old = db_file.with_name("old.db")
    with sqlite3.connect(old) as db:
        db.executescript(OLD_SCHEMA)
        db.execute("ATTACH DATABASE ? AS cur", (str(db_file),))
        for table in ("packages", "dirs", "diversions", "kept", "history"):
            db.execute(f"INSERT INTO {table} SELECT * FROM cur.{table}")
        db.execute("INSERT INTO files SELECT path, panel, name, sha256, size, mode, kind FROM cur.files")
        db.commit()
        db.execute("DETACH DATABASE cur")
    db_file.unlink()
    old.rename(db_file)


def test_state_database_of_the_previous_agent_is_migrated(tmp_path: Path,
                                                          trees: tuple[Tree, Tree]) -> None:
    v1, v2 = trees
    same = _same(v1, v2)
    root = _root(tmp_path / "root")
    assert cli(root, "install", str(samples.write_zip(v1, tmp_path / "v1.zip"))).rc == 0
    db_file = root / "var/lib/mgr-agent/state.db"
    _downgrade_schema(db_file)
    with sqlite3.connect(db_file) as db:
        assert [r[1] for r in db.execute("PRAGMA table_info(files)")] == [
            "path", "panel", "name", "sha256", "size", "mode", "kind"]
    # an admin's same-size edit: without a recorded stat, the file is hashed and found
    path = _installed(root, same[0])
    data = path.read_bytes()
    path.write_bytes(bytes([data[0] ^ 1]) + data[1:])

    listed = cli(root, "list")  # a read-only command reads the old database
    assert listed.rc == 0 and [p["version"] for p in listed.json["data"]] == ["1.0"]
    done = cli(root, "install", str(samples.write_zip(v2, tmp_path / "v2.zip")))
    assert done.rc == 0, done.stdout + done.stderr
    assert done.json["plan"]["summary"]["unchanged"] == len(same)
    assert {m["path"]: m["then"] for m in done.json["plan"]["modified"]} == {f"{MGR}/{same[0]}": "kept"}
    with sqlite3.connect(db_file) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = db.execute("SELECT path, crc32, ino, mtime_ns FROM files").fetchall()
    assert len(rows) == len([n for n in v2 if not n.startswith("scripts/")])
    by_path = {r[0]: r[1:] for r in rows}
    assert all(crc is not None for crc, _, _ in by_path.values())
    # recorded as the files are now, except the admin's edit (unknown: hashed next time)
    for name in v2:
        if name.startswith("scripts/"):
            continue
        _, ino, mtime_ns = by_path[f"{MGR}/{name}"]
        if name == same[0]:
            assert ino == 0
        else:
            st = os.stat(_installed(root, name))
            assert (ino, mtime_ns) == (st.st_ino, st.st_mtime_ns), name
    assert cli(root, "uninstall", "bulk").rc == 0
    assert leftovers(root) == []


@pytest.mark.skipif(shutil.which("php") is None, reason="needs php")
def test_unchanged_hooks_are_not_linted_again(tmp_path: Path) -> None:
    """``php -l`` runs on the hooks an upgrade changes; the others were linted when the
    installed version was, so an upgrade that changes no hook starts no linting php."""
    log = tmp_path / "php.log"
    wrapper = tmp_path / "php"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {shutil.which("php")} "$@"\n')
    wrapper.chmod(0o755)
    root = _root(tmp_path / "root")
    (root / "etc/mgr-agent").mkdir(parents=True)
    (root / "etc/mgr-agent/agent.toml").write_text(f'[hooks]\nphp = "{wrapper}"\n')

    def lints() -> int:
        return sum(1 for line in log.read_text().splitlines() if line.split()[-1:] == ["-l"])

    v1 = samples.plesk_files("lint-ext", "1.0")
    assert cli(root, "install", str(samples.write_zip(v1, tmp_path / "v1.zip"))).rc == 0
    assert lints() == 3  # pre-install, post-install, pre-uninstall
    v2 = {**v1, "htdocs/new.txt": (b"new\n", 0o644)}
    v2["meta.xml"] = (v1["meta.xml"][0].replace(b"1.0", b"1.1"), v1["meta.xml"][1])
    assert cli(root, "install", str(samples.write_zip(v2, tmp_path / "v2.zip"))).rc == 0
    assert lints() == 3, log.read_text()
    broken = {**v2, "plib/scripts/post-install.php": (b"<?php\nexit(0\n", 0o644)}
    broken["meta.xml"] = (v1["meta.xml"][0].replace(b"1.0", b"1.2"), v1["meta.xml"][1])
    done = cli(root, "install", str(samples.write_zip(broken, tmp_path / "v3.zip")))
    assert done.rc == 3 and done.json["error"]["details"]["rule"] == "php-syntax", done.stdout
    assert lints() == 4  # the changed post-install alone
