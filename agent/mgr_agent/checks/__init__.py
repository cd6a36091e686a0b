"""The validators behind ``mgr-agent check`` and the check inside ``install``.

The rules every panel shares are :mod:`.safety` (XML safety, modes, sizes, secrets); each
panel hands its own (``Panel.validators``: ``panels/plesk/checks_*.py``,
``panels/ispmanager/checks.py``) and the names they see (``Panel.check_names``).
Each finding has a stable code (docs/check.md lists them all). Errors make ``install``
refuse, warnings do not unless ``--strict``.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from mgr_agent.archive import open_source
from mgr_agent.checks import safety
from mgr_agent.checks.base import Context, Files, Validator
from mgr_agent.config import Config
from mgr_agent.errors import AgentError, InvalidPackage, Refused
from mgr_agent.findings import Finding, errors, ordered
from mgr_agent.layout import Layout
from mgr_agent.limits import Limits
from mgr_agent.package import Package
from mgr_agent.panels.base import Panel
from mgr_agent.proc import Runner
from mgr_agent.shape import detect_layout

__all__ = ["Context", "Files", "context", "files_of", "inspect", "refusal", "run", "validate",
           "warning_texts"]

# What install takes care of itself: handler modes (installed 0755). `check` lists it;
# `install` (even --strict) does not.
INSTALL_HANDLED = frozenset({"handler-not-executable"})


def context(layout: Layout, config: Config, runner: Runner) -> Context:
    """The validators' context on this machine: the PHP for ``php -l`` and the server's MGR."""
    found = shutil.which("php")
    php = tuple(config.php.split()) if config.php else ((found,) if found else None)
    return Context(runner=runner, php=php, mgr=layout.mgr)


def files_of(pkg: Package, panel: Panel) -> Files:
    return Files(pkg.source, pkg.prefix, panel.check_names(pkg.source, pkg.prefix), pkg.inflated,
                 pkg.same, pkg.pending)


def run(files: Files, panel: Panel, ctx: Context) -> list[Finding]:
    """Every validator of the common rules and of ``panel``; ordered, no repeats."""
    found: list[Finding] = []
    validators: tuple[Validator, ...] = safety.VALIDATORS + panel.validators()
    for validator in validators:
        found += validator(files, ctx)
    # name the files as the author has them (flat layout, usr/local/mgr5/ prefix)
    found = [replace(f, file=files.full[f.file][len(files.prefix):]) if f.file in files.full else f
             for f in found]
    return ordered(list(dict.fromkeys(found)))


def from_error(exc: AgentError) -> Finding:
    """An installer refusal (archive rule, XML rule, metadata rule) as a finding."""
    details = exc.details
    cause = exc.__cause__
    line = getattr(cause, "lineno", None) if cause is not None else None
    return Finding(code=str(details.get("rule") or exc.code), severity="error", message=exc.message,
                   fix=exc.hint or "fix the package", file=details.get("path") or details.get("entry"),
                   line=line if isinstance(line, int) else None)


def inspect(path: Path, panels: list[Panel], ctx: Context, *, panel_hint: str | None = None,
            limits: Limits | None = None) -> tuple[str | None, list[Finding]]:
    """Every finding for a package the installer refuses: the refusal itself, and what the
    validators find in what could be read. Returns (panel name, findings)."""
    try:
        source = open_source(path, limits)
    except InvalidPackage as exc:
        return None, [from_error(exc)]
    try:
        try:
            panel, prefix = detect_layout(set(source.entries), panels, panel_hint)
        except InvalidPackage as exc:
            return None, [from_error(exc)]
        try:
            found = run(Files(source, prefix, panel.check_names(source, prefix)), panel, ctx)
            for name in source.entries:  # each read whole, as the installer's hashing reads it
                for _ in source.chunks(name):
                    pass
        except InvalidPackage as exc:  # an entry that cannot be read (size, corrupt data)
            return panel.name, [from_error(exc)]
        try:
            panel.describe(source, prefix)  # the installer's own rules, as a backstop
        except (InvalidPackage, Refused) as exc:
            if not any(f.severity == "error" for f in found):  # a rule no validator knows
                found = ordered([*found, from_error(exc)])
        return panel.name, found
    finally:
        source.close()


def warning_texts(findings: list[Finding]) -> list[str]:
    """Warnings as one line each, for a result's ``warnings``: ``[code] file:line: message
    (fix: …)``."""
    return [f.text().removeprefix("warning") for f in findings if f.severity == "warning"]


def merge_warnings(package_warnings: list[str], findings: list[Finding]) -> list[str]:
    """The package's own warnings and the findings' warnings, each said once: a package
    warning about a file that a warning finding already names is dropped."""
    named = {f.file for f in findings if f.severity == "warning" and f.file}
    kept = [w for w in package_warnings if w.split(": ", 1)[0] not in named]
    return kept + warning_texts(findings)


def refusal(bad: list[Finding], *, strict: bool) -> InvalidPackage:
    """The error that refuses a package for these findings (exit 3)."""
    first = bad[0]
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    what = "finding(s) with --strict" if strict else "error(s)"
    return InvalidPackage(f"check found {len(bad)} {what}: {first.text()}{more}",
                          hint="`mgr-agent check PATH` lists every finding with its fix",
                          rule=first.code, path=first.file, findings=[f.to_dict() for f in bad])


def validate(pkg: Package, panel: Panel, ctx: Context, *,
             strict: bool = False) -> tuple[list[Finding], list[str]]:
    """Check a loaded package of ``panel`` (inside ``install``): raise InvalidPackage on
    errors (on warnings too when ``strict``); return the findings and the result's warnings."""
    found = [f for f in run(files_of(pkg, panel), panel, ctx) if f.code not in INSTALL_HANDLED]
    bad = errors(found, strict=strict)
    if bad:
        raise refusal(bad, strict=strict)
    return found, merge_warnings(pkg.warnings, found)
