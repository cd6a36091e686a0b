"""Orchestration of install, uninstall, rollback, recover and the read-only commands.

Each mutating command is one transaction (DESIGN §5): plan, preflight, pre-install
hook, stage, switch, post-install hook, restart and health, commit.  Any failure
after the journal's begin record undoes everything that was done.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mgr_agent import checks, faults, package, preflight, signals
from mgr_agent import config as config_mod
from mgr_agent.errors import (
    AgentError,
    ChecksumMismatch,
    DowngradeRefused,
    Interrupted,
    InvalidPackage,
    LockBusy,
    NotInstalled,
    RecoveryError,
    Refused,
    RolledBack,
    UsageError,
    VerifyFailed,
)
from mgr_agent.findings import errors
from mgr_agent.fsutil import fsync_dir, rmdir_if_empty, sha256_file
from mgr_agent.hooks import HookRun, hook_args, run_hook
from mgr_agent.layout import Layout
from mgr_agent.lock import Lock
from mgr_agent.package import Package
from mgr_agent.panels import Panel, all_panels, serving
from mgr_agent.panels.base import CallAnswer, LogQuery, LogRecord
from mgr_agent.planner import Change, Planner, verify_flags
from mgr_agent.proc import Runner
from mgr_agent.result import Result
from mgr_agent.state import Commit, Installed, KeptRow, State
from mgr_agent.transaction import Plan, Transaction
from mgr_agent.versions import compare, is_hash_version
from mgr_agent.wal import Journal, replay

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def new_tx() -> str:
    return time.strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:6]


def _edits(layout: Layout, change: Change, result: Result, tx: str | None) -> list[str]:
    """Files the admin changed since the agent put them there: each goes into the JSON
    plan with where its content is saved; returns the warnings to give.  Without a
    transaction (a dry run) the warnings are given at once, in the future tense."""
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    for m in change.modified:
        path, then = m["path"], m["then"]
        head = f"{path}: changed on this server since it was installed; "
        if then == "kept":
            rows.append({"path": path, "then": "kept", "saved": None})
            warnings.append(head + "the new version ships the same content as the installed "
                            "one, so your file is left as it is")
            continue
        saved = layout.rel(layout.saved_dir / change.plan.name / (tx or "TX") / path)
        rows.append({"path": path, "then": then, "saved": None if tx is None else saved})
        if tx is None:
            warnings.append(head + f"it would be {then}, your version saved to {saved} "
                            "(TX: the transaction id)")
        else:
            warnings.append(head + f"it was {then}; your version is saved in {saved}")
    if result.plan is not None:
        result.plan["modified"] = rows
    if tx is None:
        result.warnings += warnings
        return []
    return warnings


class Engine:
    """The operations, on one root; the CLI and the daemon call these."""

    def __init__(self, layout: Layout, *, progress: Progress | None = None,
                 lock_wait: float | None = None, restart: bool = True,
                 health_window: float | None = None, actor: str = "cli") -> None:
        self.layout = layout
        self.actor = actor  # who asked: "cli" in-process, "uid U pid P" through the daemon
        self.config = config_mod.load(layout)
        self.panels = all_panels(layout, self.config)
        self.progress = progress or _quiet
        self.lock_wait = self.config.lock_wait if lock_wait is None else lock_wait
        self.runner = Runner(output_limit=self.config.hook_output_limit)
        self.last_recovered: list[dict[str, Any]] = []
        self.restart = restart
        self.health_window = self.config.health_window if health_window is None else health_window

    # ---------------------------------------------------------------- helpers
    def panel(self, name: str) -> Panel:
        for panel in self.panels:
            if panel.name == name:
                return panel
        raise UsageError(f"unknown panel {name!r}")

    @contextmanager
    def _mutating(self, purpose: str) -> Iterator[State]:
        """Take the lock, open the state, finish any interrupted transaction first."""
        lock = Lock(self.layout.lock_file, purpose)
        lock.acquire(self.lock_wait, self.progress)
        try:
            state = State(self.layout.db_file)
            try:
                state.check()
                with state.guard():
                    self._recover(state)
                    yield state
            finally:
                state.close()
        finally:
            lock.release()

    def _interrupted_journals(self) -> bool:
        directory = self.layout.journal_dir
        return directory.is_dir() and any(directory.glob("*.log"))

    @contextmanager
    def _reading(self) -> Iterator[State]:
        """The state for read-only commands; nothing is created on a root without state.

        An interrupted transaction (a journal while nobody holds the lock) is recovered
        first, so that what is read agrees with the files; a running one is left alone.
        """
        if self._interrupted_journals():
            lock = Lock(self.layout.lock_file, "recover")
            try:
                lock.acquire(0)
            except LockBusy:
                pass
            else:
                try:
                    writable = State(self.layout.db_file)
                    try:
                        writable.check()
                        self._recover(writable)
                    finally:
                        writable.close()
                finally:
                    lock.release()
        state = State(self.layout.db_file if self.layout.db_file.exists() else None)
        try:
            state.check()
            with state.guard():
                yield state
        finally:
            state.close()

    def _installed(self, state: State, name: str, panel: str | None) -> Installed:
        found = state.find(name, panel)
        if not found:
            raise NotInstalled(f"{name}: not installed" + (f" ({panel})" if panel else ""), name=name)
        if len(found) > 1:
            raise UsageError(f"{name}: installed for several panels; pass --panel", name=name)
        return found[0]

    def _load(self, path: Path, panel: str | None, sha256: str | None,
              digest: str | None = None) -> Package:
        self.progress(f"reading {path}")
        return package.load(path, self.panels, panel_hint=panel, sha256=sha256,
                            limits=self.config.limits, archive_sha256=digest)

    def _hook_env(self, pkg: Package, action: str, old: Installed | None) -> dict[str, str]:
        return {"MGR_AGENT_PLUGIN": pkg.name, "MGR_AGENT_VERSION": pkg.version,
                "MGR_AGENT_RELEASE": pkg.release, "MGR_AGENT_ACTION": action,
                "MGR_AGENT_OLD_VERSION": old.version if old else "",
                "MGR_AGENT_OLD_RELEASE": old.release if old else ""}

    def _run_hook(self, panel: Panel, pkg: Package, hook: str, args: list[str], tx: str,
                  env: dict[str, str], hooks: list[HookRun], result: Result,
                  force: bool = False) -> None:
        """Run one hook; its failure raises, except a pre-uninstall hook under ``force``,
        whose failure becomes a warning carrying its output."""
        spec = panel.hook(pkg, hook)
        if spec is None:
            return
        self.progress(f"running {hook} hook")
        run = run_hook(panel, pkg, spec, args, runner=self.runner, scratch=self.layout.tmp_dir / tx,
                       timeout=self.config.hook_timeout, env=env)
        hooks.append(run)
        failure = run.failure(pkg.name)
        if failure is None:
            return
        if hook == "pre-uninstall" and force:
            result.warnings.append(f"{failure.message}; removing it anyway (--force)")
            return
        if hook == "pre-uninstall":
            failure.hint = (f"fix what the hook needs, or run `mgr-agent uninstall {pkg.name} "
                            "--force` to remove it anyway: --force skips only a failing or hanging "
                            "pre-uninstall hook (its output becomes a warning); the safety rules "
                            "and the lock still apply")
        raise failure

    def _register(self, panel: Panel, t: Transaction, result: Result, present: bool) -> None:
        """Register the plugin with its panel (or remove the registration), journalled first."""
        if not panel.registers:
            return
        self.progress(f"{'registering' if present else 'unregistering'} {result.name} with "
                      f"{panel.name}")
        t.before_register()
        faults.point("before-register")
        result.notes += panel.register(self.runner, str(result.name), present)
        faults.point("after-register")

    def _register_back(self, panel: Panel, name: str, present: bool, warnings: list[str]) -> None:
        """After putting the files back: the registration as it was (there was a version iff
        ``present``); a failure is a warning, not a new error."""
        try:
            panel.register(self.runner, name, present)
        except AgentError as exc:
            warnings.append(f"putting the {panel.name} registration of {name} back failed: "
                            f"{exc.message}")

    def _restart_quietly(self, panel: Panel, warnings: list[str]) -> list[str]:
        """Restart after putting the old files back; a failure is a warning, not a new error."""
        if not self.restart or not panel.restarts:
            return []
        try:
            return panel.restart(self.runner)
        except AgentError as exc:
            warnings.append(f"restarting the panel after the rollback failed: {exc.message}")
            return []

    def _archive_name(self, pkg: Package) -> str:
        suffix = ".tar" if pkg.source.kind == "tar" else ".zip"
        return pkg.content_hash + suffix

    def _store_archive(self, pkg: Package) -> None:
        """Keep the package itself in the state dir: uninstall hooks and rollback use it."""
        dest = self.layout.archives_dir / self._archive_name(pkg)
        if dest.exists():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        if pkg.source.kind == "dir":
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                for name, entry in sorted(pkg.source.entries.items()):
                    info = zipfile.ZipInfo(name)
                    info.external_attr = (0o100000 | entry.mode) << 16
                    info.create_system = 3
                    info.compress_type = zipfile.ZIP_DEFLATED
                    with zf.open(info, "w") as out:
                        for chunk in pkg.source.chunks(name):
                            out.write(chunk)
        else:
            shutil.copyfile(pkg.source.path, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)

    def _gc(self, state: State) -> None:
        """Remove what no committed state refers to: scratch dirs, archives, diverted copies."""
        if self.layout.tmp_dir.is_dir():
            for child in self.layout.tmp_dir.iterdir():
                shutil.rmtree(child, ignore_errors=True)
        referenced = state.referenced_archives()
        if self.layout.archives_dir.is_dir():
            for child in self.layout.archives_dir.iterdir():
                if child.name not in referenced:
                    child.unlink(missing_ok=True)
        top = self.layout.diverted_dir
        if top.is_dir():
            keep = set(state.diversions().values())
            for dirpath, _, filenames in os.walk(top, topdown=False):
                for f in filenames:
                    path = Path(dirpath) / f
                    if path.relative_to(top).as_posix() not in keep:
                        path.unlink(missing_ok=True)
                if Path(dirpath) != top:
                    rmdir_if_empty(Path(dirpath))

    # ---------------------------------------------------------------- the transaction
    def _execute(
        self, state: State, *, op: str, panel: Panel, pkg: Package | None, installed: Installed | None,
        change: Change, tx: str, result: Result, pre_hook: str | None, post_hook: str | None,
        hook_pkg: Package | None, hook_argv: list[str], commit: Commit, edits: list[str],
        force: bool = False,
    ) -> Result:
        """Run steps 3-8 for a prepared change; undo on any failure after begin.  ``edits``
        (warnings about the admin's edited files) are given once the change succeeded."""
        started = time.time()
        journal = Journal(self.layout.journal_dir, tx)
        t = Transaction(self.layout, tx, change.plan, journal, durability=self.config.durability)
        hooks: list[HookRun] = []
        env = self._hook_env(hook_pkg, op, installed) if hook_pkg else {}
        history: dict[str, Any] = {"op": op, "from_version": installed.label if installed else None,
                                   "to_version": pkg.label if pkg else None, "started": started}
        try:
            t.begin({"op": op, "panel": panel.name, "name": result.name,
                     "from_version": history["from_version"], "to_version": history["to_version"],
                     "started": started, "actor": self.actor})
            if pre_hook and hook_pkg:
                self._run_hook(panel, hook_pkg, pre_hook, hook_argv, tx, env, hooks, result, force)
            faults.point("after-pre-hook")
            if pkg is None:  # removal: the registration goes before the files (Plesk's order)
                self._register(panel, t, result, False)
            counts = change.plan.summary()
            staged = counts["add"] + counts["replace"]
            if staged:
                self.progress(f"staging {staged} file(s)")
            t.stage([lambda: self._store_archive(pkg)] if pkg else [])
            self.progress("switching files into place" if staged else
                          f"removing {counts['remove']} file(s)")
            restart = self.restart and panel.restarts
            mark = panel.mark() if restart else None
            t.switch()
            if pkg is not None:  # the files are in place: the panel may list the plugin
                self._register(panel, t, result, True)
            if post_hook and hook_pkg:
                self._run_hook(panel, hook_pkg, post_hook, hook_argv, tx, env, hooks, result)
            faults.point("after-post-hook")
            if restart:
                self.progress("restarting the panel")
                result.notes += panel.restart(self.runner)
                if pkg is not None:
                    if mark is not None and self.health_window > 0:
                        self.progress(f"watching the panel for {self.health_window:g} s")
                    result.notes += panel.health(pkg, mark, self.health_window)
            faults.point("before-commit")
            result.warnings += edits
        except BaseException as exc:
            with signals.held():
                return self._undo(exc, state, journal, t, panel, installed, result, hooks, history, tx, op)
        try:
            with signals.held():  # commit and cleanup run to the end; a signal waits for them
                commit.history = {**history, "action": result.action, "detail": {
                    "hooks": [h.to_dict() for h in hooks], "warnings": result.warnings,
                    "plan": change.plan.summary(), "actor": self.actor}}
                try:
                    state.commit(commit)
                except BaseException as exc:
                    return self._undo(exc, state, journal, t, panel, installed, result, hooks, history,
                                      tx, op)
                faults.point("after-commit")
                if panel.loads_note:
                    result.notes.append(panel.loads_note)
                self.progress("committed; cleaning up")
                try:
                    t.finish()
                    journal.remove()
                    self._gc(state)
                except OSError as exc:
                    journal.close()
                    result.warnings.append(f"committed, but cleaning up failed ({exc}); the next "
                                           "mgr-agent command finishes it")
        except Interrupted as exc:
            result.notes.append(f"{exc.message} after the commit; the transaction completed first")
        result.hooks = [h.to_dict() for h in hooks]
        result.tx = tx
        return result

    def _undo(self, exc: BaseException, state: State, journal: Journal, t: Transaction, panel: Panel,
              installed: Installed | None, result: Result, hooks: list[HookRun],
              history: dict[str, Any], tx: str, op: str) -> Result:
        """Restore the previous state after ``exc`` and describe the failure."""
        phase = journal.phase
        err = exc if isinstance(exc, AgentError) else (
            Interrupted(f"interrupted by {exc.__class__.__name__}")
            if isinstance(exc, KeyboardInterrupt | Interrupted) else
            AgentError(f"{exc.__class__.__name__}: {exc}"))
        self.progress(f"failed ({err.code}); restoring the previous state")
        try:
            t.undo(phase)
        except OSError as undo_exc:
            journal.close()
            raise RecoveryError(
                f"{err.message}; then restoring the previous state failed: {undo_exc}",
                hint="fix the cause (space, permissions, mounts) and run `mgr-agent recover`; "
                     f"the journal {journal.path} is kept", cause_code=err.code) from undo_exc
        if journal.registered:
            self._register_back(panel, str(result.name), installed is not None, result.warnings)
        if phase in ("switching", "switched"):
            result.notes += self._restart_quietly(panel, result.warnings)
        journal.remove()
        self._gc(state)
        for row in (result.plan or {}).get("modified", []):
            row["saved"] = None  # the admin's files are back in place; nothing was saved
        changed_files = phase in ("switching", "switched")
        final: AgentError = err
        if changed_files and not isinstance(err, Interrupted):
            final = RolledBack(
                f"{err.message} — rolled back to "
                f"{installed.label if installed else 'nothing installed'}",
                cause=err, hint=err.hint, cause_code=err.code, **err.details)
        state.record(tx, op, "rolled_back" if changed_files else "failed",
                     "rolled_back" if changed_files else "failed", panel.name, result.name,
                     history["from_version"], history["to_version"], history["started"],
                     {"hooks": [h.to_dict() for h in hooks], "error": final.to_dict(),
                      "warnings": result.warnings, "actor": self.actor})
        result.action = "rolled_back" if changed_files else "failed"
        result.changed = False
        result.hooks = [h.to_dict() for h in hooks]
        result.error = final
        result.tx = tx
        if not isinstance(exc, Exception | Interrupted):
            raise exc
        return result


    # ---------------------------------------------------------------- commands
    def install(
        self, path: Path, *, panel: str | None = None, sha256: str | None = None,
        dry_run: bool = False, allow_downgrade: bool = False, reinstall: bool = False,
        op: str = "install", strict: bool = False,
    ) -> Result:
        digest = sha256_file(path) if path.is_file() else None
        if digest is not None and not reinstall and self.layout.db_file.exists():
            same = self._same_archive(digest, panel, sha256)
            if same is not None:
                return same
        pkg = self._load(path, panel, sha256, digest)
        try:
            return self._install(pkg, dry_run=dry_run, allow_downgrade=allow_downgrade,
                                 reinstall=reinstall, op=op, strict=strict)
        except AgentError as exc:
            exc.subject = (pkg.name, pkg.panel)
            raise
        finally:
            pkg.close()

    def _same_archive(self, digest: str, panel: str | None, sha256: str | None) -> Result | None:
        """``unchanged`` without reading the package when this very archive is installed."""
        if sha256 is not None and digest != sha256.lower():
            return None  # the full load reports the mismatch
        with self._reading() as state:
            found = state.by_archive(digest)
        if found is None or (panel is not None and found.panel != panel):
            return None
        return Result(action="unchanged", name=found.name, panel=found.panel, version=found.label,
                      previous_version=found.label)

    def _install(self, pkg: Package, *, dry_run: bool, allow_downgrade: bool, reinstall: bool,
                 op: str, strict: bool = False) -> Result:
        panel = self.panel(pkg.panel)
        compatible = panel.check_compatible(pkg)
        if op != "rollback":  # the kept archive was checked when it was installed
            _, pkg.warnings = checks.validate(pkg, panel, self._check_context(), strict=strict)
        result = Result(action="planned", name=pkg.name, panel=pkg.panel, version=pkg.label,
                        warnings=list(pkg.warnings), notes=package.skip_notes(pkg))
        result.warnings += compatible
        fresh: Change | None = None
        if not self.layout.db_file.exists():
            # Nothing is installed on this root yet: find refusals (planted links, space,
            # read-only targets) before the lock and the state database are created.
            empty = State(None)
            try:
                change = fresh = Planner(self.layout, empty, panel).install(pkg, None,
                                                                            reinstall=reinstall)
                self._preflight(pkg, change)
            finally:
                empty.close()
            if dry_run:
                result.warnings += change.warnings
                result.plan = self._plan_json(change.plan, pkg)
                return result
        with self._mutating(f"{op} {pkg.name}") as state:
            found = state.find(pkg.name, pkg.panel)
            installed = found[0] if found else None
            result.previous_version = installed.label if installed else None
            if installed and installed.content_hash == pkg.content_hash and not reinstall:
                result.action = "unchanged"
                return result
            if installed and not allow_downgrade and not (
                    is_hash_version(pkg.version) or is_hash_version(installed.version)):
                order = compare(pkg.version, installed.version) or compare(pkg.release, installed.release)
                if order < 0:
                    raise DowngradeRefused(
                        f"{pkg.name}: {pkg.label} is older than the installed {installed.label}",
                        installed=installed.label, offered=pkg.label)
            if fresh is not None and not state.packages() and not state.diversions():
                change = fresh  # still nothing installed: the plan made before the lock holds
            else:
                change = Planner(self.layout, state, panel).install(pkg, installed, reinstall=reinstall)
                self._preflight(pkg, change)
            result.warnings += change.warnings
            result.plan = self._plan_json(change.plan, pkg)
            if dry_run:
                _edits(self.layout, change, result, None)
                return result
            upgrading = installed is not None
            result.action = {"rollback": "rolled_back"}.get(op, "upgraded" if upgrading else "installed")
            result.changed = True
            now = time.time()
            tx = new_tx()
            edits = _edits(self.layout, change, result, tx)
            commit = Commit(
                tx=tx, panel=pkg.panel, name=pkg.name,
                package=Installed(pkg.panel, pkg.name, pkg.version, pkg.release, pkg.content_hash,
                                  self._archive_name(pkg), now, tx, pkg.meta, pkg.archive_sha256),
                files=change.files, dirs=change.dirs, diversions_add=change.divert_add,
                diversions_drop=change.divert_drop,
                keep_previous=self._kept_row(installed, now, tx)
                if installed and installed.content_hash != pkg.content_hash else None,
                drop_kept_hash=pkg.content_hash, keep_versions=self.config.keep_versions, history={},
            )
            args = hook_args((installed.version, installed.release) if installed else None)
            return self._execute(state, op=op, panel=panel, pkg=pkg, installed=installed,
                                 change=change, tx=tx, result=result, pre_hook="pre-install",
                                 post_hook="post-install", hook_pkg=pkg, hook_argv=args, commit=commit,
                                 edits=edits)

    def uninstall(self, name: str, *, panel: str | None = None, purge: bool = False,
                  dry_run: bool = False, force: bool = False) -> Result:
        with self._mutating(f"uninstall {name}") as state:
            installed = self._installed(state, name, panel)
            p = self.panel(installed.panel)
            result = Result(action="planned", name=name, panel=installed.panel,
                            version=None, previous_version=installed.label)
            change = Planner(self.layout, state, p).uninstall(installed, purge=purge)
            result.warnings += change.warnings
            result.plan = self._plan_json(change.plan)
            result.plan["left"] = change.left
            preflight.check(self.layout, change.plan, {}, 0, self.config.free_space_margin)
            if dry_run:
                _edits(self.layout, change, result, None)
                return result
            hook_pkg: Package | None = None
            archive = self.layout.archives_dir / installed.archive
            if archive.exists():  # verified when it was installed: not hashed again
                try:
                    hook_pkg = package.load(archive, self.panels, panel_hint=installed.panel,
                                            limits=self.config.limits, verify=False)
                except AgentError as exc:
                    if not force:
                        exc.hint = (exc.hint + "; " if exc.hint else "") + (
                            f"`mgr-agent uninstall {name} --force` removes it without running its "
                            "pre-uninstall hook")
                        raise
                    result.warnings.append(f"{archive}: cannot be read ({exc.message}); the "
                                           "pre-uninstall hook was not run (--force)")
            else:
                result.warnings.append(f"{archive}: missing; the pre-uninstall hook was not run")
            try:
                result.action, result.changed = "removed", True
                tx = new_tx()
                edits = _edits(self.layout, change, result, tx)
                commit = Commit(tx=tx, panel=installed.panel, name=name, package=None, files=[],
                                dirs=[], diversions_add={}, diversions_drop=change.divert_drop,
                                keep_previous=None, drop_kept_hash=None,
                                keep_versions=self.config.keep_versions, history={})
                return self._execute(state, op="uninstall", panel=p, pkg=None, installed=installed,
                                     change=change, tx=tx, result=result, pre_hook="pre-uninstall",
                                     post_hook=None, hook_pkg=hook_pkg, hook_argv=["uninstall"],
                                     commit=commit, edits=edits, force=force)
            finally:
                if hook_pkg is not None:
                    hook_pkg.close()

    def rollback(self, name: str, *, panel: str | None = None) -> Result:
        """Reinstall the version kept from before the last upgrade."""
        with self._reading() as state:
            installed = self._installed(state, name, panel)
            kept = state.kept(installed.panel, installed.name)
        if not kept:
            raise NotInstalled(f"{name}: no previous version is kept to roll back to",
                               hint="versions are kept from upgrades; see [state] keep_versions")
        archive = self.layout.archives_dir / kept[0].archive
        return self.install(archive, panel=installed.panel, allow_downgrade=True, op="rollback")

    def recover(self) -> Result:
        with self._mutating("recover"):
            changed = any(t["outcome"] != "discarded" for t in self.last_recovered)
            return Result(action="recovered", changed=changed,
                          data={"transactions": self.last_recovered})

    def _recover(self, state: State) -> None:
        """Finish committed or undo uncommitted transactions left by a crash; idempotent."""
        done: list[dict[str, Any]] = []
        directory = self.layout.journal_dir
        for path in sorted(directory.glob("*.log")) if directory.is_dir() else []:
            rep = replay(path)
            if rep.begin is None:
                path.unlink()
                done.append({"tx": rep.tx, "outcome": "discarded", "found": rep.torn or "empty journal"})
                continue
            plan = Plan.from_record(rep.begin["plan"])
            t = Transaction(self.layout, rep.tx, plan, durability=self.config.durability)
            panel = self.panel(rep.begin["panel"])
            try:
                committed = state.is_committed(rep.tx)
                if committed:
                    t.finish()
                else:
                    t.undo(rep.phase)
                    if rep.registered:
                        name = str(rep.begin.get("name"))
                        panel.register(self.runner, name, bool(state.find(name, panel.name)))
            except (OSError, AgentError) as exc:
                raise RecoveryError(
                    f"cannot recover transaction {rep.tx} ({rep.begin['op']} "
                    f"{rep.begin.get('name')}): {exc}",
                    hint="fix the cause (a read-only mount, a full disk, permissions) and run "
                         "`mgr-agent recover` again; the journal is kept", path=str(path)) from exc
            if committed:
                outcome = "completed"
            else:
                if rep.phase in ("switching", "switched"):
                    self._restart_quietly(panel, [])
                state.record(rep.tx, rep.begin["op"], "rolled_back_by_recovery", "rolled_back",
                             panel.name, rep.begin.get("name"), rep.begin.get("from_version"),
                             rep.begin.get("to_version"), rep.begin.get("started", time.time()),
                             {"phase": rep.phase, "torn": rep.torn,
                              "actor": rep.begin.get("actor", ""), "recovered_by": self.actor})
                outcome = "rolled back"
            path.unlink()
            fsync_dir(directory)
            entry = {"tx": rep.tx, "op": rep.begin["op"], "name": rep.begin.get("name"),
                     "phase": rep.phase, "outcome": outcome}
            if rep.torn:
                entry["found"] = rep.torn
            done.append(entry)
            self.progress(f"recovered interrupted {rep.begin['op']} of {rep.begin.get('name')}: "
                          f"{outcome}")
        self._gc(state)
        self.last_recovered = done

    def plugin_log_names(self, name: str) -> set[str]:
        """Names by which the panel log mentions a plugin: an installed one's handlers and
        funcs too, else just its name (e.g. after a rolled-back install)."""
        panel = serving(self.panels, "logs")
        with self._reading() as state:
            found = state.find(name, panel.name)
        return panel.log_names(found[0].name, found[0].meta) if found else {name}

    def logs(self, query: LogQuery, plugin: str | None = None, *,
             stop: threading.Event | None = None) -> Iterator[LogRecord]:
        """``mgr-agent logs``: the panel log's records (``plugin``: only those naming it)."""
        if plugin:
            query = dataclasses.replace(query, plugin_names=frozenset(self.plugin_log_names(plugin)))
        return serving(self.panels, "logs").log(query, stop=stop)

    def call(self, func: str, params: dict[str, str], *, user: str, lang: str,
             input_path: Path | None, timeout: float) -> CallAnswer:
        """``mgr-agent call``: the panel's handler chain of ``func``, run and judged."""
        return serving(self.panels, "call").call(func, params, user=user, lang=lang,
                                                 input_path=input_path, timeout=timeout)

    def restart_core(self) -> Result:
        """Restart the panels' cores on their own (``mgr-agent restart-core``)."""
        with self._mutating("restart-core"):
            notes: list[str] = []
            for panel in self.panels:
                said = panel.restart(self.runner) if panel.restarts else [panel.loads_note or ""]
                notes += [f"{panel.name}: {n}" for n in said if n]
        return Result(action="restarted", changed=True, notes=notes)

    def debug(self, module: str | None, level: int | None, *, off: bool) -> Result:
        """Set (or with ``off`` restore) a log level of the panel (ispmanager's etc/debug.conf)."""
        panel = serving(self.panels, "debug")
        with self._mutating("debug"):
            changes = panel.debug(module, level, off=off)
            notes = list(changes)
            if changes and self.restart:
                notes += panel.restart(self.runner)
        return Result(action="debug", changed=bool(changes), panel=panel.name, notes=notes)

    def _check_context(self) -> checks.Context:
        return checks.context(self.layout, self.config, self.runner)

    def check(self, path: Path, *, panel: str | None = None, sha256: str | None = None,
              strict: bool = False) -> Result:
        """Every finding of the validators (docs/check.md); an error result when the package
        would be refused (with ``strict``, on warnings too)."""
        ctx = self._check_context()
        try:
            pkg = self._load(path, panel, sha256)
        except (InvalidPackage, Refused) as exc:
            if isinstance(exc, ChecksumMismatch):
                raise
            if exc.hint == InvalidPackage.default_hint:  # it would say "run check"
                exc.hint = "fix the package and check it again"
            kind, found = checks.inspect(path, self.panels, ctx, panel_hint=panel,
                                         limits=self.config.limits)
            return Result(action="checked", panel=kind, warnings=checks.warning_texts(found),
                          error=exc, data={"findings": [f.to_dict() for f in found],
                                           "notes": ctx.notes})
        try:
            checker = self.panel(pkg.panel)
            found = checks.run(checks.files_of(pkg, checker), checker, ctx)
            warnings = checks.merge_warnings(pkg.warnings, found)
            bad = errors(found, strict=strict)
            error: AgentError | None = checks.refusal(bad, strict=strict) if bad else None
            try:  # this server's panel (version bounds) after what is wrong everywhere
                warnings += self.panel(pkg.panel).check_compatible(pkg)
            except Refused as exc:
                error = error or exc
            hooks = sorted(pkg.hooks)
            return Result(action="checked", name=pkg.name, panel=pkg.panel, version=pkg.label,
                          warnings=warnings, error=error, notes=package.skip_notes(pkg) + ctx.notes,
                          data={"files": len(pkg.files), "hooks": hooks,
                                "skipped": package.skipped_json(pkg),
                                "content_hash": pkg.content_hash,
                                "archive_sha256": pkg.archive_sha256 or None, "meta": pkg.meta,
                                "findings": [f.to_dict() for f in found], "notes": ctx.notes})
        finally:
            pkg.close()

    def list(self) -> Result:
        with self._reading() as state:
            counts = state.file_counts()
            rows = [{"name": p.name, "panel": p.panel, "version": p.label,
                     "installed_at": p.installed_at,
                     "files": counts.get((p.panel, p.name), 0)} for p in state.packages()]
        return Result(action="listed", data=rows)

    def info(self, name: str, *, panel: str | None = None) -> Result:
        with self._reading() as state:
            p = self._installed(state, name, panel)
            files = state.files(p.panel, p.name)
            data = {
                "version": p.version, "release": p.release, "content_hash": p.content_hash,
                "installed_at": p.installed_at, "tx": p.tx, "meta": p.meta,
                "files": [{"path": f.path, "sha256": f.sha256, "size": f.size,
                           "mode": f"{f.mode:04o}", "kind": f.kind,
                           "flags": verify_flags(self.layout, f)} for f in files.values()],
                "diversions": sorted(state.diversions(p.panel, p.name)),
                "kept": [{"version": k.version, "release": k.release, "kept_at": k.kept_at}
                         for k in state.kept(p.panel, p.name)],
            }
        return Result(action="info", name=p.name, panel=p.panel, version=p.label, data=data)

    def verify(self, name: str | None = None, *, panel: str | None = None) -> Result:
        """Installed files whose content, mode or presence differs from the manifest."""
        with self._reading() as state:
            chosen = [self._installed(state, name, panel)] if name else state.packages()
            found: list[dict[str, Any]] = []
            checked = 0
            for p in chosen:
                for row in sorted(state.files(p.panel, p.name).values(), key=lambda r: r.path):
                    checked += 1
                    flags = verify_flags(self.layout, row)
                    if flags:
                        found.append({"name": p.name, "panel": p.panel, "path": row.path,
                                      "flags": flags})
        result = Result(action="verified", name=name, panel=chosen[0].panel if name else None,
                        data={"checked": checked, "packages": len(chosen), "files": found})
        if found:
            result.error = VerifyFailed(
                f"{len(found)} of {checked} installed file(s) differ from what the agent installed",
                hint="an upgrade or uninstall saves edited files under var/lib/mgr-agent/saved/; "
                     "`mgr-agent install --reinstall PACKAGE` puts the shipped files back")
        return result

    def history(self, name: str | None = None, limit: int = 100) -> Result:
        with self._reading() as state:
            return Result(action="history", name=name, data=state.history(name, limit))

    def _preflight(self, pkg: Package, change: Change) -> None:
        stored = self.layout.archives_dir / self._archive_name(pkg)
        archive_bytes = 0 if stored.exists() else sum(e.size for e in pkg.source.entries.values())
        preflight.check(self.layout, change.plan, {t: s.size for t, s in pkg.files.items()},
                        archive_bytes, self.config.free_space_margin)

    @staticmethod
    def _kept_row(installed: Installed, now: float, tx: str) -> KeptRow:
        return KeptRow(installed.panel, installed.name, installed.version, installed.release,
                       installed.content_hash, installed.archive, now, tx)

    @staticmethod
    def _plan_json(plan: Plan, pkg: Package | None = None) -> dict[str, Any]:
        out = {"summary": plan.summary(),
               "add": [o.path for o in plan.ops if o.action == "add"],
               "replace": [o.path for o in plan.ops if o.action == "replace"],
               "remove": [o.path for o in plan.ops if o.action == "remove"],
               "kept": plan.kept, "modified": []}
        if pkg is not None:
            out["skipped"] = package.skipped_json(pkg)
        return out
