"""``ApsExtRepository URL`` lines of ispmanager's ``etc/ispmgr.conf``.

The file is handled as bytes, line by line: adding a repository inserts one line (after
the last ``ApsExtRepository`` line, else at the end, with the file's own line ending),
removing one deletes only its lines, and every other byte — comments, order, blank lines,
a missing final newline — stays as it was.  ``#`` lines are comments and never count.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from mgr_agent.aps import InvalidRepository
from mgr_agent.errors import NotFound
from mgr_agent.fsutil import atomic_write

KEY = b"ApsExtRepository"
_LINE = re.compile(rb"^[ \t]*ApsExtRepository[ \t]+(\S+)[ \t]*\r?\n?$")
_BAD = re.compile(r"[\s\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Repository:
    url: str
    line: int


def check_url(url: str) -> list[str]:
    """Refuse what the panel could not fetch; return warnings (plain http)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidRepository(f"repository URL {url!r}: must start with https:// or http://",
                                hint="the panel fetches repository descriptions over HTTP(S)")
    if _BAD.search(url):
        raise InvalidRepository(f"repository URL {url!r}: must not contain spaces or control "
                                "characters (ispmgr.conf takes one word per value)")
    if not parts.hostname:
        raise InvalidRepository(f"repository URL {url!r}: no host")
    if parts.scheme == "http":
        return [f"{url}: plain http; the panel will fetch this repository unauthenticated "
                "and unencrypted (prefer https)"]
    return []


class IspmgrConf:
    """The repository lines of one ``ispmgr.conf`` (which must exist)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{self.path}: no such file; is ispmanager installed under this root?",
                           hint="the panel creates etc/ispmgr.conf when it is installed") from None

    def repositories(self) -> list[Repository]:
        return repositories(self.read())

    def write(self, data: bytes) -> None:
        mode = stat.S_IMODE(os.stat(self.path).st_mode)
        atomic_write(self.path, data, mode)


def repositories(data: bytes) -> list[Repository]:
    return [Repository(url, n) for n, url in _repo_lines(data)]


def added(data: bytes, url: str) -> bytes:
    """``data`` with a line for ``url`` (unchanged when one is there)."""
    found = _repo_lines(data)
    if any(u == url for _, u in found):
        return data
    lines = data.splitlines(keepends=True)
    eol = _eol(lines)
    at = found[-1][0] if found else len(lines)
    if at > 0 and not lines[at - 1].endswith((b"\n", b"\r")):
        lines[at - 1] += eol
    lines.insert(at, KEY + b" " + url.encode() + eol)
    return b"".join(lines)


def removed(data: bytes, url: str) -> bytes:
    """``data`` without the lines naming ``url``."""
    drop = {n for n, u in _repo_lines(data) if u == url}
    if not drop:
        return data
    return b"".join(line for n, line in enumerate(data.splitlines(keepends=True), 1) if n not in drop)


def _repo_lines(data: bytes) -> list[tuple[int, str]]:
    """(1-based line number, URL) of every repository line."""
    out = []
    for n, line in enumerate(data.splitlines(keepends=True), 1):
        m = _LINE.match(line)
        if m:
            out.append((n, m.group(1).decode("utf-8", "replace")))
    return out


def _eol(lines: list[bytes]) -> bytes:
    """The file's line ending (CRLF when its first line has one), LF by default."""
    return b"\r\n" if lines and lines[0].endswith(b"\r\n") else b"\n"
