"""The transaction runner: steps 3-8 of a prepared change, and their undo (DESIGN §5).

A :class:`Job` is one prepared change — what the plan does, whose hooks run, what the
commit writes; :func:`run` begins the journal, runs the pre-hook, stages, switches,
registers, runs the post-hook, restarts and watches the panel, and commits.  Any
failure after the journal's begin record undoes everything that was done.  The JSON
shape of a plan (``plan_json``, ``describe_edits``) lives here too.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Any

from mgr_agent import faults, hashing, package, reclaim, signals
from mgr_agent.context import EngineContext
from mgr_agent.errors import AgentError, Interrupted, RecoveryError, RolledBack
from mgr_agent.hooks import HookRun, run_hook
from mgr_agent.layout import Layout
from mgr_agent.package import Package
from mgr_agent.panels import Panel
from mgr_agent.plan import Plan
from mgr_agent.planner import Change
from mgr_agent.result import Result
from mgr_agent.retained import Retention
from mgr_agent.state import Commit, Installed, State
from mgr_agent.store import collect_garbage, store_archive
from mgr_agent.transaction import Transaction
from mgr_agent.wal import Journal


def new_tx() -> str:
    """A transaction id: the time, then six random hex digits (``os.urandom``, as
    ``secrets.token_hex`` does, without loading ``random``; ``uuid`` would load ``platform``)."""
    return time.strftime("%Y%m%d%H%M%S") + os.urandom(3).hex()


@dataclass
class Job:
    """One prepared change: everything the steps need besides the engine's context."""

    op: str
    """install, uninstall or rollback: the history's and the hooks' action."""
    panel: Panel
    change: Change
    tx: str
    result: Result
    """Filled in as the steps run; returned."""
    commit: Commit
    """What the commit point writes (its ``history`` is completed by the steps)."""
    installed: Installed | None = None
    """The version installed before, if any."""
    pkg: Package | None = None
    """The package put in place; None for a removal."""
    hook_pkg: Package | None = None
    """The package whose hooks run: ``pkg``, or on uninstall the installed version's."""
    pre_hook: str | None = None
    post_hook: str | None = None
    hook_argv: list[str] = field(default_factory=list)
    edits: list[str] = field(default_factory=list)
    """Warnings about the admin's edited files, given once the change succeeded."""
    force: bool = False
    """A failing pre-uninstall hook becomes a warning."""


def _retention(layout: Layout, job: Job) -> Retention | None:
    """The retained trees the job may stage from (its package's) and keep after its commit
    (the replaced version's, when that is retained): :mod:`mgr_agent.retained`."""
    if not job.change.plan.dirs or job.pkg is None:
        return None
    previous = job.commit.retain_previous if job.commit.retain_versions > 0 else None
    return Retention(layout, take_hash=job.pkg.content_hash, new_rows=dict(job.change.files),
                     keep_hash=previous.content_hash if previous else None,
                     old_rows=job.change.previous,
                     keep_archive=job.installed.archive_sha if job.installed else "")


def hook_env(pkg: Package, action: str, old: Installed | None) -> dict[str, str]:
    return {"MGR_AGENT_PLUGIN": pkg.name, "MGR_AGENT_VERSION": pkg.version,
            "MGR_AGENT_RELEASE": pkg.release, "MGR_AGENT_ACTION": action,
            "MGR_AGENT_OLD_VERSION": old.version if old else "",
            "MGR_AGENT_OLD_RELEASE": old.release if old else ""}


def run(ctx: EngineContext, state: State, job: Job) -> Result:
    """Run the steps of ``job`` under the lock; undo on any failure after begin."""
    return _Run(ctx, state, job).run()


class _Run:
    """One run of a job: the transaction, its journal and the hooks that ran."""

    def __init__(self, ctx: EngineContext, state: State, job: Job) -> None:
        self.ctx, self.state, self.job = ctx, state, job
        self.started = time.time()
        self.journal = Journal(ctx.layout.journal_dir, job.tx)
        self.transaction = Transaction(
            ctx.layout, job.tx, job.change.plan, self.journal, durability=ctx.config.durability,
            workers=None if job.pkg is None or hashing.parallel_reads(job.pkg.source) else 1,
            retention=_retention(ctx.layout, job))
        self.hooks: list[HookRun] = []
        self.env = hook_env(job.hook_pkg, job.op, job.installed) if job.hook_pkg else {}
        self.from_version = job.installed.label if job.installed else None
        self.to_version = job.pkg.label if job.pkg else None

    def run(self) -> Result:
        try:
            self._steps()
        except BaseException as exc:
            with signals.held():
                return self._undo(exc)
        result = self.job.result
        try:
            with signals.held():  # commit and cleanup run to the end; a signal waits for them
                failed = self._commit()
                if failed is not None:
                    return failed
        except Interrupted as exc:
            result.notes.append(f"{exc.message} after the commit; the transaction completed first")
        result.hooks = [h.to_dict() for h in self.hooks]
        result.tx = self.job.tx
        return result

    def _steps(self) -> None:
        ctx, job, transaction, panel, pkg = (self.ctx, self.job, self.transaction, self.job.panel,
                                             self.job.pkg)
        result = job.result
        transaction.begin({"op": job.op, "panel": panel.name, "name": result.name,
                           "from_version": self.from_version, "to_version": self.to_version,
                           "started": self.started, "actor": ctx.actor})
        if pkg is not None:  # alongside the hooks and the staging: joined before `staged`
            transaction.alongside(lambda: store_archive(ctx.layout, pkg))
        if job.pre_hook:
            self._run_hook(job.pre_hook, job.force)
        faults.point("after-pre-hook")
        if pkg is None:  # removal: the registration goes before the files (Plesk's order)
            self._register(False)
        counts = job.change.plan.summary()
        staged = counts["add"] + counts["replace"]
        if staged:
            ctx.progress(f"staging {staged} file(s)")
        transaction.stage()
        job.commit.files = job.change.stamp(transaction.written)
        ctx.progress("switching files into place" if staged else
                     f"removing {counts['remove']} file(s)")
        restart = ctx.restart and panel.restarts
        mark = panel.mark() if restart else None
        transaction.switch()
        if pkg is not None:  # the files are in place: the panel may list the plugin
            self._register(True)
        if job.post_hook:
            self._run_hook(job.post_hook)
        faults.point("after-post-hook")
        if restart:
            ctx.progress("restarting the panel")
            result.notes += panel.restart(ctx.runner)
            if pkg is not None:
                if mark is not None and ctx.health_window > 0:
                    ctx.progress(f"watching the panel for {ctx.health_window:g} s")
                result.notes += panel.health(pkg, mark, ctx.health_window)
        faults.point("before-commit")
        result.warnings += job.edits

    def _history(self) -> dict[str, Any]:
        return {"op": self.job.op, "from_version": self.from_version,
                "to_version": self.to_version, "started": self.started}

    def _commit(self) -> Result | None:
        """The commit point and the cleanup after it; the undone result if the commit failed."""
        ctx, job, result = self.ctx, self.job, self.job.result
        job.commit.history = {**self._history(), "action": result.action, "detail": {
            "hooks": [h.to_dict() for h in self.hooks], "warnings": result.warnings,
            "plan": job.change.plan.summary(), "actor": ctx.actor}}
        try:
            if job.pkg is not None and job.commit.package is not None:  # hashed alongside
                job.commit.package = replace(job.commit.package,
                                             archive_sha=job.pkg.archive_digest())
            self.state.commit(job.commit)
        except BaseException as exc:
            return self._undo(exc)
        faults.point("after-commit")
        if job.panel.loads_note:
            result.notes.append(job.panel.loads_note)
        ctx.progress("committed; cleaning up")
        try:
            self.transaction.finish(reclaim=True)
            self.journal.remove()
            collect_garbage(ctx.layout, self.state, later=True)
            faults.point("before-reclaimer")
            reclaim.start(ctx.runner, ctx.layout)
        except OSError as exc:
            self.journal.close()
            result.warnings.append(f"committed, but cleaning up failed ({exc}); the next "
                                   "mgr-agent command finishes it")
        return None

    def _undo(self, exc: BaseException) -> Result:
        """Restore the previous state after ``exc`` and describe the failure."""
        ctx, job, journal, result = self.ctx, self.job, self.journal, self.job.result
        phase = journal.phase
        err = exc if isinstance(exc, AgentError) else (
            Interrupted(f"interrupted by {exc.__class__.__name__}")
            if isinstance(exc, KeyboardInterrupt | Interrupted) else
            AgentError(f"{exc.__class__.__name__}: {exc}"))
        ctx.progress(f"failed ({err.code}); restoring the previous state")
        try:
            self.transaction.undo(phase)
        except OSError as undo_exc:
            journal.close()
            raise RecoveryError(
                f"{err.message}; then restoring the previous state failed: {undo_exc}",
                hint="fix the cause (space, permissions, mounts) and run `mgr-agent recover`; "
                     f"the journal {journal.path} is kept", cause_code=err.code) from undo_exc
        if journal.registered:
            register_back(ctx, job.panel, str(result.name), job.installed is not None,
                          result.warnings)
        if phase in ("switching", "switched"):
            result.notes += restart_quietly(ctx, job.panel, result.warnings)
        journal.remove()
        collect_garbage(ctx.layout, self.state)
        for row in (result.plan or {}).get("modified", []):
            row["saved"] = None  # the admin's files are back in place; nothing was saved
        changed_files = phase in ("switching", "switched")
        final: AgentError = err
        if changed_files and not isinstance(err, Interrupted):
            final = RolledBack(
                f"{err.message} — rolled back to "
                f"{job.installed.label if job.installed else 'nothing installed'}",
                cause=err, hint=err.hint, cause_code=err.code, **err.details)
        self.state.record(job.tx, job.op, "rolled_back" if changed_files else "failed",
                          "rolled_back" if changed_files else "failed", job.panel.name,
                          result.name, self.from_version, self.to_version, self.started,
                          {"hooks": [h.to_dict() for h in self.hooks], "error": final.to_dict(),
                           "warnings": result.warnings, "actor": ctx.actor})
        result.action = "rolled_back" if changed_files else "failed"
        result.changed = False
        result.hooks = [h.to_dict() for h in self.hooks]
        result.error = final
        result.tx = job.tx
        if not isinstance(exc, Exception | Interrupted):
            raise exc
        return result

    def _run_hook(self, hook: str, force: bool = False) -> None:
        """Run one hook; its failure raises, except a pre-uninstall hook under ``force``,
        whose failure becomes a warning carrying its output."""
        ctx, job = self.ctx, self.job
        pkg = job.hook_pkg
        spec = job.panel.hook(pkg, hook) if pkg is not None else None
        if pkg is None or spec is None:
            return
        ctx.progress(f"running {hook} hook")
        hook_run = run_hook(job.panel, pkg, spec, job.hook_argv, runner=ctx.runner,
                            scratch=ctx.layout.tmp_dir / job.tx,
                            timeout=ctx.config.hook_timeout, env=self.env)
        self.hooks.append(hook_run)
        failure = hook_run.failure(pkg.name)
        if failure is None:
            return
        if hook == "pre-uninstall" and force:
            job.result.warnings.append(f"{failure.message}; removing it anyway (--force)")
            return
        if hook == "pre-uninstall":
            failure.hint = (f"fix what the hook needs, or run `mgr-agent uninstall {pkg.name} "
                            "--force` to remove it anyway: --force skips only a failing or hanging "
                            "pre-uninstall hook (its output becomes a warning); the safety rules "
                            "and the lock still apply")
        raise failure

    def _register(self, present: bool) -> None:
        """Register the plugin with its panel (or remove the registration), journalled first."""
        ctx, panel, result = self.ctx, self.job.panel, self.job.result
        if not panel.registers:
            return
        ctx.progress(f"{'registering' if present else 'unregistering'} {result.name} with "
                     f"{panel.name}")
        self.transaction.before_register()
        faults.point("before-register")
        result.notes += panel.register(ctx.runner, str(result.name), present)
        faults.point("after-register")


def register_back(ctx: EngineContext, panel: Panel, name: str, present: bool,
                  warnings: list[str]) -> None:
    """After putting the files back: the registration as it was (there was a version iff
    ``present``); a failure is a warning, not a new error."""
    try:
        panel.register(ctx.runner, name, present)
    except AgentError as exc:
        warnings.append(f"putting the {panel.name} registration of {name} back failed: "
                        f"{exc.message}")


def restart_quietly(ctx: EngineContext, panel: Panel, warnings: list[str]) -> list[str]:
    """Restart after putting the old files back; a failure is a warning, not a new error."""
    if not ctx.restart or not panel.restarts:
        return []
    try:
        return panel.restart(ctx.runner)
    except AgentError as exc:
        warnings.append(f"restarting the panel after the rollback failed: {exc.message}")
        return []


# ---------------------------------------------------------------- how a plan is shown
def plan_json(plan: Plan, pkg: Package | None = None) -> dict[str, Any]:
    """The ``plan`` of a result: file lists by action (``modified`` is filled by
    :func:`describe_edits`, ``skipped`` from the package)."""
    out = {"summary": plan.summary(),
           "add": [o.path for o in plan.ops if o.action == "add"],
           "replace": [o.path for o in plan.ops if o.action == "replace"],
           "remove": [o.path for o in plan.ops if o.action == "remove"],
           "kept": plan.preserved, "modified": []}
    if pkg is not None:
        out["skipped"] = package.skipped_json(pkg)
    return out


def describe_edits(layout: Layout, change: Change, result: Result, tx: str | None) -> list[str]:
    """Files the admin changed since the agent put them there: each goes into the JSON
    plan with where its content is saved; returns the warnings to give.  Without a
    transaction (a dry run) the warnings are given at once, in the future tense."""
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    for edited in change.modified:
        path, then = edited["path"], edited["then"]
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
