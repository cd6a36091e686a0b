"""Health-checked upgrades against the ispmanager stand-in (a real `core` and `mgrctl`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mgr_agent.layout import Layout
from mgr_agent.sandbox.samples import ispmanager_files, write_zip
from mgr_agent.sandbox.standin import install_standin
from mgr_agent.sandbox.standin.core import our_cores
from tests.helpers import cli, snapshot

MGR = "usr/local/mgr5"
BAD_HANDLER = b"#!/bin/sh\ncat >/dev/null\necho 'this is not XML'\n"


@pytest.fixture
def panel(root: Path) -> Iterator[Layout]:
    layout = Layout.at(root)
    install_standin(layout)
    subprocess.run([str(layout.mgr / "sbin/mgrctl"), "-m", "ispmgr"], check=True,
                   capture_output=True, timeout=30)
    assert our_cores(layout.mgr)
    yield layout
    subprocess.run([str(layout.mgr / "sbin/mgrctl"), "-m", "ispmgr", "exit"], check=False,
                   capture_output=True, timeout=30)
    for proc in our_cores(layout.mgr):
        proc.kill()


def test_clean_upgrade_restarts_core_and_commits(panel: Layout, pkgs: Path) -> None:
    root = panel.root
    assert cli(root, "install", str(write_zip(ispmanager_files("demo", "1.0"), pkgs / "a.zip")),
               "--health-window", "1").rc == 0
    first = {p.pid for p in our_cores(panel.mgr)}
    run = cli(root, "install", str(write_zip(ispmanager_files("demo", "1.1"), pkgs / "b.zip")),
              "--health-window", "1.5")
    assert run.rc == 0, run.stdout
    notes = run.json["notes"]
    assert any("mgrctl -m ispmgr exit" in n for n in notes)
    assert any("answers again" in n for n in notes)
    assert any(n.startswith("healthy for 1.5 s: core running") for n in notes)
    now = {p.pid for p in our_cores(panel.mgr)}
    assert now and not now & first, "a new core runs"
    log = (panel.mgr / "var/ispmgr.log").read_text()
    assert "plugin demo loaded" in log


def test_handler_answering_bad_xml_is_rolled_back(panel: Layout, pkgs: Path) -> None:
    root = panel.root
    assert cli(root, "install", str(write_zip(ispmanager_files("demo", "1.0"), pkgs / "a.zip")),
               "--health-window", "1").rc == 0
    before = snapshot(root)
    broken = ispmanager_files("demo", "1.1", extra={"addon/demo.py": (BAD_HANDLER, 0o755)})
    run = cli(root, "install", str(write_zip(broken, pkgs / "b.zip")), "--health-window", "5")
    assert run.rc == 8, run.stdout
    doc = run.json
    assert doc["action"] == "rolled_back"
    assert doc["error"]["details"]["cause_code"] == "health-check-failed"
    lines = doc["error"]["details"]["log_lines"]
    assert any("demo.py" in line and "bad XML answer" in line for line in lines), lines
    # the old version is back, and the core was restarted on it
    assert snapshot(root) == _without_runtime(before, snapshot(root))
    assert cli(root, "info", "demo").json["version"] == "1.0"
    assert our_cores(panel.mgr), "the core runs again after the rollback"
    assert any("answers again" in n for n in doc["notes"])


def _without_runtime(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``before`` with the panel's own run-time files (log, pid, locks) taken from ``after``."""
    runtime = {k for k in set(before) | set(after) if k.startswith(f"{MGR}/var/")}
    out = {k: v for k, v in before.items() if k not in runtime}
    out.update({k: v for k, v in after.items() if k in runtime})
    return out
