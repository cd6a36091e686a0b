"""Wrong input gets a clear error and creates nothing (issue 11), through the real CLI."""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mgr_agent import cli as cli_mod
from mgr_agent.sandbox.samples import ispmanager_files, plesk_files, write_dir, write_zip
from tests.helpers import cli, full_snapshot

MGR = "usr/local/mgr5"


def _commands() -> dict[str, list[str]]:
    """Every command (down to nested subcommands such as ``aps repo add``) with placeholder
    positionals, read from the parser itself: name -> argv after the program name."""
    out: dict[str, list[str]] = {}

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None:
            argv = [*path]
            required = [a for a in parser._actions if a.option_strings and a.required]
            required += [g._group_actions[0] for g in parser._mutually_exclusive_groups if g.required]
            for action in required:
                argv.append(action.option_strings[0])
                if action.nargs != 0:
                    argv.append(str(action.choices[0]) if action.choices else "x")  # type: ignore[index]
            argv += [str(a.choices[0]) if a.choices else "x"  # type: ignore[index]
                     for a in parser._actions if not a.option_strings and a.nargs is None]
            out[" ".join(path)] = argv
            return
        for name, child in sub.choices.items():
            walk(child, [*path, name])

    walk(cli_mod._parser(), [])
    return out


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_root_that_is_not_a_directory_is_a_usage_error_for_every_command(tmp_path: Path,
                                                                         kind: str) -> None:
    bad = tmp_path / ("missing" if kind == "missing" else "a-file")
    if kind == "file":
        bad.write_text("not a root\n")
    before = full_snapshot(tmp_path)
    commands = _commands()
    assert {"install", "list", "restart-core", "daemon", "debug", "logs"} <= set(commands)
    for command, argv in commands.items():
        run = cli(bad, *argv, as_json=False, timeout=60)
        assert run.rc == 2, (command, run)
        assert f"--root {bad}: " in run.stderr, (command, run.stderr)
        assert ("no such directory" if kind == "missing" else "not a directory") in run.stderr
        assert "Traceback" not in run.stderr and "internal error" not in run.stderr
        assert full_snapshot(tmp_path) == before, f"{command} created something"
    doc = cli(bad, "list").json  # the JSON form says the same
    assert doc["error"]["code"] == "usage" and doc["error"]["details"]["path"] == str(bad)


# ------------------------------------------------------------------ closed pipes
def _closed_stdout(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI with a stdout whose reader has already gone (``| head`` that exited)."""
    read, write = os.pipe()
    os.close(read)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MGR_AGENT_")}
    try:
        return subprocess.run([sys.executable, "-m", "mgr_agent", "--root", str(root), *args],
                              stdout=write, stderr=subprocess.PIPE, env=env, timeout=60, check=False)
    finally:
        os.close(write)


def test_closed_pipes_end_quietly(root: Path, pkgs: Path) -> None:
    assert cli(root, "install", str(write_zip(ispmanager_files(), pkgs / "d.zip")),
               "--no-restart").rc == 0
    log = root / MGR / "var/ispmgr.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(f"Nov 21 10:00:{i % 60:02d} [1:1] demo INFO line {i}\n"
                           for i in range(2000)))
    for args in (("info", "demo"), ("list", "--json"), ("history",), ("logs", "-n", "1000"),
                 ("logs", "--json", "-n", "5")):
        done = _closed_stdout(root, *args)
        assert done.stderr == b"", (args, done.stderr)
        assert done.returncode == 141, (args, done.returncode)  # 128 + SIGPIPE, like `yes | head`
    shell = subprocess.run(  # the real thing
        ["bash", "-o", "pipefail", "-c",
         f'{sys.executable} -m mgr_agent --root {root} logs -n 2000 | head -1; '
         'echo "status ${PIPESTATUS[0]}" >&2'],
        capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("MGR_AGENT_")})
    assert shell.stdout.count("\n") == 1 and shell.stderr in ("status 141\n", "status 0\n"), shell


# ------------------------------------------------------------------ options
@pytest.mark.parametrize("args", [
    ("install", "x.zip", "--sha256", "abc"),
    ("install", "x.zip", "--sha256", "g" * 64),
    ("check", "x.zip", "--sha256", "0" * 63),
    ("history", "-n", "0"),
    ("history", "-n", "-3"),
    ("logs", "-n", "0"),
    ("install", "x.zip", "--health-window", "-1"),
    ("uninstall", "x", "--wait", "nan"),
])
def test_bad_option_values_are_usage_errors(root: Path, args: tuple[str, ...]) -> None:
    before = full_snapshot(root)
    run = cli(root, *args, as_json=False)
    assert run.rc == 2 and "error: argument" in run.stderr, run
    assert full_snapshot(root) == before


def test_help_offers_only_options_that_apply() -> None:
    def help_of(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "mgr_agent", *args, "--help"],
                              capture_output=True, text=True, check=True).stdout

    daemon = help_of("daemon")
    assert "--no-daemon" not in daemon and "--json" not in daemon and "--wait" not in daemon
    for command in ("check", "logs", "call"):  # never through the daemon
        assert "--no-daemon" not in help_of(command) and "--wait" not in help_of(command), command
    for command in ("list", "info", "history", "verify"):  # read through the daemon, no lock
        assert "--no-daemon" in help_of(command) and "--wait" not in help_of(command), command
    assert "--no-daemon" in help_of("install") and "--wait" in help_of("uninstall")
    for command in ("uninstall", "rollback", "info"):
        text = " ".join(help_of(command).split())
        assert "detected from content" not in text and "installed for" in text, command
    assert "detected from content" in " ".join(help_of("install").split())


def test_every_option_has_help_text() -> None:
    parser = cli_mod._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {a.option_strings or a.dest}" for name, p in
               [("mgr-agent", parser), *sub.choices.items()] for a in p._actions
               if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
               and not a.help]
    assert missing == []


# ------------------------------------------------------------------ messages
LAUGHS = "<!DOCTYPE module [\n <!ENTITY lol0 \"lol\">\n" + "".join(
    f' <!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">\n' for i in range(1, 10)) + "]>\n"


def test_entity_bomb_is_named_in_plain_words(root: Path, pkgs: Path) -> None:
    tree = plesk_files()
    tree["meta.xml"] = (tree["meta.xml"][0].replace(b"<module>", LAUGHS.encode() + b"<module>", 1)
                        .replace(b"<name>Demo", b"<name>&lol9;Demo"), 0o644)
    run = cli(root, "install", str(write_zip(tree, pkgs / "bomb.zip")))
    assert run.rc == 3
    err = run.json["error"]
    assert err["details"]["rule"] == "xml-entities"
    assert err["message"].startswith("meta.xml: its XML entities expand far beyond the file's size "
                                     "(an entity-expansion bomb)")
    assert "xmlCtxt" not in err["message"] and "amplification" not in err["message"]


def _tar(pkgs: Path) -> bytes:
    src = write_dir(plesk_files(), pkgs / "src")
    with tarfile.open(pkgs / "whole.tar", "w") as tf:
        tf.add(src, arcname="ext")
    return (pkgs / "whole.tar").read_bytes()


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_truncated_archive_says_so_and_its_hint_is_true(root: Path, pkgs: Path, kind: str) -> None:
    if kind == "zip":
        data = write_zip(plesk_files(), pkgs / "whole.zip").read_bytes()
    else:
        data = _tar(pkgs)
        if kind == "tar.gz":
            import gzip  # noqa: PLC0415
            data = gzip.compress(data)
    cut = pkgs / f"cut.{kind}"
    cut.write_bytes(data[: len(data) // 2])
    before = full_snapshot(root)
    run = cli(root, "install", str(cut))
    assert run.rc == 3, run
    err = run.json["error"]
    assert err["details"]["rule"] == "truncated" and "is truncated" in err["message"]
    assert "without that entry" not in err["hint"] and "incomplete" in err["hint"]
    assert full_snapshot(root) == before


def test_empty_file_says_empty(root: Path, pkgs: Path) -> None:
    empty = pkgs / "plugin.zip"
    empty.touch()
    run = cli(root, "check", str(empty))
    assert run.rc == 3
    assert run.json["error"]["message"] == f"{empty}: the file is empty (0 bytes)"
    assert run.json["error"]["details"]["rule"] == "empty"


def test_missing_package_with_a_checksum_is_not_found(root: Path, pkgs: Path) -> None:
    run = cli(root, "install", str(pkgs / "missing.zip"), "--sha256", "0" * 64, "--no-daemon")
    assert run.rc == 4, run
    assert run.json["error"]["message"] == f"{pkgs / 'missing.zip'}: no such file or directory"


def test_debug_off_without_a_previous_debug_conf_leaves_none(root: Path) -> None:
    conf = root / MGR / "etc/debug.conf"
    assert cli(root, "debug", "core_module", "9", "--no-daemon").rc == 0
    assert conf.read_text() == "ispmgr.core_module 9\n"
    run = cli(root, "debug", "--off", "--no-daemon")
    assert run.rc == 0, run
    assert not conf.exists()


def test_logs_for_a_plugin_that_is_not_installed(root: Path, pkgs: Path) -> None:
    """The hint after a rolled-back fresh install points at `logs --plugin NAME`: it works."""
    bad = write_zip(ispmanager_files("demo", post_install="exit 3"), pkgs / "bad.zip")
    failed = cli(root, "install", str(bad), "--no-restart")
    assert failed.rc == 8 and failed.json["action"] == "rolled_back"
    (root / MGR / "var").mkdir(parents=True, exist_ok=True)
    (root / MGR / "var/ispmgr.log").write_text(
        "Nov 21 10:00:00 [1:1] demo ERR something about demo\n"
        "Nov 21 10:00:01 [1:1] core INFO unrelated\n")
    run = cli(root, "logs", "--plugin", "demo", as_json=False)
    assert run.rc == 0, run
    assert "something about demo" in run.stdout and "unrelated" not in run.stdout


# ------------------------------------------------------------------ downloads
@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, int]]]:
    """A plain HTTP server on 127.0.0.1 that answers 404 to everything and counts requests."""
    hits: dict[str, int] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def do_GET(self) -> None:
            hits[self.path] = hits.get(self.path, 0) + 1
            self.send_error(404 if "missing" in self.path else 403)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", hits
    srv.shutdown()
    srv.server_close()


def _no_download_traces(root: Path, before: dict[str, Any]) -> None:
    assert full_snapshot(root) == before, "a failed download left something"
    assert not (root / "var/lib/mgr-agent").exists()


def test_failed_download_leaves_nothing_and_4xx_is_not_retried(
        root: Path, server: tuple[str, dict[str, int]]) -> None:
    base, hits = server
    before = full_snapshot(root)
    for path in ("/missing.zip", "/forbidden.zip"):
        run = cli(root, "install", base + path, "--sha256", "0" * 64, "--no-daemon",
                  env={"MGR_AGENT_ALLOW_HTTP": "1"})
        assert run.rc == 15 and run.json["error"]["code"] == "download-failed", run
        assert hits[path] == 1, "a 4xx is not retried"
        _no_download_traces(root, before)


def test_untrusted_certificate_is_not_retried(root: Path, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    handshakes = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            handshakes.append(1)
            with conn, __import__("contextlib").suppress(OSError):
                ctx.wrap_socket(conn, server_side=True)

    threading.Thread(target=serve, daemon=True).start()
    before = full_snapshot(root)
    try:
        run = cli(root, "install", f"https://127.0.0.1:{listener.getsockname()[1]}/x.zip",
                  "--sha256", "0" * 64, "--no-daemon")
    finally:
        listener.close()
    assert run.rc == 15, run
    err = run.json["error"]
    assert "TLS verification of 127.0.0.1 failed" in err["message"]
    assert "certificate is not trusted" in err["hint"]
    assert len(handshakes) == 1, "an untrusted certificate is not retried"
    _no_download_traces(root, before)


def test_name_resolution_failure_is_not_retried() -> None:
    """requests wraps urllib3's NameResolutionError: the download code sees through it."""
    import requests  # noqa: PLC0415
    from urllib3.exceptions import MaxRetryError, NameResolutionError  # noqa: PLC0415

    from mgr_agent import download  # noqa: PLC0415

    # deliberately without a connection or a pool (typed as required): no socket is opened,
    # and urllib3 itself rebuilds the error with None when unpickling it
    reason = NameResolutionError("no-such-host.invalid", None,  # type: ignore[arg-type]
                                 socket.gaierror(-2, "Name or service not known"))
    exc = requests.ConnectionError(MaxRetryError(None, "/x.zip", reason))  # type: ignore[arg-type]
    final = download._unhealable("https://no-such-host.invalid/x.zip", exc)
    assert final is not None and "cannot resolve the host name no-such-host.invalid" in final.message
    assert download._unhealable("https://h/x", requests.ConnectionError("reset by peer")) is None
    assert json.dumps(final.to_dict())
