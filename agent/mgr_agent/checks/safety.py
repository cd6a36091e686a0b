"""Checks for both panels: XML safety, modes the installer drops, large files, secrets.

The archive rules of DESIGN §8 (paths, links, sizes, names) are enforced when the source
is opened (:mod:`mgr_agent.archive`); ``check`` reports a refusal there as a finding whose
code is the rule's name. What is here is what can be said once the entries are readable.
VCS/editor files and files a panel does not install are not findings: the package reader
skips them and says so in one summary line (``package.skip_notes``).
"""

from __future__ import annotations

import re

from mgr_agent.checks.base import Context, Files, find
from mgr_agent.findings import Finding
from mgr_agent.secretscan import BINARY_PEEK, Hit, secret_hits

LARGE_FILE = 10 * 1024 * 1024        # bytes; a file this big in a plugin is usually a mistake
SCAN_LIMIT = 4 * 1024 * 1024          # files over this are not scanned for secrets
WHOLE = 64 * 1024  # bytes: a file up to this size is read whole before the binary test
DROPPED_BITS = 0o7022                 # setuid, setgid, sticky, group and other write

SECRET_NAMES = re.compile(r"(^|/)(\.env(\.[\w-]+)?|id_(rsa|dsa|ecdsa|ed25519)|\.npmrc|\.pypirc|"
                          r"\.netrc|\.htpasswd|\.git-credentials|[^/]+\.(key|p12|pfx))$")
SECRET_NAME_EXCEPTIONS = re.compile(r"(^|/)\.env\.(example|sample|dist|template)$")


def xml_safety(files: Files, ctx: Context) -> list[Finding]:
    """Every ``.xml`` entry parses safely (no entities, no external DTD, well-formed, bounded)."""
    out: list[Finding] = []
    for rel in files:
        if not rel.endswith(".xml") or files.xml(rel) is not None:
            continue
        exc = files.xml_errors[rel]
        rule = str(exc.details.get("rule", exc.code))
        cause = exc.__cause__
        line = getattr(cause, "lineno", None) if cause is not None else None
        fix = {"xml-entities": "remove the DOCTYPE's entity declarations and entity references",
               "xml-external-dtd": "remove the DOCTYPE that points at an external DTD",
               "xml-size": "split or shrink the file (4 MiB at most)"}.get(
            rule, "make the file well-formed XML (an XML editor or `xmllint --noout` shows where)")
        out.append(find(rule, "error", exc.message, fix, rel, line if isinstance(line, int) else None))
    return out


def modes(files: Files, ctx: Context) -> list[Finding]:
    """Bits the installer drops (setuid, setgid, sticky, group/other write) are reported."""
    out: list[Finding] = []
    for rel in files:
        raw = files.source.entries[files.full[rel]].raw_mode
        dropped = raw & DROPPED_BITS
        if dropped:
            out.append(find("mode-dropped", "warning",
                            f"mode {raw:04o} has bits the installer drops ({dropped:04o}); it installs "
                            f"as {raw & 0o755:04o}",
                            f"chmod {raw & 0o755:o} the file before packing", rel))
    return out


def sizes(files: Files, ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    for rel in files:
        size = files.size(rel)
        if size > LARGE_FILE:
            out.append(find("file-large", "warning",
                            f"{size / 1048576:.1f} MiB, over {LARGE_FILE // 1048576} MiB",
                            "leave build artefacts, dumps and media out of the package, or fetch "
                            "them at install time", rel))
    return out


def secrets(files: Files, ctx: Context) -> list[Finding]:
    """Private keys, tokens and credential files committed by mistake."""
    out: list[Finding] = []
    later: list[str] = []  # scanned as they were hashed: their hits are waited for last
    for rel in files:
        if SECRET_NAMES.search(rel) and not SECRET_NAME_EXCEPTIONS.search(rel):
            out.append(find("secret-file", "warning",
                            "a credentials file (keys, .env, .netrc, .htpasswd ...) is in the package",
                            "remove it from the package and rotate what it holds", rel))
        if files.size(rel) > SCAN_LIMIT or not files.changed(rel):
            continue
        if files.scanning(rel):
            later.append(rel)
            continue
        # a small file is read whole at once (a text file would be, next), a large one
        # only its head first: one inflate of each text file, at most WHOLE of a binary one
        data = files.read(rel) if files.size(rel) <= WHOLE else None
        if data is None and b"\0" in files.head(rel, BINARY_PEEK):
            continue
        out += _findings(rel, secret_hits(data if data is not None else files.read(rel)))
    for rel in later:
        out += _findings(rel, files.scanned(rel))
    return out


def _findings(rel: str, hits: list[Hit] | None) -> list[Finding]:
    out = []
    for code, what, line in hits or []:
        if code == "secret-private-key":
            out.append(find(code, "warning", f"holds a {what}",
                            "remove the key from the package, rotate it, and create keys on the "
                            "server at install time", rel, line))
        else:
            out.append(find(code, "warning", f"holds what looks like {what}",
                            "remove it, revoke it, and read tokens from the server's "
                            "configuration instead", rel, line))
    return out


VALIDATORS = (xml_safety, modes, sizes, secrets)
