"""The ``aps`` commands: read or change the panel's APS files under the agent's lock.

Changes are idempotent (asking for what is already there changes nothing and reports
``changed: false``), written atomically (temp file, fsync, rename), and can be tried
with ``dry_run`` (the result carries the diff either way).  A repository change restarts
the ispmanager core through the panel's own restart, unless the engine was told not to.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mgr_agent.aps import SETTINGS_REL, ApsPaths, InvalidSettings, check, conf, repo, resolve, settings
from mgr_agent.errors import NotFound, UsageError
from mgr_agent.findings import errors
from mgr_agent.fsutil import atomic_write
from mgr_agent.lock import Lock
from mgr_agent.result import Result

if TYPE_CHECKING:
    from mgr_agent.engine import Engine

PANEL = "ispmanager"
SKELETON = b"<doc>\n</doc>\n"
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


@contextmanager
def _locked(engine: Engine, purpose: str) -> Iterator[None]:
    lock = Lock(engine.layout.lock_file, purpose)
    lock.acquire(engine.lock_wait, engine.progress)
    try:
        yield
    finally:
        lock.release()


def _diff(rel: str, before: bytes, after: bytes) -> dict[str, str]:
    return {"path": rel, "before": before.decode("utf-8", "replace"),
            "after": after.decode("utf-8", "replace")}


def _write(path: Path, data: bytes) -> None:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o644
    atomic_write(path, data, mode)


# ---------------------------------------------------------------- repositories
def repo_list(engine: Engine) -> Result:
    repos = conf.IspmgrConf(ApsPaths.of(engine.layout).conf).repositories()
    return Result(action="aps-repo-list", panel=PANEL,
                  data={"repositories": [{"url": r.url, "line": r.line} for r in repos]})


def repo_change(engine: Engine, url: str, *, add: bool, verify: bool = False, insecure: bool = False,
                dry_run: bool = False) -> Result:
    """Add or remove one ``ApsExtRepository`` line (``verify``: fetch and read it first)."""
    warnings = conf.check_url(url) if add else []
    notes: list[str] = []
    data: dict[str, object] = {"url": url}
    if add and verify:
        found = repo.fetch(url, engine.layout, insecure=insecure, progress=engine.progress)
        total = sum(len(v) for v in found.values())
        data["scripts"] = len(found)
        data["packages"] = total
        if total:
            notes.append(f"repository offers {total} package(s) of {len(found)} script(s)")
        else:
            warnings.append(f"{url}: well-formed XML, but no APS package entries were found in it")
    cfg = conf.IspmgrConf(ApsPaths.of(engine.layout).conf)
    rel = engine.layout.rel(cfg.path)
    with _locked(engine, f"aps repo {'add' if add else 'remove'}"):
        before = cfg.read()
        after = conf.added(before, url) if add else conf.removed(before, url)
        changed = after != before
        if changed:
            if not dry_run:
                cfg.write(after)
            data["diff"] = _diff(rel, before, after)
            notes.append(f"{'would ' if dry_run else ''}{'add' if add else 'remove'} "
                         f"ApsExtRepository {url}")
            if engine.restart and not dry_run:
                notes += engine.panel(PANEL).restart(engine.runner)
        else:
            notes.append(f"{url} is {'already' if add else 'not'} in {rel}")
        data["repositories"] = [r.url for r in conf.repositories(after)]
    return Result(action="aps-repo-add" if add else "aps-repo-remove", changed=changed, panel=PANEL,
                  notes=notes, warnings=warnings, data=data)


# ---------------------------------------------------------------- check and resolve
def check_settings(engine: Engine, settings_file: Path | None = None) -> Result:
    paths = ApsPaths.of(engine.layout)
    parsed, findings = check.check_file(paths, settings_file)
    bad = errors(findings)
    error = None
    if bad:
        error = InvalidSettings(f"{settings_file or SETTINGS_REL}: {len(bad)} error(s), "
                                f"{len(findings) - len(bad)} warning(s)", hint="fix the errors listed above")
    return Result(action="aps-check", panel=PANEL, error=error,
                  data={"file": str(settings_file or SETTINGS_REL),
                        "findings": [f.to_dict() for f in findings],
                        "settings": parsed.to_dict() if parsed else None})


def resolve_rules(engine: Engine, *, versions_file: Path | None, repo_url: str | None,
                  current_file: Path | None, insecure: bool = False,
                  settings_file: Path | None = None) -> Result:
    if (versions_file is None) == (repo_url is None):
        raise UsageError("aps resolve: give exactly one of --versions FILE and --repo URL")
    paths = ApsPaths.of(engine.layout)
    parsed, findings = check.check_file(paths, settings_file)
    bad = [f for f in errors(findings) if not f.code.startswith("aps-image")]
    if bad:
        raise InvalidSettings(f"{settings_file or SETTINGS_REL}: the rules have errors, so what "
                              f"the panel does is undefined: {bad[0].message}",
                              details={"findings": [f.to_dict() for f in bad]})
    available = (repo.versions_file(versions_file) if versions_file is not None
                 else repo.fetch(str(repo_url), engine.layout, insecure=insecure, progress=engine.progress))
    current = repo.current_file(current_file) if current_file is not None else None
    scripts = resolve.resolve(available, parsed, current)
    warnings = resolve.unmatched_rules(available, parsed) if parsed else []
    return Result(action="aps-resolve", panel=PANEL, warnings=warnings,
                  data={"source": str(versions_file or repo_url),
                        "scripts": [s.to_dict() for s in scripts]})


# ---------------------------------------------------------------- settings edits
Change = Callable[[settings.Editor, settings.Settings], tuple[bytes, settings.Settings]]


def _edit(engine: Engine, action: str, describe: str, change: Change, *, dry_run: bool) -> Result:
    paths = ApsPaths.of(engine.layout)
    path = paths.settings
    rel = engine.layout.rel(path)
    with _locked(engine, f"aps {action}"):
        try:
            old = path.read_bytes()
        except FileNotFoundError:
            if not (paths.mgr / "etc").is_dir():
                raise NotFound(f"{paths.mgr / 'etc'}: no such directory; is ispmanager installed "
                               "under this root?") from None
            old = b""
        base = old or SKELETON
        before = settings.read(base, rel)
        if before.root_tag != "doc":
            raise InvalidSettings(f"{rel}: the root element is <{before.root_tag}>, not <doc>; "
                                  "fix it by hand first")
        new, expect = change(settings.Editor(base, rel), before)
        changed = new != base
        if changed:
            settings.verified(new, rel, expect)
            if not dry_run:
                _write(path, new)
    notes = [("would " if dry_run else "") + describe if changed else f"{describe}: already so"]
    data: dict[str, object] = {"file": rel}
    if changed:
        data["diff"] = _diff(rel, old, new)
    return Result(action=f"aps-{action}", changed=changed, panel=PANEL, notes=notes, data=data)


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or name != name.strip():
        raise UsageError(f"script name {name!r}: give the name as the repository spells it "
                         "(no control characters, no leading or trailing spaces)")
    return name


def make_rule(section: settings.Section, name: str, type_: str | None, quantity: int | None,
              force: bool, version: str | None) -> settings.Rule:
    """A rule from command arguments, refused with the rule it breaks."""
    _check_name(name)
    kind = type_ or ("definite" if version else "latest")
    tag = "onupdate" if section == "updaterules" else "defver"
    if kind not in settings.TYPES:
        raise UsageError(f"--type {kind!r}: must be latest, earliest or definite")
    if kind == "definite" and not (version and version.strip()):
        raise UsageError(f"{tag} {name}: type definite needs --version VERSION")
    if kind != "definite" and version:
        raise UsageError(f"{tag} {name}: --version is only for type definite")
    if quantity is not None:
        if section == "defverrules":
            raise UsageError("--quantity is only for update rules (a default is one version)")
        if kind == "definite":
            raise UsageError("--quantity applies only to latest and earliest")
        if quantity < 1:
            raise UsageError(f"--quantity {quantity}: must be a positive integer")
    if force and section == "defverrules":
        raise UsageError("--force is only for update rules")
    return settings.Rule(section, name, kind, str(quantity) if quantity else None,
                         "yes" if force else None, version.strip() if version else None)


def set_rule(engine: Engine, rule: settings.Rule, *, dry_run: bool = False) -> Result:
    tag = "onupdate" if rule.section == "updaterules" else "defver"
    what = f"{tag} {rule.name}: {resolve.describe(rule)}"

    def change(ed: settings.Editor, s: settings.Settings) -> tuple[bytes, settings.Settings]:
        old = s.rule(rule.section, str(rule.name))
        if old is not None and old.meaning() == rule.meaning() and not old.extra:
            return ed.data, s
        return ed.set_rule(rule), settings.expected_rule(s, rule)

    return _edit(engine, "set-rule", what, change, dry_run=dry_run)


def unset(engine: Engine, section: str, name: str, *, dry_run: bool = False) -> Result:
    """Remove the rule (or image) of ``name`` from ``section``."""
    tag = settings.CHILD[section]
    action = "unset-image" if section == "imagemapping" else "unset-rule"

    def change(ed: settings.Editor, s: settings.Settings) -> tuple[bytes, settings.Settings]:
        return ed.remove(section, name), settings.expected_without(s, section, name)

    return _edit(engine, action, f"remove {tag} {name}", change, dry_run=dry_run)


def set_image(engine: Engine, name: str | None, file: str, *, dry_run: bool = False) -> Result:
    """Map script ``name`` (None: the default image) to ``file`` in skins/common/img/."""
    paths = ApsPaths.of(engine.layout)
    problems = check.image_problems(paths, file, "image", 0, SETTINGS_REL)
    if problems:
        raise InvalidSettings(problems[0].message, hint=problems[0].fix)
    what = f"apsimg {_check_name(name)} -> {file}" if name is not None else f"defimg {file}"

    def change(ed: settings.Editor, s: settings.Settings) -> tuple[bytes, settings.Settings]:
        if name is None:
            if s.defimg == file:
                return ed.data, s
            return ed.set_defimg(file), settings.expected_image(s, None, file)
        if any(i.name == name and i.file == file for i in s.images):
            return ed.data, s
        return ed.set_image(name, file), settings.expected_image(s, name, file)

    return _edit(engine, "set-image", what, change, dry_run=dry_run)
