from __future__ import annotations

from pathlib import Path

import pytest

from mgr_agent.errors import UsageError
from mgr_agent.panels.ispmanager.debugconf import DebugConf

ORIGINAL = """# panel logging
SET color=off
ispmgr 4
ispmgr.core_module 3 user=root
SET ispmgr.max_log_size=104857600
"""


def _conf(tmp_path: Path, text: str | None = ORIGINAL) -> DebugConf:
    path = tmp_path / "etc/debug.conf"
    path.parent.mkdir(parents=True)
    if text is not None:
        path.write_text(text)
        path.chmod(0o600)
    return DebugConf(path, tmp_path / "state/debug-saved.json")


def test_set_replaces_only_that_line_and_keeps_conditions(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    assert conf.set("core_module", 9) == ["ispmgr.core_module 9"]
    text = conf.path.read_text()
    assert text == ORIGINAL.replace("ispmgr.core_module 3 user=root", "ispmgr.core_module 9 user=root")
    assert conf.path.stat().st_mode & 0o777 == 0o600
    assert conf.set("core_module", 9) == []


def test_off_restores_exactly(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    conf.set("core_module", 9)
    conf.set("ispmgr.db", 7)
    conf.set("core_module", 5)
    assert conf.path.read_text().endswith("ispmgr.db 7\n")
    changes = conf.restore()
    assert conf.path.read_text() == ORIGINAL
    assert any("restored ispmgr.core_module 3" in c for c in changes)
    assert conf.restore() == []


def test_missing_file_is_created_and_off_removes_it(tmp_path: Path) -> None:
    conf = _conf(tmp_path, None)
    conf.set("core_module", 9)
    assert conf.path.read_text() == "ispmgr.core_module 9\n"
    assert conf.restore() == ["removed ispmgr.core_module 9"]
    assert not conf.path.exists(), "there was no debug.conf before: none is left"


def test_missing_file_keeps_lines_someone_else_added(tmp_path: Path) -> None:
    conf = _conf(tmp_path, None)
    conf.set("core_module", 9)
    with conf.path.open("a") as fh:
        fh.write("ispmgr.other 3\n")
    conf.restore()
    assert conf.path.read_text() == "ispmgr.other 3\n"


@pytest.mark.parametrize(("module", "level"), [("core module", 9), ("a;b", 1), ("core_module", 10)])
def test_bad_input(tmp_path: Path, module: str, level: int) -> None:
    with pytest.raises(UsageError):
        _conf(tmp_path).set(module, level)
