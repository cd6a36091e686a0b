"""Stage, switch and undo the file changes of one transaction.

For target T, the new content is staged as S (``.mga-TX-I.new``) and the old file
kept as B (``.mga-TX-I.old``), both in T's directory, so every switch is a rename
on one filesystem and no content is copied twice:

- add:     rename(S, T)
- replace: link(T, B); rename(S, T)       (T is never missing)
- remove:  rename(T, B)

Whether each op happened is read back from the filesystem (S gone = switched), which
makes :meth:`Transaction.undo` and :meth:`Transaction.finish` idempotent and safe to
repeat after a crash at any instant.

Directories a package owns outright (``Plan.dirs``) are staged as whole sibling trees and
switched with one rename each instead (:mod:`mgr_agent.dirswitch`); the ops under them
are written into the staged tree and are not switched one by one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgr_agent import faults
from mgr_agent.config import DEFAULT_DURABILITY, DURABILITY_MODES
from mgr_agent.dirswitch import DirSwitch
from mgr_agent.errors import StageFailed, SwitchFailed
from mgr_agent.fsutil import (
    fsync_dir,
    rename_noreplace,
    rmdir_if_empty,
    sync_filesystems,
    unlink_if_exists,
    write_new,
)
from mgr_agent.layout import Layout
from mgr_agent.plan import Op, Plan
from mgr_agent.wal import PHASES, REGISTER, Journal
from mgr_agent.writeback import Closer, fsync_all, fsync_dirs

if TYPE_CHECKING:
    from mgr_agent.retained import Retention

def _copy_aside(src: str, dest: Path, tx: str) -> None:
    """A durable copy of ``src`` at ``dest``, with its mode, times and owner."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".{tx}.tmp")
    shutil.copy2(src, tmp, follow_symlinks=False)
    st = os.lstat(src)
    os.chown(tmp, st.st_uid, st.st_gid)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


def _describe(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)


# threads that inflate and write the large staged files while the main thread walks the plan
STAGE_WORKERS = min(4, max(2, os.cpu_count() or 2))
PARALLEL_FROM = 256 * 1024  # bytes: a staged file this large is written on a staging thread


class Transaction:
    """Applies a :class:`Plan` under a layout, journalled step by step."""

    def __init__(self, layout: Layout, tx: str, plan: Plan, journal: Journal | None = None,
                 *, durability: str = DEFAULT_DURABILITY, workers: int | None = None,
                 retention: Retention | None = None) -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(f"unknown durability mode {durability!r}")
        self.layout = layout
        self.tx = tx
        self.plan = plan
        self.journal = journal
        self.durability = durability
        self.workers = STAGE_WORKERS if workers is None else workers
        self.written: dict[int, os.stat_result] = {}  # op i -> its staged file, as written
        root = str(layout.root).rstrip("/")  # an f-string per op: posixpath.join costs 3x
        self._targets = {op.i: f"{root}/{op.path}" for op in plan.ops}
        self._dir_cache: set[Path] | None = None
        self._side: ThreadPoolExecutor | None = None
        self._alongside: Future[None] | None = None
        self.dirs = DirSwitch(layout, tx, plan, journal, per_file_fsync=self.per_file_fsync,
                              retention=retention)

    @property
    def per_file_fsync(self) -> bool:
        """Whether directories are fsynced one by one (every mode but syncfs)."""
        return self.durability != "syncfs"

    # names (plain strings: these run once per file on the hot path)
    def target(self, op: Op) -> str:
        return self._targets[op.i]

    def staged(self, op: Op) -> str:
        d = self.dirs.covered.get(op.i)
        if d is not None:  # written into its directory's staged tree
            return self.dirs.staged_file(d, op)
        head, _, _ = self._targets[op.i].rpartition("/")
        return f"{head}/.mga-{self.tx}-{op.i}.new"

    def _beside(self, op: Op) -> str:
        head, _, _ = self._targets[op.i].rpartition("/")
        return f"{head}/.mga-{self.tx}-{op.i}.new"

    def backup(self, op: Op) -> str:
        head, _, _ = self._targets[op.i].rpartition("/")
        return f"{head}/.mga-{self.tx}-{op.i}.old"

    def diverted(self, op: Op) -> Path:
        return self.layout.diverted_dir / op.path

    def saved(self, op: Op) -> Path:
        """Where the admin's edited version of ``op``'s target is kept (never in the panel tree)."""
        return self.layout.saved_dir / self.plan.name / self.tx / op.path

    def _dirs(self) -> set[Path]:
        if self._dir_cache is None:
            covered = self.dirs.covered
            self._dir_cache = {Path(t.rpartition("/")[0]) for i, t in self._targets.items()
                               if i not in covered}
        return self._dir_cache | self.dirs.parents()

    def _sync(self, dirs: Iterable[Path]) -> None:
        """Make the directories' entries (and, with syncfs, all data written) durable."""
        existing = [d for d in dirs if d.exists()]
        if self.per_file_fsync:
            fsync_dirs(existing)
        else:
            sync_filesystems(existing)

    def _log(self, phase: str, **extra: Any) -> None:
        assert phase in PHASES
        if self.journal is not None:
            self.journal.write({"type": phase, "tx": self.tx, **extra})

    def before_register(self) -> None:
        """Journal that the panel's registry is about to change: undo and recovery then
        make it agree with the files again."""
        if self.journal is not None:
            self.journal.write({"type": REGISTER, "tx": self.tx})

    # steps
    def begin(self, info: dict[str, Any]) -> None:
        self._log("begin", plan=self.plan.to_record(), **info)
        faults.point("after-begin")

    def alongside(self, step: Callable[[], None]) -> None:
        """Start ``step`` (the archive store) on a thread of its own, so that its I/O
        overlaps the hooks' and the staging's; it is complete before ``staged`` is
        journalled (its failure fails the staging), and before any undo."""
        self._side = ThreadPoolExecutor(1, thread_name_prefix="mga-alongside")
        self._alongside = self._side.submit(step)

    def _quiesce(self) -> None:
        """Wait for the step started by :meth:`alongside`: nothing may still be writing
        when the staging ends or the undo starts."""
        if self._side is not None:
            self._side.shutdown(wait=True)

    def stage(self) -> None:
        """Write every new file next to its target, durable on disk; nothing is visible yet."""
        try:
            try:
                for rel in self.plan.mkdirs:
                    if self.dirs.owns(rel):
                        continue  # made inside the staged tree
                    path = self.layout.under(rel)
                    path.mkdir(mode=0o755)
                    if self.per_file_fsync:
                        fsync_dir(path.parent)
                self.dirs.prepare()
                self._dir_cache = None
                self._stage_files()
                if self.durability == "writeback":
                    self._fsync_staged()
            finally:
                self._quiesce()
            if self._alongside is not None:
                self._alongside.result()  # its failure, once the staging's own succeeded
            self.dirs.seal()
            self._sync(self._dirs())
        except OSError as exc:
            name = exc.filename2 or exc.filename or "a staged file"
            raise StageFailed(f"cannot stage {name}: {_describe(exc)}", errno=exc.errno,
                              path=str(name)) from exc
        faults.point("before-staged")
        self._log("staged", **self.dirs.staged_record())
        faults.point("after-staged")

    def _fsync_staged(self) -> None:
        """writeback mode's second pass: each staged file's own fsync (its write-back
        started when it was written), many at once (:func:`fsync_all`)."""
        prestaged = self.dirs.prestaged
        fsync_all([self.staged(op) for op in self.plan.ops
                   if op.action != "remove" and op.i not in prestaged])

    def _write(self, op: Op, closer: Closer | None) -> os.stat_result:
        return write_new(self.staged(op), self.plan.sources[op.i](), op.mode,
                         sync=self.durability == "fsync", owner=op.owner, closer=closer)

    def _stage_files(self) -> None:
        """Copies aside (panel originals, the admin's edits) on this thread, in plan order;
        new files written here too, but those of at least ``PARALLEL_FROM`` bytes by a few
        threads (inflate and write release the GIL on large buffers; for small files a pool
        costs more than it saves).  The ``mid-stage`` point is reached once per file, in plan
        order, when that file is written: ``mid-stage:N`` always means "after the N-th file
        of the plan"."""
        sizes = self.plan.sizes
        large = sum(1 for op in self.plan.ops if op.action != "remove"
                    and sizes.get(op.i, 0) >= PARALLEL_FROM and op.i not in self.dirs.prestaged)
        pool = (ThreadPoolExecutor(self.workers, thread_name_prefix="mga-stage")
                if self.workers > 1 and large > 1 else None)
        pending: deque[tuple[Op, Future[os.stat_result] | os.stat_result]] = deque()
        closer = Closer() if self.durability == "writeback" else None  # write-back, close
        window = 4 * self.workers  # large files in flight: bounds the memory of inflated chunks
        prestaged = self.dirs.prestaged  # in a retained tree taken whole: already there

        def settle(block: bool) -> None:
            """Report written files in plan order: the first pending one, while it is done."""
            while pending:
                first, written = pending[0]
                if isinstance(written, Future):
                    if not (block or written.done()):
                        return
                    written = written.result()
                pending.popleft()
                self.written[first.i] = written
                faults.point("mid-stage")

        try:
            for op in self.plan.ops:
                if op.divert:
                    _copy_aside(self.target(op), self.diverted(op), self.tx)
                if op.save:
                    _copy_aside(self.target(op), self.saved(op), self.tx)
                if op.action == "remove":
                    continue
                if op.i in prestaged:
                    pending.append((op, prestaged[op.i]))
                elif pool is not None and sizes.get(op.i, 0) >= PARALLEL_FROM:
                    pending.append((op, pool.submit(self._write, op, closer)))
                else:
                    pending.append((op, self._write(op, closer)))
                settle(block=len(pending) >= window)
            settle(block=True)
            if closer is not None:
                closer.finish()
        finally:  # nothing may still be writing when the undo starts
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if closer is not None:
                closer.abandon()

    def switch(self) -> None:
        """Put the new files in place and remove obsolete ones; raises on the first failure."""
        self._log("switching")
        faults.point("after-switching")
        self.dirs.switch_in()
        covered = self.dirs.covered
        ordered = [op for op in self.plan.ops if op.action != "remove" and op.i not in covered] + [
            op for op in self.plan.ops if op.action == "remove" and op.i not in covered
        ]
        for op in ordered:
            target = self.target(op)
            try:
                if op.action == "add":
                    rename_noreplace(self.staged(op), target)  # never over a file that appeared
                elif op.action == "replace":
                    os.link(target, self.backup(op), follow_symlinks=False)
                    os.rename(self.staged(op), target)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.rename(target, self.backup(op))
            except OSError as exc:
                if exc.errno == errno.ENOENT and op.action == "replace":
                    raise SwitchFailed(f"{target}: disappeared during the transaction",
                                       path=str(target)) from exc
                if exc.errno == errno.EEXIST and op.action == "add":
                    raise SwitchFailed(f"{target}: appeared during the transaction; it was not "
                                       "overwritten", path=str(target)) from exc
                raise SwitchFailed(
                    f"cannot {'remove' if op.action == 'remove' else 'replace'} {target}: "
                    f"{_describe(exc)}",
                    errno=exc.errno, path=str(target),
                    hint="the file may be immutable (lsattr), on a read-only mount, busy, or the "
                         "disk full; the previous version was restored",
                ) from exc
            faults.point("mid-switch")
        self.dirs.switch_out()
        self._sync(self._dirs())
        faults.point("before-switched")
        self._log("switched")
        faults.point("after-switched")

    def undo(self, phase: str) -> None:
        """Restore the exact previous state from whatever ``phase`` was reached.

        Each op is judged by the files themselves; ``phase`` is needed only to tell an
        added file that was switched (S gone, staging complete) from one never staged.
        A backup B exists only once its op was switched, so it is always put back: a
        damaged last journal record, taken for a torn one, must never cost the old file.
        """
        self._quiesce()
        staged_all = PHASES.index(phase) >= PHASES.index("staged") if phase else False
        covered = self.dirs.covered
        for op in reversed(self.plan.ops):
            if op.divert:
                unlink_if_exists(self.diverted(op))
            if op.save:
                self._drop_saved(op)
            if op.i in covered:  # the directory's undo below; a per-file fallback whose
                unlink_if_exists(self._beside(op))  # journal record was lost: its staged file
                continue
            staged, backup, target = self.staged(op), self.backup(op), self.target(op)
            if op.action == "remove":
                if os.path.lexists(backup):
                    os.rename(backup, target)
                continue
            if op.action == "add" and os.path.lexists(staged) and os.path.lexists(target) \
                    and os.path.samefile(staged, target):
                unlink_if_exists(target)  # link() done, unlink() not: the fallback of an add
            if unlink_if_exists(staged):
                unlink_if_exists(backup)  # a link to the unchanged target, if any
                continue
            if op.action == "replace":
                if os.path.lexists(backup):
                    os.rename(backup, target)
            elif staged_all:
                unlink_if_exists(target)
        self.dirs.undo()
        self._sync(self._dirs())
        for rel in reversed(self.plan.mkdirs):
            path = self.layout.under(rel)
            if rmdir_if_empty(path):
                fsync_dir(path.parent)

    def _drop_saved(self, op: Op) -> None:
        """Undo: the admin's file is back in place, so its saved copy goes (with its tmp)."""
        saved = self.saved(op)
        unlink_if_exists(saved.with_name(saved.name + f".{self.tx}.tmp"))
        if unlink_if_exists(saved) or saved.parent.is_dir():
            top = self.layout.saved_dir
            parent = saved.parent
            while parent != top and top in parent.parents and rmdir_if_empty(parent):
                fsync_dir(parent.parent)
                parent = parent.parent

    def finish(self, *, reclaim: bool = False) -> None:
        """After commit: drop backups and leftovers, prune emptied directories.  With
        ``reclaim``, an old tree holding only what the version shipped is handed over to be
        deleted after the command (:mod:`mgr_agent.reclaim`) instead of deleted here."""
        covered = self.dirs.covered
        for op in self.plan.ops:
            if op.action != "add" and op.i not in covered:  # after a complete switch only backups are left
                unlink_if_exists(self.backup(op))
        self.dirs.finish(reclaim=reclaim)
        # below a directory removed whole nothing is left to prune: it was moved away
        inside = tuple(d.path + "/" for d in self.plan.dirs if d.how == "remove")
        for rel in self.plan.prune:
            if not (inside and rel.startswith(inside)):
                rmdir_if_empty(self.layout.under(rel))
        self._sync(self._dirs())
