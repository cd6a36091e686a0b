"""The read-only commands: list, info, verify, history and check.

They take a state opened for reading (:meth:`StateAccess.reading`) and change nothing;
``check`` reads no state at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgr_agent.context import EngineContext
from mgr_agent.errors import (
    AgentError,
    ChecksumMismatch,
    InvalidPackage,
    NotInstalled,
    Refused,
    UsageError,
    VerifyFailed,
)
from mgr_agent.findings import errors
from mgr_agent.result import Result
from mgr_agent.state import Installed, State

if TYPE_CHECKING:  # list and history need neither the validators nor the archive readers
    from mgr_agent import checks
    from mgr_agent.layout import Layout


def installed(state: State, name: str, panel: str | None) -> Installed:
    """The one installed package called ``name`` (on ``panel``, if given)."""
    found = state.find(name, panel)
    if not found:
        raise NotInstalled(f"{name}: not installed" + (f" ({panel})" if panel else ""), name=name)
    if len(found) > 1:
        raise UsageError(f"{name}: installed for several panels; pass --panel", name=name)
    return found[0]


def same_archive(packages: list[Installed], digest: str, panel: str | None) -> Result | None:
    """``unchanged`` without reading the package when the archive with sha256 ``digest``
    is what an installed package (``packages``) came from (on ``panel``, if given)."""
    found = next((p for p in packages if digest and p.archive_sha == digest), None)
    if found is None or (panel is not None and found.panel != panel):
        return None
    return unchanged(found)


def unchanged(found: Installed) -> Result:
    """The answer to installing again what ``found`` already holds."""
    return Result(action="unchanged", name=found.name, panel=found.panel, version=found.label,
                  previous_version=found.label)


def stored_size(layout: Layout, installed: Installed) -> int | None:
    """The size of ``installed``'s stored archive; None when it cannot be read."""
    try:
        return (layout.archives_dir / installed.archive).stat().st_size
    except OSError:
        return None


def holds_bytes_of(layout: Layout, installed: Installed, path: Path) -> bool:
    """Whether the file at ``path`` holds the very bytes of ``installed``'s stored archive,
    compared rather than hashed (half the cost); then it holds that version's content.
    (Its recorded ``archive_sha`` is not this file's for sure: the store keeps the first
    archive of a content, which need not be the one that version was installed from.)"""
    from mgr_agent.digests import same_bytes  # noqa: PLC0415 - loaded with the lock anyway

    try:
        return same_bytes(layout.archives_dir / installed.archive, path)
    except OSError:
        return False  # unreadable: the caller hashes the file


def listing(state: State) -> Result:
    return Result(action="listed", data=state.listing())


def info(ctx: EngineContext, state: State, name: str, panel: str | None) -> Result:
    from mgr_agent.planner import verify_flags  # noqa: PLC0415 - not loaded by list/history

    current = installed(state, name, panel)
    files = state.files(current.panel, current.name)
    data = {
        "version": current.version, "release": current.release,
        "content_hash": current.content_hash, "installed_at": current.installed_at,
        "tx": current.tx, "meta": current.meta,
        "files": [{"path": f.path, "sha256": f.sha256, "size": f.size,
                   "mode": f"{f.mode:04o}", "kind": f.kind,
                   "flags": verify_flags(ctx.layout, f)} for f in files.values()],
        "diversions": sorted(state.diversions(current.panel, current.name)),
        # The JSON keys keep their old names ("kept", "kept_at"): the API is public.
        "kept": [{"version": r.version, "release": r.release, "kept_at": r.retained_at}
                 for r in state.retained(current.panel, current.name)],
    }
    return Result(action="info", name=current.name, panel=current.panel, version=current.label,
                  data=data)


def verify(ctx: EngineContext, state: State, name: str | None, panel: str | None) -> Result:
    """Installed files whose content, mode or presence differs from the manifest."""
    from mgr_agent.planner import verify_flags  # noqa: PLC0415

    chosen = [installed(state, name, panel)] if name else state.packages()
    found: list[dict[str, Any]] = []
    checked = 0
    for pkg in chosen:
        for row in sorted(state.files(pkg.panel, pkg.name).values(), key=lambda r: r.path):
            checked += 1
            flags = verify_flags(ctx.layout, row)
            if flags:
                found.append({"name": pkg.name, "panel": pkg.panel, "path": row.path,
                              "flags": flags})
    result = Result(action="verified", name=name, panel=chosen[0].panel if name else None,
                    data={"checked": checked, "packages": len(chosen), "files": found})
    if found:
        result.error = VerifyFailed(
            f"{len(found)} of {checked} installed file(s) differ from what the agent installed",
            hint="an upgrade or uninstall saves edited files under var/lib/mgr-agent/saved/; "
                 "`mgr-agent install --reinstall PACKAGE` puts the shipped files back")
    return result


def history(state: State, name: str | None, limit: int) -> Result:
    return Result(action="history", name=name, data=state.history(name, limit))


def check_context(ctx: EngineContext) -> checks.Context:
    from mgr_agent import checks  # noqa: PLC0415 - the validators: check and install only

    return checks.context(ctx.layout, ctx.config, ctx.runner)


def check(ctx: EngineContext, path: Path, panel: str | None, sha256: str | None,
          strict: bool) -> Result:
    """Every finding of the validators (docs/check.md); an error result when the package
    would be refused (with ``strict``, on warnings too)."""
    from mgr_agent import checks, package  # noqa: PLC0415

    check_ctx = check_context(ctx)
    try:
        pkg = ctx.load(path, panel, sha256)
    except (InvalidPackage, Refused) as exc:
        if isinstance(exc, ChecksumMismatch):
            raise
        if exc.hint == InvalidPackage.default_hint:  # it would say "run check"
            exc.hint = "fix the package and check it again"
        kind, found = checks.inspect(path, ctx.panels, check_ctx, panel_hint=panel,
                                     limits=ctx.config.limits)
        return Result(action="checked", panel=kind, warnings=checks.warning_texts(found),
                      error=exc, data={"findings": [f.to_dict() for f in found],
                                       "notes": check_ctx.notes})
    try:
        checker = ctx.panel(pkg.panel)
        found = checks.run(checks.files_of(pkg, checker), checker, check_ctx)
        warnings = checks.merge_warnings(pkg.warnings, found)
        bad = errors(found, strict=strict)
        error: AgentError | None = checks.refusal(bad, strict=strict) if bad else None
        try:  # this server's panel (version bounds) after what is wrong everywhere
            warnings += ctx.panel(pkg.panel).check_compatible(pkg)
        except Refused as exc:
            error = error or exc
        hooks = sorted(pkg.hooks)
        return Result(action="checked", name=pkg.name, panel=pkg.panel, version=pkg.label,
                      warnings=warnings, error=error,
                      notes=package.skip_notes(pkg) + check_ctx.notes,
                      data={"files": len(pkg.files), "hooks": hooks,
                            "skipped": package.skipped_json(pkg),
                            "content_hash": pkg.content_hash,
                            "archive_sha256": pkg.archive_digest() or None, "meta": pkg.meta,
                            "findings": [f.to_dict() for f in found], "notes": check_ctx.notes})
    finally:
        pkg.close()
