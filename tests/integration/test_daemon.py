"""The daemon on a temp root with its own socket: readiness and watchdog datagrams, the CLI
through the daemon against the CLI in-process (same JSON, text and exit codes), peer
credentials, hostile clients during a real install, SIGTERM during an install, SIGHUP,
streamed logs, and installs from an https URL."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import itertools
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from mgr_agent import api
from mgr_agent.sandbox.samples import ispmanager_files, write_zip
from tests.helpers import Run, cli, leftovers, unprivileged_python
from tests.helpers import snapshot as tree_snapshot
from tests.waits import Feed, LineReader, wait_for_file, wait_for_lock

if TYPE_CHECKING:
    from mgr_agent.commands.reads import PingData

MGR = "usr/local/mgr5"
GID = 64123                      # a group that needs no /etc/group entry: setpriv --groups=GID
SETPRIV = shutil.which("setpriv")
TX = re.compile(r"\d{14}[0-9a-f]{6}")


def make_root(base: Path) -> Path:
    r = base / "root"
    (r / "usr/local/psa").mkdir(parents=True)
    (r / "usr/local/psa/version").write_text("18.0.60 Debian 12.0 1800240311.09\n")
    (r / f"{MGR}/etc").mkdir(parents=True)
    (r / "var/lib").mkdir(parents=True)
    return r


def env_clean(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MGR_AGENT_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_"))}
    env.update(extra)
    return env


class Daemon:
    """``mgr-agent --root ROOT daemon`` as a child, its sd_notify datagrams collected."""

    def __init__(self, root: Path, work: Path, *, watchdog_usec: int | None = None,
                 env: dict[str, str] | None = None, group: str = str(GID)) -> None:
        self.root = root
        self.messages: Feed[tuple[float, str]] = Feed()
        work.mkdir(parents=True, exist_ok=True)
        self.notify_path = work / f"notify-{time.monotonic_ns()}.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.notify_path))
        self.sock.settimeout(0.2)
        self.closed = threading.Event()
        self.reader = threading.Thread(target=self._collect, daemon=True)
        self.reader.start()
        extra = {"NOTIFY_SOCKET": str(self.notify_path), "MGR_AGENT_NO_JOURNAL": "1",
                 "MGR_AGENT_REQUEST_TIMEOUT": "2", **(env or {})}
        if watchdog_usec:
            extra["WATCHDOG_USEC"] = str(watchdog_usec)
        self.log_path = work / f"daemon-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mgr_agent", "--root", str(root), "daemon", "--group", group, "-v"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env_clean(**extra))

    def _collect(self) -> None:
        while not self.closed.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for(self, needle: str, timeout: float = 30, after: int = 0) -> int:
        """Index of the first datagram (from ``after``) containing ``needle``."""
        try:
            return self.messages.wait_for_item(lambda m: needle in m[1], after=after, timeout=timeout,
                                               what=f"{needle!r} from the daemon", alive=self.alive)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; log:\n{self.output()}") from None

    def pings(self) -> list[float]:
        return [t for t, text in self.messages if text == "WATCHDOG=1"]

    def wait_for_log(self, needle: str, timeout: float = 30) -> None:
        """Until the daemon's own output holds ``needle``."""
        wait_for_file(self.log_path, lambda content: needle.encode() in content,
                      what=f"{needle!r} in the daemon's log", timeout=timeout, alive=self.alive)

    def ready(self) -> Daemon:
        self.wait_for("READY=1")
        return self

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.closed.set()
        self.reader.join(2)
        self.sock.close()
        self.log.close()
        return rc


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    started: list[Daemon] = []

    def _start(root: Path, **kw: Any) -> Daemon:
        d = Daemon(root, tmp_path / "daemon", **kw)
        started.append(d)
        return d

    yield _start
    for d in started:
        d.stop(timeout=5)  # a daemon made to hang ignores SIGTERM: killed after 5 s


def snapshot(root: Path) -> dict[str, tuple[str, int, str]]:
    """The tree (state dir excluded) without the daemon's socket, which cannot be read."""
    sock = root / "run/mgr-agent/agent.sock"
    aside = root.parent / "agent.sock.aside"
    moved = os.path.lexists(sock)
    if moved:
        os.rename(sock, aside)
    try:
        return {k: v for k, v in tree_snapshot(root).items() if not k.startswith("run")}
    finally:
        if moved:
            os.rename(aside, sock)


def norm(text: str, *roots: Path) -> str:
    for r in roots:
        text = text.replace(str(r), "ROOT")
    text = TX.sub("TX", text)
    return re.sub(r'"seconds": [0-9.e-]+', '"seconds": 0', text)


def via(root: Path, *args: str, daemon: bool, as_json: bool = True, **kw: Any) -> Run:
    env = kw.pop("env", {})
    if not daemon:
        env = {**env, "MGR_AGENT_NO_DAEMON": "1"}
    return cli(root, *args, env=env, as_json=as_json, **kw)


def pkg(pkgs: Path, version: str, **kw: Any) -> Path:
    return write_zip(ispmanager_files("demo", version, **kw), pkgs / f"demo-{version}-{len(kw)}.zip")


# ------------------------------------------------------------------ sd_notify
def test_ready_status_and_watchdog_cadence(root: Path, start: Any) -> None:
    d = start(root, watchdog_usec=1_000_000)
    ready = d.wait_for("READY=1")
    assert d.wait_for("STATUS=recovering") < ready, "recovery is reported before ready"
    fields = dict(line.split("=", 1) for line in d.messages[ready][1].splitlines())
    assert fields["STATUS"].startswith("ready, serving ") and fields["MAINPID"] == str(d.proc.pid)
    d.messages.wait_until(lambda ms: sum(text == "WATCHDOG=1" for _, text in ms) >= 6,
                          what="6 watchdog pings", timeout=15, alive=d.alive)
    pings = d.pings()
    gaps = sorted(b - a for a, b in itertools.pairwise(pings))
    median = gaps[len(gaps) // 2]
    assert 0.35 <= median <= 0.7, f"pings every {gaps}, expected about half of 1 s"
    assert d.stop() == 0
    assert any("STOPPING=1" in text for _, text in d.messages)
    assert not (root / "run/mgr-agent/agent.sock").exists(), "a socket it bound itself is removed"


def test_watchdog_stops_when_the_main_loop_hangs(root: Path, start: Any) -> None:
    # the main loop turns every 0.25 s with a 1 s watchdog: it hangs on its 8th turn (~2 s)
    d = start(root, watchdog_usec=1_000_000, env={"MGR_AGENT_FAULT": "daemon-hang:8=hang"})
    d.ready()
    d.wait_for_log("not pinging the watchdog")
    assert len(d.pings()) >= 2, "it pinged while healthy"
    seen = len(d.messages)
    assert d.messages.stays_without(lambda m: m[1] == "WATCHDOG=1", within=2.5, after=seen), \
        "no ping once the main loop is stuck"
    assert d.proc.poll() is None, "the daemon hangs, it does not exit"


def test_sighup_reloads_agent_toml(root: Path, start: Any) -> None:
    d = start(root).ready()
    conf = root / "etc/mgr-agent/agent.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text("[lock]\nwait = 0.5\n")
    n = len(d.messages)
    d.proc.send_signal(signal.SIGHUP)
    i = d.wait_for("RELOADING=1", after=n)
    d.wait_for("STATUS=reloaded agent.toml", after=i)
    conf.write_text("[nonsense]\n")
    n = len(d.messages)
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for("not reloaded", after=n)
    assert d.proc.poll() is None, "a bad config does not stop the daemon"
    assert "unknown section [nonsense]" in d.output()
    assert d.stop() == 0


# ------------------------------------------------------------------ CLI: daemon == in-process
def test_cli_through_daemon_is_identical_to_in_process(tmp_path: Path, pkgs: Path, start: Any) -> None:
    served, local = make_root(tmp_path / "a"), make_root(tmp_path / "b")
    d = start(served).ready()
    v10, v11 = pkg(pkgs, "1.0"), pkg(pkgs, "1.1")
    broken = pkg(pkgs, "1.2", post_install="echo post-install failing >&2; exit 3")
    cases = [
        (("install", str(v10)), 0),
        (("install", str(v11)), 0),
        (("install", str(broken)), 8),
        (("rollback", "demo"), 0),
        (("uninstall", "demo"), 0),
        (("uninstall", "demo"), 4),
        (("install", str(pkgs / "missing.zip")), 4),
        (("recover",), 0),
    ]
    for args, rc in cases:
        a = via(served, *args, daemon=True)
        b = via(local, *args, daemon=False)
        assert (a.rc, b.rc) == (rc, rc), (args, a, b)
        assert norm(json.dumps(a.json), served) == norm(json.dumps(b.json), local), args
    assert "uid 0" in d.output(), "the commands really went through the daemon"
    assert snapshot(served) == snapshot(local)
    # text output (stdout and stderr, progress included) is the same too
    for args, rc in [(("install", str(v10)), 0), (("install", str(broken)), 8), (("uninstall", "nope"), 4)]:
        a = via(served, *args, daemon=True, as_json=False)
        b = via(local, *args, daemon=False, as_json=False)
        assert (a.rc, b.rc) == (rc, rc)
        assert norm(a.stdout, served) == norm(b.stdout, local)
        assert norm(a.stderr, served) == norm(b.stderr, local), (a.stderr, b.stderr)
    assert leftovers(served) == []


def test_relative_path_and_a_file_the_daemon_cannot_see(root: Path, pkgs: Path, start: Any,
                                                         tmp_path: Path) -> None:
    start(root).ready()
    v10 = pkg(pkgs, "1.0")
    done = subprocess.run([sys.executable, "-m", "mgr_agent", "--root", str(root), "install", v10.name,
                           "--json"], cwd=pkgs, capture_output=True, text=True, env=env_clean(),
                          check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["action"] == "installed"
    # the client's file is passed as a descriptor: the daemon installs it even where it
    # cannot see the path (a private /tmp, or the file replaced after the request)
    rq = api.Request("install", {"path": "/nonexistent/demo.zip"})
    v11 = pkg(pkgs, "1.1")
    fd = os.open(v11, os.O_RDONLY)
    try:
        result = api.Client(root / "run/mgr-agent/agent.sock").call(rq.op, rq.args, root=root, fd=fd)
    finally:
        os.close(fd)
    assert result.action == "upgraded", result.to_json()


def test_a_second_request_waits_for_the_first(root: Path, pkgs: Path, start: Any) -> None:
    d = start(root).ready()
    slow = pkg(pkgs, "1.0", pre_install="sleep 3")
    first = subprocess.Popen([sys.executable, "-m", "mgr_agent", "--root", str(root), "install", str(slow),
                              "--json"], stdout=subprocess.PIPE, text=True, env=env_clean())
    wait_for_lock(root, d.proc.pid, alive=lambda: first.poll() is None)  # the daemon, for the client
    busy = via(root, "uninstall", "demo", "--wait", "0", daemon=True)
    assert busy.rc == 9, busy
    assert busy.json["error"]["code"] == "lock-busy"
    assert f"held by pid {d.proc.pid} (install demo" in busy.json["error"]["message"]
    waited = via(root, "uninstall", "demo", "--wait", "60", daemon=True)
    assert first.wait(60) == 0
    assert waited.rc == 0 and waited.json["action"] == "removed", waited


# ------------------------------------------------------------------ peer credentials
@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temp dir other users can traverse (pytest's are root-only)."""
    d = Path(tempfile.mkdtemp(prefix="mgr-agent-peer-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.root
@pytest.mark.skipif(SETPRIV is None, reason="needs setpriv")
def test_peer_credentials(open_tmp: Path, start: Any) -> None:
    root = make_root(open_tmp)
    d = start(root).ready()
    sock = root / "run/mgr-agent/agent.sock"
    assert (sock.stat().st_mode & 0o777, sock.stat().st_gid) == (0o660, GID)
    zip_ = write_zip(ispmanager_files("demo", "1.0"), open_tmp / "demo.zip")
    zip_.chmod(0o644)
    # the checkout may be readable by root only (a clone under /root): the client gets a copy
    python, python_env = unprivileged_python(open_tmp / "client")
    base = [*python, "-m", "mgr_agent", "--root", str(root)]

    def as_user(*argv: str, groups: str) -> subprocess.CompletedProcess[str]:
        who = [str(SETPRIV), "--reuid=65534", "--regid=65534",
               "--clear-groups" if groups == "" else f"--groups={groups}"]
        return subprocess.run([*who, *base, *argv, "--json"], capture_output=True, text=True,
                              env=env_clean(HOME="/", **python_env), cwd="/", check=False,
                              timeout=120)

    member = as_user("install", str(zip_), groups=str(GID))
    assert member.returncode == 0, member.stderr
    assert json.loads(member.stdout)["action"] == "installed"
    # a non-member cannot even open the 0660 socket: told so, clearly, not tried in-process
    outsider = as_user("uninstall", "demo", groups="")
    assert outsider.returncode == 14, outsider
    assert json.loads(outsider.stdout)["error"]["code"] == "not-authorised"
    # and if the socket is opened up by mistake, the daemon refuses by SO_PEERCRED
    sock.chmod(0o666)
    refused = as_user("uninstall", "demo", groups="")
    doc = json.loads(refused.stdout)
    assert refused.returncode == 14 and doc["error"]["code"] == "not-authorised", refused
    assert "uid 65534" in doc["error"]["message"] and "not a member" not in doc["error"]["message"]
    assert "neither root nor a member of the group" in doc["error"]["message"]
    assert "uid 65534" in d.output(), d.output()
    assert (root / MGR / "addon/demo.py").exists(), "the refused uninstall did nothing"


# ------------------------------------------------------------------ hostile clients
def raw(sock_path: Path, payload: bytes, *, close_write: bool = True, timeout: float = 10) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        with contextlib.suppress(OSError):
            s.sendall(payload)
        if close_write:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_WR)
        data = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                data += chunk
    lines = [json.loads(line) for line in data.splitlines() if line.strip()]
    assert lines and "result" in lines[-1], data
    return lines[-1]  # type: ignore[no-any-return]


def test_flood_of_bad_clients_during_a_real_install(root: Path, pkgs: Path, start: Any) -> None:
    d = start(root).ready()
    sock = root / "run/mgr-agent/agent.sock"
    slow_pkg = pkg(pkgs, "1.0", pre_install="sleep 2")
    install = subprocess.Popen([sys.executable, "-m", "mgr_agent", "--root", str(root), "install",
                                str(slow_pkg), "--json"], stdout=subprocess.PIPE, text=True, env=env_clean())
    outcomes: dict[str, list[Any]] = {"malformed": [], "oversized": [], "slow": [], "junk": []}
    held: list[socket.socket] = []

    def malformed(i: int) -> None:
        payload = [b"{not json\n", b'{"v":1,"op":"rm -rf"}\n', b'{"v":99,"op":"list"}\n', b"[]\n",
                   b'{"v":1,"op":"install","args":{"path":7}}\n'][i % 5]
        outcomes["malformed"].append(raw(sock, payload))

    def oversized(_: int) -> None:
        outcomes["oversized"].append(raw(sock, b"{" + b" " * (2 * 1024 * 1024), close_write=False))

    def slow(_: int) -> None:
        start_t = time.monotonic()
        outcomes["slow"].append((raw(sock, b'{"v":1,', close_write=False), time.monotonic() - start_t))

    def junk(i: int) -> None:
        outcomes["junk"].append(raw(sock, os.urandom(1000 + i) + b"\n"))

    def silent(_: int) -> None:  # connect and go away without a word
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(sock))
        held.append(s)

    threads = [threading.Thread(target=f, args=(i,)) for f, n in
               ((malformed, 25), (oversized, 4), (slow, 10), (junk, 10), (silent, 20)) for i in range(n)]
    for t in threads:
        t.start()
    # meanwhile a well-behaved client is answered at once
    t0 = time.monotonic()
    pong = api.Client(sock).call("ping", {})
    assert pong.action == "pong" and time.monotonic() - t0 < 1.5
    for t in threads:
        t.join(30)
    for s in held:
        s.close()
    out, _ = install.communicate(timeout=60)
    assert install.returncode == 0 and json.loads(out)["action"] == "installed"
    assert len(outcomes["malformed"]) == 25 and all(
        m["result"]["error"]["code"] == "bad-request" and m["exit_code"] == 2 for m in outcomes["malformed"])
    assert all("larger than 1048576" in m["result"]["error"]["message"] for m in outcomes["oversized"])
    assert len(outcomes["slow"]) == 10
    assert all("not received within 2 s" in m["result"]["error"]["message"] and took < 8
               for m, took in outcomes["slow"])
    assert all(m["result"]["error"]["code"] == "bad-request" for m in outcomes["junk"])
    assert d.proc.poll() is None
    assert cast("PingData", api.Client(sock).call("ping", {}).data)["pid"] == d.proc.pid
    assert (root / MGR / "addon/demo.py").is_file() and leftovers(root) == []


# ------------------------------------------------------------------ SIGTERM during an install
def test_sigterm_during_an_install_leaves_a_consistent_state(root: Path, pkgs: Path, start: Any) -> None:
    d = start(root).ready()
    assert via(root, "install", str(pkg(pkgs, "1.0")), daemon=True).rc == 0
    before = snapshot(root)
    started = root.parent / "hook-started"
    hanging = pkg(pkgs, "1.1", post_install=f"echo $$ > {started}; sleep 60")
    client = subprocess.Popen([sys.executable, "-m", "mgr_agent", "--root", str(root), "install",
                               str(hanging)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env_clean())
    assert client.stdout is not None and client.stderr is not None
    stderr = LineReader(client.stderr)
    stderr.wait_for_line("running post-install hook")
    wait_for_file(started, lambda pid: pid.endswith(b"\n"), what="the post-install hook to run")
    t0 = time.monotonic()
    assert d.stop() == 0, d.output()
    assert time.monotonic() - t0 < 10, "the sleeping hook is ended, not waited for"
    assert client.wait(30) == 130
    out, err = client.stdout.read(), stderr.text()
    assert client.returncode == 130, (out, err)
    assert "interrupted by SIGTERM" in err
    assert snapshot(root) == before, "switched files were put back"
    assert leftovers(root) == []
    # a fresh daemon finds nothing left to do; the history tells what happened
    start(root).ready()
    hist = via(root, "history", daemon=False).json["data"]
    assert hist[0]["status"] in ("rolled_back", "failed") and hist[0]["to_version"] == "1.1"


def test_sigkill_mid_install_is_recovered_at_start(root: Path, pkgs: Path, start: Any) -> None:
    d = start(root).ready()
    assert via(root, "install", str(pkg(pkgs, "1.0")), daemon=True).rc == 0
    before = snapshot(root)
    client = subprocess.Popen([sys.executable, "-m", "mgr_agent", "--root", str(root), "install",
                               str(pkg(pkgs, "1.1", post_install="sleep 60"))],
                              stderr=subprocess.PIPE, text=True, env=env_clean())
    assert client.stderr is not None
    for line in client.stderr:
        if "running post-install hook" in line:
            break
    d.stop(signal.SIGKILL)
    assert client.wait(30) == 1
    journal = root / "var/lib/mgr-agent/journal"
    assert journal.is_dir() and any(journal.iterdir()), "killed mid-transaction"
    d2 = start(root).ready()
    assert "recovered interrupted transaction" in d2.output()
    assert snapshot(root) == before and leftovers(root) == []


# ------------------------------------------------------------------ logs through the API
def test_logs_are_streamed(root: Path, start: Any) -> None:
    start(root).ready()
    log = root / MGR / "var/ispmgr.log"
    log.parent.mkdir(parents=True)
    log.write_text("Nov 21 10:00:00 [1:1] core INFO first\n")
    client = api.Client(root / "run/mgr-agent/agent.sock")
    records: list[dict[str, Any]] = []
    done = client.call("logs", {"n": 5}, record=records.append)
    assert done.action == "logs" and [r["message"] for r in records] == ["first"]

    # the last record comes first: by then the daemon has fixed where following starts
    stream = client.stream("logs", {"n": 1, "follow": True})
    got = []
    for message in stream:
        got.append(message["record"]["message"])
        if len(got) == 1:
            with open(log, "a") as fh:
                fh.write("Nov 21 10:00:01 [1:1] core ERR second\nNov 21 10:00:02 [1:1] core INFO third\n")
        if len(got) == 3:
            break
    assert isinstance(stream, Generator)  # Client.stream is a generator function
    stream.close()  # the client hangs up; the daemon's follower ends
    assert got == ["first", "second", "third"]
    missing = client.call("logs", {})
    assert missing.action == "logs"


# ------------------------------------------------------------------ install from https
@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, dict[str, int]]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("https")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    files = d / "files"
    files.mkdir()
    write_zip(ispmanager_files("demo", "1.0"), files / "demo.zip")
    hits: dict[str, int] = {}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(files), **kw)

        def log_message(self, *_: Any) -> None:
            pass

        def do_GET(self) -> None:
            hits[self.path] = hits.get(self.path, 0) + 1
            if self.path.startswith("/flaky/") and hits[self.path] <= 2:
                self.send_error(503)
                return
            if self.path.startswith("/flaky/"):
                self.path = self.path[len("/flaky"):]
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert, hits
    server.shutdown()


def test_install_from_https_url(tmp_path: Path, start: Any,
                                https: tuple[str, Path, dict[str, int]]) -> None:
    base, cert, hits = https
    served, local = make_root(tmp_path / "a"), make_root(tmp_path / "b")
    tls = {"REQUESTS_CA_BUNDLE": str(cert)}
    start(served, env=tls).ready()
    same = write_zip(ispmanager_files("demo", "1.0"), tmp_path / "same.zip")
    sha = hashlib.sha256(same.read_bytes()).hexdigest()
    url = f"{base}/demo.zip"
    cases = [
        ((url, "--sha256", sha), 0, None),
        ((url, "--sha256", "0" * 64), 12, "checksum-mismatch"),
        ((url,), 2, "usage"),
        ((url.replace("https", "http"), "--sha256", sha), 2, "usage"),
        ((f"{base}/missing.zip", "--sha256", sha), 15, "download-failed"),
    ]
    for args, rc, code in cases:
        a = via(served, "install", *args, daemon=True, env=tls)
        b = via(local, "install", *args, daemon=False, env=tls)
        assert (a.rc, b.rc) == (rc, rc), (args, a, b)
        assert norm(json.dumps(a.json), served) == norm(json.dumps(b.json), local)
        assert (a.json.get("error") or {}).get("code") == code
    assert (served / MGR / "addon/demo.py").is_file()
    assert not any((served / "var/lib/mgr-agent/downloads").iterdir()), "downloads are removed"
    # transient failures (503) are retried with backoff
    flaky = via(local, "install", f"{base}/flaky/demo.zip", "--sha256", sha, "--reinstall", daemon=False,
                env=tls, as_json=False)
    assert flaky.rc == 0, flaky
    assert hits["/flaky/demo.zip"] == 3 and "retrying in 1 s" in flaky.stderr
