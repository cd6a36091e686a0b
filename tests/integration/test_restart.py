"""Restarting the core ends this root's `core` processes only, never a decoy's."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from mgr_agent.layout import Layout
from mgr_agent.panels.ispmanager import core
from mgr_agent.sandbox.samples import ispmanager_files, write_zip
from tests.helpers import cli
from tests.waits import wait_for

MGR = "usr/local/mgr5"


def _spawn_core(path: Path) -> subprocess.Popen[bytes]:
    """A real process named `core` (a copy of sleep) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shutil.which("sleep") or "/bin/sleep", path)
    proc = subprocess.Popen([str(path), "300"], start_new_session=True)
    assert psutil.Process(proc.pid).name() == "core"
    return proc


@pytest.fixture
def cores(root: Path, tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    started = {
        "mine": _spawn_core(root / MGR / "bin/core"),
        "decoy": _spawn_core(tmp_path / "elsewhere/core"),
        "other-root": _spawn_core(tmp_path / "other/usr/local/mgr5/bin/core"),
    }
    yield started
    for proc in started.values():
        proc.kill()
        proc.wait()


def test_restart_core_ends_only_this_roots_core(
        root: Path, cores: dict[str, subprocess.Popen[bytes]]) -> None:
    (root / MGR / "var").mkdir(parents=True)
    (root / MGR / "var/.db.cache.ispmgr").write_text("cache")
    run = cli(root, "restart-core")
    assert run.rc == 0, run.stdout
    notes = run.json["notes"]
    assert any("ended 1 core process" in n for n in notes), notes
    assert any("removed 1 panel cache file" in n for n in notes)
    assert any(n.startswith("plesk:") for n in notes)
    assert cores["mine"].wait(5) is not None
    assert cores["decoy"].poll() is None, "a `core` outside the root was touched"
    assert cores["other-root"].poll() is None, "another root's core was touched"
    assert not (root / MGR / "var/.db.cache.ispmgr").exists()


def test_install_restarts_core_and_no_restart_skips_it(
        root: Path, pkgs: Path, cores: dict[str, subprocess.Popen[bytes]]) -> None:
    zip1 = write_zip(ispmanager_files("demo", "1.0"), pkgs / "d1.zip")
    run = cli(root, "install", str(zip1), "--no-restart")
    assert run.rc == 0 and cores["mine"].poll() is None
    zip2 = write_zip(ispmanager_files("demo", "1.1"), pkgs / "d2.zip")
    run = cli(root, "install", str(zip2), "--health-window", "0.2")
    assert run.rc == 0, run.stdout
    assert any("ended 1 core process" in n for n in run.json["notes"])
    assert cores["mine"].wait(5) is not None
    assert cores["decoy"].poll() is None and cores["other-root"].poll() is None


def test_core_that_ignores_sigterm_is_killed(root: Path, tmp_path: Path) -> None:
    script = root / MGR / "bin/core"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 0.1; done\n")
    script.chmod(0o755)
    proc = subprocess.Popen([str(script)], start_new_session=True)
    try:
        (root / "etc/mgr-agent").mkdir(parents=True)
        (root / "etc/mgr-agent/agent.toml").write_text("[panel]\ncore_timeout = 0.5\n")
        run = cli(root, "restart-core")
        assert run.rc == 0, run.stdout
        assert proc.wait(5) == -9
    finally:
        proc.kill()
        proc.wait()


LINE = "Nov 21 10:00:01 [4242:1] core_module {level} {message}\n"


def _upgrade_logging(root: Path, pkgs: Path, message: str, level: str = "ERR") -> tuple[int, dict[str, Any]]:
    log = root / MGR / "var/ispmgr.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(LINE.format(level="ERR", message="old error for demo.settings before the switch"))
    cli(root, "install", str(write_zip(ispmanager_files("demo", "1.0"), pkgs / "d1.zip")))
    line = LINE.format(level=level, message=message)
    hook = f"printf '%s' '{line.strip()}' >> {log}; echo >> {log}"
    bad = write_zip(ispmanager_files("demo", "1.1", post_install=hook), pkgs / "d2.zip")
    run = cli(root, "install", str(bad), "--health-window", "1")
    return run.rc, run.json


def test_error_in_log_for_the_plugin_rolls_back(root: Path, pkgs: Path) -> None:
    rc, doc = _upgrade_logging(root, pkgs, "handler demo.py func demo.settings: bad XML answer")
    assert rc == 8 and doc["action"] == "rolled_back"
    assert doc["error"]["details"]["cause_code"] == "health-check-failed"
    assert "demo.settings: bad XML answer" in doc["error"]["details"]["log_lines"][0]
    assert cli(root, "info", "demo").json["version"] == "1.0"


@pytest.mark.parametrize(("message", "level"), [
    ("handler other.py func other.edit: bad XML answer", "ERR"),  # another plugin's error
    ("demo.settings answered slowly", "WARNING"),                  # not an error
])
def test_unrelated_or_minor_lines_do_not_roll_back(root: Path, pkgs: Path, message: str, level: str) -> None:
    rc, doc = _upgrade_logging(root, pkgs, message, level)
    assert rc == 0, doc
    assert doc["action"] == "upgraded"
    assert any(n.startswith("healthy for 1 s") for n in doc["notes"])


def test_core_pids_from_proc_are_this_roots_live_cores(
        root: Path, cores: dict[str, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    """``core.pids`` reads /proc without psutil: this root's live core only, neither the
    decoys nor a zombie (a core of this root that exited and was not reaped yet)."""
    path = root / MGR / "sbin/core"
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shutil.which("true") or "/bin/true", path)
    zombie = subprocess.Popen([str(path)])
    try:
        wait_for(lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE or None,
                 what="the unreaped core to become a zombie")
        found = core.pids(Layout.at(root))
        assert found == [cores["mine"].pid], (found, {k: p.pid for k, p in cores.items()})
        assert [p.pid for p in core.processes(Layout.at(root))] == found
    finally:
        zombie.wait()
