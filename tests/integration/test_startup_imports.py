"""Start-up: lxml, psutil, requests, sqlite3, prometheus_client and the engine are imported
by the commands that use them, never by the CLI itself (issue 13's start-up row)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ["lxml", "psutil", "requests", "sqlite3", "prometheus_client", "mgr_agent.engine",
         "mgr_agent.archive", "mgr_agent.state"]


def _loaded(code: str) -> list[str]:
    probe = f"import sys; {code}; print([m for m in {HEAVY!r} if m in sys.modules])"
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
