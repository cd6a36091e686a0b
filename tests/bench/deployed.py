"""The agent the bench measures: installed the way ``deploy/install.sh`` installs it on a
server, a venv of the distribution's ``python3`` with the agent ``pip install``-ed into it
(not the development venv, which on a build machine may run another interpreter: a pyenv
build without profile-guided optimisation starts and runs the agent 10-15 % slower than
Debian's ``/usr/bin/python3``).

The venv is built once under the bench's work directory and reused while the agent's
sources, ``pyproject.toml`` and the interpreter are the same (its name carries a hash of
them). Building it needs ``python3-venv`` and PyPI (the agent's dependencies); when that
fails the bench measures the current interpreter instead and says so.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.bench.trials import REPO

DISTRIBUTION_PYTHON = Path("/usr/bin/python3")
"""What ``deploy/install.sh`` runs as ``python3`` on a Debian or Ubuntu server."""


def interpreter() -> str:
    """The interpreter a server would run the agent with: ``$BENCH_PYTHON``, else the
    distribution's ``python3``, else the current one."""
    chosen = os.environ.get("BENCH_PYTHON")
    if chosen:
        return chosen
    return str(DISTRIBUTION_PYTHON) if DISTRIBUTION_PYTHON.exists() else sys.executable


def _fingerprint(python: str) -> str:
    digest = hashlib.sha256(os.path.realpath(python).encode())
    for path in sorted((REPO / "agent").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and ".egg-info" not in str(path):
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    digest.update((REPO / "pyproject.toml").read_bytes())
    return digest.hexdigest()[:16]


def _build(venv: Path, python: str) -> None:
    """``python -m venv`` and ``pip install`` of a copy of the checkout, as install.sh does."""
    subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
    with tempfile.TemporaryDirectory(prefix="mga-bench-src-") as build:
        shutil.copytree(REPO / "agent", Path(build) / "agent",
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, Path(build) / name)
        subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", build],
                       check=True, capture_output=True, text=True)
    subprocess.run([str(venv / "bin/mgr-agent"), "--version"], check=True, capture_output=True)


def agent_python(work: Path, python: str | None = None) -> tuple[str, str]:
    """The interpreter of the installed agent to measure (its ``mgr-agent`` script beside
    it) and a line saying what it is; builds the venv under ``work`` when needed."""
    base = python or interpreter()
    if os.path.realpath(base) == os.path.realpath(sys.executable) and python is None:
        return sys.executable, f"this interpreter ({sys.executable})"
    venv = work / f"agent-venv-{_fingerprint(base)}"
    if not (venv / "bin/mgr-agent").exists():
        for old in work.glob("agent-venv-*"):
            shutil.rmtree(old, ignore_errors=True)
        try:
            _build(venv, base)
        except (OSError, subprocess.CalledProcessError) as exc:
            shutil.rmtree(venv, ignore_errors=True)
            detail = getattr(exc, "stderr", "") or str(exc)
            return sys.executable, (f"this interpreter ({sys.executable}): a venv of {base} "
                                    f"could not be built ({str(detail).strip()[-200:]})")
    return str(venv / "bin/python"), f"a venv of {base}, the agent pip-installed as deploy/install.sh does"
