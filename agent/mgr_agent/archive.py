"""Safe reading of package sources: the archive rules, tar archives and directories (zip
archives: :mod:`mgr_agent.zipsource`, on the rules and helpers here).

Every rule of DESIGN §8 is checked when a source is opened, before anything is
written.  Unsafe input is rejected, never "cleaned up".
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mgr_agent.digests import CHUNK
from mgr_agent.errors import InvalidPackage, NotFound, UnsafeArchive
from mgr_agent.limits import Limits
from mgr_agent.shape import is_junk

if TYPE_CHECKING:
    import tarfile


@dataclass(frozen=True)
class Entry:
    """One regular file of a package."""

    name: str
    size: int
    mode: int
    raw_mode: int = 0  # the bits as the archive gave them, before sanitize_mode (for `check`)
    crc32: int | None = None  # from a zip's central directory; tar and directory sources have none


class Source(Protocol):
    """A package's files, validated; read them with :meth:`chunks`."""

    path: Path
    kind: str
    entries: dict[str, Entry]
    skipped: list[str]
    """VCS and editor files (:func:`mgr_agent.shape.is_junk`), checked but never entries."""

    def chunks(self, name: str) -> Iterator[bytes]: ...

    def head(self, name: str, size: int) -> bytes:
        """At most the first ``size`` bytes of entry ``name``, reading no more than that."""
        ...

    def close(self) -> None: ...


def head_of(chunks: Iterator[bytes], size: int) -> bytes:
    """The first ``size`` bytes of a stream of chunks; the stream is closed after them."""
    parts: list[bytes] = []
    have = 0
    try:
        for chunk in chunks:
            parts.append(chunk)
            have += len(chunk)
            if have >= size:
                break
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return b"".join(parts)[:size]


def reject(name: str, rule: str, why: str) -> UnsafeArchive:
    return UnsafeArchive(f"entry {name!r}: {why} [rule: {rule}]", entry=name, rule=rule)


TRUNCATED_HINT = ("the file is incomplete (an interrupted download or copy?): fetch or copy it "
                  "again; nothing was written")
DAMAGED_HINT = "the archive is damaged: build or fetch it again; nothing was written"


def truncated(name: str, why: str) -> UnsafeArchive:
    return UnsafeArchive(f"{name}: {why} [rule: truncated]", entry=name, rule="truncated",
                         hint=TRUNCATED_HINT)


def corrupt(name: str, exc: BaseException) -> UnsafeArchive:
    err = reject(name, "corrupt-data", f"cannot be read: {exc}")
    err.hint = DAMAGED_HINT
    return err


def sanitize_mode(mode: int) -> int:
    """Permission bits taken from an archive: no setuid/setgid/sticky, no group/other write."""
    return mode & 0o755


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_name(name: str, limits: Limits) -> str:
    """Validate an archive member name and return it without a trailing slash."""
    if not name:
        raise reject(name, "empty-name", "empty name")
    control = _CONTROL.search(name)  # one pass in C: this runs several times per entry
    if control is not None:
        code = ord(control.group())
        raise reject(name, "control-character", f"name holds control character U+{code:04X}")
    if "\\" in name:
        raise reject(name, "backslash", "backslashes are not allowed in names")
    if name.startswith("/"):
        raise reject(name, "absolute-path", "absolute paths are not allowed")
    if len(name) >= 2 and name[1] == ":" and name[0].isalpha():
        raise reject(name, "drive-letter", "drive-letter paths are not allowed")
    trimmed = name[:-1] if name.endswith("/") else name
    plain = trimmed.isascii()  # the usual case: a character is a byte
    size = len(trimmed) if plain else len(trimmed.encode("utf-8", "surrogateescape"))
    if size > limits.max_path_bytes:
        raise reject(name, "path-too-long", f"path is {size} bytes, over {limits.max_path_bytes}")
    parts = trimmed.split("/")
    if plain and ".." not in parts and "" not in parts and "." not in parts \
            and max(map(len, parts)) <= limits.max_component_bytes:
        return trimmed  # the loop below finds nothing (it names the first offender)
    for part in parts:
        if part == "..":
            raise reject(name, "path-traversal", "'..' components are not allowed")
        if part in ("", "."):
            raise reject(name, "empty-component", "empty or '.' path components are not allowed")
        if len(part.encode("utf-8", "surrogateescape")) > limits.max_component_bytes:
            raise reject(name, "name-too-long", f"a component is over {limits.max_component_bytes} bytes")
    return trimmed


class Collector:
    """Accumulates entries and enforces the whole-archive rules."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.entries: dict[str, Entry] = {}
        self.dirs: set[str] = set()
        self.folded: dict[str, str] = {}
        self.total = 0
        self.count = 0
        self.skipped: list[str] = []
        self._last: tuple[str, str] = ("", "")

    def check(self, raw: str) -> str:
        """:func:`check_name`, once per name: it is asked about the same name several
        times in a row while one entry is read."""
        if raw and raw == self._last[0]:
            return self._last[1]
        name = check_name(raw, self.limits)
        self._last = (raw, name)
        return name

    def junk(self, raw: str, *, is_dir: bool = False) -> bool:
        """Whether ``raw`` is VCS/editor junk (its name checked all the same); files are
        recorded in ``skipped``."""
        name = self.check(raw)
        if not is_junk(name):
            return False
        self._count(name)
        if not is_dir:
            self.skipped.append(name)
        return True

    def _fold(self, name: str) -> None:
        # NFC leaves an ASCII name as it is
        key = name.casefold() if name.isascii() else unicodedata.normalize("NFC", name).casefold()
        other = self.folded.get(key)
        if other is not None and other != name:
            raise reject(
                name, "case-collision", f"differs from {other!r} only by case or Unicode normalisation"
            )
        self.folded[key] = name

    def add_dir(self, raw: str) -> None:
        name = self.check(raw)
        self._count(name)
        if name in self.entries:
            raise reject(name, "overlapping-entries", "is both a file and a directory")
        self._fold(name)
        self.dirs.add(name)

    def add_file(self, raw: str, size: int, mode: int, crc32: int | None = None) -> None:
        name = self.check(raw)
        self._count(name)
        if raw.endswith("/"):
            raise reject(raw, "overlapping-entries", "a file entry cannot end with '/'")
        if name in self.entries:
            raise reject(name, "duplicate-name", "appears more than once")
        if name in self.dirs:
            raise reject(name, "overlapping-entries", "is both a file and a directory")
        if size > self.limits.max_entry_bytes:
            raise reject(name, "entry-too-large", f"{size} bytes is over {self.limits.max_entry_bytes}")
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise reject(name, "total-too-large", f"total size is over {self.limits.max_total_bytes} bytes")
        self._fold(name)
        self.entries[name] = Entry(name, size, sanitize_mode(mode), mode & 0o7777, crc32)

    def _count(self, name: str) -> None:
        self.count += 1
        if self.count > self.limits.max_entries:
            raise reject(name, "too-many-entries", f"more than {self.limits.max_entries} entries")

    def finish(self) -> dict[str, Entry]:
        """Refuse a file used as a directory by another entry."""
        clear: set[str] = set()  # folders already found to be no file's name, nor above one
        for name in self.entries:
            parent = name.rpartition("/")[0]
            while parent and parent not in clear:
                if parent in self.entries:
                    raise reject(name, "overlapping-entries", f"lies under {parent!r}, which is a file")
                clear.add(parent)
                parent = parent.rpartition("/")[0]
        return self.entries


def checked_chunks(name: str, stream: Iterator[bytes], declared: int) -> Iterator[bytes]:
    seen = 0
    for chunk in stream:
        seen += len(chunk)
        if seen > declared:
            raise reject(name, "size-mismatch", f"holds more than its declared {declared} bytes")
        yield chunk
    if seen != declared:
        raise reject(name, "size-mismatch", f"holds {seen} bytes, but declares {declared}")


def read_stream(fh: object) -> Iterator[bytes]:
    read = fh.read  # type: ignore[attr-defined]
    while True:
        chunk = read(CHUNK)
        if not chunk:
            return
        yield chunk


class TarSource:
    """A tar archive (optionally gzip/bzip2/xz compressed), validated on open."""

    kind = "tar"

    def __init__(self, path: Path, limits: Limits) -> None:
        import tarfile  # noqa: PLC0415 - tarfile only for a tar: uninstall reads a stored zip

        self.path = path
        try:
            self._tf = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by close()
            members = []
            for member in self._tf:
                members.append(member)
                if len(members) > limits.max_entries:
                    raise UnsafeArchive(
                        f"{path.name}: more than {limits.max_entries} entries [rule: too-many-entries]",
                        rule="too-many-entries",
                    )
        except (tarfile.TarError, OSError, EOFError) as exc:
            if isinstance(exc, EOFError) or any(
                    k in str(exc) for k in ("empty header", "truncated header", "ended before",
                                            "unexpected end")):
                raise truncated(path.name, f"the tar archive is truncated: it ends inside an "
                                            f"entry ({exc})") from exc
            raise UnsafeArchive(f"{path.name}: not a readable tar archive: {exc} [rule: tar-format]",
                                rule="tar-format", hint=DAMAGED_HINT) from exc
        col = Collector(limits)
        self._members: dict[str, tarfile.TarInfo] = {}
        for member in members:
            raw = member.name
            # `tar -C DIR .` writes "./" and "./name": the one prefix tar itself adds.
            if raw in (".", "./"):
                continue
            if raw.startswith("./"):
                raw = raw[2:]
                member.name = raw
            if any(0xDC80 <= ord(c) <= 0xDCFF for c in raw):
                raise reject(raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"),
                              "name-not-utf8", "name is not valid UTF-8")
            if col.junk(raw, is_dir=member.isdir()):
                continue
            if member.isdir():
                col.add_dir(raw)
            elif member.isfile():
                col.add_file(raw, member.size, member.mode)
                self._members[col.check(raw)] = member
            else:
                what = "link" if member.issym() or member.islnk() else "device or special file"
                raise reject(raw, "special-file", f"is a {what}; only regular files are allowed")
        self.entries = col.finish()
        self.skipped = col.skipped

    def chunks(self, name: str) -> Iterator[bytes]:
        import tarfile  # noqa: PLC0415

        member = self._members[name]
        try:
            fh = self._tf.extractfile(member)
            if fh is None:
                raise reject(name, "special-file", "is not a regular file")
            yield from checked_chunks(name, read_stream(fh), member.size)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise corrupt(name, exc) from exc

    def head(self, name: str, size: int) -> bytes:
        return head_of(self.chunks(name), size)

    def close(self) -> None:
        self._tf.close()


def _junk_files(full: Path, rel: str) -> list[str]:
    """The files of a junk path of a directory source (itself when it is not a folder)."""
    if not full.is_dir() or full.is_symlink():
        return [rel]
    found = []
    for dirpath, _, filenames in os.walk(full):
        base = rel + "/" + Path(dirpath).relative_to(full).as_posix()
        found += [f"{base.removesuffix('/.')}/{f}" for f in filenames]
    return found


class DirSource:
    """A directory, for plugin authors; links and special files are refused like in archives."""

    kind = "dir"

    def __init__(self, path: Path, limits: Limits) -> None:
        self.path = path
        col = Collector(limits)
        for dirpath, dirnames, filenames in os.walk(path):
            base = Path(dirpath)
            for entry in sorted(dirnames) + sorted(filenames):
                full = base / entry
                rel = full.relative_to(path).as_posix()
                if is_junk(rel):  # a working copy's .git/ may hold sockets: never looked into
                    col.skipped += _junk_files(full, rel)
                    continue
                st = os.lstat(full)
                if stat.S_ISDIR(st.st_mode):
                    col.add_dir(rel + "/")
                elif stat.S_ISREG(st.st_mode):
                    col.add_file(rel, st.st_size, stat.S_IMODE(st.st_mode))
                else:
                    what = "symbolic link" if stat.S_ISLNK(st.st_mode) else "device or special file"
                    raise reject(rel, "special-file", f"is a {what}; only regular files are allowed")
            dirnames[:] = [d for d in dirnames if not is_junk(d)]
        self.entries = col.finish()
        self.skipped = col.skipped

    def chunks(self, name: str) -> Iterator[bytes]:
        declared = self.entries[name].size
        with open(self.path / name, "rb") as fh:
            yield from checked_chunks(name, read_stream(fh), declared)

    def head(self, name: str, size: int) -> bytes:
        return head_of(self.chunks(name), size)

    def close(self) -> None:
        pass


def open_source(path: Path, limits: Limits | None = None) -> Source:
    """Open a zip, tar or directory as a validated :class:`Source`."""
    limits = limits or Limits()
    if not os.path.lexists(path):
        raise NotFound(f"{path}: no such file or directory")
    if path.is_dir():
        return DirSource(path, limits)
    if path.stat().st_size == 0:
        raise InvalidPackage(f"{path}: the file is empty (0 bytes)", rule="empty",
                             hint=TRUNCATED_HINT)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] == b"PK" or zipfile.is_zipfile(path):
        from mgr_agent.zipsource import ZipSource  # noqa: PLC0415 - it builds on this module

        return ZipSource(path, limits)
    import tarfile  # noqa: PLC0415

    if tarfile.is_tarfile(path):
        return TarSource(path, limits)
    raise InvalidPackage(f"{path}: neither a zip nor a tar archive nor a directory", rule="format")


def read_all(source: Source, name: str) -> bytes:
    return b"".join(source.chunks(name))
