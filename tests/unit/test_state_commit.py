"""An upgrade's commit writes only the manifest rows that changed (``Commit.previous``),
and the manifest on record afterwards is exactly the new one; a ``previous`` that is not
the manifest on record is not trusted: every row is written again."""

from __future__ import annotations

from pathlib import Path

import pytest

from mgr_agent.errors import AgentError
from mgr_agent.state import Commit, FileRow, Installed, State


def _row(path: str, digest: str, ino: int = 0) -> FileRow:
    return FileRow(path, digest * 64, 3, 0o644, "file", 123, ino, 1000 + ino)


def _commit(state: State, tx: str, rows: list[FileRow],
            previous: dict[str, FileRow] | None) -> None:
    package = Installed("plesk", "demo", tx, "1", tx * 8, f"{tx}.zip", 1.0, tx, {})
    state.commit(Commit(
        tx=tx, panel="plesk", name="demo", package=package, files=[(r.path, r) for r in rows],
        dirs=["opt/demo"], diversions_add={}, diversions_drop=[], retain_previous=None,
        drop_retained_hash=None, retain_versions=0,
        history={"op": "install", "started": 1.0, "action": "upgraded"}, previous=previous))


def _statements(state: State) -> list[str]:
    seen: list[str] = []
    state.db.set_trace_callback(seen.append)
    return seen


@pytest.mark.parametrize("trusted", [True, False], ids=["previous", "previous-not-on-record"])
def test_the_manifest_after_an_upgrade_is_the_new_one(tmp_path: Path, trusted: bool) -> None:
    state = State(tmp_path / "state.db")
    old = [_row("opt/demo/a", "a", 1), _row("opt/demo/b", "b", 2), _row("opt/demo/gone", "c", 3)]
    _commit(state, "t1", old, None)
    new = [_row("opt/demo/a", "a", 1),            # unchanged: not written
           _row("opt/demo/b", "d", 4),            # changed content
           _row("opt/demo/added", "e", 5)]        # new file; opt/demo/gone is no longer shipped
    previous = state.files("plesk", "demo")
    if not trusted:
        previous.pop("opt/demo/gone")  # not what is on record: every row written again
    seen = _statements(state)
    _commit(state, "t2", new, previous)
    assert state.files("plesk", "demo") == {r.path: r for r in new}
    if trusted:
        assert not any("opt/demo/a'" in s for s in seen), seen  # the unchanged row untouched
        assert any(s.startswith("UPDATE files") and "opt/demo/b'" in s for s in seen), seen
    else:
        assert any(s.startswith("DELETE FROM files WHERE panel=") for s in seen), seen
    state.close()


def test_a_path_another_package_owns_is_still_refused(tmp_path: Path) -> None:
    """A new row is INSERTed, never REPLACEd: the manifest cannot take over a path that
    another package's manifest holds (the planner refuses that first)."""
    state = State(tmp_path / "state.db")
    _commit(state, "t1", [_row("opt/demo/a", "a")], None)
    other = Installed("plesk", "other", "1", "1", "o" * 8, "o.zip", 1.0, "t9", {})
    with pytest.raises(AgentError, match=r"UNIQUE constraint failed: files\.path"):
        state.commit(Commit(
            tx="t9", panel="plesk", name="other", package=other,
            files=[("opt/demo/a", _row("opt/demo/a", "z"))], dirs=[], diversions_add={},
            diversions_drop=[], retain_previous=None, drop_retained_hash=None, retain_versions=0,
            history={"op": "install", "started": 1.0, "action": "installed"}, previous={}))
    assert state.files("plesk", "demo") == {"opt/demo/a": _row("opt/demo/a", "a")}
    state.close()
