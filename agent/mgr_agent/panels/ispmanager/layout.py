"""Where an ispmanager plugin's files go: the MGR tree layout and the flat layout.

The tree layout mirrors ``usr/local/mgr5`` (``etc/xml/ispmgr_mod_NAME.xml``, ``addon/`` ...,
optionally with the ``usr/local/mgr5/`` prefix).  The flat layout, common in public
repositories, holds ``ispmgr_mod_NAME.xml`` at the top beside the handler files it names.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, TypeAlias

from mgr_agent import xmlsafe
from mgr_agent.errors import InvalidPackage
from mgr_agent.layout import MGR_REL
from mgr_agent.panels.base import HOOKS

if TYPE_CHECKING:  # the panel is built by every command; the archive readers only by some
    from mgr_agent.archive import Source
    from mgr_agent.package import FileSpec

MOD_RE = re.compile(r"^etc/xml/ispmgr_mod_([^/]+)\.xml$")
FLAT_RE = re.compile(r"^ispmgr_mod_([^/]+)\.xml$")
# The panel's own programs and libraries: no plugin may write there.
FORBIDDEN_TOP = frozenset({"bin", "sbin", "lib", "libexec", "lib64"})
LEADING = MGR_REL + "/"


def rel_to_mgr(name: str) -> str:
    """A package entry relative to MGR (``usr/local/mgr5/`` removed when present)."""
    return name[len(LEADING):] if name.startswith(LEADING) else name


def check_version(version: str, where: str) -> None:
    """Refuse a version that is not one word of at most 64 characters."""
    if version and (len(version) > 64 or any(c.isspace() for c in version)):
        raise InvalidPackage(f"{where}: {version[:64]!r} is not a version (one word, at most 64 "
                             "characters)", path=where, rule="version")


def hook_of(rel: str) -> str | None:
    """The hook a ``scripts/NAME`` entry is, or None."""
    hook = rel[len("scripts/"):]
    return hook if rel.startswith("scripts/") and hook in HOOKS else None


def plugin_xml(data: bytes, mod_rel: str) -> tuple[list[str], list[str], list[str]]:
    """Handlers, funcs and events of ``ispmgr_mod_NAME.xml``, its rules checked."""
    root = xmlsafe.parse(data, mod_rel)
    if root.tag != "mgrdata":
        raise InvalidPackage(f"{mod_rel}: root element is <{root.tag}>, it must be <mgrdata>",
                             path=mod_rel, rule="plugin-xml-root")
    handlers: list[str] = []
    for handler in root.iter("handler"):
        hname = (handler.get("name") or "").strip()
        htype = handler.get("type", "xml")
        if not hname:
            raise InvalidPackage(f"{mod_rel}: a <handler> has no name attribute",
                                 path=mod_rel, rule="handler-name")
        if htype not in ("xml", "cgi"):
            raise InvalidPackage(f"{mod_rel}: handler {hname!r} has type {htype!r}; "
                                 "it must be xml or cgi", path=mod_rel, rule="handler-type")
        if hname.startswith("/") or ".." in hname.split("/"):
            raise InvalidPackage(f"{mod_rel}: handler name {hname!r} must be a path inside addon/",
                                 path=mod_rel, rule="handler-name")
        handlers.append(hname)
    funcs = sorted({f.get("name", "") for f in root.iter("func")} - {""})
    events = sorted({e.get("name", "") for e in root.iter("event")} - {""})
    return handlers, funcs, events


Mapped: TypeAlias = "tuple[dict[str, FileSpec], dict[str, str], list[str]]"


def _add(files: dict[str, FileSpec], source: Source, rel_raw: str, full: str, rel: str,
         mode: int | None = None) -> None:
    """Map one entry to ``MGR_REL/rel``, refusing the panel's programs and double targets."""
    from mgr_agent.package import FileSpec  # noqa: PLC0415 - only describing a package needs it

    top = rel.split("/", 1)[0]
    if top in FORBIDDEN_TOP:
        raise InvalidPackage(
            f"{rel_raw}: plugins may not write the panel's programs and libraries "
            f"({', '.join(sorted(FORBIDDEN_TOP))}/ of {MGR_REL})", path=rel_raw, rule="forbidden-path")
    target = f"{MGR_REL}/{rel}"
    if target in files:
        raise InvalidPackage(f"{rel_raw}: installs to {target}, which another entry also uses",
                             path=rel_raw, rule="duplicate-target")
    files[target] = FileSpec(target=target, entry=full,
                             mode=source.entries[full].mode if mode is None else mode)


def map_tree(source: Source, names: dict[str, str], handlers: list[str]) -> Mapped:
    """The MGR tree layout: every folder maps under usr/local/mgr5; top files are not installed."""
    files: dict[str, FileSpec] = {}
    hooks: dict[str, str] = {}
    skipped: list[str] = []
    handler_targets = {f"addon/{h}" for h in handlers}
    for rel_raw, full in sorted(names.items()):
        hook = hook_of(rel_raw)
        if rel_raw.startswith("scripts/"):
            if hook is not None:
                hooks[hook] = full
            continue
        if "/" not in rel_raw:
            if rel_raw != "VERSION":
                skipped.append(rel_raw)  # README, LICENSE ... describe the package
            continue
        rel = rel_to_mgr(rel_raw)
        _add(files, source, rel_raw, full, rel, 0o755 if rel in handler_targets else None)
    return files, hooks, skipped


def map_flat(source: Source, names: dict[str, str], mod_rel: str, handlers: list[str]) -> Mapped:
    """The flat layout: the plugin XML and its handlers at the top (a handler ``dir/x`` brings
    its folder ``dir/``), plus ``addon/``, ``etc/`` and ``scripts/``; the rest is not installed."""
    files: dict[str, FileSpec] = {}
    hooks: dict[str, str] = {}
    skipped: list[str] = []
    handler_dirs = {h.rsplit("/", 1)[0] + "/" for h in handlers if "/" in h}
    for h in handlers:
        if h not in names and f"addon/{h}" not in names:
            raise InvalidPackage(
                f"{mod_rel}: handler {h!r} is missing: the package holds neither {h} (beside "
                f"{mod_rel}) nor addon/{h}", path=mod_rel, rule="handler-missing")
    for rel_raw, full in sorted(names.items()):
        hook = hook_of(rel_raw)
        if rel_raw == mod_rel:
            _add(files, source, rel_raw, full, f"etc/xml/{mod_rel}")
        elif rel_raw in handlers:
            _add(files, source, rel_raw, full, f"addon/{rel_raw}", 0o755)
        elif any(rel_raw.startswith(d) for d in handler_dirs):
            _add(files, source, rel_raw, full, f"addon/{rel_raw}")
        elif rel_raw.startswith(("addon/", "etc/")):
            handler = rel_raw.startswith("addon/") and rel_raw[len("addon/"):] in handlers
            _add(files, source, rel_raw, full, rel_raw, 0o755 if handler else None)
        elif rel_raw.startswith("scripts/"):
            if hook is not None:
                hooks[hook] = full
        elif rel_raw != "VERSION":
            skipped.append(rel_raw)
    return files, hooks, skipped
