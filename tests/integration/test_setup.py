"""Set-up on a fresh box (issue 11): a clean build, and a demo that leaves nothing running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import REPO


def _tracked(dest: Path) -> Path:
    """The checkout's tracked files, copied: builds must not write into the worktree."""
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(src.read_bytes())
    return dest


def test_build_has_no_deprecation_warnings(tmp_path: Path) -> None:
    src = _tracked(tmp_path / "src")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w",
                           str(tmp_path / "dist"), str(src)],
                          capture_output=True, text=True, timeout=600, check=False)
    out = (done.stdout + done.stderr).replace(str(tmp_path), "TMP")
    assert done.returncode == 0, out[-3000:]
    assert list((tmp_path / "dist").glob("mgr_agent-*.whl"))
    noisy = [line for line in out.splitlines()
             if "deprecat" in line.lower() or "BuildBackendWarning" in line]
    assert noisy == [], "\n".join(noisy)


def _standin_cores(root_prefix: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if proc.info.get("name") == "core" and root_prefix in cmd:
            found.append(proc)
    return found


def _demo(tmp_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "mgr_agent.sandbox.demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)


def _wait_no_cores(prefix: str, timeout: float = 15) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in _standin_cores(prefix) if p.status() != psutil.STATUS_ZOMBIE]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def test_interrupted_demo_leaves_no_core_running(tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    assert demo.stdout is not None
    try:
        for _line in demo.stdout:  # wait until the demo has started its stand-in core
            if _standin_cores(str(tmp_path)):
                break
        else:
            raise AssertionError("the demo ended before starting a core")
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group gets it
        demo.wait(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert _wait_no_cores(str(tmp_path)) == []


def test_demo_piped_to_head_leaves_no_core_running(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(["bash", "-c", f"{sys.executable} -m mgr_agent.sandbox.demo | head -3"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.stdout.count("\n") == 3, done
    assert "Traceback" not in done.stderr, done.stderr
    assert _wait_no_cores(str(tmp_path)) == []


@pytest.mark.root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
def test_unprivileged_client_from_a_root_only_checkout(tmp_path: Path) -> None:
    """A checkout and venv only root can read (a clone under /root, mode 0700): the
    peer-credential test's unprivileged client still gets a package it can import."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    shutil.copytree(REPO / "agent/mgr_agent", private / "src/mgr_agent",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "tests", private / "src/tests", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(private / "venv")], check=True,
                   timeout=120)
    python = private / "venv/bin/python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "deps.pth").write_text("\n".join([str(private / "src"), *ours]) + "\n")
    public = Path(tempfile.mkdtemp(prefix="mgr-agent-client-"))
    try:
        public.chmod(0o755)
        made = subprocess.run(
            [str(python), "-c", "import json, pathlib, sys; from tests.helpers import unprivileged_python; "
             f"print(json.dumps(unprivileged_python(pathlib.Path({str(public)!r}) / 'client')))"],
            capture_output=True, text=True, timeout=300, check=False, cwd=private / "src",
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        assert made.returncode == 0, made.stderr
        argv, env = json.loads(made.stdout)
        run = subprocess.run([shutil.which("setpriv") or "setpriv", "--reuid=65534", "--regid=65534",
                              "--clear-groups", *argv, "-m", "mgr_agent", "--version"],
                             capture_output=True, text=True, env={**os.environ, **env}, cwd="/",
                             timeout=60, check=False)
        assert run.returncode == 0 and run.stdout.startswith("mgr-agent "), run
        before = subprocess.run([shutil.which("setpriv") or "setpriv", "--reuid=65534",
                                 "--regid=65534", "--clear-groups", str(python), "-c",
                                 "import mgr_agent"], capture_output=True, text=True, cwd="/",
                                timeout=60, check=False,
                                env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        assert before.returncode != 0, "the checkout itself is out of the client's reach"
    finally:
        shutil.rmtree(public, ignore_errors=True)
