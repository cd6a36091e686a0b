"""PNG headers, read without trusting the file: signature, IHDR chunk and its CRC.

Icons and APS images must be real PNGs of a given size; this reads only the first
33 bytes (signature + IHDR) and checks them, so a renamed JPEG or a truncated file is
told apart from a PNG of the wrong size.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

SIGNATURE = b"\x89PNG\r\n\x1a\n"
HEADER_SIZE = 33  # signature (8) + length (4) + "IHDR" (4) + data (13) + CRC (4)
_ALPHA_TYPES = {4, 6}  # grey + alpha, RGB + alpha


class NotPNG(ValueError):
    """The bytes are not a PNG (with the reason as the message)."""


@dataclass(frozen=True)
class PngInfo:
    """What the IHDR chunk says."""

    width: int
    height: int
    bit_depth: int
    color_type: int

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def has_alpha_channel(self) -> bool:
        """Colour types with an alpha channel (a tRNS chunk can also add transparency)."""
        return self.color_type in _ALPHA_TYPES


def read_header(data: bytes) -> PngInfo:
    """Parse the signature and IHDR of ``data`` (at least its first 33 bytes)."""
    if len(data) == 0:
        raise NotPNG("the file is empty")
    if not data.startswith(SIGNATURE):
        raise NotPNG("no PNG signature")
    if len(data) < HEADER_SIZE:
        raise NotPNG("truncated before the end of the IHDR chunk")
    length, kind = struct.unpack(">I4s", data[8:16])
    if kind != b"IHDR" or length != 13:
        raise NotPNG("the first chunk is not a 13-byte IHDR")
    body = data[16:29]
    (crc,) = struct.unpack(">I", data[29:33])
    if zlib.crc32(kind + body) != crc:
        raise NotPNG("IHDR checksum mismatch")
    width, height, depth, color = struct.unpack(">IIBB", body[:10])
    if width == 0 or height == 0:
        raise NotPNG("zero width or height")
    return PngInfo(width=width, height=height, bit_depth=depth, color_type=color)


# ------------------------------------------------------------------ pixels (icon backgrounds)
MAX_DECODE_PIXELS = 512 * 512  # icons only: larger images are not decoded
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of every chunk up to IEND, each CRC checked."""
    out: list[tuple[bytes, bytes]] = []
    pos = 8
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise NotPNG(f"chunk {kind!r} is truncated")
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise NotPNG(f"chunk {kind!r} checksum mismatch")
        out.append((kind, body))
        if kind == b"IEND":
            return out
        pos += 12 + length
    raise NotPNG("no IEND chunk")


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> list[bytearray]:
    rows: list[bytearray] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                row[i] = (row[i] + row[i - bpp]) & 0xFF
        elif kind == 2:
            for i in range(stride):
                row[i] = (row[i] + prev[i]) & 0xFF
        elif kind == 3:
            for i in range(stride):
                left = row[i - bpp] if i >= bpp else 0
                row[i] = (row[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                left = row[i - bpp] if i >= bpp else 0
                up_left = prev[i - bpp] if i >= bpp else 0
                row[i] = (row[i] + _paeth(left, prev[i], up_left)) & 0xFF
        elif kind != 0:
            raise NotPNG(f"unknown filter type {kind} in row {y}")
        rows.append(row)
        prev = row
    return rows


def _samples(row: bytearray, x: int, channels: int, depth: int) -> list[int]:
    """The samples of pixel ``x``, scaled to 0-255."""
    if depth >= 8:
        size = depth // 8
        base = x * channels * size
        return [row[base + i * size] for i in range(channels)]  # high byte of 16-bit samples
    bit = x * depth
    value = (row[bit // 8] >> (8 - depth - bit % 8)) & ((1 << depth) - 1)
    return [value]


def corner_alphas(data: bytes) -> list[int] | None:
    """Alpha (0 transparent - 255 opaque) of the four corner pixels, decoded from IDAT.

    Handles every colour type and bit depth, palette and ``tRNS`` transparency;
    returns None for interlaced images and for images over :data:`MAX_DECODE_PIXELS`
    (not decoded). Raises NotPNG on a damaged file.
    """
    info = read_header(data)
    chunks = _chunks(data)
    interlace = chunks[0][1][12]
    if interlace or info.width * info.height > MAX_DECODE_PIXELS:
        return None
    ct, depth = info.color_type, info.bit_depth
    if ct not in _CHANNELS:
        raise NotPNG(f"unknown colour type {ct}")
    trns = b"".join(body for kind, body in chunks if kind == b"tRNS")
    if ct in (0, 2) and not trns:
        return [255] * 4
    channels = _CHANNELS[ct]
    stride = (info.width * channels * depth + 7) // 8
    expected = info.height * (stride + 1)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"), expected)
    except zlib.error as exc:
        raise NotPNG(f"image data does not inflate: {exc}") from exc
    if len(raw) < expected:
        raise NotPNG("image data is shorter than the image")
    rows = _unfilter(raw, info.height, stride, max(1, channels * depth // 8))
    out = []
    for x, y in ((0, 0), (info.width - 1, 0), (0, info.height - 1), (info.width - 1, info.height - 1)):
        px = _samples(rows[y], x, channels, depth)
        if ct in (4, 6):
            out.append(px[-1])
        elif ct == 3:
            out.append(trns[px[0]] if px[0] < len(trns) else 255)
        else:
            raw_px = _raw_samples(rows[y], x, channels, depth)
            key = [int.from_bytes(trns[i * 2:i * 2 + 2], "big") for i in range(channels)]
            out.append(0 if raw_px == key else 255)
    return out


def _raw_samples(row: bytearray, x: int, channels: int, depth: int) -> list[int]:
    """Unscaled samples of pixel ``x`` (for comparing with a tRNS key colour)."""
    if depth == 16:
        base = x * channels * 2
        return [int.from_bytes(row[base + i * 2:base + i * 2 + 2], "big") for i in range(channels)]
    return _samples(row, x, channels, depth)


def encode_rgba(width: int, rows: list[bytes]) -> bytes:
    """A non-interlaced 8-bit RGBA PNG from its rows (``width * 4`` bytes each; for
    scaffolds and tests)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    if any(len(r) != width * 4 for r in rows):
        raise ValueError("every row must hold width * 4 bytes")
    raw = b"".join(b"\x00" + r for r in rows)
    ihdr = struct.pack(">IIBBBBB", width, len(rows), 8, 6, 0, 0, 0)
    return SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
