"""The PNG header reader and the findings shape, on real PNG bytes."""

from __future__ import annotations

import struct
import zlib

import pytest

from mgr_agent.findings import Finding, errors, ordered
from mgr_agent.png import NotPNG, read_header


def make_png(width: int, height: int, color_type: int = 6) -> bytes:
    """A real, complete PNG of one colour (what an image editor writes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    rows = b"".join(b"\x00" + b"\x7f" * (width * channels) for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def test_reads_size_and_alpha() -> None:
    info = read_header(make_png(32, 32))
    assert info.size == (32, 32) and info.has_alpha_channel
    assert not read_header(make_png(64, 48, color_type=2)).has_alpha_channel


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty"),
    (b"\xff\xd8\xff\xe0JFIF", "signature"),
    (make_png(32, 32)[:20], "truncated"),
    (make_png(32, 32)[:29] + b"\0\0\0\0", "checksum"),
])
def test_refuses_what_is_not_a_png(data: bytes, reason: str) -> None:
    with pytest.raises(NotPNG, match=reason):
        read_header(data)


def test_findings_text_json_and_order() -> None:
    warn = Finding("meta-name-long", "warning", "name is 40 characters", "shorten it", "meta.xml", 3)
    err = Finding("meta-id-missing", "error", "no <id>", "add <id>", "meta.xml")
    assert warn.text() == "warning[meta-name-long] meta.xml:3: name is 40 characters (fix: shorten it)"
    assert err.to_dict()["line"] is None
    assert ordered([warn, err]) == [err, warn]
    assert errors([warn, err]) == [err]
    assert errors([warn, err], strict=True) == [warn, err]
