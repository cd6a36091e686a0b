"""The protocol module: request validation, results and errors rebuilt identically on the
client side, authorisation rules, bounded request reading, journal fields."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

import pytest

from mgr_agent import api, errors, journald
from mgr_agent.api import PeerCred, ProtocolError, parse_request
from mgr_agent.errors import AgentError, HookFailed, NotAuthorised, RolledBack
from mgr_agent.result import Result


def req(**doc: object) -> bytes:
    return json.dumps({"v": 1, **doc}).encode()


# ------------------------------------------------------------------ requests
def test_valid_request() -> None:
    r = parse_request(req(op="install", args={"path": "/srv/x.zip", "dry_run": True, "wait": 2.5,
                                              "panel": None}, root="/"))
    assert (r.op, r.args["path"], r.root) == ("install", "/srv/x.zip", "/")


@pytest.mark.parametrize(("line", "message"), [
    (b"{not json", "malformed request"),
    (b"\xff\xfe", "malformed request"),
    (b"[1, 2]", "expected a JSON object"),
    (json.dumps({"op": "list"}).encode(), "unsupported protocol version"),
    (json.dumps({"v": 2, "op": "list"}).encode(), "unsupported protocol version"),
    (req(op="format-disk"), "unknown op"),
    (req(op=["list"]), "unknown op"),
    (req(op="list", args=[]), "args must be an object"),
    (req(op="install", args={"path": "/x", "evil": 1}), "unknown argument 'evil'"),
    (req(op="install", args={"path": 5}), "'path' must be str"),
    (req(op="install", args={"dry_run": "yes"}), "'dry_run' must be bool"),
    (req(op="history", args={"limit": True}), "'limit' must be int"),
    (req(op="history", args={"limit": 1.5}), "'limit' must be int"),
    (req(op="uninstall", args={}), "'name' is required"),
    (req(op="list", root=7), "root must be a string"),
])
def test_malformed_requests_are_usage_errors(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as info:
        parse_request(line)
    assert info.value.code == "bad-request" and info.value.exit_code == 2


# ------------------------------------------------------------------ results and errors
def all_error_classes() -> list[type[AgentError]]:
    out, todo = [], [AgentError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo += cls.__subclasses__()
    return out


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_every_error_is_rebuilt_as_the_same_class(cls: type[AgentError]) -> None:
    exc = cls.__new__(cls)
    AgentError.__init__(exc, f"{cls.__name__} happened", hint="do this", path="/x", n=3)
    msg = json.loads(api.encode(api.answer(Result(action="failed", name="demo", error=exc))))
    back = api.result_from_json(msg["result"], msg["exit_code"])
    assert type(back.error) is cls
    assert back.to_json() == Result(action="failed", name="demo", error=exc).to_json()
    assert back.exit_code == cls.exit_code == msg["exit_code"]


def test_unknown_error_code_keeps_code_and_exit_code() -> None:
    back = api.error_from_dict({"code": "from-the-future", "message": "m", "hint": "h"}, 42)
    assert (back.code, back.exit_code, back.message, back.hint) == ("from-the-future", 42, "m", "h")
    assert isinstance(back, AgentError)


def test_result_round_trip_is_exact() -> None:
    cause = HookFailed("post-install exited 3")
    result = Result(action="rolled_back", name="demo", panel="ispmanager", version="1.1",
                    previous_version="1.0", warnings=["w"], hooks=[{"hook": "post-install", "exit_code": 3}],
                    tx="2026", plan={"summary": {"add": 1}}, notes=["n"], data={"k": [1, 2]},
                    error=RolledBack("failed — rolled back", cause=cause, hint="h", cause_code="hook-failed"))
    doc = json.loads(api.encode(api.answer(result)))
    assert doc["exit_code"] == 8
    back = api.result_from_json(doc["result"], doc["exit_code"])
    assert back.to_json() == result.to_json()
    assert back.exit_code == result.exit_code


def test_not_authorised_and_download_errors_have_codes() -> None:
    assert (errors.NotAuthorised.code, errors.NotAuthorised.exit_code) == ("not-authorised", 14)
    assert (errors.DownloadFailed.code, errors.DownloadFailed.exit_code) == ("download-failed", 15)


# ------------------------------------------------------------------ authorisation
@pytest.mark.parametrize(("cred", "allowed"), [
    (PeerCred(1, 0, 0, ()), True),                      # root
    (PeerCred(1, 1000, 1000, (4242,)), True),            # supplementary member
    (PeerCred(1, 1000, 4242, ()), True),                 # primary group
    (PeerCred(1, 1000, 1000, (27, 100)), False),
    (PeerCred(1, 65534, 65534, ()), False),
])
def test_authorise(cred: PeerCred, allowed: bool) -> None:
    refusal = api.authorise(cred, 4242, "mgr-agent")
    if allowed or cred.uid == os.getuid():
        assert refusal is None
    else:
        assert isinstance(refusal, NotAuthorised)
        assert f"uid {cred.uid}" in refusal.message and "mgr-agent" in refusal.message


def test_without_the_group_only_root() -> None:
    assert api.authorise(PeerCred(1, 1000, 4242, (4242,)), None, "mgr-agent") is not None
    assert api.authorise(PeerCred(1, 0, 0, ()), None, "mgr-agent") is None


# ------------------------------------------------------------------ framing
def test_read_request_bounds() -> None:
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b'{"v":1,"op":"list"}\nignored')
        line, fds = api.read_request(a, timeout=2)
        assert line == b'{"v":1,"op":"list"}' and fds == []
    a, b = socket.socketpair()
    with a, b:
        writer = threading.Thread(target=lambda: b.sendall(b"x" * 5000), daemon=True)
        writer.start()
        with pytest.raises(ProtocolError, match="larger than 4096"):
            api.read_request(a, limit=4096, timeout=2)
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b'{"v":1,')
        start = time.monotonic()
        with pytest.raises(ProtocolError, match=r"not received within 0\.3 s"):
            api.read_request(a, timeout=0.3)
        assert time.monotonic() - start < 2
    a, b = socket.socketpair()
    with a, b:
        b.close()
        with pytest.raises(ProtocolError, match="closed before"):
            api.read_request(a, timeout=1)


def test_descriptors_travel_with_the_request(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "pkg.zip")
    with open(path, "wb") as fh:
        fh.write(b"PK")
    a, b = socket.socketpair()
    fd = os.open(path, os.O_RDONLY)
    with a, b:
        socket.send_fds(b, [b'{"v":1,"op":"check","args":{"path":"/elsewhere/pkg.zip"}}\n'], [fd])
        os.close(fd)
        line, fds = api.read_request(a, timeout=2)
        request = parse_request(line)
        request.fds = fds
        try:
            # not the same file at that path here: the descriptor is used
            assert str(api.package_path(request)) == f"/proc/self/fd/{fds[0]}"
            request.args["path"] = path
            assert str(api.package_path(request)) == path
        finally:
            request.close_fds()
    with pytest.raises(ProtocolError, match="absolute"):
        api.package_path(api.Request("install", {"path": "rel.zip"}))


# ------------------------------------------------------------------ journal fields
def test_transaction_fields_and_stderr_format(caplog: pytest.LogCaptureFixture) -> None:
    result = Result(action="upgraded", name="demo", panel="ispmanager", version="1.1",
                    previous_version="1.0", tx="20260101000000abcdef")
    fields = journald.transaction_fields(result, "install")
    assert fields == {"MGR_AGENT_TX": "20260101000000abcdef", "MGR_AGENT_PLUGIN": "demo",
                      "MGR_AGENT_VERSION": "1.1", "MGR_AGENT_ACTION": "upgraded",
                      "MGR_AGENT_RESULT": "ok", "MGR_AGENT_OP": "install",
                      "MGR_AGENT_PANEL": "ispmanager", "MGR_AGENT_UID": "cli",
                      "MGR_AGENT_PID": str(os.getpid())}
    peer = api.PeerCred(pid=4242, uid=1001, gid=1001, groups=())
    asked = journald.transaction_fields(result, "install", peer)
    assert (asked["MGR_AGENT_UID"], asked["MGR_AGENT_PID"]) == ("1001", "4242")
    assert journald.actor(peer) == "uid 1001 pid 4242" and journald.actor(None) == "cli"
    failed = Result(action="failed", name="x", error=errors.NotInstalled("x: not installed"))
    assert journald.transaction_fields(failed, "uninstall")["MGR_AGENT_RESULT"] == "not-installed"
    record = logging.LogRecord("mgr_agent.daemon", logging.INFO, __file__, 1,
                               journald.describe(result, "install"), None, None)
    for k, v in fields.items():
        setattr(record, k, v)
    text = journald.FieldsFormatter("%(levelname)s %(message)s").format(record)
    assert text.startswith("INFO install demo 1.1: upgraded (tx 20260101000000abcdef) [")
    assert "MGR_AGENT_PLUGIN=demo" in text


def test_setup_without_journald_logs_to_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MGR_AGENT_NO_JOURNAL", "1")
    handler = journald.setup()
    try:
        assert isinstance(handler, logging.StreamHandler)
        assert not journald.journald_present()
    finally:
        logging.getLogger("mgr_agent").removeHandler(handler)
