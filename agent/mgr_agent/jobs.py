"""The daemon's mutating operations: one queue, one operation at a time.

A connection's thread submits a request (:meth:`Jobs.submit`) and pumps its progress to
the client until the main thread has run it; the main thread takes each job in turn and
runs it interruptibly (:meth:`Jobs.run`), so that SIGTERM interrupts a transaction there
the same way it does in the CLI.  A job still queued when its lock wait runs out, or when
the daemon stops, is answered without being run, as the lock would answer.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mgr_agent import api, commands
from mgr_agent.api import Channel, Request
from mgr_agent.commands.spec import Args, Context
from mgr_agent.config import Config
from mgr_agent.errors import AgentError, Interrupted, LockBusy
from mgr_agent.layout import Layout
from mgr_agent.lock import Lock
from mgr_agent.result import Result, failure


@dataclass
class Job:
    """A mutating request waiting for (or being run by) the main thread."""

    request: Request
    channel: Channel
    path: Path | None
    deadline: float
    queued: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: bool = False
    cancelled: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    result: Result | None = None

    def finish(self, result: Result) -> None:
        self.result = result
        self.done.set()


STOPPING = "mgr-agent daemon is stopping; nothing was done"


def request_args(request: Request) -> Args:
    """The request's arguments with their defaults; a package path the daemon can read."""
    args = commands.args_of_request(commands.COMMANDS[request.op], request.args)
    if request.args.get("path"):
        args.values["path"] = str(api.package_path(request))
    return args


class Jobs:
    """The queue of mutating requests and the state of the one being run: ``busy_since``
    and its time budget, and the main thread's ``heartbeat`` (for the watchdog);
    ``interruptible`` while a signal may interrupt it."""

    def __init__(self, layout: Layout, stop: threading.Event, config: Callable[[], Config]) -> None:
        """``stop``: set when the daemon stops; ``config``: the settings in force (SIGHUP
        replaces them)."""
        self.layout = layout
        self.stop = stop
        self.config = config
        self.queue: queue.Queue[Job] = queue.Queue()
        self.heartbeat = time.monotonic()
        self.busy_since: float | None = None
        self.busy_budget = 0.0
        self.interruptible = False

    # ---------------------------------------------------------------- connection threads
    def submit(self, request: Request, channel: Channel) -> Result:
        """Queue a mutating request and wait for its result, pumping its progress."""
        try:
            path = request_args(request).path("path")
            given = request.args.get("wait")
            wait = self.config().lock_wait if given is None else float(given)
            job = Job(request, channel, path, deadline=time.monotonic() + wait)
            self.queue.put(job)
            return self._await(job, wait)
        except AgentError as exc:
            return failure(exc, request.op, name=request.args.get("name"),
                           panel=request.args.get("panel"), in_daemon=True)

    def _await(self, job: Job, wait: float) -> Result:
        """Pump the job's progress to its client until it is done; give up like the lock
        would (LockBusy) when another operation holds the daemon past the deadline."""
        told = False
        while not job.done.is_set():
            job.channel.pump(0.05)
            if job.started:
                continue
            now = time.monotonic()
            other_running = self.busy_since is not None
            if not told and other_running and now - job.queued > 0.1:
                job.channel.progress(f"waiting for the lock held by {self._holder()}")
                told = True
            if self.stop.is_set():
                self.cancel(job, Interrupted(STOPPING, hint="run the command again"))
            elif now >= job.deadline and other_running:
                self.cancel(job, None, wait)
        job.channel.pump(0)
        assert job.result is not None
        return job.result

    def _holder(self) -> str:
        return Lock(self.layout.lock_file, "").holder()

    def cancel(self, job: Job, error: AgentError | None, wait: float = 0.0) -> None:
        """Answer a job that was not started: with ``error``, or (None) as the lock would
        after ``wait`` seconds; an install's package is checked first, as in-process."""
        with job.lock:
            if job.started or job.cancelled:
                return
            job.cancelled = True
        args = job.request.args
        if error is not None:
            job.finish(Result(action="failed", name=args.get("name"), panel=args.get("panel"),
                              error=error))
            return
        name, panel = args.get("name"), args.get("panel")
        if job.request.op == "install" and job.path is not None:
            # as in-process: a bad package is reported before the lock is waited for
            check = commands.COMMANDS["check"]
            checked = commands.execute(check, Context(self.layout), commands.args_of_request(
                check, {"path": str(job.path), "panel": panel, "sha256": args.get("sha256")}),
                in_daemon=True)
            if checked.error is not None:
                job.finish(checked)
                return
            name, panel = checked.name, checked.panel
        holder = self._holder()
        job.finish(Result(action="failed", name=name, panel=panel, error=LockBusy(
            f"{self.layout.lock_file}: held by {holder}; gave up after {wait:g} s", holder=holder)))

    # ---------------------------------------------------------------- the main thread
    def next(self, timeout: float) -> Job | None:
        """The next job to run, once marked started; None after ``timeout`` seconds
        without one, or when it was answered meanwhile."""
        try:
            job = self.queue.get(timeout=timeout)
        except queue.Empty:
            return None
        with job.lock:
            if job.cancelled:
                return None
            job.started = True
        return job

    def drain(self) -> None:
        """Answer every job still queued: the daemon is stopping."""
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                return
            self.cancel(job, Interrupted(STOPPING, hint="run the command again"))

    def run(self, op: str, given: dict[str, object], path: Path | None,
            progress: Callable[[str], None], wait: float, *, actor: str = "daemon") -> Result:
        """Run one operation in the main thread; SIGTERM/SIGINT interrupt it (undo)."""
        self.busy_since, self.busy_budget = time.monotonic(), self._budget(wait)
        command = commands.COMMANDS[op]
        args = commands.args_of_request(command, given)
        if path is not None:
            args.values["path"] = str(path)
        result: Result | None = None
        try:
            self.interruptible = not self.stop.is_set()
            ctx = Context(self.layout, progress=progress, lock_wait=wait, actor=actor)
            result = commands.execute(command, ctx, args, in_daemon=True)
            self.interruptible = False
        except Interrupted as exc:  # raised between the engine's return and the flag reset
            result = result or failure(exc, op, name=args.text("name"), in_daemon=True)
        finally:
            self.interruptible = False
            self.busy_since = None
            self.heartbeat = time.monotonic()
        return result

    def _budget(self, wait: float) -> float:
        """How long an operation may run before the watchdog takes the daemon as stuck."""
        c = self.config()
        return wait + 2 * c.hook_timeout + 3 * c.core_timeout + c.health_window + 120

    def healthy(self, stale_after: float) -> bool:
        """The main thread turned within ``stale_after`` seconds, or the operation it runs
        is within its budget."""
        now = time.monotonic()
        if self.busy_since is not None:
            return now - self.busy_since < self.busy_budget
        return now - self.heartbeat < stale_after
