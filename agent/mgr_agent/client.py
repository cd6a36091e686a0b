"""The client of the local API: it sends one request to the daemon's socket and reads the
answer, rebuilding the daemon's Result and its error (see docs/daemon.md).

The message framing both sides use (``VERSION``, ``encode``) lives here, so that the
client loads neither the command table nor the server (:mod:`mgr_agent.api`).
"""

from __future__ import annotations

import errno
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mgr_agent.errors import AgentError, DaemonBusy, NotAuthorised
from mgr_agent.result import Result

VERSION = 1
MAX_ANSWER = 256 * 1024 * 1024
BUSY_RETRY = 5.0               # a client told "busy" retries for this long, with backoff


class Unavailable(Exception):
    """Nothing answers on the socket: the caller works in-process instead."""


# ------------------------------------------------------------------ messages
def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, default=str, separators=(",", ":")).encode() + b"\n"


def _error_classes() -> dict[str, type[AgentError]]:
    found: dict[str, type[AgentError]] = {}
    todo: list[type[AgentError]] = [AgentError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.code, cls)
        todo += cls.__subclasses__()
    return found


def error_from_dict(doc: dict[str, Any], exit_code: int | None = None) -> AgentError:
    """Rebuild the exception the daemon reported, so the CLI renders it the same way."""
    code = str(doc.get("code") or "internal-error")
    cls = _error_classes().get(code)
    if cls is None or (exit_code is not None and cls.exit_code != exit_code):
        base = cls or AgentError
        cls = type(base.__name__, (base,), {"code": code,
                                            "exit_code": exit_code if exit_code is not None else 1})
    exc = cls.__new__(cls)
    AgentError.__init__(exc, str(doc.get("message", "")), hint=doc.get("hint", ""),
                        **(doc.get("details") or {}))
    return exc


def result_from_json(doc: dict[str, Any], exit_code: int | None = None) -> Result:
    """The inverse of ``Result.to_json``."""
    error = doc.get("error")
    return Result(
        action=doc["action"], changed=bool(doc.get("changed")), name=doc.get("name"),
        panel=doc.get("panel"), version=doc.get("version"),
        previous_version=doc.get("previous_version"), warnings=list(doc.get("warnings") or []),
        hooks=list(doc.get("hooks") or []), tx=doc.get("tx"), plan=doc.get("plan"),
        notes=list(doc.get("notes") or []), data=doc.get("data"),
        error=error_from_dict(error, exit_code) if isinstance(error, dict) else None)


class Client:
    """Talks to the daemon at ``socket_path``."""

    def __init__(self, socket_path: Path, *, connect_timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.connect_timeout = connect_timeout

    def connect(self) -> socket.socket:
        """Raise Unavailable when nothing answers, NotAuthorised when we may not connect."""
        if not self.socket_path.exists():
            raise Unavailable(f"{self.socket_path}: no socket")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(self.connect_timeout)
        try:
            sock.connect(str(self.socket_path))
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise NotAuthorised(f"{self.socket_path}: permission denied: the mgr-agent daemon "
                                    "needs root or the mgr-agent group",
                                    hint="the daemon accepts root and members of the mgr-agent group; "
                                         "or run as root with --no-daemon") from None
            raise Unavailable(f"{self.socket_path}: {exc.strerror}") from None
        sock.settimeout(None)
        return sock

    def stream(self, op: str, args: dict[str, Any], *, root: Path | None = None,
               fd: int | None = None) -> Iterator[dict[str, Any]]:
        """Send one request; yield every message of the answer, the result last."""
        sock = self.connect()
        with sock:
            doc: dict[str, Any] = {"v": VERSION, "op": op, "args": args}
            if root is not None:
                doc["root"] = str(root)
            data = encode(doc)
            try:
                sent = socket.send_fds(sock, [data], [fd]) if fd is not None else sock.send(data)
                sock.sendall(data[sent:])
            except OSError:  # a busy daemon answers and hangs up without reading: read that
                pass
            reader = sock.makefile("rb")
            while True:
                line = reader.readline(MAX_ANSWER)
                if not line.endswith(b"\n"):
                    raise AgentError("the daemon closed the connection before answering "
                                     "(was it stopped or restarted?)",
                                     hint="`mgr-agent history` shows whether the operation ran")
                message = json.loads(line)
                yield message
                if "result" in message:
                    return

    def call(self, op: str, args: dict[str, Any], *, root: Path | None = None, fd: int | None = None,
             progress: Callable[[str], None] | None = None,
             record: Callable[[dict[str, Any]], None] | None = None) -> Result:
        """Run ``op`` in the daemon; progress events go to ``progress``, log records to
        ``record``; returns the daemon's Result, its error rebuilt as the same exception.
        A daemon at its connection limit answers ``daemon-busy`` at once: the call is then
        repeated with backoff for up to ``BUSY_RETRY`` seconds."""
        deadline = time.monotonic() + BUSY_RETRY
        pause = 0.05
        while True:
            result = self._call_once(op, args, root=root, fd=fd, progress=progress, record=record)
            busy = isinstance(result.error, DaemonBusy)
            if not busy or time.monotonic() + pause > deadline:
                return result
            time.sleep(pause)  # a backoff between attempts, not a wait for an event
            pause = min(pause * 2, 1.0)

    def _call_once(self, op: str, args: dict[str, Any], *, root: Path | None, fd: int | None,
                   progress: Callable[[str], None] | None,
                   record: Callable[[dict[str, Any]], None] | None) -> Result:
        for message in self.stream(op, args, root=root, fd=fd):
            event = message.get("event")
            if event == "progress" and progress is not None:
                progress(str(message.get("message", "")))
            elif event == "record" and record is not None:
                record(message.get("record") or {})
            elif "result" in message:
                return result_from_json(message["result"], message.get("exit_code"))
        raise AgentError("no result from the daemon")  # pragma: no cover - stream returns on it
