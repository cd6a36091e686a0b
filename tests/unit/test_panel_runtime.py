"""The runtime commands through the Panel interface: which panel serves them, Plesk's
refusals, and the health check reading ispmgr.log with the log follower (rotation too)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mgr_agent.archive import open_source
from mgr_agent.config import Config
from mgr_agent.errors import HealthCheckFailed, UsageError
from mgr_agent.layout import Layout
from mgr_agent.package import Package
from mgr_agent.panels import IspManager, LogQuery, Plesk, all_panels, serving


def package(tmp_path: Path, name: str = "demo") -> Package:
    """What health reads of a package: its name and the names in its plugin XML."""
    tree = tmp_path / "pkg"
    tree.mkdir(exist_ok=True)
    (tree / "VERSION").write_text("1.0\n")
    return Package(panel="ispmanager", name=name, version="1.0", release="", source=open_source(tree),
                   prefix="", files={}, hooks={}, warnings=[],
                   meta={"handlers": [f"{name}.sh"], "funcs": [f"{name}.edit"], "events": [],
                         "xml": f"etc/xml/ispmgr_mod_{name}.xml"})


@pytest.mark.parametrize("command", ["logs", "call", "debug"])
def test_ispmanager_serves_the_runtime_commands(tmp_path: Path, command: str) -> None:
    assert serving(all_panels(Layout.at(tmp_path), Config()), command).name == "ispmanager"


def test_without_a_panel_that_serves_it_the_command_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^mgr-agent logs: none of the panels \(plesk\) has it$"):
        serving([Plesk(Layout.at(tmp_path), Config())], "logs")


def test_plesk_refuses_what_it_does_not_have(tmp_path: Path) -> None:
    plesk = Plesk(Layout.at(tmp_path), Config())
    with pytest.raises(UsageError, match=r"^mgr-agent logs: plesk has no panel log$"):
        plesk.log(LogQuery(n=5))
    with pytest.raises(UsageError, match=r"^mgr-agent debug: plesk has no log level file$"):
        plesk.debug("core_module", 9, off=False)
    with pytest.raises(UsageError, match=r"^mgr-agent call: plesk has no handler chain$"):
        plesk.call("demo.edit", {}, user="root", lang="en", input_path=None, timeout=5)
    assert plesk.log_names("demo", {"handlers": ["x"]}) == {"demo"}


# ---------------------------------------------------------------- health reads like logs -f

def log_line(second: int, level: str, text: str) -> str:
    return f"Nov 21 10:00:{second:02d} [42:1] core_module {level} {text}\n"


@pytest.fixture
def isp(tmp_path: Path) -> IspManager:
    panel = IspManager(Layout.at(tmp_path), Config())
    panel.log_path.parent.mkdir(parents=True)
    panel.log_path.write_text(log_line(0, "ERR", "demo.sh failed before the change"))
    return panel


def test_health_ignores_what_was_there_before_the_mark(isp: IspManager) -> None:
    mark = isp.mark()
    assert mark is not None and mark.offset == isp.log_path.stat().st_size
    with open(isp.log_path, "a") as fh:
        fh.write(log_line(1, "ERR", "other.sh failed") + log_line(2, "INFO", "demo.sh answered"))
    t0 = time.monotonic()
    notes = isp.health(package(isp.layout.root), mark, 0.3)
    assert notes == ["healthy for 0.3 s: no errors for demo in ispmgr.log"]
    assert time.monotonic() - t0 >= 0.3


def test_health_follows_the_log_across_a_rotation(isp: IspManager) -> None:
    mark = isp.mark()
    assert mark is not None
    with open(isp.log_path, "a") as fh:  # written after the mark, then the file is rotated
        fh.write(log_line(1, "ERR", "in demo.edit: no such element\n  <doc/>"))
    os.rename(isp.log_path, isp.log_path.with_name("ispmgr.log.1"))
    isp.log_path.write_text(log_line(2, "ERR", "demo.sh exited 1"))
    with pytest.raises(HealthCheckFailed) as failed:
        isp.health(package(isp.layout.root), mark, 30)
    assert failed.value.message.startswith("ispmgr.log shows 2 error(s) for demo after the switch: "
                                           "2026-11-21 10:00:01 42:1 core_module ERR in demo.edit")
    assert failed.value.details["log_lines"] == [
        "2026-11-21 10:00:01 42:1 core_module ERR in demo.edit: no such element\n  <doc/>",
        "2026-11-21 10:00:02 42:1 core_module ERR demo.sh exited 1"]


def test_health_reads_a_log_that_appears_after_the_mark(tmp_path: Path) -> None:
    panel = IspManager(Layout.at(tmp_path), Config())
    mgrctl = panel.layout.mgr / "sbin/mgrctl"  # a panel that would start the core: a mark without log
    mgrctl.parent.mkdir(parents=True)
    mgrctl.write_text("#!/bin/sh\n")
    mgrctl.chmod(0o755)
    mark = panel.mark()
    assert mark is not None and (mark.inode, mark.offset) == (0, 0)
    panel.log_path.parent.mkdir(parents=True)
    panel.log_path.write_text(log_line(3, "ERR", "demo.sh: Permission denied"))
    with pytest.raises(HealthCheckFailed, match=r"1 error\(s\) for demo"):
        panel.health(package(tmp_path), mark, 30)
