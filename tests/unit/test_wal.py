from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mgr_agent.errors import StateCorrupt
from mgr_agent.plan import Op, Plan
from mgr_agent.state import State
from mgr_agent.wal import Journal, replay


def _journal(tmp_path: Path, *types: str) -> Path:
    j = Journal(tmp_path, "tx1")
    for t in types:
        j.write({"type": t, "tx": "tx1", "plan": {"ops": []}} if t == "begin" else {"type": t})
    j.close()
    return j.path


def test_replay_reports_last_phase(tmp_path: Path) -> None:
    rep = replay(_journal(tmp_path, "begin", "staged", "switching"))
    assert rep.phase == "switching" and rep.torn is None and rep.begin is not None
    assert rep.tx == "tx1"


def test_unterminated_tail_is_a_torn_write(tmp_path: Path) -> None:
    path = _journal(tmp_path, "begin", "staged")
    with open(path, "ab") as fh:
        fh.write(b"deadbeef {\"type\": \"swi")
    rep = replay(path)
    assert rep.phase == "staged" and rep.torn is not None and "unterminated" in rep.torn


def test_damaged_last_record_is_torn(tmp_path: Path) -> None:
    path = _journal(tmp_path, "begin", "staged")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x20
    path.write_bytes(bytes(data))
    rep = replay(path)
    assert rep.phase == "begin" and rep.torn is not None and "damaged" in rep.torn


def test_damage_before_the_end_is_refused(tmp_path: Path) -> None:
    path = _journal(tmp_path, "begin", "staged", "switching")
    data = bytearray(path.read_bytes())
    data[12] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(StateCorrupt, match="record 1 of 3 is damaged"):
        replay(path)


def test_torn_begin_means_nothing_started(tmp_path: Path) -> None:
    path = tmp_path / "tx2.log"
    path.write_bytes(b"0000")
    rep = replay(path)
    assert rep.begin is None and rep.torn is not None


def test_state_from_an_earlier_schema_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    State(db).close()
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE packages DROP COLUMN archive_sha")
    con.commit()
    con.close()
    state = State(db)
    assert state.packages() == [] and state.by_archive("x") is None
    state.close()


def test_the_plan_round_trips_through_the_journal_and_old_records_still_read(tmp_path: Path) -> None:
    plan = Plan(ops=[Op(0, "add", "opt/a", 0o600, True, (7, 8), True), Op(1, "remove", "opt/b")],
                mkdirs=["opt"], prune=["opt/old"], name="demo")
    j = Journal(tmp_path, "tx9")
    j.write({"type": "begin", "tx": "tx9", "plan": plan.to_record()})
    j.close()
    begin = replay(tmp_path / "tx9.log").begin
    assert begin is not None
    assert Plan.from_record(begin["plan"]).ops == plan.ops
    # a journal an agent before 2026-11-28 left: each op an object with named keys
    earlier = {"ops": [{"i": 0, "action": "add", "path": "opt/a", "mode": 0o600, "divert": True,
                        "owner": [7, 8], "save": True},
                       {"i": 1, "action": "remove", "path": "opt/b", "mode": 0o644,
                        "divert": False, "owner": None}],
               "mkdirs": ["opt"], "prune": ["opt/old"], "name": "demo"}
    assert Plan.from_record(earlier).ops == plan.ops
