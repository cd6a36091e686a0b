"""The local API on the daemon's Unix socket, the server's side: request parsing, peer
credentials, the connection handler (see docs/daemon.md). The client, and the framing
both sides share, are in :mod:`mgr_agent.client`; their names are importable from here too.

One connection carries one request and its answer, as newline-delimited JSON:

    -> {"v": 1, "op": "install", "args": {"path": "/srv/demo.zip"}, "root": "/"}
    <- {"event": "progress", "message": "reading /srv/demo.zip"}       (zero or more)
    <- {"event": "record", "record": {...}}                            (``logs`` only)
    <- {"result": <the CLI's --json document>, "exit_code": 0}         (exactly one)

A client may pass the open package file with SCM_RIGHTS along with an ``install``/``check``
request (the daemon may not see the client's /tmp). Requests are bounded (1 MiB, 10 s);
anything malformed gets an error result, never a crash.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import queue
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mgr_agent import commands
from mgr_agent.client import (
    BUSY_RETRY,
    MAX_ANSWER,
    VERSION,
    Client,
    Unavailable,
    encode,
    error_from_dict,
    result_from_json,
)
from mgr_agent.errors import AgentError, NotAuthorised, UsageError
from mgr_agent.layout import Layout
from mgr_agent.result import Result, failure

__all__ = [  # the server's names, and the client's (tests and older callers import them here)
    "ARGS",
    "BUSY_RETRY",
    "IDLE_WHEN_FULL",
    "MAX_ANSWER",
    "MAX_QUEUED_EVENTS",
    "MAX_REQUEST",
    "MUTATING",
    "READING",
    "REQUEST_TIMEOUT",
    "REQUIRED",
    "SEND_TIMEOUT",
    "SO_PEERGROUPS",
    "VERSION",
    "Backend",
    "Channel",
    "Client",
    "PeerCred",
    "ProtocolError",
    "Request",
    "Unavailable",
    "answer",
    "authorise",
    "encode",
    "error_from_dict",
    "handle_connection",
    "package_path",
    "parse_request",
    "peer_credentials",
    "read_request",
    "result_from_json",
    "watch_hangup",
]

MAX_REQUEST = 1024 * 1024
REQUEST_TIMEOUT = 10.0         # the whole request line must arrive within this
SEND_TIMEOUT = 30.0            # a client that does not read its answer for this long is dropped
MAX_QUEUED_EVENTS = 10_000     # progress beyond this (a client not reading) is dropped
IDLE_WHEN_FULL = 1.0           # a silent connection is dropped after this when the daemon is full
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)

# derived from the command table: the ops, their arguments and types, which are changes
ARGS: dict[str, dict[str, tuple[type, ...]]] = {c.name: c.api_args() for c in commands.api_commands()}
REQUIRED = {c.name: c.required() for c in commands.api_commands() if c.required()}
MUTATING = tuple(c.name for c in commands.api_commands() if c.route == "daemon")
READING = tuple(c.name for c in commands.api_commands() if c.route != "daemon")


class ProtocolError(UsageError):
    """A request the daemon cannot read: bad JSON, unknown op or argument, too large."""

    code = "bad-request"


# ------------------------------------------------------------------ messages
def answer(result: Result) -> dict[str, Any]:
    return {"result": result.to_json(), "exit_code": result.exit_code}


@dataclass
class Request:
    op: str
    args: dict[str, Any]
    root: str | None = None
    fds: list[int] = field(default_factory=list)
    peer: PeerCred | None = None   # who asked (SO_PEERCRED), recorded in history and the journal

    def close_fds(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []


def parse_request(line: bytes) -> Request:
    """Validate one request line; raises ProtocolError with a message for the client."""
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed request: {exc}") from None
    except RecursionError:
        raise ProtocolError("malformed request: JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise ProtocolError("malformed request: expected a JSON object")
    if doc.get("v") != VERSION:
        raise ProtocolError(f"unsupported protocol version {doc.get('v')!r}; this daemon speaks {VERSION}",
                            hint="the CLI and the daemon come from different mgr-agent versions")
    op = doc.get("op")
    if not isinstance(op, str) or op not in ARGS:
        raise ProtocolError(f"unknown op {op!r}", hint=f"known: {', '.join(ARGS)}")
    args = doc.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError("malformed request: args must be an object")
    allowed = ARGS[op]
    for key, value in args.items():
        if key not in allowed:
            raise ProtocolError(f"{op}: unknown argument {key!r}")
        types = allowed[key]
        if value is not None and (not isinstance(value, types) or (
                isinstance(value, bool) and bool not in types)):
            raise ProtocolError(f"{op}: argument {key!r} must be {'/'.join(t.__name__ for t in types)}")
    for key in REQUIRED.get(op, ()):
        if not args.get(key):
            raise ProtocolError(f"{op}: argument {key!r} is required")
    one_of = commands.COMMANDS[op].one_of
    given = [key for key in one_of if args.get(key)]
    if len(given) > 1:
        raise ProtocolError(f"{op}: give a {' or a '.join(one_of)}, not both")
    if one_of and not given:
        raise ProtocolError(f"{op}: argument {' or '.join(map(repr, one_of))} is required")
    root = doc.get("root")
    if root is not None and not isinstance(root, str):
        raise ProtocolError("malformed request: root must be a string")
    return Request(op, args, root)


# ------------------------------------------------------------------ server side
@dataclass(frozen=True)
class PeerCred:
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]


def peer_credentials(conn: socket.socket) -> PeerCred:
    """SO_PEERCRED, and the supplementary groups (SO_PEERGROUPS, else /proc/PID/status)."""
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                         struct.calcsize("3i")))
    groups: list[int] = []
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 1024)
        groups = list(array.array("I", raw[: len(raw) - len(raw) % 4]))
    except OSError:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("Groups:"):
                    groups = [int(g) for g in line.split()[1:]]
    return PeerCred(pid, uid, gid, tuple(groups))


def authorise(cred: PeerCred, gid: int | None, group_name: str) -> NotAuthorised | None:
    """Root, the daemon's own user, or a member of the group; anyone else is refused."""
    if cred.uid in (0, os.getuid()):
        return None
    if gid is not None and (cred.gid == gid or gid in cred.groups):
        return None
    return NotAuthorised(f"not authorised: uid {cred.uid} (pid {cred.pid}) is neither root nor a member "
                         f"of the group {group_name}", uid=cred.uid)


class Channel:
    """The answer side of one connection; ``emit`` may be called from any thread."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.owner = threading.current_thread()
        self.pending: queue.Queue[dict[str, Any]] = queue.Queue()
        self.alive = True
        self.dropped = 0

    def emit(self, message: dict[str, Any]) -> None:
        if threading.current_thread() is self.owner:
            self.send(message)
        elif self.pending.qsize() < MAX_QUEUED_EVENTS:
            self.pending.put(message)
        else:
            self.dropped += 1

    def progress(self, message: str) -> None:
        self.emit({"event": "progress", "message": message})

    def pump(self, timeout: float) -> None:
        """Send what other threads queued (waiting up to ``timeout`` for the first)."""
        try:
            message = self.pending.get(timeout=timeout)
        except queue.Empty:
            return
        self.send(message)
        while True:
            try:
                self.send(self.pending.get_nowait())
            except queue.Empty:
                return

    def send(self, message: dict[str, Any]) -> None:
        if not self.alive:
            return
        try:
            self.conn.settimeout(SEND_TIMEOUT)
            self.conn.sendall(encode(message))
        except OSError:
            self.alive = False


class Backend(Protocol):
    """What the connection handler needs from the daemon."""

    layout: Layout
    stop: threading.Event

    def authorise(self, cred: PeerCred) -> AgentError | None: ...

    def run_mutating(self, request: Request, channel: Channel) -> Result: ...

    def run_reading(self, request: Request, channel: Channel) -> Result: ...


def read_request(conn: socket.socket, *, limit: int = MAX_REQUEST,
                 timeout: float = REQUEST_TIMEOUT,
                 full: Callable[[], bool] | None = None) -> tuple[bytes, list[int]]:
    """The first line of the connection (without the newline) and the descriptors sent
    with it; ProtocolError when it is too large, too slow or missing.  While ``full()``
    says the server has no free connection, a request still incomplete after
    ``IDLE_WHEN_FULL`` seconds is dropped instead of waiting out ``timeout``."""
    start = time.monotonic()
    deadline = start + timeout
    buf = bytearray()
    fds: list[int] = []
    try:
        while b"\n" not in buf:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                raise ProtocolError(f"request not received within {timeout:g} s")
            if full is not None and now - start >= IDLE_WHEN_FULL and full():
                raise ProtocolError(f"request not received within {IDLE_WHEN_FULL:g} s while the "
                                    "daemon is at its connection limit")
            conn.settimeout(min(left, IDLE_WHEN_FULL / 4) if full is not None else left)
            try:
                data, anc, flags, _ = conn.recvmsg(65536, socket.CMSG_SPACE(4 * 4),
                                                   socket.MSG_CMSG_CLOEXEC)
            except TimeoutError:
                continue
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += array.array("i", payload[: len(payload) - len(payload) % 4])
            if flags & socket.MSG_CTRUNC:
                raise ProtocolError("too many descriptors sent with the request")
            if not data:
                raise ProtocolError("connection closed before a complete request")
            buf += data
            if len(buf.split(b"\n", 1)[0]) > limit:
                raise ProtocolError(f"request larger than {limit} bytes")
    except BaseException:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        raise
    return bytes(buf.split(b"\n", 1)[0]), fds


def handle_connection(conn: socket.socket, backend: Backend,
                      log: Callable[[str], None] = lambda _m: None, *,
                      request_timeout: float = REQUEST_TIMEOUT,
                      full: Callable[[], bool] | None = None) -> None:
    """Serve one connection: authorise, read the request, run it, answer; never raises.
    An internal error is logged (with its traceback) to the ``mgr_agent`` logger."""
    channel = Channel(conn)
    request: Request | None = None
    try:
        try:
            cred = peer_credentials(conn)
            line, fds = read_request(conn, timeout=request_timeout, full=full)
            refusal = backend.authorise(cred)
            if refusal is not None:
                for fd in fds:
                    os.close(fd)
                log(f"refused {refusal.message}")
                raise refusal
            request = parse_request(line)
            request.fds = fds[:1]
            request.peer = cred
            for fd in fds[1:]:
                os.close(fd)
            if request.root is not None and Path(request.root).absolute() != backend.layout.root:
                raise UsageError(f"this daemon serves --root {backend.layout.root}, not {request.root}",
                                 hint="pass --no-daemon to work on another root in-process")
            log(f"uid {cred.uid} pid {cred.pid}: {request.op}")
            if request.op in MUTATING:
                result = backend.run_mutating(request, channel)
            else:
                result = backend.run_reading(request, channel)
        except Exception as exc:  # a bug must not take the daemon down
            result = failure(exc, "the daemon", in_daemon=True)
        channel.pump(0)
        channel.send(answer(result))
    finally:
        if request is not None:
            request.close_fds()
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
        conn.close()


# ------------------------------------------------------------------ operations
def package_path(request: Request) -> Path:
    """The package to read: the client's path when it is the file the client sent (or no
    file was sent), else the sent descriptor (the daemon may not see the client's /tmp)."""
    text = request.args.get("path") or ""
    path = Path(text)
    if not path.is_absolute():
        raise ProtocolError(f"{text!r}: the daemon needs an absolute path")
    if not request.fds:
        return path
    sent = os.fstat(request.fds[0])
    try:
        here = os.stat(path)
    except OSError:
        here = None
    if here is not None and (here.st_dev, here.st_ino) == (sent.st_dev, sent.st_ino):
        return path
    return Path(f"/proc/self/fd/{request.fds[0]}")


def watch_hangup(conn: socket.socket, stop: threading.Event, also: threading.Event) -> None:
    """Set ``stop`` when the client hangs up or ``also`` is set (for long ``logs -f``)."""
    while not stop.is_set():
        if also.is_set():
            stop.set()
            return
        with contextlib.suppress(OSError, ValueError):
            ready, _, _ = select.select([conn], [], [], 0.5)
            if ready and not conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                stop.set()
                return
