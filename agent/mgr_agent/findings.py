"""Findings of the validators (`check`, `aps check`): one shape, one text and JSON form.

A finding has a stable kebab-case ``code``, a ``severity`` (error or warning), the file it
is about (a path inside the package or the panel tree), a line when known, what is wrong
and a one-line fix. Errors make ``install`` refuse; warnings do not (unless strict).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict

Severity = Literal["error", "warning"]


class FindingDict(TypedDict):
    """The JSON form of a finding."""

    code: str
    severity: Severity
    file: str | None
    line: int | None
    message: str
    fix: str


@dataclass(frozen=True)
class Finding:
    """One problem found in a package or a panel file."""

    code: str
    severity: Severity
    message: str
    fix: str
    file: str | None = None
    line: int | None = None

    @property
    def where(self) -> str:
        """``file:line``, ``file`` or empty."""
        if self.file is None:
            return ""
        return self.file if self.line is None else f"{self.file}:{self.line}"

    def text(self) -> str:
        """One line for people: ``error[code] file:line: message (fix: …)``."""
        where = f" {self.where}:" if self.where else ""
        return f"{self.severity}[{self.code}]{where} {self.message} (fix: {self.fix})"

    def to_dict(self) -> FindingDict:
        return {"code": self.code, "severity": self.severity, "file": self.file,
                "line": self.line, "message": self.message, "fix": self.fix}


def errors(findings: list[Finding], *, strict: bool = False) -> list[Finding]:
    """The findings that refuse: errors, and warnings too when ``strict``."""
    return [f for f in findings if strict or f.severity == "error"]


def ordered(findings: list[Finding]) -> list[Finding]:
    """Errors first, then by file, line and code, so output is stable."""
    return sorted(findings, key=lambda f: (f.severity != "error", f.file or "", f.line or 0, f.code))
