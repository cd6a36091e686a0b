"""Durability order (DESIGN §5, issue 3 item 3): what makes a power loss safe.

An upgrade runs under ``strace -f``; the log is parsed and the order of the system
calls checked, in every durability mode:

- every staged file (``.mga-<tx>-<i>.new``, or a file inside a staged directory tree
  ``.mga-<tx>-d<k>.new/``) is covered by a sync after its last write (its own fsync in
  ``fsync`` and ``writeback`` mode, a ``syncfs`` of its filesystem by default) before the
  journal says ``staged`` and before it (or its tree, by one ``renameat2``) is switched
  into place; in ``writeback`` mode its write-back was started (``sync_file_range``)
  after its last write and before that fsync;
- every ``switch-dir`` record is fsynced before its directory is exchanged;
- every journal record is fsynced before the step it announces begins;
- after the last rename of the switch, every directory the switch changed is synced
  (a directory fsync, or ``syncfs``) before the ``switched`` record is written, and that
  record is durable before SQLite starts the commit of the history row;
- the SQLite commit itself is durable (``synchronous=FULL``: the database file is synced
  before the rollback journal is deleted);
- a rolled-back transaction (a failing post-install hook) puts the old files back and
  syncs them before the journal is deleted and the ``rolled_back`` row is written.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from mgr_agent.sandbox import samples
from tests.helpers import cli, leftovers
from tests.reliability.random_kill import bulk_trees

STRACE = shutil.which("strace")
pytestmark = pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt-get install strace)")

TRACE = ("%file,fsync,fdatasync,syncfs,sync,rename,renameat,renameat2,link,linkat,unlink,unlinkat,"
         "openat,write,pwrite64,sync_file_range")
MODES = ("syncfs", "fsync", "writeback")
SYNCS = ("fsync", "fdatasync", "syncfs", "sync")


# ---------------------------------------------------------------- the strace log
@dataclass
class Call:
    index: int            # position in the log, where the call completed (the agent is one thread)
    pid: int
    name: str
    args: list[str]
    ret: str

    def fd_path(self, n: int = 0) -> str:
        """The path strace -y printed for the fd in argument ``n``."""
        m = re.match(r"(?:-?\d+|AT_FDCWD)<(.*)>$", self.args[n])
        return m.group(1) if m else ""

    def path(self, n: int, dirfd: int | None = None) -> str:
        """A path argument, made absolute against its dirfd argument."""
        p = unquote(self.args[n])
        if dirfd is not None and not p.startswith("/"):
            p = os.path.join(self.fd_path(dirfd), p)
        return os.path.normpath(p)

    @property
    def ok(self) -> bool:
        return not self.ret.startswith("-1") and self.ret != "?"


LINE = re.compile(r"^(\d+) +\d\d:\d\d:\d\d\.\d+ (.*)$")
CALL = re.compile(r"^(\w+)\((.*)\) += (.*)$", re.S)


def unquote(arg: str) -> str:
    """An strace string argument ("..." with C escapes) as text."""
    arg = arg.strip()
    if arg.endswith("..."):
        arg = arg[:-3]
    if not (arg.startswith('"') and arg.endswith('"')):
        return arg
    body = arg[1:-1]
    return re.sub(r'\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)', _unescape, body)


def _unescape(m: re.Match[str]) -> str:
    s = m.group(1)
    if s[0] == "x":
        return chr(int(s[1:], 16))
    if s[0].isdigit():
        return chr(int(s, 8))
    return {"n": "\n", "t": "\t", "r": "\r", "v": "\v", "f": "\f"}.get(s, s)


def split_args(text: str) -> list[str]:
    """Split an strace argument list at top-level commas (quotes, braces, fd paths)."""
    out, depth, cur, quoted, esc = [], 0, [], False, False
    for ch in text:
        if quoted:
            cur.append(ch)
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                quoted = False
            continue
        if ch == '"':
            quoted = True
        elif ch in "{[<(":
            depth += 1
        elif ch in "}]>)":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if cur or out:
        out.append("".join(cur).strip())
    return out


def parse(log: Path) -> list[Call]:
    """Every completed system call, with ``<unfinished ...>``/``resumed`` pairs joined."""
    pending: dict[int, str] = {}
    calls: list[Call] = []
    for raw in log.read_text(errors="replace").splitlines():
        m = LINE.match(raw)
        if not m:
            continue
        pid, rest = int(m.group(1)), m.group(2)
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")]
            continue
        r = re.match(r"^<\.\.\. \w+ resumed>(.*)$", rest)
        if r:
            rest = pending.pop(pid, "") + r.group(1)
        c = CALL.match(rest)
        if not c:
            continue  # signals, exits
        calls.append(Call(len(calls), pid, c.group(1), split_args(c.group(2)), c.group(3).strip()))
    return calls


# ---------------------------------------------------------------- the checks
class Trace:
    """The calls of one agent run, with the questions the checks ask of them."""

    def __init__(self, calls: list[Call], root: Path) -> None:
        self.calls = [c for c in calls if c.ok]
        self.root = str(root)
        opened = [c.path(1, 0) for c in self.calls if c.name == "openat"]
        txs = {m.group(1) for p in opened if (m := re.search(r"/journal/(\w+)\.log$", p))}
        assert len(txs) == 1, f"expected one transaction journal, saw {txs}"
        self.tx = txs.pop()
        self.journal = f"{self.root}/var/lib/mgr-agent/journal/{self.tx}.log"
        self.db = f"{self.root}/var/lib/mgr-agent/state.db"

    def dev(self, path: str) -> int:
        """The filesystem of ``path``, or of its nearest existing ancestor."""
        p = Path(path)
        while not p.exists():
            p = p.parent
        return os.stat(p).st_dev

    def record(self, kind: str) -> Call:
        """The write of journal record ``kind`` (begin: the first one; strace cuts it short)."""
        writes = [c for c in self.calls if c.name == "write" and c.fd_path() == self.journal]
        if kind == "begin":
            assert writes and '"op":' in unquote(writes[0].args[1]), "no begin record"
            return writes[0]
        found = [c for c in writes if f'"type":"{kind}"' in unquote(c.args[1])]
        assert len(found) == 1, f"journal record {kind}: {len(found)} writes"
        return found[0]

    def records(self, kind: str) -> list[Call]:
        """Every write of journal records of type ``kind``."""
        return [c for c in self.calls if c.name == "write" and c.fd_path() == self.journal
                and f'"type":"{kind}"' in unquote(c.args[1])]

    def synced_after(self, write: Call) -> Call:
        """The fsync of the journal that makes ``write`` durable."""
        for c in self.after(write):
            if c.name in ("fsync", "fdatasync") and c.fd_path() == self.journal:
                return c
        raise AssertionError(f"journal record at {write.index} is never fsynced")

    def after(self, call: Call) -> Iterable[Call]:
        return (c for c in self.calls if c.index > call.index)

    def covers(self, sync: Call, path: str, *, file: bool) -> bool:
        """Whether ``sync`` makes ``path`` durable: its own fsync (a file's data, or a
        directory's entries), or a syncfs/sync of its filesystem."""
        if sync.name == "sync":
            return True
        if sync.name == "syncfs":
            return self.dev(sync.fd_path()) == self.dev(path)
        return sync.fd_path() == path and (file or os.path.isdir(path) or not os.path.exists(path))

    def first_cover(self, path: str, since: int, until: int, *, file: bool) -> Call | None:
        for c in self.calls:
            if since < c.index < until and c.name in SYNCS and self.covers(c, path, file=file):
                return c
        return None

    def mutations(self, lo: int, hi: int) -> list[tuple[Call, list[str]]]:
        """Renames, links, unlinks and mkdirs under the root between two positions: the
        directories whose entries each one changed."""
        out = []
        for c in self.calls:
            if not lo < c.index < hi:
                continue
            if c.name == "rename":
                paths = [c.path(0), c.path(1)]
            elif c.name in ("renameat", "renameat2", "linkat"):
                paths = [c.path(1, 0), c.path(3, 2)]
            elif c.name == "link":
                paths = [c.path(1)]
            elif c.name in ("unlink", "rmdir", "mkdir"):
                paths = [c.path(0)]
            elif c.name in ("unlinkat", "mkdirat"):
                paths = [c.path(1, 0)]
            else:
                continue
            paths = [p for p in paths if p.startswith(self.root + "/")]
            if paths:
                out.append((c, sorted({os.path.dirname(p) for p in paths})))
        return out


def _staged(trace: Trace) -> dict[str, list[Call]]:
    """Staged file (beside its target, or inside a staged directory tree) -> the writes into it."""
    pattern = re.compile(rf"/\.mga-{trace.tx}-(\d+\.new$|d\d+\.new/)")
    out: dict[str, list[Call]] = {}
    for c in trace.calls:
        if c.name == "openat" and "O_CREAT" in c.args[2] and pattern.search(c.path(1, 0)):
            out.setdefault(c.path(1, 0), [])
        elif c.name in ("write", "pwrite64") and pattern.search(c.fd_path()):
            out.setdefault(c.fd_path(), []).append(c)
    return out


def _source(c: Call) -> str | None:
    """The path a rename or link moves or copies from (None for other calls)."""
    if c.name in ("rename", "link"):
        return c.path(0)
    if c.name in ("renameat", "renameat2", "linkat"):
        return c.path(1, 0)
    return None


def _ends(c: Call) -> tuple[str, str]:
    """Both paths of a rename."""
    return (c.path(0), c.path(1)) if c.name == "rename" else (c.path(1, 0), c.path(3, 2))


def _tree(trace: Trace, path: str) -> str | None:
    """The staged directory tree ``path`` lies in, if any."""
    m = re.match(rf"^(.*/\.mga-{trace.tx}-d\d+\.new)/", path)
    return m.group(1) if m else None


def _renamed_from(trace: Trace, path: str) -> Call:
    """The call that put staged file ``path`` in place: rename, renameat2(RENAME_NOREPLACE),
    or the link of a link + unlink fallback; for a file in a staged tree, the renameat2
    (RENAME_EXCHANGE or RENAME_NOREPLACE) of the tree."""
    path = _tree(trace, path) or path
    # (an old tree moved to the retained trees after the commit is no switch: retained.py)
    found = [c for c in trace.calls if _source(c) == path
             and "/var/lib/mgr-agent/trees/" not in _ends(c)[1]]
    assert len(found) == 1, f"{path}: renamed or linked {len(found)} times"
    return found[0]


def check_commit_order(trace: Trace, mode: str, *, removes_only: bool = False) -> dict[str, int]:
    """All the ordering rules of a committed transaction; returns counts for the report."""
    begin, staged, switching, switched = (trace.record(k) for k in ("begin", "staged", "switching",
                                                                    "switched"))
    assert begin.index < staged.index < switching.index < switched.index
    b_sync, s_sync = trace.synced_after(begin), trace.synced_after(staged)
    sw_sync, sd_sync = trace.synced_after(switching), trace.synced_after(switched)
    # the begin record is durable, and its directory entry too, before anything else happens
    journal_dir = os.path.dirname(trace.journal)
    assert trace.first_cover(journal_dir, begin.index, staged.index, file=False), \
        "the journal directory is not synced after the journal was created"

    # 1. staged files: written, then synced, before "staged" and before their rename
    files = _staged(trace)
    assert removes_only or files, "no staged files seen"
    for path, writes in files.items():
        assert writes or removes_only, f"{path}: no writes seen"
        last = max((w.index for w in writes), default=begin.index)
        assert b_sync.index < min((w.index for w in writes), default=b_sync.index + 1), \
            f"{path}: written before the begin record was durable"
        rename = _renamed_from(trace, path)
        cover = trace.first_cover(path, last, rename.index, file=True)
        assert cover is not None, f"{path}: renamed into place at {rename.index} without a sync " \
                                  f"after its last write at {last}"
        assert cover.index < staged.index, f"{path}: synced only after the 'staged' record"
        assert s_sync.index < sw_sync.index < rename.index, \
            f"{path}: renamed before the 'switching' record was durable"
        written = bool(writes) or _tree(trace, path) is None  # a link into a staged tree is not
        if mode in ("fsync", "writeback") and written:
            own = [c for c in trace.calls if c.name in ("fsync", "fdatasync") and c.fd_path() == path]
            assert own and own[0].index > last, f"{path}: {mode} mode, but no fsync of the file itself"
        if mode == "writeback" and written:
            started = [c for c in trace.calls if c.name == "sync_file_range" and c.fd_path() == path]
            assert started and last < started[0].index < own[0].index, \
                f"{path}: writeback mode, but its write-back was not started between its last " \
                "write and its fsync"
        elif mode == "syncfs":
            assert not [c for c in trace.calls if c.name in ("fsync", "fdatasync") and c.fd_path() == path], \
                f"{path}: syncfs mode should not fsync each staged file"

    # 1b. each directory switch is journalled, and the record durable, before the rename
    for record in trace.records("switch-dir"):
        body = unquote(record.args[1])
        if '"how":"per-file"' in body:
            continue  # no RENAME_EXCHANGE here: this directory is switched file by file
        k = re.search(r'"k":(\d+)', body)
        assert k, body
        tree = re.compile(rf"/\.mga-{trace.tx}-d{k.group(1)}\.(new|old)$")
        moves = [c for c in trace.calls if c.name in ("rename", "renameat", "renameat2")
                 and c.index > record.index and any(tree.search(p) for p in _ends(c))]
        assert moves, f"switch-dir record {k.group(1)}: no rename of its tree"
        assert trace.synced_after(record).index < moves[0].index < switched.index, \
            f"directory {k.group(1)} switched before its switch-dir record was durable"

    # 2. directories created for the new version are durable before "staged"
    for c, _ in trace.mutations(b_sync.index, staged.index):
        if c.name in ("mkdir", "mkdirat"):
            new_dir = c.path(0) if c.name == "mkdir" else c.path(1, 0)
            if new_dir.startswith(trace.root + "/var/lib/"):
                continue  # the agent's own dirs: see check_journal_dirs_durable
            parent = os.path.dirname(new_dir)
            assert trace.first_cover(parent, c.index, staged.index, file=False), \
                f"{new_dir}: created, but its parent is not synced before 'staged'"

    # 3. the switch: every changed directory synced after its last change, before "switched"
    changes = trace.mutations(sw_sync.index, switched.index)
    assert changes, "no renames seen during the switch"
    last_change: dict[str, int] = {}
    for c, dirs in changes:
        for d in dirs:
            last_change[d] = c.index
    for d, at in last_change.items():
        cover = trace.first_cover(d, at, switched.index, file=False)
        assert cover is not None, f"{d}: changed by the switch at {at}, not synced before 'switched' " \
                                  f"at {switched.index}"
    last_rename = max(last_change.values())

    # 4. the commit: SQLite starts only once "switched" is durable, and is itself durable
    db_writes = [c for c in trace.calls if c.name in ("write", "pwrite64")
                 and c.fd_path() in (trace.db, trace.db + "-journal") and c.index > switched.index]
    assert db_writes, "no database write after the switch"
    commit_start = db_writes[0]
    assert sd_sync.index < commit_start.index, "the commit began before 'switched' was durable"
    deletes = [c for c in trace.calls if c.name in ("unlink", "unlinkat") and c.index > commit_start.index
               and (c.path(0) if c.name == "unlink" else c.path(1, 0)) == trace.db + "-journal"]
    assert deletes, "the SQLite rollback journal was never deleted (not journal_mode=DELETE?)"
    commit_point = deletes[0]
    db_pages = [c for c in db_writes if c.fd_path() == trace.db and c.index < commit_point.index]
    assert db_pages, "the commit wrote no database page"
    assert trace.first_cover(trace.db, db_pages[-1].index, commit_point.index, file=True), \
        "state.db is not synced before the commit point (synchronous=FULL?)"
    if mode != "syncfs":
        assert not [c for c in trace.calls if c.name == "syncfs"], f"{mode} mode used syncfs"
    else:
        syncfs = [c for c in trace.calls if c.name == "syncfs"]
        between = [c for c in syncfs if staged.index > c.index > max(
            (w.index for ws in files.values() for w in ws), default=0)]
        assert removes_only or len(between) == 1, f"expected one syncfs before 'staged', saw {len(between)}"
    return {"staged": len(files), "dirs": len(last_change), "last_rename": last_rename,
            "calls": len(trace.calls)}


# ---------------------------------------------------------------- running the agent
def _root(path: Path, mode: str) -> Path:
    for rel in ("usr/local/psa", "usr/local/mgr5/etc", "var/lib"):
        (path / rel).mkdir(parents=True)
    (path / "usr/local/psa/version").write_text("18.0.60 Debian 12.0 1800240311.09\n")
    (path / "etc/mgr-agent").mkdir(parents=True)  # every mode named, the default included
    (path / "etc/mgr-agent/agent.toml").write_text(f'[durability]\nmode = "{mode}"\n')
    return path


def traced(root: Path, log: Path, *args: str, extra: dict[str, str] | None = None) -> tuple[int, Trace]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MGR_AGENT_")}
    env.update(extra or {})
    argv = [str(STRACE), "-f", "-tt", "-y", "-s", "256", "-e", f"trace={TRACE}", "-o", str(log),
            sys.executable, "-m", "mgr_agent", "--root", str(root), *args, "--json"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 and "ptrace" in done.stderr and "Operation not permitted" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()[:200]}")
    return done.returncode, Trace(parse(log), root)


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("durability")
    v1, v2 = bulk_trees("plesk", files=40)
    isp1, isp2 = bulk_trees("ispmanager", files=30)
    bad = dict(v2)
    bad["plib/scripts/post-install.php"] = (b'<?php\necho "cannot migrate\\n";\nexit(3);\n', 0o644)
    return {"v1": samples.write_zip(v1, base / "v1.zip"), "v2": samples.write_zip(v2, base / "v2.zip"),
            "bad": samples.write_zip(bad, base / "bad.zip"),
            "isp1": samples.write_zip(isp1, base / "isp1.zip"),
            "isp2": samples.write_zip(isp2, base / "isp2.zip")}


@pytest.fixture(scope="module")
def upgrades(tmp_path_factory: pytest.TempPathFactory,
             packages: dict[str, Path]) -> Callable[..., Trace]:
    """Traced upgrades, run once per (panel, mode) and shared by the tests below."""
    cache: dict[tuple[str, str, bool], Trace] = {}
    base = tmp_path_factory.mktemp("upgrades")

    def get(panel: str, mode: str, fallback: bool = False) -> Trace:
        if (panel, mode, fallback) not in cache:
            root = _root(base / f"{panel}-{mode}-{fallback}", mode)
            old, new = ("v1", "v2") if panel == "plesk" else ("isp1", "isp2")
            env = {"MGR_AGENT_NO_EXCHANGE": "1"} if fallback else {}
            assert cli(root, "install", str(packages[old]), env=env).rc == 0
            rc, trace = traced(root, base / f"{panel}-{mode}-{fallback}.log", "install",
                               str(packages[new]), extra=env)
            assert rc == 0
            assert leftovers(root) == []
            cache[panel, mode, fallback] = trace
        return cache[panel, mode, fallback]

    return get


def _exchanges(trace: Trace) -> list[Call]:
    return [c for c in trace.calls if c.name == "renameat2" and "RENAME_EXCHANGE" in c.args[4]
            and ".mga-probe-" not in c.args[1]]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("panel", ["plesk", "ispmanager"])
def test_upgrade_syncs_before_rename_and_before_commit(upgrades: Callable[..., Trace], mode: str,
                                                       panel: str) -> None:
    trace = upgrades(panel, mode)
    counts = check_commit_order(trace, mode)
    assert counts["staged"] >= 10 and counts["dirs"] >= 3, counts
    if panel == "plesk":  # the extension's directories are exchanged whole, one renameat2 each
        assert len(_exchanges(trace)) == len(trace.records("switch-dir")) >= 1


@pytest.mark.parametrize("mode", ["syncfs", "fsync"])
def test_upgrade_without_rename_exchange_switches_file_by_file(
        upgrades: Callable[..., Trace], mode: str) -> None:
    """A filesystem without RENAME_EXCHANGE (simulated): every file staged beside its target
    and renamed into place, in the same order of syncs."""
    trace = upgrades("plesk", mode, True)
    counts = check_commit_order(trace, mode)
    assert counts["staged"] >= 10 and counts["dirs"] >= 5, counts
    assert _exchanges(trace) == []
    assert all(_tree(trace, path) is None for path in _staged(trace))
    assert trace.records("switch-dir") and all('"how":"per-file"' in unquote(c.args[1])
                                                for c in trace.records("switch-dir"))


def _without(trace: Trace, drop: Callable[[Call], bool]) -> Trace:
    copy = Trace.__new__(Trace)
    copy.__dict__.update(trace.__dict__)
    copy.calls = [c for c in trace.calls if not drop(c)]
    return copy


@pytest.mark.parametrize("mode", MODES)
def test_checks_catch_a_missing_sync(upgrades: Callable[..., Trace], mode: str) -> None:
    """The checks are not vacuous: the same trace with one kind of sync removed fails them."""
    trace = upgrades("plesk", mode)
    staged, switched = trace.record("staged"), trace.record("switched")
    switching = trace.record("switching")
    tree = trace.root + "/usr/"
    file_syncs = _without(trace, lambda c: c.index < staged.index and (
        c.name == "syncfs" or (c.name == "fsync" and ".mga-" in c.fd_path())))
    with pytest.raises(AssertionError, match=r"renamed into place .* without a sync"):
        check_commit_order(file_syncs, mode)
    dir_syncs = _without(trace, lambda c: switching.index < c.index < switched.index and (
        c.name == "syncfs" or (c.name == "fsync" and c.fd_path().startswith(tree))))
    with pytest.raises(AssertionError, match=r"changed by the switch .* not synced before 'switched'"):
        check_commit_order(dir_syncs, mode)
    journal_fsync = _without(trace, lambda c: c.name == "fsync" and c.fd_path() == trace.journal
                             and switching.index < c.index < switched.index)
    with pytest.raises(AssertionError, match=r"'switching' record was durable|never fsynced"):
        check_commit_order(journal_fsync, mode)


@pytest.mark.parametrize("mode", MODES)
def test_uninstall_syncs_directories_before_commit(tmp_path: Path, packages: dict[str, Path],
                                                   mode: str) -> None:
    root = _root(tmp_path / "root", mode)
    assert cli(root, "install", str(packages["isp1"])).rc == 0
    rc, trace = traced(root, tmp_path / "strace.log", "uninstall", "bulk")
    assert rc == 0
    counts = check_commit_order(trace, mode, removes_only=True)
    assert counts["staged"] == 0 and counts["dirs"] >= 5, counts


@pytest.mark.parametrize("mode", MODES)
def test_rolled_back_upgrade_syncs_before_forgetting_the_journal(
        tmp_path: Path, packages: dict[str, Path], mode: str) -> None:
    root = _root(tmp_path / "root", mode)
    assert cli(root, "install", str(packages["v1"])).rc == 0
    rc, trace = traced(root, tmp_path / "strace.log", "install", str(packages["bad"]))
    assert rc == 8
    switched = trace.record("switched")
    # the journal is deleted once the old files are back; then the history row is written
    gone = [c for c in trace.calls if c.name in ("unlink", "unlinkat") and c.index > switched.index
            and (c.path(0) if c.name == "unlink" else c.path(1, 0)) == trace.journal]
    assert len(gone) == 1, "the journal should be deleted exactly once"
    undo = trace.mutations(switched.index, gone[0].index)
    restored = [c for c, _ in undo if re.search(r"\.mga-\w+-\d+\.old$", _source(c) or "")]
    # a directory switched whole is put back by exchanging it with its staged tree again
    back = [c for c in _exchanges(trace) if switched.index < c.index < gone[0].index]
    assert back and len(back) == len(trace.records("switch-dir")), "a directory was not exchanged back"
    assert len(restored) + 10 * len(back) >= 10, "the undo put too few old files back"
    last_change: dict[str, int] = {}
    for c, dirs in undo:
        if c.name not in ("mkdir", "mkdirat"):
            for d in dirs:
                last_change[d] = c.index
    for d, at in last_change.items():
        if d.startswith(trace.root + "/var/lib/mgr-agent"):
            continue  # scratch and stored archives of the failed version: not part of the tree
        if _tree(trace, d + "/") is not None and not os.path.lexists(d):
            continue  # inside the staged tree the undo deleted: the sync of its parent covers it
        assert trace.first_cover(d, at, gone[0].index, file=False), \
            f"{d}: changed by the undo at {at}, not synced before the journal was deleted"
    rows = [c for c in trace.calls if c.name in ("write", "pwrite64") and c.fd_path() == trace.db
            and c.index > switched.index]
    assert rows and rows[0].index > gone[0].index, "the rolled_back row was written before the undo was done"
    assert leftovers(root) == []


# ---------------------------------------------------------------- the first transaction on a root
def check_journal_dirs_durable(trace: Trace) -> list[str]:
    """Directories created on the way to the journal (the state dir, ``journal/``) must have
    their own entries synced before the switch begins: otherwise a power loss in the middle
    of the first transaction on a root can lose the journal with the directory, and recovery
    would find nothing to undo (found by this test; fixed in 31f0126).  Returns what is not
    covered."""
    switching = trace.record("switching")
    state = trace.root + "/var/lib"
    problems = []
    for c, _ in trace.mutations(-1, switching.index):
        if c.name != "mkdir":
            continue
        new_dir = c.path(0)
        if not (new_dir.startswith(state) and trace.journal.startswith(new_dir + "/")):
            continue
        parent = os.path.dirname(new_dir)
        if trace.first_cover(parent, c.index, switching.index, file=False) is None:
            problems.append(f"{new_dir}: created at call {c.index}, but {parent} is not synced before "
                            f"the 'switching' record at {switching.index}")
    return problems


@pytest.mark.parametrize("mode", MODES)
def test_first_transaction_on_a_root_makes_its_journal_durable(tmp_path: Path, packages: dict[str, Path],
                                                               mode: str) -> None:
    root = _root(tmp_path / "root", mode)
    assert not (root / "var/lib/mgr-agent").exists()
    rc, trace = traced(root, tmp_path / "strace.log", "install", str(packages["isp1"]))
    assert rc == 0
    check_commit_order(trace, mode)
    assert check_journal_dirs_durable(trace) == []


class _PathsTrace(Trace):
    """A trace whose filesystems are told by path (``devs``: a directory -> its filesystem,
    any other path on 0), for a run whose mounts are gone with its mount namespace."""

    def __init__(self, calls: list[Call], root: Path, devs: dict[str, int]) -> None:
        super().__init__(calls, root)
        self.devs = devs

    def dev(self, path: str) -> int:
        return next((d for p, d in self.devs.items() if path == p or path.startswith(p + "/")), 0)


@pytest.mark.root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) for a private mount namespace")
def test_first_transaction_with_var_on_its_own_filesystem(tmp_path: Path, packages: dict[str, Path]) -> None:
    """As on a server with a separate /var: syncfs of the panel tree's filesystem does not
    cover the state directory."""
    root = _root(tmp_path / "root", "syncfs")
    log = tmp_path / "strace.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MGR_AGENT_")}
    script = (f'mount -t tmpfs -o size=64m tmpfs "{root}/var/lib" && exec "{STRACE}" -f -tt -y -s 256 '
              f'-e trace={TRACE} -o "{log}" "{sys.executable}" -m mgr_agent --root "{root}" install '
              f'"{packages["isp1"]}" --json')
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 and "mount" in done.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stdout + done.stderr
    # var/lib is gone with the namespace: judge filesystems by the paths the trace names
    trace = _PathsTrace(parse(log), root, devs={f"{root}/var/lib": 1})
    assert check_journal_dirs_durable(trace) == []
