"""The service manager's side channels: sd_notify (readiness, status, watchdog) and the
sockets passed by socket activation.

sd_notify is spoken directly: a datagram of ``KEY=VALUE`` lines to the ``AF_UNIX`` socket
named by ``$NOTIFY_SOCKET`` (``@name`` is in the abstract namespace), sent with
``MSG_DONTWAIT``: when the manager's queue is full the message is dropped (and counted),
so a busy or stuck PID 1 can never block the daemon (libsystemd's sd_notify may block).
systemd-python's sender stays available as ``Notifier("systemd")``.  Socket activation
uses systemd-python when it is installed, else ``LISTEN_PID`` / ``LISTEN_FDS`` for the
descriptors from 3 on.  Both paths are tested.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, MutableMapping
from types import ModuleType

LISTEN_FDS_START = 3


def _systemd_daemon() -> ModuleType | None:
    try:
        from systemd import daemon  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    module: ModuleType = daemon
    return module


def send_datagram(address: str, message: str) -> bool:
    """The built-in sender: one datagram to ``address`` (``@x`` = abstract ``\\0x``),
    never blocking; False when it could not be sent (no socket, queue full)."""
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address[0] == "@" else address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message.encode(), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL, target)
        except OSError:  # EAGAIN: the manager's queue is full; the message is dropped
            return False
    return True


class Notifier:
    """Sends sd_notify messages; a no-op when not started by a service manager.

    ``backend`` is "fallback" (the built-in non-blocking sender; also what "auto" picks)
    or "systemd" (systemd-python's, which may block).  ``env`` defaults to ``os.environ``
    (tests pass their own).  ``dropped`` counts messages that could not be sent.
    """

    def __init__(self, backend: str = "auto", env: MutableMapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env
        self.dropped = 0
        module = _systemd_daemon() if backend == "systemd" else None
        if backend == "systemd" and module is None:
            raise RuntimeError("systemd-python is not installed")
        self.backend = "systemd" if module is not None else "fallback"
        self._send: Callable[[str], bool]
        if module is not None and self.env is os.environ:
            self._send = lambda message: bool(module.notify(message))
        else:
            self._send = self._fallback

    def _fallback(self, message: str) -> bool:
        return send_datagram(self.env.get("NOTIFY_SOCKET", ""), message)

    @property
    def enabled(self) -> bool:
        return bool(self.env.get("NOTIFY_SOCKET"))

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` as one message; False when there is nobody to tell."""
        if not self.enabled:
            return False
        sent = self._send("\n".join(line.replace("\n", " ") for line in lines))
        self.dropped += not sent
        return sent

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1", "STATUS=reloading the configuration")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds after which the manager kills us without a ping (``WATCHDOG_USEC``),
        or None when no watchdog is asked for (or it is meant for another process)."""
        usec = self.env.get("WATCHDOG_USEC", "")
        pid = self.env.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) == 0:
            return None
        if pid and pid != str(os.getpid()):
            return None
        return int(usec) / 1_000_000


def listen_fds(env: MutableMapping[str, str] | None = None, *, unset: bool = True) -> list[int]:
    """Descriptors passed by socket activation (empty when there are none for us)."""
    env = os.environ if env is None else env
    module = _systemd_daemon()
    if module is not None and env is os.environ:
        fds = [int(fd) for fd in module.listen_fds(unset_environment=unset)]
    else:
        fds = []
        if env.get("LISTEN_PID", "") == str(os.getpid()) and env.get("LISTEN_FDS", "").isdigit():
            fds = list(range(LISTEN_FDS_START, LISTEN_FDS_START + int(env["LISTEN_FDS"])))
        if unset:
            for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
                env.pop(key, None)
    for fd in fds:
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, False)  # hooks must not inherit the API socket
    return fds
