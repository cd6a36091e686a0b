"""Shared test helpers: run the real CLI, snapshot trees byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)


def cli(root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120,
        as_json: bool = True) -> Run:
    """Run ``mgr-agent --root ROOT ARGS`` in a subprocess (``--json`` appended by default)."""
    argv = [sys.executable, "-m", "mgr_agent", "--root", str(root), *args]
    if as_json:
        argv.append("--json")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MGR_AGENT_")}
    full_env.update(env or {})
    done = subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=timeout,
                          check=False)
    return Run(done.returncode, done.stdout, done.stderr)


def snapshot(root: Path, *, skip_state: bool = True) -> dict[str, tuple[str, int, str]]:
    """Every entry under ``root``: path -> (type, mode, sha256 or link target).

    The agent's own state dir is left out by default (it legitimately changes).
    """
    out: dict[str, tuple[str, int, str]] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        rel_base = base.relative_to(root).as_posix()
        if skip_state and (rel_base == "var/lib/mgr-agent" or rel_base.startswith("var/lib/mgr-agent/")):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = base / name
            rel = path.relative_to(root).as_posix()
            if skip_state and rel == "var/lib/mgr-agent":
                continue
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), "")
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(path))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def full_snapshot(root: Path) -> dict[str, tuple[str, int, str]]:
    """Like :func:`snapshot` but including the agent's state dir."""
    return snapshot(root, skip_state=False)


def leftovers(root: Path) -> list[str]:
    """Staging/backup files and scratch dirs the agent must never leave behind."""
    found = [p.relative_to(root).as_posix() for p in root.rglob(".mga-*")]
    tmp = root / "var/lib/mgr-agent/tmp"
    if tmp.is_dir():
        found += [p.relative_to(root).as_posix() for p in tmp.iterdir()]
    journal = root / "var/lib/mgr-agent/journal"
    if journal.is_dir():
        found += [p.relative_to(root).as_posix() for p in journal.iterdir()]
    return sorted(found)
