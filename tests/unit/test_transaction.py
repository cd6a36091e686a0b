"""Stage/switch/undo/finish on real temp trees, in process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mgr_agent.errors import SwitchFailed
from mgr_agent.layout import Layout
from mgr_agent.transaction import Op, Plan, Transaction
from mgr_agent.wal import Journal
from tests.helpers import snapshot


def _src(data: bytes) -> object:
    def chunks() -> Iterator[bytes]:
        yield data
    return chunks


@pytest.fixture
def tree(tmp_path: Path) -> Layout:
    layout = Layout.at(tmp_path)
    (tmp_path / "p").mkdir()
    (tmp_path / "var/lib").mkdir(parents=True)
    (tmp_path / "p/keep.txt").write_text("keep")
    (tmp_path / "p/old.txt").write_text("old")
    (tmp_path / "p/gone.txt").write_text("gone")
    return layout


def _plan() -> Plan:
    plan = Plan(ops=[Op(0, "replace", "p/old.txt", 0o600), Op(1, "add", "p/new/n.txt"),
                     Op(2, "remove", "p/gone.txt")], mkdirs=["p/new"], prune=["p/new"])
    plan.sources = {0: _src(b"new content"), 1: _src(b"added")}  # type: ignore[dict-item]
    return plan


@pytest.mark.parametrize("stop", ["begin", "staged", "switching", "switched"])
def test_undo_from_any_phase_restores_exactly(tree: Layout, stop: str) -> None:
    before = snapshot(tree.root)
    t = Transaction(tree, "t1", _plan(), Journal(tree.journal_dir, "t1"))
    t.begin({})
    if stop != "begin":
        t.stage()
    if stop in ("switching", "switched"):
        t.switch()
    phase = t.journal.phase if t.journal else ""
    t.undo(phase)
    t.undo(phase)  # idempotent
    assert snapshot(tree.root) == before


def test_switch_then_finish_gives_new_tree(tree: Layout) -> None:
    t = Transaction(tree, "t2", _plan(), Journal(tree.journal_dir, "t2"))
    t.begin({})
    t.stage()
    t.switch()
    t.finish()
    root = tree.root
    assert (root / "p/old.txt").read_bytes() == b"new content"
    assert (root / "p/old.txt").stat().st_mode & 0o777 == 0o600
    assert (root / "p/new/n.txt").read_bytes() == b"added"
    assert not (root / "p/gone.txt").exists() and (root / "p/keep.txt").exists()
    assert not list(root.rglob(".mga-*"))


def test_switch_failure_names_the_file(tree: Layout) -> None:
    plan = _plan()
    t = Transaction(tree, "t3", plan, Journal(tree.journal_dir, "t3"))
    t.begin({})
    t.stage()
    (tree.root / "p/old.txt").unlink()  # vanished between plan and switch
    with pytest.raises(SwitchFailed, match=r"p/old\.txt: disappeared"):
        t.switch()
