"""Retained versions (earlier versions kept for rollback) through State.commit, on a real
database file; the table and column keep their persisted names (``kept``, ``kept_at``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mgr_agent.state import Commit, FileRow, Installed, RetainedVersion, State


def _installed(version: str, at: float) -> Installed:
    return Installed("plesk", "demo", version, "1", f"hash-{version}", f"hash-{version}.zip",
                     at, f"tx-{version}", {})


def _upgrade(state: State, old: Installed | None, new: Installed, retain: int) -> None:
    previous = None if old is None else RetainedVersion(
        old.panel, old.name, old.version, old.release, old.content_hash, old.archive,
        new.installed_at, new.tx)
    state.commit(Commit(
        tx=new.tx, panel=new.panel, name=new.name, package=new,
        files=[("opt/demo/a.php", FileRow("opt/demo/a.php", "0" * 64, 3, 0o644, "file"))],
        dirs=["opt/demo"], diversions_add={}, diversions_drop=[], retain_previous=previous,
        drop_retained_hash=new.content_hash, retain_versions=retain,
        history={"op": "install", "started": new.installed_at, "action": "upgraded"}))


def _versions(state: State) -> list[str]:
    return [row.version for row in state.retained("plesk", "demo")]


def test_upgrades_retain_the_newest_versions_up_to_the_limit(tmp_path: Path) -> None:
    state = State(tmp_path / "state.db")
    v1, v2, v3 = _installed("1.0", 1.0), _installed("2.0", 2.0), _installed("3.0", 3.0)
    _upgrade(state, None, v1, 2)
    assert _versions(state) == []
    _upgrade(state, v1, v2, 2)
    _upgrade(state, v2, v3, 2)
    assert _versions(state) == ["2.0", "1.0"]  # newest first
    assert state.referenced_archives() == {"hash-1.0.zip", "hash-2.0.zip", "hash-3.0.zip"}
    _upgrade(state, _installed("3.0", 3.0), _installed("4.0", 4.0), 1)
    assert _versions(state) == ["3.0"]
    state.close()
    # The persisted names are those of every existing database.
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute("SELECT version, kept_at, tx FROM kept").fetchall()
    assert rows == [("3.0", 4.0, "tx-4.0")]


def test_rolling_back_drops_the_row_of_the_version_put_back(tmp_path: Path) -> None:
    state = State(tmp_path / "state.db")
    v1, v2 = _installed("1.0", 1.0), _installed("2.0", 2.0)
    _upgrade(state, None, v1, 1)
    _upgrade(state, v1, v2, 1)
    back = Installed("plesk", "demo", "1.0", "1", "hash-1.0", "hash-1.0.zip", 5.0, "tx-back", {})
    _upgrade(state, v2, back, 1)
    assert _versions(state) == ["2.0"]  # a second rollback goes forward again
    assert state.retained("plesk", "demo")[0].retained_at == 5.0
    state.close()


def test_uninstall_forgets_every_retained_version(tmp_path: Path) -> None:
    state = State(tmp_path / "state.db")
    v1, v2 = _installed("1.0", 1.0), _installed("2.0", 2.0)
    _upgrade(state, None, v1, 3)
    _upgrade(state, v1, v2, 3)
    state.commit(Commit(
        tx="tx-rm", panel="plesk", name="demo", package=None, files=[], dirs=[],
        diversions_add={}, diversions_drop=[], retain_previous=None, drop_retained_hash=None,
        retain_versions=3, history={"op": "uninstall", "started": 6.0, "action": "removed"}))
    assert _versions(state) == []
    assert state.packages() == []
    assert state.referenced_archives() == set()
    assert state.is_committed("tx-rm")
    state.close()
