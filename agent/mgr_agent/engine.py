"""The operations on one root: what the CLI and the daemon call.

A thin facade.  Each mutating command is one transaction (DESIGN §5): it is planned
and checked here, then run by :mod:`mgr_agent.steps`; :mod:`mgr_agent.access` takes the
lock and recovers interrupted transactions (:mod:`mgr_agent.recovery`) first;
:mod:`mgr_agent.store` keeps the packages; :mod:`mgr_agent.queries` answers the
read-only commands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mgr_agent import config as config_mod
from mgr_agent import queries
from mgr_agent.access import StateAccess
from mgr_agent.config import Config
from mgr_agent.context import EngineContext, Progress, quiet
from mgr_agent.errors import AgentError, DowngradeRefused, NotInstalled
from mgr_agent.layout import Layout
from mgr_agent.panels import Panel, all_panels, serving
from mgr_agent.proc import Runner
from mgr_agent.result import Result
from mgr_agent.versions import compare, is_hash_version

if TYPE_CHECKING:
    from mgr_agent.package import Package
    from mgr_agent.panels.base import CallAnswer, LogQuery, LogRecord
    from mgr_agent.planner import Change
    from mgr_agent.state import Commit, Installed

__all__ = ["Engine", "Progress"]

# ``list`` and ``history`` import none of the change machinery: the validators, the
# archive readers, the planner and the transaction steps are imported by the operations
# that use them (issue 13's start-up row; tests/integration/test_startup_imports.py).


class Engine:
    """The operations, on one root; the CLI and the daemon call these."""

    def __init__(self, layout: Layout, *, progress: Progress | None = None,
                 lock_wait: float | None = None, restart: bool = True,
                 health_window: float | None = None, actor: str = "cli") -> None:
        config = config_mod.load(layout)
        self.ctx = EngineContext(
            layout=layout, config=config, panels=all_panels(layout, config),
            runner=Runner(output_limit=config.hook_output_limit), progress=progress or quiet,
            lock_wait=config.lock_wait if lock_wait is None else lock_wait, restart=restart,
            health_window=config.health_window if health_window is None else health_window,
            actor=actor)
        self.access = StateAccess(self.ctx)

    # What other modules read (aps, pack, the CLI): the context's values.
    @property
    def layout(self) -> Layout:
        return self.ctx.layout

    @property
    def config(self) -> Config:
        return self.ctx.config

    @property
    def panels(self) -> list[Panel]:
        return self.ctx.panels

    @property
    def runner(self) -> Runner:
        return self.ctx.runner

    @property
    def progress(self) -> Progress:
        return self.ctx.progress

    @property
    def lock_wait(self) -> float:
        return self.ctx.lock_wait

    @property
    def restart(self) -> bool:
        return self.ctx.restart

    def panel(self, name: str) -> Panel:
        return self.ctx.panel(name)

    # ---------------------------------------------------------------- changes
    def install(
        self, path: Path, *, panel: str | None = None, sha256: str | None = None,
        dry_run: bool = False, allow_downgrade: bool = False, reinstall: bool = False,
        op: str = "install", strict: bool = False,
    ) -> Result:
        from mgr_agent.retained import Manifest, for_rollback  # noqa: PLC0415 - see the top

        # (a rollback's archive is a retained one, never the installed one)
        digest, same = _same_archive(self.access, path, sha256, panel, op == "install" and not reinstall)
        if same is not None:
            return same
        known: Manifest | None = None if reinstall else self.access.manifest
        if op == "rollback":  # the files kept in its retained trees are not read either
            known, digest = for_rollback(self.layout, path.stem, self.access.manifest)
        pkg = self.ctx.load(path, panel, sha256, digest, background=True, installed=known,
                            scan=op != "rollback")  # (a rollback is not checked again)
        try:
            return self._install(pkg, dry_run=dry_run, allow_downgrade=allow_downgrade,
                                 reinstall=reinstall, op=op, strict=strict)
        except AgentError as exc:
            exc.subject = (pkg.name, pkg.panel)
            raise
        finally:
            pkg.close()

    def install_url(
        self, url: str, *, panel: str | None = None, sha256: str | None = None,
        dry_run: bool = False, allow_downgrade: bool = False, reinstall: bool = False,
        strict: bool = False,
    ) -> Result:
        """``install https://…``: download (``--sha256`` required) into the agent's downloads
        folder, install that file like any other, and discard it."""
        from mgr_agent import download  # noqa: PLC0415 - requests only for a URL install

        policy = download.Policy(max_bytes=self.config.limits.max_total_bytes)
        fetched = download.fetch(url, sha256, self.layout, policy=policy, progress=self.progress)
        try:
            return self.install(fetched, panel=panel, sha256=sha256, dry_run=dry_run,
                                allow_downgrade=allow_downgrade, reinstall=reinstall, strict=strict)
        finally:
            download.discard(fetched)

    def _install(self, pkg: Package, *, dry_run: bool, allow_downgrade: bool, reinstall: bool,
                 op: str, strict: bool = False) -> Result:
        from mgr_agent import checks, hooks, package, planner, steps  # noqa: PLC0415 - see the top

        target = self.panel(pkg.panel)
        compatible = target.check_compatible(pkg)
        if op != "rollback":  # the retained archive was checked when it was installed
            _, pkg.warnings = checks.validate(pkg, target, queries.check_context(self.ctx),
                                              strict=strict)
        pkg.hashed()  # the entries hashed alongside the checks
        result = Result(action="planned", name=pkg.name, panel=pkg.panel, version=pkg.label,
                        warnings=list(pkg.warnings), notes=package.skip_notes(pkg))
        result.warnings += compatible
        fresh: Change | None = None
        if not self.layout.db_file.exists():
            # Nothing is installed on this root yet: find refusals (planted links, space,
            # read-only targets) before the lock and the state database are created.
            fresh = _plan_without_state(self.ctx, pkg, target, reinstall)
            if dry_run:
                result.warnings += fresh.warnings
                result.plan = steps.plan_json(fresh.plan, pkg)
                return result
        with self.access.mutating(f"{op} {pkg.name}") as state:
            found = state.find(pkg.name, pkg.panel)
            installed = found[0] if found else None
            result.previous_version = installed.label if installed else None
            if installed and installed.content_hash == pkg.content_hash and not reinstall:
                result.action = "unchanged"
                return result
            if installed and not allow_downgrade:
                _refuse_downgrade(pkg, installed)
            if fresh is not None and not state.packages() and not state.diversions():
                change = fresh  # still nothing installed: the plan made before the lock holds
            else:
                change = planner.Planner(self.layout, state, target).install(
                    pkg, installed, reinstall=reinstall)
                _preflight(self.ctx, pkg, change)
            result.warnings += change.warnings
            result.plan = steps.plan_json(change.plan, pkg)
            if dry_run:
                steps.describe_edits(self.layout, change, result, None)
                return result
            result.action = {"rollback": "rolled_back"}.get(
                op, "upgraded" if installed is not None else "installed")
            result.changed = True
            tx = steps.new_tx()
            edits = steps.describe_edits(self.layout, change, result, tx)
            commit = _install_commit(pkg, change, installed, tx, self.config.keep_versions)
            args = hooks.hook_args((installed.version, installed.release) if installed else None)
            return steps.run(self.ctx, state, steps.Job(
                op=op, panel=target, change=change, tx=tx, result=result, commit=commit,
                installed=installed, pkg=pkg, hook_pkg=pkg, pre_hook="pre-install",
                post_hook="post-install", hook_argv=args, edits=edits))

    def uninstall(self, name: str, *, panel: str | None = None, purge: bool = False,
                  dry_run: bool = False, force: bool = False) -> Result:
        from mgr_agent import planner, preflight, steps  # noqa: PLC0415 - see the note at the top
        from mgr_agent.state import Commit  # noqa: PLC0415
        from mgr_agent.store import open_stored  # noqa: PLC0415

        with self.access.mutating(f"uninstall {name}") as state:
            installed = queries.installed(state, name, panel)
            target = self.panel(installed.panel)
            result = Result(action="planned", name=name, panel=installed.panel,
                            version=None, previous_version=installed.label)
            change = planner.Planner(self.layout, state, target).uninstall(installed, purge=purge)
            result.warnings += change.warnings
            result.plan = steps.plan_json(change.plan)
            result.plan["left"] = change.left
            preflight.check(self.layout, change.plan, {}, 0, self.config.free_space_margin)
            if dry_run:
                steps.describe_edits(self.layout, change, result, None)
                return result
            hook_pkg = open_stored(self.ctx, installed, result.warnings, force)
            try:
                result.action, result.changed = "removed", True
                tx = steps.new_tx()
                edits = steps.describe_edits(self.layout, change, result, tx)
                commit = Commit(tx=tx, panel=installed.panel, name=name, package=None, files=[],
                                dirs=[], diversions_add={}, diversions_drop=change.divert_drop,
                                retain_previous=None, drop_retained_hash=None,
                                retain_versions=self.config.keep_versions, history={})
                return steps.run(self.ctx, state, steps.Job(
                    op="uninstall", panel=target, change=change, tx=tx, result=result,
                    commit=commit, installed=installed, hook_pkg=hook_pkg,
                    pre_hook="pre-uninstall", hook_argv=["uninstall"], edits=edits, force=force))
            finally:
                if hook_pkg is not None:
                    hook_pkg.close()

    def rollback(self, name: str, *, panel: str | None = None) -> Result:
        """Reinstall the newest version retained from before the last upgrade."""
        with self.access.reading() as state:
            installed = queries.installed(state, name, panel)
            retained = state.retained(installed.panel, installed.name)
        if not retained:
            raise NotInstalled(f"{name}: no previous version is kept to roll back to",
                               hint="versions are kept from upgrades; see [state] keep_versions")
        archive = self.layout.archives_dir / retained[0].archive
        return self.install(archive, panel=installed.panel, allow_downgrade=True, op="rollback")

    def recover(self) -> Result:
        with self.access.mutating("recover"):
            done = self.access.last_recovered
            changed = any(entry["outcome"] != "discarded" for entry in done)
            return Result(action="recovered", changed=changed, data={"transactions": done})

    # ---------------------------------------------------------------- panel runtime
    def plugin_log_names(self, name: str) -> set[str]:
        """Names by which the panel log mentions a plugin: an installed one's handlers and
        funcs too, else just its name (e.g. after a rolled-back install)."""
        panel = serving(self.panels, "logs")
        with self.access.reading() as state:
            found = state.find(name, panel.name)
        return panel.log_names(found[0].name, found[0].meta) if found else {name}

    def logs(self, query: LogQuery, plugin: str | None = None, *,
             stop: threading.Event | None = None) -> Iterator[LogRecord]:
        """``mgr-agent logs``: the panel log's records (``plugin``: only those naming it)."""
        if plugin:
            query = query._replace(plugin_names=frozenset(self.plugin_log_names(plugin)))
        return serving(self.panels, "logs").log(query, stop=stop)

    def call(self, func: str, params: dict[str, str], *, user: str, lang: str,
             input_path: Path | None, timeout: float) -> CallAnswer:
        """``mgr-agent call``: the panel's handler chain of ``func``, run and judged."""
        return serving(self.panels, "call").call(func, params, user=user, lang=lang,
                                                 input_path=input_path, timeout=timeout)

    def restart_core(self) -> Result:
        """Restart the panels' cores on their own (``mgr-agent restart-core``)."""
        with self.access.mutating("restart-core"):
            notes: list[str] = []
            for panel in self.panels:
                said = panel.restart(self.runner) if panel.restarts else [panel.loads_note or ""]
                notes += [f"{panel.name}: {n}" for n in said if n]
        return Result(action="restarted", changed=True, notes=notes)

    def debug(self, module: str | None, level: int | None, *, off: bool) -> Result:
        """Set (or with ``off`` restore) a log level of the panel (ispmanager's etc/debug.conf)."""
        panel = serving(self.panels, "debug")
        with self.access.mutating("debug"):
            changes = panel.debug(module, level, off=off)
            notes = list(changes)
            if changes and self.restart:
                notes += panel.restart(self.runner)
        return Result(action="debug", changed=bool(changes), panel=panel.name, notes=notes)

    # ---------------------------------------------------------------- read-only
    def check(self, path: Path, *, panel: str | None = None, sha256: str | None = None,
              strict: bool = False) -> Result:
        """Every finding of the validators (docs/check.md)."""
        return queries.check(self.ctx, path, panel, sha256, strict)

    def list(self) -> Result:
        with self.access.reading() as state:
            return queries.listing(state)

    def info(self, name: str, *, panel: str | None = None) -> Result:
        with self.access.reading() as state:
            return queries.info(self.ctx, state, name, panel)

    def verify(self, name: str | None = None, *, panel: str | None = None) -> Result:
        """Installed files whose content, mode or presence differs from the manifest."""
        with self.access.reading() as state:
            return queries.verify(self.ctx, state, name, panel)

    def history(self, name: str | None, limit: int) -> Result:
        with self.access.reading() as state:
            return queries.history(state, name, limit)


def _same_archive(access: StateAccess, path: Path, sha256: str | None, panel: str | None,
                  wanted: bool) -> tuple[str | None, Result | None]:
    """The archive's sha256, and ``unchanged`` if that very archive is installed (if
    ``wanted``).  Not computed here when nothing is installed or no installed version's
    stored archive (a byte copy of an archive of its content) has this one's size: ``load``
    then hashes it alongside the checks.  Without ``sha256`` to check, such a stored
    archive is compared byte for byte first (:func:`mgr_agent.queries.holds_bytes_of`)."""
    from mgr_agent.digests import sha256_file  # noqa: PLC0415 - see the note at the top

    if not wanted or not path.is_file() or not access.ctx.layout.db_file.exists():
        return None, None
    size, layout = path.stat().st_size, access.ctx.layout
    with access.reading() as state:
        packages = [p for p in state.packages() if p.archive_sha]
    sizes = {p.archive: queries.stored_size(layout, p) for p in packages}
    if not any(s in (size, None) for s in sizes.values()):
        return None, None
    if sha256 is None:
        for p in packages:
            if sizes[p.archive] == size and (panel is None or p.panel == panel) \
                    and queries.holds_bytes_of(layout, p, path):
                return None, queries.unchanged(p)
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256.lower():
        return digest, None  # load reports the mismatch
    return digest, queries.same_archive(packages, digest, panel)


def _refuse_downgrade(pkg: Package, installed: Installed) -> None:
    if is_hash_version(pkg.version) or is_hash_version(installed.version):
        return
    order = compare(pkg.version, installed.version) or compare(pkg.release, installed.release)
    if order < 0:
        raise DowngradeRefused(f"{pkg.name}: {pkg.label} is older than the installed "
                               f"{installed.label}", installed=installed.label, offered=pkg.label)


def _preflight(ctx: EngineContext, pkg: Package, change: Change) -> None:
    from mgr_agent import preflight  # noqa: PLC0415
    from mgr_agent.store import stored_path  # noqa: PLC0415

    stored = stored_path(ctx.layout, pkg)
    archive_bytes = 0 if stored.exists() else sum(e.size for e in pkg.source.entries.values())
    preflight.check(ctx.layout, change.plan, {t: s.size for t, s in pkg.files.items()},
                    archive_bytes, ctx.config.free_space_margin)


def _plan_without_state(ctx: EngineContext, pkg: Package, target: Panel,
                        reinstall: bool) -> Change:
    """The plan and preflight against an empty state, before anything is created."""
    from mgr_agent.planner import Planner  # noqa: PLC0415
    from mgr_agent.state import State  # noqa: PLC0415

    empty = State(None)
    try:
        change = Planner(ctx.layout, empty, target).install(pkg, None, reinstall=reinstall)
        _preflight(ctx, pkg, change)
    finally:
        empty.close()
    return change


def _install_commit(pkg: Package, change: Change, installed: Installed | None, tx: str,
                    retain_versions: int) -> Commit:
    """What installing ``pkg`` writes at the commit point; the version it replaces (if its
    content differs) is retained for rollback."""
    from mgr_agent.state import Commit, Installed, RetainedVersion  # noqa: PLC0415
    from mgr_agent.store import archive_name  # noqa: PLC0415

    now = time.time()
    previous = None
    if installed is not None and installed.content_hash != pkg.content_hash:
        previous = RetainedVersion(installed.panel, installed.name, installed.version,
                                   installed.release, installed.content_hash, installed.archive,
                                   now, tx)
    return Commit(
        tx=tx, panel=pkg.panel, name=pkg.name,
        package=Installed(pkg.panel, pkg.name, pkg.version, pkg.release, pkg.content_hash,
                          archive_name(pkg), now, tx, pkg.meta),  # archive_sha: at the commit
        files=change.files, dirs=change.dirs, diversions_add=change.divert_add,
        diversions_drop=change.divert_drop, retain_previous=previous,
        drop_retained_hash=pkg.content_hash, retain_versions=retain_versions, history={},
        previous=change.previous if installed is not None else None)
