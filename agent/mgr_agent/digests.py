"""A file's content: its sha256, by path or through a descriptor, and whether two files
hold the same bytes.  Imports only the standard library, so that the hashing helper
process (:mod:`mgr_agent.hashproc`) starts without the agent's filesystem layer."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK = 1 << 20
"""Bytes read or written at a time, across the agent."""


def sha256_file(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return sha256_fd(fd)
    finally:
        os.close(fd)


def sha256_fd(fd: int) -> str:
    """The sha256 of the whole file ``fd`` reads, with ``pread`` (its offset untouched)."""
    digest = hashlib.sha256()
    at = 0
    while piece := os.pread(fd, CHUNK, at):
        digest.update(piece)
        at += len(piece)
    return digest.hexdigest()


def same_bytes(a: Path, b: Path, chunk: int = CHUNK) -> bool:
    """Whether the files ``a`` and ``b`` hold the same bytes (the caller knows their sizes
    are equal): read side by side into two reused buffers and compared with ``memcmp``,
    which costs half of hashing one of them (37 MB: 13 against 29 ms)."""
    with open(a, "rb", buffering=0) as fa, open(b, "rb", buffering=0) as fb:
        left, right = bytearray(chunk), bytearray(chunk)
        while True:
            n, m = fa.readinto(left), fb.readinto(right)
            if n != m or (left != right if n == chunk else left[:n] != right[:n]):
                return False
            if n == 0:
                return True
