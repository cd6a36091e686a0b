"""Whole-directory switches for directories a package owns outright.

For a directory D (root-relative) chosen by :func:`choose`, transaction TX and its number
K in the plan, with P the parent of D:

- staged tree S = ``P/.mga-TX-dK.new``: the new version's files under D, the changed ones
  written, the unchanged ones hard-linked from D (the live copy becomes the backup and
  the agent never writes a file in place, so sharing the inode is safe);
- exchange (D exists): ``renameat2(S, D, RENAME_EXCHANGE)``; D is then the new tree and S
  holds the old one, the backup, deleted after the commit;
- create (a fresh D): ``renameat2(S, D, RENAME_NOREPLACE)``;
- remove (D goes away): ``rename(D, B)`` with B = ``P/.mga-TX-dK.old``, deleted after the
  commit.

Every switch is journalled first (a ``switch-dir`` record with the inode numbers of S and
D); whether it happened is read back by comparing D's inode with S's, so undo and finish
can be repeated after a crash at any instant.  Whether the filesystem has
``RENAME_EXCHANGE`` is probed once per filesystem inside S; where it has not, a
``switch-dir`` record with ``how: per-file`` says so and D's files are switched one by
one.  Entries that appear in D during the transaction (a hook, the panel at run time) are
carried over into the tree that stays; see docs/transactions.md.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgr_agent import faults
from mgr_agent.dirplan import DirOp, known_tree, mounts_in
from mgr_agent.errors import SwitchFailed
from mgr_agent.fsutil import UNSUPPORTED, fsync_dir, rename_exchange
from mgr_agent.layout import Layout
from mgr_agent.libc import RENAME_NOREPLACE, renameat2
from mgr_agent.reclaim import hand_over
from mgr_agent.trees import PROBE, Carry, parents, rmtree
from mgr_agent.wal import SWITCH_DIR, Journal, replay
from mgr_agent.writeback import fsync_all

if TYPE_CHECKING:
    from mgr_agent.plan import Op, Plan
    from mgr_agent.retained import Retention

FORCE_PER_FILE = "MGR_AGENT_NO_EXCHANGE"  # tests: act as if no filesystem had RENAME_EXCHANGE
_probed: dict[int, bool] = {}  # st_dev -> RENAME_EXCHANGE works there


def _ino(path: str) -> int | None:
    try:
        return os.lstat(path).st_ino
    except FileNotFoundError:
        return None


def exchange_works(directory: str) -> bool:
    """Whether ``renameat2(RENAME_EXCHANGE)`` works on the filesystem of ``directory``
    (one of the transaction's own): tried once per filesystem with two empty directories
    made inside it.  ``MGR_AGENT_NO_EXCHANGE=1`` answers no (tests of the fallback)."""
    if os.environ.get(FORCE_PER_FILE):
        return False
    dev = os.lstat(directory).st_dev
    if dev not in _probed:
        a, b = f"{directory}/{PROBE}a", f"{directory}/{PROBE}b"
        os.mkdir(a)
        os.mkdir(b)
        try:
            rename_exchange(a, b)
            _probed[dev] = True
        except OSError as exc:
            if exc.errno not in UNSUPPORTED:
                raise
            _probed[dev] = False
        finally:
            os.rmdir(a)
            os.rmdir(b)
    return _probed[dev]


class DirSwitch:
    """The whole-directory part of one transaction's stage, switch, undo and finish."""

    def __init__(self, layout: Layout, tx: str, plan: Plan, journal: Journal | None,
                 *, per_file_fsync: bool, retention: Retention | None = None) -> None:
        self.layout = layout
        self.retention = retention
        self.prestaged: dict[int, os.stat_result] = {}  # op i -> its file in a taken tree
        self.tx = tx
        self.plan = plan
        self.journal = journal
        self.per_file_fsync = per_file_fsync
        self.root = str(layout.root)
        # switch-dir records by number; the inodes of the staged trees from the staged record
        # (an earlier record: a damaged last switch-dir record does not lose them)
        if journal is not None:
            self.records, self.staged_inos = journal.dirs, journal.staged_dirs
        elif plan.dirs and (layout.journal_dir / f"{tx}.log").exists():
            rep = replay(layout.journal_dir / f"{tx}.log")
            self.records, self.staged_inos = rep.dirs, rep.staged_dirs
        else:
            self.records, self.staged_inos = {}, {}
        self.changed: set[str] = set()
        self._cover()

    def _cover(self) -> None:
        self.active = [d for d in self.plan.dirs
                       if self.records.get(d.k, {}).get("how") != "per-file"]
        self.covered: dict[int, DirOp] = {}
        for d in self.active:
            prefix = d.path + "/"
            for op in self.plan.ops:
                if op.path.startswith(prefix):
                    self.covered[op.i] = d

    # names
    def live(self, d: DirOp) -> str:
        return f"{self.root}/{d.path}"

    def staged_tree(self, d: DirOp) -> str:
        head, _, _ = d.path.rpartition("/")
        return f"{self.root}/{head}/.mga-{self.tx}-d{d.k}.new"

    def backup_tree(self, d: DirOp) -> str:
        head, _, _ = d.path.rpartition("/")
        return f"{self.root}/{head}/.mga-{self.tx}-d{d.k}.old"

    def staged_file(self, d: DirOp, op: Op) -> str:
        return self.staged_tree(d) + op.path[len(d.path):]

    def owns(self, rel: str) -> bool:
        """Whether root-relative directory ``rel`` is made inside a staged tree, not in place."""
        return any(d.how != "remove" and (rel == d.path or rel.startswith(d.path + "/"))
                   for d in self.active)

    def parents(self) -> set[Path]:
        """The directories whose entries the switches change, and those carried into."""
        out = {Path(f"{self.root}/{d.path}").parent for d in self.plan.dirs}
        return out | {Path(c) for c in self.changed}

    def _files(self, d: DirOp, actions: tuple[str, ...]) -> set[str]:
        """Files (relative to ``d``) of the ops under it with ``actions``, plus its links."""
        cut = len(d.path) + 1
        prefix = d.path + "/"
        return {op.path[cut:] for op in self.plan.ops
                if op.action in actions and op.path.startswith(prefix)} | set(d.links)

    def _write(self, record: dict[str, Any]) -> None:
        record = {"type": SWITCH_DIR, "tx": self.tx, **record}
        if self.journal is not None:
            self.journal.write(record)  # the journal keeps it in self.records
        else:
            self.records[int(record["k"])] = record

    # stage
    def prepare(self) -> None:
        """Make each staged tree: its directories (modes as in the live tree) and the hard
        links of the unchanged files.  Where the filesystem has no RENAME_EXCHANGE, the
        directory falls back to the per-file switch (journalled), its directories made in place."""
        for d in list(self.active):
            if d.how == "remove":
                continue
            tree, live = self.staged_tree(d), self.live(d)
            os.mkdir(tree, 0o755)
            if not exchange_works(tree):
                self._write({"k": d.k, "path": d.path, "how": "per-file"})
                os.rmdir(tree)
                self._cover()
                for rel in self.plan.mkdirs:
                    if rel == d.path or rel.startswith(d.path + "/"):
                        self.layout.under(rel).mkdir(mode=0o755)
                        if self.per_file_fsync:
                            fsync_dir(self.layout.under(rel).parent)
                continue
            if self.retention is not None and self.retention.offers(d) and self._take(d, tree):
                continue
            if d.how == "exchange":
                self._like(tree, live)
            new = self._files(d, ("add", "replace"))
            dirs = sorted(parents(new), key=lambda r: (r.count("/"), r))
            for rel in dirs:
                path = f"{tree}/{rel}"
                os.mkdir(path, 0o755)
                if d.how == "exchange":
                    self._like(path, f"{live}/{rel}")
            for rel in d.links:
                src, dst = f"{live}/{rel}", f"{tree}/{rel}"
                try:
                    os.link(src, dst, follow_symlinks=False)
                except OSError:  # a link refused (EMLINK, EPERM): a copy, with mode and owner
                    shutil.copy2(src, dst, follow_symlinks=False)
                    st = os.lstat(src)
                    os.chown(dst, st.st_uid, st.st_gid)
                    if self.per_file_fsync:
                        with open(dst, "rb") as fh:
                            os.fsync(fh.fileno())
            faults.point("dir-staged")

    def _take(self, d: DirOp, tree: str) -> bool:
        """Stage ``d`` by renaming a retained tree of the new version (its files already
        durable) to ``tree``, if there is one that fits (:meth:`Retention.take`)."""
        assert self.retention is not None
        cut = len(d.path) + 1
        ops = {op.path[cut:]: op for op in self.plan.ops
               if op.action != "remove" and op.path.startswith(d.path + "/")}
        owners: dict[str, tuple[int, int] | None] = {
            rel: op.owner or (os.geteuid(), os.getegid()) for rel, op in ops.items()}
        owners.update(dict.fromkeys(d.links))
        os.rmdir(tree)
        found = self.retention.take(d, tree, owners)
        if found is None:
            os.mkdir(tree, 0o755)
            return False
        for rel, op in ops.items():
            self.prestaged[op.i] = found[rel]
        faults.point("dir-staged")
        return True

    def staged_record(self) -> dict[str, Any]:
        """For the journal's staged record: the inode of each staged tree, by number; undo
        and recovery tell from it whether a tree was switched into place."""
        inos = {str(d.k): _ino(self.staged_tree(d)) for d in self.active if d.how != "remove"}
        return {"dirs": inos} if inos else {}

    @staticmethod
    def _like(path: str, live: str) -> None:
        """Give the new directory ``path`` the mode and owner of ``live``, if that exists."""
        try:
            st = os.lstat(live)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            return
        os.chmod(path, stat.S_IMODE(st.st_mode))
        if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
            os.chown(path, st.st_uid, st.st_gid)

    def seal(self) -> None:
        """Every directory of the staged trees, then their parents, made durable before
        ``staged`` is journalled (the files were fsynced already); order does not matter,
        all are done before any switch."""
        if not self.per_file_fsync:
            return
        dirs: list[str] = []
        taken = self.retention.taken if self.retention is not None else set()
        for d in self.active:
            if d.how == "remove":
                continue
            if self.staged_tree(d) not in taken:  # a retained tree's are durable already
                dirs += [w[0] for w in os.walk(self.staged_tree(d))]
            dirs.append(os.path.dirname(self.staged_tree(d)))
        fsync_all(dirs)

    # switch
    def switch_in(self) -> None:
        """Exchange (or create) each staged tree with its live directory: one rename each."""
        for d in self.active:
            if d.how == "remove":
                continue
            tree, live = self.staged_tree(d), self.live(d)
            self._no_mounts(d)
            self._write({"k": d.k, "path": d.path, "how": d.how, "staged": _ino(tree),
                         "live": _ino(live)})
            faults.point("before-switch-dir")
            try:
                if d.how == "exchange":
                    rename_exchange(tree, live)
                else:
                    renameat2(tree, live, RENAME_NOREPLACE)
            except OSError as exc:
                raise self._failed(d, exc) from exc
            faults.point("mid-switch")

    def switch_out(self) -> None:
        """Move each directory that goes away aside to its backup name: one rename each."""
        for d in self.active:
            if d.how != "remove":
                continue
            live = self.live(d)
            self._no_mounts(d)
            self._write({"k": d.k, "path": d.path, "how": d.how, "staged": None,
                         "live": _ino(live)})
            faults.point("before-switch-dir")
            try:
                os.rename(live, self.backup_tree(d))
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise self._failed(d, exc) from exc
            faults.point("mid-switch")

    def _no_mounts(self, d: DirOp) -> None:
        """Refuse to move a directory that something was mounted in since the plan was made."""
        found = mounts_in(self.live(d)) if d.how != "create" else []
        if found:
            raise SwitchFailed(
                f"cannot replace {self.live(d)}: {found[0]} is a mount point inside it",
                path=self.live(d), hint="a directory with a mount inside is switched file by file "
                "when the mount is there before the command; the previous version was restored")

    def _failed(self, d: DirOp, exc: OSError) -> SwitchFailed:
        live = self.live(d)
        if exc.errno == errno.EEXIST:
            return SwitchFailed(f"{live}: appeared during the transaction; it was not "
                                "overwritten", path=live)
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        return SwitchFailed(
            f"cannot {'remove' if d.how == 'remove' else 'replace'} {live}: {why}",
            errno=exc.errno, path=live,
            hint="the directory may be immutable (lsattr), a mount point, on a read-only mount, "
                 "or busy; the previous version was restored")

    # undo and finish
    def _carry(self, d: DirOp, src: str, expected: set[str]) -> None:
        rescue = self.layout.saved_dir / self.plan.name / self.tx / d.path
        carry = Carry(expected, rescue)
        carry.run(src, self.live(d))
        self.changed |= carry.changed

    def undo(self) -> None:
        """Put every live directory back as it was; idempotent."""
        for d in reversed(self.plan.dirs):
            record = self.records.get(d.k)
            tree, live = self.staged_tree(d), self.live(d)
            if record is not None and record.get("how") == "per-file":
                rmtree(tree)
                continue
            if d.how == "remove":
                backup = self.backup_tree(d)
                if os.path.lexists(backup):
                    if os.path.lexists(live):  # made again meanwhile: its entries are kept
                        carry = Carry(set(), self.layout.saved_dir / self.plan.name / self.tx / d.path)
                        carry.run(live, backup)
                        rmtree(live)
                    os.rename(backup, live)
                continue
            staged = self.staged_inos.get(d.k)
            if staged is not None and _ino(live) == staged:
                if d.how == "exchange":
                    rename_exchange(live, tree)  # the old tree is back, the new one in S
                else:
                    os.rename(live, tree)
            if os.path.lexists(tree):
                self._carry(d, tree, self._files(d, ("add", "replace")))
                rmtree(tree)

    def finish(self, *, reclaim: bool = False) -> None:
        """After the commit: delete the old trees, carrying over what no version shipped
        (one walk of each: :meth:`Carry.drop`); with ``reclaim``, a tree that holds
        nothing to carry is handed over whole instead (:func:`mgr_agent.reclaim.hand_over`)."""
        for d in self.plan.dirs:
            record = self.records.get(d.k)
            if record is not None and record.get("how") == "per-file":
                rmtree(self.staged_tree(d))
                continue
            if d.how == "create":
                continue
            old = self.staged_tree(d) if d.how == "exchange" else self.backup_tree(d)
            if os.path.lexists(old):
                faults.point("before-drop-dir")
                if d.how == "exchange" and self.retention is not None and \
                        self.retention.keep(d, old):
                    continue
                carry = Carry(self._files(d, ("replace", "remove")),
                               self.layout.saved_dir / self.plan.name / self.tx / d.path)
                if reclaim and known_tree(old, "", carry.expected) is not None and \
                        hand_over(self.layout, old, f"{self.tx}-{d.k}"):
                    continue
                carry.drop(old, self.live(d))
                self.changed |= carry.changed
        if self.retention is not None:
            self.retention.write_index()
