"""Reading one zip member straight from the archive file: ``pread`` and ``zlib``.

:mod:`zipfile` opens a member with four seeks and a copy of its ``ZipInfo``, and reads
it through a buffered file shared by every member; at 5,000 small members that costs
more than inflating them.  Here a member of a stored or deflated entry is read with one
``pread`` (two when its local header's extra field is longer than guessed, more only for
members over a chunk), which is safe from several threads at once.  The checks are
zipfile's: the local header's signature and name must match the central directory, the
data must be complete, and the CRC-32 of everything inflated must equal the declared one
(checked before the last chunk is handed out).  The size is the caller's to check: the
member is inflated to the real end of its compressed data, never cut at the declared size.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections.abc import Iterator

from mgr_agent.fsutil import CHUNK

LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # as zipfile's structFileHeader
LOCAL_MAGIC = b"PK\x03\x04"
EXTRA_GUESS = 64  # bytes of local extra field read along with the header
FAST_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)

Member = tuple[int, int, int, int, bytes]
"""(header offset, compressed size, compression method, CRC-32, raw name) of the central
directory's record."""


def raw_name(info: zipfile.ZipInfo) -> bytes:
    """The name's bytes as the archive holds them (ASCII, the usual case, without the
    slow cp437 codec)."""
    name = info.orig_filename
    if name.isascii():
        return name.encode("ascii")
    return name.encode("utf-8" if info.flag_bits & 0x800 else "cp437", "surrogateescape")


def member(info: zipfile.ZipInfo, raw: bytes | None = None) -> Member:
    return (info.header_offset, info.compress_size, info.compress_type, info.CRC,
            raw_name(info) if raw is None else raw)


def chunks(fd: int, m: Member) -> Iterator[bytes]:
    """The member's inflated bytes in chunks of at most :data:`~mgr_agent.fsutil.CHUNK`.

    Raises :class:`zipfile.BadZipFile` (or :class:`EOFError`, :class:`zlib.error`) on a
    damaged member, like zipfile."""
    _, size, method, crc, raw = m
    pieces = _data(fd, m, min(size, CHUNK))
    out = _inflated(pieces) if method == zipfile.ZIP_DEFLATED else pieces
    yield from _crc_checked(out, crc, raw)


def head(fd: int, m: Member, size: int) -> bytes:
    """At most the member's first ``size`` inflated bytes, inflating no more than that
    (unchecked: the CRC-32 needs the whole member, :func:`chunks` checks it)."""
    method = m[2]
    if size <= 0:
        return b""  # (zlib's max_length 0 means no limit)
    out: list[bytes] = []
    have = 0
    d = zlib.decompressobj(-15) if method == zipfile.ZIP_DEFLATED else None
    for piece in _data(fd, m, min(m[1], size + EXTRA_GUESS)):
        got = bytes(piece[:size - have]) if d is None else d.decompress(piece, size - have)
        out.append(got)
        have += len(got)
        if have >= size or (d is not None and d.eof):
            break
    return b"".join(out)


def _data(fd: int, m: Member, first: int) -> Iterator[bytes | memoryview]:
    """The member's compressed bytes after its local header (checked against the central
    directory's record), the first read bringing ``first`` of them along with the header."""
    offset, size, _, _, raw = m
    head = os.pread(fd, LOCAL_HEADER.size + len(raw) + EXTRA_GUESS + first, offset)
    if len(head) < LOCAL_HEADER.size or head[:4] != LOCAL_MAGIC:
        raise zipfile.BadZipFile("Bad magic number for file header")
    fields = LOCAL_HEADER.unpack_from(head)
    name_len, extra_len = fields[10], fields[11]
    start = LOCAL_HEADER.size + name_len + extra_len
    if head[LOCAL_HEADER.size:LOCAL_HEADER.size + name_len] != raw:
        raise zipfile.BadZipFile(f"File name in directory {raw!r} and header differ.")
    return _compressed(fd, memoryview(head)[start:], offset + start, size)


def _compressed(fd: int, first: memoryview, at: int, size: int) -> Iterator[bytes | memoryview]:
    """The member's ``size`` compressed bytes: what the first read brought, then the rest."""
    have = first[:size]
    if have:
        yield have
    done = len(have)
    while done < size:
        piece = os.pread(fd, min(CHUNK, size - done), at + done)
        if not piece:
            raise EOFError("the archive ends inside this member's data")
        done += len(piece)
        yield piece


def _inflated(pieces: Iterator[bytes | memoryview]) -> Iterator[bytes]:
    """Raw deflate to the end of its stream (or of its compressed bytes, as zipfile)."""
    d = zlib.decompressobj(-15)
    for piece in pieces:
        data: bytes | memoryview = piece
        while data and not d.eof:
            out = d.decompress(data, CHUNK)
            if out:
                yield out
            data = d.unconsumed_tail
        if d.eof:
            return
    while not d.eof:  # output zlib still holds after the last input
        out = d.decompress(b"", CHUNK)
        if not out:
            return
        yield out


def _crc_checked(out: Iterator[bytes | memoryview], crc: int, raw: bytes) -> Iterator[bytes]:
    """``out`` as bytes, one chunk behind, so that the CRC-32 is checked before the last."""
    running = 0
    held: bytes | None = None
    for chunk in out:
        data = bytes(chunk)
        running = zlib.crc32(data, running)
        if held is not None:
            yield held
        held = data
    if running != crc:
        raise zipfile.BadZipFile(f"Bad CRC-32 for file {raw.decode('utf-8', 'replace')!r}")
    if held is not None:
        yield held
