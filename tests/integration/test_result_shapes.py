"""Every command's ``data`` has the shape its table entry declares (``Command.shape``):
the keys the renderer reads and ``--json`` writes, checked on real runs against a temp root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mgr_agent import commands
from mgr_agent.commands.spec import Context
from mgr_agent.layout import Layout
from mgr_agent.result import Result
from mgr_agent.sandbox.samples import plesk_files, write_zip
from tests.integration.test_daemon import make_root


def conforms(shape: Any, value: object) -> list[str]:
    """How ``value`` (a dict) differs from the TypedDict ``shape``'s keys."""
    if not isinstance(value, dict):
        return [f"{shape.__name__}: not an object: {value!r}"]
    required, optional = set(shape.__required_keys__), set(shape.__optional_keys__)
    keys = set(value)
    return ([f"{shape.__name__}: missing {sorted(required - keys)}"] if required - keys else []) + (
        [f"{shape.__name__}: undeclared {sorted(keys - required - optional)}"]
        if keys - required - optional else [])


def run(root: Path, op: str, **values: object) -> Result:
    command = commands.COMMANDS[op]
    return commands.execute(command, Context(Layout.at(root)), commands.args_of_request(command, values))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = make_root(tmp_path)
    (r / "usr/local/mgr5/etc/ispmgr.conf").write_text("")
    return r


def test_every_result_has_its_declared_shape(root: Path, tmp_path: Path) -> None:
    v1 = write_zip(plesk_files(version="1.0"), tmp_path / "v1.zip")
    v2 = write_zip(plesk_files(version="1.1"), tmp_path / "v2.zip")
    runs: dict[str, Result] = {
        "check": run(root, "check", path=str(v1)),
        "new": run(root, "new", name="shaped-tool", panel="plesk", dir=str(tmp_path / "shaped")),
    }
    runs["pack"] = run(root, "pack", dir=str(tmp_path / "shaped"), dest=str(tmp_path))
    for zip_path in (v1, v2):
        assert run(root, "install", path=str(zip_path), restart=False).error is None
    runs |= {"list": run(root, "list"), "info": run(root, "info", name="demo-ext"),
             "verify": run(root, "verify"), "history": run(root, "history"),
             "recover": run(root, "recover"), "ping": run(root, "ping"),
             "aps": run(root, "aps", aps_command="repo", repo_command="list")}
    declared = {c.name for c in commands.COMMANDS.values() if c.shape is not None}
    assert declared == set(runs), "every command with data is run here"
    problems: list[str] = []
    for name, result in runs.items():
        assert result.error is None, (name, result.error)
        command = commands.COMMANDS[name]
        rows = result.data if command.many else [result.data]
        assert isinstance(rows, list) and rows, (name, result.data)
        for row in rows:
            problems += [f"{name}: {p}" for p in conforms(command.shape, row)]
        text = commands.render_text(command, result, lambda t, _c: t)
        assert text or command.route == "api-only", name
    assert problems == []
    assert runs["history"].data is not None and len(runs["history"].data) == 2


def test_a_command_without_a_shape_returns_no_data(root: Path, tmp_path: Path) -> None:
    zip_path = write_zip(plesk_files(), tmp_path / "p.zip")
    for result in (run(root, "install", path=str(zip_path), restart=False),
                   run(root, "install", path=str(zip_path), restart=False, reinstall=True),
                   run(root, "rollback", name="demo-ext"),
                   run(root, "uninstall", name="demo-ext", restart=False)):
        assert result.data is None, result.action
