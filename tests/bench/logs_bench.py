"""The `logs` rows and the idle rows: a big ispmgr.log for `logs -n 100`, the CPU an idle
`logs -f` uses, and an idle daemon's RSS and CPU with its notify socket drained."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

LINE = ("Nov 21 10:{m:02d}:{s:02d} [{pid}:{th}] core_module \x1b[1;32mINFO\x1b[0m "
        "handler demo.py func demo.settings answered in {ms} ms with a page of {n} bytes\n")


def build_log(root: Path, size: int) -> Path:
    """A ``size``-byte ispmgr.log of realistic lines (cached between runs)."""
    log = root / "usr/local/mgr5/var/ispmgr.log"
    if log.exists() and log.stat().st_size >= size:
        return log
    log.parent.mkdir(parents=True, exist_ok=True)
    block = "".join(LINE.format(m=i // 60 % 60, s=i % 60, pid=4000 + i % 7, th=i % 3, ms=i % 97,
                                n=1000 + i) for i in range(8000)).encode()
    with open(log, "wb") as fh:
        written = 0
        while written < size:
            fh.write(block)
            written += len(block)
    return log


def idle_follow_cpu(root: Path, seconds: float, python: str = sys.executable) -> float:
    """CPU seconds (user + system) of ``mgr-agent logs -f`` over ``seconds`` of an idle log,
    from the moment it has printed the last record (its start-up is not idle time)."""
    proc = subprocess.Popen([python, "-m", "mgr_agent", "--root", str(root), "logs", "-f",
                             "-n", "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        out = proc.stdout
        assert out is not None
        ready = threading.Event()

        def first_line() -> None:
            out.readline()
            ready.set()

        threading.Thread(target=first_line, daemon=True).start()
        if not ready.wait(120):
            raise RuntimeError("`logs -f` printed nothing in 120 s")
        watched = psutil.Process(proc.pid)
        start = watched.cpu_times()
        time.sleep(seconds)  # the measurement itself: idle time
        end = watched.cpu_times()
        return (end.user - start.user) + (end.system - start.system)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class NotifySink:
    """The service manager's end of sd_notify: a datagram socket read by a thread for as
    long as the daemon runs, so that its queue (``net.unix.max_dgram_qlen``, often 10)
    never fills.  Remembers every message; :meth:`wait_for` waits for one."""

    def __init__(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._drain, name="notify-sink", daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while not self.stopping.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self.changed:
                self.messages.append(data.decode(errors="replace"))
                self.changed.notify_all()

    def wait_for(self, line: str, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(
                lambda: any(line in m.splitlines() for m in self.messages), timeout)

    def count(self, line: str) -> int:
        with self.changed:
            return sum(line in m.splitlines() for m in self.messages)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()
        self.path.unlink(missing_ok=True)


def idle_daemon(root: Path, seconds: float, python: str = sys.executable) -> dict[str, float]:
    """RSS (MiB) and CPU seconds of ``mgr-agent daemon`` idle for ``seconds``, with the
    watchdog running (WATCHDOG_USEC = 10 s: a ping every 5 s to a real notify socket,
    drained all along), and the number of pings received."""
    root.mkdir(parents=True, exist_ok=True)
    sink = NotifySink(root / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(sink.path), "WATCHDOG_USEC": "10000000"}
    env.pop("MGR_AGENT_FAULT", None)
    proc = subprocess.Popen([python, "-m", "mgr_agent", "--root", str(root), "daemon"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not sink.wait_for("READY=1", 60):
            raise RuntimeError(f"the daemon did not send READY=1 (exit {proc.poll()})")
        watched = psutil.Process(proc.pid)
        start = watched.cpu_times()
        time.sleep(seconds)  # the measurement itself: idle time
        end = watched.cpu_times()
        rss = watched.memory_info().rss / 2**20
        return {"rss-mib": rss, "idle-cpu": (end.user - start.user) + (end.system - start.system),
                "pings": float(sink.count("WATCHDOG=1"))}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise RuntimeError("the daemon did not exit within 30 s of SIGTERM") from None
        finally:
            sink.close()
