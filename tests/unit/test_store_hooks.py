"""Uninstall opens the stored package only for its hook (store.open_stored): the zip's
central directory is read in one pass (zipread.directory), the hook's entry is found from
the entry names (Panel.hook_entry) and only that member is read.  Checked here on real
zips: the directory reader against zipfile, the hook found as a full load finds it, and
whatever the quick reader cannot judge opened in full."""

from __future__ import annotations

import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from mgr_agent import zipread
from mgr_agent.engine import Engine
from mgr_agent.errors import InvalidPackage, UnsafeArchive
from mgr_agent.layout import Layout
from mgr_agent.package import Package, load
from mgr_agent.sandbox.samples import ispmanager_files, plesk_files, write_zip
from mgr_agent.state import Installed
from mgr_agent.store import open_stored

HOOKS = ("pre-install", "post-install", "pre-uninstall")
Tree = dict[str, tuple[bytes, int]]


def _store(root: Path, zipped: Path, panel: str, name: str, version: str = "1.0") -> Installed:
    """``zipped`` put in the store of ``root`` as the installed version of ``name``."""
    archives = Layout.at(root).archives_dir
    archives.mkdir(parents=True, exist_ok=True)
    (archives / "stored.zip").write_bytes(zipped.read_bytes())
    return Installed(panel, name, version, "1" if panel == "plesk" else "", "c" * 64,
                     "stored.zip", 0.0, "tx", {"id": name})


def _open(root: Path, installed: Installed, hook: str = "pre-uninstall",
          force: bool = False) -> tuple[Package | None, list[str]]:
    warnings: list[str] = []
    return open_stored(Engine(Layout.at(root)).ctx, installed, warnings, force, hook), warnings


SAMPLES = [("ispmanager", "demo", ispmanager_files("demo", "1.0"), ""),
           ("ispmanager", "demo", ispmanager_files("demo", "1.0"), "demo-main/"),
           ("plesk", "demo-ext", plesk_files("demo-ext", "1.0"), ""),
           ("plesk", "demo-ext", plesk_files("demo-ext", "1.0"), "demo-ext-main/")]
IDS = ["isp", "isp-wrapped", "plesk", "plesk-wrapped"]


@pytest.mark.parametrize(("panel", "name", "tree", "prefix"), SAMPLES, ids=IDS)
def test_the_hook_is_found_as_a_full_load_finds_it(tmp_path: Path, panel: str, name: str,
                                                   tree: Tree, prefix: str) -> None:
    zipped = write_zip(tree, tmp_path / "p.zip", prefix=prefix)
    root = tmp_path / "root"
    full = load(zipped, Engine(Layout.at(root)).panels, verify=False)
    try:
        assert sorted(full.hooks) == sorted(HOOKS)
        installed = _store(root, zipped, panel, name)
        for hook in HOOKS:
            target = next(p for p in Engine(Layout.at(root)).panels if p.name == panel)
            assert full.hooks[hook] == prefix + target.hook_entry(hook)
            pkg, warnings = _open(root, installed, hook)
            assert pkg is not None and warnings == []
            try:
                assert pkg.hooks == {hook: full.hooks[hook]}
                assert (pkg.name, pkg.version, pkg.prefix) == (name, "1.0", prefix)
                entry = full.hooks[hook]
                assert b"".join(pkg.source.chunks(entry)) == b"".join(full.source.chunks(entry))
                assert pkg.source.head(entry, 7) == full.source.head(entry, 7)
                assert list(pkg.source.entries) == [entry]  # nothing else is listed or read
            finally:
                pkg.close()
    finally:
        full.close()


@pytest.mark.parametrize(("panel", "name", "tree", "prefix"), SAMPLES, ids=IDS)
def test_no_hook_means_nothing_opened(tmp_path: Path, panel: str, name: str, tree: Tree,
                                      prefix: str) -> None:
    hook_entry = "plib/scripts/pre-uninstall.php" if panel == "plesk" else "scripts/pre-uninstall"
    del tree[hook_entry]
    root = tmp_path / "root"
    installed = _store(root, write_zip(tree, tmp_path / "p.zip", prefix=prefix), panel, name)
    assert _open(root, installed) == (None, [])
    pkg, _ = _open(root, installed, "pre-install")  # the others are still found
    assert pkg is not None
    pkg.close()


def test_an_entry_named_like_a_hook_elsewhere_is_not_the_hook(tmp_path: Path) -> None:
    """Only the entry the panel names is the hook, as in a full load: not one in another
    folder, not one above the package's folder."""
    tree = plesk_files("demo-ext", "1.0")
    del tree["plib/scripts/pre-uninstall.php"]
    tree["htdocs/scripts/pre-uninstall.php"] = (b"<?php\n", 0o644)
    tree["plib/scripts/pre-uninstall.php.bak"] = (b"<?php\n", 0o644)
    root = tmp_path / "root"
    installed = _store(root, write_zip(tree, tmp_path / "p.zip"), "plesk", "demo-ext")
    assert _open(root, installed) == (None, [])


def test_junk_does_not_hide_the_wrapping_folder(tmp_path: Path) -> None:
    """A VCS file beside the wrapping folder is not part of the package, as at install."""
    zipped = write_zip(plesk_files("demo-ext", "1.0"), tmp_path / "p.zip", prefix="demo-ext-main/")
    with zipfile.ZipFile(zipped, "a") as zf:
        zf.writestr(".gitignore", b"*.swp\n")
        zf.writestr("demo-ext-main/.git/HEAD", b"ref: refs/heads/main\n")
    root = tmp_path / "root"
    pkg, _ = _open(root, _store(root, zipped, "plesk", "demo-ext"))
    assert pkg is not None and pkg.hooks == {"pre-uninstall": "demo-ext-main/plib/scripts/pre-uninstall.php"}
    pkg.close()


def test_a_hash_version_is_the_installed_one(tmp_path: Path) -> None:
    """An ispmanager plugin without a version is known by one made from its content
    hash, which is not in the archive: the hook's package carries the installed one,
    also when the archive is opened in full (a tar)."""
    tree = ispmanager_files("demo", "1.0")
    tree = {n: v for n, v in tree.items() if n != "VERSION" and not n.startswith("etc/plugins/")}
    root = tmp_path / "root"
    installed = _store(root, write_zip(tree, tmp_path / "p.zip"), "ispmanager", "demo",
                       version="0+0123456789ab")
    pkg, _ = _open(root, installed)
    assert pkg is not None and pkg.version == "0+0123456789ab"
    pkg.close()
    tarball = tmp_path / "p.tar"
    with tarfile.open(tarball, "w") as tf:
        for name, (data, mode) in tree.items():
            (tmp_path / "t" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "t" / name).write_bytes(data)
            (tmp_path / "t" / name).chmod(mode)
            tf.add(tmp_path / "t" / name, name)
    (Layout.at(root).archives_dir / "stored.tar").write_bytes(tarball.read_bytes())
    pkg, _ = _open(root, Installed("ispmanager", "demo", "0+0123456789ab", "", "c" * 64,
                                   "stored.tar", 0.0, "tx", {}))
    assert pkg is not None and pkg.version == "0+0123456789ab"
    assert pkg.hooks["pre-uninstall"] == "scripts/pre-uninstall"
    pkg.close()


def _damage(zipped: Path, entry: str, at: int, value: bytes) -> None:
    """Overwrite bytes of ``entry``'s local record (0: its signature, >30: its data)."""
    with zipfile.ZipFile(zipped) as zf:
        info = zf.getinfo(entry)
        start = info.header_offset + (at if at < 30 else 30 + len(info.orig_filename)
                                      + len(info.extra) + at - 30)
    data = bytearray(zipped.read_bytes())
    data[start:start + len(value)] = value
    zipped.write_bytes(bytes(data))


@pytest.mark.parametrize(("at", "value", "why"), [(0, b"\0\0\0\0", "Bad magic number"),
                                                   (31, b"\xff\xff\xff", "")],
                         ids=["local-header", "data"])
def test_a_damaged_hook_is_told_before_anything_changes(tmp_path: Path, at: int, value: bytes,
                                                        why: str) -> None:
    tree = plesk_files("demo-ext", "1.0")
    tree["plib/scripts/pre-uninstall.php"] = (b"<?php\necho 'bye';\n" * 50, 0o644)
    root = tmp_path / "root"
    installed = _store(root, write_zip(tree, tmp_path / "p.zip"), "plesk", "demo-ext")
    _damage(Layout.at(root).archives_dir / "stored.zip", "plib/scripts/pre-uninstall.php", at,
            value)
    with pytest.raises(UnsafeArchive) as refused:
        _open(root, installed)
    assert refused.value.details["rule"] == "corrupt-data"
    assert refused.value.message.startswith("entry 'plib/scripts/pre-uninstall.php': cannot be read")
    assert why in refused.value.message
    assert "`mgr-agent uninstall demo-ext --force` removes it without running its pre-uninstall" \
        in (refused.value.hint or "")
    pkg, warnings = _open(root, installed, force=True)
    assert pkg is None
    assert warnings == [f"{Layout.at(root).archives_dir / 'stored.zip'}: cannot be read "
                        f"({refused.value.message}); the pre-uninstall hook was not run (--force)"]


def test_other_damage_is_not_looked_for(tmp_path: Path) -> None:
    """Only the hook's member is read: damage elsewhere in the stored zip (it is deleted
    with the plugin) does not keep the hook from running."""
    root = tmp_path / "root"
    installed = _store(root, write_zip(plesk_files("demo-ext", "1.0"), tmp_path / "p.zip"),
                       "plesk", "demo-ext")
    _damage(Layout.at(root).archives_dir / "stored.zip", "meta.xml", 0, b"\0\0\0\0")
    pkg, warnings = _open(root, installed)
    assert pkg is not None and warnings == []
    pkg.close()


def test_what_the_quick_reader_cannot_judge_is_opened_in_full(tmp_path: Path) -> None:
    """A truncated or extended zip gives the messages of a full open; a hook compressed
    with bzip2 (which only zipfile reads) is read through a full open."""
    root = tmp_path / "root"
    whole = write_zip(plesk_files("demo-ext", "1.0"), tmp_path / "p.zip").read_bytes()
    installed = _store(root, tmp_path / "p.zip", "plesk", "demo-ext")
    stored = Layout.at(root).archives_dir / "stored.zip"
    stored.write_bytes(whole[:-30])
    with pytest.raises(UnsafeArchive, match=r"the zip archive is truncated") as cut:
        _open(root, installed)
    assert cut.value.details["rule"] == "truncated"
    stored.write_bytes(whole + b"garbage")
    with pytest.raises(UnsafeArchive, match=r"\[rule: zip-trailing-data\]"):
        _open(root, installed)
    stored.write_bytes(b"not a zip at all")
    with pytest.raises(InvalidPackage, match="neither a zip nor a tar"):
        _open(root, installed)

    tree = plesk_files("demo-ext", "1.0")
    with zipfile.ZipFile(stored, "w") as zf:
        for name, (data, _) in sorted(tree.items()):
            method = zipfile.ZIP_BZIP2 if name.endswith("pre-uninstall.php") else zipfile.ZIP_DEFLATED
            zf.writestr(name, data, compress_type=method)
    pkg, _ = _open(root, installed)
    assert pkg is not None
    try:
        entry = pkg.hooks["pre-uninstall"]
        assert b"".join(pkg.source.chunks(entry)) == tree["plib/scripts/pre-uninstall.php"][0]
    finally:
        pkg.close()


# ------------------------------------------------------------------ zipread.directory
def _same_as_zipfile(path: Path) -> zipread.Directory:
    listing = zipread.directory(path)
    assert listing is not None
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        assert listing.names == [i.filename for i in infos]
        assert listing.dirs == {i.filename for i in infos if i.is_dir() or (  # as the archive rules
            i.create_system == 3 and stat.S_ISDIR(i.external_attr >> 16))}
        for info in infos:
            listed = listing.listed(info.filename)
            assert listed is not None
            assert listed.member == zipread.member(info)
            assert (listed.size, listed.flags) == (info.file_size, info.flag_bits)
            assert listed.mode == (info.external_attr >> 16 if info.create_system == 3 else 0)
    return listing


def test_directory_reads_what_zipfile_reads(tmp_path: Path) -> None:
    path = write_zip(plesk_files("demo-ext", "1.0"), tmp_path / "p.zip", prefix="w/")
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(zipfile.ZipInfo("w/empty/"), b"")
        zf.writestr("w/htdocs/naïve-日本.txt", "ü".encode() * 100)  # flagged UTF-8
        zf.writestr("w/stored.bin", b"x" * 1000, compress_type=zipfile.ZIP_STORED)
        zf.comment = b"a comment after the central directory"
    listing = _same_as_zipfile(path)
    assert "w/htdocs/naïve-日本.txt" in listing.names and "w/empty/" in listing.dirs


def test_a_directory_by_its_mode_alone(tmp_path: Path) -> None:
    path = tmp_path / "d.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("folder")
        info.create_system = 3
        info.external_attr = 0o040755 << 16
        zf.writestr(info, b"")
        zf.writestr("file", b"data")
    assert _same_as_zipfile(path).dirs == {"folder"}


def test_an_unflagged_utf8_name_reads_as_utf8(tmp_path: Path) -> None:
    """As the archive rules take it (zipfile would say cp437); a name that is not UTF-8
    is left to zipfile and the rules."""
    path = tmp_path / "u.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("placeholder-a", b"1")
        zf.writestr("placeholder-b", b"2")
    data = path.read_bytes()
    path.write_bytes(data.replace(b"placeholder-a", "plåceholder-".encode()))  # as long
    listing = zipread.directory(path)
    assert listing is not None and listing.names[0] == "plåceholder-"
    path.write_bytes(data.replace(b"placeholder-a", b"pl\xe5ceholder-a"))
    assert zipread.directory(path) is None


def test_directory_says_none_when_unsure(tmp_path: Path) -> None:
    whole = write_zip(ispmanager_files("demo", "1.0"), tmp_path / "p.zip").read_bytes()
    cases = {"cut": whole[:-30], "trailing": whole + b"garbage", "prepended": b"#!/bin/sh\n" + whole,
             "not-a-zip": b"hello", "empty-file": b""}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert zipread.directory(tmp_path / name) is None, name
    with zipfile.ZipFile(tmp_path / "empty.zip", "w"):
        pass
    assert zipread.directory(tmp_path / "empty.zip") is None
    with pytest.warns(UserWarning, match="Duplicate name"), \
            zipfile.ZipFile(tmp_path / "dup.zip", "w") as zf:
        zf.writestr("a", b"1")
        zf.writestr("a", b"2")
    assert zipread.directory(tmp_path / "dup.zip") is None
    tarball = tmp_path / "p.tar"
    with tarfile.open(tarball, "w"):
        pass
    assert zipread.directory(tarball) is None
    assert zipread.directory(tmp_path / "missing.zip") is None
