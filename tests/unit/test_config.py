from __future__ import annotations

from pathlib import Path

import pytest

from mgr_agent.config import load
from mgr_agent.errors import UsageError
from mgr_agent.layout import Layout


def _write(tmp_path: Path, text: str) -> Layout:
    layout = Layout.at(tmp_path)
    layout.config_file.parent.mkdir(parents=True)
    layout.config_file.write_text(text)
    return layout


def test_defaults_without_file(tmp_path: Path) -> None:
    config = load(Layout.at(tmp_path))
    assert config.hook_timeout == 300 and config.keep_versions == 1


def test_values_are_read(tmp_path: Path) -> None:
    config = load(_write(tmp_path, "[hooks]\ntimeout = 5\nphp = '/opt/php'\n[archive]\nmax_entries = 9\n"))
    assert config.hook_timeout == 5.0 and config.php == "/opt/php" and config.limits.max_entries == 9


@pytest.mark.parametrize(("text", "message"), [
    ("[hooks]\ntimout = 5\n", "unknown key hooks.timout"),
    ("[nope]\n", "unknown section"),
    ("[hooks]\ntimeout = 'x'\n", "expected float"),
    ("[archive]\nmax_entries = true\n", "expected int"),
    ("not toml ===", "agent.toml"),
])
def test_bad_config_is_refused_by_name(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load(_write(tmp_path, text))


def test_out_of_range_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"hooks\.timeout must be at least"):
        load(_write(tmp_path, "[hooks]\ntimeout = 0\n"))
    with pytest.raises(UsageError, match=r"durability\.mode"):
        load(_write(tmp_path / "b", "[durability]\nmode = 'none'\n"))
