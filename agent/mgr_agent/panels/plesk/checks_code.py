"""Plesk extension code: hook syntax (``php -l``), autoloaded class names, ``htdocs/public``.

Rules from *Extension Structure*: /plib/scripts, Class Naming Conventions, /htdocs/public.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mgr_agent.checks.base import Context, Files, find, line_of
from mgr_agent.findings import Finding
from mgr_agent.proc import Completed

HOOKS = ("pre-install", "post-install", "pre-uninstall")
LINT_TIMEOUT = 30.0
PHP_LINE = re.compile(r"on line (\d+)")
CLASS = re.compile(rb"^\s*(?:(?:abstract|final|readonly)\s+)*(?:class|interface|trait)\s+([A-Za-z_]\w*)",
                   re.MULTILINE)
CLASS_WORDS = (b"class", b"interface", b"trait")
NAMESPACE = re.compile(rb"^\s*namespace\s+[A-Za-z_\\]", re.MULTILINE)
USES_SDK = re.compile(rb"\b(?:pm_[A-Za-z]|Modules_[A-Za-z])")


def camel(ext_id: str) -> str:
    """``my-site`` -> ``MySite``: dashes removed, the first letter and each letter after a
    dash in upper case."""
    return "".join(part[:1].upper() + part[1:] for part in ext_id.split("-"))


def _ext_id(files: Files) -> str | None:
    root = files.xml("meta.xml") if "meta.xml" in files else None
    if root is None or root.tag != "module":
        return None
    el = root.find("id")
    return (el.text or "").strip() or None if el is not None else None


def check_hooks(files: Files, ctx: Context) -> list[Finding]:
    """Hooks in plib/scripts/ parse (``php -l``), when PHP is on this machine."""
    # an upgrade's unchanged hooks were linted when the installed version was
    hooks = [f"plib/scripts/{h}.php" for h in HOOKS
             if f"plib/scripts/{h}.php" in files and files.changed(f"plib/scripts/{h}.php")]
    if not hooks:
        return []
    if ctx.php is None:
        ctx.notes.append("php not found: hook syntax (php -l) not checked")
        return []
    out: list[Finding] = []
    inputs = [files.read(rel) for rel in hooks]
    php = ctx.php

    def lint(data: bytes) -> Completed:
        return ctx.runner.run([*php, "-n", "-l"], cwd=Path("/"), timeout=LINT_TIMEOUT,
                              stdin=data)

    with ThreadPoolExecutor(len(hooks), thread_name_prefix="mga-lint") as pool:
        results = list(pool.map(lint, inputs))  # one php per hook, all at once
    for rel, done in zip(hooks, results, strict=True):
        if done.returncode == 0:
            continue
        lines = [ln.strip() for ln in done.output.splitlines() if ln.strip() and "Errors parsing" not in ln]
        message = (lines[0] if lines else f"php -l exited {done.returncode}").replace(
            " in Standard input code", "")
        match = PHP_LINE.search(message)
        out.append(find("php-syntax", "error", message,
                        "fix the syntax error; Plesk would show it as the install's error", rel,
                        int(match.group(1)) if match else None))
    return out


def check_autoload(files: Files, ctx: Context) -> list[Finding]:
    """Classes under plib/library/ follow ``Modules_<IdInCamelCase>_<Path_With_Underscores>``."""
    ext = _ext_id(files)
    if ext is None:
        return []
    out: list[Finding] = []
    for rel in files.under("plib/library/"):
        if not rel.endswith(".php") or not files.changed(rel):
            continue
        data = files.read(rel)
        if b"namespace" in data and NAMESPACE.search(data):
            continue  # namespaced classes follow PSR-4, not this rule
        # (``in`` finds a literal at memory speed; the patterns run only where one is)
        match = CLASS.search(data) if any(k in data for k in CLASS_WORDS) else None
        if match is None:
            continue
        path = rel[len("plib/library/"):-len(".php")]
        expected = f"Modules_{camel(ext)}_{path.replace('/', '_')}"
        found = match.group(1).decode()
        if found != expected:
            out.append(find("autoload-class-name", "warning",
                            f"class {found} is not autoloaded from here; Plesk looks for {expected}",
                            f"rename the class to {expected} (or move the file to match its name)",
                            rel, line_of(data, match.start(1))))
    return out


def check_public(files: Files, ctx: Context) -> list[Finding]:
    """Scripts in htdocs/public/ bypass the controllers and get no autoloading."""
    out: list[Finding] = []
    public = [r for r in files.under("htdocs/public/") if r.endswith(".php")]
    for rel in public:
        if not files.changed(rel):
            continue
        data = files.read(rel)
        sdk = USES_SDK.search(data)
        if sdk is not None and b"pm_Context::init" not in data:
            out.append(find("public-no-autoload", "warning",
                            "uses Plesk SDK classes, but htdocs/public scripts are not autoloaded",
                            "start the script with require_once('sdk.php'); pm_Context::init('ID');",
                            rel, line_of(data, sdk.start())))
    if public:
        ctx.notes.append(f"{len(public)} script(s) in htdocs/public/ run without authorisation and "
                         "without autoloading")
    return out


VALIDATORS = (check_hooks, check_autoload, check_public)
