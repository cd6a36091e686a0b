"""``mgr-agent daemon``: boot-time recovery, readiness, watchdog and the local API.

Start: recover any interrupted transaction under the lock, then ``READY=1``.  The main
thread runs the mutating operations one at a time (:mod:`mgr_agent.jobs`: SIGTERM,
delivered to it, interrupts a transaction the same way it does in the CLI, the engine
undoes or finishes it); connections are served each in its own thread, read-only
operations run there.  A
separate thread pings the watchdog at half ``WATCHDOG_USEC`` only while the main loop's
heartbeat is fresh (or an operation is within its time budget), so a stuck daemon is
killed and restarted by systemd.  SIGHUP re-reads agent.toml.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from types import FrameType

from mgr_agent import __version__, api, client, commands, download, faults, journald, metrics
from mgr_agent import config as config_mod
from mgr_agent.api import Channel, PeerCred, Request
from mgr_agent.commands.spec import Context, Record
from mgr_agent.errors import AgentError, DaemonBusy, Interrupted, UsageError
from mgr_agent.jobs import Job, Jobs, request_args
from mgr_agent.lateroots import LateRoots
from mgr_agent.layout import Layout
from mgr_agent.notify import Notifier, listen_fds
from mgr_agent.result import Result

log = logging.getLogger("mgr_agent.daemon")

GROUP = "mgr-agent"
MAX_CONNECTIONS = 128
STOP_GRACE = 2.0   # seconds given to connections to send their last answer at shutdown


def resolve_group(spec: str) -> int | None:
    """A group name or number; None when there is no such group (only root is let in)."""
    if spec.isdigit():
        return int(spec)
    try:
        return grp.getgrnam(spec).gr_gid
    except KeyError:
        return None


class Daemon:
    def __init__(self, layout: Layout, *, group: str = GROUP, socket_path: Path | None = None,
                 notifier: Notifier | None = None) -> None:
        self.layout = layout
        self.group = group
        self.gid = resolve_group(group)
        self.socket_path = socket_path or layout.socket_path
        self.notifier = notifier or Notifier()
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.config = config_mod.Config()
        self.jobs = Jobs(layout, self.stop, lambda: self.config)
        self.degraded = ""
        self.last = ""
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.connections = 0   # served now (the accept thread adds, each connection's thread ends)
        self.counting = threading.Lock()
        self.late_roots = LateRoots(layout)
        self.listener: socket.socket | None = None
        self.bound_here = False
        self.watchdog_interval = self.notifier.watchdog_interval()
        self.tick = min(1.0, self.watchdog_interval / 4) if self.watchdog_interval else 1.0
        self.request_timeout = float(os.environ.get("MGR_AGENT_REQUEST_TIMEOUT") or api.REQUEST_TIMEOUT)

    # ---------------------------------------------------------------- lifecycle
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self._load_config()
        if self.gid is None:
            log.warning(f"group {self.group} does not exist: only root may use the API")
        if self.watchdog_interval:
            threading.Thread(target=self._watchdog, name="watchdog", daemon=True).start()
        try:
            self.listener = self._listen()
        except (OSError, AgentError) as exc:
            log.error(f"cannot listen on {self.socket_path}: {exc}")
            self.notifier.notify(f"STATUS=cannot listen on {self.socket_path}: {exc}")
            return 1
        try:
            self._recover_at_start()
            accept = threading.Thread(target=self._accept_loop, name="accept", daemon=True)
            accept.start()
            where = self._where()
            self.notifier.ready(self._status(f"ready, serving {where}"))
            log.info(f"mgr-agent {__version__} ready on {where} (root {self.layout.root}, "
                     f"watchdog {self.watchdog_interval or 0:g} s)")
            self._main_loop()
        finally:
            self._shutdown()
        return 0

    def _where(self) -> str:
        name = ""
        with contextlib.suppress(OSError):
            assert self.listener is not None
            name = str(self.listener.getsockname() or "")
        name = name or str(self.socket_path)
        return name if self.bound_here else f"{name} (socket activation)"

    def _status(self, text: str) -> str:
        return f"degraded: {self.degraded}; {text}" if self.degraded else text

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.reload.set()
            return
        self.stop.set()
        if self.jobs.interruptible:  # a transaction is running in this (the main) thread
            self.jobs.interruptible = False
            raise Interrupted(f"interrupted by {signal.Signals(signum).name}")

    def _load_config(self) -> bool:
        try:
            self.config = config_mod.load(self.layout)
        except AgentError as exc:
            log.error(f"{exc.message}; keeping the previous settings")
            return False
        return True

    def _listen(self) -> socket.socket:
        fds = listen_fds()
        if fds:
            for extra in fds[1:]:
                os.close(extra)
            sock = socket.socket(fileno=fds[0])
        else:
            path = self.socket_path
            path.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(path):
                probe = client.Client(path, connect_timeout=1.0)
                try:
                    probe.connect().close()
                except (client.Unavailable, AgentError):
                    path.unlink()
                else:
                    raise UsageError(f"another mgr-agent daemon answers on {path}")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            old = os.umask(0o117)
            try:
                sock.bind(str(path))
            finally:
                os.umask(old)
            os.chmod(path, 0o660)
            if self.gid is not None:
                os.chown(path, -1, self.gid)
            sock.listen(128)
            self.bound_here = True
        sock.settimeout(0.5)
        return sock

    def _recover_at_start(self) -> None:
        self.notifier.status("recovering interrupted transactions")
        download.clean(self.layout, older_than=0)
        result = self.jobs.run("recover", {}, None, log.info, self.config.lock_wait)
        if result.error is not None:
            self.degraded = f"recovery failed ({result.error.code}): {result.error.message}"
            log.error(f"recovery at start failed: {result.error.message}",
                      extra=journald.transaction_fields(result, "recover"))
        elif result.changed:
            journald.log_result(log, result, "recover")
        else:
            log.info("nothing to recover")
        metrics.after_transaction(self.layout, self.config)

    def _main_loop(self) -> None:
        while not self.stop.is_set():
            self.jobs.heartbeat = time.monotonic()
            faults.point("daemon-hang")
            if self.reload.is_set():
                self.reload.clear()
                self.notifier.reloading()
                self.gid = resolve_group(self.group)
                text = "reloaded agent.toml" if self._load_config() else "agent.toml has errors; not reloaded"
                log.info(text)
                self.notifier.notify("READY=1", f"STATUS={self._status(text)}")
            job = self.jobs.next(self.tick)
            if job is None:
                self.late_roots.poll()  # idle: a panel installed since our start?
                continue
            self._run_job(job)

    def _shutdown(self) -> None:
        self.stop.set()
        self.notifier.stopping()
        if self.listener is not None:
            self.listener.close()
        self.jobs.drain()
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline and self._active_connections():
            time.sleep(0.05)
        if self.bound_here:
            with contextlib.suppress(OSError):
                self.socket_path.unlink()
        log.info("stopped")

    def _active_connections(self) -> bool:
        return any(t.name == "mgr-agent-conn" for t in threading.enumerate())

    # ---------------------------------------------------------------- watchdog
    def healthy(self) -> bool:
        """The main loop turned recently, or the operation it runs is within its budget."""
        return self.jobs.healthy(max(0.75 * (self.watchdog_interval or 0), 3 * self.tick))

    def _watchdog(self) -> None:
        period = (self.watchdog_interval or 0) / 2
        warned = False
        while not self.stop.wait(period):
            if self.healthy():
                self.notifier.watchdog()
                warned = False
            elif not warned:
                log.error("the main loop is stuck; not pinging the watchdog (systemd will restart us)")
                warned = True

    # ---------------------------------------------------------------- connections
    def _accept_loop(self) -> None:
        assert self.listener is not None
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self.stop.is_set():
                    return
                log.warning(f"accept failed: {exc}")
                time.sleep(0.1)
                continue
            if not self.slots.acquire(blocking=False):
                self._refuse_busy(conn)
                continue
            with self.counting:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), name="mgr-agent-conn", daemon=True).start()

    def _refuse_busy(self, conn: socket.socket) -> None:
        with conn:
            conn.setblocking(False)
            busy = Result(action="failed", error=DaemonBusy(
                f"the daemon is serving {MAX_CONNECTIONS} connections; try again"))
            with contextlib.suppress(OSError):
                conn.send(api.encode(api.answer(busy)))

    def _serve(self, conn: socket.socket) -> None:
        try:
            api.handle_connection(conn, self, log.debug, request_timeout=self.request_timeout,
                                  full=lambda: self.connections >= MAX_CONNECTIONS)
        finally:
            with self.counting:
                self.connections -= 1
            self.slots.release()

    def authorise(self, cred: PeerCred) -> AgentError | None:
        refusal = api.authorise(cred, self.gid, self.group)
        if refusal is not None:
            log.warning(refusal.message)
        return refusal

    def run_reading(self, request: Request, channel: Channel) -> Result:
        command = commands.COMMANDS[request.op]
        ctx = Context(self.layout, progress=channel.progress, actor=journald.actor(request.peer),
                      as_json=True, degraded=self.degraded)
        if command.stream is None:
            return commands.execute(command, ctx, request_args(request), in_daemon=True)
        # a streaming command (``logs``): each record is an event; a client hanging up ends it
        stop = ctx.stop = threading.Event()

        def show(record: Record) -> None:
            channel.emit({"event": "record", "record": record.to_json()})
            if not channel.alive:
                stop.set()  # the client is gone: the follow loop ends

        ctx.show = show
        threading.Thread(target=api.watch_hangup, args=(channel.conn, stop, self.stop),
                         daemon=True).start()
        try:
            return commands.execute(command, ctx, request_args(request), in_daemon=True)
        finally:
            stop.set()

    def run_mutating(self, request: Request, channel: Channel) -> Result:
        return self.jobs.submit(request, channel)

    def _run_job(self, job: Job) -> None:
        """Run a started job in this (the main) thread and report it: the job's client,
        the journal, the metrics, systemd's status line."""
        op, args = job.request.op, job.request.args
        self.late_roots.poll()  # a panel installed since our start: the restart comes next
        left = max(0.0, job.deadline - time.monotonic())
        subject = args.get("name") or args.get("url") or args.get("path") or ""
        self.notifier.status(self._status(f"running {op} {subject}".strip()))
        result = self.jobs.run(op, args, job.path, job.channel.progress, left,
                               actor=journald.actor(job.request.peer))
        job.finish(result)
        journald.log_result(log, result, op, peer=job.request.peer)
        if result.tx is not None:
            metrics.after_transaction(self.layout, self.config)
        self.last = journald.describe(result, op)
        self.notifier.status(self._status(f"idle; last: {self.last}"))


def main(root: str | Path = "/", *, socket_path: Path | None = None, group: str = GROUP,
         verbose: int = 0) -> int:
    """``mgr-agent daemon``."""
    journald.setup(verbose)
    return Daemon(Layout.at(root), group=group, socket_path=socket_path).run()
