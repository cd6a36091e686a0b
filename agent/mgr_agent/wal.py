"""The write-ahead journal of one transaction: one line per step, each checksummed.

A record is fsynced before the step it announces starts, so a torn last record
means its step never began.  Damage anywhere but at the end is reported, never guessed.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgr_agent.errors import StateCorrupt
from mgr_agent.fsutil import fsync_dir, makedirs_durable

PHASES = ("begin", "staged", "switching", "switched")
REGISTER = "register"  # written before the panel's registry (Plesk's) is changed; not a phase
SWITCH_DIR = "switch-dir"  # written before a whole-directory switch (or its per-file fallback); not a phase


def _inodes(record: dict[str, Any]) -> dict[int, int]:
    """The staged record's ``dirs``: staged directory tree number -> its inode."""
    return {int(k): int(v) for k, v in dict(record.get("dirs") or {}).items()}


def _line(record: dict[str, Any]) -> bytes:
    body = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
    return b"%08x " % zlib.crc32(body) + body + b"\n"


@dataclass
class Replay:
    """What a journal file says: the begin record, the last phase reached, any torn tail."""

    path: Path
    begin: dict[str, Any] | None
    phase: str
    torn: str | None
    registered: bool = False  # the panel's registry may have been changed
    dirs: dict[int, dict[str, Any]] = field(default_factory=dict)  # switch-dir records by "k"
    staged_dirs: dict[int, int] = field(default_factory=dict)  # the staged record's tree inodes

    @property
    def tx(self) -> str:
        return self.path.stem


class Journal:
    """Appends records to ``journal/<tx>.log`` durably."""

    def __init__(self, directory: Path, tx: str) -> None:
        makedirs_durable(directory)
        self.path = directory / f"{tx}.log"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        self._new = True
        self.phase = ""
        self.registered = False
        self.dirs: dict[int, dict[str, Any]] = {}
        self.staged_dirs: dict[int, int] = {}

    def write(self, record: dict[str, Any]) -> None:
        os.write(self._fd, _line(record))
        os.fsync(self._fd)
        if self._new:
            fsync_dir(self.path.parent)
            self._new = False
        if record.get("type") == REGISTER:
            self.registered = True
        elif record.get("type") == SWITCH_DIR:
            self.dirs[int(record["k"])] = record
        else:
            if record.get("type") == "staged":  # updated in place: a DirSwitch holds this dict
                self.staged_dirs.update(_inodes(record))
            self.phase = str(record.get("type", ""))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        fsync_dir(self.path.parent)


def replay(path: Path) -> Replay:
    """Read a journal; a damaged last line is a torn write, damage before it is corruption."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    begin: dict[str, Any] | None = None
    phase = ""
    registered = False
    dirs: dict[int, dict[str, Any]] = {}
    staged_dirs: dict[int, int] = {}
    torn: str | None = None
    if tail:
        torn = f"an unterminated last record of {len(tail)} bytes"
    for index, line in enumerate(complete):
        record: dict[str, Any] | None = None
        head, _, body = line.partition(b" ")
        try:
            if int(head, 16) == zlib.crc32(body):
                record = json.loads(body)
        except ValueError:
            record = None
        if record is None or not isinstance(record, dict):
            if index == len(complete) - 1 and not tail:
                torn = f"a damaged last record (line {index + 1})"
                break
            raise StateCorrupt(
                f"{path}: record {index + 1} of {len(complete)} is damaged; refusing to guess",
                hint="the journal was altered or the disk is failing; inspect the file by hand",
            )
        kind = record.get("type")
        if index == 0:
            if kind != "begin":
                raise StateCorrupt(f"{path}: does not start with a begin record")
            begin = record
        if kind == REGISTER:
            registered = True
            continue
        if kind == SWITCH_DIR:
            dirs[int(record["k"])] = record
            continue
        if kind not in PHASES:
            raise StateCorrupt(f"{path}: unknown record type {kind!r} at line {index + 1}")
        if kind == "staged":
            staged_dirs = _inodes(record)
        phase = str(kind)
    return Replay(path=path, begin=begin, phase=phase, torn=torn, registered=registered, dirs=dirs,
                  staged_dirs=staged_dirs)
