"""The direct zip member reader (``zipread``) against zipfile on real archives: the same
bytes for stored and deflated members of every size, and the same refusals for damage."""

from __future__ import annotations

import os
import random
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from mgr_agent import zipread
from mgr_agent.archive import open_source
from mgr_agent.digests import CHUNK
from mgr_agent.errors import UnsafeArchive

SIZES = (0, 1, 4096, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17)


def _content(size: int) -> bytes:
    """Half random, half repetitive: deflate finds something to do, and something not."""
    half = size // 2
    return os.urandom(half) + b"mgr-agent " * ((size - half) // 10 + 1)


def _zip(path: Path, members: dict[str, tuple[bytes, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, (data, method) in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return path


def _read(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as zf:
        m = zipread.member(zf.getinfo(name))
    fd = os.open(path, os.O_RDONLY)
    try:
        return b"".join(zipread.chunks(fd, m))
    finally:
        os.close(fd)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_same_bytes_as_zipfile(tmp_path: Path, method: int) -> None:
    members = {f"f{size}.bin": (_content(size), method) for size in SIZES}
    path = _zip(tmp_path / "a.zip", members)
    with zipfile.ZipFile(path) as zf:
        for name in members:
            assert _read(path, name) == zf.read(name) == members[name][0]


def test_chunks_are_bounded(tmp_path: Path) -> None:
    """A member far larger than a chunk is handed out in chunks, never whole."""
    path = _zip(tmp_path / "a.zip", {"big": (bytes(5 * CHUNK), zipfile.ZIP_DEFLATED)})
    with zipfile.ZipFile(path) as zf:
        m = zipread.member(zf.getinfo("big"))
    fd = os.open(path, os.O_RDONLY)
    try:
        sizes = [len(c) for c in zipread.chunks(fd, m)]
    finally:
        os.close(fd)
    assert sum(sizes) == 5 * CHUNK and max(sizes) <= CHUNK


def _local_offset(data: bytes, name: bytes) -> int:
    at = data.index(b"PK\x03\x04")
    while data[at + 30:at + 30 + len(name)] != name:
        at = data.index(b"PK\x03\x04", at + 1)
    return at


def _refusal(path: Path, name: str) -> str:
    """Reading ``name`` through the package source: refused as corrupt-data; the message."""
    src = open_source(path, None)
    try:
        with pytest.raises(UnsafeArchive) as err:
            b"".join(src.chunks(name))
    finally:
        src.close()
    assert err.value.details["rule"] == "corrupt-data"
    return err.value.message


@pytest.mark.parametrize("size", [100, 3 * CHUNK])
def test_damaged_member_is_corrupt_data(tmp_path: Path, size: int) -> None:
    """A flipped byte in the compressed data: refused as corrupt-data (CRC or inflate error)."""
    body = _content(size)
    path = _zip(tmp_path / "a.zip", {"addon/x.bin": (body, zipfile.ZIP_STORED)})
    data = bytearray(path.read_bytes())
    at = _local_offset(bytes(data), b"addon/x.bin") + 30 + len("addon/x.bin") + size // 2
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "Bad CRC-32" in _refusal(path, "addon/x.bin")


def test_local_name_differing_from_central_directory_is_refused(tmp_path: Path) -> None:
    path = _zip(tmp_path / "a.zip", {"addon/good.txt": (b"hello", zipfile.ZIP_DEFLATED)})
    data = path.read_bytes()
    at = _local_offset(data, b"addon/good.txt")
    path.write_bytes(data[:at + 30] + b"addon/evil.txt" + data[at + 30 + 14:])
    assert "differ" in _refusal(path, "addon/good.txt")


def test_local_header_pointing_nowhere_is_refused(tmp_path: Path) -> None:
    """A central record whose offset points at something else than a local header."""
    path = _zip(tmp_path / "a.zip", {"addon/a.txt": (b"a" * 100, zipfile.ZIP_DEFLATED)})
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("addon/a.txt")
    info.header_offset += 1
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(zipfile.BadZipFile, match="Bad magic number"):
            b"".join(zipread.chunks(fd, zipread.member(info)))
    finally:
        os.close(fd)


def test_truncated_deflate_stream_fails(tmp_path: Path) -> None:
    """Compressed bytes cut short (a forged compressed size): the CRC of what inflated
    does not match."""
    body = _content(200_000)
    path = _zip(tmp_path / "a.zip", {"x": (body, zipfile.ZIP_DEFLATED)})
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("x")
    info.compress_size //= 2
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises((zipfile.BadZipFile, zlib.error)):
            b"".join(zipread.chunks(fd, zipread.member(info)))
    finally:
        os.close(fd)


def test_long_local_extra_field_is_read(tmp_path: Path) -> None:
    """A local extra field longer than the reader's first guess costs a second read, not
    a wrong result."""
    info = zipfile.ZipInfo("addon/x.txt")
    info.extra = struct.pack("<HH", 0xCAFE, 1000) + bytes(1000)
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr(info, b"payload" * 50, compress_type=zipfile.ZIP_DEFLATED)
    assert _read(tmp_path / "a.zip", "addon/x.txt") == b"payload" * 50


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("size", [0, 1, 7_999, 8_000, 8_001, 3 * CHUNK + 5])
def test_head_is_the_start_of_the_member(method: int, size: int, tmp_path: Path) -> None:
    data = random.Random(size).randbytes(size // 2) + b"text " * (size // 10)
    path = tmp_path / "h.zip"
    with zipfile.ZipFile(path, "w", method) as zf:
        zf.writestr("a/member.bin", data)
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        m = zipread.member(zf.getinfo("a/member.bin"))
        for want in (0, 1, 8_000, len(data) + 10):
            assert zipread.head(fh.fileno(), m, want) == data[:want]
