"""ispmanager's ``etc/debug.conf``: set a log level, and put back what was there before.

Lines are ``<log>[.<module>] <level 0-9> [conditions]``, ``SET name=value`` globals and
``#`` comments.  Only the line of the module being set is touched; every other line,
comment and the order are kept.  The line each ``set`` replaced (or its absence) is
saved in the agent's state so that ``restore`` gives back exactly the old file lines.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from mgr_agent.errors import UsageError
from mgr_agent.fsutil import atomic_write

MODULE_RE = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?$")
NO_FILE = "#no-file"
"""Saved-state key (never a line's key) recording that debug.conf did not exist before."""


def key_of(module: str) -> str:
    """``core_module`` means ``ispmgr.core_module``; a dotted name is taken as it is."""
    return module if "." in module else f"ispmgr.{module}"


def _line_key(line: str) -> str | None:
    words = line.split()
    if not words or words[0].startswith("#") or words[0].upper() == "SET":
        return None
    return words[0]


class DebugConf:
    def __init__(self, path: Path, saved: Path) -> None:
        self.path = path
        self.saved = saved

    def _read(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

    def _write(self, lines: list[str]) -> None:
        try:
            mode = stat.S_IMODE(os.stat(self.path).st_mode)
        except FileNotFoundError:
            mode = 0o644
        atomic_write(self.path, ("\n".join(lines) + "\n").encode() if lines else b"", mode)

    def _load_saved(self) -> dict[str, str | None]:
        try:
            data = json.loads(self.saved.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise UsageError(f"{self.saved}: unreadable ({exc}); remove it to forget the saved "
                             "debug.conf lines") from exc
        return {str(k): (None if v is None else str(v)) for k, v in data.items()}

    def set(self, module: str, level: int) -> list[str]:
        """Set ``module``'s level; returns what changed (empty when it already was so)."""
        if not MODULE_RE.match(module):
            raise UsageError(f"module {module!r}: expected a name like core_module or ispmgr.core_module")
        if not 0 <= level <= 9:
            raise UsageError(f"level {level}: must be 0 to 9")
        key = key_of(module)
        lines = self._read()
        saved = self._load_saved()
        if not saved and not self.path.exists():
            saved[NO_FILE] = None
        for i, line in enumerate(lines):
            if _line_key(line) == key:
                words = line.split()
                if words[1:2] == [str(level)]:
                    return []
                saved.setdefault(key, line)
                lines[i] = " ".join([key, str(level), *words[2:]])
                break
        else:
            saved.setdefault(key, None)
            lines.append(f"{key} {level}")
        atomic_write(self.saved, json.dumps(saved, indent=1).encode(), 0o600)
        self._write(lines)
        return [f"{key} {level}"]

    def restore(self) -> list[str]:
        """Put back every line saved by :meth:`set`; keep everything else."""
        saved = self._load_saved()
        if not saved:
            return []
        had_no_file = NO_FILE in saved
        saved.pop(NO_FILE, None)
        lines = self._read()
        out: list[str] = []
        changes: list[str] = []
        for line in lines:
            key = _line_key(line)
            if key in saved:
                original = saved[key]
                if original is not None:
                    out.append(original)
                    changes.append(f"restored {original.strip()}")
                else:
                    changes.append(f"removed {line.strip()}")
                continue
            out.append(line)
        if had_no_file and not any(line.strip() for line in out):
            self.path.unlink(missing_ok=True)  # there was none before: leave none
        else:
            self._write(out)
        self.saved.unlink()
        return changes
