"""Start-up: lxml, psutil, requests, sqlite3, prometheus_client and the engine are imported
by the commands that use them, never by the CLI itself (issue 13's start-up row)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ["lxml", "psutil", "requests", "sqlite3", "prometheus_client", "mgr_agent.engine",
         "mgr_agent.archive", "mgr_agent.state"]


def _loaded(code: str, heavy: list[str] = HEAVY) -> list[str]:
    probe = f"import sys; {code}; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [m.strip(" '") for m in out.stdout.strip().strip("[]").split(",") if m.strip()]


def test_importing_the_cli_and_the_table_loads_no_heavy_library() -> None:
    assert _loaded("import mgr_agent.cli, mgr_agent.commands; mgr_agent.cli._parser()") == []


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["install", "--help"]])
def test_version_and_help_load_no_heavy_library(argv: list[str]) -> None:
    code = ("import contextlib, io, mgr_agent.cli as c\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            f"    c.main({argv!r})")
    assert _loaded(f"exec({code!r})") == []


def test_logs_loads_neither_the_engine_nor_lxml_psutil_requests_sqlite3(tmp_path: Path) -> None:
    """``logs`` without ``--plugin`` reads the panel's log: not the state, not the engine.
    (The panel classes still import the archive readers: ``mgr_agent.archive`` is left.)"""
    log = tmp_path / "usr/local/mgr5/var/ispmgr.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"Nov 21 10:00:{i:02d} [1:1] demo INFO line {i}\n" for i in range(20)))
    code = ("import contextlib, io, mgr_agent.cli as c\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            f"    assert c.main(['--root', {str(tmp_path)!r}, 'logs', '-n', '5']) == 0\n"
            "assert out.getvalue().count('line') == 5, out.getvalue()")
    assert _loaded(f"exec({code!r})", [m for m in HEAVY if m != "mgr_agent.archive"]) == []
