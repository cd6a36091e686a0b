"""The handler chain of a func, from the installed ``etc/xml/ispmgr_mod_*.xml``: which
handlers are bound to it (``<func>``, ``<event before="yes">``, ``<event>``) and in which
order ispmanager's core runs them. Running them is :mod:`.callchain`; docs/call.md."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mgr_agent import xmlsafe
from mgr_agent.errors import InvalidXML
from mgr_agent.layout import Layout

KINDS = ("before", "main", "after")


@dataclass(frozen=True)
class Binding:
    """One ``<func>`` or ``<event>`` of a handler."""

    func: str
    kind: str  # before | main | after
    priority: bool = False  # ``priority="hi"``: runs before its peers


@dataclass(frozen=True)
class HandlerDecl:
    name: str  # path relative to addon/
    type: str  # xml | cgi
    bindings: tuple[Binding, ...]

    @property
    def funcs(self) -> list[str]:
        return [b.func for b in self.bindings if b.kind == "main"]

    @property
    def events(self) -> list[Binding]:
        return [b for b in self.bindings if b.kind != "main"]


@dataclass(frozen=True)
class PluginXml:
    """One ``etc/xml/ispmgr_mod_NAME.xml``; ``error`` says why it could not be read."""

    name: str
    path: Path
    source: str  # MGR-relative, e.g. etc/xml/ispmgr_mod_demo.xml
    root: xmlsafe.Element | None = None
    error: str | None = None
    handlers: tuple[HandlerDecl, ...] = ()

    @property
    def funcs(self) -> list[str]:
        seen: dict[str, None] = {}
        for h in self.handlers:
            seen.update(dict.fromkeys(h.funcs))
        return list(seen)


@dataclass(frozen=True)
class HandlerStep:
    """A handler to run for a func, and in which role."""

    handler: str
    kind: str  # before | main | after
    plugin: str
    source: str
    type: str = "xml"



def _plugin_name(path: Path) -> str:
    return path.name[len("ispmgr_mod_"):-len(".xml")]


def read_plugin(path: Path, source: str) -> PluginXml:
    """Parse one plugin description; problems are reported in ``error``, never raised."""
    name = _plugin_name(path)
    try:
        data = path.read_bytes()
        root = xmlsafe.parse(data, source)
    except OSError as exc:
        return PluginXml(name, path, source, error=f"cannot read it: {exc.strerror}")
    except InvalidXML as exc:
        return PluginXml(name, path, source, error=unprefixed(exc.message, source))
    if root.tag != "mgrdata":
        return PluginXml(name, path, source, root=root,
                         error=f"root element is <{root.tag}>, expected <mgrdata>")
    decls: list[HandlerDecl] = []
    for handler in root.iter("handler"):
        hname = (handler.get("name") or "").strip()
        if not hname:
            return PluginXml(name, path, source, root=root, error="a <handler> has no name")
        bindings: list[Binding] = []
        for child in handler:
            func = (child.get("name") or "").strip() if isinstance(child.tag, str) else ""
            if not func:
                continue
            if child.tag == "func":
                bindings.append(Binding(func, "main"))
            elif child.tag == "event":
                kind = "before" if child.get("before") == "yes" else "after"
                bindings.append(Binding(func, kind, child.get("priority") == "hi"))
        decls.append(HandlerDecl(hname, handler.get("type", "xml"), tuple(bindings)))
    return PluginXml(name, path, source, root=root, handlers=tuple(decls))


def unprefixed(message: str, source: str) -> str:
    return message[len(source) + 2:] if message.startswith(f"{source}: ") else message


def load_plugins(layout: Layout) -> list[PluginXml]:
    """Every ``etc/xml/ispmgr_mod_*.xml``, in file-name order (the order the core loads)."""
    xml_dir = layout.mgr / "etc/xml"
    if not xml_dir.is_dir():
        return []
    return [read_plugin(p, f"etc/xml/{p.name}") for p in sorted(xml_dir.glob("ispmgr_mod_*.xml"))
            if p.is_file()]


def find_chain(layout: Layout, func: str, *,
               plugins: Sequence[PluginXml] | None = None) -> list[HandlerStep]:
    """The handlers bound to ``func``: before-events, the main handler, after-events.

    Within a role, ``priority="hi"`` events come first, then file-name and document order.
    Plugin descriptions that cannot be read are skipped (the core logs them).  When
    several plugins claim ``func`` with ``<func>``, the first in file-name order is the
    main handler and the others are left out.
    """
    found: dict[str, list[tuple[bool, HandlerStep]]] = {k: [] for k in KINDS}
    for plugin in load_plugins(layout) if plugins is None else plugins:
        if plugin.error is not None:
            continue
        for decl in plugin.handlers:
            for b in decl.bindings:
                if b.func == func:
                    step = HandlerStep(decl.name, b.kind, plugin.name, plugin.source, decl.type)
                    found[b.kind].append((b.priority, step))
    chain: list[HandlerStep] = []
    for kind in KINDS:
        ordered = [s for hi, s in found[kind] if hi] + [s for hi, s in found[kind] if not hi]
        chain += ordered[:1] if kind == "main" else ordered
    return chain


def handler_problem(layout: Layout, handler: str) -> str | None:
    """Why ``addon/HANDLER`` cannot be run, or None."""
    if handler.startswith("/") or ".." in handler.split("/"):
        return f"handler name {handler!r} must be a path inside addon/"
    path = layout.mgr / "addon" / handler
    if not path.is_file():
        return f"addon/{handler} does not exist"
    if not os.access(path, os.X_OK):
        return f"addon/{handler} is not executable"
    return None
