"""`mgr-agent check`: a corpus of good and bad packages, one bad package per finding code.

The good packages are fresh skeletons (``mgr-agent new``): they have no finding at all, so
each is the passing example of every code. Each bad package is a skeleton with one
mistake; the check must report exactly that code, at the right file. The archive and XML
rules of DESIGN §8 reuse the hostile packages of test_hostile_input. docs/check.md must
list exactly the codes the validators can emit, and each must be in this corpus.
"""

from __future__ import annotations

import io
import random
import re
import struct
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mgr_agent import png
from mgr_agent.engine import Engine
from mgr_agent.layout import Layout
from mgr_agent.panels.ispmanager.skeleton import ispmanager_tree
from mgr_agent.panels.plesk.skeleton import plesk_tree
from mgr_agent.sandbox.samples import Tree, write_dir, write_zip
from tests.helpers import REPO, cli
from tests.integration.test_hostile_input import ARCHIVE_CASES, XML_CASES
from tests.integration.test_hostile_input import Case as HostileCase

EXT = "corpus-tool"
ISP = "corpus"
MOD = f"etc/xml/ispmgr_mod_{ISP}.xml"
DESC = f"etc/plugins/ispmgr/{ISP}.xml"
HANDLER = f"addon/{ISP}.py"
PRIVATE_KEY = (b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
               b"-----END OPENSSH PRIVATE KEY-----\n")


def plesk_good() -> Tree:
    return plesk_tree(EXT)


def isp_good() -> Tree:
    return ispmanager_tree(ISP)


def image(width: int, height: int, rgba: tuple[int, int, int, int] = (0, 0, 0, 0)) -> bytes:
    return png.encode_rgba(width, [bytes(rgba) * width] * height)


Mutation = Callable[[Tree], None]


def edit(path: str, old: str, new: str, count: int = 1) -> Mutation:
    def mutate(tree: Tree) -> None:
        data, mode = tree[path]
        text = data.decode()
        assert old in text, (path, old)
        tree[path] = (text.replace(old, new, count).encode(), mode)
    return mutate


def put(path: str, data: bytes, mode: int = 0o644) -> Mutation:
    def mutate(tree: Tree) -> None:
        tree[path] = (data, mode)
    return mutate


def drop(*paths: str) -> Mutation:
    def mutate(tree: Tree) -> None:
        for path in paths:
            del tree[path]
    return mutate


def chmod(path: str, mode: int) -> Mutation:
    def mutate(tree: Tree) -> None:
        tree[path] = (tree[path][0], mode)
    return mutate


def meta(old: str, new: str) -> Mutation:
    return edit("meta.xml", old, new)


def plugin(old: str, new: str) -> Mutation:
    return edit(MOD, old, new)


def both(*mutations: Mutation) -> Mutation:
    def mutate(tree: Tree) -> None:
        for m in mutations:
            m(tree)
    return mutate


@dataclass(frozen=True)
class Bad:
    code: str
    severity: str
    panel: str
    mutate: Mutation
    file: str | None = None
    line: bool = False  # the finding must carry a line number
    as_zip: bool = False

    @property
    def id(self) -> str:
        return f"{self.code}-{self.panel}"


PL, IS = "plesk", "ispmanager"
FORM = f'<func name="{ISP}.settings"/>'
CORPUS = [
    # --- both panels: safety
    Bad("mode-dropped", "warning", IS, chmod(HANDLER, 0o4777), HANDLER, as_zip=True),
    Bad("file-large", "warning", PL, put("htdocs/video.bin", b"\x01" * (10 * 1024 * 1024 + 1)),
        "htdocs/video.bin"),
    Bad("secret-file", "warning", PL, put("plib/.env", b"DB_PASSWORD=hunter2\n"), "plib/.env"),
    Bad("secret-private-key", "warning", IS, put("etc/ssh/deploy", b"key:\n" + PRIVATE_KEY),
        "etc/ssh/deploy", line=True),
    Bad("secret-token", "warning", PL,
        put("plib/library/Aws.php", b"<?php\n$key = 'AKIAIOSFODNN7EXAMPLE';\n"), "plib/library/Aws.php",
        line=True),
    # --- Plesk meta.xml
    Bad("meta-root", "error", PL, put("meta.xml", b"<extension><id>x</id></extension>"), "meta.xml",
        line=True),
    Bad("meta-required", "error", PL, meta("<release>1</release>", ""), "meta.xml", line=True),
    Bad("meta-catalog-field", "warning", PL, meta("<vendor>Your Company</vendor>", ""), "meta.xml"),
    Bad("meta-placeholder", "warning", PL, meta("<release>1</release>", "<release>{{RELEASE}}</release>"),
        "meta.xml", line=True),
    Bad("meta-id", "error", PL, meta(f"<id>{EXT}</id>", "<id>Corpus_Tool</id>"), "meta.xml", line=True),
    Bad("meta-id-style", "warning", PL, meta(f"<id>{EXT}</id>", "<id>corpus--tool</id>"), "meta.xml",
        line=True),
    Bad("meta-name-too-long", "warning", PL, meta("<name>Corpus Tool</name>", f"<name>{'Long ' * 13}</name>"),
        "meta.xml", line=True),
    Bad("meta-name-long", "warning", PL,
        meta("<name>Corpus Tool</name>", "<name>Corpus Tool For Nightly Backups</name>"),
        "meta.xml", line=True),
    Bad("meta-name-english", "warning", PL, meta("<name>Corpus Tool</name>", "<name>Резервные копии</name>"),
        "meta.xml", line=True),
    Bad("meta-name-filler", "warning", PL, meta("<name>Corpus Tool</name>", "<name>Corpus Plugin</name>"),
        "meta.xml", line=True),
    Bad("meta-version", "error", PL, meta("<version>1.0</version>", "<version>1.0 beta</version>"),
        "meta.xml", line=True),
    Bad("meta-version-format", "warning", PL, meta("<version>1.0</version>", "<version>v1-rc</version>"),
        "meta.xml", line=True),
    Bad("meta-release-format", "warning", PL, meta("<release>1</release>", "<release>1a</release>"),
        "meta.xml", line=True),
    Bad("meta-category-unknown", "warning", PL,
        meta("<category>server_tool</category>", "<category>Server Tools</category>"), "meta.xml", line=True),
    Bad("meta-url", "warning", PL, meta("<help_url>https://example.com/docs</help_url>",
                                       "<help_url>example.com/docs</help_url>"), "meta.xml", line=True),
    Bad("meta-support-url", "warning", PL,
        both(meta("<support_url>https://example.com/support</support_url>",
                  "<buy_url>https://example.com/buy</buy_url>"),
             put("_meta/icons/160x160.png", image(160, 160))), "meta.xml", line=True),
    Bad("meta-plesk-version", "error", PL,
        meta("<plesk_min_version>18.0</plesk_min_version>",
             "<plesk_min_version>Obsidian</plesk_min_version>"),
        "meta.xml", line=True),
    Bad("meta-plesk-range", "error", PL,
        meta("<os>unix</os>", "<os>unix</os><plesk_max_version>17.8</plesk_max_version>"), "meta.xml",
        line=True),
    Bad("meta-os", "error", PL, meta("<os>unix</os>", "<os>linux</os>"), "meta.xml", line=True),
    Bad("meta-os-unix", "error", PL, meta("<os>unix</os>", "<os>win</os>"), "meta.xml", line=True),
    Bad("meta-encoder", "error", PL, meta("<os>unix</os>", "<os>unix</os><encoder>zend</encoder>"),
        "meta.xml", line=True),
    Bad("meta-lang-code", "warning", PL,
        meta("<category>", '<description xml:lang="german!">Sichern</description><category>'),
        "meta.xml", line=True),
    Bad("meta-lang-orphan", "warning", PL,
        meta("<category>", '<vendor xml:lang="de-DE">Firma</vendor><category>'),
        "meta.xml", line=True),
    Bad("meta-duplicate-element", "warning", PL,
        meta("<release>1</release>", "<release>1</release><release>2</release>"),
        "meta.xml", line=True),
    Bad("meta-unknown-element", "warning", PL, meta("<os>unix</os>", "<os>unix</os><licence>MIT</licence>"),
        "meta.xml", line=True),
    # --- Plesk catalog files
    Bad("catalog-file-missing", "warning", PL, drop("CHANGES.md"), "CHANGES.md"),
    Bad("icon-missing", "warning", PL, drop("_meta/icons/64x64.png"), "_meta/icons/64x64.png"),
    Bad("icon-size", "warning", PL, put("_meta/icons/32x32.png", image(48, 48)), "_meta/icons/32x32.png"),
    Bad("icon-opaque", "warning", PL, put("_meta/icons/128x128.png", image(128, 128, (200, 30, 30, 255))),
        "_meta/icons/128x128.png"),
    Bad("png-invalid", "warning", PL, put("_meta/icons/32x32.png", b"GIF89a\x20\x00\x20\x00"),
        "_meta/icons/32x32.png"),
    Bad("screenshot-missing", "warning", PL, drop("_meta/screenshots/1.png"), "_meta/screenshots/1.png"),
    Bad("screenshot-size", "warning", PL, put("_meta/screenshots/1.png", image(800, 600, (9, 9, 9, 255))),
        "_meta/screenshots/1.png"),
    Bad("screenshot-extra", "warning", PL, put("_meta/screenshots/4.png", image(1024, 768)),
        "_meta/screenshots/4.png"),
    # --- Plesk code
    Bad("php-syntax", "error", PL, put("plib/scripts/post-install.php", b"<?php\necho 'x'\n$y = ;\n"),
        "plib/scripts/post-install.php", line=True),
    Bad("autoload-class-name", "warning", PL,
        edit("plib/library/Settings.php", "class Modules_CorpusTool_Settings", "class Settings"),
        "plib/library/Settings.php", line=True),
    Bad("public-no-autoload", "warning", PL,
        put("htdocs/public/hook.php", b"<?php\n$s = pm_Settings::get('x');\n"), "htdocs/public/hook.php",
        line=True),
    # --- ispmanager
    Bad("one-plugin", "error", IS, put("etc/xml/ispmgr_mod_other.xml", b"<mgrdata/>")),
    Bad("forbidden-path", "error", IS, put("sbin/mgrctl", b"#!/bin/sh\n", 0o755), "sbin/mgrctl"),
    Bad("hook-unknown", "warning", IS,
        put("scripts/post-upgrade", b"#!/bin/sh\n", 0o755), "scripts/post-upgrade"),
    Bad("plugin-name", "error", IS, lambda t: t.update({"etc/xml/ispmgr_mod_-bad.xml": t.pop(MOD)})),
    Bad("plugin-xml-root", "error", IS, put(MOD, b"<plugin/>"), MOD, line=True),
    Bad("handler-name", "error", IS, plugin(f'<handler name="{ISP}.py"', '<handler name="../corpus.py"'), MOD,
        line=True),
    Bad("handler-type-missing", "warning", IS, plugin(' type="xml">', ">"), MOD, line=True),
    Bad("handler-type", "error", IS, plugin(' type="xml">', ' type="php">'), MOD, line=True),
    Bad("handler-not-executable", "warning", IS, chmod(HANDLER, 0o644), HANDLER),
    Bad("handler-missing", "error", IS, drop(HANDLER), MOD, line=True),
    Bad("func-name", "error", IS, plugin(FORM, f'{FORM}<event after="yes"/>'), MOD, line=True),
    Bad("event-when", "error", IS, plugin(FORM, f'{FORM}<event name="user.edit" after="later"/>'), MOD,
        line=True),
    Bad("lang-name", "warning", IS, plugin('<lang name="ru">', "<lang>"), MOD, line=True),
    Bad("mainmenu-multiple", "warning", IS, plugin("</mainmenu>", "</mainmenu><mainmenu/>"), MOD, line=True),
    Bad("menu-level", "error", IS, plugin('level="30"', 'level="admin"'), MOD, line=True),
    Bad("lang-missing", "warning", IS,
        lambda t: t.update({MOD: (re.sub(rb"<lang .*</lang>", b"", t[MOD][0], flags=re.S), 0o644)}), MOD,
        line=True),
    Bad("menu-msg-missing", "warning", IS,
        plugin(f'<msg name="modernmenu_{ISP}.settings">{ISP} settings</msg>', ""), MOD, line=True),
    Bad("func-title-missing", "warning", IS,
        edit(MOD, f'<msg name="title">Настройки {ISP}</msg>', ""), MOD, line=True),
    Bad("lang-gap", "warning", IS, plugin('<msg name="hint_greeting">Shown', '<msg name="hint_other">Shown'),
        MOD),
    Bad("module-name", "error", IS, edit(DESC, f'<plugin name="{ISP}"', '<plugin name="other"'), DESC,
        line=True),
    Bad("module-extra", "warning", IS, put("etc/plugins/ispmgr/other.xml", b'<plugin name="other"/>'),
        "etc/plugins/ispmgr/other.xml"),
    Bad("duplicate-target", "error", IS, lambda t: t.update({f"usr/local/mgr5/{HANDLER}": t[HANDLER]})),
    Bad("module-xml-root", "error", IS, put(DESC, b"<module/>"), DESC, line=True),
    Bad("module-desc-missing", "warning", IS,
        edit(DESC, f'<msg name="desc_full" lang="ru">Что делает модуль {ISP}</msg>', ""),
        DESC, line=True),
    Bad("module-dist", "warning", IS,
        edit(DESC, '<msg name="desc_short" lang="ru">', '<msg name="desc_short" lang="ru" dist="2">'),
        DESC, line=True),
    Bad("module-weight", "warning", IS,
        edit(DESC, "<settings>", "<weight>high</weight><settings>"), DESC, line=True),
    # --- the installer's own rules, reported through the backstop
    Bad("version", "error", IS, edit(DESC, f'<plugin name="{ISP}" version="1.0">',
                                    f'<plugin name="{ISP}" version="1.0 final">'), DESC),
    Bad("detection", "error", PL, drop("meta.xml")),
]


def unreadable_zip(where: Path) -> Path:
    """An end-of-central-directory record pointing past the file: not a readable zip."""
    path = where / "unreadable.zip"
    path.write_bytes(b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, 46, 999, 0))
    return path


def bad_subsequent_tar_header(where: Path) -> Path:
    """A pax header whose following real header has a bad checksum: tarfile cannot go on."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        first = tarfile.TarInfo("meta.xml")
        first.size = 3
        tf.addfile(first, io.BytesIO(b"abc"))
        offset = buf.tell()
        second = tarfile.TarInfo("htdocs/" + "é" * 10)  # non-ASCII: written with a pax header
        second.size = 3
        tf.addfile(second, io.BytesIO(b"abc"))
    raw = bytearray(buf.getvalue())
    pax_size = int(raw[offset + 124:offset + 136].rstrip(b"\0 "), 8)
    real = offset + 512 + (pax_size + 511) // 512 * 512
    raw[real + 148:real + 156] = b"0000001\x00"
    path = where / "subsequent.tar"
    path.write_bytes(bytes(raw))
    return path


def empty_entry_name(where: Path) -> Path:
    path = write_zip(plesk_good(), where / "empty-name.zip")
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(zipfile.ZipInfo(""), b"x")
    return path


def empty_file(where: Path) -> Path:
    path = where / "empty.zip"
    path.write_bytes(b"")
    return path


HOSTILE = [*ARCHIVE_CASES, *XML_CASES,
           HostileCase("zip-format", unreadable_zip, "unsafe-archive", "zip-format", "unreadable.zip"),
           HostileCase("tar-format", bad_subsequent_tar_header, "unsafe-archive", "tar-format",
                       "subsequent.tar"),
           HostileCase("empty", empty_file, "invalid-package", "empty", "empty.zip"),
           HostileCase("empty-name", empty_entry_name, "unsafe-archive", "empty-name", "empty name")]


def build(case: Bad, where: Path) -> Path:
    tree = plesk_good() if case.panel == PL else isp_good()
    case.mutate(tree)
    if case.as_zip:
        return write_zip(tree, where / f"{case.code}.zip")
    return write_dir(tree, where / case.code)


def check(root: Path, path: Path, *, strict: bool = False, panel: str | None = None) -> dict[str, Any]:
    result = Engine(Layout.at(root)).check(path, panel=panel, strict=strict)
    doc = result.to_json()
    doc["exit_code"] = result.exit_code
    return doc


def findings(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["data"]["findings"])


@pytest.mark.parametrize("panel", [PL, IS])
def test_fresh_skeletons_have_no_finding_at_all(panel: str, root: Path, tmp_path: Path) -> None:
    """The passing example of every code: a skeleton, as a directory and as a zip."""
    tree = plesk_good() if panel == PL else isp_good()
    for path in (write_dir(tree, tmp_path / "dir"), write_zip(tree, tmp_path / "pkg.zip")):
        doc = check(root, path, strict=True)
        assert doc["exit_code"] == 0 and findings(doc) == [], findings(doc)
        assert doc["warnings"] == [] or doc["warnings"] == [
            "usr/local/psa/version not found: plesk_min_version/plesk_max_version not checked"]


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_each_code_has_a_failing_example(case: Bad, root: Path, tmp_path: Path) -> None:
    doc = check(root, build(case, tmp_path))
    hits = [f for f in findings(doc) if f["code"] == case.code]
    assert hits, (case.code, findings(doc), doc.get("error"))
    hit = hits[0]
    assert hit["severity"] == case.severity
    assert hit["message"] and hit["fix"]
    if case.file is not None:
        assert hit["file"] == case.file, hit
    if case.line:
        assert isinstance(hit["line"], int) and hit["line"] > 0, hit
    errors = [f for f in findings(doc) if f["severity"] == "error"]
    assert (doc["exit_code"] == 0) == (not errors), doc
    strict = check(root, build(case, tmp_path / "again"), strict=True)
    assert (strict["exit_code"], strict["error"]["code"]) in (
        (3, "invalid-package"), (3, "invalid-xml"), (6, "incompatible-panel")), strict


@pytest.mark.parametrize("case", HOSTILE, ids=lambda c: c.id)
def test_archive_and_xml_rules_are_reported_as_findings(case: HostileCase, root: Path, pkgs: Path) -> None:
    if case.toml:
        config = root / "etc/mgr-agent/agent.toml"
        config.parent.mkdir(parents=True)
        config.write_text(case.toml)
    doc = check(root, case.build(pkgs))
    codes = [f["code"] for f in findings(doc) if f["severity"] == "error"]
    if doc["exit_code"] == 3 and case.exit == 6:  # min above max: wrong on every server, said first
        assert "meta-plesk-range" in codes, findings(doc)
        return
    assert doc["exit_code"] == case.exit and doc["error"]["code"] == case.code
    if case.rule is not None:
        assert case.rule in codes, findings(doc)
    elif case.code != "incompatible-panel":  # this server's Plesk version: not a finding
        assert codes, findings(doc)


def test_install_refuses_errors_lists_warnings_once_and_strict_refuses_warnings(
        root: Path, tmp_path: Path) -> None:
    broken = build(next(c for c in CORPUS if c.code == "php-syntax"), tmp_path)
    run = cli(root, "install", str(broken))
    assert run.rc == 3 and run.json["error"]["details"]["rule"] == "php-syntax"
    assert run.json["error"]["details"]["findings"][0]["line"] == 3
    assert not (root / "var/lib/mgr-agent").exists()

    warned = build(next(c for c in CORPUS if c.code == "hook-unknown"), tmp_path)
    strict = cli(root, "install", "--strict", str(warned))
    assert strict.rc == 3 and strict.json["error"]["details"]["rule"] == "hook-unknown"
    assert not (root / "var/lib/mgr-agent").exists()
    done = cli(root, "install", "--no-restart", str(warned))
    assert done.rc == 0, done.stdout
    about = [w for w in done.json["warnings"] if "scripts/post-upgrade" in w]
    assert len(about) == 1 and about[0].startswith("[hook-unknown] scripts/post-upgrade:"), about


def test_text_output_names_code_file_line_and_fix(root: Path, tmp_path: Path) -> None:
    bad = build(next(c for c in CORPUS if c.code == "meta-plesk-range"), tmp_path)
    run = cli(root, "check", str(bad), as_json=False)
    assert run.rc == 3
    assert re.search(r"error\[meta-plesk-range\] meta\.xml:\d+: .* \(fix: swap or correct the bounds\)",
                     run.stdout + run.stderr), run


def _doc_codes() -> set[str]:
    text = (REPO / "docs/check.md").read_text()
    return set(re.findall(r"^\| `([a-z0-9-]+)` \| (?:error|warning) \|", text, re.MULTILINE))


def _source_codes() -> set[str]:
    codes: set[str] = set()
    for path in (REPO / "agent/mgr_agent/checks").glob("*.py"):
        codes |= set(re.findall(r'find\(\s*"([a-z0-9-]+)", "(?:error|warning)"', path.read_text()))
    return codes


def test_docs_list_every_code_and_the_corpus_covers_them() -> None:
    documented = _doc_codes()
    archive_rules = {c.rule for c in HOSTILE if c.rule}
    emitted = _source_codes()
    assert emitted <= documented, emitted - documented
    covered = {c.code for c in CORPUS} | archive_rules
    assert documented <= covered, documented - covered


def test_zip_and_directory_give_the_same_findings(root: Path, tmp_path: Path) -> None:
    tree = plesk_good()
    meta("<release>1</release>", "<release>{{RELEASE}}</release>")(tree)
    as_dir = findings(check(root, write_dir(tree, tmp_path / "d")))
    as_zip = findings(check(root, write_zip(tree, tmp_path / "z.zip")))
    assert as_dir == as_zip and as_dir
    with zipfile.ZipFile(tmp_path / "z.zip") as zf:
        assert "meta.xml" in zf.namelist()


def flat(tree: Tree) -> Tree:
    """The flat layout of public repositories: the plugin XML and its handler at the top."""
    out = dict(tree)
    out[f"ispmgr_mod_{ISP}.xml"] = out.pop(MOD)
    out[f"{ISP}.py"] = out.pop(HANDLER)
    return out


def test_flat_repository_layout_is_checked_like_the_tree(root: Path, tmp_path: Path) -> None:
    good = check(root, write_dir(flat(isp_good()), tmp_path / "good"), strict=True)
    assert good["exit_code"] == 0 and findings(good) == [], findings(good)
    tree = flat(isp_good())
    edit(f"ispmgr_mod_{ISP}.xml", 'level="30"', 'level="admin"')(tree)
    chmod(f"{ISP}.py", 0o644)(tree)
    bad = check(root, write_dir(tree, tmp_path / "bad"))
    codes = {(f["code"], f["file"]) for f in findings(bad)}
    assert ("menu-level", f"ispmgr_mod_{ISP}.xml") in codes, codes  # named as the author has it
    assert ("handler-not-executable", f"{ISP}.py") in codes, codes
    missing = flat(isp_good())
    del missing[f"{ISP}.py"]
    gone = check(root, write_dir(missing, tmp_path / "missing"))
    assert gone["exit_code"] == 3
    assert [f["code"] for f in findings(gone) if f["severity"] == "error"] == ["handler-missing"]


@pytest.mark.parametrize("as_zip", [False, True])
def test_secrets_scan_reads_text_and_skips_binary(as_zip: bool, root: Path, tmp_path: Path) -> None:
    """Git's test for binary content (a NUL byte in the first 8,000 bytes): a token inside
    an image is not reported; one in a text file is, however far into it, and so is one in
    a text file whose first NUL comes later.  Sizes straddle the reader's 1 MiB chunks and
    the in-memory budget's 256 KiB per file."""
    token = b"AKIAIOSFODNN7EXAMPLE"
    noise = random.Random(13).randbytes(2_000_000).replace(b"\0", b"\1")  # past the ratio rule
    text = b"".join(b"var v%d = %d;\n" % (i, i * 7919 % 100_003) for i in range(120_000))
    tree = plesk_good()
    tree["htdocs/img/logo.png"] = (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + noise + token, 0o644)
    tree["htdocs/js/app.js"] = (text + token + b"\n", 0o644)
    tree["htdocs/data.txt"] = (b"x" * 9_000 + b"\0" + token, 0o644)
    path = write_zip(tree, tmp_path / "pkg.zip") if as_zip else write_dir(tree, tmp_path / "dir")
    hits = {f["file"] for f in findings(check(root, path)) if f["code"] == "secret-token"}
    assert hits == {"htdocs/js/app.js", "htdocs/data.txt"}
    if as_zip:  # an install: the entries over 256 KiB are scanned on the hashing thread
        done = cli(root, "install", "--no-restart", str(path))
        assert done.rc == 0, done.stdout
        warned = sorted(w.split(":")[0] for w in done.json["warnings"] if "[secret-token]" in w)
        assert warned == ["[secret-token] htdocs/data.txt", "[secret-token] htdocs/js/app.js"]
