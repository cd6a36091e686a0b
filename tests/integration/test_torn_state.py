"""Torn state (issue 3, item 5): a state database left mid-write, or damaged.

Torn and garbled *journal* records are covered in test_crash.py; this file is about
``state.db``:

- the agent is SIGKILLed inside SQLite's commit of the history row, at each kind of
  step (writing the rollback journal, syncing it, writing database pages, syncing the
  database, deleting the journal = the commit point), by strace's syscall fault
  injection; one case also tears the database page being written.  SQLite's hot-journal
  rollback must give back the database as it was before the commit, and recovery must
  then roll the files back to the old version: byte for byte, state agreeing;
- a database that is truncated, has a garbled or zeroed page, or is not a database at
  all is refused by every mutating command with exit 11 ``state-corrupt`` naming the
  file, and nothing under the root changes (not the panel tree, not the database);
- a garbage or empty ``state.db-journal`` next to a good database is never applied;
- an interrupted transaction on top of a damaged database is left exactly as it is until
  the database is repaired; then recovery converges.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mgr_agent.sandbox import samples
from tests.helpers import cli, full_snapshot, leftovers, snapshot
from tests.reliability.random_kill import bulk_trees, copy_root, diff, new_root, state_of

STRACE = shutil.which("strace")
DB = "var/lib/mgr-agent/state.db"
NAME = "bulk-ext"
Snap = dict[str, tuple[str, int, str]]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MGR_AGENT_")}


@dataclass
class World:
    before: Path          # v1 installed
    v2: Path
    other: Path
    old: Snap
    new: Snap
    old_state: object
    new_state: object


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("torn")
    t1, t2 = bulk_trees("plesk", files=30)
    v1 = samples.write_zip(t1, base / "v1.zip")
    v2 = samples.write_zip(t2, base / "v2.zip")
    other = samples.write_zip(samples.ispmanager_files("other", "1.0"), base / "other.zip")
    before = new_root(base / "before")
    assert cli(before, "install", str(v1)).rc == 0
    ref = copy_root(before, base / "reference")
    assert cli(ref, "install", str(v2)).rc == 0
    return World(before, v2, other, snapshot(before), snapshot(ref), state_of(before, NAME),
                 state_of(ref, NAME))


def _integrity(root: Path) -> str:
    db = sqlite3.connect(root / DB)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


# ---------------------------------------------------------------- killed inside the SQLite commit
@dataclass(frozen=True)
class KillPoint:
    id: str
    syscall: str          # the system call at whose entry the agent is killed
    when: int             # its n-th call on state.db or state.db-journal
    offset: int = -1      # for a database page write: where, to tear that page


def _run_traced(root: Path, log: Path, pkg: Path, *extra: str) -> int:
    db = str(root / DB)
    argv = [str(STRACE), "-f", "-qq", "-y", "-o", str(log), "-P", db, "-P", db + "-journal",
            "-e", "trace=pwrite64,write,fdatasync,fsync,unlink,unlinkat", *extra,
            sys.executable, "-m", "mgr_agent", "--root", str(root), "install", str(pkg), "--json"]
    done = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=120, check=False)
    if "Operation not permitted" in done.stderr and "ptrace" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()[:200]}")
    return done.returncode


CALL = re.compile(r"^\d+ +(\w+)\((\d+)<([^>]*)>(?:, .*?)?(?:, (\d+), (\d+))?\) = (-?\d+)")
UNLINK = re.compile(r'^\d+ +(unlink|unlinkat)\((?:[^,]+, )?"([^"]+)"')


@pytest.fixture(scope="module")
def kill_points(world: World, tmp_path_factory: pytest.TempPathFactory) -> list[KillPoint]:
    """Trace one no-fault upgrade: the calls of its single SQLite commit, in order."""
    if STRACE is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    base = tmp_path_factory.mktemp("torn-ref")
    root = copy_root(world.before, base / "root")
    log = base / "ref.log"
    assert _run_traced(root, log, world.v2) == 0
    db = str(root / DB)
    seq: list[tuple[str, str, int]] = []   # (syscall, file, offset)
    for line in log.read_text().splitlines():
        m = CALL.match(line)
        if m and m.group(3) in (db, db + "-journal"):
            seq.append((m.group(1), m.group(3), int(m.group(5) or -1)))
            continue
        u = UNLINK.match(line)
        if u and u.group(2) == db + "-journal":
            seq.append(("unlink", u.group(2), -1))
    unlinks = [i for i, s in enumerate(seq) if s[0] == "unlink"]
    assert len(unlinks) == 1, f"expected one SQLite commit in the upgrade, saw {len(unlinks)}: {seq[:5]}"
    assert unlinks[0] == len(seq) - 1, "database calls after the commit point"

    def nth(i: int) -> int:  # how many calls of that syscall (on either file) up to seq[i]
        return sum(1 for s in seq[: i + 1] if s[0] == seq[i][0])

    jw = [i for i, s in enumerate(seq) if s[0] == "pwrite64" and s[1].endswith("-journal")]
    dw = [i for i, s in enumerate(seq) if s[0] == "pwrite64" and s[1] == db]
    js = [i for i, s in enumerate(seq) if s[0] in ("fdatasync", "fsync") and s[1].endswith("-journal")]
    ds = [i for i, s in enumerate(seq) if s[0] in ("fdatasync", "fsync") and s[1] == db]
    header = [i for i in jw if seq[i][2] == 0 and i > js[0]]
    assert jw and dw and js and ds and header, seq
    return [
        KillPoint("journal-first-write", "pwrite64", nth(jw[0])),
        KillPoint("journal-half-written", "pwrite64", nth(jw[len(jw) // 2])),
        KillPoint("journal-not-synced", seq[js[0]][0], nth(js[0])),
        KillPoint("journal-header-update", "pwrite64", nth(header[0])),
        KillPoint("db-first-page", "pwrite64", nth(dw[0]), seq[dw[0]][2]),
        KillPoint("db-half-written-torn-page", "pwrite64", nth(dw[len(dw) // 2]), seq[dw[len(dw) // 2]][2]),
        KillPoint("db-not-synced", seq[ds[0]][0], nth(ds[0])),
        KillPoint("before-journal-delete", "unlink", nth(unlinks[0])),
    ]


# `make test` tries one kill point of each step; the reliability runner (RELIABILITY_FULL=1) all
QUICK_POINTS = ["journal-half-written", "journal-header-update", "db-half-written-torn-page",
                "db-not-synced", "before-journal-delete"]
POINT_IDS = (["journal-first-write", "journal-half-written", "journal-not-synced", "journal-header-update",
              "db-first-page", "db-half-written-torn-page", "db-not-synced", "before-journal-delete"]
             if os.environ.get("RELIABILITY_FULL") else QUICK_POINTS)


@pytest.mark.slow
@pytest.mark.parametrize("point_id", POINT_IDS)
def test_killed_inside_sqlite_commit(world: World, kill_points: list[KillPoint], tmp_path: Path,
                                     point_id: str) -> None:
    (point,) = [p for p in kill_points if p.id == point_id]
    root = copy_root(world.before, tmp_path / "root")
    rc = _run_traced(root, tmp_path / "kill.log", world.v2,
                     "-e", f"inject={point.syscall}:signal=SIGKILL:when={point.when}")
    # strace reports its tracee's death by a signal as 128 + the signal
    assert rc in (-signal.SIGKILL, 128 + signal.SIGKILL), f"{point}: rc {rc}"
    journal = root / (DB + "-journal")
    assert journal.exists(), "the kill should leave SQLite's journal behind (a hot journal)"
    if point.offset >= 0 and "torn" in point.id:
        # the page being written when the power went: half of it garbage
        with open(root / DB, "r+b") as fh:
            fh.seek(point.offset)
            fh.write(os.urandom(2048))
    (tx_journal,) = (root / "var/lib/mgr-agent/journal").glob("*.log")

    rec = cli(root, "recover")
    assert rec.rc == 0, rec.stdout + rec.stderr
    (entry,) = rec.json["data"]["transactions"]
    assert (entry["tx"], entry["outcome"]) == (tx_journal.stem, "rolled back"), entry
    assert not journal.exists(), "SQLite should have rolled back and deleted its hot journal"
    assert _integrity(root) == "ok"
    tree = snapshot(root)
    assert tree == world.old, diff(tree, world.old)
    assert state_of(root, NAME) == world.old_state
    history = {h["tx"]: h["status"] for h in cli(root, "history").json["data"]}
    assert history[tx_journal.stem] == "rolled_back_by_recovery"
    assert leftovers(root) == []
    again = cli(root, "recover")
    assert again.rc == 0 and again.json["data"]["transactions"] == []
    if "torn" in point.id:  # and the upgrade can be done again, cleanly
        done = cli(root, "install", str(world.v2))
        assert done.rc == 0, done.stdout
        assert snapshot(root) == world.new


# ---------------------------------------------------------------- a damaged database
def _truncate(path: Path) -> None:
    os.truncate(path, 20000)


def _cut_mid_page(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 2000)


def _page_size(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:18], "big")


def _root_page(path: Path, table: str) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (table,)).fetchone()[0])
    finally:
        db.close()


def _garble_files_page(path: Path) -> None:
    page = _root_page(path, "files")
    with open(path, "r+b") as fh:  # the b-tree page header: type, freeblock, cell count
        fh.seek((page - 1) * _page_size(path))
        fh.write(b"\xff" * 8)


def _zero_packages_page(path: Path) -> None:
    page, size = _root_page(path, "packages"), _page_size(path)
    with open(path, "r+b") as fh:  # a page write that never reached the disk
        fh.seek((page - 1) * size)
        fh.write(b"\0" * size)


def _not_a_database(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.write(b"XQLite format 3\0")


DAMAGE = {"truncated": (_truncate, "malformed"), "cut-mid-page": (_cut_mid_page, "integrity check failed"),
          "garbled-page-header": (_garble_files_page, "malformed"),
          "zeroed-page": (_zero_packages_page, ""), "not-a-database": (_not_a_database, "not a database")}


def _state_files(root: Path) -> Snap:
    """Everything under the root, the state dir included, but the lock file (it records
    who last held it) and SQLite's journal (absent before and after)."""
    return {p: v for p, v in full_snapshot(root).items() if p != "var/lib/mgr-agent/lock"}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_database_is_refused_and_nothing_changes(world: World, tmp_path: Path, damage: str) -> None:
    """Mutating commands refuse; read-only ones too: never an answer read from a damaged
    database, never "internal error"."""
    root = copy_root(world.before, tmp_path / "root")
    corrupt, words = DAMAGE[damage]
    corrupt(root / DB)
    before = _state_files(root)
    for argv in (("recover",), ("install", str(world.other)), ("uninstall", NAME), ("list",),
                 ("info", NAME)):
        done = cli(root, *argv)
        assert done.rc == 11, f"{argv}: rc {done.rc}: {done.stdout[:300]}{done.stderr[-300:]}"
        err = done.json["error"]
        assert err["code"] == "state-corrupt", err
        assert str(root / DB) in err["message"] and words in err["message"], err["message"]
        assert _state_files(root) == before, f"{argv} changed files on a damaged state"


def test_garbage_or_empty_sqlite_journal_is_never_applied(world: World, tmp_path: Path) -> None:
    for kind, content in (("garbage", os.urandom(3 * 4096 + 512)), ("empty", b""),
                          ("zeroed-header", b"\0" * 512 + os.urandom(4096))):
        root = copy_root(world.before, tmp_path / kind)
        db_before = (root / DB).read_bytes()
        (root / (DB + "-journal")).write_bytes(content)
        rec = cli(root, "recover")
        assert rec.rc == 0, f"{kind}: {rec.stdout}"
        assert rec.json["data"]["transactions"] == []
        assert (root / DB).read_bytes() == db_before, f"{kind}: the database was changed"
        assert _integrity(root) == "ok"
        assert state_of(root, NAME) == world.old_state
        assert snapshot(root) == world.old
        done = cli(root, "install", str(world.v2))
        assert done.rc == 0, done.stdout
        assert snapshot(root) == world.new


def test_interrupted_transaction_on_damaged_database_waits_for_repair(world: World, tmp_path: Path) -> None:
    """The files are half switched and the database is damaged: nothing is guessed; once the
    database is repaired (here: restored from a copy), recovery rolls back exactly."""
    root = copy_root(world.before, tmp_path / "root")
    good = (root / DB).read_bytes()
    # mid-switch:1 is the exchange of htdocs (switched whole), then files one by one
    killed = cli(root, "install", str(world.v2), env={"MGR_AGENT_FAULT": "mid-switch:4"})
    assert killed.rc == -signal.SIGKILL
    half = _state_files(root)
    assert snapshot(root) not in (world.old, world.new), "the kill should leave a half-switched tree"
    _zero_packages_page(root / DB)
    damaged = _state_files(root)
    for argv in (("recover",), ("install", str(world.other))):
        done = cli(root, *argv)
        assert done.rc == 11, done.stdout
        assert done.json["error"]["code"] == "state-corrupt"
        assert _state_files(root) == damaged, f"{argv} touched something"
    assert {p: v for p, v in damaged.items() if p != DB} == {p: v for p, v in half.items() if p != DB}
    (root / DB).write_bytes(good)  # the admin restores the database
    rec = cli(root, "recover")
    assert rec.rc == 0, rec.stdout
    assert [t["outcome"] for t in rec.json["data"]["transactions"]] == ["rolled back"]
    assert snapshot(root) == world.old, diff(snapshot(root), world.old)
    assert state_of(root, NAME) == world.old_state
    assert leftovers(root) == []
