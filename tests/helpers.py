"""Shared test helpers: run the real CLI, snapshot trees byte for byte."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mgr_agent

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.stdout)
        return doc


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


def ok(root: Path, *argv: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``cli`` that must succeed and leave nothing of the transaction behind; its JSON."""
    run = cli(root, *argv, env=env)
    assert run.rc == 0, run.stdout + run.stderr
    assert leftovers(root) == []
    return run.json


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


def _requirements(dist: str, seen: set[str]) -> None:
    """``dist`` and what it needs (no extras), by normalised name."""
    name = re.sub(r"[-_.]+", "-", dist).lower()
    if name in seen:
        return
    seen.add(name)
    for req in importlib.metadata.distribution(name).requires or []:
        if "extra ==" not in req:
            _requirements(re.split(r"[ <>=!~;\[(]", req, maxsplit=1)[0], seen)


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link when the file is readable by all already (the original is never
    changed), else a copy made readable."""
    if os.stat(src).st_mode & 0o004:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)
    os.chmod(dst, os.stat(dst).st_mode | 0o444)


def unprivileged_python(work: Path, uid: int = 65534) -> tuple[list[str], dict[str, str]]:
    """An interpreter and a PYTHONPATH with which ``uid`` can run ``python -m mgr_agent``.

    The checkout and its venv may be readable by root only (a clone under /root, mode
    0700): the package and the distributions it needs are put in ``work`` (readable by
    all), and the interpreter is the first one ``uid`` can start with the same version.
    """
    lib = work / "site"
    if not lib.is_dir():
        shutil.copytree(Path(mgr_agent.__file__).parent, lib / "mgr_agent",
                        ignore=shutil.ignore_patterns("__pycache__"), copy_function=_link_or_copy)
        names: set[str] = set()
        _requirements("mgr-agent", names)
        names.discard("mgr-agent")
        for name in sorted(names):
            dist = importlib.metadata.distribution(name)
            for file in dist.files or []:
                src = Path(str(dist.locate_file(file)))
                if file.parts[0].endswith((".dist-info", ".data")) or "__pycache__" in file.parts \
                        or not src.is_file() or ".." in file.parts:
                    continue
                dst = lib / file
                dst.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(str(src), str(dst))
        for path in [work, *(p for p in work.rglob("*") if p.is_dir())]:
            path.chmod(0o755)
    env = {"PYTHONPATH": str(lib), "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    want = "{}.{}".format(*sys.version_info[:2])
    setpriv = shutil.which("setpriv") or "setpriv"
    candidates = [sys.executable, getattr(sys, "_base_executable", ""), f"/usr/bin/python{want}",
                  "/usr/bin/python3"]
    for python in dict.fromkeys(c for c in candidates if c):
        probe = subprocess.run(
            [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", python, "-c",
             "import sys, mgr_agent.cli, lxml.etree, psutil, requests; "
             "print('{}.{}'.format(*sys.version_info[:2]))"],
            capture_output=True, text=True, env={**os.environ, **env}, cwd="/", check=False,
            timeout=60)
        if probe.returncode == 0 and probe.stdout.strip() == want:
            return [python], env
    raise RuntimeError(f"no Python {want} that uid {uid} can run with {lib}")


def damage(zip_path: Path, data: bytes) -> None:
    """Flip a byte of ``data`` (an incompressible entry's content, which zip stores as
    it is, at least 1,064 bytes) where the archive at ``zip_path`` holds it: its CRC-32
    no longer matches."""
    raw = bytearray(zip_path.read_bytes())
    at = raw.find(data[1000:1064])
    assert at > 0, "the entry's bytes are not in the archive as they are"
    raw[at + 10] ^= 0xFF
    zip_path.write_bytes(bytes(raw))
