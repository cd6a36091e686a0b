"""ispmanager's core: its processes under one MGR root, and the restart that makes it read
changed plugin files (drop the XML cache, ``mgrctl -m ispmgr exit``, end what is left, wake
it again outside the agent's service under systemd: :mod:`.outside`)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mgr_agent.config import Config
from mgr_agent.errors import HealthCheckFailed
from mgr_agent.layout import Layout
from mgr_agent.panels.ispmanager import outside
from mgr_agent.proc import Runner

if TYPE_CHECKING:
    import psutil

# psutil is imported where processes are looked at, not by every start of the CLI


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until the processes are gone (an unreaped zombie counts as gone); the rest."""
    import psutil  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def pids(layout: Layout) -> list[int]:
    """The PIDs of this MGR root's ``core`` processes, read from ``/proc`` as psutil reads
    them (``comm``, the state in ``stat``, ``exe``, ``cmdline``) but without importing it:
    looking takes about 2 ms, importing psutil 20 (paid by every ispmanager install)."""
    mgr = str(layout.mgr) + "/"
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        base = f"/proc/{entry.name}"
        try:
            with open(f"{base}/comm", "rb") as fh:
                if fh.read().rstrip(b"\n") != b"core":
                    continue
            with open(f"{base}/stat", "rb") as fh:
                stat = fh.read()
            if stat[stat.rfind(b")") + 2:][:1] == b"Z":
                continue  # a zombie: gone already
            try:
                exe = os.readlink(f"{base}/exe")
            except OSError:  # not ours to read: the command line still tells
                exe = ""
            with open(f"{base}/cmdline", "rb") as fh:
                argv = [os.fsdecode(arg) for arg in fh.read().split(b"\0") if arg]
        except OSError:  # it ended meanwhile
            continue
        if any(path.startswith(mgr) for path in (exe, *argv)):
            found.append(int(entry.name))
    return found


def processes(layout: Layout) -> list[psutil.Process]:
    """The ``core`` processes of this MGR root only: never another program's ``core``."""
    found = pids(layout)
    if not found:
        return []
    import psutil  # noqa: PLC0415

    procs = []
    for pid in found:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)  # (its start time guards every later signal)
            if proc.name() == "core":  # still the same process
                procs.append(proc)
    return procs


def mgrctl_path(layout: Layout) -> Path | None:
    """``sbin/mgrctl`` when it can be run (it starts the core on a request)."""
    path = layout.mgr / "sbin/mgrctl"
    return path if os.access(path, os.X_OK) else None


def restart(layout: Layout, config: Config, runner: Runner) -> list[str]:
    """Drop the XML cache, ask the core to exit (mgrctl), end what is left of this
    root's core processes (SIGTERM, wait, SIGKILL), and wake the panel again."""
    notes: list[str] = []
    var = layout.mgr / "var"
    caches = list(var.glob(".db.cache*")) if var.is_dir() else []
    for cache in caches:
        cache.unlink(missing_ok=True)
    if caches:
        notes.append(f"removed {len(caches)} panel cache file(s)")
    mgrctl = mgrctl_path(layout)
    before = processes(layout)
    if mgrctl is not None:
        done = runner.run([str(mgrctl), "-m", "ispmgr", "exit"], cwd=layout.mgr,
                          timeout=config.core_timeout)
        notes.append(f"mgrctl -m ispmgr exit: exit {done.returncode}")
    elif not before:
        return [*notes, f"no core process under {layout.mgr}: nothing to restart"]
    left = processes(layout)
    if left:
        import psutil  # noqa: PLC0415

        for proc in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        alive = _wait_gone(left, config.core_timeout)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        alive = _wait_gone(alive, 5)
        if alive:
            raise HealthCheckFailed(
                f"core process(es) {', '.join(str(p.pid) for p in alive)} under "
                f"{layout.mgr} did not end after SIGKILL")
        notes.append(f"ended {len(left)} core process(es) of {layout.mgr}")
    if mgrctl is not None:
        notes += _wake(layout, config, runner, mgrctl)
    return notes

def _wake(layout: Layout, config: Config, runner: Runner, mgrctl: Path) -> list[str]:
    """``mgrctl -m ispmgr`` (starts the core and waits until it answers), outside the
    agent's service under systemd: after the panel's own unit, in a transient unit."""
    notes: list[str] = []
    argv = [str(mgrctl), "-m", "ispmgr"]
    where = ""
    if outside.systemd_runs(layout.root):
        unit_ = config.core_unit
        if unit_:
            done = runner.run(outside.start_unit(unit_), cwd=layout.mgr,
                              timeout=config.core_timeout)
            if done.returncode != 0:
                raise HealthCheckFailed(f"systemctl start {unit_} exited {done.returncode}: "
                                        f"{done.output.strip()[-500:]}")
            notes.append(f"started the panel's unit {unit_}")
        name = outside.unit_name("ispmgr-core")
        argv = outside.transient(argv, unit=name, timeout=config.core_timeout,
                                 description=f"ispmanager core of {layout.mgr} (woken by mgr-agent)")
        where = f" (in {name}.service; journalctl -u {name})"
    done = runner.run(argv, cwd=layout.mgr, timeout=config.core_timeout + 5)
    if done.returncode != 0:
        raise HealthCheckFailed(
            f"the panel does not answer after the restart: mgrctl -m ispmgr exited "
            f"{done.returncode}{where}: {done.output.strip()[-500:]}")
    notes.append(f"the panel answers again (mgrctl){where}")
    return notes
