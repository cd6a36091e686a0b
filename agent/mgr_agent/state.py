"""The state database (SQLite): installed packages, manifests, retained versions, history.

A transaction is committed exactly when its history row with status ``committed`` is
in the database; that row is written in the same SQLite transaction as the manifest.

Retained versions (earlier versions whose archives stay for ``rollback``) live in the
table ``kept`` with the column ``kept_at``: persisted names, kept for the databases
that exist; the code says "retained".
"""

from __future__ import annotations

import errno
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgr_agent.errors import AgentError, PreflightFailed, StateCorrupt

if TYPE_CHECKING:
    from mgr_agent.staterows import Commit as Commit  # noqa: PLC0414
    from mgr_agent.staterows import FileRow as FileRow  # noqa: PLC0414
    from mgr_agent.staterows import Installed as Installed  # noqa: PLC0414
    from mgr_agent.staterows import RetainedVersion as RetainedVersion  # noqa: PLC0414

_ROWS = ("Commit", "FileRow", "Installed", "RetainedVersion")
# the manifest read last with a tx (State.files), by (database, panel, name, tx): one
# entry at most; not to be changed by its readers
_last_files: dict[tuple[str, str, str, str], dict[str, FileRow]] = {}


def __getattr__(name: str) -> object:
    """The row types (``mgr_agent.staterows``) at their first use: ``list`` and ``history``
    read rows as plain tuples and start without ``dataclasses``."""
    if name in _ROWS:
        from mgr_agent import staterows  # noqa: PLC0415

        return getattr(staterows, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

SQLITE_CORRUPT, SQLITE_FULL, SQLITE_NOTADB = 11, 13, 26

SCHEMA = """
CREATE TABLE IF NOT EXISTS packages (
    panel TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, release TEXT NOT NULL,
    content_hash TEXT NOT NULL, archive TEXT NOT NULL, installed_at REAL NOT NULL,
    tx TEXT NOT NULL, meta TEXT NOT NULL, archive_sha TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (panel, name));
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, panel TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL,
    size INTEGER NOT NULL, mode INTEGER NOT NULL, kind TEXT NOT NULL, crc32 INTEGER,
    ino INTEGER NOT NULL DEFAULT 0, mtime_ns INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS files_pkg ON files (panel, name);
CREATE TABLE IF NOT EXISTS dirs (
    path TEXT NOT NULL, panel TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (path, panel, name));
CREATE TABLE IF NOT EXISTS diversions (
    path TEXT PRIMARY KEY, panel TEXT NOT NULL, name TEXT NOT NULL, stored TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kept (
    panel TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, release TEXT NOT NULL,
    content_hash TEXT NOT NULL, archive TEXT NOT NULL, kept_at REAL NOT NULL, tx TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    tx TEXT PRIMARY KEY, op TEXT NOT NULL, panel TEXT, name TEXT, from_version TEXT,
    to_version TEXT, started REAL NOT NULL, ended REAL, status TEXT NOT NULL, action TEXT,
    detail TEXT NOT NULL DEFAULT '{}');
"""

_CURRENT = {(t, c) for t, cs in (
    ("packages", "panel name version release content_hash archive installed_at tx meta archive_sha"),
    ("files", "path panel name sha256 size mode kind crc32 ino mtime_ns"),
    ("dirs", "path panel name"), ("diversions", "path panel name stored"),
    ("kept", "panel name version release content_hash archive kept_at tx"),
    ("history", "tx op panel name from_version to_version started ended status action detail"),
    ("index", "files_pkg"),
) for c in cs.split()}
"""Every table, column and index of ``SCHEMA`` (and its migrations): a database without
one of them is opened the ordinary way, which adds it."""


class State:
    """Opened per command; every write is one SQLite transaction with synchronous=FULL."""

    def __init__(self, path: Path | None) -> None:
        """Open (creating) the database at ``path``; None gives an empty in-memory one."""
        if path is not None:
            from mgr_agent.fsutil import makedirs_private  # noqa: PLC0415 - not for reads

            makedirs_private(path.parent)
        try:
            self.db = sqlite3.connect(path or ":memory:", timeout=30, isolation_level=None)
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA journal_mode=DELETE")
            self.db.executescript(SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StateCorrupt(f"{path}: the state database cannot be opened: {exc}") from exc
        self.path = path or Path(":memory:")

    def _migrate(self) -> None:
        """Bring a database made by an earlier agent up to this schema."""
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(packages)")}
        if "archive_sha" not in columns:
            self.db.execute("ALTER TABLE packages ADD COLUMN archive_sha TEXT NOT NULL DEFAULT ''")
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(files)")}
        added = [(c, d) for c, d in (("crc32", "INTEGER"), ("ino", "INTEGER NOT NULL DEFAULT 0"),
                                     ("mtime_ns", "INTEGER NOT NULL DEFAULT 0")) if c not in columns]
        if added:  # rows of an earlier agent: no CRC, stat unknown (their files get hashed once)
            with self._tx() as db:
                for column, decl in added:
                    db.execute(f"ALTER TABLE files ADD COLUMN {column} {decl}")

    def close(self) -> None:
        self.db.close()

    def check(self) -> None:
        """Refuse to work on a damaged database."""
        try:
            (result,) = self.db.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StateCorrupt(f"{self.path}: {exc}") from exc
        if result != "ok":
            raise StateCorrupt(f"{self.path}: integrity check failed: {result}")

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Turn SQLite's "database disk image is malformed" and kin into StateCorrupt."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: sqlite3.DatabaseError) -> AgentError:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == SQLITE_FULL:
            return PreflightFailed(f"{self.path}: the disk is full: {exc}", errno=errno.ENOSPC,
                                   hint="free space under var/lib/mgr-agent")
        if code in (SQLITE_CORRUPT, SQLITE_NOTADB) or not code:
            return StateCorrupt(f"{self.path}: {exc}",
                                hint="restore var/lib/mgr-agent/state.db from a backup, or move "
                                     "it aside to start with an empty state")
        return AgentError(f"{self.path}: {exc}", hint="the state database could not be written")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                if self.db.in_transaction:  # SQLite may have rolled back itself (e.g. disk full)
                    self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from exc

    # --- reading
    def packages(self) -> list[Installed]:
        rows = self.db.execute("SELECT panel, name, version, release, content_hash, archive, "
                               "installed_at, tx, meta, archive_sha FROM packages "
                               "ORDER BY panel, name").fetchall()
        from mgr_agent.staterows import Installed  # noqa: PLC0415

        return [Installed(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]), r[9])
                for r in rows]

    def listing(self) -> list[dict[str, Any]]:
        """``list``'s rows: each installed package, its label and its number of files."""
        counts = self.file_counts()
        rows = self.db.execute("SELECT panel, name, version, release, installed_at FROM packages "
                               "ORDER BY panel, name")
        return [{"name": name, "panel": panel,
                 "version": f"{version}-{release}" if release else version,
                 "installed_at": installed_at, "files": counts.get((panel, name), 0)}
                for panel, name, version, release, installed_at in rows]

    def by_archive(self, sha256: str) -> Installed | None:
        """The installed package that came from an archive with this sha256, if any."""
        return next((p for p in self.packages() if sha256 and p.archive_sha == sha256), None)

    def file_counts(self) -> dict[tuple[str, str], int]:
        rows = self.db.execute("SELECT panel, name, COUNT(*) FROM files GROUP BY panel, name")
        return {(r[0], r[1]): r[2] for r in rows}

    def find(self, name: str, panel: str | None = None) -> list[Installed]:
        return [p for p in self.packages() if p.name == name and (panel is None or p.panel == panel)]

    def files(self, panel: str, name: str, tx: str | None = None) -> dict[str, FileRow]:
        """The manifest of an installed package; with ``tx`` (the transaction that
        installed it: only a commit writes its rows, along with a new ``tx``), the rows
        read last for it in this process are given again if that is still its ``tx``."""
        key = (str(self.path), panel, name, tx or "")
        if tx is not None and key in _last_files:
            return _last_files[key]
        rows = self.db.execute(
            "SELECT path, sha256, size, mode, kind, crc32, ino, mtime_ns FROM files "
            "WHERE panel=? AND name=?", (panel, name)
        )
        from mgr_agent.staterows import FileRow  # noqa: PLC0415

        out = {r[0]: FileRow(*r) for r in rows}
        if tx is not None:
            _last_files.clear()
            _last_files[key] = out
        return out

    def owners(self, paths: list[str]) -> dict[str, tuple[str, str]]:
        """Owner (panel, name) of each of ``paths`` that some package owns."""
        owners: dict[str, tuple[str, str]] = {}
        for i in range(0, len(paths), 500):
            chunk = paths[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for path, panel, name in self.db.execute(
                f"SELECT path, panel, name FROM files WHERE kind='file' AND path IN ({marks})", chunk  # noqa: S608
            ):
                owners[path] = (panel, name)
        return owners

    def dirs(self, panel: str, name: str) -> list[str]:
        rows = self.db.execute("SELECT path FROM dirs WHERE panel=? AND name=?", (panel, name))
        return [r[0] for r in rows]

    def dir_owners(self, path: str) -> set[tuple[str, str]]:
        return {(r[0], r[1]) for r in self.db.execute("SELECT panel, name FROM dirs WHERE path=?", (path,))}

    def diversions(self, panel: str | None = None, name: str | None = None) -> dict[str, str]:
        rows = self.db.execute("SELECT path, stored, panel, name FROM diversions")
        return {r[0]: r[1] for r in rows if panel is None or (r[2], r[3]) == (panel, name)}

    def retained(self, panel: str, name: str) -> list[RetainedVersion]:
        """The retained versions of a package, newest first."""
        rows = self.db.execute(
            "SELECT * FROM kept WHERE panel=? AND name=? ORDER BY kept_at DESC", (panel, name)
        )
        from mgr_agent.staterows import RetainedVersion  # noqa: PLC0415

        return [RetainedVersion(*r) for r in rows]

    def retained_hashes(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT content_hash FROM kept")}

    def referenced_archives(self) -> set[str]:
        rows = self.db.execute("SELECT archive FROM packages UNION SELECT archive FROM kept")
        return {r[0] for r in rows}

    def is_committed(self, tx: str) -> bool:
        row = self.db.execute("SELECT status FROM history WHERE tx=?", (tx,)).fetchone()
        return row is not None and row[0] == "committed"

    def history(self, name: str | None, limit: int) -> list[dict[str, Any]]:
        sql = ("SELECT tx, op, panel, name, from_version, to_version, started, ended, status, action,"
               " detail FROM history")
        args: tuple[Any, ...] = ()
        if name:
            sql += " WHERE name=?"
            args = (name,)
        sql += " ORDER BY started DESC LIMIT ?"
        out = []
        for row in self.db.execute(sql, (*args, limit)):
            out.append({
                "tx": row[0], "op": row[1], "panel": row[2], "name": row[3],
                "from_version": row[4], "to_version": row[5], "started": row[6],
                "ended": row[7], "status": row[8], "action": row[9], **json.loads(row[10]),
            })
        return out

    # --- writing
    def record(self, tx: str, op: str, status: str, action: str | None,
               panel: str | None, name: str | None, from_version: str | None,
               to_version: str | None, started: float, detail: dict[str, Any]) -> None:
        """A history row for a transaction that did not commit (failed, rolled back, ...)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO history VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (tx, op, panel, name, from_version, to_version, started, time.time(), status,
                 action, json.dumps(detail)),
            )

    def commit(self, commit: Commit) -> None:
        """The commit point of a transaction: the package's rows, its manifest
        (:func:`_write_manifest`), its diversions, the retained versions and the history
        row, in one SQLite transaction."""
        panel, name = commit.panel, commit.name
        with self._tx() as db:
            db.execute("DELETE FROM dirs WHERE panel=? AND name=?", (panel, name))
            db.execute("DELETE FROM packages WHERE panel=? AND name=?", (panel, name))
            if commit.package is not None:
                pkg = commit.package
                db.execute("INSERT INTO packages VALUES (?,?,?,?,?,?,?,?,?,?)",
                           (pkg.panel, pkg.name, pkg.version, pkg.release, pkg.content_hash,
                            pkg.archive, pkg.installed_at, pkg.tx, json.dumps(pkg.meta),
                            pkg.archive_sha))
                db.executemany("INSERT INTO dirs VALUES (?,?,?)",
                               [(d, panel, name) for d in commit.dirs])
            _write_manifest(db, commit)
            for path in commit.diversions_drop:
                db.execute("DELETE FROM diversions WHERE path=?", (path,))
            for path, stored in commit.diversions_add.items():
                db.execute("INSERT OR REPLACE INTO diversions VALUES (?,?,?,?)",
                           (path, panel, name, stored))
            _write_retained(db, commit)
            record = commit.history
            db.execute(
                "INSERT OR REPLACE INTO history VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (commit.tx, record["op"], panel, name, record.get("from_version"),
                 record.get("to_version"), record["started"], time.time(), "committed",
                 record.get("action"), json.dumps(record.get("detail", {}))),
            )


def _write_manifest(db: sqlite3.Connection, commit: Commit) -> None:
    """The package's ``files`` rows after ``commit``.  With ``commit.previous`` (an
    upgrade's or a rollback's manifest as its plan read it under the lock), only the rows
    that differ are written, once the package is seen to hold that many rows; otherwise
    all of them.  A new row is inserted, never replaced: it cannot take over a path
    another package's manifest holds."""
    panel, name = commit.panel, commit.name
    files = commit.files
    previous = commit.previous if commit.package is not None else None
    if previous is not None and db.execute(
            "SELECT COUNT(*) FROM files WHERE panel=? AND name=?",
            (panel, name)).fetchone()[0] != len(previous):
        previous = None  # not the manifest on record: every row is written again
    if previous is None:
        db.execute("DELETE FROM files WHERE panel=? AND name=?", (panel, name))
    else:  # the rows an upgrade changes, not all of them (1% changed: 1% written)
        shipped = {path for path, _ in files}
        db.executemany("DELETE FROM files WHERE path=? AND panel=? AND name=?",
                       [(path, panel, name) for path in previous if path not in shipped])
        db.executemany("UPDATE files SET sha256=?, size=?, mode=?, kind=?, crc32=?, ino=?, "
                       "mtime_ns=? WHERE path=? AND panel=? AND name=?",
                       [(f.sha256, f.size, f.mode, f.kind, f.crc32, f.ino, f.mtime_ns,
                         path, panel, name) for path, f in files
                        if path in previous and previous[path] != f])
        files = [(path, f) for path, f in files if path not in previous]
    if commit.package is not None:
        db.executemany("INSERT INTO files (path, panel, name, sha256, size, mode, kind, "
                       "crc32, ino, mtime_ns) VALUES (?,?,?,?,?,?,?,?,?,?)",
                       [(path, panel, name, f.sha256, f.size, f.mode, f.kind,
                         f.crc32, f.ino, f.mtime_ns) for path, f in files])


def _write_retained(db: sqlite3.Connection, commit: Commit) -> None:
    """The retained versions after ``commit`` (table ``kept``, see the module's note)."""
    panel, name = commit.panel, commit.name
    if commit.drop_retained_hash is not None:
        db.execute("DELETE FROM kept WHERE panel=? AND name=? AND content_hash=?",
                   (panel, name, commit.drop_retained_hash))
    if commit.package is None:  # uninstalled: nothing to roll back to
        db.execute("DELETE FROM kept WHERE panel=? AND name=?", (panel, name))
        return
    previous = commit.retain_previous
    if previous is None:
        return
    db.execute("DELETE FROM kept WHERE panel=? AND name=? AND content_hash=?",
               (previous.panel, previous.name, previous.content_hash))
    db.execute("INSERT INTO kept VALUES (?,?,?,?,?,?,?,?)",
               (previous.panel, previous.name, previous.version, previous.release,
                previous.content_hash, previous.archive, previous.retained_at, previous.tx))
    db.execute(
        "DELETE FROM kept WHERE panel=? AND name=? AND rowid NOT IN ("
        "SELECT rowid FROM kept WHERE panel=? AND name=? ORDER BY kept_at DESC LIMIT ?)",
        (panel, name, panel, name, commit.retain_versions))


def open_read_only(path: Path) -> State | None:
    """The database at ``path`` opened read-only, for a read (``list``, ``history``): no
    directory made, no schema run, no pragma.  None when it must be opened the ordinary
    way (``State(path)``): it is missing, it cannot be read as it is (a hot journal to roll
    back, damage), or an earlier agent wrote it and it is due a migration."""
    from urllib.parse import quote  # noqa: PLC0415 - loaded with pathlib anyway

    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=30,
                             isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        columns = {(r[0], r[1]) for r in db.execute(
            "SELECT m.name, p.name FROM sqlite_master AS m, pragma_table_info(m.name) AS p "
            "WHERE m.type = 'table' UNION SELECT 'index', name FROM sqlite_master "
            "WHERE type = 'index'")}
    except sqlite3.Error:
        columns = set()
    if not columns >= _CURRENT:
        db.close()
        return None
    state = State.__new__(State)
    state.db, state.path = db, path
    return state
