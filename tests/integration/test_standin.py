"""The ispmanager stand-in: a real `core` process and `mgrctl`, as the agent will see them."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mgr_agent import xmlsafe
from mgr_agent.layout import Layout
from mgr_agent.proc import Runner
from mgr_agent.sandbox.standin import install_standin
from mgr_agent.sandbox.standin.core import our_cores, pid_file
from tests.integration.test_call import install_tree, plugin
from tests.waits import wait_for_file

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LINE = re.compile(r"^[A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d \[(?P<pid>\d+):(?P<thread>\d+)\] "
                  r"(?P<module>\S+) (?P<level>[A-Z]+) (?P<msg>.*)$")


@pytest.fixture
def panel(root: Path) -> Iterator[Layout]:
    """The sample plugin and the stand-in under ``root``; every core it started is ended."""
    layout = Layout.at(root)
    install_tree(layout)
    install_standin(layout)
    yield layout
    left = our_cores(layout.mgr)
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    deadline = time.monotonic() + 5
    while any(not _gone(p) for p in left) and time.monotonic() < deadline:
        time.sleep(0.02)


def _gone(proc: psutil.Process) -> bool:
    """Ended; a zombie counts (its parent, mgrctl, is gone; init reaps it)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def decoy(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process named `core` outside the root (a copy of sleep)."""
    path = tmp_path / "elsewhere/core"
    path.parent.mkdir()
    shutil.copy(shutil.which("sleep") or "/bin/sleep", path)
    proc = subprocess.Popen([str(path), "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def mgrctl(layout: Layout, *args: str) -> subprocess.CompletedProcess[str]:
    # a clean environment, as the agent's Runner gives it: the script must not need ours
    return subprocess.run([str(layout.mgr / "sbin/mgrctl"), "-m", "ispmgr", *args], capture_output=True,
                          text=True, timeout=60, check=False, cwd="/", env={"PATH": "/usr/bin:/bin"})


def log_lines(layout: Layout) -> list[dict[str, str]]:
    """Parsed lines of var/ispmgr.log (colour stripped); continuation lines are left out."""
    path = layout.mgr / "var/ispmgr.log"
    text = ANSI.sub("", path.read_text()) if path.exists() else ""
    return [m.groupdict() for m in map(LINE.match, text.splitlines()) if m]


def messages(layout: Layout, level: str | None = None) -> list[str]:
    return [f"{ln['module']} {ln['msg']}" for ln in log_lines(layout) if level in (None, ln["level"])]


def running(layout: Layout) -> psutil.Process:
    pid = int(pid_file(layout.mgr).read_text())
    return psutil.Process(pid)


def test_core_starts_on_request_and_looks_like_the_panel(panel: Layout) -> None:
    done = mgrctl(panel)
    assert done.returncode == 0, done.stderr
    assert xmlsafe.parse(done.stdout.encode(), "out").find("ok") is not None
    core = running(panel)
    assert core.name() == "core"
    assert str(panel.mgr / "bin/core") in core.cmdline()
    assert core.ppid() != psutil.Process().pid
    assert [p.pid for p in our_cores(panel.mgr)] == [core.pid]
    raw = (panel.mgr / "var/ispmgr.log").read_text()
    assert "\x1b[1;32mINFO\x1b[0m" in raw, "colour is on by default, as in the panel"
    lines = log_lines(panel)
    assert {ln["pid"] for ln in lines} == {str(core.pid)}
    msgs = messages(panel)
    assert "core_module load plugin description etc/xml/ispmgr_mod_exampleplugin.xml" in msgs
    assert "action Register event 'exampleplugin.py' for action 'plugin.settings'" in msgs
    assert ("core_module plugin exampleplugin loaded (handlers: exampleplugin.py, "
            "funcs: exampleplugin.settings)") in msgs
    assert msgs[-1] == "core core ready: 1 plugin(s) loaded"
    assert not messages(panel, "ERR")
    # asked again, it is the same core: no second start
    assert mgrctl(panel).returncode == 0 and running(panel).pid == core.pid


def test_mgrctl_exit_ends_only_this_core(panel: Layout, decoy: subprocess.Popen[bytes]) -> None:
    assert mgrctl(panel).returncode == 0
    core = running(panel)
    done = mgrctl(panel, "exit")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert not core.is_running() or core.status() == psutil.STATUS_ZOMBIE
    assert not pid_file(panel.mgr).exists()
    assert messages(panel)[-1] == "core core exiting (SIGTERM)"
    assert decoy.poll() is None, "a `core` outside the root was touched"
    assert mgrctl(panel, "exit").returncode == 0, "exit with no core running is quiet"


def test_a_stale_pid_file_never_aims_the_signal_elsewhere(panel: Layout,
                                                         decoy: subprocess.Popen[bytes]) -> None:
    pid_file(panel.mgr).write_text(f"{decoy.pid}\n")  # a `core`, but not this root's
    assert mgrctl(panel, "exit").returncode == 0
    assert decoy.poll() is None
    assert not pid_file(panel.mgr).exists()
    assert mgrctl(panel).returncode == 0 and running(panel).pid != decoy.pid


def test_mgrctl_func_wakes_the_core_and_runs_the_handlers(panel: Layout) -> None:
    done = mgrctl(panel, "exampleplugin.settings", "clicked_button=ok", "example_input=Do not change")
    assert done.returncode == 0, done.stderr
    assert xmlsafe.parse(done.stdout.encode(), "out").find("ok") is not None
    assert (panel.mgr / "var/exampleplugin.output").read_text() == "Good job!\n"
    assert running(panel).name() == "core"
    assert "core request from mgrctl [root] 'func=exampleplugin.settings&clicked_button=ok&" \
           "example_input=Do not change'" in messages(panel)
    done = mgrctl(panel, "exampleplugin.settings", "sok=ok", "example_input=x")
    assert done.returncode == 1, "mgrctl exits 1 on an error answer"
    assert xmlsafe.parse(done.stdout.encode(), "out").find("error") is not None
    done = mgrctl(panel, "no.such.func")
    assert done.returncode == 1 and 'type="missed"' in done.stdout


def test_broken_plugins_are_logged_as_errors(panel: Layout) -> None:
    (panel.mgr / "etc/xml/ispmgr_mod_broken.xml").write_text("<mgrdata><handler name='x.sh'>")
    plugin(panel, "badxml", '<handler name="badxml.sh"><func name="badxml.list"/></handler>',
           {"badxml.sh": "#!/bin/sh\necho 'Warning: something <doc>'\n"})
    plugin(panel, "nohandler", '<handler name="nohandler/run.py"><func name="nohandler.f"/></handler>', {})
    plugin(panel, "crash", '<handler name="crash.sh"><func name="crash.f"/></handler>',
           {"crash.sh": "#!/bin/sh\necho boom >&2\nexit 2\n"})
    done = mgrctl(panel)
    assert done.returncode == 0, done.stderr
    errors = messages(panel, "ERR")
    assert len(errors) == 4, errors
    assert any(e.startswith("core_module failed to load etc/xml/ispmgr_mod_broken.xml: not well-formed XML")
               for e in errors)
    assert any(e.startswith("core_module handler badxml.sh func badxml.list: bad XML answer: "
                            "not well-formed XML") for e in errors)
    assert ("core_module plugin nohandler (etc/xml/ispmgr_mod_nohandler.xml): handler nohandler/run.py: "
            "addon/nohandler/run.py does not exist") in errors
    assert ("core_module handler crash.sh func crash.f: terminated with an error: exited with code 2"
            in errors)
    msgs = messages(panel)
    assert "core_module plugin badxml loaded with 1 error(s)" in msgs
    assert any(m.startswith("core_module plugin exampleplugin loaded (") for m in msgs)
    assert msgs[-1] == "core core ready: 1 plugin(s) loaded"
    # the same bad answer on a request is logged the same way, and mgrctl reports it
    done = mgrctl(panel, "badxml.list")
    assert done.returncode == 1
    assert "badxml.sh plugin terminated with an error or returned an invalid XML" in done.stdout
    assert messages(panel, "ERR")[-1].startswith("core_module handler badxml.sh func badxml.list: bad XML")


def test_debug_conf_colour_off_and_handler_tracing(panel: Layout) -> None:
    (panel.mgr / "etc/debug.conf").write_text("SET color=off\nispmgr.core_module 9\n")
    assert mgrctl(panel).returncode == 0
    raw = (panel.mgr / "var/ispmgr.log").read_text()
    assert "\x1b[" not in raw
    assert "core_module TRACE handler exampleplugin.py request:\n<?xml" in raw
    assert "core_module TRACE handler exampleplugin.py answer:\n<?xml" in raw


def test_one_core_per_root(panel: Layout) -> None:
    assert mgrctl(panel).returncode == 0
    first = running(panel)
    second = subprocess.run([str(panel.mgr / "bin/core")], capture_output=True, timeout=30, check=False)
    assert second.returncode == 1
    assert messages(panel, "ERR")[-1] == f"core another core of {panel.mgr} is running; exiting"
    assert running(panel).pid == first.pid and first.is_running()


def test_core_started_by_a_relative_path_still_names_its_root(panel: Layout) -> None:
    proc = subprocess.Popen(["bin/core"], cwd=panel.mgr, start_new_session=True)
    try:
        wait_for_file(pid_file(panel.mgr), lambda pid: pid.endswith(b"\n"), timeout=20,
                      what="the core's pid file", alive=lambda: proc.poll() is None)
        core = running(panel)
        assert core.pid == proc.pid and core.name() == "core"
        assert str(panel.mgr / "bin/core") in core.cmdline()
        assert mgrctl(panel, "exit").returncode == 0
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_core_woken_through_the_agents_runner_outlives_the_command(panel: Layout) -> None:
    """The agent runs mgrctl through proc.Runner, which kills the command's process group
    and holds its output pipe: the core must leave both, or the restart would end it."""
    done = Runner().run([str(panel.mgr / "sbin/mgrctl"), "-m", "ispmgr"], cwd=panel.mgr, timeout=30)
    assert done.returncode == 0, done.output
    assert done.seconds < 10
    core = running(panel)
    with pytest.raises(psutil.TimeoutExpired):      # wakes at once if the core is ended
        core.wait(0.5)
    assert core.is_running() and core.status() != psutil.STATUS_ZOMBIE
    assert os.getsid(core.pid) == core.pid, "the core leads its own session"
    done = Runner().run([str(panel.mgr / "sbin/mgrctl"), "-m", "ispmgr", "exit"], cwd=panel.mgr, timeout=30)
    assert done.returncode == 0 and not our_cores(panel.mgr)


def test_interpreter_path_a_shebang_cannot_hold(root: Path, tmp_path: Path) -> None:
    """With whitespace in the interpreter's path a /bin/sh wrapper starts the core; it is
    still named `core` and its argv still holds a path under MGR."""
    venv = Path(sys.prefix)
    if not (venv / "pyvenv.cfg").is_file():
        pytest.skip("needs the tests to run from a venv")
    odd = tmp_path / "py dir"
    (odd / "bin").mkdir(parents=True)
    (odd / "bin/python").symlink_to(sys.executable)
    shutil.copy(venv / "pyvenv.cfg", odd / "pyvenv.cfg")
    (odd / "lib").symlink_to(venv / "lib")
    layout = Layout.at(root)
    install_tree(layout)
    install_standin(layout, python=str(odd / "bin/python"))
    assert (layout.mgr / "bin/core").read_text().startswith("#!/bin/sh\n")
    try:
        assert mgrctl(layout).returncode == 0
        core = running(layout)
        assert core.name() == "core"
        assert any(arg.startswith(f"{layout.mgr}/") for arg in core.cmdline())
        assert mgrctl(layout, "exit").returncode == 0 and not our_cores(layout.mgr)
    finally:
        for proc in our_cores(layout.mgr):
            proc.kill()
