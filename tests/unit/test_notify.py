"""sd_notify and socket activation: systemd-python and the fallback speak the same protocol
(datagrams captured on a real AF_UNIX/SOCK_DGRAM socket)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mgr_agent import notify
from mgr_agent.notify import Notifier, listen_fds


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(2)
    yield str(path), sock
    sock.close()


def fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().splitlines())


def test_fallback_sends_ready_status_watchdog(sink: tuple[str, socket.socket]) -> None:
    path, sock = sink
    n = Notifier("fallback", env={"NOTIFY_SOCKET": path})
    assert n.backend == "fallback"
    assert n.ready("ready, serving x")
    got = fields(sock.recv(4096))
    assert got == {"READY": "1", "STATUS": "ready, serving x", "MAINPID": str(os.getpid())}
    assert n.status("busy\nwith a newline")
    assert sock.recv(4096) == b"STATUS=busy with a newline"
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert n.stopping("bye")
    assert fields(sock.recv(4096)) == {"STOPPING": "1", "STATUS": "bye"}
    assert n.reloading()
    assert fields(sock.recv(4096))["RELOADING"] == "1"


def test_fallback_abstract_socket() -> None:
    name = f"mgr-agent-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert Notifier("fallback", env={"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert sock.recv(100) == b"WATCHDOG=1"


def test_systemd_python_backend(sink: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("systemd.daemon")
    path, sock = sink
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    n = Notifier("systemd")
    assert n.backend == "systemd"
    assert n.ready("up")
    assert fields(sock.recv(4096))["READY"] == "1"
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_nobody_to_tell() -> None:
    n = Notifier("fallback", env={})
    assert not n.enabled
    assert not n.ready("x")
    assert not n.watchdog()
    assert not notify.send_datagram("relative/path", "READY=1")
    assert not Notifier("fallback", env={"NOTIFY_SOCKET": "/nonexistent/sock"}).watchdog()


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "junk"}, None),
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "PID"}, 1.0),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),   # meant for another process
])
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    env = {k: v.replace("PID", str(os.getpid())) for k, v in env.items()}
    assert Notifier("fallback", env=env).watchdog_interval() == expected


def test_listen_fds_fallback() -> None:
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0", "LISTEN_FDNAMES": "x"}
    assert listen_fds(env) == []
    assert env == {}, "the variables are not passed on to hooks"
    assert listen_fds({"LISTEN_PID": "1", "LISTEN_FDS": "1"}) == []
    # the protocol numbers passed descriptors from 3 (marked close-on-exec, if open)
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2"}
    assert listen_fds(env, unset=False) == [3, 4]
    assert env["LISTEN_FDS"] == "2"


def test_a_full_notify_queue_drops_instead_of_blocking(tmp_path: Path) -> None:
    """Nobody reads the manager's socket: the sender never blocks, later messages are
    dropped (and counted), and the socket works again once it is drained."""
    import threading  # noqa: PLC0415

    path = tmp_path / "full.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind(str(path))
        n = Notifier(env={"NOTIFY_SOCKET": str(path)})
        sent: list[bool] = []
        sender = threading.Thread(target=lambda: sent.extend(n.watchdog() for _ in range(5000)))
        sender.start()
        sender.join(30)
        assert not sender.is_alive(), "sd_notify blocked on a full queue"
        assert sent[0] and not all(sent)
        assert n.dropped == sent.count(False) > 0
        sock.setblocking(False)
        while True:  # drain what was queued
            try:
                sock.recv(100)
            except BlockingIOError:
                break
        sock.settimeout(2)
        assert n.status("after")
        assert sock.recv(100) == b"STATUS=after"


def test_notify_returns_at_once_and_drops_when_the_queue_is_full(tmp_path: Path) -> None:
    """The manager's queue is filled first (``net.unix.max_dgram_qlen`` datagrams, 10 on
    most systems): a blocking ``sendto`` would now wait until the manager reads.  ``notify``
    returns at once with False, counts the drop, and the dropped message never arrives."""
    import threading  # noqa: PLC0415
    import time  # noqa: PLC0415

    path = str(tmp_path / "queue.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as filler:
        manager.bind(path)
        filler.setblocking(False)
        queued = 0
        while True:
            try:
                filler.sendto(b"FILL", path)
            except BlockingIOError:
                break
            queued += 1
        assert queued > 0
        n = Notifier("fallback", env={"NOTIFY_SOCKET": path})
        result: list[tuple[bool, float]] = []

        def ping() -> None:
            start = time.monotonic()
            sent = n.watchdog()
            result.append((sent, time.monotonic() - start))

        sender = threading.Thread(target=ping, daemon=True)
        sender.start()
        sender.join(10)
        blocked = sender.is_alive()
        if blocked:  # unblock the sender (its sendto fails once the manager is gone)
            manager.close()
        assert not blocked, "notify blocked on a full queue"
        (sent, seconds), = result
        assert not sent
        assert n.dropped == 1
        assert seconds < 1.0, f"notify took {seconds:.3f} s on a full queue"
        # the queue holds only what was there before; once there is room, messages get through
        manager.setblocking(False)
        drained = []
        while True:
            try:
                drained.append(manager.recv(100))
            except BlockingIOError:
                break
        assert drained == [b"FILL"] * queued
        assert n.watchdog()
        assert manager.recv(100) == b"WATCHDOG=1"
        assert n.dropped == 1
