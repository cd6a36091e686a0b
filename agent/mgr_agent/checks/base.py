"""What every validator works on: the package's files by package-relative name, read once.

A validator is a function ``(files, ctx) -> list[Finding]``. It reads entries through
:class:`Files` (bytes cached, XML parsed once through :mod:`mgr_agent.xmlsafe`) and never
trusts what it reads: sizes, modes and PNG headers are checked from the bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mgr_agent import xmlsafe
from mgr_agent.archive import Source
from mgr_agent.errors import InvalidXML
from mgr_agent.findings import Finding, Severity
from mgr_agent.proc import Runner


class Scans(Protocol):
    """Entries scanned where they are hashed in the background (``hashing.Threads``, or
    the helper process of ``hashproc``): which, and the results."""

    names: frozenset[str]

    def results(self) -> Mapping[str, Any]: ...


class Files:
    """A package's files under their package-relative names (wrapping folder removed)."""

    def __init__(self, source: Source, prefix: str, names: dict[str, str],
                 inflated: dict[str, bytes] | None = None,
                 same: frozenset[str] = frozenset(), scans: Scans | None = None) -> None:
        """``names``: package-relative name -> source entry; ``prefix``: the folder the
        package lies under in ``source``; ``inflated``: entries already in memory;
        ``same``: entries that hold the installed version's content (an upgrade: they were
        scanned when it was installed); ``scans``: the entries the package's hashing thread
        scans for secrets as it reads them, and their results (waited for)."""
        self.source = source
        self.prefix = prefix
        self.inflated = inflated if inflated is not None else {}
        self.same = same
        self.scans = scans
        self.full = dict(sorted(names.items()))
        self._xml: dict[str, xmlsafe.Element | None] = {}
        self.xml_errors: dict[str, InvalidXML] = {}

    def __contains__(self, rel: object) -> bool:
        return rel in self.full

    def __iter__(self) -> Iterator[str]:
        return iter(self.full)

    def under(self, folder: str) -> list[str]:
        """Names inside ``folder`` (given with its trailing slash)."""
        return [n for n in self.full if n.startswith(folder)]

    def size(self, rel: str) -> int:
        return self.source.entries[self.full[rel]].size

    def mode(self, rel: str) -> int:
        """Permission bits as installed (setuid/setgid and group/other write dropped)."""
        return self.source.entries[self.full[rel]].mode

    def changed(self, rel: str) -> bool:
        """Whether the content scans (secrets, PHP class names) need to read ``rel``: not
        when it is the installed version's content, unread on an upgrade."""
        return self.full[rel] not in self.same

    def scanning(self, rel: str) -> bool:
        """Whether ``rel`` is scanned for secrets on the package's hashing thread."""
        return self.scans is not None and self.full[rel] in self.scans.names

    def scanned(self, rel: str) -> Any:
        """That scan's result for ``rel`` (``safety.secret_hits``), once the thread is done."""
        assert self.scans is not None
        return self.scans.results()[self.full[rel]]

    def read(self, rel: str) -> bytes:
        full = self.full[rel]
        data = self.inflated.get(full)
        return data if data is not None else b"".join(self.source.chunks(full))

    def head(self, rel: str, size: int) -> bytes:
        """The first ``size`` bytes of ``rel`` (fewer when it is shorter)."""
        full = self.full[rel]
        data = self.inflated.get(full)
        return data[:size] if data is not None else self.source.head(full, size)

    def xml(self, rel: str) -> xmlsafe.Element | None:
        """The parsed document, or None when it is not safe, well-formed XML (the
        ``xml-*`` finding for it is reported once, by the common checks)."""
        if rel not in self._xml:
            try:
                self._xml[rel] = xmlsafe.parse(self.read(rel), rel)
            except InvalidXML as exc:
                self._xml[rel] = None
                self.xml_errors[rel] = exc
        return self._xml[rel]


@dataclass
class Context:
    """What the validators may use besides the files."""

    runner: Runner
    php: tuple[str, ...] | None = None  # the PHP command for `php -l`; None: hooks not linted
    mgr: Path | None = None         # the server's MGR, for handlers already installed there
    notes: list[str] = field(default_factory=list)


def find(code: str, severity: Severity, message: str, fix: str, file: str | None = None,
         line: int | None = None) -> Finding:
    """A finding; the argument order reads like the text form."""
    return Finding(code=code, severity=severity, message=message, fix=fix, file=file, line=line)


def line_of(data: bytes, offset: int) -> int:
    """1-based line number of byte ``offset``."""
    return data.count(b"\n", 0, offset) + 1


Validator = Callable[[Files, Context], list[Finding]]
