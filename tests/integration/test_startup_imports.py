"""Start-up: lxml, psutil, requests, sqlite3, prometheus_client and the engine are imported
by the commands that use them, never by the CLI itself (issue 13's start-up row)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mgr_agent.engine import Engine
from mgr_agent.layout import Layout
from mgr_agent.sandbox.samples import ispmanager_files, plesk_files, write_zip

HEAVY = ["lxml", "psutil", "requests", "sqlite3", "prometheus_client", "mgr_agent.engine",
         "mgr_agent.archive", "mgr_agent.state"]
CHANGE_MACHINERY = [
    "zipfile", "tarfile", "mgr_agent.package", "mgr_agent.checks", "mgr_agent.planner",
    "mgr_agent.transaction", "mgr_agent.steps", "mgr_agent.recovery", "mgr_agent.store",
    "mgr_agent.preflight", "mgr_agent.hooks", "mgr_agent.panels.ispmanager.checks",
    "mgr_agent.panels.plesk.checks_meta", "mgr_agent.api"]
"""What only a change, ``check``, or the daemon needs: validators, archive readers, the
planner and the transaction steps, recovery, the server side of the API."""
LOGS_NEEDS_NONE = [
    "subprocess", "shutil", "ctypes", "lzma", "bz2", "gzip", "tomllib", "mgr_agent.proc",
    "mgr_agent.libc", "mgr_agent.fsutil", "mgr_agent.panels.ispmanager.core",
    "mgr_agent.panels.ispmanager.logfollow"]
"""``logs -n N`` reads the live log's tail: no processes, no inotify (ctypes), no rotated
archives' decompressors, no configuration file on this root."""
QUICK_NEEDS_NONE = [
    "dataclasses", "logging", "mgr_agent.config", "mgr_agent.limits", "mgr_agent.panels.base",
    "mgr_agent.panels.ispmanager.panel", "mgr_agent.panels.plesk", "mgr_agent.xmlsafe",
    "mgr_agent.versions", "mgr_agent.queries", "mgr_agent.access", "mgr_agent.lock",
    "mgr_agent.staterows", "mgr_agent.context", "mgr_agent.findings"]
"""What the quick reads (``list``, ``history``, ``logs -n``) start without: no dataclass
(their values are plain classes and tuples), no logging set-up (nothing logs before the
engine, which they do not make), no configuration (none on this root), no panel classes,
no engine-side modules."""
OTHER_COMMANDS = ["mgr_agent.commands.changes", "mgr_agent.commands.aps",
                  "mgr_agent.commands.authoring", "mgr_agent.commands.service"]
"""A command line loads the declaration of the command it names, not the whole table."""


def _loaded(code: str, heavy: list[str] = HEAVY) -> list[str]:
    probe = f"import sys; {code}; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [m.strip(" '") for m in out.stdout.strip().strip("[]").split(",") if m.strip()]


def test_importing_the_cli_and_the_table_loads_no_heavy_library() -> None:
    assert _loaded("import mgr_agent.cli, mgr_agent.commands; mgr_agent.cli._parser()") == []


def test_version_loads_nothing_but_the_cli() -> None:
    code = ("import contextlib, io, mgr_agent.cli as c\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert c.main(['--version']) == 0")
    loaded = _loaded(f"exec({code!r})", ["argparse", "typing", "mgr_agent.commands",
                                         "mgr_agent.errors", "mgr_agent.layout"])
    assert loaded == []


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["install", "--help"]])
def test_version_and_help_load_no_heavy_library(argv: list[str]) -> None:
    code = ("import contextlib, io, mgr_agent.cli as c\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            f"    c.main({argv!r})")
    assert _loaded(f"exec({code!r})") == []


def test_logs_loads_neither_the_engine_nor_lxml_psutil_requests_sqlite3(tmp_path: Path) -> None:
    """``logs`` without ``--plugin`` reads the panel's log: not the state, not the engine,
    not the archive readers, not even the panel classes (``panels.read_log``)."""
    log = tmp_path / "usr/local/mgr5/var/ispmgr.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"Nov 21 10:00:{i:02d} [1:1] demo INFO line {i}\n" for i in range(20)))
    code = ("import contextlib, io, mgr_agent.cli as c\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            f"    assert c.main(['--root', {str(tmp_path)!r}, 'logs', '-n', '5']) == 0\n"
            "assert out.getvalue().count('line') == 5, out.getvalue()")
    quick = ["json", "mgr_agent.result", "mgr_agent.state", "mgr_agent.commands.reads"]
    assert _loaded(f"exec({code!r})", HEAVY + CHANGE_MACHINERY + LOGS_NEEDS_NONE + QUICK_NEEDS_NONE
                   + OTHER_COMMANDS + quick) == []


def _cli(root: Path, argv: list[str], expect: str) -> str:
    """Code that runs ``mgr-agent --root ROOT ARGV`` in-process and checks its output."""
    return ("import contextlib, io, mgr_agent.cli as c\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            f"    assert c.main(['--root', {str(root)!r}, '--no-daemon', *{argv!r}]) == 0\n"
            f"assert {expect!r} in out.getvalue(), out.getvalue()")


@pytest.mark.parametrize("argv", [["list"], ["history"]])
def test_read_only_commands_load_none_of_the_change_machinery(root: Path, pkgs: Path,
                                                              argv: list[str]) -> None:
    """``list`` and ``history`` open the state (sqlite3) read-only on a root with plugins of
    both panels installed, without the engine: no validator, archive reader, planner,
    transaction step or recovery, no panel, no dataclass, no logging set-up (``info`` and
    ``verify`` make the engine and load the planner, which compares files with the
    manifest)."""
    engine = Engine(Layout.at(root))
    assert engine.install(write_zip(ispmanager_files("demo"), pkgs / "demo.zip")).changed
    assert engine.install(write_zip(plesk_files("demo-ext"), pkgs / "ext.zip")).changed
    light = [m for m in HEAVY if m not in ("sqlite3", "mgr_agent.state")]
    not_either = ["shutil", "bz2", "lzma", "gzip", "tomllib", "mgr_agent.panels.ispmanager.core",
                  "mgr_agent.panels", "mgr_agent.commands.runtime"]
    assert _loaded(f"exec({_cli(root, argv, 'demo')!r})",
                   light + CHANGE_MACHINERY + not_either + QUICK_NEEDS_NONE + OTHER_COMMANDS) == []


def test_a_read_after_an_interrupted_transaction_still_recovers_it(root: Path, pkgs: Path) -> None:
    """The recovery machinery is imported when a journal is left, not skipped: the lazy
    import must not turn into "no recovery before a read"."""
    engine = Engine(Layout.at(root))
    assert engine.install(write_zip(ispmanager_files("demo"), pkgs / "demo.zip")).changed
    journal = Layout.at(root).journal_dir
    journal.mkdir(parents=True, exist_ok=True)
    (journal / "0123456789abcdef.log").write_bytes(b"")  # a transaction that never began
    code = _cli(root, ["list"], "demo")
    assert _loaded(f"exec({code!r})", ["mgr_agent.recovery"]) == ["mgr_agent.recovery"]
    assert not list(journal.glob("*.log")), "the read recovered (removed) the empty journal"


def test_the_client_loads_neither_the_command_table_nor_the_server() -> None:
    """``mgr_agent.client`` is what a CLI talking to the daemon needs; ``mgr_agent.api`` (the
    server side) still exports the client's names for callers that import them there."""
    assert _loaded("import mgr_agent.client", ["mgr_agent.api", "mgr_agent.commands",
                                               "mgr_agent.engine", "sqlite3"]) == []
    from mgr_agent import api, client  # noqa: PLC0415 - the probe above must run first

    assert (api.Client, api.Unavailable, api.encode, api.VERSION) == (
        client.Client, client.Unavailable, client.encode, client.VERSION)
