"""The quick reads (``list``, ``history``, ``logs`` without ``--plugin``) skip the engine and
the panels for their start-up: they must still answer exactly what the engine answers,
refuse what it refuses, and change nothing on disk."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mgr_agent import commands, panels
from mgr_agent.commands.spec import Args, Context
from mgr_agent.config import Config
from mgr_agent.engine import Engine
from mgr_agent.layout import Layout
from mgr_agent.sandbox.samples import ispmanager_files, plesk_files, write_zip


def _agent(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MGR_AGENT_")}
    return subprocess.run([sys.executable, "-m", "mgr_agent", "--root", str(root), *argv],
                          capture_output=True, text=True, env=env, check=False)


@pytest.fixture
def installed(root: Path, pkgs: Path) -> Path:
    engine = Engine(Layout.at(root))
    assert engine.install(write_zip(ispmanager_files("demo"), pkgs / "demo.zip")).changed
    assert engine.install(write_zip(plesk_files("demo-ext"), pkgs / "ext.zip")).changed
    assert engine.install(write_zip(ispmanager_files("demo", "2.0"), pkgs / "demo2.zip")).changed
    return root


@pytest.mark.parametrize(("op", "values"), [
    ("list", {}), ("history", {"limit": 50}), ("history", {"name": "demo", "limit": 1}),
    ("history", {"name": "nothing", "limit": 5}),
])
def test_the_quick_read_is_the_engines_answer(installed: Path, op: str,
                                              values: dict[str, object]) -> None:
    layout = Layout.at(installed)
    quick = commands.execute(commands.command(op), Context(layout), Args(values))
    engine = Engine(layout)
    name = values.get("name")
    slow = engine.list() if op == "list" else engine.history(
        name if isinstance(name, str) else None, int(str(values["limit"])))
    assert quick.to_json() == slow.to_json()
    if op == "list":
        assert [(r["name"], r["version"]) for r in slow.to_json()["data"]] == [
            ("demo", "2.0"), ("demo-ext", "1.0-1")]


def test_a_quick_read_changes_nothing_in_the_state_directory(installed: Path) -> None:
    state_dir = Layout.at(installed).state_dir
    before = {p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
              for p in state_dir.rglob("*")}
    for argv in (["list"], ["--json", "history"], ["history", "demo", "-n", "1"]):
        done = _agent(installed, *argv)
        assert done.returncode == 0, done.stderr
    after = {p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
             for p in state_dir.rglob("*")}
    assert after == before


def test_a_database_of_an_earlier_agent_is_migrated_by_a_read_as_before(installed: Path) -> None:
    """A read of a state an earlier agent wrote (without ``files.mtime_ns``) opens it the
    ordinary way, which adds the column, and lists what it lists."""
    db_file = Layout.at(installed).db_file
    expected = _agent(installed, "--json", "list").stdout
    with sqlite3.connect(db_file) as db:
        db.execute("ALTER TABLE files DROP COLUMN mtime_ns")
    db.close()
    done = _agent(installed, "--json", "list")
    assert (done.returncode, done.stdout) == (0, expected)
    with sqlite3.connect(db_file) as db:
        columns = {r[1] for r in db.execute("PRAGMA table_info(files)")}
    db.close()
    assert "mtime_ns" in columns


def test_on_a_root_without_state_nothing_is_created(root: Path) -> None:
    assert _agent(root, "list").stdout == "no plugins installed\n"
    assert _agent(root, "history").stdout == "no history\n"
    assert not Layout.at(root).state_dir.exists()


def test_a_broken_agent_toml_is_refused_by_the_quick_reads_as_by_the_engine(installed: Path) -> None:
    (installed / "etc/mgr-agent").mkdir(parents=True)
    (installed / "etc/mgr-agent/agent.toml").write_text("[bogus]\nkey = 1\n")
    log = installed / "usr/local/mgr5/var/ispmgr.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("Nov 21 10:00:00 [1:1] demo INFO a line\n")
    through_engine = _agent(installed, "info", "demo")
    assert through_engine.returncode == 2 and "unknown section [bogus]" in through_engine.stderr
    for argv in (["list"], ["history"], ["logs", "-n", "1"]):
        done = _agent(installed, *argv)
        assert (done.returncode, done.stdout, done.stderr) == (2, "", through_engine.stderr), argv


@pytest.mark.parametrize("query", [
    panels.LogQuery(n=3), panels.LogQuery(n=50, level="ERR"), panels.LogQuery(since="2026-11-21 10:00"),
    panels.LogQuery(n=2, plugin_names=frozenset({"demo.settings"})),
])
def test_read_log_gives_the_records_of_the_panel_serving_logs(tmp_path: Path,
                                                               query: panels.LogQuery) -> None:
    layout = Layout.at(tmp_path)
    log = tmp_path / "usr/local/mgr5/var/ispmgr.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(
        f"Nov 21 10:00:{i:02d} [1:{i % 3}] core_module \x1b[1;31m{'ERR' if i % 4 == 0 else 'INFO'}"
        f"\x1b[0m handler demo.{'settings' if i % 2 else 'main'} line {i}\n  continued {i}\n"
        for i in range(40)))
    serving = panels.serving(panels.all_panels(layout, Config()), "logs")
    expected = [r.to_json() for r in serving.log(query)]
    assert expected, "the query finds records"
    assert [r.to_json() for r in panels.read_log(layout, query)] == expected


@pytest.mark.parametrize("argv", [["-vh", "list"], ["--he", "list"], ["-h", "logs", "-n", "1"]])
def test_a_help_option_before_the_command_prints_every_command(root: Path, argv: list[str]) -> None:
    """The CLI loads only the named command's declaration, except for the program's own
    help, which names them all."""
    full = _agent(root, "--help")
    done = _agent(root, *argv)
    assert (done.returncode, done.stdout) == (0, full.stdout)
    assert all(f"    {name}" in done.stdout for name in commands.CLI_NAMES)


def test_an_unknown_command_is_refused_naming_every_command(root: Path) -> None:
    done = _agent(root, "frob", "list")
    choices = ", ".join(repr(n) for n in commands.CLI_NAMES)
    assert done.returncode == 2
    assert f"invalid choice: 'frob' (choose from {choices})" in done.stderr
