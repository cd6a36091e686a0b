"""What the secrets check looks for in a file's bytes: private keys and well-known token
formats.  A module of its own, importing only :mod:`re`, so that the hashing helper
process (:mod:`mgr_agent.hashproc`) can scan the entries it reads without the checks'
imports; the findings are made in :mod:`mgr_agent.checks.safety`."""

from __future__ import annotations

import re

# a file with a NUL byte in its first 8,000 bytes is binary (git's and grep's test) and
# not scanned for secrets: images, fonts and compressed data hold no readable token
BINARY_PEEK = 8000

PRIVATE_KEY = re.compile(rb"-----BEGIN ((?:RSA |DSA |EC |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY"
                         rb"(?: BLOCK)?)-----")
# Each pattern starts with a literal, which the regex engine searches for quickly.
TOKENS = (
    (re.compile(rb"AKIA[0-9A-Z]{16}(?![0-9A-Z])"), "an AWS access key id"),
    (re.compile(rb"gh[pousr]_[A-Za-z0-9]{36,}"), "a GitHub token"),
    (re.compile(rb"xox[abpr]-[A-Za-z0-9-]{10,}"), "a Slack token"),
)

Hit = tuple[str, str, int]  # a secret found: its code, what it is, its line


def _line(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def secret_hits(data: bytes) -> list[Hit] | None:
    """The secrets in a file's bytes; None for a binary file (not scanned).  Run by the
    secrets validator, or where the entries a package does not keep in memory are hashed
    (``package.load(scan=...)``: its threads, or the helper process), which then need no
    second read."""
    if b"\0" in data[:BINARY_PEEK]:
        return None
    hits: list[Hit] = []
    match = PRIVATE_KEY.search(data) if b"PRIVATE KEY-----" in data else None
    if match is not None:
        hits.append(("secret-private-key", match.group(1).decode().lower(),
                     _line(data, match.start())))
    for pattern, what in TOKENS:
        token = pattern.search(data)
        if token is not None:
            hits.append(("secret-token", what, _line(data, token.start())))
    return hits
