"""The `logs` rows: last 100 records of a big ispmgr.log against `tail -n 100`, and the CPU
an idle `logs -f` uses."""

from __future__ import annotations

import subprocess
import sys
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


def idle_follow_cpu(root: Path, seconds: float) -> float:
    """CPU seconds (user + system) of ``mgr-agent logs -f`` over ``seconds`` of an idle log."""
    proc = subprocess.Popen([sys.executable, "-m", "mgr_agent", "--root", str(root), "logs", "-f",
                             "-n", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # start-up is not idle time
        watched = psutil.Process(proc.pid)
        start = watched.cpu_times()
        time.sleep(seconds)
        end = watched.cpu_times()
        return (end.user - start.user) + (end.system - start.system)
    finally:
        proc.terminate()
        proc.wait(10)


def idle_daemon(root: Path, seconds: float) -> dict[str, float]:
    """RSS (MiB) and CPU seconds of ``mgr-agent daemon`` idle for ``seconds``, with the
    watchdog running (WATCHDOG_USEC = 10 s: a ping every 5 s to a real notify socket)."""
    import os  # noqa: PLC0415
    import socket  # noqa: PLC0415

    root.mkdir(parents=True, exist_ok=True)
    notify_path = root / "notify.sock"
    notify_path.unlink(missing_ok=True)
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(notify_path))
    sink.setblocking(False)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "10000000"}
    env.pop("MGR_AGENT_FAULT", None)
    proc = subprocess.Popen([sys.executable, "-m", "mgr_agent", "--root", str(root), "daemon"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait for READY=1
            try:
                if b"READY=1" in sink.recv(4096):
                    break
            except BlockingIOError:
                time.sleep(0.05)
        watched = psutil.Process(proc.pid)
        start = watched.cpu_times()
        time.sleep(seconds)
        end = watched.cpu_times()
        rss = watched.memory_info().rss / 2**20
        return {"rss-mib": rss,
                "idle-cpu": (end.user - start.user) + (end.system - start.system)}
    finally:
        proc.terminate()
        proc.wait(30)
        sink.close()
