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
