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

:func:`directory` reads a plain zip's central directory the same way, in one pass and
without building a ``ZipInfo`` per entry: what the uninstall hook needs from the agent's
own stored copy of a package is its entry names and one member.
"""

from __future__ import annotations

import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from mgr_agent.digests import CHUNK

LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # as zipfile's structFileHeader
LOCAL_MAGIC = b"PK\x03\x04"
EXTRA_GUESS = 64  # bytes of local extra field read along with the header
FAST_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # as zipfile's structCentralDir
CENTRAL_MAGIC = b"PK\x01\x02"
# of a central directory record, what the walk needs: signature, creator system, the
# lengths of name, extra field and comment, external attributes
_WALK = struct.Struct("<4sxB22x3H4xL")
END = struct.Struct("<4s4H2LH")  # the end of central directory record, as zipfile's
END_MAGIC = b"PK\x05\x06"
LOCATOR64_MAGIC = b"PK\x06\x07"
UNIX = 3  # the creator system whose external attributes hold a mode

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
    """The member's inflated bytes in chunks of at most :data:`~mgr_agent.digests.CHUNK`.

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


class Listed(NamedTuple):
    """One entry of a :class:`Directory`: what :func:`chunks` needs, its declared size, its
    general purpose flags and its Unix mode bits (0 when the archive has none)."""

    member: Member
    size: int
    flags: int
    mode: int


class Directory:
    """A plain zip's central directory: every entry name, in the archive's order; each
    entry's record is decoded only when asked for (:meth:`listed`)."""

    def __init__(self, data: bytes, at: dict[str, int], dirs: set[str]) -> None:
        self._data = data
        self._at = at
        self.names = list(at)
        """Every entry's name (UTF-8), directories included."""
        self.dirs = dirs
        """The names of the directory entries (a trailing ``/``, or a directory's mode)."""

    def listed(self, name: str) -> Listed | None:
        """The entry ``name``; None when its record holds zip64 values (the sizes and offset
        are in its extra field) — :mod:`zipfile` reads those."""
        pos = self._at[name]
        f = CENTRAL.unpack_from(self._data, pos)
        csize, size, offset = f[10], f[11], f[18]
        if 0xFFFFFFFF in (csize, size, offset):
            return None
        raw = self._data[pos + CENTRAL.size:pos + CENTRAL.size + f[12]]
        mode = f[17] >> 16 if f[2] == UNIX else 0
        return Listed((offset, csize, f[6], f[9], raw), size, f[5], mode)


def directory(path: Path) -> Directory | None:
    """The central directory of the zip at ``path``, read in one pass; None whenever it is
    not a plain zip (not a zip, zip64, spanned, data before it or after its end record,
    a record out of place, a name twice or not UTF-8): the caller then reads it with
    :mod:`zipfile`, and its rules give their own messages.  Names are taken as the
    archive rules take them: UTF-8, flagged or not."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            tail_len = min(size, END.size + 0xFFFF)  # the end record and its longest comment
            fh.seek(size - tail_len)
            tail = fh.read(tail_len)
            at = tail.rfind(END_MAGIC)
            if at < 0 or at + END.size > len(tail):
                return None
            _, disk, cd_disk, here, count, cd_size, cd_offset, comment = END.unpack_from(tail, at)
            end = size - tail_len + at  # where the end record starts
            if (at + END.size + comment != len(tail) or disk or cd_disk or here != count
                    or cd_offset + cd_size != end
                    or (at >= 20 and tail[at - 20:at - 16] == LOCATOR64_MAGIC)):
                return None
            fh.seek(cd_offset)
            data = fh.read(cd_size)
    except OSError:
        return None
    if len(data) != cd_size:
        return None
    pos, raws, starts, dirs_at = 0, [], [], []
    walk = _WALK.unpack_from
    try:
        for _ in range(count):
            magic, system, name_len, extra_len, comment_len, attrs = walk(data, pos)
            if magic != CENTRAL_MAGIC:
                return None
            start = pos + CENTRAL.size
            raws.append(data[start:start + name_len])
            starts.append(pos)
            if system == UNIX and stat.S_ISDIR(attrs >> 16):
                dirs_at.append(len(starts) - 1)
            pos = start + name_len + extra_len + comment_len
    except struct.error:
        return None
    if pos != cd_size:
        return None
    try:  # one decode for all: names hold no NUL (the archive rules refuse control characters)
        names = b"\0".join(raws).decode("utf-8").split("\0")
    except UnicodeDecodeError:
        return None
    at_of = dict(zip(names, starts, strict=False))
    if len(names) != count or len(at_of) != count:
        return None
    dirs = {n for n in names if n.endswith("/")} | {names[i] for i in dirs_at}
    return Directory(data, at_of, dirs)
