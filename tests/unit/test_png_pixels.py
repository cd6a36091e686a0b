"""Corner-pixel alpha from real PNG bytes: every row filter, colour type and transparency form."""

from __future__ import annotations

import random
import struct
import zlib

import pytest

from mgr_agent.png import NotPNG, corner_alphas, encode_rgba


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def filtered(rows: list[bytes], bpp: int) -> bytes:
    """Each row with filter type ``y % 5`` applied forward, the way an encoder does."""
    out = bytearray()
    prev = bytes(len(rows[0]))
    for y, row in enumerate(rows):
        kind = y % 5
        line = bytearray()
        for i, value in enumerate(row):
            left = row[i - bpp] if i >= bpp else 0
            up_left = prev[i - bpp] if i >= bpp else 0
            pred = (0, left, prev[i], (left + prev[i]) >> 1, paeth(left, prev[i], up_left))[kind]
            line.append((value - pred) & 0xFF)
        out += bytes([kind]) + line
        prev = row
    return bytes(out)


def png(width: int, rows: list[bytes], *, color: int, depth: int = 8, bpp: int = 4,
        extra: bytes = b"", interlace: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, len(rows), depth, color, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra
            + chunk(b"IDAT", zlib.compress(filtered(rows, bpp))) + chunk(b"IEND", b""))


def test_rgba_with_every_filter_type() -> None:
    rng = random.Random(7)
    size = 20
    rows = [bytes(rng.randrange(256) for _ in range(size * 4)) for _ in range(size)]
    expected = [rows[0][3], rows[0][-1], rows[-1][3], rows[-1][-1]]
    assert corner_alphas(png(size, rows, color=6)) == expected


def test_sixteen_bit_grey_alpha_uses_the_high_byte() -> None:
    rows = [b"\x12\x34\x00\x01" * 4, b"\x12\x34\xff\xff" * 4]
    assert corner_alphas(png(4, rows, color=4, depth=16)) == [0, 0, 255, 255]


def test_palette_transparency_from_trns() -> None:
    rows = [bytes([0, 1, 1, 0]), bytes([1, 1, 1, 1])]  # index 0 is transparent
    plte = chunk(b"PLTE", b"\x00\x00\x00\xff\x00\x00")
    trns = chunk(b"tRNS", b"\x00")
    assert corner_alphas(png(4, rows, color=3, bpp=1, extra=plte + trns)) == [0, 0, 255, 255]
    assert corner_alphas(png(4, rows, color=3, bpp=1, extra=plte)) == [255] * 4


def test_packed_palette_pixels() -> None:
    # 2-bit indices: row 0 = 3,0,0,2 ; row 1 = 0,0,0,0
    rows = [bytes([0b11000010]), bytes([0])]
    plte = chunk(b"PLTE", bytes(12))
    trns = chunk(b"tRNS", b"\xff\xff\x00\x80")
    assert corner_alphas(png(4, rows, color=3, depth=2, bpp=1, extra=plte + trns)) == [128, 0, 255, 255]


def test_rgb_key_colour_from_trns() -> None:
    white, red = b"\xff\xff\xff", b"\xff\x00\x00"
    rows = [white + red + white, red + red + red]
    trns = chunk(b"tRNS", struct.pack(">HHH", 255, 255, 255))  # white is transparent
    assert corner_alphas(png(3, rows, color=2, bpp=3, extra=trns)) == [0, 0, 255, 255]
    assert corner_alphas(png(3, rows, color=2, bpp=3)) == [255] * 4


def test_interlaced_images_are_not_decoded() -> None:
    rows = [b"\x00" * 8] * 2
    assert corner_alphas(png(2, rows, color=6, interlace=1)) is None


@pytest.mark.parametrize("damage", ["crc", "inflate", "short", "no-iend"])
def test_damaged_files_are_not_pngs(damage: str) -> None:
    good = encode_rgba(4, [bytes(16)] * 4)
    idat = good.index(b"IDAT")
    if damage == "crc":
        bad = good[:idat + 6] + bytes([good[idat + 6] ^ 0xFF]) + good[idat + 7:]
    elif damage == "inflate":
        ihdr = good[:33]
        bad = ihdr + chunk(b"IDAT", b"not zlib at all") + chunk(b"IEND", b"")
    elif damage == "short":
        bad = good[:33] + chunk(b"IDAT", zlib.compress(b"\x00" * 5)) + chunk(b"IEND", b"")
    else:
        bad = good[:good.index(b"IEND") - 4]
    with pytest.raises(NotPNG):
        corner_alphas(bad)


def test_encoder_round_trip() -> None:
    rows = [bytes([x, 0, 0, 255 if x else 0]) for x in range(4)]  # one pixel per row
    data = encode_rgba(1, rows)
    assert corner_alphas(data) == [0, 0, 255, 255]
    with pytest.raises(ValueError, match="width"):
        encode_rgba(2, rows)
