"""The stand-in ``mgrctl``: ``-m ispmgr exit`` and ``-m ispmgr [FUNC [key=value …]]``.

``exit`` sends SIGTERM to this MGR's core (the one its pid file names, after checking it
is ours) and waits for it to end.  A func, or nothing, first wakes the core (starts it
in the background and waits until it has loaded the plugins), then runs FUNC through the
handler runner and prints the answer.  docs/standin.md has the details.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import psutil
from lxml import etree

from mgr_agent.errors import NotFound, UsageError
from mgr_agent.panels.ispmanager import callchain
from mgr_agent.proc import Runner
from mgr_agent.sandbox.standin.core import (
    PanelLog,
    layout_for,
    locked,
    log_call,
    our_cores,
    pid_file,
    running_core,
    tracer,
)

WAKE_TIMEOUT = 60.0
EXIT_TIMEOUT = 10.0
KILL_WAIT = 5.0
POLL = 0.02
REQUEST_THREAD = 2  # log lines of requests carry [PID:2], those of loading [PID:1]


class WakeFailed(Exception):
    pass


def _locked(mgr: Path, name: str = "mgrctl.lock", *,
            wait: bool = True) -> contextlib.AbstractContextManager[bool]:
    return locked(mgr, name, wait=wait)


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(proc: psutil.Process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(proc):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def stop_core(mgr: Path, *, timeout: float = EXIT_TIMEOUT) -> bool:
    """SIGTERM to this MGR's core, wait, SIGKILL after ``timeout``; False if none ran.

    The core is the one the pid file names, checked to be a ``core`` under this MGR; when
    the pid file names none (a core still loading has not written it), every ``core``
    process under this MGR."""
    with _locked(mgr):
        procs = our_cores(mgr)
        pid = running_core(mgr)
        if pid is not None:  # the one the pid file names, if it is ours
            procs = [p for p in procs if p.pid == pid]
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        for proc in procs:
            if not _wait_gone(proc, timeout):
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
                _wait_gone(proc, KILL_WAIT)
        if running_core(mgr) is None:
            with contextlib.suppress(OSError):
                pid_file(mgr).unlink()  # left by a killed core, or stale
        return bool(procs)


def wake_core(mgr: Path, *, timeout: float = WAKE_TIMEOUT) -> int:
    """Start this MGR's core unless it runs, and wait until it is ready; returns its pid."""
    with _locked(mgr):
        pid = running_core(mgr)
        if pid is not None:
            return pid
        core = mgr / "bin/core"
        if not os.access(core, os.X_OK):
            raise WakeFailed(f"{core} is missing or not executable")
        child = psutil.Process(Runner().spawn([str(core)], cwd=mgr))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = running_core(mgr)
            if pid is not None:
                return pid
            if _gone(child):
                with _locked(mgr, "core.lock", wait=False) as free:
                    if free:  # and no other core is loading either
                        raise WakeFailed(f"{core} exited while starting; see var/ispmgr.log")
            time.sleep(POLL)
        raise WakeFailed(f"{core} was not ready within {timeout:g}s")


def _error_doc(func: str, kind: str, obj: str, message: str) -> str:
    doc = etree.Element("doc", func=func)
    error = etree.SubElement(doc, "error", type=kind, object=obj)
    etree.SubElement(error, "msg").text = message
    return callchain.XML_DECL + etree.tostring(doc, encoding="unicode", pretty_print=True)


def call(mgr: Path, func: str, params: dict[str, str]) -> tuple[int, str]:
    """Run ``func`` like a request to the core; (exit code, XML to print)."""
    layout = layout_for(mgr)
    log = PanelLog(layout.mgr)
    user = params.pop("su", "root")
    lang = params.pop("lang", "en")
    shown = "&".join(f"{k}={v}" for k, v in [("func", func), *params.items()])
    log.write("core", "INFO", f"request from mgrctl [{user}] '{shown}'", thread=REQUEST_THREAD)
    try:
        result = callchain.run_call(layout, callchain.handler_runner(), func, params, user=user, lang=lang,
                                   timeout=callchain.DEFAULT_TIMEOUT,
                                   observer=tracer(log, thread=REQUEST_THREAD))
    except NotFound:
        return 1, _error_doc(func, "missed", "func", f"unknown function {func}")
    log_call(log, func, result, thread=REQUEST_THREAD)
    if not result.valid:
        failed = result.failed
        name = failed.step.handler if failed is not None else func
        return 1, _error_doc(func, "xml", name,
                             f"{name} plugin terminated with an error or returned an invalid XML")
    assert result.xml is not None
    return (1 if result.verdict == "error" else 0), callchain.pretty(result.xml)


def main(argv: list[str] | None = None, *, mgr: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mgrctl", description="ispmanager stand-in mgrctl (mgr-agent)")
    parser.add_argument("-m", dest="manager", required=True, help="the panel: ispmgr")
    parser.add_argument("-o", dest="output", default="xml", help="output format: xml or devel")
    parser.add_argument("-R", dest="restart", action="store_true", help="restart the core first")
    parser.add_argument("--mgr", default=mgr, help=argparse.SUPPRESS)
    parser.add_argument("func", nargs="?", help="a func, or exit")
    parser.add_argument("params", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)
    if not args.mgr:
        parser.error("--mgr is required")
    if args.manager != "ispmgr":
        parser.error(f"-m {args.manager}: the stand-in models ispmgr only")
    if args.output not in ("xml", "devel"):
        parser.error(f"-o {args.output}: the stand-in prints xml only")
    root = Path(args.mgr).absolute()
    try:
        params = dict(p.split("=", 1) for p in args.params)
    except ValueError:
        parser.error("parameters are key=value")
    if args.func == "exit":
        stop_core(root)
        return 0
    try:
        if args.restart:
            stop_core(root)
        wake_core(root)
    except WakeFailed as exc:
        print(f"mgrctl: the panel does not start: {exc}", file=sys.stderr)
        return 1
    if args.func is None:
        print(callchain.XML_DECL + "<doc><ok/></doc>")
        return 0
    try:
        code, text = call(root, args.func, params)
    except UsageError as exc:
        parser.error(exc.message)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
