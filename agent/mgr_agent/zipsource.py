"""The zip readers: :class:`ZipSource`, a package zip checked against every archive rule
of :mod:`mgr_agent.archive` when it is opened, its members read straight from the file
(:mod:`mgr_agent.zipread`); :class:`ZipMembers`, chosen members of the agent's own stored
copy of a package, whose central directory :func:`mgr_agent.zipread.directory` read.
"""

from __future__ import annotations

import copy
import itertools
import os
import stat
import struct
import threading
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from mgr_agent import zipread
from mgr_agent.archive import (
    Collector,
    Entry,
    checked_chunks,
    corrupt,
    head_of,
    read_stream,
    reject,
    sanitize_mode,
    truncated,
)
from mgr_agent.errors import UnsafeArchive
from mgr_agent.limits import Limits

_EOCD = b"PK\x05\x06"


def _check_zip_tail(path: Path, name: str) -> None:
    """Refuse trailing bytes after the end-of-central-directory record."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        back = min(size, 22 + 65535)
        fh.seek(size - back)
        tail = fh.read(back)
    pos = tail.rfind(_EOCD)
    if pos < 0:
        raise truncated(name, "the zip archive is truncated: its end (the central directory) "
                               "is missing")
    while pos >= 0:
        if pos + 22 <= len(tail):
            (comment_len,) = struct.unpack("<H", tail[pos + 20 : pos + 22])
            if pos + 22 + comment_len == len(tail):
                return
        pos = tail.rfind(_EOCD, 0, pos)
    raise UnsafeArchive(
        f"{name}: data after the end of the zip archive (trailing garbage) [rule: zip-trailing-data]",
        entry=name,
        rule="zip-trailing-data",
        hint="the archive has bytes after its end; build it again, or fetch it again if it was "
             "damaged on the way; nothing was written",
    )


def _zip_name(info: zipfile.ZipInfo) -> str:
    # orig_filename: zipfile cuts ``filename`` at the first NUL byte, which would hide it
    if info.flag_bits & 0x800 or info.orig_filename.isascii():
        return info.orig_filename
    raw = info.orig_filename.encode("cp437")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise reject(
            raw.decode("utf-8", "backslashreplace"), "name-not-utf8", "name is not valid UTF-8"
        ) from None


def _member_chunks(fd: int, name: str, member: zipread.Member, size: int) -> Iterator[bytes]:
    """A stored or deflated member read straight from the archive (:mod:`zipread`): its
    declared ``size`` checked, damage reported as ``corrupt-data``."""
    try:
        yield from checked_chunks(name, zipread.chunks(fd, member), size)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise corrupt(name, exc) from exc


class ZipSource:
    """A zip archive, validated on open."""

    kind = "zip"

    def __init__(self, path: Path, limits: Limits) -> None:
        self.path = path
        _check_zip_tail(path, path.name)
        # zipfile counts open members without a lock: opening and closing them from several
        # staging threads at once is serialised here (reading and inflating are not)
        self._open_lock = threading.Lock()
        try:
            self._zf = zipfile.ZipFile(path)
        except UnicodeDecodeError as exc:  # a name flagged UTF-8 that is not
            raw = exc.object if isinstance(exc.object, bytes) else b""
            raise reject(raw.decode("utf-8", "backslashreplace"), "name-not-utf8",
                          "name is flagged UTF-8 but is not valid UTF-8") from exc
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise UnsafeArchive(f"{path.name}: not a readable zip archive: {exc} [rule: zip-format]",
                                rule="zip-format") from exc
        try:
            self._names: dict[str, zipfile.ZipInfo] = {}
            self._members: dict[str, zipread.Member] = {}  # stored or deflated: read directly
            self.entries = self._scan(limits)
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except Exception:
            self._zf.close()
            raise

    def _scan(self, limits: Limits) -> dict[str, Entry]:
        infos = self._zf.infolist()
        if len(infos) > limits.max_entries:
            raise UnsafeArchive(
                f"{self.path.name}: {len(infos)} entries, over the limit of {limits.max_entries} "
                "[rule: too-many-entries]",
                rule="too-many-entries",
            )
        col = Collector(limits)
        spans: list[tuple[int, int, str]] = []
        for info in infos:
            name = _zip_name(info)
            col.check(name)  # before is_dir(), which fails on an empty name
            if col.junk(name, is_dir=info.is_dir()):
                continue
            if info.flag_bits & 0x1:
                raise reject(name, "encrypted-entry", "encrypted entries are not supported")
            unix_mode = info.external_attr >> 16 if info.create_system == 3 else 0
            kind = stat.S_IFMT(unix_mode)
            if info.is_dir() or kind == stat.S_IFDIR:
                col.add_dir(name)
                continue
            if kind not in (0, stat.S_IFREG):
                what = "symbolic link" if kind == stat.S_IFLNK else "device or special file"
                raise reject(name, "special-file", f"is a {what}; only regular files are allowed")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED,
                                          zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
                raise reject(name, "compression", f"unsupported compression method {info.compress_type}")
            if (
                info.file_size > limits.ratio_min_bytes
                and info.file_size > limits.max_ratio * max(info.compress_size, 1)
            ):
                raise reject(
                    name, "compression-ratio",
                    f"expands {info.file_size // max(info.compress_size, 1)}:1, over {limits.max_ratio}:1",
                )
            mode = unix_mode & 0o7777 if unix_mode else 0o644
            col.add_file(name, info.file_size, mode, info.CRC)
            checked = col.check(name)
            self._names[checked] = info
            raw = zipread.raw_name(info)
            if info.compress_type in zipread.FAST_METHODS:
                self._members[checked] = zipread.member(info, raw)
            spans.append((info.header_offset, info.header_offset + 30 + len(raw) + info.compress_size,
                          name))
        spans.sort()
        for (_, end, name), (start, _, other) in itertools.pairwise(spans):
            if start < end:
                raise reject(other, "overlapping-entries", f"its data overlaps that of {name!r}")
        self.skipped = col.skipped
        return col.finish()

    def chunks(self, name: str) -> Iterator[bytes]:
        info = self._names[name]
        fast = self._members.get(name)
        if fast is not None:
            yield from _member_chunks(self._fd, name, fast, info.file_size)
            return
        # zipfile stops at the declared size and, when the CRC was forged to match,
        # silently drops the rest of the data; read to the real end of the compressed
        # stream instead, so that checked_chunks sees a larger real size.
        unbounded = copy.copy(info)
        unbounded.file_size = 1 << 62
        try:
            with self._open_lock:
                fh = self._zf.open(unbounded)
            try:
                yield from checked_chunks(name, read_stream(fh), info.file_size)
            finally:
                with self._open_lock:
                    fh.close()
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:  # lzma/zlib errors
            raise corrupt(name, exc) from exc
        except Exception as exc:
            if type(exc).__module__ in ("zlib", "lzma", "_lzma", "bz2", "_bz2"):
                raise corrupt(name, exc) from exc
            raise

    def fileno(self) -> int:
        """The descriptor members are read through (with ``pread``: no shared offset)."""
        return self._fd

    def member(self, name: str) -> zipread.Member | None:
        """The central directory's record of a stored or deflated entry (what
        :func:`zipread.chunks` reads it with), None for another method."""
        return self._members.get(name)

    def head(self, name: str, size: int) -> bytes:
        fast = self._members.get(name)
        if fast is None:
            return head_of(self.chunks(name), size)
        try:
            return zipread.head(self._fd, fast, size)
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
            raise corrupt(name, exc) from exc

    def close(self) -> None:
        self._zf.close()
        if self._fd >= 0:  # closing twice must never close a descriptor reused meanwhile
            os.close(self._fd)
            self._fd = -1


class ZipMembers:
    """Chosen members of a zip whose central directory :func:`zipread.directory` read: the
    agent's own stored copy of a package, checked by every rule when it was installed, so
    not checked again (only what reading a member checks: its local header, size, CRC-32).
    Only stored and deflated members (:data:`zipread.FAST_METHODS`)."""

    kind = "zip"

    def __init__(self, path: Path, listed: dict[str, zipread.Listed]) -> None:
        self.path = path
        self.skipped: list[str] = []
        self._listed = listed
        modes = {name: e.mode & 0o7777 if e.mode else 0o644 for name, e in listed.items()}
        self.entries = {name: Entry(name, e.size, sanitize_mode(modes[name]), modes[name],
                                    e.member[3]) for name, e in listed.items()}
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def chunks(self, name: str) -> Iterator[bytes]:
        listed = self._listed[name]
        return _member_chunks(self._fd, name, listed.member, listed.size)

    def head(self, name: str, size: int) -> bytes:
        return head_of(self.chunks(name), size)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
