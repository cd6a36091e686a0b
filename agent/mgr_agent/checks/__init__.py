"""The validators behind ``mgr-agent check`` and the check inside ``install``.

One module per concern: :mod:`.safety` (both panels: XML safety, modes, sizes, secrets),
:mod:`.plesk_meta`, :mod:`.plesk_catalog`, :mod:`.plesk_code`, :mod:`.ispmanager`.
Each finding has a stable code (docs/check.md lists them all). Errors make ``install``
refuse, warnings do not unless ``--strict``.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from mgr_agent.archive import Limits, Source, open_source, read_all
from mgr_agent.checks import ispmanager, plesk_catalog, plesk_code, plesk_meta, safety
from mgr_agent.checks.base import Context, Files, Validator
from mgr_agent.config import Config
from mgr_agent.errors import AgentError, InvalidPackage, Refused
from mgr_agent.findings import Finding, errors, ordered
from mgr_agent.layout import MGR_REL, Layout
from mgr_agent.package import Package
from mgr_agent.panels.base import Panel
from mgr_agent.panels.ispmanager import layout as isplayout
from mgr_agent.proc import Runner
from mgr_agent.shape import detect_layout

__all__ = ["Context", "Files", "context", "files_of", "inspect", "refusal", "run", "validate",
           "warning_texts"]

VALIDATORS: dict[str, tuple[Validator, ...]] = {
    "plesk": plesk_meta.VALIDATORS + plesk_catalog.VALIDATORS + plesk_code.VALIDATORS,
    "ispmanager": ispmanager.VALIDATORS,
}


def names_of(source: Source, prefix: str, panel: str) -> dict[str, str]:
    """Package-relative name -> entry. ispmanager names are relative to MGR: a leading
    ``usr/local/mgr5/`` is removed, and a flat layout is mapped the way install maps it
    (the plugin XML to ``etc/xml/``, its handlers to ``addon/``)."""
    names = {n[len(prefix):]: n for n in source.entries if n.startswith(prefix)}
    if panel != "ispmanager":
        return names
    tree = {isplayout.rel_to_mgr(rel): full for rel, full in names.items()}
    flat = [rel for rel in names if isplayout.FLAT_RE.match(rel)]
    if any(isplayout.MOD_RE.match(rel) for rel in tree) or len(flat) != 1:
        return tree
    try:
        handlers, _, _ = isplayout.plugin_xml(read_all(source, names[flat[0]]), flat[0])
        files, hooks, _ = isplayout.map_flat(source, names, flat[0], handlers)
    except InvalidPackage:  # the validators report what is wrong with it
        return {(f"etc/xml/{rel}" if rel == flat[0] else rel): full for rel, full in names.items()}
    mapped = {spec.target.removeprefix(MGR_REL + "/"): spec.entry for spec in files.values()}
    mapped |= {f"scripts/{hook}": entry for hook, entry in hooks.items()}
    taken = set(mapped.values())
    return mapped | {rel: full for rel, full in names.items() if full not in taken}


# What install takes care of itself: handler modes (installed 0755). `check` lists it;
# `install` (even --strict) does not.
INSTALL_HANDLED = frozenset({"handler-not-executable"})


def context(layout: Layout, config: Config, runner: Runner) -> Context:
    """The validators' context on this machine: the PHP for ``php -l`` and the server's MGR."""
    found = shutil.which("php")
    php = tuple(config.php.split()) if config.php else ((found,) if found else None)
    return Context(runner=runner, php=php, mgr=layout.mgr)


def files_of(pkg: Package) -> Files:
    return Files(pkg.source, pkg.prefix, names_of(pkg.source, pkg.prefix, pkg.panel), pkg.inflated)


def run(files: Files, panel: str, ctx: Context) -> list[Finding]:
    """Every validator of both panels' common rules and of ``panel``; ordered, no repeats."""
    found: list[Finding] = []
    for validator in safety.VALIDATORS + VALIDATORS.get(panel, ()):
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
            found = run(Files(source, prefix, names_of(source, prefix, panel.name)), panel.name, ctx)
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


def validate(pkg: Package, ctx: Context, *, strict: bool = False) -> tuple[list[Finding], list[str]]:
    """Check a loaded package (inside ``install``): raise InvalidPackage on errors (on
    warnings too when ``strict``); return the findings and the result's warnings."""
    found = [f for f in run(files_of(pkg), pkg.panel, ctx) if f.code not in INSTALL_HANDLED]
    bad = errors(found, strict=strict)
    if bad:
        raise refusal(bad, strict=strict)
    return found, merge_warnings(pkg.warnings, found)
