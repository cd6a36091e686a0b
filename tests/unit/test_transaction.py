"""Stage/switch/undo/finish on real temp trees, in process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mgr_agent import faults
from mgr_agent.errors import SwitchFailed
from mgr_agent.layout import Layout
from mgr_agent.plan import Op, Plan
from mgr_agent.transaction import Transaction
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


def _many(count: int) -> Plan:
    """``count`` new files in a few directories, each with its own content and mode."""
    plan = Plan(mkdirs=["p/many", *[f"p/many/d{k}" for k in range(4)]])
    for i in range(count):
        plan.ops.append(Op(i, "add", f"p/many/d{i % 4}/f{i:03d}", 0o644 if i % 3 else 0o755))
        plan.sources[i] = _src(f"file {i}\n".encode() * (1 + i * 37))  # type: ignore[assignment]
    plan.ops.append(Op(count, "replace", "p/old.txt", 0o600))
    plan.sources[count] = _src(b"replaced")  # type: ignore[assignment]
    return plan


@pytest.mark.parametrize("durability", ["syncfs", "fsync", "writeback"])
def test_parallel_staging_writes_what_one_thread_writes(tmp_path: Path, durability: str) -> None:
    trees = []
    for workers in (1, 4):
        layout = Layout.at(tmp_path / f"w{workers}")
        (layout.root / "p").mkdir(parents=True)
        (layout.root / "p/old.txt").write_text("old")
        t = Transaction(layout, "t4", _many(60), durability=durability, workers=workers)
        t.stage()
        staged = {i: os.lstat(t.staged(op)) for i, op in enumerate(t.plan.ops)}
        assert {i: (s.st_ino, s.st_mtime_ns) for i, s in t.written.items()} == \
            {i: (s.st_ino, s.st_mtime_ns) for i, s in staged.items()}
        t.switch()
        t.finish()
        trees.append(snapshot(layout.root))
    assert trees[0] == trees[1]
    assert len([p for p in trees[0] if p.startswith("p/many/d")]) == 64


def test_a_mid_stage_fault_stops_every_writer_first(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``mid-stage:N`` comes after the N-th file of the plan, whatever the threads did; when
    it raises, no thread is still writing once the exception is out, and undo leaves the
    tree as it was."""
    layout = Layout.at(tmp_path)
    (tmp_path / "p").mkdir()
    (tmp_path / "p/old.txt").write_text("old")
    before = snapshot(tmp_path)
    monkeypatch.setenv("MGR_AGENT_FAULT", "mid-stage:5=raise")
    monkeypatch.setattr(faults, "_counts", {})
    t = Transaction(layout, "t5", _many(60), workers=4)
    with pytest.raises(faults.InjectedFault):
        t.stage()
    assert sorted(t.written) == [0, 1, 2, 3, 4]
    staged = sorted(str(p) for p in tmp_path.rglob(".mga-*"))
    sizes = [os.lstat(p).st_size for p in staged]
    assert len(staged) >= 5
    assert sorted(str(p) for p in tmp_path.rglob(".mga-*")) == staged  # nothing is still writing
    assert [os.lstat(p).st_size for p in staged] == sizes
    t.undo("begin")
    assert snapshot(tmp_path) == before
