"""The stand-in ``core``: loads the plugin descriptions, logs like the panel, waits for SIGTERM.

At start it reads every ``etc/xml/ispmgr_mod_*.xml``, checks that each named handler is
an executable under ``addon/``, calls each plugin func once through the handler runner,
and writes what it found to ``var/ispmgr.log`` in the panel's format.  Then it writes
``var/run/core.pid`` (it is ready) and serves nothing but SIGTERM.  docs/standin.md says
what this models of the real panel and what it does not.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import psutil

from mgr_agent import libc
from mgr_agent.fsutil import atomic_write
from mgr_agent.layout import MGR_REL, Layout
from mgr_agent.panels.ispmanager import callchain, callplugins

LOG_NAME = "ispmgr"  # var/ispmgr.log, and the <log> of etc/debug.conf lines
DEFAULT_LEVEL = 4  # what a module logs when etc/debug.conf says nothing about it
LEVELS = {"ERR": 1, "WARN": 2, "INFO": 3, "EXTINFO": 4, "DEBUG": 6, "TRACE": 9}
COLOURS = {"ERR": "1;31", "WARN": "1;33", "INFO": "1;32", "EXTINFO": "32", "DEBUG": "36", "TRACE": "2"}
HANDLER_TIMEOUT = 10.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


# ------------------------------------------------------------------ paths and identity
def pid_file(mgr: Path) -> Path:
    return mgr / "var/run/core.pid"


def is_our_core(proc: psutil.Process, mgr: Path) -> bool:
    """A live ``core`` process whose executable or argv lies under ``mgr``."""
    prefix = str(mgr) + "/"
    try:
        if proc.status() == psutil.STATUS_ZOMBIE or proc.name() != "core":
            return False
        paths = [proc.exe(), *proc.cmdline()]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return any(p.startswith(prefix) or p == str(mgr) for p in paths)


def running_core(mgr: Path) -> int | None:
    """The pid of this MGR's core when its pid file names a live core of this MGR."""
    try:
        pid = int(pid_file(mgr).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
    return pid if is_our_core(proc, mgr) else None


def our_cores(mgr: Path) -> list[psutil.Process]:
    """Every live core of this MGR, pid file or not (one may still be loading)."""
    return [p for p in psutil.process_iter() if is_our_core(p, mgr)]


def layout_for(mgr: Path) -> Layout:
    """The Layout whose MGR is ``mgr`` (which must end in usr/local/mgr5)."""
    mgr = mgr.absolute()
    parts = MGR_REL.split("/")
    if list(mgr.parts[-len(parts):]) != parts:
        raise SystemExit(f"core: {mgr} is not an ispmanager root (…/{MGR_REL})")
    return Layout(mgr.parents[len(parts) - 1])


# ------------------------------------------------------------------ the panel log
@dataclass
class DebugConf:
    """What the stand-in reads of ``etc/debug.conf``: levels per module, ``SET color``."""

    levels: dict[str, int] = field(default_factory=dict)  # "" is the whole log
    colour: bool = True

    @classmethod
    def read(cls, path: Path, log: str = LOG_NAME) -> DebugConf:
        conf = cls()
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return conf
        for raw in text.splitlines():
            words = raw.split("#", 1)[0].split()
            if not words:
                continue
            if words[0].upper() == "SET":
                name, _, value = " ".join(words[1:]).partition("=")
                if name.strip() in ("color", f"{log}.color"):
                    conf.colour = value.strip().lower() not in ("off", "no", "0", "false")
                continue
            # lines with conditions raise the level for some requests only: not modelled
            if len(words) != 2 or not words[1].isdigit():
                continue
            if words[0] == log:
                conf.levels[""] = int(words[1])
            elif words[0].startswith(log + "."):
                conf.levels[words[0][len(log) + 1:]] = int(words[1])
        return conf

    def level(self, module: str) -> int:
        return self.levels.get(module, self.levels.get("", DEFAULT_LEVEL))


class PanelLog:
    """Appends ``Mon DD HH:MM:SS [PID:THREAD] MODULE LEVEL message`` lines to var/ispmgr.log."""

    def __init__(self, mgr: Path) -> None:
        self.path = mgr / "var" / f"{LOG_NAME}.log"
        self.conf = DebugConf.read(mgr / "etc/debug.conf")
        self.lock = threading.Lock()

    def enabled(self, module: str, level: str) -> bool:
        return LEVELS[level] <= self.conf.level(module)

    def write(self, module: str, level: str, message: str, *, thread: int = 1) -> None:
        if not self.enabled(module, level):
            return
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime())
        if self.conf.colour:
            line = f"{stamp} [{os.getpid()}:{thread}] {module} \033[{COLOURS[level]}m{level}\033[0m {message}"
        else:
            line = f"{stamp} [{os.getpid()}:{thread}] {module} {level} {message}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line.rstrip("\n") + "\n")


def log_call(log: PanelLog, func: str, result: callchain.CallResult, *, thread: int = 1) -> int:
    """Log a func's outcome like the panel; returns how many ERR lines were written."""
    failed = result.failed
    if failed is None:
        if result.verdict == "error":
            log.write("core_module", "INFO", f"func {func} answered an error (a valid answer)",
                      thread=thread)
        return 0
    what = "bad XML answer" if failed.failure == callchain.FAIL_XML else "terminated with an error"
    log.write("core_module", "ERR",
              f"handler {failed.step.handler} func {func}: {what}: {failed.reason}", thread=thread)
    return 1


def tracer(log: PanelLog, *, thread: int = 1) -> callchain.Observer:
    """At ``core_module`` level 9 the request and (valid) answer of each handler are logged."""
    def observe(result: callchain.StepResult, stdin: bytes) -> None:
        if not log.enabled("core_module", "TRACE"):
            return
        name = result.step.handler
        log.write("core_module", "TRACE", f"handler {name} request:\n"
                  + stdin.decode("utf-8", "replace"), thread=thread)
        if result.valid:  # like the panel: a bad answer is not logged
            log.write("core_module", "TRACE", f"handler {name} answer:\n"
                      + result.raw.decode("utf-8", "replace"), thread=thread)
    return observe


# ------------------------------------------------------------------ loading
def load(layout: Layout, log: PanelLog, *, timeout: float = HANDLER_TIMEOUT) -> int:
    """Load every plugin description and call each plugin func once; returns the number
    of plugins loaded without error."""
    plugins = callplugins.load_plugins(layout)
    runner = callchain.handler_runner()
    good = 0
    for plugin in plugins:
        log.write("core_module", "EXTINFO", f"load plugin description {plugin.source}")
        if plugin.error is not None:
            log.write("core_module", "ERR", f"failed to load {plugin.source}: {plugin.error}")
            continue
        errors = 0
        broken: set[str] = set()
        for decl in plugin.handlers:
            problem = callplugins.handler_problem(layout, decl.name)
            if problem is not None:
                log.write("core_module", "ERR",
                          f"plugin {plugin.name} ({plugin.source}): handler {decl.name}: {problem}")
                errors += 1
                broken.add(decl.name)
            for event in decl.events:
                log.write("action", "EXTINFO", f"Register event '{decl.name}' for action '{event.func}'")
        for decl in plugin.handlers:
            if decl.name in broken:
                continue
            for func in decl.funcs:
                result = callchain.run_call(layout, runner, func, {}, timeout=timeout,
                                           plugins=plugins, observer=tracer(log))
                if log_call(log, func, result):
                    failed = result.failed
                    # an event of another plugin that broke this func counts against that one
                    errors += failed is not None and failed.step.plugin == plugin.name
        names = ", ".join(d.name for d in plugin.handlers) or "none"
        if errors:
            log.write("core_module", "WARN", f"plugin {plugin.name} loaded with {errors} error(s)")
        else:
            good += 1
            log.write("core_module", "INFO", f"plugin {plugin.name} loaded (handlers: {names}, "
                      f"funcs: {', '.join(plugin.funcs) or 'none'})")
    return good


# ------------------------------------------------------------------ the process
class _Stop(BaseException):
    """SIGTERM/SIGINT/SIGHUP: leave the serve loop (or abort loading) and clean up."""


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _ignore_stops() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def set_process_name(name: str) -> None:
    """``/proc/self/comm`` = ``name`` (what psutil calls the process name)."""
    with contextlib.suppress(OSError, AttributeError):
        libc.set_process_name(name)


@contextlib.contextmanager
def locked(mgr: Path, name: str, *, wait: bool = True) -> Iterator[bool]:
    """An exclusive flock on MGR/var/run/NAME; yields False when busy and not ``wait``."""
    path = mgr / "var/run" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def single_instance(mgr: Path) -> contextlib.AbstractContextManager[bool]:
    """An exclusive lock held for the core's lifetime: one core per MGR."""
    return locked(mgr, "core.lock", wait=False)


def serve(mgr: Path, *, timeout: float = HANDLER_TIMEOUT) -> int:
    layout = layout_for(mgr)
    mgr = layout.mgr
    log = PanelLog(mgr)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop)
    with single_instance(mgr) as alone:
        if not alone:
            log.write("core", "ERR", f"another core of {mgr} is running; exiting")
            return 1
        pid = str(os.getpid())
        try:
            log.write("core", "INFO", f"ispmgr core started (mgr-agent stand-in) in {mgr}")
            good = load(layout, log, timeout=timeout)
            atomic_write(pid_file(mgr), f"{pid}\n".encode(), 0o644)
            log.write("core", "INFO", f"core ready: {good} plugin(s) loaded")
            while True:
                signal.pause()
        except _Stop as stop:
            _ignore_stops()
            log.write("core", "INFO", f"core exiting ({stop})")
        finally:
            _ignore_stops()
            with contextlib.suppress(OSError):
                if pid_file(mgr).read_text().strip() == pid:
                    pid_file(mgr).unlink()
    return 0


def main(argv: list[str] | None = None, *, mgr: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog="core", description="ispmanager stand-in core (mgr-agent)")
    parser.add_argument("--mgr", default=mgr, help="the ispmanager root (…/usr/local/mgr5)")
    parser.add_argument("--handler-timeout", type=float, default=HANDLER_TIMEOUT, metavar="SECONDS")
    args = parser.parse_args(argv)
    if not args.mgr:
        parser.error("--mgr is required")
    set_process_name("core")
    return serve(Path(args.mgr), timeout=args.handler_timeout)


if __name__ == "__main__":
    sys.exit(main())
