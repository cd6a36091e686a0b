"""Who may read what, who asked, and the request parser's limits, against a real daemon on
a temp root: the state is 0750 (root and the mgr-agent group), a non-member gets "needs
root or the mgr-agent group" with or without the daemon (never an internal error), a
member reads through the daemon, history and the log name who asked, deeply nested JSON
is a bad request, and a client that meets a full daemon waits and gets through."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mgr_agent import api
from mgr_agent.daemon import MAX_CONNECTIONS
from mgr_agent.sandbox.samples import ispmanager_files, write_zip
from tests.helpers import cli, unprivileged_python
from tests.integration import test_daemon
from tests.integration.test_daemon import (
    GID,
    SETPRIV,
    env_clean,
    make_root,
    raw,
)

start = test_daemon.start  # the daemon fixture, shared


def needs_setpriv(test: Callable[..., None]) -> Callable[..., None]:
    marked: Callable[..., None] = pytest.mark.root(pytest.mark.skipif(SETPRIV is None,
                                                                      reason="needs setpriv")(test))
    return marked


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A root other users can traverse to (pytest's temp dirs are root-only)."""
    d = Path(tempfile.mkdtemp(prefix="mgr-agent-access-"))
    d.chmod(0o755)
    yield make_root(d)
    shutil.rmtree(d, ignore_errors=True)


def as_user(root: Path, *argv: str, groups: str) -> subprocess.CompletedProcess[str]:
    """``mgr-agent --root ROOT ARGV --json`` as uid 65534, in ``groups`` (or none)."""
    who = [str(SETPRIV), "--reuid=65534", "--regid=65534",
           "--clear-groups" if groups == "" else f"--groups={groups}"]
    # the checkout may be readable by root only (a clone under /root): a readable copy
    python, python_env = unprivileged_python(root.parent / "client")
    return subprocess.run([*who, *python, "-m", "mgr_agent", "--root", str(root), *argv, "--json"],
                          capture_output=True, text=True, env=env_clean(HOME="/", **python_env),
                          cwd="/", check=False, timeout=120)


@needs_setpriv
def test_state_is_private_and_a_stranger_is_told_why(open_root: Path, start: Any) -> None:
    zip_ = write_zip(ispmanager_files("demo", "1.0"), open_root.parent / "demo.zip")
    zip_.chmod(0o644)
    done = cli(open_root, "install", str(zip_), "--no-restart", env={"MGR_AGENT_NO_DAEMON": "1"})
    assert done.rc == 0, done
    state = open_root / "var/lib/mgr-agent"
    assert state.stat().st_mode & 0o777 == 0o750
    history = cli(open_root, "history", env={"MGR_AGENT_NO_DAEMON": "1"}).json["data"]
    assert history[0]["actor"] == "cli"
    # no daemon: in-process, refused by the file system, said plainly (not an internal error)
    for argv in (["history", "--no-daemon"], ["list"], ["info", "demo"]):
        stranger = as_user(open_root, *argv, groups="")
        assert stranger.returncode == 14, stranger
        error = json.loads(stranger.stdout)["error"]
        assert error["code"] == "not-authorised", error
        assert "needs root or the mgr-agent group" in error["message"], error
    # with the daemon: a member reads through it, installs, and history says who asked
    daemon = start(open_root).ready()
    member = as_user(open_root, "history", groups=str(GID))
    assert member.returncode == 0, member
    assert json.loads(member.stdout)["data"][0]["actor"] == "cli"
    zip2 = write_zip(ispmanager_files("demo", "1.1"), open_root.parent / "demo-1.1.zip")
    zip2.chmod(0o644)
    upgraded = as_user(open_root, "install", str(zip2), "--no-restart", groups=str(GID))
    assert upgraded.returncode == 0, upgraded
    tx = json.loads(upgraded.stdout)["tx"]
    listed = json.loads(as_user(open_root, "history", groups=str(GID)).stdout)["data"]
    row = next(h for h in listed if h["tx"] == tx)
    assert row["actor"].startswith("uid 65534 pid "), row
    assert "MGR_AGENT_UID=65534" in daemon.output() and "asked by uid 65534 pid" in daemon.output()
    stranger = as_user(open_root, "history", groups="")
    assert stranger.returncode == 14
    assert "needs root or the mgr-agent group" in json.loads(stranger.stdout)["error"]["message"]


def test_deeply_nested_json_is_a_bad_request(root: Path, start: Any) -> None:
    daemon = start(root).ready()
    sock = root / "run/mgr-agent/agent.sock"
    depth = 100_000  # 200 KB of brackets
    nested = b'{"v": 1, "op": "ping", "args": {"x": ' + b"[" * depth + b"]" * depth + b"}}\n"
    answer = raw(sock, nested)
    assert answer["exit_code"] == 2, answer
    assert answer["result"]["error"]["code"] == "bad-request"
    assert "nested too deeply" in answer["result"]["error"]["message"]
    assert api.Client(sock).call("ping", {}).error is None, "the daemon still answers"
    assert "internal error" not in daemon.output()


def test_a_client_waits_for_a_full_daemon(root: Path, start: Any) -> None:
    """Every connection slot held by a silent client: a real client is answered "busy",
    retries, and gets through once the silent ones are dropped (sooner than the request
    timeout, because the daemon is full)."""
    daemon = start(root, env={"MGR_AGENT_REQUEST_TIMEOUT": "60"}).ready()
    sock = root / "run/mgr-agent/agent.sock"
    silent = []
    try:
        for _ in range(MAX_CONNECTIONS + 2):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(sock))
            silent.append(s)
        # the last ones were over the limit: each was told "busy" at once
        silent[-1].settimeout(10)
        busy = json.loads(silent[-1].makefile("rb").readline())
        assert busy["result"]["error"]["code"] == "daemon-busy", busy
        started = time.monotonic()
        pong = api.Client(sock).call("ping", {})
        took = time.monotonic() - started
        assert pong.error is None, pong.error
        assert took < api.BUSY_RETRY, f"{took:.2f} s"
    finally:
        for s in silent:
            s.close()
    assert daemon.proc.poll() is None
